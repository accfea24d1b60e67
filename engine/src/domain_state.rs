//! Following domains through Xen's stable domain-state interface (`XEN_DOMCTL_get_domain_state`,
//! Xen 4.21 and later), and telling the engine who shut down or died.
//!
//! With `DOMID_INVALID` the hypercall reports the next domain whose state changed and clears
//! its change flag, `ENOENT` once none is left; only the domain that handles `VIRQ_DOM_EXC`
//! may ask (`EACCES` otherwise). Binding the VIRQ marks every existing domain changed, so a
//! drain at start-up learns them all. Each domain carries a 64-bit unique id: a known domid
//! reported with another id is a new domain reusing the id, so the old one died. A death is
//! reported twice (dying or dead, then freed) and handled once (docs/xen-interface.md,
//! "Domain state").

use crate::fallible::SortedMap;
use crate::{DomainId, Engine, Platform};

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

/// The changes one report makes known: at most two (the domain reusing the id replaced a
/// dead one, and shut down), kept inline so that a report allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainChanges {
    changes: [DomainChange; 2],
    count: usize,
}

impl DomainChanges {
    const fn new() -> DomainChanges {
        DomainChanges {
            changes: [DomainChange::Died(DomainId::INVALID); 2],
            count: 0,
        }
    }

    fn push(&mut self, change: DomainChange) {
        if let Some(slot) = self.changes.get_mut(self.count) {
            *slot = change;
            self.count += 1;
        }
    }

    /// The changes, in the order they happened.
    pub fn as_slice(&self) -> &[DomainChange] {
        self.changes.get(..self.count).unwrap_or(&[])
    }

    /// Whether the report changed nothing the engine needs to hear.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn contains(&self, change: &DomainChange) -> bool {
        self.as_slice().contains(change)
    }
}

impl IntoIterator for DomainChanges {
    type Item = DomainChange;
    type IntoIter = core::iter::Take<core::array::IntoIter<DomainChange, 2>>;

    fn into_iter(self) -> Self::IntoIter {
        self.changes.into_iter().take(self.count)
    }
}

/// The unique ids of the domains seen so far.
#[derive(Debug, Default)]
pub struct DomainStateTracker {
    /// By domain id: the living domains (a domain leaves when its death is reported). A map
    /// whose growth can be refused (the reports follow guests' lifecycles, and the store
    /// must not end for want of memory to note one).
    unique_ids: SortedMap<DomainId, u64>,
}

impl DomainStateTracker {
    /// Interprets one report. `store_knows` says whether the store has anything of a domain
    /// the tracker does not know (a record in the engine: see `Engine::knows_domain`).
    ///
    /// A death is reported once: Xen reports a domain when it becomes dying or dead and
    /// again when it is freed (docs/xen-interface.md, "Domain state"); the first report
    /// takes it out of the tracker, and the later ones find neither the tracker nor the
    /// store knowing it, so they change nothing. A domain the tracker could not note (no
    /// memory) but the store knows (introduced, or owning nodes) still dies. A known domid
    /// reported with another unique id is a new domain reusing the id: the old one died.
    pub fn observe(
        &mut self,
        domain: DomainId,
        state: DomainState,
        store_knows: &mut dyn FnMut(DomainId) -> bool,
    ) -> DomainChanges {
        let mut changes = DomainChanges::new();
        let known = self.unique_ids.get(&domain).copied();
        if let Some(known) = known
            && state.exists
            && known != state.unique_id
        {
            // The id was reused: the domain we knew is gone.
            changes.push(DomainChange::Died(domain));
            self.unique_ids.remove(&domain);
        }
        if !state.exists || state.dying || state.dead {
            self.unique_ids.remove(&domain);
            if !changes.contains(&DomainChange::Died(domain))
                && (known.is_some() || store_knows(domain))
            {
                changes.push(DomainChange::Died(domain));
            }
            return changes;
        }
        if self.unique_ids.try_insert(domain, state.unique_id).is_err() {
            log::warn!("domain {domain}: no memory to note it");
        }
        if state.shutdown {
            changes.push(DomainChange::Shutdown(domain));
        }
        changes
    }

    /// Whether `domain` is known to exist.
    pub fn knows(&self, domain: DomainId) -> bool {
        self.unique_ids.contains_key(&domain)
    }

    /// Follows `domain`, known by `unique_id` from before (a live update's stream records
    /// each ring's domain with it): Xen reporting that domid with another unique id then
    /// means the domain died meanwhile and the id was reused. No memory: not followed,
    /// which only loses that check.
    pub fn remember(&mut self, domain: DomainId, unique_id: u64) {
        if self.unique_ids.try_insert(domain, unique_id).is_err() {
            log::warn!("domain {domain}: no memory to note it");
        }
    }

    /// The unique id Xen gave `domain`, when it is being followed (for the migration
    /// stream's connection records).
    pub fn unique_id(&self, domain: DomainId) -> Option<u64> {
        self.unique_ids.get(&domain).copied()
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
                    let mut store_knows = |domain| engine.knows_domain(domain);
                    for change in self.observe(domain, state, &mut store_knows) {
                        match change {
                            DomainChange::Shutdown(domain) => {
                                engine.domain_shutdown(platform, domain)
                            }
                            // Logged by the engine, where the death is handled.
                            DomainChange::Died(domain) => engine.domain_died(platform, domain),
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

    #[test]
    fn a_remembered_domain_reported_with_another_unique_id_died() {
        let mut tracker = DomainStateTracker::default();
        tracker.remember(DomainId(5), 100);
        tracker.remember(DomainId(6), 200);
        let mut store_knows = |_| true;
        let changes = tracker.observe(DomainId(5), alive(101), &mut store_knows);
        assert_eq!(changes.as_slice(), [DomainChange::Died(DomainId(5))]);
        assert_eq!(tracker.unique_id(DomainId(5)), Some(101));
        let changes = tracker.observe(DomainId(6), alive(200), &mut store_knows);
        assert!(changes.is_empty());
    }

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
        assert!(
            tracker
                .observe(DomainId(5), alive(50), &mut |_| false)
                .is_empty()
        );
        let shut = DomainState {
            shutdown: true,
            ..alive(50)
        };
        assert_eq!(
            tracker
                .observe(DomainId(5), shut, &mut |_| false)
                .as_slice(),
            [DomainChange::Shutdown(DomainId(5))]
        );
        assert_eq!(
            tracker
                .observe(DomainId(5), alive(51), &mut |_| false)
                .as_slice(),
            [DomainChange::Died(DomainId(5))],
            "id reused"
        );
        let reused_and_shut = DomainState {
            shutdown: true,
            ..alive(52)
        };
        assert_eq!(
            tracker
                .observe(DomainId(5), reused_and_shut, &mut |_| false)
                .as_slice(),
            [
                DomainChange::Died(DomainId(5)),
                DomainChange::Shutdown(DomainId(5))
            ]
        );
        assert!(tracker.knows(DomainId(5)));
        let dead = DomainState {
            exists: false,
            dead: true,
            ..alive(51)
        };
        assert_eq!(
            tracker
                .observe(DomainId(5), dead, &mut |_| false)
                .as_slice(),
            [DomainChange::Died(DomainId(5))]
        );
        assert!(!tracker.knows(DomainId(5)));
    }

    fn dying(unique_id: u64) -> DomainState {
        DomainState {
            dying: true,
            dead: true,
            ..alive(unique_id)
        }
    }

    /// What Xen reports once a domain is freed: nothing exists, the unique id is 0.
    const FREED: DomainState = DomainState {
        exists: false,
        shutdown: false,
        dying: false,
        dead: false,
        unique_id: 0,
    };

    #[test]
    fn a_death_reported_twice_is_one_death() {
        let mut tracker = DomainStateTracker::default();
        let mut store_knows_nothing = |_| false;
        assert!(
            tracker
                .observe(DomainId(6), alive(60), &mut store_knows_nothing)
                .is_empty()
        );
        assert_eq!(
            tracker
                .observe(DomainId(6), dying(60), &mut store_knows_nothing)
                .as_slice(),
            [DomainChange::Died(DomainId(6))]
        );
        assert!(
            tracker
                .observe(DomainId(6), FREED, &mut store_knows_nothing)
                .is_empty(),
            "freed after its death was reported"
        );
        assert!(
            tracker
                .observe(DomainId(6), dying(60), &mut store_knows_nothing)
                .is_empty(),
            "dying again"
        );
    }

    #[test]
    fn an_unknown_domain_dies_only_if_the_store_knows_it() {
        let mut tracker = DomainStateTracker::default();
        let mut asked = 0;
        let mut store_knows_nothing = |_| {
            asked += 1;
            false
        };
        assert!(
            tracker
                .observe(DomainId(8), dying(80), &mut store_knows_nothing)
                .is_empty()
        );
        assert!(
            tracker
                .observe(DomainId(8), FREED, &mut store_knows_nothing)
                .is_empty()
        );
        assert_eq!(asked, 2);
        // Not noted by the tracker (no memory, say), but introduced in the engine.
        let mut store_knows_8 = |domain| domain == DomainId(8);
        assert_eq!(
            tracker
                .observe(DomainId(8), dying(81), &mut store_knows_8)
                .as_slice(),
            [DomainChange::Died(DomainId(8))]
        );
    }

    #[test]
    fn a_reused_id_is_one_death_and_a_new_domain() {
        let mut tracker = DomainStateTracker::default();
        let mut store_knows_nothing = |_| false;
        tracker.observe(DomainId(9), alive(90), &mut store_knows_nothing);
        assert_eq!(
            tracker
                .observe(DomainId(9), dying(91), &mut store_knows_nothing)
                .as_slice(),
            [DomainChange::Died(DomainId(9))],
            "the old one died, the new one is dying: one death"
        );
        tracker.observe(DomainId(9), alive(92), &mut store_knows_nothing);
        assert!(tracker.knows(DomainId(9)));
        assert!(
            tracker
                .observe(DomainId(9), alive(92), &mut store_knows_nothing)
                .is_empty()
        );
    }
}
