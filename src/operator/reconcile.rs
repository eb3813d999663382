//! The ALB2 reconciler (controlplane.md §5.2, §5.4).
//!
//! Per ALB2: skip when ignored or not a v2 object; restore `spec.config` from `alb.<d>/migrate-backup`; add the
//! finalizer `alb2.finalizer`; on deletion delete every object explicitly (there may be no garbage collector, and
//! adopted objects may lack ownerReferences) and drop the finalizers. Otherwise check the config (an invalid
//! value → status Warning naming the field, nothing applied), then apply RBAC, Deployment, ConfigMaps, Services
//! and IngressClass with server-side apply, and write the status from what the Deployment reports.
//!
//! Adoption: an object that exists but was never applied by our field manager (the original operator's, or one
//! edited by hand) is taken over once: replaced with our desired object (keeping the immutable and allocated
//! fields the API server needs), its managedFields reset, then applied. After that plain server-side apply keeps
//! it in shape and removes what we stop setting.

use super::config::{AlbConfig, ConfigError, Gateway, NetworkMode};
use super::metrics::{OperatorMetrics, Outcome};
use super::objects::{self, AlbRef, Kind, Object, OperatorEnv};
use crate::crd::alb2::ALB2;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub const FIELD_MANAGER: &str = "alb-operator";
pub const FINALIZER: &str = "alb2.finalizer";
/// Added by the original operator for its ALB controller; ours does not use it but removes it on deletion.
pub const INSTANCE_FINALIZER: &str = "alb2_instance.finalizer";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{action} {kind} {name}: {source}")]
    Kube {
        action: &'static str,
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("annotation alb.{domain}/migrate-backup is not a JSON object: {reason}")]
    Backup { domain: String, reason: String },
    #[error(transparent)]
    Serde(#[from] serde_json::Error),
}

fn kube_err(action: &'static str, kind: &str, name: &str) -> impl FnOnce(kube::Error) -> ReconcileError {
    let (kind, name) = (kind.to_string(), name.to_string());
    move |source| ReconcileError::Kube { action, kind, name, source }
}

pub struct Ctx {
    pub client: Client,
    pub env: OperatorEnv,
    /// Only the ALB2s (and objects) of this namespace; `None` = all.
    pub namespace: Option<String>,
    pub metrics: Arc<OperatorMetrics>,
    /// Whether the Gateway API (GatewayClass v1) was served at the last look, to log changes once.
    gateway_api: std::sync::Mutex<Option<bool>>,
}

impl Ctx {
    pub fn new(client: Client, env: OperatorEnv, namespace: Option<String>, metrics: Arc<OperatorMetrics>) -> Ctx {
        Ctx { client, env, namespace, metrics, gateway_api: std::sync::Mutex::new(None) }
    }

    /// Is `gateway.networking.k8s.io/v1` GatewayClass served? Asked at each reconcile that needs it, so CRDs
    /// installed later are picked up; changes are logged once.
    async fn gateway_api_installed(&self) -> Result<bool, ReconcileError> {
        let now = match self.client.list_api_group_resources("gateway.networking.k8s.io/v1").await {
            Ok(list) => list.resources.iter().any(|r| r.name == "gatewayclasses"),
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            Err(e) => return Err(kube_err("discover", "APIGroup", "gateway.networking.k8s.io/v1")(e)),
        };
        if let Ok(mut last) = self.gateway_api.lock() {
            if *last != Some(now) {
                if now {
                    tracing::info!("Gateway API found: GatewayClasses of shared-mode ALB2s are managed");
                } else {
                    tracing::warn!(
                        "Gateway API CRDs (gateway.networking.k8s.io/v1 GatewayClass) are not installed: \
                         no GatewayClass is created for ALB2s with gateway mode; install the standard CRDs"
                    );
                }
                *last = Some(now);
            }
        }
        Ok(now)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

fn api_resource(kind: Kind) -> ApiResource {
    let (group, version, kind_s, plural) = match kind {
        Kind::ServiceAccount => ("", "v1", "ServiceAccount", "serviceaccounts"),
        Kind::ConfigMap => ("", "v1", "ConfigMap", "configmaps"),
        Kind::Service => ("", "v1", "Service", "services"),
        Kind::Deployment => ("apps", "v1", "Deployment", "deployments"),
        Kind::ClusterRole => ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles"),
        Kind::ClusterRoleBinding => ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings"),
        Kind::Role => ("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        Kind::RoleBinding => ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
        Kind::IngressClass => ("networking.k8s.io", "v1", "IngressClass", "ingressclasses"),
        Kind::GatewayClass => ("gateway.networking.k8s.io", "v1", "GatewayClass", "gatewayclasses"),
    };
    let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version,
        kind: kind_s.into(),
        plural: plural.into(),
    }
}

fn cluster_scoped(kind: Kind) -> bool {
    matches!(kind, Kind::ClusterRole | Kind::ClusterRoleBinding | Kind::IngressClass | Kind::GatewayClass)
}

fn dyn_api(client: &Client, kind: Kind, ns: &str) -> Api<DynamicObject> {
    let ar = api_resource(kind);
    if cluster_scoped(kind) {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), ns, &ar)
    }
}

/// Was `obj` ever server-side applied by us?
fn applied_by_us(obj: &DynamicObject) -> bool {
    obj.metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply"))
}

/// Server-side apply of `o` (adopting an existing object we never applied, see the module doc).
async fn apply(client: &Client, ns: &str, o: &Object) -> Result<(), ReconcileError> {
    let api = dyn_api(client, o.kind, ns);
    let kind = format!("{:?}", o.kind);
    let existing = api.get_opt(&o.name).await.map_err(kube_err("get", &kind, &o.name))?;
    if let Some(existing) = existing.filter(|e| !applied_by_us(e)) {
        tracing::info!("adopting {kind} {}/{} (not applied by {FIELD_MANAGER} before)", ns, o.name);
        let mut body = o.body.clone();
        let mut annotations = existing.metadata.annotations.clone().unwrap_or_default();
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        if let Some(Value::Object(ours)) = body["metadata"].get("annotations") {
            for (k, v) in ours {
                annotations.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
        body["metadata"]["annotations"] = json!(annotations);
        body["metadata"]["resourceVersion"] = json!(existing.metadata.resource_version);
        if let Some(f) = &existing.metadata.finalizers {
            body["metadata"]["finalizers"] = json!(f);
        }
        if o.kind == Kind::Service {
            // Allocated fields the API server would otherwise try to change.
            for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "healthCheckNodePort"] {
                if body["spec"].get(key).is_none() {
                    if let Some(v) = existing.data["spec"].get(key) {
                        body["spec"][key] = v.clone();
                    }
                }
            }
        }
        let obj: DynamicObject = serde_json::from_value(body)?;
        let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        api.replace(&o.name, &pp, &obj).await.map_err(kube_err("replace", &kind, &o.name))?;
        // Forget every previous owner, so that the apply below owns exactly what we set.
        api.patch(&o.name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"managedFields": [{}]}})))
            .await
            .map_err(kube_err("reset managedFields of", &kind, &o.name))?;
    }
    api.patch(&o.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&o.body))
        .await
        .map_err(kube_err("apply", &kind, &o.name))?;
    Ok(())
}

async fn delete(client: &Client, kind: Kind, ns: &str, name: &str) -> Result<(), ReconcileError> {
    let api = dyn_api(client, kind, ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(kube_err("delete", &format!("{kind:?}"), name)(e)),
    }
}

/// Deletes a cluster-scoped object only when it carries our labels for this ALB.
async fn delete_if_ours(client: &Client, kind: Kind, alb: &AlbRef, name: &str) -> Result<(), ReconcileError> {
    let api = dyn_api(client, kind, &alb.namespace);
    let Some(obj) = api.get_opt(name).await.map_err(kube_err("get", &format!("{kind:?}"), name))? else {
        return Ok(());
    };
    let labels = obj.labels();
    let ours = labels.get("alb.cpaas.io/alb2-operator-albname") == Some(&alb.name)
        && labels.get("alb.cpaas.io/alb2-operator-albns") == Some(&alb.namespace);
    if ours {
        delete(client, kind, &alb.namespace, name).await?;
    }
    Ok(())
}

/// LoadBalancer Services of this ALB (found by labels, §5.3.2).
async fn lb_services(ctx: &Ctx, alb: &AlbRef) -> Result<Vec<Service>, ReconcileError> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &alb.namespace);
    let sel = format!("{},alb.{}/service_type=lb", objects::selector(alb), ctx.env.domain);
    let list = api.list(&ListParams::default().labels(&sel)).await.map_err(kube_err("list", "Service", "lb"))?;
    Ok(list.items)
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..5).map(|_| (b'a' + rng.random_range(0..26u8)) as char).collect()
}

/// Everything the operator created for `alb` (§5.2 step 4), plus the controller's Lease.
async fn cleanup(ctx: &Ctx, alb: &AlbRef) -> Result<(), ReconcileError> {
    let c = &ctx.client;
    let ns = alb.namespace.as_str();
    let n = alb.name.as_str();
    delete(c, Kind::Deployment, ns, n).await?;
    delete(c, Kind::ConfigMap, ns, n).await?;
    delete(c, Kind::ConfigMap, ns, &objects::port_info_name(n)).await?;
    delete(c, Kind::Service, ns, n).await?;
    for svc in lb_services(ctx, alb).await? {
        delete(c, Kind::Service, ns, &svc.name_any()).await?;
    }
    delete_if_ours(c, Kind::IngressClass, alb, n).await?;
    if ctx.gateway_api_installed().await? {
        delete_if_ours(c, Kind::GatewayClass, alb, &objects::gateway_class_name(n)).await?;
    }
    delete_if_ours(c, Kind::ClusterRoleBinding, alb, &objects::cluster_role_binding_name(n)).await?;
    delete_if_ours(c, Kind::ClusterRole, alb, &objects::cluster_role_name(n)).await?;
    delete(c, Kind::RoleBinding, ns, &objects::role_name(n)).await?;
    delete(c, Kind::Role, ns, &objects::role_name(n)).await?;
    delete(c, Kind::ServiceAccount, ns, &objects::service_account_name(n)).await?;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(c.clone(), ns);
    match leases.delete(n, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(kube_err("delete", "Lease", n)(e)),
    }
    Ok(())
}

async fn set_finalizers(api: &Api<ALB2>, alb: &ALB2, finalizers: Vec<String>) -> Result<(), ReconcileError> {
    // The resourceVersion makes this fail (and retry) when someone else changed the list meanwhile.
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": alb.resource_version()}});
    api.patch(&alb.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await.map_err(kube_err(
        "update finalizers of",
        "ALB2",
        &alb.name_any(),
    ))?;
    Ok(())
}

/// (state, reason) of the workload (§5.4).
fn deploy_state(dep: Option<&Deployment>, want: i32) -> (&'static str, String) {
    let Some(dep) = dep else { return ("Pending", "wait workload creating".into()) };
    let status = dep.status.clone().unwrap_or_default();
    let spec = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    if ready != spec || spec != want {
        ("Progressing", format!("wait workload ready spec {spec} status {ready}"))
    } else {
        ("Running", "workload ready".into())
    }
}

fn now_str() -> (i64, String) {
    let now = k8s_openapi::jiff::Timestamp::now();
    (now.as_second(), now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Writes `status` unless state, reason and detail are already those (probe times aside), so status writes
/// do not feed back into endless reconciles.
async fn write_status(
    api: &Api<ALB2>,
    alb: &ALB2,
    state: &str,
    reason: &str,
    detail: Value,
) -> Result<(), ReconcileError> {
    let cur = alb.status.clone().unwrap_or_default();
    let mut cur_detail = cur.detail.clone().unwrap_or(json!({}));
    let mut merged = cur_detail.clone();
    super::config::merge(&mut merged, &detail);
    strip_probe_times(&mut cur_detail);
    let mut cmp = merged.clone();
    strip_probe_times(&mut cmp);
    if cur.state.as_deref() == Some(state) && cur.reason.as_deref() == Some(reason) && cur_detail == cmp {
        return Ok(());
    }
    let (secs, text) = now_str();
    let patch = json!({"status": {
        "state": state, "reason": reason, "probeTime": secs, "probeTimeStr": text, "detail": detail
    }});
    api.patch_status(&alb.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await.map_err(kube_err(
        "update status of",
        "ALB2",
        &alb.name_any(),
    ))?;
    Ok(())
}

fn strip_probe_times(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("probeTimeStr");
            m.values_mut().for_each(strip_probe_times);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_probe_times),
        _ => {}
    }
}

/// Label of the ALB2 and of the source ConfigMap while `overwrite.configmap` is in use (§1.8).
pub fn overwrite_label(domain: &str) -> String {
    format!("alb2.operator.{domain}/overwrite-configmap")
}

/// Labels of the ALB2 itself (§5.3.4): `project.<d>/<p>: "true"` for config.projects (others of that form
/// removed), `<d>/role: port` iff port-project mode, `alb2.operator.<d>/overwrite-configmap: "true"` iff an
/// `overwrite.configmap` applies.
fn label_patch(alb: &ALB2, cfg: &AlbConfig, domain: &str, overwrite_cm: bool) -> Option<Value> {
    let prefix = format!("project.{domain}/");
    let labels = alb.labels();
    let mut patch = serde_json::Map::new();
    let role = format!("{domain}/role");
    match (cfg.enable_port_project, labels.get(&role).map(String::as_str)) {
        (true, Some("port")) | (false, None) => {}
        (true, _) => {
            patch.insert(role, json!("port"));
        }
        (false, Some(_)) => {
            patch.insert(role, Value::Null);
        }
    }
    let ow = overwrite_label(domain);
    match (overwrite_cm, labels.get(&ow).map(String::as_str)) {
        (true, Some("true")) | (false, None) => {}
        (true, _) => {
            patch.insert(ow, json!("true"));
        }
        (false, Some(_)) => {
            patch.insert(ow, Value::Null);
        }
    }
    for (k, v) in labels {
        if let Some(p) = k.strip_prefix(&prefix) {
            if p != "name" && !cfg.projects.iter().any(|q| q == p) {
                patch.insert(k.clone(), Value::Null);
            } else if p != "name" && v != "true" {
                patch.insert(k.clone(), json!("true"));
            }
        }
    }
    for p in &cfg.projects {
        let k = format!("{prefix}{p}");
        if !labels.contains_key(&k) && super::config::valid_label_value(p) {
            patch.insert(k, json!("true"));
        }
    }
    (!patch.is_empty()).then(|| json!({"metadata": {"labels": patch}}))
}

/// One reconcile, counted and timed in the operator metrics.
pub async fn reconcile(alb: Arc<ALB2>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let start = std::time::Instant::now();
    let r = reconcile_inner(alb, ctx.clone()).await;
    let outcome = match &r {
        Ok((_, o)) => *o,
        Err(_) => Outcome::Error,
    };
    ctx.metrics.observe(outcome, start.elapsed());
    r.map(|(a, _)| a)
}

/// A ConfigMap `overwrite.configmap` names is missing: status Warning, nothing applied, looked for again.
const MISSING_CM_RETRY: Duration = Duration::from_secs(10);

async fn reconcile_inner(alb: Arc<ALB2>, ctx: Arc<Ctx>) -> Result<(Action, Outcome), ReconcileError> {
    let ns = alb.namespace().unwrap_or_default();
    let name = alb.name_any();
    let api: Api<ALB2> = Api::namespaced(ctx.client.clone(), &ns);
    let domain = ctx.env.domain.as_str();
    let annotations = alb.annotations();
    if annotations.get("alb.cpaas.io/ignoreme").map(|v| v == "true").unwrap_or(false) {
        return Ok((Action::await_change(), Outcome::Ok));
    }
    let backup_key = format!("alb.{domain}/migrate-backup");
    let finalizers = alb.finalizers().to_vec();
    let aref = AlbRef { name: name.clone(), namespace: ns.clone(), uid: alb.uid().unwrap_or_default() };

    if alb.metadata.deletion_timestamp.is_some() {
        if finalizers.iter().any(|f| f == FINALIZER || f == INSTANCE_FINALIZER) {
            cleanup(&ctx, &aref).await?;
            let rest = finalizers.into_iter().filter(|f| f != FINALIZER && f != INSTANCE_FINALIZER).collect();
            set_finalizers(&api, &alb, rest).await?;
            tracing::info!("ALB2 {ns}/{name} deleted: its objects are removed");
        }
        return Ok((Action::await_change(), Outcome::Ok));
    }
    if alb.spec.config.is_none() {
        let Some(backup) = annotations.get(&backup_key) else {
            return Ok((Action::await_change(), Outcome::Ok)); // not a v2 ALB (§5.2 step 1)
        };
        let cfg: Value = serde_json::from_str(backup)
            .map_err(|e| ReconcileError::Backup { domain: domain.into(), reason: e.to_string() })?;
        if !cfg.is_object() {
            return Err(ReconcileError::Backup { domain: domain.into(), reason: "not an object".into() });
        }
        api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"config": cfg}})))
            .await
            .map_err(kube_err("restore spec.config of", "ALB2", &name))?;
        return Ok((Action::requeue(Duration::from_millis(100)), Outcome::Ok));
    }
    if !finalizers.iter().any(|f| f == FINALIZER) {
        let mut f = finalizers.clone();
        f.push(FINALIZER.into());
        set_finalizers(&api, &alb, f).await?;
        return Ok((Action::requeue(Duration::from_millis(100)), Outcome::Ok));
    }

    let checked = AlbConfig::from_spec(alb.spec.config.as_ref()).and_then(|c| c.with_annotations(annotations));
    let cfg = match checked {
        Ok(c) => c,
        Err(ConfigError { field, reason }) => {
            let why = format!("invalid {field}: {reason}; nothing applied");
            tracing::warn!("ALB2 {ns}/{name}: {why}");
            write_status(&api, &alb, "Warning", &why, json!({})).await?;
            return Ok((Action::await_change(), Outcome::Invalid));
        }
    };
    // overwrite.configmap: its ConfigMap must exist before anything is applied.
    let mut snippets = std::collections::BTreeMap::new();
    let cm_patch = cfg.configmap_patch(&ctx.env.version).cloned();
    if let Some(p) = &cm_patch {
        let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &p.namespace);
        let Some(src) = cms.get_opt(&p.name).await.map_err(kube_err("get", "ConfigMap", &p.name))? else {
            let why = format!(
                "invalid spec.config.overwrite.configmap[{}].name: ConfigMap {}/{} not found; nothing applied",
                p.index, p.namespace, p.name
            );
            tracing::warn!("ALB2 {ns}/{name}: {why}");
            write_status(&api, &alb, "Warning", &why, json!({})).await?;
            return Ok((Action::requeue(MISSING_CM_RETRY), Outcome::Invalid));
        };
        let label = overwrite_label(domain);
        if src.labels().get(&label).map(String::as_str) != Some("true") {
            let patch = json!({"metadata": {"labels": {label: "true"}}});
            cms.patch(&p.name, &PatchParams::default(), &Patch::Merge(patch)).await.map_err(kube_err(
                "label",
                "ConfigMap",
                &p.name,
            ))?;
        }
        snippets = src.data.unwrap_or_default();
    }
    if let Some(patch) = label_patch(&alb, &cfg, domain, cm_patch.is_some()) {
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await.map_err(kube_err(
            "update labels of",
            "ALB2",
            &name,
        ))?;
        return Ok((Action::requeue(Duration::from_millis(100)), Outcome::Ok));
    }

    for o in objects::desired(&aref, &cfg, &ctx.env, &snippets) {
        apply(&ctx.client, &ns, &o).await?;
    }
    if !cfg.enable_ingress {
        delete_if_ours(&ctx.client, Kind::IngressClass, &aref, &name).await?;
    }
    // GatewayClass <alb> in shared gateway mode, when the Gateway API is installed (else logged and skipped).
    if ctx.gateway_api_installed().await? {
        match objects::gateway_class(&aref, &cfg, &ctx.env) {
            Some(gc) => apply(&ctx.client, &ns, &gc).await?,
            None => delete_if_ours(&ctx.client, Kind::GatewayClass, &aref, &objects::gateway_class_name(&name)).await?,
        }
    } else if matches!(cfg.gateway, Gateway::Shared { .. }) {
        tracing::warn!("ALB2 {ns}/{name}: gateway mode shared, but no Gateway API CRDs: GatewayClass not created");
    }
    let lbs = lb_services(&ctx, &aref).await?;
    let want_lb = cfg.vip.enable_lb_svc && cfg.network_mode == NetworkMode::Container;
    let mut lb_addresses: Option<Vec<String>> = None;
    if want_lb {
        let svc_name = lbs.first().map(|s| s.name_any()).unwrap_or_else(|| format!("{name}-lb-{}", random_suffix()));
        let body = objects::lb_service(&aref, &cfg, &ctx.env, &svc_name);
        apply(&ctx.client, &ns, &Object { kind: Kind::Service, name: svc_name.clone(), body }).await?;
        for extra in lbs.iter().skip(1) {
            delete(&ctx.client, Kind::Service, &ns, &extra.name_any()).await?;
        }
        let addrs = lbs
            .first()
            .and_then(|s| s.status.as_ref()?.load_balancer.as_ref()?.ingress.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip.or(i.hostname))
            .collect();
        lb_addresses = Some(addrs);
    } else {
        for s in &lbs {
            delete(&ctx.client, Kind::Service, &ns, &s.name_any()).await?;
        }
    }

    // Status from what the Deployment reports (§5.4).
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let dep = deps.get_opt(&name).await.map_err(kube_err("get", "Deployment", &name))?;
    let (dstate, dreason) = deploy_state(dep.as_ref(), cfg.replicas);
    let (_, probe) = now_str();
    let address_ok = lb_addresses.as_ref().map(|a| !a.is_empty()).unwrap_or(true);
    let detail = json!({
        "deploy": {"state": dstate, "reason": dreason, "probeTimeStr": probe},
        "address": {"ok": address_ok, "msg": lb_addresses.clone().unwrap_or_default().join(",")},
        "version": {
            "version": ctx.env.version,
            "imagePatch": cfg.images(&ctx.env.alb_image, &ctx.env.nginx_image, &ctx.env.version).patch_text()
        },
    });
    let (state, reason) = if dstate != "Running" {
        (dstate, dreason)
    } else if !address_ok {
        ("Progressing", "wait lb svc ready".into())
    } else if !cfg.unknown_keys.is_empty() {
        ("Warning", format!("unknown spec.config keys ignored: {}", cfg.unknown_keys.join(", ")))
    } else {
        ("Running", String::new())
    };
    // Unknown keys are reported even while the workload is still coming up.
    let reason = if state != "Warning" && !cfg.unknown_keys.is_empty() {
        format!("{reason}; unknown spec.config keys ignored: {}", cfg.unknown_keys.join(", "))
    } else {
        reason
    };
    write_status(&api, &alb, state, &reason, detail).await?;
    let action = if state == "Running" {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(3))
    };
    Ok((action, Outcome::Ok))
}

fn error_policy(alb: Arc<ALB2>, err: &ReconcileError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!("reconciling ALB2 {}/{}: {err}", alb.namespace().unwrap_or_default(), alb.name_any());
    Action::requeue(Duration::from_secs(3))
}

/// ALB2 of an object from its ownership labels (cluster-scoped objects cannot have a namespaced owner).
fn owner_from_labels<K: ResourceExt>(obj: K) -> Option<ObjectRef<ALB2>> {
    let l = obj.labels();
    let name = l.get("alb.cpaas.io/alb2-operator-albname")?;
    let ns = l.get("alb.cpaas.io/alb2-operator-albns")?;
    Some(ObjectRef::new(name).within(ns))
}

/// The controller: ALB2s, the objects they own (by ownerReference or by ownership labels).
pub async fn run(ctx: Arc<Ctx>) {
    let c = ctx.client.clone();
    let ours = watcher::Config::default().labels("alb.cpaas.io/managed-by=alb-operator");
    let controller = Controller::new(ctx.api::<ALB2>(), watcher::Config::default());
    let store = controller.store();
    ctx.metrics.set_store(Some(store.clone()));
    // A change of an overwrite.configmap source → the ALB2s that use it.
    let version = ctx.env.version.clone();
    let by_configmap = move |cm: ConfigMap| {
        let (cm_ns, cm_name) = (cm.namespace().unwrap_or_default(), cm.name_any());
        store
            .state()
            .into_iter()
            .filter(|a| {
                AlbConfig::from_spec(a.spec.config.as_ref()).ok().is_some_and(|c| {
                    c.configmap_patch(&version).is_some_and(|p| p.namespace == cm_ns && p.name == cm_name)
                })
            })
            .map(|a| ObjectRef::from_obj(&*a))
            .collect::<Vec<_>>()
    };
    let overwrite_cms = watcher::Config::default().labels(&format!("{}=true", overwrite_label(&ctx.env.domain)));
    controller
        .watches(Api::<ConfigMap>::all(c.clone()), overwrite_cms, by_configmap)
        .owns(ctx.api::<Deployment>(), ours.clone())
        .owns(ctx.api::<Service>(), ours.clone())
        .owns(ctx.api::<ConfigMap>(), ours.clone())
        .watches(Api::<k8s_openapi::api::networking::v1::IngressClass>::all(c.clone()), ours.clone(), owner_from_labels)
        .watches(Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(c.clone()), ours, owner_from_labels)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("controller: {e}");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_states() {
        assert_eq!(deploy_state(None, 1).0, "Pending");
        let mut d: Deployment = serde_json::from_value(json!({"spec": {"replicas": 2, "selector": {},
            "template": {}}, "status": {"readyReplicas": 1}}))
        .unwrap();
        assert_eq!(deploy_state(Some(&d), 2), ("Progressing", "wait workload ready spec 2 status 1".into()));
        d.status.as_mut().unwrap().ready_replicas = Some(2);
        assert_eq!(deploy_state(Some(&d), 2).0, "Running");
        assert_eq!(deploy_state(Some(&d), 3).0, "Progressing", "spec not yet updated");
    }

    #[test]
    fn project_labels() {
        let alb: ALB2 = serde_json::from_value(json!({
            "apiVersion": "crd.alauda.io/v2beta1", "kind": "ALB2",
            "metadata": {"name": "a", "namespace": "n", "labels": {"project.cpaas.io/old": "true", "x": "y"}},
            "spec": {}
        }))
        .unwrap();
        let cfg = AlbConfig::from_spec(Some(&json!({"projects": ["p1"]}))).unwrap();
        let p = label_patch(&alb, &cfg, "cpaas.io", false).unwrap();
        assert_eq!(p["metadata"]["labels"]["project.cpaas.io/old"], Value::Null);
        assert_eq!(p["metadata"]["labels"]["project.cpaas.io/p1"], "true");
        assert!(p["metadata"]["labels"].get("x").is_none());
        assert!(p["metadata"]["labels"].get("cpaas.io/role").is_none());
        assert!(p["metadata"]["labels"].get("alb2.operator.cpaas.io/overwrite-configmap").is_none());
    }

    #[test]
    fn role_and_overwrite_labels() {
        let alb = |labels: Value| -> ALB2 {
            serde_json::from_value(json!({
                "apiVersion": "crd.alauda.io/v2beta1", "kind": "ALB2",
                "metadata": {"name": "a", "namespace": "n", "labels": labels}, "spec": {}
            }))
            .unwrap()
        };
        let port = AlbConfig::from_spec(Some(&json!({"enablePortProject": true}))).unwrap();
        let p = label_patch(&alb(json!({})), &port, "cpaas.io", true).unwrap();
        assert_eq!(p["metadata"]["labels"]["cpaas.io/role"], "port");
        assert_eq!(p["metadata"]["labels"]["alb2.operator.cpaas.io/overwrite-configmap"], "true");
        let both = json!({"cpaas.io/role": "port", "alb2.operator.cpaas.io/overwrite-configmap": "true"});
        assert!(label_patch(&alb(both.clone()), &port, "cpaas.io", true).is_none(), "already in shape");
        let plain = AlbConfig::from_spec(None).unwrap();
        let p = label_patch(&alb(both), &plain, "cpaas.io", false).unwrap();
        assert_eq!(p["metadata"]["labels"]["cpaas.io/role"], Value::Null);
        assert_eq!(p["metadata"]["labels"]["alb2.operator.cpaas.io/overwrite-configmap"], Value::Null);
    }
}
