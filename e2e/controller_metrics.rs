//! The control plane's own metrics (`alb_controller_*` on the admin port's `/metrics`): `alb standalone` with
//! known changes (compile/push counts, rule and reject gauges, reloads only for new listeners) next to the data
//! plane's `/metrics`, and `alb controller` against a private kube-apiserver (leader gauge on the leader and the
//! follower, watched Ingresses, Ingress reconciles, status writes).

use crate::harness::cluster::Cluster;
use crate::harness::{alb_bin, free_port, get, Backend, Proc, Standalone};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

type Labels = BTreeMap<String, String>;

/// A parsed OpenMetrics/Prometheus text exposition: (name, labels, value). Label values here hold no `,` `"`
/// or `\`, so a plain split is enough.
struct Scrape {
    samples: Vec<(String, Labels, f64)>,
    text: String,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample line {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("labels of {line:?}"));
                    let labels = body
                        .split(',')
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("label {kv:?} in {line:?}"));
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (series.to_string(), Labels::new()),
            };
            samples.push((name, labels, value));
        }
        Scrape { samples, text: text.to_string() }
    }

    /// The sample with exactly these labels; `None` when absent.
    fn value(&self, name: &str, kv: &[(&str, &str)]) -> Option<f64> {
        let want: Labels = kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let found: Vec<f64> = self.samples.iter().filter(|(n, l, _)| n == name && *l == want).map(|s| s.2).collect();
        assert!(found.len() <= 1, "{name}{want:?} appears {} times", found.len());
        found.first().copied()
    }

    /// The sample's value, 0 when absent (counters and gauges that were never set).
    fn get(&self, name: &str, kv: &[(&str, &str)]) -> f64 {
        self.value(name, kv).unwrap_or(0.0)
    }

    fn series(&self, name: &str) -> Vec<&(String, Labels, f64)> {
        self.samples.iter().filter(|(n, _, _)| n == name).collect()
    }
}

/// `GET /metrics` of the admin server.
fn admin_scrape(port: u16) -> Scrape {
    let r = get(port, "/metrics", &[]);
    assert_eq!(r.status, 200, "admin /metrics: {}", r.body);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/openmetrics-text"), "content type {ct:?}");
    assert!(r.body.ends_with("# EOF\n"), "OpenMetrics exposition ends with # EOF: {}", r.body);
    Scrape::parse(&r.body)
}

/// Polls the admin `/metrics` until `ok` holds (then returns that scrape) or panics after `timeout`.
fn scrape_until(port: u16, what: &str, timeout: Duration, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + timeout;
    loop {
        let s = admin_scrape(port);
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}; last scrape:\n{}", s.text);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix(prefix).tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

const COMPILES: &str = "alb_controller_compile_duration_seconds_count";
const PUSHES: &str = "alb_controller_push_duration_seconds_count";
const RULES: &str = "alb_controller_policy_rules";
const RELOADS: &str = "alb_controller_nginx_reloads_total";
const REJECTED: &str = "alb_controller_rejected_objects";

fn frontend(name: &str, port: u16) -> String {
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Frontend\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  port: {port}\n  protocol: http\n"
    )
}

fn rule(name: &str, prefix: &str) -> String {
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Rule\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{alb2.cpaas.io/frontend: ft}}\nspec:\n  priority: 5\n  dslx: [{{type: URL, values: [[STARTS_WITH, {prefix}]]}}]\n  serviceGroup:\n    services: [{{name: svc, namespace: default, port: 80}}]\n"
    )
}

fn service(b: &Backend) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: svc}}\naddressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n",
        port = b.port
    )
}

/// `alb standalone` with known admin and data plane metrics ports.
fn standalone(files: &[(&str, String)], admin_port: u16, metrics_port: u16) -> Standalone {
    Standalone::start_with(
        files,
        &["--metrics-port", &metrics_port.to_string(), "--admin-port", &admin_port.to_string()],
        &[],
    )
}

#[test]
fn standalone_counts_compiles_pushes_rejects_and_reloads() {
    let a = Backend::start("a");
    let (port, admin, metrics_port) = (free_port(), free_port(), free_port());
    let gw = standalone(
        &[
            ("ft.yaml", frontend("ft", port)),
            ("svc.yaml", service(&a)),
            ("r1.yaml", rule("r1", "/one")),
            ("r2.yaml", rule("r2", "/two")),
        ],
        admin,
        metrics_port,
    );
    assert_eq!(get(admin, "/healthz", &[]).status, 200);
    assert_eq!(get(admin, "/readyz", &[]).status, 200, "ready once the first policy is applied");

    let s0 = admin_scrape(admin);
    let (compiles, pushes) = (s0.get(COMPILES, &[]), s0.get(PUSHES, &[]));
    assert_eq!((compiles, pushes), (1.0, 1.0), "one compile and one push at start:\n{}", s0.text);
    assert_eq!(s0.get(RULES, &[]), 2.0);
    assert!(s0.series(REJECTED).is_empty(), "nothing rejected:\n{}", s0.text);
    assert!(s0.series(RELOADS).is_empty(), "no reload at start:\n{}", s0.text);
    assert_eq!(s0.get("alb_controller_push_workers_applied", &[]), 2.0);
    assert_eq!(s0.get("alb_controller_nginx_workers", &[]), 2.0);
    assert_eq!(s0.get("alb_controller_leader", &[]), 1.0, "standalone is its own leader");
    assert_eq!(s0.get("alb_controller_push_failures_total", &[]), 0.0);
    assert_eq!(s0.get("alb_controller_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert!(s0.get("alb_controller_policy_size_bytes", &[]) > 100.0, "{}", s0.text);
    assert!(s0.get("alb_controller_compile_duration_seconds_sum", &[]) > 0.0);

    // Three rule changes: each one compile and one push, no reload.
    gw.change(|g| g.write("r1.yaml", &rule("r1", "/uno")));
    gw.change(|g| g.write("r3.yaml", &rule("r3", "/three")));
    gw.change(|g| g.write("r4.yaml", &rule("r4", "/four")));
    for path in ["/uno", "/two", "/three", "/four"] {
        assert_eq!(get(port, path, &[]).backend(), "a", "{path}");
    }
    let s1 = admin_scrape(admin);
    assert_eq!(s1.get(COMPILES, &[]), compiles + 3.0, "{}", s1.text);
    assert_eq!(s1.get(PUSHES, &[]), pushes + 3.0, "{}", s1.text);
    assert_eq!(s1.get(RULES, &[]), 4.0);
    assert!(s1.series(RELOADS).is_empty(), "rule changes do not reload:\n{}", s1.text);

    // The data plane's own metrics, next to them: Bearer needed, the traffic above counted (before any reload).
    assert_eq!(get(metrics_port, "/metrics", &[]).status, 401);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(metrics_port, "/metrics", &[("Authorization", "Bearer x")]);
        assert_eq!(r.status, 200, "{}", r.body);
        let dp = Scrape::parse(&r.body);
        let r3: f64 = dp.series("nginx_http_status").iter().filter(|s| s.1["rule"].contains("r3")).map(|s| s.2).sum();
        if r3 == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "data plane did not count the request of rule r3:\n{}", r.body);
        std::thread::sleep(Duration::from_millis(50));
    }

    // An invalid Rule: compiled (and rejected), but the policy content is the same, so nothing is pushed.
    let skip = gw.proc.log_len();
    gw.write("bad.yaml", &rule("bad", "/bad").replace("STARTS_WITH, /bad", "REGEX, \"(\""));
    gw.proc.wait_log_after(skip, "rejected Rule default/bad", Duration::from_secs(5));
    let s2 = admin_scrape(admin);
    assert_eq!(s2.get(COMPILES, &[]), compiles + 4.0, "{}", s2.text);
    assert_eq!(s2.get(PUSHES, &[]), pushes + 3.0, "unchanged policy content is not pushed:\n{}", s2.text);
    assert_eq!(s2.get(RULES, &[]), 4.0);
    assert_eq!(s2.series(REJECTED).len(), 1, "{}", s2.text);
    assert_eq!(s2.get(REJECTED, &[("kind", "Rule"), ("reason", "InvalidRegex")]), 1.0, "{}", s2.text);
    assert!(s2.series(RELOADS).is_empty(), "{}", s2.text);

    // A new listener: the only thing that reloads nginx.
    let port2 = free_port();
    let reloaded = gw.change(|g| g.write("ft2.yaml", &frontend("ft2", port2)));
    assert!(gw.proc.logs().iter().any(|l| l.contains("nginx reloaded: listeners changed")), "{reloaded}");
    let s3 = admin_scrape(admin);
    assert_eq!(s3.get(RELOADS, &[("reason", "listeners_changed")]), 1.0, "{}", s3.text);
    assert_eq!(s3.series(RELOADS).len(), 1, "{}", s3.text);
    assert_eq!(s3.get(COMPILES, &[]), compiles + 5.0, "{}", s3.text);
    assert_eq!(s3.get(PUSHES, &[]), pushes + 4.0, "{}", s3.text);

    // Fixing the bad Rule clears its reject.
    gw.change(|g| g.write("bad.yaml", &rule("bad", "/bad")));
    let s4 = admin_scrape(admin);
    assert!(s4.series(REJECTED).is_empty(), "{}", s4.text);
    assert_eq!(s4.get(RULES, &[]), 5.0);
    assert_eq!(s4.get("alb_controller_push_failures_total", &[]), 0.0);
}

/// A private control plane, stopped when dropped (also when the test fails).
struct PrivateCluster(&'static Cluster);

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.0.down();
    }
}

fn controller(c: &Cluster, ns: &str, alb: &str, pod: &str, runtime: &Path, bind: &str) -> (Proc, u16) {
    let admin_port = free_port();
    let mut cmd = Command::new(alb_bin());
    cmd.arg("controller")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["--alb-name", alb, "--alb-namespace", ns, "--pod-name", pod, "--spawn-nginx"])
        .arg("--runtime-dir")
        .arg(runtime)
        .args(["--api-port", &free_port().to_string(), "--bind", bind, "--workers", "2"])
        .args(["--admin-port", &admin_port.to_string(), "--metrics-port", &free_port().to_string()])
        .args(["--lease-duration", "4", "--renew-deadline", "2", "--retry-period", "1"])
        .env("ALB_LOG", "info")
        .env_remove("KUBECONFIG");
    let proc = Proc::spawn(&format!("alb controller {pod}"), &mut cmd);
    proc.wait_log("applied by", Duration::from_secs(30));
    (proc, admin_port)
}

#[test]
fn controller_reports_leader_watched_ingresses_and_reconciles() {
    // A control plane of its own: the Ingress cache holds exactly the Ingresses made here.
    let cluster = PrivateCluster(Cluster::private("ctl-metrics"));
    let c = cluster.0;
    let ns = c.namespace("ctl-metrics");
    let alb = "alb-metrics";
    let http_port = free_port();
    c.apply(&format!(
        "apiVersion: crd.alauda.io/v2beta1\nkind: ALB2\nmetadata: {{name: {alb}, namespace: {ns}}}\nspec:\n  address: 127.0.0.1\n  type: nginx\n  config: {{ingressHTTPPort: {http_port}, ingressHTTPSPort: 0, projects: [ALL_ALL]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc, namespace: {ns}}}\nspec:\n  clusterIP: None\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n"
    ));
    let (r1, r2) = (tempdir("alb-e2e-cm-ctl-"), tempdir("alb-e2e-cm-ctl-"));
    let (leader, admin1) = controller(c, &ns, alb, "p1", r1.path(), "127.0.0.1");
    scrape_until(admin1, "p1 leads", Duration::from_secs(10), |s| s.get("alb_controller_leader", &[]) == 1.0);
    let (_follower, admin2) = controller(c, &ns, alb, "p2", r2.path(), "127.0.0.2");
    assert_eq!(get(admin1, "/readyz", &[]).status, 200);
    assert_eq!(get(admin2, "/readyz", &[]).status, 200);

    let n = 3;
    for i in 0..n {
        c.apply(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web-{i}, namespace: {ns}}}\nspec:\n  ingressClassName: {alb}\n  rules:\n  - http:\n      paths:\n      - path: /p{i}\n        pathType: Prefix\n        backend: {{service: {{name: svc, port: {{number: 80}}}}}}\n"
        ));
    }
    let n = n as f64;
    let watched = |s: &Scrape, kind: &str| s.get("alb_controller_watched_objects", &[("kind", kind)]);
    let s = scrape_until(admin1, "3 Ingresses synced into 3 Rules", Duration::from_secs(20), |s| {
        watched(s, "Ingress") == n
            && watched(s, "Rule") == n
            && s.get(RULES, &[]) == n
            && s.get("alb_controller_reconciles_total", &[("kind", "Ingress"), ("result", "ok")]) >= n
            && s.get("alb_controller_status_writes_total", &[("kind", "Rule"), ("result", "ok")]) >= n
    });
    assert_eq!(s.get("alb_controller_leader", &[]), 1.0);
    assert_eq!(s.value("alb_controller_reconciles_total", &[("kind", "Ingress"), ("result", "error")]), None);
    assert_eq!(s.value("alb_controller_status_writes_total", &[("kind", "Rule"), ("result", "error")]), None);
    assert_eq!(watched(&s, "ALB2"), 1.0);
    assert!(watched(&s, "Frontend") >= 1.0, "the Ingress Frontend:\n{}", s.text);
    assert!(s.get(COMPILES, &[]) >= 2.0 && s.get(PUSHES, &[]) >= 2.0, "{}", s.text);
    assert_eq!(s.get("alb_controller_push_workers_applied", &[]), 2.0);
    assert!(s.series(REJECTED).is_empty(), "{}", s.text);
    // Started without Frontends: the Ingress Frontend's port is the one listener change.
    assert_eq!(s.get(RELOADS, &[("reason", "listeners_changed")]), 1.0, "{}", s.text);
    assert_eq!(s.series(RELOADS).len(), 1, "{}", s.text);

    // The follower serves the same policy and watches the same objects, but does not lead or translate.
    let f = scrape_until(admin2, "the follower caught up", Duration::from_secs(10), |s| {
        watched(s, "Ingress") == n && s.get(RULES, &[]) == n
    });
    assert_eq!(f.get("alb_controller_leader", &[]), 0.0, "{}", f.text);
    assert_eq!(f.get(RELOADS, &[("reason", "listeners_changed")]), 1.0, "{}", f.text);
    assert!(f.series("alb_controller_reconciles_total").is_empty(), "{}", f.text);
    assert!(f.series("alb_controller_status_writes_total").is_empty(), "{}", f.text);

    // A status-only change of a Rule (same generation, labels and annotations) compiles nothing; a label change
    // does. Counted on the follower, which writes no statuses of its own (the leader writes its Accepted
    // condition back, another status-only change).
    let rules = c.get_json(&["rules.crd.alauda.io", "-n", &ns]);
    let rule = rules["items"][0]["metadata"]["name"].as_str().expect("a Rule").to_string();
    let compiles = admin_scrape(admin2).get(COMPILES, &[]);
    let status = r#"{"status":{"conditions":[{"type":"Probe","status":"True","reason":"E2E","message":"status only","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    let out = c.kubectl(&[
        "patch",
        "rules.crd.alauda.io",
        &rule,
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // the debounce is 10-100 ms: a compile caused by the patch would have happened well within this
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(admin_scrape(admin2).get(COMPILES, &[]), compiles, "a status-only change compiled");
    let out = c.kubectl(&["label", "rules.crd.alauda.io", &rule, "-n", &ns, "e2e-probe=1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    scrape_until(admin2, "a label change compiles", Duration::from_secs(10), |s| s.get(COMPILES, &[]) > compiles);
    drop(leader);
}
