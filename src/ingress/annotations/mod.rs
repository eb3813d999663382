//! Typed reading of the Ingress annotations (controlplane.md §2.6, docs/annotations.md): one function per key,
//! each returning the parsed value or an [`Invalid`] naming the key, the value and the problem.
//!
//! Keys of [`KEYS`] are "multi-prefix": looked up as `index.<r>-<p>.alb.ingress.<d>/<key>` (one path only), then
//! `alb.ingress.<d>/<key>`, then `nginx.ingress.kubernetes.io/<key>`; the first present wins, even when its
//! value is invalid (it is then ignored, with a Warning, and the lower prefixes are not consulted). Keys of
//! [`EXACT_KEYS`] are read only under their exact name. Snippet keys are refused ([`REFUSED`], any key ending in
//! `-snippet`); other `nginx.ingress.kubernetes.io/` keys no module reads are reported as unsupported
//! ([`Annotations::scan`]). Every value goes through a parser of [`parse`]; no annotation text ever reaches
//! nginx.conf: everything lands in the Rule (`spec` fields and `spec.config`), hence in the policy JSON.

pub mod parse;

use super::DEFAULT_RULE_PRIORITY;
use crate::compile::meta::Pairs;
use crate::compile::service::Service;
use crate::ingress::Ingress;
use crate::policy::config::{
    Access, Cors, ErrorPages, ErrorService, Limit, Redirect, Retry, RewriteRequest, RewriteResponse, Timeout,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The ingress-nginx prefix.
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

pub const BACKEND_PROTOCOL: &str = "backend-protocol";
pub const REWRITE_TARGET: &str = "rewrite-target";
pub const USE_REGEX: &str = "use-regex";
pub const APP_ROOT: &str = "app-root";
pub const SSL_REDIRECT: &str = "ssl-redirect";
pub const FORCE_SSL_REDIRECT: &str = "force-ssl-redirect";
pub const PERMANENT_REDIRECT: &str = "permanent-redirect";
pub const PERMANENT_REDIRECT_CODE: &str = "permanent-redirect-code";
pub const TEMPORAL_REDIRECT: &str = "temporal-redirect";
pub const TEMPORAL_REDIRECT_CODE: &str = "temporal-redirect-code";
pub const FROM_TO_WWW_REDIRECT: &str = "from-to-www-redirect";
pub const REDIRECT_HOST: &str = "redirect-host";
pub const REDIRECT_PORT: &str = "redirect-port";
pub const REDIRECT_PREFIX_MATCH: &str = "redirect-prefix-match";
pub const REDIRECT_REPLACE_PREFIX: &str = "redirect-replace-prefix";
pub const REDIRECT_CODE: &str = "redirect-code";
pub const AUTH_ENABLE: &str = "auth-enable";
pub const UPSTREAM_VHOST: &str = "upstream-vhost";
pub const X_FORWARDED_PREFIX: &str = "x-forwarded-prefix";
pub const ENABLE_CORS: &str = "enable-cors";
pub const CORS_ALLOW_ORIGIN: &str = "cors-allow-origin";
pub const CORS_ALLOW_METHODS: &str = "cors-allow-methods";
pub const CORS_ALLOW_HEADERS: &str = "cors-allow-headers";
pub const CORS_EXPOSE_HEADERS: &str = "cors-expose-headers";
pub const CORS_ALLOW_CREDENTIALS: &str = "cors-allow-credentials";
pub const CORS_MAX_AGE: &str = "cors-max-age";
pub const PROXY_CONNECT_TIMEOUT: &str = "proxy-connect-timeout";
pub const PROXY_SEND_TIMEOUT: &str = "proxy-send-timeout";
pub const PROXY_READ_TIMEOUT: &str = "proxy-read-timeout";
pub const PROXY_NEXT_UPSTREAM: &str = "proxy-next-upstream";
pub const PROXY_NEXT_UPSTREAM_TRIES: &str = "proxy-next-upstream-tries";
pub const PROXY_NEXT_UPSTREAM_TIMEOUT: &str = "proxy-next-upstream-timeout";
pub const PROXY_BODY_SIZE: &str = "proxy-body-size";
pub const WHITELIST_SOURCE_RANGE: &str = "whitelist-source-range";
pub const ALLOWLIST_SOURCE_RANGE: &str = "allowlist-source-range";
pub const DENYLIST_SOURCE_RANGE: &str = "denylist-source-range";
pub const AUTH_TYPE: &str = "auth-type";
pub const AUTH_SECRET: &str = "auth-secret";
pub const AUTH_SECRET_TYPE: &str = "auth-secret-type";
pub const AUTH_REALM: &str = "auth-realm";
pub const AUTH_URL: &str = "auth-url";
pub const AUTH_METHOD: &str = "auth-method";
pub const AUTH_SIGNIN: &str = "auth-signin";
pub const AUTH_SIGNIN_REDIRECT_PARAM: &str = "auth-signin-redirect-param";
pub const AUTH_RESPONSE_HEADERS: &str = "auth-response-headers";
pub const AUTH_REQUEST_REDIRECT: &str = "auth-request-redirect";
pub const AUTH_ALWAYS_SET_COOKIE: &str = "auth-always-set-cookie";
pub const LIMIT_RPS: &str = "limit-rps";
pub const LIMIT_RPM: &str = "limit-rpm";
pub const LIMIT_CONNECTIONS: &str = "limit-connections";
pub const LIMIT_WHITELIST: &str = "limit-whitelist";
pub const LIMIT_BURST_MULTIPLIER: &str = "limit-burst-multiplier";
pub const CUSTOM_HTTP_ERRORS: &str = "custom-http-errors";
pub const DEFAULT_BACKEND: &str = "default-backend";
pub const SERVER_ALIAS: &str = "server-alias";

/// Every multi-prefix key this module reads (docs/annotations.md checks against it).
pub const KEYS: &[&str] = &[
    BACKEND_PROTOCOL,
    REWRITE_TARGET,
    USE_REGEX,
    APP_ROOT,
    SSL_REDIRECT,
    FORCE_SSL_REDIRECT,
    PERMANENT_REDIRECT,
    PERMANENT_REDIRECT_CODE,
    TEMPORAL_REDIRECT,
    TEMPORAL_REDIRECT_CODE,
    FROM_TO_WWW_REDIRECT,
    REDIRECT_HOST,
    REDIRECT_PORT,
    REDIRECT_PREFIX_MATCH,
    REDIRECT_REPLACE_PREFIX,
    REDIRECT_CODE,
    UPSTREAM_VHOST,
    X_FORWARDED_PREFIX,
    ENABLE_CORS,
    CORS_ALLOW_ORIGIN,
    CORS_ALLOW_METHODS,
    CORS_ALLOW_HEADERS,
    CORS_EXPOSE_HEADERS,
    CORS_ALLOW_CREDENTIALS,
    CORS_MAX_AGE,
    PROXY_CONNECT_TIMEOUT,
    PROXY_SEND_TIMEOUT,
    PROXY_READ_TIMEOUT,
    PROXY_NEXT_UPSTREAM,
    PROXY_NEXT_UPSTREAM_TRIES,
    PROXY_NEXT_UPSTREAM_TIMEOUT,
    PROXY_BODY_SIZE,
    WHITELIST_SOURCE_RANGE,
    ALLOWLIST_SOURCE_RANGE,
    DENYLIST_SOURCE_RANGE,
    AUTH_ENABLE,
    AUTH_TYPE,
    AUTH_SECRET,
    AUTH_SECRET_TYPE,
    AUTH_REALM,
    AUTH_URL,
    AUTH_METHOD,
    AUTH_SIGNIN,
    AUTH_SIGNIN_REDIRECT_PARAM,
    AUTH_RESPONSE_HEADERS,
    AUTH_REQUEST_REDIRECT,
    AUTH_ALWAYS_SET_COOKIE,
    LIMIT_RPS,
    LIMIT_RPM,
    LIMIT_CONNECTIONS,
    LIMIT_WHITELIST,
    LIMIT_BURST_MULTIPLIER,
    CUSTOM_HTTP_ERRORS,
    DEFAULT_BACKEND,
    SERVER_ALIAS,
];

/// Keys read only under their exact name (`<d>` = label domain, `<r>-<p>` = rule and path index).
#[allow(dead_code)] // read by the docs/annotations.md drift test
pub const EXACT_KEYS: &[&str] = &[
    super::claim::CLASS_ANNOTATION,
    "alb.networking.<d>/tls",
    "alb.networking.<d>/enable-https",
    "alb.<d>/ingress-rule-priority-<r>-<p>",
    "alb.ingress.<d>/rewrite-request",
    "alb.ingress.<d>/rewrite-response",
];

/// Keys refused on purpose (never applied, Warning `RefusedAnnotation`); so is any other key ending in `-snippet`.
pub const REFUSED: &[&str] =
    &["configuration-snippet", "server-snippet", "auth-snippet", "stream-snippet", "modsecurity-snippet"];

/// The multi-prefix keys of every module that reads Ingress annotations: a key listed here is never reported
/// as unsupported. Add a module's `KEYS` with one line.
/// `canary` and `balance` list full `nginx.ingress.kubernetes.io/` keys (they read only that prefix): compare
/// with [`short_key`].
pub const MODULE_KEYS: &[&[&str]] = &[KEYS, super::canary::KEYS, super::balance::KEYS];

/// A registry key without the `nginx.ingress.kubernetes.io/` prefix (the form of the docs table).
pub fn short_key(k: &str) -> &str {
    k.strip_prefix(NGINX_PREFIX).unwrap_or(k)
}

/// Rule/path index giving the `index.<r>-<p>.` prefix; `None` for Ingress-wide keys.
pub type At = Option<(usize, usize)>;

/// `alb.networking.<d>/tls`: `host=ns/secret,host2=ns/secret2`.
pub fn tls_key(domain: &str) -> String {
    format!("alb.networking.{domain}/tls")
}

/// `alb.networking.<d>/enable-https`: `"true"`/`"false"`, per-Ingress override of the SSL strategy.
pub fn enable_https_key(domain: &str) -> String {
    format!("alb.networking.{domain}/enable-https")
}

/// `alb.<d>/ingress-rule-priority-<r>-<p>`: priority of the Rule of rule `r`, path `p`.
pub fn priority_key(domain: &str, r: usize, p: usize) -> String {
    format!("alb.{domain}/ingress-rule-priority-{r}-{p}")
}

/// `alb.ingress.<d>/rewrite-request` (JSON `RewriteRequest`).
pub fn rewrite_request_key(domain: &str) -> String {
    format!("alb.ingress.{domain}/rewrite-request")
}

/// `alb.ingress.<d>/rewrite-response` (JSON `RewriteResponse`).
pub fn rewrite_response_key(domain: &str) -> String {
    format!("alb.ingress.{domain}/rewrite-response")
}

/// An annotation whose value cannot be used (or can only partly be used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The full key, as found on the Ingress.
    pub key: String,
    pub value: String,
    pub problem: String,
    /// Event reason: `InvalidAnnotation`, or `UnsupportedAnnotation` for a valid value we cannot fully honour.
    pub reason: &'static str,
    /// What happens instead; `None` → the annotation is ignored.
    pub consequence: Option<&'static str>,
}

/// The consequence of an invalid auth annotation: the path fails closed.
pub const FAIL_CLOSED: &str = "the path answers 500 until it is fixed (auth fails closed)";

impl Invalid {
    pub(crate) fn new(key: &str, value: &str, problem: impl Into<String>) -> Invalid {
        Invalid {
            key: key.into(),
            value: value.into(),
            problem: problem.into(),
            reason: "InvalidAnnotation",
            consequence: None,
        }
    }

    fn unsupported(key: &str, value: &str, problem: impl Into<String>) -> Invalid {
        Invalid { reason: "UnsupportedAnnotation", ..Invalid::new(key, value, problem) }
    }

    fn fail_closed(mut self) -> Invalid {
        self.consequence = Some(FAIL_CLOSED);
        self
    }

    /// `annotation <key>: <value>: <problem>; <consequence>`
    pub fn message(&self, consequence: &str) -> String {
        format!("annotation {}: {:?}: {}; {consequence}", self.key, self.value, self.problem)
    }

    /// [`Invalid::message`] with its own consequence (default: the annotation is ignored).
    pub fn describe(&self) -> String {
        self.message(self.consequence.unwrap_or("the annotation is ignored"))
    }
}

/// The annotations of one Ingress.
#[derive(Debug, Clone, Copy)]
pub struct Annotations<'a> {
    map: &'a Pairs,
    domain: &'a str,
    ns: &'a str,
}

/// What [`Annotations::scan`] finds: keys refused and keys nobody reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Snippet keys (full names), never applied.
    pub refused: Vec<String>,
    /// `nginx.ingress.kubernetes.io/` keys no module reads (full names).
    pub unsupported: Vec<String>,
}

impl<'a> Annotations<'a> {
    pub fn new(ing: &'a Ingress, domain: &'a str) -> Annotations<'a> {
        let ns = ing.metadata.namespace.as_deref().unwrap_or("");
        Annotations { map: &ing.metadata.annotations, domain, ns }
    }

    /// The raw value of the exact `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.map.get(key)
    }

    /// The full keys a multi-prefix `key` is looked up under, highest precedence first.
    pub fn candidates(&self, key: &str, at: At) -> Vec<String> {
        let d = self.domain;
        let mut out = Vec::with_capacity(3);
        if let Some((r, p)) = at {
            out.push(format!("index.{r}-{p}.alb.ingress.{d}/{key}"));
        }
        out.push(format!("alb.ingress.{d}/{key}"));
        out.push(format!("{NGINX_PREFIX}{key}"));
        out
    }

    /// `(full key, value)` of a multi-prefix `key`; an empty (blank) value counts as absent.
    pub fn lookup(&self, key: &str, at: At) -> Option<(String, &'a str)> {
        self.candidates(key, at).into_iter().find_map(|k| self.get(&k).filter(|v| !v.trim().is_empty()).map(|v| (k, v)))
    }

    /// A multi-prefix key through a parser.
    fn typed<T>(&self, key: &str, at: At, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, Invalid> {
        let Some((full, v)) = self.lookup(key, at) else { return Ok(None) };
        parse(v).map(Some).map_err(|p| Invalid::new(&full, v, p))
    }

    /// Pushes the problem of `r` into `bad`, returns the value.
    fn keep<T>(r: Result<Option<T>, Invalid>, bad: &mut Vec<Invalid>) -> Option<T> {
        r.unwrap_or_else(|e| {
            bad.push(e);
            None
        })
    }

    /// `backend-protocol`, lower-cased; `http`, `https`, `grpc` and `grpcs` are accepted. A grpc/grpcs path is
    /// sent with `grpc_pass` (h2c or TLS to the backend): its clients reach it over HTTP/2, i.e. the https
    /// Frontend (ALPN h2) or a grpc Frontend; HTTP/1 clients on the http Frontend get an error.
    pub fn backend_protocol(&self, at: At) -> Result<Option<String>, Invalid> {
        self.typed(BACKEND_PROTOCOL, at, |v| match v.trim().to_ascii_lowercase().as_str() {
            p @ ("http" | "https" | "grpc" | "grpcs") => Ok(p.to_string()),
            _ => Err("only http, https, grpc and grpcs are supported".into()),
        })
    }

    /// `alb.<d>/ingress-rule-priority-<r>-<p>`: an integer; 0 means the default.
    pub fn rule_priority(&self, r: usize, p: usize) -> Result<Option<i64>, Invalid> {
        let key = priority_key(self.domain, r, p);
        let Some(v) = self.get(&key) else { return Ok(None) };
        match v.trim().parse::<i64>() {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(Invalid::new(&key, v, "not an integer")),
        }
    }

    /// `alb.networking.<d>/enable-https`.
    pub fn enable_https(&self) -> Result<Option<bool>, Invalid> {
        let key = enable_https_key(self.domain);
        self.get(&key).map(|v| parse::boolean(v).map(Some).map_err(|p| Invalid::new(&key, v, p))).unwrap_or(Ok(None))
    }

    /// `alb.networking.<d>/tls`: lower-cased host → certificate `ns/name`. A malformed entry or a host given
    /// two different certificates invalidates the whole annotation.
    pub fn tls(&self) -> Result<BTreeMap<String, String>, Invalid> {
        let key = tls_key(self.domain);
        let mut out = BTreeMap::new();
        let Some(v) = self.get(&key) else { return Ok(out) };
        for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.split_once('=').and_then(|(host, cert)| {
                let (host, cert) = (host.trim(), cert.trim());
                let (ns, name) = cert.split_once('/')?;
                let ok = !host.is_empty() && !ns.is_empty() && !name.is_empty() && !name.contains('/');
                ok.then(|| (host.to_ascii_lowercase(), cert.to_string()))
            });
            let Some((host, cert)) = parsed else {
                return Err(Invalid::new(&key, v, format!("entry {entry:?} is not host=namespace/secret")));
            };
            if let Some(prev) = out.get(&host) {
                if prev != &cert {
                    return Err(Invalid::new(&key, v, format!("host {host:?} has two certificates")));
                }
            }
            out.insert(host, cert);
        }
        Ok(out)
    }

    /// `app-root` (Ingress-wide): requests for `/` are redirected (302) there.
    pub fn app_root(&self) -> Result<Option<String>, Invalid> {
        self.typed(APP_ROOT, None, |v| {
            let t = parse::redirect_url(v)?;
            if !t.starts_with('/') {
                return Err("expected a path starting with /".into());
            }
            Ok(t)
        })
    }

    /// `from-to-www-redirect` (Ingress-wide).
    pub fn www_redirect(&self) -> Result<bool, Invalid> {
        self.typed(FROM_TO_WWW_REDIRECT, None, parse::boolean).map(Option::unwrap_or_default)
    }

    /// `server-alias` (Ingress-wide): more hosts for every Rule that has a host.
    pub fn server_alias(&self) -> Result<Vec<String>, Invalid> {
        self.typed(SERVER_ALIAS, None, parse::host_list).map(Option::unwrap_or_default)
    }

    /// Whether path `at` explicitly asks for http → https redirects (`ssl-redirect` or `force-ssl-redirect`
    /// `"true"`); invalid values count as no (they are reported by [`Annotations::for_path`]).
    pub fn asks_ssl_redirect(&self, at: (usize, usize)) -> bool {
        [SSL_REDIRECT, FORCE_SSL_REDIRECT].iter().any(|k| self.typed(k, Some(at), parse::boolean) == Ok(Some(true)))
    }

    /// Snippets and keys nobody reads.
    pub fn scan(&self) -> Scan {
        let mut out = Scan::default();
        let ours = format!("alb.ingress.{}/", self.domain);
        for k in self.map.iter().map(|(k, _)| k) {
            let short = if let Some(s) = k.strip_prefix(NGINX_PREFIX) {
                s
            } else if let Some(s) = k.strip_prefix(&ours) {
                s
            } else if let Some(s) = k.strip_prefix("index.").and_then(|rest| rest.split_once(&ours)).map(|(_, s)| s) {
                s
            } else {
                continue;
            };
            if short.ends_with("-snippet") || REFUSED.contains(&short) {
                out.refused.push(k.to_string());
            } else if k.starts_with(NGINX_PREFIX)
                && !MODULE_KEYS.iter().any(|m| m.iter().any(|&key| short_key(key) == short))
            {
                out.unsupported.push(k.to_string());
            }
        }
        out
    }

    /// Everything the annotations give the Rule of rule `r`, path `p`, with the problems found. `services`:
    /// the Services known (for the `default-backend` port).
    pub fn for_path(
        &self,
        r: usize,
        p: usize,
        services: &[std::sync::Arc<Service>],
    ) -> (PathAnnotations, Vec<Invalid>) {
        let at = Some((r, p));
        let mut bad = Vec::new();
        let b = &mut bad;
        let priority = match self.rule_priority(r, p) {
            Ok(v) => v.unwrap_or(DEFAULT_RULE_PRIORITY),
            Err(e) => {
                b.push(Invalid { consequence: Some("the default priority is used"), ..e });
                DEFAULT_RULE_PRIORITY
            }
        };
        let out = PathAnnotations {
            priority,
            backend_protocol: self.backend_protocol(at).map(Option::unwrap_or_default),
            use_regex: Self::keep(self.typed(USE_REGEX, at, parse::boolean), b).unwrap_or(false),
            rewrite_target: Self::keep(self.typed(REWRITE_TARGET, at, parse::rewrite_target), b),
            vhost: Self::keep(self.typed(UPSTREAM_VHOST, at, parse::header_value), b),
            cors: self.cors(at, b),
            redirect: self.redirect(at, b),
            ssl_redirect: Self::keep(self.typed(SSL_REDIRECT, at, parse::boolean), b),
            force_ssl_redirect: Self::keep(self.typed(FORCE_SSL_REDIRECT, at, parse::boolean), b).unwrap_or(false),
            timeout: self.timeout(at, b),
            retry: self.retry(at, b),
            rewrite_request: self.rewrite_request(at, b),
            rewrite_response: self.rewrite_response(b),
            auth: self.auth(at, b),
            access: self.access(at, b),
            limit: self.limit(at, b),
            max_body_size: Self::keep(self.typed(PROXY_BODY_SIZE, at, parse::size), b).flatten(),
            error_pages: self.error_pages(at, services, b),
        };
        (out, bad)
    }

    fn cors(&self, at: At, b: &mut Vec<Invalid>) -> Option<Cors> {
        if !Self::keep(self.typed(ENABLE_CORS, at, parse::boolean), b).unwrap_or(false) {
            return None;
        }
        let join = |v: Vec<String>, sep: &str| v.join(sep);
        Some(Cors {
            allow_origin: Self::keep(self.typed(CORS_ALLOW_ORIGIN, at, parse::origins), b).unwrap_or_default(),
            allow_methods: Self::keep(self.typed(CORS_ALLOW_METHODS, at, parse::methods), b).map(|m| join(m, ", ")),
            allow_headers: Self::keep(self.typed(CORS_ALLOW_HEADERS, at, |v| parse::header_names(v, true)), b)
                .map(|m| join(m, ",")),
            expose_headers: Self::keep(self.typed(CORS_EXPOSE_HEADERS, at, |v| parse::header_names(v, true)), b)
                .map(|m| join(m, ",")),
            allow_credentials: Self::keep(self.typed(CORS_ALLOW_CREDENTIALS, at, parse::boolean), b),
            max_age: Self::keep(self.typed(CORS_MAX_AGE, at, |v| parse::int_in(v, 0, 1 << 31)), b),
        })
    }

    /// `temporal-redirect` (wins) or `permanent-redirect`, with their codes, and the ALB keys `redirect-host`,
    /// `redirect-port`, `redirect-prefix-match`, `redirect-replace-prefix`, `redirect-code`.
    fn redirect(&self, at: At, b: &mut Vec<Invalid>) -> Option<Redirect> {
        let path = |v: &str| {
            let t = parse::redirect_url(v)?;
            if t.starts_with('/') {
                Ok(t)
            } else {
                Err("expected a path starting with /".to_string())
            }
        };
        let temporal = Self::keep(self.typed(TEMPORAL_REDIRECT, at, parse::redirect_url), b);
        let temporal_code = Self::keep(self.typed(TEMPORAL_REDIRECT_CODE, at, parse::redirect_code), b);
        let permanent = Self::keep(self.typed(PERMANENT_REDIRECT, at, parse::redirect_url), b);
        let permanent_code = Self::keep(self.typed(PERMANENT_REDIRECT_CODE, at, parse::redirect_code), b);
        let host = Self::keep(self.typed(REDIRECT_HOST, at, |v| parse::host(v, false)), b);
        let port = Self::keep(self.typed(REDIRECT_PORT, at, |v| parse::int_in(v, 1, 65535)), b).map(|p| p as u16);
        let prefix_match = Self::keep(self.typed(REDIRECT_PREFIX_MATCH, at, path), b);
        let replace_prefix = Self::keep(self.typed(REDIRECT_REPLACE_PREFIX, at, path), b);
        let redirect_code = Self::keep(self.typed(REDIRECT_CODE, at, parse::redirect_code), b);
        let (url, code) = match (temporal, permanent) {
            (Some(u), _) => (Some(u), temporal_code.unwrap_or(302)),
            (None, Some(u)) => (Some(u), permanent_code.unwrap_or(301)),
            (None, None) => (None, redirect_code.unwrap_or(302)),
        };
        if url.is_none() && host.is_none() && port.is_none() {
            if let Some((full, v)) = self.lookup(REDIRECT_PREFIX_MATCH, at).filter(|_| prefix_match.is_some()) {
                b.push(Invalid::new(&full, v, "needs redirect-host, redirect-port or a redirect URL"));
            }
            return None;
        }
        let prefix = prefix_match.is_some();
        Some(Redirect {
            url,
            code: Some(code),
            host,
            port,
            prefix_match,
            replace_prefix: replace_prefix.filter(|_| prefix),
            ..Default::default()
        })
    }

    fn timeout(&self, at: At, b: &mut Vec<Invalid>) -> Option<Timeout> {
        let t = Timeout {
            proxy_connect_timeout_ms: Self::keep(self.typed(PROXY_CONNECT_TIMEOUT, at, parse::timeout_ms), b),
            proxy_send_timeout_ms: Self::keep(self.typed(PROXY_SEND_TIMEOUT, at, parse::timeout_ms), b),
            proxy_read_timeout_ms: Self::keep(self.typed(PROXY_READ_TIMEOUT, at, parse::timeout_ms), b),
        };
        (t != Timeout::default()).then_some(t)
    }

    /// `proxy-next-upstream` (`off` → 1 try; only `error` and `timeout` can be honoured) and
    /// `proxy-next-upstream-tries` (0 = nginx's "unlimited" = our cap 5). `proxy-next-upstream-timeout` is
    /// validated and reported as not applied.
    fn retry(&self, at: At, b: &mut Vec<Invalid>) -> Option<Retry> {
        const HONOURED: &[&str] = &["error", "timeout"];
        const KNOWN: &[&str] = &[
            "invalid_header",
            "http_500",
            "http_502",
            "http_503",
            "http_504",
            "http_403",
            "http_404",
            "http_429",
            "non_idempotent",
        ];
        let mut off = false;
        if let Some((full, v)) = self.lookup(PROXY_NEXT_UPSTREAM, at) {
            let tokens: Vec<&str> = v.split_whitespace().collect();
            if let Some(t) = tokens.iter().find(|t| **t != "off" && !HONOURED.contains(t) && !KNOWN.contains(t)) {
                b.push(Invalid::new(&full, v, format!("{t:?} is not a proxy_next_upstream condition")));
            } else if tokens.contains(&"off") {
                if tokens.len() > 1 {
                    b.push(Invalid::new(&full, v, "\"off\" cannot be combined with other conditions"));
                } else {
                    off = true;
                }
            } else {
                let unsupported: Vec<&str> = tokens.iter().copied().filter(|t| KNOWN.contains(t)).collect();
                if !unsupported.is_empty() {
                    b.push(Invalid::unsupported(
                        &full,
                        v,
                        format!("{unsupported:?} not applied: only connection errors and timeouts are retried"),
                    ));
                }
            }
        }
        let tries = Self::keep(self.typed(PROXY_NEXT_UPSTREAM_TRIES, at, |v| parse::int_in(v, 0, 1000)), b);
        if let Some((full, v)) = self.lookup(PROXY_NEXT_UPSTREAM_TIMEOUT, at) {
            match parse::timeout_ms(v) {
                Err(p) if v.trim() != "0" => b.push(Invalid::new(&full, v, p)),
                _ => b.push(Invalid::unsupported(
                    &full,
                    v,
                    "not applied: retries are bounded by proxy-next-upstream-tries (at most 5) and the proxy timeouts",
                )),
            }
        }
        if off {
            return Some(Retry { tries: Some(1) });
        }
        match tries {
            Some(n) if n > 0 => Some(Retry { tries: Some(n.min(5) as u32) }),
            _ => None,
        }
    }

    /// `x-forwarded-prefix` and `alb.ingress.<d>/rewrite-request` (JSON).
    fn rewrite_request(&self, at: At, b: &mut Vec<Invalid>) -> Option<RewriteRequest> {
        let key = rewrite_request_key(self.domain);
        let mut out: RewriteRequest = match self.get(&key) {
            Some(v) => match serde_json::from_str::<RewriteRequest>(v) {
                Ok(r) => match check_request(&r) {
                    Ok(()) => r,
                    Err(p) => {
                        b.push(Invalid::new(&key, v, p));
                        RewriteRequest::default()
                    }
                },
                Err(e) => {
                    b.push(Invalid::new(&key, v, format!("not a rewrite-request JSON object: {e}")));
                    RewriteRequest::default()
                }
            },
            None => RewriteRequest::default(),
        };
        if let Some(prefix) = Self::keep(self.typed(X_FORWARDED_PREFIX, at, parse::header_value), b) {
            out.headers.insert("X-Forwarded-Prefix".into(), prefix);
        }
        (out != RewriteRequest::default()).then_some(out)
    }

    /// `alb.ingress.<d>/rewrite-response` (JSON).
    fn rewrite_response(&self, b: &mut Vec<Invalid>) -> Option<RewriteResponse> {
        let key = rewrite_response_key(self.domain);
        let v = self.get(&key)?;
        let r = match serde_json::from_str::<RewriteResponse>(v) {
            Ok(r) => r,
            Err(e) => {
                b.push(Invalid::new(&key, v, format!("not a rewrite-response JSON object: {e}")));
                return None;
            }
        };
        let names = r.headers.keys().chain(r.headers_remove.iter()).chain(r.headers_add.keys());
        let values = r.headers.values().chain(r.headers_add.values().flatten());
        if let Err(p) = check_headers(names, values) {
            b.push(Invalid::new(&key, v, p));
            return None;
        }
        (r != RewriteResponse::default()).then_some(r)
    }

    /// `config.auth` in Rule-spec form (`auth.basic.secret`, ...), read by the compiler like any Rule's.
    fn auth(&self, at: At, b: &mut Vec<Invalid>) -> Option<Value> {
        if Self::keep(self.typed(AUTH_ENABLE, at, parse::boolean), b) == Some(false) {
            return None;
        }
        let mut out = Map::new();
        // A problem with the keys that decide whether and how requests are authenticated fails closed.
        let closed = |b: &mut Vec<Invalid>, e: Invalid| {
            b.push(e.fail_closed());
            Some(json!({"basic": {"auth_type": "invalid-annotation"}}))
        };
        match self.typed(AUTH_URL, at, parse::auth_url) {
            Err(e) => return closed(b, e),
            Ok(Some(url)) => {
                let mut f = Map::new();
                f.insert("url".into(), json!(url));
                let method = self.typed(AUTH_METHOD, at, |v| {
                    let m = v.trim().to_ascii_uppercase();
                    match m.as_str() {
                        "GET" | "POST" | "PUT" | "HEAD" | "DELETE" | "PATCH" | "OPTIONS" => Ok(m),
                        _ => Err("expected GET, POST, PUT, HEAD, DELETE, PATCH or OPTIONS".into()),
                    }
                });
                if let Some(m) = Self::keep(method, b) {
                    f.insert("method".into(), json!(m));
                }
                let headers = self.typed(AUTH_RESPONSE_HEADERS, at, |v| parse::header_names(v, false));
                if let Some(h) = Self::keep(headers, b) {
                    f.insert("upstream_headers".into(), json!(h));
                }
                if let Some(s) = Self::keep(self.typed(AUTH_SIGNIN, at, parse::var_url), b) {
                    f.insert("signin".into(), json!(s));
                }
                let param = self.typed(AUTH_SIGNIN_REDIRECT_PARAM, at, |v| {
                    let t = v.trim();
                    let ok = t.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
                    if ok {
                        Ok(t.to_string())
                    } else {
                        Err("expected a query parameter name".into())
                    }
                });
                if let Some(s) = Self::keep(param, b) {
                    f.insert("signin_redirect_param".into(), json!(s));
                }
                if let Some(s) = Self::keep(self.typed(AUTH_REQUEST_REDIRECT, at, parse::var_url), b) {
                    f.insert("auth_request_redirect".into(), json!(s));
                }
                if let Some(c) = Self::keep(self.typed(AUTH_ALWAYS_SET_COOKIE, at, parse::boolean), b) {
                    f.insert("always_set_cookie".into(), json!(c));
                }
                out.insert("forward".into(), Value::Object(f));
            }
            Ok(None) => {}
        }
        let kind = self.typed(AUTH_TYPE, at, |v| match v.trim().to_ascii_lowercase().as_str() {
            "basic" => Ok("basic"),
            "digest" => Err("digest authentication is not supported (only basic)".into()),
            _ => Err("expected basic".into()),
        });
        match kind {
            Err(e) => return closed(b, e),
            Ok(Some(_)) => {
                let mut basic = Map::new();
                basic.insert("auth_type".into(), json!("basic"));
                match self.typed(AUTH_SECRET, at, |v| parse::same_namespace_ref(v, self.ns)) {
                    Err(e) => return closed(b, e),
                    Ok(None) => {
                        let k = self.candidates(AUTH_SECRET, at).pop().unwrap_or_default();
                        return closed(b, Invalid::new(&k, "", "auth-type basic needs auth-secret"));
                    }
                    Ok(Some(name)) => basic.insert("secret".into(), json!(format!("{}/{name}", self.ns))),
                };
                let st = self.typed(AUTH_SECRET_TYPE, at, |v| match v.trim() {
                    t @ ("auth-file" | "auth-map") => Ok(t.to_string()),
                    _ => Err("expected auth-file or auth-map".into()),
                });
                match st {
                    Err(e) => return closed(b, e),
                    Ok(Some(t)) => {
                        basic.insert("secret_type".into(), json!(t));
                    }
                    Ok(None) => {}
                }
                if let Some(r) = Self::keep(self.typed(AUTH_REALM, at, parse::realm), b) {
                    basic.insert("realm".into(), json!(r));
                }
                out.insert("basic".into(), Value::Object(basic));
            }
            Ok(None) => {
                for k in [AUTH_SECRET, AUTH_SECRET_TYPE, AUTH_REALM] {
                    if let Some((full, v)) = self.lookup(k, at) {
                        b.push(Invalid::new(&full, v, "has no effect without auth-type"));
                    }
                }
            }
        }
        (!out.is_empty()).then_some(Value::Object(out))
    }

    fn access(&self, at: At, b: &mut Vec<Invalid>) -> Option<Access> {
        let allow = match self.lookup(ALLOWLIST_SOURCE_RANGE, at) {
            Some(_) => Self::keep(self.typed(ALLOWLIST_SOURCE_RANGE, at, parse::cidr_list), b),
            None => Self::keep(self.typed(WHITELIST_SOURCE_RANGE, at, parse::cidr_list), b),
        };
        let deny = Self::keep(self.typed(DENYLIST_SOURCE_RANGE, at, parse::cidr_list), b);
        let a = Access { allow: allow.unwrap_or_default(), deny: deny.unwrap_or_default() };
        (a != Access::default()).then_some(a)
    }

    fn limit(&self, at: At, b: &mut Vec<Invalid>) -> Option<Limit> {
        let n = |k: &str, b: &mut Vec<Invalid>| {
            Self::keep(self.typed(k, at, |v| parse::int_in(v, 1, u64::from(u32::MAX))), b).map(|n| n as u32)
        };
        let l = Limit {
            rps: n(LIMIT_RPS, b),
            rpm: n(LIMIT_RPM, b),
            connections: n(LIMIT_CONNECTIONS, b),
            burst_multiplier: Self::keep(self.typed(LIMIT_BURST_MULTIPLIER, at, |v| parse::int_in(v, 1, 1000)), b)
                .map(|n| n as u32),
            whitelist: Self::keep(self.typed(LIMIT_WHITELIST, at, parse::cidr_list), b).unwrap_or_default(),
            status: None,
        };
        (l.rps.is_some() || l.rpm.is_some() || l.connections.is_some()).then_some(l)
    }

    /// `custom-http-errors` + `default-backend` (a Service of the Ingress's namespace; its first port, else 80).
    fn error_pages(&self, at: At, services: &[std::sync::Arc<Service>], b: &mut Vec<Invalid>) -> Option<ErrorPages> {
        let codes = Self::keep(self.typed(CUSTOM_HTTP_ERRORS, at, parse::error_codes), b);
        let service = Self::keep(self.typed(DEFAULT_BACKEND, at, |v| parse::same_namespace_ref(v, self.ns)), b);
        let Some(name) = service else {
            if let (Some(_), Some((full, v))) = (&codes, self.lookup(CUSTOM_HTTP_ERRORS, at)) {
                b.push(Invalid::new(&full, v, "needs default-backend (there is no global default backend)"));
            }
            return None;
        };
        let port = services
            .iter()
            .find(|s| s.metadata.namespace.as_deref() == Some(self.ns) && s.metadata.name.as_deref() == Some(&name))
            .and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first().map(|p| p.port))
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(80);
        Some(ErrorPages {
            codes: codes.unwrap_or_default(),
            service: Some(ErrorService { namespace: self.ns.into(), name, port }),
            upstream: None,
        })
    }
}

fn check_headers<'x>(
    names: impl Iterator<Item = &'x String>,
    values: impl Iterator<Item = &'x String>,
) -> Result<(), String> {
    use crate::compile::features::{header_name_ok, header_value_ok};
    for n in names {
        if !header_name_ok(n) {
            return Err(format!("{n:?} is not a header name"));
        }
    }
    for v in values {
        if !header_value_ok(v) {
            return Err(format!("{v:?} contains a control character"));
        }
    }
    Ok(())
}

fn check_request(r: &RewriteRequest) -> Result<(), String> {
    let names = r
        .headers
        .keys()
        .chain(r.headers_var.keys())
        .chain(r.headers_remove.iter())
        .chain(r.headers_add.keys())
        .chain(r.headers_add_var.keys());
    check_headers(names, r.headers.values().chain(r.headers_add.values().flatten()))?;
    for v in r.headers_var.values().chain(r.headers_add_var.values().flatten()) {
        if v.is_empty() || !v.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return Err(format!("{v:?} is not a variable name"));
        }
    }
    Ok(())
}

/// What the annotations give one Rule.
#[derive(Debug, Clone, PartialEq)]
pub struct PathAnnotations {
    pub priority: i64,
    /// `Err`: the path gets no Rule.
    pub backend_protocol: Result<String, Invalid>,
    /// `use-regex`: Prefix and ImplementationSpecific paths are regexes.
    pub use_regex: bool,
    pub rewrite_target: Option<String>,
    pub vhost: Option<String>,
    pub cors: Option<Cors>,
    /// `permanent-redirect` / `temporal-redirect`.
    pub redirect: Option<Redirect>,
    /// `ssl-redirect` as given (absent: true when the host has TLS).
    pub ssl_redirect: Option<bool>,
    pub force_ssl_redirect: bool,
    pub timeout: Option<Timeout>,
    pub retry: Option<Retry>,
    pub rewrite_request: Option<RewriteRequest>,
    pub rewrite_response: Option<RewriteResponse>,
    /// Rule-spec form (`{"basic": {"secret": "ns/name", ...}, "forward": {...}}`).
    pub auth: Option<Value>,
    pub access: Option<Access>,
    pub limit: Option<Limit>,
    pub max_body_size: Option<u64>,
    pub error_pages: Option<ErrorPages>,
}

impl PathAnnotations {
    /// The path regex semantics of ingress-nginx: with `use-regex`, or a `rewrite-target` using captures, the
    /// path (unless Exact) is a regex.
    pub fn path_is_regex(&self) -> bool {
        self.use_regex || self.rewrite_target.as_deref().is_some_and(parse::has_capture)
    }

    /// The Rule `spec.config` object, with the `rewrite` and `redirect` the translation computed.
    pub fn config(&self, rewrite: Option<Value>, redirect: Option<&Redirect>) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v.filter(|v| !v.is_null()) {
                m.insert(k.into(), v);
            }
        };
        put("redirect", redirect.map(js));
        put("cors", self.cors.as_ref().map(js));
        put("rewrite", rewrite);
        put("rewrite_request", self.rewrite_request.as_ref().map(js));
        put("rewrite_response", self.rewrite_response.as_ref().map(js));
        put("timeout", self.timeout.as_ref().map(js));
        put("retry", self.retry.as_ref().map(js));
        put("auth", self.auth.clone());
        put("access", self.access.as_ref().map(js));
        put("limit", self.limit.as_ref().map(js));
        put("max_body_size", self.max_body_size.map(|n| json!(n)));
        put("error_pages", self.error_pages.as_ref().map(js));
        Value::Object(m)
    }
}

/// JSON of a config piece (they all serialize).
fn js<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests;
