//! The Lua data plane through real nginx, driven by policies pushed over the policy API.

use crate::harness::{get, Backend, Dataplane};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

fn group(name: &str, backends: &[(&Backend, u32)]) -> Value {
    json!({"name": name, "mode": "http", "session_affinity_policy": "", "session_affinity_attribute": "",
           "backends": backends.iter().map(|(b, w)| json!({"address": "127.0.0.1", "port": b.port, "weight": w})).collect::<Vec<_>>()})
}

fn dead_group(name: &str, ports: &[u16]) -> Value {
    json!({"name": name, "mode": "http",
           "backends": ports.iter().map(|p| json!({"address": "127.0.0.1", "port": p, "weight": 1})).collect::<Vec<_>>()})
}

fn rule(name: &str, m: Value, upstream: &str) -> Value {
    json!({"name": name, "priority": 5, "complexity": 0, "source": {"type": "rule", "namespace": "e2e", "name": name},
           "match": m, "upstream": upstream, "backend_protocol": "", "config": {}})
}

fn policy(port: u16, rules: Vec<Value>, groups: Vec<Value>) -> Value {
    json!({"version": 1, "generation": 1, "http": {port.to_string(): {"rules": rules}}, "backend_groups": groups})
}

#[test]
fn every_matcher_and_operator_routes() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let rules = vec![
        rule("host-eq", json!(["EQ", "HOST", "eq.test"]), "b"),
        rule("host-in", json!(["IN", "HOST", "in1.test", "in2.test"]), "b"),
        rule("host-wild", json!(["ENDS_WITH", "HOST", "*.wild.test"]), "b"),
        rule("url-sw", json!(["STARTS_WITH", "URL", "/sw/"]), "b"),
        rule("url-re", json!(["REGEX", "URL", "/re/[0-9]+$"]), "b"),
        rule("method", json!(["AND", ["EQ", "METHOD", "DELETE"], ["EQ", "URL", "/m"]]), "b"),
        rule("hdr-eq", json!(["EQ", "HEADER", "x-user", "alice"]), "b"),
        rule("hdr-exist", json!(["EXIST", "HEADER", "x_flag"]), "b"),
        rule("param", json!(["IN", "PARAM", "v", "2", "3"]), "b"),
        rule("cookie", json!(["EQ", "COOKIE", "session", "s1"]), "b"),
        rule("src-range", json!(["RANGE", "SRC_IP", "10.1.0.0", "10.1.255.255"]), "b"),
        rule("src-v6", json!(["RANGE", "SRC_IP", "fd00::1", "fd00::ff"]), "b"),
        rule("num-range", json!(["RANGE", "HEADER", "x-n", "10", "200"]), "b"),
        rule("str-range", json!(["RANGE", "HEADER", "x-s", "b", "d"]), "b"),
        rule("or", json!(["OR", ["EQ", "URL", "/or1"], ["EQ", "URL", "/or2"]]), "b"),
        rule("default", json!(["STARTS_WITH", "URL", "/"]), "a"),
    ];
    dp.push(&policy(port, rules, vec![group("a", &[(&a, 1)]), group("b", &[(&b, 1)])]));
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("GET", "/", vec![("Host", "eq.test")], "b"),
        ("GET", "/", vec![("Host", "EQ.test:8080")], "b"), // $host is lower-cased, port cut
        ("GET", "/", vec![("Host", "eq.test.x")], "a"),
        ("GET", "/", vec![("Host", "in2.test")], "b"),
        ("GET", "/", vec![("Host", "x.wild.test")], "b"),
        ("GET", "/", vec![("Host", "x.y.wild.test")], "a"), // one label only
        ("GET", "/", vec![("Host", "wild.test")], "a"),
        ("GET", "/sw/x", vec![], "b"),
        ("GET", "/sw", vec![], "a"),
        ("GET", "/pre/re/123", vec![], "b"), // unanchored search
        ("GET", "/re/12a", vec![], "a"),
        ("DELETE", "/m", vec![], "b"),
        ("GET", "/m", vec![], "a"),
        ("GET", "/", vec![("X-User", "alice")], "b"),
        ("GET", "/", vec![("X-User", "bob")], "a"),
        ("GET", "/", vec![("X-Flag", "")], "b"), // empty value counts as present
        ("GET", "/?v=3", vec![], "b"),
        ("GET", "/?v=4", vec![], "a"),
        ("GET", "/", vec![("Cookie", "a=1; session=s1")], "b"),
        ("GET", "/", vec![("X-Real-IP", "10.1.2.3")], "b"),
        ("GET", "/", vec![("X-Forwarded-For", "10.1.9.9, 1.2.3.4")], "b"),
        ("GET", "/", vec![("X-Real-IP", "10.2.0.1"), ("X-Forwarded-For", "10.1.9.9")], "a"), // X-Real-IP first
        ("GET", "/", vec![("X-Real-IP", "fd00::10")], "b"),
        ("GET", "/", vec![("X-Real-IP", "fd00::100")], "a"),
        ("GET", "/", vec![("X-N", "150")], "b"), // numeric, "150" > "10" and < "200"
        ("GET", "/", vec![("X-N", "3")], "a"),   // as a string "3" > "200"; numerically out of range
        ("GET", "/", vec![("X-S", "c")], "b"),
        ("GET", "/", vec![("X-S", "e")], "a"),
        ("GET", "/or2", vec![], "b"),
    ];
    for (method, path, headers, want) in cases {
        let r = crate::harness::request(port, method, path, &headers, b"");
        assert_eq!(r.status, 200, "{method} {path} {headers:?}: {r:?}");
        assert_eq!(r.backend(), want, "{method} {path} {headers:?}");
    }
}

#[test]
fn first_match_in_policy_order() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let (a, b, c) = (Backend::start("a"), Backend::start("b"), Backend::start("c"));
    let mk = |n: &str, m: Value, up: &str, idx: Value| {
        let mut r = rule(n, m, up);
        r["index"] = idx;
        r
    };
    // Order is the array order; indexes must never change which rule wins.
    let rules = vec![
        mk(
            "r1",
            json!(["AND", ["EQ", "HOST", "o.test"], ["STARTS_WITH", "URL", "/a/b"]]),
            "a",
            json!({"hosts": ["o.test"], "prefixes": ["/a/b"]}),
        ),
        mk("r2", json!(["STARTS_WITH", "URL", "/a"]), "b", json!({"prefixes": ["/a"]})),
        mk(
            "r3",
            json!(["AND", ["EQ", "HOST", "o.test"], ["STARTS_WITH", "URL", "/a"]]),
            "c",
            json!({"hosts": ["o.test"], "prefixes": ["/a"]}),
        ),
        mk("r4", json!(["ENDS_WITH", "HOST", "*.o.test"]), "c", json!({"wildcard_hosts": ["*.o.test"]})),
        mk("r5", json!(["EQ", "URL", "/x"]), "a", json!({"paths": ["/x"]})),
    ];
    dp.push(&policy(port, rules, vec![group("a", &[(&a, 1)]), group("b", &[(&b, 1)]), group("c", &[(&c, 1)])]));
    let host = |h: &'static str| vec![("Host", h)];
    assert_eq!(get(port, "/a/b/c", &host("o.test")).backend(), "a");
    assert_eq!(get(port, "/a/c", &host("o.test")).backend(), "b"); // r2 is before r3
    assert_eq!(get(port, "/x", &host("w.o.test")).backend(), "c"); // r4 before r5
    assert_eq!(get(port, "/x", &host("o.test")).backend(), "a");
    let r = get(port, "/zzz", &host("o.test"));
    assert_eq!((r.status, r.reason()), (404, "InvalidUpstream : no rule match"));
    assert_eq!(r.body, "", "ALB errors have an empty body");
}

#[test]
fn error_reasons() {
    let dp = Dataplane::start(2);
    let (port, other) = (dp.http_ports[0], dp.http_ports[1]);
    let r = get(port, "/", &[]);
    assert_eq!((r.status, r.reason()), (404, "InvalidUpstream : no policy"));
    let a = Backend::start("a");
    let dead = crate::harness::free_port();
    let rules = vec![
        rule("no-upstream", json!(["EQ", "URL", "/nu"]), "x"),
        rule("unknown-group", json!(["EQ", "URL", "/ug"]), "missing"),
        rule("empty-group", json!(["EQ", "URL", "/eg"]), "empty"),
        rule("dead", json!(["EQ", "URL", "/dead"]), "dead"),
        rule("ok", json!(["STARTS_WITH", "URL", "/"]), "a"),
    ];
    let mut p = policy(
        port,
        rules,
        vec![group("a", &[(&a, 1)]), dead_group("dead", &[dead]), json!({"name": "empty", "backends": []})],
    );
    p["http"]["1"] = json!({"rules": []}); // a port nginx does not listen on: harmless
    p["http"][port.to_string()]["rules"][0].as_object_mut().unwrap().remove("upstream");
    dp.push(&p);
    let r = get(other, "/", &[]);
    assert_eq!((r.status, r.reason()), (404, format!("InvalidUpstream : no http_tcp_{other}").as_str()));
    let r = get(port, "/nu", &[]);
    assert_eq!((r.status, r.reason()), (404, "InvalidUpstream : alb upstream not found"));
    let r = get(port, "/ug", &[]);
    assert_eq!((r.status, r.reason()), (500, "InvalidBalancer : no balancer found for missing"));
    let r = get(port, "/eg", &[]);
    assert_eq!((r.status, r.reason()), (500, "InvalidBalancer : no balancer found for empty"));
    let r = get(port, "/dead", &[]);
    assert_eq!(r.status, 502);
    assert_eq!(r.body, "X-Error: 502\n");
    let r = get(port, "/status/404", &[]);
    assert_eq!(r.status, 404);
    assert!(r.reason().starts_with("BackendError : read "), "{r:?}");
    assert!(r.body.contains("\"backend\":\"a\""), "backend body passes through: {}", r.body);
    // the reason header is for backend errors only (nginx.conf's $alb_backend_error map since `location /` has
    // no Lua header filter)
    let r = get(port, "/status/200", &[]);
    assert_eq!(r.status, 200);
    assert!(r.header("x-alb-err-reason").is_none(), "{r:?}");
    p["http"][other.to_string()] = json!({"rules": []});
    dp.push(&p);
    let r = get(other, "/", &[]);
    assert_eq!((r.status, r.reason()), (404, "InvalidUpstream : empty policy"));
}

#[test]
fn weighted_round_robin_and_failover() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let (a, b, c) = (Backend::start("a"), Backend::start("b"), Backend::start("c"));
    let dead = crate::harness::free_port();
    let mut g = group("g", &[(&a, 10), (&b, 20), (&c, 30)]);
    let mut f = group("f", &[(&a, 1)]);
    f["backends"].as_array_mut().unwrap().insert(0, json!({"address": "127.0.0.1", "port": dead, "weight": 5}));
    g["name"] = json!("g");
    dp.push(&policy(
        port,
        vec![rule("f", json!(["EQ", "URL", "/f"]), "f"), rule("g", json!(["STARTS_WITH", "URL", "/"]), "g")],
        vec![g, f],
    ));
    let mut conn = crate::harness::Conn::open(port).unwrap();
    let mut count: HashMap<String, u32> = HashMap::new();
    for _ in 0..600 {
        let r = conn.send("GET", "/", &[], b"").unwrap();
        *count.entry(r.backend().to_string()).or_default() += 1;
    }
    // Smooth WRR per worker: exact 1:2:3 per cycle, whichever worker serves.
    for (name, want) in [("a", 100), ("b", 200), ("c", 300)] {
        let got = count.get(name).copied().unwrap_or(0);
        assert!((got as i32 - want).abs() <= 12, "backend {name}: {got} of 600, want ~{want}: {count:?}");
    }
    for _ in 0..50 {
        let r = conn.send("GET", "/f", &[], b"").unwrap();
        assert_eq!((r.status, r.backend()), (200, "a"), "dead endpoint must fail over: {r:?}");
    }
}

#[test]
fn policy_api_refuses_bad_pushes_and_keeps_serving() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let a = Backend::start("a");
    let good = policy(port, vec![rule("ok", json!(["STARTS_WITH", "URL", "/"]), "a")], vec![group("a", &[(&a, 1)])]);
    let digest = dp.push(&good);
    let body = serde_json::to_vec(&good).unwrap();
    let token = dp.token.clone();
    assert_eq!(dp.api("PUT", "/policy", None, &body).status, 401);
    assert_eq!(dp.api("PUT", "/policy", Some("wrong"), &body).status, 401);
    assert_eq!(dp.api("GET", "/status", None, b"").status, 401);
    let r = dp.api("PUT", "/policy", Some(&token), b"{not json");
    assert_eq!(r.status, 400, "{r:?}");
    let mut bad_version = good.clone();
    bad_version["version"] = json!(2);
    let r = dp.api("PUT", "/policy", Some(&token), &serde_json::to_vec(&bad_version).unwrap());
    assert_eq!(r.status, 400);
    assert!(r.body.contains("version"), "{}", r.body);
    let mut bad_regex = good.clone();
    bad_regex["http"][port.to_string()]["rules"][0]["match"] = json!(["REGEX", "URL", "(unclosed"]);
    let r = dp.api("PUT", "/policy", Some(&token), &serde_json::to_vec(&bad_regex).unwrap());
    assert_eq!(r.status, 400);
    assert!(r.body.contains("ok"), "error names the rule: {}", r.body);
    let mut bad_arity = good.clone();
    bad_arity["http"][port.to_string()]["rules"][0]["match"] = json!(["EQ", "URL"]);
    assert_eq!(dp.api("PUT", "/policy", Some(&token), &serde_json::to_vec(&bad_arity).unwrap()).status, 400);
    let huge = vec![b' '; 65 << 20];
    let r = dp.api("PUT", "/policy", Some(&token), &huge);
    assert_eq!(r.status, 413);
    // Still the first policy, still serving.
    assert_eq!(dp.status()["stored"]["digest"], digest.as_str());
    assert_eq!(get(port, "/x", &[]).backend(), "a");
    assert_eq!(dp.api("GET", "/healthz", None, b"").status, 200);
}

/// The Lua side of the contract: the shared fixtures are accepted or refused as e2e/fixtures/policy/README.md says.
#[test]
fn shared_policy_fixtures() {
    let dp = Dataplane::start(1);
    let dir = crate::harness::repo_dir().join("e2e/fixtures/policy");
    let token = dp.token.clone();
    for (file, status, needle) in [
        ("basic.json", 200, "eba0ac7ba03ffe8f6700a23935a969ba6ac0683f"),
        ("empty.json", 200, "digest"),
        ("empty-port.json", 200, "digest"),
        ("features.json", 200, "digest"),
        ("invalid-regex.json", 400, "port 80 rule 4 (\\\"regex-or\\\")"),
        ("invalid-expr.json", 400, "wrong number of operands"),
        ("bad-version.json", 400, "unsupported policy version 2"),
    ] {
        let body = std::fs::read(dir.join(file)).unwrap();
        let r = dp.api("PUT", "/policy", Some(&token), &body);
        assert_eq!(r.status, status, "{file}: {}", r.body);
        assert!(r.body.contains(needle), "{file}: {} lacks {needle}", r.body);
    }
}

/// Hosts and paths the random Rules and requests of the index tests draw from.
const RANDOM_HOSTS: [&str; 6] = ["a.test", "b.test", "x.a.test", "y.a.test", "deep.x.a.test", "c.test"];
const RANDOM_PATHS: [&str; 8] = ["/", "/api", "/api/v1", "/api/v1/items", "/static", "/s", "/login", "/x/1"];

/// Frontend `ft` on `port`, the one the random Rules belong to.
fn random_rules_frontend(port: u16) -> String {
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Frontend\nmetadata: {{name: ft, namespace: default}}\nspec: {{port: {port}, protocol: http}}\n"
    )
}

/// A random Rule manifest of Frontend `ft` (host, path and header terms over `hosts` and `paths`) and whether it
/// has header terms only (the router files it under the header's values).
fn random_rule(rng: &mut rand::rngs::StdRng, name: &str, hosts: &[&str], paths: &[&str]) -> (String, bool) {
    use rand::Rng;
    let mut terms = Vec::new();
    match rng.random_range(0..4) {
        0 => terms.push(format!("{{type: HOST, values: [[EQ, {}]]}}", hosts[rng.random_range(0..hosts.len())])),
        1 => terms.push("{type: HOST, values: [[ENDS_WITH, \"*.a.test\"]]}".to_string()),
        2 => terms.push(format!(
            "{{type: HOST, values: [[IN, {}, {}]]}}",
            hosts[rng.random_range(0..hosts.len())],
            hosts[rng.random_range(0..hosts.len())]
        )),
        _ => {}
    }
    let p = paths[rng.random_range(0..paths.len())];
    match rng.random_range(0..5) {
        0 => terms.push(format!("{{type: URL, values: [[STARTS_WITH, \"{p}\"]]}}")),
        1 => terms.push(format!("{{type: URL, values: [[EQ, \"{p}\"]]}}")),
        2 => terms.push(format!("{{type: URL, values: [[REGEX, \"^{p}/[0-9]+\"]]}}")),
        3 => terms.push(format!("{{type: URL, values: [[STARTS_WITH, \"{p}\"], [EQ, /login]]}}")),
        _ => {}
    }
    // header terms, also on rules without host or path (the router files those under the header's values)
    let mut priority = rng.random_range(1..4);
    let header_only = rng.random_bool(0.15);
    if header_only {
        terms.clear();
        priority = 0; // ahead of the others, so that requests reach them
    }
    if terms.is_empty() || rng.random_bool(0.2) {
        let key = ["x-env", "X_Env"][rng.random_range(0..2)];
        let values = ["[[EQ, canary]]", "[[IN, canary, blue]]", "[[EQ, blue], [EQ, green]]", "[[EXIST]]"];
        terms.push(format!("{{type: HEADER, key: {key}, values: {}}}", values[rng.random_range(0..values.len())]));
    }
    let doc = format!(
        "apiVersion: crd.alauda.io/v1\nkind: Rule\nmetadata: {{name: {name}, namespace: default, labels: {{alb2.cpaas.io/frontend: ft}}}}\nspec:\n  priority: {}\n  dslx: [{}]\n",
        priority,
        terms.join(", ")
    );
    (doc, header_only)
}

/// `alb policy --manifests` over `docs` (written to `dir/all.yaml`): the policy the real compiler makes.
fn alb_policy(dir: &std::path::Path, docs: &[String]) -> Value {
    std::fs::write(dir.join("all.yaml"), docs.join("---\n")).unwrap();
    let out = std::process::Command::new(crate::harness::alb_bin())
        .args(["policy", "--manifests"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `n` random `/debug/match` queries on `port` over `hosts` and `paths`, half of them with an `x-env` header.
fn random_queries(rng: &mut rand::rngs::StdRng, port: u16, n: usize, hosts: &[&str], paths: &[&str]) -> Vec<Value> {
    use rand::Rng;
    let mut queries = Vec::new();
    for _ in 0..n {
        let p = paths[rng.random_range(0..paths.len())];
        let suffix = ["", "/", "/7", "/7/x", "x"][rng.random_range(0..5)];
        let mut q =
            json!({"port": port, "host": hosts[rng.random_range(0..hosts.len())], "uri": format!("{p}{suffix}")});
        if rng.random_bool(0.5) {
            let v = ["canary", "blue", "green", "red"][rng.random_range(0..4)];
            q["headers"] = json!({ "x-env": v });
        }
        queries.push(q);
    }
    queries
}

/// Index soundness end to end: random Rules compiled by the real compiler (`alb policy`), pushed to nginx, then
/// many random requests evaluated by the worker's index and by a linear first-match scan: always the same rule.
#[test]
fn indexed_router_equals_first_match_scan() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xa1b);
    let (hosts, paths) = (RANDOM_HOSTS, RANDOM_PATHS);
    let dir = tempfile::tempdir().unwrap();
    let port: u16 = 18080; // only a key in the policy: /debug/match takes the port as a parameter
    let mut docs = vec![random_rules_frontend(port)];
    let mut header_only = Vec::new();
    for i in 0..400 {
        let (doc, by_header) = random_rule(&mut rng, &format!("r{i}"), &hosts, &paths);
        if by_header {
            header_only.push(format!("r{i}"));
        }
        docs.push(doc);
    }
    let policy = alb_policy(dir.path(), &docs);
    let rules = policy["http"][port.to_string()]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 400);
    assert!(rules.iter().filter(|r| r.get("index").is_some()).count() > 250, "most rules are indexed");

    let dp = Dataplane::start(1);
    dp.push(&policy);
    let queries = random_queries(&mut rng, port, 3000, &hosts, &paths);
    let r = dp.api("POST", "/debug/match", Some(&dp.token.clone()), &serde_json::to_vec(&queries).unwrap());
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), queries.len());
    let (mut matched, mut by_header) = (0, 0);
    for (q, res) in queries.iter().zip(&results) {
        assert_eq!(res["same"], true, "index and linear scan disagree for {q}: {res}");
        if res["index"].get("rule").is_some() {
            matched += 1;
        }
        if res["index"]["name"].as_str().is_some_and(|n| header_only.iter().any(|h| h == n)) {
            by_header += 1;
        }
    }
    assert!(by_header > 100, "requests reach the rules filed under header values: {by_header}");
    assert!(matched > 1000, "the random requests mostly match something: {matched}");
}

/// A delta from `base` (stored with digest `base_digest`) to `next` as a client may send it: every rule the base has
/// on that port by its key, the others whole; every group of `next` whole.
fn delta_by_keys(base: &Value, next: &Value, base_digest: &str, digest: &str) -> Value {
    let mut http = serde_json::Map::new();
    for (port, p) in next["http"].as_object().unwrap() {
        let keys: std::collections::HashSet<&str> =
            base["http"][port]["rules"].as_array().into_iter().flatten().filter_map(|r| r["key"].as_str()).collect();
        let items: Vec<Value> = p["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| match r["key"].as_str() {
                Some(k) if keys.contains(k) => json!(k),
                _ => r.clone(),
            })
            .collect();
        http.insert(port.clone(), json!(items));
    }
    let names = |p: &Value| -> Vec<String> {
        p["backend_groups"].as_array().into_iter().flatten().map(|g| g["name"].as_str().unwrap().to_string()).collect()
    };
    let next_groups = names(next);
    let removed: Vec<String> = names(base).into_iter().filter(|n| !next_groups.contains(n)).collect();
    json!({"version": 1, "generation": next["generation"], "base": base_digest, "digest": digest, "http": http,
        "backend_groups": next["backend_groups"], "backend_groups_removed": removed})
}

/// The policy without rule keys: a data plane given it compiles and files every rule again (a whole build).
fn without_keys(p: &Value) -> Value {
    let mut p = p.clone();
    for (_, port) in p["http"].as_object_mut().unwrap() {
        for r in port["rules"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("key");
        }
    }
    p
}

/// The index a worker updates in place (alb/router.lua: kept rules stay filed, only the rules that left or came
/// are unfiled or filed) answers like an index built whole: random Rules edited, added, removed and reordered
/// over many policies, sent as deltas or whole to one data plane, and without keys (every rule filed again) to a
/// second one; random requests get the same rule from both, and from a linear scan. Then 60 rules inserted one
/// per policy into the same gap of the order, until no room is left there and the worker builds the port whole.
#[test]
fn router_updated_in_place_equals_a_whole_build() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x1dc);
    let (hosts, paths) = (RANDOM_HOSTS, RANDOM_PATHS);
    let dir = tempfile::tempdir().unwrap();
    let port: u16 = 18080;
    let frontend = random_rules_frontend(port);
    let mut rules: Vec<(String, String)> =
        (0..300).map(|i| (format!("r{i}"), random_rule(&mut rng, &format!("r{i}"), &hosts, &paths).0)).collect();
    let mut next_name = 300;
    let (a, b) = (
        Dataplane::start_with(1, &["--nginx-log-level", "notice"], &[("ALB_LOG", "info,nginx=debug")]),
        Dataplane::start(1),
    );
    let token = a.token.clone();
    let mut base: Option<(Value, String)> = None; // what `a` holds, and its digest
    let mut deltas = 0;
    // `a` gets `p` (as a delta when it holds a base, unless its chain is full), `b` gets it without keys; then
    // both answer `n` random requests
    let mut check = |rng: &mut rand::rngs::StdRng, p: &Value, step: usize, n: usize| {
        let digest = match &base {
            Some((bp, bd)) if !step.is_multiple_of(3) => {
                let d = format!("{step:040x}");
                let r = a.api(
                    "PATCH",
                    "/policy",
                    Some(&token),
                    &serde_json::to_vec(&delta_by_keys(bp, p, bd, &d)).unwrap(),
                );
                if r.status == 200 {
                    deltas += 1;
                    a.wait_applied(&d);
                    d
                } else {
                    assert_eq!(r.status, 409, "step {step}: {}", r.body);
                    a.push(p)
                }
            }
            _ => a.push(p),
        };
        base = Some((p.clone(), digest));
        b.push(&without_keys(p));
        let queries = random_queries(rng, port, n, &hosts, &paths);
        let body = serde_json::to_vec(&queries).unwrap();
        let ra = a.api("POST", "/debug/match", Some(&token), &body).json();
        let rb = b.api("POST", "/debug/match", Some(&b.token.clone()), &body).json();
        assert_eq!(ra["index_check"][port.to_string()], "ok", "step {step}: the index differs from a whole build");
        let (ra, rb) = (ra["results"].as_array().unwrap(), rb["results"].as_array().unwrap());
        assert_eq!(ra.len(), queries.len());
        let mut matched = 0;
        for ((q, x), y) in queries.iter().zip(ra).zip(rb) {
            assert_eq!(x["same"], true, "step {step}: index and linear scan disagree for {q}: {x}");
            assert_eq!(x["index"], y["index"], "step {step}: updated index and whole build disagree for {q}");
            matched += x["index"].get("rule").is_some() as usize;
        }
        matched
    };

    let (mut matched, mut last) = (0, Value::Null);
    for step in 0..16 {
        if step > 0 {
            // 1, 3, 10 or 150 changes: edits (a new key, maybe another place in the order), removals, additions
            let changes = [1, 3, 10, 150][step % 4];
            for _ in 0..changes {
                let i = rng.random_range(0..rules.len());
                match rng.random_range(0..3) {
                    0 => {
                        let name = rules[i].0.clone();
                        rules[i].1 = random_rule(&mut rng, &name, &hosts, &paths).0;
                    }
                    1 if rules.len() > 200 => {
                        rules.swap_remove(i);
                    }
                    _ => {
                        let name = format!("r{next_name}");
                        next_name += 1;
                        rules.push((name.clone(), random_rule(&mut rng, &name, &hosts, &paths).0));
                    }
                }
            }
        }
        let mut docs = vec![frontend.clone()];
        docs.extend(rules.iter().map(|(_, d)| d.clone()));
        let mut p = alb_policy(dir.path(), &docs);
        p["generation"] = json!(step + 1);
        matched += check(&mut rng, &p, step, 600);
        last = p;
    }
    assert!(matched > 16 * 200, "the random requests mostly match something: {matched}");

    // 60 rules, one per policy, each inserted right after rule `gap` (same match, so they sort by name, and each
    // name sorts between "gap" and the one inserted before it): the room between two places halves each time
    let mut p = last;
    let list = p["http"][port.to_string()]["rules"].as_array().unwrap().clone();
    let at = list.len() / 2;
    let template = list[at].clone();
    for k in 0..60usize {
        let mut r = template.clone();
        r["name"] = json!(format!("gap-{k:02}"));
        r["key"] = json!(format!("{:016x}", 0xa000 + k));
        let rs = p["http"][port.to_string()]["rules"].as_array_mut().unwrap();
        rs.insert(at + 1, r);
        p["generation"] = json!(100 + k);
        check(&mut rng, &p, 100 + k, 40);
    }
    // a client may also reorder rules it keeps (the compiler never does: the order follows the content)
    let rs = p["http"][port.to_string()]["rules"].as_array_mut().unwrap();
    let last_at = rs.len() - 1;
    rs.swap(1, last_at);
    check(&mut rng, &p, 200, 600);
    assert!(deltas > 30, "most policies went as deltas: {deltas}");

    // both ways of committing a port ran, in each of the 2 workers: in place, and whole (the first policy, the 4
    // steps of 150 changes, the 45th or so rule in the same gap, the reordered rules)
    let logs = a.proc.logs().join("\n");
    let in_place = logs.matches("1 of 1 ports' index updated in place").count();
    let whole = logs.matches("0 of 1 ports' index updated in place").count();
    assert!(in_place > 2 * 50 && whole >= 2 * 7, "in place {in_place}, whole {whole}");
}

/// docs/policy.md "Rule keys": a rule that comes again with its key is neither validated by the policy API nor
/// compiled by the workers again; a changed rule (new key) or a rule without a key is, and routes as pushed.
#[test]
fn unchanged_rule_keys_are_not_validated_or_compiled_again() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let groups = vec![group("a", &[(&a, 1)]), group("b", &[(&b, 1)])];
    let keyed = |name: &str, prefix: &str, up: &str, key: &str| {
        let mut r = rule(name, json!(["STARTS_WITH", "URL", prefix]), up);
        r["key"] = json!(key);
        r
    };
    let put = |p: &Value| -> (u64, String) {
        let r = dp.api("PUT", "/policy", Some(&dp.token.clone()), &serde_json::to_vec(p).unwrap());
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let digest = v["digest"].as_str().unwrap().to_string();
        dp.wait_applied(&digest);
        (v["checked"].as_u64().unwrap(), digest)
    };
    let compiled = |digest: &str| -> Vec<u64> {
        let s = dp.status();
        let ws = s["workers"].as_array().unwrap();
        assert_eq!(ws.len(), 2, "{s}");
        ws.iter()
            .map(|w| {
                assert_eq!(w["digest"], digest, "{s}");
                w["compiled"].as_u64().unwrap()
            })
            .collect()
    };

    let p1 = policy(
        port,
        vec![keyed("r1", "/one", "a", "k1"), keyed("r2", "/two", "a", "k2"), keyed("r3", "/", "a", "k3")],
        groups.clone(),
    );
    let (checked, d) = put(&p1);
    assert_eq!(checked, 3, "a fresh data plane checks every rule");
    assert_eq!(compiled(&d), vec![3, 3]);
    assert_eq!(get(port, "/two", &[]).backend(), "a");

    // r2 changed (new key): only r2 is checked and compiled; it routes to its new backend, the others as before
    let p2 = policy(
        port,
        vec![keyed("r1", "/one", "a", "k1"), keyed("r2", "/two", "b", "k2b"), keyed("r3", "/", "a", "k3")],
        groups.clone(),
    );
    let (checked, d) = put(&p2);
    assert_eq!(checked, 1);
    assert_eq!(compiled(&d), vec![1, 1]);
    assert_eq!(get(port, "/two", &[]).backend(), "b");
    assert_eq!(get(port, "/one", &[]).backend(), "a");
    assert_eq!(get(port, "/else", &[]).backend(), "a");

    // a rule without a key is always checked and compiled; keyed rules moved to other positions are reused
    let p3 = policy(
        port,
        vec![
            keyed("r2", "/two", "b", "k2b"),
            rule("r0", json!(["STARTS_WITH", "URL", "/zero"]), "b"),
            keyed("r1", "/one", "a", "k1"),
            keyed("r3", "/", "a", "k3"),
        ],
        groups,
    );
    let (checked, d) = put(&p3);
    assert_eq!(checked, 1);
    assert_eq!(compiled(&d), vec![1, 1]);
    assert_eq!(get(port, "/zero", &[]).backend(), "b");
    assert_eq!(get(port, "/one", &[]).backend(), "a");
    assert_eq!(get(port, "/two", &[]).backend(), "b");

    // a bad rule with a new key is still refused, naming it; the policy in place keeps serving
    let mut bad = p3.clone();
    bad["http"][port.to_string()]["rules"][0] = keyed("r2", "/two", "b", "k2c");
    bad["http"][port.to_string()]["rules"][0]["match"] = json!(["REGEX", "URL", "(unclosed"]);
    let r = dp.api("PUT", "/policy", Some(&dp.token.clone()), &serde_json::to_vec(&bad).unwrap());
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("r2"), "{}", r.body);
    assert_eq!(dp.status()["stored"]["digest"], d.as_str());
    assert_eq!(get(port, "/two", &[]).backend(), "b");
}

/// Policy deltas (docs/policy.md "Policy deltas") through the real policy API and nginx: a delta patches what the
/// workers hold (changed rules compiled, the rest reused by key, groups replaced, added and removed), a delta whose
/// base is not the stored policy or whose chain is full is answered 409, a bad one 400 with the previous policy
/// still serving; GET /policy and /policy/deltas give the chain; workers started by a HUP (holding nothing)
/// decode the whole policy and every delta after it; a whole policy starts a new chain.
#[test]
fn policy_deltas_patch_what_the_workers_hold() {
    let dp = Dataplane::start(1);
    let port = dp.http_ports[0];
    let ps = port.to_string();
    let (a, b, c) = (Backend::start("a"), Backend::start("b"), Backend::start("c"));
    let token = dp.token.clone();
    let keyed = |name: &str, prefix: &str, up: &str, key: &str| {
        let mut r = rule(name, json!(["STARTS_WITH", "URL", prefix]), up);
        r["key"] = json!(key);
        r
    };
    let p1 = policy(
        port,
        vec![keyed("r1", "/one", "a", "k1"), keyed("r2", "/two", "a", "k2"), keyed("r3", "/", "a", "k3")],
        vec![group("a", &[(&a, 1)]), group("b", &[(&b, 1)])],
    );
    let d1 = dp.push(&p1);
    let hex = |n: u8| format!("{:040x}", n);
    let patch = |d: &Value| dp.api("PATCH", "/policy", Some(&token), &serde_json::to_vec(d).unwrap());
    let compiled = |digest: &str| -> Vec<u64> {
        let s = dp.status();
        let ws = s["workers"].as_array().unwrap();
        ws.iter()
            .map(|w| {
                assert_eq!(w["digest"], digest, "{s}");
                w["compiled"].as_u64().unwrap()
            })
            .collect()
    };

    // one rule changed: only it travels, only it is checked and compiled
    let d2 = hex(2);
    let r = patch(&json!({"version": 1, "generation": 2, "base": d1, "digest": d2,
        "http": {&ps: ["k1", keyed("r2", "/two", "b", "k2b"), "k3"]}}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["checked"], 1, "{}", r.body);
    assert_eq!(r.json()["delta"], true, "{}", r.body);
    dp.wait_applied(&d2);
    assert_eq!(compiled(&d2), vec![1, 1]);
    assert_eq!(dp.status()["stored"]["generation"], 2);
    assert_eq!(get(port, "/two", &[]).backend(), "b");
    assert_eq!(get(port, "/one", &[]).backend(), "a");
    assert_eq!(get(port, "/else", &[]).backend(), "a");

    // refused, and the policy in place keeps serving: a base that is not the stored policy (409), a key the
    // base does not have on that port, a bad rule, a bad group, a bad digest (400)
    let r = patch(&json!({"version": 1, "base": d1, "digest": hex(3), "http": {&ps: ["k1"]}}));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("is not the stored policy"), "{}", r.body);
    let r = patch(&json!({"version": 1, "base": d2, "digest": hex(3), "http": {&ps: ["k1", "k2", "k3"]}}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("key k2 is not a rule of the base"), "{}", r.body);
    let mut bad = keyed("r9", "/nine", "a", "k9");
    bad["match"] = json!(["REGEX", "URL", "(unclosed"]);
    let r = patch(&json!({"version": 1, "base": d2, "digest": hex(3), "http": {&ps: [bad, "k3"]}}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("r9"), "{}", r.body);
    let r = patch(&json!({"version": 1, "base": d2, "digest": hex(3),
        "backend_groups": [{"name": "a", "backends": [{"address": "not-an-ip", "port": 1, "weight": 1}]}]}));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = patch(&json!({"version": 1, "base": d2, "digest": "nope"}));
    assert_eq!(r.status, 400, "{}", r.body);
    for run in [json!([1, 5]), json!([0, 0]), json!([-1, 1]), json!([0, 1, 2])] {
        let r = patch(&json!({"version": 1, "base": d2, "digest": hex(3), "http": {&ps: [run]}}));
        assert_eq!(r.status, 400, "{run}: {}", r.body);
    }
    assert_eq!(dp.status()["stored"]["digest"], d2.as_str());
    assert_eq!(get(port, "/two", &[]).backend(), "b");

    // groups: "a" now points at backend c, "b" goes (its rule with it), "n" is new with a rule of its own
    let d3 = hex(3);
    let r = patch(&json!({"version": 1, "generation": 3, "base": d2, "digest": d3,
        "http": {&ps: [[0, 1], keyed("rn", "/new", "n", "kn"), [2, 1]]},
        "backend_groups": [group("a", &[(&c, 1)]), group("n", &[(&b, 1)])],
        "backend_groups_removed": ["b"]}));
    assert_eq!(r.status, 200, "{}", r.body);
    dp.wait_applied(&d3);
    assert_eq!(get(port, "/one", &[]).backend(), "c");
    assert_eq!(get(port, "/new", &[]).backend(), "b");
    assert_eq!(get(port, "/two", &[]).backend(), "c", "r2 is gone, the catch-all of group a answers");

    // the chain: the whole policy and the deltas after it
    let r = dp.api("GET", "/policy", Some(&token), b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-ALB-Policy-Deltas"), Some("2"), "{:?}", r.headers);
    assert_eq!(r.header("X-ALB-Policy-Digest"), Some(d1.as_str()));
    assert_eq!(r.json(), p1);
    let chain = dp.api("GET", "/policy/deltas", Some(&token), b"").json();
    assert_eq!(chain["base"], d1.as_str());
    let ds: Vec<&str> = chain["deltas"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap()).collect();
    assert_eq!(ds, vec![d2.as_str(), d3.as_str()]);

    // new workers (HUP) hold nothing: they decode the whole policy and apply both deltas
    let pids = dp.pids();
    let workers_before: Vec<i64> =
        dp.status()["workers"].as_array().unwrap().iter().map(|w| w["pid"].as_i64().unwrap()).collect();
    let hup = std::process::Command::new("kill").args(["-HUP", &pids[0].to_string()]).status().unwrap();
    assert!(hup.success(), "HUP the master");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = dp.status();
        let ws = s["workers"].as_array().unwrap();
        let fresh = ws.iter().filter(|w| !workers_before.contains(&w["pid"].as_i64().unwrap_or(0))).count();
        // nginx stops the old workers ~100 ms after starting the new ones: until then both serve
        let children = std::process::Command::new("ps").args(["-o", "pid=", "--ppid", &pids[0].to_string()]).output();
        let n_children = children.map(|o| String::from_utf8_lossy(&o.stdout).lines().count()).unwrap_or(0);
        if fresh == 2 && n_children == 2 && ws.iter().all(|w| w["digest"] == d3.as_str()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "new workers did not apply the chain: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(compiled(&d3), vec![3, 3], "fresh workers compile every rule");
    assert_eq!(get(port, "/one", &[]).backend(), "c");
    assert_eq!(get(port, "/new", &[]).backend(), "b");

    // the chain is full once the deltas add up to more than the whole policy: 409, then a whole PUT starts over
    let mut base = d3.clone();
    let mut full = false;
    let mut in_hosts = vec![json!("IN"), json!("HOST")];
    in_hosts.extend((0..400).map(|i| json!(format!("host-{i}.chain.test"))));
    for n in 10..120u8 {
        let d = hex(n);
        let mut big = keyed("rx", &format!("/x{n}"), "a", &format!("kx{n}"));
        big["match"] = json!(["AND", ["STARTS_WITH", "URL", format!("/x{n}")], in_hosts.clone()]);
        let r = patch(&json!({"version": 1, "base": base, "digest": d,
            "http": {&ps: ["k1", keyed("rn", "/new", "n", "kn"), big, "k3"]}}));
        if r.status == 409 {
            assert!(r.body.contains("send it whole"), "{}", r.body);
            full = true;
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        base = d;
    }
    assert!(full, "the chain never filled");
    dp.wait_applied(&base);
    let d4 = dp.push(&p1);
    let r = dp.api("GET", "/policy", Some(&token), b"");
    assert_eq!(r.header("X-ALB-Policy-Deltas"), None, "{:?}", r.headers);
    assert_eq!(r.header("X-ALB-Policy-Digest"), Some(d4.as_str()));
    assert_eq!(dp.api("GET", "/policy/deltas", Some(&token), b"").json()["deltas"], json!([]));
    assert_eq!(get(port, "/two", &[]).backend(), "a");
    assert_eq!(get(port, "/one", &[]).backend(), "a");
}
