//! Forward auth to host names: nginx's `resolver` (`--resolver`, else resolv.conf's nameservers) resolves the auth
//! URL's host per request. A tiny DNS server in the test answers one name; `alb standalone` serves Rules whose
//! forward auth URLs use it, an unknown name and an IP address.

use crate::harness::{free_port, get, Backend, Standalone};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A DNS server on 127.0.0.1 (UDP): `name` A → 127.0.0.1, every other question → NXDOMAIN. Keeps the names
/// asked for.
struct Dns {
    port: u16,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Dns {
    fn start(name: &'static str) -> Dns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let q = &buf[..n];
                if n < 12 {
                    continue;
                }
                // QNAME labels from offset 12, then QTYPE and QCLASS
                let (mut i, mut labels) = (12, Vec::new());
                while i < n && q[i] != 0 {
                    let l = q[i] as usize;
                    labels.push(String::from_utf8_lossy(&q[(i + 1).min(n)..(i + 1 + l).min(n)]).to_lowercase());
                    i += 1 + l;
                }
                let end = i + 5; // zero byte, QTYPE, QCLASS
                if end > n {
                    continue;
                }
                let qname = labels.join(".");
                let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
                log.lock().unwrap().push(qname.clone());
                let known = qname == name;
                let answer = known && qtype == 1;
                let mut r = Vec::with_capacity(64);
                r.extend_from_slice(&q[..2]); // id
                r.extend_from_slice(&[0x84 | (q[2] & 0x01), if known { 0x80 } else { 0x83 }]); // QR AA RD; RA, rcode
                r.extend_from_slice(&[0, 1, 0, answer as u8, 0, 0, 0, 0]);
                r.extend_from_slice(&q[12..end]);
                if answer {
                    // name pointer to the question, A, IN, TTL 30, 4 bytes: 127.0.0.1
                    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 127, 0, 0, 1]);
                }
                let _ = sock.send_to(&r, from);
            }
        });
        Dns { port, asked }
    }

    fn asked(&self, name: &str) -> usize {
        self.asked.lock().unwrap().iter().filter(|n| *n == name).count()
    }
}

/// An auth service: `/auth/<code>` answers `<code>` (200 with `X-Auth-User: alice`); keeps the Host headers.
fn auth_service() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let seen = hosts.clone();
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
            if let Some(h) = head.lines().find_map(|l| l.strip_prefix("host: ").or_else(|| l.strip_prefix("Host: "))) {
                seen.lock().unwrap().push(h.to_string());
            }
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let code: u16 =
                path.strip_prefix("/auth/").and_then(|c| c.get(..3)).and_then(|c| c.parse().ok()).unwrap_or(200);
            let extra = if code == 200 { "X-Auth-User: alice\r\n" } else { "" };
            let _ = write!(s, "HTTP/1.1 {code} X\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, hosts)
}

/// A TLS auth service (rcgen certificate, rustls): answers 200 and keeps "sni=<SNI> host=<Host header>".
fn tls_auth_service() -> (u16, Arc<Mutex<Vec<String>>>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["auth.e2e.test".to_string()]).unwrap().self_signed(&key).unwrap();
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
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(cfg.clone()).unwrap(), s);
            let mut host = String::new();
            let mut reader = BufReader::new(&mut tls);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(h) = line.strip_prefix("host:").or_else(|| line.strip_prefix("Host:")) {
                    host = h.trim().to_string();
                }
            }
            let sni = tls.conn.server_name().unwrap_or("<none>").to_string();
            log.lock().unwrap().push(format!("sni={sni} host={host}"));
            let _ = write!(tls, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (port, seen)
}

fn frontend(port: u16) -> String {
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Frontend\nmetadata:\n  name: ft\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e}}\nspec:\n  port: {port}\n  protocol: http\n  serviceGroup:\n    services: [{{name: svc, namespace: default, port: 80}}]\n"
    )
}

fn service(b: &Backend) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: svc}}\naddressType: IPv4\nports: [{{name: http, port: {}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n",
        b.port
    )
}

/// A Rule on `prefix`; `auth_url` empty → no auth.
fn rule(name: &str, prefix: &str, auth_url: &str) -> String {
    let config = if auth_url.is_empty() {
        String::new()
    } else {
        format!("  config: {{auth: {{forward: {{url: \"{auth_url}\", upstream_headers: [X-Auth-User]}}}}}}\n")
    };
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Rule\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e, alb2.cpaas.io/frontend: ft}}\nspec:\n  priority: 5\n  dslx: [{{type: URL, values: [[STARTS_WITH, {prefix}]]}}]\n  serviceGroup:\n    services: [{{name: svc, namespace: default, port: 80}}]\n{config}"
    )
}

fn nginx_conf(gw: &Standalone) -> String {
    std::fs::read_to_string(gw.runtime.path().join("conf/nginx.conf")).expect("nginx.conf in the runtime dir")
}

#[test]
fn forward_auth_to_a_host_name_through_the_resolver() {
    let dns = Dns::start("auth.e2e.test");
    let (ap, hosts) = auth_service();
    let (tp, tls_seen) = tls_auth_service();
    let a = Backend::start("a");
    let port = free_port();
    let rules = [
        rule("ok", "/ok", &format!("http://auth.e2e.test:{ap}/auth/200")),
        rule("deny", "/deny", &format!("http://auth.e2e.test:{ap}/auth/403")),
        rule("unknown", "/unknown", &format!("http://nope.e2e.test:{ap}/auth/200")),
        rule("tls", "/tls", &format!("https://auth.e2e.test:{tp}/auth")),
        rule("open", "/open", ""),
    ]
    .join("---\n");
    let gw = Standalone::start_with(
        &[("ft.yaml", frontend(port)), ("svc.yaml", service(&a)), ("rules.yaml", rules)],
        &["--resolver", &format!("127.0.0.1:{}", dns.port)],
        &[],
    );
    gw.proc.wait_log(&format!("listening on 127.0.0.1:{port}"), Duration::from_secs(2));
    let conf = nginx_conf(&gw);
    assert!(conf.contains(&format!("    resolver 127.0.0.1:{} valid=30s ipv6=off;\n", dns.port)), "{conf}");
    assert!(!gw.proc.logs().iter().any(|l| l.contains("rejected Rule")), "{:?}", gw.proc.logs());

    for _ in 0..3 {
        let r = get(port, "/ok/x", &[]);
        assert_eq!((r.status, r.backend()), (200, "a"), "{}", r.body);
        let sent: serde_json::Value = r.json();
        assert_eq!(sent["headers"]["x-auth-user"], "alice", "auth answer header reaches the upstream: {sent}");
    }
    assert!(dns.asked("auth.e2e.test") >= 1, "nginx asked our DNS server");
    let want = format!("auth.e2e.test:{ap}");
    assert!(hosts.lock().unwrap().iter().all(|h| *h == want), "Host sent: {:?}", hosts.lock().unwrap());
    assert_eq!(hosts.lock().unwrap().len(), 3);

    let r = get(port, "/deny", &[]);
    assert_eq!((r.status, r.reason()), (403, "AuthFail : auth-service-status: 403"));

    let r = get(port, "/unknown", &[]);
    assert_eq!((r.status, r.reason()), (500, "AuthFail : send-auth-request-fail"));
    let line = gw.proc.wait_log("alb: forward auth connect nope.e2e.test", Duration::from_secs(5));
    assert!(line.contains("could not be resolved"), "{line}");
    assert!(dns.asked("nope.e2e.test") >= 1);

    // https: SNI is the name, Host the URL's host:port
    let r = get(port, "/tls", &[]);
    assert_eq!((r.status, r.backend()), (200, "a"), "{}", r.body);
    assert_eq!(*tls_seen.lock().unwrap(), vec![format!("sni=auth.e2e.test host=auth.e2e.test:{tp}")]);

    // other routes unaffected
    let r = get(port, "/open", &[]);
    assert_eq!((r.status, r.backend()), (200, "a"));
    let r = get(port, "/ok", &[]);
    assert_eq!((r.status, r.backend()), (200, "a"));
}

#[test]
fn without_a_resolver_host_names_are_refused_at_policy_time() {
    let (ap, _) = auth_service();
    let a = Backend::start("a");
    let port = free_port();
    // no usable nameserver: hostile lines are skipped, never reach nginx.conf
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "search cluster.local\nnameserver dns.example\nnameserver 1.2.3.4;include /etc/passwd;\nnameserver }\n",
    )
    .unwrap();
    let rules = [
        rule("byname", "/byname", &format!("http://auth.e2e.test:{ap}/auth/200")),
        rule("byip", "/byip", &format!("http://127.0.0.1:{ap}/auth/200")),
        rule("open", "/open", ""),
    ]
    .join("---\n");
    let gw = Standalone::start_with(
        &[("ft.yaml", frontend(port)), ("svc.yaml", service(&a)), ("rules.yaml", rules)],
        &["--resolv-conf", resolv.to_str().unwrap()],
        &[],
    );
    gw.proc.wait_log(&format!("listening on 127.0.0.1:{port}"), Duration::from_secs(2));
    let conf = nginx_conf(&gw);
    assert!(!conf.contains("\n    resolver "), "{conf}");
    assert!(!conf.contains("passwd") && !conf.contains("1.2.3.4") && !conf.contains("dns.example"));
    let line = gw.proc.wait_log("rejected Rule default/byname", Duration::from_secs(2));
    assert!(line.contains("InvalidAuth") && line.contains("auth.e2e.test") && line.contains("resolver"), "{line}");

    // fail closed: the refused auth does not open the route
    let r = get(port, "/byname", &[]);
    assert_eq!(r.status, 500, "{}", r.body);
    assert_ne!(r.backend(), "a");
    let r = get(port, "/byip", &[]);
    assert_eq!((r.status, r.backend()), (200, "a"));
    let r = get(port, "/open", &[]);
    assert_eq!((r.status, r.backend()), (200, "a"));
}

/// `alb dataplane` with extra flags; returns (process, api port, http port, token).
fn dataplane(flags: &[&str]) -> (crate::harness::Proc, tempfile::TempDir, u16, u16, String) {
    let runtime = tempfile::tempdir().unwrap();
    // nginx workers may run as another user than the test (root → nobody)
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (api, http, metrics) = (free_port(), free_port(), free_port());
    let mut cmd = std::process::Command::new(crate::harness::alb_bin());
    cmd.arg("dataplane").arg("--runtime-dir").arg(runtime.path()).args([
        "--api-port",
        &api.to_string(),
        "--bind",
        "127.0.0.1",
        "--workers",
        "1",
        "--metrics-port",
        &metrics.to_string(),
        "--http-port",
        &http.to_string(),
    ]);
    cmd.args(flags);
    let proc = crate::harness::Proc::spawn("alb dataplane", &mut cmd);
    proc.wait_log("data plane ready", Duration::from_secs(20));
    let token = std::fs::read_to_string(runtime.path().join("policy-token")).unwrap().trim().to_string();
    (proc, runtime, api, http, token)
}

fn put_policy(api: u16, token: &str, port: u16, auth_url: &str, b: &Backend) -> crate::harness::Resp {
    let p = serde_json::json!({"version": 1, "generation": 1, "http": {port.to_string(): {"rules": [
        {"name": "r", "priority": 5, "complexity": 0, "source": {"type": "rule", "namespace": "e2e", "name": "r"},
         "match": ["STARTS_WITH", "URL", "/"], "upstream": "a",
         "config": {"auth": {"forward": {"url": auth_url}}}}]}},
        "backend_groups": [{"name": "a", "mode": "http",
                            "backends": [{"address": "127.0.0.1", "port": b.port, "weight": 1}]}]});
    let auth = format!("Bearer {token}");
    crate::harness::request(api, "PUT", "/policy", &[("Authorization", &auth)], &serde_json::to_vec(&p).unwrap())
}

/// The Lua schema checks the auth URL host, and refuses a host name when nginx.conf has no resolver.
#[test]
fn lua_schema_checks_auth_hosts_and_the_resolver() {
    let (ap, _) = auth_service();
    let a = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "options ndots:5\n").unwrap();
    let (_p, _rt, api, port, token) = dataplane(&["--resolv-conf", resolv.to_str().unwrap()]);
    let r = put_policy(api, &token, port, &format!("http://auth.e2e.test:{ap}/auth/200"), &a);
    assert_eq!(r.status, 400, "{r:?}");
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(e.contains("config.auth.forward.url host name auth.e2e.test needs a resolver"), "{e}");
    for bad in
        ["http://a_b/x", "http://a@b/x", "http://1.2.3/x", "http://a:0/", "http://a:x/", "http://[zz]/", "http://a..b/"]
    {
        let r = put_policy(api, &token, port, bad, &a);
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(r.json()["error"].as_str().unwrap().contains("config.auth.forward.url"), "{bad}: {r:?}");
    }
    let r = put_policy(api, &token, port, &format!("http://127.0.0.1:{ap}/auth/200"), &a);
    assert_eq!(r.status, 200, "an IP address needs no resolver: {r:?}");

    // with a resolver the same host name is accepted
    let dns = Dns::start("auth.e2e.test");
    let (_p2, _rt2, api2, port2, token2) = dataplane(&["--resolver", &format!("127.0.0.1:{}", dns.port)]);
    let r = put_policy(api2, &token2, port2, &format!("http://auth.e2e.test:{ap}/auth/200"), &a);
    assert_eq!(r.status, 200, "{r:?}");
}
