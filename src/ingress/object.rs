//! The Ingress as alb reads it: its spec and status as the API has them, and of its metadata what alb reads
//! ([`LeanMeta`]: names, uid, resourceVersion, generation, deletion mark, labels and annotations in two
//! allocations). The controller caches every Ingress of the cluster: a k8s-openapi `Ingress` of one host and one
//! path took ~2.6 KB, this one ~1.1 KB. It decodes from the API's JSON (through [`IngressObject`]), so manifests
//! and fixtures read as before.

use crate::compile::meta::{LeanMeta, Meta};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::{IngressSpec, IngressStatus};
use serde::Deserialize;

/// The API object, as the watch decodes it (kube's watcher reads its `ObjectMeta`).
pub use k8s_openapi::api::networking::v1::Ingress as IngressObject;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "IngressObject")]
pub struct Ingress {
    pub metadata: LeanMeta,
    pub spec: Option<IngressSpec>,
    pub status: Option<IngressStatus>,
}

impl Ingress {
    /// What the controller's cache keeps of a watched Ingress (copies; the object is not taken apart).
    pub fn of(o: &IngressObject) -> Ingress {
        Ingress { metadata: LeanMeta::of(&o.metadata), spec: o.spec.clone(), status: o.status.clone() }
    }

    /// The Ingress an Event is about.
    pub fn object_ref(&self) -> ObjectReference {
        let m = &self.metadata;
        ObjectReference {
            api_version: Some("networking.k8s.io/v1".into()),
            kind: Some("Ingress".into()),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            uid: m.uid.clone(),
            ..Default::default()
        }
    }

    /// Namespace ("" when unset) and name.
    pub fn ns_name(&self) -> (&str, &str) {
        (self.metadata.ns(), self.metadata.name())
    }

    /// The value of annotation `key`.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.get(key)
    }
}

impl From<IngressObject> for Ingress {
    fn from(o: IngressObject) -> Ingress {
        Ingress { metadata: LeanMeta::of(&o.metadata), spec: o.spec, status: o.status }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn keeps_what_alb_reads() {
        let obj: IngressObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "app", "uid": "u-1", "resourceVersion": "9", "generation": 2,
                         "labels": {"team": "a"}, "annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/"},
                         "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"ingressClassName": "alb", "rules": [{"host": "a.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}
        }))
        .unwrap();
        let ing = Ingress::of(&obj);
        assert_eq!(ing.ns_name(), ("app", "web"));
        assert_eq!(ing.annotation("nginx.ingress.kubernetes.io/rewrite-target"), Some("/"));
        assert_eq!(ing.metadata.label("team"), Some("a"));
        assert!(ing.metadata.deleting);
        assert_eq!((ing.metadata.generation, ing.metadata.uid.as_deref()), (Some(2), Some("u-1")));
        assert_eq!((&ing.spec, &ing.status), (&obj.spec, &obj.status));
        assert_eq!(ing.object_ref(), obj.object_ref(&()), "Events name the same object");
        let decoded: Ingress = serde_json::from_value(serde_json::to_value(&obj).unwrap()).unwrap();
        assert_eq!(decoded, ing);
    }
}
