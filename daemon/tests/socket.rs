//! The daemon on its Unix socket: command line, privileged requests, protocol errors, tracing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    Daemon, error_name, events_queued_so_far, eventually, messages_queued_so_far, round_trip,
    send_write_header,
};
use xenstore_client::message::Message;
use xenstore_engine::DomainId;
use xenstore_engine::wire::{MessageHeader, MessageType, join_strings};

#[test]
fn help_and_usage_errors() {
    let help = Command::new(env!("CARGO_BIN_EXE_xenstored"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--entry-nb") && text.contains("XENSTORED_PATH"),
        "{text}"
    );
    for arguments in [
        &["--bogus"][..],
        &["-E"],
        &["-Q", "bogus=1"],
        &["-w", "other=1"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_xenstored"))
            .args(arguments)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{arguments:?}");
    }
}

#[test]
fn replaces_a_stale_socket_and_writes_the_pid_file() {
    let first = Daemon::start(&[]);
    let pid_file = first.run_directory.join("pid");
    // A second daemon on the same socket path removes the stale name and binds it.
    let socket = first.socket_path.clone();
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_xenstored"))
        .arg("--socket")
        .arg(&socket)
        .arg("--rundir")
        .arg(&first.run_directory)
        .arg("-F")
        .arg(&pid_file)
        .spawn()
        .unwrap();
    let written = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|text| text.trim() == second.id().to_string())
    });
    let _ = second.kill();
    let _ = second.wait();
    assert!(written, "pid file not written");
}

#[test]
fn basic_requests_over_the_socket() {
    let daemon = Daemon::start(&[]);
    let mut dom0 = daemon.dom0();
    dom0.write("/test/a", b"hello").unwrap();
    assert_eq!(dom0.read("/test/a").unwrap(), b"hello");
    dom0.write("/test/b", b"").unwrap();
    assert_eq!(dom0.directory("/test").unwrap(), vec!["a", "b"]);
    assert_eq!(dom0.get_perms("/test/a").unwrap(), vec!["n0"]);
    dom0.set_perms("/test/a", &["n0", "r3"]).unwrap();
    assert_eq!(dom0.get_perms("/test/a").unwrap(), vec!["n0", "r3"]);
    dom0.rm("/test").unwrap();
    assert_eq!(error_name(dom0.read("/test/a")), "ENOENT");
    assert_eq!(
        dom0.get_domain_path(DomainId(3)).unwrap(),
        "/local/domain/3"
    );
    assert_eq!(error_name(dom0.call(99u32, 0, b"\0")), "ENOSYS");
    assert_eq!(error_name(dom0.read("bad//path")), "EINVAL");
}

#[test]
fn transactions_and_watches_over_the_socket() {
    let daemon = Daemon::start(&[]);
    let mut dom0 = daemon.dom0();
    let mut watcher = daemon.dom0();
    watcher.watch("/tx", "token").unwrap();
    assert_eq!(
        watcher.next_event(Duration::from_secs(2)).unwrap(),
        Some(("/tx".into(), "token".into()))
    );
    let transaction = dom0.transaction_start().unwrap();
    dom0.write_in(transaction, "/tx/value", b"1").unwrap();
    assert_eq!(error_name(dom0.read("/tx/value")), "ENOENT");
    // The write was answered before the watcher's round trip: an event would come before it.
    assert_eq!(events_queued_so_far(&mut watcher), []);
    dom0.transaction_end(transaction, true).unwrap();
    assert_eq!(dom0.read("/tx/value").unwrap(), b"1");
    assert_eq!(
        watcher.next_event(Duration::from_secs(2)).unwrap(),
        Some(("/tx/value".into(), "token".into()))
    );
}

#[test]
fn an_oversized_header_closes_the_socket_but_not_the_daemon() {
    let mut daemon = Daemon::start(&[]);
    let mut bad = daemon.dom0();
    send_write_header(&mut bad, 5000);
    // C closes the connection: the next request fails on this socket.
    assert!(bad.read("/").is_err());
    assert!(daemon.is_running());
    let mut good = daemon.dom0();
    good.write("/still", b"served").unwrap();
}

#[test]
fn trace_file_gets_access_lines() {
    let directory = std::env::temp_dir().join(format!("xenstored-trace-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let trace = directory.join("trace");
    let daemon = Daemon::start(&["-T", trace.to_str().unwrap()]);
    let mut dom0 = daemon.dom0();
    dom0.write("/traced", b"x").unwrap();
    let logged = eventually(Duration::from_secs(2), || {
        std::fs::read_to_string(&trace).is_ok_and(|text| text.contains("/traced"))
    });
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&directory);
    assert!(logged, "trace file: {text:?}");
    // Lines start with a timestamp `YYYY-MM-DD HH:MM:SS.mmm`.
    assert!(
        text.lines()
            .all(|line| line.as_bytes().get(4) == Some(&b'-')),
        "{text}"
    );
}

#[test]
fn a_socket_that_stops_reading_gets_every_event_once_it_reads_again() {
    let daemon = Daemon::start(&[]);
    let mut writer = daemon.dom0();
    let mut slow = daemon.dom0();
    // Long tokens, so that the events overflow the socket's buffer: the daemon keeps the rest
    // and writes it when epoll reports the socket writable again.
    let token = "t".repeat(200);
    slow.watch("/flood", &token).unwrap();
    assert_eq!(
        slow.next_event(Duration::from_secs(2)).unwrap(),
        Some(("/flood".into(), token.clone()))
    );
    const WRITES: usize = 3000;
    for index in 0..WRITES {
        writer.write(&format!("/flood/{index}"), b"x").unwrap();
    }
    // Other clients are served meanwhile.
    assert_eq!(daemon.dom0().read("/flood/0").unwrap(), b"x");
    for index in 0..WRITES {
        assert_eq!(
            slow.next_event(Duration::from_secs(5)).unwrap(),
            Some((format!("/flood/{index}"), token.clone()))
        );
    }
    assert_eq!(slow.read("/flood/1").unwrap(), b"x");
}

#[test]
fn a_partial_request_leaves_the_daemon_asleep_until_the_rest_arrives() {
    let daemon = Daemon::start(&[]);
    let mut client = daemon.dom0();
    client.write("/partial", b"value").unwrap();
    let payload = b"/partial\0";
    let header = MessageHeader {
        message_type: MessageType::Read.number(),
        request_id: 9,
        transaction_id: 0,
        payload_length_bytes: payload.len() as u32,
    };
    client.send_raw(&header.to_bytes()).unwrap();
    client.send_raw(&payload[..3]).unwrap();
    // Answered at the end of a round that read the partial request (`common`); others are
    // served meanwhile.
    round_trip(&mut daemon.dom0());
    // Waiting for the rest is a wait in epoll, not a busy loop: the daemon is seen asleep.
    assert!(
        eventually(Duration::from_secs(2), || daemon.is_asleep()),
        "the daemon spins while it waits for the rest of a request"
    );
    client.send_raw(&payload[3..]).unwrap();
    let reply = client
        .receive_message(Duration::from_secs(5))
        .unwrap()
        .expect("a reply");
    assert_eq!(reply.header.request_id, 9);
    assert_eq!(reply.payload, b"value");
}

#[test]
fn many_socket_clients_come_and_go() {
    let daemon = Daemon::start(&[]);
    let mut watcher = daemon.dom0();
    watcher.watch("/clients", "w").unwrap();
    assert!(
        watcher
            .next_event(Duration::from_secs(2))
            .unwrap()
            .is_some()
    );
    for round in 0..3 {
        let mut clients: Vec<_> = (0..100).map(|_| daemon.dom0()).collect();
        for (index, client) in clients.iter_mut().enumerate() {
            client.watch(&format!("/clients/{index}"), "mine").unwrap();
            client
                .write(&format!("/clients/{index}"), round.to_string().as_bytes())
                .unwrap();
        }
        // Half of them go away (their watches with them); the rest are still served.
        let kept: Vec<_> = clients.into_iter().skip(50).collect();
        let mut dom0 = daemon.dom0();
        for index in 0..100 {
            dom0.write(&format!("/clients/{index}"), b"again").unwrap();
        }
        for (offset, mut client) in kept.into_iter().enumerate() {
            let index = 50 + offset;
            assert_eq!(client.read(&format!("/clients/{index}")).unwrap(), b"again");
        }
        // Every node's event reached the watcher (identical unread ones are merged): the
        // writes were answered before the watcher's round trip, so their events come first.
        let mut paths: Vec<String> = events_queued_so_far(&mut watcher)
            .into_iter()
            .map(|(path, _)| path)
            .filter(|path| path.starts_with("/clients/"))
            .collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 100, "round {round}");
    }
}

/// Pipelined requests (many in one write, one split across writes, a 4 KiB value) from
/// several clients at once, answered in order and once each: with io_uring batches (where
/// the kernel allows them) and with one system call per socket operation.
#[test]
fn pipelined_requests_from_concurrent_clients_are_each_answered_once() {
    for arguments in [&[][..], &["--no-io-uring"]] {
        let daemon = Daemon::start(arguments);
        let large = vec![b'v'; 4000];
        daemon.dom0().write("/pipe/large", &large).unwrap();
        std::thread::scope(|scope| {
            for client_index in 0..6u32 {
                let daemon = &daemon;
                let large = &large;
                scope.spawn(move || {
                    let mut client = daemon.dom0();
                    for round in 0..20u32 {
                        let path = format!("/pipe/{client_index}");
                        let value = format!("{round}");
                        let mut batch = Vec::new();
                        let mut request_id = round * 1000;
                        // XS_WRITE's payload: the path, a NUL, the value.
                        let write = [path.as_bytes(), b"\0", value.as_bytes()].concat();
                        batch.extend(
                            Message::new(MessageType::Write, request_id, 0, write).to_bytes(),
                        );
                        for _ in 0..30 {
                            request_id += 1;
                            let read = if request_id % 7 == 0 {
                                "/pipe/large"
                            } else {
                                &path
                            };
                            batch.extend(
                                Message::new(
                                    MessageType::Read,
                                    request_id,
                                    0,
                                    join_strings(&[read]),
                                )
                                .to_bytes(),
                            );
                        }
                        // Split the batch inside a message. The pause paces the sender (no
                        // assertion waits on it): it makes it likely that the daemon reads
                        // the first half alone, so that a message arrives in two reads.
                        let (first, second) = batch.split_at(batch.len() / 2 + 5);
                        client.send_raw(first).unwrap();
                        std::thread::sleep(Duration::from_millis(1));
                        client.send_raw(second).unwrap();
                        for expected_id in round * 1000..=request_id {
                            let reply = client
                                .receive_message(Duration::from_secs(5))
                                .unwrap()
                                .expect("a reply");
                            assert_eq!(reply.header.request_id, expected_id, "{arguments:?}");
                            if expected_id == round * 1000 {
                                assert_eq!(reply.payload, b"OK\0");
                            } else if expected_id % 7 == 0 {
                                assert_eq!(&reply.payload, large);
                            } else {
                                assert_eq!(reply.payload, value.as_bytes());
                            }
                        }
                        // Nothing was answered twice: a second reply would have been queued
                        // before the reply to a further request (`common`).
                        assert_eq!(messages_queued_so_far(&mut client), [], "{arguments:?}");
                    }
                });
            }
        });
    }
}
