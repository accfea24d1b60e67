//! Serving xenstore on Xen: the engine behind dom0's and every introduced guest's ring.
//!
//! Boot contract of `init-xenstore-domain` (docs/xen-interface.md, "init-xenstore-domain"): the command line carries
//! `--event <port>` (dom0's end of its xenstore event channel) and C xenstored's options
//! passed with `--param`. dom0 has granted us its ring as grant reference 1; we map it, bind
//! the port, mark the ring connected and serve dom0 first, because `init-xenstore-domain`
//! blocks in its first xenstore writes until we do. Guests arrive through `XS_INTRODUCE`
//! (their grant reference 1 and the given port). `VIRQ_DOM_EXC` tells us a domain changed
//! state; `XEN_DOMCTL_get_domain_state` (Xen 4.21+) or `XEN_DOMCTL_getdomaininfo` (before)
//! says which (docs/xen-interface.md, "Domain state").

use alloc::vec::Vec;

use xen_hypercall::domctl::{self, dominf};
use xen_hypercall::event_channel::VIRQ_DOM_EXC;
use xen_hypercall::{DomId, EventChannelPort};
use xenstore_engine::domain_state::DomainStateTracker;
use xenstore_engine::live_update::{LiveUpdatePoll, LiveUpdateSupport};
use xenstore_engine::migration::RestoredEndpoint;
use xenstore_engine::options::{
    OptionError, OptionName, PROCESS_FLAGS, PROCESS_OPTIONS_WITH_VALUE, STORE_FLAGS,
    STORE_OPTIONS_WITH_VALUE, apply_store_option, domain_value, for_each_option, option,
};
use xenstore_engine::ring_host::{HostSettings, RingHost, RingPort};
use xenstore_engine::{Config, DomainId, Engine};

use crate::cmdline::CommandLine;
use crate::kernel::BootedPlatform;
use crate::live_update::Context as LiveUpdateContext;
use crate::runtime::{console, trace};
use crate::xen::event_channel::EventChannels;
use crate::xen::grant_table::{GrantMapper, GrantWindow, plan_grant_window};
use crate::xen::ring_port::{HypervisorDomainStates, Rest, XenPort};
use crate::xen::start_info::BootInfo;

/// `SCHEDOP_poll` takes at most this many ports; beyond, the loop polls with a short timeout.
const POLLED_PORTS_MAX: usize = 128;
/// How soon after serving a ring it is checked again for work that arrived without an
/// event (the ring host's sweep, see `HostSettings::sweep`): notifications on Xen can be
/// lost. Only rings served in the last two such intervals are checked, so an idle store
/// does not wake up at all.
const SWEEP_NANOSECONDS: u64 = 100_000_000;

/// The stub's own flag besides the store's and the process options (`PROCESS_*` of
/// `xenstore_engine::options`, accepted and ignored where meaningless here).
const STUB_FLAGS: [OptionName; 1] = [option('V', "verbose-trace")];

/// The start-up console line naming the domain-state interface in use (the system tests
/// look for these lines; docs/xen-interface.md, "Domain state").
const DOMAIN_STATES_BY_DOMAIN_STATE: &str =
    "domain states: XEN_DOMCTL_get_domain_state (Xen 4.21+)";
/// See [`DOMAIN_STATES_BY_DOMAIN_STATE`].
const DOMAIN_STATES_BY_DOMAIN_INFO: &str = "domain states: getdomaininfo (Xen before 4.21)";

/// The largest image `live-update -b` accepts: the image must load below 16 MiB
/// (linker.ld), and an ELF file with debugging sections is a few times its loaded size.
const LIVE_UPDATE_IMAGE_SIZE_LIMIT_BYTES: usize = 32 << 20;

/// The stub's ring host.
type XenHost = RingHost<XenPort>;

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
        // `xenstore-control live-update` uploads a new image (docs/live-update.md).
        live_update: LiveUpdateSupport::KernelImage {
            image_size_limit_bytes: LIVE_UPDATE_IMAGE_SIZE_LIMIT_BYTES,
        },
        ..Config::default()
    };
    // The domain whose ring `--event` names (4.17's `--master-domid`, default dom0).
    let mut master = DomainId(0);
    let with_value: Vec<OptionName> = STORE_OPTIONS_WITH_VALUE
        .iter()
        .chain(&PROCESS_OPTIONS_WITH_VALUE)
        .copied()
        .collect();
    let flags: Vec<OptionName> = STORE_FLAGS
        .iter()
        .chain(&PROCESS_FLAGS)
        .chain(&STUB_FLAGS)
        .copied()
        .collect();
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

/// Stops the stub with the reason on its console: without these the host has no xenstore
/// at all, so there is nothing better to do.
fn cannot_serve(what: &str) -> ! {
    log::error!("cannot serve xenstore: {what}");
    crate::runtime::panic::stop_after_failure()
}

/// What serving starts from.
struct Started {
    host: XenHost,
    domain_watcher: DomainWatcher,
    config: Config,
    events: EventChannels,
}

/// The ring host over a fresh store with dom0's ring, or, after a live update
/// (`--live-update`), over the store the previous image left (docs/live-update.md).
fn start(
    platform: &BootedPlatform,
    command_line: &CommandLine<'_>,
    boot_info: &BootInfo,
) -> Started {
    let Ok(shared_info) = platform.shared_info else {
        cannot_serve("shared_info is not mapped");
    };
    let Ok(own_domid) = platform.own_domid else {
        cannot_serve("own domain id unknown");
    };
    let Ok(memory_map) = &platform.memory_map else {
        cannot_serve("no memory map");
    };
    let window = match plan_grant_window(memory_map, crate::xen::shared_info::SHARED_INFO_ADDRESS) {
        Ok(plan) => match GrantWindow::new(plan) {
            Ok(window) => window,
            Err(_) => cannot_serve("no memory for the grant-map window"),
        },
        Err(_) => cannot_serve("no room for a grant-map window"),
    };
    let events = EventChannels::new(platform.hypervisor, shared_info.shared_info);
    let (config, master) = configure(command_line, own_domid);
    let port = XenPort::new(
        platform.hypervisor,
        platform.cpuid_version,
        events,
        GrantMapper::new(platform.hypervisor, window),
    );
    let mut domain_watcher = if domctl::has_get_domain_state(platform.cpuid_version) {
        crate::console_line!("{DOMAIN_STATES_BY_DOMAIN_STATE}");
        DomainWatcher::DomainState(DomainStateTracker::default())
    } else {
        crate::console_line!("{DOMAIN_STATES_BY_DOMAIN_INFO}");
        DomainWatcher::DomainInfo
    };
    let settings = HostSettings {
        sweep: Some(SWEEP_NANOSECONDS),
    };
    let host = if command_line.live_update {
        let Some(state) = crate::xen::handover::previous_state(boot_info) else {
            cannot_serve("--live-update without the previous image's state (boot module 0)");
        };
        match restore(state, config.clone(), port, settings) {
            Ok((host, unique_ids)) => {
                if let DomainWatcher::DomainState(tracker) = &mut domain_watcher {
                    for (domain, unique_id) in unique_ids {
                        tracker.remember(domain, unique_id);
                    }
                }
                host
            }
            Err(reason) => cannot_serve(&reason),
        }
    } else {
        fresh(command_line, &config, master, port, settings)
    };
    Started {
        host,
        domain_watcher,
        config,
        events,
    }
}

/// The ring host over a fresh store, dom0's ring (`--event`) adopted.
fn fresh(
    command_line: &CommandLine<'_>,
    config: &Config,
    master: DomainId,
    mut port: XenPort,
    settings: HostSettings,
) -> XenHost {
    let Some(dom0_port) = command_line.dom0_event_port else {
        cannot_serve("no --event <port> on the command line (start me with init-xenstore-domain)");
    };
    log::info!(
        "xenstore: store domain {}, privileged domain {}, dom0 ring of domain {master} on port {dom0_port}",
        config.store_domain,
        config.privileged_domain
    );
    // dom0 first: its pending requests (init-xenstore-domain's) stay in the ring, so the
    // indices are kept; only `connection` is set and the ring is kicked.
    let dom0_ring = match port.map_ring(master, dom0_port.0) {
        Ok(ring) => ring,
        Err(error) => cannot_serve(&alloc::format!("dom0's ring: {error}")),
    };
    let mut host = XenHost::new(Engine::new(config.clone()), port, settings);
    host.adopt(master, dom0_ring);
    host
}

/// Serves xenstore until the domain is destroyed (or replaced by a live update).
pub fn serve(platform: &BootedPlatform, command_line: &CommandLine<'_>, boot_info: &BootInfo) -> ! {
    let Started {
        mut host,
        mut domain_watcher,
        config,
        events,
    } = start(platform, command_line, boot_info);
    let domain_state_port = match events.bind_virq(VIRQ_DOM_EXC) {
        Ok(port) => Some(port),
        Err(errno) => {
            log::warn!("VIRQ_DOM_EXC not bound ({errno}): dead domains will not be noticed");
            None
        }
    };
    // Binding the VIRQ marked every existing domain changed (4.21+): learn them now.
    watch_domains(&mut domain_watcher, &mut host);
    if command_line.live_update {
        // A domain may have died while no image listened (C xenstored checks them all
        // after a live update too).
        for domain in host.engine().introduced_domains() {
            if !host.port_mut().domain_exists(domain) {
                host.domain_died(domain);
            }
        }
        crate::console_line!("serving xenstore (restored)");
    } else {
        crate::console_line!("serving xenstore (dom0 connected)");
    }
    trace::record("xenstore.serving", 0);
    let live_update = LiveUpdateContext {
        command_line: &boot_info.command_line,
        memory_map: &boot_info.memory_map,
        config: &config,
        domain_state_port,
        events,
    };

    let mut ports: Vec<EventChannelPort> = Vec::new();
    let mut notified: Vec<DomainId> = Vec::new();
    loop {
        // Grow the heap before requests need it (they would grow it in the allocator's
        // failure path, at the cost of a failed first fit and a reclaim each time).
        crate::runtime::heap::grow_if_low();
        let work_remains = host.serve(&mut |_| {});
        ports.clear();
        ports.extend(host.served_rings().map(|(_, ring)| ring.local_port()));
        ports.extend(domain_state_port);
        // Sleep until an event, or sooner when time-driven work waits (rings held back by
        // a quota or the write rate, watch events that may expire, a sweep of recently
        // served rings, a full ring's room check, a live update waiting for transactions).
        // An idle store sleeps without a timeout (a 100 ms tick cost about 1% of a TCG
        // vCPU). With work left over from this round there is no sleep at all; a deadline
        // already past ends the sleep at once.
        let rest = if work_remains {
            Rest::None
        } else {
            Rest::UntilEvent(host.next_deadline_ns())
        };
        let listed_ports = (ports.len() <= POLLED_PORTS_MAX).then_some(ports.as_slice());
        host.port_mut().notify_and_rest(listed_ports, rest);
        let domains_changed = host
            .port_mut()
            .take_events(domain_state_port, &mut notified);
        for domain in notified.drain(..) {
            host.notified(domain);
        }
        if domains_changed {
            watch_domains(&mut domain_watcher, &mut host);
        }
        host.tick_if_due();
        if let LiveUpdatePoll::Ready(plan) = host.poll_live_update() {
            let tracker = match &domain_watcher {
                DomainWatcher::DomainState(tracker) => Some(tracker),
                DomainWatcher::DomainInfo => None,
            };
            let unique_ids =
                |domain: DomainId| tracker.and_then(|tracker| tracker.unique_id(domain));
            // Returns only when the update failed (and was answered).
            crate::live_update::run(plan, &mut host, &live_update, &unique_ids);
        }
    }
}

/// The ring host over the store the previous image left: every ring mapped again with the
/// port that image bound; the input it had read goes first. Also returns the domains'
/// unique ids as the stream recorded them.
fn restore(
    state: &[u8],
    config: Config,
    mut port: XenPort,
    settings: HostSettings,
) -> Result<(XenHost, Vec<(DomainId, u64)>), alloc::string::String> {
    let (engine, restored) = Engine::from_state(config, state)
        .map_err(|error| alloc::format!("the previous image's state does not read: {error:?}"))?;
    let mut rings = Vec::new();
    let mut unique_ids = Vec::new();
    for connection in restored.connections {
        match connection.endpoint {
            RestoredEndpoint::Ring {
                domain,
                event_channel_port,
                unique_id,
            } => match port.restore_ring(domain, event_channel_port) {
                Ok(ring) => {
                    unique_ids.extend(unique_id.map(|id| (domain, id)));
                    rings.push((domain, ring, connection.unread_input));
                }
                // The domain is known to the store; its death will be noticed.
                Err(error) => log::warn!("live update: domain {domain}'s ring is lost: {error}"),
            },
            RestoredEndpoint::Socket { .. } => {}
        }
    }
    let connections = rings.len();
    let mut host = XenHost::new(engine, port, settings);
    for (domain, ring, unread_input) in rings {
        host.adopt_restored(domain, ring, unread_input);
    }
    crate::console_line!(
        "{}",
        crate::live_update::restored_summary(host.engine(), connections, state.len())
    );
    Ok((host, unique_ids))
}

/// `VIRQ_DOM_EXC` fired: find out who shut down or died.
fn watch_domains(watcher: &mut DomainWatcher, host: &mut XenHost) {
    match watcher {
        DomainWatcher::DomainState(tracker) => {
            let mut source = HypervisorDomainStates(host.port().hypervisor());
            let drained =
                host.with_engine(|engine, platform| tracker.drain(&mut source, engine, platform));
            if let Err(error) = drained {
                log::warn!(
                    "domain states: XEN_DOMCTL_get_domain_state failed ({error:?}), falling back to getdomaininfo"
                );
                *watcher = DomainWatcher::DomainInfo;
                check_domains(host);
            }
        }
        DomainWatcher::DomainInfo => check_domains(host),
    }
}

/// `VIRQ_DOM_EXC`: find which introduced domains shut down or died (C 4.17 `check_domains()`).
/// A death is logged where the engine handles it (`domain N is gone`).
fn check_domains(host: &mut XenHost) {
    for domain in host.engine().introduced_domains() {
        match host.port().domain_flags(domain) {
            None => host.domain_died(domain),
            Some(flags) if flags & dominf::DYING != 0 => host.domain_died(domain),
            Some(flags) if flags & dominf::SHUTDOWN != 0 => host.domain_shutdown(domain),
            Some(_) => {}
        }
    }
}
