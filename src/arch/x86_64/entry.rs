//! The PVH entry: includes the boot assembly and hands over to Rust.

use core::arch::global_asm;

global_asm!(
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/boot/pvh_entry.s")),
    options(att_syntax, raw)
);
global_asm!(
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/boot/xen_notes.s")),
    options(att_syntax, raw)
);

/// Called by `boot/pvh_entry.s` in long mode, on the boot stack, with the guest-physical
/// address of `struct hvm_start_info` (from `%ebx` at the PVH entry).
#[unsafe(no_mangle)]
extern "C" fn rust_entry(start_info_paddr: u64) -> ! {
    crate::kernel::kernel_main(start_info_paddr)
}
