//! The engine's [`Platform`] on Linux: simulated guests' rings as shared files, event channels as FIFOs.
//!
//! `connect_domain` is what `XS_INTRODUCE` ends in: it maps `$RUNDIR/domains/<domid>/ring`
//! (the page grant reference 1 would map on Xen), opens the domain's notification FIFOs, resets
//! the ring as C xenstored does at introduction and advertises the server features. The event
//! loop then moves bytes between each [`GuestRing`] and the engine. See `client/src/simulation.rs`
//! for the file convention.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use xenstore_engine::ring::Ring;
use xenstore_engine::{ConnectionFailure, DomainId, Platform, StoreError, StoreResult};

use crate::server::Source;
use crate::sys::{Epoll, Interest, Registered};
use xenstore_client::simulation::{DomainFiles, NotificationFifo};
use xenstore_client::sys::SharedPage;

/// A mapped guest ring and its notification FIFOs.
pub struct GuestRing {
    pub domain: DomainId,
    pub page: SharedPage,
    /// Registered in the event loop's epoll set while the ring is served (not once failed).
    pub to_server: Registered<NotificationFifo>,
    pub to_guest: NotificationFifo,
    /// The guest's event-channel port: the value carried by notifications.
    pub port: u32,
    /// Request bytes taken from the ring that the engine has not accepted yet.
    pub pending_input: Vec<u8>,
    /// Set once the ring broke the protocol: it is ignored until the domain goes away
    /// (reference §6.4, C `ignore_connection()`).
    pub failure: Option<ConnectionFailure>,
    /// Whether `server_features` holds the engine's per-domain set yet.
    pub features_from_engine: bool,
}

impl GuestRing {
    /// The ring protocol over this page.
    pub fn ring(&self) -> Ring<'_, SharedPage> {
        Ring::new(&self.page)
    }

    /// Signals the guest's event channel.
    pub fn notify(&self) {
        if let Err(error) = self.to_guest.notify(self.port) {
            log::warn!("domain {}: cannot notify: {error}", self.domain);
        }
    }

    /// Stops serving the ring; with `report` (the domain has the ERROR feature, which C-HEAD
    /// requires before it writes the field) tells the guest why in the `error` field.
    pub fn mark_failed(&mut self, failure: ConnectionFailure, report: bool) {
        if self.failure.is_none() {
            log::warn!(
                "domain {}: ring ignored from now on ({failure:?})",
                self.domain
            );
            if report {
                self.ring().set_error(failure.ring_error_code());
            }
            self.pending_input.clear();
            self.failure = Some(failure);
            // An ignored ring's notifications no longer wake the event loop.
            if let Err(error) = self.to_server.set_interest(None) {
                log::warn!(
                    "domain {}: cannot stop watching its FIFO: {error}",
                    self.domain
                );
            }
            self.notify();
        }
    }
}

/// The daemon's platform: rings, simulated domain states, the clock.
pub struct LinuxPlatform {
    run_directory: PathBuf,
    /// The event loop's epoll set: a connected ring's `to-server` FIFO is registered in it.
    epoll: Arc<Epoll>,
    // The domain sets below are keyed by bare `u16` ids because the serving loop
    // (`server.rs`) keys its domains that way for now.
    /// Introduced domains whose ring is mapped.
    pub rings: BTreeMap<u16, GuestRing>,
    /// Domains whose death the simulation announced (they no longer "exist").
    pub dead_domains: BTreeSet<u16>,
    /// Domains whose shutdown has been reported to the engine.
    pub shutdown_domains: BTreeSet<u16>,
    started: Instant,
    /// Domains connected or disconnected since the event loop last cleared this set; the loop
    /// uses it to notice that the engine replaced or dropped a ring while serving it.
    pub changed_domains: BTreeSet<u16>,
    /// Rings with work for the event loop: notified by their guest or just connected.
    pub needs_service: BTreeSet<u16>,
}

impl LinuxPlatform {
    pub fn new(run_directory: &Path, epoll: Arc<Epoll>) -> LinuxPlatform {
        LinuxPlatform {
            run_directory: run_directory.to_path_buf(),
            epoll,
            rings: BTreeMap::new(),
            dead_domains: BTreeSet::new(),
            shutdown_domains: BTreeSet::new(),
            started: Instant::now(),
            changed_domains: BTreeSet::new(),
            needs_service: BTreeSet::new(),
        }
    }

    pub fn run_directory(&self) -> &Path {
        &self.run_directory
    }

    fn map_ring(&self, domain: DomainId, remote_port: u32) -> io::Result<GuestRing> {
        let files = DomainFiles::new(&self.run_directory, domain);
        if files.dead_marker().exists() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "domain is dead"));
        }
        let page = SharedPage::map(&files.ring())?;
        let to_server = Registered::new(
            &self.epoll,
            NotificationFifo::open(&files.to_server())?,
            Source::Guest(domain.0).token(),
        );
        let to_guest = NotificationFifo::open(&files.to_guest())?;
        Ok(GuestRing {
            domain,
            page,
            to_server,
            to_guest,
            port: remote_port,
            pending_input: Vec::new(),
            failure: None,
            features_from_engine: false,
        })
    }
}

/// The engine's answer when setting up a simulated ring fails.
fn store_error(error: &io::Error) -> StoreError {
    match error.kind() {
        io::ErrorKind::NotFound => StoreError::NoEntry,
        io::ErrorKind::PermissionDenied => StoreError::AccessDenied,
        _ => StoreError::Invalid,
    }
}

impl Platform for LinuxPlatform {
    fn connect_domain(
        &mut self,
        domain: DomainId,
        _ring_frame: u64,
        remote_port: u32,
    ) -> StoreResult<()> {
        // The frame number is ignored, as C xenstored ignores it and maps grant ref 1.
        let mut guest_ring = self.map_ring(domain, remote_port).map_err(|error| {
            log::warn!("domain {domain}: cannot map its simulated ring: {error}");
            store_error(&error)
        })?;
        // A re-introduction keeps an earlier protocol failure: C never revives an ignored
        // connection (reference §6.4). Dropping the previous ring unregisters its FIFO.
        let previous_failure = self
            .rings
            .get(&domain.0)
            .and_then(|previous| previous.failure);
        if previous_failure.is_none() {
            // The "event channel" is bound: the loop wakes when the guest notifies.
            guest_ring
                .to_server
                .set_interest(Some(Interest::READ))
                .map_err(|error| {
                    log::warn!("domain {domain}: cannot watch its FIFO: {error}");
                    store_error(&error)
                })?;
        }
        guest_ring.failure = previous_failure;
        self.rings.remove(&domain.0);
        // C-HEAD `introduce_domain()`/`domain_conn_reset()`: zero the indices and answer a
        // pending RECONNECT. The features start empty: the event loop writes the engine's
        // per-domain set right after this request and then notifies (4.18+ notifies after the
        // reset); the ring document allows adding bits at any time, never clearing them.
        guest_ring.ring().server_reset(0);
        self.dead_domains.remove(&domain.0);
        self.shutdown_domains.remove(&domain.0);
        log::info!("domain {domain}: ring connected, port {remote_port}");
        self.changed_domains.insert(domain.0);
        self.needs_service.insert(domain.0);
        self.rings.insert(domain.0, guest_ring);
        Ok(())
    }

    fn disconnect_domain(&mut self, domain: DomainId) {
        self.changed_domains.insert(domain.0);
        if self.rings.remove(&domain.0).is_some() {
            log::info!("domain {domain}: ring disconnected");
        }
    }

    fn domain_exists(&mut self, domain: DomainId) -> bool {
        // No hypervisor: every ordinary domid exists unless the simulation killed it.
        domain.0 < DomainId::FIRST_RESERVED && !self.dead_domains.contains(&domain.0)
    }

    fn now_milliseconds(&mut self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
