//! The console: a `log` backend and raw lines, on port 0xE9 and the PV console ring.
//!
//! Every line starts with [`crate::CONSOLE_PREFIX`] (`xenstore-stubdom: `). Port 0xE9 always
//! works (docs/xen-interface.md, "Start info and command line"); the PV console ring is
//! added once `crate::xen::pv_console` found one, and is best-effort (bytes are dropped when
//! xenconsoled does not drain it).
//! Writing never allocates, so allocation-failure and panic paths can log.

use core::fmt::{self, Write};

use log::{Level, LevelFilter, Log, Metadata, Record};
use spin::Mutex;

use crate::xen::pv_console::PvConsoleRing;

/// The PV console ring, once attached.
static PV_CONSOLE: Mutex<Option<PvConsoleRing>> = Mutex::new(None);

/// Adds the PV console ring as a second output.
pub fn attach_pv_console(ring: PvConsoleRing) {
    *PV_CONSOLE.lock() = Some(ring);
}

/// Writes to port 0xE9 and, if given, the PV ring.
struct LineWriter<'a> {
    pv_console: Option<&'a mut PvConsoleRing>,
}

impl Write for LineWriter<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        crate::arch::x86_64::port_io::write_debug_console(text.as_bytes());
        if let Some(ring) = self.pv_console.as_deref_mut() {
            ring.write_text(text.as_bytes());
        }
        Ok(())
    }
}

fn write_line_to(pv_console: Option<&mut PvConsoleRing>, arguments: fmt::Arguments<'_>) {
    let notify = pv_console.is_some();
    let mut writer = LineWriter { pv_console };
    // Formatting into this writer cannot fail; a failing Display impl only cuts the line.
    let _ = writer.write_str(crate::CONSOLE_PREFIX);
    let _ = writer.write_fmt(arguments);
    let _ = writer.write_str("\n");
    if notify && let Some(ring) = writer.pv_console {
        ring.notify();
    }
}

/// Writes one line: `xenstore-stubdom: <arguments>`.
pub fn write_line(arguments: fmt::Arguments<'_>) {
    match PV_CONSOLE.try_lock() {
        Some(mut guard) => write_line_to(guard.as_mut(), arguments),
        // Only a panic or allocation failure inside a console write gets here: fall back to
        // port 0xE9 alone rather than deadlock.
        None => write_line_to(None, arguments),
    }
}

/// `println!`-style wrapper around [`write_line`].
#[macro_export]
macro_rules! console_line {
    ($($argument:tt)*) => {
        $crate::runtime::console::write_line(format_args!($($argument)*))
    };
}

/// Whether the engine's access trace (`-T`) is printed; it is off by default because every
/// request would cost a console line.
static ACCESS_TRACE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Prints the engine's access trace (requests, replies, watch events) from now on.
pub fn enable_access_trace() {
    ACCESS_TRACE.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// The `log` backend: info lines are plain, other levels are labelled.
struct ConsoleLogger;

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        if metadata.target() == xenstore_engine::ACCESS_LOG_TARGET
            && !ACCESS_TRACE.load(core::sync::atomic::Ordering::Relaxed)
        {
            return false;
        }
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        write_line(format_args!(
            "{}{}",
            level_label(record.level()),
            record.args()
        ));
    }

    fn flush(&self) {}
}

/// The text put before a message of `level`.
pub const fn level_label(level: Level) -> &'static str {
    match level {
        Level::Error => "error: ",
        Level::Warn => "warning: ",
        Level::Info => "",
        Level::Debug => "debug: ",
        Level::Trace => "trace: ",
    }
}

static LOGGER: ConsoleLogger = ConsoleLogger;

/// Installs the console as the `log` backend (idempotent).
pub fn init_logging(max_level: LevelFilter) {
    // A second call returns an error because the logger is already set: nothing to do.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(max_level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(level_label(Level::Info), "");
        assert_eq!(level_label(Level::Warn), "warning: ");
        assert_eq!(level_label(Level::Error), "error: ");
    }
}
