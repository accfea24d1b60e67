//! The guest-physical memory map: from the start info, else `XENMEM_memory_map`.
//!
//! `init-xenstore-domain` gives the stub no map in its start info (`memmap_entries == 0`),
//! but sets one with `xc_domain_set_memory_map()` that `XENMEM_memory_map` returns as packed
//! 20-byte E820 entries (docs/xen-interface.md, "Memory map"). Only `--memory` MiB of the
//! RAM entry are populated (`XENMEM_current_reservation` says how many pages are backed).

use core::fmt;

use heapless::Vec;
use xen_hypercall::memory::E820Entry;

/// Region types (`XEN_HVM_MEMMAP_TYPE_*`, which use the E820/ACPI numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    Ram,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Unusable,
    Disabled,
    PersistentMemory,
    Other(u32),
}

impl MemoryKind {
    /// Decodes an E820 / `hvm_memmap_table_entry` type number.
    pub const fn from_e820_type(entry_type: u32) -> MemoryKind {
        match entry_type {
            1 => MemoryKind::Ram,
            2 => MemoryKind::Reserved,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Unusable,
            6 => MemoryKind::Disabled,
            7 => MemoryKind::PersistentMemory,
            other => MemoryKind::Other(other),
        }
    }

    /// The E820 type number (the inverse of [`MemoryKind::from_e820_type`]).
    pub const fn e820_type(self) -> u32 {
        match self {
            MemoryKind::Ram => 1,
            MemoryKind::Reserved => 2,
            MemoryKind::AcpiReclaimable => 3,
            MemoryKind::AcpiNvs => 4,
            MemoryKind::Unusable => 5,
            MemoryKind::Disabled => 6,
            MemoryKind::PersistentMemory => 7,
            MemoryKind::Other(other) => other,
        }
    }
}

/// One region of guest-physical address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub start: u64,
    pub size_bytes: u64,
    pub kind: MemoryKind,
}

impl MemoryRegion {
    /// One past the last byte (saturating, so hostile sizes cannot wrap).
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.size_bytes)
    }

    /// Whether `address` lies inside the region.
    pub const fn contains(&self, address: u64) -> bool {
        address >= self.start && address < self.end()
    }

    /// Whether the region shares any byte with `[start, end)`.
    pub const fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end()
    }
}

impl From<E820Entry> for MemoryRegion {
    fn from(entry: E820Entry) -> Self {
        // Copy out of the packed struct before use (no references to packed fields).
        let E820Entry {
            addr,
            size,
            entry_type,
        } = entry;
        MemoryRegion {
            start: addr,
            size_bytes: size,
            kind: MemoryKind::from_e820_type(entry_type),
        }
    }
}

/// Where the map came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryMapSource {
    StartInfo,
    XenMemoryMapHypercall,
}

impl fmt::Display for MemoryMapSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            MemoryMapSource::StartInfo => "start info",
            MemoryMapSource::XenMemoryMapHypercall => "XENMEM_memory_map",
        })
    }
}

/// Most regions kept.
pub const MAX_MEMORY_REGIONS: usize = 64;

/// The memory map the kernel works with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryMap {
    pub regions: Vec<MemoryRegion, MAX_MEMORY_REGIONS>,
    pub source: MemoryMapSource,
}

impl MemoryMap {
    /// Builds a map from regions (extra regions beyond the capacity are dropped).
    pub fn from_regions(
        regions: impl IntoIterator<Item = MemoryRegion>,
        source: MemoryMapSource,
    ) -> MemoryMap {
        let mut kept = Vec::new();
        for region in regions {
            if kept.push(region).is_err() {
                break;
            }
        }
        MemoryMap {
            regions: kept,
            source,
        }
    }

    /// Total bytes of RAM regions.
    pub fn total_ram_bytes(&self) -> u64 {
        self.regions
            .iter()
            .filter(|region| region.kind == MemoryKind::Ram)
            .fold(0u64, |total, region| {
                total.saturating_add(region.size_bytes)
            })
    }

    /// The RAM region containing `address`, if any.
    pub fn ram_region_containing(&self, address: u64) -> Option<MemoryRegion> {
        self.regions
            .iter()
            .copied()
            .find(|region| region.kind == MemoryKind::Ram && region.contains(address))
    }

    /// Whether no region (of any kind) touches `[start, end)`.
    pub fn is_hole(&self, start: u64, end: u64) -> bool {
        !self
            .regions
            .iter()
            .any(|region| region.overlaps(start, end))
    }
}

/// Retrieves the map with `XENMEM_memory_map` (kernel only).
#[cfg(target_os = "none")]
pub fn read_memory_map_from_xen(
    hypervisor: &xen_hypercall::Hypervisor,
) -> xen_hypercall::XenResult<MemoryMap> {
    let mut entries = [E820Entry::default(); MAX_MEMORY_REGIONS];
    let count = hypervisor.memory_map(&mut entries)?;
    Ok(MemoryMap::from_regions(
        entries.iter().take(count).copied().map(MemoryRegion::from),
        MemoryMapSource::XenMemoryMapHypercall,
    ))
}

/// The map init-xenstore-domain sets for a stub domain with `ram_bytes` of RAM from frame 0
/// (docs/xen-interface.md, "Memory map"): that RAM entry and the special pages' entry at
/// 0xfeff8000. For the tests of every module that plans memory from the map.
#[cfg(test)]
pub(crate) fn stub_domain_map_with_ram(ram_bytes: u64) -> MemoryMap {
    MemoryMap::from_regions(
        [
            MemoryRegion {
                start: 0,
                size_bytes: ram_bytes,
                kind: MemoryKind::Ram,
            },
            MemoryRegion {
                start: 0xfeff_8000,
                size_bytes: 0x8000,
                kind: MemoryKind::Reserved,
            },
        ],
        MemoryMapSource::XenMemoryMapHypercall,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map init-xenstore-domain sets for `--memory 8`.
    fn stub_domain_map() -> MemoryMap {
        stub_domain_map_with_ram(8 << 20)
    }

    #[test]
    fn sums_ram_and_finds_regions() {
        let map = stub_domain_map();
        assert_eq!(map.total_ram_bytes(), 8 << 20);
        assert_eq!(
            map.ram_region_containing(0x10_0000)
                .map(|region| region.end()),
            Some(8 << 20)
        );
        assert_eq!(map.ram_region_containing(0xfeff_8000), None);
    }

    #[test]
    fn holes_are_free_of_every_region() {
        let map = stub_domain_map();
        assert!(map.is_hole(1 << 32, (1 << 32) + 4096));
        assert!(!map.is_hole(0xfeff_f000, 0xff00_0000));
        assert!(!map.is_hole(0x7f_f000, 0x80_1000));
    }

    #[test]
    fn converts_packed_e820_entries() {
        let entry = E820Entry {
            addr: 0x1000,
            size: 0x2000,
            entry_type: 3,
        };
        assert_eq!(
            MemoryRegion::from(entry),
            MemoryRegion {
                start: 0x1000,
                size_bytes: 0x2000,
                kind: MemoryKind::AcpiReclaimable
            }
        );
        assert_eq!(MemoryKind::from_e820_type(99), MemoryKind::Other(99));
    }

    #[test]
    fn hostile_sizes_saturate() {
        let region = MemoryRegion {
            start: u64::MAX - 1,
            size_bytes: 10,
            kind: MemoryKind::Ram,
        };
        assert_eq!(region.end(), u64::MAX);
    }
}
