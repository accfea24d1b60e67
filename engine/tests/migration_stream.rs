//! The migration stream (docs/migration-stream.md): a store written and read back answers as the original, malformed streams are errors, and a stream laid out by hand as C xenstored writes it loads.

mod support;

use support::raw_store::{Store, payload};
use xenstore_engine::migration::{
    FrontEndState, NoFrontEndState, RestoredConnection, RestoredEndpoint, RestoredState,
};
use xenstore_engine::wire::{MessageType, encode_message};
use xenstore_engine::{Config, ConnectionId, DomainId, Engine, StateError};

impl Store {
    /// Sends one request and returns everything queued for the connection afterwards.
    fn send(
        &mut self,
        connection: ConnectionId,
        kind: MessageType,
        transaction_id: u32,
        text: &str,
    ) -> Vec<u8> {
        let message = encode_message(
            kind.number(),
            self.next_request_id,
            transaction_id,
            &payload(text),
        );
        self.next_request_id += 1;
        self.feed(connection, &message);
        self.take_output(connection)
    }

    /// The reply's payload as text, asserting it is not an error.
    fn ok(&mut self, connection: ConnectionId, kind: MessageType, text: &str) -> String {
        let output = self.send(connection, kind, 0, text);
        let reply = String::from_utf8_lossy(&output[16..]).replace('\0', "|");
        assert_ne!(
            u32::from_le_bytes(output[0..4].try_into().unwrap()),
            MessageType::Error.number(),
            "{kind:?} {text}: {reply}"
        );
        reply
    }
}

/// The connection ids of the store built by [`populated_store`].
struct Connections {
    dom0: ConnectionId,
    guest5: ConnectionId,
    guest7: ConnectionId,
}

/// A store with nodes, permissions (one entry naming a domain the store never met),
/// watches with and without depth, relative and special watches, global and per-domain
/// quotas, features, a queued partly sent output and a partly received request.
fn populated_store() -> (Store, Connections, Vec<u8>) {
    let mut engine = Engine::new(Config::default());
    let dom0 = engine.open_socket_connection();
    let mut store = Store::new(engine, 1);
    use MessageType::*;
    store.ok(dom0, SetFeature, "7|2|");
    store.ok(dom0, Introduce, "5|1|15|");
    store.ok(dom0, Introduce, "7|1|17|");
    let guest5 = store.engine.domain_connection(DomainId(5)).unwrap();
    let guest7 = store.engine.domain_connection(DomainId(7)).unwrap();
    store.ok(dom0, SetTarget, "7|5|");
    for (path, value) in [
        ("/local/domain/5/data/a", "1"),
        ("/local/domain/5/data/b/c", "deep"),
        ("/local/domain/7/name", "seven"),
        ("/vm/uuid", "bin\u{1}ary"),
    ] {
        store.ok(dom0, Write, &format!("{path}|{value}"));
    }
    store.ok(dom0, Mkdir, "/local/domain/5/empty|");
    store.ok(dom0, SetPermissions, "/local/domain/5|n5|r0|");
    store.ok(dom0, SetPermissions, "/local/domain/5/data|b5|");
    store.ok(dom0, SetPermissions, "/local/domain/7|n7|r5|w9|");
    store.ok(dom0, SetPermissions, "/vm|n0|r5|");
    store.ok(dom0, SetQuota, "nodes|500|");
    store.ok(dom0, SetQuota, "5|watches|7|");
    store.ok(dom0, Watch, "/local/domain|all|");
    store.ok(dom0, Watch, "@releaseDomain|released|");
    // Relative, with a depth (the watch-depth feature is on by default).
    store.ok(guest5, Watch, "data|shallow|1|");
    store.ok(guest5, Watch, "/vm|vm|");
    store.ok(guest7, Watch, "name|mine|");
    // Events for guest 5 that it has not read: one partly sent.
    store.ok(dom0, Write, "/local/domain/5/data/a|2");
    store.ok(dom0, Write, "/vm/uuid|other");
    let queued = store.engine.output(guest5).len();
    assert!(queued > 20, "guest 5 has queued events");
    store.engine.consume_output(guest5, 7);
    // Half a request from guest 7: its header and part of the payload.
    let request = encode_message(Read.number(), 99, 0, &payload("name|"));
    store.feed(guest7, &request[..18]);
    let rest = request[18..].to_vec();
    (
        store,
        Connections {
            dom0,
            guest5,
            guest7,
        },
        rest,
    )
}

/// The restored connection of a ring or of the socket.
fn restored_connection(state: &RestoredState, domain: Option<u16>) -> &RestoredConnection {
    state
        .connections
        .iter()
        .find(|restored| match (restored.endpoint, domain) {
            (RestoredEndpoint::Ring { domain: found, .. }, Some(wanted)) => found.0 == wanted,
            (RestoredEndpoint::Socket { .. }, None) => true,
            _ => false,
        })
        .expect("a restored connection")
}

/// Requests whose answers (replies and watch events on every connection) must be the same
/// from the original and the restored store.
fn script(connections: &Connections) -> Vec<(ConnectionId, MessageType, &'static str)> {
    use MessageType::*;
    let Connections {
        dom0,
        guest5,
        guest7,
    } = *connections;
    vec![
        (dom0, Directory, "/|"),
        (dom0, Directory, "/local/domain/5|"),
        (dom0, Read, "/vm/uuid|"),
        (dom0, GetPermissions, "/local/domain/7|"),
        (dom0, GetPermissions, "@releaseDomain|"),
        (guest5, Read, "/local/domain/7/name|"),
        (guest5, Read, "/vm/uuid|"),
        (guest5, Write, "data/new|x"),
        (guest5, Write, "data/b/c/d|too deep for the depth-1 watch"),
        (guest7, Read, "/local/domain/5/data/a|"),
        (guest7, Write, "name|renamed"),
        (dom0, Write, "/local/domain/5/data/a|3"),
        (dom0, GetQuota, "nodes|"),
        (dom0, GetQuota, "5|watches|"),
        (dom0, GetQuota, "7|nodes|"),
        (dom0, GetFeature, "7|"),
        (dom0, GetFeature, "5|"),
        (guest5, Watch, "/vm|vm|"),
        (guest5, Unwatch, "data|shallow|"),
        (dom0, Write, "/local/domain/5/data/z|gone"),
        (dom0, Control, "check|"),
        (dom0, Control, "quota|5|"),
        (dom0, Release, "7|"),
        (dom0, Directory, "/local/domain|"),
        (dom0, Control, "check|"),
    ]
}

/// A front end holding the restored connections' unread input.
struct UnreadInput<'a>(&'a RestoredState);

impl FrontEndState for UnreadInput<'_> {
    fn unread_input(&self, connection: ConnectionId) -> &[u8] {
        self.0
            .connections
            .iter()
            .find(|restored| restored.connection == connection)
            .map_or(&[], |restored| restored.unread_input.as_slice())
    }
}

#[test]
fn a_restored_store_answers_as_the_original() {
    let (mut original, connections, rest_of_request) = populated_store();
    let stream = original
        .engine
        .write_state(&NoFrontEndState)
        .expect("a stream");
    let (engine, state) = Engine::from_state(Config::default(), &stream).expect("restored");
    assert_eq!(state.version, 2);
    assert_eq!(state.connections.len(), 3);
    // Written again, with its unread input where the front end keeps it, the restored
    // store gives the same stream.
    assert_eq!(
        engine.write_state(&UnreadInput(&state)).expect("a stream"),
        stream
    );
    let mut restored = Store::new(engine, 1);
    // Replies echo request ids: both stores number the script's requests alike.
    restored.next_request_id = original.next_request_id;
    let map = |connection: ConnectionId| -> ConnectionId {
        let domain = match connection {
            c if c == connections.dom0 => None,
            c if c == connections.guest5 => Some(5),
            _ => Some(7),
        };
        restored_connection(&state, domain).connection
    };
    // The unread input comes back to the front end, which offers it first.
    let guest7_input = &restored_connection(&state, Some(7)).unread_input;
    assert_eq!(guest7_input.len(), 18);
    let restored_guest7 = map(connections.guest7);
    restored.feed(restored_guest7, guest7_input);
    // What was queued, and the answer to the completed request, are the same.
    for connection in [connections.dom0, connections.guest5, connections.guest7] {
        assert_eq!(
            original.take_output(connection),
            restored.take_output(map(connection)),
            "queued output of {connection:?}"
        );
    }
    original.feed(connections.guest7, &rest_of_request);
    restored.feed(restored_guest7, &rest_of_request);
    assert_eq!(
        original.take_output(connections.guest7),
        restored.take_output(restored_guest7)
    );
    let mut seen = Vec::new();
    for (row, (connection, kind, text)) in script(&connections).into_iter().enumerate() {
        let from_original = original.send(connection, kind, 0, text);
        let from_restored = restored.send(map(connection), kind, 0, text);
        seen.extend_from_slice(&from_restored);
        assert_eq!(
            String::from_utf8_lossy(&from_original),
            String::from_utf8_lossy(&from_restored),
            "row {row}: {kind:?} {text}"
        );
        for other in [connections.dom0, connections.guest5, connections.guest7] {
            let from_restored = restored.take_output(map(other));
            seen.extend_from_slice(&from_restored);
            assert_eq!(
                original.take_output(other),
                from_restored,
                "row {row}: events of {other:?}"
            );
        }
    }
    // The restored watches did fire: the depth watch, dom0's, the special one.
    let contains = |needle: &[u8]| seen.windows(needle.len()).any(|window| window == needle);
    assert!(contains(b"data/new\0shallow\0"));
    assert!(contains(b"/local/domain/5/data/new\0all\0"));
    assert!(contains(b"@releaseDomain\0released\0"));
    assert!(
        !contains(b"data/b/c/d\0shallow\0"),
        "deeper than the watch's depth"
    );
}

#[test]
fn the_check_command_finds_the_restored_accounting_right() {
    let (original, connections, _) = populated_store();
    let stream = original.engine.write_state(&NoFrontEndState).unwrap();
    let (engine, state) = Engine::from_state(Config::default(), &stream).unwrap();
    let mut restored = Store::new(engine, 1);
    let dom0 = restored_connection(&state, None).connection;
    assert_eq!(
        restored.ok(dom0, MessageType::Control, "check|"),
        "OK|",
        "connections {:?}",
        connections.dom0
    );
    // Equal once the queued output (whose partly sent message is charged in full only in
    // the original) is delivered.
    let mut original = original;
    for connection in [connections.dom0, connections.guest5, connections.guest7] {
        original.take_output(connection);
    }
    for connection in &state.connections {
        restored.take_output(connection.connection);
    }
    for domain in [0, 5, 7] {
        assert_eq!(
            original.engine.domain_usage(DomainId(domain)),
            restored.engine.domain_usage(DomainId(domain)),
            "domain {domain}"
        );
    }
}

#[test]
fn an_open_transaction_is_restored_as_interrupted() {
    let mut engine = Engine::new(Config::default());
    let dom0 = engine.open_socket_connection();
    let mut original = Store::new(engine, 1);
    let id = original.ok(dom0, MessageType::TransactionStart, "|");
    let id: u32 = id.trim_end_matches('|').parse().unwrap();
    original.send(dom0, MessageType::Write, id, "/in/transaction|1");
    assert_eq!(original.engine.open_transaction_count(), 1);
    let stream = original.engine.write_state(&NoFrontEndState).unwrap();
    let (engine, state) = Engine::from_state(Config::default(), &stream).unwrap();
    let mut restored = Store::new(engine, 1);
    let dom0_restored = restored_connection(&state, None).connection;
    assert_eq!(restored.engine.open_transaction_count(), 1);
    // Requests in it still work; its commit asks the client to retry.
    let read = restored.send(dom0_restored, MessageType::Read, id, "/|");
    assert_ne!(
        u32::from_le_bytes(read[0..4].try_into().unwrap()),
        MessageType::Error.number()
    );
    let end = restored.send(dom0_restored, MessageType::TransactionEnd, id, "T|");
    assert_eq!(&end[16..], b"EAGAIN\0");
    assert_eq!(restored.engine.open_transaction_count(), 0);
    // New transactions get new ids.
    let next = restored.ok(dom0_restored, MessageType::TransactionStart, "|");
    assert_ne!(next.trim_end_matches('|').parse::<u32>().unwrap(), id);
    let end = original.send(dom0, MessageType::TransactionEnd, id, "T|");
    assert_eq!(&end[16..], b"OK\0");
}

/// A front end's answers, for the fields only it knows.
struct Ports;

impl FrontEndState for Ports {
    fn event_channel_port(&self, domain: DomainId) -> u32 {
        100 + u32::from(domain.0)
    }
    fn unique_id(&self, domain: DomainId) -> Option<u64> {
        Some(0xABCD_0000 + u64::from(domain.0))
    }
    fn socket_fd(&self, connection: ConnectionId) -> i32 {
        connection.0 as i32 + 40
    }
    fn unread_input(&self, connection: ConnectionId) -> &[u8] {
        if connection.0 == 1 {
            b"\x02\0\0\0".as_slice()
        } else {
            &[]
        }
    }
}

#[test]
fn what_the_front_end_knows_comes_back() {
    let (original, connections, _) = populated_store();
    let stream = original.engine.write_state(&Ports).unwrap();
    let (_, state) = Engine::from_state(Config::default(), &stream).unwrap();
    assert_eq!(
        state.global,
        Some(xenstore_engine::migration::GlobalData::default())
    );
    match restored_connection(&state, Some(5)).endpoint {
        RestoredEndpoint::Ring {
            event_channel_port,
            unique_id,
            ..
        } => {
            assert_eq!(event_channel_port, 105);
            assert_eq!(unique_id, Some(0xABCD_0005));
        }
        other => panic!("{other:?}"),
    }
    let socket = restored_connection(&state, None);
    assert_eq!(
        socket.endpoint,
        RestoredEndpoint::Socket {
            socket_fd: connections.dom0.0 as i32 + 40
        }
    );
    assert_eq!(socket.unread_input, b"\x02\0\0\0");
}

// ---------------------------------------------------------------------------------------
// Malformed streams.

fn small_stream() -> Vec<u8> {
    let (store, _, _) = populated_store();
    store.engine.write_state(&NoFrontEndState).unwrap()
}

fn load(bytes: &[u8]) -> Result<(), StateError> {
    Engine::from_state(Config::default(), bytes).map(|_| ())
}

#[test]
fn a_stream_cut_anywhere_is_an_error() {
    let stream = small_stream();
    for length in 0..stream.len() {
        assert!(load(&stream[..length]).is_err(), "cut at {length}");
    }
    assert_eq!(load(&stream), Ok(()));
    let mut longer = stream.clone();
    longer.extend_from_slice(&[0; 8]);
    assert_eq!(load(&longer), Err(StateError::TrailingBytes));
}

#[test]
fn bad_headers_are_errors() {
    let stream = small_stream();
    let mut bad = stream.clone();
    bad[0] = b'X';
    assert_eq!(load(&bad), Err(StateError::BadIdent));
    for version in [0u32, 3, 0x0200_0000] {
        let mut bad = stream.clone();
        bad[8..12].copy_from_slice(&version.to_be_bytes());
        assert_eq!(load(&bad), Err(StateError::UnsupportedVersion(version)));
    }
    let mut bad = stream.clone();
    bad[12..16].copy_from_slice(&2u32.to_be_bytes());
    assert_eq!(load(&bad), Err(StateError::BadFlags(2)));
    // Big-endian flags: the little-endian records no longer make sense.
    let mut bad = stream.clone();
    bad[12..16].copy_from_slice(&1u32.to_be_bytes());
    assert!(load(&bad).is_err());
}

/// A hand-assembled stream: the header, then `records` (type, body), each padded, then END.
fn stream_of(version: u32, records: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = b"xenstore".to_vec();
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes.extend_from_slice(&0u32.to_be_bytes());
    for (kind, body) in records {
        let padded = body.len().div_ceil(8) * 8;
        bytes.extend_from_slice(&kind.to_le_bytes());
        bytes.extend_from_slice(&(padded as u32).to_le_bytes());
        bytes.extend_from_slice(body);
        bytes.resize(bytes.len() + padded - body.len(), 0);
    }
    bytes.extend_from_slice(&[0; 8]);
    bytes
}

fn ring_connection(id: u32, domid: u16) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&id.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes()); // ring
    body.extend_from_slice(&0u16.to_le_bytes()); // no unique id
    body.extend_from_slice(&domid.to_le_bytes());
    body.extend_from_slice(&0x7FF4u16.to_le_bytes());
    body.extend_from_slice(&3u32.to_le_bytes());
    body.extend_from_slice(&[0; 8]); // no data
    body
}

fn watch(id: u32, path: &str, token: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&id.to_le_bytes());
    body.extend_from_slice(&(path.len() as u16 + 1).to_le_bytes());
    body.extend_from_slice(&(token.len() as u16 + 1).to_le_bytes());
    body.extend_from_slice(path.as_bytes());
    body.push(0);
    body.extend_from_slice(token.as_bytes());
    body.push(0);
    body
}

fn node(path: &str, value: &[u8], owner: u16) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0; 8]);
    body.extend_from_slice(&(path.len() as u16 + 1).to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&[b'n', 0]);
    body.extend_from_slice(&owner.to_le_bytes());
    body.extend_from_slice(path.as_bytes());
    body.push(0);
    body.extend_from_slice(value);
    body
}

#[test]
fn records_out_of_order_or_twice_are_errors() {
    assert_eq!(load(&stream_of(2, &[])), Ok(()));
    assert_eq!(
        load(&stream_of(2, &[(3, watch(1, "/a", "t"))])),
        Err(StateError::OutOfOrder("a watch before its connection"))
    );
    assert_eq!(
        load(&stream_of(2, &[(5, node("/a/b", b"", 0))])),
        Err(StateError::OutOfOrder("a node before its parent"))
    );
    assert_eq!(
        load(&stream_of(
            2,
            &[(5, node("/a", b"", 0)), (5, node("/a", b"", 0))]
        )),
        Err(StateError::Duplicate("node"))
    );
    assert_eq!(
        load(&stream_of(
            2,
            &[(2, ring_connection(1, 3)), (2, ring_connection(2, 3))]
        )),
        Err(StateError::Duplicate("a domain's ring"))
    );
    assert_eq!(
        load(&stream_of(
            2,
            &[(2, ring_connection(1, 3)), (2, ring_connection(1, 4))]
        )),
        Err(StateError::Duplicate("connection id"))
    );
    let mut transaction = 9u32.to_le_bytes().to_vec();
    transaction.extend_from_slice(&1u32.to_le_bytes());
    assert_eq!(
        load(&stream_of(2, &[(4, transaction)])),
        Err(StateError::OutOfOrder(
            "a transaction before its connection"
        ))
    );
    assert_eq!(
        load(&stream_of(2, &[(9, vec![0; 8])])),
        Err(StateError::UnknownRecord(9))
    );
    // The extended watch record does not exist in version 1.
    assert_eq!(
        load(&stream_of(1, &[(8, vec![0; 16])])),
        Err(StateError::UnknownRecord(8))
    );
}

#[test]
fn oversize_lengths_and_bad_fields_are_errors() {
    // A record longer than the stream.
    let mut bytes = stream_of(2, &[]);
    bytes.truncate(16);
    bytes.extend_from_slice(&5u32.to_le_bytes());
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(load(&bytes), Err(StateError::Truncated));
    // A path length past the record's end.
    let mut long_path = node("/a", b"v", 0);
    long_path[8..10].copy_from_slice(&200u16.to_le_bytes());
    assert!(matches!(
        load(&stream_of(2, &[(5, long_path)])),
        Err(StateError::Malformed(_))
    ));
    // A permission count past the record's end.
    let mut many_permissions = node("/a", b"v", 0);
    many_permissions[14..16].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(load(&stream_of(2, &[(5, many_permissions)])).is_err());
    // Output longer than the record.
    let mut output = ring_connection(1, 3);
    output[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(load(&stream_of(2, &[(2, output)])).is_err());
    // Queued output that is not whole messages.
    let mut broken = ring_connection(1, 3);
    broken[20..24].copy_from_slice(&4u32.to_le_bytes());
    broken.extend_from_slice(&[15, 0, 0, 0]);
    assert_eq!(
        load(&stream_of(2, &[(2, broken)])),
        Err(StateError::Malformed("queued message header"))
    );
    for (path, what) in [
        ("a/b", "node path not absolute"),
        ("/a/", "node path"),
        ("@other", "node path"),
    ] {
        assert_eq!(
            load(&stream_of(2, &[(5, node(path, b"", 0))])),
            Err(StateError::Malformed(what)),
            "{path}"
        );
    }
    let mut no_nul = node("/a", b"", 0);
    let nul_at = 16 + 4 + 2;
    no_nul[nul_at] = b'x';
    assert_eq!(
        load(&stream_of(2, &[(5, no_nul)])),
        Err(StateError::Malformed("node path"))
    );
    let mut bad_letter = node("/a", b"", 0);
    bad_letter[16] = b'x';
    assert_eq!(
        load(&stream_of(2, &[(5, bad_letter)])),
        Err(StateError::Malformed("permission letter"))
    );
    assert_eq!(
        load(&stream_of(2, &[(2, ring_connection(0, 3))])),
        Err(StateError::Malformed("connection id 0"))
    );
    let mut bad_type = ring_connection(1, 3);
    bad_type[4] = 2;
    assert_eq!(
        load(&stream_of(2, &[(2, bad_type)])),
        Err(StateError::Malformed("connection type"))
    );
    let mut bad_fields = ring_connection(1, 3);
    bad_fields[6] = 2;
    assert_eq!(
        load(&stream_of(2, &[(2, bad_fields)])),
        Err(StateError::Malformed("unknown connection fields"))
    );
}

// ---------------------------------------------------------------------------------------
// A stream written by hand from the format's byte layout (docs/migration-stream.md), as C
// xenstored 4.22 writes it for a stub domain on x86: little-endian records, lengths that
// include the padding, GLOBAL_DATA with no socket, every quota C has a value for, dom0's
// and a guest's ring connections with their unique ids, the guest's watch as WATCH_DATA,
// the tree from `/` and then the special nodes, DOMAIN_DATA per domain, END. Every byte
// below was written out by hand, not produced by our writer.

#[rustfmt::skip]
const C_STUB_STREAM: &[u8] = &[
    // Header: "xenstore", version 2 (big-endian), flags 0 (little-endian records).
    b'x', b'e', b'n', b's', b't', b'o', b'r', b'e',
    0, 0, 0, 2,   0, 0, 0, 0,
    // GLOBAL_DATA (1), 8 bytes: socket fd -1, event-channel fd 3.
    1, 0, 0, 0,   8, 0, 0, 0,
    0xff, 0xff, 0xff, 0xff,   3, 0, 0, 0,
    // GLOBAL_QUOTA_DATA (6): 2 quotas per domain, none global; 4 + 8 + 6 ("nodes\0")
    // + 14 ("soft-memory\0" is 12, "nodes\0" 6: 18) -> 4 + 8 + 18 = 30, padded to 32.
    6, 0, 0, 0,   32, 0, 0, 0,
    2, 0,   0, 0,
    0xf4, 0x01, 0, 0,                 // nodes = 500
    0, 0, 0x10, 0,                    // soft-memory = 0x100000
    b'n', b'o', b'd', b'e', b's', 0,
    b's', b'o', b'f', b't', b'-', b'm', b'e', b'm', b'o', b'r', b'y', 0,
    0, 0,                             // padding
    // CONNECTION_DATA (2) for dom0's ring: conn-id 1, ring, unique id present; domid 0,
    // tdomid DOMID_INVALID, port 1; no input, no output; 24 bytes, then the unique id: 32.
    2, 0, 0, 0,   32, 0, 0, 0,
    1, 0, 0, 0,   0, 0,   1, 0,
    0, 0,   0xf4, 0x7f,   1, 0, 0, 0,
    0, 0,   0, 0,   0, 0, 0, 0,
    0x11, 0, 0, 0, 0, 0, 0, 0,        // unique id 0x11
    // CONNECTION_DATA for domain 1: conn-id 2, port 5, 4 bytes of unread input (the start
    // of a header), one queued reply (16 + 3 bytes: "OK\0" to a WRITE, type 11, req 7):
    // 24 + 4 + 19 = 47, padded to 48, then the unique id: 56.
    2, 0, 0, 0,   56, 0, 0, 0,
    2, 0, 0, 0,   0, 0,   1, 0,
    1, 0,   0xf4, 0x7f,   5, 0, 0, 0,
    4, 0,   0, 0,   19, 0, 0, 0,
    2, 0, 0, 0,                       // unread: the type word of a READ
    11, 0, 0, 0,   7, 0, 0, 0,   0, 0, 0, 0,   3, 0, 0, 0,   b'O', b'K', 0,
    0,                                // padding
    0x22, 0, 0, 0, 0, 0, 0, 0,        // unique id 0x22
    // WATCH_DATA (3) of conn 2: path "name" relative (5 with NUL), token "tok" (4):
    // 8 + 9 = 17, padded to 24.
    3, 0, 0, 0,   24, 0, 0, 0,
    2, 0, 0, 0,   5, 0,   4, 0,
    b'n', b'a', b'm', b'e', 0,   b't', b'o', b'k', 0,
    0, 0, 0, 0, 0, 0, 0,
    // NODE_DATA (5) "/": owner 0 'n'; 16 + 4 + 2 = 22, padded to 24.
    5, 0, 0, 0,   24, 0, 0, 0,
    0, 0, 0, 0,   0, 0, 0, 0,   2, 0,   0, 0,   0, 0,   1, 0,
    b'n', 0, 0, 0,
    b'/', 0,   0, 0,
    // "/local": 16 + 4 + 7 = 27 -> 32.
    5, 0, 0, 0,   32, 0, 0, 0,
    0, 0, 0, 0,   0, 0, 0, 0,   7, 0,   0, 0,   0, 0,   1, 0,
    b'n', 0, 0, 0,
    b'/', b'l', b'o', b'c', b'a', b'l', 0,   0, 0, 0, 0, 0,
    // "/local/domain": 16 + 4 + 14 = 34 -> 40.
    5, 0, 0, 0,   40, 0, 0, 0,
    0, 0, 0, 0,   0, 0, 0, 0,   14, 0,   0, 0,   0, 0,   1, 0,
    b'n', 0, 0, 0,
    b'/', b'l', b'o', b'c', b'a', b'l', b'/', b'd', b'o', b'm', b'a', b'i', b'n', 0,
    0, 0, 0, 0, 0, 0,
    // "/local/domain/1": owner 1, dom0 may read ('r' for 0): 16 + 8 + 16 = 40.
    5, 0, 0, 0,   40, 0, 0, 0,
    0, 0, 0, 0,   0, 0, 0, 0,   16, 0,   0, 0,   0, 0,   2, 0,
    b'n', 0, 1, 0,   b'r', 0, 0, 0,
    b'/', b'l', b'o', b'c', b'a', b'l', b'/', b'd', b'o', b'm', b'a', b'i', b'n', b'/', b'1', 0,
    // "/local/domain/1/name" = "guest": owner 1; 16 + 4 + 21 + 5 = 46 -> 48.
    5, 0, 0, 0,   48, 0, 0, 0,
    0, 0, 0, 0,   0, 0, 0, 0,   21, 0,   5, 0,   0, 0,   1, 0,
    b'n', 0, 1, 0,
    b'/', b'l', b'o', b'c', b'a', b'l', b'/', b'd', b'o', b'm', b'a', b'i', b'n', b'/', b'1',
    b'/', b'n', b'a', b'm', b'e', 0,
    b'g', b'u', b'e', b's', b't',
    0, 0,
    // "@releaseDomain": owner 0, everyone ('r', DOMID_ANY 0x7ff5) may read;
    // 16 + 8 + 15 = 39 -> 40.
    5, 0, 0, 0,   40, 0, 0, 0,
    0, 0, 0, 0,   0, 0, 0, 0,   15, 0,   0, 0,   0, 0,   2, 0,
    b'n', 0, 0, 0,   b'r', 0, 0xf5, 0x7f,
    b'@', b'r', b'e', b'l', b'e', b'a', b's', b'e', b'D', b'o', b'm', b'a', b'i', b'n', 0,
    0,
    // "@introduceDomain": owner 0; 16 + 4 + 17 = 37 -> 40.
    5, 0, 0, 0,   40, 0, 0, 0,
    0, 0, 0, 0,   0, 0, 0, 0,   17, 0,   0, 0,   0, 0,   1, 0,
    b'n', 0, 0, 0,
    b'@', b'i', b'n', b't', b'r', b'o', b'd', b'u', b'c', b'e', b'D', b'o', b'm', b'a', b'i',
    b'n', 0,
    0, 0, 0,
    // DOMAIN_DATA (7) for domain 0: no quotas, features 0xe; 8 bytes.
    7, 0, 0, 0,   8, 0, 0, 0,
    0, 0,   0, 0,   0x0e, 0, 0, 0,
    // DOMAIN_DATA for domain 1: one quota, nodes = 3, features 0x6 (no DOMID_ANY);
    // 8 + 4 + 6 = 18 -> 24.
    7, 0, 0, 0,   24, 0, 0, 0,
    1, 0,   1, 0,   0x06, 0, 0, 0,
    3, 0, 0, 0,
    b'n', b'o', b'd', b'e', b's', 0,
    0, 0, 0, 0, 0, 0,
    // END.
    0, 0, 0, 0,   0, 0, 0, 0,
];

#[test]
fn a_stream_laid_out_by_hand_as_c_writes_it_loads() {
    let (engine, state) =
        Engine::from_state(Config::default(), C_STUB_STREAM).expect("C's stream loads");
    assert_eq!(
        state.global,
        Some(xenstore_engine::migration::GlobalData {
            socket_fd: -1,
            event_channel_fd: 3
        })
    );
    assert_eq!(state.connections.len(), 2);
    let guest = restored_connection(&state, Some(1));
    assert_eq!(
        guest.endpoint,
        RestoredEndpoint::Ring {
            domain: DomainId(1),
            event_channel_port: 5,
            unique_id: Some(0x22)
        }
    );
    assert_eq!(guest.unread_input, [2, 0, 0, 0]);
    let guest = guest.connection;
    let dom0 = restored_connection(&state, Some(0)).connection;
    let mut store = Store::new(engine, 1);
    // The queued reply is delivered first.
    assert_eq!(
        store.take_output(guest),
        [
            11, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, b'O', b'K', 0
        ]
    );
    // The unread input is the start of a READ, offered first; the rest follows.
    store.feed(guest, &[2, 0, 0, 0]);
    let rest = encode_message(2, 8, 0, b"name\0");
    store.feed(guest, &rest[4..]);
    let reply = store.take_output(guest);
    assert_eq!(&reply[16..], b"guest");
    // Quotas: the global ones from the stream, the guest's own.
    assert_eq!(store.ok(dom0, MessageType::GetQuota, "nodes|"), "500|");
    assert_eq!(store.ok(dom0, MessageType::GetQuota, "1|nodes|"), "3|");
    assert_eq!(store.ok(dom0, MessageType::GetFeature, "1|"), "6|");
    // The guest's relative watch fires for a write by dom0.
    store.ok(dom0, MessageType::Write, "/local/domain/1/name|changed");
    let event = store.take_output(guest);
    assert_eq!(
        u32::from_le_bytes(event[0..4].try_into().unwrap()),
        MessageType::WatchEvent.number()
    );
    assert_eq!(&event[16..], b"name\0tok\0");
    assert_eq!(store.ok(dom0, MessageType::Control, "check|"), "OK|");
    assert_eq!(
        store.ok(dom0, MessageType::GetPermissions, "@releaseDomain|"),
        "n0|r32757|"
    );
}

/// With `XENSTORE_FUZZ_SEED_DIR` set, the streams of these tests become seeds of the
/// `state_reader` fuzz target (`fuzz/run.sh`).
#[test]
fn seeds_for_the_fuzz_target() {
    let Some(directory) = std::env::var_os("XENSTORE_FUZZ_SEED_DIR") else {
        return;
    };
    let target = std::path::Path::new(&directory).join("state_reader");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("populated-store"), small_stream()).unwrap();
    std::fs::write(target.join("c-stub-domain"), C_STUB_STREAM).unwrap();
    let mut engine = Engine::new(Config::default());
    engine.open_socket_connection();
    std::fs::write(
        target.join("fresh-store"),
        engine.write_state(&NoFrontEndState).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_big_endian_stream_loads() {
    #[rustfmt::skip]
    let stream: &[u8] = &[
        b'x', b'e', b'n', b's', b't', b'o', b'r', b'e',
        0, 0, 0, 2,   0, 0, 0, 1,                      // version 2, big-endian records
        // CONNECTION_DATA: conn-id 1, ring, domid 7, no target, port 9, no data.
        0, 0, 0, 2,   0, 0, 0, 24,
        0, 0, 0, 1,   0, 0,   0, 0,
        0, 7,   0x7f, 0xf4,   0, 0, 0, 9,
        0, 0,   0, 0,   0, 0, 0, 0,
        // NODE_DATA "/a" = "v", owner 7 with 'r'.
        0, 0, 0, 5,   0, 0, 0, 24,
        0, 0, 0, 0,   0, 0, 0, 0,   0, 3,   0, 1,   0, 0,   0, 1,
        b'r', 0, 0, 7,
        b'/', b'a', 0, b'v',
        // END.
        0, 0, 0, 0,   0, 0, 0, 0,
    ];
    let (engine, state) = Engine::from_state(Config::default(), stream).expect("loads");
    assert_eq!(
        state.connections[0].endpoint,
        RestoredEndpoint::Ring {
            domain: DomainId(7),
            event_channel_port: 9,
            unique_id: None
        }
    );
    let node = engine.tree().get("/a").expect("/a restored");
    assert_eq!(node.value(), b"v");
    assert_eq!(node.permissions.owner(), DomainId(7));
}
