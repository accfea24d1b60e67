//! Serving xenstore on Xen: the engine behind dom0's and every introduced guest's ring.
//!
//! Boot contract of `init-xenstore-domain` (xen-abi §8): the command line carries
//! `--event <port>` (dom0's end of its xenstore event channel) and C xenstored's options
//! passed with `--param`. dom0 has granted us its ring as grant reference 1; we map it, bind
//! the port, mark the ring connected and serve dom0 first, because `init-xenstore-domain`
//! blocks in its first xenstore writes until we do. Guests arrive through `XS_INTRODUCE`
//! (their grant reference 1 and the given port). `VIRQ_DOM_EXC` tells us a domain changed
//! state; `XEN_DOMCTL_getdomaininfo` says which (Xen 4.17's interface).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use xen_hypercall::cpuid::XenVersion;
use xen_hypercall::domctl::{self, dominf};
use xen_hypercall::event_channel::VIRQ_DOM_EXC;
use xen_hypercall::{DomId, EventChannelPort, GrantRef, Hypervisor, XenErrno};
use xenstore_engine::domain_state::{
    DomainState, DomainStateError, DomainStateSource, DomainStateTracker,
};
use xenstore_engine::memory::MemoryStatus;
use xenstore_engine::options::{
    OptionError, OptionName, STORE_FLAGS, STORE_OPTIONS_WITH_VALUE, apply_store_option,
    domain_value, for_each_option,
};
use xenstore_engine::ring::Ring;
use xenstore_engine::ring::connection;
use xenstore_engine::ring_service::service_ring;
use xenstore_engine::{Config, DomainId, Engine, Platform, StoreError, StoreResult};

use crate::cmdline::CommandLine;
use crate::kernel::BootedPlatform;
use crate::runtime::{console, trace};
use crate::xen::event_channel::EventChannels;
use crate::xen::grant_table::{GrantMapper, GrantWindow, plan_grant_window};
use crate::xen::runstate::WakeClock;
use crate::xen::xenstore_ring::MappedRingPage;

/// How long the loop sleeps at most between time-driven work (watch-event expiry, write credit).
const TICK_NANOSECONDS: u64 = 100_000_000;
/// `SCHEDOP_poll` takes at most this many ports; beyond, the loop polls with a short timeout.
const POLLED_PORTS_MAX: usize = 128;
/// Sleep when there are too many ports to list.
const UNLISTED_WAIT_NANOSECONDS: u64 = 5_000_000;
/// How soon after serving a ring it is checked again for work that arrived without an
/// event (see [`sweep_rings`]). Only rings served in the last two such intervals are
/// checked, so an idle store does not wake up at all.
const SWEEP_NANOSECONDS: u64 = 100_000_000;
/// Longest interval between checks of a ring that waits for room for its replies (the
/// interval doubles from [`SWEEP_NANOSECONDS`] while the guest does not read).
const ROOM_CHECK_MAX_NANOSECONDS: u64 = 10_000_000_000;
/// Missed wake-ups reported one by one on the console; later ones only every 1000th (a
/// guest that writes without notifying must not flood the slow debug console).
const MISSED_WAKEUPS_REPORTED: u64 = 20;

/// Options the stub accepts besides the store's (C xenstored's, ignored where meaningless here).
const STUB_OPTIONS_WITH_VALUE: [OptionName; 3] = [
    OptionName {
        short: 'T',
        long: "trace-file",
    },
    OptionName {
        short: '\0',
        long: "master-domid",
    },
    OptionName {
        short: 'F',
        long: "pid-file",
    },
];
const STUB_FLAGS: [OptionName; 4] = [
    OptionName {
        short: 'N',
        long: "no-fork",
    },
    OptionName {
        short: 'I',
        long: "internal-db",
    },
    OptionName {
        short: 'D',
        long: "no-domain-init",
    },
    OptionName {
        short: 'V',
        long: "verbose-trace",
    },
];

/// One served ring.
struct GuestRing {
    domain: DomainId,
    page: MappedRingPage,
    local_port: EventChannelPort,
    /// Bytes read from the ring that the engine has not taken yet.
    pending_input: Vec<u8>,
    /// The engine's feature set for the domain was written to the page.
    features_written: bool,
    /// The connection broke the protocol: the ring is ignored (not released).
    ignored: bool,
    /// Replies wait for room in the full ring: when to look again, and the interval so far.
    /// Linux's `xb_read()` frees space and then re-reads `rsp_prod` without a full
    /// barrier, so it can miss that the ring was full and skip the notification we wait
    /// for. Checking with a doubling interval covers that race without polling a guest
    /// that stopped reading (a paused domain) more than every few seconds.
    room_check: Option<RoomCheck>,
}

/// See [`GuestRing::room_check`].
#[derive(Clone, Copy, Debug)]
struct RoomCheck {
    due_ns: u64,
    interval_ns: u64,
}

/// The engine's view of Xen.
pub struct StubPlatform {
    hypervisor: Hypervisor,
    xen_version: XenVersion,
    events: EventChannels,
    mapper: GrantMapper,
    rings: BTreeMap<u16, GuestRing>,
    /// Which domain's ring each local event-channel port serves.
    port_domains: BTreeMap<u32, u16>,
    /// Domains whose ring was connected or disconnected while the engine ran.
    changed_domains: Vec<u16>,
    /// Rings with work: notified by their guest, or just connected.
    needs_service: BTreeSet<u16>,
    /// Rings whose input waits for the engine (outstanding-request or write-rate limit).
    blocked: BTreeSet<u16>,
    /// Rings with a [`GuestRing::room_check`].
    awaiting_room: BTreeSet<u16>,
    /// Work found by [`sweep_rings`] that no event had announced.
    missed_wakeups: u64,
    /// Rings served since the last sweep, and in the interval before it: the ones the next
    /// sweep checks. A lost notification happens while a guest and we touch the ring at
    /// the same moment, so an idle ring needs no sweep, and an idle store no wake-ups.
    served_since_sweep: BTreeSet<u16>,
    served_before_sweep: BTreeSet<u16>,
    /// Ports of the rings served this round: notified together with the next sleep.
    to_notify: Vec<EventChannelPort>,
    /// Xen refused `HYPERVISOR_multicall`: notify and sleep with separate hypercalls.
    multicall_refused: bool,
    /// Xen system time read once per round of the loop, right after its sleep (by
    /// `clock`: no TSC read when the sleep blocked), and used for everything the round
    /// times: the engine's clock, sweeps, room checks, the next sleep's deadline. Each
    /// `rdtsc` can be a guest exit (see [`WakeClock`]); reading the time at every use cost
    /// five exits and 40% of the stub's running time per request (xentrace). Work of one
    /// round is at most a few ms old by this clock; every deadline it sets is then that
    /// much early, never late.
    round_ns: u64,
    clock: WakeClock,
}

/// How the loop rests after a round.
#[derive(Clone, Copy)]
enum Rest {
    /// Work is left: send the notifications and go on.
    None,
    /// Sleep until an event, or at most until this Xen system time (`None`: no limit).
    UntilEvent(Option<u64>),
}

impl StubPlatform {
    /// Sends this round's notifications, then rests as `rest` says. `ports: None`: too
    /// many to list; sleep for any event of the domain, always with a short timeout (an
    /// event that came before the call would not end the sleep).
    fn notify_then_rest(
        &mut self,
        ports: Option<&[EventChannelPort]>,
        rest: Rest,
    ) -> Result<(), XenErrno> {
        let mut notify = core::mem::take(&mut self.to_notify);
        notify.sort_unstable_by_key(|port| port.0);
        notify.dedup();
        let result = match (ports, rest) {
            (Some(ports), Rest::UntilEvent(deadline_ns)) if !self.multicall_refused => {
                match self
                    .events
                    .notify_then_wait_until(&notify, ports, deadline_ns)
                {
                    Err(XenErrno::NotImplemented) => {
                        log::info!("multicall refused: notifying and polling separately");
                        self.multicall_refused = true;
                        self.notify_then_rest_separately(&notify, Some(ports), rest)
                    }
                    result => result,
                }
            }
            _ => self.notify_then_rest_separately(&notify, ports, rest),
        };
        notify.clear();
        self.to_notify = notify;
        result
    }

    fn notify_then_rest_separately(
        &self,
        notify: &[EventChannelPort],
        ports: Option<&[EventChannelPort]>,
        rest: Rest,
    ) -> Result<(), XenErrno> {
        for port in notify {
            // A port closed meanwhile (its domain went away) has nobody to wake.
            let _ = self.events.notify(*port);
        }
        match (ports, rest) {
            (_, Rest::None) => Ok(()),
            (Some(ports), Rest::UntilEvent(deadline_ns)) => {
                self.events.wait_until(ports, deadline_ns)
            }
            (None, Rest::UntilEvent(deadline_ns)) => {
                let unlisted_ns = self.round_ns.saturating_add(UNLISTED_WAIT_NANOSECONDS);
                let deadline_ns = deadline_ns.map_or(unlisted_ns, |ns| ns.min(unlisted_ns));
                self.events.wait_until(&[], Some(deadline_ns))
            }
        }
    }
}

impl StubPlatform {
    fn map_ring(&mut self, domain: DomainId, remote_port: u32) -> StoreResult<GuestRing> {
        let page = self
            .mapper
            .map(DomId(domain.0), GrantRef::RESERVED_XENSTORE)
            .map_err(|error| {
                log::warn!("domain {domain}: cannot map its xenstore ring (grant 1): {error}");
                StoreError::Invalid
            })?;
        let local_port = match self
            .events
            .bind_interdomain(DomId(domain.0), EventChannelPort(remote_port))
        {
            Ok(port) => port,
            Err(errno) => {
                log::warn!("domain {domain}: cannot bind its port {remote_port}: {errno}");
                if let Err(error) = self.mapper.unmap(page) {
                    log::warn!("domain {domain}: unmap failed: {error}");
                }
                return Err(StoreError::Invalid);
            }
        };
        self.port_domains.insert(local_port.0, domain.0);
        Ok(GuestRing {
            domain,
            page: MappedRingPage::new(page),
            local_port,
            pending_input: Vec::new(),
            features_written: false,
            ignored: false,
            room_check: None,
        })
    }

    fn release_ring(&mut self, guest: GuestRing) {
        if guest.room_check.is_some() {
            self.awaiting_room.remove(&guest.domain.0);
        }
        if self.port_domains.get(&guest.local_port.0) == Some(&guest.domain.0) {
            self.port_domains.remove(&guest.local_port.0);
        }
        if let Err(errno) = self.events.close(guest.local_port) {
            log::warn!(
                "domain {}: closing port {} failed: {errno}",
                guest.domain,
                guest.local_port
            );
        }
        if let Err(error) = self.mapper.unmap(guest.page.into_page()) {
            log::warn!(
                "domain {}: unmapping its ring failed: {error}",
                guest.domain
            );
        }
    }

    /// What the hypervisor says of `domain`: `None` when it no longer exists.
    fn domain_flags(&self, domain: DomainId) -> Option<u32> {
        match self
            .hypervisor
            .get_domain_info_for_version(DomId(domain.0), self.xen_version)
        {
            // At 4.17 a missing id yields the next higher domain: compare.
            Ok(info) if info.domain == domain.0 => Some(info.flags),
            Ok(_) | Err(XenErrno::NoSuchDomain) => None,
            Err(errno) => {
                // Not knowing is not dying: keep the domain.
                log::warn!("getdomaininfo({domain}) failed: {errno}");
                Some(0)
            }
        }
    }
}

impl Platform for StubPlatform {
    fn connect_domain(
        &mut self,
        domain: DomainId,
        _ring_frame: u64,
        remote_port: u32,
    ) -> StoreResult<()> {
        // C xenstored ignores the frame number and maps grant reference 1 (§7.1).
        let guest = self.map_ring(domain, remote_port)?;
        // C-HEAD domain_conn_reset(): fresh indices; answer a dom0less RECONNECT.
        let ring = Ring::new(&guest.page);
        ring.server_reset(0);
        self.changed_domains.push(domain.0);
        self.needs_service.insert(domain.0);
        if let Some(previous) = self.rings.insert(domain.0, guest) {
            self.release_ring(previous);
        }
        Ok(())
    }

    fn disconnect_domain(&mut self, domain: DomainId) {
        self.changed_domains.push(domain.0);
        if let Some(guest) = self.rings.remove(&domain.0) {
            self.release_ring(guest);
        }
    }

    fn domain_exists(&mut self, domain: DomainId) -> bool {
        self.domain_flags(domain)
            .is_some_and(|flags| flags & dominf::DYING == 0)
    }

    fn now_milliseconds(&mut self) -> u64 {
        self.round_ns / 1_000_000
    }

    /// The heap's figures and the limit it can grow to (`docs/memory.md`): one lock and a
    /// few loads, no hypercall.
    fn memory_status(&mut self) -> Option<MemoryStatus> {
        let heap = crate::runtime::heap::statistics();
        let to_u64 = |bytes: usize| u64::try_from(bytes).unwrap_or(u64::MAX);
        Some(MemoryStatus {
            heap_size_bytes: to_u64(heap.size_bytes),
            heap_used_bytes: to_u64(heap.used_bytes),
            // The size classes' free blocks count: a reclaim gives them to any request.
            heap_free_bytes: to_u64(heap.free_bytes.saturating_add(heap.class_free_bytes)),
            heap_limit_bytes: to_u64(heap.limit_bytes),
        })
    }
}

/// Xen 4.21's `XEN_DOMCTL_get_domain_state(DOMID_INVALID)`: the next changed domain.
struct HypervisorDomainStates(Hypervisor);

impl DomainStateSource for HypervisorDomainStates {
    fn next_changed_domain(&mut self) -> Result<(DomainId, DomainState), DomainStateError> {
        match self.0.get_domain_state(DomId::INVALID) {
            Ok((domain, reported)) => {
                let bit = |flag: u16| reported.state & flag != 0;
                Ok((
                    DomainId(domain.0),
                    DomainState {
                        exists: bit(domctl::domain_state::EXIST),
                        shutdown: bit(domctl::domain_state::SHUTDOWN),
                        dying: bit(domctl::domain_state::DYING),
                        dead: bit(domctl::domain_state::DEAD),
                        unique_id: reported.unique_id,
                    },
                ))
            }
            Err(XenErrno::NoEntry) => Err(DomainStateError::NoneChanged),
            Err(XenErrno::AccessDenied) => Err(DomainStateError::NotHandler),
            Err(errno) => {
                log::warn!("get_domain_state failed: {errno}");
                Err(DomainStateError::Other)
            }
        }
    }
}

/// How this hypervisor tells us about domains.
enum DomainWatcher {
    /// Xen 4.21+: the stable interface, with unique ids.
    DomainState(DomainStateTracker),
    /// Older Xen: scan the introduced domains with `getdomaininfo`.
    DomainInfo,
}

/// The engine's configuration from the command line.
fn configure(command_line: &CommandLine<'_>, own_domid: DomId) -> (Config, DomainId) {
    let mut config = Config {
        privileged_domain: DomainId(command_line.privileged_domid.map_or(0, |domid| domid.0)),
        // The store domain is where the store runs: here (C-HEAD `store_domid`).
        store_domain: DomainId(own_domid.0),
        // The node index's secret hash key (guests must not be able to compute collisions).
        hash_key: [
            crate::arch::x86_64::random_u64(),
            crate::arch::x86_64::random_u64(),
        ],
        ..Config::default()
    };
    // The domain whose ring `--event` names (4.17's `--master-domid`, default dom0).
    let mut master = DomainId(0);
    let with_value: Vec<OptionName> = STORE_OPTIONS_WITH_VALUE
        .iter()
        .chain(&STUB_OPTIONS_WITH_VALUE)
        .copied()
        .collect();
    let flags: Vec<OptionName> = STORE_FLAGS.iter().chain(&STUB_FLAGS).copied().collect();
    let parsed = for_each_option(
        command_line.unrecognised.iter().copied(),
        &with_value,
        &flags,
        |name, value| -> Result<(), OptionError<'_>> {
            if apply_store_option(&mut config, name, value)? {
                return Ok(());
            }
            match name {
                "trace-file" | "verbose-trace" => console::enable_access_trace(),
                "master-domid" => master = domain_value(name, value.unwrap_or(""))?,
                _ => log::info!("option --{name} has no effect in the stub domain"),
            }
            Ok(())
        },
    );
    if let Err(error) = parsed {
        // A bad option must not leave the host without xenstore: say so and go on.
        log::error!("command line: {error}; later options ignored");
    }
    (config, master)
}

/// Serves xenstore until the domain is destroyed.
pub fn serve(platform: &BootedPlatform, command_line: &CommandLine<'_>) -> ! {
    let fail = |what: &str| -> ! {
        log::error!("cannot serve xenstore: {what}");
        crate::runtime::panic::stop_after_failure()
    };
    let Ok(shared_info) = platform.shared_info else {
        fail("shared_info is not mapped");
    };
    let Ok(own_domid) = platform.own_domid else {
        fail("own domain id unknown");
    };
    let Some(dom0_port) = command_line.dom0_event_port else {
        fail("no --event <port> on the command line (start me with init-xenstore-domain)");
    };
    let Ok(memory_map) = &platform.memory_map else {
        fail("no memory map");
    };
    let window =
        match plan_grant_window(memory_map, crate::arch::x86_64::IDENTITY_MAPPED_LIMIT_BYTES) {
            Ok(plan) => match GrantWindow::new(plan) {
                Ok(window) => window,
                Err(_) => fail("no memory for the grant-map window"),
            },
            Err(_) => fail("no room for a grant-map window"),
        };
    let events = EventChannels::new(platform.hypervisor, shared_info.shared_info);
    let (config, master) = configure(command_line, own_domid);
    log::info!(
        "xenstore: store domain {}, privileged domain {}, dom0 ring of domain {master} on port {dom0_port}",
        config.store_domain,
        config.privileged_domain
    );
    let mut engine = Engine::new(config);
    let mut stub = StubPlatform {
        hypervisor: platform.hypervisor,
        xen_version: platform.cpuid_version,
        events,
        mapper: GrantMapper::new(platform.hypervisor, window),
        rings: BTreeMap::new(),
        port_domains: BTreeMap::new(),
        changed_domains: Vec::new(),
        needs_service: BTreeSet::new(),
        blocked: BTreeSet::new(),
        awaiting_room: BTreeSet::new(),
        missed_wakeups: 0,
        served_since_sweep: BTreeSet::new(),
        served_before_sweep: BTreeSet::new(),
        to_notify: Vec::new(),
        multicall_refused: false,
        round_ns: events.now_ns(),
        clock: WakeClock::register(&platform.hypervisor).unwrap_or_else(|errno| {
            log::warn!("no runstate area ({errno}): the clock reads the TSC every round");
            WakeClock::without_area()
        }),
    };
    let mut domain_watcher = if domctl::has_get_domain_state(platform.cpuid_version) {
        DomainWatcher::DomainState(DomainStateTracker::default())
    } else {
        DomainWatcher::DomainInfo
    };
    let domain_state_port = match events.bind_virq(VIRQ_DOM_EXC) {
        Ok(port) => Some(port),
        Err(errno) => {
            log::warn!("VIRQ_DOM_EXC not bound ({errno}): dead domains will not be noticed");
            None
        }
    };

    // dom0 first: its pending requests (init-xenstore-domain's) stay in the ring, so the
    // indices are kept; only `connection` is set and the ring is kicked.
    match stub.map_ring(master, dom0_port.0) {
        Ok(guest) => {
            let ring = Ring::new(&guest.page);
            ring.set_server_features(engine.domain_features(master));
            stub.rings.insert(master.0, guest);
        }
        Err(error) => fail(&alloc::format!("dom0's ring: {error}")),
    }
    engine.open_domain_connection(&mut stub, master);
    if let Some(guest) = stub.rings.get_mut(&master.0) {
        guest.features_written = true;
        Ring::new(&guest.page).set_connection(connection::CONNECTED);
        let _ = stub.events.notify(guest.local_port);
    }
    // Binding the VIRQ marked every existing domain changed (4.21+): learn them now.
    watch_domains(&mut domain_watcher, &mut engine, &mut stub);
    stub.needs_service.insert(master.0);
    crate::console_line!("serving xenstore (dom0 connected)");
    trace::record("xenstore.serving", u64::from(dom0_port.0));

    let mut next_tick_ns = 0u64;
    let mut next_sweep_ns = stub.round_ns.saturating_add(SWEEP_NANOSECONDS);
    let mut ports: Vec<EventChannelPort> = Vec::new();
    loop {
        // Grow the heap before requests need it (they would grow it in the allocator's
        // failure path, at the cost of a failed first fit and a reclaim each time).
        crate::runtime::heap::grow_if_low();
        let mut work_remains = service_rings(&mut engine, &mut stub);
        if !work_remains {
            // Only now, with every announced piece of work done and no output left
            // unserved, does work found on a ring mean that no event announced it.
            let now_ns = stub.round_ns;
            if now_ns >= next_sweep_ns {
                let recently_served: Vec<u16> = stub
                    .served_since_sweep
                    .union(&stub.served_before_sweep)
                    .copied()
                    .collect();
                sweep_rings(&mut engine, &mut stub, &recently_served);
                stub.served_before_sweep = core::mem::take(&mut stub.served_since_sweep);
                next_sweep_ns = now_ns.saturating_add(SWEEP_NANOSECONDS);
            }
            check_rings_awaiting_room(&mut engine, &mut stub, now_ns);
            work_remains = !stub.needs_service.is_empty();
        }

        ports.clear();
        ports.extend(
            stub.rings
                .values()
                .filter(|guest| !guest.ignored)
                .map(|guest| guest.local_port),
        );
        ports.extend(domain_state_port);
        let now_ns = stub.round_ns;
        // Sleep until an event, or sooner when time-driven work waits: rings held back by
        // a quota or the write rate or left full (retried each tick), watch events that may
        // expire, or a sweep of recently served rings. An idle store sleeps without a
        // timeout (a 100 ms tick cost about 1% of a TCG vCPU). With work left over from
        // this round there is no sleep at all.
        // A deadline already past ends the sleep at once.
        let check_deadline_ns = next_check_ns(&stub, next_sweep_ns);
        let timed_work = !stub.blocked.is_empty() || engine.has_timed_work();
        let tick_deadline_ns =
            timed_work.then(|| next_tick_ns.min(now_ns.saturating_add(TICK_NANOSECONDS)));
        let deadline_ns = match (tick_deadline_ns, check_deadline_ns) {
            (Some(tick), Some(check)) => Some(tick.min(check)),
            (tick, check) => tick.or(check),
        };
        let listed_ports = (ports.len() <= POLLED_PORTS_MAX).then_some(ports.as_slice());
        let rest = if work_remains {
            Rest::None
        } else {
            Rest::UntilEvent(deadline_ns)
        };
        let waited = stub.notify_then_rest(listed_ports, rest);
        let events = &stub.events;
        stub.round_ns = stub.clock.read(|| events.now_ns());
        if let Err(errno) = waited {
            log::warn!("SCHEDOP_poll failed: {errno}");
        }
        let mut domains_changed = false;
        let port_domains = &stub.port_domains;
        let needs_service = &mut stub.needs_service;
        stub.events.drain_pending(|port| {
            if Some(port) == domain_state_port {
                domains_changed = true;
            } else if let Some(domid) = port_domains.get(&port.0) {
                needs_service.insert(*domid);
            }
        });
        if domains_changed {
            watch_domains(&mut domain_watcher, &mut engine, &mut stub);
        }
        let now_ns = stub.round_ns;
        if now_ns >= next_tick_ns {
            engine.tick(&mut stub);
            next_tick_ns = now_ns + TICK_NANOSECONDS;
        }
    }
}

/// Marks for service every ring that holds work no event announced: request bytes not
/// read, or queued replies with room in the ring. Our side of the index protocol is fenced
/// (see `xenstore_engine::ring`), but Linux's `xb_write()`/`xb_read()` store their index
/// and then read ours without a full barrier, so a guest can, rarely, skip a notification
/// we needed. C xenstored recovers from that by checking every connection on every loop
/// (`domain_can_read()`), which costs O(domains) per request; once a second it costs
/// nothing. The loop checks the rings served in the last two intervals (see
/// `served_since_sweep`) and those awaiting room (see [`GuestRing::room_check`]), right
/// after serving all announced work. Each find is counted and reported as a missed
/// wake-up; a guest vCPU preempted between writing its ring and notifying is also counted
/// (serving it early is harmless).
fn sweep_rings(engine: &mut Engine, stub: &mut StubPlatform, domids: &[u16]) {
    for (domid, guest) in domids
        .iter()
        .filter_map(|domid| stub.rings.get_key_value(domid))
    {
        if guest.ignored
            || stub.blocked.contains(domid)
            || stub.needs_service.contains(domid)
            || stub.events.is_pending(guest.local_port)
        {
            continue;
        }
        let ring = Ring::new(&guest.page);
        let unread_request_bytes = ring.server_pending_requests().unwrap_or(1);
        let reply_bytes_waiting = engine
            .domain_connection(DomainId(*domid))
            .map_or(0, |connection| engine.output(connection).len());
        let reply_room_bytes = ring.server_response_space().unwrap_or(1);
        if unread_request_bytes == 0 && (reply_bytes_waiting == 0 || reply_room_bytes == 0) {
            continue;
        }
        stub.missed_wakeups += 1;
        let count = stub.missed_wakeups;
        if count <= MISSED_WAKEUPS_REPORTED || count.is_multiple_of(1000) {
            log::warn!(
                "domain {domid}: missed wake-up #{count}: {unread_request_bytes} request bytes \
                 unread, {reply_bytes_waiting} reply bytes queued with {reply_room_bytes} bytes \
                 of room, no event pending; serving the ring"
            );
        }
        trace::record("xenstore.missed_wakeup", u64::from(*domid));
        stub.needs_service.insert(*domid);
    }
}

/// When the loop must next look at rings: the next sweep if any ring was served
/// recently, or the earliest room check.
fn next_check_ns(stub: &StubPlatform, next_sweep_ns: u64) -> Option<u64> {
    let sweep_due = !stub.served_since_sweep.is_empty() || !stub.served_before_sweep.is_empty();
    let room_due = stub
        .awaiting_room
        .iter()
        .filter_map(|domid| stub.rings.get(domid)?.room_check)
        .map(|check| check.due_ns)
        .min();
    match (sweep_due.then_some(next_sweep_ns), room_due) {
        (Some(sweep), Some(room)) => Some(sweep.min(room)),
        (sweep, room) => sweep.or(room),
    }
}

/// Checks the rings whose room check is due (see [`GuestRing::room_check`]), and doubles
/// their interval up to [`ROOM_CHECK_MAX_NANOSECONDS`].
fn check_rings_awaiting_room(engine: &mut Engine, stub: &mut StubPlatform, now_ns: u64) {
    let mut due = Vec::new();
    for domid in &stub.awaiting_room {
        if let Some(guest) = stub.rings.get_mut(domid)
            && let Some(check) = guest.room_check.as_mut()
            && check.due_ns <= now_ns
        {
            check.interval_ns = check
                .interval_ns
                .saturating_mul(2)
                .min(ROOM_CHECK_MAX_NANOSECONDS);
            check.due_ns = now_ns.saturating_add(check.interval_ns);
            due.push(*domid);
        }
    }
    if !due.is_empty() {
        sweep_rings(engine, stub, &due);
    }
}

/// Moves bytes for the rings with work: notified, newly connected, given output by the
/// engine, or holding input the engine could not take yet. Serving one ring can queue
/// watch events for others, so this repeats a bounded number of times (fairness towards
/// the event channels). Returns whether work is left: then the caller must not sleep, since
/// no event would announce that work.
fn service_rings(engine: &mut Engine, stub: &mut StubPlatform) -> bool {
    for _ in 0..4 {
        let mut domids = core::mem::take(&mut stub.needs_service);
        domids.extend(stub.blocked.iter().copied());
        for connection in engine.take_output_ready() {
            if let Some(domain) = engine.connection_domain(connection) {
                domids.insert(domain.0);
            }
        }
        if domids.is_empty() {
            return false;
        }
        service_ring_set(engine, stub, domids);
    }
    // Blocked rings alone are not left-over work: the tick retries them.
    !stub.needs_service.is_empty() || engine.has_output_ready()
}

fn service_ring_set(engine: &mut Engine, stub: &mut StubPlatform, domids: BTreeSet<u16>) {
    for domid in domids {
        let domain = DomainId(domid);
        let Some(connection) = engine.domain_connection(domain) else {
            continue;
        };
        // Out of the map while the engine runs: it may call back into the platform.
        let Some(mut guest) = stub.rings.remove(&domid) else {
            continue;
        };
        stub.changed_domains.clear();
        stub.served_since_sweep.insert(domid);
        let mut notify = false;
        if !guest.features_written {
            // SET_FEATURE before INTRODUCE may have masked bits; the ring document allows
            // adding bits after the reset, never clearing them later.
            Ring::new(&guest.page).set_server_features(engine.domain_features(domain));
            guest.features_written = true;
            notify = true;
        }
        if !guest.ignored {
            let outcome = service_ring(
                engine,
                stub,
                connection,
                domain,
                &Ring::new(&guest.page),
                &mut guest.pending_input,
            );
            notify |= outcome.progressed;
            if let Some(failure) = outcome.failure {
                log::warn!("domain {domain}: ring ignored from now on ({failure:?})");
                guest.ignored = true;
            }
        }
        let waiting = !guest.pending_input.is_empty() || !engine.wants_input(connection);
        // Replies left over because the ring is full: checked again from time to time,
        // since the guest's notification of freed space can be lost (see `room_check`).
        let replies_left = !guest.ignored && !engine.output(connection).is_empty();
        if !replies_left {
            guest.room_check = None;
            stub.awaiting_room.remove(&domid);
        } else if notify || guest.room_check.is_none() {
            // Progress restarts the backoff: only a guest that stops reading is checked
            // rarely.
            let now_ns = stub.round_ns;
            guest.room_check = Some(RoomCheck {
                due_ns: now_ns.saturating_add(SWEEP_NANOSECONDS),
                interval_ns: SWEEP_NANOSECONDS,
            });
            stub.awaiting_room.insert(domid);
        }
        if waiting && !guest.ignored {
            stub.blocked.insert(domid);
        } else {
            stub.blocked.remove(&domid);
        }
        if notify {
            stub.to_notify.push(guest.local_port);
        }
        if stub.changed_domains.contains(&domid) {
            // The engine reconnected or released this domain meanwhile: this copy is stale.
            stub.release_ring(guest);
        } else {
            stub.rings.insert(domid, guest);
        }
    }
}

/// `VIRQ_DOM_EXC` fired: find out who shut down or died.
fn watch_domains(watcher: &mut DomainWatcher, engine: &mut Engine, stub: &mut StubPlatform) {
    match watcher {
        DomainWatcher::DomainState(tracker) => {
            let mut source = HypervisorDomainStates(stub.hypervisor);
            if let Err(error) = tracker.drain(&mut source, engine, stub) {
                log::warn!("domain states unavailable ({error:?}); scanning with getdomaininfo");
                *watcher = DomainWatcher::DomainInfo;
                check_domains(engine, stub);
            }
        }
        DomainWatcher::DomainInfo => check_domains(engine, stub),
    }
}

/// `VIRQ_DOM_EXC`: find which introduced domains shut down or died (C 4.17 `check_domains()`).
fn check_domains(engine: &mut Engine, stub: &mut StubPlatform) {
    for domain in engine.introduced_domains() {
        match stub.domain_flags(domain) {
            None => {
                log::info!("domain {domain} is gone");
                engine.domain_died(stub, domain);
            }
            Some(flags) if flags & dominf::DYING != 0 => {
                log::info!("domain {domain} is dying");
                engine.domain_died(stub, domain);
            }
            Some(flags) if flags & dominf::SHUTDOWN != 0 => engine.domain_shutdown(stub, domain),
            Some(_) => {}
        }
    }
}
