//! Our CRDs on the real API server: they install, and objects shaped like the original ALB's validate.

use crate::harness::cluster::Cluster;

#[test]
fn crds_accept_objects_of_the_original_alb() {
    let c = Cluster::shared();
    let ns = c.namespace("crds");
    let objects = format!(
        r#"
apiVersion: crd.alauda.io/v2beta1
kind: ALB2
metadata: {{name: alb-dev, namespace: {ns}}}
spec:
  address: "1.2.3.4,alb.example.com"
  type: nginx
  config:
    replicas: 1
    networkMode: host
    enableALb: false
    reloadtimeout: 600
    ingressHTTPPort: 80
    projects: [ALL_ALL]
    vip: {{enableLbSvc: false}}
---
apiVersion: crd.alauda.io/v1
kind: Frontend
metadata:
  name: alb-dev-00080
  namespace: {ns}
  labels: {{alb2.cpaas.io/name: alb-dev}}
spec:
  port: 80
  protocol: http
  certificate_name: ""
  backendProtocol: ""
  serviceGroup:
    session_affinity_policy: ""
    session_affinity_attribute: ""
    services: [{{name: svc, namespace: {ns}, port: 80, weight: 100}}]
  source: {{type: ingress, name: ing, namespace: {ns}}}
  config:
    keepalive: {{http: {{timeout: 75s}}}}
    timeout: {{proxy_connect_timeout_ms: 1000}}
---
apiVersion: crd.alauda.io/v1
kind: Rule
metadata:
  name: alb-dev-00080-abcd
  namespace: {ns}
  labels: {{alb2.cpaas.io/name: alb-dev, alb2.cpaas.io/frontend: alb-dev-00080}}
  annotations: {{alb2.cpaas.io/source-ingress-rule-index: "0", alb2.cpaas.io/source-ingress-path-index: "0"}}
spec:
  priority: 5
  description: "{ns}/ing:80:0"
  domain: a.example.com
  url: /a
  rewrite_base: /a
  rewrite_target: ""
  dsl: "[{{[[STARTS_WITH /a]] URL }}]"
  dslx:
  - type: URL
    values: [[STARTS_WITH, /a]]
  - type: HEADER
    key: x-user
    values: [[IN, a, b], [EXIST]]
  enableCORS: false
  corsAllowHeaders: ""
  corsAllowOrigin: ""
  backendProtocol: ""
  redirectURL: ""
  redirectCode: 0
  vhost: ""
  certificate_name: ""
  serviceGroup: {{services: [{{name: svc, namespace: {ns}, port: 80, weight: 100}}]}}
  source: {{type: ingress, name: ing, namespace: {ns}}}
  config: {{redirect: {{code: 301, url: /b}}}}
"#
    );
    c.apply(&objects);
    let rule = c.get_json(&["rule", "-n", &ns, "alb-dev-00080-abcd"]);
    assert_eq!(rule["spec"]["dslx"][1]["values"][1], serde_json::json!(["EXIST"]));
    assert_eq!(rule["spec"]["config"]["redirect"]["code"], 301, "free-form config kept");
    // No schema defaults: what was written comes back unchanged.
    let ft = c.get_json(&["frontend", "-n", &ns, "alb-dev-00080"]);
    assert!(ft["spec"].get("config").is_some());
    assert!(ft.get("status").is_none() || ft["status"].as_object().is_some_and(|o| o.is_empty()), "{ft}");
    let alb = c.get_json(&["alb2", "-n", &ns, "alb-dev"]);
    assert_eq!(alb["spec"]["config"]["vip"]["enableLbSvc"], false, "unknown config keys preserved");
    // The deprecated v1 and the v2 versions are served too.
    let out = c.kubectl(&["get", "alaudaloadbalancer2.v1.crd.alauda.io", "-n", &ns, "alb-dev", "-o", "name"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = c.kubectl(&["get", "alaudaloadbalancer2.v2.crd.alauda.io", "-n", &ns, "alb-dev", "-o", "name"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Printer columns are served.
    let out = c.kubectl(&["get", "rules", "-n", &ns]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("PRIORITY") && table.contains("BACKENDS") && table.contains("ACCEPTED"), "{table}");
    assert!(table.contains("alb-dev-00080-abcd") && table.contains("svc"), "{table}");
    let _ = c.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}
