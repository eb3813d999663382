//! L7 rule features through real nginx (docs/policy.md "Rule config (v1)", dataplane.md §4.3–§4.12):
//! policies pushed straight to the data plane (fast, exhaustive), then a few Rule manifests through
//! `alb standalone` (spec fields, annotations and Secrets → behaviour).

use crate::harness::{free_port, get, request, Backend, Conn, Dataplane, Resp, Standalone};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn group(name: &str, backends: &[&Backend]) -> Value {
    json!({"name": name, "mode": "http",
           "backends": backends.iter().map(|b| json!({"address": "127.0.0.1", "port": b.port, "weight": 1})).collect::<Vec<_>>()})
}

fn affinity_group(name: &str, backends: &[&Backend], policy: &str, attribute: &str) -> Value {
    let mut g = group(name, backends);
    g["session_affinity_policy"] = json!(policy);
    g["session_affinity_attribute"] = json!(attribute);
    g
}

/// A rule matching the path prefix `prefix` with the given config.
fn rule(name: &str, prefix: &str, upstream: Option<&str>, config: Value) -> Value {
    let mut r = json!({"name": name, "priority": 5, "complexity": 0,
                       "source": {"type": "rule", "namespace": "e2e", "name": name},
                       "match": ["STARTS_WITH", "URL", prefix], "config": config});
    if let Some(u) = upstream {
        r["upstream"] = json!(u);
    }
    r
}

fn policy(port: u16, rules: Vec<Value>, groups: Vec<Value>) -> Value {
    json!({"version": 1, "generation": 1, "http": {port.to_string(): {"rules": rules}}, "backend_groups": groups})
}

fn echo(r: &Resp) -> Value {
    r.json()
}

fn header_of(r: &Resp, name: &str) -> String {
    echo(r)["headers"][name].as_str().unwrap_or("<absent>").to_string()
}

fn headers_all<'a>(r: &'a Resp, name: &str) -> Vec<&'a str> {
    r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
}

#[test]
fn redirect_locations_and_codes() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let rules = vec![
        rule("fast", "/fast", None, json!({"redirect": {"url": "/t1-1"}})),
        rule("abs", "/abs", None, json!({"redirect": {"url": "https://other.test/x", "code": 301}})),
        rule("https", "/https", None, json!({"redirect": {"scheme": "https", "code": 308}})),
        rule(
            "full",
            "/old",
            None,
            json!({"redirect": {"host": "new.test", "port": 8080, "prefix_match": "/old", "replace_prefix": "/new", "code": 307}}),
        ),
        rule("url-and-host", "/uh", None, json!({"redirect": {"url": "/fixed", "host": "h.test"}})),
    ];
    dp.push(&policy(port, rules, vec![]));
    let host = [("Host", "shop.test")];
    let r = get(port, "/fast", &host);
    assert_eq!((r.status, r.header("location")), (302, Some("/t1-1")), "relative stays relative: {r:?}");
    assert_eq!(r.body, "");
    let r = get(port, "/abs", &host);
    assert_eq!((r.status, r.header("location")), (301, Some("https://other.test/x")));
    let r = get(port, "/https/a/b", &[("Host", "Shop.Test:8080")]);
    assert_eq!((r.status, r.header("location")), (308, Some("https://shop.test/https/a/b")), "host without port");
    let r = get(port, "/old/x/y", &host);
    assert_eq!((r.status, r.header("location")), (307, Some("http://new.test:8080/new/x/y")));
    let r = get(port, "/uh", &host);
    assert_eq!((r.status, r.header("location")), (302, Some("http://h.test/fixed")));
}

/// Deliberate choice: the original ALB never carries the query string over (dataplane.md §4.3); we keep that
/// by default and add `keep_query: true` for ssl-redirect style rules.
#[test]
fn redirect_drops_query_string_unless_keep_query() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let rules = vec![
        rule("drop", "/drop", None, json!({"redirect": {"scheme": "https"}})),
        rule("keep", "/keep", None, json!({"redirect": {"scheme": "https", "keep_query": true}})),
        rule("keep-fast", "/kf", None, json!({"redirect": {"url": "/t?x=1", "keep_query": true}})),
    ];
    dp.push(&policy(port, rules, vec![]));
    let host = [("Host", "q.test")];
    assert_eq!(get(port, "/drop/a?x=1&y=2", &host).header("location"), Some("https://q.test/drop/a"));
    assert_eq!(get(port, "/keep/a?x=1&y=2", &host).header("location"), Some("https://q.test/keep/a?x=1&y=2"));
    assert_eq!(get(port, "/keep/a", &host).header("location"), Some("https://q.test/keep/a"));
    assert_eq!(get(port, "/kf?y=2", &host).header("location"), Some("/t?x=1&y=2"));
}

#[test]
fn cors_preflight_and_response_headers() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let rules = vec![
        rule("any", "/any", Some("a"), json!({"cors": {}})),
        rule(
            "list",
            "/list",
            Some("a"),
            json!({"cors": {"allow_origin": ["https://a.test", "https://*.b.test"], "allow_headers": "X-A",
                            "allow_methods": "GET, POST", "expose_headers": "X-Total", "max_age": 600,
                            "allow_credentials": false}}),
        ),
    ];
    dp.push(&policy(port, rules, vec![group("a", &[&a])]));

    let r = request(port, "OPTIONS", "/any/x", &[("Origin", "https://z.test")], b"");
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.backend(), "", "preflight is not proxied");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, PUT, POST, DELETE, PATCH, OPTIONS"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("DNT,X-CustomHeader,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Authorization")
    );
    assert_eq!(r.header("access-control-max-age"), Some("1728000"));
    let r = get(port, "/any/x", &[("Origin", "https://z.test")]);
    assert_eq!((r.status, r.backend()), (200, "a"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-max-age"), None, "max-age only on preflights");

    let r = request(port, "OPTIONS", "/list", &[("Origin", "https://x.b.test")], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://x.b.test"), "wildcard origin echoed");
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(r.header("access-control-allow-headers"), Some("X-A"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    let r = get(port, "/list", &[("Origin", "https://a.test")]);
    assert_eq!((r.status, r.header("access-control-allow-origin")), (200, Some("https://a.test")));
    assert_eq!(r.header("access-control-expose-headers"), Some("X-Total"));
    let r = get(port, "/list", &[("Origin", "https://evil.test")]);
    assert_eq!((r.status, r.header("access-control-allow-origin")), (200, None), "origin not in the list");
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    let r = get(port, "/list", &[("Origin", "https://b.test")]);
    assert_eq!(r.header("access-control-allow-origin"), None, "*.b.test needs a label");
    let r = get(port, "/list", &[]);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://a.test,https://*.b.test"), "no Origin: the list");
}

#[test]
fn rewrite_prefix_and_regex_with_captures() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let rules = vec![
        rule("p1", "/foo", Some("a"), json!({"rewrite": {"prefix_match": "/foo", "replace_prefix": "/xyz"}})),
        rule("p2", "/abc/", Some("a"), json!({"rewrite": {"prefix_match": "/abc/", "replace_prefix": ""}})),
        rule("p3", "/strip", Some("a"), json!({"rewrite": {"prefix_match": "/strip"}})),
        rule("re", "/es_proxy", Some("a"), json!({"rewrite": {"regex": "/es_proxy(/|$)(.*)", "target": "/$2"}})),
        rule("re2", "/v/", Some("a"), json!({"rewrite": {"regex": "^/v/([^/]+)/(.*)$", "target": "/$2/by/$1"}})),
        rule("whole", "/whole", Some("a"), json!({"rewrite": {"regex": ".*", "target": "/fixed"}})),
        rule("first", "/first", Some("a"), json!({"rewrite": {"regex": "o", "target": "0"}})),
    ];
    dp.push(&policy(port, rules, vec![group("a", &[&a])]));
    let cases = [
        ("/foo/bar", "/xyz/bar"),
        ("/foo", "/xyz"),
        ("/foo/", "/xyz/"),
        ("/abc/2", "/2"),
        ("/strip", "/"),
        ("/strip/x", "/x"),
        ("/es_proxy/v1/_search?q=a%20b", "/v1/_search?q=a%20b"),
        ("/es_proxy", "/"),
        ("/v/alice/docs/1", "/docs/1/by/alice"),
        ("/whole/a/b?k=v", "/fixed?k=v"),
        ("/first/foo", "/first/f0o"), // only the first match is replaced
    ];
    for (path, want) in cases {
        let r = get(port, path, &[]);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(echo(&r)["uri"], want, "{path}");
    }
}

#[test]
fn request_and_response_header_rewrite_and_vhost() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let rules = vec![rule(
        "h",
        "/",
        Some("a"),
        json!({
            "vhost": "upstream.test",
            "rewrite_request": {
                "headers": {"X-Set": "s", "X-Replace": "new"},
                "headers_var": {"X-From-Cookie": "cookie_sid", "X-From-Arg": "param_q", "X-Method": "method",
                                "X-Missing": "cookie_nope"},
                "headers_remove": ["X-Secret"],
                "headers_add": {"X-Multi": ["1", "2"]},
                "headers_add_var": {"X-Multi2": ["remote_addr"]}
            },
            "rewrite_response": {
                "headers": {"X-Resp": "r", "Content-Type": "text/x-test"},
                "headers_remove": ["X-Backend-Gone"],
                "headers_add": {"X-Added": ["a1", "a2"]}
            }
        }),
    )];
    dp.push(&policy(port, rules, vec![group("a", &[&a])]));
    let r = get(
        port,
        "/x?q=hello%20w",
        &[
            ("Host", "client.test"),
            ("X-Replace", "old"),
            ("X-Secret", "pw"),
            ("X-Multi", "0"),
            ("Cookie", "sid=\"abc\""),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(header_of(&r, "host"), "upstream.test", "vhost");
    assert_eq!(header_of(&r, "x-set"), "s");
    assert_eq!(header_of(&r, "x-replace"), "new");
    assert_eq!(header_of(&r, "x-from-cookie"), "abc", "cookie value unquoted");
    assert_eq!(header_of(&r, "x-from-arg"), "hello w", "decoded query arg");
    assert_eq!(header_of(&r, "x-method"), "GET");
    assert_eq!(header_of(&r, "x-missing"), "<absent>", "absent variable: header not set");
    assert_eq!(header_of(&r, "x-secret"), "<absent>");
    // appended after the client's value (the echo server joins repeated headers)
    assert_eq!(header_of(&r, "x-multi"), "0, 1, 2");
    assert_eq!(header_of(&r, "x-multi2"), "127.0.0.1");
    assert_eq!(r.header("x-resp"), Some("r"));
    assert_eq!(r.header("content-type"), Some("text/x-test"));
    assert_eq!(headers_all(&r, "x-added"), vec!["a1", "a2"]);
}

/// A TLS backend (rcgen certificate, rustls) that answers one request per connection with the SNI it saw
/// and the Host header.
fn tls_backend() -> (u16, Arc<Mutex<Vec<String>>>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["backend.test".to_string()]).unwrap().self_signed(&key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let cfg = Arc::new(cfg);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let cfg = cfg.clone();
            let seen = seen2.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(cfg).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s);
                let mut reader = BufReader::new(&mut tls);
                let mut host = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(h) = line.strip_prefix("Host:").or_else(|| line.strip_prefix("host:")) {
                        host = h.trim().to_string();
                    }
                }
                let sni = tls.conn.server_name().unwrap_or("<none>").to_string();
                let body = format!("sni={sni} host={host}");
                seen.lock().unwrap().push(body.clone());
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\nx-backend: tls\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, seen)
}

#[test]
fn https_backend_gets_sni_from_host_or_vhost() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let (tport, _) = tls_backend();
    let g = json!({"name": "tls", "mode": "http", "backends": [{"address": "127.0.0.1", "port": tport, "weight": 1}]});
    let mut plain = rule("plain", "/plain", Some("tls"), json!({}));
    plain["backend_protocol"] = json!("https");
    let mut vh = rule("vh", "/vh", Some("tls"), json!({"vhost": "inner.test:8443"}));
    vh["backend_protocol"] = json!("https");
    dp.push(&policy(port, vec![plain, vh], vec![g]));
    let r = get(port, "/plain", &[("Host", "outer.test:81")]);
    assert_eq!((r.status, r.body.as_str()), (200, "sni=outer.test host=outer.test:81"), "{r:?}");
    let r = get(port, "/vh", &[("Host", "outer.test")]);
    assert_eq!((r.status, r.body.as_str()), (200, "sni=inner.test host=inner.test:8443"), "{r:?}");
}

#[test]
fn timeouts_per_rule_in_milliseconds() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let rules = vec![
        rule("short", "/short", Some("a"), json!({"timeout": {"proxy_read_timeout_ms": 300}})),
        rule(
            "long",
            "/",
            Some("a"),
            json!({"timeout": {"proxy_read_timeout_ms": 5000, "proxy_connect_timeout_ms": 1000}}),
        ),
    ];
    dp.push(&policy(port, rules, vec![group("a", &[&a])]));
    let t0 = Instant::now();
    let r = get(port, "/short/sleep/1500", &[]);
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.body, "X-Error: 504\n");
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(1200), "read timeout 300 ms, took {took:?}");
    let r = get(port, "/sleep/800", &[]);
    assert_eq!((r.status, r.backend()), (200, "a"));
}

#[test]
fn retries_are_capped_per_rule() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let live = Backend::start("live");
    let dead: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let g = |name: &str| {
        let mut bs: Vec<Value> = dead.iter().map(|p| json!({"address": "127.0.0.1", "port": p, "weight": 1})).collect();
        bs.push(json!({"address": "127.0.0.1", "port": live.port, "weight": 1}));
        json!({"name": name, "mode": "http", "backends": bs})
    };
    let rules = vec![
        rule("once", "/once", Some("g1"), json!({"retry": {"tries": 1}})),
        rule("default", "/", Some("g2"), json!({})),
    ];
    dp.push(&policy(port, rules, vec![g("g1"), g("g2")]));
    let mut c = Conn::open(port).unwrap();
    let mut fails = 0;
    for _ in 0..16 {
        let r = c.send("GET", "/once", &[], b"").unwrap();
        if r.status == 502 {
            fails += 1;
        } else {
            assert_eq!(r.backend(), "live");
        }
    }
    // 3 of 4 nodes are dead and nothing is retried: most requests fail
    assert!(fails >= 8, "tries=1 must not retry: {fails}/16 failed");
    for _ in 0..16 {
        let r = c.send("GET", "/x", &[], b"").unwrap();
        assert_eq!((r.status, r.backend()), (200, "live"), "default: up to 4 more tries");
    }
}

#[test]
fn affinity_by_header_is_sticky_and_moves_few_keys() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let bs: Vec<Backend> = (0..5).map(|i| Backend::start(&format!("b{i}"))).collect();
    let all: Vec<&Backend> = bs.iter().collect();
    let push = |members: &[&Backend]| {
        let rules = vec![rule("aff", "/", Some("g"), json!({}))];
        dp.push(&policy(port, rules, vec![affinity_group("g", members, "header", "X-User")]));
    };
    push(&all);
    let keys: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
    let mut c = Conn::open(port).unwrap();
    let map_of = |c: &mut Conn| -> HashMap<String, String> {
        keys.iter()
            .map(|k| {
                let r = c.send("GET", "/", &[("X-User", k)], b"").unwrap();
                assert_eq!(r.status, 200);
                (k.clone(), r.backend().to_string())
            })
            .collect()
    };
    let before = map_of(&mut c);
    assert_eq!(map_of(&mut c), before, "same key, same backend");
    let mut per: HashMap<&str, usize> = HashMap::new();
    for b in before.values() {
        *per.entry(b.as_str()).or_default() += 1;
    }
    assert_eq!(per.len(), 5, "every backend gets keys: {per:?}");
    for (b, n) in &per {
        assert!((30..=140).contains(n), "{b} got {n} of 400 keys: {per:?}");
    }
    // one of 5 endpoints goes away
    push(&all[..4]);
    let after = map_of(&mut c);
    let moved = keys.iter().filter(|k| before[*k] != after[*k]).count();
    let on_removed = before.values().filter(|b| *b == "b4").count();
    let moved_others = keys.iter().filter(|k| before[*k] != "b4" && before[*k] != after[*k]).count();
    let frac = moved as f64 / keys.len() as f64;
    eprintln!("affinity: {moved}/400 keys moved ({frac:.3}), {on_removed} were on the removed endpoint");
    assert_eq!(moved_others, 0, "keys of the remaining endpoints stay");
    assert!(frac < 0.35, "moved fraction {frac} should be ~1/5");
    assert_eq!(moved, on_removed);
}

#[test]
fn affinity_by_cookie_sets_the_cookie_and_sticks() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let bs: Vec<Backend> = (0..3).map(|i| Backend::start(&format!("c{i}"))).collect();
    let all: Vec<&Backend> = bs.iter().collect();
    let rules = vec![rule("default-name", "/d", Some("g1"), json!({})), rule("named", "/", Some("g2"), json!({}))];
    dp.push(&policy(
        port,
        rules,
        vec![affinity_group("g1", &all, "cookie", ""), affinity_group("g2", &all, "cookie", "route")],
    ));
    let r = get(port, "/d", &[]);
    let set = r.header("set-cookie").unwrap_or_else(|| panic!("no cookie: {r:?}")).to_string();
    assert!(set.starts_with("JSESSIONID=") && set.ends_with("; Path=/; HttpOnly"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let first = r.backend().to_string();
    for _ in 0..10 {
        let r = get(port, "/d", &[("Cookie", &cookie)]);
        assert_eq!(r.backend(), first, "sticky with {cookie}");
        assert_eq!(r.header("set-cookie"), None, "no new cookie when the client has one");
    }
    let r = get(port, "/x", &[]);
    assert!(r.header("set-cookie").unwrap().starts_with("route="), "{r:?}");
    // different cookie values spread over the backends
    let seen: HashSet<String> =
        (0..40).map(|i| get(port, "/x", &[("Cookie", &format!("route=k{i}"))]).backend().to_string()).collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn affinity_by_client_address() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let bs: Vec<Backend> = (0..4).map(|i| Backend::start(&format!("s{i}"))).collect();
    let all: Vec<&Backend> = bs.iter().collect();
    dp.push(&policy(
        port,
        vec![rule("sip", "/", Some("g"), json!({}))],
        vec![affinity_group("g", &all, "sip-hash", "")],
    ));
    let first = get(port, "/", &[]).backend().to_string();
    for _ in 0..12 {
        // X-Forwarded-For does not count: $remote_addr is the key
        let r = get(port, "/", &[("X-Forwarded-For", "10.9.9.9")]);
        assert_eq!(r.backend(), first);
    }
}

// `openssl passwd -apr1` vectors of dataplane.md §4.12, and a libxcrypt bcrypt hash of "secret"
const BCRYPT: &str = "$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a";

pub(crate) fn basic(user: &str, pw: &str) -> String {
    use std::fmt::Write as _;
    let raw = format!("{user}:{pw}");
    // tiny base64 encoder (the harness has no dependency for it)
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = raw.as_bytes();
    let mut out = String::from("Basic ");
    for ch in b.chunks(3) {
        let n = (ch[0] as u32) << 16 | (*ch.get(1).unwrap_or(&0) as u32) << 8 | *ch.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= ch.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    let _ = write!(out, "");
    out
}

#[test]
fn basic_auth_apr1_and_bcrypt() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let users = json!({
        "foo": {"algorithm": "apr1", "hash": "$apr1$W60B7kxR$kC.He7pPyJM2io6VH2VNS."},
        "sym": {"algorithm": "apr1", "hash": "$apr1$WEm2C/nC$MjXcOZacoKaDjPuE0.Xyc."},
        "long": {"algorithm": "apr1", "hash": "$apr1$FhnHptBM$4HP5UXIwuVHSvhZr/o96s."},
        "bob": {"algorithm": "bcrypt", "hash": BCRYPT}
    });
    let rules = vec![
        rule("broken", "/broken", Some("a"), json!({"auth": {"basic": {"err": "Secret ns/x does not exist"}}})),
        rule("auth", "/", Some("a"), json!({"auth": {"basic": {"realm": "Shop", "users": users}}})),
    ];
    dp.push(&policy(port, rules, vec![group("a", &[&a])]));
    let ok = |user: &str, pw: &str| {
        let h = basic(user, pw);
        let r = get(port, "/x", &[("Authorization", &h)]);
        assert_eq!((r.status, r.backend()), (200, "a"), "{user}:{pw}: {r:?}");
        assert_eq!(r.header("www-authenticate"), None);
    };
    ok("foo", "bar");
    ok("sym", "%^&*");
    ok("long", "1a2b3c%^&*()_+");
    ok("bob", "secret");
    ok("bob", "secret"); // memoized
    let fail = |headers: &[(&str, &str)], reason: &str| {
        let r = get(port, "/x", headers);
        assert_eq!((r.status, r.reason()), (401, reason), "{headers:?}: {r:?}");
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"Shop\""));
        assert_eq!(r.body, "");
    };
    fail(&[], "AuthFail : basic_auth but req no auth header");
    fail(&[("Authorization", "Bearer x")], "AuthFail : invalid Authorization scheme, not basic auth.");
    fail(&[("Authorization", "Basic ***")], "AuthFail : invalid base64 encoding");
    fail(&[("Authorization", &basic("foo", "baz").replace(':', ""))], "AuthFail : invalid user or passwd");
    fail(&[("Authorization", &basic("foo", "baz"))], "AuthFail : invalid user or passwd");
    fail(&[("Authorization", &basic("bob", "wrong"))], "AuthFail : invalid user or passwd");
    fail(&[("Authorization", &basic("nobody", "bar"))], "AuthFail : invalid user or passwd");
    fail(&[("Authorization", "Basic Zm9vYmFy")], "AuthFail : invalid format"); // "foobar"
    let r = get(port, "/broken", &[("Authorization", &basic("foo", "bar"))]);
    assert_eq!((r.status, r.reason()), (500, "AuthFail : invalid cfg Secret ns/x does not exist"));
}

/// A tiny auth service: answers `/auth/<code>` with that status; on 200 sets `X-Auth-User` from the request's
/// `X-Token` and a cookie; on 401 a `WWW-Authenticate`. Records every request's head.
fn auth_service() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let code: u16 =
                path.strip_prefix("/auth/").and_then(|c| c.get(..3)).and_then(|c| c.parse().ok()).unwrap_or(200);
            let token = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-token:").map(|v| v.trim().to_string()))
                .unwrap_or_default();
            seen2.lock().unwrap().push(head);
            let extra = match code {
                200 => format!("X-Auth-User: user-{token}\r\nSet-Cookie: auth=1; Path=/\r\n"),
                401 => "WWW-Authenticate: Bearer realm=\"a\"\r\n".to_string(),
                _ => String::new(),
            };
            let _ = write!(s, "HTTP/1.1 {code} X\r\n{extra}Content-Length: 2\r\n\r\nok");
        }
    });
    (port, seen)
}

#[test]
fn forward_auth_statuses_headers_and_signin() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let (ap, seen) = auth_service();
    let fwd = |code: &str, extra: Value| {
        let mut f = json!({"url": format!("http://127.0.0.1:{ap}/auth/{code}?uri=$escaped_request_uri"),
                           "upstream_headers": ["X-Auth-User"], "auth_headers": {"X-Host": "${host}"}});
        for (k, v) in extra.as_object().unwrap() {
            f[k] = v.clone();
        }
        json!({"auth": {"forward": f}})
    };
    let dead = free_port();
    let rules = vec![
        rule("ok", "/ok", Some("a"), fwd("200", json!({}))),
        rule("deny", "/deny", Some("a"), fwd("401", json!({}))),
        rule(
            "signin",
            "/signin",
            Some("a"),
            fwd(
                "401",
                json!({"signin": "https://login.test/?rd=$pass_access_scheme://$http_host$escaped_request_uri"}),
            ),
        ),
        rule("forbid", "/forbid", Some("a"), fwd("403", json!({}))),
        rule("weird", "/weird", Some("a"), fwd("418", json!({}))),
        rule("down", "/down", Some("a"), json!({"auth": {"forward": {"url": format!("http://127.0.0.1:{dead}/")}}})),
    ];
    dp.push(&policy(port, rules, vec![group("a", &[&a])]));

    let r = get(port, "/ok/x?y=1", &[("Host", "app.test"), ("X-Token", "t1")]);
    assert_eq!((r.status, r.backend()), (200, "a"), "{r:?}");
    assert_eq!(header_of(&r, "x-auth-user"), "user-t1", "upstream_headers copied into the upstream request");
    assert_eq!(r.header("set-cookie"), Some("auth=1; Path=/"), "auth cookie passed to the client on success");
    let head = seen.lock().unwrap().last().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /auth/200?uri=%2fok%2fx%3fy%3d1 http/1.1"), "{head}");
    for want in [
        "x-original-uri: /ok/x?y=1",
        "x-original-method: get",
        "x-sent-from: alb",
        "x-host: app.test",
        "x-token: t1",
        "x-original-url: http://app.test/ok/x?y=1",
        &format!("host: 127.0.0.1:{ap}"),
    ] {
        assert!(head.contains(want), "auth request lacks {want:?}: {head}");
    }

    let r = get(port, "/deny", &[]);
    assert_eq!((r.status, r.reason()), (401, "AuthFail : auth-service-status: 401"));
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"a\""));
    let r = get(port, "/signin/p?q=1", &[("Host", "app.test")]);
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("https://login.test/?rd=http://app.test%2Fsignin%2Fp%3Fq%3D1"));
    let r = get(port, "/forbid", &[]);
    assert_eq!((r.status, r.reason()), (403, "AuthFail : auth-service-status: 403"));
    let r = get(port, "/weird", &[]);
    assert_eq!((r.status, r.reason()), (500, "AuthFail : auth-service-status: 418"));
    let r = get(port, "/down", &[]);
    assert_eq!((r.status, r.reason()), (500, "AuthFail : send-auth-request-fail"));
}

#[test]
fn bad_feature_config_is_refused_and_the_previous_policy_kept() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let good = policy(port, vec![rule("r", "/", Some("a"), json!({"cors": {}}))], vec![group("a", &[&a])]);
    dp.push(&good);
    let bad = [
        (json!({"redirect": {"code": 200, "url": "/x"}}), "config.redirect.code"),
        (json!({"redirect": {"scheme": "ftp"}}), "config.redirect.scheme"),
        (json!({"cors": {"allow_origin": "x"}}), "config.cors.allow_origin"),
        (json!({"rewrite": {"regex": "(", "target": "/"}}), "config.rewrite.regex"),
        (json!({"rewrite_request": {"headers": {"bad name": "x"}}}), "config.rewrite_request.headers"),
        (json!({"rewrite_request": {"headers_var": {"X": "not a var"}}}), "config.rewrite_request.headers_var"),
        (json!({"rewrite_response": {"headers": {"X": "a\nb"}}}), "config.rewrite_response.headers.X"),
        (json!({"timeout": {"proxy_read_timeout_ms": -1}}), "config.timeout.proxy_read_timeout_ms"),
        (json!({"retry": {"tries": 0}}), "config.retry.tries"),
        (json!({"retry": {"tries": 9}}), "config.retry.tries"),
        (json!({"auth": {"basic": {"users": {"u": {"algorithm": "md5", "hash": "x"}}}}}), "config.auth.basic.users.u"),
        (
            json!({"auth": {"basic": {"users": {"u": {"algorithm": "apr1", "hash": "$apr1$x"}}}}}),
            "config.auth.basic.users.u.hash",
        ),
        (json!({"auth": {"forward": {"url": "ftp://x"}}}), "config.auth.forward.url"),
        (json!({"vhost": 3}), "config.vhost"),
        (json!("x"), "config must be an object"),
    ];
    for (cfg, want) in bad {
        let p = policy(port, vec![rule("r", "/", Some("a"), cfg.clone())], vec![group("a", &[&a])]);
        let r = dp.api("PUT", "/policy", Some(&dp.token.clone()), &serde_json::to_vec(&p).unwrap());
        assert_eq!(r.status, 400, "{cfg}: {r:?}");
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(want) && e.contains("rule 0 (\"r\")"), "{cfg}: {e}");
    }
    let r = request(port, "OPTIONS", "/", &[], b"");
    assert_eq!(r.status, 204, "the previous policy still serves");
}

/// A minimal WebSocket client: handshake, one masked text frame, one frame back.
#[test]
fn websocket_upgrade_through_the_gateway() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("ws");
    dp.push(&policy(port, vec![rule("ws", "/", Some("a"), json!({}))], vec![group("a", &[&a])]));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    let mut accept = String::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l.trim().is_empty() {
            break;
        }
        if l.to_ascii_lowercase().starts_with("sec-websocket-accept:") {
            accept = l.split_once(':').unwrap().1.trim().to_string();
        }
    }
    assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "RFC 6455 example key");
    for msg in ["hello", "second message"] {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | msg.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(msg.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        s.write_all(&frame).unwrap();
        let mut hdr = [0u8; 2];
        r.read_exact(&mut hdr).unwrap();
        assert_eq!(hdr[0], 0x81, "text frame");
        let mut payload = vec![0u8; (hdr[1] & 0x7f) as usize];
        r.read_exact(&mut payload).unwrap();
        assert_eq!(String::from_utf8(payload).unwrap(), format!("ws: {msg}"));
    }
}

/// nginx keeps idle upstream connections (`keepalive 320` per worker): many client connections, few backend
/// connections. The echo server names the peer (nginx's side of each backend connection).
#[test]
fn upstream_keepalive_reuses_backend_connections() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    dp.push(&policy(port, vec![rule("r", "/", Some("a"), json!({}))], vec![group("a", &[&a])]));
    let peers: HashSet<String> =
        (0..60).map(|_| echo(&get(port, "/", &[]))["peer"].as_str().unwrap().to_string()).collect();
    // sequential requests: at most one connection per worker (2 workers), allow some slack
    assert!(peers.len() <= 4, "60 requests on fresh client connections used {} backend connections", peers.len());
}

// ---------------------------------------------------------------------------------------------------------
// Rule manifests through `alb standalone`
// ---------------------------------------------------------------------------------------------------------

fn frontend_yaml(port: u16, config: &str) -> String {
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Frontend\nmetadata:\n  name: ft\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e}}\nspec:\n  port: {port}\n  protocol: http\n{config}"
    )
}

fn service_yaml(b: &Backend) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: svc}}\naddressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n",
        port = b.port
    )
}

fn rule_yaml(name: &str, prefix: &str, annotations: &str, spec: &str) -> String {
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Rule\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e, alb2.cpaas.io/frontend: ft}}\n{annotations}spec:\n  priority: 5\n  dslx: [{{type: URL, values: [[STARTS_WITH, {prefix}]]}}]\n  serviceGroup:\n    services: [{{name: svc, namespace: default, port: 80}}]\n{spec}"
    )
}

#[test]
fn rule_spec_fields_through_standalone() {
    let a = Backend::start("a");
    let port = free_port();
    let rules = [
        rule_yaml("legacy-redirect", "/r", "", "  redirectURL: /elsewhere\n  redirectCode: 301\n  config: {redirect: {code: 302, url: /ignored}}\n"),
        rule_yaml("cors", "/c", "", "  enableCORS: true\n  corsAllowOrigin: \"https://a.test,https://b.test\"\n  corsAllowHeaders: X-One\n"),
        rule_yaml("rewrite", "/es_proxy", "", "  rewrite_base: /es_proxy(/|$)(.*)\n  rewrite_target: /$2\n"),
        rule_yaml("vhost", "/v", "", "  vhost: inner.test\n  config: {timeout: {proxy_read_timeout_ms: 300}}\n"),
        rule_yaml(
            "headers",
            "/h",
            "  annotations:\n    alb.rule.cpaas.io/rewrite-request: '{\"headers\": {\"X-Req\": \"1\"}}'\n    alb.rule.cpaas.io/rewrite-response: '{\"headers\": {\"X-Resp\": \"2\"}}'\n",
            "",
        ),
        rule_yaml("bad-annotation", "/bad", "  annotations:\n    alb.rule.cpaas.io/rewrite-request: '{nope'\n", ""),
        rule_yaml("auth", "/auth", "", "  config: {auth: {basic: {realm: Shop, secret: default/users, secret_type: auth-file}}}\n"),
        rule_yaml("auth-missing", "/nosecret", "", "  config: {auth: {basic: {secret: default/missing}}}\n"),
        "apiVersion: crd.alauda.io/v1\nkind: Rule\nmetadata:\n  name: sticky\n  namespace: default\n  labels: {alb2.cpaas.io/name: e2e, alb2.cpaas.io/frontend: ft}\nspec:\n  priority: 5\n  dslx: [{type: URL, values: [[STARTS_WITH, /sticky]]}]\n  serviceGroup:\n    session_affinity_policy: cookie\n    session_affinity_attribute: sticky\n    services: [{name: svc, namespace: default, port: 80}]\n".to_string(),
    ]
    .join("---\n");
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: users, namespace: default}\ntype: Opaque\nstringData:\n  auth: |\n    foo:$apr1$W60B7kxR$kC.He7pPyJM2io6VH2VNS.\n";
    let gw = Standalone::start(&[
        ("ft.yaml", frontend_yaml(port, "")),
        ("svc.yaml", service_yaml(&a)),
        ("rules.yaml", rules),
        ("secret.yaml", secret.to_string()),
    ]);
    gw.proc.wait_log(&format!("listening on 127.0.0.1:{port}"), Duration::from_secs(1));
    gw.proc.wait_log("rejected Rule default/bad-annotation: metadata.annotations", Duration::from_secs(1));
    gw.proc.wait_log(
        "rejected Rule default/auth-missing: spec.config.auth.basic.secret: InvalidAuth",
        Duration::from_secs(1),
    );

    let r = get(port, "/r", &[]);
    assert_eq!((r.status, r.header("location")), (301, Some("/elsewhere")), "legacy fields win");
    let r = request(port, "OPTIONS", "/c", &[("Origin", "https://b.test")], b"");
    assert_eq!((r.status, r.header("access-control-allow-origin")), (204, Some("https://b.test")));
    assert_eq!(r.header("access-control-allow-headers"), Some("X-One"));
    assert_eq!(echo(&get(port, "/es_proxy/v1/x?q=1", &[]))["uri"], "/v1/x?q=1");
    let r = get(port, "/v", &[]);
    assert_eq!(header_of(&r, "host"), "inner.test");
    assert_eq!(get(port, "/v/sleep/1500", &[]).status, 504, "timeout from spec.config");
    let r = get(port, "/h", &[]);
    assert_eq!((header_of(&r, "x-req").as_str(), r.header("x-resp")), ("1", Some("2")));
    assert_eq!(get(port, "/bad", &[]).backend(), "a", "a bad annotation does not stop the Rule");
    assert_eq!(get(port, "/auth", &[]).status, 401);
    assert_eq!(get(port, "/auth", &[("Authorization", &basic("foo", "bar"))]).backend(), "a");
    let set = get(port, "/sticky", &[]).header("set-cookie").unwrap_or_default().to_string();
    assert!(set.starts_with("sticky=") && set.ends_with("; Path=/; HttpOnly"), "serviceGroup affinity: {set}");
    let r = get(port, "/nosecret", &[]);
    assert_eq!(r.status, 500, "missing Secret fails closed: {r:?}");
}
