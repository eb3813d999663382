//! The controller's cache of one watched kind: the objects of a `watcher` stream by namespace and name.
//!
//! In place of kube-runtime's reflector `Store`, which files every object under an `ObjectRef` key: 96 bytes
//! inline plus its own copies of the name, namespace, uid and resourceVersion, ~250 bytes per object with the
//! table's spare room. This cache files the object alone (one pointer per slot) and finds it by hashing the
//! object's own namespace and name; at 10,000 Ingresses (~40,000 cached objects) that is ~10 MB less heap.
//!
//! A (re)list is built aside and swapped in whole at `InitDone`, so readers never see half a list; the cache
//! is ready from the first swap on.
//!
//! What is filed is made of the watched object by the writer's conversion: a copy of it for most kinds, alb's
//! lean types for Rules, Services and EndpointSlices (`crd/rule.rs`, `compile/service.rs`, `compile/slice.rs`).

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use kube::runtime::watcher::Event;
use kube::Resource;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// What a cache files its objects by.
pub trait Keyed {
    /// Namespace ("" for cluster-scoped kinds) and name.
    fn ns_name(&self) -> (&str, &str);
    /// [`crate::crd::spec_fingerprint`] of the object's metadata, for the kinds whose status-only changes are
    /// told apart (Frontend, Rule, ALB2).
    fn spec_fingerprint(&self) -> Option<u64> {
        None
    }
    /// uid and resourceVersion (the Ingress sync waits for its writes to show), for the kinds that keep them.
    fn uid_rv(&self) -> (Option<&str>, Option<&str>) {
        (None, None)
    }
}

impl<K: Resource> Keyed for K {
    fn ns_name(&self) -> (&str, &str) {
        let m = self.meta();
        (m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or(""))
    }

    fn spec_fingerprint(&self) -> Option<u64> {
        crate::crd::spec_fingerprint(self.meta())
    }

    fn uid_rv(&self) -> (Option<&str>, Option<&str>) {
        (self.meta().uid.as_deref(), self.meta().resource_version.as_deref())
    }
}

impl Keyed for crate::ingress::Ingress {
    fn ns_name(&self) -> (&str, &str) {
        self.ns_name()
    }

    fn uid_rv(&self) -> (Option<&str>, Option<&str>) {
        (self.metadata.uid.as_deref(), self.metadata.resource_version.as_deref())
    }
}

impl Keyed for crate::crd::Rule {
    fn ns_name(&self) -> (&str, &str) {
        use crate::compile::meta::Meta;
        (self.metadata.ns(), self.metadata.name())
    }

    fn spec_fingerprint(&self) -> Option<u64> {
        self.metadata.fingerprint()
    }

    fn uid_rv(&self) -> (Option<&str>, Option<&str>) {
        (self.metadata.uid.as_deref(), self.metadata.resource_version.as_deref())
    }
}

impl Keyed for crate::compile::service::Service {
    fn ns_name(&self) -> (&str, &str) {
        self.metadata.ns_name()
    }
}

impl Keyed for crate::compile::slice::EndpointSlice {
    fn ns_name(&self) -> (&str, &str) {
        self.metadata.ns_name()
    }
}

/// What the readers hold: cheap to clone, shared with the [`Writer`].
pub struct Cache<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache { shared: self.shared.clone() }
    }
}

struct Shared<K> {
    table: RwLock<HashTable<Arc<K>>>,
    hasher: RandomState,
    ready: watch::Sender<bool>,
}

/// Applies the watcher events of `W` objects to its [`Cache`] of `K`s.
pub struct Writer<W, K> {
    cache: Cache<K>,
    /// What is filed for a watched object.
    convert: fn(&W) -> K,
    /// The list in progress (between `Init` and `InitDone`).
    relist: Option<HashTable<Arc<K>>>,
}

/// A new empty cache (not ready) and its writer, which files `convert(o)` for each watched `o`.
pub fn cache<W, K: Keyed>(convert: fn(&W) -> K) -> (Cache<K>, Writer<W, K>) {
    let (ready, _) = watch::channel(false);
    let shared = Arc::new(Shared { table: RwLock::new(HashTable::new()), hasher: RandomState::default(), ready });
    let cache = Cache { shared };
    (cache.clone(), Writer { cache, convert, relist: None })
}

impl<K: Keyed> Shared<K> {
    fn hash(&self, ns: &str, name: &str) -> u64 {
        self.hasher.hash_one((ns, name))
    }

    /// Files `obj`; returns the object of the same namespace and name it replaces.
    fn put(&self, table: &mut HashTable<Arc<K>>, obj: Arc<K>) -> Option<Arc<K>> {
        let (ns, name) = obj.ns_name();
        let h = self.hash(ns, name);
        let found = table.find_mut(h, |o| o.ns_name() == (ns, name));
        match found {
            Some(slot) => Some(std::mem::replace(slot, obj)),
            None => {
                table.insert_unique(h, obj, |o| {
                    let (ns, name) = o.ns_name();
                    self.hash(ns, name)
                });
                None
            }
        }
    }
}

impl<K: Keyed> Cache<K> {
    /// Every object, in no particular order.
    pub fn state(&self) -> Vec<Arc<K>> {
        match self.shared.table.read() {
            Ok(t) => t.iter().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
        }
    }

    pub fn len(&self) -> usize {
        match self.shared.table.read() {
            Ok(t) => t.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    /// The object `ns/name` (`ns` is "" for cluster-scoped kinds).
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        let h = self.shared.hash(ns, name);
        let find = |t: &HashTable<Arc<K>>| t.find(h, |o| o.ns_name() == (ns, name)).cloned();
        match self.shared.table.read() {
            Ok(t) => find(&t),
            Err(poisoned) => find(&poisoned.into_inner()),
        }
    }

    /// Returns once the first list has been applied. Any number of tasks may wait at once.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.shared.ready.subscribe();
        // the sender lives as long as the cache: the wait ends only by the cache becoming ready
        let _ = rx.wait_for(|ready| *ready).await;
    }
}

impl<W: Keyed, K: Keyed> Writer<W, K> {
    /// Applies one event; for an `Apply`, returns the object it replaced (the watch task tells a status-only
    /// change by it). What is filed is made anew of the event's object (a copy, or a lean conversion): serde
    /// grows a decoded list by doubling, a copy has exactly the room its items take.
    pub fn apply(&mut self, event: &Event<W>) -> Option<Arc<K>> {
        let shared = &self.cache.shared;
        let convert = self.convert;
        match event {
            Event::Init => self.relist = Some(HashTable::new()),
            Event::InitApply(o) => {
                let relist = self.relist.get_or_insert_with(HashTable::new);
                shared.put(relist, Arc::new(convert(o)));
            }
            Event::InitDone => {
                // Without a list begun (no Init: not something the watcher sends) the content stays: an empty
                // swap would drop every object and, with them, every route compiled from them.
                if let Some(fresh) = self.relist.take() {
                    match shared.table.write() {
                        Ok(mut t) => *t = fresh,
                        Err(poisoned) => *poisoned.into_inner() = fresh,
                    }
                }
                shared.ready.send_replace(true);
            }
            Event::Apply(o) => return self.write(|t| shared.put(t, Arc::new(convert(o)))),
            Event::Delete(o) => {
                let (ns, name) = o.ns_name();
                let h = shared.hash(ns, name);
                self.write(|t| {
                    if let Ok(entry) = t.find_entry(h, |x| x.ns_name() == (ns, name)) {
                        entry.remove();
                    }
                });
            }
        }
        None
    }

    fn write<T>(&self, f: impl FnOnce(&mut HashTable<Arc<K>>) -> T) -> T {
        match self.cache.shared.table.write() {
            Ok(mut t) => f(&mut t),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::core::ObjectMeta;

    fn cm(ns: &str, name: &str, v: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta { namespace: Some(ns.into()), name: Some(name.into()), ..Default::default() },
            data: Some([("v".to_string(), v.to_string())].into()),
            ..Default::default()
        }
    }

    fn value(o: &ConfigMap) -> &str {
        o.data.as_ref().and_then(|d| d.get("v")).map(String::as_str).unwrap_or("")
    }

    #[test]
    fn applies_lists_updates_and_deletes() {
        let (c, mut w) = cache::<ConfigMap, ConfigMap>(ConfigMap::clone);
        assert!(!*c.shared.ready.borrow());
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(cm("a", "x", "1")));
        w.apply(&Event::InitApply(cm("b", "x", "1")));
        assert_eq!(c.len(), 0, "a list in progress is not visible");
        w.apply(&Event::InitDone);
        assert!(*c.shared.ready.borrow());
        assert_eq!(c.len(), 2);
        let replaced = w.apply(&Event::Apply(cm("a", "x", "2")));
        assert_eq!(replaced.map(|o| value(&o).to_string()), Some("1".into()), "returns what it replaced");
        assert_eq!(c.len(), 2, "an update replaces");
        assert_eq!(c.get("a", "x").map(|o| value(&o).to_string()), Some("2".into()));
        assert_eq!(c.get("b", "x").map(|o| value(&o).to_string()), Some("1".into()));
        assert!(c.get("a", "y").is_none() && c.get("", "x").is_none());
        assert!(w.apply(&Event::Apply(cm("c", "new", "1"))).is_none());
        w.apply(&Event::Delete(cm("c", "new", "1")));
        w.apply(&Event::Delete(cm("a", "x", "2")));
        assert!(c.get("a", "x").is_none());
        assert_eq!(c.len(), 1);
        w.apply(&Event::Delete(cm("a", "gone", "")));
        assert_eq!(c.len(), 1, "deleting an unknown object is a no-op");
    }

    #[test]
    fn a_relist_replaces_everything_at_init_done() {
        let (c, mut w) = cache::<ConfigMap, ConfigMap>(ConfigMap::clone);
        w.apply(&Event::Init);
        for i in 0..100 {
            w.apply(&Event::InitApply(cm("ns", &format!("o{i}"), "1")));
        }
        w.apply(&Event::InitDone);
        assert_eq!(c.len(), 100);
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(cm("ns", "o5", "2")));
        assert_eq!(c.len(), 100, "the old list stays until the new one is done");
        w.apply(&Event::InitDone);
        let all = c.state();
        assert_eq!(all.len(), 1);
        assert_eq!(value(&all[0]), "2");
        w.apply(&Event::InitDone);
        assert_eq!(c.len(), 1, "an InitDone without a list begun changes nothing");
        w.apply(&Event::Init);
        w.apply(&Event::InitDone);
        assert_eq!(c.len(), 0, "an empty list empties the cache");
    }

    #[tokio::test]
    async fn several_waiters_are_woken() {
        let (c, mut w) = cache::<ConfigMap, ConfigMap>(ConfigMap::clone);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.wait_until_ready().await })
            })
            .collect();
        tokio::task::yield_now().await;
        w.apply(&Event::Init);
        w.apply(&Event::InitDone);
        for t in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), t).await.unwrap().unwrap();
        }
        assert_eq!(c.len(), 0);
        c.wait_until_ready().await;
    }
}
