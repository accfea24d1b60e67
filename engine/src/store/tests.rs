//! Tests of the node tree: the index, generations, children lists and the accounting of sizes.

use super::*;
use crate::DomainId;

const KEY: [u64; 2] = [1, 2];

fn owned() -> Node {
    Node::empty(Permissions::owned_by(DomainId(0)))
}

#[test]
fn insert_assigns_increasing_generations() {
    let mut tree = Tree::new(DomainId(0), KEY);
    assert!(tree.insert("/a", owned()).unwrap().is_none());
    let first = tree.get("/a").unwrap().generation;
    assert!(tree.insert("/a", owned()).unwrap().is_some());
    assert!(tree.get("/a").unwrap().generation > first);
}

#[test]
fn paths_are_found_through_their_chain_of_names() {
    let mut tree = Tree::new(DomainId(0), KEY);
    for path in [
        "/a", "/a/b", "/a/b/c", "/a-x", "/ab", "/b", "/b/b", "@special",
    ] {
        let mut node = owned();
        node.set_value(path.as_bytes()).unwrap();
        tree.insert(path, node).unwrap();
    }
    for path in [
        "/a", "/a/b", "/a/b/c", "/a-x", "/ab", "/b", "/b/b", "@special",
    ] {
        assert_eq!(tree.get(path).unwrap().value(), path.as_bytes(), "{path}");
    }
    for missing in ["/c", "/a/c", "/b/a", "/a/b/c/d", "/b/b/c", "@other", "/a/a"] {
        assert!(tree.get(missing).is_none(), "{missing}");
    }
    assert_eq!(tree.len(), 9);
    assert!(tree.index_is_consistent());
    let paths: Vec<String> = tree.iter().map(|(path, _)| path).collect();
    assert_eq!(
        paths,
        [
            "/", "/a", "/a-x", "/a/b", "/a/b/c", "/ab", "/b", "/b/b", "@special"
        ]
    );
}

#[test]
fn paths_are_measured_and_built_from_the_chain_of_names() {
    let mut tree = Tree::new(DomainId(0), KEY);
    for path in ["/a", "/a/bc", "/a/bc/d", "@special"] {
        tree.insert(path, owned()).unwrap();
    }
    let mut paths: Vec<(String, usize)> = tree
        .try_nodes()
        .zip(tree.nodes_with_path_bytes())
        .map(|((path, _), (bytes, _))| (path.unwrap(), bytes))
        .collect();
    paths.sort();
    let expected = ["/", "/a", "/a/bc", "/a/bc/d", "@special"];
    assert_eq!(paths, expected.map(|path| (String::from(path), path.len())));
    assert_eq!(
        tree.matching_nodes(|node| node.value().is_empty())
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn a_subtree_goes_with_its_top_and_only_it() {
    let mut tree = Tree::new(DomainId(0), KEY);
    for (path, children) in [
        ("/a", &["b"][..]),
        ("/a/b", &["c"]),
        ("/a/b/c", &[]),
        ("/ab", &[]),
    ] {
        let mut node = owned();
        for child in children {
            node.add_child(child).unwrap();
        }
        tree.insert(path, node).unwrap();
    }
    tree.try_reserve_removals(3).unwrap();
    assert!(tree.remove("/a").unwrap().is_some());
    assert!(tree.get("/a/b/c").is_none() && tree.get("/a/b").is_none());
    assert!(tree.get("/ab").is_some());
    assert_eq!(tree.len(), 2);
    assert!(tree.index_is_consistent());
}

#[test]
fn a_new_node_needs_its_parent() {
    let mut tree = Tree::new(DomainId(0), KEY);
    assert_eq!(tree.insert("/a/b", owned()), Err(StoreError::NoEntry));
    assert_eq!(tree.len(), 1);
}

#[test]
fn removed_slots_are_reused_without_confusing_paths() {
    let mut tree = Tree::new(DomainId(0), KEY);
    let mut parent = owned();
    parent.add_child("b").unwrap();
    tree.insert("/a", parent).unwrap();
    tree.insert("/a/b", owned()).unwrap();
    // Removing a parent takes listed children with it: no slot keeps a stale parent.
    assert!(tree.remove("/a").unwrap().is_some());
    assert!(tree.get("/a/b").is_none());
    assert_eq!(tree.len(), 1);
    tree.insert("/x", owned()).unwrap();
    tree.insert("/x/a", owned()).unwrap();
    tree.insert("/x/a/b", owned()).unwrap();
    assert!(tree.get("/a/b").is_none());
    assert!(tree.get("/x/a/b").is_some());
    assert!(tree.index_is_consistent());
}

#[test]
fn many_nodes_survive_index_growth() {
    let mut tree = Tree::new(DomainId(0), KEY);
    for directory in 0..20 {
        tree.insert(&alloc::format!("/d{directory}"), owned())
            .unwrap();
        for leaf in 0..50 {
            let mut node = owned();
            node.set_value(alloc::format!("{directory}-{leaf}").as_bytes())
                .unwrap();
            tree.insert(&alloc::format!("/d{directory}/{leaf}"), node)
                .unwrap();
        }
    }
    assert_eq!(tree.len(), 1 + 20 + 20 * 50);
    assert_eq!(tree.get("/d7/42").unwrap().value(), b"7-42");
    assert!(tree.index_is_consistent());
}

#[test]
fn slots_span_chunks_and_grow_one_chunk_at_a_time() {
    let mut tree = Tree::new(DomainId(0), KEY);
    assert_eq!(tree.slots.capacity(), SLOTS_PER_CHUNK);
    let count = 2 * SLOTS_PER_CHUNK + 10;
    for leaf in 0..count {
        let mut node = owned();
        node.set_value(alloc::format!("{leaf}").as_bytes()).unwrap();
        tree.insert(&alloc::format!("/{leaf}"), node).unwrap();
    }
    assert_eq!(tree.slots.capacity(), 3 * SLOTS_PER_CHUNK);
    assert_eq!(tree.slots.iter().count(), count + 1);
    assert!(tree.remove("/5").unwrap().is_some());
    assert!(tree.remove("/2000").unwrap().is_some());
    tree.insert("/again", owned()).unwrap();
    tree.insert("/once-more", owned()).unwrap();
    // Freed slots are reused before the table grows.
    assert_eq!(tree.slots.iter().count(), count + 1);
    assert_eq!(tree.get("/1500").unwrap().value(), b"1500");
    assert_eq!(
        tree.get(&alloc::format!("/{}", count - 1)).unwrap().value(),
        b"2057"
    );
    assert!(tree.get("/5").is_none());
    assert!(tree.index_is_consistent());
    tree.try_reserve(SLOTS_PER_CHUNK).unwrap();
    assert_eq!(tree.slots.capacity(), 4 * SLOTS_PER_CHUNK);
}

#[test]
fn the_record_holds_value_and_children_independently() {
    let mut node = Node::empty(Permissions::owned_by(DomainId(1)));
    node.set_value(&[0; 10]).unwrap();
    node.add_child("abc").unwrap();
    node.add_child("de").unwrap();
    assert_eq!(node.stored_size_bytes(), 16 + 8 + 10 + 4 + 3);
    node.set_value(b"v").unwrap();
    assert_eq!(node.children_wire(), b"abc\0de\0");
    node.remove_child("abc").unwrap();
    assert_eq!(node.value(), b"v");
    assert_eq!(node.children().collect::<Vec<_>>(), ["de"]);
    assert!(!node.has_child("abc"));
    node.rename("named").unwrap();
    assert_eq!(node.value(), b"v");
    assert_eq!(node.children_wire(), b"de\0");
}
