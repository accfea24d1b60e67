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
use crate::xen::xenstore_ring::MappedRingPage;

/// How long the loop sleeps at most between time-driven work (watch-event expiry, write credit).
const TICK_NANOSECONDS: u64 = 100_000_000;
/// `SCHEDOP_poll` takes at most this many ports; beyond, the loop polls with a short timeout.
const POLLED_PORTS_MAX: usize = 128;
/// Sleep when there are too many ports to list.
const UNLISTED_WAIT_NANOSECONDS: u64 = 5_000_000;

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
        })
    }

    fn release_ring(&mut self, guest: GuestRing) {
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
        self.events.now_ns() / 1_000_000
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
    let mut ports: Vec<EventChannelPort> = Vec::new();
    loop {
        service_rings(&mut engine, &mut stub);

        ports.clear();
        ports.extend(
            stub.rings
                .values()
                .filter(|guest| !guest.ignored)
                .map(|guest| guest.local_port),
        );
        ports.extend(domain_state_port);
        let now_ns = stub.events.now_ns();
        let until_tick_ns = next_tick_ns
            .saturating_sub(now_ns)
            .clamp(1, TICK_NANOSECONDS);
        // Sleep until an event unless time-driven work waits: rings held back by a quota or
        // the write rate (retried each tick), or watch events that may expire. An idle
        // store then costs no CPU (a 100 ms tick cost about 1% of a TCG vCPU).
        let timed_work = !stub.blocked.is_empty() || engine.has_timed_work();
        let waited = if ports.len() <= POLLED_PORTS_MAX {
            stub.events
                .wait(&ports, timed_work.then_some(until_tick_ns))
        } else {
            stub.events
                .wait(&[], Some(until_tick_ns.min(UNLISTED_WAIT_NANOSECONDS)))
        };
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
        let now_ns = stub.events.now_ns();
        if now_ns >= next_tick_ns {
            engine.tick(&mut stub);
            next_tick_ns = now_ns + TICK_NANOSECONDS;
        }
    }
}

/// Moves bytes for the rings with work: notified, newly connected, given output by the
/// engine, or holding input the engine could not take yet. Serving one ring can queue
/// watch events for others, so this repeats a bounded number of times.
fn service_rings(engine: &mut Engine, stub: &mut StubPlatform) {
    for _ in 0..4 {
        let mut domids = core::mem::take(&mut stub.needs_service);
        domids.extend(stub.blocked.iter().copied());
        for connection in engine.take_output_ready() {
            if let Some(domain) = engine.connection_domain(connection) {
                domids.insert(domain.0);
            }
        }
        if domids.is_empty() {
            return;
        }
        service_ring_set(engine, stub, domids);
    }
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
        if waiting && !guest.ignored {
            stub.blocked.insert(domid);
        } else {
            stub.blocked.remove(&domid);
        }
        if notify {
            let _ = stub.events.notify(guest.local_port);
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
