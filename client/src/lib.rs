//! A xenstore client: one vocabulary for the daemon's tests, the benchmark and the guest tools.
//!
//! - [`client`]: requests over the store's Unix socket or a simulated guest's ring.
//! - [`simulation`]: the file/FIFO convention through which any program acts as a guest
//!   (`daemon/README.md`); the daemon serves the other end of it.
//! - [`message`]: whole messages and a stream framer, over the engine's wire format
//!   (`xenstore_engine::wire`, the one table of message types, header and error names).
//! - [`sys`]: the system calls (mmap of a ring page, poll, mkfifo) through `rustix`, and the
//!   only `unsafe` code (the shared mapping and the atomics over it).
//!
//! `xenstore-guest` (`src/bin/xenstore-guest.rs`) is this library on the command line.

#![deny(unsafe_code)]
// Unsafe only where the system calls are (docs/unsafe.md).

pub mod client;
pub mod message;
pub mod simulation;
#[allow(unsafe_code)]
pub mod sys;
