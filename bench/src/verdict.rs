//! The run's verdict: every failure (a server that could not be set up or started, a workload
//! that ended in an error reply, a timeout or a lost connection, a server that exited, ours
//! refusing an optional request a peer answered). Speed and memory goals are reported by
//! `report::goals`, never judged here: a missed goal is not a failure.

use crate::servers::ServerKind;
use crate::workloads::Row;

/// One failure: which server, in which workload (or `set-up`), what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub server: String,
    pub workload: String,
    pub what: String,
}

impl Failure {
    pub fn new(server: ServerKind, workload: &str, what: impl Into<String>) -> Failure {
        Failure {
            server: server.name().to_string(),
            workload: workload.to_string(),
            what: what.into(),
        }
    }
}

/// Ours answering an optional request with an error where a peer answered it: for each of
/// our rows with a refusal, the peers' rows of the same workload and variant that have none.
pub fn refusals(rows: &[Row]) -> Vec<Failure> {
    let mut failures = Vec::new();
    for row in rows.iter().filter(|row| row.server == ServerKind::Ours) {
        let Some((request, error)) = &row.refused else {
            continue;
        };
        let answered: Vec<&str> = rows
            .iter()
            .filter(|peer| {
                matches!(peer.server, ServerKind::CXenstored | ServerKind::OXenstored)
                    && peer.workload == row.workload
                    && peer.variant == row.variant
                    && peer.refused.is_none()
            })
            .map(|peer| peer.server.name())
            .collect();
        if !answered.is_empty() {
            failures.push(Failure::new(
                ServerKind::Ours,
                row.workload,
                format!(
                    "answered {error} to {request}, which {} answered",
                    answered.join(" and ")
                ),
            ));
        }
    }
    failures
}

/// The failures as entries, `server workload[, workload...]: what happened`: one per server
/// and message, in the order they happened (a daemon that cannot start fails every workload
/// with the same message, listed once with every workload).
pub fn entries(failures: &[Failure]) -> Vec<String> {
    let mut groups: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for failure in failures {
        match groups
            .iter_mut()
            .find(|(server, what, _)| *server == failure.server && *what == failure.what)
        {
            Some((_, _, workloads)) => workloads.push(&failure.workload),
            None => groups.push((&failure.server, &failure.what, vec![&failure.workload])),
        }
    }
    groups
        .into_iter()
        .map(|(server, what, workloads)| {
            let what = what.replace(['\n', '\r'], " ");
            format!("{server} {}: {what}", workloads.join(", "))
        })
        .collect()
}

/// The verdict line: `PASSED` with the servers that ran, or `FAILED` with every failure.
pub fn line(prefix: &str, failures: &[Failure], servers: &[ServerKind]) -> String {
    if failures.is_empty() {
        let names: Vec<&str> = servers.iter().map(|kind| kind.name()).collect();
        return format!(
            "{prefix}: PASSED: {} ran every workload without a failure \
             (goals and ratios are reported, not judged)",
            names.join(", ")
        );
    }
    format!(
        "{prefix}: FAILED, {} failure{}: {}",
        failures.len(),
        if failures.len() == 1 { "" } else { "s" },
        entries(failures).join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Summary;

    fn row(server: ServerKind, refused: Option<&str>) -> Row {
        Row {
            workload: "W13",
            variant: "memory per node (20000 nodes)".to_string(),
            server,
            summary: Summary::empty(),
            peak_memory_kibibytes: 0,
            figure: None,
            note: String::new(),
            refused: refused.map(|error| ("XS_CONTROL memreport", error.to_string())),
        }
    }

    #[test]
    fn ours_refusing_what_a_peer_answers_is_a_failure() {
        let rows = [
            row(ServerKind::Ours, Some("EINVAL")),
            row(ServerKind::CXenstored, Some("EINVAL")),
            row(ServerKind::OXenstored, None),
        ];
        assert_eq!(
            refusals(&rows),
            [Failure {
                server: "ours".into(),
                workload: "W13".into(),
                what: "answered EINVAL to XS_CONTROL memreport, which oxenstored answered".into(),
            }]
        );
    }

    #[test]
    fn a_refusal_every_server_shares_or_only_a_peer_makes_is_no_failure() {
        let all_refuse = [
            row(ServerKind::Ours, Some("EINVAL")),
            row(ServerKind::CXenstored, Some("EINVAL")),
            row(ServerKind::OXenstored, Some("ENOSYS")),
        ];
        assert!(refusals(&all_refuse).is_empty());
        let peer_refuses = [
            row(ServerKind::Ours, None),
            row(ServerKind::CXenstored, Some("EINVAL")),
        ];
        assert!(refusals(&peer_refuses).is_empty());
        // Without a peer's answer to compare with, ours is not judged.
        assert!(refusals(&[row(ServerKind::Ours, Some("EINVAL"))]).is_empty());
    }

    #[test]
    fn the_verdict_line_lists_every_failure_on_one_line() {
        let servers = [
            ServerKind::Ours,
            ServerKind::CXenstored,
            ServerKind::OXenstored,
        ];
        assert_eq!(
            line("xenstore-bench", &[], &servers),
            "xenstore-bench: PASSED: ours, C-xenstored, oxenstored ran every workload without a \
             failure (goals and ratios are reported, not judged)"
        );
        let failures = [
            Failure::new(
                ServerKind::Ours,
                "W1",
                "exited at start-up\n(exit status: 2)",
            ),
            Failure::new(
                ServerKind::OXenstored,
                "set-up",
                "no apt-get to fetch the peers",
            ),
            Failure::new(
                ServerKind::Ours,
                "W3",
                "exited at start-up\n(exit status: 2)",
            ),
            Failure::new(ServerKind::Ours, "W8", "no watch event within 5 s"),
        ];
        assert_eq!(
            line("xenstore-bench", &failures, &servers),
            "xenstore-bench: FAILED, 4 failures: ours W1, W3: exited at start-up (exit status: \
             2); oxenstored set-up: no apt-get to fetch the peers; ours W8: no watch event within 5 s"
        );
    }
}
