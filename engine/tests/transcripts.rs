//! Transcript tests: requests and the replies and watch events C xenstored gives for them.

mod support;

use support::Harness;
use xenstore_engine::quota::QuotaKind;
use xenstore_engine::{Config, DomainId};

#[test]
fn basic_node_requests() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    h.expect(
        dom0,
        &[
            ("WRITE", 0, "/a/b/c|hello", "OK|"),
            ("READ", 0, "/a/b/c|", "hello"),
            // Ancestors are created empty.
            ("READ", 0, "/a/b|", ""),
            ("DIRECTORY", 0, "/a|", "b|"),
            // Empty values are allowed.
            ("WRITE", 0, "/a/x|", "OK|"),
            // Insertion order.
            ("DIRECTORY", 0, "/a|", "b|x|"),
            ("MKDIR", 0, "/a/x|", "OK|"),
            ("RM", 0, "/a/b|", "OK|"),
            ("READ", 0, "/a/b/c|", "ERROR ENOENT"),
            // Missing node, existing parent.
            ("RM", 0, "/a/missing|", "OK|"),
            ("RM", 0, "/nope/missing|", "ERROR ENOENT"),
            ("RM", 0, "/|", "ERROR EINVAL"),
            ("DIRECTORY", 0, "/|", "tool|a|"),
        ],
    );
}

#[test]
fn values_are_binary_safe() {
    let mut h = Harness::new();
    let reply = h.request_bytes(h.dom0, 11, 0, b"/bin\0a\0b\xff");
    assert_eq!(reply.payload, b"OK\0");
    let reply = h.request_bytes(h.dom0, 2, 0, b"/bin\0");
    assert_eq!(reply.payload, b"a\0b\xff");
}

#[test]
fn malformed_requests_get_einval_and_unknown_types_enosys() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    for bad in [
        "/a/|",
        "//|",
        "/a b|",
        "|",
        "/a",
        "/a|b|",
        "@releaseDomain|",
    ] {
        assert_eq!(h.request(dom0, "READ", 0, bad), "ERROR EINVAL", "{bad:?}");
    }
    h.expect(
        dom0,
        &[
            ("WRITE", 0, "/novalue", "ERROR EINVAL"),
            ("20", 0, "x|", "ERROR ENOSYS"),
            ("27", 0, "", "ERROR ENOSYS"),
            ("WATCH_EVENT", 0, "a|b|", "ERROR ENOSYS"),
            ("ERROR", 0, "EINVAL|", "ERROR ENOSYS"),
            // Unknown transaction.
            ("READ", 77, "/tool|", "ERROR ENOENT"),
            ("WATCH", 0, "/a|", "ERROR EINVAL"),
            ("GET_DOMAIN_PATH", 0, "70000|", "ERROR EINVAL"),
            ("GET_DOMAIN_PATH", 0, "7|", "/local/domain/7|"),
        ],
    );
}

#[test]
fn oversized_header_fails_the_connection() {
    let mut h = Harness::new();
    let guest = h.introduce(3);
    let header = xenstore_engine::wire::MessageHeader {
        message_type: 2,
        request_id: 1,
        transaction_id: 0,
        payload_length_bytes: 5000,
    };
    h.engine.receive(&mut h.platform, guest, &header.to_bytes());
    assert_eq!(
        h.engine.failure(guest),
        Some(xenstore_engine::ConnectionFailure::Protocol)
    );
    assert!(!h.engine.wants_input(guest));
    assert_eq!(
        h.request(h.dom0, "READ", 0, "/tool|"),
        "",
        "others are still served"
    );
}

#[test]
fn reply_over_4096_bytes_is_e2big_and_directory_part_pages() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    for index in 0..300 {
        assert_eq!(
            h.request(dom0, "WRITE", 0, &format!("/big/child-number-{index:04}|")),
            "OK|"
        );
    }
    assert_eq!(h.request(dom0, "DIRECTORY", 0, "/big|"), "ERROR E2BIG");
    let mut names = Vec::new();
    let mut offset = 0;
    let mut generation = None;
    loop {
        let reply = h.request(dom0, "DIRECTORY_PART", 0, &format!("/big|{offset}|"));
        let (node_generation, rest) = reply.split_once('|').unwrap();
        assert_eq!(
            *generation.get_or_insert(node_generation.to_string()),
            node_generation
        );
        let finished = rest.ends_with("||") || rest == "|";
        let entries: Vec<&str> = rest.split('|').filter(|name| !name.is_empty()).collect();
        offset += entries.iter().map(|name| name.len() + 1).sum::<usize>();
        names.extend(entries.into_iter().map(str::to_string));
        if finished {
            break;
        }
    }
    assert_eq!(names.len(), 300);
    assert_eq!(names[0], "child-number-0000");
}

#[test]
fn guests_see_their_home_and_are_refused_elsewhere() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    h.expect(
        dom0,
        &[
            ("WRITE", 0, "/local/domain/5/name|guest", "OK|"),
            ("SET_PERMS", 0, "/local/domain/5|n0|r5|", "OK|"),
            ("SET_PERMS", 0, "/local/domain/5/name|n0|r5|", "OK|"),
            ("WRITE", 0, "/secret/key|x", "OK|"),
        ],
    );
    let guest = h.introduce(5);
    h.expect(
        guest,
        &[
            // Relative path.
            ("READ", 0, "name|", "guest"),
            ("READ", 0, "/local/domain/5/name|", "guest"),
            ("WRITE", 0, "name|new", "ERROR EACCES"),
            ("READ", 0, "/secret/key|", "ERROR EACCES"),
            // Existence is hidden.
            ("READ", 0, "/secret/none|", "ERROR EACCES"),
            ("READ", 0, "/local/domain/5/none|", "ERROR ENOENT"),
            ("WRITE", 0, "/secret/key|y", "ERROR EACCES"),
        ],
    );
    // Make data writable by the guest: what it creates, it owns.
    assert_eq!(h.request(dom0, "MKDIR", 0, "/local/domain/5/data|"), "OK|");
    assert_eq!(
        h.request(dom0, "SET_PERMS", 0, "/local/domain/5/data|n0|b5|"),
        "OK|"
    );
    h.expect(
        guest,
        &[
            ("WRITE", 0, "data/mine|1", "OK|"),
            ("GET_PERMS", 0, "data/mine|", "n5|b5|"),
            // Owner may change the ACL.
            ("SET_PERMS", 0, "data/mine|r5|r6|", "OK|"),
            // But not the owner.
            ("SET_PERMS", 0, "data/mine|n6|", "ERROR EPERM"),
            // Not the owner of data.
            ("SET_PERMS", 0, "data|n5|", "ERROR EACCES"),
            ("RM", 0, "data/mine|", "OK|"),
            ("INTRODUCE", 0, "9|1|2|", "ERROR EACCES"),
            ("CONTROL", 0, "help|", "ERROR EACCES"),
            ("GET_DOMAIN_PATH", 0, "5|", "/local/domain/5|"),
        ],
    );
}

#[test]
fn set_target_lets_a_device_model_act_for_its_guest() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    assert_eq!(
        h.request(dom0, "WRITE", 0, "/local/domain/7/device|x"),
        "OK|"
    );
    assert_eq!(
        h.request(dom0, "SET_PERMS", 0, "/local/domain/7/device|n7|"),
        "OK|"
    );
    h.introduce(7);
    let stubdom = h.introduce(8);
    assert_eq!(
        h.request(stubdom, "READ", 0, "/local/domain/7/device|"),
        "ERROR EACCES"
    );
    assert_eq!(h.request(dom0, "SET_TARGET", 0, "8|7|"), "OK|");
    assert_eq!(
        h.request(stubdom, "READ", 0, "/local/domain/7/device|"),
        "x"
    );
    assert_eq!(h.request(dom0, "SET_TARGET", 0, "8|99|"), "ERROR ENOENT");
}

#[test]
fn domid_any_and_stale_entries() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    assert_eq!(h.request(dom0, "WRITE", 0, "/public|x"), "OK|");
    assert_eq!(
        h.request(
            dom0,
            "SET_PERMS",
            0,
            &format!("/public|n0|r{}|", DomainId::ANY.0)
        ),
        "OK|"
    );
    let guest = h.introduce(4);
    assert_eq!(h.request(guest, "READ", 0, "/public|"), "x");
    // An entry naming a domain that does not exist is kept but never matches.
    h.platform.dead.insert(DomainId(12));
    h.expect(
        dom0,
        &[
            ("SET_PERMS", 0, "/public|n0|r12|", "OK|"),
            ("GET_PERMS", 0, "/public|", "n0|r12|"),
            // Owner must exist.
            ("SET_PERMS", 0, "/public|n12|", "ERROR ENOENT"),
        ],
    );
}

#[test]
fn watches_fire_initial_subtree_and_removal_events() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    let watcher = h.engine.open_socket_connection();
    assert_eq!(h.request(watcher, "WATCH", 0, "/w|tok|"), "OK|");
    assert_eq!(h.events(watcher), ["/w tok"], "initial event");
    assert_eq!(h.request(watcher, "WATCH", 0, "/w|tok|"), "ERROR EEXIST");
    assert_eq!(h.request(dom0, "WRITE", 0, "/w/a/b|1"), "OK|");
    assert_eq!(
        h.events(watcher),
        ["/w/a/b tok"],
        "one event for the written path only"
    );
    assert_eq!(h.request(dom0, "MKDIR", 0, "/w/a|"), "OK|");
    assert!(
        h.events(watcher).is_empty(),
        "mkdir of an existing node fires nothing"
    );
    assert_eq!(h.request(watcher, "WATCH", 0, "/w/a/b|exact|"), "OK|");
    assert_eq!(h.events(watcher), ["/w/a/b exact"]);
    assert_eq!(h.request(dom0, "RM", 0, "/w/a|"), "OK|");
    let mut events = h.events(watcher);
    events.sort();
    assert_eq!(
        events,
        ["/w/a tok", "/w/a/b exact"],
        "descendants fire exact watches only"
    );
    assert_eq!(h.request(dom0, "WRITE", 0, "/other|1"), "OK|");
    assert!(h.events(watcher).is_empty());
    assert_eq!(h.request(watcher, "UNWATCH", 0, "/w|tok|"), "OK|");
    assert_eq!(h.request(watcher, "UNWATCH", 0, "/w|tok|"), "ERROR ENOENT");
    assert_eq!(h.request(dom0, "WRITE", 0, "/w|2"), "OK|");
    assert!(h.events(watcher).is_empty());
}

#[test]
fn watch_depth_limits_matching() {
    let mut h = Harness::new();
    let watcher = h.engine.open_socket_connection();
    assert_eq!(h.request(watcher, "WATCH", 0, "/d|t|1|"), "OK|");
    h.events(watcher);
    assert_eq!(h.request(h.dom0, "WRITE", 0, "/d/child|1"), "OK|");
    assert_eq!(
        h.request(h.dom0, "WRITE", 0, "/d/child/grandchild|1"),
        "OK|"
    );
    assert_eq!(h.events(watcher), ["/d/child t"]);
    assert_eq!(h.request(watcher, "WATCH", 0, "/e|t|x|"), "ERROR EINVAL");
}

#[test]
fn relative_watches_report_relative_paths() {
    let mut h = Harness::new();
    assert_eq!(h.request(h.dom0, "MKDIR", 0, "/local/domain/3|"), "OK|");
    assert_eq!(
        h.request(h.dom0, "SET_PERMS", 0, "/local/domain/3|n3|"),
        "OK|"
    );
    let guest = h.introduce(3);
    assert_eq!(h.request(guest, "WATCH", 0, "device|dev|"), "OK|");
    assert_eq!(h.events(guest), ["device dev"]);
    assert_eq!(
        h.request(h.dom0, "WRITE", 0, "/local/domain/3/device/vif|1"),
        "OK|"
    );
    assert_eq!(h.events(guest), ["device/vif dev"]);
}

#[test]
fn events_are_filtered_by_read_permission() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    assert_eq!(h.request(dom0, "WRITE", 0, "/private/x|1"), "OK|");
    let guest = h.introduce(6);
    assert_eq!(h.request(guest, "WATCH", 0, "/private|p|"), "OK|");
    assert_eq!(
        h.events(guest),
        ["/private p"],
        "the initial event is never filtered"
    );
    assert_eq!(h.request(dom0, "WRITE", 0, "/private/x|2"), "OK|");
    assert!(
        h.events(guest).is_empty(),
        "guest may not read /private/x nor its parent"
    );
    assert_eq!(h.request(dom0, "SET_PERMS", 0, "/private/x|n0|r6|"), "OK|");
    assert_eq!(h.events(guest), ["/private/x p"], "now readable");
    assert_eq!(h.request(dom0, "SET_PERMS", 0, "/private/x|n0|"), "OK|");
    assert_eq!(
        h.events(guest),
        ["/private/x p"],
        "readable under the old permissions"
    );
    assert_eq!(h.request(dom0, "WRITE", 0, "/private/x|3"), "OK|");
    assert!(h.events(guest).is_empty());
}

#[test]
fn duplicate_pending_events_are_suppressed() {
    let mut h = Harness::new();
    let watcher = h.engine.open_socket_connection();
    assert_eq!(h.request(watcher, "WATCH", 0, "/dup|t|"), "OK|");
    h.events(watcher);
    for value in 0..3 {
        assert_eq!(
            h.request(h.dom0, "WRITE", 0, &format!("/dup|{value}")),
            "OK|"
        );
    }
    assert_eq!(h.events(watcher), ["/dup t"]);
}

#[test]
fn special_watches_for_introduce_and_release() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    h.expect(
        dom0,
        &[
            ("WATCH", 0, "@introduceDomain|in|", "OK|"),
            ("WATCH", 0, "@releaseDomain|out|", "OK|"),
            ("WATCH", 0, "@releaseDomain/9|out9|", "OK|"),
            ("WATCH", 0, "@releaseDomain|deep|1|", "OK|"),
        ],
    );
    h.events(dom0);
    let guest = h.introduce(9);
    assert_eq!(h.events(dom0), ["@introduceDomain in"]);
    assert_eq!(
        h.request(guest, "WATCH", 0, "@releaseDomain|g|"),
        "OK|",
        "any domain may watch releases"
    );
    assert_eq!(h.request(guest, "WATCH", 0, "@introduceDomain|g|"), "OK|");
    h.events(guest);
    h.introduce(10);
    assert!(
        h.events(guest).is_empty(),
        "@introduceDomain is readable by dom0 only"
    );
    assert_eq!(h.events(dom0), ["@introduceDomain in"]);
    assert_eq!(h.request(dom0, "IS_DOMAIN_INTRODUCED", 0, "9|"), "T|");
    assert_eq!(h.request(dom0, "RELEASE", 0, "9|"), "OK|");
    let mut events = h.events(dom0);
    events.sort();
    assert_eq!(
        events,
        [
            "@releaseDomain out",
            "@releaseDomain/9 deep",
            "@releaseDomain/9 out9"
        ]
    );
    h.expect(
        dom0,
        &[
            ("IS_DOMAIN_INTRODUCED", 0, "9|", "F|"),
            ("RELEASE", 0, "9|", "ERROR ENOENT"),
            ("RELEASE", 0, "0|", "ERROR EINVAL"),
            // DOMID_SELF.
            ("IS_DOMAIN_INTRODUCED", 0, "32752|", "T|"),
        ],
    );
}

#[test]
fn shutdown_is_reported_once_until_resume() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    h.introduce(11);
    assert_eq!(h.request(dom0, "WATCH", 0, "@releaseDomain|r|"), "OK|");
    h.events(dom0);
    h.engine.domain_shutdown(&mut h.platform, DomainId(11));
    h.engine.domain_shutdown(&mut h.platform, DomainId(11));
    assert_eq!(h.events(dom0), ["@releaseDomain r"]);
    assert_eq!(h.request(dom0, "RESUME", 0, "11|"), "OK|");
    h.engine.domain_shutdown(&mut h.platform, DomainId(11));
    assert_eq!(h.events(dom0), ["@releaseDomain r"]);
}

#[test]
fn domain_death_removes_its_nodes_watches_and_acl_entries() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    h.expect(
        dom0,
        &[
            ("MKDIR", 0, "/local/domain/12|", "OK|"),
            ("SET_PERMS", 0, "/local/domain/12|n12|", "OK|"),
            ("WRITE", 0, "/shared|x", "OK|"),
            ("SET_PERMS", 0, "/shared|n0|r12|", "OK|"),
        ],
    );
    let guest = h.introduce(12);
    assert_eq!(h.request(guest, "WRITE", 0, "data/a|1"), "OK|");
    assert_eq!(h.request(guest, "WATCH", 0, "data|w|"), "OK|");
    assert_eq!(h.request(dom0, "WATCH", 0, "/local/domain/12|home|"), "OK|");
    h.events(dom0);
    h.platform.dead.insert(DomainId(12));
    h.engine.domain_died(&mut h.platform, DomainId(12));
    assert_eq!(
        h.request(dom0, "READ", 0, "/local/domain/12|"),
        "ERROR ENOENT"
    );
    assert_eq!(h.request(dom0, "GET_PERMS", 0, "/shared|"), "n0|");
    assert!(
        h.events(dom0)
            .contains(&"/local/domain/12 home".to_string())
    );
    assert!(!h.platform.connected.contains(DomainId(12)));
    assert_eq!(h.engine.check_accounting(), 0, "usage equals a recount");
}

#[test]
fn keep_orphans_gives_nodes_to_the_privileged_domain() {
    let mut h = Harness::with_config(Config {
        keep_orphans: true,
        ..Config::default()
    });
    assert_eq!(h.request(h.dom0, "MKDIR", 0, "/local/domain/13|"), "OK|");
    assert_eq!(
        h.request(h.dom0, "SET_PERMS", 0, "/local/domain/13|n13|"),
        "OK|"
    );
    h.introduce(13);
    h.engine.domain_died(&mut h.platform, DomainId(13));
    assert_eq!(
        h.request(h.dom0, "GET_PERMS", 0, "/local/domain/13|"),
        "n0|"
    );
}

#[test]
fn transactions_isolate_conflict_and_fire_at_commit() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    let other = h.engine.open_socket_connection();
    assert_eq!(h.request(dom0, "WRITE", 0, "/t/a|old"), "OK|");
    assert_eq!(h.request(other, "WATCH", 0, "/t|w|"), "OK|");
    h.events(other);
    let id = h.start_transaction(dom0);
    assert_ne!(id, 0);
    h.expect(
        dom0,
        &[
            ("READ", id, "/t/a|", "old"),
            ("WRITE", id, "/t/a|new", "OK|"),
            ("READ", id, "/t/a|", "new"),
        ],
    );
    assert_eq!(
        h.request(other, "READ", 0, "/t/a|"),
        "old",
        "isolated until commit"
    );
    assert!(h.events(other).is_empty(), "no events before commit");
    assert_eq!(h.request(dom0, "TRANSACTION_START", id, "|"), "ERROR EBUSY");
    assert_eq!(h.request(dom0, "TRANSACTION_END", id, "T|"), "OK|");
    assert_eq!(h.request(other, "READ", 0, "/t/a|"), "new");
    assert_eq!(h.events(other), ["/t/a w"]);
    assert_eq!(h.request(dom0, "TRANSACTION_END", id, "T|"), "ERROR ENOENT");

    // A conflicting write outside makes the commit fail with EAGAIN and apply nothing.
    let id = h.start_transaction(dom0);
    assert_eq!(h.request(dom0, "READ", id, "/t/a|"), "new");
    assert_eq!(h.request(other, "WRITE", 0, "/t/a|outside"), "OK|");
    h.expect(
        dom0,
        &[
            // First access decides what the transaction sees.
            ("READ", id, "/t/a|", "new"),
            ("WRITE", id, "/t/b|inside", "OK|"),
            ("TRANSACTION_END", id, "T|", "ERROR EAGAIN"),
            ("READ", 0, "/t/a|", "outside"),
            ("READ", 0, "/t/b|", "ERROR ENOENT"),
        ],
    );

    // Disjoint subtrees do not conflict.
    assert_eq!(h.request(dom0, "WRITE", 0, "/x/value|1"), "OK|");
    assert_eq!(h.request(dom0, "WRITE", 0, "/y/value|1"), "OK|");
    let first = h.start_transaction(dom0);
    let second = h.start_transaction(other);
    assert_eq!(h.request(dom0, "WRITE", first, "/x/value|2"), "OK|");
    assert_eq!(h.request(other, "WRITE", second, "/y/value|2"), "OK|");
    assert_eq!(h.request(other, "TRANSACTION_END", second, "T|"), "OK|");
    assert_eq!(h.request(dom0, "TRANSACTION_END", first, "T|"), "OK|");

    // Abort leaves no trace.
    let id = h.start_transaction(dom0);
    h.expect(
        dom0,
        &[
            ("WRITE", id, "/aborted|1", "OK|"),
            ("TRANSACTION_END", id, "F|", "OK|"),
            ("READ", 0, "/aborted|", "ERROR ENOENT"),
            ("TRANSACTION_END", 0, "T|", "ERROR ENOENT"),
        ],
    );
    let id = h.start_transaction(dom0);
    assert_eq!(h.request(dom0, "TRANSACTION_END", id, "X|"), "ERROR EINVAL");
}

#[test]
fn guest_quotas_are_enforced_with_c_boundaries() {
    let mut config = Config::default();
    config.quotas.set(QuotaKind::Nodes, 5);
    config.quotas.set(QuotaKind::Watches, 3);
    config.quotas.set(QuotaKind::Transactions, 2);
    let mut h = Harness::with_config(config);
    assert_eq!(h.request(h.dom0, "MKDIR", 0, "/local/domain/20|"), "OK|");
    assert_eq!(
        h.request(h.dom0, "SET_PERMS", 0, "/local/domain/20|n20|"),
        "OK|"
    );
    let guest = h.introduce(20);
    // The home itself counts: 1 owned node; limit 5 means at most 4.
    for index in 0..3 {
        assert_eq!(h.request(guest, "WRITE", 0, &format!("n{index}|x")), "OK|");
    }
    h.expect(
        guest,
        &[
            ("WRITE", 0, "n3|x", "ERROR ENOSPC"),
            // Overwriting costs no node.
            ("WRITE", 0, "n0|overwrite", "OK|"),
            ("WATCH", 0, "a|1|", "OK|"),
            ("WATCH", 0, "a|2|", "OK|"),
            ("WATCH", 0, "a|3|", "ERROR ENOSPC"),
            ("TRANSACTION_START", 0, "|", "1|"),
            ("TRANSACTION_START", 0, "|", "ERROR ENOSPC"),
        ],
    );
    let big = "v".repeat(2100);
    assert_eq!(
        h.request(guest, "WRITE", 0, &format!("n0|{big}")),
        "ERROR ENOSPC",
        "node-size"
    );
    assert_eq!(
        h.request(h.dom0, "WRITE", 0, &format!("/local/domain/20/n0|{big}")),
        "OK|",
        "dom0 exempt"
    );
    assert_eq!(
        h.request(guest, "SET_PERMS", 0, "n1|n20|r1|r2|r3|r4|"),
        "ERROR ENOSPC",
        "permission entries"
    );
    let long = "p".repeat(2048);
    assert_eq!(
        h.request(guest, "READ", 0, &format!("{long}|")),
        "ERROR EINVAL",
        "path-max"
    );
    assert_eq!(h.engine.check_accounting(), 0);
}

#[test]
fn transaction_node_limit_fails_the_transaction() {
    let mut config = Config::default();
    config.quotas.set(QuotaKind::TransactionNodes, 4);
    let mut h = Harness::with_config(config);
    assert_eq!(h.request(h.dom0, "MKDIR", 0, "/local/domain/21|"), "OK|");
    assert_eq!(
        h.request(h.dom0, "SET_PERMS", 0, "/local/domain/21|n21|"),
        "OK|"
    );
    let guest = h.introduce(21);
    let id = h.start_transaction(guest);
    h.expect(
        guest,
        &[
            ("READ", id, "a|", "ERROR ENOENT"),
            ("READ", id, "b|", "ERROR ENOENT"),
            ("READ", id, "c|", "ERROR ENOSPC"),
            ("TRANSACTION_END", id, "T|", "ERROR ENOMEM"),
        ],
    );
}

#[test]
fn outstanding_requests_stop_input() {
    let mut config = Config::default();
    config.quotas.set(QuotaKind::Outstanding, 2);
    let mut h = Harness::with_config(config);
    let guest = h.introduce(22);
    let message = xenstore_engine::wire::encode_message(10, 1, 0, b"1\0");
    let mut stream = Vec::new();
    for _ in 0..4 {
        stream.extend_from_slice(&message);
    }
    let taken = h.engine.receive(&mut h.platform, guest, &stream);
    assert_eq!(
        taken,
        2 * message.len(),
        "input stops at the outstanding quota"
    );
    assert!(!h.engine.wants_input(guest));
    let output = h.engine.output(guest).len();
    h.engine.consume_output(guest, output);
    assert!(h.engine.wants_input(guest));
}

#[test]
fn reset_watches_drops_watches_and_transactions() {
    let mut h = Harness::new();
    let client = h.engine.open_socket_connection();
    assert_eq!(h.request(client, "WATCH", 0, "/r|t|"), "OK|");
    let id = h.start_transaction(client);
    h.events(client);
    assert_eq!(h.request(client, "RESET_WATCHES", 0, "|"), "OK|");
    assert_eq!(h.request(h.dom0, "WRITE", 0, "/r|1"), "OK|");
    assert!(h.events(client).is_empty());
    assert_eq!(
        h.request(client, "TRANSACTION_END", id, "T|"),
        "ERROR ENOENT"
    );
}

#[test]
fn features_and_quotas_over_the_wire() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    h.expect(
        dom0,
        &[
            ("GET_FEATURE", 0, "", "14|"),
            ("SET_FEATURE", 0, "30|2|", "OK|"),
            ("GET_FEATURE", 0, "30|", "2|"),
            // Reconnection unsupported.
            ("SET_FEATURE", 0, "30|1|", "ERROR EINVAL"),
        ],
    );
    let guest = h.introduce(30);
    h.expect(
        guest,
        &[
            ("GET_FEATURE", 0, "", "2|"),
            // No watch-depth feature.
            ("WATCH", 0, "x|t|1|", "ERROR EINVAL"),
            ("GET_FEATURE", 0, "0|", "ERROR EACCES"),
        ],
    );
    assert_eq!(h.request(dom0, "SET_FEATURE", 0, "30|2|"), "ERROR EBUSY");
    assert_eq!(h.request(dom0, "GET_QUOTA", 0, "nodes|"), "1000|");
    assert!(
        h.request(dom0, "GET_QUOTA", 0, "")
            .starts_with("nodes watches outstanding memory")
    );
    h.expect(
        dom0,
        &[
            ("SET_QUOTA", 0, "30|nodes|7|", "OK|"),
            ("GET_QUOTA", 0, "30|nodes|", "7|"),
            ("GET_QUOTA", 0, "bogus|", "ERROR EINVAL"),
            ("SET_QUOTA", 0, "nodes|4294967295|", "ERROR EINVAL"),
        ],
    );
    assert_eq!(h.request(guest, "GET_QUOTA", 0, "nodes|"), "ERROR EACCES");
}

#[test]
fn control_commands_for_xenstore_control() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    assert!(h.request(dom0, "CONTROL", 0, "help|").contains("quota"));
    assert!(h.request(dom0, "CONTROL", 0, "quota|").contains("nodes"));
    h.expect(
        dom0,
        &[
            ("CONTROL", 0, "quota|set|nodes|50|", "OK|"),
            ("GET_QUOTA", 0, "nodes|", "50|"),
            ("CONTROL", 0, "quota|set|nodes|0|", "ERROR EINVAL"),
        ],
    );
    assert!(
        h.request(dom0, "CONTROL", 0, "quota-soft|")
            .contains("memory")
    );
    assert_eq!(h.request(dom0, "CONTROL", 0, "log|off|"), "OK|");
    assert_eq!(h.request(dom0, "CONTROL", 0, "check|"), "OK|");
    assert!(
        h.request(dom0, "CONTROL", 0, "memreport|")
            .contains("nodes:")
    );
    assert_eq!(h.request(dom0, "CONTROL", 0, "print|hello|"), "OK|");
    assert!(h.request(dom0, "CONTROL", 0, "quota|0|").contains("nodes"));
    assert_eq!(h.request(dom0, "CONTROL", 0, "bogus|"), "ERROR EINVAL");
}

#[test]
fn introduce_failures_and_reintroduction() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    h.expect(
        dom0,
        &[
            ("INTRODUCE", 0, "5|1|", "ERROR EINVAL"),
            ("INTRODUCE", 0, "5|1|0|", "ERROR EINVAL"),
        ],
    );
    h.platform.refuse_connect = true;
    assert_eq!(h.request(dom0, "INTRODUCE", 0, "5|1|3|"), "ERROR EIO");
    h.platform.refuse_connect = false;
    let guest = h.introduce(5);
    assert_eq!(h.request(guest, "WATCH", 0, "/x|t|"), "OK|");
    h.events(guest);
    assert_eq!(h.request(dom0, "INTRODUCE", 0, "5|1|4|"), "OK|");
    assert_eq!(h.engine.domain_connection(DomainId(5)), Some(guest));
    assert_eq!(h.request(dom0, "WRITE", 0, "/x|1"), "OK|");
    assert!(
        h.events(guest).is_empty(),
        "re-introduction drops the watches"
    );
}

#[test]
fn fast_writers_are_throttled_then_resume() {
    let mut h = Harness::new();
    assert_eq!(h.request(h.dom0, "MKDIR", 0, "/local/domain/23|"), "OK|");
    assert_eq!(
        h.request(h.dom0, "SET_PERMS", 0, "/local/domain/23|n23|"),
        "OK|"
    );
    let guest = h.introduce(23);
    // C limits the write rate only while some transaction is open.
    for index in 0..20 {
        assert_eq!(
            h.request(guest, "WRITE", 0, &format!("free{}|x", index % 3)),
            "OK|"
        );
    }
    assert!(h.engine.wants_input(guest), "no transaction open: no limit");
    let other = h.engine.open_socket_connection();
    assert_eq!(h.request(other, "TRANSACTION_START", 0, "|"), "1|");
    let mut accepted = 0;
    while h.engine.wants_input(guest) && accepted < 100 {
        assert_eq!(
            h.request(guest, "WRITE", 0, &format!("w{}|x", accepted % 5)),
            "OK|"
        );
        accepted += 1;
    }
    assert_eq!(
        accepted, 11,
        "a burst of 10 writes, then the credit is negative"
    );
    assert!(h.engine.wants_input(h.dom0), "dom0 is never throttled");
    h.platform.now_milliseconds += 10;
    h.engine.tick(&mut h.platform);
    assert!(h.engine.wants_input(guest), "credit refills over time");
}

/// Issue 15: two guests writing inside transactions at their allowed rate (and beyond it)
/// never stop a third guest's ring from being read; only a domain's own negative credit
/// holds it back, and the global reserve only lends (C `wrl_credit_update()`).
#[test]
fn writers_never_hold_back_another_guest() {
    let mut h = Harness::new();
    let writers: Vec<_> = [31u16, 32]
        .into_iter()
        .map(|domain| {
            let home = format!("/local/domain/{domain}");
            assert_eq!(h.request(h.dom0, "MKDIR", 0, &format!("{home}|")), "OK|");
            assert_eq!(
                h.request(h.dom0, "SET_PERMS", 0, &format!("{home}|n{domain}|")),
                "OK|"
            );
            h.introduce(domain)
        })
        .collect();
    let quiet = h.introduce(33);
    // Write-rate limiting applies while a transaction is open (C); the writers hold one
    // each and write outside it, which is debited at once (inside, at commit).
    for &writer in &writers {
        assert_eq!(h.request(writer, "TRANSACTION_START", 0, "|"), "1|");
    }
    let mut held_back = [0u32; 2];
    // Ten simulated seconds in 5 ms steps: each writer tries two writes per step, twice its
    // allowed rate (one write per 5 ms), and writes whenever it is read.
    for step in 0..2000u32 {
        for (index, &writer) in writers.iter().enumerate() {
            for attempt in 0..2 {
                if h.engine.wants_input(writer) {
                    let node = (step * 2 + attempt) % 7;
                    assert_eq!(h.request(writer, "WRITE", 0, &format!("w{node}|x")), "OK|");
                } else {
                    held_back[index] += 1;
                }
            }
        }
        assert!(
            h.engine.wants_input(quiet),
            "step {step}: another guest's writing held back guest 33"
        );
        assert_eq!(
            h.request(quiet, "GET_DOMAIN_PATH", 0, "33|"),
            "/local/domain/33|"
        );
        h.platform.now_milliseconds += 5;
        h.engine.tick(&mut h.platform);
    }
    // The reserve lends its refill to whichever writer asks first, so one writer may
    // always be read; the other is held back, by its own debt only.
    assert!(
        held_back.iter().sum::<u32>() > 1000,
        "the writers did reach their own limits: {held_back:?}"
    );
}

/// A domain at its hard memory quota is not read until its queued output drains (C
/// `domain_can_read()`), and a writer's outstanding requests include the watch events it
/// caused that are still queued (C `send_event()`, `pend.req`).
#[test]
fn reading_waits_for_the_memory_quota_and_for_caused_events() {
    let mut config = Config::default();
    config.quotas.set(QuotaKind::MemoryBytes, 3000);
    config.quotas.set(QuotaKind::SoftMemoryBytes, 2000);
    let mut h = Harness::with_config(config);
    let dom0 = h.dom0;
    let big = "v".repeat(3500);
    assert_eq!(h.request(dom0, "WRITE", 0, &format!("/big|{big}")), "OK|");
    assert_eq!(h.request(dom0, "SET_PERMS", 0, "/big|n0|r7|"), "OK|");
    let guest = h.introduce(7);
    assert!(h.engine.wants_input(guest));
    // A READ whose reply (3.5 kB) stays queued takes guest 7 over its 3000-byte quota.
    let request = xenstore_engine::wire::encode_message(2, 99, 0, b"/big\0");
    h.engine.receive(&mut h.platform, guest, &request);
    assert!(
        !h.engine.wants_input(guest),
        "over the hard quota: not read"
    );
    let queued = h.engine.output(guest).len();
    h.engine.consume_output(guest, queued);
    assert!(
        h.engine.wants_input(guest),
        "read again once the reply is out"
    );

    // Guest 8 writes where 30 of guest 9's watches fire; 9 does not read.
    assert_eq!(h.request(dom0, "MKDIR", 0, "/w|"), "OK|");
    assert_eq!(h.request(dom0, "SET_PERMS", 0, "/w|n0|b8|r9|"), "OK|");
    let writer = h.introduce(8);
    let watcher = h.introduce(9);
    for index in 0..30 {
        assert_eq!(
            h.request(watcher, "WATCH", 0, &format!("/w|t{index}|")),
            "OK|"
        );
    }
    assert!(h.engine.wants_input(writer));
    assert_eq!(h.request(writer, "WRITE", 0, "/w/x|1"), "OK|");
    assert!(
        !h.engine.wants_input(writer),
        "30 queued events caused by guest 8 exceed its 20 outstanding requests"
    );
    assert!(
        h.request(dom0, "CONTROL", 0, "quota|8|")
            .contains("outstanding      :       30"),
        "{}",
        h.request(dom0, "CONTROL", 0, "quota|8|")
    );
    assert_eq!(h.engine.check_accounting(), 0);
    assert_eq!(
        h.events(watcher).len(),
        60,
        "30 initial events, 30 for the write"
    );
    assert!(
        h.engine.wants_input(writer),
        "served again once they are delivered"
    );
}

/// Watch events queued for an unprivileged domain that does not read expire after the
/// `-w watch-event` timeout and are no longer charged to it; only the message its ring had
/// started to take is kept. Moved from the daemon's `xsa_326_memory_exhaustion_is_bounded`
/// (T-326b), which waited 2.5 s of wall time for a 1 s timeout: here the clock is the fake
/// platform's.
#[test]
fn events_queued_for_a_guest_that_does_not_read_expire() {
    let config = Config {
        watch_event_timeout_milliseconds: 1000,
        ..Config::default()
    };
    let mut h = Harness::with_config(config);
    let dom0 = h.dom0;
    assert_eq!(h.request(dom0, "MKDIR", 0, "/local/domain/17|"), "OK|");
    assert_eq!(
        h.request(dom0, "SET_PERMS", 0, "/local/domain/17|n17|"),
        "OK|"
    );
    let slow = h.introduce(17);
    // The nodes exist (charged to 17, the owner of their parent) before the flood, so that
    // the flood changes only what queued events are charged.
    let write_every_node = |h: &mut Harness| {
        for index in 0..40 {
            assert_eq!(
                h.request(
                    dom0,
                    "WRITE",
                    0,
                    &format!("/local/domain/17/data/k{index}|v")
                ),
                "OK|"
            );
        }
    };
    write_every_node(&mut h);
    for index in 0..3 {
        let token = format!("e{index}-{}", "t".repeat(100));
        assert_eq!(
            h.request(slow, "WATCH", 0, &format!("data|{token}|")),
            "OK|"
        );
    }
    assert_eq!(h.events(slow).len(), 3, "the initial events");
    let memory_idle = h.engine.domain_usage(DomainId(17)).memory_bytes;
    // 3 watches × 40 changes × ~130 bytes: far more than the 1024-byte response ring, so
    // most events wait in the store, charged to guest 17.
    write_every_node(&mut h);
    // The ring takes its fill of 1000 bytes (whole events and the start of one), then the
    // guest stops reading.
    h.engine.consume_output(slow, 1000);
    let started_rest_bytes = h.engine.output(slow).len();
    let memory_flooded = h.engine.domain_usage(DomainId(17)).memory_bytes;
    assert!(
        memory_flooded > memory_idle + 10_000,
        "events are charged: idle {memory_idle}, flooded {memory_flooded}"
    );
    // Half the timeout: nothing expires yet.
    h.platform.now_milliseconds += 500;
    h.engine.tick(&mut h.platform);
    assert_eq!(
        h.engine.domain_usage(DomainId(17)).memory_bytes,
        memory_flooded
    );
    // Past the timeout: what was queued has expired, except the message the ring had
    // started to take.
    h.platform.now_milliseconds += 501;
    h.engine.tick(&mut h.platform);
    let memory_expired = h.engine.domain_usage(DomainId(17)).memory_bytes;
    assert!(
        memory_expired + 10_000 < memory_flooded,
        "events expired: flooded {memory_flooded}, later {memory_expired}"
    );
    assert_eq!(h.engine.output(slow).len(), started_rest_bytes);
    h.engine.consume_output(slow, started_rest_bytes);
    assert_eq!(
        h.events(slow),
        Vec::<String>::new(),
        "nothing is delivered after the expiry but the rest of the started event"
    );
    assert_eq!(
        h.engine.domain_usage(DomainId(17)).memory_bytes,
        memory_idle,
        "nothing stays charged"
    );
    assert_eq!(h.engine.check_accounting(), 0);
}
