//! Growth that answers `ENOMEM` instead of ending the store.
//!
//! In the stub domain a failed allocation in an infallible path (`Vec::push`, `String::from`,
//! `BTreeMap::insert`, ...) ends in the panic handler, and the host loses its xenstore. Every
//! path a request can drive therefore grows its collections through these helpers, which
//! reserve first and turn a refusal into [`StoreError::OutOfMemory`].
//!
//! `BTreeMap` has no fallible insert, so the maps on request paths are [`SortedMap`]: a
//! sorted `Vec` searched by bisection, iterated in key order like the `BTreeMap` it replaces.
//! Its inserts move the entries behind the new one, which is cheap for the small maps it
//! serves (per-request accounting deltas, a connection's transactions, the nodes one
//! transaction touched, bounded by the `transaction-nodes` quota for guests).

use crate::{StoreError, StoreResult};
use alloc::string::String;
use alloc::vec::Vec;
use core::borrow::Borrow;

/// Reserves room for `additional` more elements, or `ENOMEM`.
pub fn reserve<T>(vector: &mut Vec<T>, additional: usize) -> StoreResult<()> {
    vector
        .try_reserve(additional)
        .map_err(|_| StoreError::OutOfMemory)
}

/// Appends `value`, or `ENOMEM` (and `value` is dropped).
pub fn push<T>(vector: &mut Vec<T>, value: T) -> StoreResult<()> {
    reserve(vector, 1)?;
    vector.push(value);
    Ok(())
}

/// An empty vector with room for exactly `capacity` elements, or `ENOMEM`. Exactly: a
/// vector boxed once full (`into_boxed_slice`) must not reallocate to shed spare room.
pub fn vec_with_capacity<T>(capacity: usize) -> StoreResult<Vec<T>> {
    let mut vector = Vec::new();
    vector
        .try_reserve_exact(capacity)
        .map_err(|_| StoreError::OutOfMemory)?;
    Ok(vector)
}

/// A copy of `bytes`, or `ENOMEM`.
pub fn to_vec(bytes: &[u8]) -> StoreResult<Vec<u8>> {
    let mut copy = vec_with_capacity(bytes.len())?;
    copy.extend_from_slice(bytes);
    Ok(copy)
}

/// A copy of `items`, or `ENOMEM`.
pub fn copy_slice<T: Copy>(items: &[T]) -> StoreResult<Vec<T>> {
    let mut copy = vec_with_capacity(items.len())?;
    copy.extend_from_slice(items);
    Ok(copy)
}

/// The decimal digits of `value`, written into `room` (no allocation, no `core::fmt`).
pub fn decimal_digits(value: u64, room: &mut [u8; 20]) -> &[u8] {
    let mut start = room.len();
    let mut rest = value;
    loop {
        start -= 1;
        if let Some(digit) = room.get_mut(start) {
            // `rest % 10` is below 10, so the sum is an ASCII digit.
            *digit = b'0' + (rest % 10) as u8;
        }
        rest /= 10;
        if rest == 0 || start == 0 {
            break;
        }
    }
    room.get(start..).unwrap_or(&[])
}

/// `value` in decimal followed by a NUL (the replies that carry a number), or `ENOMEM`.
pub fn decimal_reply(value: u64) -> StoreResult<Vec<u8>> {
    let mut reply = vec_with_capacity(21)?;
    reply.extend_from_slice(decimal_digits(value, &mut [0; 20]));
    reply.push(0);
    Ok(reply)
}

/// A copy of `text`, or `ENOMEM`.
pub fn string(text: &str) -> StoreResult<String> {
    let mut copy = String::new();
    copy.try_reserve_exact(text.len())
        .map_err(|_| StoreError::OutOfMemory)?;
    copy.push_str(text);
    Ok(copy)
}

/// Appends `bytes`, or `ENOMEM` (and nothing is appended).
pub fn extend(vector: &mut Vec<u8>, bytes: &[u8]) -> StoreResult<()> {
    reserve(vector, bytes.len())?;
    vector.extend_from_slice(bytes);
    Ok(())
}

/// Text written with `write!` into memory that may run out: each write reserves its room,
/// and a refused one is remembered, so that the whole text answers `ENOMEM`.
#[derive(Debug, Default)]
pub struct Text {
    bytes: Vec<u8>,
    out_of_memory: bool,
}

impl Text {
    /// An empty text (allocates nothing).
    pub const fn new() -> Self {
        Text {
            bytes: Vec::new(),
            out_of_memory: false,
        }
    }

    /// An empty text with room for `capacity` bytes: writes within it cannot be refused.
    pub fn with_capacity(capacity: usize) -> StoreResult<Self> {
        Ok(Text {
            bytes: vec_with_capacity(capacity)?,
            out_of_memory: false,
        })
    }

    /// The text so far (what was written before a refusal).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The text followed by a NUL, as a reply's payload; `ENOMEM` when any write was refused.
    pub fn into_reply(mut self) -> StoreResult<Vec<u8>> {
        if self.out_of_memory {
            return Err(StoreError::OutOfMemory);
        }
        push(&mut self.bytes, 0)?;
        Ok(self.bytes)
    }
}

impl core::fmt::Write for Text {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        if extend(&mut self.bytes, text.as_bytes()).is_err() {
            self.out_of_memory = true;
            return Err(core::fmt::Error);
        }
        Ok(())
    }
}

/// A map kept as a `Vec` sorted by key, with fallible inserts (see the module comment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortedMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        SortedMap {
            entries: Vec::new(),
        }
    }
}

impl<K: Ord, V> SortedMap<K, V> {
    /// An empty map (allocates nothing).
    pub const fn new() -> Self {
        SortedMap {
            entries: Vec::new(),
        }
    }

    fn position<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.entries
            .binary_search_by(|(existing, _)| existing.borrow().cmp(key))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Room for `additional` more entries, so that that many inserts of new keys cannot fail.
    pub fn try_reserve(&mut self, additional: usize) -> StoreResult<()> {
        reserve(&mut self.entries, additional)
    }

    /// The value under `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        let index = self.position(key).ok()?;
        self.entries.get(index).map(|(_, value)| value)
    }

    /// The value under `key`, mutable.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        let index = self.position(key).ok()?;
        self.entries.get_mut(index).map(|(_, value)| value)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.position(key).is_ok()
    }

    /// Stores `value` under `key`; returns the value it replaced. `ENOMEM` (and the map
    /// unchanged) when a new key finds no room.
    pub fn try_insert(&mut self, key: K, value: V) -> StoreResult<Option<V>> {
        match self.position(&key) {
            Ok(index) => Ok(self
                .entries
                .get_mut(index)
                .map(|(_, existing)| core::mem::replace(existing, value))),
            Err(index) => {
                reserve(&mut self.entries, 1)?;
                self.entries.insert(index, (key, value));
                Ok(None)
            }
        }
    }

    /// The value under `key`, made by `make` when there is none; `ENOMEM` when a new entry
    /// finds no room.
    pub fn get_or_try_insert_with(
        &mut self,
        key: K,
        make: impl FnOnce() -> V,
    ) -> StoreResult<&mut V> {
        let index = match self.position(&key) {
            Ok(index) => index,
            Err(index) => {
                reserve(&mut self.entries, 1)?;
                self.entries.insert(index, (key, make()));
                index
            }
        };
        self.entries
            .get_mut(index)
            .map(|(_, value)| value)
            .ok_or(StoreError::OutOfMemory)
    }

    /// Removes and returns the value under `key`.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let index = self.position(key).ok()?;
        Some(self.entries.remove(index).1)
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.entries.iter().map(|(key, value)| (key, value))
    }

    /// The entries in key order, values mutable.
    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (&K, &mut V)> {
        self.entries.iter_mut().map(|(key, value)| (&*key, value))
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> {
        self.entries.iter().map(|(_, value)| value)
    }

    /// The values in key order, mutable.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, value)| value)
    }

    /// The keys in key order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> {
        self.entries.iter().map(|(key, _)| key)
    }

    /// Keeps the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.entries.retain_mut(|(key, value)| keep(key, value));
    }

    /// Removes every entry, keeping the room.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

impl<K, V> IntoIterator for SortedMap<K, V> {
    type Item = (K, V);
    type IntoIter = alloc::vec::IntoIter<(K, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a SortedMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter =
        core::iter::Map<core::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        fn split<K, V>(entry: &(K, V)) -> (&K, &V) {
            (&entry.0, &entry.1)
        }
        self.entries.iter().map(split)
    }
}

/// A set kept as a sorted `Vec` whose room is reserved ahead (see [`SortedSet::try_reserve_total`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SortedSet<T> {
    members: Vec<T>,
}

impl<T: Ord + Copy> SortedSet<T> {
    /// An empty set (allocates nothing).
    pub const fn new() -> Self {
        SortedSet {
            members: Vec::new(),
        }
    }

    /// Room for `total` members in all, so that inserts up to that many cannot fail.
    pub fn try_reserve_total(&mut self, total: usize) -> StoreResult<()> {
        let additional = total.saturating_sub(self.members.len());
        reserve(&mut self.members, additional)
    }

    /// Whether `member` is in the set.
    pub fn contains(&self, member: &T) -> bool {
        self.members.binary_search(member).is_ok()
    }

    /// Adds `member`; `ENOMEM` (and the set unchanged) when there is no room for it.
    pub fn try_insert(&mut self, member: T) -> StoreResult<()> {
        if let Err(index) = self.members.binary_search(&member) {
            reserve(&mut self.members, 1)?;
            self.members.insert(index, member);
        }
        Ok(())
    }

    /// Keeps the members `keep` accepts.
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.members.retain(keep);
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The members in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.members.iter()
    }

    /// The members in order, leaving the set empty with room for `capacity` (or none, when
    /// that cannot be allocated: inserts then reserve one by one).
    pub fn take_with_capacity(&mut self, capacity: usize) -> Vec<T> {
        let fresh = vec_with_capacity(capacity).unwrap_or_default();
        core::mem::replace(&mut self.members, fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_map_keeps_key_order_and_replaces() {
        let mut map: SortedMap<String, u32> = SortedMap::new();
        for (key, value) in [("b", 2), ("a", 1), ("c", 3), ("b", 20)] {
            map.try_insert(String::from(key), value).unwrap();
        }
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(map.get("b"), Some(&20));
        *map.get_or_try_insert_with(String::from("d"), || 4).unwrap() += 1;
        assert_eq!(map.get("d"), Some(&5));
        assert_eq!(map.remove("a"), Some(1));
        assert!(!map.contains_key("a"));
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn sorted_set_inserts_once() {
        let mut set = SortedSet::new();
        set.try_reserve_total(3).unwrap();
        for member in [3, 1, 3, 2] {
            set.try_insert(member).unwrap();
        }
        assert_eq!(set.take_with_capacity(3), [1, 2, 3]);
        assert!(set.is_empty());
    }
}
