//! A transaction's commit is all or nothing (`docs/protocol.md`, "Transactions"), also when
//! memory runs out in the middle of it: every allocation the commit makes is failed in
//! turn. Each time the reply is `OK` (what failed was a watch event, which is dropped) or
//! `ENOMEM`; after `ENOMEM` the committed tree and
//! every domain's accounting are as before the commit (and equal a recount), and the
//! same transaction, run again without failures, commits.

mod support;

use support::Harness;
use support::failing_allocator::FailingAllocator;
use xenstore_engine::domain::Usage;
use xenstore_engine::wire::{MessageHeader, MessageType, encode_message};
use xenstore_engine::{ConnectionId, DomainId};

#[global_allocator]
static ALLOCATOR: FailingAllocator = FailingAllocator;

const GUEST: u16 = 1;

/// What the guest's transaction does: replace a node, create nodes with missing ancestors,
/// delete a subtree, create a node under dom0's, and change a node's permissions.
const TRANSACTION_REQUESTS: [(&str, &str); 6] = [
    ("WRITE", "kept|changed"),
    ("WRITE", "new/deep/node|fresh"),
    ("MKDIR", "also/new|"),
    ("RM", "old|"),
    ("WRITE", "/shared/mine|guest's"),
    ("SET_PERMS", "kept|n1|r0|"),
];

/// Every node as (path, value, permissions, generation), in path order.
fn tree_contents(harness: &Harness) -> Vec<(String, Vec<u8>, Vec<u8>, u64)> {
    let mut nodes: Vec<_> = harness
        .engine
        .tree()
        .nodes()
        .map(|(path, node)| {
            let permissions = node.permissions.to_wire().expect("permissions");
            (path, node.value().to_vec(), permissions, node.generation)
        })
        .collect();
    nodes.sort();
    nodes
}

/// What dom0 and the guest use, as the accounting records it.
fn usage(harness: &Harness) -> [Usage; 2] {
    [0, GUEST].map(|domain| harness.engine.domain_usage(DomainId(domain)))
}

/// A store holding nodes of dom0 and of the guest, and an open transaction of the guest
/// that replaces, creates (with missing ancestors), re-permits and deletes nodes of both.
/// Returns the harness, the guest's connection and the transaction id.
fn open_transaction() -> (Harness, ConnectionId, u32) {
    let mut harness = Harness::new();
    let guest = harness.introduce(GUEST);
    let dom0 = harness.dom0;
    for path in ["/shared", "/shared/gone", "/shared/gone/child"] {
        assert_eq!(
            harness.request(dom0, "WRITE", 0, &format!("{path}|x")),
            "OK|"
        );
    }
    assert_eq!(harness.request(dom0, "SET_PERMS", 0, "/shared|b1|"), "OK|");
    let home = format!("/local/domain/{GUEST}");
    assert_eq!(
        harness.request(dom0, "MKDIR", 0, &format!("{home}|")),
        "OK|"
    );
    let permissions = format!("{home}|n{GUEST}|");
    assert_eq!(harness.request(dom0, "SET_PERMS", 0, &permissions), "OK|");
    // Events built after the commit: a failure there drops an event, and the reply is `OK`.
    assert_eq!(
        harness.request(dom0, "WATCH", 0, &format!("{home}|home|")),
        "OK|"
    );
    for path in ["kept", "old", "old/a", "old/a/b"] {
        assert_eq!(
            harness.request(guest, "WRITE", 0, &format!("{path}|v")),
            "OK|"
        );
    }
    let transaction = run_transaction(&mut harness, guest);
    (harness, guest, transaction)
}

/// Starts the guest's transaction and makes its changes; returns its id.
fn run_transaction(harness: &mut Harness, guest: ConnectionId) -> u32 {
    let transaction = harness.start_transaction(guest);
    for (request, payload) in TRANSACTION_REQUESTS {
        let reply = harness.request(guest, request, transaction, payload);
        assert_eq!(reply, "OK|", "{request} {payload}");
    }
    transaction
}

/// Sends the commit with the `nth` allocation from now failing (0: none); returns the reply
/// and whether an allocation was failed.
fn commit(
    harness: &mut Harness,
    guest: ConnectionId,
    transaction: u32,
    nth: u32,
) -> (String, bool) {
    end_transaction(harness, guest, transaction, b"T\0", nth)
}

/// Sends `XS_TRANSACTION_END` with `payload` (`T` or `F`), failing the `nth` allocation.
fn end_transaction(
    harness: &mut Harness,
    guest: ConnectionId,
    transaction: u32,
    payload: &[u8],
    nth: u32,
) -> (String, bool) {
    let message = encode_message(
        MessageType::TransactionEnd.number(),
        7,
        transaction,
        payload,
    );
    FailingAllocator::arm(nth);
    let taken = harness
        .engine
        .receive(&mut harness.platform, guest, &message);
    let failed = FailingAllocator::disarm();
    assert_eq!(taken, message.len());
    let output = harness.engine.output(guest).to_vec();
    harness.engine.consume_output(guest, output.len());
    let header = MessageHeader::from_bytes(output[..16].try_into().expect("a header"));
    let payload = String::from_utf8_lossy(&output[16..]).replace('\0', "|");
    let reply = if header.message_type == MessageType::Error.number() {
        format!("ERROR {}", payload.trim_end_matches('|'))
    } else {
        payload
    };
    (reply, failed)
}

#[test]
fn a_commit_that_runs_out_of_memory_changes_nothing_and_can_be_retried() {
    let (mut reference, guest, transaction) = open_transaction();
    let (reply, _) = commit(&mut reference, guest, transaction, 0);
    assert_eq!(reply, "OK|", "the commit works without failures");
    let committed = tree_contents(&reference);
    // What an aborted transaction leaves: the tree and the books a failed commit must leave.
    let (mut aborted, guest, transaction) = open_transaction();
    let (reply, _) = end_transaction(&mut aborted, guest, transaction, b"F\0", 0);
    assert_eq!(reply, "OK|");
    let usage_after_abort = usage(&aborted);

    let mut out_of_memory_replies = 0;
    let mut nth = 1;
    loop {
        let (mut harness, guest, transaction) = open_transaction();
        let before = tree_contents(&harness);
        let usage_before = usage(&harness);
        let (reply, failed) = commit(&mut harness, guest, transaction, nth);
        if !failed {
            // Past the commit's last allocation: it ran without a failure.
            assert_eq!(reply, "OK|");
            break;
        }
        assert_eq!(harness.engine.check_accounting(), 0, "allocation {nth}");
        match reply.as_str() {
            "OK|" => {}
            "ERROR ENOMEM" => {
                out_of_memory_replies += 1;
                assert_eq!(tree_contents(&harness), before, "allocation {nth}");
                assert_eq!(tree_contents(&harness), tree_contents(&aborted));
                // As after an abort or, when the failure stopped the request before it ran
                // (no room for its reply), as before it with the transaction still open.
                let usage_now = usage(&harness);
                assert!(
                    usage_now == usage_after_abort || usage_now == usage_before,
                    "allocation {nth}: {usage_now:?}, not {usage_after_abort:?} or {usage_before:?}"
                );
                assert_eq!(harness.engine.check_tree(), 0, "allocation {nth}");
                // The transaction is gone; run it again and commit without failures.
                let transaction = run_transaction(&mut harness, guest);
                let (reply, _) = commit(&mut harness, guest, transaction, 0);
                assert_eq!(reply, "OK|", "the retried commit after allocation {nth}");
                let strip = |contents: Vec<(String, Vec<u8>, Vec<u8>, u64)>| {
                    contents
                        .into_iter()
                        .map(|(path, value, permissions, _)| (path, value, permissions))
                        .collect::<Vec<_>>()
                };
                assert_eq!(strip(tree_contents(&harness)), strip(committed.clone()));
                assert_eq!(harness.engine.check_accounting(), 0, "allocation {nth}");
            }
            other => panic!("allocation {nth}: unexpected reply {other}"),
        }
        nth += 1;
        assert!(nth < 10_000, "the commit never ran out of allocations");
    }
    eprintln!(
        "{out_of_memory_replies} ENOMEM replies among {} failed allocations",
        nth - 1
    );
    assert!(
        out_of_memory_replies >= 5,
        "the failures reached the commit ({out_of_memory_replies} ENOMEM replies)"
    );
}
