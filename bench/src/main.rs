//! `xenstore-bench`: runs the named workloads (docs/performance.md, "Workloads") against our
//! xenstored, Debian's C xenstored and oxenstored under the fake-Xen shim, all serving the same
//! simulated guests; prints a table with ratios to ours and the goals ("Goals" there), writes
//! `results.csv`, `scaling.svg` and `failures.txt`, and ends with a verdict: exit status 1 when
//! any server could not be set up or failed a workload (goals are reported, never judged).

#![deny(unsafe_code)]

mod report;
mod servers;
mod stats;
mod verdict;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use servers::{RunningServer, ServerKind, ServerPaths};
use stats::Summary;
use verdict::Failure;
use workloads::{Row, Scale};

const USAGE: &str = "\
usage: xenstore-bench [--quick] [--xenstored PATH] [--debian-root DIR] [--shim LIB.so]
                      [--peer-setup-failure REASON]
                      [--work-dir DIR] [--output-dir DIR] [--servers ours,C-xenstored,oxenstored]
                      [--workloads W0,W1,...]
       xenstore-bench --floor-server SOCKET     (internal: the W0 echo server)

Every server --servers names (default: all three) must run: a peer without --debian-root and
--shim, or with --peer-setup-failure (bench/run.sh's reason), is a failure. Exit status 1 when
anything failed, 2 on a usage error. bench/run.sh sets everything up.";

/// The stores a run compares, in table order.
const STORES: [ServerKind; 3] = [
    ServerKind::Ours,
    ServerKind::CXenstored,
    ServerKind::OXenstored,
];

struct Arguments {
    quick: bool,
    paths: ServerPaths,
    /// Why bench/run.sh could not prepare the peers: each peer asked for fails its set-up.
    peer_setup_failure: Option<String>,
    work_directory: PathBuf,
    output_directory: PathBuf,
    /// The stores to run (default all of [`STORES`]).
    servers: Vec<ServerKind>,
    workloads: Option<Vec<String>>,
}

fn parse_arguments() -> Result<Arguments, String> {
    let bench_binary = std::env::current_exe().map_err(|error| error.to_string())?;
    let mut arguments = Arguments {
        quick: false,
        paths: ServerPaths {
            our_xenstored: bench_binary.with_file_name("xenstored"),
            bench_binary,
            debian_root: None,
            shim_library: None,
        },
        peer_setup_failure: None,
        work_directory: PathBuf::from("/tmp/xenstore-bench"),
        output_directory: PathBuf::from("target/bench"),
        servers: STORES.to_vec(),
        workloads: None,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = || words.next().ok_or_else(|| format!("{word} needs a value"));
        match word.as_str() {
            "--quick" => arguments.quick = true,
            "--xenstored" => arguments.paths.our_xenstored = value()?.into(),
            "--debian-root" => arguments.paths.debian_root = Some(value()?.into()),
            "--shim" => arguments.paths.shim_library = Some(value()?.into()),
            "--peer-setup-failure" => arguments.peer_setup_failure = Some(value()?),
            "--work-dir" => arguments.work_directory = value()?.into(),
            "--output-dir" => arguments.output_directory = value()?.into(),
            "--servers" => {
                let names = value()?;
                let mut servers = Vec::new();
                for name in names.split(',') {
                    let kind = STORES
                        .into_iter()
                        .find(|kind| kind.name() == name)
                        .ok_or_else(|| format!("unknown server {name} in --servers"))?;
                    if !servers.contains(&kind) {
                        servers.push(kind);
                    }
                }
                // Table order, whatever the order given.
                arguments.servers = STORES
                    .into_iter()
                    .filter(|kind| servers.contains(kind))
                    .collect();
            }
            "--workloads" => {
                let names: Vec<String> = value()?.split(',').map(str::to_string).collect();
                if let Some(unknown) = names
                    .iter()
                    .find(|name| !workloads::all().iter().any(|(known, ..)| known == name))
                {
                    return Err(format!("unknown workload {unknown} in --workloads"));
                }
                arguments.workloads = Some(names);
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(arguments)
}

fn main() -> ExitCode {
    let words: Vec<String> = std::env::args().collect();
    if words.get(1).map(String::as_str) == Some("--floor-server") {
        let Some(socket) = words.get(2) else {
            return usage_error("");
        };
        return match servers::run_floor_server(std::path::Path::new(socket)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("floor server: {error}");
                ExitCode::FAILURE
            }
        };
    }
    match parse_arguments() {
        Ok(arguments) => run(&arguments),
        Err(message) => usage_error(&message),
    }
}

/// A usage error: `message` (when there is one) and the usage, exit status 2.
fn usage_error(message: &str) -> ExitCode {
    if !message.is_empty() {
        eprintln!("xenstore-bench: {message}");
    }
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn run(arguments: &Arguments) -> ExitCode {
    let scale = if arguments.quick {
        Scale::quick()
    } else {
        Scale::full()
    };
    let mut failures: Vec<Failure> = Vec::new();
    // A server asked for that cannot run is a failure, never silently left out.
    let mut stores = Vec::new();
    for &kind in &arguments.servers {
        match arguments
            .paths
            .unavailable(kind, arguments.peer_setup_failure.as_deref())
        {
            Some(reason) => {
                eprintln!("xenstore-bench: {}: {reason}", kind.name());
                failures.push(Failure::new(kind, "set-up", reason));
            }
            None => stores.push(kind),
        }
    }
    eprintln!(
        "xenstore-bench: servers {:?}, {} mode",
        stores.iter().map(|kind| kind.name()).collect::<Vec<_>>(),
        if arguments.quick { "quick" } else { "full" }
    );
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut points = Vec::new();
    for (name, workload, on_floor) in workloads::all() {
        if let Some(wanted) = &arguments.workloads
            && !wanted.iter().any(|wanted_name| wanted_name == name)
        {
            continue;
        }
        let kinds = if on_floor {
            vec![ServerKind::Floor]
        } else {
            stores.clone()
        };
        for kind in kinds {
            let workload_start = Instant::now();
            let run_directory = arguments
                .work_directory
                .join(format!("{}-{name}", kind.name()));
            let outcome = RunningServer::start(kind, &arguments.paths, &run_directory)
                .map_err(|error| error.to_string())
                .and_then(|mut server| {
                    let result = workload(&server, &scale);
                    // A server that exited is a failure even when the workload's last reply
                    // came before it did.
                    let patience = if result.is_ok() {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(500)
                    };
                    let exited = server.exit_status(patience);
                    let cpu = server.cpu_nanoseconds();
                    match (result, exited) {
                        (Ok((rows, points)), None) => Ok((rows, points, cpu)),
                        (Ok(_), Some(status)) => Err(format!(
                            "the server exited during the workload ({status}; log: {})",
                            servers::log_excerpt(&run_directory)
                        )),
                        (Err(error), exited) => Err(format!(
                            "{error} (server {}; log: {})",
                            exited.map_or("running".to_string(), |status| format!(
                                "EXITED: {status}"
                            )),
                            servers::log_excerpt(&run_directory)
                        )),
                    }
                });
            match outcome {
                Ok((new_rows, new_points, cpu_nanoseconds)) => {
                    eprintln!(
                        "  {name:<4} {:<12} {:>6.1} s (server CPU {:.1} s)",
                        kind.name(),
                        workload_start.elapsed().as_secs_f64(),
                        cpu_nanoseconds as f64 / 1e9
                    );
                    rows.extend(new_rows);
                    points.extend(new_points);
                }
                Err(error) => {
                    eprintln!("  {name:<4} {:<12} FAILED: {error}", kind.name());
                    failures.push(Failure::new(kind, name, error.clone()));
                    rows.push(Row {
                        workload: name,
                        variant: "FAILED".to_string(),
                        server: kind,
                        summary: Summary::empty(),
                        peak_memory_kibibytes: 0,
                        figure: None,
                        note: error,
                        refused: None,
                    });
                }
            }
        }
    }
    failures.extend(verdict::refusals(&rows));
    let _ = std::fs::remove_dir_all(&arguments.work_directory);
    println!("{}", report::table(&rows));
    let goals = report::goals(&rows, scale.domain_checkpoints);
    println!("{}", report::goals_text(&goals));
    println!(
        "servers: {}; total {:.1} s; 'vs ours' = server/ours for ops/s (else p50, else figure)",
        stores
            .iter()
            .map(|kind| kind.name())
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64()
    );
    // failures.txt: the verdict's entries, one a line (empty when none), for bench/run.sh.
    let failures_text: String = verdict::entries(&failures)
        .iter()
        .map(|entry| format!("{entry}\n"))
        .collect();
    if let Err(error) = std::fs::create_dir_all(&arguments.output_directory)
        .and_then(|()| {
            std::fs::write(
                arguments.output_directory.join("results.csv"),
                report::csv(&rows),
            )
        })
        .and_then(|()| {
            std::fs::write(
                arguments.output_directory.join("scaling.svg"),
                report::svg(&points),
            )
        })
        .and_then(|()| {
            std::fs::write(
                arguments.output_directory.join("failures.txt"),
                &failures_text,
            )
        })
    {
        eprintln!("xenstore-bench: writing results: {error}");
        failures.push(Failure {
            server: "xenstore-bench".to_string(),
            workload: "results".to_string(),
            what: format!("writing the results failed: {error}"),
        });
    } else {
        println!(
            "wrote {}, {} and {}",
            arguments.output_directory.join("results.csv").display(),
            arguments.output_directory.join("scaling.svg").display(),
            arguments.output_directory.join("failures.txt").display()
        );
    }
    println!("{}", verdict::line("xenstore-bench", &failures, &stores));
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
