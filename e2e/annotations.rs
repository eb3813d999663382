//! ingress-nginx / ALB annotations through real nginx (docs/annotations.md): Ingress manifests in the folder of
//! `alb standalone` (translated in memory exactly as the leader writes Rules), requests through nginx, expected
//! status, headers and backend. Then the controller against the real API server: Warning Events for a bad
//! value and a snippet, the rest of the Ingress and other Ingresses unaffected. Then the injection test.

use crate::harness::{free_port, get, request, Backend, Resp, Standalone};
use crate::l7::basic;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

fn echo(r: &Resp) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not an echo reply ({e}): {r:?}"))
}

fn header_sent(r: &Resp, name: &str) -> String {
    echo(r)["headers"][name].as_str().unwrap_or("").to_string()
}

/// Service `name` in `shop` (port 80) with one ready endpoint slice per backend port.
fn service(name: &str, ports: &[u16]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n"
    );
    for (i, port) in ports.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: shop\n  labels: {{kubernetes.io/service-name: {name}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n"
        ));
    }
    out
}

/// An Ingress `name` in `shop`: annotations (YAML map lines, already quoted), one host, paths
/// `(path, pathType, service)`, optional extra `spec` lines.
fn ingress(name: &str, annotations: &[(&str, &str)], host: &str, paths: &[(&str, &str, &str)], extra: &str) -> String {
    let annos: String = annotations
        .iter()
        .map(|(k, v)| {
            let k = if k.contains('/') { k.to_string() } else { format!("nginx.ingress.kubernetes.io/{k}") };
            format!("    {k}: {}\n", serde_json::to_string(v).unwrap())
        })
        .collect();
    let annos = if annos.is_empty() { String::new() } else { format!("  annotations:\n{annos}") };
    let paths: String = paths
        .iter()
        .map(|(p, t, s)| {
            format!(
                "          - {{path: {}, pathType: {t}, backend: {{service: {{name: {s}, port: {{number: 80}}}}}}}}\n",
                serde_json::to_string(p).unwrap()
            )
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: shop\n{annos}spec:\n{extra}  rules:\n    - host: {host}\n      http:\n        paths:\n{paths}"
    )
}

/// A tiny forward-auth service: `/auth/<code>` answers that status; 200 sets `X-Auth-User: alice`.
fn auth_service() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
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
            let extra = if code == 200 { "X-Auth-User: alice\r\n" } else { "" };
            let _ = write!(s, "HTTP/1.1 {code} X\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    port
}

const USERS: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: users, namespace: shop}\ntype: Opaque\nstringData:\n  auth: |\n    foo:$apr1$W60B7kxR$kC.He7pPyJM2io6VH2VNS.\n";

fn start(files: &[(&str, String)], http: u16, https: u16) -> Standalone {
    let gw = Standalone::start_with(
        files,
        &["--ingress-http-port", &http.to_string(), "--ingress-https-port", &https.to_string()],
        &[],
    );
    gw.proc.wait_log(&format!("listening on 127.0.0.1:{http}"), Duration::from_secs(2));
    gw
}

#[test]
fn annotation_groups_through_nginx() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dead = free_port(); // nothing listens there
    let auth = auth_service();
    let (port, https) = (free_port(), free_port());
    let svcs =
        [service("svc-a", &[a.port]), service("svc-b", &[b.port]), service("svc-flaky", &[dead, a.port])].join("---\n");
    let pre = ("Prefix", "svc-a");
    let ings = [
        ingress("rw", &[("rewrite-target", "/$2")], "rw.test", &[("/api(/|$)(.*)", "ImplementationSpecific", "svc-a")], ""),
        ingress("rw-plain", &[("rewrite-target", "/new")], "rw2.test", &[("/old", pre.0, pre.1)], ""),
        ingress("regex", &[("use-regex", "true")], "re.test", &[("/v[0-9]+/items", pre.0, "svc-b")], ""),
        ingress("root", &[("app-root", "/app")], "root.test", &[("/", pre.0, pre.1)], ""),
        ingress(
            "perm",
            &[("permanent-redirect", "https://new.test/x"), ("permanent-redirect-code", "308")],
            "perm.test",
            &[("/", pre.0, pre.1)],
            "",
        ),
        ingress("temp", &[("temporal-redirect", "/moved")], "temp.test", &[("/", pre.0, pre.1)], ""),
        ingress("www", &[("from-to-www-redirect", "true")], "www.shop.test", &[("/", pre.0, pre.1)], ""),
        ingress("force", &[("force-ssl-redirect", "true")], "force.test", &[("/", pre.0, pre.1)], ""),
        // secure.test has TLS: its http Rules redirect by default; plain.test (same Ingress) keeps http.
        ingress("ssl", &[], "secure.test", &[("/", pre.0, pre.1)], "  tls: [{hosts: [secure.test]}]\n")
            + "    - host: plain.test\n      http:\n        paths:\n          - {path: /, pathType: Prefix, backend: {service: {name: svc-b, port: {number: 80}}}}\n",
        // TLS-only Ingress: an explicit ssl-redirect puts it on the http Frontend too, to redirect.
        ingress("tls-only", &[("ssl-redirect", "true")], "tlsonly.test", &[("/", pre.0, pre.1)], "  tls: [{hosts: [tlsonly.test]}]\n"),
        ingress(
            "cors",
            &[
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://a.test, https://b.test"),
                ("cors-allow-methods", "GET, POST"),
                ("cors-allow-headers", "X-A"),
                ("cors-expose-headers", "X-Total"),
                ("cors-allow-credentials", "false"),
                ("cors-max-age", "60"),
            ],
            "cors.test",
            &[("/", pre.0, pre.1)],
            "",
        ),
        ingress("xfp", &[("x-forwarded-prefix", "/pre"), ("upstream-vhost", "inner.test")], "xfp.test", &[("/", pre.0, pre.1)], ""),
        ingress("slow", &[("proxy-read-timeout", "1")], "slow.test", &[("/", pre.0, pre.1)], ""),
        ingress(
            "hdr",
            &[
                ("alb.ingress.cpaas.io/rewrite-request", r#"{"headers": {"X-Req": "1"}, "headers_remove": ["X-Drop"]}"#),
                ("alb.ingress.cpaas.io/rewrite-response", r#"{"headers": {"X-Resp": "2"}}"#),
            ],
            "hdr.test",
            &[("/", pre.0, pre.1)],
            "",
        ),
        ingress("flaky1", &[("proxy-next-upstream-tries", "1")], "flaky1.test", &[("/", pre.0, "svc-flaky")], ""),
        ingress("flaky", &[], "flaky.test", &[("/", pre.0, "svc-flaky")], ""),
        ingress("flaky-off", &[("proxy-next-upstream", "off")], "flakyoff.test", &[("/", pre.0, "svc-flaky")], ""),
        // Prefix precedence: index.<r>-<p>.alb.ingress > alb.ingress > nginx.ingress.
        ingress(
            "idx",
            &[
                ("upstream-vhost", "nginx.test"),
                ("alb.ingress.cpaas.io/upstream-vhost", "alb.test"),
                ("index.0-1.alb.ingress.cpaas.io/upstream-vhost", "index.test"),
            ],
            "idx.test",
            &[("/p0", pre.0, pre.1), ("/p1", pre.0, pre.1)],
            "",
        ),
        ingress(
            "moved",
            &[("redirect-host", "new.test"), ("redirect-prefix-match", "/old"), ("redirect-replace-prefix", "/new"), ("redirect-code", "301")],
            "moved.test",
            &[("/", pre.0, pre.1)],
            "",
        ),
        ingress("basic", &[("auth-type", "basic"), ("auth-secret", "users"), ("auth-realm", "Shop")], "basic.test", &[("/", pre.0, pre.1)], ""),
        ingress(
            "fwd",
            &[("auth-url", &format!("http://127.0.0.1:{auth}/auth/200")), ("auth-response-headers", "X-Auth-User")],
            "fwd.test",
            &[("/", pre.0, pre.1)],
            "",
        ),
        ingress(
            "fwd-deny",
            &[("auth-url", &format!("http://127.0.0.1:{auth}/auth/401")), ("auth-signin", "https://login.test/start")],
            "fwd401.test",
            &[("/", pre.0, pre.1)],
            "",
        ),
        ingress("alias", &[("server-alias", "alias.test")], "main.test", &[("/", pre.0, "svc-b")], ""),
        ingress(
            "bad",
            &[("proxy-read-timeout", "soon"), ("configuration-snippet", "return 200 'pwned';"), ("auth-type", "digest")],
            "bad.test",
            &[("/open", pre.0, pre.1)],
            "",
        ),
        ingress("bad-ok", &[("proxy-read-timeout", "soon")], "badok.test", &[("/", pre.0, "svc-b")], ""),
    ]
    .join("---\n");
    let gw = start(&[("svc.yaml", svcs), ("ing.yaml", ings), ("users.yaml", USERS.to_string())], port, https);
    let h = |host: &'static str| [("Host", host)];

    // rewrite-target with captures of an ImplementationSpecific regex path; query kept.
    assert_eq!(echo(&get(port, "/api/v1/x?q=1", &h("rw.test")))["uri"], "/v1/x?q=1");
    assert_eq!(echo(&get(port, "/api", &h("rw.test")))["uri"], "/");
    // Without captures the whole path becomes the target (ingress-nginx semantics).
    assert_eq!(echo(&get(port, "/old/deep/x", &h("rw2.test")))["uri"], "/new");
    // use-regex: a Prefix path is a regex.
    assert_eq!(get(port, "/v2/items", &h("re.test")).backend(), "b");
    assert_eq!(get(port, "/vx/items", &h("re.test")).status, 404);

    // app-root: only `/` redirects.
    let r = get(port, "/", &h("root.test"));
    assert_eq!((r.status, r.header("location")), (302, Some("/app")));
    assert_eq!(get(port, "/app", &h("root.test")).backend(), "a");

    // permanent / temporal redirects with codes.
    let r = get(port, "/any?x=1", &h("perm.test"));
    assert_eq!((r.status, r.header("location")), (308, Some("https://new.test/x")));
    let r = get(port, "/any", &h("temp.test"));
    assert_eq!((r.status, r.header("location")), (302, Some("/moved")));

    // from-to-www: the bare host redirects to www (path and query kept), www routes.
    let r = get(port, "/p?q=1", &h("shop.test"));
    assert_eq!((r.status, r.header("location")), (308, Some("http://www.shop.test/p?q=1")));
    assert_eq!(get(port, "/p", &h("www.shop.test")).backend(), "a");

    // ssl redirects (308 to the https port, query kept).
    let r = get(port, "/x?q=1", &h("force.test"));
    let to = format!("https://force.test:{https}/x?q=1");
    assert_eq!((r.status, r.header("location")), (308, Some(to.as_str())));
    let r = get(port, "/s", &h("secure.test"));
    let to = format!("https://secure.test:{https}/s");
    assert_eq!((r.status, r.header("location")), (308, Some(to.as_str())), "TLS host: ssl-redirect defaults on");
    assert_eq!(get(port, "/s", &h("plain.test")).backend(), "b", "no TLS: no redirect");
    let r = get(port, "/t?x=1", &h("tlsonly.test"));
    let to = format!("https://tlsonly.test:{https}/t?x=1");
    assert_eq!((r.status, r.header("location")), (308, Some(to.as_str())));

    // CORS: preflight answered, listed origin echoed, every cors-* key applied.
    let r = request(port, "OPTIONS", "/", &[("Host", "cors.test"), ("Origin", "https://b.test")], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://b.test"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(r.header("access-control-allow-headers"), Some("X-A"));
    assert_eq!(r.header("access-control-allow-credentials"), None, "credentials false");
    assert_eq!(r.header("access-control-max-age"), Some("60"));
    let r = get(port, "/", &[("Host", "cors.test"), ("Origin", "https://a.test")]);
    assert_eq!((r.backend(), r.header("access-control-allow-origin")), ("a", Some("https://a.test")));
    assert_eq!(r.header("access-control-expose-headers"), Some("X-Total"));
    let r = get(port, "/", &[("Host", "cors.test"), ("Origin", "https://evil.test")]);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // x-forwarded-prefix and upstream-vhost.
    let r = get(port, "/", &h("xfp.test"));
    assert_eq!(header_sent(&r, "x-forwarded-prefix"), "/pre");
    assert_eq!(header_sent(&r, "host"), "inner.test");

    // alb.ingress.<d>/rewrite-request / -response: request and response header changes.
    let r = get(port, "/", &[("Host", "hdr.test"), ("X-Drop", "x")]);
    assert_eq!((header_sent(&r, "x-req").as_str(), header_sent(&r, "x-drop").as_str()), ("1", ""));
    assert_eq!(r.header("x-resp"), Some("2"));

    // proxy-read-timeout 1 s: a slow backend → 504 within about the timeout.
    let t = Instant::now();
    assert_eq!(get(port, "/sleep/3000", &h("slow.test")).status, 504);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2800), "{took:?}");
    assert_eq!(get(port, "/sleep/100", &h("slow.test")).backend(), "a");

    // proxy-next-upstream-tries 1: the dead endpoint is not retried; by default it is.
    let fails = (0..12).filter(|_| get(port, "/", &h("flaky1.test")).status == 502).count();
    assert!(fails > 0, "tries 1 must surface the dead endpoint");
    assert!((0..12).all(|_| get(port, "/", &h("flaky.test")).backend() == "a"), "retried by default");
    let fails = (0..12).filter(|_| get(port, "/", &h("flakyoff.test")).status == 502).count();
    assert!(fails > 0, "proxy-next-upstream off: no retry");

    // Prefix precedence, per path.
    assert_eq!(header_sent(&get(port, "/p0", &h("idx.test")), "host"), "alb.test");
    assert_eq!(header_sent(&get(port, "/p1", &h("idx.test")), "host"), "index.test");

    // ALB redirect keys: host + prefix replacement, code.
    let r = get(port, "/old/a", &h("moved.test"));
    assert_eq!((r.status, r.header("location")), (301, Some("http://new.test/new/a")));

    // basic auth from the Secret manifest.
    let r = get(port, "/", &h("basic.test"));
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Basic realm=\"Shop\"")));
    let ok = get(port, "/", &[("Host", "basic.test"), ("Authorization", &basic("foo", "bar"))]);
    assert_eq!((ok.status, ok.backend()), (200, "a"));
    let r = get(port, "/", &[("Host", "basic.test"), ("Authorization", &basic("foo", "nope"))]);
    assert_eq!(r.status, 401);

    // forward auth against a real local auth service.
    let r = get(port, "/", &h("fwd.test"));
    assert_eq!((r.status, r.backend()), (200, "a"));
    assert_eq!(header_sent(&r, "x-auth-user"), "alice", "auth-response-headers copied upstream");
    let r = get(port, "/p?q=1", &h("fwd401.test"));
    assert_eq!(r.status, 302);
    let loc = r.header("location").unwrap_or("");
    assert!(loc.starts_with("https://login.test/start?rd=http://fwd401.test"), "{loc}");

    // server-alias.
    assert_eq!(get(port, "/", &h("alias.test")).backend(), "b");
    assert_eq!(get(port, "/", &h("main.test")).backend(), "b");

    // Bad values: warnings name key and value; the snippet is refused; digest fails closed; the rest routes.
    let line = gw.proc.wait_log(
        "ingress shop/bad: InvalidAnnotation: annotation nginx.ingress.kubernetes.io/proxy-read-timeout",
        Duration::from_secs(2),
    );
    assert!(line.contains("\"soon\""), "{line}");
    gw.proc.wait_log(
        "ingress shop/bad: RefusedAnnotation: annotation nginx.ingress.kubernetes.io/configuration-snippet",
        Duration::from_secs(1),
    );
    let line = gw.proc.wait_log(
        "ingress shop/bad: InvalidAnnotation: annotation nginx.ingress.kubernetes.io/auth-type",
        Duration::from_secs(1),
    );
    assert!(line.contains("digest"), "{line}");
    let r = get(port, "/open", &h("bad.test"));
    assert_eq!(r.status, 500, "digest auth fails closed: {r:?}");
    assert!(!r.body.contains("pwned"));
    assert_eq!(get(port, "/", &h("badok.test")).backend(), "b", "an ignored bad value leaves the path routed");
}

/// Hosts, paths, header names and annotation values with quotes, braces, semicolons, `$` and newlines: nginx.conf
/// is byte-identical, nginx is not reloaded, the other routes keep working.
#[test]
fn hostile_ingress_never_alters_nginx_conf() {
    let a = Backend::start("a");
    let port = free_port();
    let good = ingress("good", &[], "good.test", &[("/", "Prefix", "svc-a")], "");
    let gw = start(&[("svc.yaml", service("svc-a", &[a.port])), ("good.yaml", good)], port, free_port());
    let conf_path = gw.runtime.path().join("conf/nginx.conf");
    let before = std::fs::read(&conf_path).expect("nginx.conf");
    let pids = gw.pids();
    let evil = "x\"; } server { listen 1; } location / { return 200 $host; #\n}";
    let hostile = [
        ingress(
            "evil",
            &[
                ("rewrite-target", evil),
                ("upstream-vhost", evil),
                ("x-forwarded-prefix", "/p\"}{;$host"),
                ("auth-realm", evil),
                ("cors-allow-headers", "X-A\"; add_header X 1;"),
                ("server-alias", "a.test; }"),
                ("permanent-redirect", "/x;\n return 200"),
                ("configuration-snippet", "return 200 'pwned';"),
                ("server-snippet", "location /pwn { return 200; }"),
                ("alb.ingress.cpaas.io/rewrite-request", "{\"headers\": {\"X-A;\\n\": \"$x}\"}}"),
                ("alb.ingress.cpaas.io/rewrite-response", "{\"headers\": {\"X-R\": \"v}; return 200;\"}}"),
            ],
            "\"evil.test;\"",
            &[
                ("/e\"; } location /x { return 200; } #", "ImplementationSpecific", "svc-a"),
                ("/$host{;}\n", "Prefix", "svc-a"),
            ],
            "",
        ),
        ingress(
            "evil2",
            &[("enable-cors", "true"), ("cors-allow-origin", "https://a.test\"; }")],
            "evil2.test",
            &[("/", "Prefix", "svc-a")],
            "",
        ),
    ]
    .join("---\n");
    gw.change(|g| g.write("evil.yaml", &hostile));
    gw.proc.wait_log("ingress shop/evil: RefusedAnnotation", Duration::from_secs(2));
    assert_eq!(std::fs::read(&conf_path).expect("nginx.conf"), before, "nginx.conf changed");
    assert_eq!(gw.pids(), pids, "no reload");
    assert!(!gw.proc.logs().iter().any(|l| l.contains("nginx reloaded")));
    assert_eq!(get(port, "/", &[("Host", "good.test")]).backend(), "a", "other routes unaffected");
    let r = get(port, "/x", &[("Host", "evil2.test"), ("Origin", "https://a.test")]);
    assert_eq!(r.backend(), "a", "the bad origin list is ignored, the route works: {r:?}");
    let r = get(port, "/pwn", &[("Host", "good.test")]);
    assert_eq!(r.backend(), "a", "no snippet location exists");
}

// ---------------------------------------------------------------------------------------------------------
// Through the real API server: Warning Events on the Ingress.
// ---------------------------------------------------------------------------------------------------------

mod cluster {
    use crate::harness::cluster::Cluster;
    use crate::harness::{alb_bin, free_port, Proc};
    use serde_json::Value;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// The test host's address (e2e/testhost/up; the API server refuses loopback endpoint addresses).
    fn host_ip() -> String {
        static IP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        IP.get_or_init(|| {
            let out = Command::new(crate::harness::repo_dir().join("e2e/testhost/up")).output().expect("testhost/up");
            assert!(out.status.success(), "e2e/testhost/up: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
        })
        .clone()
    }

    /// `alb echo-server` in the test host's network namespace; returns (port, process).
    fn backend(name: &str) -> (u16, Proc) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", "alb-e2e"])
            .arg(alb_bin())
            .args(["echo-server", "--listen", &format!("{}:0", host_ip()), "--name", name])
            .stdout(Stdio::piped());
        let mut proc = Proc::spawn(&format!("backend {name}"), &mut cmd);
        let mut line = String::new();
        BufReader::new(proc.child.stdout.take().expect("stdout")).read_line(&mut line).expect("echo-server address");
        let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).expect("echo-server port");
        (port, proc)
    }

    fn service(c: &Cluster, ns: &str, name: &str, port: u16) {
        c.apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  clusterIP: None\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}\n",
            ip = host_ip()
        ));
    }

    /// `(status, x-backend)` of `GET path` on 127.0.0.1:port.
    fn get(port: u16, path: &str) -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, _) = text.split_once("\r\n\r\n")?;
        let status = head.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
        let backend = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("x-backend")))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        Some((status, backend))
    }

    fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ingress(ns: &str, class: &str, name: &str, annotations: &[(&str, &str)], paths: &[(&str, &str)]) -> String {
        let mut y =
            format!("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: {ns}\n");
        if !annotations.is_empty() {
            y.push_str("  annotations:\n");
            for (k, v) in annotations {
                y.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: {}\n", serde_json::to_string(v).unwrap()));
            }
        }
        y.push_str(&format!("spec:\n  ingressClassName: {class}\n  rules:\n  - http:\n      paths:\n"));
        for (p, svc) in paths {
            y.push_str(&format!(
                "      - path: {p}\n        pathType: Prefix\n        backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}\n"
            ));
        }
        y
    }

    #[test]
    fn bad_value_and_snippet_become_warning_events_and_the_rest_routes() {
        let c = Cluster::shared();
        let ns = c.namespace("anno");
        let alb = "alb-anno";
        let port = free_port();
        c.apply(&format!(
            "apiVersion: crd.alauda.io/v2beta1\nkind: ALB2\nmetadata: {{name: {alb}, namespace: {ns}}}\nspec:\n  address: 127.0.0.1\n  type: nginx\n  config: {{ingressHTTPPort: {port}, ingressHTTPSPort: 0, projects: [ALL_ALL]}}\n"
        ));
        let (pa, _a) = backend("a");
        let (pb, _b) = backend("b");
        service(c, &ns, "svc-a", pa);
        service(c, &ns, "svc-b", pb);
        let runtime = tempfile::Builder::new().prefix("alb-e2e-anno-").tempdir().expect("tempdir");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let mut cmd = Command::new(alb_bin());
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
        let ctl = Proc::spawn("alb controller anno", &mut cmd);
        ctl.wait_log("applied by", Duration::from_secs(30));

        let bad_annos = [
            ("proxy-read-timeout", "soon"),
            ("configuration-snippet", "more_set_headers \"X-Pwned: 1\";"),
            ("enable-opentelemetry", "true"),
            ("x-forwarded-prefix", "/pre"),
        ];
        c.apply(&ingress(&ns, alb, "bad", &bad_annos, &[("/bad-a", "svc-a"), ("/bad-b", "svc-b")]));
        c.apply(&ingress(&ns, alb, "good", &[], &[("/good", "svc-b")]));
        // Every path of the bad Ingress routes (its Rules may reach the data plane in separate pushes).
        wait_for("/bad-a, /bad-b and /good routed", Duration::from_secs(30), || {
            let ok = get(port, "/bad-a").is_some_and(|r| r == (200, "a".into()))
                && get(port, "/bad-b/x").is_some_and(|r| r == (200, "b".into()))
                && get(port, "/good").is_some_and(|r| r == (200, "b".into()));
            ok.then_some(())
        });

        let warnings = |name: &str| -> Vec<Value> {
            let v = c.get_json(&["events.v1.events.k8s.io", "-n", &ns]);
            let items = v["items"].as_array().cloned().unwrap_or_default();
            items.into_iter().filter(|e| e["regarding"]["name"] == name && e["type"] == "Warning").collect()
        };
        let evs = wait_for("three Warning events on bad", Duration::from_secs(10), || {
            let w = warnings("bad");
            (w.len() >= 3).then_some(w)
        });
        let find = |reason: &str| -> String {
            let e = evs.iter().find(|e| e["reason"] == reason).unwrap_or_else(|| panic!("no {reason} event: {evs:?}"));
            e["note"].as_str().unwrap_or("").to_string()
        };
        let invalid = find("InvalidAnnotation");
        assert!(
            invalid.contains("nginx.ingress.kubernetes.io/proxy-read-timeout") && invalid.contains("\"soon\""),
            "{invalid}"
        );
        let refused = find("RefusedAnnotation");
        assert!(refused.contains("nginx.ingress.kubernetes.io/configuration-snippet"), "{refused}");
        assert!(!refused.contains("X-Pwned"), "the snippet text is not echoed: {refused}");
        let unsupported = find("UnsupportedAnnotation");
        assert!(unsupported.contains("nginx.ingress.kubernetes.io/enable-opentelemetry"), "{unsupported}");
        assert_eq!(evs.len(), 3, "{evs:?}");
        assert!(warnings("good").is_empty(), "the other Ingress has no warning");

        // The valid annotation of the bad Ingress applies; nothing of the snippet does.
        let text = {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(s, "GET /bad-a HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
            let mut t = String::new();
            s.read_to_string(&mut t).unwrap();
            t
        };
        assert!(text.contains("\"x-forwarded-prefix\":\"/pre\""), "{text}");
        assert!(!text.to_ascii_lowercase().contains("x-pwned"), "{text}");
        // The generated Rules carry the translation (config in the Rule, no snippet anywhere).
        let rules = c.get_json(&["rules", "-n", &ns, "-l", "alb2.cpaas.io/source-name=bad"]);
        let rules = rules["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert_eq!(rules[0]["spec"]["config"]["rewrite_request"]["headers"]["X-Forwarded-Prefix"], "/pre");
        assert!(!serde_json::to_string(&rules).unwrap().contains("X-Pwned"));
    }
}

/// Every key with an unusable value (`\u{1}bad`): one InvalidAnnotation warning per key naming key and value,
/// and the path still routes. The auth keys that fail closed are checked on their own Ingress.
#[test]
fn every_bad_value_is_reported_and_the_ingress_still_routes() {
    let a = Backend::start("a");
    let auth = auth_service();
    let port = free_port();
    const BAD: &str = "\u{1}bad";
    // Read only with their main key on (CORS, forward auth), fail closed (auth-type, auth-url), or skip the
    // path (backend-protocol): checked below on their own Ingresses.
    let cors = [
        "cors-allow-origin",
        "cors-allow-methods",
        "cors-allow-headers",
        "cors-expose-headers",
        "cors-allow-credentials",
        "cors-max-age",
    ];
    let fwd = [
        "auth-method",
        "auth-signin",
        "auth-signin-redirect-param",
        "auth-response-headers",
        "auth-request-redirect",
        "auth-always-set-cookie",
    ];
    // allowlist-source-range wins over whitelist-source-range, which is then not read: its own Ingress.
    let special = ["backend-protocol", "auth-type", "auth-url", "whitelist-source-range"];
    let all = bad_keys();
    let plain: Vec<&str> =
        all.iter().copied().filter(|k| !cors.contains(k) && !fwd.contains(k) && !special.contains(k)).collect();
    let bad =
        |keys: &[&str]| -> Vec<(String, String)> { keys.iter().map(|k| (k.to_string(), BAD.to_string())).collect() };
    let plain_annos = bad(&plain);
    let mut cors_annos = bad(&cors);
    cors_annos.push(("enable-cors".into(), "true".into()));
    let mut fwd_annos = bad(&fwd);
    fwd_annos.push(("auth-url".into(), format!("http://127.0.0.1:{auth}/auth/200")));
    let ings = [
        ingress("allbad", &pairs(&plain_annos), "allbad.test", &[("/", "Prefix", "svc-a")], ""),
        ingress("corsbad", &pairs(&cors_annos), "corsbad.test", &[("/", "Prefix", "svc-a")], ""),
        ingress("fwdbad", &pairs(&fwd_annos), "fwdbad.test", &[("/", "Prefix", "svc-a")], ""),
        ingress("wlbad", &[("whitelist-source-range", BAD)], "wlbad.test", &[("/", "Prefix", "svc-a")], ""),
        ingress("typebad", &[("auth-type", BAD)], "typebad.test", &[("/", "Prefix", "svc-a")], ""),
        ingress("urlbad", &[("auth-url", BAD)], "urlbad.test", &[("/", "Prefix", "svc-a")], ""),
        ingress("protobad", &[("backend-protocol", BAD)], "protobad.test", &[("/", "Prefix", "svc-a")], ""),
    ]
    .join("---\n");
    let gw = start(&[("svc.yaml", service("svc-a", &[a.port])), ("ing.yaml", ings)], port, free_port());
    let expect = |ing: &str, keys: &[&str]| {
        for k in keys {
            let needle = format!("ingress shop/{ing}: InvalidAnnotation: annotation nginx.ingress.kubernetes.io/{k}: ");
            let line = gw.proc.wait_log(&needle, Duration::from_secs(2));
            assert!(line.contains("\\u{1}bad"), "the value is named: {line}");
        }
    };
    expect("allbad", &plain);
    expect("corsbad", &cors);
    expect("fwdbad", &fwd);
    expect("wlbad", &["whitelist-source-range"]);
    expect("typebad", &["auth-type"]);
    expect("urlbad", &["auth-url"]);
    expect("protobad", &["backend-protocol"]);
    for host in ["allbad.test", "corsbad.test", "fwdbad.test", "wlbad.test"] {
        let r = get(port, "/x", &[("Host", host)]);
        assert_eq!((r.status, r.backend()), (200, "a"), "{host} still routes: {r:?}");
    }
    for host in ["typebad.test", "urlbad.test"] {
        assert_eq!(get(port, "/x", &[("Host", host)]).status, 500, "{host}: auth fails closed");
    }
    assert_eq!(get(port, "/x", &[("Host", "protobad.test")]).status, 404, "backend-protocol: the path gets no Rule");
}

/// The multi-prefix keys of the annotation registry as the docs list them (the e2e crate cannot see the
/// binary's constants): every key of docs/annotations.md written without a prefix, minus the refused ones.
fn bad_keys() -> Vec<&'static str> {
    let doc: &'static str = include_str!("../docs/annotations.md");
    let table = doc.split("## Keys").nth(1).expect("Keys section");
    // The canary/affinity keys (their own section) have their bad-value test in e2e/canary.rs: a bad `canary`
    // value makes the whole Ingress route nothing, by design.
    let table = table.split("### Canary").next().unwrap_or(table);
    table
        .lines()
        .filter(|l| l.starts_with("| `") && !l.contains("**Refused**"))
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .filter(|k| !k.contains('/'))
        .collect()
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The annotations that fill `access`, `limit`, `max_body_size` and `error_pages` (docs/annotations.md), through
/// real nginx: the data plane of these config keys (e2e/l7_limits.rs) reached from an Ingress.
#[test]
fn annotation_access_limits_body_size_and_error_pages_through_nginx() {
    let (a, errors) = (Backend::start("a"), Backend::start("errors"));
    let (port, https) = (free_port(), free_port());
    let svcs = [service("svc-a", &[a.port]), service("errors", &[errors.port])].join("---\n");
    let pre = ("/", "Prefix", "svc-a");
    let ings = [
        ingress("allow-lo", &[("whitelist-source-range", "127.0.0.0/8, ::1/128")], "allow.test", &[pre], ""),
        ingress("allow-ten", &[("allowlist-source-range", "10.0.0.0/8")], "ten.test", &[pre], ""),
        ingress("deny-lo", &[("denylist-source-range", "127.0.0.1/32")], "deny.test", &[pre], ""),
        ingress("rps", &[("limit-rps", "1"), ("limit-burst-multiplier", "2")], "rps.test", &[pre], ""),
        ingress(
            "rps-wl",
            &[("limit-rps", "1"), ("limit-burst-multiplier", "1"), ("limit-whitelist", "127.0.0.0/8")],
            "rpswl.test",
            &[pre],
            "",
        ),
        ingress("body", &[("proxy-body-size", "1k")], "body.test", &[pre], ""),
        ingress("errs", &[("custom-http-errors", "503,504"), ("default-backend", "errors")], "errs.test", &[pre], ""),
    ];
    let files: Vec<(&str, String)> = vec![("svc.yaml", svcs), ("ing.yaml", ings.join("---\n"))];
    let gw = start(&files, port, https);
    let on = |host: &str, path: &str| get(port, path, &[("Host", host)]);

    assert_eq!(on("allow.test", "/").backend(), "a", "127.0.0.1 is in the allow list");
    assert_eq!(on("ten.test", "/").status, 403, "127.0.0.1 is not in 10.0.0.0/8");
    assert_eq!(on("deny.test", "/").status, 403, "127.0.0.1 is denied");

    // rate 1/s, burst 2: of 10 quick requests at most 1 + 2 (+1 if a second boundary passes) get through
    let ok = (0..10).filter(|_| on("rps.test", "/").status == 200).count();
    assert!((1..=4).contains(&ok), "{ok} of 10 passed a 1 r/s limit with burst 2");
    let r = on("rps.test", "/");
    if r.status != 200 {
        assert_eq!(r.status, 503, "{r:?}");
    }
    // the whitelisted client is never limited
    assert!((0..10).all(|_| on("rpswl.test", "/").status == 200), "limit-whitelist bypasses the limit");

    let small = vec![b'x'; 512];
    let big = vec![b'x'; 4096];
    assert_eq!(request(port, "POST", "/", &[("Host", "body.test")], &small).status, 200);
    assert_eq!(request(port, "POST", "/", &[("Host", "body.test")], &big).status, 413);

    let r = on("errs.test", "/status/503");
    assert_eq!((r.status, r.backend()), (200, "errors"), "{r:?}");
    assert_eq!(header_sent(&r, "x-code"), "503");
    let r = on("errs.test", "/status/404");
    // not listed: the status passes through (its body is not kept, docs/policy.md "error_pages")
    assert_eq!(r.status, 404, "{r:?}");
    assert_ne!(r.backend(), "errors", "{r:?}");
    assert_eq!(on("errs.test", "/ok").backend(), "a");
    drop(gw);
}
