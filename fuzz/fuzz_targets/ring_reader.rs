//! Fuzz target: the shared ring (`engine::ring::Ring` over `InMemoryPage`) with a hostile
//! peer that sets any index, byte, connection or error word between the store's passes
//! (`service_ring`), as a guest can at any moment (XSA-38; docs/hostile-guests.md, "Ring abuse").
//! Checks: no panic, reads and writes never report more than a ring's worth, a failed
//! ring stays failed and gets an error code, and the accounting equals a recount.
#![no_main]

use xenstore_engine::ring::{InMemoryPage, RING_SIZE_BYTES, Ring, RingMemory, offset};
use xenstore_engine::ring_service::service_ring;
use xenstore_engine::testing::NullPlatform;
use xenstore_engine::{Config, DomainId, Engine};

const WORDS: [usize; 7] = [
    offset::REQUEST_CONSUMER,
    offset::REQUEST_PRODUCER,
    offset::RESPONSE_CONSUMER,
    offset::RESPONSE_PRODUCER,
    offset::CONNECTION,
    offset::ERROR,
    offset::SERVER_FEATURES,
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut engine = Engine::new(Config::default());
    let mut platform = NullPlatform::default();
    let domain = DomainId(7);
    let connection = engine.open_domain_connection(&mut platform, domain);
    let page = InMemoryPage::new();
    let ring = Ring::new(&page);
    let mut pending = Vec::new();
    let mut bytes = data.iter().copied();
    let mut failed = false;
    while let Some(action) = bytes.next() {
        match action % 5 {
            0 => {
                // Set one index or control word to an arbitrary value.
                let word = WORDS[usize::from(action / 5) % WORDS.len()];
                let value = u32::from_le_bytes([
                    bytes.next().unwrap_or(0),
                    bytes.next().unwrap_or(0),
                    bytes.next().unwrap_or(0),
                    bytes.next().unwrap_or(0),
                ]);
                page.store_u32_release(word, value);
            }
            1 => {
                // A well-behaved client write of the next few bytes (a request stream).
                let count = usize::from(action / 5);
                let chunk: Vec<u8> = bytes.by_ref().take(count).collect();
                let _ = ring.client_write(&chunk);
            }
            2 => {
                // Scribble raw bytes anywhere in the page.
                let position = usize::from(bytes.next().unwrap_or(0)) * 16;
                let chunk: Vec<u8> = bytes.by_ref().take(usize::from(action / 5)).collect();
                page.write_bytes(position, &chunk);
            }
            3 => {
                let mut buffer = [0u8; RING_SIZE_BYTES];
                if let Ok(count) = ring.client_read(&mut buffer[..usize::from(action / 5) * 8 + 1])
                {
                    assert!(count <= RING_SIZE_BYTES);
                }
            }
            _ => {
                let outcome = service_ring(
                    &mut engine,
                    &mut platform,
                    connection,
                    domain,
                    &ring,
                    &mut pending,
                );
                if failed {
                    assert!(outcome.failure.is_some(), "a failed ring stays failed");
                }
                if outcome.failure.is_some() {
                    failed = true;
                    assert!(pending.is_empty(), "nothing kept from a failed ring");
                }
                assert!(pending.len() <= 64 * 1024, "bounded pending input");
            }
        }
    }
    // Direct reads never claim more than a ring's worth.
    let mut buffer = [0u8; 2 * RING_SIZE_BYTES];
    if let Ok(count) = ring.server_read(&mut buffer) {
        assert!(count <= RING_SIZE_BYTES);
    }
    if let Ok(count) = ring.server_write(&buffer) {
        assert!(count <= RING_SIZE_BYTES);
    }
    assert_eq!(engine.check_accounting(), 0, "accounting equals a recount");
});
