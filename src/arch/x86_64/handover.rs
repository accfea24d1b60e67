//! The jump of a live update: the trampoline page, and entering it (`boot/handover_trampoline.s`).
//!
//! The trampoline leaves long mode, copies the staged new image to its place and enters it
//! at its PVH entry (docs/live-update.md, "The jump"). It runs from a heap page that the
//! copy does not reach, so [`TrampolinePage::allocate`] refuses a page that lies inside the
//! destination, and the caller tries again while holding the refused one.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::ptr::NonNull;

core::arch::global_asm!(
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/boot/handover_trampoline.s"
    )),
    options(att_syntax, raw)
);

unsafe extern "C" {
    static handover_trampoline_start: u8;
    static handover_trampoline_end: u8;
}

/// Offsets into the page, as `boot/handover_trampoline.s` defines them.
const GDT_POINTER_OFFSET: usize = 0x800;
const SOURCE_OFFSET: usize = 0x810;
const DESTINATION_OFFSET: usize = 0x814;
const LENGTH_OFFSET: usize = 0x818;
const ENTRY_OFFSET: usize = 0x81c;
const START_INFO_OFFSET: usize = 0x820;
const GDT_OFFSET: usize = 0x840;
/// null; 0x08 64-bit code; 0x10 32-bit code; 0x18 flat 32-bit data (4 GiB, read/write).
const GDT: [u64; 4] = [
    0,
    0x00af_9a00_0000_ffff,
    0x00cf_9a00_0000_ffff,
    0x00cf_9200_0000_ffff,
];
const PAGE_SIZE_BYTES: usize = 4096;

/// What the trampoline does: copy `length` bytes from `source` to `destination` (forward;
/// `destination` must not lie above `source`), then enter `entry` with `%ebx = start_info`.
/// All below 4 GiB: the trampoline runs with paging off.
#[derive(Clone, Copy, Debug)]
pub struct Jump {
    pub source: u32,
    pub destination: u32,
    pub length: u32,
    pub entry: u32,
    pub start_info: u32,
}

/// The trampoline's bytes, checked to fit the page's code part ([`trampoline_code`]).
#[derive(Clone, Copy)]
pub struct TrampolineCode(&'static [u8]);

/// The trampoline's bytes (`boot/handover_trampoline.s`), or `None` when they would not fit
/// below the page's data (checked before the point of no return).
pub fn trampoline_code() -> Option<TrampolineCode> {
    // SAFETY: the linker symbols bound the trampoline's bytes inside .text, which is
    // mapped and never written.
    let code = unsafe {
        let start = &raw const handover_trampoline_start;
        let end = &raw const handover_trampoline_end;
        core::slice::from_raw_parts(start, (end as usize).checked_sub(start as usize)?)
    };
    (code.len() < GDT_POINTER_OFFSET).then_some(TrampolineCode(code))
}

/// A page of the heap for the trampoline.
pub struct TrampolinePage {
    page: NonNull<u8>,
}

impl TrampolinePage {
    /// A zeroed page, or `None` when the heap has none.
    pub fn allocate() -> Option<TrampolinePage> {
        let layout = Layout::from_size_align(PAGE_SIZE_BYTES, PAGE_SIZE_BYTES).ok()?;
        // SAFETY: the layout has a non-zero size.
        let page = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some(TrampolinePage { page })
    }

    /// The page's guest-physical address (identity map).
    pub fn address(&self) -> u64 {
        self.page.as_ptr() as u64
    }

    /// Whether the page lies outside `[start, end)` and below 4 GiB: where the trampoline can
    /// run while the copy writes `[start, end)`.
    pub fn usable_for(&self, start: u64, end: u64) -> bool {
        let page_end = self.address() + PAGE_SIZE_BYTES as u64;
        (page_end <= start || self.address() >= end) && page_end <= 1 << 32
    }

    /// Fills the page and jumps: the old image ends here.
    ///
    /// # Safety
    /// Everything the old image knows stops being true: the caller has released what Xen
    /// would go on writing into the old image's memory (grant mappings, the runstate area),
    /// turned interrupts off, and checked that the page is [`TrampolinePage::usable_for`] the
    /// jump's destination range, that `source..source + length` is readable memory that
    /// lies above `destination`, and that the bytes it copies are a new image whose entry is
    /// `entry`, with its start info at `start_info`. `code` is [`trampoline_code`]'s.
    pub unsafe fn jump(self, jump: Jump, code: TrampolineCode) -> ! {
        let page = self.page.as_ptr();
        let code = code.0;
        let gdt_base = page as u64 + GDT_OFFSET as u64;
        let gdt_limit = (core::mem::size_of_val(&GDT) - 1) as u16;
        // SAFETY: the page is ours (allocated, 4096 bytes); every write lies inside it.
        unsafe {
            core::ptr::copy_nonoverlapping(code.as_ptr(), page, code.len());
            page.add(GDT_POINTER_OFFSET)
                .cast::<[u8; 2]>()
                .write_unaligned(gdt_limit.to_le_bytes());
            page.add(GDT_POINTER_OFFSET + 2)
                .cast::<[u8; 8]>()
                .write_unaligned(gdt_base.to_le_bytes());
            for (index, descriptor) in GDT.iter().enumerate() {
                page.add(GDT_OFFSET + index * 8)
                    .cast::<[u8; 8]>()
                    .write_unaligned(descriptor.to_le_bytes());
            }
            for (offset, value) in [
                (SOURCE_OFFSET, jump.source),
                (DESTINATION_OFFSET, jump.destination),
                (LENGTH_OFFSET, jump.length),
                (ENTRY_OFFSET, jump.entry),
                (START_INFO_OFFSET, jump.start_info),
            ] {
                page.add(offset)
                    .cast::<[u8; 4]>()
                    .write_unaligned(value.to_le_bytes());
            }
        }
        crate::runtime::trace::record("handover.jump", u64::from(jump.entry));
        // SAFETY: the page now holds the trampoline (position-independent, entered with
        // %rdi = the page) and its data; the identity map makes it executable at its
        // address (the page tables set no NX bit); the caller's guarantees above make what
        // it does sound. It never returns.
        unsafe {
            let trampoline: extern "C" fn(u64) -> ! = core::mem::transmute(page);
            trampoline(page as u64)
        }
    }
}

impl Drop for TrampolinePage {
    fn drop(&mut self) {
        if let Ok(layout) = Layout::from_size_align(PAGE_SIZE_BYTES, PAGE_SIZE_BYTES) {
            // SAFETY: allocated by `allocate` with this layout and not freed since.
            unsafe { dealloc(self.page.as_ptr(), layout) };
        }
    }
}
