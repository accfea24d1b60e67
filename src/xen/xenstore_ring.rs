//! A grant-mapped xenstore ring page as the engine's `RingMemory`: the one place that reads
//! and writes another domain's ring (`struct xenstore_domain_interface`, `xs_wire.h`).
//!
//! The other domain may change any byte at any time, so every access is an atomic load or
//! store of the shared memory; the engine's ring logic reads each index once and validates
//! it (`docs/misc/xenstore-ring.txt`).

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};

#[cfg(feature = "test-modes")]
use xenstore_engine::ring::RingMemory;
use xenstore_engine::ring::{AtomicPage, PAGE_SIZE_BYTES};

use super::grant_table::ForeignPage;

/// A foreign page mapped for xenstore. Owning the [`ForeignPage`] keeps the mapping alive
/// for as long as this value exists.
pub struct MappedRingPage {
    page: ForeignPage,
}

/// This domain's own xenstore page (`HVM_PARAM_STORE_PFN`), for the `--hostile-ring` test mode
/// in which the kernel plays a guest (test image only).
#[cfg(feature = "test-modes")]
pub struct OwnRingPage {
    base: core::ptr::NonNull<u8>,
}

#[cfg(feature = "test-modes")]
impl OwnRingPage {
    /// The page at guest frame `frame`, if it lies inside the identity map.
    pub fn at_frame(frame: u64) -> Option<OwnRingPage> {
        let address = frame.checked_mul(xen_hypercall::PAGE_SIZE_BYTES)?;
        if frame == 0
            || address.checked_add(xen_hypercall::PAGE_SIZE_BYTES)?
                > crate::arch::x86_64::IDENTITY_MAPPED_LIMIT_BYTES
        {
            return None;
        }
        core::ptr::NonNull::new(address as *mut u8).map(|base| OwnRingPage { base })
    }

    /// Reads an index word (test mode helpers, outside the ring protocol's rules).
    pub fn load_u32_acquire_at(&self, offset: usize) -> u32 {
        self.load_u32_acquire(offset)
    }

    /// Writes an index word, whatever the protocol says.
    pub fn store_at(&self, offset: usize, value: u32) {
        self.store_u32_release(offset, value);
    }
}

#[cfg(feature = "test-modes")]
impl AtomicPage for OwnRingPage {
    fn word(&self, offset: usize) -> Option<&AtomicU32> {
        // SAFETY: our own xenstore page, populated by the toolstack and never removed while
        // the domain runs, inside the identity map (checked by `at_frame`).
        unsafe { word_at(self.base, offset) }
    }

    fn byte(&self, offset: usize) -> Option<&AtomicU8> {
        // SAFETY: as in `word`.
        unsafe { byte_at(self.base, offset) }
    }
}

/// The aligned word at `offset` of the page at `base` (`None` when out of bounds).
///
/// # Safety
/// `base` must be the start of a 4096-byte page that stays mapped read-write for `'page`.
unsafe fn word_at<'page>(base: core::ptr::NonNull<u8>, offset: usize) -> Option<&'page AtomicU32> {
    if !offset.is_multiple_of(4) || offset.checked_add(4)? > PAGE_SIZE_BYTES {
        return None;
    }
    let pointer = base.as_ptr().wrapping_add(offset).cast::<AtomicU32>();
    // SAFETY: the page is mapped for 'page (the caller's contract); `offset` is aligned and in
    // bounds (checked above); `AtomicU32` has the layout of `u32`, and the other side's
    // concurrent writes are atomic with respect to ours.
    Some(unsafe { &*pointer })
}

/// The aligned 8-byte word at `offset` of the page at `base` (`None` when out of bounds or
/// unaligned).
///
/// # Safety
/// As for [`word_at`].
unsafe fn word64_at<'page>(
    base: core::ptr::NonNull<u8>,
    offset: usize,
) -> Option<&'page AtomicU64> {
    if !offset.is_multiple_of(8) || offset.checked_add(8)? > PAGE_SIZE_BYTES {
        return None;
    }
    let pointer = base.as_ptr().wrapping_add(offset).cast::<AtomicU64>();
    // SAFETY: as in `word_at`, with 8-byte alignment (the page is page-aligned).
    Some(unsafe { &*pointer })
}

/// The byte at `offset` of the page at `base` (`None` when out of bounds).
///
/// # Safety
/// As for [`word_at`].
unsafe fn byte_at<'page>(base: core::ptr::NonNull<u8>, offset: usize) -> Option<&'page AtomicU8> {
    if offset >= PAGE_SIZE_BYTES {
        return None;
    }
    let pointer = base.as_ptr().wrapping_add(offset).cast::<AtomicU8>();
    // SAFETY: in bounds of the page, mapped for 'page (the caller's contract); bytes need no
    // alignment.
    Some(unsafe { &*pointer })
}

impl MappedRingPage {
    /// Uses a freshly mapped foreign page as a ring.
    pub fn new(page: ForeignPage) -> MappedRingPage {
        MappedRingPage { page }
    }

    /// Gives the mapping back (to unmap it).
    pub fn into_page(self) -> ForeignPage {
        self.page
    }
}

impl AtomicPage for MappedRingPage {
    fn word(&self, offset: usize) -> Option<&AtomicU32> {
        // SAFETY: `self.page` owns the grant mapping, so the page stays mapped read-write for
        // as long as `self` is borrowed.
        unsafe { word_at(self.page.address(), offset) }
    }

    fn byte(&self, offset: usize) -> Option<&AtomicU8> {
        // SAFETY: as in `word`.
        unsafe { byte_at(self.page.address(), offset) }
    }

    fn word64(&self, offset: usize) -> Option<&AtomicU64> {
        // SAFETY: as in `word`.
        unsafe { word64_at(self.page.address(), offset) }
    }
}
