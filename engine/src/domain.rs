//! What the engine knows about each domain: introduction state, target, features, quotas and usage.
//!
//! A record exists for every domain the store has met: introduced domains, domains named
//! by a permission entry or owning nodes, and domains given per-domain quotas or features.
//! Its `generation` (the tree's generation counter when the record was made) lets the
//! engine ignore permission entries that name a newer domain reusing an old id
//! (C xenstored's `chk_domain_generation()`).

use crate::fallible::SortedMap;
use crate::quota::{QuotaKind, Quotas};
use crate::{ConnectionId, DomainId, StoreResult};

/// Server feature bits a domain may use: the bits its ring advertises.
pub use crate::ring::feature;

/// Resources a domain uses, counted against its quotas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Nodes owned.
    pub nodes: u64,
    /// Watches registered.
    pub watches: u64,
    /// Transactions open.
    pub transactions: u64,
    /// Bytes of nodes, watches and queued output charged to the domain.
    pub memory_bytes: u64,
    /// Replies queued and not yet delivered.
    pub outstanding: u64,
}

impl Usage {
    /// The counter that `kind` limits (`None` for limits on single values).
    pub fn counter(&self, kind: QuotaKind) -> Option<u64> {
        match kind {
            QuotaKind::Nodes => Some(self.nodes),
            QuotaKind::Watches => Some(self.watches),
            QuotaKind::Transactions => Some(self.transactions),
            QuotaKind::MemoryBytes | QuotaKind::SoftMemoryBytes => Some(self.memory_bytes),
            QuotaKind::Outstanding => Some(self.outstanding),
            _ => None,
        }
    }
}

/// One domain's record.
#[derive(Clone, Debug)]
pub struct DomainRecord {
    /// Tree generation when the record was made.
    pub generation: u64,
    /// The connection serving the domain's ring, once introduced.
    pub connection: Option<ConnectionId>,
    /// `@releaseDomain` was already fired for the current shutdown (cleared by `XS_RESUME`).
    pub shutdown_reported: bool,
    /// `XS_SET_TARGET`: the domain acts as this one for permission checks.
    pub target: Option<DomainId>,
    /// Server features the domain may use (`XS_SET_FEATURE` before introduction).
    pub features: u32,
    /// The domain's own copy of the quotas (4.22: copied from the global ones at creation).
    pub quotas: Quotas,
    /// What it uses now.
    pub usage: Usage,
    /// The soft memory limit was reported as exceeded and not yet left.
    pub soft_memory_warned: bool,
    /// Write-rate credit (unprivileged domains only).
    pub write_credit: crate::write_rate::WriteCredit,
}

/// All domain records.
#[derive(Debug, Default)]
pub struct Domains {
    /// By domain id. A sorted `Vec` whose inserts can be refused: a guest's `SET_PERMS`
    /// naming a domain makes a record, and must get `ENOMEM` rather than end the store.
    records: SortedMap<DomainId, DomainRecord>,
    /// Largest usage seen for any unprivileged domain (`xenstore-control quota max`).
    pub max_seen: Usage,
}

impl Domains {
    /// The record of `domain`.
    pub fn get(&self, domain: DomainId) -> Option<&DomainRecord> {
        self.records.get(&domain)
    }

    /// The record of `domain`, mutable.
    pub fn get_mut(&mut self, domain: DomainId) -> Option<&mut DomainRecord> {
        self.records.get_mut(&domain)
    }

    /// Charges `bytes` of queued output to `domain`'s memory (none when it has no record).
    pub fn charge_output(&mut self, domain: DomainId, bytes: u64) {
        if let Some(record) = self.records.get_mut(&domain) {
            record.usage.memory_bytes = record.usage.memory_bytes.saturating_add(bytes);
        }
    }

    /// The record of `domain`, made with `generation` and `quotas` if it is new; `ENOMEM`
    /// when a new record finds no room.
    pub fn ensure(
        &mut self,
        domain: DomainId,
        generation: u64,
        quotas: &Quotas,
    ) -> StoreResult<&mut DomainRecord> {
        self.records
            .get_or_try_insert_with(domain, || DomainRecord {
                generation,
                connection: None,
                shutdown_reported: false,
                target: None,
                features: feature::SUPPORTED,
                quotas: *quotas,
                usage: Usage::default(),
                soft_memory_warned: false,
                write_credit: crate::write_rate::WriteCredit::full(
                    crate::write_rate::DOMAIN_BURST_WRITES,
                    0,
                ),
            })
    }

    /// Room for `additional` new records: that many [`Domains::ensure`] calls then
    /// cannot fail (a request reserves before it changes anything).
    pub fn try_reserve(&mut self, additional: usize) -> StoreResult<()> {
        self.records.try_reserve(additional)
    }

    /// Forgets `domain` (it died).
    pub fn remove(&mut self, domain: DomainId) -> Option<DomainRecord> {
        self.records.remove(&domain)
    }

    /// Every record.
    pub fn iter(&self) -> impl Iterator<Item = (&DomainId, &DomainRecord)> {
        self.records.iter()
    }

    /// Every record, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&DomainId, &mut DomainRecord)> {
        self.records.iter_mut()
    }

    /// Whether a permission entry naming `domain` is still valid for a node of `node_generation`:
    /// the domain is known and was known before the node was last written.
    pub fn entry_is_current(&self, domain: DomainId, node_generation: u64) -> bool {
        if domain == DomainId::ANY {
            return true;
        }
        self.records
            .get(&domain)
            .is_some_and(|record| record.generation <= node_generation)
    }

    /// Current usage of `domain` (zero when unknown).
    pub fn usage(&self, domain: DomainId) -> Usage {
        self.records
            .get(&domain)
            .map(|record| record.usage)
            .unwrap_or_default()
    }

    /// Adds signed deltas to `domain`'s node and memory counters. Every owner of a node
    /// has a record (a permission change to an unknown owner is refused), so this finds
    /// one; should a new record find no memory, the charge is lost and logged.
    pub fn charge(
        &mut self,
        domain: DomainId,
        generation: u64,
        quotas: &Quotas,
        nodes: i64,
        memory_bytes: i64,
    ) {
        let Ok(record) = self.ensure(domain, generation, quotas) else {
            log::warn!("domain {domain}: no memory for its record, a charge is lost");
            return;
        };
        record.usage.nodes = record.usage.nodes.saturating_add_signed(nodes);
        record.usage.memory_bytes = record
            .usage
            .memory_bytes
            .saturating_add_signed(memory_bytes);
    }

    /// Records `usage` in the maxima shown by `xenstore-control quota max`.
    pub fn note_max(&mut self, usage: Usage) {
        let max = &mut self.max_seen;
        max.nodes = max.nodes.max(usage.nodes);
        max.watches = max.watches.max(usage.watches);
        max.transactions = max.transactions.max(usage.transactions);
        max.memory_bytes = max.memory_bytes.max(usage.memory_bytes);
        max.outstanding = max.outstanding.max(usage.outstanding);
    }
}
