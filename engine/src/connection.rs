//! One client of the store: request framing, the output queue, its watches and transactions.

use crate::engine::ConnectionFailure;
use crate::fallible::SortedMap;
use crate::siphash::SipHasher;
use crate::transaction::Transaction;
use crate::wire::{HEADER_SIZE_BYTES, MessageHeader, PAYLOAD_MAX_BYTES};
use crate::{ConnectionId, DomainId, StoreError, StoreResult};
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use hashbrown::HashTable;

/// The room a reply is built in before its request runs: a header and the longest error
/// name, `OK`, a transaction id or a domain's home path (larger replies are reads, which
/// answer `ENOMEM` in this room when their own cannot be allocated).
pub const REPLY_ROOM_BYTES: usize = HEADER_SIZE_BYTES + 32;

/// How the client reaches the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionKind {
    /// A Unix-socket client of the Linux daemon.
    Socket,
    /// A domain's shared ring.
    Domain,
}

/// A message waiting to be sent.
#[derive(Debug)]
pub struct OutputMessage {
    /// Header and payload.
    pub bytes: Vec<u8>,
    /// A reply (counts as an outstanding request) rather than a watch event.
    pub is_reply: bool,
    /// When it was queued (watch events expire).
    pub queued_at_milliseconds: u64,
    /// For a watch event: the connection whose request caused it. Until the event is sent
    /// or dropped it counts as one of that connection's outstanding requests, so a writer
    /// cannot flood a guest that does not read its ring without being slowed itself (C
    /// `send_event()`, `pend.req`; T-326b of docs/hostile-guests.md, "The advisory tests").
    pub caused_by: Option<ConnectionId>,
}

/// Result of feeding bytes: how many were taken and the complete request, if one is ready.
pub struct Framed {
    /// Bytes consumed from the input.
    pub consumed_bytes: usize,
    /// A complete request; its payload is `ENOMEM` when there was no memory to keep it (the
    /// bytes were taken all the same, and the request is answered `ENOMEM`).
    pub request: Option<(MessageHeader, StoreResult<Vec<u8>>)>,
}

/// Most requests a connection may have held back at once ([`Connection::held_requests`]);
/// beyond that, transaction starts run at once (the update then waits for them as for any
/// open transaction). A client waits for its transaction start's answer, so this is about
/// the number of dom0's clients starting transactions at the same moment; the bound keeps a
/// guest from making the store hold its requests without limit.
pub const HELD_REQUESTS_MAX: usize = 16;

/// One connection's state.
#[derive(Debug)]
pub struct Connection {
    /// Socket or ring.
    pub kind: ConnectionKind,
    /// The domain it acts as (sockets: the store domain).
    pub domain: DomainId,
    header_bytes: [u8; HEADER_SIZE_BYTES],
    header_filled_bytes: usize,
    header: Option<MessageHeader>,
    payload: Vec<u8>,
    /// Set when the current request's payload found no memory: its bytes are counted in
    /// `payload_skipped_bytes` instead of kept.
    payload_skipped: bool,
    payload_skipped_bytes: usize,
    /// Messages to send; the first may be partly sent. Change it only through
    /// [`Connection::push_output`], [`Connection::pop_output`], [`Connection::clear_output`]
    /// and [`Connection::retain_output`], which keep `event_hashes` in step.
    pub output: VecDeque<OutputMessage>,
    /// How many queued watch events have each (keyed SipHash) digest. Duplicate
    /// suppression asks "is an identical event queued?" for every event; without this index
    /// each question scans the queue, and a writer flooding a non-reading guest (XSA-326)
    /// would make the store spend time quadratic in the queue length (tens of thousands of
    /// events). The key keeps writers from choosing events whose digests collide.
    event_hashes: HashTable<(u64, u32)>,
    event_hash_key: [u64; 2],
    /// Bytes of the first message already sent.
    pub output_sent_bytes: usize,
    /// Open transactions by id.
    pub transactions: SortedMap<u32, Transaction>,
    next_transaction_id: u32,
    /// Room for the next reply, renewed as output is sent: when memory has run out in
    /// between, the next request can still be answered (`ENOMEM`) in it.
    spare_reply_room: Vec<u8>,
    /// The watches this connection holds: (watched path, token).
    pub watches: Vec<(String, Vec<u8>)>,
    /// Set once the connection broke the protocol.
    pub failure: Option<ConnectionFailure>,
    /// Watch events this connection's requests caused that are still queued somewhere
    /// ([`OutputMessage::caused_by`]); kept by the engine.
    pub caused_events_pending: usize,
    /// Whole requests held back, in arrival order: transaction starts while a live update
    /// is pending (C's delayed requests, `docs/protocol.md`, "Live update"). The connection
    /// goes on with its other requests (dom0's one ring carries every dom0 client, the
    /// update's own `xenstore-control` among them: a connection that stopped reading would
    /// stop the update). At most [`HELD_REQUESTS_MAX`]; a saved state carries them as
    /// unread input.
    pub held_requests: Vec<(MessageHeader, StoreResult<Vec<u8>>)>,
}

impl Connection {
    /// A fresh connection; `event_hash_key` keys the digests of its queued events (secret,
    /// like the node index's key).
    pub fn new(kind: ConnectionKind, domain: DomainId, event_hash_key: [u64; 2]) -> Connection {
        // The spare room for replies from the start (when it can be had): the first request
        // is answered even if memory runs out before it.
        let mut output = VecDeque::new();
        let _ = output.try_reserve(2);
        Connection {
            kind,
            domain,
            header_bytes: [0; HEADER_SIZE_BYTES],
            header_filled_bytes: 0,
            header: None,
            payload: Vec::new(),
            payload_skipped: false,
            payload_skipped_bytes: 0,
            output,
            event_hashes: HashTable::new(),
            event_hash_key,
            output_sent_bytes: 0,
            transactions: SortedMap::new(),
            next_transaction_id: 1,
            spare_reply_room: crate::fallible::vec_with_capacity(REPLY_ROOM_BYTES)
                .unwrap_or_default(),
            watches: Vec::new(),
            failure: None,
            caused_events_pending: 0,
            held_requests: Vec::new(),
        }
    }

    /// Takes bytes until one request is complete. An announced payload over 4096 bytes is a
    /// protocol error (C xenstored ignores such a connection, `core.c:handle_input()`).
    pub fn frame(&mut self, bytes: &[u8]) -> Result<Framed, ConnectionFailure> {
        let mut consumed_bytes = 0;
        let header = match self.header {
            Some(header) => header,
            None => {
                let wanted = HEADER_SIZE_BYTES - self.header_filled_bytes;
                let available = bytes.len().min(wanted);
                let source = bytes.get(..available).unwrap_or(&[]);
                if let Some(target) = self
                    .header_bytes
                    .get_mut(self.header_filled_bytes..self.header_filled_bytes + available)
                {
                    target.copy_from_slice(source);
                }
                self.header_filled_bytes += available;
                consumed_bytes += available;
                if self.header_filled_bytes < HEADER_SIZE_BYTES {
                    return Ok(Framed {
                        consumed_bytes,
                        request: None,
                    });
                }
                let header = MessageHeader::from_bytes(&self.header_bytes);
                if header.payload_length_bytes as usize > PAYLOAD_MAX_BYTES {
                    return Err(ConnectionFailure::Protocol);
                }
                self.header = Some(header);
                // The whole payload's room now, so that taking its bytes never allocates.
                self.payload = Vec::new();
                self.payload_skipped_bytes = 0;
                self.payload_skipped = self
                    .payload
                    .try_reserve_exact(header.payload_length_bytes as usize)
                    .is_err();
                header
            }
        };
        let received = if self.payload_skipped {
            self.payload_skipped_bytes
        } else {
            self.payload.len()
        };
        let wanted = (header.payload_length_bytes as usize).saturating_sub(received);
        let rest = bytes.get(consumed_bytes..).unwrap_or(&[]);
        let available = rest.len().min(wanted);
        if self.payload_skipped {
            self.payload_skipped_bytes += available;
        } else {
            self.payload
                .extend_from_slice(rest.get(..available).unwrap_or(&[]));
        }
        consumed_bytes += available;
        if available < wanted {
            return Ok(Framed {
                consumed_bytes,
                request: None,
            });
        }
        self.header = None;
        self.header_filled_bytes = 0;
        let payload = if core::mem::take(&mut self.payload_skipped) {
            Err(StoreError::OutOfMemory)
        } else {
            Ok(core::mem::take(&mut self.payload))
        };
        Ok(Framed {
            consumed_bytes,
            request: Some((header, payload)),
        })
    }

    /// When the oldest of its open transactions started (`None`: none is open).
    pub fn oldest_transaction_start_milliseconds(&self) -> Option<u64> {
        self.transactions
            .values()
            .map(|transaction| transaction.started_at_milliseconds)
            .min()
    }

    /// Drops a partly received request (reconnection, reset).
    pub fn reset_input(&mut self) {
        self.held_requests = Vec::new();
        self.header = None;
        self.header_filled_bytes = 0;
        self.payload = Vec::new();
        self.payload_skipped = false;
        self.payload_skipped_bytes = 0;
    }

    /// Appends the bytes of a partly received request, as they came, to `into` (the unread
    /// input of a migration stream, `docs/migration-stream.md`); payload bytes that found no
    /// memory when they came are given as zeros.
    pub fn partial_input(&self, into: &mut Vec<u8>) -> StoreResult<()> {
        // Held-back requests came before the partial one (and C writes its delayed
        // requests as unread input too).
        for (held_header, held_payload) in &self.held_requests {
            crate::fallible::extend(into, &held_header.to_bytes())?;
            match held_payload {
                Ok(payload) => crate::fallible::extend(into, payload)?,
                Err(_) => {
                    let length = held_header.payload_length_bytes as usize;
                    crate::fallible::reserve(into, length)?;
                    into.resize(into.len() + length, 0);
                }
            }
        }
        let header = self
            .header_bytes
            .get(..self.header_filled_bytes)
            .unwrap_or(&[]);
        crate::fallible::extend(into, header)?;
        if self.header.is_some() {
            if self.payload_skipped {
                crate::fallible::reserve(into, self.payload_skipped_bytes)?;
                into.resize(into.len() + self.payload_skipped_bytes, 0);
            } else {
                crate::fallible::extend(into, &self.payload)?;
            }
        }
        Ok(())
    }

    /// Notes a transaction id restored from a migration stream: new ids continue after it.
    pub fn note_restored_transaction_id(&mut self, id: u32) {
        if id >= self.next_transaction_id {
            self.next_transaction_id = id.wrapping_add(1).max(1);
        }
    }

    /// A new transaction id: counting from 1, skipping 0 and ids in use.
    pub fn allocate_transaction_id(&mut self) -> StoreResult<u32> {
        for _ in 0..=self.transactions.len() {
            let id = self.next_transaction_id;
            self.next_transaction_id = self.next_transaction_id.wrapping_add(1).max(1);
            if id != 0 && !self.transactions.contains_key(&id) {
                return Ok(id);
            }
        }
        Err(StoreError::NoSpace)
    }

    /// Replies queued and not fully sent.
    pub fn outstanding_replies(&self) -> usize {
        self.output
            .iter()
            .filter(|message| message.is_reply)
            .count()
    }

    /// Requests not yet fully answered: queued replies plus the watch events they caused
    /// that are still queued (C's `outstanding` quota counts both).
    pub fn outstanding_requests(&self) -> usize {
        self.outstanding_replies() + self.caused_events_pending
    }

    /// Room for `messages` more queued messages (a reply's room is reserved before its
    /// request runs).
    pub fn reserve_output(&mut self, messages: usize) -> StoreResult<()> {
        self.output
            .try_reserve(messages)
            .map_err(|_| StoreError::OutOfMemory)
    }

    /// The room to build a reply in: the spare one, or a new one; empty when neither can be
    /// had.
    pub fn take_reply_room(&mut self) -> Vec<u8> {
        if self.spare_reply_room.capacity() >= REPLY_ROOM_BYTES {
            return core::mem::take(&mut self.spare_reply_room);
        }
        crate::fallible::vec_with_capacity(REPLY_ROOM_BYTES).unwrap_or_default()
    }

    /// Allocates the spare reply room again after a reply took it (nothing when memory is
    /// short: the next request then allocates its own, or is answered without running).
    pub fn replenish_reply_room(&mut self) {
        if self.spare_reply_room.capacity() < REPLY_ROOM_BYTES {
            self.spare_reply_room =
                crate::fallible::vec_with_capacity(REPLY_ROOM_BYTES).unwrap_or_default();
        }
    }

    /// Whether the next request's answer is sure of its room: the spare reply buffer and a
    /// free slot in the output queue (at least an `ENOMEM` can then always be queued).
    pub fn has_reply_room(&self) -> bool {
        self.spare_reply_room.capacity() >= REPLY_ROOM_BYTES
            && self.output.len() < self.output.capacity()
    }

    /// Tries to renew the room [`Connection::has_reply_room`] asks for (nothing when memory is
    /// short: the connection's requests then wait).
    pub fn prepare_reply_room(&mut self) {
        self.replenish_reply_room();
        let _ = self.reserve_output(1);
    }

    /// Queues a message at the end; `ENOMEM` (and the message dropped) when the queue or the
    /// index of events cannot grow.
    pub fn push_output(&mut self, message: OutputMessage) -> StoreResult<()> {
        self.reserve_output(1)?;
        if !message.is_reply {
            let digest = self.event_digest(&message.bytes);
            match self
                .event_hashes
                .find_mut(digest, |(existing, _)| *existing == digest)
            {
                Some((_, count)) => *count += 1,
                None => {
                    self.event_hashes
                        .try_reserve(1, |(hash, _)| *hash)
                        .map_err(|_| StoreError::OutOfMemory)?;
                    self.event_hashes
                        .insert_unique(digest, (digest, 1), |(hash, _)| *hash);
                }
            }
        }
        self.output.push_back(message);
        Ok(())
    }

    /// Removes the first message.
    pub fn pop_output(&mut self) -> Option<OutputMessage> {
        let message = self.output.pop_front()?;
        self.forget_event(&message);
        Some(message)
    }

    /// Drops every queued message.
    pub fn clear_output(&mut self) {
        self.output.clear();
        self.event_hashes = HashTable::new();
    }

    /// Keeps only the messages `keep` accepts (called with each message and its position).
    pub fn retain_output(&mut self, mut keep: impl FnMut(usize, &OutputMessage) -> bool) {
        let mut index = 0;
        let Connection {
            output,
            event_hashes,
            event_hash_key,
            ..
        } = self;
        // The dropped events' digests are forgotten as they go: no list of them is built.
        output.retain(|message| {
            let kept = keep(index, message);
            index += 1;
            if !kept && !message.is_reply {
                forget_digest(event_hashes, event_digest(*event_hash_key, &message.bytes));
            }
            kept
        });
    }

    fn forget_event(&mut self, message: &OutputMessage) {
        if !message.is_reply {
            let digest = self.event_digest(&message.bytes);
            forget_digest(&mut self.event_hashes, digest);
        }
    }

    fn event_digest(&self, bytes: &[u8]) -> u64 {
        event_digest(self.event_hash_key, bytes)
    }

    /// Whether an identical watch event is queued and not yet started (C suppresses duplicates).
    pub fn has_unsent_event(&self, bytes: &[u8]) -> bool {
        // Only a digest hit (a real duplicate, or a rare collision) pays for the scan.
        let digest = self.event_digest(bytes);
        if self
            .event_hashes
            .find(digest, |(existing, _)| *existing == digest)
            .is_none()
        {
            return false;
        }
        self.output.iter().enumerate().any(|(index, message)| {
            !message.is_reply
                && message.bytes == bytes
                && (index > 0 || self.output_sent_bytes == 0)
        })
    }
}

/// The digest of a queued event in [`Connection::event_hashes`].
fn event_digest(key: [u64; 2], bytes: &[u8]) -> u64 {
    let mut hasher = SipHasher::new(key);
    hasher.write(bytes);
    hasher.finish()
}

/// One event with `digest` left the queue.
fn forget_digest(event_hashes: &mut HashTable<(u64, u32)>, digest: u64) {
    if let Ok(mut entry) = event_hashes.find_entry(digest, |(existing, _)| *existing == digest) {
        let count = &mut entry.get_mut().1;
        *count = count.saturating_sub(1);
        if *count == 0 {
            entry.remove();
        }
    }
    release_if_empty(event_hashes);
}

/// Frees the index's table once no event is queued: a `HashTable` keeps its room when
/// emptied, and an idle connection (most of them) would hold a table for nothing (84 bytes
/// each, 84 KiB over 1000 guests). The next queued event allocates one again, fallibly.
fn release_if_empty(event_hashes: &mut HashTable<(u64, u32)>) {
    if event_hashes.is_empty() && event_hashes.capacity() > 0 {
        *event_hashes = HashTable::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode_message;

    #[test]
    fn the_event_index_is_freed_once_no_event_is_queued() {
        let mut connection = Connection::new(ConnectionKind::Domain, DomainId(1), [1, 2]);
        let event = |bytes: &[u8]| OutputMessage {
            bytes: bytes.to_vec(),
            is_reply: false,
            queued_at_milliseconds: 0,
            caused_by: None,
        };
        connection.push_output(event(b"a")).unwrap();
        connection.push_output(event(b"a")).unwrap();
        connection.push_output(event(b"b")).unwrap();
        assert!(connection.has_unsent_event(b"a"));
        connection.pop_output();
        connection.pop_output();
        assert!(connection.event_hashes.capacity() > 0);
        connection.pop_output();
        assert_eq!(connection.event_hashes.capacity(), 0);
        connection.push_output(event(b"c")).unwrap();
        connection.retain_output(|_, _| false);
        assert_eq!(connection.event_hashes.capacity(), 0);
        connection.push_output(event(b"d")).unwrap();
        connection.clear_output();
        assert_eq!(connection.event_hashes.capacity(), 0);
        assert!(!connection.has_unsent_event(b"d"));
    }

    #[test]
    fn frames_requests_split_anywhere() {
        let mut connection = Connection::new(ConnectionKind::Socket, DomainId(0), [1, 2]);
        let message = encode_message(2, 9, 0, b"/a\0");
        let mut requests = 0;
        for byte in &message {
            let framed = connection.frame(core::slice::from_ref(byte)).unwrap();
            assert_eq!(framed.consumed_bytes, 1);
            if let Some((header, payload)) = framed.request {
                assert_eq!(header.request_id, 9);
                assert_eq!(payload.unwrap(), b"/a\0");
                requests += 1;
            }
        }
        assert_eq!(requests, 1);
    }

    #[test]
    fn two_requests_in_one_buffer_are_taken_one_at_a_time() {
        let mut connection = Connection::new(ConnectionKind::Socket, DomainId(0), [1, 2]);
        let mut bytes = encode_message(2, 1, 0, b"/a\0");
        bytes.extend(encode_message(2, 2, 0, b""));
        let first = connection.frame(&bytes).unwrap();
        assert_eq!(first.consumed_bytes, 19);
        let second = connection.frame(&bytes[19..]).unwrap();
        assert_eq!(second.request.unwrap().0.request_id, 2);
    }

    #[test]
    fn oversized_payload_is_a_protocol_failure() {
        let mut connection = Connection::new(ConnectionKind::Domain, DomainId(1), [1, 2]);
        let header = MessageHeader {
            message_type: 2,
            request_id: 0,
            transaction_id: 0,
            payload_length_bytes: 4097,
        };
        assert_eq!(
            connection.frame(&header.to_bytes()).err(),
            Some(ConnectionFailure::Protocol)
        );
    }

    #[test]
    fn transaction_ids_skip_zero_and_ids_in_use() {
        let mut connection = Connection::new(ConnectionKind::Socket, DomainId(0), [1, 2]);
        let first = connection.allocate_transaction_id().unwrap();
        assert_eq!(first, 1);
        connection
            .transactions
            .try_insert(2, Transaction::default())
            .unwrap();
        assert_eq!(connection.allocate_transaction_id().unwrap(), 3);
    }
}
