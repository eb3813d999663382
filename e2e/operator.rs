//! `alb operator` and the `charts/alauda-alb2` chart against a real kube-apiserver (no kubelet, no garbage
//! collector: the operator must delete what it made itself). helm is built by `e2e/helm/build.sh`.
//! Each test runs its own operator restricted to its own namespace (`--namespace`), with its own Lease.

use crate::harness::cluster::Cluster;
use crate::harness::{alb_bin, free_port, repo_dir, Proc};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn helm() -> PathBuf {
    static HELM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new(repo_dir().join("e2e/helm/build.sh")).output().expect("run e2e/helm/build.sh");
        assert!(out.status.success(), "e2e/helm/build.sh: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim())
    })
    .clone()
}

fn chart() -> PathBuf {
    repo_dir().join("charts/alauda-alb2")
}

/// `helm template` of the chart with `--set` values; panics with helm's stderr.
fn template(sets: &[&str]) -> String {
    let mut cmd = Command::new(helm());
    cmd.args(["template", "alb"]).arg(chart());
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("helm template");
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| {
            let v = <Value as serde::Deserialize>::deserialize(d).ok()?;
            (!v.is_null()).then_some(v)
        })
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered chart"))
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kubectl get` as JSON, `None` when the object does not exist.
fn get_opt(c: &Cluster, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let out = c.kubectl(&a);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("json"))
}

struct Operator {
    proc: Proc,
    /// Local port of its `/metrics` (the chart's 8080, remapped so tests run in parallel); 0 = off.
    metrics_port: u16,
}

impl Operator {
    /// The operator as the chart's Deployment runs it (same command and env), watching `ns` only.
    fn start(c: &Cluster, ns: &str, rendered: &[Value]) -> Operator {
        Operator::start_with_metrics(c, ns, rendered, 0)
    }

    fn start_with_metrics(c: &Cluster, ns: &str, rendered: &[Value], metrics_port: u16) -> Operator {
        let dep = find(rendered, "Deployment", "alb-operator-ctl");
        let container = &dep["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["command"], serde_json::json!(["/alb/bin/alb", "operator"]));
        let mut cmd = Command::new(alb_bin());
        cmd.arg("operator");
        for e in container["env"].as_array().unwrap() {
            if let Some(v) = e["value"].as_str() {
                cmd.env(e["name"].as_str().unwrap(), v);
            }
        }
        cmd.env("MY_POD_NAME", format!("alb-operator-{ns}"))
            .env("LEADER_NS", ns)
            .env("WATCH_NAMESPACE", ns)
            .env("ALB_OPERATOR_PROBE_PORT", "0")
            .env("ALB_OPERATOR_METRICS_PORT", metrics_port.to_string())
            .env("KUBECONFIG", &c.kubeconfig)
            .env("ALB_LOG", "info");
        let proc = Proc::spawn(&format!("alb operator {ns}"), &mut cmd);
        proc.wait_log("starting as", Duration::from_secs(10));
        Operator { proc, metrics_port }
    }

    /// One scrape of its `/metrics`.
    fn scrape(&self) -> String {
        assert_ne!(self.metrics_port, 0, "started without metrics");
        let (status, text) =
            wait_for("operator /metrics", Duration::from_secs(5), || http_get(self.metrics_port, "/metrics", ""));
        assert_eq!(status, 200, "{text}");
        text
    }
}

/// The value of the sample `series` (exact name and labels) in a scrape, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Follows the chart's Prometheus settings for the operator down to the port its container listens on:
/// ServiceMonitor alb-operator → Service alb-operator port → container port → ALB_OPERATOR_METRICS_PORT.
fn operator_metrics_port_from_chart(rendered: &[Value]) -> (u16, String) {
    let sm = find(rendered, "ServiceMonitor", "alb-operator");
    let ep = &sm["spec"]["endpoints"][0];
    let svc = find(rendered, "Service", "alb-operator");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "the ServiceMonitor selects the Service");
    }
    let sport = svc["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == ep["port"]).expect("named port");
    let dep = find(rendered, "Deployment", "alb-operator-ctl");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&dep["spec"]["template"]["metadata"]["labels"][k], v, "the Service selects the operator pod");
    }
    let ctr = &dep["spec"]["template"]["spec"]["containers"][0];
    let cport = ctr["ports"].as_array().unwrap().iter().find(|p| p["name"] == sport["targetPort"]).expect("target");
    let port = cport["containerPort"].as_u64().unwrap() as u16;
    let env = ctr["env"].as_array().unwrap().iter().find(|e| e["name"] == "ALB_OPERATOR_METRICS_PORT").unwrap();
    assert_eq!(env["value"].as_str().unwrap(), port.to_string(), "the operator listens where the chart points");
    (port, ep["path"].as_str().unwrap().to_string())
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.proc.terminate();
    }
}

/// Renders the chart for namespace `ns` and ALB `alb`, applies it (CRDs are already installed from `crds/`,
/// the same files), returns the rendered documents.
fn install_chart(c: &Cluster, ns: &str, alb: &str, extra: &[&str]) -> Vec<Value> {
    let ns_set = format!("global.namespace={ns}");
    let name_set = format!("loadbalancerName={alb}");
    let mut sets = vec![ns_set.as_str(), name_set.as_str()];
    sets.extend_from_slice(extra);
    let rendered = docs(&template(&sets));
    apply_chart(c, &rendered);
    rendered
}

/// Applies rendered chart documents. This cluster has no Prometheus operator: a ServiceMonitor is checked, not
/// applied. The chart's cluster-scoped objects (ClusterRole/ClusterRoleBinding `alb-operator`) are the same in
/// every test, so applies are serialized: two concurrent `kubectl apply` would both try to create them and one
/// fails with AlreadyExists.
fn apply_chart(c: &Cluster, rendered: &[Value]) {
    static CHART: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let items: Vec<&Value> = rendered.iter().filter(|d| d["kind"] != "ServiceMonitor").collect();
    let _serial = CHART.lock().unwrap_or_else(|e| e.into_inner());
    c.apply(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string());
}

fn alb_state(c: &Cluster, ns: &str, alb: &str) -> (String, String) {
    let v = c.get_json(&["alb2", alb, "-n", ns]);
    (v["status"]["state"].as_str().unwrap_or("").to_string(), v["status"]["reason"].as_str().unwrap_or("").to_string())
}

fn deployment(c: &Cluster, ns: &str, alb: &str) -> Value {
    wait_for("the ALB Deployment", Duration::from_secs(20), || get_opt(c, &["deployment", alb, "-n", ns]))
}

fn container<'a>(dep: &'a Value, name: &str) -> &'a Value {
    dep["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// Marks the Deployment ready as a kubelet/controller-manager would (this cluster has neither).
fn set_ready(c: &Cluster, ns: &str, alb: &str, replicas: i64) {
    let patch =
        format!(r#"{{"status":{{"replicas":{replicas},"readyReplicas":{replicas},"availableReplicas":{replicas}}}}}"#);
    let out = c.kubectl(&["patch", "deployment", alb, "-n", ns, "--subresource=status", "--type=merge", "-p", &patch]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn chart_lints_and_templates() {
    let out =
        Command::new(helm()).args(["lint"]).arg(chart()).args(["--set", "loadbalancerName=alb-dev"]).output().unwrap();
    assert!(
        out.status.success(),
        "helm lint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let d = docs(&template(&["loadbalancerName=alb-dev", "replicas=1", "networkMode=container"]));
    let op = find(&d, "Deployment", "alb-operator-ctl");
    assert_eq!(op["metadata"]["namespace"], "cpaas-system");
    assert_eq!(op["spec"]["selector"]["matchLabels"]["name"], "alb-operator");
    assert_eq!(op["spec"]["template"]["spec"]["serviceAccountName"], "alb-operator");
    find(&d, "ClusterRole", "alb-operator");
    find(&d, "ClusterRoleBinding", "alb-operator");
    let alb = find(&d, "ALB2", "alb-dev");
    assert_eq!(alb["apiVersion"], "crd.alauda.io/v2beta1");
    assert_eq!(alb["metadata"]["labels"]["alb.cpaas.io/default-alb"], "true");
    assert_eq!(alb["spec"]["config"]["replicas"], 1, "other keys go verbatim into spec.config");
    assert_eq!(alb["spec"]["config"]["networkMode"], "container");
    assert!(alb["spec"]["config"].get("global").is_none());
    let backup: Value =
        serde_json::from_str(alb["metadata"]["annotations"]["alb.cpaas.io/migrate-backup"].as_str().unwrap()).unwrap();
    assert_eq!(backup, alb["spec"]["config"]);
    // Prometheus settings of the operator: ServiceMonitor → Service → container port 8080, and pod annotations.
    let d =
        docs(&template(&["loadbalancerName=alb-dev", "prometheus.serviceMonitor=true", "prometheus.annotations=true"]));
    assert_eq!(operator_metrics_port_from_chart(&d), (8080, "/metrics".to_string()));
    let ann = &find(&d, "Deployment", "alb-operator-ctl")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        (ann["prometheus.io/scrape"].as_str(), ann["prometheus.io/port"].as_str()),
        (Some("true"), Some("8080"))
    );
    assert!(find(&d, "ALB2", "alb-dev")["spec"]["config"].get("prometheus").is_none());
    let d = docs(&template(&["defaultAlb=false", "prometheus.serviceMonitor=true"]));
    find(&d, "ServiceMonitor", "alb-operator");
    // No default ALB, no ServiceMonitor by default, and no loadbalancerName needed then.
    let d = docs(&template(&["defaultAlb=false"]));
    assert!(!d.iter().any(|x| x["kind"] == "ALB2" || x["kind"] == "ServiceMonitor"));
    // Gateway API CRDs are not bundled; ours are (a unit test keeps them equal to crds/).
    let crds: Vec<String> = std::fs::read_dir(chart().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(crds.iter().all(|n| n.starts_with("crd.alauda.io_")), "{crds:?}");
}

#[test]
fn operator_creates_updates_warns_and_cleans_up() {
    let c = Cluster::shared();
    let ns = c.namespace("op-life");
    let alb = format!("{ns}-alb");
    let rendered = install_chart(c, &ns, &alb, &["replicas=2", "networkMode=host", "prometheus.serviceMonitor=true"]);
    let (chart_port, path) = operator_metrics_port_from_chart(&rendered);
    assert_eq!((chart_port, path.as_str()), (8080, "/metrics"));
    let op = Operator::start_with_metrics(c, &ns, &rendered, free_port());

    let dep = deployment(c, &ns, &alb);
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["shareProcessNamespace"], true);
    assert_eq!(pod["serviceAccountName"], format!("{alb}-serviceaccount"));
    assert_eq!(dep["metadata"]["labels"]["alb.cpaas.io/managed-by"], "alb-operator");
    assert_eq!(dep["metadata"]["labels"]["alb.cpaas.io/alb2-operator-albname"], alb.as_str());
    assert_eq!(dep["metadata"]["ownerReferences"][0]["kind"], "ALB2");
    let ctl = container(&dep, "alb2");
    let env: Vec<(String, String)> = ctl["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap_or("").into()))
        .collect();
    assert!(env.contains(&("NAME".into(), alb.clone())) && env.contains(&("ALB_NS".into(), ns.clone())));
    assert_eq!(container(&dep, "nginx")["resources"]["limits"]["cpu"], "2");
    let svc = c.get_json(&["service", &alb, "-n", &ns]);
    assert_eq!(svc["spec"]["selector"]["service_name"], format!("alb2-{alb}"));
    assert_eq!(svc["spec"]["ports"][0]["name"], "https-metrics");
    assert_eq!(svc["spec"]["ports"][0]["port"], 1936);
    let ic = c.get_json(&["ingressclass", &alb]);
    assert_eq!(ic["spec"]["controller"], "cpaas.io/alb2");
    for (kind, name) in [
        ("configmap", alb.clone()),
        ("configmap", format!("{alb}-port-info")),
        ("serviceaccount", format!("{alb}-serviceaccount")),
        ("role", format!("{alb}-role")),
        ("rolebinding", format!("{alb}-role")),
    ] {
        assert!(get_opt(c, &[kind, &name, "-n", &ns]).is_some(), "{kind} {name}");
    }
    assert!(get_opt(c, &["clusterrole", &format!("{alb}-clusterrole")]).is_some());
    assert!(get_opt(c, &["clusterrolebinding", &format!("{alb}-clusterrolebind")]).is_some());
    let v = c.get_json(&["alb2", &alb, "-n", &ns]);
    assert!(v["metadata"]["finalizers"].as_array().unwrap().iter().any(|f| f == "alb2.finalizer"));

    // Status follows the Deployment.
    wait_for("Progressing", Duration::from_secs(10), || (alb_state(c, &ns, &alb).0 == "Progressing").then_some(()));
    set_ready(c, &ns, &alb, 2);
    wait_for("Running", Duration::from_secs(10), || (alb_state(c, &ns, &alb).0 == "Running").then_some(()));

    // The operator's metrics after those reconciles (the chart's ServiceMonitor points at this endpoint).
    let text = wait_for("alb_operator_albs Running", Duration::from_secs(10), || {
        let t = op.scrape();
        (sample(&t, r#"alb_operator_albs{phase="Running"}"#) == Some(1.0)).then_some(t)
    });
    assert_eq!(sample(&text, r#"alb_operator_build_info{version="0.1.0"}"#), Some(1.0), "{text}");
    assert_eq!(sample(&text, "alb_operator_leader"), Some(1.0));
    let ok = sample(&text, r#"alb_operator_reconciles_total{result="ok"}"#).unwrap_or(0.0);
    assert!(ok >= 3.0, "finalizer, apply, status passes: {ok}\n{text}");
    assert_eq!(sample(&text, r#"alb_operator_reconcile_duration_seconds_count{result="ok"}"#), Some(ok));
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"alb_operator_reconcile_duration_seconds_bucket{le="0.001",result="ok"}"#)
                || l.starts_with(r#"alb_operator_reconcile_duration_seconds_bucket{result="ok",le="0.001"}"#)),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));

    // Edits: replicas, resources, network mode.
    let patch = r#"{"spec":{"config":{"replicas":1,"networkMode":"container","resources":{"limits":{"cpu":"1"}},"vip":{"enableLbSvc":true}}}}"#;
    let out = c.kubectl(&["patch", "alb2", &alb, "-n", &ns, "--type=merge", "-p", patch]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dep = wait_for("the edit applied", Duration::from_secs(10), || {
        let d = deployment(c, &ns, &alb);
        (d["spec"]["replicas"] == 1).then_some(d)
    });
    assert_ne!(dep["spec"]["template"]["spec"]["hostNetwork"], true, "hostNetwork off (false is omitted)");
    assert_eq!(dep["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(container(&dep, "nginx")["resources"]["limits"]["cpu"], "1");
    assert_eq!(container(&dep, "nginx")["resources"]["limits"]["memory"], "2Gi");
    let lb_sel = format!("alb.cpaas.io/alb2-operator-albname={alb},alb.cpaas.io/service_type=lb");
    let lbs = wait_for("the LB Service", Duration::from_secs(10), || {
        let v = c.get_json(&["service", "-n", &ns, "-l", &lb_sel]);
        let items = v["items"].as_array().cloned().unwrap_or_default();
        (!items.is_empty()).then_some(items)
    });
    assert_eq!(lbs.len(), 1);
    assert_eq!(lbs[0]["spec"]["type"], "LoadBalancer");
    assert!(lbs[0]["metadata"]["name"].as_str().unwrap().starts_with(&format!("{alb}-lb-")));

    // An invalid value: Warning naming the field, nothing applied.
    let out = c.kubectl(&[
        "patch",
        "alb2",
        &alb,
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"config":{"replicas":5,"resources":{"limits":{"cpu":"lots"}}}}}"#,
    ]);
    assert!(out.status.success());
    let (_, reason) = wait_for("Warning", Duration::from_secs(10), || {
        let s = alb_state(c, &ns, &alb);
        (s.0 == "Warning").then_some(s)
    });
    assert!(reason.contains("spec.config.resources.limits.cpu"), "{reason}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(deployment(c, &ns, &alb)["spec"]["replicas"], 1, "nothing half-applied");
    let text = wait_for("alb_operator_albs Warning", Duration::from_secs(10), || {
        let t = op.scrape();
        (sample(&t, r#"alb_operator_albs{phase="Warning"}"#) == Some(1.0)).then_some(t)
    });
    assert!(sample(&text, r#"alb_operator_reconciles_total{result="invalid"}"#).unwrap_or(0.0) >= 1.0, "{text}");
    assert!(sample(&text, r#"alb_operator_albs{phase="Running"}"#).is_none(), "{text}");

    // Delete: everything the operator made goes (no garbage collector here).
    let out = c.kubectl(&["delete", "alb2", &alb, "-n", &ns, "--wait=false"]);
    assert!(out.status.success());
    wait_for("the ALB2 gone", Duration::from_secs(15), || {
        get_opt(c, &["alb2", &alb, "-n", &ns]).is_none().then_some(())
    });
    for (kind, name) in [
        ("deployment", alb.clone()),
        ("service", alb.clone()),
        ("configmap", alb.clone()),
        ("configmap", format!("{alb}-port-info")),
        ("serviceaccount", format!("{alb}-serviceaccount")),
        ("role", format!("{alb}-role")),
    ] {
        assert!(get_opt(c, &[kind, &name, "-n", &ns]).is_none(), "{kind} {name} left behind");
    }
    assert!(get_opt(c, &["ingressclass", &alb]).is_none());
    assert!(get_opt(c, &["clusterrole", &format!("{alb}-clusterrole")]).is_none());
    let v = c.get_json(&["service", "-n", &ns, "-l", &lb_sel]);
    assert!(v["items"].as_array().unwrap().is_empty(), "LB Service left behind");
}

#[test]
fn operator_adopts_the_original_operators_objects() {
    let c = Cluster::shared();
    let ns = c.namespace("op-adopt");
    let alb = format!("{ns}-alb");
    let labels = format!(
        "{{alb.cpaas.io/managed-by: alb-operator, alb.cpaas.io/version: v3.19.0, alb.cpaas.io/alb2-operator: {ns}_{alb}, alb.cpaas.io/alb2-operator-albname: {alb}, alb.cpaas.io/alb2-operator-albns: {ns}}}"
    );
    // As the original operator left them: its Deployment (containers nginx/alb2, its volumes and env), monitor
    // Service, ConfigMap with nginx snippets, IngressClass, plus Frontends/Rules of its controller.
    c.apply(&format!(
        r##"apiVersion: crd.alauda.io/v2beta1
kind: ALB2
metadata:
  name: {alb}
  namespace: {ns}
  finalizers: [alb2.finalizer, alb2_instance.finalizer]
spec:
  address: 127.0.0.1
  type: nginx
  config: {{replicas: 1, networkMode: host, loadbalancerName: {alb}, enableALb: true}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {alb}, namespace: {ns}, labels: {labels}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{service_name: alb2-{alb}, service.cpaas.io/name: deployment-{alb}}}}}
  template:
    metadata: {{labels: {{service_name: alb2-{alb}, service.cpaas.io/name: deployment-{alb}, alb2.cpaas.io/type: local}}}}
    spec:
      shareProcessNamespace: true
      hostNetwork: true
      serviceAccountName: {alb}-serviceaccount
      containers:
      - name: nginx
        image: registry.alauda.cn:60080/acp/alb-nginx:v3.19.0
        command: [/alb/nginx/run-nginx.sh]
        env: [{{name: OLD_CONFIG_PATH, value: /etc/alb2/nginx/nginx.conf}}]
        volumeMounts: [{{name: share-conf, mountPath: /etc/alb2/nginx/}}, {{name: tweak-conf, mountPath: /alb/tweak/}}]
        readinessProbe: {{httpGet: {{path: /healthz, port: 1936, scheme: HTTPS}}}}
      - name: alb2
        image: registry.alauda.cn:60080/acp/alb2:v3.19.0
        command: [/alb/ctl/run-alb.sh]
        env: [{{name: ENABLE_GO_MONITOR, value: "false"}}]
        volumeMounts: [{{name: share-conf, mountPath: /etc/alb2/nginx/}}]
      volumes:
      - {{name: share-conf, emptyDir: {{}}}}
      - {{name: tweak-conf, configMap: {{name: {alb}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {alb}, namespace: {ns}, labels: {labels}}}
spec:
  selector: {{service_name: alb2-{alb}}}
  ports: [{{name: https-metrics, port: 1936, targetPort: 1936, protocol: TCP}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: {alb}, namespace: {ns}, labels: {labels}}}
data: {{http: "# snippets", bind_nic: "{{}}"}}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: {alb}, labels: {labels}}}
spec: {{controller: cpaas.io/alb2}}
---
apiVersion: crd.alauda.io/v1
kind: Frontend
metadata: {{name: {alb}-00080, namespace: {ns}, labels: {{alb2.cpaas.io/name: {alb}}}}}
spec: {{port: 80, protocol: http}}
---
apiVersion: crd.alauda.io/v1
kind: Rule
metadata: {{name: {alb}-00080-r1, namespace: {ns}, labels: {{alb2.cpaas.io/name: {alb}, alb2.cpaas.io/frontend: {alb}-00080}}}}
spec: {{priority: 5, dslx: [{{type: URL, values: [[STARTS_WITH, /]]}}]}}
"##
    ));
    let before = c.get_json(&["service", &alb, "-n", &ns]);
    let rendered = docs(&template(&[&format!("global.namespace={ns}"), "defaultAlb=false"]));
    apply_chart(c, &rendered);
    let _op = Operator::start(c, &ns, &rendered);

    let dep = wait_for("the Deployment adopted", Duration::from_secs(20), || {
        let d = deployment(c, &ns, &alb);
        (container(&d, "alb2")["command"] == serde_json::json!(["/alb/bin/alb", "controller"])).then_some(d)
    });
    let pod = &dep["spec"]["template"]["spec"];
    let names: Vec<&str> = pod["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["nginx", "alb2"]);
    let vols: Vec<&str> = pod["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert!(!vols.contains(&"share-conf") && !vols.contains(&"tweak-conf"), "old volumes dropped: {vols:?}");
    assert!(container(&dep, "alb2")["env"].as_array().unwrap().iter().all(|e| e["name"] != "ENABLE_GO_MONITOR"));
    assert_eq!(container(&dep, "nginx")["readinessProbe"]["httpGet"]["scheme"], "HTTP");
    // No duplicates: one Deployment, one monitor Service (same clusterIP), one ConfigMap of that name.
    let sel = format!("alb.cpaas.io/alb2-operator-albname={alb}");
    assert_eq!(c.get_json(&["deployment", "-n", &ns, "-l", &sel])["items"].as_array().unwrap().len(), 1);
    let svcs = c.get_json(&["service", "-n", &ns, "-l", &sel]);
    assert_eq!(svcs["items"].as_array().unwrap().len(), 1);
    let after = c.get_json(&["service", &alb, "-n", &ns]);
    assert_eq!(after["spec"]["clusterIP"], before["spec"]["clusterIP"]);
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"], "the same Service, updated in place");
    let cm = c.get_json(&["configmap", &alb, "-n", &ns]);
    assert_eq!(cm["data"]["bind_nic"], "{}");
    // Frontends and Rules are untouched.
    assert!(get_opt(c, &["frontend", &format!("{alb}-00080"), "-n", &ns]).is_some());
    assert!(get_opt(c, &["rule", &format!("{alb}-00080-r1"), "-n", &ns]).is_some());
    // Later edits are applied to the adopted objects as to our own.
    let out =
        c.kubectl(&["patch", "alb2", &alb, "-n", &ns, "--type=merge", "-p", r#"{"spec":{"config":{"replicas":2}}}"#]);
    assert!(out.status.success());
    wait_for("replicas 2", Duration::from_secs(10), || {
        (deployment(c, &ns, &alb)["spec"]["replicas"] == 2).then_some(())
    });
}

// ---- the pod, run as its container specs say ----------------------------------------------------------------

fn host_ip() -> String {
    let out = Command::new(repo_dir().join("e2e/testhost/up")).output().expect("run e2e/testhost/up");
    assert!(out.status.success(), "e2e/testhost/up: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
}

fn http_get(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// Replaces the image paths (`/alb/...`) by the same layout under `root`, and the nginx binary by ours.
fn localize(s: &str, root: &Path, nginx: &str) -> String {
    s.replace("/usr/local/openresty/bin/openresty", nginx).replace("/alb/", &format!("{}/alb/", root.display()))
}

#[test]
fn pod_processes_as_specified_serve_traffic_and_metrics() {
    let c = Cluster::shared();
    let ns = c.namespace("op-pod");
    let alb = format!("{ns}-alb");
    let mport = free_port();
    let iport = free_port();
    let rendered = install_chart(
        c,
        &ns,
        &alb,
        &[
            "replicas=1",
            "networkMode=container",
            &format!("metricsPort={mport}"),
            "prometheus.serviceMonitor=true",
            &format!("ingressHTTPPort={iport}"),
            "ingressHTTPSPort=0",
            "projects[0]=ALL_ALL",
        ],
    );
    let _op = Operator::start(c, &ns, &rendered);
    let dep = deployment(c, &ns, &alb);
    let pod = dep["spec"]["template"]["spec"].clone();

    // The images' file layout under a temp dir: the OpenResty image's /alb (lua/, nginx/bootstrap.conf, run/),
    // the controller image's /alb/bin/alb.
    let tmp = tempfile::Builder::new().prefix("alb-e2e-pod-").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path();
    let a = root.join("alb");
    for d in ["bin", "nginx", "run", "share/lua"] {
        std::fs::create_dir_all(a.join(d)).unwrap();
    }
    Command::new("cp").arg("-R").arg(repo_dir().join("lua")).arg(a.join("lua")).status().unwrap();
    std::os::unix::fs::symlink(alb_bin(), a.join("bin/alb")).unwrap();
    // Test-only adaptations: Debian's nginx loads the Lua module (OpenResty has it built in), and the loopback
    // policy API gets a free port so tests run in parallel.
    let api_port = free_port();
    let nginx = "/usr/sbin/nginx";
    let modules = "load_module /usr/lib/nginx/modules/ndk_http_module.so;\nload_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n";
    let boot = std::fs::read_to_string(repo_dir().join("nginx-templates/bootstrap.conf"))
        .unwrap()
        .replace("1937", &api_port.to_string());
    std::fs::write(a.join("nginx/bootstrap.conf"), format!("{modules}{boot}")).unwrap();

    // Init container, then the nginx container, then the controller container: command + env from the spec.
    let init = &pod["initContainers"][0];
    let cmd: Vec<String> =
        init["command"].as_array().unwrap().iter().map(|s| localize(s.as_str().unwrap(), root, nginx)).collect();
    let st = Command::new(&cmd[0]).args(&cmd[1..]).status().unwrap();
    assert!(st.success(), "init container command failed");
    assert!(a.join("run/policy-token").exists() && a.join("share/lua/alb/phase.lua").exists());

    let spawn = |name: &str, extra_env: &[(&str, String)]| {
        let spec = pod["containers"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
        let cmd: Vec<String> =
            spec["command"].as_array().unwrap().iter().map(|s| localize(s.as_str().unwrap(), root, nginx)).collect();
        let mut command = Command::new(&cmd[0]);
        command.args(&cmd[1..]).env_clear().env("PATH", std::env::var("PATH").unwrap());
        for e in spec["env"].as_array().unwrap() {
            let v = match e["value"].as_str() {
                Some(v) => localize(v, root, nginx),
                None => format!("{alb}-pod-1"), // fieldRef metadata.name
            };
            command.env(e["name"].as_str().unwrap(), v);
        }
        for (k, v) in extra_env {
            command.env(k, v);
        }
        Proc::spawn(&format!("container {name}"), &mut command)
    };
    let nginx_proc = spawn("nginx", &[]);
    wait_for("bootstrap policy API", Duration::from_secs(10), || {
        http_get(api_port, "/healthz", "").filter(|r| r.0 == 200).map(|_| ())
    });
    assert!(http_get(mport, "/healthz", "").is_none(), "the metrics port stays closed until the real conf");
    let admin = free_port();
    // The controller runs as the pod would: as the ServiceAccount the operator made, with only the rights of the
    // Role and ClusterRole it made (a missing rule shows up here as a 403 and a route that never works).
    let sa = pod["serviceAccountName"].as_str().unwrap().to_string();
    let sa_kubeconfig = c.service_account_kubeconfig(&ns, &sa, &root.join("sa-kubeconfig"));
    let ctl = spawn(
        "alb2",
        &[
            ("KUBECONFIG", sa_kubeconfig.display().to_string()),
            ("ALB_API_PORT", api_port.to_string()),
            ("ALB_ADMIN_PORT", admin.to_string()),
            ("ALB_WORKERS", "1".into()),
            ("ALB_LOG", "info".into()),
        ],
    );

    // A backend, a Frontend and a Rule.
    let ip = host_ip();
    let mut be = Command::new("ip");
    be.args(["netns", "exec", "alb-e2e"]).arg(alb_bin()).args([
        "echo-server",
        "--listen",
        &format!("{ip}:0"),
        "--name",
        "pod-be",
    ]);
    be.stdout(Stdio::piped());
    let mut backend = Proc::spawn("backend", &mut be);
    let mut line = String::new();
    BufReader::new(backend.child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let bport: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    let port = free_port();
    c.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: be, namespace: {ns}}}\nspec:\n  clusterIP: None\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: be-1\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: be}}\naddressType: IPv4\nports: [{{name: http, port: {bport}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}\n---\napiVersion: crd.alauda.io/v1\nkind: Frontend\nmetadata: {{name: ft, namespace: {ns}, labels: {{alb2.cpaas.io/name: {alb}}}}}\nspec: {{port: {port}, protocol: http}}\n---\napiVersion: crd.alauda.io/v1\nkind: Rule\nmetadata: {{name: r1, namespace: {ns}, labels: {{alb2.cpaas.io/name: {alb}, alb2.cpaas.io/frontend: ft}}}}\nspec:\n  priority: 5\n  dslx: [{{type: URL, values: [[STARTS_WITH, /]]}}]\n  serviceGroup:\n    services: [{{name: be, namespace: {ns}, port: 80}}]\n"
    ));
    ctl.wait_log("nginx reloaded: listeners changed", Duration::from_secs(30));
    wait_for("traffic through the pod", Duration::from_secs(10), || {
        http_get(port, "/hello", "").filter(|r| r.0 == 200 && r.1.contains("pod-be")).map(|_| ())
    });
    // An Ingress of the ALB's class: the leader writes a Frontend and a Rule, the Rule's condition, the Ingress
    // status and an Event, all as the ServiceAccount.
    c.apply(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: ing, namespace: {ns}}}\nspec:\n  ingressClassName: {alb}\n  rules:\n  - http:\n      paths:\n      - {{path: /ing, pathType: Prefix, backend: {{service: {{name: be, port: {{number: 80}}}}}}}}\n"
    ));
    wait_for("traffic through the Ingress", Duration::from_secs(30), || {
        http_get(iport, "/ing/x", "").filter(|r| r.0 == 200 && r.1.contains("pod-be")).map(|_| ())
    });
    wait_for("the Ingress status and its Synced Event", Duration::from_secs(15), || {
        let ing = c.get_json(&["ingress", "ing", "-n", &ns]);
        let ports = ing["status"]["loadBalancer"]["ingress"][0]["ports"].clone();
        let events = c.get_json(&["events", "-n", &ns, "--field-selector", "involvedObject.name=ing"]);
        let synced = events["items"].as_array().is_some_and(|e| e.iter().any(|e| e["reason"] == "Synced"));
        (ports.is_array() && synced).then_some(())
    });
    wait_for("the Ingress's Rule is Accepted", Duration::from_secs(15), || {
        let rules = c.get_json(&["rules", "-n", &ns]);
        rules["items"].as_array()?.iter().find(|r| r["spec"]["source"]["name"] == "ing").and_then(|r| {
            let conds = r["status"]["conditions"].as_array()?;
            conds.iter().any(|k| k["type"] == "Accepted" && k["status"] == "True").then_some(())
        })
    });
    let denied: Vec<String> =
        ctl.logs().into_iter().filter(|l| has_403(l) || l.to_lowercase().contains("forbidden")).collect();
    assert!(denied.is_empty(), "the ServiceAccount's rights fall short: {denied:#?}");

    // Metrics as the chart's ServiceMonitor says: its endpoints name ports of the operator's monitor Service.
    let sm = find(&rendered, "ServiceMonitor", &alb);
    let svc = c.get_json(&["service", &alb, "-n", &ns]);
    for ep in sm["spec"]["endpoints"].as_array().unwrap() {
        let port_name = ep["port"].as_str().unwrap();
        let target = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port_name)
            .unwrap_or_else(|| panic!("monitor Service has no port {port_name}"))["targetPort"]
            .as_u64()
            .unwrap() as u16;
        // The admin port is remapped for parallel tests; the metrics port is the ALB's metricsPort itself.
        let local = if target == 1938 { admin } else { target };
        assert_eq!(local == mport, port_name == "https-metrics");
        let path = ep["path"].as_str().unwrap();
        let scheme = ep["scheme"].as_str().unwrap_or("http");
        let (status, text) = wait_for(&format!("{port_name} {scheme} {path}"), Duration::from_secs(5), || {
            if scheme == "https" {
                // As Prometheus with the endpoint's tlsConfig: the certificate is self-signed.
                assert_eq!(ep["tlsConfig"]["insecureSkipVerify"], true, "{ep}");
                curl_https(local, path)
            } else {
                http_get(local, path, "Authorization: Bearer x\r\n")
            }
        });
        assert_eq!(status, 200, "{port_name}: {text}");
        if port_name == "https-metrics" {
            assert_eq!(scheme, "https", "the data plane metrics are scraped as the original: HTTPS");
            assert!(text.contains("nginx_http_connections"), "{text}");
        } else {
            assert!(text.contains("alb_controller_build_info"), "{text}");
            assert_eq!(http_get(local, "/readyz", "").map(|r| r.0), Some(200));
        }
    }
    drop(ctl);
    drop(nginx_proc);
    backend.terminate();
}

/// `curl -sk` with a Bearer header against `https://127.0.0.1:port{path}`: (status, body) once it answers.
fn curl_https(port: u16, path: &str) -> Option<(u16, String)> {
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "5", "-H", "Authorization: Bearer x", "-w", "\n%{http_code}"])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = stdout.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

fn patch_alb(c: &Cluster, ns: &str, alb: &str, patch: &str) {
    let out = c.kubectl(&["patch", "alb2", alb, "-n", ns, "--type=merge", "-p", patch]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn env_map(container: &Value) -> std::collections::BTreeMap<String, String> {
    container["env"]
        .as_array()
        .map(|a| {
            a.iter().map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap_or("").into())).collect()
        })
        .unwrap_or_default()
}

#[test]
fn operator_applies_overwrites_annotations_and_port_projects() {
    let c = Cluster::shared();
    let ns = c.namespace("op-over");
    let alb = format!("{ns}-alb");
    let rendered = docs(&template(&[&format!("global.namespace={ns}"), "defaultAlb=false"]));
    apply_chart(c, &rendered);
    // The snippet source of overwrite.configmap, and an ALB2 using every switch at once.
    c.apply(&format!(
        r##"apiVersion: v1
kind: ConfigMap
metadata: {{name: tweaks, namespace: {ns}}}
data: {{http: "# my http snippet", upstream: "keepalive 64;", bind_nic: "must not be copied"}}
---
apiVersion: crd.alauda.io/v2beta1
kind: ALB2
metadata:
  name: {alb}
  namespace: {ns}
  annotations:
    alb.cpaas.io/nginx-env: '{{"METRICS_AUTH":"false","TZ":"UTC"}}'
    tolerate-all: "true"
spec:
  type: nginx
  config:
    replicas: 1
    bindNIC: '{{"nic":["eth0"]}}'
    overwrite:
      image: [{{target: "0.1.0", alb: "my.registry/alb:hotfix", nginx: "my.registry/nginx:hotfix"}}, {{target: "9.9.9", alb: "never"}}]
      configmap: [{{name: {ns}/tweaks}}]
    enablePortProject: true
    portProjects: '[{{"port":"80","projects":["p1","p2"]}},{{"port":"400-500","projects":["p2","p3"]}}]'
"##
    ));
    let _op = Operator::start(c, &ns, &rendered);

    // overwrite.image (target = this operator's VERSION, the chart version) on both containers and the init one.
    let dep = wait_for("the patched images", Duration::from_secs(20), || {
        let d = get_opt(c, &["deployment", &alb, "-n", &ns])?;
        (container(&d, "alb2")["image"] == "my.registry/alb:hotfix").then_some(d)
    });
    assert_eq!(container(&dep, "nginx")["image"], "my.registry/nginx:hotfix");
    assert_eq!(dep["spec"]["template"]["spec"]["initContainers"][0]["image"], "my.registry/nginx:hotfix");
    // alb.cpaas.io/nginx-env → the nginx container only; tolerate-all → one toleration of everything.
    let nginx_env = env_map(container(&dep, "nginx"));
    assert_eq!((nginx_env["METRICS_AUTH"].as_str(), nginx_env["TZ"].as_str()), ("false", "UTC"));
    assert_eq!(nginx_env["NAME"], alb);
    assert!(!env_map(container(&dep, "alb2")).contains_key("METRICS_AUTH"));
    assert_eq!(dep["spec"]["template"]["spec"]["tolerations"], serde_json::json!([{"operator": "Exists"}]));
    // overwrite.configmap → the snippet keys in ConfigMap <alb>, bind_nic from the config; the source labelled.
    let cm = c.get_json(&["configmap", &alb, "-n", &ns]);
    assert_eq!(cm["data"]["http"], "# my http snippet");
    assert_eq!(cm["data"]["upstream"], "keepalive 64;");
    assert_eq!(cm["data"]["bind_nic"], r#"{"nic":["eth0"]}"#);
    let src = c.get_json(&["configmap", "tweaks", "-n", &ns]);
    assert_eq!(src["metadata"]["labels"]["alb2.operator.cpaas.io/overwrite-configmap"], "true");
    // ALB2 labels, IngressClass projects of the ingress ports 80 and 443 (p1,p2 ∩ p2,p3), image patch status.
    let v = c.get_json(&["alb2", &alb, "-n", &ns]);
    assert_eq!(v["metadata"]["labels"]["cpaas.io/role"], "port");
    assert_eq!(v["metadata"]["labels"]["alb2.operator.cpaas.io/overwrite-configmap"], "true");
    let ic = c.get_json(&["ingressclass", &alb]);
    assert_eq!(ic["metadata"]["annotations"]["alb.cpaas.io/project"], "p2");
    assert_eq!(
        c.get_json(&["configmap", &format!("{alb}-port-info"), "-n", &ns])["data"]["range"],
        v["spec"]["config"]["portProjects"]
    );
    set_ready(c, &ns, &alb, 1);
    let v = wait_for("Running with the image patch", Duration::from_secs(10), || {
        let v = c.get_json(&["alb2", &alb, "-n", &ns]);
        (v["status"]["state"] == "Running").then_some(v)
    });
    assert_eq!(
        v["status"]["detail"]["version"]["imagePatch"],
        "patched,alb: my.registry/alb:hotfix,nginx: my.registry/nginx:hotfix"
    );

    // A change of the source ConfigMap reaches ConfigMap <alb> (watched through its label).
    let out =
        c.kubectl(&["patch", "configmap", "tweaks", "-n", &ns, "--type=merge", "-p", r##"{"data":{"http":"# v2"}}"##]);
    assert!(out.status.success());
    wait_for("the new snippet", Duration::from_secs(10), || {
        (c.get_json(&["configmap", &alb, "-n", &ns])["data"]["http"] == "# v2").then_some(())
    });

    // Invalid new fields: Warning naming the field, nothing applied (the replicas of the same edit included).
    let cases = [
        (
            r#"{"metadata":{"annotations":{"alb.cpaas.io/nginx-env":"{\"NAME\":\"x\"}"}},"spec":{"config":{"replicas":3}}}"#,
            "metadata.annotations[alb.cpaas.io/nginx-env]",
        ),
        (
            r#"{"metadata":{"annotations":{"alb.cpaas.io/nginx-env":null}},"spec":{"config":{"replicas":3,"overwrite":{"image":[{"alb":"bad image"}]}}}}"#,
            "spec.config.overwrite.image[0].alb",
        ),
        (
            r#"{"spec":{"config":{"replicas":3,"overwrite":{"image":null,"configmap":[{"name":"nope/missing"}]}}}}"#,
            "spec.config.overwrite.configmap[0].name",
        ),
        (
            r#"{"spec":{"config":{"replicas":3,"overwrite":null,"gateway":{"enable":true,"mode":"exclusive"}}}}"#,
            "spec.config.gateway.mode",
        ),
        (
            r#"{"spec":{"config":{"replicas":3,"gateway":null,"portProjects":"[{\"port\":\"500-400\"}]"}}}"#,
            "spec.config.portProjects[0].port",
        ),
    ];
    for (patch, field) in cases {
        patch_alb(c, &ns, &alb, patch);
        let (_, reason) = wait_for(&format!("Warning naming {field}"), Duration::from_secs(10), || {
            let s = alb_state(c, &ns, &alb);
            (s.0 == "Warning" && s.1.contains(field)).then_some(s)
        });
        assert!(reason.contains("nothing applied"), "{reason}");
        let d = deployment(c, &ns, &alb);
        assert_eq!(d["spec"]["replicas"], 1, "{field}: nothing half-applied");
        assert_eq!(container(&d, "alb2")["image"], "my.registry/alb:hotfix", "{field}: nothing half-applied");
    }

    // Everything off again: the defaults come back, the labels go.
    patch_alb(
        c,
        &ns,
        &alb,
        r#"{"metadata":{"annotations":{"tolerate-all":null}},"spec":{"config":{"replicas":1,"overwrite":null,"enablePortProject":false,"portProjects":"[]","projects":["p9"]}}}"#,
    );
    let dep = wait_for("the defaults back", Duration::from_secs(15), || {
        let d = deployment(c, &ns, &alb);
        (container(&d, "alb2")["image"] != "my.registry/alb:hotfix").then_some(d)
    });
    let op_env = find(&rendered, "Deployment", "alb-operator-ctl")["spec"]["template"]["spec"]["containers"][0].clone();
    assert_eq!(container(&dep, "alb2")["image"], env_map(&op_env)["ALB_IMAGE"].as_str());
    assert_eq!(container(&dep, "nginx")["image"], env_map(&op_env)["NGINX_IMAGE"].as_str());
    assert_eq!(dep["spec"]["template"]["spec"]["tolerations"].as_array().unwrap().len(), 4);
    let cm = c.get_json(&["configmap", &alb, "-n", &ns]);
    assert!(cm["data"].get("http").is_none(), "snippets removed with overwrite.configmap: {cm}");
    let v = wait_for("labels gone", Duration::from_secs(10), || {
        let v = c.get_json(&["alb2", &alb, "-n", &ns]);
        v["metadata"]["labels"].get("cpaas.io/role").is_none().then_some(v)
    });
    assert!(v["metadata"]["labels"].get("alb2.operator.cpaas.io/overwrite-configmap").is_none());
    wait_for("IngressClass projects from config.projects", Duration::from_secs(10), || {
        (c.get_json(&["ingressclass", &alb])["metadata"]["annotations"]["alb.cpaas.io/project"] == "p9").then_some(())
    });
    let v = wait_for("Running, not patched", Duration::from_secs(10), || {
        let v = c.get_json(&["alb2", &alb, "-n", &ns]);
        (v["status"]["state"] == "Running").then_some(v)
    });
    assert_eq!(v["status"]["detail"]["version"]["imagePatch"], "not patch");
}

/// A stand-in for the standard GatewayClass CRD (the real bundle is not vendored here): same group, version,
/// names and scope, schema left open.
const GATEWAYCLASS_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gatewayclasses.gateway.networking.k8s.io
  # *.k8s.io groups need it; the standard CRDs carry the same annotation.
  annotations: {api-approved.kubernetes.io: "https://github.com/kubernetes-sigs/gateway-api/pull/2466"}
spec:
  group: gateway.networking.k8s.io
  scope: Cluster
  names: {kind: GatewayClass, listKind: GatewayClassList, plural: gatewayclasses, singular: gatewayclass, shortNames: [gc]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

#[test]
fn operator_gateway_class_with_and_without_the_gateway_api() {
    // A private API server: installing the Gateway API CRDs must not change the shared one.
    let c = Cluster::private("op-gw");
    let ns = c.namespace("op-gw");
    let alb = format!("{ns}-alb");
    let rendered = install_chart(c, &ns, &alb, &["replicas=1", "networkMode=container", "gateway.enable=true"]);
    let op = Operator::start(c, &ns, &rendered);

    // Without the CRDs: logged, no GatewayClass, the ALB still becomes Running.
    deployment(c, &ns, &alb);
    op.proc.wait_log(
        "Gateway API CRDs (gateway.networking.k8s.io/v1 GatewayClass) are not installed",
        Duration::from_secs(10),
    );
    set_ready(c, &ns, &alb, 1);
    wait_for("Running without the Gateway API", Duration::from_secs(10), || {
        (alb_state(c, &ns, &alb) == ("Running".to_string(), String::new())).then_some(())
    });
    let ctl_env = env_map(container(&deployment(c, &ns, &alb), "alb2"));
    assert_eq!((ctl_env["GATEWAY_ENABLE"].as_str(), ctl_env["GATEWAY_MODE"].as_str()), ("true", "shared"));
    assert_eq!(ctl_env["GATEWAY_CLASSNAME"], alb);

    // CRDs installed later: the next reconcile creates GatewayClass <alb>.
    c.apply(GATEWAYCLASS_CRD);
    wait_for("the GatewayClass CRD established", Duration::from_secs(20), || {
        let out = c.kubectl(&["get", "gatewayclasses"]);
        out.status.success().then_some(())
    });
    patch_alb(c, &ns, &alb, r#"{"metadata":{"annotations":{"touch":"1"}}}"#);
    let gc = wait_for("GatewayClass <alb>", Duration::from_secs(15), || get_opt(c, &["gatewayclass", &alb]));
    assert_eq!(gc["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(gc["spec"]["controllerName"], format!("alb2.gateway.cpaas.io/{alb}"));
    assert_eq!(
        gc["spec"]["parametersRef"],
        serde_json::json!({"group": "crd.alauda.io", "kind": "ALB2", "name": alb, "namespace": ns})
    );
    let l = &gc["metadata"]["labels"];
    assert_eq!(
        (l["gatewayclass.cpaas.io/type"].as_str(), l["gatewayclass.cpaas.io/deploy"].as_str()),
        (Some("shared"), Some("cpaas.io"))
    );
    assert_eq!(l["alb2.cpaas.io/gatewayclass"], alb.as_str());
    assert_eq!(l["alb.cpaas.io/alb2-operator-albname"], alb.as_str());
    op.proc.wait_log("Gateway API found", Duration::from_secs(5));
    assert_eq!(alb_state(c, &ns, &alb).0, "Running");

    // Gateway off → the class goes; on again → back; ALB2 deleted → gone with the rest.
    patch_alb(c, &ns, &alb, r#"{"spec":{"config":{"gateway":{"enable":false}}}}"#);
    wait_for("GatewayClass deleted", Duration::from_secs(10), || {
        get_opt(c, &["gatewayclass", &alb]).is_none().then_some(())
    });
    assert_eq!(env_map(container(&deployment(c, &ns, &alb), "alb2"))["GATEWAY_ENABLE"], "false");
    patch_alb(c, &ns, &alb, r#"{"spec":{"config":{"gateway":{"enable":true}}}}"#);
    wait_for("GatewayClass again", Duration::from_secs(10), || get_opt(c, &["gatewayclass", &alb]));
    let out = c.kubectl(&["delete", "alb2", &alb, "-n", &ns, "--wait=false"]);
    assert!(out.status.success());
    wait_for("GatewayClass deleted with the ALB2", Duration::from_secs(15), || {
        get_opt(c, &["gatewayclass", &alb]).is_none().then_some(())
    });
    drop(op);
    c.down();
}

/// A 403 status in a log line: "403" as a word of its own (not digits of a timestamp such as `.811403Z`, which
/// once failed the check above, or of a hex digest).
fn has_403(l: &str) -> bool {
    let b = l.as_bytes();
    l.match_indices("403").any(|(i, _)| {
        let before = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.');
        let after = i + 3 >= b.len() || !b[i + 3].is_ascii_alphanumeric();
        before && after
    })
}

#[test]
fn a_403_is_a_word_not_digits_of_a_timestamp() {
    assert!(has_403("ApiError: Forbidden (403)"));
    assert!(has_403("status 403 from the API server"));
    assert!(!has_403("2026-12-02T06:27:00.811403Z  INFO policy v4 applied"));
    assert!(!has_403("digest 7a403bc"));
}
