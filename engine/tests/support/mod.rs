//! A test harness: an engine on the null platform (`engine/src/testing.rs`), and requests written as text.
#![allow(dead_code)]

// The shared parts of the test binaries: each uses what it needs (the fuzz targets include
// `model.rs` and `failing_allocator.rs` by path, as siblings, as here).
pub mod failing_allocator;
pub mod model;
pub mod program_cases;
pub mod raw_store;

use std::string::String;
use std::vec::Vec;
use xenstore_engine::testing::NullPlatform;
use xenstore_engine::wire::{MessageHeader, MessageType, encode_message};
use xenstore_engine::{Config, ConnectionId, DomainId, Engine};

pub struct Harness {
    pub engine: Engine,
    pub platform: NullPlatform,
    pub dom0: ConnectionId,
    next_request_id: u32,
    pending: std::collections::BTreeMap<ConnectionId, Vec<Message>>,
    /// Every request sent, in order, for seeding the fuzz corpora (see `Drop`).
    recorded_requests: Vec<u8>,
}

/// With `XENSTORE_FUZZ_SEED_DIR` set, each test's request stream is written there as one
/// file named after the test: `fuzz/run.sh` seeds the `wire_framing` and `ring_reader`
/// corpora from the transcript tests this way.
impl Drop for Harness {
    fn drop(&mut self) {
        let Some(directory) = std::env::var_os("XENSTORE_FUZZ_SEED_DIR") else {
            return;
        };
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .replace("::", "-");
        let directory = std::path::Path::new(&directory);
        // `wire_framing` input: a control byte (bit 0: dom0 or a guest; the rest: the chunk
        // size) and then the stream.
        for (prefix, control) in [("dom0", 0xFEu8), ("guest", 0x21)] {
            let mut input = vec![control];
            input.extend_from_slice(&self.recorded_requests);
            let target = directory.join("wire_framing");
            let _ = std::fs::create_dir_all(&target);
            let _ = std::fs::write(target.join(format!("{prefix}-{name}")), input);
        }
        // `ring_reader` input: client writes of up to 50 bytes (action 1 + 5 * length), each
        // followed by a pass of the store (action 4) and a client read (action 3 + 5 * 40).
        let mut actions = Vec::new();
        for chunk in self.recorded_requests.chunks(50) {
            actions.push(1 + 5 * chunk.len() as u8);
            actions.extend_from_slice(chunk);
            actions.extend_from_slice(&[4, 3 + 5 * 40, 4]);
        }
        let target = directory.join("ring_reader");
        let _ = std::fs::create_dir_all(&target);
        let _ = std::fs::write(target.join(name), actions);
    }
}

/// A received message: its type name and payload with NULs shown as `|`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub message_type: u32,
    pub request_id: u32,
    pub transaction_id: u32,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn text(&self) -> String {
        self.payload
            .iter()
            .map(|byte| if *byte == 0 { '|' } else { char::from(*byte) })
            .collect()
    }
}

fn type_number(name: &str) -> u32 {
    (0..=30)
        .find(|number| MessageType::from_number(*number).is_some_and(|kind| kind.name() == name))
        .unwrap_or_else(|| name.parse().expect("type name or number"))
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Harness {
        let mut engine = Engine::new(config);
        let dom0 = engine.open_socket_connection();
        Harness {
            engine,
            platform: NullPlatform::default(),
            dom0,
            next_request_id: 1,
            recorded_requests: Vec::new(),
            pending: Default::default(),
        }
    }

    /// Introduces `domain` through dom0 and returns its connection.
    pub fn introduce(&mut self, domain: u16) -> ConnectionId {
        let reply = self.request(
            self.dom0,
            "INTRODUCE",
            0,
            &format!("{domain}|1|{}|", 10 + domain),
        );
        assert_eq!(reply, "OK|", "introduce {domain}");
        self.engine
            .domain_connection(DomainId(domain))
            .expect("connection")
    }

    /// Sends `payload` (`|` stands for NUL) and returns the reply as text: `OK|`, `ERROR ENOENT`, ...
    pub fn request(
        &mut self,
        connection: ConnectionId,
        message_type: &str,
        transaction_id: u32,
        payload: &str,
    ) -> String {
        let bytes: Vec<u8> = payload
            .bytes()
            .map(|byte| if byte == b'|' { 0 } else { byte })
            .collect();
        let reply = self.request_bytes(
            connection,
            type_number(message_type),
            transaction_id,
            &bytes,
        );
        if reply.message_type == MessageType::Error.number() {
            format!("ERROR {}", reply.text().trim_end_matches('|'))
        } else {
            reply.text()
        }
    }

    /// `TRANSACTION_START` on `connection`; returns the new transaction's id.
    pub fn start_transaction(&mut self, connection: ConnectionId) -> u32 {
        self.request(connection, "TRANSACTION_START", 0, "|")
            .trim_end_matches('|')
            .parse()
            .expect("a transaction id")
    }

    /// Runs a transcript on `connection`: each `(type, transaction id, payload, reply)` in
    /// order, as for [`Harness::request`]; a differing reply fails the test, naming its row.
    pub fn expect(&mut self, connection: ConnectionId, exchanges: &[(&str, u32, &str, &str)]) {
        for (row, &(message_type, transaction_id, payload, reply)) in exchanges.iter().enumerate() {
            assert_eq!(
                self.request(connection, message_type, transaction_id, payload),
                reply,
                "row {row}: {message_type} (transaction {transaction_id}) {payload:?}"
            );
        }
    }

    /// Sends raw bytes; returns the reply (watch events stay queued for [`Harness::events`]).
    pub fn request_bytes(
        &mut self,
        connection: ConnectionId,
        message_type: u32,
        transaction_id: u32,
        payload: &[u8],
    ) -> Message {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let message = encode_message(message_type, request_id, transaction_id, payload);
        self.recorded_requests.extend_from_slice(&message);
        let taken = self
            .engine
            .receive(&mut self.platform, connection, &message);
        assert_eq!(taken, message.len(), "engine took the whole request");
        let mut found = None;
        let mut others = Vec::new();
        for message in self.drain(connection) {
            if message.message_type != MessageType::WatchEvent.number() && found.is_none() {
                assert_eq!(
                    message.request_id, request_id,
                    "reply echoes the request id"
                );
                assert_eq!(
                    message.transaction_id, transaction_id,
                    "reply echoes the transaction id"
                );
                found = Some(message);
            } else {
                others.push(message);
            }
        }
        self.pending.entry(connection).or_default().extend(others);
        found.expect("a reply")
    }

    /// Takes everything the engine has written for `connection`, as raw bytes.
    pub fn take_output(&mut self, connection: ConnectionId) -> Vec<u8> {
        let mut bytes = Vec::new();
        loop {
            let output = self.engine.output(connection).to_vec();
            if output.is_empty() {
                break;
            }
            self.engine.consume_output(connection, output.len());
            bytes.extend(output);
        }
        bytes
    }

    /// Every whole message queued for `connection`, taken out of its queue.
    pub fn drain(&mut self, connection: ConnectionId) -> Vec<Message> {
        let bytes = self.take_output(connection);
        let mut messages = Vec::new();
        let mut rest = bytes.as_slice();
        while rest.len() >= 16 {
            let header = MessageHeader::from_bytes(rest[..16].try_into().unwrap());
            let end = 16 + header.payload_length_bytes as usize;
            messages.push(Message {
                message_type: header.message_type,
                request_id: header.request_id,
                transaction_id: header.transaction_id,
                payload: rest[16..end].to_vec(),
            });
            rest = &rest[end..];
        }
        assert!(rest.is_empty(), "whole messages only");
        messages
    }

    /// The watch events delivered to `connection` since the last call, as `path token` strings.
    pub fn events(&mut self, connection: ConnectionId) -> Vec<String> {
        let drained = self.drain(connection);
        let mut all = self.pending.remove(&connection).unwrap_or_default();
        all.extend(drained);
        all.into_iter()
            .map(|message| {
                assert_eq!(message.message_type, MessageType::WatchEvent.number());
                assert_eq!((message.request_id, message.transaction_id), (0, 0));
                let text = message.text();
                let mut parts = text.trim_end_matches('|').splitn(2, '|');
                format!(
                    "{} {}",
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or("")
                )
            })
            .collect()
    }
}
