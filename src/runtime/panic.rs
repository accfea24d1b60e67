//! The panic handler: print the reason and the recent trace, then stop the domain.
//!
//! On Xen the domain is stopped with `SCHEDOP_shutdown(SHUTDOWN_crash)` so the toolstack sees
//! a crash (`on_crash=`); without Xen (bare QEMU) the VM exits through `isa-debug-exit`
//! with status 69 (`port_io::EXIT_FAILURE`).

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::x86_64::{halt_forever, port_io};
use crate::runtime::{console, trace};

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::SeqCst) {
        // A panic while reporting a panic: say so on the simplest channel and stop.
        port_io::write_debug_console(b"xenstore-stubdom: panic while panicking\n");
        stop_after_failure();
    }
    // One line: PanicInfo's own Display puts the message on a second, unprefixed line.
    match info.location() {
        Some(location) => console::write_line(format_args!(
            "PANIC at {}:{}: {}",
            location.file(),
            location.line(),
            info.message()
        )),
        None => console::write_line(format_args!("PANIC: {}", info.message())),
    }
    console::write_line(format_args!("recent trace (oldest first):"));
    trace::for_each_recent(|entry| {
        console::write_line(format_args!(
            "  trace #{}: {} {:#x}",
            entry.sequence, entry.event, entry.value
        ));
    });
    stop_after_failure()
}

/// Stops the domain after a fatal error: crash shutdown on Xen, QEMU exit status 69 otherwise.
pub fn stop_after_failure() -> ! {
    // A failure before hypercalls were set up (e.g. a bad start info) still deserves a
    // proper crash shutdown on Xen: detect and connect now if needed.
    let hypervisor = crate::xen::hypervisor().or_else(|| {
        xen_hypercall::cpuid::XenCpuidLeaves::detect()
            .and_then(|leaves| crate::xen::connect(leaves).ok())
    });
    match hypervisor {
        Some(hypervisor) => {
            let errno = hypervisor.shutdown(xen_hypercall::sched::ShutdownReason::Crash);
            port_io::write_debug_console(b"xenstore-stubdom: SHUTDOWN_crash refused\n");
            trace::record("panic.shutdown_refused", u64::from(errno.number()));
        }
        None => port_io::request_qemu_exit(port_io::EXIT_FAILURE),
    }
    halt_forever()
}
