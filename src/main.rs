//! The xenstore stub domain: a PVH kernel that Xen boots and that will serve XenStore.
//!
//! Layers, bottom up (each module's `//!` line says more):
//!
//! - `boot/*.s` + [`arch::x86_64`]: the PVH entry (32-bit → long mode), port I/O, CPU helpers.
//! - [`runtime`]: console (`log` backend on port 0xE9 and the PV console ring), heap, trace
//!   ring, panic handler. Nothing here knows about xenstore.
//! - [`xen`]: the platform: start info, memory map, hypercall setup, shared_info, event
//!   channels, grant mappings. It wraps the `xen-hypercall` crate; the engine never sees it.
//! - [`cmdline`]: the stub's command line (`--event <port>`, `--priv-domid`, …).
//! - `kernel` (bare metal only): the boot sequence; `xenstore`: serving the engine on rings.
//! - [`handover`]: a live update's new image, checked and staged for the jump
//!   (`live_update`, bare metal only, runs the update).
//! - The test image only (cargo feature `test-modes`, README "Tests"): `self_test` (the
//!   `--self-test` mode) and `hostile_ring` (the `--hostile-ring` mode).
//!
//! The same package builds on the host (`cargo test`): there `main()` only says that this
//! is a kernel image, and the pure logic (parsers, layout arithmetic) is unit-tested.
//!
//! `unsafe` may appear only in `arch/`, `runtime/` and `xen/`: the crate denies
//! `unsafe_code` and only those three modules allow it, so a new module is covered from its
//! first line. The boundary, for all crates: `docs/unsafe.md`.
#![cfg_attr(target_os = "none", no_std, no_main)]
// The unsafe boundary (docs/unsafe.md): denied here, allowed only on `arch`, `runtime`, `xen`.
#![deny(unsafe_code)]
// On the host only the unit tests use most of the kernel code: the binary itself is a
// placeholder, so unused-code warnings there are noise.
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

extern crate alloc;

// The only modules that may hold `unsafe`, each block with a `// SAFETY:` comment.
#[allow(unsafe_code)]
mod arch;
#[allow(unsafe_code)]
mod runtime;
#[allow(unsafe_code)]
mod xen;

// Every other module stays under the crate's `deny(unsafe_code)`.
mod cmdline;
mod handover;
#[cfg(all(target_os = "none", feature = "test-modes"))]
mod hostile_ring;
#[cfg(target_os = "none")]
mod kernel;
#[cfg(target_os = "none")]
mod live_update;
#[cfg(all(target_os = "none", feature = "test-modes"))]
mod self_test;
#[cfg(target_os = "none")]
mod xenstore;

/// The prefix of every console line; the test harness greps for it.
pub const CONSOLE_PREFIX: &str = "xenstore-stubdom: ";

#[cfg(not(target_os = "none"))]
fn main() {
    println!(
        "xenstore-stubdom is a PVH kernel image; build it with `cargo kernel` \
         (cargo build --release --target x86_64-unknown-none -p xenstore-stubdom)"
    );
}
