//! A migration stream written by C xenstored itself (Debian bookworm's 4.17, in a live update; docs/migration-stream.md, "Tests") loads, answers with what C had, and is stable when written back.
//!
//! The fixture and its provenance: `engine/tests/fixtures/README.md`. Its content is what
//! `tests/lib/c-stream-populate.py` put into C before the update; the assertions below name it.

mod support;

use std::collections::HashMap;

use support::raw_store::{Store, payload};

use xenstore_engine::migration::{
    FrontEndState, GlobalData, RestoredConnection, RestoredEndpoint, RestoredState,
};
use xenstore_engine::wire::{MessageType, encode_message};
use xenstore_engine::{Config, ConnectionId, DomainId, Engine};

const C_STREAM: &[u8] = include_bytes!("fixtures/c-xenstored-4.17-live-update.stream");

impl Store {
    /// Sends one request and returns the reply's type and payload, the only message the
    /// connection gets (no request here fires a watch of the connection that sends it).
    fn send(&mut self, connection: ConnectionId, kind: MessageType, text: &str) -> (u32, Vec<u8>) {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.feed(
            connection,
            &encode_message(kind.number(), request_id, 0, &payload(text)),
        );
        let mut output = messages(&self.take_output(connection));
        assert_eq!(output.len(), 1, "{kind:?} {text}: one reply");
        let (reply_kind, reply_id, body) = output.remove(0);
        assert_eq!(reply_id, request_id);
        (reply_kind, body)
    }

    /// The reply's payload as text (NUL shown as `|`), asserting it is not an error.
    fn ok(&mut self, connection: ConnectionId, kind: MessageType, text: &str) -> String {
        let (reply_kind, body) = self.send(connection, kind, text);
        let shown = String::from_utf8_lossy(&body).replace('\0', "|");
        assert_ne!(
            reply_kind,
            MessageType::Error.number(),
            "{kind:?} {text}: {shown}"
        );
        shown
    }

    /// The error a request is answered with.
    fn error(&mut self, connection: ConnectionId, kind: MessageType, text: &str) -> String {
        let (reply_kind, body) = self.send(connection, kind, text);
        assert_eq!(reply_kind, MessageType::Error.number(), "{kind:?} {text}");
        String::from_utf8_lossy(&body).replace('\0', "|")
    }
}

/// Whole messages: (type, request id, payload).
fn messages(mut bytes: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    let mut found = Vec::new();
    while !bytes.is_empty() {
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let length = word(12) as usize;
        found.push((word(0), word(4), bytes[16..16 + length].to_vec()));
        bytes = &bytes[16 + length..];
    }
    found
}

/// The watch events (path, token) in `bytes`, which must be whole messages.
fn events(bytes: &[u8]) -> Vec<String> {
    messages(bytes)
        .into_iter()
        .map(|(kind, _, body)| {
            assert_eq!(kind, MessageType::WatchEvent.number(), "only events");
            String::from_utf8_lossy(&body).replace('\0', "|")
        })
        .collect()
}

/// The connections C had, in its order (its connection list: dom0's ring first, then as
/// they were made).
struct Connections {
    /// The socket connection that asked for the live update (dom0).
    control: ConnectionId,
    /// The second socket client, with two watches and half a `WRITE`.
    watcher: ConnectionId,
    guest1: ConnectionId,
    guest2: ConnectionId,
    guest3: ConnectionId,
}

fn load() -> (Store, RestoredState, Connections) {
    let (engine, state) =
        Engine::from_state(Config::default(), C_STREAM).expect("C's stream loads");
    let id = |index: usize| state.connections[index].connection;
    let connections = Connections {
        control: id(1),
        guest1: id(2),
        guest2: id(3),
        guest3: id(4),
        watcher: id(5),
    };
    let store = Store::new(engine, 1000);
    (store, state, connections)
}

fn ring(domain: u16, port: u32) -> RestoredEndpoint {
    RestoredEndpoint::Ring {
        domain: DomainId(domain),
        event_channel_port: port,
        unique_id: None,
    }
}

#[test]
fn the_records_c_wrote_come_back_to_the_front_end() {
    let (_, state, _) = load();
    // C 4.17 writes version 1 (no depth watches, no features); the descriptors of its
    // listening socket and event-channel driver, kept across exec().
    assert_eq!(state.version, 1);
    assert_eq!(
        state.global,
        Some(GlobalData {
            socket_fd: 3,
            event_channel_fd: 6
        })
    );
    let endpoints: Vec<RestoredEndpoint> = state.connections.iter().map(|c| c.endpoint).collect();
    // Ports are C's local ports (the order in which it bound them), not the guests' ports
    // 11, 12, 13 of XS_INTRODUCE; dom0's ring (from /proc/xen/xsd_kva) has port 1. Domain 3
    // acts for domain 2 (XS_SET_TARGET): the reader keeps that in the engine, not here.
    assert_eq!(
        endpoints,
        [
            ring(0, 1),
            RestoredEndpoint::Socket { socket_fd: 8 },
            ring(1, 3),
            ring(2, 4),
            ring(3, 5),
            RestoredEndpoint::Socket { socket_fd: 16 },
        ]
    );
    // Half requests: guest 2's READ of /vm/uuid (id 77) and the watcher's WRITE (id 55).
    let mut half_read = encode_message(MessageType::Read.number(), 77, 0, b"/vm/uuid\0");
    half_read.truncate(16 + 4);
    assert_eq!(state.connections[3].unread_input, half_read);
    let mut half_write = encode_message(MessageType::Write.number(), 55, 0, &[0; 20]);
    half_write.truncate(16);
    half_write.extend_from_slice(b"/tool/fix");
    assert_eq!(state.connections[5].unread_input, half_write);
    for index in [0, 1, 2, 4] {
        assert!(state.connections[index].unread_input.is_empty());
    }
}

#[test]
fn queued_output_is_delivered_first() {
    let (mut store, _, connections) = load();
    // C appended the reply to "live-update -s" for the connection that asked.
    let reply = messages(&store.take_output(connections.control));
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].0, MessageType::Control.number());
    assert_eq!(reply[0].2, b"OK\0");
    // Guest 1 stopped reading its ring: C had sent 4 bytes of the header of one more watch
    // event; the rest (12 header bytes and the payload) is what is left.
    let rest = store.take_output(connections.guest1);
    assert_eq!(rest.len(), 26);
    assert_eq!(&rest[rest.len() - 14..], b"name\0own-name\0");
    assert_eq!(&rest[8..12], &14u32.to_le_bytes());
    for quiet in [connections.guest2, connections.guest3, connections.watcher] {
        assert!(store.take_output(quiet).is_empty());
    }
}

#[test]
fn nodes_and_permissions_are_what_c_had() {
    use MessageType::*;
    let (mut store, _, connections) = load();
    let dom0 = connections.control;
    store.take_output(dom0);
    assert_eq!(store.ok(dom0, Directory, "/|"), "tool|local|vm|");
    assert_eq!(store.ok(dom0, Directory, "/local/domain|"), "1|2|3|");
    assert_eq!(
        store.ok(dom0, Directory, "/local/domain/1/data|"),
        "deep|empty|"
    );
    assert_eq!(store.ok(dom0, Read, "/local/domain/1/name|"), "guest-1-39");
    assert_eq!(
        store.ok(dom0, Read, "/local/domain/2/name|"),
        "renamed-by-2"
    );
    assert_eq!(store.ok(dom0, Read, "/local/domain/3/name|"), "guest-3");
    assert_eq!(store.ok(dom0, Read, "/tool/fixture/counter|"), "0");
    assert_eq!(store.ok(dom0, Read, "/local/domain/1/data/empty|"), "");
    let (_, binary) = store.send(dom0, Read, "/local/domain/1/data/deep/deeper/deepest|");
    assert_eq!(binary, b"bin\x00\x01\xfe\xffary");
    assert_eq!(
        store.ok(dom0, GetPermissions, "/local/domain/1/data|"),
        "b1|r2|w3|"
    );
    assert_eq!(
        store.ok(dom0, GetPermissions, "/local/domain/2/name|"),
        "n2|r0|"
    );
    // A stale entry is still listed, as C lists it.
    assert_eq!(store.ok(dom0, GetPermissions, "/vm|"), "n0|r1|r4|");
    assert_eq!(store.ok(dom0, GetPermissions, "/vm/uuid|"), "n0|");
    assert_eq!(store.ok(dom0, GetPermissions, "@releaseDomain|"), "n0|");
    assert_eq!(store.ok(dom0, GetPermissions, "@introduceDomain|"), "n0|");

    // The permissions are enforced: guest 2 may read domain 1's data but not its name;
    // guest 3 may write there; guest 1 owns its home.
    assert_eq!(
        store.ok(connections.guest2, Read, "/local/domain/1/data|"),
        ""
    );
    // Nodes made before the permissions of data were set kept those of their parent then.
    assert_eq!(
        store.error(connections.guest2, Read, "/local/domain/1/data/empty|"),
        "EACCES|"
    );
    store.take_output(connections.guest1);
    assert_eq!(
        store.error(connections.guest2, Read, "/local/domain/1/name|"),
        "EACCES|"
    );
    // Guest 3 acts for guest 2 (XS_SET_TARGET before the update), and C's first matching
    // entry wins: r2 (its target's) comes before w3, so it may read domain 1's data and not
    // write it.
    assert_eq!(
        store.ok(connections.guest3, Read, "/local/domain/1/data|"),
        ""
    );
    assert_eq!(
        store.error(connections.guest3, Write, "/local/domain/1/data|from-3"),
        "EACCES|"
    );
    store.ok(connections.guest1, Write, "data/deep/new|y");
    assert_eq!(
        store.error(connections.guest1, Write, "/vm/new|z"),
        "EACCES|"
    );
    // As guest 2's target it may read 2's name, which only 2 and dom0 may; guest 1 may not.
    assert_eq!(
        store.ok(connections.guest3, Read, "/local/domain/2/name|"),
        "renamed-by-2"
    );
    assert_eq!(
        store.error(connections.guest1, Read, "/local/domain/2/name|"),
        "EACCES|"
    );
    // /vm: guest 1 may read; the entry of domain 4, which died before the update, is
    // flagged stale by C, so a new domain 4 does not inherit it.
    assert_eq!(store.ok(connections.guest1, Directory, "/vm|"), "uuid|");
    store.ok(dom0, Introduce, "4|0|14|");
    let guest4 = store.engine.domain_connection(DomainId(4)).unwrap();
    assert_eq!(store.error(guest4, Directory, "/vm|"), "EACCES|");
    assert_eq!(store.ok(dom0, Control, "check|"), "OK|");
}

#[test]
fn watches_and_half_requests_go_on() {
    use MessageType::*;
    let (mut store, state, connections) = load();
    let dom0 = connections.control;
    for connection in [dom0, connections.guest1] {
        store.take_output(connection);
    }
    // The half requests, offered first as a front end does, then completed.
    store.feed(connections.guest2, &state.connections[3].unread_input);
    store.feed(connections.guest2, b"uuid\0");
    let reply = messages(&store.take_output(connections.guest2));
    assert_eq!(reply, [(Error.number(), 77, b"EACCES\0".to_vec())]);
    store.feed(connections.watcher, &state.connections[5].unread_input);
    store.feed(connections.watcher, b"ture/x\0done");
    let output = messages(&store.take_output(connections.watcher));
    assert_eq!(output[0], (Write.number(), 55, b"OK\0".to_vec()));
    assert_eq!(output[1].2, b"/tool/fixture/x\0tool-watch\0");
    assert_eq!(store.ok(dom0, Read, "/tool/fixture/x|"), "done");

    // Guest 1's relative watch, guest 2's on domain 1's home (it sees only what it may read),
    // the watcher's on /tool and @introduceDomain, guest 3's on @releaseDomain.
    store.ok(dom0, Write, "/local/domain/1/name|after");
    store.ok(dom0, Write, "/local/domain/1/data|visible-to-2");
    store.ok(dom0, Write, "/tool/fixture/counter|1");
    assert_eq!(
        events(&store.take_output(connections.guest1)),
        ["name|own-name|"]
    );
    assert_eq!(
        events(&store.take_output(connections.guest2)),
        ["/local/domain/1/data|peer|"]
    );
    assert_eq!(
        events(&store.take_output(connections.watcher)),
        ["/tool/fixture/counter|tool-watch|"]
    );
    store.ok(dom0, Introduce, "5|0|15|");
    assert_eq!(
        events(&store.take_output(connections.watcher)),
        ["@introduceDomain|introduced|"]
    );
    // Guest 3 may not read @releaseDomain (only dom0 may, as C set it), so it sees
    // releases once it may.
    store.ok(dom0, Release, "5|");
    assert!(store.take_output(connections.guest3).is_empty());
    store.ok(dom0, SetPermissions, "@releaseDomain|n0|r3|");
    // The change of permissions is itself an event of the node.
    assert_eq!(
        events(&store.take_output(connections.guest3)),
        ["@releaseDomain|released|"]
    );
    store.ok(dom0, Introduce, "5|0|15|");
    store.ok(dom0, Release, "5|");
    assert_eq!(
        events(&store.take_output(connections.guest3)),
        ["@releaseDomain|released|"]
    );
    assert_eq!(store.ok(dom0, Control, "check|"), "OK|");
}

#[test]
fn quotas_are_not_in_a_4_17_stream() {
    // C 4.17 writes no GLOBAL_QUOTA_DATA or DOMAIN_DATA: the "quota set nodes 2000" it was
    // given before the update is not in the stream, and the restored store has its own
    // configured quotas.
    let (mut store, _, connections) = load();
    let dom0 = connections.control;
    store.take_output(dom0);
    let mut fresh_engine = Engine::new(Config::default());
    let fresh_dom0 = fresh_engine.open_socket_connection();
    let mut fresh = Store::new(fresh_engine, 1);
    let configured = fresh.ok(fresh_dom0, MessageType::GetQuota, "nodes|");
    assert_ne!(configured, "2000|");
    assert_eq!(store.ok(dom0, MessageType::GetQuota, "nodes|"), configured);
}

/// A front end that gives back what the stream told it, as a daemon that reattached every
/// connection would.
struct Reattached {
    global: GlobalData,
    ports: HashMap<u16, u32>,
    sockets: HashMap<ConnectionId, i32>,
    unread: HashMap<ConnectionId, Vec<u8>>,
}

impl Reattached {
    fn new(state: &RestoredState) -> Reattached {
        let mut front_end = Reattached {
            global: state.global.unwrap_or_default(),
            ports: HashMap::new(),
            sockets: HashMap::new(),
            unread: HashMap::new(),
        };
        for RestoredConnection {
            connection,
            endpoint,
            unread_input,
        } in &state.connections
        {
            match *endpoint {
                RestoredEndpoint::Ring {
                    domain,
                    event_channel_port,
                    ..
                } => {
                    front_end.ports.insert(domain.0, event_channel_port);
                }
                RestoredEndpoint::Socket { socket_fd } => {
                    front_end.sockets.insert(*connection, socket_fd);
                }
            }
            front_end.unread.insert(*connection, unread_input.clone());
        }
        front_end
    }
}

impl FrontEndState for Reattached {
    fn unread_input(&self, connection: ConnectionId) -> &[u8] {
        self.unread.get(&connection).map_or(&[], Vec::as_slice)
    }
    fn event_channel_port(&self, domain: DomainId) -> u32 {
        self.ports.get(&domain.0).copied().unwrap_or(0)
    }
    fn socket_fd(&self, connection: ConnectionId) -> i32 {
        self.sockets.get(&connection).copied().unwrap_or(-1)
    }
    fn global(&self) -> GlobalData {
        self.global
    }
}

#[test]
fn written_back_and_read_again_it_is_stable() {
    let (engine, state) = Engine::from_state(Config::default(), C_STREAM).unwrap();
    let ours = engine
        .write_state(&Reattached::new(&state))
        .expect("a stream");
    let (again, state_again) = Engine::from_state(Config::default(), &ours).expect("ours loads");
    assert_eq!(state_again.version, 2);
    assert_eq!(state_again.global, state.global);
    let strip = |state: &RestoredState| -> Vec<(RestoredEndpoint, Vec<u8>)> {
        state
            .connections
            .iter()
            .map(|c| (c.endpoint, c.unread_input.clone()))
            .collect()
    };
    assert_eq!(strip(&state_again), strip(&state));
    // /vm's entry for the dead domain 4 is flagged stale in C's stream and in ours: its
    // last permission (letter, flags, domain id) and then its path.
    let stale_vm_entry = b"r\x01\x04\x00/vm\x00";
    let contains = |stream: &[u8]| stream.windows(8).any(|window| window == stale_vm_entry);
    assert!(contains(C_STREAM));
    assert!(contains(&ours));
    assert_eq!(
        again
            .write_state(&Reattached::new(&state_again))
            .expect("a stream"),
        ours
    );
}

/// With `XENSTORE_FUZZ_SEED_DIR` set, C's stream becomes a seed of the `state_reader` fuzz
/// target (`fuzz/run.sh`), beside those of `migration_stream.rs`.
#[test]
fn seed_for_the_fuzz_target() {
    let Some(directory) = std::env::var_os("XENSTORE_FUZZ_SEED_DIR") else {
        return;
    };
    let target = std::path::Path::new(&directory).join("state_reader");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("c-xenstored-4.17-live-update"), C_STREAM).unwrap();
}
