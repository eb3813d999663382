//! Custom resources of the original ALB that alb-rs reads: `Frontend` and `Rule` (`crd.alauda.io/v1`),
//! plus the labels that bind them to an ALB (controlplane.md §1.5, §1.6, §1.8).
//!
//! The serde names are exactly those of the original CRDs so existing objects deserialize unchanged; every
//! field is optional or defaulted, and `null` is accepted wherever the Go types could write one.

// Until main.rs wires the controller, most of this module is only reached from tests.

pub mod alb2;
pub mod frontend;
pub mod rule;

#[allow(unused_imports)] // public API for the controller
pub use frontend::{Frontend, FrontendSpec, FrontendStatus, PortInstance};
#[allow(unused_imports)]
pub use rule::{
    accepted_condition, ConditionSeen, DslxTerm, LeanRuleSpec, PackedDslx, Rule, RuleObject, RuleSpec, RuleStatus,
    SourceRef, ACCEPTED,
};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// API group of Frontend and Rule.
pub const GROUP: &str = "crd.alauda.io";
/// Label/annotation domain used when none is configured.
pub const DEFAULT_DOMAIN: &str = "cpaas.io";

/// `alb2.<d>/name`: the ALB a Frontend or Rule belongs to.
pub fn label_name(domain: &str) -> String {
    format!("alb2.{domain}/name")
}

/// `alb2.<d>/frontend`: the Frontend a Rule belongs to.
pub fn label_frontend(domain: &str) -> String {
    format!("alb2.{domain}/frontend")
}

/// `alb2.<d>/source-type` (`ingress` for ingress-created Rules).
pub fn label_source_type(domain: &str) -> String {
    format!("alb2.{domain}/source-type")
}

/// `alb2.<d>/source-name`: name of the source object (truncated to 63 chars by the writer).
pub fn label_source_name(domain: &str) -> String {
    format!("alb2.{domain}/source-name")
}

/// `alb2.<d>/source-ns`: namespace of the source object.
pub fn label_source_ns(domain: &str) -> String {
    format!("alb2.{domain}/source-ns")
}

/// `alb2.<d>/source-index`: `"<rule>-<path>"` index inside the source Ingress.
pub fn label_source_index(domain: &str) -> String {
    format!("alb2.{domain}/source-index")
}

/// `<d>/project`: project of an ingress-created Rule / of a Namespace.
pub fn label_project(domain: &str) -> String {
    format!("{domain}/project")
}

/// What of a Frontend, Rule or ALB2 the compiler reads besides its spec, with the spec itself stood for by
/// `metadata.generation` (their CRDs have a status subresource, so it moves with every spec change): a hash of the
/// generation, labels, annotations and deletion mark; None without a generation (not served by an API server).
/// The controller's stores tell status-only changes by it, the compile cache a Rule replaced by a status write.
pub fn spec_fingerprint(meta: &kube::core::ObjectMeta) -> Option<u64> {
    fn pairs(m: &Option<std::collections::BTreeMap<String, String>>) -> impl Iterator<Item = (&str, &str)> {
        m.iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fingerprint_of(meta.generation, pairs(&meta.labels), pairs(&meta.annotations), meta.deletion_timestamp.is_some())
}

/// [`spec_fingerprint`] of its parts (labels and annotations in key order), for alb's lean
/// [`crate::compile::meta::LeanMeta`] too, whose pairs are hashed as they are stored (nothing collected).
pub fn fingerprint_of<'a>(
    generation: Option<i64>,
    mut labels: impl Iterator<Item = (&'a str, &'a str)>,
    mut annotations: impl Iterator<Item = (&'a str, &'a str)>,
    deleting: bool,
) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    generation?.hash(&mut h);
    // each list is followed by its length: an entry cannot move from one list to the other unnoticed
    let mut list = |pairs: &mut dyn Iterator<Item = (&'a str, &'a str)>| {
        let mut n = 0usize;
        for p in pairs {
            p.hash(&mut h);
            n += 1;
        }
        n.hash(&mut h);
    };
    list(&mut labels);
    list(&mut annotations);
    deleting.hash(&mut h);
    Some(h.finish())
}

/// `{type, name, namespace}`: who created a Frontend or Rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Source {
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub namespace: String,
}

/// Backends of a Frontend (port default) or a Rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ServiceGroup {
    #[serde(default, deserialize_with = "null_default")]
    pub session_affinity_policy: String,
    #[serde(default, deserialize_with = "null_default")]
    pub session_affinity_attribute: String,
    #[serde(default, deserialize_with = "null_default")]
    pub services: Vec<ServiceRef>,
}

/// One Service of a service group; `port` is the Service port (not the target port).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ServiceRef {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Empty → the namespace of the object holding the group.
    #[serde(default, deserialize_with = "null_default")]
    pub namespace: String,
    #[serde(default, deserialize_with = "null_default")]
    pub port: i32,
    /// 0..100 (clamped); absent → 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

type Crd = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Every CRD alb-rs owns, as installed by the chart (`crds/`) and printed by `alb crds`.
pub fn all_crds() -> anyhow::Result<Vec<(&'static str, Crd)>> {
    use kube::CustomResourceExt;
    let mut out = vec![
        ("crd.alauda.io_alaudaloadbalancer2.yaml", alb2::crd()?),
        ("crd.alauda.io_frontends.yaml", Frontend::crd()),
        ("crd.alauda.io_rules.yaml", RuleObject::crd()),
    ];
    for (_, crd) in &mut out {
        let kind = crd.spec.names.kind.clone();
        for v in &mut crd.spec.versions {
            if let Some(schema) = v.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
                // titled by the Rust type; the Rule's is `RuleObject` (`rule.rs`), its kind `Rule`
                schema.title = Some(kind.clone());
                let mut value = serde_json::to_value(&*schema)?;
                strip_defaults(&mut value);
                *schema = serde_json::from_value(value)?;
            }
        }
    }
    Ok(out)
}

/// The API server would write schema defaults into every stored object; existing objects must come back
/// exactly as they were written, so our CRDs declare none (the Rust types default on read instead).
fn strip_defaults(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("default");
            m.values_mut().for_each(strip_defaults);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_defaults),
        _ => {}
    }
}

/// One YAML document (with a header comment) for one CRD.
pub fn crd_yaml(crd: &Crd) -> anyhow::Result<String> {
    Ok(format!("# generated by `alb crds --out-dir crds`; do not edit\n{}", serde_yaml::to_string(crd)?))
}

/// `null` → `T::default()` (the Go types write `null` for nil slices and maps).
pub(crate) fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Schema of free-form `config` objects: any object, unknown fields preserved.
pub(crate) fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_folder_matches_the_rust_types() {
        // Regenerate with: cargo run -- crds --out-dir crds
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        for (file, crd) in all_crds().unwrap() {
            let want = crd_yaml(&crd).unwrap();
            let got = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(got == want, "crds/{file} drifted from the Rust types: run `cargo run -- crds --out-dir crds`");
        }
    }

    #[test]
    fn crds_declare_no_defaults() {
        for (file, crd) in all_crds().unwrap() {
            assert!(!crd_yaml(&crd).unwrap().contains("default:"), "{file}");
        }
    }

    #[test]
    fn labels_default_domain() {
        assert_eq!(label_name(DEFAULT_DOMAIN), "alb2.cpaas.io/name");
        assert_eq!(label_frontend(DEFAULT_DOMAIN), "alb2.cpaas.io/frontend");
        assert_eq!(label_source_type("x.io"), "alb2.x.io/source-type");
        assert_eq!(label_source_name("x.io"), "alb2.x.io/source-name");
        assert_eq!(label_source_ns("x.io"), "alb2.x.io/source-ns");
        assert_eq!(label_source_index("x.io"), "alb2.x.io/source-index");
        assert_eq!(label_project("x.io"), "x.io/project");
    }

    #[test]
    fn service_group_accepts_nulls() {
        let sg: ServiceGroup = serde_json::from_value(serde_json::json!({
            "session_affinity_policy": null,
            "services": [{"name": "a", "namespace": null, "port": 80}]
        }))
        .unwrap();
        assert_eq!(sg.services[0].namespace, "");
        assert_eq!(sg.services[0].weight, None);
    }
}
