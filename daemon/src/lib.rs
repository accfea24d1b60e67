//! The Linux front end of the xenstore engine: `xenstored` on a Unix socket, serving simulated guest rings.
//!
//! - [`options`], [`logger`], [`server`], [`sockets`], [`platform`], [`markers`]: the daemon.
//! - [`sys`]: the system calls (epoll, inotify, socket calls, io_uring) through `rustix` and
//!   `io-uring`, and the only `unsafe` code (queuing an io_uring batch, taking over the
//!   sockets a live update's previous program left open).
//!
//! The simulated-guest convention and the clients that speak to the store (`xenstore-guest`,
//! the integration tests, the benchmark) are the `xenstore-client` crate (`client/`).

#![deny(unsafe_code)]
// Unsafe only where the system calls are (docs/unsafe.md).

pub mod logger;
pub mod markers;
pub mod options;
pub mod platform;
pub mod server;
pub mod sockets;
#[allow(unsafe_code)]
pub mod sys;
