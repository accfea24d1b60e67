//! Issue 15's proof by fault injection: the model's request programs (dom0 and three
//! guests, `support/model.rs`) run with the allocator failing one chosen allocation of most
//! requests. After each step: nothing panicked or aborted, a request whose allocation failed
//! answered `ENOMEM` (or succeeded, when what failed could be done without, such as a watch
//! event for a guest) and an `ENOMEM` left the committed tree unchanged, and the accounting
//! equals a recount. The `engine_allocation_failures` fuzz target runs the same for longer.

mod support;

use proptest::prelude::*;
use support::failing_allocator::{FailingAllocator, ThreadFaults};
use support::model;
use support::program_cases::program_cases;

#[global_allocator]
static ALLOCATOR: FailingAllocator = FailingAllocator;

#[test]
fn the_allocator_fails_exactly_the_armed_allocation() {
    let reserve = || Vec::<u8>::new().try_reserve_exact(8);
    FailingAllocator::arm(2);
    let (first, second, third) = (reserve(), reserve(), reserve());
    assert!(FailingAllocator::disarm(), "a failure was recorded");
    assert!(first.is_ok() && second.is_err() && third.is_ok());
    FailingAllocator::arm(0);
    let unarmed = reserve();
    assert!(!FailingAllocator::disarm() && unarmed.is_ok());
}

proptest! {
    #![proptest_config(program_cases(256))]

    #[test]
    fn every_program_survives_failed_allocations(
        program in proptest::collection::vec(any::<u8>(), 0..1200)
    ) {
        model::Model::run_with_faults(&program, Box::new(ThreadFaults));
    }
}

/// The injection is not idle: over a long fixed program (a xorshift stream), many requests
/// really lose an allocation and many of those answer `ENOMEM`.
#[test]
fn a_long_program_really_fails_allocations() {
    let mut state = 0x9e37_79b9_u32;
    let program: Vec<u8> = (0..4000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect();
    let statistics = model::Model::run_with_faults(&program, Box::new(ThreadFaults));
    eprintln!("{statistics:?}");
    assert!(statistics.armed_requests >= 100, "{statistics:?}");
    assert!(statistics.failed_requests >= 50, "{statistics:?}");
    assert!(statistics.out_of_memory_replies >= 20, "{statistics:?}");
}
