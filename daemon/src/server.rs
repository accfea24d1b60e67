//! The daemon's event loop: one thread, `epoll(7)` over the socket, its clients, and the simulated guests' FIFOs.
//!
//! Descriptors are registered when they appear (the listener and `dom-exc` at start, a client
//! when it connects, a guest's `to-server` FIFO when the guest is introduced) and unregistered
//! when they go (disconnect; release, death or re-introduction drop the ring; a ring that broke
//! the protocol stops being watched), so a round costs in proportion to the sources that are
//! ready or have work, not to the number of live domains or clients.
//!
//! Bytes read from a connection are offered to the engine (which may take only part of them;
//! the rest is kept and offered again when [`Engine::wants_input`] allows), and after every
//! round each connection that got output is written out: to the socket, or into the guest's
//! response ring followed by a notification (C notifies after every read and every write,
//! reference §6.2). [`Engine::tick`] runs every 100 ms; simulated shutdowns and deaths are
//! picked up from inotify events on the domain directories (`markers.rs`; only the domains
//! named are looked at), with `$RUNDIR/dom-exc` as a prompt to read them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xenstore_engine::{ConnectionId, DomainId, Engine};

use crate::markers::{MarkerChanges, MarkerWatcher};
use crate::platform::{GuestRing, LinuxPlatform};
use crate::simulation::{self, DomainMarkers, NotificationFifo};
use crate::sys::{self, Epoll, Interest, Readiness, Registered};

/// How often [`Engine::tick`] runs; also the longest wait.
const TICK_INTERVAL_MILLISECONDS: u64 = 100;
/// How often every domain's marker files are rescanned when inotify does not watch them all.
const MARKER_SCAN_INTERVAL_MILLISECONDS: u64 = 1000;
/// Input kept per connection before we stop reading: one maximal message.
const PENDING_INPUT_LIMIT_BYTES: usize = 16 + 4096;

/// A client of the Unix socket.
struct SocketClient {
    /// Watched for reading while the engine takes its requests, for writing while output waits.
    stream: Registered<UnixStream>,
    pending_input: Vec<u8>,
    /// Set on end-of-file or error: the connection is closed at the end of the round.
    closing: bool,
}

/// The daemon.
pub struct Server {
    engine: Engine,
    platform: LinuxPlatform,
    epoll: Arc<Epoll>,
    listener: Registered<UnixListener>,
    sockets: BTreeMap<ConnectionId, SocketClient>,
    domain_exception: Registered<NotificationFifo>,
    markers: MarkerWatcher,
    last_tick: Instant,
    last_marker_scan: Instant,
    /// Rings holding input the engine could not take yet (quota or rate limit).
    blocked_rings: BTreeSet<u16>,
    /// Sockets that received bytes this round: offered to the engine.
    sockets_with_input: BTreeSet<ConnectionId>,
    /// Sockets holding whole requests the engine refused for now (outstanding-request quota
    /// of an unprivileged store domain): offered again each round until it takes them.
    blocked_sockets: BTreeSet<ConnectionId>,
    /// Sockets the engine queued output for, or that became writable again.
    sockets_with_output: BTreeSet<ConnectionId>,
    /// Sockets whose state changed this round: their epoll interest is brought up to date
    /// (and the closing ones closed) at the end of the round.
    touched_sockets: BTreeSet<ConnectionId>,
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
    /// Binds the socket (replacing a stale one) and prepares the run directory.
    pub fn new(engine: Engine, socket_path: &Path, run_directory: &Path) -> io::Result<Server> {
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
        let mut server = Server {
            engine,
            platform: LinuxPlatform::new(run_directory, Arc::clone(&epoll)),
            epoll,
            listener,
            sockets: BTreeMap::new(),
            domain_exception,
            markers,
            last_tick: now,
            last_marker_scan: now,
            blocked_rings: BTreeSet::new(),
            sockets_with_input: BTreeSet::new(),
            blocked_sockets: BTreeSet::new(),
            sockets_with_output: BTreeSet::new(),
            touched_sockets: BTreeSet::new(),
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
        let mut timeout =
            TICK_INTERVAL_MILLISECONDS.saturating_sub(self.last_tick.elapsed().as_millis() as u64);
        // A socket whose kept input the engine refused before may be taken now (its replies
        // went out): do not sleep on it. (A socket holding part of a message waits for epoll.)
        if self
            .blocked_sockets
            .iter()
            .any(|connection| self.engine.wants_input(*connection))
        {
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
                        self.read_socket(connection);
                    }
                    if readiness.writable {
                        self.sockets_with_output.insert(connection);
                    }
                }
                Some(Source::Guest(domid)) if readiness.readable => {
                    if let Some(guest) = self.platform.rings.get(&domid) {
                        let _ = guest.to_server.drain();
                        self.platform.needs_service.insert(domid);
                    }
                }
                _ => {}
            }
        }
        self.ready = ready;
        self.offer_socket_input();
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
        if self.last_tick.elapsed() >= Duration::from_millis(TICK_INTERVAL_MILLISECONDS) {
            self.last_tick = Instant::now();
            self.engine.tick(&mut self.platform);
        }
        // Requests from one connection queue output (watch events) on others: flush them.
        self.flush_sockets();
        self.service_rings();
        // Serving the rings may have queued events for sockets.
        self.flush_sockets();
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
                    let connection = self.engine.open_socket_connection();
                    let mut stream =
                        Registered::new(&self.epoll, stream, Source::Socket(connection).token());
                    if let Err(error) = stream.set_interest(Some(Interest::READ)) {
                        log::warn!("cannot watch a client socket: {error}");
                        self.engine.close_connection(&mut self.platform, connection);
                        continue;
                    }
                    log::debug!("socket client connected as {connection:?}");
                    self.sockets.insert(
                        connection,
                        SocketClient {
                            stream,
                            pending_input: Vec::new(),
                            closing: false,
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

    fn read_socket(&mut self, connection: ConnectionId) {
        let Some(client) = self.sockets.get_mut(&connection) else {
            return;
        };
        self.touched_sockets.insert(connection);
        let mut buffer = [0u8; PENDING_INPUT_LIMIT_BYTES];
        // Epoll reports a hang-up even when we did not ask to read: keep the bound anyway.
        let room = PENDING_INPUT_LIMIT_BYTES.saturating_sub(client.pending_input.len());
        if room == 0 {
            return;
        }
        match (&*client.stream).read(buffer.get_mut(..room).unwrap_or(&mut [])) {
            Ok(0) => client.closing = true,
            Ok(count) => {
                client
                    .pending_input
                    .extend_from_slice(buffer.get(..count).unwrap_or(&[]));
                self.sockets_with_input.insert(connection);
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

    /// Offers the kept bytes of the sockets that received some, or that the engine refused
    /// before, to the engine while it wants them.
    fn offer_socket_input(&mut self) {
        let mut offered = core::mem::take(&mut self.sockets_with_input);
        offered.extend(self.blocked_sockets.iter().copied());
        for connection in offered {
            let Some(client) = self.sockets.get_mut(&connection) else {
                self.blocked_sockets.remove(&connection);
                continue;
            };
            self.touched_sockets.insert(connection);
            self.engine
                .receive_from(&mut self.platform, connection, &mut client.pending_input);
            if self.engine.failure(connection).is_some() {
                // C closes a socket that broke the protocol (oversized header).
                client.closing = true;
                self.blocked_sockets.remove(&connection);
            } else if !client.pending_input.is_empty() && !self.engine.wants_input(connection) {
                self.blocked_sockets.insert(connection);
            } else {
                self.blocked_sockets.remove(&connection);
            }
        }
    }

    /// Sorts the connections the engine queued output for: sockets to flush, rings to serve.
    fn collect_output_ready(&mut self) {
        for connection in self.engine.take_output_ready() {
            if self.sockets.contains_key(&connection) {
                self.sockets_with_output.insert(connection);
            } else if let Some(domain) = self.engine.connection_domain(connection)
                && self.platform.rings.contains_key(&domain.0)
            {
                self.platform.needs_service.insert(domain.0);
            }
        }
    }

    /// Writes out the sockets that have output, as far as they take it.
    fn flush_sockets(&mut self) {
        self.collect_output_ready();
        for connection in core::mem::take(&mut self.sockets_with_output) {
            let Some(client) = self.sockets.get_mut(&connection) else {
                continue;
            };
            self.touched_sockets.insert(connection);
            if client.closing {
                continue;
            }
            loop {
                let output = self.engine.output(connection);
                if output.is_empty() {
                    break;
                }
                match (&*client.stream).write(output) {
                    Ok(0) => break,
                    Ok(count) => self.engine.consume_output(connection, count),
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    // The rest goes out when epoll reports the socket writable.
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => {
                        log::debug!("{connection:?}: write failed: {error}");
                        client.closing = true;
                        break;
                    }
                }
            }
        }
    }

    /// Closes the finished sockets among those touched this round and brings the others'
    /// epoll interest up to date: reading while the engine takes requests and the kept input
    /// has room (level-triggered epoll would otherwise report unread input forever), writing
    /// while output waits.
    fn finish_touched_sockets(&mut self) {
        for connection in core::mem::take(&mut self.touched_sockets) {
            let Some(client) = self.sockets.get_mut(&connection) else {
                continue;
            };
            if client.closing {
                self.sockets.remove(&connection);
                self.sockets_with_input.remove(&connection);
                self.blocked_sockets.remove(&connection);
                self.sockets_with_output.remove(&connection);
                self.engine.close_connection(&mut self.platform, connection);
                log::debug!("socket client {connection:?} closed");
                continue;
            }
            let interest = Interest {
                read: self.engine.wants_input(connection)
                    && client.pending_input.len() < PENDING_INPUT_LIMIT_BYTES,
                write: !self.engine.output(connection).is_empty(),
            };
            if let Err(error) = client.stream.set_interest(Some(interest)) {
                log::warn!("{connection:?}: cannot update its epoll interest: {error}");
                client.closing = true;
                self.touched_sockets.insert(connection);
            }
        }
    }

    /// Moves bytes between every served ring and the engine.
    ///
    /// Only rings with work are visited: those their guest notified, those just connected,
    /// those the engine queued output for, and those holding input the engine could not take
    /// yet. Serving one ring can queue watch events for others, so this repeats until no ring
    /// has new work (a bounded number of passes; the next round picks up the rest).
    fn service_rings(&mut self) {
        for _ in 0..4 {
            self.collect_output_ready();
            let mut domids = core::mem::take(&mut self.platform.needs_service);
            domids.extend(self.blocked_rings.iter().copied());
            if domids.is_empty() {
                return;
            }
            self.service_ring_set(domids);
        }
    }

    fn service_ring_set(&mut self, domids: BTreeSet<u16>) {
        for domid in domids {
            let Some(connection) = self.engine.domain_connection(DomainId(domid)) else {
                continue;
            };
            // The ring is taken out of the platform while the engine runs, because the engine
            // may call back into the platform (another INTRODUCE, a RELEASE of this domain).
            let Some(mut guest) = self.platform.rings.remove(&domid) else {
                continue;
            };
            self.platform.changed_domains.clear();
            if !guest.features_from_engine {
                // The platform wrote the default set at introduction; the engine knows the
                // domain's own set (XS_SET_FEATURE before XS_INTRODUCE may have masked bits).
                guest
                    .ring()
                    .set_server_features(self.engine.domain_features(DomainId(domid)));
                guest.features_from_engine = true;
            }
            if guest.failure.is_none() {
                service_ring(&mut self.engine, &mut self.platform, connection, &mut guest);
            }
            // A ring whose input waits for the engine (outstanding-request or write-rate
            // limit) is visited again each round until the engine takes it.
            let waiting = !guest.pending_input.is_empty() || !self.engine.wants_input(connection);
            if waiting && guest.failure.is_none() {
                self.blocked_rings.insert(domid);
            } else {
                self.blocked_rings.remove(&domid);
            }
            // Keep the ring unless the engine disconnected or replaced it meanwhile.
            if !self.platform.changed_domains.contains(&domid) {
                self.platform.rings.insert(domid, guest);
            }
        }
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
                    let markers = simulation::domain_markers(self.platform.run_directory(), domid);
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
        let mut gone: BTreeSet<u16> = self.platform.dead_domains.clone();
        gone.extend(self.platform.shutdown_domains.iter().copied());
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
        let introduced = self.engine.domain_connection(domain).is_some();
        if marker.dead {
            if self.platform.dead_domains.insert(marker.domid) {
                log::info!("domain {domain}: dead (simulated)");
                if introduced || self.platform.rings.contains_key(&marker.domid) {
                    self.engine.domain_died(&mut self.platform, domain);
                }
                self.platform.rings.remove(&marker.domid);
                self.blocked_rings.remove(&marker.domid);
            }
        } else {
            self.platform.dead_domains.remove(&marker.domid);
        }
        if !marker.shutdown {
            self.platform.shutdown_domains.remove(&marker.domid);
        } else if !marker.dead && self.platform.shutdown_domains.insert(marker.domid) && introduced
        {
            log::info!("domain {domain}: shut down (simulated)");
            self.engine.domain_shutdown(&mut self.platform, domain);
        }
    }
}

/// One ring: the engine's shared ring service, then the notification and failure marking
/// that belong to this front end.
fn service_ring(
    engine: &mut Engine,
    platform: &mut LinuxPlatform,
    connection: ConnectionId,
    guest: &mut GuestRing,
) {
    let mut pending_input = core::mem::take(&mut guest.pending_input);
    let outcome = xenstore_engine::ring_service::service_ring(
        engine,
        platform,
        connection,
        guest.domain,
        &guest.ring(),
        &mut pending_input,
    );
    guest.pending_input = pending_input;
    if let Some(failure) = outcome.failure {
        // The engine already wrote the error field when the domain may see it.
        guest.mark_failed(failure, false);
    } else if outcome.progressed {
        guest.notify();
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
