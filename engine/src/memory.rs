//! The store's own memory: how much is left, and which requests may still use it.
//!
//! Quotas bound each domain, but nothing bounds their sum by the memory the store has: a
//! few guests inside their quotas can together ask for more than the stub domain's heap.
//! The front end therefore tells the engine, before each request, how much memory it can
//! still hand out (including what the stub domain may still grow into, see
//! `docs/memory.md`), and the engine keeps two reserves below that:
//!
//! - under [`GUEST_RESERVE_BYTES`] left, requests from unprivileged domains that would make
//!   the store hold more get `ENOMEM` and watch events queued for them are dropped, so the
//!   toolstack keeps working (`xl create`, `xl destroy`) while guests hog the store;
//! - under [`PRIVILEGED_RESERVE_BYTES`] left, the privileged domain's growing requests get
//!   `ENOMEM` too. What remains is for the requests that free memory (removals, releases,
//!   transaction aborts, unwatches), for error replies and for reads, whose replies are at
//!   most one 4 KiB message. Those are never refused by a reserve, but a removal needs
//!   memory in proportion to the subtree it removes (its list of nodes and, inside a
//!   transaction, a copy of each node), so removing a large subtree when almost nothing is
//!   left can still answer `ENOMEM` (the store stays as it was).
//!
//! Mini-OS's C stub answers `ENOMEM` when talloc fails; it has no reserve for dom0.

use crate::wire::MessageType;

/// Below this many bytes left, unprivileged domains cannot make the store grow.
pub const GUEST_RESERVE_BYTES: u64 = 1024 * 1024;

/// Below this many bytes left, no domain can make the store grow. It is far larger than any
/// single request allocates (a node of at most 4 KiB of value and 3 KiB of path, its
/// accounting and watch events), so a request let through normally finishes; should the
/// heap run out all the same, its allocations fail soft (`ENOMEM`, see `fallible.rs`).
pub const PRIVILEGED_RESERVE_BYTES: u64 = 256 * 1024;

/// The front end's view of the memory the store runs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStatus {
    /// Bytes the heap holds now.
    pub heap_size_bytes: u64,
    /// Bytes of the heap in live allocations.
    pub heap_used_bytes: u64,
    /// Bytes the heap can hand out now without growing.
    pub heap_free_bytes: u64,
    /// The most the heap can hold once grown as far as the domain may grow.
    pub heap_limit_bytes: u64,
}

impl MemoryStatus {
    /// What the store can still allocate: free heap now plus what growth would add.
    pub fn available_bytes(&self) -> u64 {
        self.heap_limit_bytes
            .saturating_sub(self.heap_size_bytes)
            .saturating_add(self.heap_free_bytes)
    }

    /// Whether a request of `message_type` from a (privileged or not) caller may go on.
    pub fn admits(&self, message_type: MessageType, payload: &[u8], privileged: bool) -> bool {
        if !grows_store(message_type, payload) {
            return true;
        }
        let reserve_bytes = if privileged {
            PRIVILEGED_RESERVE_BYTES
        } else {
            GUEST_RESERVE_BYTES
        };
        self.available_bytes() >= reserve_bytes
    }

    /// Whether a watch event may be queued for an unprivileged domain.
    pub fn admits_guest_event(&self) -> bool {
        self.available_bytes() >= GUEST_RESERVE_BYTES
    }
}

/// Whether a request can make the store hold more memory once it is answered: new or larger
/// nodes, permissions, watches, transactions, domains. Reads only allocate their reply.
fn grows_store(message_type: MessageType, payload: &[u8]) -> bool {
    use MessageType::*;
    match message_type {
        Write | Mkdir | SetPermissions | Watch | TransactionStart | Introduce | SetTarget
        | SetFeature | SetQuota | Control => true,
        // Committing applies the transaction's nodes to the tree; aborting ("F") frees them.
        TransactionEnd => payload.first() != Some(&b'F'),
        Directory | Read | GetPermissions | Unwatch | Release | GetDomainPath | Remove
        | WatchEvent | Error | IsDomainIntroduced | Resume | ResetWatches | DirectoryPart
        | GetFeature | GetQuota => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_with_available(available_bytes: u64) -> MemoryStatus {
        MemoryStatus {
            heap_size_bytes: 4 << 20,
            heap_used_bytes: (4 << 20) - available_bytes,
            heap_free_bytes: available_bytes,
            heap_limit_bytes: 4 << 20,
        }
    }

    #[test]
    fn growth_room_counts_as_available() {
        let status = MemoryStatus {
            heap_size_bytes: 6 << 20,
            heap_used_bytes: 6 << 20,
            heap_free_bytes: 0,
            heap_limit_bytes: 62 << 20,
        };
        assert_eq!(status.available_bytes(), 56 << 20);
        assert!(status.admits(MessageType::Write, b"/a\0b", false));
    }

    #[test]
    fn guests_stop_growing_before_the_privileged_domain() {
        let tight = status_with_available(GUEST_RESERVE_BYTES - 1);
        assert!(!tight.admits(MessageType::Write, b"/a\0b", false));
        assert!(tight.admits(MessageType::Write, b"/a\0b", true));
        assert!(tight.admits(MessageType::Read, b"/a\0", false));
        assert!(tight.admits(MessageType::Remove, b"/a\0", false));
        assert!(tight.admits(MessageType::TransactionEnd, b"F\0", false));
        assert!(!tight.admits(MessageType::TransactionEnd, b"T\0", false));
        assert!(!tight.admits_guest_event());

        let critical = status_with_available(PRIVILEGED_RESERVE_BYTES - 1);
        assert!(!critical.admits(MessageType::Write, b"/a\0b", true));
        assert!(critical.admits(MessageType::Release, b"5\0", true));
    }
}
