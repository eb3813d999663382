//! The Ingress as alb reads it: its status as the API has it, of its spec the fields alb reads ([`IngressSpec`],
//! with the API's field names), and of its metadata what alb reads ([`LeanMeta`]: names, uid, resourceVersion,
//! generation, deletion mark, labels and annotations). The controller caches every Ingress of the cluster: a
//! k8s-openapi `Ingress` of one host and one path took ~2.6 KB, this one ~0.9 KB. It decodes from the API's JSON
//! (through [`IngressObject`]), so manifests and fixtures read as before.

use crate::compile::meta::{LeanMeta, Meta};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::TypedLocalObjectReference;
use k8s_openapi::api::networking::v1 as api;
use k8s_openapi::api::networking::v1::{IngressServiceBackend, IngressStatus, IngressTLS};
use serde::Deserialize;

/// The API object, as the watch decodes it (kube's watcher reads its `ObjectMeta`).
pub use k8s_openapi::api::networking::v1::Ingress as IngressObject;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "IngressObject")]
pub struct Ingress {
    pub metadata: LeanMeta,
    pub spec: Option<IngressSpec>,
    pub status: Option<StatusText>,
}

/// An Ingress's status as its JSON text: only the writes of `status.loadBalancer` read it (the Ingress sync, once
/// per Ingress it writes), and 10,000 statuses of one address and port took ~1.6 MB as k8s-openapi's types.
pub type StatusText = crate::compile::meta::JsonText<IngressStatus>;

impl Ingress {
    /// What the controller's cache keeps of a watched Ingress (copies; the object is not taken apart).
    pub fn of(o: &IngressObject) -> Ingress {
        Ingress {
            metadata: LeanMeta::of(&o.metadata),
            spec: o.spec.clone().map(Into::into),
            status: o.status.as_ref().map(StatusText::new),
        }
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
        Ingress {
            metadata: LeanMeta::of(&o.metadata),
            spec: o.spec.map(Into::into),
            status: o.status.as_ref().map(StatusText::new),
        }
    }
}

/// What alb reads of an Ingress's spec, with the API's names. k8s-openapi's spec holds a whole default backend
/// inline (~200 bytes) and each path ~176 bytes (its backend has room for a typed resource reference inline):
/// here a default backend or a resource reference is a pointer, and a path 112 bytes.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    #[serde(default)]
    pub default_backend: Option<Box<IngressBackend>>,
    #[serde(default)]
    /// (`Box<str>`: 8 bytes less than a `String` puts the cached Ingress in jemalloc's 320-byte size class
    /// instead of the 384-byte one; 10,000 Ingresses ~0.6 MB; `controller::stores` tests it)
    pub ingress_class_name: Option<Box<str>>,
    #[serde(default)]
    pub rules: Option<Vec<IngressRule>>,
    #[serde(default)]
    pub tls: Option<Vec<IngressTLS>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct IngressRule {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub http: Option<HTTPIngressRuleValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct HTTPIngressRuleValue {
    #[serde(default)]
    pub paths: Vec<HTTPIngressPath>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPIngressPath {
    #[serde(default)]
    pub backend: IngressBackend,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub path_type: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct IngressBackend {
    #[serde(default)]
    pub resource: Option<Box<TypedLocalObjectReference>>,
    #[serde(default)]
    pub service: Option<IngressServiceBackend>,
}

impl From<api::IngressSpec> for IngressSpec {
    fn from(s: api::IngressSpec) -> IngressSpec {
        IngressSpec {
            default_backend: s.default_backend.map(|b| Box::new(b.into())),
            ingress_class_name: s.ingress_class_name.map(String::into_boxed_str),
            rules: s.rules.map(|rules| rules.into_iter().map(Into::into).collect()),
            tls: s.tls,
        }
    }
}

impl From<api::IngressRule> for IngressRule {
    fn from(r: api::IngressRule) -> IngressRule {
        let http = r.http.map(|h| HTTPIngressRuleValue { paths: h.paths.into_iter().map(Into::into).collect() });
        IngressRule { host: r.host, http }
    }
}

impl From<api::HTTPIngressPath> for HTTPIngressPath {
    fn from(p: api::HTTPIngressPath) -> HTTPIngressPath {
        HTTPIngressPath { backend: p.backend.into(), path: p.path, path_type: p.path_type }
    }
}

impl From<api::IngressBackend> for IngressBackend {
    fn from(b: api::IngressBackend) -> IngressBackend {
        IngressBackend { resource: b.resource.map(Box::new), service: b.service }
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
        assert_eq!(ing.status.as_ref().and_then(|s| s.get().ok()), obj.status);
        let spec = ing.spec.as_ref().unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("alb"));
        assert_eq!(spec.rules.as_ref().unwrap()[0].host.as_deref(), Some("a.com"));
        assert_eq!(ing.object_ref(), obj.object_ref(&()), "Events name the same object");
        let decoded: Ingress = serde_json::from_value(serde_json::to_value(&obj).unwrap()).unwrap();
        assert_eq!(decoded, ing);
    }
}
