//! One client of the store: request framing, the output queue, its watches and transactions.

use crate::engine::ConnectionFailure;
use crate::transaction::Transaction;
use crate::wire::{HEADER_SIZE_BYTES, MessageHeader, PAYLOAD_MAX_BYTES};
use crate::{DomainId, StoreError, StoreResult};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

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
}

/// Result of feeding bytes: how many were taken and the complete request, if one is ready.
pub struct Framed {
    /// Bytes consumed from the input.
    pub consumed_bytes: usize,
    /// A complete request.
    pub request: Option<(MessageHeader, Vec<u8>)>,
}

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
    /// Messages to send; the first may be partly sent.
    pub output: VecDeque<OutputMessage>,
    /// Bytes of the first message already sent.
    pub output_sent_bytes: usize,
    /// Open transactions by id.
    pub transactions: BTreeMap<u32, Transaction>,
    next_transaction_id: u32,
    /// The watches this connection holds: (watched path, token).
    pub watches: Vec<(String, Vec<u8>)>,
    /// Set once the connection broke the protocol.
    pub failure: Option<ConnectionFailure>,
}

impl Connection {
    /// A fresh connection.
    pub fn new(kind: ConnectionKind, domain: DomainId) -> Connection {
        Connection {
            kind,
            domain,
            header_bytes: [0; HEADER_SIZE_BYTES],
            header_filled_bytes: 0,
            header: None,
            payload: Vec::new(),
            output: VecDeque::new(),
            output_sent_bytes: 0,
            transactions: BTreeMap::new(),
            next_transaction_id: 1,
            watches: Vec::new(),
            failure: None,
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
                self.payload.clear();
                header
            }
        };
        let wanted = header.payload_length_bytes as usize - self.payload.len();
        let rest = bytes.get(consumed_bytes..).unwrap_or(&[]);
        let available = rest.len().min(wanted);
        self.payload
            .extend_from_slice(rest.get(..available).unwrap_or(&[]));
        consumed_bytes += available;
        if self.payload.len() < header.payload_length_bytes as usize {
            return Ok(Framed {
                consumed_bytes,
                request: None,
            });
        }
        self.header = None;
        self.header_filled_bytes = 0;
        let payload = core::mem::take(&mut self.payload);
        Ok(Framed {
            consumed_bytes,
            request: Some((header, payload)),
        })
    }

    /// Drops a partly received request (reconnection, reset).
    pub fn reset_input(&mut self) {
        self.header = None;
        self.header_filled_bytes = 0;
        self.payload = Vec::new();
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

    /// Whether an identical watch event is queued and not yet started (C suppresses duplicates).
    pub fn has_unsent_event(&self, bytes: &[u8]) -> bool {
        self.output.iter().enumerate().any(|(index, message)| {
            !message.is_reply
                && message.bytes == bytes
                && (index > 0 || self.output_sent_bytes == 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode_message;

    #[test]
    fn frames_requests_split_anywhere() {
        let mut connection = Connection::new(ConnectionKind::Socket, DomainId(0));
        let message = encode_message(2, 9, 0, b"/a\0");
        let mut requests = 0;
        for byte in &message {
            let framed = connection.frame(core::slice::from_ref(byte)).unwrap();
            assert_eq!(framed.consumed_bytes, 1);
            if let Some((header, payload)) = framed.request {
                assert_eq!(header.request_id, 9);
                assert_eq!(payload, b"/a\0");
                requests += 1;
            }
        }
        assert_eq!(requests, 1);
    }

    #[test]
    fn two_requests_in_one_buffer_are_taken_one_at_a_time() {
        let mut connection = Connection::new(ConnectionKind::Socket, DomainId(0));
        let mut bytes = encode_message(2, 1, 0, b"/a\0");
        bytes.extend(encode_message(2, 2, 0, b""));
        let first = connection.frame(&bytes).unwrap();
        assert_eq!(first.consumed_bytes, 19);
        let second = connection.frame(&bytes[19..]).unwrap();
        assert_eq!(second.request.unwrap().0.request_id, 2);
    }

    #[test]
    fn oversized_payload_is_a_protocol_failure() {
        let mut connection = Connection::new(ConnectionKind::Domain, DomainId(1));
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
        let mut connection = Connection::new(ConnectionKind::Socket, DomainId(0));
        let first = connection.allocate_transaction_id().unwrap();
        assert_eq!(first, 1);
        connection.transactions.insert(2, Transaction::default());
        assert_eq!(connection.allocate_transaction_id().unwrap(), 3);
    }
}
