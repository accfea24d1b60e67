//! The daemon's [`RingPort`]: simulated guests' rings as shared files, event channels as FIFOs.
//!
//! Attaching a ring is what `XS_INTRODUCE` ends in: it maps `$RUNDIR/domains/<domid>/ring`
//! (the page grant reference 1 would map on Xen) and opens the domain's notification FIFOs;
//! the ring host resets the ring as C xenstored does at introduction and writes the server
//! features. See `client/src/simulation.rs` for the file convention.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use xenstore_engine::ring_host::RingPort;
use xenstore_engine::{DomainId, StoreError, StoreResult};

use crate::server::Source;
use crate::sys::{Epoll, Interest, Registered};
use xenstore_client::simulation::{DomainFiles, NotificationFifo};
use xenstore_client::sys::SharedPage;

/// A mapped guest ring and its notification FIFOs.
pub struct GuestRing {
    pub domain: DomainId,
    pub page: SharedPage,
    /// Registered in the event loop's epoll set while the ring is served (not once ignored).
    pub to_server: Registered<NotificationFifo>,
    pub to_guest: NotificationFifo,
    /// The guest's event-channel port: the value carried by notifications.
    pub port: u32,
}

/// The daemon's port: the run directory's rings, simulated domain states, the clock.
pub struct LinuxPort {
    run_directory: PathBuf,
    /// The event loop's epoll set: an attached ring's `to-server` FIFO is registered in it.
    epoll: Arc<Epoll>,
    /// Domains whose death the simulation announced (they no longer "exist").
    pub dead_domains: BTreeSet<DomainId>,
    /// Domains whose shutdown has been reported to the engine.
    pub shutdown_domains: BTreeSet<DomainId>,
    started: Instant,
}

impl LinuxPort {
    pub fn new(run_directory: &Path, epoll: Arc<Epoll>) -> LinuxPort {
        LinuxPort {
            run_directory: run_directory.to_path_buf(),
            epoll,
            dead_domains: BTreeSet::new(),
            shutdown_domains: BTreeSet::new(),
            started: Instant::now(),
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
        let mut to_server = Registered::new(
            &self.epoll,
            NotificationFifo::open(&files.to_server())?,
            Source::Guest(domain).token(),
        );
        // The "event channel" is bound: the loop wakes when the guest notifies.
        to_server.set_interest(Some(Interest::READ))?;
        let to_guest = NotificationFifo::open(&files.to_guest())?;
        Ok(GuestRing {
            domain,
            page,
            to_server,
            to_guest,
            port: remote_port,
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

impl RingPort for LinuxPort {
    type Ring = GuestRing;
    type Memory = SharedPage;

    fn memory(ring: &GuestRing) -> &SharedPage {
        &ring.page
    }

    fn attach(
        &mut self,
        domain: DomainId,
        _ring_frame: u64,
        remote_port: u32,
    ) -> StoreResult<GuestRing> {
        // The frame number is ignored, as C xenstored ignores it and maps grant ref 1. A
        // re-introduction keeps an earlier protocol failure: the engine keeps the
        // connection's failure, so the new ring is ignored again when first served.
        let ring = self.map_ring(domain, remote_port).map_err(|error| {
            log::warn!("domain {domain}: cannot map its simulated ring: {error}");
            store_error(&error)
        })?;
        self.dead_domains.remove(&domain);
        self.shutdown_domains.remove(&domain);
        log::info!("domain {domain}: ring connected, port {remote_port}");
        Ok(ring)
    }

    fn detach(&mut self, domain: DomainId, _ring: GuestRing) {
        // Dropping the ring unregisters its FIFO and unmaps the page.
        log::info!("domain {domain}: ring disconnected");
    }

    fn notify(&mut self, ring: &GuestRing) {
        if let Err(error) = ring.to_guest.notify(ring.port) {
            log::warn!("domain {}: cannot notify: {error}", ring.domain);
        }
    }

    fn ignore(&mut self, domain: DomainId, ring: &mut GuestRing) {
        // An ignored ring's notifications no longer wake the event loop.
        if let Err(error) = ring.to_server.set_interest(None) {
            log::warn!("domain {domain}: cannot stop watching its FIFO: {error}");
        }
    }

    fn domain_exists(&mut self, domain: DomainId) -> bool {
        // No hypervisor: every ordinary domid exists unless the simulation killed it.
        domain.0 < DomainId::FIRST_RESERVED && !self.dead_domains.contains(&domain)
    }

    fn now_nanoseconds(&mut self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
