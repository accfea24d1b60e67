//! Mapping other domains' granted pages (their xenstore rings) into a reserved GFN window.
//!
//! A PVH caller of `GNTTABOP_map_grant_ref` names the guest-physical frame that receives
//! the foreign page. That frame must be a **hole**: over RAM the RAM page leaks, over
//! another grant Xen crashes the domain (docs/xen-interface.md, "Grant tables"). So mappings
//! go into a window of frames that no memory-map entry touches: the first large-enough gap at
//! or above 4 GiB — like Xen-as-a-guest's `xg_alloc_unused_page()` (which treats everything
//! below max(RAM end, 4 GiB) and every map entry as used) and Solo5's 4–5 GiB area; it also
//! stays clear of the unknown-MMIO area below 4 GiB (LAPIC, special pages). The window is
//! identity-mapped by the boot page tables, and a slot bitmap guarantees that no frame is
//! mapped twice.
//!
//! For the xenstore engine (`Platform::connect_domain`): map `GrantRef::RESERVED_XENSTORE`
//! of the new domain, keep the [`ForeignPage`], unmap it in `disconnect_domain`.
//!
//! Never map a grant of the domain's *own* RAM page (a loopback grant): on Xen 4.17 (PVH
//! dom0, observed) the second mapping unhooks the page from its original GFN, which then
//! reads as all-ones. The stub serves its own xenstore connection from its own page instead,
//! as C xenstored does (`xenbus_map()` for `store_domid`).
// Until the engine's Platform implementation is wired in, the kernel only plans the window
// and builds the mapper; the map/unmap API is exercised by that next step.
#![cfg_attr(target_os = "none", allow(dead_code))]

use alloc::collections::TryReserveError;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;

use xen_hypercall::grant_table::{GrantError, GrantMapping};
use xen_hypercall::{DomId, Gfn, GrantRef, Hypervisor, PAGE_SIZE_BYTES};

use super::memory_map::MemoryMap;

/// Frames in the window: one per domain the 2-level event-channel ABI can serve (4096).
pub const GRANT_WINDOW_FRAMES: u64 = 4096;
/// The window never starts below 4 GiB.
pub const GRANT_WINDOW_LOWEST_START: u64 = 4 << 30;
/// The window starts on a 2 MiB boundary (one boot page-table entry).
pub const GRANT_WINDOW_ALIGNMENT_BYTES: u64 = 2 << 20;

/// Where the window goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantWindowPlan {
    pub first_gfn: Gfn,
    pub frame_count: u64,
}

impl GrantWindowPlan {
    /// One past the last guest-physical byte of the window.
    pub const fn end_address(&self) -> u64 {
        (self.first_gfn.0 + self.frame_count) * PAGE_SIZE_BYTES
    }
}

/// Why no window could be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantWindowError {
    /// The window would extend past the identity-mapped range.
    BeyondIdentityMap {
        start: u64,
        end: u64,
        mapped_limit: u64,
    },
}

impl fmt::Display for GrantWindowError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantWindowError::BeyondIdentityMap {
                start,
                end,
                mapped_limit,
            } => write!(
                formatter,
                "grant window {start:#x}..{end:#x} would pass the identity map limit {mapped_limit:#x}"
            ),
        }
    }
}

/// Places the window in the first gap of `memory_map` at or above 4 GiB that is large
/// enough, on a 2 MiB boundary, below `mapped_limit`.
pub fn plan_grant_window(
    memory_map: &MemoryMap,
    mapped_limit: u64,
) -> Result<GrantWindowPlan, GrantWindowError> {
    let size_bytes = GRANT_WINDOW_FRAMES * PAGE_SIZE_BYTES;
    let align = |address: u64| {
        address
            .div_ceil(GRANT_WINDOW_ALIGNMENT_BYTES)
            .saturating_mul(GRANT_WINDOW_ALIGNMENT_BYTES)
    };
    let mut start = align(GRANT_WINDOW_LOWEST_START);
    loop {
        let end = start.saturating_add(size_bytes);
        if end > mapped_limit {
            return Err(GrantWindowError::BeyondIdentityMap {
                start,
                end,
                mapped_limit,
            });
        }
        // Move past the first entry (of any kind) that overlaps the candidate; each step
        // moves `start` strictly up, so this ends.
        match memory_map
            .regions
            .iter()
            .filter(|region| region.overlaps(start, end))
            .map(|region| region.end())
            .max()
        {
            Some(blocking_end) => start = align(blocking_end),
            None => {
                debug_assert!(memory_map.is_hole(start, end));
                return Ok(GrantWindowPlan {
                    first_gfn: Gfn::containing(start),
                    frame_count: GRANT_WINDOW_FRAMES,
                });
            }
        }
    }
}

/// Tracks which frames of the window hold a mapping.
#[derive(Debug)]
pub struct GrantWindow {
    plan: GrantWindowPlan,
    in_use: Vec<u64>,
}

impl GrantWindow {
    /// An empty window (allocates the bitmap: 512 bytes for 4096 frames).
    pub fn new(plan: GrantWindowPlan) -> Result<GrantWindow, TryReserveError> {
        let words = plan.frame_count.div_ceil(64) as usize;
        let mut in_use = Vec::new();
        in_use.try_reserve_exact(words)?;
        in_use.resize(words, 0);
        Ok(GrantWindow { plan, in_use })
    }

    /// Takes a free frame of the window.
    pub fn allocate(&mut self) -> Option<Gfn> {
        for (word_index, word) in self.in_use.iter_mut().enumerate() {
            if *word == u64::MAX {
                continue;
            }
            let bit_index = (!*word).trailing_zeros() as u64;
            let slot = word_index as u64 * 64 + bit_index;
            if slot >= self.plan.frame_count {
                return None;
            }
            *word |= 1 << bit_index;
            return Some(Gfn(self.plan.first_gfn.0 + slot));
        }
        None
    }

    /// Returns a frame to the window; false if it was not allocated from it.
    pub fn release(&mut self, gfn: Gfn) -> bool {
        let Some(slot) = gfn.0.checked_sub(self.plan.first_gfn.0) else {
            return false;
        };
        if slot >= self.plan.frame_count {
            return false;
        }
        let Some(word) = self.in_use.get_mut((slot / 64) as usize) else {
            return false;
        };
        let bit = 1u64 << (slot % 64);
        let was_allocated = *word & bit != 0;
        *word &= !bit;
        was_allocated
    }

    /// Frames currently holding a mapping.
    pub fn frames_in_use(&self) -> u32 {
        self.in_use.iter().map(|word| word.count_ones()).sum()
    }

    pub fn plan(&self) -> GrantWindowPlan {
        self.plan
    }
}

/// A foreign page mapped into the window. Not `Clone`: it is the one owner of the mapping.
#[derive(Debug)]
pub struct ForeignPage {
    pub domain: DomId,
    pub grant_ref: GrantRef,
    mapping: GrantMapping,
}

impl ForeignPage {
    /// Where the page is visible (identity map: the frame's guest-physical address).
    pub fn address(&self) -> NonNull<u8> {
        // A frame number in the window is never 0 (the window is above 4 GiB).
        NonNull::new(self.mapping.gfn.guest_physical_address() as *mut u8)
            .unwrap_or(NonNull::dangling())
    }

    pub fn gfn(&self) -> Gfn {
        self.mapping.gfn
    }
}

/// Why a map or unmap failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantMapError {
    /// Every frame of the window is in use.
    WindowFull,
    /// Xen refused.
    Xen(GrantError),
}

impl fmt::Display for GrantMapError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantMapError::WindowFull => formatter.write_str("grant-map window is full"),
            GrantMapError::Xen(error) => write!(formatter, "{error}"),
        }
    }
}

/// Maps and unmaps foreign pages in the window.
pub struct GrantMapper {
    hypervisor: Hypervisor,
    window: GrantWindow,
}

impl GrantMapper {
    pub fn new(hypervisor: Hypervisor, window: GrantWindow) -> GrantMapper {
        GrantMapper { hypervisor, window }
    }

    /// Maps `grant_ref` of `domain` read-write into a free frame of the window.
    pub fn map(
        &mut self,
        domain: DomId,
        grant_ref: GrantRef,
    ) -> Result<ForeignPage, GrantMapError> {
        let gfn = self.window.allocate().ok_or(GrantMapError::WindowFull)?;
        // SAFETY: `gfn` comes from the window, which `plan_grant_window` placed above every
        // memory-map entry (a hole: no RAM, no special page), and the slot bitmap says no
        // other mapping is there.
        let mapped = unsafe { self.hypervisor.map_grant_ref(domain, grant_ref, gfn, false) };
        match mapped {
            Ok(mapping) => {
                crate::runtime::trace::record("grant.map", gfn.0);
                Ok(ForeignPage {
                    domain,
                    grant_ref,
                    mapping,
                })
            }
            Err(error) => {
                self.window.release(gfn);
                crate::runtime::trace::record("grant.map_failed", u64::from(grant_ref.0));
                Err(GrantMapError::Xen(error))
            }
        }
    }

    /// Unmaps a page. On failure the frame stays reserved (its state is unknown, and
    /// mapping over a live grant would crash the domain).
    pub fn unmap(&mut self, page: ForeignPage) -> Result<(), GrantMapError> {
        // SAFETY: `page` is consumed, so no reference into the frame outlives the unmap.
        unsafe { self.hypervisor.unmap_grant_ref(page.mapping) }.map_err(GrantMapError::Xen)?;
        self.window.release(page.mapping.gfn);
        crate::runtime::trace::record("grant.unmap", page.mapping.gfn.0);
        Ok(())
    }

    pub fn window(&self) -> &GrantWindow {
        &self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xen::memory_map::{
        MemoryKind, MemoryMapSource, MemoryRegion, stub_domain_map_with_ram,
    };

    const LIMIT: u64 = 8 << 30;

    fn map(regions: &[MemoryRegion]) -> MemoryMap {
        MemoryMap::from_regions(
            regions.iter().copied(),
            MemoryMapSource::XenMemoryMapHypercall,
        )
    }

    #[test]
    fn window_sits_at_4_gib_for_a_small_domain() {
        let memory_map = stub_domain_map_with_ram(8 << 20);
        let plan = plan_grant_window(&memory_map, LIMIT).expect("fits");
        assert_eq!(plan.first_gfn, Gfn(0x10_0000));
        assert_eq!(plan.end_address(), (4 << 30) + (16 << 20));
        assert!(memory_map.is_hole(4 << 30, plan.end_address()));
    }

    #[test]
    fn window_skips_entries_in_the_way_but_not_far_away_ones() {
        let memory_map = map(&[
            MemoryRegion {
                start: 0,
                size_bytes: 64 << 20,
                kind: MemoryKind::Ram,
            },
            MemoryRegion {
                start: (4 << 30) + 4096,
                size_bytes: 4096,
                kind: MemoryKind::Reserved,
            },
            MemoryRegion {
                start: 0xfd_0000_0000,
                size_bytes: 1 << 30,
                kind: MemoryKind::Reserved,
            },
        ]);
        let plan = plan_grant_window(&memory_map, LIMIT).expect("fits");
        assert_eq!(
            plan.first_gfn.guest_physical_address(),
            (4 << 30) + (2 << 20)
        );
        assert!(memory_map.is_hole(plan.first_gfn.guest_physical_address(), plan.end_address()));
    }

    #[test]
    fn window_moves_above_high_ram() {
        let memory_map = map(&[MemoryRegion {
            start: 4 << 30,
            size_bytes: (1 << 30) + 4096,
            kind: MemoryKind::Ram,
        }]);
        let plan = plan_grant_window(&memory_map, LIMIT).expect("fits");
        assert_eq!(
            plan.first_gfn.guest_physical_address(),
            (5 << 30) + (2 << 20)
        );
        let too_high = map(&[MemoryRegion {
            start: 0,
            size_bytes: LIMIT,
            kind: MemoryKind::Ram,
        }]);
        assert!(matches!(
            plan_grant_window(&too_high, LIMIT),
            Err(GrantWindowError::BeyondIdentityMap { .. })
        ));
    }

    #[test]
    fn slots_are_unique_until_released() {
        let plan = GrantWindowPlan {
            first_gfn: Gfn(0x10_0000),
            frame_count: 130,
        };
        let mut window = GrantWindow::new(plan).expect("bitmap");
        let mut taken = std::vec::Vec::new();
        while let Some(gfn) = window.allocate() {
            taken.push(gfn);
        }
        assert_eq!(taken.len(), 130);
        assert_eq!(taken[0], Gfn(0x10_0000));
        assert_eq!(taken[129], Gfn(0x10_0000 + 129));
        assert_eq!(window.frames_in_use(), 130);
        assert!(window.release(Gfn(0x10_0040)));
        assert!(!window.release(Gfn(0x10_0040)));
        assert!(!window.release(Gfn(0x20_0000)));
        assert!(!window.release(Gfn(5)));
        assert_eq!(window.allocate(), Some(Gfn(0x10_0040)));
        assert_eq!(window.allocate(), None);
    }
}
