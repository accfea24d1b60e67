//! `xenstore-bench`: runs the named workloads of performance.md §4.2 against our xenstored and,
//! when available, Debian's C xenstored and oxenstored under the fake-Xen shim, all serving the
//! same simulated guests; prints a table with ratios to ours and the §4.4 goals, and writes
//! `results.csv` and `scaling.svg`.

mod report;
mod servers;
mod stats;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use servers::{RunningServer, ServerKind, ServerPaths};
use stats::Summary;
use workloads::{Row, Scale};

const USAGE: &str = "\
usage: xenstore-bench [--quick] [--xenstored PATH] [--debian-root DIR] [--shim LIB.so]
                      [--work-dir DIR] [--output-dir DIR] [--servers ours,C-xenstored,oxenstored]
                      [--workloads W0,W1,...]
       xenstore-bench --floor-server SOCKET     (internal: the W0 echo server)

Without --debian-root and --shim only our server runs. bench/run.sh sets everything up.";

struct Arguments {
    quick: bool,
    paths: ServerPaths,
    work_directory: PathBuf,
    output_directory: PathBuf,
    servers: Option<Vec<String>>,
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
        work_directory: PathBuf::from("/tmp/xenstore-bench"),
        output_directory: PathBuf::from("target/bench"),
        servers: None,
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
            "--work-dir" => arguments.work_directory = value()?.into(),
            "--output-dir" => arguments.output_directory = value()?.into(),
            "--servers" => {
                arguments.servers = Some(value()?.split(',').map(str::to_string).collect())
            }
            "--workloads" => {
                arguments.workloads = Some(value()?.split(',').map(str::to_string).collect())
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
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        };
        return match servers::run_floor_server(std::path::Path::new(socket)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("floor server: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let arguments = match parse_arguments() {
        Ok(arguments) => arguments,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("xenstore-bench: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    run(&arguments)
}

fn run(arguments: &Arguments) -> ExitCode {
    let scale = if arguments.quick {
        Scale::quick()
    } else {
        Scale::full()
    };
    let available = arguments.paths.available();
    let stores: Vec<ServerKind> = available
        .iter()
        .copied()
        .filter(|kind| kind.is_store())
        .filter(|kind| {
            arguments
                .servers
                .as_ref()
                .is_none_or(|wanted| wanted.iter().any(|name| name == kind.name()))
        })
        .collect();
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
                    let result = workload(&server, &scale).map_err(|error| {
                        let state = if server.alive() { "running" } else { "DIED" };
                        let log = std::fs::read_to_string(run_directory.join("server.log"))
                            .unwrap_or_default();
                        let tail: String =
                            log.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                        format!("{error} (server {state}; log: {tail})")
                    });
                    let cpu = server.cpu_nanoseconds();
                    result.map(|(rows, points)| (rows, points, cpu))
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
                    rows.push(Row {
                        workload: name,
                        variant: "FAILED".to_string(),
                        server: kind,
                        summary: Summary::empty(),
                        peak_memory_kibibytes: 0,
                        figure: None,
                        note: error,
                    });
                }
            }
        }
    }
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
    {
        eprintln!("xenstore-bench: writing results: {error}");
        return ExitCode::FAILURE;
    }
    println!(
        "wrote {} and {}",
        arguments.output_directory.join("results.csv").display(),
        arguments.output_directory.join("scaling.svg").display()
    );
    ExitCode::SUCCESS
}
