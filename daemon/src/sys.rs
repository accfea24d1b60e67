//! The daemon's system calls: `epoll(7)`, `inotify(7)`, and socket reads and writes one by one (`rustix`) or batched in `io_uring(7)` (the `io-uring` crate).
//!
//! Both crates give these calls safe signatures; the only `unsafe` left is handing the kernel
//! a batch whose buffers it writes after the call that queued them returns, and taking over
//! a socket a live update's previous program left open, and the `// SAFETY:` comments say
//! why that is sound. Everything else in the crate is safe Rust. The
//! ring page mapping and `mkfifo(3)` are the simulated-guest convention's, shared with its
//! clients (`client/src/sys.rs`).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use rustix::event::Timespec;
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::fs::inotify::{self, ReadFlags, WatchFlags};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};

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

    fn events(self) -> EventFlags {
        let mut events = EventFlags::empty();
        events.set(EventFlags::IN, self.read);
        events.set(EventFlags::OUT, self.write);
        events
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
        let descriptor = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(Epoll { descriptor })
    }

    /// `operation` for `descriptor` under `token`: `epoll::add` (`EPOLL_CTL_ADD`: reports it
    /// from now on) or `epoll::modify` (`EPOLL_CTL_MOD`: changes what it is watched for).
    fn control<'a>(
        &'a self,
        operation: fn(&'a OwnedFd, BorrowedFd<'a>, EventData, EventFlags) -> rustix::io::Result<()>,
        descriptor: BorrowedFd<'a>,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        operation(
            &self.descriptor,
            descriptor,
            EventData::new_u64(token),
            interest.events(),
        )?;
        Ok(())
    }

    /// `EPOLL_CTL_DEL`.
    pub fn remove(&self, descriptor: BorrowedFd<'_>) -> io::Result<()> {
        epoll::delete(&self.descriptor, descriptor)?;
        Ok(())
    }

    /// Waits up to `timeout_milliseconds` (a negative value: without limit) and replaces
    /// `ready` with the ready descriptors, at most [`EVENTS_PER_WAIT`] (level-triggered: the
    /// others are reported by the next wait, and the kernel rotates its ready list, so none is
    /// starved). EINTR is an empty result.
    pub fn wait(&self, ready: &mut Vec<Readiness>, timeout_milliseconds: i32) -> io::Result<()> {
        ready.clear();
        // Left uninitialised: the kernel fills the first entries, and zeroing 3 KiB on every
        // wait showed up in the per-request profile of a busy server.
        let mut events = [const { MaybeUninit::<epoll::Event>::uninit() }; EVENTS_PER_WAIT];
        let timeout = milliseconds_timeout(timeout_milliseconds);
        let (filled, _) = match epoll::wait(&self.descriptor, &mut events, timeout.as_ref()) {
            Ok(events) => events,
            Err(Errno::INTR) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        for event in filled.iter() {
            // Copies out of the packed struct (no references to its fields).
            let (flags, token) = (event.flags, event.data.u64());
            ready.push(Readiness {
                token,
                readable: flags.intersects(EventFlags::IN | EventFlags::HUP | EventFlags::ERR),
                writable: flags.intersects(EventFlags::OUT | EventFlags::ERR),
            });
        }
        Ok(())
    }
}

/// A timeout in milliseconds as the `Timespec` `rustix` takes; `None` (no limit) when negative.
fn milliseconds_timeout(milliseconds: i32) -> Option<Timespec> {
    u32::try_from(milliseconds)
        .ok()
        .map(|milliseconds| Timespec {
            tv_sec: i64::from(milliseconds / 1000),
            tv_nsec: i64::from(milliseconds % 1000) * 1_000_000,
        })
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
            (None, Some(new)) => self
                .epoll
                .control(epoll::add, descriptor, self.token, new)?,
            (Some(_), Some(new)) => {
                self.epoll
                    .control(epoll::modify, descriptor, self.token, new)?
            }
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
    pub mask: ReadFlags,
    pub name: Vec<u8>,
}

/// A non-blocking `inotify(7)` instance.
#[derive(Debug)]
pub struct Inotify {
    descriptor: OwnedFd,
}

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        let descriptor =
            inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)?;
        Ok(Inotify { descriptor })
    }

    /// `inotify_add_watch(2)`: returns the watch descriptor (the same one again for a path
    /// already watched, whose mask is then replaced).
    pub fn add_watch(&self, path: &Path, mask: WatchFlags) -> io::Result<i32> {
        Ok(inotify::add_watch(&self.descriptor, path, mask)?)
    }

    /// `inotify_rm_watch(2)`.
    pub fn remove_watch(&self, watch: i32) -> io::Result<()> {
        Ok(inotify::remove_watch(&self.descriptor, watch)?)
    }

    /// Reads every queued event (none when the queue is empty).
    pub fn read_events(&self) -> io::Result<Vec<InotifyEvent>> {
        let mut events = Vec::new();
        // Large enough for any single event (header + NAME_MAX + 1), as read(2) requires.
        let mut buffer = [const { MaybeUninit::<u8>::uninit() }; 16 * 1024];
        let mut reader = inotify::Reader::new(&self.descriptor, &mut buffer);
        loop {
            match reader.next() {
                Ok(event) => events.push(InotifyEvent {
                    watch: event.wd(),
                    mask: event.events(),
                    // The kernel NUL-pads the name; `CStr` ends at the first NUL.
                    name: event
                        .file_name()
                        .map(|name| name.to_bytes().to_vec())
                        .unwrap_or_default(),
                }),
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(events)
    }
}

impl AsFd for Inotify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.descriptor.as_fd()
    }
}

/// One socket operation of a batch ([`IoUring::run`], [`run_socket_operations`]). None
/// blocks (`MSG_DONTWAIT`): a socket that is not ready gives `WouldBlock`.
#[derive(Debug)]
pub enum SocketOperation<'a> {
    /// `recv(descriptor, buffer, MSG_DONTWAIT | (peek ? MSG_PEEK : 0))`.
    Receive {
        descriptor: BorrowedFd<'a>,
        buffer: &'a mut [u8],
        /// Leave the bytes queued in the socket (`MSG_PEEK`).
        peek: bool,
    },
    /// `send(descriptor, bytes, MSG_DONTWAIT | MSG_NOSIGNAL)`.
    Send {
        descriptor: BorrowedFd<'a>,
        bytes: &'a [u8],
    },
    /// `recv(descriptor, scratch, length_bytes, MSG_DONTWAIT)`: takes bytes out of the
    /// socket and throws them away (they were peeked before). At most
    /// [`DISCARD_LIMIT_BYTES`].
    Discard {
        descriptor: BorrowedFd<'a>,
        length_bytes: usize,
    },
}

/// The most bytes one [`SocketOperation::Discard`] takes.
pub const DISCARD_LIMIT_BYTES: usize = 8192;

impl SocketOperation<'_> {
    fn receive_flags(peek: bool) -> RecvFlags {
        if peek {
            RecvFlags::DONTWAIT | RecvFlags::PEEK
        } else {
            RecvFlags::DONTWAIT
        }
    }

    const SEND_FLAGS: SendFlags = SendFlags::DONTWAIT.union(SendFlags::NOSIGNAL);
}

/// Runs the operations in order, one system call each (what [`IoUring::run`] does in one),
/// and replaces `results` with their outcomes.
pub fn run_socket_operations(
    operations: &mut [SocketOperation<'_>],
    results: &mut Vec<io::Result<usize>>,
) {
    results.clear();
    results.extend(operations.iter_mut().map(run_socket_operation));
}

/// One operation, one system call.
fn run_socket_operation(operation: &mut SocketOperation<'_>) -> io::Result<usize> {
    let result = match operation {
        SocketOperation::Receive {
            descriptor,
            buffer,
            peek,
        } => rustix::net::recv(
            *descriptor,
            &mut **buffer,
            SocketOperation::receive_flags(*peek),
        )
        .map(|(received, _)| received),
        SocketOperation::Send { descriptor, bytes } => {
            rustix::net::send(*descriptor, bytes, SocketOperation::SEND_FLAGS)
        }
        SocketOperation::Discard {
            descriptor,
            length_bytes,
        } => {
            // Only when a ring failed in the middle of a round: no buffer is kept for it, and
            // this one is never read, so it is left uninitialised.
            let mut scratch = [const { MaybeUninit::<u8>::uninit() }; DISCARD_LIMIT_BYTES];
            let length_bytes = (*length_bytes).min(DISCARD_LIMIT_BYTES);
            rustix::net::recv(
                *descriptor,
                &mut scratch[..length_bytes],
                SocketOperation::receive_flags(false),
            )
            .map(|(_, received)| received)
        }
    };
    Ok(result?)
}

/// An `io_uring(7)` instance used synchronously: [`IoUring::run`] submits a batch of
/// non-blocking socket operations with one system call and returns when all of them are
/// complete.
///
/// For a single-threaded server this is more than saving system calls: each `send` of a
/// reply wakes the client waiting for it, and a woken client tends to preempt the server on
/// its way out of that `send`; with the replies of a round sent in one call, the server is
/// preempted at most once per round and the round's wake-ups happen together.
pub struct IoUring {
    /// `None` once the ring failed with operations it had not taken: those entries stay in
    /// its submission queue (nothing withdraws them), so the ring is closed before any later
    /// call could hand them to the kernel, and every later batch runs one system call per
    /// operation.
    ring: Option<io_uring::IoUring>,
    /// Where [`SocketOperation::Discard`] reads land: the kernel writes it, nothing reads it,
    /// so one buffer serves every discard of a batch.
    discard_buffer: Vec<u8>,
    /// The submission entries of the batch part being queued, kept for its allocation; empty
    /// between calls.
    entries: Vec<io_uring::squeue::Entry>,
    /// How many operations the ring takes at a time (the smaller of its submission and
    /// completion queues); a batch is split into parts this big.
    submission_capacity: usize,
}

impl IoUring {
    /// A ring for batches of up to `entries` operations at a time (a power of two).
    /// Fails where io_uring is missing, too old or forbidden (seccomp, the
    /// `kernel.io_uring_disabled` sysctl): the caller then makes one system call per
    /// operation.
    pub fn new(entries: u32) -> io::Result<IoUring> {
        // Both flags date from Linux 5.19, which also fails a non-blocking (`MSG_DONTWAIT`)
        // socket operation that is not ready instead of waiting: `run` relies on every
        // operation completing while it is submitted. Older kernels refuse the flags.
        // SUBMIT_ALL: keep submitting the batch when one entry fails. COOP_TASKRUN: no
        // interrupt to run completion work, there is none.
        let ring = io_uring::IoUring::builder()
            .setup_submit_all()
            .setup_coop_taskrun()
            .build(entries)?;
        let parameters = ring.params();
        let submission_capacity = parameters.sq_entries().min(parameters.cq_entries()) as usize;
        Ok(IoUring {
            ring: Some(ring),
            discard_buffer: vec![0; DISCARD_LIMIT_BYTES],
            entries: Vec::with_capacity(submission_capacity),
            submission_capacity: submission_capacity.max(1),
        })
    }

    /// Runs the operations in order and replaces `results` with their outcomes, as
    /// [`run_socket_operations`] would, and returns when every one is complete (so the
    /// borrowed buffers are free again). An error means the ring failed: the operations
    /// it did not take were still run, one system call each, and so is every later batch;
    /// the caller should stop using the ring.
    pub fn run(
        &mut self,
        operations: &mut [SocketOperation<'_>],
        results: &mut Vec<io::Result<usize>>,
    ) -> io::Result<()> {
        results.clear();
        let mut failure = if self.ring.is_some() {
            Ok(())
        } else {
            Err(io::Error::other("io_uring failed before"))
        };
        for part in operations.chunks_mut(self.submission_capacity) {
            let first = results.len();
            results.extend(part.iter().map(|_| Err(io::ErrorKind::Interrupted.into())));
            let part_results = results.get_mut(first..).unwrap_or(&mut []);
            let submitted = if failure.is_ok() {
                match self.run_part(part, part_results) {
                    Ok(submitted) if submitted == part.len() => continue,
                    Ok(submitted) => {
                        failure = Err(io::Error::other("io_uring took part of a batch"));
                        submitted
                    }
                    Err(error) => {
                        failure = Err(error);
                        0
                    }
                }
            } else {
                0
            };
            for (operation, result) in part.iter_mut().zip(part_results).skip(submitted) {
                *result = run_socket_operation(operation);
            }
        }
        failure
    }

    /// Submits at most `submission_capacity` operations and waits for them; returns how
    /// many were submitted (all of them unless the ring misbehaves; then the ring is closed
    /// with the rest, which the kernel never saw).
    fn run_part(
        &mut self,
        operations: &mut [SocketOperation<'_>],
        results: &mut [io::Result<usize>],
    ) -> io::Result<usize> {
        let Some(ring) = self.ring.as_mut() else {
            return Err(io::Error::other("io_uring failed before"));
        };
        // Every earlier batch was submitted in full and completed, or the ring was closed.
        if !ring.submission().is_empty() {
            return Err(io::Error::other("io_uring submission queue not empty"));
        }
        if operations.len() > self.submission_capacity {
            return Err(io::Error::other("io_uring batch part too large"));
        }
        let discard_address = self.discard_buffer.as_mut_ptr();
        self.entries.clear();
        for (index, operation) in operations.iter_mut().enumerate() {
            let entry = match operation {
                SocketOperation::Receive {
                    descriptor,
                    buffer,
                    peek,
                } => io_uring::opcode::Recv::new(
                    io_uring::types::Fd(descriptor.as_raw_fd()),
                    buffer.as_mut_ptr(),
                    u32::try_from(buffer.len()).unwrap_or(u32::MAX),
                )
                .flags(SocketOperation::receive_flags(*peek).bits() as i32)
                .build(),
                SocketOperation::Send { descriptor, bytes } => io_uring::opcode::Send::new(
                    io_uring::types::Fd(descriptor.as_raw_fd()),
                    bytes.as_ptr(),
                    u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                )
                .flags(SocketOperation::SEND_FLAGS.bits() as i32)
                .build(),
                SocketOperation::Discard {
                    descriptor,
                    length_bytes,
                } => io_uring::opcode::Recv::new(
                    io_uring::types::Fd(descriptor.as_raw_fd()),
                    discard_address,
                    (*length_bytes).min(DISCARD_LIMIT_BYTES) as u32,
                )
                .flags(SocketOperation::receive_flags(false).bits() as i32)
                .build(),
            };
            self.entries.push(entry.user_data(index as u64));
        }
        // SAFETY: the entries name descriptors and buffers borrowed by `operations` (or
        // `discard_buffer`, owned by `self`), with their lengths. `push_multiple` queues all
        // of them or none. `run_part` does not return before every entry the kernel took has
        // completed (it aborts the process rather than return early), and entries it did not
        // take are never handed to it (the ring is closed below), so the kernel never touches
        // a buffer after its borrow ends.
        let pushed = unsafe { ring.submission().push_multiple(&self.entries) };
        self.entries.clear();
        if pushed.is_err() {
            // Cannot happen: the queue was empty and holds `submission_capacity` entries.
            return Err(io::Error::other("io_uring submission queue full"));
        }
        let count = operations.len();
        // Submit without waiting: non-blocking socket operations complete while they are
        // submitted, so their completions are posted when this call returns.
        let (submitted, failure) = loop {
            match ring.submit() {
                Ok(submitted) => break (submitted.min(count), None),
                // The call returns the submitted count whenever it submitted anything, so an
                // error means nothing was.
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => break (0, Some(error)),
            }
        };
        let mut completed = reap(ring, results);
        while completed < submitted {
            let waited = if submitted < count {
                // Entries the kernel did not take are still queued: wait without submitting
                // them (`submit_and_wait` would).
                // SAFETY: no argument pointer is passed (no signal mask); the ring's
                // descriptor is open.
                unsafe {
                    ring.submitter().enter::<()>(
                        0,
                        (submitted - completed) as u32,
                        io_uring::EnterFlags::GETEVENTS.bits(),
                        None,
                    )
                }
            } else {
                // Nothing is left to submit: this only waits.
                ring.submit_and_wait(submitted - completed)
            };
            if let Err(error) = waited
                && error.kind() != io::ErrorKind::Interrupted
            {
                // Submitted operations may still write into the caller's buffers, so
                // returning would be unsound.
                log::error!("io_uring_enter failed with operations in flight: {error}");
                std::process::abort();
            }
            completed += reap(ring, results);
        }
        if submitted < count {
            // Close the ring with the entries it did not take, before anything could
            // submit them after their buffers are gone.
            self.ring = None;
        }
        match failure {
            Some(error) if submitted == 0 => Err(error),
            _ => Ok(submitted),
        }
    }
}

/// Moves the posted completions into `results`; returns how many there were.
fn reap(ring: &mut io_uring::IoUring, results: &mut [io::Result<usize>]) -> usize {
    let mut count = 0;
    for entry in ring.completion() {
        count += 1;
        if let Some(result) = usize::try_from(entry.user_data())
            .ok()
            .and_then(|index| results.get_mut(index))
        {
            *result = if entry.result() < 0 {
                Err(io::Error::from_raw_os_error(-entry.result()))
            } else {
                Ok(entry.result().unsigned_abs() as usize)
            };
        }
    }
    count
}

/// Keeps `descriptor` open across `execve(2)` (`inherit`) or closes it there again (the
/// default of every descriptor the daemon opens): a live update hands its sockets to the
/// new executable this way (`docs/live-update.md`, "The daemon").
pub fn inherit_across_exec(descriptor: BorrowedFd<'_>, inherit: bool) -> io::Result<()> {
    let flags = if inherit {
        rustix::io::FdFlags::empty()
    } else {
        rustix::io::FdFlags::CLOEXEC
    };
    Ok(rustix::io::fcntl_setfd(descriptor, flags)?)
}

/// Takes over a socket descriptor that the previous instance left open across
/// `execve(2)` and named in its state stream. Checked first, through `/proc/self/fd`
/// (`stat(2)` follows the link to the socket's inode): it must be open and a socket, and
/// above standard error. The caller adopts each number once, before it opens sockets of
/// its own.
pub fn inherited_socket(descriptor: i32) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::FileTypeExt;
    let invalid = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("descriptor {descriptor}: {what}"),
        )
    };
    if descriptor <= 2 {
        return Err(invalid("not an inherited socket"));
    }
    let metadata = std::fs::metadata(format!("/proc/self/fd/{descriptor}"))
        .map_err(|error| invalid(&format!("not open ({error})")))?;
    if !metadata.file_type().is_socket() {
        return Err(invalid("not a socket"));
    }
    // SAFETY: the descriptor is open (checked above) and a socket; the previous instance
    // of this program left it open for us and recorded it in the stream, and nothing in
    // this process owns it: the only sockets opened before the state is restored are
    // these adopted ones, and the caller adopts each number at most once.
    Ok(unsafe { OwnedFd::from_raw_fd(descriptor) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `operations` through `ring`, or one system call each without one.
    fn run(
        ring: &mut Option<IoUring>,
        operations: &mut [SocketOperation<'_>],
    ) -> Vec<io::Result<usize>> {
        let mut results = Vec::new();
        match ring {
            Some(ring) => ring.run(operations, &mut results).unwrap(),
            None => run_socket_operations(operations, &mut results),
        }
        results
    }

    #[test]
    fn socket_batches_run_in_order_with_and_without_io_uring() {
        use std::os::unix::net::UnixStream;
        // A ring of 2 entries: the batches below are run in parts.
        let rings = [None, IoUring::new(2).ok()];
        if rings[1].is_none() {
            eprintln!("io_uring unavailable here: only the plain path is tested");
        }
        for mut ring in rings {
            let (left, right) = UnixStream::pair().unwrap();
            let mut first = [0u8; 16];
            let mut second = [0u8; 16];
            let mut operations = [
                SocketOperation::Send {
                    descriptor: left.as_fd(),
                    bytes: b"hello",
                },
                SocketOperation::Send {
                    descriptor: left.as_fd(),
                    bytes: b" world",
                },
                SocketOperation::Receive {
                    descriptor: right.as_fd(),
                    buffer: &mut first,
                    peek: true,
                },
                SocketOperation::Discard {
                    descriptor: right.as_fd(),
                    length_bytes: 6,
                },
                SocketOperation::Receive {
                    descriptor: right.as_fd(),
                    buffer: &mut second,
                    peek: false,
                },
            ];
            let results = run(&mut ring, &mut operations);
            let counts: Vec<usize> = results.into_iter().map(Result::unwrap).collect();
            assert_eq!(counts, [5, 6, 11, 6, 5]);
            assert_eq!(&first[..11], b"hello world");
            assert_eq!(&second[..5], b"world");
            // Nothing left: a receive does not wait, it reports WouldBlock.
            let mut empty = [0u8; 4];
            let results = run(
                &mut ring,
                &mut [SocketOperation::Receive {
                    descriptor: right.as_fd(),
                    buffer: &mut empty,
                    peek: false,
                }],
            );
            assert_eq!(
                results[0].as_ref().map_err(io::Error::kind).err(),
                Some(io::ErrorKind::WouldBlock)
            );
            // A peer that went away: end of file for a receive, an error for a send.
            drop(left);
            let results = run(
                &mut ring,
                &mut [
                    SocketOperation::Receive {
                        descriptor: right.as_fd(),
                        buffer: &mut empty,
                        peek: true,
                    },
                    SocketOperation::Send {
                        descriptor: right.as_fd(),
                        bytes: b"x",
                    },
                ],
            );
            assert_eq!(results[0].as_ref().ok(), Some(&0));
            assert!(results[1].is_err());
            assert!(run(&mut ring, &mut []).is_empty());
        }
    }
}
