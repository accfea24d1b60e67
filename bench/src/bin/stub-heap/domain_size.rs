//! The stub domain's size from the heap a run needed: what `init-xenstore-domain --memory`
//! (whole MiB) must give so that the kernel's heap (`src/runtime/heap.rs`) holds that heap
//! plus the engine's guest reserve (`xenstore_engine::memory`).
//!
//! The domain's RAM starts at address 0 and the image is loaded at its `PT_LOAD` segments'
//! physical addresses (from 1 MiB, `linker.ld`); the loader puts the boot data (start info,
//! command line, memory map) above the image; the heap runs from there to the end of populated
//! low RAM, which is the reservation less the pages Xen keeps outside low RAM. Guests stop
//! growing the store when less than [`GUEST_RESERVE_BYTES`] is left, so the heap a run needed
//! serves that run only if that much is left on top of it.

use std::fmt;
use std::path::{Path, PathBuf};

use xenstore_engine::memory::GUEST_RESERVE_BYTES;

/// A page (the heap's bounds are page-aligned).
pub const PAGE_SIZE_BYTES: u64 = 4096;
const MEBIBYTE_BYTES: u64 = 1 << 20;
/// `RESERVATION_PAGES_OUTSIDE_LOW_RAM` of `src/runtime/heap.rs` (the kernel crate is not a
/// host library): the heap ends this many pages below the reservation's size.
pub const RESERVATION_PAGES_OUTSIDE_LOW_RAM: u64 = 16;
/// The boot data above the image: the `hvm_start_info`, the command line (at most 1 KiB with
/// `--param`) and the memory map (a few entries) take part of one page; two are counted.
pub const BOOT_DATA_BYTES: u64 = 2 * PAGE_SIZE_BYTES;
/// Where an image that cannot be read is assumed to end: the README's bound (the image
/// ends below 2 MiB).
pub const ASSUMED_IMAGE_END_BYTES: u64 = 2 * MEBIBYTE_BYTES;

/// `PT_LOAD` in an ELF program header.
const PT_LOAD: u32 = 1;

/// The loaded extent of the kernel image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelImage {
    pub path: PathBuf,
    /// The lowest `p_paddr` of a `PT_LOAD` segment.
    pub load_start_bytes: u64,
    /// The highest `p_paddr + p_memsz` (`.bss` included): where the boot data and the heap
    /// begin.
    pub end_bytes: u64,
    /// The sum of the `PT_LOAD` segments' `p_memsz`.
    pub loaded_bytes: u64,
}

/// Reads the `PT_LOAD` program headers of an ELF64 little-endian image.
pub fn read_kernel_image(path: &Path) -> Result<KernelImage, String> {
    let bytes = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let (load_start_bytes, end_bytes, loaded_bytes) =
        loaded_extent(&bytes).map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(KernelImage {
        path: path.to_path_buf(),
        load_start_bytes,
        end_bytes,
        loaded_bytes,
    })
}

fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(offset..offset + 2)?.try_into().ok()?,
    ))
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(offset..offset + 8)?.try_into().ok()?,
    ))
}

/// (lowest load address, end of the highest segment, sum of the segments' sizes) of the
/// `PT_LOAD` segments, by physical address as Xen's loader places them.
fn loaded_extent(bytes: &[u8]) -> Result<(u64, u64, u64), String> {
    const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
    const CLASS_64: u8 = 2;
    const LITTLE_ENDIAN: u8 = 1;
    const PROGRAM_HEADER_BYTES: usize = 56;
    if bytes.get(..4) != Some(ELF_MAGIC.as_slice()) {
        return Err("not an ELF file (a gzipped image must be unpacked first)".to_string());
    }
    if bytes.get(4) != Some(&CLASS_64) || bytes.get(5) != Some(&LITTLE_ENDIAN) {
        return Err("not a little-endian ELF64 image".to_string());
    }
    let truncated = || "truncated ELF header".to_string();
    let table_offset = read_u64(bytes, 0x20).ok_or_else(truncated)?;
    let entry_bytes = usize::from(read_u16(bytes, 0x36).ok_or_else(truncated)?);
    let entry_count = usize::from(read_u16(bytes, 0x38).ok_or_else(truncated)?);
    if entry_bytes < PROGRAM_HEADER_BYTES {
        return Err(format!("program headers of {entry_bytes} bytes"));
    }
    let table_offset = usize::try_from(table_offset).map_err(|_| truncated())?;
    let mut extent: Option<(u64, u64, u64)> = None;
    for index in 0..entry_count {
        let header = table_offset + index * entry_bytes;
        let truncated = || format!("program header {index} lies beyond the file");
        if read_u32(bytes, header).ok_or_else(truncated)? != PT_LOAD {
            continue;
        }
        let physical_address = read_u64(bytes, header + 24).ok_or_else(truncated)?;
        let memory_bytes = read_u64(bytes, header + 40).ok_or_else(truncated)?;
        let end = physical_address
            .checked_add(memory_bytes)
            .ok_or_else(|| format!("segment {index} ends beyond 2^64"))?;
        let (start, highest_end, total) = extent.unwrap_or((u64::MAX, 0, 0));
        extent = Some((
            start.min(physical_address),
            highest_end.max(end),
            total + memory_bytes,
        ));
    }
    extent.ok_or_else(|| "no PT_LOAD segment".to_string())
}

/// Where the image lies: measured, or assumed when it could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageEnd {
    Measured(KernelImage),
    /// The reason it could not be read; [`ASSUMED_IMAGE_END_BYTES`] is used.
    Assumed(String),
}

impl ImageEnd {
    pub fn end_bytes(&self) -> u64 {
        match self {
            ImageEnd::Measured(image) => image.end_bytes,
            ImageEnd::Assumed(_) => ASSUMED_IMAGE_END_BYTES,
        }
    }
}

/// The image at `path`, or the assumption when it cannot be read.
pub fn image_end(path: &Path) -> ImageEnd {
    match read_kernel_image(path) {
        Ok(image) => ImageEnd::Measured(image),
        Err(error) => ImageEnd::Assumed(error),
    }
}

/// The domain a heap of `heap_needed_bytes` takes, part by part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainSize {
    /// From address 0 to the image's end, page-aligned (the first MiB below the image is
    /// not heap).
    pub image_end_bytes: u64,
    pub boot_data_bytes: u64,
    /// The heap the run needed (its extent).
    pub heap_needed_bytes: u64,
    /// Left free on top of it for the engine's guest reserve.
    pub guest_reserve_bytes: u64,
    /// Counted in the reservation but not in the heap.
    pub outside_low_ram_bytes: u64,
}

impl DomainSize {
    pub fn for_heap(image_end_bytes: u64, heap_needed_bytes: u64) -> DomainSize {
        DomainSize {
            image_end_bytes: image_end_bytes.div_ceil(PAGE_SIZE_BYTES) * PAGE_SIZE_BYTES,
            boot_data_bytes: BOOT_DATA_BYTES,
            heap_needed_bytes: heap_needed_bytes.div_ceil(PAGE_SIZE_BYTES) * PAGE_SIZE_BYTES,
            guest_reserve_bytes: GUEST_RESERVE_BYTES,
            outside_low_ram_bytes: RESERVATION_PAGES_OUTSIDE_LOW_RAM * PAGE_SIZE_BYTES,
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.image_end_bytes
            + self.boot_data_bytes
            + self.heap_needed_bytes
            + self.guest_reserve_bytes
            + self.outside_low_ram_bytes
    }

    /// `init-xenstore-domain --memory` (`XENSTORE_DOMAIN_SIZE`): whole MiB.
    pub fn memory_mebibytes(&self) -> u64 {
        self.total_bytes().div_ceil(MEBIBYTE_BYTES)
    }

    /// The heap a domain of `memory_mebibytes` gives, by the same arithmetic.
    #[cfg(test)]
    pub fn heap_of_domain_bytes(&self, memory_mebibytes: u64) -> u64 {
        (memory_mebibytes * MEBIBYTE_BYTES).saturating_sub(
            self.image_end_bytes + self.boot_data_bytes + self.outside_low_ram_bytes,
        )
    }
}

impl fmt::Display for DomainSize {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mebibytes = |bytes: u64| bytes as f64 / MEBIBYTE_BYTES as f64;
        write!(
            formatter,
            "domain size needed: {} MiB (--memory {}) = image end {:.2} MiB + boot data {} KiB \
             + heap {:.2} MiB + guest reserve {:.2} MiB + {} pages outside low RAM = {:.2} MiB",
            self.memory_mebibytes(),
            self.memory_mebibytes(),
            mebibytes(self.image_end_bytes),
            self.boot_data_bytes / 1024,
            mebibytes(self.heap_needed_bytes),
            mebibytes(self.guest_reserve_bytes),
            self.outside_low_ram_bytes / PAGE_SIZE_BYTES,
            mebibytes(self.total_bytes()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 header and `segments` program headers (type, p_paddr, p_memsz).
    fn elf_with(segments: &[(u32, u64, u64)]) -> Vec<u8> {
        let mut bytes = vec![0u8; 64 + 56 * segments.len()];
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 2;
        bytes[5] = 1;
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (index, &(kind, physical_address, memory_bytes)) in segments.iter().enumerate() {
            let header = 64 + 56 * index;
            bytes[header..header + 4].copy_from_slice(&kind.to_le_bytes());
            bytes[header + 24..header + 32].copy_from_slice(&physical_address.to_le_bytes());
            bytes[header + 40..header + 48].copy_from_slice(&memory_bytes.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn the_image_ends_at_its_highest_loaded_segment() {
        // text, rodata, data+bss, and a PT_NOTE that does not count.
        let bytes = elf_with(&[
            (PT_LOAD, 0x10_0000, 0x5_e93f),
            (PT_LOAD, 0x15_f000, 0x5a8c),
            (PT_LOAD, 0x16_5000, 0x3_3000),
            (4, 0x16_4a50, 0x3c),
        ]);
        assert_eq!(
            loaded_extent(&bytes),
            Ok((0x10_0000, 0x19_8000, 0x5_e93f + 0x5a8c + 0x3_3000))
        );
        assert!(loaded_extent(b"\x1f\x8b gzip").is_err());
        assert!(loaded_extent(&elf_with(&[(4, 0, 1)])).is_err());
        let mut truncated = elf_with(&[(PT_LOAD, 0x10_0000, 0x1000)]);
        truncated.truncate(80);
        assert!(loaded_extent(&truncated).is_err());
    }

    #[test]
    fn the_domain_holds_image_boot_data_heap_reserve_and_special_pages() {
        let size = DomainSize::for_heap(0x19_8000, 3 << 20);
        assert_eq!(
            size.total_bytes(),
            0x19_8000 + 2 * 4096 + (3 << 20) + GUEST_RESERVE_BYTES + 16 * 4096
        );
        // 1.59 + 0.01 + 3 + 1 + 0.06 MiB: 6 MiB.
        assert_eq!(size.memory_mebibytes(), 6);
        assert!(size.heap_of_domain_bytes(6) >= (3 << 20) + GUEST_RESERVE_BYTES);
        assert!(size.heap_of_domain_bytes(5) < (3 << 20) + GUEST_RESERVE_BYTES);
        assert!(
            size.to_string()
                .starts_with("domain size needed: 6 MiB (--memory 6)")
        );
    }
}
