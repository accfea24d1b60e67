//! The engine's front door: connections in, replies and watch events out, domain lifecycle.
//!
//! A request is run by `requests/mod.rs`: parsed once into a typed request (`request.rs`),
//! then handled by the module of its family under `requests/`; the watch events it causes
//! are built and queued by `events.rs`.
//!
//! Requests of one connection are processed strictly in order, one at a time, as C xenstored
//! does (`core.c:process_message()`); the reply is queued before any watch event the
//! request caused, including the initial event of `XS_WATCH`.

use crate::connection::{Connection, ConnectionKind};
use crate::domain::{Domains, feature};
use crate::fallible::{self, SortedMap, SortedSet};
use crate::live_update::{self, LiveUpdateSupport};
use crate::memory::MemoryStatus;
use crate::operations::{self, AccountingDeltas, Caller, Change, GlobalAccess, NodeAccess};
use crate::path::{INTRODUCE_DOMAIN, RELEASE_DOMAIN};
use crate::permissions::{Access, Permission, Permissions};
use crate::quota::{QuotaKind, Quotas};
use crate::store::{Node, Tree};
use crate::watch::WatchIndex;
use crate::write_rate::{self, WriteCredit};
use crate::{ConnectionId, DomainId, Platform, StoreResult};
use alloc::borrow::Cow;
use alloc::vec::Vec;

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

impl ConnectionFailure {
    /// The value for the ring's `error` field.
    pub const fn ring_error_code(self) -> u32 {
        match self {
            ConnectionFailure::Communication => 1,
            ConnectionFailure::RingIndex => 2,
            ConnectionFailure::Protocol => 3,
        }
    }
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
    pub quotas: Quotas,
    /// How long a watch event queued for an unprivileged domain may wait before it is dropped
    /// (`-w watch-event=<seconds>`, default 20 s; 0 = never).
    pub watch_event_timeout_milliseconds: u64,
    /// The secret key of the node index's SipHash. Front ends draw it at random at start-up
    /// so that guests cannot compute colliding paths; the default is fixed (for tests).
    pub hash_key: [u64; 2],
    /// Whether the front end can replace itself through `xenstore-control live-update`
    /// (`live_update.rs`; default: it cannot, as a C xenstored built without it).
    pub live_update: LiveUpdateSupport,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            privileged_domain: DomainId(0),
            store_domain: DomainId(0),
            keep_orphans: false,
            quotas: Quotas::default(),
            watch_event_timeout_milliseconds: 20_000,
            hash_key: [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210],
            live_update: LiveUpdateSupport::None,
        }
    }
}

/// The `log` target of the access trace (one line per request and per reply or event).
pub const ACCESS_LOG_TARGET: &str = "xenstore::access";

/// The xenstore engine.
pub struct Engine {
    pub(crate) config: Config,
    pub(crate) tree: Tree,
    pub(crate) domains: Domains,
    /// By id (ids grow, so a new connection goes at the end): a map whose growth can be
    /// refused, so that `XS_INTRODUCE` answers `ENOMEM` rather than ending the store.
    pub(crate) connections: SortedMap<ConnectionId, Connection>,
    next_connection_id: u32,
    pub(crate) watches: WatchIndex,
    pub(crate) pending_changes: Vec<Change>,
    pub(crate) pending_special: Vec<(&'static str, DomainId)>,
    /// Watch events (whole messages) for one connection, queued after the reply.
    pub(crate) pending_direct_events: Vec<(ConnectionId, Vec<u8>)>,
    pub(crate) now_milliseconds: u64,
    /// The platform's memory figures, read before each request (`None`: no limit).
    pub(crate) memory_status: Option<MemoryStatus>,
    /// Whether the access trace is written (`xenstore-control log on|off`).
    pub(crate) trace_enabled: bool,
    /// The reserve of write credit that lends to unprivileged domains in debt.
    global_write_credit: WriteCredit,
    /// Transactions open on all connections (write-rate limiting applies only then).
    pub(crate) open_transactions: usize,
    /// Connections that got output since the front end last asked. Its room is reserved
    /// for every connection when one is added, so queueing output does not grow it.
    pub(crate) output_ready: SortedSet<ConnectionId>,
    /// Unprivileged domains' connections that were queued a watch event (which may expire)
    /// and may still hold it: the only connections [`Engine::tick`] needs to visit. Room
    /// reserved like [`Engine::output_ready`]'s.
    pub(crate) event_holders: SortedSet<ConnectionId>,
    /// The live-update session, if any (`live_update.rs`).
    pub(crate) live_update: Option<live_update::Session>,
    /// Set by a request whose reply comes later (`live-update -s`): none is queued now.
    pub(crate) reply_withheld: bool,
}

/// A reply's payload: a constant (`OK`, `T`, `F`) needs no allocation, so a request that
/// changed the store can always say so.
pub(crate) type Reply = Cow<'static, [u8]>;

/// The `OK` reply of requests that answer nothing else.
pub(crate) fn ok_reply() -> StoreResult<Reply> {
    Ok(Reply::Borrowed(b"OK\0"))
}

/// A payload as the access trace shows it: NULs as spaces, other unprintable bytes as dots,
/// cut after 256 bytes. Written straight to the formatter, so tracing allocates nothing.
pub(crate) struct Printable<'a>(pub(crate) &'a [u8]);

impl core::fmt::Display for Printable<'_> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use core::fmt::Write;
        let shown = self.0.get(..256).unwrap_or(self.0);
        for byte in shown {
            formatter.write_char(match byte {
                0 => ' ',
                0x20..=0x7e => char::from(*byte),
                _ => '.',
            })?;
        }
        if shown.len() < self.0.len() {
            formatter.write_str("...")?;
        }
        Ok(())
    }
}

impl Engine {
    /// A store holding the initial tree of C xenstored 4.22 (`core.c:setup_structure()`):
    /// `/`, `/tool`, `/tool/xenstored`, and the special nodes `@introduceDomain` (privileged
    /// domain only) and `@releaseDomain` (readable by every domain).
    pub fn new(config: Config) -> Engine {
        let privileged = config.privileged_domain;
        let hash_key = config.hash_key;
        let mut tree = Tree::new(privileged, hash_key);
        let mut engine = Engine::bare(config);
        let owned = Permissions::owned_by(privileged);
        let mut root = Node::empty(owned.clone());
        let _ = root.add_child("tool");
        let mut tool = Node::empty(owned.clone());
        let _ = tool.add_child("xenstored");
        let mut release_permissions = owned.clone();
        // Start-up: nothing to answer if memory is already short.
        let _ = release_permissions.push(Permission {
            domain: DomainId::ANY,
            access: Access::READ,
            ignored: false,
        });
        let mut global = GlobalAccess {
            tree: &mut tree,
            deltas: AccountingDeltas::new(),
        };
        // The root made by `Tree::new` is replaced below; count it first so the books balance.
        let root_before = global.tree.get("/").cloned();
        let _ =
            operations::account_replacement(&mut global.deltas, "/", None, root_before.as_ref());
        let initial = [
            ("/", root),
            ("/tool", tool),
            ("/tool/xenstored", Node::empty(owned.clone())),
            (INTRODUCE_DOMAIN, Node::empty(owned)),
            (RELEASE_DOMAIN, Node::empty(release_permissions)),
        ];
        for (node_path, node) in initial {
            // GlobalAccess::put cannot fail.
            let _ = global.put(node_path, node);
        }
        let deltas = core::mem::take(&mut global.deltas);
        engine.tree = tree;
        engine.apply_deltas(&deltas);
        engine
    }

    /// An engine whose tree holds only `/` (owned by the privileged domain), with the
    /// records of the privileged and the store domain and nothing else: what
    /// [`Engine::new`] builds the initial tree on, and what a restore from a migration
    /// stream starts from (`migration/reader.rs`). It allocates only fallibly: what found no
    /// memory is missing (the root, a record), which a restore checks.
    pub(crate) fn bare(config: Config) -> Engine {
        let privileged = config.privileged_domain;
        let hash_key = config.hash_key;
        let mut domains = Domains::default();
        // Start-up: two records in an empty map (nothing to answer if even that fails).
        let _ = domains.ensure(privileged, 0, &config.quotas);
        let _ = domains.ensure(config.store_domain, 0, &config.quotas);
        Engine {
            config,
            tree: Tree::new(privileged, hash_key),
            domains,
            connections: SortedMap::new(),
            next_connection_id: 1,
            watches: WatchIndex::new(hash_key),
            pending_changes: Vec::new(),
            pending_special: Vec::new(),
            pending_direct_events: Vec::new(),
            now_milliseconds: 0,
            memory_status: None,
            trace_enabled: true,
            global_write_credit: WriteCredit::empty(write_rate::GLOBAL_BURST_WRITES, 0),
            open_transactions: 0,
            output_ready: SortedSet::new(),
            event_holders: SortedSet::new(),
            live_update: None,
            reply_withheld: false,
        }
    }

    pub(crate) fn add_connection(
        &mut self,
        kind: ConnectionKind,
        domain: DomainId,
    ) -> ConnectionId {
        let id = ConnectionId(self.next_connection_id);
        self.next_connection_id = self.next_connection_id.wrapping_add(1).max(1);
        // Callers that can refuse reserved the room (`XS_INTRODUCE`); the front ends' own
        // connections (sockets, dom0's ring at start-up) are added only should it be there.
        if self
            .connections
            .try_insert(id, Connection::new(kind, domain, self.config.hash_key))
            .is_err()
        {
            log::warn!("connection {}: no memory to add it", id.0);
        }
        // These sets hold at most every connection: their room is reserved here, on the
        // privileged path that adds connections, so that queueing output never grows them.
        // Should it fail, they reserve per insert instead (and drop an event if refused).
        let total = self.connections.len();
        let _ = self.output_ready.try_reserve_total(total);
        let _ = self.event_holders.try_reserve_total(total);
        id
    }

    /// A new Unix-socket client; it acts as the store domain (privileged when that is the privileged domain).
    pub fn open_socket_connection(&mut self) -> ConnectionId {
        self.add_connection(ConnectionKind::Socket, self.config.store_domain)
    }

    /// A connection for a domain whose ring the front end has already mapped (dom0 at stub
    /// start-up): the domain counts as introduced without asking the platform.
    pub fn open_domain_connection(
        &mut self,
        platform: &mut dyn Platform,
        domain: DomainId,
    ) -> ConnectionId {
        self.now_milliseconds = platform.now_milliseconds();
        if let Some(existing) = self.domain_connection(domain) {
            return existing;
        }
        let id = self.add_connection(ConnectionKind::Domain, domain);
        let generation = self.tree.current_generation();
        match self.domains.ensure(domain, generation, &self.config.quotas) {
            Ok(record) => {
                record.connection = Some(id);
                record.shutdown_reported = false;
            }
            Err(_) => log::warn!("domain {domain}: no memory for its record"),
        }
        id
    }

    /// The client went away: its watches and transactions are dropped.
    pub fn close_connection(&mut self, _platform: &mut dyn Platform, connection: ConnectionId) {
        self.live_update_connection_gone(connection);
        self.drop_watches_and_transactions(connection);
        // Unsent output is charged to the domain: refund it, or the count drifts upwards.
        self.clear_output(connection);
        if let Some(closed) = self.connections.remove(&connection)
            && closed.kind == ConnectionKind::Domain
            && let Some(record) = self.domains.get_mut(closed.domain)
            && record.connection == Some(connection)
        {
            record.connection = None;
        }
    }

    /// Feeds bytes received from a connection; returns how many were taken. Bytes not taken
    /// must be offered again once [`Engine::wants_input`] is true.
    pub fn receive(
        &mut self,
        platform: &mut dyn Platform,
        connection: ConnectionId,
        bytes: &[u8],
    ) -> usize {
        self.now_milliseconds = platform.now_milliseconds();
        self.run_held_request(platform, connection);
        let mut consumed_bytes = 0;
        while consumed_bytes < bytes.len() && {
            self.prepare_input(connection);
            self.wants_input(connection)
        } {
            let Some(state) = self.connections.get_mut(&connection) else {
                return bytes.len();
            };
            let rest = bytes.get(consumed_bytes..).unwrap_or(&[]);
            match state.frame(rest) {
                Err(failure) => {
                    self.fail_connection(connection, failure);
                    return bytes.len();
                }
                Ok(framed) => {
                    consumed_bytes += framed.consumed_bytes;
                    if let Some((header, payload)) = framed.request {
                        let (header, payload) = match self.hold_back(connection, header, payload) {
                            None => continue,
                            Some(request) => request,
                        };
                        let payload = payload.as_deref().map_err(|error| *error);
                        self.process(platform, connection, header, payload);
                    } else if framed.consumed_bytes == 0 {
                        break;
                    }
                }
            }
        }
        if self
            .connections
            .get(&connection)
            .is_none_or(|state| state.failure.is_some())
        {
            return bytes.len();
        }
        consumed_bytes
    }

    /// Offers bytes kept from earlier reads to the engine while it wants input, and removes
    /// what it took from `pending_input` (the rest must wait for [`Engine::wants_input`]).
    pub fn receive_from(
        &mut self,
        platform: &mut dyn Platform,
        connection: ConnectionId,
        pending_input: &mut Vec<u8>,
    ) {
        self.run_held_request(platform, connection);
        while !pending_input.is_empty() && {
            self.prepare_input(connection);
            self.wants_input(connection)
        } {
            let taken = self
                .receive(platform, connection, pending_input)
                .min(pending_input.len());
            if taken == 0 {
                break;
            }
            pending_input.drain(..taken);
        }
    }

    /// The connections that got output queued since the last call, in order: front ends
    /// serve these (plus the rings that notified them) instead of visiting every connection.
    ///
    /// The set keeps room for every connection (queueing output must not grow it), so it
    /// is handed over and replaced only when it holds something: an idle poll allocates
    /// nothing.
    pub fn take_output_ready(&mut self) -> Vec<ConnectionId> {
        if self.output_ready.is_empty() {
            return Vec::new();
        }
        let room = self.connections.len();
        self.output_ready.take_with_capacity(room)
    }

    /// Whether output was queued since the last [`Engine::take_output_ready`].
    pub fn has_output_ready(&self) -> bool {
        !self.output_ready.is_empty()
    }

    /// Renews the room the next request's answer needs (see [`Engine::wants_input`]); front
    /// ends call it before asking whether a connection may send more. Nothing happens when
    /// memory is short.
    pub fn prepare_input(&mut self, connection: ConnectionId) {
        if let Some(state) = self.connections.get_mut(&connection)
            && !state.has_reply_room()
        {
            state.prepare_reply_room();
        }
    }

    /// Whether the connection may send more requests now (it is healthy and, if
    /// unprivileged, below its outstanding-request quota).
    pub fn wants_input(&self, connection: ConnectionId) -> bool {
        let Some(state) = self.connections.get(&connection) else {
            return false;
        };
        if state.failure.is_some() {
            return false;
        }
        // A request is taken only when its answer has room, so that no request is ever left
        // without a reply (a guest's xenbus would wait forever): with the heap exhausted, the
        // connection's requests wait, dom0's too, until [`Engine::prepare_input`] finds room.
        if !state.has_reply_room() {
            return false;
        }
        if state.domain == self.config.privileged_domain {
            return true;
        }
        let quotas = self.quotas_of(state.domain);
        if quotas.exceeded_by(QuotaKind::Outstanding, state.outstanding_requests() as u64) {
            return false;
        }
        // At the hard memory quota the domain's requests wait until its queued replies and
        // events drain (C `domain_can_read()`, `ACC_MEM`): the guest only stalls itself.
        let memory_bytes = self.domains.usage(state.domain).memory_bytes;
        if quotas.exceeded_by(QuotaKind::MemoryBytes, memory_bytes) {
            return false;
        }
        // Write-rate limiting applies to guests' rings, as in C (sockets are privileged).
        // Only the domain's own credit holds it back; the global reserve only lends
        // (`write_rate.rs`), so other guests' writing never stops this one being read.
        if state.kind == ConnectionKind::Domain {
            let now = self.now_milliseconds;
            return self
                .domains
                .get(state.domain)
                .is_none_or(|record| record.write_credit.allows_input(now));
        }
        true
    }

    /// Debits write credit for `writes` node writes by an unprivileged domain.
    ///
    /// As in C (`wrl_apply_debit_direct()`), nothing is debited while no transaction is open
    /// anywhere: the limit protects transactions from being starved by writers.
    pub(crate) fn debit_writes(&mut self, caller: &Caller, writes: i64) {
        if caller.privileged || writes <= 0 || self.open_transactions == 0 {
            return;
        }
        let now = self.now_milliseconds;
        if let Some(record) = self.domains.get_mut(caller.domain) {
            record.write_credit.debit(now, writes);
            self.global_write_credit
                .lend_to(&mut record.write_credit, now);
        }
    }

    /// Drops a connection's queued output and refunds its memory charge.
    pub(crate) fn clear_output(&mut self, connection: ConnectionId) {
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        // Every queued message is charged in full until it is completely sent
        // (`consume_output`), the partly sent first one included.
        let refund: u64 = state
            .output
            .iter()
            .map(|message| message.bytes.len() as u64)
            .sum();
        // The queue is taken out whole, so that its events' causes are settled afterwards
        // without a list of them.
        let dropped = core::mem::take(&mut state.output);
        state.clear_output();
        state.output_sent_bytes = 0;
        let domain = state.domain;
        if let Some(record) = self.domains.get_mut(domain) {
            record.usage.memory_bytes = record.usage.memory_bytes.saturating_sub(refund);
        }
        self.settle_caused_events(dropped.iter().filter_map(|message| message.caused_by));
    }

    /// The events caused by these connections left their queues (sent or dropped).
    fn settle_caused_events(&mut self, causes: impl IntoIterator<Item = ConnectionId>) {
        for cause in causes {
            if let Some(state) = self.connections.get_mut(&cause) {
                state.caused_events_pending = state.caused_events_pending.saturating_sub(1);
            }
        }
    }

    /// The bytes waiting to be sent to the connection (the rest of the first queued message).
    pub fn output(&self, connection: ConnectionId) -> &[u8] {
        self.connections
            .get(&connection)
            .and_then(|state| {
                state
                    .output
                    .front()
                    .and_then(|message| message.bytes.get(state.output_sent_bytes..))
            })
            .unwrap_or(&[])
    }

    /// Marks `sent_bytes` of [`Engine::output`] as delivered.
    pub fn consume_output(&mut self, connection: ConnectionId, sent_bytes: usize) {
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        state.output_sent_bytes += sent_bytes;
        let domain = state.domain;
        // Memory is given back here, so this is where the spare room for the next reply
        // is renewed (a spare buffer, and a queue slot beyond the next message).
        state.replenish_reply_room();
        let _ = state.reserve_output(2);
        // One message at a time, so that each sent event's cause is settled without a list.
        loop {
            let Some(state) = self.connections.get_mut(&connection) else {
                return;
            };
            let Some(front) = state.output.front() else {
                break;
            };
            if state.output_sent_bytes < front.bytes.len() {
                break;
            }
            state.output_sent_bytes -= front.bytes.len();
            let freed_bytes = front.bytes.len() as u64;
            let cause = state.pop_output().and_then(|message| message.caused_by);
            if let Some(record) = self.domains.get_mut(domain) {
                record.usage.memory_bytes = record.usage.memory_bytes.saturating_sub(freed_bytes);
            }
            self.settle_caused_events(cause);
        }
    }

    /// Set once the connection has broken the protocol; the front end stops serving it.
    pub fn failure(&self, connection: ConnectionId) -> Option<ConnectionFailure> {
        self.connections
            .get(&connection)
            .and_then(|state| state.failure)
    }

    /// Marks a connection failed: it is ignored from now on, its watches, transactions and
    /// queued output are dropped; a domain stays known until it dies (`ignore_connection()`).
    pub fn fail_connection(&mut self, connection: ConnectionId, failure: ConnectionFailure) {
        self.drop_watches_and_transactions(connection);
        if let Some(state) = self.connections.get_mut(&connection) {
            log::warn!(
                "connection {} ({:?} {}) failed: {failure:?}",
                connection.0,
                state.kind,
                state.domain
            );
            state.failure = Some(failure);
            state.reset_input();
        }
        self.clear_output(connection);
    }

    /// Drops a domain connection's partial input, queued output, watches and transactions:
    /// the ring was reset (re-introduction or guest-initiated reconnection).
    pub fn reset_connection(&mut self, connection: ConnectionId) {
        self.drop_watches_and_transactions(connection);
        self.clear_output(connection);
        if let Some(state) = self.connections.get_mut(&connection) {
            state.reset_input();
        }
    }

    /// The connection serving an introduced domain's ring.
    pub fn domain_connection(&self, domain: DomainId) -> Option<ConnectionId> {
        self.domains
            .get(domain)
            .and_then(|record| record.connection)
    }

    /// The domain a connection acts as.
    pub fn connection_domain(&self, connection: ConnectionId) -> Option<DomainId> {
        self.connections.get(&connection).map(|state| state.domain)
    }

    /// The domains currently introduced.
    pub fn introduced_domains(&self) -> Vec<DomainId> {
        self.domains
            .iter()
            .filter(|(_, record)| record.connection.is_some())
            .map(|(domain, _)| *domain)
            .collect()
    }

    /// Server features a domain's ring should advertise.
    pub fn domain_features(&self, domain: DomainId) -> u32 {
        self.domains
            .get(domain)
            .map_or(feature::SUPPORTED, |record| record.features)
    }

    /// The hypervisor reports the domain shut down: `@releaseDomain` fires once until `XS_RESUME`.
    pub fn domain_shutdown(&mut self, platform: &mut dyn Platform, domain: DomainId) {
        self.now_milliseconds = platform.now_milliseconds();
        let Some(record) = self.domains.get_mut(domain) else {
            return;
        };
        if record.connection.is_none() || record.shutdown_reported {
            return;
        }
        // Reported only once it fires: without memory a later report tries again.
        if fallible::push(&mut self.pending_special, (RELEASE_DOMAIN, domain)).is_err() {
            log::warn!("domain {domain}: @releaseDomain not fired, no memory");
            return;
        }
        if let Some(record) = self.domains.get_mut(domain) {
            record.shutdown_reported = true;
        }
        self.flush_events(None);
    }

    /// Whether the engine has a record of `domain`: it is or was introduced, owns nodes, is
    /// named by a permission entry, or was given features or quotas of its own. Only such a
    /// domain's death has anything to undo.
    pub fn knows_domain(&self, domain: DomainId) -> bool {
        self.domains.get(domain).is_some()
    }

    /// The domain is dead: release it as `XS_RELEASE` would, and forget it. This is where a
    /// death is handled, and logged (`domain N is gone`), once: a domain the engine has no
    /// record of costs nothing and logs nothing (no node or connection is its, and permission
    /// entries naming it are inert; see [`Engine::knows_domain`]), so a death reported again
    /// after it was handled does nothing. A record that stays because its nodes could not all go (no memory) is
    /// handled again at the next report.
    pub fn domain_died(&mut self, platform: &mut dyn Platform, domain: DomainId) {
        if !self.knows_domain(domain) {
            return;
        }
        log::info!("domain {domain} is gone");
        self.now_milliseconds = platform.now_milliseconds();
        let introduced = self.domain_connection(domain).is_some();
        self.destroy_domain(platform, domain, introduced);
        self.flush_events(None);
    }

    /// Time-driven work: watch events queued too long for unprivileged domains are dropped.
    pub fn tick(&mut self, platform: &mut dyn Platform) {
        self.now_milliseconds = platform.now_milliseconds();
        let timeout = self.config.watch_event_timeout_milliseconds;
        if timeout == 0 {
            return;
        }
        let now = self.now_milliseconds;
        let privileged = self.config.privileged_domain;
        let mut causes = Vec::new();
        self.forget_former_event_holders();
        for connection in self.event_holders.iter() {
            let Some(state) = self.connections.get_mut(connection) else {
                continue;
            };
            if state.domain == privileged || state.kind != ConnectionKind::Domain {
                continue;
            }
            let started = state.output_sent_bytes > 0;
            let mut dropped_bytes = 0u64;
            state.retain_output(|index, message| {
                let keep = message.is_reply
                    || (index == 0 && started)
                    || now.saturating_sub(message.queued_at_milliseconds) < timeout;
                if keep {
                    return true;
                }
                // An event whose cause cannot be noted stays for a later tick.
                if let Some(cause) = message.caused_by
                    && fallible::push(&mut causes, cause).is_err()
                {
                    return true;
                }
                dropped_bytes += message.bytes.len() as u64;
                false
            });
            if let Some(record) = self.domains.get_mut(state.domain) {
                record.usage.memory_bytes = record.usage.memory_bytes.saturating_sub(dropped_bytes);
            }
        }
        self.settle_caused_events(causes);
    }

    /// Whether [`Engine::tick`] has work to do at some later time: a watch event queued for
    /// an unprivileged domain can expire. Front ends that sleep may skip their periodic
    /// tick while this is false (an idle store then uses no CPU at all).
    pub fn has_timed_work(&mut self) -> bool {
        if self.config.watch_event_timeout_milliseconds == 0 {
            return false;
        }
        self.forget_former_event_holders();
        !self.event_holders.is_empty()
    }

    /// Drops from [`Engine::event_holders`] the connections that no longer hold an event
    /// (sent, expired, dropped or closed): the set stays as small as the work it stands for.
    fn forget_former_event_holders(&mut self) {
        let connections = &self.connections;
        self.event_holders.retain(|connection| {
            connections
                .get(connection)
                .is_some_and(|state| state.output.iter().any(|message| !message.is_reply))
        });
    }

    /// Whether access-trace lines are wanted: enabled here and by the logger.
    pub(crate) fn tracing(&self) -> bool {
        self.trace_enabled && log::log_enabled!(target: ACCESS_LOG_TARGET, log::Level::Info)
    }

    /// The connection's state while it has not failed: only then is it served.
    pub(crate) fn healthy_connection(
        &mut self,
        connection: ConnectionId,
    ) -> Option<&mut Connection> {
        self.connections
            .get_mut(&connection)
            .filter(|state| state.failure.is_none())
    }

    pub(crate) fn quotas_of(&self, domain: DomainId) -> Quotas {
        self.domains
            .get(domain)
            .map_or(self.config.quotas, |record| record.quotas)
    }

    pub(crate) fn caller(&self, connection: ConnectionId) -> Option<Caller> {
        let state = self.connections.get(&connection)?;
        let record = self.domains.get(state.domain);
        let features = match state.kind {
            ConnectionKind::Socket => feature::SUPPORTED,
            ConnectionKind::Domain => record.map_or(feature::SUPPORTED, |record| record.features),
        };
        Some(Caller {
            domain: state.domain,
            target: record.and_then(|record| record.target),
            privileged: state.domain == self.config.privileged_domain,
            features,
        })
    }

    pub(crate) fn apply_deltas(&mut self, deltas: &AccountingDeltas) {
        let generation = self.tree.current_generation();
        for (domain, (nodes, memory_bytes)) in deltas {
            self.domains.charge(
                *domain,
                generation,
                &self.config.quotas,
                *nodes,
                *memory_bytes,
            );
            if *domain != self.config.privileged_domain {
                let usage = self.domains.usage(*domain);
                self.domains.note_max(usage);
                self.check_soft_memory(*domain);
            }
        }
    }

    fn check_soft_memory(&mut self, domain: DomainId) {
        if let Some(record) = self.domains.get_mut(domain) {
            let over = record
                .quotas
                .exceeded_by(QuotaKind::SoftMemoryBytes, record.usage.memory_bytes);
            if over && !record.soft_memory_warned {
                log::warn!(
                    "domain {domain} uses {} bytes, over its soft memory quota of {}",
                    record.usage.memory_bytes,
                    record.quotas.get(QuotaKind::SoftMemoryBytes)
                );
            }
            record.soft_memory_warned = over;
        }
    }

    /// The platform's memory figures as read before the current request.
    pub fn memory_status(&self) -> Option<MemoryStatus> {
        self.memory_status
    }

    /// Number of nodes in the store (special nodes included).
    pub fn node_count(&self) -> usize {
        self.tree.len()
    }

    /// Number of watches registered.
    pub fn watch_count(&self) -> usize {
        self.watches.len()
    }

    /// The committed tree, read only (consistency checks, fuzzing and property tests).
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// What `domain` uses now, as the accounting records it (zero for an unknown domain).
    pub fn domain_usage(&self, domain: DomainId) -> crate::domain::Usage {
        self.domains.usage(domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn the_trace_shows_payloads_without_allocating_them() {
        assert_eq!(Printable(b"/a\0b\x01").to_string(), "/a b.");
        let long = [b'x'; 300];
        let shown = Printable(&long).to_string();
        assert_eq!(shown.len(), 259);
        assert!(shown.ends_with("x..."));
    }
}
