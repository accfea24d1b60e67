//! The kernel image's extent in guest-physical memory, from symbols of `linker.ld`.

/// Guest-physical (= linear) address of the first byte of the image (1 MiB).
#[cfg(target_os = "none")]
pub fn kernel_start_address() -> u64 {
    unsafe extern "C" {
        static __kernel_start: u8;
    }
    // Taking the address of an extern static is safe; the symbol is never read.
    &raw const __kernel_start as u64
}

/// Guest-physical address one past the image's last byte (end of `.bss`, page aligned).
#[cfg(target_os = "none")]
pub fn kernel_end_address() -> u64 {
    unsafe extern "C" {
        static __kernel_end: u8;
    }
    // Taking the address of an extern static is safe; the symbol is never read.
    &raw const __kernel_end as u64
}
