//! The migration stream's writer and reader with the allocator failing (docs/migration-stream.md): each allocation they make, failed in turn, gives `OutOfMemory` (or is done without), never an abort.

mod support;

use support::failing_allocator::FailingAllocator;
use xenstore_engine::migration::NoFrontEndState;
use xenstore_engine::testing::NullPlatform;
use xenstore_engine::wire::{MessageType, encode_message};
use xenstore_engine::{Config, Engine, StateError};

#[global_allocator]
static ALLOCATOR: FailingAllocator = FailingAllocator;

/// A store with a guest, nodes, permissions, watches, a transaction and queued output.
fn populated_engine() -> Engine {
    let mut engine = Engine::new(Config::default());
    let mut platform = NullPlatform::default();
    let dom0 = engine.open_socket_connection();
    let mut send = |engine: &mut Engine, connection, kind: MessageType, payload: &[u8]| {
        let message = encode_message(kind.number(), 1, 0, payload);
        engine.receive(&mut platform, connection, &message);
    };
    send(
        &mut engine,
        dom0,
        MessageType::Introduce,
        b"3\x001\x005\x00",
    );
    let guest = engine
        .domain_connection(xenstore_engine::DomainId(3))
        .unwrap();
    send(
        &mut engine,
        dom0,
        MessageType::Write,
        b"/local/domain/3/a\0x",
    );
    send(
        &mut engine,
        dom0,
        MessageType::SetPermissions,
        b"/local/domain/3\0n3\0r0\0",
    );
    send(&mut engine, guest, MessageType::Watch, b"a\0t\x001\x00");
    send(&mut engine, dom0, MessageType::Watch, b"/\0all\0");
    send(&mut engine, dom0, MessageType::TransactionStart, b"\0");
    send(
        &mut engine,
        dom0,
        MessageType::Write,
        b"/local/domain/3/a\0y",
    );
    send(
        &mut engine,
        dom0,
        MessageType::SetQuota,
        b"3\0nodes\x0050\0",
    );
    engine
}

#[test]
fn every_failed_allocation_of_the_writer_and_the_reader_is_out_of_memory() {
    let engine = populated_engine();
    let stream = engine.write_state(&NoFrontEndState).unwrap();
    let mut failed_writes = 0;
    for nth in 1.. {
        FailingAllocator::arm(nth);
        let written = engine.write_state(&NoFrontEndState);
        let failed = FailingAllocator::disarm();
        if !failed {
            assert_eq!(written, Ok(stream.clone()));
            break;
        }
        if written.is_err() {
            assert_eq!(written, Err(StateError::OutOfMemory));
            failed_writes += 1;
        }
    }
    assert!(failed_writes > 0);
    let mut failed_reads = 0;
    for nth in 1.. {
        FailingAllocator::arm(nth);
        let restored = Engine::from_state(Config::default(), &stream);
        let failed = FailingAllocator::disarm();
        match restored {
            Ok((mut restored, _)) => {
                assert_eq!(restored.check_accounting(), 0, "allocation {nth}");
                if !failed {
                    break;
                }
            }
            Err(error) => {
                assert!(failed, "allocation {nth}: {error}");
                assert_eq!(error, StateError::OutOfMemory, "allocation {nth}");
                failed_reads += 1;
            }
        }
    }
    assert!(failed_reads > 0);
}
