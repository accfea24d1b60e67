//! The engine's front door: connections in, replies and watch events out, domain lifecycle.
//!
//! Requests of one connection are processed strictly in order, one at a time, as C xenstored
//! does (`core.c:process_message()`); the reply is queued before any watch event the
//! request caused, including the initial event of `XS_WATCH`.

use crate::connection::{Connection, ConnectionKind, OutputMessage, REPLY_ROOM_BYTES};
use crate::domain::{Domains, feature};
use crate::fallible::{self, SortedMap, SortedSet};
use crate::memory::MemoryStatus;
use crate::operations::{self, AccountingDeltas, Caller, Change, GlobalAccess, NodeAccess};
use crate::path::{self, CanonicalPath, INTRODUCE_DOMAIN, RELEASE_DOMAIN};
use crate::permissions::{Access, Permission, Permissions};
use crate::quota::{QuotaKind, Quotas};
use crate::store::{Node, Tree};
use crate::transaction::TransactionAccess;
use crate::watch::{Watch, WatchIndex};
use crate::wire::{self, HEADER_SIZE_BYTES, MessageHeader, MessageType, PAYLOAD_MAX_BYTES};
use crate::write_rate::{self, WriteCredit};
use crate::{ConnectionId, DomainId, Platform, StoreError, StoreResult};
use alloc::borrow::Cow;
use alloc::string::String;
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
    pub(crate) next_connection_id: u32,
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
    pub(crate) global_write_credit: WriteCredit,
    /// Transactions open on all connections (write-rate limiting applies only then).
    pub(crate) open_transactions: usize,
    /// Connections that got output since the front end last asked. Its room is reserved
    /// for every connection when one is added, so queueing output does not grow it.
    pub(crate) output_ready: SortedSet<ConnectionId>,
    /// Unprivileged domains' connections that were queued a watch event (which may expire)
    /// and may still hold it: the only connections [`Engine::tick`] needs to visit. Room
    /// reserved like [`Engine::output_ready`]'s.
    pub(crate) event_holders: SortedSet<ConnectionId>,
}

/// A reply's payload: a constant (`OK`, `T`, `F`) needs no allocation, so a request that
/// changed the store can always say so.
pub(crate) type Reply = Cow<'static, [u8]>;

/// The `OK` reply of requests that answer nothing else.
pub(crate) fn ok_reply() -> StoreResult<Reply> {
    Ok(Reply::Borrowed(b"OK\0"))
}

fn domain_argument(text: &[u8]) -> StoreResult<DomainId> {
    let number = wire::parse_decimal(text).ok_or(StoreError::Invalid)?;
    u16::try_from(number)
        .map(DomainId)
        .map_err(|_| StoreError::Invalid)
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
        let mut domains = Domains::default();
        // Start-up: two records in an empty map (nothing to answer if even that fails).
        let _ = domains.ensure(privileged, 0, &config.quotas);
        let _ = domains.ensure(config.store_domain, 0, &config.quotas);
        let mut engine = Engine {
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
        };
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

    fn add_connection(&mut self, kind: ConnectionKind, domain: DomainId) -> ConnectionId {
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
        let mut consumed_bytes = 0;
        while consumed_bytes < bytes.len() && self.wants_input(connection) {
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
        while !pending_input.is_empty() && self.wants_input(connection) {
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

    /// Whether the connection may send more requests now (it is healthy and, if
    /// unprivileged, below its outstanding-request quota).
    pub fn wants_input(&self, connection: ConnectionId) -> bool {
        let Some(state) = self.connections.get(&connection) else {
            return false;
        };
        if state.failure.is_some() {
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

    /// The domain is dead: release it as `XS_RELEASE` would, and forget it.
    pub fn domain_died(&mut self, platform: &mut dyn Platform, domain: DomainId) {
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

    pub(crate) fn check_soft_memory(&mut self, domain: DomainId) {
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

    pub(crate) fn resolve(
        &self,
        caller: &Caller,
        raw: &[u8],
        allow_special: bool,
    ) -> StoreResult<CanonicalPath> {
        let canonical = path::canonicalize(raw, caller.domain, allow_special)?;
        if !caller.privileged {
            let quotas = self.quotas_of(caller.domain);
            let length = path::quota_length_bytes(&canonical.absolute) as u64;
            if quotas.exceeded_by(QuotaKind::PathMaxBytes, length) {
                return Err(StoreError::Invalid);
            }
        }
        Ok(canonical)
    }

    /// Room for the reply to a request of `connection`, taken before the request runs: a
    /// slot in its queue, its place among the connections with output, and a buffer that
    /// holds any error reply. Once a request changed the store its reply cannot be refused.
    ///
    /// Returns the buffer (empty when none could be had) and whether all the room is there.
    /// A connection keeps a spare buffer and a spare queue slot, renewed as its output is
    /// sent ([`Engine::consume_output`]), so that once memory runs out its next request is
    /// still answered `ENOMEM`.
    fn reserve_reply(&mut self, connection: ConnectionId) -> (Vec<u8>, bool) {
        let mut complete = self
            .output_ready
            .try_reserve_total(self.output_ready.len() + 1)
            .is_ok();
        let room = match self.connections.get_mut(&connection) {
            Some(state) => {
                complete &= state.reserve_output(1).is_ok();
                state.take_reply_room()
            }
            None => fallible::vec_with_capacity(REPLY_ROOM_BYTES).unwrap_or_default(),
        };
        complete &= room.capacity() >= REPLY_ROOM_BYTES;
        (room, complete)
    }

    /// Queues a reply (whose room [`Engine::reserve_reply`] reserved).
    fn queue_reply(&mut self, connection: ConnectionId, bytes: Vec<u8>) {
        let now = self.now_milliseconds;
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        if state.failure.is_some() {
            return;
        }
        let domain = state.domain;
        let size = bytes.len() as u64;
        let queued = state.push_output(OutputMessage {
            bytes,
            is_reply: true,
            queued_at_milliseconds: now,
            caused_by: None,
        });
        if queued.is_err() {
            log::warn!("connection {}: a reply is lost, no memory", connection.0);
            return;
        }
        if let Some(record) = self.domains.get_mut(domain) {
            record.usage.memory_bytes = record.usage.memory_bytes.saturating_add(size);
        }
        // Room reserved with the reply's; should it be missing, the reply waits until the
        // front end serves the connection for another reason.
        if self.output_ready.try_insert(connection).is_err() {
            log::warn!(
                "connection {}: no memory to note a reply as ready",
                connection.0
            );
        }
    }

    /// Queues a watch event (a whole message); it is dropped when the connection's domain is
    /// at its memory quota, when the store's memory is low, or when it finds no memory.
    fn queue_event(
        &mut self,
        connection: ConnectionId,
        bytes: Vec<u8>,
        caused_by: Option<ConnectionId>,
    ) {
        let now = self.now_milliseconds;
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        if state.failure.is_some() {
            return;
        }
        let domain = state.domain;
        let size = bytes.len() as u64;
        let privileged = domain == self.config.privileged_domain;
        // A watch event that would take an unprivileged domain over its hard memory quota
        // is dropped (C `send_event()`, XSA-326 `f6d0013364`): a guest that does not read
        // its ring cannot make the store hold unbounded events for it. Replies are bounded
        // by the outstanding-request quota instead and are always queued.
        if !privileged {
            let quotas = self
                .domains
                .get(domain)
                .map_or(self.config.quotas, |record| record.quotas);
            let usage = self.domains.usage(domain).memory_bytes;
            if quotas.exceeded_by(QuotaKind::MemoryBytes, usage.saturating_add(size)) {
                log::debug!("domain {domain}: watch event dropped, memory quota reached");
                return;
            }
        }
        // Under the guests' memory reserve, events for guests are dropped as at their quota:
        // the memory left is the toolstack's (`memory.rs`).
        if !privileged
            && self
                .memory_status
                .is_some_and(|status| !status.admits_guest_event())
        {
            log::debug!("domain {domain}: watch event dropped, the store's memory is low");
            return;
        }
        // Every place the event takes is found before it is queued, so that an event
        // refused for want of memory leaves no trace.
        let noted = self.output_ready.try_insert(connection).is_ok()
            && (privileged || self.event_holders.try_insert(connection).is_ok());
        let queued = noted
            && self.connections.get_mut(&connection).is_some_and(|state| {
                // A slot beyond the event when it can be had: a reply after it then finds
                // its slot even if memory runs out meanwhile.
                let _ = state.reserve_output(2);
                state
                    .push_output(OutputMessage {
                        bytes,
                        is_reply: false,
                        queued_at_milliseconds: now,
                        caused_by,
                    })
                    .is_ok()
            });
        if !queued {
            log::debug!("domain {domain}: watch event dropped, no memory");
            return;
        }
        if let Some(record) = self.domains.get_mut(domain) {
            record.usage.memory_bytes = record.usage.memory_bytes.saturating_add(size);
        }
        if let Some(cause) = caused_by
            && let Some(state) = self.connections.get_mut(&cause)
        {
            state.caused_events_pending += 1;
        }
    }

    fn process(
        &mut self,
        platform: &mut dyn Platform,
        connection: ConnectionId,
        header: MessageHeader,
        payload: StoreResult<&[u8]>,
    ) {
        let message_type = MessageType::from_number(header.message_type);
        let type_name = message_type.map_or("UNKNOWN", MessageType::name);
        if self.tracing() {
            log::info!(target: ACCESS_LOG_TARGET, "IN  {} {} {:#x} ({})", connection.0, type_name, header.transaction_id, Printable(payload.unwrap_or(b"<no memory for the payload>")));
        }
        self.memory_status = platform.memory_status();
        // The reply's room first: a request that cannot be answered is not run.
        let (mut reply, reply_room_reserved) = self.reserve_reply(connection);
        let outcome = match (message_type, payload, reply_room_reserved) {
            (_, Err(error), _) => Err(error),
            (_, _, false) => Err(StoreError::OutOfMemory),
            (None | Some(MessageType::WatchEvent) | Some(MessageType::Error), _, _) => {
                Err(StoreError::NotImplemented)
            }
            (Some(message_type), Ok(payload), _)
                if !self.memory_admits(connection, message_type, payload) =>
            {
                log::debug!(
                    "connection {}: {} refused, the store's memory is low",
                    connection.0,
                    message_type.name()
                );
                Err(StoreError::OutOfMemory)
            }
            (Some(message_type), Ok(payload), _) => {
                self.dispatch(platform, connection, message_type, &header, payload)
            }
        };
        let failure = match &outcome {
            Ok(reply) if reply.len() <= PAYLOAD_MAX_BYTES => None,
            Ok(_) => Some(StoreError::TooBig),
            Err(error) => {
                self.pending_changes.clear();
                self.pending_special.clear();
                self.pending_direct_events.clear();
                Some(*error)
            }
        };
        let mut error_bytes = [0u8; 16];
        let (reply_type, reply_payload) = match (&outcome, failure) {
            (Ok(reply), None) => (header.message_type, reply.as_ref()),
            (_, error) => (
                MessageType::Error.number(),
                error_payload(error.unwrap_or(StoreError::OutOfMemory), &mut error_bytes),
            ),
        };
        let (request_id, transaction_id) = (header.request_id, header.transaction_id);
        let mut encoded = wire::encode_into(
            &mut reply,
            reply_type,
            request_id,
            transaction_id,
            reply_payload,
        )
        .map(|()| reply_type);
        if encoded.is_err() {
            // Only a read's reply outgrows the reserved room, and a read changed nothing:
            // it is answered `ENOMEM` in that room instead.
            let error_type = MessageType::Error.number();
            let error = error_payload(StoreError::OutOfMemory, &mut error_bytes);
            encoded = wire::encode_into(&mut reply, error_type, request_id, transaction_id, error)
                .map(|()| error_type);
        }
        match encoded {
            Ok(reply_type) => {
                if self.tracing() {
                    let name =
                        MessageType::from_number(reply_type).map_or("UNKNOWN", MessageType::name);
                    let shown = reply.get(HEADER_SIZE_BYTES..).unwrap_or(&[]);
                    log::info!(target: ACCESS_LOG_TARGET, "OUT {} {} ({})", connection.0, name, Printable(shown));
                }
                self.queue_reply(connection, reply);
            }
            Err(_) => log::warn!("connection {}: no memory to answer a request", connection.0),
        }
        self.flush_events(Some(connection));
    }

    /// The platform's memory figures as read before the current request.
    pub fn memory_status(&self) -> Option<MemoryStatus> {
        self.memory_status
    }

    /// Whether the store's memory lets this request go on (`memory.rs`).
    fn memory_admits(
        &self,
        connection: ConnectionId,
        message_type: MessageType,
        payload: &[u8],
    ) -> bool {
        let Some(status) = self.memory_status else {
            return true;
        };
        let privileged = self
            .connections
            .get(&connection)
            .is_some_and(|state| state.domain == self.config.privileged_domain);
        status.admits(message_type, payload, privileged)
    }

    fn dispatch(
        &mut self,
        platform: &mut dyn Platform,
        connection: ConnectionId,
        message_type: MessageType,
        header: &MessageHeader,
        payload: &[u8],
    ) -> StoreResult<Reply> {
        use MessageType::*;
        let caller = self.caller(connection).ok_or(StoreError::Invalid)?;
        let privileged_only = matches!(
            message_type,
            Control
                | Introduce
                | Release
                | IsDomainIntroduced
                | Resume
                | SetTarget
                | SetFeature
                | GetQuota
                | SetQuota
        );
        if privileged_only && !caller.privileged {
            return Err(StoreError::AccessDenied);
        }
        // Every request but WATCH and UNWATCH names a transaction or 0 (`XS_FLAG_NOTID`).
        let transaction_id = header.transaction_id;
        if transaction_id != 0 && !matches!(message_type, Watch | Unwatch) {
            let known = self
                .connections
                .get(&connection)
                .is_some_and(|state| state.transactions.contains_key(&transaction_id));
            if !known {
                return Err(StoreError::NoEntry);
            }
            if message_type == TransactionStart {
                return Err(StoreError::Busy);
            }
        }
        let ok = ok_reply;
        match message_type {
            Read | Directory | GetPermissions => {
                let raw = wire::single_string(payload).ok_or(StoreError::Invalid)?;
                let target = self.resolve(&caller, raw, message_type == GetPermissions)?;
                self.with_view(connection, transaction_id, &caller, |view, domains, _| {
                    match message_type {
                        Read => operations::read(view, domains, &caller, &target.absolute),
                        Directory => {
                            operations::directory(view, domains, &caller, &target.absolute)
                        }
                        _ => operations::get_permissions(view, domains, &caller, &target.absolute),
                    }
                })
                .map(Reply::Owned)
            }
            DirectoryPart => {
                let strings = wire::split_strings(payload)?;
                let [raw, offset] = strings.as_slice() else {
                    return Err(StoreError::Invalid);
                };
                let offset = wire::parse_decimal(offset).ok_or(StoreError::Invalid)?;
                let offset = usize::try_from(offset).map_err(|_| StoreError::Invalid)?;
                let target = self.resolve(&caller, raw, false)?;
                self.with_view(connection, transaction_id, &caller, |view, domains, _| {
                    operations::directory_part(view, domains, &caller, &target.absolute, offset)
                })
                .map(Reply::Owned)
            }
            Write | Mkdir | Remove => {
                let (raw, value) = match message_type {
                    Write => {
                        let split = payload
                            .iter()
                            .position(|byte| *byte == 0)
                            .ok_or(StoreError::Invalid)?;
                        (
                            payload.get(..split).unwrap_or(&[]),
                            payload.get(split + 1..).unwrap_or(&[]),
                        )
                    }
                    _ => (
                        wire::single_string(payload).ok_or(StoreError::Invalid)?,
                        &[][..],
                    ),
                };
                let target = self.resolve(&caller, raw, false)?;
                self.check_memory(&caller)?;
                self.modify(
                    connection,
                    transaction_id,
                    &caller,
                    |view, domains, quotas| match message_type {
                        Write => operations::write(
                            view,
                            domains,
                            &caller,
                            quotas,
                            &target.absolute,
                            value,
                        ),
                        Mkdir => {
                            operations::mkdir(view, domains, &caller, quotas, &target.absolute)
                        }
                        _ => operations::remove(view, domains, &caller, &target.absolute),
                    },
                )?;
                ok()
            }
            SetPermissions => {
                let strings = wire::split_strings(payload)?;
                let (raw, entries) = strings.split_first().ok_or(StoreError::Invalid)?;
                let target = self.resolve(&caller, raw, true)?;
                let permissions = Permissions::parse(entries)?;
                self.check_memory(&caller)?;
                // Domains named by the entries get a record now, so that the entries count
                // as written after the domain appeared.
                let generation = self.tree.current_generation();
                for entry in permissions.entries() {
                    if entry.domain != DomainId::ANY
                        && self.domains.get(entry.domain).is_none()
                        && entry.domain.0 < DomainId::FIRST_RESERVED
                        && platform.domain_exists(entry.domain)
                    {
                        self.domains
                            .ensure(entry.domain, generation, &self.config.quotas)?;
                    }
                }
                self.modify(
                    connection,
                    transaction_id,
                    &caller,
                    |view, domains, quotas| {
                        let mut exists = |domain: DomainId| domains.get(domain).is_some();
                        operations::set_permissions(
                            view,
                            domains,
                            &caller,
                            quotas,
                            &target.absolute,
                            permissions,
                            &mut exists,
                        )
                    },
                )?;
                ok()
            }
            Watch => self.watch(connection, &caller, payload),
            Unwatch => {
                let strings = wire::split_strings(payload)?;
                let [raw, token] = strings.as_slice() else {
                    return Err(StoreError::Invalid);
                };
                let target = self.resolve(&caller, raw, true)?;
                self.watches
                    .remove(connection, &target.absolute, token)
                    .ok_or(StoreError::NoEntry)?;
                if let Some(state) = self.connections.get_mut(&connection) {
                    state
                        .watches
                        .retain(|(watched, held)| !(watched == &target.absolute && held == token));
                }
                if let Some(record) = self.domains.get_mut(caller.domain) {
                    record.usage.watches = record.usage.watches.saturating_sub(1);
                    let memory = crate::watch::Watch::memory_bytes(&target.absolute, token);
                    record.usage.memory_bytes = record.usage.memory_bytes.saturating_sub(memory);
                }
                ok()
            }
            TransactionStart => self.start_transaction(connection, &caller),
            TransactionEnd => {
                if transaction_id == 0 {
                    return Err(StoreError::NoEntry);
                }
                let commit = match wire::single_string(payload) {
                    Some(b"T") => true,
                    Some(b"F") => false,
                    _ => return Err(StoreError::Invalid),
                };
                self.end_transaction(connection, &caller, transaction_id, commit)
            }
            Introduce => self.introduce(platform, payload),
            Release => {
                let domain =
                    domain_argument(wire::single_string(payload).ok_or(StoreError::Invalid)?)?;
                if domain == self.config.store_domain || domain == self.config.privileged_domain {
                    return Err(StoreError::Invalid);
                }
                if self.domain_connection(domain).is_none() {
                    return Err(StoreError::NoEntry);
                }
                self.destroy_domain(platform, domain, true);
                ok()
            }
            Resume => {
                let domain =
                    domain_argument(wire::single_string(payload).ok_or(StoreError::Invalid)?)?;
                let record = self
                    .domains
                    .get_mut(domain)
                    .filter(|record| record.connection.is_some())
                    .ok_or(StoreError::NoEntry)?;
                record.shutdown_reported = false;
                ok()
            }
            IsDomainIntroduced => {
                let domain =
                    domain_argument(wire::single_string(payload).ok_or(StoreError::Invalid)?)?;
                let introduced =
                    domain == DomainId::SELF || self.domain_connection(domain).is_some();
                Ok(Reply::Borrowed(if introduced { b"T\0" } else { b"F\0" }))
            }
            GetDomainPath => {
                let domain =
                    domain_argument(wire::single_string(payload).ok_or(StoreError::Invalid)?)?;
                let mut reply = fallible::to_vec(path::home_path(domain)?.as_bytes())?;
                fallible::push(&mut reply, 0)?;
                Ok(Reply::Owned(reply))
            }
            SetTarget => {
                let strings = wire::split_strings(payload)?;
                let [domain, target] = strings.as_slice() else {
                    return Err(StoreError::Invalid);
                };
                let domain = domain_argument(domain)?;
                let target = domain_argument(target)?;
                if self.domain_connection(target).is_none() {
                    return Err(StoreError::NoEntry);
                }
                let record = self
                    .domains
                    .get_mut(domain)
                    .filter(|record| record.connection.is_some())
                    .ok_or(StoreError::NoEntry)?;
                record.target = Some(target);
                ok()
            }
            ResetWatches => {
                self.drop_watches_and_transactions(connection);
                ok()
            }
            GetFeature => {
                let strings = wire::split_strings(payload)?;
                let features = match strings.as_slice() {
                    [] => caller.features,
                    [domain] => {
                        if !caller.privileged {
                            return Err(StoreError::AccessDenied);
                        }
                        let domain = domain_argument(domain)?;
                        self.known_domain_features(platform, domain)?
                    }
                    _ => return Err(StoreError::Invalid),
                };
                fallible::decimal_reply(u64::from(features)).map(Reply::Owned)
            }
            SetFeature => {
                let strings = wire::split_strings(payload)?;
                let [domain, value] = strings.as_slice() else {
                    return Err(StoreError::Invalid);
                };
                let domain = domain_argument(domain)?;
                let value = wire::parse_decimal(value).and_then(|value| u32::try_from(value).ok());
                let value = value
                    .filter(|value| value & !feature::SUPPORTED == 0)
                    .ok_or(StoreError::Invalid)?;
                self.known_domain_features(platform, domain)?;
                let record = self.domains.get_mut(domain).ok_or(StoreError::NoEntry)?;
                if record.connection.is_some() {
                    return Err(StoreError::Busy);
                }
                record.features = value;
                ok()
            }
            GetQuota => self.get_quota(platform, payload).map(Reply::Owned),
            SetQuota => self.set_quota(platform, payload),
            Control => self.control(payload),
            WatchEvent | Error => Err(StoreError::NotImplemented),
        }
    }

    pub(crate) fn known_domain_features(
        &mut self,
        platform: &mut dyn Platform,
        domain: DomainId,
    ) -> StoreResult<u32> {
        if self.domains.get(domain).is_none() {
            if domain.0 >= DomainId::FIRST_RESERVED || !platform.domain_exists(domain) {
                return Err(StoreError::NoEntry);
            }
            let generation = self.tree.current_generation();
            self.domains
                .ensure(domain, generation, &self.config.quotas)?;
        }
        self.domains
            .get(domain)
            .map(|record| record.features)
            .ok_or(StoreError::NoEntry)
    }

    pub(crate) fn check_memory(&self, caller: &Caller) -> StoreResult<()> {
        if caller.privileged {
            return Ok(());
        }
        let quotas = self.quotas_of(caller.domain);
        if quotas.exceeded_by(
            QuotaKind::MemoryBytes,
            self.domains.usage(caller.domain).memory_bytes,
        ) {
            return Err(StoreError::OutOfMemory);
        }
        Ok(())
    }

    /// Runs a read-only operation on the committed tree or inside the named transaction.
    pub(crate) fn with_view<T>(
        &mut self,
        connection: ConnectionId,
        transaction_id: u32,
        caller: &Caller,
        operation: impl FnOnce(&mut dyn NodeAccess, &Domains, &Quotas) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let quotas = self.quotas_of(caller.domain);
        if transaction_id == 0 {
            let mut view = GlobalAccess {
                tree: &mut self.tree,
                deltas: AccountingDeltas::new(),
            };
            let result = operation(&mut view, &self.domains, &quotas);
            let deltas = view.deltas;
            self.apply_deltas(&deltas);
            return result;
        }
        // Every access inside a transaction may copy a node into it, so an unprivileged
        // domain over its hard memory quota gets `ENOMEM` before the copy is made (C
        // checks the memory quota "sloppily" the same way, `00e9e32d02`).
        self.check_memory(caller)?;
        let transaction = self
            .connections
            .get_mut(&connection)
            .and_then(|state| state.transactions.get_mut(&transaction_id))
            .ok_or(StoreError::NoEntry)?;
        let node_limit = if caller.privileged {
            None
        } else {
            Some(u64::from(quotas.get(QuotaKind::TransactionNodes)))
        };
        let memory_before = transaction.memory_bytes;
        let mut view = TransactionAccess {
            tree: &self.tree,
            transaction,
            node_limit,
        };
        let result = operation(&mut view, &self.domains, &quotas);
        let memory_after = view.transaction.memory_bytes;
        // The transaction's private copies are charged to the domain that opened it.
        if let Some(record) = self.domains.get_mut(caller.domain) {
            record.usage.memory_bytes = record
                .usage
                .memory_bytes
                .saturating_add(memory_after)
                .saturating_sub(memory_before);
        }
        result
    }

    /// Runs a modifying operation; its changes fire now, or at commit inside a transaction.
    pub(crate) fn modify(
        &mut self,
        connection: ConnectionId,
        transaction_id: u32,
        caller: &Caller,
        operation: impl FnOnce(&mut dyn NodeAccess, &Domains, &Quotas) -> StoreResult<Vec<Change>>,
    ) -> StoreResult<()> {
        let outcome = self.with_view(connection, transaction_id, caller, operation);
        if transaction_id != 0
            && matches!(outcome, Err(StoreError::NoSpace | StoreError::OutOfMemory))
            && let Some(transaction) = self
                .connections
                .get_mut(&connection)
                .and_then(|state| state.transactions.get_mut(&transaction_id))
        {
            // A change refused for lack of quota or memory poisons the transaction: its
            // commit fails (`ENOMEM`, C `do_transaction_end()`), so a client can never
            // commit half of what it meant to do (XSA-415).
            transaction.failed = true;
        }
        let changes = outcome?;
        if transaction_id == 0 {
            self.debit_writes(caller, 1);
            // The store has changed: the request succeeds even if its events cannot be
            // kept (they are dropped, as events over a quota are).
            if self.pending_changes.is_empty() {
                self.pending_changes = changes;
            } else if fallible::reserve(&mut self.pending_changes, changes.len()).is_ok() {
                self.pending_changes.extend(changes);
            } else {
                log::warn!("watch events of a change dropped: no memory");
            }
        } else if let Some(transaction) = self
            .connections
            .get_mut(&connection)
            .and_then(|state| state.transactions.get_mut(&transaction_id))
        {
            // Changes without their events would commit silently: a transaction that cannot
            // keep them is poisoned and its commit fails (`ENOMEM`), as after a refused change.
            if fallible::reserve(&mut transaction.changes, changes.len()).is_err() {
                transaction.failed = true;
                return Err(StoreError::OutOfMemory);
            }
            transaction.changes.extend(changes);
        }
        Ok(())
    }

    fn watch(
        &mut self,
        connection: ConnectionId,
        caller: &Caller,
        payload: &[u8],
    ) -> StoreResult<Reply> {
        let strings = wire::split_strings(payload)?;
        let (raw, token, depth) = match strings.as_slice() {
            [raw, token] => (*raw, *token, None),
            [raw, token, depth] => {
                if caller.features & feature::WATCH_DEPTH == 0 {
                    return Err(StoreError::Invalid);
                }
                let depth = wire::parse_decimal(depth).and_then(|depth| u32::try_from(depth).ok());
                (*raw, *token, Some(depth.ok_or(StoreError::Invalid)?))
            }
            _ => return Err(StoreError::Invalid),
        };
        let target = self.resolve(caller, raw, true)?;
        if self.watches.contains(connection, &target.absolute, token) {
            return Err(StoreError::AlreadyExists);
        }
        let quotas = self.quotas_of(caller.domain);
        let usage = self.domains.usage(caller.domain);
        if !caller.privileged {
            if quotas.exceeded_by(QuotaKind::Watches, usage.watches + 1) {
                return Err(StoreError::NoSpace);
            }
            let memory = usage.memory_bytes + Watch::memory_bytes(&target.absolute, token);
            if quotas.exceeded_by(QuotaKind::MemoryBytes, memory) {
                return Err(StoreError::OutOfMemory);
            }
        }
        // Everything the watch needs is allocated before it is registered anywhere: the
        // connection's list entry, the initial event and the index's room.
        let state = self
            .connections
            .get_mut(&connection)
            .ok_or(StoreError::Invalid)?;
        fallible::reserve(&mut state.watches, 1)?;
        let listed = (
            fallible::string(&target.absolute)?,
            fallible::to_vec(token)?,
        );
        // The initial event carries the path as the client wrote it (`do_watch()`).
        let event = event_message(raw, token)?;
        fallible::reserve(&mut self.pending_direct_events, 1)?;
        self.domains.try_reserve(1)?;
        let watch = Watch {
            connection,
            token: fallible::to_vec(token)?,
            relative_prefix_bytes: target.relative_prefix_bytes,
            depth,
        };
        self.watches.add(&target.absolute, watch)?;
        // Reserved above: these cannot fail.
        if let Some(state) = self.connections.get_mut(&connection) {
            state.watches.push(listed);
        }
        self.pending_direct_events.push((connection, event));
        let generation = self.tree.current_generation();
        // Room reserved above.
        if let Ok(record) = self
            .domains
            .ensure(caller.domain, generation, &self.config.quotas)
        {
            record.usage.watches += 1;
            record.usage.memory_bytes += Watch::memory_bytes(&target.absolute, token);
            if !caller.privileged {
                let usage = record.usage;
                self.domains.note_max(usage);
            }
        }
        ok_reply()
    }

    fn introduce(&mut self, platform: &mut dyn Platform, payload: &[u8]) -> StoreResult<Reply> {
        let strings = wire::split_strings(payload)?;
        let (Some(domain), Some(frame), Some(port)) =
            (strings.first(), strings.get(1), strings.get(2))
        else {
            return Err(StoreError::Invalid);
        };
        let domain = domain_argument(domain)?;
        if domain.0 >= DomainId::FIRST_RESERVED {
            return Err(StoreError::Invalid);
        }
        // The frame is "signed decimal" and ignored in favour of grant reference 1, as in C.
        let frame_text = frame.strip_prefix(b"-").unwrap_or(frame);
        let frame = wire::parse_decimal(frame_text).ok_or(StoreError::Invalid)?;
        let port = wire::parse_decimal(port)
            .and_then(|port| u32::try_from(port).ok())
            .filter(|port| *port > 0)
            .ok_or(StoreError::Invalid)?;
        // Room for the connection, the record and the event before the platform maps the
        // ring: once it did, nothing may fail.
        self.connections.try_reserve(1)?;
        self.domains.try_reserve(1)?;
        fallible::reserve(&mut self.pending_special, 1)?;
        platform.connect_domain(domain, frame, port)?;
        if let Some(existing) = self.domain_connection(domain) {
            // Re-introduction: the ring was reset; the domain keeps its nodes.
            self.reset_connection(existing);
            if let Some(record) = self.domains.get_mut(domain) {
                record.shutdown_reported = false;
            }
            return ok_reply();
        }
        let generation = self.tree.current_generation();
        self.domains
            .ensure(domain, generation, &self.config.quotas)?;
        let connection = self.add_connection(ConnectionKind::Domain, domain);
        if let Some(record) = self.domains.get_mut(domain) {
            record.connection = Some(connection);
            record.shutdown_reported = false;
        }
        if domain != self.config.privileged_domain {
            self.pending_special.push((INTRODUCE_DOMAIN, domain));
        }
        ok_reply()
    }

    /// Releases a domain: its connection, watches and transactions go; its nodes are deleted
    /// (or given to the privileged domain with `-K`); permission entries naming it are
    /// removed everywhere (4.22); `@releaseDomain` fires.
    pub(crate) fn destroy_domain(
        &mut self,
        platform: &mut dyn Platform,
        domain: DomainId,
        fire_release: bool,
    ) {
        if let Some(connection) = self.domain_connection(domain) {
            self.drop_watches_and_transactions(connection);
            self.clear_output(connection);
            self.connections.remove(&connection);
            platform.disconnect_domain(domain);
        }
        let privileged = self.config.privileged_domain;
        // One scan of the whole tree (as C's clean-up walks it); paths are built only for the
        // nodes that match. The dead domain's owned subtrees are its owned nodes whose
        // parent it does not own.
        // Without memory for these lists (or for a removal below) the nodes stay, and so
        // does the domain's record, which they are charged to: the death itself must go
        // through, and the books must still balance.
        let mut owned: Vec<String> = if domain == privileged {
            Vec::new()
        } else {
            self.tree
                .matching_nodes(|node| node.permissions.owner() == domain)
                .unwrap_or_else(|_| {
                    log::warn!("domain {domain}: no memory to list its nodes, they stay");
                    Vec::new()
                })
        };
        // In path order (in place), so that roots are found by bisection and taken in order.
        owned.sort_unstable();
        let is_owned = |node_path: &str| {
            owned
                .binary_search_by(|owned_path| owned_path.as_str().cmp(node_path))
                .is_ok()
        };
        let with_entries = self
            .tree
            .matching_nodes(|node| {
                node.permissions
                    .entries()
                    .iter()
                    .skip(1)
                    .any(|entry| entry.domain == domain)
            })
            .unwrap_or_else(|_| {
                log::warn!("domain {domain}: no memory to list the entries naming it, they stay");
                Vec::new()
            });
        let mut view = GlobalAccess {
            tree: &mut self.tree,
            deltas: AccountingDeltas::new(),
        };
        for node_path in &with_entries {
            // Changed in place (not a modification: the generation stays), but the
            // record shrinks, so the owner's memory charge must follow. A node whose new
            // list finds no memory keeps its entry, which names no domain any more.
            let Some(node) = view.tree.get(node_path) else {
                continue;
            };
            let (old_owner, old_size) = (node.permissions.owner(), node.stored_size_bytes());
            let permissions = match node.permissions.retained(|entry| entry.domain != domain) {
                Ok(Some(permissions)) => permissions,
                Ok(None) => Permissions::owned_by(privileged),
                Err(_) => continue,
            };
            if view.deltas.try_reserve(2).is_err() {
                continue;
            }
            if let Some(node) = view.tree.get_mut(node_path) {
                node.permissions = permissions;
                let (new_owner, new_size) = (node.permissions.owner(), node.stored_size_bytes());
                operations::account_record(&mut view.deltas, node_path, old_owner, old_size, -1);
                operations::account_record(&mut view.deltas, node_path, new_owner, new_size, 1);
            }
        }
        let mut changes = Vec::new();
        for root in &owned {
            let root = root.as_str();
            if path::parent(root).is_some_and(is_owned) {
                continue;
            }
            if self.config.keep_orphans || path::is_special(root) || root == "/" {
                if let Some(Ok(mut node)) = view.tree.get(root).map(Node::try_clone) {
                    node.permissions.set_owner(privileged);
                    let _ = view.put(root, node);
                }
                continue;
            }
            if let Some(Ok(node)) = view.tree.get(root).map(Node::try_clone)
                && let Ok(removed) = operations::remove_subtree(&mut view, root, node)
                && fallible::reserve(&mut changes, removed.len()).is_ok()
            {
                changes.extend(removed);
            }
        }
        if self.config.keep_orphans {
            // Descendants owned by the dead domain below re-owned roots are re-owned too.
            let stragglers: Vec<String> = view
                .tree
                .matching_nodes(|node| node.permissions.owner() == domain)
                .unwrap_or_default();
            for node_path in stragglers {
                if let Some(Ok(mut node)) = view.tree.get(&node_path).map(Node::try_clone) {
                    node.permissions.set_owner(privileged);
                    let _ = view.put(&node_path, node);
                }
            }
        }
        let deltas = view.deltas;
        self.apply_deltas(&deltas);
        if fallible::reserve(&mut self.pending_changes, changes.len()).is_ok() {
            self.pending_changes.extend(changes);
        }
        if domain != privileged && domain != self.config.store_domain {
            if self.domains.usage(domain).nodes == 0 {
                self.domains.remove(domain);
            } else {
                log::warn!("domain {domain}: not all its nodes could go (no memory); they stay");
            }
        }
        for record in self.domains.iter_mut().map(|(_, record)| record) {
            if record.target == Some(domain) {
                record.target = None;
            }
        }
        if fire_release
            && fallible::push(&mut self.pending_special, (RELEASE_DOMAIN, domain)).is_err()
        {
            log::warn!("domain {domain}: @releaseDomain not fired, no memory");
        }
    }

    pub(crate) fn drop_watches_and_transactions(&mut self, connection: ConnectionId) {
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        let watches = core::mem::take(&mut state.watches);
        let dropped_transactions = core::mem::take(&mut state.transactions);
        let transactions = dropped_transactions.len() as u64;
        self.open_transactions = self
            .open_transactions
            .saturating_sub(dropped_transactions.len());
        let domain = state.domain;
        let mut memory: u64 = dropped_transactions
            .values()
            .map(|transaction| transaction.memory_bytes)
            .sum();
        for (watched, token) in &watches {
            self.watches.remove(connection, watched, token);
            memory += Watch::memory_bytes(watched, token);
        }
        if let Some(record) = self.domains.get_mut(domain) {
            record.usage.watches = record.usage.watches.saturating_sub(watches.len() as u64);
            record.usage.transactions = record.usage.transactions.saturating_sub(transactions);
            record.usage.memory_bytes = record.usage.memory_bytes.saturating_sub(memory);
        }
    }

    /// Whether a change may be told to `state` (`watch.c:watch_permitted()`): it can read
    /// the node, could read it before a permission change, or can read its parent.
    fn watch_permitted(&self, connection: ConnectionId, change: &Change) -> bool {
        let Some(caller) = self.caller(connection) else {
            return false;
        };
        if caller.privileged {
            return true;
        }
        let generation = self.tree.current_generation();
        let readable = |permissions: &Permissions| {
            operations::access_under(&caller, permissions, generation, &self.domains)
                .allows(Access::READ)
        };
        if readable(&change.permissions) || change.old_permissions.as_ref().is_some_and(readable) {
            return true;
        }
        path::parent(&change.path)
            .and_then(|parent| self.tree.get(parent))
            .is_some_and(|parent| {
                operations::access_for(&caller, parent, &self.domains).allows(Access::READ)
            })
    }

    /// Queues the events of the pending changes; `cause` is the connection whose request
    /// made them (`None`: the store itself, e.g. a domain's death). An event that finds no
    /// memory is dropped, as one over its domain's quota is.
    pub(crate) fn flush_events(&mut self, cause: Option<ConnectionId>) {
        let changes = core::mem::take(&mut self.pending_changes);
        // (connection, message, whether a queued duplicate suppresses it)
        let mut events: Vec<(ConnectionId, Vec<u8>, bool)> = Vec::new();
        let mut dropped = 0usize;
        for change in &changes {
            self.watches
                .for_each_matching(&change.path, change.exact, |_, watch| {
                    if !self.watch_permitted(watch.connection, change) {
                        return;
                    }
                    let shown = change
                        .path
                        .get(watch.relative_prefix_bytes..)
                        .unwrap_or(&change.path);
                    match event_message(shown.as_bytes(), &watch.token) {
                        Ok(message) => {
                            if fallible::push(&mut events, (watch.connection, message, true))
                                .is_err()
                            {
                                dropped += 1;
                            }
                        }
                        Err(StoreError::OutOfMemory) => dropped += 1,
                        Err(_) => {}
                    }
                });
        }
        let specials = core::mem::take(&mut self.pending_special);
        for (name, domain) in specials {
            dropped += self.collect_special_events(name, domain, &mut events);
        }
        for (connection, message) in core::mem::take(&mut self.pending_direct_events) {
            if fallible::push(&mut events, (connection, message, false)).is_err() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            log::warn!("{dropped} watch events dropped: no memory to build them");
        }
        for (connection, message, suppress_duplicates) in events {
            let duplicate = suppress_duplicates
                && self
                    .connections
                    .get(&connection)
                    .is_some_and(|state| state.has_unsent_event(&message));
            if !duplicate {
                if self.tracing() {
                    let shown = message.get(HEADER_SIZE_BYTES..).unwrap_or(&[]);
                    log::info!(target: ACCESS_LOG_TARGET, "OUT {} WATCH_EVENT ({})", connection.0, Printable(shown));
                }
                self.queue_event(connection, message, cause);
            }
        }
    }

    /// `@introduceDomain`/`@releaseDomain` events (C 4.22 `fire_special_watches()`): watches
    /// on the bare name without a depth get the bare name; watches on `name/<domid>`, and
    /// on the bare name with a depth of at least 1, get `name/<domid>`. Only connections that
    /// may read the special node are told. Returns how many events found no memory.
    fn collect_special_events(
        &self,
        name: &str,
        domain: DomainId,
        events: &mut Vec<(ConnectionId, Vec<u8>, bool)>,
    ) -> usize {
        let Some(special) = self.tree.get(name) else {
            return 0;
        };
        // `name/<domid>`: at most a special name, a slash and five digits.
        let mut per_domain_bytes = [0u8; 48];
        let per_domain = special_per_domain(name, domain, &mut per_domain_bytes);
        let mut dropped = 0;
        let mut deliver = |watch: &Watch, shown: &[u8]| {
            let permitted = self.caller(watch.connection).is_some_and(|caller| {
                operations::access_for(&caller, special, &self.domains).allows(Access::READ)
            });
            if permitted {
                let queued = event_message(shown, &watch.token)
                    .and_then(|message| fallible::push(events, (watch.connection, message, false)));
                if queued.is_err() {
                    dropped += 1;
                }
            }
        };
        for watch in self.watches.on_path(name) {
            match watch.depth {
                None => deliver(watch, name.as_bytes()),
                Some(depth) if depth >= 1 => deliver(watch, per_domain),
                Some(_) => {}
            }
        }
        let per_domain_path = core::str::from_utf8(per_domain).unwrap_or(name);
        for watch in self.watches.on_path(per_domain_path) {
            deliver(watch, per_domain);
        }
        dropped
    }

    fn get_quota(&mut self, platform: &mut dyn Platform, payload: &[u8]) -> StoreResult<Vec<u8>> {
        let strings = wire::split_strings(payload)?;
        let (quotas, name) = match strings.as_slice() {
            [] => {
                // The names of the quotas in force, separated by spaces, then a NUL.
                let mut reply = Vec::new();
                let names = QuotaKind::ALL
                    .into_iter()
                    .filter(|kind| self.config.quotas.get(*kind) != 0)
                    .map(QuotaKind::name);
                for (index, name) in names.enumerate() {
                    if index > 0 {
                        fallible::push(&mut reply, b' ')?;
                    }
                    fallible::extend(&mut reply, name.as_bytes())?;
                }
                fallible::push(&mut reply, 0)?;
                return Ok(reply);
            }
            [name] => (self.config.quotas, *name),
            [domain, name] => {
                let domain = domain_argument(domain)?;
                self.known_domain_features(platform, domain)?;
                (self.quotas_of(domain), *name)
            }
            _ => return Err(StoreError::Invalid),
        };
        let name = core::str::from_utf8(name).map_err(|_| StoreError::Invalid)?;
        let kind = QuotaKind::from_name(name)?;
        fallible::decimal_reply(u64::from(quotas.get(kind)))
    }

    fn set_quota(&mut self, platform: &mut dyn Platform, payload: &[u8]) -> StoreResult<Reply> {
        let strings = wire::split_strings(payload)?;
        let (domain, name, value) = match strings.as_slice() {
            [name, value] => (None, *name, *value),
            [domain, name, value] => (Some(domain_argument(domain)?), *name, *value),
            _ => return Err(StoreError::Invalid),
        };
        let name = core::str::from_utf8(name).map_err(|_| StoreError::Invalid)?;
        let kind = QuotaKind::from_name(name)?;
        let value = wire::parse_decimal(value)
            .and_then(|value| u32::try_from(value).ok())
            .filter(|value| *value != u32::MAX)
            .ok_or(StoreError::Invalid)?;
        match domain {
            None => self.config.quotas.set(kind, value),
            Some(domain) => {
                self.known_domain_features(platform, domain)?;
                let record = self.domains.get_mut(domain).ok_or(StoreError::NoEntry)?;
                record.quotas.set(kind, value);
            }
        }
        ok_reply()
    }

    /// Number of nodes in the store (special nodes included).
    pub fn node_count(&self) -> usize {
        self.tree.len()
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

/// `name/<domid>` written into `room` (no allocation): the path of a special event about
/// one domain.
fn special_per_domain<'a>(name: &str, domain: DomainId, room: &'a mut [u8; 48]) -> &'a [u8] {
    let mut digits = [0u8; 20];
    let digits = fallible::decimal_digits(u64::from(domain.0), &mut digits);
    let mut used = 0;
    for part in [name.as_bytes(), b"/", digits] {
        if let Some(target) = room.get_mut(used..used + part.len()) {
            target.copy_from_slice(part);
            used += part.len();
        }
    }
    room.get(..used).unwrap_or(&[])
}

/// An error reply's payload, the name and a NUL, written into `room` (no allocation).
fn error_payload(error: StoreError, room: &mut [u8; 16]) -> &[u8] {
    let name = error.wire_name().as_bytes();
    let length = name.len().min(room.len() - 1);
    if let Some(target) = room.get_mut(..length) {
        target.copy_from_slice(name.get(..length).unwrap_or(&[]));
    }
    if let Some(nul) = room.get_mut(length) {
        *nul = 0;
    }
    room.get(..=length).unwrap_or(&[])
}

/// A whole `XS_WATCH_EVENT` message for `shown_path` and `token`, in one allocation;
/// `ENOMEM` when it cannot be allocated, `E2BIG` when it exceeds a payload.
fn event_message(shown_path: &[u8], token: &[u8]) -> StoreResult<Vec<u8>> {
    let payload_bytes = shown_path.len() + token.len() + 2;
    if payload_bytes > PAYLOAD_MAX_BYTES {
        return Err(StoreError::TooBig);
    }
    let header = MessageHeader {
        message_type: MessageType::WatchEvent.number(),
        request_id: 0,
        transaction_id: 0,
        payload_length_bytes: u32::try_from(payload_bytes).map_err(|_| StoreError::TooBig)?,
    };
    let mut message = fallible::vec_with_capacity(HEADER_SIZE_BYTES + payload_bytes)?;
    message.extend_from_slice(&header.to_bytes());
    message.extend_from_slice(shown_path);
    message.push(0);
    message.extend_from_slice(token);
    message.push(0);
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn replies_and_events_are_built_without_formatting() {
        let mut room = [0u8; 16];
        assert_eq!(
            error_payload(StoreError::NotEmpty, &mut room),
            b"ENOTEMPTY\0"
        );
        let message = event_message(b"/a", b"token").unwrap();
        assert_eq!(
            message,
            wire::encode_message(MessageType::WatchEvent.number(), 0, 0, b"/a\0token\0")
        );
        assert_eq!(
            event_message(&[b'a'; PAYLOAD_MAX_BYTES], b""),
            Err(StoreError::TooBig)
        );
        let mut room = [0u8; 48];
        assert_eq!(
            special_per_domain(RELEASE_DOMAIN, DomainId(65535), &mut room),
            b"@releaseDomain/65535"
        );
        assert!(REPLY_ROOM_BYTES >= HEADER_SIZE_BYTES + "/local/domain/65535\0".len());
    }

    #[test]
    fn the_trace_shows_payloads_without_allocating_them() {
        assert_eq!(Printable(b"/a\0b\x01").to_string(), "/a b.");
        let long = [b'x'; 300];
        let shown = Printable(&long).to_string();
        assert_eq!(shown.len(), 259);
        assert!(shown.ends_with("x..."));
    }
}
