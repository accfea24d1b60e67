//! Starting and stopping the servers under test: ours, the Debian peers under the fake-Xen
//! shim, and the transport floor (an echo server of the same framing).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xenstore_client::client::{Client, ClientError, SocketTransport};
use xenstore_client::message::header_from_prefix;
use xenstore_engine::wire::{HEADER_SIZE_BYTES, PAYLOAD_MAX_BYTES};

/// Which server a run talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// `xenstore-bench --floor-server`: echoes every message; no store at all.
    Floor,
    Ours,
    CXenstored,
    OXenstored,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Floor => "floor",
            ServerKind::Ours => "ours",
            ServerKind::CXenstored => "C-xenstored",
            ServerKind::OXenstored => "oxenstored",
        }
    }
}

/// Where the binaries are.
#[derive(Clone, Debug)]
pub struct ServerPaths {
    pub bench_binary: PathBuf,
    pub our_xenstored: PathBuf,
    /// The Debian tree unpacked by `tests/lib/debian-packages.sh` (None: no peers).
    pub debian_root: Option<PathBuf>,
    /// `bench/shim/fake-xen.c` compiled.
    pub shim_library: Option<PathBuf>,
}

impl ServerPaths {
    fn peer_binary_path(&self, kind: ServerKind) -> Option<PathBuf> {
        let name = match kind {
            ServerKind::CXenstored => "xenstored",
            ServerKind::OXenstored => "oxenstored",
            ServerKind::Floor | ServerKind::Ours => return None,
        };
        Some(
            self.debian_root
                .as_ref()?
                .join("usr/lib/xen-4.17/bin")
                .join(name),
        )
    }

    fn peer_binary(&self, kind: ServerKind) -> Option<PathBuf> {
        self.peer_binary_path(kind).filter(|path| path.exists())
    }

    /// Why `kind` cannot run in this run, or `None` when it can be started. `set_up_failure`
    /// is what `bench/run.sh` reports when it could not prepare the peers.
    pub fn unavailable(&self, kind: ServerKind, set_up_failure: Option<&str>) -> Option<String> {
        if matches!(kind, ServerKind::Floor | ServerKind::Ours) {
            return None;
        }
        if let Some(reason) = set_up_failure {
            return Some(reason.to_string());
        }
        if self.debian_root.is_none() || self.shim_library.is_none() {
            return Some("no --debian-root and --shim (bench/run.sh prepares them)".to_string());
        }
        if self.peer_binary(kind).is_none() {
            let path = self.peer_binary_path(kind).unwrap_or_default();
            return Some(format!("no {} in the Debian tree", path.display()));
        }
        None
    }
}

/// What a run directory's `server.log` says about a failure, on one line: its first line that
/// names an error (the daemons print the reason first, then a usage text or a backtrace), else
/// its last lines.
pub fn log_excerpt(run_directory: &Path) -> String {
    const LINES: usize = 2;
    const LINE_CHARACTERS: usize = 200;
    let log = fs::read_to_string(run_directory.join("server.log")).unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let is_error = |line: &&str| {
        let lower = line.to_lowercase();
        [
            "error",
            "panic",
            "fatal",
            "abort",
            "unrecognized",
            "unknown",
            "invalid",
            "fail",
            "cannot",
            "segmentation",
        ]
        .iter()
        .any(|word| lower.contains(word))
    };
    let chosen: Vec<&str> = match lines.iter().copied().find(is_error) {
        Some(line) => vec![line],
        None => lines.iter().rev().take(LINES).rev().copied().collect(),
    };
    if chosen.is_empty() {
        return "empty".to_string();
    }
    chosen
        .iter()
        .map(|line| {
            let words = line.split_whitespace().collect::<Vec<_>>().join(" ");
            words.chars().take(LINE_CHARACTERS).collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A started server with its private run directory.
pub struct RunningServer {
    pub kind: ServerKind,
    pub run_directory: PathBuf,
    pub socket: PathBuf,
    child: Child,
}

impl RunningServer {
    /// Starts `kind` in a fresh `run_directory` and waits until its socket answers.
    pub fn start(
        kind: ServerKind,
        paths: &ServerPaths,
        run_directory: &Path,
    ) -> io::Result<RunningServer> {
        let _ = fs::remove_dir_all(run_directory);
        fs::create_dir_all(run_directory)?;
        let socket = run_directory.join("socket");
        let log = fs::File::create(run_directory.join("server.log"))?;
        let mut command = match kind {
            ServerKind::Floor => {
                let mut command = Command::new(&paths.bench_binary);
                command.arg("--floor-server").arg(&socket);
                command
            }
            ServerKind::Ours => {
                let mut command = Command::new(&paths.our_xenstored);
                command.arg("--rundir").arg(run_directory);
                // XS_BENCH_OURS_ARGS: more options for our daemon, for A/B runs
                // (e.g. `--no-io-uring`).
                if let Ok(words) = std::env::var("XS_BENCH_OURS_ARGS") {
                    command.args(words.split_whitespace());
                }
                command
            }
            ServerKind::CXenstored | ServerKind::OXenstored => {
                peer_command(kind, paths, run_directory, &socket)?
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command.spawn()?;
        let mut server = RunningServer {
            kind,
            run_directory: run_directory.to_path_buf(),
            socket,
            child,
        };
        // Wait for the socket: the peers listen with backlog 1, so probe with one connection.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The run directory goes when `server` is dropped: quote its log in the error.
            if let Some(status) = server.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "exited at start-up ({status}; log: {})",
                    log_excerpt(&server.run_directory)
                )));
            }
            if UnixStream::connect(&server.socket).is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "never listened on its socket within 10 s (log: {})",
                    log_excerpt(&server.run_directory)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new privileged client on the socket (retrying: the peers' listen backlog is 1).
    pub fn connect(&self) -> Result<Client<SocketTransport>, ClientError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Client::connect(&self.socket) {
                Ok(client) => return Ok(client),
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// `VmRSS` and `VmHWM` of the server process, in KiB.
    pub fn memory_kibibytes(&self) -> (u64, u64) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|number| number.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time the server's threads have used so far, in nanoseconds (the first field of
    /// each `/proc/<pid>/task/<tid>/schedstat`: nanosecond resolution, unlike `stat`'s ticks).
    pub fn cpu_nanoseconds(&self) -> u64 {
        let Ok(tasks) = fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return 0;
        };
        tasks
            .flatten()
            .filter_map(|task| fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// How the server ended, if it has within `patience` (before the bench kills it, it never
    /// should). A dying process closes its sockets before it can be reaped: after a failed
    /// request, wait a little to tell a crash from a refusal.
    pub fn exit_status(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + patience;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // SIGKILL: oxenstored dumps its database to /var/run/xenstored/db on SIGTERM.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.run_directory);
    }
}

fn peer_command(
    kind: ServerKind,
    paths: &ServerPaths,
    run_directory: &Path,
    socket: &Path,
) -> io::Result<Command> {
    let (Some(root), Some(shim)) = (&paths.debian_root, &paths.shim_library) else {
        return Err(io::Error::other("no Debian peers or shim"));
    };
    let binary = paths
        .peer_binary(kind)
        .ok_or_else(|| io::Error::other(format!("{} not unpacked", kind.name())))?;
    let mut command = Command::new(binary);
    let libraries = format!(
        "{}:{}",
        root.join("usr/lib/x86_64-linux-gnu").display(),
        root.join("usr/lib").display()
    );
    command
        .env("LD_LIBRARY_PATH", libraries)
        .env("LD_PRELOAD", shim)
        .env("XS_SHIM_RUNDIR", run_directory)
        .env("XS_SHIM_SOCKET", socket);
    if kind == ServerKind::CXenstored {
        command
            .env("XENSTORED_PATH", socket)
            .env("XENSTORED_RUNDIR", run_directory)
            .arg("-N")
            .arg("-F")
            .arg(run_directory.join("xenstored.pid"));
    } else {
        // Debian's /etc/xen/oxenstored.conf settings, with every path inside the run directory
        // (the shim creates the fake xsd_port / xsd_kva files there). The access log stays on,
        // as shipped.
        let config = run_directory.join("oxenstored.conf");
        let directory = run_directory.display();
        fs::write(
            &config,
            format!(
                "pid-file = {directory}/oxenstored.pid\n\
                 test-eagain = false\nmerge-activate = true\n\
                 conflict-burst-limit = 5.0\nconflict-max-history-seconds = 0.05\n\
                 conflict-rate-limit-is-aggregate = true\n\
                 perms-activate = true\nperms-watch-activate = true\nquota-activate = true\n\
                 quota-maxentity = 1000\nquota-maxsize = 2048\nquota-maxwatch = 100\n\
                 quota-transaction = 10\nquota-maxrequests = 1024\nquota-path-max = 1024\n\
                 quota-maxoutstanding = 1024\nquota-maxwatchevents = 1024\npersistent = false\n\
                 xenstored-kva = {directory}/xsd_kva\nxenstored-port = {directory}/xsd_port\n\
                 access-log-file = {directory}/access.log\n\
                 xenstored-log-file = {directory}/xenstored.log\n"
            ),
        )?;
        command.arg("--no-fork").arg("--config-file").arg(config);
    }
    Ok(command)
}

/// `--floor-server SOCKET`: the W0 transport floor. Echoes each framed message back in one
/// write, one thread per connection, so a round trip costs exactly the socket transport plus
/// the framing a real store also does.
pub fn run_floor_server(socket: &Path) -> io::Result<()> {
    let _ = fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            let _ = echo_connection(stream);
        });
    }
    Ok(())
}

fn echo_connection(mut stream: UnixStream) -> io::Result<()> {
    let mut message = vec![0u8; HEADER_SIZE_BYTES + PAYLOAD_MAX_BYTES];
    loop {
        stream.read_exact(&mut message[..HEADER_SIZE_BYTES])?;
        let header =
            header_from_prefix(&message).ok_or_else(|| io::Error::other("short header"))?;
        let total =
            HEADER_SIZE_BYTES + (header.payload_length_bytes as usize).min(PAYLOAD_MAX_BYTES);
        stream.read_exact(&mut message[HEADER_SIZE_BYTES..total])?;
        stream.write_all(&message[..total])?;
    }
}
