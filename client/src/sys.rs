//! The client side's system calls: `mmap` of a simulated guest's ring page, `poll(2)` and `mkfifo(3)`, through `rustix`.
//!
//! The store maps the same ring files, so the daemon (`daemon/src/platform.rs`) uses
//! [`SharedPage`] and [`make_fifo`] from here too. `rustix` gives `poll(2)` and `mkfifo(3)`
//! safe signatures; what stays `unsafe` is the shared mapping itself and the atomics over it,
//! and the `// SAFETY:` comments say why each use is sound.

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{CWD, Mode};
use rustix::mm::{MapFlags, ProtFlags};
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
            rustix::mm::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE_BYTES,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &file,
                0,
            )?
        };
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
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), PAGE_SIZE_BYTES) };
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

    fn word64(&self, offset: usize) -> Option<&AtomicU64> {
        if !offset.is_multiple_of(8) || offset.checked_add(8)? > PAGE_SIZE_BYTES {
            return None;
        }
        // SAFETY: as in `word`, with 8-byte alignment and bounds checked above.
        Some(unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset).cast::<u64>()) })
    }
}

/// What to wait for on one descriptor, and what happened.
#[derive(Clone, Copy, Debug)]
pub struct PollEntry<'a> {
    pub descriptor: BorrowedFd<'a>,
    pub want_read: bool,
    pub want_write: bool,
    /// Set by [`poll`]: readable, or hung up / in error (a read will tell which).
    pub readable: bool,
    /// Set by [`poll`].
    pub writable: bool,
}

impl<'a> PollEntry<'a> {
    pub fn new(descriptor: BorrowedFd<'a>, want_read: bool, want_write: bool) -> PollEntry<'a> {
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
/// A negative timeout waits without limit.
pub fn poll(entries: &mut [PollEntry<'_>], timeout_milliseconds: i32) -> io::Result<usize> {
    let mut descriptors: Vec<PollFd<'_>> = entries
        .iter()
        .map(|entry| {
            let mut wanted = PollFlags::empty();
            wanted.set(PollFlags::IN, entry.want_read);
            wanted.set(PollFlags::OUT, entry.want_write);
            PollFd::from_borrowed_fd(entry.descriptor, wanted)
        })
        .collect();
    let timeout = u32::try_from(timeout_milliseconds)
        .ok()
        .map(|milliseconds| Timespec {
            tv_sec: i64::from(milliseconds / 1000),
            tv_nsec: i64::from(milliseconds % 1000) * 1_000_000,
        });
    let ready = match rustix::event::poll(&mut descriptors, timeout.as_ref()) {
        Ok(ready) => ready,
        Err(rustix::io::Errno::INTR) => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    for (entry, descriptor) in entries.iter_mut().zip(&descriptors) {
        let events = descriptor.revents();
        entry.readable =
            events.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL);
        entry.writable = events.intersects(PollFlags::OUT | PollFlags::ERR);
    }
    Ok(ready)
}

/// `mkfifo(path, mode)`; an existing FIFO is accepted as is.
pub fn make_fifo(path: &Path, mode: u32) -> io::Result<()> {
    let error = match rustix::fs::mkfifoat(CWD, path, Mode::from_raw_mode(mode)) {
        Ok(()) => return Ok(()),
        Err(error) => io::Error::from(error),
    };
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
    use std::sync::atomic::Ordering;
    use xenstore_engine::ring::Ring;

    /// A fresh directory `xs-sys-<name>-<pid>` under the temporary directory, with a zeroed
    /// page-sized file `page` in it: (directory, page file).
    fn scratch_page(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let directory = std::env::temp_dir().join(format!("xs-sys-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("page");
        std::fs::write(&path, vec![0u8; PAGE_SIZE_BYTES]).unwrap();
        (directory, path)
    }

    #[test]
    fn two_mappings_of_one_file_share_a_ring() {
        let (directory, path) = scratch_page("test");
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

    #[test]
    fn word_copies_match_byte_copies_at_every_alignment() {
        use xenstore_engine::ring::RingMemory;
        let (directory, path) = scratch_page("words");
        let page = SharedPage::map(&path).unwrap();
        for offset in 0..17 {
            for length in [0, 1, 7, 8, 9, 15, 16, 17, 40] {
                let source: Vec<u8> = (0..length)
                    .map(|i| (offset * 31 + i * 7 + 1) as u8)
                    .collect();
                page.write_bytes(100 + offset, &source);
                // Byte by byte, as another domain would see the page.
                let seen: Vec<u8> = (0..length)
                    .map(|i| page.byte(100 + offset + i).unwrap().load(Ordering::Relaxed))
                    .collect();
                assert_eq!(seen, source, "write at {offset}, {length} bytes");
                let mut copy = vec![0u8; length];
                page.read_bytes(100 + offset, &mut copy);
                assert_eq!(copy, source, "read at {offset}, {length} bytes");
                // The bytes around were left alone.
                assert_eq!(
                    page.byte(100 + offset + length)
                        .unwrap()
                        .load(Ordering::Relaxed),
                    0
                );
                page.write_bytes(100 + offset, &vec![0u8; length]);
            }
        }
        // The page's end: whole words up to it, nothing past it.
        page.write_bytes(PAGE_SIZE_BYTES - 8, b"lastword");
        let mut end = [0u8; 12];
        page.read_bytes(PAGE_SIZE_BYTES - 8, &mut end);
        assert_eq!(&end, b"lastword\0\0\0\0");
        assert!(page.word64(PAGE_SIZE_BYTES - 4).is_none());
        assert!(page.word64(PAGE_SIZE_BYTES).is_none());
        assert!(page.word64(12).is_none());
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
