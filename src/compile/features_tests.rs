//! Rule spec / annotations / Secrets → `HttpRule.config`.

use super::*;
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
    rl.metadata.annotations = Some(
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
    rl.metadata.annotations = Some(
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
    rl.metadata.annotations = Some(
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
