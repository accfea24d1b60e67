//! `xenstore-guest` without a store: its usage text and usage errors (exit status 2).
//!
//! The tool against a running store is tested with the daemon (`daemon/tests/guests.rs`),
//! which finds this crate's program next to `xenstored`; this test also makes cargo build
//! that program whenever the workspace is tested.

use std::process::Command;

fn guest_tool(arguments: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xenstore-guest"))
        .args(arguments)
        .env_remove("XENSTORED_RUNDIR")
        .env_remove("XENSTORED_PATH")
        .output()
        .expect("run xenstore-guest")
}

#[test]
fn help_prints_the_usage_and_succeeds() {
    let output = guest_tool(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("Usage: xenstore-guest"));
}

#[test]
fn usage_errors_exit_2_with_the_reason() {
    for (arguments, reason) in [
        (&["read", "name"][..], "--domid is required"),
        (&["--domid", "70000"], "bad domid"),
        (&["--domid", "5", "--bogus"], "unknown option --bogus"),
        (&["--domid"], "--domid needs a value"),
    ] {
        let output = guest_tool(arguments);
        assert_eq!(output.status.code(), Some(2), "{arguments:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(reason), "{arguments:?}: {stderr}");
    }
}
