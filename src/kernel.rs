//! The boot sequence after the assembly: from `rust_entry` to serving xenstore.
//!
//! Order matters: the console first (port 0xE9 needs nothing), then the start info is copied
//! out (it lies where the heap will go), then Xen is detected. Without Xen (bare QEMU, the
//! CI smoke test) the kernel checks what it can and leaves through `isa-debug-exit`. On
//! Xen: hypercalls, version and domid, memory map, heap, shared_info, PV console, and then
//! it serves xenstore. The test image (cargo feature `test-modes`) may instead run one of
//! its test modes: `--debug-crash`, `--hostile-ring` or `--self-test`.

use alloc::vec::Vec;
use core::fmt::Write;

use log::LevelFilter;
use xen_hypercall::cpuid::{XenCpuidLeaves, XenVersion};
#[cfg(feature = "test-modes")]
use xen_hypercall::sched::ShutdownReason;
use xen_hypercall::{DomId, Hypervisor, XenErrno};

use crate::arch::x86_64::{self, layout, port_io};
use crate::cmdline::CommandLine;
#[cfg(feature = "test-modes")]
use crate::cmdline::DebugCrash;
use crate::console_line;
use crate::runtime::heap::{self, HeapPlan, RegionSource};
use crate::runtime::heap_setup::{self, HeapSetupError};
use crate::runtime::{console, trace};
use crate::xen::memory_map::{self, MemoryMap, MemoryMapSource};
use crate::xen::pv_console::PvConsoleRing;
use crate::xen::shared_info::{SharedInfoMapping, map_shared_info};
use crate::xen::start_info::{BootInfo, IdentityMappedMemory, parse_start_info};

/// What booting on Xen produced; each fallible step keeps its result so that the
/// self-test can report failures instead of stopping at the first one.
#[cfg_attr(
    not(feature = "test-modes"),
    allow(
        dead_code,
        reason = "some fields only the test image's --self-test reports"
    )
)]
pub struct BootedPlatform {
    pub hypervisor: Hypervisor,
    pub cpuid_leaves: XenCpuidLeaves,
    /// From CPUID leaf base+1 (no hypercall needed).
    pub cpuid_version: XenVersion,
    pub own_domid: Result<DomId, XenErrno>,
    pub memory_map: Result<MemoryMap, XenErrno>,
    pub reservation_pages: Result<u64, XenErrno>,
    pub heap: Result<HeapPlan, HeapSetupError>,
    pub shared_info: Result<SharedInfoMapping, XenErrno>,
    pub pv_console_attached: bool,
}

/// Entered from `rust_entry` with the start-info address; never returns.
pub fn kernel_main(start_info_paddr: u64) -> ! {
    x86_64::exceptions::install_exception_handlers();
    console::init_logging(LevelFilter::Info);
    trace::record("boot.rust_entry", start_info_paddr);
    let boot_info = match parse_start_info(&IdentityMappedMemory, start_info_paddr) {
        Ok(boot_info) => boot_info,
        Err(error) => {
            log::error!("cannot use the PVH start info: {error}");
            crate::runtime::panic::stop_after_failure();
        }
    };
    let command_line_text = match core::str::from_utf8(&boot_info.command_line) {
        Ok(text) => text,
        Err(_) => {
            log::warn!("the command line is not UTF-8; ignoring it");
            ""
        }
    };
    let command_line = CommandLine::parse(command_line_text).unwrap_or_else(|error| {
        log::warn!("command line: {error}; ignoring it");
        CommandLine::default()
    });
    if command_line.verbose {
        log::set_max_level(LevelFilter::Debug);
    }
    log::info!(
        "booting: PVH start info v{} at {:#x}, image {:#x}..{:#x}, command line \"{}\"{}",
        boot_info.version,
        start_info_paddr,
        layout::kernel_start_address(),
        layout::kernel_end_address(),
        command_line_text,
        if boot_info.command_line_truncated {
            " (truncated)"
        } else {
            ""
        }
    );
    // Which build this is: the live-update test uploads the other one and looks for it.
    crate::console_line!(
        "image: {} build",
        if cfg!(feature = "test-modes") {
            "test"
        } else {
            "product"
        }
    );
    #[cfg(feature = "test-modes")]
    trigger_debug_crash(command_line.debug_crash);
    match XenCpuidLeaves::detect() {
        None => run_without_xen(&boot_info),
        Some(leaves) => {
            let platform = boot_on_xen(leaves, &boot_info);
            #[cfg(feature = "test-modes")]
            run_test_mode(&platform, &command_line);
            crate::xenstore::serve(&platform, &command_line, &boot_info)
        }
    }
}

/// The test modes that replace serving xenstore (`--hostile-ring`, `--self-test`); returns
/// when the command line asks for neither.
#[cfg(feature = "test-modes")]
fn run_test_mode(platform: &BootedPlatform, command_line: &CommandLine<'_>) {
    if command_line.hostile_ring {
        crate::hostile_ring::run(platform)
    } else if command_line.self_test {
        crate::self_test::run(platform);
        power_off(platform.hypervisor)
    }
}

/// `--debug-crash`: fail on purpose so tests can check the crash paths.
#[cfg(feature = "test-modes")]
fn trigger_debug_crash(crash: Option<DebugCrash>) {
    match crash {
        None => {}
        Some(DebugCrash::Panic) => panic!("--debug-crash panic requested"),
        Some(DebugCrash::PageFault) => x86_64::exceptions::trigger_page_fault(),
    }
}

/// Bare QEMU (CI smoke test): check boot, start info and heap, then exit through
/// `isa-debug-exit` (status 67 when all is well, 69 otherwise).
fn run_without_xen(boot_info: &BootInfo) -> ! {
    let mut healthy = true;
    if boot_info.memory_map.is_empty() {
        log::info!("no memory map in the start info; skipping the heap check");
    } else {
        let memory_map = MemoryMap::from_regions(
            boot_info.memory_map.iter().copied(),
            MemoryMapSource::StartInfo,
        );
        log::info!(
            "memory map: {} entries from the start info, {} MiB RAM",
            memory_map.regions.len(),
            memory_map.total_ram_bytes() >> 20
        );
        match heap_setup::setup_heap(&Ok(memory_map), boot_info, None) {
            Ok(plan) => match check_heap() {
                Ok(detail) => log::info!(
                    "heap: {} KiB at {:#x}: {}",
                    plan.size_bytes >> 10,
                    plan.start,
                    detail.as_str()
                ),
                Err(reason) => {
                    log::error!("heap check failed: {}", reason.as_str());
                    healthy = false;
                }
            },
            Err(error) => {
                log::error!("heap setup failed: {error}");
                healthy = false;
            }
        }
    }
    console_line!("no Xen hypervisor found");
    port_io::request_qemu_exit(if healthy {
        port_io::EXIT_NO_HYPERVISOR
    } else {
        port_io::EXIT_FAILURE
    });
    // Without the isa-debug-exit device (a real machine) there is nothing left to do.
    x86_64::halt_forever()
}

/// Brings up the Xen platform; failures are recorded, not fatal (see [`BootedPlatform`]).
fn boot_on_xen(leaves: XenCpuidLeaves, boot_info: &BootInfo) -> BootedPlatform {
    let hypervisor = match crate::xen::connect(leaves) {
        Ok(hypervisor) => hypervisor,
        Err(error) => {
            // No way to issue hypercalls means no way to even shut down cleanly.
            log::error!("found Xen but cannot issue hypercalls: {error:?}");
            x86_64::halt_forever();
        }
    };
    let cpuid_version = leaves.version();
    // CPUID leaf base+4 carries the domid on Xen >= 4.11; older: the event-channel trick.
    let own_domid = match leaves.own_domid() {
        Some(domid) => Ok(domid),
        None => hypervisor.own_domid_from_event_channel(),
    };
    let memory_map = if boot_info.memory_map.is_empty() {
        memory_map::read_memory_map_from_xen(&hypervisor)
    } else {
        Ok(MemoryMap::from_regions(
            boot_info.memory_map.iter().copied(),
            MemoryMapSource::StartInfo,
        ))
    };
    match &memory_map {
        Ok(map) => log::info!(
            "memory map: {} entries from {}, {} MiB RAM",
            map.regions.len(),
            map.source,
            map.total_ram_bytes() >> 20
        ),
        Err(errno) => log::error!("no memory map: XENMEM_memory_map failed: {errno}"),
    }
    let reservation_pages = hypervisor.current_reservation_pages(DomId::SELF);
    let heap = heap_setup::setup_heap(&memory_map, boot_info, reservation_pages.ok());
    match &heap {
        Ok(plan) => {
            log::info!(
                "heap: {:#x}..{:#x} ({} KiB)",
                plan.start,
                plan.end(),
                plan.size_bytes >> 10
            );
            if plan.region_source == RegionSource::Reservation {
                log::warn!(
                    "memory map: no RAM entry holds the image (Xen 4.17/4.18 \
                     init-xenstore-domain --maxmem); low RAM taken from the reservation, \
                     growth up to {:#x} at most",
                    plan.region_end
                );
            }
        }
        Err(error) => log::error!("no heap: {error}"),
    }
    let shared_info = map_shared_info(&hypervisor);
    let pv_console = PvConsoleRing::from_hvm_params(hypervisor);
    let pv_console_attached = pv_console.is_some();
    if let Some(ring) = pv_console {
        log::info!("PV console ring attached (event channel {})", ring.port());
        console::attach_pv_console(ring);
    }
    if let Ok(plan) = &heap {
        // After shared_info, so that the growth reads the reservation as it stays.
        match heap_setup::start_growth(hypervisor, reservation_pages.ok()) {
            Ok(setup) => log::info!(
                "heap: {} KiB, limit {} KiB (domain pages {} of at most {}; {} frames above \
                 the heap given back to be populated as it grows)",
                plan.size_bytes >> 10,
                setup.limit_bytes >> 10,
                setup.current_pages,
                setup.maximum_pages,
                setup.released_pages
            ),
            Err(error) => log::warn!(
                "heap: {} KiB, limit {} KiB: it cannot grow ({error})",
                plan.size_bytes >> 10,
                plan.size_bytes >> 10
            ),
        }
    }
    log::info!(
        "Xen {cpuid_version}, domid {}, hypercalls via {}",
        own_domid.map(|domid| domid.0 as i64).unwrap_or(-1),
        hypervisor.mechanism()
    );
    BootedPlatform {
        hypervisor,
        cpuid_leaves: leaves,
        cpuid_version,
        own_domid,
        memory_map,
        reservation_pages,
        heap,
        shared_info,
        pv_console_attached,
    }
}

/// Text of a boot check's detail or failure reason: fixed-size, so that a broken heap
/// cannot break the report.
pub type CheckText = heapless::String<200>;

/// Formats into a [`CheckText`], cutting what does not fit.
fn check_text(arguments: core::fmt::Arguments<'_>) -> CheckText {
    let mut text = CheckText::new();
    // A full buffer only truncates the text.
    let _ = text.write_fmt(arguments);
    text
}

/// Allocates, fills, checks and frees a buffer; the free space must come back exactly.
/// Used by the bare-QEMU boot path and by the test image's `--self-test`.
// `CheckText` makes the `Result` large; it is returned once per boot.
#[allow(clippy::result_large_err)]
pub fn check_heap() -> Result<CheckText, CheckText> {
    const TEST_SIZE_BYTES: usize = 64 * 1024;
    let before = heap::statistics().usage;
    if before.size_bytes == 0 {
        return Err(check_text(format_args!("the heap was not set up")));
    }
    {
        let mut buffer: Vec<u8> = Vec::new();
        buffer.try_reserve_exact(TEST_SIZE_BYTES).map_err(|_| {
            check_text(format_args!(
                "cannot allocate {TEST_SIZE_BYTES} bytes ({} free)",
                before.free_bytes
            ))
        })?;
        buffer.extend((0..TEST_SIZE_BYTES).map(|index| (index % 251) as u8));
        let intact = buffer
            .iter()
            .enumerate()
            .all(|(index, &byte)| byte == (index % 251) as u8);
        if !intact {
            return Err(check_text(format_args!(
                "heap memory did not keep the written pattern"
            )));
        }
    }
    let after = heap::statistics().usage;
    if after.free_bytes != before.free_bytes {
        return Err(check_text(format_args!(
            "free space {} bytes before, {} after freeing {TEST_SIZE_BYTES} bytes",
            before.free_bytes, after.free_bytes
        )));
    }
    Ok(check_text(format_args!(
        "allocated and freed {TEST_SIZE_BYTES} bytes, free space before/after {} = {} of {} bytes",
        before.free_bytes, after.free_bytes, before.size_bytes
    )))
}

/// Powers the domain off (`SCHEDOP_shutdown(SHUTDOWN_poweroff)`).
#[cfg(feature = "test-modes")]
fn power_off(hypervisor: Hypervisor) -> ! {
    trace::record("shutdown.poweroff", 0);
    let errno = hypervisor.shutdown(ShutdownReason::PowerOff);
    log::error!("SHUTDOWN_poweroff refused: {errno}");
    x86_64::halt_forever()
}
