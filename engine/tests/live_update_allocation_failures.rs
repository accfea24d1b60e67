//! `live-update` with the allocator failing (docs/protocol.md, "Live update"): each allocation of a `-b`, `-d`, `-c` and `-s` step, failed in turn, gives C's `Allocation failure.` or `ENOMEM`, and never an abort; the store goes on.

mod support;

use support::failing_allocator::FailingAllocator;
use xenstore_engine::live_update::{LiveUpdatePoll, LiveUpdateSupport};
use xenstore_engine::testing::NullPlatform;
use xenstore_engine::wire::{MessageType, encode_message};
use xenstore_engine::{Config, ConnectionId, Engine};

#[global_allocator]
static ALLOCATOR: FailingAllocator = FailingAllocator;

fn engine() -> (Engine, NullPlatform, ConnectionId) {
    let mut engine = Engine::new(Config {
        live_update: LiveUpdateSupport::KernelImage {
            image_size_limit_bytes: 1 << 20,
        },
        ..Config::default()
    });
    let dom0 = engine.open_socket_connection();
    (engine, NullPlatform::default(), dom0)
}

/// Everything queued for `connection`: (type, payload) of each message.
fn replies(engine: &mut Engine, connection: ConnectionId) -> Vec<(u32, Vec<u8>)> {
    let mut bytes = Vec::new();
    loop {
        let output = engine.output(connection).to_vec();
        if output.is_empty() {
            break;
        }
        engine.consume_output(connection, output.len());
        bytes.extend(output);
    }
    let mut messages = Vec::new();
    let mut rest = bytes.as_slice();
    while rest.len() >= 16 {
        let kind = u32::from_le_bytes(rest[..4].try_into().unwrap());
        let length = u32::from_le_bytes(rest[12..16].try_into().unwrap()) as usize;
        messages.push((kind, rest[16..16 + length].to_vec()));
        rest = &rest[16 + length..];
    }
    messages
}

/// Sends `payload` as `XS_CONTROL` with the `nth` allocation from now failing; returns the
/// reply and whether an allocation was failed.
fn send_failing(
    engine: &mut Engine,
    platform: &mut NullPlatform,
    connection: ConnectionId,
    payload: &[u8],
    nth: u32,
) -> ((u32, Vec<u8>), bool) {
    let message = encode_message(MessageType::Control.number(), 1, 0, payload);
    FailingAllocator::arm(nth);
    engine.receive(platform, connection, &message);
    let failed = FailingAllocator::disarm();
    let mut replies = replies(engine, connection);
    assert_eq!(replies.len(), 1, "one reply, failure {nth}");
    (replies.remove(0), failed)
}

const ENOMEM: &[u8] = b"ENOMEM\0";

#[test]
fn every_failed_allocation_of_a_begin_is_an_allocation_failure_or_enomem() {
    let mut allocation_failures = 0;
    for nth in 1.. {
        let (mut engine, mut platform, dom0) = engine();
        let begin = b"live-update\0-b\x0065536\0";
        let ((kind, reply), failed) = send_failing(&mut engine, &mut platform, dom0, begin, nth);
        if !failed {
            assert_eq!(reply, b"OK\0");
            break;
        }
        if kind == MessageType::Error.number() {
            assert_eq!(reply, ENOMEM);
            continue;
        }
        if reply == b"Allocation failure.\0" {
            allocation_failures += 1;
            // No session is left: a new begin works.
            let message = encode_message(MessageType::Control.number(), 2, 0, begin);
            engine.receive(&mut platform, dom0, &message);
            assert_eq!(replies(&mut engine, dom0)[0].1, b"OK\0");
        } else {
            assert_eq!(reply, b"OK\0", "failure {nth}");
        }
    }
    assert!(allocation_failures > 0, "the image's room was failed once");
}

#[test]
fn every_failed_allocation_of_the_other_steps_is_answered_and_the_update_still_goes_ahead() {
    let steps: [&[u8]; 3] = [
        b"live-update\0-d\x004\0\0ab\0\0",
        b"live-update\0-c\0--event 3\0",
        b"live-update\0-s\0-t\x0060\0",
    ];
    for (index, step) in steps.iter().enumerate() {
        for nth in 1.. {
            let (mut engine, mut platform, dom0) = engine();
            for (earlier, request) in [&b"live-update\0-b\x004\0"[..]]
                .into_iter()
                .chain(steps[..index].iter().copied())
                .enumerate()
            {
                let message = encode_message(MessageType::Control.number(), 10, 0, request);
                engine.receive(&mut platform, dom0, &message);
                let replies = replies(&mut engine, dom0);
                assert_eq!(replies.len(), 1, "step {earlier}");
            }
            let message = encode_message(MessageType::Control.number(), 1, 0, step);
            FailingAllocator::arm(nth);
            engine.receive(&mut platform, dom0, &message);
            let failed = FailingAllocator::disarm();
            let answered = replies(&mut engine, dom0);
            let is_start = step.starts_with(b"live-update\0-s");
            match answered.as_slice() {
                // The start is answered later, unless it failed.
                [] => assert!(is_start),
                [(kind, reply)] if *kind == MessageType::Error.number() => {
                    assert_eq!(reply, ENOMEM)
                }
                [(_, reply)] => assert!(
                    reply == b"OK\0" || reply == b"Allocation failure.\0",
                    "step {index}, failure {nth}: {:?}",
                    String::from_utf8_lossy(reply)
                ),
                more => panic!("{more:?}"),
            }
            if is_start && answered.is_empty() {
                // Not started when the image was incomplete: here it was not uploaded.
                assert!(matches!(
                    engine.poll_live_update(&mut platform),
                    LiveUpdatePoll::Idle | LiveUpdatePoll::Ready(_)
                ));
            }
            if !failed {
                break;
            }
        }
    }
}
