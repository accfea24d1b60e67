//! The daemon's `log` backend: access records (target `xenstore::access`) to the `-T` trace file, the rest to stderr.
//!
//! Every line starts with a UTC timestamp, `YYYY-MM-DD HH:MM:SS.mmm`. The level on stderr
//! is Warn, raised one step per `-V`.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

/// The target under which the engine logs every request and reply.
pub const ACCESS_TARGET: &str = "xenstore::access";

struct DaemonLogger {
    stderr_level: LevelFilter,
    trace: Option<Mutex<LineWriter<File>>>,
}

fn is_access(target: &str) -> bool {
    target == ACCESS_TARGET || target.starts_with("xenstore::access::")
}

impl Log for DaemonLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        if is_access(metadata.target()) {
            self.trace.is_some()
        } else {
            metadata.level() <= self.stderr_level
        }
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let stamp = timestamp(SystemTime::now());
        if is_access(record.target()) {
            if let Some(trace) = &self.trace
                && let Ok(mut writer) = trace.lock()
            {
                let _ = writeln!(writer, "{stamp} {}", record.args());
            }
        } else {
            let _ = writeln!(
                std::io::stderr().lock(),
                "{stamp} xenstored {} {}: {}",
                record.level(),
                record.target(),
                record.args()
            );
        }
    }

    fn flush(&self) {
        if let Some(trace) = &self.trace
            && let Ok(mut writer) = trace.lock()
        {
            let _ = writer.flush();
        }
    }
}

/// Installs the logger; `trace_file` is opened for appending.
pub fn install(verbosity: u8, trace_file: Option<&Path>) -> std::io::Result<()> {
    let stderr_level = match verbosity {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let trace = match trace_file {
        Some(path) => Some(Mutex::new(LineWriter::new(
            File::options().create(true).append(true).open(path)?,
        ))),
        None => None,
    };
    // Access records may come at any level, so let them all through to `enabled`.
    let maximum = if trace.is_some() {
        LevelFilter::Trace
    } else {
        stderr_level
    };
    log::set_boxed_logger(Box::new(DaemonLogger {
        stderr_level,
        trace,
    }))
    .map_err(|error| std::io::Error::other(error.to_string()))?;
    log::set_max_level(maximum);
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC.
pub fn timestamp(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let second_of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Gregorian date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00.000");
        let leap_day = UNIX_EPOCH + Duration::from_millis(951_782_400_000 + 3_723_456);
        assert_eq!(timestamp(leap_day), "2000-02-29 01:02:03.456");
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(1_798_761_599)),
            "2026-12-31 23:59:59.000"
        );
    }
}
