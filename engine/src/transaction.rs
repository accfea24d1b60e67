//! Transactions: per-node optimistic concurrency, as C xenstored has done since Xen 4.9.
//!
//! A transaction copies nothing up front. The first time it touches a node it records the
//! node's generation (or that the node did not exist); later accesses see its private copy.
//! At commit every recorded node must still have that generation, else the commit fails
//! with `EAGAIN` and nothing is applied (`tools/xenstored/transaction.c`, header comment).
//! Writes to nodes the transaction never touched do not conflict with it.

use crate::DomainId;
use crate::fallible::SortedMap;
use crate::operations::{AccountingDeltas, Change, NodeAccess, account_replacement};
use crate::store::{Node, Tree};
use crate::{StoreError, StoreResult};
use alloc::string::String;
use alloc::vec::Vec;

/// A node as a transaction has seen and changed it.
#[derive(Clone, Debug)]
pub struct AccessedNode {
    /// The committed generation at first access (`None`: the node did not exist).
    pub generation_seen: Option<u64>,
    /// The transaction's private copy (`None`: absent or deleted). Reads see it, not the
    /// committed tree: a transaction sees each node as of its first access.
    pub node: Option<Node>,
    /// Whether the transaction changed the node (only changed nodes are written at commit).
    pub written: bool,
}

/// One open transaction.
#[derive(Debug, Default)]
pub struct Transaction {
    /// Every node touched, by path (in path order).
    pub accessed: SortedMap<String, AccessedNode>,
    /// Changes to fire as watch events at commit.
    pub changes: Vec<Change>,
    /// Set when an operation inside failed in a way that poisons the commit (`ENOMEM` then).
    pub failed: bool,
    /// The transaction was open when the store's state was saved (a live update): its
    /// accesses were not saved, so its commit answers `EAGAIN` and the client retries
    /// (`docs/migration-stream.md`, "Transactions").
    pub interrupted: bool,
    /// Node and memory deltas per owner, for quota checks.
    pub deltas: AccountingDeltas,
    /// Bytes of the private copies (paths and node records) the transaction holds; the
    /// engine charges them to the domain that opened it (C counts transaction memory in
    /// the domain's `memory` quota, XSA-326).
    pub memory_bytes: u64,
    /// The engine's time when it started (a live update waits for, or with `-F` overrides,
    /// transactions older than its timeout; `docs/protocol.md`, "Live update"). Restored
    /// transactions count as started at the restored engine's time 0.
    pub started_at_milliseconds: u64,
}

/// What one recorded node costs: its path and, when present, its stored record.
fn copy_size_bytes(path: &str, node: Option<&Node>) -> u64 {
    (path.len() + node.map_or(0, Node::stored_size_bytes)) as u64
}

impl Transaction {
    /// Recounts [`Transaction::memory_bytes`] from the private copies (accounting checks).
    pub fn recount_memory_bytes(&self) -> u64 {
        self.accessed
            .iter()
            .map(|(path, accessed)| copy_size_bytes(path, accessed.node.as_ref()))
            .sum()
    }

    /// Checks that nothing the transaction touched has changed since.
    pub fn validate(&self, tree: &Tree) -> StoreResult<()> {
        for (path, accessed) in &self.accessed {
            if tree.get(path).map(|node| node.generation) != accessed.generation_seen {
                return Err(StoreError::Again);
            }
        }
        Ok(())
    }

    /// How many nodes the commit writes.
    pub fn writes(&self) -> usize {
        self.accessed
            .values()
            .filter(|accessed| accessed.written)
            .count()
    }
}

/// The view of the store from inside a transaction.
pub struct TransactionAccess<'a> {
    /// The committed tree (read only until commit).
    pub tree: &'a Tree,
    /// The transaction.
    pub transaction: &'a mut Transaction,
    /// Refuse to touch more nodes than this (`transaction-nodes`, unprivileged callers).
    pub node_limit: Option<u64>,
}

impl TransactionAccess<'_> {
    fn record(&mut self, path: &str) -> StoreResult<()> {
        if self.transaction.accessed.contains_key(path) {
            return Ok(());
        }
        if let Some(limit) = self.node_limit
            && limit != 0
            && self.transaction.accessed.len() as u64 + 1 >= limit
        {
            self.transaction.failed = true;
            return Err(StoreError::NoSpace);
        }
        let committed = self.tree.get(path);
        let generation_seen = committed.map(|node| node.generation);
        let node = committed.map(Node::try_clone).transpose()?;
        let size_bytes = copy_size_bytes(path, node.as_ref());
        self.transaction.accessed.try_insert(
            crate::fallible::string(path)?,
            AccessedNode {
                generation_seen,
                node,
                written: false,
            },
        )?;
        self.transaction.memory_bytes = self.transaction.memory_bytes.saturating_add(size_bytes);
        Ok(())
    }

    fn current(&self, path: &str) -> Option<&Node> {
        self.transaction
            .accessed
            .get(path)
            .and_then(|accessed| accessed.node.as_ref())
    }

    fn replace(&mut self, path: &str, node: Option<Node>) -> StoreResult<()> {
        self.record(path)?;
        let Transaction {
            accessed, deltas, ..
        } = &mut *self.transaction;
        let old = accessed
            .get(path)
            .and_then(|accessed| accessed.node.as_ref());
        account_replacement(deltas, path, old, node.as_ref())?;
        let old_size = copy_size_bytes(path, old);
        let new_size = copy_size_bytes(path, node.as_ref());
        self.transaction.memory_bytes = self
            .transaction
            .memory_bytes
            .saturating_sub(old_size)
            .saturating_add(new_size);
        if let Some(accessed) = self.transaction.accessed.get_mut(path) {
            accessed.node = node;
            accessed.written = true;
        }
        Ok(())
    }
}

impl NodeAccess for TransactionAccess<'_> {
    fn node(&mut self, path: &str) -> StoreResult<Option<&Node>> {
        self.record(path)?;
        Ok(self.current(path))
    }

    fn put(&mut self, path: &str, mut node: Node) -> StoreResult<()> {
        // Permission entries are judged against the node's generation: inside the
        // transaction a written node counts as written now.
        node.generation = self.tree.current_generation();
        self.replace(path, Some(node))
    }

    fn delete(&mut self, path: &str) -> StoreResult<()> {
        self.replace(path, None)
    }

    fn reserve(&mut self, _stores: usize, _deletions: usize, owners: usize) -> StoreResult<()> {
        // The nodes were recorded when the operation looked them up; only the accounting
        // may still need room.
        self.transaction.deltas.try_reserve(owners)
    }

    fn pending_nodes(&self, owner: DomainId) -> i64 {
        self.transaction
            .deltas
            .get(&owner)
            .map_or(0, |delta| delta.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Permissions;

    fn node() -> Node {
        Node::empty(Permissions::owned_by(DomainId(0)))
    }

    #[test]
    fn reads_see_private_copies_and_commit_validates_generations() {
        let mut tree = Tree::new(DomainId(0), [3, 4]);
        tree.insert("/a", node()).unwrap();
        let mut transaction = Transaction::default();
        {
            let mut view = TransactionAccess {
                tree: &tree,
                transaction: &mut transaction,
                node_limit: None,
            };
            let mut changed = node();
            changed.set_value(b"x").unwrap();
            view.put("/a", changed).unwrap();
            assert_eq!(view.node("/a").unwrap().unwrap().value(), b"x");
        }
        assert_eq!(tree.get("/a").unwrap().value(), b"");
        assert!(transaction.validate(&tree).is_ok());
        tree.insert("/a", node()).unwrap();
        assert_eq!(transaction.validate(&tree), Err(StoreError::Again));
    }

    #[test]
    fn untouched_nodes_do_not_conflict_and_absence_is_recorded() {
        let mut tree = Tree::new(DomainId(0), [3, 4]);
        let mut transaction = Transaction::default();
        {
            let mut view = TransactionAccess {
                tree: &tree,
                transaction: &mut transaction,
                node_limit: None,
            };
            assert!(view.node("/missing").unwrap().is_none());
        }
        tree.insert("/other", node()).unwrap();
        assert!(transaction.validate(&tree).is_ok());
        tree.insert("/missing", node()).unwrap();
        assert_eq!(transaction.validate(&tree), Err(StoreError::Again));
    }

    #[test]
    fn node_limit_fails_the_transaction() {
        let tree = Tree::new(DomainId(0), [3, 4]);
        let mut transaction = Transaction::default();
        let mut view = TransactionAccess {
            tree: &tree,
            transaction: &mut transaction,
            node_limit: Some(3),
        };
        assert!(view.node("/a").is_ok());
        assert!(view.node("/b").is_ok());
        assert_eq!(view.node("/c").err(), Some(StoreError::NoSpace));
        assert!(transaction.failed);
    }
}
