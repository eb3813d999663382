//! The data plane's Prometheus metrics (dataplane.md §4.16): known traffic through real nginx, then `/metrics`
//! parsed back and every counter checked with its exact labels; auth, `/healthz`, `/clear`.

use crate::harness::{alb_bin, free_port, get, request, Backend, Dataplane, Proc};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

type Labels = BTreeMap<String, String>;

/// Parsed `/metrics`: (metric name, labels) → value, plus the `# TYPE` lines.
#[derive(Debug, Default)]
struct Scrape {
    samples: Vec<(String, Labels, f64)>,
    types: BTreeMap<String, String>,
}

fn parse_labels(s: &str) -> Labels {
    // s = `k="v",k2="v\"2"` (no braces); values use the text-format escapes \\ \" \n
    let mut out = Labels::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let eq = s[i..].find('=').expect("label =") + i;
        let key = s[i..eq].to_string();
        assert_eq!(b[eq + 1], b'"', "label {key} not quoted in {s:?}");
        let mut j = eq + 2;
        let mut val = String::new();
        loop {
            match b[j] {
                b'\\' => {
                    val.push(match b[j + 1] {
                        b'n' => '\n',
                        c => c as char,
                    });
                    j += 2;
                }
                b'"' => break,
                _ => {
                    let ch = s[j..].chars().next().unwrap();
                    val.push(ch);
                    j += ch.len_utf8();
                }
            }
        }
        out.insert(key, val);
        i = j + 1;
        if i < b.len() {
            assert_eq!(b[i], b',', "label separator in {s:?}");
            i += 1;
        }
    }
    out
}

fn parse(text: &str) -> Scrape {
    let mut sc = Scrape::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, typ) = rest.split_once(' ').expect("TYPE line");
            sc.types.insert(name.to_string(), typ.to_string());
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line:?}"));
        let (name, labels) = match series.find('{') {
            Some(p) => {
                assert!(series.ends_with('}'), "{line:?}");
                (series[..p].to_string(), parse_labels(&series[p + 1..series.len() - 1]))
            }
            None => (series.to_string(), Labels::new()),
        };
        sc.samples.push((name, labels, value));
    }
    sc
}

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Scrape {
    /// The value of the sample with exactly these labels (0 when absent).
    fn get(&self, name: &str, kv: &[(&str, &str)]) -> f64 {
        let want = labels(kv);
        let found: Vec<f64> = self.samples.iter().filter(|(n, l, _)| n == name && *l == want).map(|s| s.2).collect();
        assert!(found.len() <= 1, "{name}{want:?} appears {} times", found.len());
        found.first().copied().unwrap_or(0.0)
    }

    fn series(&self, name: &str) -> Vec<&(String, Labels, f64)> {
        self.samples.iter().filter(|(n, _, _)| n == name).collect()
    }

    /// Bucket `le` of histogram `name` for the series with labels `kv` (0 when absent).
    fn bucket(&self, name: &str, kv: &[(&str, &str)], le: &str) -> f64 {
        let mut with_le = kv.to_vec();
        with_le.push(("le", le));
        self.get(&format!("{name}_bucket"), &with_le)
    }

    fn sum(&self, name: &str) -> f64 {
        self.series(name).iter().map(|s| s.2).sum()
    }
}

fn scrape(port: u16) -> Scrape {
    let r = get(port, "/metrics", &[("Authorization", "Bearer anything")]);
    assert_eq!(r.status, 200, "/metrics: {}", r.body);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    parse(&r.body)
}

/// Scrapes until `nginx_http_status` counts `n` requests: the log phase of the last request may still be
/// running in the other worker when its response has reached us.
fn scrape_after(port: u16, n: f64) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = scrape(port);
        let seen = s.sum("nginx_http_status");
        if seen == n || Instant::now() > deadline {
            assert_eq!(seen, n, "requests counted in nginx_http_status");
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn group(name: &str, port: u16) -> Value {
    json!({"name": name, "mode": "http", "backends": [{"address": "127.0.0.1", "port": port, "weight": 1}]})
}

fn rule(name: &str, m: Value, upstream: Option<&str>, source: (&str, &str, &str)) -> Value {
    let mut r = json!({"name": name, "priority": 5, "complexity": 0,
        "source": {"type": source.0, "namespace": source.1, "name": source.2},
        "match": m, "backend_protocol": "", "config": {}});
    if let Some(u) = upstream {
        r["upstream"] = json!(u);
    }
    r
}

/// What our HTTP client sends for a body-less request: `$request_length`.
fn request_len(method: &str, path: &str, port: u16) -> f64 {
    format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").len() as f64
}

/// Histogram invariants of every series: cumulative buckets, `_count` = `+Inf` bucket, `_sum` ≥ 0.
fn check_histograms(s: &Scrape, name: &str) {
    assert_eq!(s.types.get(name).map(String::as_str), Some("histogram"));
    for (_, l, count) in s.series(&format!("{name}_count")) {
        let kv: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut prev = 0.0;
        for le in ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"] {
            let v = s.bucket(name, &kv, le);
            assert!(v >= prev, "{name} bucket le={le} {v} < {prev} for {l:?}");
            prev = v;
        }
        assert_eq!(prev, *count, "{name}_count != +Inf bucket for {l:?}");
        let sum = s.get(&format!("{name}_sum"), &kv);
        assert!(sum >= 0.0 && sum < 60.0 * count, "{name}_sum {sum} for {l:?}");
    }
}

#[test]
fn counters_move_by_exactly_the_traffic_sent() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let ps = port.to_string();
    let mp = dp.metrics_port;
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dead = free_port(); // nothing listens there: 502 through @alb_error
    let weird_ns = "we\"ird\\ns\nx"; // every character the text format escapes
    let rules = vec![
        rule(
            "r-a",
            json!(["OR", ["STARTS_WITH", "URL", "/a"], ["STARTS_WITH", "URL", "/status/"]]),
            Some("a"),
            ("rule", "e2e", "r-a"),
        ),
        rule("r-b", json!(["STARTS_WITH", "URL", "/b"]), Some("b"), ("ingress", weird_ns, "ing-b")),
        rule("r-dead", json!(["STARTS_WITH", "URL", "/dead"]), Some("dead"), ("rule", "e2e", "r-dead")),
        rule("r-noup", json!(["STARTS_WITH", "URL", "/noup"]), None, ("rule", "e2e", "r-noup")),
    ];
    dp.push(&json!({"version": 1, "generation": 1, "http": {ps.clone(): {"rules": rules}},
        "backend_groups": [group("a", a.port), group("b", b.port), group("dead", dead)]}));

    // auth and health
    let r = get(mp, "/metrics", &[]);
    assert_eq!((r.status, r.body.as_str()), (401, "Unauthorized"));
    let r = get(mp, "/metrics", &[("Authorization", "Basic eDp5")]);
    assert_eq!(r.status, 401);
    let r = get(mp, "/clear", &[]);
    assert_eq!((r.status, r.body.as_str()), (401, "Unauthorized"));
    let r = get(mp, "/healthz", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let before = scrape(mp);
    assert_eq!(before.sum("nginx_http_status"), 0.0, "fresh data plane, nothing counted yet");

    // traffic: (method, path, expected status)
    let traffic: Vec<(&str, &str, u16)> = vec![
        ("GET", "/a", 200),
        ("GET", "/a/1", 200),
        ("GET", "/a/2", 200),
        ("GET", "/status/500", 500), // backend 5xx, rule r-a
        ("GET", "/b", 200),
        ("GET", "/b/x", 200),
        ("GET", "/zzz", 404), // no rule
        ("GET", "/zzz", 404),
        ("DELETE", "/zzz", 404),
        ("GET", "/dead", 502), // nginx's own answer via @alb_error
        ("GET", "/noup", 404), // matched, ALB error
    ];
    let mut resp_bytes: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for (m, path, want) in &traffic {
        let r = request(port, m, path, &[], b"");
        assert_eq!(r.status, *want, "{m} {path}: {:?}", r.headers);
        *resp_bytes.entry((path.split('/').nth(1).unwrap(), r.status)).or_default() += r.body.len();
    }
    let s = scrape_after(mp, traffic.len() as f64);

    let st = |rule: &str, status: &str, method: &str, src: (&str, &str, &str)| {
        s.get(
            "nginx_http_status",
            &[
                ("port", &ps),
                ("rule", rule),
                ("status", status),
                ("method", method),
                ("source_type", src.0),
                ("source_namespace", src.1),
                ("source_name", src.2),
            ],
        )
    };
    let src_a = ("rule", "e2e", "r-a");
    let src_b = ("ingress", weird_ns, "ing-b");
    let none = ("", "", "");
    assert_eq!(st("r-a", "200", "GET", src_a), 3.0);
    assert_eq!(st("r-a", "500", "GET", src_a), 1.0);
    assert_eq!(st("r-b", "200", "GET", src_b), 2.0);
    assert_eq!(st("", "404", "GET", none), 2.0);
    assert_eq!(st("", "404", "DELETE", none), 1.0);
    assert_eq!(st("r-dead", "502", "GET", ("rule", "e2e", "r-dead")), 1.0, "@alb_error answers are counted once");
    assert_eq!(st("r-noup", "404", "GET", ("rule", "e2e", "r-noup")), 1.0);
    assert_eq!(s.series("nginx_http_status").len(), 7, "{:#?}", s.series("nginx_http_status"));

    // mismatch and ALB errors (the no-rule 404s and the matched rule without upstream)
    assert_eq!(s.get("nginx_http_mismatch_rule_requests", &[("port", &ps), ("method", "GET")]), 2.0);
    assert_eq!(s.get("nginx_http_mismatch_rule_requests", &[("port", &ps), ("method", "DELETE")]), 1.0);
    assert_eq!(s.sum("nginx_http_mismatch_rule_requests"), 3.0);
    assert_eq!(s.get("alb_error", &[("port", &ps)]), 4.0);

    // sizes: $request_length is exactly what we sent; $bytes_sent covers status line, headers and body
    let size = |name: &str, rule: &str, status: &str, method: &str, src: (&str, &str, &str)| {
        s.get(
            name,
            &[
                ("port", &ps),
                ("rule", rule),
                ("status", status),
                ("method", method),
                ("source_type", src.0),
                ("source_namespace", src.1),
                ("source_name", src.2),
            ],
        )
    };
    let want_req: f64 = ["/a", "/a/1", "/a/2"].iter().map(|p| request_len("GET", p, port)).sum();
    assert_eq!(size("nginx_http_request_size_bytes", "r-a", "200", "GET", src_a), want_req);
    assert_eq!(size("nginx_http_request_size_bytes", "", "404", "DELETE", none), request_len("DELETE", "/zzz", port));
    let total_req: f64 = traffic.iter().map(|(m, p, _)| request_len(m, p, port)).sum();
    assert_eq!(s.sum("nginx_http_request_size_bytes"), total_req);
    let body_a = resp_bytes[&("a", 200)] as f64;
    let sent_a = size("nginx_http_response_size_bytes", "r-a", "200", "GET", src_a);
    assert!(sent_a > body_a + 3.0 * "HTTP/1.1 200 OK\r\n\r\n".len() as f64, "{sent_a} vs body {body_a}");
    assert!(size("nginx_http_response_size_bytes", "", "404", "GET", none) > 0.0);

    // upstream counters: matched rules only, upstream_ip = $upstream_addr
    let up = |rule: &str, ip: &str, status: &str, src: (&str, &str, &str)| {
        s.get(
            "nginx_http_upstream_requests_status",
            &[
                ("port", &ps),
                ("rule", rule),
                ("upstream_ip", ip),
                ("status", status),
                ("method", "GET"),
                ("source_type", src.0),
                ("source_namespace", src.1),
                ("source_name", src.2),
            ],
        )
    };
    let (ip_a, ip_b, ip_dead) =
        (format!("127.0.0.1:{}", a.port), format!("127.0.0.1:{}", b.port), format!("127.0.0.1:{dead}"));
    assert_eq!(up("r-a", &ip_a, "200", src_a), 3.0);
    assert_eq!(up("r-a", &ip_a, "500", src_a), 1.0);
    assert_eq!(up("r-b", &ip_b, "200", src_b), 2.0);
    assert_eq!(up("r-dead", &ip_dead, "502", ("rule", "e2e", "r-dead")), 1.0);
    assert_eq!(up("r-noup", "", "404", ("rule", "e2e", "r-noup")), 1.0, "matched, never reached an upstream");
    assert_eq!(s.sum("nginx_http_upstream_requests_status"), 8.0, "no upstream sample without a matched rule");
    assert!(s.series("nginx_http_upstream_requests_status").iter().all(|(_, l, _)| !l["rule"].is_empty()));

    // histograms
    check_histograms(&s, "nginx_http_request_duration_seconds");
    check_histograms(&s, "nginx_http_upstream_request_duration_seconds");
    let dur = |rule: &str, src: (&str, &str, &str)| {
        s.get(
            "nginx_http_request_duration_seconds_count",
            &[
                ("port", &ps),
                ("rule", rule),
                ("source_type", src.0),
                ("source_namespace", src.1),
                ("source_name", src.2),
            ],
        )
    };
    assert_eq!(dur("r-a", src_a), 4.0);
    assert_eq!(dur("r-b", src_b), 2.0);
    assert_eq!(dur("", none), 3.0);
    assert_eq!(s.sum("nginx_http_request_duration_seconds_count"), traffic.len() as f64);
    let up_a = s.get(
        "nginx_http_upstream_request_duration_seconds_count",
        &[
            ("port", &ps),
            ("rule", "r-a"),
            ("upstream_ip", &ip_a),
            ("source_type", "rule"),
            ("source_namespace", "e2e"),
            ("source_name", "r-a"),
        ],
    );
    assert_eq!(up_a, 4.0);
    assert_eq!(s.sum("nginx_http_upstream_request_duration_seconds_count"), 8.0);

    // types and gauges
    for (name, typ) in [
        ("nginx_http_connections", "gauge"),
        ("nginx_http_mismatch_rule_requests", "counter"),
        ("nginx_http_status", "counter"),
        ("nginx_http_request_size_bytes", "counter"),
        ("nginx_http_response_size_bytes", "counter"),
        ("nginx_http_upstream_requests_status", "counter"),
        ("alb_error", "counter"),
        ("metrics_cache_size", "gauge"),
    ] {
        assert_eq!(s.types.get(name).map(String::as_str), Some(typ), "{name}");
    }
    assert!(s.get("nginx_http_connections", &[("state", "active")]) >= 1.0);
    for state in ["reading", "waiting", "writing"] {
        assert_eq!(s.series("nginx_http_connections").iter().filter(|(_, l, _)| l["state"] == state).count(), 1);
    }
    let free = s.get("metrics_cache_size", &[]);
    assert!(free > 10_000_000.0 && free <= 20.0 * 1024.0 * 1024.0, "free bytes of a 20m dict: {free}");

    // scraping is not traffic: a second scrape sees the same counters
    let again = scrape(mp);
    assert_eq!(again.sum("nginx_http_status"), traffic.len() as f64);

    // /clear resets everything but the scrape-time gauges
    let r = get(mp, "/clear", &[("Authorization", "Bearer x")]);
    assert_eq!(r.status, 200);
    let s = scrape(mp);
    assert!(s.samples.iter().all(|(n, _, _)| n == "nginx_http_connections" || n == "metrics_cache_size"), "{s:?}");
    let r = request(port, "GET", "/a", &[], b"");
    assert_eq!(r.status, 200);
    let s = scrape_after(mp, 1.0);
    assert_eq!(st_after_clear(&s, &ps), 1.0);
}

fn st_after_clear(s: &Scrape, ps: &str) -> f64 {
    s.get(
        "nginx_http_status",
        &[
            ("port", ps),
            ("rule", "r-a"),
            ("status", "200"),
            ("method", "GET"),
            ("source_type", "rule"),
            ("source_namespace", "e2e"),
            ("source_name", "r-a"),
        ],
    )
}

/// The durations are in seconds and land in the right bucket: a backend that answers after 300 ms puts the request
/// and the upstream time above `le="0.25"` and (unless the whole request took longer) into `le="0.5"` (the log
/// phase computes the request time from the request's start instead of parsing `$request_time`).
#[test]
fn durations_are_seconds_in_the_right_bucket() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let ps = port.to_string();
    let a = Backend::start("slow");
    let rules = vec![rule("r-slow", json!(["STARTS_WITH", "URL", "/"]), Some("a"), ("rule", "e2e", "r-slow"))];
    dp.push(&json!({"version": 1, "generation": 1, "http": {ps.clone(): {"rules": rules}},
        "backend_groups": [group("a", a.port)]}));
    let t0 = Instant::now();
    let r = get(port, "/x/sleep/300", &[]);
    let took = t0.elapsed().as_secs_f64();
    assert_eq!(r.status, 200, "{}", r.body);
    let s = scrape_after(dp.metrics_port, 1.0);
    let base = [("port", ps.as_str()), ("rule", "r-slow")];
    let src = [("source_type", "rule"), ("source_namespace", "e2e"), ("source_name", "r-slow")];
    let ip = format!("127.0.0.1:{}", a.port);
    for (name, extra) in [
        ("nginx_http_request_duration_seconds", vec![]),
        ("nginx_http_upstream_request_duration_seconds", vec![("upstream_ip", ip.as_str())]),
    ] {
        let kv: Vec<(&str, &str)> = base.iter().chain(extra.iter()).chain(src.iter()).copied().collect();
        let bucket = |le: &str| s.bucket(name, &kv, le);
        assert_eq!((bucket("0.25"), bucket("+Inf")), (0.0, 1.0), "{name}: buckets");
        if took < 0.49 {
            assert_eq!(bucket("0.5"), 1.0, "{name}: the request took {took} s");
        }
        let sum = s.get(&format!("{name}_sum"), &kv);
        assert!(sum >= 0.299 && sum <= took + 0.02, "{name}_sum {sum}, want 0.3..{took} (+ clock granularity)");
    }
}

#[test]
fn metrics_auth_false_opens_metrics_and_port_zero_has_no_server() {
    let runtime = tempfile::Builder::new().prefix("alb-e2e-metrics-").tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (api, http, metrics) = (free_port(), free_port(), free_port());
    let mut cmd = Command::new(alb_bin());
    cmd.arg("dataplane")
        .arg("--runtime-dir")
        .arg(runtime.path())
        .args(["--api-port", &api.to_string(), "--bind", "127.0.0.1", "--workers", "1"])
        .args(["--http-port", &http.to_string()])
        .env("METRICS_PORT", metrics.to_string())
        .env("METRICS_AUTH", "false");
    let mut proc = Proc::spawn("alb dataplane (METRICS_AUTH=false)", &mut cmd);
    proc.wait_log("data plane ready", Duration::from_secs(20));
    let r = get(metrics, "/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("# TYPE nginx_http_status counter"));
    let r = get(http, "/x", &[]); // no policy yet: ALB error, counted
    assert_eq!(r.status, 404);
    let deadline = Instant::now() + Duration::from_secs(5);
    while parse(&get(metrics, "/metrics", &[]).body).get("alb_error", &[("port", &http.to_string())]) != 1.0 {
        assert!(Instant::now() < deadline, "alb_error not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(metrics, "/clear", &[]).status, 200);
    proc.terminate();

    // --metrics-port 0: no metrics server (and no metrics log call: see src/nginx/render.rs tests)
    let mut cmd = Command::new(alb_bin());
    cmd.arg("dataplane")
        .arg("--runtime-dir")
        .arg(runtime.path())
        .args(["--api-port", &api.to_string(), "--bind", "127.0.0.1", "--workers", "1"])
        .args(["--http-port", &http.to_string(), "--metrics-port", "0"]);
    let mut proc = Proc::spawn("alb dataplane (no metrics)", &mut cmd);
    proc.wait_log("data plane ready", Duration::from_secs(20));
    assert!(std::net::TcpStream::connect(("127.0.0.1", metrics)).is_err(), "metrics port must stay closed");
    assert_eq!(get(http, "/x", &[]).status, 404);
    let conf = std::fs::read_to_string(runtime.path().join("conf/nginx.conf")).expect("nginx.conf");
    // the server-level log hook stays (config.limit.connections slots), without the metrics call
    assert!(!conf.contains("require(\"alb.phase\").log()"));
    proc.terminate();
}

/// `curl -sk [-v]` against `https://127.0.0.1:port{path}`: (exit ok, status, body, stderr).
fn curl_https(port: u16, path: &str, auth: bool) -> (bool, u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "-v", "--max-time", "5", "-w", "\n%{http_code}"]);
    if auth {
        cmd.args(["-H", "Authorization: Bearer x"]);
    }
    let out = cmd.arg(format!("https://127.0.0.1:{port}{path}")).output().expect("curl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        out.status.success(),
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The metrics port speaks HTTPS as the original ALB (self-signed `CN=localhost` certificate; scrape configs with
/// `scheme: https` keep working) and still answers plain HTTP on the same port (alb-rs's earlier scrape configs
/// and the pod's probes); `--metrics-plain-http` turns TLS off.
#[test]
fn metrics_port_speaks_https_and_still_answers_plain_http() {
    let dp = Dataplane::start(1);
    let mp = dp.metrics_port;

    let (ok, status, body, log) = curl_https(mp, "/metrics", true);
    assert!(ok && status == 200, "https /metrics: {status} {body} {log}");
    assert!(body.contains("# TYPE nginx_http_status counter"), "{body}");
    assert!(log.contains("subject: CN=localhost"), "self-signed localhost certificate: {log}");
    let (_, status, _, _) = curl_https(mp, "/metrics", false);
    assert_eq!(status, 401, "the same auth over TLS");
    let (_, status, body, _) = curl_https(mp, "/healthz", false);
    assert_eq!((status, body.trim()), (200, "ok"));
    let (_, status, _, _) = curl_https(mp, "/clear", true);
    assert_eq!(status, 200);
    let (_, status, _, _) = curl_https(mp, "/nope", true);
    assert_eq!(status, 404);

    // plain HTTP on the same port: the same answers
    let r = get(mp, "/metrics", &[("Authorization", "Bearer anything")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    assert!(r.body.contains("# TYPE nginx_http_status counter"), "{}", r.body);
    assert_eq!(get(mp, "/metrics", &[]).status, 401);
    let r = get(mp, "/healthz", &[]);
    assert_eq!((r.status, r.body.trim()), (200, "ok"));
    assert_eq!(get(mp, "/clear", &[("Authorization", "Bearer x")]).status, 200);
    assert_eq!(get(mp, "/nope", &[]).status, 404);
    drop(dp);

    // --metrics-plain-http: no TLS at all
    let runtime = tempfile::Builder::new().prefix("alb-e2e-metrics-").tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (api, http, metrics) = (free_port(), free_port(), free_port());
    let mut cmd = Command::new(alb_bin());
    cmd.arg("dataplane")
        .arg("--runtime-dir")
        .arg(runtime.path())
        .args(["--api-port", &api.to_string(), "--bind", "127.0.0.1", "--workers", "1"])
        .args(["--http-port", &http.to_string(), "--metrics-port", &metrics.to_string(), "--metrics-plain-http"]);
    let mut proc = Proc::spawn("alb dataplane (--metrics-plain-http)", &mut cmd);
    proc.wait_log("data plane ready", Duration::from_secs(20));
    let r = get(metrics, "/metrics", &[("Authorization", "Bearer x")]);
    assert_eq!(r.status, 200, "{}", r.body);
    let (ok, _, _, log) = curl_https(metrics, "/healthz", false);
    assert!(!ok, "no TLS handshake on a plain HTTP metrics port: {log}");
    let conf = std::fs::read_to_string(runtime.path().join("conf/nginx.conf")).expect("nginx.conf");
    assert!(!conf.contains("metrics.crt"));
    proc.terminate();
}
