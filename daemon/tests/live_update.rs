//! A live update of the daemon (docs/migration-stream.md, "The daemon"): the state dumped on request through `$RUNDIR/dump-state`, a second daemon started from it with `-U`, the guest's ring and watch going on.

mod common;
use common::{
    Daemon, EVENT_WAIT, assert_next_event, eventually, round_trip, watch_with_initial_event,
};
use xenstore_client::client::{Client, SocketTransport};
use xenstore_client::simulation::{self, NotificationFifo};
use xenstore_engine::migration::RestoredEndpoint;
use xenstore_engine::wire::{MessageType, encode_message, join_strings};
use xenstore_engine::{Config, DomainId, Engine};

#[test]
fn a_second_daemon_goes_on_from_the_dumped_state() {
    let daemon = Daemon::start(&[]);
    let mut dom0 = daemon.dom0();
    dom0.write("/vm/name", b"guest five").unwrap();
    dom0.set_perms("/vm/name", &["n0", "r5"]).unwrap();
    let mut guest = daemon.guest(DomainId(5));
    guest.write("data/x", b"before").unwrap();
    watch_with_initial_event(&mut guest, "data", "mine");
    // The quota set through the socket survives too.
    dom0.call(
        MessageType::SetQuota,
        0,
        &join_strings(&["5", "nodes", "321"]),
    )
    .unwrap();

    // Half a request from the guest: the new daemon gets the rest.
    let request = encode_message(MessageType::Read.number(), 77, 0, b"data/x\0");
    guest.send_raw(&request[..19]).unwrap();
    // The daemon has read them once a request sent afterwards is answered.
    round_trip(&mut dom0);

    let dump = simulation::state_dump_file(daemon.run_directory());
    NotificationFifo::open(&simulation::dump_state_fifo(daemon.run_directory()))
        .unwrap()
        .notify(0)
        .unwrap();
    assert!(
        eventually(EVENT_WAIT, || dump.is_file()),
        "no state dump: {}",
        daemon.stderr()
    );
    // The stream carries the half request (the daemon took it off the ring).
    let (_, saved) = Engine::from_state(Config::default(), &std::fs::read(&dump).unwrap())
        .expect("the dump reads back");
    let ring = saved
        .connections
        .iter()
        .find(|restored| matches!(restored.endpoint, RestoredEndpoint::Ring { domain, .. } if domain == DomainId(5)))
        .expect("the guest's ring is in the dump");
    assert_eq!(ring.unread_input, request[..19]);
    drop(dom0);
    let run_directory = daemon.stop_keeping_run_directory();

    let daemon = Daemon::start_in(run_directory, &["-U"]);
    assert!(!dump.exists(), "the dump is read once");
    let mut dom0 = daemon.dom0();
    assert_eq!(dom0.read("/vm/name").unwrap(), b"guest five");
    assert_eq!(dom0.get_perms("/vm/name").unwrap(), vec!["n0", "r5"]);
    assert_eq!(
        dom0.read("/local/domain/5/data/x").unwrap(),
        b"before",
        "{}",
        daemon.stderr()
    );
    assert!(dom0.is_domain_introduced(DomainId(5)).unwrap());
    guest.send_raw(&request[19..]).unwrap();
    let reply = guest
        .receive_message(EVENT_WAIT)
        .unwrap()
        .expect("the reply to the request begun before the update");
    assert_eq!(reply.header.request_id, 77);
    assert_eq!(reply.payload, b"before");
    let quota = dom0.call(MessageType::GetQuota, 0, b"5\0nodes\0").unwrap();
    assert_eq!(quota, b"321\0");
    // The guest's watch fires in the new daemon.
    dom0.write("/local/domain/5/data/y", b"after").unwrap();
    assert_next_event(&mut guest, "data/y", "mine");
    // The guest's ring goes on where it was.
    assert_eq!(guest.read("data/y").unwrap(), b"after");
    assert_eq!(guest.read("/vm/name").unwrap(), b"guest five");
    guest.write("data/z", b"new").unwrap();
    assert_eq!(dom0.read("/local/domain/5/data/z").unwrap(), b"new");
}

/// `live-update` as the daemon's `xenstore-control` sends it (`-f`, then `-s`), `|` for NUL.
fn live_update_step(dom0: &mut Client<SocketTransport>, arguments: &str) -> String {
    let payload: Vec<u8> = format!("live-update|{arguments}")
        .bytes()
        .map(|byte| if byte == b'|' { 0 } else { byte })
        .collect();
    match dom0.call(MessageType::Control, 0, &payload) {
        Ok(reply) => String::from_utf8_lossy(&reply).replace('\0', "|"),
        Err(error) => format!("ERROR {error:?}"),
    }
}

/// The daemon's own live update (docs/live-update.md, "The daemon"): `-f` names the new
/// executable (here the same program), `-s` replaces the process by it. The process id, the
/// listening socket, every socket client (with its watch) and guest ring stay; the client
/// that asked gets its `OK` from the new instance.
#[test]
fn live_update_dash_f_replaces_the_process_and_keeps_its_clients() {
    let mut daemon = Daemon::start(&[]);
    let mut dom0 = daemon.dom0();
    dom0.write("/lu/kept", b"yes").unwrap();
    let mut watcher = daemon.dom0();
    watch_with_initial_event(&mut watcher, "/lu", "socket-watch");
    let mut guest = daemon.guest(DomainId(6));
    watch_with_initial_event(&mut guest, "data", "ring-watch");

    assert_eq!(
        live_update_step(&mut dom0, "-f|/nonexistent/xenstored|"),
        "OK|"
    );
    assert_eq!(
        live_update_step(&mut dom0, "-s|-t|10|"),
        "File not accessible.|",
        "{}",
        daemon.stderr()
    );
    let not_executable = daemon.run_directory().join("not-executable");
    std::fs::write(&not_executable, b"").unwrap();
    assert_eq!(
        live_update_step(&mut dom0, &format!("-f|{}|", not_executable.display())),
        "OK|"
    );
    assert_eq!(
        live_update_step(&mut dom0, "-s|-t|10|"),
        "File not executable.|"
    );
    round_trip(&mut dom0);

    assert_eq!(
        live_update_step(
            &mut dom0,
            &format!("-f|{}|", env!("CARGO_BIN_EXE_xenstored"))
        ),
        "OK|"
    );
    assert_eq!(
        live_update_step(&mut dom0, "-s|-t|10|"),
        "OK|",
        "{}",
        daemon.stderr()
    );
    let stderr = daemon.stderr();
    assert!(stderr.contains("live-update: starting"), "{stderr}");
    assert!(stderr.contains("state restored from"), "{stderr}");
    // The same process, now running the executable with `-U`.
    assert!(daemon.is_running(), "{stderr}");
    let command_line = std::fs::read(format!("/proc/{}/cmdline", daemon.pid())).unwrap();
    assert!(
        command_line.ends_with(b"\0-U\0"),
        "{:?}",
        String::from_utf8_lossy(&command_line)
    );

    // The same connections, served by the new instance.
    assert_eq!(dom0.read("/lu/kept").unwrap(), b"yes");
    dom0.write("/lu/after", b"1").unwrap();
    assert_next_event(&mut watcher, "/lu/after", "socket-watch");
    dom0.write("/local/domain/6/data/after", b"1").unwrap();
    assert_next_event(&mut guest, "data/after", "ring-watch");
    // New clients find the socket.
    assert_eq!(daemon.dom0().read("/lu/kept").unwrap(), b"yes");
    assert_eq!(
        live_update_step(&mut dom0, "-a|"),
        "No live-update session active.|"
    );
}
