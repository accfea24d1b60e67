//! The daemon's event loop: one thread, `poll(2)` over the socket, its clients, and the simulated guests' FIFOs.
//!
//! Bytes read from a connection are offered to the engine (which may take only part of them;
//! the rest is kept and offered again when [`Engine::wants_input`] allows), and after every
//! round each connection's queued output is written out: to the socket, or into the guest's
//! response ring followed by a notification (C notifies after every read and every write,
//! reference §6.2). [`Engine::tick`] runs every 100 ms; simulated domain deaths are picked up
//! from `$RUNDIR/dom-exc` and by a rescan every second.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use xenstore_engine::{ConnectionId, DomainId, Engine};

use crate::platform::{GuestRing, LinuxPlatform};
use crate::simulation::{self, NotificationFifo};
use crate::sys::{self, PollEntry};

/// How often [`Engine::tick`] runs; also the poll timeout.
const TICK_INTERVAL_MILLISECONDS: u64 = 100;
/// How often marker files are rescanned even without a `dom-exc` notification.
const MARKER_SCAN_INTERVAL_MILLISECONDS: u64 = 1000;
/// Input kept per connection before we stop reading: one maximal message.
const PENDING_INPUT_LIMIT_BYTES: usize = 16 + 4096;

/// A client of the Unix socket.
struct SocketClient {
    stream: UnixStream,
    pending_input: Vec<u8>,
    /// Set on end-of-file or error: the connection is closed at the end of the round.
    closing: bool,
}

/// The daemon.
pub struct Server {
    engine: Engine,
    platform: LinuxPlatform,
    listener: UnixListener,
    sockets: BTreeMap<ConnectionId, SocketClient>,
    domain_exception: NotificationFifo,
    last_tick: Instant,
    last_marker_scan: Instant,
    /// Rings holding input the engine could not take yet (quota or rate limit).
    blocked_rings: BTreeSet<u16>,
}

/// Which descriptor a poll entry belongs to.
#[derive(Clone, Copy)]
enum Source {
    Listener,
    DomainException,
    Socket(ConnectionId),
    Guest(u16),
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
        let listener = UnixListener::bind(socket_path)?;
        listener.set_nonblocking(true)?;
        let fifo_path = simulation::domain_exception_fifo(run_directory);
        sys::make_fifo(&fifo_path, 0o600)?;
        let domain_exception = NotificationFifo::open(&fifo_path)?;
        let now = Instant::now();
        Ok(Server {
            engine,
            platform: LinuxPlatform::new(run_directory),
            listener,
            sockets: BTreeMap::new(),
            domain_exception,
            last_tick: now,
            last_marker_scan: now,
            blocked_rings: BTreeSet::new(),
        })
    }

    /// Serves forever (until a fatal error of the listening socket or of poll).
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            self.round()?;
        }
    }

    /// One iteration: wait, read, let the engine work, write.
    fn round(&mut self) -> io::Result<()> {
        let mut sources = Vec::new();
        let mut entries = Vec::new();
        sources.push(Source::Listener);
        entries.push(PollEntry::new(self.listener.as_raw_fd(), true, false));
        sources.push(Source::DomainException);
        entries.push(PollEntry::new(
            self.domain_exception.descriptor(),
            true,
            false,
        ));
        for (connection, client) in &self.sockets {
            let want_read = self.engine.wants_input(*connection)
                && client.pending_input.len() < PENDING_INPUT_LIMIT_BYTES;
            let want_write = !self.engine.output(*connection).is_empty();
            sources.push(Source::Socket(*connection));
            entries.push(PollEntry::new(
                client.stream.as_raw_fd(),
                want_read,
                want_write,
            ));
        }
        for (domid, guest) in &self.platform.rings {
            if guest.failure.is_none() {
                sources.push(Source::Guest(*domid));
                entries.push(PollEntry::new(guest.to_server.descriptor(), true, false));
            }
        }
        let timeout =
            TICK_INTERVAL_MILLISECONDS.saturating_sub(self.last_tick.elapsed().as_millis() as u64);
        sys::poll(&mut entries, timeout as i32)?;

        let mut scan_markers = false;
        for (source, entry) in sources.iter().zip(&entries) {
            match *source {
                Source::Listener if entry.readable => self.accept_clients(),
                Source::DomainException if entry.readable => {
                    let _ = self.domain_exception.drain();
                    scan_markers = true;
                }
                Source::Socket(connection) if entry.readable => self.read_socket(connection),
                Source::Guest(domid) if entry.readable => {
                    if let Some(guest) = self.platform.rings.get(&domid) {
                        let _ = guest.to_server.drain();
                        self.platform.needs_service.insert(domid);
                    }
                }
                _ => {}
            }
        }
        self.offer_socket_input();
        self.service_rings();
        if scan_markers
            || self.last_marker_scan.elapsed()
                >= Duration::from_millis(MARKER_SCAN_INTERVAL_MILLISECONDS)
        {
            self.last_marker_scan = Instant::now();
            self.apply_domain_markers();
        }
        if self.last_tick.elapsed() >= Duration::from_millis(TICK_INTERVAL_MILLISECONDS) {
            self.last_tick = Instant::now();
            self.engine.tick(&mut self.platform);
        }
        // Requests from one connection queue output (watch events) on others: flush them all.
        self.flush_sockets();
        self.service_rings();
        self.close_finished_sockets();
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
        let mut buffer = [0u8; PENDING_INPUT_LIMIT_BYTES];
        // Poll reports a hang-up even when we did not ask to read: keep the bound anyway.
        let room = PENDING_INPUT_LIMIT_BYTES.saturating_sub(client.pending_input.len());
        if room == 0 {
            return;
        }
        match client
            .stream
            .read(buffer.get_mut(..room).unwrap_or(&mut []))
        {
            Ok(0) => client.closing = true,
            Ok(count) => client
                .pending_input
                .extend_from_slice(buffer.get(..count).unwrap_or(&[])),
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

    /// Offers every socket's kept bytes to the engine while it wants them.
    fn offer_socket_input(&mut self) {
        for (connection, client) in &mut self.sockets {
            self.engine
                .receive_from(&mut self.platform, *connection, &mut client.pending_input);
            if self.engine.failure(*connection).is_some() {
                // C closes a socket that broke the protocol (oversized header).
                client.closing = true;
            }
        }
    }

    fn flush_sockets(&mut self) {
        for (connection, client) in &mut self.sockets {
            if client.closing {
                continue;
            }
            loop {
                let output = self.engine.output(*connection);
                if output.is_empty() {
                    break;
                }
                match client.stream.write(output) {
                    Ok(0) => break,
                    Ok(count) => self.engine.consume_output(*connection, count),
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
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

    fn close_finished_sockets(&mut self) {
        let finished: Vec<ConnectionId> = self
            .sockets
            .iter()
            .filter(|(_, client)| client.closing)
            .map(|(connection, _)| *connection)
            .collect();
        for connection in finished {
            self.sockets.remove(&connection);
            self.engine.close_connection(&mut self.platform, connection);
            log::debug!("socket client {connection:?} closed");
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
            let mut domids = core::mem::take(&mut self.platform.needs_service);
            domids.extend(self.blocked_rings.iter().copied());
            for connection in self.engine.take_output_ready() {
                if let Some(domain) = self.engine.connection_domain(connection)
                    && self.platform.rings.contains_key(&domain.0)
                {
                    domids.insert(domain.0);
                }
            }
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

    /// Reports simulated shutdowns and deaths (`$RUNDIR/domains/<domid>/{shutdown,dead}`).
    fn apply_domain_markers(&mut self) {
        let markers = simulation::scan_markers(self.platform.run_directory());
        let introduced = self.engine.introduced_domains();
        for marker in &markers {
            let domain = DomainId(marker.domid);
            if marker.dead && self.platform.dead_domains.insert(marker.domid) {
                log::info!("domain {domain}: dead (simulated)");
                if introduced.contains(&domain) || self.platform.rings.contains_key(&marker.domid) {
                    self.engine.domain_died(&mut self.platform, domain);
                }
                self.platform.rings.remove(&marker.domid);
            } else if marker.shutdown
                && !marker.dead
                && self.platform.shutdown_domains.insert(marker.domid)
                && introduced.contains(&domain)
            {
                log::info!("domain {domain}: shut down (simulated)");
                self.engine.domain_shutdown(&mut self.platform, domain);
            }
        }
        // A removed marker means the domid was recreated: it exists again.
        self.platform.dead_domains.retain(|domid| {
            markers
                .iter()
                .any(|marker| marker.domid == *domid && marker.dead)
        });
        self.platform.shutdown_domains.retain(|domid| {
            markers
                .iter()
                .any(|marker| marker.domid == *domid && marker.shutdown)
        });
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
