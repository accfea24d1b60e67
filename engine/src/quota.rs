//! Quotas: the per-domain limits of C xenstored, their option names and defaults.
//!
//! Names and defaults follow C xenstored 4.22 (`tools/xenstored/domain.c` `quota_adm[]`,
//! `core.c:usage()`); so does the boundary: a counter or value is refused when it would reach
//! the limit (`value >= limit`, `domain_quota_val_exceeds()`), so the largest accepted count
//! is one below the number. A limit of 0 means "unlimited".

use crate::{StoreError, StoreResult};

/// The value C xenstored reserves for a quota that does not exist (its `Q_VAL_DISABLED`,
/// `UINT_MAX`): `XS_SET_QUOTA` refuses it, and `XS_GET_QUOTA` does not list a quota with it.
pub const QUOTA_DISABLED: u32 = u32::MAX;

/// One kind of limit, named as on the wire (`XS_GET_QUOTA`) and in `-Q name=value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaKind {
    /// Nodes owned by the domain (`-E`, `nodes`).
    Nodes,
    /// Watches registered by the domain (`-W`, `watches`).
    Watches,
    /// Requests whose replies (and caused watch events) are not yet delivered (`outstanding`).
    Outstanding,
    /// Memory charged to the domain, hard limit, bytes (`memory`).
    MemoryBytes,
    /// Memory charged to the domain, soft limit (warning only), bytes (`soft-memory`).
    SoftMemoryBytes,
    /// Open transactions (`-t`, `transactions`).
    Transactions,
    /// Nodes accessed by one transaction (`transaction-nodes`).
    TransactionNodes,
    /// Permission entries on one node (`-A`, `node-permissions`).
    NodePermissions,
    /// Path length after `/local/domain/<id>/` (`-M`, `path-max`).
    PathMaxBytes,
    /// Stored size of one node: header, permissions, value and child names (`-S`, `node-size`).
    NodeSizeBytes,
}

impl QuotaKind {
    /// Every kind, in the order `XS_GET_QUOTA` lists them (C's `enum accitem`).
    pub const ALL: [QuotaKind; 10] = [
        QuotaKind::Nodes,
        QuotaKind::Watches,
        QuotaKind::Outstanding,
        QuotaKind::MemoryBytes,
        QuotaKind::SoftMemoryBytes,
        QuotaKind::Transactions,
        QuotaKind::TransactionNodes,
        QuotaKind::NodePermissions,
        QuotaKind::PathMaxBytes,
        QuotaKind::NodeSizeBytes,
    ];

    /// The name used by `XS_GET_QUOTA`, `-Q`, and `xenstore-control quota`.
    pub const fn name(self) -> &'static str {
        match self {
            QuotaKind::Nodes => "nodes",
            QuotaKind::Watches => "watches",
            QuotaKind::Outstanding => "outstanding",
            QuotaKind::MemoryBytes => "memory",
            QuotaKind::SoftMemoryBytes => "soft-memory",
            QuotaKind::Transactions => "transactions",
            QuotaKind::TransactionNodes => "transaction-nodes",
            QuotaKind::NodePermissions => "node-permissions",
            QuotaKind::PathMaxBytes => "path-max",
            QuotaKind::NodeSizeBytes => "node-size",
        }
    }

    /// What the limit means, for `xenstore-control quota`.
    pub const fn description(self) -> &'static str {
        match self {
            QuotaKind::Nodes => "Nodes per domain",
            QuotaKind::Watches => "Watches per domain",
            QuotaKind::Outstanding => "Outstanding requests",
            QuotaKind::MemoryBytes => "Memory used by a domain (bytes)",
            QuotaKind::SoftMemoryBytes => "Memory used by a domain before a warning (bytes)",
            QuotaKind::Transactions => "Transactions per domain",
            QuotaKind::TransactionNodes => "Max. number of accessed nodes per transaction",
            QuotaKind::NodePermissions => "Max. number of permissions per node",
            QuotaKind::PathMaxBytes => "Max. length of a node path",
            QuotaKind::NodeSizeBytes => "Max. size of a node",
        }
    }

    /// The kind named `name` (`permissions` is accepted as 4.17's name for `node-permissions`).
    pub fn from_name(name: &str) -> StoreResult<QuotaKind> {
        if name == "permissions" {
            return Ok(QuotaKind::NodePermissions);
        }
        QuotaKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or(StoreError::Invalid)
    }
}

impl QuotaKind {
    /// The kind named `name` on the wire (`XS_GET_QUOTA`, `XS_SET_QUOTA`): C xenstored 4.22's
    /// names exactly, `soft-memory` being the soft limit of `memory`; anything else, 4.17's
    /// `permissions` included, is `EINVAL`.
    pub fn from_wire_name(name: &[u8]) -> StoreResult<QuotaKind> {
        QuotaKind::ALL
            .into_iter()
            .find(|kind| kind.name().as_bytes() == name)
            .ok_or(StoreError::Invalid)
    }
}

/// A full set of limits; 0 disables a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// One value per [`QuotaKind`], indexed by its position in [`QuotaKind::ALL`].
    values: [u32; 10],
}

impl Default for Quotas {
    /// C xenstored's defaults.
    fn default() -> Self {
        let mut quotas = Quotas { values: [0; 10] };
        quotas.set(QuotaKind::Nodes, 1000);
        quotas.set(QuotaKind::Watches, 128);
        quotas.set(QuotaKind::Outstanding, 20);
        quotas.set(QuotaKind::MemoryBytes, 2 * 1024 * 1024 + 512 * 1024);
        quotas.set(QuotaKind::SoftMemoryBytes, 2 * 1024 * 1024);
        quotas.set(QuotaKind::Transactions, 10);
        quotas.set(QuotaKind::TransactionNodes, 1024);
        quotas.set(QuotaKind::NodePermissions, 5);
        quotas.set(QuotaKind::PathMaxBytes, 2048);
        quotas.set(QuotaKind::NodeSizeBytes, 2048);
        quotas
    }
}

impl Quotas {
    fn index(kind: QuotaKind) -> usize {
        QuotaKind::ALL
            .iter()
            .position(|candidate| *candidate == kind)
            .unwrap_or(0)
    }

    /// The limit for `kind` (0 = unlimited).
    pub fn get(&self, kind: QuotaKind) -> u32 {
        self.values.get(Self::index(kind)).copied().unwrap_or(0)
    }

    /// Sets the limit for `kind` (0 = unlimited).
    pub fn set(&mut self, kind: QuotaKind, value: u32) {
        if let Some(slot) = self.values.get_mut(Self::index(kind)) {
            *slot = value;
        }
    }

    /// Sets a limit by its name (`-Q name=value`); soft limits are named `soft-<name>`.
    pub fn set_by_name(&mut self, name: &str, value: u32) -> StoreResult<()> {
        self.set(QuotaKind::from_name(name)?, value);
        Ok(())
    }

    /// Sets a soft limit by its base name (`-q name=value`); only `memory` has one.
    pub fn set_soft_by_name(&mut self, name: &str, value: u32) -> StoreResult<()> {
        match name {
            "memory" => {
                self.set(QuotaKind::SoftMemoryBytes, value);
                Ok(())
            }
            _ => Err(StoreError::Invalid),
        }
    }

    /// Whether `value` is over the limit for `kind` (`value >= limit`, 4.22 semantics).
    pub fn exceeded_by(&self, kind: QuotaKind, value: u64) -> bool {
        let limit = self.get(kind);
        limit != 0 && value >= u64::from(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_c_xenstored_defaults() {
        let quotas = Quotas::default();
        assert_eq!(quotas.get(QuotaKind::Nodes), 1000);
        assert_eq!(quotas.get(QuotaKind::Watches), 128);
        assert_eq!(quotas.get(QuotaKind::Transactions), 10);
        assert_eq!(quotas.get(QuotaKind::NodeSizeBytes), 2048);
        assert_eq!(quotas.get(QuotaKind::MemoryBytes), 2_621_440);
    }

    #[test]
    fn boundary_refuses_the_limit_itself() {
        let quotas = Quotas::default();
        assert!(!quotas.exceeded_by(QuotaKind::Watches, 127));
        assert!(quotas.exceeded_by(QuotaKind::Watches, 128));
    }

    #[test]
    fn zero_is_unlimited_and_names_round_trip() {
        let mut quotas = Quotas::default();
        quotas.set_by_name("watches", 0).unwrap();
        assert!(!quotas.exceeded_by(QuotaKind::Watches, u64::MAX));
        for kind in QuotaKind::ALL {
            assert_eq!(QuotaKind::from_name(kind.name()), Ok(kind));
        }
        assert_eq!(
            QuotaKind::from_name("permissions"),
            Ok(QuotaKind::NodePermissions)
        );
        assert_eq!(quotas.set_by_name("bogus", 1), Err(StoreError::Invalid));
        for kind in QuotaKind::ALL {
            assert_eq!(QuotaKind::from_wire_name(kind.name().as_bytes()), Ok(kind));
        }
        for name in ["permissions", "soft-nodes", "Nodes", ""] {
            assert_eq!(
                QuotaKind::from_wire_name(name.as_bytes()),
                Err(StoreError::Invalid)
            );
        }
        assert_eq!(
            quotas.set_soft_by_name("nodes", 1),
            Err(StoreError::Invalid)
        );
    }
}
