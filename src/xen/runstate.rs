//! The vCPU's runstate area as a clock: the time of the last switch-in, read without `rdtsc`.
//!
//! Xen emulates `rdtsc` for an HVM-container guest whenever the host's TSC is not known to
//! be invariant (as under QEMU), so every TSC read is a guest exit: 30-40 µs under TCG,
//! a tenth of the stub's whole service of a request there (xentrace, `xenalyze`). Xen
//! rewrites the registered `vcpu_runstate_info` when it switches the vCPU in
//! (`vcpu.h`, `update_runstate_area()`), so right after a sleep that blocked, its
//! `state_entry_time` is the wake-up time, and nothing new means the sleep did not block.

use core::sync::atomic::Ordering;

use xen_hypercall::vcpu::{RUNSTATE_RUNNING, VcpuRunstateInfo};
#[cfg(target_os = "none")]
use xen_hypercall::{Hypervisor, XenResult};

/// Set by Xen while it rewrites the area, when the guest asked for that
/// (`XEN_RUNSTATE_UPDATE`, `VMASST_TYPE_runstate_update_flag`); never part of the time.
const RUNSTATE_UPDATE_BIT: u64 = 1 << 63;

/// The one vCPU's area (the stub domain has exactly one vCPU).
#[cfg(target_os = "none")]
static RUNSTATE: VcpuRunstateInfo = VcpuRunstateInfo::new();

/// A clock for a loop that sleeps in Xen between readings (see the module documentation).
#[derive(Debug)]
pub struct WakeClock {
    area: Option<&'static VcpuRunstateInfo>,
    /// `state_entry_time` at the last reading: a different one means a new switch-in.
    last_entry_ns: u64,
    last_ns: u64,
}

impl WakeClock {
    /// Registers vCPU 0's runstate area; without it (Xen refused) every reading is the
    /// TSC's.
    #[cfg(target_os = "none")]
    pub fn register(hypervisor: &Hypervisor) -> XenResult<WakeClock> {
        hypervisor.register_runstate_area(0, &RUNSTATE)?;
        Ok(Self::over(Some(&RUNSTATE)))
    }

    /// Tells Xen to stop writing the area: a live update's new image is about to overwrite
    /// it (docs/live-update.md, "What the old image undoes").
    #[cfg(target_os = "none")]
    pub fn unregister(&mut self, hypervisor: &Hypervisor) -> XenResult<()> {
        self.area = None;
        // SAFETY: linear address 0 holds nothing of ours: the image starts at 1 MiB, the heap
        // above it, the boot data after the image (docs/live-update.md: Xen's one write
        // there).
        unsafe { hypervisor.unregister_runstate_area(0) }
    }

    /// A clock that always reads the TSC.
    pub const fn without_area() -> WakeClock {
        Self::over(None)
    }

    const fn over(area: Option<&'static VcpuRunstateInfo>) -> WakeClock {
        WakeClock {
            area,
            // Xen writes the area once at registration, with the time of a switch-in that
            // may be long past: the first reading must not take it for a fresh one.
            last_entry_ns: u64::MAX,
            last_ns: 0,
        }
    }

    /// Xen system time in ns: the time of the last switch-in if it happened since the last
    /// reading, else `read_tsc_ns()`'s. Never less than the previous reading.
    pub fn read(&mut self, read_tsc_ns: impl FnOnce() -> u64) -> u64 {
        let switched_in_ns = self.area.and_then(|area| {
            let entry_ns = area.state_entry_time.load(Ordering::Acquire) & !RUNSTATE_UPDATE_BIT;
            let running = area.state.load(Ordering::Relaxed) == RUNSTATE_RUNNING;
            let first = self.last_entry_ns == u64::MAX;
            let fresh = running && !first && entry_ns != self.last_entry_ns;
            self.last_entry_ns = entry_ns;
            fresh.then_some(entry_ns)
        });
        let now_ns = switched_in_ns.unwrap_or_else(read_tsc_ns);
        self.last_ns = self.last_ns.max(now_ns);
        self.last_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;

    /// A clock over a fresh runstate area whose vCPU was switched in at 1000 ns.
    fn clock_over_area() -> (&'static VcpuRunstateInfo, WakeClock) {
        let area = Box::leak(Box::new(VcpuRunstateInfo::new()));
        area.state_entry_time.store(1_000, Ordering::Relaxed);
        (area, WakeClock::over(Some(area)))
    }

    /// The area after a first reading (TSC 1500): the vCPU was switched in again at 2000 ns.
    fn clock_after_a_switch_in() -> (&'static VcpuRunstateInfo, WakeClock) {
        let (area, mut clock) = clock_over_area();
        clock.read(|| 1_500);
        area.state_entry_time.store(2_000, Ordering::Relaxed);
        (area, clock)
    }

    #[test]
    fn a_new_switch_in_is_the_time_without_reading_the_tsc() {
        let (area, mut clock) = clock_over_area();
        assert_eq!(
            clock.read(|| 1_500),
            1_500,
            "the first reading is the TSC's"
        );
        area.state_entry_time.store(7_000, Ordering::Relaxed);
        assert_eq!(clock.read(|| panic!("TSC read")), 7_000);
    }

    #[test]
    fn no_switch_in_since_the_last_reading_reads_the_tsc() {
        let (_, mut clock) = clock_after_a_switch_in();
        clock.read(|| panic!("TSC read"));
        assert_eq!(clock.read(|| 9_000), 9_000);
    }

    #[test]
    fn a_vcpu_not_running_by_the_area_reads_the_tsc() {
        let (area, mut clock) = clock_after_a_switch_in();
        area.state
            .store(xen_hypercall::vcpu::RUNSTATE_BLOCKED, Ordering::Relaxed);
        assert_eq!(clock.read(|| 3_000), 3_000);
    }

    #[test]
    fn the_update_bit_is_not_time_and_the_clock_never_goes_back() {
        let (area, mut clock) = clock_over_area();
        assert_eq!(clock.read(|| 5_000), 5_000);
        area.state_entry_time
            .store(RUNSTATE_UPDATE_BIT | 4_000, Ordering::Relaxed);
        assert_eq!(clock.read(|| panic!("TSC read")), 5_000);
        area.state_entry_time.store(6_000, Ordering::Relaxed);
        assert_eq!(clock.read(|| panic!("TSC read")), 6_000);
    }

    #[test]
    fn without_an_area_every_reading_is_the_tsc() {
        let mut clock = WakeClock::without_area();
        assert_eq!(clock.read(|| 10), 10);
        assert_eq!(clock.read(|| 20), 20);
    }
}
