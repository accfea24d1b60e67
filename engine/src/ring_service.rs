//! Serving one shared ring: requests from the ring into the engine, replies and events back.
//!
//! Both front ends run this for every ring they serve (the kernel over grant-mapped pages,
//! the Linux daemon over shared-memory files), so ring handling is written and tested once.

use crate::domain::feature;
use crate::engine::{ConnectionFailure, Engine};
use crate::ring::{Ring, RingMemory};
use crate::{ConnectionId, DomainId, Platform};
use alloc::vec::Vec;

/// What one call of [`service_ring`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingServiceOutcome {
    /// Bytes moved in either direction: the guest must be notified.
    pub progressed: bool,
    /// The connection failed (now or earlier): the ring is no longer served.
    pub failure: Option<ConnectionFailure>,
}

/// Moves bytes both ways until neither side can go on.
///
/// Requests are read from the ring only while the engine wants input (outstanding-request
/// and write-rate limits); bytes read but not yet taken stay in `pending_input` for the next
/// call. Index abuse fails the connection with [`ConnectionFailure::RingIndex`]; on any
/// failure the ring's `error` field is set when the domain may see it (feature `ERROR`,
/// as C 4.22 requires) and nothing more is exchanged.
pub fn service_ring<M: RingMemory + ?Sized>(
    engine: &mut Engine,
    platform: &mut dyn Platform,
    connection: ConnectionId,
    domain: DomainId,
    ring: &Ring<'_, M>,
    pending_input: &mut Vec<u8>,
) -> RingServiceOutcome {
    let mut outcome = RingServiceOutcome::default();
    if engine.failure(connection).is_none() {
        loop {
            engine.receive_from(platform, connection, pending_input);
            engine.prepare_input(connection);
            if !pending_input.is_empty() || !engine.wants_input(connection) {
                break;
            }
            // Straight into `pending_input` (empty here), sized to what the ring holds: a
            // zeroed 1 KiB buffer and a second copy per call were a tenth of the stub's
            // instructions for a small request (QEMU `-d exec` of `test-xenstore`).
            let unread_bytes = match ring.server_pending_requests() {
                Ok(0) => break,
                Ok(count) => count,
                Err(error) => {
                    log::warn!("domain {domain}: {error}");
                    engine.fail_connection(connection, ConnectionFailure::RingIndex);
                    break;
                }
            };
            if pending_input.try_reserve(unread_bytes).is_err() {
                // Nothing read: the bytes stay in the ring for a later call.
                break;
            }
            pending_input.resize(unread_bytes, 0);
            match ring.server_read(pending_input) {
                Ok(count) => {
                    pending_input.truncate(count);
                    if count == 0 {
                        break;
                    }
                    outcome.progressed = true;
                }
                Err(error) => {
                    pending_input.clear();
                    log::warn!("domain {domain}: {error}");
                    engine.fail_connection(connection, ConnectionFailure::RingIndex);
                    break;
                }
            }
        }
    }
    if engine.failure(connection).is_none() {
        loop {
            let output = engine.output(connection);
            if output.is_empty() {
                break;
            }
            match ring.server_write(output) {
                Ok(0) => break,
                Ok(count) => {
                    outcome.progressed = true;
                    engine.consume_output(connection, count);
                }
                Err(error) => {
                    log::warn!("domain {domain}: {error}");
                    engine.fail_connection(connection, ConnectionFailure::RingIndex);
                    break;
                }
            }
        }
    }
    if let Some(failure) = engine.failure(connection) {
        pending_input.clear();
        if ring.error() == 0 {
            if engine.domain_features(domain) & feature::ERROR != 0 {
                ring.set_error(failure.ring_error_code());
            }
            outcome.progressed = true;
        }
        outcome.failure = Some(failure);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use crate::ring::InMemoryPage;
    use crate::testing::NullPlatform;
    use crate::wire::encode_message;

    #[test]
    fn requests_in_replies_out_and_index_abuse_fails_the_ring() {
        let mut engine = Engine::new(Config::default());
        let mut platform = NullPlatform::default();
        let connection = engine.open_domain_connection(&mut platform, DomainId(0));
        let page = InMemoryPage::new();
        let ring = Ring::new(&page);
        let mut pending = Vec::new();
        let mut serve = || {
            service_ring(
                &mut engine,
                &mut platform,
                connection,
                DomainId(0),
                &ring,
                &mut pending,
            )
        };
        let request = encode_message(10, 7, 0, b"3\0");
        assert_eq!(ring.client_write(&request).unwrap(), request.len());
        let outcome = serve();
        assert!(outcome.progressed);
        assert_eq!(outcome.failure, None);
        let mut reply = [0u8; 64];
        let count = ring.client_read(&mut reply).unwrap();
        assert_eq!(&reply[16..count], b"/local/domain/3\0");

        // A producer index more than a ring ahead of the consumer is abuse.
        page.store_u32_release(crate::ring::offset::REQUEST_PRODUCER, 5000);
        let outcome = serve();
        assert_eq!(outcome.failure, Some(ConnectionFailure::RingIndex));
        assert_eq!(ring.error(), ConnectionFailure::RingIndex.ring_error_code());
    }
}
