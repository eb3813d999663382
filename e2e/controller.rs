//! `alb controller` against a real kube-apiserver (e2e/cluster/up, shared by the tests), real nginx and real
//! backend processes. There is no kubelet: Services are headless and their EndpointSlices point at backend
//! processes on this host's own address (the API server refuses loopback endpoint addresses); nginx listens
//! on 127.0.0.1 (and 127.0.0.2 for a second replica). Every test has its own namespace, ALB name and ports, so tests run in parallel.

use crate::harness::cluster::Cluster;
use crate::harness::{alb_bin, free_port, get, nginx_pids, Conn, Proc};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn tempdir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix(prefix).tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// The test host's address (e2e/testhost/up): the API server refuses loopback EndpointSlice addresses, so the
/// backends run in a network namespace of our own, reached over a veth pair; traffic never leaves the machine.
fn host_ip() -> String {
    static IP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IP.get_or_init(|| {
        let out =
            Command::new(crate::harness::repo_dir().join("e2e/testhost/up")).output().expect("run e2e/testhost/up");
        assert!(out.status.success(), "e2e/testhost/up: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
    })
    .clone()
}

/// `alb echo-server` on the test host [`host_ip`] (a real backend process in its network namespace).
struct Backend {
    port: u16,
    _proc: Proc,
}

impl Backend {
    fn start(name: &str) -> Backend {
        let ip = host_ip();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", "alb-e2e"])
            .arg(alb_bin())
            .args(["echo-server", "--listen", &format!("{ip}:0"), "--name", name])
            .stdout(Stdio::piped());
        let mut proc = Proc::spawn(&format!("backend {name}"), &mut cmd);
        let mut line = String::new();
        BufReader::new(proc.child.stdout.take().expect("stdout")).read_line(&mut line).expect("echo-server address");
        let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).expect("echo-server port");
        Backend { port, _proc: proc }
    }
}

/// Polls `f` until it gives `Some` or `timeout` passes (then panics with `what`).
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx master + worker pids once no worker of an earlier reload is still exiting.
fn stable_pids(runtime: &Path) -> Vec<i32> {
    let mut last = nginx_pids(runtime);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = nginx_pids(runtime);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// One `alb controller` process.
struct Controller {
    proc: Proc,
    runtime: PathBuf,
    admin_port: u16,
    api_port: u16,
    identity: String,
}

struct ControllerOpts<'a> {
    ns: &'a str,
    alb: &'a str,
    pod: &'a str,
    runtime: &'a Path,
    api_port: u16,
    bind: &'a str,
    spawn_nginx: bool,
    /// The data plane's metrics port (part of nginx.conf: a sidecar's must stay the same across restarts).
    metrics_port: u16,
}

impl Controller {
    fn start(c: &Cluster, o: ControllerOpts<'_>) -> Controller {
        let admin_port = free_port();
        let mut cmd = Command::new(alb_bin());
        cmd.arg("controller")
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .args(["--alb-name", o.alb, "--alb-namespace", o.ns, "--pod-name", o.pod])
            .arg("--runtime-dir")
            .arg(o.runtime)
            .args(["--api-port", &o.api_port.to_string(), "--bind", o.bind, "--workers", "2"])
            .args(["--admin-port", &admin_port.to_string(), "--metrics-port", &o.metrics_port.to_string()])
            .args(["--lease-duration", "4", "--renew-deadline", "2", "--retry-period", "1"])
            .env("ALB_LOG", "info")
            .env_remove("KUBECONFIG");
        if o.spawn_nginx {
            cmd.arg("--spawn-nginx");
        }
        let proc = Proc::spawn(&format!("alb controller {}", o.pod), &mut cmd);
        proc.wait_log("applied by", Duration::from_secs(30));
        Controller {
            proc,
            runtime: o.runtime.to_path_buf(),
            admin_port,
            api_port: o.api_port,
            identity: format!("{}/{}/{}", o.ns, o.alb, o.pod),
        }
    }

    fn pids(&self) -> Vec<i32> {
        stable_pids(&self.runtime)
    }

    /// The data plane's `/status` (docs/policy.md "Policy API").
    fn dataplane_status(&self) -> serde_json::Value {
        let token = std::fs::read_to_string(self.runtime.join("policy-token")).unwrap_or_default();
        let auth = format!("Bearer {}", token.trim());
        crate::harness::request(self.api_port, "GET", "/status", &[("Authorization", &auth)], b"").json()
    }

    fn logged(&self, needle: &str) -> bool {
        self.proc.logs().iter().any(|l| l.contains(needle))
    }
}

/// A test's namespace, ALB (ALB2 with address 127.0.0.1, http Ingress port `http_port`) and backends.
struct Env {
    c: &'static Cluster,
    ns: String,
    alb: String,
    http_port: u16,
}

impl Env {
    fn new(prefix: &str, projects: &str) -> Env {
        Env::new_on(Cluster::shared(), prefix, projects)
    }

    fn new_on(c: &'static Cluster, prefix: &str, projects: &str) -> Env {
        let ns = c.namespace(prefix);
        let alb = format!("alb-{prefix}");
        let http_port = free_port();
        c.apply(&format!(
            "apiVersion: crd.alauda.io/v2beta1\nkind: ALB2\nmetadata: {{name: {alb}, namespace: {ns}}}\nspec:\n  address: 127.0.0.1\n  type: nginx\n  config: {{ingressHTTPPort: {http_port}, ingressHTTPSPort: 0, projects: {projects}}}\n"
        ));
        Env { c, ns, alb, http_port }
    }

    fn controller(&self, pod: &str, runtime: &Path, bind: &str) -> Controller {
        Controller::start(
            self.c,
            ControllerOpts {
                ns: &self.ns,
                alb: &self.alb,
                pod,
                runtime,
                api_port: free_port(),
                bind,
                spawn_nginx: true,
                metrics_port: free_port(),
            },
        )
    }

    /// A headless Service `name` (port 80) whose EndpointSlice holds the backend (on [`host_ip`]).
    fn service(&self, name: &str, b: &Backend) {
        let ns = &self.ns;
        self.c.apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  clusterIP: None\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}\n",
            port = b.port,
            ip = host_ip()
        ));
    }

    /// An Ingress in `ns` with one Prefix path per `(path, service)`; `class` sets `spec.ingressClassName`.
    /// Tests name their ALB as class: an Ingress without class is claimed by every ALB of the shared cluster.
    fn ingress_yaml(&self, ns: &str, name: &str, class: Option<&str>, paths: &[(&str, &str)]) -> String {
        let class = class.map(|c| format!("  ingressClassName: {c}\n")).unwrap_or_default();
        let mut y = format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{class}  rules:\n  - http:\n      paths:\n"
        );
        for (path, svc) in paths {
            y.push_str(&format!(
                "      - path: {path}\n        pathType: Prefix\n        backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}\n"
            ));
        }
        y
    }

    /// Rules generated from Ingress `ing_ns/name`.
    fn rules_of(&self, ing_ns: &str, name: &str) -> Vec<serde_json::Value> {
        let sel = format!("alb2.cpaas.io/source-name={name},alb2.cpaas.io/source-ns={ing_ns}");
        let v = self.c.get_json(&["rules", "-n", &self.ns, "-l", &sel]);
        v["items"].as_array().cloned().unwrap_or_default()
    }

    fn lease_holder(&self) -> String {
        let out = self.c.kubectl(&["get", "lease", &self.alb, "-n", &self.ns, "-o", "jsonpath={.spec.holderIdentity}"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// GET over a fresh connection to `addr:port` (any loopback address); `(status, x-backend, x-alb-err-reason)`.
fn get_at(addr: &str, port: u16, path: &str) -> Option<(u16, String, String)> {
    let mut s = std::net::TcpStream::connect((addr, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, _) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut backend = String::new();
    let mut reason = String::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("x-backend") {
                backend = v.trim().to_string();
            } else if k.eq_ignore_ascii_case("x-alb-err-reason") {
                reason = v.trim().to_string();
            }
        }
    }
    Some((status, backend, reason))
}

fn routes_to(port: u16, path: &str, backend: &str) -> bool {
    get_at("127.0.0.1", port, path).is_some_and(|(s, b, _)| s == 200 && b == backend)
}

#[test]
fn ingress_becomes_rules_routes_edits_without_reload_and_deletes() {
    let env = Env::new("ctl-ing", "[ALL_ALL]");
    let (a, b, k) = (Backend::start("a"), Backend::start("b"), Backend::start("keep"));
    env.service("svc-a", &a);
    env.service("svc-b", &b);
    env.service("svc-keep", &k);
    let runtime = tempdir("alb-e2e-ctl-");
    let ctl = env.controller("p1", runtime.path(), "127.0.0.1");
    let port = env.http_port;

    // The readiness probe turns 200 once the first policy is applied.
    assert_eq!(get(ctl.admin_port, "/readyz", &[]).status, 200);
    assert_eq!(get(ctl.admin_port, "/healthz", &[]).status, 200);

    // A second Ingress stays on the port, so a deleted path answers "no rule match" (not "empty policy").
    env.c.apply(&env.ingress_yaml(&env.ns, "keep", Some(&env.alb), &[("/keep", "svc-keep")]));
    let t = Instant::now();
    while !routes_to(port, "/keep", "keep") {
        // The first Ingress creates the Frontend (a reload) and then its Rules; say why if it never routes.
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "/keep not routed after 20 s; controller log:\n{}",
            ctl.proc.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let started = Instant::now();
    env.c.apply(&env.ingress_yaml(&env.ns, "web", Some(&env.alb), &[("/a", "svc-a")]));
    wait_for("/a routed to a within 2 s", Duration::from_secs(2), || routes_to(port, "/a/x", "a").then_some(()));
    eprintln!("ingress routed {} ms after kubectl apply returned", started.elapsed().as_millis());
    let rules = env.rules_of(&env.ns, "web");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["spec"]["dslx"][0]["values"][0], serde_json::json!(["STARTS_WITH", "/a"]));
    assert_eq!(rules[0]["spec"]["source"]["type"], "ingress");
    // Ingress status carries the ALB address and port.
    let st = wait_for("ingress status", Duration::from_secs(5), || {
        let v = env.c.get_json(&["ingress", "web", "-n", &env.ns]);
        let lb = v["status"]["loadBalancer"]["ingress"].clone();
        lb.as_array().is_some_and(|a| !a.is_empty()).then_some(lb)
    });
    assert_eq!(st[0]["ip"], "127.0.0.1", "{st}");
    assert_eq!(st[0]["ports"][0]["port"], serde_json::json!(port), "{st}");

    // Someone else's label and annotation on the generated Rule: the update below keeps them (the controller
    // caches a lean copy of each Rule and writes an update over the object as the API server holds it).
    let rule_name = rules[0]["metadata"]["name"].as_str().unwrap().to_string();
    let uid = rules[0]["metadata"]["uid"].clone();
    for (verb, kv) in [("label", "team=payments"), ("annotate", "example.com/owner=alice")] {
        let out = env.c.kubectl(&[verb, "rule", &rule_name, "-n", &env.ns, kv]);
        assert!(out.status.success(), "kubectl {verb}: {}", String::from_utf8_lossy(&out.stderr));
    }

    // Edit the path: rerouted, no nginx reload; the pass plans the edited Ingress only ("keep" is unchanged).
    let pids = ctl.pids();
    let mark = ctl.proc.log_len();
    env.c.apply(&env.ingress_yaml(&env.ns, "web", Some(&env.alb), &[("/b", "svc-b")]));
    wait_for("/b routed to b", Duration::from_secs(2), || routes_to(port, "/b", "b").then_some(()));
    let rules = env.rules_of(&env.ns, "web");
    assert_eq!(rules.len(), 1, "{rules:?}");
    let m = &rules[0]["metadata"];
    assert_eq!((m["name"].as_str(), &m["uid"]), (Some(rule_name.as_str()), &uid), "updated in place: {m}");
    assert_eq!(rules[0]["spec"]["dslx"][0]["values"][0], serde_json::json!(["STARTS_WITH", "/b"]));
    assert_eq!(m["labels"]["team"], "payments", "foreign label kept: {m}");
    assert_eq!(m["annotations"]["example.com/owner"], "alice", "foreign annotation kept: {m}");
    assert_eq!(m["ownerReferences"][0]["kind"], "Frontend", "{m}");
    ctl.proc.wait_log_after(
        mark,
        "ingress pass: 1 of 2 claimed Ingresses planned (1 unchanged",
        Duration::from_secs(2),
    );
    let (status, _, reason) = get_at("127.0.0.1", port, "/a/x").unwrap();
    assert_eq!((status, reason.as_str()), (404, "InvalidUpstream : no rule match"));
    assert_eq!(ctl.pids(), pids, "rule changes do not reload nginx");
    // Synced again (a new generation): the first Event of "web" counts two, no second Event is made.
    let synced = wait_for("one Synced Event of web counting 2", Duration::from_secs(5), || {
        let ev = env.c.get_json(&["events.v1.events.k8s.io", "-n", &env.ns]);
        let of_web: Vec<serde_json::Value> = ev["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "Synced" && e["regarding"]["name"] == "web")
            .cloned()
            .collect();
        (of_web.iter().any(|e| e["series"]["count"] == 2)).then_some(of_web)
    });
    assert_eq!(synced.len(), 1, "{synced:?}");
    assert_eq!(synced[0]["reportingController"], format!("alb2-{}", env.alb), "{synced:?}");

    // Delete: the path is gone, the other Ingress keeps working.
    env.c.delete(&env.ingress_yaml(&env.ns, "web", Some(&env.alb), &[("/b", "svc-b")]));
    let (status, reason) = wait_for("/b gone", Duration::from_secs(2), || {
        get_at("127.0.0.1", port, "/b").filter(|r| r.0 == 404).map(|r| (r.0, r.2))
    });
    assert_eq!((status, reason.as_str()), (404, "InvalidUpstream : no rule match"));
    wait_for("rules of web deleted", Duration::from_secs(5), || env.rules_of(&env.ns, "web").is_empty().then_some(()));
    assert!(routes_to(port, "/keep", "keep"));
    assert_eq!(ctl.pids(), pids, "no reload either when an Ingress goes away");
    // Events: Synced on the Ingress.
    let ev = env.c.get_json(&["events.v1.events.k8s.io", "-n", &env.ns]);
    let synced =
        ev["items"].as_array().unwrap().iter().any(|e| e["reason"] == "Synced" && e["regarding"]["name"] == "keep");
    assert!(synced, "no Synced event: {ev}");
}

fn frontend_yaml(ns: &str, alb: &str, name: &str, port: u16) -> String {
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Frontend\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{alb2.cpaas.io/name: {alb}}}\nspec:\n  port: {port}\n  protocol: http\n"
    )
}

fn rule_yaml(ns: &str, alb: &str, ft: &str, name: &str, dslx: &str, svc: &str) -> String {
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Rule\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{alb2.cpaas.io/name: {alb}, alb2.cpaas.io/frontend: {ft}}}\nspec:\n  priority: 5\n  dslx: {dslx}\n  serviceGroup:\n    services: [{{name: {svc}, namespace: {ns}, port: 80}}]\n"
    )
}

fn accepted(c: &Cluster, ns: &str, rule: &str) -> Option<serde_json::Value> {
    let v = c.get_json(&["rule", rule, "-n", ns]);
    v["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Accepted").cloned()
}

#[test]
fn rules_match_on_header_cookie_param_src_ip_and_bad_regex_is_reported() {
    let env = Env::new("ctl-rule", "[ALL_ALL]");
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    env.service("svc-a", &a);
    env.service("svc-b", &b);
    let runtime = tempdir("alb-e2e-ctl-");
    let ctl = env.controller("p1", runtime.path(), "127.0.0.1");
    let port = free_port();
    let (ns, alb) = (env.ns.as_str(), env.alb.as_str());
    let dslx = r#"[{type: URL, values: [[STARTS_WITH, /vip]]}, {type: HEADER, key: x-user, values: [[EQ, bob]]}, {type: COOKIE, key: session, values: [[EQ, s1]]}, {type: PARAM, key: v, values: [[EQ, "2"]]}, {type: SRC_IP, values: [[RANGE, 127.0.0.1, 127.0.0.9]]}]"#;
    env.c.apply(
        &[
            frontend_yaml(ns, alb, "ft", port),
            rule_yaml(ns, alb, "ft", "vip", dslx, "svc-a"),
            rule_yaml(ns, alb, "ft", "plain", "[{type: URL, values: [[STARTS_WITH, /]]}]", "svc-b"),
        ]
        .join("---\n"),
    );
    ctl.proc.wait_log(&format!("listening on 127.0.0.1:{port}"), Duration::from_secs(10));
    let vip_headers = [("X-User", "bob"), ("Cookie", "session=s1"), ("X-Real-IP", "127.0.0.5")];
    // The new listener is bound once nginx has processed the HUP: until then connections are refused.
    wait_for("vip routed to a", Duration::from_secs(5), || {
        let r = Conn::open(port).ok()?.send("GET", "/vip?v=2", &vip_headers, b"").ok()?;
        (r.backend() == "a").then_some(())
    });
    // The two Rules may reach the controller in separate watch events: wait for the second one too, in every
    // worker (a request that saw it reached one of them; the others apply the same policy milliseconds later).
    wait_for("the catch-all rule", Duration::from_secs(5), || {
        (get(port, "/plain", &[]).backend() == "b").then_some(())
    });
    let settled = |s: &serde_json::Value| {
        let ws = s["workers"].as_array().cloned().unwrap_or_default();
        !ws.is_empty() && ws.iter().all(|w| w["digest"] == s["stored"]["digest"])
    };
    wait_for("every worker applied the stored policy", Duration::from_secs(5), || {
        settled(&ctl.dataplane_status()).then_some(())
    });
    assert_eq!(get(port, "/vip?v=3", &vip_headers).backend(), "b", "param must match");
    assert_eq!(
        get(port, "/vip?v=2", &[("X-User", "bob"), ("Cookie", "session=s1"), ("X-Real-IP", "10.0.0.1")]).backend(),
        "b"
    );
    assert_eq!(get(port, "/vip?v=2", &[("X-User", "bob"), ("X-Real-IP", "127.0.0.5")]).backend(), "b", "cookie");
    let ok = wait_for("Accepted=True on vip", Duration::from_secs(5), || accepted(env.c, ns, "vip"));
    assert_eq!(ok["status"], "True", "{ok}");

    // A bad regex: left out with a reason, everything else unaffected.
    let pids = ctl.pids();
    env.c.apply(&rule_yaml(ns, alb, "ft", "bad", "[{type: URL, values: [[REGEX, \"(\"]]}]", "svc-a"));
    let cond = wait_for("Accepted=False on bad", Duration::from_secs(5), || {
        accepted(env.c, ns, "bad").filter(|c| c["status"] == "False")
    });
    assert_eq!(cond["reason"], "InvalidRegex", "{cond}");
    assert!(cond["message"].as_str().unwrap().contains("spec.dslx[0]"), "{cond}");
    let ev = wait_for("Warning event for bad", Duration::from_secs(5), || {
        let v = env.c.get_json(&["events.v1.events.k8s.io", "-n", ns]);
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["regarding"]["name"] == "bad" && e["type"] == "Warning")
            .cloned()
    });
    assert_eq!(ev["reason"], "InvalidRegex", "{ev}");
    assert_eq!(ev["reportingController"], format!("alb2-{alb}"), "{ev}");
    assert!(ctl.logged("rejected Rule"), "the reject is logged");
    assert_eq!(get(port, "/vip?v=2", &vip_headers).backend(), "a");
    assert_eq!(get(port, "/other", &[]).backend(), "b");
    assert_eq!(ctl.pids(), pids);

    // Fixed: accepted again.
    env.c.apply(&rule_yaml(ns, alb, "ft", "bad", "[{type: URL, values: [[REGEX, \"^/re+\"]]}]", "svc-a"));
    wait_for("bad accepted once fixed", Duration::from_secs(5), || {
        accepted(env.c, ns, "bad").filter(|c| c["status"] == "True")
    });
}

#[test]
fn one_leader_translates_both_serve_and_the_other_takes_over() {
    let env = Env::new("ctl-lead", "[ALL_ALL]");
    let a = Backend::start("a");
    env.service("svc-a", &a);
    let (r1, r2) = (tempdir("alb-e2e-ctl-"), tempdir("alb-e2e-ctl-"));
    // Two replicas: their nginx listen on two loopback addresses, same port.
    let mut c1 = env.controller("p1", r1.path(), "127.0.0.1");
    wait_for("p1 leads", Duration::from_secs(10), || (env.lease_holder() == c1.identity).then_some(()));
    let c2 = env.controller("p2", r2.path(), "127.0.0.2");
    let port = env.http_port;

    env.c.apply(&env.ingress_yaml(&env.ns, "one", Some(&env.alb), &[("/one", "svc-a")]));
    wait_for("/one on both replicas", Duration::from_secs(5), || {
        let both = ["127.0.0.1", "127.0.0.2"]
            .iter()
            .all(|addr| get_at(addr, port, "/one").is_some_and(|r| r.0 == 200 && r.1 == "a"));
        both.then_some(())
    });
    assert_eq!(env.rules_of(&env.ns, "one").len(), 1);
    assert!(c1.logged("created Rule"), "the leader translates");
    assert!(!c2.logged("created Rule") && !c2.logged("became leader"), "the follower does not: {:?}", c2.proc.logs());
    assert_eq!(env.lease_holder(), c1.identity);

    // The leader goes away: the follower takes the Lease and translates new Ingresses.
    c1.proc.terminate();
    wait_for("p2 leads", Duration::from_secs(10), || (env.lease_holder() == c2.identity).then_some(()));
    c2.proc.wait_log("became leader", Duration::from_secs(5));
    env.c.apply(&env.ingress_yaml(&env.ns, "two", Some(&env.alb), &[("/two", "svc-a")]));
    wait_for("/two routed by p2", Duration::from_secs(5), || {
        get_at("127.0.0.2", port, "/two").is_some_and(|r| r.0 == 200 && r.1 == "a").then_some(())
    });
    assert_eq!(env.rules_of(&env.ns, "two").len(), 1);
    assert!(c2.logged("created Rule"));
}

#[test]
fn ingresses_of_another_class_or_project_are_left_alone() {
    let env = Env::new("ctl-class", "[p1]");
    let a = Backend::start("a");
    env.service("svc-a", &a);
    let other_ns = env.c.namespace("ctl-class-p2");
    let label = |ns: &str, p: &str| {
        let out = env.c.kubectl(&["label", "namespace", ns, &format!("cpaas.io/project={p}"), "--overwrite"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    label(&env.ns, "p1");
    label(&other_ns, "p2");
    let runtime = tempdir("alb-e2e-ctl-");
    let _ctl = env.controller("p1", runtime.path(), "127.0.0.1");
    let port = env.http_port;

    env.c.apply(&env.ingress_yaml(&env.ns, "other-class", Some("some-other-alb"), &[("/x", "svc-a")]));
    env.c.apply(&env.ingress_yaml(&other_ns, "other-project", Some(&env.alb), &[("/y", "svc-a")]));
    env.c.apply(&env.ingress_yaml(&env.ns, "ours", Some(&env.alb), &[("/z", "svc-a")]));
    wait_for("our Ingress routed", Duration::from_secs(5), || routes_to(port, "/z", "a").then_some(()));
    std::thread::sleep(Duration::from_millis(500));
    assert!(env.rules_of(&env.ns, "other-class").is_empty(), "another class is not ours");
    assert!(env.rules_of(&other_ns, "other-project").is_empty(), "project p2 is not served");
    assert_eq!(get_at("127.0.0.1", port, "/x").map(|r| r.0), Some(404));
    let st = env.c.get_json(&["ingress", "other-class", "-n", &env.ns]);
    assert!(st["status"]["loadBalancer"]["ingress"].is_null(), "status of a foreign Ingress untouched: {st}");

    // Switching the class to ours makes it ours.
    env.c.apply(&env.ingress_yaml(&env.ns, "other-class", Some(&env.alb), &[("/x", "svc-a")]));
    wait_for("/x routed once claimed", Duration::from_secs(5), || routes_to(port, "/x", "a").then_some(()));
    // And away again: its Rules are removed.
    env.c.apply(&env.ingress_yaml(&env.ns, "other-class", Some("some-other-alb"), &[("/x", "svc-a")]));
    wait_for("rules removed when unclaimed", Duration::from_secs(5), || {
        env.rules_of(&env.ns, "other-class").is_empty().then_some(())
    });
    // ... and our address leaves its status (entries of other controllers would stay).
    wait_for("our address removed from the status", Duration::from_secs(5), || {
        let st = env.c.get_json(&["ingress", "other-class", "-n", &env.ns]);
        let entries = st["status"]["loadBalancer"]["ingress"].as_array().cloned().unwrap_or_default();
        (!entries.iter().any(|e| e["ip"] == "127.0.0.1")).then_some(())
    });
}

#[test]
fn sidecar_nginx_survives_a_controller_restart_without_failed_requests() {
    let env = Env::new("ctl-side", "[ALL_ALL]");
    let a = Backend::start("a");
    env.service("svc-a", &a);
    // The sidecar: nginx run by `alb dataplane` in the runtime dir the controller writes nginx.conf into.
    let dp = crate::harness::Dataplane::start(0);
    let start = |pod: &str| {
        Controller::start(
            env.c,
            ControllerOpts {
                ns: &env.ns,
                alb: &env.alb,
                pod,
                runtime: dp.runtime.path(),
                api_port: dp.api_port,
                bind: "127.0.0.1",
                spawn_nginx: false,
                metrics_port: dp.metrics_port,
            },
        )
    };
    let mut ctl = start("p1");
    let port = env.http_port;
    env.c.apply(&env.ingress_yaml(&env.ns, "web", Some(&env.alb), &[("/", "svc-a")]));
    wait_for("routed through the sidecar", Duration::from_secs(5), || routes_to(port, "/", "a").then_some(()));
    ctl.proc.wait_log("nginx reloaded: listeners changed", Duration::from_secs(1));
    // A second Ingress to a Service of its own: its Rule and group travel as a delta, the first Rule as a run
    // (to svc-a as well, the two Rules could share one group named after either, and the first Rule change too).
    let b = Backend::start("b");
    env.service("svc-b", &b);
    env.c.apply(&env.ingress_yaml(&env.ns, "two", Some(&env.alb), &[("/two", "svc-b")]));
    wait_for("/two routed", Duration::from_secs(5), || routes_to(port, "/two", "b").then_some(()));
    let digest = |s: &serde_json::Value| s["stored"]["digest"].as_str().unwrap_or("").to_string();
    // The policy once the first controller has settled (the leader may still push after the first route works,
    // e.g. when its last writes come back through the watches): unchanged for 1 s.
    let mut before = digest(&dp.status());
    let t = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = digest(&dp.status());
        if now == before {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "the first controller's policy does not settle");
        before = now;
    }
    let pids = stable_pids(dp.runtime.path());
    let rule_names = || {
        let mut names: Vec<String> = ["web", "two"]
            .iter()
            .flat_map(|ing| env.rules_of(&env.ns, ing))
            .map(|r| r["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        names.sort();
        names
    };
    let rules_before = rule_names();
    assert_eq!(rules_before.len(), 2, "{rules_before:?}");
    // The data plane holds a whole policy and deltas after it: the restarted controller reads that chain.
    let held = dp.api("GET", "/policy", Some(&dp.token.clone()), b"");
    assert!(held.header("X-ALB-Policy-Deltas").is_some(), "no delta since the last whole policy: {:?}", held.headers);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut conn = Conn::open(port).expect("connect");
            while !stop.load(Ordering::Relaxed) {
                match conn.send("GET", "/", &[], b"") {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed: {other:?}");
                        conn = Conn::open(port).expect("reconnect");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    ctl.proc.terminate();
    let ctl2 = start("p2");
    assert!(ctl2.logged("already holds policy"), "{:?}", ctl2.proc.logs());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(
        digest(&dp.status()),
        before,
        "same policy, same digest after the restart; first controller:\n{}\nsecond:\n{}",
        ctl.proc.logs().join("\n"),
        ctl2.proc.logs().join("\n")
    );
    assert_eq!(stable_pids(dp.runtime.path()), pids, "nginx was not reloaded or restarted");
    // The new leader found the Rules of the first: it neither made them again nor replaced them.
    assert_eq!(rule_names(), rules_before, "{:?}", ctl2.proc.logs());
    assert!(!ctl2.logged("created Rule"), "{:?}", ctl2.proc.logs());
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 0 && failed == 0, "{ok} ok, {failed} failed");
    drop(ctl2);
    drop(ctl);
}

#[test]
fn a_restarted_nginx_gets_the_policy_again() {
    let env = Env::new("ctl-ngx", "[ALL_ALL]");
    let a = Backend::start("a");
    env.service("svc-a", &a);
    let runtime = tempdir("alb-e2e-ctl-");
    let ctl = env.controller("p1", runtime.path(), "127.0.0.1");
    let port = env.http_port;
    env.c.apply(&env.ingress_yaml(&env.ns, "web", Some(&env.alb), &[("/", "svc-a")]));
    let t = Instant::now();
    while !routes_to(port, "/", "a") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not routed after 10 s; controller log:\n{}",
            ctl.proc.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // nginx stops (graceful QUIT): the controller starts it again and pushes the policy into the empty dict.
    let master = ctl.pids()[0];
    let skip = ctl.proc.log_len();
    let out = Command::new("kill").args(["-QUIT", &master.to_string()]).output().unwrap();
    assert!(out.status.success());
    ctl.proc.wait_log_after(skip, "nginx started", Duration::from_secs(10));
    wait_for("routed again", Duration::from_secs(2), || routes_to(port, "/", "a").then_some(()));
    assert_ne!(ctl.pids()[0], master);
}

/// The API server goes away for 30 s under load: nginx keeps serving the last policy with no failed request;
/// once it is back the controller's watches resume and a change made then is applied.
#[test]
fn api_server_outage_keeps_serving_and_resyncs_after() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let c = Cluster::private("outage");
    let env = Env::new_on(c, "ctl-outage", "[ALL_ALL]");
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    env.service("svc-a", &a);
    env.service("svc-b", &b);
    let runtime = tempdir("alb-e2e-outage-");
    let ctl = env.controller("pod-0", runtime.path(), "127.0.0.1");
    let ing = |svc: &str| env.ingress_yaml(&env.ns, "web", Some(&env.alb), &[("/one", svc)]);
    c.apply(&ing("svc-a"));
    let port = env.http_port;
    wait_for("route to a", Duration::from_secs(10), || routes_to(port, "/one", "a").then_some(()));
    let pids = ctl.pids();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut conn = crate::harness::Conn::open(port).expect("connect");
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match conn.send("GET", "/one", &[], b"") {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed during outage: {other:?}");
                            conn = crate::harness::Conn::open(port).expect("reconnect");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();

    let args = c.stop_apiserver();
    std::thread::sleep(Duration::from_secs(30));
    let during = ok.load(Ordering::Relaxed);
    c.start_apiserver(&args);
    let back = Instant::now();
    c.apply(&ing("svc-b"));
    wait_for("the change made after the outage", Duration::from_secs(60), || {
        routes_to(port, "/one", "b").then_some(())
    });
    eprintln!(
        "outage: {during} requests served while the API server was down; change applied {:?} after restart",
        back.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread");
    }
    assert!(during > 1000, "load ran during the outage: {during}");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no failed request");
    assert_eq!(ctl.pids(), pids, "nginx untouched");
    c.down();
}

/// Basic auth through the API server: only the referenced Secret is watched; editing it takes effect live.
#[test]
fn basic_auth_secret_referenced_by_a_rule_is_watched() {
    let env = Env::new("ctl-auth", "[ALL_ALL]");
    let a = Backend::start("a");
    env.service("svc-a", &a);
    let runtime = tempdir("alb-e2e-ctl-");
    let ctl = env.controller("p1", runtime.path(), "127.0.0.1");
    let port = free_port();
    let (ns, alb) = (env.ns.as_str(), env.alb.as_str());
    let secret = |line: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: {ns}}}\ntype: Opaque\nstringData:\n  auth: \"{line}\"\n")
    };
    let mut rule = rule_yaml(ns, alb, "ft", "private", "[{type: URL, values: [[STARTS_WITH, /]]}]", "svc-a");
    rule.push_str(&format!(
        "  config: {{auth: {{basic: {{realm: Shop, secret: {ns}/users, secret_type: auth-file}}}}}}\n"
    ));
    env.c.apply(
        &[secret("foo:$apr1$W60B7kxR$kC.He7pPyJM2io6VH2VNS."), frontend_yaml(ns, alb, "ft", port), rule].join("---\n"),
    );
    ctl.proc.wait_log(&format!("listening on 127.0.0.1:{port}"), Duration::from_secs(10));
    let good = crate::l7::basic("foo", "bar");
    wait_for("auth rule served", Duration::from_secs(5), || {
        let r = Conn::open(port).ok()?.send("GET", "/", &[("Authorization", &good)], b"").ok()?;
        (r.status == 200 && r.backend() == "a").then_some(())
    });
    let r = get(port, "/", &[]);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("www-authenticate").unwrap_or("").contains("Shop"), "{r:?}");
    // The Secret changes (user renamed): the watch sees it, the old credentials stop working.
    env.c.apply(&secret("bob:$apr1$W60B7kxR$kC.He7pPyJM2io6VH2VNS."));
    let bob = crate::l7::basic("bob", "bar");
    // Each nginx worker applies the policy on its own poll: wait until a request sees both sides of the change,
    // then every worker must have it (a fresh connection may land on any worker).
    // Each nginx worker applies the policy on its own poll and a fresh connection may land on any worker: the
    // change is in when several requests in a row all see it.
    wait_for("the edited Secret applied", Duration::from_secs(10), || {
        (0..5)
            .all(|_| {
                get(port, "/", &[("Authorization", &bob)]).status == 200
                    && get(port, "/", &[("Authorization", &good)]).status == 401
            })
            .then_some(())
    });
}
