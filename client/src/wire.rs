//! `xs_wire.h` framing for clients: message type numbers, the 16-byte header, and a stream framer.
//!
//! The server side of the protocol lives in the engine; this module is what the guest tool and
//! the integration tests need to speak to a store (reference §1.1: header `type, req_id, tx_id,
//! len`, four little-endian `u32`, then at most 4096 payload bytes).

/// Size of `struct xsd_sockmsg`.
pub const HEADER_SIZE_BYTES: usize = 16;
/// `XENSTORE_PAYLOAD_MAX`.
pub const PAYLOAD_MAX_BYTES: usize = 4096;

/// Message type numbers (`enum xsd_sockmsg_type`) with their `xs_wire.h` names.
pub const MESSAGE_TYPES: [(u32, &str); 26] = [
    (0, "CONTROL"),
    (1, "DIRECTORY"),
    (2, "READ"),
    (3, "GET_PERMS"),
    (4, "WATCH"),
    (5, "UNWATCH"),
    (6, "TRANSACTION_START"),
    (7, "TRANSACTION_END"),
    (8, "INTRODUCE"),
    (9, "RELEASE"),
    (10, "GET_DOMAIN_PATH"),
    (11, "WRITE"),
    (12, "MKDIR"),
    (13, "RM"),
    (14, "SET_PERMS"),
    (15, "WATCH_EVENT"),
    (16, "ERROR"),
    (17, "IS_DOMAIN_INTRODUCED"),
    (18, "RESUME"),
    (19, "SET_TARGET"),
    (21, "RESET_WATCHES"),
    (22, "DIRECTORY_PART"),
    (23, "GET_FEATURE"),
    (24, "SET_FEATURE"),
    (25, "GET_QUOTA"),
    (26, "SET_QUOTA"),
];

/// Message type numbers used by name in this crate.
pub mod message_type {
    pub const CONTROL: u32 = 0;
    pub const DIRECTORY: u32 = 1;
    pub const READ: u32 = 2;
    pub const GET_PERMS: u32 = 3;
    pub const WATCH: u32 = 4;
    pub const UNWATCH: u32 = 5;
    pub const TRANSACTION_START: u32 = 6;
    pub const TRANSACTION_END: u32 = 7;
    pub const INTRODUCE: u32 = 8;
    pub const RELEASE: u32 = 9;
    pub const GET_DOMAIN_PATH: u32 = 10;
    pub const WRITE: u32 = 11;
    pub const MKDIR: u32 = 12;
    pub const RM: u32 = 13;
    pub const SET_PERMS: u32 = 14;
    pub const WATCH_EVENT: u32 = 15;
    pub const ERROR: u32 = 16;
    pub const IS_DOMAIN_INTRODUCED: u32 = 17;
    pub const RESUME: u32 = 18;
    pub const SET_TARGET: u32 = 19;
    pub const RESET_WATCHES: u32 = 21;
    pub const DIRECTORY_PART: u32 = 22;
}

/// The number of a message type given by name (`READ`, `xs_read`, `XS_READ`, any case) or number.
pub fn message_type_from_name(name: &str) -> Option<u32> {
    if let Ok(number) = name.parse::<u32>() {
        return Some(number);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("XS_").unwrap_or(&upper);
    MESSAGE_TYPES
        .iter()
        .find(|(_, candidate)| *candidate == bare)
        .map(|(number, _)| *number)
}

/// The `xs_wire.h` name of a message type, or its number as text.
pub fn message_type_name(number: u32) -> String {
    MESSAGE_TYPES
        .iter()
        .find(|(candidate, _)| *candidate == number)
        .map_or_else(|| number.to_string(), |(_, name)| (*name).to_string())
}

/// `struct xsd_sockmsg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub message_type: u32,
    pub request_id: u32,
    pub transaction_id: u32,
    pub length: u32,
}

impl Header {
    /// The header's wire bytes.
    pub fn encode(&self) -> [u8; HEADER_SIZE_BYTES] {
        let mut bytes = [0u8; HEADER_SIZE_BYTES];
        for (chunk, value) in bytes.chunks_exact_mut(4).zip([
            self.message_type,
            self.request_id,
            self.transaction_id,
            self.length,
        ]) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    /// Decodes the first 16 bytes of `bytes`, if there are that many.
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        let word = |index: usize| -> Option<u32> {
            let chunk = bytes.get(index * 4..index * 4 + 4)?;
            Some(u32::from_le_bytes(chunk.try_into().ok()?))
        };
        Some(Header {
            message_type: word(0)?,
            request_id: word(1)?,
            transaction_id: word(2)?,
            length: word(3)?,
        })
    }
}

/// One framed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub payload: Vec<u8>,
}

impl Message {
    /// A message with `header.length` set from the payload.
    pub fn new(
        message_type: u32,
        request_id: u32,
        transaction_id: u32,
        payload: Vec<u8>,
    ) -> Message {
        Message {
            header: Header {
                message_type,
                request_id,
                transaction_id,
                length: payload.len() as u32,
            },
            payload,
        }
    }

    /// Header and payload as one byte string.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_SIZE_BYTES + self.payload.len());
        bytes.extend_from_slice(&self.header.encode());
        bytes.extend_from_slice(&self.payload);
        bytes
    }

    /// The payload split at NULs, without the empty piece after a final NUL.
    pub fn strings(&self) -> Vec<String> {
        split_strings(&self.payload)
    }
}

/// Builds a payload of NUL-terminated strings (`path|token|`).
pub fn join_strings<S: AsRef<[u8]>>(parts: &[S]) -> Vec<u8> {
    let mut payload = Vec::new();
    for part in parts {
        payload.extend_from_slice(part.as_ref());
        payload.push(0);
    }
    payload
}

/// Splits a payload at NULs; a final NUL does not produce an empty last string.
pub fn split_strings(payload: &[u8]) -> Vec<String> {
    let trimmed = payload.strip_suffix(b"\0").unwrap_or(payload);
    if trimmed.is_empty() && payload.is_empty() {
        return Vec::new();
    }
    trimmed
        .split(|byte| *byte == 0)
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

/// Reassembles messages from a byte stream that arrives in arbitrary pieces.
#[derive(Default)]
pub struct Framer {
    buffer: Vec<u8>,
}

impl Framer {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, if one has arrived.
    ///
    /// A header announcing more than [`PAYLOAD_MAX_BYTES`] is returned as is (with the
    /// payload it announced) so that a client can report the server's misbehaviour.
    pub fn next_message(&mut self) -> Option<Message> {
        let header = Header::decode(&self.buffer)?;
        let total = HEADER_SIZE_BYTES.checked_add(header.length as usize)?;
        if self.buffer.len() < total {
            return None;
        }
        let payload = self.buffer.get(HEADER_SIZE_BYTES..total)?.to_vec();
        self.buffer.drain(..total);
        Some(Message { header, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_is_little_endian() {
        let header = Header {
            message_type: 2,
            request_id: 0x0102_0304,
            transaction_id: 7,
            length: 5,
        };
        let bytes = header.encode();
        assert_eq!(&bytes[4..8], &[4, 3, 2, 1]);
        assert_eq!(Header::decode(&bytes), Some(header));
    }

    #[test]
    fn framer_handles_split_and_joined_messages() {
        let first = Message::new(message_type::READ, 1, 0, b"a\0".to_vec()).to_bytes();
        let second = Message::new(message_type::WRITE, 2, 0, b"b\0c".to_vec()).to_bytes();
        let mut stream = first.clone();
        stream.extend_from_slice(&second);
        let mut framer = Framer::default();
        framer.push(&stream[..10]);
        assert_eq!(framer.next_message(), None);
        framer.push(&stream[10..]);
        assert_eq!(
            framer
                .next_message()
                .map(|message| message.header.request_id),
            Some(1)
        );
        assert_eq!(
            framer.next_message().map(|message| message.payload),
            Some(b"b\0c".to_vec())
        );
        assert_eq!(framer.next_message(), None);
    }

    #[test]
    fn names_and_strings() {
        assert_eq!(message_type_from_name("xs_read"), Some(2));
        assert_eq!(message_type_from_name("GET_PERMS"), Some(3));
        assert_eq!(message_type_from_name("99"), Some(99));
        assert_eq!(message_type_from_name("bogus"), None);
        assert_eq!(message_type_name(22), "DIRECTORY_PART");
        assert_eq!(split_strings(b"a\0b\0"), vec!["a", "b"]);
        assert_eq!(split_strings(b""), Vec::<String>::new());
        assert_eq!(split_strings(b"\0"), vec![""]);
        assert_eq!(join_strings(&["x", "y"]), b"x\0y\0");
    }
}
