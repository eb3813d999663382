use super::super::testutil::*;
use super::*;
use serde_json::json;

const N: &str = NGINX_PREFIX;

fn with(annos: &[(&str, &str)]) -> Ingress {
    annos.iter().fold(ingress("ns", "web", json!({})), |ing, (k, v)| annotate(ing, k, v))
}

fn nk(k: &str) -> String {
    format!("{N}{k}")
}

/// `for_path(0, 0)` of an Ingress with the given annotations (nginx prefix added to short keys).
fn path_of(annos: &[(&str, &str)]) -> (PathAnnotations, Vec<Invalid>) {
    let full: Vec<(String, &str)> =
        annos.iter().map(|(k, v)| (if k.contains('/') { k.to_string() } else { nk(k) }, *v)).collect();
    let pairs: Vec<(&str, &str)> = full.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let ing = with(&pairs);
    let a = Annotations::new(&ing, "cpaas.io");
    let svc = service("ns", "errors", &[("http", 8080)]);
    a.for_path(0, 0, &[svc.into()])
}

fn keys(bad: &[Invalid]) -> Vec<String> {
    bad.iter().map(|b| b.key.clone()).collect()
}

#[test]
fn backend_protocol_is_lower_cased_and_checked() {
    let a = |v: &str| {
        let ing = with(&[(&nk(BACKEND_PROTOCOL), v)]);
        Annotations::new(&ing, "cpaas.io").backend_protocol(None)
    };
    assert_eq!(a("HTTPS"), Ok(Some("https".into())));
    assert_eq!(a("GRPC"), Ok(Some("grpc".into())));
    assert_eq!(a("GRPCS"), Ok(Some("grpcs".into())));
    let err = a("FCGI").unwrap_err();
    assert_eq!(err.key, nk(BACKEND_PROTOCOL));
    assert!(err.describe().contains("\"FCGI\""), "{}", err.describe());
    let ing = with(&[]);
    assert_eq!(Annotations::new(&ing, "cpaas.io").backend_protocol(None), Ok(None));
}

#[test]
fn prefix_precedence() {
    let ing = with(&[
        ("nginx.ingress.kubernetes.io/upstream-vhost", "n.svc"),
        ("alb.ingress.cpaas.io/upstream-vhost", "a.svc"),
        ("index.1-2.alb.ingress.cpaas.io/upstream-vhost", "i.svc"),
        ("nginx.ingress.kubernetes.io/proxy-read-timeout", "7"),
        ("alb.ingress.cpaas.io/proxy-read-timeout", "bad"),
    ]);
    let a = Annotations::new(&ing, "cpaas.io");
    assert_eq!(a.for_path(1, 2, &[]).0.vhost.as_deref(), Some("i.svc"));
    assert_eq!(a.for_path(0, 0, &[]).0.vhost.as_deref(), Some("a.svc"));
    // The highest present prefix decides, even when invalid: the lower ones are not used.
    let (pa, bad) = a.for_path(0, 0, &[]);
    assert_eq!(pa.timeout, None);
    assert_eq!(keys(&bad), vec!["alb.ingress.cpaas.io/proxy-read-timeout"]);
    assert_eq!(
        a.candidates("x", Some((3, 4))),
        vec!["index.3-4.alb.ingress.cpaas.io/x", "alb.ingress.cpaas.io/x", "nginx.ingress.kubernetes.io/x"]
    );
    // Blank counts as absent.
    let ing = with(&[("alb.ingress.cpaas.io/upstream-vhost", " "), (&nk(UPSTREAM_VHOST), "n.svc")]);
    assert_eq!(Annotations::new(&ing, "cpaas.io").for_path(0, 0, &[]).0.vhost.as_deref(), Some("n.svc"));
}

#[test]
fn priority_and_bools() {
    let ing = with(&[
        ("alb.cpaas.io/ingress-rule-priority-0-1", "3"),
        ("alb.cpaas.io/ingress-rule-priority-1-0", "0"),
        ("alb.cpaas.io/ingress-rule-priority-1-1", "high"),
        (&nk(ENABLE_CORS), "yes"),
        ("alb.networking.cpaas.io/enable-https", "False"),
    ]);
    let a = Annotations::new(&ing, "cpaas.io");
    assert_eq!(a.rule_priority(0, 1), Ok(Some(3)));
    assert_eq!(a.rule_priority(0, 0), Ok(None));
    assert_eq!(a.rule_priority(1, 0), Ok(None), "0 = default");
    assert!(a.rule_priority(1, 1).is_err());
    assert_eq!(a.enable_https(), Ok(Some(false)));
    let (pa, bad) = a.for_path(1, 1, &[]);
    assert_eq!(pa.priority, DEFAULT_RULE_PRIORITY);
    assert!(pa.cors.is_none());
    assert_eq!(bad.len(), 2, "{bad:?}");
}

#[test]
fn tls_annotation() {
    let key = tls_key("cpaas.io");
    let ing = with(&[(&key, "A.com=ns1/s1, b.com=ns2/s2,a.com=ns1/s1")]);
    let tls = Annotations::new(&ing, "cpaas.io").tls().unwrap();
    assert_eq!(tls.get("a.com").map(String::as_str), Some("ns1/s1"));
    assert_eq!(tls.get("b.com").map(String::as_str), Some("ns2/s2"));
    for bad in ["a.com=s1", "a.com", "=ns/s", "a.com=ns1/s1,a.com=ns1/s2", "a.com=ns/s/x"] {
        let ing = with(&[(&key, bad)]);
        assert!(Annotations::new(&ing, "cpaas.io").tls().is_err(), "{bad}");
    }
}

#[test]
fn rewrite_and_regex() {
    let (pa, bad) = path_of(&[(REWRITE_TARGET, "/$2"), (USE_REGEX, "false")]);
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(pa.rewrite_target.as_deref(), Some("/$2"));
    assert!(pa.path_is_regex(), "captures make the path a regex");
    let (pa, _) = path_of(&[(REWRITE_TARGET, "/")]);
    assert!(!pa.path_is_regex());
    let (pa, _) = path_of(&[(USE_REGEX, "true")]);
    assert!(pa.path_is_regex());
    let (pa, bad) = path_of(&[(REWRITE_TARGET, "/$x"), (USE_REGEX, "maybe")]);
    assert_eq!(pa.rewrite_target, None);
    assert!(!pa.use_regex);
    assert_eq!(keys(&bad), vec![nk(USE_REGEX), nk(REWRITE_TARGET)]);
}

#[test]
fn redirects() {
    let (pa, _) = path_of(&[(PERMANENT_REDIRECT, "https://b.com/x")]);
    assert_eq!(
        pa.redirect,
        Some(Redirect { url: Some("https://b.com/x".into()), code: Some(301), ..Default::default() })
    );
    let (pa, _) = path_of(&[(PERMANENT_REDIRECT, "/p"), (PERMANENT_REDIRECT_CODE, "308")]);
    assert_eq!(pa.redirect.unwrap().code, Some(308));
    // temporal wins; its code defaults to 302; a bad code falls back to the default with a warning.
    let (pa, bad) = path_of(&[(PERMANENT_REDIRECT, "/p"), (TEMPORAL_REDIRECT, "/t"), (TEMPORAL_REDIRECT_CODE, "200")]);
    assert_eq!(pa.redirect, Some(Redirect { url: Some("/t".into()), code: Some(302), ..Default::default() }));
    assert_eq!(keys(&bad), vec![nk(TEMPORAL_REDIRECT_CODE)]);
    let (pa, bad) = path_of(&[(PERMANENT_REDIRECT, "b.com")]);
    assert!(pa.redirect.is_none() && bad.len() == 1);
    let (pa, bad) = path_of(&[(SSL_REDIRECT, "false"), (FORCE_SSL_REDIRECT, "true")]);
    assert!(bad.is_empty());
    assert_eq!((pa.ssl_redirect, pa.force_ssl_redirect), (Some(false), true));
    let (_, bad) = path_of(&[(SSL_REDIRECT, "on"), (FORCE_SSL_REDIRECT, "1")]);
    assert_eq!(bad.len(), 2);
}

#[test]
fn alb_redirect_keys() {
    let (pa, bad) = path_of(&[
        (REDIRECT_HOST, "B.com"),
        (REDIRECT_PORT, "8443"),
        (REDIRECT_PREFIX_MATCH, "/old"),
        (REDIRECT_REPLACE_PREFIX, "/new"),
        (REDIRECT_CODE, "307"),
    ]);
    assert!(bad.is_empty(), "{bad:?}");
    let want = Redirect {
        host: Some("b.com".into()),
        port: Some(8443),
        prefix_match: Some("/old".into()),
        replace_prefix: Some("/new".into()),
        code: Some(307),
        ..Default::default()
    };
    assert_eq!(pa.redirect, Some(want));
    // With a permanent redirect: its URL and code, the host/port of the ALB keys.
    let (pa, _) = path_of(&[(PERMANENT_REDIRECT, "/x"), (REDIRECT_PORT, "81"), (REDIRECT_CODE, "307")]);
    assert_eq!(
        pa.redirect,
        Some(Redirect { url: Some("/x".into()), code: Some(301), port: Some(81), ..Default::default() })
    );
    let (pa, bad) = path_of(&[(REDIRECT_HOST, "a.com;"), (REDIRECT_PORT, "http"), (REDIRECT_CODE, "200")]);
    assert!(pa.redirect.is_none());
    assert_eq!(bad.len(), 3);
    let (pa, bad) = path_of(&[(REDIRECT_PREFIX_MATCH, "/old")]);
    assert!(pa.redirect.is_none());
    assert_eq!(keys(&bad), vec![nk(REDIRECT_PREFIX_MATCH)]);
}

#[test]
fn auth_enable_false_turns_annotation_auth_off() {
    let (pa, bad) = path_of(&[(AUTH_ENABLE, "false"), (AUTH_TYPE, "basic"), (AUTH_SECRET, "users")]);
    assert!(pa.auth.is_none() && bad.is_empty());
    let (pa, bad) = path_of(&[(AUTH_ENABLE, "maybe"), (AUTH_TYPE, "basic"), (AUTH_SECRET, "users")]);
    assert!(pa.auth.is_some());
    assert_eq!(keys(&bad), vec![nk(AUTH_ENABLE)]);
}

#[test]
fn cors_keys() {
    let (pa, bad) = path_of(&[
        (ENABLE_CORS, "true"),
        (CORS_ALLOW_ORIGIN, "https://a.com, https://*.b.com"),
        (CORS_ALLOW_METHODS, "get, post"),
        (CORS_ALLOW_HEADERS, "X-A, X-B"),
        (CORS_EXPOSE_HEADERS, "X-Total"),
        (CORS_ALLOW_CREDENTIALS, "false"),
        (CORS_MAX_AGE, "600"),
    ]);
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        pa.cors,
        Some(Cors {
            allow_origin: vec!["https://a.com".into(), "https://*.b.com".into()],
            allow_methods: Some("GET, POST".into()),
            allow_headers: Some("X-A,X-B".into()),
            expose_headers: Some("X-Total".into()),
            allow_credentials: Some(false),
            max_age: Some(600),
        })
    );
    // cors-* without enable-cors: nothing.
    let (pa, bad) = path_of(&[(CORS_ALLOW_ORIGIN, "https://a.com")]);
    assert!(pa.cors.is_none() && bad.is_empty());
    // Each bad value is dropped on its own; CORS stays on with the defaults.
    let (pa, bad) = path_of(&[
        (ENABLE_CORS, "true"),
        (CORS_ALLOW_ORIGIN, "a.com"),
        (CORS_ALLOW_METHODS, "GET;"),
        (CORS_ALLOW_HEADERS, "X A"),
        (CORS_EXPOSE_HEADERS, "X\"A"),
        (CORS_ALLOW_CREDENTIALS, "yes"),
        (CORS_MAX_AGE, "-1"),
    ]);
    assert_eq!(pa.cors, Some(Cors::default()));
    assert_eq!(bad.len(), 6, "{bad:?}");
}

#[test]
fn timeouts_and_retries() {
    let (pa, bad) =
        path_of(&[(PROXY_CONNECT_TIMEOUT, "2"), (PROXY_SEND_TIMEOUT, "30s"), (PROXY_READ_TIMEOUT, "1500ms")]);
    assert!(bad.is_empty());
    assert_eq!(
        pa.timeout,
        Some(Timeout {
            proxy_connect_timeout_ms: Some(2000),
            proxy_send_timeout_ms: Some(30000),
            proxy_read_timeout_ms: Some(1500)
        })
    );
    let (pa, bad) = path_of(&[(PROXY_CONNECT_TIMEOUT, "x"), (PROXY_READ_TIMEOUT, "3")]);
    assert_eq!(pa.timeout.unwrap().proxy_read_timeout_ms, Some(3000));
    assert_eq!(keys(&bad), vec![nk(PROXY_CONNECT_TIMEOUT)]);

    let tries = |annos: &[(&str, &str)]| path_of(annos).0.retry.and_then(|r| r.tries);
    assert_eq!(tries(&[(PROXY_NEXT_UPSTREAM_TRIES, "2")]), Some(2));
    assert_eq!(tries(&[(PROXY_NEXT_UPSTREAM_TRIES, "9")]), Some(5), "capped");
    assert_eq!(tries(&[(PROXY_NEXT_UPSTREAM_TRIES, "0")]), None, "0 = unlimited = the cap");
    assert_eq!(tries(&[(PROXY_NEXT_UPSTREAM, "off"), (PROXY_NEXT_UPSTREAM_TRIES, "3")]), Some(1));
    assert_eq!(tries(&[(PROXY_NEXT_UPSTREAM, "error timeout")]), None);
    let (_, bad) = path_of(&[(PROXY_NEXT_UPSTREAM, "error http_502")]);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].reason, "UnsupportedAnnotation");
    assert!(bad[0].problem.contains("http_502"), "{bad:?}");
    for v in ["error bogus", "off error"] {
        let (pa, bad) = path_of(&[(PROXY_NEXT_UPSTREAM, v)]);
        assert_eq!(bad.len(), 1, "{v}");
        assert_eq!(bad[0].reason, "InvalidAnnotation");
        assert!(pa.retry.is_none());
    }
    let (_, bad) = path_of(&[(PROXY_NEXT_UPSTREAM_TRIES, "many")]);
    assert_eq!(bad.len(), 1);
    let (_, bad) = path_of(&[(PROXY_NEXT_UPSTREAM_TIMEOUT, "10")]);
    assert_eq!(bad[0].reason, "UnsupportedAnnotation");
    let (_, bad) = path_of(&[(PROXY_NEXT_UPSTREAM_TIMEOUT, "ten")]);
    assert_eq!(bad[0].reason, "InvalidAnnotation");
}

#[test]
fn body_size_access_limits() {
    assert_eq!(path_of(&[(PROXY_BODY_SIZE, "8k")]).0.max_body_size, Some(8192));
    assert_eq!(path_of(&[(PROXY_BODY_SIZE, "0")]).0.max_body_size, None);
    let (pa, bad) = path_of(&[(PROXY_BODY_SIZE, "8 kb")]);
    assert!(pa.max_body_size.is_none() && bad.len() == 1);

    let (pa, bad) = path_of(&[
        (WHITELIST_SOURCE_RANGE, "1.1.1.1"),
        (ALLOWLIST_SOURCE_RANGE, "10.0.0.0/8, 192.168.1.1"),
        (DENYLIST_SOURCE_RANGE, "10.1.0.0/16"),
    ]);
    assert!(bad.is_empty());
    assert_eq!(
        pa.access,
        Some(Access { allow: vec!["10.0.0.0/8".into(), "192.168.1.1".into()], deny: vec!["10.1.0.0/16".into()] })
    );
    assert_eq!(path_of(&[(WHITELIST_SOURCE_RANGE, "1.1.1.1")]).0.access.unwrap().allow, vec!["1.1.1.1"]);
    let (pa, bad) = path_of(&[(ALLOWLIST_SOURCE_RANGE, "10.0.0.0/8; allow all"), (DENYLIST_SOURCE_RANGE, "x")]);
    assert!(pa.access.is_none() && bad.len() == 2);

    let (pa, bad) = path_of(&[
        (LIMIT_RPS, "10"),
        (LIMIT_RPM, "100"),
        (LIMIT_CONNECTIONS, "3"),
        (LIMIT_WHITELIST, "127.0.0.1/32"),
        (LIMIT_BURST_MULTIPLIER, "2"),
    ]);
    assert!(bad.is_empty());
    assert_eq!(
        pa.limit,
        Some(Limit {
            rps: Some(10),
            rpm: Some(100),
            connections: Some(3),
            burst_multiplier: Some(2),
            whitelist: vec!["127.0.0.1/32".into()],
            status: None
        })
    );
    assert!(path_of(&[(LIMIT_WHITELIST, "1.1.1.1")]).0.limit.is_none(), "no rate, no limit");
    let (pa, bad) = path_of(&[(LIMIT_RPS, "0"), (LIMIT_CONNECTIONS, "x"), (LIMIT_BURST_MULTIPLIER, "0")]);
    assert!(pa.limit.is_none());
    assert_eq!(bad.len(), 3);
}

#[test]
fn error_pages() {
    let (pa, bad) = path_of(&[(CUSTOM_HTTP_ERRORS, "404,503"), (DEFAULT_BACKEND, "errors")]);
    assert!(bad.is_empty());
    let svc = |name: &str, port| ErrorService { namespace: "ns".into(), name: name.into(), port };
    assert_eq!(
        pa.error_pages,
        Some(ErrorPages { codes: vec![404, 503], service: Some(svc("errors", 8080)), upstream: None })
    );
    // default-backend alone; a Service the world does not know: port 80.
    let (pa, _) = path_of(&[(DEFAULT_BACKEND, "ns/other")]);
    assert_eq!(pa.error_pages, Some(ErrorPages { codes: vec![], service: Some(svc("other", 80)), upstream: None }));
    let (pa, bad) = path_of(&[(CUSTOM_HTTP_ERRORS, "404")]);
    assert!(pa.error_pages.is_none());
    assert!(bad[0].problem.contains("default-backend"), "{bad:?}");
    let (pa, bad) = path_of(&[(CUSTOM_HTTP_ERRORS, "200"), (DEFAULT_BACKEND, "kube-system/x")]);
    assert!(pa.error_pages.is_none());
    assert_eq!(bad.len(), 2);
}

#[test]
fn basic_auth() {
    let (pa, bad) =
        path_of(&[(AUTH_TYPE, "basic"), (AUTH_SECRET, "users"), (AUTH_REALM, "Staff"), (AUTH_SECRET_TYPE, "auth-map")]);
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        pa.auth,
        Some(
            json!({"basic": {"auth_type": "basic", "secret": "ns/users", "realm": "Staff", "secret_type": "auth-map"}})
        )
    );
    let closed = Some(json!({"basic": {"auth_type": "invalid-annotation"}}));
    for annos in [
        vec![(AUTH_TYPE, "digest"), (AUTH_SECRET, "users")],
        vec![(AUTH_TYPE, "ldap"), (AUTH_SECRET, "users")],
        vec![(AUTH_TYPE, "basic")],
        vec![(AUTH_TYPE, "basic"), (AUTH_SECRET, "other-ns/users")],
        vec![(AUTH_TYPE, "basic"), (AUTH_SECRET, "users"), (AUTH_SECRET_TYPE, "htpasswd")],
    ] {
        let (pa, bad) = path_of(&annos);
        assert_eq!(pa.auth, closed, "{annos:?}");
        assert_eq!(bad.len(), 1, "{annos:?}");
        assert_eq!(bad[0].consequence, Some(FAIL_CLOSED));
    }
    // A bad realm is only ignored.
    let (pa, bad) = path_of(&[(AUTH_TYPE, "basic"), (AUTH_SECRET, "users"), (AUTH_REALM, "a\"b")]);
    assert_eq!(pa.auth, Some(json!({"basic": {"auth_type": "basic", "secret": "ns/users"}})));
    assert_eq!(bad.len(), 1);
    // Without auth-type the other keys do nothing (as ingress-nginx), with a warning.
    let (pa, bad) = path_of(&[(AUTH_SECRET, "users")]);
    assert!(pa.auth.is_none() && bad.len() == 1);
}

#[test]
fn forward_auth() {
    let (pa, bad) = path_of(&[
        (AUTH_URL, "http://10.0.0.1:9000/check?h=$host"),
        (AUTH_METHOD, "post"),
        (AUTH_SIGNIN, "https://login.a.com/start"),
        (AUTH_SIGNIN_REDIRECT_PARAM, "next"),
        (AUTH_RESPONSE_HEADERS, "X-User, X-Group"),
        (AUTH_REQUEST_REDIRECT, "https://$host/after"),
        (AUTH_ALWAYS_SET_COOKIE, "true"),
    ]);
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        pa.auth,
        Some(json!({"forward": {
            "url": "http://10.0.0.1:9000/check?h=$host", "method": "POST",
            "signin": "https://login.a.com/start", "signin_redirect_param": "next",
            "upstream_headers": ["X-User", "X-Group"], "auth_request_redirect": "https://$host/after",
            "always_set_cookie": true
        }}))
    );
    let (pa, bad) = path_of(&[(AUTH_URL, "http://$host/check")]);
    assert_eq!(pa.auth, Some(json!({"basic": {"auth_type": "invalid-annotation"}})));
    assert_eq!(bad[0].consequence, Some(FAIL_CLOSED));
    // Secondary keys are only ignored.
    let (pa, bad) = path_of(&[(AUTH_URL, "http://a/x"), (AUTH_METHOD, "TRACE"), (AUTH_RESPONSE_HEADERS, "X User")]);
    assert_eq!(pa.auth, Some(json!({"forward": {"url": "http://a/x"}})));
    assert_eq!(bad.len(), 2);
}

#[test]
fn header_rewrites() {
    let (pa, bad) = path_of(&[
        (X_FORWARDED_PREFIX, "/api"),
        ("alb.ingress.cpaas.io/rewrite-request", r#"{"headers": {"X-A": "1"}, "headers_remove": ["X-B"]}"#),
        ("alb.ingress.cpaas.io/rewrite-response", r#"{"headers": {"X-R": "2"}}"#),
    ]);
    assert!(bad.is_empty(), "{bad:?}");
    let rr = pa.rewrite_request.unwrap();
    assert_eq!(rr.headers.get("X-Forwarded-Prefix").map(String::as_str), Some("/api"));
    assert_eq!(rr.headers.get("X-A").map(String::as_str), Some("1"));
    assert_eq!(rr.headers_remove, vec!["X-B"]);
    assert_eq!(pa.rewrite_response.unwrap().headers.get("X-R").map(String::as_str), Some("2"));
    let (pa, bad) = path_of(&[
        ("alb.ingress.cpaas.io/rewrite-request", r#"{"headers": {"X A": "1"}}"#),
        ("alb.ingress.cpaas.io/rewrite-response", "not json"),
        (X_FORWARDED_PREFIX, "/a\r\nX-Evil: 1"),
    ]);
    assert!(pa.rewrite_request.is_none() && pa.rewrite_response.is_none());
    assert_eq!(bad.len(), 3);
}

#[test]
fn ingress_wide_keys() {
    let ing =
        with(&[(&nk(APP_ROOT), "/app"), (&nk(FROM_TO_WWW_REDIRECT), "true"), (&nk(SERVER_ALIAS), "b.com, *.c.com")]);
    let a = Annotations::new(&ing, "cpaas.io");
    assert_eq!(a.app_root(), Ok(Some("/app".into())));
    assert_eq!(a.www_redirect(), Ok(true));
    assert_eq!(a.server_alias(), Ok(vec!["b.com".to_string(), "*.c.com".into()]));
    let ing = with(&[(&nk(APP_ROOT), "app"), (&nk(FROM_TO_WWW_REDIRECT), "y"), (&nk(SERVER_ALIAS), "b.com;x")]);
    let a = Annotations::new(&ing, "cpaas.io");
    assert!(a.app_root().is_err() && a.www_redirect().is_err() && a.server_alias().is_err());
}

#[test]
fn scan_refuses_snippets_and_lists_unknown_keys() {
    let ing = with(&[
        (&nk("configuration-snippet"), "more_set_headers x;"),
        (&nk("my-custom-snippet"), "x"),
        ("alb.ingress.cpaas.io/server-snippet", "x"),
        ("index.0-0.alb.ingress.cpaas.io/auth-snippet", "x"),
        (&nk("enable-opentelemetry"), "true"),
        (&nk("ssl-passthrough"), "true"),
        (&nk(ENABLE_CORS), "true"),
        ("alb.ingress.cpaas.io/otel", "{}"),
        ("other.io/x", "y"),
    ]);
    let s = Annotations::new(&ing, "cpaas.io").scan();
    assert_eq!(
        s.refused,
        vec![
            "alb.ingress.cpaas.io/server-snippet",
            "index.0-0.alb.ingress.cpaas.io/auth-snippet",
            "nginx.ingress.kubernetes.io/configuration-snippet",
            "nginx.ingress.kubernetes.io/my-custom-snippet",
        ]
    );
    assert_eq!(s.unsupported, vec![nk("enable-opentelemetry"), nk("ssl-passthrough")]);
}

#[test]
fn config_object() {
    let (pa, _) = path_of(&[(PROXY_READ_TIMEOUT, "3"), (PROXY_BODY_SIZE, "1k"), (ENABLE_CORS, "true")]);
    let redirect = Redirect { url: Some("/x".into()), ..Default::default() };
    let c = pa.config(Some(json!({"regex": ".*", "target": "/"})), Some(&redirect));
    assert_eq!(
        c,
        json!({"redirect": {"url": "/x"}, "cors": {}, "rewrite": {"regex": ".*", "target": "/"},
               "timeout": {"proxy_read_timeout_ms": 3000}, "max_body_size": 1024})
    );
    assert_eq!(path_of(&[]).0.config(None, None), json!({}));
}

/// The first backticked word of each row of the Keys table of docs/annotations.md.
fn documented_keys() -> Vec<String> {
    let doc = include_str!("../../../docs/annotations.md");
    let table = doc.split("## Keys").nth(1).expect("docs/annotations.md has a Keys section");
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(str::to_string))
        .collect()
}

#[test]
fn docs_table_matches_the_registry() {
    use std::collections::BTreeSet;
    let documented: Vec<String> = documented_keys();
    let doc_set: BTreeSet<&str> = documented.iter().map(String::as_str).collect();
    assert_eq!(doc_set.len(), documented.len(), "a key is documented twice");
    let mut code: BTreeSet<&str> = MODULE_KEYS.iter().flat_map(|m| m.iter().map(|k| short_key(k))).collect();
    code.extend(EXACT_KEYS.iter().copied());
    code.extend(REFUSED.iter().copied());
    let undocumented: Vec<_> = code.difference(&doc_set).collect();
    assert!(undocumented.is_empty(), "read by the code but not in docs/annotations.md: {undocumented:?}");
    let unread: Vec<_> = doc_set.difference(&code).collect();
    assert!(unread.is_empty(), "documented but neither read nor refused: {unread:?}");
    // Sanity: the parse really found the table.
    assert!(doc_set.contains("rewrite-target") && doc_set.contains("configuration-snippet"));
}

#[test]
fn every_key_is_read_through_the_lookup() {
    // A value on the nginx prefix of every key must change the parse of path 0/0 (or an Ingress-wide read),
    // so a key listed in KEYS but never read fails here.
    let ingress_wide = [APP_ROOT, FROM_TO_WWW_REDIRECT, SERVER_ALIAS];
    for key in KEYS {
        let ing = with(&[(&nk(key), "\u{1}invalid")]);
        let a = Annotations::new(&ing, "cpaas.io");
        let (_, bad) = a.for_path(0, 0, &[]);
        let wide_bad = a.app_root().is_err() || a.www_redirect().is_err() || a.server_alias().is_err();
        let read = bad.iter().any(|b| b.key == nk(key)) || ingress_wide.contains(key) && wide_bad;
        let dependent = [
            CORS_ALLOW_ORIGIN,
            CORS_ALLOW_METHODS,
            CORS_ALLOW_HEADERS,
            CORS_EXPOSE_HEADERS,
            CORS_ALLOW_CREDENTIALS,
            CORS_MAX_AGE,
            PERMANENT_REDIRECT_CODE,
            TEMPORAL_REDIRECT_CODE,
            AUTH_METHOD,
            AUTH_SIGNIN,
            AUTH_SIGNIN_REDIRECT_PARAM,
            AUTH_RESPONSE_HEADERS,
            AUTH_REQUEST_REDIRECT,
            AUTH_ALWAYS_SET_COOKIE,
            BACKEND_PROTOCOL,
        ];
        if dependent.contains(key) {
            continue; // read only with their main key (covered by the feature tests) or by the translation
        }
        assert!(read, "{key} is in KEYS but an invalid value is not reported: {bad:?}");
    }
}
