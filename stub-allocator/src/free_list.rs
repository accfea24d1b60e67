//! The class free lists: singly linked through the free blocks' first word, kept sorted by descending address where a reclaim needs it.

use core::ptr::NonNull;

use crate::CLASS_COUNT;

/// A free block of a class: its first word links to the next free block of the same class.
pub(crate) struct FreeBlock {
    pub(crate) next: Option<NonNull<FreeBlock>>,
}

/// A class free list (its first block), or the rest of one.
pub(crate) type Link = Option<NonNull<FreeBlock>>;

/// The block after `block` in its list.
///
/// # Safety
///
/// `block` must be a free block of a class list, or taken out of one by a reclaim, whose first
/// word is still its `FreeBlock` link.
pub(crate) unsafe fn next_of(block: NonNull<FreeBlock>) -> Link {
    // SAFETY: per the contract, a free 8-aligned block of at least 8 bytes holding a
    // `FreeBlock`, which nothing but the class lists uses.
    unsafe { block.read().next }
}

/// Makes `next` follow `block`.
///
/// # Safety
///
/// `block` must be a free block of a class list, or taken out of one by a reclaim.
pub(crate) unsafe fn set_next(block: NonNull<FreeBlock>, next: Link) {
    // SAFETY: per the contract, a free 8-aligned block of at least 8 bytes (the size and
    // alignment of `FreeBlock`) that nothing but the class lists uses.
    unsafe { block.write(FreeBlock { next }) };
}

/// The class whose list starts at the highest address: with lists sorted by descending
/// address, the class of the highest block.
pub(crate) fn class_of_highest_head(lists: &[Link; CLASS_COUNT]) -> Option<usize> {
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
pub(crate) unsafe fn sort_descending(list: Link) -> Link {
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
