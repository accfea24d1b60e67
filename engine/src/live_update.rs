//! `live-update`: the administrator replaces the running store with a new kernel image without losing its state, answered as C xenstored's stub domain answers (`docs/protocol.md`, "Live update").
//!
//! `xenstore-control live-update` sends `XS_CONTROL live-update` steps: `-b <size>` begins a
//! session owned by its connection and sets the image's room aside, `-d <n> <bytes>` uploads
//! the image in chunks, `-c <cmdline>` gives the new image's command line, `-s [-F] [-t
//! <seconds>] [-v <version>]` starts the update and `-a` aborts it. The engine keeps the
//! session and answers every step; the start is answered by no reply at all: the front end
//! polls ([`Engine::poll_live_update`]) until the engine says the time has come (no
//! transaction open, or, with `-F`, the timeout passed), then saves the state
//! ([`Engine::write_live_update_state`], which writes the start's `OK` into the stream so that
//! the new instance sends it) and starts the new image. While a session exists, a
//! transaction start of a connection with no transaction open is held back (C's
//! `consider_message()`), so that the update is not kept waiting by new transactions.

pub use crate::connection::HELD_REQUESTS_MAX;
use crate::engine::{Engine, Reply};
use crate::error::StateError;
use crate::fallible::{self, Text};
use crate::migration::FrontEndState;
use crate::wire::{self, MessageHeader, MessageType};
use crate::{ConnectionId, Platform, StoreError, StoreResult};
use alloc::vec::Vec;
use core::fmt::Write;

/// Whether the front end can replace itself with a kernel image (`Config::live_update`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LiveUpdateSupport {
    /// No live update: `live-update` is an unknown control command (`EINVAL` for every
    /// step, `-a` included) and `help` does not list it, as in a C xenstored built without
    /// live update (`NO_LIVE_UPDATE` leaves the command out of its table).
    #[default]
    None,
    /// The stub domain's live update: the new kernel image is uploaded with `-b` and `-d`.
    KernelImage {
        /// The largest image `-b` accepts (a larger one is answered `Allocation failure.`).
        image_size_limit_bytes: usize,
    },
    /// The Linux daemon's live update (C's `lu_daemon.c`): `-f FILE` names the new
    /// executable, which replaces the running process (`execve`, so its descriptors and
    /// pid stay) and reads the state at start-up.
    Executable,
}

/// A started live update whose time has come, handed to the front end: it saves the state
/// ([`Engine::write_live_update_state`]) and starts the image, or reports why it could not
/// ([`Engine::live_update_failed`]).
#[derive(Debug, PartialEq, Eq)]
pub struct LiveUpdatePlan {
    /// The complete uploaded image (empty for [`LiveUpdateSupport::Executable`]).
    pub image: Vec<u8>,
    /// The new executable named by `-f` ([`LiveUpdateSupport::Executable`] only).
    pub executable: Option<Vec<u8>>,
    /// The new image's command line from `-c`, without its NUL.
    pub command_line: Option<Vec<u8>>,
    /// The migration stream's version, 1 or 2 (`-v`, default 2).
    pub stream_version: u32,
    /// `-F`: the update goes ahead despite open transactions.
    pub forced: bool,
    /// The connection that asked for the update: the new instance sends it the `OK`.
    pub requester: ConnectionId,
    /// The `-s` request's header: its `req_id` and `tx_id` go into the reply.
    pub(crate) start_request: MessageHeader,
}

/// What [`Engine::poll_live_update`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum LiveUpdatePoll {
    /// No started live update (none at all, one being uploaded, or one already handed over).
    Idle,
    /// Started, and waiting for open transactions to end; poll again by
    /// [`Engine::live_update_deadline_ms`] or after requests were served.
    Waiting,
    /// The time has come: the front end owns the plan now.
    Ready(LiveUpdatePlan),
}

/// The longest migration stream version there is (`-v` above it is refused).
const NEWEST_STREAM_VERSION: u32 = crate::migration::STREAM_VERSION;

/// The replies of C's `lu.c` and `lu_minios.c`, NUL included (constants: no allocation).
mod answer {
    pub const OK: &[u8] = b"OK\0";
    pub const ALREADY_ACTIVE: &[u8] = b"live-update session already active.\0";
    pub const ALLOCATION_FAILURE: &[u8] = b"Allocation failure.\0";
    pub const NOT_IN_SESSION: &[u8] = b"Not in live-update session.\0";
    pub const TOO_MUCH_DATA: &[u8] = b"Too much kernel data.\0";
    pub const VERSION_NOT_SUPPORTED: &[u8] = b"Migration stream version not supported.\0";
    pub const KERNEL_NOT_COMPLETE: &[u8] = b"Kernel not complete.\0";
    pub const NO_SESSION: &[u8] = b"No live-update session active.\0";
    pub const LONG_TRANSACTIONS: &str = "Domains with long running transactions:";
    pub const OVERLAPPING_TRANSACTIONS: &[u8] = b"Overlapping transactions\0";
}

/// One step of `live-update`, parsed (`request.rs`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LiveUpdateStep<'a> {
    /// `-b <size>`: begin a session and set `image_size_bytes` aside for the image.
    Begin { image_size_bytes: u64 },
    /// `-d <n> <n bytes>`: the next chunk of the image (binary: it may hold NULs).
    Data { chunk: &'a [u8] },
    /// `-c <cmdline>`.
    CommandLine { text: &'a [u8] },
    /// `-s [-F] [-t <seconds>] [-v <version>]`.
    Start {
        forced: bool,
        timeout_seconds: u32,
        stream_version: u32,
    },
    /// `-a`.
    Abort,
    /// `-f <file>`: the daemon's new executable.
    Executable { file: &'a [u8] },
}

/// Arguments C's `do_control()` passes on: `live-update` has at most 7 strings, the
/// command's name included (`control.c`, its table's `max_pars`); later ones are ignored.
const ARGUMENTS_MAX: usize = 6;

/// Parses the payload of `XS_CONTROL live-update ...` (`payload` whole, the command's name
/// included), as C's `do_control_lu()` and `lu_arch()` read it. `-d`'s data is binary and
/// taken as exactly `<n>` bytes after the second argument, not split at NULs.
pub(crate) fn parse_step(payload: &[u8]) -> StoreResult<LiveUpdateStep<'_>> {
    let mut strings = payload.split(|byte| *byte == 0);
    // The command's name (checked by the caller).
    strings.next();
    let first = strings.next().ok_or(StoreError::Invalid)?;
    if first == b"-d" {
        let count_text = strings.next().ok_or(StoreError::Invalid)?;
        let count = wire::parse_decimal(count_text)
            .and_then(|count| usize::try_from(count).ok())
            .ok_or(StoreError::Invalid)?;
        // "live-update\0-d\0<n>\0": the data starts after the third NUL.
        let data_offset = b"live-update".len() + first.len() + count_text.len() + 3;
        let chunk = payload
            .get(data_offset..)
            .and_then(|data| data.get(..count))
            .ok_or(StoreError::Invalid)?;
        return Ok(LiveUpdateStep::Data { chunk });
    }
    let arguments = wire::split_strings(payload)?;
    let arguments = arguments.get(1..).unwrap_or(&[]);
    let arguments = arguments.get(..ARGUMENTS_MAX).unwrap_or(arguments);
    Ok(match arguments {
        [b"-a"] => LiveUpdateStep::Abort,
        [b"-c", text] => LiveUpdateStep::CommandLine { text },
        [b"-f", file] => LiveUpdateStep::Executable { file },
        [b"-b", size] => LiveUpdateStep::Begin {
            image_size_bytes: wire::parse_decimal(size).ok_or(StoreError::Invalid)?,
        },
        [b"-s", options @ ..] => parse_start(options)?,
        _ => return Err(StoreError::Invalid),
    })
}

/// The options of `-s`, in any order, numbers read as C's `atoi()` reads them; without
/// `-t` the timeout is 0 (C's default; its client always sends `-t`, 60 by default).
fn parse_start<'a>(options: &[&[u8]]) -> StoreResult<LiveUpdateStep<'a>> {
    let mut forced = false;
    let mut timeout_seconds = 0;
    let mut stream_version = NEWEST_STREAM_VERSION;
    let mut rest = options.iter();
    while let Some(option) = rest.next() {
        match *option {
            b"-F" => forced = true,
            b"-t" if rest.len() > 0 => {
                timeout_seconds = rest.next().map_or(0, |text| c_atoi(text));
            }
            b"-v" if rest.len() > 0 => {
                stream_version = rest.next().map_or(0, |text| c_atoi(text));
            }
            _ => return Err(StoreError::Invalid),
        }
    }
    Ok(LiveUpdateStep::Start {
        forced,
        timeout_seconds,
        stream_version,
    })
}

fn c_atoi(text: &[u8]) -> u32 {
    crate::request::c_atoi_unsigned(text)
}

/// The live-update session (at most one; C's `lu_status`).
#[derive(Debug)]
pub(crate) struct Session {
    /// The connection that began it; only it may upload, set the command line and start.
    owner: ConnectionId,
    /// The image so far; its room (`image_size_bytes`) was reserved by `-b`.
    image: Vec<u8>,
    image_size_bytes: usize,
    /// `-f`'s file (the daemon's live update).
    executable: Option<Vec<u8>>,
    command_line: Option<Vec<u8>>,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    /// Uploading: `-d` and `-c` steps.
    Uploading,
    /// `-s` accepted: its reply is owed, and the update waits for its time.
    Started(Start),
    /// The plan was handed to the front end (which saves and starts the image, or reports
    /// a failure); transaction starts stay held back until then.
    HandedOver,
}

#[derive(Clone, Copy, Debug)]
struct Start {
    request: MessageHeader,
    forced: bool,
    timeout_milliseconds: u64,
    started_at_milliseconds: u64,
    stream_version: u32,
}

/// The open transactions as the start's rules see them (C `lu_check_lu_allowed()`).
struct TransactionCensus {
    /// Connections with a transaction open.
    open: usize,
    /// Of those, the ones whose oldest transaction is at least the timeout old.
    long_running: usize,
    /// When the last of the others becomes long-running.
    last_becomes_long_at_milliseconds: u64,
}

impl Engine {
    /// Runs one `live-update` step for `connection` (the privileged domain's: checked
    /// before parsing). `header` is the request's, kept for the start's late reply.
    pub(crate) fn control_live_update(
        &mut self,
        connection: ConnectionId,
        header: &MessageHeader,
        step: LiveUpdateStep<'_>,
    ) -> StoreResult<Reply> {
        // C without live update knows no such command; the upload steps belong to the
        // stub (`lu_minios.c`), `-f` to the daemon (`lu_daemon.c`): the other is EINVAL.
        let image_size_limit_bytes = match (self.config.live_update, &step) {
            (LiveUpdateSupport::None, _)
            | (LiveUpdateSupport::KernelImage { .. }, LiveUpdateStep::Executable { .. })
            | (
                LiveUpdateSupport::Executable,
                LiveUpdateStep::Begin { .. } | LiveUpdateStep::Data { .. },
            ) => return Err(StoreError::Invalid),
            (
                LiveUpdateSupport::KernelImage {
                    image_size_limit_bytes,
                },
                _,
            ) => image_size_limit_bytes,
            (LiveUpdateSupport::Executable, _) => 0,
        };
        let owns_session = self
            .live_update
            .as_ref()
            .is_some_and(|session| session.owner == connection);
        // The session as the owner's steps see it: C has no phases, so uploading and the
        // command line go on after the start (the image is complete by then); once the
        // plan is handed over, the session is the front end's.
        let owned_session = match self.live_update.as_mut() {
            Some(session) if owns_session && !matches!(session.phase, Phase::HandedOver) => {
                Some(session)
            }
            _ => None,
        };
        let answer = match step {
            LiveUpdateStep::Abort => {
                // Any connection may abort (C `lu_abort()`), a started update included,
                // whose start is then answered as C's delayed start answers it.
                match self.live_update.take() {
                    None => answer::NO_SESSION,
                    Some(session) => {
                        log::info!("live-update: aborted by connection {}", connection.0);
                        self.end_session(session, b"Cancellation was requested");
                        answer::OK
                    }
                }
            }
            LiveUpdateStep::Begin { image_size_bytes } => {
                if self.live_update.is_some() {
                    answer::ALREADY_ACTIVE
                } else {
                    self.begin_session(connection, image_size_bytes, image_size_limit_bytes)
                }
            }
            LiveUpdateStep::Executable { file } => {
                if self.live_update.is_some() {
                    answer::ALREADY_ACTIVE
                } else {
                    self.begin_executable_session(connection, file)
                }
            }
            LiveUpdateStep::Data { chunk } => match owned_session {
                None => answer::NOT_IN_SESSION,
                Some(session) => {
                    if session.image.len().saturating_add(chunk.len()) > session.image_size_bytes {
                        answer::TOO_MUCH_DATA
                    } else {
                        // Within the room `-b` reserved: this does not allocate.
                        fallible::extend(&mut session.image, chunk)?;
                        answer::OK
                    }
                }
            },
            LiveUpdateStep::CommandLine { text } => match owned_session {
                None => answer::NOT_IN_SESSION,
                Some(session) => match fallible::vec_with_capacity(text.len()) {
                    Ok(mut command_line) => {
                        command_line.extend_from_slice(text);
                        session.command_line = Some(command_line);
                        answer::OK
                    }
                    Err(_) => answer::ALLOCATION_FAILURE,
                },
            },
            LiveUpdateStep::Start {
                forced,
                timeout_seconds,
                stream_version,
            } => match owned_session {
                None => answer::NOT_IN_SESSION,
                // C would delay a second start beside the first (and answer at most one of
                // them as asked); here one start at a time is owed a reply.
                Some(Session {
                    phase: Phase::Started(_),
                    ..
                }) => answer::ALREADY_ACTIVE,
                Some(_) if stream_version == 0 || stream_version > NEWEST_STREAM_VERSION => {
                    answer::VERSION_NOT_SUPPORTED
                }
                Some(session) if session.image.len() != session.image_size_bytes => {
                    answer::KERNEL_NOT_COMPLETE
                }
                Some(session) => {
                    log::info!(
                        "live-update: start, forced {forced}, timeout {timeout_seconds} s, \
                         stream version {stream_version}"
                    );
                    session.phase = Phase::Started(Start {
                        request: *header,
                        forced,
                        timeout_milliseconds: u64::from(timeout_seconds) * 1000,
                        started_at_milliseconds: self.now_milliseconds,
                        stream_version,
                    });
                    // Answered later: by the refusal, the failure, or the new instance.
                    self.reply_withheld = true;
                    return Ok(Reply::Borrowed(b""));
                }
            },
        };
        Ok(Reply::Borrowed(answer))
    }

    /// `-b`: a session owned by `connection`, with the image's room reserved (fallibly: a
    /// size the memory or the front end's limit cannot hold is `Allocation failure.`).
    fn begin_session(
        &mut self,
        connection: ConnectionId,
        image_size_bytes: u64,
        image_size_limit_bytes: usize,
    ) -> &'static [u8] {
        let size = usize::try_from(image_size_bytes)
            .ok()
            .filter(|size| *size <= image_size_limit_bytes);
        let image = size.and_then(|size| fallible::vec_with_capacity(size).ok());
        let (Some(size), Some(image)) = (size, image) else {
            // C keeps a session without an image after this failure (its `-s` then fails
            // with "No new kernel"); we keep none, so that a new `-b` can start over.
            log::warn!("live-update: no room for an image of {image_size_bytes} bytes");
            return answer::ALLOCATION_FAILURE;
        };
        log::info!(
            "live-update: image of {size} bytes, connection {}",
            connection.0
        );
        self.live_update = Some(Session {
            owner: connection,
            image,
            image_size_bytes: size,
            executable: None,
            command_line: None,
            phase: Phase::Uploading,
        });
        answer::OK
    }

    /// `-f FILE`: a session owned by `connection` for the daemon's new executable. C checks
    /// here that the file exists and is executable; the engine cannot look at files, so
    /// the front end checks before it replaces itself, and a failure answers the start.
    fn begin_executable_session(&mut self, connection: ConnectionId, file: &[u8]) -> &'static [u8] {
        let Ok(mut executable) = fallible::vec_with_capacity(file.len()) else {
            return answer::ALLOCATION_FAILURE;
        };
        executable.extend_from_slice(file);
        log::info!(
            "live-update: executable of {} bytes' name, connection {}",
            file.len(),
            connection.0
        );
        self.live_update = Some(Session {
            owner: connection,
            image: Vec::new(),
            image_size_bytes: 0,
            executable: Some(executable),
            command_line: None,
            phase: Phase::Uploading,
        });
        answer::OK
    }

    /// Ends a session: a start still owed its reply is answered `reason` (refusal,
    /// cancellation). Held-back transaction starts go on when their connections are next
    /// served.
    fn end_session(&mut self, session: Session, reason: &[u8]) {
        if let Phase::Started(start) = session.phase {
            self.answer_start(session.owner, &start.request, reason);
        }
        self.wake_held_requests();
    }

    /// The session is over: connections holding transaction starts back are served next
    /// (as connections with output are), which runs them (`Engine::run_held_request`).
    /// Without this a connection whose client has nothing else to send would keep them.
    fn wake_held_requests(&mut self) {
        for (connection, state) in self.connections.iter() {
            if !state.held_requests.is_empty() && self.output_ready.try_insert(*connection).is_err()
            {
                log::warn!(
                    "live-update: no memory to wake connection {}; its held requests run with its next input",
                    connection.0
                );
            }
        }
    }

    /// Queues the start request's late reply: `text` and a NUL, as an `XS_CONTROL` reply
    /// with the request's ids (C `do_lu_start()` answers its saved request).
    fn answer_start(&mut self, connection: ConnectionId, request: &MessageHeader, text: &[u8]) {
        let mut payload = Vec::new();
        let mut message = Vec::new();
        let encoded = fallible::extend(&mut payload, text)
            .and_then(|()| fallible::push(&mut payload, 0))
            .and_then(|()| {
                wire::encode_into(
                    &mut message,
                    MessageType::Control.number(),
                    request.request_id,
                    request.transaction_id,
                    &payload,
                )
            });
        match encoded {
            Ok(()) => self.queue_reply(connection, message),
            Err(_) => log::warn!(
                "live-update: no memory to answer connection {}",
                connection.0
            ),
        }
    }

    /// Whether a live-update session exists: transaction starts of connections with no
    /// transaction open are held back meanwhile (C `lu_is_pending()`).
    pub(crate) fn live_update_pending(&self) -> bool {
        self.live_update.is_some()
    }

    /// The connection went away: a session it owns ends (C frees it with the connection).
    pub(crate) fn live_update_connection_gone(&mut self, connection: ConnectionId) {
        if self
            .live_update
            .as_ref()
            .is_some_and(|session| session.owner == connection)
        {
            log::info!("live-update: its connection went away, session ended");
            self.live_update = None;
            self.wake_held_requests();
        }
    }

    /// Applies the start's rules at the engine's time (C `do_lu_start()`, looked at on
    /// every pass of its main loop): with no transaction open anywhere, or with `-F` and
    /// every open one older than the timeout, the update goes ahead (`Ready`); before the
    /// timeout it waits; after it, `-F` goes ahead anyway and otherwise the start is
    /// refused with the reason, which this queues itself (then `Idle`: the session ended).
    pub fn poll_live_update(&mut self, platform: &mut dyn Platform) -> LiveUpdatePoll {
        self.now_milliseconds = platform.now_milliseconds();
        let Some(Session {
            phase: Phase::Started(start),
            ..
        }) = self.live_update.as_ref()
        else {
            return LiveUpdatePoll::Idle;
        };
        let start = *start;
        let now = self.now_milliseconds;
        let census = self.transaction_census(start.timeout_milliseconds);
        let allowed = census.open == 0 || (start.forced && census.long_running == census.open);
        if !allowed {
            if now
                < start
                    .started_at_milliseconds
                    .saturating_add(start.timeout_milliseconds)
            {
                return LiveUpdatePoll::Waiting;
            }
            if !start.forced {
                let reason = self.refusal_reason(start.timeout_milliseconds);
                log::warn!("live-update: refused, transactions are open");
                if let Some(session) = self.live_update.take() {
                    match reason {
                        Ok(text) => self.end_session(session, &text),
                        Err(_) => self.end_session(session, b"Allocation failure"),
                    }
                }
                return LiveUpdatePoll::Idle;
            }
        }
        let Some(session) = self.live_update.as_mut() else {
            return LiveUpdatePoll::Idle;
        };
        session.phase = Phase::HandedOver;
        log::info!("live-update: going ahead");
        LiveUpdatePoll::Ready(LiveUpdatePlan {
            image: core::mem::take(&mut session.image),
            executable: session.executable.take(),
            command_line: session.command_line.take(),
            stream_version: start.stream_version,
            forced: start.forced,
            requester: session.owner,
            start_request: start.request,
        })
    }

    /// The front end could not carry the plan out (before the point of no return): the
    /// start is answered `reason` and the session ends; held-back transaction starts go on.
    pub fn live_update_failed(
        &mut self,
        plan: LiveUpdatePlan,
        reason: &str,
        platform: &mut dyn Platform,
    ) {
        self.now_milliseconds = platform.now_milliseconds();
        log::warn!("live-update: failed: {reason}");
        if self
            .live_update
            .as_ref()
            .is_some_and(|session| session.owner == plan.requester)
        {
            self.live_update = None;
        }
        self.answer_start(plan.requester, &plan.start_request, reason.as_bytes());
        self.wake_held_requests();
    }

    /// When a poll may next change its answer because time passed (`None`: no started
    /// update): the start's timeout, or earlier, with `-F`, when the last open transaction
    /// becomes older than the timeout. The end of a transaction changes it too: front ends
    /// poll after serving requests.
    pub fn live_update_deadline_ms(&self) -> Option<u64> {
        let Some(Session {
            phase: Phase::Started(start),
            ..
        }) = self.live_update.as_ref()
        else {
            return None;
        };
        let timeout_at = start
            .started_at_milliseconds
            .saturating_add(start.timeout_milliseconds);
        let census = self.transaction_census(start.timeout_milliseconds);
        if start.forced && census.open > census.long_running {
            return Some(timeout_at.min(census.last_becomes_long_at_milliseconds));
        }
        Some(timeout_at)
    }

    /// The state to hand to the new instance (`docs/migration-stream.md`, "Live update"):
    /// the stream of [`Engine::write_state`] in the plan's version, with the start's `OK`
    /// (the request's header, `len` 3, `OK\0`, as C's `lu_write_response()`) after the
    /// requester's unsent output.
    pub fn write_live_update_state(
        &self,
        plan: &LiveUpdatePlan,
        front_end: &dyn FrontEndState,
    ) -> Result<Vec<u8>, StateError> {
        let mut reply = Vec::new();
        wire::encode_into(
            &mut reply,
            MessageType::Control.number(),
            plan.start_request.request_id,
            plan.start_request.transaction_id,
            answer::OK,
        )
        .map_err(|_| StateError::OutOfMemory)?;
        self.write_stream(
            front_end,
            plan.stream_version,
            Some((plan.requester, reply.as_slice())),
        )
    }

    /// Counts the connections with open transactions and those whose oldest transaction
    /// is at least `timeout_milliseconds` old (C keeps one start time per connection: that
    /// of its oldest open transaction, as near as makes no difference).
    fn transaction_census(&self, timeout_milliseconds: u64) -> TransactionCensus {
        let now = self.now_milliseconds;
        let mut census = TransactionCensus {
            open: 0,
            long_running: 0,
            last_becomes_long_at_milliseconds: 0,
        };
        for state in self.connections.values() {
            let Some(oldest) = state.oldest_transaction_start_milliseconds() else {
                continue;
            };
            census.open += 1;
            let becomes_long_at = oldest.saturating_add(timeout_milliseconds);
            if now >= becomes_long_at {
                census.long_running += 1;
            } else {
                census.last_becomes_long_at_milliseconds = census
                    .last_becomes_long_at_milliseconds
                    .max(becomes_long_at);
            }
        }
        census
    }

    /// C's `lu_reject_reason()`: the domains whose transactions are older than the timeout,
    /// with their age in whole seconds, or `Overlapping transactions` when none is.
    fn refusal_reason(&self, timeout_milliseconds: u64) -> StoreResult<Vec<u8>> {
        let now = self.now_milliseconds;
        let mut text = Text::new();
        let mut any = false;
        for state in self.connections.values() {
            let Some(oldest) = state.oldest_transaction_start_milliseconds() else {
                continue;
            };
            let age = now.saturating_sub(oldest);
            if age >= timeout_milliseconds {
                if !any {
                    let _ = text.write_str(answer::LONG_TRANSACTIONS);
                    any = true;
                }
                // C's `conn->id` is the domain id of a ring connection (0 for a socket).
                let _ = write!(text, "\nDomain {}: {} s", state.domain.0, age / 1000);
            }
        }
        if !any {
            let reason = answer::OVERLAPPING_TRANSACTIONS;
            let mut bytes = fallible::vec_with_capacity(reason.len())?;
            bytes.extend_from_slice(reason.strip_suffix(b"\0").unwrap_or(reason));
            return Ok(bytes);
        }
        let mut bytes = text.into_reply()?;
        bytes.pop();
        Ok(bytes)
    }
}

/// Requests held back while a session exists (C's delayed transaction starts).
impl Engine {
    /// Holds a framed request back instead of running it, and returns `None`, when it is a
    /// transaction start of a connection with no transaction open while a live update is
    /// pending (C 4.22 `consider_message()`: new transactions would only keep the update
    /// waiting); otherwise, or when the connection holds [`crate::connection::HELD_REQUESTS_MAX`]
    /// already or no memory is left to hold it, gives it back to be run.
    #[allow(clippy::type_complexity)]
    pub(crate) fn hold_back(
        &mut self,
        connection: ConnectionId,
        header: MessageHeader,
        payload: StoreResult<Vec<u8>>,
    ) -> Option<(MessageHeader, StoreResult<Vec<u8>>)> {
        let pending = self.live_update_pending();
        let Some(state) = self.connections.get_mut(&connection) else {
            return Some((header, payload));
        };
        if !pending
            || header.message_type != MessageType::TransactionStart.number()
            || !state.transactions.is_empty()
            || state.held_requests.len() >= crate::connection::HELD_REQUESTS_MAX
            || state.held_requests.try_reserve(1).is_err()
        {
            return Some((header, payload));
        }
        state.held_requests.push((header, payload));
        None
    }

    /// Runs the connection's held-back requests, in order, once no live update is pending
    /// any more and as far as their answers have room (the end of the session wakes every
    /// connection that holds some: `live_update.rs`).
    pub(crate) fn run_held_request(
        &mut self,
        platform: &mut dyn Platform,
        connection: ConnectionId,
    ) {
        if self.live_update_pending() {
            return;
        }
        loop {
            self.prepare_input(connection);
            let Some(state) = self.connections.get_mut(&connection) else {
                return;
            };
            if state.held_requests.is_empty() || state.failure.is_some() || !state.has_reply_room()
            {
                return;
            }
            let (header, payload) = state.held_requests.remove(0);
            let payload = payload.as_deref().map_err(|error| *error);
            self.process(platform, connection, header, payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(text: &str) -> Vec<u8> {
        text.bytes()
            .map(|byte| if byte == b'|' { 0 } else { byte })
            .collect()
    }

    #[test]
    fn steps_parse_as_c_reads_them() {
        let parse = |text: &str| parse_step(&payload(text)).map(|_| ()).err();
        assert_eq!(
            parse_step(&payload("live-update|-b|100|")),
            Ok(LiveUpdateStep::Begin {
                image_size_bytes: 100
            })
        );
        let data = payload("live-update|-d|4|a|b||");
        assert_eq!(
            parse_step(&data),
            Ok(LiveUpdateStep::Data { chunk: b"a\0b\0" })
        );
        assert_eq!(parse("live-update|-d|5|a|b|"), Some(StoreError::Invalid));
        assert_eq!(parse("live-update|-d|x|ab|"), Some(StoreError::Invalid));
        assert_eq!(parse("live-update|-b|12k|"), Some(StoreError::Invalid));
        assert_eq!(
            parse_step(&payload("live-update|-s|-v|1|-F|-t|30|")),
            Ok(LiveUpdateStep::Start {
                forced: true,
                timeout_seconds: 30,
                stream_version: 1
            })
        );
        assert_eq!(
            parse_step(&payload("live-update|-s|")),
            Ok(LiveUpdateStep::Start {
                forced: false,
                timeout_seconds: 0,
                stream_version: 2
            })
        );
        // The daemon's step; the stub answers it EINVAL (`control_live_update`).
        assert_eq!(
            parse_step(&payload("live-update|-f|/boot/xenstored|")),
            Ok(LiveUpdateStep::Executable {
                file: b"/boot/xenstored"
            })
        );
        for bad in [
            "live-update|",
            "live-update|-a|x|",
            "live-update|-s|-t|",
            "live-update|-s|-x|",
            "live-update|-f|",
            "live-update|-c|",
        ] {
            assert_eq!(parse(bad), Some(StoreError::Invalid), "{bad}");
        }
    }
}
