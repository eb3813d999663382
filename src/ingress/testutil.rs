//! Fixture constructors for the ingress tests.

use super::IngressWorld;
use crate::compile::service::Service;
use crate::crd::Frontend;
use crate::ingress::Ingress;
use k8s_openapi::api::core::v1::Namespace;
use serde_json::{json, Value};

/// An Ingress `ns/name` with the given `spec` JSON.
pub fn ingress(ns: &str, name: &str, spec: Value) -> Ingress {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec
    }))
    .unwrap()
}

/// Adds an annotation.
pub fn annotate(mut ing: Ingress, key: &str, value: &str) -> Ingress {
    ing.metadata.annotations.insert(key, value);
    ing
}

pub fn namespace(name: &str, project: Option<&str>) -> Namespace {
    let labels = project.map(|p| json!({"cpaas.io/project": p})).unwrap_or(json!({}));
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    )
    .unwrap()
}

pub fn frontend(ns: &str, name: &str, port: i32, protocol: &str, labels: &[(&str, &str)]) -> Frontend {
    let mut l: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    l.entry("alb2.cpaas.io/name").or_insert(json!("alb-dev"));
    serde_json::from_value(json!({
        "apiVersion": "crd.alauda.io/v1", "kind": "Frontend",
        "metadata": {"name": name, "namespace": ns, "labels": l},
        "spec": {"port": port, "protocol": protocol}
    }))
    .unwrap()
}

/// A Service with `(name, port)` TCP ports.
pub fn service(ns: &str, name: &str, ports: &[(&str, i32)]) -> Service {
    let ports: Vec<Value> = ports.iter().map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"})).collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": ports}
    }))
    .unwrap()
}

/// Owns the lists an [`IngressWorld`] borrows.
#[derive(Default)]
pub struct World {
    pub ingresses: Vec<Ingress>,
    pub namespaces: Vec<Namespace>,
    pub services: Vec<Service>,
    pub frontends: Vec<Frontend>,
}

impl World {
    pub fn world(&self) -> IngressWorld<'_> {
        IngressWorld {
            // shared copies, as the controller's stores hand them out (leaked like the index below)
            ingresses: Box::leak(self.ingresses.iter().cloned().map(std::sync::Arc::new).collect()),
            namespaces: &self.namespaces,
            services: Box::leak(self.services.iter().cloned().map(std::sync::Arc::new).collect()),
            frontends: &self.frontends,
            // a fresh index per world: tests edit their objects between worlds (a leak of a few bytes per test)
            canaries: Box::leak(Box::default()),
        }
    }
}

/// JSON of anything serializable (the generated CR types have no `PartialEq`).
pub fn js<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap()
}
