//! `HYPERVISOR_memory_op` (`xen/include/public/memory.h`): memory map, reservations, physmap.

use crate::abi_layout;
use crate::errno::XenResult;
use crate::hypercall::{Hypervisor, argument_address, argument_address_mut, number};
use crate::types::{DomId, Gfn};

/// `XENMEM_decrease_reservation`: gives the frames of the listed extents back to Xen.
pub const XENMEM_DECREASE_RESERVATION: u64 = 1;
/// `XENMEM_populate_physmap`: backs the listed guest frames with new memory.
pub const XENMEM_POPULATE_PHYSMAP: u64 = 6;
/// `XENMEM_current_reservation`: arg = `&domid_t`, returns the number of backed pages.
pub const XENMEM_CURRENT_RESERVATION: u64 = 3;
/// `XENMEM_maximum_reservation`: arg = `&domid_t`, returns the page limit.
pub const XENMEM_MAXIMUM_RESERVATION: u64 = 4;
/// `XENMEM_add_to_physmap`.
pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
/// `XENMEM_memory_map`: the guest's E820 map as set by the toolstack.
pub const XENMEM_MEMORY_MAP: u64 = 9;
/// `XENMEM_remove_from_physmap`.
pub const XENMEM_REMOVE_FROM_PHYSMAP: u64 = 15;

/// `XENMAPSPACE_*`: what `add_to_physmap` maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MapSpace {
    /// The domain's shared_info page (`idx` 0).
    SharedInfo = 0,
    /// A grant-table frame (`idx` = frame number).
    GrantTable = 1,
    /// An existing guest frame (`idx` = GFN).
    GuestFrame = 2,
}

/// `struct xen_add_to_physmap` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenAddToPhysmap {
    pub domid: u16,
    /// Only for `XENMAPSPACE_gmfn_range`.
    pub size: u16,
    pub space: u32,
    pub idx: u64,
    /// Where the frame should appear.
    pub gpfn: u64,
}

abi_layout!(XenAddToPhysmap: 24 bytes { size: 2, space: 4, idx: 8, gpfn: 16 });

/// `struct xen_remove_from_physmap` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenRemoveFromPhysmap {
    pub domid: u16,
    pub gpfn: u64,
}

abi_layout!(XenRemoveFromPhysmap: 16 bytes { gpfn: 8 });

/// `struct xen_memory_reservation` (32 bytes): the argument of `XENMEM_increase_reservation`,
/// `XENMEM_decrease_reservation` and `XENMEM_populate_physmap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMemoryReservation {
    /// Guest handle: linear address of an array of `xen_pfn_t`, one per extent. For a
    /// translated guest (PVH) these are guest frame numbers, which Xen only reads.
    pub extent_start: u64,
    /// How many extents the array holds.
    pub nr_extents: u64,
    /// Each extent is 2^`extent_order` frames, the first of which the array names.
    pub extent_order: u32,
    /// `XENMEMF_*` (node, address width, populate-on-demand); 0 for none.
    pub mem_flags: u32,
    pub domid: u16,
}

abi_layout!(XenMemoryReservation: 32 bytes {
    extent_start: 0, nr_extents: 8, extent_order: 16, mem_flags: 20, domid: 24,
});

/// `struct xen_memory_map` (16 bytes): `nr_entries` is capacity in, count out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMemoryMap {
    pub nr_entries: u32,
    /// Guest handle: linear address of an array of [`E820Entry`].
    pub buffer: u64,
}

abi_layout!(XenMemoryMap: 16 bytes { buffer: 8 });

/// One entry of the `XENMEM_memory_map` buffer: a *packed* 20-byte E820 entry
/// (`xen/arch/x86/include/asm/e820.h`), not the 24-byte `hvm_memmap_table_entry`.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    /// `E820_RAM` 1, `E820_RESERVED` 2, `E820_ACPI` 3, `E820_NVS` 4, `E820_UNUSABLE` 5.
    pub entry_type: u32,
}

abi_layout!(E820Entry: 20 bytes { size: 8, entry_type: 16 });

impl Hypervisor {
    /// `XENMEM_memory_map`: fills `entries` and returns how many were written.
    ///
    /// Fails with `ENOSYS` if the toolstack set no memory map.
    pub fn memory_map(&self, entries: &mut [E820Entry]) -> XenResult<usize> {
        let mut map = XenMemoryMap {
            nr_entries: u32::try_from(entries.len()).unwrap_or(u32::MAX),
            buffer: entries.as_mut_ptr() as u64,
        };
        let address = argument_address_mut(&mut map);
        // SAFETY: Xen writes at most `nr_entries` 20-byte entries to `entries`, which is that
        // long and lives for the call, and updates `map`.
        unsafe { self.hypercall(number::MEMORY_OP, [XENMEM_MEMORY_MAP, address, 0, 0, 0]) }?;
        Ok((map.nr_entries as usize).min(entries.len()))
    }

    /// `XENMEM_current_reservation` for `domid`: the number of pages currently backed.
    pub fn current_reservation_pages(&self, domid: DomId) -> XenResult<u64> {
        self.reservation_query(XENMEM_CURRENT_RESERVATION, domid)
    }

    /// `XENMEM_maximum_reservation` for `domid`: the page limit.
    pub fn maximum_reservation_pages(&self, domid: DomId) -> XenResult<u64> {
        self.reservation_query(XENMEM_MAXIMUM_RESERVATION, domid)
    }

    /// A `XENMEM_*_reservation` query, whose argument is a `domid_t`: a page count.
    fn reservation_query(&self, command: u64, domid: DomId) -> XenResult<u64> {
        let domid = domid.0;
        let address = argument_address(&domid);
        // SAFETY: Xen reads one domid_t, which lives for the call; nothing changes.
        unsafe { self.hypercall(number::MEMORY_OP, [command, address, 0, 0, 0]) }
    }

    /// `XENMEM_populate_physmap` for the calling domain: backs each frame of `frames` (extents
    /// of one frame each, order 0) with a new page of the domain's reservation. Returns how
    /// many frames, from the first on, were populated: fewer than asked when the domain reached
    /// its maximum reservation (`XENMEM_maximum_reservation`) or Xen ran out of memory; the
    /// frames after the first failure are untouched.
    ///
    /// # Safety
    ///
    /// Each frame's contents are replaced by a fresh page, and a page already there stays
    /// allocated to the domain but unreachable (`p2m_add_page()` only unlinks it), so the
    /// frames must not be populated RAM anything relies on: callers populate frames they know
    /// to be empty (see `XENMEM_decrease_reservation`).
    pub unsafe fn populate_physmap(&self, frames: &mut [Gfn]) -> XenResult<u64> {
        // The list is `&mut`: the ABI makes it an output too, though Xen writes the machine
        // frames back only for guests it does not translate (never PVH).
        let (list, count) = (frames.as_mut_ptr() as u64, frames.len() as u64);
        // SAFETY: forwarded contract (frames whose contents nothing relies on); the list is
        // `count` frame numbers, writable and alive for the call.
        unsafe { self.memory_reservation_op(XENMEM_POPULATE_PHYSMAP, list, count) }
    }

    /// `XENMEM_decrease_reservation` for the calling domain: gives the page behind each frame
    /// of `frames` (order 0) back to Xen and leaves a hole there. Returns how many frames, from
    /// the first on, were given back; it stops at the first frame that holds no page (an
    /// unpopulated frame is not an error), leaving that frame and the rest untouched.
    ///
    /// # Safety
    ///
    /// Nothing may use the frames any more: their pages go back to Xen, and accesses to a hole
    /// go to emulation (reads of all ones, writes dropped), not to memory.
    pub unsafe fn decrease_reservation(&self, frames: &[Gfn]) -> XenResult<u64> {
        let (list, count) = (frames.as_ptr() as u64, frames.len() as u64);
        // SAFETY: forwarded contract (frames nothing uses any more); Xen only reads the list
        // of this operation: `count` frame numbers alive for the call.
        unsafe { self.memory_reservation_op(XENMEM_DECREASE_RESERVATION, list, count) }
    }

    /// A `xen_memory_reservation` operation on the calling domain's frames listed at linear
    /// address `list` (`count` frame numbers, one order-0 extent each; `Gfn` is
    /// `repr(transparent)` over the u64 `xen_pfn_t`).
    ///
    /// # Safety
    ///
    /// `list` must hold `count` frame numbers for the call (writable where `command` writes
    /// them back), and the caller accepts what `command` does to the frames.
    unsafe fn memory_reservation_op(&self, command: u64, list: u64, count: u64) -> XenResult<u64> {
        let request = XenMemoryReservation {
            extent_start: list,
            nr_extents: count,
            extent_order: 0,
            mem_flags: 0,
            domid: DomId::SELF.0,
        };
        let address = argument_address(&request);
        // SAFETY: Xen reads one xen_memory_reservation, alive for the call, and the list the
        // caller vouches for; what happens to the frames is the caller's contract.
        unsafe { self.hypercall(number::MEMORY_OP, [command, address, 0, 0, 0]) }
    }

    /// `XENMEM_add_to_physmap` for the calling domain: makes frame `index` of `space` appear
    /// at `gfn`. RAM previously at `gfn` is freed by Xen; a frame already mapped elsewhere
    /// is moved (`xen/arch/x86/mm/p2m.c` `xenmem_add_to_physmap_one()`).
    ///
    /// # Safety
    ///
    /// The contents of guest frame `gfn` are replaced: the caller must ensure nothing relies
    /// on the old contents of that frame (e.g. it is a dedicated, page-aligned buffer).
    pub unsafe fn add_to_physmap(&self, space: MapSpace, index: u64, gfn: Gfn) -> XenResult<()> {
        let request = XenAddToPhysmap {
            domid: DomId::SELF.0,
            size: 0,
            space: space as u32,
            idx: index,
            gpfn: gfn.0,
        };
        let address = argument_address(&request);
        // SAFETY: Xen reads one xen_add_to_physmap; the caller accepts that `gfn` changes.
        unsafe { self.hypercall(number::MEMORY_OP, [XENMEM_ADD_TO_PHYSMAP, address, 0, 0, 0]) }?;
        Ok(())
    }

    /// `XENMEM_remove_from_physmap` for the calling domain: leaves a hole at `gfn`.
    ///
    /// # Safety
    ///
    /// Nothing may access guest frame `gfn` afterwards until it is mapped again.
    pub unsafe fn remove_from_physmap(&self, gfn: Gfn) -> XenResult<()> {
        let request = XenRemoveFromPhysmap {
            domid: DomId::SELF.0,
            gpfn: gfn.0,
        };
        let address = argument_address(&request);
        // SAFETY: Xen reads one xen_remove_from_physmap; the caller stops using `gfn`.
        unsafe {
            self.hypercall(
                number::MEMORY_OP,
                [XENMEM_REMOVE_FROM_PHYSMAP, address, 0, 0, 0],
            )
        }?;
        Ok(())
    }
}
