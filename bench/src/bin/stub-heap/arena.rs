//! The measuring global allocator: the stub's heap allocator (`stub_allocator::SizeClassHeap`:
//! size classes up to 8 KiB over `linked_list_allocator`'s first fit, as `src/runtime/heap.rs`
//! uses it) over a fixed arena, plus a map of the bytes the backing first-fit heap has handed
//! out (class chunks and larger blocks), from which the heap extent and the backing free list's
//! holes are read.
//!
//! Two views of "in use": the live blocks the stub holds (`SizeClassHeap::used()`, each block
//! counted at its class's size), and what the backing heap has handed out, which adds the class
//! free lists (freed blocks go back to their class; only a reclaim, when the backing heap runs
//! out, gives them back to it). The extent and the holes are the backing heap's; the class free
//! lists are reported separately.
//!
//! Only code run through [`inside_stub`] on the thread that started the arena allocates in
//! it; everything else (what std allocates before `main`, the simulated guests, the driver,
//! the report, other threads such as other tests) goes to the system allocator, so the arena
//! holds exactly what the stub's heap would hold. Frees go to whichever allocator owns the
//! address. The mode is a per-thread flag: the stub runs on one vCPU, and the tests of this
//! binary run on threads of their own.
//!
//! The arena is one fixed region, as the kernel's heap is; it is taken from the system
//! allocator at start rather than being a 64 MiB `static`, which would only make the
//! executable's `.bss` and the compiler's constant evaluation larger. The measurement starts
//! it at [`ARENA_SIZE_BYTES`] and lets what does not fit go to the system allocator (flagged
//! as [`MeasuringAllocator::exhausted`]); the small-heap test starts it at a few MiB with
//! [`WhenExhausted::Fail`]: an allocation that does not fit returns null, as the kernel's
//! heap does, and the process aborts unless the allocating code handles it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use stub_allocator::{BackingObserver, HeapUsage, LockedSizeClassHeap};

/// The measurement's arena, and the largest one (the occupancy map covers this much): far
/// more than the goal, so that an over-budget store is measured, not aborted.
pub const ARENA_SIZE_BYTES: usize = 64 << 20;
/// The arena's alignment and the granularity of its size (a page, as the kernel's heap).
const ARENA_ALIGN_BYTES: usize = 4096;
/// The backing `linked_list_allocator` starts every block at a multiple of 8 bytes
/// (`align_of::<Hole>()`) and rounds every size up to a multiple of 8, so 8-byte granules
/// describe it exactly.
pub const GRANULE_BYTES: usize = 8;
const ARENA_OCCUPANCY_WORDS: usize = ARENA_SIZE_BYTES / GRANULE_BYTES / 64;

/// The stub's allocator as the process's global allocator.
#[global_allocator]
pub static STUB_HEAP: MeasuringAllocator = MeasuringAllocator::new();

thread_local! {
    /// Whether this thread's allocations go to the arena now (see [`inside_stub`]). Constant
    /// initialiser, no destructor: reading it never allocates, so the allocator may.
    static IN_ARENA: Cell<bool> = const { Cell::new(false) };
}

/// What an allocation that does not fit the arena gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenExhausted {
    /// A block from the system allocator, and [`MeasuringAllocator::exhausted`] says so (the
    /// measurement: its figures are then incomplete).
    UseSystemAllocator,
    /// Null, as from the kernel's heap: code that allocates fallibly (`try_reserve`) gets an
    /// error, anything else aborts the process (`handle_alloc_error`), as the stub crashes.
    Fail,
}

/// Runs `work` with its allocations in the arena (the stub's heap), if this thread started it.
pub fn inside_stub<T>(work: impl FnOnce() -> T) -> T {
    with_mode(true, work)
}

/// Runs `work` with its allocations outside the arena (simulated guests, ring pages), also
/// when called from inside the stub (the platform's callbacks).
pub fn outside_stub<T>(work: impl FnOnce() -> T) -> T {
    with_mode(false, work)
}

/// Puts the thread's previous mode back when dropped, also when `work` unwinds.
struct RestoreMode(bool);

impl Drop for RestoreMode {
    fn drop(&mut self) {
        IN_ARENA.set(self.0);
    }
}

fn with_mode<T>(in_arena: bool, work: impl FnOnce() -> T) -> T {
    let _restore = RestoreMode(IN_ARENA.replace(in_arena));
    work()
}

/// Whether the current thread is inside the stub (no allocation: see [`IN_ARENA`]).
fn thread_in_arena() -> bool {
    IN_ARENA.try_with(Cell::get).unwrap_or(false)
}

/// A number that identifies the current thread while it runs: the address of its
/// [`IN_ARENA`] (never 0).
fn current_thread_mark() -> usize {
    IN_ARENA
        .try_with(|flag| std::ptr::from_ref(flag) as usize)
        .unwrap_or(0)
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
    /// `SizeClassHeap::used()`: bytes in live blocks (class sizes, or the backing heap's
    /// rounding for blocks beyond the classes).
    pub used_bytes: usize,
    /// Bytes in the class free lists: handed out by the backing heap, free for their class only.
    pub class_free_bytes: usize,
    /// Bytes the classes hold from the backing heap (carved, less what reclaims gave back).
    pub carved_bytes: usize,
    /// Bytes reclaims gave back to the backing heap: 0 unless the backing heap ran out.
    pub reclaimed_bytes: usize,
    /// `SizeClassHeap::free()`: what the backing heap can still hand out.
    pub free_bytes: usize,
    /// The largest `used_bytes` so far.
    pub peak_used_bytes: usize,
    /// The largest `used_bytes + class_free_bytes` (the backing heap's `used()`) so far.
    pub peak_held_bytes: usize,
    /// The highest end of any block the backing heap ever handed out: first fit never placed
    /// a block beyond it, and the classes' behaviour does not depend on addresses, so a heap
    /// of this size would have served the same sequence identically.
    pub extent_bytes: usize,
    /// The backing heap's blocks and holes.
    pub layout: OccupancyLayout,
}

/// The stub's `LockedSizeClassHeap` over the arena, with the system allocator for the rest.
pub struct MeasuringAllocator {
    heap: LockedSizeClassHeap,
    /// The arena's first byte; 0 until [`MeasuringAllocator::start`].
    arena_start: AtomicUsize,
    arena_size_bytes: AtomicUsize,
    /// The thread whose allocations inside the stub go to the arena ([`current_thread_mark`]
    /// of the thread that started it); 0 once `MeasuringAllocator::stop`ped.
    owner_thread: AtomicUsize,
    /// [`WhenExhausted::Fail`]: an allocation that does not fit returns null.
    fail_when_exhausted: AtomicBool,
    peak_used_bytes: AtomicUsize,
    peak_held_bytes: AtomicUsize,
    extent_bytes: AtomicUsize,
    /// An allocation did not fit the arena (it went to the system allocator instead).
    exhausted: AtomicBool,
    occupancy: OccupancyMap<ARENA_OCCUPANCY_WORDS>,
}

impl MeasuringAllocator {
    const fn new() -> Self {
        MeasuringAllocator {
            heap: LockedSizeClassHeap::empty(),
            arena_start: AtomicUsize::new(0),
            arena_size_bytes: AtomicUsize::new(0),
            owner_thread: AtomicUsize::new(0),
            fail_when_exhausted: AtomicBool::new(false),
            peak_used_bytes: AtomicUsize::new(0),
            peak_held_bytes: AtomicUsize::new(0),
            extent_bytes: AtomicUsize::new(0),
            exhausted: AtomicBool::new(false),
            occupancy: OccupancyMap::new(),
        }
    }

    /// Takes an arena of `size_bytes` (a fixed region, as the kernel's heap is; at most
    /// [`ARENA_SIZE_BYTES`], a multiple of 4 KiB) and hands it to the heap. From now on the
    /// calling thread's allocations inside the stub go to it.
    pub fn start(&self, size_bytes: usize, when_exhausted: WhenExhausted) -> Result<(), String> {
        if self.arena_start.load(Ordering::SeqCst) != 0 {
            return Err("the arena is already started".to_string());
        }
        if size_bytes == 0
            || size_bytes > ARENA_SIZE_BYTES
            || !size_bytes.is_multiple_of(ARENA_ALIGN_BYTES)
        {
            return Err(format!(
                "an arena of {size_bytes} bytes: must be a multiple of {ARENA_ALIGN_BYTES} up to \
                 {ARENA_SIZE_BYTES}"
            ));
        }
        let layout = Layout::from_size_align(size_bytes, ARENA_ALIGN_BYTES)
            .map_err(|error| format!("arena layout: {error}"))?;
        // SAFETY: the layout has a non-zero size (checked above).
        let start = unsafe { System.alloc(layout) };
        if start.is_null() {
            return Err(format!(
                "cannot reserve a {size_bytes}-byte arena from the system allocator"
            ));
        }
        // SAFETY: `start` is a fresh, exclusively owned region of `size_bytes` bytes that is
        // never freed, and the heap is initialised only here (checked above).
        unsafe { self.heap.lock().init(start, size_bytes) };
        self.fail_when_exhausted
            .store(when_exhausted == WhenExhausted::Fail, Ordering::SeqCst);
        self.arena_size_bytes.store(size_bytes, Ordering::SeqCst);
        self.owner_thread
            .store(current_thread_mark(), Ordering::SeqCst);
        self.arena_start.store(start as usize, Ordering::SeqCst);
        Ok(())
    }

    /// No more allocations in the arena, from any thread (blocks in it are still freed to
    /// it). A thread that ends must stop the arena it owns: a later thread may get the same
    /// mark. (The measurement's arena serves `main` until the process exits.)
    #[cfg(test)]
    pub fn stop(&self) {
        self.owner_thread.store(0, Ordering::SeqCst);
    }

    /// Whether this thread's allocations inside the stub go to the arena.
    fn serves_this_thread(&self) -> bool {
        self.arena_start.load(Ordering::SeqCst) != 0
            && self.owner_thread.load(Ordering::SeqCst) == current_thread_mark()
    }

    /// The heap's usage as the kernel reads it (`HeapStatistics::usage` in
    /// `src/runtime/heap.rs`), if the arena serves this thread (no scan: cheap enough for
    /// every request).
    pub fn statistics(&self) -> Option<HeapUsage> {
        if !self.serves_this_thread() {
            return None;
        }
        Some(self.heap.lock().usage())
    }

    /// Current figures, with a scan of the occupancy map.
    pub fn figures(&self) -> HeapFigures {
        let (used_bytes, class_free_bytes, carved_bytes, reclaimed_bytes, free_bytes) = {
            let heap = self.heap.lock();
            (
                heap.used(),
                heap.class_free_bytes(),
                heap.carved_bytes(),
                heap.reclaimed_bytes(),
                heap.free(),
            )
        };
        HeapFigures {
            used_bytes,
            class_free_bytes,
            carved_bytes,
            reclaimed_bytes,
            free_bytes,
            peak_used_bytes: self.peak_used_bytes.load(Ordering::SeqCst),
            peak_held_bytes: self.peak_held_bytes.load(Ordering::SeqCst),
            extent_bytes: self.extent_bytes.load(Ordering::SeqCst),
            layout: self.occupancy.layout(),
        }
    }

    /// The class free lists: (block size, free blocks) for each class.
    pub fn class_free_lists(&self) -> Vec<(usize, usize)> {
        let heap = self.heap.lock();
        outside_stub(|| heap.class_free_lists().collect())
    }

    /// `SizeClassHeap::used()` alone (no scan): cheap enough to take around every request batch.
    pub fn used_bytes(&self) -> usize {
        self.heap.lock().used()
    }

    /// Whether some allocation did not fit the arena (the figures are then too low).
    pub fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::SeqCst)
    }

    fn arena_offset(&self, pointer: *mut u8) -> Option<usize> {
        let start = self.arena_start.load(Ordering::SeqCst);
        let size_bytes = self.arena_size_bytes.load(Ordering::SeqCst);
        let address = pointer as usize;
        (start != 0 && address >= start && address < start + size_bytes).then(|| address - start)
    }
}

/// Maps what the backing heap hands out and takes back (called under the heap's lock; it
/// only touches atomics).
struct BackingMap<'a>(&'a MeasuringAllocator);

impl BackingObserver for BackingMap<'_> {
    fn allocated(&mut self, start: NonNull<u8>, size_bytes: usize) {
        if let Some(offset) = self.0.arena_offset(start.as_ptr()) {
            self.0.occupancy.mark(offset, size_bytes, true);
            self.0
                .extent_bytes
                .fetch_max(offset + size_bytes, Ordering::SeqCst);
        }
    }

    fn freed(&mut self, start: NonNull<u8>, size_bytes: usize) {
        if let Some(offset) = self.0.arena_offset(start.as_ptr()) {
            self.0.occupancy.mark(offset, size_bytes, false);
        }
    }
}

// SAFETY: arena blocks come from `SizeClassHeap` under its lock, which upholds the GlobalAlloc
// contract for them; every other block comes from and returns to `System`. A pointer is
// returned to the arena exactly when its address lies in the arena, which only arena blocks
// do. `realloc` is the trait's default (allocate, copy, free), as in the kernel.
unsafe impl GlobalAlloc for MeasuringAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if thread_in_arena() && self.serves_this_thread() {
            let mut heap = self.heap.lock();
            match heap.allocate_observed(layout, &mut BackingMap(self)) {
                Ok(block) => {
                    let used_bytes = heap.used();
                    let held_bytes = heap.backing_used();
                    drop(heap);
                    self.peak_used_bytes.fetch_max(used_bytes, Ordering::SeqCst);
                    self.peak_held_bytes.fetch_max(held_bytes, Ordering::SeqCst);
                    return block.as_ptr();
                }
                Err(()) => {
                    drop(heap);
                    self.exhausted.store(true, Ordering::SeqCst);
                    if self.fail_when_exhausted.load(Ordering::SeqCst) {
                        return std::ptr::null_mut();
                    }
                }
            }
        }
        // SAFETY: forwarded contract: `layout` has a non-zero size.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        match (self.arena_offset(pointer), NonNull::new(pointer)) {
            (Some(_), Some(block)) => {
                // SAFETY: the block lies in the arena, so `alloc` got it from this heap with
                // this layout (GlobalAlloc contract).
                unsafe {
                    self.heap
                        .lock()
                        .deallocate_observed(block, layout, &mut BackingMap(self))
                };
            }
            // SAFETY: not in the arena, so `System` allocated it with this layout.
            _ => unsafe { System.dealloc(pointer, layout) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An [`OccupancyLayout`] from its figures, in field order.
    fn layout(
        top_bytes: usize,
        hole_count: usize,
        hole_bytes: usize,
        largest_hole_bytes: usize,
    ) -> OccupancyLayout {
        OccupancyLayout {
            top_bytes,
            hole_count,
            hole_bytes,
            largest_hole_bytes,
        }
    }

    #[test]
    fn occupancy_reports_the_top_and_the_holes_below_it() {
        let map: OccupancyMap<4> = OccupancyMap::new();
        assert_eq!(map.layout(), OccupancyLayout::default());
        // Blocks at [0, 16), [48, 1048) and [2000, 2008): holes of 32 and 952 bytes.
        map.mark(0, 16, true);
        map.mark(48, 1000, true);
        map.mark(2000, 8, true);
        assert_eq!(map.layout(), layout(2008, 2, 32 + 952, 952));
        // Freeing the top block leaves the middle one on top; the tail is not a hole.
        map.mark(2000, 8, false);
        map.mark(0, 16, false);
        assert_eq!(map.layout(), layout(1048, 1, 48, 48));
    }

    #[test]
    fn the_backing_map_follows_class_chunks_and_large_blocks() {
        // An allocator of its own (not the process's), started on its own arena; static
        // because its occupancy map is 1 MiB.
        static ALLOCATOR: MeasuringAllocator = MeasuringAllocator::new();
        let allocator = &ALLOCATOR;
        allocator
            .start(ARENA_SIZE_BYTES, WhenExhausted::UseSystemAllocator)
            .expect("arena");
        let small = Layout::from_size_align(24, 8).expect("layout");
        // Beyond the classes (8 KiB): a block of the backing heap.
        let large = Layout::from_size_align(10_000, 8).expect("layout");
        // SAFETY: non-zero sizes; freed below with the same layouts.
        let (first, block, second) = inside_stub(|| unsafe {
            (
                allocator.alloc(small),
                allocator.alloc(large),
                allocator.alloc(small),
            )
        });
        allocator.stop();
        let figures = allocator.figures();
        // One chunk of 21 blocks of 24 bytes (504 bytes), then the large block.
        assert_eq!(figures.carved_bytes, 504);
        assert_eq!(figures.used_bytes, 2 * 24 + 10_000);
        assert_eq!(figures.class_free_bytes, 504 - 2 * 24);
        assert_eq!(figures.extent_bytes, 504 + 10_000);
        assert_eq!(figures.layout.top_bytes, 504 + 10_000);
        assert_eq!(figures.peak_held_bytes, 504 + 10_000);
        // SAFETY: allocated above with these layouts.
        unsafe {
            allocator.dealloc(block, large);
            allocator.dealloc(first, small);
            allocator.dealloc(second, small);
        }
        // The chunk stays: the backing heap's top is its end, with no hole below.
        let figures = allocator.figures();
        assert_eq!(figures.used_bytes, 0);
        assert_eq!(figures.class_free_bytes, 504);
        assert_eq!(figures.layout.top_bytes, 504);
        assert_eq!(figures.layout.hole_count, 0);
        assert_eq!(figures.extent_bytes, 504 + 10_000);
    }
}
