//! x86-64 support: PVH entry glue, exceptions, port I/O, the image layout, CPU helpers, a live update's jump.

#[cfg(target_os = "none")]
mod entry;
pub mod exceptions;
#[cfg(target_os = "none")]
pub mod handover;
pub mod layout;
pub mod port_io;

/// Everything below this guest-physical address is identity-mapped by `boot/pvh_entry.s`
/// (8 GiB, except the boot stack's guard page). Must agree with the page tables
/// built there.
pub const IDENTITY_MAPPED_LIMIT_BYTES: u64 = 8 << 30;

/// Reads the time-stamp counter (for Xen system time, `shared_info` pvclock).
pub fn read_tsc() -> u64 {
    // SAFETY: RDTSC has no memory effects; CR4.TSD is clear in a PVH guest (and on the host).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// 64 bits for a secret key: RDRAND when the CPU has it (CPUID.01H:ECX bit 30, the Intel
/// SDM's "RDRAND" entry), mixed with the time-stamp counter, which is all there is otherwise.
pub fn random_u64() -> u64 {
    let features = core::arch::x86_64::__cpuid(1);
    let mut value = read_tsc().rotate_left(29);
    if features.ecx & (1 << 30) != 0 {
        for _ in 0..10 {
            let mut random = 0u64;
            // SAFETY: RDRAND is present (checked above); it only writes `random`.
            if unsafe { core::arch::x86_64::_rdrand64_step(&mut random) } == 1 {
                value ^= random;
                break;
            }
        }
    }
    value ^ read_tsc()
}

/// Stops the vCPU for good: interrupts off, `hlt` forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` only stops this vCPU; nothing is resumed afterwards. On Xen a
        // `hlt` with interrupts off takes the vCPU down, which is what is wanted here.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
