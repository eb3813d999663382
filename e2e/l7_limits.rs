//! Per-rule access lists, rate/connection limits, body size limits and error pages through real nginx
//! (docs/policy.md "Rule config (v1)": `access`, `limit`, `max_body_size`, `error_pages`): policies pushed
//! straight to the data plane, then Rule manifests through `alb standalone` (the compile side).
//!
//! The test client is 127.0.0.1; a few checks also connect from 127.0.0.2 (Linux routes all of 127/8 to
//! loopback) with `curl --interface` to see per-address behaviour.

use crate::harness::{free_port, get, request, Backend, Conn, Dataplane, Resp, Standalone};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn group(name: &str, ports: &[u16]) -> Value {
    json!({"name": name, "mode": "http",
           "backends": ports.iter().map(|p| json!({"address": "127.0.0.1", "port": p, "weight": 1})).collect::<Vec<_>>()})
}

/// A rule for requests with `Host: <host>` (any path).
fn rule(name: &str, host: &str, upstream: Option<&str>, config: Value) -> Value {
    let mut r = json!({"name": name, "priority": 5, "complexity": 0,
                       "source": {"type": "rule", "namespace": "e2e", "name": name},
                       "match": ["AND", ["EQ", "HOST", host], ["STARTS_WITH", "URL", "/"]],
                       "index": {"hosts": [host]}, "config": config});
    if let Some(u) = upstream {
        r["upstream"] = json!(u);
    }
    r
}

fn policy(port: u16, rules: Vec<Value>, groups: Vec<Value>) -> Value {
    json!({"version": 1, "generation": 1, "http": {port.to_string(): {"rules": rules}}, "backend_groups": groups})
}

fn on(port: u16, host: &str, path: &str) -> Resp {
    get(port, path, &[("Host", host)])
}

/// Status of `GET http://<host>:<port><path>` sent from the source address `from` (curl --interface).
fn status_from(from: &str, port: u16, host: &str, path: &str) -> u16 {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--interface", from, "-H"])
        .arg(format!("Host: {host}"))
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// A port nobody listens on (connections are refused).
fn dead_port() -> u16 {
    free_port()
}

#[test]
fn access_allow_and_deny_lists() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let acl = |name: &str, cfg: Value| rule(name, &format!("{name}.test"), Some("a"), json!({ "access": cfg }));
    let rules = vec![
        acl("allow-lo", json!({"allow": ["127.0.0.0/8"]})),
        acl("allow-ten", json!({"allow": ["10.0.0.0/8", "192.168.0.0/16"]})),
        acl("deny-one", json!({"deny": ["127.0.0.1/32"]})),
        // 128.0.0.0/1 and 200/8 sort above 127.0.0.1: unsigned byte order
        acl("deny-high", json!({"deny": ["200.0.0.0/8", "128.0.0.0/1", "0.0.0.0/2"]})),
        acl("deny-first", json!({"allow": ["127.0.0.1"], "deny": ["127.0.0.0/8"]})),
        acl("v6", json!({"allow": ["2001:db8::/32", "::1", "127.0.0.1"], "deny": ["2001:db8:0:0:0:0:0:1/128"]})),
        acl("v6-only", json!({"allow": ["2001:db8::/32", "::/1"]})),
        // the IPv4-mapped IPv6 form of a CIDR also covers the IPv4 client
        acl("mapped", json!({"deny": ["::ffff:127.0.0.0/104"]})),
        acl("host-bits", json!({"allow": ["127.1.2.3/8"]})),
        acl("only-two", json!({"allow": ["127.0.0.2"]})),
        rule("plain", "plain.test", Some("a"), json!({})),
    ];
    dp.push(&policy(port, rules, vec![group("a", &[a.port])]));

    let ok = |h: &str| {
        let r = on(port, h, "/x");
        assert_eq!((r.status, r.backend()), (200, "a"), "{h}: {r:?}");
    };
    let denied = |h: &str, reason: &str| {
        let r = on(port, h, "/x");
        assert_eq!(r.status, 403, "{h}: {r:?}");
        assert_eq!(r.reason(), reason, "{h}");
        assert_eq!(r.body, "", "{h}: gateway answers have an empty body");
    };
    ok("allow-lo.test");
    denied("allow-ten.test", "AccessDenied : client address not allowed");
    denied("deny-one.test", "AccessDenied : client address denied");
    ok("deny-high.test");
    denied("deny-first.test", "AccessDenied : client address denied");
    ok("v6.test");
    denied("v6-only.test", "AccessDenied : client address not allowed");
    denied("mapped.test", "AccessDenied : client address denied");
    ok("host-bits.test");
    ok("plain.test");
    // per client address: 127.0.0.2 is let through where 127.0.0.1 is not, and the other way round
    denied("only-two.test", "AccessDenied : client address not allowed");
    assert_eq!(status_from("127.0.0.2", port, "only-two.test", "/x"), 200);
    assert_eq!(status_from("127.0.0.2", port, "deny-one.test", "/x"), 200);
    assert_eq!(status_from("127.0.0.2", port, "allow-ten.test", "/x"), 403);
}

/// `n` requests on one keep-alive connection as fast as possible: (statuses, reasons).
fn burst(port: u16, host: &str, n: usize) -> Vec<(u16, String)> {
    let mut c = Conn::open(port).unwrap();
    (0..n)
        .map(|_| {
            let r = c.send("GET", "/x", &[("Host", host)], b"").unwrap();
            (r.status, r.reason().to_string())
        })
        .collect()
}

#[test]
fn limit_rps_rpm_burst_and_whitelist() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let rules = vec![
        // burst = 2 * 1: three requests at once, then 2 per second
        rule("rps", "rps.test", Some("a"), json!({"limit": {"rps": 2, "burst_multiplier": 1}})),
        rule("rps2", "rps2.test", Some("a"), json!({"limit": {"rps": 2, "burst_multiplier": 1}})),
        rule(
            "wl",
            "wl.test",
            Some("a"),
            json!({"limit": {"rps": 2, "burst_multiplier": 1, "whitelist": ["10.0.0.0/8", "127.0.0.1"]}}),
        ),
        // one per second, no burst, refused with 429
        rule("rpm", "rpm.test", Some("a"), json!({"limit": {"rpm": 60, "burst_multiplier": 0, "status": 429}})),
        rule("plain", "plain.test", Some("a"), json!({})),
    ];
    dp.push(&policy(port, rules, vec![group("a", &[a.port])]));

    let rs = burst(port, "rps.test", 12);
    let ok = rs.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = rs.iter().filter(|(s, _)| *s != 200).collect();
    assert!((3..=5).contains(&ok), "3 at once plus 2/s: {rs:?}");
    assert!(refused.iter().all(|(s, r)| *s == 503 && r == "LimitExceeded : rps"), "{rs:?}");
    assert_eq!(rs[..3].iter().filter(|(s, _)| *s == 200).count(), 3, "the burst comes first: {rs:?}");
    // another client address has its own bucket; another rule has its own counters
    assert_eq!(status_from("127.0.0.2", port, "rps.test", "/x"), 200);
    let rs2 = burst(port, "rps2.test", 3);
    assert!(rs2.iter().all(|(s, _)| *s == 200), "per rule: {rs2:?}");
    // the whitelist bypasses the limit
    let wl = burst(port, "wl.test", 12);
    assert!(wl.iter().all(|(s, _)| *s == 200), "whitelisted: {wl:?}");
    let rpm = burst(port, "rpm.test", 6);
    let ok = rpm.iter().filter(|(s, _)| *s == 200).count();
    assert!((1..=2).contains(&ok), "{rpm:?}");
    assert!(rpm.iter().filter(|(s, _)| *s != 200).all(|(s, r)| *s == 429 && r == "LimitExceeded : rpm"), "{rpm:?}");
    // a rule without limits is not affected
    assert!(burst(port, "plain.test", 30).iter().all(|(s, _)| *s == 200));
    // the bucket drains: after a second the rps rule serves again
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(on(port, "rps.test", "/x").status, 200);
}

/// `GET` until the connection limit does not refuse it. A slot is released in the log phase, which nginx runs
/// right after the response went out: a quick client (new connection, maybe another worker) can find it still
/// taken for a moment. A leaked slot never comes back.
fn served(port: u16, host: &str, path: &str) -> Resp {
    for _ in 0..100 {
        let r = on(port, host, path);
        if r.reason() != "LimitExceeded : connections" {
            return r;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{host}{path}: the connection slot was never released");
}

#[test]
fn limit_connections_counts_concurrent_requests_and_releases_on_every_path() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let errs = Backend::start("errors");
    let dead = dead_port();
    let rules = vec![
        rule("conn", "conn.test", Some("a"), json!({"limit": {"connections": 2}})),
        rule("conn-dead", "dead.test", Some("dead"), json!({"limit": {"connections": 1}})),
        rule(
            "conn-ep",
            "ep.test",
            Some("a"),
            json!({"limit": {"connections": 1}, "error_pages": {"codes": [503], "upstream": "errs"}}),
        ),
        rule("conn-rps", "rps.test", Some("a"), json!({"limit": {"connections": 1, "rps": 1, "burst_multiplier": 0}})),
        rule("conn-401", "auth.test", Some("a"), json!({"limit": {"connections": 1}, "auth": {"basic": {"err": "x"}}})),
    ];
    let groups = vec![group("a", &[a.port]), group("dead", &[dead]), group("errs", &[errs.port])];
    dp.push(&policy(port, rules, groups));

    // 5 slow requests at once, 2 slots
    let n = 5;
    let start = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let r = on(port, "conn.test", "/sleep/1500");
                (r.status, r.reason().to_string())
            })
        })
        .collect();
    let rs: Vec<(u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(rs.iter().filter(|(s, _)| *s == 200).count(), 2, "{rs:?}");
    assert!(
        rs.iter().filter(|(s, _)| *s != 200).all(|(s, r)| *s == 503 && r == "LimitExceeded : connections"),
        "{rs:?}"
    );
    // all released: sequential requests are served again
    for _ in 0..5 {
        assert_eq!(served(port, "conn.test", "/x").status, 200);
    }
    // released when the client goes away (499): two clients hold both slots with slow requests, then hang up
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /sleep/10000 HTTP/1.1\r\nHost: conn.test\r\n\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(on(port, "conn.test", "/x").reason(), "LimitExceeded : connections", "both slots are held");
    drop(held);
    assert_eq!(served(port, "conn.test", "/x").status, 200, "released long before the backend would answer");
    // released after nginx's own error answer (502 through error_page @alb_error)
    for _ in 0..4 {
        let r = served(port, "dead.test", "/x");
        assert_eq!((r.status, r.body.as_str()), (502, "X-Error: 502\n"), "slot released after a 502");
    }
    // released after ngx.exec (@alb_ep) and the interception (@alb_ep_err)
    for _ in 0..4 {
        let r = served(port, "ep.test", "/status/503");
        assert_eq!((r.status, r.backend()), (200, "errors"), "{r:?}");
        assert_eq!(served(port, "ep.test", "/status/404").status, 404);
    }
    // released after a Lua answer (auth fails closed with 500)
    for _ in 0..4 {
        assert_eq!(served(port, "auth.test", "/x").status, 500);
    }
    // a request refused by the rate takes no slot
    let rs = burst(port, "rps.test", 4);
    assert_eq!(rs[0].0, 200);
    assert!(rs[1..].iter().all(|(s, r)| *s == 503 && r == "LimitExceeded : rps"), "{rs:?}");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(on(port, "rps.test", "/x").status, 200);
}

/// Raw HTTP/1.1 request with a chunked body of the given chunks; returns (status, body).
fn post_chunked(port: u16, host: &str, path: &str, chunks: &[usize]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req =
        format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .into_bytes();
    for n in chunks {
        req.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        req.extend(std::iter::repeat_n(b'z', *n));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn max_body_size_by_content_length_and_chunked() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let rules = vec![
        rule("body", "body.test", Some("a"), json!({"max_body_size": 100})),
        rule("plain", "plain.test", Some("a"), json!({})),
    ];
    dp.push(&policy(port, rules, vec![group("a", &[a.port])]));
    let h = [("Host", "body.test")];
    let r = request(port, "POST", "/x", &h, &[b'x'; 100]);
    assert_eq!((r.status, r.json()["body_len"].as_u64()), (200, Some(100)), "{r:?}");
    let r = request(port, "POST", "/x", &h, &[b'x'; 101]);
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.reason(), "BodyTooLarge : request body larger than 100 bytes");
    assert_eq!(r.backend(), "", "not proxied");
    assert_eq!(get(port, "/x", &h).status, 200, "no body");
    // chunked: nginx buffers the body (as proxying does anyway) and its decoded length is checked
    let (status, body) = post_chunked(port, "body.test", "/x", &[30, 30]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"body_len\":60"), "{body}");
    let (status, _) = post_chunked(port, "body.test", "/x", &[60, 60]);
    assert_eq!(status, 413);
    // other rules: no limit
    let r = request(port, "POST", "/x", &[("Host", "plain.test")], &[b'x'; 5000]);
    assert_eq!((r.status, r.json()["body_len"].as_u64()), (200, Some(5000)));
}

/// A backend answering every request with 401 and a `WWW-Authenticate` header.
fn backend_401() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"e2e\"\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope",
            );
        }
    });
    port
}

#[test]
fn error_pages_from_the_error_backend() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let errs = Backend::start("errors");
    let dead = dead_port();
    let ep = |codes: Value| json!({"error_pages": {"codes": codes, "upstream": "errs"}});
    let rules = vec![
        rule("ep", "ep.test", Some("a"), ep(json!([503, 404]))),
        rule("empty", "empty.test", Some("empty"), ep(json!([503]))),
        rule("empty-plain", "empty-plain.test", Some("empty"), json!({})),
        rule("dead", "dead.test", Some("dead"), ep(json!([502]))),
        rule("dead-other", "dead-other.test", Some("dead"), ep(json!([503]))),
        rule(
            "ep-features",
            "feat.test",
            Some("a"),
            json!({"error_pages": {"codes": [503], "upstream": "errs"}, "cors": {},
                   "rewrite_request": {"headers": {"X-Req": "1"}}, "rewrite_response": {"headers": {"X-Resp": "2"}},
                   "rewrite": {"prefix_match": "/p", "replace_prefix": "/status"}}),
        ),
        rule("errs-down", "down.test", Some("a"), json!({"error_pages": {"codes": [503], "upstream": "dead"}})),
        rule("plain", "plain.test", Some("a"), json!({})),
        rule("auth401", "auth401.test", Some("u401"), ep(json!([503]))),
        rule(
            "ep-body",
            "ep-body.test",
            Some("a"),
            json!({"error_pages": {"codes": [503], "upstream": "errs"}, "max_body_size": 1000}),
        ),
    ];
    let groups = vec![
        group("a", &[a.port]),
        group("errs", &[errs.port]),
        group("empty", &[]),
        group("dead", &[dead]),
        group("u401", &[backend_401()]),
    ];
    dp.push(&policy(port, rules, groups));

    // a listed code: the error backend's answer for the same request
    let r = get(port, "/status/503?q=1", &[("Host", "ep.test"), ("Accept", "text/html"), ("X-Request-ID", "rid-1")]);
    assert_eq!((r.status, r.backend()), (200, "errors"), "{r:?}");
    let e = r.json();
    assert_eq!(e["uri"], "/");
    assert_eq!(e["method"], "GET");
    let hd = &e["headers"];
    assert_eq!(hd["x-code"], "503");
    assert_eq!(hd["x-format"], "text/html");
    assert_eq!(hd["x-original-uri"], "/status/503?q=1");
    assert_eq!(hd["x-namespace"], "e2e");
    assert_eq!(hd["x-ingress-name"], "ep");
    assert_eq!(hd["x-request-id"], "rid-1");
    assert_eq!(hd["host"], "ep.test");
    let r = on(port, "ep.test", "/status/404");
    assert_eq!((r.backend(), r.json()["headers"]["x-code"].as_str()), ("errors", Some("404")));
    // a POST body is not sent to the error backend
    let r = request(port, "POST", "/status/503", &[("Host", "ep.test")], b"hello");
    assert_eq!(
        (r.backend(), r.json()["method"].as_str(), r.json()["body_len"].as_u64()),
        ("errors", Some("GET"), Some(0))
    );
    // a code not in the list keeps its status (the upstream body is not kept: intercepted)
    let r = on(port, "ep.test", "/status/500");
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.reason().starts_with("BackendError : read "), "{r:?}");
    assert_eq!(r.body, "");
    // a 401 not in the list keeps its WWW-Authenticate (nginx copies it when intercepting)
    let r = on(port, "auth401.test", "/x");
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Basic realm=\"e2e\"")), "{r:?}");
    // success and redirects pass untouched
    let r = on(port, "ep.test", "/status/201");
    assert_eq!((r.status, r.backend()), (201, "a"));
    assert_eq!(r.json()["uri"], "/status/201");
    // no endpoints: the error backend instead of 500
    let r = on(port, "empty.test", "/some/page");
    assert_eq!((r.status, r.backend()), (200, "errors"), "{r:?}");
    assert_eq!(r.json()["headers"]["x-code"], "503");
    assert_eq!(r.json()["headers"]["x-original-uri"], "/some/page");
    let r = on(port, "empty-plain.test", "/");
    assert_eq!((r.status, r.reason()), (500, "InvalidBalancer : no balancer found for empty"), "unchanged without");
    // nginx's own errors (every try refused) are codes too
    let r = on(port, "dead.test", "/x");
    assert_eq!((r.backend(), r.json()["headers"]["x-code"].as_str()), ("errors", Some("502")), "{r:?}");
    let r = on(port, "dead-other.test", "/x");
    assert_eq!((r.status, r.body.as_str()), (502, "X-Error: 502\n"), "not listed: the usual answer");
    // the rest of the pipeline runs in @alb_ep: rewrite, request/response headers, CORS
    let r = get(port, "/p/200", &[("Host", "feat.test"), ("Origin", "https://o.test")]);
    assert_eq!((r.status, r.backend()), (200, "a"), "{r:?}");
    assert_eq!(r.json()["uri"], "/status/200");
    assert_eq!(r.json()["headers"]["x-req"], "1");
    assert_eq!(r.header("x-resp"), Some("2"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = get(port, "/p/503", &[("Host", "feat.test")]);
    assert_eq!((r.status, r.backend()), (200, "errors"), "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "error pages get the rule's response headers");
    // the error backend cannot be reached: the usual 502 answer
    let r = on(port, "down.test", "/status/503");
    assert_eq!((r.status, r.body.as_str()), (502, "X-Error: 502\n"), "{r:?}");
    // a body read by max_body_size (chunked) still reaches the backend through @alb_ep
    let (status, body) = post_chunked(port, "ep-body.test", "/status/200", &[20, 40]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"body_len\":60") && body.contains("\"backend\":\"a\""), "{body}");
    assert_eq!(post_chunked(port, "ep-body.test", "/status/200", &[600, 600]).0, 413);
    // a rule without error pages is unchanged: the backend's error body passes
    let r = on(port, "plain.test", "/status/503");
    assert_eq!((r.status, r.backend()), (503, "a"));
    assert_eq!(r.json()["uri"], "/status/503");
    assert!(r.reason().starts_with("BackendError : read "));
}

#[test]
fn malformed_config_is_refused_and_the_previous_policy_kept() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let good = policy(
        port,
        vec![rule("r", "r.test", Some("a"), json!({"access": {"deny": ["127.0.0.1"]}}))],
        vec![group("a", &[a.port])],
    );
    dp.push(&good);
    let bad = [
        (json!({"access": "x"}), "config.access must be an object"),
        (json!({"access": {"allow": "10.0.0.0/8"}}), "config.access.allow must be an array"),
        (json!({"access": {"allow": ["10.0.0.0/8", "10.0.0.0/33"]}}), "config.access.allow[1]"),
        (json!({"access": {"deny": ["nope"]}}), "config.access.deny[0]"),
        (json!({"access": {"deny": ["::1/129"]}}), "config.access.deny[0]"),
        (json!({"access": {"deny": ["10.0.0.0/"]}}), "config.access.deny[0]"),
        (json!({"limit": 3}), "config.limit must be an object"),
        (json!({"limit": {"rps": -1}}), "config.limit.rps"),
        (json!({"limit": {"rps": 1.5}}), "config.limit.rps"),
        (json!({"limit": {"rps": 1, "status": 200}}), "config.limit.status"),
        (json!({"limit": {"connections": 1, "whitelist": ["1.2.3.4/40"]}}), "config.limit.whitelist[0]"),
        (json!({"max_body_size": "1m"}), "config.max_body_size"),
        (json!({"error_pages": {"codes": [302], "upstream": "a"}}), "config.error_pages.codes[0]"),
        (json!({"error_pages": {"codes": 503, "upstream": "a"}}), "config.error_pages.codes"),
        (json!({"error_pages": {"codes": [503], "upstream": 5}}), "config.error_pages.upstream"),
    ];
    for (cfg, want) in bad {
        let p = policy(port, vec![rule("r", "r.test", Some("a"), cfg.clone())], vec![group("a", &[a.port])]);
        let r = dp.api("PUT", "/policy", Some(&dp.token.clone()), &serde_json::to_vec(&p).unwrap());
        assert_eq!(r.status, 400, "{cfg}: {r:?}");
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(want) && e.contains("rule 0 (\"r\")"), "{cfg}: {e}");
    }
    let r = on(port, "r.test", "/");
    assert_eq!(r.status, 403, "the previous policy still serves: {r:?}");
    // the largest values the compiler emits (u32 limits, max_body_size below 2^53) are accepted
    let max = u32::MAX;
    let cfg = json!({"limit": {"rps": max, "rpm": max, "burst_multiplier": max, "connections": max, "status": 599},
                     "max_body_size": (1u64 << 53) - 1, "error_pages": {"codes": [400, 599], "upstream": "a",
                     "service": {"namespace": "n", "name": "s", "port": 65535}}});
    let p = policy(port, vec![rule("r", "r.test", Some("a"), cfg)], vec![group("a", &[a.port])]);
    dp.push(&p);
    assert_eq!(on(port, "r.test", "/").status, 200);
}

// ---------------------------------------------------------------------------------------------------------
// Rule manifests through `alb standalone`
// ---------------------------------------------------------------------------------------------------------

fn service_yaml(name: &str, b: &Backend) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n",
        port = b.port
    )
}

fn rule_yaml(name: &str, prefix: &str, config: &str) -> String {
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Rule\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e, alb2.cpaas.io/frontend: ft}}\nspec:\n  priority: 5\n  dslx: [{{type: URL, values: [[STARTS_WITH, {prefix}]]}}]\n  serviceGroup:\n    services: [{{name: svc, namespace: default, port: 80}}]\n  config: {config}\n"
    )
}

#[test]
fn rule_manifests_through_standalone() {
    let a = Backend::start("a");
    let errs = Backend::start("errors");
    let port = free_port();
    let rules = [
        rule_yaml("ep", "/status", "{error_pages: {codes: [503], service: {name: errsvc, port: 80}}}"),
        rule_yaml("ep-missing", "/missing", "{error_pages: {codes: [503], service: {name: nope, port: 80}}}"),
        rule_yaml("acl", "/acl", "{access: {allow: [10.0.0.0/8]}}"),
        rule_yaml("acl-bad", "/badacl", "{access: {allow: [127.0.0.1, not-an-address]}}"),
        rule_yaml("big", "/big", "{max_body_size: 10}"),
        rule_yaml("lim", "/lim", "{limit: {rps: 1, burst_multiplier: 1, status: 429}}"),
        rule_yaml("plain", "/plain", "{}"),
    ]
    .join("---\n");
    let ft = format!(
        "apiVersion: crd.alauda.io/v1\nkind: Frontend\nmetadata:\n  name: ft\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e}}\nspec:\n  port: {port}\n  protocol: http\n"
    );
    let gw = Standalone::start(&[
        ("ft.yaml", ft),
        ("svc.yaml", service_yaml("svc", &a)),
        ("errsvc.yaml", service_yaml("errsvc", &errs)),
        ("rules.yaml", rules),
    ]);
    gw.proc.wait_log(&format!("listening on 127.0.0.1:{port}"), Duration::from_secs(1));
    gw.proc.wait_log(
        "rejected Rule default/ep-missing: spec.config.error_pages.service: ServiceNotFound",
        Duration::from_secs(1),
    );
    gw.proc
        .wait_log("rejected Rule default/acl-bad: spec.config.access.allow[1]: InvalidAccess", Duration::from_secs(1));

    let r = get(port, "/status/503", &[]);
    assert_eq!((r.status, r.backend()), (200, "errors"), "{r:?}");
    assert_eq!(r.json()["headers"]["x-code"], "503");
    assert_eq!(r.json()["headers"]["x-namespace"], "default");
    let r = get(port, "/missing", &[]);
    assert_eq!((r.status, r.backend()), (200, "a"), "the Rule routes without error pages: {r:?}");
    assert_eq!(get(port, "/acl", &[]).status, 403);
    assert_eq!(get(port, "/badacl", &[]).status, 403, "a bad access entry fails closed");
    assert_eq!(request(port, "POST", "/big", &[], b"01234567890").status, 413);
    assert_eq!(request(port, "POST", "/big", &[], b"0123").status, 200);
    let codes: Vec<u16> = (0..5).map(|_| get(port, "/lim", &[]).status).collect();
    assert_eq!(&codes[..2], &[200, 200], "{codes:?}");
    assert!(codes.contains(&429), "{codes:?}");
    assert_eq!(get(port, "/plain", &[]).backend(), "a");
}
