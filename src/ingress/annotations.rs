//! Typed reading of the Ingress annotations (controlplane.md §2.6): one function per key, each returning the
//! parsed value or an [`Invalid`] naming the key, the value and the problem. Only the routing-relevant keys are
//! read for now; the others (redirects, timeouts, auth, otel, modsecurity, header rewrites) are added the same
//! way, and [`PathAnnotations`] is where their per-path results land.

use super::DEFAULT_RULE_PRIORITY;
use k8s_openapi::api::networking::v1::Ingress;
use std::collections::BTreeMap;

pub const BACKEND_PROTOCOL: &str = "nginx.ingress.kubernetes.io/backend-protocol";
pub const REWRITE_TARGET: &str = "nginx.ingress.kubernetes.io/rewrite-target";
pub const UPSTREAM_VHOST: &str = "nginx.ingress.kubernetes.io/upstream-vhost";
pub const ENABLE_CORS: &str = "nginx.ingress.kubernetes.io/enable-cors";
pub const CORS_ALLOW_HEADERS: &str = "nginx.ingress.kubernetes.io/cors-allow-headers";
pub const CORS_ALLOW_ORIGIN: &str = "nginx.ingress.kubernetes.io/cors-allow-origin";

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

/// An annotation whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub value: String,
    pub problem: String,
}

impl Invalid {
    fn new(key: &str, value: &str, problem: impl Into<String>) -> Invalid {
        Invalid { key: key.into(), value: value.into(), problem: problem.into() }
    }

    /// `annotation <key>: <value>: <problem>; <consequence>`
    pub fn message(&self, consequence: &str) -> String {
        format!("annotation {}: {:?}: {}; {consequence}", self.key, self.value, self.problem)
    }
}

/// The annotations of one Ingress.
#[derive(Debug, Clone, Copy)]
pub struct Annotations<'a> {
    map: Option<&'a BTreeMap<String, String>>,
    domain: &'a str,
}

fn parse_bool(key: &str, v: &str) -> Result<bool, Invalid> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Invalid::new(key, v, "expected \"true\" or \"false\"")),
    }
}

impl<'a> Annotations<'a> {
    pub fn new(ing: &'a Ingress, domain: &'a str) -> Annotations<'a> {
        Annotations { map: ing.metadata.annotations.as_ref(), domain }
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.map.and_then(|m| m.get(key)).map(String::as_str)
    }

    /// A free-text annotation; empty counts as absent.
    fn text(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.is_empty()).map(str::to_string)
    }

    /// `backend-protocol`, lower-cased; `http`, `https`, `grpc` and `grpcs` are accepted. A grpc/grpcs path is
    /// sent with `grpc_pass` (h2c or TLS to the backend): its clients reach it over HTTP/2, i.e. the https
    /// Frontend (ALPN h2) or a grpc Frontend; HTTP/1 clients on the http Frontend get an error.
    pub fn backend_protocol(&self) -> Result<Option<String>, Invalid> {
        let Some(v) = self.get(BACKEND_PROTOCOL) else { return Ok(None) };
        match v.trim().to_ascii_lowercase().as_str() {
            p @ ("http" | "https" | "grpc" | "grpcs") => Ok(Some(p.to_string())),
            _ => Err(Invalid::new(BACKEND_PROTOCOL, v, "only http, https, grpc and grpcs are supported")),
        }
    }

    /// `rewrite-target` → Rule `rewrite_target`.
    pub fn rewrite_target(&self) -> Option<String> {
        self.text(REWRITE_TARGET)
    }

    /// `upstream-vhost` → Rule `vhost`.
    pub fn upstream_vhost(&self) -> Option<String> {
        self.text(UPSTREAM_VHOST)
    }

    /// `enable-cors` → Rule `enableCORS`.
    pub fn enable_cors(&self) -> Result<bool, Invalid> {
        self.get(ENABLE_CORS).map(|v| parse_bool(ENABLE_CORS, v)).unwrap_or(Ok(false))
    }

    /// `cors-allow-headers` → Rule `corsAllowHeaders`.
    pub fn cors_allow_headers(&self) -> Option<String> {
        self.text(CORS_ALLOW_HEADERS)
    }

    /// `cors-allow-origin` (comma list) → Rule `corsAllowOrigin`.
    pub fn cors_allow_origin(&self) -> Option<String> {
        self.text(CORS_ALLOW_ORIGIN)
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
        self.get(&key).map(|v| parse_bool(&key, v).map(Some)).unwrap_or(Ok(None))
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

    /// Everything the annotations give the Rule of rule `r`, path `p`, with the problems found.
    pub fn for_path(&self, r: usize, p: usize) -> (PathAnnotations, Vec<Invalid>) {
        let mut bad = Vec::new();
        let mut out = PathAnnotations {
            priority: DEFAULT_RULE_PRIORITY,
            backend_protocol: Ok(String::new()),
            rewrite_target: self.rewrite_target().unwrap_or_default(),
            vhost: self.upstream_vhost().unwrap_or_default(),
            enable_cors: false,
            cors_allow_headers: self.cors_allow_headers().unwrap_or_default(),
            cors_allow_origin: self.cors_allow_origin().unwrap_or_default(),
        };
        match self.rule_priority(r, p) {
            Ok(v) => out.priority = v.unwrap_or(DEFAULT_RULE_PRIORITY),
            Err(e) => bad.push(e),
        }
        out.backend_protocol = self.backend_protocol().map(Option::unwrap_or_default);
        match self.enable_cors() {
            Ok(v) => out.enable_cors = v,
            Err(e) => bad.push(e),
        }
        (out, bad)
    }
}

/// What the annotations give one Rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathAnnotations {
    pub priority: i64,
    /// `Err`: the path gets no Rule.
    pub backend_protocol: Result<String, Invalid>,
    pub rewrite_target: String,
    pub vhost: String,
    pub enable_cors: bool,
    pub cors_allow_headers: String,
    pub cors_allow_origin: String,
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use serde_json::json;

    fn with(annos: &[(&str, &str)]) -> Ingress {
        annos.iter().fold(ingress("ns", "web", json!({})), |ing, (k, v)| annotate(ing, k, v))
    }

    #[test]
    fn backend_protocol_is_lower_cased_and_checked() {
        let ing = with(&[(BACKEND_PROTOCOL, "HTTPS")]);
        assert_eq!(Annotations::new(&ing, "cpaas.io").backend_protocol(), Ok(Some("https".into())));
        let ing = with(&[(BACKEND_PROTOCOL, "GRPC")]);
        assert_eq!(Annotations::new(&ing, "cpaas.io").backend_protocol(), Ok(Some("grpc".into())));
        let ing = with(&[(BACKEND_PROTOCOL, "GRPCS")]);
        assert_eq!(Annotations::new(&ing, "cpaas.io").backend_protocol(), Ok(Some("grpcs".into())));
        let ing = with(&[(BACKEND_PROTOCOL, "FCGI")]);
        let err = Annotations::new(&ing, "cpaas.io").backend_protocol().unwrap_err();
        assert_eq!(err.key, BACKEND_PROTOCOL);
        assert!(err.message("skipped").contains("\"FCGI\""), "{}", err.message("skipped"));
        let ing = with(&[]);
        assert_eq!(Annotations::new(&ing, "cpaas.io").backend_protocol(), Ok(None));
    }

    #[test]
    fn priority_and_bools() {
        let ing = with(&[
            ("alb.cpaas.io/ingress-rule-priority-0-1", "3"),
            ("alb.cpaas.io/ingress-rule-priority-1-0", "0"),
            ("alb.cpaas.io/ingress-rule-priority-1-1", "high"),
            (ENABLE_CORS, "yes"),
            ("alb.networking.cpaas.io/enable-https", "False"),
        ]);
        let a = Annotations::new(&ing, "cpaas.io");
        assert_eq!(a.rule_priority(0, 1), Ok(Some(3)));
        assert_eq!(a.rule_priority(0, 0), Ok(None));
        assert_eq!(a.rule_priority(1, 0), Ok(None), "0 = default");
        assert!(a.rule_priority(1, 1).is_err());
        assert!(a.enable_cors().is_err());
        assert_eq!(a.enable_https(), Ok(Some(false)));
        let (pa, bad) = a.for_path(1, 1);
        assert_eq!(pa.priority, DEFAULT_RULE_PRIORITY);
        assert!(!pa.enable_cors);
        assert_eq!(bad.len(), 2, "{bad:?}");
    }

    #[test]
    fn tls_annotation() {
        let key = tls_key("cpaas.io");
        let ing = with(&[(&key, "A.com=ns1/s1, b.com=ns2/s2,a.com=ns1/s1")]);
        let tls = Annotations::new(&ing, "cpaas.io").tls().unwrap();
        assert_eq!(tls.get("a.com").map(String::as_str), Some("ns1/s1"));
        assert_eq!(tls.get("b.com").map(String::as_str), Some("ns2/s2"));
        for bad in ["a.com=s1", "a.com", "=ns/s", "a.com=ns1/s1,a.com=ns1/s2", "a.com=ns/s/x"] {
            let ing = with(&[(&key, bad)]);
            assert!(Annotations::new(&ing, "cpaas.io").tls().is_err(), "{bad}");
        }
    }
}
