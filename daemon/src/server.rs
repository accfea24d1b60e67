//! The daemon's event loop: one thread, `epoll(7)` over the socket, its clients, and the simulated guests' FIFOs.
//!
//! Descriptors are registered when they appear (the listener, `dom-exc` and `dump-state` at
//! start, a client
//! when it connects, a guest's `to-server` FIFO when the guest is introduced) and unregistered
//! when they go (disconnect; release, death or re-introduction drop the ring; a ring that broke
//! the protocol stops being watched), so a round costs in proportion to the sources that are
//! ready or have work, not to the number of live domains or clients.
//!
//! Socket clients are `sockets.rs`; rings are the ring host's (`xenstore_engine::ring_host`,
//! over [`LinuxPort`]): it moves their bytes and notifies after every read and every write, as
//! C does (docs/protocol.md, "Ring"), and ticks the engine every 100 ms. Simulated shutdowns
//! and deaths are picked up from inotify events on the domain directories (`markers.rs`;
//! only the domains named are looked at), with `$RUNDIR/dom-exc` as a prompt to read them.
//! A write to `$RUNDIR/dump-state` saves the state to `$RUNDIR/state_dump` at the end of the
//! round; a daemon started with `-U` takes over the rings of such a state
//! ([`Server::restore_connections`], docs/migration-stream.md, "The daemon").

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xenstore_engine::live_update::{LiveUpdatePlan, LiveUpdatePoll};
use xenstore_engine::migration::{FrontEndState, GlobalData, RestoredEndpoint, RestoredState};
use xenstore_engine::ring_host::{HostSettings, RingHost, RingPort};
use xenstore_engine::{ConnectionFailure, ConnectionId, DomainId, Engine};

use crate::markers::{MarkerChanges, MarkerWatcher};
use crate::platform::LinuxPort;
use crate::sockets::{DaemonHost, SocketClients};
use crate::sys::{self, Epoll, Interest, Readiness, Registered};
use xenstore_client::simulation::{self, DomainMarkers, NotificationFifo};

/// The longest wait: [`Engine::tick`] runs this often (the ring host's tick).
const TICK_INTERVAL_MILLISECONDS: u64 = xenstore_engine::ring_host::TICK_NANOSECONDS / 1_000_000;
/// How often every domain's marker files are rescanned when inotify does not watch them all.
const MARKER_SCAN_INTERVAL_MILLISECONDS: u64 = 1000;

/// The daemon.
pub struct Server {
    /// The engine and the simulated guests' rings.
    host: DaemonHost,
    /// The last [`RingHost::serve`] left work (bounded passes): the next wait must not sleep.
    rings_have_work: bool,
    epoll: Arc<Epoll>,
    sockets: SocketClients,
    domain_exception: Registered<NotificationFifo>,
    /// `$RUNDIR/dump-state`: a write to it asks for the state in `$RUNDIR/state_dump`.
    dump_state: Registered<NotificationFifo>,
    markers: MarkerWatcher,
    last_marker_scan: Instant,
    /// The last wait's ready descriptors (kept to reuse the allocation).
    ready: Vec<Readiness>,
    /// The arguments this process was started with (without the program): a live update
    /// without `-c` starts the new executable with them (C `lu_activate_binary()`).
    restart_arguments: Vec<String>,
}

/// What an epoll registration belongs to; its token is what the kernel hands back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Listener,
    DomainException,
    Markers,
    Socket(ConnectionId),
    Guest(DomainId),
    DumpState,
}

impl Source {
    const KIND_SHIFT: u32 = 32;
    const LISTENER: u64 = 0;
    const DOMAIN_EXCEPTION: u64 = 1;
    const SOCKET: u64 = 2;
    const GUEST: u64 = 3;
    const MARKERS: u64 = 4;
    const DUMP_STATE: u64 = 5;

    /// The epoll token: the kind in the upper half, the connection id or domid in the lower.
    pub fn token(self) -> u64 {
        let (kind, id) = match self {
            Source::Listener => (Self::LISTENER, 0),
            Source::DomainException => (Self::DOMAIN_EXCEPTION, 0),
            Source::Markers => (Self::MARKERS, 0),
            Source::DumpState => (Self::DUMP_STATE, 0),
            Source::Socket(connection) => (Self::SOCKET, u64::from(connection.0)),
            Source::Guest(domain) => (Self::GUEST, u64::from(domain.0)),
        };
        (kind << Self::KIND_SHIFT) | id
    }

    pub fn from_token(token: u64) -> Option<Source> {
        let id = token & u64::from(u32::MAX);
        match token >> Self::KIND_SHIFT {
            Self::LISTENER => Some(Source::Listener),
            Self::DOMAIN_EXCEPTION => Some(Source::DomainException),
            Self::MARKERS => Some(Source::Markers),
            Self::DUMP_STATE => Some(Source::DumpState),
            Self::SOCKET => Some(Source::Socket(ConnectionId(u32::try_from(id).ok()?))),
            Self::GUEST => Some(Source::Guest(DomainId(u16::try_from(id).ok()?))),
            _ => None,
        }
    }
}

impl Server {
    /// Binds the socket (replacing a stale one; or serves `inherited_listener`, the one a
    /// live update's previous instance left open) and prepares the run directory; with
    /// `use_io_uring`, batches socket reads and writes where the kernel allows it.
    pub fn new(
        engine: Engine,
        socket_path: &Path,
        run_directory: &Path,
        use_io_uring: bool,
        inherited_listener: Option<UnixListener>,
    ) -> io::Result<Server> {
        std::fs::create_dir_all(simulation::domains_directory(run_directory))?;
        let epoll = Arc::new(Epoll::new()?);
        let sockets = match inherited_listener {
            Some(listener) => SocketClients::with_listener(&epoll, listener, use_io_uring)?,
            None => SocketClients::bind(&epoll, socket_path, use_io_uring)?,
        };
        let domain_exception = notification_fifo(
            &epoll,
            &simulation::domain_exception_fifo(run_directory),
            Source::DomainException,
        )?;
        let dump_state = notification_fifo(
            &epoll,
            &simulation::dump_state_fifo(run_directory),
            Source::DumpState,
        )?;
        let markers = MarkerWatcher::new(&epoll, run_directory, Source::Markers.token());
        let now = Instant::now();
        let port = LinuxPort::new(run_directory, Arc::clone(&epoll));
        // FIFOs lose no notification: no sweep.
        let host = RingHost::new(engine, port, HostSettings::default());
        let mut server = Server {
            host,
            rings_have_work: false,
            epoll,
            sockets,
            domain_exception,
            dump_state,
            markers,
            last_marker_scan: now,
            ready: Vec::with_capacity(sys::EVENTS_PER_WAIT),
            restart_arguments: Vec::new(),
        };
        // Watch the domain directories, and take note of markers left from before.
        server.rescan_domain_markers();
        Ok(server)
    }

    /// The arguments a live update without `-c` gives the new executable (and `-U`).
    pub fn set_restart_arguments(&mut self, arguments: Vec<String>) {
        self.restart_arguments = arguments;
    }

    /// Serves forever (until a fatal error of the listening socket or of epoll).
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            self.round()?;
        }
    }

    /// One iteration: wait, read, let the engine work, write.
    fn round(&mut self) -> io::Result<()> {
        // Work left by the bounded ring passes of the last round, or socket input the engine
        // may take now, has no event to wake us.
        let timeout = if self.rings_have_work
            || self.host.engine().has_output_ready()
            || self.sockets.has_input_to_offer(&self.host)
        {
            0
        } else {
            TICK_INTERVAL_MILLISECONDS
        };
        let mut ready = core::mem::take(&mut self.ready);
        self.epoll.wait(&mut ready, timeout as i32)?;

        let mut markers_changed = false;
        let mut domain_exception = false;
        let mut dump_requested = false;
        for readiness in &ready {
            match Source::from_token(readiness.token) {
                Some(Source::Listener) if readiness.readable => {
                    self.sockets.accept_clients(&mut self.host);
                }
                Some(Source::DomainException) if readiness.readable => {
                    let _ = self.domain_exception.drain();
                    domain_exception = true;
                }
                Some(Source::Markers) if readiness.readable => markers_changed = true,
                Some(Source::DumpState) if readiness.readable => {
                    let _ = self.dump_state.drain();
                    dump_requested = true;
                }
                Some(Source::Socket(connection)) => {
                    if readiness.readable {
                        self.sockets.readable(connection);
                    } else if readiness.writable {
                        // Its output is written at the end of the round.
                        self.sockets.touch(connection);
                    }
                }
                Some(Source::Guest(domain)) if readiness.readable => {
                    if let Some(guest) = self.host.ring(domain) {
                        let _ = guest.to_server.drain();
                        self.host.notified(domain);
                    }
                }
                _ => {}
            }
        }
        self.ready = ready;
        self.sockets.read_sockets(&mut self.host);
        self.sockets.offer_blocked_sockets(&mut self.host);
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
        self.sockets.finish_touched_sockets(&mut self.host);
        if dump_requested {
            self.save_state();
        }
        // Last, with every reply of the round sent and no peeked byte left in a socket (only
        // while a start waits: a deadline exists then).
        if self.host.engine().live_update_deadline_ms().is_some()
            && let LiveUpdatePoll::Ready(plan) = self.host.poll_live_update()
        {
            let reason = self.replace_process(&plan);
            // Only a failure comes back: the start is answered with it, next round.
            self.host.live_update_failed(plan, &reason);
        }
        Ok(())
    }

    /// Carries out a live update (C `lu_activate_binary()`): checks the new executable as
    /// C's `-f` does, writes the state with the sockets' descriptors to
    /// `$RUNDIR/state_dump`, keeps the sockets open across `execve(2)` and replaces this
    /// process with the executable and `-U`. Returns only on failure, with the reason.
    fn replace_process(&mut self, plan: &LiveUpdatePlan) -> String {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let Some(executable) = plan.executable.as_deref() else {
            return "No new executable.".into();
        };
        let executable = Path::new(std::ffi::OsStr::from_bytes(executable));
        match std::fs::metadata(executable) {
            Err(_) => return "File not accessible.".into(),
            Ok(metadata) if metadata.permissions().mode() & 0o111 == 0 => {
                return "File not executable.".into();
            }
            Ok(_) => {}
        }
        let arguments = restart_arguments(plan.command_line.as_deref(), &self.restart_arguments);
        let (listener_fd, clients) = self.sockets.descriptors();
        let front_end = DaemonState {
            ports: self.ring_ports(),
            listener_fd,
            clients: clients
                .into_iter()
                .map(|client| (client.connection, (client.descriptor, client.unread_input)))
                .collect(),
        };
        let stream = match self.host.write_live_update_state(plan, &front_end) {
            Ok(stream) => stream,
            Err(error) => return format!("cannot write the state: {error}"),
        };
        let target = simulation::state_dump_file(self.host.port().run_directory());
        if let Err(error) = std::fs::write(&target, &stream) {
            return format!("cannot write {}: {error}", target.display());
        }
        log::warn!(
            "live-update: starting {} {} ({} bytes of state)",
            executable.display(),
            arguments.join(" "),
            stream.len()
        );
        let error = match self.sockets.inherit_across_exec(true) {
            Ok(()) => std::process::Command::new(executable)
                .args(&arguments)
                .exec(),
            Err(error) => error,
        };
        // Still here: the old instance serves on.
        if let Err(error) = self.sockets.inherit_across_exec(false) {
            log::warn!("live-update: cannot close the sockets on exec again: {error}");
        }
        let _ = std::fs::remove_file(&target);
        format!("cannot start {}: {error}", executable.display())
    }

    /// The simulated rings' event-channel ports, for a saved state.
    fn ring_ports(&self) -> BTreeMap<DomainId, u32> {
        self.host
            .served_rings()
            .map(|(domain, ring)| (domain, ring.port))
            .collect()
    }

    /// Writes the state to `$RUNDIR/state_dump` (through a temporary file renamed into
    /// place, so that a reader never sees half a stream); failures are logged.
    fn save_state(&mut self) {
        let run_directory = self.host.port().run_directory().to_path_buf();
        let target = simulation::state_dump_file(&run_directory);
        let ports = DaemonState {
            ports: self.ring_ports(),
            listener_fd: -1,
            clients: BTreeMap::new(),
        };
        let stream = match self.host.write_state(&ports) {
            Ok(stream) => stream,
            Err(error) => {
                log::error!("cannot save the state: {error}");
                return;
            }
        };
        let temporary = target.with_extension("new");
        let written =
            std::fs::write(&temporary, &stream).and_then(|()| std::fs::rename(&temporary, &target));
        match written {
            Ok(()) => log::warn!(
                "state saved to {} ({} bytes)",
                target.display(),
                stream.len()
            ),
            Err(error) => log::error!("cannot write {}: {error}", target.display()),
        }
    }

    /// Takes over the connections of a restored engine ([`Engine::from_state`]): each
    /// ring's simulated page is mapped again (its indices kept) and served from where it
    /// was; a socket client whose descriptor a live update left open is served on, with
    /// its unsent replies; other socket clients belonged to the old process and are closed.
    /// Each descriptor is taken at most once (`adopted`), before any socket of this
    /// process's own is opened (see [`sys::inherited_socket`]).
    pub fn restore_connections(&mut self, state: RestoredState, adopted: &mut BTreeSet<i32>) {
        for restored in state.connections {
            match restored.endpoint {
                RestoredEndpoint::Socket { socket_fd } => {
                    let adoption = if socket_fd < 0 || !adopted.insert(socket_fd) {
                        Err(io::Error::other("no descriptor"))
                    } else {
                        sys::inherited_socket(socket_fd).and_then(|descriptor| {
                            self.sockets.adopt_client(
                                restored.connection,
                                UnixStream::from(descriptor),
                                restored.unread_input.clone(),
                            )
                        })
                    };
                    match adoption {
                        Ok(()) => log::info!("{:?}: socket client restored", restored.connection),
                        Err(error) => {
                            log::info!(
                                "{:?}: socket client not restored ({error})",
                                restored.connection
                            );
                            self.host.with_engine(|engine, platform| {
                                engine.close_connection(platform, restored.connection)
                            });
                        }
                    }
                }
                RestoredEndpoint::Ring {
                    domain,
                    event_channel_port,
                    ..
                } => match self.host.port_mut().attach(domain, 0, event_channel_port) {
                    Ok(ring) => {
                        self.host
                            .adopt_restored(domain, ring, restored.unread_input);
                        log::info!("domain {domain}: ring restored");
                    }
                    Err(error) => {
                        // As C: the domain is kept (its death is still reported), its
                        // connection no longer served.
                        log::warn!("domain {domain}: ring not restored ({error})");
                        self.host
                            .engine_mut()
                            .fail_connection(restored.connection, ConnectionFailure::Communication);
                    }
                },
            }
        }
    }

    /// Moves bytes between the served rings and the engine (the ring host's rounds); output
    /// queued for sockets meanwhile is written at the end of the round.
    fn service_rings(&mut self) {
        let sockets = &mut self.sockets;
        self.rings_have_work = self.host.serve(&mut |connection| sockets.touch(connection));
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
            MarkerChanges::Domains(domains) => {
                for domain in domains {
                    let markers =
                        simulation::domain_markers(self.host.port().run_directory(), domain);
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
        let mut gone: BTreeSet<DomainId> = port.dead_domains.clone();
        gone.extend(port.shutdown_domains.iter().copied());
        for markers in found {
            gone.remove(&markers.domain);
            self.apply_domain_markers(markers);
        }
        for domain in gone {
            self.apply_domain_markers(DomainMarkers {
                domain,
                shutdown: false,
                dead: false,
            });
        }
    }

    /// Reports one domain's simulated shutdown or death to the engine, once; a removed marker
    /// means the domid was recreated: it exists again.
    fn apply_domain_markers(&mut self, marker: DomainMarkers) {
        let domain = marker.domain;
        let introduced = self.host.engine().domain_connection(domain).is_some();
        if marker.dead {
            if self.host.port_mut().dead_domains.insert(domain) {
                log::info!("domain {domain}: dead (simulated)");
                if introduced || self.host.has_ring(domain) {
                    self.host.domain_died(domain);
                }
            }
        } else {
            self.host.port_mut().dead_domains.remove(&domain);
        }
        if !marker.shutdown {
            self.host.port_mut().shutdown_domains.remove(&domain);
        } else if !marker.dead && self.host.port_mut().shutdown_domains.insert(domain) && introduced
        {
            log::info!("domain {domain}: shut down (simulated)");
            self.host.domain_shutdown(domain);
        }
    }
}

/// The daemon's answers for a saved state: the simulated rings' ports, and for a live
/// update the sockets' descriptors (kept open across `execve(2)`) with the bytes each
/// client sent that the engine has not taken yet. No unique ids without a hypervisor.
struct DaemonState<'a> {
    ports: BTreeMap<DomainId, u32>,
    /// -1 for a dump: the socket does not outlive this process then.
    listener_fd: i32,
    clients: BTreeMap<ConnectionId, (i32, &'a [u8])>,
}

impl FrontEndState for DaemonState<'_> {
    fn event_channel_port(&self, domain: DomainId) -> u32 {
        self.ports.get(&domain).copied().unwrap_or(0)
    }

    fn socket_fd(&self, connection: ConnectionId) -> i32 {
        self.clients
            .get(&connection)
            .map_or(-1, |(descriptor, _)| *descriptor)
    }

    fn unread_input(&self, connection: ConnectionId) -> &[u8] {
        self.clients
            .get(&connection)
            .map_or(&[], |(_, unread)| unread)
    }

    fn global(&self) -> GlobalData {
        GlobalData {
            socket_fd: self.listener_fd,
            event_channel_fd: -1,
        }
    }
}

/// The new executable's arguments (C `lu_activate_binary()`): `-c`'s text split at blanks,
/// else this process's own; `-U` added unless there.
fn restart_arguments(command_line: Option<&[u8]>, own: &[String]) -> Vec<String> {
    let mut arguments: Vec<String> = match command_line {
        Some(text) => String::from_utf8_lossy(text)
            .split([' ', '\t'])
            .filter(|word| !word.is_empty())
            .map(String::from)
            .collect(),
        None => own.to_vec(),
    };
    if !arguments
        .iter()
        .any(|argument| argument == "-U" || argument == "--live-update")
    {
        arguments.push("-U".into());
    }
    arguments
}

#[cfg(test)]
mod tests;

/// Makes the FIFO at `path` (the simulated-guest convention, `daemon/README.md`) and
/// registers it for reading under `source`.
fn notification_fifo(
    epoll: &Arc<Epoll>,
    path: &Path,
    source: Source,
) -> io::Result<Registered<NotificationFifo>> {
    xenstore_client::sys::make_fifo(path, 0o600)?;
    let mut fifo = Registered::new(epoll, NotificationFifo::open(path)?, source.token());
    fifo.set_interest(Some(Interest::READ))?;
    Ok(fifo)
}
