//! gRPC through the gateway with a real gRPC server and client (Python grpcio, `e2e/grpc/*.py`, installed into
//! the repo's `.venv` by `scripts/setup.sh`): a unary and a server-streaming call through a grpc Frontend (h2c),
//! a grpc Frontend with a certificate (TLS to the gateway, h2c to the backend), and `backendProtocol: grpc`
//! Rules on an https Frontend (ALPN h2; the same Frontend keeps proxying HTTP for its other rules).

use crate::harness::{repo_dir, Backend, Proc, Standalone};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn python() -> PathBuf {
    let p = repo_dir().join(".venv/bin/python");
    assert!(p.is_file(), "{} is missing: run scripts/setup.sh (it installs grpcio into .venv)", p.display());
    p
}

/// `e2e/grpc/server.py NAME` on 127.0.0.1: the gRPC backend and its port.
struct GrpcServer {
    port: u16,
    _proc: Proc,
}

impl GrpcServer {
    fn start(name: &str) -> GrpcServer {
        GrpcServer::spawn(name, None)
    }

    /// A TLS (grpcs) backend serving `cert`/`key` (PEM files).
    fn start_tls(name: &str, cert: &std::path::Path, key: &std::path::Path) -> GrpcServer {
        GrpcServer::spawn(name, Some((cert, key)))
    }

    fn spawn(name: &str, tls: Option<(&std::path::Path, &std::path::Path)>) -> GrpcServer {
        let mut cmd = Command::new(python());
        cmd.arg(repo_dir().join("e2e/grpc/server.py")).arg(name).stdout(Stdio::piped());
        if let Some((cert, key)) = tls {
            cmd.arg(cert).arg(key);
        }
        let mut proc = Proc::spawn(&format!("grpc server {name}"), &mut cmd);
        let mut line = String::new();
        BufReader::new(proc.child.stdout.take().expect("stdout")).read_line(&mut line).expect("server prints its port");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("grpc server: no port in {line:?}; log:\n{}", proc.logs().join("\n")));
        GrpcServer { port, _proc: proc }
    }
}

/// One unary and one streaming call to 127.0.0.1:`port` with `:authority` (and TLS SNI) `authority`.
fn call(port: u16, authority: &str, ca: Option<&std::path::Path>) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(repo_dir().join("e2e/grpc/client.py")).arg(format!("127.0.0.1:{port}")).arg(authority);
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    let out = cmd.output().expect("run grpc client");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!("grpc client output {text:?}: {e}; stderr: {}", String::from_utf8_lossy(&out.stderr))
    })
}

fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: grpc, port: 80, protocol: TCP}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\n\
         addressType: IPv4\nports: [{{name: grpc, port: {port}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n"
    )
}

fn frontend(name: &str, port: u16, protocol: &str, cert: &str, default_svc: Option<&str>) -> String {
    let sg = default_svc
        .map(|s| format!("  serviceGroup:\n    services:\n      - {{name: {s}, namespace: default, port: 80}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Frontend\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e}}\nspec:\n  port: {port}\n  protocol: {protocol}\n  certificate_name: \"{cert}\"\n{sg}"
    )
}

/// A Rule; `tls_host` adds `domain` + `certificate_name` (the certificate served for that SNI).
fn rule(name: &str, ft: &str, dslx: &str, svc: &str, backend_protocol: &str, tls_host: Option<&str>) -> String {
    let tls = tls_host.map(|h| format!("  domain: {h}\n  certificate_name: default/grpc-cert\n")).unwrap_or_default();
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Rule\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e, alb2.cpaas.io/frontend: {ft}}}\nspec:\n  priority: 5\n  backendProtocol: \"{backend_protocol}\"\n{tls}  dslx: {dslx}\n  serviceGroup:\n    services: [{{name: {svc}, namespace: default, port: 80}}]\n"
    )
}

fn tls_secret(name: &str, host: &str) -> (String, String) {
    let (secret, cert, _) = tls_secret_and_key(name, host);
    (secret, cert)
}

/// A `kubernetes.io/tls` Secret for `host`, its certificate and its key (PEM).
fn tls_secret_and_key(name: &str, host: &str) -> (String, String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let c = rcgen::CertificateParams::new(vec![host.to_string()]).expect("params").self_signed(&key).expect("cert");
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&c.pem()),
        indent(&key.serialize_pem())
    );
    (secret, c.pem(), key.serialize_pem())
}

fn assert_ok(r: &serde_json::Value, backend: &str) {
    assert_eq!(r["code"], "OK", "{r}");
    assert_eq!(r["unary"], format!("{backend}:hello"), "{r}");
    let want: Vec<String> = (0..5).map(|i| format!("{backend}:{i}")).collect();
    assert_eq!(r["stream"], serde_json::json!(want), "{r}");
}

#[test]
fn grpc_unary_and_streaming_through_h2c_tls_and_https_frontends() {
    let (g1, g2) = (GrpcServer::start("g1"), GrpcServer::start("g2"));
    let http = Backend::start("web");
    let (h2c, tls, https) = (crate::harness::free_port(), crate::harness::free_port(), crate::harness::free_port());
    let (secret, ca_pem) = tls_secret("grpc-cert", "grpc.test");
    let ca = tempfile::NamedTempFile::new().expect("ca file");
    std::fs::write(ca.path(), &ca_pem).expect("write ca");
    let web = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports: [{{name: http, port: {}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n",
        http.port
    );
    let gw = Standalone::start(&[
        ("svc.yaml", [service("g1", g1.port), service("g2", g2.port), web].join("---\n")),
        ("secret.yaml", secret),
        (
            "fts.yaml",
            [
                // h2c: rules match on :authority; no default backend
                frontend("ft-h2c", h2c, "grpc", "", None),
                // TLS to the gateway, h2c to the backend
                frontend("ft-tls", tls, "grpc", "default/grpc-cert", Some("g2")),
                // https with an HTTP default backend and a grpc Rule
                frontend("ft-https", https, "https", "default/grpc-cert", Some("web")),
            ]
            .join("---\n"),
        ),
        (
            "rules.yaml",
            [
                rule("by-authority", "ft-h2c", "[{type: HOST, values: [[EQ, grpc.test]]}]", "g1", "", None),
                // the certificate of SNI grpc.test on the TLS listeners; the grpc Frontend's own Rule goes to g2 too
                rule("tls-host", "ft-tls", "[{type: HOST, values: [[EQ, grpc.test]]}]", "g2", "", Some("grpc.test")),
                rule(
                    "grpc-on-https",
                    "ft-https",
                    "[{type: URL, values: [[STARTS_WITH, /alb.test.Echo/]]}]",
                    "g1",
                    "grpc",
                    Some("grpc.test"),
                ),
            ]
            .join("---\n"),
        ),
    ]);
    assert!(
        !gw.proc.logs().iter().any(|l| l.contains("rejected Rule") || l.contains("rejected Frontend")),
        "nothing rejected: {}",
        gw.proc.logs().join("\n")
    );

    // h2c grpc Frontend: matched by :authority
    assert_ok(&call(h2c, "grpc.test", None), "g1");
    let miss = call(h2c, "other.test", None);
    assert_ne!(miss["code"], "OK", "no rule for other.test: {miss}");

    // grpc Frontend with a certificate: TLS from the client, h2c to the default backend
    assert_ok(&call(tls, "grpc.test", Some(ca.path())), "g2");

    // https Frontend: the grpc Rule goes through @grpc, other paths keep proxy_pass to the HTTP backend
    assert_ok(&call(https, "grpc.test", Some(ca.path())), "g1");
    let out = Command::new("curl")
        .args(["-sik", "--resolve", &format!("grpc.test:{https}:127.0.0.1"), &format!("https://grpc.test:{https}/x")])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.to_ascii_lowercase().contains("x-backend: web"),
        "HTTP on the https Frontend still reaches the HTTP backend: {body}"
    );

    // Several calls in a row keep working (upstream keepalive + balancer under grpc_pass)
    for _ in 0..3 {
        assert_ok(&call(h2c, "grpc.test", None), "g1");
    }
}

/// grpcs backends (TLS from nginx to the gRPC server): a Rule with `backendProtocol: grpcs` on a grpc (h2c)
/// Frontend and on an https Frontend, and an Ingress with `backend-protocol: GRPCS`; the same backend as `grpc`
/// (h2c) fails, so the calls that work did speak TLS to it.
#[test]
fn grpcs_backend_through_rule_and_ingress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, backend_cert, backend_key) = tls_secret_and_key("unused", "backend.test");
    let (cert_file, key_file) = (dir.path().join("backend.crt"), dir.path().join("backend.key"));
    std::fs::write(&cert_file, backend_cert).expect("write cert");
    std::fs::write(&key_file, backend_key).expect("write key");
    let gs = GrpcServer::start_tls("gs", &cert_file, &key_file);
    let (h2c, https, ingress_https) =
        (crate::harness::free_port(), crate::harness::free_port(), crate::harness::free_port());
    let (secret, ca_pem) = tls_secret("grpc-cert", "grpc.test");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &ca_pem).expect("write ca");
    let ingress = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: grpcs
  namespace: default
  annotations: {nginx.ingress.kubernetes.io/backend-protocol: GRPCS}
spec:
  tls:
    - hosts: [grpc.test]
      secretName: grpc-cert
  rules:
    - host: grpc.test
      http:
        paths:
          - {path: /alb.test.Echo/, pathType: Prefix, backend: {service: {name: gs, port: {number: 80}}}}
"#;
    let host = |h: &str| format!("[{{type: HOST, values: [[EQ, {h}]]}}]");
    let gw = Standalone::start_with(
        &[
            ("svc.yaml", service("gs", gs.port)),
            ("secret.yaml", secret),
            (
                "fts.yaml",
                [
                    frontend("ft-h2c", h2c, "grpc", "", None),
                    frontend("ft-https", https, "https", "default/grpc-cert", None),
                ]
                .join("---\n"),
            ),
            (
                "rules.yaml",
                [
                    rule("grpcs-on-grpc", "ft-h2c", &host("grpc.test"), "gs", "grpcs", None),
                    // the same TLS backend spoken to in h2c: must fail
                    rule("h2c-to-tls", "ft-h2c", &host("plain.test"), "gs", "grpc", None),
                    rule("grpcs-on-https", "ft-https", &host("grpc.test"), "gs", "grpcs", Some("grpc.test")),
                ]
                .join("---\n"),
            ),
            ("ing.yaml", ingress.to_string()),
        ],
        &["--ingress-http-port", "0", "--ingress-https-port", &ingress_https.to_string()],
        &[],
    );
    gw.proc.wait_log(&format!("listening on 127.0.0.1:{ingress_https}"), Duration::from_secs(2));
    assert!(
        !gw.proc.logs().iter().any(|l| l.contains("rejected Rule")
            || l.contains("rejected Frontend")
            || l.contains("ingress default/grpcs:")),
        "nothing rejected: {}",
        gw.proc.logs().join("\n")
    );

    // First, while no connection to the backend is pooled: nginx pools upstream keep-alive connections by address,
    // so after a grpcs call the h2c Rule could reuse that TLS connection and succeed.
    let wrong = call(h2c, "plain.test", None);
    assert_ne!(wrong["code"], "OK", "h2c to a TLS backend cannot work: {wrong}");
    assert_ok(&call(h2c, "grpc.test", None), "gs");
    assert_ok(&call(https, "grpc.test", Some(&ca)), "gs");
    assert_ok(&call(ingress_https, "grpc.test", Some(&ca)), "gs");
}
