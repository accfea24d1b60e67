//! Property tests: random request programs from dom0 and three guests, checked by the model
//! in `support/model.rs` after every step (accounting equals a recount, tree shape,
//! one reply per request, transaction isolation, permissions, quotas).
//!
//! The same model runs under `cargo fuzz` (`fuzz/fuzz_targets/engine_model.rs`) for long
//! coverage-guided runs; here a fixed number of cases keeps every CI run fast, and proptest
//! shrinks a failure to a short program.

mod support;

use proptest::prelude::*;
use support::model;
use support::program_cases::program_cases;

proptest! {
    #![proptest_config(program_cases(256))]

    #[test]
    fn every_program_keeps_the_invariants(program in proptest::collection::vec(any::<u8>(), 0..1200)) {
        model::Model::run(&program);
    }

    #[test]
    fn transaction_heavy_programs_keep_isolation(
        steps in proptest::collection::vec((0u8..4, prop::sample::select(vec![2u8, 3, 4, 6, 12, 13, 14, 0, 1]), any::<[u8; 10]>()), 0..120)
    ) {
        // Bias towards writes, removals and transaction boundaries.
        let mut program = Vec::new();
        for (actor, operation, rest) in steps {
            program.push(actor);
            program.push(operation);
            program.extend_from_slice(&rest);
        }
        model::Model::run(&program);
    }
}

#[test]
fn a_fixed_program_with_death_and_slow_guests_keeps_the_invariants() {
    // Guest 1 writes, watches, becomes slow, its watch fires while it does not read, time
    // passes (events expire), then it dies and its id is reused.
    let program: Vec<u8> = [
        [1u8, 2, 0, 0, 1, 3, 0], // guest 1 WRITE a
        [1, 10, 0, 0, 1, 0, 0],  // guest 1 WATCH a
        [1, 16, 0, 0, 0, 0, 0],  // guest 1 becomes slow
        [0, 2, 0, 3, 1, 1, 4],   // dom0 writes under guest 1's home
        [0, 17, 0, 0, 0, 0, 0],  // 25 s pass
        [1, 18, 0, 0, 0, 0, 0],  // guest 1 dies, id reused
        [2, 12, 0, 0, 0, 0, 0],  // guest 2 TRANSACTION_START
        [2, 2, 1, 0, 1, 0, 5],   // guest 2 writes inside it
        [2, 13, 1, 0, 1, 0, 0],  // commit
    ]
    .concat();
    model::Model::run(&program);
}

/// One permission entry as text (`r1`, `b0`, ...), for the watch-filter property.
fn permission_entry() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!['n', 'r', 'w', 'b']),
        prop::sample::select(vec![0u16, 1, 2]),
    )
        .prop_map(|(access, domain)| format!("{access}{domain}"))
}

/// Owner (never the watching guest 1) plus up to two entries.
fn permissions() -> impl Strategy<Value = Vec<String>> {
    (
        prop::sample::select(vec!["n0", "r0", "n2", "r2", "b2"]),
        proptest::collection::vec(permission_entry(), 0..3),
    )
        .prop_map(|(owner, mut entries)| {
            entries.insert(0, owner.to_string());
            entries
        })
}

/// Whether guest 1 may read a node with these permissions (all named domains exist).
fn guest_one_reads(entries: &[String]) -> bool {
    let grants = |entry: &str| entry.starts_with('r') || entry.starts_with('b');
    match entries.iter().skip(1).find(|entry| &entry[1..] == "1") {
        Some(entry) => grants(entry),
        None => grants(&entries[0]),
    }
}

proptest! {
    #![proptest_config(program_cases(128))]

    /// XSA-115: a change reaches an unprivileged watcher exactly when it may read the node
    /// or its parent (`watch.c:watch_permitted()`).
    #[test]
    fn watch_events_reach_exactly_the_readers_of_the_node_or_its_parent(
        parent in permissions(),
        node in permissions(),
    ) {
        let mut h = support::Harness::new();
        let dom0 = h.dom0;
        let guest = h.introduce(1);
        let _other = h.introduce(2);
        prop_assert_eq!(h.request(dom0, "WRITE", 0, "/a/b|old"), "OK|");
        prop_assert_eq!(h.request(dom0, "SET_PERMS", 0, &format!("/a|{}|", parent.join("|"))), "OK|");
        prop_assert_eq!(h.request(dom0, "SET_PERMS", 0, &format!("/a/b|{}|", node.join("|"))), "OK|");
        prop_assert_eq!(h.request(guest, "WATCH", 0, "/a/b|t|"), "OK|");
        h.events(guest);
        prop_assert_eq!(h.request(dom0, "WRITE", 0, "/a/b|new"), "OK|");
        let delivered = !h.events(guest).is_empty();
        let expected = guest_one_reads(&node) || guest_one_reads(&parent);
        prop_assert_eq!(delivered, expected, "parent {:?} node {:?}", parent, node);
        prop_assert_eq!(h.engine.check_accounting(), 0);
    }
}
