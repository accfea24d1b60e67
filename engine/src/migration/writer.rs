//! Writing the store's state as a version 2 stream (or version 1, for a live update that asks for it), in the order C xenstored writes it.
//!
//! Order and contents: `docs/migration-stream.md`, "What we write". The writer only reads
//! the engine; it allocates the stream fallibly and reports a value too wide for its field
//! instead of cutting it.

use super::FrontEndState;
use super::layout::{
    CONNECTION_FIELD_UNIQUE_ID, CONNECTION_TYPE_RING, CONNECTION_TYPE_SOCKET,
    PERMISSION_FLAG_IGNORED, STREAM_IDENT, STREAM_VERSION, StreamWriter, WATCH_DEPTH_UNLIMITED,
    record,
};
use crate::connection::{Connection, ConnectionKind};
use crate::engine::Engine;
use crate::error::StateError;
use crate::fallible;
use crate::path::{INTRODUCE_DOMAIN, RELEASE_DOMAIN};
use crate::quota::{QuotaKind, Quotas};
use crate::store::Node;
use crate::{ConnectionId, DomainId};
use alloc::string::String;
use alloc::vec::Vec;

/// A count or length as the `u16` field it is written in.
fn u16_field(value: usize, what: &'static str) -> Result<u16, StateError> {
    u16::try_from(value).map_err(|_| StateError::TooLarge(what))
}

fn u32_field(value: usize, what: &'static str) -> Result<u32, StateError> {
    u32::try_from(value).map_err(|_| StateError::TooLarge(what))
}

impl Engine {
    /// The whole store as a version 2 migration stream (`docs/migration-stream.md`):
    /// header, `GLOBAL_DATA`, `GLOBAL_QUOTA_DATA`, per connection its `CONNECTION_DATA`,
    /// watches and open transactions, every node (parents first, then the special nodes),
    /// one `DOMAIN_DATA` per domain record, `END`. `front_end` answers what only the front
    /// end knows (ports, unique ids, unread input, descriptors).
    ///
    /// Open transactions are written as `TRANSACTION_DATA` without their nodes: the
    /// restored store answers their commit `EAGAIN`, so clients retry them. A front end
    /// that wants none can wait until [`Engine::open_transaction_count`] is 0, as C's
    /// `live-update -s` does.
    pub fn write_state(&self, front_end: &dyn FrontEndState) -> Result<Vec<u8>, StateError> {
        self.write_stream(front_end, STREAM_VERSION, None)
    }

    /// The stream of [`Engine::write_state`] in `version` (1 or 2), with `appended_output`
    /// (a connection and whole messages) queued after that connection's unsent output: the
    /// `OK` of a live update's start, which the new instance sends
    /// (`docs/migration-stream.md`, "Live update").
    ///
    /// Version 1 has no `WATCH_DATA_EXTENDED` and no features: a watch with a depth is
    /// written as a plain watch (it fires at every depth after the restore) and `DOMAIN_DATA`
    /// carries features 0. C 4.22 writes its extended records even in version 1, which a
    /// version 1 reader does not know.
    pub(crate) fn write_stream(
        &self,
        front_end: &dyn FrontEndState,
        version: u32,
        appended_output: Option<(ConnectionId, &[u8])>,
    ) -> Result<Vec<u8>, StateError> {
        if version == 0 || version > STREAM_VERSION {
            return Err(StateError::UnsupportedVersion(version));
        }
        let mut stream = StreamWriter::new();
        stream.put(STREAM_IDENT)?;
        stream.put(&version.to_be_bytes())?;
        // Flags, big-endian like the version: bit 0 clear, the records are little-endian.
        stream.put(&0u32.to_be_bytes())?;

        let global = front_end.global();
        stream.begin_record(record::GLOBAL_DATA)?;
        stream.i32(global.socket_fd)?;
        stream.i32(global.event_channel_fd)?;
        stream.end_record()?;

        stream.begin_record(record::GLOBAL_QUOTA_DATA)?;
        stream.u16(u16_field(QuotaKind::ALL.len(), "quota count")?)?;
        stream.u16(0)?;
        write_quotas(&mut stream, &self.config.quotas)?;
        stream.end_record()?;

        for (id, state) in self.connections.iter() {
            let appended = appended_output
                .filter(|(connection, _)| connection == id)
                .map_or(&[][..], |(_, messages)| messages);
            self.write_connection(&mut stream, front_end, *id, state, version, appended)?;
        }
        self.write_nodes(&mut stream)?;
        for (domain, record) in self.domains.iter() {
            stream.begin_record(record::DOMAIN_DATA)?;
            stream.u16(domain.0)?;
            stream.u16(u16_field(QuotaKind::ALL.len(), "quota count")?)?;
            stream.u32(if version >= 2 { record.features } else { 0 })?;
            write_quotas(&mut stream, &record.quotas)?;
            stream.end_record()?;
        }
        stream.begin_record(record::END)?;
        stream.end_record()?;
        Ok(stream.bytes)
    }

    /// Transactions open on all connections (a front end may wait for 0 before saving).
    pub fn open_transaction_count(&self) -> usize {
        self.open_transactions
    }

    fn write_connection(
        &self,
        stream: &mut StreamWriter,
        front_end: &dyn FrontEndState,
        id: ConnectionId,
        state: &Connection,
        version: u32,
        appended_output: &[u8],
    ) -> Result<(), StateError> {
        let mut input = Vec::new();
        state.partial_input(&mut input)?;
        fallible::extend(&mut input, front_end.unread_input(id))?;
        // Output: what is left of a partly sent first message (`out-resp-len`), then
        // every other queued message whole.
        let mut output = Vec::new();
        let mut partial_bytes = 0;
        for (index, message) in state.output.iter().enumerate() {
            let unsent = if index == 0 {
                let rest = message.bytes.get(state.output_sent_bytes..).unwrap_or(&[]);
                if state.output_sent_bytes > 0 {
                    partial_bytes = rest.len();
                }
                rest
            } else {
                &message.bytes
            };
            fallible::extend(&mut output, unsent)?;
        }
        fallible::extend(&mut output, appended_output)?;
        let unique_id = match state.kind {
            ConnectionKind::Domain => front_end.unique_id(state.domain),
            ConnectionKind::Socket => None,
        };
        stream.begin_record(record::CONNECTION_DATA)?;
        stream.u32(id.0)?;
        match state.kind {
            ConnectionKind::Domain => {
                stream.u16(CONNECTION_TYPE_RING)?;
                stream.u16(if unique_id.is_some() {
                    CONNECTION_FIELD_UNIQUE_ID
                } else {
                    0
                })?;
                let target = self
                    .domains
                    .get(state.domain)
                    .and_then(|record| record.target)
                    .unwrap_or(DomainId::INVALID);
                stream.u16(state.domain.0)?;
                stream.u16(target.0)?;
                stream.u32(front_end.event_channel_port(state.domain))?;
            }
            ConnectionKind::Socket => {
                stream.u16(CONNECTION_TYPE_SOCKET)?;
                stream.u16(0)?;
                stream.i32(front_end.socket_fd(id))?;
                stream.u32(0)?;
            }
        }
        stream.u16(u16_field(input.len(), "unread input")?)?;
        stream.u16(u16_field(partial_bytes, "partial response")?)?;
        stream.u32(u32_field(output.len(), "queued output")?)?;
        stream.put(&input)?;
        stream.put(&output)?;
        stream.pad()?;
        if let Some(unique_id) = unique_id {
            stream.u64(unique_id)?;
        }
        stream.end_record()?;

        for (watched, token) in &state.watches {
            let watch = self
                .watches
                .on_path(watched)
                .iter()
                .find(|watch| watch.connection == id && &watch.token == token);
            let (prefix_bytes, depth) = watch.map_or((0, None), |watch| {
                (watch.relative_prefix_bytes, watch.depth)
            });
            // The path as the client wrote it: relative paths without the home prefix.
            let written = watched.get(prefix_bytes..).unwrap_or(watched);
            match depth.filter(|_| version >= 2) {
                Some(depth) => {
                    stream.begin_record(record::WATCH_DATA_EXTENDED)?;
                    stream.u32(id.0)?;
                    stream.u16(u16_field(written.len() + 1, "watch path")?)?;
                    stream.u16(u16_field(token.len() + 1, "watch token")?)?;
                    // Deeper than any path can reach is the same as unlimited.
                    let depth = u16::try_from(depth).unwrap_or(WATCH_DEPTH_UNLIMITED);
                    stream.u16(depth)?;
                    stream.u16(0)?;
                }
                None => {
                    stream.begin_record(record::WATCH_DATA)?;
                    stream.u32(id.0)?;
                    stream.u16(u16_field(written.len() + 1, "watch path")?)?;
                    stream.u16(u16_field(token.len() + 1, "watch token")?)?;
                }
            }
            stream.put(written.as_bytes())?;
            stream.put(&[0])?;
            stream.put(token)?;
            stream.put(&[0])?;
            stream.end_record()?;
        }

        for transaction_id in state.transactions.keys() {
            stream.begin_record(record::TRANSACTION_DATA)?;
            stream.u32(id.0)?;
            stream.u32(*transaction_id)?;
            stream.end_record()?;
        }
        Ok(())
    }

    /// Every node, each after its parent (a depth-first walk with a work list, no
    /// recursion), then `@releaseDomain` and `@introduceDomain` as C writes them.
    fn write_nodes(&self, stream: &mut StreamWriter) -> Result<(), StateError> {
        let mut pending: Vec<String> = Vec::new();
        fallible::push(&mut pending, fallible::string("/")?)?;
        while let Some(node_path) = pending.pop() {
            let Some(node) = self.tree.get(&node_path) else {
                continue;
            };
            self.write_node(stream, &node_path, node)?;
            // Children pushed last first, so that they are written in their order.
            let first_child = pending.len();
            for child in node.children() {
                let child_path = crate::path::join(&node_path, child)?;
                fallible::push(&mut pending, child_path)?;
            }
            if let Some(children) = pending.get_mut(first_child..) {
                children.reverse();
            }
        }
        for special in [RELEASE_DOMAIN, INTRODUCE_DOMAIN] {
            if let Some(node) = self.tree.get(special) {
                self.write_node(stream, special, node)?;
            }
        }
        Ok(())
    }

    fn write_node(
        &self,
        stream: &mut StreamWriter,
        node_path: &str,
        node: &Node,
    ) -> Result<(), StateError> {
        let entries = node.permissions.entries();
        stream.begin_record(record::NODE_DATA)?;
        stream.u32(0)?;
        stream.u32(0)?;
        stream.u16(u16_field(node_path.len() + 1, "node path")?)?;
        stream.u16(u16_field(node.value().len(), "node value")?)?;
        stream.u16(0)?;
        stream.u16(u16_field(entries.len(), "permission count")?)?;
        for entry in entries {
            // An entry the permission checks skip is written as stale, so that the
            // restored store skips it too (its domain may be known again after the restore).
            let stale =
                entry.ignored || !self.domains.entry_is_current(entry.domain, node.generation);
            stream.put(&[
                entry.access.letter(),
                if stale { PERMISSION_FLAG_IGNORED } else { 0 },
            ])?;
            stream.u16(entry.domain.0)?;
        }
        stream.put(node_path.as_bytes())?;
        stream.put(&[0])?;
        stream.put(node.value())?;
        stream.end_record()
    }
}

/// The values of every quota, then their names, NUL-terminated (C's names: `soft-memory`
/// is the soft limit of `memory`).
fn write_quotas(stream: &mut StreamWriter, quotas: &Quotas) -> Result<(), StateError> {
    for kind in QuotaKind::ALL {
        stream.u32(quotas.get(kind))?;
    }
    for kind in QuotaKind::ALL {
        stream.put(kind.name().as_bytes())?;
        stream.put(&[0])?;
    }
    Ok(())
}
