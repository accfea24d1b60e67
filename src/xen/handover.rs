//! A live update on Xen: the state the previous image left, and the jump into the next image.
//!
//! The previous image passes the migration stream as boot module 0 of the start info it
//! built (docs/live-update.md, "The handover"); the heap is placed above all boot data, so
//! the stream stays untouched until it is read. The jump checks, before the point of no
//! return, everything the trampoline relies on (`crate::arch::x86_64::handover`).

use crate::arch::x86_64::handover::{Jump, TrampolineCode, TrampolinePage, trampoline_code};
use crate::handover::StagedImage;
use crate::xen::start_info::BootInfo;

/// The state the previous image left (boot module 0), when there is one inside the
/// identity map.
pub fn previous_state(boot_info: &BootInfo) -> Option<&'static [u8]> {
    let module = boot_info.modules.first()?;
    let end = module.address.checked_add(module.size_bytes)?;
    if module.address == 0 || end > crate::arch::x86_64::IDENTITY_MAPPED_LIMIT_BYTES {
        return None;
    }
    let length = usize::try_from(module.size_bytes).ok()?;
    // SAFETY: the module lies in the identity map (checked) below `boot_data_end`, which
    // the heap is placed above (`heap_setup::setup_heap`), so nothing of ours writes it for
    // as long as the kernel runs; the loader (the previous image's trampoline) wrote it
    // before the entry.
    Some(unsafe { core::slice::from_raw_parts(module.address as *const u8, length) })
}

/// A jump whose preconditions were checked: past this, nothing can fail.
pub struct CheckedJump {
    page: TrampolinePage,
    code: TrampolineCode,
    jump: Jump,
}

/// Why the jump cannot be made (the old image keeps serving).
#[derive(Clone, Copy, Debug)]
pub enum JumpError {
    /// A page for the trampoline outside the destination could not be had.
    NoTrampolinePage,
    /// An address the trampoline needs lies at or above 4 GiB, or the staged bytes lie
    /// below their destination.
    Unreachable,
    /// The trampoline's code outgrew its part of the page (a build error).
    TrampolineTooLong,
}

impl core::fmt::Display for JumpError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            JumpError::NoTrampolinePage => {
                write!(formatter, "too little memory for the trampoline page")
            }
            JumpError::Unreachable => write!(
                formatter,
                "the staged image lies where the trampoline cannot copy it from"
            ),
            JumpError::TrampolineTooLong => {
                write!(formatter, "this image's trampoline does not fit its page")
            }
        }
    }
}

/// Most pages tried for the trampoline (each refused one is held until the end, so that
/// the next allocation lands elsewhere).
const TRAMPOLINE_ATTEMPTS: usize = 8;

/// Checks what the jump into `staged` (entered at `entry`) needs and gets its trampoline
/// page.
pub fn check_jump(staged: &StagedImage, entry: u32) -> Result<CheckedJump, JumpError> {
    let code = trampoline_code().ok_or(JumpError::TrampolineTooLong)?;
    let source = staged.bytes.as_ptr() as u64;
    let length = staged.bytes.len() as u64;
    let destination = staged.destination;
    let end = destination
        .checked_add(length)
        .ok_or(JumpError::Unreachable)?;
    let below_4_gib = |address: u64| address <= u64::from(u32::MAX);
    if source < destination
        || !below_4_gib(source.saturating_add(length))
        || !below_4_gib(end)
        || !below_4_gib(staged.start_info_address)
    {
        return Err(JumpError::Unreachable);
    }
    let mut refused: heapless::Vec<TrampolinePage, TRAMPOLINE_ATTEMPTS> = heapless::Vec::new();
    let page = loop {
        let page = TrampolinePage::allocate().ok_or(JumpError::NoTrampolinePage)?;
        if page.usable_for(destination, end) {
            break page;
        }
        refused
            .push(page)
            .map_err(|_| JumpError::NoTrampolinePage)?;
    };
    drop(refused);
    // Every value was checked to be below 4 GiB above.
    let narrow = |value: u64| value as u32;
    Ok(CheckedJump {
        page,
        code,
        jump: Jump {
            source: narrow(source),
            destination: narrow(destination),
            length: narrow(length),
            entry,
            start_info: narrow(staged.start_info_address),
        },
    })
}

/// The point of no return: copies `staged` into place and enters the new image. The caller
/// has unmapped every grant, stopped the runstate area and closed the ports the new image
/// binds again (docs/live-update.md, "What the old image undoes").
pub fn jump(checked: CheckedJump, staged: StagedImage) -> ! {
    // The staged bytes must stay where `check_jump` saw them until the copy: never freed.
    let staged = core::mem::ManuallyDrop::new(staged);
    debug_assert_eq!(staged.bytes.as_ptr() as u64, u64::from(checked.jump.source));
    // SAFETY: `check_jump` checked the page against the destination and every address
    // against 4 GiB and the copy's direction; the staged bytes (kept alive above) are a new
    // image checked by `handover::check_image`, whose entry is `jump.entry`, and its start
    // info built by `handover::stage`; the caller released what Xen writes into our memory.
    unsafe {
        core::arch::asm!("cli", options(nomem, nostack));
        checked.page.jump(checked.jump, checked.code)
    }
}
