//! `HYPERVISOR_xen_version` (`xen/include/public/version.h`).

use crate::abi_layout;
use crate::cpuid::XenVersion;
use crate::errno::XenResult;
use crate::hypercall::{Hypervisor, argument_address_mut, number};

/// `XENVER_version`: returns `major << 16 | minor` in `rax`.
pub const XENVER_VERSION: u64 = 0;
/// `XENVER_extraversion`: fills a `char[16]` (`xen_extraversion_t`).
pub const XENVER_EXTRAVERSION: u64 = 1;
/// `XENVER_get_features`: fills `struct xen_feature_info`.
pub const XENVER_GET_FEATURES: u64 = 6;

/// `XEN_EXTRAVERSION_LEN`.
pub const EXTRAVERSION_LEN_BYTES: usize = 16;

/// `struct xen_feature_info` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenFeatureInfo {
    /// IN: which 32-bit word of the feature bitmap.
    pub submap_idx: u32,
    /// OUT: the bits (`XENFEAT_*` in `features.h`).
    pub submap: u32,
}

abi_layout!(XenFeatureInfo: 8 bytes { submap: 4 });

/// `XENFEAT_hvm_callback_vector` (bit 8 of submap 0).
pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;

/// The extra version string (e.g. `".7"`, `"-rc"`), NUL-trimmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtraVersion {
    bytes: [u8; EXTRAVERSION_LEN_BYTES],
}

impl ExtraVersion {
    /// Wraps the raw `char[16]` as Xen wrote it.
    pub const fn from_raw(bytes: [u8; EXTRAVERSION_LEN_BYTES]) -> ExtraVersion {
        ExtraVersion { bytes }
    }

    /// The text up to the first NUL; non-UTF-8 content yields `"?"`.
    pub fn as_str(&self) -> &str {
        let length = self
            .bytes
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(self.bytes.len());
        core::str::from_utf8(&self.bytes[..length]).unwrap_or("?")
    }
}

impl Hypervisor {
    /// `XENVER_version`.
    pub fn xen_version(&self) -> XenResult<XenVersion> {
        // SAFETY: XENVER_version takes no buffer (the argument is ignored) and changes nothing.
        let packed = unsafe { self.hypercall(number::XEN_VERSION, [XENVER_VERSION, 0, 0, 0, 0]) }?;
        Ok(XenVersion::from_packed(packed as u32))
    }

    /// `XENVER_extraversion`.
    pub fn xen_extraversion(&self) -> XenResult<ExtraVersion> {
        let mut buffer = [0u8; EXTRAVERSION_LEN_BYTES];
        let address = argument_address_mut(&mut buffer);
        // SAFETY: Xen writes exactly XEN_EXTRAVERSION_LEN bytes to the buffer, which lives
        // for the whole call.
        unsafe { self.hypercall(number::XEN_VERSION, [XENVER_EXTRAVERSION, address, 0, 0, 0]) }?;
        Ok(ExtraVersion::from_raw(buffer))
    }

    /// `XENVER_get_features` for one 32-bit submap.
    pub fn xen_features(&self, submap_index: u32) -> XenResult<u32> {
        let mut info = XenFeatureInfo {
            submap_idx: submap_index,
            submap: 0,
        };
        let address = argument_address_mut(&mut info);
        // SAFETY: Xen reads and writes one `xen_feature_info`, which lives for the call.
        unsafe { self.hypercall(number::XEN_VERSION, [XENVER_GET_FEATURES, address, 0, 0, 0]) }?;
        Ok(info.submap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraversion_trims_at_nul() {
        let mut raw = [0u8; 16];
        raw[..2].copy_from_slice(b".7");
        assert_eq!(ExtraVersion::from_raw(raw).as_str(), ".7");
        assert_eq!(
            ExtraVersion::from_raw([b'x'; 16]).as_str(),
            "xxxxxxxxxxxxxxxx"
        );
    }
}
