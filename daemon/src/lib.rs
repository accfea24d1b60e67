//! The Linux front end of the xenstore engine: `xenstored` on a Unix socket, simulated guest rings, and a client library.
//!
//! - [`options`], [`logger`], [`server`], [`platform`], [`markers`]: the daemon.
//! - [`simulation`]: the file/FIFO convention through which any program acts as a guest.
//! - [`wire`], [`client`]: `xs_wire.h` framing and a client over the socket or a ring, used
//!   by `xenstore-guest` and the integration tests.
//! - [`sys`]: the only `unsafe` code (mmap, poll, epoll, inotify, mkfifo, io_uring).

pub mod client;
pub mod logger;
pub mod markers;
pub mod options;
pub mod platform;
pub mod server;
pub mod simulation;
pub mod sockets;
pub mod sys;
pub mod wire;
