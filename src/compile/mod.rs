//! The compiler: Frontends + Rules + Services + EndpointSlices → policy (docs/policy.md) + listeners.
//! Pure: no I/O, deterministic for a given snapshot whatever the order of its lists.
//!
//! An invalid object never breaks the others: it is left out and reported as a [`Reject`].

/// `kube::Resource` for alb's own lean decodings of a namespaced API kind (`service.rs`, `slice.rs`): the API's
/// group, version, kind and plural, the object's `metadata` field.
macro_rules! lean_resource {
    ($ty:ty, group: $group:literal, version: $version:literal, kind: $kind:literal, plural: $plural:literal) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }

            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                $group.into()
            }

            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                $version.into()
            }

            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }

            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

pub mod backends;
pub mod cache;
pub mod certs;
pub mod dslx;
pub mod features;
pub mod index;
pub mod meta;
pub mod order;
pub mod positions;
pub mod service;
pub mod slice;
pub mod stream;
#[cfg(test)]
pub(crate) mod testutil;

use crate::compile::service::Service;
use crate::compile::slice::EndpointSlice;
use crate::crd::{self, Frontend, Rule};
use crate::policy::{BackendGroup, HttpPort, HttpRule, Json, Policy, SharedRule, Source, POLICY_VERSION};
use backends::Lookup;
use foldhash::{HashMap, HashMapExt};
use k8s_openapi::api::core::v1::Secret;
use meta::Meta;
use order::SortKey;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// Everything the compiler reads.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub frontends: Vec<Arc<Frontend>>,
    pub rules: Vec<Arc<Rule>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// `kubernetes.io/tls` Secrets (certificates of https Frontends and Rules).
    pub secrets: Vec<Arc<Secret>>,
    /// The ALB's `DEFAULT_SSL_STRATEGY` certificate fallback (`certs.rs`), when its strategy is Always or Both.
    pub tls_fallback: Option<certs::TlsFallback>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// `None` = accept every Frontend/Rule regardless of `alb2.<d>/name`.
    pub alb_name: Option<String>,
    /// Label domain, `cpaas.io` by default.
    pub domain: String,
    /// Copied into `policy.generation`.
    pub generation: u64,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { alb_name: None, domain: crd::DEFAULT_DOMAIN.to_string(), generation: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Https,
    Tcp,
    Udp,
    Grpc,
}

impl Protocol {
    /// Frontend `spec.protocol`; unknown values are `tcp` (controlplane.md §1.5).
    pub fn parse(s: &str) -> Protocol {
        match s {
            "http" => Protocol::Http,
            "https" => Protocol::Https,
            "udp" => Protocol::Udp,
            "grpc" => Protocol::Grpc,
            _ => Protocol::Tcp,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Grpc => "grpc",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port nginx must listen on (from an accepted Frontend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Frontend name.
    pub name: String,
    pub namespace: String,
    pub port: u16,
    pub protocol: Protocol,
    /// TLS listener: https, or grpc with a `certificate_name`.
    pub tls: bool,
}

/// An object (or part of one) left out of the policy, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// `Rule` or `Frontend`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Path of the offending field, e.g. `spec.dslx[1].values[0]`.
    pub field: String,
    /// CamelCase code, e.g. `InvalidRegex`.
    pub reason: String,
    /// Human sentence naming object and field.
    pub message: String,
}

impl Reject {
    fn new(kind: &str, meta: &dyn Meta, field: String, reason: &str, problem: &str) -> Reject {
        let (namespace, name) = (ns_of(meta).to_string(), name_of(meta).to_string());
        let message = format!("{kind} {namespace}/{name}: {field} {problem}");
        Reject { kind: kind.into(), namespace, name, field, reason: reason.into(), message }
    }

    /// The message without its `<Kind> <ns>/<name>: <field> ` prefix.
    fn problem(&self) -> &str {
        let prefix = format!("{} {}/{}: {} ", self.kind, self.namespace, self.name, self.field);
        self.message.strip_prefix(&prefix).unwrap_or(&self.message)
    }
}

impl fmt::Display for Reject {
    /// `Rule cpaas-system/bad-regex: spec.dslx[0].values[0][1]: InvalidRegex: "(" is not a valid ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}: {}: {}: {}", self.kind, self.namespace, self.name, self.field, self.reason, self.problem())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// Shared with the pusher, which keeps the policy it last pushed as the base of the next delta.
    pub policy: std::sync::Arc<Policy>,
    /// Sorted by port.
    pub listeners: Vec<Listener>,
    /// In the order found: Frontends first, then Rules, each by namespace/name.
    pub rejects: Vec<Reject>,
    /// tcp/udp Frontends (`stream.rs`), sorted by port and protocol; not part of the policy (rendered into
    /// nginx.conf).
    pub stream: Vec<crate::nginx::stream::StreamListener>,
    /// Unix seconds: a certificate of the policy becomes valid or expires then; compile again at that time.
    pub certificates_change_at: Option<i64>,
}

fn ns_of<M: Meta + ?Sized>(meta: &M) -> &str {
    meta.ns()
}

fn name_of<M: Meta + ?Sized>(meta: &M) -> &str {
    meta.name()
}

fn label<'a, M: Meta + ?Sized>(meta: &'a M, key: &str) -> Option<&'a str> {
    meta.label(key)
}

/// A dslx's match expression and index hints as the policy's JSON.
fn written(dslx: &[crd::DslxTerm], expr: &serde_json::Value) -> Result<(Json, Option<Json>), serde_json::Error> {
    Ok((Json::of(expr)?, index::derive(dslx).map(|i| Json::of(&i)).transpose()?))
}

/// The synthetic catch-all of a Frontend default backend.
const DEFAULT_RULE_PRIORITY: i64 = 999;
const DEFAULT_RULE_COMPLEXITY: i64 = -1;

fn default_dslx() -> Vec<crd::DslxTerm> {
    vec![crd::DslxTerm { kind: "URL".into(), key: None, values: vec![vec!["STARTS_WITH".into(), "/".into()]] }]
}

/// Accepted Frontends: (namespace, name) → port.
type Accepted<'a> = HashMap<(&'a str, &'a str), u16>;

struct Ctx<'a> {
    opts: &'a CompileOptions,
    /// `alb2.<d>/name` (`selected`).
    name_label: String,
    /// The Rule annotation `alb2.<d>/service-upstream` (`add_group`).
    service_upstream: String,
    lookup: Lookup<'a>,
    rejects: Vec<Reject>,
    /// Backend groups by name, with what produced each (named in the rejection of a later duplicate).
    /// A Rule's group is named after the Rule: its name is borrowed from the snapshot.
    groups: HashMap<Cow<'a, str>, (Arc<BackendGroup>, GroupOwner<'a>)>,
    /// Port → rules with their sort keys, put into match order in place ([`order::Ranked`]).
    ports: BTreeMap<u16, order::Ranked<'a, SharedRule>>,
    /// The policy compiled before: an equal rule is taken from it ([`Ctx::shared`]).
    prev: Option<&'a Policy>,
    /// `prev`'s rules by port and name, made at the first rule built.
    prev_rules: Option<HashMap<(u16, &'a str), &'a SharedRule>>,
    /// Secrets of any type by namespace/name (basic auth, `features.rs`).
    secrets: features::SecretIndex<'a>,
    /// Accepted tcp/udp Frontends.
    stream: Vec<crate::nginx::stream::StreamListener>,
    /// Accepted tcp/udp Frontends by namespace/name (Rules cannot attach to them).
    stream_fts: BTreeSet<(&'a str, &'a str)>,
    /// Ports of the accepted grpc Frontends (their rules' backend protocol is grpc or grpcs).
    grpc_ports: BTreeSet<u16>,
    /// What earlier compilations computed for unchanged Rules (`cache.rs`).
    memo: cache::Memo,
    /// The identity of the group being resolved ([`Lookup::identity_into`]), reused from Rule to Rule.
    identity: Vec<usize>,
}

/// The producer of a backend group: `<kind> <ns>/<name>` (kind `Rule`, `Frontend` or `error_pages of Rule`).
struct GroupOwner<'a> {
    kind: &'static str,
    meta: &'a dyn Meta,
}

impl fmt::Display for GroupOwner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, ns_of(self.meta), name_of(self.meta))
    }
}

impl<'a> Ctx<'a> {
    fn selected(&self, meta: &dyn Meta) -> bool {
        match &self.opts.alb_name {
            None => true,
            Some(alb) => label(meta, &self.name_label) == Some(alb.as_str()),
        }
    }

    fn reject(&mut self, kind: &str, meta: &dyn Meta, field: String, reason: &str, problem: &str) {
        self.rejects.push(Reject::new(kind, meta, field, reason, problem));
    }

    /// Resolve a service group into a named backend group; problems are reported against `kind`/`meta`.
    /// `rule`: the [`cache::rule_key`] of the Rule whose group this is (its group can be taken from the cache).
    fn add_group(
        &mut self,
        kind: &'static str,
        meta: &'a dyn Meta,
        group: Cow<'a, str>,
        sg: &crd::ServiceGroup,
        rule: Option<usize>,
    ) -> bool {
        if let Some((_, owner)) = self.groups.get(&group) {
            let problem = format!("gives backend group {group:?}, already used by {owner}");
            self.reject(kind, meta, "metadata.name".into(), "DuplicateBackendGroup", &problem);
            return false;
        }
        // A Rule's group is a function of the Rule and of the Services and slices it names.
        if let Some(r) = rule {
            self.lookup.identity_into(sg, ns_of(meta), &mut self.identity);
            if let Some(g) = self.memo.group(r, &self.identity) {
                self.groups.insert(group, (g, GroupOwner { kind, meta }));
                return true;
            }
        }
        // Ingress `service-upstream` (src/ingress/balance.rs): ClusterIP instead of endpoints.
        let cluster_ip = kind == "Rule" && meta.annotation(&self.service_upstream).is_some_and(|v| v == "true");
        let resolved = match cluster_ip {
            true => backends::resolve_with(&group, sg, ns_of(meta), &self.lookup, "TCP", true),
            false => backends::resolve(&group, sg, ns_of(meta), &self.lookup),
        };
        match resolved {
            Ok(g) => {
                let g = Arc::new(g);
                if let Some(r) = rule {
                    self.memo.keep_group(r, self.identity.clone(), &g);
                }
                self.groups.insert(group, (g, GroupOwner { kind, meta }));
                true
            }
            Err(errs) => {
                for e in errs {
                    self.reject(kind, meta, e.field, e.reason, &e.problem);
                }
                false
            }
        }
    }

    /// The backend group of a Rule's `config.error_pages.service` (shared by the Rules naming the same Service
    /// port); `None` (reported on the Rule) when the Service or port does not exist.
    fn error_group(&mut self, meta: &'a dyn Meta, svc: &crate::policy::config::ErrorService) -> Option<String> {
        let name = backends::error_group_name(svc);
        if self.groups.contains_key(name.as_str()) {
            return Some(name);
        }
        match backends::resolve_error_service(svc, &self.lookup) {
            Ok(g) => {
                let owner = GroupOwner { kind: "error_pages of Rule", meta };
                self.groups.insert(Cow::Owned(name.clone()), (Arc::new(g), owner));
                Some(name)
            }
            Err(errs) => {
                for e in errs {
                    let problem = format!("{}: the Rule is served without error pages", e.problem);
                    self.reject("Rule", meta, e.field, e.reason, &problem);
                }
                None
            }
        }
    }

    /// Accepted Frontends (namespace, name) → port.
    fn frontends(&mut self, snapshot: &'a Snapshot, listeners: &mut Vec<Listener>) -> Accepted<'a> {
        let mut fts: Vec<&Frontend> =
            snapshot.frontends.iter().map(|f| &**f).filter(|f| self.selected(&f.metadata)).collect();
        fts.sort_by(|a, b| (ns_of(&a.metadata), name_of(&a.metadata)).cmp(&(ns_of(&b.metadata), name_of(&b.metadata))));
        let mut claimed: HashMap<(u16, bool), String> = HashMap::new();
        let mut accepted = HashMap::new();
        for ft in fts {
            let meta = &ft.metadata;
            let Some(port) = u16::try_from(ft.spec.port).ok().filter(|p| *p != 0) else {
                let problem = format!("is {}, not a port number in 1..65535", ft.spec.port);
                self.reject("Frontend", meta, "spec.port".into(), "InvalidPort", &problem);
                continue;
            };
            let proto = Protocol::parse(&ft.spec.protocol);
            // tcp and udp listeners on the same number do not conflict.
            let owner = format!("{}/{}", ns_of(meta), name_of(meta));
            if let Some(first) = claimed.get(&(port, proto == Protocol::Udp)) {
                let problem = format!("is {port}, already used by Frontend {first}");
                self.reject("Frontend", meta, "spec.port".into(), "DuplicatePort", &problem);
                continue;
            }
            claimed.insert((port, proto == Protocol::Udp), owner);
            if matches!(proto, Protocol::Tcp | Protocol::Udp) {
                self.stream_frontend(ft, port, proto);
                continue;
            }
            let tls =
                proto == Protocol::Https || (proto == Protocol::Grpc && !ft.spec.certificate_name.trim().is_empty());
            if proto == Protocol::Grpc {
                self.grpc_ports.insert(port);
            }
            listeners.push(Listener {
                name: name_of(meta).into(),
                namespace: ns_of(meta).into(),
                port,
                protocol: proto,
                tls,
            });
            accepted.insert((ns_of(meta), name_of(meta)), port);
            self.ports.entry(port).or_default();
            self.default_rule(ft, port, proto);
        }
        listeners.sort_by_key(|l| l.port);
        accepted
    }

    /// A tcp/udp Frontend: its listener with the resolved service group (`stream.rs`).
    fn stream_frontend(&mut self, ft: &'a Frontend, port: u16, proto: Protocol) {
        use crate::nginx::stream::StreamProto;
        let meta = &ft.metadata;
        let sproto = if proto == Protocol::Udp { StreamProto::Udp } else { StreamProto::Tcp };
        let prefix = self.opts.alb_name.as_deref().unwrap_or(name_of(meta));
        let group = format!("{prefix}-{port}-{proto}");
        match stream::listener(ft, port, sproto, &group, &self.lookup) {
            Ok((l, warnings)) => {
                for e in warnings {
                    self.reject("Frontend", meta, e.field, e.reason, &e.problem);
                }
                self.stream.push(l);
                self.stream_fts.insert((ns_of(meta), name_of(meta)));
            }
            Err(errs) => {
                for e in errs {
                    self.reject("Frontend", meta, e.field, e.reason, &e.problem);
                }
            }
        }
    }

    /// The Frontend's default backend as the port's catch-all rule.
    fn default_rule(&mut self, ft: &'a Frontend, port: u16, proto: Protocol) {
        let Some(sg) = ft.spec.service_group.as_ref().filter(|sg| !sg.services.is_empty()) else { return };
        let meta = &ft.metadata;
        let prefix = self.opts.alb_name.as_deref().unwrap_or(name_of(meta));
        let group = format!("{prefix}-{port}-{proto}");
        if !self.add_group("Frontend", meta, Cow::Owned(group.clone()), sg, None) {
            return;
        }
        let d = default_dslx();
        let expr = dslx::to_match(&d);
        let (matcher, index) = match written(&d, &expr) {
            Ok(m) => m,
            Err(e) => {
                let problem = format!("gives a match expression that cannot be written: {e}");
                return self.reject("Frontend", meta, "spec.serviceGroup".into(), "InvalidMatch", &problem);
            }
        };
        let key = SortKey {
            priority: DEFAULT_RULE_PRIORITY,
            complexity: DEFAULT_RULE_COMPLEXITY,
            dsl_len: dslx::internal_dsl_len(&d, &expr),
            name: name_of(meta),
            namespace: ns_of(meta),
        };
        let (config, errs) = features::frontend_config(ft, &self.secrets);
        for e in errs {
            self.reject("Frontend", meta, e.field, e.reason, &e.problem);
        }
        let rule = HttpRule {
            name: name_of(meta).into(),
            priority: DEFAULT_RULE_PRIORITY,
            complexity: DEFAULT_RULE_COMPLEXITY,
            source: Source {
                kind: "ft_default_router".into(),
                namespace: ns_of(meta).into(),
                name: name_of(meta).into(),
            },
            matcher,
            index,
            upstream: Some(group),
            backend_protocol: self.backend_protocol("Frontend", meta, &ft.spec.backend_protocol, port),
            config: Arc::new(config),
            key: String::new(),
        };
        let rule = self.shared(port, rule);
        self.ports.entry(port).or_default().push(key, rule);
    }

    /// `rule`, or the rule of the same port and name of the policy compiled before when that one is equal to it
    /// (in all but its key, which it keeps): the two policies then hold one copy ([`SharedRule`]), and a
    /// compilation in which few rules changed makes few new ones. A rule whose group this compilation renames
    /// ([`dedupe_groups`]) is copied then; one that equals the previous rule only after that is taken by
    /// [`Policy::set_rule_keys_from`].
    fn shared(&mut self, port: u16, rule: HttpRule) -> SharedRule {
        let Some(prev) = self.prev else { return SharedRule::new(rule) };
        let by_name = self.prev_rules.get_or_insert_with(|| {
            let mut m = HashMap::with_capacity(prev.rule_count());
            for (p, rules) in &prev.http {
                let Ok(p) = p.parse::<u16>() else { continue };
                for r in &rules.rules {
                    m.insert((p, r.name.as_str()), r);
                }
            }
            m
        });
        match by_name.get(&(port, rule.name.as_str())) {
            Some(old) if crate::policy::same_content(&rule, old) => SharedRule::clone(old),
            _ => SharedRule::new(rule),
        }
    }

    fn rules(&mut self, snapshot: &'a Snapshot, accepted: &Accepted<'a>, known: &BTreeSet<(&str, &str)>) {
        let ft_label = crd::label_frontend(&self.opts.domain);
        // By namespace/name (the controller's snapshot comes in that order already), with the Frontend label read
        // once. Sized for every Rule: grown from empty, a list of 10,000 took room for 16,384, alive while the
        // whole compilation runs.
        let mut rules: Vec<(Option<&str>, &Rule)> = Vec::with_capacity(snapshot.rules.len());
        rules.extend(
            snapshot.rules.iter().filter(|r| self.selected(&r.metadata)).map(|r| (label(&r.metadata, &ft_label), &**r)),
        );
        let key = |r: &'a Rule| (ns_of(&r.metadata), name_of(&r.metadata));
        rules.sort_by(|a, b| key(a.1).cmp(&key(b.1)));
        // Each port's list sized once for the Rules that name one of its Frontends.
        let mut per_port: BTreeMap<u16, usize> = BTreeMap::new();
        for &(ft, rl) in &rules {
            if let Some(&port) = ft.and_then(|ft| accepted.get(&(ns_of(&rl.metadata), ft))) {
                *per_port.entry(port).or_default() += 1;
            }
        }
        for (port, n) in per_port {
            self.ports.entry(port).or_default().reserve(n);
        }
        for (ft, rl) in rules {
            let (ns, name) = key(rl);
            let meta = &rl.metadata;
            let Some(ft) = ft else {
                let problem = format!("has no {ft_label} label naming its Frontend");
                self.reject("Rule", meta, "metadata.labels".into(), "UnknownFrontend", &problem);
                continue;
            };
            if self.stream_fts.contains(&(ns, ft)) {
                let problem = format!(
                    "{ft_label}={ft} names the tcp/udp Frontend {ns}/{ft}: L4 Frontends route to their serviceGroup only"
                );
                self.reject("Rule", meta, "metadata.labels".into(), "UnsupportedProtocol", &problem);
                continue;
            }
            let Some(&port) = accepted.get(&(ns, ft)) else {
                let why = if known.contains(&(ns, ft)) {
                    "which was not accepted (see its rejection)"
                } else {
                    "which does not exist in this namespace"
                };
                let problem = format!("{ft_label}={ft} names Frontend {ns}/{ft} {why}");
                self.reject("Rule", meta, "metadata.labels".into(), "UnknownFrontend", &problem);
                continue;
            };
            let Some(packed) = rl.spec.dslx.as_ref() else {
                self.reject(
                    "Rule",
                    meta,
                    "spec.dslx".into(),
                    "MissingDslx",
                    "is null: the Rule matches nothing and is skipped",
                );
                continue;
            };
            self.memo.adopt(rl);
            let rkey = cache::rule_key(rl);
            let mut errs = Vec::new();
            let d = self.memo.dslx(rkey, || {
                let terms = match packed.get() {
                    Ok(t) => t,
                    Err(e) => {
                        let problem = format!("cannot be read back: {e}");
                        errs.push(dslx::DslxError { field: "spec.dslx".into(), reason: "InvalidMatch", problem });
                        return None;
                    }
                };
                let terms = terms.as_slice();
                errs = dslx::validate(terms);
                if !errs.is_empty() {
                    return None;
                }
                let expr = dslx::to_match(terms);
                let (matcher, index) = match written(terms, &expr) {
                    Ok(m) => m,
                    Err(e) => {
                        let problem = format!("gives a match expression that cannot be written: {e}");
                        errs.push(dslx::DslxError { field: "spec.dslx".into(), reason: "InvalidMatch", problem });
                        return None;
                    }
                };
                Some(cache::Dslx {
                    complexity: dslx::complexity(terms),
                    dsl_len: dslx::internal_dsl_len(terms, &expr),
                    matcher,
                    index,
                })
            });
            let Some(d) = d else {
                for e in errs {
                    self.reject("Rule", meta, e.field, e.reason, &e.problem);
                }
                continue;
            };
            let upstream = match &rl.spec.service_group {
                Some(sg) => {
                    if !self.add_group("Rule", meta, Cow::Borrowed(name), sg, Some(rkey)) {
                        continue;
                    }
                    Some(name.to_string())
                }
                None => None,
            };
            let source_kind = rl.spec.source().map(|s| s.kind).filter(|k| !k.is_empty()).unwrap_or("rule");
            let key = SortKey {
                priority: rl.spec.priority,
                complexity: d.complexity,
                dsl_len: d.dsl_len,
                name,
                namespace: ns,
            };
            let frontend = snapshot
                .frontends
                .iter()
                .map(|f| &**f)
                .find(|f| ns_of(&f.metadata) == ns && name_of(&f.metadata) == ft);
            let ft_key = frontend.map_or(0, |f| f as *const Frontend as usize);
            let (mut config, errs) = match self.memo.config(rkey, ft_key) {
                Some(kept) => kept,
                None => {
                    let input =
                        features::Input { rule: rl, frontend, secrets: &self.secrets, domain: &self.opts.domain };
                    let reads = self.secrets.reads();
                    let (config, errs) = features::rule_config(&input);
                    let config = Arc::new(config);
                    if self.secrets.reads() == reads {
                        self.memo.keep_config(rkey, ft_key, &config, &errs);
                    }
                    (config, errs)
                }
            };
            for e in errs {
                self.reject("Rule", meta, e.field, e.reason, &e.problem);
            }
            if let Some(svc) = config.error_pages.as_ref().map(|ep| ep.service.clone()) {
                // (a copy of the cached features: the group is this compilation's)
                let config = Arc::make_mut(&mut config);
                match svc.and_then(|svc| self.error_group(meta, &svc)) {
                    Some(g) => config.error_pages.iter_mut().for_each(|ep| ep.upstream = Some(g.clone())),
                    None => config.error_pages = None,
                }
            }
            let rule = HttpRule {
                name: name.into(),
                priority: rl.spec.priority,
                complexity: d.complexity,
                source: Source { kind: source_kind.into(), namespace: ns.into(), name: name.into() },
                matcher: d.matcher,
                index: d.index,
                upstream,
                backend_protocol: self.backend_protocol("Rule", meta, rl.spec.backend_protocol(), port),
                config,
                key: String::new(),
            };
            let rule = self.shared(port, rule);
            self.ports.entry(port).or_default().push(key, rule);
        }
    }
}

impl Ctx<'_> {
    /// The certificate map of the accepted https Frontends and of the accepted Rules on them (`certs.rs`).
    fn certificates(&self, snapshot: &Snapshot, listeners: &[Listener], now: i64) -> certs::CertMap {
        let https: HashMap<(&str, &str), u16> =
            listeners.iter().filter(|l| l.tls).map(|l| ((l.namespace.as_str(), l.name.as_str()), l.port)).collect();
        let mut fts: Vec<(&Frontend, u16)> = snapshot
            .frontends
            .iter()
            .map(|f| &**f)
            .filter(|f| self.selected(&f.metadata))
            .filter_map(|f| https.get(&(ns_of(&f.metadata), name_of(&f.metadata))).map(|p| (f, *p)))
            .collect();
        fts.sort_by(|a, b| {
            (ns_of(&a.0.metadata), name_of(&a.0.metadata)).cmp(&(ns_of(&b.0.metadata), name_of(&b.0.metadata)))
        });
        let https_ports: BTreeSet<u16> = https.values().copied().collect();
        let accepted_rules: HashMap<(&str, &str), u16> = self
            .ports
            .iter()
            .filter(|(p, _)| https_ports.contains(p))
            .flat_map(|(p, entries)| {
                entries
                    .iter()
                    .filter(|(_, r)| r.source.kind != "ft_default_router")
                    .map(move |(k, _)| ((k.namespace, k.name), *p))
            })
            .collect();
        let mut rules: Vec<(&Rule, u16)> = snapshot
            .rules
            .iter()
            .map(|r| &**r)
            .filter(|r| self.selected(&r.metadata))
            .filter_map(|r| accepted_rules.get(&(ns_of(&r.metadata), name_of(&r.metadata))).map(|p| (r, *p)))
            .collect();
        rules.sort_by(|a, b| {
            (ns_of(&a.0.metadata), name_of(&a.0.metadata)).cmp(&(ns_of(&b.0.metadata), name_of(&b.0.metadata)))
        });
        certs::build(snapshot.secrets.iter().map(|s| &**s), &fts, &rules, snapshot.tls_fallback.as_ref(), now)
    }
}

/// Compile a snapshot into the policy pushed to the data plane, the listeners nginx needs, and the objects
/// left out.
pub fn compile(snapshot: &Snapshot, opts: &CompileOptions) -> Compiled {
    compile_with(snapshot, opts, None, cache::Memo::default()).0
}

/// [`compile`] as a repeated compiler does it. `prev` is the policy compiled before: the content keys of unchanged
/// rules are taken from it ([`Policy::set_rule_keys_from`]). `cache` gives what the compilations before computed
/// (`cache.rs`: the dslx products, features and backend group of every unchanged Rule) and keeps what this one
/// computes. The result is the same as [`compile`]'s.
pub fn compile_cached(
    snapshot: &Snapshot,
    opts: &CompileOptions,
    prev: Option<&Policy>,
    cache: &mut cache::CompileCache,
) -> Compiled {
    let (compiled, memo) = compile_with(snapshot, opts, prev, cache.begin(opts));
    cache.finish(memo, snapshot);
    compiled
}

fn compile_with(
    snapshot: &Snapshot,
    opts: &CompileOptions,
    prev: Option<&Policy>,
    memo: cache::Memo,
) -> (Compiled, cache::Memo) {
    let mut ctx = Ctx {
        opts,
        name_label: crd::label_name(&opts.domain),
        service_upstream: backends::service_upstream_annotation(&opts.domain),
        lookup: Lookup::new(snapshot.services.iter().map(|s| &**s), snapshot.endpoint_slices.iter().map(|s| &**s)),
        rejects: Vec::new(),
        groups: HashMap::with_capacity(snapshot.rules.len() + snapshot.frontends.len()),
        ports: BTreeMap::new(),
        prev,
        prev_rules: None,
        secrets: features::SecretIndex::new(snapshot.secrets.iter().map(|s| &**s)),
        stream: Vec::new(),
        stream_fts: BTreeSet::new(),
        grpc_ports: BTreeSet::new(),
        memo,
        identity: Vec::new(),
    };
    let known: BTreeSet<(&str, &str)> = snapshot
        .frontends
        .iter()
        .filter(|f| ctx.selected(&f.metadata))
        .map(|f| (ns_of(&f.metadata), name_of(&f.metadata)))
        .collect();
    let mut listeners = Vec::new();
    let accepted = ctx.frontends(snapshot, &mut listeners);
    ctx.rules(snapshot, &accepted, &known);
    let cert_map = ctx.certificates(snapshot, &listeners, certs::now_unix());
    ctx.rejects.extend(cert_map.rejects);
    let certificates = cert_map.certificates;

    let mut http = BTreeMap::new();
    for (port, ranked) in std::mem::take(&mut ctx.ports) {
        http.insert(port.to_string(), HttpPort { rules: ranked.into_sorted() });
    }
    let backend_groups = dedupe_groups(sorted_groups(ctx.groups), &mut http);
    let mut policy =
        Policy { version: POLICY_VERSION, generation: opts.generation, http, backend_groups, certificates };
    policy.set_rule_keys_from(prev);
    let mut stream = ctx.stream;
    stream.sort_by_key(|l| (l.port, l.proto));
    let compiled = Compiled {
        policy: std::sync::Arc::new(policy),
        listeners,
        rejects: ctx.rejects,
        stream,
        certificates_change_at: cert_map.next_change,
    };
    (compiled, ctx.memo)
}

/// The backend groups by name (names are distinct).
fn sorted_groups(groups: HashMap<Cow<str>, (Arc<BackendGroup>, GroupOwner)>) -> Vec<Arc<BackendGroup>> {
    let mut v: Vec<Arc<BackendGroup>> = groups.into_values().map(|(g, _)| g).collect();
    v.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Rules whose backends are the same (same endpoints, weights and affinity) share one group: with many rules
/// over few Services this keeps the policy small and the per-worker balancer build cheap. The group keeps the
/// smallest name among those that had this content; rules are pointed at it.
/// `groups` are sorted by name; the rules of `http` are pointed at the kept groups, which are returned.
fn dedupe_groups(groups: Vec<Arc<BackendGroup>>, http: &mut BTreeMap<String, HttpPort>) -> Vec<Arc<BackendGroup>> {
    // groups come sorted by name, so the first of a content is the smallest name.
    // The first group of each content, by its position in `groups`: 4 bytes a group, where a map of contents to
    // names took ~1.3 MB at 10,000 groups (alive at the end of every compilation).
    let mut canonical = positions::Positions::with_capacity(groups.len());
    let mut rename: HashMap<&str, &str> = HashMap::new(); // dropped name -> kept name
    let mut keep = Vec::with_capacity(groups.len());
    for (i, g) in groups.iter().enumerate() {
        let first = canonical.file(&groups, |g| group_content(g), i).map(|j| *j as usize);
        match first.filter(|&j| j != i).and_then(|j| groups.get(j)) {
            Some(kept) if !g.backends.is_empty() => {
                rename.insert(&g.name, &kept.name);
                keep.push(false);
            }
            _ => keep.push(true),
        }
    }
    if !rename.is_empty() {
        let renamed = |u: Option<&String>| u.is_some_and(|u| rename.contains_key(u.as_str()));
        for rule in http.values_mut().flat_map(|p| p.rules.iter_mut()) {
            let ep = renamed(rule.config.error_pages.as_ref().and_then(|e| e.upstream.as_ref()));
            if !renamed(rule.upstream.as_ref()) && !ep {
                continue; // not copied when shared with the previous policy (nor its features with the cache)
            }
            let rule = rule.make_mut();
            let ep = match ep {
                true => Arc::make_mut(&mut rule.config).error_pages.as_mut().and_then(|e| e.upstream.as_mut()),
                false => None,
            };
            for u in rule.upstream.iter_mut().chain(ep) {
                if let Some(kept) = rename.get(u.as_str()) {
                    u.clear();
                    u.push_str(kept);
                }
            }
        }
    }
    drop(rename);
    groups.into_iter().zip(keep).filter(|(_, k)| *k).map(|(g, _)| g).collect()
}

/// What makes two backend groups the same: mode, affinity and backends (structural equality is equality of
/// their JSON: strings and numbers only).
type GroupContent<'a> = (&'a str, &'a str, &'a str, &'a [crate::policy::Backend]);

fn group_content(g: &BackendGroup) -> GroupContent<'_> {
    (&g.mode, &g.session_affinity_policy, &g.session_affinity_attribute, &g.backends)
}

impl Ctx<'_> {
    /// The policy's `backend_protocol` of a Rule or Frontend default backend on `port`, lower-cased: `""`,
    /// `http`, `https`, `grpc` or `grpcs` (anything else is reported and becomes `""`). On a grpc listener it is
    /// always `grpc` (h2c to the backend) or `grpcs` (`https`/`grpcs`).
    fn backend_protocol(&mut self, kind: &str, meta: &dyn Meta, spec: &str, port: u16) -> String {
        let mut p = spec.trim().to_lowercase();
        if !matches!(p.as_str(), "" | "http" | "https" | "grpc" | "grpcs") {
            let problem = format!("is {spec:?}, not one of http, https, grpc, grpcs: the listener's default is used");
            self.reject(kind, meta, "spec.backendProtocol".into(), "InvalidBackendProtocol", &problem);
            p.clear();
        }
        if self.grpc_ports.contains(&port) {
            return if matches!(p.as_str(), "https" | "grpcs") { "grpcs" } else { "grpc" }.to_string();
        }
        p
    }
}

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
