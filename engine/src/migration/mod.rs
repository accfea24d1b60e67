//! The whole store's state as a migration stream in C xenstored's format (version 2, or 1 for a live update that asks for it): the writer, the reader, and what a front end supplies and gets back.
//!
//! The format, what C writes and what we write and accept: `docs/migration-stream.md`.
//! [`Engine::write_state`](crate::Engine::write_state) writes the stream of a live update:
//! the global record, the global quotas, each connection with its watches and open
//! transactions, every node, each domain's quotas and features, the end. The engine does not
//! know what only the front end knows (event-channel ports, unique domain ids, socket
//! descriptors, input it read from a ring and has not handed over yet): a [`FrontEndState`]
//! answers for it. [`Engine::from_state`](crate::Engine::from_state) checks the whole stream
//! and rebuilds an engine, returning per connection what the front end needs to reattach it
//! ([`RestoredConnection`]).

mod layout;
mod reader;
mod writer;

use crate::{ConnectionId, DomainId};
use alloc::vec::Vec;

pub use layout::{STREAM_IDENT, STREAM_VERSION};

/// The `GLOBAL_DATA` record: the file descriptors a C daemon keeps across `exec()`.
/// Front ends without them (the stub, our daemon) write -1 for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalData {
    /// The listening socket's descriptor, -1 when there is none.
    pub socket_fd: i32,
    /// The event-channel driver's descriptor, -1 when there is none.
    pub event_channel_fd: i32,
}

impl Default for GlobalData {
    fn default() -> Self {
        GlobalData {
            socket_fd: -1,
            event_channel_fd: -1,
        }
    }
}

/// What only the front end knows about its connections, asked for while the stream is
/// written. Every method has the answer of a front end that knows nothing.
pub trait FrontEndState {
    /// Bytes read from the connection that the engine has not taken yet (the ring host's
    /// pending input): they follow the engine's partly received request in the stream.
    fn unread_input(&self, _connection: ConnectionId) -> &[u8] {
        &[]
    }

    /// The local event-channel port bound to `domain`'s ring.
    fn event_channel_port(&self, _domain: DomainId) -> u32 {
        0
    }

    /// The unique id the hypervisor gave `domain` (Xen 4.21+ `XEN_DOMCTL_get_domain_state`);
    /// `None` leaves the field out.
    fn unique_id(&self, _domain: DomainId) -> Option<u64> {
        None
    }

    /// A socket connection's descriptor (-1: none that survives).
    fn socket_fd(&self, _connection: ConnectionId) -> i32 {
        -1
    }

    /// The global record's descriptors.
    fn global(&self) -> GlobalData {
        GlobalData::default()
    }
}

/// A front end that knows nothing beyond the engine (tests, fuzzing).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFrontEndState;

impl FrontEndState for NoFrontEndState {}

/// How a restored connection reaches the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoredEndpoint {
    /// A domain's shared ring: the front end maps it again (grant reference 1 on Xen) and
    /// binds or reuses the event channel, keeping the ring's indices.
    Ring {
        /// The domain that owns the ring.
        domain: DomainId,
        /// The event-channel port the stream recorded (the old instance's local port).
        event_channel_port: u32,
        /// The domain's unique id, when the stream has it: a domain with the same id but
        /// another unique id is a new domain, and the old one is dead.
        unique_id: Option<u64>,
    },
    /// A Unix-socket client.
    Socket {
        /// The descriptor the stream recorded (-1: none). A front end that cannot take
        /// the descriptor over closes the connection.
        socket_fd: i32,
    },
}

/// One connection of a restored engine, for the front end to reattach.
#[derive(Debug, PartialEq, Eq)]
pub struct RestoredConnection {
    /// The connection's id in the restored engine.
    pub connection: ConnectionId,
    /// Its ring or socket.
    pub endpoint: RestoredEndpoint,
    /// Bytes read from the client before the state was saved and not yet processed: the
    /// front end offers them to the engine before anything it reads afterwards (for a ring
    /// host, its pending input).
    pub unread_input: Vec<u8>,
}

/// What [`Engine::from_state`](crate::Engine::from_state) returns besides the engine.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RestoredState {
    /// The stream's version (1 or 2).
    pub version: u32,
    /// The global record, when the stream has one.
    pub global: Option<GlobalData>,
    /// Every connection, in stream order.
    pub connections: Vec<RestoredConnection>,
}
