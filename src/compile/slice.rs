//! What alb reads of a `discovery.k8s.io/v1` EndpointSlice: its name, namespace and Service label, address type,
//! port names and numbers, and each endpoint's addresses and `ready` condition.
//!
//! The controller caches every EndpointSlice of the cluster. Decoded into k8s-openapi's full type, a one-endpoint
//! slice took ~2.9 KiB of heap (every endpoint carries room for targetRef, nodeName, zone, hints, ...); decoded
//! into this one, serde skips the fields alb never reads. The JSON shape is the API's, so manifests, watch events
//! and test fixtures decode the same way.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub address_type: String,
    #[serde(default)]
    pub ports: Option<Vec<EndpointPort>>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The `kubernetes.io/service-name` label once [`EndpointSlice::compact`] took it out of the labels (a map
    /// of one entry costs ~0.5 KiB per slice, a field the name alone). Not part of the JSON.
    #[serde(skip)]
    pub service_name: Option<String>,
}

impl EndpointSlice {
    /// The Service this slice belongs to (its `kubernetes.io/service-name` label).
    pub fn service_name(&self) -> Option<&str> {
        let label = || self.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
        self.service_name.as_deref().or_else(|| label().map(String::as_str))
    }

    /// Keeps of the metadata only what the compiler reads: name, namespace, and the Service name (moved into
    /// [`EndpointSlice::service_name`]). The controller's cache holds every slice of the cluster this way.
    pub fn compact(&mut self) {
        if self.service_name.is_none() {
            self.service_name = self.metadata.labels.as_mut().and_then(|l| l.remove(SERVICE_NAME_LABEL));
        }
        self.metadata = name_only(&mut self.metadata);
    }
}

/// The name and namespace of `meta`, taken out; nothing else of it (labels, uid, resourceVersion, timestamps).
pub fn name_only(meta: &mut ObjectMeta) -> ObjectMeta {
    ObjectMeta { name: meta.name.take(), namespace: meta.namespace.take(), ..Default::default() }
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

lean_resource!(EndpointSlice, group: "discovery.k8s.io", version: "v1", kind: "EndpointSlice", plural: "endpointslices");

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
        assert_eq!(s.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"], "web");
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.ports, Some(vec![EndpointPort { name: Some("http".into()), port: Some(8080) }]));
        assert_eq!(s.endpoints[0].addresses, ["10.0.0.1"]);
        assert_eq!(s.endpoints[0].conditions, Some(EndpointConditions { ready: Some(true) }));
        assert_eq!(s.endpoints[1].conditions, None);
        assert_eq!(
            EndpointSlice::url_path(&(), Some("shop")),
            "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
        );
        assert_eq!(EndpointSlice::api_version(&()), "discovery.k8s.io/v1");
    }

    #[test]
    fn compact_keeps_the_service_name_only() {
        let mut s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "shop", "resourceVersion": "7",
                         "labels": {"kubernetes.io/service-name": "web", "app": "web"},
                         "annotations": {"a": "b"}, "ownerReferences": [{"apiVersion": "v1", "kind": "Service",
                         "name": "web", "uid": "u"}]},
            "addressType": "IPv4", "endpoints": []
        }))
        .unwrap();
        assert_eq!(s.service_name(), Some("web"), "read from the label before compact");
        s.compact();
        assert_eq!(s.service_name(), Some("web"));
        let name_and_ns =
            ObjectMeta { name: Some("web-abc".into()), namespace: Some("shop".into()), ..Default::default() };
        assert_eq!(s.metadata, name_and_ns, "no labels, annotations, owners or resourceVersion");
        s.compact();
        assert_eq!(s.service_name(), Some("web"), "compact twice keeps it");
        let unlabelled: EndpointSlice = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert_eq!(unlabelled.service_name(), None);
    }
}
