//! The Xen platform layer: everything the kernel needs from the hypervisor.
//!
//! - [`start_info`], [`memory_map`]: what the loader and the toolstack tell us at boot.
//! - `connect`: finding Xen and setting up hypercalls (the [`Hypervisor`] handle).
//! - [`shared_info`], [`event_channel`]: the shared_info page and 2-level event channels.
//! - [`grant_table`]: mapping other domains' granted pages into a reserved GFN window.
//! - [`pv_console`]: the PV console ring.
//! - [`runstate`]: the vCPU's runstate area, a clock reading without `rdtsc` after a sleep.
//! - `handover`: a live update's state from the previous image, and the jump to the next.
//!
//! Only this layer (with `arch` and `runtime`) turns guest-physical addresses into pointers.
//!
//! - `ring_port`: the ring host's port on Xen (engine/src/ring_host.rs): attaching a
//!   domain's ring is `GrantMapper::map(domain, GrantRef::RESERVED_XENSTORE)` (C xenstored
//!   ignores the frame the toolstack names and maps reference 1) and
//!   `EventChannels::bind_interdomain(domain, remote_port)`; detaching closes the port and
//!   unmaps; notifications go out with the loop's next sleep
//!   (`EventChannels::notify_then_wait_until`); the clock is the round's time, read once per
//!   round by [`runstate::WakeClock`]. dom0's ring is attached the same way at boot with the
//!   `--event` port (`src/xenstore.rs`).

pub mod event_channel;
pub mod grant_table;
#[cfg(target_os = "none")]
pub mod handover;
pub mod memory_map;
pub mod pv_console;
#[cfg(target_os = "none")]
pub mod ring_port;
pub mod runstate;
pub mod shared_info;
pub mod start_info;
pub mod xenstore_ring;

use xen_hypercall::Hypervisor;

/// The hypervisor handle once hypercalls work (read by the panic handler).
static HYPERVISOR: spin::Once<Hypervisor> = spin::Once::new();

/// The hypervisor handle, if Xen was found and hypercalls are set up.
pub fn hypervisor() -> Option<Hypervisor> {
    HYPERVISOR.get().copied()
}

/// Why hypercalls could not be set up.
#[cfg(target_os = "none")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// Xen did not fill the hypercall page and the CPU vendor is unknown.
    NoHypercallMechanism(xen_hypercall::InstallError),
}

/// Sets up hypercalls: the hypercall page (portable, as Mini-OS/XTF do), else the vendor's
/// `vmcall`/`vmmcall` instruction.
#[cfg(target_os = "none")]
pub fn connect(leaves: xen_hypercall::cpuid::XenCpuidLeaves) -> Result<Hypervisor, ConnectError> {
    use xen_hypercall::HypercallPage;

    /// The page Xen fills with hypercall stubs; in `.bss`, so writable RAM, executable
    /// because the boot page tables set no NX bit.
    static HYPERCALL_PAGE: HypercallPage = HypercallPage::new();

    // The kernel runs on an identity map, so the page's linear address is its
    // guest-physical address.
    let page_address = HYPERCALL_PAGE.address();
    // SAFETY: we run at CPL 0 on Xen (the leaves were found), the page is a dedicated static
    // and identity-mapped, executable (see above).
    let installed =
        unsafe { Hypervisor::install_hypercall_page(leaves, &HYPERCALL_PAGE, page_address) };
    let hypervisor = match installed {
        Ok(hypervisor) => hypervisor,
        Err(error) => {
            log::warn!("hypercall page not installed ({error:?}); using vmcall/vmmcall");
            Hypervisor::with_vendor_instruction(leaves)
                .ok_or(ConnectError::NoHypercallMechanism(error))?
        }
    };
    crate::runtime::trace::record("xen.hypercalls_ready", page_address);
    Ok(*HYPERVISOR.call_once(|| hypervisor))
}
