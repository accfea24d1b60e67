//! Serving xenstore on Xen: the engine behind dom0's and every introduced guest's ring.
//!
//! Boot contract of `init-xenstore-domain` (docs/xen-interface.md, "init-xenstore-domain"): the command line carries
//! `--event <port>` (dom0's end of its xenstore event channel) and C xenstored's options
//! passed with `--param`. dom0 has granted us its ring as grant reference 1; we map it, bind
//! the port, mark the ring connected and serve dom0 first, because `init-xenstore-domain`
//! blocks in its first xenstore writes until we do. Guests arrive through `XS_INTRODUCE`
//! (their grant reference 1 and the given port). `VIRQ_DOM_EXC` tells us a domain changed
//! state; `XEN_DOMCTL_getdomaininfo` says which (Xen 4.17's interface).

use alloc::collections::BTreeMap;
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
use xenstore_engine::ring_host::{HostSettings, RingHost, RingPort};
use xenstore_engine::{Config, DomainId, Engine, StoreError, StoreResult};

use crate::cmdline::CommandLine;
use crate::kernel::BootedPlatform;
use crate::runtime::{console, trace};
use crate::xen::event_channel::EventChannels;
use crate::xen::grant_table::{GrantMapper, GrantWindow, plan_grant_window};
use crate::xen::runstate::WakeClock;
use crate::xen::xenstore_ring::MappedRingPage;

/// `SCHEDOP_poll` takes at most this many ports; beyond, the loop polls with a short timeout.
const POLLED_PORTS_MAX: usize = 128;
/// Sleep when there are too many ports to list.
const UNLISTED_WAIT_NANOSECONDS: u64 = 5_000_000;
/// How soon after serving a ring it is checked again for work that arrived without an
/// event (the ring host's sweep, see `HostSettings::sweep`): notifications on Xen can be
/// lost. Only rings served in the last two such intervals are checked, so an idle store
/// does not wake up at all.
const SWEEP_NANOSECONDS: u64 = 100_000_000;

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

/// A domain's ring as the stub holds it: the grant-mapped page and the bound port.
pub struct XenRing {
    domain: DomainId,
    page: MappedRingPage,
    local_port: EventChannelPort,
}

/// The stub's [`RingPort`]: grant mappings and event channels, and the loop's clock.
pub struct XenPort {
    hypervisor: Hypervisor,
    xen_version: XenVersion,
    events: EventChannels,
    mapper: GrantMapper,
    /// Which domain's ring each local event-channel port serves.
    port_domains: BTreeMap<u32, DomainId>,
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

impl XenPort {
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

    /// Maps `domain`'s ring (grant reference 1) and binds `remote_port`.
    fn map_ring(&mut self, domain: DomainId, remote_port: u32) -> StoreResult<XenRing> {
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
        self.port_domains.insert(local_port.0, domain);
        Ok(XenRing {
            domain,
            page: MappedRingPage::new(page),
            local_port,
        })
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

impl RingPort for XenPort {
    type Ring = XenRing;
    type Memory = MappedRingPage;

    fn memory(ring: &XenRing) -> &MappedRingPage {
        &ring.page
    }

    fn attach(
        &mut self,
        domain: DomainId,
        _ring_frame: u64,
        remote_port: u32,
    ) -> StoreResult<XenRing> {
        // C xenstored ignores the frame number and maps grant reference 1
        // (docs/xen-interface.md, "init-xenstore-domain").
        self.map_ring(domain, remote_port)
    }

    fn detach(&mut self, domain: DomainId, ring: XenRing) {
        if self.port_domains.get(&ring.local_port.0) == Some(&domain) {
            self.port_domains.remove(&ring.local_port.0);
        }
        if let Err(errno) = self.events.close(ring.local_port) {
            log::warn!(
                "domain {domain}: closing port {} failed: {errno}",
                ring.local_port
            );
        }
        if let Err(error) = self.mapper.unmap(ring.page.into_page()) {
            log::warn!("domain {}: unmapping its ring failed: {error}", ring.domain);
        }
    }

    fn notify(&mut self, ring: &XenRing) {
        self.to_notify.push(ring.local_port);
    }

    fn event_pending(&self, ring: &XenRing) -> bool {
        self.events.is_pending(ring.local_port)
    }

    fn domain_exists(&mut self, domain: DomainId) -> bool {
        self.domain_flags(domain)
            .is_some_and(|flags| flags & dominf::DYING == 0)
    }

    fn now_nanoseconds(&mut self) -> u64 {
        self.round_ns
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

/// The stub's ring host.
type XenHost = RingHost<XenPort>;

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
        // The store domain is where the store runs: here (C xenstored 4.22 `store_domid`; docs/protocol.md, "Domains").
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
    let mut port = XenPort {
        hypervisor: platform.hypervisor,
        xen_version: platform.cpuid_version,
        events,
        mapper: GrantMapper::new(platform.hypervisor, window),
        port_domains: BTreeMap::new(),
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
    let dom0_ring = match port.map_ring(master, dom0_port.0) {
        Ok(ring) => ring,
        Err(error) => fail(&alloc::format!("dom0's ring: {error}")),
    };
    let settings = HostSettings {
        sweep: Some(SWEEP_NANOSECONDS),
    };
    let mut host = XenHost::new(Engine::new(config), port, settings);
    host.adopt(master, dom0_ring);
    // Binding the VIRQ marked every existing domain changed (4.21+): learn them now.
    watch_domains(&mut domain_watcher, &mut host);
    crate::console_line!("serving xenstore (dom0 connected)");
    trace::record("xenstore.serving", u64::from(dom0_port.0));

    let mut ports: Vec<EventChannelPort> = Vec::new();
    let mut notified: Vec<DomainId> = Vec::new();
    loop {
        // Grow the heap before requests need it (they would grow it in the allocator's
        // failure path, at the cost of a failed first fit and a reclaim each time).
        crate::runtime::heap::grow_if_low();
        let work_remains = host.serve(&mut |_| {});
        ports.clear();
        ports.extend(host.served_rings().map(|(_, ring)| ring.local_port));
        ports.extend(domain_state_port);
        // Sleep until an event, or sooner when time-driven work waits (rings held back by
        // a quota or the write rate, watch events that may expire, a sweep of recently
        // served rings, a full ring's room check). An idle store sleeps without a timeout
        // (a 100 ms tick cost about 1% of a TCG vCPU). With work left over from this round
        // there is no sleep at all; a deadline already past ends the sleep at once.
        let rest = if work_remains {
            Rest::None
        } else {
            Rest::UntilEvent(host.next_deadline_ns())
        };
        let listed_ports = (ports.len() <= POLLED_PORTS_MAX).then_some(ports.as_slice());
        let stub = host.port_mut();
        let waited = stub.notify_then_rest(listed_ports, rest);
        let events = &stub.events;
        stub.round_ns = stub.clock.read(|| events.now_ns());
        if let Err(errno) = waited {
            log::warn!("SCHEDOP_poll failed: {errno}");
        }
        let mut domains_changed = false;
        let port_domains = &stub.port_domains;
        stub.events.drain_pending(|port| {
            if Some(port) == domain_state_port {
                domains_changed = true;
            } else if let Some(domain) = port_domains.get(&port.0) {
                notified.push(*domain);
            }
        });
        for domain in notified.drain(..) {
            host.notified(domain);
        }
        if domains_changed {
            watch_domains(&mut domain_watcher, &mut host);
        }
        host.tick_if_due();
    }
}

/// `VIRQ_DOM_EXC` fired: find out who shut down or died.
fn watch_domains(watcher: &mut DomainWatcher, host: &mut XenHost) {
    match watcher {
        DomainWatcher::DomainState(tracker) => {
            let mut source = HypervisorDomainStates(host.port().hypervisor);
            let drained =
                host.with_engine(|engine, platform| tracker.drain(&mut source, engine, platform));
            if let Err(error) = drained {
                log::warn!("domain states unavailable ({error:?}); scanning with getdomaininfo");
                *watcher = DomainWatcher::DomainInfo;
                check_domains(host);
            }
        }
        DomainWatcher::DomainInfo => check_domains(host),
    }
}

/// `VIRQ_DOM_EXC`: find which introduced domains shut down or died (C 4.17 `check_domains()`).
fn check_domains(host: &mut XenHost) {
    for domain in host.engine().introduced_domains() {
        match host.port().domain_flags(domain) {
            None => {
                log::info!("domain {domain} is gone");
                host.domain_died(domain);
            }
            Some(flags) if flags & dominf::DYING != 0 => {
                log::info!("domain {domain} is dying");
                host.domain_died(domain);
            }
            Some(flags) if flags & dominf::SHUTDOWN != 0 => host.domain_shutdown(domain),
            Some(_) => {}
        }
    }
}
