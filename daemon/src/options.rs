//! Command-line options of `xenstored`: C xenstored's where they apply, mapped into the engine's [`Config`].
//!
//! Parsing is getopt_long-like: `-E 100`, `-E100`, `--entry-nb 100`, `--entry-nb=100`, and
//! clusters of flags (`-NV`). Option names follow C xenstored 4.17/4.22 `core.c:usage()`.

use std::path::PathBuf;

use xenstore_engine::Config;
use xenstore_engine::live_update::LiveUpdateSupport;
use xenstore_engine::options::{
    OptionError, OptionName, PROCESS_FLAGS, PROCESS_OPTIONS_WITH_VALUE, STORE_FLAGS,
    STORE_OPTIONS_WITH_VALUE, apply_store_option, domain_value, for_each_option, option,
};

use xenstore_client::simulation::DEFAULT_RUN_DIRECTORY;

/// What the daemon was asked to do.
#[derive(Debug)]
pub enum Command {
    /// Print the usage text and exit 0.
    Help,
    /// Serve.
    Run(Box<Options>),
}

/// Everything the daemon needs to start.
#[derive(Debug)]
pub struct Options {
    pub config: Config,
    /// The listening socket.
    pub socket_path: PathBuf,
    /// Where `domains/` and `dom-exc` live.
    pub run_directory: PathBuf,
    /// `-T`: where request/reply trace lines go.
    pub trace_file: Option<PathBuf>,
    /// `-F`: where to write our pid.
    pub pid_file: Option<PathBuf>,
    /// `-P`: print our pid on stdout at start-up.
    pub print_pid: bool,
    /// Number of `-V`.
    pub verbosity: u8,
    /// Batch the socket reads and writes of a round with io_uring where the kernel allows it
    /// (`--no-io-uring`: one system call each).
    pub io_uring: bool,
    /// `-U`: start from the state in `<rundir>/state_dump` (C's live-update restart).
    pub live_update: bool,
}

/// A usage error: the message to print before the usage text (exit status 2).
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

/// The text printed by `--help`.
pub const USAGE: &str = "\
Usage: xenstored <options>

Serves the xenstore engine on a Unix socket; simulated guests reach it through ring files
(see daemon/README.md). Socket clients are privileged.

where options may include:

  --socket <path>         listen on <path>. Precedence: --socket, then $XENSTORED_PATH,
                          then <rundir>/socket.
  --rundir <dir>          run directory (socket, domains/, dom-exc). Precedence: --rundir,
                          then $XENSTORED_RUNDIR, then /var/run/xenstored.
  -F, --pid-file <file>   write the process id to <file>.
  -P, --output-pid        print the process id on standard output.
  -N, --no-fork           accepted; this daemon never forks.
  -D, --no-domain-init    accepted; there is no hypervisor to initialise.
  -E, --entry-nb <nb>     limit the number of nodes per domain (quota nodes).
  -S, --entry-size <size> limit the size of a node record (quota node-size).
  -W, --watch-nb <nb>     limit the number of watches per domain (quota watches).
  -t, --transaction <nb>  limit the open transactions per domain (quota transactions).
  -A, --perm-nb <nb>      limit the permission entries per node (quota node-permissions).
  -M, --path-max <chars>  limit the relative path length (quota path-max, at most 2048).
  -Q, --quota <what>=<nb> set a quota: nodes, watches, outstanding, memory, transactions,
                          transaction-nodes, node-permissions (or permissions), path-max,
                          node-size, soft-memory.
  -q, --quota-soft <what>=<nb>  set a soft quota (memory).
  -w, --timeout <what>=<seconds>  set a timeout: watch-event (0 = never).
  -K, --keep-orphans      give a dead domain's nodes to the privileged domain.
  -T, --trace-file <file> log every request and reply to <file>.
  --priv-domid <domid>    the privileged domain (default 0).
  --master-domid <domid>  the domain socket clients act as (default: the privileged one).
  -R, --no-recovery, -I, --internal-db  accepted for compatibility; no effect.
  --no-io-uring           one system call per socket read or write, instead of one
                          io_uring batch per round (used where io_uring is available).
  -U, --live-update       start from the state in <rundir>/state_dump (a migration
                          stream, removed once read), taking over the sockets a live
                          update (`xenstore-control live-update -f <executable>`) left
                          open; writing to the FIFO <rundir>/dump-state makes a running
                          daemon write that file.
  -V, --verbose           more diagnostics on standard error (repeatable).
  -h, --help              print this text.
";

/// The daemon's own options that take a value, besides the store's and the process options
/// (`PROCESS_*` of `xenstore_engine::options`).
const DAEMON_OPTIONS_WITH_VALUE: [OptionName; 2] = [option('\0', "socket"), option('\0', "rundir")];

/// The daemon's own flags, besides the store's and the process flags.
const DAEMON_FLAGS: [OptionName; 6] = [
    option('V', "verbose"),
    option('U', "live-update"),
    option('h', "help"),
    option('P', "output-pid"),
    option('R', "no-recovery"),
    option('\0', "no-io-uring"),
];

impl From<OptionError<'_>> for UsageError {
    fn from(error: OptionError<'_>) -> Self {
        UsageError(error.to_string())
    }
}

/// A secret key for the engine's node index, from the kernel's random source (guests must
/// not be able to compute colliding paths). Falls back to the clock and the process id,
/// with a warning, if `/dev/urandom` cannot be read.
fn random_hash_key() -> [u64; 2] {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .is_err()
    {
        log::warn!("cannot read /dev/urandom: the node index key comes from the clock");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        bytes = (now ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    let (first, second) = bytes.split_at(8);
    let word = |half: &[u8]| {
        half.iter()
            .rev()
            .fold(0u64, |word, byte| (word << 8) | u64::from(*byte))
    };
    [word(first), word(second)]
}

/// Parses the arguments after the program name; `environment` looks variables up
/// (`XENSTORED_PATH`, `XENSTORED_RUNDIR`).
pub fn parse(
    arguments: &[String],
    environment: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, UsageError> {
    let mut config = Config {
        hash_key: random_hash_key(),
        // `xenstore-control live-update -f <executable>` (docs/live-update.md, "The daemon").
        live_update: LiveUpdateSupport::Executable,
        ..Config::default()
    };
    let mut socket_path = None;
    let mut run_directory = None;
    let mut trace_file = None;
    let mut pid_file = None;
    let mut print_pid = false;
    let mut verbosity = 0u8;
    let mut io_uring = true;
    let mut live_update = false;
    let mut master_domain = None;
    let with_value: Vec<OptionName> = STORE_OPTIONS_WITH_VALUE
        .iter()
        .chain(&PROCESS_OPTIONS_WITH_VALUE)
        .chain(&DAEMON_OPTIONS_WITH_VALUE)
        .copied()
        .collect();
    let flags: Vec<OptionName> = STORE_FLAGS
        .iter()
        .chain(&PROCESS_FLAGS)
        .chain(&DAEMON_FLAGS)
        .copied()
        .collect();
    let mut wants_help = false;
    for_each_option(
        arguments.iter().map(String::as_str),
        &with_value,
        &flags,
        |name, value| -> Result<(), UsageError> {
            if apply_store_option(&mut config, name, value)? {
                return Ok(());
            }
            let text = value.unwrap_or_default();
            match name {
                "help" => wants_help = true,
                "no-fork" | "no-domain-init" | "no-recovery" | "internal-db" => {}
                "verbose" => verbosity = verbosity.saturating_add(1),
                "output-pid" => print_pid = true,
                "no-io-uring" => io_uring = false,
                "live-update" => live_update = true,
                "pid-file" => pid_file = Some(PathBuf::from(text)),
                "trace-file" => trace_file = Some(PathBuf::from(text)),
                "socket" => socket_path = Some(PathBuf::from(text)),
                "rundir" => run_directory = Some(PathBuf::from(text)),
                "master-domid" => master_domain = Some(domain_value(name, text)?),
                _ => return Err(UsageError(format!("option --{name} is not supported"))),
            }
            Ok(())
        },
    )?;
    if wants_help {
        return Ok(Command::Help);
    }
    // C 4.22: the store domain is --master-domid, else the privileged domain
    // (docs/protocol.md, "Domains").
    config.store_domain = master_domain.unwrap_or(config.privileged_domain);
    let run_directory = run_directory
        .or_else(|| {
            environment("XENSTORED_RUNDIR")
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIRECTORY));
    let socket_path = socket_path
        .or_else(|| {
            environment("XENSTORED_PATH")
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| run_directory.join("socket"));
    Ok(Command::Run(Box::new(Options {
        config,
        socket_path,
        run_directory,
        trace_file,
        pid_file,
        print_pid,
        verbosity,
        io_uring,
        live_update,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenstore_engine::DomainId;
    use xenstore_engine::quota::QuotaKind;

    fn arguments(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    fn no_environment(_: &str) -> Option<String> {
        None
    }

    fn run(text: &str) -> Options {
        match parse(&arguments(text), &no_environment) {
            Ok(Command::Run(options)) => *options,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn quota_options_map_into_the_config() {
        let options = run(
            "-E 10 -S2000 --watch-nb 5 --transaction=3 -A 7 -M 4000 -Q outstanding=9 \
                           -q memory=1234 -Q soft-memory=77 -Q permissions=6",
        );
        let quotas = options.config.quotas;
        for (kind, expected) in [
            (QuotaKind::Nodes, 10),
            (QuotaKind::NodeSizeBytes, 2000),
            (QuotaKind::Watches, 5),
            (QuotaKind::Transactions, 3),
            (QuotaKind::PathMaxBytes, 2048),
            (QuotaKind::Outstanding, 9),
            (QuotaKind::SoftMemoryBytes, 77),
            (QuotaKind::NodePermissions, 6),
        ] {
            assert_eq!(quotas.get(kind), expected, "{kind:?}");
        }
    }

    #[test]
    fn flags_domains_files_and_timeouts() {
        let options = run(
            "-NDK -VV -T /tmp/trace -F /tmp/pid --priv-domid 3 --master-domid=5 \
                           -w watch-event=0 -P -R -I",
        );
        assert!(options.config.keep_orphans);
        assert_eq!(options.verbosity, 2);
        assert_eq!(options.trace_file, Some(PathBuf::from("/tmp/trace")));
        assert_eq!(options.pid_file, Some(PathBuf::from("/tmp/pid")));
        assert_eq!(options.config.privileged_domain, DomainId(3));
        assert_eq!(options.config.store_domain, DomainId(5));
        assert_eq!(options.config.watch_event_timeout_milliseconds, 0);
        assert!(options.print_pid);
        assert_eq!(run("--priv-domid 2").config.store_domain, DomainId(2));
        assert_eq!(run("").config.watch_event_timeout_milliseconds, 20_000);
        assert!(run("").io_uring);
        assert!(!run("--no-io-uring").io_uring);
    }

    #[test]
    fn socket_path_precedence() {
        let environment = |name: &str| match name {
            "XENSTORED_PATH" => Some("/env/socket".to_string()),
            "XENSTORED_RUNDIR" => Some("/env/run".to_string()),
            _ => None,
        };
        let parsed = |text: &str, environment: &dyn Fn(&str) -> Option<String>| match parse(
            &arguments(text),
            environment,
        ) {
            Ok(Command::Run(options)) => (options.socket_path, options.run_directory),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            parsed("--socket /a/s", &environment),
            (PathBuf::from("/a/s"), PathBuf::from("/env/run"))
        );
        assert_eq!(
            parsed("", &environment),
            (PathBuf::from("/env/socket"), PathBuf::from("/env/run"))
        );
        assert_eq!(
            parsed("--rundir /r", &no_environment),
            (PathBuf::from("/r/socket"), PathBuf::from("/r"))
        );
        assert_eq!(
            parsed("", &no_environment),
            (
                PathBuf::from("/var/run/xenstored/socket"),
                PathBuf::from("/var/run/xenstored")
            )
        );
    }

    #[test]
    fn the_usage_text_names_every_option_of_the_tables() {
        // The store's options come from the engine's tables (`engine/src/options.rs`): a
        // new one there must be documented here too.
        let tables = [
            &STORE_OPTIONS_WITH_VALUE[..],
            &STORE_FLAGS,
            &PROCESS_OPTIONS_WITH_VALUE,
            &PROCESS_FLAGS,
            &DAEMON_OPTIONS_WITH_VALUE,
            &DAEMON_FLAGS,
        ];
        for option in tables.into_iter().flatten() {
            assert!(USAGE.contains(&format!("--{}", option.long)), "{option:?}");
            if option.short != '\0' {
                assert!(
                    USAGE.contains(&format!("-{}, --", option.short)),
                    "{option:?}"
                );
            }
        }
    }

    #[test]
    fn errors_and_help() {
        for text in [
            "-X",
            "--bogus",
            "-E",
            "-E x",
            "-Q nodes",
            "-Q bogus=1",
            "-q nodes=1",
            "-w other=1",
            "--priv-domid 70000",
            "--no-fork=1",
            "extra",
        ] {
            assert!(parse(&arguments(text), &no_environment).is_err(), "{text}");
        }
        assert!(matches!(
            parse(&arguments("-h"), &no_environment),
            Ok(Command::Help)
        ));
        assert!(matches!(
            parse(&arguments("-E 5 --help"), &no_environment),
            Ok(Command::Help)
        ));
    }
}
