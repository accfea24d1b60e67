//! The kernel heap: placement arithmetic, growth, and the global allocator,
//! `stub-allocator`'s size classes (O(1) for blocks up to 8 KiB) over
//! `linked_list_allocator`'s first fit.
//!
//! The heap covers the domain's populated RAM above the kernel image and the boot data the
//! loader put after it (start info, command line, memory map, modules), and grows (see
//! `docs/memory.md`): the RAM region of the memory map that holds it may extend past the
//! populated frames (`init-xenstore-domain --maxmem` makes it span the maximum), and the
//! domain may populate frames until its reservation reaches `XENMEM_maximum_reservation`.
//! The heap takes the frames right above its end with `XENMEM_populate_physmap` and extends
//! over them: when an allocation fails, before it returns null, and from the serving loop
//! when less than [`GROWTH_THRESHOLD_BYTES`] is free, so that requests rarely wait for it.
//! It grows by at least [`GROWTH_CHUNK_BYTES`] at a time, and never past the end of that RAM
//! region or the identity map. When it cannot grow, the allocator logs and returns null (an
//! `alloc_error_handler` is not stable); the default handler then panics, which the panic
//! handler turns into `SHUTDOWN_crash`. Code that allocates guest-controlled sizes uses
//! `try_reserve` and handles the error, and the engine refuses growing requests before the
//! memory left (free heap plus growth room, `HeapStatistics::limit_bytes`) runs out.

use core::fmt;

use crate::xen::memory_map::MemoryMap;

/// Page granularity for the heap's bounds.
pub const PAGE_SIZE_BYTES: u64 = 4096;
/// Below this the stub cannot do useful work.
pub const MIN_HEAP_SIZE_BYTES: u64 = 256 * 1024;
/// Pages of the populated reservation that are not in the low RAM region: the 8 special
/// pages at 0xfeff8000 (docs/xen-interface.md, "Memory map") plus slack for frames the
/// toolstack may add.
pub const RESERVATION_PAGES_OUTSIDE_LOW_RAM: u64 = 16;

/// The least the heap grows by at once (more when one allocation needs more).
pub const GROWTH_CHUNK_BYTES: u64 = 1024 * 1024;
/// When the heap has less than this free for first fit, the serving loop grows it.
pub const GROWTH_THRESHOLD_BYTES: u64 = 1024 * 1024;

/// The local APIC's address in an x86 PVH domain: `init-xenstore-domain` ends low RAM there
/// (its `LAPIC_BASE_ADDRESS`), and no RAM may be placed at or above it below 4 GiB.
pub const LAPIC_BASE_ADDRESS: u64 = 0xfee0_0000;

/// Where the heap goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapPlan {
    pub start: u64,
    pub size_bytes: u64,
    /// How far the heap could ever grow: the end of the RAM region that holds it, capped by
    /// the identity-mapped range (page aligned).
    pub region_end: u64,
    /// Where `region_end` comes from.
    pub region_source: RegionSource,
}

/// How the RAM region holding the heap was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionSource {
    /// A RAM entry of the memory map contains the kernel image.
    MemoryMap,
    /// No RAM entry contains the image, but the reservation says low RAM is populated: the
    /// memory map of Xen 4.17's and 4.18's `init-xenstore-domain --maxmem X`, whose RAM entry
    /// is X *bytes* long (its `MB()` macro applied to `maxmem ? : memory` shifts only
    /// `memory`; fixed in 4.19). Low RAM is then taken to reach up to the next entry of the
    /// map above the image, at most to [`LAPIC_BASE_ADDRESS`]; the reservation bounds growth.
    Reservation,
}

impl HeapPlan {
    pub const fn end(&self) -> u64 {
        self.start + self.size_bytes
    }
}

/// Why no heap could be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapPlanError {
    /// The kernel image is not inside a RAM region of the memory map.
    KernelNotInRam { kernel_end: u64 },
    /// Less than [`MIN_HEAP_SIZE_BYTES`] between the boot data and the end of usable RAM.
    TooSmall { start: u64, end: u64 },
}

impl fmt::Display for HeapPlanError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeapPlanError::KernelNotInRam { kernel_end } => {
                write!(
                    formatter,
                    "no RAM region contains the kernel image (end {kernel_end:#x})"
                )
            }
            HeapPlanError::TooSmall { start, end } => write!(
                formatter,
                "only {start:#x}..{end:#x} is free for the heap (need {MIN_HEAP_SIZE_BYTES} bytes)"
            ),
        }
    }
}

const fn align_up(value: u64, alignment: u64) -> u64 {
    value.div_ceil(alignment) * alignment
}

const fn align_down(value: u64, alignment: u64) -> u64 {
    value / alignment * alignment
}

/// The end of populated low RAM given `XENMEM_current_reservation` pages.
///
/// libxc populates guest frames from 0 upwards for the `--memory` size, plus special pages
/// elsewhere; subtracting those gives a conservative bound.
pub const fn populated_ram_end(reservation_pages: u64) -> u64 {
    reservation_pages.saturating_sub(RESERVATION_PAGES_OUTSIDE_LOW_RAM) * PAGE_SIZE_BYTES
}

/// Places the heap: from above the image and boot data to the end of the RAM region that
/// holds the image, capped by populated memory and by the identity-mapped range. When no RAM
/// entry holds the image but `populated_end` lies above it, see [`RegionSource::Reservation`].
pub fn plan_heap(
    kernel_end: u64,
    boot_data_end: u64,
    memory_map: &MemoryMap,
    populated_end: Option<u64>,
    mapped_limit: u64,
) -> Result<HeapPlan, HeapPlanError> {
    let (ram_end, region_source) =
        match memory_map.ram_region_containing(kernel_end.saturating_sub(1)) {
            Some(ram) => (ram.end(), RegionSource::MemoryMap),
            None => match populated_end {
                Some(populated_end) if populated_end > kernel_end => {
                    // Up to the first entry (of any kind) above the image; an entry over the
                    // image leaves no room.
                    let next_entry = memory_map
                        .regions
                        .iter()
                        .filter(|region| region.end() > kernel_end)
                        .map(|region| region.start.max(kernel_end))
                        .min()
                        .unwrap_or(u64::MAX);
                    (
                        next_entry.min(LAPIC_BASE_ADDRESS),
                        RegionSource::Reservation,
                    )
                }
                _ => return Err(HeapPlanError::KernelNotInRam { kernel_end }),
            },
        };
    // Boot data below the image (QEMU puts its start info in low memory) does not matter.
    let start = align_up(kernel_end.max(boot_data_end), PAGE_SIZE_BYTES);
    let region_end = align_down(ram_end.min(mapped_limit), PAGE_SIZE_BYTES);
    let mut end = region_end;
    if let Some(populated_end) = populated_end {
        end = end.min(populated_end);
    }
    let end = align_down(end, PAGE_SIZE_BYTES);
    if end < start || end - start < MIN_HEAP_SIZE_BYTES {
        return Err(HeapPlanError::TooSmall { start, end });
    }
    Ok(HeapPlan {
        start,
        size_bytes: end - start,
        region_end,
        region_source,
    })
}

/// What bounds the heap's growth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrowthBounds {
    /// No frame at or above this address is used: [`HeapPlan::region_end`].
    pub region_end: u64,
    /// Pages the domain may still populate: `XENMEM_maximum_reservation` less
    /// `XENMEM_current_reservation`.
    pub room_pages: u64,
}

impl GrowthBounds {
    /// Where a heap now ending at `heap_end` can end at most (never below `heap_end`).
    pub fn limit_end(&self, heap_end: u64) -> u64 {
        let by_reservation =
            heap_end.saturating_add(self.room_pages.saturating_mul(PAGE_SIZE_BYTES));
        align_down(self.region_end.min(by_reservation), PAGE_SIZE_BYTES).max(heap_end)
    }
}

/// The frames one growth populates, right above the heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrowthStep {
    pub start: u64,
    pub size_bytes: u64,
}

impl GrowthStep {
    pub const fn first_frame(&self) -> u64 {
        self.start / PAGE_SIZE_BYTES
    }

    pub const fn frame_count(&self) -> u64 {
        self.size_bytes / PAGE_SIZE_BYTES
    }
}

/// The next growth of a heap ending at `heap_end` (page aligned) for an allocation of
/// `needed_bytes`: at least [`GROWTH_CHUNK_BYTES`] and `needed_bytes` in whole pages, as far
/// as `bounds` allow. `None` when the heap cannot grow at all.
pub fn plan_growth(heap_end: u64, needed_bytes: u64, bounds: GrowthBounds) -> Option<GrowthStep> {
    let limit_end = bounds.limit_end(heap_end);
    if limit_end <= heap_end {
        return None;
    }
    let wanted = align_up(
        needed_bytes.clamp(GROWTH_CHUNK_BYTES, u64::MAX / 2),
        PAGE_SIZE_BYTES,
    );
    Some(GrowthStep {
        start: heap_end,
        size_bytes: wanted.min(limit_end - heap_end),
    })
}

/// What an allocation of `size` bytes aligned to `align` asks the heap to grow by: the block,
/// its worst alignment padding, and room for a hole header on either side.
pub fn growth_needed_bytes(size: usize, align: usize) -> u64 {
    (size as u64)
        .saturating_add(align as u64)
        .saturating_add(64)
}

/// The frames above a heap ending at `heap_end` that the domain builder may have populated:
/// [`populated_ram_end`] stays below the populated end by up to
/// [`RESERVATION_PAGES_OUTSIDE_LOW_RAM`] pages, and low RAM is populated from frame 0 up, so
/// no frame at or above `reservation_pages` pages (the reservation before the stub changed
/// it) is populated. Growth must not populate a frame again (Xen would keep the old page
/// allocated and unreachable, counted against the maximum), so these are given back first.
pub fn frames_maybe_populated_above(
    heap_end: u64,
    boot_reservation_pages: u64,
    region_end: u64,
) -> core::ops::Range<u64> {
    let first = heap_end.div_ceil(PAGE_SIZE_BYTES);
    let end = boot_reservation_pages
        .min(region_end / PAGE_SIZE_BYTES)
        .max(first);
    first..end
}

#[cfg(target_os = "none")]
pub use allocator::{
    GrowthSetup, GrowthSetupError, end_address, grow_if_low, init_growth, init_heap, statistics,
};

#[cfg(target_os = "none")]
mod allocator {
    use core::alloc::{GlobalAlloc, Layout};
    use core::fmt;
    use core::ptr::NonNull;
    use core::sync::atomic::{AtomicU64, Ordering};

    use stub_allocator::{HeapUsage, LockedSizeClassHeap};
    use xen_hypercall::{DomId, Gfn, Hypervisor, XenErrno};

    use super::{
        GROWTH_CHUNK_BYTES, GROWTH_THRESHOLD_BYTES, GrowthBounds, HeapPlan, PAGE_SIZE_BYTES,
        frames_maybe_populated_above, growth_needed_bytes, plan_growth,
    };

    /// The heap's usage, and how far it can grow.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct HeapStatistics {
        pub usage: HeapUsage,
        /// The most the heap can hold once grown as far as the domain may grow (as of the
        /// last growth or start-up); `usage.size_bytes` when it cannot grow.
        pub limit_bytes: usize,
    }

    /// Frames passed to one `XENMEM_populate_physmap` (the list lives in [`Growth`], not on
    /// the stack of whatever allocation failed).
    const FRAMES_PER_CALL: usize = 256;

    /// `stub_allocator::SizeClassHeap` behind the global-allocator interface: grows the heap
    /// when an allocation fails, and logs what still fails.
    /// `bench/src/bin/stub-heap` measures this same allocator under the engine.
    struct KernelHeap {
        heap: LockedSizeClassHeap,
    }

    #[global_allocator]
    static KERNEL_HEAP: KernelHeap = KernelHeap {
        heap: LockedSizeClassHeap::empty(),
    };

    /// What growing needs; `None` until [`init_growth`] (or when the heap cannot grow).
    ///
    /// Invariant while set: no frame of the RAM region at or above the heap's top is
    /// populated, so growth populates only empty frames. [`init_growth`] establishes it by
    /// giving back what the domain builder populated there; growth keeps it by extending the
    /// heap over exactly the frames it populated.
    static GROWTH: spin::Mutex<Option<Growth>> = spin::Mutex::new(None);

    /// Where the heap can end at most (`GrowthBounds::limit_end`), as of the last growth or
    /// start-up: read by [`statistics`] on every request without taking [`GROWTH`].
    static LIMIT_END: AtomicU64 = AtomicU64::new(0);

    struct Growth {
        hypervisor: Hypervisor,
        region_end: u64,
        /// Pages the domain may still populate, as of the last look at its reservation.
        room_pages: u64,
        /// Xen gave fewer frames than the reservation allowed (the host is short of memory):
        /// the serving loop stops growing ahead of need; failing allocations still try.
        host_short: bool,
        /// The frame list of one `XENMEM_populate_physmap`.
        frames: [Gfn; FRAMES_PER_CALL],
    }

    /// Why a growth did not happen.
    #[derive(Clone, Copy)]
    enum GrowError {
        /// Growth is not set up, or was switched off.
        Off,
        /// A growth is under way (an allocation inside a growth: none is made).
        Busy,
        /// The heap reached its limit.
        AtLimit,
        /// Xen populated no frame.
        Refused(Option<XenErrno>),
        /// The serving loop does not grow after the host came up short.
        HostShort,
    }

    impl fmt::Display for GrowError {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                GrowError::Off => write!(formatter, "growth is off"),
                GrowError::Busy => write!(formatter, "a growth is under way"),
                GrowError::AtLimit => write!(formatter, "the heap is at its limit"),
                GrowError::Refused(Some(errno)) => write!(formatter, "Xen refused ({errno})"),
                GrowError::Refused(None) => write!(formatter, "Xen gave no frame"),
                GrowError::HostShort => write!(formatter, "the host is short of memory"),
            }
        }
    }

    // SAFETY: allocation and deallocation are delegated to `stub_allocator::SizeClassHeap`
    // under its lock, which upholds the GlobalAlloc contract; growth only adds memory to the
    // heap; failures return null.
    unsafe impl GlobalAlloc for KernelHeap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if let Ok(pointer) = self.heap.lock().allocate(layout) {
                return pointer.as_ptr();
            }
            // The lock is released: growing takes it again to extend the heap. A second
            // try covers a first growth the limit cut short of what the block needs while
            // the reservation then allowed more (it is read afresh each time).
            let mut why = GrowError::Off;
            for _ in 0..2 {
                match grow(growth_needed_bytes(layout.size(), layout.align()), false) {
                    Ok(()) => {
                        if let Ok(pointer) = self.heap.lock().allocate(layout) {
                            return pointer.as_ptr();
                        }
                    }
                    Err(error) => {
                        why = error;
                        break;
                    }
                }
            }
            let (free_bytes, class_free_bytes, size_bytes) = {
                let heap = self.heap.lock();
                (heap.free(), heap.class_free_bytes(), heap.size())
            };
            // Logging does not allocate.
            crate::runtime::trace::record("heap.alloc_failed", layout.size() as u64);
            log::error!(
                "heap: cannot allocate {} bytes (alignment {}); {} bytes free, {} more in \
                 size-class free lists, heap {} KiB, not grown: {why}",
                layout.size(),
                layout.align(),
                free_bytes,
                class_free_bytes,
                size_bytes >> 10
            );
            core::ptr::null_mut()
        }

        unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
            if let Some(pointer) = NonNull::new(pointer) {
                // SAFETY: the GlobalAlloc contract says `pointer` came from `alloc` with
                // this `layout`, i.e. from this heap.
                unsafe { self.heap.lock().deallocate(pointer, layout) };
            }
        }
    }

    /// Hands the planned region to the allocator.
    ///
    /// # Safety
    ///
    /// `plan` must describe identity-mapped, populated RAM that nothing else uses, and this
    /// must be called at most once.
    pub unsafe fn init_heap(plan: HeapPlan) {
        // SAFETY: forwarded contract; the region is valid, unused memory.
        unsafe {
            KERNEL_HEAP
                .heap
                .lock()
                .init(plan.start as *mut u8, plan.size_bytes as usize)
        };
        LIMIT_END.store(plan.end(), Ordering::Relaxed);
        crate::runtime::trace::record("heap.init", plan.start);
    }

    /// What [`init_growth`] found.
    #[derive(Clone, Copy, Debug)]
    pub struct GrowthSetup {
        /// The most the heap can hold.
        pub limit_bytes: u64,
        pub maximum_pages: u64,
        pub current_pages: u64,
        /// Frames above the heap the domain builder had populated, given back to Xen.
        pub released_pages: u64,
    }

    /// Why the heap cannot grow.
    #[derive(Clone, Copy, Debug)]
    pub enum GrowthSetupError {
        /// The reservation at boot is unknown, so it is unknown which frames are populated.
        NoBootReservation,
        /// `XENMEM_decrease_reservation` failed on a frame above the heap.
        Release(XenErrno),
        /// `XENMEM_maximum_reservation` or `XENMEM_current_reservation` failed.
        Reservation(XenErrno),
    }

    impl fmt::Display for GrowthSetupError {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                GrowthSetupError::NoBootReservation => {
                    write!(formatter, "the boot-time reservation is unknown")
                }
                GrowthSetupError::Release(errno) => {
                    write!(formatter, "XENMEM_decrease_reservation failed: {errno}")
                }
                GrowthSetupError::Reservation(errno) => {
                    write!(formatter, "the reservation cannot be read: {errno}")
                }
            }
        }
    }

    /// Lets the heap grow: gives back to Xen the frames above the heap that the domain
    /// builder may have populated (see [`frames_maybe_populated_above`]), then reads the
    /// reservation's room. Without it (or after an error) the heap keeps its size.
    ///
    /// # Safety
    ///
    /// Called once, after [`init_heap`] with `plan`: nothing may use the frames of the RAM
    /// region above the heap (from `plan.end()` to `plan.region_end`), since those the
    /// builder populated are given back, and later ones populated for the heap.
    /// `boot_reservation_pages` is `XENMEM_current_reservation` read before the stub changed
    /// its reservation (before mapping shared_info).
    pub unsafe fn init_growth(
        hypervisor: Hypervisor,
        plan: &HeapPlan,
        boot_reservation_pages: Option<u64>,
    ) -> Result<GrowthSetup, GrowthSetupError> {
        let boot_reservation_pages =
            boot_reservation_pages.ok_or(GrowthSetupError::NoBootReservation)?;
        let mut released_pages = 0;
        for frame in
            frames_maybe_populated_above(plan.end(), boot_reservation_pages, plan.region_end)
        {
            // One frame a call: the call stops at the first empty frame.
            // SAFETY: the frame lies in the RAM region above the heap, which nothing uses
            // (contract).
            released_pages += unsafe { hypervisor.decrease_reservation(&[Gfn(frame)]) }
                .map_err(GrowthSetupError::Release)?;
        }
        let maximum_pages = hypervisor
            .maximum_reservation_pages(DomId::SELF)
            .map_err(GrowthSetupError::Reservation)?;
        let current_pages = hypervisor
            .current_reservation_pages(DomId::SELF)
            .map_err(GrowthSetupError::Reservation)?;
        let bounds = GrowthBounds {
            region_end: plan.region_end,
            room_pages: maximum_pages.saturating_sub(current_pages),
        };
        let limit_end = bounds.limit_end(plan.end());
        *GROWTH.lock() = Some(Growth {
            hypervisor,
            region_end: plan.region_end,
            room_pages: bounds.room_pages,
            host_short: false,
            frames: [Gfn(0); FRAMES_PER_CALL],
        });
        LIMIT_END.store(limit_end, Ordering::Relaxed);
        Ok(GrowthSetup {
            limit_bytes: limit_end - plan.start,
            maximum_pages,
            current_pages,
            released_pages,
        })
    }

    /// Called by the serving loop between rounds: grows the heap by
    /// [`GROWTH_CHUNK_BYTES`] when less than [`GROWTH_THRESHOLD_BYTES`] is free for first
    /// fit and the heap is below its limit as last seen. Costs one lock and two loads
    /// otherwise.
    pub fn grow_if_low() {
        let (free_bytes, top) = {
            let heap = KERNEL_HEAP.heap.lock();
            (heap.free() as u64, heap.top() as u64)
        };
        if free_bytes >= GROWTH_THRESHOLD_BYTES || LIMIT_END.load(Ordering::Relaxed) <= top {
            return;
        }
        let _ = grow(GROWTH_CHUNK_BYTES, true);
    }

    /// Populates the frames above the heap and extends it over them (one console line).
    /// `ahead`: called by the serving loop, not by a failing allocation.
    fn grow(needed_bytes: u64, ahead: bool) -> Result<(), GrowError> {
        let mut guard = GROWTH.try_lock().ok_or(GrowError::Busy)?;
        let growth = guard.as_mut().ok_or(GrowError::Off)?;
        if ahead && growth.host_short {
            return Err(GrowError::HostShort);
        }
        let hypervisor = growth.hypervisor;
        let (old_size, heap_end) = {
            let heap = KERNEL_HEAP.heap.lock();
            (heap.size() as u64, heap.top() as u64)
        };
        // The toolstack may have changed the maximum (`xl mem-max`): read it afresh.
        if let (Ok(maximum), Ok(current)) = (
            hypervisor.maximum_reservation_pages(DomId::SELF),
            hypervisor.current_reservation_pages(DomId::SELF),
        ) {
            growth.room_pages = maximum.saturating_sub(current);
        }
        let bounds = GrowthBounds {
            region_end: growth.region_end,
            room_pages: growth.room_pages,
        };
        LIMIT_END.store(bounds.limit_end(heap_end), Ordering::Relaxed);
        let step = plan_growth(heap_end, needed_bytes, bounds).ok_or(GrowError::AtLimit)?;
        let wanted = step.frame_count();
        let mut populated = 0u64;
        let mut refusal = None;
        while populated < wanted {
            let batch = (wanted - populated).min(FRAMES_PER_CALL as u64) as usize;
            let Some(frames) = growth.frames.get_mut(..batch) else {
                break;
            };
            let first = step.first_frame() + populated;
            for (offset, frame) in (0u64..).zip(frames.iter_mut()) {
                *frame = Gfn(first + offset);
            }
            // SAFETY: the frames lie right above the heap, inside its RAM region: empty
            // (the invariant of [`GROWTH`]) and used by nothing.
            match unsafe { hypervisor.populate_physmap(frames) } {
                Ok(done) => {
                    populated += done.min(batch as u64);
                    if done < batch as u64 {
                        refusal = Some(None);
                        break;
                    }
                }
                Err(errno) => {
                    refusal = Some(Some(errno));
                    break;
                }
            }
        }
        growth.host_short = refusal.is_some();
        growth.room_pages = growth.room_pages.saturating_sub(populated);
        if populated == 0 {
            let error = GrowError::Refused(refusal.flatten());
            log::warn!(
                "heap: cannot grow by {} KiB: {error}; heap {} KiB",
                step.size_bytes >> 10,
                old_size >> 10
            );
            return Err(error);
        }
        let bytes = populated * PAGE_SIZE_BYTES;
        // SAFETY: the frames right above the heap's top, just populated: valid, identity
        // mapped (below the region end, which the identity map covers) and used by nothing.
        let extended = unsafe { KERNEL_HEAP.heap.lock().extend(bytes as usize) };
        if let Err(error) = extended {
            // Cannot happen (whole pages above an initialised heap); the frames stay unused.
            log::error!("heap: cannot extend over the new frames: {error}; growth is off");
            *guard = None;
            LIMIT_END.store(heap_end, Ordering::Relaxed);
            return Err(GrowError::Off);
        }
        let new_end = heap_end + bytes;
        let limit_end = bounds.limit_end(heap_end).max(new_end);
        LIMIT_END.store(limit_end, Ordering::Relaxed);
        let heap_start = heap_end - old_size;
        crate::runtime::trace::record("heap.grew", new_end);
        log::info!(
            "heap: grew from {} KiB to {} KiB ({}), limit {} KiB{}",
            old_size >> 10,
            (old_size + bytes) >> 10,
            if ahead {
                "ahead of need"
            } else {
                "for an allocation"
            },
            (limit_end - heap_start) >> 10,
            if refusal.is_some() {
                " (Xen gave fewer frames than asked)"
            } else {
                ""
            }
        );
        Ok(())
    }

    /// One past the heap's highest byte now (its growth included): RAM below it is populated.
    pub fn end_address() -> u64 {
        KERNEL_HEAP.heap.lock().top() as u64
    }

    /// Current usage of the heap and how far it can grow.
    pub fn statistics() -> HeapStatistics {
        let heap = KERNEL_HEAP.heap.lock();
        let usage = heap.usage();
        let room = LIMIT_END
            .load(Ordering::Relaxed)
            .saturating_sub(heap.top() as u64);
        HeapStatistics {
            usage,
            limit_bytes: usage
                .size_bytes
                .saturating_add(usize::try_from(room).unwrap_or(usize::MAX)),
        }
    }
}

#[cfg(test)]
mod tests;
