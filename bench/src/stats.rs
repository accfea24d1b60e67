//! Latency samples and their summary (percentiles, throughput) for one measured run.

use std::time::{Duration, Instant};

/// Latencies of individual operations plus the wall time they took together.
#[derive(Default, Clone)]
pub struct Samples {
    pub latency_nanoseconds: Vec<u64>,
    pub wall_nanoseconds: u64,
    /// Operations counted for throughput (may differ from the number of latency samples, e.g.
    /// watch events delivered).
    pub operations: u64,
    /// Transactions only: how many `EAGAIN` retries the commits needed in total.
    pub retries: u64,
    /// CPU the server spent during the run (all its threads), if measured.
    pub server_cpu_nanoseconds: Option<u64>,
}

impl Samples {
    /// Times one operation and records it.
    pub fn time<R>(&mut self, operation: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let result = operation();
        self.record(start.elapsed());
        result
    }

    pub fn record(&mut self, latency: Duration) {
        self.latency_nanoseconds.push(latency.as_nanos() as u64);
        self.operations += 1;
    }

    /// Merges the samples of concurrent clients; the wall time is the longest client's.
    pub fn merge(parts: Vec<Samples>) -> Samples {
        let mut merged = Samples::default();
        for part in parts {
            merged.latency_nanoseconds.extend(part.latency_nanoseconds);
            merged.wall_nanoseconds = merged.wall_nanoseconds.max(part.wall_nanoseconds);
            merged.operations += part.operations;
            merged.retries += part.retries;
            merged.server_cpu_nanoseconds =
                match (merged.server_cpu_nanoseconds, part.server_cpu_nanoseconds) {
                    (Some(left), Some(right)) => Some(left.max(right)),
                    (left, right) => left.or(right),
                };
        }
        merged
    }

    pub fn summary(&self) -> Summary {
        let mut sorted = self.latency_nanoseconds.clone();
        sorted.sort_unstable();
        let percentile = |fraction: f64| -> f64 {
            if sorted.is_empty() {
                return f64::NAN;
            }
            let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
            sorted[index.min(sorted.len() - 1)] as f64 / 1000.0
        };
        let operations_per_second = if self.wall_nanoseconds == 0 {
            f64::NAN
        } else {
            self.operations as f64 * 1e9 / self.wall_nanoseconds as f64
        };
        Summary {
            operations_per_second,
            p50_microseconds: percentile(0.50),
            p99_microseconds: percentile(0.99),
            max_microseconds: sorted.last().map_or(f64::NAN, |max| *max as f64 / 1000.0),
            server_cpu_microseconds_per_operation: match self.server_cpu_nanoseconds {
                Some(cpu) if self.operations > 0 => cpu as f64 / 1000.0 / self.operations as f64,
                _ => f64::NAN,
            },
            retries_per_commit: if self.operations == 0 {
                f64::NAN
            } else {
                self.retries as f64 / self.operations as f64
            },
        }
    }
}

/// What a table row shows about one measured run.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub operations_per_second: f64,
    pub p50_microseconds: f64,
    pub p99_microseconds: f64,
    pub max_microseconds: f64,
    pub retries_per_commit: f64,
    /// Server CPU time per operation: the throughput a dedicated server core would reach is
    /// its inverse, whatever else runs on the machine.
    pub server_cpu_microseconds_per_operation: f64,
}

impl Summary {
    /// A row that carries no latency figures (memory measurements).
    pub fn empty() -> Summary {
        Summary {
            operations_per_second: f64::NAN,
            p50_microseconds: f64::NAN,
            p99_microseconds: f64::NAN,
            max_microseconds: f64::NAN,
            retries_per_commit: f64::NAN,
            server_cpu_microseconds_per_operation: f64::NAN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_throughput() {
        let samples = Samples {
            latency_nanoseconds: (1..=100).map(|value| value * 1000).collect(),
            wall_nanoseconds: 1_000_000_000,
            operations: 100,
            retries: 50,
            server_cpu_nanoseconds: Some(200_000),
        };
        let summary = samples.summary();
        assert_eq!(summary.operations_per_second, 100.0);
        assert_eq!(summary.max_microseconds, 100.0);
        assert!((summary.p50_microseconds - 50.0).abs() <= 1.0);
        assert!((summary.p99_microseconds - 99.0).abs() <= 1.0);
        assert_eq!(summary.retries_per_commit, 0.5);
        assert_eq!(summary.server_cpu_microseconds_per_operation, 2.0);
    }
}
