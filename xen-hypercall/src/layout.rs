//! [`abi_layout!`]: compile-time checks of an ABI struct's size and field offsets.
//!
//! Every struct this crate hands to Xen must match the C layout of Xen's public headers byte
//! for byte (`docs/xen-interface.md`). The checks are constant assertions written next to each
//! struct, so they fail the build of every target that compiles the crate (the kernel's
//! `x86_64-unknown-none` as well as the host), not only a host `cargo test`.

/// Asserts at compile time the size (and optionally alignment) of an ABI type and the offsets
/// of the fields named, in bytes:
///
/// ```
/// #[repr(C)]
/// struct HvmParam { domid: u16, pad: u16, index: u32, value: u64 }
/// xen_hypercall::abi_layout!(HvmParam: 16 bytes { index: 4, value: 8 });
/// xen_hypercall::abi_layout!(HvmParam: 16 bytes, aligned 8);
/// xen_hypercall::abi_layout!(HvmParam: at most 4096 bytes { value: 8 });
/// ```
#[macro_export]
macro_rules! abi_layout {
    ($type:ty: at most $size:literal bytes $({ $($field:ident: $offset:literal),* $(,)? })?) => {
        const _: () = {
            assert!(::core::mem::size_of::<$type>() <= $size);
            $($(assert!(::core::mem::offset_of!($type, $field) == $offset);)*)?
        };
    };
    ($type:ty: $size:literal bytes $(, aligned $align:literal)?
        $({ $($field:ident: $offset:literal),* $(,)? })?) => {
        const _: () = {
            assert!(::core::mem::size_of::<$type>() == $size);
            $(assert!(::core::mem::align_of::<$type>() == $align);)?
            $($(assert!(::core::mem::offset_of!($type, $field) == $offset);)*)?
        };
    };
}
