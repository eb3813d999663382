//! One `watcher` + [`Cache`] per kind the controller reads. Every change of any store bumps a
//! counter on a `watch` channel; the render loop and the leader work debounce on it.
//!
//! Watch errors (API server unreachable, RBAC, a CRD not installed yet) are logged and retried with a backoff
//! capped at 3 s ([`WatchBackoff`]); the stores keep their last content meanwhile and are relisted when the watch
//! returns, so changes made during an outage apply within seconds of the API server's return.

use super::cache::{self, Cache, Keyed};
use super::ControllerArgs;
use crate::compile::service::{Service, ServiceObject};
use crate::compile::slice::{EndpointSlice, EndpointSliceObject};
use crate::compile::Snapshot;
use crate::crd::alb2::ALB2;
use crate::crd::{Frontend, Rule};
use crate::ingress::{object::IngressObject, Ingress};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::networking::v1::IngressClass;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The store of one watched Secret and the task that fills it.
type SecretWatch = (Cache<Secret>, tokio::task::JoinHandle<()>);

/// A change after this long without acting on one is acted on almost at once ([`debounce_after`]).
const QUIET: Duration = Duration::from_millis(300);

/// How long the render loop and the Ingress sync wait for more store events before acting on one, when they last
/// acted at `last`: after [`QUIET`] without acting 10 ms (the events of one edit, e.g. a Rule and its status, arrive
/// together), while busy 100 ms (a stream of changes, as at start-up, is batched into fewer compilations).
pub fn debounce_after(last: std::time::Instant) -> Duration {
    match last.elapsed() >= QUIET {
        true => Duration::from_millis(10),
        false => Duration::from_millis(100),
    }
}

pub struct Stores {
    /// Frontends of this ALB (its namespace, label `alb2.<d>/name=<alb>`).
    pub frontends: Cache<Frontend>,
    /// Rules of this ALB (same selection).
    pub rules: Cache<Rule>,
    /// Kept as alb's own lean type ([`crate::compile::service`]): only the fields the compiler reads.
    pub services: Cache<Service>,
    /// Kept as alb's own lean type ([`crate::compile::slice`]): only the fields the compiler reads.
    pub endpoint_slices: Cache<EndpointSlice>,
    /// `kubernetes.io/tls` Secrets only (certificates of https Frontends and Rules).
    pub secrets: Cache<Secret>,
    /// Basic-auth Secrets (`config.auth.basic.secret` of this ALB's Rules and Frontends): one small watch per
    /// referenced Secret, so no other Secret of the cluster is cached.
    auth_secrets: std::sync::Mutex<BTreeMap<(String, String), SecretWatch>>,
    client: Client,
    changes: Changes,
    pub namespaces: Cache<Namespace>,
    pub ingresses: Cache<Ingress>,
    pub ingress_classes: Cache<IngressClass>,
    /// This ALB's own ALB2 object (at most one).
    pub albs: Cache<ALB2>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Kinds this controller writes back with `replace` from their cached copy (Frontend, ALB2) keep every
/// annotation: a `replace` from a trimmed copy would drop `kubectl.kubernetes.io/last-applied-configuration` from
/// the user's object. (A Rule update is written over the object read at write time, `ingress_sync.rs`.)
const KEEP_ANNOTATIONS: &[&str] = &["Frontend", "ALB2"];

/// What the caches never need: `managedFields` (often the biggest part of an object; an update without them
/// keeps the server's) and, for kinds we only read, kubectl's last-applied copy of the whole object. At 1,000
/// Ingresses with their Services and EndpointSlices this halves the controller's memory.
fn trim<K: Resource + 'static>(kind: &str, obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if !KEEP_ANNOTATIONS.contains(&kind) {
        if let Some(a) = meta.annotations.as_mut() {
            a.remove(LAST_APPLIED);
        }
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Who is woken by a change of a kind: the render loop (`policy`: what the compiler reads) and the leader's
/// Ingress sync (`ingress`: what the translation reads). An Ingress edit does not compile the policy, an
/// EndpointSlice change does not run an Ingress pass.
#[derive(Clone)]
pub struct Changes {
    pub policy: watch::Sender<u64>,
    pub ingress: watch::Sender<u64>,
}

#[derive(Clone, Copy)]
enum Wakes {
    Policy,
    Ingress,
    Both,
    /// Frontend, Rule, ALB2: both, but not the render loop when only the status changed (their CRDs have a status
    /// subresource, so `metadata.generation` moves with the spec; labels and annotations are compared too). The
    /// status writer's own condition patches then do not compile the policy again.
    BothSpec,
}

/// Whether `new` differs from the object it replaced in what the compiler reads: false for a status-only
/// change (same generation, labels, annotations and deletion mark; see [`crate::crd::spec_fingerprint`]).
/// Without a generation (or without an object before) nothing can be told: a change.
fn spec_changed(old: Option<u64>, new: &kube::core::ObjectMeta) -> bool {
    match (old, crate::crd::spec_fingerprint(new)) {
        (Some(a), Some(b)) => a != b,
        _ => true,
    }
}

impl Changes {
    fn bump(&self, wakes: Wakes) {
        let bump = |tx: &watch::Sender<u64>| tx.send_modify(|n| *n = n.wrapping_add(1));
        if matches!(wakes, Wakes::Policy | Wakes::Both | Wakes::BothSpec) {
            bump(&self.policy);
        }
        if matches!(wakes, Wakes::Ingress | Wakes::Both | Wakes::BothSpec) {
            bump(&self.ingress);
        }
    }
}

/// Spawns a watch of `api` filtered by `cfg` into a cache of `convert(object)`s; every applied change bumps the
/// channels `wakes` names.
fn reflect<W, K>(
    api: Api<W>,
    cfg: watcher::Config,
    kind: &'static str,
    changes: Changes,
    wakes: Wakes,
    convert: fn(&W) -> K,
) -> (Cache<K>, tokio::task::JoinHandle<()>)
where
    W: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K: Keyed + Send + Sync + 'static,
{
    let (reader, mut writer) = cache::cache(convert);
    let events = watcher(api, cfg).backoff(WatchBackoff::default()).modify(move |o: &mut W| trim(kind, o));
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(events);
        let mut failing = false;
        let spec_only = matches!(wakes, Wakes::BothSpec);
        while let Some(event) = stream.next().await {
            let replaced = match &event {
                Ok(e) => writer.apply(e),
                Err(_) => None,
            };
            match event {
                // A (re)list is applied to the cache atomically at InitDone: signal then.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(event) => {
                    if failing {
                        tracing::info!("watch of {kind} is back");
                        failing = false;
                    }
                    let status_only = spec_only
                        && match &event {
                            watcher::Event::Apply(o) => {
                                !spec_changed(replaced.as_deref().and_then(Keyed::spec_fingerprint), o.meta())
                            }
                            _ => false,
                        };
                    changes.bump(if status_only { Wakes::Ingress } else { wakes });
                }
                Err(e) => {
                    // Logged at every (backed-off) retry: the operator wants to see the API server is away.
                    tracing::warn!("watch of {kind} failed, retrying with backoff: {e}");
                    failing = true;
                }
            }
        }
    });
    (reader, task)
}

impl Stores {
    pub fn start(client: Client, args: &ControllerArgs, changes: Changes) -> Stores {
        let ns = args.alb_namespace.as_str();
        let mine = format!("{}={}", crate::crd::label_name(&args.domain), args.alb_name);
        let all = watcher::Config::default;
        let mut tasks = Vec::new();
        let mut go = |t| tasks.push(t);
        let c = || changes.clone();
        let (frontends, t) = reflect(
            Api::namespaced(client.clone(), ns),
            all().labels(&mine),
            "Frontend",
            c(),
            Wakes::BothSpec,
            Frontend::clone,
        );
        go(t);
        let (rules, t) =
            reflect(Api::namespaced(client.clone(), ns), all().labels(&mine), "Rule", c(), Wakes::BothSpec, Rule::of);
        go(t);
        let (services, t) =
            reflect(Api::<ServiceObject>::all(client.clone()), all(), "Service", c(), Wakes::Both, Service::of);
        go(t);
        let slices = Api::<EndpointSliceObject>::all(client.clone());
        let (endpoint_slices, t) = reflect(slices, all(), "EndpointSlice", c(), Wakes::Policy, EndpointSlice::of);
        go(t);
        let tls = all().fields("type=kubernetes.io/tls");
        let (secrets, t) = reflect(Api::all(client.clone()), tls, "Secret", c(), Wakes::Policy, Secret::clone);
        go(t);
        let (namespaces, t) =
            reflect(Api::all(client.clone()), all(), "Namespace", c(), Wakes::Ingress, Namespace::clone);
        go(t);
        let (ingresses, t) =
            reflect(Api::<IngressObject>::all(client.clone()), all(), "Ingress", c(), Wakes::Ingress, Ingress::of);
        go(t);
        let (ingress_classes, t) =
            reflect(Api::all(client.clone()), all(), "IngressClass", c(), Wakes::Ingress, IngressClass::clone);
        go(t);
        let by_name = format!("metadata.name={}", args.alb_name);
        let albs_cfg = all().fields(&by_name);
        let (albs, t) =
            reflect(Api::namespaced(client.clone(), ns), albs_cfg, "ALB2", c(), Wakes::BothSpec, ALB2::clone);
        go(t);
        Stores {
            frontends,
            rules,
            services,
            endpoint_slices,
            secrets,
            auth_secrets: Default::default(),
            client,
            changes,
            namespaces,
            ingresses,
            ingress_classes,
            albs,
            tasks,
        }
    }

    /// Waits until the stores the policy is compiled from have been listed once.
    pub async fn wait_policy_inputs(&self) {
        wait_logged("Frontend", &self.frontends).await;
        wait_logged("Rule", &self.rules).await;
        wait_logged("Service", &self.services).await;
        wait_logged("EndpointSlice", &self.endpoint_slices).await;
        wait_logged("Secret", &self.secrets).await;
        tracing::info!(
            "caches synced: {} frontends, {} rules, {} services, {} endpoint slices, {} TLS secrets",
            self.frontends.len(),
            self.rules.len(),
            self.services.len(),
            self.endpoint_slices.len(),
            self.secrets.len()
        );
    }

    /// Waits until every store the Ingress sync reads has been listed once: an empty Ingress store that was
    /// never listed must not look like "every Ingress was deleted", nor an unlisted Rule or Frontend store like
    /// "this Ingress has no Rule yet" (a restarted leader would create every Rule a second time).
    pub async fn wait_ingress_inputs(&self) {
        wait_logged("Ingress", &self.ingresses).await;
        wait_logged("Namespace", &self.namespaces).await;
        wait_logged("IngressClass", &self.ingress_classes).await;
        wait_logged("Secret", &self.secrets).await;
        wait_logged("ALB2", &self.albs).await;
        wait_logged("Frontend", &self.frontends).await;
        wait_logged("Rule", &self.rules).await;
        wait_logged("Service", &self.services).await;
        tracing::debug!(
            "ingress caches synced: {} ingresses, {} namespaces, {} ingress classes, {} TLS secrets, \
             {} frontends, {} rules, {} services",
            self.ingresses.len(),
            self.namespaces.len(),
            self.ingress_classes.len(),
            self.secrets.len(),
            self.frontends.len(),
            self.rules.len(),
            self.services.len()
        );
    }

    /// What the compiler reads, as of now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            frontends: shared(&self.frontends),
            rules: shared(&self.rules),
            services: shared(&self.services),
            endpoint_slices: shared(&self.endpoint_slices),
            secrets: shared(&self.secrets)
                .into_iter()
                .chain(self.auth_secret_objects().into_iter().map(Arc::new))
                .collect(),
            tls_fallback: None,
        }
    }

    /// Starts a watch for every basic-auth Secret the current Rules and Frontends reference and stops the
    /// watches of Secrets no longer referenced; waits (up to 2 s) for new ones to be listed so that the next
    /// compile does not report a Secret as missing only because its watch has just started.
    pub async fn sync_auth_secret_watches(&self) {
        let (rules, frontends) = (self.rules.state(), self.frontends.state());
        let wanted = auth_secret_refs(rules.iter().map(|r| &**r), frontends.iter().map(|f| &**f));
        let mut fresh = Vec::new();
        if let Ok(mut watches) = self.auth_secrets.lock() {
            watches.retain(|key, (_, task)| {
                let keep = wanted.contains(key);
                if !keep {
                    task.abort();
                }
                keep
            });
            for (ns, name) in wanted {
                if watches.contains_key(&(ns.clone(), name.clone())) {
                    continue;
                }
                let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
                let (store, task) = reflect(
                    Api::<Secret>::namespaced(self.client.clone(), &ns),
                    cfg,
                    "Secret (basic auth)",
                    self.changes.clone(),
                    Wakes::Policy,
                    Secret::clone,
                );
                fresh.push(store.clone());
                watches.insert((ns, name), (store, task));
            }
        }
        for store in fresh {
            let _ = tokio::time::timeout(Duration::from_secs(2), store.wait_until_ready()).await;
        }
    }

    fn auth_secret_objects(&self) -> Vec<Secret> {
        let Ok(watches) = self.auth_secrets.lock() else { return Vec::new() };
        watches.values().flat_map(|(store, _)| store.state().into_iter().map(|s| (*s).clone())).collect()
    }

    /// Sets `alb_controller_watched_objects{kind}` from the stores.
    pub fn count_into(&self, metrics: &crate::metrics::Metrics) {
        metrics.watched("Frontend", self.frontends.len());
        metrics.watched("Rule", self.rules.len());
        metrics.watched("Service", self.services.len());
        metrics.watched("EndpointSlice", self.endpoint_slices.len());
        metrics.watched("Secret", self.secrets.len());
        metrics.watched("Namespace", self.namespaces.len());
        metrics.watched("Ingress", self.ingresses.len());
        metrics.watched("IngressClass", self.ingress_classes.len());
        metrics.watched("ALB2", self.albs.len());
    }

    /// This ALB's ALB2 object, if it exists.
    pub fn alb(&self) -> Option<Arc<ALB2>> {
        self.albs.state().into_iter().next()
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Ok(watches) = self.auth_secrets.lock() {
            for (_, task) in watches.values() {
                task.abort();
            }
        }
    }
}

/// `ns/name` (or `name`, in the object's namespace) of `spec.config.auth.basic.secret` of Rules and Frontends.
fn auth_secret_refs<'a>(
    rules: impl IntoIterator<Item = &'a Rule>,
    frontends: impl IntoIterator<Item = &'a Frontend>,
) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut add = |ns: Option<&String>, cfg: Option<&serde_json::Value>| {
        let Some(r) = cfg.and_then(|c| c.pointer("/auth/basic/secret")).and_then(|v| v.as_str()) else { return };
        let (sns, name) = r.split_once('/').unwrap_or((ns.map(String::as_str).unwrap_or("default"), r));
        if !sns.is_empty() && !name.is_empty() {
            out.insert((sns.to_string(), name.to_string()));
        }
    };
    for r in rules {
        add(r.metadata.namespace.as_ref(), r.spec.config.as_ref());
    }
    for f in frontends {
        add(f.metadata.namespace.as_ref(), f.spec.config.as_ref());
    }
    out
}

/// The store's objects, shared with the store (no copies) and sorted by namespace/name (deterministic input for
/// the pure functions).
pub fn shared<K: Keyed>(store: &Cache<K>) -> Vec<Arc<K>> {
    let mut v: Vec<Arc<K>> = store.state();
    v.sort_by(|a, b| a.ns_name().cmp(&b.ns_name()));
    v
}

/// The store's objects, owned and sorted by namespace/name (deterministic input for the pure functions).
pub fn cloned<K: Keyed + Clone>(store: &Cache<K>) -> Vec<K> {
    shared(store).iter().map(|o| (**o).clone()).collect()
}

async fn wait_logged<K: Keyed>(kind: &str, store: &Cache<K>) {
    // Waits in 10 s steps to say, meanwhile, which list is missing.
    let started = std::time::Instant::now();
    let mut warn_at = Duration::from_secs(10);
    loop {
        let left = warn_at.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, store.wait_until_ready()).await.is_ok() {
            return;
        }
        {
            tracing::warn!(
                "still waiting for the first list of {kind} after {} s (see the watch errors)",
                warn_at.as_secs()
            );
            warn_at += Duration::from_secs(10);
        }
    }
}

/// Exponential backoff from 200 ms, doubling, capped at 3 s, with ±20% jitter. kube's default caps at 30 s,
/// which after a long API server outage delays the resync by up to half a minute: too slow for a gateway.
pub struct WatchBackoff {
    next: std::time::Duration,
}

impl WatchBackoff {
    const MIN: std::time::Duration = std::time::Duration::from_millis(200);
    const MAX: std::time::Duration = std::time::Duration::from_secs(3);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: Self::MIN }
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(base.mul_f64(rand::random_range(0.8..1.2)))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::WatchBackoff;
    use std::time::Duration;

    #[test]
    fn backoff_is_capped_and_resets() {
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = (&mut b).take(10).collect();
        assert!(delays[0] < Duration::from_millis(300));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(3600)), "{delays:?}");
        assert!(delays[9] >= Duration::from_millis(2400));
        kube::runtime::utils::Backoff::reset(&mut b);
        assert!(b.next().unwrap() < Duration::from_millis(300));
    }

    #[test]
    fn debounce_is_short_after_a_quiet_period_only() {
        use super::debounce_after;
        let now = std::time::Instant::now();
        assert_eq!(debounce_after(now), Duration::from_millis(100), "just acted: batch");
        if let Some(before) = now.checked_sub(Duration::from_secs(2)) {
            assert_eq!(debounce_after(before), Duration::from_millis(10), "quiet for 2 s: act almost at once");
        }
    }
}

#[cfg(test)]
mod lean_tests {
    use super::trim;
    use crate::compile::service::Service;
    use crate::compile::service::ServiceObject;
    use crate::compile::slice::EndpointSlice;

    /// A cached Service keeps what the compiler and the translation read: alb's own type decodes the spec
    /// fields they read (not the selector, IP family fields or status), and of the metadata name, namespace,
    /// uid and resourceVersion. The last two stay: without them the Ingress sync's input fingerprint is unknown
    /// and every pass plans every Ingress again.
    #[test]
    fn services_keep_ports_type_and_addresses_only() {
        let mut watched: ServiceObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "a", "resourceVersion": "7", "uid": "u-1", "labels": {"app": "web"},
                         "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{"manager": "kubectl"}]},
            "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"],
                     "ipFamilies": ["IPv4"], "selector": {"app": "web"}, "sessionAffinity": "None",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
            "status": {"loadBalancer": {}}
        }))
        .unwrap();
        trim("Service", &mut watched);
        let svc = Service::of(&watched);
        let m = &svc.metadata;
        assert!(crate::controller::ingress_inputs::fields_version(
            m.namespace.as_deref(),
            m.name.as_deref(),
            m.uid.as_deref(),
            m.resource_version.as_deref()
        )
        .is_some());
        assert_eq!(
            serde_json::to_value(&svc).unwrap(),
            serde_json::json!({
                "metadata": {"name": "web", "namespace": "a", "resourceVersion": "7", "uid": "u-1"},
                "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.5",
                         "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
            })
        );
    }

    /// The controller caches 10,000s of these; each is one allocation, and a few bytes more can put it in the next
    /// jemalloc size class (up to ~20 % more): Ingresses, Services and slices in an `Arc` (16 bytes of counts
    /// before the object), a Rule's content in a `Box`. A field added that crosses a class: say what it costs at
    /// the type, then move the bound.
    #[test]
    fn cached_objects_fit_their_allocator_size_classes() {
        use std::mem::size_of;
        let arc = 16;
        assert!(arc + size_of::<crate::ingress::Ingress>() <= 320, "Ingress {}", size_of::<crate::ingress::Ingress>());
        assert!(arc + size_of::<Service>() <= 192, "Service {}", size_of::<Service>());
        assert!(arc + size_of::<EndpointSlice>() <= 192, "EndpointSlice {}", size_of::<EndpointSlice>());
        assert!(size_of::<crate::crd::rule::RuleData>() <= 512, "Rule {}", size_of::<crate::crd::rule::RuleData>());
    }

    /// A cached EndpointSlice keeps its name, namespace and Service's name (out of the labels).
    #[test]
    fn slices_keep_their_service_name_only() {
        let watched: crate::compile::slice::EndpointSliceObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "a", "ownerReferences": [{"apiVersion": "v1", "kind": "Service",
                         "name": "web", "uid": "u"}], "annotations": {"x": "y"}, "resourceVersion": "3",
                         "labels": {"kubernetes.io/service-name": "web", "app": "web"}},
            "addressType": "IPv4", "endpoints": []
        }))
        .unwrap();
        let slice = EndpointSlice::of(&watched);
        assert_eq!(slice.service_name(), Some("web"));
        let name_and_ns = crate::compile::meta::NameMeta {
            name: Some("web-1".into()),
            namespace: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(slice.metadata, name_and_ns);
    }
}

#[cfg(test)]
mod auth_ref_tests {
    use super::auth_secret_refs;

    #[test]
    fn basic_auth_secret_refs_of_rules_and_frontends() {
        let rule: crate::crd::Rule = serde_json::from_value(serde_json::json!({
            "apiVersion": "crd.alauda.io/v1", "kind": "Rule", "metadata": {"name": "r", "namespace": "a"},
            "spec": {"config": {"auth": {"basic": {"secret": "users"}}}}
        }))
        .unwrap();
        let other: crate::crd::Rule = serde_json::from_value(serde_json::json!({
            "apiVersion": "crd.alauda.io/v1", "kind": "Rule", "metadata": {"name": "o", "namespace": "a"},
            "spec": {"config": {"timeout": {"proxy_read_timeout_ms": 5}}}
        }))
        .unwrap();
        let ft: crate::crd::Frontend = serde_json::from_value(serde_json::json!({
            "apiVersion": "crd.alauda.io/v1", "kind": "Frontend", "metadata": {"name": "f", "namespace": "a"},
            "spec": {"port": 80, "config": {"auth": {"basic": {"secret": "b/admins"}}}}
        }))
        .unwrap();
        let refs: Vec<(String, String)> = auth_secret_refs(&[rule, other], &[ft]).into_iter().collect();
        assert_eq!(refs, vec![("a".into(), "users".into()), ("b".into(), "admins".into())]);
    }
}

#[cfg(test)]
mod spec_change_tests {
    use super::spec_changed;
    use kube::core::ObjectMeta;

    fn meta(generation: Option<i64>, label: &str, rv: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some("ns".into()),
            name: Some("r".into()),
            generation,
            resource_version: Some(rv.into()),
            labels: Some([("l".to_string(), label.to_string())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn only_status_changes_are_unchanged() {
        assert!(spec_changed(None, &meta(Some(1), "a", "1")), "first sight is a change");
        // a status patch: new resourceVersion, same generation, labels and annotations
        assert!(!spec_changed(crate::crd::spec_fingerprint(&meta(Some(1), "a", "1")), &meta(Some(1), "a", "2")));
        assert!(
            spec_changed(crate::crd::spec_fingerprint(&meta(Some(1), "a", "2")), &meta(Some(2), "a", "3")),
            "spec change"
        );
        assert!(
            spec_changed(crate::crd::spec_fingerprint(&meta(Some(2), "a", "3")), &meta(Some(2), "b", "4")),
            "label change"
        );
        let mut annotated = meta(Some(2), "b", "5");
        annotated.annotations = Some([("alb.rule.cpaas.io/x".to_string(), "y".to_string())].into());
        assert!(spec_changed(crate::crd::spec_fingerprint(&meta(Some(2), "b", "4")), &annotated), "annotation change");
        let mut deleting = meta(Some(2), "b", "6");
        deleting.deletion_timestamp = Some(serde_json::from_value(serde_json::json!("2026-01-01T00:00:00Z")).unwrap());
        assert!(spec_changed(crate::crd::spec_fingerprint(&meta(Some(2), "b", "5")), &deleting), "deletion mark");
        // without a generation nothing can be told: always a change
        assert!(spec_changed(crate::crd::spec_fingerprint(&meta(None, "b", "6")), &meta(None, "b", "7")));
        assert!(spec_changed(crate::crd::spec_fingerprint(&meta(Some(2), "b", "6")), &meta(None, "b", "7")));
    }
}
