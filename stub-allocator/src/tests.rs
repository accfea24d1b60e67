//! Tests of the size-class heap: class layout, carving, reclaim, growth and the figures' invariant.

use super::*;
use crate::free_list::{Link, set_next};
use std::collections::BTreeMap;
use std::vec::Vec;

/// A region of the test process's memory for one heap.
struct Region {
    start: *mut u8,
    layout: std::alloc::Layout,
}

impl Region {
    fn new(size: usize) -> Region {
        let layout = std::alloc::Layout::from_size_align(size, 4096).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let start = unsafe { std::alloc::alloc(layout) };
        assert!(!start.is_null());
        Region { start, layout }
    }

    /// A heap over the region; it must not be used after the region is dropped.
    fn heap(&self) -> SizeClassHeap {
        let mut heap = SizeClassHeap::empty();
        // SAFETY: the region is fresh, exclusively owned and outlives the heap in each test.
        unsafe { heap.init(self.start, self.layout.size()) };
        heap
    }

    /// A heap over the first `bytes` of the region, to be extended into the rest.
    fn heap_over(&self, bytes: usize) -> SizeClassHeap {
        assert!(bytes <= self.layout.size());
        let mut heap = SizeClassHeap::empty();
        // SAFETY: as in `heap`, for a part of the region.
        unsafe { heap.init(self.start, bytes) };
        heap
    }

    fn contains(&self, block: NonNull<u8>, size: usize) -> bool {
        let start = self.start as usize;
        let address = block.as_ptr() as usize;
        address >= start && address + size <= start + self.layout.size()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.start, self.layout) };
    }
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).expect("layout")
}

fn assert_consistent(heap: &SizeClassHeap) {
    assert_eq!(
        heap.used() + heap.class_free_bytes() + heap.free(),
        heap.size()
    );
    assert_eq!(heap.backing_used(), heap.used() + heap.class_free_bytes());
    assert!(heap.class_free_bytes() <= heap.carved_bytes());
}

/// A block the tests hold, filled with a pattern.
struct Live {
    block: NonNull<u8>,
    layout: Layout,
    pattern: u8,
}

impl Live {
    fn fill(block: NonNull<u8>, layout: Layout, pattern: u8) -> Live {
        // SAFETY: the block has at least `layout.size()` writable bytes.
        unsafe { block.as_ptr().write_bytes(pattern, layout.size()) };
        Live {
            block,
            layout,
            pattern,
        }
    }

    /// The addresses the block covers, at the size the heap counts for it.
    fn span(&self) -> (usize, usize) {
        let start = self.block.as_ptr() as usize;
        (start, start + block_size_bytes(self.layout))
    }

    fn intact(&self) -> bool {
        // SAFETY: the block is live with at least `layout.size()` initialised bytes.
        let bytes = unsafe { core::slice::from_raw_parts(self.block.as_ptr(), self.layout.size()) };
        bytes.iter().all(|&byte| byte == self.pattern)
    }
}

/// Every live block intact, and no two overlapping (block sizes as the heap counts them).
fn check_live(live: &[Live]) {
    for entry in live {
        assert!(entry.intact(), "block at {:p} was overwritten", entry.block);
    }
    assert_disjoint(live.iter().map(Live::span).collect());
}

/// No two of the `(start, end)` address spans overlap.
fn assert_disjoint(mut spans: Vec<(usize, usize)>) {
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "blocks {pair:x?} overlap");
    }
}

/// xorshift64*: enough randomness for a test, no crate needed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> usize {
        (self.next() % bound) as usize
    }
}

#[test]
fn classes_round_to_8_bytes_then_to_a_quarter_of_a_doubling() {
    assert_eq!(block_size_bytes(layout(0, 1)), 8);
    assert_eq!(block_size_bytes(layout(1, 1)), 8);
    assert_eq!(block_size_bytes(layout(8, 8)), 8);
    assert_eq!(block_size_bytes(layout(9, 4)), 16);
    assert_eq!(block_size_bytes(layout(24, 8)), 24);
    assert_eq!(block_size_bytes(layout(512, 8)), 512);
    assert!(is_class_layout(layout(512, 8)));
    assert_eq!(class_of(layout(512, 1)), Some(SMALL_CLASS_COUNT - 1));
    // Medium classes, 4 to a doubling.
    assert_eq!(block_size_bytes(layout(513, 8)), 640);
    assert_eq!(block_size_bytes(layout(640, 4)), 640);
    assert_eq!(block_size_bytes(layout(641, 8)), 768);
    assert_eq!(block_size_bytes(layout(1025, 8)), 1280);
    assert_eq!(block_size_bytes(layout(4608, 8)), 5120);
    assert_eq!(block_size_bytes(layout(8192, 8)), 8192);
    assert_eq!(class_of(layout(8192, 1)), Some(CLASS_COUNT - 1));
    // Beyond the classes: the backing heap's rounding (at least 16, a multiple of 8).
    assert!(!is_class_layout(layout(8193, 8)));
    assert_eq!(block_size_bytes(layout(8193, 8)), 8200);
    assert!(!is_class_layout(layout(8, 16)));
    assert_eq!(block_size_bytes(layout(8, 16)), 16);
    assert!(!is_class_layout(layout(600, 32)));
    assert_eq!(block_size_bytes(layout(600, 32)), 600);
}

#[test]
fn classes_are_increasing_and_each_size_maps_to_the_smallest_that_fits() {
    let mut previous = 0;
    for class in 0..CLASS_COUNT {
        let size = class_size_bytes(class);
        assert!(size > previous, "class {class}");
        assert_eq!(class_of(layout(size, 8)), Some(class));
        assert_eq!(class_of(layout(previous + 1, 8)), Some(class));
        assert_eq!(size % GRANULE_BYTES, 0);
        if class >= SMALL_CLASS_COUNT {
            // At most 25% rounding.
            assert!((size - previous) * 4 <= previous + 1, "class {class}");
        }
        previous = size;
    }
    assert_eq!(previous, MAX_CLASS_BYTES);
}

#[test]
fn a_freed_small_block_is_reused_and_stays_with_its_class() {
    let region = Region::new(64 << 10);
    let mut heap = region.heap();
    let size = heap.size();
    let small = layout(40, 8);
    let first = heap.allocate(small).expect("small block");
    // One chunk of 512 / 40 = 12 blocks was carved; the rest of it is in the class list.
    assert_eq!(heap.carved_bytes(), 12 * 40);
    assert_eq!(heap.used(), 40);
    assert_eq!(heap.class_free_bytes(), 11 * 40);
    assert_eq!(heap.free(), size - 12 * 40);
    // SAFETY: allocated above with this layout.
    unsafe { heap.deallocate(first, small) };
    assert_eq!(heap.used(), 0);
    assert_eq!(heap.class_free_bytes(), 12 * 40);
    // Not given back to the backing heap.
    assert_eq!(heap.free(), size - 12 * 40);
    let again = heap.allocate(small).expect("small block");
    assert_eq!(again, first);
    assert_eq!(heap.carved_bytes(), 12 * 40);
    assert_consistent(&heap);
    // A large block comes from the backing heap and goes back to it.
    let large = layout(10_000, 8);
    let free_before = heap.free();
    let block = heap.allocate(large).expect("large block");
    assert_eq!(heap.free(), free_before - 10_000);
    assert_eq!(heap.used(), 40 + 10_000);
    // SAFETY: allocated above with this layout.
    unsafe { heap.deallocate(block, large) };
    assert_eq!(heap.free(), free_before);
    assert_consistent(&heap);
}

#[test]
fn every_class_hands_out_successive_disjoint_blocks_of_a_chunk() {
    let region = Region::new(1 << 20);
    let mut heap = region.heap();
    let mut live = Vec::new();
    for class in 0..CLASS_COUNT {
        let size = class_size_bytes(class);
        let carved_before = heap.carved_bytes();
        let blocks = (CHUNK_BYTES / size).max(1);
        for index in 0..blocks {
            let block = heap.allocate(layout(size, 8)).expect("block");
            live.push(Live::fill(block, layout(size, 8), index as u8));
        }
        // One chunk per class.
        assert_eq!(heap.carved_bytes() - carved_before, blocks * size);
    }
    check_live(&live);
    assert_eq!(
        heap.used(),
        live.iter().map(|entry| entry.layout.size()).sum::<usize>()
    );
    assert_consistent(&heap);
}

#[test]
fn alignment_is_respected_in_and_beyond_the_classes() {
    let region = Region::new(4 << 20);
    let mut heap = region.heap();
    let mut live = Vec::new();
    let mut pattern = 0u8;
    for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
        for size in (1..=600)
            .step_by(7)
            .chain([0, 8, 16, 512, 513, 4000, 8192, 9000])
        {
            let wanted = layout(size, align);
            let block = heap.allocate(wanted).expect("block");
            assert_eq!(block.as_ptr() as usize % align, 0, "{wanted:?}");
            assert!(region.contains(block, block_size_bytes(wanted)));
            pattern = pattern.wrapping_add(1);
            live.push(Live::fill(block, wanted, pattern));
        }
    }
    check_live(&live);
    for entry in live.drain(..) {
        // SAFETY: allocated above with this layout.
        unsafe { heap.deallocate(entry.block, entry.layout) };
    }
    assert_eq!(heap.used(), 0);
    assert_eq!(heap.class_free_bytes(), heap.carved_bytes());
    assert_consistent(&heap);
}

/// The backing heap as a [`BackingObserver`] sees it: one flag per 8-byte granule of the
/// heap, set while the backing heap has handed it out. Checks the observer's contract on
/// the way: what is handed out was free, what is taken back was handed out.
struct BackingMap {
    bottom: usize,
    occupied: Vec<bool>,
    occupied_bytes: usize,
}

impl BackingMap {
    fn new(heap: &SizeClassHeap) -> BackingMap {
        BackingMap {
            bottom: heap.backing.bottom() as usize,
            occupied: std::vec![false; heap.size() / GRANULE_BYTES],
            occupied_bytes: 0,
        }
    }

    fn granules(&self, start: NonNull<u8>, size_bytes: usize) -> core::ops::Range<usize> {
        let offset = start.as_ptr() as usize - self.bottom;
        assert_eq!(offset % GRANULE_BYTES, 0);
        assert_eq!(size_bytes % GRANULE_BYTES, 0);
        let range = offset / GRANULE_BYTES..(offset + size_bytes) / GRANULE_BYTES;
        assert!(range.end <= self.occupied.len(), "beyond the heap");
        range
    }

    /// The heap grew by `bytes`: free granules at the top.
    fn extend(&mut self, bytes: usize) {
        assert_eq!(bytes % GRANULE_BYTES, 0);
        self.occupied
            .resize(self.occupied.len() + bytes / GRANULE_BYTES, false);
    }

    /// Whether the backing heap has handed out all of `size_bytes` at `start`.
    fn is_occupied(&self, start: NonNull<u8>, size_bytes: usize) -> bool {
        let range = self.granules(start, size_bytes);
        self.occupied[range].iter().all(|&occupied| occupied)
    }

    /// The backing heap's holes: its free runs, as (address, bytes).
    fn holes(&self) -> Vec<(usize, usize)> {
        let mut holes = Vec::new();
        let mut run_start = None;
        for (granule, &occupied) in self.occupied.iter().chain([&true]).enumerate() {
            match (occupied, run_start) {
                (false, None) => run_start = Some(granule),
                (true, Some(start)) => {
                    holes.push((
                        self.bottom + start * GRANULE_BYTES,
                        (granule - start) * GRANULE_BYTES,
                    ));
                    run_start = None;
                }
                _ => {}
            }
        }
        holes
    }
}

impl BackingObserver for BackingMap {
    fn allocated(&mut self, start: NonNull<u8>, size_bytes: usize) {
        for granule in self.granules(start, size_bytes) {
            assert!(!self.occupied[granule], "handed out twice at {start:p}");
            self.occupied[granule] = true;
        }
        self.occupied_bytes += size_bytes;
    }

    fn freed(&mut self, start: NonNull<u8>, size_bytes: usize) {
        for granule in self.granules(start, size_bytes) {
            assert!(
                self.occupied[granule],
                "taken back but not handed out at {start:p}"
            );
            self.occupied[granule] = false;
        }
        self.occupied_bytes -= size_bytes;
    }
}

/// The free class blocks, as (address, size).
fn free_class_blocks(heap: &SizeClassHeap) -> Vec<(usize, usize)> {
    let mut blocks = Vec::new();
    for (class, head) in heap.free_lists.iter().enumerate() {
        let mut cursor = *head;
        while let Some(block) = cursor {
            blocks.push((block.as_ptr() as usize, class_size_bytes(class)));
            // SAFETY: a block of a class list.
            cursor = unsafe { next_of(block) };
        }
    }
    blocks
}

/// Whether `linked_list_allocator` 0.10.6 can place `layout` in the hole of `bytes` at
/// `hole` (`Cursor::split_current`): the size rounded up to 16 and to 8; at the hole's start
/// if it is aligned, else at the first aligned address at least 16 bytes above it; leaving
/// nothing or at least 16 bytes above the block.
fn fits_in_hole(hole: usize, bytes: usize, layout: Layout) -> bool {
    let size = layout
        .size()
        .max(HOLE_BYTES)
        .next_multiple_of(GRANULE_BYTES);
    let start = if hole.is_multiple_of(layout.align()) {
        hole
    } else {
        (hole + HOLE_BYTES).next_multiple_of(layout.align())
    };
    let end = start + size;
    end == hole + bytes || end + HOLE_BYTES <= hole + bytes
}

/// The smallest backing block an allocation of `layout` can do with: the block itself
/// beyond the classes, else the smallest chunk of its class (see `carve`).
fn smallest_backing_request(wanted: Layout) -> Layout {
    match class_of(wanted) {
        Some(class) => {
            let size = class_size_bytes(class);
            layout(HOLE_BYTES.div_ceil(size) * size, GRANULE_BYTES)
        }
        None => wanted,
    }
}

/// The free class blocks and the live blocks are disjoint, and every free class block is
/// memory the backing heap handed out.
fn assert_free_blocks_sound(heap: &SizeClassHeap, map: &BackingMap, live: &[Live]) {
    let free = free_class_blocks(heap);
    assert_eq!(
        free.iter().map(|&(_, size)| size).sum::<usize>(),
        heap.class_free_bytes()
    );
    let spans: Vec<(usize, usize)> = free
        .iter()
        .map(|&(address, size)| {
            let block = NonNull::new(address as *mut u8).expect("a block");
            assert!(
                map.is_occupied(block, size),
                "free block {address:#x} in a hole"
            );
            (address, address + size)
        })
        .chain(live.iter().map(Live::span))
        .collect();
    assert_disjoint(spans);
}

/// After a failed allocation of `wanted`, the memory is really exhausted: no hole of the
/// backing heap can hold what the request needs, and the class lists hold only what no
/// reclaim can give back: 8-byte blocks without a free class block next to them (but at
/// most two at each end of the heap), at most one per live block or hole.
fn assert_really_exhausted(heap: &SizeClassHeap, map: &BackingMap, wanted: Layout, live: &[Live]) {
    let needed = smallest_backing_request(wanted);
    let holes = map.holes();
    for &(hole, bytes) in &holes {
        assert!(
            !fits_in_hole(hole, bytes, needed),
            "{wanted:?} failed, but {needed:?} fits the hole of {bytes} B at {hole:#x}"
        );
    }
    let bottom = heap.backing.bottom() as usize;
    let top = bottom + heap.size();
    let mut stranded: Vec<usize> = free_class_blocks(heap)
        .into_iter()
        .map(|(address, size)| {
            assert_eq!(
                size, GRANULE_BYTES,
                "a free {size}-byte block at {address:#x} stayed"
            );
            address
        })
        .collect();
    stranded.sort_unstable();
    for pair in stranded.windows(2) {
        let at_an_end = pair[1] <= bottom + 2 * GRANULE_BYTES || pair[0] >= top - 3 * GRANULE_BYTES;
        assert!(
            pair[0] + GRANULE_BYTES < pair[1] || at_an_end,
            "adjacent free 8-byte blocks at {:#x} stayed",
            pair[0]
        );
    }
    assert!(
        stranded.len() <= live.len() + holes.len() + 1 + 2,
        "{} free 8-byte blocks stayed, with {} live blocks and {} holes",
        stranded.len(),
        live.len(),
        holes.len()
    );
}

/// What [`run_model`] saw.
#[derive(Debug, Default)]
struct ModelRun {
    allocations: usize,
    failures: usize,
    /// Allocations that succeeded thanks to a reclaim.
    served_by_reclaim: usize,
    /// The most bytes left in the class lists after a failed allocation.
    most_left_at_a_failure: usize,
    /// Extensions of the heap after failed allocations (see [`run_model`]'s `growth`).
    extensions: usize,
}

/// How [`run_model`]'s heap grows: it starts over `initial_bytes` of the region and takes
/// `step_bytes` more of it after each failed allocation, as long as the region has them.
#[derive(Clone, Copy, Debug)]
struct Growth {
    initial_bytes: usize,
    step_bytes: usize,
}

/// Random allocations (`draw` picks the layout for a step) and frees against a model of
/// the live blocks, on a heap over `region`, with up to `max_live` live blocks. After every
/// step: the figures match the model and the backing map, and the new block overlaps no
/// live block and lies in memory the backing heap handed out. After every failed
/// allocation: the live blocks are intact, the memory is really exhausted
/// ([`assert_really_exhausted`]), and the heap grows by a step of `growth` if the region
/// has room, otherwise a tenth of the live blocks is freed.
fn run_model(
    region: &Region,
    steps: u32,
    seed: u64,
    max_live: usize,
    growth: Option<Growth>,
    mut draw: impl FnMut(&mut Random, u32) -> Layout,
) -> ModelRun {
    let mut heap = match growth {
        Some(growth) => region.heap_over(growth.initial_bytes),
        None => region.heap(),
    };
    let mut map = BackingMap::new(&heap);
    let mut random = Random(seed);
    let mut live: Vec<Live> = Vec::new();
    let mut spans: BTreeMap<usize, usize> = BTreeMap::new();
    let mut model_used = 0usize;
    // Bytes of the live blocks beyond the classes (the rest of the backing heap's used
    // memory is the classes').
    let mut model_direct = 0usize;
    let mut run = ModelRun::default();
    let free_one = |heap: &mut SizeClassHeap,
                    map: &mut BackingMap,
                    live: &mut Vec<Live>,
                    spans: &mut BTreeMap<usize, usize>,
                    random: &mut Random| {
        let entry = live.swap_remove(random.below(live.len() as u64));
        assert!(entry.intact(), "block at {:p} was overwritten", entry.block);
        spans.remove(&(entry.block.as_ptr() as usize));
        // SAFETY: allocated with this layout and not freed since.
        unsafe { heap.deallocate_observed(entry.block, entry.layout, map) };
        (
            block_size_bytes(entry.layout),
            if is_class_layout(entry.layout) {
                0
            } else {
                block_size_bytes(entry.layout)
            },
        )
    };
    for step in 0..steps {
        let allocate = live.is_empty() || (live.len() < max_live && random.below(100) < 55);
        if allocate {
            let wanted = draw(&mut random, step);
            let used_before = heap.used();
            let reclaimed_before = heap.reclaimed_bytes();
            match heap.allocate_observed(wanted, &mut map) {
                Ok(block) => {
                    run.allocations += 1;
                    if heap.reclaimed_bytes() > reclaimed_before {
                        run.served_by_reclaim += 1;
                    }
                    let size = block_size_bytes(wanted);
                    assert_eq!(block.as_ptr() as usize % wanted.align(), 0);
                    assert!(region.contains(block, size));
                    assert!(
                        map.is_occupied(block, size),
                        "{wanted:?} outside the backing"
                    );
                    let start = block.as_ptr() as usize;
                    if let Some((_, &end)) = spans.range(..=start).next_back() {
                        assert!(end <= start, "{wanted:?} at {start:#x} overlaps a block");
                    }
                    if let Some((&next, _)) = spans.range(start..).next() {
                        assert!(start + size <= next, "{wanted:?} at {start:#x} overlaps");
                    }
                    spans.insert(start, start + size);
                    model_used += size;
                    if !is_class_layout(wanted) {
                        model_direct += size;
                    }
                    live.push(Live::fill(block, wanted, step as u8));
                }
                Err(()) => {
                    run.failures += 1;
                    run.most_left_at_a_failure =
                        run.most_left_at_a_failure.max(heap.class_free_bytes());
                    assert_eq!(heap.used(), used_before);
                    assert_eq!(map.occupied_bytes, heap.backing_used());
                    assert_consistent(&heap);
                    check_live(&live);
                    assert_free_blocks_sound(&heap, &map, &live);
                    assert_really_exhausted(&heap, &map, wanted, &live);
                    if let Some(Growth { step_bytes, .. }) = growth
                        && heap.size() + step_bytes <= region.layout.size()
                    {
                        let free_before = heap.free();
                        // SAFETY: the region's next `step_bytes` after the heap, which
                        // nothing else uses.
                        unsafe { heap.extend(step_bytes) }.expect("extend");
                        map.extend(step_bytes);
                        assert_eq!(heap.free(), free_before + step_bytes);
                        assert_eq!(heap.used(), used_before);
                        run.extensions += 1;
                    } else {
                        for _ in 0..(live.len() / 10).max(1) {
                            let (used, direct) =
                                free_one(&mut heap, &mut map, &mut live, &mut spans, &mut random);
                            model_used -= used;
                            model_direct -= direct;
                        }
                    }
                }
            }
        } else {
            let (used, direct) = free_one(&mut heap, &mut map, &mut live, &mut spans, &mut random);
            model_used -= used;
            model_direct -= direct;
        }
        assert_eq!(heap.used(), model_used);
        assert_eq!(heap.carved_bytes() + model_direct, heap.backing_used());
        assert_eq!(map.occupied_bytes, heap.backing_used());
        assert_consistent(&heap);
        if step % 2000 == 0 {
            check_live(&live);
            assert_free_blocks_sound(&heap, &map, &live);
        }
    }
    check_live(&live);
    assert_free_blocks_sound(&heap, &map, &live);
    for entry in live.drain(..) {
        assert!(entry.intact(), "block at {:p} was overwritten", entry.block);
        // SAFETY: allocated above with this layout and not freed since.
        unsafe { heap.deallocate_observed(entry.block, entry.layout, &mut map) };
    }
    assert_eq!(heap.used(), 0);
    assert_eq!(heap.backing_used(), heap.carved_bytes());
    assert_consistent(&heap);
    // Everything free: a request larger than the heap fails after a reclaim, which gives
    // back all but isolated 8-byte blocks.
    let too_large = layout(heap.size() + GRANULE_BYTES, GRANULE_BYTES);
    assert!(heap.allocate_observed(too_large, &mut map).is_err());
    assert_really_exhausted(&heap, &map, too_large, &[]);
    assert_eq!(map.occupied_bytes, heap.backing_used());
    assert_eq!(heap.backing_used(), heap.class_free_bytes());
    assert_consistent(&heap);
    run
}

#[test]
fn random_operations_match_a_model() {
    let region = Region::new(16 << 20);
    let run = run_model(
        &region,
        60_000,
        0x9e37_79b9_7f4a_7c15,
        3000,
        None,
        |random, _| {
            let size = match random.below(100) {
                0..=69 => random.below(65),
                70..=84 => random.below(MAX_SMALL_CLASS_BYTES as u64 + 1),
                85..=94 => random.below(MAX_CLASS_BYTES as u64 + 1),
                _ => random.below(20_000),
            };
            let align = match random.below(100) {
                0..=79 => 8,
                80..=89 => 1 << random.below(3),
                90..=96 => 16,
                _ => 32 << random.below(3),
            };
            layout(size, align)
        },
    );
    // The region is large enough: no failure, so no reclaim but the final one.
    assert_eq!(run.failures, 0);
    assert_eq!(run.served_by_reclaim, 0);
    assert!(run.allocations > 30_000);
}

/// The model near exhaustion: a small heap, no cap on the live blocks, and sizes that
/// move from class to class every 1500 steps (with 8-byte blocks throughout), so that
/// memory freed in one class is needed by another and the backing heap keeps failing.
#[test]
fn random_operations_near_exhaustion_reclaim_and_fail_only_when_memory_is_used() {
    for seed in [
        0x2545_f491_4f6c_dd1d_u64,
        0x1234_5678_9abc_def1,
        0x0f0f_7777_3333_5555,
    ] {
        let region = Region::new(256 << 10);
        let mut favourite = 0usize;
        let run = run_model(&region, 30_000, seed, usize::MAX, None, |random, step| {
            if step % 1500 == 0 {
                favourite = random.below(CLASS_COUNT as u64);
            }
            let size = match random.below(100) {
                0..=59 => class_size_bytes(favourite) - random.below(GRANULE_BYTES as u64),
                60..=74 => random.below(9),
                75..=89 => random.below(MAX_SMALL_CLASS_BYTES as u64 + 1),
                90..=95 => random.below(MAX_CLASS_BYTES as u64 + 1),
                _ => random.below(24_000),
            };
            let align = match random.below(100) {
                0..=89 => 8,
                90..=94 => 16,
                _ => 32 << random.below(8),
            };
            layout(size, align)
        });
        assert!(run.failures > 100, "{run:?}");
        assert!(run.served_by_reclaim > 50, "{run:?}");
        assert!(run.allocations > 10_000, "{run:?}");
    }
}

/// The model on a heap that starts small and grows when an allocation fails, by a page
/// or by the least the heap takes: the extensions join the top hole, blocks span the old
/// tops, and the exhaustion checks hold at every size.
#[test]
fn random_operations_on_a_growing_heap_match_a_model() {
    for (seed, step_bytes) in [
        (0x6a09_e667_f3bc_c908_u64, 4096),
        (0xbb67_ae85_84ca_a73b, EXTEND_MIN_BYTES),
        (0x3c6e_f372_fe94_f82b, 4096 + 3 * GRANULE_BYTES),
    ] {
        let region = Region::new(512 << 10);
        let growth = Growth {
            initial_bytes: 32 << 10,
            step_bytes,
        };
        let run = run_model(&region, 30_000, seed, 4000, Some(growth), |random, _| {
            let size = match random.below(100) {
                0..=69 => random.below(65),
                70..=84 => random.below(MAX_SMALL_CLASS_BYTES as u64 + 1),
                85..=94 => random.below(MAX_CLASS_BYTES as u64 + 1),
                _ => random.below(12_000),
            };
            let align = match random.below(100) {
                0..=89 => 8,
                90..=94 => 16,
                _ => 32 << random.below(5),
            };
            layout(size, align)
        });
        assert!(run.extensions > 10, "{run:?}");
        assert!(run.allocations > 10_000, "{run:?}");
    }
}

#[test]
fn extending_adds_free_memory_at_the_top_that_blocks_can_span() {
    let region = Region::new(64 << 10);
    let mut empty = SizeClassHeap::empty();
    // SAFETY: the heap has no memory; the call is refused before anything is touched.
    assert_eq!(unsafe { empty.extend(4096) }, Err(ExtendError::Empty));
    let mut heap = region.heap_over(16 << 10);
    assert_eq!(heap.top(), region.start.wrapping_add(16 << 10));
    // SAFETY: refused sizes: nothing is touched.
    unsafe {
        assert_eq!(heap.extend(8), Err(ExtendError::Size { bytes: 8 }));
        assert_eq!(heap.extend(4100), Err(ExtendError::Size { bytes: 4100 }));
        assert!(matches!(
            heap.extend(usize::MAX & !7),
            Err(ExtendError::AddressSpace { .. })
        ));
    }
    assert_eq!(heap.size(), 16 << 10);
    // Fill the heap: a small block (a class chunk at the bottom), a 4 KiB block (the
    // backing heap), and one block of the rest, up to the top.
    let mut live = Vec::new();
    let small = layout(24, 8);
    let block = heap.allocate(small).expect("a small block");
    live.push(Live::fill(block, small, 1));
    let page = layout(4096, 8);
    let block = heap.allocate(page).expect("a 4 KiB block");
    live.push(Live::fill(block, page, 2));
    let rest = layout(heap.free(), 8);
    let top_block = heap.allocate(rest).expect("the rest");
    assert_eq!(
        top_block.as_ptr() as usize + rest.size(),
        region.start as usize + (16 << 10)
    );
    assert!(heap.allocate(page).is_err());
    // Free the block at the top: the hole it leaves joins the new memory.
    // SAFETY: allocated above with this layout.
    unsafe { heap.deallocate(top_block, rest) };
    let (used, free) = (heap.used(), heap.free());
    // SAFETY: the region's next 16 KiB, which nothing else uses.
    unsafe { heap.extend(16 << 10) }.expect("extend");
    assert_eq!(heap.size(), 32 << 10);
    assert_eq!(heap.top(), region.start.wrapping_add(32 << 10));
    assert_eq!((heap.used(), heap.free()), (used, free + (16 << 10)));
    assert_consistent(&heap);
    // A block larger than the new memory alone: it starts below the old top.
    let spanning = layout((16 << 10) + 8192, 8);
    let block = heap.allocate(spanning).expect("a block across the old top");
    assert!((block.as_ptr() as usize) < region.start as usize + (16 << 10));
    assert!(region.contains(block, spanning.size()));
    live.push(Live::fill(block, spanning, 0xee));
    // Grow again by the least the heap takes, then use the rest of the region.
    // SAFETY: the region's next bytes, which nothing else uses.
    unsafe { heap.extend(EXTEND_MIN_BYTES) }.expect("extend");
    let rest = (64 << 10) - heap.size();
    // SAFETY: the rest of the region, which nothing else uses.
    unsafe { heap.extend(rest) }.expect("extend");
    assert_eq!(heap.size(), 64 << 10);
    while let Ok(block) = heap.allocate(small) {
        assert!(region.contains(block, small.size()));
        live.push(Live::fill(block, small, live.len() as u8));
    }
    check_live(&live);
    assert_consistent(&heap);
    for entry in live.drain(..) {
        // SAFETY: allocated above with this layout and not freed since.
        unsafe { heap.deallocate(entry.block, entry.layout) };
    }
    assert_eq!(heap.used(), 0);
    let whole = layout((64 << 10) - 16, 16);
    let block = heap.allocate(whole).expect("everything is free again");
    // SAFETY: allocated above with this layout.
    unsafe { heap.deallocate(block, whole) };
    assert_consistent(&heap);
}

/// The stranding a guest could cause within its quota: fill most of the heap with blocks
/// of one class, free them all, then do the same with another class, and so on through
/// every class (up, down, and in a scattered order). Every allocation succeeds: the memory
/// freed in one class serves the next (without reclaim, the second round found the heap
/// full of free blocks of the first class and failed).
#[test]
fn memory_freed_in_one_class_serves_the_others() {
    let region = Region::new(256 << 10);
    let mut heap = region.heap();
    let target = heap.size() / 4 * 3;
    let order: Vec<usize> = (0..CLASS_COUNT)
        .chain((0..CLASS_COUNT).rev())
        .chain((0..CLASS_COUNT).map(|index| index * 37 % CLASS_COUNT))
        .collect();
    let mut live = Vec::new();
    for (round, &class) in order.iter().enumerate() {
        let size = class_size_bytes(class);
        let wanted = layout(size, 8);
        while heap.used() + size <= target {
            let block = heap.allocate(wanted).unwrap_or_else(|()| {
                panic!(
                    "round {round}, {size}-byte blocks: allocation failed with {} bytes \
                     live, {} in class lists, {} free of {}",
                    heap.used(),
                    heap.class_free_bytes(),
                    heap.free(),
                    heap.size()
                )
            });
            live.push(Live::fill(block, wanted, round as u8));
        }
        check_live(&live);
        assert_consistent(&heap);
        for entry in live.drain(..) {
            assert!(entry.intact(), "block at {:p} was overwritten", entry.block);
            // SAFETY: allocated above with this layout and not freed since.
            unsafe { heap.deallocate(entry.block, entry.layout) };
        }
        assert_eq!(heap.used(), 0);
        assert_consistent(&heap);
    }
    assert!(heap.reclaimed_bytes() > order.len() * heap.size() / 2);
    // The blocks of each round filled whole chunks and all went back, so the whole heap
    // can go back: a block of all of it fits.
    let whole = layout(heap.size(), 8);
    let block = heap.allocate(whole).expect("the whole heap");
    assert_eq!(heap.carved_bytes(), 0);
    assert_eq!(heap.class_free_bytes(), 0);
    // SAFETY: allocated above with this layout.
    unsafe { heap.deallocate(block, whole) };
    assert_consistent(&heap);
}

#[test]
fn running_out_of_memory_fails_cleanly_and_keeps_the_heap_usable() {
    let region = Region::new(8192);
    let mut heap = region.heap();
    let small = layout(72, 8);
    let mut live = Vec::new();
    while let Ok(block) = heap.allocate(small) {
        live.push(Live::fill(block, small, live.len() as u8));
    }
    // Chunks of 7 blocks, then single blocks when no chunk fits: nothing is left over
    // that could hold one more block.
    assert!(heap.free() < 72, "{} bytes free", heap.free());
    assert_eq!(heap.class_free_bytes(), 0);
    let count = live.len();
    assert!(count >= 110, "only {count} blocks of 72 bytes in 8 KiB");
    let figures = (heap.used(), heap.free(), heap.carved_bytes());
    assert!(heap.allocate(small).is_err());
    assert!(heap.allocate(layout(4096, 8)).is_err());
    assert!(heap.allocate(layout(16, 4096)).is_err());
    assert_eq!((heap.used(), heap.free(), heap.carved_bytes()), figures);
    assert_eq!(heap.reclaimed_bytes(), 0);
    check_live(&live);
    // Free every other block: the free blocks are isolated 72-byte blocks, which a reclaim
    // gives back, but no hole can take 1024 bytes.
    let mut index = 0;
    live.retain(|entry| {
        index += 1;
        if index % 2 == 1 {
            return true;
        }
        // SAFETY: allocated above with this layout and not freed since.
        unsafe { heap.deallocate(entry.block, entry.layout) };
        false
    });
    let used = heap.used();
    assert!(heap.allocate(layout(1024, 8)).is_err());
    assert_eq!(heap.used(), used);
    assert_eq!(heap.class_free_bytes(), 0);
    assert!(heap.reclaimed_bytes() >= (count / 2) * 72);
    check_live(&live);
    assert_consistent(&heap);
    // The holes still serve blocks of other classes.
    let other = layout(40, 8);
    let block = heap.allocate(other).expect("a 40-byte block in a hole");
    live.push(Live::fill(block, other, 0xaa));
    check_live(&live);
    for entry in live.drain(..) {
        assert!(entry.intact());
        // SAFETY: allocated above with this layout and not freed since.
        unsafe { heap.deallocate(entry.block, entry.layout) };
    }
    assert_eq!(heap.used(), 0);
    // Everything free: the memory goes back from the classes to the backing heap, where a
    // large block (16-aligned: beyond the classes) fits.
    let large = layout(4096, 16);
    let block = heap.allocate(large).expect("the memory went back");
    assert_eq!(heap.carved_bytes(), 0);
    assert_eq!(heap.class_free_bytes(), 0);
    // SAFETY: allocated above with this layout.
    unsafe { heap.deallocate(block, large) };
    for index in 0..count {
        let block = heap.allocate(small).expect("a class block");
        live.push(Live::fill(block, small, index as u8));
    }
    check_live(&live);
    assert_consistent(&heap);
}

/// A run of free 8-byte blocks starting 8 bytes above the heap's bottom keeps its lowest
/// block: `linked_list_allocator` would move a hole starting there down to the bottom,
/// over the live block at the bottom.
#[test]
fn a_reclaim_keeps_the_block_8_bytes_above_the_bottom() {
    let region = Region::new(16 << 10);
    let mut heap = region.heap();
    let tiny = layout(8, 8);
    let first = heap.allocate(tiny).expect("a block at the bottom");
    assert_eq!(first.as_ptr(), region.start);
    let first = Live::fill(first, tiny, 0x5a);
    let mut others = Vec::new();
    while heap.class_free_bytes() > 0 {
        others.push(heap.allocate(tiny).expect("a block of the chunk"));
    }
    // The rest of the heap in one block, so that the backing heap is full.
    let filler = layout(heap.free(), 8);
    let filler_block = heap.allocate(filler).expect("the rest");
    let filler_block = Live::fill(filler_block, filler, 0xa5);
    for block in others {
        // SAFETY: allocated above with this layout.
        unsafe { heap.deallocate(block, tiny) };
    }
    // A 16-aligned request goes to the backing heap, which is full: a reclaim gives back
    // the chunk but its block at bottom + 8.
    let aligned = layout(256, 16);
    let block = heap.allocate(aligned).expect("memory from the chunk");
    assert_eq!(heap.class_free_bytes(), 8);
    assert_eq!(heap.reclaimed_bytes(), CHUNK_BYTES - 16);
    let block = Live::fill(block, aligned, 0x33);
    check_live(&[first, filler_block, block]);
    assert_consistent(&heap);
}

/// A run of free 8-byte blocks ending 8 bytes below the heap's top keeps its highest
/// block: `linked_list_allocator` would stretch the last hole ending there up to the top,
/// over the live block at the top.
#[test]
fn a_reclaim_keeps_the_block_8_bytes_below_the_top() {
    let region = Region::new(16 << 10);
    let mut heap = region.heap();
    let filler = layout(heap.size() - CHUNK_BYTES, 8);
    let filler_block = heap.allocate(filler).expect("all but a chunk");
    let tiny = layout(8, 8);
    let mut blocks = Vec::new();
    while let Ok(block) = heap.allocate(tiny) {
        blocks.push(block);
    }
    assert_eq!(blocks.len(), CHUNK_BYTES / 8);
    // The lowest address first: the last block is the top 8 bytes.
    let last = blocks.pop().expect("the top block");
    assert_eq!(
        last.as_ptr() as usize + 8,
        region.start as usize + heap.size()
    );
    let last = Live::fill(last, tiny, 0x5a);
    for block in blocks {
        // SAFETY: allocated above with this layout.
        unsafe { heap.deallocate(block, tiny) };
    }
    // SAFETY: allocated above with this layout.
    unsafe { heap.deallocate(filler_block, filler) };
    // A request larger than the free memory: a reclaim gives back the chunk but its block
    // at top - 16, and the request fails.
    let too_large = layout(heap.size() - 8, 8);
    assert!(heap.allocate(too_large).is_err());
    assert_eq!(heap.class_free_bytes(), 8);
    assert_eq!(heap.reclaimed_bytes(), CHUNK_BYTES - 16);
    // All the rest is one hole, which ends at top - 16: a block of all of it stops there.
    let rest = layout(heap.size() - 16, 8);
    assert_eq!(heap.free(), rest.size());
    let block = heap.allocate(rest).expect("the hole");
    let block = Live::fill(block, rest, 0x33);
    check_live(&[last, block]);
    assert_consistent(&heap);
}

#[test]
fn the_backing_heap_takes_back_no_less_than_a_hole_header() {
    assert_eq!(HoleList::min_size(), HOLE_BYTES);
}

#[test]
fn lists_sort_by_descending_address() {
    let mut blocks = [0u64; 200];
    let base = NonNull::from(&mut blocks).cast::<FreeBlock>();
    let mut random = Random(7);
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    for index in (1..order.len()).rev() {
        order.swap(index, random.below(index as u64 + 1));
    }
    for count in [0, 1, 2, 3, 64, 65, 200] {
        let mut list: Link = None;
        for &index in order.iter().filter(|&&index| index < count) {
            // SAFETY: inside `blocks`, 8-aligned, 8 bytes.
            let block = unsafe { base.add(index) };
            // SAFETY: a word of `blocks`, used only as a link here.
            unsafe { set_next(block, list) };
            list = Some(block);
        }
        // SAFETY: a list of words of `blocks`.
        let mut cursor = unsafe { sort_descending(list) };
        let mut seen = Vec::new();
        while let Some(block) = cursor {
            seen.push(block.as_ptr() as usize);
            // SAFETY: as above.
            cursor = unsafe { next_of(block) };
        }
        let expected: Vec<usize> = (0..count)
            .rev()
            // SAFETY: inside `blocks`.
            .map(|index| unsafe { base.add(index) }.as_ptr() as usize)
            .collect();
        assert_eq!(seen, expected);
    }
}

#[test]
fn a_nearly_full_heap_carves_single_blocks() {
    let region = Region::new(16 << 10);
    let mut heap = region.heap();
    // A block beyond the classes that leaves 48 bytes: room for no 200-byte block and no
    // chunk of 16-byte blocks, but for a single 16-byte block.
    let filler = layout(heap.size() - 48, 8);
    let _filler = heap.allocate(filler).expect("filler");
    assert!(heap.allocate(layout(200, 8)).is_err());
    assert_eq!(heap.carved_bytes(), 0);
    let one = heap.allocate(layout(16, 8)).expect("a single block");
    assert_eq!(heap.carved_bytes(), 16);
    assert_eq!(heap.class_free_bytes(), 0);
    assert!(region.contains(one, 16));
    assert_consistent(&heap);
}

#[test]
fn more_aligned_requests_go_to_the_backing_heap_and_back() {
    let region = Region::new(64 << 10);
    let mut heap = region.heap();
    let aligned = layout(48, 16);
    let free_before = heap.free();
    let block = heap.allocate(aligned).expect("block");
    assert_eq!(block.as_ptr() as usize % 16, 0);
    assert_eq!(heap.carved_bytes(), 0);
    assert_eq!(heap.used(), 48);
    assert_eq!(heap.free(), free_before - 48);
    // SAFETY: allocated above with this layout.
    unsafe { heap.deallocate(block, aligned) };
    assert_eq!(heap.free(), free_before);
    assert_eq!(heap.class_free_bytes(), 0);
    assert_consistent(&heap);
}

#[test]
fn the_locked_heap_is_a_global_allocator() {
    let region = Region::new(64 << 10);
    let locked = LockedSizeClassHeap::empty();
    // SAFETY: as in `Region::heap`.
    unsafe { locked.lock().init(region.start, region.layout.size()) };
    let wanted = layout(100, 8);
    // SAFETY: a non-zero size.
    let pointer = unsafe { locked.alloc(wanted) };
    assert!(!pointer.is_null());
    assert_eq!(locked.lock().used(), 104);
    // SAFETY: allocated above with this layout.
    unsafe { locked.dealloc(pointer, wanted) };
    assert_eq!(locked.lock().used(), 0);
    // SAFETY: a non-zero size.
    let too_large = unsafe { locked.alloc(layout(1 << 20, 8)) };
    assert!(too_large.is_null());
    assert_consistent(&locked.lock());
}
