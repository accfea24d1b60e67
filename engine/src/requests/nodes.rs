//! The node requests (`XS_READ`, `XS_DIRECTORY`, `XS_DIRECTORY_PART`, `XS_GET_PERMS`,
//! `XS_WRITE`, `XS_MKDIR`, `XS_RM`, `XS_SET_PERMS`), on the committed tree or inside a
//! transaction. The operations themselves are in `operations.rs`, written once for both.

use super::Origin;
use crate::domain::Domains;
use crate::engine::{Engine, Reply, ok_reply};
use crate::fallible;
use crate::operations::{self, AccountingDeltas, Caller, Change, GlobalAccess, NodeAccess};
use crate::path::CanonicalPath;
use crate::permissions::Permissions;
use crate::quota::{QuotaKind, Quotas};
use crate::store::Node;
use crate::transaction::TransactionAccess;
use crate::{DomainId, Platform, StoreError, StoreResult};
use alloc::vec::Vec;

impl Engine {
    /// `XS_WRITE`: stores `value`, creating the node and its missing ancestors.
    pub(crate) fn write(
        &mut self,
        origin: &Origin,
        path: &CanonicalPath,
        value: &[u8],
    ) -> StoreResult<Reply> {
        self.change(origin, |view, domains, caller, quotas| {
            operations::write(view, domains, caller, quotas, &path.absolute, value)
        })
    }

    /// `XS_MKDIR`: creates the node and its missing ancestors (an existing node is fine).
    pub(crate) fn mkdir(&mut self, origin: &Origin, path: &CanonicalPath) -> StoreResult<Reply> {
        self.change(origin, |view, domains, caller, quotas| {
            operations::mkdir(view, domains, caller, quotas, &path.absolute)
        })
    }

    /// `XS_RM`: removes the node and its descendants.
    pub(crate) fn remove(&mut self, origin: &Origin, path: &CanonicalPath) -> StoreResult<Reply> {
        self.change(origin, |view, domains, caller, _| {
            operations::remove(view, domains, caller, &path.absolute)
        })
    }

    /// `XS_SET_PERMS`: replaces the node's permissions.
    pub(crate) fn set_permissions(
        &mut self,
        platform: &mut dyn Platform,
        origin: &Origin,
        path: &CanonicalPath,
        permissions: Permissions,
    ) -> StoreResult<Reply> {
        let caller = origin.caller;
        self.check_memory(&caller)?;
        // Domains named by the entries get a record now, so that the entries count
        // as written after the domain appeared.
        let generation = self.tree.current_generation();
        for entry in permissions.entries() {
            if entry.domain != DomainId::ANY
                && self.domains.get(entry.domain).is_none()
                && entry.domain.0 < DomainId::FIRST_RESERVED
                && platform.domain_exists(entry.domain)
            {
                self.domains
                    .ensure(entry.domain, generation, &self.config.quotas)?;
            }
        }
        self.modify(origin, |view, domains, quotas| {
            let mut exists = |domain: DomainId| domains.get(domain).is_some();
            operations::set_permissions(
                view,
                domains,
                &caller,
                quotas,
                &path.absolute,
                permissions,
                &mut exists,
            )
        })?;
        ok_reply()
    }

    /// A read-only node request (`XS_READ`, `XS_DIRECTORY`, `XS_DIRECTORY_PART`,
    /// `XS_GET_PERMS`): `answer` gives the reply's bytes from the node at `path` once the
    /// caller may read it ([`operations::with_readable_node`]).
    pub(crate) fn query(
        &mut self,
        origin: &Origin,
        path: &CanonicalPath,
        answer: impl FnOnce(&Node) -> StoreResult<Vec<u8>>,
    ) -> StoreResult<Reply> {
        let caller = origin.caller;
        self.with_view(origin, |view, domains, _| {
            operations::with_readable_node(view, domains, &caller, &path.absolute, answer)
        })
        .map(Reply::Owned)
    }

    /// A modifying node request that may grow the store, so an unprivileged caller at its
    /// hard memory quota is refused first; the reply is `OK`.
    fn change(
        &mut self,
        origin: &Origin,
        operation: impl FnOnce(
            &mut dyn NodeAccess,
            &Domains,
            &Caller,
            &Quotas,
        ) -> StoreResult<Vec<Change>>,
    ) -> StoreResult<Reply> {
        let caller = origin.caller;
        self.check_memory(&caller)?;
        self.modify(origin, |view, domains, quotas| {
            operation(view, domains, &caller, quotas)
        })?;
        ok_reply()
    }

    /// `ENOMEM` when an unprivileged caller is at its hard memory quota.
    pub(crate) fn check_memory(&self, caller: &Caller) -> StoreResult<()> {
        if caller.privileged {
            return Ok(());
        }
        let quotas = self.quotas_of(caller.domain);
        if quotas.exceeded_by(
            QuotaKind::MemoryBytes,
            self.domains.usage(caller.domain).memory_bytes,
        ) {
            return Err(StoreError::OutOfMemory);
        }
        Ok(())
    }

    /// Runs a read-only operation on the committed tree or inside the named transaction.
    pub(crate) fn with_view<T>(
        &mut self,
        origin: &Origin,
        operation: impl FnOnce(&mut dyn NodeAccess, &Domains, &Quotas) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let Origin {
            connection,
            caller,
            transaction_id,
        } = *origin;
        let quotas = self.quotas_of(caller.domain);
        if transaction_id == 0 {
            let mut view = GlobalAccess {
                tree: &mut self.tree,
                deltas: AccountingDeltas::new(),
            };
            let result = operation(&mut view, &self.domains, &quotas);
            let deltas = view.deltas;
            self.apply_deltas(&deltas);
            return result;
        }
        // Every access inside a transaction may copy a node into it, so an unprivileged
        // domain over its hard memory quota gets `ENOMEM` before the copy is made (C
        // checks the memory quota "sloppily" the same way, `00e9e32d02`).
        self.check_memory(&caller)?;
        let transaction = self
            .connections
            .get_mut(&connection)
            .and_then(|state| state.transactions.get_mut(&transaction_id))
            .ok_or(StoreError::NoEntry)?;
        let node_limit = if caller.privileged {
            None
        } else {
            Some(u64::from(quotas.get(QuotaKind::TransactionNodes)))
        };
        let memory_before = transaction.memory_bytes;
        let mut view = TransactionAccess {
            tree: &self.tree,
            transaction,
            node_limit,
        };
        let result = operation(&mut view, &self.domains, &quotas);
        let memory_after = view.transaction.memory_bytes;
        // The transaction's private copies are charged to the domain that opened it.
        if let Some(record) = self.domains.get_mut(caller.domain) {
            record.usage.memory_bytes = record
                .usage
                .memory_bytes
                .saturating_add(memory_after)
                .saturating_sub(memory_before);
        }
        result
    }

    /// Runs a modifying operation; its changes fire now, or at commit inside a transaction.
    pub(crate) fn modify(
        &mut self,
        origin: &Origin,
        operation: impl FnOnce(&mut dyn NodeAccess, &Domains, &Quotas) -> StoreResult<Vec<Change>>,
    ) -> StoreResult<()> {
        let Origin {
            connection,
            caller,
            transaction_id,
        } = *origin;
        let outcome = self.with_view(origin, operation);
        if transaction_id != 0
            && matches!(outcome, Err(StoreError::NoSpace | StoreError::OutOfMemory))
            && let Some(transaction) = self
                .connections
                .get_mut(&connection)
                .and_then(|state| state.transactions.get_mut(&transaction_id))
        {
            // A change refused for lack of quota or memory poisons the transaction: its
            // commit fails (`ENOMEM`, C `do_transaction_end()`), so a client can never
            // commit half of what it meant to do (XSA-415).
            transaction.failed = true;
        }
        let changes = outcome?;
        if transaction_id == 0 {
            self.debit_writes(&caller, 1);
            // The store has changed: the request succeeds even if its events cannot be
            // kept (they are dropped, as events over a quota are).
            if self.pending_changes.is_empty() {
                self.pending_changes = changes;
            } else if fallible::reserve(&mut self.pending_changes, changes.len()).is_ok() {
                self.pending_changes.extend(changes);
            } else {
                log::warn!("watch events of a change dropped: no memory");
            }
        } else if let Some(transaction) = self
            .connections
            .get_mut(&connection)
            .and_then(|state| state.transactions.get_mut(&transaction_id))
        {
            // Changes without their events would commit silently: a transaction that cannot
            // keep them is poisoned and its commit fails (`ENOMEM`), as after a refused change.
            if fallible::reserve(&mut transaction.changes, changes.len()).is_err() {
                transaction.failed = true;
                return Err(StoreError::OutOfMemory);
            }
            transaction.changes.extend(changes);
        }
        Ok(())
    }
}
