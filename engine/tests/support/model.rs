//! A model-checking driver shared by the property tests (`engine/tests/properties.rs`) and
//! the `engine_model` fuzz target (`fuzz/fuzz_targets/engine_model.rs` includes this file).
//!
//! A byte string is read as a program: each step picks an actor (dom0's socket or one of
//! three unprivileged guests), a request and its arguments from a deliberately small space
//! of paths, values and permissions, so that steps collide, conflict and hit quotas. After
//! every step these invariants (docs/hostile-guests.md, "Invariants") are checked:
//! - the accounting equals a full recount and the tree is well formed
//!   ([`Engine::check_accounting`] returns 0);
//! - every request gets exactly one reply of at most 4096 payload bytes (XSA-72/324/481);
//! - requests inside a transaction never change the committed tree, so an aborted
//!   transaction leaves no trace (XSA-415, 421);
//! - a commit answering `OK` saw every value it read unchanged and leaves the values it
//!   wrote (it equals running the transaction alone at the commit point); a commit answering
//!   `EAGAIN` happened only after the committed tree really changed since the start;
//! - a guest's successful `READ`/`WRITE` is allowed by the node's permissions;
//! - a successful `READ` outside a transaction returns the last value written: the model
//!   keeps a shadow store of its own (paths and values, updated from the replies of
//!   `WRITE`, `MKDIR` and `RM`), independent of the engine's tree; after what it does not
//!   model value by value (a commit, a domain's death, a reply it did not see) it takes the
//!   engine's values again;
//! - a guest's own request never takes it over its node quota.
//!
//! With [`Model::run_with_faults`] each step also picks an allocation to fail while the
//! engine processes the request (issue 15, `docs/memory.md`); when one failed, the reply
//! must be success or `ENOMEM`, and an `ENOMEM` must leave the committed tree as it was. The
//! accounting check after every step covers the books.
//!
//! Any violation panics with a message naming it.

use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;
use xenstore_engine::quota::{QuotaKind, Quotas};
use xenstore_engine::store::Node;
use xenstore_engine::testing::NullPlatform;
use xenstore_engine::wire::{MessageHeader, MessageType, PAYLOAD_MAX_BYTES, encode_message};
use xenstore_engine::{Config, ConnectionId, DomainId, Engine};

/// An allocator that can be told to fail an allocation (`support/failing_allocator.rs`).
pub trait AllocationFaults {
    /// Fails the `nth` allocation from now on this thread (1 = the next; 0 = none).
    fn arm(&mut self, nth: u32);
    /// Stops failing allocations; whether one was failed since [`AllocationFaults::arm`].
    fn disarm(&mut self) -> bool;
}

/// The guests' domain ids; actor 0 is dom0's socket.
const GUESTS: [u16; 3] = [1, 2, 3];

/// What a transaction did, for the isolation checks.
#[derive(Default, Clone)]
struct TransactionLog {
    /// The committed tree when it started.
    start: Vec<(String, Node)>,
    /// Values read before the transaction changed anything: path → value.
    reads: BTreeMap<String, Vec<u8>>,
    /// The last value written per path (removed again when a later `RM` covers it).
    writes: BTreeMap<String, Vec<u8>>,
    /// Whether it changed anything yet (reads after that may see its own writes).
    modified: bool,
}

/// One actor's connection and state.
struct Actor {
    connection: ConnectionId,
    domain: u16,
    /// Output is not read while set (a slow guest).
    slow: bool,
    transactions: BTreeMap<u32, TransactionLog>,
}

/// The engine under test and what the model knows.
pub struct Model {
    pub engine: Engine,
    pub platform: NullPlatform,
    actors: Vec<Actor>,
    next_request_id: u32,
    /// The committed tree's values as the model's own bookkeeping has them: path → value.
    shadow: BTreeMap<String, Vec<u8>>,
    /// Fault injection: the allocator, and which allocation of the next request to fail.
    faults: Option<Box<dyn AllocationFaults>>,
    next_failing_allocation: u32,
    /// Whether an allocation failed while the engine processed the last request.
    allocation_failed: bool,
    /// What fault injection did over the run.
    pub fault_statistics: FaultStatistics,
}

/// Counts of [`Model::run_with_faults`], so that a test can show failures were injected.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultStatistics {
    /// Requests processed with an allocation armed to fail.
    pub armed_requests: u64,
    /// Requests during which an allocation did fail.
    pub failed_requests: u64,
    /// Of those, the ones answered `ENOMEM` (the others succeeded without what failed, or
    /// were not read back).
    pub out_of_memory_replies: u64,
    /// Domain deaths handled while an allocation failed (then reported once more).
    pub failed_deaths: u64,
}

/// Small quotas so that random programs reach every limit.
pub fn model_config() -> Config {
    let mut quotas = Quotas::default();
    quotas.set(QuotaKind::Nodes, 12);
    quotas.set(QuotaKind::Watches, 4);
    quotas.set(QuotaKind::Transactions, 3);
    quotas.set(QuotaKind::TransactionNodes, 8);
    quotas.set(QuotaKind::Outstanding, 4);
    quotas.set(QuotaKind::MemoryBytes, 3000);
    quotas.set(QuotaKind::NodePermissions, 4);
    quotas.set(QuotaKind::NodeSizeBytes, 200);
    Config {
        quotas,
        ..Config::default()
    }
}

fn snapshot(engine: &Engine) -> Vec<(String, Node)> {
    engine
        .tree()
        .iter()
        .map(|(path, node)| (path.clone(), node.clone()))
        .collect()
}

/// The value of the node at `path` in a [`snapshot`], if there is one.
fn value_in<'a>(snapshot: &'a [(String, Node)], path: &str) -> Option<&'a [u8]> {
    snapshot
        .iter()
        .find(|(node_path, _)| node_path == path)
        .map(|(_, node)| node.value())
}

/// Reads bytes of the program; past its end every byte is 0.
struct Program<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Program<'_> {
    fn byte(&mut self) -> u8 {
        let byte = self.bytes.get(self.position).copied().unwrap_or(0);
        self.position += 1;
        byte
    }
    fn done(&self) -> bool {
        self.position >= self.bytes.len()
    }
}

/// What became of a request.
enum Sent {
    /// The connection is throttled or failed: the engine did not take it.
    NotTaken,
    /// Taken, but the actor does not read its ring (slow guest): the reply stays queued.
    Unread,
    /// The reply.
    Replied(Reply),
}

/// A reply as the model sees it.
struct Reply {
    is_error: bool,
    payload: Vec<u8>,
}

impl Reply {
    fn error_name(&self) -> Option<&[u8]> {
        self.is_error
            .then(|| self.payload.strip_suffix(b"\0").unwrap_or(&self.payload))
    }
}

impl Model {
    /// An engine with dom0 on a socket and three introduced guests owning their homes.
    pub fn new() -> Model {
        let mut engine = Engine::new(model_config());
        let dom0 = engine.open_socket_connection();
        let mut model = Model {
            engine,
            platform: NullPlatform::default(),
            actors: vec![Actor {
                connection: dom0,
                domain: 0,
                slow: false,
                transactions: BTreeMap::new(),
            }],
            next_request_id: 1,
            shadow: BTreeMap::new(),
            faults: None,
            next_failing_allocation: 0,
            allocation_failed: false,
            fault_statistics: FaultStatistics::default(),
        };
        for guest in GUESTS {
            let connection = model.introduce(guest);
            model.actors.push(Actor {
                connection,
                domain: guest,
                slow: false,
                transactions: BTreeMap::new(),
            });
        }
        model.resync_shadow();
        model
    }

    /// Takes the engine's values as the shadow's, after a change the model does not follow
    /// value by value.
    fn resync_shadow(&mut self) {
        self.shadow = self
            .engine
            .tree()
            .iter()
            .map(|(path, node)| (path.clone(), node.value().to_vec()))
            .collect();
    }

    /// A successful `WRITE` (with `Some(value)`) or `MKDIR` (`None`) of `path` outside a
    /// transaction: missing ancestors appear with empty values (C `create_node()`).
    fn shadow_create(&mut self, path: &str, value: Option<&[u8]>) {
        let mut ancestor = String::new();
        for name in path.trim_start_matches('/').split('/') {
            ancestor.push('/');
            ancestor.push_str(name);
            self.shadow.entry(ancestor.clone()).or_default();
        }
        if let Some(value) = value {
            self.shadow.insert(path.to_string(), value.to_vec());
        }
    }

    /// A successful `RM` of `path`: it and everything below it are gone.
    fn shadow_remove(&mut self, path: &str) {
        let below = format!("{path}/");
        self.shadow
            .retain(|shadowed, _| shadowed != path && !shadowed.starts_with(&below));
    }

    fn introduce(&mut self, guest: u16) -> ConnectionId {
        let dom0 = self.actors[0].connection;
        let home = format!("/local/domain/{guest}\0");
        self.send(dom0, MessageType::Mkdir, 0, home.as_bytes());
        self.send(
            dom0,
            MessageType::SetPermissions,
            0,
            format!("{home}n{guest}\0").as_bytes(),
        );
        let reply = self.send(
            dom0,
            MessageType::Introduce,
            0,
            format!("{guest}\0{}\0{}\0", 0, 10 + guest).as_bytes(),
        );
        assert!(!reply.is_error, "introduce {guest}");
        self.engine
            .domain_connection(DomainId(guest))
            .expect("an introduced guest has a connection")
    }

    /// Sends one request and reports what became of it.
    fn try_send(
        &mut self,
        connection: ConnectionId,
        message_type: u32,
        transaction_id: u32,
        payload: &[u8],
    ) -> Sent {
        let request_id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1);
        if !self.engine.wants_input(connection) {
            return Sent::NotTaken;
        }
        let bytes = encode_message(message_type, request_id, transaction_id, payload);
        // Only the engine's own work runs armed: the model's checks allocate freely.
        if let Some(faults) = self.faults.as_mut() {
            faults.arm(self.next_failing_allocation);
            if self.next_failing_allocation != 0 {
                self.fault_statistics.armed_requests += 1;
            }
        }
        let taken = self.engine.receive(&mut self.platform, connection, &bytes);
        self.allocation_failed = self.faults.as_mut().is_some_and(|faults| faults.disarm());
        self.fault_statistics.failed_requests += u64::from(self.allocation_failed);
        assert_eq!(taken, bytes.len(), "a request is taken whole or not at all");
        let slow = self
            .actors
            .iter()
            .any(|actor| actor.connection == connection && actor.slow);
        if slow || self.engine.failure(connection).is_some() {
            return Sent::Unread;
        }
        let messages = self.drain_messages(connection);
        let replies: Vec<&(MessageHeader, Vec<u8>)> = messages
            .iter()
            .filter(|(header, _)| header.message_type != MessageType::WatchEvent.number())
            .collect();
        assert_eq!(replies.len(), 1, "exactly one reply per request");
        let (header, reply_payload) = replies[0];
        assert_eq!(header.request_id, request_id, "reply echoes the request id");
        assert_eq!(header.transaction_id, transaction_id, "reply echoes tx id");
        Sent::Replied(Reply {
            is_error: header.message_type == MessageType::Error.number(),
            payload: reply_payload.clone(),
        })
    }

    fn send(
        &mut self,
        connection: ConnectionId,
        message_type: MessageType,
        transaction_id: u32,
        payload: &[u8],
    ) -> Reply {
        // The model's own set-up requests (introducing a guest) run without failures.
        let failing_allocation = core::mem::take(&mut self.next_failing_allocation);
        let sent = self.try_send(connection, message_type.number(), transaction_id, payload);
        self.next_failing_allocation = failing_allocation;
        match sent {
            Sent::Replied(reply) => reply,
            _ => panic!("dom0 and fresh guests are always served"),
        }
    }

    /// Every message queued for `connection`, consumed and parsed.
    fn drain_messages(&mut self, connection: ConnectionId) -> Vec<(MessageHeader, Vec<u8>)> {
        let mut bytes = Vec::new();
        loop {
            let output = self.engine.output(connection).to_vec();
            if output.is_empty() {
                break;
            }
            // Consume in two pieces to exercise partly sent messages.
            let first = output.len().div_ceil(2);
            self.engine.consume_output(connection, first);
            self.engine.consume_output(connection, output.len() - first);
            bytes.extend(output);
        }
        let mut messages = Vec::new();
        let mut rest = bytes.as_slice();
        while rest.len() >= 16 {
            let mut header_bytes = [0u8; 16];
            header_bytes.copy_from_slice(&rest[..16]);
            let header = MessageHeader::from_bytes(&header_bytes);
            let length = header.payload_length_bytes as usize;
            assert!(length <= PAYLOAD_MAX_BYTES, "no message over 4096 bytes");
            assert!(rest.len() >= 16 + length, "whole messages only");
            messages.push((header, rest[16..16 + length].to_vec()));
            rest = &rest[16 + length..];
        }
        assert!(rest.is_empty(), "whole messages only");
        messages
    }

    fn drain(&mut self, connection: ConnectionId) {
        loop {
            let length = self.engine.output(connection).len();
            if length == 0 {
                break;
            }
            self.engine.consume_output(connection, length);
        }
    }

    fn check_invariants(&mut self, step: usize) {
        let wrong = self.engine.check_accounting();
        assert_eq!(
            wrong, 0,
            "step {step}: accounting differs from a recount or the tree is malformed"
        );
        let quotas = model_config().quotas;
        for guest in GUESTS {
            let usage = self.engine.domain_usage(DomainId(guest));
            assert!(
                usage.watches < u64::from(quotas.get(QuotaKind::Watches)),
                "step {step}: domain {guest} holds {} watches",
                usage.watches
            );
            assert!(
                usage.transactions < u64::from(quotas.get(QuotaKind::Transactions)),
                "step {step}: domain {guest} holds {} transactions",
                usage.transactions
            );
        }
    }

    /// Runs `program` step by step, checking the invariants after each step.
    pub fn run(program: &[u8]) {
        let _ = Self::run_model(Model::new(), program);
    }

    /// Like [`Model::run`], failing one allocation chosen by the program in most requests;
    /// returns what the injection did.
    pub fn run_with_faults(program: &[u8], faults: Box<dyn AllocationFaults>) -> FaultStatistics {
        let mut model = Model::new();
        model.faults = Some(faults);
        Self::run_model(model, program)
    }

    fn run_model(mut model: Model, program: &[u8]) -> FaultStatistics {
        let mut program = Program {
            bytes: program,
            position: 0,
        };
        let mut step = 0;
        while !program.done() && step < 400 {
            model.step(&mut program);
            model.check_invariants(step);
            step += 1;
        }
        model.fault_statistics
    }

    fn pick_path(program: &mut Program<'_>, actor_domain: u16) -> String {
        const NAMES: [&str; 4] = ["a", "b", "c", "d"];
        let shape = program.byte();
        let depth = 1 + usize::from(shape % 3);
        let mut relative = String::new();
        for level in 0..depth {
            if level > 0 {
                relative.push('/');
            }
            relative.push_str(NAMES[usize::from(program.byte() % 4)]);
        }
        match (shape / 3) % 4 {
            0 => relative,
            1 => format!("/local/domain/{actor_domain}/{relative}"),
            2 => {
                let other = GUESTS[usize::from(program.byte() % 3)];
                format!("/local/domain/{other}/{relative}")
            }
            _ => format!("/shared/{relative}"),
        }
    }

    fn pick_permissions(program: &mut Program<'_>, owner: u16) -> Vec<u8> {
        let mut text = format!("n{owner}\0");
        let count = program.byte() % 3;
        for _ in 0..count {
            let access = ["r", "w", "b", "n"][usize::from(program.byte() % 4)];
            let domain = [0u16, 1, 2, 3, 0x7FF5][usize::from(program.byte() % 5)];
            text.push_str(&format!("{access}{domain}\0"));
        }
        if program.byte().is_multiple_of(4) {
            // Sometimes the default access is not "none".
            text.replace_range(0..1, "r");
        }
        text.into_bytes()
    }

    fn step(&mut self, program: &mut Program<'_>) {
        let actor_index = usize::from(program.byte() % 4);
        let operation = program.byte() % 20;
        let (connection, domain) = {
            let actor = &self.actors[actor_index];
            (actor.connection, actor.domain)
        };
        // Transaction: 0, or one of the actor's open ones.
        let transaction_choice = program.byte();
        let open: Vec<u32> = self.actors[actor_index]
            .transactions
            .keys()
            .copied()
            .collect();
        let transaction_id = if transaction_choice.is_multiple_of(2) || open.is_empty() {
            0
        } else {
            open[usize::from(transaction_choice / 2) % open.len()]
        };
        let before = snapshot(&self.engine);
        let nodes_before = self.engine.domain_usage(DomainId(domain)).nodes;
        if self.faults.is_some() {
            // One request in four runs without a failure; the rest fail one of their first
            // 6 allocations (most requests make only a few) or, for one in two, of their
            // first 48: early ones hit framing and paths, later ones the tree, accounting,
            // events and the reply.
            let choice = program.byte();
            let range = if choice & 0x80 == 0 { 6 } else { 48 };
            self.next_failing_allocation = if choice.is_multiple_of(4) {
                0
            } else {
                1 + u32::from(choice / 4) % range
            };
        }
        let path = Self::pick_path(program, domain);
        let path_payload = format!("{path}\0").into_bytes();
        let value_byte = program.byte();
        let value = vec![b'v'; usize::from(value_byte % 5)]
            .into_iter()
            .chain(std::iter::once(b'0' + value_byte % 10))
            .collect::<Vec<u8>>();
        let absolute = if path.starts_with('/') {
            path.clone()
        } else {
            format!("/local/domain/{domain}/{path}")
        };
        let message_type = match operation {
            0 | 1 => MessageType::Read,
            2..=4 => MessageType::Write,
            5 => MessageType::Mkdir,
            6 => MessageType::Remove,
            7 => MessageType::Directory,
            8 => MessageType::GetPermissions,
            9 => MessageType::SetPermissions,
            10 => MessageType::Watch,
            11 => MessageType::Unwatch,
            12 => MessageType::TransactionStart,
            13 | 14 => MessageType::TransactionEnd,
            15 => MessageType::ResetWatches,
            16 => {
                if domain != 0 {
                    let actor = &mut self.actors[actor_index];
                    actor.slow = !actor.slow;
                    if !actor.slow {
                        self.drain(connection);
                    }
                }
                return;
            }
            17 => {
                // Time passes: queued events for slow guests may expire (20 s).
                self.platform.now_milliseconds += 25_000;
                self.engine.tick(&mut self.platform);
                return;
            }
            18 => {
                // A guest dies and a new domain reuses its id (XSA-322/419/483).
                if domain != 0 {
                    self.platform.dead.insert(DomainId(domain));
                    // Death handling fails soft too: what it could not do waits for a later
                    // report of the death (the front ends report it again).
                    if let Some(faults) = self.faults.as_mut() {
                        faults.arm(self.next_failing_allocation);
                    }
                    self.engine
                        .domain_died(&mut self.platform, DomainId(domain));
                    if self.faults.as_mut().is_some_and(|faults| faults.disarm()) {
                        self.fault_statistics.failed_deaths += 1;
                        self.engine
                            .domain_died(&mut self.platform, DomainId(domain));
                    }
                    self.platform.dead.remove(DomainId(domain));
                    let connection = self.introduce(domain);
                    let actor = &mut self.actors[actor_index];
                    actor.connection = connection;
                    actor.slow = false;
                    actor.transactions.clear();
                    self.resync_shadow();
                }
                return;
            }
            _ => MessageType::DirectoryPart,
        };
        let payload = match message_type {
            MessageType::Write => {
                let mut payload = path_payload.clone();
                payload.extend_from_slice(&value);
                payload
            }
            MessageType::SetPermissions => {
                let owner = if program.byte().is_multiple_of(2) {
                    domain
                } else {
                    0
                };
                let mut payload = path_payload.clone();
                payload.extend(Self::pick_permissions(program, owner));
                payload
            }
            MessageType::Watch | MessageType::Unwatch => {
                let token = format!("t{}\0", program.byte() % 3);
                let mut payload = path_payload.clone();
                payload.extend_from_slice(token.as_bytes());
                payload
            }
            MessageType::TransactionStart => b"\0".to_vec(),
            MessageType::TransactionEnd => {
                if operation == 13 {
                    b"T\0".to_vec()
                } else {
                    b"F\0".to_vec()
                }
            }
            MessageType::ResetWatches => Vec::new(),
            MessageType::DirectoryPart => {
                let mut payload = path_payload.clone();
                payload.extend_from_slice(format!("{}\0", program.byte() % 4).as_bytes());
                payload
            }
            _ => path_payload.clone(),
        };
        let transaction_id = match message_type {
            MessageType::TransactionStart => 0,
            MessageType::TransactionEnd if transaction_id == 0 => match open.first() {
                Some(first) => *first,
                None => 0,
            },
            _ => transaction_id,
        };
        let reply = match self.try_send(connection, message_type.number(), transaction_id, &payload)
        {
            Sent::Replied(reply) => reply,
            Sent::NotTaken => {
                assert_eq!(
                    snapshot(&self.engine),
                    before,
                    "a request not taken changes nothing"
                );
                return;
            }
            Sent::Unread => {
                if transaction_id != 0 && message_type != MessageType::TransactionEnd {
                    assert_eq!(
                        snapshot(&self.engine),
                        before,
                        "requests inside a transaction change nothing committed"
                    );
                }
                // The outcome is unknown to the model: forget what it knew of the transaction.
                if message_type == MessageType::TransactionEnd
                    || message_type == MessageType::ResetWatches
                {
                    self.actors[actor_index].transactions.clear();
                }
                if transaction_id != 0 {
                    self.actors[actor_index]
                        .transactions
                        .remove(&transaction_id);
                }
                self.resync_shadow();
                return;
            }
        };
        let after = snapshot(&self.engine);
        let privileged = domain == 0;

        // A guest's own requests never take it over its node quota (dom0 may: nodes it
        // creates under a guest's home belong to the guest, as in C).
        if !privileged {
            let nodes_after = self.engine.domain_usage(DomainId(domain)).nodes;
            let limit = u64::from(model_config().quotas.get(QuotaKind::Nodes));
            assert!(
                nodes_after <= nodes_before.max(limit),
                "domain {domain} owns {nodes_after} nodes after {} {absolute}, over its quota \
                 of {limit} (it owned {nodes_before})",
                message_type.name()
            );
        }

        // The shadow store: reads outside transactions see the last value written.
        if transaction_id == 0 && !reply.is_error {
            match message_type {
                MessageType::Read => {
                    let expected = self.shadow.get(&absolute);
                    assert_eq!(
                        Some(&reply.payload),
                        expected,
                        "domain {domain} read {absolute}: not the last value written"
                    );
                }
                MessageType::Write => self.shadow_create(&absolute, Some(&value)),
                MessageType::Mkdir => self.shadow_create(&absolute, None),
                MessageType::Remove => self.shadow_remove(&absolute),
                _ => {}
            }
        }
        if transaction_id == 0
            && message_type == MessageType::Read
            && reply.error_name() == Some(b"ENOENT")
        {
            assert!(
                !self.shadow.contains_key(&absolute),
                "domain {domain} was told {absolute} does not exist; it was written"
            );
        }

        if self.allocation_failed && reply.is_error {
            self.fault_statistics.out_of_memory_replies +=
                u64::from(reply.error_name() == Some(&b"ENOMEM"[..]));
            assert_eq!(
                reply.error_name(),
                Some(&b"ENOMEM"[..]),
                "a request whose allocation failed answers ENOMEM ({} {absolute})",
                message_type.name()
            );
            assert_eq!(
                after,
                before,
                "a request refused with ENOMEM changes nothing ({} {absolute})",
                message_type.name()
            );
        }

        // Successful guest reads and writes outside transactions are permitted ones.
        if !privileged && !reply.is_error && transaction_id == 0 {
            let node = before
                .iter()
                .find(|(node_path, _)| *node_path == absolute)
                .map(|(_, node)| node);
            match (message_type, node) {
                (MessageType::Read, Some(node)) => {
                    assert!(
                        may(node, domain, b'r'),
                        "domain {domain} read {absolute} with perms {:?}",
                        node.permissions.to_wire()
                    );
                }
                (MessageType::Write, Some(node)) => {
                    assert!(
                        may(node, domain, b'w'),
                        "domain {domain} wrote {absolute} with perms {:?}",
                        node.permissions.to_wire()
                    );
                }
                _ => {}
            }
        }

        match message_type {
            MessageType::TransactionStart => {
                if !reply.is_error {
                    let id: u32 = std::str::from_utf8(
                        reply.payload.strip_suffix(b"\0").unwrap_or(&reply.payload),
                    )
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .expect("a transaction id");
                    assert_ne!(id, 0);
                    self.actors[actor_index].transactions.insert(
                        id,
                        TransactionLog {
                            start: after.clone(),
                            ..TransactionLog::default()
                        },
                    );
                }
                return;
            }
            MessageType::TransactionEnd if transaction_id != 0 => {
                if !reply.is_error {
                    self.resync_shadow();
                }
                let log = self.actors[actor_index]
                    .transactions
                    .remove(&transaction_id);
                let commit = operation == 13;
                if let Some(log) = log {
                    if !commit || reply.is_error {
                        assert_eq!(
                            after, before,
                            "an aborted or failed transaction leaves no trace"
                        );
                    }
                    if commit && reply.error_name() == Some(b"EAGAIN") {
                        assert_ne!(
                            before, log.start,
                            "EAGAIN although nothing was committed since the transaction started"
                        );
                    }
                    if commit && !reply.is_error {
                        // What it read was still there when it committed, and what it
                        // wrote is there afterwards.
                        let checks = [
                            (
                                &log.reads,
                                &before,
                                "read by a committed transaction, changed since",
                            ),
                            (
                                &log.writes,
                                &after,
                                "written by a committed transaction, not visible",
                            ),
                        ];
                        for (entries, snapshot, what) in checks {
                            for (path, value) in entries {
                                assert_eq!(
                                    value_in(snapshot, path),
                                    Some(value.as_slice()),
                                    "{path}: {what}"
                                );
                            }
                        }
                    }
                }
                return;
            }
            _ => {}
        }

        if transaction_id != 0 {
            assert_eq!(
                after, before,
                "requests inside a transaction change nothing committed"
            );
            let Some(log) = self.actors[actor_index]
                .transactions
                .get_mut(&transaction_id)
            else {
                return;
            };
            if reply.error_name() == Some(b"ENOENT")
                && matches!(message_type, MessageType::ResetWatches)
            {
                return;
            }
            match message_type {
                MessageType::Read if !reply.is_error && !log.modified => {
                    log.reads.insert(absolute.clone(), reply.payload.clone());
                }
                MessageType::Write if !reply.is_error => {
                    log.modified = true;
                    log.writes.insert(absolute.clone(), value.clone());
                }
                MessageType::Remove if !reply.is_error => {
                    log.modified = true;
                    let prefix = format!("{absolute}/");
                    log.writes
                        .retain(|written, _| written != &absolute && !written.starts_with(&prefix));
                }
                MessageType::Mkdir | MessageType::SetPermissions if !reply.is_error => {
                    log.modified = true;
                }
                _ => {}
            }
        }
        if message_type == MessageType::ResetWatches && !reply.is_error {
            // RESET_WATCHES also ends every transaction of the connection (XSA-484).
            self.actors[actor_index].transactions.clear();
        }
    }
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

/// A necessary condition for `domain` having `access` (`r`/`w`) to `node`: it owns it, or
/// an entry naming it (or every domain) grants it, or the default does. Stale or ignored
/// entries can only take access away, so this is an upper bound on what is allowed.
fn may(node: &Node, domain: u16, access: u8) -> bool {
    let wire = node
        .permissions
        .to_wire()
        .expect("a permission list fits in memory");
    let entries: Vec<&[u8]> = wire
        .split(|byte| *byte == 0)
        .filter(|entry| !entry.is_empty())
        .collect();
    let grants = |entry: &[u8]| {
        let kind = entry.first().copied().unwrap_or(b'n');
        kind == b'b' || kind == access
    };
    let names = |entry: &[u8], wanted: u16| {
        std::str::from_utf8(entry.get(1..).unwrap_or(&[]))
            .ok()
            .and_then(|text| text.parse::<u16>().ok())
            == Some(wanted)
    };
    let Some((owner, acl)) = entries.split_first() else {
        return false;
    };
    if names(owner, domain) {
        return true;
    }
    for entry in acl {
        if (names(entry, domain) || names(entry, 0x7FF5)) && grants(entry) {
            return true;
        }
    }
    grants(owner)
}
