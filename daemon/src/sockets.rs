//! The daemon's Unix-socket clients: accepting them, reading their requests into the engine, and writing the replies of a round together.
//!
//! Socket reads and writes are batched: all readable sockets are read (with io_uring, in one
//! system call), the engine answers, and the replies of the round are sent together at its
//! end (with io_uring, in one system call, which also takes the answered requests out of
//! their sockets: see [`SocketClients::read_sockets`]). A socket client acts as the store
//! domain; its requests go through the ring host's engine ([`RingHost::with_engine`]), so
//! that an `XS_INTRODUCE` from the toolstack attaches the ring it names.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use xenstore_engine::ring_host::RingHost;
use xenstore_engine::{ConnectionId, Engine};

use crate::platform::LinuxPort;
use crate::server::Source;
use crate::sys::{self, Epoll, Interest, IoUring, Registered, SocketOperation};

/// The daemon's ring host (the engine is inside it).
pub type DaemonHost = RingHost<LinuxPort>;

/// Input kept per connection before we stop reading: one maximal message.
const PENDING_INPUT_LIMIT_BYTES: usize = 16 + 4096;
/// Sockets read in one batch at most: bounds the read buffer (one maximal message each).
const READ_BATCH_SOCKETS: usize = 64;
// A socket's peeked bytes are discarded in one operation.
const _: () = assert!(PENDING_INPUT_LIMIT_BYTES <= sys::DISCARD_LIMIT_BYTES);

/// A client of the Unix socket.
struct SocketClient {
    /// Watched for reading while the engine takes its requests, for writing while output waits.
    stream: Registered<UnixStream>,
    /// Received bytes the engine has not taken yet (it refused them for now); usually empty.
    pending_input: Vec<u8>,
    /// Set on end-of-file or error: the connection is closed at the end of the round.
    closing: bool,
    /// Whether it is listed in [`SocketClients::touched`] this round.
    touched: bool,
    /// Bytes read with `MSG_PEEK` this round: taken out of the socket right after the
    /// replies are sent (see [`SocketClients::read_sockets`]).
    peeked_bytes: usize,
}

impl SocketClient {
    /// Lists the client in `touched_sockets` (once per round).
    fn touch(&mut self, connection: ConnectionId, touched_sockets: &mut Vec<ConnectionId>) {
        if !self.touched {
            self.touched = true;
            touched_sockets.push(connection);
        }
    }
}

/// A client's socket as a live update's state records it ([`SocketClients::descriptors`]).
pub struct ClientDescriptor<'a> {
    pub connection: ConnectionId,
    pub descriptor: i32,
    /// Bytes it sent that the engine has not taken yet.
    pub unread_input: &'a [u8],
}

/// The listening socket and its clients.
pub struct SocketClients {
    epoll: Arc<Epoll>,
    listener: Registered<UnixListener>,
    clients: BTreeMap<ConnectionId, SocketClient>,
    /// Sockets holding whole requests the engine refused for now (outstanding-request quota
    /// of an unprivileged store domain): offered again each round until it takes them.
    blocked: BTreeSet<ConnectionId>,
    /// Sockets that were read, became writable, or were queued output this round: at the end
    /// of the round their output is written, their epoll interest brought up to date, and the
    /// closing ones closed. A list rather than a set (each [`SocketClient`] knows whether it
    /// is in it), because it changes on every request.
    touched: Vec<ConnectionId>,
    /// Where socket reads land, one maximal message per socket of a read batch (grown on
    /// demand, zeroed once, reused): the engine takes the requests straight from here, and
    /// only bytes it refuses are copied to the client's `pending_input`.
    read_buffer: Vec<u8>,
    /// Batches the socket reads and writes of a round, when io_uring is available.
    socket_ring: Option<IoUring>,
    /// Sockets epoll reported readable this round.
    readable: Vec<ConnectionId>,
    /// The outcomes of the last batch of socket operations.
    results: Vec<io::Result<usize>>,
}

impl SocketClients {
    /// Binds the socket (replacing a stale one) and watches it; with `use_io_uring`, batches
    /// socket reads and writes where the kernel allows it.
    pub fn bind(
        epoll: &Arc<Epoll>,
        socket_path: &Path,
        use_io_uring: bool,
    ) -> io::Result<SocketClients> {
        if let Some(parent) = socket_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::remove_file(socket_path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let listener = UnixListener::bind(socket_path)?;
        SocketClients::with_listener(epoll, listener, use_io_uring)
    }

    /// Serves `listener` (bound already: the socket [`SocketClients::bind`] made, or the
    /// one a live update's previous instance left open).
    pub fn with_listener(
        epoll: &Arc<Epoll>,
        listener: UnixListener,
        use_io_uring: bool,
    ) -> io::Result<SocketClients> {
        listener.set_nonblocking(true)?;
        let mut listener = Registered::new(epoll, listener, Source::Listener.token());
        listener.set_interest(Some(Interest::READ))?;
        Ok(SocketClients {
            epoll: Arc::clone(epoll),
            listener,
            clients: BTreeMap::new(),
            blocked: BTreeSet::new(),
            touched: Vec::new(),
            read_buffer: vec![0; PENDING_INPUT_LIMIT_BYTES],
            socket_ring: use_io_uring.then(open_socket_ring).flatten(),
            readable: Vec::new(),
            results: Vec::new(),
        })
    }

    /// Epoll reported the client's socket readable: it is read in this round's batch.
    pub fn readable(&mut self, connection: ConnectionId) {
        self.readable.push(connection);
    }

    /// Epoll reported the client's socket writable (or the engine queued it output): its
    /// output is written at the end of the round.
    pub fn touch(&mut self, connection: ConnectionId) {
        if let Some(client) = self.clients.get_mut(&connection) {
            client.touch(connection, &mut self.touched);
        }
    }

    /// Whether a socket whose kept input the engine refused before may be taken now (its
    /// replies went out): then the loop must not sleep. (A socket holding part of a message
    /// waits for epoll.)
    pub fn has_input_to_offer(&self, host: &DaemonHost) -> bool {
        self.blocked
            .iter()
            .any(|connection| host.engine().wants_input(*connection))
    }

    pub fn accept_clients(&mut self, host: &mut DaemonHost) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let connection = host.engine_mut().open_socket_connection();
                    if let Err(error) = self.add_client(connection, stream, Vec::new()) {
                        log::warn!("cannot serve a client socket: {error}");
                        host.with_engine(|engine, platform| {
                            engine.close_connection(platform, connection);
                        });
                        continue;
                    }
                    log::debug!("socket client connected as {connection:?}");
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // Out of descriptors and the like: keep serving the existing clients.
                    log::warn!("accept failed: {error}");
                    break;
                }
            }
        }
    }

    /// Serves `stream` as the engine's socket connection `connection`, with `pending_input`
    /// (bytes received that the engine has not taken yet) offered to the engine first.
    fn add_client(
        &mut self,
        connection: ConnectionId,
        stream: UnixStream,
        pending_input: Vec<u8>,
    ) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        let mut stream = Registered::new(&self.epoll, stream, Source::Socket(connection).token());
        stream.set_interest(Some(Interest::READ))?;
        let mut client = SocketClient {
            stream,
            pending_input,
            closing: false,
            touched: false,
            peeked_bytes: 0,
        };
        if !client.pending_input.is_empty() {
            self.blocked.insert(connection);
        }
        // Its first round writes what the engine holds for it (a restored connection's
        // replies: the live update's `OK` among them).
        client.touch(connection, &mut self.touched);
        self.clients.insert(connection, client);
        Ok(())
    }

    /// Takes over a client a live update's previous instance served (its restored
    /// connection `connection`, its socket left open across `execve(2)`).
    pub fn adopt_client(
        &mut self,
        connection: ConnectionId,
        stream: UnixStream,
        unread_input: Vec<u8>,
    ) -> io::Result<()> {
        self.add_client(connection, stream, unread_input)
    }

    /// The listening socket's descriptor and each client's, with the bytes received from
    /// it that the engine has not taken yet: what the state stream records for the next
    /// instance.
    pub fn descriptors(&self) -> (i32, Vec<ClientDescriptor<'_>>) {
        let clients = self
            .clients
            .iter()
            .filter(|(_, client)| !client.closing)
            .map(|(connection, client)| ClientDescriptor {
                connection: *connection,
                descriptor: client.stream.as_fd().as_raw_fd(),
                unread_input: client.pending_input.as_slice(),
            })
            .collect();
        (self.listener.as_fd().as_raw_fd(), clients)
    }

    /// Keeps the listening socket and every client's open across `execve(2)`, or closes
    /// them there again (after a failed `execve`).
    pub fn inherit_across_exec(&self, inherit: bool) -> io::Result<()> {
        sys::inherit_across_exec(self.listener.as_fd(), inherit)?;
        for client in self.clients.values() {
            sys::inherit_across_exec(client.stream.as_fd(), inherit)?;
        }
        Ok(())
    }

    /// Reads what the readable sockets have (one read each: a short read means it had no
    /// more, and epoll reports the socket again while it has) and lets the engine process
    /// the requests at once; their replies are written at the end of the round.
    ///
    /// With io_uring each batch of reads is one system call, and the reads only peek: the
    /// bytes are taken out of the socket right after the reply is sent, in the batch that
    /// sends it (`SocketClients::write_touched_sockets`). Taking a request out of a Unix socket
    /// wakes its client when it already sleeps waiting for the reply (the kernel reports the
    /// freed buffer space to it), and that wake-up finds no reply yet; right after the reply
    /// was sent, the client is awake already. That is one wake-up per request instead of up
    /// to two, for the server (which pays for waking) and for the client.
    ///
    /// A round with one readable socket reads it with a plain system call and no peek: a
    /// batch of one saves nothing, and with a single client the io_uring path measured
    /// about 14% fewer reads/s (W3, 1 client: 12,868 against 14,966 reads/s, means of 4
    /// runs each; with this rule 15,473 against 14,936).
    pub fn read_sockets(&mut self, host: &mut DaemonHost) {
        let mut readable = core::mem::take(&mut self.readable);
        for group in readable.chunks(READ_BATCH_SOCKETS) {
            self.read_socket_group(host, group);
        }
        readable.clear();
        self.readable = readable;
    }

    fn read_socket_group(&mut self, host: &mut DaemonHost, group: &[ConnectionId]) {
        let peek = self.socket_ring.is_some() && group.len() >= BATCHED_OPERATIONS_MIN;
        let needed_bytes = group.len() * PENDING_INPUT_LIMIT_BYTES;
        if self.read_buffer.len() < needed_bytes {
            self.read_buffer.resize(needed_bytes, 0);
        }
        for connection in group {
            if let Some(client) = self.clients.get_mut(connection) {
                client.touch(*connection, &mut self.touched);
            }
        }
        let mut operations = Vec::with_capacity(group.len());
        // Each operation's connection and the offset of its part of `read_buffer`.
        let mut readers = Vec::with_capacity(group.len());
        let mut chunks = self.read_buffer.chunks_mut(PENDING_INPUT_LIMIT_BYTES);
        for connection in group {
            let Some(client) = self.clients.get(connection) else {
                continue;
            };
            // Epoll reports a hang-up even when we did not ask to read: keep the bound anyway.
            let room = PENDING_INPUT_LIMIT_BYTES.saturating_sub(client.pending_input.len());
            if room == 0 {
                continue;
            }
            // One part of the buffer per operation, in order (`readers` relies on it).
            let Some(buffer) = chunks.next().and_then(|chunk| chunk.get_mut(..room)) else {
                break;
            };
            readers.push((*connection, readers.len() * PENDING_INPUT_LIMIT_BYTES));
            operations.push(SocketOperation::Receive {
                descriptor: client.stream.as_fd(),
                buffer,
                peek,
            });
        }
        run_socket_operations(&mut self.socket_ring, operations, &mut self.results);
        for ((connection, offset), result) in readers.into_iter().zip(self.results.drain(..)) {
            let Some(client) = self.clients.get_mut(&connection) else {
                continue;
            };
            match result {
                Ok(0) => client.closing = true,
                Ok(count) => {
                    if peek {
                        client.peeked_bytes = count;
                    }
                    let received = self.read_buffer.get(offset..offset + count).unwrap_or(&[]);
                    if client.pending_input.is_empty() {
                        let taken = host
                            .with_engine(|engine, platform| {
                                engine.receive(platform, connection, received)
                            })
                            .min(received.len());
                        client
                            .pending_input
                            .extend_from_slice(received.get(taken..).unwrap_or(&[]));
                    } else {
                        // Earlier bytes wait for the engine: these go behind them.
                        client.pending_input.extend_from_slice(received);
                        let pending_input = &mut client.pending_input;
                        host.with_engine(|engine, platform| {
                            engine.receive_from(platform, connection, pending_input);
                        });
                    }
                    settle_socket_input(host.engine(), connection, client, &mut self.blocked);
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(error) => {
                    log::debug!("{connection:?}: read failed: {error}");
                    client.closing = true;
                }
            }
        }
    }

    /// Offers the kept bytes of the sockets the engine refused before to the engine again.
    pub fn offer_blocked_sockets(&mut self, host: &mut DaemonHost) {
        if self.blocked.is_empty() {
            return;
        }
        for connection in self.blocked.clone() {
            let Some(client) = self.clients.get_mut(&connection) else {
                self.blocked.remove(&connection);
                continue;
            };
            client.touch(connection, &mut self.touched);
            let pending_input = &mut client.pending_input;
            host.with_engine(|engine, platform| {
                engine.receive_from(platform, connection, pending_input);
            });
            settle_socket_input(host.engine(), connection, client, &mut self.blocked);
        }
    }

    /// Sorts the connections the engine queued output for: sockets to write out at the end
    /// of the round, rings to serve.
    fn collect_output_ready(&mut self, host: &mut DaemonHost) {
        host.sort_output_ready(&mut |connection| self.touch(connection));
    }

    /// Finishes the sockets touched this round: closes the finished ones, writes out the
    /// others' output as far as they take it, and brings their epoll interest up to date:
    /// reading while the engine takes requests and the kept input has room (level-triggered
    /// epoll would otherwise report unread input forever), writing while output waits.
    pub fn finish_touched_sockets(&mut self, host: &mut DaemonHost) {
        self.collect_output_ready(host);
        let mut touched = core::mem::take(&mut self.touched);
        self.write_touched_sockets(host, &touched);
        for connection in touched.drain(..) {
            let Some(client) = self.clients.get_mut(&connection) else {
                continue;
            };
            client.touched = false;
            if !client.closing {
                // What the batch left: further queued messages (a reply and watch events).
                write_socket(host.engine_mut(), connection, client);
            }
            if client.closing {
                self.clients.remove(&connection);
                self.blocked.remove(&connection);
                host.with_engine(|engine, platform| {
                    engine.close_connection(platform, connection);
                });
                log::debug!("socket client {connection:?} closed");
                continue;
            }
            host.engine_mut().prepare_input(connection);
            let interest = Interest {
                read: host.engine().wants_input(connection)
                    && client.pending_input.len() < PENDING_INPUT_LIMIT_BYTES,
                write: !host.engine().output(connection).is_empty(),
            };
            if let Err(error) = client.stream.set_interest(Some(interest)) {
                log::warn!("{connection:?}: cannot update its epoll interest: {error}");
                client.closing = true;
                // Closed at the end of the next round.
                client.touch(connection, &mut self.touched);
            }
        }
        // Keep the list's allocation for the next round.
        if self.touched.is_empty() {
            self.touched = touched;
        }
    }

    /// Sends each touched socket's first queued message and takes the bytes peeked this
    /// round out of it, in one batch (see [`SocketClients::read_sockets`]): the send first, so that
    /// the client is awake when its request leaves the socket.
    fn write_touched_sockets(&mut self, host: &mut DaemonHost, touched: &[ConnectionId]) {
        let mut operations = Vec::with_capacity(touched.len() * 2);
        // Each operation's connection, and whether it is the send.
        let mut owners = Vec::with_capacity(touched.len() * 2);
        for connection in touched {
            let Some(client) = self.clients.get(connection) else {
                continue;
            };
            if !client.closing {
                let output = host.engine().output(*connection);
                if !output.is_empty() {
                    operations.push(SocketOperation::Send {
                        descriptor: client.stream.as_fd(),
                        bytes: output,
                    });
                    owners.push((*connection, true));
                }
            }
            if client.peeked_bytes > 0 {
                operations.push(SocketOperation::Discard {
                    descriptor: client.stream.as_fd(),
                    length_bytes: client.peeked_bytes,
                });
                owners.push((*connection, false));
            }
        }
        if operations.is_empty() {
            return;
        }
        run_socket_operations(&mut self.socket_ring, operations, &mut self.results);
        for ((connection, is_send), result) in owners.into_iter().zip(self.results.drain(..)) {
            let Some(client) = self.clients.get_mut(&connection) else {
                continue;
            };
            match result {
                Ok(count) if is_send => host.engine_mut().consume_output(connection, count),
                Err(error)
                    if is_send
                        && matches!(
                            error.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                Ok(count) if count == client.peeked_bytes => client.peeked_bytes = 0,
                // Taking out fewer bytes than were peeked cannot happen (they wait in the
                // socket for us alone); serving on would hand the engine some bytes twice.
                Ok(count) => {
                    log::warn!(
                        "{connection:?}: {count} of {} peeked bytes taken",
                        client.peeked_bytes
                    );
                    client.peeked_bytes = 0;
                    client.closing = true;
                }
                Err(error) => {
                    log::debug!("{connection:?}: socket operation failed: {error}");
                    if !is_send {
                        client.peeked_bytes = 0;
                    }
                    client.closing = true;
                }
            }
        }
    }
}

/// The io_uring for the socket batches, if the kernel allows one.
fn open_socket_ring() -> Option<IoUring> {
    match IoUring::new(sys::EVENTS_PER_WAIT as u32) {
        Ok(ring) => Some(ring),
        Err(error) => {
            log::info!("io_uring unavailable ({error}): one system call per socket operation");
            None
        }
    }
}

/// The fewest socket operations worth one io_uring submission; fewer run as plain system
/// calls (see [`SocketClients::read_sockets`]).
const BATCHED_OPERATIONS_MIN: usize = 2;

/// Runs a batch of socket operations: through io_uring when there is one and the batch has
/// at least [`BATCHED_OPERATIONS_MIN`] operations, else one system call each. A ring that
/// fails is given up (the batch still ran in full). The operations, and the buffers and
/// sockets they borrow, are released when it returns; `results` holds one result each.
fn run_socket_operations(
    ring: &mut Option<IoUring>,
    mut operations: Vec<SocketOperation<'_>>,
    results: &mut Vec<io::Result<usize>>,
) {
    match ring
        .as_mut()
        .filter(|_| operations.len() >= BATCHED_OPERATIONS_MIN)
    {
        Some(batch_ring) => {
            if let Err(error) = batch_ring.run(&mut operations, results) {
                log::warn!("io_uring failed ({error}): one system call per socket operation");
                *ring = None;
            }
        }
        None => sys::run_socket_operations(&mut operations, results),
    }
}

/// After the engine was offered a socket's input: a socket that broke the protocol is closed
/// (C closes it on an oversized header), one whose whole requests the engine refused waits in
/// `blocked_sockets` until it takes them.
fn settle_socket_input(
    engine: &Engine,
    connection: ConnectionId,
    client: &mut SocketClient,
    blocked_sockets: &mut BTreeSet<ConnectionId>,
) {
    if engine.failure(connection).is_some() {
        client.closing = true;
        blocked_sockets.remove(&connection);
    } else if !client.pending_input.is_empty() && !engine.wants_input(connection) {
        blocked_sockets.insert(connection);
    } else if !blocked_sockets.is_empty() {
        blocked_sockets.remove(&connection);
    }
}

/// Writes the connection's queued output to its socket until it is all sent or the socket
/// is full (the rest goes out when epoll reports the socket writable).
fn write_socket(engine: &mut Engine, connection: ConnectionId, client: &mut SocketClient) {
    loop {
        let output = engine.output(connection);
        if output.is_empty() {
            return;
        }
        let output_bytes = output.len();
        match (&*client.stream).write(output) {
            Ok(0) => return,
            Ok(count) => {
                engine.consume_output(connection, count);
                // A short write means the socket buffer is full: another write now would
                // only fail with EAGAIN.
                if count < output_bytes {
                    return;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
            Err(error) => {
                log::debug!("{connection:?}: write failed: {error}");
                client.closing = true;
                return;
            }
        }
    }
}
