//! Rule order inside one HTTP port (controlplane.md §3.3, dataplane.md §3.5): first match wins.

use std::cmp::Ordering;

/// The sort keys of one compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey<'a> {
    pub priority: i64,
    pub complexity: i64,
    /// Length of the Go JSON encoding of the original ALB's `internal_dsl`.
    pub dsl_len: usize,
    pub name: &'a str,
    /// Last resort so that the order is total even across namespaces.
    pub namespace: &'a str,
}

impl Ord for SortKey<'_> {
    /// priority ascending, complexity descending, dsl length descending, name ascending.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.complexity.cmp(&self.complexity))
            .then_with(|| other.dsl_len.cmp(&self.dsl_len))
            .then_with(|| self.name.as_bytes().cmp(other.name.as_bytes()))
            .then_with(|| self.namespace.cmp(other.namespace))
    }
}

impl PartialOrd for SortKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The rules of one port with their sort keys, in the order they were compiled. [`Ranked::into_sorted`] puts them
/// into match order in place: the indices are sorted (stable), then the permutation is applied by swapping, so
/// a port of 10,000 rules is neither moved through a merge sort's buffer nor copied into a second list.
pub struct Ranked<'a, T> {
    keys: Vec<SortKey<'a>>,
    items: Vec<T>,
}

impl<T> Default for Ranked<'_, T> {
    fn default() -> Self {
        Ranked { keys: Vec::new(), items: Vec::new() }
    }
}

impl<'a, T> Ranked<'a, T> {
    pub fn push(&mut self, key: SortKey<'a>, item: T) {
        self.keys.push(key);
        self.items.push(item);
    }

    /// Room for `n` more (a list grown by doubling holds up to twice the room it needs, and a copy while it grows).
    pub fn reserve(&mut self, n: usize) {
        self.keys.reserve_exact(n);
        self.items.reserve_exact(n);
    }

    /// The keys and items, in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = (&SortKey<'a>, &T)> {
        self.keys.iter().zip(&self.items)
    }

    /// The items in match order: by key, equal keys in the order they were pushed.
    pub fn into_sorted(self) -> Vec<T> {
        let Ranked { keys, mut items } = self;
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
        drop(keys);
        // Position i takes the item at order[i]: follow each cycle, swapping the carried item along.
        for start in 0..order.len() {
            let mut at = start;
            loop {
                let from = order[at];
                order[at] = at;
                if from == start || from == at {
                    break;
                }
                items.swap(at, from);
                at = from;
            }
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(priority: i64, complexity: i64, dsl_len: usize, name: &str) -> SortKey<'_> {
        SortKey { priority, complexity, dsl_len, name, namespace: "" }
    }

    #[test]
    fn key_order() {
        let mut v = Ranked::default();
        v.push(k(5, 100, 10, "a"), "low-prio");
        v.push(k(1, 0, 10, "z"), "high-prio-simple");
        v.push(k(1, 50000, 10, "y"), "high-prio-complex");
        v.push(k(1, 0, 30, "x"), "long-dsl");
        v.push(k(1, 0, 10, "b"), "name-b");
        v.push(k(999, -1, 27, "ft"), "default");
        let names = v.into_sorted();
        assert_eq!(names, vec!["high-prio-complex", "long-dsl", "name-b", "high-prio-simple", "low-prio", "default"]);
    }

    /// The in-place permutation gives what a stable sort of the pairs gives, for any order and with equal keys.
    #[test]
    fn same_as_a_stable_sort_of_the_pairs() {
        let names: Vec<String> = (0..40).map(|i| format!("n{}", i % 7)).collect();
        for seed in 0..200u64 {
            let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mut next = |m: u64| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 33) % m
            };
            let n = next(40) as usize;
            let pairs: Vec<(SortKey<'_>, usize)> = (0..n)
                .map(|i| (k(next(3) as i64, next(2) as i64, next(2) as usize, &names[next(7) as usize]), i))
                .collect();
            let mut expected = pairs.clone();
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            let mut r = Ranked::default();
            for (key, i) in pairs {
                r.push(key, i);
            }
            let got = r.into_sorted();
            assert_eq!(got, expected.iter().map(|p| p.1).collect::<Vec<_>>(), "seed {seed}");
        }
    }
}
