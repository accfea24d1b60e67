//! `struct hvm_start_info` parsing (`xen/include/public/arch-x86/hvm/start_info.h`).
//!
//! At the PVH entry `%ebx` holds the guest-physical address of the start info. The loader
//! (libxc, or QEMU's PVH option ROM) puts it, the command line, the module list and the
//! memory map in RAM just above the kernel image; everything is copied out here into a
//! [`BootInfo`] so that the memory can be reused as heap. Parsing goes through the
//! [`PhysicalMemory`] trait so that it is unit-tested over byte buffers on the host.

use core::fmt;

use heapless::Vec;

use super::memory_map::{MemoryKind, MemoryRegion};

/// `XEN_HVM_START_MAGIC_VALUE`: "xEn3" with the 0x80 bit set on 'E'.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Size of the version-0 structure (up to and including `rsdp_paddr`).
pub const START_INFO_V0_SIZE_BYTES: usize = 40;
/// Size of the version-1 structure (adds `memmap_paddr`, `memmap_entries`, `reserved`).
pub const START_INFO_V1_SIZE_BYTES: usize = 56;
/// `struct hvm_modlist_entry`.
pub const MODLIST_ENTRY_SIZE_BYTES: u64 = 32;
/// `struct hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_SIZE_BYTES: usize = 24;

/// Longest command line kept (init-xenstore-domain builds at most 512 bytes).
pub const MAX_COMMAND_LINE_BYTES: usize = 1024;
/// Most memory-map entries kept (a stub domain has 2–3; QEMU gives a handful).
pub const MAX_MEMORY_MAP_ENTRIES: usize = 64;

/// Reads guest-physical memory. The kernel implements it over its identity map.
pub trait PhysicalMemory {
    /// Fills `buffer` from guest-physical `address`; fails if the range is not readable.
    fn read(&self, address: u64, buffer: &mut [u8]) -> Result<(), UnreadableMemory>;
}

/// A guest-physical range that [`PhysicalMemory`] cannot read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnreadableMemory {
    pub address: u64,
    pub length_bytes: u64,
}

/// Why the start info could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// `%ebx` was 0: not started through the PVH entry.
    NoStartInfo,
    /// The magic field is not `XEN_HVM_START_MAGIC_VALUE`.
    BadMagic(u32),
    /// A pointed-to structure lies outside readable memory.
    Unreadable(UnreadableMemory),
}

impl From<UnreadableMemory> for StartInfoError {
    fn from(error: UnreadableMemory) -> Self {
        StartInfoError::Unreadable(error)
    }
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartInfoError::NoStartInfo => formatter.write_str("no start info (%ebx was 0)"),
            StartInfoError::BadMagic(magic) => {
                write!(
                    formatter,
                    "bad start info magic {magic:#x} (want {START_INFO_MAGIC:#x})"
                )
            }
            StartInfoError::Unreadable(range) => write!(
                formatter,
                "start info data at {:#x} ({} bytes) is not readable",
                range.address, range.length_bytes
            ),
        }
    }
}

/// Most boot modules whose place is kept.
pub const MAX_MODULES: usize = 4;

/// Where a boot module lies (`struct hvm_modlist_entry`'s `paddr` and `size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootModule {
    pub address: u64,
    pub size_bytes: u64,
}

/// Everything the kernel keeps from the start info.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// Guest-physical address of the start info.
    pub start_info_address: u64,
    /// 0 or 1 (libxc always writes 1).
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// The command line bytes (without NUL); empty if none.
    pub command_line: Vec<u8, MAX_COMMAND_LINE_BYTES>,
    /// The command line was longer than [`MAX_COMMAND_LINE_BYTES`] and was cut.
    pub command_line_truncated: bool,
    /// The memory map from the start info (version >= 1 and `memmap_entries > 0`); empty
    /// otherwise (the xenstore stub gets none: use `XENMEM_memory_map`).
    pub memory_map: Vec<MemoryRegion, MAX_MEMORY_MAP_ENTRIES>,
    /// More memory-map entries than [`MAX_MEMORY_MAP_ENTRIES`] were offered.
    pub memory_map_truncated: bool,
    /// Number of boot modules (`--ramdisk`); their contents are left where they are.
    pub module_count: u32,
    /// The first [`MAX_MODULES`] modules' places (a live update passes the state as module
    /// 0: docs/live-update.md, "The handover").
    pub modules: Vec<BootModule, MAX_MODULES>,
    /// ACPI RSDP address, 0 if none (none for the stub).
    pub rsdp_address: u64,
    /// One past the highest guest-physical byte used by the start info and everything it
    /// points to (modules included): memory below this must not become heap.
    pub boot_data_end: u64,
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

/// Parses the start info at `address`, copying out the command line and memory map.
pub fn parse_start_info(
    memory: &impl PhysicalMemory,
    address: u64,
) -> Result<BootInfo, StartInfoError> {
    // "nothing will be loaded at physical address 0, so a 0 value in any of the address
    // fields should be treated as not present" (start_info.h).
    if address == 0 {
        return Err(StartInfoError::NoStartInfo);
    }
    let mut header = [0u8; START_INFO_V1_SIZE_BYTES];
    memory.read(address, &mut header[..START_INFO_V0_SIZE_BYTES])?;
    let magic = read_u32(&header, 0);
    if magic != START_INFO_MAGIC {
        return Err(StartInfoError::BadMagic(magic));
    }
    let version = read_u32(&header, 4);
    let header_size_bytes = if version >= 1 {
        memory.read(
            address + START_INFO_V0_SIZE_BYTES as u64,
            &mut header[START_INFO_V0_SIZE_BYTES..],
        )?;
        START_INFO_V1_SIZE_BYTES
    } else {
        START_INFO_V0_SIZE_BYTES
    };
    let flags = read_u32(&header, 8);
    let module_count = read_u32(&header, 12);
    let modlist_address = read_u64(&header, 16);
    let command_line_address = read_u64(&header, 24);
    let rsdp_address = read_u64(&header, 32);
    let (memmap_address, memmap_entries) = if version >= 1 {
        (read_u64(&header, 40), read_u32(&header, 48))
    } else {
        (0, 0)
    };

    let mut boot_data_end = address + header_size_bytes as u64;

    let mut command_line = Vec::new();
    let mut command_line_truncated = false;
    if command_line_address != 0 {
        let (length, truncated) = read_c_string(memory, command_line_address, &mut command_line)?;
        command_line_truncated = truncated;
        boot_data_end = boot_data_end.max(command_line_address + length as u64 + 1);
    }

    let mut memory_map = Vec::new();
    let mut memory_map_truncated = false;
    // "must check that memmap_entries is non-zero" (start_info.h, version 1 readers).
    if memmap_address != 0 && memmap_entries > 0 {
        let kept_entries = (memmap_entries as usize).min(MAX_MEMORY_MAP_ENTRIES);
        memory_map_truncated = kept_entries < memmap_entries as usize;
        for index in 0..kept_entries {
            let mut entry = [0u8; MEMMAP_ENTRY_SIZE_BYTES];
            memory.read(
                memmap_address + (index * MEMMAP_ENTRY_SIZE_BYTES) as u64,
                &mut entry,
            )?;
            let region = MemoryRegion {
                start: read_u64(&entry, 0),
                size_bytes: read_u64(&entry, 8),
                kind: MemoryKind::from_e820_type(read_u32(&entry, 16)),
            };
            // Capacity is MAX_MEMORY_MAP_ENTRIES and kept_entries never exceeds it.
            let _ = memory_map.push(region);
        }
        boot_data_end = boot_data_end
            .max(memmap_address + memmap_entries as u64 * MEMMAP_ENTRY_SIZE_BYTES as u64);
    }

    let mut modules = Vec::new();
    if modlist_address != 0 && module_count > 0 {
        boot_data_end =
            boot_data_end.max(modlist_address + module_count as u64 * MODLIST_ENTRY_SIZE_BYTES);
        for index in 0..module_count as u64 {
            let mut entry = [0u8; MODLIST_ENTRY_SIZE_BYTES as usize];
            memory.read(
                modlist_address + index * MODLIST_ENTRY_SIZE_BYTES,
                &mut entry,
            )?;
            let module_address = read_u64(&entry, 0);
            let module_size_bytes = read_u64(&entry, 8);
            boot_data_end = boot_data_end.max(module_address.saturating_add(module_size_bytes));
            // Beyond MAX_MODULES only the extent counts.
            let _ = modules.push(BootModule {
                address: module_address,
                size_bytes: module_size_bytes,
            });
            let module_command_line = read_u64(&entry, 16);
            if module_command_line != 0 {
                let mut scratch: Vec<u8, MAX_COMMAND_LINE_BYTES> = Vec::new();
                let (length, _) = read_c_string(memory, module_command_line, &mut scratch)?;
                boot_data_end = boot_data_end.max(module_command_line + length as u64 + 1);
            }
        }
    }

    Ok(BootInfo {
        start_info_address: address,
        version,
        flags,
        command_line,
        command_line_truncated,
        memory_map,
        memory_map_truncated,
        module_count,
        modules,
        rsdp_address,
        boot_data_end,
    })
}

/// Copies a NUL-terminated string into `output`; returns its full length (scanning at most
/// a page past the kept part) and whether it was cut.
fn read_c_string<const CAPACITY: usize>(
    memory: &impl PhysicalMemory,
    address: u64,
    output: &mut Vec<u8, CAPACITY>,
) -> Result<(usize, bool), UnreadableMemory> {
    const SCAN_LIMIT_BYTES: usize = 4096;
    let mut length = 0usize;
    let mut chunk = [0u8; 64];
    while length < CAPACITY + SCAN_LIMIT_BYTES {
        memory.read(address + length as u64, &mut chunk)?;
        for &byte in chunk.iter() {
            if byte == 0 {
                return Ok((length, length > output.len()));
            }
            if output.push(byte).is_err() {
                // Keep scanning for the end so boot_data_end covers the whole string.
            }
            length += 1;
        }
    }
    Ok((length, true))
}

/// [`PhysicalMemory`] over the kernel's identity map (`boot/pvh_entry.s`).
#[cfg(target_os = "none")]
pub struct IdentityMappedMemory;

#[cfg(target_os = "none")]
impl PhysicalMemory for IdentityMappedMemory {
    fn read(&self, address: u64, buffer: &mut [u8]) -> Result<(), UnreadableMemory> {
        let length_bytes = buffer.len() as u64;
        let unreadable = UnreadableMemory {
            address,
            length_bytes,
        };
        let end = address.checked_add(length_bytes).ok_or(unreadable)?;
        if address == 0 || end > crate::arch::x86_64::IDENTITY_MAPPED_LIMIT_BYTES {
            return Err(unreadable);
        }
        // SAFETY: the range is non-null and inside the identity map, so it is mapped; the
        // loader placed the start info and its data there as plain RAM, which the kernel
        // does not write while parsing. `buffer` is a distinct Rust allocation.
        unsafe {
            core::ptr::copy_nonoverlapping(address as *const u8, buffer.as_mut_ptr(), buffer.len())
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec as StdVec;

    /// Guest memory for tests: `bytes` mapped at `base`.
    struct FakeMemory {
        base: u64,
        bytes: StdVec<u8>,
    }

    impl FakeMemory {
        fn new(base: u64, size: usize) -> Self {
            FakeMemory {
                base,
                bytes: std::vec![0; size],
            }
        }
        fn put(&mut self, address: u64, data: &[u8]) {
            let offset = (address - self.base) as usize;
            self.bytes[offset..offset + data.len()].copy_from_slice(data);
        }
        fn put_u32(&mut self, address: u64, value: u32) {
            self.put(address, &value.to_le_bytes());
        }
        fn put_u64(&mut self, address: u64, value: u64) {
            self.put(address, &value.to_le_bytes());
        }
    }

    impl PhysicalMemory for FakeMemory {
        fn read(&self, address: u64, buffer: &mut [u8]) -> Result<(), UnreadableMemory> {
            let error = UnreadableMemory {
                address,
                length_bytes: buffer.len() as u64,
            };
            let offset = address.checked_sub(self.base).ok_or(error)? as usize;
            let source = self.bytes.get(offset..offset + buffer.len()).ok_or(error)?;
            buffer.copy_from_slice(source);
            Ok(())
        }
    }

    const START: u64 = 0x20_0000;

    fn libxc_like_start_info(command_line: &[u8]) -> FakeMemory {
        let mut memory = FakeMemory::new(START, 0x4000);
        memory.put_u32(START, START_INFO_MAGIC);
        memory.put_u32(START + 4, 1);
        let command_line_address = START + 56;
        memory.put_u64(START + 24, command_line_address);
        memory.put(command_line_address, command_line);
        memory
    }

    #[test]
    fn reads_command_line_without_memory_map() {
        let memory = libxc_like_start_info(b"--event 5 --self-test\0");
        let info = parse_start_info(&memory, START).expect("valid start info");
        assert_eq!(info.version, 1);
        assert_eq!(&info.command_line[..], b"--event 5 --self-test");
        assert!(!info.command_line_truncated);
        assert!(info.memory_map.is_empty());
        assert_eq!(info.boot_data_end, START + 56 + 21 + 1);
    }

    #[test]
    fn reads_memory_map_entries() {
        let mut memory = libxc_like_start_info(b"\0");
        let memmap = START + 0x100;
        memory.put_u64(START + 40, memmap);
        memory.put_u32(START + 48, 2);
        memory.put_u64(memmap, 0);
        memory.put_u64(memmap + 8, 0x80_0000);
        memory.put_u32(memmap + 16, 1);
        memory.put_u64(memmap + 24, 0xfeff_8000);
        memory.put_u64(memmap + 32, 0x8000);
        memory.put_u32(memmap + 40, 2);
        let info = parse_start_info(&memory, START).expect("valid start info");
        assert_eq!(info.memory_map.len(), 2);
        assert_eq!(
            info.memory_map[0],
            MemoryRegion {
                start: 0,
                size_bytes: 0x80_0000,
                kind: MemoryKind::Ram
            }
        );
        assert_eq!(info.memory_map[1].kind, MemoryKind::Reserved);
        assert_eq!(info.boot_data_end, memmap + 48);
    }

    #[test]
    fn version_0_has_no_memory_map() {
        let mut memory = libxc_like_start_info(b"x\0");
        memory.put_u32(START + 4, 0);
        memory.put_u64(START + 40, START + 0x100);
        memory.put_u32(START + 48, 3);
        let info = parse_start_info(&memory, START).expect("valid start info");
        assert!(info.memory_map.is_empty());
    }

    #[test]
    fn rejects_bad_magic_and_null() {
        let mut memory = libxc_like_start_info(b"\0");
        memory.put_u32(START, 0xdead_beef);
        assert_eq!(
            parse_start_info(&memory, START),
            Err(StartInfoError::BadMagic(0xdead_beef))
        );
        assert_eq!(
            parse_start_info(&memory, 0),
            Err(StartInfoError::NoStartInfo)
        );
    }

    #[test]
    fn unreadable_pointers_are_errors_not_panics() {
        let mut memory = libxc_like_start_info(b"\0");
        memory.put_u64(START + 24, 0x9999_0000);
        assert!(matches!(
            parse_start_info(&memory, START),
            Err(StartInfoError::Unreadable(_))
        ));
    }

    #[test]
    fn long_command_lines_are_truncated() {
        let mut long = std::vec![b'a'; MAX_COMMAND_LINE_BYTES + 10];
        long.push(0);
        let memory = libxc_like_start_info(&long);
        let info = parse_start_info(&memory, START).expect("valid start info");
        assert_eq!(info.command_line.len(), MAX_COMMAND_LINE_BYTES);
        assert!(info.command_line_truncated);
        assert_eq!(
            info.boot_data_end,
            START + 56 + MAX_COMMAND_LINE_BYTES as u64 + 11
        );
    }

    #[test]
    fn modules_extend_boot_data() {
        let mut memory = libxc_like_start_info(b"\0");
        let modlist = START + 0x200;
        memory.put_u32(START + 12, 1);
        memory.put_u64(START + 16, modlist);
        memory.put_u64(modlist, 0x30_0000);
        memory.put_u64(modlist + 8, 0x1000);
        let info = parse_start_info(&memory, START).expect("valid start info");
        assert_eq!(info.module_count, 1);
        assert_eq!(info.boot_data_end, 0x30_1000);
    }
}
