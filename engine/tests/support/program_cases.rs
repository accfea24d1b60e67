//! The proptest settings shared by the request-program tests (`properties.rs`,
//! `allocation_failures.rs`).

use proptest::prelude::ProptestConfig;

/// `cases` random programs per run, and no failure-persistence files written next to the
/// tests (`failure_persistence: None`): a failure is reported with its shrunk program.
pub fn program_cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
