//! The engine's front door: connections in, replies and watch events out.

use crate::{ConnectionId, DomainId, Platform};

/// Why a connection stopped being served (`xenstore-ring.txt` "error" values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionFailure {
    /// `XENSTORE_ERROR_COMM` (1): the event channel is unusable.
    Communication,
    /// `XENSTORE_ERROR_RINGIDX` (2): inconsistent producer/consumer indices.
    RingIndex,
    /// `XENSTORE_ERROR_PROTO` (3): a message header announced more than 4096 payload bytes.
    Protocol,
}

/// Start-up configuration: quotas and the options of C xenstored that shape behaviour.
#[derive(Clone, Debug)]
pub struct Config {
    /// The privileged (control) domain, `--priv-domid` (default 0).
    pub privileged_domain: DomainId,
    /// The domain the store runs in; socket connections act as this domain (`--master-domid`).
    pub store_domain: DomainId,
    /// `-K`/`--keep-orphans`: give a dead domain's nodes to the privileged domain instead of deleting them.
    pub keep_orphans: bool,
    /// The limits every domain starts with.
    pub quotas: crate::quota::Quotas,
    /// How long a watch event queued for an unprivileged domain may wait before it is dropped
    /// (`-w watch-event=<seconds>`, default 20 s; 0 = never).
    pub watch_event_timeout_milliseconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            privileged_domain: DomainId(0),
            store_domain: DomainId(0),
            keep_orphans: false,
            quotas: crate::quota::Quotas::default(),
            watch_event_timeout_milliseconds: 20_000,
        }
    }
}

/// The xenstore engine.
pub struct Engine {
    _config: Config,
}

impl Engine {
    /// A store holding the initial tree (`/`, `/tool`, `/tool/xenstored`, the special nodes).
    pub fn new(config: Config) -> Engine {
        Engine { _config: config }
    }

    /// A new Unix-socket client; it acts as the store domain (privileged when that is the privileged domain).
    pub fn open_socket_connection(&mut self) -> ConnectionId {
        ConnectionId(0)
    }

    /// A connection for a domain whose ring the front end has already mapped (dom0 at stub start-up).
    pub fn open_domain_connection(&mut self, _platform: &mut dyn Platform, _domain: DomainId) -> ConnectionId {
        ConnectionId(0)
    }

    /// The client went away: its watches and transactions are dropped.
    pub fn close_connection(&mut self, _platform: &mut dyn Platform, _connection: ConnectionId) {}

    /// Feeds bytes received from a connection; returns how many were taken (the rest must be offered again later).
    pub fn receive(&mut self, _platform: &mut dyn Platform, _connection: ConnectionId, bytes: &[u8]) -> usize {
        bytes.len()
    }

    /// Whether the connection may send more requests now (outstanding-request and rate limits).
    pub fn wants_input(&self, _connection: ConnectionId) -> bool {
        true
    }

    /// The bytes waiting to be sent to the connection (possibly only part of the queue).
    pub fn output(&self, _connection: ConnectionId) -> &[u8] {
        &[]
    }

    /// Marks `sent_bytes` of [`Engine::output`] as delivered.
    pub fn consume_output(&mut self, _connection: ConnectionId, _sent_bytes: usize) {}

    /// Set once the connection has broken the protocol; the front end stops serving it.
    pub fn failure(&self, _connection: ConnectionId) -> Option<ConnectionFailure> {
        None
    }

    /// Marks a domain connection failed (ring index abuse detected by the front end).
    pub fn fail_connection(&mut self, _connection: ConnectionId, _failure: ConnectionFailure) {}

    /// The connection serving an introduced domain's ring.
    pub fn domain_connection(&self, _domain: DomainId) -> Option<ConnectionId> {
        None
    }

    /// The domains currently introduced.
    pub fn introduced_domains(&self) -> alloc::vec::Vec<DomainId> {
        alloc::vec::Vec::new()
    }

    /// The hypervisor reports the domain shut down (fires `@releaseDomain` once until `XS_RESUME`).
    pub fn domain_shutdown(&mut self, _platform: &mut dyn Platform, _domain: DomainId) {}

    /// The domain is dead: release it as `XS_RELEASE` would.
    pub fn domain_died(&mut self, _platform: &mut dyn Platform, _domain: DomainId) {}

    /// Time-driven work: expiring queued watch events, refilling write-rate credit.
    pub fn tick(&mut self, _platform: &mut dyn Platform) {}
}
