//! Tests of the daemon's event loop: epoll tokens name their source.

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
