//! The watch requests (`XS_WATCH`, `XS_UNWATCH`, `XS_RESET_WATCHES`) and dropping a
//! connection's watches (`docs/protocol.md`, "Watches"). Events are delivered by
//! `events.rs`.

use super::Origin;
use crate::engine::{Engine, Reply, ok_reply};
use crate::events::event_message;
use crate::fallible;
use crate::path::CanonicalPath;
use crate::quota::QuotaKind;
use crate::watch::Watch;
use crate::{ConnectionId, StoreError, StoreResult};

impl Engine {
    /// `XS_WATCH`: registers the watch and queues its initial event (after the reply).
    pub(crate) fn watch(
        &mut self,
        origin: &Origin,
        path: &CanonicalPath,
        written_path: &[u8],
        token: &[u8],
        depth: Option<u32>,
    ) -> StoreResult<Reply> {
        let Origin {
            connection, caller, ..
        } = *origin;
        let target = path;
        if self.watches.contains(connection, &target.absolute, token) {
            return Err(StoreError::AlreadyExists);
        }
        let quotas = self.quotas_of(caller.domain);
        let usage = self.domains.usage(caller.domain);
        if !caller.privileged {
            if quotas.exceeded_by(QuotaKind::Watches, usage.watches + 1) {
                return Err(StoreError::NoSpace);
            }
            let memory = usage.memory_bytes + Watch::memory_bytes(&target.absolute, token);
            if quotas.exceeded_by(QuotaKind::MemoryBytes, memory) {
                return Err(StoreError::OutOfMemory);
            }
        }
        // Everything the watch needs is allocated before it is registered anywhere: the
        // connection's list entry, the initial event and the index's room.
        let state = self
            .connections
            .get_mut(&connection)
            .ok_or(StoreError::Invalid)?;
        fallible::reserve(&mut state.watches, 1)?;
        let listed = (
            fallible::string(&target.absolute)?,
            fallible::to_vec(token)?,
        );
        // The initial event carries the path as the client wrote it (`do_watch()`).
        let event = event_message(written_path, token)?;
        fallible::reserve(&mut self.pending_direct_events, 1)?;
        self.domains.try_reserve(1)?;
        let watch = Watch {
            connection,
            token: fallible::to_vec(token)?,
            relative_prefix_bytes: target.relative_prefix_bytes,
            depth,
        };
        self.watches.add(&target.absolute, watch)?;
        // Reserved above: these cannot fail.
        if let Some(state) = self.connections.get_mut(&connection) {
            state.watches.push(listed);
        }
        self.pending_direct_events.push((connection, event));
        let generation = self.tree.current_generation();
        // Room reserved above.
        if let Ok(record) = self
            .domains
            .ensure(caller.domain, generation, &self.config.quotas)
        {
            record.usage.watches += 1;
            record.usage.memory_bytes += Watch::memory_bytes(&target.absolute, token);
            if !caller.privileged {
                let usage = record.usage;
                self.domains.note_max(usage);
            }
        }
        ok_reply()
    }

    /// `XS_UNWATCH`: removes the connection's watch on `path` with `token`.
    pub(crate) fn unwatch(
        &mut self,
        origin: &Origin,
        path: &CanonicalPath,
        token: &[u8],
    ) -> StoreResult<Reply> {
        let connection = origin.connection;
        self.watches
            .remove(connection, &path.absolute, token)
            .ok_or(StoreError::NoEntry)?;
        if let Some(state) = self.connections.get_mut(&connection) {
            state
                .watches
                .retain(|(watched, held)| !(watched == &path.absolute && held == token));
        }
        if let Some(record) = self.domains.get_mut(origin.caller.domain) {
            record.usage.watches = record.usage.watches.saturating_sub(1);
            let memory = Watch::memory_bytes(&path.absolute, token);
            record.usage.memory_bytes = record.usage.memory_bytes.saturating_sub(memory);
        }
        ok_reply()
    }

    /// `XS_RESET_WATCHES`: the connection's watches and transactions go.
    pub(crate) fn reset_watches(&mut self, origin: &Origin) -> StoreResult<Reply> {
        self.drop_watches_and_transactions(origin.connection);
        ok_reply()
    }

    /// Drops a connection's watches and open transactions, refunding their accounting.
    pub(crate) fn drop_watches_and_transactions(&mut self, connection: ConnectionId) {
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        let watches = core::mem::take(&mut state.watches);
        let dropped_transactions = core::mem::take(&mut state.transactions);
        let transactions = dropped_transactions.len() as u64;
        self.open_transactions = self
            .open_transactions
            .saturating_sub(dropped_transactions.len());
        let domain = state.domain;
        let mut memory: u64 = dropped_transactions
            .values()
            .map(|transaction| transaction.memory_bytes)
            .sum();
        for (watched, token) in &watches {
            self.watches.remove(connection, watched, token);
            memory += Watch::memory_bytes(watched, token);
        }
        if let Some(record) = self.domains.get_mut(domain) {
            record.usage.watches = record.usage.watches.saturating_sub(watches.len() as u64);
            record.usage.transactions = record.usage.transactions.saturating_sub(transactions);
            record.usage.memory_bytes = record.usage.memory_bytes.saturating_sub(memory);
        }
    }
}
