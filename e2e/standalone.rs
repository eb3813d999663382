//! The spine end to end: manifests in a folder → `alb standalone` → compiled policy → nginx → backends.

use crate::harness::{get, Backend, Conn, Standalone};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn frontend(name: &str, port: u16, default_svc: Option<&str>) -> String {
    let sg = default_svc
        .map(|s| format!("  serviceGroup:\n    services:\n      - {{name: {s}, namespace: default, port: 80}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Frontend\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e}}\nspec:\n  port: {port}\n  protocol: http\n{sg}"
    )
}

/// A Service `name` (port 80, named http) whose ready endpoints are the given backends.
fn service(name: &str, backends: &[&Backend]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n"
    );
    // One EndpointSlice per backend port (ports differ per backend process).
    for b in backends {
        s.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{port}\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n",
            port = b.port
        ));
    }
    s
}

fn rule(name: &str, ft: &str, priority: i64, dslx: &str, svc: &str) -> String {
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Rule\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e, alb2.cpaas.io/frontend: {ft}}}\nspec:\n  priority: {priority}\n  dslx: {dslx}\n  serviceGroup:\n    services: [{{name: {svc}, namespace: default, port: 80}}]\n"
    )
}

#[test]
fn routes_by_dslx_order_and_default_backend() {
    let (a, b, c) = (Backend::start("a"), Backend::start("b"), Backend::start("c"));
    let port = crate::harness::free_port();
    let rules = [
        // Same priority: the HOST EQ rule is more specific (complexity 50000+) than the long prefix.
        rule("prefix", "ft", 5, r#"[{type: URL, values: [[STARTS_WITH, /api/v1/items]]}]"#, "svc-b"),
        rule("host", "ft", 5, r#"[{type: HOST, values: [[EQ, shop.test]]}]"#, "svc-c"),
        // Smaller priority wins over complexity.
        rule("vip", "ft", 1, r#"[{type: HEADER, key: x-vip, values: [[EQ, "1"]]}]"#, "svc-a"),
    ]
    .join("---\n");
    let gw = Standalone::start(&[
        ("ft.yaml", frontend("ft", port, Some("svc-a"))),
        ("svc.yaml", [service("svc-a", &[&a]), service("svc-b", &[&b]), service("svc-c", &[&c])].join("---\n")),
        ("rules.yaml", rules),
    ]);
    gw.proc.wait_log(&format!("listening on 127.0.0.1:{port}"), Duration::from_secs(1));
    assert_eq!(get(port, "/api/v1/items/3", &[]).backend(), "b");
    assert_eq!(get(port, "/api/v1/items/3", &[("Host", "shop.test")]).backend(), "c");
    assert_eq!(get(port, "/api/v1/items/3", &[("Host", "shop.test"), ("X-Vip", "1")]).backend(), "a");
    assert_eq!(get(port, "/other", &[]).backend(), "a", "Frontend serviceGroup is the default backend");
}

#[test]
fn changes_apply_without_reload_and_bad_rules_are_rejected() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let port = crate::harness::free_port();
    let gw = Standalone::start(&[
        ("ft.yaml", frontend("ft", port, None)),
        ("svc.yaml", [service("svc-a", &[&a]), service("svc-b", &[&b])].join("---\n")),
        ("r1.yaml", rule("r1", "ft", 5, "[{type: URL, values: [[STARTS_WITH, /one]]}]", "svc-a")),
        ("r0.yaml", rule("r0", "ft", 5, "[{type: URL, values: [[STARTS_WITH, /zero]]}]", "svc-a")),
    ]);
    let pids = gw.pids();
    assert_eq!(pids.len(), 3, "master + 2 workers: {pids:?}");
    assert_eq!(get(port, "/zero", &[]).backend(), "a");
    assert_eq!(get(port, "/one", &[]).backend(), "a");
    let r = get(port, "/two", &[]);
    assert_eq!((r.status, r.reason()), (404, "InvalidUpstream : no rule match"));

    // A changed Rule file takes effect in well under a second, without a reload.
    let t = Instant::now();
    gw.write("r1.yaml", &rule("r1", "ft", 5, "[{type: URL, values: [[STARTS_WITH, /two]]}]", "svc-b"));
    loop {
        if get(port, "/two", &[]).backend() == "b" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(1), "change not visible after 1 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("rule change visible after {:?}", t.elapsed());
    let pushed = gw.proc.wait_log("policy v2 applied", Duration::from_secs(1));
    assert!(pushed.contains("delta of"), "only what changed travels (docs/policy.md \"Policy deltas\"): {pushed}");
    let first = gw.proc.logs().into_iter().find(|l| l.contains("policy v1 applied")).unwrap_or_default();
    assert!(first.contains("whole"), "the first push is whole: {first}");
    assert_eq!(get(port, "/one", &[]).status, 404);
    assert_eq!(get(port, "/zero", &[]).backend(), "a", "the unchanged rule, sent by its key");

    // An invalid Rule is rejected with its reason; every other route keeps working.
    gw.write("bad.yaml", &rule("bad", "ft", 1, "[{type: URL, values: [[REGEX, \"(/two\"]]}]", "svc-a"));
    let rejected = gw.proc.wait_log("rejected Rule default/bad", Duration::from_secs(2));
    assert!(rejected.contains("InvalidRegex") && rejected.contains("spec.dslx[0]"), "{rejected}");
    assert_eq!(get(port, "/two", &[]).backend(), "b");

    // A manifest that does not parse keeps the file's previous content.
    gw.write("r1.yaml", "apiVersion: crd.alauda.io/v1\nkind: Rule\nmetadata: {name: r1\n");
    gw.proc.wait_log("r1.yaml", Duration::from_secs(2));
    assert_eq!(get(port, "/two", &[]).backend(), "b");
    assert_eq!(gw.pids(), pids, "no nginx reload for rule changes");
}

#[test]
fn hot_updates_under_load_lose_no_request() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let port = crate::harness::free_port();
    let gw = Standalone::start(&[
        ("ft.yaml", frontend("ft", port, Some("svc-a"))),
        ("svc.yaml", [service("svc-a", &[&a]), service("svc-b", &[&b])].join("---\n")),
        ("r.yaml", rule("r", "ft", 5, "[{type: URL, values: [[STARTS_WITH, /x0]]}]", "svc-b")),
    ]);
    let pids = gw.pids();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for i in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(std::thread::spawn(move || {
            let mut conn = Conn::open(port).expect("connect");
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match conn.send("GET", &format!("/x{}", i % 2), &[], b"") {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        eprintln!("failed: {r:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("failed: {e}");
                        conn = Conn::open(port).expect("reconnect");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for n in 1..=100 {
        gw.change(|g| {
            g.write(
                "r.yaml",
                &rule("r", "ft", 5, &format!("[{{type: URL, values: [[STARTS_WITH, /x{}]]}}]", n % 2), "svc-b"),
            )
        });
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("hot updates: 100 changes, {ok} requests ok, {failed} failed");
    assert!(ok > 100, "load ran: {ok}");
    assert_eq!(failed, 0);
    assert_eq!(gw.pids(), pids, "nginx master and workers unchanged");
}

#[test]
fn a_new_listener_reloads_nginx_gracefully() {
    let a = Backend::start("a");
    let (p1, p2) = (crate::harness::free_port(), crate::harness::free_port());
    let gw =
        Standalone::start(&[("ft1.yaml", frontend("ft1", p1, Some("svc-a"))), ("svc.yaml", service("svc-a", &[&a]))]);
    let before = gw.pids();
    gw.change(|g| g.write("ft2.yaml", &frontend("ft2", p2, Some("svc-a"))));
    gw.proc.wait_log("nginx reloaded", Duration::from_secs(2));
    let t = Instant::now();
    while get_status(p2) != 200 {
        assert!(t.elapsed() < Duration::from_secs(5), "new listener not serving");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(p1, "/", &[]).backend(), "a");
    assert_eq!(gw.pids()[0], before[0], "same master: HUP, not a restart");
}

fn get_status(port: u16) -> u16 {
    Conn::open(port).and_then(|mut c| c.send("GET", "/", &[], b"")).map(|r| r.status).unwrap_or(0)
}

#[test]
fn sigterm_stops_nginx_and_missing_nginx_is_a_clear_error() {
    let a = Backend::start("a");
    let port = crate::harness::free_port();
    let mut gw =
        Standalone::start(&[("ft.yaml", frontend("ft", port, Some("svc-a"))), ("svc.yaml", service("svc-a", &[&a]))]);
    let pids = gw.pids();
    assert_eq!(pids.len(), 3);
    let status = gw.proc.terminate().expect("exit status");
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    for pid in pids {
        // A zombie is gone (exited, not yet reaped by PID 1 of this container). A worker may still be finishing
        // its exit (tearing down a large Lua heap) for a moment after the master is gone: allow 3 s for that.
        let t = Instant::now();
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let alive = stat.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z'));
            if !alive {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(3), "nginx process {pid} left behind: {stat}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    let out = std::process::Command::new(crate::harness::alb_bin())
        .args(["standalone", "--nginx", "/nonexistent/nginx", "--manifests"])
        .arg(gw.manifests.path())
        .arg("--runtime-dir")
        .arg(gw.runtime.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: cannot run /nonexistent/nginx"), "{err}");
}
