//! Write-rate limiting: an unprivileged domain that writes too fast stops being read.
//!
//! C xenstored (`domain.c` `wrl_*`) gives each domain a small burst of write credit that
//! refills over time, and keeps a global credit shared by all domains; while either is
//! negative the domain's ring is not read. The figures are C's compile-time defaults:
//! 200 writes per second, a burst of 10 per domain and 1000 overall.

/// Sustained writes per second.
pub const WRITES_PER_SECOND: i64 = 200;
/// Writes one domain may make in a burst.
pub const DOMAIN_BURST_WRITES: i64 = 10;
/// Writes all domains together may make in a burst.
pub const GLOBAL_BURST_WRITES: i64 = 1000;

/// Credit is kept in thousandths of a write so that refilling per millisecond is exact.
const MILLIWRITES_PER_WRITE: i64 = 1000;

/// A token bucket of write credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteCredit {
    credit_milliwrites: i64,
    updated_at_milliseconds: u64,
    burst_writes: i64,
}

impl WriteCredit {
    /// A full bucket holding `burst_writes`.
    pub const fn full(burst_writes: i64, now_milliseconds: u64) -> WriteCredit {
        WriteCredit {
            credit_milliwrites: burst_writes * MILLIWRITES_PER_WRITE,
            updated_at_milliseconds: now_milliseconds,
            burst_writes,
        }
    }

    /// The credit at `now_milliseconds`, in thousandths of a write.
    pub fn credit_at(&self, now_milliseconds: u64) -> i64 {
        let elapsed = now_milliseconds.saturating_sub(self.updated_at_milliseconds);
        // WRITES_PER_SECOND writes per 1000 ms = WRITES_PER_SECOND milliwrites per ms.
        let refill = i64::try_from(elapsed)
            .unwrap_or(i64::MAX / 2)
            .saturating_mul(WRITES_PER_SECOND);
        self.credit_milliwrites
            .saturating_add(refill)
            .min(self.burst_writes * MILLIWRITES_PER_WRITE)
    }

    /// Whether writing may go on (the credit is not negative).
    pub fn allows_input(&self, now_milliseconds: u64) -> bool {
        self.credit_at(now_milliseconds) >= 0
    }

    /// Takes `writes` writes of credit; the credit may go negative.
    pub fn debit(&mut self, now_milliseconds: u64, writes: i64) {
        self.credit_milliwrites = self
            .credit_at(now_milliseconds)
            .saturating_sub(writes.saturating_mul(MILLIWRITES_PER_WRITE));
        self.updated_at_milliseconds = self.updated_at_milliseconds.max(now_milliseconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut credit = WriteCredit::full(DOMAIN_BURST_WRITES, 0);
        for _ in 0..10 {
            assert!(credit.allows_input(0));
            credit.debit(0, 1);
        }
        assert!(credit.allows_input(0), "exactly empty still reads");
        credit.debit(0, 1);
        assert!(!credit.allows_input(0));
        assert!(credit.allows_input(5), "5 ms refill one write");
        assert_eq!(
            credit.credit_at(1_000_000),
            DOMAIN_BURST_WRITES * 1000,
            "capped at the burst"
        );
    }
}
