//! The shared_info page: event-channel bitmaps, vCPU 0's time record, wallclock.
//!
//! A PVH guest chooses where shared_info appears: `XENMEM_add_to_physmap(
//! XENMAPSPACE_shared_info, 0, gfn)` (`memory.h`). As Mini-OS and Solo5 do, the target is a
//! dedicated page-aligned frame of the kernel image: Xen frees the RAM that was there and
//! puts shared_info in its place (docs/xen-interface.md, "Memory map"), and the identity map
//! already covers it.

use xen_hypercall::shared_info::{SharedInfo, TimeSnapshot};

/// Xen system time in ns now, from vCPU 0's pvclock record and the TSC.
pub fn system_time_ns(shared_info: &SharedInfo) -> u64 {
    let snapshot: TimeSnapshot = shared_info.vcpu_info[0].time.snapshot();
    snapshot.system_time_at(crate::arch::x86_64::read_tsc())
}

#[cfg(target_os = "none")]
pub use mapping::{SharedInfoMapping, map_shared_info};

#[cfg(target_os = "none")]
mod mapping {
    use core::cell::UnsafeCell;

    use xen_hypercall::memory::MapSpace;
    use xen_hypercall::shared_info::SharedInfo;
    use xen_hypercall::{Gfn, Hypervisor, XenResult};

    /// The frame that becomes shared_info. Never accessed as bytes: only through the
    /// `&SharedInfo` handed out after the mapping.
    #[repr(C, align(4096))]
    struct SharedInfoFrame(UnsafeCell<[u8; 4096]>);

    // SAFETY: the frame's contents are only accessed through `SharedInfo`, whose fields are
    // all atomics, so shared access from any context is sound.
    unsafe impl Sync for SharedInfoFrame {}

    static SHARED_INFO_FRAME: SharedInfoFrame = SharedInfoFrame(UnsafeCell::new([0; 4096]));
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
        let address = SHARED_INFO_FRAME.0.get() as u64;
        let gfn = Gfn::containing(address);
        // SAFETY: the frame is a dedicated, page-aligned static that nothing reads or writes
        // as bytes, so replacing its contents breaks nothing; identity map: linear == GPA.
        unsafe { hypervisor.add_to_physmap(MapSpace::SharedInfo, 0, gfn) }?;
        // SAFETY: the frame now holds Xen's shared_info (3136 bytes < 4096), which lives as
        // long as the domain; all fields are atomics (shared with Xen), and the static's
        // alignment satisfies SharedInfo's.
        let shared_info = unsafe { &*(address as *const SharedInfo) };
        crate::runtime::trace::record("xen.shared_info_mapped", gfn.0);
        Ok(*MAPPED.call_once(|| SharedInfoMapping { gfn, shared_info }))
    }
}
