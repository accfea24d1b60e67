//! The simulated-guest convention: how any program acts as Xen domain N without Xen.
//!
//! Layout under the run directory (`daemon/README.md` describes it for other implementers):
//!
//! ```text
//! $RUNDIR/socket                   the store's Unix socket (unless --socket / XENSTORED_PATH)
//! $RUNDIR/dom-exc                  FIFO: "some domain changed state" (VIRQ_DOM_EXC)
//! $RUNDIR/domains/<domid>/ring     4096-byte file = struct xenstore_domain_interface (grant ref 1)
//! $RUNDIR/domains/<domid>/to-server  FIFO: guest -> store event-channel notifications
//! $RUNDIR/domains/<domid>/to-guest   FIFO: store -> guest event-channel notifications
//! $RUNDIR/domains/<domid>/shutdown   exists while the domain is shut down
//! $RUNDIR/domains/<domid>/dead       exists once the domain is dead
//! ```
//!
//! A notification is one 4-byte little-endian port number: the guest's port, i.e. the
//! `remote_port` the toolstack passed in `XS_INTRODUCE` (the guest notifies its own port; the
//! store notifies its local port, which the guest sees as its own port becoming pending).
//! Readers must accept any number of queued notifications; what matters is that one arrived.
//! Both ends open FIFOs read-write and non-blocking, so that no open blocks, a FIFO never
//! reports end-of-file, and a notification to a peer that is not listening is simply queued
//! (or dropped when the pipe is full, as repeated event-channel notifications coalesce).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use xenstore_engine::DomainId;
use xenstore_engine::ring::{PAGE_SIZE_BYTES, RingMemory, offset};

use crate::sys;

/// The default run directory (`XEN_RUN_STORED` on Debian).
pub const DEFAULT_RUN_DIRECTORY: &str = "/var/run/xenstored";

/// `$RUNDIR/domains`.
pub fn domains_directory(run_directory: &Path) -> PathBuf {
    run_directory.join("domains")
}

/// `$RUNDIR/dom-exc`: the FIFO that plays `VIRQ_DOM_EXC`.
pub fn domain_exception_fifo(run_directory: &Path) -> PathBuf {
    run_directory.join("dom-exc")
}

/// `$RUNDIR/dump-state`: the FIFO that asks the daemon to write its state
/// (docs/migration-stream.md, "The daemon").
pub fn dump_state_fifo(run_directory: &Path) -> PathBuf {
    run_directory.join("dump-state")
}

/// `$RUNDIR/state_dump`: where the daemon writes its state and where `-U` reads it (C
/// xenstored's file name).
pub fn state_dump_file(run_directory: &Path) -> PathBuf {
    run_directory.join("state_dump")
}

/// The files of one simulated domain.
#[derive(Clone, Debug)]
pub struct DomainFiles {
    pub directory: PathBuf,
}

impl DomainFiles {
    /// The files of `domain` under `run_directory`.
    pub fn new(run_directory: &Path, domain: DomainId) -> DomainFiles {
        DomainFiles {
            directory: domains_directory(run_directory).join(domain.to_string()),
        }
    }

    pub fn ring(&self) -> PathBuf {
        self.directory.join("ring")
    }

    pub fn to_server(&self) -> PathBuf {
        self.directory.join("to-server")
    }

    pub fn to_guest(&self) -> PathBuf {
        self.directory.join("to-guest")
    }

    pub fn dead_marker(&self) -> PathBuf {
        self.directory.join("dead")
    }

    pub fn shutdown_marker(&self) -> PathBuf {
        self.directory.join("shutdown")
    }

    /// Guest side: creates the domain afresh — a zeroed ring page holding `port` in
    /// `evtchn_port`, both FIFOs, and no death or shutdown marker.
    pub fn create(&self, port: u32) -> io::Result<()> {
        std::fs::create_dir_all(&self.directory)?;
        for marker in [self.dead_marker(), self.shutdown_marker()] {
            match std::fs::remove_file(marker) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        let mut page = vec![0u8; PAGE_SIZE_BYTES];
        if let Some(field) =
            page.get_mut(offset::EVENT_CHANNEL_PORT..offset::EVENT_CHANNEL_PORT + 4)
        {
            field.copy_from_slice(&port.to_le_bytes());
        }
        // Write a new file and rename it, so that a store still mapping the old page keeps
        // its own copy instead of seeing the indices jump under it.
        let temporary = self.directory.join("ring.new");
        std::fs::write(&temporary, &page)?;
        std::fs::rename(&temporary, self.ring())?;
        sys::make_fifo(&self.to_server(), 0o600)?;
        sys::make_fifo(&self.to_guest(), 0o600)?;
        Ok(())
    }
}

/// One end of a notification FIFO.
pub struct NotificationFifo {
    file: File,
}

impl NotificationFifo {
    /// Opens an existing FIFO read-write and non-blocking (see the module comment for why).
    pub fn open(path: &Path) -> io::Result<NotificationFifo> {
        let file = File::options()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)?;
        // A regular file in its place would always poll readable: refuse it.
        use std::os::unix::fs::FileTypeExt;
        if !file.metadata()?.file_type().is_fifo() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a FIFO", path.display()),
            ));
        }
        Ok(NotificationFifo { file })
    }

    /// Sends one notification carrying `port`; a full pipe already holds a pending one.
    pub fn notify(&self, port: u32) -> io::Result<()> {
        match (&self.file).write(&port.to_le_bytes()) {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Reads every queued notification; returns how many whole ones there were.
    pub fn drain(&self) -> io::Result<usize> {
        let mut buffer = [0u8; 4096];
        let mut total_bytes = 0;
        loop {
            match (&self.file).read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => total_bytes += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
        Ok(total_bytes / 4)
    }
}

impl AsFd for NotificationFifo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// The state a simulated domain's markers announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainMarkers {
    pub domain: DomainId,
    pub shutdown: bool,
    pub dead: bool,
}

/// The markers of one domain (none when its directory does not exist).
pub fn domain_markers(run_directory: &Path, domain: DomainId) -> DomainMarkers {
    let files = DomainFiles::new(run_directory, domain);
    DomainMarkers {
        domain,
        shutdown: files.shutdown_marker().exists(),
        dead: files.dead_marker().exists(),
    }
}

/// Every domain directory under `$RUNDIR/domains` that carries a marker.
pub fn scan_markers(run_directory: &Path) -> Vec<DomainMarkers> {
    let Ok(entries) = std::fs::read_dir(domains_directory(run_directory)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(domid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u16>().ok())
        else {
            continue;
        };
        let markers = domain_markers(run_directory, DomainId(domid));
        if markers.shutdown || markers.dead {
            found.push(markers);
        }
    }
    found
}

/// Guest side: announces a state change by creating `marker` and poking `$RUNDIR/dom-exc`.
pub fn announce_state_change(run_directory: &Path, marker: &Path) -> io::Result<()> {
    if let Some(parent) = marker.parent() {
        std::fs::create_dir_all(parent)?;
    }
    File::create(marker)?;
    // The store re-scans periodically anyway, so a missing FIFO is not an error.
    if let Ok(fifo) = NotificationFifo::open(&domain_exception_fifo(run_directory)) {
        fifo.notify(0)?;
    }
    Ok(())
}

/// A ring page read through any [`RingMemory`], for diagnostics.
pub fn describe_page(page: &dyn RingMemory) -> String {
    format!(
        "req_cons={} req_prod={} rsp_cons={} rsp_prod={} features={:#x} connection={} error={}",
        page.load_u32_acquire(offset::REQUEST_CONSUMER),
        page.load_u32_acquire(offset::REQUEST_PRODUCER),
        page.load_u32_acquire(offset::RESPONSE_CONSUMER),
        page.load_u32_acquire(offset::RESPONSE_PRODUCER),
        page.load_u32_acquire(offset::SERVER_FEATURES),
        page.load_u32_acquire(offset::CONNECTION),
        page.load_u32_acquire(offset::ERROR),
    )
}
