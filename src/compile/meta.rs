//! The metadata alb keeps of the objects it caches by the ten thousand: [`NameMeta`] for the ones it only reads
//! by name (Services, EndpointSlices; the API's field names, so the code that reads `metadata.name` reads it the
//! same way, but 96 bytes instead of k8s-openapi's `ObjectMeta`, 360 bytes before any of its strings), [`Pairs`]
//! and [`LeanMeta`] for the Rules and Ingresses (`crd/rule.rs`, `ingress/object.rs`), and the [`Meta`] view the compiler and the
//! Ingress planner read any object's metadata through.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NameMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Services only (the Ingress sync's input fingerprint, [`crate::controller::ingress_inputs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Services only, as `uid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

impl NameMeta {
    /// Namespace ("" when unset) and name.
    pub fn ns_name(&self) -> (&str, &str) {
        (self.namespace.as_deref().unwrap_or(""), self.name.as_deref().unwrap_or(""))
    }

    /// Name and namespace of `meta`.
    pub fn names(meta: &ObjectMeta) -> NameMeta {
        NameMeta { name: meta.name.clone(), namespace: meta.namespace.clone(), ..Default::default() }
    }

    /// Name, namespace, uid and resourceVersion of `meta`.
    pub fn versioned(meta: &ObjectMeta) -> NameMeta {
        NameMeta { uid: meta.uid.clone(), resource_version: meta.resource_version.clone(), ..NameMeta::names(meta) }
    }
}

/// What the compiler and the Ingress planner read of any object's metadata: Frontends, Secrets and ALB2s keep
/// k8s-openapi's `ObjectMeta`, Rules and Ingresses the lean [`LeanMeta`].
pub trait Meta {
    /// Namespace ("" when unset).
    fn ns(&self) -> &str;
    /// Name ("" when unset).
    fn name(&self) -> &str;
    fn label(&self, key: &str) -> Option<&str>;
    fn annotation(&self, key: &str) -> Option<&str>;

    /// Namespace and name, owned (keys of the writes the Ingress sync plans).
    fn ns_name_owned(&self) -> (String, String) {
        (self.ns().to_string(), self.name().to_string())
    }
}

impl Meta for ObjectMeta {
    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key).map(String::as_str)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// Labels or annotations in two allocations instead of a `BTreeMap`'s node (11 slots, ~540 bytes, even for two
/// entries) plus two `String`s per entry: the keys and values one after the other in `text`, and where each ends.
/// In key order (made from a `BTreeMap`); lookups scan, which for the few entries of an object is as fast.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Pairs {
    text: Box<str>,
    /// End of key i at `ends[2 * i]`, of its value at `ends[2 * i + 1]`.
    ends: Box<[u32]>,
}

impl Pairs {
    pub fn of(map: Option<&BTreeMap<String, String>>) -> Pairs {
        let map = match map {
            Some(m) if !m.is_empty() => m,
            _ => return Pairs::default(),
        };
        let mut text = String::with_capacity(map.iter().map(|(k, v)| k.len() + v.len()).sum());
        let mut ends = Vec::with_capacity(map.len() * 2);
        for (k, v) in map {
            for s in [k, v] {
                text.push_str(s);
                // an object's metadata is far below 4 GiB (the API server's limit is 1.5 MiB)
                ends.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
            }
        }
        Pairs { text: text.into_boxed_str(), ends: ends.into_boxed_slice() }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let at = |i: usize| self.ends.get(i).map_or(0, |e| *e as usize);
        (0..self.ends.len() / 2).map(move |i| {
            let (start, mid, end) = (if i == 0 { 0 } else { at(2 * i - 1) }, at(2 * i), at(2 * i + 1));
            (self.text.get(start..mid).unwrap_or(""), self.text.get(mid..end).unwrap_or(""))
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// What alb reads of the metadata of the Rules and Ingresses it caches. k8s-openapi's `ObjectMeta` is 360 bytes
/// before its strings, and its label and annotation maps take ~540 bytes each even for two entries (a Rule made
/// from an Ingress has nine).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeanMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub labels: Pairs,
    pub annotations: Pairs,
    /// [`owners_hash`] of the ownerReferences: the Ingress planner compares a Rule's, nothing reads them.
    pub owners: u64,
    /// `deletionTimestamp` is set.
    pub deleting: bool,
}

/// A hash of ownerReferences (none and an empty list hash the same).
pub fn owners_hash(refs: Option<&[OwnerReference]>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in refs.unwrap_or(&[]) {
        (&r.api_version, &r.kind, &r.name, &r.uid, r.controller, r.block_owner_deletion).hash(&mut h);
    }
    h.finish()
}

impl LeanMeta {
    pub fn of(m: &ObjectMeta) -> LeanMeta {
        LeanMeta {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            generation: m.generation,
            labels: Pairs::of(m.labels.as_ref()),
            annotations: Pairs::of(m.annotations.as_ref()),
            owners: owners_hash(m.owner_references.as_deref()),
            deleting: m.deletion_timestamp.is_some(),
        }
    }

    /// [`crate::crd::spec_fingerprint`] of the object this was made of.
    pub fn fingerprint(&self) -> Option<u64> {
        crate::crd::fingerprint_of(self.generation, self.labels.iter(), self.annotations.iter(), self.deleting)
    }
}

impl Meta for LeanMeta {
    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key)
    }
}

/// Test fixtures edit the labels of the objects they compile.
#[cfg(test)]
impl Pairs {
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    /// As the API's `Option<BTreeMap>` (None when empty).
    pub fn to_map(&self) -> Option<BTreeMap<String, String>> {
        (!self.is_empty()).then(|| self.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    pub fn from_map(map: BTreeMap<String, String>) -> Pairs {
        Pairs::of(Some(&map))
    }

    pub fn insert(&mut self, key: &str, value: &str) {
        let mut m = self.to_map().unwrap_or_default();
        m.insert(key.into(), value.into());
        *self = Pairs::from_map(m);
    }

    pub fn remove(&mut self, key: &str) {
        let mut m = self.to_map().unwrap_or_default();
        m.remove(key);
        *self = Pairs::from_map(m);
    }
}

impl std::fmt::Debug for Pairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_keep_keys_and_values_in_order() {
        let map: BTreeMap<String, String> = [("b", "2"), ("a", ""), ("", "empty key"), ("c\0d", "nul\0inside")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let p = Pairs::of(Some(&map));
        assert_eq!(p.len(), 4);
        assert_eq!(p.get("a"), Some(""));
        assert_eq!(p.get("b"), Some("2"));
        assert_eq!(p.get(""), Some("empty key"));
        assert_eq!(p.get("c\0d"), Some("nul\0inside"));
        assert_eq!(p.get("d"), None);
        assert_eq!(p.to_map(), Some(map.clone()));
        assert!(p.iter().map(|(k, _)| k).eq(map.keys().map(String::as_str)));
        assert_eq!(Pairs::of(None), Pairs::of(Some(&BTreeMap::new())));
        assert!(Pairs::of(None).is_empty() && Pairs::of(None).to_map().is_none() && Pairs::default().get("").is_none());
    }
}
