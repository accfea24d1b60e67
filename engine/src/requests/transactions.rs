//! `XS_TRANSACTION_START` and `XS_TRANSACTION_END`: opening a transaction, and applying it to
//! the committed tree completely or not at all (`docs/protocol.md`, "Transactions").
//!
//! A commit runs in three steps. Checking: nothing the transaction saw has changed since
//! (`EAGAIN`) and its new nodes fit the owners' quotas (`ENOSPC`). Planning: every allocation
//! the commit makes (its list of writes, the events it fires, the room the tree and the
//! accounting need) is made here, so that a refusal (`ENOMEM`) leaves the store as it was. Applying: the writes, which find their room reserved; each one
//! notes what it replaced, so that should one fail all are undone and the store is again
//! as it was.

use super::Origin;
use crate::engine::{Engine, Reply, ok_reply};
use crate::fallible::{self, SortedSet};
use crate::operations::{AccountingDeltas, Caller, Change, account_replacement};
use crate::path;
use crate::quota::QuotaKind;
use crate::store::{Node, Tree};
use crate::transaction::Transaction;
use crate::{DomainId, StoreError, StoreResult};
use alloc::string::String;
use alloc::vec::Vec;

/// One node write of a commit. A commit's writes are in path order, so parents come
/// before their children.
struct CommitWrite {
    path: String,
    /// The node to store (`None`: delete the node); taken when it is stored.
    node: Option<Node>,
    /// Whether the write stores a node (rather than deleting one).
    stores: bool,
    /// Set once the write is applied: the node it replaced or deleted (`Some(None)`: there
    /// was none), which [`roll_back`] puts back.
    applied: Option<Option<Node>>,
}

impl CommitWrite {
    fn new(path: String, node: Option<Node>) -> CommitWrite {
        let stores = node.is_some();
        CommitWrite {
            path,
            node,
            stores,
            applied: None,
        }
    }
}

/// Everything a commit changes, gathered (and its room reserved) before the tree changes.
struct CommitPlan {
    /// The nodes written, in path order.
    writes: Vec<CommitWrite>,
    /// The changes that fire watch events (the first per path).
    changes: Vec<Change>,
    /// How many domains own a node the commit replaces, deletes or stores.
    owner_count: usize,
}

impl Engine {
    /// `XS_TRANSACTION_START`: a new transaction on `connection`; the reply is its id.
    pub(crate) fn start_transaction(&mut self, origin: &Origin) -> StoreResult<Reply> {
        let Origin {
            connection, caller, ..
        } = *origin;
        let quotas = self.quotas_of(caller.domain);
        let open = self.domains.usage(caller.domain).transactions;
        if !caller.privileged && quotas.exceeded_by(QuotaKind::Transactions, open + 1) {
            return Err(StoreError::NoSpace);
        }
        let state = self
            .connections
            .get_mut(&connection)
            .ok_or(StoreError::Invalid)?;
        let id = state.allocate_transaction_id()?;
        let reply = fallible::decimal_reply(u64::from(id))?;
        // The caller's record has room before the transaction exists.
        self.domains.try_reserve(1)?;
        let state = self
            .connections
            .get_mut(&connection)
            .ok_or(StoreError::Invalid)?;
        let transaction = Transaction {
            started_at_milliseconds: self.now_milliseconds,
            ..Transaction::default()
        };
        state.transactions.try_insert(id, transaction)?;
        self.open_transactions += 1;
        let generation = self.tree.next_generation();
        if let Ok(record) = self
            .domains
            .ensure(caller.domain, generation, &self.config.quotas)
        {
            record.usage.transactions += 1;
            if !caller.privileged {
                let usage = record.usage;
                self.domains.note_max(usage);
            }
        }
        Ok(Reply::Owned(reply))
    }

    /// `XS_TRANSACTION_END`: the transaction ends; with `commit`, its changes are applied
    /// all or nothing and their events fire.
    pub(crate) fn end_transaction(&mut self, origin: &Origin, commit: bool) -> StoreResult<Reply> {
        let Origin {
            connection,
            caller,
            transaction_id,
        } = *origin;
        let transaction = self
            .connections
            .get_mut(&connection)
            .and_then(|state| state.transactions.remove(&transaction_id))
            .ok_or(StoreError::NoEntry)?;
        // The transaction is gone whatever the commit's outcome (a client retries the whole
        // transaction, as after `EAGAIN`): its private copies are refunded now.
        self.open_transactions = self.open_transactions.saturating_sub(1);
        if let Some(record) = self.domains.get_mut(caller.domain) {
            record.usage.transactions = record.usage.transactions.saturating_sub(1);
            record.usage.memory_bytes = record
                .usage
                .memory_bytes
                .saturating_sub(transaction.memory_bytes);
        }
        if !commit {
            return ok_reply();
        }
        if transaction.interrupted {
            return Err(StoreError::Again);
        }
        if transaction.failed {
            return Err(StoreError::OutOfMemory);
        }
        self.commit(&caller, transaction)
    }

    /// Applies a transaction to the committed tree, completely or not at all.
    fn commit(&mut self, caller: &Caller, transaction: Transaction) -> StoreResult<Reply> {
        transaction.validate(&self.tree)?;
        self.check_commit_quotas(caller, &transaction)?;
        let write_count = transaction.writes();
        let CommitPlan {
            mut writes,
            changes,
            owner_count,
        } = self.plan_commit(transaction)?;
        let mut deltas = AccountingDeltas::new();
        deltas.try_reserve(owner_count)?;
        if let Err(error) = apply_writes(&mut self.tree, &mut writes, &mut deltas) {
            // The deltas of the writes undone are dropped with them: the books never saw them.
            roll_back(&mut self.tree, &mut writes);
            log::warn!("a transaction's commit was undone: {error:?}");
            return Err(error);
        }
        self.apply_deltas(&deltas);
        // Writes inside a transaction are debited at commit, and only while other
        // transactions are open too (C's `wrl_apply_debit_trans_commit()`).
        self.debit_writes(caller, write_count as i64);
        // Nothing is pending at a commit: the list is handed over, not copied.
        self.pending_changes = changes;
        ok_reply()
    }

    /// `ENOSPC` when the commit would take an owner over its node quota (unprivileged
    /// callers only; the privileged domain's writes obey no quota).
    fn check_commit_quotas(&self, caller: &Caller, transaction: &Transaction) -> StoreResult<()> {
        if caller.privileged {
            return Ok(());
        }
        for (owner, (nodes, _)) in &transaction.deltas {
            if *nodes > 0 {
                let quotas = self.quotas_of(*owner);
                let total = self.domains.usage(*owner).nodes as i64 + nodes;
                if quotas.exceeded_by(QuotaKind::Nodes, total.max(0) as u64) {
                    return Err(StoreError::NoSpace);
                }
            }
        }
        Ok(())
    }

    /// Gathers a commit's writes and events and reserves all the room applying them needs:
    /// after this nothing the commit does allocates. `ENOMEM` leaves the store unchanged.
    fn plan_commit(&mut self, transaction: Transaction) -> StoreResult<CommitPlan> {
        let write_count = transaction.writes();
        let Transaction {
            accessed,
            mut changes,
            ..
        } = transaction;
        // One event per modified node; a subtree event wins over an exact one.
        let kept = first_change_per_path(&mut changes)?;
        let mut position = 0;
        changes.retain(|_| {
            let keep = kept.get(position).copied().unwrap_or(false);
            position += 1;
            keep
        });
        let mut writes: Vec<CommitWrite> = fallible::vec_with_capacity(write_count)?;
        let mut owners: SortedSet<DomainId> = SortedSet::new();
        // Nodes the tree gains or loses: the room of every insert and removal that applying
        // the commit, or undoing it, can make.
        let mut nodes_moved = 0;
        for (node_path, accessed) in accessed {
            if !accessed.written {
                continue;
            }
            let committed = self.tree.get(&node_path);
            if let Some(committed) = committed {
                owners.try_insert(committed.permissions.owner())?;
            }
            let node = match accessed.node {
                Some(mut node) => {
                    owners.try_insert(node.permissions.owner())?;
                    // Named as the tree names it, so that storing it allocates nothing.
                    node.rename(stored_name(&node_path))?;
                    Some(node)
                }
                None => None,
            };
            nodes_moved += usize::from(committed.is_some() != node.is_some());
            // Room reserved for every written node above.
            writes.push(CommitWrite::new(node_path, node));
        }
        self.tree.try_reserve(nodes_moved)?;
        self.tree.try_reserve_removals(nodes_moved)?;
        // Every owner gets a record when it is charged: a record made now cannot fail later.
        let unrecorded = owners
            .iter()
            .filter(|owner| self.domains.get(**owner).is_none())
            .count();
        self.domains.try_reserve(unrecorded)?;
        Ok(CommitPlan {
            writes,
            changes,
            owner_count: owners.len(),
        })
    }
}

/// The name the tree gives the node at `node_path`: its last component, or the whole path
/// for the tops of the tree (`/` and the special nodes).
fn stored_name(node_path: &str) -> &str {
    match path::parent(node_path) {
        Some(_) => path::base_name(node_path),
        None => node_path,
    }
}

/// Applies a commit's writes to `tree`, adding their accounting to `deltas`: deletions
/// first, deepest first, so that the tree never holds a node whose parent is gone; then
/// the stores, parents before children. The transaction's view was consistent, so every
/// store finds its parent; with the room reserved by [`Engine::plan_commit`] none fails
/// for memory. Each write keeps what it replaced as soon as the tree changed, so that
/// [`roll_back`] can undo every write applied when one fails.
fn apply_writes(
    tree: &mut Tree,
    writes: &mut [CommitWrite],
    deltas: &mut AccountingDeltas,
) -> StoreResult<()> {
    for write in writes.iter_mut().rev().filter(|write| !write.stores) {
        let removed = tree.remove(&write.path)?;
        let removed = write.applied.insert(removed).as_ref();
        account_replacement(deltas, &write.path, removed, None)?;
    }
    for write in writes.iter_mut() {
        let Some(node) = write.node.take() else {
            continue;
        };
        let replaced = tree.insert(&write.path, node)?;
        let replaced = write.applied.insert(replaced).as_ref();
        account_replacement(deltas, &write.path, replaced, tree.get(&write.path))?;
    }
    Ok(())
}

/// Undoes the applied writes of a commit, last first: a stored node gives way to the node
/// it replaced (or goes, when it was new) and a deleted node comes back, each with its old
/// generation, so that open transactions that saw it do not conflict. It needs no memory:
/// every node put back was taken out of the tree by the write, and the room reserved for
/// the commit covers the inserts and removals of both the writes and their undoing.
fn roll_back(tree: &mut Tree, writes: &mut [CommitWrite]) {
    for write in writes.iter_mut().rev().filter(|write| write.stores) {
        undo_write(tree, write);
    }
    for write in writes.iter_mut().filter(|write| !write.stores) {
        undo_write(tree, write);
    }
}

/// Puts back what an applied write replaced or deleted (see [`roll_back`]).
fn undo_write(tree: &mut Tree, write: &mut CommitWrite) {
    let Some(previous) = write.applied.take() else {
        return;
    };
    let node_path = write.path.as_str();
    let restored = match previous {
        Some(node) => {
            let generation = node.generation;
            tree.insert(node_path, node).map(|_| {
                if let Some(node) = tree.get_mut(node_path) {
                    node.generation = generation;
                }
            })
        }
        None => tree.remove(node_path).map(|_| ()),
    };
    if let Err(error) = restored {
        log::warn!("{node_path}: not restored after a failed commit: {error:?}");
    }
}

/// Which changes of a transaction fire: the first change of each path, made a subtree
/// change when any change of that path is one. Sorts positions, not changes, so the order
/// of the events stays the order of the changes; `ENOMEM` when the lists cannot be made.
fn first_change_per_path(changes: &mut [Change]) -> StoreResult<Vec<bool>> {
    let mut positions: Vec<usize> = fallible::vec_with_capacity(changes.len())?;
    positions.extend(0..changes.len());
    let mut kept: Vec<bool> = fallible::vec_with_capacity(changes.len())?;
    kept.resize(changes.len(), false);
    positions.sort_unstable_by(|left, right| {
        let path = |position: &usize| changes.get(*position).map(|change| change.path.as_str());
        path(left).cmp(&path(right)).then(left.cmp(right))
    });
    let mut group_start = 0;
    while let Some(&first) = positions.get(group_start) {
        let first_path = changes.get(first).map(|change| change.path.as_str());
        let mut group_end = group_start;
        let mut subtree = false;
        while let Some(&position) = positions.get(group_end) {
            let change = changes.get(position);
            if change.map(|change| change.path.as_str()) != first_path {
                break;
            }
            subtree |= change.is_some_and(|change| !change.exact);
            group_end += 1;
        }
        if let Some(change) = changes.get_mut(first) {
            change.exact = change.exact && !subtree;
        }
        if let Some(keep) = kept.get_mut(first) {
            *keep = true;
        }
        group_start = group_end;
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Permissions;
    use alloc::string::ToString;

    fn change(path: &str, exact: bool) -> Change {
        Change {
            path: String::from(path),
            exact,
            permissions: Permissions::owned_by(DomainId(0)),
            old_permissions: None,
        }
    }

    #[test]
    fn a_transaction_fires_the_first_change_of_each_path_subtree_winning() {
        let mut changes = alloc::vec![
            change("/b", true),
            change("/a", false),
            change("/b", false),
            change("/c", true),
            change("/a", true),
        ];
        let kept = first_change_per_path(&mut changes).unwrap();
        assert_eq!(kept, [true, true, false, true, false]);
        let fired: Vec<(&str, bool)> = changes
            .iter()
            .zip(&kept)
            .filter(|(_, kept)| **kept)
            .map(|(change, _)| (change.path.as_str(), change.exact))
            .collect();
        assert_eq!(fired, [("/b", false), ("/a", false), ("/c", true)]);
    }

    fn node_with_value(value: &[u8]) -> Node {
        let mut node = Node::empty(Permissions::owned_by(DomainId(0)));
        node.set_value(value).unwrap();
        node
    }

    fn contents(tree: &Tree) -> Vec<(String, Node)> {
        let mut nodes: Vec<(String, Node)> = tree
            .nodes()
            .map(|(node_path, node)| (node_path, node.clone()))
            .collect();
        nodes.sort_by(|left, right| left.0.cmp(&right.0));
        nodes
    }

    /// A step that fails after others were applied (here a store whose parent is missing,
    /// which a validated transaction never holds) leaves the tree exactly as it was,
    /// generations included.
    #[test]
    fn a_failed_step_undoes_the_steps_before_it() {
        let mut tree = Tree::new(DomainId(0), [3, 4]);
        let mut parent = node_with_value(b"");
        parent.add_child("a").unwrap();
        parent.add_child("b").unwrap();
        tree.insert("/", parent).unwrap();
        tree.insert("/a", node_with_value(b"old a")).unwrap();
        tree.insert("/b", node_with_value(b"old b")).unwrap();
        let before = contents(&tree);
        let mut writes = alloc::vec![
            CommitWrite::new("/a".to_string(), None),
            CommitWrite::new("/b".to_string(), Some(node_with_value(b"new b"))),
            CommitWrite::new("/c".to_string(), Some(node_with_value(b"new c"))),
            CommitWrite::new("/missing/d".to_string(), Some(node_with_value(b"orphan"))),
        ];
        let mut deltas = AccountingDeltas::new();
        let outcome = apply_writes(&mut tree, &mut writes, &mut deltas);
        assert_eq!(outcome, Err(StoreError::NoEntry));
        let applied = writes
            .iter()
            .filter(|write| write.applied.is_some())
            .count();
        assert_eq!(applied, 3, "the deletion and two stores were applied");
        assert_eq!(tree.get("/c").unwrap().value(), b"new c");
        roll_back(&mut tree, &mut writes);
        assert_eq!(contents(&tree), before);
        assert!(tree.index_is_consistent());
    }
}
