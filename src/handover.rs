//! A live update's new image: checking the uploaded PVH ELF and staging it, with its start info and the state, for the jump.
//!
//! The new image is loaded where it is linked and entered at its PVH entry, as Xen's loader
//! would have done (docs/live-update.md, "The handover"). Everything it will find in memory
//! is built here, in one buffer that mirrors the destination from the image's lowest address
//! up: the loadable segments (their file bytes, the rest zero: .bss), then, page aligned, a
//! version-1 `hvm_start_info`, one module entry, the memory map, the command line, and the
//! migration stream as module 0. The trampoline (`boot/handover_trampoline.s`) copies that
//! buffer to its place in one forward copy and jumps. Nothing here touches memory or Xen, so
//! it is unit-tested on the host; a check that fails here leaves the old image serving.

use alloc::vec::Vec;
use core::fmt;

use crate::xen::memory_map::MemoryRegion;
use crate::xen::start_info::{
    MEMMAP_ENTRY_SIZE_BYTES, MODLIST_ENTRY_SIZE_BYTES, START_INFO_MAGIC, START_INFO_V1_SIZE_BYTES,
};

/// `PT_LOAD` (ELF specification).
const PROGRAM_LOAD: u32 = 1;
/// `PT_NOTE`.
const PROGRAM_NOTE: u32 = 4;
/// `XEN_ELFNOTE_PHYS32_ENTRY` (docs/xen-interface.md, "PVH boot"): the 32-bit entry.
const NOTE_PHYS32_ENTRY: u32 = 18;
/// `EM_X86_64`.
const MACHINE_X86_64: u16 = 62;
/// `ET_EXEC`.
const TYPE_EXECUTABLE: u16 = 2;
/// Size of an ELF64 header and of one program header.
const ELF_HEADER_SIZE_BYTES: usize = 64;
const PROGRAM_HEADER_SIZE_BYTES: usize = 56;
/// Most program headers accepted (ours has four).
const PROGRAM_HEADERS_MAX: usize = 32;
const PAGE_SIZE_BYTES: u64 = 4096;
/// The start info's version: 1 has the memory map.
const START_INFO_VERSION: u32 = 1;
/// The argument that tells the new image to restore the state (C xenstored's `-U`, long form).
pub const LIVE_UPDATE_ARGUMENT: &str = "--live-update";

/// A loadable segment of the new image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    physical_address: u64,
    file_offset: usize,
    file_size_bytes: usize,
    memory_size_bytes: u64,
}

/// The new image, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewImage {
    /// The 32-bit PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY`).
    pub entry: u32,
    /// The lowest and one past the highest guest-physical address it occupies (.bss included).
    pub load_start: u64,
    pub load_end: u64,
    segments: Vec<Segment>,
}

/// Where the new image may go: what memory the handover may overwrite.
#[derive(Clone, Copy, Debug)]
pub struct ImageLimits {
    /// No segment below this (the PVH convention: 1 MiB, above the legacy area).
    pub lowest_address: u64,
    /// Everything (image, start info, state) must end below this: populated RAM that the
    /// trampoline can reach with paging off, and that leaves the new image a heap.
    pub highest_end: u64,
}

/// Why an uploaded image cannot be started. The texts are the replies `xenstore-control`
/// prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    NotElf,
    NotX86_64Executable,
    BadProgramHeaders,
    SegmentOutsideFile,
    NoLoadableSegment,
    NoPvhEntry,
    EntryOutsideImage,
    /// The image, or the image with its state, does not fit where it must go.
    DoesNotFit {
        end: u64,
        limit: u64,
    },
    BelowLowestAddress,
    OutOfMemory,
}

impl fmt::Display for ImageError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::NotElf => write!(formatter, "the new image is not an ELF64 file"),
            ImageError::NotX86_64Executable => {
                write!(formatter, "the new image is not an x86-64 executable")
            }
            ImageError::BadProgramHeaders => {
                write!(formatter, "the new image's program headers are unreadable")
            }
            ImageError::SegmentOutsideFile => {
                write!(
                    formatter,
                    "a segment of the new image lies outside the file"
                )
            }
            ImageError::NoLoadableSegment => {
                write!(formatter, "the new image has no loadable segment")
            }
            ImageError::NoPvhEntry => write!(
                formatter,
                "the new image has no PVH entry (XEN_ELFNOTE_PHYS32_ENTRY)"
            ),
            ImageError::EntryOutsideImage => {
                write!(
                    formatter,
                    "the new image's PVH entry lies outside its segments"
                )
            }
            ImageError::DoesNotFit { end, limit } => write!(
                formatter,
                "the new image and the state would end at {end:#x}, beyond {limit:#x}: too little memory"
            ),
            ImageError::BelowLowestAddress => {
                write!(formatter, "the new image would load below 1 MiB")
            }
            ImageError::OutOfMemory => {
                write!(formatter, "too little memory to stage the new image")
            }
        }
    }
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    let field = bytes.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_le_bytes(field.try_into().ok()?))
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    let field = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(field.try_into().ok()?))
}

fn page_align_up(address: u64) -> Option<u64> {
    Some(address.checked_add(PAGE_SIZE_BYTES - 1)? & !(PAGE_SIZE_BYTES - 1))
}

/// Checks that `bytes` is a PVH kernel this stub can start in its place: an x86-64 ELF
/// executable whose loadable segments lie inside the file and inside `limits`, with a
/// `XEN_ELFNOTE_PHYS32_ENTRY` note naming an address inside them (what Xen's loader checks,
/// docs/xen-interface.md, "PVH boot").
pub fn check_image(bytes: &[u8], limits: ImageLimits) -> Result<NewImage, ImageError> {
    if bytes.len() < ELF_HEADER_SIZE_BYTES || bytes.get(0..4) != Some(b"\x7fELF".as_slice()) {
        return Err(ImageError::NotElf);
    }
    // EI_CLASS 2 (64-bit), EI_DATA 1 (little-endian).
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err(ImageError::NotElf);
    }
    if u16_at(bytes, 16) != Some(TYPE_EXECUTABLE) || u16_at(bytes, 18) != Some(MACHINE_X86_64) {
        return Err(ImageError::NotX86_64Executable);
    }
    let table_offset = u64_at(bytes, 32).ok_or(ImageError::BadProgramHeaders)?;
    let entry_size = u16_at(bytes, 54).ok_or(ImageError::BadProgramHeaders)?;
    let entry_count = u16_at(bytes, 56).ok_or(ImageError::BadProgramHeaders)?;
    if usize::from(entry_size) != PROGRAM_HEADER_SIZE_BYTES
        || entry_count == 0
        || usize::from(entry_count) > PROGRAM_HEADERS_MAX
    {
        return Err(ImageError::BadProgramHeaders);
    }
    let table_offset = usize::try_from(table_offset).map_err(|_| ImageError::BadProgramHeaders)?;
    let mut segments: Vec<Segment> = Vec::new();
    segments
        .try_reserve_exact(usize::from(entry_count))
        .map_err(|_| ImageError::OutOfMemory)?;
    let mut entry = None;
    for index in 0..usize::from(entry_count) {
        let header = table_offset
            .checked_add(index * PROGRAM_HEADER_SIZE_BYTES)
            .and_then(|start| bytes.get(start..start.checked_add(PROGRAM_HEADER_SIZE_BYTES)?))
            .ok_or(ImageError::BadProgramHeaders)?;
        let kind = u32_at(header, 0).ok_or(ImageError::BadProgramHeaders)?;
        let file_offset = u64_at(header, 8).ok_or(ImageError::BadProgramHeaders)?;
        let physical_address = u64_at(header, 24).ok_or(ImageError::BadProgramHeaders)?;
        let file_size = u64_at(header, 32).ok_or(ImageError::BadProgramHeaders)?;
        let memory_size = u64_at(header, 40).ok_or(ImageError::BadProgramHeaders)?;
        let file_range = usize::try_from(file_offset)
            .ok()
            .zip(usize::try_from(file_size).ok())
            .and_then(|(start, size)| Some((start, start.checked_add(size)?)))
            .filter(|(_, end)| *end <= bytes.len())
            .ok_or(ImageError::SegmentOutsideFile)?;
        match kind {
            PROGRAM_LOAD if memory_size > 0 => {
                if file_size > memory_size {
                    return Err(ImageError::SegmentOutsideFile);
                }
                segments.push(Segment {
                    physical_address,
                    file_offset: file_range.0,
                    file_size_bytes: file_range.1 - file_range.0,
                    memory_size_bytes: memory_size,
                });
            }
            PROGRAM_NOTE => {
                if let Some(found) = bytes
                    .get(file_range.0..file_range.1)
                    .and_then(find_phys32_entry)
                {
                    entry = Some(found);
                }
            }
            _ => {}
        }
    }
    let load_start = segments
        .iter()
        .map(|segment| segment.physical_address)
        .min()
        .ok_or(ImageError::NoLoadableSegment)?;
    let mut load_end = 0u64;
    for segment in &segments {
        let end = segment
            .physical_address
            .checked_add(segment.memory_size_bytes)
            .ok_or(ImageError::DoesNotFit {
                end: u64::MAX,
                limit: limits.highest_end,
            })?;
        load_end = load_end.max(end);
    }
    if load_start < limits.lowest_address {
        return Err(ImageError::BelowLowestAddress);
    }
    if load_end > limits.highest_end {
        return Err(ImageError::DoesNotFit {
            end: load_end,
            limit: limits.highest_end,
        });
    }
    let entry = entry.ok_or(ImageError::NoPvhEntry)?;
    let entry_inside = segments.iter().any(|segment| {
        entry >= segment.physical_address
            && entry - segment.physical_address < segment.memory_size_bytes
    });
    let entry = u32::try_from(entry)
        .ok()
        .filter(|_| entry_inside)
        .ok_or(ImageError::EntryOutsideImage)?;
    Ok(NewImage {
        entry,
        load_start,
        load_end,
        segments,
    })
}

/// The `XEN_ELFNOTE_PHYS32_ENTRY` value in a `PT_NOTE` segment's bytes, if any: notes are
/// `namesz`, `descsz`, `type`, the name and the descriptor, each padded to 4 bytes. The
/// descriptor is 4 or 8 bytes (Xen reads either; ours writes 8).
fn find_phys32_entry(notes: &[u8]) -> Option<u64> {
    let mut offset = 0usize;
    while offset.checked_add(12)? <= notes.len() {
        let name_size = usize::try_from(u32_at(notes, offset)?).ok()?;
        let descriptor_size = usize::try_from(u32_at(notes, offset + 4)?).ok()?;
        let kind = u32_at(notes, offset + 8)?;
        let name_start = offset + 12;
        let descriptor_start = name_start.checked_add(name_size.checked_next_multiple_of(4)?)?;
        let next = descriptor_start.checked_add(descriptor_size.checked_next_multiple_of(4)?)?;
        let name = notes.get(name_start..name_start.checked_add(name_size)?)?;
        if kind == NOTE_PHYS32_ENTRY && name == b"Xen\0" {
            return match descriptor_size {
                4 => u32_at(notes, descriptor_start).map(u64::from),
                8 => u64_at(notes, descriptor_start),
                _ => None,
            };
        }
        offset = next;
    }
    None
}

/// The buffer the trampoline copies to [`NewImage::load_start`], and where in it the start
/// info lies once copied.
pub struct StagedImage {
    /// The bytes, as they must lie from `destination` up.
    pub bytes: Vec<u8>,
    pub destination: u64,
    pub start_info_address: u64,
    /// Where the state lands (module 0).
    pub state_address: u64,
}

/// Everything the new image is started with.
pub struct Handover<'a> {
    pub command_line: &'a [u8],
    pub memory_map: &'a [MemoryRegion],
    pub state: &'a [u8],
}

/// Builds the staged image: the segments of `image` (from `image_bytes`, checked by
/// [`check_image`]), then at the next page the start info, module entry, memory map, command
/// line and state. Fails with [`ImageError::DoesNotFit`] when the whole would pass
/// `limits.highest_end`, and [`ImageError::OutOfMemory`] when the buffer cannot be had.
pub fn stage(
    image_bytes: &[u8],
    image: &NewImage,
    handover: &Handover<'_>,
    limits: ImageLimits,
) -> Result<StagedImage, ImageError> {
    let too_big = ImageError::DoesNotFit {
        end: u64::MAX,
        limit: limits.highest_end,
    };
    let start_info_address = page_align_up(image.load_end).ok_or(too_big)?;
    let module_entry_address = start_info_address + START_INFO_V1_SIZE_BYTES as u64;
    let memory_map_address = module_entry_address + MODLIST_ENTRY_SIZE_BYTES;
    let memory_map_size = (handover.memory_map.len() as u64)
        .checked_mul(MEMMAP_ENTRY_SIZE_BYTES as u64)
        .ok_or(too_big)?;
    let command_line_address = memory_map_address
        .checked_add(memory_map_size)
        .ok_or(too_big)?;
    let state_address = command_line_address
        .checked_add(handover.command_line.len() as u64 + 1)
        .and_then(|end| end.checked_next_multiple_of(8))
        .ok_or(too_big)?;
    let end = state_address
        .checked_add(handover.state.len() as u64)
        .ok_or(too_big)?;
    if end > limits.highest_end {
        return Err(ImageError::DoesNotFit {
            end,
            limit: limits.highest_end,
        });
    }
    let length = usize::try_from(end - image.load_start).map_err(|_| too_big)?;
    let offset_of = |address: u64| (address - image.load_start) as usize;
    let mut bytes: Vec<u8> = Vec::new();
    bytes
        .try_reserve_exact(length)
        .map_err(|_| ImageError::OutOfMemory)?;
    bytes.resize(length, 0);
    for segment in &image.segments {
        let source = image_bytes
            .get(segment.file_offset..segment.file_offset + segment.file_size_bytes)
            .ok_or(ImageError::SegmentOutsideFile)?;
        let start = offset_of(segment.physical_address);
        bytes
            .get_mut(start..start + source.len())
            .ok_or(too_big)?
            .copy_from_slice(source);
    }
    let mut put = |address: u64, field: &[u8]| {
        let start = offset_of(address);
        if let Some(target) = bytes.get_mut(start..start + field.len()) {
            target.copy_from_slice(field);
        }
    };
    // struct hvm_start_info, version 1 (docs/xen-interface.md, "PVH boot").
    put(start_info_address, &START_INFO_MAGIC.to_le_bytes());
    put(start_info_address + 4, &START_INFO_VERSION.to_le_bytes());
    put(start_info_address + 8, &0u32.to_le_bytes()); // flags
    put(start_info_address + 12, &1u32.to_le_bytes()); // nr_modules
    put(start_info_address + 16, &module_entry_address.to_le_bytes());
    put(start_info_address + 24, &command_line_address.to_le_bytes());
    put(start_info_address + 32, &0u64.to_le_bytes()); // rsdp_paddr
    put(start_info_address + 40, &memory_map_address.to_le_bytes());
    put(
        start_info_address + 48,
        &(handover.memory_map.len() as u32).to_le_bytes(),
    );
    // struct hvm_modlist_entry: the state, no command line of its own.
    put(module_entry_address, &state_address.to_le_bytes());
    put(
        module_entry_address + 8,
        &(handover.state.len() as u64).to_le_bytes(),
    );
    for (index, region) in handover.memory_map.iter().enumerate() {
        let entry = memory_map_address + (index * MEMMAP_ENTRY_SIZE_BYTES) as u64;
        put(entry, &region.start.to_le_bytes());
        put(entry + 8, &region.size_bytes.to_le_bytes());
        put(entry + 16, &region.kind.e820_type().to_le_bytes());
    }
    put(command_line_address, handover.command_line);
    put(state_address, handover.state);
    Ok(StagedImage {
        bytes,
        destination: image.load_start,
        start_info_address,
        state_address,
    })
}

/// The new image's command line (C xenstored's `lu_activate_binary`): the administrator's
/// `-c` text when given, else the running image's; with [`LIVE_UPDATE_ARGUMENT`] added
/// unless it (or C's `-U`) is there already. `None` when the buffer cannot be had.
pub fn new_command_line(running: &[u8], given: Option<&[u8]>) -> Option<Vec<u8>> {
    let base = given.unwrap_or(running);
    let has_flag = base
        .split(|byte| byte.is_ascii_whitespace())
        .any(|word| word == b"-U" || word == LIVE_UPDATE_ARGUMENT.as_bytes());
    let mut line = Vec::new();
    line.try_reserve_exact(base.len() + LIVE_UPDATE_ARGUMENT.len() + 1)
        .ok()?;
    line.extend_from_slice(base);
    if !has_flag {
        if !line.is_empty() {
            line.push(b' ');
        }
        line.extend_from_slice(LIVE_UPDATE_ARGUMENT.as_bytes());
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xen::memory_map::MemoryKind;
    use crate::xen::start_info::{PhysicalMemory, UnreadableMemory, parse_start_info};

    const LIMITS: ImageLimits = ImageLimits {
        lowest_address: 0x10_0000,
        highest_end: 0x80_0000,
    };

    /// A minimal PVH ELF: one text segment at 1 MiB (16 bytes of file data, 0x3000 in
    /// memory) and a note segment with the entry `entry` (`descriptor_size` 4 or 8).
    fn elf(entry: u64, descriptor_size: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x200];
        bytes[0..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 2;
        bytes[5] = 1;
        bytes[16..18].copy_from_slice(&TYPE_EXECUTABLE.to_le_bytes());
        bytes[18..20].copy_from_slice(&MACHINE_X86_64.to_le_bytes());
        bytes[32..40].copy_from_slice(&64u64.to_le_bytes());
        bytes[54..56].copy_from_slice(&56u16.to_le_bytes());
        bytes[56..58].copy_from_slice(&2u16.to_le_bytes());
        let header = |bytes: &mut Vec<u8>,
                      at: usize,
                      kind: u32,
                      offset: u64,
                      address: u64,
                      file: u64,
                      memory: u64| {
            bytes[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            bytes[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            bytes[at + 24..at + 32].copy_from_slice(&address.to_le_bytes());
            bytes[at + 32..at + 40].copy_from_slice(&file.to_le_bytes());
            bytes[at + 40..at + 48].copy_from_slice(&memory.to_le_bytes());
        };
        header(&mut bytes, 64, PROGRAM_LOAD, 0x100, 0x10_0000, 16, 0x3000);
        let note_size = 12 + 4 + u64::from(descriptor_size);
        header(
            &mut bytes,
            120,
            PROGRAM_NOTE,
            0x180,
            0,
            note_size,
            note_size,
        );
        for (index, byte) in bytes[0x100..0x110].iter_mut().enumerate() {
            *byte = 0xa0 + index as u8;
        }
        bytes[0x180..0x184].copy_from_slice(&4u32.to_le_bytes());
        bytes[0x184..0x188].copy_from_slice(&descriptor_size.to_le_bytes());
        bytes[0x188..0x18c].copy_from_slice(&NOTE_PHYS32_ENTRY.to_le_bytes());
        bytes[0x18c..0x190].copy_from_slice(b"Xen\0");
        bytes[0x190..0x198].copy_from_slice(&entry.to_le_bytes());
        bytes
    }

    #[test]
    fn a_pvh_image_is_accepted_with_its_entry_and_extent() {
        for descriptor_size in [4, 8] {
            let image = check_image(&elf(0x10_0004, descriptor_size), LIMITS).unwrap();
            assert_eq!(image.entry, 0x10_0004);
            assert_eq!((image.load_start, image.load_end), (0x10_0000, 0x10_3000));
        }
    }

    #[test]
    fn garbage_and_broken_images_are_refused() {
        assert_eq!(check_image(b"garbage", LIMITS), Err(ImageError::NotElf));
        assert_eq!(check_image(&[0x5a; 4096], LIMITS), Err(ImageError::NotElf));
        let mut wrong_machine = elf(0x10_0004, 8);
        wrong_machine[18] = 3;
        assert_eq!(
            check_image(&wrong_machine, LIMITS),
            Err(ImageError::NotX86_64Executable)
        );
        assert_eq!(
            check_image(&elf(0x20_0000, 8), LIMITS),
            Err(ImageError::EntryOutsideImage)
        );
        let mut no_note = elf(0x10_0004, 8);
        no_note[0x188] = 17;
        assert_eq!(check_image(&no_note, LIMITS), Err(ImageError::NoPvhEntry));
        let mut cut = elf(0x10_0004, 8);
        cut.truncate(0x150);
        assert_eq!(
            check_image(&cut, LIMITS),
            Err(ImageError::SegmentOutsideFile)
        );
        let mut headers_beyond = elf(0x10_0004, 8);
        headers_beyond[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            check_image(&headers_beyond, LIMITS),
            Err(ImageError::BadProgramHeaders)
        );
        let small = ImageLimits {
            highest_end: 0x10_2000,
            ..LIMITS
        };
        assert!(matches!(
            check_image(&elf(0x10_0004, 8), small),
            Err(ImageError::DoesNotFit { .. })
        ));
        let high = ImageLimits {
            lowest_address: 0x20_0000,
            ..LIMITS
        };
        assert_eq!(
            check_image(&elf(0x10_0004, 8), high),
            Err(ImageError::BelowLowestAddress)
        );
        // Every prefix of a good image is refused, never a panic.
        let good = elf(0x10_0004, 8);
        for length in 0..0x198 {
            assert!(
                check_image(&good[..length], LIMITS).is_err(),
                "prefix {length}"
            );
        }
    }

    /// The staged bytes as guest memory at `destination`.
    struct Staged<'a>(&'a StagedImage);

    impl PhysicalMemory for Staged<'_> {
        fn read(&self, address: u64, buffer: &mut [u8]) -> Result<(), UnreadableMemory> {
            let unreadable = UnreadableMemory {
                address,
                length_bytes: buffer.len() as u64,
            };
            let start = address.checked_sub(self.0.destination).ok_or(unreadable)? as usize;
            // Memory goes on past the staged bytes (string reads read ahead): zeros.
            let source = self.0.bytes.get(start..).ok_or(unreadable)?;
            buffer.fill(0);
            let length = buffer.len().min(source.len());
            buffer[..length].copy_from_slice(&source[..length]);
            Ok(())
        }
    }

    #[test]
    fn the_staged_image_carries_segments_start_info_and_state() {
        let bytes = elf(0x10_0004, 8);
        let image = check_image(&bytes, LIMITS).unwrap();
        let memory_map = [
            MemoryRegion {
                start: 0,
                size_bytes: 0x80_0000,
                kind: MemoryKind::Ram,
            },
            MemoryRegion {
                start: 0xfeff_8000,
                size_bytes: 0x8000,
                kind: MemoryKind::Reserved,
            },
        ];
        let state = b"xenstore state bytes";
        let handover = Handover {
            command_line: b"--event 3 --live-update",
            memory_map: &memory_map,
            state,
        };
        let staged = stage(&bytes, &image, &handover, LIMITS).unwrap();
        assert_eq!(staged.destination, 0x10_0000);
        assert_eq!(&staged.bytes[..16], &bytes[0x100..0x110]);
        assert!(
            staged.bytes[16..0x3000].iter().all(|byte| *byte == 0),
            ".bss is zero"
        );
        assert_eq!(staged.start_info_address, 0x10_3000);
        let info = parse_start_info(&Staged(&staged), staged.start_info_address).unwrap();
        assert_eq!(info.command_line.as_slice(), b"--event 3 --live-update");
        assert_eq!(info.memory_map.as_slice(), &memory_map);
        assert_eq!(info.modules.len(), 1);
        let module = info.modules[0];
        assert_eq!(
            (module.address, module.size_bytes),
            (staged.state_address, state.len() as u64)
        );
        let offset = (module.address - staged.destination) as usize;
        assert_eq!(&staged.bytes[offset..offset + state.len()], state);
        assert_eq!(info.boot_data_end, module.address + state.len() as u64);
        assert_eq!(
            staged.destination + staged.bytes.len() as u64,
            info.boot_data_end
        );
        let tight = ImageLimits {
            highest_end: info.boot_data_end - 1,
            ..LIMITS
        };
        assert!(matches!(
            stage(&bytes, &image, &handover, tight),
            Err(ImageError::DoesNotFit { .. })
        ));
    }

    #[test]
    fn the_new_command_line_asks_for_the_restore_once() {
        assert_eq!(
            new_command_line(b"--event 5 -T x", None).unwrap(),
            b"--event 5 -T x --live-update"
        );
        assert_eq!(
            new_command_line(b"--event 5 --live-update", None).unwrap(),
            b"--event 5 --live-update"
        );
        assert_eq!(
            new_command_line(b"--event 5", Some(b"-U --verbose")).unwrap(),
            b"-U --verbose"
        );
        assert_eq!(new_command_line(b"", None).unwrap(), b"--live-update");
    }
}
