//! Finding Xen through the hypervisor CPUID leaves (`xen/include/public/arch-x86/cpuid.h`).
//!
//! Xen's leaves start "at the first otherwise unused 0x100 aligned boundary starting from
//! 0x40000000" (0x40000100 when Viridian is enabled). Leaf base+0 carries the signature
//! "XenVMMXenVMM" and the largest Xen leaf; base+1 the version; base+2 the hypercall MSR;
//! base+4 (HVM/PVH, Xen >= 4.11) the vCPU id and own domain id.

use crate::types::DomId;

/// The first leaf searched.
pub const FIRST_HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// One past the last leaf base searched (the same bound Xen's own guest code uses).
pub const HYPERVISOR_LEAF_SEARCH_END: u32 = 0x4001_0000;
/// Distance between candidate bases.
pub const HYPERVISOR_LEAF_STRIDE: u32 = 0x100;

/// `XEN_CPUID_SIGNATURE_EBX/ECX/EDX`: "XenV" "MMXe" "nVMM".
pub const XEN_SIGNATURE: [u32; 3] = [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e];

/// Leaf base+4 `eax` flag: `XEN_HVM_CPUID_VCPU_ID_PRESENT` (`ebx` holds the vCPU id).
pub const HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
/// Leaf base+4 `eax` flag: `XEN_HVM_CPUID_DOMID_PRESENT` (`ecx` holds the own domid).
pub const HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;

/// The four registers a CPUID leaf returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidRegisters {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Reads one CPUID leaf (sub-leaf 0).
pub fn read_cpuid(leaf: u32) -> CpuidRegisters {
    // `__cpuid` is a safe intrinsic on x86-64: CPUID exists on every x86-64 CPU and has no
    // side effects beyond a possible VM exit.
    let result = core::arch::x86_64::__cpuid_count(leaf, 0);
    CpuidRegisters {
        eax: result.eax,
        ebx: result.ebx,
        ecx: result.ecx,
        edx: result.edx,
    }
}

/// Whether leaf base+0 registers identify Xen with enough leaves for hypercalls.
///
/// Mini-OS, XTF and Xen's own guest code accept a base only if the signature matches **and**
/// `eax - base >= 2` (the hypercall MSR leaf base+2 exists).
pub const fn is_xen_leaf(base: u32, registers: CpuidRegisters) -> bool {
    registers.ebx == XEN_SIGNATURE[0]
        && registers.ecx == XEN_SIGNATURE[1]
        && registers.edx == XEN_SIGNATURE[2]
        && registers.eax >= base
        && registers.eax - base >= 2
}

/// The location of Xen's CPUID leaves, found by [`XenCpuidLeaves::detect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenCpuidLeaves {
    /// The leaf carrying the "XenVMMXenVMM" signature.
    pub base: u32,
    /// The largest Xen leaf (`eax` of leaf base+0).
    pub max_leaf: u32,
}

/// Xen's version as reported by CPUID leaf base+1 or `XENVER_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct XenVersion {
    pub major: u16,
    pub minor: u16,
}

impl XenVersion {
    /// Decodes `major << 16 | minor`.
    pub const fn from_packed(packed: u32) -> XenVersion {
        XenVersion {
            major: (packed >> 16) as u16,
            minor: (packed & 0xffff) as u16,
        }
    }
}

impl core::fmt::Display for XenVersion {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "{}.{}", self.major, self.minor)
    }
}

impl XenCpuidLeaves {
    /// Searches 0x40000000 + n·0x100 for the Xen signature using `read_leaf`.
    ///
    /// Taking the reader as a parameter keeps the search testable on the host.
    pub fn search(mut read_leaf: impl FnMut(u32) -> CpuidRegisters) -> Option<XenCpuidLeaves> {
        let mut base = FIRST_HYPERVISOR_LEAF;
        while base < HYPERVISOR_LEAF_SEARCH_END {
            let registers = read_leaf(base);
            if is_xen_leaf(base, registers) {
                return Some(XenCpuidLeaves {
                    base,
                    max_leaf: registers.eax,
                });
            }
            base += HYPERVISOR_LEAF_STRIDE;
        }
        None
    }

    /// Searches the running CPU's hypervisor leaves; `None` when not running on Xen.
    pub fn detect() -> Option<XenCpuidLeaves> {
        Self::search(read_cpuid)
    }

    /// Leaf base+1: Xen's version.
    pub fn version(&self) -> XenVersion {
        XenVersion::from_packed(read_cpuid(self.base + 1).eax)
    }

    /// Leaf base+2 `ebx`: the MSR that installs the hypercall page (0x40000000, or 0x40000200
    /// with Viridian).
    pub fn hypercall_page_msr(&self) -> u32 {
        read_cpuid(self.base + 2).ebx
    }

    /// Leaf base+4 `ecx`: the own domain id, if Xen reports it (HVM/PVH, Xen >= 4.11).
    pub fn own_domid(&self) -> Option<DomId> {
        if self.max_leaf < self.base + 4 {
            return None;
        }
        domid_from_hvm_leaf(read_cpuid(self.base + 4))
    }
}

/// Extracts the domid from leaf base+4 registers if `XEN_HVM_CPUID_DOMID_PRESENT` is set.
pub const fn domid_from_hvm_leaf(registers: CpuidRegisters) -> Option<DomId> {
    if registers.eax & HVM_CPUID_DOMID_PRESENT != 0 {
        Some(DomId(registers.ecx as u16))
    } else {
        None
    }
}

/// The CPU vendor, which decides between `vmcall` (Intel) and `vmmcall` (AMD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuVendor {
    Intel,
    Amd,
    Other,
}

impl CpuVendor {
    /// Decodes the vendor string of CPUID leaf 0 (`ebx`, `edx`, `ecx` order).
    pub const fn from_leaf0(registers: CpuidRegisters) -> CpuVendor {
        // "GenuineIntel", "CentaurHauls" and "  Shanghai  " use vmcall; "AuthenticAMD" and
        // "HygonGenuine" use vmmcall (Xen's early_hypercall_setup() makes the same split).
        match (registers.ebx, registers.edx, registers.ecx) {
            (0x756e_6547, 0x4965_6e69, 0x6c65_746e) => CpuVendor::Intel,
            (0x746e_6543, 0x4872_7561, 0x736c_7561) => CpuVendor::Intel,
            (0x6853_2020, 0x6867_6e61, 0x2020_6961) => CpuVendor::Intel,
            (0x6874_7541, 0x6974_6e65, 0x444d_4163) => CpuVendor::Amd,
            (0x6f67_7948, 0x6e65_476e, 0x656e_6975) => CpuVendor::Amd,
            _ => CpuVendor::Other,
        }
    }

    /// The vendor of the running CPU.
    pub fn detect() -> CpuVendor {
        Self::from_leaf0(read_cpuid(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xen_at(base: u32, max_leaf: u32) -> impl FnMut(u32) -> CpuidRegisters {
        move |leaf| {
            if leaf == base {
                CpuidRegisters {
                    eax: max_leaf,
                    ebx: XEN_SIGNATURE[0],
                    ecx: XEN_SIGNATURE[1],
                    edx: XEN_SIGNATURE[2],
                }
            } else {
                CpuidRegisters {
                    eax: 0,
                    ebx: 0,
                    ecx: 0,
                    edx: 0,
                }
            }
        }
    }

    #[test]
    fn signature_spells_xen_vmm() {
        let mut bytes = [0u8; 12];
        for (index, word) in XEN_SIGNATURE.iter().enumerate() {
            bytes[index * 4..index * 4 + 4].copy_from_slice(&word.to_le_bytes());
        }
        assert_eq!(&bytes, b"XenVMMXenVMM");
    }

    #[test]
    fn finds_xen_at_the_first_base() {
        let found = XenCpuidLeaves::search(xen_at(0x4000_0000, 0x4000_0005));
        assert_eq!(
            found,
            Some(XenCpuidLeaves {
                base: 0x4000_0000,
                max_leaf: 0x4000_0005
            })
        );
    }

    #[test]
    fn finds_xen_behind_viridian() {
        let found = XenCpuidLeaves::search(xen_at(0x4000_0100, 0x4000_0105));
        assert_eq!(found.map(|leaves| leaves.base), Some(0x4000_0100));
    }

    #[test]
    fn rejects_xen_without_the_msr_leaf() {
        assert_eq!(
            XenCpuidLeaves::search(xen_at(0x4000_0000, 0x4000_0001)),
            None
        );
    }

    #[test]
    fn no_hypervisor_means_none() {
        let nothing = |_| CpuidRegisters {
            eax: 0,
            ebx: 0,
            ecx: 0,
            edx: 0,
        };
        assert_eq!(XenCpuidLeaves::search(nothing), None);
    }

    #[test]
    fn version_and_domid_decode() {
        assert_eq!(
            XenVersion::from_packed(0x0004_0011),
            XenVersion {
                major: 4,
                minor: 17
            }
        );
        let leaf4 = CpuidRegisters {
            eax: HVM_CPUID_DOMID_PRESENT,
            ebx: 0,
            ecx: 7,
            edx: 0,
        };
        assert_eq!(domid_from_hvm_leaf(leaf4), Some(DomId(7)));
        let without = CpuidRegisters {
            eax: HVM_CPUID_VCPU_ID_PRESENT,
            ebx: 0,
            ecx: 7,
            edx: 0,
        };
        assert_eq!(domid_from_hvm_leaf(without), None);
    }

    #[test]
    fn vendor_strings_decode() {
        // (ebx, ecx, edx) of leaf 0: "AuthenticAMD", "GenuineIntel".
        let vendors = [
            ((0x6874_7541, 0x444d_4163, 0x6974_6e65), CpuVendor::Amd),
            ((0x756e_6547, 0x6c65_746e, 0x4965_6e69), CpuVendor::Intel),
        ];
        for ((ebx, ecx, edx), vendor) in vendors {
            let registers = CpuidRegisters {
                eax: 0xd,
                ebx,
                ecx,
                edx,
            };
            assert_eq!(CpuVendor::from_leaf0(registers), vendor);
        }
    }
}
