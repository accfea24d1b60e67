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

/// A free block of a class: its first word links to the next free block of the same class.
struct FreeBlock {
    next: Option<NonNull<FreeBlock>>,
}

/// A class free list (its first block), or the rest of one.
type Link = Option<NonNull<FreeBlock>>;

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

/// The block after `block` in its list.
///
/// # Safety
///
/// `block` must be a free block of a class list, or taken out of one by a reclaim, whose first
/// word is still its `FreeBlock` link.
unsafe fn next_of(block: NonNull<FreeBlock>) -> Link {
    // SAFETY: per the contract, a free 8-aligned block of at least 8 bytes holding a
    // `FreeBlock`, which nothing but the class lists uses.
    unsafe { block.read().next }
}

/// Makes `next` follow `block`.
///
/// # Safety
///
/// `block` must be a free block of a class list, or taken out of one by a reclaim.
unsafe fn set_next(block: NonNull<FreeBlock>, next: Link) {
    // SAFETY: per the contract, a free 8-aligned block of at least 8 bytes (the size and
    // alignment of `FreeBlock`) that nothing but the class lists uses.
    unsafe { block.write(FreeBlock { next }) };
}

/// The class whose list starts at the highest address: with lists sorted by descending
/// address, the class of the highest block.
fn class_of_highest_head(lists: &[Link; CLASS_COUNT]) -> Option<usize> {
    let mut highest: Option<(NonNull<FreeBlock>, usize)> = None;
    for (class, head) in lists.iter().enumerate() {
        if let Some(block) = *head
            && highest.is_none_or(|(previous, _)| block > previous)
        {
            highest = Some((block, class));
        }
    }
    highest.map(|(_, class)| class)
}

/// Merges two lists sorted by descending address into one.
///
/// # Safety
///
/// Both lists must be disjoint lists of free class blocks (see [`next_of`]).
unsafe fn merge_descending(mut first: Link, mut second: Link) -> Link {
    let mut head: Link = None;
    let mut tail: Link = None;
    while let (Some(one), Some(other)) = (first, second) {
        let taken = if one > other {
            // SAFETY: a block of the first list.
            first = unsafe { next_of(one) };
            one
        } else {
            // SAFETY: a block of the second list.
            second = unsafe { next_of(other) };
            other
        };
        match tail {
            // SAFETY: the last block taken, of one of the lists.
            Some(last) => unsafe { set_next(last, Some(taken)) },
            None => head = Some(taken),
        }
        tail = Some(taken);
    }
    let rest = first.or(second);
    match tail {
        // SAFETY: as above.
        Some(last) => unsafe { set_next(last, rest) },
        None => head = rest,
    }
    head
}

/// Sorts a list by descending address: a bottom-up merge sort in place, O(n log n), with
/// `bins[k]` holding a sorted list of 2^k blocks or none (no recursion, no memory).
///
/// # Safety
///
/// `list` must be a list of free class blocks (see [`next_of`]).
unsafe fn sort_descending(list: Link) -> Link {
    const BINS: usize = usize::BITS as usize;
    let mut bins: [Link; BINS] = [None; BINS];
    let mut rest = list;
    while let Some(block) = rest {
        // SAFETY: a block of the list; the bins hold the blocks before it, `rest` those after.
        unsafe {
            rest = next_of(block);
            set_next(block, None);
        }
        let mut carry: Link = Some(block);
        for bin in &mut bins {
            match bin.take() {
                None => {
                    *bin = carry.take();
                    break;
                }
                // SAFETY: disjoint sorted lists of blocks of the list.
                sorted => carry = unsafe { merge_descending(sorted, carry) },
            }
        }
        // Every bin full would take 2^64 - 1 blocks; kept all the same.
        if let (Some(_), Some(last)) = (carry, bins.last_mut()) {
            // SAFETY: as above.
            *last = unsafe { merge_descending(last.take(), carry) };
        }
    }
    let mut sorted: Link = None;
    for bin in bins {
        // SAFETY: as above.
        sorted = unsafe { merge_descending(bin, sorted) };
    }
    sorted
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
mod tests {
    use super::*;
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

        fn intact(&self) -> bool {
            // SAFETY: the block is live with at least `layout.size()` initialised bytes.
            let bytes =
                unsafe { core::slice::from_raw_parts(self.block.as_ptr(), self.layout.size()) };
            bytes.iter().all(|&byte| byte == self.pattern)
        }
    }

    /// Every live block intact, and no two overlapping (block sizes as the heap counts them).
    fn check_live(live: &[Live]) {
        let mut spans: Vec<(usize, usize)> = live
            .iter()
            .map(|entry| {
                assert!(entry.intact(), "block at {:p} was overwritten", entry.block);
                let start = entry.block.as_ptr() as usize;
                (start, start + block_size_bytes(entry.layout))
            })
            .collect();
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
        let mut spans: Vec<(usize, usize)> = free
            .iter()
            .map(|&(address, size)| {
                let block = NonNull::new(address as *mut u8).expect("a block");
                assert!(
                    map.is_occupied(block, size),
                    "free block {address:#x} in a hole"
                );
                (address, address + size)
            })
            .chain(live.iter().map(|entry| {
                let start = entry.block.as_ptr() as usize;
                (start, start + block_size_bytes(entry.layout))
            }))
            .collect();
        spans.sort_unstable();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "blocks {pair:x?} overlap");
        }
    }

    /// After a failed allocation of `wanted`, the memory is really exhausted: no hole of the
    /// backing heap can hold what the request needs, and the class lists hold only what no
    /// reclaim can give back: 8-byte blocks without a free class block next to them (but at
    /// most two at each end of the heap), at most one per live block or hole.
    fn assert_really_exhausted(
        heap: &SizeClassHeap,
        map: &BackingMap,
        wanted: Layout,
        live: &[Live],
    ) {
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
            let at_an_end =
                pair[1] <= bottom + 2 * GRANULE_BYTES || pair[0] >= top - 3 * GRANULE_BYTES;
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
                                let (used, direct) = free_one(
                                    &mut heap,
                                    &mut map,
                                    &mut live,
                                    &mut spans,
                                    &mut random,
                                );
                                model_used -= used;
                                model_direct -= direct;
                            }
                        }
                    }
                }
            } else {
                let (used, direct) =
                    free_one(&mut heap, &mut map, &mut live, &mut spans, &mut random);
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
}
