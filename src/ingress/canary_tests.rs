use super::super::testutil::*;
use super::super::translate::{expected, translate_all};
use super::*;
use serde_json::{json, Value};

fn cfg() -> AlbIngressConfig {
    AlbIngressConfig { alb_name: "alb-dev".into(), alb_namespace: "cpaas-system".into(), ..Default::default() }
}

fn ing_path(ns: &str, name: &str, host: &str, path: &str, svc: &str) -> Ingress {
    ingress(
        ns,
        name,
        json!({"rules": [{"host": host, "http": {"paths": [
            {"path": path, "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": 80}}}}
        ]}}]}),
    )
}

fn with(mut ing: Ingress, annos: &[(&str, &str)]) -> Ingress {
    for (k, v) in annos {
        ing = annotate(ing, k, v);
    }
    ing
}

fn parsed(annos: &[(&str, &str)]) -> Result<Option<Canary>, Vec<Invalid>> {
    let ing = with(ing_path("ns", "c", "a.com", "/", "s"), annos);
    parse(&Annotations::new(&ing, "cpaas.io"))
}

fn services(rule: &RuleObject) -> Vec<(String, String, i32, Option<i32>)> {
    let sg = rule.spec.service_group.as_ref().unwrap();
    sg.services.iter().map(|s| (s.namespace.clone(), s.name.clone(), s.port, s.weight)).collect()
}

fn dslx(rule: &RuleObject) -> Value {
    js(rule.spec.dslx.as_ref().unwrap())
}

#[test]
fn parse_good_values() {
    assert_eq!(parsed(&[]), Ok(None));
    assert_eq!(parsed(&[(CANARY, "false"), (WEIGHT, "junk")]), Ok(None), "not a canary: the rest is ignored");
    let c = parsed(&[(CANARY, "True"), (WEIGHT, "20")]).unwrap().unwrap();
    assert_eq!(c, Canary { header: None, cookie: None, weight: 20, total: 100 });
    let c =
        parsed(&[(CANARY, "true"), (WEIGHT, "5"), (WEIGHT_TOTAL, "1000"), (BY_HEADER, "X-Canary")]).unwrap().unwrap();
    assert_eq!((c.weight, c.total), (5, 1000));
    assert_eq!(c.header, Some(("X-Canary".into(), HeaderMatch::AlwaysNever)));
    let c = parsed(&[(CANARY, "true"), (BY_HEADER, "x-v"), (BY_HEADER_VALUE, "blue"), (BY_HEADER_PATTERN, "^b")]);
    assert_eq!(c.unwrap().unwrap().header, Some(("x-v".into(), HeaderMatch::Value("blue".into()))), "value wins");
    let c = parsed(&[(CANARY, "true"), (BY_HEADER, "x-v"), (BY_HEADER_PATTERN, "^(b|g)")]);
    assert_eq!(c.unwrap().unwrap().header, Some(("x-v".into(), HeaderMatch::Pattern("^(b|g)".into()))));
    let c = parsed(&[(CANARY, "true"), (BY_COOKIE, "canary_c")]).unwrap().unwrap();
    assert_eq!(c.cookie.as_deref(), Some("canary_c"));
    assert_eq!(c.weight, 0);
    assert!(parsed(&[(CANARY, "true"), (WEIGHT, "100")]).is_ok());
    assert!(parsed(&[(CANARY, "true"), (WEIGHT, "0")]).is_ok());
}

#[test]
fn parse_bad_values() {
    let bad = |annos: &[(&str, &str)]| parsed(annos).unwrap_err();
    assert_eq!(bad(&[(CANARY, "yes")])[0].key, CANARY);
    for (k, v) in [
        (WEIGHT, "x"),
        (WEIGHT, "-1"),
        (WEIGHT, "101"),
        (WEIGHT, "2.5"),
        (WEIGHT_TOTAL, "0"),
        (WEIGHT_TOTAL, "abc"),
        (WEIGHT_TOTAL, "2000000"),
        (BY_HEADER, "X Canary"),
        (BY_HEADER, "x:y"),
        (BY_COOKIE, "a;b"),
        (BY_COOKIE, "a=b"),
        (BY_HEADER_VALUE, "v"),
        (BY_HEADER_PATTERN, "p"),
    ] {
        let e = bad(&[(CANARY, "true"), (k, v)]);
        assert_eq!(e.len(), 1, "{k}={v}: {e:?}");
        assert_eq!((e[0].key.as_str(), e[0].value.as_str()), (k, v));
        assert!(e[0].message("x").contains(&format!("{v:?}")), "{}", e[0].message("x"));
    }
    let e = bad(&[(CANARY, "true"), (BY_HEADER, "h"), (BY_HEADER_PATTERN, "(a")]);
    assert_eq!(e[0].key, BY_HEADER_PATTERN);
    assert!(e[0].problem.contains("PCRE"), "{}", e[0].problem);
    let e = bad(&[(CANARY, "true"), (BY_HEADER, "h"), (BY_HEADER_VALUE, "a\nb")]);
    assert_eq!(e[0].key, BY_HEADER_VALUE);
    // weight above a custom total, several problems at once.
    let e = bad(&[(CANARY, "true"), (WEIGHT, "60"), (WEIGHT_TOTAL, "50"), (BY_COOKIE, "a b")]);
    assert_eq!(e.len(), 2, "{e:?}");
}

#[test]
fn percent_keeps_non_zero_shares() {
    assert_eq!(percent(20, 100), (80, 20));
    assert_eq!(percent(0, 100), (100, 0));
    assert_eq!(percent(100, 100), (0, 100));
    assert_eq!(percent(1, 1000), (99, 1), "0.1% rounds up to 1%");
    assert_eq!(percent(999, 1000), (1, 99), "99.9% keeps 1% for main");
    assert_eq!(percent(1, 3), (67, 33));
}

fn world(ings: Vec<Ingress>) -> World {
    let mut w = World { ingresses: ings, ..Default::default() };
    w.frontends = vec![frontend("cpaas-system", "alb-dev-00080", 80, "http", &[])];
    w
}

#[test]
fn weight_splits_the_main_rule() {
    let main = ing_path("ns1", "main", "a.com", "/app", "svc-main");
    let can = with(ing_path("ns1", "can", "A.com", "/app", "svc-can"), &[(CANARY, "true"), (WEIGHT, "20")]);
    let w = world(vec![main.clone(), can.clone()]);
    let exp = expected(&cfg(), &w.world(), &main);
    assert!(exp.warnings.is_empty(), "{:?}", exp.warnings);
    assert_eq!(exp.rules.len(), 1);
    assert_eq!(
        services(&exp.rules[0]),
        vec![("ns1".into(), "svc-main".into(), 80, Some(80)), ("ns1".into(), "svc-can".into(), 80, Some(20))]
    );
    // The canary Ingress itself: no Frontends, no Rules, no warnings.
    let own = expected(&cfg(), &w.world(), &can);
    assert!(own.rules.is_empty() && own.frontends.is_empty() && own.warnings.is_empty(), "{:?}", own.warnings);
    // Weight 0: the main Rule is untouched.
    let can0 = with(ing_path("ns1", "can", "a.com", "/app", "svc-can"), &[(CANARY, "true"), (WEIGHT, "0")]);
    let w0 = world(vec![main.clone(), can0]);
    assert_eq!(services(&expected(&cfg(), &w0.world(), &main).rules[0]).len(), 1);
}

#[test]
fn header_and_cookie_rules_rank_above_main() {
    let main = ing_path("ns1", "main", "a.com", "/app", "svc-main");
    let can = with(
        ing_path("ns2", "can", "a.com", "/app", "svc-can"),
        &[(CANARY, "true"), (BY_HEADER, "X-Canary"), (BY_COOKIE, "canary"), (WEIGHT, "10")],
    );
    let w = world(vec![main.clone(), can]);
    let exp = expected(&cfg(), &w.world(), &main);
    assert!(exp.warnings.is_empty(), "{:?}", exp.warnings);
    assert_eq!(exp.rules.len(), 5, "main + header always/never + cookie always/never");
    let base = exp.rules[0].clone();
    let by_tag = |tag: &str| {
        exp.rules
            .iter()
            .find(|r| r.metadata.annotations.as_ref().unwrap()["alb2.cpaas.io/source-ingress-path-index"] == tag)
            .unwrap_or_else(|| panic!("no rule {tag}"))
    };
    let always = by_tag("0-canary-header-always");
    let never = by_tag("0-canary-header-never");
    let c_always = by_tag("0-canary-cookie-always");
    let c_never = by_tag("0-canary-cookie-never");
    let can_only = vec![("ns2".to_string(), "svc-can".to_string(), 80, Some(100))];
    let main_only = vec![("ns1".to_string(), "svc-main".to_string(), 80, Some(100))];
    assert_eq!(services(always), can_only);
    assert_eq!(services(never), main_only, "never → main without the weight split");
    assert_eq!(services(c_always), can_only);
    assert_eq!(services(c_never), main_only);
    assert_eq!(services(&base).len(), 2, "main Rule carries the weights");
    let mut want = dslx(&base);
    want.as_array_mut().unwrap().extend([
        json!({"type": "HEADER", "key": "X-Canary", "values": [["EXIST"]]}),
        json!({"type": "HEADER", "key": "X-Canary", "values": [["EQ", "always"]]}),
    ]);
    assert_eq!(dslx(always), want);
    let mut want = dslx(&base);
    want.as_array_mut().unwrap().push(json!({"type": "COOKIE", "key": "canary", "values": [["EQ", "never"]]}));
    assert_eq!(dslx(c_never), want);
    // Ranking: same priority; header > cookie > main by complexity.
    let cx = |r: &RuleObject| crate::compile::dslx::complexity(&r.spec.dslx.as_ref().unwrap().get().unwrap());
    assert!(exp.rules.iter().all(|r| r.spec.priority == base.spec.priority));
    assert!(cx(always) > cx(c_always) && cx(c_always) > cx(&base));
    assert_eq!(cx(always), cx(never));
    // Names are unique and every variant keeps the main Ingress as its source.
    let names: BTreeSet<_> = exp.rules.iter().map(|r| r.metadata.name.clone().unwrap()).collect();
    assert_eq!(names.len(), 5);
    assert!(exp.rules.iter().all(|r| r.spec.source.as_ref().unwrap().name == "main"));
    assert!(always.spec.dsl.contains("HEADER X-Canary"), "{}", always.spec.dsl);
    // The controller's retry names (on a name conflict) follow the same scheme.
    let ft = "alb-dev-00080";
    assert_eq!(rule_name_for(ft, "ns1", "main", 0, "0-canary-header-always", 0), always.metadata.name);
    assert_eq!(rule_name_for(ft, "ns1", "main", 0, "0", 0), base.metadata.name);
    assert_ne!(rule_name_for(ft, "ns1", "main", 0, "0-canary-header-always", 1), always.metadata.name);
    assert_eq!(rule_name_for(ft, "ns1", "main", 0, "0-other", 0), None);
    assert_eq!(rule_name_for(ft, "ns1", "main", 0, "x", 0), None);
    // The plan converges: identities are distinct.
    let p = super::super::plan(&cfg(), &exp, &[], &w.frontends);
    assert_eq!(p.create_rules.len(), 5);
}

#[test]
fn header_value_and_pattern() {
    let main = ing_path("ns1", "main", "a.com", "/", "svc-main");
    let can = with(
        ing_path("ns1", "can", "a.com", "/", "svc-can"),
        &[(CANARY, "true"), (BY_HEADER, "x-v"), (BY_HEADER_VALUE, "blue")],
    );
    let exp = expected(&cfg(), &world(vec![main.clone(), can]).world(), &main);
    assert_eq!(exp.rules.len(), 2, "value: no `never` Rule");
    assert_eq!(dslx(&exp.rules[1]).as_array().unwrap().last().unwrap()["values"], json!([["EQ", "blue"]]));
    assert_eq!(services(&exp.rules[0]).len(), 1, "no weight");
    let can = with(
        ing_path("ns1", "can", "a.com", "/", "svc-can"),
        &[(CANARY, "true"), (BY_HEADER, "x-v"), (BY_HEADER_PATTERN, "^(blue|green)$")],
    );
    let exp = expected(&cfg(), &world(vec![main.clone(), can]).world(), &main);
    assert_eq!(exp.rules.len(), 2);
    assert_eq!(dslx(&exp.rules[1]).as_array().unwrap().last().unwrap()["values"], json!([["REGEX", "^(blue|green)$"]]));
    assert!(crate::compile::dslx::validate(&exp.rules[1].spec.dslx.as_ref().unwrap().get().unwrap()).is_empty());
}

#[test]
fn canary_problems_are_warnings_on_the_canary() {
    let main = ing_path("ns1", "main", "a.com", "/app", "svc-main");
    // No main for /other, a bad weight on another canary, a second canary for /app.
    let lonely = with(ing_path("ns1", "c-lonely", "a.com", "/other", "svc-can"), &[(CANARY, "true"), (WEIGHT, "50")]);
    let broken = with(ing_path("ns1", "c-broken", "a.com", "/app", "svc-can"), &[(CANARY, "true"), (WEIGHT, "x")]);
    let first = with(ing_path("ns1", "c-first", "a.com", "/app", "svc-1"), &[(CANARY, "true"), (WEIGHT, "30")]);
    let second = with(ing_path("ns1", "c-second", "a.com", "/app", "svc-2"), &[(CANARY, "true"), (WEIGHT, "60")]);
    let w = world(vec![main.clone(), lonely.clone(), broken.clone(), first.clone(), second.clone()]);
    let (c, ww) = (cfg(), w.world());
    let reasons = |i: &Ingress| expected(&c, &ww, i).warnings.iter().map(|w| w.reason.clone()).collect::<Vec<_>>();
    assert_eq!(reasons(&lonely), ["CanaryWithoutMain"]);
    let broken_w = expected(&c, &ww, &broken).warnings;
    assert_eq!(broken_w.len(), 1);
    assert_eq!(broken_w[0].reason, "InvalidAnnotation");
    assert!(broken_w[0].message.contains("canary-weight") && broken_w[0].message.contains("routes nothing"));
    assert_eq!(reasons(&first), Vec::<String>::new());
    assert_eq!(reasons(&second), ["CanaryConflict"]);
    // The main Rule gets the first valid canary only.
    let exp = expected(&c, &ww, &main);
    assert!(exp.warnings.is_empty());
    assert_eq!(services(&exp.rules[0])[1], ("ns1".into(), "svc-1".into(), 80, Some(30)));
    // An invalid `canary` value: no Rules at all (neither canary nor ordinary).
    let odd = with(ing_path("ns1", "odd", "b.com", "/", "svc"), &[(CANARY, "maybe")]);
    let exp = expected(&c, &ww, &odd);
    assert!(exp.rules.is_empty() && exp.frontends.is_empty());
    assert_eq!(exp.warnings[0].reason, "InvalidAnnotation");
    // A named port that does not resolve.
    let mut named = ing_path("ns1", "c-named", "a.com", "/app", "svc-x");
    named.spec.as_mut().unwrap().rules.as_mut().unwrap()[0].http.as_mut().unwrap().paths[0].backend =
        serde_json::from_value(json!({"service": {"name": "svc-x", "port": {"name": "web"}}})).unwrap();
    let named = with(named, &[(CANARY, "true")]);
    assert_eq!(reasons(&named), ["InvalidBackend"]);
}

#[test]
fn named_canary_port_resolves_and_standalone_translation() {
    let main = ing_path("ns1", "main", "a.com", "/app", "svc-main");
    let mut can = ing_path("ns1", "can", "a.com", "/app", "svc-can");
    can.spec.as_mut().unwrap().rules.as_mut().unwrap()[0].http.as_mut().unwrap().paths[0].backend =
        serde_json::from_value(json!({"service": {"name": "svc-can", "port": {"name": "web"}}})).unwrap();
    let can = with(can, &[(CANARY, "true"), (WEIGHT, "25"), (BY_COOKIE, "ck")]);
    let mut w = world(vec![main, can]);
    w.services = vec![service("ns1", "svc-can", &[("web", 8080)])];
    let (_, rules, warnings) = translate_all(&cfg(), &w.world());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(rules.len(), 3);
    assert_eq!(services(&rules[0])[1], ("ns1".into(), "svc-can".into(), 8080, Some(25)));
}

#[test]
fn canary_of_another_class_is_ignored() {
    let main = ing_path("ns1", "main", "a.com", "/app", "svc-main");
    let can = with(
        ing_path("ns1", "can", "a.com", "/app", "svc-can"),
        &[(CANARY, "true"), (WEIGHT, "50"), ("kubernetes.io/ingress.class", "nginx")],
    );
    let exp = expected(&cfg(), &world(vec![main.clone(), can]).world(), &main);
    assert_eq!(services(&exp.rules[0]).len(), 1);
}

#[test]
fn every_key_is_documented() {
    let doc = include_str!("../../docs/annotations.md");
    for key in KEYS.iter().chain(super::super::balance::KEYS) {
        let short = key.strip_prefix("nginx.ingress.kubernetes.io/").expect("an ingress-nginx key");
        assert!(doc.contains(&format!("| `{short}` |")), "{key} has no row in docs/annotations.md");
    }
}

#[test]
fn every_frontend_of_the_main_path_gets_the_canary() {
    let cfg = AlbIngressConfig { ssl_strategy: crate::ingress::SslStrategy::Both, ..cfg() };
    let main = ing_path("ns1", "main", "a.com", "/app", "svc-main");
    let can = with(
        ing_path("ns1", "can", "a.com", "/app", "svc-can"),
        &[(CANARY, "true"), (WEIGHT, "50"), (BY_COOKIE, "ck")],
    );
    let exp = expected(&cfg, &world(vec![main.clone(), can]).world(), &main);
    assert!(exp.warnings.is_empty(), "{:?}", exp.warnings);
    assert_eq!(exp.rules.len(), 6, "http and https: main + cookie always/never each");
    let fts: BTreeSet<String> =
        exp.rules.iter().map(|r| r.metadata.labels.as_ref().unwrap()["alb2.cpaas.io/frontend"].clone()).collect();
    assert_eq!(fts.len(), 2);
    let names: BTreeSet<_> = exp.rules.iter().map(|r| r.metadata.name.clone().unwrap()).collect();
    assert_eq!(names.len(), 6);
    let split = exp.rules.iter().filter(|r| services(r).len() == 2).count();
    assert_eq!(split, 2, "both main Rules carry the weights");
}
