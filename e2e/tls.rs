//! https listeners: certificates from `kubernetes.io/tls` Secrets chosen per handshake by SNI (dataplane.md
//! §4.17), HTTP/2, rotation without a reload, bad certificates, and Ingress `spec.tls`.
//!
//! Test certificates are generated with rcgen; each is unique, so "which certificate was served" is checked by
//! comparing the DER the server presented with the one generated for that host.

use crate::harness::{alb_bin, free_port, Backend, Proc, Standalone};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---- certificates ----

struct Cert {
    pem: String,
    key: String,
    der: Vec<u8>,
}

fn cert(names: &[&str]) -> Cert {
    cert_valid_until(names, None)
}

fn cert_valid_until(names: &[&str], not_after: Option<(i32, u8, u8)>) -> Cert {
    cert_between(names, not_after.map(|(y, m, d)| ((y - 1, m, d), (y, m, d))))
}

/// A certificate valid from the first to the second date (rcgen's defaults when `None`).
type Validity = ((i32, u8, u8), (i32, u8, u8));
fn cert_between(names: &[&str], validity: Option<Validity>) -> Cert {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
    if let Some(((y0, m0, d0), (y, m, d))) = validity {
        params.not_before = rcgen::date_time_ymd(y0, m0, d0);
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }
    let c = params.self_signed(&key).expect("self-signed");
    Cert { pem: c.pem(), key: key.serialize_pem(), der: c.der().to_vec() }
}

/// A certificate valid from `now + from_s` to `now + to_s` (seconds, may be negative).
fn cert_window(names: &[&str], from_s: i64, to_s: i64) -> Cert {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let at = |d: i64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs((now + d) as u64);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
    params.not_before = at(from_s);
    params.not_after = at(to_s);
    let c = params.self_signed(&key).expect("self-signed");
    Cert { pem: c.pem(), key: key.serialize_pem(), der: c.der().to_vec() }
}

/// The subject of a DER certificate as `openssl x509 -subject` prints it, e.g. `CN = a.com`.
fn subject(der: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-subject", "-nameopt", "oneline"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl");
    child.stdin.take().expect("stdin").write_all(der).expect("write DER");
    let out = child.wait_with_output().expect("openssl x509");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().strip_prefix("subject=").unwrap_or(text.trim()).trim().to_string()
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// A `kubernetes.io/tls` Secret with `stringData` (PEM as written by hand).
fn secret_raw(ns: &str, name: &str, crt: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(crt),
        indent(key)
    )
}

fn secret(ns: &str, name: &str, c: &Cert) -> String {
    secret_raw(ns, name, &c.pem, &c.key)
}

// ---- manifests ----

fn frontend(name: &str, port: u16, cert: &str, svc: &str) -> String {
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Frontend\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e}}\nspec:\n  port: {port}\n  protocol: https\n  certificate_name: \"{cert}\"\n  serviceGroup:\n    services:\n      - {{name: {svc}, namespace: default, port: 80}}\n"
    )
}

/// A Rule on Frontend `ft` for host `domain` with certificate `cert`, to Service `svc`.
fn host_rule(name: &str, ft: &str, domain: &str, cert: &str, svc: &str) -> String {
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Rule\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e, alb2.cpaas.io/frontend: {ft}}}\nspec:\n  priority: 5\n  domain: \"{domain}\"\n  certificate_name: \"{cert}\"\n  dslx: [{{type: HOST, values: [[EQ, \"{domain}\"]]}}]\n  serviceGroup:\n    services: [{{name: {svc}, namespace: default, port: 80}}]\n"
    )
}

fn service(ns: &str, name: &str, b: &Backend) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n",
        port = b.port
    )
}

/// `alb standalone` with extra arguments and environment; waits for the first policy.
fn start(files: &[(&str, String)], args: &[&str], env: &[(&str, &str)]) -> Standalone {
    Standalone::start_with(files, args, env)
}

// ---- a TLS client that accepts any certificate and reports the one it got ----

#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_config(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A finished TLS connection to 127.0.0.1:`port`, SNI `sni` (none when `None`).
fn connect(port: u16, sni: Option<&str>) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let server_name = match sni {
        Some(h) => ServerName::try_from(h.to_string()).map_err(|e| e.to_string())?,
        // rustls sends no SNI for an IP address
        None => ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
    };
    let mut conn = rustls::ClientConnection::new(client_config(&[]), server_name).map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// The leaf certificate served for `sni` on `port`, or the handshake error.
fn served(port: u16, sni: Option<&str>) -> Result<Vec<u8>, String> {
    let s = connect(port, sni)?;
    let certs = s.conn.peer_certificates().ok_or("no peer certificate")?;
    Ok(certs[0].to_vec())
}

/// GET `path` over TLS with SNI and Host `host`: (status, body).
fn https_get(port: u16, host: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = connect(port, Some(host))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(format!("no status in {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

fn backend_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    v["backend"].as_str().unwrap_or("").to_string()
}

fn assert_served(port: u16, sni: Option<&str>, want: &Cert, what: &str) {
    let got = served(port, sni).unwrap_or_else(|e| panic!("{what}: SNI {sni:?} port {port}: {e}"));
    assert!(got == want.der, "{what}: SNI {sni:?} on port {port} got another certificate");
}

/// The served certificate is `want`, checked by its subject (`CN = <cn>`) and its bytes.
fn assert_subject(port: u16, sni: Option<&str>, want: &Cert, cn: &str, what: &str) {
    let got = served(port, sni).unwrap_or_else(|e| panic!("{what}: SNI {sni:?} port {port}: {e}"));
    assert_eq!(subject(&got), format!("CN = {cn}"), "{what}: SNI {sni:?} on port {port}");
    assert!(got == want.der, "{what}: SNI {sni:?} on port {port}: same subject, other certificate");
}

fn assert_refused(port: u16, sni: Option<&str>, what: &str) {
    if let Ok(der) = served(port, sni) {
        panic!("{what}: SNI {sni:?} on port {port}: handshake succeeded ({} bytes certificate)", der.len());
    }
}

// ---- tests ----

/// Every row of the lookup table of dataplane.md §4.17 (with the fallback off), routing over TLS, and the
/// fallback to the port's certificate with `FallbackDefaultPortCert=true`.
#[test]
fn tls_sni_lookup_order() {
    let web = Backend::start("web");
    let (p1, p2) = (free_port(), free_port());
    let (a, b1, b2, e, f1, dflt) =
        (cert(&["a.com"]), cert(&["b.com"]), cert(&["b.com"]), cert(&["*.e.com"]), cert(&["*.f.com"]), cert(&["dflt"]));
    let secrets = [
        secret("default", "a", &a),
        secret("default", "b1", &b1),
        secret("tls", "b2", &b2),
        secret("default", "e", &e),
    ]
    .join("---\n")
        + "---\n"
        + &[secret("default", "f1", &f1), secret("default", "dflt", &dflt)].join("---\n");
    let rules = [
        host_rule("ra", "ft1", "a.com", "default/a", "web"),
        host_rule("rb1", "ft1", "b.com", "default_b1", "web"),
        host_rule("rb2", "ft2", "b.com", "tls/b2", "web"),
        host_rule("re", "ft1", "*.e.com", "default/e", "web"),
        host_rule("rf1", "ft1", "*.f.com", "default/f1", "web"),
        // same wildcard on the other port without a certificate: *.f.com becomes port-specific
        host_rule("rf2", "ft2", "*.f.com", "", "web"),
        host_rule("rf2b", "ft2", "*.f.com", "default/missing", "web"),
    ]
    .join("---\n");
    let files = [
        ("ft.yaml", [frontend("ft1", p1, "default_dflt", "web"), frontend("ft2", p2, "", "web")].join("---\n")),
        ("svc.yaml", service("default", "web", &web)),
        ("secrets.yaml", secrets.clone()),
        ("rules.yaml", rules.clone()),
    ];
    let gw = start(&files, &[], &[]);
    gw.proc.wait_log(&format!("listening on 127.0.0.1:{p2}"), Duration::from_secs(1));

    assert_served(p1, Some("a.com"), &a, "exact host");
    assert_served(p2, Some("a.com"), &a, "a host key serves every port");
    assert_served(p1, Some("A.COM"), &a, "SNI is case-insensitive");
    assert_served(p1, None, &dflt, "no SNI: the port's certificate");
    assert_refused(p2, None, "no SNI and no port certificate");
    assert_served(p1, Some("b.com"), &b1, "host/port");
    assert_served(p2, Some("b.com"), &b2, "host/port");
    assert_refused(p2, Some("zzz.com"), "unknown SNI, fallback off");
    assert_refused(p1, Some("zzz.com"), "unknown SNI, fallback off, even with a port certificate");
    assert_served(p1, Some("x.e.com"), &e, "wildcard");
    assert_served(p2, Some("y.e.com"), &e, "wildcard on any port");
    assert_refused(p1, Some("y.x.e.com"), "wildcards are one label deep");
    assert_refused(p1, Some("e.com"), "a wildcard does not match its parent");
    assert_served(p1, Some("a.f.com"), &f1, "wildcard/port");
    assert_refused(p2, Some("a.f.com"), "wildcard/port of another port");
    let missing = gw.proc.wait_log("rf2b", Duration::from_secs(1));
    assert!(missing.contains("CertificateNotFound") && missing.contains("default/missing"), "{missing}");

    // Routing over TLS, HTTP/1.1.
    let (status, body) = https_get(p1, "a.com", "/hello").expect("GET over TLS");
    assert_eq!((status, backend_of(&body).as_str()), (200, "web"));
    let echo: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    let hdr = |k: &str| echo["headers"][k].as_str().map(str::to_string);
    assert_eq!(hdr("x-forwarded-proto").as_deref(), Some("https"), "{echo}");

    // HTTP/2 with curl (ALPN h2).
    let out = Command::new("curl")
        .args(["-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
        .args(["--resolve", &format!("a.com:{p1}:127.0.0.1"), &format!("https://a.com:{p1}/h2")])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200", "{}", String::from_utf8_lossy(&out.stderr));
    drop(gw);

    // FallbackDefaultPortCert=true: an unknown SNI gets the port's certificate.
    let gw = start(&files, &[], &[("FallbackDefaultPortCert", "true")]);
    assert_served(p1, Some("zzz.com"), &dflt, "fallback on");
    assert_served(p1, Some("y.x.e.com"), &dflt, "fallback on");
    assert_served(p1, Some("a.com"), &a, "fallback does not shadow a host certificate");
    assert_refused(p2, Some("zzz.com"), "fallback on, port without a certificate");
    drop(gw);
}

/// Secrets change under a loop of handshakes: no failed handshake, no reload (same nginx pids), the new
/// certificate is served within a second; adding and removing a host's certificate works the same way.
#[test]
fn tls_rotation_under_load_without_reload() {
    let web = Backend::start("web");
    let port = free_port();
    let v1 = cert(&["rot.com"]);
    let gw = start(
        &[
            ("ft.yaml", frontend("ft", port, "", "web")),
            ("svc.yaml", service("default", "web", &web)),
            ("rules.yaml", host_rule("rot", "ft", "rot.com", "default/rot", "web")),
            ("secret-rot.yaml", secret("default", "rot", &v1)),
        ],
        &[],
        &[],
    );
    assert_served(port, Some("rot.com"), &v1, "initial");
    let pids = gw.pids();
    assert_eq!(pids.len(), 3, "master + 2 workers: {pids:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed, errors) = (stop.clone(), ok.clone(), failed.clone(), errors.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match https_get(port, "rot.com", "/") {
                        Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok((s, b)) => {
                            errors.lock().unwrap().push(format!("status {s}: {b}"));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            errors.lock().unwrap().push(e);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();

    let mut last = v1;
    for i in 0..5 {
        let next = cert(&["rot.com"]);
        gw.change(|g| g.write("secret-rot.yaml", &secret("default", "rot", &next)));
        let t = Instant::now();
        while served(port, Some("rot.com")).ok().as_ref() != Some(&next.der) {
            assert!(t.elapsed() < Duration::from_secs(1), "rotation {i}: new certificate not served within 1 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(last.der != next.der);
        last = next;
    }
    // A new host's certificate appears, then goes away with its Secret.
    let new = cert(&["new.com"]);
    assert_refused(port, Some("new.com"), "before");
    gw.change(|g| {
        g.write(
            "new.yaml",
            &(host_rule("new", "ft", "new.com", "default/new", "web") + "---\n" + &secret("default", "new", &new)),
        )
    });
    assert_served(port, Some("new.com"), &new, "added");
    gw.change(|g| g.write("new.yaml", &host_rule("new", "ft", "new.com", "default/new", "web")));
    assert_refused(port, Some("new.com"), "its Secret removed");
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "failed requests during rotation (ok {ok}): {:?}", errors.lock().unwrap());
    assert!(ok > 20, "too few requests during the rotation: {ok}");
    assert_served(port, Some("rot.com"), &last, "last rotation");
    assert_eq!(gw.pids(), pids, "no reload, no restarted worker");
    assert!(!gw.proc.logs().iter().any(|l| l.contains("nginx reloaded")), "{:?}", gw.proc.logs());
}

/// Expired, key-mismatched and malformed certificates: the log names the Secret, those hosts get no certificate,
/// the other host keeps its own and still routes.
#[test]
fn tls_bad_certificates_are_rejected_and_named() {
    let web = Backend::start("web");
    let port = free_port();
    let good = cert(&["good.com"]);
    let other = cert(&["x"]);
    let expired = cert_valid_until(&["old.com"], Some((2021, 3, 4)));
    let future = cert_between(&["future.com"], Some(((2099, 5, 6), (2100, 1, 1))));
    let secrets = [
        secret("default", "good", &good),
        secret("default", "expired", &expired),
        secret("default", "future", &future),
        secret_raw("default", "mismatch", &good.pem, &other.key),
        secret_raw(
            "default",
            "garbage",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----",
            &good.key,
        ),
    ]
    .join("---\n");
    let rules = [
        host_rule("r-good", "ft", "good.com", "default/good", "web"),
        host_rule("r-old", "ft", "old.com", "default/expired", "web"),
        host_rule("r-future", "ft", "future.com", "default/future", "web"),
        host_rule("r-mismatch", "ft", "mismatch.com", "default/mismatch", "web"),
        host_rule("r-garbage", "ft", "garbage.com", "default/garbage", "web"),
    ]
    .join("---\n");
    let gw = start(
        &[
            ("ft.yaml", frontend("ft", port, "", "web")),
            ("svc.yaml", service("default", "web", &web)),
            ("secrets.yaml", secrets),
            ("rules.yaml", rules),
        ],
        &[],
        &[],
    );
    let line = |rule: &str| gw.proc.wait_log(&format!("rejected Rule default/{rule}"), Duration::from_secs(2));
    let l = line("r-old");
    assert!(
        l.contains("CertificateExpired") && l.contains("Secret default/expired") && l.contains("2021-03-04"),
        "{l}"
    );
    let l = line("r-future");
    assert!(
        l.contains("CertificateNotYetValid")
            && l.contains("Secret default/future")
            && l.contains("not valid before 2099-05-06T00:00:00Z"),
        "{l}"
    );
    let l = line("r-mismatch");
    assert!(l.contains("CertificateKeyMismatch") && l.contains("Secret default/mismatch"), "{l}");
    let l = line("r-garbage");
    assert!(l.contains("InvalidCertificate") && l.contains("Secret default/garbage"), "{l}");
    assert!(!gw.proc.logs().iter().any(|l| l.contains("r-good")), "{:?}", gw.proc.logs());
    assert_served(port, Some("good.com"), &good, "the good host keeps its certificate");
    assert_eq!(backend_of(&https_get(port, "good.com", "/").unwrap().1), "web");
    for h in ["old.com", "future.com", "mismatch.com", "garbage.com"] {
        assert_refused(port, Some(h), h);
    }
    // A good Secret turning bad loses its certificate only; the policy still applies.
    gw.change(|g| g.write("secrets.yaml", &secret_raw("default", "good", &good.pem, &other.key)));
    let l = line("r-good");
    assert!(l.contains("CertificateKeyMismatch"), "{l}");
    assert_refused(port, Some("good.com"), "now mismatched");
}

/// Certificates become valid and expire on time, with no other change: the compiler is run again when a
/// certificate in use reaches its `notBefore` / `notAfter` (no reload either).
#[test]
fn tls_certificates_become_valid_and_expire_on_time() {
    let web = Backend::start("web");
    let port = free_port();
    // whole seconds: valid from at least 7 s after this point (enough for nginx to start under load)
    let t0 = Instant::now();
    let (soon, ending) = (cert_window(&["soon.com"], 8, 3600), cert_window(&["ending.com"], -3600, 8));
    let gw = start(
        &[
            ("ft.yaml", frontend("ft", port, "", "web")),
            ("svc.yaml", service("default", "web", &web)),
            ("secrets.yaml", [secret("default", "soon", &soon), secret("default", "ending", &ending)].join("---\n")),
            (
                "rules.yaml",
                [
                    host_rule("r-soon", "ft", "soon.com", "default/soon", "web"),
                    host_rule("r-ending", "ft", "ending.com", "default/ending", "web"),
                ]
                .join("---\n"),
            ),
        ],
        &[],
        &[],
    );
    let l = gw.proc.wait_log("rejected Rule default/r-soon", Duration::from_secs(2));
    assert!(l.contains("CertificateNotYetValid"), "{l}");
    assert_refused(port, Some("soon.com"), "not valid yet");
    assert_served(port, Some("ending.com"), &ending, "still valid");
    let pids = gw.pids();
    let until = |what: &str, f: &dyn Fn() -> bool| {
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(20), "{what} not within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until("soon.com served", &|| served(port, Some("soon.com")).ok().as_ref() == Some(&soon.der));
    assert!(t0.elapsed() >= Duration::from_secs(7), "served before its notBefore");
    until("ending.com refused", &|| served(port, Some("ending.com")).is_err());
    let l = gw.proc.wait_log("rejected Rule default/r-ending", Duration::from_secs(1));
    assert!(l.contains("CertificateExpired"), "{l}");
    assert_served(port, Some("soon.com"), &soon, "stays");
    assert_eq!(gw.pids(), pids, "no reload");
}

/// An Ingress with `spec.tls` under strategy `Request`: its https Frontend and Rules are generated and route
/// over TLS with the Secret's certificate; hosts without TLS stay on http.
#[test]
fn tls_ingress_spec_tls_under_request_strategy() {
    let web = Backend::start("shop-web");
    let (http_port, https_port) = (free_port(), free_port());
    let shop = cert(&["shop.test"]);
    let ingress = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  tls:
    - hosts: [shop.test]
      secretName: shop-tls
  rules:
    - host: shop.test
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;
    let gw = start(
        &[
            ("svc.yaml", service("shop", "web", &web)),
            ("secret.yaml", secret("shop", "shop-tls", &shop)),
            ("ing.yaml", ingress.to_string()),
        ],
        &[
            "--ssl-strategy",
            "Request",
            "--ingress-http-port",
            &http_port.to_string(),
            "--ingress-https-port",
            &https_port.to_string(),
        ],
        &[],
    );
    gw.proc.wait_log(&format!("listening on 127.0.0.1:{https_port}"), Duration::from_secs(1));
    assert_served(https_port, Some("shop.test"), &shop, "spec.tls certificate");
    let (status, body) = https_get(https_port, "shop.test", "/items").expect("GET over TLS");
    assert_eq!((status, backend_of(&body).as_str()), (200, "shop-web"));
    assert!(
        !gw.proc.logs().iter().any(|l| l.contains(&format!("listening on 127.0.0.1:{http_port}"))),
        "a TLS host under Request gets no http Frontend"
    );
}

/// Step 5 of the lookup (dataplane.md §4.17, controlplane.md §3.5): under the SSL strategy `Always` or `Both`
/// a handshake that finds no certificate gets the one of the Ingress https port, else the ALB's default
/// certificate (`--default-ssl-cert`); under `Never`/`Request` it fails. Checked by the served subject.
#[test]
fn tls_default_ssl_strategy_fallbacks() {
    let web = Backend::start("web");
    let (p_in, p_other) = (free_port(), free_port());
    let (port_cert, dflt, a) = (
        cert_between(&["ingress-port.test"], None),
        cert_between(&["alb-default.test"], None),
        cert_between(&["a.test"], None),
    );
    let secrets =
        [secret("default", "port-cert", &port_cert), secret("cpaas-system", "dflt", &dflt), secret("default", "a", &a)]
            .join("---\n");
    // the Frontend of the Ingress https port (with or without its certificate) and another https port
    let fts = |in_cert: &str| {
        [frontend("ft-in", p_in, in_cert, "web"), frontend("ft-other", p_other, "", "web")].join("---\n")
    };
    let files = [
        ("ft.yaml", fts("default/port-cert")),
        ("svc.yaml", service("default", "web", &web)),
        ("secrets.yaml", secrets),
        ("rules.yaml", host_rule("ra", "ft-other", "a.test", "default/a", "web")),
    ];
    let strategy = |s: &'static str, dflt: &'static str| {
        let mut args = vec!["--ssl-strategy", s, "--ingress-http-port", "0"];
        if !dflt.is_empty() {
            args.extend(["--default-ssl-cert", dflt]);
        }
        args
    };
    let p_in_s = p_in.to_string();
    let start_with = |s: &'static str, dflt: &'static str| {
        let mut args = strategy(s, dflt);
        args.extend(["--ingress-https-port", p_in_s.as_str()]);
        start(&files, &args, &[])
    };

    // Never (the default) and Request: no fallback
    for s in ["Never", "Request"] {
        let gw = start_with(s, "cpaas-system/dflt");
        assert_subject(p_other, Some("a.test"), &a, "a.test", s);
        assert_refused(p_other, Some("zzz.test"), s);
        assert_refused(p_other, None, s);
        assert_subject(p_in, None, &port_cert, "ingress-port.test", s);
        assert_refused(p_in, Some("zzz.test"), s);
        drop(gw);
    }

    // Always: the certificate of the Ingress https port, on every port, with or without SNI
    let gw = start_with("Always", "cpaas-system/dflt");
    assert_subject(p_other, Some("zzz.test"), &port_cert, "ingress-port.test", "Always, unknown SNI");
    assert_subject(p_other, None, &port_cert, "ingress-port.test", "Always, no SNI");
    assert_subject(p_in, Some("zzz.test"), &port_cert, "ingress-port.test", "Always, unknown SNI on the https port");
    assert_subject(p_other, Some("a.test"), &a, "a.test", "the fallback does not shadow a host certificate");
    let (status, body) = https_get(p_other, "zzz.test", "/").expect("GET with the fallback certificate");
    assert_eq!((status, backend_of(&body).as_str()), (200, "web"));
    // the https port loses its certificate: the ALB's default certificate (no reload, same nginx)
    let pids = gw.pids();
    gw.change(|g| g.write("ft.yaml", &fts("")));
    let t = Instant::now();
    while served(p_other, Some("zzz.test")).ok().as_ref() != Some(&dflt.der) {
        assert!(t.elapsed() < Duration::from_secs(2), "default certificate not served within 2 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_subject(p_other, Some("zzz.test"), &dflt, "alb-default.test", "Always, https port without a certificate");
    assert_subject(p_in, None, &dflt, "alb-default.test", "Always, no SNI, no port certificate");
    assert_eq!(gw.pids(), pids, "no reload");
    drop(gw);

    // Both, without a port certificate from the start: the default certificate
    let mut files_b = files.clone();
    files_b[0].1 = fts("");
    let mut args = strategy("Both", "cpaas-system_dflt");
    args.extend(["--ingress-https-port", p_in_s.as_str()]);
    let gw = start(&files_b, &args, &[]);
    assert_subject(p_other, Some("zzz.test"), &dflt, "alb-default.test", "Both, default certificate (ns_name)");
    drop(gw);

    // a default certificate that does not exist: named in the log, handshakes without a certificate fail
    let mut args = strategy("Both", "cpaas-system/missing");
    args.extend(["--ingress-https-port", p_in_s.as_str()]);
    let gw = start(&files_b, &args, &[]);
    let l = gw.proc.wait_log("rejected ALB2", Duration::from_secs(2));
    assert!(
        l.contains("spec.config.defaultSSLCert")
            && l.contains("CertificateNotFound")
            && l.contains("Secret cpaas-system/missing"),
        "{l}"
    );
    assert_refused(p_other, Some("zzz.test"), "missing default certificate");
    assert_subject(p_other, Some("a.test"), &a, "a.test", "other hosts keep their certificate");
}

/// `alb controller` against the real API server: the Secret store feeds the compiler, a bad certificate becomes
/// `Accepted=False` on its Rule, and a rotated Secret is served without a reload.
#[test]
fn tls_controller_serves_secrets_and_reports_bad_ones() {
    let c = crate::harness::cluster::Cluster::shared();
    let ns = c.namespace("ctl-tls");
    let alb = "alb-ctl-tls";
    let port = free_port();
    c.apply(&format!(
        "apiVersion: crd.alauda.io/v2beta1\nkind: ALB2\nmetadata: {{name: {alb}, namespace: {ns}}}\nspec:\n  address: 127.0.0.1\n  type: nginx\n  config: {{ingressHTTPPort: 0, ingressHTTPSPort: 0, projects: [ALL_ALL]}}\n"
    ));
    let (good, v2, other) = (cert(&["good.com"]), cert(&["good.com"]), cert(&["x"]));
    let future = cert_between(&["future.com"], Some(((2099, 5, 6), (2100, 1, 1))));
    let rule = |name: &str, domain: &str, cert: &str| {
        format!(
            "apiVersion: crd.alauda.io/v1\nkind: Rule\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{alb2.cpaas.io/name: {alb}, alb2.cpaas.io/frontend: ft}}\nspec:\n  priority: 5\n  domain: {domain}\n  certificate_name: {cert}\n  dslx: [{{type: HOST, values: [[EQ, {domain}]]}}]\n"
        )
    };
    c.apply(
        &[
            secret(&ns, "good", &good),
            secret_raw(&ns, "bad", &good.pem, &other.key),
            secret(&ns, "future", &future),
            format!(
                "apiVersion: crd.alauda.io/v1\nkind: Frontend\nmetadata:\n  name: ft\n  namespace: {ns}\n  labels: {{alb2.cpaas.io/name: {alb}}}\nspec:\n  port: {port}\n  protocol: https\n  certificate_name: {ns}_good\n"
            ),
            rule("r-good", "good.com", &format!("{ns}/good")),
            rule("r-bad", "bad.com", &format!("{ns}/bad")),
            rule("r-future", "future.com", &format!("{ns}/future")),
        ]
        .join("---\n"),
    );
    let runtime = tempfile::Builder::new().prefix("alb-e2e-ctl-tls-").tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cmd = Command::new(alb_bin());
    cmd.arg("controller")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["--alb-name", alb, "--alb-namespace", &ns, "--pod-name", "p1", "--spawn-nginx"])
        .arg("--runtime-dir")
        .arg(runtime.path())
        .args(["--api-port", &free_port().to_string(), "--bind", "127.0.0.1", "--workers", "2"])
        .args(["--admin-port", &free_port().to_string(), "--metrics-port", &free_port().to_string()])
        .args(["--lease-duration", "4", "--renew-deadline", "2", "--retry-period", "1"])
        .env("ALB_LOG", "info")
        .env_remove("KUBECONFIG");
    let ctl = Proc::spawn("alb controller (tls)", &mut cmd);
    ctl.wait_log(&format!("listening on 127.0.0.1:{port}"), Duration::from_secs(30));
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}; log:\n{}", ctl.logs().join("\n"));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("good.com served", &|| served(port, Some("good.com")).ok() == Some(good.der.clone()));
    assert_served(port, None, &good, "the Frontend's certificate (ns_name form)");
    assert_refused(port, Some("bad.com"), "mismatched key: no certificate for bad.com");
    let condition = |rule: &str| {
        let v = c.get_json(&["rule", rule, "-n", &ns]);
        v["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Accepted").cloned())
    };
    wait("Accepted=False on r-bad", &|| condition("r-bad").is_some_and(|c| c["status"] == "False"));
    let cond = condition("r-bad").unwrap();
    assert_eq!(cond["reason"], "CertificateKeyMismatch", "{cond}");
    assert!(cond["message"].as_str().unwrap_or("").contains(&format!("Secret {ns}/bad")), "{cond}");
    wait("Accepted=True on r-good", &|| condition("r-good").is_some_and(|c| c["status"] == "True"));
    // notBefore in the future: the same treatment as an expired certificate
    assert_refused(port, Some("future.com"), "not yet valid: no certificate for future.com");
    wait("Accepted=False on r-future", &|| condition("r-future").is_some_and(|c| c["status"] == "False"));
    let cond = condition("r-future").unwrap();
    assert_eq!(cond["reason"], "CertificateNotYetValid", "{cond}");
    let msg = cond["message"].as_str().unwrap_or("");
    assert!(msg.contains(&format!("Secret {ns}/future")) && msg.contains("not valid before 2099-05-06"), "{cond}");
    let event = |rule: &str| {
        let v = c.get_json(&["events.v1.events.k8s.io", "-n", &ns]);
        v["items"]
            .as_array()
            .and_then(|es| es.iter().find(|e| e["regarding"]["name"] == rule && e["type"] == "Warning").cloned())
    };
    wait("Warning Event for r-future", &|| event("r-future").is_some());
    let ev = event("r-future").unwrap();
    assert_eq!(ev["reason"], "CertificateNotYetValid", "{ev}");
    assert!(ev["note"].as_str().unwrap_or("").contains(&format!("Secret {ns}/future")), "{ev}");

    // defaultSSLStrategy Always on the ALB2: an unknown SNI gets the default certificate (no Ingress https port)
    assert_refused(port, Some("zzz.com"), "strategy Never: no fallback");
    c.apply(&format!(
        "apiVersion: crd.alauda.io/v2beta1\nkind: ALB2\nmetadata: {{name: {alb}, namespace: {ns}}}\nspec:\n  address: 127.0.0.1\n  type: nginx\n  config: {{ingressHTTPPort: 0, ingressHTTPSPort: 0, projects: [ALL_ALL], defaultSSLStrategy: Always, defaultSSLCert: {ns}/good}}\n"
    ));
    wait("fallback certificate for zzz.com", &|| served(port, Some("zzz.com")).ok() == Some(good.der.clone()));

    // Rotation through the API server: served within seconds, no reload.
    let pids = crate::harness::nginx_pids(runtime.path());
    c.apply(&secret(&ns, "good", &v2));
    wait("rotated certificate served", &|| served(port, Some("good.com")).ok() == Some(v2.der.clone()));
    // The port certificate is the same Secret. The handshake above reached one worker; another may apply the same
    // policy milliseconds later, so this one is waited for too (each connection may land on either worker).
    wait("rotated port certificate served by 10 handshakes in a row", &|| {
        (0..10).all(|_| served(port, None).ok() == Some(v2.der.clone()))
    });
    assert_eq!(crate::harness::nginx_pids(runtime.path()), pids, "no reload");
}

/// The Lua side of the contract: `certificates` is optional, checked (key forms, PEM strings) and a bad entry
/// refuses the whole policy, keeping the previous one.
#[test]
fn tls_policy_certificates_schema() {
    let dp = crate::harness::Dataplane::start(1);
    let token = dp.token.clone();
    let c = cert(&["a.com"]);
    let entry = serde_json::json!({"cert": c.pem, "key": c.key});
    let policy = |certs: serde_json::Value| serde_json::json!({"version": 1, "http": {}, "certificates": certs});
    for key in ["443", "a.com", "*.a.com", "a.com/8443", "*.a.com/443", "*"] {
        dp.push(&policy(serde_json::json!({ key: entry })));
    }
    let put = |p: serde_json::Value| dp.api("PUT", "/policy", Some(&token), &serde_json::to_vec(&p).unwrap());
    for key in ["0", "70000", "a.com/", "a com", "a.com/x", "/443", "*."] {
        let r = put(policy(serde_json::json!({ key: entry })));
        assert_eq!(r.status, 400, "{key:?}: {r:?}");
        assert!(r.body.contains("certificates: invalid key"), "{key:?}: {}", r.body);
    }
    let r = put(policy(serde_json::json!({"a.com": {"cert": c.pem}})));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("certificates[\\\"a.com\\\"].key must be a PEM string"), "{}", r.body);
    let r = put(policy(serde_json::json!([1])));
    assert_eq!(r.status, 400, "{r:?}");
    // an entry OpenSSL cannot parse is left out by the workers, the policy still applies
    dp.push(&policy(serde_json::json!({"a.com": entry, "b.com": {"cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "key": c.key}})));
    dp.proc.wait_log("certificate \"b.com\" cannot be parsed", Duration::from_secs(5));
}
