//! Positions in a list, found by a key of their element: 4 bytes an element, where a map from keys took a copy of
//! each key (the compilation's Services by namespace/name, backend groups by content; both alive at its peak).

use hashbrown::HashTable;
use std::hash::{BuildHasher, Hash};

pub struct Positions {
    table: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl Positions {
    pub fn with_capacity(n: usize) -> Positions {
        Positions { table: HashTable::with_capacity(n), hasher: Default::default() }
    }

    /// The position filed under `key`. `items` and `key_of` are the ones it was filed with.
    pub fn find<'s, T, K: Hash + Eq>(&self, items: &'s [T], key_of: impl Fn(&'s T) -> K, key: K) -> Option<usize> {
        let same = |j: &u32| items.get(*j as usize).is_some_and(|o| key_of(o) == key);
        self.table.find(self.hasher.hash_one(&key), same).map(|j| *j as usize)
    }

    /// The position filed under the key of `items[i]`: `i`, filed now, when there was none. Written through, it
    /// files another one instead.
    pub fn file<'s, T, K: Hash + Eq>(
        &mut self,
        items: &'s [T],
        key_of: impl Fn(&'s T) -> K,
        i: usize,
    ) -> Option<&mut u32> {
        let key = key_of(items.get(i)?);
        let hasher = &self.hasher;
        let same = |j: &u32| items.get(*j as usize).is_some_and(|o| key_of(o) == key);
        let rehash = |j: &u32| items.get(*j as usize).map_or(0, |o| hasher.hash_one(key_of(o)));
        let entry = self.table.entry(hasher.hash_one(&key), same, rehash);
        Some(entry.or_insert(u32::try_from(i).unwrap_or(u32::MAX)).into_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_filed_or_the_one_written_through() {
        let words = ["b", "a", "b", "c"];
        fn id<'a>(w: &&'a str) -> &'a str {
            w
        }
        let mut p = Positions::with_capacity(words.len());
        let filed: Vec<u32> = (0..words.len()).map(|i| *p.file(&words, id, i).unwrap()).collect();
        assert_eq!(filed, [0, 1, 0, 3]);
        assert_eq!(
            (p.find(&words, id, "b"), p.find(&words, id, "c"), p.find(&words, id, "d")),
            (Some(0), Some(3), None)
        );
        *p.file(&words, id, 2).unwrap() = 2;
        assert_eq!(p.find(&words, id, "b"), Some(2));
        assert!(p.file(&words, id, 9).is_none());
    }
}
