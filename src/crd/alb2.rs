//! ALB2 (`crd.alauda.io`): one ALB instance. Served as `v1` (deprecated), `v2beta1` (storage) and `v2`
//! (same schema as v2beta1), like the original CRD, so existing objects and clients keep working
//! (controlplane.md §1.1–1.3). `spec.config` stays free-form: unknown keys are kept and ignored.

// kube's `printcolumn(...)` repeats `type_`: not a real duplicate.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Status written by the operator (state/reason/detail) and the leader (port status); kept permissive.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Alb2Status {
    /// Pending, Progressing, Running or Warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, rename = "probeTime", skip_serializing_if = "Option::is_none")]
    pub probe_time: Option<i64>,
    #[serde(default, rename = "probeTimeStr", skip_serializing_if = "Option::is_none")]
    pub probe_time_str: Option<String>,
    /// deploy / alb.portstatus / address / version, as the original writes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::preserve_unknown_object")]
    pub detail: Option<Value>,
}

pub mod v2beta1 {
    use super::*;

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
    #[kube(
        group = "crd.alauda.io",
        version = "v2beta1",
        kind = "ALB2",
        plural = "alaudaloadbalancer2",
        shortname = "alb2",
        namespaced,
        status = "Alb2Status",
        doc = "An ALB instance: the operator turns it into a Deployment, Services and an IngressClass",
        printcolumn(name = "Address", type_ = "string", json_path = ".spec.address"),
        printcolumn(name = "Allocated", type_ = "string", json_path = ".status.detail.address.msg"),
        printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
        printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
        printcolumn(name = "Mode", type_ = "string", json_path = ".spec.config.networkMode"),
        printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
    )]
    pub struct ALB2Spec {
        /// Access address(es), comma separated: IPv4, IPv6 or host names.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub address: Option<String>,
        /// Only `nginx`.
        #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
        pub kind: Option<String>,
        /// Deployment and runtime configuration (controlplane.md §1.3); unknown keys are kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(schema_with = "super::super::preserve_unknown_object")]
        pub config: Option<Value>,
    }
}

/// `v2`: served with the v2beta1 schema.
pub mod v2 {
    use super::*;

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
    #[kube(
        group = "crd.alauda.io",
        version = "v2",
        kind = "ALB2",
        plural = "alaudaloadbalancer2",
        shortname = "alb2",
        namespaced,
        status = "Alb2Status",
        printcolumn(name = "Address", type_ = "string", json_path = ".spec.address"),
        printcolumn(name = "Allocated", type_ = "string", json_path = ".status.detail.address.msg"),
        printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
        printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
        printcolumn(name = "Mode", type_ = "string", json_path = ".spec.config.networkMode"),
        printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
    )]
    pub struct ALB2Spec {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub address: Option<String>,
        #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
        pub kind: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(schema_with = "super::super::preserve_unknown_object")]
        pub config: Option<Value>,
    }
}

/// `v1`: deprecated, still served so old objects and clients keep working.
pub mod v1 {
    use super::*;

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
    #[kube(
        group = "crd.alauda.io",
        version = "v1",
        kind = "ALB2",
        plural = "alaudaloadbalancer2",
        shortname = "alb2",
        namespaced,
        status = "Alb2StatusV1",
        deprecated = "alb2.v1.crd is deprecated,use alb2.v2beta1.crd instead."
    )]
    pub struct ALB2Spec {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub address: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub bind_address: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub domains: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub iaas_id: Option<String>,
        #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
        pub kind: Option<String>,
    }

    #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
    pub struct Alb2StatusV1 {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub state: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
        #[serde(default, rename = "probeTime", skip_serializing_if = "Option::is_none")]
        pub probe_time: Option<i64>,
    }
}

#[allow(unused_imports)] // the controller reads the ALB2 of its instance
pub use v2beta1::{ALB2Spec, ALB2};

/// The merged CRD: v1 (served, deprecated), v2beta1 (served, storage), v2 (served).
pub fn crd(
) -> anyhow::Result<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    let crds = vec![v1::ALB2::crd(), v2beta1::ALB2::crd(), v2::ALB2::crd()];
    kube::core::crd::merge_crds(crds, "v2beta1").map_err(|e| anyhow::anyhow!("merging ALB2 CRD versions: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_versions_v2beta1_stored() {
        let crd = crd().unwrap();
        let versions: Vec<(String, bool, bool)> =
            crd.spec.versions.iter().map(|v| (v.name.clone(), v.served, v.storage)).collect();
        assert!(versions.contains(&("v1".into(), true, false)));
        assert!(versions.contains(&("v2beta1".into(), true, true)));
        assert!(versions.contains(&("v2".into(), true, false)));
        assert_eq!(crd.spec.names.plural, "alaudaloadbalancer2");
        assert_eq!(crd.spec.names.short_names, Some(vec!["alb2".to_string()]));
    }

    #[test]
    fn reads_an_original_object_with_unknown_config_keys() {
        let alb: ALB2 = serde_json::from_value(serde_json::json!({
            "apiVersion": "crd.alauda.io/v2beta1", "kind": "ALB2",
            "metadata": {"name": "alb-dev", "namespace": "cpaas-system"},
            "spec": {"address": "1.2.3.4", "type": "nginx",
                     "config": {"replicas": 1, "enableALb": true, "reloadtimeout": 600, "somethingNew": {"a": 1}}},
            "status": {"state": "Running", "probeTime": 1700000000,
                       "detail": {"deploy": {"state": "Running"}, "alb": {"portstatus": {}}}}
        }))
        .unwrap();
        assert_eq!(alb.spec.config.as_ref().unwrap()["somethingNew"]["a"], 1);
        assert_eq!(alb.status.unwrap().state.as_deref(), Some("Running"));
    }
}
