//! Write-rate limiting: an unprivileged domain that writes too fast stops being read.
//!
//! C xenstored (`domain.c` `wrl_*`) gives each domain a small burst of write credit that
//! refills over time, and keeps a global reserve that lends to a domain in debt; while a
//! domain's *own* credit is negative its ring is not read. The reserve only lends: when it
//! is empty, nobody but the domains in debt waits, so guests writing at their allowed rate
//! never hold back a guest that does not write. The figures are C's compile-time defaults:
//! 200 writes per second, a burst of 10 per domain and 1000 in the reserve. C fills the
//! reserve with the credit idle domains would have got beyond their burst; here it starts
//! empty and refills at the per-domain rate, which bounds what it lends the same way
//! without tracking every idle domain.

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

    /// An empty bucket that refills up to `burst_writes` (C's reserve starts at 0 and fills
    /// from the credit domains do not use).
    pub const fn empty(burst_writes: i64, now_milliseconds: u64) -> WriteCredit {
        WriteCredit {
            credit_milliwrites: 0,
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

    /// Pays as much of `borrower`'s debt as this credit can (C `wrl_credit_update()`: "if
    /// the domain is in debt, pay it off from the reserve"); this credit never goes below 0.
    pub fn lend_to(&mut self, borrower: &mut WriteCredit, now_milliseconds: u64) {
        let debt = borrower.credit_at(now_milliseconds).min(0).saturating_neg();
        let spare = self.credit_at(now_milliseconds).max(0);
        let transfer = debt.min(spare);
        if transfer == 0 {
            return;
        }
        self.credit_milliwrites = spare - transfer;
        self.updated_at_milliseconds = self.updated_at_milliseconds.max(now_milliseconds);
        borrower.credit_milliwrites = borrower.credit_at(now_milliseconds) + transfer;
        borrower.updated_at_milliseconds = borrower.updated_at_milliseconds.max(now_milliseconds);
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

    #[test]
    fn the_reserve_lends_until_it_is_empty() {
        let mut reserve = WriteCredit::full(2, 0);
        let mut domain = WriteCredit::full(1, 0);
        domain.debit(0, 2);
        reserve.lend_to(&mut domain, 0);
        assert_eq!(domain.credit_at(0), 0, "the debt of one write is paid");
        assert_eq!(reserve.credit_at(0), 1000);
        domain.debit(0, 3);
        reserve.lend_to(&mut domain, 0);
        assert_eq!(domain.credit_at(0), -2000, "one of three writes lent");
        assert_eq!(reserve.credit_at(0), 0, "never below zero");
        assert!(!domain.allows_input(0));
    }
}
