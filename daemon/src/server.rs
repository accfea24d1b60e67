//! The daemon's event loop: one thread, `epoll(7)` over the socket, its clients, and the simulated guests' FIFOs.
//!
//! Descriptors are registered when they appear (the listener and `dom-exc` at start, a client
//! when it connects, a guest's `to-server` FIFO when the guest is introduced) and unregistered
//! when they go (disconnect; release, death or re-introduction drop the ring; a ring that broke
//! the protocol stops being watched), so a round costs in proportion to the sources that are
//! ready or have work, not to the number of live domains or clients.
//!
//! Socket bytes are offered to the engine (which may take only part of them; the rest is
//! kept and offered again when [`Engine::wants_input`] allows), and the replies of a round
//! are written at its end. Rings are the ring host's (`xenstore_engine::ring_host`, over
//! [`LinuxPort`]): it moves their bytes and notifies after every read and every write, as C
//! does (docs/protocol.md, "Ring"), and ticks the engine every 100 ms. Simulated shutdowns
//! and deaths are picked up from inotify events on the domain directories (`markers.rs`;
//! only the domains named are looked at), with `$RUNDIR/dom-exc` as a prompt to read them.
//!
//! Socket reads and writes are batched: all readable sockets are read (with io_uring, in one
//! system call), the engine answers, and the replies of the round are sent together at its
//! end (with io_uring, in one system call, which also takes the answered requests out of
//! their sockets: see `Server::read_sockets`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xenstore_engine::ring_host::{HostSettings, RingHost};
use xenstore_engine::{ConnectionId, DomainId, Engine};

use crate::markers::{MarkerChanges, MarkerWatcher};
use crate::platform::LinuxPort;
use crate::simulation::{self, DomainMarkers, NotificationFifo};
use crate::sys::{self, Epoll, Interest, IoUring, Readiness, Registered, SocketOperation};
use std::os::fd::AsFd;

/// The longest wait: [`Engine::tick`] runs this often (the ring host's tick).
const TICK_INTERVAL_MILLISECONDS: u64 = xenstore_engine::ring_host::TICK_NANOSECONDS / 1_000_000;
/// How often every domain's marker files are rescanned when inotify does not watch them all.
const MARKER_SCAN_INTERVAL_MILLISECONDS: u64 = 1000;
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
    /// Whether it is listed in [`Server::touched_sockets`] this round.
    touched: bool,
    /// Bytes read with `MSG_PEEK` this round: taken out of the socket right after the
    /// replies are sent (see [`Server::read_sockets`]).
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

/// The daemon.
pub struct Server {
    /// The engine and the simulated guests' rings.
    host: RingHost<LinuxPort>,
    /// The last [`RingHost::serve`] left work (bounded passes): the next wait must not sleep.
    rings_have_work: bool,
    epoll: Arc<Epoll>,
    listener: Registered<UnixListener>,
    sockets: BTreeMap<ConnectionId, SocketClient>,
    domain_exception: Registered<NotificationFifo>,
    markers: MarkerWatcher,
    last_marker_scan: Instant,
    /// Sockets holding whole requests the engine refused for now (outstanding-request quota
    /// of an unprivileged store domain): offered again each round until it takes them.
    blocked_sockets: BTreeSet<ConnectionId>,
    /// Sockets that were read, became writable, or were queued output this round: at the end
    /// of the round their output is written, their epoll interest brought up to date, and the
    /// closing ones closed. A list rather than a set (each [`SocketClient`] knows whether it
    /// is in it), because it changes on every request.
    touched_sockets: Vec<ConnectionId>,
    /// Where socket reads land, one maximal message per socket of a read batch (grown on
    /// demand, zeroed once, reused): the engine takes the requests straight from here, and
    /// only bytes it refuses are copied to the client's `pending_input`.
    read_buffer: Vec<u8>,
    /// Batches the socket reads and writes of a round, when io_uring is available.
    socket_ring: Option<IoUring>,
    /// Sockets epoll reported readable this round.
    readable_sockets: Vec<ConnectionId>,
    /// The outcomes of the last batch of socket operations.
    socket_results: Vec<io::Result<usize>>,
    /// The last wait's ready descriptors (kept to reuse the allocation).
    ready: Vec<Readiness>,
}

/// What an epoll registration belongs to; its token is what the kernel hands back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Listener,
    DomainException,
    Markers,
    Socket(ConnectionId),
    Guest(u16),
}

impl Source {
    const KIND_SHIFT: u32 = 32;
    const LISTENER: u64 = 0;
    const DOMAIN_EXCEPTION: u64 = 1;
    const SOCKET: u64 = 2;
    const GUEST: u64 = 3;
    const MARKERS: u64 = 4;

    /// The epoll token: the kind in the upper half, the connection id or domid in the lower.
    pub fn token(self) -> u64 {
        let (kind, id) = match self {
            Source::Listener => (Self::LISTENER, 0),
            Source::DomainException => (Self::DOMAIN_EXCEPTION, 0),
            Source::Markers => (Self::MARKERS, 0),
            Source::Socket(connection) => (Self::SOCKET, u64::from(connection.0)),
            Source::Guest(domid) => (Self::GUEST, u64::from(domid)),
        };
        (kind << Self::KIND_SHIFT) | id
    }

    pub fn from_token(token: u64) -> Option<Source> {
        let id = token & u64::from(u32::MAX);
        match token >> Self::KIND_SHIFT {
            Self::LISTENER => Some(Source::Listener),
            Self::DOMAIN_EXCEPTION => Some(Source::DomainException),
            Self::MARKERS => Some(Source::Markers),
            Self::SOCKET => Some(Source::Socket(ConnectionId(u32::try_from(id).ok()?))),
            Self::GUEST => Some(Source::Guest(u16::try_from(id).ok()?)),
            _ => None,
        }
    }
}

impl Server {
    /// Binds the socket (replacing a stale one) and prepares the run directory; with
    /// `use_io_uring`, batches socket reads and writes where the kernel allows it.
    pub fn new(
        engine: Engine,
        socket_path: &Path,
        run_directory: &Path,
        use_io_uring: bool,
    ) -> io::Result<Server> {
        if let Some(parent) = socket_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::create_dir_all(simulation::domains_directory(run_directory))?;
        match std::fs::remove_file(socket_path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let epoll = Arc::new(Epoll::new()?);
        let listener = UnixListener::bind(socket_path)?;
        listener.set_nonblocking(true)?;
        let mut listener = Registered::new(&epoll, listener, Source::Listener.token());
        listener.set_interest(Some(Interest::READ))?;
        let fifo_path = simulation::domain_exception_fifo(run_directory);
        sys::make_fifo(&fifo_path, 0o600)?;
        let mut domain_exception = Registered::new(
            &epoll,
            NotificationFifo::open(&fifo_path)?,
            Source::DomainException.token(),
        );
        domain_exception.set_interest(Some(Interest::READ))?;
        let markers = MarkerWatcher::new(&epoll, run_directory, Source::Markers.token());
        let now = Instant::now();
        let port = LinuxPort::new(run_directory, Arc::clone(&epoll));
        // FIFOs lose no notification: no sweep.
        let host = RingHost::new(engine, port, HostSettings::default());
        let mut server = Server {
            host,
            rings_have_work: false,
            epoll,
            listener,
            sockets: BTreeMap::new(),
            domain_exception,
            markers,
            last_marker_scan: now,
            blocked_sockets: BTreeSet::new(),
            touched_sockets: Vec::new(),
            read_buffer: vec![0; PENDING_INPUT_LIMIT_BYTES],
            socket_ring: use_io_uring.then(open_socket_ring).flatten(),
            readable_sockets: Vec::new(),
            socket_results: Vec::new(),
            ready: Vec::with_capacity(sys::EVENTS_PER_WAIT),
        };
        // Watch the domain directories, and take note of markers left from before.
        server.rescan_domain_markers();
        Ok(server)
    }

    /// Serves forever (until a fatal error of the listening socket or of epoll).
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            self.round()?;
        }
    }

    /// One iteration: wait, read, let the engine work, write.
    fn round(&mut self) -> io::Result<()> {
        let mut timeout = TICK_INTERVAL_MILLISECONDS;
        // A socket whose kept input the engine refused before may be taken now (its replies
        // went out): do not sleep on it. (A socket holding part of a message waits for epoll.)
        if self
            .blocked_sockets
            .iter()
            .any(|connection| self.host.engine().wants_input(*connection))
        {
            timeout = 0;
        }
        // Work left by the bounded ring passes of the last round has no event to wake us.
        if self.rings_have_work || self.host.engine().has_output_ready() {
            timeout = 0;
        }
        let mut ready = core::mem::take(&mut self.ready);
        self.epoll.wait(&mut ready, timeout as i32)?;

        let mut markers_changed = false;
        let mut domain_exception = false;
        for readiness in &ready {
            match Source::from_token(readiness.token) {
                Some(Source::Listener) if readiness.readable => self.accept_clients(),
                Some(Source::DomainException) if readiness.readable => {
                    let _ = self.domain_exception.drain();
                    domain_exception = true;
                }
                Some(Source::Markers) if readiness.readable => markers_changed = true,
                Some(Source::Socket(connection)) => {
                    if readiness.readable {
                        self.readable_sockets.push(connection);
                    } else if readiness.writable
                        && let Some(client) = self.sockets.get_mut(&connection)
                    {
                        // Its output is written at the end of the round.
                        client.touch(connection, &mut self.touched_sockets);
                    }
                }
                Some(Source::Guest(domid)) if readiness.readable => {
                    if let Some(guest) = self.host.ring(DomainId(domid)) {
                        let _ = guest.to_server.drain();
                        self.host.notified(DomainId(domid));
                    }
                }
                _ => {}
            }
        }
        self.ready = ready;
        self.read_sockets();
        self.offer_blocked_sockets();
        self.service_rings();
        if markers_changed || domain_exception {
            self.apply_marker_changes(domain_exception);
        }
        if self.markers.needs_periodic_rescan()
            && self.last_marker_scan.elapsed()
                >= Duration::from_millis(MARKER_SCAN_INTERVAL_MILLISECONDS)
        {
            self.rescan_domain_markers();
        }
        self.host.tick_if_due();
        // The tick, marker changes and requests from sockets may have queued output (replies,
        // watch events) for rings; serving rings may queue events for sockets.
        self.service_rings();
        self.finish_touched_sockets();
        Ok(())
    }

    fn accept_clients(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(error) = stream.set_nonblocking(true) {
                        log::warn!("cannot make a client socket non-blocking: {error}");
                        continue;
                    }
                    let connection = self.host.engine_mut().open_socket_connection();
                    let mut stream =
                        Registered::new(&self.epoll, stream, Source::Socket(connection).token());
                    if let Err(error) = stream.set_interest(Some(Interest::READ)) {
                        log::warn!("cannot watch a client socket: {error}");
                        self.host.with_engine(|engine, platform| {
                            engine.close_connection(platform, connection);
                        });
                        continue;
                    }
                    log::debug!("socket client connected as {connection:?}");
                    self.sockets.insert(
                        connection,
                        SocketClient {
                            stream,
                            pending_input: Vec::new(),
                            closing: false,
                            touched: false,
                            peeked_bytes: 0,
                        },
                    );
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

    /// Reads what the readable sockets have (one read each: a short read means it had no
    /// more, and epoll reports the socket again while it has) and lets the engine process
    /// the requests at once; their replies are written at the end of the round.
    ///
    /// With io_uring each batch of reads is one system call, and the reads only peek: the
    /// bytes are taken out of the socket right after the reply is sent, in the batch that
    /// sends it ([`Server::write_touched_sockets`]). Taking a request out of a Unix socket
    /// wakes its client when it already sleeps waiting for the reply (the kernel reports the
    /// freed buffer space to it), and that wake-up finds no reply yet; right after the reply
    /// was sent, the client is awake already. That is one wake-up per request instead of up
    /// to two, for the server (which pays for waking) and for the client.
    ///
    /// A round with one readable socket reads it with a plain system call and no peek: a
    /// batch of one saves nothing, and with a single client the io_uring path measured
    /// about 14% fewer reads/s (W3, 1 client: 12,868 against 14,966 reads/s, means of 4
    /// runs each; with this rule 15,473 against 14,936).
    fn read_sockets(&mut self) {
        let mut readable = core::mem::take(&mut self.readable_sockets);
        for group in readable.chunks(READ_BATCH_SOCKETS) {
            self.read_socket_group(group);
        }
        readable.clear();
        self.readable_sockets = readable;
    }

    fn read_socket_group(&mut self, group: &[ConnectionId]) {
        let peek = self.socket_ring.is_some() && group.len() >= BATCHED_OPERATIONS_MIN;
        let needed_bytes = group.len() * PENDING_INPUT_LIMIT_BYTES;
        if self.read_buffer.len() < needed_bytes {
            self.read_buffer.resize(needed_bytes, 0);
        }
        for connection in group {
            if let Some(client) = self.sockets.get_mut(connection) {
                client.touch(*connection, &mut self.touched_sockets);
            }
        }
        let mut operations = Vec::with_capacity(group.len());
        // Each operation's connection and the offset of its part of `read_buffer`.
        let mut readers = Vec::with_capacity(group.len());
        let mut chunks = self.read_buffer.chunks_mut(PENDING_INPUT_LIMIT_BYTES);
        for connection in group {
            let Some(client) = self.sockets.get(connection) else {
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
        let mut results = core::mem::take(&mut self.socket_results);
        run_socket_operations(&mut self.socket_ring, &mut operations, &mut results);
        drop(operations);
        for ((connection, offset), result) in readers.into_iter().zip(results.drain(..)) {
            let Some(client) = self.sockets.get_mut(&connection) else {
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
                        let taken = self
                            .host
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
                        self.host.with_engine(|engine, platform| {
                            engine.receive_from(platform, connection, pending_input);
                        });
                    }
                    settle_socket_input(
                        self.host.engine(),
                        connection,
                        client,
                        &mut self.blocked_sockets,
                    );
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
        self.socket_results = results;
    }

    /// Offers the kept bytes of the sockets the engine refused before to the engine again.
    fn offer_blocked_sockets(&mut self) {
        if self.blocked_sockets.is_empty() {
            return;
        }
        for connection in self.blocked_sockets.clone() {
            let Some(client) = self.sockets.get_mut(&connection) else {
                self.blocked_sockets.remove(&connection);
                continue;
            };
            client.touch(connection, &mut self.touched_sockets);
            let pending_input = &mut client.pending_input;
            self.host.with_engine(|engine, platform| {
                engine.receive_from(platform, connection, pending_input);
            });
            settle_socket_input(
                self.host.engine(),
                connection,
                client,
                &mut self.blocked_sockets,
            );
        }
    }

    /// Sorts the connections the engine queued output for: sockets to write out at the end
    /// of the round, rings to serve.
    fn collect_output_ready(&mut self) {
        let sockets = &mut self.sockets;
        let touched_sockets = &mut self.touched_sockets;
        self.host.sort_output_ready(&mut |connection| {
            if let Some(client) = sockets.get_mut(&connection) {
                client.touch(connection, touched_sockets);
            }
        });
    }

    /// Finishes the sockets touched this round: closes the finished ones, writes out the
    /// others' output as far as they take it, and brings their epoll interest up to date:
    /// reading while the engine takes requests and the kept input has room (level-triggered
    /// epoll would otherwise report unread input forever), writing while output waits.
    fn finish_touched_sockets(&mut self) {
        self.collect_output_ready();
        let mut touched = core::mem::take(&mut self.touched_sockets);
        self.write_touched_sockets(&touched);
        for connection in touched.drain(..) {
            let Some(client) = self.sockets.get_mut(&connection) else {
                continue;
            };
            client.touched = false;
            if !client.closing {
                // What the batch left: further queued messages (a reply and watch events).
                write_socket(self.host.engine_mut(), connection, client);
            }
            if client.closing {
                self.sockets.remove(&connection);
                self.blocked_sockets.remove(&connection);
                self.host.with_engine(|engine, platform| {
                    engine.close_connection(platform, connection);
                });
                log::debug!("socket client {connection:?} closed");
                continue;
            }
            let interest = Interest {
                read: self.host.engine().wants_input(connection)
                    && client.pending_input.len() < PENDING_INPUT_LIMIT_BYTES,
                write: !self.host.engine().output(connection).is_empty(),
            };
            if let Err(error) = client.stream.set_interest(Some(interest)) {
                log::warn!("{connection:?}: cannot update its epoll interest: {error}");
                client.closing = true;
                // Closed at the end of the next round.
                client.touch(connection, &mut self.touched_sockets);
            }
        }
        // Keep the list's allocation for the next round.
        if self.touched_sockets.is_empty() {
            self.touched_sockets = touched;
        }
    }

    /// Sends each touched socket's first queued message and takes the bytes peeked this
    /// round out of it, in one batch (see [`Server::read_sockets`]): the send first, so that
    /// the client is awake when its request leaves the socket.
    fn write_touched_sockets(&mut self, touched: &[ConnectionId]) {
        let mut operations = Vec::with_capacity(touched.len() * 2);
        // Each operation's connection, and whether it is the send.
        let mut owners = Vec::with_capacity(touched.len() * 2);
        for connection in touched {
            let Some(client) = self.sockets.get(connection) else {
                continue;
            };
            if !client.closing {
                let output = self.host.engine().output(*connection);
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
        let mut results = core::mem::take(&mut self.socket_results);
        run_socket_operations(&mut self.socket_ring, &mut operations, &mut results);
        drop(operations);
        for ((connection, is_send), result) in owners.into_iter().zip(results.drain(..)) {
            let Some(client) = self.sockets.get_mut(&connection) else {
                continue;
            };
            match result {
                Ok(count) if is_send => self.host.engine_mut().consume_output(connection, count),
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
        self.socket_results = results;
    }

    /// Moves bytes between the served rings and the engine (the ring host's rounds); output
    /// queued for sockets meanwhile is written at the end of the round.
    fn service_rings(&mut self) {
        let sockets = &mut self.sockets;
        let touched_sockets = &mut self.touched_sockets;
        self.rings_have_work = self.host.serve(&mut |connection| {
            if let Some(client) = sockets.get_mut(&connection) {
                client.touch(connection, touched_sockets);
            }
        });
    }

    /// Looks at the domains whose markers changed (`$RUNDIR/domains/<domid>/{shutdown,dead}`):
    /// the ones inotify named, or all of them when it lost track. A `dom-exc` notification
    /// (`domain_exception`) is only a prompt to read the events, unless some directory is not
    /// watched: then it asks for a full rescan, as `VIRQ_DOM_EXC` makes C xenstored look at
    /// every domain.
    fn apply_marker_changes(&mut self, domain_exception: bool) {
        match self.markers.changes() {
            MarkerChanges::Everything => self.rescan_domain_markers(),
            MarkerChanges::Domains(_)
                if domain_exception && self.markers.needs_periodic_rescan() =>
            {
                self.rescan_domain_markers();
            }
            MarkerChanges::Domains(domids) => {
                for domid in domids {
                    let markers =
                        simulation::domain_markers(self.host.port().run_directory(), domid);
                    self.apply_domain_markers(markers);
                }
            }
        }
    }

    /// Looks at every domain directory (re-establishing the inotify watches).
    fn rescan_domain_markers(&mut self) {
        self.last_marker_scan = Instant::now();
        // Events queued so far are covered by the rescan.
        let _ = self.markers.changes();
        let found = self.markers.rescan();
        // Domains whose directory went away have no markers any more.
        let port = self.host.port();
        let mut gone: BTreeSet<u16> = port.dead_domains.clone();
        gone.extend(port.shutdown_domains.iter().copied());
        for markers in found {
            gone.remove(&markers.domid);
            self.apply_domain_markers(markers);
        }
        for domid in gone {
            self.apply_domain_markers(DomainMarkers {
                domid,
                shutdown: false,
                dead: false,
            });
        }
    }

    /// Reports one domain's simulated shutdown or death to the engine, once; a removed marker
    /// means the domid was recreated: it exists again.
    fn apply_domain_markers(&mut self, marker: DomainMarkers) {
        let domain = DomainId(marker.domid);
        let introduced = self.host.engine().domain_connection(domain).is_some();
        if marker.dead {
            if self.host.port_mut().dead_domains.insert(marker.domid) {
                log::info!("domain {domain}: dead (simulated)");
                if introduced || self.host.has_ring(domain) {
                    self.host.domain_died(domain);
                }
            }
        } else {
            self.host.port_mut().dead_domains.remove(&marker.domid);
        }
        if !marker.shutdown {
            self.host.port_mut().shutdown_domains.remove(&marker.domid);
        } else if !marker.dead
            && self.host.port_mut().shutdown_domains.insert(marker.domid)
            && introduced
        {
            log::info!("domain {domain}: shut down (simulated)");
            self.host.domain_shutdown(domain);
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
/// calls (see [`Server::read_sockets`]).
const BATCHED_OPERATIONS_MIN: usize = 2;

/// Runs a batch of socket operations: through io_uring when there is one and the batch has
/// at least [`BATCHED_OPERATIONS_MIN`] operations, else one system call each. A ring that
/// fails is given up (the batch still ran in full).
fn run_socket_operations(
    ring: &mut Option<IoUring>,
    operations: &mut [SocketOperation<'_>],
    results: &mut Vec<io::Result<usize>>,
) {
    match ring
        .as_mut()
        .filter(|_| operations.len() >= BATCHED_OPERATIONS_MIN)
    {
        Some(batch_ring) => {
            if let Err(error) = batch_ring.run(operations, results) {
                log::warn!("io_uring failed ({error}): one system call per socket operation");
                *ring = None;
            }
        }
        None => sys::run_socket_operations(operations, results),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoll_tokens_name_their_source() {
        let sources = [
            Source::Listener,
            Source::DomainException,
            Source::Markers,
            Source::Socket(ConnectionId(0)),
            Source::Socket(ConnectionId(u32::MAX)),
            Source::Guest(0),
            Source::Guest(u16::MAX),
        ];
        for source in sources {
            assert_eq!(Source::from_token(source.token()), Some(source));
        }
        let tokens: BTreeSet<u64> = sources.iter().map(|source| source.token()).collect();
        assert_eq!(tokens.len(), sources.len());
        assert_eq!(Source::from_token(99 << 32), None);
        assert_eq!(Source::from_token((3 << 32) | 0x1_0000), None);
    }
}
