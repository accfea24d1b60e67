//! Tests of the daemon's event loop: epoll tokens name their source; a live update's arguments.

use super::*;

#[test]
fn epoll_tokens_name_their_source() {
    let sources = [
        Source::Listener,
        Source::DomainException,
        Source::Markers,
        Source::Socket(ConnectionId(0)),
        Source::Socket(ConnectionId(u32::MAX)),
        Source::Guest(DomainId(0)),
        Source::Guest(DomainId(u16::MAX)),
    ];
    for source in sources {
        assert_eq!(Source::from_token(source.token()), Some(source));
    }
    let tokens: BTreeSet<u64> = sources.iter().map(|source| source.token()).collect();
    assert_eq!(tokens.len(), sources.len());
    assert_eq!(Source::from_token(99 << 32), None);
    assert_eq!(Source::from_token((3 << 32) | 0x1_0000), None);
}

/// C `lu_activate_binary()`: `-c`'s text split at blanks, else the process's own arguments;
/// `-U` added unless there.
#[test]
fn a_live_update_passes_c_arguments() {
    let own: Vec<String> = ["--rundir", "/run/xs", "-N"].map(String::from).to_vec();
    assert_eq!(
        restart_arguments(None, &own),
        ["--rundir", "/run/xs", "-N", "-U"]
    );
    assert_eq!(
        restart_arguments(Some(b" -T /tmp/trace\t-N  "), &own),
        ["-T", "/tmp/trace", "-N", "-U"]
    );
    assert_eq!(restart_arguments(Some(b"-U -N"), &own), ["-U", "-N"]);
    let updated: Vec<String> = ["-N", "--live-update"].map(String::from).to_vec();
    assert_eq!(restart_arguments(None, &updated), updated);
}
