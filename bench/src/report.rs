//! The outputs: the printed table with ratios to our server, the goals (docs/performance.md,
//! "Goals"), `results.csv` and the scaling curves as a hand-written SVG.

use std::fmt::Write as _;

use crate::servers::ServerKind;
use crate::workloads::{Row, ScalingPoint};

fn format_number(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "-".to_string()
    }
}

/// Our row for the same workload and variant.
fn ours<'a>(rows: &'a [Row], row: &Row) -> Option<&'a Row> {
    rows.iter().find(|candidate| {
        candidate.server == ServerKind::Ours
            && candidate.workload == row.workload
            && candidate.variant == row.variant
    })
}

/// The server/ours ratio: throughput where there is one, else p50 latency, else the figure.
fn ratio_to_ours(rows: &[Row], row: &Row) -> f64 {
    let Some(our_row) = ours(rows, row) else {
        return f64::NAN;
    };
    let (theirs, mine) = if row.summary.operations_per_second.is_finite() {
        (
            row.summary.operations_per_second,
            our_row.summary.operations_per_second,
        )
    } else if row.summary.p50_microseconds.is_finite() {
        (
            row.summary.p50_microseconds,
            our_row.summary.p50_microseconds,
        )
    } else {
        match (row.figure, our_row.figure) {
            (Some((_, theirs)), Some((_, mine))) => (theirs, mine),
            _ => return f64::NAN,
        }
    };
    theirs / mine
}

pub fn table(rows: &[Row]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<5} {:<40} {:<12} {:>10} {:>9} {:>9} {:>10} {:>8} {:>8} {:>9} {:>8} {:>10}  note",
        "work",
        "variant",
        "server",
        "ops/s",
        "p50 us",
        "p99 us",
        "max us",
        "retry/c",
        "cpu us/op",
        "peak MiB",
        "vs ours",
        "figure",
    );
    for row in rows {
        let figure = row
            .figure
            .map_or("-".to_string(), |(_, value)| format_number(value, 2));
        let note = match row.figure {
            Some((label, _)) if row.note.is_empty() => label.to_string(),
            Some((label, _)) => format!("figure = {label}; {}", row.note),
            None => row.note.clone(),
        };
        let retries = if row.workload == "W7" {
            format_number(row.summary.retries_per_commit, 3)
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            text,
            "{:<5} {:<40} {:<12} {:>10} {:>9} {:>9} {:>10} {:>8} {:>8} {:>9} {:>8} {:>10}  {}",
            row.workload,
            row.variant,
            row.server.name(),
            format_number(row.summary.operations_per_second, 0),
            format_number(row.summary.p50_microseconds, 1),
            format_number(row.summary.p99_microseconds, 1),
            format_number(row.summary.max_microseconds, 0),
            retries,
            format_number(row.summary.server_cpu_microseconds_per_operation, 1),
            format_number(row.peak_memory_kibibytes as f64 / 1024.0, 1),
            format_number(ratio_to_ours(rows, row), 2),
            figure,
            note
        );
    }
    text
}

pub fn csv(rows: &[Row]) -> String {
    let mut text = String::from(
        "workload,variant,server,operations_per_second,p50_microseconds,p99_microseconds,\
         max_microseconds,retries_per_commit,server_cpu_microseconds_per_operation,peak_memory_kibibytes,ratio_to_ours,figure_name,figure,note\n",
    );
    let quote = |field: &str| format!("\"{}\"", field.replace('"', "\"\""));
    for row in rows {
        let (figure_name, figure) = row.figure.unwrap_or(("", f64::NAN));
        let _ = writeln!(
            text,
            "{},{},{},{:.1},{:.2},{:.2},{:.2},{:.4},{:.2},{},{:.3},{},{:.2},{}",
            row.workload,
            quote(&row.variant),
            row.server.name(),
            row.summary.operations_per_second,
            row.summary.p50_microseconds,
            row.summary.p99_microseconds,
            row.summary.max_microseconds,
            row.summary.retries_per_commit,
            row.summary.server_cpu_microseconds_per_operation,
            row.peak_memory_kibibytes,
            ratio_to_ours(rows, row),
            quote(figure_name),
            figure,
            quote(&row.note)
        );
    }
    text
}

fn find(rows: &[Row], server: ServerKind, workload: &str, variant: &str) -> Option<Row> {
    rows.iter()
        .find(|row| row.server == server && row.workload == workload && row.variant == variant)
        .cloned()
}

/// Our row and C xenstored's of `workload`'s `variant`, when both ran.
fn ours_and_c(rows: &[Row], workload: &str, variant: &str) -> Option<(Row, Row)> {
    find(rows, ServerKind::Ours, workload, variant).zip(find(
        rows,
        ServerKind::CXenstored,
        workload,
        variant,
    ))
}

/// One goal as reported: (goal, met?, figure); without a `measured` figure (whether the
/// goal is met, and the figure) the figure says `missing`.
fn goal(
    name: impl Into<String>,
    missing: &str,
    measured: Option<(bool, String)>,
) -> (String, Option<bool>, String) {
    match measured {
        Some((met, figure)) => (name.into(), Some(met), figure),
        None => (name.into(), None, missing.into()),
    }
}

/// A latency goal: the p50 of `after` at most `limit` times the p50 of `before` (the pair:
/// both rows, when both were measured); `describe` writes the figure from the two p50s (us)
/// and their ratio.
fn p50_ratio_goal(
    name: impl Into<String>,
    pair: Option<(Row, Row)>,
    limit: f64,
    describe: impl FnOnce(f64, f64, f64) -> String,
) -> (String, Option<bool>, String) {
    goal(
        name,
        "not measured",
        pair.map(|(before, after)| {
            let before = before.summary.p50_microseconds;
            let after = after.summary.p50_microseconds;
            let ratio = after / before;
            (ratio <= limit, describe(before, after, ratio))
        }),
    )
}

/// The goals (docs/performance.md, "Goals") as reported figures: (goal, met?, figure).
pub fn goals(rows: &[Row], checkpoints: &[usize]) -> Vec<(String, Option<bool>, String)> {
    let mut goals = Vec::new();
    let floor = find(rows, ServerKind::Floor, "W0", "echo small, 1 client");
    let our_read = find(rows, ServerKind::Ours, "W1", "read 1 B");
    goals.push(p50_ratio_goal(
        "small-op socket latency <= 1.3x W0 floor",
        floor.zip(our_read),
        1.3,
        |floor, read, ratio| {
            format!("read p50 {read:.1} us / floor p50 {floor:.1} us = {ratio:.2}x")
        },
    ));
    goals.push(goal(
        "8-client throughput >= 2x C xenstored",
        "C xenstored did not run",
        ours_and_c(rows, "W3", "read 8 socket clients").map(|(mine, theirs)| {
            let ratio = mine.summary.operations_per_second / theirs.summary.operations_per_second;
            (
                ratio >= 2.0,
                format!(
                    "{:.0} vs {:.0} ops/s = {ratio:.2}x (server CPU per read {:.1} vs {:.1} us = {:.2}x)",
                    mine.summary.operations_per_second,
                    theirs.summary.operations_per_second,
                    mine.summary.server_cpu_microseconds_per_operation,
                    theirs.summary.server_cpu_microseconds_per_operation,
                    theirs.summary.server_cpu_microseconds_per_operation
                        / mine.summary.server_cpu_microseconds_per_operation
                ),
            )
        }),
    ));
    let first = checkpoints.first().copied().unwrap_or(0);
    let last = checkpoints.last().copied().unwrap_or(0);
    for transport in [
        "socket read",
        "ring read, newest domain",
        "ring read, first domain",
    ] {
        let at = |domains: usize| {
            find(
                rows,
                ServerKind::Ours,
                "W9",
                &format!("{transport} @ {domains} domains"),
            )
        };
        goals.push(p50_ratio_goal(
            format!("latency growth {first}->{last} domains <= 1.2x ({transport}, p50)"),
            at(first).zip(at(last)),
            1.2,
            |start, end, ratio| format!("{start:.1} -> {end:.1} us = {ratio:.2}x"),
        ));
    }
    goals.push(goal(
        "conflicting transactions (8 clients): retries/commit <= C, max <= 10 ms",
        "not measured",
        ours_and_c(rows, "W7", "conflicting, 8 clients").map(|(mine, theirs)| {
            (
                mine.summary.retries_per_commit <= theirs.summary.retries_per_commit
                    && mine.summary.max_microseconds <= 10_000.0,
                format!(
                    "{:.2} vs C {:.2} retries/commit; max {:.1} ms",
                    mine.summary.retries_per_commit,
                    theirs.summary.retries_per_commit,
                    mine.summary.max_microseconds / 1000.0
                ),
            )
        }),
    ));
    goals.push(goal(
        "disjoint transactions: zero retries",
        "not measured",
        find(rows, ServerKind::Ours, "W7", "disjoint, 8 clients").map(|row| {
            (
                row.summary.retries_per_commit == 0.0,
                format!(
                    "{:.4} retries/commit over {:.0} commits/s",
                    row.summary.retries_per_commit, row.summary.operations_per_second
                ),
            )
        }),
    ));
    let memory = |prefix: &str| {
        rows.iter()
            .find(|row| {
                row.server == ServerKind::Ours
                    && row.workload == "W13"
                    && row.variant.starts_with(prefix)
            })
            .and_then(|row| row.figure)
            .map(|(_, value)| value)
    };
    goals.push(goal(
        "<= 100 B per node beyond key+value",
        "not measured",
        memory("memory per node")
            .map(|bytes| (bytes <= 100.0, format!("{bytes:.0} B/node (RSS delta)"))),
    ));
    goals.push(goal(
        "<= 2 KiB per domain beyond its ring page",
        "not measured",
        memory("memory per domain")
            .map(|bytes| (bytes <= 2048.0, format!("{bytes:.0} B/domain (RSS delta)"))),
    ));
    goals.push(goal(
        "1000 domains x 100 nodes in 16 MiB",
        "not measured (needs 1000 domains in W9)",
        memory("store of 1000 domains").map(|mebibytes| {
            (
                mebibytes <= 16.0,
                // The Linux daemon's figure; stub-heap (run after this table by run.sh)
                // measures the stub's own heap.
                format!(
                    "{mebibytes:.1} MiB (daemon RSS delta beyond ring pages; the stub's heap: stub-heap below)"
                ),
            )
        }),
    ));
    goals
}

pub fn goals_text(goals: &[(String, Option<bool>, String)]) -> String {
    let mut text = String::from("Goals (docs/performance.md), our server:\n");
    for (goal, met, figure) in goals {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "n/a",
        };
        let _ = writeln!(text, "  {verdict:<8} {goal}: {figure}");
    }
    text
}

fn server_colour(server: ServerKind) -> &'static str {
    match server {
        ServerKind::Ours => "#d62728",
        ServerKind::CXenstored => "#1f77b4",
        ServerKind::OXenstored => "#2ca02c",
        ServerKind::Floor => "#7f7f7f",
    }
}

/// Draws one panel per curve name: the value against the number of domains, one polyline per
/// server (dashed for the ring transport).
pub fn svg(points: &[ScalingPoint]) -> String {
    let panels: Vec<(&str, &str)> = vec![
        (
            "socket read",
            "p50 read latency (us), socket, vs live domains",
        ),
        (
            "ring read, newest domain",
            "p50 read latency (us), newest guest's ring",
        ),
        (
            "ring read, first domain",
            "p50 read latency (us), first guest's ring",
        ),
        (
            "socket write",
            "p50 write latency (us), socket, vs live domains",
        ),
        (
            "boot ms/domain",
            "boot-storm cost per domain (ms) vs live domains",
        ),
        ("rss MiB", "server RSS (MiB) vs live domains"),
    ];
    let (panel_width, panel_height) = (460.0, 300.0);
    let (left, right, top, bottom) = (60.0, 20.0, 40.0, 40.0);
    let columns = 2usize;
    let rows = panels.len().div_ceil(columns);
    let mut text = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        panel_width * columns as f64,
        panel_height * rows as f64 + 30.0
    );
    for (index, (curve, title)) in panels.iter().enumerate() {
        let origin_x = (index % columns) as f64 * panel_width;
        let origin_y = (index / columns) as f64 * panel_height;
        let selected: Vec<&ScalingPoint> = points
            .iter()
            .filter(|point| point.curve == *curve && point.value.is_finite())
            .collect();
        let max_x = selected
            .iter()
            .map(|point| point.domains)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let max_y = selected
            .iter()
            .map(|point| point.value)
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.1;
        let plot_width = panel_width - left - right;
        let plot_height = panel_height - top - bottom;
        let x_of = |domains: usize| origin_x + left + domains as f64 / max_x * plot_width;
        let y_of = |value: f64| origin_y + top + plot_height - value / max_y * plot_height;
        let _ = writeln!(
            text,
            "<text x=\"{}\" y=\"{}\" font-weight=\"bold\">{title}</text>",
            origin_x + left,
            origin_y + 20.0
        );
        let _ = writeln!(
            text,
            "<rect x=\"{}\" y=\"{}\" width=\"{plot_width}\" height=\"{plot_height}\" fill=\"none\" stroke=\"#444\"/>",
            origin_x + left,
            origin_y + top
        );
        // Whole numbers once the axis reaches 10; small values keep two decimals.
        let decimals = if max_y >= 10.0 { 0 } else { 2 };
        for tick in 0..=4 {
            let fraction = tick as f64 / 4.0;
            let _ = writeln!(
                text,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.decimals$}</text>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}</text>",
                origin_x + left - 4.0,
                y_of(max_y * fraction) + 4.0,
                max_y * fraction,
                x_of((max_x * fraction) as usize),
                origin_y + top + plot_height + 14.0,
                max_x * fraction
            );
        }
        let mut legend_y = origin_y + top + 14.0;
        for server in [
            ServerKind::Ours,
            ServerKind::CXenstored,
            ServerKind::OXenstored,
        ] {
            let mut series: Vec<&&ScalingPoint> = selected
                .iter()
                .filter(|point| point.server == server)
                .collect();
            if series.is_empty() {
                continue;
            }
            series.sort_by_key(|point| point.domains);
            let coordinates: Vec<String> = series
                .iter()
                .map(|point| format!("{:.1},{:.1}", x_of(point.domains), y_of(point.value)))
                .collect();
            let colour = server_colour(server);
            let _ = writeln!(
                text,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                coordinates.join(" ")
            );
            for coordinate in &coordinates {
                let (x, y) = coordinate.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(
                    text,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"{colour}\"/>"
                );
            }
            let _ = writeln!(
                text,
                "<text x=\"{:.1}\" y=\"{legend_y:.1}\" fill=\"{colour}\">{}</text>",
                origin_x + left + 8.0,
                server.name()
            );
            legend_y += 14.0;
        }
    }
    let _ = writeln!(
        text,
        "<text x=\"10\" y=\"{}\">x axis: live introduced (simulated) domains. Generated by xenstore-bench.</text>\n</svg>",
        panel_height * rows as f64 + 20.0
    );
    text
}
