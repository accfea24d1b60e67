//! The node tree: values, permissions, child lists and generation counts.
//!
//! Memory per node is what limits how many domains one stub domain serves, so the layout is
//! compact (at most 100 bytes per node beyond key and value: docs/performance.md, "Goals"):
//!
//! - Nodes live in an arena of slots (freed slots are reused), allocated in chunks of 1024
//!   slots so that the table never moves nor doubles. A node keeps its own name and its
//!   parent's slot, not its whole path: the path is the chain of names.
//! - One allocation per node holds its name, its value and its children's names (each
//!   NUL-terminated, in creation order, which is the order C xenstored's `XS_DIRECTORY`
//!   returns, `docs/misc/xenstore.txt`). A one-entry permission list is stored inline.
//! - Paths are found through a hash index of slot numbers. The hash is SipHash with a key the
//!   front end draws at start-up ([`crate::siphash`]), so a guest cannot choose colliding
//!   paths; every candidate is verified name by name up the parent chain.
//!
//! The index hashes a path's components from the last to the first (then the top: `/` or a
//! special name such as `@releaseDomain`), which is the order a slot's parent chain gives,
//! so neither a lookup nor a rehash needs to build a path string.

use crate::permissions::Permissions;
use crate::siphash::SipHasher;
use crate::{StoreError, StoreResult};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use hashbrown::HashTable;

/// Size C xenstored charges for a node record's header (`struct node_hdr`).
pub const NODE_HEADER_SIZE_BYTES: usize = 16;

/// The parent of the tops of the tree: `/` and the special nodes.
const NO_PARENT: u32 = u32::MAX;

/// Fed to the hash between path components: never part of a path (paths are ASCII).
const COMPONENT_SEPARATOR: [u8; 1] = [0xff];

/// One node.
#[derive(Clone, Debug)]
pub struct Node {
    /// Value of the global generation counter when the node was last modified.
    pub generation: u64,
    /// Owner, default access and ACL.
    pub permissions: Permissions,
    /// The node's name, then its value, then its children's names, each followed by a NUL.
    bytes: Box<[u8]>,
    name_length: u16,
    value_length: u16,
    /// The parent's slot in the tree ([`NO_PARENT`] for tops and for detached copies).
    parent: u32,
}

impl PartialEq for Node {
    /// Equal content: generation, permissions, value and children (not the tree placement).
    fn eq(&self, other: &Node) -> bool {
        self.generation == other.generation
            && self.permissions == other.permissions
            && self.value() == other.value()
            && self.children_wire() == other.children_wire()
    }
}

impl Eq for Node {}

/// `name`, `value` and `children` as one boxed record; `ENOMEM` when it cannot be allocated.
fn pack(name: &[u8], value: &[u8], children: &[u8]) -> StoreResult<Box<[u8]>> {
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(name.len() + value.len() + children.len())
        .map_err(|_| StoreError::OutOfMemory)?;
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(value);
    bytes.extend_from_slice(children);
    Ok(bytes.into_boxed_slice())
}

impl Node {
    /// A copy of the node; `ENOMEM` when its record cannot be allocated (`clone` would abort).
    pub fn try_clone(&self) -> StoreResult<Node> {
        Ok(Node {
            generation: self.generation,
            permissions: self.permissions.try_clone()?,
            bytes: pack(&self.bytes, &[], &[])?,
            name_length: self.name_length,
            value_length: self.value_length,
            parent: self.parent,
        })
    }

    /// A node with no value and no children.
    pub fn empty(permissions: Permissions) -> Node {
        Node {
            generation: 0,
            permissions,
            bytes: Box::default(),
            name_length: 0,
            value_length: 0,
            parent: NO_PARENT,
        }
    }

    fn name(&self) -> &[u8] {
        self.bytes
            .get(..usize::from(self.name_length))
            .unwrap_or(&[])
    }

    /// The value: any bytes, possibly empty.
    pub fn value(&self) -> &[u8] {
        let start = usize::from(self.name_length);
        self.bytes
            .get(start..start + usize::from(self.value_length))
            .unwrap_or(&[])
    }

    /// The child names as the `XS_DIRECTORY` reply lists them: each followed by a NUL.
    pub fn children_wire(&self) -> &[u8] {
        let start = usize::from(self.name_length) + usize::from(self.value_length);
        self.bytes.get(start..).unwrap_or(&[])
    }

    /// The child names, in creation order.
    pub fn children(&self) -> impl Iterator<Item = &str> {
        self.children_wire()
            .split(|byte| *byte == 0)
            .filter(|name| !name.is_empty())
            .filter_map(|name| core::str::from_utf8(name).ok())
    }

    /// Whether a child is called `name`.
    pub fn has_child(&self, name: &str) -> bool {
        self.children().any(|child| child == name)
    }

    /// Replaces the value (`E2BIG` past 64 KiB, which no request can carry).
    pub fn set_value(&mut self, value: &[u8]) -> StoreResult<()> {
        let value_length = u16::try_from(value.len()).map_err(|_| StoreError::TooBig)?;
        self.bytes = pack(self.name(), value, self.children_wire())?;
        self.value_length = value_length;
        Ok(())
    }

    /// Appends `name` to the child list.
    pub fn add_child(&mut self, name: &str) -> StoreResult<()> {
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(self.bytes.len() + name.len() + 1)
            .map_err(|_| StoreError::OutOfMemory)?;
        bytes.extend_from_slice(&self.bytes);
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        self.bytes = bytes.into_boxed_slice();
        Ok(())
    }

    /// Removes `name` from the child list (nothing when it is not there).
    pub fn remove_child(&mut self, name: &str) -> StoreResult<()> {
        if !self.has_child(name) {
            return Ok(());
        }
        let mut children = Vec::new();
        children
            .try_reserve_exact(self.children_wire().len())
            .map_err(|_| StoreError::OutOfMemory)?;
        for child in self.children().filter(|child| *child != name) {
            children.extend_from_slice(child.as_bytes());
            children.push(0);
        }
        self.bytes = pack(self.name(), self.value(), &children)?;
        Ok(())
    }

    /// Size of the stored record as C xenstored's `node-size` quota measures it: header,
    /// permissions, value and the NUL-terminated child names.
    pub fn stored_size_bytes(&self) -> usize {
        NODE_HEADER_SIZE_BYTES
            + self.permissions.stored_size_bytes()
            + self.value().len()
            + self.children_wire().len()
    }

    /// Gives the node `name` (reallocating only when it differs). Nodes named before they
    /// are stored are stored without allocating their record again ([`Tree::insert`]).
    pub fn rename(&mut self, name: &str) -> StoreResult<()> {
        if self.name() == name.as_bytes() {
            return Ok(());
        }
        let name_length = u16::try_from(name.len()).map_err(|_| StoreError::TooBig)?;
        self.bytes = pack(name.as_bytes(), self.value(), self.children_wire())?;
        self.name_length = name_length;
        Ok(())
    }
}

/// A path split as the tree stores it: the top (`/` or a special name) and the components
/// below it.
fn split_path(path: &str) -> (&str, Option<&str>) {
    match path.strip_prefix('/') {
        Some("") => ("/", None),
        Some(rest) => ("/", Some(rest)),
        None => (path, None),
    }
}

/// The `/`-separated components of `below`, last first. A byte search: `str::rsplit`'s
/// general `memrchr` ran up to a fifth of the stub's translated blocks per small request
/// (QEMU `-d exec`).
fn path_components_from_last(below: &str) -> impl Iterator<Item = &[u8]> {
    below.as_bytes().rsplit(|byte| *byte == b'/')
}

fn hash_path(key: [u64; 2], path: &str) -> u64 {
    let (top, below) = split_path(path);
    let mut hasher = SipHasher::new(key);
    for component in below.into_iter().flat_map(path_components_from_last) {
        hasher.write(component);
        hasher.write(&COMPONENT_SEPARATOR);
    }
    hasher.write(top.as_bytes());
    hasher.finish()
}

fn node_at(slots: &Slots, slot: u32) -> Option<&Node> {
    slots
        .get(usize::try_from(slot).ok()?)
        .and_then(Option::as_ref)
}

/// Slots per chunk of the slot table: 48 KiB of 48-byte slots.
const SLOTS_PER_CHUNK: usize = 1024;

/// The slot table: chunks of [`SLOTS_PER_CHUNK`] slots, each allocated once at its full size.
///
/// One contiguous `Vec` of 100 000 slots is a 6 MiB block that doubles (holding the old copy
/// while it moves, a transient of three times the old size) and is a third empty after it
/// did; chunks grow the table 48 KiB at a time and leave at most one chunk unused.
#[derive(Debug, Default)]
struct Slots {
    chunks: Vec<Vec<Option<Node>>>,
    len: usize,
}

impl Slots {
    /// Slots allocated (used or not).
    fn capacity(&self) -> usize {
        self.chunks.len() * SLOTS_PER_CHUNK
    }

    fn get(&self, slot: usize) -> Option<&Option<Node>> {
        self.chunks
            .get(slot / SLOTS_PER_CHUNK)?
            .get(slot % SLOTS_PER_CHUNK)
    }

    fn get_mut(&mut self, slot: usize) -> Option<&mut Option<Node>> {
        self.chunks
            .get_mut(slot / SLOTS_PER_CHUNK)?
            .get_mut(slot % SLOTS_PER_CHUNK)
    }

    /// Room for `additional` more slots: that many [`Slots::push`] then allocate nothing.
    fn try_reserve(&mut self, additional: usize) -> StoreResult<()> {
        while self.capacity() < self.len + additional {
            crate::fallible::reserve(&mut self.chunks, 1)?;
            self.chunks
                .push(crate::fallible::vec_with_capacity(SLOTS_PER_CHUNK)?);
        }
        Ok(())
    }

    /// Appends an empty slot and returns its number; `ENOMEM` when no room was reserved.
    fn push_empty(&mut self) -> StoreResult<u32> {
        let slot = u32::try_from(self.len).map_err(|_| StoreError::NoSpace)?;
        let chunk = self
            .chunks
            .get_mut(self.len / SLOTS_PER_CHUNK)
            .ok_or(StoreError::OutOfMemory)?;
        // A chunk holds at most its capacity: the push never reallocates.
        chunk.push(None);
        self.len += 1;
        Ok(slot)
    }

    /// Every slot in order.
    fn iter(&self) -> impl Iterator<Item = &Option<Node>> {
        self.chunks.iter().flatten()
    }
}

/// The same hash as [`hash_path`] of the slot's path, from the parent chain.
fn hash_slot(key: [u64; 2], slots: &Slots, slot: u32) -> u64 {
    let mut hasher = SipHasher::new(key);
    hash_chain(&mut hasher, slots, slot);
    hasher.finish()
}

/// The hash of the path of a child `name` of the node in `parent`, without building it.
fn hash_child(key: [u64; 2], slots: &Slots, parent: u32, name: &[u8]) -> u64 {
    let mut hasher = SipHasher::new(key);
    hasher.write(name);
    hasher.write(&COMPONENT_SEPARATOR);
    hash_chain(&mut hasher, slots, parent);
    hasher.finish()
}

/// Feeds the names from the slot up to its top, as [`hash_path`] feeds a path's components.
fn hash_chain(hasher: &mut SipHasher, slots: &Slots, slot: u32) {
    let mut current = node_at(slots, slot);
    while let Some(node) = current {
        hasher.write(node.name());
        if node.parent == NO_PARENT {
            break;
        }
        hasher.write(&COMPONENT_SEPARATOR);
        current = node_at(slots, node.parent);
    }
}

/// Whether two slots' chains of names are the same (the same path).
fn same_chain(slots: &Slots, left: u32, right: u32) -> bool {
    let (mut left, mut right) = (node_at(slots, left), node_at(slots, right));
    while let (Some(left_node), Some(right_node)) = (left, right) {
        if left_node.name() != right_node.name() {
            return false;
        }
        match (left_node.parent, right_node.parent) {
            (NO_PARENT, NO_PARENT) => return true,
            (NO_PARENT, _) | (_, NO_PARENT) => return false,
            (left_parent, right_parent) => {
                left = node_at(slots, left_parent);
                right = node_at(slots, right_parent);
            }
        }
    }
    false
}

/// Whether the slot's chain of names spells `path`.
fn slot_has_path(slots: &Slots, slot: u32, path: &str) -> bool {
    let (top, below) = split_path(path);
    let mut current = slot;
    for component in below.into_iter().flat_map(path_components_from_last) {
        match node_at(slots, current) {
            Some(node) if node.parent != NO_PARENT && node.name() == component => {
                current = node.parent;
            }
            _ => return false,
        }
    }
    node_at(slots, current)
        .is_some_and(|node| node.parent == NO_PARENT && node.name() == top.as_bytes())
}

/// The committed tree.
#[derive(Debug)]
pub struct Tree {
    slots: Slots,
    free_slots: Vec<u32>,
    index: HashTable<u32>,
    hash_key: [u64; 2],
    count: usize,
    generation: u64,
}

impl Tree {
    /// A tree holding only `/` (owned by `owner`, no access for others), indexed with
    /// `hash_key` (which should be secret and random: see [`crate::siphash`]).
    pub fn new(owner: crate::DomainId, hash_key: [u64; 2]) -> Tree {
        let mut tree = Tree {
            slots: Slots::default(),
            free_slots: Vec::new(),
            index: HashTable::new(),
            hash_key,
            count: 0,
            generation: 0,
        };
        let _ = tree.insert("/", Node::empty(Permissions::owned_by(owner)));
        tree.generation = 0;
        if let Some(root) = tree.get_mut("/") {
            root.generation = 0;
        }
        tree
    }

    fn slot_of(&self, path: &str) -> Option<u32> {
        let hash = hash_path(self.hash_key, path);
        let slots = &self.slots;
        self.index
            .find(hash, |slot| slot_has_path(slots, *slot, path))
            .copied()
    }

    fn slot_mut(&mut self, slot: u32) -> Option<&mut Node> {
        self.slots
            .get_mut(usize::try_from(slot).ok()?)
            .and_then(Option::as_mut)
    }

    /// The node at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        node_at(&self.slots, self.slot_of(path)?)
    }

    /// Mutable access for in-place repairs that are not modifications (flagging stale entries).
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        let slot = self.slot_of(path)?;
        self.slot_mut(slot)
    }

    /// Takes the next value of the global generation counter.
    pub fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// The last generation handed out.
    pub fn current_generation(&self) -> u64 {
        self.generation
    }

    /// Stores `node` at `path` with a fresh generation; returns the node it replaced.
    ///
    /// A new node's parent must exist (`ENOENT` otherwise); `ENOMEM` when the node or the
    /// index cannot grow. Nothing changes on failure.
    pub fn insert(&mut self, path: &str, mut node: Node) -> StoreResult<Option<Node>> {
        if let Some(slot) = self.slot_of(path) {
            let existing = self.slot_mut(slot).ok_or(StoreError::NoEntry)?;
            node.rename(core::str::from_utf8(existing.name()).map_err(|_| StoreError::Invalid)?)?;
            node.parent = existing.parent;
            let generation = self.next_generation();
            node.generation = generation;
            let existing = self.slot_mut(slot).ok_or(StoreError::NoEntry)?;
            return Ok(Some(core::mem::replace(existing, node)));
        }
        let (name, parent) = match crate::path::parent(path) {
            Some(parent_path) => (
                crate::path::base_name(path),
                self.slot_of(parent_path).ok_or(StoreError::NoEntry)?,
            ),
            None => (path, NO_PARENT),
        };
        node.rename(name)?;
        node.parent = parent;
        // Reserve everything before changing anything.
        self.try_reserve(1)?;
        node.generation = self.next_generation();
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => self.slots.push_empty()?,
        };
        if let Some(entry) = self.slots.get_mut(slot as usize) {
            *entry = Some(node);
        }
        let (key, slots) = (self.hash_key, &self.slots);
        let hash = hash_slot(key, slots, slot);
        self.index
            .insert_unique(hash, slot, |slot| hash_slot(key, slots, *slot));
        self.count += 1;
        Ok(None)
    }

    /// Room for `additional` more nodes: that many inserts of new paths (of nodes named
    /// before they are stored, see [`Node::rename`]) then cannot fail for want of memory.
    pub fn try_reserve(&mut self, additional: usize) -> StoreResult<()> {
        let (key, slots) = (self.hash_key, &self.slots);
        self.index
            .try_reserve(additional, |slot| hash_slot(key, slots, *slot))
            .map_err(|_| StoreError::OutOfMemory)?;
        self.slots
            .try_reserve(additional.saturating_sub(self.free_slots.len()))
    }

    /// Room for `removals` removals of nodes whose descendants are gone: the free list then
    /// never grows while they go.
    pub fn try_reserve_removals(&mut self, removals: usize) -> StoreResult<()> {
        crate::fallible::reserve(&mut self.free_slots, removals)
    }

    /// The slot of the child `name` of the node in `parent`.
    fn child_slot(&self, parent: u32, name: &[u8]) -> Option<u32> {
        let hash = hash_child(self.hash_key, &self.slots, parent, name);
        let slots = &self.slots;
        self.index
            .find(hash, |slot| {
                node_at(slots, *slot)
                    .is_some_and(|node| node.parent == parent && node.name() == name)
            })
            .copied()
    }

    /// Removes the node at `path`. Callers remove children first; any child still present
    /// (listed by the node) goes with it, so that no slot is left pointing at a reused one.
    /// `ENOMEM`, with nothing removed, when the list of descendants cannot be allocated.
    pub fn remove(&mut self, path: &str) -> StoreResult<Option<Node>> {
        let Some(top) = self.slot_of(path) else {
            return Ok(None);
        };
        // Usually the children are gone already (callers remove bottom up): then no list.
        let has_descendants = node_at(&self.slots, top).is_some_and(|node| {
            node.children_wire()
                .split(|byte| *byte == 0)
                .any(|name| !name.is_empty() && self.child_slot(top, name).is_some())
        });
        if !has_descendants {
            self.try_reserve_removals(1)?;
            return Ok(self.remove_slot(top));
        }
        // Descendants are found through their parents' slots (no paths are built), all
        // before the first removal; then the deepest go first.
        let mut doomed: Vec<u32> = Vec::new();
        crate::fallible::push(&mut doomed, top)?;
        let mut visited = 0;
        while let Some(&slot) = doomed.get(visited) {
            visited += 1;
            let Some(node) = node_at(&self.slots, slot) else {
                continue;
            };
            for name in node.children_wire().split(|byte| *byte == 0) {
                if name.is_empty() {
                    continue;
                }
                if let Some(child) = self.child_slot(slot, name) {
                    crate::fallible::push(&mut doomed, child)?;
                }
            }
        }
        // The free list never needs more room than the slots it describes.
        crate::fallible::reserve(&mut self.free_slots, doomed.len())?;
        let mut removed = None;
        for slot in doomed.into_iter().rev() {
            removed = self.remove_slot(slot);
        }
        Ok(removed)
    }

    /// Removes the node in `slot` (its descendants are gone: its hash needs its ancestors
    /// only). The free list has room (reserved by the caller).
    fn remove_slot(&mut self, slot: u32) -> Option<Node> {
        let hash = hash_slot(self.hash_key, &self.slots, slot);
        let entry = self.index.find_entry(hash, |found| *found == slot).ok()?;
        entry.remove();
        let node = self
            .slots
            .get_mut(usize::try_from(slot).ok()?)
            .and_then(Option::take)?;
        if self.free_slots.len() < self.free_slots.capacity() {
            self.free_slots.push(slot);
        }
        self.count -= 1;
        Some(node)
    }

    /// Number of nodes, special nodes included.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the tree is empty (never true: the root always exists).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The path of the node in `slot`, built from its chain of names, for whole-tree scans
    /// (checks, tests); empty when it cannot be allocated.
    fn path_of(&self, slot: u32) -> String {
        self.try_path_of(slot).unwrap_or_default()
    }

    /// The length of the path of the node in `slot`, from its chain of names.
    fn path_bytes(&self, slot: u32) -> usize {
        let mut length = 0;
        let mut current = node_at(&self.slots, slot);
        while let Some(node) = current {
            if node.parent == NO_PARENT {
                length += node.name().len();
                break;
            }
            length += node.name().len() + 1;
            current = node_at(&self.slots, node.parent);
        }
        let top_is_root = self.top_of(slot).is_none_or(|top| top.name() == b"/");
        // Below the root the separator before the first name is the root's own `/`.
        if top_is_root && length > 1 {
            length -= 1;
        }
        length
    }

    /// The path of the node in `slot` in one allocation (its length is measured first);
    /// `ENOMEM` when it cannot be allocated.
    fn try_path_of(&self, slot: u32) -> StoreResult<String> {
        // The chain gives the names last first: measure, then fill from the end.
        let length = self.path_bytes(slot);
        let top_is_root = self.top_of(slot).is_none_or(|top| top.name() == b"/");
        let mut bytes = crate::fallible::vec_with_capacity(length)?;
        bytes.resize(length, 0);
        let mut end = length;
        let mut current = node_at(&self.slots, slot);
        while let Some(node) = current {
            let name = node.name();
            let is_top = node.parent == NO_PARENT;
            if is_top && top_is_root && end == 0 {
                break;
            }
            let start = end.saturating_sub(name.len());
            if let Some(target) = bytes.get_mut(start..end) {
                target.copy_from_slice(name);
            }
            end = start;
            if is_top {
                break;
            }
            if end > 0 {
                end -= 1;
                if let Some(separator) = bytes.get_mut(end) {
                    *separator = b'/';
                }
            }
            current = node_at(&self.slots, node.parent);
        }
        String::from_utf8(bytes).map_err(|_| StoreError::Invalid)
    }

    /// The top (`/` or a special node) of the chain of `slot`.
    fn top_of(&self, slot: u32) -> Option<&Node> {
        let mut current = node_at(&self.slots, slot)?;
        while current.parent != NO_PARENT {
            current = node_at(&self.slots, current.parent)?;
        }
        Some(current)
    }

    /// Every node with its path, in no particular order (no sorting: for whole-tree scans).
    pub fn nodes(&self) -> impl Iterator<Item = (String, &Node)> {
        self.slots.iter().enumerate().filter_map(|(slot, node)| {
            let node = node.as_ref()?;
            Some((self.path_of(u32::try_from(slot).ok()?), node))
        })
    }

    /// Every node with its path, or `ENOMEM` in place of a path that found no memory.
    pub fn try_nodes(&self) -> impl Iterator<Item = (StoreResult<String>, &Node)> {
        self.slots.iter().enumerate().filter_map(|(slot, node)| {
            let node = node.as_ref()?;
            Some((self.try_path_of(u32::try_from(slot).ok()?), node))
        })
    }

    /// Every node with the length of its path (measured, not built: allocates nothing).
    pub fn nodes_with_path_bytes(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.slots.iter().enumerate().filter_map(|(slot, node)| {
            let node = node.as_ref()?;
            Some((self.path_bytes(u32::try_from(slot).ok()?), node))
        })
    }

    /// Every node whose record `wanted` accepts, with its path (paths are built only for
    /// those); `ENOMEM` when the list cannot be allocated.
    pub fn matching_nodes(
        &self,
        mut wanted: impl FnMut(&Node) -> bool,
    ) -> StoreResult<Vec<String>> {
        let mut paths = Vec::new();
        for (slot, node) in self.slots.iter().enumerate() {
            let Some(node) = node else {
                continue;
            };
            if !wanted(node) {
                continue;
            }
            let slot = u32::try_from(slot).map_err(|_| StoreError::NoSpace)?;
            crate::fallible::push(&mut paths, self.try_path_of(slot)?)?;
        }
        Ok(paths)
    }

    /// Every node in path order.
    pub fn iter(&self) -> impl Iterator<Item = (String, &Node)> {
        let mut all: Vec<(String, &Node)> = self.nodes().collect();
        all.sort_unstable_by(|left, right| left.0.cmp(&right.0));
        all.into_iter()
    }

    /// Whether the hash index and the slots agree: every node is found under its own path
    /// exactly once (used by the accounting check).
    pub fn index_is_consistent(&self) -> bool {
        let indexed = self.index.len() == self.count;
        indexed
            && self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, node)| node.is_some())
                .all(|(slot, _)| u32::try_from(slot).is_ok_and(|slot| self.indexed_once(slot)))
    }

    /// Whether looking up the slot's path (hashed from its chain of names, as a lookup of
    /// the path string would hash it) finds this slot: no path is built, so a check cannot
    /// fail for want of memory.
    fn indexed_once(&self, slot: u32) -> bool {
        let hash = hash_slot(self.hash_key, &self.slots, slot);
        let slots = &self.slots;
        self.index
            .find(hash, |candidate| same_chain(slots, *candidate, slot))
            .is_some_and(|found| *found == slot)
    }
}

#[cfg(test)]
mod tests;
