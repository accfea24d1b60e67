//! A grant-mapped xenstore ring page as the engine's `RingMemory`: the one place that reads
//! and writes another domain's ring (`struct xenstore_domain_interface`, `xs_wire.h`).
//!
//! The other domain may change any byte at any time, so every access is an atomic load or
//! store of the shared memory; the engine's ring logic reads each index once and validates
//! it (`docs/misc/xenstore-ring.txt`).

use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use xenstore_engine::ring::{PAGE_SIZE_BYTES, RingMemory};

use super::grant_table::ForeignPage;

/// A foreign page mapped for xenstore. Owning the [`ForeignPage`] keeps the mapping alive
/// for as long as this value exists.
pub struct MappedRingPage {
    page: ForeignPage,
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

    fn word(&self, offset: usize) -> Option<&AtomicU32> {
        if !offset.is_multiple_of(4) || offset.checked_add(4)? > PAGE_SIZE_BYTES {
            return None;
        }
        let pointer = self
            .page
            .address()
            .as_ptr()
            .wrapping_add(offset)
            .cast::<AtomicU32>();
        // SAFETY: the page is mapped read-write for as long as `self.page` lives (it owns the
        // mapping), is 4096 bytes long and page-aligned, so `offset` (checked above: aligned,
        // in bounds) addresses a valid, aligned u32. `AtomicU32` has the layout of `u32`,
        // and the other domain's concurrent writes are atomic with respect to ours.
        Some(unsafe { &*pointer })
    }

    fn byte(&self, offset: usize) -> Option<&AtomicU8> {
        if offset >= PAGE_SIZE_BYTES {
            return None;
        }
        let pointer = self
            .page
            .address()
            .as_ptr()
            .wrapping_add(offset)
            .cast::<AtomicU8>();
        // SAFETY: as in `word`: in bounds of the live mapping; bytes need no alignment.
        Some(unsafe { &*pointer })
    }
}

impl RingMemory for MappedRingPage {
    fn load_u32_acquire(&self, offset: usize) -> u32 {
        self.word(offset)
            .map_or(0, |word| word.load(Ordering::Acquire))
    }

    fn store_u32_release(&self, offset: usize, value: u32) {
        if let Some(word) = self.word(offset) {
            word.store(value, Ordering::Release);
        }
    }

    fn read_bytes(&self, offset: usize, destination: &mut [u8]) {
        for (index, slot) in destination.iter_mut().enumerate() {
            *slot = self
                .byte(offset + index)
                .map_or(0, |byte| byte.load(Ordering::Relaxed));
        }
    }

    fn write_bytes(&self, offset: usize, source: &[u8]) {
        for (index, value) in source.iter().enumerate() {
            if let Some(byte) = self.byte(offset + index) {
                byte.store(*value, Ordering::Relaxed);
            }
        }
    }
}
