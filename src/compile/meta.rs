//! The metadata alb keeps of the objects it caches by the ten thousand and only reads (Services,
//! EndpointSlices): the API's field names, so the code that reads `metadata.name` reads it the same way, but 96
//! bytes instead of k8s-openapi's `ObjectMeta` (360 bytes before any of its strings).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NameMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Services only (the Ingress sync's input fingerprint, [`crate::controller::ingress_inputs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Services only, as `uid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

impl NameMeta {
    /// Namespace ("" when unset) and name.
    pub fn ns_name(&self) -> (&str, &str) {
        (self.namespace.as_deref().unwrap_or(""), self.name.as_deref().unwrap_or(""))
    }

    /// Name and namespace of `meta`.
    pub fn names(meta: &ObjectMeta) -> NameMeta {
        NameMeta { name: meta.name.clone(), namespace: meta.namespace.clone(), ..Default::default() }
    }

    /// Name, namespace, uid and resourceVersion of `meta`.
    pub fn versioned(meta: &ObjectMeta) -> NameMeta {
        NameMeta { uid: meta.uid.clone(), resource_version: meta.resource_version.clone(), ..NameMeta::names(meta) }
    }
}
