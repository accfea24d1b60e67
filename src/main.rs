//! The xenstore stub domain: a PVH kernel that serves the xenstore engine over Xen rings (placeholder: being written).
fn main() {}
