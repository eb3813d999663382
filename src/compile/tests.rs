//! End-to-end tests of `compile()` on small snapshots.

use super::testutil::*;
use super::*;
use crate::compile::meta::Pairs;
use serde_json::{json, Value};

fn opts() -> CompileOptions {
    CompileOptions { alb_name: Some(ALB.into()), domain: "cpaas.io".into(), generation: 7 }
}

fn web_sg() -> Value {
    json!({"services": [{"name": "web", "namespace": "default", "port": 80}]})
}

/// Frontend alb-dev-00080 (http, default backend web), Services web/api with one endpoint each.
fn base() -> Snapshot {
    Snapshot {
        frontends: arcs(vec![frontend("alb-dev-00080", 80, "http", Some(web_sg()))]),
        rules: vec![],
        services: arcs(vec![
            service("default", "web", &[("http", 80, json!(8080))]),
            service("default", "api", &[("", 80, json!(8081))]),
        ]),
        endpoint_slices: arcs(vec![
            slice("default", "web", "web-abc", &[("http", 8080)], &[("10.0.0.1", Some(true))]),
            slice("default", "api", "api-abc", &[("", 8081)], &[("10.0.0.2", None)]),
        ]),
        secrets: vec![],
        tls_fallback: None,
    }
}

fn rule_names(c: &Compiled, port: &str) -> Vec<String> {
    c.policy.http[port].rules.iter().map(|r| r.name.clone()).collect()
}

fn url(op: &str, v: &str) -> Value {
    json!({"type": "URL", "values": [[op, v]]})
}

#[test]
fn compiles_a_port() {
    let mut s = base();
    s.rules.push(Arc::new(rule(
        "shop-api",
        "alb-dev-00080",
        json!({"priority": 5, "backendProtocol": "HTTPS",
               "dslx": [{"type": "HOST", "values": [["EQ", "shop.example.com"]]}, url("STARTS_WITH", "/api")],
               "serviceGroup": {"services": [{"name": "api", "namespace": "default", "port": 80}]},
               "source": {"type": "ingress", "namespace": "shop", "name": "ing"}}),
    )));
    let c = compile(&s, &opts());
    assert!(c.rejects.is_empty(), "{:?}", c.rejects);
    assert_eq!(
        c.listeners,
        vec![Listener {
            name: "alb-dev-00080".into(),
            namespace: NS.into(),
            port: 80,
            protocol: Protocol::Http,
            tls: false
        }]
    );
    let mut p = serde_json::to_value(&*c.policy).unwrap();
    assert_eq!(p["version"], 1);
    assert_eq!(p["generation"], 7);
    // every rule has a content key, 16 hex digits (src/policy.rs rule_keys_follow_the_content checks them)
    for r in p["http"]["80"]["rules"].as_array_mut().unwrap() {
        let key = r.as_object_mut().unwrap().remove("key").unwrap();
        let key = key.as_str().unwrap();
        assert!(key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
    }
    assert_eq!(
        p["http"]["80"]["rules"][0],
        json!({
            "name": "shop-api", "priority": 5, "complexity": 51006,
            "source": {"type": "ingress", "namespace": NS, "name": "shop-api"},
            "match": ["AND", ["EQ", "HOST", "shop.example.com"], ["STARTS_WITH", "URL", "/api"]],
            "index": {"hosts": ["shop.example.com"], "prefixes": ["/api"]},
            "upstream": "shop-api", "backend_protocol": "https", "config": {}
        })
    );
    assert_eq!(
        p["http"]["80"]["rules"][1],
        json!({
            "name": "alb-dev-00080", "priority": 999, "complexity": -1,
            "source": {"type": "ft_default_router", "namespace": NS, "name": "alb-dev-00080"},
            "match": ["STARTS_WITH", "URL", "/"], "index": {"prefixes": ["/"]},
            "upstream": "alb-dev-80-http", "backend_protocol": "", "config": {}
        })
    );
    assert_eq!(
        p["backend_groups"],
        json!([
            {"name": "alb-dev-80-http", "mode": "http", "session_affinity_policy": "", "session_affinity_attribute": "",
             "backends": [{"address": "10.0.0.1", "port": 8080, "weight": 100, "svc": "web", "ns": "default"}]},
            {"name": "shop-api", "mode": "http", "session_affinity_policy": "", "session_affinity_attribute": "",
             "backends": [{"address": "10.0.0.2", "port": 8081, "weight": 100, "svc": "api", "ns": "default"}]}
        ])
    );
}

#[test]
fn rule_without_service_group_has_no_upstream_and_source_defaults_to_rule() {
    let mut s = base();
    s.rules.push(Arc::new(rule("redir", "alb-dev-00080", json!({"dslx": [url("EQ", "/old")]}))));
    let c = compile(&s, &opts());
    let r = &c.policy.http["80"].rules[0];
    assert_eq!(r.upstream, None);
    assert_eq!(r.source.kind, "rule");
    assert_eq!(c.policy.backend_groups.len(), 1);
}

#[test]
fn default_group_named_after_frontend_without_alb_name() {
    let c = compile(&base(), &CompileOptions { alb_name: None, ..opts() });
    assert_eq!(c.policy.http["80"].rules[0].upstream.as_deref(), Some("alb-dev-00080-80-http"));
}

/// Each invalid dslx rejects its Rule with the right reason and field; the good rule still compiles.
#[test]
fn every_validation_error_rejects_only_its_rule() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!([{"type": "PATH", "values": [["EQ", "/"]]}]), "UnknownMatcher", "spec.dslx[0].type"),
        (
            json!([url("EQ", "/"), {"type": "URL", "values": [["LIKE", "/"]]}]),
            "UnknownOperator",
            "spec.dslx[1].values[0][0]",
        ),
        (json!([{"type": "URL", "values": [["EQ", "/"], ["EQ", "/a", "/b"]]}]), "WrongArity", "spec.dslx[0].values[1]"),
        (json!([{"type": "URL", "values": [["RANGE", "/a"]]}]), "WrongArity", "spec.dslx[0].values[0]"),
        (json!([{"type": "URL", "values": [["EXIST", "/a"]]}]), "WrongArity", "spec.dslx[0].values[0]"),
        (json!([{"type": "URL", "values": [["IN"]]}]), "WrongArity", "spec.dslx[0].values[0]"),
        (json!([{"type": "HEADER", "values": [["EXIST"]]}]), "MissingKey", "spec.dslx[0].key"),
        (json!([{"type": "PARAM", "key": "", "values": [["EQ", "1"]]}]), "MissingKey", "spec.dslx[0].key"),
        (json!([{"type": "COOKIE", "values": [["EQ", "1"]]}]), "MissingKey", "spec.dslx[0].key"),
        (json!([{"type": "URL", "values": [["REGEX", "a("]]}]), "InvalidRegex", "spec.dslx[0].values[0][1]"),
        (
            json!([{"type": "SRC_IP", "values": [["RANGE", "10.0.0.9", "10.0.0.1"]]}]),
            "InvalidRange",
            "spec.dslx[0].values[0]",
        ),
        (
            json!([{"type": "SRC_IP", "values": [["RANGE", "10.0.0.1", "::1"]]}]),
            "InvalidRange",
            "spec.dslx[0].values[0]",
        ),
        (
            json!([{"type": "PARAM", "key": "n", "values": [["RANGE", "10", "9"]]}]),
            "InvalidRange",
            "spec.dslx[0].values[0]",
        ),
    ];
    for (d, reason, field) in cases {
        let mut s = base();
        s.rules.push(Arc::new(rule_to("bad", "alb-dev-00080", 1, d.clone(), "api", 80)));
        s.rules.push(Arc::new(rule_to("good", "alb-dev-00080", 1, json!([url("EQ", "/good")]), "api", 80)));
        let c = compile(&s, &opts());
        assert_eq!(c.rejects.len(), 1, "{d}: {:?}", c.rejects);
        let r = &c.rejects[0];
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.reason.as_str(), r.field.as_str()),
            ("Rule", "bad", reason, field),
            "{d}"
        );
        assert!(r.message.contains("Rule cpaas-system/bad") && r.message.contains(field), "{}", r.message);
        assert_eq!(rule_names(&c, "80"), vec!["good", "alb-dev-00080"], "{d}");
        assert!(c.policy.backend_groups.iter().all(|g| g.name != "bad"), "no group for a rejected rule");
    }
}

#[test]
fn reject_display() {
    let mut s = base();
    s.rules.push(Arc::new(rule_to("bad-regex", "alb-dev-00080", 1, json!([url("REGEX", "(")]), "api", 80)));
    let c = compile(&s, &opts());
    let shown = c.rejects[0].to_string();
    assert!(
        shown.starts_with(
            "Rule cpaas-system/bad-regex: spec.dslx[0].values[0][1]: InvalidRegex: \"(\" is not a valid PCRE"
        ),
        "{shown}"
    );
}

#[test]
fn null_and_empty_dslx() {
    let mut s = base();
    s.rules.push(Arc::new(rule("null", "alb-dev-00080", json!({"dslx": null}))));
    s.rules.push(Arc::new(rule("empty", "alb-dev-00080", json!({"dslx": []}))));
    let c = compile(&s, &opts());
    assert_eq!(c.rejects.len(), 1);
    assert_eq!((c.rejects[0].name.as_str(), c.rejects[0].reason.as_str()), ("null", "MissingDslx"));
    assert_eq!(c.rejects[0].field, "spec.dslx");
    let empty = &c.policy.http["80"].rules[0];
    assert_eq!(empty.name, "empty");
    assert_eq!(empty.matcher.parse::<Value>(), json!(["OR"]));
    assert_eq!(empty.index, None);
}

#[test]
fn unknown_frontend() {
    let mut s = base();
    s.frontends.push(Arc::new(frontend("alb-dev-00443", 0, "https", None)));
    s.rules.push(Arc::new(rule_to("ok", "alb-dev-00080", 1, json!([url("EQ", "/")]), "api", 80)));
    s.rules.push(Arc::new(rule_to("nowhere", "alb-dev-09999", 1, json!([url("EQ", "/")]), "api", 80)));
    s.rules.push(Arc::new(rule_to("to-https", "alb-dev-00443", 1, json!([url("EQ", "/")]), "api", 80)));
    let mut nolabel = rule_to("nolabel", "x", 1, json!([url("EQ", "/")]), "api", 80);
    nolabel.metadata.labels.remove("alb2.cpaas.io/frontend");
    s.rules.push(Arc::new(nolabel));
    let mut other_ns = rule_to("other-ns", "alb-dev-00080", 1, json!([url("EQ", "/")]), "api", 80);
    other_ns.metadata.namespace = Some("elsewhere".into());
    s.rules.push(Arc::new(other_ns));
    let c = compile(&s, &opts());
    let rule_rejects: Vec<_> = c
        .rejects
        .iter()
        .filter(|r| r.kind == "Rule")
        .map(|r| (r.name.as_str(), r.reason.as_str(), r.field.as_str()))
        .collect();
    assert_eq!(
        rule_rejects,
        vec![
            ("nolabel", "UnknownFrontend", "metadata.labels"),
            ("nowhere", "UnknownFrontend", "metadata.labels"),
            ("to-https", "UnknownFrontend", "metadata.labels"),
            ("other-ns", "UnknownFrontend", "metadata.labels"),
        ]
    );
    let to_https = c.rejects.iter().find(|r| r.name == "to-https").unwrap();
    assert!(to_https.message.contains("not accepted"), "{}", to_https.message);
    assert_eq!(rule_names(&c, "80"), vec!["ok", "alb-dev-00080"]);
}

#[test]
fn other_albs_are_ignored_silently() {
    let mut s = base();
    let mut ft = frontend("other-00080", 81, "http", None);
    ft.metadata.labels = Some([("alb2.cpaas.io/name".to_string(), "other".to_string())].into());
    s.frontends.push(Arc::new(ft));
    let mut rl = rule_to("theirs", "other-00080", 1, json!([url("EQ", "/")]), "api", 80);
    rl.metadata.labels.insert("alb2.cpaas.io/name", "other");
    s.rules.push(Arc::new(rl));
    let c = compile(&s, &opts());
    assert!(c.rejects.is_empty(), "{:?}", c.rejects);
    assert_eq!(c.listeners.len(), 1);
    // Without an ALB name everything is accepted.
    let c = compile(&s, &CompileOptions { alb_name: None, ..opts() });
    assert!(c.rejects.is_empty(), "{:?}", c.rejects);
    assert_eq!(c.listeners.iter().map(|l| l.port).collect::<Vec<_>>(), vec![80, 81]);
    assert_eq!(rule_names(&c, "81"), vec!["theirs"]);
}

#[test]
fn custom_domain_labels() {
    let mut s = base();
    for ft in &mut s.frontends {
        Arc::make_mut(ft).metadata.labels = Some([("alb2.example.org/name".to_string(), ALB.to_string())].into());
    }
    let mut rl = rule_to("r", "alb-dev-00080", 1, json!([url("EQ", "/")]), "api", 80);
    rl.metadata.labels = Pairs::from_map(
        [
            ("alb2.example.org/name".to_string(), ALB.to_string()),
            ("alb2.example.org/frontend".to_string(), "alb-dev-00080".to_string()),
        ]
        .into(),
    );
    s.rules.push(Arc::new(rl));
    assert!(compile(&s, &opts()).listeners.is_empty(), "cpaas.io labels are not looked at");
    let c = compile(&s, &CompileOptions { domain: "example.org".into(), ..opts() });
    assert_eq!(rule_names(&c, "80"), vec!["r", "alb-dev-00080"]);
}

#[test]
fn service_and_port_not_found() {
    let mut s = base();
    s.rules.push(Arc::new(rule_to("no-svc", "alb-dev-00080", 1, json!([url("EQ", "/a")]), "missing", 80)));
    s.rules.push(Arc::new(rule_to("no-port", "alb-dev-00080", 1, json!([url("EQ", "/b")]), "api", 8443)));
    s.rules.push(Arc::new(rule_to("fine", "alb-dev-00080", 1, json!([url("EQ", "/c")]), "api", 80)));
    let c = compile(&s, &opts());
    let got: Vec<_> = c.rejects.iter().map(|r| (r.name.as_str(), r.reason.as_str(), r.field.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("no-port", "PortNotFound", "spec.serviceGroup.services[0].port"),
            ("no-svc", "ServiceNotFound", "spec.serviceGroup.services[0]"),
        ]
    );
    assert_eq!(rule_names(&c, "80"), vec!["fine", "alb-dev-00080"]);
}

#[test]
fn frontend_default_backend_missing_keeps_listener() {
    let mut s = base();
    Arc::make_mut(&mut s.frontends[0]).spec.service_group =
        Some(serde_json::from_value(json!({"services": [{"name": "gone", "port": 80}]})).unwrap());
    s.rules.push(Arc::new(rule_to("r", "alb-dev-00080", 1, json!([url("EQ", "/")]), "api", 80)));
    let c = compile(&s, &opts());
    assert_eq!(c.rejects.len(), 1);
    let r = &c.rejects[0];
    assert_eq!(
        (r.kind.as_str(), r.reason.as_str(), r.field.as_str()),
        ("Frontend", "ServiceNotFound", "spec.serviceGroup.services[0]")
    );
    assert!(r.message.contains("cpaas-system/gone"), "namespace defaults to the Frontend's: {}", r.message);
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(rule_names(&c, "80"), vec!["r"]);
}

#[test]
fn frontend_port_and_protocol_checks() {
    let mut s = base();
    s.frontends.push(Arc::new(frontend("a-dup", 80, "http", None))); // sorts before alb-dev-00080: it wins the port
    s.frontends.push(Arc::new(frontend("zero", 0, "http", None)));
    s.frontends.push(Arc::new(frontend("big", 70000, "http", None)));
    s.frontends.push(Arc::new(frontend("tls", 443, "https", None)));
    s.frontends.push(Arc::new(frontend("grpc", 9000, "grpc", None)));
    s.frontends.push(Arc::new(frontend("tcp", 9001, "tcp", None)));
    s.frontends.push(Arc::new(frontend("udp", 9001, "udp", None))); // same number as tcp: no conflict
    s.frontends.push(Arc::new(frontend("weird", 9002, "quic", None)));
    s.frontends.push(Arc::new(frontend("http2", 8080, "http", None)));
    let c = compile(&s, &opts());
    let got: Vec<_> = c.rejects.iter().map(|r| (r.name.as_str(), r.reason.as_str(), r.field.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("alb-dev-00080", "DuplicatePort", "spec.port"),
            ("big", "InvalidPort", "spec.port"),
            ("zero", "InvalidPort", "spec.port"),
        ]
    );
    let dup = &c.rejects[0];
    assert!(dup.message.contains("cpaas-system/a-dup"), "{}", dup.message);
    let ports: Vec<_> = c.listeners.iter().map(|l| (l.name.as_str(), l.port, l.tls)).collect();
    assert_eq!(ports, vec![("a-dup", 80, false), ("tls", 443, true), ("http2", 8080, false), ("grpc", 9000, false)]);
    assert_eq!(c.listeners[1].protocol, Protocol::Https);
    assert_eq!(c.listeners[3].protocol, Protocol::Grpc);
    // tcp/udp (and unknown protocols, treated as tcp) are stream listeners, not in the policy
    let stream: Vec<_> = c.stream.iter().map(|l| (l.name.as_str(), l.port, l.proto.as_str())).collect();
    assert_eq!(stream, vec![("tcp", 9001, "tcp"), ("udp", 9001, "udp"), ("weird", 9002, "tcp")]);
    assert_eq!(c.policy.http.keys().collect::<Vec<_>>(), vec!["443", "80", "8080", "9000"]);
    assert!(c.policy.http["8080"].rules.is_empty());
    assert!(c.policy.backend_groups.is_empty(), "the rejected Frontend's default group is not emitted");
}

#[test]
fn ordering() {
    let mut s = base();
    let host = |h: &str| json!({"type": "HOST", "values": [["EQ", h]]});
    // priority beats complexity
    s.rules.push(Arc::new(rule_to("p1-simple", "alb-dev-00080", 1, json!([url("STARTS_WITH", "/")]), "api", 80)));
    s.rules.push(Arc::new(rule_to(
        "p2-complex",
        "alb-dev-00080",
        2,
        json!([host("a.com"), url("EQ", "/x")]),
        "api",
        80,
    )));
    // Equal complexity: STARTS_WITH "/ab" → 1000+3+2 = 1005; REGEX "/abcd" → 1000+5 = 1005; the JSON length
    // decides ("STARTS_WITH" makes the first leaf longer) before the name would.
    s.rules.push(Arc::new(rule_to("p3-sw", "alb-dev-00080", 3, json!([url("STARTS_WITH", "/ab")]), "api", 80)));
    s.rules.push(Arc::new(rule_to("p3-re", "alb-dev-00080", 3, json!([url("REGEX", "/abcd")]), "api", 80)));
    // full tie: name decides.
    s.rules.push(Arc::new(rule_to("p4-b", "alb-dev-00080", 4, json!([url("EQ", "/same")]), "api", 80)));
    s.rules.push(Arc::new(rule_to("p4-a", "alb-dev-00080", 4, json!([url("EQ", "/same")]), "api", 80)));
    // Go escaping makes "<" count 6 bytes: "/<" (len 2) is longer than "/abc" in JSON.
    let method = |v: &str| json!([{"type": "METHOD", "values": [["EQ", v]]}]);
    s.rules.push(Arc::new(rule_to("p5-plain", "alb-dev-00080", 5, method("GETX"), "api", 80)));
    s.rules.push(Arc::new(rule_to("p5-lt", "alb-dev-00080", 5, method("<"), "api", 80)));
    // higher complexity first within a priority
    s.rules.push(Arc::new(rule_to("p6-url", "alb-dev-00080", 6, json!([url("EQ", "/x")]), "api", 80)));
    s.rules.push(Arc::new(rule_to("p6-host", "alb-dev-00080", 6, json!([host("a.com")]), "api", 80)));
    let c = compile(&s, &opts());
    assert!(c.rejects.is_empty(), "{:?}", c.rejects);
    let rules = &c.policy.http["80"].rules;
    let comp: BTreeMap<_, _> = rules.iter().map(|r| (r.name.as_str(), r.complexity)).collect();
    assert_eq!((comp["p3-sw"], comp["p3-re"]), (1005, 1005));
    assert_eq!(
        rule_names(&c, "80"),
        vec![
            "p1-simple",
            "p2-complex",
            "p3-sw",
            "p3-re",
            "p4-a",
            "p4-b",
            "p5-lt",
            "p5-plain",
            "p6-host",
            "p6-url",
            "alb-dev-00080"
        ]
    );
    // Input order does not matter.
    let mut shuffled = s.clone();
    shuffled.rules.reverse();
    shuffled.services.reverse();
    shuffled.endpoint_slices.reverse();
    assert_eq!(compile(&shuffled, &opts()), c);
}

/// First-match evaluation over the compiled port picks the expected rule (and the default catches the rest).
#[test]
fn first_match_semantics() {
    let mut s = base();
    s.rules.push(Arc::new(rule_to("api", "alb-dev-00080", 5, json!([url("STARTS_WITH", "/api")]), "api", 80)));
    s.rules.push(Arc::new(rule_to(
        "api-shop",
        "alb-dev-00080",
        5,
        json!([{"type": "HOST", "values": [["EQ", "shop.com"]]}, url("STARTS_WITH", "/api")]),
        "api",
        80,
    )));
    s.rules.push(Arc::new(rule_to("exact", "alb-dev-00080", 5, json!([url("EQ", "/api/v1")]), "api", 80)));
    let c = compile(&s, &opts());
    let pick = |req: Req| {
        let rules = &c.policy.http["80"].rules;
        rules.iter().find(|r| testutil::eval(&r.matcher.parse(), &req)).map(|r| r.name.clone())
    };
    assert_eq!(pick(Req::new("shop.com", "/api/v1")).as_deref(), Some("api-shop"));
    assert_eq!(pick(Req::new("x.com", "/api/v1")).as_deref(), Some("exact"));
    assert_eq!(pick(Req::new("x.com", "/api/v2")).as_deref(), Some("api"));
    assert_eq!(pick(Req::new("x.com", "/web")).as_deref(), Some("alb-dev-00080"));
    // The index agrees with the matcher on every rule (soundness on the compiled policy).
    for r in &c.policy.http["80"].rules {
        for req in [Req::new("shop.com", "/api/v1"), Req::new("x.com", "/api/v2"), Req::new("x.com", "/")] {
            if testutil::eval(&r.matcher.parse(), &req) {
                assert!(r.index.as_ref().is_none_or(|i| testutil::index_admits(&i.parse(), &req)), "{}", r.name);
            }
        }
    }
}

#[test]
fn group_name_collision_is_rejected() {
    let mut s = base();
    let mut a = rule_to("same", "alb-dev-00080", 1, json!([url("EQ", "/a")]), "api", 80);
    a.metadata.namespace = Some("ns-a".into());
    let mut b = a.clone();
    b.metadata.namespace = Some("ns-b".into());
    s.rules = arcs(vec![a, b]);
    let mut fa = frontend("alb-dev-00080", 80, "http", None);
    fa.metadata.namespace = Some("ns-a".into());
    let mut fb = frontend("alb-dev-00081", 81, "http", None);
    fb.metadata.namespace = Some("ns-b".into());
    Arc::make_mut(&mut s.rules[1]).metadata.labels.insert("alb2.cpaas.io/frontend", "alb-dev-00081");
    s.frontends = arcs(vec![fa, fb]);
    let c = compile(&s, &CompileOptions { alb_name: None, ..opts() });
    assert_eq!(c.rejects.len(), 1, "{:?}", c.rejects);
    assert_eq!((c.rejects[0].namespace.as_str(), c.rejects[0].reason.as_str()), ("ns-b", "DuplicateBackendGroup"));
}

#[test]
fn rules_with_the_same_backends_share_one_group() {
    let mut s = base();
    s.rules.push(Arc::new(rule_to("a-rule", "alb-dev-00080", 5, json!([url("STARTS_WITH", "/a")]), "api", 80)));
    s.rules.push(Arc::new(rule_to("b-rule", "alb-dev-00080", 5, json!([url("STARTS_WITH", "/b")]), "api", 80)));
    s.rules.push(Arc::new(rule_to("c-rule", "alb-dev-00080", 5, json!([url("STARTS_WITH", "/c")]), "web", 80)));
    let c = compile(&s, &opts());
    assert!(c.rejects.is_empty(), "{:?}", c.rejects);
    let up = |name: &str| {
        c.policy.http["80"].rules.iter().find(|r| r.name == name).and_then(|r| r.upstream.clone()).unwrap()
    };
    // a-rule and b-rule: same Service → one group, the smaller name; c-rule and the Frontend default share web's.
    assert_eq!(up("a-rule"), "a-rule");
    assert_eq!(up("b-rule"), "a-rule");
    assert_eq!(up("c-rule"), up("alb-dev-00080"));
    let names: Vec<&str> = c.policy.backend_groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for r in &c.policy.http["80"].rules {
        let g = r.upstream.as_ref().unwrap();
        assert!(names.contains(&g.as_str()), "rule {} points at a dropped group {g}", r.name);
    }
}

/// Groups with equal content share the smallest name; rules and error pages follow; empty groups stay apart.
#[test]
fn dedupe_groups_keeps_the_smallest_name() {
    let be = |addr: &str| json!({"address": addr, "port": 80, "weight": 100, "svc": "s", "ns": "n"});
    let group = |name: &str, backends: Value| {
        json!({"name": name, "mode": "http", "session_affinity_policy": "", "session_affinity_attribute": "",
               "backends": backends})
    };
    let rule = |name: &str, upstream: &str| {
        json!({"name": name, "priority": 1, "complexity": 0, "source": {"type": "rule"}, "match": ["OR"],
               "upstream": upstream, "config": {"error_pages": {"codes": [503], "upstream": upstream}}})
    };
    let mut p: Policy = serde_json::from_value(json!({
        "version": 1,
        "http": {"80": {"rules": [rule("r1", "b"), rule("r2", "c"), rule("r3", "e")]}},
        "backend_groups": [group("a", json!([be("10.0.0.1")])), group("b", json!([be("10.0.0.1")])),
                           group("c", json!([be("10.0.0.2")])), group("d", json!([])), group("e", json!([]))],
    }))
    .unwrap();
    let groups = std::mem::take(&mut p.backend_groups);
    p.backend_groups = dedupe_groups(groups, &mut p.http);
    let names: Vec<&str> = p.backend_groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["a", "c", "d", "e"]);
    let ups: Vec<(Option<&str>, Option<&str>)> = p.http["80"]
        .rules
        .iter()
        .map(|r| {
            let ep = r.config.error_pages.as_ref().and_then(|e| e.upstream.as_deref());
            (r.upstream.as_deref(), ep)
        })
        .collect();
    assert_eq!(ups, [(Some("a"), Some("a")), (Some("c"), Some("c")), (Some("e"), Some("e"))]);
}

/// Compiling after a previous policy gives what compiling from scratch gives: unchanged rules keep their keys, a
/// rule whose Rule changed gets a new one, and a change of endpoints changes the group, not the rules' keys.
#[test]
fn compile_after_a_previous_policy_equals_compile_from_scratch() {
    // a new cache each time: only the keys come from the previous policy
    let compile_after = |s: &Snapshot, o: &CompileOptions, prev: Option<&Policy>| {
        compile_cached(s, o, prev, &mut cache::CompileCache::default())
    };
    let mut s = base();
    for (name, prefix, svc) in [("r-a", "/a", "web"), ("r-b", "/b", "api"), ("r-c", "/c", "web")] {
        s.rules.push(Arc::new(rule(
            name,
            "alb-dev-00080",
            json!({"priority": 5, "dslx": [url("STARTS_WITH", prefix)],
                   "serviceGroup": {"services": [{"name": svc, "namespace": "default", "port": 80}]}}),
        )));
    }
    let first = compile(&s, &opts());
    let key = |c: &Compiled, name: &str| -> String {
        c.policy.http["80"].rules.iter().find(|r| r.name == name).map(|r| r.key.clone()).unwrap_or_default()
    };
    let same = compile_after(&s, &opts(), Some(&first.policy));
    assert_eq!(same, first);

    // r-b changes its path; api gets another endpoint (r-b's group); r-a and r-c are unchanged.
    s.rules[1] = Arc::new(rule(
        "r-b",
        "alb-dev-00080",
        json!({"priority": 5, "dslx": [url("STARTS_WITH", "/b2")],
               "serviceGroup": {"services": [{"name": "api", "namespace": "default", "port": 80}]}}),
    ));
    let next = compile_after(&s, &opts(), Some(&first.policy));
    assert_eq!(next, compile(&s, &opts()));
    assert_eq!(key(&next, "r-a"), key(&first, "r-a"));
    assert_ne!(key(&next, "r-b"), key(&first, "r-b"));
    s.endpoint_slices[1] =
        Arc::new(slice("default", "api", "api-abc", &[("", 8081)], &[("10.0.0.2", None), ("10.0.0.3", None)]));
    let moved = compile_after(&s, &opts(), Some(&next.policy));
    assert_eq!(moved, compile(&s, &opts()));
    assert_eq!(key(&moved, "r-c"), key(&first, "r-c"));
}

/// The compile cache (`cache.rs`) changes no result: at every step a cached compilation equals a compilation
/// from scratch. What the step left alone is taken from the cache, what it touched is computed again.
#[test]
fn cached_compilation_equals_compile_from_scratch() {
    cached_equals_scratch(cache::CompileCache::default());
    cached_equals_scratch(cache::CompileCache::weak());
}

/// A Rule as the API server serves it: a uid, and a generation that moves with its spec.
fn served(mut r: Rule, generation: i64) -> Rule {
    let name = r.metadata.name.clone().unwrap_or_default();
    r.metadata.uid = Some(format!("uid-{name}"));
    r.metadata.generation = Some(generation);
    r
}

/// The steps of [`cached_compilation_equals_compile_from_scratch`] with `cache`. The snapshot holds the only
/// reference to each Rule, so a weak cache finds every replaced Rule gone.
fn cached_equals_scratch(mut cache: cache::CompileCache) {
    use cache::Hits;
    let web = || json!({"services": [{"name": "web", "namespace": "default", "port": 80}]});
    let api = || json!({"services": [{"name": "api", "namespace": "default", "port": 80}]});
    let mut s = base();
    for (name, prefix, sg) in [("r-a", "/a", web()), ("r-b", "/b", api()), ("r-c", "/c", web())] {
        s.rules.push(Arc::new(served(
            rule(
                name,
                "alb-dev-00080",
                json!({"priority": 5, "dslx": [url("STARTS_WITH", prefix)], "serviceGroup": sg}),
            ),
            1,
        )));
    }
    // r-d's features read a Secret (basic auth): they are computed every time.
    s.rules.push(Arc::new(served(
        rule(
            "r-d",
            "alb-dev-00080",
            json!({"priority": 5, "dslx": [url("STARTS_WITH", "/d")], "serviceGroup": web(),
                   "config": {"auth": {"basic": {"secret": "users", "auth_type": "basic"}}}}),
        ),
        1,
    )));
    let mut prev: Option<Arc<Policy>> = None;
    let mut step = |s: &Snapshot, o: &CompileOptions, what: &str| -> Hits {
        let c = compile_cached(s, o, prev.as_deref(), &mut cache);
        assert_eq!(c, compile(s, o), "{what}");
        prev = Some(c.policy.clone());
        cache.last_hits
    };
    let hits = |dslx, groups, configs| Hits { dslx, groups, configs, moved: 0 };
    assert_eq!(step(&s, &opts(), "first"), hits(0, 0, 0));
    assert_eq!(step(&s, &opts(), "unchanged"), hits(4, 4, 3));

    // The Secret appears: r-d's basic auth changes from failing closed to its users.
    let mut users = Secret::default();
    users.metadata.namespace = Some(NS.into());
    users.metadata.name = Some("users".into());
    users.string_data = Some([("auth".to_string(), "foo:$apr1$W60B7kxR$kC.He7pPyJM2io6VH2VNS.".to_string())].into());
    s.secrets.push(Arc::new(users));
    assert_eq!(step(&s, &opts(), "secret added"), hits(4, 4, 3));

    // r-b edited (its generation moves): all of it computed again.
    s.rules[1] = Arc::new(served(
        rule(
            "r-b",
            "alb-dev-00080",
            json!({"priority": 5, "dslx": [url("STARTS_WITH", "/b2")], "serviceGroup": api()}),
        ),
        2,
    ));
    assert_eq!(step(&s, &opts(), "r-b edited"), hits(3, 3, 2));

    // api's slice changes: r-b's group is resolved again, its matcher and features are kept.
    s.endpoint_slices[1] =
        Arc::new(slice("default", "api", "api-abc", &[("", 8081)], &[("10.0.0.2", None), ("10.0.0.3", None)]));
    assert_eq!(step(&s, &opts(), "api slice changed"), hits(4, 3, 3));

    // api disappears (r-b is rejected before its features are read) and comes back as the very same object:
    // r-b's old group was dropped when it was found stale, so it is resolved again rather than trusted by address.
    let api_svc = s.services.remove(1);
    assert_eq!(step(&s, &opts(), "api removed"), hits(4, 3, 2));
    s.services.insert(1, api_svc);
    assert_eq!(step(&s, &opts(), "api back"), hits(4, 3, 2));
    assert_eq!(step(&s, &opts(), "unchanged again"), hits(4, 4, 3));

    // r-a's status is written (a new object, same spec, labels and annotations): its entry moves to the new object.
    let mut ra = (*s.rules[0]).clone();
    ra.accepted = Some(accepted_seen());
    ra.metadata.resource_version = Some("2".into());
    s.rules[0] = Arc::new(ra.clone());
    assert_eq!(step(&s, &opts(), "r-a status"), Hits { moved: 1, ..hits(4, 4, 3) });
    // r-a gets an annotation (which its features could read): computed again.
    ra.metadata.annotations = Pairs::from_map([("note".to_string(), "x".to_string())].into());
    s.rules[0] = Arc::new(ra);
    assert_eq!(step(&s, &opts(), "r-a annotated"), hits(3, 3, 2));

    // A new Frontend object (its config changed): every Rule's features are computed again.
    let mut ft = (*s.frontends[0]).clone();
    ft.spec.config = Some(json!({"timeout": {"proxy_read_timeout": 7}}));
    s.frontends[0] = Arc::new(ft);
    assert_eq!(step(&s, &opts(), "frontend changed"), hits(4, 4, 0));

    // Other options: nothing is taken.
    let other = CompileOptions { generation: 8, ..opts() };
    assert_eq!(step(&s, &other, "generation only"), hits(4, 4, 3));
    let other = CompileOptions { domain: "example.com".into(), ..opts() };
    assert_eq!(step(&s, &other, "other domain"), hits(0, 0, 0));
}

/// The cache holds the objects its entries were computed from until a compilation no longer has them (an
/// address in the cache always names a live object), and no longer.
#[test]
fn the_cache_holds_the_last_snapshots_objects_only() {
    let mut s = base();
    s.rules.push(Arc::new(rule_to("r-a", "alb-dev-00080", 5, json!([url("STARTS_WITH", "/a")]), "web", 80)));
    let mut cache = cache::CompileCache::default();
    compile_cached(&s, &opts(), None, &mut cache);
    assert!(cache.has(&s.rules[0]));
    let old = Arc::downgrade(&s.rules[0]);
    s.rules[0] = Arc::new(rule_to("r-a", "alb-dev-00080", 5, json!([url("STARTS_WITH", "/a2")]), "web", 80));
    assert!(old.upgrade().is_some(), "held by the cache");
    compile_cached(&s, &opts(), None, &mut cache);
    assert!(old.upgrade().is_none(), "released by the next compilation");
    assert!(cache.has(&s.rules[0]));
    assert_eq!(cache.len(), 1);
}

/// A weak cache (the controller's) does not keep a replaced Rule alive, and still moves its entry to the new
/// object when uid, generation, labels and annotations are the same; a Rule without a uid is computed again.
#[test]
fn a_weak_cache_keeps_no_replaced_rule_alive() {
    let mut s = base();
    let ra = served(rule_to("r-a", "alb-dev-00080", 5, json!([url("STARTS_WITH", "/a")]), "web", 80), 1);
    s.rules.push(Arc::new(ra));
    s.rules.push(Arc::new(rule_to("r-b", "alb-dev-00080", 5, json!([url("STARTS_WITH", "/b")]), "web", 80)));
    let mut cache = cache::CompileCache::weak();
    compile_cached(&s, &opts(), None, &mut cache);
    let old = [Arc::downgrade(&s.rules[0]), Arc::downgrade(&s.rules[1])];
    for r in s.rules.iter_mut() {
        let mut status_written = (**r).clone();
        status_written.accepted = Some(accepted_seen());
        *r = Arc::new(status_written);
    }
    assert!(old.iter().all(|o| o.upgrade().is_none()), "the cache does not keep them alive");
    let c = compile_cached(&s, &opts(), None, &mut cache);
    assert_eq!(c, compile(&s, &opts()));
    assert_eq!(cache.last_hits.moved, 1, "r-a (served) moves, r-b (no uid) is computed again");
    assert!(cache.has(&s.rules[0]) && cache.has(&s.rules[1]));
    assert_eq!(cache.len(), 2);
}

/// An `Accepted` condition as a status write leaves it on a cached Rule.
fn accepted_seen() -> crate::crd::ConditionSeen {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    crate::crd::ConditionSeen { status: Some(true), digest: 1, last_transition_time }
}

/// Consecutive compilations share the rules that did not change ([`SharedRule`]): the published policy and
/// the next one hold one copy of them, also of a rule whose group is renamed to an equal group's name. A
/// changed rule is new, and one whose group stops being renamed is copied, not changed in place.
#[test]
fn unchanged_rules_are_shared_with_the_previous_policy() {
    use crate::policy::SharedRule;
    let web = || json!({"services": [{"name": "web", "namespace": "default", "port": 80}]});
    let api = || json!({"services": [{"name": "api", "namespace": "default", "port": 80}]});
    let mut s = base();
    for (name, prefix, sg) in [("r-a", "/a", web()), ("r-b", "/b", api()), ("r-c", "/c", web())] {
        let spec = json!({"priority": 5, "dslx": [url("STARTS_WITH", prefix)], "serviceGroup": sg});
        s.rules.push(Arc::new(served(rule(name, "alb-dev-00080", spec), 1)));
    }
    let rules = |p: &Policy| -> Vec<SharedRule> { p.http["80"].rules.clone() };
    // which rules of `next` are the very rules of `prev` (by name)
    let shared = |prev: &Policy, next: &Policy| -> Vec<(String, bool)> {
        let before = rules(prev);
        let find = |n: &str| before.iter().find(|r| r.name == n).cloned();
        rules(next).iter().map(|r| (r.name.clone(), find(&r.name).is_some_and(|o| o.ptr_eq(r)))).collect()
    };
    let mut cache = cache::CompileCache::weak();
    let first = compile_cached(&s, &opts(), None, &mut cache);
    let renamed: Vec<String> = rules(&first.policy).iter().filter_map(|r| r.upstream.clone()).collect();
    assert_eq!(renamed.iter().filter(|u| *u == "alb-dev-80-http").count(), 3, "web's groups are one: {renamed:?}");
    let second = compile_cached(&s, &opts(), Some(&first.policy), &mut cache);
    assert_eq!(second, compile(&s, &opts()));
    assert_eq!(shared(&first.policy, &second.policy).iter().filter(|(_, same)| !same).count(), 0);
    // a Rule's features: one copy, held by the cache and the policy
    for r in rules(&second.policy).iter().filter(|r| r.source.kind != "ft_default_router") {
        assert_eq!(Arc::strong_count(&r.config), 2, "{}", r.name);
    }

    // r-a changes. A new r-0 has r-b's backends: r-b's group is renamed to r-0's, which copies r-b (the
    // compilation found it unchanged and took it from the previous policy) instead of changing it in place.
    let mut ra = (*s.rules[0]).clone();
    ra.spec.priority = 6;
    s.rules[0] = Arc::new(served(ra, 2));
    let spec = json!({"priority": 5, "dslx": [url("STARTS_WITH", "/0")], "serviceGroup": api()});
    s.rules.push(Arc::new(served(rule("r-0", "alb-dev-00080", spec), 1)));
    let before = second.policy.to_bytes();
    let third = compile_cached(&s, &opts(), Some(&second.policy), &mut cache);
    assert_eq!(third, compile(&s, &opts()));
    assert_eq!(second.policy.to_bytes(), before, "the previous policy is left as it was");
    let by_name: BTreeMap<String, bool> = shared(&second.policy, &third.policy).into_iter().collect();
    assert_eq!(by_name.get("r-c"), Some(&true));
    assert_eq!((by_name.get("r-a"), by_name.get("r-b")), (Some(&false), Some(&false)));
    let rb = rules(&third.policy).into_iter().find(|r| r.name == "r-b").unwrap();
    assert_eq!(rb.upstream.as_deref(), Some("r-0"));
}
