use super::super::testutil::*;
use super::super::translate::expected;
use super::super::AlbIngressConfig;
use super::*;
use crate::ingress::Ingress;
use serde_json::json;

fn ing(annos: &[(&str, &str)]) -> Ingress {
    let mut i = ingress(
        "ns1",
        "web",
        json!({"rules": [{"host": "a.com", "http": {"paths": [
            {"path": "/app", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 80}}}},
            {"path": "/v[0-9]+", "pathType": "ImplementationSpecific",
             "backend": {"service": {"name": "s", "port": {"number": 80}}}}
        ]}}]}),
    );
    for (k, v) in annos {
        i = annotate(i, k, v);
    }
    i
}

fn parsed(annos: &[(&str, &str)]) -> Balance {
    let i = ing(annos);
    parse(&Annotations::new(&i, "cpaas.io"))
}

/// `(policy, attribute)` of each Rule, and the warnings.
fn translated(annos: &[(&str, &str)]) -> (Vec<(String, String)>, Vec<String>) {
    let cfg = AlbIngressConfig::default();
    let w = World::default();
    let exp = expected(&cfg, &w.world(), &ing(annos));
    let sgs = exp
        .rules
        .iter()
        .map(|r| {
            let sg = r.spec.service_group.as_ref().unwrap();
            (sg.session_affinity_policy.clone(), sg.session_affinity_attribute.clone())
        })
        .collect();
    (sgs, exp.warnings.iter().map(|w| format!("{}: {}", w.reason, w.message)).collect())
}

#[test]
fn nothing_by_default() {
    assert_eq!(parsed(&[]), Balance { affinity: Affinity::None, service_upstream: false, notes: vec![], bad: vec![] });
    let (sgs, warnings) = translated(&[]);
    assert_eq!(sgs, vec![(String::new(), String::new()); 2]);
    assert!(warnings.is_empty());
}

#[test]
fn cookie_affinity_with_attributes() {
    let b = parsed(&[
        (AFFINITY, "cookie"),
        (AFFINITY_MODE, "balanced"),
        (COOKIE_NAME, "route"),
        (COOKIE_DOMAIN, ".a.com"),
        (COOKIE_SAMESITE, "lax"),
        (COOKIE_SECURE, "true"),
        (COOKIE_MAX_AGE, "3600"),
        (COOKIE_EXPIRES, "7200"),
    ]);
    assert!(b.bad.is_empty() && b.notes.is_empty(), "{b:?}");
    let Affinity::Cookie(c) = &b.affinity else { panic!("{b:?}") };
    assert_eq!(
        cookie_attribute(c, Some("/app")),
        "route; Path=/app; Domain=.a.com; SameSite=Lax; Secure; Max-Age=3600; Expires-In=7200"
    );
    let (sgs, warnings) = translated(&[(AFFINITY, "cookie")]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(sgs[0], ("cookie".into(), "INGRESSCOOKIE; Path=/app".into()), "default name, the path of the Rule");
    assert_eq!(sgs[1], ("cookie".into(), "INGRESSCOOKIE; Path=/".into()), "regex path: /");
    let (sgs, _) = translated(&[(AFFINITY, "cookie"), (COOKIE_PATH, "/x")]);
    assert_eq!(sgs, vec![("cookie".into(), "INGRESSCOOKIE; Path=/x".into()); 2]);
}

#[test]
fn bad_cookie_attributes_are_dropped_one_by_one() {
    for (k, v) in [
        (COOKIE_NAME, "a b"),
        (COOKIE_NAME, "a;Path=/"),
        (COOKIE_PATH, "app"),
        (COOKIE_PATH, "/a;Domain=evil"),
        (COOKIE_PATH, "/a b"),
        (COOKIE_DOMAIN, "a.com;x"),
        (COOKIE_DOMAIN, "a_b.com"),
        (COOKIE_SAMESITE, "sometimes"),
        (COOKIE_SECURE, "yes"),
        (COOKIE_MAX_AGE, "-1"),
        (COOKIE_MAX_AGE, "1h"),
        (COOKIE_EXPIRES, "tomorrow"),
    ] {
        let b = parsed(&[(AFFINITY, "cookie"), (k, v)]);
        assert_eq!(b.bad.len(), 1, "{k}={v}: {b:?}");
        assert_eq!((b.bad[0].key.as_str(), b.bad[0].value.as_str()), (k, v));
        let Affinity::Cookie(c) = &b.affinity else { panic!("{b:?}") };
        assert_eq!(cookie_attribute(c, None), "INGRESSCOOKIE; Path=/", "{k}={v}: the rest still applies");
    }
    let (sgs, warnings) = translated(&[(AFFINITY, "cookie"), (COOKIE_SAMESITE, "x\ny")]);
    assert_eq!(sgs[0].0, "cookie");
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].starts_with("InvalidAnnotation: annotation nginx.ingress.kubernetes.io/session-cookie-samesite")
    );
}

#[test]
fn affinity_values() {
    let b = parsed(&[(AFFINITY, "ip")]);
    assert_eq!(b.affinity, Affinity::None);
    assert_eq!(b.bad[0].key, AFFINITY);
    let b = parsed(&[(AFFINITY, "cookie"), (AFFINITY_MODE, "persistent")]);
    assert!(b.bad.is_empty());
    assert_eq!(b.notes.len(), 1, "persistent is approximated");
    assert_eq!(parsed(&[(AFFINITY_MODE, "sticky")]).bad[0].key, AFFINITY_MODE);
}

#[test]
fn upstream_hash_by() {
    assert_eq!(hash_by("$remote_addr"), Ok(Affinity::SourceIp));
    assert_eq!(hash_by(" $binary_remote_addr "), Ok(Affinity::SourceIp));
    assert_eq!(hash_by("$http_x_user_id"), Ok(Affinity::Header("x-user-id".into())));
    assert_eq!(hash_by("$cookie_session"), Ok(Affinity::HashCookie("session".into())));
    for bad in ["$request_uri", "$http_", "$http_x-y", "$cookie_a;b", "$remote_addr$http_x", "user", ""] {
        let e = hash_by(bad).unwrap_err();
        assert_eq!(e.key, UPSTREAM_HASH_BY, "{bad}");
    }
    let (sgs, w) = translated(&[(UPSTREAM_HASH_BY, "$http_x_user")]);
    assert_eq!(sgs, vec![("header".into(), "x-user".into()); 2]);
    assert!(w.is_empty());
    let (sgs, _) = translated(&[(UPSTREAM_HASH_BY, "$remote_addr")]);
    assert_eq!(sgs[0], ("sip-hash".into(), String::new()));
    let (sgs, _) = translated(&[(UPSTREAM_HASH_BY, "$cookie_sid")]);
    assert_eq!(sgs[0], ("cookie".into(), "sid".into()));
    // Cookie affinity wins.
    let (sgs, _) = translated(&[(UPSTREAM_HASH_BY, "$remote_addr"), (AFFINITY, "cookie")]);
    assert_eq!(sgs[0].0, "cookie");
    // Unsupported: warning, round robin, the Rules still exist.
    let (sgs, w) = translated(&[(UPSTREAM_HASH_BY, "$request_uri")]);
    assert_eq!(sgs, vec![(String::new(), String::new()); 2]);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("upstream-hash-by") && w[0].contains("$request_uri"), "{w:?}");
}

#[test]
fn load_balance_and_service_upstream() {
    assert!(parsed(&[(LOAD_BALANCE, "round_robin")]).notes.is_empty());
    let b = parsed(&[(LOAD_BALANCE, "EWMA")]);
    assert!(b.bad.is_empty());
    assert!(b.notes[0].1.contains("ewma"), "{b:?}");
    assert_eq!(parsed(&[(LOAD_BALANCE, "least_conn")]).bad[0].key, LOAD_BALANCE);
    assert!(!parsed(&[(SERVICE_UPSTREAM, "false")]).service_upstream);
    let b = parsed(&[(SERVICE_UPSTREAM, "True")]);
    assert!(b.service_upstream && b.notes.is_empty() && b.bad.is_empty());
    assert_eq!(parsed(&[(SERVICE_UPSTREAM, "1")]).bad[0].key, SERVICE_UPSTREAM);
    let cfg = AlbIngressConfig::default();
    let w = World::default();
    let key = "alb2.cpaas.io/service-upstream";
    let exp = expected(&cfg, &w.world(), &ing(&[(SERVICE_UPSTREAM, "true")]));
    assert!(exp.rules.iter().all(|r| r.metadata.annotations.as_ref().unwrap()[key] == "true"));
    let exp = expected(&cfg, &w.world(), &ing(&[]));
    assert!(exp.rules.iter().all(|r| !r.metadata.annotations.as_ref().unwrap().contains_key(key)));
    let (sgs, w) = translated(&[(LOAD_BALANCE, "ewma")]);
    assert_eq!(sgs.len(), 2);
    assert!(w[0].starts_with("AnnotationApproximated"), "{w:?}");
}
