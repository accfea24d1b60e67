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

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xenstore_engine::migration::{FrontEndState, RestoredEndpoint, RestoredState};
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
    /// Binds the socket (replacing a stale one) and prepares the run directory; with
    /// `use_io_uring`, batches socket reads and writes where the kernel allows it.
    pub fn new(
        engine: Engine,
        socket_path: &Path,
        run_directory: &Path,
        use_io_uring: bool,
    ) -> io::Result<Server> {
        std::fs::create_dir_all(simulation::domains_directory(run_directory))?;
        let epoll = Arc::new(Epoll::new()?);
        let sockets = SocketClients::bind(&epoll, socket_path, use_io_uring)?;
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
        Ok(())
    }

    /// Writes the state to `$RUNDIR/state_dump` (through a temporary file renamed into
    /// place, so that a reader never sees half a stream); failures are logged.
    fn save_state(&mut self) {
        let run_directory = self.host.port().run_directory().to_path_buf();
        let target = simulation::state_dump_file(&run_directory);
        let ports = RingPorts {
            ports: self
                .host
                .served_rings()
                .map(|(domain, ring)| (domain, ring.port))
                .collect(),
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
    /// was; socket clients belonged to the old process and are closed.
    pub fn restore_connections(&mut self, state: RestoredState) {
        for restored in state.connections {
            match restored.endpoint {
                RestoredEndpoint::Socket { .. } => {
                    self.host.with_engine(|engine, platform| {
                        engine.close_connection(platform, restored.connection)
                    });
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

/// The daemon's answers for a saved state: the simulated rings' ports (no descriptor
/// survives the process, no unique ids without a hypervisor).
struct RingPorts {
    ports: std::collections::BTreeMap<DomainId, u32>,
}

impl FrontEndState for RingPorts {
    fn event_channel_port(&self, domain: DomainId) -> u32 {
        self.ports.get(&domain).copied().unwrap_or(0)
    }
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
