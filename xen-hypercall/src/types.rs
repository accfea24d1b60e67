//! Identifier newtypes shared by all hypercall modules (`xen.h`, `event_channel.h`, `grant_table.h`).

use core::fmt;

use crate::abi_layout;

/// The size of a guest frame on x86 (`XEN_PAGE_SIZE`).
pub const PAGE_SIZE_BYTES: u64 = 4096;

/// A Xen domain id (`domid_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct DomId(pub u16);

abi_layout!(DomId: 2 bytes);

impl DomId {
    /// `DOMID_FIRST_RESERVED`: ids from here on do not name real domains.
    pub const FIRST_RESERVED: u16 = 0x7FF0;
    /// `DOMID_SELF`: "the calling domain".
    pub const SELF: DomId = DomId(0x7FF0);
    /// `DOMID_IO`.
    pub const IO: DomId = DomId(0x7FF1);
    /// `DOMID_XEN`.
    pub const XEN: DomId = DomId(0x7FF2);
    /// `DOMID_COW`.
    pub const COW: DomId = DomId(0x7FF3);
    /// `DOMID_INVALID`: in `get_domain_state`, "the next domain whose state changed".
    pub const INVALID: DomId = DomId(0x7FF4);
    /// `DOMID_ANY` (4.22+ domain creation; xenstore permission "every domain").
    pub const ANY: DomId = DomId(0x7FF5);

    /// Whether this id names a real domain (below `DOMID_FIRST_RESERVED`).
    pub const fn is_real_domain(self) -> bool {
        self.0 < Self::FIRST_RESERVED
    }
}

/// An event-channel port (`evtchn_port_t`); `repr(transparent)` so that a slice of ports
/// can be handed to `SCHEDOP_poll` directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct EventChannelPort(pub u32);

abi_layout!(EventChannelPort: 4 bytes);

/// A grant reference (`grant_ref_t`), an index into the granting domain's grant table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct GrantRef(pub u32);

abi_layout!(GrantRef: 4 bytes);

impl GrantRef {
    /// `GNTTAB_RESERVED_CONSOLE`: pre-seeded by the toolstack for the PV console page.
    pub const RESERVED_CONSOLE: GrantRef = GrantRef(0);
    /// `GNTTAB_RESERVED_XENSTORE`: pre-seeded by the toolstack for the xenstore ring page.
    pub const RESERVED_XENSTORE: GrantRef = GrantRef(1);
}

/// The identifiers print as their bare number, as Xen's own tools print them.
macro_rules! display_as_number {
    ($($identifier:ty),*) => {
        $(impl fmt::Display for $identifier {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}", self.0)
            }
        })*
    };
}

display_as_number!(DomId, EventChannelPort, GrantRef);

/// A guest frame number (guest-physical address >> 12; `xen_pfn_t` for a translated guest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Gfn(pub u64);

// `xen_pfn_t` is 64 bits: a slice of frames is the extent list of `xen_memory_reservation`.
abi_layout!(Gfn: 8 bytes);

impl Gfn {
    /// The frame containing a guest-physical address.
    pub const fn containing(guest_physical_address: u64) -> Gfn {
        Gfn(guest_physical_address / PAGE_SIZE_BYTES)
    }

    /// The guest-physical address of the first byte of this frame.
    pub const fn guest_physical_address(self) -> u64 {
        self.0 * PAGE_SIZE_BYTES
    }
}

impl fmt::Display for Gfn {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_domain_ids_match_xen_h() {
        assert_eq!(DomId::SELF.0, 0x7FF0);
        assert_eq!(DomId::INVALID.0, 0x7FF4);
        assert!(DomId(0).is_real_domain());
        assert!(!DomId::SELF.is_real_domain());
    }

    #[test]
    fn gfn_address_conversion() {
        assert_eq!(Gfn::containing(0x1234_5678).0, 0x12345);
        assert_eq!(Gfn(0xfefff).guest_physical_address(), 0xfefff000);
    }
}
