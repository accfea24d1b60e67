//! Shared helpers of the integration tests: a `xenstored` child process on a private run directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use xenstored_linux::client::{Client, RingTransport, SocketTransport};

static NEXT_DAEMON: AtomicU32 = AtomicU32::new(0);

/// A running daemon; killed and cleaned up on drop.
pub struct Daemon {
    child: Child,
    pub run_directory: PathBuf,
    pub socket_path: PathBuf,
}

impl Daemon {
    /// Starts `xenstored` with `extra_arguments` and waits until its socket accepts clients.
    pub fn start(extra_arguments: &[&str]) -> Daemon {
        let run_directory = std::env::temp_dir().join(format!(
            "xenstored-test-{}-{}",
            std::process::id(),
            NEXT_DAEMON.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&run_directory);
        std::fs::create_dir_all(&run_directory).expect("create the run directory");
        let socket_path = run_directory.join("socket");
        let stderr = std::fs::File::create(run_directory.join("stderr")).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_xenstored"))
            .arg("--socket")
            .arg(&socket_path)
            .arg("--rundir")
            .arg(&run_directory)
            .arg("-N")
            .args(extra_arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start xenstored");
        let daemon = Daemon {
            child,
            run_directory,
            socket_path,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&daemon.socket_path).is_err() {
            assert!(
                Instant::now() < deadline,
                "xenstored did not start: {}",
                daemon.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    /// What the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.run_directory.join("stderr")).unwrap_or_default()
    }

    /// A privileged socket client.
    pub fn dom0(&self) -> Client<SocketTransport> {
        let mut client = Client::connect(&self.socket_path).expect("connect to the socket");
        client.timeout = Duration::from_secs(5);
        client
    }

    /// Introduces guest `domid` with a home `/local/domain/<domid>` it owns (as a toolstack
    /// would) and returns a client acting as it.
    pub fn guest(&self, domid: u16) -> Client<RingTransport> {
        let mut dom0 = self.dom0();
        let home = format!("/local/domain/{domid}");
        dom0.mkdir(&home).expect("mkdir home");
        dom0.set_perms(&home, &[&format!("n{domid}")])
            .expect("setperms home");
        let mut guest = Client::create_and_introduce(&mut dom0, &self.run_directory, domid, 7)
            .expect("introduce the guest");
        guest.timeout = Duration::from_secs(5);
        guest
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU time the daemon has used so far, in clock ticks (`/proc/<pid>/stat`: utime + stime).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/<pid>/stat");
        // The command name may hold spaces: count the fields after its closing parenthesis.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // Fields 14 and 15 of the whole line; the slice starts at field 3 (state).
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    pub fn run_directory(&self) -> &Path {
        &self.run_directory
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.run_directory);
    }
}

/// The store error name of a result, for `assert_eq!`.
pub fn error_name<T: std::fmt::Debug>(
    result: Result<T, xenstored_linux::client::ClientError>,
) -> String {
    match result {
        Err(error) => error
            .store_error()
            .map(String::from)
            .unwrap_or_else(|| format!("{error}")),
        Ok(value) => format!("Ok({value:?})"),
    }
}

/// Polls `condition` every 20 ms for up to `timeout`.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
