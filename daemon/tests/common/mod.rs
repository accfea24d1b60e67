//! Shared helpers of the integration tests: a `xenstored` child process on a private run
//! directory, and round trips that stand in for waiting.
//!
//! A test never sleeps and then asserts that nothing happened: on a slow machine such a check
//! passes without checking anything. It sends a request instead, whose reply must come after
//! whatever the earlier actions could have caused:
//!
//! - On one connection, the store handles requests in order and queues a request's reply
//!   before the watch events it causes (`engine/src/engine.rs`, module comment), so every
//!   event queued for the connection before the store read a request arrives before that
//!   request's reply ([`events_queued_so_far`], [`messages_queued_so_far`]).
//! - Across connections, a round trip through the daemon's loop shows it has handled earlier
//!   input (`daemon/src/server.rs`): one round takes every ready descriptor from epoll (a
//!   guest's notification or a marker written before a request was sent is ready no later than
//!   that request), reads the sockets, serves the notified and the blocked rings, applies
//!   marker changes, and only then sends the round's socket replies ([`round_trip`]).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use xenstore_client::client::{Client, RingTransport, SocketTransport, Transport};
use xenstore_client::message::Message;
use xenstore_client::sys::SharedPage;
use xenstore_engine::DomainId;
use xenstore_engine::ring::{RingMemory, offset};
use xenstore_engine::wire::{MessageHeader, MessageType, join_strings};

static NEXT_DAEMON: AtomicU32 = AtomicU32::new(0);

/// The `xenstore-guest` program of the `xenstore-client` crate, which cargo builds next to
/// `xenstored` when it tests that crate too (`cargo test --workspace`; `client/tests/` makes it
/// build the program). Testing this package alone needs `cargo build -p xenstore-client` first.
pub fn guest_tool() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_xenstored")).with_file_name("xenstore-guest");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p xenstore-client` or `cargo test --workspace`",
        path.display()
    );
    path
}

/// A running daemon; killed and cleaned up on drop.
pub struct Daemon {
    child: Child,
    pub run_directory: PathBuf,
    pub socket_path: PathBuf,
    /// Leave the run directory on drop (a second daemon takes it over).
    keep_run_directory: bool,
}

impl Daemon {
    /// Starts `xenstored` with `extra_arguments` and waits until its socket accepts clients.
    pub fn start(extra_arguments: &[&str]) -> Daemon {
        let run_directory = std::env::temp_dir().join(format!(
            "xenstored-test-{}-{}",
            std::process::id(),
            NEXT_DAEMON.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&run_directory);
        std::fs::create_dir_all(&run_directory).expect("create the run directory");
        Daemon::start_in(run_directory, extra_arguments)
    }

    /// Starts `xenstored` on an existing run directory (what an earlier daemon left).
    pub fn start_in(run_directory: PathBuf, extra_arguments: &[&str]) -> Daemon {
        let socket_path = run_directory.join("socket");
        let stderr = std::fs::File::options()
            .create(true)
            .append(true)
            .open(run_directory.join("stderr"))
            .expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_xenstored"))
            .arg("--socket")
            .arg(&socket_path)
            .arg("--rundir")
            .arg(&run_directory)
            .arg("-N")
            .args(extra_arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start xenstored");
        let daemon = Daemon {
            child,
            run_directory,
            socket_path,
            keep_run_directory: false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&daemon.socket_path).is_err() {
            assert!(
                Instant::now() < deadline,
                "xenstored did not start: {}",
                daemon.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    /// What the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.run_directory.join("stderr")).unwrap_or_default()
    }

    /// A privileged socket client.
    pub fn dom0(&self) -> Client<SocketTransport> {
        let mut client = Client::connect(&self.socket_path).expect("connect to the socket");
        client.timeout = Duration::from_secs(5);
        client
    }

    /// Introduces guest `domain` with a home `/local/domain/<domid>` it owns (as a toolstack
    /// would) and returns a client acting as it.
    pub fn guest(&self, domain: DomainId) -> Client<RingTransport> {
        let mut dom0 = self.dom0();
        let home = format!("/local/domain/{domain}");
        dom0.mkdir(&home).expect("mkdir home");
        dom0.set_perms(&home, &[&format!("n{domain}")])
            .expect("setperms home");
        let mut guest = Client::create_and_introduce(&mut dom0, &self.run_directory, domain, 7)
            .expect("introduce the guest");
        guest.timeout = Duration::from_secs(5);
        guest
    }

    /// The daemon's process id (kept by a live update, which replaces the program only).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Whether the daemon is asleep (state `S` in `/proc/<pid>/stat`): waiting in epoll, not
    /// spinning. A daemon that busy-waits is running or runnable, never in `S`.
    pub fn is_asleep(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/<pid>/stat");
        // The command name may hold spaces: the state is the first field after its ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            == Some("S")
    }

    pub fn run_directory(&self) -> &Path {
        &self.run_directory
    }

    /// Stops the daemon and returns its run directory, left in place.
    pub fn stop_keeping_run_directory(mut self) -> PathBuf {
        self.keep_run_directory = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.run_directory.clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_run_directory {
            let _ = std::fs::remove_dir_all(&self.run_directory);
        }
    }
}

/// The store error name of a result, for `assert_eq!`.
pub fn error_name<T: std::fmt::Debug>(
    result: Result<T, xenstore_client::client::ClientError>,
) -> String {
    match result {
        Err(error) => error
            .store_error()
            .map(String::from)
            .unwrap_or_else(|| format!("{error}")),
        Ok(value) => format!("Ok({value:?})"),
    }
}

/// How long a test waits for a watch event, or with [`eventually`] for a change it caused.
pub const EVENT_WAIT: Duration = Duration::from_secs(3);

/// The next watch event `client` receives, within [`EVENT_WAIT`], is `path` with `token`.
#[track_caller]
pub fn assert_next_event<T: Transport>(client: &mut Client<T>, path: &str, token: &str) {
    assert_eq!(
        client.next_event(EVENT_WAIT).expect("a watch event"),
        Some((path.to_string(), token.to_string()))
    );
}

/// Watches `path` with `token` and receives the watch's initial event.
#[track_caller]
pub fn watch_with_initial_event<T: Transport>(client: &mut Client<T>, path: &str, token: &str) {
    client.watch(path, token).expect("XS_WATCH");
    assert_next_event(client, path, token);
}

/// Sends a lone `WRITE` header announcing `payload_length_bytes` (no payload follows): how a
/// test announces a message larger than the protocol allows.
pub fn send_write_header<T: Transport>(client: &mut Client<T>, payload_length_bytes: u32) {
    let header = MessageHeader {
        message_type: MessageType::Write.number(),
        request_id: 1,
        transaction_id: 0,
        payload_length_bytes,
    };
    client
        .send_raw(&header.to_bytes())
        .expect("send the header");
}

/// Moves the request producer of `guest`'s ring `distance` bytes past the store's consumer
/// and notifies the store: more than a ring ahead is index abuse.
pub fn advance_request_producer(guest: &Client<RingTransport>, distance: u32) {
    let page = guest.transport().page();
    let consumer = page.load_u32_acquire(offset::REQUEST_CONSUMER);
    page.store_u32_release(offset::REQUEST_PRODUCER, consumer.wrapping_add(distance));
    guest.transport().notify().expect("notify the store");
}

/// The store writes `code` into the ring's error field within [`EVENT_WAIT`].
#[track_caller]
pub fn assert_ring_error(page: &SharedPage, code: u32) {
    assert!(
        eventually(EVENT_WAIT, || page.load_u32_acquire(offset::ERROR) == code),
        "error field {}, not {code}",
        page.load_u32_acquire(offset::ERROR)
    );
}

/// `XS_SET_FEATURE` of `features` for `domain` (before its introduction it masks what its
/// ring advertises).
pub fn set_features(dom0: &mut Client<SocketTransport>, domain: DomainId, features: u32) {
    dom0.call(
        MessageType::SetFeature,
        0,
        &join_strings(&[domain.to_string(), features.to_string()]),
    )
    .expect("XS_SET_FEATURE");
}

/// Polls `condition` every 20 ms for up to `timeout`.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request and its reply on `client`'s connection (see the module comment for what that
/// shows). `GET_DOMAIN_PATH` changes nothing, causes no event, and any domain may send it.
pub fn round_trip<T: Transport>(client: &mut Client<T>) {
    client
        .get_domain_path(DomainId(0))
        .expect("a round trip through the store");
}

/// Every watch event queued for `client`'s connection before a round trip on it: the events
/// of everything the store handled before it read the round trip's request, which come
/// before its reply (see the module comment).
pub fn events_queued_so_far<T: Transport>(client: &mut Client<T>) -> Vec<(String, String)> {
    round_trip(client);
    // The events before the reply were read with it; nothing is waited for.
    client
        .collect_events(Duration::ZERO)
        .expect("queued events")
}

/// A dom0 connection watching `@releaseDomain` with the token `released`, its initial event
/// read: the only event queued for it so far (see the module comment).
pub fn release_domain_watcher(daemon: &Daemon) -> Client<SocketTransport> {
    let mut watcher = daemon.dom0();
    watcher
        .watch("@releaseDomain", "released")
        .expect("watch @releaseDomain");
    // The initial event was queued right behind the WATCH reply, before the round trip.
    assert_eq!(
        events_queued_so_far(&mut watcher),
        [("@releaseDomain".to_string(), "released".to_string())]
    );
    watcher
}

/// The request id of the marker request of [`messages_queued_so_far`]: no test sends one of
/// its own with it, and the marker is also told apart by its type.
pub const MARKER_REQUEST_ID: u32 = u32::MAX;

/// Every message (replies and watch events) not received yet that was queued for `client`'s
/// connection before a marker request: `GET_DOMAIN_PATH` with [`MARKER_REQUEST_ID`], sent
/// raw, whose reply comes after them (see the module comment). For clients that sent raw
/// requests, whose stray replies [`Client::request`] would skip unseen.
pub fn messages_queued_so_far<T: Transport>(client: &mut Client<T>) -> Vec<Message> {
    let marker = Message::new(
        MessageType::GetDomainPath,
        MARKER_REQUEST_ID,
        0,
        join_strings(&["0"]),
    );
    client
        .send_raw(&marker.to_bytes())
        .expect("send the marker request");
    let mut before = Vec::new();
    loop {
        let message = client
            .receive_message(Duration::from_secs(5))
            .expect("receive")
            .expect("the marker request is answered");
        if message.is(MessageType::GetDomainPath) && message.header.request_id == MARKER_REQUEST_ID
        {
            return before;
        }
        before.push(message);
    }
}
