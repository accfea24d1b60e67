//! Whole messages as a client handles them: a header with its payload, a stream framer, payload strings as text.
//!
//! The wire format itself — message type numbers and names, the 16-byte header, how payload
//! strings are joined and split — is the engine's `xenstore_engine::wire`
//! (`engine/src/wire.rs`), the one table the store and its clients share. This module adds
//! what only a client needs: owned messages, reassembly of a byte stream that arrives in
//! arbitrary pieces, and type lookup by name for `xenstore-guest raw`.

use xenstore_engine::wire::{HEADER_SIZE_BYTES, MessageHeader, MessageType, split_strings};

/// One framed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: MessageHeader,
    pub payload: Vec<u8>,
}

impl Message {
    /// A message with `header.payload_length_bytes` set from the payload. The type is a
    /// [`MessageType`] or any raw number.
    pub fn new(
        message_type: impl Into<u32>,
        request_id: u32,
        transaction_id: u32,
        payload: Vec<u8>,
    ) -> Message {
        Message {
            header: MessageHeader {
                message_type: message_type.into(),
                request_id,
                transaction_id,
                payload_length_bytes: payload.len() as u32,
            },
            payload,
        }
    }

    /// Whether the header carries `message_type`.
    pub fn is(&self, message_type: MessageType) -> bool {
        self.header.message_type == message_type.number()
    }

    /// Header and payload as one byte string (the header as it is, even if its length
    /// disagrees with the payload).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_SIZE_BYTES + self.payload.len());
        bytes.extend_from_slice(&self.header.to_bytes());
        bytes.extend_from_slice(&self.payload);
        bytes
    }

    /// The payload's strings as text (see [`payload_strings`]).
    pub fn strings(&self) -> Vec<String> {
        payload_strings(&self.payload)
    }
}

/// A payload's NUL-separated strings as text (invalid UTF-8 replaced), split as the store
/// splits them (`xenstore_engine::wire::split_strings`): a final NUL does not start another
/// string, an empty payload has none.
pub fn payload_strings(payload: &[u8]) -> Vec<String> {
    split_strings(payload)
        .expect("the list of a payload's strings fits in memory")
        .into_iter()
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

/// The header at the start of `bytes`, if there are 16 bytes.
pub fn header_from_prefix(bytes: &[u8]) -> Option<MessageHeader> {
    let header: &[u8; HEADER_SIZE_BYTES] = bytes.get(..HEADER_SIZE_BYTES)?.try_into().ok()?;
    Some(MessageHeader::from_bytes(header))
}

/// The number of a message type given by name (`READ`, `xs_read`, `XS_READ`, any case, as
/// [`MessageType::name`] spells it) or by number (any number, known or not).
pub fn message_type_from_name(name: &str) -> Option<u32> {
    if let Ok(number) = name.parse::<u32>() {
        return Some(number);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("XS_").unwrap_or(&upper);
    // Every type number fits in a byte (`enum xsd_sockmsg_type` ends at 26).
    (0..=u32::from(u8::MAX))
        .filter_map(MessageType::from_number)
        .find(|message_type| message_type.name() == bare)
        .map(MessageType::number)
}

/// The `xs_wire.h` name of a message type without its `XS_` prefix, or its number as text.
pub fn message_type_name(number: u32) -> String {
    MessageType::from_number(number).map_or_else(
        || number.to_string(),
        |message_type| message_type.name().to_string(),
    )
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
    /// A header announcing more than `xenstore_engine::wire::PAYLOAD_MAX_BYTES` is returned
    /// as is (with the payload it announced) so that a client can report the server's
    /// misbehaviour.
    pub fn next_message(&mut self) -> Option<Message> {
        let header = header_from_prefix(&self.buffer)?;
        let total = HEADER_SIZE_BYTES.checked_add(header.payload_length_bytes as usize)?;
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
    use xenstore_engine::wire::join_strings;

    #[test]
    fn framer_handles_split_and_joined_messages() {
        let first = Message::new(MessageType::Read, 1, 0, b"a\0".to_vec()).to_bytes();
        let second = Message::new(MessageType::Write, 2, 0, b"b\0c".to_vec()).to_bytes();
        let mut stream = first.clone();
        stream.extend_from_slice(&second);
        let mut framer = Framer::default();
        framer.push(&stream[..10]);
        assert_eq!(framer.next_message(), None);
        framer.push(&stream[10..]);
        let message = framer.next_message().unwrap();
        assert_eq!(message.header.request_id, 1);
        assert!(message.is(MessageType::Read));
        assert_eq!(
            framer.next_message().map(|message| message.payload),
            Some(b"b\0c".to_vec())
        );
        assert_eq!(framer.next_message(), None);
        assert_eq!(header_from_prefix(&first[..15]), None);
    }

    #[test]
    fn names_and_strings() {
        assert_eq!(message_type_from_name("xs_read"), Some(2));
        assert_eq!(message_type_from_name("GET_PERMS"), Some(3));
        assert_eq!(message_type_from_name("set_quota"), Some(26));
        assert_eq!(message_type_from_name("99"), Some(99));
        assert_eq!(message_type_from_name("bogus"), None);
        assert_eq!(message_type_name(22), "DIRECTORY_PART");
        assert_eq!(message_type_name(20), "20");
        assert_eq!(payload_strings(b"a\0b\0"), vec!["a", "b"]);
        assert_eq!(payload_strings(b""), Vec::<String>::new());
        assert_eq!(payload_strings(b"\0"), vec![""]);
        assert_eq!(payload_strings(&join_strings(&["x", "y"])), vec!["x", "y"]);
    }
}
