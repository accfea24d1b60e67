//! Fuzz target: the `engine_model` programs with one allocation of most requests failing
//! (issue 15; `engine/tests/allocation_failures.rs` runs the same for a fixed number of
//! cases). A failure in a path that allocates infallibly aborts, which libFuzzer reports as
//! a crash; a wrong reply or a changed store panics in the model.
#![no_main]

#[path = "../../engine/tests/support/failing_allocator.rs"]
mod failing_allocator;
#[path = "../../engine/tests/support/model.rs"]
#[allow(dead_code)]
mod model;

#[global_allocator]
static ALLOCATOR: failing_allocator::FailingAllocator = failing_allocator::FailingAllocator;

libfuzzer_sys::fuzz_target!(|program: &[u8]| {
    model::Model::run_with_faults(program, Box::new(failing_allocator::ThreadFaults));
});
