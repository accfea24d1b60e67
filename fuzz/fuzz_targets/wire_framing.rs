//! Fuzz target: arbitrary bytes as a request stream (`Connection::frame` through
//! `Engine::receive`), on dom0's socket and on an unprivileged guest's connection, fed in
//! chunks whose sizes the input chooses. Checks: no panic, only whole messages of at most
//! 4096 payload bytes come out, a connection fails only for an oversized header, and the
//! accounting equals a recount afterwards.
#![no_main]

use xenstore_engine::wire::{HEADER_SIZE_BYTES, MessageHeader, PAYLOAD_MAX_BYTES};
use xenstore_engine::testing::NullPlatform;
use xenstore_engine::{Config, ConnectionId, DomainId, Engine};

/// Consumes and checks everything queued for `connection`.
fn drain(engine: &mut Engine, connection: ConnectionId) {
    let mut bytes = Vec::new();
    loop {
        let output = engine.output(connection).to_vec();
        if output.is_empty() {
            break;
        }
        engine.consume_output(connection, output.len());
        bytes.extend(output);
    }
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        assert!(rest.len() >= HEADER_SIZE_BYTES, "whole headers only");
        let mut header = [0u8; HEADER_SIZE_BYTES];
        header.copy_from_slice(&rest[..HEADER_SIZE_BYTES]);
        let length = MessageHeader::from_bytes(&header).payload_length_bytes as usize;
        assert!(length <= PAYLOAD_MAX_BYTES, "reply over 4096 bytes");
        assert!(
            rest.len() >= HEADER_SIZE_BYTES + length,
            "whole messages only"
        );
        rest = &rest[HEADER_SIZE_BYTES + length..];
    }
}

/// Where, by the framing rules alone (`xs_wire.h`: a 16-byte header announcing at most
/// 4096 payload bytes), the first header announcing more ends in `stream`, if one does.
fn first_oversized_header_end(stream: &[u8]) -> Option<usize> {
    let mut offset = 0;
    while let Some(header) = stream.get(offset..offset + HEADER_SIZE_BYTES) {
        let mut bytes = [0u8; HEADER_SIZE_BYTES];
        bytes.copy_from_slice(header);
        let length = MessageHeader::from_bytes(&bytes).payload_length_bytes as usize;
        if length > PAYLOAD_MAX_BYTES {
            return Some(offset + HEADER_SIZE_BYTES);
        }
        offset += HEADER_SIZE_BYTES + length;
    }
    None
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let mut engine = Engine::new(Config::default());
    let mut platform = NullPlatform::default();
    let dom0 = engine.open_socket_connection();
    let guest = engine.open_domain_connection(&mut platform, DomainId(5));
    let connection = if control & 1 == 0 { dom0 } else { guest };
    let chunk = usize::from(control >> 1).max(1);
    let mut taken_bytes = 0;
    for piece in stream.chunks(chunk) {
        let mut pending = piece.to_vec();
        engine.receive_from(&mut platform, connection, &mut pending);
        drain(&mut engine, connection);
        // Whatever was not taken (throttled) is offered again once the output is read.
        engine.receive_from(&mut platform, connection, &mut pending);
        drain(&mut engine, connection);
        if !pending.is_empty() {
            // Still throttled: the rest of the stream is never read, as on a real ring.
            taken_bytes += piece.len() - pending.len();
            break;
        }
        taken_bytes += piece.len();
    }
    // The promise of the header: a connection fails only for an oversized header, and a
    // fully received oversized header always fails it (C `read_message()`: EINVAL).
    let oversized_end = first_oversized_header_end(stream);
    let failed = engine.failure(connection).is_some();
    if failed {
        assert!(
            oversized_end.is_some(),
            "the connection failed although no header announced over {PAYLOAD_MAX_BYTES} bytes"
        );
    } else if let Some(end) = oversized_end {
        assert!(
            end > taken_bytes,
            "an oversized header was received whole ({end} of {taken_bytes} bytes taken) and \
             the connection did not fail"
        );
    }
    assert_eq!(engine.check_accounting(), 0, "accounting equals a recount");
});
