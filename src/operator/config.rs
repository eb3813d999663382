//! `spec.config` of an ALB2 (controlplane.md §1.3): the operator's defaults JSON-merged with the user's
//! config, then checked and turned into [`AlbConfig`]. Every value is validated before anything is applied:
//! one bad value gives a [`ConfigError`] naming the field, and the reconciler applies nothing.
//! Keys the operator knows but does not act on are accepted; keys nobody knows are reported (the ALB2 shows
//! Warning naming them) and ignored, as §1.2 says.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// An invalid `spec.config` value: which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.config.{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { field: field.to_string(), reason: reason.into() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    Host,
    Container,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Host => "host",
            NetworkMode::Container => "container",
        }
    }
}

/// cpu/memory limits and requests of one container (Kubernetes quantities as strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub limits: BTreeMap<String, String>,
    pub requests: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vip {
    pub enable_lb_svc: bool,
    pub annotations: BTreeMap<String, String>,
    pub ip_family_policy: Option<String>,
    pub allocate_node_ports: bool,
}

/// The checked, defaulted configuration the objects are computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct AlbConfig {
    pub network_mode: NetworkMode,
    pub replicas: i32,
    pub node_selector: BTreeMap<String, String>,
    pub anti_affinity_key: String,
    pub nginx_resources: Resources,
    pub alb_resources: Resources,
    pub enable_ingress: bool,
    pub default_ingress_class: bool,
    pub ingress_http_port: u16,
    pub ingress_https_port: u16,
    pub metrics_port: u16,
    pub vip: Vip,
    pub projects: Vec<String>,
    pub readonly_fs: bool,
    pub worker_limit: u32,
    pub bind_nic: String,
    pub port_projects: String,
    /// Keys of `spec.config` nobody knows (ignored; reported in the status).
    pub unknown_keys: Vec<String>,
}

/// The operator's defaults (§1.3), as JSON so the user's config merges onto them like the original does.
pub fn defaults() -> Value {
    json!({
        "networkMode": "host",
        "replicas": 3,
        "nodeSelector": {},
        "antiAffinityKey": "local",
        "resources": {
            "limits": {"cpu": "2", "memory": "2Gi"},
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "alb": {
                "limits": {"cpu": "200m", "memory": "2Gi"},
                "requests": {"cpu": "50m", "memory": "128Mi"}
            }
        },
        "enableALb": true,
        "enableIngress": "true",
        "defaultIngressClass": false,
        "ingressHTTPPort": 80,
        "ingressHTTPSPort": 443,
        "defaultSSLStrategy": "Never",
        "defaultSSLCert": "",
        "ingressController": "alb2",
        "projects": [],
        "enablePortProject": false,
        "portProjects": "[]",
        "vip": {"enableLbSvc": false, "allocateLoadBalancerNodePorts": true},
        "metricsPort": 1936,
        "enablePrometheus": "true",
        "enablePortprobe": "true",
        "enableIPV6": "true",
        "enableHTTP2": "true",
        "enableGzip": "true",
        "enableCrossClusters": "false",
        "enableGoMonitor": false,
        "enableProfile": false,
        "goMonitorPort": 1937,
        "workerLimit": 8,
        "resyncPeriod": 300,
        "interval": 5,
        "reloadtimeout": 600,
        "maxTermSeconds": 30,
        "backlog": 2048,
        "policyZip": false,
        "syncPolicyInterval": 1,
        "cleanMetricsInterval": 2592000,
        "bindNIC": "{}",
        "readonlyFS": true
    })
}

/// Keys of §1.3 plus the chart's own values keys (§5.6: the default ALB's `spec.config` is the chart values
/// minus `global`), accepted even when this operator does not act on them.
const KNOWN_KEYS: &[&str] = &[
    "loadbalancerName",
    "networkMode",
    "replicas",
    "nodeSelector",
    "antiAffinityKey",
    "resources",
    "enableALb",
    "enableIngress",
    "defaultIngressClass",
    "ingressHTTPPort",
    "ingressHTTPSPort",
    "defaultSSLStrategy",
    "defaultSSLCert",
    "ingressSSLRedirect",
    "ingressController",
    "projects",
    "enablePortProject",
    "portProjects",
    "vip",
    "gateway",
    "metricsPort",
    "enablePrometheus",
    "enablePortprobe",
    "enableIPV6",
    "enableHTTP2",
    "enableGzip",
    "enableCrossClusters",
    "enableGoMonitor",
    "enableProfile",
    "goMonitorPort",
    "workerLimit",
    "resyncPeriod",
    "interval",
    "reloadtimeout",
    "maxTermSeconds",
    "backlog",
    "policyZip",
    "syncPolicyInterval",
    "cleanMetricsInterval",
    "bindNIC",
    "overwrite",
    "readonlyFS",
    "otel",
    "modsecurity",
    "auth",
    "timeout",
    // chart values that land in the default ALB's config
    "operator",
    "defaultAlb",
    "operatorReplicas",
    "operatorDeployMode",
    "displayName",
    "address",
    "alaudaConsole",
];

/// RFC 7386 JSON merge patch: `patch` onto `base` (null deletes).
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

struct Reader<'a>(&'a Map<String, Value>);

impl Reader<'_> {
    fn get(&self, path: &str) -> Option<&Value> {
        let mut cur: Option<&Value> = None;
        for (i, part) in path.split('.').enumerate() {
            cur = if i == 0 { self.0.get(part) } else { cur?.get(part) };
        }
        cur.filter(|v| !v.is_null())
    }

    fn int(&self, path: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
        let v = self.get(path).ok_or_else(|| bad(path, "missing"))?;
        let n = match v {
            Value::Number(n) => n.as_i64().ok_or_else(|| bad(path, format!("{n} is not an integer")))?,
            other => return Err(bad(path, format!("expected an integer, got {other}"))),
        };
        if n < min || n > max {
            return Err(bad(path, format!("{n} is out of range {min}..={max}")));
        }
        Ok(n)
    }

    fn bool(&self, path: &str) -> Result<bool, ConfigError> {
        match self.get(path) {
            Some(Value::Bool(b)) => Ok(*b),
            None => Ok(false),
            Some(other) => Err(bad(path, format!("expected true or false, got {other}"))),
        }
    }

    /// "str-bool": `"true"`/`"false"` (case-insensitive); a JSON bool is accepted too.
    fn str_bool(&self, path: &str) -> Result<bool, ConfigError> {
        match self.get(path) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
            None => Ok(false),
            Some(other) => Err(bad(path, format!("expected \"true\" or \"false\", got {other}"))),
        }
    }

    fn string(&self, path: &str) -> Result<String, ConfigError> {
        match self.get(path) {
            Some(Value::String(s)) => Ok(s.clone()),
            None => Ok(String::new()),
            Some(other) => Err(bad(path, format!("expected a string, got {other}"))),
        }
    }

    fn string_map(&self, path: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        match self.get(path) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(bad(&format!("{path}.{k}"), format!("expected a string, got {other}"))),
                })
                .collect(),
            Some(other) => Err(bad(path, format!("expected an object of strings, got {other}"))),
        }
    }

    fn quantity(&self, path: &str) -> Result<Option<String>, ConfigError> {
        let q = match self.get(path) {
            None => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => return Err(bad(path, format!("expected a quantity, got {other}"))),
        };
        if !valid_quantity(&q) {
            return Err(bad(path, format!("{q:?} is not a Kubernetes quantity")));
        }
        Ok(Some(q))
    }

    fn resources(&self, base: &str) -> Result<Resources, ConfigError> {
        let mut r = Resources { limits: BTreeMap::new(), requests: BTreeMap::new() };
        for (kind, map) in [("limits", &mut r.limits), ("requests", &mut r.requests)] {
            for res in ["cpu", "memory"] {
                if let Some(q) = self.quantity(&format!("{base}.{kind}.{res}"))? {
                    map.insert(res.to_string(), q);
                }
            }
        }
        Ok(r)
    }
}

/// `<number>[suffix]`: the quantity forms people write (`2`, `0.5`, `200m`, `2Gi`, `1e3`).
fn valid_quantity(q: &str) -> bool {
    let num_end = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(num_end);
    let num_ok = !num.is_empty() && num.trim_start_matches(['+', '-']).parse::<f64>().is_ok();
    let suffix_ok = ["", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].contains(&suffix)
        || (suffix.starts_with(['e', 'E']) && suffix[1..].parse::<i32>().is_ok());
    num_ok && suffix_ok
}

/// Label values: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends (or empty).
pub fn valid_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

impl AlbConfig {
    /// Defaults ⊕ `spec.config`, checked. `None` (no config) is the defaults.
    pub fn from_spec(config: Option<&Value>) -> Result<AlbConfig, ConfigError> {
        let mut merged = defaults();
        let mut unknown_keys = Vec::new();
        match config {
            None | Some(Value::Null) => {}
            Some(Value::Object(user)) => {
                unknown_keys = user.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())).cloned().collect();
                merge(&mut merged, &Value::Object(user.clone()));
            }
            Some(other) => return Err(bad("", format!("spec.config must be an object, got {other}"))),
        }
        let Value::Object(m) = &merged else { unreachable!("defaults are an object") };
        let r = Reader(m);
        let network_mode = match r.string("networkMode")?.as_str() {
            "host" => NetworkMode::Host,
            "container" => NetworkMode::Container,
            other => return Err(bad("networkMode", format!("{other:?} is neither \"host\" nor \"container\""))),
        };
        let anti_affinity_key = r.string("antiAffinityKey")?;
        if anti_affinity_key.is_empty() || !valid_label_value(&anti_affinity_key) {
            return Err(bad("antiAffinityKey", format!("{anti_affinity_key:?} is not a valid label value")));
        }
        let node_selector = r.string_map("nodeSelector")?;
        for (k, v) in &node_selector {
            if !valid_label_value(v) {
                return Err(bad(&format!("nodeSelector.{k}"), format!("{v:?} is not a valid label value")));
            }
        }
        let projects = match r.get("projects") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, p)| match p {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(bad(&format!("projects[{i}]"), format!("expected a string, got {other}"))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(bad("projects", format!("expected a list of strings, got {other}"))),
        };
        let strategy = r.string("defaultSSLStrategy")?;
        if !["Never", "Request", "Always", "Both"].contains(&strategy.as_str()) {
            return Err(bad("defaultSSLStrategy", format!("{strategy:?} is not one of Never, Request, Always, Both")));
        }
        let ip_family_policy = match r.string("vip.lbSvcIpFamilyPolicy")?.as_str() {
            "" => None,
            p @ ("SingleStack" | "PreferDualStack" | "RequireDualStack") => Some(p.to_string()),
            other => {
                return Err(bad(
                    "vip.lbSvcIpFamilyPolicy",
                    format!("{other:?} is not one of SingleStack, PreferDualStack, RequireDualStack"),
                ))
            }
        };
        let vip = Vip {
            enable_lb_svc: r.bool("vip.enableLbSvc")?,
            annotations: r.string_map("vip.lbSvcAnnotations")?,
            ip_family_policy,
            allocate_node_ports: r.get("vip.allocateLoadBalancerNodePorts").is_none()
                || r.bool("vip.allocateLoadBalancerNodePorts")?,
        };
        // Checked for type only: accepted, used by the controller or not at all.
        for key in ["enablePrometheus", "enablePortprobe", "enableIPV6", "enableHTTP2", "enableGzip"] {
            r.str_bool(key)?;
        }
        for key in ["enableALb", "enableGoMonitor", "enableProfile", "policyZip", "enablePortProject"] {
            r.bool(key)?;
        }
        for key in ["resyncPeriod", "interval", "reloadtimeout", "maxTermSeconds", "backlog"] {
            r.int(key, 0, i32::MAX as i64)?;
        }
        Ok(AlbConfig {
            network_mode,
            replicas: r.int("replicas", 0, 1000)? as i32,
            node_selector,
            anti_affinity_key,
            nginx_resources: r.resources("resources")?,
            alb_resources: r.resources("resources.alb")?,
            enable_ingress: r.str_bool("enableIngress")?,
            default_ingress_class: r.bool("defaultIngressClass")?,
            ingress_http_port: r.int("ingressHTTPPort", 0, 65535)? as u16,
            ingress_https_port: r.int("ingressHTTPSPort", 0, 65535)? as u16,
            metrics_port: r.int("metricsPort", 1, 65535)? as u16,
            vip,
            projects,
            readonly_fs: r.bool("readonlyFS")?,
            worker_limit: r.int("workerLimit", 0, 256)? as u32,
            bind_nic: r.string("bindNIC")?,
            port_projects: r.string("portProjects")?,
            unknown_keys,
        })
    }

    /// nginx workers: `min(ceil(limits.cpu), workerLimit)`, at least 1 (`workerLimit` 0 → 4), like `CPU_PRESET`.
    pub fn workers(&self) -> u32 {
        let cpu = self.nginx_resources.limits.get("cpu").map(|q| cpu_cores(q)).unwrap_or(1).max(1);
        let limit = if self.worker_limit == 0 { 4 } else { self.worker_limit };
        cpu.min(limit)
    }
}

/// `ceil(cores)` of a cpu quantity (`2`, `1.5`, `500m`).
fn cpu_cores(q: &str) -> u32 {
    let cores = match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().unwrap_or(1000.0) / 1000.0,
        None => q.parse::<f64>().unwrap_or(1.0),
    };
    cores.ceil().clamp(1.0, 1024.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_originals() {
        let c = AlbConfig::from_spec(None).unwrap();
        assert_eq!(c.network_mode, NetworkMode::Host);
        assert_eq!(c.replicas, 3);
        assert_eq!(c.anti_affinity_key, "local");
        assert_eq!(c.nginx_resources.limits["cpu"], "2");
        assert_eq!(c.alb_resources.limits["cpu"], "200m");
        assert_eq!((c.ingress_http_port, c.ingress_https_port, c.metrics_port), (80, 443, 1936));
        assert!(c.enable_ingress && c.readonly_fs && !c.vip.enable_lb_svc);
        assert_eq!(c.workers(), 2);
    }

    #[test]
    fn user_config_merges_onto_defaults() {
        let c = AlbConfig::from_spec(Some(&json!({
            "networkMode": "container", "replicas": 1,
            "resources": {"limits": {"cpu": 4}, "alb": {"requests": {"memory": "64Mi"}}},
            "enableIngress": "False", "vip": {"enableLbSvc": true}, "loadbalancerName": "x"
        })))
        .unwrap();
        assert_eq!(c.network_mode, NetworkMode::Container);
        assert_eq!(c.replicas, 1);
        assert_eq!(c.nginx_resources.limits["cpu"], "4");
        assert_eq!(c.nginx_resources.limits["memory"], "2Gi", "sibling keys keep their defaults");
        assert_eq!(c.alb_resources.requests["memory"], "64Mi");
        assert_eq!(c.alb_resources.requests["cpu"], "50m");
        assert!(!c.enable_ingress && c.vip.enable_lb_svc && c.vip.allocate_node_ports);
        assert!(c.unknown_keys.is_empty());
        assert_eq!(c.workers(), 4);
    }

    #[test]
    fn invalid_values_name_the_field() {
        let cases = [
            (json!({"replicas": "three"}), "replicas"),
            (json!({"replicas": -1}), "replicas"),
            (json!({"networkMode": "bridge"}), "networkMode"),
            (json!({"resources": {"limits": {"cpu": "lots"}}}), "resources.limits.cpu"),
            (json!({"resources": {"alb": {"requests": {"memory": "1 GB"}}}}), "resources.alb.requests.memory"),
            (json!({"metricsPort": 70000}), "metricsPort"),
            (json!({"enableIngress": "yes"}), "enableIngress"),
            (json!({"nodeSelector": {"a": 1}}), "nodeSelector.a"),
            (json!({"vip": {"lbSvcIpFamilyPolicy": "Dual"}}), "vip.lbSvcIpFamilyPolicy"),
            (json!({"defaultSSLStrategy": "Sometimes"}), "defaultSSLStrategy"),
        ];
        for (cfg, field) in cases {
            let e = AlbConfig::from_spec(Some(&cfg)).unwrap_err();
            assert_eq!(e.field, field, "{cfg}: {e}");
            assert!(e.to_string().starts_with(&format!("spec.config.{field}: ")), "{e}");
        }
    }

    #[test]
    fn unknown_keys_are_reported_not_fatal() {
        let c = AlbConfig::from_spec(Some(&json!({"replicas": 2, "replicaz": 5}))).unwrap();
        assert_eq!(c.unknown_keys, vec!["replicaz".to_string()]);
        assert_eq!(c.replicas, 2);
    }

    #[test]
    fn quantities() {
        for q in ["2", "0.5", "200m", "2Gi", "128Mi", "1e3", "1.5"] {
            assert!(valid_quantity(q), "{q}");
        }
        for q in ["", "lots", "1 GB", "2gi", "m"] {
            assert!(!valid_quantity(q), "{q}");
        }
        assert_eq!(cpu_cores("1500m"), 2);
        assert_eq!(cpu_cores("200m"), 1);
    }
}
