//! Reading a stream back into an engine: every field checked, nothing trusted.
//!
//! What is accepted and what is refused: `docs/migration-stream.md`, "What we accept".
//! Lengths are checked against the bytes that are there before anything is allocated for
//! them, allocations are fallible, and a record may only name what an earlier record made
//! (its connection, transaction, parent node), so a single pass with no recursion rebuilds
//! the store. Any error discards the engine being built.

use super::layout::{
    CONNECTION_FIELD_UNIQUE_ID, CONNECTION_TYPE_RING, CONNECTION_TYPE_SOCKET, Cursor,
    FLAG_BIG_ENDIAN, HEADER_SIZE_BYTES, PERMISSION_FLAG_IGNORED, STREAM_IDENT, STREAM_VERSION,
    WATCH_DEPTH_UNLIMITED, aligned, quota_names, record,
};
use super::{GlobalData, RestoredConnection, RestoredEndpoint, RestoredState};
use crate::connection::{ConnectionKind, OutputMessage};
use crate::domain::feature;
use crate::engine::{Config, Engine};
use crate::error::StateError;
use crate::fallible::{self, SortedMap, SortedSet};
use crate::path::{self, INTRODUCE_DOMAIN, RELEASE_DOMAIN};
use crate::permissions::{Access, Permission, Permissions};
use crate::quota::QuotaKind;
use crate::store::Node;
use crate::transaction::Transaction;
use crate::watch::Watch;
use crate::wire::{HEADER_SIZE_BYTES as MESSAGE_HEADER_BYTES, MessageHeader, MessageType};
use crate::{ConnectionId, DomainId, StoreError};
use alloc::vec::Vec;

/// A record's fields ran past its length.
const SHORT_RECORD: StateError = StateError::Malformed("record shorter than its fields");

/// A store refusal while restoring: memory stays memory, anything else is the record's fault.
fn refused(what: &'static str) -> impl Fn(StoreError) -> StateError {
    move |error| match error {
        StoreError::OutOfMemory => StateError::OutOfMemory,
        _ => StateError::Malformed(what),
    }
}

/// `bytes` without its terminating NUL; a missing terminator or a NUL inside is malformed.
fn nul_terminated<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a [u8], StateError> {
    match bytes.split_last() {
        Some((0, text)) if !text.contains(&0) => Ok(text),
        _ => Err(StateError::Malformed(what)),
    }
}

/// The engine being rebuilt and what the stream has said so far.
struct Restore {
    engine: Engine,
    state: RestoredState,
    /// The stream's connection ids and the connections made for them.
    connections: SortedMap<u32, ConnectionId>,
    /// Domains that had their `DOMAIN_DATA`.
    domains_with_data: SortedSet<DomainId>,
    seen_global_quota: bool,
    seen_root: bool,
}

impl Engine {
    /// Rebuilds an engine from a migration stream (version 1 or 2,
    /// `docs/migration-stream.md`); `config` gives what the stream does not hold (the
    /// privileged domain, options, the hash key) and the quotas a stream without quota
    /// records leaves. Returns, besides the engine, every connection for the front end to
    /// reattach, with the input it had read and not processed.
    ///
    /// Every malformed stream is an error; nothing in it can make this panic.
    pub fn from_state(config: Config, bytes: &[u8]) -> Result<(Engine, RestoredState), StateError> {
        let mut header = Cursor::new(bytes, true, StateError::Truncated);
        if header.take(STREAM_IDENT.len())? != STREAM_IDENT {
            return Err(StateError::BadIdent);
        }
        let version = header.u32()?;
        if version == 0 || version > STREAM_VERSION {
            return Err(StateError::UnsupportedVersion(version));
        }
        let flags = header.u32()?;
        if flags & !FLAG_BIG_ENDIAN != 0 {
            return Err(StateError::BadFlags(flags));
        }
        let big_endian = flags & FLAG_BIG_ENDIAN != 0;
        let mut stream = Cursor::new(bytes, big_endian, StateError::Truncated);
        stream.skip_to(HEADER_SIZE_BYTES)?;
        let mut restore = Restore::new(config, version)?;
        loop {
            let kind = stream.u32()?;
            let length = usize::try_from(stream.u32()?).map_err(|_| StateError::Truncated)?;
            let body = stream.take(length)?;
            // C counts the padding in the length; a writer that does not pads after it.
            stream.skip_to(aligned(stream.offset()))?;
            if kind == record::END {
                break;
            }
            restore.record(kind, Cursor::new(body, big_endian, SHORT_RECORD))?;
        }
        if stream.remaining() != 0 {
            return Err(StateError::TrailingBytes);
        }
        restore.finish()
    }
}

impl Restore {
    fn new(config: Config, version: u32) -> Result<Restore, StateError> {
        let privileged = config.privileged_domain;
        let store_domain = config.store_domain;
        // The stream holds every node: start from the root alone.
        let engine = Engine::bare(config);
        let complete = engine.tree.get("/").is_some()
            && engine.domains.get(privileged).is_some()
            && engine.domains.get(store_domain).is_some();
        if !complete {
            return Err(StateError::OutOfMemory);
        }
        Ok(Restore {
            engine,
            state: RestoredState {
                version,
                ..RestoredState::default()
            },
            connections: SortedMap::new(),
            domains_with_data: SortedSet::new(),
            seen_global_quota: false,
            seen_root: false,
        })
    }

    fn record(&mut self, kind: u32, body: Cursor<'_>) -> Result<(), StateError> {
        match kind {
            record::GLOBAL_DATA => self.global(body),
            record::CONNECTION_DATA => self.connection(body),
            record::WATCH_DATA => self.watch(body, false),
            record::WATCH_DATA_EXTENDED if self.state.version >= 2 => self.watch(body, true),
            record::TRANSACTION_DATA => self.transaction(body),
            record::NODE_DATA => self.node(body),
            record::GLOBAL_QUOTA_DATA => self.global_quota(body),
            record::DOMAIN_DATA => self.domain(body),
            _ => Err(StateError::UnknownRecord(kind)),
        }
    }

    fn global(&mut self, mut body: Cursor<'_>) -> Result<(), StateError> {
        if self.state.global.is_some() {
            return Err(StateError::Duplicate("GLOBAL_DATA"));
        }
        self.state.global = Some(GlobalData {
            socket_fd: body.i32()?,
            event_channel_fd: body.i32()?,
        });
        Ok(())
    }

    /// The connection a stream id names.
    fn connection_of(
        &self,
        stream_id: u32,
        what: &'static str,
    ) -> Result<ConnectionId, StateError> {
        self.connections
            .get(&stream_id)
            .copied()
            .ok_or(StateError::OutOfOrder(what))
    }

    fn connection(&mut self, mut body: Cursor<'_>) -> Result<(), StateError> {
        let stream_id = body.u32()?;
        if stream_id == 0 {
            return Err(StateError::Malformed("connection id 0"));
        }
        if self.connections.contains_key(&stream_id) {
            return Err(StateError::Duplicate("connection id"));
        }
        let connection_type = body.u16()?;
        let fields = body.u16()?;
        if fields & !CONNECTION_FIELD_UNIQUE_ID != 0 {
            return Err(StateError::Malformed("unknown connection fields"));
        }
        let mut target = None;
        let mut endpoint = match connection_type {
            CONNECTION_TYPE_RING => {
                // Domain ids are taken as they are: the writer writes what the store
                // accepted, and any id is only a number to the engine.
                let domain = DomainId(body.u16()?);
                let target_domid = body.u16()?;
                if target_domid != DomainId::INVALID.0 {
                    target = Some(DomainId(target_domid));
                }
                let event_channel_port = body.u32()?;
                if self.engine.domain_connection(domain).is_some() {
                    return Err(StateError::Duplicate("a domain's ring"));
                }
                RestoredEndpoint::Ring {
                    domain,
                    event_channel_port,
                    unique_id: None,
                }
            }
            CONNECTION_TYPE_SOCKET => {
                let socket_fd = body.i32()?;
                body.u32()?;
                RestoredEndpoint::Socket { socket_fd }
            }
            _ => return Err(StateError::Malformed("connection type")),
        };
        let input_bytes = usize::from(body.u16()?);
        let partial_bytes = usize::from(body.u16()?);
        let output_bytes =
            usize::try_from(body.u32()?).map_err(|_| StateError::Malformed("output length"))?;
        if partial_bytes > output_bytes {
            return Err(StateError::Malformed(
                "partial response longer than the output",
            ));
        }
        let input = body.take(input_bytes)?;
        let output = body.take(output_bytes)?;
        if fields & CONNECTION_FIELD_UNIQUE_ID != 0 {
            body.skip_to(aligned(body.offset()))?;
            let unique_id = body.u64()?;
            if let RestoredEndpoint::Ring {
                unique_id: slot, ..
            } = &mut endpoint
            {
                *slot = Some(unique_id);
            }
        }
        let messages = output_messages(output, partial_bytes)?;

        let (kind, domain) = match endpoint {
            RestoredEndpoint::Ring { domain, .. } => (ConnectionKind::Domain, domain),
            RestoredEndpoint::Socket { .. } => {
                (ConnectionKind::Socket, self.engine.config.store_domain)
            }
        };
        fallible::reserve(&mut self.state.connections, 1)?;
        self.connections.try_reserve(1)?;
        let unread_input = fallible::to_vec(input)?;
        let id = self.engine.add_connection(kind, domain);
        let engine = &mut self.engine;
        let state = engine
            .connections
            .get_mut(&id)
            .ok_or(StateError::OutOfMemory)?;
        let mut has_events = false;
        let has_output = !messages.is_empty();
        if partial_bytes > 0 {
            state.output_sent_bytes = PARTIAL_PREFIX_BYTES;
        }
        for message in messages {
            has_events |= !message.is_reply;
            state.push_output(message)?;
        }
        if has_output {
            engine.output_ready.try_insert(id)?;
        }
        if has_events {
            engine.event_holders.try_insert(id)?;
        }
        let generation = engine.tree.current_generation();
        if kind == ConnectionKind::Domain {
            let record = engine
                .domains
                .ensure(domain, generation, &engine.config.quotas)?;
            record.connection = Some(id);
            record.target = target;
            if let Some(target) = target {
                engine
                    .domains
                    .ensure(target, generation, &engine.config.quotas)?;
            }
        }
        self.connections.try_insert(stream_id, id)?;
        self.state.connections.push(RestoredConnection {
            connection: id,
            endpoint,
            unread_input,
        });
        Ok(())
    }

    fn watch(&mut self, mut body: Cursor<'_>, extended: bool) -> Result<(), StateError> {
        let stream_id = body.u32()?;
        let path_bytes = usize::from(body.u16()?);
        let token_bytes = usize::from(body.u16()?);
        let depth = if extended {
            let depth = body.u16()?;
            body.u16()?;
            (depth != WATCH_DEPTH_UNLIMITED).then_some(u32::from(depth))
        } else {
            None
        };
        let written = nul_terminated(body.take(path_bytes)?, "watch path")?;
        let token = nul_terminated(body.take(token_bytes)?, "watch token")?;
        let connection = self.connection_of(stream_id, "a watch before its connection")?;
        let domain = self
            .engine
            .connection_domain(connection)
            .ok_or(StateError::OutOfMemory)?;
        let watched = path::canonicalize(written, domain, true).map_err(refused("watch path"))?;
        if self
            .engine
            .watches
            .contains(connection, &watched.absolute, token)
        {
            return Err(StateError::Duplicate("watch"));
        }
        let listed = (
            fallible::string(&watched.absolute)?,
            fallible::to_vec(token)?,
        );
        let watch = Watch {
            connection,
            token: fallible::to_vec(token)?,
            relative_prefix_bytes: watched.relative_prefix_bytes,
            depth,
        };
        let state = self
            .engine
            .connections
            .get_mut(&connection)
            .ok_or(StateError::OutOfMemory)?;
        fallible::reserve(&mut state.watches, 1)?;
        self.engine.watches.add(&watched.absolute, watch)?;
        if let Some(state) = self.engine.connections.get_mut(&connection) {
            state.watches.push(listed);
        }
        Ok(())
    }

    fn transaction(&mut self, mut body: Cursor<'_>) -> Result<(), StateError> {
        let stream_id = body.u32()?;
        let transaction_id = body.u32()?;
        let connection = self.connection_of(stream_id, "a transaction before its connection")?;
        if transaction_id == 0 {
            return Err(StateError::Malformed("transaction id 0"));
        }
        let state = self
            .engine
            .connections
            .get_mut(&connection)
            .ok_or(StateError::OutOfMemory)?;
        if state.transactions.contains_key(&transaction_id) {
            return Err(StateError::Duplicate("transaction"));
        }
        let transaction = Transaction {
            interrupted: true,
            ..Transaction::default()
        };
        state.transactions.try_insert(transaction_id, transaction)?;
        state.note_restored_transaction_id(transaction_id);
        self.engine.open_transactions += 1;
        Ok(())
    }

    fn node(&mut self, mut body: Cursor<'_>) -> Result<(), StateError> {
        let stream_id = body.u32()?;
        let transaction_id = body.u32()?;
        let path_bytes = usize::from(body.u16()?);
        let value_bytes = usize::from(body.u16()?);
        body.u16()?;
        let permission_count = usize::from(body.u16()?);
        if body.remaining() < permission_count.saturating_mul(super::layout::PERMISSION_BYTES) {
            return Err(SHORT_RECORD);
        }
        let mut entries = fallible::vec_with_capacity(permission_count)?;
        for _ in 0..permission_count {
            let access = Access::from_letter(body.u8()?)
                .ok_or(StateError::Malformed("permission letter"))?;
            let flags = body.u8()?;
            if flags & !PERMISSION_FLAG_IGNORED != 0 {
                return Err(StateError::Malformed("permission flags"));
            }
            let domid = body.u16()?;
            entries.push(Permission {
                domain: DomainId(domid),
                access,
                ignored: flags & PERMISSION_FLAG_IGNORED != 0,
            });
        }
        let written = nul_terminated(body.take(path_bytes)?, "node path")?;
        let value = body.take(value_bytes)?;
        if stream_id != 0 {
            // A node of a pending transaction: checked, not restored (the transaction's
            // commit answers EAGAIN, docs/migration-stream.md, "Transactions").
            let connection = self.connection_of(stream_id, "a node of an unknown connection")?;
            let known = self
                .engine
                .connections
                .get(&connection)
                .is_some_and(|state| state.transactions.contains_key(&transaction_id));
            if !known {
                return Err(StateError::OutOfOrder("a node of an unknown transaction"));
            }
            return Ok(());
        }
        let node_path =
            core::str::from_utf8(written).map_err(|_| StateError::Malformed("node path"))?;
        let special = node_path == INTRODUCE_DOMAIN || node_path == RELEASE_DOMAIN;
        if !special {
            let canonical =
                path::canonicalize(written, DomainId(0), false).map_err(refused("node path"))?;
            if canonical.absolute != node_path {
                return Err(StateError::Malformed("node path not absolute"));
            }
        }
        let generation = self.engine.tree.current_generation();
        for entry in &entries {
            if !entry.ignored && entry.domain != DomainId::ANY {
                self.engine
                    .domains
                    .ensure(entry.domain, generation, &self.engine.config.quotas)?;
            }
        }
        let permissions = Permissions::from_entries(entries)?
            .ok_or(StateError::Malformed("node without an owner"))?;
        let mut node = Node::empty(permissions);
        node.set_value(value)?;
        let tree = &mut self.engine.tree;
        if node_path == "/" {
            if core::mem::replace(&mut self.seen_root, true) {
                return Err(StateError::Duplicate("node /"));
            }
            // Children named by earlier records stay.
            if let Some(root) = tree.get("/") {
                for child in root.children() {
                    node.add_child(child)?;
                }
            }
            tree.insert("/", node)?;
            return Ok(());
        }
        if tree.get(node_path).is_some() {
            return Err(StateError::Duplicate("node"));
        }
        if !special {
            let parent = path::parent(node_path).ok_or(StateError::Malformed("node path"))?;
            tree.try_reserve(1)?;
            tree.get_mut(parent)
                .ok_or(StateError::OutOfOrder("a node before its parent"))?
                .add_child(path::base_name(node_path))?;
        }
        tree.insert(node_path, node)?;
        Ok(())
    }

    /// Quota values and their names; unknown names are skipped, as the format asks.
    fn quotas(body: &mut Cursor<'_>, count: usize) -> Result<Vec<(QuotaKind, u32)>, StateError> {
        if body.remaining() < count.saturating_mul(4) {
            return Err(SHORT_RECORD);
        }
        let mut values = fallible::vec_with_capacity(count)?;
        for _ in 0..count {
            values.push(body.u32()?);
        }
        let rest = body.take(body.remaining())?;
        let names = quota_names(rest, count)?;
        let mut known = fallible::vec_with_capacity(count)?;
        for (name, value) in names.into_iter().zip(values) {
            if let Ok(kind) = QuotaKind::from_wire_name(name) {
                known.push((kind, value));
            }
        }
        Ok(known)
    }

    fn global_quota(&mut self, mut body: Cursor<'_>) -> Result<(), StateError> {
        if core::mem::replace(&mut self.seen_global_quota, true) {
            return Err(StateError::Duplicate("GLOBAL_QUOTA_DATA"));
        }
        let per_domain = usize::from(body.u16()?);
        let global_only = usize::from(body.u16()?);
        for (kind, value) in Self::quotas(&mut body, per_domain + global_only)? {
            self.engine.config.quotas.set(kind, value);
        }
        Ok(())
    }

    fn domain(&mut self, mut body: Cursor<'_>) -> Result<(), StateError> {
        let domain = DomainId(body.u16()?);
        let count = usize::from(body.u16()?);
        let features = body.u32()?;
        let quotas = Self::quotas(&mut body, count)?;
        if self.domains_with_data.contains(&domain) {
            return Err(StateError::Duplicate("DOMAIN_DATA"));
        }
        self.domains_with_data.try_insert(domain)?;
        let engine = &mut self.engine;
        let generation = engine.tree.current_generation();
        let record = engine
            .domains
            .ensure(domain, generation, &engine.config.quotas)?;
        // Version 1 has no features field (written as zero): the record keeps its default.
        if self.state.version >= 2 {
            record.features = features & feature::SUPPORTED;
        }
        for (kind, value) in quotas {
            record.quotas.set(kind, value);
        }
        Ok(())
    }

    /// The special nodes a stream left out, as a fresh store has them (`Engine::new`:
    /// the privileged domain's, `@releaseDomain` readable by every domain), then the
    /// accounting counted afresh.
    fn finish(mut self) -> Result<(Engine, RestoredState), StateError> {
        let privileged = self.engine.config.privileged_domain;
        for special in [INTRODUCE_DOMAIN, RELEASE_DOMAIN] {
            if self.engine.tree.get(special).is_some() {
                continue;
            }
            let mut permissions = Permissions::owned_by(privileged);
            if special == RELEASE_DOMAIN {
                permissions.push(Permission {
                    domain: DomainId::ANY,
                    access: Access::READ,
                    ignored: false,
                })?;
            }
            self.engine.tree.insert(special, Node::empty(permissions))?;
        }
        self.engine.recount_restored_usage()?;
        Ok((self.engine, self.state))
    }
}

/// The bytes before the rest of a partly sent message that count as sent.
const PARTIAL_PREFIX_BYTES: usize = 1;

/// The queued output of a connection record: the rest of a partly sent message
/// (`partial_bytes`, one message behind [`PARTIAL_PREFIX_BYTES`]), then complete messages.
fn output_messages(output: &[u8], partial_bytes: usize) -> Result<Vec<OutputMessage>, StateError> {
    let mut messages = Vec::new();
    let (partial, mut rest) = output.split_at_checked(partial_bytes).ok_or(SHORT_RECORD)?;
    if !partial.is_empty() {
        // Kept behind one byte that counts as sent, so that the connection shows a partly
        // sent message again (and a stream written from it has the same `out-resp-len`).
        let mut bytes = fallible::vec_with_capacity(PARTIAL_PREFIX_BYTES + partial.len())?;
        bytes.push(0);
        bytes.extend_from_slice(partial);
        fallible::push(
            &mut messages,
            OutputMessage {
                bytes,
                // Its type is unknown: kept as a reply, which never expires.
                is_reply: true,
                queued_at_milliseconds: 0,
                caused_by: None,
            },
        )?;
    }
    while !rest.is_empty() {
        let header_bytes: &[u8; MESSAGE_HEADER_BYTES] = rest
            .get(..MESSAGE_HEADER_BYTES)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(StateError::Malformed("queued message header"))?;
        let header = MessageHeader::from_bytes(header_bytes);
        // No limit but the record's: the store queues what it built (a watch event may
        // be longer than a request may be).
        let payload_bytes = usize::try_from(header.payload_length_bytes)
            .map_err(|_| StateError::Malformed("queued message length"))?;
        let (message, after) = rest
            .split_at_checked(MESSAGE_HEADER_BYTES + payload_bytes)
            .ok_or(StateError::Malformed("queued message length"))?;
        fallible::push(
            &mut messages,
            OutputMessage {
                bytes: fallible::to_vec(message)?,
                is_reply: header.message_type != MessageType::WatchEvent.number(),
                queued_at_milliseconds: 0,
                caused_by: None,
            },
        )?;
        rest = after;
    }
    Ok(messages)
}

impl Engine {
    /// Counts every domain's nodes, watches, transactions and memory afresh from what was
    /// restored (the stream holds no counters), with the recount behind `check`.
    fn recount_restored_usage(&mut self) -> Result<(), StateError> {
        self.try_check_accounting()?;
        let privileged = self.config.privileged_domain;
        let mut max_seen = self.domains.max_seen;
        for (domain, record) in self.domains.iter() {
            if *domain != privileged {
                max_seen.nodes = max_seen.nodes.max(record.usage.nodes);
                max_seen.watches = max_seen.watches.max(record.usage.watches);
                max_seen.transactions = max_seen.transactions.max(record.usage.transactions);
                max_seen.memory_bytes = max_seen.memory_bytes.max(record.usage.memory_bytes);
            }
        }
        self.domains.max_seen = max_seen;
        Ok(())
    }
}
