//! The objects one ALB2 turns into (controlplane.md §5.3), as the JSON the operator server-side applies.
//! Names and ownership labels are the original operator's (§1.8), so an upgrade finds and adopts them.

use super::config::{AlbConfig, Gateway, NetworkMode, Resources};
use super::image;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// What the operator process was started with (§5.1).
#[derive(Debug, Clone)]
pub struct OperatorEnv {
    pub alb_image: String,
    pub nginx_image: String,
    pub version: String,
    pub domain: String,
    pub pull_policy: String,
    pub pull_secrets: Vec<String>,
}

/// The ALB2 the objects belong to.
#[derive(Debug, Clone)]
pub struct AlbRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// The ownership labels of every operator-created object (literal `alb.cpaas.io`, §1.8).
pub fn operator_labels(alb: &AlbRef, version: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("alb.cpaas.io/managed-by".into(), "alb-operator".into());
    l.insert("alb.cpaas.io/version".into(), version.into());
    let legacy = format!("{}_{}", alb.namespace, alb.name);
    if legacy.len() < 63 {
        l.insert("alb.cpaas.io/alb2-operator".into(), legacy);
    }
    l.insert("alb.cpaas.io/alb2-operator-albname".into(), alb.name.clone());
    l.insert("alb.cpaas.io/alb2-operator-albns".into(), alb.namespace.clone());
    l
}

/// Label selector of everything the operator made for `alb` (also finds the LB Service).
pub fn selector(alb: &AlbRef) -> String {
    format!(
        "alb.cpaas.io/managed-by=alb-operator,alb.cpaas.io/alb2-operator-albname={},alb.cpaas.io/alb2-operator-albns={}",
        alb.name, alb.namespace
    )
}

fn owner_ref(alb: &AlbRef) -> Value {
    json!([{
        "apiVersion": "crd.alauda.io/v2beta1", "kind": "ALB2", "name": alb.name, "uid": alb.uid,
        "controller": true, "blockOwnerDeletion": false
    }])
}

fn meta(alb: &AlbRef, name: &str, namespaced: bool, extra_labels: &[(&str, String)], version: &str) -> Value {
    let mut labels: Map<String, Value> =
        operator_labels(alb, version).into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    for (k, v) in extra_labels {
        labels.insert(k.to_string(), Value::String(v.clone()));
    }
    let mut m = json!({"name": name, "labels": labels});
    if namespaced {
        m["namespace"] = json!(alb.namespace);
        m["ownerReferences"] = owner_ref(alb);
    }
    m
}

fn resources(r: &Resources) -> Value {
    json!({"limits": r.limits, "requests": r.requests})
}

pub fn service_account_name(alb: &str) -> String {
    format!("{alb}-serviceaccount")
}
pub fn cluster_role_name(alb: &str) -> String {
    format!("{alb}-clusterrole")
}
pub fn cluster_role_binding_name(alb: &str) -> String {
    format!("{alb}-clusterrolebind")
}
/// Namespaced rights (Lease, Frontend/Rule writes) live in a Role of the ALB's namespace.
pub fn role_name(alb: &str) -> String {
    format!("{alb}-role")
}
pub fn port_info_name(alb: &str) -> String {
    format!("{alb}-port-info")
}

/// One object to apply: its kind (for the API to use), name and body.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: Kind,
    pub name: String,
    pub body: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    ServiceAccount,
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
    ConfigMap,
    Deployment,
    Service,
    IngressClass,
    GatewayClass,
}

/// Every object of `alb`, in apply order (RBAC first, §5.2). The LB Service ([`lb_service`]) and the
/// GatewayClass ([`gateway_class`], only when the Gateway API is installed) are separate. `snippets` are the
/// nginx snippet keys copied from the `overwrite.configmap` ConfigMap (empty without one).
pub fn desired(alb: &AlbRef, cfg: &AlbConfig, env: &OperatorEnv, snippets: &BTreeMap<String, String>) -> Vec<Object> {
    let v = env.version.as_str();
    let n = alb.name.as_str();
    let mut out = vec![
        Object { kind: Kind::ServiceAccount, name: service_account_name(n), body: service_account(alb, env) },
        Object { kind: Kind::ClusterRole, name: cluster_role_name(n), body: cluster_role(alb, env) },
        Object {
            kind: Kind::ClusterRoleBinding,
            name: cluster_role_binding_name(n),
            body: json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": meta(alb, &cluster_role_binding_name(n), false, &[], v),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role_name(n)},
                "subjects": [{"kind": "ServiceAccount", "name": service_account_name(n), "namespace": alb.namespace}]
            }),
        },
        Object { kind: Kind::Role, name: role_name(n), body: role(alb, env) },
        Object {
            kind: Kind::RoleBinding,
            name: role_name(n),
            body: json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": meta(alb, &role_name(n), true, &[], v),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name(n)},
                "subjects": [{"kind": "ServiceAccount", "name": service_account_name(n), "namespace": alb.namespace}]
            }),
        },
        Object { kind: Kind::Deployment, name: n.to_string(), body: deployment(alb, cfg, env) },
        Object {
            kind: Kind::ConfigMap,
            name: n.to_string(),
            body: json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": meta(alb, n, true, &[], v),
                "data": configmap_data(cfg, snippets)
            }),
        },
        Object {
            kind: Kind::ConfigMap,
            name: port_info_name(n),
            body: json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": meta(alb, &port_info_name(n), true, &[("port-info", "true".into()), ("name", n.into())], v),
                "data": {"range": cfg.port_projects}
            }),
        },
        Object { kind: Kind::Service, name: n.to_string(), body: monitor_service(alb, cfg, env) },
    ];
    if cfg.enable_ingress {
        out.push(Object { kind: Kind::IngressClass, name: n.to_string(), body: ingress_class(alb, cfg, env) });
    }
    out
}

/// Data of ConfigMap `<alb>`: `bind_nic`, plus the snippet keys of `overwrite.configmap` (§5.3.3). This data
/// plane does not include nginx snippets in nginx.conf; they are kept for tools that read them.
fn configmap_data(cfg: &AlbConfig, snippets: &BTreeMap<String, String>) -> Value {
    let mut data: Map<String, Value> = snippets
        .iter()
        .filter(|(k, _)| super::config::SNIPPET_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    data.insert("bind_nic".into(), json!(cfg.bind_nic));
    Value::Object(data)
}

/// Name of the shared-mode GatewayClass: the ALB's (§5.3.4).
pub fn gateway_class_name(alb: &str) -> String {
    alb.to_string()
}

/// GatewayClass `<alb>` for an ALB in shared gateway mode (§5.3.4), `None` otherwise.
pub fn gateway_class(alb: &AlbRef, cfg: &AlbConfig, env: &OperatorEnv) -> Option<Object> {
    if !matches!(cfg.gateway, Gateway::Shared { .. }) {
        return None;
    }
    let d = env.domain.as_str();
    let n = alb.name.as_str();
    let labels = [
        (format!("alb2.{d}/gatewayclass"), n.to_string()),
        (format!("gatewayclass.{d}/deploy"), d.to_string()),
        (format!("gatewayclass.{d}/type"), "shared".to_string()),
    ];
    let extra: Vec<(&str, String)> = labels.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let name = gateway_class_name(n);
    Some(Object {
        kind: Kind::GatewayClass,
        name: name.clone(),
        body: json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": meta(alb, &name, false, &extra, &env.version),
            "spec": {
                "controllerName": format!("alb2.gateway.{d}/{n}"),
                "parametersRef": {"group": "crd.alauda.io", "kind": "ALB2", "name": n, "namespace": alb.namespace}
            }
        }),
    })
}

/// The controller's gateway env (§4.1): `GATEWAY_ENABLE`, `GATEWAY_MODE`, then the class or the Gateway.
fn gateway_env(alb: &AlbRef, cfg: &AlbConfig) -> Vec<Value> {
    match &cfg.gateway {
        Gateway::Disabled => vec![env_value("GATEWAY_ENABLE", false)],
        Gateway::Shared { class } => vec![
            env_value("GATEWAY_ENABLE", true),
            env_value("GATEWAY_MODE", "shared"),
            env_value("GATEWAY_CLASSNAME", class.clone().unwrap_or_else(|| alb.name.clone())),
        ],
        Gateway::Standalone { name, namespace } => vec![
            env_value("GATEWAY_ENABLE", true),
            env_value("GATEWAY_MODE", "standalone"),
            env_value("GATEWAY_NAME", name),
            env_value("GATEWAY_NS", namespace.clone().unwrap_or_else(|| alb.namespace.clone())),
        ],
    }
}

fn service_account(alb: &AlbRef, env: &OperatorEnv) -> Value {
    let mut sa = json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": meta(alb, &service_account_name(&alb.name), true, &[], &env.version),
    });
    if !env.pull_secrets.is_empty() {
        sa["imagePullSecrets"] = env.pull_secrets.iter().map(|s| json!({"name": s})).collect();
    }
    sa
}

/// Cluster-wide rights of `alb controller`, each for one thing it does (README "The controller").
fn cluster_role(alb: &AlbRef, env: &OperatorEnv) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": meta(alb, &cluster_role_name(&alb.name), false, &[], &env.version),
        "rules": [
            // Backends: Services and their EndpointSlices in any namespace an Ingress or Rule points to.
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
            // Namespaces: the project label decides which Ingresses are served.
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
            // TLS certificates referenced by Ingresses and Frontends (the controller lists type=kubernetes.io/tls only).
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
            // Ingress translation (leader) and Ingress status.loadBalancer.
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update", "patch"]},
            // Warning/Synced Events about Ingresses, Rules and Frontends in their own namespaces.
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
        ]
    })
}

/// Rights in the ALB's own namespace only.
fn role(alb: &AlbRef, env: &OperatorEnv) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": meta(alb, &role_name(&alb.name), true, &[], &env.version),
        "rules": [
            // Its ALB2 (config, address) and the port status it writes.
            {"apiGroups": ["crd.alauda.io"], "resources": ["alaudaloadbalancer2"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["crd.alauda.io"], "resources": ["alaudaloadbalancer2/status"], "verbs": ["update", "patch"]},
            // Frontends and Rules: read by every replica, written by the leader's Ingress sync, status conditions.
            {"apiGroups": ["crd.alauda.io"], "resources": ["frontends", "rules"],
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            {"apiGroups": ["crd.alauda.io"], "resources": ["frontends/status", "rules/status"], "verbs": ["update", "patch"]},
            // Leader election on the Lease <albns>/<alb>.
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
        ]
    })
}

/// Selector labels of the pods (the original's, so an adopted Deployment keeps its immutable selector).
pub fn selector_labels(alb: &str, domain: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("service_name".into(), format!("alb2-{alb}"));
    l.insert(format!("service.{domain}/name"), format!("deployment-{alb}"));
    l
}

fn env_value(name: &str, value: impl ToString) -> Value {
    json!({"name": name, "value": value.to_string()})
}

fn pod_name_env() -> Value {
    json!({"name": "MY_POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}})
}

fn deployment(alb: &AlbRef, cfg: &AlbConfig, env: &OperatorEnv) -> Value {
    let d = env.domain.as_str();
    let n = alb.name.as_str();
    let host = cfg.network_mode == NetworkMode::Host;
    let selector = selector_labels(n, d);
    let mut pod_labels: Map<String, Value> = selector.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    pod_labels.insert(format!("{d}/product"), json!("Platform-Center"));
    pod_labels.insert(format!("alb2.{d}/pod_type"), json!("alb"));
    pod_labels.insert(format!("alb2.{d}/version"), json!(env.version));
    pod_labels.insert(format!("alb2.{d}/type"), json!(cfg.anti_affinity_key));
    let anti_term = json!({
        "labelSelector": {"matchLabels": {format!("alb2.{d}/type"): cfg.anti_affinity_key}},
        "topologyKey": "kubernetes.io/hostname"
    });
    let affinity = if host {
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [anti_term]}})
    } else {
        json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": anti_term}
        ]}})
    };
    let images = cfg.images(&env.alb_image, &env.nginx_image, &env.version);
    let tolerations: Vec<Value> = if cfg.tolerate_all {
        vec![json!({"operator": "Exists"})]
    } else {
        [
            "node-role.kubernetes.io/master",
            "node-role.kubernetes.io/control-plane",
            "node-role.kubernetes.io/cpaas-system",
            "node.kubernetes.io/not-ready",
        ]
        .iter()
        .map(|k| json!({"key": k, "operator": "Exists", "effect": "NoSchedule"}))
        .collect()
    };
    let mport = cfg.metrics_port;
    let probe = |path: &str, port: u16, delay: i32, period: i32| {
        json!({
            "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
            "initialDelaySeconds": delay, "periodSeconds": period, "timeoutSeconds": 5,
            "failureThreshold": 5, "successThreshold": 1
        })
    };
    let run_mount = json!({"name": "alb-run", "mountPath": image::RUNTIME_DIR});
    let caps_nginx = json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]});
    let ro = cfg.readonly_fs;
    let mut nginx_env = vec![
        pod_name_env(),
        env_value("NAME", n),
        env_value("ALB_NS", &alb.namespace),
        env_value("ALB_VER", &env.version),
    ];
    // `alb.cpaas.io/nginx-env`: names checked, never one of the four above (config::NGINX_OWN_ENV).
    nginx_env.extend(cfg.nginx_env.iter().map(|(k, v)| env_value(k, v)));
    let nginx = json!({
        "name": "nginx",
        "image": images.nginx,
        "imagePullPolicy": env.pull_policy,
        "command": image::nginx_command(),
        "env": nginx_env,
        "ports": [{"name": "metrics", "containerPort": mport, "protocol": "TCP"}],
        "readinessProbe": probe("/healthz", mport, 3, 5),
        "livenessProbe": probe("/healthz", mport, 60, 60),
        "resources": resources(&cfg.nginx_resources),
        // Binding ports < 1024 as uid 697 uses the file capability of the image's nginx: it needs
        // NET_BIND_SERVICE in the bounding set and privilege escalation allowed (no_new_privs drops file caps).
        "securityContext": {"readOnlyRootFilesystem": ro, "allowPrivilegeEscalation": true, "capabilities": caps_nginx},
        "volumeMounts": [run_mount.clone()],
    });
    let mut alb2_env = vec![
        pod_name_env(),
        env_value("NAME", n),
        env_value("ALB_NS", &alb.namespace),
        env_value("NAMESPACE", &alb.namespace),
        env_value("DOMAIN", d),
        env_value("NETWORK_MODE", cfg.network_mode.as_str()),
        env_value("METRICS_PORT", mport),
        env_value("ALB_ADMIN_PORT", image::ADMIN_PORT),
        env_value("ALB_API_PORT", image::API_PORT),
        env_value("ALB_RUNTIME_DIR", image::RUNTIME_DIR),
        env_value("ALB_LUA_DIR", image::LUA_DIR),
        env_value("ALB_WORKERS", cfg.workers()),
        env_value("INGRESS_HTTP_PORT", cfg.ingress_http_port),
        env_value("INGRESS_HTTPS_PORT", cfg.ingress_https_port),
        env_value("SERVE_INGRESS", cfg.enable_ingress),
        env_value("ALB_ENABLE", cfg.enable_alb),
        env_value("ALB_VER", &env.version),
    ];
    alb2_env.extend(gateway_env(alb, cfg));
    let alb2 = json!({
        "name": "alb2",
        "image": images.alb,
        "imagePullPolicy": env.pull_policy,
        "command": image::controller_command(),
        "env": alb2_env,
        "ports": [{"name": "alb-admin", "containerPort": image::ADMIN_PORT, "protocol": "TCP"}],
        "readinessProbe": probe("/readyz", image::ADMIN_PORT, 3, 5),
        "livenessProbe": probe("/healthz", image::ADMIN_PORT, 60, 60),
        "resources": resources(&cfg.alb_resources),
        "securityContext": {"readOnlyRootFilesystem": ro, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [run_mount, {"name": "alb-lua", "mountPath": image::LUA_DIR, "readOnly": true}],
    });
    let init = json!({
        "name": "init",
        "image": images.nginx,
        "imagePullPolicy": env.pull_policy,
        "command": image::init_command(),
        "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}, "requests": {"cpu": "10m", "memory": "16Mi"}},
        "securityContext": {"readOnlyRootFilesystem": ro, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": "alb-run", "mountPath": image::RUNTIME_DIR},
            {"name": "alb-lua", "mountPath": image::SHARED_LUA_DIR}
        ],
    });
    let node_selector = if cfg.node_selector.is_empty() { Value::Null } else { json!(cfg.node_selector) };
    let mut pod_spec = json!({
        "serviceAccountName": service_account_name(n),
        "shareProcessNamespace": true,
        "hostNetwork": host,
        "dnsPolicy": if host { "ClusterFirstWithHostNet" } else { "ClusterFirst" },
        "affinity": affinity,
        "tolerations": tolerations,
        "securityContext": {"runAsUser": image::UID, "runAsGroup": image::UID, "fsGroup": image::UID, "runAsNonRoot": true},
        "terminationGracePeriodSeconds": 30,
        "initContainers": [init],
        "containers": [nginx, alb2],
        "volumes": [{"name": "alb-run", "emptyDir": {}}, {"name": "alb-lua", "emptyDir": {}}],
    });
    if !node_selector.is_null() {
        pod_spec["nodeSelector"] = node_selector;
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(alb, n, true, &[], &env.version),
        "spec": {
            "replicas": cfg.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": pod_spec
            }
        }
    })
}

fn monitor_service(alb: &AlbRef, cfg: &AlbConfig, env: &OperatorEnv) -> Value {
    let n = alb.name.as_str();
    let mut ports = vec![
        json!({"name": "https-metrics", "port": cfg.metrics_port, "targetPort": cfg.metrics_port, "protocol": "TCP"}),
        json!({"name": "alb-admin", "port": image::ADMIN_PORT, "targetPort": image::ADMIN_PORT, "protocol": "TCP"}),
    ];
    if cfg.ingress_http_port != 0 {
        let p = cfg.ingress_http_port;
        ports.push(json!({"name": format!("http-{p}"), "port": p, "targetPort": p, "protocol": "TCP"}));
    }
    if cfg.ingress_https_port != 0 {
        let p = cfg.ingress_https_port;
        ports.push(json!({"name": format!("https-{p}"), "port": p, "targetPort": p, "protocol": "TCP"}));
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta(alb, n, true, &[("service_name", format!("alb2-{n}"))], &env.version),
        "spec": {
            "type": "ClusterIP", "sessionAffinity": "None",
            "selector": {"service_name": format!("alb2-{n}")},
            "ports": ports
        }
    })
}

/// The LoadBalancer Service `<alb>-lb-<suffix>` (container mode with `vip.enableLbSvc`).
pub fn lb_service(alb: &AlbRef, cfg: &AlbConfig, env: &OperatorEnv, name: &str) -> Value {
    let n = alb.name.as_str();
    let d = env.domain.as_str();
    let mut spec = json!({
        "type": "LoadBalancer",
        "selector": {"service_name": format!("alb2-{n}")},
        "ports": [{"name": "metrics", "port": cfg.metrics_port, "targetPort": cfg.metrics_port, "protocol": "TCP"}],
        "allocateLoadBalancerNodePorts": cfg.vip.allocate_node_ports,
    });
    if let Some(p) = &cfg.vip.ip_family_policy {
        spec["ipFamilyPolicy"] = json!(p);
    }
    let mut m = meta(alb, name, true, &[(&format!("alb.{d}/service_type"), "lb".into())], &env.version);
    m["annotations"] = json!(cfg.vip.annotations);
    json!({"apiVersion": "v1", "kind": "Service", "metadata": m, "spec": spec})
}

fn ingress_class(alb: &AlbRef, cfg: &AlbConfig, env: &OperatorEnv) -> Value {
    let d = env.domain.as_str();
    let mut m = meta(alb, &alb.name, false, &[], &env.version);
    m["annotations"] = json!({
        "ingressclass.kubernetes.io/is-default-class": cfg.default_ingress_class.to_string(),
        format!("alb.{d}/project"): cfg.ingress_class_projects().join(","),
    });
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": m,
        "spec": {"controller": format!("{d}/alb2")}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;

    fn env() -> OperatorEnv {
        OperatorEnv {
            alb_image: "r/alb:v1".into(),
            nginx_image: "r/nginx:v1".into(),
            version: "v1".into(),
            domain: "cpaas.io".into(),
            pull_policy: "IfNotPresent".into(),
            pull_secrets: vec![],
        }
    }
    fn alb() -> AlbRef {
        AlbRef { name: "alb-a".into(), namespace: "ns".into(), uid: "u1".into() }
    }

    #[test]
    fn deployment_shape() {
        let cfg = AlbConfig::from_spec(Some(&json!({"replicas": 2, "nodeSelector": {"ingress": "true"}}))).unwrap();
        let objs = desired(&alb(), &cfg, &env(), &BTreeMap::new());
        let body = &objs.iter().find(|o| o.kind == Kind::Deployment).unwrap().body;
        let d: Deployment = serde_json::from_value(body.clone()).expect("a valid Deployment");
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.share_process_namespace, Some(true));
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["nginx", "alb2"]);
        assert_eq!(pod.node_selector.unwrap()["ingress"], "true");
        assert!(pod
            .affinity
            .unwrap()
            .pod_anti_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .is_some());
        let labels = d.metadata.labels.unwrap();
        assert_eq!(labels["alb.cpaas.io/alb2-operator"], "ns_alb-a");
        assert_eq!(spec.selector.match_labels.unwrap()["service_name"], "alb2-alb-a");
        let ctl = &pod.containers[1];
        let envs: BTreeMap<_, _> =
            ctl.env.as_ref().unwrap().iter().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect();
        assert_eq!(envs["NAME"], "alb-a");
        assert_eq!(envs["ALB_NS"], "ns");
        assert_eq!(envs["ALB_RUNTIME_DIR"], "/alb/run");
        assert_eq!(ctl.command.as_deref().unwrap(), image::controller_command().as_slice());
    }

    #[test]
    fn container_mode_and_ingress_switch() {
        let cfg = AlbConfig::from_spec(Some(&json!({"networkMode": "container", "enableIngress": "false"}))).unwrap();
        let objs = desired(&alb(), &cfg, &env(), &BTreeMap::new());
        assert!(!objs.iter().any(|o| o.kind == Kind::IngressClass));
        let body = &objs.iter().find(|o| o.kind == Kind::Deployment).unwrap().body;
        assert_eq!(body["spec"]["template"]["spec"]["hostNetwork"], false);
        assert_eq!(body["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        assert!(body["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"]
            .is_array());
    }

    fn deployment_of(cfg: &AlbConfig) -> Deployment {
        let objs = desired(&alb(), cfg, &env(), &BTreeMap::new());
        let body = &objs.iter().find(|o| o.kind == Kind::Deployment).unwrap().body;
        serde_json::from_value(body.clone()).expect("a valid Deployment")
    }

    fn env_of(c: &k8s_openapi::api::core::v1::Container) -> BTreeMap<String, String> {
        c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect()
    }

    #[test]
    fn overwrite_image_sets_both_containers_and_init() {
        let cfg = AlbConfig::from_spec(Some(&json!({"overwrite": {"image": [
            {"target": "v1", "alb": "x/alb:fix", "nginx": "x/nginx:fix"}, {"target": "v0", "alb": "old"}
        ]}})))
        .unwrap();
        let pod = deployment_of(&cfg).spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("x/nginx:fix"));
        assert_eq!(pod.containers[1].image.as_deref(), Some("x/alb:fix"));
        assert_eq!(pod.init_containers.unwrap()[0].image.as_deref(), Some("x/nginx:fix"), "init uses the nginx image");
        let plain = deployment_of(&AlbConfig::from_spec(None).unwrap()).spec.unwrap().template.spec.unwrap();
        assert_eq!(plain.containers[1].image.as_deref(), Some("r/alb:v1"));
    }

    #[test]
    fn nginx_env_and_tolerate_all() {
        let ann: BTreeMap<String, String> = [
            ("alb.cpaas.io/nginx-env".to_string(), r#"{"METRICS_AUTH":"false"}"#.to_string()),
            ("tolerate-all".to_string(), "true".to_string()),
        ]
        .into();
        let cfg = AlbConfig::from_spec(None).unwrap().with_annotations(&ann).unwrap();
        let pod = deployment_of(&cfg).spec.unwrap().template.spec.unwrap();
        let nginx_env = env_of(&pod.containers[0]);
        assert_eq!(nginx_env["METRICS_AUTH"], "false");
        assert_eq!(nginx_env["NAME"], "alb-a");
        assert!(!env_of(&pod.containers[1]).contains_key("METRICS_AUTH"), "only the nginx container");
        let tol = pod.tolerations.unwrap();
        assert_eq!(tol.len(), 1);
        assert_eq!(
            (tol[0].operator.as_deref(), tol[0].key.as_deref(), tol[0].effect.as_deref()),
            (Some("Exists"), None, None)
        );
        let plain = deployment_of(&AlbConfig::from_spec(None).unwrap()).spec.unwrap().template.spec.unwrap();
        assert_eq!(plain.tolerations.unwrap().len(), 4);
    }

    #[test]
    fn overwrite_configmap_snippets_in_the_configmap() {
        let cfg = AlbConfig::from_spec(Some(&json!({"bindNIC": "{\"nic\":[\"eth0\"]}"}))).unwrap();
        let snippets: BTreeMap<String, String> =
            [("http", "# h"), ("upstream", "# u"), ("bind_nic", "no"), ("junk", "x")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let objs = desired(&alb(), &cfg, &env(), &snippets);
        let cm = &objs.iter().find(|o| o.kind == Kind::ConfigMap && o.name == "alb-a").unwrap().body;
        assert_eq!(cm["data"], json!({"http": "# h", "upstream": "# u", "bind_nic": "{\"nic\":[\"eth0\"]}"}));
    }

    #[test]
    fn port_project_ingress_class_annotation() {
        let cfg = AlbConfig::from_spec(Some(&json!({"enablePortProject": true,
            "portProjects": r#"[{"port":"80","projects":["p1","p2"]},{"port":"443","projects":["p2"]}]"#})))
        .unwrap();
        let objs = desired(&alb(), &cfg, &env(), &BTreeMap::new());
        let ic = &objs.iter().find(|o| o.kind == Kind::IngressClass).unwrap().body;
        assert_eq!(ic["metadata"]["annotations"]["alb.cpaas.io/project"], "p2");
        assert_eq!(ic["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"], "false");
        let pi = &objs.iter().find(|o| o.name == "alb-a-port-info").unwrap().body;
        assert_eq!(pi["data"]["range"], cfg.port_projects);
        assert_eq!(pi["metadata"]["labels"]["port-info"], "true");
    }

    #[test]
    fn gateway_class_and_env() {
        let shared = AlbConfig::from_spec(Some(&json!({"gateway": {"enable": true}}))).unwrap();
        let gc = gateway_class(&alb(), &shared, &env()).expect("shared mode has a GatewayClass");
        assert_eq!(gc.name, "alb-a");
        assert_eq!(gc.body["spec"]["controllerName"], "alb2.gateway.cpaas.io/alb-a");
        assert_eq!(
            gc.body["spec"]["parametersRef"],
            json!({"group": "crd.alauda.io", "kind": "ALB2", "name": "alb-a", "namespace": "ns"})
        );
        assert_eq!(gc.body["metadata"]["labels"]["gatewayclass.cpaas.io/type"], "shared");
        assert_eq!(gc.body["metadata"]["labels"]["alb2.cpaas.io/gatewayclass"], "alb-a");
        assert_eq!(gc.body["metadata"]["labels"]["alb.cpaas.io/alb2-operator-albname"], "alb-a");
        assert!(gc.body["metadata"].get("ownerReferences").is_none(), "cluster-scoped");
        let e = env_of(&deployment_of(&shared).spec.unwrap().template.spec.unwrap().containers[1]);
        assert_eq!((e["GATEWAY_ENABLE"].as_str(), e["GATEWAY_MODE"].as_str()), ("true", "shared"));
        assert_eq!(e["GATEWAY_CLASSNAME"], "alb-a");

        let standalone = AlbConfig::from_spec(Some(&json!({"gateway": {"mode": "standalone", "name": "gw"}}))).unwrap();
        assert!(gateway_class(&alb(), &standalone, &env()).is_none());
        let d = deployment_of(&standalone);
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.host_network, Some(false));
        let e = env_of(&pod.containers[1]);
        assert_eq!((e["GATEWAY_NAME"].as_str(), e["GATEWAY_NS"].as_str()), ("gw", "ns"));
        assert_eq!((e["ALB_ENABLE"].as_str(), e["SERVE_INGRESS"].as_str()), ("false", "false"));
        assert!(!desired(&alb(), &standalone, &env(), &BTreeMap::new()).iter().any(|o| o.kind == Kind::IngressClass));

        let off = AlbConfig::from_spec(None).unwrap();
        assert!(gateway_class(&alb(), &off, &env()).is_none());
        assert_eq!(
            env_of(&deployment_of(&off).spec.unwrap().template.spec.unwrap().containers[1])["GATEWAY_ENABLE"],
            "false"
        );
    }

    #[test]
    fn long_names_drop_the_legacy_label() {
        let a = AlbRef { name: "a".repeat(40), namespace: "n".repeat(30), uid: "u".into() };
        assert!(!operator_labels(&a, "v1").contains_key("alb.cpaas.io/alb2-operator"));
    }
}
