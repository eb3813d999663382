use super::super::testutil::*;
use super::*;
const BACKEND_PROTOCOL: &str = "nginx.ingress.kubernetes.io/backend-protocol";
use crate::ingress::Ingress;
use serde_json::{json, Value};

fn cfg() -> AlbIngressConfig {
    AlbIngressConfig { alb_name: "alb-dev".into(), alb_namespace: "cpaas-system".into(), ..Default::default() }
}

fn backend(svc: &str, port: Value) -> Value {
    json!({"service": {"name": svc, "port": port}})
}

fn path(p: &str, ty: &str, svc: &str) -> Value {
    json!({"path": p, "pathType": ty, "backend": backend(svc, json!({"number": 80}))})
}

/// One rule for `host` with the given paths.
fn one_rule(host: &str, paths: Vec<Value>) -> Ingress {
    ingress("ns1", "web", json!({"rules": [{"host": host, "http": {"paths": paths}}]}))
}

fn run(cfg: &AlbIngressConfig, w: &World, ing: &Ingress) -> Expected {
    expected(cfg, &w.world(), ing)
}

fn match_of(rule: &RuleObject) -> Value {
    serde_json::to_value(rule.spec.dslx.as_ref().unwrap()).unwrap()
}

#[test]
fn worked_example_shape() {
    // controlplane.md §2.8.
    let cfg = cfg();
    let mut w = World { namespaces: vec![namespace("alb-n1", Some("p2"))], ..Default::default() };
    let mut ft = frontend("cpaas-system", "alb-dev-00080", 80, "http", &[]);
    ft.metadata.uid = Some("ft-uid".into());
    w.frontends = vec![ft];
    let ing = ingress(
        "alb-n1",
        "ing-with-project",
        json!({"rules": [{"http": {"paths": [path("/a", "Prefix", "svc-default")]}}]}),
    );
    let exp = run(&cfg, &w, &ing);
    assert!(exp.warnings.is_empty(), "{:?}", exp.warnings);
    assert_eq!(exp.ports, vec![(80, "http")]);
    assert_eq!(js(&exp.frontends), js(&w.frontends), "existing Frontend unchanged");
    assert_eq!(exp.rules.len(), 1);
    let mut rule = serde_json::to_value(&exp.rules[0]).unwrap();
    let name = rule["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("alb-dev-00080-") && name.len() == "alb-dev-00080-".len() + 4, "{name}");
    assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{name}");
    rule["metadata"]["name"] = json!("X");
    assert_eq!(
        rule,
        json!({
            "apiVersion": "crd.alauda.io/v1", "kind": "Rule",
            "metadata": {
                "name": "X", "namespace": "cpaas-system",
                "labels": {"alb2.cpaas.io/name": "alb-dev", "alb2.cpaas.io/frontend": "alb-dev-00080",
                           "alb2.cpaas.io/source-type": "ingress", "alb2.cpaas.io/source-name": "ing-with-project",
                           "alb2.cpaas.io/source-ns": "alb-n1", "alb2.cpaas.io/source-index": "0-0",
                           "cpaas.io/project": "p2"},
                "annotations": {"alb2.cpaas.io/source-ingress-rule-index": "0",
                                "alb2.cpaas.io/source-ingress-path-index": "0"},
                "ownerReferences": [{"apiVersion": "crd.alauda.io/v1", "kind": "Frontend",
                                     "name": "alb-dev-00080", "uid": "ft-uid"}]
            },
            "spec": {
                "priority": 5, "description": "alb-n1/ing-with-project:80:0", "domain": "", "url": "/a",
                "rewrite_base": "/a", "rewrite_target": "", "certificate_name": "", "backendProtocol": "",
                "dslx": [{"type": "URL", "values": [["STARTS_WITH", "/a"]]}],
                "dsl": "[{[[STARTS_WITH /a]] URL }]",
                "serviceGroup": {"session_affinity_policy": "", "session_affinity_attribute": "",
                                 "services": [{"name": "svc-default", "namespace": "alb-n1", "port": 80, "weight": 100}]},
                "source": {"type": "ingress", "namespace": "alb-n1", "name": "ing-with-project"},
                "enableCORS": false, "corsAllowHeaders": "", "corsAllowOrigin": "", "vhost": "",
                "redirectURL": "", "redirectCode": 0, "type": "", "config": {}
            }
        })
    );
}

#[test]
fn path_type_mapping() {
    let cases = [
        ("/exact", "Exact", json!(["EQ", "/exact"])),
        ("/foo", "Prefix", json!(["STARTS_WITH", "/foo"])),
        ("/foo", "ImplementationSpecific", json!(["STARTS_WITH", "/foo"])),
        ("/foo", "", json!(["STARTS_WITH", "/foo"])),
        ("/v[0-9]+/x", "ImplementationSpecific", json!(["REGEX", "^/v[0-9]+/x"])),
        ("^/already", "ImplementationSpecific", json!(["REGEX", "^/already"])),
        ("/a.*", "", json!(["REGEX", "^/a.*"])),
        ("/(a|b)$", "ImplementationSpecific", json!(["REGEX", "^/(a|b)$"])),
        ("/a:b", "ImplementationSpecific", json!(["REGEX", "^/a:b"])),
        ("/a?", "ImplementationSpecific", json!(["REGEX", "^/a?"])),
        ("/a\\d", "ImplementationSpecific", json!(["REGEX", "^/a\\d"])),
        // Exact and Prefix never become regexes.
        ("/v[0-9]", "Prefix", json!(["STARTS_WITH", "/v[0-9]"])),
        ("/a*", "Exact", json!(["EQ", "/a*"])),
    ];
    for (p, ty, want) in cases {
        assert_eq!(url_row(p, ty).map(|r| json!(r)), Some(want), "{p} {ty}");
    }
    assert_eq!(url_row("", "Prefix"), None, "empty path: no URL term");
}

#[test]
fn host_terms_url_first_and_lower_cased() {
    let d = path_dslx("*.Foo.com", "/a", "Prefix");
    assert_eq!(
        json!(d),
        json!([{"type": "URL", "values": [["STARTS_WITH", "/a"]]},
               {"type": "HOST", "values": [["ENDS_WITH", "*.foo.com"]]}])
    );
    assert_eq!(dsl_string(&d), "[{[[STARTS_WITH /a]] URL } {[[ENDS_WITH *.foo.com]] HOST }]");
    // Quirk fixed on purpose: the original kept `Shop.COM` in the dslx, which never matched the lower-cased
    // request host; we lower-case the dslx and keep `spec.domain` as written.
    let cfg = cfg();
    let exp = run(&cfg, &World::default(), &one_rule("Shop.COM", vec![path("/", "Prefix", "s")]));
    assert_eq!(match_of(&exp.rules[0])[1], json!({"type": "HOST", "values": [["EQ", "shop.com"]]}));
    assert_eq!(exp.rules[0].spec.domain, "Shop.COM");
    assert_eq!(
        json!(path_dslx("a.com", "", "ImplementationSpecific")),
        json!([{"type": "HOST", "values": [["EQ", "a.com"]]}])
    );
    assert!(path_dslx("", "", "").is_empty());
    assert_eq!(dsl_string(&[]), "[]");
    let keyed =
        [DslxTerm { kind: "HEADER".into(), key: Some("x".into()), values: vec![vec!["EQ".into(), "1".into()]] }];
    assert_eq!(dsl_string(&keyed), "[{[[EQ 1]] HEADER x}]");
}

#[test]
fn empty_host_and_path_warns() {
    let ing = ingress(
        "ns1",
        "web",
        json!({"rules": [{"http": {"paths": [{"pathType": "ImplementationSpecific", "backend": backend("s", json!({"number": 80}))}]}}]}),
    );
    let exp = run(&cfg(), &World::default(), &ing);
    assert_eq!(exp.rules.len(), 1);
    assert_eq!(exp.rules[0].spec.dslx, Some(Vec::new().into()));
    assert_eq!(exp.warnings[0].reason, "EmptyMatch");
}

/// (http needed, https needed) for an Ingress with one rule of `host`.
fn needs(strategy: SslStrategy, enable_https: Option<&str>, tls_spec: bool, tls_anno: bool) -> (bool, bool) {
    let mut cfg = cfg();
    cfg.ssl_strategy = strategy;
    let mut ing = one_rule("a.com", vec![path("/", "Prefix", "s")]);
    if tls_spec {
        ing.spec.as_mut().unwrap().tls =
            Some(vec![serde_json::from_value(json!({"hosts": ["A.com"], "secretName": "sec"})).unwrap()]);
    }
    if tls_anno {
        ing = annotate(ing, "alb.networking.cpaas.io/tls", "a.com=ns9/cert");
    }
    if let Some(v) = enable_https {
        ing = annotate(ing, "alb.networking.cpaas.io/enable-https", v);
    }
    let exp = run(&cfg, &World::default(), &ing);
    let has = |proto: &str| exp.ports.iter().any(|(_, p)| *p == proto);
    let rules_on = |port: i32| exp.rules.iter().filter(|r| r.spec.description.ends_with(&format!(":{port}:0"))).count();
    assert_eq!((rules_on(80) == 1, rules_on(443) == 1), (has("http"), has("https")), "every path on every Frontend");
    (has("http"), has("https"))
}

#[test]
fn ssl_strategy_table() {
    use SslStrategy::*;
    const HTTP: (bool, bool) = (true, false);
    const HTTPS: (bool, bool) = (false, true);
    const BOTH: (bool, bool) = (true, true);
    // Row 1: a TLS host is https whatever the strategy and enable-https.
    for s in [Never, Request, Always, Both] {
        for e in [None, Some("true"), Some("false")] {
            assert_eq!(needs(s, e, true, false), HTTPS, "{s} {e:?} spec.tls");
            assert_eq!(needs(s, e, false, true), HTTPS, "{s} {e:?} tls annotation");
        }
    }
    // Row 2: Both unless enable-https is "false".
    assert_eq!(needs(Both, None, false, false), BOTH);
    assert_eq!(needs(Both, Some("true"), false, false), BOTH);
    assert_eq!(needs(Both, Some("false"), false, false), HTTP);
    // Row 3: Always unless "false"; Request only with "true".
    assert_eq!(needs(Always, None, false, false), HTTPS);
    assert_eq!(needs(Always, Some("true"), false, false), HTTPS);
    assert_eq!(needs(Always, Some("false"), false, false), HTTP);
    assert_eq!(needs(Request, None, false, false), HTTP);
    assert_eq!(needs(Request, Some("true"), false, false), HTTPS);
    assert_eq!(needs(Request, Some("false"), false, false), HTTP);
    // Row 4: Never.
    assert_eq!(needs(Never, None, false, false), HTTP);
    assert_eq!(needs(Never, Some("true"), false, false), HTTP);
    // An invalid enable-https is ignored with a warning.
    assert_eq!(needs(Request, Some("yes"), false, false), HTTP);
    assert_eq!(needs(Always, Some("yes"), false, false), HTTPS);
}

#[test]
fn ssl_set_is_ingress_wide_and_ports_zero_disable() {
    let mut cfg = cfg();
    cfg.ssl_strategy = SslStrategy::Never;
    cfg.default_ssl_cert = Some("cpaas-system/dflt".into());
    let mut ing = ingress(
        "ns1",
        "web",
        json!({
            "tls": [{"hosts": ["secure.com"], "secretName": "s1"}],
            "rules": [
                {"host": "secure.com", "http": {"paths": [path("/s", "Prefix", "a")]}},
                {"host": "plain.com", "http": {"paths": [path("/p", "Prefix", "b")]}}
            ]
        }),
    );
    let exp = run(&cfg, &World::default(), &ing);
    assert_eq!(exp.ports, vec![(80, "http"), (443, "https")]);
    assert_eq!(exp.rules.len(), 4, "every path on both Frontends");
    let https_ft = &exp.frontends[1];
    assert_eq!(https_ft.metadata.name.as_deref(), Some("alb-dev-00443"));
    assert_eq!((https_ft.spec.protocol.as_str(), https_ft.spec.port), ("https", 443));
    assert_eq!(https_ft.spec.certificate_name, "cpaas-system_dflt");
    assert_eq!(exp.frontends[0].spec.certificate_name, "");
    let cert = |ft: &str, host: &str| {
        exp.rules
            .iter()
            .find(|r| r.metadata.labels.as_ref().unwrap()["alb2.cpaas.io/frontend"] == ft && r.spec.domain == host)
            .map(|r| r.spec.certificate_name.clone())
            .unwrap()
    };
    assert_eq!(cert("alb-dev-00443", "secure.com"), "ns1_s1");
    assert_eq!(cert("alb-dev-00443", "plain.com"), "");
    assert_eq!(cert("alb-dev-00080", "secure.com"), "", "no certificate on http Rules");

    // The annotation gives a raw ns/name; spec.tls wins for a host in both.
    ing = annotate(ing, "alb.networking.cpaas.io/tls", "secure.com=other/x,plain.com=ns2/p");
    let exp2 = run(&cfg, &World::default(), &ing);
    let certs: BTreeSet<String> = exp2.rules.iter().map(|r| r.spec.certificate_name.clone()).collect();
    assert_eq!(certs, BTreeSet::from(["ns1_s1".to_string(), "ns2/p".to_string()]));
    assert_eq!(exp2.ports, vec![(443, "https")], "no host needs http any more");

    cfg.https_port = 0;
    let exp = run(&cfg, &World::default(), &ing);
    assert!(exp.ports.is_empty() && exp.rules.is_empty() && exp.frontends.is_empty());
    cfg.https_port = 443;
    cfg.http_port = 0;
    let plain = one_rule("a.com", vec![path("/", "Prefix", "s")]);
    assert!(run(&cfg, &World::default(), &plain).rules.is_empty());
}

#[test]
fn created_frontends_labels_owner_and_source() {
    let mut cfg = cfg();
    cfg.alb_uid = Some("alb-uid".into());
    let exp = run(&cfg, &World::default(), &one_rule("a.com", vec![path("/", "Prefix", "s")]));
    let ft = serde_json::to_value(&exp.frontends[0]).unwrap();
    assert_eq!(
        ft,
        json!({
            "apiVersion": "crd.alauda.io/v1", "kind": "Frontend",
            "metadata": {"name": "alb-dev-00080", "namespace": "cpaas-system",
                         "labels": {"alb2.cpaas.io/name": "alb-dev"},
                         "ownerReferences": [{"apiVersion": "crd.alauda.io/v2beta1", "kind": "ALB2",
                                              "name": "alb-dev", "uid": "alb-uid"}]},
            "spec": {"port": 80, "protocol": "http", "certificate_name": "", "backendProtocol": "",
                     "source": {"type": "ingress", "namespace": "ns1", "name": "web"}}
        })
    );
    // The Frontend does not exist yet (no uid): its Rules carry no ownerReference until the next pass.
    assert!(exp.rules[0].metadata.owner_references.is_none());
    cfg.alb_uid = None;
    let exp = run(&cfg, &World::default(), &one_rule("a.com", vec![path("/", "Prefix", "s")]));
    assert!(exp.frontends[0].metadata.owner_references.is_none());
}

#[test]
fn existing_frontend_of_other_protocol_is_a_conflict() {
    let mut w = World { frontends: vec![frontend("cpaas-system", "tcp-80", 80, "tcp", &[])], ..Default::default() };
    let exp = run(&cfg(), &w, &one_rule("a.com", vec![path("/", "Prefix", "s")]));
    assert!(exp.rules.is_empty() && exp.frontends.is_empty() && exp.ports.is_empty());
    assert_eq!(exp.warnings[0].reason, "FrontendProtocolConflict");
    assert!(exp.warnings[0].message.contains("tcp-80"), "{}", exp.warnings[0].message);
    // An existing http Frontend with any name is reused.
    w.frontends = vec![frontend("cpaas-system", "my-http", 80, "http", &[])];
    let exp = run(&cfg(), &w, &one_rule("a.com", vec![path("/", "Prefix", "s")]));
    assert_eq!(exp.rules[0].metadata.labels.as_ref().unwrap()["alb2.cpaas.io/frontend"], "my-http");
    assert!(exp.rules[0].metadata.name.as_deref().unwrap().starts_with("my-http-"));
}

#[test]
fn rule_names_are_deterministic_and_distinct() {
    let cfg = cfg();
    let ing = ingress(
        "ns1",
        "web",
        json!({"rules": [
            {"host": "a.com", "http": {"paths": [path("/a", "Prefix", "s"), path("/b", "Prefix", "s")]}},
            {"host": "b.com", "http": {"paths": [path("/a", "Prefix", "s")]}}
        ]}),
    );
    let names = |ing: &Ingress| -> Vec<String> {
        run(&cfg, &World::default(), ing).rules.iter().map(|r| r.metadata.name.clone().unwrap()).collect()
    };
    let first = names(&ing);
    assert_eq!(first, names(&ing), "same input, same names");
    assert_eq!(first.iter().collect::<BTreeSet<_>>().len(), 3);
    assert_eq!(first[0], rule_name("alb-dev-00080", "ns1", "web", 0, 0, 0));
    assert_eq!(rule_name("alb-dev-00080", "ns1", "web", 0, 0, 0), rule_name("alb-dev-00080", "ns1", "web", 0, 0, 0));
    assert_ne!(rule_name("alb-dev-00080", "ns1", "web", 0, 0, 0), rule_name("alb-dev-00080", "ns1", "web", 0, 0, 1));
    assert_ne!(rule_name("alb-dev-00080", "ns1", "web", 0, 0, 0), rule_name("alb-dev-00080", "ns2", "web", 0, 0, 0));
    assert_ne!(rule_name("alb-dev-00080", "ns1", "web", 0, 1, 0), rule_name("alb-dev-00080", "ns1", "web", 1, 0, 0));
    // Names only depend on identity, not on content: editing a path keeps the names.
    let edited = ingress(
        "ns1",
        "web",
        json!({"rules": [
            {"host": "a.com", "http": {"paths": [path("/x", "Exact", "t"), path("/b", "Prefix", "s")]}},
            {"host": "b.com", "http": {"paths": [path("/a", "Prefix", "s")]}}
        ]}),
    );
    assert_eq!(names(&edited), first);
    // A taken name moves to the next attempt.
    let mut taken = BTreeSet::from([first[0].clone()]);
    let exp = expected_with(&cfg, &World::default().world(), &ing, &mut taken);
    assert_eq!(exp.rules[0].metadata.name.as_deref(), Some(rule_name("alb-dev-00080", "ns1", "web", 0, 0, 1).as_str()));
}

#[test]
fn long_names_truncate_label_values() {
    let long = "n".repeat(70);
    let ing = ingress(&long, &long, json!({"rules": [{"http": {"paths": [path("/", "Prefix", "s")]}}]}));
    let exp = run(&cfg(), &World::default(), &ing);
    let labels = exp.rules[0].metadata.labels.as_ref().unwrap();
    assert_eq!(labels["alb2.cpaas.io/source-name"].len(), 63);
    assert_eq!(labels["alb2.cpaas.io/source-ns"].len(), 63);
    assert_eq!(exp.rules[0].spec.source.as_ref().unwrap().name.len(), 70, "spec.source keeps the full name");
    assert!(!labels.contains_key("cpaas.io/project"), "no project label without a project");
}

#[test]
fn priority_annotation_and_routing_annotations() {
    let ing = ingress(
        "ns1",
        "web",
        json!({"rules": [{"host": "a.com", "http": {"paths": [path("/a", "Prefix", "s"), path("/b", "Prefix", "s")]}}]}),
    );
    let ing = annotate(ing, "alb.cpaas.io/ingress-rule-priority-0-1", "2");
    let ing = annotate(ing, "alb.cpaas.io/ingress-rule-priority-0-0", "0");
    let ing = annotate(ing, "nginx.ingress.kubernetes.io/rewrite-target", "/$1");
    let ing = annotate(ing, "nginx.ingress.kubernetes.io/upstream-vhost", "inner.svc");
    let ing = annotate(ing, "nginx.ingress.kubernetes.io/enable-cors", "true");
    let ing = annotate(ing, "nginx.ingress.kubernetes.io/cors-allow-headers", "X-A,X-B");
    let ing = annotate(ing, "nginx.ingress.kubernetes.io/cors-allow-origin", "https://a.com");
    let ing = annotate(ing, BACKEND_PROTOCOL, "HTTPS");
    let exp = run(&cfg(), &World::default(), &ing);
    assert!(exp.warnings.is_empty(), "{:?}", exp.warnings);
    let (a, b) = (&exp.rules[0].spec, &exp.rules[1].spec);
    assert_eq!((a.priority, b.priority), (5, 2));
    // The rewrite is in config.rewrite (ingress-nginx semantics: `$1` makes the path a regex).
    assert_eq!(a.rewrite_target, "");
    assert_eq!(a.rewrite_base, "/a");
    assert_eq!(a.config.as_ref().unwrap()["rewrite"], json!({"regex": "^(?:/a).*", "target": "/$1"}));
    assert_eq!(match_of(&exp.rules[0])[0], json!({"type": "URL", "values": [["REGEX", "^/a"]]}));
    assert_eq!(a.vhost, "inner.svc");
    assert!(a.enable_cors);
    assert_eq!(a.cors_allow_headers, "X-A,X-B");
    assert_eq!(a.cors_allow_origin, "https://a.com");
    assert_eq!(a.backend_protocol, "https");

    let bad = annotate(ing.clone(), "alb.cpaas.io/ingress-rule-priority-0-1", "urgent");
    let exp = run(&cfg(), &World::default(), &bad);
    assert_eq!(exp.rules[1].spec.priority, 5);
    assert_eq!(exp.warnings.len(), 1);
    assert_eq!(exp.warnings[0].reason, "InvalidAnnotation");
    assert!(exp.warnings[0].message.contains("alb.cpaas.io/ingress-rule-priority-0-1"), "{:?}", exp.warnings);
    assert!(exp.warnings[0].message.contains("urgent"));
}

#[test]
fn invalid_backend_protocol_skips_paths_with_a_warning() {
    let ing = annotate(
        one_rule("a.com", vec![path("/a", "Prefix", "s"), path("/b", "Prefix", "s")]),
        BACKEND_PROTOCOL,
        "FCGI",
    );
    let exp = run(&cfg(), &World::default(), &ing);
    assert!(exp.rules.is_empty());
    assert_eq!(exp.warnings.len(), 1, "one warning, not one per path: {:?}", exp.warnings);
    let w = &exp.warnings[0];
    assert_eq!((w.namespace.as_str(), w.name.as_str(), w.reason.as_str()), ("ns1", "web", "InvalidAnnotation"));
    assert!(w.message.contains(BACKEND_PROTOCOL) && w.message.contains("FCGI"), "{}", w.message);
    assert_eq!(w.to_string(), format!("ingress ns1/web: InvalidAnnotation: {}", w.message));
}

#[test]
fn port_by_name_and_failures() {
    let w = World {
        services: vec![
            service("ns1", "named", &[("http", 8080), ("metrics", 9090)]),
            service("other", "elsewhere", &[("http", 1)]),
        ],
        ..Default::default()
    };
    let by_name = |svc: &str, port: &str| json!({"path": "/", "pathType": "Prefix", "backend": backend(svc, json!({"name": port}))});
    let ing = ingress(
        "ns1",
        "web",
        json!({"rules": [{"host": "a.com", "http": {"paths": [
            by_name("named", "metrics"),
            by_name("named", "grpc"),
            by_name("elsewhere", "http"),
            {"path": "/r", "pathType": "Prefix", "backend": {"resource": {"kind": "Bucket", "name": "b"}}},
            {"path": "/n", "pathType": "Prefix", "backend": {"service": {"name": "x"}}},
            path("/num", "Prefix", "no-such-service")
        ]}}]}),
    );
    let exp = run(&cfg(), &w, &ing);
    let rules: Vec<(String, i32)> = exp
        .rules
        .iter()
        .map(|r| {
            let s = &r.spec.service_group.as_ref().unwrap().services[0];
            (r.metadata.labels.as_ref().unwrap()["alb2.cpaas.io/source-index"].clone(), s.port)
        })
        .collect();
    assert_eq!(rules, vec![("0-0".to_string(), 9090), ("0-5".to_string(), 80)], "number used as is");
    let reasons: Vec<&str> = exp.warnings.iter().map(|w| w.reason.as_str()).collect();
    assert_eq!(reasons, ["ServicePortNotFound", "ServicePortNotFound", "UnsupportedBackend", "InvalidBackend"]);
    assert!(exp.warnings[0].message.contains("spec.rules[0].http.paths[1].backend.service.port.name"));
    assert!(exp.warnings[0].message.contains("\"grpc\""));
    assert!(exp.warnings[1].message.contains("not found"), "another namespace's Service does not count");
    assert!(exp.warnings[2].message.contains("paths[3].backend.resource"));
}

#[test]
fn default_backend_only_without_rules() {
    let mut w = World { services: vec![service("ns1", "dflt", &[("web", 8000)])], ..Default::default() };
    let ing = ingress("ns1", "d", json!({"defaultBackend": backend("dflt", json!({"name": "web"}))}));
    let ing = annotate(ing, BACKEND_PROTOCOL, "HTTPS");
    let exp = run(&cfg(), &w, &ing);
    assert!(exp.rules.is_empty());
    assert_eq!(exp.ports, vec![(80, "http")]);
    let ft = &exp.frontends[0];
    assert_eq!(
        serde_json::to_value(ft.spec.service_group.as_ref().unwrap()).unwrap(),
        json!({"session_affinity_policy": "", "session_affinity_attribute": "",
               "services": [{"name": "dflt", "namespace": "ns1", "port": 8000, "weight": 100}]})
    );
    assert_eq!(ft.spec.backend_protocol, "https");
    assert_eq!(ft.spec.source.as_ref().unwrap().name, "d");

    // With rules, the default backend is ignored.
    let both = ingress(
        "ns1",
        "d",
        json!({"defaultBackend": backend("dflt", json!({"number": 1})),
               "rules": [{"http": {"paths": [path("/", "Prefix", "s")]}}]}),
    );
    let exp = run(&cfg(), &w, &both);
    assert!(exp.frontends[0].spec.service_group.is_none());
    assert_eq!(exp.rules.len(), 1);

    // An existing Frontend with a default backend keeps it.
    let mut ft = frontend("cpaas-system", "alb-dev-00080", 80, "http", &[]);
    ft.spec.service_group = Some(ServiceGroup {
        services: vec![ServiceRef { name: "mine".into(), ..Default::default() }],
        ..Default::default()
    });
    w.frontends = vec![ft.clone()];
    let exp = run(&cfg(), &w, &ing);
    assert_eq!(js(&exp.frontends), js(&vec![ft]));

    // Nothing at all: no Frontend.
    let empty = ingress("ns1", "e", json!({}));
    let exp = run(&cfg(), &World::default(), &empty);
    assert!(exp.frontends.is_empty() && exp.rules.is_empty() && exp.ports.is_empty() && exp.warnings.is_empty());
}

#[test]
fn translate_all_merges_and_skips_unclaimed() {
    let cfg = cfg();
    let mut w = World { frontends: vec![frontend("cpaas-system", "user-ft", 8080, "http", &[])], ..Default::default() };
    let mut other_class = one_rule("b.com", vec![path("/", "Prefix", "s")]);
    other_class.metadata.name = Some("nginx-one".into());
    other_class.spec.as_mut().unwrap().ingress_class_name = Some("nginx".into());
    let dflt = ingress("ns0", "dflt", json!({"defaultBackend": backend("d", json!({"number": 80}))}));
    w.ingresses = vec![one_rule("a.com", vec![path("/", "Prefix", "s")]), other_class, dflt];
    let (fts, rules, warnings) = translate_all(&cfg, &w.world());
    assert!(warnings.is_empty());
    let names: Vec<&str> = fts.iter().map(|f| f.metadata.name.as_deref().unwrap()).collect();
    assert_eq!(names, ["user-ft", "alb-dev-00080"]);
    // ns0/dflt came first and created the Frontend with its default backend; ns1/web reused it.
    assert_eq!(fts[1].spec.service_group.as_ref().unwrap().services[0].name, "d");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].spec.domain, "a.com");
}

fn ng(k: &str) -> String {
    format!("nginx.ingress.kubernetes.io/{k}")
}

fn annotated(mut ing: Ingress, annos: &[(&str, &str)]) -> Ingress {
    for (k, v) in annos {
        ing = annotate(ing, &ng(k), v);
    }
    ing
}

fn config_of(rule: &RuleObject) -> Value {
    rule.spec.config.clone().unwrap()
}

fn on_port(exp: &Expected, port: i32) -> Vec<&RuleObject> {
    let ft = format!("alb-dev-{port:05}");
    exp.rules.iter().filter(|r| r.metadata.labels.as_ref().unwrap()["alb2.cpaas.io/frontend"] == ft).collect()
}

#[test]
fn rewrite_target_semantics() {
    let ing = one_rule(
        "a.com",
        vec![
            path("/api(/|$)(.*)", "ImplementationSpecific", "s"),
            path("/plain", "Prefix", "s"),
            path("/x", "Exact", "s"),
        ],
    );
    let exp = run(&cfg(), &World::default(), &annotated(ing.clone(), &[("rewrite-target", "/$2")]));
    let rw: Vec<Value> = exp.rules.iter().map(|r| config_of(r)["rewrite"].clone()).collect();
    assert_eq!(rw[0], json!({"regex": "^(?:/api(/|$)(.*)).*", "target": "/$2"}));
    assert_eq!(rw[1], json!({"regex": "^(?:/plain).*", "target": "/$2"}), "captures: the Prefix path is a regex");
    assert_eq!(match_of(&exp.rules[1])[0]["values"], json!([["REGEX", "^/plain"]]));
    assert_eq!(rw[2], json!({"regex": ".*", "target": "/$2"}), "Exact stays exact");
    // Without captures and use-regex: literal paths, the whole path becomes the target.
    let exp = run(&cfg(), &World::default(), &annotated(ing.clone(), &[("rewrite-target", "/")]));
    assert_eq!(config_of(&exp.rules[1])["rewrite"], json!({"regex": ".*", "target": "/"}));
    assert_eq!(match_of(&exp.rules[1])[0]["values"], json!([["STARTS_WITH", "/plain"]]));
    // use-regex alone.
    let exp = run(&cfg(), &World::default(), &annotated(ing, &[("use-regex", "true")]));
    assert_eq!(match_of(&exp.rules[1])[0]["values"], json!([["REGEX", "^/plain"]]));
    assert!(config_of(&exp.rules[1]).get("rewrite").is_none());
}

#[test]
fn ssl_redirect_on_http_rules_of_tls_hosts() {
    let mut cfg = cfg();
    cfg.https_port = 8443;
    let ing = ingress(
        "ns1",
        "web",
        json!({
            "tls": [{"hosts": ["secure.com"], "secretName": "s1"}],
            "rules": [
                {"host": "secure.com", "http": {"paths": [path("/s", "Prefix", "a")]}},
                {"host": "plain.com", "http": {"paths": [path("/p", "Prefix", "b")]}}
            ]
        }),
    );
    let exp = run(&cfg, &World::default(), &ing);
    let redirect = |exp: &Expected, port: i32, host: &str| {
        on_port(exp, port).into_iter().find(|r| r.spec.domain == host).map(|r| config_of(r)["redirect"].clone())
    };
    let to_https = json!({"scheme": "https", "port": 8443, "code": 308, "keep_query": true});
    assert_eq!(redirect(&exp, 80, "secure.com"), Some(to_https.clone()), "TLS host: default true");
    assert_eq!(redirect(&exp, 80, "plain.com"), Some(Value::Null), "no TLS: no redirect");
    assert_eq!(redirect(&exp, 8443, "secure.com"), Some(Value::Null), "never on https");
    let off = annotated(ing.clone(), &[("ssl-redirect", "false")]);
    assert_eq!(redirect(&run(&cfg, &World::default(), &off), 80, "secure.com"), Some(Value::Null));
    let forced = annotated(ing.clone(), &[("ssl-redirect", "false"), ("force-ssl-redirect", "true")]);
    let exp = run(&cfg, &World::default(), &forced);
    assert_eq!(redirect(&exp, 80, "plain.com"), Some(to_https));
    // An explicit redirect wins.
    let perm = annotated(ing, &[("permanent-redirect", "https://x.com/"), ("permanent-redirect-code", "308")]);
    let exp = run(&cfg, &World::default(), &perm);
    assert_eq!(redirect(&exp, 80, "secure.com"), Some(json!({"url": "https://x.com/", "code": 308})));
    assert_eq!(redirect(&exp, 8443, "secure.com"), Some(json!({"url": "https://x.com/", "code": 308})));
}

#[test]
fn app_root_www_and_aliases() {
    let ing = ingress(
        "ns1",
        "web",
        json!({"rules": [
            {"host": "a.com", "http": {"paths": [path("/", "Prefix", "s"), path("/b", "Prefix", "s")]}},
            {"host": "www.b.com", "http": {"paths": [path("/", "Prefix", "t")]}},
            {"host": "a.com", "http": {"paths": [path("/c", "Prefix", "s")]}}
        ]}),
    );
    let ing = annotate(ing, "alb.cpaas.io/ingress-rule-priority-0-1", "2");
    let ing = annotated(ing, &[("app-root", "/app"), ("from-to-www-redirect", "true"), ("server-alias", "alias.com")]);
    let exp = run(&cfg(), &World::default(), &ing);
    assert!(exp.warnings.is_empty(), "{:?}", exp.warnings);
    assert_eq!(exp.rules.len(), 4 + 2 + 2, "4 paths, app-root for 2 hosts, www twin for 2 hosts");
    let extra = |p: usize| -> Vec<&RuleObject> {
        let idx = p.to_string();
        exp.rules
            .iter()
            .filter(|r| r.metadata.annotations.as_ref().unwrap()["alb2.cpaas.io/source-ingress-path-index"] == idx)
            .collect()
    };
    let roots = extra(APP_ROOT_PATH_INDEX);
    assert_eq!(roots.len(), 2);
    assert_eq!(
        match_of(roots[0]),
        json!([{"type": "URL", "values": [["EQ", "/"]]},
                                          {"type": "HOST", "values": [["EQ", "a.com"], ["EQ", "alias.com"]]}])
    );
    assert_eq!(config_of(roots[0]), json!({"redirect": {"url": "/app", "code": 302}}));
    assert!(roots[0].spec.service_group.is_none());
    assert_eq!(roots[0].spec.priority, 2, "wins over the host's most urgent path");
    let www = extra(WWW_PATH_INDEX);
    let twins: Vec<(Value, Value)> = www.iter().map(|r| (match_of(r), config_of(r))).collect();
    assert_eq!(twins[0].0, json!([{"type": "HOST", "values": [["EQ", "www.a.com"]]}]));
    assert_eq!(twins[0].1, json!({"redirect": {"host": "a.com", "code": 308, "keep_query": true}}));
    assert_eq!(twins[1].0, json!([{"type": "HOST", "values": [["EQ", "b.com"]]}]));
    assert_eq!(twins[1].1["redirect"]["host"], "www.b.com");
    // Path rules carry the alias.
    assert_eq!(match_of(&exp.rules[0])[1]["values"], json!([["EQ", "a.com"], ["EQ", "alias.com"]]));
    // Names stay distinct and the plan identity is unique.
    let names: BTreeSet<_> = exp.rules.iter().map(|r| r.metadata.name.clone()).collect();
    assert_eq!(names.len(), exp.rules.len());
    let p = crate::ingress::plan(&cfg(), &exp, &[], &[]);
    assert_eq!(p.create_rules.len(), exp.rules.len());
}

#[test]
fn features_land_in_config() {
    let ing = one_rule("a.com", vec![path("/", "Prefix", "s")]);
    let ing = annotated(
        ing,
        &[
            ("enable-cors", "true"),
            ("cors-allow-origin", "https://a.com,https://b.com"),
            ("cors-allow-headers", "X-A"),
            ("proxy-read-timeout", "2"),
            ("proxy-next-upstream-tries", "2"),
            ("proxy-body-size", "1m"),
            ("whitelist-source-range", "10.0.0.0/8"),
            ("limit-rps", "5"),
            ("x-forwarded-prefix", "/p"),
            ("upstream-vhost", "in.svc"),
            ("auth-type", "basic"),
            ("auth-secret", "users"),
            ("custom-http-errors", "503"),
            ("default-backend", "errors"),
        ],
    );
    let w = World { services: vec![service("ns1", "errors", &[("http", 8081)])], ..Default::default() };
    let exp = run(&cfg(), &w, &ing);
    assert!(exp.warnings.is_empty(), "{:?}", exp.warnings);
    let r = &exp.rules[0];
    assert_eq!(
        config_of(r),
        json!({
            "cors": {"allow_origin": ["https://a.com", "https://b.com"], "allow_headers": "X-A"},
            "timeout": {"proxy_read_timeout_ms": 2000},
            "retry": {"tries": 2},
            "max_body_size": 1048576,
            "access": {"allow": ["10.0.0.0/8"]},
            "limit": {"rps": 5},
            "rewrite_request": {"headers": {"X-Forwarded-Prefix": "/p"}},
            "auth": {"basic": {"auth_type": "basic", "secret": "ns1/users"}},
            "error_pages": {"codes": [503], "service": {"namespace": "ns1", "name": "errors", "port": 8081}}
        })
    );
    assert!(r.spec.enable_cors);
    assert_eq!(r.spec.cors_allow_origin, "https://a.com,https://b.com");
    assert_eq!(r.spec.cors_allow_headers, "X-A");
    assert_eq!(r.spec.vhost, "in.svc");
}

#[test]
fn bad_values_snippets_and_unknown_keys_warn_and_the_rest_routes() {
    let ing = one_rule("a.com", vec![path("/a", "Prefix", "s"), path("/b", "Prefix", "s")]);
    let ing = annotated(
        ing,
        &[
            ("proxy-read-timeout", "soon"),
            ("limit-rps", "lots"),
            ("configuration-snippet", "return 200 'pwned';"),
            ("server-snippet", "location /x {}"),
            ("enable-opentelemetry", "true"),
            ("ssl-passthrough", "true"),
            ("upstream-vhost", "in.svc"),
        ],
    );
    let exp = run(&cfg(), &World::default(), &ing);
    assert_eq!(exp.rules.len(), 2, "every path still routes");
    assert_eq!(exp.rules[0].spec.vhost, "in.svc", "valid annotations still apply");
    assert_eq!(config_of(&exp.rules[0]), json!({}));
    let by_reason =
        |r: &str| exp.warnings.iter().filter(|w| w.reason == r).map(|w| w.message.clone()).collect::<Vec<_>>();
    let invalid = by_reason("InvalidAnnotation");
    assert_eq!(invalid.len(), 2, "one per key, not per path: {invalid:?}");
    assert!(invalid
        .iter()
        .any(|m| m.contains("nginx.ingress.kubernetes.io/proxy-read-timeout") && m.contains("\"soon\"")));
    assert!(invalid.iter().any(|m| m.contains("nginx.ingress.kubernetes.io/limit-rps") && m.contains("\"lots\"")));
    let refused = by_reason("RefusedAnnotation");
    assert_eq!(refused.len(), 2);
    assert!(refused[0].contains("nginx.ingress.kubernetes.io/configuration-snippet"), "{refused:?}");
    assert!(!refused.iter().any(|m| m.contains("pwned")), "the snippet text is not echoed");
    let unsupported = by_reason("UnsupportedAnnotation");
    assert_eq!(
        unsupported,
        vec!["annotations not supported, ignored: nginx.ingress.kubernetes.io/enable-opentelemetry, nginx.ingress.kubernetes.io/ssl-passthrough"]
    );
}

#[test]
fn hostile_values_stay_data() {
    // Quotes, braces, semicolons, `$` and newlines: refused by the parsers or kept as JSON data.
    let ing = one_rule("a.com", vec![path("/a\"; } location / { return 200; #", "ImplementationSpecific", "s")]);
    let ing = annotated(
        ing,
        &[
            ("upstream-vhost", "x\";\n}"),
            ("rewrite-target", "/$1;\n return 200"),
            ("x-forwarded-prefix", "/p\"}{;$x"),
            ("auth-realm", "r\"\n"),
            ("server-alias", "b.com;}{"),
        ],
    );
    let exp = run(&cfg(), &World::default(), &ing);
    assert_eq!(exp.rules.len(), 1);
    let r = &exp.rules[0];
    assert_eq!(r.spec.vhost, "", "control characters: refused");
    assert_eq!(config_of(r)["rewrite_request"]["headers"]["X-Forwarded-Prefix"], "/p\"}{;$x", "kept as data");
    assert!(config_of(r).get("rewrite").is_none());
    assert_eq!(exp.warnings.iter().filter(|w| w.reason == "InvalidAnnotation").count(), 4, "{:?}", exp.warnings);
}

#[test]
fn explicit_ssl_redirect_adds_the_http_frontend_of_a_tls_only_ingress() {
    let ing = ingress(
        "ns1",
        "web",
        json!({"tls": [{"hosts": ["secure.com"], "secretName": "s1"}],
               "rules": [{"host": "secure.com", "http": {"paths": [path("/s", "Prefix", "a")]}}]}),
    );
    let exp = run(&cfg(), &World::default(), &ing);
    assert_eq!(exp.ports, vec![(443, "https")], "§2.2: a TLS host is https only");
    for key in ["ssl-redirect", "force-ssl-redirect"] {
        let exp = run(&cfg(), &World::default(), &annotated(ing.clone(), &[(key, "true")]));
        assert_eq!(exp.ports, vec![(80, "http"), (443, "https")], "{key}");
        let http = on_port(&exp, 80);
        assert_eq!(config_of(http[0])["redirect"], json!({"scheme": "https", "code": 308, "keep_query": true}));
        assert_eq!(config_of(on_port(&exp, 443)[0]).get("redirect"), None);
    }
    let exp = run(&cfg(), &World::default(), &annotated(ing, &[("ssl-redirect", "yes")]));
    assert_eq!(exp.ports, vec![(443, "https")], "an invalid value asks for nothing");
}
