//! The domain-state consumer against a model of Xen 4.21's `XEN_DOMCTL_get_domain_state`.
//!
//! No Debian package carries Xen 4.21, so the interface is modelled from its specification
//! (docs/xen-interface.md, "Domain state"; `xen/include/public/domctl.h`): binding
//! `VIRQ_DOM_EXC` marks every existing domain changed; `DOMID_INVALID` returns the lowest
//! changed domain and clears its flag, `ENOENT` when none is left; callers other than the VIRQ
//! handler get `EACCES`; every domain has a unique id that is never reused, even when its
//! domid is.

mod support;

use std::collections::BTreeMap;
use support::Harness;
use xenstore_engine::DomainId;
use xenstore_engine::domain_state::{
    DomainState, DomainStateError, DomainStateSource, DomainStateTracker,
};

#[derive(Default)]
struct HypervisorModel {
    domains: BTreeMap<u16, DomainState>,
    changed: BTreeMap<u16, bool>,
    next_unique_id: u64,
    virq_handler: Option<u16>,
    /// The domain making the calls.
    caller: u16,
}

impl HypervisorModel {
    fn create(&mut self, domid: u16) {
        self.next_unique_id += 1;
        let state = DomainState {
            exists: true,
            shutdown: false,
            dying: false,
            dead: false,
            unique_id: self.next_unique_id,
        };
        self.domains.insert(domid, state);
        self.changed.insert(domid, true);
    }
    fn shutdown(&mut self, domid: u16) {
        self.domains.get_mut(&domid).unwrap().shutdown = true;
        self.changed.insert(domid, true);
    }
    fn destroy(&mut self, domid: u16) {
        let state = self.domains.get_mut(&domid).unwrap();
        state.dying = true;
        state.dead = true;
        self.changed.insert(domid, true);
    }
    fn bind_virq(&mut self, handler: u16) {
        self.virq_handler = Some(handler);
        for domid in self.domains.keys() {
            self.changed.insert(*domid, true);
        }
    }
}

impl DomainStateSource for HypervisorModel {
    fn next_changed_domain(&mut self) -> Result<(DomainId, DomainState), DomainStateError> {
        if self.virq_handler != Some(self.caller) {
            return Err(DomainStateError::NotHandler);
        }
        let Some(domid) = self
            .changed
            .iter()
            .find(|(_, changed)| **changed)
            .map(|(domid, _)| *domid)
        else {
            return Err(DomainStateError::NoneChanged);
        };
        self.changed.remove(&domid);
        let state = self.domains.get(&domid).copied().unwrap_or(DomainState {
            exists: false,
            shutdown: false,
            dying: false,
            dead: true,
            unique_id: 0,
        });
        if state.dead {
            // A dead domain is reported once, then it is gone.
            self.domains.remove(&domid);
        }
        Ok((DomainId(domid), state))
    }
}

fn guest_home(h: &mut Harness, domid: u16) {
    assert_eq!(
        h.request(h.dom0, "MKDIR", 0, &format!("/local/domain/{domid}|")),
        "OK|"
    );
    assert_eq!(
        h.request(
            h.dom0,
            "SET_PERMS",
            0,
            &format!("/local/domain/{domid}|n{domid}|")
        ),
        "OK|"
    );
}

/// dom0, the stub (domain 1: the caller, bound to `VIRQ_DOM_EXC`) and `others` exist, and
/// the tracker has learnt them all.
fn started_with(others: &[u16]) -> (Harness, HypervisorModel, DomainStateTracker) {
    let mut h = Harness::new();
    let mut xen = HypervisorModel {
        caller: 1,
        ..Default::default()
    };
    for &domid in [0, 1].iter().chain(others) {
        xen.create(domid);
    }
    xen.bind_virq(1);
    let mut tracker = DomainStateTracker::default();
    drain(&mut tracker, &mut xen, &mut h);
    (h, xen, tracker)
}

/// Reads every pending domain state change; the drain must succeed.
fn drain(tracker: &mut DomainStateTracker, xen: &mut HypervisorModel, h: &mut Harness) {
    tracker.drain(xen, &mut h.engine, &mut h.platform).unwrap();
}

/// Guest `domid` gets its home and is introduced; dom0 watches `@releaseDomain` (token `r`).
fn introduce_watched(h: &mut Harness, domid: u16) {
    guest_home(h, domid);
    h.introduce(domid);
    assert_eq!(h.request(h.dom0, "WATCH", 0, "@releaseDomain|r|"), "OK|");
    h.events(h.dom0);
}

/// Domain `domid` is gone for good: dom0 got one `@releaseDomain` event, and the domain's
/// nodes and introduction are gone.
fn assert_released(h: &mut Harness, domid: u16) {
    assert_eq!(h.events(h.dom0), ["@releaseDomain r"]);
    let home = format!("/local/domain/{domid}|");
    assert_eq!(
        h.request(h.dom0, "READ", 0, &home),
        "ERROR ENOENT",
        "the domain's nodes are gone"
    );
    let introduced = h.request(h.dom0, "IS_DOMAIN_INTRODUCED", 0, &format!("{domid}|"));
    assert_eq!(introduced, "F|");
}

#[test]
fn start_up_drain_learns_every_domain_and_only_the_handler_may_ask() {
    let mut h = Harness::new();
    let mut xen = HypervisorModel {
        caller: 1,
        ..Default::default()
    };
    for domid in [0, 1, 3] {
        xen.create(domid);
    }
    xen.changed.clear();
    let mut tracker = DomainStateTracker::default();
    assert_eq!(
        tracker.drain(&mut xen, &mut h.engine, &mut h.platform),
        Err(DomainStateError::NotHandler)
    );
    xen.bind_virq(1);
    assert_eq!(
        tracker.drain(&mut xen, &mut h.engine, &mut h.platform),
        Ok(3)
    );
    assert!(tracker.knows(DomainId(3)));
    assert_eq!(
        tracker.drain(&mut xen, &mut h.engine, &mut h.platform),
        Ok(0),
        "ENOENT: nothing changed"
    );
}

#[test]
fn shutdown_and_death_reach_watchers_and_clean_up() {
    let (mut h, mut xen, mut tracker) = started_with(&[]);
    xen.create(7);
    introduce_watched(&mut h, 7);
    drain(&mut tracker, &mut xen, &mut h);
    assert!(h.events(h.dom0).is_empty(), "creation is not a release");

    xen.shutdown(7);
    drain(&mut tracker, &mut xen, &mut h);
    assert_eq!(h.events(h.dom0), ["@releaseDomain r"]);
    assert_eq!(
        h.request(h.dom0, "READ", 0, "/local/domain/7|"),
        "",
        "shutdown keeps the nodes"
    );

    xen.destroy(7);
    h.platform.dead.insert(DomainId(7));
    drain(&mut tracker, &mut xen, &mut h);
    assert_released(&mut h, 7);
}

#[test]
fn a_reused_domid_is_the_old_domain_dying() {
    let (mut h, mut xen, mut tracker) = started_with(&[9]);
    introduce_watched(&mut h, 9);
    // The domain dies and a new one gets its id before the stub looks: one report only,
    // with a new unique id.
    xen.domains.remove(&9);
    xen.create(9);
    drain(&mut tracker, &mut xen, &mut h);
    assert_released(&mut h, 9);
}
