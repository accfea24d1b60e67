//! A platform with no hypervisor, for tests, fuzz targets and benchmarks that drive the engine directly.
//!
//! Always compiled (it is small and allocates nothing) so that other crates' tests share it:
//! `engine/tests/support/`, and any front end's tests that need an engine without rings.

use crate::{DomainId, Platform, StoreError, StoreResult};

/// A [`Platform`] without a hypervisor: every domain exists unless marked dead, connecting a
/// domain only records it, and the clock moves only when the caller moves it.
///
/// It never allocates, so a test that fails the engine's allocations one by one
/// (`engine/tests/allocation_failures.rs`) only ever fails the engine's own.
#[derive(Clone, Debug, Default)]
pub struct NullPlatform {
    /// Domains introduced and not yet released (what `connect_domain` recorded).
    pub connected: DomainSet,
    /// Domains that no longer exist (`domain_exists` answers false for them).
    pub dead: DomainSet,
    /// What `now_milliseconds` answers.
    pub now_milliseconds: u64,
    /// Makes `connect_domain` fail with `EIO`, as a ring that cannot be mapped.
    pub refuse_connect: bool,
}

impl Platform for NullPlatform {
    fn connect_domain(
        &mut self,
        domain: DomainId,
        _ring_frame: u64,
        _remote_port: u32,
    ) -> StoreResult<()> {
        if self.refuse_connect {
            return Err(StoreError::InputOutput);
        }
        self.connected.insert(domain);
        Ok(())
    }

    fn disconnect_domain(&mut self, domain: DomainId) {
        self.connected.remove(domain);
    }

    fn domain_exists(&mut self, domain: DomainId) -> bool {
        !self.dead.contains(domain)
    }

    fn now_milliseconds(&mut self) -> u64 {
        self.now_milliseconds
    }
}

/// Words of [`DomainSet`]: one bit for each of the 65536 `domid_t` values.
const DOMAIN_SET_WORDS: usize = 65536 / 64;

/// A set of domain ids, one bit each (8 KiB, no allocation).
#[derive(Clone)]
pub struct DomainSet {
    bits: [u64; DOMAIN_SET_WORDS],
}

impl DomainSet {
    /// The word holding `domain`'s bit, and the bit.
    fn position(domain: DomainId) -> (usize, u64) {
        let index = usize::from(domain.0);
        (index / 64, 1 << (index % 64))
    }

    /// Adds `domain`; whether it was absent.
    pub fn insert(&mut self, domain: DomainId) -> bool {
        let (word, bit) = Self::position(domain);
        let Some(word) = self.bits.get_mut(word) else {
            return false;
        };
        let absent = *word & bit == 0;
        *word |= bit;
        absent
    }

    /// Removes `domain`; whether it was present.
    pub fn remove(&mut self, domain: DomainId) -> bool {
        let (word, bit) = Self::position(domain);
        let Some(word) = self.bits.get_mut(word) else {
            return false;
        };
        let present = *word & bit != 0;
        *word &= !bit;
        present
    }

    /// Whether `domain` is in the set.
    pub fn contains(&self, domain: DomainId) -> bool {
        let (word, bit) = Self::position(domain);
        self.bits.get(word).is_some_and(|word| word & bit != 0)
    }
}

impl Default for DomainSet {
    fn default() -> Self {
        DomainSet {
            bits: [0; DOMAIN_SET_WORDS],
        }
    }
}

impl core::fmt::Debug for DomainSet {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_set()
            .entries(
                (0..=u16::MAX)
                    .map(DomainId)
                    .filter(|domain| self.contains(*domain)),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_sets_hold_every_domid() {
        let mut set = DomainSet::default();
        for domain in [DomainId(0), DomainId(63), DomainId(64), DomainId(u16::MAX)] {
            assert!(!set.contains(domain));
            assert!(set.insert(domain));
            assert!(!set.insert(domain));
            assert!(set.contains(domain));
        }
        assert!(!set.contains(DomainId(1)));
        assert_eq!(
            std::format!("{set:?}"),
            "{DomainId(0), DomainId(63), DomainId(64), DomainId(65535)}"
        );
        assert!(set.remove(DomainId(64)));
        assert!(!set.remove(DomainId(64)));
        assert!(!set.contains(DomainId(64)));
        assert!(set.contains(DomainId(63)));
    }

    #[test]
    fn the_null_platform_records_connections_and_deaths() {
        let mut platform = NullPlatform::default();
        assert_eq!(platform.connect_domain(DomainId(3), 0, 1), Ok(()));
        assert!(platform.connected.contains(DomainId(3)));
        platform.disconnect_domain(DomainId(3));
        assert!(!platform.connected.contains(DomainId(3)));
        platform.refuse_connect = true;
        assert_eq!(
            platform.connect_domain(DomainId(3), 0, 1),
            Err(StoreError::InputOutput)
        );
        assert!(platform.domain_exists(DomainId(4)));
        platform.dead.insert(DomainId(4));
        assert!(!platform.domain_exists(DomainId(4)));
        platform.now_milliseconds = 7;
        assert_eq!(platform.now_milliseconds(), 7);
    }
}
