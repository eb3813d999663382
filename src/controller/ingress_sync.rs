//! Leader only: Ingress → Frontend/Rule objects (controlplane.md §2.4) with the pure translation of
//! `crate::ingress`, Events (`Synced`, one Warning per [`IngressWarning`]) and `status.loadBalancer` (§2.5).
//!
//! Every pass reads the stores, so it is level-based: a pass after any change (debounced) and every
//! `--resync-period` brings the API server to what the Ingresses need. Writes not yet seen by the stores
//! hold the next pass back (up to [`CATCH_UP`]), so a stale cache never makes us create a Rule twice.

use super::cache::{Cache, Keyed};
use super::events::{EventLog, EventType, Note};
use super::ingress_inputs::Inputs;
use super::stores::{cloned, shared, Stores};
use super::ControllerArgs;
use crate::compile::meta::{Meta, Pairs};
use crate::crd::alb2::ALB2;
use crate::crd::{self, Frontend, Rule, RuleObject};
use crate::hashing::hash_of;
use crate::ingress::translate::{annotation_path_index, annotation_rule_index, SOURCE_TYPE};
use crate::ingress::{self, AlbIngressConfig, IngressWarning, IngressWorld, Plan, SslStrategy};
use crate::ingress::{object::IngressObject, Ingress};
use futures::StreamExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a pass waits for the stores to show our own writes.
const CATCH_UP: Duration = Duration::from_secs(3);
/// Attempts at a free Rule name when a deterministic name is taken.
const NAME_ATTEMPTS: u32 = 5;
/// Ingresses whose writes (Frontends, Rules, Events, status) are in flight at once.
const WRITE_CONCURRENCY: usize = 16;

/// What one Ingress's writes report besides the plan: its warnings, and its ports for `status.loadBalancer`.
struct Reports {
    warnings: Vec<IngressWarning>,
    ports: Vec<(u16, &'static str)>,
    /// The Ingress's [`Inputs`] fingerprint when it was planned (0: none).
    fingerprint: u64,
}

type WriteFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + 'a>>;

/// One planned Ingress: the object (held by its write only), what to report and its plan.
type Work = (Arc<Ingress>, Reports, PackedPlan);

/// An Ingress as the sync remembers it from pass to pass: a hash of its namespace and name (10,000 Ingresses
/// are remembered by 8 bytes each, not by two strings).
type IngressKey = u64;

fn ingress_key(ns: &str, name: &str) -> IngressKey {
    hash_of((ns, name))
}

/// A [`Plan`] waiting for its writes, as its JSON: at start-up every Ingress's plan (its Rules to create, as API
/// objects: ~2.6 KB each with their label and annotation maps) waits at once, and as JSON each is half that.
struct PackedPlan(Box<[u8]>);

impl PackedPlan {
    fn of(plan: &Plan) -> Result<PackedPlan, serde_json::Error> {
        serde_json::to_vec(plan).map(|v| PackedPlan(v.into_boxed_slice()))
    }

    fn unpack(&self) -> Result<Plan, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }
}

/// The planned Ingresses' write futures, made one at a time. (An iterator type of its own, boxed futures: with a
/// closure and its unboxed future in the stream's type the spawned task fails the higher-ranked `Send` check.)
struct Writes<'a> {
    sync: &'a IngressSync,
    cfg: &'a AlbIngressConfig,
    addresses: &'a [String],
    work: std::vec::IntoIter<Work>,
}

impl<'a> Iterator for Writes<'a> {
    type Item = WriteFuture<'a>;
    fn next(&mut self) -> Option<WriteFuture<'a>> {
        let (ing, reports, packed) = self.work.next()?;
        // (made by PackedPlan::of from a Plan: reads back; an error would leave the Ingress unsynced, and logged)
        let (ns, name) = ingress_id(&ing);
        let plan = packed.unpack().map_err(|e| format!("ingress {ns}/{name}: planned writes lost: {e}"));
        Some(Box::pin(self.sync.sync_one(self.cfg, self.addresses, ing, reports, plan)))
    }
}

/// What was reported for one Ingress: the generation `Synced` was sent for, and its warnings.
type Reported = (Option<i64>, Vec<IngressWarning>);

/// The result of one Ingress's writes, folded into the [`IngressSync`] after the concurrent stage.
/// (At start-up all 10,000 wait at once: kept small.)
struct Outcome {
    key: IngressKey,
    /// The Ingress's [`Inputs`] fingerprint when it was planned.
    fingerprint: u64,
    written: Vec<Written>,
    /// Frontends were created: the Rules follow in the next pass.
    deferred: bool,
    reported: Option<Reported>,
    error: Option<Box<SyncError>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{verb} {kind} {ns}/{name}: {source}")]
    Api { verb: &'static str, kind: &'static str, ns: String, name: String, source: kube::Error },
    #[error("no free name for a Rule of Frontend {0} after {NAME_ATTEMPTS} attempts")]
    NoName(String),
    #[error("{0}")]
    Internal(String),
}

/// A write the stores must show before the next pass. At start-up every Rule creation (10,000) waits at once:
/// the object is named in one allocation, its uid or resourceVersion by a hash.
#[derive(Debug, Clone)]
struct Written {
    kind: &'static str,
    /// `namespace/name`.
    ns_name: Box<str>,
    /// Where the name starts in `ns_name`.
    name_at: usize,
    shows: Shows,
}

/// What the store shows once it caught up with a [`Written`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shows {
    /// The object of this uid (a [`hash_of`] it).
    Created(u64),
    /// No object, or one of another resourceVersion than this one (a [`hash_of`] it).
    Updated(u64),
    /// No object.
    Deleted,
}

impl Written {
    fn new(kind: &'static str, ns: &str, name: &str, shows: Shows) -> Written {
        Written { kind, ns_name: format!("{ns}/{name}").into(), name_at: ns.len() + 1, shows }
    }

    fn created(kind: &'static str, ns: &str, name: &str, uid: Option<&str>) -> Written {
        Written::new(kind, ns, name, Shows::Created(hash_of(uid.unwrap_or_default())))
    }

    fn updated(kind: &'static str, ns: &str, name: &str, old_rv: Option<&str>) -> Written {
        Written::new(kind, ns, name, Shows::Updated(hash_of(old_rv.unwrap_or_default())))
    }

    fn ns(&self) -> &str {
        self.ns_name.get(..self.name_at.saturating_sub(1)).unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.ns_name.get(self.name_at..).unwrap_or_default()
    }
}

fn seen<K: Keyed>(store: &Cache<K>, w: &Written) -> bool {
    let obj = store.get(w.ns(), w.name());
    match w.shows {
        Shows::Created(uid) => obj.is_some_and(|o| hash_of(o.uid_rv().0.unwrap_or_default()) == uid),
        Shows::Updated(rv) => obj.is_none_or(|o| hash_of(o.uid_rv().1.unwrap_or_default()) != rv),
        Shows::Deleted => obj.is_none(),
    }
}

/// This ALB's Ingress settings from its ALB2 (`spec.config`, labels) — controlplane.md §1.3, §2.7.
pub fn alb_config(args: &ControllerArgs, alb: &ALB2) -> AlbIngressConfig {
    let config = alb.spec.config.as_ref();
    let get = |k: &str| config.and_then(|c| c.get(k));
    let port = |k: &str, default: u16| {
        get(k)
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(default)
    };
    let text = |k: &str| get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(String::from);
    let mut projects: BTreeSet<String> = get("projects")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    // The operator mirrors config.projects to `project.<d>/<p>` labels; read both.
    projects.extend(ingress::claim::label_projects(&args.domain, alb.metadata.labels.as_ref()));
    let role = alb.metadata.labels.as_ref().and_then(|l| l.get(&format!("{}/role", args.domain)));
    AlbIngressConfig {
        alb_name: args.alb_name.clone(),
        alb_namespace: args.alb_namespace.clone(),
        domain: args.domain.clone(),
        alb_uid: alb.metadata.uid.clone(),
        http_port: port("ingressHTTPPort", 80),
        https_port: port("ingressHTTPSPort", 443),
        ssl_strategy: text("defaultSSLStrategy").and_then(|s| s.parse().ok()).unwrap_or(SslStrategy::Never),
        default_ssl_cert: text("defaultSSLCert"),
        projects: projects.into_iter().collect(),
        port_mode: role.map(String::as_str) == Some("port"),
    }
}

/// Addresses for Ingress status: `spec.address` (comma list) and the operator's `status.detail.address`.
pub fn alb_addresses(alb: &ALB2) -> Vec<String> {
    let mut out: Vec<String> = alb
        .spec
        .address
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let detail = alb.status.as_ref().and_then(|s| s.detail.as_ref()).and_then(|d| d.get("address"));
    for key in ["ipv4", "ipv6", "host"] {
        for a in detail.and_then(|d| d.get(key)).and_then(Value::as_array).into_iter().flatten() {
            if let Some(a) = a.as_str().map(str::trim).filter(|a| !a.is_empty()) {
                if !out.iter().any(|o| o == a) {
                    out.push(a.to_string());
                }
            }
        }
    }
    out
}

/// The Ingress a generated Rule or Frontend came from (`spec.source`, else a Rule's source labels).
fn source_of<'a>(
    keys: &SourceLabels,
    source: Option<crd::SourceRef<'a>>,
    labels: Option<&'a Pairs>,
) -> Option<(&'a str, &'a str)> {
    if let Some(s) = source.filter(|s| !s.kind.is_empty()) {
        return (s.kind == SOURCE_TYPE).then_some((s.namespace, s.name));
    }
    let l = labels?;
    (l.get(&keys.kind)? == SOURCE_TYPE).then(|| Some((l.get(&keys.ns)?, l.get(&keys.name)?))).flatten()
}

/// The Ingresses a pass claimed, by [`IngressKey`]. (Two Ingresses whose keys collide, one in 2^64 for a pair,
/// would count as both claimed when one is: the other's Rules would stay until one of them is gone.)
#[derive(Default)]
struct Claimed(HashSet<IngressKey>);

impl Claimed {
    fn insert(&mut self, (ns, name): (&str, &str)) {
        self.0.insert(ingress_key(ns, name));
    }

    fn contains(&self, ns: &str, name: &str) -> bool {
        self.0.contains(&ingress_key(ns, name))
    }

    fn contains_key(&self, key: &IngressKey) -> bool {
        self.0.contains(key)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// (namespace, name) of an Ingress, borrowed.
fn ingress_id(ing: &Ingress) -> (&str, &str) {
    (ing.metadata.namespace.as_deref().unwrap_or_default(), ing.metadata.name.as_deref().unwrap_or_default())
}

/// The label keys naming the source of a Rule, formatted once per pass (not once per Rule).
struct SourceLabels {
    kind: String,
    ns: String,
    name: String,
}

impl SourceLabels {
    fn new(domain: &str) -> SourceLabels {
        SourceLabels {
            kind: crd::label_source_type(domain),
            ns: crd::label_source_ns(domain),
            name: crd::label_source_name(domain),
        }
    }
}

pub struct IngressSync {
    client: Client,
    stores: Arc<Stores>,
    args: ControllerArgs,
    events: EventLog,
    /// Writes the stores have not shown yet, and since when we wait.
    pending: Vec<Written>,
    pending_since: Option<Instant>,
    /// Per Ingress: the generation we reported `Synced` for and the warnings we reported.
    reported: HashMap<IngressKey, Reported>,
    /// Per Ingress: the [`Inputs`] fingerprint of its last sync that ended clean (written, reported, no error).
    /// A pass skips translating and planning an Ingress whose fingerprint is unchanged.
    clean: HashMap<IngressKey, u64>,
    missing_alb_logged: bool,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl IngressSync {
    pub fn new(client: Client, stores: Arc<Stores>, args: ControllerArgs, events: EventLog) -> IngressSync {
        IngressSync {
            client,
            stores,
            args,
            events,
            pending: Vec::new(),
            pending_since: None,
            reported: HashMap::new(),
            clean: HashMap::new(),
            missing_alb_logged: false,
            metrics: None,
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> IngressSync {
        self.metrics = Some(metrics);
        self
    }

    fn reconciled(&self, ok: bool) {
        if let Some(m) = &self.metrics {
            m.reconciled("Ingress", ok);
        }
    }

    fn rules_api(&self) -> Api<RuleObject> {
        Api::namespaced(self.client.clone(), &self.args.alb_namespace)
    }

    fn frontends_api(&self) -> Api<Frontend> {
        Api::namespaced(self.client.clone(), &self.args.alb_namespace)
    }

    /// Whether the stores show every write of the previous pass (or we waited long enough).
    fn caught_up(&mut self) -> bool {
        let stores = &self.stores;
        self.pending.retain(|w| if w.kind == "Rule" { !seen(&stores.rules, w) } else { !seen(&stores.frontends, w) });
        // (emptied, the list lets go of its room: at start-up it held 10,000 writes, ~0.8 MB)
        if self.pending.is_empty() {
            self.pending = Vec::new();
            self.pending_since = None;
            return true;
        }
        if self.pending_since.is_some_and(|t| t.elapsed() > CATCH_UP) {
            tracing::debug!("stores did not show {} of our writes in time: {:?}", self.pending.len(), self.pending);
            self.pending = Vec::new();
            self.pending_since = None;
            return true;
        }
        false
    }

    fn wrote(&mut self, w: Written) {
        self.pending_since.get_or_insert_with(Instant::now);
        self.pending.push(w);
    }

    /// One pass over every Ingress. `Ok(true)`: come back soon (writes in flight or Frontends just created).
    pub async fn pass(&mut self) -> Result<bool, SyncError> {
        if !self.caught_up() {
            return Ok(true);
        }
        let Some(alb) = self.stores.alb() else {
            if !self.missing_alb_logged {
                tracing::warn!(
                    "ALB2 {}/{} not found: Ingresses are not synced until it exists",
                    self.args.alb_namespace,
                    self.args.alb_name
                );
                self.missing_alb_logged = true;
            }
            return Ok(false);
        };
        self.missing_alb_logged = false;
        let cfg = alb_config(&self.args, &alb);
        let addresses = alb_addresses(&alb);
        let ingresses = shared(&self.stores.ingresses);
        let namespaces = cloned(&self.stores.namespaces);
        let services = shared(&self.stores.services);
        let frontends = cloned(&self.stores.frontends);
        // Rules are not copied: only each Ingress's own Rules are, below.
        let rules = self.stores.rules.state();
        let canaries = ingress::CanaryIndex::default();
        let world = IngressWorld {
            ingresses: &ingresses,
            namespaces: &namespaces,
            services: &services,
            frontends: &frontends,
            canaries: &canaries,
        };

        // Each Ingress's Rules, found through one index instead of a scan of every Rule per Ingress.
        let source_labels = SourceLabels::new(&cfg.domain);
        // (namespace, name, Rule), sorted: at 10,000 Rules ~0.7 MB, where a map of names to a list each took ~1.2
        // MB, alive at the controller's peak (a pass while the first full policy compiles).
        let mut by_source: Vec<(&str, &str, &Rule)> = rules
            .iter()
            .filter_map(|r| {
                let (ns, name) = source_of(&source_labels, r.spec.source(), Some(&r.metadata.labels))?;
                Some((ns, name, &**r))
            })
            .collect();
        by_source.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let of_source = |ns: &str, name: &str| {
            let from = by_source.partition_point(|e| (e.0, e.1) < (ns, name));
            let rest = by_source.get(from..).unwrap_or(&[]);
            rest.iter().take_while(move |e| (e.0, e.1) == (ns, name)).map(|e| e.2).collect::<Vec<&Rule>>()
        };
        // (namespace, name) of every claimed Ingress, owned: the Ingresses of this pass are let go before the writes
        let mut claimed = Claimed::default();
        let mut work = Vec::new();
        let inputs = Inputs::of(&cfg, &addresses, &world);
        let mut unchanged = 0usize;
        // Many Ingresses on one new port all plan the same Frontend: the first one creates it, the others wait
        // for the next pass (as they would after a 409) instead of each sending a create that fails. Their plans
        // are dropped at once: at start-up, 10,000 of them held a copy of the Frontend each.
        let mut frontends_planned = BTreeSet::new();
        let mut waiting_for_frontends = false;
        for ing in &ingresses {
            if !ingress::claims(&cfg, &world, ing) {
                continue;
            }
            claimed.insert(ingress_id(ing));
            let key = ing.metadata.ns_name_owned();
            let ikey = ingress_key(&key.0, &key.1);
            // Label values are cut at 63 characters: look under both keys (a Rule is filed under one of them), keep
            // what is_rule_of accepts.
            let short = (key.0.chars().take(63).collect::<String>(), key.1.chars().take(63).collect::<String>());
            let keys = if short == key { vec![&key] } else { vec![&key, &short] };
            let mut mine: Vec<&Rule> = keys
                .into_iter()
                .flat_map(|k| of_source(k.0.as_str(), k.1.as_str()))
                .filter(|r| ingress::plan::is_rule_of(&cfg, r, &key.0, &key.1))
                .collect();
            // In namespace/name order, as the pure planner's tests feed them (the store's order is arbitrary).
            mine.sort_by_key(|r| (r.metadata.ns(), r.metadata.name()));
            let fingerprint = inputs.of_ingress(ing, &mine);
            if fingerprint.is_some() && self.clean.get(&ikey) == fingerprint.as_ref() {
                unchanged += 1;
                continue;
            }
            let exp = ingress::expected(&cfg, &world, ing);
            let mine: Vec<Rule> = mine.into_iter().cloned().collect();
            let plan = ingress::plan(&cfg, &exp, &mine, &frontends);
            if !plan.create_frontends.is_empty() {
                let mut any_new = false;
                for ft in &plan.create_frontends {
                    any_new |= frontends_planned.insert(ft.metadata.ns_name_owned());
                }
                if !any_new {
                    waiting_for_frontends = true;
                    continue;
                }
            }
            // Only what the writes need is kept: at 10,000 Ingresses the expected Rules are most of the memory.
            let reports = Reports { warnings: exp.warnings, ports: exp.ports, fingerprint: fingerprint.unwrap_or(0) };
            match PackedPlan::of(&plan) {
                Ok(packed) => work.push((ing.clone(), reports, packed)),
                // (not clean: planned again by the next pass)
                Err(e) => tracing::error!("ingress {}/{}: cannot hold its planned writes: {e}", key.0, key.1),
            }
        }
        // (grown by doubling: ~60 % spare room for the ~50 s the writes of 10,000 Ingresses take)
        work.shrink_to_fit();
        if !work.is_empty() {
            tracing::info!(
                "ingress pass: {} of {} claimed Ingresses planned ({unchanged} unchanged since their last sync)",
                work.len(),
                claimed.len()
            );
        }
        drop(by_source);
        // The writes take long at scale (10,000 Ingresses: ~50 s), and every status write puts a new object in
        // the store: holding this pass's copies until the end kept two of every Ingress and Rule. Each write
        // holds its own Ingress; the rest is read again afterwards.
        drop(ingresses);
        drop(rules);
        // The writes of different Ingresses are independent: run them side by side (a 409 from two Ingresses
        // creating the same Frontend or Rule name is handled as before).
        let this = &*self;
        // The futures are made as the stream pulls them (a few KiB each, so not 10,000 at once).
        // Collected into a Vec of the right size (grown by doubling, 10,000 outcomes held ~60 % spare room and a
        // second copy while growing).
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(work.len());
        let calls = Writes { sync: this, cfg: &cfg, addresses: &addresses, work: work.into_iter() };
        {
            let mut results = std::pin::pin!(futures::stream::iter(calls).buffer_unordered(WRITE_CONCURRENCY));
            while let Some(o) = results.next().await {
                outcomes.push(o);
            }
        }
        let mut again = waiting_for_frontends;
        let mut first_error = None;
        // (sized once: grown by doubling from empty, 10,000 writes had room for 16,384)
        self.pending.reserve_exact(outcomes.iter().map(|o| o.written.len()).sum());
        for o in outcomes {
            for w in o.written {
                self.wrote(w);
            }
            again |= o.deferred;
            // Clean: planned, written and reported with no error; then an unchanged fingerprint needs nothing.
            if o.error.is_none() && !o.deferred && o.reported.is_some() && o.fingerprint != 0 {
                self.clean.insert(o.key, o.fingerprint);
            } else {
                self.clean.remove(&o.key);
            }
            if let Some(r) = o.reported {
                self.reported.insert(o.key, r);
            }
            if let Some(e) = o.error {
                first_error.get_or_insert(*e);
            }
        }
        self.reported.retain(|k, _| claimed.contains_key(k));
        self.clean.retain(|k, _| claimed.contains_key(k));

        // Rules and Frontends of Ingresses that are gone or not claimed any more.
        let rules = self.stores.rules.state();
        // (only the unclaimed ones are collected: a set of every source was ~0.5 MB at 10,000 Rules)
        let mut orphans = BTreeSet::new();
        for r in &rules {
            if let Some(src) = source_of(&source_labels, r.spec.source(), Some(&r.metadata.labels)) {
                if !claimed.contains(src.0, src.1) {
                    orphans.insert(src);
                }
            }
        }
        for f in &frontends {
            if let Some(src) = source_of(&source_labels, f.spec.source.as_ref().map(crd::Source::view), None) {
                if !claimed.contains(src.0, src.1) {
                    orphans.insert(src);
                }
            }
        }
        // Our addresses leave the status of Ingresses we do not serve (class switched away, project changed);
        // the entries of other controllers stay.
        for ing in &shared(&self.stores.ingresses) {
            let key = ingress_id(ing);
            if !claimed.contains(key.0, key.1) {
                if let Err(e) = self.remove_status(ing, &addresses).await {
                    tracing::warn!("ingress {}/{}: {e}", key.0, key.1);
                    first_error.get_or_insert(e);
                }
            }
        }
        for &(ns, name) in &orphans {
            let theirs: Vec<Rule> =
                rules.iter().filter(|r| ingress::plan::is_rule_of(&cfg, r, ns, name)).map(|r| (**r).clone()).collect();
            let plan = ingress::cleanup(&cfg, ns, name, &theirs, &frontends);
            if plan.is_empty() {
                continue;
            }
            let mut written = Vec::new();
            let res = self.apply(&cfg, plan, &mut written).await;
            for w in written {
                self.wrote(w);
            }
            match res {
                Ok(_) => tracing::info!("ingress {ns}/{name}: not served by this ALB any more, its Rules removed"),
                Err(e) => {
                    tracing::warn!("cleaning up after ingress {ns}/{name}: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(again),
        }
    }

    /// One claimed Ingress: its plan applied, then its Events and status. Reads `self`, changes nothing in it.
    async fn sync_one(
        &self,
        cfg: &AlbIngressConfig,
        addresses: &[String],
        ing: Arc<Ingress>,
        exp: Reports,
        plan: Result<Plan, String>,
    ) -> Outcome {
        let changed = plan.as_ref().is_ok_and(|p| !p.is_empty());
        let fingerprint = exp.fingerprint;
        let (ns, name) = ingress_id(&ing);
        let key = ingress_key(ns, name);
        let mut out = Outcome { key, fingerprint, written: Vec::new(), deferred: false, reported: None, error: None };
        let applied = match plan {
            Ok(plan) => self.apply(cfg, plan, &mut out.written).await,
            Err(e) => Err(SyncError::Internal(e)),
        };
        // (kept until the pass ends: a Vec grown by one push has room for 4)
        out.written.shrink_to_fit();
        match applied {
            // Deferred to the next pass (Frontends just created): counted then.
            Ok(true) => {
                out.deferred = true;
                return out;
            }
            Ok(false) => {}
            Err(e) => {
                self.reconciled(false);
                tracing::warn!("ingress {ns}/{name}: {e}");
                self.event(&ing, EventType::Warning, "SyncFailed", &e.to_string()).await;
                out.error = Some(Box::new(e));
                return out;
            }
        }
        if changed {
            tracing::info!("ingress {ns}/{name} synced");
        }
        out.reported = Some(self.report(&ing, key, exp.warnings).await);
        let status = self.update_status(&ing, addresses, &exp.ports).await;
        self.reconciled(status.is_ok());
        if let Err(e) = status {
            tracing::warn!("ingress {ns}/{name}: {e}");
            out.error = Some(Box::new(e));
        }
        out
    }

    /// Applies a plan: Frontends first (when some are created, the Rules wait for the next pass, which sees
    /// their uids for the ownerReferences), then Rules: creates, deletes, updates. `Ok(true)`: deferred.
    async fn apply(&self, cfg: &AlbIngressConfig, plan: Plan, written: &mut Vec<Written>) -> Result<bool, SyncError> {
        let pp = PostParams::default();
        let created_frontends = !plan.create_frontends.is_empty();
        for ft in plan.create_frontends {
            let (ns, name) = ft.metadata.ns_name_owned();
            match self.frontends_api().create(&pp, &ft).await {
                Ok(made) => {
                    tracing::info!("created Frontend {ns}/{name} (port {})", ft.spec.port);
                    written.push(Written::created("Frontend", &ns, &name, made.metadata.uid.as_deref()));
                }
                // Another Ingress of this pass created it: fine, the next pass sees it.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(api_err("create", "Frontend", &ns, &name)(e)),
            }
        }
        for mut ft in plan.update_frontends {
            let (ns, name) = ft.metadata.ns_name_owned();
            let old_rv = Written::updated("Frontend", &ns, &name, ft.metadata.resource_version.as_deref());
            ft.metadata.managed_fields = None;
            self.frontends_api().replace(&name, &pp, &ft).await.map_err(api_err("update", "Frontend", &ns, &name))?;
            written.push(old_rv);
        }
        if created_frontends {
            return Ok(true);
        }
        for rule in plan.create_rules {
            written.push(self.create_rule(cfg, rule).await?);
        }
        for (ns, name) in plan.delete_rules {
            match Api::<RuleObject>::namespaced(self.client.clone(), &ns).delete(&name, &DeleteParams::default()).await
            {
                Ok(_) => tracing::info!("deleted Rule {ns}/{name}"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api_err("delete", "Rule", &ns, &name)(e)),
            }
            written.push(Written::new("Rule", &ns, &name, Shows::Deleted));
        }
        for want in plan.update_rules {
            // The cache keeps only what alb reads of a Rule: the update is written over the object as the API
            // server holds it now (a Rule deleted meanwhile is created again by the next pass).
            let (ns, name) = want.metadata.ns_name_owned();
            let api = self.rules_api();
            let Some(current) = api.get_opt(&name).await.map_err(api_err("read", "Rule", &ns, &name))? else {
                continue;
            };
            let old_rv = Written::updated("Rule", &ns, &name, current.metadata.resource_version.as_deref());
            let rule = ingress::plan::updated(cfg, current, &want);
            api.replace(&name, &pp, &rule).await.map_err(api_err("update", "Rule", &ns, &name))?;
            tracing::info!("updated Rule {ns}/{name}");
            written.push(old_rv);
        }
        Ok(false)
    }

    /// Creates a Rule; when its name is taken (by a Rule of another Ingress), tries the next names.
    async fn create_rule(&self, cfg: &AlbIngressConfig, mut rule: RuleObject) -> Result<Written, SyncError> {
        let pp = PostParams::default();
        for attempt in 1..=NAME_ATTEMPTS {
            let (ns, name) = rule.metadata.ns_name_owned();
            match self.rules_api().create(&pp, &rule).await {
                Ok(made) => {
                    tracing::info!("created Rule {ns}/{name}");
                    return Ok(Written::created("Rule", &ns, &name, made.metadata.uid.as_deref()));
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let Some(next) = next_name(cfg, &rule, attempt) else {
                        return Err(SyncError::NoName(name));
                    };
                    rule.metadata.name = Some(next);
                }
                Err(e) => return Err(api_err("create", "Rule", &ns, &name)(e)),
            }
        }
        let ft = rule.metadata.labels.as_ref().and_then(|l| l.get(&crd::label_frontend(&cfg.domain))).cloned();
        Err(SyncError::NoName(ft.unwrap_or_default()))
    }

    /// `Synced` once per Ingress generation; each warning once while it lasts.
    async fn report(&self, ing: &Ingress, key: IngressKey, warnings: Vec<IngressWarning>) -> Reported {
        let (gen, old) = self.reported.get(&key).cloned().unwrap_or((None, Vec::new()));
        if old != warnings {
            for w in warnings.iter().filter(|w| !old.contains(w)) {
                tracing::warn!("{w}");
                self.event(ing, EventType::Warning, &w.reason, &w.message).await;
            }
        }
        if gen.is_none() || gen != ing.metadata.generation {
            self.event(ing, EventType::Normal, "Synced", "Ingress synced successfully").await;
        }
        (ing.metadata.generation.or(Some(0)), warnings)
    }

    async fn event(&self, ing: &Ingress, type_: EventType, reason: &str, message: &str) {
        let ev = Note { type_, reason, message, action: "Sync" };
        if let Err(e) = self.events.publish(&ev, &ing.object_ref()).await {
            tracing::warn!("cannot record an Event for ingress {:?}: {e}", ing.metadata.name);
        }
    }

    /// Removes the `status.loadBalancer` entries of our addresses from an Ingress we do not serve.
    async fn remove_status(&self, ing: &Ingress, addresses: &[String]) -> Result<(), SyncError> {
        let Some(current) = ing.status.as_ref().and_then(|s| s.get().ok()?.load_balancer) else { return Ok(()) };
        let entries = current.ingress.unwrap_or_default();
        let ours = |e: &k8s_openapi::api::networking::v1::IngressLoadBalancerIngress| {
            addresses.iter().any(|a| e.ip.as_deref() == Some(a.as_str()) || e.hostname.as_deref() == Some(a.as_str()))
        };
        if !entries.iter().any(ours) {
            return Ok(());
        }
        let kept: Vec<_> = entries.into_iter().filter(|e| !ours(e)).collect();
        let (ns, name) = ing.metadata.ns_name_owned();
        let api: Api<IngressObject> = Api::namespaced(self.client.clone(), &ns);
        let body = serde_json::json!({"status": {"loadBalancer": {"ingress": kept}}});
        let written = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body)).await;
        if let Some(m) = &self.metrics {
            m.status_written("Ingress", written.is_ok());
        }
        written.map_err(api_err("update status of", "Ingress", &ns, &name))?;
        tracing::info!("ingress {ns}/{name}: not served by this ALB; our addresses removed from its status");
        Ok(())
    }

    /// Add-only merge of our addresses and ports into `status.loadBalancer`.
    async fn update_status(&self, ing: &Ingress, addresses: &[String], ports: &[(u16, &str)]) -> Result<(), SyncError> {
        if addresses.is_empty() || ports.is_empty() {
            return Ok(());
        }
        let current = ing.status.as_ref().and_then(|s| s.get().ok()?.load_balancer);
        let want = ingress::load_balancer_status(addresses, ports, current.as_ref());
        if current.as_ref() == Some(&want) {
            return Ok(());
        }
        let (ns, name) = ing.metadata.ns_name_owned();
        let api: Api<IngressObject> = Api::namespaced(self.client.clone(), &ns);
        let body = serde_json::json!({"status": {"loadBalancer": want}});
        let written = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body)).await;
        if let Some(m) = &self.metrics {
            m.status_written("Ingress", written.is_ok());
        }
        written.map_err(api_err("update status of", "Ingress", &ns, &name))?;
        Ok(())
    }
}

/// The next deterministic name for a generated Rule whose name is taken.
fn next_name(cfg: &AlbIngressConfig, rule: &RuleObject, attempt: u32) -> Option<String> {
    let d = &cfg.domain;
    let labels = rule.metadata.labels.as_ref()?;
    let annos = rule.metadata.annotations.as_ref()?;
    let ft = labels.get(&crd::label_frontend(d))?;
    let r: usize = annos.get(&annotation_rule_index(d))?.parse().ok()?;
    let p = annos.get(&annotation_path_index(d))?;
    let src = rule.spec.source.as_ref()?;
    // `<p>` or, for a canary header/cookie Rule, `<p>-canary-...` (src/ingress/canary.rs).
    ingress::canary::rule_name_for(ft, &src.namespace, &src.name, r, p, attempt)
}

fn api_err<'a>(
    verb: &'static str,
    kind: &'static str,
    ns: &'a str,
    name: &'a str,
) -> impl FnOnce(kube::Error) -> SyncError + 'a {
    move |source| SyncError::Api { verb, kind, ns: ns.to_string(), name: name.to_string(), source }
}

/// Debounced passes on every store change, every `resync` and soon after a pass that wants another one;
/// runs until aborted (leadership lost).
pub async fn run(mut sync: IngressSync, mut changes: watch::Receiver<u64>, resync: Duration) {
    sync.stores.wait_ingress_inputs().await;
    tracing::info!("leader: syncing Ingresses");
    loop {
        changes.borrow_and_update();
        let result = sync.pass().await;
        let last = std::time::Instant::now();
        let wait = match result {
            Ok(false) => resync,
            Ok(true) => Duration::from_millis(200),
            Err(_) => Duration::from_secs(2),
        };
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                tokio::time::sleep(super::stores::debounce_after(last)).await;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A write is seen when the store shows the created uid, another resourceVersion, or no object.
    #[test]
    fn writes_are_seen_as_the_store_shows_them() {
        let (store, mut writer) = super::super::cache::cache(|f: &Frontend| f.clone());
        let ft = |uid: &str, rv: &str| -> Frontend {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "crd.alauda.io/v1", "kind": "Frontend",
                "metadata": {"name": "alb-00080", "namespace": "alb", "uid": uid, "resourceVersion": rv},
                "spec": {"port": 80, "protocol": "http"}
            }))
            .unwrap()
        };
        let created = Written::created("Frontend", "alb", "alb-00080", Some("u-1"));
        let updated = Written::updated("Frontend", "alb", "alb-00080", Some("7"));
        let deleted = Written::new("Frontend", "alb", "alb-00080", Shows::Deleted);
        assert_eq!((created.ns(), created.name()), ("alb", "alb-00080"));
        assert!(!seen(&store, &created) && seen(&store, &updated) && seen(&store, &deleted), "no object");
        writer.apply(&kube::runtime::watcher::Event::Apply(ft("u-1", "7")));
        assert!(seen(&store, &created) && !seen(&store, &updated) && !seen(&store, &deleted));
        writer.apply(&kube::runtime::watcher::Event::Apply(ft("u-2", "8")));
        assert!(!seen(&store, &created) && seen(&store, &updated), "another uid, another resourceVersion");
    }

    /// A plan waiting for its writes reads back as it was planned.
    #[test]
    fn packed_plan_reads_back() {
        let rule: RuleObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "crd.alauda.io/v1", "kind": "Rule",
            "metadata": {"name": "alb-00080-web-0-0", "namespace": "alb",
                         "labels": {"alb2.cpaas.io/name": "alb", "alb2.cpaas.io/frontend": "alb-00080"},
                         "annotations": {"alb2.cpaas.io/source-ingress-rule-index": "0"},
                         "ownerReferences": [{"apiVersion": "crd.alauda.io/v1", "kind": "Frontend",
                                              "name": "alb-00080", "uid": "ft"}]},
            "spec": {"priority": 5, "dslx": [{"type": "URL", "values": [["STARTS_WITH", "/a"]]}],
                     "serviceGroup": {"services": [{"name": "web", "namespace": "app", "port": 80, "weight": 100}]},
                     "config": {"rewrite": {"target": "/"}}}
        }))
        .unwrap();
        let ft: Frontend = serde_json::from_value(serde_json::json!({
            "apiVersion": "crd.alauda.io/v1", "kind": "Frontend",
            "metadata": {"name": "alb-00080", "namespace": "alb", "resourceVersion": "7"},
            "spec": {"port": 80, "protocol": "http"}
        }))
        .unwrap();
        let plan = Plan {
            create_frontends: vec![ft.clone()],
            update_frontends: vec![ft],
            create_rules: vec![rule.clone()],
            update_rules: vec![rule],
            delete_rules: vec![("alb".into(), "gone".into())],
        };
        let back = PackedPlan::of(&plan).unwrap().unpack().unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&plan).unwrap());
        assert_eq!(back.create_rules[0].metadata.owner_references, plan.create_rules[0].metadata.owner_references);
        assert_eq!(back.create_rules[0].spec, plan.create_rules[0].spec);
        assert_eq!(back.delete_rules, plan.delete_rules);
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ControllerArgs,
    }

    fn args() -> ControllerArgs {
        Cli::parse_from(["alb", "--alb-name", "alb-dev", "--alb-namespace", "cpaas-system"]).args
    }

    fn alb(v: serde_json::Value) -> ALB2 {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn config_from_the_alb2() {
        let a = alb(serde_json::json!({
            "apiVersion": "crd.alauda.io/v2beta1", "kind": "ALB2",
            "metadata": {"name": "alb-dev", "namespace": "cpaas-system", "uid": "u-1",
                         "labels": {"project.cpaas.io/p2": "true", "cpaas.io/role": "port"}},
            "spec": {"address": "1.1.1.1, lb.example.com", "config": {
                "ingressHTTPPort": 8080, "ingressHTTPSPort": "0", "defaultSSLStrategy": "both",
                "defaultSSLCert": "cpaas-system/cert", "projects": ["p1"], "unknown": 1}},
            "status": {"detail": {"address": {"ipv4": ["2.2.2.2", "1.1.1.1"], "ipv6": ["::2"], "host": []}}}
        }));
        let cfg = alb_config(&args(), &a);
        assert_eq!((cfg.http_port, cfg.https_port), (8080, 0));
        assert_eq!(cfg.ssl_strategy, SslStrategy::Both);
        assert_eq!(cfg.default_ssl_cert.as_deref(), Some("cpaas-system/cert"));
        assert_eq!(cfg.projects, vec!["p1".to_string(), "p2".to_string()]);
        assert!(cfg.port_mode);
        assert_eq!(cfg.alb_uid.as_deref(), Some("u-1"));
        assert_eq!(alb_addresses(&a), vec!["1.1.1.1", "lb.example.com", "2.2.2.2", "::2"]);
    }

    #[test]
    fn defaults_without_config() {
        let a = alb(serde_json::json!({
            "apiVersion": "crd.alauda.io/v2beta1", "kind": "ALB2",
            "metadata": {"name": "alb-dev", "namespace": "cpaas-system"}, "spec": {}
        }));
        let cfg = alb_config(&args(), &a);
        assert_eq!((cfg.http_port, cfg.https_port), (80, 443));
        assert_eq!(cfg.ssl_strategy, SslStrategy::Never);
        assert!(cfg.projects.is_empty() && !cfg.port_mode && cfg.default_ssl_cert.is_none());
        assert!(alb_addresses(&a).is_empty());
    }

    #[test]
    fn source_from_spec_or_labels() {
        let src = crd::Source { kind: "ingress".into(), namespace: "n".into(), name: "i".into() };
        let keys = SourceLabels::new("cpaas.io");
        assert_eq!(source_of(&keys, Some(src.view()), None), Some(("n", "i")));
        let other = crd::Source { kind: "gateway".into(), ..src.clone() };
        assert_eq!(source_of(&keys, Some(other.view()), None), None);
        let labels: std::collections::BTreeMap<String, String> = [
            ("alb2.cpaas.io/source-type", "ingress"),
            ("alb2.cpaas.io/source-ns", "n2"),
            ("alb2.cpaas.io/source-name", "i2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(source_of(&keys, None, Some(&Pairs::from_map(labels))), Some(("n2", "i2")));
        assert_eq!(source_of(&keys, None, None), None);
    }
}
