//! Xen hypercalls for x86-64 PVH guests (placeholder: being written).
#![no_std]
