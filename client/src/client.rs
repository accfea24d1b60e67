//! A xenstore client over the Unix socket or a simulated guest's ring, for `xenstore-guest`, the daemon's tests and the benchmark.
//!
//! Requests are sent one at a time; the reply is recognised by its `req_id`. Watch events that
//! arrive meanwhile are queued for [`Client::next_event`]; replies to other request ids (left
//! over from an earlier process acting as the same guest) are skipped.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use xenstore_engine::DomainId;
use xenstore_engine::ring::{Ring, offset};

use crate::simulation::{DomainFiles, NotificationFifo};
use crate::sys::{self, PollEntry, SharedPage};
use xenstore_engine::wire::{MessageType, join_strings};

use crate::message::{Framer, Message, payload_strings};

/// Why a request did not succeed.
#[derive(Debug)]
pub enum ClientError {
    /// The transport failed or timed out.
    Io(io::Error),
    /// The store answered `XS_ERROR` with this name (`EACCES`, ...).
    Store(String),
    /// The store answered something that is not a valid reply.
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(error) => write!(formatter, "{error}"),
            ClientError::Store(name) => write!(formatter, "{name}"),
            ClientError::Protocol(text) => write!(formatter, "protocol error: {text}"),
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(error: io::Error) -> Self {
        ClientError::Io(error)
    }
}

impl ClientError {
    /// The store's error name, if this is a store error.
    pub fn store_error(&self) -> Option<&str> {
        match self {
            ClientError::Store(name) => Some(name),
            _ => None,
        }
    }
}

/// Moves bytes to and from a store.
pub trait Transport {
    /// Sends all of `bytes` (waiting for room up to `timeout`).
    fn send(&mut self, bytes: &[u8], timeout: Duration) -> io::Result<()>;
    /// Receives some bytes; `Ok(0)` when nothing arrived within `timeout`.
    fn receive(&mut self, buffer: &mut [u8], timeout: Duration) -> io::Result<usize>;
}

/// The Unix socket: the client is privileged (dom0).
pub struct SocketTransport {
    stream: UnixStream,
    /// The socket's `SO_SNDTIMEO` and `SO_RCVTIMEO` as last set, so that a request does
    /// not cost two more system calls to set them again (see [`timeout_to_set`]).
    write_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
}

impl SocketTransport {
    pub fn connect(path: &Path) -> io::Result<SocketTransport> {
        Ok(SocketTransport {
            stream: UnixStream::connect(path)?,
            write_timeout: None,
            read_timeout: None,
        })
    }
}

/// The timeout to give the socket when `wanted` is asked for and `current` is set, or
/// `None` to keep `current`. The socket's timeout only bounds a wait that nothing ends, so
/// a current one slightly longer than asked (by at most 1/16, e.g. 10 s set while a
/// request has 9.7 s left) is kept; a shorter one never is.
fn timeout_to_set(current: Option<Duration>, wanted: Duration) -> Option<Duration> {
    // A zero timeout means "block forever" to the socket.
    let wanted = wanted.max(Duration::from_millis(1));
    match current {
        Some(current) if current >= wanted && current - wanted <= wanted / 16 => None,
        _ => Some(wanted),
    }
}

impl Transport for SocketTransport {
    fn send(&mut self, bytes: &[u8], timeout: Duration) -> io::Result<()> {
        if let Some(timeout) = timeout_to_set(self.write_timeout, timeout) {
            self.stream.set_write_timeout(Some(timeout))?;
            self.write_timeout = Some(timeout);
        }
        self.stream.write_all(bytes)
    }

    fn receive(&mut self, buffer: &mut [u8], timeout: Duration) -> io::Result<usize> {
        if let Some(timeout) = timeout_to_set(self.read_timeout, timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
        }
        match self.stream.read(buffer) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the store closed the connection",
            )),
            Ok(count) => Ok(count),
            // Nothing this time: the caller reads again until its deadline (a signal that
            // interrupted the read is no failure of the store: seen once in CI-like runs).
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(error) => Err(error),
        }
    }
}

/// A simulated guest's ring (see `simulation.rs`).
pub struct RingTransport {
    page: SharedPage,
    to_server: NotificationFifo,
    to_guest: NotificationFifo,
    port: u32,
}

impl RingTransport {
    /// Attaches to the existing files of `domain`; the port is read from the page's `evtchn_port`.
    pub fn attach(run_directory: &Path, domain: DomainId) -> io::Result<RingTransport> {
        let files = DomainFiles::new(run_directory, domain);
        let page = SharedPage::map(&files.ring())?;
        let port = Ring::new(&page).event_channel_port();
        Ok(RingTransport {
            page,
            to_server: NotificationFifo::open(&files.to_server())?,
            to_guest: NotificationFifo::open(&files.to_guest())?,
            port,
        })
    }

    /// The ring page, for tests that abuse it.
    pub fn page(&self) -> &SharedPage {
        &self.page
    }

    /// Notifies the store.
    pub fn notify(&self) -> io::Result<()> {
        self.to_server.notify(self.port)
    }

    fn check_error(&self) -> io::Result<()> {
        use xenstore_engine::ring::RingMemory;
        let error = self.page.load_u32_acquire(offset::ERROR);
        if error != 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("the store stopped serving this ring (error field {error})"),
            ));
        }
        Ok(())
    }

    /// Waits for a notification from the store, at most `timeout` (and at most 50 ms, so that
    /// the caller re-checks the ring even if a notification was lost).
    fn wait(&self, timeout: Duration) -> io::Result<()> {
        let slice = timeout.min(Duration::from_millis(50));
        let mut entries = [PollEntry::new(self.to_guest.as_fd(), true, false)];
        sys::poll(&mut entries, slice.as_millis() as i32)?;
        if entries[0].readable {
            self.to_guest.drain()?;
        }
        Ok(())
    }
}

impl Transport for RingTransport {
    fn send(&mut self, bytes: &[u8], timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut sent = 0;
        while sent < bytes.len() {
            self.check_error()?;
            let written = Ring::new(&self.page)
                .client_write(&bytes[sent..])
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
            sent += written;
            self.notify()?;
            if sent < bytes.len() {
                let now = Instant::now();
                if now >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request ring stayed full",
                    ));
                }
                self.wait(deadline - now)?;
            }
        }
        Ok(())
    }

    fn receive(&mut self, buffer: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let count = Ring::new(&self.page)
                .client_read(buffer)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
            if count > 0 {
                // The store may be waiting for room in the response ring.
                self.notify()?;
                return Ok(count);
            }
            self.check_error()?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(0);
            }
            self.wait(deadline - now)?;
        }
    }
}

/// A client speaking `xs_wire.h` over some transport.
pub struct Client<T: Transport> {
    transport: T,
    framer: Framer,
    next_request_id: u32,
    events: VecDeque<Message>,
    /// How long one request may take.
    pub timeout: Duration,
}

impl Client<SocketTransport> {
    /// A privileged client on the store's socket.
    pub fn connect(socket_path: &Path) -> Result<Client<SocketTransport>, ClientError> {
        Ok(Client::new(SocketTransport::connect(socket_path)?))
    }
}

impl Client<RingTransport> {
    /// Acts as `domain` through its existing ring files.
    pub fn attach(
        run_directory: &Path,
        domain: DomainId,
    ) -> Result<Client<RingTransport>, ClientError> {
        Ok(Client::new(RingTransport::attach(run_directory, domain)?))
    }

    /// Creates guest `domain`'s files, has the store introduce it (through `dom0`), and attaches.
    pub fn create_and_introduce(
        dom0: &mut Client<impl Transport>,
        run_directory: &Path,
        domain: DomainId,
        port: u32,
    ) -> Result<Client<RingTransport>, ClientError> {
        DomainFiles::new(run_directory, domain).create(port)?;
        // The frame number is meaningless here; grant ref 1 is the ring file.
        dom0.introduce(domain, 0, port)?;
        Client::attach(run_directory, domain)
    }
}

impl<T: Transport> Client<T> {
    pub fn new(transport: T) -> Client<T> {
        // Request ids start from the process id so that replies left in a ring by an earlier
        // process acting as the same guest are not mistaken for ours.
        Client {
            transport,
            framer: Framer::default(),
            next_request_id: std::process::id().wrapping_mul(65_536),
            events: VecDeque::new(),
            timeout: Duration::from_secs(10),
        }
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Sends raw bytes (for tests of malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        Ok(self.transport.send(bytes, self.timeout)?)
    }

    /// The next complete message, waiting at most `timeout`.
    pub fn receive_message(&mut self, timeout: Duration) -> Result<Option<Message>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(message) = self.framer.next_message() {
                return Ok(Some(message));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut buffer = [0u8; 4096];
            let count = self.transport.receive(&mut buffer, deadline - now)?;
            self.framer.push(&buffer[..count]);
        }
    }

    /// Sends one request and returns the reply message (which may be `XS_ERROR`). The type
    /// is a [`MessageType`] or any raw number.
    pub fn request(
        &mut self,
        message_type: impl Into<u32>,
        transaction_id: u32,
        payload: &[u8],
    ) -> Result<Message, ClientError> {
        let request_id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1);
        let message = Message::new(message_type, request_id, transaction_id, payload.to_vec());
        self.transport.send(&message.to_bytes(), self.timeout)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some(reply) = self.receive_message(remaining)? else {
                return Err(ClientError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no reply from the store",
                )));
            };
            if reply.is(MessageType::WatchEvent) {
                self.events.push_back(reply);
            } else if reply.header.request_id == request_id {
                return Ok(reply);
            }
        }
    }

    /// Sends one request; an `XS_ERROR` reply becomes [`ClientError::Store`].
    pub fn call(
        &mut self,
        message_type: impl Into<u32>,
        transaction_id: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let message_type = message_type.into();
        let reply = self.request(message_type, transaction_id, payload)?;
        if reply.is(MessageType::Error) {
            let name = payload_strings(&reply.payload)
                .into_iter()
                .next()
                .unwrap_or_default();
            return Err(ClientError::Store(name));
        }
        if reply.header.message_type != message_type {
            return Err(ClientError::Protocol(format!(
                "reply type {} to request type {message_type}",
                reply.header.message_type
            )));
        }
        Ok(reply.payload)
    }

    fn expect_ok(payload: Vec<u8>) -> Result<(), ClientError> {
        if payload == b"OK\0" {
            Ok(())
        } else {
            Err(ClientError::Protocol(format!(
                "expected OK, got {:?}",
                String::from_utf8_lossy(&payload)
            )))
        }
    }

    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, ClientError> {
        self.read_in(0, path)
    }

    pub fn read_in(&mut self, transaction_id: u32, path: &str) -> Result<Vec<u8>, ClientError> {
        self.call(MessageType::Read, transaction_id, &join_strings(&[path]))
    }

    /// Reads a value as text.
    pub fn read_string(&mut self, path: &str) -> Result<String, ClientError> {
        Ok(String::from_utf8_lossy(&self.read(path)?).into_owned())
    }

    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), ClientError> {
        self.write_in(0, path, value)
    }

    pub fn write_in(
        &mut self,
        transaction_id: u32,
        path: &str,
        value: &[u8],
    ) -> Result<(), ClientError> {
        let mut payload = join_strings(&[path]);
        payload.extend_from_slice(value);
        Self::expect_ok(self.call(MessageType::Write, transaction_id, &payload)?)
    }

    pub fn mkdir(&mut self, path: &str) -> Result<(), ClientError> {
        Self::expect_ok(self.call(MessageType::Mkdir, 0, &join_strings(&[path]))?)
    }

    pub fn rm(&mut self, path: &str) -> Result<(), ClientError> {
        Self::expect_ok(self.call(MessageType::Remove, 0, &join_strings(&[path]))?)
    }

    pub fn directory(&mut self, path: &str) -> Result<Vec<String>, ClientError> {
        Ok(payload_strings(&self.call(
            MessageType::Directory,
            0,
            &join_strings(&[path]),
        )?))
    }

    pub fn get_perms(&mut self, path: &str) -> Result<Vec<String>, ClientError> {
        Ok(payload_strings(&self.call(
            MessageType::GetPermissions,
            0,
            &join_strings(&[path]),
        )?))
    }

    pub fn set_perms(&mut self, path: &str, permissions: &[&str]) -> Result<(), ClientError> {
        let mut parts = vec![path];
        parts.extend_from_slice(permissions);
        Self::expect_ok(self.call(MessageType::SetPermissions, 0, &join_strings(&parts))?)
    }

    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), ClientError> {
        Self::expect_ok(self.call(MessageType::Watch, 0, &join_strings(&[path, token]))?)
    }

    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), ClientError> {
        Self::expect_ok(self.call(MessageType::Unwatch, 0, &join_strings(&[path, token]))?)
    }

    pub fn transaction_start(&mut self) -> Result<u32, ClientError> {
        let payload = self.call(MessageType::TransactionStart, 0, b"\0")?;
        let text = payload_strings(&payload)
            .into_iter()
            .next()
            .unwrap_or_default();
        text.parse()
            .map_err(|_| ClientError::Protocol(format!("bad transaction id {text:?}")))
    }

    pub fn transaction_end(
        &mut self,
        transaction_id: u32,
        commit: bool,
    ) -> Result<(), ClientError> {
        let argument = if commit { "T" } else { "F" };
        Self::expect_ok(self.call(
            MessageType::TransactionEnd,
            transaction_id,
            &join_strings(&[argument]),
        )?)
    }

    pub fn introduce(
        &mut self,
        domain: DomainId,
        frame: u64,
        port: u32,
    ) -> Result<(), ClientError> {
        let parts = [domain.to_string(), frame.to_string(), port.to_string()];
        Self::expect_ok(self.call(MessageType::Introduce, 0, &join_strings(&parts))?)
    }

    pub fn release(&mut self, domain: DomainId) -> Result<(), ClientError> {
        Self::expect_ok(self.call(
            MessageType::Release,
            0,
            &join_strings(&[domain.to_string()]),
        )?)
    }

    pub fn is_domain_introduced(&mut self, domain: DomainId) -> Result<bool, ClientError> {
        let payload = self.call(
            MessageType::IsDomainIntroduced,
            0,
            &join_strings(&[domain.to_string()]),
        )?;
        Ok(payload.starts_with(b"T"))
    }

    pub fn get_domain_path(&mut self, domain: DomainId) -> Result<String, ClientError> {
        let payload = self.call(
            MessageType::GetDomainPath,
            0,
            &join_strings(&[domain.to_string()]),
        )?;
        Ok(payload_strings(&payload)
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    /// The next watch event `(path, token)`, waiting at most `timeout`.
    pub fn next_event(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(String, String)>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.events.pop_front() {
                let mut strings = event.strings().into_iter();
                let path = strings.next().unwrap_or_default();
                let token = strings.next().unwrap_or_default();
                return Ok(Some((path, token)));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.receive_message(remaining)? {
                Some(message) if message.is(MessageType::WatchEvent) => {
                    self.events.push_back(message);
                }
                Some(_) => {} // a stale reply
                None => return Ok(None),
            }
        }
    }

    /// Every watch event arriving within `timeout`.
    pub fn collect_events(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<(String, String)>, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        while let Some(event) =
            self.next_event(deadline.saturating_duration_since(Instant::now()))?
        {
            events.push(event);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_timeout_is_set_again_only_when_it_would_be_too_short_or_much_too_long() {
        let second = Duration::from_secs(1);
        // Nothing set yet: set it.
        assert_eq!(timeout_to_set(None, 10 * second), Some(10 * second));
        // A request's remaining time shrinks a little per call: keep 10 s.
        assert_eq!(timeout_to_set(Some(10 * second), 10 * second), None);
        assert_eq!(
            timeout_to_set(Some(10 * second), Duration::from_millis(9_500)),
            None
        );
        // 10 s set, 9 s asked: more than 1/16 too long.
        assert_eq!(
            timeout_to_set(Some(10 * second), 9 * second),
            Some(9 * second)
        );
        // Never keep a shorter one.
        assert_eq!(timeout_to_set(Some(second), 10 * second), Some(10 * second));
        // A short wait for an event after a long request timeout.
        assert_eq!(
            timeout_to_set(Some(10 * second), Duration::from_millis(200)),
            Some(Duration::from_millis(200))
        );
        // Zero would block forever: at least 1 ms.
        assert_eq!(
            timeout_to_set(None, Duration::ZERO),
            Some(Duration::from_millis(1))
        );
    }
}
