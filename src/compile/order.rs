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

/// Sort `(key, item)` pairs into match order (stable). The sort moves the items: keep them small (boxed).
pub fn sort<T>(entries: &mut [(SortKey<'_>, T)]) {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(priority: i64, complexity: i64, dsl_len: usize, name: &str) -> SortKey<'_> {
        SortKey { priority, complexity, dsl_len, name, namespace: "" }
    }

    #[test]
    fn key_order() {
        let mut v = vec![
            (k(5, 100, 10, "a"), "low-prio"),
            (k(1, 0, 10, "z"), "high-prio-simple"),
            (k(1, 50000, 10, "y"), "high-prio-complex"),
            (k(1, 0, 30, "x"), "long-dsl"),
            (k(1, 0, 10, "b"), "name-b"),
            (k(999, -1, 27, "ft"), "default"),
        ];
        sort(&mut v);
        let names: Vec<_> = v.iter().map(|e| e.1).collect();
        assert_eq!(names, vec!["high-prio-complex", "long-dsl", "name-b", "high-prio-simple", "low-prio", "default"]);
    }
}
