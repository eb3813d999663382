//! `spec.config` of an ALB2 (controlplane.md §1.3): the operator's defaults JSON-merged with the user's
//! config, then checked and turned into [`AlbConfig`]. Every value is validated before anything is applied:
//! one bad value gives a [`ConfigError`] naming the field, and the reconciler applies nothing.
//! Keys the operator knows but does not act on are accepted; keys nobody knows are reported (the ALB2 shows
//! Warning naming them) and ignored, as §1.2 says.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// An invalid value: which field (its full path, e.g. `spec.config.replicas` or
/// `metadata.annotations[alb.cpaas.io/nginx-env]`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

/// An invalid `spec.config.<field>`.
fn bad(field: &str, reason: impl Into<String>) -> ConfigError {
    let field = if field.is_empty() { "spec.config".to_string() } else { format!("spec.config.{field}") };
    ConfigError { field, reason: reason.into() }
}

/// Annotation of the ALB2: JSON object of extra env for the nginx container (§1.8).
pub const NGINX_ENV_ANNOTATION: &str = "alb.cpaas.io/nginx-env";
/// Annotation of the ALB2 (any value): the pods tolerate every taint (§5.3.1).
pub const TOLERATE_ALL_ANNOTATION: &str = "tolerate-all";
/// The env the nginx container gets from the operator itself; `alb.cpaas.io/nginx-env` cannot replace them.
pub const NGINX_OWN_ENV: &[&str] = &["MY_POD_NAME", "NAME", "ALB_NS", "ALB_VER"];
/// The nginx snippet keys `overwrite.configmap` copies (§5.3.3; `bind_nic` never).
pub const SNIPPET_KEYS: &[&str] =
    &["http", "http_server", "grpc_server", "stream-common", "stream-tcp", "stream-udp", "upstream"];

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

/// One `overwrite.image[]` entry: images for the operator version `target` (empty = any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePatch {
    pub target: String,
    pub alb: String,
    pub nginx: String,
}

/// One `overwrite.configmap[]` entry: copy the nginx snippet keys of ConfigMap `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapPatch {
    pub target: String,
    pub namespace: String,
    pub name: String,
    /// Its index in `overwrite.configmap` (to name the field in errors).
    pub index: usize,
}

/// One `portProjects` entry: `port` is `"N"` or `"A-B"` (A < B).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortProject {
    pub first: u16,
    pub last: u16,
    pub projects: Vec<String>,
}

/// Gateway mode (§4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gateway {
    Disabled,
    /// Shared: the GatewayClass the controller serves (`gateway.name`, else the ALB's name).
    Shared {
        class: Option<String>,
    },
    /// Standalone: the one Gateway `name` (in `namespace`, else the ALB's namespace) this ALB serves.
    Standalone {
        name: String,
        namespace: Option<String>,
    },
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
    /// `portProjects` as written (ConfigMap `<alb>-port-info` `data.range`) and parsed.
    pub port_projects: String,
    pub port_project_list: Vec<PortProject>,
    pub enable_port_project: bool,
    pub enable_alb: bool,
    pub enable_portprobe: bool,
    pub gateway: Gateway,
    pub overwrite_images: Vec<ImagePatch>,
    pub overwrite_configmaps: Vec<ConfigMapPatch>,
    /// From the annotation `alb.cpaas.io/nginx-env` ([`AlbConfig::with_annotations`]).
    pub nginx_env: BTreeMap<String, String>,
    /// The annotation `tolerate-all` is present.
    pub tolerate_all: bool,
    /// Keys of `spec.config` nobody knows (ignored; reported in the status).
    pub unknown_keys: Vec<String>,
}

/// Images of the two containers after `overwrite.image` (§1.3): the last entry whose `target` is empty or this
/// operator's version wins, field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub alb: String,
    pub nginx: String,
    pub patched: bool,
}

impl Images {
    /// `status.detail.version.imagePatch`.
    pub fn patch_text(&self) -> String {
        if self.patched {
            format!("patched,alb: {},nginx: {}", self.alb, self.nginx)
        } else {
            "not patch".into()
        }
    }
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
        for key in ["enablePrometheus", "enableIPV6", "enableHTTP2", "enableGzip"] {
            r.str_bool(key)?;
        }
        for key in ["enableGoMonitor", "enableProfile", "policyZip"] {
            r.bool(key)?;
        }
        for key in ["resyncPeriod", "interval", "reloadtimeout", "maxTermSeconds", "backlog"] {
            r.int(key, 0, i32::MAX as i64)?;
        }
        let port_projects = r.string("portProjects")?;
        let port_project_list = parse_port_projects(&port_projects)?;
        let gateway = gateway(&r)?;
        let (overwrite_images, overwrite_configmaps) = overwrite(&r)?;
        let mut network_mode = network_mode;
        let mut vip = vip;
        let mut enable_alb = r.bool("enableALb")?;
        let mut enable_ingress = r.str_bool("enableIngress")?;
        let mut enable_portprobe = r.str_bool("enablePortprobe")?;
        if matches!(gateway, Gateway::Standalone { .. }) {
            // §4.1: a standalone gateway ALB is a container-mode pod behind its own LoadBalancer Service.
            network_mode = NetworkMode::Container;
            vip.enable_lb_svc = true;
            enable_alb = false;
            enable_ingress = false;
            enable_portprobe = false;
        }
        Ok(AlbConfig {
            network_mode,
            replicas: r.int("replicas", 0, 1000)? as i32,
            node_selector,
            anti_affinity_key,
            nginx_resources: r.resources("resources")?,
            alb_resources: r.resources("resources.alb")?,
            enable_ingress,
            default_ingress_class: r.bool("defaultIngressClass")?,
            ingress_http_port: r.int("ingressHTTPPort", 0, 65535)? as u16,
            ingress_https_port: r.int("ingressHTTPSPort", 0, 65535)? as u16,
            metrics_port: r.int("metricsPort", 1, 65535)? as u16,
            vip,
            projects,
            readonly_fs: r.bool("readonlyFS")?,
            worker_limit: r.int("workerLimit", 0, 256)? as u32,
            bind_nic: r.string("bindNIC")?,
            port_projects,
            port_project_list,
            enable_port_project: r.bool("enablePortProject")?,
            enable_alb,
            enable_portprobe,
            gateway,
            overwrite_images,
            overwrite_configmaps,
            nginx_env: BTreeMap::new(),
            tolerate_all: false,
            unknown_keys,
        })
    }

    /// Adds what the ALB2's annotations say: `alb.cpaas.io/nginx-env` (a JSON object of strings; names must be
    /// env names and not the operator's own nginx env) and `tolerate-all` (any value).
    pub fn with_annotations(mut self, annotations: &BTreeMap<String, String>) -> Result<AlbConfig, ConfigError> {
        self.tolerate_all = annotations.contains_key(TOLERATE_ALL_ANNOTATION);
        let Some(raw) = annotations.get(NGINX_ENV_ANNOTATION) else { return Ok(self) };
        let field = format!("metadata.annotations[{NGINX_ENV_ANNOTATION}]");
        let err = |reason: String| ConfigError { field: field.clone(), reason };
        let v: Value = serde_json::from_str(raw).map_err(|e| err(format!("not JSON: {e}")))?;
        let Value::Object(m) = v else { return Err(err(format!("expected a JSON object of strings, got {v}"))) };
        for (k, v) in m {
            if !valid_env_name(&k) {
                return Err(err(format!("{k:?} is not an environment variable name")));
            }
            if NGINX_OWN_ENV.contains(&k.as_str()) {
                return Err(err(format!("{k} is set by the operator and cannot be overridden")));
            }
            let Value::String(s) = v else { return Err(err(format!("{k}: expected a string, got {v}"))) };
            self.nginx_env.insert(k, s);
        }
        Ok(self)
    }

    /// The images after `overwrite.image` for operator `version`.
    pub fn images(&self, alb_image: &str, nginx_image: &str, version: &str) -> Images {
        let mut out = Images { alb: alb_image.to_string(), nginx: nginx_image.to_string(), patched: false };
        for p in self.overwrite_images.iter().filter(|p| p.target.is_empty() || p.target == version) {
            if !p.alb.is_empty() {
                out.alb = p.alb.clone();
                out.patched = true;
            }
            if !p.nginx.is_empty() {
                out.nginx = p.nginx.clone();
                out.patched = true;
            }
        }
        out
    }

    /// The `overwrite.configmap` entry that applies to operator `version` (the last one), if any.
    pub fn configmap_patch(&self, version: &str) -> Option<&ConfigMapPatch> {
        self.overwrite_configmaps.iter().rfind(|p| p.target.is_empty() || p.target == version)
    }

    /// Projects of the IngressClass annotation `alb.<d>/project` (§5.3.4): `projects`, or in port-project mode
    /// the projects of the ingress HTTP and HTTPS ports (equal → that set; one side `ALL_ALL` → the other;
    /// else the intersection). Sorted.
    pub fn ingress_class_projects(&self) -> Vec<String> {
        if !self.enable_port_project {
            return self.projects.clone();
        }
        let of = |port: u16| -> std::collections::BTreeSet<String> {
            self.port_project_list
                .iter()
                .find(|p| p.first <= port && port <= p.last)
                .map(|p| p.projects.iter().cloned().collect())
                .unwrap_or_default()
        };
        let (http, https) = (of(self.ingress_http_port), of(self.ingress_https_port));
        let set = if http == https {
            http
        } else if http.contains("ALL_ALL") {
            https
        } else if https.contains("ALL_ALL") {
            http
        } else {
            http.intersection(&https).cloned().collect()
        };
        set.into_iter().collect()
    }

    /// nginx workers: `min(ceil(limits.cpu), workerLimit)`, at least 1 (`workerLimit` 0 → 4), like `CPU_PRESET`.
    pub fn workers(&self) -> u32 {
        let cpu = self.nginx_resources.limits.get("cpu").map(|q| cpu_cores(q)).unwrap_or(1).max(1);
        let limit = if self.worker_limit == 0 { 4 } else { self.worker_limit };
        cpu.min(limit)
    }
}

fn valid_env_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Image references: no whitespace or control characters, not empty (the registry checks the rest).
fn valid_image(s: &str) -> bool {
    !s.is_empty() && s.len() <= 512 && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// DNS-1123 subdomain (ConfigMap names) / label (namespaces).
fn dns_name(s: &str, max: usize, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `portProjects`: a JSON string holding `[{"port": "80" | "1000-2000", "projects": ["p1"]}]`.
fn parse_port_projects(raw: &str) -> Result<Vec<PortProject>, ConfigError> {
    let field = "portProjects";
    if raw.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(raw).map_err(|e| bad(field, format!("not JSON: {e}")))?;
    let Value::Array(entries) = v else { return Err(bad(field, "expected a JSON list of {port, projects}")) };
    let port = |s: &str, i: usize| -> Result<u16, ConfigError> {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(&format!("{field}[{i}].port"), format!("{s:?} is not a port 1-65535")))
    };
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let Some(p) = e.get("port").and_then(Value::as_str) else {
            return Err(bad(&format!("{field}[{i}].port"), "missing (a string \"N\" or \"A-B\")"));
        };
        let (first, last) = match p.split_once('-') {
            None => (port(p, i)?, port(p, i)?),
            Some((a, b)) => {
                let (a, b) = (port(a, i)?, port(b, i)?);
                if a >= b {
                    return Err(bad(&format!("{field}[{i}].port"), format!("range {p:?} must start below its end")));
                }
                (a, b)
            }
        };
        let projects = match e.get("projects") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(&format!("{field}[{i}].projects"), "expected a list of strings"))?,
            Some(other) => return Err(bad(&format!("{field}[{i}].projects"), format!("expected a list, got {other}"))),
        };
        out.push(PortProject { first, last, projects });
    }
    Ok(out)
}

/// `gateway.{enable,mode,name}` → the mode of §4.1 (first matching row wins).
fn gateway(r: &Reader) -> Result<Gateway, ConfigError> {
    let enable = match r.get("gateway.enable") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(bad("gateway.enable", format!("expected true or false, got {other}"))),
    };
    if r.get("gateway").is_some_and(|g| !g.is_object()) {
        return Err(bad("gateway", "expected an object {enable, mode, name}"));
    }
    let mode = r.string("gateway.mode")?;
    let name = r.string("gateway.name")?;
    if enable == Some(false) {
        return Ok(Gateway::Disabled);
    }
    match mode.as_str() {
        "" if enable.is_none() => Ok(Gateway::Disabled),
        "" | "shared" => {
            if !name.is_empty() && !dns_name(&name, 253, true) {
                return Err(bad("gateway.name", format!("{name:?} is not a GatewayClass name")));
            }
            Ok(Gateway::Shared { class: (!name.is_empty()).then_some(name) })
        }
        "standalone" if name.is_empty() => Ok(Gateway::Disabled),
        "standalone" => {
            let (n, ns) = match name.split_once('/') {
                Some((n, ns)) => (n.to_string(), Some(ns.to_string())),
                None => (name.clone(), None),
            };
            if !dns_name(&n, 253, true) || ns.as_deref().is_some_and(|ns| !dns_name(ns, 63, false)) {
                return Err(bad("gateway.name", format!("{name:?} is not \"<gateway>\" or \"<gateway>/<namespace>\"")));
            }
            Ok(Gateway::Standalone { name: n, namespace: ns })
        }
        other => Err(bad("gateway.mode", format!("{other:?} is neither \"shared\" nor \"standalone\""))),
    }
}

/// `overwrite.image[]` and `overwrite.configmap[]`, every entry checked (applicable to this version or not).
fn overwrite(r: &Reader) -> Result<(Vec<ImagePatch>, Vec<ConfigMapPatch>), ConfigError> {
    if r.get("overwrite").is_some_and(|o| !o.is_object()) {
        return Err(bad("overwrite", "expected an object {image, configmap}"));
    }
    let list = |key: &str| -> Result<Vec<Map<String, Value>>, ConfigError> {
        match r.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, e)| match e {
                    Value::Object(m) => Ok(m.clone()),
                    other => Err(bad(&format!("{key}[{i}]"), format!("expected an object, got {other}"))),
                })
                .collect(),
            Some(other) => Err(bad(key, format!("expected a list, got {other}"))),
        }
    };
    let string = |m: &Map<String, Value>, path: String, key: &str| -> Result<String, ConfigError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(bad(&format!("{path}.{key}"), format!("expected a string, got {other}"))),
        }
    };
    let mut images = Vec::new();
    for (i, m) in list("overwrite.image")?.iter().enumerate() {
        let path = format!("overwrite.image[{i}]");
        let p = ImagePatch {
            target: string(m, path.clone(), "target")?,
            alb: string(m, path.clone(), "alb")?,
            nginx: string(m, path.clone(), "nginx")?,
        };
        for (key, img) in [("alb", &p.alb), ("nginx", &p.nginx)] {
            if !img.is_empty() && !valid_image(img) {
                return Err(bad(&format!("{path}.{key}"), format!("{img:?} is not an image reference")));
            }
        }
        images.push(p);
    }
    let mut configmaps = Vec::new();
    for (i, m) in list("overwrite.configmap")?.iter().enumerate() {
        let path = format!("overwrite.configmap[{i}]");
        let target = string(m, path.clone(), "target")?;
        let full = string(m, path.clone(), "name")?;
        let Some((ns, name)) = full.split_once('/').filter(|(ns, n)| dns_name(ns, 63, false) && dns_name(n, 253, true))
        else {
            return Err(bad(&format!("{path}.name"), format!("{full:?} is not \"<namespace>/<name>\" of a ConfigMap")));
        };
        configmaps.push(ConfigMapPatch { target, namespace: ns.into(), name: name.into(), index: i });
    }
    Ok((images, configmaps))
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
            assert_eq!(e.field, format!("spec.config.{field}"), "{cfg}: {e}");
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
    fn overwrite_images_by_target() {
        let c = AlbConfig::from_spec(Some(&json!({"overwrite": {"image": [
            {"target": "v9", "alb": "r/alb:v9", "nginx": "r/nginx:v9"},
            {"target": "", "alb": "r/alb:any"},
            {"target": "v1", "nginx": "r/nginx:v1-fix"}
        ]}})))
        .unwrap();
        let i = c.images("a:1", "n:1", "v1");
        assert_eq!((i.alb.as_str(), i.nginx.as_str(), i.patched), ("r/alb:any", "r/nginx:v1-fix", true));
        assert_eq!(i.patch_text(), "patched,alb: r/alb:any,nginx: r/nginx:v1-fix");
        let i = c.images("a:1", "n:1", "v9");
        assert_eq!((i.alb.as_str(), i.nginx.as_str()), ("r/alb:any", "r/nginx:v9"), "later entries win");
        let plain = AlbConfig::from_spec(None).unwrap().images("a:1", "n:1", "v1");
        assert_eq!((plain.alb.as_str(), plain.patched, plain.patch_text().as_str()), ("a:1", false, "not patch"));
    }

    #[test]
    fn overwrite_configmap_by_target() {
        let c = AlbConfig::from_spec(Some(&json!({"overwrite": {"configmap": [
            {"target": "v1", "name": "ns-a/tweaks"}, {"target": "v2", "name": "ns-b/other"}
        ]}})))
        .unwrap();
        let p = c.configmap_patch("v1").unwrap();
        assert_eq!((p.namespace.as_str(), p.name.as_str(), p.index), ("ns-a", "tweaks", 0));
        assert_eq!(c.configmap_patch("v2").unwrap().name, "other");
        assert!(c.configmap_patch("v3").is_none());
    }

    #[test]
    fn invalid_new_fields_name_the_field() {
        let cases = [
            (json!({"overwrite": {"image": [{"alb": "has space"}]}}), "overwrite.image[0].alb"),
            (json!({"overwrite": {"image": {"alb": "x"}}}), "overwrite.image"),
            (json!({"overwrite": {"configmap": [{"name": "no-namespace"}]}}), "overwrite.configmap[0].name"),
            (json!({"overwrite": {"configmap": [{"name": "a/b"}, {"name": 3}]}}), "overwrite.configmap[1].name"),
            (json!({"overwrite": "x"}), "overwrite"),
            (json!({"portProjects": "[{\"port\": \"90-80\", \"projects\": [\"p\"]}]"}), "portProjects[0].port"),
            (json!({"portProjects": "not json"}), "portProjects"),
            (json!({"portProjects": "[{\"port\": \"80\", \"projects\": \"p\"}]"}), "portProjects[0].projects"),
            (json!({"gateway": {"enable": true, "mode": "exclusive"}}), "gateway.mode"),
            (json!({"gateway": {"enable": "yes"}}), "gateway.enable"),
            (json!({"gateway": {"mode": "standalone", "name": "Bad_Name"}}), "gateway.name"),
            (json!({"enablePortProject": "true"}), "enablePortProject"),
        ];
        for (cfg, field) in cases {
            let e = AlbConfig::from_spec(Some(&cfg)).unwrap_err();
            assert_eq!(e.field, format!("spec.config.{field}"), "{cfg}: {e}");
        }
    }

    #[test]
    fn gateway_modes() {
        let g = |v: Value| AlbConfig::from_spec(Some(&json!({"gateway": v}))).unwrap();
        assert_eq!(g(json!({})).gateway, Gateway::Disabled);
        assert_eq!(g(json!({"enable": false, "mode": "shared"})).gateway, Gateway::Disabled);
        assert_eq!(g(json!({"enable": true})).gateway, Gateway::Shared { class: None });
        assert_eq!(g(json!({"mode": "shared", "name": "gc"})).gateway, Gateway::Shared { class: Some("gc".into()) });
        assert_eq!(g(json!({"enable": true, "mode": "standalone"})).gateway, Gateway::Disabled, "no name");
        let c = g(json!({"mode": "standalone", "name": "gw/team-a"}));
        assert_eq!(c.gateway, Gateway::Standalone { name: "gw".into(), namespace: Some("team-a".into()) });
        assert_eq!(c.network_mode, NetworkMode::Container, "standalone forces container mode");
        assert!(c.vip.enable_lb_svc && !c.enable_alb && !c.enable_ingress && !c.enable_portprobe);
    }

    #[test]
    fn annotations() {
        let base = AlbConfig::from_spec(None).unwrap();
        let ann = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let c = base
            .clone()
            .with_annotations(&ann(&[
                (NGINX_ENV_ANNOTATION, r#"{"METRICS_AUTH":"false","TZ":"UTC"}"#),
                ("tolerate-all", ""),
            ]))
            .unwrap();
        assert_eq!(c.nginx_env["METRICS_AUTH"], "false");
        assert_eq!(c.nginx_env.len(), 2);
        assert!(c.tolerate_all);
        assert!(!base.clone().with_annotations(&ann(&[])).unwrap().tolerate_all);
        for bad_env in [r#"{"1X":"a"}"#, r#"{"A":1}"#, r#"["A"]"#, "nope", r#"{"NAME":"x"}"#] {
            let e = base.clone().with_annotations(&ann(&[(NGINX_ENV_ANNOTATION, bad_env)])).unwrap_err();
            assert_eq!(e.field, "metadata.annotations[alb.cpaas.io/nginx-env]", "{bad_env}");
        }
    }

    #[test]
    fn port_project_ingress_class_projects() {
        let c = |pp: &str, http: u16, https: u16| {
            AlbConfig::from_spec(Some(&json!({"enablePortProject": true, "portProjects": pp,
                "ingressHTTPPort": http, "ingressHTTPSPort": https, "projects": ["ignored"]})))
            .unwrap()
            .ingress_class_projects()
        };
        let pp = r#"[{"port":"80","projects":["p2","p1"]},{"port":"400-500","projects":["p1","p3"]},
            {"port":"1000-2000","projects":["ALL_ALL"]}]"#;
        assert_eq!(c(pp, 80, 80), ["p1", "p2"], "equal sets");
        assert_eq!(c(pp, 80, 443), ["p1"], "intersection");
        assert_eq!(c(pp, 1500, 443), ["p1", "p3"], "ALL_ALL on one side → the other");
        assert_eq!(c(pp, 80, 1500), ["p1", "p2"]);
        assert!(c(pp, 81, 443).is_empty(), "a port without projects");
        let plain = AlbConfig::from_spec(Some(&json!({"projects": ["a", "b"]}))).unwrap();
        assert_eq!(plain.ingress_class_projects(), ["a", "b"]);
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
