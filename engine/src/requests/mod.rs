//! Running one request (`docs/protocol.md`, "Wire format"): the reply's room is reserved,
//! the payload parsed into a typed [`Request`], the caller authorised, the request handled
//! by the module of its family, and the reply (or error) queued before the events it
//! caused.
//!
//! Families: `nodes` (reads and writes of nodes), `watches`, `transactions`, `domains`,
//! `control` (`XS_CONTROL` and the quota requests).

mod control;
mod domains;
mod nodes;
mod transactions;
mod watches;

use crate::connection::{OutputMessage, REPLY_ROOM_BYTES};
use crate::engine::{ACCESS_LOG_TARGET, Engine, Printable, Reply};
use crate::fallible;
use crate::operations::{self, Caller};
use crate::request::{self, ParseContext, Request};
use crate::wire::{self, HEADER_SIZE_BYTES, MessageHeader, MessageType, PAYLOAD_MAX_BYTES};
use crate::{ConnectionId, Platform, StoreError, StoreResult};
use alloc::vec::Vec;

/// Who sent a request, and in which transaction (0: none): what every handler needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin {
    /// The connection the request came on (its reply goes there).
    pub connection: ConnectionId,
    /// Its domain, as permissions and quotas see it.
    pub caller: Caller,
    /// The transaction named by the header (0: none).
    pub transaction_id: u32,
}

impl Engine {
    /// Runs one framed request of `connection` (its payload `ENOMEM` when the framing found
    /// no memory for it) and queues the reply, then the events it caused.
    pub(crate) fn process(
        &mut self,
        platform: &mut dyn Platform,
        connection: ConnectionId,
        header: MessageHeader,
        payload: StoreResult<&[u8]>,
    ) {
        let message_type = MessageType::from_number(header.message_type);
        let type_name = message_type.map_or("UNKNOWN", MessageType::name);
        if self.tracing() {
            log::info!(target: ACCESS_LOG_TARGET, "IN  {} {} {:#x} ({})", connection.0, type_name, header.transaction_id, Printable(payload.unwrap_or(b"<no memory for the payload>")));
        }
        self.memory_status = platform.memory_status();
        // The reply's room first: a request that cannot be answered is not run.
        let (reply, reply_room_reserved) = self.reserve_reply(connection);
        let outcome = match (message_type, payload, reply_room_reserved) {
            (_, Err(error), _) => Err(error),
            (_, _, false) => Err(StoreError::OutOfMemory),
            (None | Some(MessageType::WatchEvent) | Some(MessageType::Error), _, _) => {
                Err(StoreError::NotImplemented)
            }
            (Some(message_type), Ok(payload), _)
                if !self.memory_admits(connection, message_type, payload) =>
            {
                log::debug!(
                    "connection {}: {} refused, the store's memory is low",
                    connection.0,
                    message_type.name()
                );
                Err(StoreError::OutOfMemory)
            }
            (Some(message_type), Ok(payload), _) => {
                self.dispatch(platform, connection, message_type, &header, payload)
            }
        };
        if core::mem::take(&mut self.reply_withheld) && outcome.is_ok() {
            // Answered later (`live-update -s`). The room reserved for its reply is renewed
            // before the connection's next request (`Engine::prepare_input`).
            self.flush_events(Some(connection));
            return;
        }
        let failure = match &outcome {
            Ok(reply) if reply.len() <= PAYLOAD_MAX_BYTES => None,
            Ok(_) => Some(StoreError::TooBig),
            Err(error) => {
                self.pending_changes.clear();
                self.pending_special.clear();
                self.pending_direct_events.clear();
                Some(*error)
            }
        };
        self.answer(connection, &header, &outcome, failure, reply);
        self.flush_events(Some(connection));
    }

    /// Encodes the reply of a request (`failure`: the error it answers instead of
    /// `outcome`) into the room reserved for it, and queues it.
    fn answer(
        &mut self,
        connection: ConnectionId,
        header: &MessageHeader,
        outcome: &StoreResult<Reply>,
        failure: Option<StoreError>,
        mut reply: Vec<u8>,
    ) {
        let mut error_bytes = [0u8; 16];
        let (reply_type, reply_payload) = match (outcome, failure) {
            (Ok(reply), None) => (header.message_type, reply.as_ref()),
            (_, error) => (
                MessageType::Error.number(),
                error_payload(error.unwrap_or(StoreError::OutOfMemory), &mut error_bytes),
            ),
        };
        let (request_id, transaction_id) = (header.request_id, header.transaction_id);
        let mut encoded = wire::encode_into(
            &mut reply,
            reply_type,
            request_id,
            transaction_id,
            reply_payload,
        )
        .map(|()| reply_type);
        if encoded.is_err() {
            // Only a read's reply outgrows the reserved room, and a read changed nothing:
            // it is answered `ENOMEM` in that room instead.
            let error_type = MessageType::Error.number();
            let error = error_payload(StoreError::OutOfMemory, &mut error_bytes);
            encoded = wire::encode_into(&mut reply, error_type, request_id, transaction_id, error)
                .map(|()| error_type);
        }
        match encoded {
            Ok(reply_type) => {
                if self.tracing() {
                    let name =
                        MessageType::from_number(reply_type).map_or("UNKNOWN", MessageType::name);
                    let shown = reply.get(HEADER_SIZE_BYTES..).unwrap_or(&[]);
                    log::info!(target: ACCESS_LOG_TARGET, "OUT {} {} ({})", connection.0, name, Printable(shown));
                }
                self.queue_reply(connection, reply);
            }
            Err(_) => log::warn!("connection {}: no memory to answer a request", connection.0),
        }
    }

    /// Whether the store's memory lets this request go on (`memory.rs`).
    fn memory_admits(
        &self,
        connection: ConnectionId,
        message_type: MessageType,
        payload: &[u8],
    ) -> bool {
        let Some(status) = self.memory_status else {
            return true;
        };
        let privileged = self
            .connections
            .get(&connection)
            .is_some_and(|state| state.domain == self.config.privileged_domain);
        status.admits(message_type, payload, privileged)
    }

    /// Authorises, parses and handles one request.
    fn dispatch(
        &mut self,
        platform: &mut dyn Platform,
        connection: ConnectionId,
        message_type: MessageType,
        header: &MessageHeader,
        payload: &[u8],
    ) -> StoreResult<Reply> {
        let caller = self.caller(connection).ok_or(StoreError::Invalid)?;
        self.authorise(connection, &caller, message_type, header.transaction_id)?;
        let context = ParseContext {
            caller,
            quotas: self.quotas_of(caller.domain),
        };
        let request = Request::parse(message_type, payload, &context)?;
        let origin = Origin {
            connection,
            caller,
            transaction_id: header.transaction_id,
        };
        match request {
            Request::Read { path } => self.query(&origin, &path, operations::read),
            Request::Directory { path } => self.query(&origin, &path, operations::directory),
            Request::DirectoryPart { path, offset } => self.query(&origin, &path, |node| {
                operations::directory_part(node, offset)
            }),
            Request::GetPermissions { path } => {
                self.query(&origin, &path, operations::get_permissions)
            }
            Request::Write { path, value } => self.write(&origin, &path, value),
            Request::Mkdir { path } => self.mkdir(&origin, &path),
            Request::Remove { path } => self.remove(&origin, &path),
            Request::SetPermissions { path, permissions } => {
                self.set_permissions(platform, &origin, &path, permissions)
            }
            Request::Watch {
                path,
                written_path,
                token,
                depth,
            } => self.watch(&origin, &path, written_path, token, depth),
            Request::Unwatch { path, token } => self.unwatch(&origin, &path, token),
            Request::ResetWatches => self.reset_watches(&origin),
            Request::TransactionStart => self.start_transaction(&origin),
            Request::TransactionEnd { commit } => self.end_transaction(&origin, commit),
            Request::Introduce {
                domain,
                ring_frame,
                remote_port,
            } => self.introduce(platform, domain, ring_frame, remote_port),
            Request::Release { domain } => self.release(platform, domain),
            Request::Resume { domain } => self.resume(domain),
            Request::IsDomainIntroduced { domain } => self.is_domain_introduced(domain),
            Request::GetDomainPath { domain } => self.get_domain_path(domain),
            Request::SetTarget { domain, target } => self.set_target(domain, target),
            Request::GetFeature { domain } => self.get_feature(platform, &origin, domain),
            Request::SetFeature { domain, features } => {
                self.set_feature(platform, domain, features)
            }
            Request::GetQuota(query) => self.get_quota(platform, query),
            Request::SetQuota {
                domain,
                name,
                value,
            } => self.set_quota(platform, domain, name, value),
            Request::Control(command) => self.control(connection, header, command),
        }
    }

    /// The checks made before a payload is looked at: privileged-only types (`EACCES`), and
    /// the transaction the header names. Every request but `XS_WATCH` and `XS_UNWATCH`
    /// names an open transaction of the connection or 0 (`XS_FLAG_NOTID`); a transaction
    /// cannot be started inside one (`EBUSY`) and only one can be ended (`ENOENT`).
    fn authorise(
        &self,
        connection: ConnectionId,
        caller: &Caller,
        message_type: MessageType,
        transaction_id: u32,
    ) -> StoreResult<()> {
        if request::is_privileged_only(message_type) && !caller.privileged {
            return Err(StoreError::AccessDenied);
        }
        let watch = matches!(message_type, MessageType::Watch | MessageType::Unwatch);
        if transaction_id != 0 && !watch {
            let known = self
                .connections
                .get(&connection)
                .is_some_and(|state| state.transactions.contains_key(&transaction_id));
            if !known {
                return Err(StoreError::NoEntry);
            }
            if message_type == MessageType::TransactionStart {
                return Err(StoreError::Busy);
            }
        }
        // `XS_TRANSACTION_END` outside a transaction is `ENOENT`, but only once its argument
        // was found good (C 4.22 `do_transaction_end()` checks `T`/`F` first): the handler
        // finds no transaction 0.
        Ok(())
    }

    /// Room for the reply to a request of `connection`, taken before the request runs: a
    /// slot in its queue, its place among the connections with output, and a buffer that
    /// holds any error reply. Once a request changed the store its reply cannot be refused.
    ///
    /// Returns the buffer (empty when none could be had) and whether all the room is there.
    /// A connection keeps a spare buffer and a spare queue slot, renewed as its output is
    /// sent ([`Engine::consume_output`]), so that once memory runs out its next request is
    /// still answered `ENOMEM`.
    fn reserve_reply(&mut self, connection: ConnectionId) -> (Vec<u8>, bool) {
        let mut complete = self
            .output_ready
            .try_reserve_total(self.output_ready.len() + 1)
            .is_ok();
        let room = match self.connections.get_mut(&connection) {
            Some(state) => {
                complete &= state.reserve_output(1).is_ok();
                state.take_reply_room()
            }
            None => fallible::vec_with_capacity(REPLY_ROOM_BYTES).unwrap_or_default(),
        };
        complete &= room.capacity() >= REPLY_ROOM_BYTES;
        (room, complete)
    }

    /// Queues a reply (whose room [`Engine::reserve_reply`] reserved).
    pub(crate) fn queue_reply(&mut self, connection: ConnectionId, bytes: Vec<u8>) {
        let now = self.now_milliseconds;
        let Some(state) = self.healthy_connection(connection) else {
            return;
        };
        let domain = state.domain;
        let size = bytes.len() as u64;
        let queued = state.push_output(OutputMessage {
            bytes,
            is_reply: true,
            queued_at_milliseconds: now,
            caused_by: None,
        });
        if queued.is_err() {
            log::warn!("connection {}: a reply is lost, no memory", connection.0);
            return;
        }
        self.domains.charge_output(domain, size);
        // Room reserved with the reply's; should it be missing, the reply waits until the
        // front end serves the connection for another reason.
        if self.output_ready.try_insert(connection).is_err() {
            log::warn!(
                "connection {}: no memory to note a reply as ready",
                connection.0
            );
        }
    }
}

/// An error reply's payload, the name and a NUL, written into `room` (no allocation).
fn error_payload(error: StoreError, room: &mut [u8; 16]) -> &[u8] {
    let name = error.wire_name().as_bytes();
    let length = name.len().min(room.len() - 1);
    if let Some(target) = room.get_mut(..length) {
        target.copy_from_slice(name.get(..length).unwrap_or(&[]));
    }
    if let Some(nul) = room.get_mut(length) {
        *nul = 0;
    }
    room.get(..=length).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_built_without_formatting() {
        let mut room = [0u8; 16];
        assert_eq!(
            error_payload(StoreError::NotEmpty, &mut room),
            b"ENOTEMPTY\0"
        );
        assert!(REPLY_ROOM_BYTES >= HEADER_SIZE_BYTES + "/local/domain/65535\0".len());
    }
}
