//! Noticing simulated shutdowns and deaths without rescanning every domain.
//!
//! A domain announces its state with marker files (`$RUNDIR/domains/<domid>/{shutdown,dead}`,
//! see `client/src/simulation.rs`). Rescanning all domain directories costs two path lookups per domain,
//! milliseconds with a thousand domains, so the store instead keeps an `inotify(7)` watch on
//! `domains/` and on every domain directory: an event names the domain whose markers changed,
//! and only that domain's markers are looked at (as Xen 4.21's `XEN_DOMCTL_get_domain_state`
//! reports only the domains that changed). A full rescan remains for the start, for a lost
//! event queue, and — every second, as before — whenever a watch could not be set up (no
//! inotify, or the watch limit is reached), so the convention still holds without inotify.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sys::{Epoll, Inotify, Interest, Registered};
use rustix::fs::inotify::{ReadFlags, WatchFlags};
use rustix::io::Errno;
use xenstore_client::simulation::{self, DomainFiles, DomainMarkers};
use xenstore_engine::DomainId;

/// What a domain directory (and `domains/` itself) is watched for.
const WATCH_MASK: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR);

/// Which domains' markers may have changed since the last look.
#[derive(Debug, PartialEq, Eq)]
pub enum MarkerChanges {
    /// These domains (possibly none).
    Domains(BTreeSet<DomainId>),
    /// Events were lost or a directory moved: look at every domain.
    Everything,
}

/// The inotify watches over the simulated domains' directories.
pub struct MarkerWatcher {
    run_directory: PathBuf,
    /// `None` when inotify is unavailable: every look is a full rescan.
    inotify: Option<Registered<Inotify>>,
    domains_watch: Option<i32>,
    domain_watches: BTreeMap<i32, DomainId>,
    /// False while some directory is not watched: full rescans are then needed periodically.
    complete: bool,
}

impl MarkerWatcher {
    /// Sets up inotify (registered in `epoll` under `token`); without it, the watcher asks
    /// for periodic rescans. Call [`MarkerWatcher::rescan`] to watch the directories.
    pub fn new(epoll: &Arc<Epoll>, run_directory: &Path, token: u64) -> MarkerWatcher {
        let inotify = Inotify::new().and_then(|inotify| {
            let mut registered = Registered::new(epoll, inotify, token);
            registered.set_interest(Some(Interest::READ))?;
            Ok(registered)
        });
        let inotify = match inotify {
            Ok(inotify) => Some(inotify),
            Err(error) => {
                log::warn!("no inotify ({error}): domain markers are rescanned every second");
                None
            }
        };
        MarkerWatcher {
            run_directory: run_directory.to_path_buf(),
            inotify,
            domains_watch: None,
            domain_watches: BTreeMap::new(),
            complete: false,
        }
    }

    /// Whether some directory is not watched, so that only periodic rescans notice changes.
    pub fn needs_periodic_rescan(&self) -> bool {
        !self.complete
    }

    /// Watches `domains/` and every domain directory (again), then reads every domain's
    /// markers. Returns the state of every domain directory, markers or not.
    pub fn rescan(&mut self) -> Vec<DomainMarkers> {
        let domains_directory = simulation::domains_directory(&self.run_directory);
        self.complete = false;
        if let Some(inotify) = &self.inotify {
            match inotify.add_watch(&domains_directory, WATCH_MASK) {
                Ok(watch) => {
                    self.domains_watch = Some(watch);
                    self.complete = true;
                }
                Err(error) => log::warn!("cannot watch {}: {error}", domains_directory.display()),
            }
        }
        let Ok(entries) = std::fs::read_dir(&domains_directory) else {
            self.complete = false;
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Some(domid) = entry.file_name().to_str().and_then(canonical_domid) else {
                continue;
            };
            // Watch first, then look: a marker created in between is reported by an event.
            if !self.watch_domain(domid) {
                self.complete = false;
            }
            found.push(simulation::domain_markers(&self.run_directory, domid));
        }
        found
    }

    /// Reads the queued events: which domains to look at.
    pub fn changes(&mut self) -> MarkerChanges {
        let Some(inotify) = &self.inotify else {
            return MarkerChanges::Domains(BTreeSet::new());
        };
        let events = match inotify.read_events() {
            Ok(events) => events,
            Err(error) => {
                log::warn!("reading inotify events failed: {error}");
                return MarkerChanges::Everything;
            }
        };
        let mut changed = BTreeSet::new();
        // Every event is still processed, so that the watch bookkeeping stays right.
        let mut everything = false;
        for event in events {
            if event.mask.contains(ReadFlags::QUEUE_OVERFLOW) {
                everything = true;
                continue;
            }
            let name = std::str::from_utf8(&event.name).unwrap_or("");
            if Some(event.watch) == self.domains_watch {
                if event
                    .mask
                    .intersects(ReadFlags::IGNORED | ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF)
                {
                    // `domains/` itself went away: only rescans can tell what exists now.
                    if let Some(inotify) = &self.inotify {
                        let _ = inotify.remove_watch(event.watch);
                    }
                    self.domains_watch = None;
                    self.complete = false;
                    everything = true;
                    continue;
                }
                // A domain directory appeared or went: watch it and look at it.
                if let Some(domid) = canonical_domid(name) {
                    if event
                        .mask
                        .intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO)
                        && !self.watch_domain(domid)
                    {
                        self.complete = false;
                    }
                    changed.insert(domid);
                }
            } else if let Some(&domid) = self.domain_watches.get(&event.watch) {
                if event.mask.contains(ReadFlags::IGNORED) {
                    // The directory was removed (or unwatched below): its watch is gone.
                    self.domain_watches.remove(&event.watch);
                    changed.insert(domid);
                } else if event.mask.contains(ReadFlags::MOVE_SELF) {
                    // The watch would follow the directory to its new name: drop it.
                    if let Some(inotify) = &self.inotify {
                        let _ = inotify.remove_watch(event.watch);
                    }
                    self.domain_watches.remove(&event.watch);
                    changed.insert(domid);
                } else if name.is_empty() || name == "dead" || name == "shutdown" {
                    changed.insert(domid);
                }
            }
        }
        if everything {
            MarkerChanges::Everything
        } else {
            MarkerChanges::Domains(changed)
        }
    }

    /// Watches `domains/<domid>`; false when that failed for another reason than the
    /// directory being gone.
    fn watch_domain(&mut self, domain: DomainId) -> bool {
        let Some(inotify) = &self.inotify else {
            return false;
        };
        let directory = DomainFiles::new(&self.run_directory, domain).directory;
        match inotify.add_watch(&directory, WATCH_MASK) {
            Ok(watch) => {
                self.domain_watches.insert(watch, domain);
                true
            }
            Err(error)
                if matches!(
                    Errno::from_io_error(&error),
                    Some(Errno::NOENT | Errno::NOTDIR)
                ) =>
            {
                true
            }
            Err(error) => {
                log::warn!("cannot watch {}: {error}", directory.display());
                false
            }
        }
    }
}

/// A domain directory's domid: decimal without leading zeros (the convention's spelling).
fn canonical_domid(name: &str) -> Option<DomainId> {
    let domid = name.parse::<u16>().ok()?;
    (domid.to_string() == name).then_some(DomainId(domid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(watcher: &mut MarkerWatcher) -> BTreeSet<DomainId> {
        match watcher.changes() {
            MarkerChanges::Domains(domids) => domids,
            MarkerChanges::Everything => panic!("unexpected full rescan"),
        }
    }

    #[test]
    fn events_name_the_domains_whose_markers_changed() {
        let run_directory =
            std::env::temp_dir().join(format!("xs-markers-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_directory);
        std::fs::create_dir_all(simulation::domains_directory(&run_directory)).unwrap();
        let epoll = Arc::new(Epoll::new().unwrap());
        let mut watcher = MarkerWatcher::new(&epoll, &run_directory, 7);
        let five = DomainFiles::new(&run_directory, DomainId(5));
        std::fs::create_dir_all(&five.directory).unwrap();
        std::fs::write(five.shutdown_marker(), b"").unwrap();
        let found = watcher.rescan();
        assert_eq!(
            found,
            vec![DomainMarkers {
                domain: DomainId(5),
                shutdown: true,
                dead: false
            }]
        );
        assert!(!watcher.needs_periodic_rescan());
        assert!(settle(&mut watcher).is_empty());

        // A new domain directory is watched as it appears; its markers are reported.
        let six = DomainFiles::new(&run_directory, DomainId(6));
        std::fs::create_dir_all(&six.directory).unwrap();
        assert_eq!(settle(&mut watcher), BTreeSet::from([DomainId(6)]));
        std::fs::write(six.dead_marker(), b"").unwrap();
        std::fs::write(six.directory.join("ring"), b"").unwrap();
        assert_eq!(settle(&mut watcher), BTreeSet::from([DomainId(6)]));
        // Other files do not count.
        std::fs::write(five.directory.join("ring"), b"").unwrap();
        assert!(settle(&mut watcher).is_empty());
        std::fs::remove_file(five.shutdown_marker()).unwrap();
        assert_eq!(settle(&mut watcher), BTreeSet::from([DomainId(5)]));
        // Removing a domain directory reports it (markers gone) and drops the watch.
        std::fs::remove_dir_all(&six.directory).unwrap();
        assert_eq!(settle(&mut watcher), BTreeSet::from([DomainId(6)]));
        assert_eq!(watcher.domain_watches.len(), 1);
        std::fs::remove_dir_all(&run_directory).unwrap();
    }
}
