//! The node tree: values, permissions, child lists and generation counts.
//!
//! Nodes live in a `BTreeMap` keyed by absolute path. A B-tree rather than a hash map: keys
//! come from guests and a B-tree has no hash to attack, its worst case is O(log n), and it
//! keeps a node's descendants in one contiguous key range (`"/a/"` up to `"/a0"`, because
//! `'0'` follows `'/'`). Each node keeps its children's names in insertion order, which is
//! the order C xenstored's `XS_DIRECTORY` returns.

use crate::path;
use crate::permissions::Permissions;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// Size C xenstored charges for a node record's header (`struct node_hdr`).
pub const NODE_HEADER_SIZE_BYTES: usize = 16;

/// One node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The value: any bytes, possibly empty.
    pub value: Vec<u8>,
    /// Owner, default access and ACL.
    pub permissions: Permissions,
    /// Names of the children, in the order they were created.
    pub children: Vec<String>,
    /// Value of the global generation counter when the node was last modified.
    pub generation: u64,
}

impl Node {
    /// A node with no value and no children.
    pub fn empty(permissions: Permissions) -> Node {
        Node {
            value: Vec::new(),
            permissions,
            children: Vec::new(),
            generation: 0,
        }
    }

    /// Size of the stored record as C xenstored's `node-size` quota measures it: header,
    /// permissions, value and the NUL-terminated child names.
    pub fn stored_size_bytes(&self) -> usize {
        let children: usize = self.children.iter().map(|name| name.len() + 1).sum();
        NODE_HEADER_SIZE_BYTES + self.permissions.stored_size_bytes() + self.value.len() + children
    }

    /// The child names as the `XS_DIRECTORY` reply lists them: each followed by a NUL.
    pub fn children_wire(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for name in &self.children {
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(0);
        }
        bytes
    }
}

/// The committed tree.
#[derive(Debug)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    generation: u64,
}

impl Tree {
    /// A tree holding only `/` (owned by `owner`, no access for others).
    pub fn new(owner: crate::DomainId) -> Tree {
        let mut nodes = BTreeMap::new();
        nodes.insert(String::from("/"), Node::empty(Permissions::owned_by(owner)));
        Tree {
            nodes,
            generation: 0,
        }
    }

    /// The node at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Mutable access for in-place repairs that are not modifications (flagging stale entries).
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.nodes.get_mut(path)
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
    pub fn insert(&mut self, path: &str, mut node: Node) -> Option<Node> {
        node.generation = self.next_generation();
        if let Some(slot) = self.nodes.get_mut(path) {
            return Some(core::mem::replace(slot, node));
        }
        self.nodes.insert(String::from(path), node);
        None
    }

    /// Removes the node at `path` (children are not touched).
    pub fn remove(&mut self, path: &str) -> Option<Node> {
        self.nodes.remove(path)
    }

    /// Number of nodes, special nodes included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree is empty (never true: the root always exists).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    /// Every node mutably, in path order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Node)> {
        self.nodes.iter_mut()
    }

    /// The paths of every descendant of `path` (not `path` itself), in path order.
    pub fn descendant_paths(&self, path: &str) -> Vec<String> {
        let start = if path == "/" {
            String::from("/")
        } else {
            alloc::format!("{path}/")
        };
        let end = if path == "/" {
            String::from("0")
        } else {
            alloc::format!("{path}0")
        };
        self.nodes
            .range(start..end)
            .map(|(key, _)| key.clone())
            .filter(|key| key != path && !path::is_special(key))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DomainId;

    #[test]
    fn insert_assigns_increasing_generations() {
        let mut tree = Tree::new(DomainId(0));
        let node = Node::empty(Permissions::owned_by(DomainId(0)));
        assert!(tree.insert("/a", node.clone()).is_none());
        let first = tree.get("/a").unwrap().generation;
        assert!(tree.insert("/a", node).is_some());
        assert!(tree.get("/a").unwrap().generation > first);
    }

    #[test]
    fn descendants_are_a_key_range() {
        let mut tree = Tree::new(DomainId(0));
        for path in ["/a", "/a/b", "/a/b/c", "/a-x", "/ab", "/a0"] {
            tree.insert(path, Node::empty(Permissions::owned_by(DomainId(0))));
        }
        assert_eq!(tree.descendant_paths("/a"), ["/a/b", "/a/b/c"]);
        assert_eq!(tree.descendant_paths("/").len(), 6);
    }

    #[test]
    fn stored_size_counts_header_permissions_value_and_children() {
        let mut node = Node::empty(Permissions::owned_by(DomainId(1)));
        node.value = alloc::vec![0; 10];
        node.children.push(String::from("abc"));
        assert_eq!(node.stored_size_bytes(), 16 + 8 + 10 + 4);
    }
}
