//! Fuzz target: the engine driven by request programs from dom0 and three guests, with the
//! model of `engine/tests/support/model.rs` checking the invariants after every step
//! (accounting equals a recount, tree shape, one reply per request, transaction isolation,
//! permissions, quotas). The property tests run the same model for a fixed number of cases.
#![no_main]

#[path = "../../engine/tests/support/model.rs"]
#[allow(dead_code)]
mod model;

libfuzzer_sys::fuzz_target!(|program: &[u8]| {
    model::Model::run(program);
});
