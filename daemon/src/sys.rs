//! The daemon's system calls: `epoll(7)`, `inotify(7)` and socket reads and writes one by one through `rustix`, and batched in a hand-written `io_uring(7)`.
//!
//! `rustix` gives the single calls safe signatures; the `unsafe` left is the io_uring ring
//! (its set-up, mapping and shared indices), and the `// SAFETY:` comments say why each use is
//! sound. Everything else in the crate is safe Rust. The ring page mapping and `mkfifo(3)` are
//! the simulated-guest convention's, shared with its clients (`client/src/sys.rs`).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

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

    /// `EPOLL_CTL_ADD`: reports `descriptor` under `token` from now on.
    pub fn add(
        &self,
        descriptor: BorrowedFd<'_>,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        epoll::add(
            &self.descriptor,
            descriptor,
            EventData::new_u64(token),
            interest.events(),
        )?;
        Ok(())
    }

    /// `EPOLL_CTL_MOD`: changes what a registered descriptor is watched for.
    pub fn modify(
        &self,
        descriptor: BorrowedFd<'_>,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        epoll::modify(
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

/// `struct io_sqring_offsets` (`linux/io_uring.h`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SubmissionRingOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    reserved: u32,
    user_address: u64,
}

/// `struct io_cqring_offsets`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CompletionRingOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    entries: u32,
    flags: u32,
    reserved: u32,
    user_address: u64,
}

/// `struct io_uring_params`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RingParameters {
    submission_entries: u32,
    completion_entries: u32,
    flags: u32,
    submission_thread_cpu: u32,
    submission_thread_idle_milliseconds: u32,
    features: u32,
    work_queue_descriptor: u32,
    reserved: [u32; 3],
    submission_offsets: SubmissionRingOffsets,
    completion_offsets: CompletionRingOffsets,
}

/// `struct io_uring_sqe`, with the fields `IORING_OP_SEND`/`IORING_OP_RECV` use named.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SubmissionEntry {
    opcode: u8,
    flags: u8,
    priority: u16,
    descriptor: i32,
    offset: u64,
    address: u64,
    length: u32,
    message_flags: u32,
    user_data: u64,
    buffer_index: u16,
    personality: u16,
    splice_descriptor: i32,
    address3: u64,
    padding: u64,
}

/// `struct io_uring_cqe`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CompletionEntry {
    user_data: u64,
    result: i32,
    flags: u32,
}

const _: () = assert!(size_of::<RingParameters>() == 120);
const _: () = assert!(size_of::<SubmissionEntry>() == 64);
const _: () = assert!(size_of::<CompletionEntry>() == 16);

const IORING_OFF_SQ_RING: libc::off_t = 0;
const IORING_OFF_SQES: libc::off_t = 0x1000_0000;
/// One mapping holds both rings (Linux 5.4).
const IORING_FEAT_SINGLE_MMAP: u32 = 1;
/// Keep submitting the batch when one entry fails (Linux 5.18).
const IORING_SETUP_SUBMIT_ALL: u32 = 1 << 7;
/// No interrupt to run completion work: there is none, every operation completes while it
/// is submitted (Linux 5.19).
const IORING_SETUP_COOP_TASKRUN: u32 = 1 << 8;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_OP_SEND: u8 = 26;
const IORING_OP_RECV: u8 = 27;

/// A shared mapping of an io_uring region, unmapped on drop.
struct RingMapping {
    base: NonNull<u8>,
    length_bytes: usize,
}

// SAFETY: the mapping belongs to the process, not to a thread; it is only accessed through
// `&mut IoUring` (atomically where the kernel writes concurrently).
unsafe impl Send for RingMapping {}

impl RingMapping {
    fn map(
        descriptor: BorrowedFd<'_>,
        length_bytes: usize,
        offset: libc::off_t,
    ) -> io::Result<RingMapping> {
        // SAFETY: a fresh mapping chosen by the kernel (address hint null) of the io_uring
        // region at `offset`, as long as the kernel said it is; it aliases no Rust object.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                descriptor.as_raw_fd(),
                offset,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(address.cast::<u8>())
            .map(|base| RingMapping { base, length_bytes })
            .ok_or_else(|| io::Error::other("mmap returned null"))
    }

    /// Checks that `count` values of `T` fit at `offset` bytes, suitably aligned.
    fn check<T>(&self, offset: u32, count: u32) -> io::Result<u32> {
        let end = (count as usize)
            .checked_mul(size_of::<T>())
            .and_then(|bytes| bytes.checked_add(offset as usize));
        if end.is_none_or(|end| end > self.length_bytes)
            || !(offset as usize).is_multiple_of(align_of::<T>())
        {
            return Err(io::Error::other(
                "io_uring ring offsets outside the mapping",
            ));
        }
        Ok(offset)
    }

    /// A pointer to the `index`th `T` at `offset` bytes.
    ///
    /// # Safety
    ///
    /// `offset` must have passed [`RingMapping::check`] for `T` and a count above `index`.
    unsafe fn at<T>(&self, offset: u32, index: u32) -> *mut T {
        // SAFETY: inside the mapping, by the caller's promise.
        unsafe {
            self.base
                .as_ptr()
                .add(offset as usize)
                .cast::<T>()
                .add(index as usize)
        }
    }

    /// The ring index (head or tail) at `offset` bytes.
    ///
    /// # Safety
    ///
    /// As [`RingMapping::at`] with `index` 0 for `AtomicU32`.
    unsafe fn index(&self, offset: u32) -> &AtomicU32 {
        // SAFETY: in bounds and aligned (the caller's promise); the kernel accesses ring
        // indices only atomically, and so do we.
        unsafe { AtomicU32::from_ptr(self.at::<u32>(offset, 0)) }
    }
}

impl Drop for RingMapping {
    fn drop(&mut self) {
        // SAFETY: `base` and `length_bytes` describe a mapping made by `map`, unmapped once;
        // nothing derived from it outlives `self` (pointers are made on each use).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.length_bytes);
        }
    }
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
    // Field order is drop order: the mappings go before the descriptor is closed.
    /// The submission and the completion ring, in one mapping (`IORING_FEAT_SINGLE_MMAP`).
    rings: RingMapping,
    /// The submission entries (`struct io_uring_sqe`).
    submission_entries: RingMapping,
    /// Where [`SocketOperation::Discard`] reads land: the kernel writes it, nothing reads it,
    /// so one buffer serves every discard of a batch.
    discard_buffer: Vec<u8>,
    /// Offsets into `rings`, checked against the mapping.
    submission_offsets: SubmissionRingOffsets,
    submission_mask: u32,
    /// How many entries the submission ring holds; a batch is split into parts this big.
    submission_capacity: u32,
    /// Offsets into `rings`, checked against the mapping.
    completion_offsets: CompletionRingOffsets,
    completion_mask: u32,
    descriptor: OwnedFd,
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
        let mut parameters = RingParameters {
            flags: IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
            ..RingParameters::default()
        };
        // SAFETY: `parameters` is a live, exclusively borrowed `struct io_uring_params` that
        // the kernel fills in.
        let result = unsafe {
            libc::syscall(
                libc::SYS_io_uring_setup,
                entries,
                &mut parameters as *mut RingParameters,
            )
        };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = RawFd::try_from(result).map_err(|_| io::Error::other("io_uring_setup"))?;
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let descriptor = unsafe { OwnedFd::from_raw_fd(raw) };
        if parameters.features & IORING_FEAT_SINGLE_MMAP == 0 {
            return Err(io::Error::other("io_uring without IORING_FEAT_SINGLE_MMAP"));
        }
        let submission = parameters.submission_offsets;
        let completion = parameters.completion_offsets;
        let submission_bytes =
            submission.array as usize + parameters.submission_entries as usize * size_of::<u32>();
        let completion_bytes = completion.entries as usize
            + parameters.completion_entries as usize * size_of::<CompletionEntry>();
        let rings = RingMapping::map(
            descriptor.as_fd(),
            submission_bytes.max(completion_bytes),
            IORING_OFF_SQ_RING,
        )?;
        let submission_entries = RingMapping::map(
            descriptor.as_fd(),
            parameters.submission_entries as usize * size_of::<SubmissionEntry>(),
            IORING_OFF_SQES,
        )?;
        rings.check::<u32>(submission.head, 1)?;
        rings.check::<u32>(submission.tail, 1)?;
        rings.check::<u32>(submission.ring_mask, 1)?;
        rings.check::<u32>(submission.array, parameters.submission_entries)?;
        submission_entries.check::<SubmissionEntry>(0, parameters.submission_entries)?;
        rings.check::<u32>(completion.head, 1)?;
        rings.check::<u32>(completion.tail, 1)?;
        rings.check::<u32>(completion.ring_mask, 1)?;
        rings.check::<CompletionEntry>(completion.entries, parameters.completion_entries)?;
        // SAFETY: checked above; the mask is written by the kernel before io_uring_setup
        // returns and never changes.
        let submission_mask = unsafe { rings.at::<u32>(submission.ring_mask, 0).read() };
        // SAFETY: as for the submission ring's mask.
        let completion_mask = unsafe { rings.at::<u32>(completion.ring_mask, 0).read() };
        // Every masked index must stay inside the arrays checked above.
        if submission_mask >= parameters.submission_entries
            || completion_mask >= parameters.completion_entries
        {
            return Err(io::Error::other(
                "io_uring ring masks larger than the rings",
            ));
        }
        Ok(IoUring {
            rings,
            submission_entries,
            discard_buffer: vec![0; DISCARD_LIMIT_BYTES],
            submission_offsets: submission,
            submission_mask,
            submission_capacity: parameters
                .submission_entries
                .min(parameters.completion_entries),
            completion_offsets: completion,
            completion_mask,
            descriptor,
        })
    }

    /// Runs the operations in order and replaces `results` with their outcomes, as
    /// [`run_socket_operations`] would, and returns when every one is complete (so the
    /// borrowed buffers are free again). An error means the ring failed: the operations
    /// it did not take were still run, one system call each, and the caller should stop
    /// using the ring.
    pub fn run(
        &mut self,
        operations: &mut [SocketOperation<'_>],
        results: &mut Vec<io::Result<usize>>,
    ) -> io::Result<()> {
        results.clear();
        let mut failure = Ok(());
        for part in operations.chunks_mut(self.submission_capacity.max(1) as usize) {
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
    /// many were submitted (all of them unless the ring misbehaves; the rest were withdrawn).
    fn run_part(
        &mut self,
        operations: &mut [SocketOperation<'_>],
        results: &mut [io::Result<usize>],
    ) -> io::Result<usize> {
        let offsets = self.submission_offsets;
        // Every ring access in this function is in bounds: `new` checked the offsets against
        // the mapping, and entry indices are masked to the ring size. Ring indices (head,
        // tail) are only accessed atomically, as the kernel does.
        // SAFETY: see above.
        let (head, tail) = unsafe {
            (
                self.rings.index(offsets.head).load(Ordering::Acquire),
                self.rings.index(offsets.tail).load(Ordering::Relaxed),
            )
        };
        // Every earlier batch was submitted in full or withdrawn before `run_part` returned.
        if head != tail {
            return Err(io::Error::other("io_uring submission queue not empty"));
        }
        let count = u32::try_from(operations.len()).unwrap_or(u32::MAX);
        if count > self.submission_capacity {
            return Err(io::Error::other("io_uring batch part too large"));
        }
        let discard_address = self.discard_buffer.as_mut_ptr() as u64;
        let mut next = tail;
        for (index, operation) in operations.iter_mut().enumerate() {
            let message_flags = match operation {
                SocketOperation::Receive { peek, .. } => {
                    SocketOperation::receive_flags(*peek).bits()
                }
                SocketOperation::Discard { .. } => SocketOperation::receive_flags(false).bits(),
                SocketOperation::Send { .. } => SocketOperation::SEND_FLAGS.bits(),
            };
            let (opcode, descriptor, address, length) = match operation {
                SocketOperation::Receive {
                    descriptor, buffer, ..
                } => (
                    IORING_OP_RECV,
                    descriptor.as_raw_fd(),
                    buffer.as_mut_ptr() as u64,
                    buffer.len(),
                ),
                SocketOperation::Send { descriptor, bytes } => (
                    IORING_OP_SEND,
                    descriptor.as_raw_fd(),
                    bytes.as_ptr() as u64,
                    bytes.len(),
                ),
                SocketOperation::Discard {
                    descriptor,
                    length_bytes,
                } => (
                    IORING_OP_RECV,
                    descriptor.as_raw_fd(),
                    discard_address,
                    (*length_bytes).min(DISCARD_LIMIT_BYTES),
                ),
            };
            let entry = SubmissionEntry {
                opcode,
                descriptor,
                address,
                length: u32::try_from(length).unwrap_or(u32::MAX),
                message_flags,
                user_data: index as u64,
                ..SubmissionEntry::default()
            };
            let slot = next & self.submission_mask;
            // SAFETY: see above; the queue was empty, so the kernel reads none of these
            // entries before the tail is published below.
            unsafe {
                self.submission_entries
                    .at::<SubmissionEntry>(0, slot)
                    .write(entry);
                self.rings.at::<u32>(offsets.array, slot).write(slot);
            }
            next = next.wrapping_add(1);
        }
        // SAFETY: see above; the release store publishes the entries written before it.
        unsafe {
            self.rings
                .index(offsets.tail)
                .store(next, Ordering::Release);
        }
        // Submit without waiting: non-blocking socket operations complete while they are
        // submitted, so their completions are posted when this call returns.
        let (submitted, failure) = loop {
            // SAFETY: no pointers are passed (no signal mask); the descriptor is open.
            let result = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_enter,
                    self.descriptor.as_raw_fd(),
                    count,
                    0u32,
                    0u32,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if result >= 0 {
                break (u32::try_from(result).unwrap_or(0).min(count), None);
            }
            // The call returns the submitted count whenever it submitted anything, so an
            // error means nothing was.
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                break (0, Some(error));
            }
        };
        if submitted < count {
            // Withdraw what the kernel did not take.
            // SAFETY: see above.
            unsafe {
                self.rings
                    .index(offsets.tail)
                    .store(tail.wrapping_add(submitted), Ordering::Release);
            }
        }
        let mut completed = self.reap(results);
        while completed < submitted {
            // SAFETY: as above.
            let result = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_enter,
                    self.descriptor.as_raw_fd(),
                    0u32,
                    submitted - completed,
                    IORING_ENTER_GETEVENTS,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if result < 0 {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    // Submitted operations may still write into the caller's buffers, so
                    // returning would be unsound.
                    log::error!("io_uring_enter failed with operations in flight: {error}");
                    std::process::abort();
                }
            }
            completed += self.reap(results);
        }
        match failure {
            Some(error) if submitted == 0 => Err(error),
            _ => Ok(submitted as usize),
        }
    }

    /// Moves the posted completions into `results`; returns how many there were.
    fn reap(&mut self, results: &mut [io::Result<usize>]) -> u32 {
        let offsets = self.completion_offsets;
        let mask = self.completion_mask;
        let region = &self.rings;
        // SAFETY: the offsets were checked in `new` and indices are masked to the ring
        // size; the entries below the tail were written before the kernel's release store
        // of the tail, which the acquire load orders before our reads.
        unsafe {
            let mut head = region.index(offsets.head).load(Ordering::Relaxed);
            let tail = region.index(offsets.tail).load(Ordering::Acquire);
            let count = tail.wrapping_sub(head);
            while head != tail {
                let entry = region
                    .at::<CompletionEntry>(offsets.entries, head & mask)
                    .read();
                if let Some(result) = usize::try_from(entry.user_data)
                    .ok()
                    .and_then(|index| results.get_mut(index))
                {
                    *result = if entry.result < 0 {
                        Err(io::Error::from_raw_os_error(-entry.result))
                    } else {
                        Ok(entry.result.unsigned_abs() as usize)
                    };
                }
                head = head.wrapping_add(1);
            }
            region.index(offsets.head).store(head, Ordering::Release);
            count
        }
    }
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
