//! Certificate map keys (controlplane.md §3.5) and certificate checks.

use super::*;
use crate::compile::testutil::{frontend, rule};
use k8s_openapi::ByteString;
use serde_json::json;

const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

struct Pair {
    cert: String,
    key: String,
}

fn gen(names: &[&str]) -> Pair {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    Pair { cert: params.self_signed(&key).unwrap().pem(), key: key.serialize_pem() }
}

fn gen_between(names: &[&str], from: (i32, u8, u8), to: (i32, u8, u8)) -> Pair {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
    Pair { cert: params.self_signed(&key).unwrap().pem(), key: key.serialize_pem() }
}

fn gen_expired(names: &[&str]) -> Pair {
    gen_between(names, (2020, 1, 1), (2021, 2, 3))
}

fn secret_with(ns: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    let mut s = Secret::default();
    s.metadata.namespace = Some(ns.into());
    s.metadata.name = Some(name.into());
    s.type_ = Some("kubernetes.io/tls".into());
    s.data = Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect());
    s
}

fn secret(ns: &str, name: &str, p: &Pair) -> Secret {
    secret_with(ns, name, &[("tls.crt", &p.cert), ("tls.key", &p.key)])
}

fn https_rule(name: &str, domain: &str, cert: &str) -> Rule {
    rule(name, "ft", json!({"priority": 0, "domain": domain, "certificate_name": cert}))
}

fn ft(cert: &str) -> Frontend {
    let mut f = frontend("ft", 443, "https", None);
    f.spec.certificate_name = cert.into();
    f
}

/// The leaf certificate (first PEM block) of a map entry, DER.
fn leaf(c: &Certificate) -> Vec<u8> {
    CertificateDer::pem_slice_iter(c.cert.as_bytes()).next().unwrap().unwrap().to_vec()
}

fn leaf_of(p: &Pair) -> Vec<u8> {
    CertificateDer::pem_slice_iter(p.cert.as_bytes()).next().unwrap().unwrap().to_vec()
}

/// [`build`] without a fallback: (map, rejects).
fn build2(
    secrets: &[Secret],
    fts: &[(&Frontend, u16)],
    rules: &[(&Rule, u16)],
    now: i64,
) -> (BTreeMap<String, Certificate>, Vec<Reject>) {
    let m = build(secrets, fts, rules, None, now);
    (m.certificates, m.rejects)
}

fn reasons(r: &[Reject]) -> Vec<(&str, &str, &str)> {
    r.iter().map(|r| (r.name.as_str(), r.reason.as_str(), r.field.as_str())).collect()
}

#[test]
fn certificate_refs_accept_both_forms() {
    assert_eq!(parse_ref("shop_web-tls"), Some(("shop".into(), "web-tls".into())));
    assert_eq!(parse_ref("shop/web-tls"), Some(("shop".into(), "web-tls".into())));
    assert_eq!(parse_ref(" a.b/c.d "), Some(("a.b".into(), "c.d".into())));
    assert_eq!(parse_ref("noseparator"), None);
    assert_eq!(parse_ref("/x"), None);
    assert_eq!(parse_ref("ns_"), None);
    assert_eq!(parse_ref("n s/x"), None);
}

#[test]
fn keys_per_port_domain_and_domain_port() {
    let (a, b, c, d) = (gen(&["a.com"]), gen(&["b.com"]), gen(&["*.e.com"]), gen(&["dflt"]));
    let secrets = vec![secret("ns", "a", &a), secret("ns", "b", &b), secret("ns", "wild", &c), secret("ns", "d", &d)];
    let (f443, mut f8443) = (ft("ns_d"), ft(""));
    f8443.metadata.name = Some("ft2".into());
    let rules = [
        https_rule("ra", "A.com", "ns/a"),
        https_rule("rb1", "b.com", "ns_b"),
        https_rule("rb2", "b.com", "ns_b"),
        https_rule("rw", "*.e.com", "ns/wild"),
        https_rule("no-cert", "x.com", ""),
        https_rule("no-domain", "", "ns/a"),
    ];
    let rl: Vec<(&Rule, u16)> = vec![
        (&rules[0], 443),
        (&rules[1], 443),
        (&rules[2], 8443),
        (&rules[3], 443),
        (&rules[4], 443),
        (&rules[5], 443),
    ];
    let (map, rejects) = build2(&secrets, &[(&f443, 443), (&f8443, 8443)], &rl, NOW);
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(map.keys().collect::<Vec<_>>(), vec!["*.e.com", "443", "a.com", "b.com/443", "b.com/8443"]);
    assert_eq!(leaf(&map["a.com"]), leaf_of(&a));
    assert_eq!(leaf(&map["b.com/8443"]), leaf_of(&b));
    assert_eq!(leaf(&map["443"]), leaf_of(&d));
    assert_eq!(leaf(&map["*.e.com"]), leaf_of(&c));
    assert!(map["a.com"].key.contains("PRIVATE KEY"));
}

#[test]
fn smallest_valid_ns_name_wins_within_a_domain() {
    let (x, y) = (gen(&["s.com"]), gen(&["s.com"]));
    let secrets = vec![secret("zz", "x", &x), secret("aa", "y", &y)];
    let rules =
        [https_rule("r1", "s.com", "zz/x"), https_rule("r2", "s.com", "aa_y"), https_rule("r3", "s.com", "a/gone")];
    let rl: Vec<(&Rule, u16)> = rules.iter().map(|r| (r, 443)).collect();
    let (map, rejects) = build2(&secrets, &[], &rl, NOW);
    assert_eq!(leaf(&map["s.com"]), leaf_of(&y), "aa/y < zz/x");
    // a/gone sorts first but does not exist: reported, and the smallest valid one serves
    assert_eq!(reasons(&rejects), vec![("r3", REASON_NOT_FOUND, "spec.certificate_name")]);
    assert!(rejects[0].message.contains("Secret a/gone"), "{}", rejects[0].message);
    assert!(rejects[0].message.contains("falls back"), "{}", rejects[0].message);
}

#[test]
fn bad_certificates_are_rejected_and_others_kept() {
    let good = gen(&["good.com"]);
    let other = gen(&["other.com"]);
    let expired = gen_expired(&["old.com"]);
    let secrets = vec![
        secret("ns", "good", &good),
        secret("ns", "expired", &expired),
        secret_with("ns", "mismatch", &[("tls.crt", &good.cert), ("tls.key", &other.key)]),
        secret_with("ns", "nokey", &[("tls.crt", &good.cert)]),
        secret_with(
            "ns",
            "garbage",
            &[
                ("tls.crt", "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"),
                ("tls.key", &good.key),
            ],
        ),
        secret_with("ns", "notpem", &[("tls.crt", "hello"), ("tls.key", &good.key)]),
        secret_with(
            "ns",
            "badkey",
            &[("tls.crt", &good.cert), ("tls.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")],
        ),
        {
            let mut s = secret("ns", "opaque", &good);
            s.type_ = Some("Opaque".into());
            s
        },
    ];
    let rules = [
        https_rule("r-good", "good.com", "ns/good"),
        https_rule("r-expired", "old.com", "ns/expired"),
        https_rule("r-mismatch", "m.com", "ns/mismatch"),
        https_rule("r-nokey", "n.com", "ns/nokey"),
        https_rule("r-garbage", "g.com", "ns/garbage"),
        https_rule("r-notpem", "p.com", "ns/notpem"),
        https_rule("r-badkey", "k.com", "ns/badkey"),
        https_rule("r-opaque", "o.com", "ns/opaque"),
        https_rule("r-badname", "q.com", "justaname"),
        https_rule("r-baddomain", "a.com/x", "ns/good"),
    ];
    let rl: Vec<(&Rule, u16)> = rules.iter().map(|r| (r, 443)).collect();
    let f = ft("ns/expired");
    let (map, rejects) = build2(&secrets, &[(&f, 443)], &rl, NOW);
    assert_eq!(map.keys().collect::<Vec<_>>(), vec!["good.com"]);
    assert_eq!(
        reasons(&rejects),
        vec![
            ("ft", REASON_EXPIRED, "spec.certificate_name"),
            ("r-baddomain", REASON_BAD_DOMAIN, "spec.domain"),
            ("r-garbage", REASON_INVALID, "spec.certificate_name"),
            ("r-badkey", REASON_INVALID, "spec.certificate_name"),
            ("r-mismatch", REASON_MISMATCH, "spec.certificate_name"),
            ("r-nokey", REASON_INVALID, "spec.certificate_name"),
            ("r-opaque", REASON_NOT_FOUND, "spec.certificate_name"),
            ("r-expired", REASON_EXPIRED, "spec.certificate_name"),
            ("r-notpem", REASON_INVALID, "spec.certificate_name"),
            ("r-badname", REASON_BAD_NAME, "spec.certificate_name"),
        ]
    );
    let msg = |n: &str| rejects.iter().find(|r| r.name == n).unwrap().message.clone();
    assert!(
        msg("ft").contains("Secret ns/expired") && msg("ft").contains("expired at 2021-02-03T00:00:00Z"),
        "{}",
        msg("ft")
    );
    assert!(msg("ft").contains("port 443 has no default certificate"), "{}", msg("ft"));
    assert!(msg("r-mismatch").contains("Secret ns/mismatch: tls.key does not match"), "{}", msg("r-mismatch"));
    assert!(msg("r-nokey").contains("has no tls.key"), "{}", msg("r-nokey"));
    assert!(msg("r-notpem").contains("tls.crt holds no PEM certificate"), "{}", msg("r-notpem"));
    // a certificate that expires later is fine now, refused once past
    let (map, rejects) = build2(&secrets[1..2], &[], &rl[1..2], 1_600_000_000);
    assert!(rejects.is_empty() && map.contains_key("old.com"), "{rejects:?}");
}

#[test]
fn ca_crt_is_appended_to_the_chain() {
    let p = gen(&["c.com"]);
    let ca = gen(&["ca"]);
    let s = secret_with("ns", "c", &[("tls.crt", &p.cert), ("tls.key", &p.key), ("ca.crt", &ca.cert)]);
    let c = check("ns/c", &s, NOW).unwrap();
    let chain: Vec<_> = CertificateDer::pem_slice_iter(c.cert.as_bytes()).map(|c| c.unwrap().to_vec()).collect();
    assert_eq!(chain, vec![leaf_of(&p), leaf_of(&ca)]);
}

/// Keys as openssl writes them: RSA PKCS#1 (`RSA PRIVATE KEY`) and EC SEC1 (`EC PRIVATE KEY`).
#[test]
fn openssl_rsa_and_ec_keys() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir.path()).output();
        match out {
            Ok(o) if o.status.success() => true,
            Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
            Err(_) => false,
        }
    };
    if !run(&["genrsa", "-traditional", "-out", "rsa.key", "2048"]) {
        eprintln!("no openssl: skipped");
        return;
    }
    run(&["req", "-x509", "-key", "rsa.key", "-subj", "/CN=rsa.com", "-days", "30", "-out", "rsa.crt"]);
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.key"]);
    run(&["req", "-x509", "-key", "ec.key", "-subj", "/CN=ec.com", "-days", "30", "-out", "ec.crt"]);
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    assert!(read("rsa.key").contains("BEGIN RSA PRIVATE KEY"));
    assert!(read("ec.key").contains("BEGIN EC PRIVATE KEY"));
    let now = now_unix();
    for (crt, key, tag) in [("rsa.crt", "rsa.key", "RSA PRIVATE KEY"), ("ec.crt", "ec.key", "EC PRIVATE KEY")] {
        let s = secret_with("ns", crt, &[("tls.crt", &read(crt)), ("tls.key", &read(key))]);
        let c = check(&format!("ns/{crt}"), &s, now).unwrap_or_else(|e| panic!("{crt}: {e:?}"));
        assert!(c.key.contains(tag), "{}", c.key);
    }
    let mixed = secret_with("ns", "mixed", &[("tls.crt", &read("rsa.crt")), ("tls.key", &read("ec.key"))]);
    assert_eq!(check("ns/mixed", &mixed, now).unwrap_err().reason, REASON_MISMATCH);
}

#[test]
fn time_parsing() {
    assert_eq!(parse_time(0x17, "700101000000Z"), Some(0));
    assert_eq!(parse_time(0x17, "491231235959Z"), Some(2524607999));
    assert_eq!(parse_time(0x18, "20260101000000Z"), Some(NOW));
    assert_eq!(parse_time(0x18, "2026010100000Z"), None);
    assert_eq!(format_time(NOW), "2026-01-01T00:00:00Z");
    assert_eq!(format_time(951_782_400), "2000-02-29T00:00:00Z");
}

#[test]
fn not_yet_valid_certificates_are_rejected_until_their_not_before() {
    let (soon, good) = (gen_between(&["soon.com"], (2026, 3, 1), (2027, 1, 1)), gen(&["good.com"]));
    let secrets = vec![secret("ns", "soon", &soon), secret("ns", "good", &good)];
    let rules = [https_rule("r-soon", "soon.com", "ns/soon"), https_rule("r-good", "good.com", "ns/good")];
    let rl: Vec<(&Rule, u16)> = rules.iter().map(|r| (r, 443)).collect();
    let f = ft("ns_soon");
    let m = build(&secrets, &[(&f, 443)], &rl, None, NOW);
    assert_eq!(m.certificates.keys().collect::<Vec<_>>(), vec!["good.com"], "the other host is unaffected");
    assert_eq!(
        reasons(&m.rejects),
        vec![
            ("ft", REASON_NOT_YET_VALID, "spec.certificate_name"),
            ("r-soon", REASON_NOT_YET_VALID, "spec.certificate_name")
        ]
    );
    let msg = &m.rejects[1].message;
    assert!(msg.contains("Secret ns/soon") && msg.contains("not valid before 2026-03-01T00:00:00Z"), "{msg}");
    // compile again when it becomes valid (rcgen's default certificate of `good` lasts far longer)
    let valid_from = days_from_civil(2026, 3, 1) * 86400;
    assert_eq!(m.next_change, Some(valid_from));
    let later = build(&secrets, &[(&f, 443)], &rl, None, valid_from);
    assert!(later.rejects.is_empty(), "{:?}", later.rejects);
    assert_eq!(later.certificates.keys().collect::<Vec<_>>(), vec!["443", "good.com", "soon.com"]);
    // then at its expiry; once expired nothing is left to wait for
    let expiry = days_from_civil(2027, 1, 1) * 86400;
    let good_only = build(&secrets[1..], &[], &rl[1..], None, NOW).next_change.unwrap();
    assert_eq!(later.next_change, Some((expiry + 1).min(good_only)));
    let expired = build(&secrets[..1], &[], &rl[..1], None, expiry + 1);
    assert_eq!(reasons(&expired.rejects), vec![("r-soon", REASON_EXPIRED, "spec.certificate_name")]);
    assert_eq!(expired.next_change, None);
}

fn fallback(default_cert: Option<&str>) -> TlsFallback {
    TlsFallback {
        https_port: 443,
        default_cert: default_cert.map(String::from),
        alb_namespace: "cpaas-system".into(),
        alb_name: "alb-dev".into(),
    }
}

#[test]
fn fallback_is_the_ingress_https_port_certificate_else_the_default_certificate() {
    let (port, dflt, host) = (gen(&["port"]), gen(&["dflt"]), gen(&["h.com"]));
    let secrets = vec![secret("ns", "port", &port), secret("cpaas-system", "dflt", &dflt), secret("ns", "h", &host)];
    let (f443, mut f8443) = (ft("ns/port"), ft(""));
    f8443.metadata.name = Some("ft2".into());
    let rules = [https_rule("rh", "h.com", "ns/h")];
    let rl: Vec<(&Rule, u16)> = vec![(&rules[0], 8443)];
    let fts = [(&f443, 443), (&f8443, 8443)];

    // no fallback: no "*" key
    assert!(!build(&secrets, &fts, &rl, None, NOW).certificates.contains_key(FALLBACK_KEY));
    // the certificate of the Ingress https port wins over the ALB's default certificate
    let m = build(&secrets, &fts, &rl, Some(&fallback(Some("cpaas-system/dflt"))), NOW);
    assert!(m.rejects.is_empty(), "{:?}", m.rejects);
    assert_eq!(m.certificates.keys().collect::<Vec<_>>(), vec!["*", "443", "h.com"]);
    assert_eq!(leaf(&m.certificates[FALLBACK_KEY]), leaf_of(&port));
    // the https port has no certificate: the default certificate (ns_name form too)
    let no_port_cert = [(&f8443, 8443)];
    let m = build(&secrets, &no_port_cert, &rl, Some(&fallback(Some("cpaas-system_dflt"))), NOW);
    assert_eq!(leaf(&m.certificates[FALLBACK_KEY]), leaf_of(&dflt));
    // another https port
    let m = build(&secrets, &fts, &rl, Some(&TlsFallback { https_port: 8443, ..fallback(None) }), NOW);
    assert!(!m.certificates.contains_key(FALLBACK_KEY), "port 8443 has no certificate, no default one");
    // neither: nothing
    let m = build(&secrets, &no_port_cert, &rl, Some(&fallback(None)), NOW);
    assert!(!m.certificates.contains_key(FALLBACK_KEY) && m.rejects.is_empty());
    // a default certificate that cannot serve is reported on the ALB2
    let m = build(&secrets, &no_port_cert, &rl, Some(&fallback(Some("cpaas-system/gone"))), NOW);
    assert!(!m.certificates.contains_key(FALLBACK_KEY));
    assert_eq!(reasons(&m.rejects), vec![("alb-dev", REASON_NOT_FOUND, "spec.config.defaultSSLCert")]);
    assert_eq!(m.rejects[0].kind, "ALB2");
    assert!(m.rejects[0].message.contains("Secret cpaas-system/gone"), "{}", m.rejects[0].message);
    // "*" is never a Rule domain
    assert!(!valid_domain("*"));
}

#[test]
fn fallback_only_under_always_and_both() {
    use crate::ingress::{AlbIngressConfig, SslStrategy};
    let mut cfg = AlbIngressConfig { https_port: 8443, default_ssl_cert: Some("a/b".into()), ..Default::default() };
    for (s, on) in [
        (SslStrategy::Never, false),
        (SslStrategy::Request, false),
        (SslStrategy::Always, true),
        (SslStrategy::Both, true),
    ] {
        cfg.ssl_strategy = s;
        let f = TlsFallback::of(&cfg);
        assert_eq!(f.is_some(), on, "{s:?}");
        if let Some(f) = f {
            assert_eq!((f.https_port, f.default_cert.as_deref()), (8443, Some("a/b")));
        }
    }
}
