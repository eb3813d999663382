//! ingress-nginx canary Ingresses (`nginx.ingress.kubernetes.io/canary*`).
//!
//! A canary Ingress (`canary: "true"`) never gets Rules of its own. Each of its paths names a *main* path:
//! another claimed, non-canary Ingress with the same host (case-insensitive), path and pathType. The main
//! Ingress's translation ([`apply`]) then
//! * by weight: adds the canary Service to the main Rule's serviceGroup, the main Service keeping the rest
//!   (`canary-weight` / `canary-weight-total`, in whole percent: the serviceGroup weights are 0..100);
//! * by header: adds a Rule ranked just above the main Rule (same priority, one more dslx term): header EQ
//!   `always` → canary and EQ `never` → main; with `canary-by-header-value` header EQ value → canary, with
//!   `canary-by-header-pattern` header REGEX pattern (PCRE, unanchored) → canary; each also has a header
//!   `EXIST` term, which ranks it above the cookie Rules;
//! * by cookie: the same with the cookie (`always` / `never`), ranked below the header Rules (one dslx term
//!   less) and above the main Rule.
//!
//! So the precedence is header > cookie > weight, as in ingress-nginx. The header/cookie Rules are copies of
//! the main Rule (its rewrite, timeouts, features...) with another serviceGroup; they belong to the main
//! Ingress (source, cleanup), their identity is the main path's with a suffix on the path index.
//!
//! The canary Ingress's own translation ([`own_warnings`]) only reports: invalid canary values (then nothing is
//! routed from it), paths without a main path, paths another canary already serves (one canary per main path,
//! the first by namespace/name wins) and backends that cannot be resolved.

use super::annotations::{Annotations, Invalid};
use super::claim::claims;
use super::translate::{annotation_path_index, annotation_rule_index, dsl_string, rule_name};
use super::{AlbIngressConfig, IngressWarning, IngressWorld};
use crate::crd::{self, DslxTerm, PackedDslx, RuleObject, ServiceGroup, ServiceRef};
use crate::ingress::object::IngressBackend;
use crate::ingress::Ingress;
use std::collections::BTreeSet;

pub const CANARY: &str = "nginx.ingress.kubernetes.io/canary";
pub const BY_HEADER: &str = "nginx.ingress.kubernetes.io/canary-by-header";
pub const BY_HEADER_VALUE: &str = "nginx.ingress.kubernetes.io/canary-by-header-value";
pub const BY_HEADER_PATTERN: &str = "nginx.ingress.kubernetes.io/canary-by-header-pattern";
pub const BY_COOKIE: &str = "nginx.ingress.kubernetes.io/canary-by-cookie";
pub const WEIGHT: &str = "nginx.ingress.kubernetes.io/canary-weight";
pub const WEIGHT_TOTAL: &str = "nginx.ingress.kubernetes.io/canary-weight-total";

/// Every annotation key this module reads (docs/annotations.md lists each; a test checks).
#[allow(dead_code)] // read by tests and the docs check
pub const KEYS: &[&str] = &[CANARY, BY_HEADER, BY_HEADER_VALUE, BY_HEADER_PATTERN, BY_COOKIE, WEIGHT, WEIGHT_TOTAL];

/// Longest accepted header value / pattern.
const VALUE_MAX: usize = 1024;
/// Largest accepted `canary-weight-total`.
const TOTAL_MAX: u32 = 1_000_000;

/// How the canary header is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    /// `always` → canary, `never` → main.
    AlwaysNever,
    /// This exact value → canary.
    Value(String),
    /// A PCRE matching the value → canary.
    Pattern(String),
}

/// A valid canary Ingress's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// Header name and how its value is matched.
    pub header: Option<(String, HeaderMatch)>,
    /// Cookie name (`always` / `never`).
    pub cookie: Option<String>,
    pub weight: u32,
    pub total: u32,
}

fn invalid(key: &str, value: &str, problem: impl Into<String>) -> Invalid {
    Invalid::new(key, value, problem)
}

/// An RFC 9110 token (header and cookie names).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value we can compare: printable ASCII (and spaces), not empty, not too long.
fn is_header_value(s: &str) -> bool {
    !s.is_empty() && s.len() <= VALUE_MAX && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn parse_u32(key: &str, v: &str) -> Result<u32, Invalid> {
    v.trim().parse::<u32>().map_err(|_| invalid(key, v, "not a non-negative integer"))
}

/// The canary settings of an Ingress. `Ok(None)`: not a canary (`canary` absent or `"false"`; the other
/// canary keys are then ignored, as in ingress-nginx). `Err`: a canary Ingress (or an unreadable `canary`)
/// with invalid values: nothing is routed from it.
pub fn parse(a: &Annotations) -> Result<Option<Canary>, Vec<Invalid>> {
    let Some(flag) = a.get(CANARY) else { return Ok(None) };
    match flag.trim().to_ascii_lowercase().as_str() {
        "true" => {}
        "false" => return Ok(None),
        _ => return Err(vec![invalid(CANARY, flag, "expected \"true\" or \"false\"")]),
    }
    let mut bad = Vec::new();
    let text = |key: &str| a.get(key).filter(|v| !v.trim().is_empty());

    let total = match text(WEIGHT_TOTAL).map(|v| (v, parse_u32(WEIGHT_TOTAL, v))) {
        None => 100,
        Some((_, Ok(t))) if (1..=TOTAL_MAX).contains(&t) => t,
        Some((v, Ok(_))) => {
            bad.push(invalid(WEIGHT_TOTAL, v, format!("must be between 1 and {TOTAL_MAX}")));
            100
        }
        Some((_, Err(e))) => {
            bad.push(e);
            100
        }
    };
    let weight = match text(WEIGHT).map(|v| (v, parse_u32(WEIGHT, v))) {
        None => 0,
        Some((_, Ok(w))) if w <= total => w,
        Some((v, Ok(_))) => {
            bad.push(invalid(WEIGHT, v, format!("must be between 0 and the weight total {total}")));
            0
        }
        Some((_, Err(e))) => {
            bad.push(e);
            0
        }
    };

    let mut header = None;
    let value = text(BY_HEADER_VALUE);
    let pattern = text(BY_HEADER_PATTERN);
    match text(BY_HEADER) {
        Some(h) if !is_token(h.trim()) => bad.push(invalid(BY_HEADER, h, "not a valid header name")),
        Some(h) => {
            let m = match (value, pattern) {
                // As ingress-nginx: the value wins over the pattern.
                (Some(v), _) if is_header_value(v) => Some(HeaderMatch::Value(v.to_string())),
                (Some(v), _) => {
                    let problem = format!("must be printable ASCII of at most {VALUE_MAX} bytes");
                    bad.push(invalid(BY_HEADER_VALUE, v, problem));
                    None
                }
                (None, Some(p)) => {
                    let term = DslxTerm {
                        kind: "HEADER".into(),
                        key: Some(h.trim().to_string()),
                        values: vec![vec!["REGEX".into(), p.to_string()]],
                    };
                    let errs = crate::compile::dslx::validate(&[term]);
                    if p.len() > VALUE_MAX || p.contains(['\r', '\n', '\0']) {
                        bad.push(invalid(BY_HEADER_PATTERN, p, format!("at most {VALUE_MAX} bytes, one line")));
                        None
                    } else if let Some(e) = errs.first() {
                        bad.push(invalid(BY_HEADER_PATTERN, p, e.problem.clone()));
                        None
                    } else {
                        Some(HeaderMatch::Pattern(p.to_string()))
                    }
                }
                (None, None) => Some(HeaderMatch::AlwaysNever),
            };
            header = m.map(|m| (h.trim().to_string(), m));
        }
        None => {
            for (key, v) in [(BY_HEADER_VALUE, value), (BY_HEADER_PATTERN, pattern)] {
                if let Some(v) = v {
                    bad.push(invalid(key, v, format!("needs {BY_HEADER}")));
                }
            }
        }
    }
    let cookie = match text(BY_COOKIE) {
        Some(c) if !is_token(c.trim()) => {
            bad.push(invalid(BY_COOKIE, c, "not a valid cookie name"));
            None
        }
        c => c.map(|c| c.trim().to_string()),
    };
    if !bad.is_empty() {
        return Err(bad);
    }
    Ok(Some(Canary { header, cookie, weight, total }))
}

/// `(lower-cased host, path, pathType)` of a path: what a canary and its main path share.
type PathKey = (String, String, String);

fn path_type(t: &str) -> String {
    if t.is_empty() {
        "ImplementationSpecific".into()
    } else {
        t.to_string()
    }
}

/// Every `(rule index, path index, key, backend)` of an Ingress.
fn paths(ing: &Ingress) -> Vec<(usize, usize, PathKey, &IngressBackend)> {
    let mut out = Vec::new();
    let rules = ing.spec.as_ref().and_then(|s| s.rules.as_deref()).unwrap_or(&[]);
    for (r, rule) in rules.iter().enumerate() {
        let host = rule.host.as_deref().unwrap_or("").to_ascii_lowercase();
        for (p, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let key = (host.clone(), path.path.clone().unwrap_or_default(), path_type(&path.path_type));
            out.push((r, p, key, &path.backend));
        }
    }
    out
}

/// Whether `ing` carries the canary annotation (whatever its value: [`parse`] decides). Only such Ingresses can
/// be canaries, so only they change what another Ingress translates to.
pub fn marked(ing: &Ingress) -> bool {
    ing.annotation(CANARY).is_some()
}

fn key_of(ing: &Ingress) -> (String, String) {
    (ing.metadata.namespace.clone().unwrap_or_default(), ing.metadata.name.clone().unwrap_or_default())
}

/// The claimed, valid canary Ingresses, in namespace/name order.
fn canaries<'w>(cfg: &AlbIngressConfig, world: &IngressWorld<'w>) -> Vec<(&'w Ingress, Canary)> {
    let mut out: Vec<(&Ingress, Canary)> = world
        .canaries
        .of(world.ingresses)
        .iter()
        .filter_map(|&n| world.ingresses.get(n).map(|i| &**i))
        .filter(|i| claims(cfg, world, i))
        .filter_map(|i| match parse(&Annotations::new(i, &cfg.domain)) {
            Ok(Some(c)) => Some((i, c)),
            _ => None,
        })
        .collect();
    out.sort_by_key(|(i, _)| key_of(i));
    out
}

/// Whether `ing` is a main Ingress for `key` (claimed, not a canary, has that path).
fn is_main_for(cfg: &AlbIngressConfig, world: &IngressWorld<'_>, ing: &Ingress, key: &PathKey) -> bool {
    matches!(parse(&Annotations::new(ing, &cfg.domain)), Ok(None))
        && claims(cfg, world, ing)
        && paths(ing).iter().any(|(_, _, k, _)| k == key)
}

/// The Service port of a canary backend (`port.number`, or `port.name` through the Service).
fn service_ref(world: &IngressWorld<'_>, ns: &str, b: &IngressBackend) -> Result<ServiceRef, String> {
    let svc = b.service.as_ref().ok_or("not a Service backend")?;
    let port = svc.port.as_ref();
    let number = match (port.and_then(|p| p.number), port.and_then(|p| p.name.as_deref())) {
        (Some(n), _) => n,
        (None, Some(pname)) if !pname.is_empty() => world
            .services
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(&svc.name))
            .flat_map(|s| s.spec.iter().flat_map(|sp| sp.ports.iter().flatten()))
            .find(|sp| sp.name.as_deref() == Some(pname) && sp.protocol.as_deref().is_none_or(|p| p == "TCP"))
            .map(|sp| sp.port)
            .ok_or_else(|| format!("port {pname:?} of Service {ns}/{} cannot be resolved", svc.name))?,
        _ => return Err("service.port: neither number nor name".into()),
    };
    Ok(ServiceRef { name: svc.name.clone(), namespace: ns.into(), port: number, weight: Some(100) })
}

/// The warnings of a canary Ingress's own translation; `None` when `ing` is not a canary Ingress (it is then
/// translated as usual). A canary Ingress gets no Frontends and no Rules of its own.
pub fn own_warnings(cfg: &AlbIngressConfig, world: &IngressWorld<'_>, ing: &Ingress) -> Option<Vec<IngressWarning>> {
    let (ns, name) = key_of(ing);
    let warn = |reason: &str, message: String| IngressWarning {
        namespace: ns.clone(),
        name: name.clone(),
        reason: reason.into(),
        message,
    };
    match parse(&Annotations::new(ing, &cfg.domain)) {
        Ok(None) => return None,
        Ok(Some(_)) => {}
        Err(bad) => {
            let msg = |b: &Invalid| b.message("this canary Ingress routes nothing");
            return Some(bad.iter().map(|b| warn("InvalidAnnotation", msg(b))).collect());
        }
    }
    let mut out = Vec::new();
    if ing.spec.as_ref().is_some_and(|s| s.default_backend.is_some()) {
        out.push(warn("CanaryDefaultBackend", "spec.defaultBackend of a canary Ingress is not used".into()));
    }
    let earlier: Vec<(&Ingress, Canary)> =
        canaries(cfg, world).into_iter().filter(|(i, _)| key_of(i) < key_of(ing)).collect();
    for (r, p, key, backend) in paths(ing) {
        let field = format!("spec.rules[{r}].http.paths[{p}]");
        let (host, path, ty) = &key;
        if let Err(e) = service_ref(world, &ns, backend) {
            out.push(warn("InvalidBackend", format!("{field}.backend: {e}; not routed")));
            continue;
        }
        if !world.ingresses.iter().any(|m| is_main_for(cfg, world, m, &key)) {
            let msg = format!("{field}: no main Ingress has host {host:?}, path {path:?} ({ty}): not routed");
            out.push(warn("CanaryWithoutMain", msg));
            continue;
        }
        if let Some((other, _)) = earlier.iter().find(|(i, _)| paths(i).iter().any(|(_, _, k, _)| *k == key)) {
            let (ons, oname) = key_of(other);
            let msg = format!(
                "{field}: canary Ingress {ons}/{oname} already serves host {host:?}, path {path:?}: one canary per \
                 path, not routed"
            );
            out.push(warn("CanaryConflict", msg));
        }
    }
    Some(out)
}

/// `weight` of `total` as whole percent for the (main, canary) services: a non-zero share keeps at least 1.
pub fn percent(weight: u32, total: u32) -> (i32, i32) {
    let total = u64::from(total.max(1));
    let w = u64::from(weight).min(total);
    let mut canary = ((w * 100 + total / 2) / total) as i32;
    if w > 0 && canary == 0 {
        canary = 1;
    }
    if w < total && canary == 100 {
        canary = 99;
    }
    (100 - canary, canary)
}

fn annotation_usize(rule: &RuleObject, key: &str) -> Option<usize> {
    rule.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// A copy of the main Rule `main` with one more dslx term, another serviceGroup and its own identity.
fn variant(
    main: &RuleObject,
    ing: &Ingress,
    (r, p): (usize, usize),
    (tag, terms, sg): (&str, Vec<DslxTerm>, ServiceGroup),
    domain: &str,
    taken: &mut BTreeSet<String>,
) -> RuleObject {
    let mut out = main.clone();
    let (ns, name) = key_of(ing);
    let ft = main.metadata.labels.as_ref().and_then(|l| l.get(&crd::label_frontend(domain))).cloned();
    let ft = ft.unwrap_or_default();
    let rname = (0..)
        .map(|attempt| tagged_rule_name(&ft, &ns, &name, r, p, tag, attempt))
        .find(|n| !taken.contains(n))
        .expect("some attempt is free");
    taken.insert(rname.clone());
    out.metadata.name = Some(rname);
    if let Some(a) = out.metadata.annotations.as_mut() {
        a.insert(annotation_path_index(domain), format!("{p}-{tag}"));
    }
    if let Some(l) = out.metadata.labels.as_mut() {
        l.insert(crd::label_source_index(domain), format!("{r}-{p}-{tag}"));
    }
    // (main's dslx is never undecodable: the variant of one that were would have none, and be rejected)
    let dslx = main.spec.dslx.as_ref().map_or(Ok(Vec::new()), PackedDslx::get).ok().map(|mut dslx| {
        dslx.extend(terms);
        dslx
    });
    out.spec.dsl = dslx.as_deref().map(dsl_string).unwrap_or_default();
    out.spec.dslx = dslx.map(PackedDslx::from);
    out.spec.service_group = Some(sg);
    out.spec.description = format!("{} ({tag})", main.spec.description);
    out
}

/// The name of a header/cookie Rule: [`rule_name`] of the main path with the Ingress name tagged.
fn tagged_rule_name(ft: &str, ns: &str, name: &str, r: usize, p: usize, tag: &str, attempt: u32) -> String {
    rule_name(ft, ns, &format!("{name}+{tag}"), r, p, attempt)
}

/// The Rule name for `attempt` of an ingress Rule whose path index annotation is `path_index`: `"<p>"` for an
/// ordinary Rule, `"<p>-<tag>"` for a canary header/cookie Rule. `None` when the annotation is neither.
pub fn rule_name_for(ft: &str, ns: &str, name: &str, r: usize, path_index: &str, attempt: u32) -> Option<String> {
    let (p, tag) = match path_index.split_once('-') {
        Some((p, tag)) if tag.starts_with("canary-") => (p, Some(tag)),
        Some(_) => return None,
        None => (path_index, None),
    };
    let p: usize = p.parse().ok()?;
    Some(match tag {
        Some(tag) => tagged_rule_name(ft, ns, name, r, p, tag, attempt),
        None => rule_name(ft, ns, name, r, p, attempt),
    })
}

fn term(kind: &str, key: &str, op: &str, value: &str) -> DslxTerm {
    DslxTerm { kind: kind.into(), key: Some(key.into()), values: vec![vec![op.into(), value.into()]] }
}

/// Header Rules: `EXIST` and the comparison. The redundant `EXIST` term ranks them above the cookie Rules
/// (one term, +100 complexity less), which rank above the main Rule.
fn header_terms(key: &str, op: &str, value: &str) -> Vec<DslxTerm> {
    let exist = DslxTerm { kind: "HEADER".into(), key: Some(key.into()), values: vec![vec!["EXIST".into()]] };
    vec![exist, term("HEADER", key, op, value)]
}

/// The main Ingress `ing`'s Rules after its canaries: weights in the serviceGroups, plus header/cookie Rules
/// (module docs). Rules without the rule/path index annotations are left alone.
pub fn apply(
    cfg: &AlbIngressConfig,
    world: &IngressWorld<'_>,
    ing: &Ingress,
    rules: &mut Vec<RuleObject>,
    taken: &mut BTreeSet<String>,
) {
    if !matches!(parse(&Annotations::new(ing, &cfg.domain)), Ok(None)) {
        return;
    }
    let cans = canaries(cfg, world);
    if cans.is_empty() {
        return;
    }
    let d = cfg.domain.as_str();
    let my_paths = paths(ing);
    let mut added = Vec::new();
    for rule in rules.iter_mut() {
        let r = annotation_usize(rule, &annotation_rule_index(d));
        let p = annotation_usize(rule, &annotation_path_index(d));
        let (Some(r), Some(p)) = (r, p) else { continue };
        let Some((_, _, key, _)) = my_paths.iter().find(|(rr, pp, _, _)| (*rr, *pp) == (r, p)) else { continue };
        // The first canary (by namespace/name) with this path.
        let hit = cans.iter().find_map(|(ci, c)| {
            let (cns, _) = key_of(ci);
            paths(ci).into_iter().find(|(_, _, k, _)| k == key).map(|(_, _, _, b)| (c, service_ref(world, &cns, b)))
        });
        // A canary whose backend cannot be resolved routes nothing (its own translation warns).
        let Some((c, Ok(canary_svc))) = hit else { continue };
        let main_sg = rule.spec.service_group.clone().unwrap_or_default();
        let to_canary = ServiceGroup { services: vec![canary_svc.clone()], ..main_sg.clone() };
        let mut variants = Vec::new();
        if let Some((h, m)) = &c.header {
            match m {
                HeaderMatch::AlwaysNever => {
                    variants.push(("canary-header-always", header_terms(h, "EQ", "always"), to_canary.clone()));
                    variants.push(("canary-header-never", header_terms(h, "EQ", "never"), main_sg.clone()));
                }
                HeaderMatch::Value(v) => variants.push(("canary-header", header_terms(h, "EQ", v), to_canary.clone())),
                HeaderMatch::Pattern(pat) => {
                    variants.push(("canary-header", header_terms(h, "REGEX", pat), to_canary.clone()))
                }
            }
        }
        if let Some(ck) = &c.cookie {
            variants.push(("canary-cookie-always", vec![term("COOKIE", ck, "EQ", "always")], to_canary.clone()));
            variants.push(("canary-cookie-never", vec![term("COOKIE", ck, "EQ", "never")], main_sg.clone()));
        }
        for v in variants {
            added.push(variant(rule, ing, (r, p), v, d, taken));
        }
        if c.weight > 0 {
            let (main_w, canary_w) = percent(c.weight, c.total);
            let mut sg = main_sg;
            for s in &mut sg.services {
                s.weight = Some(main_w);
            }
            sg.services.push(ServiceRef { weight: Some(canary_w), ..canary_svc });
            rule.spec.service_group = Some(sg);
        }
    }
    rules.extend(added);
}

#[cfg(test)]
#[path = "canary_tests.rs"]
mod tests;
