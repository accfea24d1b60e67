//! Store errors and their wire names: the one place where an error becomes an `XS_ERROR` payload.
//!
//! The names and their order follow `xsd_errors[]` in `xen/include/public/io/xs_wire.h`.
//! An error reply carries the name followed by a NUL (`docs/misc/xenstore.txt`, "Error replies").

/// Every error the engine can answer a request with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreError {
    /// `EINVAL`: malformed arguments, bad path, bad permission string.
    Invalid,
    /// `EACCES`: the caller lacks the permission (or the request is privileged).
    AccessDenied,
    /// `EEXIST`: the watch (path, token) is already registered.
    AlreadyExists,
    /// `EISDIR`: kept for completeness of the wire table.
    IsDirectory,
    /// `ENOENT`: no such node, transaction, watch or domain.
    NoEntry,
    /// `ENOMEM`: out of memory, memory quota exceeded, or a failed transaction.
    OutOfMemory,
    /// `ENOSPC`: a count quota (nodes, watches, transactions, ...) is exhausted.
    NoSpace,
    /// `EIO`: storing failed.
    InputOutput,
    /// `ENOTEMPTY`: kept for completeness of the wire table.
    NotEmpty,
    /// `ENOSYS`: unknown or unsupported message type.
    NotImplemented,
    /// `EROFS`: kept for completeness of the wire table.
    ReadOnly,
    /// `EBUSY`: nested transaction, or a feature change after introduction.
    Busy,
    /// `EAGAIN`: a transaction conflicted and must be retried.
    Again,
    /// `EISCONN`: kept for completeness of the wire table.
    IsConnected,
    /// `E2BIG`: the reply (or a value) is larger than the protocol allows.
    TooBig,
    /// `EPERM`: an unprivileged owner tried to change a node's owner.
    NotPermitted,
}

impl StoreError {
    /// Every variant, in the order of `xsd_errors[]`.
    pub const ALL: [StoreError; 16] = [
        StoreError::Invalid,
        StoreError::AccessDenied,
        StoreError::AlreadyExists,
        StoreError::IsDirectory,
        StoreError::NoEntry,
        StoreError::OutOfMemory,
        StoreError::NoSpace,
        StoreError::InputOutput,
        StoreError::NotEmpty,
        StoreError::NotImplemented,
        StoreError::ReadOnly,
        StoreError::Busy,
        StoreError::Again,
        StoreError::IsConnected,
        StoreError::TooBig,
        StoreError::NotPermitted,
    ];

    /// The errno name sent on the wire (without the trailing NUL).
    pub const fn wire_name(self) -> &'static str {
        match self {
            StoreError::Invalid => "EINVAL",
            StoreError::AccessDenied => "EACCES",
            StoreError::AlreadyExists => "EEXIST",
            StoreError::IsDirectory => "EISDIR",
            StoreError::NoEntry => "ENOENT",
            StoreError::OutOfMemory => "ENOMEM",
            StoreError::NoSpace => "ENOSPC",
            StoreError::InputOutput => "EIO",
            StoreError::NotEmpty => "ENOTEMPTY",
            StoreError::NotImplemented => "ENOSYS",
            StoreError::ReadOnly => "EROFS",
            StoreError::Busy => "EBUSY",
            StoreError::Again => "EAGAIN",
            StoreError::IsConnected => "EISCONN",
            StoreError::TooBig => "E2BIG",
            StoreError::NotPermitted => "EPERM",
        }
    }

    /// The error named by a wire payload (with or without its NUL), as clients decode it.
    pub fn from_wire_name(name: &[u8]) -> Option<StoreError> {
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        StoreError::ALL
            .into_iter()
            .find(|error| error.wire_name().as_bytes() == name)
    }
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter.write_str(self.wire_name())
    }
}

/// Results of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Why a migration stream (`docs/migration-stream.md`) could not be written or read. Reading
/// checks everything: any malformed stream is one of these, never a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// The stream ends inside its header or a record, or before its `END` record.
    Truncated,
    /// The first eight bytes are not `xenstore`.
    BadIdent,
    /// A version other than 1 and 2.
    UnsupportedVersion(u32),
    /// Flags other than the endianness bit.
    BadFlags(u32),
    /// A record type this version does not define.
    UnknownRecord(u32),
    /// A record names something no earlier record made (its connection, transaction or
    /// parent node).
    OutOfOrder(&'static str),
    /// A second record for something that exists once (a connection id, a domain's ring, a
    /// node, a watch, a transaction, the global records).
    Duplicate(&'static str),
    /// A record's fields contradict its length or each other, or hold an invalid value.
    Malformed(&'static str),
    /// Bytes after the `END` record.
    TrailingBytes,
    /// Writing: a value does not fit its field (the format's widths).
    TooLarge(&'static str),
    /// No memory to build the stream or the restored store.
    OutOfMemory,
}

impl From<StoreError> for StateError {
    /// A store operation refused while restoring: memory, or a record it finds invalid.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::OutOfMemory => StateError::OutOfMemory,
            _ => StateError::Malformed("refused by the store"),
        }
    }
}

impl core::fmt::Display for StateError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StateError::Truncated => formatter.write_str("the stream is truncated"),
            StateError::BadIdent => formatter.write_str("not a xenstore stream"),
            StateError::UnsupportedVersion(version) => {
                write!(formatter, "unsupported stream version {version}")
            }
            StateError::BadFlags(flags) => write!(formatter, "unsupported flags {flags:#x}"),
            StateError::UnknownRecord(kind) => write!(formatter, "unknown record type {kind:#x}"),
            StateError::OutOfOrder(what) => write!(formatter, "record out of order: {what}"),
            StateError::Duplicate(what) => write!(formatter, "duplicate record: {what}"),
            StateError::Malformed(what) => write!(formatter, "malformed record: {what}"),
            StateError::TrailingBytes => formatter.write_str("bytes after the END record"),
            StateError::TooLarge(what) => write!(formatter, "too large for the format: {what}"),
            StateError::OutOfMemory => formatter.write_str("out of memory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_round_trips_through_its_wire_name() {
        for error in StoreError::ALL {
            assert_eq!(
                StoreError::from_wire_name(error.wire_name().as_bytes()),
                Some(error)
            );
            let mut with_nul = std::vec::Vec::from(error.wire_name().as_bytes());
            with_nul.push(0);
            assert_eq!(StoreError::from_wire_name(&with_nul), Some(error));
        }
        assert_eq!(StoreError::from_wire_name(b"EQUOTA"), None);
    }

    #[test]
    fn wire_names_are_unique() {
        for (index, error) in StoreError::ALL.iter().enumerate() {
            for other in &StoreError::ALL[index + 1..] {
                assert_ne!(error.wire_name(), other.wire_name());
            }
        }
    }
}
