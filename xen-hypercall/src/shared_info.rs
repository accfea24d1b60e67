//! The shared_info page (`xen.h`, `arch-x86/xen.h`, `arch-x86/xen-x86_64.h`) and the
//! 2-level event-channel bitmaps in it.
//!
//! Xen writes these fields concurrently with the guest, so every field the guest touches is
//! an atomic; the layout is identical to the C structs (atomics have the size and alignment
//! of their integer). Map the page with `add_to_physmap(MapSpace::SharedInfo, 0, gfn)`.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};

use crate::abi_layout;

/// `XEN_LEGACY_MAX_VCPUS` on x86.
pub const LEGACY_MAX_VCPUS: usize = 32;
/// Ports per bitmap word (`sizeof(xen_ulong_t) * 8`).
pub const PORTS_PER_WORD: usize = 64;
/// Words in each 2-level bitmap.
pub const EVENT_WORDS: usize = 64;
/// `EVTCHN_2L_NR_CHANNELS` for a 64-bit guest: 4096.
pub const EVENT_CHANNELS_2L: usize = PORTS_PER_WORD * EVENT_WORDS;

/// `struct vcpu_time_info` (32 bytes): pvclock parameters for Xen system time.
#[repr(C)]
pub struct VcpuTimeInfo {
    /// Odd while Xen updates the record (seqlock).
    pub version: AtomicU32,
    pub pad0: AtomicU32,
    pub tsc_timestamp: AtomicU64,
    /// Xen system time in ns at `tsc_timestamp`.
    pub system_time: AtomicU64,
    pub tsc_to_system_mul: AtomicU32,
    pub tsc_shift: AtomicU8,
    pub flags: AtomicU8,
    pub pad1: [AtomicU8; 2],
}

abi_layout!(VcpuTimeInfo: 32 bytes {
    tsc_timestamp: 8, system_time: 16, tsc_to_system_mul: 24, tsc_shift: 28, flags: 29,
});

/// `struct vcpu_info` (64 bytes).
#[repr(C)]
pub struct VcpuInfo {
    /// Set by Xen when an unmasked port becomes pending; the guest clears it before scanning.
    pub evtchn_upcall_pending: AtomicU8,
    pub evtchn_upcall_mask: AtomicU8,
    pub pad: [AtomicU8; 6],
    /// One bit per 64-port word of `evtchn_pending`.
    pub evtchn_pending_sel: AtomicU64,
    pub arch_cr2: AtomicU64,
    pub arch_pad: AtomicU64,
    pub time: VcpuTimeInfo,
}

abi_layout!(VcpuInfo: 64 bytes { evtchn_upcall_mask: 1, evtchn_pending_sel: 8, time: 32 });

/// `struct arch_shared_info` for x86-64 (48 bytes).
#[repr(C)]
pub struct ArchSharedInfo {
    pub max_pfn: AtomicU64,
    pub pfn_to_mfn_frame_list_list: AtomicU64,
    pub nmi_reason: AtomicU64,
    pub p2m_cr3: AtomicU64,
    pub p2m_vaddr: AtomicU64,
    pub p2m_generation: AtomicU64,
}

abi_layout!(ArchSharedInfo: 48 bytes);

/// `struct shared_info` (3136 bytes on x86-64).
#[repr(C)]
pub struct SharedInfo {
    pub vcpu_info: [VcpuInfo; LEGACY_MAX_VCPUS],
    /// 2-level pending bitmap: bit `port % 64` of word `port / 64`.
    pub evtchn_pending: [AtomicU64; EVENT_WORDS],
    /// 2-level mask bitmap, same indexing.
    pub evtchn_mask: [AtomicU64; EVENT_WORDS],
    pub wc_version: AtomicU32,
    pub wc_sec: AtomicU32,
    pub wc_nsec: AtomicU32,
    pub wc_sec_hi: AtomicU32,
    pub arch: ArchSharedInfo,
}

abi_layout!(SharedInfo: 3136 bytes {
    evtchn_pending: 2048, evtchn_mask: 2560, wc_version: 3072, arch: 3088,
});

/// Where a port's bit lives in the 2-level bitmaps: `(word index, bit mask)`.
pub const fn port_word_and_bit(port: u32) -> Option<(usize, u64)> {
    let port = port as usize;
    if port >= EVENT_CHANNELS_2L {
        return None;
    }
    Some((port / PORTS_PER_WORD, 1u64 << (port % PORTS_PER_WORD)))
}

/// A consistent snapshot of a [`VcpuTimeInfo`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeSnapshot {
    pub tsc_timestamp: u64,
    pub system_time_ns: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
}

impl TimeSnapshot {
    /// Xen system time (ns) at TSC value `tsc`, by the pvclock formula of `xen.h`:
    /// `system_time + ((tsc - tsc_timestamp) << shift) * mul >> 32` (shift may be negative).
    pub const fn system_time_at(&self, tsc: u64) -> u64 {
        let mut delta = tsc.wrapping_sub(self.tsc_timestamp);
        if self.tsc_shift >= 0 {
            delta <<= self.tsc_shift as u32;
        } else {
            delta >>= (-(self.tsc_shift as i32)) as u32;
        }
        let scaled = ((delta as u128 * self.tsc_to_system_mul as u128) >> 32) as u64;
        self.system_time_ns.wrapping_add(scaled)
    }
}

impl VcpuTimeInfo {
    /// Reads the record under its version seqlock (retries while Xen is updating it).
    pub fn snapshot(&self) -> TimeSnapshot {
        use core::sync::atomic::{Ordering, fence};
        loop {
            let version = self.version.load(Ordering::Acquire);
            if version & 1 != 0 {
                core::hint::spin_loop();
                continue;
            }
            let snapshot = TimeSnapshot {
                tsc_timestamp: self.tsc_timestamp.load(Ordering::Relaxed),
                system_time_ns: self.system_time.load(Ordering::Relaxed),
                tsc_to_system_mul: self.tsc_to_system_mul.load(Ordering::Relaxed),
                tsc_shift: self.tsc_shift.load(Ordering::Relaxed) as i8,
            };
            fence(Ordering::Acquire);
            if self.version.load(Ordering::Relaxed) == version {
                return snapshot;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bits() {
        assert_eq!(port_word_and_bit(0), Some((0, 1)));
        assert_eq!(port_word_and_bit(65), Some((1, 2)));
        assert_eq!(port_word_and_bit(4095), Some((63, 1 << 63)));
        assert_eq!(port_word_and_bit(4096), None);
    }

    #[test]
    fn pvclock_scaling() {
        // mul = 2^32 means 1 ns per (shifted) tick.
        let identity = TimeSnapshot {
            tsc_timestamp: 1000,
            system_time_ns: 5,
            tsc_to_system_mul: 1 << 31,
            tsc_shift: 1,
        };
        assert_eq!(identity.system_time_at(1100), 105);
        let halving = TimeSnapshot {
            tsc_timestamp: 0,
            system_time_ns: 0,
            tsc_to_system_mul: 1 << 31,
            tsc_shift: -1,
        };
        assert_eq!(halving.system_time_at(400), 100);
    }
}
