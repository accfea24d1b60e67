//! What the administrator's `XS_CONTROL` commands inspect (`requests/control.rs` runs
//! them): the recount of the per-domain accounting behind `check`, the tree-shape check,
//! and the memory report behind `memreport`.

use crate::domain::Usage;
use crate::engine::Engine;
use crate::fallible::{SortedMap, Text};
use crate::{ConnectionId, DomainId, StoreResult};
use alloc::string::String;
use core::fmt::Write;

impl Engine {
    /// Recounts everything the per-domain accounting tracks and corrects the records;
    /// returns how many counters were wrong (0 when the books balance, which they must),
    /// or `usize::MAX` when there was no memory to recount.
    ///
    /// Recounted per domain, from the objects themselves:
    /// - nodes owned, from the tree;
    /// - memory: node records and paths of owned nodes, watch paths and tokens, queued
    ///   output (replies and events, each charged in full until completely sent), and the
    ///   private copies held by open transactions;
    /// - watches and open transactions, from the connections.
    ///
    /// Also counted as wrong (not repairable here): a watch registered with a connection but
    /// missing from the watch index or the other way round, and every tree-shape defect
    /// [`Engine::check_tree`] finds.
    pub fn check_accounting(&mut self) -> usize {
        self.try_check_accounting().unwrap_or(usize::MAX)
    }

    /// [`Engine::check_accounting`]; `ENOMEM`, with nothing corrected, when the recount
    /// cannot be allocated (`XS_CONTROL check`).
    pub(crate) fn try_check_accounting(&mut self) -> StoreResult<usize> {
        let recount = self.recount_usage()?;
        // Each connection's count of the events it caused that are still queued.
        let mut caused: SortedMap<ConnectionId, usize> = SortedMap::new();
        for state in self.connections.values() {
            for cause in state.output.iter().filter_map(|message| message.caused_by) {
                *caused.get_or_try_insert_with(cause, || 0)? += 1;
            }
        }
        let tree_defects = self.try_check_tree()?;
        // Every record the recount names gets room before the first correction.
        self.domains.try_reserve(recount.len())?;
        let mut repaired = 0;
        let generation = self.tree.current_generation();
        let quotas = self.config.quotas;
        for (domain, expected) in &recount {
            let Ok(record) = self.domains.ensure(*domain, generation, &quotas) else {
                continue;
            };
            let usage = &mut record.usage;
            for (stored, counted) in [
                (&mut usage.nodes, expected.nodes),
                (&mut usage.watches, expected.watches),
                (&mut usage.transactions, expected.transactions),
                (&mut usage.memory_bytes, expected.memory_bytes),
            ] {
                if *stored != counted {
                    repaired += 1;
                    *stored = counted;
                }
            }
        }
        for (domain, record) in self.domains.iter_mut() {
            if recount.contains_key(domain) {
                continue;
            }
            let usage = &mut record.usage;
            for stored in [
                &mut usage.nodes,
                &mut usage.watches,
                &mut usage.transactions,
                &mut usage.memory_bytes,
            ] {
                if *stored != 0 {
                    repaired += 1;
                    *stored = 0;
                }
            }
        }
        for (connection, state) in self.connections.iter_mut() {
            let counted = caused.get(connection).copied().unwrap_or(0);
            if state.caused_events_pending != counted {
                repaired += 1;
                state.caused_events_pending = counted;
            }
        }
        let listed: usize = self
            .connections
            .values()
            .map(|state| state.watches.len())
            .sum();
        if listed != self.watches.len() {
            repaired += 1;
        }
        for (connection, state) in &self.connections {
            for (watched, token) in &state.watches {
                if !self.watches.contains(*connection, watched, token) {
                    repaired += 1;
                }
            }
        }
        Ok(repaired + tree_defects)
    }

    /// Counts tree-shape defects: a node whose parent is missing or does not list it, a
    /// listed child that does not exist, or a child listed twice. Must always be 0
    /// (`usize::MAX`: no memory to check).
    pub fn check_tree(&self) -> usize {
        self.try_check_tree().unwrap_or(usize::MAX)
    }

    fn try_check_tree(&self) -> StoreResult<usize> {
        let mut defects = usize::from(!self.tree.index_is_consistent());
        for (node_path, node) in self.tree.try_nodes() {
            let node_path = node_path?;
            if node_path != "/" && !crate::path::is_special(&node_path) {
                let listed = crate::path::parent(&node_path)
                    .and_then(|parent| self.tree.get(parent))
                    .is_some_and(|parent| parent.has_child(crate::path::base_name(&node_path)));
                if !listed {
                    defects += 1;
                }
            }
            for (index, child) in node.children().enumerate() {
                let child_path = crate::path::join(&node_path, child)?;
                if self.tree.get(&child_path).is_none() {
                    defects += 1;
                }
                if node.children().skip(index + 1).any(|other| other == child) {
                    defects += 1;
                }
            }
        }
        Ok(defects)
    }

    /// Per-domain usage counted from the tree, the connections and their transactions;
    /// `ENOMEM` when the counts cannot be allocated.
    pub fn recount_usage(&self) -> StoreResult<SortedMap<DomainId, Usage>> {
        let mut usage: SortedMap<DomainId, Usage> = SortedMap::new();
        for (domain, (nodes, node_bytes)) in self.recount_nodes()? {
            let entry = usage.get_or_try_insert_with(domain, Usage::default)?;
            entry.nodes = nodes;
            entry.memory_bytes = node_bytes;
        }
        for state in self.connections.values() {
            let entry = usage.get_or_try_insert_with(state.domain, Usage::default)?;
            entry.watches += state.watches.len() as u64;
            entry.transactions += state.transactions.len() as u64;
            let watch_bytes: u64 = state
                .watches
                .iter()
                .map(|(watched, token)| crate::watch::Watch::memory_bytes(watched, token))
                .sum();
            let output_bytes: u64 = state
                .output
                .iter()
                .map(|message| message.bytes.len() as u64)
                .sum();
            let transaction_bytes: u64 = state
                .transactions
                .values()
                .map(crate::transaction::Transaction::recount_memory_bytes)
                .sum();
            entry.memory_bytes += watch_bytes + output_bytes + transaction_bytes;
        }
        Ok(usage)
    }

    /// Nodes and node bytes per owner, counted from the tree (paths measured, not built);
    /// `ENOMEM` when the counts cannot be allocated.
    pub fn recount_nodes(&self) -> StoreResult<SortedMap<DomainId, (u64, u64)>> {
        let mut counts: SortedMap<DomainId, (u64, u64)> = SortedMap::new();
        for (path_bytes, node) in self.tree.nodes_with_path_bytes() {
            let entry = counts.get_or_try_insert_with(node.permissions.owner(), || (0, 0))?;
            entry.0 += 1;
            entry.1 += (node.stored_size_bytes() + path_bytes) as u64;
        }
        Ok(counts)
    }

    /// Requests of `domain`'s connections not yet fully answered (replies and the events
    /// they caused, still queued): what the `outstanding` quota limits.
    pub fn outstanding_requests_of(&self, domain: DomainId) -> u64 {
        self.connections
            .values()
            .filter(|state| state.domain == domain)
            .map(|state| state.outstanding_requests() as u64)
            .sum()
    }

    /// A summary of what the store holds and what each domain uses.
    pub fn memory_report(&self) -> String {
        let mut text = Text::new();
        self.write_memory_report(&mut text);
        String::from_utf8_lossy(text.as_bytes()).into_owned()
    }

    /// Writes [`Engine::memory_report`] into `text` (which remembers a refused write).
    pub(crate) fn write_memory_report(&self, text: &mut Text) {
        let node_bytes: usize = self
            .tree
            .nodes_with_path_bytes()
            .map(|(path_bytes, node)| path_bytes + node.stored_size_bytes())
            .sum();
        let _ = writeln!(
            text,
            "nodes: {} ({} bytes of paths, values, permissions and child names)",
            self.tree.len(),
            node_bytes
        );
        if let Some(status) = self.memory_status() {
            // Current, maximum and free heap: what an administrator sizing the stub domain
            // (`--memory`/`--maxmem`) needs to know (`memory.rs`).
            let _ = writeln!(
                text,
                "heap: {} bytes now, {} bytes at most, {} bytes used, {} bytes available \
                 (free now plus growth)",
                status.heap_size_bytes,
                status.heap_limit_bytes,
                status.heap_used_bytes,
                status.available_bytes()
            );
        }
        let _ = writeln!(text, "connections: {}", self.connections.len());
        let _ = writeln!(text, "watches: {}", self.watches.len());
        for (domain, record) in self.domains.iter() {
            let mut usage = record.usage;
            usage.outstanding = self.outstanding_requests_of(*domain);
            let _ = writeln!(
                text,
                "domain {domain}: nodes {} watches {} transactions {} memory {} bytes outstanding {}",
                usage.nodes,
                usage.watches,
                usage.transactions,
                usage.memory_bytes,
                usage.outstanding
            );
        }
    }
}
