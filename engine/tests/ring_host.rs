//! The ring host on the host: introduction, release, death, re-introduction while served, ring abuse, blocked rings and the missed-wake-up sweep, over in-memory pages.
//!
//! This is the serving logic of the stub domain and the Linux daemon (both run
//! `xenstore_engine::ring_host`); only the port differs, and this port records what the host
//! asked of it.

use std::collections::BTreeMap;
use std::rc::Rc;

use xenstore_engine::quota::QuotaKind;
use xenstore_engine::ring::{InMemoryPage, Ring};
use xenstore_engine::ring_host::{HostSettings, RingHost, RingPort, TICK_NANOSECONDS};
use xenstore_engine::wire::{HEADER_SIZE_BYTES, MessageHeader, MessageType, encode_message};
use xenstore_engine::{Config, DomainId, Engine, StoreError, StoreResult};

const DOM0: DomainId = DomainId(0);
const SWEEP_NANOSECONDS: u64 = 100_000_000;

/// A ring the test port attached: the domain's page and which attachment it was.
struct TestRing {
    page: Rc<InMemoryPage>,
    attachment: u32,
}

/// A port over in-memory pages (one per domain, kept across re-introductions as grant
/// reference 1 is), recording what the host asked of it.
#[derive(Default)]
struct TestPort {
    pages: BTreeMap<DomainId, Rc<InMemoryPage>>,
    attachments: u32,
    attached: Vec<(DomainId, u32)>,
    detached: Vec<(DomainId, u32)>,
    ignored: Vec<DomainId>,
    notifications: BTreeMap<DomainId, u32>,
    /// The guests' bytes read from their rings that do not make a whole message yet.
    inboxes: BTreeMap<DomainId, Vec<u8>>,
    /// Domains whose attachment fails (their introduction must fail).
    unmappable: Vec<DomainId>,
    now_ns: u64,
}

impl TestPort {
    fn page(&mut self, domain: DomainId) -> Rc<InMemoryPage> {
        Rc::clone(
            self.pages
                .entry(domain)
                .or_insert_with(|| Rc::new(InMemoryPage::new())),
        )
    }

    fn attach_ring(&mut self, domain: DomainId) -> TestRing {
        self.attachments += 1;
        self.attached.push((domain, self.attachments));
        TestRing {
            page: self.page(domain),
            attachment: self.attachments,
        }
    }
}

/// The notifications are counted by the page's address, which names the domain.
fn domain_of(port: &TestPort, ring: &TestRing) -> DomainId {
    port.pages
        .iter()
        .find(|(_, page)| Rc::ptr_eq(page, &ring.page))
        .map(|(domain, _)| *domain)
        .expect("a page of the port")
}

impl RingPort for TestPort {
    type Ring = TestRing;
    type Memory = InMemoryPage;

    fn memory(ring: &TestRing) -> &InMemoryPage {
        &ring.page
    }

    fn attach(&mut self, domain: DomainId, _frame: u64, _port: u32) -> StoreResult<TestRing> {
        if self.unmappable.contains(&domain) {
            return Err(StoreError::Invalid);
        }
        Ok(self.attach_ring(domain))
    }

    fn detach(&mut self, domain: DomainId, ring: TestRing) {
        self.detached.push((domain, ring.attachment));
    }

    fn notify(&mut self, ring: &TestRing) {
        let domain = domain_of(self, ring);
        *self.notifications.entry(domain).or_default() += 1;
    }

    fn ignore(&mut self, domain: DomainId, _ring: &mut TestRing) {
        self.ignored.push(domain);
    }

    fn domain_exists(&mut self, _domain: DomainId) -> bool {
        true
    }

    fn now_nanoseconds(&mut self) -> u64 {
        self.now_ns
    }
}

/// A host with dom0's ring adopted, as the stub starts.
fn host_with_dom0(settings: HostSettings) -> RingHost<TestPort> {
    host_with_config(settings, Config::default())
}

/// [`host_with_dom0`] with the guests `domids` introduced in order (request ids 2, 3, ...).
fn host_with_guests<const N: usize>(
    settings: HostSettings,
    domids: [u16; N],
) -> (RingHost<TestPort>, [DomainId; N]) {
    let mut host = host_with_dom0(settings);
    let guests = domids.map(DomainId);
    for (request_id, guest) in (2..).zip(guests) {
        ok(introduce(&mut host, guest, request_id));
    }
    (host, guests)
}

fn host_with_config(settings: HostSettings, config: Config) -> RingHost<TestPort> {
    let mut port = TestPort::default();
    let ring = port.attach_ring(DOM0);
    let mut host = RingHost::new(Engine::new(config), port, settings);
    host.adopt(DOM0, ring);
    assert!(!host.serve(&mut |_| {}));
    host
}

/// The guest side: writes a request into `domain`'s ring (without notifying).
fn write_request(
    host: &mut RingHost<TestPort>,
    domain: DomainId,
    message_type: MessageType,
    request_id: u32,
    payload: &[u8],
) {
    let page = host.port_mut().page(domain);
    let message = encode_message(message_type.number(), request_id, 0, payload);
    assert_eq!(Ring::new(&*page).client_write(&message), Ok(message.len()));
}

/// The guest side: every whole message waiting in `domain`'s ring.
fn read_messages(host: &mut RingHost<TestPort>, domain: DomainId) -> Vec<(MessageHeader, Vec<u8>)> {
    let page = host.port_mut().page(domain);
    let mut bytes = host.port_mut().inboxes.remove(&domain).unwrap_or_default();
    let mut buffer = vec![0; 4096];
    loop {
        let count = Ring::new(&*page)
            .client_read(&mut buffer)
            .expect("healthy ring");
        if count == 0 {
            break;
        }
        bytes.extend_from_slice(&buffer[..count]);
    }
    let mut messages = Vec::new();
    while bytes.len() >= HEADER_SIZE_BYTES {
        let header_bytes: [u8; HEADER_SIZE_BYTES] = bytes[..HEADER_SIZE_BYTES].try_into().unwrap();
        let header = MessageHeader::from_bytes(&header_bytes);
        let end = HEADER_SIZE_BYTES + header.payload_length_bytes as usize;
        if bytes.len() < end {
            break;
        }
        messages.push((header, bytes[HEADER_SIZE_BYTES..end].to_vec()));
        bytes.drain(..end);
    }
    host.port_mut().inboxes.insert(domain, bytes);
    messages
}

/// Sends a request the way a guest does (write, notify), serves, and returns the reply.
fn request(
    host: &mut RingHost<TestPort>,
    domain: DomainId,
    message_type: MessageType,
    request_id: u32,
    payload: &[u8],
) -> (u32, Vec<u8>) {
    write_request(host, domain, message_type, request_id, payload);
    host.notified(domain);
    host.serve(&mut |_| {});
    let replies: Vec<_> = read_messages(host, domain)
        .into_iter()
        .filter(|(header, _)| header.message_type != MessageType::WatchEvent.number())
        .collect();
    assert_eq!(replies.len(), 1, "one reply to request {request_id}");
    let (header, payload) = replies.into_iter().next().unwrap();
    assert_eq!(header.request_id, request_id);
    (header.message_type, payload)
}

/// A request any domain may make: the path of its own domain.
fn ask_own_path(host: &mut RingHost<TestPort>, domain: DomainId, request_id: u32) {
    let (kind, payload) = request(
        host,
        domain,
        MessageType::GetDomainPath,
        request_id,
        format!("{}\0", domain.0).as_bytes(),
    );
    assert_eq!(kind, MessageType::GetDomainPath.number());
    assert_eq!(payload, format!("/local/domain/{}\0", domain.0).as_bytes());
}

fn introduce(host: &mut RingHost<TestPort>, domain: DomainId, request_id: u32) -> (u32, Vec<u8>) {
    let payload = format!("{}\0{}\0{}\0", domain.0, 4242, 7);
    request(
        host,
        DOM0,
        MessageType::Introduce,
        request_id,
        payload.as_bytes(),
    )
}

fn ok(reply: (u32, Vec<u8>)) {
    assert_ne!(
        reply.0,
        MessageType::Error.number(),
        "error {:?}",
        String::from_utf8_lossy(&reply.1)
    );
}

#[test]
fn dom0_is_served_and_notified() {
    let mut host = host_with_dom0(HostSettings::default());
    let notified_at_start = host.port().notifications[&DOM0];
    assert!(notified_at_start >= 1, "adopt kicks the ring");
    let (kind, payload) = request(&mut host, DOM0, MessageType::Read, 1, b"/\0");
    assert_eq!(kind, MessageType::Read.number());
    assert_eq!(payload, b"");
    assert!(host.port().notifications[&DOM0] > notified_at_start);
    assert!(host.is_drained());
}

#[test]
fn introduced_guest_is_attached_reset_and_served() {
    let mut host = host_with_dom0(HostSettings::default());
    let guest = DomainId(5);
    // The guest's page had old indices: introduction resets them (C `domain_conn_reset()`).
    let stale = encode_message(MessageType::Read.number(), 99, 0, b"x\0");
    Ring::new(&*host.port_mut().page(guest))
        .client_write(&stale)
        .unwrap();
    ok(introduce(&mut host, guest, 2));
    assert!(host.has_ring(guest));
    assert_eq!(host.port().attached.last(), Some(&(guest, 2)));
    // Reset: the stale request is gone; the features were written when first served.
    let page = host.port_mut().page(guest);
    assert_eq!(Ring::new(&*page).server_pending_requests(), Ok(0));
    assert_ne!(Ring::new(&*page).server_features(), 0);
    ask_own_path(&mut host, guest, 3);
}

#[test]
fn a_ring_that_cannot_be_attached_fails_the_introduction() {
    let mut host = host_with_dom0(HostSettings::default());
    let guest = DomainId(6);
    host.port_mut().unmappable.push(guest);
    let (kind, payload) = introduce(&mut host, guest, 2);
    assert_eq!(kind, MessageType::Error.number());
    assert_eq!(payload, b"EINVAL\0");
    assert!(!host.has_ring(guest));
    assert!(host.engine().domain_connection(guest).is_none());
}

#[test]
fn release_and_death_detach_the_ring_once() {
    let (mut host, [released, dead]) = host_with_guests(HostSettings::default(), [7, 8]);
    ok(request(&mut host, DOM0, MessageType::Release, 4, b"7\0"));
    assert!(!host.has_ring(released));
    host.domain_died(dead);
    assert!(!host.has_ring(dead));
    let detached: Vec<DomainId> = host.port().detached.iter().map(|(d, _)| *d).collect();
    assert_eq!(detached, vec![released, dead]);
    // Reports after the fact cost nothing: no ring, nothing detached twice.
    host.domain_died(dead);
    host.notified(dead);
    assert!(!host.serve(&mut |_| {}));
    assert_eq!(host.port().detached.len(), 2);
    assert_eq!(host.ring_count(), 1);
}

#[test]
fn reintroduction_replaces_the_ring_after_the_request() {
    let (mut host, [guest]) = host_with_guests(HostSettings::default(), [9]);
    // Input the guest left unread by the engine goes with the old ring.
    write_request(&mut host, guest, MessageType::Read, 50, b"/\0");
    ok(introduce(&mut host, guest, 3));
    assert_eq!(host.port().detached, vec![(guest, 2)]);
    assert_eq!(host.port().attached.last(), Some(&(guest, 3)));
    ask_own_path(&mut host, guest, 4);
    // dom0 re-introducing itself from its own ring, while that ring is being served: the
    // table changes after the request; dom0's ring is served on.
    ok(introduce(&mut host, DOM0, 5));
    assert!(
        host.port()
            .detached
            .iter()
            .any(|(domain, _)| *domain == DOM0)
    );
    let (kind, _) = request(&mut host, DOM0, MessageType::Read, 6, b"/\0");
    assert_eq!(kind, MessageType::Read.number());
}

#[test]
fn a_ring_with_bad_indices_is_ignored_and_the_others_are_served() {
    let (mut host, [hostile, bystander]) = host_with_guests(HostSettings::default(), [10, 11]);
    // A producer index more than a ring ahead of the consumer.
    let page = host.port_mut().page(hostile);
    Ring::new(&*page).client_write(b"abcd").unwrap();
    use xenstore_engine::ring::RingMemory;
    let request_producer_offset = 1024 + 1024 + 4;
    page.store_u32_release(request_producer_offset, 5000);
    host.notified(hostile);
    host.serve(&mut |_| {});
    assert_eq!(host.port().ignored, vec![hostile]);
    assert!(host.served_rings().all(|(domain, _)| domain != hostile));
    assert!(host.has_ring(hostile), "ignored, not released");
    ask_own_path(&mut host, bystander, 4);
}

#[test]
fn a_lost_notification_is_found_by_the_sweep_and_counted() {
    let (mut host, [guest]) = host_with_guests(
        HostSettings {
            sweep: Some(SWEEP_NANOSECONDS),
        },
        [12],
    );
    ask_own_path(&mut host, guest, 3);
    // Written, not notified.
    write_request(&mut host, guest, MessageType::GetDomainPath, 4, b"12\0");
    assert!(!host.serve(&mut |_| {}));
    assert_eq!(host.statistics().missed_wakeups, 0, "no sweep is due yet");
    let deadline = host
        .next_deadline_ns()
        .expect("recently served rings are swept");
    assert!(deadline <= SWEEP_NANOSECONDS * 2);
    host.port_mut().now_ns = deadline;
    // The sweep finds it and asks for another round at once.
    assert!(host.serve(&mut |_| {}));
    assert_eq!(host.statistics().missed_wakeups, 1);
    assert!(!host.serve(&mut |_| {}));
    let replies = read_messages(&mut host, guest);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0.request_id, 4);
    // Two quiet intervals later nothing is swept and no wake-up is asked for.
    host.port_mut().now_ns += 3 * SWEEP_NANOSECONDS;
    assert!(!host.serve(&mut |_| {}));
    host.port_mut().now_ns += 3 * SWEEP_NANOSECONDS;
    assert!(!host.serve(&mut |_| {}));
    assert_eq!(host.next_deadline_ns(), None);
}

#[test]
fn without_a_sweep_an_unannounced_request_waits_for_its_notification() {
    let (mut host, [guest]) = host_with_guests(HostSettings::default(), [13]);
    write_request(&mut host, guest, MessageType::GetDomainPath, 3, b"13\0");
    host.port_mut().now_ns += 10 * SWEEP_NANOSECONDS;
    assert!(!host.serve(&mut |_| {}));
    assert!(read_messages(&mut host, guest).is_empty());
    host.notified(guest);
    host.serve(&mut |_| {});
    assert_eq!(read_messages(&mut host, guest).len(), 1);
}

#[test]
fn a_guest_over_its_outstanding_quota_waits_and_is_served_once_it_reads() {
    let mut config = Config::default();
    config.quotas.set(QuotaKind::Outstanding, 1);
    let mut host = host_with_config(HostSettings::default(), config);
    let guest = DomainId(14);
    ok(introduce(&mut host, guest, 2));
    ok(request(
        &mut host,
        DOM0,
        MessageType::Mkdir,
        3,
        b"/local/domain/14\0",
    ));
    ok(request(
        &mut host,
        DOM0,
        MessageType::SetPermissions,
        4,
        b"/local/domain/14\0n14\0",
    ));
    ok(request(
        &mut host,
        guest,
        MessageType::Watch,
        5,
        b"/local/domain/14\0token\0",
    ));
    read_messages(&mut host, guest);
    // dom0's writes fire events into the guest's ring faster than it reads them: once the
    // ring is full they wait in the engine.
    // More events than one ring holds (about 21 of these); fewer under Miri, which is slow.
    let writes: u32 = if cfg!(miri) { 30 } else { 100 };
    for index in 0..writes {
        let write = format!("/local/domain/14/data{index}\0value");
        write_request(
            &mut host,
            DOM0,
            MessageType::Write,
            100 + index,
            write.as_bytes(),
        );
        host.notified(DOM0);
        host.serve(&mut |_| {});
        read_messages(&mut host, DOM0);
    }
    let connection = host.engine().domain_connection(guest).unwrap();
    assert!(!host.engine().output(connection).is_empty(), "events wait");
    // The first reply waits behind the events: the second request must wait in the ring.
    write_request(&mut host, guest, MessageType::GetDomainPath, 6, b"14\0");
    write_request(&mut host, guest, MessageType::GetDomainPath, 7, b"14\0");
    host.notified(guest);
    host.serve(&mut |_| {});
    let blocked_before_reading = host.has_ring_work();
    // Reading makes room; each notification (and the tick, for a blocked ring) moves more.
    let mut events = 0;
    let mut answered = Vec::new();
    for _ in 0..400 {
        for (header, _) in read_messages(&mut host, guest) {
            if header.message_type == MessageType::WatchEvent.number() {
                events += 1;
            } else {
                answered.push(header.request_id);
            }
        }
        if answered.len() == 2 {
            break;
        }
        host.port_mut().now_ns += TICK_NANOSECONDS;
        host.tick_if_due();
        host.notified(guest);
        host.serve(&mut |_| {});
    }
    assert_eq!(
        answered,
        vec![6, 7],
        "answered in order once the guest read ({events} events)"
    );
    assert!(events > 20, "more events than one ring holds: {events}");
    assert!(host.is_drained());
    assert!(blocked_before_reading, "the ring waited for the engine");
}

#[test]
fn a_live_update_waits_on_the_hosts_clock_and_held_transaction_starts_go_on_after_a_failure() {
    use xenstore_engine::live_update::{LiveUpdatePoll, LiveUpdateSupport};
    use xenstore_engine::migration::NoFrontEndState;
    let config = Config {
        live_update: LiveUpdateSupport::KernelImage {
            image_size_limit_bytes: 4096,
        },
        ..Config::default()
    };
    let mut host = host_with_config(HostSettings::default(), config);
    ok(introduce(&mut host, DomainId(5), 2));
    let guest = DomainId(5);
    // The guest's transaction, 1 s old when the update starts.
    let (_, transaction) = request(&mut host, guest, MessageType::TransactionStart, 3, b"\0");
    assert_eq!(transaction, b"1\0");
    host.port_mut().now_ns = 1_000_000_000;
    let control = MessageType::Control;
    assert_eq!(
        request(&mut host, DOM0, control, 4, b"live-update\0-b\x004\0").1,
        b"OK\0"
    );
    let data = b"live-update\0-d\x004\0\0k\0\x01\0";
    assert_eq!(request(&mut host, DOM0, control, 5, data).1, b"OK\0");
    write_request(&mut host, DOM0, control, 6, b"live-update\0-s\0-t\x002\0");
    host.notified(DOM0);
    host.serve(&mut |_| {});
    assert!(read_messages(&mut host, DOM0).is_empty(), "the start waits");
    assert_eq!(host.poll_live_update(), LiveUpdatePoll::Waiting);
    // The host wakes up when the timeout passes.
    assert_eq!(host.next_deadline_ns(), Some(3_000_000_000));
    // The guest's transaction ends; another domain's start is held back in its ring.
    let end = encode_message(MessageType::TransactionEnd.number(), 7, 1, b"F\0");
    let page = host.port_mut().page(guest);
    assert_eq!(Ring::new(&*page).client_write(&end), Ok(end.len()));
    host.notified(guest);
    host.serve(&mut |_| {});
    assert_eq!(read_messages(&mut host, guest)[0].1, b"OK\0");
    ok(introduce(&mut host, DomainId(6), 8));
    write_request(
        &mut host,
        DomainId(6),
        MessageType::TransactionStart,
        9,
        b"\0",
    );
    host.notified(DomainId(6));
    host.serve(&mut |_| {});
    assert!(read_messages(&mut host, DomainId(6)).is_empty());
    let LiveUpdatePoll::Ready(plan) = host.poll_live_update() else {
        panic!("no transaction is open: the update goes ahead");
    };
    assert_eq!(plan.image, b"\0k\0\x01");
    let stream = host
        .write_live_update_state(&plan, &NoFrontEndState)
        .expect("written");
    let (_, restored) = Engine::from_state(Config::default(), &stream).expect("read back");
    let held = restored
        .connections
        .iter()
        .find(|connection| !connection.unread_input.is_empty())
        .expect("the held start is unread input");
    assert_eq!(
        held.unread_input,
        encode_message(MessageType::TransactionStart.number(), 9, 0, b"\0")
    );
    // The kexec failed: the start is answered with the reason, the held start runs.
    host.live_update_failed(plan, "kexec() returned -12");
    host.serve(&mut |_| {});
    let replies = read_messages(&mut host, DOM0);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0.request_id, 6);
    assert_eq!(replies[0].1, b"kexec() returned -12\0");
    let replies = read_messages(&mut host, DomainId(6));
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0.request_id, 9);
    assert_eq!(replies[0].1, b"1\0");
    assert_eq!(host.poll_live_update(), LiveUpdatePoll::Idle);
}
