//! The xenstore wire protocol (`xen/include/public/io/xs_wire.h`): message header, types, payload strings.
//!
//! One framing serves the Unix socket and the shared ring (`docs/misc/xenstore.txt`,
//! "Communication with xenstore"): a 16-byte little-endian header followed by at most
//! [`PAYLOAD_MAX_BYTES`] payload bytes.

use crate::{StoreError, StoreResult};
use alloc::vec::Vec;

/// Size of `struct xsd_sockmsg`.
pub const HEADER_SIZE_BYTES: usize = 16;
/// `XENSTORE_PAYLOAD_MAX`: the largest payload in either direction.
pub const PAYLOAD_MAX_BYTES: usize = 4096;
/// `XENSTORE_ABS_PATH_MAX`.
pub const ABSOLUTE_PATH_MAX_BYTES: usize = 3072;

/// `enum xsd_sockmsg_type` (numbers 0–26; 20 was `XS_RESTRICT`, removed in Xen 4.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    Control = 0,
    Directory = 1,
    Read = 2,
    GetPermissions = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Remove = 13,
    SetPermissions = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    Resume = 18,
    SetTarget = 19,
    ResetWatches = 21,
    DirectoryPart = 22,
    GetFeature = 23,
    SetFeature = 24,
    GetQuota = 25,
    SetQuota = 26,
}

impl MessageType {
    /// The type with wire number `number`, if there is one.
    pub fn from_number(number: u32) -> Option<MessageType> {
        use MessageType::*;
        Some(match number {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPermissions,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Remove,
            14 => SetPermissions,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            23 => GetFeature,
            24 => SetFeature,
            25 => GetQuota,
            26 => SetQuota,
            _ => return None,
        })
    }

    /// The wire number.
    pub const fn number(self) -> u32 {
        self as u32
    }

    /// The name used in `xs_wire.h` without its `XS_` prefix (for the access trace).
    pub const fn name(self) -> &'static str {
        use MessageType::*;
        match self {
            Control => "CONTROL",
            Directory => "DIRECTORY",
            Read => "READ",
            GetPermissions => "GET_PERMS",
            Watch => "WATCH",
            Unwatch => "UNWATCH",
            TransactionStart => "TRANSACTION_START",
            TransactionEnd => "TRANSACTION_END",
            Introduce => "INTRODUCE",
            Release => "RELEASE",
            GetDomainPath => "GET_DOMAIN_PATH",
            Write => "WRITE",
            Mkdir => "MKDIR",
            Remove => "RM",
            SetPermissions => "SET_PERMS",
            WatchEvent => "WATCH_EVENT",
            Error => "ERROR",
            IsDomainIntroduced => "IS_DOMAIN_INTRODUCED",
            Resume => "RESUME",
            SetTarget => "SET_TARGET",
            ResetWatches => "RESET_WATCHES",
            DirectoryPart => "DIRECTORY_PART",
            GetFeature => "GET_FEATURE",
            SetFeature => "SET_FEATURE",
            GetQuota => "GET_QUOTA",
            SetQuota => "SET_QUOTA",
        }
    }
}

/// `struct xsd_sockmsg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MessageHeader {
    /// `type`: a [`MessageType`] number (kept raw: unknown numbers are answered `ENOSYS`).
    pub message_type: u32,
    /// `req_id`: echoed in the reply.
    pub request_id: u32,
    /// `tx_id`: the transaction, 0 for none.
    pub transaction_id: u32,
    /// `len`: payload bytes that follow.
    pub payload_length_bytes: u32,
}

impl MessageHeader {
    /// Decodes a header from its 16 bytes.
    pub fn from_bytes(bytes: &[u8; HEADER_SIZE_BYTES]) -> MessageHeader {
        let word = |index: usize| {
            let mut value = [0u8; 4];
            for (offset, byte) in value.iter_mut().enumerate() {
                *byte = bytes.get(index * 4 + offset).copied().unwrap_or(0);
            }
            u32::from_le_bytes(value)
        };
        MessageHeader {
            message_type: word(0),
            request_id: word(1),
            transaction_id: word(2),
            payload_length_bytes: word(3),
        }
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE_BYTES] {
        let mut bytes = [0u8; HEADER_SIZE_BYTES];
        let words = [
            self.message_type,
            self.request_id,
            self.transaction_id,
            self.payload_length_bytes,
        ];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }
}

/// A whole message: header plus payload, ready to send; `ENOMEM` when it cannot be allocated.
pub fn try_encode_message(
    message_type: u32,
    request_id: u32,
    transaction_id: u32,
    payload: &[u8],
) -> StoreResult<Vec<u8>> {
    let mut bytes = Vec::new();
    encode_into(
        &mut bytes,
        message_type,
        request_id,
        transaction_id,
        payload,
    )?;
    Ok(bytes)
}

/// Replaces `bytes` by a whole message, reusing its room (a reply's room is reserved before
/// the request runs); `ENOMEM`, with `bytes` and its room unchanged, when it cannot grow.
pub fn encode_into(
    bytes: &mut Vec<u8>,
    message_type: u32,
    request_id: u32,
    transaction_id: u32,
    payload: &[u8],
) -> StoreResult<()> {
    let header = MessageHeader {
        message_type,
        request_id,
        transaction_id,
        payload_length_bytes: u32::try_from(payload.len()).unwrap_or(u32::MAX),
    };
    let length = HEADER_SIZE_BYTES + payload.len();
    if let Some(more) = length.checked_sub(bytes.len()) {
        bytes
            .try_reserve_exact(more)
            .map_err(|_| StoreError::OutOfMemory)?;
    }
    bytes.clear();
    bytes.extend_from_slice(&header.to_bytes());
    bytes.extend_from_slice(payload);
    Ok(())
}

/// A whole message for a client of the store (tests, benchmarks, the kernel's self-tests),
/// which may abort when memory runs out; the engine itself uses [`try_encode_message`].
pub fn encode_message(
    message_type: u32,
    request_id: u32,
    transaction_id: u32,
    payload: &[u8],
) -> Vec<u8> {
    let header = MessageHeader {
        message_type,
        request_id,
        transaction_id,
        payload_length_bytes: u32::try_from(payload.len()).unwrap_or(u32::MAX),
    };
    let mut bytes = Vec::with_capacity(HEADER_SIZE_BYTES + payload.len());
    bytes.extend_from_slice(&header.to_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Splits a payload into its NUL-separated strings as C xenstored's `get_strings()` does:
/// a final string without a NUL still counts, a final NUL does not start another string.
/// `ENOMEM` when the list cannot be allocated.
pub fn split_strings(payload: &[u8]) -> StoreResult<Vec<&[u8]>> {
    let body = payload.strip_suffix(b"\0").unwrap_or(payload);
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    let count = body.iter().filter(|byte| **byte == 0).count() + 1;
    let mut strings = Vec::new();
    strings
        .try_reserve_exact(count)
        .map_err(|_| StoreError::OutOfMemory)?;
    strings.extend(body.split(|byte| *byte == 0));
    Ok(strings)
}

/// The NUL-terminated strings of a payload, as C xenstored's `get_strings()` counts them:
/// bytes after the last NUL belong to no string and are ignored (`a\0b` is one string,
/// `a` none). The requests of Xen 4.21 and 4.22 (`GET_FEATURE` … `SET_QUOTA`) are parsed
/// this way, so that every payload gets C's answer (docs/protocol.md, "Features and quotas").
pub fn terminated_strings(payload: &[u8]) -> StoreResult<Vec<&[u8]>> {
    let count = payload.iter().filter(|byte| **byte == 0).count();
    let mut strings = Vec::new();
    strings
        .try_reserve_exact(count)
        .map_err(|_| StoreError::OutOfMemory)?;
    strings.extend(payload.split(|byte| *byte == 0).take(count));
    Ok(strings)
}

/// The single argument of a one-argument request: the payload must be exactly `arg\0`
/// (C xenstored's `onearg()`); anything else is `None` (answered `EINVAL`).
pub fn single_string(payload: &[u8]) -> Option<&[u8]> {
    let body = payload.strip_suffix(b"\0")?;
    if body.contains(&0) {
        return None;
    }
    Some(body)
}

/// Parses a decimal unsigned number the way the wire uses them (no sign, no spaces).
pub fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for byte in text {
        let digit = byte.checked_sub(b'0').filter(|digit| *digit <= 9)?;
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

/// A message type as the raw number a header carries, for clients that also send numbers
/// which name no type (tests of `ENOSYS`).
impl From<MessageType> for u32 {
    fn from(message_type: MessageType) -> u32 {
        message_type.number()
    }
}

/// A payload of NUL-terminated strings (`path\0token\0`), the inverse of [`split_strings`],
/// for a client of the store that may abort when memory runs out (as [`encode_message`]).
pub fn join_strings<S: AsRef<[u8]>>(parts: &[S]) -> Vec<u8> {
    let mut payload = Vec::new();
    for part in parts {
        payload.extend_from_slice(part.as_ref());
        payload.push(0);
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_little_endian() {
        let header = MessageHeader {
            message_type: 2,
            request_id: 0x0102_0304,
            transaction_id: 7,
            payload_length_bytes: 4096,
        };
        let bytes = header.to_bytes();
        assert_eq!(&bytes[0..4], &[2, 0, 0, 0]);
        assert_eq!(&bytes[4..8], &[4, 3, 2, 1]);
        assert_eq!(MessageHeader::from_bytes(&bytes), header);
    }

    #[test]
    fn every_type_number_round_trips_and_unknown_numbers_are_none() {
        for number in 0..=26 {
            match MessageType::from_number(number) {
                Some(message_type) => assert_eq!(message_type.number(), number),
                None => assert_eq!(number, 20),
            }
        }
        assert_eq!(MessageType::from_number(27), None);
        assert_eq!(MessageType::from_number(65535), None);
    }

    #[test]
    fn strings_split_like_c_get_strings() {
        assert!(split_strings(b"").unwrap().is_empty());
        assert_eq!(split_strings(b"a\0").unwrap(), [b"a".as_slice()]);
        assert_eq!(split_strings(b"a\0b").unwrap(), [b"a".as_slice(), b"b"]);
        assert_eq!(split_strings(b"a\0\0").unwrap(), [b"a".as_slice(), b""]);
        assert_eq!(split_strings(b"\0").unwrap(), [b"".as_slice()]);
    }

    #[test]
    fn single_string_requires_exactly_one_trailing_nul() {
        assert_eq!(single_string(b"/a\0"), Some(b"/a".as_slice()));
        assert_eq!(single_string(b"/a"), None);
        assert_eq!(single_string(b"/a\0b\0"), None);
        assert_eq!(single_string(b""), None);
    }

    #[test]
    fn decimal_parsing_rejects_signs_and_overflow() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"65535"), Some(65535));
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"99999999999999999999999"), None);
    }

    #[test]
    fn joined_strings_split_back() {
        assert_eq!(join_strings(&["x", "y"]), b"x\0y\0");
        assert_eq!(join_strings::<&str>(&[]), b"");
        let joined = join_strings(&[b"a".as_slice(), b""]);
        assert_eq!(split_strings(&joined).unwrap(), [b"a".as_slice(), b""]);
        assert_eq!(u32::from(MessageType::DirectoryPart), 22);
    }
}
