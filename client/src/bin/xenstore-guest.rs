//! `xenstore-guest`: acts as Xen domain N through a simulated ring of a running `xenstored`.
//!
//! ```text
//! xenstore-guest --domid N [--rundir DIR] [--socket PATH] [--port P] [--timeout SECONDS]
//!                [--introduce] [--release] [--shutdown] [--destroy] [COMMAND ARGS...]
//! ```
//! Commands: `read PATH...`, `write PATH VALUE [PATH VALUE...]`, `ls|directory PATH`, `rm PATH`,
//! `mkdir PATH`, `getperms PATH`, `setperms PATH PERM...`, `watch PATH TOKEN [--count K]`,
//! `domain-path [DOMID]`, `batch` (one command per line on stdin; `start`, `commit`, `abort`
//! manage a transaction used by the following lines), `raw TYPE [ARG...]`.
//! An error reply prints `ERROR <name>` and makes the exit status 1; usage errors exit 2.

#![deny(unsafe_code)]

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use xenstore_client::client::{Client, ClientError, RingTransport};
use xenstore_client::message::{message_type_from_name, message_type_name, payload_strings};
use xenstore_client::simulation::{self, DEFAULT_RUN_DIRECTORY, DomainFiles};
use xenstore_engine::DomainId;
use xenstore_engine::wire::{MessageType, join_strings};

const USAGE: &str = "\
Usage: xenstore-guest --domid N [options] [COMMAND ARGS...]

Acts as domain N through the simulated ring $RUNDIR/domains/N (see daemon/README.md).

Options:
  --domid N          the domain to act as (required)
  --rundir DIR       run directory: --rundir, then $XENSTORED_RUNDIR, then /var/run/xenstored
  --socket PATH      the store's socket (for --introduce/--release): --socket, then
                     $XENSTORED_PATH, then <rundir>/socket
  --port P           the guest's event-channel port given at introduction (default 1)
  --timeout SECONDS  how long one request may take (default 10)
  --introduce        create the ring files and have dom0 send XS_INTRODUCE first
                     (an already introduced domain is just attached to)
  --release          after the command, have dom0 send XS_RELEASE
  --shutdown         after the command, simulate the domain's shutdown
  --destroy          after the command, simulate the domain's death

Commands:
  read PATH...                  print each value on its own line
  write PATH VALUE [PATH VALUE...]
  ls PATH | directory PATH      print the children, one per line
  rm PATH | mkdir PATH
  getperms PATH                 print the permissions, one per line
  setperms PATH PERM...         e.g. setperms data n5 r0
  watch PATH TOKEN [--count K]  print `PATH TOKEN` per event; stop after K events
                                (default: run until interrupted); unwatches at the end
  domain-path [DOMID]           XS_GET_DOMAIN_PATH (default: our own)
  batch                         run one command per stdin line; `start`, `commit`, `abort`
                                manage a transaction used by the lines that follow
  raw TYPE [ARG...]             send any message type (name or number) with ARGs as
                                NUL-terminated strings; print the reply type and strings
";

struct Arguments {
    domain: DomainId,
    run_directory: PathBuf,
    socket_path: PathBuf,
    port: u32,
    timeout: Duration,
    introduce: bool,
    release: bool,
    shutdown: bool,
    destroy: bool,
    command: Vec<String>,
}

fn parse_arguments(raw: &[String]) -> Result<Option<Arguments>, String> {
    let mut domain = None;
    let mut run_directory = None;
    let mut socket_path = None;
    let mut port = 1u32;
    let mut timeout = Duration::from_secs(10);
    let (mut introduce, mut release, mut shutdown, mut destroy) = (false, false, false, false);
    let mut index = 0;
    let value = |index: &mut usize, name: &str| -> Result<String, String> {
        *index += 1;
        raw.get(*index)
            .cloned()
            .ok_or_else(|| format!("{name} needs a value"))
    };
    while let Some(argument) = raw.get(index) {
        match argument.as_str() {
            "-h" | "--help" => return Ok(None),
            "--domid" => {
                let text = value(&mut index, argument)?;
                domain = Some(DomainId(
                    text.parse::<u16>()
                        .map_err(|_| format!("bad domid {text:?}"))?,
                ));
            }
            "--rundir" => run_directory = Some(PathBuf::from(value(&mut index, argument)?)),
            "--socket" => socket_path = Some(PathBuf::from(value(&mut index, argument)?)),
            "--port" => {
                let text = value(&mut index, argument)?;
                port = text.parse().map_err(|_| format!("bad port {text:?}"))?;
            }
            "--timeout" => {
                let text = value(&mut index, argument)?;
                let seconds: f64 = text.parse().map_err(|_| format!("bad timeout {text:?}"))?;
                timeout = Duration::from_secs_f64(seconds.max(0.001));
            }
            "--introduce" => introduce = true,
            "--release" => release = true,
            "--shutdown" => shutdown = true,
            "--destroy" => destroy = true,
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            _ => break,
        }
        index += 1;
    }
    let domain = domain.ok_or("--domid is required")?;
    let environment = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let run_directory = run_directory
        .or_else(|| environment("XENSTORED_RUNDIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIRECTORY));
    let socket_path = socket_path
        .or_else(|| environment("XENSTORED_PATH").map(PathBuf::from))
        .unwrap_or_else(|| run_directory.join("socket"));
    Ok(Some(Arguments {
        domain,
        run_directory,
        socket_path,
        port,
        timeout,
        introduce,
        release,
        shutdown,
        destroy,
        command: raw.get(index..).unwrap_or_default().to_vec(),
    }))
}

/// The outcome of one command: Ok(lines to print) or an error to report.
type Outcome = Result<Vec<String>, CommandError>;

enum CommandError {
    Usage(String),
    Client(ClientError),
}

impl From<ClientError> for CommandError {
    fn from(error: ClientError) -> Self {
        CommandError::Client(error)
    }
}

struct Guest {
    client: Client<RingTransport>,
    domain: DomainId,
    transaction_id: u32,
}

impl Guest {
    fn run(&mut self, words: &[String]) -> Outcome {
        let Some((command, arguments)) = words.split_first() else {
            return Ok(Vec::new());
        };
        let argument = |index: usize| -> Result<&str, CommandError> {
            arguments
                .get(index)
                .map(String::as_str)
                .ok_or_else(|| CommandError::Usage(format!("{command}: missing argument")))
        };
        let client = &mut self.client;
        let transaction_id = self.transaction_id;
        match command.as_str() {
            "read" => {
                argument(0)?;
                let mut lines = Vec::new();
                for path in arguments {
                    lines.push(
                        String::from_utf8_lossy(&client.read_in(transaction_id, path)?)
                            .into_owned(),
                    );
                }
                Ok(lines)
            }
            "write" => {
                if arguments.is_empty() || arguments.len() % 2 != 0 {
                    return Err(CommandError::Usage("write: needs PATH VALUE pairs".into()));
                }
                for pair in arguments.chunks_exact(2) {
                    if let [path, value] = pair {
                        client.write_in(transaction_id, path, value.as_bytes())?;
                    }
                }
                Ok(Vec::new())
            }
            "ls" | "directory" | "dir" | "list" => {
                let path = argument(0)?;
                let payload = client.call(
                    MessageType::Directory,
                    transaction_id,
                    &join_strings(&[path]),
                )?;
                Ok(payload_strings(&payload))
            }
            "rm" | "mkdir" | "getperms" => {
                let path = argument(0)?;
                let kind = match command.as_str() {
                    "rm" => MessageType::Remove,
                    "mkdir" => MessageType::Mkdir,
                    _ => MessageType::GetPermissions,
                };
                let payload = client.call(kind, transaction_id, &join_strings(&[path]))?;
                Ok(if kind == MessageType::GetPermissions {
                    payload_strings(&payload)
                } else {
                    Vec::new()
                })
            }
            "setperms" => {
                argument(1)?;
                client.call(
                    MessageType::SetPermissions,
                    transaction_id,
                    &join_strings(arguments),
                )?;
                Ok(Vec::new())
            }
            "domain-path" => {
                let domain = match arguments.first() {
                    Some(text) => DomainId(
                        text.parse::<u16>()
                            .map_err(|_| CommandError::Usage(format!("bad domid {text:?}")))?,
                    ),
                    None => self.domain,
                };
                Ok(vec![client.get_domain_path(domain)?])
            }
            "start" => {
                self.transaction_id = client.transaction_start()?;
                Ok(vec![self.transaction_id.to_string()])
            }
            "commit" | "abort" => {
                let commit = command == "commit";
                self.transaction_id = 0;
                client.transaction_end(transaction_id, commit)?;
                Ok(Vec::new())
            }
            "raw" => {
                let name = argument(0)?;
                let kind = message_type_from_name(name)
                    .ok_or_else(|| CommandError::Usage(format!("unknown message type {name:?}")))?;
                let payload = join_strings(arguments.get(1..).unwrap_or_default());
                let reply = client.request(kind, transaction_id, &payload)?;
                let mut line = message_type_name(reply.header.message_type);
                for string in reply.strings() {
                    line.push(' ');
                    line.push_str(&string);
                }
                if reply.is(MessageType::Error) {
                    return Err(CommandError::Client(ClientError::Store(
                        reply.strings().into_iter().next().unwrap_or_default(),
                    )));
                }
                Ok(vec![line])
            }
            other => Err(CommandError::Usage(format!("unknown command {other:?}"))),
        }
    }

    fn watch(&mut self, arguments: &[String]) -> Result<(), CommandError> {
        let (Some(path), Some(token)) = (arguments.first(), arguments.get(1)) else {
            return Err(CommandError::Usage("watch: needs PATH TOKEN".into()));
        };
        let count = match arguments.get(2).map(String::as_str) {
            Some("--count") => Some(
                arguments
                    .get(3)
                    .and_then(|text| text.parse::<u64>().ok())
                    .ok_or_else(|| CommandError::Usage("watch: --count needs a number".into()))?,
            ),
            Some(other) => return Err(CommandError::Usage(format!("watch: unexpected {other:?}"))),
            None => None,
        };
        self.client.watch(path, token)?;
        let mut seen = 0u64;
        while count.is_none_or(|limit| seen < limit) {
            if let Some((event_path, event_token)) =
                self.client.next_event(Duration::from_secs(3600))?
            {
                println!("{event_path} {event_token}");
                seen += 1;
            }
        }
        // The watch belongs to the domain, not to this process: remove it.
        self.client.unwatch(path, token)?;
        Ok(())
    }
}

fn report(outcome: Outcome) -> bool {
    match outcome {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            true
        }
        Err(CommandError::Client(ClientError::Store(name))) => {
            println!("ERROR {name}");
            false
        }
        Err(CommandError::Client(error)) => {
            eprintln!("xenstore-guest: {error}");
            false
        }
        Err(CommandError::Usage(text)) => {
            eprintln!("xenstore-guest: {text}");
            false
        }
    }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let arguments = match parse_arguments(&raw) {
        Ok(Some(arguments)) => arguments,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(text) => {
            eprintln!("xenstore-guest: {text}");
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(arguments) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(text) => {
            eprintln!("xenstore-guest: {text}");
            ExitCode::from(1)
        }
    }
}

fn dom0(arguments: &Arguments) -> Result<Client<xenstore_client::client::SocketTransport>, String> {
    let mut client = Client::connect(&arguments.socket_path).map_err(|error| {
        format!(
            "cannot connect to {}: {error}",
            arguments.socket_path.display()
        )
    })?;
    client.timeout = arguments.timeout;
    Ok(client)
}

fn run(arguments: Arguments) -> Result<bool, String> {
    let domain = arguments.domain;
    if arguments.introduce {
        let mut dom0 = dom0(&arguments)?;
        let introduced = dom0
            .is_domain_introduced(domain)
            .map_err(|error| format!("XS_IS_DOMAIN_INTRODUCED: {error}"))?;
        if !introduced {
            DomainFiles::new(&arguments.run_directory, domain)
                .create(arguments.port)
                .map_err(|error| format!("cannot create the ring files: {error}"))?;
            dom0.introduce(domain, 0, arguments.port)
                .map_err(|error| format!("XS_INTRODUCE: {error}"))?;
        }
    }
    let mut succeeded = true;
    if !arguments.command.is_empty() {
        let mut client = Client::attach(&arguments.run_directory, domain)
            .map_err(|error| format!("cannot attach to domain {domain}'s ring: {error}"))?;
        client.timeout = arguments.timeout;
        let mut guest = Guest {
            client,
            domain,
            transaction_id: 0,
        };
        let command = &arguments.command;
        succeeded = match command.first().map(String::as_str) {
            Some("watch") => report(
                guest
                    .watch(command.get(1..).unwrap_or_default())
                    .map(|()| Vec::new()),
            ),
            Some("batch") => {
                let mut all = true;
                for line in std::io::stdin().lock().lines() {
                    let line = line.map_err(|error| error.to_string())?;
                    let words: Vec<String> = line.split_whitespace().map(String::from).collect();
                    all &= report(guest.run(&words));
                }
                all
            }
            _ => report(guest.run(command)),
        };
    }
    if arguments.release {
        let mut dom0 = dom0(&arguments)?;
        dom0.release(domain)
            .map_err(|error| format!("XS_RELEASE: {error}"))?;
    }
    let files = DomainFiles::new(&arguments.run_directory, domain);
    if arguments.shutdown {
        simulation::announce_state_change(&arguments.run_directory, &files.shutdown_marker())
            .map_err(|error| format!("cannot mark the domain shut down: {error}"))?;
    }
    if arguments.destroy {
        simulation::announce_state_change(&arguments.run_directory, &files.dead_marker())
            .map_err(|error| format!("cannot mark the domain dead: {error}"))?;
    }
    Ok(succeeded)
}
