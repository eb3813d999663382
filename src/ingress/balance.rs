//! ingress-nginx load-balancing annotations: cookie affinity (`affinity`, `affinity-mode`,
//! `session-cookie-*`), `upstream-hash-by`, `load-balance` and `service-upstream` (a Rule annotation that makes
//! the compiler use each Service's ClusterIP:port instead of its endpoints).
//!
//! They set the `session_affinity_policy` / `session_affinity_attribute` of every Rule of the Ingress
//! (docs/policy.md "BackendGroup"): consistent hashing on a ring, keyed by a cookie (`cookie`), a request header
//! (`header`) or the client address (`sip-hash`). Cookie attributes travel in the attribute after the name:
//! `NAME; Path=/p; Domain=d; SameSite=Lax; Secure; Max-Age=N; Expires-In=N` (`Expires-In`: seconds from the
//! moment the cookie is set; `lua/alb/features/affinity.lua` turns it into `Expires=<date>`). Every value is
//! checked here (names are tokens, no `;`, no control characters) and again by the Lua side.
//!
//! Cookie affinity wins over `upstream-hash-by` (as in ingress-nginx).

use super::annotations::{Annotations, Invalid};
use crate::crd::RuleObject;

pub const AFFINITY: &str = "nginx.ingress.kubernetes.io/affinity";
pub const AFFINITY_MODE: &str = "nginx.ingress.kubernetes.io/affinity-mode";
pub const COOKIE_NAME: &str = "nginx.ingress.kubernetes.io/session-cookie-name";
pub const COOKIE_PATH: &str = "nginx.ingress.kubernetes.io/session-cookie-path";
pub const COOKIE_DOMAIN: &str = "nginx.ingress.kubernetes.io/session-cookie-domain";
pub const COOKIE_SAMESITE: &str = "nginx.ingress.kubernetes.io/session-cookie-samesite";
pub const COOKIE_SECURE: &str = "nginx.ingress.kubernetes.io/session-cookie-secure";
pub const COOKIE_MAX_AGE: &str = "nginx.ingress.kubernetes.io/session-cookie-max-age";
pub const COOKIE_EXPIRES: &str = "nginx.ingress.kubernetes.io/session-cookie-expires";
pub const UPSTREAM_HASH_BY: &str = "nginx.ingress.kubernetes.io/upstream-hash-by";
pub const LOAD_BALANCE: &str = "nginx.ingress.kubernetes.io/load-balance";
pub const SERVICE_UPSTREAM: &str = "nginx.ingress.kubernetes.io/service-upstream";

/// Every annotation key this module reads (docs/annotations.md lists each; a test checks).
#[allow(dead_code)] // read by tests and the docs check
pub const KEYS: &[&str] = &[
    AFFINITY,
    AFFINITY_MODE,
    COOKIE_NAME,
    COOKIE_PATH,
    COOKIE_DOMAIN,
    COOKIE_SAMESITE,
    COOKIE_SECURE,
    COOKIE_MAX_AGE,
    COOKIE_EXPIRES,
    UPSTREAM_HASH_BY,
    LOAD_BALANCE,
    SERVICE_UPSTREAM,
];

/// ingress-nginx's default affinity cookie name.
pub const DEFAULT_COOKIE: &str = "INGRESSCOOKIE";
/// Longest accepted cookie path / domain.
const ATTR_MAX: usize = 256;

/// The affinity cookie: name and attributes (path `None` = the Rule's path, see [`cookie_attribute`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cookie {
    pub name: String,
    pub path: Option<String>,
    pub domain: Option<String>,
    /// `Strict`, `Lax` or `None`.
    pub samesite: Option<&'static str>,
    pub secure: bool,
    pub max_age: Option<u32>,
    /// Seconds from when the cookie is set.
    pub expires: Option<u32>,
}

/// What the annotations ask of the balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affinity {
    /// Round robin (the default).
    None,
    Cookie(Cookie),
    /// `upstream-hash-by $remote_addr` / `$binary_remote_addr`.
    SourceIp,
    /// `upstream-hash-by $http_<h>`: the header name (lower case, `-`).
    Header(String),
    /// `upstream-hash-by $cookie_<c>`.
    HashCookie(String),
}

fn invalid(key: &str, value: &str, problem: impl Into<String>) -> Invalid {
    Invalid::new(key, value, problem)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A cookie path: starts with `/`, visible ASCII without `;` and `,`.
fn is_cookie_path(s: &str) -> bool {
    s.starts_with('/') && s.len() <= ATTR_MAX && s.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';' && b != b',')
}

/// A cookie domain: letters, digits, `-` and `.`.
fn is_cookie_domain(s: &str) -> bool {
    !s.is_empty() && s.len() <= ATTR_MAX && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn parse_bool(key: &str, v: &str) -> Result<bool, Invalid> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, v, "expected \"true\" or \"false\"")),
    }
}

/// What [`parse`] found: the affinity and the notes (approximations) and problems to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub affinity: Affinity,
    /// `service-upstream: "true"`: the Rules get the annotation of
    /// [`crate::compile::backends::service_upstream_annotation`] (ClusterIP:port instead of endpoints).
    pub service_upstream: bool,
    /// `(reason, message)` of things accepted but done differently from ingress-nginx.
    pub notes: Vec<(&'static str, String)>,
    pub bad: Vec<Invalid>,
}

/// The cookie of `affinity: cookie`; each invalid attribute is dropped (reported), the others kept.
fn cookie(a: &Annotations, bad: &mut Vec<Invalid>) -> Cookie {
    let text = |key: &str| a.get(key).map(str::trim).filter(|v| !v.is_empty());
    let mut c = Cookie { name: DEFAULT_COOKIE.into(), ..Default::default() };
    if let Some(v) = text(COOKIE_NAME) {
        match is_token(v) {
            true => c.name = v.into(),
            false => bad.push(invalid(COOKIE_NAME, v, format!("not a cookie name; {DEFAULT_COOKIE} is used"))),
        }
    }
    if let Some(v) = text(COOKIE_PATH) {
        match is_cookie_path(v) {
            true => c.path = Some(v.into()),
            false => bad.push(invalid(COOKIE_PATH, v, "must start with / and hold no ; , or spaces")),
        }
    }
    if let Some(v) = text(COOKIE_DOMAIN) {
        match is_cookie_domain(v) {
            true => c.domain = Some(v.into()),
            false => bad.push(invalid(COOKIE_DOMAIN, v, "not a domain (letters, digits, - and .)")),
        }
    }
    if let Some(v) = text(COOKIE_SAMESITE) {
        match v.to_ascii_lowercase().as_str() {
            "strict" => c.samesite = Some("Strict"),
            "lax" => c.samesite = Some("Lax"),
            "none" => c.samesite = Some("None"),
            _ => bad.push(invalid(COOKIE_SAMESITE, v, "expected Strict, Lax or None")),
        }
    }
    if let Some(v) = a.get(COOKIE_SECURE) {
        match parse_bool(COOKIE_SECURE, v) {
            Ok(s) => c.secure = s,
            Err(e) => bad.push(e),
        }
    }
    for (key, slot) in [(COOKIE_MAX_AGE, &mut c.max_age), (COOKIE_EXPIRES, &mut c.expires)] {
        if let Some(v) = text(key) {
            match v.parse::<u32>() {
                Ok(n) => *slot = Some(n),
                Err(_) => bad.push(invalid(key, v, "not a number of seconds")),
            }
        }
    }
    c
}

/// `upstream-hash-by`: only the variables that name a key we can hash on.
pub fn hash_by(v: &str) -> Result<Affinity, Invalid> {
    let t = v.trim();
    if t == "$remote_addr" || t == "$binary_remote_addr" {
        return Ok(Affinity::SourceIp);
    }
    if let Some(h) = t.strip_prefix("$http_") {
        if !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Ok(Affinity::Header(h.to_ascii_lowercase().replace('_', "-")));
        }
    }
    if let Some(c) = t.strip_prefix("$cookie_") {
        if is_token(c) {
            return Ok(Affinity::HashCookie(c.to_string()));
        }
    }
    let problem = "unsupported: only $remote_addr, $binary_remote_addr, $http_<header> and $cookie_<name> are; \
                   round robin is used";
    Err(invalid(UPSTREAM_HASH_BY, v, problem))
}

/// Reads every key of [`KEYS`].
pub fn parse(a: &Annotations) -> Balance {
    let mut bad = Vec::new();
    let mut notes = Vec::new();
    let mut affinity = Affinity::None;
    let mut service_upstream = false;
    if let Some(v) = a.get(UPSTREAM_HASH_BY).filter(|v| !v.trim().is_empty()) {
        match hash_by(v) {
            Ok(h) => affinity = h,
            Err(e) => bad.push(e),
        }
    }
    if let Some(v) = a.get(AFFINITY).filter(|v| !v.trim().is_empty()) {
        match v.trim().to_ascii_lowercase().as_str() {
            "cookie" => affinity = Affinity::Cookie(cookie(a, &mut bad)),
            _ => bad.push(invalid(AFFINITY, v, "only \"cookie\" is supported")),
        }
    }
    if let Some(v) = a.get(AFFINITY_MODE).filter(|v| !v.trim().is_empty()) {
        match v.trim().to_ascii_lowercase().as_str() {
            "balanced" => {}
            "persistent" => notes.push((
                "AnnotationApproximated",
                format!(
                    "annotation {AFFINITY_MODE}: \"persistent\" behaves like \"balanced\": sessions sit on a \
                     consistent-hash ring, so when backends are added about 1/n of them move"
                ),
            )),
            _ => bad.push(invalid(AFFINITY_MODE, v, "expected balanced or persistent")),
        }
    }
    if let Some(v) = a.get(LOAD_BALANCE).filter(|v| !v.trim().is_empty()) {
        match v.trim().to_ascii_lowercase().as_str() {
            "round_robin" => {}
            "ewma" => notes.push((
                "AnnotationApproximated",
                format!("annotation {LOAD_BALANCE}: \"ewma\" is not implemented: weighted round robin is used"),
            )),
            _ => bad.push(invalid(LOAD_BALANCE, v, "expected round_robin or ewma; round robin is used")),
        }
    }
    if let Some(v) = a.get(SERVICE_UPSTREAM) {
        match parse_bool(SERVICE_UPSTREAM, v) {
            Ok(false) => {}
            Ok(true) => service_upstream = true,
            Err(e) => bad.push(e),
        }
    }
    Balance { affinity, service_upstream, notes, bad }
}

/// The `session_affinity_attribute` of a cookie on a Rule whose path is `rule_path` (`None`: a regex path or
/// none, whose cookie gets `Path=/` unless `session-cookie-path` says otherwise).
pub fn cookie_attribute(c: &Cookie, rule_path: Option<&str>) -> String {
    let path = c.path.as_deref().or(rule_path.filter(|p| is_cookie_path(p))).unwrap_or("/");
    let mut out = format!("{}; Path={path}", c.name);
    if let Some(d) = &c.domain {
        out.push_str(&format!("; Domain={d}"));
    }
    if let Some(s) = c.samesite {
        out.push_str(&format!("; SameSite={s}"));
    }
    if c.secure {
        out.push_str("; Secure");
    }
    if let Some(n) = c.max_age {
        out.push_str(&format!("; Max-Age={n}"));
    }
    if let Some(n) = c.expires {
        out.push_str(&format!("; Expires-In={n}"));
    }
    out
}

/// The literal path of a Rule (its URL term is `EQ` or `STARTS_WITH`), for the default cookie path.
fn literal_path(rule: &RuleObject) -> Option<String> {
    let terms = rule.spec.dslx.as_ref()?.get().ok()?;
    let url = terms.into_iter().find(|t| t.kind == "URL")?;
    let mut row = url.values.into_iter().next()?.into_iter();
    matches!(row.next().as_deref(), Some("EQ" | "STARTS_WITH")).then_some(())?;
    row.next()
}

/// Sets the affinity of every Rule of the Ingress; returns the `(reason, message)` warnings to report.
pub fn apply(a: &Annotations, domain: &str, rules: &mut [RuleObject]) -> Vec<(&'static str, String)> {
    let b = parse(a);
    let mut out: Vec<(&'static str, String)> =
        b.bad.iter().map(|e| ("InvalidAnnotation", e.message("the annotation is ignored"))).collect();
    out.extend(b.notes);
    for rule in rules.iter_mut() {
        if b.service_upstream {
            let key = crate::compile::backends::service_upstream_annotation(domain);
            rule.metadata.annotations.get_or_insert_default().insert(key, "true".into());
        }
        let (policy, attribute) = match &b.affinity {
            Affinity::None => continue,
            Affinity::Cookie(c) => ("cookie", cookie_attribute(c, literal_path(rule).as_deref())),
            Affinity::SourceIp => ("sip-hash", String::new()),
            Affinity::Header(h) => ("header", h.clone()),
            Affinity::HashCookie(c) => ("cookie", c.clone()),
        };
        if let Some(sg) = rule.spec.service_group.as_mut() {
            sg.session_affinity_policy = policy.into();
            sg.session_affinity_attribute = attribute;
        }
    }
    out
}

#[cfg(test)]
#[path = "balance_tests.rs"]
mod tests;
