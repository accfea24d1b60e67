//! The daemon on its Unix socket: command line, privileged requests, protocol errors, tracing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, error_name, eventually};
use xenstored_linux::wire::{Header, message_type};

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
    assert_eq!(dom0.get_domain_path(3).unwrap(), "/local/domain/3");
    assert_eq!(error_name(dom0.call(99, 0, b"\0")), "ENOSYS");
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
    assert!(
        watcher
            .collect_events(Duration::from_millis(300))
            .unwrap()
            .is_empty()
    );
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
    let header = Header {
        message_type: message_type::WRITE,
        request_id: 1,
        transaction_id: 0,
        length: 5000,
    };
    bad.send_raw(&header.encode()).unwrap();
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
