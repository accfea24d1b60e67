//! `HYPERVISOR_domctl` (`xen/include/public/domctl.h`): domain information for xenstore.
//!
//! The xenstore domain may call exactly two domctls under the default (dummy) XSM policy:
//! `XEN_DOMCTL_getdomaininfo` (whose `interface_version` must equal the running Xen's
//! `XEN_DOMCTL_INTERFACE_VERSION`, else `-EACCES`) and, from Xen 4.21, the stable
//! `XEN_DOMCTL_get_domain_state` (`interface_version` 0).

use crate::abi_layout;
use crate::cpuid::XenVersion;
use crate::errno::{XenErrno, XenResult};
use crate::hypercall::{Hypervisor, argument_address_mut, number};
use crate::types::DomId;

/// `XEN_DOMCTL_getdomaininfo`.
pub const XEN_DOMCTL_GETDOMAININFO: u32 = 5;
/// `XEN_DOMCTL_get_domain_state` (stable, Xen >= 4.21).
pub const XEN_DOMCTL_GET_DOMAIN_STATE: u32 = 90;
/// Stable domctls use interface version 0.
pub const STABLE_DOMCTL_INTERFACE_VERSION: u32 = 0;

/// `XEN_DOMINF_*` flags of [`XenDomctlGetdomaininfo::flags`].
pub mod dominf {
    pub const DYING: u32 = 1 << 0;
    pub const HVM_GUEST: u32 = 1 << 1;
    pub const SHUTDOWN: u32 = 1 << 2;
    pub const PAUSED: u32 = 1 << 3;
    pub const BLOCKED: u32 = 1 << 4;
    pub const RUNNING: u32 = 1 << 5;
    pub const DEBUGGED: u32 = 1 << 6;
    pub const XS_DOMAIN: u32 = 1 << 7;
    pub const HAP: u32 = 1 << 8;
    /// The shutdown code lives in bits 16..24.
    pub const SHUTDOWN_CODE_SHIFT: u32 = 16;
}

/// `XEN_DOMCTL_GETDOMSTATE_STATE_*` and `_CAP_*` of [`XenDomctlGetDomainState`].
pub mod domain_state {
    pub const EXIST: u16 = 0x1;
    pub const SHUTDOWN: u16 = 0x2;
    pub const DYING: u16 = 0x4;
    pub const DEAD: u16 = 0x8;
    pub const CAP_CONTROL: u16 = 0x1;
    pub const CAP_HARDWARE: u16 = 0x2;
    pub const CAP_XENSTORE: u16 = 0x4;
}

/// The `XEN_DOMCTL_INTERFACE_VERSION` a given Xen release expects for getdomaininfo:
/// 0x15 (4.17), 0x16 (4.18), 0x17 (4.19–4.21), 0x18 (4.22 and later, until the next bump).
/// `None` for releases before 4.17, which this stub does not support.
pub const fn domctl_interface_version(xen: XenVersion) -> Option<u32> {
    if xen.major != 4 {
        return if xen.major > 4 { Some(0x18) } else { None };
    }
    match xen.minor {
        17 => Some(0x15),
        18 => Some(0x16),
        19..=21 => Some(0x17),
        22.. => Some(0x18),
        _ => None,
    }
}

/// Whether `XEN_DOMCTL_get_domain_state` exists (Xen >= 4.21).
pub const fn has_get_domain_state(xen: XenVersion) -> bool {
    xen.major > 4 || (xen.major == 4 && xen.minor >= 21)
}

/// `struct xen_domctl_getdomaininfo` (112 bytes; identical 4.17 → 4.22).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenDomctlGetdomaininfo {
    pub domain: u16,
    pub pad1: u16,
    pub flags: u32,
    pub tot_pages: u64,
    pub max_pages: u64,
    pub outstanding_pages: u64,
    pub shr_pages: u64,
    pub paged_pages: u64,
    pub shared_info_frame: u64,
    pub cpu_time: u64,
    pub nr_online_vcpus: u32,
    pub max_vcpu_id: u32,
    pub ssidref: u32,
    pub handle: [u8; 16],
    pub cpupool: u32,
    pub gpaddr_bits: u8,
    pub pad2: [u8; 7],
    /// x86 `xen_arch_domainconfig { emulation_flags, misc_flags }`.
    pub arch_config: [u32; 2],
}

abi_layout!(XenDomctlGetdomaininfo: 112 bytes {
    flags: 4, tot_pages: 8, max_pages: 16, outstanding_pages: 24, shr_pages: 32,
    paged_pages: 40, shared_info_frame: 48, cpu_time: 56, nr_online_vcpus: 64,
    max_vcpu_id: 68, ssidref: 72, handle: 76, cpupool: 92, gpaddr_bits: 96, arch_config: 104,
});

impl XenDomctlGetdomaininfo {
    /// The `SHUTDOWN_*` code, meaningful when `flags & XEN_DOMINF_shutdown`.
    pub const fn shutdown_code(&self) -> u8 {
        (self.flags >> dominf::SHUTDOWN_CODE_SHIFT) as u8
    }
}

/// `struct xen_domctl_get_domain_state` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenDomctlGetDomainState {
    pub state: u16,
    pub caps: u16,
    /// Must be 0 on input.
    pub pad0: u32,
    pub unique_id: u64,
}

abi_layout!(XenDomctlGetDomainState: 16 bytes { caps: 2, pad0: 4, unique_id: 8 });

/// The 128-byte union of `struct xen_domctl` (8-byte aligned).
#[repr(C)]
#[derive(Clone, Copy)]
pub union XenDomctlPayload {
    pub getdomaininfo: XenDomctlGetdomaininfo,
    pub get_domain_state: XenDomctlGetDomainState,
    pub raw: [u64; 16],
}

abi_layout!(XenDomctlPayload: 128 bytes, aligned 8);

/// `struct xen_domctl` (144 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct XenDomctl {
    pub cmd: u32,
    pub interface_version: u32,
    /// IN/OUT (`get_domain_state` with `DOMID_INVALID` writes the reported domain back).
    pub domain: u16,
    pub pad: [u16; 3],
    pub payload: XenDomctlPayload,
}

abi_layout!(XenDomctl: 144 bytes { interface_version: 4, domain: 8, payload: 16 });

impl XenDomctl {
    fn new(cmd: u32, interface_version: u32, domain: DomId) -> XenDomctl {
        XenDomctl {
            cmd,
            interface_version,
            domain: domain.0,
            pad: [0; 3],
            payload: XenDomctlPayload { raw: [0; 16] },
        }
    }
}

impl Hypervisor {
    fn domctl(&self, request: &mut XenDomctl) -> XenResult<u64> {
        let address = argument_address_mut(request);
        // SAFETY: Xen reads/writes one xen_domctl (144 bytes) alive for the call; the two
        // domctls issued here only report information.
        unsafe { self.hypercall(number::DOMCTL, [address, 0, 0, 0, 0]) }
    }

    /// `XEN_DOMCTL_getdomaininfo` for `domain`, with the interface version of the running Xen
    /// (see [`domctl_interface_version`]). At Xen 4.17 a missing domid yields the next higher
    /// domain: compare the returned `domain` field.
    pub fn get_domain_info(
        &self,
        domain: DomId,
        interface_version: u32,
    ) -> XenResult<XenDomctlGetdomaininfo> {
        let mut request = XenDomctl::new(XEN_DOMCTL_GETDOMAININFO, interface_version, domain);
        self.domctl(&mut request)?;
        // SAFETY: every field of the union is plain integers, so any bit pattern Xen wrote
        // (or the zero fill) is a valid `XenDomctlGetdomaininfo`.
        Ok(unsafe { request.payload.getdomaininfo })
    }

    /// `XEN_DOMCTL_get_domain_state` (Xen >= 4.21). With `DomId::INVALID` it reports the next
    /// domain whose state changed (only for the `VIRQ_DOM_EXC` handler; `ENOENT` when none is
    /// left); the returned `DomId` is the domain reported.
    pub fn get_domain_state(&self, domain: DomId) -> XenResult<(DomId, XenDomctlGetDomainState)> {
        let mut request = XenDomctl::new(
            XEN_DOMCTL_GET_DOMAIN_STATE,
            STABLE_DOMCTL_INTERFACE_VERSION,
            domain,
        );
        self.domctl(&mut request)?;
        // SAFETY: plain integers; any bit pattern is a valid `XenDomctlGetDomainState`.
        let state = unsafe { request.payload.get_domain_state };
        Ok((DomId(request.domain), state))
    }

    /// `get_domain_info` with the interface version derived from `xen`.
    pub fn get_domain_info_for_version(
        &self,
        domain: DomId,
        xen: XenVersion,
    ) -> XenResult<XenDomctlGetdomaininfo> {
        let version = domctl_interface_version(xen).ok_or(XenErrno::NotSupported)?;
        self.get_domain_info(domain, version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_versions_follow_releases() {
        let version = |minor| domctl_interface_version(XenVersion { major: 4, minor });
        assert_eq!(version(16), None);
        assert_eq!(version(17), Some(0x15));
        assert_eq!(version(18), Some(0x16));
        assert_eq!(version(19), Some(0x17));
        assert_eq!(version(20), Some(0x17));
        assert_eq!(version(21), Some(0x17));
        assert_eq!(version(22), Some(0x18));
        assert!(!has_get_domain_state(XenVersion {
            major: 4,
            minor: 20
        }));
        assert!(has_get_domain_state(XenVersion {
            major: 4,
            minor: 21
        }));
    }

    #[test]
    fn shutdown_code_is_bits_16_to_23() {
        let info = XenDomctlGetdomaininfo {
            flags: (3 << 16) | dominf::SHUTDOWN,
            ..Default::default()
        };
        assert_eq!(info.shutdown_code(), 3);
    }
}
