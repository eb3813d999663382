//! Rule spec / annotations / Secrets → `HttpRule.config`.

use super::*;
use crate::compile::meta::Pairs;
use crate::compile::testutil::{frontend, rule, NS};
use k8s_openapi::ByteString;
use serde_json::json;

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let mut s = Secret::default();
    s.metadata.namespace = Some(NS.into());
    s.metadata.name = Some(name.into());
    s.type_ = Some("Opaque".into());
    s.data = Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect());
    s
}

fn translate(spec: Value) -> (Value, Vec<FeatureError>) {
    translate_with(rule("r", "ft", spec), None, &[])
}

fn translate_with(rl: Rule, ft: Option<&Frontend>, secrets: &[Secret]) -> (Value, Vec<FeatureError>) {
    let idx = SecretIndex::new(secrets);
    let (c, errs) = rule_config(&Input { rule: &rl, frontend: ft, secrets: &idx, domain: "cpaas.io" });
    (serde_json::to_value(&c).unwrap(), errs)
}

fn reasons(errs: &[FeatureError]) -> Vec<&str> {
    errs.iter().map(|e| e.reason).collect()
}

#[test]
fn empty_rule_has_empty_config() {
    let (c, errs) = translate(json!({}));
    assert_eq!(c, json!({}));
    assert!(errs.is_empty());
}

#[test]
fn redirect_from_config_and_legacy_fields_legacy_wins() {
    let (c, errs) = translate(json!({
        "config": {"redirect": {"code": 301, "url": "/a", "scheme": "https", "port": 8443, "prefix_match": "/x"}},
        "redirectURL": "/legacy", "redirectCode": 307
    }));
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        c["redirect"],
        json!({"code": 307, "url": "/legacy", "scheme": "https", "port": 8443, "prefix_match": "/x"})
    );
    // legacy url alone, code default left to the data plane (302)
    let (c, _) = translate(json!({"redirectURL": "https://b.test/"}));
    assert_eq!(c["redirect"], json!({"url": "https://b.test/"}));
    // invalid code: reported, redirect left out
    let (c, errs) = translate(json!({"redirectURL": "/x", "redirectCode": 200}));
    assert_eq!(c.get("redirect"), None);
    assert_eq!(reasons(&errs), vec!["InvalidRedirect"]);
    let (c, errs) = translate(json!({"config": {"redirect": {"scheme": "ftp"}}}));
    assert_eq!(c.get("redirect"), None);
    assert_eq!(reasons(&errs), vec!["InvalidRedirect"]);
}

#[test]
fn cors_from_spec_fields() {
    let (c, errs) = translate(json!({"enableCORS": true, "corsAllowOrigin": "https://a.test, https://*.b.test",
                                     "corsAllowHeaders": "X-A,X-B"}));
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(c["cors"], json!({"allow_origin": ["https://a.test", "https://*.b.test"], "allow_headers": "X-A,X-B"}));
    let (c, _) = translate(json!({"enableCORS": true, "corsAllowOrigin": "*"}));
    assert_eq!(c["cors"], json!({}));
    // disabled without config.cors: nothing
    let (c, _) = translate(json!({"enableCORS": false, "corsAllowOrigin": "https://a.test"}));
    assert_eq!(c.get("cors"), None);
    // alb-rs extension in spec.config
    let (c, _) = translate(json!({"config": {"cors": {"allow_methods": "GET", "max_age": 60,
                                                        "allow_credentials": false, "expose_headers": "X-E"}}}));
    assert_eq!(
        c["cors"],
        json!({"allow_methods": "GET", "max_age": 60, "allow_credentials": false, "expose_headers": "X-E"})
    );
}

#[test]
fn rewrite_legacy_regex_and_prefix() {
    let (c, errs) = translate(json!({"rewrite_base": "/es(/|$)(.*)", "rewrite_target": "/$2"}));
    assert!(errs.is_empty());
    assert_eq!(c["rewrite"], json!({"regex": "/es(/|$)(.*)", "target": "/$2"}));
    // base empty → url, then "/"
    let (c, _) = translate(json!({"url": "/u", "rewrite_target": "/t"}));
    assert_eq!(c["rewrite"], json!({"regex": "/u", "target": "/t"}));
    let (c, _) = translate(json!({"rewrite_target": "/t"}));
    assert_eq!(c["rewrite"], json!({"regex": "/", "target": "/t"}));
    // no target: no rewrite
    let (c, _) = translate(json!({"rewrite_base": "/a"}));
    assert_eq!(c.get("rewrite"), None);
    let (c, _) = translate(json!({"config": {"rewrite": {"prefix_match": "/a", "replace_prefix": "/b"}}}));
    assert_eq!(c["rewrite"], json!({"prefix_match": "/a", "replace_prefix": "/b"}));
    let (c, errs) = translate(json!({"rewrite_base": "/a(", "rewrite_target": "/b"}));
    assert_eq!(c.get("rewrite"), None);
    assert_eq!(reasons(&errs), vec!["InvalidRewrite"]);
}

#[test]
fn vhost_and_header_annotations() {
    let mut rl = rule("r", "ft", json!({"vhost": "up.test"}));
    rl.metadata.annotations = Pairs::from_map(
        [
            (
                "alb.rule.cpaas.io/rewrite-request".to_string(),
                r#"{"headers": {"X-A": "1"}, "headers_remove": ["X-B"], "headers_add": {"X-C": ["1", "2"]},
                    "headers_var": {"X-Host": "host"}}"#
                    .to_string(),
            ),
            ("alb.rule.cpaas.io/rewrite-response".to_string(), r#"{"headers": {"X-R": "r"}}"#.to_string()),
        ]
        .into(),
    );
    let (c, errs) = translate_with(rl, None, &[]);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(c["vhost"], "up.test");
    assert_eq!(
        c["rewrite_request"],
        json!({"headers": {"X-A": "1"}, "headers_remove": ["X-B"], "headers_add": {"X-C": ["1", "2"]},
               "headers_var": {"X-Host": "host"}})
    );
    assert_eq!(c["rewrite_response"], json!({"headers": {"X-R": "r"}}));
}

#[test]
fn invalid_annotation_is_reported_and_the_rule_keeps_routing() {
    let mut rl = rule("r", "ft", json!({}));
    rl.metadata.annotations = Pairs::from_map(
        [
            ("alb.rule.cpaas.io/rewrite-request".to_string(), "{not json".to_string()),
            ("alb.rule.cpaas.io/rewrite-response".to_string(), r#"{"headers": {"Bad Name": "x"}}"#.to_string()),
        ]
        .into(),
    );
    let (c, errs) = translate_with(rl, None, &[]);
    assert_eq!(c, json!({}));
    assert_eq!(reasons(&errs), vec!["InvalidAnnotation", "InvalidAnnotation"]);
    assert_eq!(errs[0].field, "metadata.annotations[\"alb.rule.cpaas.io/rewrite-request\"]");
    // header values with CR/LF are refused
    let mut rl = rule("r", "ft", json!({}));
    rl.metadata.annotations = Pairs::from_map(
        [("alb.rule.cpaas.io/rewrite-response".to_string(), r#"{"headers": {"X": "a\r\nb"}}"#.to_string())].into(),
    );
    let (c, errs) = translate_with(rl, None, &[]);
    assert_eq!(c, json!({}));
    assert_eq!(reasons(&errs), vec!["InvalidAnnotation"]);
}

#[test]
fn timeout_retry_and_auth_inherit_from_the_frontend() {
    let mut ft = frontend("ft", 80, "http", None);
    ft.spec.config = Some(json!({"timeout": {"proxy_read_timeout_ms": 1500, "proxy_connect_timeout_ms": 0},
                                "retry": {"tries": 9}}));
    let (c, _) = translate_with(rule("r", "ft", json!({})), Some(&ft), &[]);
    assert_eq!(c["timeout"], json!({"proxy_read_timeout_ms": 1500}));
    assert_eq!(c["retry"], json!({"tries": 5}));
    // the Rule's own object wins, whole
    let rl = rule("r", "ft", json!({"config": {"timeout": {"proxy_send_timeout_ms": 10}, "retry": {"tries": 1}}}));
    let (c, _) = translate_with(rl, Some(&ft), &[]);
    assert_eq!(c["timeout"], json!({"proxy_send_timeout_ms": 10}));
    assert_eq!(c["retry"], json!({"tries": 1}));
    let (fc, errs) = frontend_config(&ft, &SecretIndex::new(&[]));
    assert!(errs.is_empty());
    assert_eq!(fc.timeout.unwrap().proxy_read_timeout_ms, Some(1500));
}

// `openssl passwd -apr1 -salt W60B7kxR bar` and libxcrypt's bcrypt of "secret"
const APR1: &str = "$apr1$W60B7kxR$kC.He7pPyJM2io6VH2VNS.";
const BCRYPT: &str = "$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a";

#[test]
fn basic_auth_from_auth_file_and_auth_map() {
    let file = format!("foo:{APR1}\n# comment\nbob:{BCRYPT}\nplain:secret\n");
    let secrets = [secret("users", &[("auth", &file)]), secret("map", &[("alice", APR1)])];
    let rl = rule(
        "r",
        "ft",
        json!({"config": {"auth": {"basic": {"realm": "Shop", "secret": "cpaas-system/users", "auth_type": "basic"}}}}),
    );
    let (c, errs) = translate_with(rl, None, &secrets);
    assert_eq!(
        c["auth"]["basic"],
        json!({"realm": "Shop", "users": {"foo": {"algorithm": "apr1", "hash": APR1},
                                          "bob": {"algorithm": "bcrypt", "hash": BCRYPT}}})
    );
    // the plain-text line is reported, the others kept
    assert_eq!(reasons(&errs), vec!["InvalidAuth"]);
    assert!(errs[0].problem.contains("plain"), "{errs:?}");
    let rl = rule("r", "ft", json!({"config": {"auth": {"basic": {"secret": "map", "secret_type": "auth-map"}}}}));
    let (c, errs) = translate_with(rl, None, &secrets);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(c["auth"]["basic"]["users"], json!({"alice": {"algorithm": "apr1", "hash": APR1}}));
}

#[test]
fn basic_auth_problems_fail_closed() {
    let rl = rule("r", "ft", json!({"config": {"auth": {"basic": {"secret": "cpaas-system/missing"}}}}));
    let (c, errs) = translate_with(rl, None, &[]);
    assert_eq!(reasons(&errs), vec!["InvalidAuth"]);
    assert!(c["auth"]["basic"]["err"].as_str().unwrap().contains("does not exist"), "{c}");
    let rl = rule("r", "ft", json!({"config": {"auth": {"basic": {"secret": "s", "secret_type": "x"}}}}));
    let (c, _) = translate_with(rl, None, &[secret("s", &[])]);
    assert!(c["auth"]["basic"]["err"].is_string());
}

#[test]
fn forward_auth_url_checks_and_signin() {
    let rl = rule(
        "r",
        "ft",
        json!({"config": {"auth": {"forward": {"url": "http://auth.test:8080/check?id=$arg_id",
                                                "method": "post", "signin": "https://login.test/start",
                                                "upstream_headers": ["X-User"],
                                                "auth_headers": {"X-Host": "${host}"}}}}}),
    );
    let (c, errs) = translate_with(rl, None, &[]);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        c["auth"]["forward"],
        json!({"url": "http://auth.test:8080/check?id=$arg_id", "method": "POST",
               "signin": "https://login.test/start?rd=$pass_access_scheme://$http_host$escaped_request_uri",
               "upstream_headers": ["X-User"], "auth_headers": {"X-Host": "${host}"}})
    );
    for bad in ["ftp://x/", "http:///x", "http://$host/x", "http://a/${x"] {
        let rl = rule("r", "ft", json!({"config": {"auth": {"forward": {"url": bad}}}}));
        let (c, errs) = translate_with(rl, None, &[]);
        assert_eq!(reasons(&errs), vec!["InvalidAuth"], "{bad}");
        assert!(c["auth"]["basic"]["err"].is_string(), "{bad}: fails closed: {c}");
    }
    for bad in [
        "http://a@b/x",
        "http://a b/x",
        "http://a_b/x",
        "http://1.2.3/x",
        "http://a:0/",
        "http://a:x/",
        "http://[::1/",
        "http://[zz]/",
        "http://-a/",
        "http://a..b/",
        "http://a:/",
    ] {
        let rl = rule("r", "ft", json!({"config": {"auth": {"forward": {"url": bad}}}}));
        let (c, errs) = translate_with(rl, None, &[]);
        assert_eq!(reasons(&errs), vec!["InvalidAuth"], "{bad}");
        assert!(c["auth"]["basic"]["err"].is_string(), "{bad}: fails closed: {c}");
    }
    assert_eq!(signin_url("https://l/?rd=x", ""), "https://l/?rd=x");
    assert_eq!(
        signin_url("https://l/?a=1", "next"),
        "https://l/?a=1&next=$pass_access_scheme://$http_host$escaped_request_uri"
    );
}

#[test]
fn hash_algorithms() {
    assert_eq!(hash_algorithm(APR1), Some("apr1"));
    assert_eq!(hash_algorithm(BCRYPT), Some("bcrypt"));
    assert_eq!(hash_algorithm(&BCRYPT.replace("$2y$", "$2b$")), Some("bcrypt"));
    assert_eq!(hash_algorithm("$1$abc$def"), None);
    assert_eq!(hash_algorithm("{SHA}abc"), None);
    assert_eq!(hash_algorithm("$apr1$W60B7kxR$short"), None);
}

#[test]
fn unknown_config_keys_are_ignored_and_bad_ones_reported() {
    let (c, errs) = translate(json!({"config": {"otel": {"enable": true}, "modsecurity": {"enable": true}}}));
    assert_eq!(c, json!({}));
    assert!(errs.is_empty());
    let (c, errs) = translate(json!({"config": {"timeout": "fast"}}));
    assert_eq!(c, json!({}));
    assert_eq!(reasons(&errs), vec!["InvalidConfig"]);
}

#[test]
fn cidrs() {
    for ok in
        ["10.0.0.0/8", "127.0.0.1", "0.0.0.0/0", "::/0", "::1", "2001:db8::/32", "::ffff:10.0.0.0/104", "10.1.2.3/8"]
    {
        assert_eq!(cidr_ok(ok), Ok(()), "{ok}");
    }
    for bad in ["", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0/8", "010.0.0.1", "x", "10.0.0.0/+8", "fe80::1%eth0"] {
        assert!(cidr_ok(bad).is_err(), "{bad}");
    }
}

#[test]
fn access_lists_are_checked_and_fail_closed() {
    let (c, errs) =
        translate(json!({"config": {"access": {"allow": [" 10.0.0.0/8", "::1"], "deny": ["10.1.0.0/16"]}}}));
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(c["access"], json!({"allow": ["10.0.0.0/8", "::1"], "deny": ["10.1.0.0/16"]}));
    let (c, errs) = translate(json!({"config": {"access": {}}}));
    assert_eq!((c.get("access"), errs.len()), (None, 0), "empty lists: off");
    // one bad entry: everybody is refused (dropping it could open the route)
    let (c, errs) = translate(json!({"config": {"access": {"allow": ["10.0.0.0/8", "10.0.0.0/99"]}}}));
    assert_eq!(c["access"], json!({"deny": ["0.0.0.0/0", "::/0"]}));
    assert_eq!(reasons(&errs), vec!["InvalidAccess"]);
    assert_eq!(errs[0].field, "spec.config.access.allow[1]");
    let (c, errs) = translate(json!({"config": {"access": {"deny": ["nope"]}}}));
    assert_eq!(c["access"], json!({"deny": ["0.0.0.0/0", "::/0"]}));
    assert_eq!(errs[0].field, "spec.config.access.deny[0]");
    let (c, errs) = translate(json!({"config": {"access": {"allow": "10.0.0.0/8"}}}));
    assert_eq!((c.get("access"), reasons(&errs)), (None, vec!["InvalidConfig"]), "not a list: unreadable");
}

#[test]
fn limits_zero_means_off_and_bad_parts_are_reported() {
    let (c, errs) = translate(
        json!({"config": {"limit": {"rps": 10, "rpm": 0, "burst_multiplier": 2, "connections": 3,
                                                           "whitelist": ["10.0.0.0/8", "bad", " ::1 "], "status": 429}}}),
    );
    assert_eq!(
        c["limit"],
        json!({"rps": 10, "burst_multiplier": 2, "connections": 3, "whitelist": ["10.0.0.0/8", "::1"], "status": 429})
    );
    assert_eq!(reasons(&errs), vec!["InvalidLimit"]);
    assert_eq!(errs[0].field, "spec.config.limit.whitelist[1]");
    let (c, errs) = translate(json!({"config": {"limit": {"rps": 0, "connections": 0, "whitelist": ["10.0.0.0/8"]}}}));
    assert_eq!((c.get("limit"), errs.len()), (None, 0), "nothing to limit");
    let (c, errs) = translate(json!({"config": {"limit": {"rpm": 60, "status": 302}}}));
    assert_eq!(c["limit"], json!({"rpm": 60}), "status falls back to the default");
    assert_eq!((reasons(&errs), errs[0].field.as_str()), (vec!["InvalidLimit"], "spec.config.limit.status"));
    let (c, errs) = translate(json!({"config": {"limit": {"rps": -1}}}));
    assert_eq!((c.get("limit"), reasons(&errs)), (None, vec!["InvalidConfig"]));
}

#[test]
fn max_body_size_zero_is_off() {
    let (c, errs) = translate(json!({"config": {"max_body_size": 1048576}}));
    assert_eq!((c["max_body_size"].as_u64(), errs.len()), (Some(1048576), 0));
    let (c, _) = translate(json!({"config": {"max_body_size": 0}}));
    assert_eq!(c.get("max_body_size"), None);
    let (c, _) = translate(json!({"config": {"max_body_size": u64::MAX}}));
    assert_eq!(c.get("max_body_size"), None, "beyond what Lua numbers hold: no limit");
    let (c, errs) = translate(json!({"config": {"max_body_size": "1m"}}));
    assert_eq!((c.get("max_body_size"), reasons(&errs)), (None, vec!["InvalidConfig"]));
}

#[test]
fn error_pages_codes_and_service() {
    let (c, errs) = translate(json!({"config": {"error_pages": {"codes": [503, 404, 503, 302, 600],
                                                                 "service": {"name": "errors", "port": 80},
                                                                 "upstream": "someone-else"}}}));
    assert_eq!(
        c["error_pages"],
        json!({"codes": [404, 503], "service": {"namespace": NS, "name": "errors", "port": 80}}),
        "sorted, deduplicated; the user's upstream is dropped (the compiler fills it)"
    );
    assert_eq!(reasons(&errs), vec!["InvalidErrorPages", "InvalidErrorPages"]);
    assert_eq!(errs[0].field, "spec.config.error_pages.codes[3]");
    let (c, errs) = translate(json!({"config": {"error_pages": {"codes": [503]}}}));
    assert_eq!((c.get("error_pages"), reasons(&errs)), (None, vec!["InvalidErrorPages"]), "no service");
    let (c, errs) = translate(json!({"config": {"error_pages": {"service": {"name": "e", "port": 0}}}}));
    assert_eq!((c.get("error_pages"), reasons(&errs)), (None, vec!["InvalidErrorPages"]), "no port");
    // no codes: still the backend of a rule without endpoints
    let (c, errs) =
        translate(json!({"config": {"error_pages": {"service": {"namespace": "o", "name": "e", "port": 8080}}}}));
    assert!(errs.is_empty());
    assert_eq!(c["error_pages"], json!({"service": {"namespace": "o", "name": "e", "port": 8080}}));
}

mod error_groups {
    use crate::compile::testutil::{arcs, frontend, rule, service, slice, ALB};
    use crate::compile::{compile, CompileOptions, Snapshot};
    use serde_json::{json, Value};

    fn snapshot(rules: Vec<crate::crd::Rule>) -> Snapshot {
        Snapshot {
            frontends: arcs(vec![frontend("ft", 80, "http", None)]),
            rules: arcs(rules),
            services: arcs(vec![
                service("default", "web", &[("http", 80, json!(8080))]),
                service("default", "errors", &[("http", 80, json!(9090))]),
            ]),
            endpoint_slices: arcs(vec![
                slice("default", "web", "web-1", &[("http", 8080)], &[("10.0.0.1", None)]),
                slice("default", "errors", "errors-1", &[("http", 9090)], &[("10.0.0.9", None)]),
            ]),
            secrets: vec![],
            tls_fallback: None,
        }
    }

    fn ep_rule(name: &str, prefix: &str, svc: &str, error_svc: Value) -> crate::crd::Rule {
        rule(
            name,
            "ft",
            json!({"priority": 5, "dslx": [{"type": "URL", "values": [["STARTS_WITH", prefix]]}],
                   "serviceGroup": {"services": [{"name": svc, "namespace": "default", "port": 80}]},
                   "config": {"error_pages": {"codes": [503], "service": error_svc}}}),
        )
    }

    fn opts() -> CompileOptions {
        CompileOptions { alb_name: Some(ALB.into()), ..Default::default() }
    }

    #[test]
    fn the_error_service_becomes_a_shared_backend_group() {
        let svc = json!({"namespace": "default", "name": "errors", "port": 80});
        let s = snapshot(vec![ep_rule("a", "/a", "web", svc.clone()), ep_rule("b", "/b", "web", svc)]);
        let c = compile(&s, &opts());
        assert!(c.rejects.is_empty(), "{:?}", c.rejects);
        let p = serde_json::to_value(&*c.policy).unwrap();
        let groups: Vec<&str> =
            p["backend_groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
        assert_eq!(groups, vec!["a", "errors:default/errors:80"], "one error group; b's group deduplicated into a");
        let eg = &p["backend_groups"][1];
        assert_eq!(
            eg["backends"],
            json!([{"address": "10.0.0.9", "port": 9090, "weight": 100, "svc": "errors", "ns": "default"}])
        );
        for r in p["http"]["80"]["rules"].as_array().unwrap() {
            assert_eq!(r["config"]["error_pages"]["upstream"], "errors:default/errors:80", "{r}");
            assert_eq!(r["config"]["error_pages"]["codes"], json!([503]));
        }
    }

    #[test]
    fn a_missing_error_service_is_reported_and_the_rule_still_routes() {
        let s = snapshot(vec![
            ep_rule("a", "/a", "web", json!({"namespace": "default", "name": "nope", "port": 80})),
            ep_rule("b", "/b", "web", json!({"namespace": "default", "name": "errors", "port": 81})),
        ]);
        let c = compile(&s, &opts());
        let got: Vec<(&str, &str, &str)> =
            c.rejects.iter().map(|r| (r.name.as_str(), r.field.as_str(), r.reason.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("a", "spec.config.error_pages.service", "ServiceNotFound"),
                ("b", "spec.config.error_pages.service.port", "PortNotFound"),
            ]
        );
        assert!(c.rejects[0].message.contains("default/nope"), "{}", c.rejects[0].message);
        let p = serde_json::to_value(&*c.policy).unwrap();
        let rules = p["http"]["80"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert!(rules.iter().all(|r| r["config"] == json!({}) && r["upstream"].is_string()), "{rules:?}");
        assert_eq!(p["backend_groups"].as_array().unwrap().len(), 1, "no error group");
    }

    #[test]
    fn an_error_group_deduplicated_into_a_rule_group_is_renamed() {
        // the error Service is the rule's own Service: same backends, one group kept (the smaller name)
        let s =
            snapshot(vec![ep_rule("a", "/a", "errors", json!({"namespace": "default", "name": "errors", "port": 80}))]);
        let c = compile(&s, &opts());
        let p = serde_json::to_value(&*c.policy).unwrap();
        assert_eq!(p["backend_groups"].as_array().unwrap().len(), 1);
        assert_eq!(p["backend_groups"][0]["name"], "a");
        assert_eq!(p["http"]["80"]["rules"][0]["config"]["error_pages"]["upstream"], "a");
    }
}

#[test]
fn forward_auth_host_names_need_a_resolver() {
    for ok in [
        "10.0.0.1",
        "10.0.0.1:8080",
        "[::1]",
        "[fd00::1]:80",
        "auth",
        "oauth2-proxy.auth.svc.cluster.local",
        "auth.e2e.test:9000",
        "a.b.",
    ] {
        assert_eq!(auth_host_ok(ok, Some(true)), Ok(()), "{ok}");
        assert_eq!(auth_host_ok(ok, None), Ok(()), "{ok}");
    }
    // IP literals never need a resolver
    for ip in ["10.0.0.1:8080", "[::1]:80"] {
        assert_eq!(auth_host_ok(ip, Some(false)), Ok(()), "{ip}");
    }
    let e = auth_host_ok("auth.svc:80", Some(false)).unwrap_err();
    assert!(e.contains("\"auth.svc\"") && e.contains("resolver") && e.contains("--resolver"), "{e}");
    for bad in ["a b", "a@b", "a_b", "1.2.3", "a:99999", "[::1]x", "[::1", ".a", "a..b", "-a.b", "a$b"] {
        assert!(auth_host_ok(bad, Some(true)).is_err(), "{bad}");
    }
}
