//! The xenstore shared-ring protocol (`docs/misc/xenstore-ring.txt`, `xs_wire.h`) as pure logic over a 4 KiB page.
//!
//! The page is `struct xenstore_domain_interface`: two 1024-byte byte rings (requests from the
//! guest, responses to it) with free-running 32-bit producer/consumer indices, followed by the
//! feature, connection-state, error and event-channel words. Byte `x` of a stream lives at
//! `x mod 1024`; `producer - consumer` (wrapping) is the number of unread bytes and must never
//! exceed 1024 (`xenstore-ring.txt`, "Producer and consumer indices").
//!
//! Where the page lives is abstracted by [`RingMemory`]: the PVH kernel implements it over a
//! grant-mapped frame, the Linux daemon over a `mmap`ed shared file, and [`InMemoryPage`] is a
//! safe implementation for tests. Both sides of the protocol are here: [`Ring::server_read`] /
//! [`Ring::server_write`] for the store, [`Ring::client_write`] / [`Ring::client_read`] for a
//! guest (the guest tool and tests).
//!
//! Every index is read from shared memory exactly once per operation and validated before use,
//! because the other side may change it at any moment (C xenstored 4.22,
//! `domain.c:check_indexes()`).

use core::ops::Range;
use core::sync::atomic::{AtomicU32, Ordering, fence};

/// Size of the shared page in bytes.
pub const PAGE_SIZE_BYTES: usize = 4096;
/// Size of each of the two byte rings (`XENSTORE_RING_SIZE`).
pub const RING_SIZE_BYTES: usize = 1024;
/// [`RING_SIZE_BYTES`] as an index-space quantity.
const RING_SIZE_INDEX: u32 = 1024;

/// Byte offsets of the fields of `struct xenstore_domain_interface` (`xs_wire.h`).
pub mod offset {
    /// `char req[1024]`: guest → server bytes.
    pub const REQUEST: usize = 0;
    /// `char rsp[1024]`: server → guest bytes (replies and watch events).
    pub const RESPONSE: usize = 1024;
    /// `req_cons`: written by the server.
    pub const REQUEST_CONSUMER: usize = 2048;
    /// `req_prod`: written by the guest.
    pub const REQUEST_PRODUCER: usize = 2052;
    /// `rsp_cons`: written by the guest.
    pub const RESPONSE_CONSUMER: usize = 2056;
    /// `rsp_prod`: written by the server.
    pub const RESPONSE_PRODUCER: usize = 2060;
    /// `server_features`: bits the server supports (see [`super::feature`]).
    pub const SERVER_FEATURES: usize = 2064;
    /// `connection`: [`super::connection`] state.
    pub const CONNECTION: usize = 2068;
    /// `error`: why the server stopped serving (see [`super::error`]).
    pub const ERROR: usize = 2072;
    /// `evtchn_port`: the guest's port, when the toolstack put it there (`xs_wire.h` since 4.21).
    pub const EVENT_CHANNEL_PORT: usize = 2076;
}

/// `server_features` bits (`xs_wire.h` `XENSTORE_SERVER_FEATURE_*`): what the ring advertises,
/// and what a domain may use (`crate::domain::feature`).
pub mod feature {
    /// `XENSTORE_SERVER_FEATURE_RECONNECTION`: guest-initiated ring reset via the
    /// `connection` field.
    pub const RECONNECTION: u32 = 1;
    /// `XENSTORE_SERVER_FEATURE_ERROR`: the ring's `error` field is valid.
    pub const ERROR: u32 = 2;
    /// `XENSTORE_SERVER_FEATURE_WATCHDEPTH`: `XS_WATCH` takes an optional depth.
    pub const WATCH_DEPTH: u32 = 4;
    /// `XENSTORE_SERVER_FEATURE_DOMID_ANY`: permission entries may name `DOMID_ANY`.
    pub const DOMID_ANY: u32 = 8;
    /// What C xenstored 4.22 advertises (`domain.c` `XENSTORE_FEATURES`); not RECONNECTION.
    pub const C_XENSTORED_4_22: u32 = ERROR | WATCH_DEPTH | DOMID_ANY;
    /// What this server supports (and advertises by default): the same as C 4.22.
    pub const SUPPORTED: u32 = C_XENSTORED_4_22;
}

/// `connection` values (`XENSTORE_CONNECTED`, `XENSTORE_RECONNECT`).
pub mod connection {
    /// Normal operation; only the server writes this value.
    pub const CONNECTED: u32 = 0;
    /// The guest asks for a ring reset; only the guest writes this value.
    pub const RECONNECT: u32 = 1;
}

/// `error` values (`XENSTORE_ERROR_*`).
pub mod error {
    /// No error.
    pub const NONE: u32 = 0;
    /// The event channel is unusable.
    pub const COMMUNICATION: u32 = 1;
    /// Inconsistent producer/consumer indices.
    pub const RING_INDEX: u32 = 2;
    /// A message header announced more than 4096 payload bytes.
    pub const PROTOCOL: u32 = 3;
}

/// A shared page whose words and bytes the front end can hand out as atomics (a mapped
/// grant, a mapped file). Implementing it gives [`RingMemory`]: the copy loops are written
/// once, here. Accessors return `None` for offsets outside the page.
pub trait AtomicPage {
    /// The aligned word at byte `offset`.
    fn word(&self, offset: usize) -> Option<&AtomicU32>;
    /// The byte at `offset`.
    fn byte(&self, offset: usize) -> Option<&core::sync::atomic::AtomicU8>;
    /// The aligned 8-byte word at byte `offset`, so that the copy loops move 8 bytes per
    /// access (`None`, the default: byte by byte). Under QEMU's TCG every loop iteration
    /// is a translated block run; a 2000-byte value took 2000 of them each way.
    fn word64(&self, _offset: usize) -> Option<&core::sync::atomic::AtomicU64> {
        None
    }
}

impl<P: AtomicPage + ?Sized> RingMemory for P {
    fn load_u32_acquire(&self, offset: usize) -> u32 {
        load_acquire(self.word(offset))
    }

    fn store_u32_release(&self, offset: usize, value: u32) {
        store_release(self.word(offset), value);
    }

    fn read_bytes(&self, offset: usize, destination: &mut [u8]) {
        walk_page(
            self,
            offset,
            destination.len(),
            |copied, access| match access {
                PageAccess::Word(word) => {
                    if let Some(chunk) = destination.get_mut(copied..copied + 8) {
                        // Native byte order: the bytes in the order memory holds them.
                        chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
                    }
                }
                PageAccess::Byte(byte) => {
                    if let Some(slot) = destination.get_mut(copied) {
                        *slot = byte.map_or(0, |byte| byte.load(Ordering::Relaxed));
                    }
                }
            },
        );
    }

    fn write_bytes(&self, offset: usize, source: &[u8]) {
        walk_page(self, offset, source.len(), |copied, access| match access {
            PageAccess::Word(word) => {
                if let Some(chunk) = source.get(copied..copied + 8) {
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(chunk);
                    word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
                }
            }
            PageAccess::Byte(byte) => {
                if let (Some(value), Some(byte)) = (source.get(copied), byte) {
                    byte.store(*value, Ordering::Relaxed);
                }
            }
        });
    }
}

/// One step of [`walk_page`]: an aligned 8-byte word, or a single byte (`None` outside the
/// page).
enum PageAccess<'page> {
    Word(&'page core::sync::atomic::AtomicU64),
    Byte(Option<&'page core::sync::atomic::AtomicU8>),
}

/// Walks `length` bytes of `page` from `offset` for the copy loops: whole aligned words where
/// the page offers them and 8 bytes remain, single bytes elsewhere. `step` gets how many bytes
/// came before and the access.
fn walk_page<'page, P: AtomicPage + ?Sized>(
    page: &'page P,
    offset: usize,
    length: usize,
    mut step: impl FnMut(usize, PageAccess<'page>),
) {
    let mut copied = 0;
    while copied < length
        && let Some(position) = offset.checked_add(copied)
    {
        if length - copied >= 8
            && position.is_multiple_of(8)
            && let Some(word) = page.word64(position)
        {
            step(copied, PageAccess::Word(word));
            copied += 8;
        } else {
            step(copied, PageAccess::Byte(page.byte(position)));
            copied += 1;
        }
    }
}

/// Loads a shared index word with acquire ordering; 0 outside the page.
fn load_acquire(word: Option<&AtomicU32>) -> u32 {
    word.map_or(0, |word| word.load(Ordering::Acquire))
}

/// Stores a shared index word with release ordering; nothing outside the page.
fn store_release(word: Option<&AtomicU32>, value: u32) {
    if let Some(word) = word {
        word.store(value, Ordering::Release);
    }
}

/// Access to the 4 KiB shared page.
///
/// Offsets are byte offsets into the page. Implementations must ignore (or clamp) accesses
/// that would leave the page, so that a bug can never turn into an out-of-bounds access; the
/// functions of this module only ever pass in-bounds offsets.
pub trait RingMemory {
    /// Loads the aligned 32-bit word at `offset` with acquire ordering.
    fn load_u32_acquire(&self, offset: usize) -> u32;
    /// Stores the aligned 32-bit word at `offset` with release ordering.
    fn store_u32_release(&self, offset: usize, value: u32);
    /// Copies `destination.len()` bytes starting at `offset` out of the page.
    fn read_bytes(&self, offset: usize, destination: &mut [u8]);
    /// Copies `source` into the page starting at `offset`.
    fn write_bytes(&self, offset: usize, source: &[u8]);
}

/// The indices of one direction were inconsistent: the other side broke the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingError {
    /// The producer index as read.
    pub producer: u32,
    /// The consumer index as read.
    pub consumer: u32,
}

impl core::fmt::Display for RingError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            formatter,
            "inconsistent ring indices: producer {:#x}, consumer {:#x}",
            self.producer, self.consumer
        )
    }
}

/// One direction of the page: where its bytes live and which words index it.
#[derive(Clone, Copy)]
struct Direction {
    data_offset: usize,
    consumer_offset: usize,
    producer_offset: usize,
}

const REQUESTS: Direction = Direction {
    data_offset: offset::REQUEST,
    consumer_offset: offset::REQUEST_CONSUMER,
    producer_offset: offset::REQUEST_PRODUCER,
};

const RESPONSES: Direction = Direction {
    data_offset: offset::RESPONSE,
    consumer_offset: offset::RESPONSE_CONSUMER,
    producer_offset: offset::RESPONSE_PRODUCER,
};

/// Unread bytes between two indices, or the error when they cannot both be honest.
fn unread_bytes(producer: u32, consumer: u32) -> Result<usize, RingError> {
    let unread = producer.wrapping_sub(consumer);
    if unread > RING_SIZE_INDEX {
        return Err(RingError { producer, consumer });
    }
    // `unread` is at most 1024, so the conversion is exact.
    Ok(unread as usize)
}

/// A byte count within one ring (at most 1024) as an index distance; saturates instead of
/// truncating, so that a bug could never wrap an index silently.
fn index_distance(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// The position of stream index `index` inside a ring (`MASK_XENSTORE_IDX`).
fn ring_position(index: u32) -> usize {
    (index & (RING_SIZE_INDEX - 1)) as usize
}

/// The pieces of `count` stream bytes from index `start`: `(ring position, range of the
/// caller's buffer)`, split where the bytes run past the end of the ring and continue at its
/// start (at most two pieces).
fn ring_chunks(start: u32, count: usize) -> impl Iterator<Item = (usize, Range<usize>)> {
    let mut copied = 0;
    core::iter::from_fn(move || {
        if copied >= count {
            return None;
        }
        let position = ring_position(start.wrapping_add(index_distance(copied)));
        let chunk = (count - copied).min(RING_SIZE_BYTES - position);
        let range = copied..copied + chunk;
        copied += chunk;
        Some((position, range))
    })
}

/// Orders an index just published before the next read of the other side's index.
///
/// Both sides decide whether to signal by "store my index, then load yours": the guest
/// stores `req_prod` and notifies only if our `req_cons` had caught up (Linux `xb_write`);
/// we store `req_cons` and then re-read `req_prod` before sleeping. Release/acquire does not
/// order a store before a later load (x86 store buffers reorder exactly that), so without a
/// full fence both sides can read the other's old index: the guest skips the notification,
/// we see an empty ring and sleep on a request forever. `xenstore-ring.txt` lets either side
/// inspect the ring at any time; this is the re-check that `RING_FINAL_CHECK_FOR_REQUESTS`
/// in `xen/include/public/io/ring.h` makes with a full barrier for the same reason.
fn publication_fence() {
    fence(Ordering::SeqCst);
}

/// A view of a shared page through which one side speaks the ring protocol.
pub struct Ring<'memory, M: RingMemory + ?Sized> {
    memory: &'memory M,
}

impl<'memory, M: RingMemory + ?Sized> Ring<'memory, M> {
    /// A view of `memory`.
    pub fn new(memory: &'memory M) -> Self {
        Ring { memory }
    }

    /// Copies up to `destination.len()` unread bytes of `direction` and marks them consumed.
    fn consume(&self, direction: Direction, destination: &mut [u8]) -> Result<usize, RingError> {
        // Each index is read once; every later decision uses these copies.
        let consumer = self.memory.load_u32_acquire(direction.consumer_offset);
        let producer = self.memory.load_u32_acquire(direction.producer_offset);
        let count = unread_bytes(producer, consumer)?.min(destination.len());
        for (position, range) in ring_chunks(consumer, count) {
            if let Some(target) = destination.get_mut(range) {
                self.memory
                    .read_bytes(direction.data_offset + position, target);
            }
        }
        // Release: our reads of the data happen before the producer may overwrite it.
        self.advance(direction.consumer_offset, consumer, count);
        Ok(count)
    }

    /// Appends as much of `source` as fits into `direction` and publishes it.
    fn produce(&self, direction: Direction, source: &[u8]) -> Result<usize, RingError> {
        let consumer = self.memory.load_u32_acquire(direction.consumer_offset);
        let producer = self.memory.load_u32_acquire(direction.producer_offset);
        let unread = unread_bytes(producer, consumer)?;
        let count = (RING_SIZE_BYTES - unread).min(source.len());
        for (position, range) in ring_chunks(producer, count) {
            if let Some(chunk_bytes) = source.get(range) {
                self.memory
                    .write_bytes(direction.data_offset + position, chunk_bytes);
            }
        }
        // Release: the data is visible before the consumer sees the new producer index.
        self.advance(direction.producer_offset, producer, count);
        Ok(count)
    }

    /// Publishes the index word at `index_offset` as `index + count` (nothing when `count` is
    /// 0), with release ordering and the [`publication_fence`].
    fn advance(&self, index_offset: usize, index: u32, count: usize) {
        if count > 0 {
            self.memory
                .store_u32_release(index_offset, index.wrapping_add(index_distance(count)));
            publication_fence();
        }
    }

    /// Unread bytes in `direction`, validated.
    fn unread(&self, direction: Direction) -> Result<usize, RingError> {
        let consumer = self.memory.load_u32_acquire(direction.consumer_offset);
        let producer = self.memory.load_u32_acquire(direction.producer_offset);
        unread_bytes(producer, consumer)
    }

    /// Server: takes up to `destination.len()` request bytes; returns how many.
    ///
    /// Messages may arrive in pieces: the caller keeps feeding the bytes to its framer.
    pub fn server_read(&self, destination: &mut [u8]) -> Result<usize, RingError> {
        self.consume(REQUESTS, destination)
    }

    /// Server: writes as many response bytes as there is room for; returns how many.
    pub fn server_write(&self, source: &[u8]) -> Result<usize, RingError> {
        self.produce(RESPONSES, source)
    }

    /// Server: request bytes waiting to be read.
    pub fn server_pending_requests(&self) -> Result<usize, RingError> {
        self.unread(REQUESTS)
    }

    /// Server: free space in the response ring.
    pub fn server_response_space(&self) -> Result<usize, RingError> {
        Ok(RING_SIZE_BYTES - self.unread(RESPONSES)?)
    }

    /// Server, at (re)introduction: zero all four indices and advertise `features`
    /// (C xenstored 4.22, `domain.c:domain_conn_reset()` and `introduce_domain()`).
    ///
    /// Returns true when the guest had asked for a reconnection (`connection == RECONNECT`,
    /// the dom0less flow); the state is then set back to CONNECTED and the caller must notify
    /// the guest (docs/protocol.md, "Ring", "Introduction and reconnection").
    pub fn server_reset(&self, features: u32) -> bool {
        for word in [
            offset::REQUEST_CONSUMER,
            offset::REQUEST_PRODUCER,
            offset::RESPONSE_CONSUMER,
            offset::RESPONSE_PRODUCER,
        ] {
            self.memory.store_u32_release(word, 0);
        }
        self.memory
            .store_u32_release(offset::SERVER_FEATURES, features);
        let reconnecting = self.reconnect_requested();
        if reconnecting {
            self.memory
                .store_u32_release(offset::CONNECTION, connection::CONNECTED);
        }
        reconnecting
    }

    /// Server: sets the `connection` field (only the server sets CONNECTED).
    pub fn set_connection(&self, state: u32) {
        self.memory.store_u32_release(offset::CONNECTION, state);
    }

    /// Whether the guest has set `connection = RECONNECT`.
    pub fn reconnect_requested(&self) -> bool {
        self.memory.load_u32_acquire(offset::CONNECTION) == connection::RECONNECT
    }

    /// Server: records why the ring is no longer served (see [`error`]).
    pub fn set_error(&self, value: u32) {
        self.memory.store_u32_release(offset::ERROR, value);
    }

    /// The `error` field.
    pub fn error(&self) -> u32 {
        self.memory.load_u32_acquire(offset::ERROR)
    }

    /// Server: advertises `features`. The ring document allows adding bits at any time but
    /// never clearing them once the guest may have seen them; callers set the final set right
    /// after introduction.
    pub fn set_server_features(&self, features: u32) {
        self.memory
            .store_u32_release(offset::SERVER_FEATURES, features);
    }

    /// The `server_features` field.
    pub fn server_features(&self) -> u32 {
        self.memory.load_u32_acquire(offset::SERVER_FEATURES)
    }

    /// The `evtchn_port` field (0 when the toolstack did not fill it in).
    pub fn event_channel_port(&self) -> u32 {
        self.memory.load_u32_acquire(offset::EVENT_CHANNEL_PORT)
    }

    /// Client: appends as much of `source` to the request ring as fits; returns how many bytes.
    pub fn client_write(&self, source: &[u8]) -> Result<usize, RingError> {
        self.produce(REQUESTS, source)
    }

    /// Client: takes up to `destination.len()` response bytes; returns how many.
    pub fn client_read(&self, destination: &mut [u8]) -> Result<usize, RingError> {
        self.consume(RESPONSES, destination)
    }

    /// Client: response bytes waiting to be read.
    pub fn client_pending_responses(&self) -> Result<usize, RingError> {
        self.unread(RESPONSES)
    }

    /// Client: asks the server for a ring reset (only meaningful with [`feature::RECONNECTION`]).
    pub fn client_request_reconnect(&self) {
        self.memory
            .store_u32_release(offset::CONNECTION, connection::RECONNECT);
    }
}

/// A safe, heap-free page for tests and simulations: 1024 atomic words.
///
/// Byte stores use `fetch_and`/`fetch_or` on the containing word so that the two sides may
/// write neighbouring bytes from different threads without losing each other's updates.
pub struct InMemoryPage {
    words: [AtomicU32; PAGE_SIZE_BYTES / 4],
}

impl Default for InMemoryPage {
    fn default() -> Self {
        InMemoryPage {
            words: [const { AtomicU32::new(0) }; PAGE_SIZE_BYTES / 4],
        }
    }
}

impl InMemoryPage {
    /// A zeroed page.
    pub fn new() -> Self {
        Self::default()
    }

    fn word(&self, byte_offset: usize) -> Option<&AtomicU32> {
        self.words.get(byte_offset / 4)
    }
}

impl RingMemory for InMemoryPage {
    fn load_u32_acquire(&self, offset: usize) -> u32 {
        load_acquire(self.word(offset))
    }

    fn store_u32_release(&self, offset: usize, value: u32) {
        store_release(self.word(offset), value);
    }

    fn read_bytes(&self, offset: usize, destination: &mut [u8]) {
        for (index, byte) in destination.iter_mut().enumerate() {
            let byte_offset = offset + index;
            let shift = (byte_offset % 4) * 8;
            // Little-endian layout inside the word, as on x86 and Arm.
            *byte = self.word(byte_offset).map_or(0, |word| {
                u8::try_from((word.load(Ordering::Relaxed) >> shift) & 0xFF).unwrap_or(0)
            });
        }
    }

    fn write_bytes(&self, offset: usize, source: &[u8]) {
        for (index, byte) in source.iter().enumerate() {
            let byte_offset = offset + index;
            let shift = (byte_offset % 4) * 8;
            if let Some(word) = self.word(byte_offset) {
                word.fetch_and(!(0xFF << shift), Ordering::Relaxed);
                word.fetch_or(u32::from(*byte) << shift, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn page_with_indices(request_consumer: u32, request_producer: u32) -> InMemoryPage {
        let page = InMemoryPage::new();
        page.store_u32_release(offset::REQUEST_CONSUMER, request_consumer);
        page.store_u32_release(offset::REQUEST_PRODUCER, request_producer);
        page
    }

    #[test]
    fn layout_matches_xs_wire_h() {
        assert_eq!(offset::RESPONSE, RING_SIZE_BYTES);
        assert_eq!(offset::REQUEST_CONSUMER, 2 * RING_SIZE_BYTES);
        assert_eq!(offset::EVENT_CHANNEL_PORT, 2076);
        assert_eq!(feature::C_XENSTORED_4_22, 14);
    }

    #[test]
    fn request_round_trip() {
        let page = InMemoryPage::new();
        let ring = Ring::new(&page);
        assert_eq!(ring.client_write(b"hello"), Ok(5));
        assert_eq!(ring.server_pending_requests(), Ok(5));
        let mut buffer = [0u8; 16];
        assert_eq!(ring.server_read(&mut buffer), Ok(5));
        assert_eq!(&buffer[..5], b"hello");
        assert_eq!(ring.server_read(&mut buffer), Ok(0));
        assert_eq!(page.load_u32_acquire(offset::REQUEST_CONSUMER), 5);
    }

    #[test]
    fn response_round_trip_and_partial_reads() {
        let page = InMemoryPage::new();
        let ring = Ring::new(&page);
        assert_eq!(ring.server_write(b"abcdef"), Ok(6));
        let mut first = [0u8; 4];
        assert_eq!(ring.client_read(&mut first), Ok(4));
        assert_eq!(&first, b"abcd");
        assert_eq!(ring.client_pending_responses(), Ok(2));
        let mut rest = [0u8; 8];
        assert_eq!(ring.client_read(&mut rest), Ok(2));
        assert_eq!(&rest[..2], b"ef");
    }

    #[test]
    fn full_ring_accepts_only_free_space() {
        let page = InMemoryPage::new();
        let ring = Ring::new(&page);
        let data: Vec<u8> = (0..1500u32).map(|value| value as u8).collect();
        assert_eq!(ring.server_write(&data), Ok(1024));
        assert_eq!(ring.server_response_space(), Ok(0));
        assert_eq!(ring.server_write(b"x"), Ok(0));
        let mut buffer = [0u8; 100];
        assert_eq!(ring.client_read(&mut buffer), Ok(100));
        assert_eq!(ring.server_write(&data[1024..]), Ok(100));
        let mut all = Vec::new();
        loop {
            let count = ring.client_read(&mut buffer).unwrap();
            if count == 0 {
                break;
            }
            all.extend_from_slice(&buffer[..count]);
        }
        assert_eq!(all, &data[100..1124]);
    }

    #[test]
    fn wraps_at_the_ring_end_and_at_the_index_limit() {
        // Start two bytes before 2^32 and three bytes before the end of the ring.
        let start = u32::MAX - 1;
        let page = page_with_indices(start, start);
        let ring = Ring::new(&page);
        let message: Vec<u8> = (0..10u8).collect();
        assert_eq!(ring.client_write(&message), Ok(10));
        assert_eq!(
            page.load_u32_acquire(offset::REQUEST_PRODUCER),
            start.wrapping_add(10)
        );
        assert_eq!(ring.server_pending_requests(), Ok(10));
        let mut buffer = [0u8; 10];
        assert_eq!(ring.server_read(&mut buffer), Ok(10));
        assert_eq!(&buffer[..], &message[..]);
        assert_eq!(page.load_u32_acquire(offset::REQUEST_CONSUMER), 8);
        // The first two bytes sit at the end of the ring, the rest at its start.
        let mut tail = [0u8; 2];
        page.read_bytes(offset::REQUEST + 1022, &mut tail);
        assert_eq!(tail, [0, 1]);
    }

    #[test]
    fn exactly_full_across_the_index_wrap_is_valid() {
        let page = page_with_indices(u32::MAX - 100, (u32::MAX - 100).wrapping_add(1024));
        let ring = Ring::new(&page);
        assert_eq!(ring.server_pending_requests(), Ok(1024));
        let mut buffer = [0u8; 2048];
        assert_eq!(ring.server_read(&mut buffer), Ok(1024));
    }

    #[test]
    fn hostile_indices_are_refused_without_side_effects() {
        for (consumer, producer) in [
            (0, 1025),
            (0, u32::MAX),
            (10, 5),
            (u32::MAX, 1024),
            (0x8000_0000, 0),
        ] {
            let page = page_with_indices(consumer, producer);
            let ring = Ring::new(&page);
            let mut buffer = [0u8; 64];
            assert_eq!(
                ring.server_read(&mut buffer),
                Err(RingError { producer, consumer })
            );
            assert_eq!(page.load_u32_acquire(offset::REQUEST_CONSUMER), consumer);
        }
        let page = InMemoryPage::new();
        page.store_u32_release(offset::RESPONSE_CONSUMER, 2000);
        let ring = Ring::new(&page);
        assert!(ring.server_write(b"reply").is_err());
        assert_eq!(page.load_u32_acquire(offset::RESPONSE_PRODUCER), 0);
    }

    #[test]
    fn reset_zeroes_indices_advertises_features_and_answers_reconnect() {
        let page = page_with_indices(7, 9);
        page.store_u32_release(offset::RESPONSE_PRODUCER, 3);
        let ring = Ring::new(&page);
        assert!(!ring.server_reset(feature::C_XENSTORED_4_22));
        assert_eq!(ring.server_pending_requests(), Ok(0));
        assert_eq!(page.load_u32_acquire(offset::RESPONSE_PRODUCER), 0);
        assert_eq!(ring.server_features(), 14);
        ring.client_request_reconnect();
        assert!(ring.reconnect_requested());
        assert!(ring.server_reset(feature::C_XENSTORED_4_22));
        assert_eq!(
            page.load_u32_acquire(offset::CONNECTION),
            connection::CONNECTED
        );
        ring.set_error(error::RING_INDEX);
        assert_eq!(ring.error(), 2);
    }

    #[test]
    fn out_of_page_accesses_are_ignored() {
        let page = InMemoryPage::new();
        page.store_u32_release(PAGE_SIZE_BYTES, 1);
        assert_eq!(page.load_u32_acquire(PAGE_SIZE_BYTES), 0);
        let mut buffer = [9u8; 4];
        page.read_bytes(PAGE_SIZE_BYTES - 2, &mut buffer);
        assert_eq!(buffer, [0; 4]);
    }

    #[test]
    fn streaming_many_messages_through_both_rings_across_threads() {
        let page = page_with_indices(u32::MAX - 3000, u32::MAX - 3000);
        page.store_u32_release(offset::RESPONSE_CONSUMER, u32::MAX - 5);
        page.store_u32_release(offset::RESPONSE_PRODUCER, u32::MAX - 5);
        let total = 20_000usize;
        let expected: Vec<u8> = (0..total).map(|value| (value * 7) as u8).collect();
        std::thread::scope(|scope| {
            let page = &page;
            let expected = &expected;
            scope.spawn(move || {
                // The "guest": writes requests in odd-sized pieces.
                let ring = Ring::new(page);
                let mut sent = 0;
                while sent < total {
                    let end = (sent + 333).min(total);
                    sent += ring.client_write(&expected[sent..end]).unwrap();
                    std::thread::yield_now();
                }
            });
            // The "server": echoes every request byte back as a response.
            let ring = Ring::new(page);
            let mut echoed = 0;
            let mut buffer = [0u8; 700];
            while echoed < total {
                let count = ring.server_read(&mut buffer).unwrap();
                let mut written = 0;
                while written < count {
                    written += ring.server_write(&buffer[written..count]).unwrap();
                    let mut sink = [0u8; 1024];
                    let drained = ring.client_read(&mut sink).unwrap();
                    let _ = drained;
                }
                assert_eq!(&buffer[..count], &expected[echoed..echoed + count]);
                echoed += count;
                std::thread::yield_now();
            }
        });
    }
}
