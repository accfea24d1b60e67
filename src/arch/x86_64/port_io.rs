//! Port I/O: the 0xE9 debug console and QEMU's `isa-debug-exit` device.
//!
//! Port 0xE9 is `XEN_HVM_DEBUGCONS_IOPORT` (`arch-x86/xen.h`): Xen registers it for every
//! HVM/PVH domain and prints each line as `(dN) text` (on release builds only with
//! `guest_loglvl=all`). QEMU's `-debugcon` device listens on the same port by default.

/// `XEN_HVM_DEBUGCONS_IOPORT`.
pub const DEBUG_CONSOLE_PORT: u16 = 0xe9;

/// The I/O base the smoke test gives QEMU's `isa-debug-exit` (`iobase=0xf4`).
pub const ISA_DEBUG_EXIT_PORT: u16 = 0xf4;

/// Value written to `isa-debug-exit` when no Xen is found. QEMU exits with status
/// `(value << 1) | 1` = **67**; `tests/kernel/qemu-smoke.sh` expects exactly that.
pub const EXIT_NO_HYPERVISOR: u32 = 0x21;
/// Value written to `isa-debug-exit` on a panic or fatal boot error without Xen: QEMU exits
/// with status **69**.
pub const EXIT_FAILURE: u32 = 0x22;

/// Writes bytes to the 0xE9 debug console.
pub fn write_debug_console(bytes: &[u8]) {
    for &byte in bytes {
        // SAFETY: port 0xE9 is the hypervisor debug console on Xen HVM/PVH and QEMU; writing
        // it has no effect on memory.
        unsafe {
            core::arch::asm!(
                "out dx, al",
                in("dx") DEBUG_CONSOLE_PORT,
                in("al") byte,
                options(nomem, nostack, preserves_flags)
            );
        }
    }
}

/// Asks QEMU's `isa-debug-exit` device to terminate the VM with status `(value << 1) | 1`.
///
/// Only meaningful under bare QEMU (no Xen): call it only after CPUID showed no Xen. If the
/// device is absent the write is ignored and this returns.
pub fn request_qemu_exit(value: u32) {
    // SAFETY: a port write with no memory effects; without the device nothing happens.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            in("dx") ISA_DEBUG_EXIT_PORT,
            in("eax") value,
            options(nomem, nostack, preserves_flags)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_exit_statuses_are_documented_values() {
        assert_eq!((EXIT_NO_HYPERVISOR << 1) | 1, 67);
        assert_eq!((EXIT_FAILURE << 1) | 1, 69);
    }
}
