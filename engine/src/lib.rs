//! The xenstore engine: every answer the store gives, as pure logic with no hardware access.
//!
//! Front ends (the PVH kernel, the Linux daemon) move bytes between their transports and an
//! [`Engine`]; the engine frames requests (`xs_wire.h`), checks permissions and quotas, runs
//! transactions, queues replies and watch events, and asks its [`Platform`] to map or unmap a
//! guest's ring when the toolstack introduces or releases a domain.
//!
//! Design principles:
//! - No `unsafe`, no panics reachable from guest input: every `unwrap`, `expect` and slice
//!   index on guest-controlled data is replaced by a checked operation that yields a
//!   [`StoreError`].
//! - No recursion over guest-shaped trees: walks use explicit work lists.
//! - No infallible allocation on a path a request can drive: growth is reserved first
//!   ([`fallible`]) and a refusal answers `ENOMEM`, leaving the store and its accounting as
//!   they were (the stub's panic handler would otherwise end the host's xenstore). Room a
//!   request will need is reserved before its first change, or on the privileged path that
//!   bounds it (per-connection sets when a connection is added).
//! - Behaviour follows C xenstored (4.22 semantics where versions differ); every deviation is
//!   commented where it is made.
#![no_std]
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    // Further ways to stop the store from guest input (docs/hostile-guests.md,
    // "Invariants", 3 and 7).
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented,
    clippy::get_unwrap,
    clippy::string_slice,
    clippy::exit,
    // A guest-sized length silently cut to a narrower type is how ring and header
    // arithmetic goes wrong (XSA-38, XSA-420): convert with `try_from`.
    clippy::cast_possible_truncation,
    clippy::mem_forget
)]
// `clippy::arithmetic_side_effects` is not denied: it flags every `+` (82 sites, nearly all
// on bounded counters); overflow is instead caught by the fuzz targets and property tests,
// which run with debug assertions (overflow checks on).
// Tests may panic: that is how they fail.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::cast_possible_truncation
    )
)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod connection;
mod control;
pub mod domain;
pub mod domain_state;
mod engine;
pub mod error;
mod events;
pub mod fallible;
pub mod live_update;
pub mod memory;
pub mod migration;
pub mod operations;
pub mod options;
pub mod path;
pub mod permissions;
pub mod quota;
mod request;
mod requests;
pub mod ring;
pub mod ring_host;
pub mod ring_service;
pub mod siphash;
pub mod store;
pub mod testing;
pub mod transaction;
pub mod watch;
pub mod wire;
pub mod write_rate;

pub use engine::{ACCESS_LOG_TARGET, Config, ConnectionFailure, Engine};
pub use error::{StateError, StoreError, StoreResult};

/// A Xen domain id (`domid_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u16);

impl DomainId {
    /// `DOMID_SELF` (`xen.h`): "the calling domain".
    pub const SELF: DomainId = DomainId(0x7FF0);
    /// `DOMID_ANY` (`xen.h`): in a permission entry, "every domain" (xenstore 4.22).
    pub const ANY: DomainId = DomainId(0x7FF5);
    /// `DOMID_INVALID` (`xen.h`).
    pub const INVALID: DomainId = DomainId(0x7FF4);
    /// The first id that does not name a real domain (`DOMID_FIRST_RESERVED`).
    pub const FIRST_RESERVED: u16 = 0x7FF0;
}

impl core::fmt::Display for DomainId {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// Identifies one connection (a socket client or a domain's ring) inside the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u32);

/// What the engine needs from the machine it runs on.
///
/// The PVH kernel implements it with grant mappings and event channels; the Linux daemon
/// with shared-memory files and FIFOs. Methods are called from inside request processing.
pub trait Platform {
    /// Maps `domain`'s xenstore ring and binds its event channel (`XS_INTRODUCE`).
    ///
    /// `ring_frame` is the frame number the toolstack passed (C xenstored ignores it and maps
    /// grant reference 1); `remote_port` is the guest's unbound event-channel port. After
    /// success the front end must feed the ring's bytes to the domain's connection, which
    /// [`Engine::domain_connection`] returns.
    fn connect_domain(
        &mut self,
        domain: DomainId,
        ring_frame: u64,
        remote_port: u32,
    ) -> StoreResult<()>;

    /// Unmaps `domain`'s ring and closes its event channel (release or death).
    fn disconnect_domain(&mut self, domain: DomainId);

    /// Whether `domain` currently exists on the host (used for permission entries naming it).
    fn domain_exists(&mut self, domain: DomainId) -> bool;

    /// A monotonic clock in milliseconds (watch-event expiry, write-rate limiting).
    fn now_milliseconds(&mut self) -> u64;

    /// The memory the store can still use, read before each request (the reserves of
    /// [`memory`]); `None` when the front end sets no limit (the Linux daemon by default).
    fn memory_status(&mut self) -> Option<memory::MemoryStatus> {
        None
    }
}
