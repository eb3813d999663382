//! Ingresses in the manifest folder → `alb standalone` translates them in memory (as the leader would write
//! Frontends/Rules) → nginx routes them, and edits apply without a reload.

use crate::harness::{free_port, get, Backend, Standalone};
use std::time::{Duration, Instant};

/// A Service `name` (port 80 named `http`) whose ready endpoint is `b`.
fn service(name: &str, b: &Backend) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: shop\n  labels: {{kubernetes.io/service-name: {name}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n",
        port = b.port
    )
}

/// Two hosts, three paths (Exact, Prefix by port name, ImplementationSpecific regex).
fn ingress(exact_path: &str) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: shop}}
spec:
  rules:
    - host: shop.test
      http:
        paths:
          - {{path: {exact_path}, pathType: Exact, backend: {{service: {{name: svc-a, port: {{number: 80}}}}}}}}
          - {{path: /api, pathType: Prefix, backend: {{service: {{name: svc-b, port: {{name: http}}}}}}}}
    - host: "*.wild.test"
      http:
        paths:
          - {{path: "/v[0-9]+/items", pathType: ImplementationSpecific, backend: {{service: {{name: svc-c, port: {{number: 80}}}}}}}}
"#
    )
}

const OTHER_CLASS: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: not-ours
  namespace: shop
  annotations: {kubernetes.io/ingress.class: nginx}
spec:
  rules:
    - http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: svc-a, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: alb}
spec: {controller: alauda.io/alb2}
"#;

/// `alb standalone` with `--ingress-http-port`; waits for the first policy.
fn start(files: &[(&str, String)], http_port: u16) -> Standalone {
    Standalone::start_with(files, &["--ingress-http-port", &http_port.to_string()], &[])
}

#[test]
fn ingress_routes_reroutes_without_reload_and_ignores_other_classes() {
    let (a, b, c) = (Backend::start("a"), Backend::start("b"), Backend::start("c"));
    let port = free_port();
    let svcs = [service("svc-a", &a), service("svc-b", &b), service("svc-c", &c)].join("---\n");
    let gw =
        start(&[("svc.yaml", svcs), ("ing.yaml", ingress("/exact")), ("other.yaml", OTHER_CLASS.to_string())], port);
    gw.proc.wait_log(&format!("listening on 127.0.0.1:{port} (frontend alb-{port:05})"), Duration::from_secs(1));
    let shop = [("Host", "shop.test")];
    assert_eq!(get(port, "/exact", &shop).backend(), "a");
    assert_eq!(get(port, "/exact/more", &shop).status, 404, "Exact is exact");
    assert_eq!(get(port, "/api/items/1", &shop).backend(), "b", "port by name");
    assert_eq!(get(port, "/apix", &shop).backend(), "b", "Prefix has no segment semantics");
    assert_eq!(get(port, "/v2/items", &[("Host", "x.wild.test")]).backend(), "c");
    assert_eq!(get(port, "/v2/items", &[("Host", "X.Wild.Test")]).backend(), "c", "hosts are case-insensitive");
    assert_eq!(get(port, "/pre/v2/items", &[("Host", "x.wild.test")]).status, 404, "regex anchored with ^");
    assert_eq!(get(port, "/v2/items", &[("Host", "a.b.wild.test")]).status, 404, "single-label wildcard");
    assert_eq!(get(port, "/exact", &[("Host", "other.test")]).status, 404);
    // The Ingress of class nginx is not ours: its catch-all `/` is not routed.
    let r = get(port, "/", &[("Host", "any.test")]);
    assert_eq!((r.status, r.reason()), (404, "InvalidUpstream : no rule match"));

    // Editing the Ingress reroutes with no reload.
    let pids = gw.pids();
    assert_eq!(pids.len(), 3, "master + 2 workers: {pids:?}");
    let t = Instant::now();
    gw.write("ing.yaml", &ingress("/exact2"));
    // Each worker applies the policy on its own poll, and a fresh connection may land on either: the edit is in
    // when several requests in a row all see it.
    let edited =
        || (0..4).all(|_| get(port, "/exact2", &shop).backend() == "a" && get(port, "/exact", &shop).status == 404);
    while !edited() {
        assert!(t.elapsed() < Duration::from_secs(2), "edit not visible after 2 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(get(port, "/api", &shop).backend(), "b");
    assert_eq!(gw.pids(), pids, "no nginx reload for an Ingress edit");
    assert!(!gw.proc.logs().iter().any(|l| l.contains("nginx reloaded")), "{:?}", gw.proc.logs());

    // An invalid backend-protocol: a warning names the Ingress and the annotation, its paths get no Rule.
    let bad = ingress("/exact2").replace(
        "metadata: {name: web, namespace: shop}",
        "metadata: {name: web, namespace: shop, annotations: {nginx.ingress.kubernetes.io/backend-protocol: FCGI}}",
    );
    gw.write("ing.yaml", &bad);
    let line = gw.proc.wait_log("ingress shop/web: InvalidAnnotation", Duration::from_secs(2));
    assert!(line.contains("backend-protocol") && line.contains("FCGI"), "{line}");
    let t = Instant::now();
    while !(0..4).all(|_| get(port, "/exact2", &shop).status == 404) {
        assert!(t.elapsed() < Duration::from_secs(2), "paths of the bad Ingress still routed after 2 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}
