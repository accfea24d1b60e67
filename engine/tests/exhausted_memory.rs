//! With the heap exhausted for good, no request is ever left without its reply: the engine
//! takes a request only when its answer (at least `ENOMEM`) has room to be built and queued,
//! and otherwise leaves it unread until memory comes back (`docs/memory.md`). A lost reply
//! would leave the guest's xenbus waiting forever.
//!
//! Every allocation fails while a request is offered (`FailingAllocator::exhaust`), with the
//! guest's output queue at every fill level around its capacity, and with replies left
//! unread (so that the spare room of the last reply is not renewed).

mod support;

use support::Harness;
use support::failing_allocator::FailingAllocator;
use xenstore_engine::ConnectionId;
use xenstore_engine::wire::{MessageType, encode_message};

#[global_allocator]
static ALLOCATOR: FailingAllocator = FailingAllocator;

const GUEST: u16 = 5;

/// The request ids of the replies queued for `connection`, in order, taking them all.
fn drain_reply_ids(harness: &mut Harness, connection: ConnectionId) -> Vec<u32> {
    harness
        .drain(connection)
        .into_iter()
        .filter(|message| message.message_type != MessageType::WatchEvent.number())
        .map(|message| message.request_id)
        .collect()
}

/// A guest watching its home, with `events` watch events queued for it, unread.
fn guest_with_queued_events(events: u32) -> (Harness, ConnectionId) {
    let mut harness = Harness::new();
    let guest = harness.introduce(GUEST);
    let dom0 = harness.dom0;
    let home = format!("/local/domain/{GUEST}");
    assert_eq!(
        harness.request(dom0, "MKDIR", 0, &format!("{home}|")),
        "OK|"
    );
    assert_eq!(
        harness.request(dom0, "SET_PERMS", 0, &format!("{home}|n{GUEST}|")),
        "OK|"
    );
    assert_eq!(
        harness.request(guest, "WATCH", 0, &format!("{home}|token|")),
        "OK|"
    );
    harness.events(guest);
    for index in 0..events {
        let write = format!("{home}/key{index}|value");
        assert_eq!(harness.request(dom0, "WRITE", 0, &write), "OK|");
    }
    (harness, guest)
}

#[test]
fn a_request_taken_while_memory_is_exhausted_is_always_answered() {
    let mut taken_while_exhausted = 0;
    let mut refused_while_exhausted = 0;
    for events in 0..40 {
        let (mut harness, guest) = guest_with_queued_events(events);
        let mut request_id = 1000;
        let mut offered = Vec::new();
        // Three requests in a row, none of their replies read: only the first can use the
        // connection's spare reply room.
        let mut left_unread = Vec::new();
        for _ in 0..3 {
            request_id += 1;
            let message = encode_message(
                MessageType::GetDomainPath.number(),
                request_id,
                0,
                format!("{GUEST}\0").as_bytes(),
            );
            offered.push(request_id);
            FailingAllocator::exhaust();
            let taken = harness
                .engine
                .receive(&mut harness.platform, guest, &message);
            FailingAllocator::disarm();
            if taken == message.len() {
                taken_while_exhausted += 1;
            } else {
                assert_eq!(taken, 0, "a request is taken whole or not at all");
                refused_while_exhausted += 1;
                left_unread.push(message);
            }
        }
        // Memory is back: what was left unread is taken, and every request has its reply,
        // once, in order.
        for message in left_unread {
            let taken = harness
                .engine
                .receive(&mut harness.platform, guest, &message);
            assert_eq!(taken, message.len(), "taken once memory is back");
        }
        assert_eq!(
            drain_reply_ids(&mut harness, guest),
            offered,
            "{events} events queued: a reply is missing"
        );
    }
    // Both outcomes happened: the test exercised the refusal, not only the spare room.
    assert!(
        taken_while_exhausted > 0,
        "no request was answered from reserved room"
    );
    assert!(refused_while_exhausted > 0, "no request was left unread");
}
