//! Command-line options of `xenstored`: C xenstored's where they apply, mapped into the engine's [`Config`].
//!
//! Parsing is getopt_long-like: `-E 100`, `-E100`, `--entry-nb 100`, `--entry-nb=100`, and
//! clusters of flags (`-NV`). Option names follow C xenstored 4.17/4.22 `core.c:usage()`.

use std::path::PathBuf;

use xenstore_engine::quota::QuotaKind;
use xenstore_engine::{Config, DomainId};

use crate::simulation::DEFAULT_RUN_DIRECTORY;

/// C clamps `-M` to `XENSTORE_REL_PATH_MAX`.
const PATH_MAX_LIMIT_BYTES: u32 = 2048;

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
  -V, --verbose           more diagnostics on standard error (repeatable).
  -h, --help              print this text.
";

/// Options that take a value: (short, long).
const WITH_VALUE: [(char, &str); 14] = [
    ('F', "pid-file"),
    ('E', "entry-nb"),
    ('S', "entry-size"),
    ('W', "watch-nb"),
    ('t', "transaction"),
    ('A', "perm-nb"),
    ('M', "path-max"),
    ('Q', "quota"),
    ('q', "quota-soft"),
    ('w', "timeout"),
    ('T', "trace-file"),
    ('\0', "priv-domid"),
    ('\0', "master-domid"),
    ('\0', "socket"),
];

/// Flags: (short, long).
const FLAGS: [(char, &str); 8] = [
    ('N', "no-fork"),
    ('D', "no-domain-init"),
    ('K', "keep-orphans"),
    ('V', "verbose"),
    ('h', "help"),
    ('P', "output-pid"),
    ('R', "no-recovery"),
    ('I', "internal-db"),
];

/// One recognised option occurrence, named by its long name.
struct Occurrence {
    name: &'static str,
    value: Option<String>,
}

fn split_arguments(arguments: &[String]) -> Result<Vec<Occurrence>, UsageError> {
    let mut occurrences = Vec::new();
    let mut index = 0;
    let take_value = |index: &mut usize, option: &str| -> Result<String, UsageError> {
        *index += 1;
        arguments
            .get(*index)
            .cloned()
            .ok_or_else(|| UsageError(format!("option {option} requires an argument")))
    };
    while let Some(argument) = arguments.get(index) {
        if let Some(long) = argument.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (long, None),
            };
            if name == "rundir" {
                let value = match inline {
                    Some(value) => value,
                    None => take_value(&mut index, argument)?,
                };
                occurrences.push(Occurrence {
                    name: "rundir",
                    value: Some(value),
                });
            } else if let Some((_, canonical)) = WITH_VALUE.iter().find(|(_, long)| *long == name) {
                let value = match inline {
                    Some(value) => value,
                    None => take_value(&mut index, argument)?,
                };
                occurrences.push(Occurrence {
                    name: canonical,
                    value: Some(value),
                });
            } else if let Some((_, canonical)) = FLAGS.iter().find(|(_, long)| *long == name) {
                if inline.is_some() {
                    return Err(UsageError(format!("option --{name} takes no argument")));
                }
                occurrences.push(Occurrence {
                    name: canonical,
                    value: None,
                });
            } else {
                return Err(UsageError(format!("unrecognized option '{argument}'")));
            }
        } else if let Some(cluster) = argument.strip_prefix('-').filter(|rest| !rest.is_empty()) {
            for (position, letter) in cluster.char_indices() {
                if let Some((_, canonical)) = WITH_VALUE.iter().find(|(short, _)| *short == letter)
                {
                    let rest = &cluster[position + letter.len_utf8()..];
                    let value = if rest.is_empty() {
                        take_value(&mut index, &format!("-{letter}"))?
                    } else {
                        rest.to_string()
                    };
                    occurrences.push(Occurrence {
                        name: canonical,
                        value: Some(value),
                    });
                    break;
                } else if let Some((_, canonical)) =
                    FLAGS.iter().find(|(short, _)| *short == letter)
                {
                    occurrences.push(Occurrence {
                        name: canonical,
                        value: None,
                    });
                } else {
                    return Err(UsageError(format!("invalid option -- '{letter}'")));
                }
            }
        } else {
            return Err(UsageError(format!("unexpected argument '{argument}'")));
        }
        index += 1;
    }
    Ok(occurrences)
}

fn parse_number(option: &str, value: &str) -> Result<u32, UsageError> {
    value
        .parse::<u32>()
        .map_err(|_| UsageError(format!("option --{option}: '{value}' is not a number")))
}

fn parse_domid(option: &str, value: &str) -> Result<DomainId, UsageError> {
    let number = parse_number(option, value)?;
    u16::try_from(number)
        .ok()
        .filter(|domid| *domid < DomainId::FIRST_RESERVED)
        .map(DomainId)
        .ok_or_else(|| UsageError(format!("option --{option}: '{value}' is not a domain id")))
}

fn parse_assignment<'a>(option: &str, value: &'a str) -> Result<(&'a str, u32), UsageError> {
    let (name, number) = value.split_once('=').ok_or_else(|| {
        UsageError(format!(
            "option --{option} needs <what>=<value>, got '{value}'"
        ))
    })?;
    Ok((name, parse_number(option, number)?))
}

/// Parses the arguments after the program name; `environment` looks variables up
/// (`XENSTORED_PATH`, `XENSTORED_RUNDIR`).
pub fn parse(
    arguments: &[String],
    environment: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, UsageError> {
    let mut config = Config::default();
    let mut socket_path = None;
    let mut run_directory = None;
    let mut trace_file = None;
    let mut pid_file = None;
    let mut print_pid = false;
    let mut verbosity = 0u8;
    let mut master_domain = None;
    for occurrence in split_arguments(arguments)? {
        let name = occurrence.name;
        let value = occurrence.value.unwrap_or_default();
        let quotas = &mut config.quotas;
        match name {
            "help" => return Ok(Command::Help),
            "no-fork" | "no-domain-init" | "no-recovery" | "internal-db" => {}
            "keep-orphans" => config.keep_orphans = true,
            "verbose" => verbosity = verbosity.saturating_add(1),
            "output-pid" => print_pid = true,
            "pid-file" => pid_file = Some(PathBuf::from(value)),
            "trace-file" => trace_file = Some(PathBuf::from(value)),
            "socket" => socket_path = Some(PathBuf::from(value)),
            "rundir" => run_directory = Some(PathBuf::from(value)),
            "entry-nb" => quotas.set(QuotaKind::Nodes, parse_number(name, &value)?),
            "entry-size" => quotas.set(QuotaKind::NodeSizeBytes, parse_number(name, &value)?),
            "watch-nb" => quotas.set(QuotaKind::Watches, parse_number(name, &value)?),
            "transaction" => quotas.set(QuotaKind::Transactions, parse_number(name, &value)?),
            "perm-nb" => quotas.set(QuotaKind::NodePermissions, parse_number(name, &value)?),
            "path-max" => quotas.set(
                QuotaKind::PathMaxBytes,
                parse_number(name, &value)?.min(PATH_MAX_LIMIT_BYTES),
            ),
            "quota" => {
                let (what, number) = parse_assignment(name, &value)?;
                // `soft-<name>` is accepted here too, as XS_SET_QUOTA names soft quotas.
                let result = match what.strip_prefix("soft-") {
                    Some(base) => quotas.set_soft_by_name(base, number),
                    None => quotas.set_by_name(what, number),
                };
                result.map_err(|_| UsageError(format!("unknown quota '{what}'")))?;
            }
            "quota-soft" => {
                let (what, number) = parse_assignment(name, &value)?;
                quotas
                    .set_soft_by_name(what, number)
                    .map_err(|_| UsageError(format!("unknown soft quota '{what}'")))?;
            }
            "timeout" => {
                let (what, seconds) = parse_assignment(name, &value)?;
                match what {
                    "watch-event" => {
                        config.watch_event_timeout_milliseconds = u64::from(seconds) * 1000;
                    }
                    _ => return Err(UsageError(format!("unknown timeout '{what}'"))),
                }
            }
            "priv-domid" => config.privileged_domain = parse_domid(name, &value)?,
            "master-domid" => master_domain = Some(parse_domid(name, &value)?),
            _ => return Err(UsageError(format!("option --{name} is not supported"))),
        }
    }
    // C-HEAD: the store domain is --master-domid, else the privileged domain (reference §2.5).
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
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(quotas.get(QuotaKind::Nodes), 10);
        assert_eq!(quotas.get(QuotaKind::NodeSizeBytes), 2000);
        assert_eq!(quotas.get(QuotaKind::Watches), 5);
        assert_eq!(quotas.get(QuotaKind::Transactions), 3);
        assert_eq!(quotas.get(QuotaKind::PathMaxBytes), 2048);
        assert_eq!(quotas.get(QuotaKind::Outstanding), 9);
        assert_eq!(quotas.get(QuotaKind::SoftMemoryBytes), 77);
        assert_eq!(quotas.get(QuotaKind::NodePermissions), 6);
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
