//! Following domains through Xen's stable domain-state interface (`XEN_DOMCTL_get_domain_state`,
//! Xen 4.21 and later), and telling the engine who shut down or died.
//!
//! With `DOMID_INVALID` the hypercall reports the next domain whose state changed and clears
//! its change flag, `ENOENT` once none is left; only the domain that handles `VIRQ_DOM_EXC`
//! may ask (`EACCES` otherwise). Binding the VIRQ marks every existing domain changed, so a
//! drain at start-up learns them all. Each domain carries a 64-bit unique id: a known domid
//! reported with another id is a new domain reusing the id, so the old one died
//! (`xen/include/public/domctl.h`, C xenstored 4.21 `domain.c:do_check_domain()`).

use crate::{DomainId, Engine, Platform};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// What the hypervisor reports of one domain (`xen_domctl_get_domain_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainState {
    /// `XEN_DOMCTL_GETDOMSTATE_STATE_EXIST`.
    pub exists: bool,
    /// `..._STATE_SHUTDOWN`.
    pub shutdown: bool,
    /// `..._STATE_DYING`.
    pub dying: bool,
    /// `..._STATE_DEAD`.
    pub dead: bool,
    /// The domain's unique id (never reused).
    pub unique_id: u64,
}

/// Why a query failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainStateError {
    /// `ENOENT`: no changed domain is left.
    NoneChanged,
    /// `EACCES`: the caller does not handle `VIRQ_DOM_EXC`.
    NotHandler,
    /// Any other failure.
    Other,
}

/// Something that answers `XEN_DOMCTL_get_domain_state(DOMID_INVALID)`.
pub trait DomainStateSource {
    /// The next changed domain and its state.
    fn next_changed_domain(&mut self) -> Result<(DomainId, DomainState), DomainStateError>;
}

/// What happened to a domain, as the engine needs to hear it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainChange {
    /// The domain shut down (or crashed) but still exists.
    Shutdown(DomainId),
    /// The domain is dying or gone.
    Died(DomainId),
}

/// The unique ids of the domains seen so far.
#[derive(Debug, Default)]
pub struct DomainStateTracker {
    unique_ids: BTreeMap<DomainId, u64>,
}

impl DomainStateTracker {
    /// Interprets one report.
    pub fn observe(&mut self, domain: DomainId, state: DomainState) -> Vec<DomainChange> {
        let mut changes = Vec::new();
        if let Some(known) = self.unique_ids.get(&domain).copied()
            && state.exists
            && known != state.unique_id
        {
            // The id was reused: the domain we knew is gone.
            changes.push(DomainChange::Died(domain));
            self.unique_ids.remove(&domain);
        }
        if !state.exists || state.dying || state.dead {
            self.unique_ids.remove(&domain);
            if !changes.contains(&DomainChange::Died(domain)) {
                changes.push(DomainChange::Died(domain));
            }
            return changes;
        }
        self.unique_ids.insert(domain, state.unique_id);
        if state.shutdown {
            changes.push(DomainChange::Shutdown(domain));
        }
        changes
    }

    /// Whether `domain` is known to exist.
    pub fn knows(&self, domain: DomainId) -> bool {
        self.unique_ids.contains_key(&domain)
    }

    /// Asks `source` until no changed domain is left and tells `engine` what happened.
    /// Returns how many reports were read.
    pub fn drain(
        &mut self,
        source: &mut dyn DomainStateSource,
        engine: &mut Engine,
        platform: &mut dyn Platform,
    ) -> Result<usize, DomainStateError> {
        let mut reports = 0;
        loop {
            match source.next_changed_domain() {
                Ok((domain, state)) => {
                    reports += 1;
                    for change in self.observe(domain, state) {
                        match change {
                            DomainChange::Shutdown(domain) => {
                                engine.domain_shutdown(platform, domain)
                            }
                            DomainChange::Died(domain) => {
                                log::info!("domain {domain} is gone");
                                engine.domain_died(platform, domain);
                            }
                        }
                    }
                }
                Err(DomainStateError::NoneChanged) => return Ok(reports),
                Err(error) => return Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(unique_id: u64) -> DomainState {
        DomainState {
            exists: true,
            shutdown: false,
            dying: false,
            dead: false,
            unique_id,
        }
    }

    #[test]
    fn shutdown_death_and_reuse() {
        let mut tracker = DomainStateTracker::default();
        assert!(tracker.observe(DomainId(5), alive(50)).is_empty());
        let shut = DomainState {
            shutdown: true,
            ..alive(50)
        };
        assert_eq!(
            tracker.observe(DomainId(5), shut),
            [DomainChange::Shutdown(DomainId(5))]
        );
        assert_eq!(
            tracker.observe(DomainId(5), alive(51)),
            [DomainChange::Died(DomainId(5))],
            "id reused"
        );
        assert!(tracker.knows(DomainId(5)));
        let dead = DomainState {
            exists: false,
            dead: true,
            ..alive(51)
        };
        assert_eq!(
            tracker.observe(DomainId(5), dead),
            [DomainChange::Died(DomainId(5))]
        );
        assert!(!tracker.knows(DomainId(5)));
    }
}
