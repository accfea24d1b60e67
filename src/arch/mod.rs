//! CPU-architecture code: only x86-64 (Xen PVH) is supported.

pub mod x86_64;
