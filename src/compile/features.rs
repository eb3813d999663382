//! Rule features → `HttpRule.config` (docs/policy.md "Rule config (v1)"; controlplane.md §1.4, §1.6, §3.6).
//!
//! Sources, lowest to highest precedence:
//! * the Rule `spec.config` keys shared with the original ALB (`redirect`, `timeout`, `auth`) and the alb-rs
//!   extension keys that are already in policy form (`cors`, `rewrite`, `retry`, `vhost`, `rewrite_request`,
//!   `rewrite_response`);
//! * the Rule spec fields (`redirectURL`/`redirectCode`, `enableCORS`/`corsAllowOrigin`/`corsAllowHeaders`,
//!   `rewrite_base`/`rewrite_target`/`url`, `vhost`): legacy values win;
//! * the annotations `alb.rule.<d>/rewrite-request` and `alb.rule.<d>/rewrite-response` (JSON).
//!
//! `access`, `limit`, `max_body_size` and `error_pages` come from `spec.config` only; `error_pages.service` is
//! resolved into a backend group by the compiler (`mod.rs`), which fills `error_pages.upstream`.
//!
//! `timeout`, `retry` and `auth` are inherited from the Frontend's `spec.config` when the Rule has none.
//! A problem never drops the Rule: the faulty feature is left out and reported (an auth problem instead keeps
//! the Rule failing closed: `auth.basic.err` makes every request answer 500).

use crate::crd::{Frontend, Rule};
use crate::policy::config::{
    Access, Auth, BasicAuth, Cors, ErrorPages, ErrorService, ForwardAuth, Limit, PasswordHash, Redirect, Retry,
    Rewrite, RewriteRequest, RewriteResponse, RuleConfig, Timeout,
};
use k8s_openapi::api::core::v1::Secret;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// A problem found while translating; becomes a `Reject` of the Rule or Frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureError {
    pub field: String,
    pub reason: &'static str,
    pub problem: String,
}

fn err(field: impl Into<String>, reason: &'static str, problem: impl Into<String>) -> FeatureError {
    FeatureError { field: field.into(), reason, problem: problem.into() }
}

/// Secrets by namespace/name (any type), with a count of the lookups made (a result computed without any does
/// not depend on Secrets: `cache.rs`).
pub struct SecretIndex<'a>(HashMap<(&'a str, &'a str), &'a Secret>, std::cell::Cell<usize>);

impl<'a> SecretIndex<'a> {
    pub fn new(secrets: impl IntoIterator<Item = &'a Secret>) -> SecretIndex<'a> {
        SecretIndex(
            secrets
                .into_iter()
                .map(|s| {
                    let m = &s.metadata;
                    ((m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or("")), s)
                })
                .collect(),
            std::cell::Cell::new(0),
        )
    }

    /// Lookups made so far.
    pub fn reads(&self) -> usize {
        self.1.get()
    }

    /// The value of `key`, from `data` or `stringData`.
    fn get(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.1.set(self.1.get() + 1);
        let s = self.0.get(&(ns, name))?;
        let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in s.data.iter().flatten() {
            out.insert(k.clone(), v.0.clone());
        }
        for (k, v) in s.string_data.iter().flatten() {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        Some(out)
    }
}

/// `alb.rule.<d>/rewrite-request`
pub fn annotation_rewrite_request(domain: &str) -> String {
    format!("alb.rule.{domain}/rewrite-request")
}

/// `alb.rule.<d>/rewrite-response`
pub fn annotation_rewrite_response(domain: &str) -> String {
    format!("alb.rule.{domain}/rewrite-response")
}

/// Everything the translation of one Rule reads.
pub struct Input<'a> {
    pub rule: &'a Rule,
    pub frontend: Option<&'a Frontend>,
    pub secrets: &'a SecretIndex<'a>,
    pub domain: &'a str,
}

/// `spec.config.<key>` parsed as `T`; absent or `null` → `None`.
fn key<T: DeserializeOwned>(config: Option<&Value>, k: &str, errs: &mut Vec<FeatureError>) -> Option<T> {
    let v = config?.get(k)?;
    if v.is_null() {
        return None;
    }
    match serde_json::from_value::<T>(v.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            errs.push(err(format!("spec.config.{k}"), "InvalidConfig", format!("cannot be read: {e}")));
            None
        }
    }
}

/// The policy config of a Rule.
pub fn rule_config(input: &Input) -> (RuleConfig, Vec<FeatureError>) {
    let spec = &input.rule.spec;
    let mut errs = Vec::new();
    let cfg = spec.config.as_ref().filter(|v| !v.is_null());
    if let Some(c) = cfg {
        if !c.is_object() {
            errs.push(err("spec.config", "InvalidConfig", "must be an object"));
        }
    }
    let cfg = cfg.filter(|v| v.is_object());
    let ft_cfg = input.frontend.and_then(|f| f.spec.config.as_ref()).filter(|v| v.is_object());
    let mut out = RuleConfig::default();

    // redirect: spec.config.redirect, then the legacy fields (which win).
    let mut redirect: Option<Redirect> = key(cfg, "redirect", &mut errs);
    if !spec.redirect_url().is_empty() || spec.redirect_code != 0 {
        let r = redirect.get_or_insert_with(Default::default);
        if !spec.redirect_url().is_empty() {
            r.url = Some(spec.redirect_url().to_string());
        }
        if spec.redirect_code != 0 {
            match u16::try_from(spec.redirect_code) {
                Ok(c) => r.code = Some(c),
                Err(_) => r.code = Some(0),
            }
        }
    }
    out.redirect = redirect.and_then(|r| check_redirect(r, &mut errs)).map(Box::new);

    // CORS
    let mut cors: Option<Cors> = key(cfg, "cors", &mut errs);
    if spec.enable_cors {
        let c = cors.get_or_insert_with(Default::default);
        if !spec.cors_allow_origin().is_empty() {
            c.allow_origin =
                spec.cors_allow_origin().split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        }
        if !spec.cors_allow_headers().is_empty() {
            c.allow_headers = Some(spec.cors_allow_headers().to_string());
        }
    }
    out.cors = cors.and_then(|c| check_cors(c, &mut errs)).map(Box::new);

    // vhost
    let vhost: Option<String> = key(cfg, "vhost", &mut errs);
    let vhost = if spec.vhost().is_empty() { vhost.filter(|v| !v.is_empty()) } else { Some(spec.vhost().to_string()) };
    out.vhost = vhost.filter(|v| {
        let ok = header_value_ok(v);
        if !ok {
            errs.push(err("spec.vhost", "InvalidVhost", format!("{v:?} is not a valid Host header value")));
        }
        ok
    });

    // rewrite: the legacy regex fields win over spec.config.rewrite.
    let mut rewrite: Option<Rewrite> = key(cfg, "rewrite", &mut errs);
    if !spec.rewrite_target().is_empty() {
        let pattern = [spec.rewrite_base(), spec.url()].into_iter().find(|s| !s.is_empty());
        rewrite = Some(Rewrite {
            regex: Some(pattern.unwrap_or("/").to_string()),
            target: Some(spec.rewrite_target().to_string()),
            ..Default::default()
        });
    }
    out.rewrite = rewrite.and_then(|r| check_rewrite(r, &mut errs)).map(Box::new);

    // header rewrite: the annotations win over spec.config.
    let ann = |k: &str| input.rule.metadata.annotations.get(k);
    let mut rreq: Option<RewriteRequest> = key(cfg, "rewrite_request", &mut errs);
    let areq = annotation_rewrite_request(input.domain);
    if let Some(text) = ann(&areq) {
        match serde_json::from_str::<RewriteRequest>(text) {
            Ok(r) => rreq = Some(r),
            Err(e) => errs.push(err(
                format!("metadata.annotations[{areq:?}]"),
                "InvalidAnnotation",
                format!("is not a rewrite-request JSON object: {e}"),
            )),
        }
    }
    out.rewrite_request = rreq.and_then(|r| check_rewrite_request(r, &mut errs)).map(Box::new);
    let mut rresp: Option<RewriteResponse> = key(cfg, "rewrite_response", &mut errs);
    let aresp = annotation_rewrite_response(input.domain);
    if let Some(text) = ann(&aresp) {
        match serde_json::from_str::<RewriteResponse>(text) {
            Ok(r) => rresp = Some(r),
            Err(e) => errs.push(err(
                format!("metadata.annotations[{aresp:?}]"),
                "InvalidAnnotation",
                format!("is not a rewrite-response JSON object: {e}"),
            )),
        }
    }
    out.rewrite_response = rresp.and_then(|r| check_rewrite_response(r, &mut errs)).map(Box::new);

    let ns = input.rule.metadata.namespace.as_deref().unwrap_or("");

    // access, limit, max_body_size, error_pages: spec.config only
    let access: Option<Access> = key(cfg, "access", &mut errs);
    out.access = access.and_then(|a| check_access(a, &mut errs)).map(Box::new);
    let limit: Option<Limit> = key(cfg, "limit", &mut errs);
    out.limit = limit.and_then(|l| check_limit(l, &mut errs)).map(Box::new);
    let max_body: Option<u64> = key(cfg, "max_body_size", &mut errs);
    // 0 = no limit; so is anything from 2^53 on (Lua numbers are doubles: the policy API would refuse it)
    out.max_body_size = max_body.filter(|n| *n > 0 && *n < 1 << 53);
    let error_pages: Option<ErrorPagesSpec> = key(cfg, "error_pages", &mut errs);
    out.error_pages = error_pages.and_then(|e| check_error_pages(e, ns, &mut errs)).map(Box::new);

    inherited(&mut out, cfg, ft_cfg, ns, input.secrets, &mut errs);
    (out, errs)
}

/// An IPv4/IPv6 address or CIDR (`10.0.0.0/8`, `2001:db8::/32`, `::ffff:10.0.0.0/104`); host bits may be set
/// (they are ignored, as nginx's `allow` does).
pub fn cidr_ok(s: &str) -> Result<(), String> {
    let bad = || format!("{s:?} is not an IPv4/IPv6 address or CIDR");
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    if let Some(p) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let ok = !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
        if !ok || p.parse::<u32>().map_or(true, |n| n > max) {
            return Err(format!("{s:?} has an invalid prefix length (0..{max})"));
        }
    }
    Ok(())
}

/// Every entry must be an address or CIDR; one bad entry makes the Rule refuse everybody (fail closed, like
/// ingress-nginx's denied location), since dropping it could open the route.
fn check_access(a: Access, errs: &mut Vec<FeatureError>) -> Option<Access> {
    let trim = |l: Vec<String>| -> Vec<String> { l.into_iter().map(|s| s.trim().to_string()).collect() };
    let a = Access { allow: trim(a.allow), deny: trim(a.deny) };
    let mut bad = false;
    for (list, entries) in [("allow", &a.allow), ("deny", &a.deny)] {
        for (i, e) in entries.iter().enumerate() {
            if let Err(p) = cidr_ok(e) {
                errs.push(err(
                    format!("spec.config.access.{list}[{i}]"),
                    "InvalidAccess",
                    format!("{p}: the Rule refuses every request (403) until it is fixed"),
                ));
                bad = true;
            }
        }
    }
    if bad {
        return Some(Access { allow: vec![], deny: vec!["0.0.0.0/0".into(), "::/0".into()] });
    }
    (a != Access::default()).then_some(a)
}

/// Zero rates/connections mean "off"; bad whitelist entries are left out (the client stays limited), a bad
/// status falls back to 503.
fn check_limit(mut l: Limit, errs: &mut Vec<FeatureError>) -> Option<Limit> {
    l.rps = l.rps.filter(|n| *n > 0);
    l.rpm = l.rpm.filter(|n| *n > 0);
    l.connections = l.connections.filter(|n| *n > 0);
    if l.rps.is_none() && l.rpm.is_none() && l.connections.is_none() {
        return None;
    }
    let mut whitelist = Vec::new();
    for (i, e) in l.whitelist.iter().enumerate() {
        let e = e.trim();
        match cidr_ok(e) {
            Ok(()) => whitelist.push(e.to_string()),
            Err(p) => errs.push(err(
                format!("spec.config.limit.whitelist[{i}]"),
                "InvalidLimit",
                format!("{p}: left out (that address stays limited)"),
            )),
        }
    }
    l.whitelist = whitelist;
    if let Some(s) = l.status {
        if !(400..=599).contains(&s) {
            errs.push(err("spec.config.limit.status", "InvalidLimit", format!("{s} is not in 400..599: 503 is used")));
            l.status = None;
        }
    }
    Some(l)
}

/// Codes outside 400..599 are left out; `service` is required (its namespace defaults to the Rule's); an
/// `upstream` written by the user is ignored: the compiler fills it from `service`.
/// `error_pages` of `spec.config`: the policy's shape, with `service.namespace` optional (the Rule's).
#[derive(Debug, Deserialize)]
struct ErrorPagesSpec {
    #[serde(default)]
    codes: Vec<u16>,
    #[serde(default)]
    service: Option<ErrorServiceSpec>,
}

#[derive(Debug, Deserialize)]
struct ErrorServiceSpec {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    port: u16,
}

fn check_error_pages(e: ErrorPagesSpec, ns: &str, errs: &mut Vec<FeatureError>) -> Option<ErrorPages> {
    let mut codes = BTreeSet::new();
    for (i, c) in e.codes.iter().enumerate() {
        if (400..=599).contains(c) {
            codes.insert(*c);
        } else {
            errs.push(err(
                format!("spec.config.error_pages.codes[{i}]"),
                "InvalidErrorPages",
                format!("{c} is not in 400..599: left out"),
            ));
        }
    }
    let Some(svc) = e.service else {
        errs.push(err(
            "spec.config.error_pages.service",
            "InvalidErrorPages",
            "is missing: error pages need a Service {namespace, name, port}",
        ));
        return None;
    };
    if svc.name.is_empty() || svc.port == 0 {
        errs.push(err(
            "spec.config.error_pages.service",
            "InvalidErrorPages",
            "needs a Service name and a port (1..65535)",
        ));
        return None;
    }
    let namespace = if svc.namespace.is_empty() { ns.to_string() } else { svc.namespace };
    let service = ErrorService { namespace, name: svc.name, port: svc.port };
    Some(ErrorPages { codes: codes.into_iter().collect(), service: Some(service), upstream: None })
}

/// The config of a Frontend's default rule: its own `timeout`, `retry` and `auth`.
pub fn frontend_config(ft: &Frontend, secrets: &SecretIndex) -> (RuleConfig, Vec<FeatureError>) {
    let mut errs = Vec::new();
    let mut out = RuleConfig::default();
    let cfg = ft.spec.config.as_ref().filter(|v| v.is_object());
    let ns = ft.metadata.namespace.as_deref().unwrap_or("");
    inherited(&mut out, cfg, None, ns, secrets, &mut errs);
    (out, errs)
}

/// `timeout`, `retry`, `auth`: the Rule's, else the Frontend's (whole objects, controlplane.md §3.6).
fn inherited(
    out: &mut RuleConfig,
    cfg: Option<&Value>,
    ft_cfg: Option<&Value>,
    ns: &str,
    secrets: &SecretIndex,
    errs: &mut Vec<FeatureError>,
) {
    let has = |c: Option<&Value>, k: &str| c.and_then(|c| c.get(k)).is_some_and(|v| !v.is_null());
    let mut ft_errs = Vec::new();
    let pick = |k: &str| if has(cfg, k) { cfg } else { ft_cfg };
    let timeout: Option<Timeout> =
        key(pick("timeout"), "timeout", if has(cfg, "timeout") { errs } else { &mut ft_errs });
    out.timeout = timeout.and_then(|t| {
        let pos = |v: Option<u64>| v.filter(|v| *v > 0);
        let t = Timeout {
            proxy_connect_timeout_ms: pos(t.proxy_connect_timeout_ms),
            proxy_send_timeout_ms: pos(t.proxy_send_timeout_ms),
            proxy_read_timeout_ms: pos(t.proxy_read_timeout_ms),
        };
        (t != Timeout::default()).then(|| Box::new(t))
    });
    let retry: Option<Retry> = key(pick("retry"), "retry", if has(cfg, "retry") { errs } else { &mut ft_errs });
    out.retry = retry.and_then(|r| match r.tries {
        None => None,
        Some(0) => {
            errs.push(err("spec.config.retry.tries", "InvalidRetry", "must be at least 1 (1 = no retry)"));
            None
        }
        Some(n) => Some(Box::new(Retry { tries: Some(n.min(5)) })),
    });
    let (src, field) = if has(cfg, "auth") { (cfg, "spec.config.auth") } else { (ft_cfg, "Frontend spec.config.auth") };
    if let Some(a) = src.and_then(|c| c.get("auth")).filter(|v| !v.is_null()) {
        out.auth = auth(a, field, ns, secrets, errs).map(Box::new);
    }
    // Problems of the Frontend's own config are reported on the Frontend, not on every Rule inheriting it.
    drop(ft_errs);
}

const REDIRECT_CODES: [u16; 5] = [301, 302, 303, 307, 308];

fn check_redirect(mut r: Redirect, errs: &mut Vec<FeatureError>) -> Option<Redirect> {
    if r.code == Some(0) {
        r.code = None;
    }
    if let Some(c) = r.code {
        if !REDIRECT_CODES.contains(&c) {
            errs.push(err(
                "spec.config.redirect.code",
                "InvalidRedirect",
                format!("{c} is not one of 301, 302, 303, 307, 308"),
            ));
            return None;
        }
    }
    if let Some(s) = r.scheme.as_deref() {
        if s.is_empty() {
            r.scheme = None;
        } else if s != "http" && s != "https" {
            errs.push(err("spec.config.redirect.scheme", "InvalidRedirect", format!("{s:?} is not http or https")));
            return None;
        }
    }
    if r.port == Some(0) {
        r.port = None;
    }
    for (f, v) in
        [("url", &r.url), ("host", &r.host), ("prefix_match", &r.prefix_match), ("replace_prefix", &r.replace_prefix)]
    {
        if let Some(v) = v {
            if !header_value_ok(v) || v.contains(' ') {
                errs.push(err(
                    format!("spec.config.redirect.{f}"),
                    "InvalidRedirect",
                    format!("{v:?} contains a space or a control character"),
                ));
                return None;
            }
        }
    }
    let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    if r.host.as_deref() == Some("") {
        r.host = None;
    }
    if empty(&r.url) && r.scheme.is_none() && r.host.is_none() && r.port.is_none() && empty(&r.prefix_match) {
        // Only a code (e.g. a leftover redirectCode): nothing to redirect to.
        if r.code.is_some() {
            errs.push(err("spec.config.redirect", "InvalidRedirect", "has a code but no url, scheme, host or port"));
        }
        return None;
    }
    Some(r)
}

fn check_cors(mut c: Cors, errs: &mut Vec<FeatureError>) -> Option<Cors> {
    if c.allow_origin.iter().any(|o| o == "*") {
        c.allow_origin.clear();
    }
    for (f, v) in [
        ("allow_methods", &c.allow_methods),
        ("allow_headers", &c.allow_headers),
        ("expose_headers", &c.expose_headers),
    ] {
        if let Some(v) = v {
            if !header_value_ok(v) {
                errs.push(err(format!("spec.config.cors.{f}"), "InvalidCors", format!("{v:?} is not a header value")));
                return None;
            }
        }
    }
    for o in &c.allow_origin {
        if !header_value_ok(o) || o.contains([' ', ',']) {
            errs.push(err("spec.corsAllowOrigin", "InvalidCors", format!("origin {o:?} is not valid")));
            return None;
        }
    }
    Some(c)
}

fn regex_ok(pattern: &str) -> Result<(), String> {
    pcre2::bytes::RegexBuilder::new().utf(false).ucp(false).build(pattern).map(|_| ()).map_err(|e| e.to_string())
}

fn check_rewrite(r: Rewrite, errs: &mut Vec<FeatureError>) -> Option<Rewrite> {
    if r.prefix_match.as_deref().is_some_and(|p| !p.is_empty()) {
        return Some(Rewrite { prefix_match: r.prefix_match, replace_prefix: r.replace_prefix, ..Default::default() });
    }
    let target = r.target.filter(|t| !t.is_empty())?;
    let regex = r.regex.filter(|t| !t.is_empty()).unwrap_or_else(|| "/".into());
    if let Err(e) = regex_ok(&regex) {
        errs.push(err("spec.rewrite_base", "InvalidRewrite", format!("{regex:?} is not a valid regex: {e}")));
        return None;
    }
    if !header_value_ok(&target) {
        errs.push(err("spec.rewrite_target", "InvalidRewrite", format!("{target:?} contains a control character")));
        return None;
    }
    Some(Rewrite { regex: Some(regex), target: Some(target), ..Default::default() })
}

/// An HTTP token (header name).
pub fn header_name_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// No control characters (CR/LF would split headers).
pub fn header_value_ok(s: &str) -> bool {
    !s.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f)
}

fn var_name_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_headers<'a>(
    field: &str,
    names: impl Iterator<Item = &'a String>,
    values: impl Iterator<Item = &'a String>,
    errs: &mut Vec<FeatureError>,
) -> bool {
    for n in names {
        if !header_name_ok(n) {
            errs.push(err(field, "InvalidAnnotation", format!("{n:?} is not a header name")));
            return false;
        }
    }
    for v in values {
        if !header_value_ok(v) {
            errs.push(err(field, "InvalidAnnotation", format!("{v:?} contains a control character")));
            return false;
        }
    }
    true
}

fn check_rewrite_request(r: RewriteRequest, errs: &mut Vec<FeatureError>) -> Option<RewriteRequest> {
    let f = "rewrite_request";
    let names = r
        .headers
        .keys()
        .chain(r.headers_var.keys())
        .chain(r.headers_remove.iter())
        .chain(r.headers_add.keys())
        .chain(r.headers_add_var.keys());
    let values = r.headers.values().chain(r.headers_add.values().flatten());
    if !check_headers(f, names, values, errs) {
        return None;
    }
    for v in r.headers_var.values().chain(r.headers_add_var.values().flatten()) {
        if !var_name_ok(v) {
            errs.push(err(f, "InvalidAnnotation", format!("{v:?} is not a variable name")));
            return None;
        }
    }
    (r != RewriteRequest::default()).then_some(r)
}

fn check_rewrite_response(r: RewriteResponse, errs: &mut Vec<FeatureError>) -> Option<RewriteResponse> {
    let names = r.headers.keys().chain(r.headers_remove.iter()).chain(r.headers_add.keys());
    let values = r.headers.values().chain(r.headers_add.values().flatten());
    if !check_headers("rewrite_response", names, values, errs) {
        return None;
    }
    (r != RewriteResponse::default()).then_some(r)
}

/// A string with `$var` / `${var}` references: every variable name must be an identifier.
pub fn var_string_ok(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() && b[i + 1] == b'{' {
            let Some(end) = s[i + 2..].find('}') else { return Err(format!("unclosed ${{ at {i}")) };
            let name = &s[i + 2..i + 2 + end];
            if !var_name_ok(name) {
                return Err(format!("{name:?} is not a variable name"));
            }
            i += end + 3;
            continue;
        }
        i += 1;
    }
    if !header_value_ok(s) {
        return Err("contains a control character".into());
    }
    Ok(())
}

/// `auth.forward` of `spec.config` (controlplane.md §1.4).
#[derive(Debug, Deserialize)]
struct ForwardSpec {
    #[serde(default)]
    url: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    auth_headers_cm_ref: String,
    #[serde(default)]
    auth_headers: BTreeMap<String, String>,
    #[serde(default)]
    auth_request_redirect: String,
    #[serde(default)]
    upstream_headers: Vec<String>,
    #[serde(default)]
    signin: String,
    #[serde(default)]
    always_set_cookie: bool,
    #[serde(default)]
    signin_redirect_param: String,
}

/// `auth.basic` of `spec.config`.
#[derive(Debug, Deserialize)]
struct BasicSpec {
    #[serde(default)]
    auth_type: String,
    #[serde(default)]
    realm: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    secret_type: String,
}

fn auth(v: &Value, field: &str, ns: &str, secrets: &SecretIndex, errs: &mut Vec<FeatureError>) -> Option<Auth> {
    let mut out = Auth::default();
    if let Some(f) = v.get("forward").filter(|v| !v.is_null()) {
        let field = format!("{field}.forward");
        match serde_json::from_value::<ForwardSpec>(f.clone()) {
            Err(e) => {
                // Fail closed: an unreadable forward-auth config must not open the route.
                errs.push(err(&field, "InvalidAuth", format!("cannot be read: {e}")));
                out.basic = Some(BasicAuth { err: Some(format!("{field} cannot be read")), ..Default::default() });
                return Some(out);
            }
            Ok(f) => match forward(f, &field) {
                Ok(fa) => out.forward = Some(fa),
                Err(e) => {
                    let msg = e.problem.clone();
                    errs.push(e);
                    out.basic = Some(BasicAuth { err: Some(msg), ..Default::default() });
                    return Some(out);
                }
            },
        }
    }
    if let Some(b) = v.get("basic").filter(|v| !v.is_null()) {
        let field = format!("{field}.basic");
        let basic = match serde_json::from_value::<BasicSpec>(b.clone()) {
            Err(e) => {
                errs.push(err(&field, "InvalidAuth", format!("cannot be read: {e}")));
                BasicAuth { err: Some(format!("{field} cannot be read")), ..Default::default() }
            }
            Ok(b) => basic(b, &field, ns, secrets, errs),
        };
        out.basic = Some(basic);
    }
    (out != Auth::default()).then_some(out)
}

fn forward(f: ForwardSpec, field: &str) -> Result<ForwardAuth, FeatureError> {
    let bad = |sub: &str, p: String| err(format!("{field}.{sub}"), "InvalidAuth", p);
    let rest = f
        .url
        .strip_prefix("http://")
        .or_else(|| f.url.strip_prefix("https://"))
        .ok_or_else(|| bad("url", format!("{:?} is not an http:// or https:// URL", f.url)))?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if host.is_empty() || host.contains('$') {
        return Err(bad("url", format!("{:?} has no literal host", f.url)));
    }
    auth_host_ok(host, crate::nginx::resolv::available()).map_err(|e| bad("url", format!("{:?}: {e}", f.url)))?;
    var_string_ok(&f.url).map_err(|e| bad("url", e))?;
    if !f.auth_headers_cm_ref.is_empty() {
        return Err(bad("auth_headers_cm_ref", "ConfigMap references are not supported yet".into()));
    }
    let method = if f.method.is_empty() { None } else { Some(f.method.to_uppercase()) };
    if let Some(m) = &method {
        if !["GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS"].contains(&m.as_str()) {
            return Err(bad("method", format!("{m:?} is not a supported method")));
        }
    }
    for (k, v) in &f.auth_headers {
        if !header_name_ok(k) {
            return Err(bad("auth_headers", format!("{k:?} is not a header name")));
        }
        var_string_ok(v).map_err(|e| bad("auth_headers", e))?;
    }
    for h in &f.upstream_headers {
        if !header_name_ok(h) {
            return Err(bad("upstream_headers", format!("{h:?} is not a header name")));
        }
    }
    var_string_ok(&f.auth_request_redirect).map_err(|e| bad("auth_request_redirect", e))?;
    var_string_ok(&f.signin).map_err(|e| bad("signin", e))?;
    let signin = (!f.signin.is_empty()).then(|| signin_url(&f.signin, &f.signin_redirect_param));
    Ok(ForwardAuth {
        url: f.url,
        method,
        auth_headers: f.auth_headers,
        auth_request_redirect: (!f.auth_request_redirect.is_empty()).then_some(f.auth_request_redirect),
        upstream_headers: f.upstream_headers,
        signin,
        always_set_cookie: f.always_set_cookie.then_some(true),
        timeout_ms: None,
    })
}

/// The `host[:port]` of a forward auth URL: an IPv4 address, a bracketed IPv6 address or a host name (letters,
/// digits, `-`, `.`), as `lua/alb/features/auth.lua` checks it. A host name needs nginx's `resolver`:
/// `resolver_available == Some(false)` (this process's nginx has none) refuses it.
pub fn auth_host_ok(hostport: &str, resolver_available: Option<bool>) -> Result<(), String> {
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        let (ip, after) = r.split_once(']').ok_or("has an unclosed [ in its host")?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("[{ip}] is not an IPv6 address"));
        }
        (None, after.strip_prefix(':').map(Some).unwrap_or(if after.is_empty() { None } else { Some("") }))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(hostport), None),
        }
    };
    if let Some(p) = port {
        if !p.bytes().all(|c| c.is_ascii_digit()) || !matches!(p.parse::<u32>(), Ok(1..=65535)) {
            return Err(format!("the port of {hostport:?} must be a number in 1..65535"));
        }
    }
    let Some(host) = host else { return Ok(()) };
    if host.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return match host.parse::<std::net::Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("{host:?} is not an IPv4 address")),
        };
    }
    let name_ok = host.len() <= 253
        && host.split('.').enumerate().all(|(i, l)| {
            // one trailing dot (a fully qualified name) is allowed
            (l.is_empty() && i > 0 && host.ends_with('.') && i == host.split('.').count() - 1)
                || (!l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
        });
    if !name_ok {
        return Err(format!("{host:?} is not a host name (letters, digits, - and . only) or an IP address"));
    }
    if resolver_available == Some(false) {
        return Err(format!(
            "host name {host:?} needs a DNS resolver, and nginx has none: no nameserver in resolv.conf \
             (--resolv-conf) and no --resolver flag (use an IP address or give --resolver)"
        ));
    }
    Ok(())
}

/// `<signin>?<param|rd>=$pass_access_scheme://$http_host$escaped_request_uri` unless the param is present.
fn signin_url(signin: &str, param: &str) -> String {
    let param = if param.is_empty() { "rd" } else { param };
    let query = signin.split_once('?').map(|(_, q)| q).unwrap_or("");
    if query.split('&').any(|kv| kv.split('=').next() == Some(param)) {
        return signin.to_string();
    }
    let sep = if signin.contains('?') { '&' } else { '?' };
    format!("{signin}{sep}{param}=$pass_access_scheme://$http_host$escaped_request_uri")
}

/// Classifies an htpasswd hash: `apr1` or `bcrypt`.
pub fn hash_algorithm(hash: &str) -> Option<&'static str> {
    let b64 = |s: &str| s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'/');
    if let Some(rest) = hash.strip_prefix("$apr1$") {
        let (salt, h) = rest.split_once('$')?;
        return (!salt.is_empty() && salt.len() <= 8 && b64(salt) && h.len() == 22 && b64(h)).then_some("apr1");
    }
    for p in ["$2a$", "$2b$", "$2y$"] {
        if let Some(rest) = hash.strip_prefix(p) {
            let (cost, h) = rest.split_once('$')?;
            let cost: u32 = cost.parse().ok().filter(|_| cost.len() == 2)?;
            return ((4..=31).contains(&cost) && h.len() == 53 && b64(h)).then_some("bcrypt");
        }
    }
    None
}

fn basic(b: BasicSpec, field: &str, ns: &str, secrets: &SecretIndex, errs: &mut Vec<FeatureError>) -> BasicAuth {
    let mut out = BasicAuth { realm: Some(b.realm.clone()).filter(|r| !r.is_empty()), ..Default::default() };
    let mut fail = |sub: &str, p: String| {
        errs.push(err(format!("{field}.{sub}"), "InvalidAuth", p.clone()));
        Some(p)
    };
    if !b.auth_type.is_empty() && b.auth_type != "basic" {
        out.err = fail("auth_type", format!("{:?} is not supported (only basic)", b.auth_type));
        return out;
    }
    if !header_value_ok(&b.realm) || b.realm.contains('"') {
        out.err = fail("realm", "must not contain quotes or control characters".into());
        return out;
    }
    let (sns, sname) = match b.secret.split_once('/') {
        Some((a, n)) => (a, n),
        None => (ns, b.secret.as_str()),
    };
    if sname.is_empty() {
        out.err = fail("secret", "is empty: a basic auth Secret `ns/name` is required".into());
        return out;
    }
    let Some(data) = secrets.get(sns, sname) else {
        out.err = fail("secret", format!("names Secret {sns}/{sname}, which does not exist"));
        return out;
    };
    let mut entries: Vec<(String, String)> = Vec::new();
    match b.secret_type.as_str() {
        "" | "auth-file" => {
            let Some(file) = data.get("auth") else {
                out.err = fail("secret", format!("Secret {sns}/{sname} has no key \"auth\" (auth-file)"));
                return out;
            };
            for line in String::from_utf8_lossy(file).lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if let Some((u, h)) = line.split_once(':') {
                    entries.push((u.to_string(), h.to_string()));
                }
            }
        }
        "auth-map" => {
            for (u, h) in &data {
                entries.push((u.clone(), String::from_utf8_lossy(h).trim().to_string()));
            }
        }
        t => {
            out.err = fail("secret_type", format!("{t:?} is not auth-file or auth-map"));
            return out;
        }
    }
    let mut skipped = Vec::new();
    for (user, hash) in entries {
        match hash_algorithm(&hash) {
            Some(a) if !user.is_empty() => {
                out.users.insert(user, PasswordHash { algorithm: a.into(), hash });
            }
            _ => skipped.push(user),
        }
    }
    if !skipped.is_empty() {
        fail(
            "secret",
            format!(
                "Secret {sns}/{sname}: users {skipped:?} skipped: only apr1 ($apr1$) and bcrypt ($2a$/$2b$/$2y$) hashes are supported"
            ),
        );
    }
    if out.users.is_empty() {
        out.err = Some(format!("Secret {sns}/{sname} has no usable user"));
    }
    out
}

#[cfg(test)]
#[path = "features_tests.rs"]
mod tests;
