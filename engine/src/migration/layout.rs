//! The stream's byte layout: record types, field values, the writer's buffer and the checked cursor that reads records.
//!
//! See `docs/migration-stream.md`, "Layout". Every read is bounds-checked and every length
//! taken from the stream is checked against the bytes that are really there.

use crate::error::StateError;
use crate::fallible;
use alloc::vec::Vec;

/// The stream's first eight bytes.
pub const STREAM_IDENT: &[u8; 8] = b"xenstore";
/// The version we write (and the newest we read).
pub const STREAM_VERSION: u32 = 2;
/// Header: ident, version, flags.
pub(super) const HEADER_SIZE_BYTES: usize = 16;
/// The flags' endianness bit: records are big-endian.
pub(super) const FLAG_BIG_ENDIAN: u32 = 1;
/// Records start, and end, on multiples of this (counted from the stream's start).
pub(super) const ALIGNMENT_BYTES: usize = 8;

/// Record types.
pub(super) mod record {
    pub const END: u32 = 0;
    pub const GLOBAL_DATA: u32 = 1;
    pub const CONNECTION_DATA: u32 = 2;
    pub const WATCH_DATA: u32 = 3;
    pub const TRANSACTION_DATA: u32 = 4;
    pub const NODE_DATA: u32 = 5;
    pub const GLOBAL_QUOTA_DATA: u32 = 6;
    pub const DOMAIN_DATA: u32 = 7;
    /// Version 2 and later.
    pub const WATCH_DATA_EXTENDED: u32 = 8;
}

/// `conn-type` values.
pub(super) const CONNECTION_TYPE_RING: u16 = 0;
pub(super) const CONNECTION_TYPE_SOCKET: u16 = 1;
/// `fields` bit: a unique id follows the data.
pub(super) const CONNECTION_FIELD_UNIQUE_ID: u16 = 1;
/// `depth` meaning "unlimited".
pub(super) const WATCH_DEPTH_UNLIMITED: u16 = 0xffff;
/// One permission specifier.
pub(super) const PERMISSION_BYTES: usize = 4;
/// Permission flag: the entry is stale and ignored by permission checks.
pub(super) const PERMISSION_FLAG_IGNORED: u8 = 1;

/// `offset_bytes` rounded up to the alignment.
pub(super) fn aligned(offset_bytes: usize) -> usize {
    offset_bytes.div_ceil(ALIGNMENT_BYTES) * ALIGNMENT_BYTES
}

/// A little-endian stream being written; every growth is fallible.
#[derive(Default)]
pub(super) struct StreamWriter {
    pub bytes: Vec<u8>,
    /// Where the current record's length field is.
    record_length_at: usize,
}

impl StreamWriter {
    pub fn new() -> StreamWriter {
        StreamWriter {
            bytes: Vec::new(),
            record_length_at: 0,
        }
    }

    pub fn put(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        fallible::extend(&mut self.bytes, bytes).map_err(|_| StateError::OutOfMemory)
    }

    pub fn u16(&mut self, value: u16) -> Result<(), StateError> {
        self.put(&value.to_le_bytes())
    }

    pub fn u32(&mut self, value: u32) -> Result<(), StateError> {
        self.put(&value.to_le_bytes())
    }

    pub fn i32(&mut self, value: i32) -> Result<(), StateError> {
        self.put(&value.to_le_bytes())
    }

    pub fn u64(&mut self, value: u64) -> Result<(), StateError> {
        self.put(&value.to_le_bytes())
    }

    /// Zeros up to the next multiple of the alignment.
    pub fn pad(&mut self) -> Result<(), StateError> {
        let zeros = aligned(self.bytes.len()) - self.bytes.len();
        let run = [0u8; ALIGNMENT_BYTES];
        self.put(run.get(..zeros).unwrap_or(&[]))
    }

    /// Starts a record: its type and a length filled in by [`StreamWriter::end_record`].
    pub fn begin_record(&mut self, kind: u32) -> Result<(), StateError> {
        self.u32(kind)?;
        self.record_length_at = self.bytes.len();
        self.u32(0)
    }

    /// Pads the record and writes its length (padding included, as C writes it).
    pub fn end_record(&mut self) -> Result<(), StateError> {
        self.pad()?;
        let body_start = self.record_length_at + 4;
        let length = u32::try_from(self.bytes.len() - body_start)
            .map_err(|_| StateError::TooLarge("record length"))?;
        if let Some(field) = self
            .bytes
            .get_mut(self.record_length_at..self.record_length_at + 4)
        {
            field.copy_from_slice(&length.to_le_bytes());
        }
        Ok(())
    }
}

/// Reads fields from a slice in the stream's byte order; running past the end is
/// [`StateError::Truncated`] for the stream and `Malformed` inside a record.
#[derive(Clone, Copy)]
pub(super) struct Cursor<'a> {
    bytes: &'a [u8],
    offset: usize,
    big_endian: bool,
    /// The error for a read past the end.
    short: StateError,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8], big_endian: bool, short: StateError) -> Cursor<'a> {
        Cursor {
            bytes,
            offset: 0,
            big_endian,
            short,
        }
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.offset)
    }

    pub fn take(&mut self, length: usize) -> Result<&'a [u8], StateError> {
        let end = self.offset.checked_add(length).ok_or(self.short)?;
        let taken = self.bytes.get(self.offset..end).ok_or(self.short)?;
        self.offset = end;
        Ok(taken)
    }

    /// Moves to `offset` (not before the current one).
    pub fn skip_to(&mut self, offset: usize) -> Result<(), StateError> {
        let length = offset.checked_sub(self.offset).ok_or(self.short)?;
        self.take(length).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    pub fn u8(&mut self) -> Result<u8, StateError> {
        let [byte] = self.array::<1>()?;
        Ok(byte)
    }

    pub fn u16(&mut self) -> Result<u16, StateError> {
        let bytes = self.array()?;
        Ok(if self.big_endian {
            u16::from_be_bytes(bytes)
        } else {
            u16::from_le_bytes(bytes)
        })
    }

    pub fn u32(&mut self) -> Result<u32, StateError> {
        let bytes = self.array()?;
        Ok(if self.big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    }

    pub fn i32(&mut self) -> Result<i32, StateError> {
        let bytes = self.array()?;
        Ok(if self.big_endian {
            i32::from_be_bytes(bytes)
        } else {
            i32::from_le_bytes(bytes)
        })
    }

    pub fn u64(&mut self) -> Result<u64, StateError> {
        let bytes = self.array()?;
        Ok(if self.big_endian {
            u64::from_be_bytes(bytes)
        } else {
            u64::from_le_bytes(bytes)
        })
    }
}

/// The `count` NUL-terminated names that follow a quota record's values; a name that does
/// not end inside the record is malformed.
pub(super) fn quota_names(mut rest: &[u8], count: usize) -> Result<Vec<&[u8]>, StateError> {
    let mut names = Vec::new();
    names
        .try_reserve(count.min(rest.len()))
        .map_err(|_| StateError::OutOfMemory)?;
    for _ in 0..count {
        let end = rest
            .iter()
            .position(|byte| *byte == 0)
            .ok_or(StateError::Malformed("quota name"))?;
        let (name, after) = rest.split_at(end);
        names.push(name);
        rest = after.get(1..).unwrap_or(&[]);
    }
    Ok(names)
}
