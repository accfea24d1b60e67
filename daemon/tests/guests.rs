//! Simulated guests on rings: what an unprivileged domain may and may not do, and how it dies.

mod common;
use common::{
    Daemon, EVENT_WAIT, advance_request_producer, assert_next_event, assert_ring_error, error_name,
    events_queued_so_far, eventually, guest_tool, release_domain_watcher, round_trip,
    send_write_header, set_features, watch_with_initial_event,
};
use xenstore_client::client::Client;
use xenstore_client::simulation::{self, DomainFiles};
use xenstore_engine::DomainId;
use xenstore_engine::ring::{RingMemory, error as ring_error, feature, offset};
use xenstore_engine::wire::MessageType;

#[test]
fn a_guest_reads_and_writes_its_own_home() {
    let daemon = Daemon::start(&[]);
    let mut guest = daemon.guest(DomainId(5));
    let features = guest
        .transport()
        .page()
        .load_u32_acquire(offset::SERVER_FEATURES);
    assert_eq!(features, feature::C_XENSTORED_4_22);
    assert_eq!(
        guest.get_domain_path(DomainId(5)).unwrap(),
        "/local/domain/5"
    );
    guest.write("data/value", b"42").unwrap();
    assert_eq!(guest.read("data/value").unwrap(), b"42");
    assert_eq!(guest.read("/local/domain/5/data/value").unwrap(), b"42");
    assert_eq!(guest.directory("data").unwrap(), vec!["value"]);
    // Nodes an unprivileged domain creates are its own (C `construct_node()`).
    assert_eq!(guest.get_perms("data/value").unwrap(), vec!["n5"]);
    let mut dom0 = daemon.dom0();
    assert_eq!(dom0.read("/local/domain/5/data/value").unwrap(), b"42");
    assert!(dom0.is_domain_introduced(DomainId(5)).unwrap());
}

#[test]
fn a_guest_is_refused_outside_its_home() {
    let daemon = Daemon::start(&[]);
    let mut dom0 = daemon.dom0();
    dom0.write("/local/domain/0/secret", b"s").unwrap();
    let mut guest = daemon.guest(DomainId(6));
    assert_eq!(error_name(guest.read("/local/domain/0/secret")), "EACCES");
    assert_eq!(
        error_name(guest.write("/local/domain/0/secret", b"x")),
        "EACCES"
    );
    assert_eq!(error_name(guest.write("/elsewhere", b"x")), "EACCES");
    // A missing node under an unreadable parent is hidden as EACCES, not ENOENT.
    assert_eq!(error_name(guest.read("/local/domain/0/missing")), "EACCES");
    assert_eq!(error_name(guest.read("missing")), "ENOENT");
    // Privileged-only requests.
    assert_eq!(error_name(guest.introduce(DomainId(9), 0, 1)), "EACCES");
    assert_eq!(
        error_name(guest.is_domain_introduced(DomainId(0))),
        "EACCES"
    );
    assert_eq!(
        error_name(guest.call(MessageType::Control, 0, b"print\0x\0")),
        "EACCES"
    );
}

#[test]
fn guest_permissions_follow_c_semantics() {
    let daemon = Daemon::start(&[]);
    let mut dom0 = daemon.dom0();
    dom0.write("/shared/readable", b"r").unwrap();
    dom0.set_perms("/shared", &["n0", "r7"]).unwrap();
    dom0.set_perms("/shared/readable", &["n0", "r7"]).unwrap();
    let mut guest = daemon.guest(DomainId(7));
    assert_eq!(guest.read("/shared/readable").unwrap(), b"r");
    assert_eq!(error_name(guest.write("/shared/readable", b"w")), "EACCES");
    guest.write("mine", b"m").unwrap();
    guest.set_perms("mine", &["n7", "r0"]).unwrap();
    assert_eq!(guest.get_perms("mine").unwrap(), vec!["n7", "r0"]);
    // Only the privileged domain may give a node away.
    assert_eq!(error_name(guest.set_perms("mine", &["n0"])), "EPERM");
    // The node-permissions quota (default 5, 4.22 boundary: at most 4 entries).
    assert_eq!(
        error_name(guest.set_perms("mine", &["n7", "r1", "r2", "r3", "r4", "r6"])),
        "ENOSPC"
    );
}

#[test]
fn guest_quotas_nodes_watches_and_node_size() {
    let daemon = Daemon::start(&["-E", "6", "-W", "4", "-S", "300"]);
    let mut guest = daemon.guest(DomainId(8));
    let mut created = 0;
    let mut refusal = None;
    for index in 0..10 {
        match guest.write(&format!("n{index}"), b"") {
            Ok(()) => created += 1,
            Err(error) => {
                refusal = Some(error.store_error().map(String::from).unwrap_or_default());
                break;
            }
        }
    }
    assert_eq!(refusal.as_deref(), Some("ENOSPC"), "after {created} nodes");
    // The home counts; 4.22 refuses at the limit itself: home + 4 nodes = 5 < 6.
    assert_eq!(created, 4);

    let mut watches = 0;
    let mut watch_refusal = None;
    for index in 0..6 {
        match guest.watch(&format!("w{index}"), "t") {
            Ok(()) => watches += 1,
            Err(error) => {
                watch_refusal = error.store_error().map(String::from);
                break;
            }
        }
    }
    assert_eq!(watch_refusal.as_deref(), Some("ENOSPC"));
    assert_eq!(watches, 3);

    guest.rm("n0").unwrap();
    assert_eq!(error_name(guest.write("n0", &[b'x'; 400])), "ENOSPC");
    guest.write("n0", b"small").unwrap();
}

#[test]
fn watch_events_for_unreadable_nodes_do_not_reach_a_guest() {
    let daemon = Daemon::start(&[]);
    let mut dom0 = daemon.dom0();
    dom0.write("/local/domain/0/private", b"p").unwrap();
    let mut guest = daemon.guest(DomainId(9));
    // The initial event is never filtered.
    watch_with_initial_event(&mut guest, "/local/domain/0/private", "hidden");
    watch_with_initial_event(&mut guest, "watched", "own");
    dom0.write("/local/domain/0/private", b"changed").unwrap();
    dom0.write("/local/domain/9/watched", b"visible").unwrap();
    // Relative watches report relative paths; the private change is filtered out. Both
    // writes were answered before the guest's round trip, so their events come before it.
    assert_eq!(
        events_queued_so_far(&mut guest),
        vec![("watched".to_string(), "own".to_string())]
    );
}

#[test]
fn a_guest_with_impossible_ring_indices_is_ignored_while_others_are_served() {
    let daemon = Daemon::start(&[]);
    let mut hostile = daemon.guest(DomainId(10));
    let mut bystander = daemon.guest(DomainId(11));
    hostile.write("before", b"ok").unwrap();
    advance_request_producer(&hostile, 5000);
    let page = hostile.transport().page();
    assert_ring_error(page, ring_error::RING_INDEX);
    let mut dom0 = daemon.dom0();
    dom0.write("/still/served", b"yes").unwrap();
    bystander.write("fine", b"1").unwrap();
    assert_eq!(bystander.read("fine").unwrap(), b"1");
    // The hostile domain stays introduced (it is ignored, not released).
    assert!(dom0.is_domain_introduced(DomainId(10)).unwrap());
}

#[test]
fn a_guest_announcing_an_oversized_message_is_ignored() {
    let daemon = Daemon::start(&[]);
    let mut hostile = daemon.guest(DomainId(12));
    send_write_header(&mut hostile, 4097);
    let page = hostile.transport().page();
    assert_ring_error(page, ring_error::PROTOCOL);
    daemon.dom0().write("/alive", b"1").unwrap();
}

#[test]
fn garbage_in_a_ring_never_stops_the_daemon() {
    let mut daemon = Daemon::start(&[]);
    let mut guest = daemon.guest(DomainId(13));
    let mut noise = Vec::new();
    let mut state = 0x1234_5678u32;
    for _ in 0..3000 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        noise.push(state as u8);
    }
    let _ = guest.send_raw(&noise);
    // Answered in a round that served the ring after its last notification (server.rs).
    daemon.dom0().write("/alive", b"1").unwrap();
    assert!(daemon.is_running());
}

#[test]
fn domain_death_fires_release_domain_and_removes_the_guests_nodes() {
    let daemon = Daemon::start(&[]);
    let mut dom0 = daemon.dom0();
    let mut watcher = release_domain_watcher(&daemon);
    let mut guest = daemon.guest(DomainId(14));
    guest.write("device/vif/0", b"state").unwrap();
    // dom0 keeps a node under the guest's home that the guest does not own.
    dom0.write("/local/domain/14/dom0-owned", b"kept").unwrap();
    drop(guest);
    let files = DomainFiles::new(&daemon.run_directory, DomainId(14));
    simulation::announce_state_change(&daemon.run_directory, &files.dead_marker()).unwrap();
    assert_next_event(&mut watcher, "@releaseDomain", "released");
    assert!(!dom0.is_domain_introduced(DomainId(14)).unwrap());
    // Nodes owned by the dead domain are deleted with their subtree (docs/protocol.md, "Domains").
    assert_eq!(
        error_name(dom0.read("/local/domain/14/device/vif/0")),
        "ENOENT"
    );
    assert_eq!(error_name(dom0.read("/local/domain/14")), "ENOENT");
}

#[test]
fn a_death_is_noticed_without_the_dom_exc_prompt() {
    let daemon = Daemon::start(&[]);
    let mut watcher = release_domain_watcher(&daemon);
    let guest = daemon.guest(DomainId(18));
    drop(guest);
    // Only the marker: the store watches the domain directories (inotify).
    let files = DomainFiles::new(&daemon.run_directory, DomainId(18));
    std::fs::write(files.dead_marker(), b"").unwrap();
    assert_next_event(&mut watcher, "@releaseDomain", "released");
    let mut dom0 = daemon.dom0();
    assert!(!dom0.is_domain_introduced(DomainId(18)).unwrap());
    // Removing the marker makes the domid exist again: it can be introduced anew.
    std::fs::remove_file(files.dead_marker()).unwrap();
    let mut again =
        Client::create_and_introduce(&mut dom0, &daemon.run_directory, DomainId(18), 7).unwrap();
    assert!(dom0.is_domain_introduced(DomainId(18)).unwrap());
    // Its ring is served (its old home went with the death).
    assert_eq!(
        again.get_domain_path(DomainId(18)).unwrap(),
        "/local/domain/18"
    );
}

#[test]
fn introduce_and_release_fire_the_special_watches() {
    let daemon = Daemon::start(&[]);
    let mut watcher = daemon.dom0();
    watcher.watch("@introduceDomain", "in").unwrap();
    watcher.watch("@releaseDomain", "out").unwrap();
    // The initial events were queued right behind the WATCH replies, before the round trip.
    let initial = events_queued_so_far(&mut watcher);
    assert_eq!(
        initial,
        [
            ("@introduceDomain".to_string(), "in".to_string()),
            ("@releaseDomain".to_string(), "out".to_string())
        ]
    );
    let _guest = daemon.guest(DomainId(15));
    assert_next_event(&mut watcher, "@introduceDomain", "in");
    let mut dom0 = daemon.dom0();
    dom0.release(DomainId(15)).unwrap();
    assert_next_event(&mut watcher, "@releaseDomain", "out");
    assert!(!dom0.is_domain_introduced(DomainId(15)).unwrap());
    assert_eq!(error_name(dom0.release(DomainId(15))), "ENOENT");
}

#[test]
fn the_guest_tool_acts_as_a_domain() {
    let daemon = Daemon::start(&[]);
    let mut dom0 = daemon.dom0();
    dom0.mkdir("/local/domain/16").unwrap();
    dom0.set_perms("/local/domain/16", &["n16"]).unwrap();
    let tool = |arguments: &[&str]| {
        std::process::Command::new(guest_tool())
            .arg("--domid")
            .arg("16")
            .arg("--rundir")
            .arg(&daemon.run_directory)
            .arg("--socket")
            .arg(&daemon.socket_path)
            .args(arguments)
            .output()
            .unwrap()
    };
    let written = tool(&["--introduce", "write", "name", "guest16", "other", "x"]);
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let read = tool(&["read", "name", "other"]);
    assert_eq!(String::from_utf8_lossy(&read.stdout), "guest16\nx\n");
    let refused = tool(&["read", "/local/domain/0"]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "ERROR EACCES\n");
    let listed = tool(&["ls", "/local/domain/16"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "name\nother\n");
    let raw = tool(&["raw", "GET_DOMAIN_PATH", "16"]);
    assert_eq!(
        String::from_utf8_lossy(&raw.stdout),
        "GET_DOMAIN_PATH /local/domain/16\n"
    );
    let watched = tool(&["watch", "name", "tok", "--count", "1"]);
    assert_eq!(String::from_utf8_lossy(&watched.stdout), "name tok\n");
    let destroyed = tool(&["--destroy"]);
    assert!(destroyed.status.success());
    assert!(eventually(EVENT_WAIT, || !dom0
        .is_domain_introduced(DomainId(16))
        .unwrap_or(true)));
    let _ = Client::connect(&daemon.socket_path).unwrap();
}

#[test]
fn a_simulated_shutdown_fires_release_domain_once_and_keeps_the_domain() {
    let daemon = Daemon::start(&[]);
    let mut watcher = release_domain_watcher(&daemon);
    let mut guest = daemon.guest(DomainId(17));
    let files = DomainFiles::new(&daemon.run_directory, DomainId(17));
    simulation::announce_state_change(&daemon.run_directory, &files.shutdown_marker()).unwrap();
    assert_next_event(&mut watcher, "@releaseDomain", "released");
    // Reported once, however often the store looks again.
    simulation::announce_state_change(&daemon.run_directory, &files.shutdown_marker()).unwrap();
    let mut dom0 = daemon.dom0();
    // Answered in a round that handled the dom-exc prompt and the marker's inotify events
    // (server.rs): an event queued then comes before the watcher's round trip.
    round_trip(&mut dom0);
    assert_eq!(events_queued_so_far(&mut watcher), []);
    assert!(dom0.is_domain_introduced(DomainId(17)).unwrap());
    guest.write("still", b"here").unwrap();
}

#[test]
fn introduction_answers_a_reconnect_request_and_honours_the_feature_mask() {
    let daemon = Daemon::start(&[]);
    let mut dom0 = daemon.dom0();
    // XS_SET_FEATURE (24) before XS_INTRODUCE masks the advertised bits (docs/protocol.md, "Ring").
    set_features(&mut dom0, DomainId(18), 2);
    let files = DomainFiles::new(&daemon.run_directory, DomainId(18));
    files.create(3).unwrap();
    {
        // The dom0less flow: the page says RECONNECT before the domain is introduced.
        let page = xenstore_client::sys::SharedPage::map(&files.ring()).unwrap();
        page.store_u32_release(offset::CONNECTION, 1);
    }
    dom0.introduce(DomainId(18), 0, 3).unwrap();
    let guest = Client::attach(&daemon.run_directory, DomainId(18)).unwrap();
    let page = guest.transport().page();
    assert_eq!(page.load_u32_acquire(offset::CONNECTION), 0);
    assert!(eventually(EVENT_WAIT, || page
        .load_u32_acquire(offset::SERVER_FEATURES)
        == feature::ERROR));
}

#[test]
fn the_guest_tool_runs_a_transaction_batch() {
    use std::io::Write;
    let daemon = Daemon::start(&[]);
    let mut dom0 = daemon.dom0();
    dom0.mkdir("/local/domain/19").unwrap();
    dom0.set_perms("/local/domain/19", &["n19"]).unwrap();
    let mut child = std::process::Command::new(guest_tool())
        .args(["--domid", "19", "--introduce", "--rundir"])
        .arg(&daemon.run_directory)
        .arg("--socket")
        .arg(&daemon.socket_path)
        .arg("batch")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"start\nwrite a 1\nread a\ncommit\nread a\nread /local/domain/0\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].parse::<u32>().is_ok(), "{text}");
    assert_eq!(&lines[1..], &["1", "1", "ERROR EACCES"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(dom0.read("/local/domain/19/a").unwrap(), b"1");
}

#[test]
fn a_guest_flooding_requests_is_throttled_but_every_reply_arrives() {
    let daemon = Daemon::start(&[]);
    let mut guest = daemon.guest(DomainId(20));
    let mut bystander = daemon.guest(DomainId(21));
    guest.write("value", b"v").unwrap();
    // 100 requests without reading a reply: more than the outstanding quota (20) and more
    // than the response ring holds, so the store must stop reading and resume later.
    let total = 100u32;
    let mut requests = Vec::new();
    for request_id in 1..=total {
        let payload = b"value\0".to_vec();
        let message =
            xenstore_client::message::Message::new(MessageType::Read, request_id, 0, payload);
        requests.extend_from_slice(&message.to_bytes());
    }
    let sender = std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            // Meanwhile another guest is served normally.
            bystander.write("fine", b"1").unwrap();
            bystander.read("fine").unwrap()
        });
        guest.send_raw(&requests).unwrap();
        handle.join().unwrap()
    });
    assert_eq!(sender, b"1");
    let mut seen = Vec::new();
    while seen.len() < total as usize {
        let message = guest.receive_message(EVENT_WAIT).unwrap().expect("a reply");
        assert!(message.is(MessageType::Read));
        assert_eq!(message.payload, b"v");
        seen.push(message.header.request_id);
    }
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
}

#[test]
fn with_keep_orphans_a_dead_domains_nodes_go_to_the_privileged_domain() {
    let daemon = Daemon::start(&["-K"]);
    let mut guest = daemon.guest(DomainId(22));
    guest.write("kept", b"k").unwrap();
    drop(guest);
    let files = DomainFiles::new(&daemon.run_directory, DomainId(22));
    simulation::announce_state_change(&daemon.run_directory, &files.dead_marker()).unwrap();
    let mut dom0 = daemon.dom0();
    assert!(eventually(EVENT_WAIT, || !dom0
        .is_domain_introduced(DomainId(22))
        .unwrap_or(true)));
    assert_eq!(dom0.read("/local/domain/22/kept").unwrap(), b"k");
    assert_eq!(dom0.get_perms("/local/domain/22/kept").unwrap()[0], "n0");
}

#[test]
fn without_the_error_feature_a_failed_ring_gets_no_error_code() {
    let daemon = Daemon::start(&[]);
    let mut dom0 = daemon.dom0();
    // Mask every feature of domain 23 before introducing it (C 4.22 writes `error` only
    // for domains with XENSTORE_SERVER_FEATURE_ERROR).
    set_features(&mut dom0, DomainId(23), 0);
    let hostile = daemon.guest(DomainId(23));
    advance_request_producer(&hostile, 2000);
    let page = hostile.transport().page();
    // Answered in a round that served the ring after the notification (server.rs): the
    // store has failed the ring by now (its log says so), and wrote no error code.
    daemon.dom0().write("/alive", b"1").unwrap();
    assert!(daemon.stderr().contains("RingIndex"), "{}", daemon.stderr());
    assert_eq!(page.load_u32_acquire(offset::ERROR), 0);
    assert_eq!(page.load_u32_acquire(offset::SERVER_FEATURES), 0);
}

#[test]
fn many_guests_are_served_side_by_side() {
    let daemon = Daemon::start(&[]);
    let mut guests: Vec<_> = (30..50)
        .map(|domid| (domid, daemon.guest(DomainId(domid))))
        .collect();
    for round in 0..5 {
        for (domid, guest) in &mut guests {
            guest.write("round", round.to_string().as_bytes()).unwrap();
            assert_eq!(
                guest.read_string("round").unwrap(),
                round.to_string(),
                "domain {domid}"
            );
        }
    }
    let mut dom0 = daemon.dom0();
    for domid in 30..50 {
        assert_eq!(
            dom0.read(&format!("/local/domain/{domid}/round")).unwrap(),
            b"4"
        );
    }
}
