//! The stub domain's heap: segregated size classes in front of `linked_list_allocator`, so that
//! small allocations and frees take constant time.
//!
//! Why: `linked_list_allocator` is first fit over an address-ordered free list, so every
//! allocation and every free walks that list. `stub-heap` (`bench/`, the real engine on this
//! heap serving 1000 domains x 100 nodes) found that with interleaved activity (`--order
//! phases`: every domain's first step, then every domain's second, ..., as on a long-running
//! host) the list grew to ~3,200 holes, mostly of 16 bytes; ~85% of the CPU went into the
//! allocator, and 56,000 guest writes took 11.6 s (~200 µs each) against 0.5 s in boot order.
//! With this front (same run, CPU time of the whole run): phase order 12.7 s → 0.6 s, 3,188 →
//! 18 backing holes; boot order 0.8 s → 0.6 s; the heap's extent 15.03 → 15.15 MiB in boot
//! order and 14.75 → 14.81 MiB in phase order, against a 16 MiB goal (since the engine's
//! smaller watch lists: 14.61 and 13.99 MiB).
//!
//! How: a request of at most [`MAX_CLASS_BYTES`] bytes with an alignment of at most
//! [`MAX_CLASS_ALIGN_BYTES`] is served by one of [`CLASS_COUNT`] size classes: small classes of 8,
//! 16, 24, ..., 512 bytes (8-byte steps keep the rounding below 8 bytes a block, and the smallest
//! block is 8 bytes where the backing heap's is 16), then medium classes 4 to a doubling up to
//! 8 KiB (640, 768, 896, 1024, 1280, ..., 8192: at most 25% rounding; few live blocks are that
//! large). Each class keeps an intrusive singly linked list through its free blocks: allocating
//! pops the head, freeing pushes it back, both O(1). An empty class carves a chunk of about
//! [`CHUNK_BYTES`] (at least one block) from the backing heap and pushes all its blocks. Larger or
//! more aligned requests go straight to the backing heap (first fit).
//!
//! The medium classes are there for the backing heap's sake: with classes up to 512 bytes only, the
//! engine's short-lived 0.5-8 KiB blocks (growing vectors, node bytes rebuilt as a directory grows)
//! still went to first fit between the class chunks, and the holes they left, too small for a
//! chunk, stayed: 2,194 holes in boot order (1.5 s, with chunks of 1 KiB). With the medium classes
//! the backing free list stays at 18-30 holes in either order. Measured and not kept: 8 medium
//! classes a doubling (less rounding, but more blocks left in classes: extent +0.1 MiB), 2 a
//! doubling (+0.2 MiB of rounding), classes only to 4 KiB (600 holes: the 4.6 KiB blocks made per
//! domain still went to first fit), chunks of 256 B to 2 KiB (extents within 0.07 MiB of each
//! other).
//!
//! **Freed blocks go back to their class's list, not to the backing heap, until the backing
//! heap runs out.** While the backing heap can serve requests, memory carved for a class stays
//! with that class: [`SizeClassHeap::carved_bytes`] counts what the classes hold and
//! [`SizeClassHeap::class_free_bytes`] how much of it is free in the class lists. The cost is
//! at most one partly used chunk per class (under 512 bytes each) plus whatever a class once
//! needed and no longer does: the engine rebuilds a node's bytes at every new child, so a
//! directory growing to 8 KiB leaves two blocks in each class it grows through (~270 KiB in
//! the class lists at 1000 domains, the largest share in the 3-8 KiB classes).
//! Returning medium blocks beyond two per class to the backing heap at every free was measured
//! and is worse: their holes fragment it again (2,500 holes, extent +0.4 MiB).
//!
//! Reclaim: when the backing heap cannot serve a request (a block beyond the classes, or a
//! chunk for an empty class), the free class blocks go back to it and the request is retried
//! once; so memory left in one class serves the others, and an allocation fails only when the
//! live blocks, the backing heap's fragmentation and the few blocks described below leave no
//! room. Without it a guest could, within its quota, write nodes of one size, delete them,
//! then of another size, and so on through the classes, leaving memory in each until every
//! allocation failed. A reclaim sorts every class list by address (a merge sort of the linked
//! lists in place: O(n log n) for n free blocks, without allocating), joins address-adjacent free
//! blocks of any classes into runs and frees each run to the backing heap, highest address
//! first (so that each free walks only the holes that were below it before the reclaim), where
//! it coalesces with adjacent holes. That is not O(1), but it runs only when the backing heap
//! has failed, and not at all when no block entered a class list since the last reclaim (it
//! would find nothing more to give back). [`SizeClassHeap::reclaimed_bytes`] counts what it
//! gave back.
//!
//! What a reclaim cannot give back stays in the 8-byte class. `linked_list_allocator` takes back no
//! region smaller than its hole header (`HoleList::min_size()`: 16 bytes), so a free 8-byte block
//! whose neighbours in memory are not free class blocks stays in its list. Each such block lies
//! just below a live block, a backing hole (at least 16 bytes) or the heap's top, so there is at
//! most one per live block or hole; the 8-byte class hands it out again before it carves new
//! memory, and as soon as a neighbour is freed into a class list the two form a run the next
//! reclaim gives back. Also kept: at most two 8-byte blocks at each end of the heap, of a run
//! starting 8 bytes above its bottom or ending 8 bytes below its top, because
//! `linked_list_allocator` would stretch a hole starting or ending there over the live 8-byte block
//! beyond it (see `SizeClassHeap::give_back`). So what stays is always some of the 8-byte class's
//! free blocks, which not reclaiming that class (the simple alternative) would keep all of, and no
//! more than one block per live block or hole. Its cost: a live 8-byte block whose neighbours go
//! back and that is freed afterwards stays between two holes, and splits the free memory there,
//! until its class hands it out again. The 8-byte class's chunks were also tried 16-aligned, so
//! that its blocks could go back in aligned pairs and never leave an 8-byte piece: the front
//! paddings made the backing free list ~370 holes longer in `stub-heap` (27 to 393 in boot order,
//! 19 to 315 in phase order).
//!
//! Alignment: class blocks are 8-aligned (the backing heap's alignment); requests aligned to 16
//! or more go to the backing heap. 16-aligned classes were measured: laying a chunk out from a
//! 16-aligned address leaves 8 bytes at one end, and in phase order ~8,600 such pieces (67 KiB)
//! found no use, while the engine makes ~20 16-aligned requests in a run (hashbrown tables).
//!
//! The figures always satisfy `used() + class_free_bytes() + free() == size()`, where `used()`
//! is the sum of [`block_size_bytes`] over the live blocks.
//!
//! Growth: [`SizeClassHeap::extend`] adds memory right after the heap's top (the stub domain
//! populates the guest frames above its heap and hands them over); `linked_list_allocator` makes
//! it a hole at the end, merged with a hole that ended at the old top. The classes hold no
//! bound of the heap but the top that a reclaim reads when it gives a run back, so nothing else
//! changes.
#![no_std]

#[cfg(test)]
extern crate std;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use linked_list_allocator::Heap;
use linked_list_allocator::hole::HoleList;

mod free_list;
use free_list::{FreeBlock, class_of_highest_head, next_of, sort_descending};

/// The class step, the smallest block, and the alignment of every block.
pub const GRANULE_BYTES: usize = 8;
/// The largest of the small classes, which are [`GRANULE_BYTES`] apart.
pub const MAX_SMALL_CLASS_BYTES: usize = 512;
/// The small classes: 8, 16, ..., [`MAX_SMALL_CLASS_BYTES`] bytes.
pub const SMALL_CLASS_COUNT: usize = MAX_SMALL_CLASS_BYTES / GRANULE_BYTES;
/// Medium classes per doubling of the size above [`MAX_SMALL_CLASS_BYTES`] (a power of two).
pub const MEDIUM_CLASSES_PER_OCTAVE: usize = 4;
/// Doublings of the size the medium classes cover.
pub const MEDIUM_OCTAVES: usize = 4;
/// The largest class; larger requests go to the backing heap.
pub const MAX_CLASS_BYTES: usize = MAX_SMALL_CLASS_BYTES << MEDIUM_OCTAVES;
/// All classes: 64 small and 16 medium.
pub const CLASS_COUNT: usize = SMALL_CLASS_COUNT + MEDIUM_OCTAVES * MEDIUM_CLASSES_PER_OCTAVE;
/// The largest alignment the classes give (the backing heap's); more aligned requests go to
/// the backing heap.
pub const MAX_CLASS_ALIGN_BYTES: usize = GRANULE_BYTES;
/// About how much an empty class takes from the backing heap at once (at least one block).
pub const CHUNK_BYTES: usize = 512;

/// The smallest region `linked_list_allocator` takes back: its hole header, two words
/// (`HoleList::min_size()`); class blocks below it (the 8-byte class) cannot go back alone.
const HOLE_BYTES: usize = 2 * size_of::<usize>();
const _: () = assert!(
    HOLE_BYTES == 2 * GRANULE_BYTES,
    "the classes assume a 64-bit target: 8-byte words, 16-byte holes"
);

/// Adjacent free class blocks a reclaim took out of their lists, highest first.
struct Run {
    /// The lowest block.
    start: NonNull<u8>,
    /// The run's size: its blocks' sizes added up.
    bytes: usize,
    /// The class of the lowest block (at `start`).
    lowest_class: usize,
    /// The class of the highest block (ending at `start + bytes`).
    highest_class: usize,
}

/// The class serving `layout`, if any.
const fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_CLASS_BYTES || layout.align() > MAX_CLASS_ALIGN_BYTES {
        return None;
    }
    let size = if layout.size() == 0 { 1 } else { layout.size() };
    if size <= MAX_SMALL_CLASS_BYTES {
        return Some(size.div_ceil(GRANULE_BYTES) - 1);
    }
    // Medium: octave k covers (512 << k, 1024 << k] in steps of (512 << k) / 4.
    let octave = ((size - 1) / MAX_SMALL_CLASS_BYTES).ilog2() as usize;
    let base = MAX_SMALL_CLASS_BYTES << octave;
    let medium_step = base / MEDIUM_CLASSES_PER_OCTAVE;
    let index = (size - base).div_ceil(medium_step);
    Some(SMALL_CLASS_COUNT + octave * MEDIUM_CLASSES_PER_OCTAVE + index - 1)
}

/// The block size of class `class`.
const fn class_size_bytes(class: usize) -> usize {
    if class < SMALL_CLASS_COUNT {
        return (class + 1) * GRANULE_BYTES;
    }
    let medium = class - SMALL_CLASS_COUNT;
    let octave = medium / MEDIUM_CLASSES_PER_OCTAVE;
    let base = MAX_SMALL_CLASS_BYTES << octave;
    base + (medium % MEDIUM_CLASSES_PER_OCTAVE + 1) * (base / MEDIUM_CLASSES_PER_OCTAVE)
}

/// The size of the backing heap's block for `layout` (what its `used()` counts).
fn backing_block_size_bytes(layout: Layout) -> usize {
    HoleList::align_layout(layout).map_or(layout.size(), |aligned| aligned.size())
}

/// The bytes a live block of `layout` takes, as [`SizeClassHeap::used`] counts them: its class's
/// size, or the backing heap's block size (at least 16 bytes, a multiple of 8).
pub fn block_size_bytes(layout: Layout) -> usize {
    match class_of(layout) {
        Some(class) => class_size_bytes(class),
        None => backing_block_size_bytes(layout),
    }
}

/// Whether `layout` is served by a size class (otherwise by the backing heap).
pub const fn is_class_layout(layout: Layout) -> bool {
    class_of(layout).is_some()
}

/// Told about every region the backing heap hands out or takes back: class chunks, the blocks
/// of requests the classes do not serve, and the runs of free class blocks a reclaim gives
/// back. The benchmark uses it to map the backing heap.
pub trait BackingObserver {
    /// The backing heap handed out `size_bytes` (as its `used()` counts them) at `start`.
    fn allocated(&mut self, start: NonNull<u8>, size_bytes: usize);
    /// The backing heap took back the `size_bytes` at `start`: a block it handed out, or a run
    /// of free class blocks (part of a chunk, or of several adjacent ones) that a reclaim gave
    /// back, so not necessarily a region [`BackingObserver::allocated`] was told about.
    fn freed(&mut self, start: NonNull<u8>, size_bytes: usize);
}

/// The observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl BackingObserver for NoObserver {
    fn allocated(&mut self, _start: NonNull<u8>, _size_bytes: usize) {}
    fn freed(&mut self, _start: NonNull<u8>, _size_bytes: usize) {}
}

/// The least [`SizeClassHeap::extend`] adds: `linked_list_allocator`'s hole header, so that
/// the added memory is at once a hole of its own (the backing heap keeps smaller extensions
/// aside until more comes).
pub const EXTEND_MIN_BYTES: usize = HOLE_BYTES;

/// Why [`SizeClassHeap::extend`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtendError {
    /// The heap has no memory yet ([`SizeClassHeap::init`] comes first).
    Empty,
    /// Not a multiple of [`GRANULE_BYTES`], or less than [`EXTEND_MIN_BYTES`].
    Size { bytes: usize },
    /// The heap would pass the end of the address space.
    AddressSpace { top: usize, bytes: usize },
}

impl core::fmt::Display for ExtendError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ExtendError::Empty => write!(formatter, "the heap has no memory to extend"),
            ExtendError::Size { bytes } => write!(
                formatter,
                "cannot extend by {bytes} bytes (a multiple of {GRANULE_BYTES}, at least \
                 {EXTEND_MIN_BYTES})"
            ),
            ExtendError::AddressSpace { top, bytes } => write!(
                formatter,
                "cannot extend the heap ending at {top:#x} by {bytes} bytes"
            ),
        }
    }
}

/// A heap's usage at one moment ([`SizeClassHeap::usage`]):
/// `used_bytes + class_free_bytes + free_bytes == size_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapUsage {
    pub size_bytes: usize,
    /// Bytes in live blocks.
    pub used_bytes: usize,
    /// Freed blocks kept in the size classes' free lists: free for their class only, until a
    /// reclaim gives them back to the backing heap when it runs short.
    pub class_free_bytes: usize,
    /// What the backing first-fit heap can still hand out.
    pub free_bytes: usize,
}

/// Size classes for small blocks over a `linked_list_allocator::Heap` for the rest.
pub struct SizeClassHeap {
    backing: Heap,
    /// The head of each class's free list.
    free_lists: [Option<NonNull<FreeBlock>>; CLASS_COUNT],
    /// Bytes in the class free lists.
    class_free_bytes: usize,
    /// Bytes the classes hold from the backing heap: carved, less what reclaims gave back.
    carved_bytes: usize,
    /// Bytes reclaims gave back to the backing heap so far.
    reclaimed_bytes: usize,
    /// Whether a block entered a class list since the last reclaim. Without one, a reclaim
    /// would find only the blocks it could not give back last time (whether a block can go
    /// back depends only on which blocks are in the lists), so it is skipped.
    pushed_since_reclaim: bool,
}

// SAFETY: the free lists only point into the region the heap owns exclusively (given to
// `init`), so moving the heap to another thread moves that ownership with it; no other
// thread-bound state is kept (`linked_list_allocator::Heap` is `Send` for the same reason).
unsafe impl Send for SizeClassHeap {}

impl Default for SizeClassHeap {
    fn default() -> Self {
        Self::empty()
    }
}

impl SizeClassHeap {
    /// A heap without memory: every allocation fails until [`SizeClassHeap::init`].
    pub const fn empty() -> Self {
        SizeClassHeap {
            backing: Heap::empty(),
            free_lists: [None; CLASS_COUNT],
            class_free_bytes: 0,
            carved_bytes: 0,
            reclaimed_bytes: 0,
            pushed_since_reclaim: false,
        }
    }

    /// Hands the region `start..start + size` to the heap.
    ///
    /// # Safety
    ///
    /// The region must be valid, writable memory that nothing else uses for as long as the
    /// heap hands out blocks from it, and this must be called at most once, on an empty heap
    /// (as `linked_list_allocator::Heap::init` requires).
    pub unsafe fn init(&mut self, start: *mut u8, size: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.backing.init(start, size) };
    }

    /// The address right after the heap's memory: where [`SizeClassHeap::extend`] adds more.
    /// Null before [`SizeClassHeap::init`].
    pub fn top(&self) -> *mut u8 {
        self.backing.top()
    }

    /// Adds the `bytes` right after the heap's memory (at [`SizeClassHeap::top`]) to it: they
    /// become free memory at the end of the backing heap, joined with a hole that ends at the
    /// old top, so that a block can span the old and the new memory.
    ///
    /// Checked here: the heap has memory (an empty heap cannot grow: its top is undefined),
    /// `bytes` is a multiple of [`GRANULE_BYTES`] and at least [`EXTEND_MIN_BYTES`] (so that the
    /// top stays 8-aligned and every byte becomes usable at once), and the new top fits the
    /// address space. An `Err` leaves the heap unchanged.
    ///
    /// The classes need no change: their blocks and lists stay where they are, and a reclaim
    /// judges a run against the current top (`give_back`), so a block kept below the old top
    /// goes back with its neighbours the next time.
    ///
    /// # Safety
    ///
    /// The region `top()..top() + bytes` must be valid, writable memory that nothing else uses
    /// for as long as the heap hands out blocks from it (the contract of
    /// [`SizeClassHeap::init`] for the first region).
    pub unsafe fn extend(&mut self, bytes: usize) -> Result<(), ExtendError> {
        let top = self.backing.top() as usize;
        if self.backing.bottom().is_null() {
            return Err(ExtendError::Empty);
        }
        if bytes < EXTEND_MIN_BYTES || !bytes.is_multiple_of(GRANULE_BYTES) {
            return Err(ExtendError::Size { bytes });
        }
        // The heap's size must stay an `isize` (a region of memory), as `Heap::size` assumes.
        let bottom = self.backing.bottom() as usize;
        match top.checked_add(bytes) {
            Some(end) if isize::try_from(end - bottom).is_ok() => {}
            _ => return Err(ExtendError::AddressSpace { top, bytes }),
        }
        // SAFETY: the `bytes` after `top()` are valid, unused memory (caller's contract);
        // `Heap::extend` takes exactly those (after the odd bytes an unaligned region left
        // pending, which `top()` counts), and the heap is initialised, so it does not panic.
        // It frees the new memory as one hole (merged with a hole ending at the old top) and
        // then moves the top; `used` does not change.
        unsafe { self.backing.extend(bytes) };
        Ok(())
    }

    /// Allocates a block for `layout`: from its class's free list when a class serves it,
    /// otherwise first fit in the backing heap. When the backing heap cannot serve the request
    /// (the block, or a chunk for the class), the free class blocks go back to it (a reclaim,
    /// see the module docs) and the request is tried once more. `Err` leaves the live blocks
    /// as they were; a reclaim may have moved free class blocks to the backing heap.
    #[expect(
        clippy::result_unit_err,
        reason = "the error carries nothing, as linked_list_allocator's"
    )]
    pub fn allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, ()> {
        self.allocate_observed(layout, &mut NoObserver)
    }

    /// [`SizeClassHeap::allocate`], telling `observer` what the backing heap hands out.
    #[expect(
        clippy::result_unit_err,
        reason = "the error carries nothing, as linked_list_allocator's"
    )]
    pub fn allocate_observed(
        &mut self,
        layout: Layout,
        observer: &mut impl BackingObserver,
    ) -> Result<NonNull<u8>, ()> {
        let Some(class) = class_of(layout) else {
            let block = match self.backing.allocate_first_fit(layout) {
                Ok(block) => block,
                Err(()) if self.reclaim(observer) => self.backing.allocate_first_fit(layout)?,
                Err(()) => return Err(()),
            };
            observer.allocated(block, backing_block_size_bytes(layout));
            return Ok(block);
        };
        if let Some(block) = self.pop(class) {
            return Ok(block);
        }
        if self.carve(class, observer).is_err() {
            // The class's list is empty, and a reclaim only puts back blocks it took from the
            // lists: the blocks must come from a new chunk.
            if !self.reclaim(observer) {
                return Err(());
            }
            self.carve(class, observer)?;
        }
        self.pop(class).ok_or(())
    }

    /// Frees a block: back to its class's free list (the backing heap gets it only from a
    /// reclaim) when a class serves `layout`, otherwise to the backing heap.
    ///
    /// # Safety
    ///
    /// `block` must have been returned by [`SizeClassHeap::allocate`] (or
    /// [`SizeClassHeap::allocate_observed`]) of this heap with this `layout`, and not freed
    /// since.
    pub unsafe fn deallocate(&mut self, block: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.deallocate_observed(block, layout, &mut NoObserver) };
    }

    /// [`SizeClassHeap::deallocate`], telling `observer` what the backing heap takes back.
    ///
    /// # Safety
    ///
    /// As for [`SizeClassHeap::deallocate`].
    pub unsafe fn deallocate_observed(
        &mut self,
        block: NonNull<u8>,
        layout: Layout,
        observer: &mut impl BackingObserver,
    ) {
        match class_of(layout) {
            // SAFETY: the caller guarantees a live block allocated with `layout`, so a block
            // of this class's size (class_of is a function of the layout alone), 8-aligned,
            // which nothing uses any more.
            Some(class) => unsafe { self.push(class, block) },
            None => {
                // SAFETY: a layout no class serves was allocated by the backing heap with this
                // very layout (caller's contract).
                unsafe { self.backing.deallocate(block, layout) };
                observer.freed(block, backing_block_size_bytes(layout));
            }
        }
    }

    /// The size of the heap (the backing heap's).
    pub fn size(&self) -> usize {
        self.backing.size()
    }

    /// Bytes in live blocks: the sum of [`block_size_bytes`] over the blocks handed out and not
    /// freed.
    pub fn used(&self) -> usize {
        self.backing.used() - self.class_free_bytes
    }

    /// Bytes the backing heap can still hand out (class free lists excluded).
    pub fn free(&self) -> usize {
        self.backing.free()
    }

    /// Bytes in the class free lists: free for their class only.
    pub fn class_free_bytes(&self) -> usize {
        self.class_free_bytes
    }

    /// [`SizeClassHeap::size`], [`SizeClassHeap::used`], [`SizeClassHeap::class_free_bytes`]
    /// and [`SizeClassHeap::free`] together.
    pub fn usage(&self) -> HeapUsage {
        HeapUsage {
            size_bytes: self.size(),
            used_bytes: self.used(),
            class_free_bytes: self.class_free_bytes(),
            free_bytes: self.free(),
        }
    }

    /// Bytes the classes hold from the backing heap: live class blocks plus the class free
    /// lists (carved so far, less what reclaims gave back).
    pub fn carved_bytes(&self) -> usize {
        self.carved_bytes
    }

    /// Bytes reclaims gave back to the backing heap so far (0 while the backing heap never
    /// failed).
    pub fn reclaimed_bytes(&self) -> usize {
        self.reclaimed_bytes
    }

    /// Bytes the backing heap has handed out: live blocks plus the class free lists.
    pub fn backing_used(&self) -> usize {
        self.backing.used()
    }

    /// Each class's block size and the number of blocks in its free list (walks the lists:
    /// for reports, not for every allocation).
    pub fn class_free_lists(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.free_lists.iter().enumerate().map(|(class, head)| {
            let mut count = 0;
            let mut cursor = *head;
            while let Some(block) = cursor {
                count += 1;
                // SAFETY: as in `pop`: a free block of the list, whose first word is a
                // `FreeBlock` written by `push`.
                cursor = unsafe { block.read().next };
            }
            (class_size_bytes(class), count)
        })
    }

    /// Takes the head of `class`'s free list.
    fn pop(&mut self, class: usize) -> Option<NonNull<u8>> {
        let head = (*self.free_lists.get(class)?)?;
        // SAFETY: every pointer in a class list is a free block of the heap's region, 8-aligned
        // and at least 8 bytes, whose first word `push` wrote as a `FreeBlock`; nothing else
        // writes a free block.
        let next = unsafe { head.read().next };
        if let Some(slot) = self.free_lists.get_mut(class) {
            *slot = next;
        }
        self.class_free_bytes -= class_size_bytes(class);
        Some(head.cast())
    }

    /// Puts `block` at the head of `class`'s free list.
    ///
    /// # Safety
    ///
    /// `block` must be an 8-aligned block of at least `class_size_bytes(class)` bytes inside
    /// the heap's region that nothing uses and that is in no free list.
    unsafe fn push(&mut self, class: usize, block: NonNull<u8>) {
        let Some(slot) = self.free_lists.get_mut(class) else {
            return;
        };
        let link = block.cast::<FreeBlock>();
        // SAFETY: the block is unused, 8-aligned (the alignment of `FreeBlock`) and at least 8
        // bytes (its size), per the contract.
        unsafe { link.write(FreeBlock { next: *slot }) };
        *slot = Some(link);
        self.class_free_bytes += class_size_bytes(class);
        self.pushed_since_reclaim = true;
    }

    /// Gives the free class blocks back to the backing heap, all but those it cannot take (see
    /// the module docs); returns whether it gave back any. Runs only when the backing heap has
    /// failed: O(n log n) for n free class blocks, plus, for each run of adjacent free blocks of
    /// one class, a look at the [`CLASS_COUNT`] list heads and, for each run of adjacent free
    /// blocks, one backing free, which walks the backing heap's holes below the run.
    fn reclaim(&mut self, observer: &mut impl BackingObserver) -> bool {
        if !self.pushed_since_reclaim {
            return false;
        }
        // The lists move out, so that what `give_back` keeps goes back to the (empty) lists
        // without being taken again; `class_free_bytes` still counts them until taken.
        let mut lists = core::mem::replace(&mut self.free_lists, [None; CLASS_COUNT]);
        for head in &mut lists {
            // SAFETY: a class list: free blocks whose first words are `FreeBlock` links, as
            // `pop` says; sorting only relinks them.
            *head = unsafe { sort_descending(*head) };
        }
        let reclaimed_before = self.reclaimed_bytes;
        // Every block leaves its list, highest address first, and joins the run below which
        // it lies; a run ends at a gap and goes to `give_back`.
        let mut run: Option<Run> = None;
        let mut next_class = class_of_highest_head(&lists);
        while let Some(class) = next_class {
            let Some(head) = lists.get_mut(class) else {
                break;
            };
            let Some(block) = *head else {
                break;
            };
            // SAFETY: the head of a list moved out of `free_lists`: a free class block.
            let next = unsafe { next_of(block) };
            *head = next;
            let size = class_size_bytes(class);
            self.class_free_bytes -= size;
            let block = block.cast::<u8>();
            match &mut run {
                Some(current)
                    if block.as_ptr() as usize + size == current.start.as_ptr() as usize =>
                {
                    current.start = block;
                    current.bytes += size;
                    current.lowest_class = class;
                }
                _ => {
                    if let Some(done) = run.take() {
                        self.give_back(done, observer);
                    }
                    run = Some(Run {
                        start: block,
                        bytes: size,
                        lowest_class: class,
                        highest_class: class,
                    });
                }
            }
            // The class's next block, when it ends where this one starts, is the highest left:
            // a block of another class above it would overlap this one. Otherwise look at all
            // the heads.
            next_class = if next
                .is_some_and(|below| below.as_ptr() as usize + size == block.as_ptr() as usize)
            {
                Some(class)
            } else {
                class_of_highest_head(&lists)
            };
        }
        if let Some(done) = run {
            self.give_back(done, observer);
        }
        self.pushed_since_reclaim = false;
        self.reclaimed_bytes > reclaimed_before
    }

    /// Gives a run of free class blocks, taken out of their lists, back to the backing heap,
    /// or keeps in the lists what it cannot take.
    ///
    /// `linked_list_allocator` 0.10.6 (`hole.rs`) takes back any region that no hole covers,
    /// 8-aligned, at least [`HOLE_BYTES`] and a multiple of 8 bytes: it keeps no metadata for
    /// the blocks it hands out (a block is memory outside the holes, `used` a counter), and
    /// `HoleList::deallocate` writes a `Hole` (two words) at the region's start, inserts it in
    /// the address-ordered list (asserting that it overlaps no hole) and merges it with the
    /// holes it touches exactly. It reaches beyond the region in two places only:
    /// `check_merge_bottom` moves a hole starting less than a `Hole` (16 bytes) above the
    /// heap's bottom down to the bottom, and `check_merge_top` stretches the last hole, when
    /// it ends less than 16 bytes below the top, up to the top. Everything in the heap lies at
    /// multiples of 8 from the bottom, so these are a start at bottom + 8 and an end at
    /// top - 8; a run starting or ending there keeps its block at that end. Nothing but an
    /// 8-byte class block can lie there: the backing heap's blocks are at least 16 bytes and
    /// start at a hole's start or at least 16 bytes above it and end at a hole's end or at
    /// least 16 bytes below it, so no chunk starts at bottom + 8 or ends at top - 8 and only
    /// 8-byte blocks of a chunk at the bottom (or the top) lie there; and since no reclaim
    /// frees a region starting or ending there, no hole does either.
    fn give_back(&mut self, run: Run, observer: &mut impl BackingObserver) {
        let Run {
            mut start,
            mut bytes,
            lowest_class,
            highest_class,
        } = run;
        let bottom = self.backing.bottom() as usize;
        let top = bottom + self.backing.size();
        if start.as_ptr() as usize == bottom + GRANULE_BYTES {
            let size = class_size_bytes(lowest_class);
            // SAFETY: the run's lowest block, of `lowest_class`, taken out of its list and
            // still free.
            unsafe { self.push(lowest_class, start) };
            // SAFETY: `size <= bytes`: the rest of the run, or its end.
            start = unsafe { start.add(size) };
            bytes -= size;
        }
        if bytes > 0 && start.as_ptr() as usize + bytes == top - GRANULE_BYTES {
            let size = class_size_bytes(highest_class);
            // `bytes` is whole blocks ending with the highest block, which the step above kept
            // (and took out of `bytes`) only if it was the only one.
            bytes -= size;
            // SAFETY: the run's highest block, of `highest_class`, taken out of its list and
            // still free; it starts `bytes` above `start`, inside the run.
            unsafe { self.push(highest_class, start.add(bytes)) };
        }
        if bytes == 0 {
            return;
        }
        if bytes < HOLE_BYTES {
            // Whole blocks of at least 8 bytes each, fewer than 16 bytes in all: one 8-byte
            // block, of the 8-byte class (the only one of that size).
            // SAFETY: a block of the run, taken out of its list and still free.
            unsafe { self.push(0, start) };
            return;
        }
        // SAFETY: 8 is a power of two, and `bytes`, a multiple of 8, is at most the heap's
        // size, which as the size of one region of memory is at most `isize::MAX`.
        let layout = unsafe { Layout::from_size_align_unchecked(bytes, GRANULE_BYTES) };
        // SAFETY: the region is `bytes` of free class blocks taken out of their lists: memory
        // the backing heap handed out in chunks, that no hole covers and that nothing uses. As
        // the method's docs say, `linked_list_allocator` 0.10.6 takes it back as it would a
        // block of its own: it is 8-aligned (as all class blocks), `bytes` is a multiple of 8
        // and at least `HoleList::min_size()` (HOLE_BYTES), so `HoleList::align_layout` keeps
        // it at `bytes` and `used` goes down by exactly the bytes the blocks took; and it
        // neither starts at bottom + 8 nor ends at top - 8 (kept above), where
        // `check_merge_bottom` or `check_merge_top` would stretch its hole over memory beyond
        // it; the holes it may merge with do not either.
        unsafe { self.backing.deallocate(start, layout) };
        observer.freed(start, bytes);
        self.carved_bytes -= bytes;
        self.reclaimed_bytes += bytes;
    }

    /// Carves a chunk from the backing heap into blocks of `class`. Tries a chunk of
    /// [`CHUNK_BYTES`], then the smallest chunk that holds one block, so that a nearly full
    /// heap still serves small requests.
    fn carve(&mut self, class: usize, observer: &mut impl BackingObserver) -> Result<(), ()> {
        let size = class_size_bytes(class);
        let wanted = (CHUNK_BYTES / size).max(1);
        // The backing heap's blocks are at least 16 bytes.
        let fallback = 16usize.div_ceil(size);
        for blocks in [wanted, fallback] {
            let Ok(layout) = Layout::from_size_align(blocks * size, GRANULE_BYTES) else {
                continue;
            };
            let Ok(chunk) = self.backing.allocate_first_fit(layout) else {
                continue;
            };
            // The size is a multiple of 8 and at least 16: the backing heap's block is exactly
            // `layout.size()` bytes, all of them blocks of the class.
            observer.allocated(chunk, backing_block_size_bytes(layout));
            self.carved_bytes += blocks * size;
            // Highest first, so that the list hands out the lowest address first.
            for index in (0..blocks).rev() {
                // SAFETY: `index * size + size <= blocks * size`: inside the chunk.
                let block = unsafe { chunk.add(index * size) };
                // SAFETY: the chunk is fresh from the backing heap and its blocks are disjoint;
                // the block is 8-aligned (the chunk is, and size is a multiple of 8).
                unsafe { self.push(class, block) };
            }
            return Ok(());
        }
        Err(())
    }
}

/// A [`SizeClassHeap`] behind a spin lock, usable as the global allocator.
pub struct LockedSizeClassHeap(spin::Mutex<SizeClassHeap>);

impl Default for LockedSizeClassHeap {
    fn default() -> Self {
        Self::empty()
    }
}

impl LockedSizeClassHeap {
    /// A heap without memory (see [`SizeClassHeap::empty`]).
    pub const fn empty() -> Self {
        LockedSizeClassHeap(spin::Mutex::new(SizeClassHeap::empty()))
    }

    /// Locks the heap.
    pub fn lock(&self) -> spin::MutexGuard<'_, SizeClassHeap> {
        self.0.lock()
    }
}

// SAFETY: every block comes from `SizeClassHeap::allocate` under the lock, which hands out
// disjoint blocks of at least `layout.size()` bytes aligned to `layout.align()` and takes them
// back through `deallocate` with the same layout; failure returns null. `realloc` is the
// trait's default (allocate, copy, free).
unsafe impl GlobalAlloc for LockedSizeClassHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.lock()
            .allocate(layout)
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if let Some(block) = NonNull::new(pointer) {
            // SAFETY: the GlobalAlloc contract: `pointer` came from `alloc` with `layout`.
            unsafe { self.lock().deallocate(block, layout) };
        }
    }
}

#[cfg(test)]
mod tests;
