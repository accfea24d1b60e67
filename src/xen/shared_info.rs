//! The shared_info page: event-channel bitmaps, vCPU 0's time record, wallclock.
//!
//! A PVH guest chooses where shared_info appears: `XENMEM_add_to_physmap(
//! XENMAPSPACE_shared_info, 0, gfn)` (`memory.h`). Ours is the last page of the identity
//! map ([`SHARED_INFO_ADDRESS`]), far above RAM and the grant window: no image or heap ever
//! covers it, so a live update's copy of the new image cannot overwrite it, and every image
//! maps it at the same frame (Xen unhooks the page from its old frame and hooks it at the
//! new one, here the same: docs/live-update.md, "What the old image undoes").

use xen_hypercall::shared_info::{SharedInfo, TimeSnapshot};

/// Where shared_info appears: the last page below `IDENTITY_MAPPED_LIMIT_BYTES`.
pub const SHARED_INFO_ADDRESS: u64 = crate::arch::x86_64::IDENTITY_MAPPED_LIMIT_BYTES - 4096;

/// Xen system time in ns now, from vCPU 0's pvclock record and the TSC.
pub fn system_time_ns(shared_info: &SharedInfo) -> u64 {
    let snapshot: TimeSnapshot = shared_info.vcpu_info[0].time.snapshot();
    snapshot.system_time_at(crate::arch::x86_64::read_tsc())
}

#[cfg(target_os = "none")]
pub use mapping::{SharedInfoMapping, map_shared_info};

#[cfg(target_os = "none")]
mod mapping {
    use xen_hypercall::memory::MapSpace;
    use xen_hypercall::shared_info::SharedInfo;
    use xen_hypercall::{Gfn, Hypervisor, XenResult};

    use super::SHARED_INFO_ADDRESS;

    static MAPPED: spin::Once<SharedInfoMapping> = spin::Once::new();

    /// The mapped shared_info page.
    #[derive(Clone, Copy)]
    pub struct SharedInfoMapping {
        /// Where it appears in guest-physical memory.
        #[cfg_attr(
            not(feature = "test-modes"),
            allow(dead_code, reason = "only the test image's --self-test reports it")
        )]
        pub gfn: Gfn,
        pub shared_info: &'static SharedInfo,
    }

    /// Maps shared_info (once; later calls return the first mapping).
    pub fn map_shared_info(hypervisor: &Hypervisor) -> XenResult<SharedInfoMapping> {
        if let Some(mapping) = MAPPED.get() {
            return Ok(*mapping);
        }
        let address = SHARED_INFO_ADDRESS;
        let gfn = Gfn::containing(address);
        // SAFETY: the frame lies above RAM, the heap and the grant window (it is reserved for
        // shared_info: grant_table's window ends below it), so no memory of ours is
        // replaced; the identity map covers it: linear == GPA.
        unsafe { hypervisor.add_to_physmap(MapSpace::SharedInfo, 0, gfn) }?;
        // SAFETY: the frame now holds Xen's shared_info (3136 bytes < 4096), which lives as
        // long as the domain; all fields are atomics (shared with Xen), and a page-aligned
        // address satisfies SharedInfo's alignment.
        let shared_info = unsafe { &*(address as *const SharedInfo) };
        crate::runtime::trace::record("xen.shared_info_mapped", gfn.0);
        Ok(*MAPPED.call_once(|| SharedInfoMapping { gfn, shared_info }))
    }
}
