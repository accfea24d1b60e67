//! The daemon's only `unsafe` code: `mmap` of a simulated guest's ring page, `poll(2)`, `epoll(7)`,
//! `inotify(7)`, `mkfifo(3)`.
//!
//! Each function wraps one system call behind a safe signature; the `// SAFETY:` comments say
//! why each call is sound. Everything else in the crate is safe Rust.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32};

use xenstore_engine::ring::{AtomicPage, PAGE_SIZE_BYTES};

/// A 4 KiB file mapped `MAP_SHARED`: a simulated guest's ring page (what grant ref 1 maps to).
///
/// Both processes access the page concurrently, so every access goes through atomics; the
/// mapping is never turned into a plain `&[u8]`.
///
/// Threat model: a simulated guest that *truncates* the file after it was mapped makes the
/// kernel raise `SIGBUS` on access. Such a guest runs with the daemon's own privileges (it
/// could equally kill the daemon), so this is outside what the simulation defends against;
/// hostile *contents* of the page are handled by `ring.rs`.
pub struct SharedPage {
    base: NonNull<u8>,
}

// SAFETY: the mapping belongs to the process, not to a thread, and is unmapped only on drop;
// moving the owner to another thread changes nothing about its validity.
unsafe impl Send for SharedPage {}

// SAFETY: every access through `&SharedPage` is an atomic load or store (see `word`/`byte`),
// so sharing it between threads cannot cause a data race.
unsafe impl Sync for SharedPage {}

impl SharedPage {
    /// Maps the first 4096 bytes of `path` read-write and shared.
    pub fn map(path: &Path) -> io::Result<SharedPage> {
        let file = File::options().read(true).write(true).open(path)?;
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        if metadata.len() < PAGE_SIZE_BYTES as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is shorter than one page", path.display()),
            ));
        }
        // SAFETY: a fresh mapping chosen by the kernel (address hint null) of a file descriptor
        // we own, with a length that the file covers (checked above); it aliases no Rust object.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // The mapping stays valid after the descriptor is closed (`file` drops here).
        NonNull::new(address.cast::<u8>())
            .map(|base| SharedPage { base })
            .ok_or_else(|| io::Error::other("mmap returned null"))
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: `base` came from a successful mmap of PAGE_SIZE_BYTES and is unmapped once;
        // no reference derived from it outlives `self` (they borrow `self`).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), PAGE_SIZE_BYTES);
        }
    }
}

impl AtomicPage for SharedPage {
    fn word(&self, offset: usize) -> Option<&AtomicU32> {
        if !offset.is_multiple_of(4) || offset.checked_add(4)? > PAGE_SIZE_BYTES {
            return None;
        }
        // SAFETY: `offset + 4 <= 4096` and the mapping is page-aligned, so the pointer is in
        // bounds and 4-byte aligned; the mapping lives as long as `self`, and all accesses to
        // it from this process are atomic, which is what `AtomicU32::from_ptr` requires.
        Some(unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(offset).cast::<u32>()) })
    }

    fn byte(&self, offset: usize) -> Option<&AtomicU8> {
        if offset >= PAGE_SIZE_BYTES {
            return None;
        }
        // SAFETY: `offset < 4096` keeps the pointer inside the live mapping owned by `self`;
        // bytes are only ever accessed atomically.
        Some(unsafe { AtomicU8::from_ptr(self.base.as_ptr().add(offset)) })
    }
}

/// What to wait for on one descriptor, and what happened.
#[derive(Clone, Copy, Debug)]
pub struct PollEntry {
    pub descriptor: RawFd,
    pub want_read: bool,
    pub want_write: bool,
    /// Set by [`poll`]: readable, or hung up / in error (a read will tell which).
    pub readable: bool,
    /// Set by [`poll`].
    pub writable: bool,
}

impl PollEntry {
    pub fn new(descriptor: RawFd, want_read: bool, want_write: bool) -> PollEntry {
        PollEntry {
            descriptor,
            want_read,
            want_write,
            readable: false,
            writable: false,
        }
    }
}

/// `poll(2)` over `entries`; returns how many descriptors are ready (0 on timeout or EINTR).
pub fn poll(entries: &mut [PollEntry], timeout_milliseconds: i32) -> io::Result<usize> {
    let mut descriptors: Vec<libc::pollfd> = entries
        .iter()
        .map(|entry| libc::pollfd {
            fd: entry.descriptor,
            events: (if entry.want_read { libc::POLLIN } else { 0 })
                | (if entry.want_write { libc::POLLOUT } else { 0 }),
            revents: 0,
        })
        .collect();
    // SAFETY: the pointer and length describe a live, exclusively borrowed Vec of pollfd.
    let ready = unsafe {
        libc::poll(
            descriptors.as_mut_ptr(),
            descriptors.len() as libc::nfds_t,
            timeout_milliseconds,
        )
    };
    if ready < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(error);
    }
    for (entry, descriptor) in entries.iter_mut().zip(&descriptors) {
        let events = descriptor.revents;
        entry.readable =
            events & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
        entry.writable = events & (libc::POLLOUT | libc::POLLERR) != 0;
    }
    Ok(ready as usize)
}

/// What a registered descriptor is watched for. Hang-up and error are always reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };

    fn events(self) -> u32 {
        (if self.read { libc::EPOLLIN as u32 } else { 0 })
            | (if self.write { libc::EPOLLOUT as u32 } else { 0 })
    }
}

/// One ready descriptor reported by [`Epoll::wait`], named by the token it was registered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub token: u64,
    /// Readable, or hung up / in error (a read will tell which).
    pub readable: bool,
    pub writable: bool,
}

/// How many ready descriptors one [`Epoll::wait`] reports at most.
pub const EVENTS_PER_WAIT: usize = 256;

/// An `epoll(7)` instance (level-triggered): descriptors are registered once, and a wait
/// costs in proportion to the descriptors that are ready, not to those registered.
#[derive(Debug)]
pub struct Epoll {
    descriptor: OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers are involved; a non-negative result is a new descriptor that
        // nothing else owns, so `OwnedFd` may take it.
        let descriptor = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if descriptor < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `descriptor` is open (checked above) and owned by no one else.
        let descriptor = unsafe { OwnedFd::from_raw_fd(descriptor) };
        Ok(Epoll { descriptor })
    }

    fn control(
        &self,
        operation: libc::c_int,
        descriptor: BorrowedFd<'_>,
        event: Option<libc::epoll_event>,
    ) -> io::Result<()> {
        let mut event = event;
        let pointer = event.as_mut().map_or(std::ptr::null_mut(), |event| {
            event as *mut libc::epoll_event
        });
        // SAFETY: both descriptors are open for the duration of the call (`OwnedFd` and
        // `BorrowedFd` guarantee it); `pointer` is null (only for EPOLL_CTL_DEL, which ignores
        // it since Linux 2.6.9) or points to a live `epoll_event` on this stack frame.
        let result = unsafe {
            libc::epoll_ctl(
                self.descriptor.as_raw_fd(),
                operation,
                descriptor.as_raw_fd(),
                pointer,
            )
        };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `EPOLL_CTL_ADD`: reports `descriptor` under `token` from now on.
    pub fn add(
        &self,
        descriptor: BorrowedFd<'_>,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        let event = libc::epoll_event {
            events: interest.events(),
            u64: token,
        };
        self.control(libc::EPOLL_CTL_ADD, descriptor, Some(event))
    }

    /// `EPOLL_CTL_MOD`: changes what a registered descriptor is watched for.
    pub fn modify(
        &self,
        descriptor: BorrowedFd<'_>,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        let event = libc::epoll_event {
            events: interest.events(),
            u64: token,
        };
        self.control(libc::EPOLL_CTL_MOD, descriptor, Some(event))
    }

    /// `EPOLL_CTL_DEL`.
    pub fn remove(&self, descriptor: BorrowedFd<'_>) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_DEL, descriptor, None)
    }

    /// Waits up to `timeout_milliseconds` and replaces `ready` with the ready descriptors, at
    /// most [`EVENTS_PER_WAIT`] (level-triggered: the others are reported by the next wait, and
    /// the kernel rotates its ready list, so none is starved). EINTR is an empty result.
    pub fn wait(&self, ready: &mut Vec<Readiness>, timeout_milliseconds: i32) -> io::Result<()> {
        ready.clear();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
        // SAFETY: the epoll descriptor is open; the pointer and length describe a live,
        // exclusively borrowed array of EVENTS_PER_WAIT events.
        let count = unsafe {
            libc::epoll_wait(
                self.descriptor.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS_PER_WAIT as libc::c_int,
                timeout_milliseconds,
            )
        };
        if count < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(error);
        }
        for event in events.iter().take(count as usize) {
            // Copies out of the packed struct (no references to its fields).
            let (flags, token) = (event.events, event.u64);
            ready.push(Readiness {
                token,
                readable: flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0,
                writable: flags & (libc::EPOLLOUT | libc::EPOLLERR) as u32 != 0,
            });
        }
        Ok(())
    }
}

/// A descriptor owner (`T`) with its registration in an [`Epoll`].
///
/// The registration follows the owner: it is removed before `T` closes its descriptor (on
/// drop), so a later descriptor with the same number never inherits it. `T` is reachable
/// only through `&T`, so the descriptor cannot be swapped behind the registration's back.
#[derive(Debug)]
pub struct Registered<T: AsFd> {
    epoll: Arc<Epoll>,
    token: u64,
    /// `None`: not registered.
    interest: Option<Interest>,
    inner: T,
}

impl<T: AsFd> Registered<T> {
    /// Not registered yet: see [`Registered::set_interest`].
    pub fn new(epoll: &Arc<Epoll>, inner: T, token: u64) -> Registered<T> {
        Registered {
            epoll: Arc::clone(epoll),
            token,
            interest: None,
            inner,
        }
    }

    /// Registers, changes or (`None`) removes the registration; a no-op when unchanged.
    pub fn set_interest(&mut self, interest: Option<Interest>) -> io::Result<()> {
        if interest == self.interest {
            return Ok(());
        }
        let descriptor = self.inner.as_fd();
        match (self.interest, interest) {
            (None, Some(new)) => self.epoll.add(descriptor, self.token, new)?,
            (Some(_), Some(new)) => self.epoll.modify(descriptor, self.token, new)?,
            (Some(_), None) => self.epoll.remove(descriptor)?,
            (None, None) => {}
        }
        self.interest = interest;
        Ok(())
    }
}

impl<T: AsFd> std::ops::Deref for Registered<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsFd> Drop for Registered<T> {
    fn drop(&mut self) {
        if self.interest.is_some() {
            // Runs before `inner` is dropped, so the descriptor is still open here.
            let _ = self.epoll.remove(self.inner.as_fd());
        }
    }
}

/// One `inotify(7)` event: the watch it belongs to, what happened, and the entry's name
/// (empty for events about the watched directory itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InotifyEvent {
    pub watch: i32,
    pub mask: u32,
    pub name: Vec<u8>,
}

/// A non-blocking `inotify(7)` instance.
#[derive(Debug)]
pub struct Inotify {
    file: File,
}

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: no pointers are involved; a non-negative result is a new descriptor that
        // nothing else owns.
        let descriptor = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if descriptor < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `descriptor` is open (checked above) and owned by no one else.
        let owned = unsafe { OwnedFd::from_raw_fd(descriptor) };
        Ok(Inotify {
            file: File::from(owned),
        })
    }

    /// `inotify_add_watch(2)`: returns the watch descriptor (the same one again for a path
    /// already watched, whose mask is then replaced).
    pub fn add_watch(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let name = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        // SAFETY: the inotify descriptor is open and `name` is a valid NUL-terminated string
        // that outlives the call.
        let watch = unsafe { libc::inotify_add_watch(self.file.as_raw_fd(), name.as_ptr(), mask) };
        if watch < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(watch)
    }

    /// `inotify_rm_watch(2)`.
    pub fn remove_watch(&self, watch: i32) -> io::Result<()> {
        // SAFETY: the inotify descriptor is open; no pointers are involved.
        let result = unsafe { libc::inotify_rm_watch(self.file.as_raw_fd(), watch) };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads every queued event (none when the queue is empty).
    pub fn read_events(&self) -> io::Result<Vec<InotifyEvent>> {
        const HEADER_BYTES: usize = 16; // struct inotify_event without the name
        let mut events = Vec::new();
        // Large enough for any single event (header + NAME_MAX + 1), as read(2) requires.
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let count = match (&self.file).read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            let mut rest = buffer.get(..count).unwrap_or(&[]);
            while let Some(header) = rest.get(..HEADER_BYTES) {
                let field = |index: usize| {
                    let mut bytes = [0u8; 4];
                    bytes.copy_from_slice(header.get(index * 4..index * 4 + 4).unwrap_or(&[0; 4]));
                    bytes
                };
                let watch = i32::from_ne_bytes(field(0));
                let mask = u32::from_ne_bytes(field(1));
                let name_bytes = u32::from_ne_bytes(field(3)) as usize;
                let name = rest
                    .get(HEADER_BYTES..HEADER_BYTES + name_bytes)
                    .unwrap_or(&[]);
                // The name is NUL-padded.
                let name = name.split(|byte| *byte == 0).next().unwrap_or(&[]).to_vec();
                events.push(InotifyEvent { watch, mask, name });
                rest = rest.get(HEADER_BYTES + name_bytes..).unwrap_or(&[]);
            }
        }
        Ok(events)
    }
}

impl AsFd for Inotify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// `mkfifo(path, mode)`; an existing FIFO is accepted as is.
pub fn make_fifo(path: &Path, mode: u32) -> io::Result<()> {
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let result = unsafe { libc::mkfifo(name.as_ptr(), mode as libc::mode_t) };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.kind() == io::ErrorKind::AlreadyExists {
        use std::os::unix::fs::FileTypeExt;
        if std::fs::metadata(path)?.file_type().is_fifo() {
            return Ok(());
        }
    }
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenstore_engine::ring::Ring;

    #[test]
    fn two_mappings_of_one_file_share_a_ring() {
        let directory = std::env::temp_dir().join(format!("xs-sys-test-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("ring");
        std::fs::write(&path, vec![0u8; PAGE_SIZE_BYTES]).unwrap();
        let guest = SharedPage::map(&path).unwrap();
        let server = SharedPage::map(&path).unwrap();
        assert_eq!(Ring::new(&guest).client_write(b"ping"), Ok(4));
        let mut buffer = [0u8; 8];
        assert_eq!(Ring::new(&server).server_read(&mut buffer), Ok(4));
        assert_eq!(&buffer[..4], b"ping");
        std::fs::write(directory.join("short"), b"x").unwrap();
        assert!(SharedPage::map(&directory.join("short")).is_err());
        let fifo = directory.join("fifo");
        make_fifo(&fifo, 0o600).unwrap();
        make_fifo(&fifo, 0o600).unwrap();
        assert!(make_fifo(&path, 0o600).is_err());
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
