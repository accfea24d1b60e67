//! The kernel runtime: console and logging, heap, trace ring, panic handling.
//!
//! Nothing here knows about xenstore; the Xen-specific parts (PV console ring, shutdown on
//! panic) are reached through `crate::xen`.

pub mod console;
pub mod heap;
#[cfg(target_os = "none")]
pub mod heap_setup;
#[cfg(target_os = "none")]
pub mod panic;
pub mod trace;
