//! The metadata alb keeps of the objects it caches by the ten thousand: [`NameMeta`] for the ones it only reads
//! by name (Services, EndpointSlices; the API's field names, so the code that reads `metadata.name` reads it the
//! same way, but 96 bytes instead of k8s-openapi's `ObjectMeta`, 360 bytes before any of its strings), [`Pairs`]
//! and [`LeanMeta`] for the Rules and Ingresses (`crd/rule.rs`, `ingress/object.rs`), and the [`Meta`] view the compiler and the
//! Ingress planner read any object's metadata through.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, Weak};

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

/// Labels or annotations: the values in two allocations (their text one after the other, and where each ends)
/// and the keys shared with every other object that has the same keys ([`Keys::intern`]): the Rules alb makes
/// from Ingresses carry the same six labels and two annotations, ~220 bytes of keys each. A `BTreeMap` took a node
/// of 11 slots (~540 bytes) even for two entries, plus two `String`s per entry.
/// In key order (made from a `BTreeMap`); lookups scan, which for the few entries of an object is as fast.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Pairs {
    /// None when there are no entries.
    keys: Option<Arc<Keys>>,
    values: Box<str>,
    /// End of value i in `values`.
    ends: Box<[u32]>,
}

/// The keys of a [`Pairs`], one after the other in `text`; key i ends at `ends[i]`.
#[derive(PartialEq, Eq, Hash)]
struct Keys {
    text: Box<str>,
    ends: Box<[u32]>,
}

/// The key lists in use, by a hash of their content. Lists no object holds any more are dropped whenever the
/// table has doubled since it was last cleaned, so it stays within twice the lists in use.
struct Interned {
    lists: HashMap<u64, Vec<Weak<Keys>>>,
    /// Lists filed when the table was last cleaned.
    cleaned_at: usize,
    filed: usize,
}

static INTERNED: LazyLock<Mutex<Interned>> =
    LazyLock::new(|| Mutex::new(Interned { lists: HashMap::new(), cleaned_at: 0, filed: 0 }));

impl Keys {
    /// The one `Keys` with this content that is in use, or a new one.
    fn intern(keys: Keys) -> Arc<Keys> {
        let hash = crate::hashing::hash_of(&keys);
        // (a poisoned lock only means another thread panicked while holding it: the table is still valid)
        let mut t = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
        let same = t.lists.get(&hash).into_iter().flatten().filter_map(Weak::upgrade).find(|k| **k == keys);
        if let Some(k) = same {
            return k;
        }
        let k = Arc::new(keys);
        t.lists.entry(hash).or_default().push(Arc::downgrade(&k));
        t.filed += 1;
        if t.filed >= 2 * t.cleaned_at.max(64) {
            t.lists.retain(|_, v| {
                v.retain(|w| w.strong_count() > 0);
                !v.is_empty()
            });
            t.filed = t.lists.values().map(Vec::len).sum();
            t.cleaned_at = t.filed;
        }
        k
    }

    fn get(&self, i: usize) -> &str {
        text_at(&self.text, &self.ends, i)
    }
}

/// Item `i` of strings stored one after the other in `text`, item i ending at `ends[i]`.
pub(crate) fn text_at<'a>(text: &'a str, ends: &[u32], i: usize) -> &'a str {
    let at = |i: usize| ends.get(i).map_or(0, |e| *e as usize);
    let start = if i == 0 { 0 } else { at(i - 1) };
    text.get(start..at(i)).unwrap_or("")
}

/// `items` one after the other, and where each ends.
pub(crate) fn packed<'a>(items: impl Iterator<Item = &'a str> + Clone) -> (Box<str>, Box<[u32]>) {
    let mut text = String::with_capacity(items.clone().map(|s| s.len()).sum());
    let ends: Vec<u32> = items
        .map(|s| {
            text.push_str(s);
            // an object's metadata is far below 4 GiB (the API server's limit is 1.5 MiB)
            u32::try_from(text.len()).unwrap_or(u32::MAX)
        })
        .collect();
    (text.into_boxed_str(), ends.into_boxed_slice())
}

/// A value the caches hold as its JSON text: one allocation, where the value itself is often many small ones
/// (a Rule's dslx of a host and a path ~100 bytes against ~400 in ~12 allocations, an Ingress's status of one
/// address and port ~60 against ~170 in five). For what is read rarely: [`JsonText::get`] decodes it. Reads and
/// writes as the value; two are equal when their values are (the text is only ever written by [`JsonText::new`]).
pub struct JsonText<T>(Box<str>, std::marker::PhantomData<fn() -> T>);

impl<T: Serialize + serde::de::DeserializeOwned> JsonText<T> {
    pub fn new(value: &T) -> JsonText<T> {
        // Serialising alb's own and the API's types does not fail.
        JsonText(serde_json::to_string(value).unwrap_or_default().into_boxed_str(), std::marker::PhantomData)
    }

    /// The value. (The text is this type's own: an error would be a bug here; callers treat it as no value.)
    pub fn get(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl<T: Serialize + serde::de::DeserializeOwned> From<T> for JsonText<T> {
    fn from(value: T) -> JsonText<T> {
        JsonText::new(&value)
    }
}

impl<T> Clone for JsonText<T> {
    fn clone(&self) -> JsonText<T> {
        JsonText(self.0.clone(), std::marker::PhantomData)
    }
}

impl<T> PartialEq for JsonText<T> {
    fn eq(&self, other: &JsonText<T>) -> bool {
        self.0 == other.0
    }
}

impl<T> Eq for JsonText<T> {}

impl<T> std::fmt::Debug for JsonText<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<T: Serialize + serde::de::DeserializeOwned> Serialize for JsonText<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().map_err(serde::ser::Error::custom)?.serialize(s)
    }
}

impl<'de, T: Serialize + serde::de::DeserializeOwned> Deserialize<'de> for JsonText<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<JsonText<T>, D::Error> {
        T::deserialize(d).map(JsonText::from)
    }
}

impl Pairs {
    pub fn of(map: Option<&BTreeMap<String, String>>) -> Pairs {
        let map = match map {
            Some(m) if !m.is_empty() => m,
            _ => return Pairs::default(),
        };
        let (text, ends) = packed(map.keys().map(String::as_str));
        let (values, value_ends) = packed(map.values().map(String::as_str));
        Pairs { keys: Some(Keys::intern(Keys { text, ends })), values, ends: value_ends }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let keys = self.keys.as_deref();
        (0..self.ends.len()).map(move |i| (keys.map_or("", |k| k.get(i)), text_at(&self.values, &self.ends, i)))
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
        self.ends.len()
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

    /// Objects with the same keys share one copy of them; other keys, or keys in use no more, are not mixed up.
    #[test]
    fn equal_keys_are_shared() {
        let of = |pairs: &[(&str, &str)]| {
            let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Pairs::of(Some(&map))
        };
        let a = of(&[("alb2.cpaas.io/name", "a"), ("alb2.cpaas.io/frontend", "f1")]);
        let b = of(&[("alb2.cpaas.io/name", "b"), ("alb2.cpaas.io/frontend", "f2")]);
        let (ka, kb) = (a.keys.as_ref().unwrap(), b.keys.as_ref().unwrap());
        assert!(Arc::ptr_eq(ka, kb), "one copy of the keys");
        assert_eq!((a.get("alb2.cpaas.io/name"), b.get("alb2.cpaas.io/name")), (Some("a"), Some("b")));
        assert_ne!(a, b);
        // keys split differently are other keys
        let c = of(&[("alb2.cpaas.io/nam", "e"), ("ealb2.cpaas.io/frontend", "f1")]);
        assert!(!Arc::ptr_eq(ka, c.keys.as_ref().unwrap()));
        assert_eq!(c.get("alb2.cpaas.io/nam"), Some("e"));
        // many key lists that come and go: the table is cleaned, and what is in use stays shared
        for i in 0..1000 {
            let gone = of(&[(&format!("k{i}"), "v")]);
            assert_eq!(gone.get(&format!("k{i}")), Some("v"));
        }
        let again = of(&[("alb2.cpaas.io/frontend", "x"), ("alb2.cpaas.io/name", "y")]);
        assert!(Arc::ptr_eq(ka, again.keys.as_ref().unwrap()));
        let t = INTERNED.lock().unwrap();
        let filed: usize = t.lists.values().map(Vec::len).sum();
        assert!(filed < 1000, "{filed} key lists filed");
    }
}
