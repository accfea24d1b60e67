//! Watches: registrations indexed by path, and which of them a change fires.
//!
//! Semantics from `docs/misc/xenstore.txt` ("WATCH") and C xenstored (`watch.c`): a change
//! to node P fires every watch registered on P or an ancestor of P (subject to the watch's
//! depth); the nodes below a removed node fire only watches registered exactly on them.
//! The index is keyed by the watched path, so finding the watches of a change costs one
//! lookup per ancestor, however many watches other domains hold.

use crate::ConnectionId;
use crate::path;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// One registered watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// Who registered it.
    pub connection: ConnectionId,
    /// The opaque token returned with every event.
    pub token: Vec<u8>,
    /// Bytes of home prefix to strip from event paths (relative registration).
    pub relative_prefix_bytes: usize,
    /// Levels below the watched path that fire it (`None`: unlimited).
    pub depth: Option<u32>,
}

impl Watch {
    /// The bytes a watch costs in the memory quota (path and token, as C charges).
    pub fn memory_bytes(path: &str, token: &[u8]) -> u64 {
        (path.len() + token.len()) as u64
    }
}

/// Watchers of one path up to which its list grows exactly, one entry at a time.
const SMALL_WATCHER_LIST: usize = 4;

/// All watches, by watched (absolute or `@`) path.
#[derive(Debug, Default)]
pub struct WatchIndex {
    by_path: BTreeMap<String, Vec<Watch>>,
    count: usize,
}

impl WatchIndex {
    /// Whether `connection` already watches `path` with `token`.
    pub fn contains(&self, connection: ConnectionId, path: &str, token: &[u8]) -> bool {
        self.by_path.get(path).is_some_and(|watches| {
            watches
                .iter()
                .any(|watch| watch.connection == connection && watch.token == token)
        })
    }

    /// Registers a watch.
    pub fn add(&mut self, path: &str, watch: Watch) {
        let watches = self.by_path.entry(String::from(path)).or_default();
        // Most watched paths have one or two watchers (a guest's own device paths): grow
        // those one at a time instead of to a first capacity of four (48 bytes each), which
        // stub-heap showed as about 150 bytes of a watch's 480. Busy paths grow as usual.
        if watches.len() < SMALL_WATCHER_LIST {
            watches.reserve_exact(1);
        }
        watches.push(watch);
        self.count += 1;
    }

    /// Removes one watch; returns it if it existed.
    pub fn remove(&mut self, connection: ConnectionId, path: &str, token: &[u8]) -> Option<Watch> {
        let watches = self.by_path.get_mut(path)?;
        let position = watches
            .iter()
            .position(|watch| watch.connection == connection && watch.token == token)?;
        let watch = watches.remove(position);
        if watches.is_empty() {
            self.by_path.remove(path);
        }
        self.count -= 1;
        Some(watch)
    }

    /// Number of watches registered.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no watches.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The watches a change of `changed` fires: with `exact`, only those registered on it;
    /// otherwise those on it and on its ancestors whose depth reaches it.
    pub fn matching(&self, changed: &str, exact: bool) -> Vec<(&str, &Watch)> {
        let mut found = Vec::new();
        let mut visit = |watched: &str| {
            if let Some((key, watches)) = self.by_path.get_key_value(watched) {
                let depth = path::depth_below(watched, changed);
                for watch in watches {
                    if watch.depth.is_none_or(|limit| depth <= limit as usize) {
                        found.push((key.as_str(), watch));
                    }
                }
            }
        };
        if exact || path::is_special(changed) {
            visit(changed);
        } else {
            for ancestor in path::ancestors_and_self(changed) {
                visit(ancestor);
            }
        }
        found
    }

    /// The watches on exactly `watched` (special-event delivery).
    pub fn on_path(&self, watched: &str) -> &[Watch] {
        self.by_path.get(watched).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(connection: u32, token: &str, depth: Option<u32>) -> Watch {
        Watch {
            connection: ConnectionId(connection),
            token: token.as_bytes().to_vec(),
            relative_prefix_bytes: 0,
            depth,
        }
    }

    #[test]
    fn subtree_matching_respects_depth_and_exactness() {
        let mut index = WatchIndex::default();
        index.add("/", watch(1, "root", None));
        index.add("/a", watch(2, "a", Some(0)));
        index.add("/a", watch(3, "a1", Some(1)));
        index.add("/a/b", watch(4, "b", None));
        let tokens = |changed: &str, exact: bool| -> Vec<Vec<u8>> {
            index
                .matching(changed, exact)
                .into_iter()
                .map(|(_, watch)| watch.token.clone())
                .collect()
        };
        assert_eq!(
            tokens("/a/b", false),
            [b"root".to_vec(), b"a1".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            tokens("/a", false),
            [b"root".to_vec(), b"a".to_vec(), b"a1".to_vec()]
        );
        assert_eq!(tokens("/a/b", true), [b"b".to_vec()]);
        assert!(tokens("/ab", false).iter().all(|token| token == b"root"));
    }

    #[test]
    fn remove_is_exact() {
        let mut index = WatchIndex::default();
        index.add("/a", watch(1, "t", None));
        assert!(index.contains(ConnectionId(1), "/a", b"t"));
        assert!(index.remove(ConnectionId(2), "/a", b"t").is_none());
        assert!(index.remove(ConnectionId(1), "/a", b"t").is_some());
        assert!(index.is_empty());
    }
}
