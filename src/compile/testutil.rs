//! Test helpers: a reference evaluator of policy expressions (docs/policy.md "Expr" semantics), the index
//! admission check of the Lua router, and fixture constructors.

use crate::compile::service::Service;
use crate::compile::slice::EndpointSlice;
use crate::crd::{Frontend, Rule};
use crate::policy::Index;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Req {
    pub host: String,
    pub uri: String,
    pub method: String,
    pub src_ip: String,
    /// Normalised names (lower case, `-` → `_`).
    pub headers: BTreeMap<String, String>,
    pub params: BTreeMap<String, String>,
    pub cookies: BTreeMap<String, String>,
}

fn header_key(k: &str) -> String {
    k.to_ascii_lowercase().replace('-', "_")
}

impl Req {
    pub fn new(host: &str, uri: &str) -> Req {
        Req { host: host.into(), uri: uri.into(), method: "GET".into(), src_ip: "127.0.0.1".into(), ..Req::default() }
    }
    pub fn src_ip(mut self, ip: &str) -> Req {
        self.src_ip = ip.into();
        self
    }
    pub fn method(mut self, m: &str) -> Req {
        self.method = m.into();
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.insert(header_key(k), v.into());
        self
    }
    pub fn param(mut self, k: &str, v: &str) -> Req {
        self.params.insert(k.into(), v.into());
        self
    }
    pub fn cookie(mut self, k: &str, v: &str) -> Req {
        self.cookies.insert(k.to_ascii_lowercase(), v.into());
        self
    }
}

fn strs(v: &[Value]) -> Vec<&str> {
    v.iter().map(|x| x.as_str().expect("operands are strings")).collect()
}

/// Evaluate a policy `match` expression against a request.
pub fn eval(expr: &Value, req: &Req) -> bool {
    let items = expr.as_array().expect("expression is an array");
    let op = items[0].as_str().expect("operator is a string");
    match op {
        "AND" => items[1..].iter().all(|c| eval(c, req)),
        "OR" => items[1..].iter().any(|c| eval(c, req)),
        _ => {
            let matcher = items[1].as_str().unwrap();
            let (value, args) = match matcher {
                "HOST" => (Some(req.host.clone()), strs(&items[2..])),
                "URL" => (Some(req.uri.clone()), strs(&items[2..])),
                "METHOD" => (Some(req.method.clone()), strs(&items[2..])),
                "SRC_IP" => (Some(req.src_ip.clone()), strs(&items[2..])),
                "HEADER" | "PARAM" | "COOKIE" => {
                    let key = items[2].as_str().unwrap();
                    let v = match matcher {
                        "HEADER" => req.headers.get(&header_key(key)),
                        "PARAM" => req.params.get(key),
                        _ => req.cookies.get(&key.to_ascii_lowercase()),
                    };
                    (v.cloned(), strs(&items[3..]))
                }
                m => panic!("unknown matcher {m}"),
            };
            let Some(v) = value else { return false };
            apply(op, &v, &args)
        }
    }
}

fn apply(op: &str, v: &str, args: &[&str]) -> bool {
    match op {
        "EQ" => v == args[0],
        "IN" => args.contains(&v),
        "STARTS_WITH" => v.as_bytes().starts_with(args[0].as_bytes()),
        "ENDS_WITH" => {
            let a = args[0];
            let suffix = &a[1..];
            v.len() >= a.len() && v.ends_with(suffix) && !v[..v.len() - a.len()].contains('.')
        }
        "REGEX" => pcre2::bytes::RegexBuilder::new().build(args[0]).unwrap().is_match(v.as_bytes()).unwrap(),
        "EXIST" => true,
        "RANGE" => {
            let (lo, hi) = (args[0], args[1]);
            if let Ok(x) = v.parse::<Ipv4Addr>() {
                match (lo.parse::<Ipv4Addr>(), hi.parse::<Ipv4Addr>()) {
                    (Ok(a), Ok(b)) => a <= x && x <= b,
                    _ => false,
                }
            } else if let Ok(x) = v.parse::<Ipv6Addr>() {
                match (lo.parse::<Ipv6Addr>(), hi.parse::<Ipv6Addr>()) {
                    (Ok(a), Ok(b)) => a <= x && x <= b,
                    _ => false,
                }
            } else if let (Ok(x), Ok(a), Ok(b)) = (v.parse::<f64>(), lo.parse::<f64>(), hi.parse::<f64>()) {
                a <= x && x <= b
            } else {
                lo <= v && v <= hi
            }
        }
        o => panic!("unknown operator {o}"),
    }
}

/// What the Lua router does with an index: exact host / wildcard parent (one label) / any host, then exact
/// path / prefix / any path.
pub fn index_admits(i: &Index, req: &Req) -> bool {
    let host_ok = (i.hosts.is_empty() && i.wildcard_hosts.is_empty())
        || i.hosts.contains(&req.host)
        || req.host.split_once('.').is_some_and(|(label, parent)| {
            !label.is_empty() && !parent.is_empty() && i.wildcard_hosts.contains(&format!("*.{parent}"))
        });
    let path_ok = (i.paths.is_empty() && i.prefixes.is_empty())
        || i.paths.contains(&req.uri)
        || i.prefixes.iter().any(|p| req.uri.starts_with(p.as_str()));
    host_ok && path_ok
}

// ---- fixtures -------------------------------------------------------------------------------------------

pub const NS: &str = "cpaas-system";
pub const ALB: &str = "alb-dev";

/// http Frontend `name` on `port` of ALB `alb-dev` in `cpaas-system`.
/// Objects as a [`super::Snapshot`] holds them (shared with the controller's caches).
pub fn arcs<T>(v: Vec<T>) -> Vec<Arc<T>> {
    v.into_iter().map(Arc::new).collect()
}

pub fn frontend(name: &str, port: i32, protocol: &str, service_group: Option<Value>) -> Frontend {
    serde_json::from_value(json!({
        "apiVersion": "crd.alauda.io/v1", "kind": "Frontend",
        "metadata": {"name": name, "namespace": NS, "labels": {"alb2.cpaas.io/name": ALB}},
        "spec": {"port": port, "protocol": protocol, "serviceGroup": service_group}
    }))
    .unwrap()
}

/// Rule `name` of Frontend `ft` with the given spec fragment (merged over `{priority: 0}`).
pub fn rule(name: &str, ft: &str, spec: Value) -> Rule {
    serde_json::from_value(json!({
        "apiVersion": "crd.alauda.io/v1", "kind": "Rule",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"alb2.cpaas.io/name": ALB, "alb2.cpaas.io/frontend": ft}},
        "spec": spec
    }))
    .unwrap()
}

/// A rule matching `dslx` with backends `svc:port` (namespace `default`).
pub fn rule_to(name: &str, ft: &str, priority: i64, dslx: Value, svc: &str, port: i32) -> Rule {
    rule(
        name,
        ft,
        json!({"priority": priority, "dslx": dslx,
               "serviceGroup": {"services": [{"name": svc, "namespace": "default", "port": port}]}}),
    )
}

/// ClusterIP Service `ns/name` with `(port name, port, targetPort)` entries.
pub fn service(ns: &str, name: &str, ports: &[(&str, i32, Value)]) -> Service {
    let ports: Vec<Value> =
        ports.iter().map(|(n, p, t)| json!({"name": n, "port": p, "targetPort": t, "protocol": "TCP"})).collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "ClusterIP", "ports": ports}
    }))
    .unwrap()
}

/// EndpointSlice of `ns/svc` with `(port name, port)` and `(address, ready)` endpoints.
pub fn slice(
    ns: &str,
    svc: &str,
    name: &str,
    ports: &[(&str, i32)],
    endpoints: &[(&str, Option<bool>)],
) -> EndpointSlice {
    let ports: Vec<Value> = ports.iter().map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"})).collect();
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(a, r)| match r {
            Some(r) => json!({"addresses": [a], "conditions": {"ready": r}}),
            None => json!({"addresses": [a]}),
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "ports": ports, "endpoints": eps
    }))
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluator_semantics() {
        let r = Req::new("x.a.com", "/api/v1").header("X-User", "bob").param("q", "").cookie("sid", "1");
        let t = |e: Value| eval(&e, &r);
        assert!(t(json!(["ENDS_WITH", "HOST", "*.a.com"])));
        assert!(!eval(&json!(["ENDS_WITH", "HOST", "*.a.com"]), &Req::new("a.com", "/")));
        assert!(!eval(&json!(["ENDS_WITH", "HOST", "*.a.com"]), &Req::new("x.y.a.com", "/")));
        assert!(t(json!(["EQ", "HEADER", "x_user", "bob"])));
        assert!(t(json!(["EXIST", "PARAM", "q"])));
        assert!(!t(json!(["EXIST", "PARAM", "z"])));
        assert!(t(json!(["REGEX", "URL", "v\\d"])));
        assert!(t(json!(["AND"])));
        assert!(!t(json!(["OR"])));
        assert!(eval(&json!(["RANGE", "SRC_IP", "10.0.0.1", "10.0.0.20"]), &Req::new("h", "/").src_ip("10.0.0.3")));
        assert!(!eval(&json!(["RANGE", "SRC_IP", "10.0.0.1", "10.0.0.20"]), &Req::new("h", "/").src_ip("10.0.0.30")));
        assert!(eval(&json!(["EQ", "METHOD", "POST"]), &Req::new("h", "/").method("POST")));
    }
}
