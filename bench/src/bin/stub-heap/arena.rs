//! The measuring global allocator: the stub's heap allocator (`linked_list_allocator`, first
//! fit, as `src/runtime/heap.rs` uses it) over a fixed arena, plus a map of the occupied bytes
//! from which the peak use, the heap extent and the free-list holes are read.
//!
//! Only code run through [`inside_stub`] allocates in the arena; everything else (what std
//! allocates before `main`, the simulated guests, the driver, the report) goes to the system
//! allocator, so the arena holds exactly what the stub's heap would hold. Frees go to whichever
//! allocator owns the address. The mode is one flag for the whole process: the measurement
//! runs on one thread, as the stub runs on one vCPU.
//!
//! The arena is one fixed region, as the kernel's heap is; it is taken from the system
//! allocator at start rather than being a 64 MiB `static`, which would only make the
//! executable's `.bss` and the compiler's constant evaluation larger.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use linked_list_allocator::LockedHeap;
use linked_list_allocator::hole::HoleList;

/// The arena: far more than the goal, so that an over-budget store is measured, not aborted.
pub const ARENA_SIZE_BYTES: usize = 64 << 20;
/// `linked_list_allocator` starts every block at a multiple of 8 bytes (`align_of::<Hole>()`)
/// and rounds every size up to a multiple of 8, so 8-byte granules describe it exactly.
pub const GRANULE_BYTES: usize = 8;
const ARENA_OCCUPANCY_WORDS: usize = ARENA_SIZE_BYTES / GRANULE_BYTES / 64;

/// The stub's allocator as the process's global allocator.
#[global_allocator]
pub static STUB_HEAP: MeasuringAllocator = MeasuringAllocator::new();

/// Runs `work` with its allocations in the arena (the stub's heap).
pub fn inside_stub<T>(work: impl FnOnce() -> T) -> T {
    with_mode(true, work)
}

/// Runs `work` with its allocations outside the arena (simulated guests, ring pages), also
/// when called from inside the stub (the platform's callbacks).
pub fn outside_stub<T>(work: impl FnOnce() -> T) -> T {
    with_mode(false, work)
}

fn with_mode<T>(in_arena: bool, work: impl FnOnce() -> T) -> T {
    let previous = STUB_HEAP.in_arena.swap(in_arena, Ordering::SeqCst);
    let result = work();
    STUB_HEAP.in_arena.store(previous, Ordering::SeqCst);
    result
}

/// The size of the block `linked_list_allocator` gives for `layout` (what its `used()` counts).
pub fn block_size_bytes(layout: Layout) -> usize {
    HoleList::align_layout(layout).map_or(layout.size(), |aligned| aligned.size())
}

/// One bit per granule: set while the granule belongs to an allocated block.
pub struct OccupancyMap<const WORDS: usize> {
    words: [AtomicU64; WORDS],
}

/// Where the allocated blocks lie.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OccupancyLayout {
    /// End of the highest allocated block, from the arena's start.
    pub top_bytes: usize,
    /// Free runs below the top: the free list's holes (the tail above the top is not one).
    pub hole_count: usize,
    pub hole_bytes: usize,
    pub largest_hole_bytes: usize,
}

impl<const WORDS: usize> OccupancyMap<WORDS> {
    pub const fn new() -> Self {
        OccupancyMap {
            words: [const { AtomicU64::new(0) }; WORDS],
        }
    }

    /// Marks `size_bytes` from `offset_bytes` (multiples of [`GRANULE_BYTES`]) occupied or free.
    pub fn mark(&self, offset_bytes: usize, size_bytes: usize, occupied: bool) {
        let end = (offset_bytes + size_bytes).div_ceil(GRANULE_BYTES);
        let mut granule = offset_bytes / GRANULE_BYTES;
        while granule < end {
            let bit = granule % 64;
            let count = (64 - bit).min(end - granule);
            let mask = if count == 64 {
                u64::MAX
            } else {
                ((1u64 << count) - 1) << bit
            };
            if let Some(word) = self.words.get(granule / 64) {
                if occupied {
                    word.fetch_or(mask, Ordering::Relaxed);
                } else {
                    word.fetch_and(!mask, Ordering::Relaxed);
                }
            }
            granule += count;
        }
    }

    /// The top and the holes below it.
    pub fn layout(&self) -> OccupancyLayout {
        let mut layout = OccupancyLayout::default();
        // The free run being scanned, in granules: a hole when an occupied granule ends it
        // (the run that reaches the end is the tail above the top, not a hole).
        let mut free_run = 0usize;
        for (index, word) in self.words.iter().enumerate() {
            let bits = word.load(Ordering::Relaxed);
            if bits == 0 {
                free_run += 64;
                continue;
            }
            for bit in 0..64 {
                if bits & (1 << bit) == 0 {
                    free_run += 1;
                    continue;
                }
                if free_run > 0 {
                    layout.hole_count += 1;
                    layout.hole_bytes += free_run * GRANULE_BYTES;
                    layout.largest_hole_bytes =
                        layout.largest_hole_bytes.max(free_run * GRANULE_BYTES);
                }
                free_run = 0;
                layout.top_bytes = (index * 64 + bit + 1) * GRANULE_BYTES;
            }
        }
        layout
    }
}

impl<const WORDS: usize> Default for OccupancyMap<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

/// The heap's figures at one moment.
#[derive(Clone, Copy, Debug)]
pub struct HeapFigures {
    /// `Heap::used()`: bytes in allocated blocks (sizes as the allocator rounds them).
    pub used_bytes: usize,
    /// `Heap::free()`.
    pub free_bytes: usize,
    /// The largest `used_bytes` so far.
    pub peak_used_bytes: usize,
    /// The highest end of any block ever allocated: first fit never placed a block beyond
    /// it, so a heap of this size would have served the same sequence identically.
    pub extent_bytes: usize,
    pub layout: OccupancyLayout,
}

/// `linked_list_allocator::LockedHeap` over the arena, with the system allocator for the rest.
pub struct MeasuringAllocator {
    heap: LockedHeap,
    /// The arena's first byte; 0 until [`MeasuringAllocator::start`].
    arena_start: AtomicUsize,
    /// Whether allocations go to the arena now (see [`inside_stub`]).
    in_arena: AtomicBool,
    peak_used_bytes: AtomicUsize,
    extent_bytes: AtomicUsize,
    /// An allocation did not fit the arena (it went to the system allocator instead).
    exhausted: AtomicBool,
    occupancy: OccupancyMap<ARENA_OCCUPANCY_WORDS>,
}

impl MeasuringAllocator {
    const fn new() -> Self {
        MeasuringAllocator {
            heap: LockedHeap::empty(),
            arena_start: AtomicUsize::new(0),
            in_arena: AtomicBool::new(false),
            peak_used_bytes: AtomicUsize::new(0),
            extent_bytes: AtomicUsize::new(0),
            exhausted: AtomicBool::new(false),
            occupancy: OccupancyMap::new(),
        }
    }

    /// Takes the arena (a fixed region, as the kernel's heap is) and hands it to the heap.
    pub fn start(&self) -> Result<(), String> {
        if self.arena_start.load(Ordering::SeqCst) != 0 {
            return Err("the arena is already started".to_string());
        }
        let layout = Layout::from_size_align(ARENA_SIZE_BYTES, 4096)
            .map_err(|error| format!("arena layout: {error}"))?;
        // SAFETY: the layout has a non-zero size.
        let start = unsafe { System.alloc(layout) };
        if start.is_null() {
            return Err(format!(
                "cannot reserve a {ARENA_SIZE_BYTES}-byte arena from the system allocator"
            ));
        }
        // SAFETY: `start` is a fresh, exclusively owned region of ARENA_SIZE_BYTES bytes that
        // is never freed, and the heap is initialised only here (checked above).
        unsafe { self.heap.lock().init(start, ARENA_SIZE_BYTES) };
        self.arena_start.store(start as usize, Ordering::SeqCst);
        Ok(())
    }

    /// Current figures, with a scan of the occupancy map.
    pub fn figures(&self) -> HeapFigures {
        let (used_bytes, free_bytes) = {
            let heap = self.heap.lock();
            (heap.used(), heap.free())
        };
        HeapFigures {
            used_bytes,
            free_bytes,
            peak_used_bytes: self.peak_used_bytes.load(Ordering::SeqCst),
            extent_bytes: self.extent_bytes.load(Ordering::SeqCst),
            layout: self.occupancy.layout(),
        }
    }

    /// `Heap::used()` alone (no scan): cheap enough to take around every request batch.
    pub fn used_bytes(&self) -> usize {
        self.heap.lock().used()
    }

    /// Whether some allocation did not fit the arena (the figures are then too low).
    pub fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::SeqCst)
    }

    fn arena_offset(&self, pointer: *mut u8) -> Option<usize> {
        let start = self.arena_start.load(Ordering::SeqCst);
        let address = pointer as usize;
        (start != 0 && address >= start && address < start + ARENA_SIZE_BYTES)
            .then(|| address - start)
    }
}

// SAFETY: arena blocks come from `linked_list_allocator::Heap` under its lock, which upholds
// the GlobalAlloc contract for them; every other block comes from and returns to `System`.
// A pointer is returned to the arena exactly when its address lies in the arena, which only
// arena blocks do. `realloc` is the trait's default (allocate, copy, free), as in the kernel.
unsafe impl GlobalAlloc for MeasuringAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.in_arena.load(Ordering::SeqCst) && self.arena_start.load(Ordering::SeqCst) != 0 {
            let mut heap = self.heap.lock();
            match heap.allocate_first_fit(layout) {
                Ok(block) => {
                    let used_bytes = heap.used();
                    drop(heap);
                    if let Some(offset) = self.arena_offset(block.as_ptr()) {
                        let size_bytes = block_size_bytes(layout);
                        self.occupancy.mark(offset, size_bytes, true);
                        self.extent_bytes
                            .fetch_max(offset + size_bytes, Ordering::SeqCst);
                    }
                    self.peak_used_bytes.fetch_max(used_bytes, Ordering::SeqCst);
                    return block.as_ptr();
                }
                Err(()) => {
                    drop(heap);
                    self.exhausted.store(true, Ordering::SeqCst);
                }
            }
        }
        // SAFETY: forwarded contract: `layout` has a non-zero size.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        match (self.arena_offset(pointer), NonNull::new(pointer)) {
            (Some(offset), Some(block)) => {
                self.occupancy.mark(offset, block_size_bytes(layout), false);
                // SAFETY: the block lies in the arena, so `alloc` got it from this heap with
                // this layout (GlobalAlloc contract).
                unsafe { self.heap.lock().deallocate(block, layout) };
            }
            // SAFETY: not in the arena, so `System` allocated it with this layout.
            _ => unsafe { System.dealloc(pointer, layout) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_reports_the_top_and_the_holes_below_it() {
        let map: OccupancyMap<4> = OccupancyMap::new();
        assert_eq!(map.layout(), OccupancyLayout::default());
        // Blocks at [0, 16), [48, 1048) and [2000, 2008): holes of 32 and 952 bytes.
        map.mark(0, 16, true);
        map.mark(48, 1000, true);
        map.mark(2000, 8, true);
        assert_eq!(
            map.layout(),
            OccupancyLayout {
                top_bytes: 2008,
                hole_count: 2,
                hole_bytes: 32 + 952,
                largest_hole_bytes: 952,
            }
        );
        // Freeing the top block leaves the middle one on top; the tail is not a hole.
        map.mark(2000, 8, false);
        map.mark(0, 16, false);
        assert_eq!(
            map.layout(),
            OccupancyLayout {
                top_bytes: 1048,
                hole_count: 1,
                hole_bytes: 48,
                largest_hole_bytes: 48,
            }
        );
    }

    #[test]
    fn block_sizes_follow_the_allocators_rounding() {
        let size = |bytes| block_size_bytes(Layout::from_size_align(bytes, 1).expect("layout"));
        assert_eq!(size(1), 16);
        assert_eq!(size(16), 16);
        assert_eq!(size(17), 24);
        assert_eq!(size(4096), 4096);
    }
}
