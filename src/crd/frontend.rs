//! `Frontend` (`crd.alauda.io/v1`): one listening port of one ALB (controlplane.md §1.5).

use super::{null_default, preserve_unknown_object, ServiceGroup, Source};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

// clippy mistakes the repeated `type_ = "string"` of the printcolumn(...) lists for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "crd.alauda.io",
    version = "v1",
    kind = "Frontend",
    plural = "frontends",
    shortname = "ft",
    namespaced,
    status = "FrontendStatus",
    doc = "One listening port of an ALB",
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.port"),
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(name = "Accepted", type_ = "string", json_path = ".status.conditions[?(@.type==\"Accepted\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct FrontendSpec {
    /// Listen port, 1..65535.
    #[serde(default, deserialize_with = "null_default")]
    pub port: i32,
    /// `http`, `https`, `tcp`, `udp` or `grpc`; anything else is treated as `tcp`.
    #[serde(default, deserialize_with = "null_default")]
    pub protocol: String,
    /// Port default certificate, `ns_name` or `ns/name`.
    #[serde(default, deserialize_with = "null_default")]
    pub certificate_name: String,
    /// Protocol to the default service group (lower-cased).
    #[serde(rename = "backendProtocol", default, deserialize_with = "null_default")]
    pub backend_protocol: String,
    /// Default backend of the port.
    #[serde(rename = "serviceGroup", default, skip_serializing_if = "Option::is_none")]
    pub service_group: Option<ServiceGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Shared extension config (redirect, keepalive, ...), kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub config: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct FrontendStatus {
    /// `"<nodeHostname>/<podName>"` → port-conflict probe result of that pod.
    #[serde(default, deserialize_with = "null_default")]
    pub instances: BTreeMap<String, PortInstance>,
    /// alb-rs addition: `Accepted` etc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PortInstance {
    #[serde(default, deserialize_with = "null_default")]
    pub conflict: bool,
    #[serde(rename = "probeTime", default, deserialize_with = "null_default")]
    pub probe_time: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::json;

    #[test]
    fn crd_names_and_schema() {
        let crd = Frontend::crd();
        let v = serde_json::to_value(&crd).unwrap();
        assert_eq!(v["metadata"]["name"], "frontends.crd.alauda.io");
        assert_eq!(v["spec"]["group"], "crd.alauda.io");
        assert_eq!(v["spec"]["scope"], "Namespaced");
        assert_eq!(v["spec"]["names"]["kind"], "Frontend");
        assert_eq!(v["spec"]["names"]["plural"], "frontends");
        assert_eq!(v["spec"]["names"]["shortNames"], json!(["ft"]));
        let ver = &v["spec"]["versions"][0];
        assert_eq!(ver["name"], "v1");
        assert_eq!(ver["subresources"]["status"], json!({}));
        let props = &ver["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for f in ["port", "protocol", "certificate_name", "backendProtocol", "serviceGroup", "source", "config"] {
            assert!(props.get(f).is_some(), "missing {f}: {props}");
        }
        assert_eq!(props["config"]["x-kubernetes-preserve-unknown-fields"], true);
        let cols: Vec<_> =
            ver["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].clone()).collect();
        assert_eq!(cols, vec![json!("Port"), json!("Protocol"), json!("Accepted"), json!("Age")]);
        // Structural schema: no references or unions the API server would refuse.
        let text = serde_json::to_string(&ver["schema"]).unwrap();
        for bad in ["$ref", "anyOf", "oneOf", "allOf", "\"default\":null"] {
            assert!(!text.contains(bad), "{bad} in schema: {text}");
        }
        if std::env::var_os("ALB_PRINT_CRDS").is_some() {
            println!("{}", serde_yaml::to_string(&crd).unwrap());
        }
    }

    #[test]
    fn deserializes_original_object() {
        let ft: Frontend = serde_json::from_value(json!({
            "apiVersion": "crd.alauda.io/v1",
            "kind": "Frontend",
            "metadata": {"name": "alb-dev-00080", "namespace": "cpaas-system",
                         "labels": {"alb2.cpaas.io/name": "alb-dev"}},
            "spec": {"port": 80, "protocol": "http", "certificate_name": "", "backendProtocol": "",
                     "serviceGroup": {"session_affinity_policy": "", "session_affinity_attribute": "",
                                      "services": [{"name": "web", "namespace": "default", "port": 80, "weight": 100}]},
                     "source": null, "config": {"redirect": {"code": 308}}},
            "status": {"instances": {"node1/alb-dev-x": {"conflict": false, "probeTime": 1700000000}}}
        }))
        .unwrap();
        assert_eq!(ft.spec.port, 80);
        assert_eq!(ft.spec.service_group.as_ref().unwrap().services[0].weight, Some(100));
        assert_eq!(ft.status.unwrap().instances["node1/alb-dev-x"].probe_time, 1700000000);
        // Minimal object: everything defaulted.
        let ft: Frontend = serde_json::from_value(json!({
            "apiVersion": "crd.alauda.io/v1", "kind": "Frontend",
            "metadata": {"name": "x"}, "spec": {}
        }))
        .unwrap();
        assert_eq!(ft.spec, FrontendSpec::default());
    }
}
