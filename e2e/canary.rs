//! ingress-nginx canary, affinity and load-balancing annotations on Ingresses, through `alb standalone` (the
//! in-memory translation), real nginx and real echo backends.

use crate::harness::{free_port, get, Backend, Conn, Standalone};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A Service `name` in `shop` (port 80 named `http`) whose ready endpoints are `backends` (one EndpointSlice
/// each: every backend has its own port on 127.0.0.1).
fn service(name: &str, backends: &[&Backend]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n"
    );
    for (i, b) in backends.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: shop\n  labels: {{kubernetes.io/service-name: {name}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n",
            port = b.port
        ));
    }
    out
}

/// An Ingress `name` for `host` + Prefix `path` → `svc`, with annotations (`key: value` YAML lines).
fn ingress(name: &str, host: &str, path: &str, svc: &str, annotations: &[(&str, &str)]) -> String {
    let annos: String = annotations
        .iter()
        .map(|(k, v)| format!("    nginx.ingress.kubernetes.io/{k}: {}\n", serde_json::to_string(v).unwrap()))
        .collect();
    let annos = if annos.is_empty() { String::new() } else { format!("  annotations:\n{annos}") };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: shop\n{annos}spec:\n  rules:\n\
         \x20   - host: {host}\n      http:\n        paths:\n          - {{path: {path}, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n"
    )
}

fn start(files: &[(&str, String)], port: u16) -> Standalone {
    Standalone::start_with(files, &["--ingress-http-port", &port.to_string()], &[])
}

/// `n` requests on one keep-alive connection: answers per backend (`status <code>` when not 200).
fn tally(port: u16, n: usize, path: &str, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
    let mut conn = Conn::open(port).expect("connect");
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let r = conn.send("GET", path, headers, b"").expect("request");
        let key = if r.status == 200 { r.backend().to_string() } else { format!("status {}", r.status) };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

fn only(port: u16, n: usize, path: &str, headers: &[(&str, &str)], backend: &str) {
    let t = tally(port, n, path, headers);
    assert_eq!(t, BTreeMap::from([(backend.to_string(), n)]), "{headers:?}");
}

/// Polls until `f` holds (a changed manifest applies within a few seconds).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "{what}: not after 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Binomial check: `k` of `n` within 5 standard deviations of `p`.
fn assert_share(k: usize, n: usize, p: f64, what: &str) {
    let (nf, kf) = (n as f64, k as f64);
    let sd = (nf * p * (1.0 - p)).sqrt();
    assert!((kf - nf * p).abs() <= 5.0 * sd, "{what}: {k} of {n}, expected {p} ± 5 sd ({sd:.1})");
}

const HOST: (&str, &str) = ("Host", "c.test");

#[test]
fn canary_by_weight_header_and_cookie() {
    let (main, can, other) = (Backend::start("main"), Backend::start("canary"), Backend::start("other"));
    let port = free_port();
    let svcs = [service("svc-main", &[&main]), service("svc-can", &[&can]), service("svc-other", &[&other])];
    let canary = |extra: &[(&str, &str)]| {
        let mut a = vec![("canary", "true")];
        a.extend_from_slice(extra);
        ingress("web-canary", "c.test", "/app", "svc-can", &a)
    };
    let gw = start(
        &[
            ("svc.yaml", svcs.join("---\n")),
            ("main.yaml", ingress("web", "c.test", "/app", "svc-main", &[])),
            ("other.yaml", ingress("other", "c.test", "/other", "svc-other", &[])),
            (
                "canary.yaml",
                canary(&[("canary-weight", "20"), ("canary-by-header", "X-Canary"), ("canary-by-cookie", "canary")]),
            ),
        ],
        port,
    );
    // Weight: 1000 requests, 20% to the canary (binomial tolerance).
    let t = tally(port, 1000, "/app/x", &[HOST]);
    let k = t.get("canary").copied().unwrap_or(0);
    assert_eq!(k + t.get("main").copied().unwrap_or(0), 1000, "{t:?}");
    eprintln!("canary-weight 20: {t:?}");
    assert_share(k, 1000, 0.2, "canary-weight 20");
    // Header: always → canary, never → main (over the cookie), other values fall through to the cookie.
    only(port, 50, "/app/x", &[HOST, ("X-Canary", "always")], "canary");
    only(port, 50, "/app/x", &[HOST, ("X-Canary", "never"), ("Cookie", "canary=always")], "main");
    only(port, 50, "/app/x", &[HOST, ("X-Canary", "always"), ("Cookie", "canary=never")], "canary");
    // Cookie: always → canary, never → main.
    only(port, 50, "/app/x", &[HOST, ("Cookie", "a=1; canary=always")], "canary");
    only(port, 50, "/app/x", &[HOST, ("X-Canary", "maybe"), ("Cookie", "canary=always")], "canary");
    only(port, 50, "/app/x", &[HOST, ("Cookie", "canary=never")], "main");
    // Other paths of the host are not affected by the canary's header.
    only(port, 20, "/other", &[HOST, ("X-Canary", "always")], "other");

    // Weight 100 of a custom total of 400 (25%), no header/cookie.
    gw.change(|g| g.write("canary.yaml", &canary(&[("canary-weight", "100"), ("canary-weight-total", "400")])));
    let t = tally(port, 1000, "/app", &[HOST]);
    eprintln!("canary-weight 100 of 400: {t:?}");
    assert_share(t.get("canary").copied().unwrap_or(0), 1000, 0.25, "100 of 400");
    let t = tally(port, 400, "/app", &[HOST, ("X-Canary", "always")]);
    assert_share(t.get("canary").copied().unwrap_or(0), 400, 0.25, "no header Rule any more");
}

#[test]
fn canary_header_value_pattern_and_bad_values() {
    let (main, can, other) = (Backend::start("main"), Backend::start("canary"), Backend::start("other"));
    let port = free_port();
    let svcs = [service("svc-main", &[&main]), service("svc-can", &[&can]), service("svc-other", &[&other])];
    let canary = |extra: &[(&str, &str)]| {
        let mut a = vec![("canary", "true")];
        a.extend_from_slice(extra);
        ingress("web-canary", "c.test", "/app", "svc-can", &a)
    };
    let gw = start(
        &[
            ("svc.yaml", svcs.join("---\n")),
            ("main.yaml", ingress("web", "c.test", "/app", "svc-main", &[])),
            ("other.yaml", ingress("other", "c.test", "/other", "svc-other", &[])),
            ("canary.yaml", canary(&[("canary-by-header", "X-Version"), ("canary-by-header-value", "blue")])),
        ],
        port,
    );
    only(port, 30, "/app", &[HOST, ("X-Version", "blue")], "canary");
    only(port, 30, "/app", &[HOST, ("X-Version", "green")], "main");
    only(port, 30, "/app", &[HOST, ("X-Version", "always")], "main");
    only(port, 30, "/app", &[HOST], "main");

    gw.change(|g| {
        g.write(
            "canary.yaml",
            &canary(&[("canary-by-header", "X-Version"), ("canary-by-header-pattern", "^(blue|gr)")]),
        )
    });
    only(port, 30, "/app", &[HOST, ("X-Version", "green")], "canary");
    only(port, 30, "/app", &[HOST, ("X-Version", "blue2")], "canary");
    only(port, 30, "/app", &[HOST, ("X-Version", "red")], "main");

    // A value with quotes, braces, a semicolon and `$` is compared literally and never reaches nginx.conf.
    let odd = "a\"b;{c} $host";
    let pids = gw.pids();
    gw.change(|g| {
        g.write("canary.yaml", &canary(&[("canary-by-header", "X-Version"), ("canary-by-header-value", odd)]))
    });
    only(port, 20, "/app", &[HOST, ("X-Version", odd)], "canary");
    only(port, 20, "/app", &[HOST, ("X-Version", "a\"b;{c} c.test")], "main");
    assert_eq!(gw.pids(), pids, "no reload");
    let conf = std::fs::read_to_string(gw.runtime.path().join("conf/nginx.conf")).expect("nginx.conf");
    assert!(!conf.contains("a\"b") && !conf.contains("X-Version"), "annotation text in nginx.conf");

    // A bad value: a Warning naming key and value, nothing routed from the canary, other routes unaffected.
    let skip = gw.proc.log_len();
    gw.write("canary.yaml", &canary(&[("canary-weight", "abc"), ("canary-by-header", "X-Version")]));
    let line = gw.proc.wait_log_after(skip, "ingress shop/web-canary: InvalidAnnotation", Duration::from_secs(10));
    assert!(line.contains("canary-weight") && line.contains("\"abc\""), "{line}");
    eventually("bad canary routes nothing", || get(port, "/app", &[HOST, ("X-Version", "blue")]).backend() == "main");
    only(port, 30, "/app", &[HOST, ("X-Version", "green")], "main");
    only(port, 10, "/other", &[HOST], "other");
    // A bad pattern too.
    let skip = gw.proc.log_len();
    gw.write("canary.yaml", &canary(&[("canary-by-header", "X-Version"), ("canary-by-header-pattern", "(blue")]));
    let line = gw.proc.wait_log_after(skip, "ingress shop/web-canary: InvalidAnnotation", Duration::from_secs(10));
    assert!(line.contains("canary-by-header-pattern"), "{line}");

    // A canary without a main Ingress: a warning, nothing routed.
    let skip = gw.proc.log_len();
    gw.write("canary.yaml", &ingress("web-canary", "c.test", "/nomain", "svc-can", &[("canary", "true")]));
    gw.proc.wait_log_after(skip, "ingress shop/web-canary: CanaryWithoutMain", Duration::from_secs(10));
    assert_eq!(get(port, "/nomain", &[HOST]).status, 404, "a canary never routes on its own");
    only(port, 10, "/app", &[HOST], "main");
}

/// The first `Set-Cookie` of a response for `path`.
fn set_cookie(port: u16, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let r = get(port, path, headers);
    assert_eq!(r.status, 200, "{r:?}");
    (r.header("set-cookie").unwrap_or_else(|| panic!("no Set-Cookie: {r:?}")).to_string(), r.backend().to_string())
}

#[test]
fn affinity_cookie_and_upstream_hash_by() {
    let bs: Vec<Backend> = (0..3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let refs: Vec<&Backend> = bs.iter().collect();
    let port = free_port();
    let gw = start(
        &[
            ("svc.yaml", service("svc", &refs)),
            (
                "sticky.yaml",
                ingress(
                    "sticky",
                    "a.test",
                    "/app",
                    "svc",
                    &[
                        ("affinity", "cookie"),
                        ("affinity-mode", "persistent"),
                        ("session-cookie-name", "route"),
                        ("session-cookie-domain", "a.test"),
                        ("session-cookie-samesite", "Strict"),
                        ("session-cookie-secure", "true"),
                        ("session-cookie-max-age", "600"),
                        ("session-cookie-expires", "1200"),
                    ],
                ),
            ),
            ("plain.yaml", ingress("plain", "d.test", "/", "svc", &[("session-cookie-name", "ignored")])),
            ("hash.yaml", ingress("hash", "h.test", "/", "svc", &[("upstream-hash-by", "$http_x_user")])),
            ("bad.yaml", ingress("bad", "x.test", "/", "svc", &[("upstream-hash-by", "$request_uri")])),
        ],
        port,
    );
    // Cookie affinity: a new client gets the cookie with the configured attributes.
    let host = ("Host", "a.test");
    let (cookie, _) = set_cookie(port, "/app/x", &[host]);
    let (kv, attrs) = cookie.split_once("; ").expect("attributes");
    assert!(kv.starts_with("route=") && kv.len() > "route=".len(), "{cookie}");
    assert!(attrs.starts_with("Path=/app; Domain=a.test; SameSite=Strict; Max-Age=600; Expires="), "{cookie}");
    assert!(attrs.ends_with(" GMT; HttpOnly; Secure"), "{cookie}");
    // The same cookie → the same backend; many cookies → several backends.
    let mut seen = BTreeMap::new();
    for i in 0..30 {
        let c = format!("route=client-{i}");
        let t = tally(port, 20, "/app/x", &[host, ("Cookie", &c)]);
        assert_eq!(t.len(), 1, "{c}: {t:?}");
        *seen.entry(t.into_keys().next().unwrap()).or_insert(0) += 1;
    }
    assert!(seen.len() >= 2, "30 cookies on one backend: {seen:?}");
    let sticky = tally(port, 50, "/app", &[host, ("Cookie", kv)]);
    assert_eq!(sticky.len(), 1, "the issued cookie sticks: {sticky:?}");
    // Without affinity: round robin over the 3 backends, no cookie.
    let t = tally(port, 30, "/", &[("Host", "d.test")]);
    assert_eq!(t.len(), 3, "{t:?}");
    assert!(get(port, "/", &[("Host", "d.test")]).header("set-cookie").is_none());

    // upstream-hash-by $http_x_user: the same user → the same backend; users spread.
    let mut seen = BTreeMap::new();
    for i in 0..30 {
        let u = format!("user-{i}");
        let t = tally(port, 10, "/", &[("Host", "h.test"), ("X-User", &u)]);
        assert_eq!(t.len(), 1, "{u}: {t:?}");
        *seen.entry(t.into_keys().next().unwrap()).or_insert(0) += 1;
    }
    assert!(seen.len() >= 2, "30 users on one backend: {seen:?}");
    assert!(get(port, "/", &[("Host", "h.test"), ("X-User", "u")]).header("set-cookie").is_none());

    // An unsupported upstream-hash-by: a warning naming it; the Ingress still routes (round robin).
    let logs = gw.proc.logs();
    let line = logs.iter().find(|l| l.contains("ingress shop/bad: InvalidAnnotation")).expect("warning logged");
    assert!(line.contains("upstream-hash-by") && line.contains("$request_uri"), "{line}");
    assert!(logs.iter().any(|l| l.contains("ingress shop/sticky: AnnotationApproximated")), "persistent noted");
    assert_eq!(tally(port, 30, "/", &[("Host", "x.test")]).len(), 3);
}

#[test]
fn service_upstream_uses_the_cluster_ip() {
    let (vip, ep) = (Backend::start("cluster-ip"), Backend::start("endpoint"));
    let port = free_port();
    // ClusterIP 127.0.0.1 with the Service port = the port of `vip`; the endpoints are `ep`.
    let svc = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc, namespace: shop}}\nspec:\n  clusterIP: 127.0.0.1\n  ports: [{{name: http, port: {vport}, protocol: TCP}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-1\n  namespace: shop\n  labels: {{kubernetes.io/service-name: svc}}\n\
         addressType: IPv4\nports: [{{name: http, port: {eport}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n",
        vport = vip.port,
        eport = ep.port
    );
    let ing = |name: &str, host: &str, annos: &[(&str, &str)]| {
        ingress(name, host, "/", "svc", annos).replace("number: 80", &format!("number: {}", vip.port))
    };
    let gw = start(
        &[
            ("svc.yaml", svc),
            ("vip.yaml", ing("vip", "vip.test", &[("service-upstream", "true")])),
            ("eps.yaml", ing("eps", "eps.test", &[])),
            ("bad.yaml", ing("bad", "bad.test", &[("service-upstream", "yes")])),
        ],
        port,
    );
    only(port, 20, "/", &[("Host", "vip.test")], "cluster-ip");
    only(port, 20, "/", &[("Host", "eps.test")], "endpoint");
    only(port, 20, "/", &[("Host", "bad.test")], "endpoint");
    let line = gw.proc.wait_log("ingress shop/bad: InvalidAnnotation", Duration::from_secs(5));
    assert!(line.contains("service-upstream") && line.contains("\"yes\""), "{line}");
}

/// The test host's address (e2e/testhost/up; see e2e/controller.rs: the API server refuses loopback endpoints).
fn host_ip() -> String {
    let out = std::process::Command::new(crate::harness::repo_dir().join("e2e/testhost/up"))
        .output()
        .expect("run e2e/testhost/up");
    assert!(out.status.success(), "e2e/testhost/up: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
}

/// `alb echo-server` `name` in the test host's network namespace: (process, port).
fn netns_backend(ip: &str, name: &str) -> (crate::harness::Proc, u16) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", "alb-e2e"])
        .arg(crate::harness::alb_bin())
        .args(["echo-server", "--listen", &format!("{ip}:0"), "--name", name])
        .stdout(std::process::Stdio::piped());
    let mut proc = crate::harness::Proc::spawn(&format!("backend {name}"), &mut cmd);
    let mut line = String::new();
    std::io::BufReader::new(proc.child.stdout.take().expect("stdout")).read_line(&mut line).expect("address");
    let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).expect("echo-server port");
    (proc, port)
}

#[test]
fn canary_through_the_api_server_splits_and_reports_bad_values() {
    use crate::harness::cluster::Cluster;
    let c = Cluster::shared();
    let ns = c.namespace("canary");
    let alb = "alb-canary";
    let port = free_port();
    c.apply(&format!(
        "apiVersion: crd.alauda.io/v2beta1\nkind: ALB2\nmetadata: {{name: {alb}, namespace: {ns}}}\nspec:\n  address: 127.0.0.1\n  type: nginx\n  config: {{ingressHTTPPort: {port}, ingressHTTPSPort: 0, projects: [ALL_ALL]}}\n"
    ));
    let ip = host_ip();
    let (_main, main_port) = netns_backend(&ip, "main");
    let (_can, can_port) = netns_backend(&ip, "canary");
    for (name, bport) in [("svc-main", main_port), ("svc-can", can_port)] {
        c.apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  clusterIP: None\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {bport}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}\n"
        ));
    }
    let ing = |name: &str, svc: &str, annos: &[(&str, &str)]| {
        let y = ingress(name, "c.test", "/app", svc, annos).replace("namespace: shop", &format!("namespace: {ns}"));
        y.replace("spec:\n  rules:", &format!("spec:\n  ingressClassName: {alb}\n  rules:"))
    };
    let runtime = tempfile::Builder::new().prefix("alb-e2e-canary-").tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut cmd = std::process::Command::new(crate::harness::alb_bin());
    cmd.arg("controller")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["--alb-name", alb, "--alb-namespace", &ns, "--pod-name", "p1"])
        .arg("--runtime-dir")
        .arg(runtime.path())
        .args(["--api-port", &free_port().to_string(), "--bind", "127.0.0.1", "--workers", "2"])
        .args(["--admin-port", &free_port().to_string(), "--metrics-port", &free_port().to_string()])
        .args(["--lease-duration", "4", "--renew-deadline", "2", "--retry-period", "1", "--spawn-nginx"])
        .env("ALB_LOG", "info")
        .env_remove("KUBECONFIG");
    let ctl = crate::harness::Proc::spawn("alb controller canary", &mut cmd);
    ctl.wait_log("applied by", Duration::from_secs(30));

    c.apply(&ing("web", "svc-main", &[]));
    c.apply(&ing("web-canary", "svc-can", &[("canary", "true"), ("canary-weight", "30"), ("canary-by-header", "X-C")]));
    let t = Instant::now();
    let canary_by_header = || {
        let mut conn = Conn::open(port).ok()?;
        conn.send("GET", "/app", &[HOST, ("X-C", "always")], b"").ok().map(|r| r.backend().to_string())
    };
    while canary_by_header().as_deref() != Some("canary") {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "canary header Rule not routed; log:\n{}",
            ctl.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = tally(port, 600, "/app", &[HOST]);
    eprintln!("controller, canary-weight 30: {t:?}");
    assert_share(t.get("canary").copied().unwrap_or(0), 600, 0.3, "canary-weight 30 via the API server");
    only(port, 30, "/app", &[HOST, ("X-C", "never")], "main");
    // The Rules in the API server: all belong to the main Ingress.
    let rules = |name: &str| {
        let sel = format!("alb2.cpaas.io/source-name={name},alb2.cpaas.io/source-ns={ns}");
        c.get_json(&["rules", "-n", &ns, "-l", &sel])["items"].as_array().cloned().unwrap_or_default()
    };
    assert_eq!(rules("web").len(), 3, "main + header always/never");
    assert!(rules("web-canary").is_empty());

    // A bad value: Warning Event on the canary Ingress naming key and value; the canary stops, main still routes.
    c.apply(&ing("web-canary", "svc-can", &[("canary", "true"), ("canary-weight", "lots")]));
    let t = Instant::now();
    loop {
        let ev = c.get_json(&["events.v1.events.k8s.io", "-n", &ns]);
        let hit = ev["items"].as_array().into_iter().flatten().find(|e| {
            e["type"] == "Warning" && e["reason"] == "InvalidAnnotation" && e["regarding"]["name"] == "web-canary"
        });
        if let Some(e) = hit {
            let note = e["note"].as_str().unwrap_or_default();
            assert!(note.contains("canary-weight") && note.contains("lots"), "{e}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no Warning Event: {ev}");
        std::thread::sleep(Duration::from_millis(100));
    }
    eventually("canary gone", || rules("web").len() == 1);
    eventually("main only", || tally(port, 50, "/app", &[HOST]) == BTreeMap::from([("main".to_string(), 50)]));
    only(port, 20, "/app", &[HOST, ("X-C", "always")], "main");
}
