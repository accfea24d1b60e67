//! Watches: registrations indexed by path, and which of them a change fires.
//!
//! Semantics from `docs/misc/xenstore.txt` ("WATCH") and C xenstored (`watch.c`): a change
//! to node P fires every watch registered on P or an ancestor of P (subject to the watch's
//! depth); the nodes below a removed node fire only watches registered exactly on them.
//! The index is keyed by the watched path, so finding the watches of a change costs one
//! lookup per ancestor, however many watches other domains hold.

use crate::fallible;
use crate::path;
use crate::siphash::SipHasher;
use crate::{ConnectionId, StoreError, StoreResult};
use alloc::string::String;
use alloc::vec::Vec;
use hashbrown::HashTable;

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

/// The key of [`WatchIndex::default`] (tests); the engine keys its index with its secret.
const DEFAULT_HASH_KEY: [u64; 2] = [0x5741_5443_4845_5331, 0x0123_4567_89ab_cdef];

/// All watches, by watched (absolute or `@`) path.
///
/// A hash table (keyed SipHash, like the node index: guests choose the paths) rather than
/// a `BTreeMap`, because its growth can be refused: a `WATCH` that finds no memory answers
/// `ENOMEM` instead of ending the store.
#[derive(Debug)]
pub struct WatchIndex {
    by_path: HashTable<(String, Vec<Watch>)>,
    hash_key: [u64; 2],
    count: usize,
}

impl Default for WatchIndex {
    fn default() -> Self {
        WatchIndex::new(DEFAULT_HASH_KEY)
    }
}

fn hash_path(key: [u64; 2], path: &str) -> u64 {
    let mut hasher = SipHasher::new(key);
    hasher.write(path.as_bytes());
    hasher.finish()
}

impl WatchIndex {
    /// An empty index whose paths are hashed with `hash_key` (secret, random).
    pub fn new(hash_key: [u64; 2]) -> WatchIndex {
        WatchIndex {
            by_path: HashTable::new(),
            hash_key,
            count: 0,
        }
    }

    fn watchers(&self, path: &str) -> Option<&(String, Vec<Watch>)> {
        self.by_path
            .find(hash_path(self.hash_key, path), |(watched, _)| {
                watched == path
            })
    }

    /// Whether `connection` already watches `path` with `token`.
    pub fn contains(&self, connection: ConnectionId, path: &str, token: &[u8]) -> bool {
        self.watchers(path).is_some_and(|(_, watches)| {
            watches
                .iter()
                .any(|watch| watch.connection == connection && watch.token == token)
        })
    }

    /// Registers a watch; `ENOMEM`, with the index unchanged, when it cannot grow.
    pub fn add(&mut self, path: &str, watch: Watch) -> StoreResult<()> {
        let key = self.hash_key;
        let hash = hash_path(key, path);
        if let Some((_, watches)) = self.by_path.find_mut(hash, |(watched, _)| watched == path) {
            // Most watched paths have one or two watchers (a guest's own device paths): grow
            // those one at a time instead of to a first capacity of four (48 bytes each),
            // which stub-heap showed as about 150 bytes of a watch's 480. Busy paths grow as
            // usual.
            if watches.len() < SMALL_WATCHER_LIST {
                watches
                    .try_reserve_exact(1)
                    .map_err(|_| StoreError::OutOfMemory)?;
            }
            fallible::push(watches, watch)?;
        } else {
            let mut watches = fallible::vec_with_capacity(1)?;
            watches.push(watch);
            let entry = (fallible::string(path)?, watches);
            self.by_path
                .try_reserve(1, |(watched, _)| hash_path(key, watched))
                .map_err(|_| StoreError::OutOfMemory)?;
            self.by_path
                .insert_unique(hash, entry, |(watched, _)| hash_path(key, watched));
        }
        self.count += 1;
        Ok(())
    }

    /// Removes one watch; returns it if it existed.
    pub fn remove(&mut self, connection: ConnectionId, path: &str, token: &[u8]) -> Option<Watch> {
        let hash = hash_path(self.hash_key, path);
        let mut entry = self
            .by_path
            .find_entry(hash, |(watched, _)| watched == path)
            .ok()?;
        let watches = &mut entry.get_mut().1;
        let position = watches
            .iter()
            .position(|watch| watch.connection == connection && watch.token == token)?;
        let watch = watches.remove(position);
        if watches.is_empty() {
            entry.remove();
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

    /// Calls `fire` with each watch a change of `changed` fires (and the path it watches):
    /// with `exact`, only those registered on it; otherwise those on it and on its
    /// ancestors whose depth reaches it. Nothing is allocated.
    pub fn for_each_matching(
        &self,
        changed: &str,
        exact: bool,
        mut fire: impl FnMut(&str, &Watch),
    ) {
        let mut visit = |watched: &str| {
            if let Some((key, watches)) = self.watchers(watched) {
                let depth = path::depth_below(watched, changed);
                for watch in watches {
                    if watch.depth.is_none_or(|limit| depth <= limit as usize) {
                        fire(key.as_str(), watch);
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
    }

    /// The watches on exactly `watched` (special-event delivery).
    pub fn on_path(&self, watched: &str) -> &[Watch] {
        self.watchers(watched)
            .map_or(&[], |(_, watches)| watches.as_slice())
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
        index.add("/", watch(1, "root", None)).unwrap();
        index.add("/a", watch(2, "a", Some(0))).unwrap();
        index.add("/a", watch(3, "a1", Some(1))).unwrap();
        index.add("/a/b", watch(4, "b", None)).unwrap();
        let tokens = |changed: &str, exact: bool| -> Vec<Vec<u8>> {
            let mut tokens = Vec::new();
            index.for_each_matching(changed, exact, |_, watch| tokens.push(watch.token.clone()));
            tokens
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
        index.add("/a", watch(1, "t", None)).unwrap();
        assert!(index.contains(ConnectionId(1), "/a", b"t"));
        assert!(index.remove(ConnectionId(2), "/a", b"t").is_none());
        assert!(index.remove(ConnectionId(1), "/a", b"t").is_some());
        assert!(index.is_empty());
    }
}
