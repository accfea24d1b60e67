//! `HYPERVISOR_grant_table_op` (`xen/include/public/grant_table.h`): mapping foreign pages.
//!
//! A PVH/HVM caller may only use `GNTMAP_host_map` (optionally `| GNTMAP_readonly`), and
//! `host_addr` is the guest-**physical** address of the frame that receives the mapping.
//! That frame must be a hole in the caller's physical map: mapping over RAM leaks the RAM
//! page, mapping over another grant crashes the domain (`xen/arch/x86/mm/p2m.c`
//! `p2m_add_page()`). Choosing such frames is the caller's job, hence `unsafe`.

use core::fmt;
use core::sync::atomic::{AtomicU16, AtomicU32};

use crate::abi_layout;
use crate::errno::XenErrno;
use crate::hypercall::{Hypervisor, argument_address_mut, number};
use crate::types::{DomId, Gfn, GrantRef};

pub const GNTTABOP_MAP_GRANT_REF: u64 = 0;
pub const GNTTABOP_UNMAP_GRANT_REF: u64 = 1;
pub const GNTTABOP_SETUP_TABLE: u64 = 2;
pub const GNTTABOP_QUERY_SIZE: u64 = 6;

/// `GNTMAP_host_map`.
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// `GNTMAP_readonly`.
pub const GNTMAP_READONLY: u32 = 1 << 2;

/// `GTF_permit_access` in a v1 grant entry's flags.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_readonly`.
pub const GTF_READONLY: u16 = 1 << 2;

/// `struct grant_entry_v1` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntryV1 {
    pub flags: u16,
    pub domid: u16,
    pub frame: u32,
}

abi_layout!(GrantEntryV1: 8 bytes { frame: 4 });

/// A v1 grant entry as it sits in a mapped grant-table frame, shared with Xen (which sets
/// `GTF_reading`/`GTF_writing` in `flags` while the grant is mapped).
#[repr(C)]
pub struct SharedGrantEntryV1 {
    pub flags: AtomicU16,
    pub domid: AtomicU16,
    pub frame: AtomicU32,
}

abi_layout!(SharedGrantEntryV1: 8 bytes { domid: 2, frame: 4 });

/// `GTF_reading`: Xen is mapping the frame for reading.
pub const GTF_READING: u16 = 1 << 3;
/// `GTF_writing`: Xen is mapping the frame for writing.
pub const GTF_WRITING: u16 = 1 << 4;
/// `GNTTAB_NR_RESERVED_ENTRIES`: refs 0..8 are reserved for the toolstack (0 console,
/// 1 xenstore).
pub const RESERVED_ENTRIES: u32 = 8;
/// v1 entries per 4 KiB grant-table frame.
pub const ENTRIES_PER_FRAME_V1: usize = 512;

/// `struct gnttab_map_grant_ref` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabMapGrantRef {
    /// IN: guest-physical address of the destination frame (PVH/HVM caller).
    pub host_addr: u64,
    /// IN: `GNTMAP_*`.
    pub flags: u32,
    /// IN: grant reference in the granting domain's table.
    pub grant_ref: u32,
    /// IN: the granting domain.
    pub dom: u16,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// OUT: handle for unmapping.
    pub handle: u32,
    /// OUT.
    pub dev_bus_addr: u64,
}

abi_layout!(GnttabMapGrantRef: 32 bytes {
    flags: 8, grant_ref: 12, dom: 16, status: 18, handle: 20, dev_bus_addr: 24,
});

/// `struct gnttab_unmap_grant_ref` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabUnmapGrantRef {
    pub host_addr: u64,
    pub dev_bus_addr: u64,
    pub handle: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
}

abi_layout!(GnttabUnmapGrantRef: 24 bytes { handle: 16, status: 20 });

/// `struct gnttab_setup_table` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabSetupTable {
    pub dom: u16,
    pub nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Guest handle: linear address of a `xen_pfn_t` array of `nr_frames` entries.
    pub frame_list: u64,
}

abi_layout!(GnttabSetupTable: 24 bytes { nr_frames: 4, status: 8, frame_list: 16 });

/// `struct gnttab_query_size` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabQuerySize {
    pub dom: u16,
    /// OUT.
    pub nr_frames: u32,
    /// OUT.
    pub max_nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
}

abi_layout!(GnttabQuerySize: 16 bytes { nr_frames: 4, max_nr_frames: 8, status: 12 });

/// A per-operation grant status (`GNTST_*`), other than `GNTST_okay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantStatus {
    GeneralError,
    BadDomain,
    BadGrantRef,
    BadHandle,
    BadVirtualAddress,
    BadDeviceAddress,
    NoDeviceSpace,
    PermissionDenied,
    BadPage,
    BadCopyArgument,
    AddressTooBig,
    TryAgain,
    NoSpace,
    /// A status value this crate does not know.
    Unknown(i16),
}

impl GrantStatus {
    /// `Ok(())` for `GNTST_okay` (0), the typed status otherwise.
    pub const fn check(status: i16) -> Result<(), GrantStatus> {
        Err(match status {
            0 => return Ok(()),
            -1 => GrantStatus::GeneralError,
            -2 => GrantStatus::BadDomain,
            -3 => GrantStatus::BadGrantRef,
            -4 => GrantStatus::BadHandle,
            -5 => GrantStatus::BadVirtualAddress,
            -6 => GrantStatus::BadDeviceAddress,
            -7 => GrantStatus::NoDeviceSpace,
            -8 => GrantStatus::PermissionDenied,
            -9 => GrantStatus::BadPage,
            -10 => GrantStatus::BadCopyArgument,
            -11 => GrantStatus::AddressTooBig,
            -12 => GrantStatus::TryAgain,
            -13 => GrantStatus::NoSpace,
            other => GrantStatus::Unknown(other),
        })
    }

    /// The name from `grant_table.h`.
    pub const fn name(self) -> &'static str {
        match self {
            GrantStatus::GeneralError => "GNTST_general_error",
            GrantStatus::BadDomain => "GNTST_bad_domain",
            GrantStatus::BadGrantRef => "GNTST_bad_gntref",
            GrantStatus::BadHandle => "GNTST_bad_handle",
            GrantStatus::BadVirtualAddress => "GNTST_bad_virt_addr",
            GrantStatus::BadDeviceAddress => "GNTST_bad_dev_addr",
            GrantStatus::NoDeviceSpace => "GNTST_no_device_space",
            GrantStatus::PermissionDenied => "GNTST_permission_denied",
            GrantStatus::BadPage => "GNTST_bad_page",
            GrantStatus::BadCopyArgument => "GNTST_bad_copy_arg",
            GrantStatus::AddressTooBig => "GNTST_address_too_big",
            GrantStatus::TryAgain => "GNTST_eagain",
            GrantStatus::NoSpace => "GNTST_no_space",
            GrantStatus::Unknown(_) => "GNTST_?",
        }
    }
}

/// A grant operation failed either as a whole (hypercall errno) or per entry (status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    Hypercall(XenErrno),
    Status(GrantStatus),
}

impl From<XenErrno> for GrantError {
    fn from(errno: XenErrno) -> Self {
        GrantError::Hypercall(errno)
    }
}

impl fmt::Display for GrantError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantError::Hypercall(errno) => write!(formatter, "hypercall failed: {errno}"),
            GrantError::Status(GrantStatus::Unknown(value)) => write!(formatter, "GNTST {value}"),
            GrantError::Status(status) => formatter.write_str(status.name()),
        }
    }
}

/// A successful mapping: what is needed to unmap it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantMapping {
    /// The frame now holding the foreign page.
    pub gfn: Gfn,
    /// Xen's handle for the mapping.
    pub handle: u32,
}

/// Grant table size of a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantTableSize {
    pub frames: u32,
    pub max_frames: u32,
}

impl Hypervisor {
    /// One `GNTTABOP_*` on the single argument struct `request` (count 1). The per-entry
    /// status Xen writes into `request` is for the caller to check.
    ///
    /// # Safety
    ///
    /// `request` must be the argument struct of `command`, and the caller must accept what
    /// `command` does to guest memory (mapping into or out of a frame, writing a frame list).
    unsafe fn grant_table_op<T>(&self, command: u64, request: &mut T) -> Result<(), GrantError> {
        let address = argument_address_mut(request);
        // SAFETY: Xen reads/writes one argument struct of `command`, alive for the call; the
        // caller vouches for the struct and the effects.
        unsafe { self.hypercall(number::GRANT_TABLE_OP, [command, address, 1, 0, 0]) }?;
        Ok(())
    }

    /// `GNTTABOP_map_grant_ref` of one grant: maps `grant_ref` of `granting_domain` at `gfn`.
    ///
    /// # Safety
    ///
    /// `gfn` must be a hole in the calling domain's physical map (never RAM, never an
    /// existing grant/foreign/MMIO mapping), and nothing may rely on its previous contents.
    pub unsafe fn map_grant_ref(
        &self,
        granting_domain: DomId,
        grant_ref: GrantRef,
        gfn: Gfn,
        read_only: bool,
    ) -> Result<GrantMapping, GrantError> {
        let mut request = GnttabMapGrantRef {
            host_addr: gfn.guest_physical_address(),
            flags: GNTMAP_HOST_MAP | if read_only { GNTMAP_READONLY } else { 0 },
            grant_ref: grant_ref.0,
            dom: granting_domain.0,
            ..GnttabMapGrantRef::default()
        };
        // SAFETY: Xen reads/writes one gnttab_map_grant_ref (count 1) that lives for the
        // call; the caller guarantees `gfn` is a hole.
        unsafe { self.grant_table_op(GNTTABOP_MAP_GRANT_REF, &mut request) }?;
        GrantStatus::check(request.status).map_err(GrantError::Status)?;
        Ok(GrantMapping {
            gfn,
            handle: request.handle,
        })
    }

    /// `GNTTABOP_unmap_grant_ref` of one mapping; `gfn` becomes a hole again.
    ///
    /// # Safety
    ///
    /// Nothing may access the frame of `mapping` afterwards.
    pub unsafe fn unmap_grant_ref(&self, mapping: GrantMapping) -> Result<(), GrantError> {
        let mut request = GnttabUnmapGrantRef {
            host_addr: mapping.gfn.guest_physical_address(),
            dev_bus_addr: 0,
            handle: mapping.handle,
            status: 0,
        };
        // SAFETY: Xen reads/writes one gnttab_unmap_grant_ref that lives for the call; the
        // caller stops using the frame.
        unsafe { self.grant_table_op(GNTTABOP_UNMAP_GRANT_REF, &mut request) }?;
        GrantStatus::check(request.status).map_err(GrantError::Status)
    }

    /// `GNTTABOP_query_size` for the calling domain.
    pub fn grant_table_size(&self) -> Result<GrantTableSize, GrantError> {
        let mut request = GnttabQuerySize {
            dom: DomId::SELF.0,
            ..GnttabQuerySize::default()
        };
        // SAFETY: Xen reads/writes one gnttab_query_size that lives for the call; no memory
        // of the guest changes.
        unsafe { self.grant_table_op(GNTTABOP_QUERY_SIZE, &mut request) }?;
        GrantStatus::check(request.status).map_err(GrantError::Status)?;
        Ok(GrantTableSize {
            frames: request.nr_frames,
            max_frames: request.max_nr_frames,
        })
    }

    /// `GNTTABOP_setup_table` for the calling domain: grows its table to `frames.len()`
    /// frames and returns where they are mapped. For a translated (PVH) guest this maps
    /// nothing; map frames with `add_to_physmap(MapSpace::GrantTable, ..)`.
    pub fn setup_grant_table(&self, frames: &mut [u64]) -> Result<(), GrantError> {
        let mut request = GnttabSetupTable {
            dom: DomId::SELF.0,
            nr_frames: u32::try_from(frames.len())
                .map_err(|_| GrantError::Hypercall(XenErrno::InvalidArgument))?,
            status: 0,
            frame_list: frames.as_mut_ptr() as u64,
        };
        // SAFETY: Xen writes at most `nr_frames` xen_pfn_t to `frames`, which is that long
        // and lives for the call.
        unsafe { self.grant_table_op(GNTTABOP_SETUP_TABLE, &mut request) }?;
        GrantStatus::check(request.status).map_err(GrantError::Status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decode() {
        assert_eq!(GrantStatus::check(0), Ok(()));
        assert_eq!(GrantStatus::check(-3), Err(GrantStatus::BadGrantRef));
        assert_eq!(GrantStatus::check(-13), Err(GrantStatus::NoSpace));
        assert_eq!(GrantStatus::check(-99), Err(GrantStatus::Unknown(-99)));
        assert_eq!(
            std::format!("{}", GrantError::Status(GrantStatus::BadDomain)),
            "GNTST_bad_domain"
        );
    }
}
