//! The domain-state consumer against a model of Xen 4.21's `XEN_DOMCTL_get_domain_state`.
//!
//! No Debian package carries Xen 4.21, so the interface is modelled from its specification
//! (docs/xen-interface.md, "Domain state"; `xen/include/public/domctl.h`): binding
//! `VIRQ_DOM_EXC` marks every existing domain changed; `DOMID_INVALID` returns the lowest
//! changed domain and clears its flag, `ENOENT` when none is left; callers other than the VIRQ
//! handler get `EACCES`; every domain has a unique id that is never reused, even when its
//! domid is. A domain's death changes it twice: when it is dead, and when Xen frees it
//! (reported zeroed), after the store let go of its ring.

mod support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use support::Harness;
use support::failing_allocator::FailingAllocator;
use xenstore_engine::DomainId;
use xenstore_engine::domain_state::{
    DomainState, DomainStateError, DomainStateSource, DomainStateTracker,
};

/// The tracker's failure to note a domain is provoked by failing its allocation.
#[global_allocator]
static ALLOCATOR: FailingAllocator = FailingAllocator;

std::thread_local! {
    /// The info lines logged by this test's thread (tests run in parallel threads).
    static INFO_LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// A logger keeping each thread's info lines (only those: a warning may be logged while
/// allocations fail).
struct CapturedInfoLines;

impl log::Log for CapturedInfoLines {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() == log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = record.args().to_string();
            INFO_LINES.with(|lines| lines.borrow_mut().push(line));
        }
    }

    fn flush(&self) {}
}

static LOGGER: CapturedInfoLines = CapturedInfoLines;

/// How many info lines this thread logged that are exactly `text`.
fn logged(text: &str) -> usize {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    INFO_LINES.with(|lines| lines.borrow().iter().filter(|line| *line == text).count())
}

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
        // Killed: dead (dying is only the state while the kill is in progress).
        let state = self.domains.get_mut(&domid).unwrap();
        state.dead = true;
        self.changed.insert(domid, true);
    }
    /// The dead domain's last reference went: Xen frees it.
    fn free(&mut self, domid: u16) {
        self.domains.remove(&domid);
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
        // A domain that no longer exists comes back zeroed.
        let state = self.domains.get(&domid).copied().unwrap_or(DomainState {
            exists: false,
            shutdown: false,
            dying: false,
            dead: false,
            unique_id: 0,
        });
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

#[test]
fn a_death_reported_dying_then_freed_is_handled_once() {
    assert_eq!(logged("domain 7 is gone"), 0);
    let (mut h, mut xen, mut tracker) = started_with(&[]);
    xen.create(7);
    introduce_watched(&mut h, 7);
    drain(&mut tracker, &mut xen, &mut h);

    xen.destroy(7);
    h.platform.dead.insert(DomainId(7));
    drain(&mut tracker, &mut xen, &mut h);
    assert_released(&mut h, 7);
    assert_eq!(logged("domain 7 is gone"), 1);

    // An entry naming the dead domain is kept, inert; a second clean-up would remove it.
    assert_eq!(h.request(h.dom0, "WRITE", 0, "/witness|"), "OK|");
    assert_eq!(h.request(h.dom0, "SET_PERMS", 0, "/witness|n0|r7|"), "OK|");
    xen.free(7);
    drain(&mut tracker, &mut xen, &mut h);
    assert!(h.events(h.dom0).is_empty(), "no second @releaseDomain");
    assert_eq!(h.request(h.dom0, "GET_PERMS", 0, "/witness|"), "n0|r7|");
    assert_eq!(logged("domain 7 is gone"), 1, "logged once");
    assert_eq!(
        tracker.drain(&mut xen, &mut h.engine, &mut h.platform),
        Ok(0)
    );
}

#[test]
fn the_death_of_a_domain_the_store_never_knew_costs_nothing() {
    // Domain 4 is known to the tracker only; domain 12 to nobody (created and destroyed
    // before the stub looked).
    let (mut h, mut xen, mut tracker) = started_with(&[4]);
    assert_eq!(h.request(h.dom0, "WATCH", 0, "@releaseDomain|r|"), "OK|");
    h.events(h.dom0);
    h.platform.dead.insert(DomainId(4));
    h.platform.dead.insert(DomainId(12));
    assert_eq!(h.request(h.dom0, "WRITE", 0, "/witness|"), "OK|");
    assert_eq!(
        h.request(h.dom0, "SET_PERMS", 0, "/witness|n0|r4|r12|"),
        "OK|"
    );
    xen.create(12);
    xen.destroy(12);
    xen.destroy(4);
    drain(&mut tracker, &mut xen, &mut h);
    xen.free(12);
    xen.free(4);
    drain(&mut tracker, &mut xen, &mut h);
    assert!(h.events(h.dom0).is_empty());
    assert_eq!(
        h.request(h.dom0, "GET_PERMS", 0, "/witness|"),
        "n0|r4|r12|",
        "no clean-up ran"
    );
    assert_eq!(logged("domain 4 is gone"), 0);
    assert_eq!(logged("domain 12 is gone"), 0);
    assert!(!tracker.knows(DomainId(4)) && !tracker.knows(DomainId(12)));
}

#[test]
fn a_new_domain_reusing_an_id_is_not_the_old_one() {
    let (mut h, mut xen, mut tracker) = started_with(&[9]);
    introduce_watched(&mut h, 9);
    xen.destroy(9);
    h.platform.dead.insert(DomainId(9));
    drain(&mut tracker, &mut xen, &mut h);
    assert_released(&mut h, 9);
    // Freed, and a new domain takes id 9 before the stub looks: one report, a new unique id.
    xen.free(9);
    xen.create(9);
    h.platform.dead.remove(DomainId(9));
    drain(&mut tracker, &mut xen, &mut h);
    assert!(h.events(h.dom0).is_empty(), "the old one died once");
    assert!(tracker.knows(DomainId(9)), "the new one is known");
    assert_eq!(logged("domain 9 is gone"), 1);
    guest_home(&mut h, 9);
    h.introduce(9);
    assert!(h.events(h.dom0).is_empty());
    // The new one dies: that is a second death, handled once.
    xen.destroy(9);
    h.platform.dead.insert(DomainId(9));
    drain(&mut tracker, &mut xen, &mut h);
    xen.free(9);
    drain(&mut tracker, &mut xen, &mut h);
    assert_released(&mut h, 9);
    assert_eq!(logged("domain 9 is gone"), 2);
}

#[test]
fn an_introduced_domain_the_tracker_could_not_note_still_dies() {
    let mut h = Harness::new();
    let mut xen = HypervisorModel {
        caller: 1,
        ..Default::default()
    };
    for domid in [0, 1, 7] {
        xen.create(domid);
    }
    xen.bind_virq(1);
    // Every allocation fails while the start-up drain reads the domains: none is noted.
    let mut tracker = DomainStateTracker::default();
    FailingAllocator::exhaust();
    let drained = tracker.drain(&mut xen, &mut h.engine, &mut h.platform);
    let failed = FailingAllocator::disarm();
    assert_eq!(drained, Ok(3));
    assert!(failed && !tracker.knows(DomainId(7)));

    introduce_watched(&mut h, 7);
    xen.destroy(7);
    h.platform.dead.insert(DomainId(7));
    drain(&mut tracker, &mut xen, &mut h);
    assert_released(&mut h, 7);
    xen.free(7);
    drain(&mut tracker, &mut xen, &mut h);
    assert!(h.events(h.dom0).is_empty());
    assert_eq!(logged("domain 7 is gone"), 1);
}
