//! A model of the stub domain serving a host, around the real engine and the real ring host:
//! the stub's `XenPort` (`src/xenstore.rs`) with in-memory ring pages in place of grant-mapped
//! frames, and the other side of every ring (dom0's toolstack, each guest's kernel) writing
//! requests into it and reading the replies and watch events.
//!
//! The stub's state and the engine live in the arena (see [`crate::arena`]); the ring pages and
//! the guests' side do not, because in the stub they are not on its heap.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use xenstore_engine::domain_state::{
    DomainState, DomainStateError, DomainStateSource, DomainStateTracker,
};
use xenstore_engine::memory::MemoryStatus;
use xenstore_engine::ring::{InMemoryPage, Ring, RingError};
use xenstore_engine::ring_host::{HostSettings, RingHost, RingPort};
use xenstore_engine::wire::{self, HEADER_SIZE_BYTES, MessageHeader, MessageType};
use xenstore_engine::{Config, DomainId, Engine, StoreResult};

use crate::arena::{STUB_HEAP, inside_stub, outside_stub};

/// The privileged domain, whose toolstack introduces the guests.
pub const DOM0: u16 = 0;
/// The stub domain's own id: `init-xenstore-domain` creates it first after dom0.
pub const STUB_DOMID: u16 = 1;
/// The stub's serving loop also polls `VIRQ_DOM_EXC`'s port (one more entry in its port list).
const VIRQ_PORTS: usize = 1;
/// Wake-ups without any byte moved after which a request is declared stuck.
const STALLED_WAKEUPS: usize = 16;

/// `ForeignPage` (`src/xen/grant_table.rs`), the stub's `MappedRingPage`: `DomId`, `GrantRef`
/// and `GrantMapping { gfn: Gfn, handle: u32 }` as the integers they wrap.
#[expect(
    dead_code,
    reason = "only its size matters: it stands for the grant mapping"
)]
struct MappedRingPageLayout {
    domain: u16,
    grant_ref: u32,
    gfn: u64,
    handle: u32,
}

/// The stub's `XenRing` (`src/xenstore.rs`) field for field, with the Xen handle types as
/// the integers they wrap, plus the page it stands for (8 bytes more than the stub's).
pub struct BenchRing {
    domain: DomainId,
    #[expect(dead_code, reason = "only its size matters: the page is grant-mapped")]
    layout: MappedRingPageLayout,
    local_port: u32,
    /// Not the stub's heap: the page stands for a grant-mapped frame.
    page: &'static InMemoryPage,
}

/// The stub's `XenPort` minus its hypervisor handles: what it keeps per ring.
pub struct BenchPort {
    /// Which domain's ring each local event-channel port serves.
    port_domains: BTreeMap<u32, u16>,
    /// Ports notified this round (the stub keeps the vector's capacity between rounds).
    to_notify: Vec<u32>,
    /// The serving loop's list of ports to poll, rebuilt each wake-up with one entry per ring.
    poll_ports: Vec<u32>,
    next_local_port: u32,
    /// Not the stub's heap: the ring pages stand for grant-mapped frames. Filled outside the
    /// arena; leaked, because a page lives as long as the process.
    pages: BTreeMap<u16, &'static InMemoryPage>,
    clock: Instant,
}

impl BenchPort {
    fn new() -> BenchPort {
        BenchPort {
            port_domains: BTreeMap::new(),
            to_notify: Vec::new(),
            poll_ports: Vec::new(),
            next_local_port: 1,
            pages: BTreeMap::new(),
            clock: Instant::now(),
        }
    }

    /// The stub's `map_ring`: the grant mapping (here: the domain's page) and a bound port.
    fn map_ring(&mut self, domain: DomainId) -> BenchRing {
        let pages = &mut self.pages;
        let page: &'static InMemoryPage = outside_stub(|| {
            pages
                .entry(domain.0)
                .or_insert_with(|| Box::leak(Box::new(InMemoryPage::new())))
        });
        let local_port = self.next_local_port;
        self.next_local_port += 1;
        self.port_domains.insert(local_port, domain.0);
        BenchRing {
            domain,
            layout: MappedRingPageLayout {
                domain: domain.0,
                grant_ref: 1,
                gfn: 0,
                handle: 0,
            },
            local_port,
            page,
        }
    }

    fn page(&self, domid: u16) -> Option<&'static InMemoryPage> {
        self.pages.get(&domid).copied()
    }
}

impl RingPort for BenchPort {
    type Ring = BenchRing;
    type Memory = InMemoryPage;

    fn memory(ring: &BenchRing) -> &InMemoryPage {
        ring.page
    }

    fn attach(
        &mut self,
        domain: DomainId,
        _ring_frame: u64,
        _remote_port: u32,
    ) -> StoreResult<BenchRing> {
        Ok(self.map_ring(domain))
    }

    fn detach(&mut self, _domain: DomainId, ring: BenchRing) {
        if self.port_domains.get(&ring.local_port) == Some(&ring.domain.0) {
            self.port_domains.remove(&ring.local_port);
        }
    }

    fn notify(&mut self, ring: &BenchRing) {
        self.to_notify.push(ring.local_port);
    }

    fn domain_exists(&mut self, _domain: DomainId) -> bool {
        true
    }

    fn now_nanoseconds(&mut self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    /// The arena's figures, as the stub reads its heap's: none while the arena does not serve
    /// this thread (the tests that run on the system allocator set no limit).
    fn memory_status(&mut self) -> Option<MemoryStatus> {
        let statistics = STUB_HEAP.statistics()?;
        Some(MemoryStatus {
            heap_size_bytes: statistics.size_bytes as u64,
            heap_used_bytes: statistics.used_bytes as u64,
            // What the heap can still hand out: the backing heap's free bytes, and the class
            // free lists, which a reclaim gives back to it when it runs short.
            heap_free_bytes: (statistics.free_bytes + statistics.class_free_bytes) as u64,
            // The arena is one fixed region: no growth.
            heap_limit_bytes: statistics.size_bytes as u64,
        })
    }
}

/// The stub's serving loop after a round: it rebuilds its port list (one entry per served
/// ring, plus `VIRQ_DOM_EXC`'s), keeping the vector's capacity.
fn rebuild_poll_list(host: &mut RingHost<BenchPort>) {
    let mut ports = core::mem::take(&mut host.port_mut().poll_ports);
    ports.clear();
    ports.extend(host.served_rings().map(|(_, ring)| ring.local_port));
    ports.extend([0; VIRQ_PORTS]);
    host.port_mut().poll_ports = ports;
}

/// `XEN_DOMCTL_get_domain_state(DOMID_INVALID)` right after the hypervisor created domains
/// (each reported once as existing and running) or destroyed them (each reported once as
/// gone).
struct ChangedDomains {
    domids: Vec<u16>,
    exist: bool,
}

impl DomainStateSource for ChangedDomains {
    fn next_changed_domain(&mut self) -> Result<(DomainId, DomainState), DomainStateError> {
        let domid = self.domids.pop().ok_or(DomainStateError::NoneChanged)?;
        Ok((
            DomainId(domid),
            DomainState {
                exists: self.exist,
                shutdown: false,
                dying: false,
                dead: !self.exist,
                unique_id: 0x1000 + u64::from(domid),
            },
        ))
    }
}

/// Why a request of the simulated host failed.
#[derive(Debug)]
pub enum HostError {
    /// The domain has no ring.
    NoRing(u16),
    Ring(u16, RingError),
    /// The store answered `XS_ERROR`.
    Refused {
        domid: u16,
        request: MessageType,
        errno: String,
    },
    /// Neither the store nor the guest could move a byte.
    Stalled {
        domid: u16,
        request: MessageType,
    },
    /// The domain-state tracker refused a report.
    DomainState(DomainStateError),
}

impl fmt::Display for HostError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::NoRing(domid) => write!(formatter, "domain {domid} has no ring"),
            HostError::Ring(domid, error) => write!(formatter, "domain {domid}: ring: {error:?}"),
            HostError::Refused {
                domid,
                request,
                errno,
            } => write!(
                formatter,
                "domain {domid}: XS_{} refused: {errno}",
                request.name()
            ),
            HostError::Stalled { domid, request } => write!(
                formatter,
                "domain {domid}: XS_{} got no reply and nothing moves",
                request.name()
            ),
            HostError::DomainState(error) => write!(formatter, "domain states: {error:?}"),
        }
    }
}

impl std::error::Error for HostError {}

/// The client side of the rings (not the stub's memory).
#[derive(Default)]
struct GuestSide {
    next_request_id: u32,
    /// Bytes read from each ring that do not make a whole message yet.
    inboxes: BTreeMap<u16, Vec<u8>>,
    watch_events_received: u64,
}

/// A reply a guest read from its ring.
struct Reply {
    domid: u16,
    header: MessageHeader,
    payload: Vec<u8>,
}

/// The store serving dom0 and the introduced guests, one request at a time (each client waits
/// for its reply, as libxl and Linux's xenbus do).
pub struct SimulatedHost {
    /// The stub's ring host: the engine and the per-ring state, on the arena.
    pub host: RingHost<BenchPort>,
    /// The stub's `DomainWatcher::DomainState` (Xen 4.21+; on older Xen the stub scans with
    /// `getdomaininfo` and keeps nothing per domain): a unique id per domain that exists.
    domain_states: DomainStateTracker,
    guests: GuestSide,
}

impl SimulatedHost {
    /// The stub after start-up: engine created, dom0's ring mapped and connected.
    pub fn start() -> Result<SimulatedHost, HostError> {
        let config = Config {
            privileged_domain: DomainId(DOM0),
            store_domain: DomainId(STUB_DOMID),
            ..Config::default()
        };
        let mut host = inside_stub(|| {
            let mut port = BenchPort::new();
            let master = DomainId(DOM0);
            // As the stub starts: dom0's ring is mapped before its connection is opened.
            let ring = port.map_ring(master);
            let mut host = RingHost::new(Engine::new(config), port, stub_settings());
            host.adopt(master, ring);
            let _ = host.serve(&mut |_| {});
            rebuild_poll_list(&mut host);
            SimulatedHost {
                host,
                domain_states: DomainStateTracker::default(),
                guests: GuestSide::default(),
            }
        });
        // Binding VIRQ_DOM_EXC reports every existing domain: dom0 and the stub domain.
        host.domains_created(vec![DOM0, STUB_DOMID])?;
        host.collect_replies()?;
        Ok(host)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        self.host.engine()
    }

    /// The hypervisor created `domids`: the stub's `VIRQ_DOM_EXC` handler learns them.
    pub fn domains_created(&mut self, domids: Vec<u16>) -> Result<(), HostError> {
        self.domains_changed(ChangedDomains {
            domids,
            exist: true,
        })
    }

    /// The hypervisor destroyed `domids`: the stub's `VIRQ_DOM_EXC` handler tells the engine
    /// they died (their connections go, the nodes they own are deleted, `@releaseDomain`).
    /// (The measurement keeps every domain; the small-heap test destroys them.)
    #[cfg(test)]
    pub fn domains_destroyed(&mut self, domids: Vec<u16>) -> Result<(), HostError> {
        self.domains_changed(ChangedDomains {
            domids,
            exist: false,
        })
        // dom0 reads its `@releaseDomain` events with the replies to its next request.
    }

    fn domains_changed(&mut self, mut source: ChangedDomains) -> Result<(), HostError> {
        let tracker = &mut self.domain_states;
        let host = &mut self.host;
        inside_stub(|| {
            host.with_engine(|engine, platform| tracker.drain(&mut source, engine, platform))
        })
        .map(|_| ())
        .map_err(HostError::DomainState)
    }

    /// Sends one request from `domid` through its ring and returns the reply's payload once
    /// every queue is drained (the reply read, watch events read and dropped).
    pub fn request(
        &mut self,
        domid: u16,
        request: MessageType,
        transaction_id: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, HostError> {
        let page = self
            .host
            .port()
            .page(domid)
            .ok_or(HostError::NoRing(domid))?;
        let request_id = self.guests.next_request_id;
        self.guests.next_request_id = request_id.wrapping_add(1);
        let message = wire::encode_message(request.number(), request_id, transaction_id, payload);
        let ring = Ring::new(page);
        let mut written_bytes = 0;
        let mut reply = None;
        let mut idle_wakeups = 0;
        loop {
            let mut moved = false;
            if written_bytes < message.len() {
                let rest = message.get(written_bytes..).unwrap_or(&[]);
                let count = ring
                    .client_write(rest)
                    .map_err(|error| HostError::Ring(domid, error))?;
                written_bytes += count;
                moved |= count > 0;
                // The guest's event: the stub's event-channel drain marks its ring.
                inside_stub(|| self.host.notified(DomainId(domid)));
            }
            let host = &mut self.host;
            let store_idle = inside_stub(|| {
                let work_remains = host.serve(&mut |_| {});
                rebuild_poll_list(host);
                !work_remains
            });
            let (read_any, replies) = self.collect_replies()?;
            moved |= read_any;
            for candidate in replies {
                if candidate.domid == domid && candidate.header.request_id == request_id {
                    reply = Some(candidate);
                }
            }
            let quiet = store_idle && !self.host.has_ring_work();
            if written_bytes == message.len()
                && quiet
                && let Some(reply) = reply.take()
            {
                if reply.header.message_type == MessageType::Error.number() {
                    let errno = String::from_utf8_lossy(&reply.payload)
                        .trim_end_matches('\0')
                        .to_string();
                    return Err(HostError::Refused {
                        domid,
                        request,
                        errno,
                    });
                }
                return Ok(reply.payload);
            }
            idle_wakeups = if moved { 0 } else { idle_wakeups + 1 };
            if idle_wakeups > STALLED_WAKEUPS {
                return Err(HostError::Stalled { domid, request });
            }
        }
    }

    /// The guests whose rings were notified read what they were sent; watch events are
    /// counted and dropped, replies returned. A guest that read while the store still has
    /// output for it notifies the store (its ring had been full).
    fn collect_replies(&mut self) -> Result<(bool, Vec<Reply>), HostError> {
        let notified_ports = self.host.port().to_notify.clone();
        self.host.port_mut().to_notify.clear();
        let mut replies = Vec::new();
        let mut read_any = false;
        for port in notified_ports {
            let Some(&domid) = self.host.port().port_domains.get(&port) else {
                continue;
            };
            let page = self
                .host
                .port()
                .page(domid)
                .ok_or(HostError::NoRing(domid))?;
            let ring = Ring::new(page);
            let inbox = self.guests.inboxes.entry(domid).or_default();
            let mut buffer = [0u8; xenstore_engine::ring::RING_SIZE_BYTES];
            loop {
                let count = ring
                    .client_read(&mut buffer)
                    .map_err(|error| HostError::Ring(domid, error))?;
                if count == 0 {
                    break;
                }
                read_any = true;
                inbox.extend_from_slice(buffer.get(..count).unwrap_or(&[]));
            }
            while let Some((header, payload, length)) = next_message(inbox) {
                inbox.drain(..length);
                if header.message_type == MessageType::WatchEvent.number() {
                    self.guests.watch_events_received += 1;
                } else {
                    replies.push(Reply {
                        domid,
                        header,
                        payload,
                    });
                }
            }
            let engine = self.host.engine();
            let store_has_more = engine
                .domain_connection(DomainId(domid))
                .is_some_and(|connection| !engine.output(connection).is_empty());
            if store_has_more {
                inside_stub(|| self.host.notified(DomainId(domid)));
            }
        }
        Ok((read_any, replies))
    }

    /// Watch events the guests have read so far.
    pub fn watch_events_received(&self) -> u64 {
        self.guests.watch_events_received
    }

    /// Whether every output queue, every ring's pending input and every guest's partly read
    /// message is empty.
    pub fn drained(&self) -> bool {
        let nothing_half_read = self.guests.inboxes.values().all(Vec::is_empty);
        self.host.is_drained() && nothing_half_read
    }

    /// Rings the stub serves (dom0's included).
    pub fn ring_count(&self) -> usize {
        self.host.ring_count()
    }

    /// The capacity the rings' `pending_input` buffers keep, bytes.
    pub fn pending_input_capacity_bytes(&self) -> usize {
        self.host.pending_input_capacity_bytes()
    }

    /// Drops the domain-state tracker; the caller measures what that frees.
    pub fn drop_domain_states(&mut self) {
        self.domain_states = DomainStateTracker::default();
    }

    /// Drops the stub's per-ring state (the host's rings and schedule, the port map, the port
    /// list), as if every ring were released; the caller measures what that frees.
    pub fn drop_ring_state(&mut self) {
        self.host.detach_all();
        let port = self.host.port_mut();
        port.port_domains = BTreeMap::new();
        port.poll_ports = Vec::new();
        port.to_notify = Vec::new();
    }
}

/// The stub's ring host settings (its sweep of recently served rings).
fn stub_settings() -> HostSettings {
    HostSettings {
        sweep: Some(100_000_000),
    }
}

/// The first whole message in `bytes`: header, payload, and its length on the wire.
fn next_message(bytes: &[u8]) -> Option<(MessageHeader, Vec<u8>, usize)> {
    let header_bytes: &[u8; HEADER_SIZE_BYTES] = bytes.get(..HEADER_SIZE_BYTES)?.try_into().ok()?;
    let header = MessageHeader::from_bytes(header_bytes);
    let length = HEADER_SIZE_BYTES + header.payload_length_bytes as usize;
    let payload = bytes.get(HEADER_SIZE_BYTES..length)?.to_vec();
    Some((header, payload, length))
}

/// The size of the stub's per-ring record in its ring host (for the estimate from struct
/// sizes).
pub fn guest_ring_size_bytes() -> usize {
    RingHost::<BenchPort>::hosted_ring_size_bytes()
}
