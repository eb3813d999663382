//! One claimed Ingress → the Frontends and Rules it needs (controlplane.md §2.2, §2.3).

use super::annotations::{Annotations, PathAnnotations};
use super::claim::{claims, frontend_at, namespace_project};
use super::{AlbIngressConfig, IngressWarning, IngressWorld, SslStrategy};
use crate::crd::{
    self, DslxTerm, Frontend, FrontendSpec, PackedDslx, RuleObject, RuleSpec, ServiceGroup, ServiceRef, Source,
};
use crate::ingress::object::IngressBackend;
use crate::ingress::Ingress;
use crate::policy::config::Redirect;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// `spec.source.type` / `alb2.<d>/source-type` of everything generated from an Ingress.
pub const SOURCE_TYPE: &str = "ingress";
/// Label values are at most 63 characters.
const LABEL_VALUE_MAX: usize = 63;
/// An ImplementationSpecific path containing one of these is a regex.
const REGEX_CHARS: &[char] = &['^', '$', '(', ')', ':', '?', '[', ']', '*', '\\'];

/// Path index of the extra Rule answering `/` of a host with the `app-root` redirect.
pub const APP_ROOT_PATH_INDEX: usize = 1_000_000;
/// Path index of the extra Rule redirecting the www / non-www twin of a host (`from-to-www-redirect`).
pub const WWW_PATH_INDEX: usize = 1_000_001;

/// `alb2.<d>/source-ingress-rule-index` (Rule annotation): identity of an ingress Rule, with the path index.
pub fn annotation_rule_index(domain: &str) -> String {
    format!("alb2.{domain}/source-ingress-rule-index")
}

/// `alb2.<d>/source-ingress-path-index` (Rule annotation).
pub fn annotation_path_index(domain: &str) -> String {
    format!("alb2.{domain}/source-ingress-path-index")
}

/// What one claimed Ingress needs.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// The Frontends the Ingress lands on: existing ones (unchanged, or with this Ingress's default backend
    /// when they had none) and missing ones to create (no uid).
    pub frontends: Vec<Frontend>,
    /// One Rule per path per Frontend. Rules of a Frontend without a uid (not created yet) have no
    /// ownerReference: the next pass adds it.
    pub rules: Vec<RuleObject>,
    pub warnings: Vec<IngressWarning>,
    /// `(port, "http"|"https")` of the Frontends, for `status.loadBalancer`.
    pub ports: Vec<(u16, &'static str)>,
}

/// `<alb>-<port zero-padded to 5>`.
pub fn frontend_name(alb: &str, port: u16) -> String {
    format!("{alb}-{port:05}")
}

/// `<ftName>-<4 chars>`, lower case; the 4 chars are derived from the Ingress, the rule and path indexes, the
/// Frontend and `attempt` (bumped only to avoid a name already taken), so every computation agrees.
pub fn rule_name(ft_name: &str, ing_ns: &str, ing_name: &str, r: usize, p: usize, attempt: u32) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let sum = Sha256::digest(format!("{ing_ns}/{ing_name}/{r}/{p}/{ft_name}/{attempt}").as_bytes());
    let mut n = u64::from_be_bytes(sum[..8].try_into().expect("8 bytes"));
    let mut suffix = String::with_capacity(4);
    for _ in 0..4 {
        suffix.push(ALPHABET[(n % 36) as usize] as char);
        n /= 36;
    }
    format!("{ft_name}-{suffix}").to_lowercase()
}

fn truncate_label(v: &str) -> String {
    v.chars().take(LABEL_VALUE_MAX).collect()
}

/// The URL row of a path (§2.3 table), `None` for an empty path.
#[cfg(test)]
pub fn url_row(path: &str, path_type: &str) -> Option<Vec<String>> {
    url_row_with(path, path_type, false)
}

/// [`url_row`]; `regex` (ingress-nginx `use-regex`, or a rewrite target with captures): a Prefix or
/// ImplementationSpecific path is a regex.
pub fn url_row_with(path: &str, path_type: &str, regex: bool) -> Option<Vec<String>> {
    if path.is_empty() {
        return None;
    }
    let row = |op: &str, v: String| Some(vec![op.to_string(), v]);
    match path_type {
        "Exact" => row("EQ", path.into()),
        _ if regex => row("REGEX", if path.starts_with('^') { path.into() } else { format!("^{path}") }),
        "Prefix" => row("STARTS_WITH", path.into()),
        // ImplementationSpecific, unset (or unknown).
        _ if path.contains(REGEX_CHARS) => {
            row("REGEX", if path.starts_with('^') { path.into() } else { format!("^{path}") })
        }
        _ => row("STARTS_WITH", path.into()),
    }
}

/// The HOST row of a host: `*…` → ENDS_WITH, else EQ; lower-cased (request hosts are lower case; the original
/// kept the case, which made upper-case hosts unreachable). `None` for an empty host.
pub fn host_row(host: &str) -> Option<Vec<String>> {
    if host.is_empty() {
        return None;
    }
    let host = host.to_ascii_lowercase();
    let op = if host.starts_with('*') { "ENDS_WITH" } else { "EQ" };
    Some(vec![op.to_string(), host])
}

/// The dslx of a path: URL term first, then HOST.
#[cfg(test)]
pub fn path_dslx(host: &str, path: &str, path_type: &str) -> Vec<DslxTerm> {
    dslx_of(url_row(path, path_type), host, &[])
}

/// URL term (if any), then the HOST term: `host` and its `aliases` (ORed rows; none when `host` is empty).
fn dslx_of(url: Option<Vec<String>>, host: &str, aliases: &[String]) -> Vec<DslxTerm> {
    let mut out = Vec::new();
    if let Some(row) = url {
        out.push(DslxTerm { kind: "URL".into(), key: None, values: vec![row] });
    }
    if let Some(row) = host_row(host) {
        let mut rows = vec![row];
        for a in aliases {
            if let Some(r) = host_row(a).filter(|r| !rows.contains(r)) {
                rows.push(r);
            }
        }
        out.push(DslxTerm { kind: "HOST".into(), key: None, values: rows });
    }
    out
}

/// `config.rewrite` for a `rewrite-target` with ingress-nginx semantics: the whole path is replaced by the
/// target, whose `$n` are the captures of the path regex (a non-regex path: the target verbatim).
pub fn rewrite_config(url: Option<&Vec<String>>, target: &str) -> Value {
    let regex = match url.map(|r| (r[0].as_str(), r[1].as_str())) {
        Some(("REGEX", re)) => format!("^(?:{}).*", re.strip_prefix('^').unwrap_or(re)),
        _ => ".*".to_string(),
    };
    json!({"regex": regex, "target": target})
}

/// The display string of the original (`fmt("%v", dslx)`), e.g. `[{[[STARTS_WITH /a]] URL }]`.
pub fn dsl_string(dslx: &[DslxTerm]) -> String {
    let terms: Vec<String> = dslx
        .iter()
        .map(|t| {
            let rows: Vec<String> = t.values.iter().map(|r| format!("[{}]", r.join(" "))).collect();
            format!("{{[{}] {} {}}}", rows.join(" "), t.kind, t.key.as_deref().unwrap_or(""))
        })
        .collect();
    format!("[{}]", terms.join(" "))
}

/// One path (or an extra redirect of the Ingress), ready to become a Rule on each Frontend.
struct PathRule {
    r: usize,
    p: usize,
    /// `spec.domain`.
    host: String,
    path: String,
    dslx: Vec<DslxTerm>,
    /// `None`: redirect-only.
    service: Option<ServiceRef>,
    priority: i64,
    /// `None` for the extra redirect Rules.
    annos: Option<PathAnnotations>,
    backend_protocol: String,
    rewrite: Option<Value>,
    /// Fixed redirect of an extra Rule.
    redirect: Option<Redirect>,
}

struct Translator<'a> {
    cfg: &'a AlbIngressConfig,
    world: &'a IngressWorld<'a>,
    ing: &'a Ingress,
    ns: &'a str,
    name: &'a str,
    annos: Annotations<'a>,
    warnings: Vec<IngressWarning>,
}

impl<'a> Translator<'a> {
    fn warn(&mut self, reason: &str, message: String) {
        let w = IngressWarning {
            namespace: self.ns.to_string(),
            name: self.name.to_string(),
            reason: reason.into(),
            message,
        };
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    fn source(&self) -> Source {
        Source { kind: SOURCE_TYPE.into(), name: self.name.into(), namespace: self.ns.into() }
    }

    /// The Service port of a backend: `port.number` as is, `port.name` through the Service's TCP ports.
    fn backend_service(&mut self, b: &IngressBackend, field: &str) -> Option<ServiceRef> {
        if b.resource.is_some() {
            let msg = format!("{field}.resource: resource backends are not supported; skipped");
            self.warn("UnsupportedBackend", msg);
            return None;
        }
        let Some(svc) = b.service.as_ref() else {
            self.warn("InvalidBackend", format!("{field}: no service; skipped"));
            return None;
        };
        let port = svc.port.as_ref();
        let number = match (port.and_then(|p| p.number), port.and_then(|p| p.name.as_deref())) {
            (Some(n), _) => n,
            (None, Some(pname)) if !pname.is_empty() => {
                let found = self.world.services.iter().find(|s| {
                    s.metadata.namespace.as_deref() == Some(self.ns) && s.metadata.name == Some(svc.name.clone())
                });
                let Some(service) = found else {
                    let msg = format!(
                        "{field}.service.port.name: {pname:?} cannot be resolved: Service {}/{} not found; skipped",
                        self.ns, svc.name
                    );
                    self.warn("ServicePortNotFound", msg);
                    return None;
                };
                let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
                let hit = ports
                    .into_iter()
                    .flatten()
                    .find(|sp| sp.name.as_deref() == Some(pname) && sp.protocol.as_deref().is_none_or(|p| p == "TCP"));
                let Some(sp) = hit else {
                    let msg = format!(
                        "{field}.service.port.name: {pname:?} is not a TCP port of Service {}/{}; skipped",
                        self.ns, svc.name
                    );
                    self.warn("ServicePortNotFound", msg);
                    return None;
                };
                sp.port
            }
            _ => {
                self.warn("InvalidBackend", format!("{field}.service.port: neither number nor name; skipped"));
                return None;
            }
        };
        Some(ServiceRef { name: svc.name.clone(), namespace: self.ns.into(), port: number, weight: Some(100) })
    }

    fn rules(&self) -> &'a [crate::ingress::object::IngressRule] {
        self.ing.spec.as_ref().and_then(|s| s.rules.as_deref()).unwrap_or(&[])
    }

    /// Hosts with TLS (lower case) → certificate name for Rules (`<ingNs>_<secret>` from `spec.tls`, else the
    /// annotation's `ns/name`; `""` when `spec.tls` lists the host without a secret).
    fn tls_hosts(&mut self) -> BTreeMap<String, String> {
        let mut out = match self.annos.tls() {
            Ok(m) => m,
            Err(e) => {
                self.warn("InvalidAnnotation", e.message("the annotation is ignored"));
                BTreeMap::new()
            }
        };
        let tls = self.ing.spec.as_ref().and_then(|s| s.tls.as_deref()).unwrap_or(&[]);
        // spec.tls wins: the first entry listing a host with a secret gives its certificate.
        let mut from_spec: BTreeMap<String, String> = BTreeMap::new();
        for t in tls {
            let cert = t.secret_name.as_deref().filter(|s| !s.is_empty()).map(|s| format!("{}_{s}", self.ns));
            for h in t.hosts.iter().flatten() {
                let e = from_spec.entry(h.to_ascii_lowercase()).or_default();
                if e.is_empty() {
                    *e = cert.clone().unwrap_or_default();
                }
            }
        }
        for (h, c) in from_spec {
            if !c.is_empty() || !out.contains_key(&h) {
                out.insert(h, c);
            }
        }
        out
    }

    /// (http, https) needed by the Ingress (§2.2 table).
    fn needs(&mut self, tls: &BTreeMap<String, String>) -> (bool, bool) {
        let enable_https = match self.annos.enable_https() {
            Ok(v) => v,
            Err(e) => {
                self.warn("InvalidAnnotation", e.message("the SSL strategy decides"));
                None
            }
        };
        let (mut http, mut https) = (false, false);
        let not_false = enable_https != Some(false);
        for rule in self.rules() {
            let host = rule.host.as_deref().unwrap_or("").to_ascii_lowercase();
            match self.cfg.ssl_strategy {
                _ if tls.contains_key(&host) => https = true,
                SslStrategy::Both if not_false => (http, https) = (true, true),
                SslStrategy::Always if not_false => https = true,
                SslStrategy::Request if enable_https == Some(true) => https = true,
                _ => http = true,
            }
        }
        let default_backend = self.ing.spec.as_ref().is_some_and(|s| s.default_backend.is_some());
        if self.rules().is_empty() && default_backend {
            http = true;
        }
        // An explicit `ssl-redirect: "true"` / `force-ssl-redirect: "true"` asks for http → https redirects:
        // the Ingress also lands on the http Frontend (whose Rules then redirect) even if all its hosts have TLS.
        if https && !http {
            let paths = self.rules().iter().enumerate().flat_map(|(r, rule)| {
                let n = rule.http.as_ref().map_or(0, |h| h.paths.len());
                (0..n).map(move |p| (r, p))
            });
            let paths: Vec<(usize, usize)> = paths.collect();
            http = paths.into_iter().any(|at| self.annos.asks_ssl_redirect(at));
        }
        (http && self.cfg.http_port != 0, https && self.cfg.https_port != 0)
    }

    /// The default backend, only when the Ingress has no rules: (service group, backend protocol).
    fn default_backend(&mut self) -> Option<(ServiceGroup, String)> {
        let b = self.ing.spec.as_ref().and_then(|s| s.default_backend.as_ref())?;
        if !self.rules().is_empty() {
            return None;
        }
        let svc = self.backend_service(b, "spec.defaultBackend")?;
        let proto = match self.annos.backend_protocol(None) {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => {
                self.warn("InvalidAnnotation", e.message("the default backend is not used"));
                return None;
            }
        };
        Some((ServiceGroup { services: vec![svc], ..Default::default() }, proto))
    }

    fn new_frontend(&self, port: u16, proto: &str) -> Frontend {
        let cfg = self.cfg;
        let name = frontend_name(&cfg.alb_name, port);
        let owner = cfg.alb_uid.as_ref().map(|uid| OwnerReference {
            api_version: format!("{}/v2beta1", crd::GROUP),
            kind: "ALB2".into(),
            name: cfg.alb_name.clone(),
            uid: uid.clone(),
            ..Default::default()
        });
        let cert = match proto {
            "https" => cfg.default_ssl_cert.as_deref().unwrap_or("").replace('/', "_"),
            _ => String::new(),
        };
        Frontend {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(cfg.alb_namespace.clone()),
                labels: Some(BTreeMap::from([(crd::label_name(&cfg.domain), cfg.alb_name.clone())])),
                owner_references: owner.map(|o| vec![o]),
                ..Default::default()
            },
            spec: FrontendSpec {
                port: i32::from(port),
                protocol: proto.into(),
                certificate_name: cert,
                source: Some(self.source()),
                ..Default::default()
            },
            status: None,
        }
    }

    /// The Frontends needed, existing or new, with the default backend applied where allowed.
    fn frontends(&mut self, http: bool, https: bool) -> Vec<(Frontend, &'static str)> {
        let default_backend = self.default_backend();
        let mut out = Vec::new();
        for (needed, port, proto) in [(http, self.cfg.http_port, "http"), (https, self.cfg.https_port, "https")] {
            if !needed {
                continue;
            }
            let mut ft = match frontend_at(self.cfg, self.world.frontends, port) {
                Some(ft) if ft.spec.protocol != proto => {
                    let msg = format!(
                        "Frontend {}/{} on port {port} has protocol {:?}, not {proto}: no {proto} Rules",
                        self.cfg.alb_namespace,
                        ft.metadata.name.as_deref().unwrap_or(""),
                        ft.spec.protocol
                    );
                    self.warn("FrontendProtocolConflict", msg);
                    continue;
                }
                Some(ft) => ft.clone(),
                None => self.new_frontend(port, proto),
            };
            let has_group = ft.spec.service_group.as_ref().is_some_and(|sg| !sg.services.is_empty());
            if let (false, Some((sg, bp))) = (has_group, default_backend.as_ref()) {
                ft.spec.service_group = Some(sg.clone());
                ft.spec.backend_protocol = bp.clone();
                ft.spec.source = Some(self.source());
            }
            out.push((ft, proto));
        }
        out
    }

    /// Every path that can become a Rule.
    fn paths(&mut self) -> Vec<PathRule> {
        let aliases = match self.annos.server_alias() {
            Ok(a) => a,
            Err(e) => {
                self.warn(e.reason, e.describe());
                Vec::new()
            }
        };
        let mut out = Vec::new();
        for (r, rule) in self.rules().iter().enumerate() {
            let host = rule.host.clone().unwrap_or_default();
            let paths = rule.http.as_ref().map(|h| h.paths.as_slice()).unwrap_or(&[]);
            for (p, path) in paths.iter().enumerate() {
                let field = format!("spec.rules[{r}].http.paths[{p}].backend");
                let Some(service) = self.backend_service(&path.backend, &field) else { continue };
                let (annos, bad) = self.annos.for_path(r, p, self.world.services);
                for b in bad {
                    self.warn(b.reason, b.describe());
                }
                let backend_protocol = match &annos.backend_protocol {
                    Ok(bp) => bp.clone(),
                    Err(e) => {
                        self.warn(e.reason, e.message("this path gets no Rule"));
                        continue;
                    }
                };
                let url = path.path.clone().unwrap_or_default();
                let row = url_row_with(&url, &path.path_type, annos.path_is_regex());
                let rewrite = annos.rewrite_target.as_deref().map(|t| rewrite_config(row.as_ref(), t));
                let dslx = dslx_of(row, &host, &aliases);
                if dslx.is_empty() {
                    let msg = format!("spec.rules[{r}].http.paths[{p}]: no host and no path: the Rule matches nothing");
                    self.warn("EmptyMatch", msg);
                }
                out.push(PathRule {
                    r,
                    p,
                    host: host.clone(),
                    path: url,
                    dslx,
                    service: Some(service),
                    priority: annos.priority,
                    annos: Some(annos),
                    backend_protocol,
                    rewrite,
                    redirect: None,
                });
            }
        }
        self.extra_rules(&aliases, &mut out);
        out
    }

    /// `app-root` (a Rule per host answering `/` with a 302) and `from-to-www-redirect` (a Rule per host for
    /// its www / non-www twin answering 308 to the host).
    fn extra_rules(&mut self, aliases: &[String], out: &mut Vec<PathRule>) {
        let app_root = self.annos.app_root().unwrap_or_else(|e| {
            self.warn(e.reason, e.describe());
            None
        });
        let www = self.annos.www_redirect().unwrap_or_else(|e| {
            self.warn(e.reason, e.describe());
            false
        });
        let hosts: Vec<String> =
            self.rules().iter().map(|r| r.host.clone().unwrap_or_default().to_ascii_lowercase()).collect();
        let mut seen = BTreeSet::new();
        for (r, host) in hosts.iter().enumerate() {
            if !seen.insert(host.clone()) {
                continue;
            }
            let priority = out
                .iter()
                .filter(|pr| pr.annos.is_some() && pr.host.eq_ignore_ascii_case(host))
                .map(|pr| pr.priority)
                .min()
                .unwrap_or(super::DEFAULT_RULE_PRIORITY);
            let extra = |p: usize, host: &str, dslx: Vec<DslxTerm>, redirect: Redirect| PathRule {
                r,
                p,
                host: host.to_string(),
                path: String::new(),
                dslx,
                service: None,
                priority,
                annos: None,
                backend_protocol: String::new(),
                rewrite: None,
                redirect: Some(redirect),
            };
            if let Some(root) = &app_root {
                let dslx = dslx_of(Some(vec!["EQ".into(), "/".into()]), host, aliases);
                let redirect = Redirect { url: Some(root.clone()), code: Some(302), ..Default::default() };
                out.push(extra(APP_ROOT_PATH_INDEX, host, dslx, redirect));
            }
            if www && !host.is_empty() && !host.starts_with('*') {
                let twin = match host.strip_prefix("www.") {
                    Some(bare) => bare.to_string(),
                    None => format!("www.{host}"),
                };
                if hosts.contains(&twin) || twin.is_empty() {
                    continue;
                }
                let dslx = dslx_of(None, &twin, &[]);
                let redirect = Redirect {
                    host: Some(host.clone()),
                    code: Some(308),
                    keep_query: Some(true),
                    ..Default::default()
                };
                out.push(extra(WWW_PATH_INDEX, &twin, dslx, redirect));
            }
        }
    }

    /// The redirect of a path Rule: `temporal-`/`permanent-redirect`, else (http Frontend only)
    /// `force-ssl-redirect`, or `ssl-redirect` (default true) when the host has TLS.
    fn redirect_of(&self, pr: &PathRule, proto: &str, host_tls: bool) -> Option<Redirect> {
        let Some(a) = pr.annos.as_ref() else { return pr.redirect.clone() };
        if a.redirect.is_some() {
            return a.redirect.clone();
        }
        let ssl = a.force_ssl_redirect || a.ssl_redirect.unwrap_or(true) && host_tls;
        if proto != "http" || !ssl {
            return None;
        }
        let port = self.cfg.https_port;
        Some(Redirect {
            scheme: Some("https".into()),
            port: (port != 443 && port != 0).then_some(port),
            code: Some(308),
            keep_query: Some(true),
            ..Default::default()
        })
    }

    fn rule(
        &self,
        ft: &Frontend,
        proto: &str,
        pr: &PathRule,
        cert: String,
        host_tls: bool,
        taken: &mut BTreeSet<String>,
    ) -> RuleObject {
        let (cfg, d) = (self.cfg, self.cfg.domain.as_str());
        let ft_name = ft.metadata.name.clone().unwrap_or_default();
        let name = (0..)
            .map(|attempt| rule_name(&ft_name, self.ns, self.name, pr.r, pr.p, attempt))
            .find(|n| !taken.contains(n))
            .expect("some attempt is free");
        taken.insert(name.clone());
        let project = namespace_project(d, self.world.namespaces, self.ns);
        let mut labels = BTreeMap::from([
            (crd::label_name(d), cfg.alb_name.clone()),
            (crd::label_frontend(d), ft_name.clone()),
            (crd::label_source_type(d), SOURCE_TYPE.to_string()),
            (crd::label_source_name(d), truncate_label(self.name)),
            (crd::label_source_ns(d), truncate_label(self.ns)),
            (crd::label_source_index(d), format!("{}-{}", pr.r, pr.p)),
        ]);
        if !project.is_empty() {
            labels.insert(crd::label_project(d), project);
        }
        let annotations = BTreeMap::from([
            (annotation_rule_index(d), pr.r.to_string()),
            (annotation_path_index(d), pr.p.to_string()),
        ]);
        let owner = ft.metadata.uid.as_ref().map(|uid| OwnerReference {
            api_version: format!("{}/v1", crd::GROUP),
            kind: "Frontend".into(),
            name: ft_name.clone(),
            uid: uid.clone(),
            ..Default::default()
        });
        let redirect = self.redirect_of(pr, proto, host_tls);
        let config = match &pr.annos {
            Some(a) => a.config(pr.rewrite.clone(), redirect.as_ref()),
            None => json!({"redirect": redirect}),
        };
        let a = pr.annos.as_ref();
        let cors = a.and_then(|a| a.cors.as_ref());
        RuleObject {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(cfg.alb_namespace.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: owner.map(|o| vec![o]),
                ..Default::default()
            },
            spec: RuleSpec {
                priority: pr.priority,
                dsl: dsl_string(&pr.dslx),
                dslx: Some(PackedDslx::new(&pr.dslx)),
                domain: pr.host.clone(),
                certificate_name: cert,
                service_group: pr
                    .service
                    .as_ref()
                    .map(|s| ServiceGroup { services: vec![s.clone()], ..Default::default() }),
                backend_protocol: pr.backend_protocol.clone(),
                url: pr.path.clone(),
                rewrite_base: pr.path.clone(),
                // The rewrite is in `config.rewrite` (ingress-nginx semantics), not in the legacy fields.
                rewrite_target: String::new(),
                enable_cors: cors.is_some(),
                cors_allow_headers: cors.and_then(|c| c.allow_headers.clone()).unwrap_or_default(),
                cors_allow_origin: cors.map(|c| c.allow_origin.join(",")).unwrap_or_default(),
                vhost: a.and_then(|a| a.vhost.clone()).unwrap_or_default(),
                source: Some(self.source()),
                description: format!("{}/{}:{}:{}", self.ns, self.name, ft.spec.port, pr.p),
                config: Some(config),
                ..Default::default()
            },
            status: None,
        }
    }

    /// Snippets (refused) and `nginx.ingress.kubernetes.io/` keys no module reads (one warning).
    fn scan(&mut self) {
        let scan = self.annos.scan();
        for k in scan.refused {
            let msg = format!("annotation {k}: snippets (raw nginx configuration) are never applied; ignored");
            self.warn("RefusedAnnotation", msg);
        }
        if !scan.unsupported.is_empty() {
            let msg = format!("annotations not supported, ignored: {}", scan.unsupported.join(", "));
            self.warn("UnsupportedAnnotation", msg);
        }
    }

    fn run(mut self, taken: &mut BTreeSet<String>) -> Expected {
        self.scan();
        let tls = self.tls_hosts();
        let (http, https) = self.needs(&tls);
        let frontends = self.frontends(http, https);
        let paths = self.paths();
        let mut rules = Vec::new();
        for (ft, proto) in &frontends {
            for pr in &paths {
                let host_tls = tls.contains_key(&pr.host.to_ascii_lowercase());
                let cert = match *proto {
                    "https" => tls.get(&pr.host.to_ascii_lowercase()).cloned().unwrap_or_default(),
                    _ => String::new(),
                };
                rules.push(self.rule(ft, proto, pr, cert, host_tls, taken));
            }
        }
        // Load balancing / affinity (balance.rs), then canary weights and header/cookie Rules (canary.rs).
        for (reason, message) in super::balance::apply(&self.annos, &self.cfg.domain, &mut rules) {
            self.warn(reason, message);
        }
        super::canary::apply(self.cfg, self.world, self.ing, &mut rules, taken);
        let ports = frontends.iter().map(|(ft, proto)| (ft.spec.port as u16, *proto)).collect();
        Expected { frontends: frontends.into_iter().map(|(ft, _)| ft).collect(), rules, warnings: self.warnings, ports }
    }
}

fn expected_with(
    cfg: &AlbIngressConfig,
    world: &IngressWorld<'_>,
    ing: &Ingress,
    taken: &mut BTreeSet<String>,
) -> Expected {
    // A canary Ingress has no Rules of its own (canary.rs): its paths are merged into the main Ingress's.
    if let Some(warnings) = super::canary::own_warnings(cfg, world, ing) {
        return Expected { warnings, ..Default::default() };
    }
    let t = Translator {
        cfg,
        world,
        ing,
        ns: ing.metadata.namespace.as_deref().unwrap_or(""),
        name: ing.metadata.name.as_deref().unwrap_or(""),
        annos: Annotations::new(ing, &cfg.domain),
        warnings: Vec::new(),
    };
    t.run(taken)
}

/// The Frontends and Rules one claimed Ingress needs (§2.2, §2.3). Call [`claims`] first.
pub fn expected(cfg: &AlbIngressConfig, world: &IngressWorld<'_>, ing: &Ingress) -> Expected {
    expected_with(cfg, world, ing, &mut BTreeSet::new())
}

fn key_of(meta: &ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// In memory (standalone): every claimed Ingress of `world.ingresses` (in namespace/name order) → objects.
/// Returns `world.frontends` with the Frontends the Ingresses created or gave a default backend, the generated
/// Rules (names unique among them) and the warnings.
pub fn translate_all(
    cfg: &AlbIngressConfig,
    world: &IngressWorld<'_>,
) -> (Vec<Frontend>, Vec<RuleObject>, Vec<IngressWarning>) {
    let mut frontends: Vec<Frontend> = world.frontends.to_vec();
    let (mut rules, mut warnings) = (Vec::new(), Vec::new());
    let mut taken = BTreeSet::new();
    let mut ings: Vec<&Ingress> = world.ingresses.iter().map(|i| &**i).collect();
    ings.sort_by_key(|i| {
        let (ns, name) = i.ns_name();
        (ns.to_string(), name.to_string())
    });
    for ing in ings {
        let w = IngressWorld { frontends: &frontends, ..*world };
        if !claims(cfg, &w, ing) {
            continue;
        }
        let exp = expected_with(cfg, &w, ing, &mut taken);
        for ft in exp.frontends {
            match frontends.iter_mut().find(|f| key_of(&f.metadata) == key_of(&ft.metadata)) {
                Some(slot) => *slot = ft,
                None => frontends.push(ft),
            }
        }
        rules.extend(exp.rules);
        warnings.extend(exp.warnings);
    }
    (frontends, rules, warnings)
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;
