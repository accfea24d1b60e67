//! The node requests (`READ`, `WRITE`, `MKDIR`, `RM`, `DIRECTORY`, `GET/SET_PERMS`), written
//! once against [`NodeAccess`] so that they behave the same inside and outside a transaction.
//!
//! Every operation checks permissions and quotas before it changes anything, so a failed
//! request leaves no trace. Permission rules follow C xenstored (`core.c:perm_for_conn()`,
//! `errno_from_parents()`, `construct_node()`).

use crate::domain::{Domains, feature};
use crate::fallible::{self, SortedMap};
use crate::path;
use crate::permissions::{Access, Permissions};
use crate::quota::{QuotaKind, Quotas};
use crate::store::{Node, Tree};
use crate::wire::PAYLOAD_MAX_BYTES;
use crate::{DomainId, StoreError, StoreResult};
use alloc::string::String;
use alloc::vec::Vec;

/// Who is asking, as far as permissions and quotas care.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// The caller's domain (socket clients: the store domain).
    pub domain: DomainId,
    /// `XS_SET_TARGET`: the domain it acts for.
    pub target: Option<DomainId>,
    /// The privileged domain: every check passes, no quota applies.
    pub privileged: bool,
    /// Server features the caller may use.
    pub features: u32,
}

/// A change that fires watches.
#[derive(Clone, Debug)]
pub struct Change {
    /// The changed node.
    pub path: String,
    /// Fire only watches registered exactly on `path` (descendants of a removed node).
    pub exact: bool,
    /// The node's permissions (before removal, for removed nodes).
    pub permissions: Permissions,
    /// The permissions before an `XS_SET_PERMS` (watchers who could read under them are told).
    pub old_permissions: Option<Permissions>,
}

/// Node reads and writes, either on the committed tree or inside a transaction.
pub trait NodeAccess {
    /// The node at `path` as this view sees it.
    fn node(&mut self, path: &str) -> StoreResult<Option<&Node>>;
    /// Stores `node` at `path`.
    fn put(&mut self, path: &str, node: Node) -> StoreResult<()>;
    /// Removes the node at `path` (not its children).
    fn delete(&mut self, path: &str) -> StoreResult<()>;
    /// Room for `stores` puts and `deletions` deletes of nodes this view has already looked
    /// up (new nodes named, see [`Node::rename`]), owned by at most `owners` domains: once
    /// it is reserved they cannot fail for want of memory, so an operation reserves first
    /// and then changes several nodes all or nothing.
    fn reserve(&mut self, stores: usize, deletions: usize, owners: usize) -> StoreResult<()>;
    /// Nodes created (positive) or deleted (negative) for `owner` by this view and not yet
    /// visible in the domain records.
    fn pending_nodes(&self, owner: DomainId) -> i64;
}

/// Node and memory deltas per owner.
pub type AccountingDeltas = SortedMap<DomainId, (i64, i64)>;

/// Adds the accounting change of replacing `old` by `new` at `path` to `deltas`; `ENOMEM`
/// (and `deltas` unchanged) when an owner new to `deltas` finds no room.
pub fn account_replacement(
    deltas: &mut AccountingDeltas,
    path: &str,
    old: Option<&Node>,
    new: Option<&Node>,
) -> StoreResult<()> {
    // Room for the owners not yet in `deltas`, before the first change: an owner already
    // there needs none, so room reserved ahead for an operation's owners is never exceeded.
    let old_owner = old.map(|node| node.permissions.owner());
    let new_owner = new.map(|node| node.permissions.owner());
    let mut missing_owners = 0;
    if let Some(owner) = old_owner
        && !deltas.contains_key(&owner)
    {
        missing_owners += 1;
    }
    if let Some(owner) = new_owner
        && !deltas.contains_key(&owner)
        && new_owner != old_owner
    {
        missing_owners += 1;
    }
    deltas.try_reserve(missing_owners)?;
    account_node(deltas, path, old, -1);
    account_node(deltas, path, new, 1);
    Ok(())
}

/// Adds (`sign` 1) or takes off (`sign` -1) `node`, if there is one, at `path` on its
/// owner's books. The caller reserved room for the owner ([`account_replacement`]).
fn account_node(deltas: &mut AccountingDeltas, path: &str, node: Option<&Node>, sign: i64) {
    if let Some(node) = node {
        account_record(
            deltas,
            path,
            node.permissions.owner(),
            node.stored_size_bytes(),
            sign,
        );
    }
}

/// Adds (`sign` 1) or removes (`sign` -1) one node of `owner` with a record of `size_bytes`
/// at `path`. The caller reserved room for `owner` in `deltas` (the change is lost otherwise).
pub fn account_record(
    deltas: &mut AccountingDeltas,
    path: &str,
    owner: DomainId,
    size_bytes: usize,
    sign: i64,
) {
    if let Ok(entry) = deltas.get_or_try_insert_with(owner, || (0, 0)) {
        entry.0 += sign;
        entry.1 += sign * (size_bytes + path.len()) as i64;
    }
}

/// The committed tree; accounting deltas are collected for the engine to apply.
pub struct GlobalAccess<'a> {
    /// The tree.
    pub tree: &'a mut Tree,
    /// Deltas of the changes made so far.
    pub deltas: AccountingDeltas,
}

impl NodeAccess for GlobalAccess<'_> {
    fn node(&mut self, path: &str) -> StoreResult<Option<&Node>> {
        Ok(self.tree.get(path))
    }

    fn put(&mut self, path: &str, node: Node) -> StoreResult<()> {
        let (owner, size_bytes) = (node.permissions.owner(), node.stored_size_bytes());
        // The accounting's room first: once the tree changed, nothing may fail.
        let old_owner = self.tree.get(path).map(|old| old.permissions.owner());
        let missing_owners = [Some(owner), old_owner.filter(|old| *old != owner)]
            .into_iter()
            .flatten()
            .filter(|owner| !self.deltas.contains_key(owner))
            .count();
        self.deltas.try_reserve(missing_owners)?;
        let old = self.tree.insert(path, node)?;
        account_node(&mut self.deltas, path, old.as_ref(), -1);
        account_record(&mut self.deltas, path, owner, size_bytes, 1);
        Ok(())
    }

    fn delete(&mut self, path: &str) -> StoreResult<()> {
        if let Some(owner) = self.tree.get(path).map(|old| old.permissions.owner())
            && !self.deltas.contains_key(&owner)
        {
            self.deltas.try_reserve(1)?;
        }
        let old = self.tree.remove(path)?;
        account_node(&mut self.deltas, path, old.as_ref(), -1);
        Ok(())
    }

    fn reserve(&mut self, stores: usize, deletions: usize, owners: usize) -> StoreResult<()> {
        self.tree.try_reserve(stores)?;
        self.tree.try_reserve_removals(deletions)?;
        self.deltas.try_reserve(owners)
    }

    fn pending_nodes(&self, owner: DomainId) -> i64 {
        self.deltas.get(&owner).map_or(0, |delta| delta.0)
    }
}

/// What `caller` may do to `node` (`perm_for_conn()`).
pub fn access_for(caller: &Caller, node: &Node, domains: &Domains) -> Access {
    access_under(caller, &node.permissions, node.generation, domains)
}

/// What `caller` may do to a node with `permissions`, last written at `generation`.
pub fn access_under(
    caller: &Caller,
    permissions: &Permissions,
    generation: u64,
    domains: &Domains,
) -> Access {
    if caller.privileged {
        return Access::BOTH;
    }
    let entries = permissions.entries();
    let Some((owner, acl)) = entries.split_first() else {
        return Access::NONE;
    };
    let matches = |domain: DomainId| {
        domain == caller.domain || Some(domain) == caller.target || domain == DomainId::ANY
    };
    let owner_current = domains.entry_is_current(owner.domain, generation);
    if owner_current && owner.domain != DomainId::ANY && matches(owner.domain) {
        return Access::BOTH;
    }
    for entry in acl {
        if entry.ignored || !domains.entry_is_current(entry.domain, generation) {
            continue;
        }
        if matches(entry.domain) {
            return entry.access;
        }
    }
    owner.access
}

/// Whether `caller` owns `node` (may change its permissions).
fn is_owner(caller: &Caller, node: &Node, domains: &Domains) -> bool {
    if caller.privileged {
        return true;
    }
    let owner = node.permissions.owner();
    domains.entry_is_current(owner, node.generation)
        && (owner == caller.domain || Some(owner) == caller.target)
}

/// The error for a node that does not exist or may not be accessed: `ENOENT` when the
/// nearest existing ancestor is readable, `EACCES` otherwise (`errno_from_parents()`).
fn missing_node_error(
    view: &mut dyn NodeAccess,
    domains: &Domains,
    caller: &Caller,
    path: &str,
    error: StoreError,
) -> StoreError {
    let mut current = path;
    while let Some(parent) = path::parent(current) {
        match view.node(parent) {
            Ok(Some(node)) => {
                return if access_for(caller, node, domains).allows(Access::READ) {
                    error
                } else {
                    StoreError::AccessDenied
                };
            }
            Ok(None) => current = parent,
            Err(failure) => return failure,
        }
    }
    error
}

/// The node at `path` if `caller` has `wanted` access to it.
fn node_with_access(
    view: &mut dyn NodeAccess,
    domains: &Domains,
    caller: &Caller,
    path: &str,
    wanted: Access,
) -> StoreResult<Node> {
    let error = match view.node(path)? {
        // `ENOMEM` from the copy is the answer as it is: only a refusal of access or a
        // missing node is refined by the parents.
        Some(node) if access_for(caller, node, domains).allows(wanted) => {
            return node.try_clone();
        }
        Some(_) => StoreError::AccessDenied,
        None => StoreError::NoEntry,
    };
    Err(missing_node_error(view, domains, caller, path, error))
}

/// A read-only request's answer: `read` of the node at `path` (not cloned) once `caller` may
/// read it; otherwise the error C xenstored gives, refined by the parents.
pub fn with_readable_node<T>(
    view: &mut dyn NodeAccess,
    domains: &Domains,
    caller: &Caller,
    path: &str,
    read: impl FnOnce(&Node) -> StoreResult<T>,
) -> StoreResult<T> {
    let outcome = match view.node(path)? {
        Some(node) if access_for(caller, node, domains).allows(Access::READ) => Some(read(node)),
        Some(_) => None,
        None => None,
    };
    match outcome {
        Some(result) => result,
        None => {
            let exists = view.node(path)?.is_some();
            let error = if exists {
                StoreError::AccessDenied
            } else {
                StoreError::NoEntry
            };
            Err(missing_node_error(view, domains, caller, path, error))
        }
    }
}

/// `XS_READ`.
pub fn read(node: &Node) -> StoreResult<Vec<u8>> {
    fallible::to_vec(node.value())
}

/// `XS_DIRECTORY`: child names, each NUL-terminated; `E2BIG` when they do not fit a reply.
pub fn directory(node: &Node) -> StoreResult<Vec<u8>> {
    let listing = node.children_wire();
    if listing.len() > PAYLOAD_MAX_BYTES {
        Err(StoreError::TooBig)
    } else {
        fallible::to_vec(listing)
    }
}

/// `XS_DIRECTORY_PART`: `gen\0` then as many whole child entries from byte `offset` as fit,
/// and one more `\0` when the list's end is included (`core.c:send_directory_part()`).
pub fn directory_part(node: &Node, offset: usize) -> StoreResult<Vec<u8>> {
    let listing_bytes = node.children_wire().get(offset..).map_or(0, <[u8]>::len);
    // The whole reply's room at once (generation, NUL, entries, NUL): no growth later.
    let mut reply = fallible::vec_with_capacity(22 + listing_bytes.min(PAYLOAD_MAX_BYTES))?;
    reply.extend_from_slice(fallible::decimal_digits(node.generation, &mut [0; 20]));
    reply.push(0);
    let listing = node.children_wire();
    let Some(rest) = listing.get(offset..) else {
        reply.push(0);
        return Ok(reply);
    };
    let room = PAYLOAD_MAX_BYTES - reply.len() - 1;
    let mut taken = 0;
    for entry in rest.split_inclusive(|byte| *byte == 0) {
        if taken + entry.len() > room {
            break;
        }
        taken += entry.len();
    }
    reply.extend_from_slice(rest.get(..taken).unwrap_or(&[]));
    if taken == rest.len() {
        reply.push(0);
    }
    Ok(reply)
}

/// `XS_GET_PERMS`.
pub fn get_permissions(node: &Node) -> StoreResult<Vec<u8>> {
    node.permissions.to_wire()
}

/// Refuses a node record over the `node-size` quota for unprivileged callers.
fn check_node_size(caller: &Caller, quotas: &Quotas, node: &Node) -> StoreResult<()> {
    if !caller.privileged
        && quotas.exceeded_by(QuotaKind::NodeSizeBytes, node.stored_size_bytes() as u64)
    {
        return Err(StoreError::NoSpace);
    }
    Ok(())
}

/// Creates `path` and its missing ancestors (empty values), or changes an existing node's
/// value when `value` is given. Returns the change to fire (`None`: nothing was created or
/// written). Everything that can fail is done before the first node changes.
fn write_or_create(
    view: &mut dyn NodeAccess,
    domains: &Domains,
    caller: &Caller,
    quotas: &Quotas,
    path: &str,
    value: Option<&[u8]>,
) -> StoreResult<Option<Change>> {
    if let Some(existing) = view.node(path)? {
        let existing = existing.try_clone()?;
        return write_existing(view, domains, caller, quotas, path, existing, value);
    }

    // Find the nearest existing ancestor; every path on the way down gets created.
    let mut missing: Vec<&str> = Vec::new();
    fallible::push(&mut missing, path)?;
    let mut ancestor_path = path;
    let ancestor = loop {
        let Some(parent) = path::parent(ancestor_path) else {
            return Err(StoreError::NoEntry);
        };
        if let Some(node) = view.node(parent)? {
            break node.try_clone()?;
        }
        fallible::push(&mut missing, parent)?;
        ancestor_path = parent;
    };
    let ancestor_path = path::parent(ancestor_path).ok_or(StoreError::NoEntry)?;
    if !access_for(caller, &ancestor, domains).allows(Access::WRITE) {
        return Err(StoreError::AccessDenied);
    }

    // New nodes copy the parent's permissions; unprivileged creators own what they create.
    let mut permissions = ancestor.permissions.try_clone()?;
    if !caller.privileged {
        permissions.set_owner(caller.domain);
    }
    let owner = permissions.owner();
    if !caller.privileged {
        let owned =
            domains.usage(owner).nodes as i64 + view.pending_nodes(owner) + missing.len() as i64;
        if quotas.exceeded_by(QuotaKind::Nodes, owned.max(0) as u64) {
            return Err(StoreError::NoSpace);
        }
    }

    let mut parent_node = ancestor;
    let first_missing = missing.last().copied().unwrap_or(path);
    parent_node.add_child(path::base_name(first_missing))?;
    check_node_size(caller, quotas, &parent_node)?;

    // Build every node first (named, so that storing them allocates nothing more), and
    // reserve room for storing them, so that a failure leaves the store untouched.
    let mut created: Vec<(&str, Node)> = fallible::vec_with_capacity(missing.len())?;
    for (index, new_path) in missing.iter().rev().enumerate() {
        let mut node = Node::empty(permissions.try_clone()?);
        node.rename(path::base_name(new_path))?;
        if let Some(child) = missing.iter().rev().nth(index + 1) {
            node.add_child(path::base_name(child))?;
        }
        if *new_path == path
            && let Some(value) = value
        {
            node.set_value(value)?;
        }
        check_node_size(caller, quotas, &node)?;
        created.push((new_path, node));
    }
    let change = change_for(path, &permissions)?;
    // Room for the new nodes (the parent is replaced in place) and the two owners: the
    // parent's and the new nodes'.
    view.reserve(created.len(), 0, 2)?;
    view.put(ancestor_path, parent_node)?;
    for (new_path, node) in created {
        view.put(new_path, node)?;
    }
    Ok(Some(change))
}

/// [`write_or_create`] of a node that exists (`existing`, a copy): its value changes when
/// `value` is given.
fn write_existing(
    view: &mut dyn NodeAccess,
    domains: &Domains,
    caller: &Caller,
    quotas: &Quotas,
    path: &str,
    existing: Node,
    value: Option<&[u8]>,
) -> StoreResult<Option<Change>> {
    if !access_for(caller, &existing, domains).allows(Access::WRITE) {
        return Err(missing_node_error(
            view,
            domains,
            caller,
            path,
            StoreError::AccessDenied,
        ));
    }
    let Some(value) = value else {
        return Ok(None);
    };
    let mut node = existing;
    node.set_value(value)?;
    check_node_size(caller, quotas, &node)?;
    let change = change_for(path, &node.permissions)?;
    view.put(path, node)?;
    Ok(Some(change))
}

/// `XS_WRITE`: one change, for `path` only, even when ancestors were created.
pub fn write(
    view: &mut dyn NodeAccess,
    domains: &Domains,
    caller: &Caller,
    quotas: &Quotas,
    path: &str,
    value: &[u8],
) -> StoreResult<Vec<Change>> {
    // The list's room before anything changes: afterwards nothing may fail.
    let mut changes = fallible::vec_with_capacity(1)?;
    changes.extend(write_or_create(
        view,
        domains,
        caller,
        quotas,
        path,
        Some(value),
    )?);
    Ok(changes)
}

/// `XS_MKDIR`: an existing node is fine and fires nothing.
pub fn mkdir(
    view: &mut dyn NodeAccess,
    domains: &Domains,
    caller: &Caller,
    quotas: &Quotas,
    path: &str,
) -> StoreResult<Vec<Change>> {
    let mut changes = fallible::vec_with_capacity(1)?;
    changes.extend(write_or_create(view, domains, caller, quotas, path, None)?);
    Ok(changes)
}

/// The change of the node at `path` with `permissions` (built before the node changes).
fn change_for(path: &str, permissions: &Permissions) -> StoreResult<Change> {
    Ok(Change {
        path: fallible::string(path)?,
        exact: false,
        permissions: permissions.try_clone()?,
        old_permissions: None,
    })
}

/// `XS_RM`: removes the node and everything below it.
///
/// A missing node whose parent exists is success without events; the root cannot be removed.
pub fn remove(
    view: &mut dyn NodeAccess,
    domains: &Domains,
    caller: &Caller,
    path: &str,
) -> StoreResult<Vec<Change>> {
    if path == "/" {
        // The root cannot be removed, but only a caller who may write it learns that:
        // others get `EACCES` like for any unwritable node (XSA-353, C `do_rm()`).
        node_with_access(view, domains, caller, path, Access::WRITE)?;
        return Err(StoreError::Invalid);
    }
    let node = match node_with_access(view, domains, caller, path, Access::WRITE) {
        Ok(node) => node,
        Err(StoreError::NoEntry) => {
            let parent = path::parent(path).ok_or(StoreError::NoEntry)?;
            return if view.node(parent)?.is_some() {
                Ok(Vec::new())
            } else {
                Err(StoreError::NoEntry)
            };
        }
        Err(error) => return Err(error),
    };
    remove_subtree(view, path, node)
}

/// Removes `path` (whose node is `node`) and its descendants, without permission checks.
/// Everything that can fail (the list of descendants, their changes, the room to remove
/// them) is done before the first node changes.
pub fn remove_subtree(
    view: &mut dyn NodeAccess,
    path: &str,
    node: Node,
) -> StoreResult<Vec<Change>> {
    // Collect the subtree with an explicit work list: guest-shaped trees are never recursed.
    let mut doomed: Vec<(String, Permissions)> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    // The owners whose accounting changes (sorted, each once).
    let mut owners: Vec<DomainId> = Vec::new();
    add_owner(&mut owners, node.permissions.owner())?;
    for name in node.children() {
        fallible::push(&mut pending, path::join(path, name)?)?;
    }
    while let Some(child_path) = pending.pop() {
        if let Some(child) = view.node(&child_path)? {
            for name in child.children() {
                let grandchild = path::join(&child_path, name)?;
                fallible::push(&mut pending, grandchild)?;
            }
            let permissions = child.permissions.try_clone()?;
            add_owner(&mut owners, permissions.owner())?;
            fallible::push(&mut doomed, (child_path, permissions))?;
        }
    }
    let mut parent_update = None;
    if let Some(parent_path) = path::parent(path)
        && let Some(parent) = view.node(parent_path)?
    {
        let mut parent = parent.try_clone()?;
        add_owner(&mut owners, parent.permissions.owner())?;
        parent.remove_child(path::base_name(path))?;
        parent_update = Some((parent_path, parent));
    }
    let mut changes = fallible::vec_with_capacity(doomed.len() + 1)?;
    let top_change = Change {
        path: fallible::string(path)?,
        exact: false,
        permissions: node.permissions,
        old_permissions: None,
    };
    view.reserve(0, doomed.len() + 1, owners.len())?;
    if let Some((parent_path, parent)) = parent_update {
        view.put(parent_path, parent)?;
    }
    // Deepest first, as C's bottom-up walk fires them.
    for (child_path, permissions) in doomed.into_iter().rev() {
        view.delete(&child_path)?;
        changes.push(Change {
            path: child_path,
            exact: true,
            permissions,
            old_permissions: None,
        });
    }
    view.delete(path)?;
    changes.push(top_change);
    Ok(changes)
}

/// Adds `owner` to the sorted list `owners` unless it is there.
fn add_owner(owners: &mut Vec<DomainId>, owner: DomainId) -> StoreResult<()> {
    if let Err(index) = owners.binary_search(&owner) {
        fallible::reserve(owners, 1)?;
        owners.insert(index, owner);
    }
    Ok(())
}

/// `XS_SET_PERMS`. `exists` answers whether a domain named by an entry exists.
pub fn set_permissions(
    view: &mut dyn NodeAccess,
    domains: &Domains,
    caller: &Caller,
    quotas: &Quotas,
    path: &str,
    mut permissions: Permissions,
    exists: &mut dyn FnMut(DomainId) -> bool,
) -> StoreResult<Vec<Change>> {
    if !caller.privileged
        && quotas.exceeded_by(
            QuotaKind::NodePermissions,
            permissions.entries().len() as u64,
        )
    {
        return Err(StoreError::NoSpace);
    }
    let node = node_with_access(view, domains, caller, path, Access::WRITE)?;
    if !is_owner(caller, &node, domains) {
        return Err(StoreError::AccessDenied);
    }
    if !caller.privileged && permissions.owner() != node.permissions.owner() {
        return Err(StoreError::NotPermitted);
    }
    let owner = permissions.owner();
    if owner != DomainId::ANY && !exists(owner) {
        return Err(StoreError::NoEntry);
    }
    let may_use_any = caller.features & feature::DOMID_ANY != 0;
    for entry in permissions.entries_mut().iter_mut().skip(1) {
        entry.ignored = if entry.domain == DomainId::ANY {
            !may_use_any
        } else {
            !exists(entry.domain)
        };
    }
    let old_permissions = node.permissions.try_clone()?;
    let mut updated = node;
    updated.permissions = permissions.try_clone()?;
    check_node_size(caller, quotas, &updated)?;
    let mut changes = fallible::vec_with_capacity(1)?;
    changes.push(Change {
        path: fallible::string(path)?,
        exact: false,
        permissions,
        old_permissions: Some(old_permissions),
    });
    view.put(path, updated)?;
    Ok(changes)
}
