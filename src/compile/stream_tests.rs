//! tcp/udp Frontends (stream listeners) and grpc Frontends/backend protocols.
use super::testutil::*;
use super::*;
use crate::nginx::stream::StreamProto;
use serde_json::json;

fn url(op: &str, v: &str) -> serde_json::Value {
    json!({"type": "URL", "values": [[op, v]]})
}

/// A Rule on `ft` to Service `svc` port 80 of the test namespace.
fn rule_ns(name: &str, ft: &str, dslx: serde_json::Value, svc: &str) -> Rule {
    rule(name, ft, json!({"priority": 1, "dslx": dslx, "serviceGroup": {"services": [{"name": svc, "port": 80}]}}))
}

fn opts() -> CompileOptions {
    CompileOptions { alb_name: Some(ALB.into()), ..Default::default() }
}

/// A Service with one port of `proto` and an EndpointSlice with `eps` (address, port) of that protocol.
fn svc_with(name: &str, proto: &str, port: i32, eps: &[(&str, i32)]) -> (Service, Vec<EndpointSlice>) {
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
        "spec": {"ports": [{"name": "p", "port": port, "protocol": proto}]}
    }))
    .unwrap();
    let slices = eps
        .iter()
        .enumerate()
        .map(|(i, (a, p))| {
            serde_json::from_value(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{name}-{i}"), "namespace": NS,
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "ports": [{"name": "p", "port": p, "protocol": proto}],
                "endpoints": [{"addresses": [a], "conditions": {"ready": true}}]
            }))
            .unwrap()
        })
        .collect();
    (svc, slices)
}

fn snap(parts: Vec<(Service, Vec<EndpointSlice>)>) -> Snapshot {
    let mut s = Snapshot::default();
    for (svc, sl) in parts {
        s.services.push(Arc::new(svc));
        s.endpoint_slices.extend(sl.into_iter().map(Arc::new));
    }
    s
}

#[test]
fn tcp_frontend_gets_weighted_backends_and_timeouts() {
    let mut s = snap(vec![
        svc_with("one", "TCP", 80, &[("10.0.0.1", 8080)]),
        svc_with("two", "TCP", 80, &[("10.0.0.2", 8080)]),
    ]);
    let mut ft = frontend(
        "alb-dev-09000",
        9000,
        "tcp",
        Some(json!({"services": [{"name": "one", "namespace": NS, "port": 80, "weight": 25},
                                 {"name": "two", "namespace": NS, "port": 80, "weight": 75}]})),
    );
    ft.spec.config = Some(json!({"timeout": {"proxy_connect_timeout_ms": 1500, "proxy_read_timeout_ms": 30000}}));
    s.frontends.push(Arc::new(ft));
    let c = compile(&s, &opts());
    assert!(c.rejects.is_empty(), "{:?}", c.rejects);
    assert!(c.listeners.is_empty() && c.policy.http.is_empty() && c.policy.backend_groups.is_empty());
    assert_eq!(c.stream.len(), 1);
    let l = &c.stream[0];
    assert_eq!(
        (l.port, l.proto, l.connect_timeout_ms, l.timeout_ms),
        (9000, StreamProto::Tcp, Some(1500), Some(30000))
    );
    let b: Vec<_> = l.backends.iter().map(|b| (b.ip.to_string(), b.port, b.weight)).collect();
    assert_eq!(b, vec![("10.0.0.1".into(), 8080, 25), ("10.0.0.2".into(), 8080, 75)]);
}

#[test]
fn udp_frontend_matches_udp_service_ports_only() {
    let mut s = snap(vec![svc_with("dns", "UDP", 53, &[("10.0.0.5", 5353)]), svc_with("web", "TCP", 53, &[])]);
    s.frontends.push(Arc::new(frontend(
        "alb-dev-00053-udp",
        53,
        "udp",
        Some(json!({"services": [{"name": "dns", "namespace": NS, "port": 53}]})),
    )));
    // a udp Frontend on a TCP-only Service port: the group does not resolve
    s.frontends.push(Arc::new(frontend(
        "alb-dev-00054-udp",
        54,
        "udp",
        Some(json!({"services": [{"name": "web", "namespace": NS, "port": 53}]})),
    )));
    // and a tcp Frontend to the UDP Service port neither
    s.frontends.push(Arc::new(frontend(
        "alb-dev-00055",
        55,
        "tcp",
        Some(json!({"services": [{"name": "dns", "namespace": NS, "port": 53}]})),
    )));
    // udp timeouts are not applied (the timeout plugin is tcp only)
    Arc::make_mut(&mut s.frontends[0]).spec.config = Some(json!({"timeout": {"proxy_read_timeout_ms": 5}}));
    let c = compile(&s, &opts());
    let got: Vec<_> = c.rejects.iter().map(|r| (r.name.as_str(), r.reason.as_str(), r.field.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("alb-dev-00054-udp", "PortNotFound", "spec.serviceGroup.services[0].port"),
            ("alb-dev-00055", "PortNotFound", "spec.serviceGroup.services[0].port")
        ]
    );
    assert!(c.rejects[0].message.contains("no UDP port 53"), "{}", c.rejects[0].message);
    assert_eq!(c.stream.len(), 1);
    let l = &c.stream[0];
    assert_eq!((l.port, l.proto, l.timeout_ms), (53, StreamProto::Udp, None));
    assert_eq!(l.backends[0].port, 5353);
}

#[test]
fn rules_cannot_attach_to_l4_frontends_and_bad_timeouts_are_reported() {
    let mut s = snap(vec![svc_with("one", "TCP", 80, &[("10.0.0.1", 8080)])]);
    let mut ft = frontend(
        "alb-dev-09000",
        9000,
        "tcp",
        Some(json!({"services": [{"name": "one", "namespace": NS, "port": 80}]})),
    );
    ft.spec.config = Some(json!({"timeout": {"proxy_connect_timeout_ms": -1}}));
    s.frontends.push(Arc::new(ft));
    s.rules.push(Arc::new(rule_ns("r", "alb-dev-09000", json!([url("EQ", "/")]), "one")));
    let c = compile(&s, &opts());
    let got: Vec<_> = c.rejects.iter().map(|r| (r.name.as_str(), r.reason.as_str(), r.field.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("alb-dev-09000", "InvalidTimeout", "spec.config.timeout.proxy_connect_timeout_ms"),
            ("r", "UnsupportedProtocol", "metadata.labels")
        ]
    );
    assert_eq!(c.stream[0].connect_timeout_ms, None);
    assert_eq!(c.stream[0].backends.len(), 1, "the Frontend still serves");
}

#[test]
fn grpc_frontends_and_backend_protocols() {
    let mut s = snap(vec![svc_with("g", "TCP", 80, &[("10.0.0.1", 50051)])]);
    s.frontends.push(Arc::new(frontend(
        "alb-dev-09000",
        9000,
        "grpc",
        Some(json!({"services": [{"name": "g", "port": 80}]})),
    )));
    s.frontends.push(Arc::new(frontend("alb-dev-00080", 80, "http", None)));
    let mut tls = frontend("alb-dev-09443", 9443, "grpc", None);
    tls.spec.certificate_name = "cpaas-system/missing".into();
    s.frontends.push(Arc::new(tls));
    let mut https = rule_ns("tls-up", "alb-dev-09000", json!([url("EQ", "/a")]), "g");
    https.spec.edit(|s| s.backend_protocol = "HTTPS".into());
    s.rules.push(Arc::new(https));
    let mut g = rule_ns("grpc-on-http", "alb-dev-00080", json!([url("STARTS_WITH", "/pkg.Svc/")]), "g");
    g.spec.edit(|s| s.backend_protocol = "GRPCS".into());
    s.rules.push(Arc::new(g));
    let mut bad = rule_ns("bad", "alb-dev-00080", json!([url("EQ", "/b")]), "g");
    bad.spec.edit(|s| s.backend_protocol = "quic".into());
    s.rules.push(Arc::new(bad));
    let c = compile(&s, &opts());
    let ls: Vec<_> = c.listeners.iter().map(|l| (l.port, l.protocol, l.tls)).collect();
    assert_eq!(ls, vec![(80, Protocol::Http, false), (9000, Protocol::Grpc, false), (9443, Protocol::Grpc, true)]);
    let protos = |port: &str| -> Vec<(String, String)> {
        c.policy.http[port].rules.iter().map(|r| (r.name.clone(), r.backend_protocol.clone())).collect()
    };
    assert_eq!(protos("9000"), vec![("tls-up".into(), "grpcs".into()), ("alb-dev-09000".into(), "grpc".into())]);
    assert_eq!(protos("80"), vec![("bad".into(), "".into()), ("grpc-on-http".into(), "grpcs".into())]);
    let got: Vec<_> = c.rejects.iter().map(|r| (r.name.as_str(), r.reason.as_str(), r.field.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("bad", "InvalidBackendProtocol", "spec.backendProtocol"),
            // a grpc Frontend with a certificate is a TLS listener: its certificate is resolved like https's
            ("alb-dev-09443", "CertificateNotFound", "spec.certificate_name"),
        ]
    );
}
