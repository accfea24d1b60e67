//! `xenstored` for Linux: the xenstore engine on the standard Unix socket, with simulated guest rings.
//!
//! Usage: `xenstored --help`. The simulated-guest convention is described in `daemon/README.md`.

#![deny(unsafe_code)]

use std::collections::BTreeSet;
use std::os::unix::net::UnixListener;
use std::process::ExitCode;

use xenstore_client::simulation;
use xenstore_engine::Engine;
use xenstored_linux::options::{self, Command, USAGE};
use xenstored_linux::{logger, server::Server, sys};

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let options = match options::parse(&arguments, &|name| std::env::var(name).ok()) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(options)) => options,
        Err(error) => {
            eprintln!("xenstored: {}", error.0);
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = logger::install(options.verbosity, options.trace_file.as_deref()) {
        eprintln!("xenstored: cannot open the trace file: {error}");
        return ExitCode::FAILURE;
    }
    // -U: the state a live update left (docs/migration-stream.md, "The daemon").
    let (engine, restored) = if options.live_update {
        let path = simulation::state_dump_file(&options.run_directory);
        let stream = match std::fs::read(&path) {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("xenstored: cannot read {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        };
        match Engine::from_state(options.config.clone(), &stream) {
            Ok((engine, restored)) => {
                // As C: the state is read once.
                if let Err(error) = std::fs::remove_file(&path) {
                    log::warn!("cannot remove {}: {error}", path.display());
                }
                log::warn!(
                    "state restored from {} ({} connections)",
                    path.display(),
                    restored.connections.len()
                );
                (engine, Some(restored))
            }
            Err(error) => {
                eprintln!("xenstored: cannot restore {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        }
    } else {
        (Engine::new(options.config.clone()), None)
    };
    // A live update's previous instance left its listening socket open (the global
    // record names it): served on, so that clients never find the socket missing.
    let mut adopted = BTreeSet::new();
    let inherited_listener = restored
        .as_ref()
        .and_then(|state| state.global)
        .map(|global| global.socket_fd)
        .filter(|descriptor| *descriptor >= 0 && adopted.insert(*descriptor))
        .and_then(|descriptor| match sys::inherited_socket(descriptor) {
            Ok(socket) => Some(UnixListener::from(socket)),
            Err(error) => {
                log::warn!("the listening socket is not inherited ({error}): bound again");
                None
            }
        });
    let mut server = match Server::new(
        engine,
        &options.socket_path,
        &options.run_directory,
        options.io_uring,
        inherited_listener,
    ) {
        Ok(server) => server,
        Err(error) => {
            eprintln!(
                "xenstored: cannot listen on {}: {error}",
                options.socket_path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if let Some(restored) = restored {
        server.restore_connections(restored, &mut adopted);
    }
    server.set_restart_arguments(arguments);
    if let Some(pid_file) = &options.pid_file
        && let Err(error) = std::fs::write(pid_file, format!("{}\n", std::process::id()))
    {
        eprintln!("xenstored: cannot write {}: {error}", pid_file.display());
        return ExitCode::FAILURE;
    }
    if options.print_pid {
        println!("{}", std::process::id());
    }
    log::info!("serving on {}", options.socket_path.display());
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xenstored: {error}");
            ExitCode::FAILURE
        }
    }
}
