//! The domain requests (`XS_INTRODUCE`, `XS_RELEASE`, `XS_RESUME`,
//! `XS_IS_DOMAIN_INTRODUCED`, `XS_GET_DOMAIN_PATH`, `XS_SET_TARGET`, `XS_GET_FEATURE`,
//! `XS_SET_FEATURE`) and a domain's end (`docs/protocol.md`, "Domains").

use super::Origin;
use crate::connection::ConnectionKind;
use crate::domain::feature;
use crate::engine::{Engine, Reply, ok_reply};
use crate::fallible;
use crate::operations::{self, AccountingDeltas, Change, GlobalAccess, NodeAccess};
use crate::path::{self, INTRODUCE_DOMAIN, RELEASE_DOMAIN};
use crate::permissions::Permissions;
use crate::store::Node;
use crate::{DomainId, Platform, StoreError, StoreResult};
use alloc::string::String;
use alloc::vec::Vec;

impl Engine {
    /// `XS_INTRODUCE`: the platform maps the domain's ring and the domain gets a connection
    /// (a domain introduced again has its ring reset and keeps its nodes).
    pub(crate) fn introduce(
        &mut self,
        platform: &mut dyn Platform,
        domain: DomainId,
        ring_frame: u64,
        remote_port: u32,
    ) -> StoreResult<Reply> {
        // Room for the connection, the record and the event before the platform maps the
        // ring: once it did, nothing may fail.
        self.connections.try_reserve(1)?;
        self.domains.try_reserve(1)?;
        fallible::reserve(&mut self.pending_special, 1)?;
        platform.connect_domain(domain, ring_frame, remote_port)?;
        if let Some(existing) = self.domain_connection(domain) {
            // Re-introduction: the ring was reset; the domain keeps its nodes.
            self.reset_connection(existing);
            if let Some(record) = self.domains.get_mut(domain) {
                record.shutdown_reported = false;
            }
            return ok_reply();
        }
        let generation = self.tree.current_generation();
        self.domains
            .ensure(domain, generation, &self.config.quotas)?;
        let connection = self.add_connection(ConnectionKind::Domain, domain);
        if let Some(record) = self.domains.get_mut(domain) {
            record.connection = Some(connection);
            record.shutdown_reported = false;
        }
        if domain != self.config.privileged_domain {
            self.pending_special.push((INTRODUCE_DOMAIN, domain));
        }
        ok_reply()
    }

    /// `XS_RELEASE`: the domain goes as if it had died (the store's and the privileged
    /// domain cannot be released).
    pub(crate) fn release(
        &mut self,
        platform: &mut dyn Platform,
        domain: DomainId,
    ) -> StoreResult<Reply> {
        if domain == self.config.store_domain || domain == self.config.privileged_domain {
            return Err(StoreError::Invalid);
        }
        if self.domain_connection(domain).is_none() {
            return Err(StoreError::NoEntry);
        }
        self.destroy_domain(platform, domain, true);
        ok_reply()
    }

    /// `XS_RESUME`: `@releaseDomain` may fire again when the domain shuts down.
    pub(crate) fn resume(&mut self, domain: DomainId) -> StoreResult<Reply> {
        let record = self
            .domains
            .get_mut(domain)
            .filter(|record| record.connection.is_some())
            .ok_or(StoreError::NoEntry)?;
        record.shutdown_reported = false;
        ok_reply()
    }

    /// `XS_IS_DOMAIN_INTRODUCED`: `T` or `F`. `DOMID_SELF` always is, and so is the
    /// privileged domain, which C xenstored introduces at its start and never releases
    /// (`XS_RELEASE` of it is refused): also where it has no ring, as with the Linux daemon,
    /// whose dom0 speaks through the socket (docs/protocol.md, "Domains").
    pub(crate) fn is_domain_introduced(&self, domain: DomainId) -> StoreResult<Reply> {
        let introduced = domain == DomainId::SELF
            || domain == self.config.privileged_domain
            || self.domain_connection(domain).is_some();
        Ok(Reply::Borrowed(if introduced { b"T\0" } else { b"F\0" }))
    }

    /// `XS_GET_DOMAIN_PATH`: the domain's home, `/local/domain/<domid>`.
    pub(crate) fn get_domain_path(&self, domain: DomainId) -> StoreResult<Reply> {
        let mut reply = fallible::to_vec(path::home_path(domain)?.as_bytes())?;
        fallible::push(&mut reply, 0)?;
        Ok(Reply::Owned(reply))
    }

    /// `XS_SET_TARGET`: `domain` (a device model) acts as `target` in permission checks.
    pub(crate) fn set_target(&mut self, domain: DomainId, target: DomainId) -> StoreResult<Reply> {
        if self.domain_connection(target).is_none() {
            return Err(StoreError::NoEntry);
        }
        let record = self
            .domains
            .get_mut(domain)
            .filter(|record| record.connection.is_some())
            .ok_or(StoreError::NoEntry)?;
        record.target = Some(target);
        ok_reply()
    }

    /// `XS_GET_FEATURE`: the caller's features, or those of `domain`.
    pub(crate) fn get_feature(
        &mut self,
        platform: &mut dyn Platform,
        origin: &Origin,
        domain: Option<DomainId>,
    ) -> StoreResult<Reply> {
        let features = match domain {
            None => origin.caller.features,
            Some(domain) => self.known_domain_features(platform, domain)?,
        };
        fallible::decimal_reply(u64::from(features)).map(Reply::Owned)
    }

    /// `XS_SET_FEATURE`: the features `domain` will have; `ENOENT` for a domain that does
    /// not exist, `EBUSY` once it is introduced, then `EINVAL` for a feature this server
    /// does not support (C 4.22's order).
    pub(crate) fn set_feature(
        &mut self,
        platform: &mut dyn Platform,
        domain: DomainId,
        features: u32,
    ) -> StoreResult<Reply> {
        self.known_domain_features(platform, domain)?;
        let record = self.domains.get_mut(domain).ok_or(StoreError::NoEntry)?;
        if record.connection.is_some() {
            return Err(StoreError::Busy);
        }
        if features & !feature::SUPPORTED != 0 {
            return Err(StoreError::Invalid);
        }
        record.features = features;
        ok_reply()
    }

    /// The features of `domain`, whose record is made if the platform knows the domain
    /// (`ENOENT` otherwise).
    pub(crate) fn known_domain_features(
        &mut self,
        platform: &mut dyn Platform,
        domain: DomainId,
    ) -> StoreResult<u32> {
        if self.domains.get(domain).is_none() {
            if domain.0 >= DomainId::FIRST_RESERVED || !platform.domain_exists(domain) {
                return Err(StoreError::NoEntry);
            }
            let generation = self.tree.current_generation();
            self.domains
                .ensure(domain, generation, &self.config.quotas)?;
        }
        self.domains
            .get(domain)
            .map(|record| record.features)
            .ok_or(StoreError::NoEntry)
    }

    /// Releases a domain: its connection, watches and transactions go; its nodes are deleted
    /// (or given to the privileged domain with `-K`); permission entries naming it are
    /// removed everywhere (4.22); `@releaseDomain` fires.
    pub(crate) fn destroy_domain(
        &mut self,
        platform: &mut dyn Platform,
        domain: DomainId,
        fire_release: bool,
    ) {
        if let Some(connection) = self.domain_connection(domain) {
            self.live_update_connection_gone(connection);
            self.drop_watches_and_transactions(connection);
            self.clear_output(connection);
            self.connections.remove(&connection);
            platform.disconnect_domain(domain);
        }
        let privileged = self.config.privileged_domain;
        let keep_orphans = self.config.keep_orphans;
        // Without memory for the lists of nodes (or for a removal) the nodes stay, and so
        // does the domain's record, which they are charged to: the death itself must go
        // through, and the books must still balance.
        let owned = self.owned_paths(domain);
        let with_entries = self.paths_with_entries_naming(domain);
        let mut view = GlobalAccess {
            tree: &mut self.tree,
            deltas: AccountingDeltas::new(),
        };
        drop_entries_naming(&mut view, &with_entries, domain, privileged);
        let changes = remove_owned_subtrees(&mut view, &owned, privileged, keep_orphans);
        if keep_orphans {
            reown_descendants(&mut view, domain, privileged);
        }
        let deltas = view.deltas;
        self.apply_deltas(&deltas);
        if fallible::reserve(&mut self.pending_changes, changes.len()).is_ok() {
            self.pending_changes.extend(changes);
        }
        self.forget_domain(domain, fire_release);
    }

    /// The paths of the nodes `domain` owns, in path order (none for the privileged
    /// domain, whose nodes stay). One scan of the whole tree, as C's clean-up walks it;
    /// paths are built only for the nodes that match.
    fn owned_paths(&self, domain: DomainId) -> Vec<String> {
        if domain == self.config.privileged_domain {
            return Vec::new();
        }
        let mut owned = self
            .tree
            .matching_nodes(|node| node.permissions.owner() == domain)
            .unwrap_or_else(|_| {
                log::warn!("domain {domain}: no memory to list its nodes, they stay");
                Vec::new()
            });
        // In path order (in place), so that roots are found by bisection and taken in order.
        owned.sort_unstable();
        owned
    }

    /// The paths of the nodes whose permission entries (past the owner's) name `domain`.
    fn paths_with_entries_naming(&self, domain: DomainId) -> Vec<String> {
        self.tree
            .matching_nodes(|node| {
                node.permissions
                    .entries()
                    .iter()
                    .skip(1)
                    .any(|entry| entry.domain == domain)
            })
            .unwrap_or_else(|_| {
                log::warn!("domain {domain}: no memory to list the entries naming it, they stay");
                Vec::new()
            })
    }

    /// The dead domain's record goes once it owns nothing (the store's and the privileged
    /// domain's stay); no domain targets it any more; `@releaseDomain` fires if asked.
    fn forget_domain(&mut self, domain: DomainId, fire_release: bool) {
        if domain != self.config.privileged_domain && domain != self.config.store_domain {
            if self.domains.usage(domain).nodes == 0 {
                self.domains.remove(domain);
            } else {
                log::warn!("domain {domain}: not all its nodes could go (no memory); they stay");
            }
        }
        for record in self.domains.iter_mut().map(|(_, record)| record) {
            if record.target == Some(domain) {
                record.target = None;
            }
        }
        if fire_release
            && fallible::push(&mut self.pending_special, (RELEASE_DOMAIN, domain)).is_err()
        {
            log::warn!("domain {domain}: @releaseDomain not fired, no memory");
        }
    }
}

/// Removes the permission entries naming the dead `domain` from the nodes at `paths`.
///
/// Changed in place (not a modification: the generation stays), but the record shrinks,
/// so the owner's memory charge must follow. A node whose new list finds no memory keeps
/// its entry, which names no domain any more.
fn drop_entries_naming(
    view: &mut GlobalAccess<'_>,
    paths: &[String],
    domain: DomainId,
    privileged: DomainId,
) {
    for node_path in paths {
        let Some(node) = view.tree.get(node_path) else {
            continue;
        };
        let (old_owner, old_size) = (node.permissions.owner(), node.stored_size_bytes());
        let permissions = match node.permissions.retained(|entry| entry.domain != domain) {
            Ok(Some(permissions)) => permissions,
            Ok(None) => Permissions::owned_by(privileged),
            Err(_) => continue,
        };
        if view.deltas.try_reserve(2).is_err() {
            continue;
        }
        if let Some(node) = view.tree.get_mut(node_path) {
            node.permissions = permissions;
            let (new_owner, new_size) = (node.permissions.owner(), node.stored_size_bytes());
            operations::account_record(&mut view.deltas, node_path, old_owner, old_size, -1);
            operations::account_record(&mut view.deltas, node_path, new_owner, new_size, 1);
        }
    }
}

/// Removes the dead domain's owned subtrees (its owned nodes whose parent it does not own,
/// `owned` in path order), or gives them to the privileged domain: with `-K`, and always
/// for the root and the special nodes. Returns the changes that fire.
fn remove_owned_subtrees(
    view: &mut GlobalAccess<'_>,
    owned: &[String],
    privileged: DomainId,
    keep_orphans: bool,
) -> Vec<Change> {
    let is_owned = |node_path: &str| {
        owned
            .binary_search_by(|owned_path| owned_path.as_str().cmp(node_path))
            .is_ok()
    };
    let mut changes = Vec::new();
    for root in owned {
        let root = root.as_str();
        if path::parent(root).is_some_and(is_owned) {
            continue;
        }
        if keep_orphans || path::is_special(root) || root == "/" {
            if let Some(Ok(mut node)) = view.tree.get(root).map(Node::try_clone) {
                node.permissions.set_owner(privileged);
                let _ = view.put(root, node);
            }
            continue;
        }
        if let Some(Ok(node)) = view.tree.get(root).map(Node::try_clone)
            && let Ok(removed) = operations::remove_subtree(view, root, node)
            && fallible::reserve(&mut changes, removed.len()).is_ok()
        {
            changes.extend(removed);
        }
    }
    changes
}

/// With `-K`: the dead domain's nodes below the subtrees given to the privileged domain
/// are given to it too.
fn reown_descendants(view: &mut GlobalAccess<'_>, domain: DomainId, privileged: DomainId) {
    let stragglers: Vec<String> = view
        .tree
        .matching_nodes(|node| node.permissions.owner() == domain)
        .unwrap_or_default();
    for node_path in stragglers {
        if let Some(Ok(mut node)) = view.tree.get(&node_path).map(Node::try_clone) {
            node.permissions.set_owner(privileged);
            let _ = view.put(&node_path, node);
        }
    }
}
