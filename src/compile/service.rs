//! What alb reads of a `v1` Service: its metadata, and of its spec the ports, type, ClusterIP and ExternalName
//! (`compile/backends.rs`, `ingress/translate.rs`, `ingress/annotations`).
//!
//! The controller caches every Service of the cluster. k8s-openapi's `Service` is 824 bytes before any of its
//! strings (its spec has room for ~30 fields); this one is 192: of the metadata it keeps name, namespace, uid and
//! resourceVersion ([`NameMeta`]), and serde skips the rest while decoding. It decodes from the API's JSON (through
//! [`ServiceObject`]), so manifests, test fixtures and the code that reads `metadata.name` or `spec.ports` decode
//! and read the same way. The operator, which writes Services, uses k8s-openapi's type.

use super::meta::NameMeta;
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(from = "ServiceObject")]
pub struct Service {
    #[serde(default)]
    pub metadata: NameMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ServiceSpec>,
}

/// A Service as the watch decodes it: kube's watcher reads each object's `ObjectMeta` (its resourceVersion);
/// the cache keeps the [`Service`] made of it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ServiceObject {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<ServiceSpec>,
}

impl Service {
    /// What the controller's cache keeps of a watched Service: copies of the parts above, nothing else (its
    /// labels and annotations are not copied only to be dropped).
    pub fn of(o: &ServiceObject) -> Service {
        Service { metadata: NameMeta::versioned(&o.metadata), spec: o.spec.clone() }
    }
}

impl From<ServiceObject> for Service {
    fn from(o: ServiceObject) -> Service {
        Service::of(&o)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ServicePort>>,
    /// (`Box<str>` here and in `external_name`: 16 bytes less than `String`s put the cached Service, in its
    /// `Arc`, in jemalloc's 192-byte size class instead of the 224-byte one; 10,000 Services ~0.3 MB; `controller::stores`
    /// tests it)
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<Box<str>>,
    #[serde(rename = "clusterIP", default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<Box<str>>,
}

lean_resource!(ServiceObject, group: "", version: "v1", kind: "Service", plural: "services");

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn decodes_what_alb_reads_and_skips_the_rest() {
        let full = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"],
                     "selector": {"app": "web"}, "ipFamilies": ["IPv4"], "sessionAffinity": "None",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP",
                                "appProtocol": "http"}]},
            "status": {"loadBalancer": {}}
        });
        let s: Service = serde_json::from_value(full).unwrap();
        let spec = s.spec.as_ref().unwrap();
        assert_eq!((spec.type_.as_deref(), spec.cluster_ip.as_deref()), (Some("ClusterIP"), Some("10.96.0.9")));
        let port = &spec.ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port, port.app_protocol.as_deref()), (Some("http"), 80, Some("http")));
        let ext: Service =
            serde_json::from_value(json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}}))
                .unwrap();
        assert_eq!(ext.spec.unwrap().external_name.as_deref(), Some("db.example.com"));
        assert_eq!(ServiceObject::url_path(&(), Some("shop")), "/api/v1/namespaces/shop/services");
        assert_eq!(ServiceObject::api_version(&()), "v1");
        let m = &s.metadata;
        assert_eq!(
            (m.name.as_deref(), m.namespace.as_deref(), m.resource_version.as_deref()),
            (Some("web"), Some("shop"), Some("7"))
        );
        // the same JSON shape back (what the standalone's and the tests' fixtures rely on)
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(back["spec"]["ports"][0]["targetPort"], 8080);
    }

    #[test]
    fn smaller_than_the_full_type() {
        let full = std::mem::size_of::<k8s_openapi::api::core::v1::Service>();
        let lean = std::mem::size_of::<Service>();
        assert!(lean * 5 < full * 3, "{lean} vs {full}");
    }
}
