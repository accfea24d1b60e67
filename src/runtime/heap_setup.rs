//! Bringing the heap up at boot: placing it, handing it to the allocator, letting it grow.
//!
//! Handing RAM to the allocator and giving frames back to Xen are `unsafe` in
//! [`super::heap`]; this module is their one caller. It computes the placement itself from
//! the platform's own data (the start info and the memory map) and allows each step once, so
//! that the boot sequence (`kernel.rs`) needs no `unsafe` (see `docs/unsafe.md`).

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use xen_hypercall::{Hypervisor, XenErrno};

use super::heap::{self, GrowthSetup, GrowthSetupError, HeapPlan, HeapPlanError};
use crate::arch::x86_64::{self, layout};
use crate::xen::memory_map::MemoryMap;
use crate::xen::start_info::BootInfo;

/// The heap handed to the allocator; set once, by [`setup_heap`].
static HEAP_PLAN: spin::Once<HeapPlan> = spin::Once::new();
/// Whether [`start_growth`] ran.
static GROWTH_STARTED: AtomicBool = AtomicBool::new(false);

/// Why the heap is not available.
#[derive(Clone, Copy, Debug)]
pub enum HeapSetupError {
    /// No memory map to place it with.
    NoMemoryMap(XenErrno),
    Plan(HeapPlanError),
    /// The heap was set up already (it is set up once per boot).
    AlreadySetUp,
}

impl fmt::Display for HeapSetupError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeapSetupError::NoMemoryMap(errno) => write!(formatter, "no memory map ({errno})"),
            HeapSetupError::Plan(error) => write!(formatter, "{error}"),
            HeapSetupError::AlreadySetUp => write!(formatter, "the heap is set up already"),
        }
    }
}

/// Places the heap above the kernel image and all boot data, in the RAM region of
/// `memory_map` that holds the image, below the populated end (from
/// `XENMEM_current_reservation` pages, when known) and inside the identity map, and hands it
/// to the allocator.
pub fn setup_heap(
    memory_map: &Result<MemoryMap, XenErrno>,
    boot_info: &BootInfo,
    reservation_pages: Option<u64>,
) -> Result<HeapPlan, HeapSetupError> {
    let memory_map = memory_map
        .as_ref()
        .map_err(|errno| HeapSetupError::NoMemoryMap(*errno))?;
    let plan = heap::plan_heap(
        layout::kernel_end_address(),
        boot_info.boot_data_end,
        memory_map,
        reservation_pages.map(heap::populated_ram_end),
        x86_64::IDENTITY_MAPPED_LIMIT_BYTES,
    )
    .map_err(HeapSetupError::Plan)?;
    let mut first = false;
    HEAP_PLAN.call_once(|| {
        first = true;
        // SAFETY: the plan lies in a RAM region of the memory map, above the image and all
        // boot data (the start info's), below the populated end and inside the identity map
        // (`plan_heap` guarantees all four); `call_once` runs this at most once per boot.
        unsafe { heap::init_heap(plan) };
        plan
    });
    if first {
        Ok(plan)
    } else {
        Err(HeapSetupError::AlreadySetUp)
    }
}

/// Why the heap cannot grow.
#[derive(Clone, Copy, Debug)]
pub enum GrowthStartError {
    /// [`setup_heap`] did not succeed.
    NoHeap,
    /// Growth was started already.
    AlreadyStarted,
    Setup(GrowthSetupError),
}

impl fmt::Display for GrowthStartError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrowthStartError::NoHeap => write!(formatter, "there is no heap"),
            GrowthStartError::AlreadyStarted => write!(formatter, "growth was started already"),
            GrowthStartError::Setup(error) => write!(formatter, "{error}"),
        }
    }
}

/// Lets the heap of [`setup_heap`] grow (see [`heap::init_growth`]). Call it after mapping
/// shared_info, so that the growth reads the reservation as it stays.
/// `boot_reservation_pages` is `XENMEM_current_reservation` as read at boot.
pub fn start_growth(
    hypervisor: Hypervisor,
    boot_reservation_pages: Option<u64>,
) -> Result<GrowthSetup, GrowthStartError> {
    let plan = HEAP_PLAN.get().ok_or(GrowthStartError::NoHeap)?;
    if GROWTH_STARTED.swap(true, Ordering::AcqRel) {
        return Err(GrowthStartError::AlreadyStarted);
    }
    // SAFETY: once (the flag above), after `init_heap(plan)` (`plan` is set only by it);
    // nothing uses the RAM region above the heap (the grant window and shared_info lie
    // above 4 GiB, the console and xenstore pages in the special-page
    // region, boot data below the heap).
    unsafe { heap::init_growth(hypervisor, plan, boot_reservation_pages) }
        .map_err(GrowthStartError::Setup)
}
