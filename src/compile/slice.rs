//! What alb reads of a `discovery.k8s.io/v1` EndpointSlice: its name, namespace and Service label, address type,
//! port names and numbers, and each endpoint's addresses and `ready` condition.
//!
//! The controller caches every EndpointSlice of the cluster. Decoded into k8s-openapi's full type, a one-endpoint
//! slice took ~2.9 KiB of heap (every endpoint carries room for targetRef, nodeName, zone, hints, ...); decoded
//! into this one, serde skips the fields alb never reads. Of the metadata it keeps name and namespace
//! ([`NameMeta`]) and its Service's name (a label map of one entry costs ~0.5 KiB per slice, a field the name
//! alone). It decodes from the API's JSON (through [`EndpointSliceObject`]), so manifests and test fixtures
//! decode the same way.

use super::meta::NameMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(from = "EndpointSliceObject", rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default)]
    pub metadata: NameMeta,
    /// (`Box<str>` here and below: 16 bytes less than `String`s put the cached slice, in its `Arc`, in
    /// jemalloc's 192-byte size class instead of the 224-byte one; `controller::stores` tests it)
    #[serde(default)]
    pub address_type: Box<str>,
    #[serde(default)]
    pub ports: Option<Vec<EndpointPort>>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The `kubernetes.io/service-name` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<Box<str>>,
}

impl EndpointSlice {
    /// The Service this slice belongs to (its `kubernetes.io/service-name` label).
    pub fn service_name(&self) -> Option<&str> {
        self.service_name.as_deref()
    }
}

/// An EndpointSlice as the watch decodes it: kube's watcher reads each object's `ObjectMeta` (its
/// resourceVersion); the cache keeps the [`EndpointSlice`] made of it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSliceObject {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub address_type: String,
    #[serde(default)]
    pub ports: Option<Vec<EndpointPort>>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

impl EndpointSlice {
    /// What the controller's cache keeps of a watched slice: copies of the parts above, nothing else.
    pub fn of(o: &EndpointSliceObject) -> EndpointSlice {
        EndpointSlice {
            metadata: NameMeta::names(&o.metadata),
            address_type: o.address_type.as_str().into(),
            ports: o.ports.clone(),
            endpoints: o.endpoints.clone(),
            service_name: o.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).map(|n| n.as_str().into()),
        }
    }
}

impl From<EndpointSliceObject> for EndpointSlice {
    fn from(o: EndpointSliceObject) -> EndpointSlice {
        EndpointSlice::of(&o)
    }
}

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct EndpointPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub port: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Endpoint {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: Option<EndpointConditions>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct EndpointConditions {
    #[serde(default)]
    pub ready: Option<bool>,
}

lean_resource!(EndpointSliceObject, group: "discovery.k8s.io", version: "v1", kind: "EndpointSlice", plural: "endpointslices");

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn decodes_what_alb_reads_and_skips_the_rest() {
        let full = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "shop", "resourceVersion": "7",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false},
                 "nodeName": "n1", "zone": "z", "hostname": "h",
                 "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop", "uid": "u"}},
                {"addresses": ["10.0.0.2"]}
            ]
        });
        let s: EndpointSlice = serde_json::from_value(full).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("web-abc"));
        assert_eq!(s.service_name(), Some("web"));
        assert_eq!(&*s.address_type, "IPv4");
        assert_eq!(s.ports, Some(vec![EndpointPort { name: Some("http".into()), port: Some(8080) }]));
        assert_eq!(s.endpoints[0].addresses, ["10.0.0.1"]);
        assert_eq!(s.endpoints[0].conditions, Some(EndpointConditions { ready: Some(true) }));
        assert_eq!(s.endpoints[1].conditions, None);
        assert_eq!(
            EndpointSliceObject::url_path(&(), Some("shop")),
            "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
        );
        assert_eq!(EndpointSliceObject::api_version(&()), "discovery.k8s.io/v1");
    }

    #[test]
    fn keeps_name_namespace_and_the_service_name_only() {
        let s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "shop", "resourceVersion": "7", "uid": "u-1",
                         "labels": {"kubernetes.io/service-name": "web", "app": "web"},
                         "annotations": {"a": "b"}, "ownerReferences": [{"apiVersion": "v1", "kind": "Service",
                         "name": "web", "uid": "u"}]},
            "addressType": "IPv4", "endpoints": []
        }))
        .unwrap();
        assert_eq!(s.service_name(), Some("web"));
        let name_and_ns =
            NameMeta { name: Some("web-abc".into()), namespace: Some("shop".into()), ..Default::default() };
        assert_eq!(s.metadata, name_and_ns, "no uid or resourceVersion");
        let unlabelled: EndpointSlice = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert_eq!(unlabelled.service_name(), None);
    }

    #[test]
    fn smaller_than_with_the_full_metadata() {
        assert!(std::mem::size_of::<EndpointSlice>() + 200 < std::mem::size_of::<EndpointSliceObject>());
    }
}
