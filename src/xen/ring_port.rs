//! The stub's ring port: xenstore rings as grant-mapped pages with bound event channels, and the loop's clock and sleep.
//!
//! The ring host (`xenstore_engine::ring_host`) serves the rings; this is what it needs from
//! Xen (docs/xen-interface.md, "Grant tables" and "Event channels"): attaching a domain's ring
//! maps its grant reference 1 (C xenstored ignores the frame the toolstack names) and binds
//! the port it gave; notifications are sent together with the loop's next sleep (one
//! multicall); `getdomaininfo` and `XEN_DOMCTL_get_domain_state` say which domains exist.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use xen_hypercall::cpuid::XenVersion;
use xen_hypercall::domctl::{self, dominf};
use xen_hypercall::{DomId, EventChannelPort, GrantRef, Hypervisor, XenErrno};
use xenstore_engine::domain_state::{DomainState, DomainStateError, DomainStateSource};
use xenstore_engine::memory::MemoryStatus;
use xenstore_engine::ring_host::RingPort;
use xenstore_engine::{DomainId, StoreError, StoreResult};

use crate::xen::event_channel::EventChannels;
use crate::xen::grant_table::GrantMapper;
use crate::xen::runstate::WakeClock;
use crate::xen::xenstore_ring::MappedRingPage;

/// Sleep when there are too many ports to list.
const UNLISTED_WAIT_NANOSECONDS: u64 = 5_000_000;

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
    /// A live update is handing over: detaching a ring unmaps its page and leaves its port
    /// bound, for the new image to take (docs/live-update.md).
    keep_ports: bool,
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
pub enum Rest {
    /// Work is left: send the notifications and go on.
    None,
    /// Sleep until an event, or at most until this Xen system time (`None`: no limit).
    UntilEvent(Option<u64>),
}

impl XenRing {
    /// The local end of the ring's event channel.
    pub fn local_port(&self) -> EventChannelPort {
        self.local_port
    }
}

impl XenPort {
    /// The port over these handles, its clock read now.
    pub fn new(
        hypervisor: Hypervisor,
        xen_version: XenVersion,
        events: EventChannels,
        mapper: GrantMapper,
    ) -> XenPort {
        XenPort {
            hypervisor,
            xen_version,
            events,
            mapper,
            port_domains: BTreeMap::new(),
            to_notify: Vec::new(),
            multicall_refused: false,
            keep_ports: false,
            round_ns: events.now_ns(),
            clock: WakeClock::register(&hypervisor).unwrap_or_else(|errno| {
                log::warn!("no runstate area ({errno}): the clock reads the TSC every round");
                WakeClock::without_area()
            }),
        }
    }

    /// The hypervisor handle.
    pub fn hypervisor(&self) -> Hypervisor {
        self.hypervisor
    }

    /// Sends this round's notifications, rests as `rest` says, and reads the clock for the
    /// next round.
    pub fn notify_and_rest(&mut self, ports: Option<&[EventChannelPort]>, rest: Rest) {
        let waited = self.notify_then_rest(ports, rest);
        let events = &self.events;
        self.round_ns = self.clock.read(|| events.now_ns());
        if let Err(errno) = waited {
            log::warn!("SCHEDOP_poll failed: {errno}");
        }
    }

    /// Takes the pending events: the domains whose ring port fired go to `notified`;
    /// returns whether `special` (`VIRQ_DOM_EXC`'s port) fired.
    pub fn take_events(
        &mut self,
        special: Option<EventChannelPort>,
        notified: &mut Vec<DomainId>,
    ) -> bool {
        let mut special_fired = false;
        let port_domains = &self.port_domains;
        self.events.drain_pending(|port| {
            if Some(port) == special {
                special_fired = true;
            } else if let Some(domain) = port_domains.get(&port.0) {
                notified.push(*domain);
            }
        });
        special_fired
    }

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
    pub fn map_ring(&mut self, domain: DomainId, remote_port: u32) -> StoreResult<XenRing> {
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

    /// Takes `domain`'s ring over from the image before a live update: maps its grant
    /// reference 1 again and serves `local_port`, which that image bound and left bound.
    pub fn restore_ring(&mut self, domain: DomainId, local_port: u32) -> StoreResult<XenRing> {
        let page = self
            .mapper
            .map(DomId(domain.0), GrantRef::RESERVED_XENSTORE)
            .map_err(|error| {
                log::warn!(
                    "domain {domain}: cannot map its xenstore ring again (grant 1): {error}"
                );
                StoreError::Invalid
            })?;
        self.port_domains.insert(local_port, domain);
        Ok(XenRing {
            domain,
            page: MappedRingPage::new(page),
            local_port: EventChannelPort(local_port),
        })
    }

    /// From now on, detaching a ring keeps its port bound (see `keep_ports`).
    pub fn keep_ports_for_handover(&mut self) {
        self.keep_ports = true;
    }

    /// The runstate clock, to stop it before a live update's jump.
    pub fn clock_mut(&mut self) -> &mut WakeClock {
        &mut self.clock
    }

    /// What the hypervisor says of `domain`: `None` when it no longer exists.
    pub fn domain_flags(&self, domain: DomainId) -> Option<u32> {
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
        if self.keep_ports {
            if let Err(error) = self.mapper.unmap(ring.page.into_page()) {
                log::warn!("domain {domain}: unmapping its ring for the handover failed: {error}");
            }
            return;
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

    /// On Xen 4.21+ by `XEN_DOMCTL_get_domain_state(domain)`, where any refusal means "no
    /// such domain" (at 4.22 a domid naming no domain is `-EPERM` for every caller but the
    /// control domain, which `getdomaininfo` would leave undecided; C xenstored 4.22 asks the
    /// same way: docs/xen-interface.md, "Domain state"); before, by `getdomaininfo`.
    fn domain_exists(&mut self, domain: DomainId) -> bool {
        if domctl::has_get_domain_state(self.xen_version) {
            use domctl::domain_state::{DEAD, DYING, EXIST};
            return matches!(
                self.hypervisor.get_domain_state(DomId(domain.0)),
                Ok((_, reported)) if reported.state & EXIST != 0 && reported.state & (DYING | DEAD) == 0
            );
        }
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
            heap_size_bytes: to_u64(heap.usage.size_bytes),
            heap_used_bytes: to_u64(heap.usage.used_bytes),
            // The size classes' free blocks count: a reclaim gives them to any request.
            heap_free_bytes: to_u64(
                heap.usage
                    .free_bytes
                    .saturating_add(heap.usage.class_free_bytes),
            ),
            heap_limit_bytes: to_u64(heap.limit_bytes),
        })
    }
}

/// Xen 4.21's `XEN_DOMCTL_get_domain_state(DOMID_INVALID)`: the next changed domain.
pub struct HypervisorDomainStates(pub Hypervisor);

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
