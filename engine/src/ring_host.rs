//! The ring host: every front end's rings, which of them need service, and the ring table's changes that requests cause.
//!
//! The PVH kernel (grant-mapped pages and event channels), the Linux daemon (shared files and
//! FIFOs) and the stub-heap benchmark (in-memory pages) differ only in how a ring is attached,
//! notified and released, and in how they wait: that is their [`RingPort`]. The rest is here,
//! once, and tested on the host:
//!
//! - which rings have work: notified by their guest ([`RingHost::notified`]), just attached,
//!   given output by the engine, or holding input the engine could not take yet (`blocked`,
//!   retried on every tick);
//! - the ring table's changes: `XS_INTRODUCE` attaches a ring and `XS_RELEASE` or a death
//!   detaches one while the engine is in the middle of a request, possibly a request read
//!   from the very ring being changed. The engine's [`Platform`] here only attaches through
//!   the port (the reply says whether the ring could be mapped, as C xenstored's does) and
//!   records the change; the table changes after the engine has returned
//!   ([`RingHost::with_engine`]), so no ring is ever changed while it is being served;
//! - for ports whose notifications can be lost (Xen's: see [`HostSettings::sweep`]), the
//!   missed-wake-up sweep and the room checks of full rings.
//!
//! The front end's loop is then: wait for events (until [`RingHost::next_deadline_ns`]),
//! report them ([`RingHost::notified`], [`RingHost::domain_died`], ...), and call
//! [`RingHost::serve`] and [`RingHost::tick_if_due`]. The protocol on the page itself is
//! `ring.rs` and `ring_service.rs`; `docs/architecture.md` follows one request through.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use crate::live_update::{LiveUpdatePlan, LiveUpdatePoll};
use crate::memory::MemoryStatus;
use crate::ring::{Ring, RingMemory, connection};
use crate::ring_service::service_ring;
use crate::{ConnectionId, DomainId, Engine, Platform, StoreResult};

/// How often [`Engine::tick`] runs while something waits on time (blocked rings, expiring
/// watch events, the write rate).
pub const TICK_NANOSECONDS: u64 = 100_000_000;
/// Passes over the rings with work per [`RingHost::serve`]: serving one ring can queue watch
/// events for others; the rest waits for the next round, so that one busy set of guests
/// cannot keep the front end from its events.
const SERVICE_PASSES: usize = 4;
/// Missed wake-ups reported one by one; later ones only every 1000th (a guest that writes
/// without notifying must not flood a slow console).
const MISSED_WAKEUPS_REPORTED: u64 = 20;

/// What a front end provides: attaching, notifying and releasing rings, and the machine's
/// facts the engine asks for.
pub trait RingPort {
    /// An attached ring: the mapped page and the bound event channel.
    type Ring;
    /// The memory the ring protocol runs over.
    type Memory: RingMemory + ?Sized;

    /// The page of an attached ring.
    fn memory(ring: &Self::Ring) -> &Self::Memory;

    /// Maps `domain`'s ring and binds its event channel (`XS_INTRODUCE`). `ring_frame` is
    /// the frame the toolstack named (C xenstored ignores it and maps grant reference 1);
    /// `remote_port` is the guest's unbound port. An error is the introduction's answer.
    fn attach(
        &mut self,
        domain: DomainId,
        ring_frame: u64,
        remote_port: u32,
    ) -> StoreResult<Self::Ring>;

    /// Unmaps the ring and closes its event channel (release, death, re-introduction).
    fn detach(&mut self, domain: DomainId, ring: Self::Ring);

    /// Signals the ring's event channel (the port may batch it with its next wait).
    fn notify(&mut self, ring: &Self::Ring);

    /// The ring broke the protocol and is ignored from now on: its notifications need not
    /// wake the front end any more (the ring stays attached until the domain goes).
    fn ignore(&mut self, _domain: DomainId, _ring: &mut Self::Ring) {}

    /// Whether a notification of the ring waits unseen (the sweep leaves such rings to the
    /// event). Ports that cannot tell answer `false`.
    fn event_pending(&self, _ring: &Self::Ring) -> bool {
        false
    }

    /// Whether `domain` exists on the host (for permission entries naming it).
    fn domain_exists(&mut self, domain: DomainId) -> bool;

    /// A monotonic clock. Ports may answer the time they read once per round of their loop.
    fn now_nanoseconds(&mut self) -> u64;

    /// The memory the store can still use (see `memory.rs`); `None`: no limit.
    fn memory_status(&mut self) -> Option<MemoryStatus> {
        None
    }
}

/// How a host checks for work that no notification announced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// `Some(interval)`: notifications can be lost, as on Xen, where Linux's `xb_write()` and
    /// `xb_read()` store their index and then read ours without a full barrier, so a guest
    /// can, rarely, skip a notification we needed. After all announced work is done, the
    /// rings served in the last two intervals are then checked for unread requests or
    /// replies with room (C xenstored checks every connection in every loop, at a cost in
    /// proportion to the domains; an idle ring needs no check since the race needs both
    /// sides at the ring), and a ring whose replies wait for room is checked with a
    /// doubling interval up to [`ROOM_CHECK_MAX_NANOSECONDS`]. `None`: every notification
    /// arrives (the daemon's FIFOs).
    pub sweep: Option<u64>,
}

/// Longest interval between checks of a ring whose replies wait for room.
pub const ROOM_CHECK_MAX_NANOSECONDS: u64 = 10_000_000_000;

/// One hosted ring.
struct HostedRing<R> {
    ring: R,
    /// Bytes read from the ring that the engine has not taken yet.
    pending_input: Vec<u8>,
    /// The engine's feature set for the domain was written to the page.
    features_written: bool,
    /// The connection broke the protocol: the ring is ignored (not released).
    ignored: bool,
    /// Replies wait for room in the full ring: when to look again, and the interval so far
    /// (Linux's `xb_read()` can miss that the ring was full and skip the notification we
    /// wait for; a guest that stopped reading, a paused domain, is checked rarely).
    room_check: Option<RoomCheck>,
}

impl<R> HostedRing<R> {
    fn new(ring: R) -> HostedRing<R> {
        HostedRing {
            ring,
            pending_input: Vec::new(),
            features_written: false,
            ignored: false,
            room_check: None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct RoomCheck {
    due_ns: u64,
    interval_ns: u64,
}

/// A change of the ring table, made by the engine during a request and applied after it.
enum RingChange<R> {
    Attached(DomainId, R),
    Detached(DomainId),
}

/// The engine's [`Platform`] while it runs under a host: attaching goes through the port at
/// once (its result is the reply), the ring table changes later.
struct HostPlatform<'host, P: RingPort> {
    port: &'host mut P,
    changes: &'host mut Vec<RingChange<P::Ring>>,
}

impl<P: RingPort> Platform for HostPlatform<'_, P> {
    fn connect_domain(
        &mut self,
        domain: DomainId,
        ring_frame: u64,
        remote_port: u32,
    ) -> StoreResult<()> {
        let ring = self.port.attach(domain, ring_frame, remote_port)?;
        // Fresh indices, and a pending RECONNECT answered (C `domain_conn_reset()`), now:
        // the reply to this request may go to this very page (a domain re-introduced from
        // its own ring), and must land after the reset. The features start empty; the
        // engine's set is written when the ring is first served, which is next.
        Ring::new(P::memory(&ring)).server_reset(0);
        self.changes.push(RingChange::Attached(domain, ring));
        Ok(())
    }

    fn disconnect_domain(&mut self, domain: DomainId) {
        self.changes.push(RingChange::Detached(domain));
    }

    fn domain_exists(&mut self, domain: DomainId) -> bool {
        self.port.domain_exists(domain)
    }

    fn now_milliseconds(&mut self) -> u64 {
        self.port.now_nanoseconds() / 1_000_000
    }

    fn memory_status(&mut self) -> Option<MemoryStatus> {
        self.port.memory_status()
    }
}

/// Counts a host keeps for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStatistics {
    /// Rings found with work that no notification announced (see [`HostSettings::sweep`]).
    pub missed_wakeups: u64,
}

/// The engine and the rings it serves, over one front end's [`RingPort`].
pub struct RingHost<P: RingPort> {
    engine: Engine,
    port: P,
    settings: HostSettings,
    rings: BTreeMap<DomainId, HostedRing<P::Ring>>,
    /// Filled by [`HostPlatform`] during an engine call, emptied right after it.
    changes: Vec<RingChange<P::Ring>>,
    /// Rings with work: notified by their guest, or just attached.
    needs_service: BTreeSet<DomainId>,
    /// Rings whose input waits for the engine (outstanding-request or write-rate limit).
    blocked: BTreeSet<DomainId>,
    /// Rings with a room check.
    awaiting_room: BTreeSet<DomainId>,
    /// Rings served since the last sweep, and in the interval before it: the ones the next
    /// sweep checks.
    served_since_sweep: BTreeSet<DomainId>,
    served_before_sweep: BTreeSet<DomainId>,
    next_sweep_ns: u64,
    next_tick_ns: u64,
    statistics: HostStatistics,
}

impl<P: RingPort> RingHost<P> {
    /// A host with no rings yet.
    pub fn new(engine: Engine, mut port: P, settings: HostSettings) -> RingHost<P> {
        let now_ns = port.now_nanoseconds();
        RingHost {
            engine,
            port,
            settings,
            rings: BTreeMap::new(),
            changes: Vec::new(),
            needs_service: BTreeSet::new(),
            blocked: BTreeSet::new(),
            awaiting_room: BTreeSet::new(),
            served_since_sweep: BTreeSet::new(),
            served_before_sweep: BTreeSet::new(),
            next_sweep_ns: now_ns.saturating_add(settings.sweep.unwrap_or(0)),
            next_tick_ns: now_ns,
            statistics: HostStatistics::default(),
        }
    }

    /// The engine, to read from (output, connections, features).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine, for calls that need no platform (taking sent output, opening a socket
    /// connection). Calls that process requests or deaths need one, which only
    /// [`RingHost::with_engine`] hands out.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The port.
    pub fn port(&self) -> &P {
        &self.port
    }

    /// The port, to change it (its clock, its pending notifications).
    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    /// The host's counts.
    pub fn statistics(&self) -> HostStatistics {
        self.statistics
    }

    /// Runs `call` on the engine with this host's platform, then applies the ring table's
    /// changes the call made. Every engine call that can process a request or a domain's
    /// death goes through here (sockets' input, death reports).
    pub fn with_engine<T>(&mut self, call: impl FnOnce(&mut Engine, &mut dyn Platform) -> T) -> T {
        let mut platform = HostPlatform {
            port: &mut self.port,
            changes: &mut self.changes,
        };
        let result = call(&mut self.engine, &mut platform);
        self.apply_changes();
        result
    }

    /// Takes a ring the front end attached itself, whose guest is already waiting on it
    /// (dom0's at the stub's start: `init-xenstore-domain` has written requests, so the
    /// indices are kept): the domain gets its connection, the ring its features and the
    /// `CONNECTED` state, and the guest a notification.
    pub fn adopt(&mut self, domain: DomainId, ring: P::Ring) -> ConnectionId {
        {
            let page = Ring::new(P::memory(&ring));
            page.set_server_features(self.engine.domain_features(domain));
        }
        if let Some(previous) = self.rings.remove(&domain) {
            self.release(domain, previous);
        }
        let mut hosted = HostedRing::new(ring);
        hosted.features_written = true;
        self.rings.insert(domain, hosted);
        let connection =
            self.with_engine(|engine, platform| engine.open_domain_connection(platform, domain));
        if let Some(hosted) = self.rings.get(&domain) {
            Ring::new(P::memory(&hosted.ring)).set_connection(connection::CONNECTED);
            self.port.notify(&hosted.ring);
        }
        self.needs_service.insert(domain);
        connection
    }

    /// Takes a ring of a connection restored from a migration stream
    /// ([`Engine::from_state`]): as [`RingHost::adopt`] (the indices are kept, the guest
    /// goes on where it was), with the input the old instance had read and not processed
    /// offered to the engine before anything read from the ring.
    pub fn adopt_restored(
        &mut self,
        domain: DomainId,
        ring: P::Ring,
        unread_input: Vec<u8>,
    ) -> ConnectionId {
        let connection = self.adopt(domain, ring);
        if let Some(hosted) = self.rings.get_mut(&domain) {
            hosted.pending_input = unread_input;
        }
        connection
    }

    /// The engine's state as a migration stream ([`Engine::write_state`]), the rings'
    /// input that the engine has not taken included; `front_end` answers the rest (ports,
    /// unique ids, socket descriptors, its sockets' unread input).
    pub fn write_state(
        &self,
        front_end: &dyn crate::migration::FrontEndState,
    ) -> Result<Vec<u8>, crate::StateError> {
        let with_rings = WithRingInput {
            host: self,
            front_end,
        };
        self.engine.write_state(&with_rings)
    }

    /// The engine's state for a live update ([`Engine::write_live_update_state`]): as
    /// [`RingHost::write_state`], in the plan's stream version, with the start's `OK`
    /// queued to the requester.
    pub fn write_live_update_state(
        &self,
        plan: &LiveUpdatePlan,
        front_end: &dyn crate::migration::FrontEndState,
    ) -> Result<Vec<u8>, crate::StateError> {
        let with_rings = WithRingInput {
            host: self,
            front_end,
        };
        self.engine.write_live_update_state(plan, &with_rings)
    }

    /// Applies a started live update's rules now ([`Engine::poll_live_update`]).
    pub fn poll_live_update(&mut self) -> LiveUpdatePoll {
        self.with_engine(|engine, platform| engine.poll_live_update(platform))
    }

    /// The front end could not carry the plan out ([`Engine::live_update_failed`]): the
    /// start is answered `reason`; rings holding back a transaction start are served on.
    pub fn live_update_failed(&mut self, plan: LiveUpdatePlan, reason: &str) {
        self.with_engine(|engine, platform| engine.live_update_failed(plan, reason, platform));
    }

    /// The guest signalled its ring (an event, a FIFO byte).
    pub fn notified(&mut self, domain: DomainId) {
        if self.rings.contains_key(&domain) {
            self.needs_service.insert(domain);
        }
    }

    /// The hypervisor reports `domain` shut down: `@releaseDomain` fires (once).
    pub fn domain_shutdown(&mut self, domain: DomainId) {
        self.with_engine(|engine, platform| engine.domain_shutdown(platform, domain));
    }

    /// The hypervisor reports `domain` dead: the engine releases it and its ring goes.
    pub fn domain_died(&mut self, domain: DomainId) {
        self.with_engine(|engine, platform| engine.domain_died(platform, domain));
        if let Some(hosted) = self.rings.remove(&domain) {
            self.release(domain, hosted);
        }
    }

    /// Whether `domain` has an attached ring.
    pub fn has_ring(&self, domain: DomainId) -> bool {
        self.rings.contains_key(&domain)
    }

    /// `domain`'s attached ring.
    pub fn ring(&self, domain: DomainId) -> Option<&P::Ring> {
        self.rings.get(&domain).map(|hosted| &hosted.ring)
    }

    /// The rings served (attached and not ignored): the ones whose events matter.
    pub fn served_rings(&self) -> impl Iterator<Item = (DomainId, &P::Ring)> {
        self.rings
            .iter()
            .filter(|(_, hosted)| !hosted.ignored)
            .map(|(domain, hosted)| (*domain, &hosted.ring))
    }

    /// How many rings are attached.
    pub fn ring_count(&self) -> usize {
        self.rings.len()
    }

    /// Whether rings wait for service: notified or attached and not served yet, or holding
    /// input the engine has not taken.
    pub fn has_ring_work(&self) -> bool {
        !self.needs_service.is_empty() || !self.blocked.is_empty()
    }

    /// Whether every ring's input was taken by the engine and every hosted connection's
    /// output was sent.
    pub fn is_drained(&self) -> bool {
        self.rings.iter().all(|(domain, hosted)| {
            hosted.pending_input.is_empty()
                && self
                    .engine
                    .domain_connection(*domain)
                    .is_none_or(|connection| self.engine.output(connection).is_empty())
        })
    }

    /// The bytes the rings' input buffers keep allocated.
    pub fn pending_input_capacity_bytes(&self) -> usize {
        self.rings
            .values()
            .map(|hosted| hosted.pending_input.capacity())
            .sum()
    }

    /// The size of one ring's record in the host (the port's ring included).
    pub fn hosted_ring_size_bytes() -> usize {
        core::mem::size_of::<HostedRing<P::Ring>>()
    }

    /// Detaches every ring, without telling the engine (a front end that stops serving; the
    /// stub-heap benchmark, to measure the rings' share of the heap).
    pub fn detach_all(&mut self) {
        let rings = core::mem::take(&mut self.rings);
        for (domain, hosted) in rings {
            self.port.detach(domain, hosted.ring);
        }
        self.needs_service = BTreeSet::new();
        self.blocked = BTreeSet::new();
        self.awaiting_room = BTreeSet::new();
        self.served_since_sweep = BTreeSet::new();
        self.served_before_sweep = BTreeSet::new();
    }

    /// Serves the rings with work, then (ports that lose notifications) sweeps the recently
    /// served ones and checks the full ones that are due. Connections the engine queued
    /// output for that are not hosted rings (the daemon's sockets) are handed to
    /// `other_output`. Returns whether work is left: then the front end must not sleep,
    /// since no event would announce it.
    pub fn serve(&mut self, other_output: &mut dyn FnMut(ConnectionId)) -> bool {
        let mut work_remains = true;
        for _ in 0..SERVICE_PASSES {
            self.sort_output_ready(other_output);
            let mut domains = core::mem::take(&mut self.needs_service);
            domains.extend(self.blocked.iter().copied());
            if domains.is_empty() {
                work_remains = false;
                break;
            }
            for domain in domains {
                self.serve_ring(domain);
            }
        }
        if work_remains {
            // Blocked rings alone are not left-over work: the tick retries them.
            self.sort_output_ready(other_output);
            work_remains = !self.needs_service.is_empty();
        }
        if !work_remains && let Some(interval_ns) = self.settings.sweep {
            // Only now, with every announced piece of work done and no output left unserved,
            // does work found on a ring mean that no event announced it.
            let now_ns = self.port.now_nanoseconds();
            if now_ns >= self.next_sweep_ns {
                let recently_served: Vec<DomainId> = self
                    .served_since_sweep
                    .union(&self.served_before_sweep)
                    .copied()
                    .collect();
                self.sweep(&recently_served);
                self.served_before_sweep = core::mem::take(&mut self.served_since_sweep);
                self.next_sweep_ns = now_ns.saturating_add(interval_ns);
            }
            self.check_rings_awaiting_room(now_ns);
            work_remains = !self.needs_service.is_empty();
        }
        work_remains
    }

    /// Sorts the connections the engine queued output for: hosted rings to serve, the rest
    /// to `other_output`.
    pub fn sort_output_ready(&mut self, other_output: &mut dyn FnMut(ConnectionId)) {
        if !self.engine.has_output_ready() {
            return;
        }
        for connection in self.engine.take_output_ready() {
            match self.engine.connection_domain(connection) {
                Some(domain)
                    if self.engine.domain_connection(domain) == Some(connection)
                        && self.rings.contains_key(&domain) =>
                {
                    self.needs_service.insert(domain);
                }
                _ => other_output(connection),
            }
        }
    }

    /// When the front end must wake up at the latest (`None`: only for an event): the next
    /// tick while something waits on time, the next sweep while rings were served recently,
    /// the earliest room check, the time a started live update's poll may change its answer
    /// ([`Engine::live_update_deadline_ms`]).
    pub fn next_deadline_ns(&mut self) -> Option<u64> {
        let now_ns = self.port.now_nanoseconds();
        let timed_work = !self.blocked.is_empty() || self.engine.has_timed_work();
        let tick = timed_work.then(|| {
            self.next_tick_ns
                .min(now_ns.saturating_add(TICK_NANOSECONDS))
        });
        let sweep_due = self.settings.sweep.is_some()
            && !(self.served_since_sweep.is_empty() && self.served_before_sweep.is_empty());
        let sweep = sweep_due.then_some(self.next_sweep_ns);
        let room = self
            .awaiting_room
            .iter()
            .filter_map(|domain| self.rings.get(domain)?.room_check)
            .map(|check| check.due_ns)
            .min();
        let live_update = self
            .engine
            .live_update_deadline_ms()
            .map(|deadline_ms| deadline_ms.saturating_mul(1_000_000));
        [tick, sweep, room, live_update].into_iter().flatten().min()
    }

    /// Runs [`Engine::tick`] when a tick is due (every [`TICK_NANOSECONDS`]).
    pub fn tick_if_due(&mut self) {
        let now_ns = self.port.now_nanoseconds();
        if now_ns >= self.next_tick_ns {
            self.with_engine(|engine, platform| engine.tick(platform));
            self.next_tick_ns = now_ns.saturating_add(TICK_NANOSECONDS);
        }
    }

    /// Moves bytes between one ring and the engine, and files the ring by what is left.
    fn serve_ring(&mut self, domain: DomainId) {
        let Some(connection) = self.engine.domain_connection(domain) else {
            return;
        };
        let Some(hosted) = self.rings.get_mut(&domain) else {
            return;
        };
        if self.settings.sweep.is_some() {
            self.served_since_sweep.insert(domain);
        }
        let mut notify = false;
        let mut failed = false;
        {
            let page = Ring::new(P::memory(&hosted.ring));
            if !hosted.features_written {
                // SET_FEATURE before INTRODUCE may have masked bits; the ring protocol
                // allows adding bits after the reset, never clearing them later.
                page.set_server_features(self.engine.domain_features(domain));
                hosted.features_written = true;
                notify = true;
            }
            if !hosted.ignored {
                let mut platform = HostPlatform {
                    port: &mut self.port,
                    changes: &mut self.changes,
                };
                let outcome = service_ring(
                    &mut self.engine,
                    &mut platform,
                    connection,
                    domain,
                    &page,
                    &mut hosted.pending_input,
                );
                notify |= outcome.progressed;
                if let Some(failure) = outcome.failure {
                    log::warn!("domain {domain}: ring ignored from now on ({failure:?})");
                    failed = true;
                }
            }
        }
        if failed {
            hosted.ignored = true;
            self.port.ignore(domain, &mut hosted.ring);
        }
        let waiting = !hosted.pending_input.is_empty() || !self.engine.wants_input(connection);
        // Replies left over because the ring is full: checked again from time to time,
        // since the guest's notification of freed space can be lost (see `room_check`).
        let replies_left = !hosted.ignored && !self.engine.output(connection).is_empty();
        if !replies_left || self.settings.sweep.is_none() {
            hosted.room_check = None;
            self.awaiting_room.remove(&domain);
        } else if notify || hosted.room_check.is_none() {
            // Progress restarts the backoff: only a guest that stops reading is checked
            // rarely.
            let interval_ns = self.settings.sweep.unwrap_or(0);
            hosted.room_check = Some(RoomCheck {
                due_ns: self.port.now_nanoseconds().saturating_add(interval_ns),
                interval_ns,
            });
            self.awaiting_room.insert(domain);
        }
        if waiting && !hosted.ignored {
            self.blocked.insert(domain);
        } else {
            self.blocked.remove(&domain);
        }
        if notify {
            self.port.notify(&hosted.ring);
        }
        self.apply_changes();
    }

    /// Applies the ring table's changes of the last engine call, in order.
    fn apply_changes(&mut self) {
        if self.changes.is_empty() {
            return;
        }
        let mut changes = core::mem::take(&mut self.changes);
        for change in changes.drain(..) {
            match change {
                RingChange::Attached(domain, ring) => {
                    // Reset already (see `HostPlatform::connect_domain`); served next.
                    if let Some(previous) = self.rings.insert(domain, HostedRing::new(ring)) {
                        self.port.detach(domain, previous.ring);
                    }
                    self.blocked.remove(&domain);
                    self.awaiting_room.remove(&domain);
                    self.needs_service.insert(domain);
                }
                RingChange::Detached(domain) => {
                    if let Some(hosted) = self.rings.remove(&domain) {
                        self.release(domain, hosted);
                    }
                }
            }
        }
        // Keep the allocation for the next change.
        self.changes = changes;
    }

    fn release(&mut self, domain: DomainId, hosted: HostedRing<P::Ring>) {
        self.needs_service.remove(&domain);
        self.blocked.remove(&domain);
        self.awaiting_room.remove(&domain);
        self.served_since_sweep.remove(&domain);
        self.served_before_sweep.remove(&domain);
        self.port.detach(domain, hosted.ring);
    }

    /// Marks for service every ring of `domains` that holds work no event announced: request
    /// bytes not read, or queued replies with room in the ring. Each find is counted and
    /// reported as a missed wake-up (a guest vCPU preempted between writing its ring and
    /// notifying counts too; serving it early is harmless).
    fn sweep(&mut self, domains: &[DomainId]) {
        for domain in domains {
            let Some(hosted) = self.rings.get(domain) else {
                continue;
            };
            if hosted.ignored
                || self.blocked.contains(domain)
                || self.needs_service.contains(domain)
                || self.port.event_pending(&hosted.ring)
            {
                continue;
            }
            let page = Ring::new(P::memory(&hosted.ring));
            let unread_request_bytes = page.server_pending_requests().unwrap_or(1);
            let reply_bytes_waiting = self
                .engine
                .domain_connection(*domain)
                .map_or(0, |connection| self.engine.output(connection).len());
            let reply_room_bytes = page.server_response_space().unwrap_or(1);
            if unread_request_bytes == 0 && (reply_bytes_waiting == 0 || reply_room_bytes == 0) {
                continue;
            }
            self.statistics.missed_wakeups += 1;
            let count = self.statistics.missed_wakeups;
            if count <= MISSED_WAKEUPS_REPORTED || count.is_multiple_of(1000) {
                log::warn!(
                    "domain {domain}: missed wake-up #{count}: {unread_request_bytes} request \
                     bytes unread, {reply_bytes_waiting} reply bytes queued with \
                     {reply_room_bytes} bytes of room, no event pending; serving the ring"
                );
            }
            self.needs_service.insert(*domain);
        }
    }

    /// Sweeps the rings whose room check is due, and doubles their interval up to
    /// [`ROOM_CHECK_MAX_NANOSECONDS`].
    fn check_rings_awaiting_room(&mut self, now_ns: u64) {
        let mut due = Vec::new();
        for domain in &self.awaiting_room {
            if let Some(hosted) = self.rings.get_mut(domain)
                && let Some(check) = hosted.room_check.as_mut()
                && check.due_ns <= now_ns
            {
                check.interval_ns = check
                    .interval_ns
                    .saturating_mul(2)
                    .min(ROOM_CHECK_MAX_NANOSECONDS);
                check.due_ns = now_ns.saturating_add(check.interval_ns);
                due.push(*domain);
            }
        }
        if !due.is_empty() {
            self.sweep(&due);
        }
    }
}

/// A front end's answers, with the rings' unread input added.
struct WithRingInput<'a, P: RingPort> {
    host: &'a RingHost<P>,
    front_end: &'a dyn crate::migration::FrontEndState,
}

impl<P: RingPort> crate::migration::FrontEndState for WithRingInput<'_, P> {
    fn unread_input(&self, connection: ConnectionId) -> &[u8] {
        let engine = &self.host.engine;
        let ring = engine
            .connection_domain(connection)
            .filter(|domain| engine.domain_connection(*domain) == Some(connection))
            .and_then(|domain| self.host.rings.get(&domain));
        match ring {
            Some(hosted) => hosted.pending_input.as_slice(),
            None => self.front_end.unread_input(connection),
        }
    }

    fn event_channel_port(&self, domain: DomainId) -> u32 {
        self.front_end.event_channel_port(domain)
    }

    fn unique_id(&self, domain: DomainId) -> Option<u64> {
        self.front_end.unique_id(domain)
    }

    fn socket_fd(&self, connection: ConnectionId) -> i32 {
        self.front_end.socket_fd(connection)
    }

    fn global(&self) -> crate::migration::GlobalData {
        self.front_end.global()
    }
}
