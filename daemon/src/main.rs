//! `xenstored` for Linux: the xenstore engine on the standard Unix socket, with simulated guest rings.
//!
//! Usage: `xenstored --help`. The simulated-guest convention is described in `daemon/README.md`.

#![deny(unsafe_code)]

use std::process::ExitCode;

use xenstore_engine::Engine;
use xenstored_linux::options::{self, Command, USAGE};
use xenstored_linux::{logger, server::Server};

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
    let engine = Engine::new(options.config.clone());
    let mut server = match Server::new(
        engine,
        &options.socket_path,
        &options.run_directory,
        options.io_uring,
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
