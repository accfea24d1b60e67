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
