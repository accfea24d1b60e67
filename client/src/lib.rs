//! A xenstore client: one vocabulary for the daemon's tests, the benchmark and the guest tools.
//!
//! - [`client`]: requests over the store's Unix socket or a simulated guest's ring.
//! - [`simulation`]: the file/FIFO convention through which any program acts as a guest
//!   (`daemon/README.md`); the daemon serves the other end of it.
//! - [`wire`]: `xs_wire.h` framing for clients.
//! - [`sys`]: the only `unsafe` code (mmap of a ring page, poll, mkfifo).
//!
//! `xenstore-guest` (`src/bin/xenstore-guest.rs`) is this library on the command line.

pub mod client;
pub mod simulation;
pub mod sys;
pub mod wire;
