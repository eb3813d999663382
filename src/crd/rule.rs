//! `Rule` (`crd.alauda.io/v1`): one L7 routing rule of a Frontend (controlplane.md §1.6).
//!
//! Two types: [`RuleObject`], the API object alb writes (and the CRD's schema), and [`Rule`], what alb reads and
//! the controller caches by the ten thousand: the spec packed ([`LeanRuleSpec`]), of the status its `Accepted`
//! condition, lean metadata ([`LeanMeta`]).

use super::{null_default, preserve_unknown_object, ServiceGroup, Source};
use crate::compile::meta::LeanMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// clippy mistakes the repeated `type_ = "string"` of the printcolumn(...) lists for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "crd.alauda.io",
    version = "v1",
    kind = "Rule",
    root = "RuleObject",
    plural = "rules",
    shortname = "rl",
    namespaced,
    status = "RuleStatus",
    doc = "One L7 routing rule of an ALB Frontend",
    printcolumn(name = "Frontend", type_ = "string", json_path = ".metadata.labels.alb2\\.cpaas\\.io/frontend"),
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(name = "Matches", type_ = "string", json_path = ".spec.dsl"),
    printcolumn(name = "Backends", type_ = "string", json_path = ".spec.serviceGroup.services[*].name"),
    printcolumn(name = "Accepted", type_ = "string", json_path = ".status.conditions[?(@.type==\"Accepted\")].status"),
    printcolumn(name = "Source-Type", type_ = "string", json_path = ".spec.source.type", priority = 1),
    printcolumn(name = "Source-Ns", type_ = "string", json_path = ".spec.source.namespace", priority = 1),
    printcolumn(name = "Source-Name", type_ = "string", json_path = ".spec.source.name", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct RuleSpec {
    /// Smaller sorts first.
    #[serde(default, deserialize_with = "null_default")]
    pub priority: i64,
    /// Match expression; `null` → the Rule is not compiled.
    #[serde(default)]
    #[schemars(with = "Option<Vec<DslxTerm>>")]
    pub dslx: Option<PackedDslx>,
    /// Display only.
    #[serde(default, deserialize_with = "null_default")]
    pub dsl: String,
    #[serde(default, deserialize_with = "null_default")]
    pub domain: String,
    #[serde(default, deserialize_with = "null_default")]
    pub certificate_name: String,
    /// Backends; absent for redirect-only rules.
    #[serde(rename = "serviceGroup", default, skip_serializing_if = "Option::is_none")]
    pub service_group: Option<ServiceGroup>,
    #[serde(rename = "backendProtocol", default, deserialize_with = "null_default")]
    pub backend_protocol: String,
    #[serde(default, deserialize_with = "null_default")]
    pub url: String,
    #[serde(default, deserialize_with = "null_default")]
    pub rewrite_base: String,
    #[serde(default, deserialize_with = "null_default")]
    pub rewrite_target: String,
    #[serde(rename = "enableCORS", default, deserialize_with = "null_default")]
    pub enable_cors: bool,
    #[serde(rename = "corsAllowHeaders", default, deserialize_with = "null_default")]
    pub cors_allow_headers: String,
    #[serde(rename = "corsAllowOrigin", default, deserialize_with = "null_default")]
    pub cors_allow_origin: String,
    #[serde(default, deserialize_with = "null_default")]
    pub vhost: String,
    /// Deprecated: merged into `config.redirect`.
    #[serde(rename = "redirectURL", default, deserialize_with = "null_default")]
    pub redirect_url: String,
    /// Deprecated: merged into `config.redirect`.
    #[serde(rename = "redirectCode", default, deserialize_with = "null_default")]
    pub redirect_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_default")]
    pub description: String,
    /// Shared extension config (redirect, ...), kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub config: Option<serde_json::Value>,
}

/// A Rule as alb reads it: the compiler's input, the controller's cache (10,000 Rules are 10,000 of these), the
/// Ingress planner's view of the Rules that exist. Decodes from the API's JSON (through [`RuleObject`]), so
/// manifests and fixtures read as before.
///
/// One pointer to its content ([`RuleData`], read through `Deref`): the compile cache and the last published
/// compilation hold the cached Rules through `Weak`s, which keep a replaced Rule's allocation (not its content)
/// until the next compilation, and every status write replaces a Rule. That allocation is 24 bytes (at 10,000
/// Rules, 10,000 of them stay after the status writes that follow a compilation).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "RuleObject")]
pub struct Rule(Box<RuleData>);

/// What alb keeps of a Rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleData {
    pub metadata: LeanMeta,
    /// The spec without its display-only text (`dsl`, `description`: nothing alb computes reads them, and
    /// [`RuleData::same_spec`] compares them by `display`).
    pub spec: LeanRuleSpec,
    /// [`display_hash`] of the spec's `dsl` and `description`.
    pub display: u64,
    /// Of the status, the `Accepted` condition as the status writer compares it (the only reader).
    pub accepted: Option<ConditionSeen>,
}

/// A hash of the display-only text of a Rule's spec (`dsl`, `description`).
fn display_hash(spec: &RuleSpec) -> u64 {
    crate::hashing::hash_of((&spec.dsl, &spec.description))
}

impl RuleData {
    fn of(metadata: LeanMeta, spec: &RuleSpec, accepted: Option<ConditionSeen>) -> RuleData {
        RuleData { metadata, spec: LeanRuleSpec::of(spec), display: display_hash(spec), accepted }
    }

    /// Whether this Rule's spec is `spec` (the display-only text compared by its hash).
    pub fn same_spec(&self, spec: &RuleSpec) -> bool {
        self.display == display_hash(spec) && self.spec == LeanRuleSpec::of(spec)
    }
}

/// The string fields of a Rule's spec that [`LeanRuleSpec`] holds in one text, in this order: `Text`, and a
/// reader of each public one (named as the field) on [`LeanRuleSpec`]. The source's three are read by
/// [`LeanRuleSpec::source`].
macro_rules! texts {
    ($($(#[$doc:meta])* $reader:ident: $public:ident,)* ; $($private:ident,)*) => {
        #[derive(Clone, Copy)]
        enum Text {
            $($public,)*
            $($private,)*
        }

        impl LeanRuleSpec {
            $($(#[$doc])* pub fn $reader(&self) -> &str {
                self.text(Text::$public)
            })*
        }
    };
}

texts! {
    domain: Domain,
    certificate_name: CertificateName,
    backend_protocol: BackendProtocol,
    url: Url,
    rewrite_base: RewriteBase,
    rewrite_target: RewriteTarget,
    cors_allow_headers: CorsAllowHeaders,
    cors_allow_origin: CorsAllowOrigin,
    vhost: Vhost,
    redirect_url: RedirectUrl,
    /// `spec.type`.
    kind: Kind,
    ;
    SourceKind,
    SourceNamespace,
    SourceName,
}

const TEXTS: usize = Text::SourceName as usize + 1;

/// A Rule's spec as the controller caches it (10,000 Rules are 10,000 of these): [`RuleSpec`] without `dsl`
/// and `description`, its fourteen strings (the source's three among them) one after the other in one
/// allocation. A [`RuleSpec`] is 520 bytes before its strings, each string a separate allocation; this is 216,
/// and a cached Rule fits jemalloc's 512-byte size class instead of the 768-byte one
/// (`controller::stores` tests it). The strings are read through methods named as the fields.
#[derive(Clone, Default, PartialEq)]
pub struct LeanRuleSpec {
    pub priority: i64,
    pub dslx: Option<PackedDslx>,
    pub enable_cors: bool,
    pub redirect_code: i32,
    /// `source` was set (its strings are in `text`): a source of empty strings is not an absent one.
    has_source: bool,
    pub service_group: Option<ServiceGroup>,
    pub config: Option<serde_json::Value>,
    text: Box<str>,
    /// Where each of the [`Text`] fields ends in `text`.
    ends: [u32; TEXTS],
}

/// A Rule's `spec.source`, read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceRef<'a> {
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl Source {
    pub fn view(&self) -> SourceRef<'_> {
        SourceRef { kind: &self.kind, namespace: &self.namespace, name: &self.name }
    }
}

impl LeanRuleSpec {
    pub fn of(spec: &RuleSpec) -> LeanRuleSpec {
        // Every field named: a field added to RuleSpec does not compile here until it is kept (or said not to be).
        let RuleSpec {
            priority,
            dslx,
            dsl: _,
            domain,
            certificate_name,
            service_group,
            backend_protocol,
            url,
            rewrite_base,
            rewrite_target,
            enable_cors,
            cors_allow_headers,
            cors_allow_origin,
            vhost,
            redirect_url,
            redirect_code,
            source,
            kind,
            description: _,
            config,
        } = spec;
        let src = source.as_ref();
        let texts: [&str; TEXTS] = [
            domain,
            certificate_name,
            backend_protocol,
            url,
            rewrite_base,
            rewrite_target,
            cors_allow_headers,
            cors_allow_origin,
            vhost,
            redirect_url,
            kind,
            src.map_or("", |s| &s.kind),
            src.map_or("", |s| &s.namespace),
            src.map_or("", |s| &s.name),
        ];
        let (text, ends) = crate::compile::meta::packed(texts.into_iter());
        // (one end per text, so the conversion does not fail)
        let ends = <[u32; TEXTS]>::try_from(&*ends).unwrap_or([0; TEXTS]);
        LeanRuleSpec {
            priority: *priority,
            dslx: dslx.clone(),
            enable_cors: *enable_cors,
            redirect_code: *redirect_code,
            has_source: source.is_some(),
            service_group: service_group.clone(),
            config: config.clone(),
            text,
            ends,
        }
    }

    fn text(&self, t: Text) -> &str {
        crate::compile::meta::text_at(&self.text, &self.ends, t as usize)
    }

    pub fn source(&self) -> Option<SourceRef<'_>> {
        self.has_source.then(|| SourceRef {
            kind: self.text(Text::SourceKind),
            namespace: self.text(Text::SourceNamespace),
            name: self.text(Text::SourceName),
        })
    }

    /// As the API type (`dsl` and `description` empty).
    pub fn to_spec(&self) -> RuleSpec {
        RuleSpec {
            priority: self.priority,
            dslx: self.dslx.clone(),
            dsl: String::new(),
            domain: self.domain().into(),
            certificate_name: self.certificate_name().into(),
            service_group: self.service_group.clone(),
            backend_protocol: self.backend_protocol().into(),
            url: self.url().into(),
            rewrite_base: self.rewrite_base().into(),
            rewrite_target: self.rewrite_target().into(),
            enable_cors: self.enable_cors,
            cors_allow_headers: self.cors_allow_headers().into(),
            cors_allow_origin: self.cors_allow_origin().into(),
            vhost: self.vhost().into(),
            redirect_url: self.redirect_url().into(),
            redirect_code: self.redirect_code,
            source: self.source().map(|s| Source {
                kind: s.kind.into(),
                namespace: s.namespace.into(),
                name: s.name.into(),
            }),
            kind: self.kind().into(),
            description: String::new(),
            config: self.config.clone(),
        }
    }

    /// Changes the spec through its API type (tests build Rules and edit them).
    #[cfg(test)]
    pub fn edit(&mut self, f: impl FnOnce(&mut RuleSpec)) {
        let mut spec = self.to_spec();
        f(&mut spec);
        *self = LeanRuleSpec::of(&spec);
    }
}

impl std::fmt::Debug for LeanRuleSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_spec().fmt(f)
    }
}

impl std::ops::Deref for Rule {
    type Target = RuleData;

    fn deref(&self) -> &RuleData {
        &self.0
    }
}

impl std::ops::DerefMut for Rule {
    fn deref_mut(&mut self) -> &mut RuleData {
        &mut self.0
    }
}

impl Rule {
    /// What the controller's cache keeps of a watched Rule (copies; the object is not taken apart).
    pub fn of(o: &RuleObject) -> Rule {
        let accepted = ConditionSeen::accepted(o.status.as_ref());
        Rule(Box::new(RuleData::of(LeanMeta::of(&o.metadata), &o.spec, accepted)))
    }
}

impl From<RuleObject> for Rule {
    fn from(o: RuleObject) -> Rule {
        Rule::of(&o)
    }
}

/// The type of the condition alb writes on Frontends and Rules.
pub const ACCEPTED: &str = "Accepted";

/// The `Accepted` condition among an object's conditions.
pub fn accepted_condition(conditions: Option<&[Condition]>) -> Option<&Condition> {
    conditions?.iter().find(|c| c.type_ == ACCEPTED)
}

/// A condition reduced to what the status writer compares (`controller/status.rs`): its status, a digest of its
/// reason, message and observedGeneration, and when it last flipped. 40 bytes in place of a `Condition` with its
/// five strings (at 10,000 cached Rules ~3 MB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionSeen {
    /// `True` or `False` (None: any other status, such as `Unknown`).
    pub status: Option<bool>,
    /// [`ConditionSeen::digest`] of the reason, message and observedGeneration.
    pub digest: u64,
    pub last_transition_time: Time,
}

impl ConditionSeen {
    /// The `Accepted` condition of a Rule's status (a status of `True`; anything else counts as not accepted).
    pub fn accepted(status: Option<&RuleStatus>) -> Option<ConditionSeen> {
        accepted_condition(status.and_then(|s| s.conditions.as_deref())).map(ConditionSeen::of)
    }

    pub fn of(c: &Condition) -> ConditionSeen {
        ConditionSeen {
            status: match c.status.as_str() {
                "True" => Some(true),
                "False" => Some(false),
                _ => None,
            },
            digest: ConditionSeen::digest(&c.reason, &c.message, c.observed_generation),
            last_transition_time: c.last_transition_time.clone(),
        }
    }

    /// Equal for equal inputs within one process (not kept anywhere).
    pub fn digest(reason: &str, message: &str, observed_generation: Option<i64>) -> u64 {
        crate::hashing::hash_of((reason, message, observed_generation))
    }
}

/// One ANDed term of a dslx: `values` rows are ORed, each row is `[OP, args...]`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct DslxTerm {
    /// Matcher: HOST, URL, SRC_IP, METHOD, HEADER, PARAM, COOKIE.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: String,
    /// Header/param/cookie name (dual matchers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub values: Vec<Vec<String>>,
}

/// A Rule's `spec.dslx` as alb holds it: the terms' JSON text (the controller caches 10,000 Rules; the field is
/// also 8 bytes smaller than a `Vec`, which keeps the cached Rule in its allocator size class). The compiler
/// decodes it once per new or changed Rule.
pub type PackedDslx = crate::compile::meta::JsonText<Vec<DslxTerm>>;

/// alb-rs addition (the original Rule had no status).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct RuleStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::meta::Meta;
    use kube::CustomResourceExt;
    use serde_json::json;

    #[test]
    fn crd_names_and_schema() {
        let crd = RuleObject::crd();
        let v = serde_json::to_value(&crd).unwrap();
        assert_eq!(v["metadata"]["name"], "rules.crd.alauda.io");
        assert_eq!(v["spec"]["group"], "crd.alauda.io");
        assert_eq!(v["spec"]["scope"], "Namespaced");
        assert_eq!(v["spec"]["names"]["kind"], "Rule");
        assert_eq!(v["spec"]["names"]["plural"], "rules");
        assert_eq!(v["spec"]["names"]["shortNames"], json!(["rl"]));
        let ver = &v["spec"]["versions"][0];
        assert_eq!(ver["name"], "v1");
        assert_eq!(ver["subresources"]["status"], json!({}));
        let spec = &ver["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for f in [
            "priority",
            "dslx",
            "dsl",
            "domain",
            "certificate_name",
            "serviceGroup",
            "backendProtocol",
            "url",
            "rewrite_base",
            "rewrite_target",
            "enableCORS",
            "corsAllowHeaders",
            "corsAllowOrigin",
            "vhost",
            "redirectURL",
            "redirectCode",
            "source",
            "type",
            "description",
            "config",
        ] {
            assert!(spec.get(f).is_some(), "missing {f}");
        }
        assert_eq!(spec["config"]["x-kubernetes-preserve-unknown-fields"], true);
        let values = &spec["dslx"]["items"]["properties"]["values"];
        assert_eq!(values["items"]["items"]["type"], "string", "{values}");
        let cols = ver["additionalPrinterColumns"].as_array().unwrap();
        assert_eq!(cols[0]["jsonPath"], ".metadata.labels.alb2\\.cpaas\\.io/frontend");
        assert_eq!(cols[1]["jsonPath"], ".spec.priority");
        assert_eq!(cols[2]["jsonPath"], ".spec.dsl");
        // Structural schema: no references or unions the API server would refuse.
        let text = serde_json::to_string(&ver["schema"]).unwrap();
        for bad in ["$ref", "anyOf", "oneOf", "allOf", "\"default\":null"] {
            assert!(!text.contains(bad), "{bad} in schema: {text}");
        }
        if std::env::var_os("ALB_PRINT_CRDS").is_some() {
            println!("{}", serde_yaml::to_string(&crd).unwrap());
        }
    }

    /// The cached Rule keeps what alb reads, and tells a status-only change as the full object does.
    #[test]
    fn lean_rule_keeps_what_alb_reads() {
        let obj: RuleObject = serde_json::from_value(json!({
            "apiVersion": "crd.alauda.io/v1", "kind": "Rule",
            "metadata": {"name": "r", "namespace": "ns", "uid": "u-1", "resourceVersion": "42", "generation": 3,
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"alb2.cpaas.io/name": "alb", "alb2.cpaas.io/frontend": "alb-00080"},
                         "annotations": {"a": "1"},
                         "ownerReferences": [{"apiVersion": "crd.alauda.io/v1", "kind": "Frontend",
                                              "name": "alb-00080", "uid": "ft"}]},
            "spec": {"priority": 5, "dslx": [{"type": "URL", "values": [["STARTS_WITH", "/a"]]}],
                     "dsl": "[{[[STARTS_WITH /a]] URL }]", "description": "ns/ing:80:0"},
            "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        let lean = Rule::of(&obj);
        let m = &lean.metadata;
        assert_eq!(
            (m.ns(), m.name(), m.uid.as_deref(), m.resource_version.as_deref()),
            ("ns", "r", Some("u-1"), Some("42"))
        );
        assert_eq!(m.label("alb2.cpaas.io/frontend"), Some("alb-00080"));
        assert_eq!(m.annotation("a"), Some("1"));
        assert_eq!(m.owners, crate::compile::meta::owners_hash(obj.metadata.owner_references.as_deref()));
        assert_ne!(m.owners, crate::compile::meta::owners_hash(None));
        assert!(lean.same_spec(&obj.spec));
        assert_eq!(
            lean.spec.to_spec(),
            RuleSpec { dsl: String::new(), description: String::new(), ..obj.spec.clone() }
        );
        for edit in [
            |s: &mut RuleSpec| s.dsl.push('x'),
            |s: &mut RuleSpec| s.description.push('x'),
            |s: &mut RuleSpec| s.priority += 1,
            |s: &mut RuleSpec| s.url.push('x'),
        ] {
            let mut other = obj.spec.clone();
            edit(&mut other);
            assert!(!lean.same_spec(&other), "{other:?}");
        }
        let c = &obj.status.as_ref().unwrap().conditions.as_ref().unwrap()[0];
        assert_eq!(lean.accepted, Some(ConditionSeen::of(c)));
        let seen = lean.accepted.as_ref().unwrap();
        assert!(seen.status == Some(true) && seen.digest == ConditionSeen::digest("Accepted", "", None));
        assert_eq!(seen.last_transition_time, c.last_transition_time);
        let mut other = c.clone();
        for edit in [
            |c: &mut Condition| c.status = "False".into(),
            |c: &mut Condition| c.status = "Unknown".into(),
            |c: &mut Condition| c.message = "m".into(),
            |c: &mut Condition| c.reason = "R".into(),
            |c: &mut Condition| c.observed_generation = Some(3),
        ] {
            other.clone_from(c);
            edit(&mut other);
            assert_ne!(ConditionSeen::of(&other), *seen, "{other:?}");
        }
        assert_eq!(ConditionSeen::accepted(None), None);
        let statuses =
            ["True", "False", "Unknown"].map(|st| ConditionSeen::of(&Condition { status: st.into(), ..c.clone() }));
        assert_eq!(statuses.map(|s| s.status), [Some(true), Some(false), None]);
        // decoding straight into the lean type (manifests, fixtures) gives the same
        assert_eq!(serde_json::from_value::<Rule>(serde_json::to_value(&obj).unwrap()).unwrap(), lean);
        // the watch compares the cached Rule's fingerprint with the next object's
        assert_eq!(m.fingerprint(), super::super::spec_fingerprint(&obj.metadata));
        assert!(m.fingerprint().is_some());
        let mut relabelled = obj.clone();
        relabelled.metadata.labels.as_mut().unwrap().insert("x".into(), "y".into());
        assert_ne!(Rule::of(&relabelled).metadata.fingerprint(), m.fingerprint());
        let mut deleting = obj.clone();
        deleting.metadata.deletion_timestamp = obj.metadata.creation_timestamp.clone();
        assert_eq!(Rule::of(&deleting).metadata.fingerprint(), super::super::spec_fingerprint(&deleting.metadata));
        assert_ne!(Rule::of(&deleting).metadata.fingerprint(), m.fingerprint());
    }

    /// What a `Weak` keeps of a replaced Rule (see [`Rule`]) is one pointer; its content is smaller than the
    /// API object.
    #[test]
    fn cached_rule_is_small_inline() {
        assert_eq!(std::mem::size_of::<Rule>(), std::mem::size_of::<usize>());
        let (lean, full) = (std::mem::size_of::<RuleData>(), std::mem::size_of::<RuleObject>());
        assert!(lean < full, "RuleData {lean} bytes, RuleObject {full}");
    }

    #[test]
    fn deserializes_original_object() {
        let rl: RuleObject = serde_json::from_value(json!({
            "apiVersion": "crd.alauda.io/v1", "kind": "Rule",
            "metadata": {"name": "alb-dev-00080-abc", "namespace": "cpaas-system",
                         "labels": {"alb2.cpaas.io/name": "alb-dev", "alb2.cpaas.io/frontend": "alb-dev-00080"}},
            "spec": {
                "priority": 5,
                "dslx": [{"type": "URL", "values": [["STARTS_WITH", "/a"]]},
                         {"type": "HEADER", "key": "x_user", "values": [["EQ", "bob"]]}],
                "dsl": "[{[[STARTS_WITH /a]] URL }]", "domain": "", "certificate_name": "",
                "serviceGroup": {"session_affinity_policy": "", "session_affinity_attribute": "",
                                 "services": [{"name": "web", "namespace": "default", "port": 80, "weight": 100}]},
                "backendProtocol": "HTTP", "url": "/a", "rewrite_base": "/a", "rewrite_target": "",
                "enableCORS": false, "corsAllowHeaders": "", "corsAllowOrigin": "", "vhost": "",
                "redirectURL": "", "redirectCode": 0,
                "source": {"type": "ingress", "name": "web", "namespace": "default"},
                "type": "", "description": "default/web:80:0", "config": null
            }
        }))
        .unwrap();
        let dslx = rl.spec.dslx.as_ref().unwrap().get().unwrap();
        assert_eq!(dslx[1].key.as_deref(), Some("x_user"));
        assert_eq!(rl.spec.source.as_ref().unwrap().kind, "ingress");
        assert_eq!(rl.spec.backend_protocol, "HTTP");
        let rl: Rule = serde_json::from_value(json!({
            "apiVersion": "crd.alauda.io/v1", "kind": "Rule", "metadata": {"name": "x"},
            "spec": {"dslx": null, "serviceGroup": null}
        }))
        .unwrap();
        assert_eq!(rl.spec.to_spec(), RuleSpec::default());
        assert_eq!(rl.spec.source(), None);
    }
}

#[cfg(test)]
mod lean_spec_tests {
    use super::*;
    use serde_json::json;

    /// Every field of the API's spec is kept (but `dsl` and `description`), read back as it was, and a change of
    /// any one of them is a different spec.
    #[test]
    fn every_field_is_kept_and_compared() {
        let full: RuleSpec = serde_json::from_value(json!({
            "priority": 7, "dslx": [{"type": "HOST", "values": [["EQ", "a.com"]]}], "dsl": "(EQ HOST a.com)",
            "domain": "a.com", "certificate_name": "ns/cert", "backendProtocol": "HTTPS", "url": "/a",
            "rewrite_base": "/a(.*)", "rewrite_target": "/$1", "enableCORS": true, "corsAllowHeaders": "X-A",
            "corsAllowOrigin": "https://b.com", "vhost": "in.svc", "redirectURL": "https://c.com", "redirectCode": 301,
            "source": {"type": "ingress", "namespace": "ns", "name": "ing"}, "type": "custom",
            "description": "d", "config": {"timeout": {"proxy_read_timeout_ms": 5}},
            "serviceGroup": {"session_affinity_policy": "cookie", "services": [{"name": "s", "namespace": "ns", "port": 80}]}
        }))
        .unwrap();
        let lean = LeanRuleSpec::of(&full);
        assert_eq!(lean.to_spec(), RuleSpec { dsl: String::new(), description: String::new(), ..full.clone() });
        assert_eq!(
            [lean.domain(), lean.certificate_name(), lean.backend_protocol(), lean.url(), lean.rewrite_base()],
            ["a.com", "ns/cert", "HTTPS", "/a", "/a(.*)"]
        );
        assert_eq!(lean.source(), Some(SourceRef { kind: "ingress", namespace: "ns", name: "ing" }));
        let edits: [fn(&mut RuleSpec); 19] = [
            |s| s.priority += 1,
            |s| s.dslx = None,
            |s| s.domain.push('x'),
            |s| s.certificate_name.push('x'),
            |s| s.service_group = None,
            |s| s.backend_protocol.push('x'),
            |s| s.url.push('x'),
            |s| s.rewrite_base.push('x'),
            |s| s.rewrite_target.push('x'),
            |s| s.enable_cors = false,
            |s| s.cors_allow_headers.push('x'),
            |s| s.cors_allow_origin.push('x'),
            |s| s.vhost.push('x'),
            |s| s.redirect_url.push('x'),
            |s| s.redirect_code += 1,
            |s| s.source = Some(Source::default()),
            |s| s.kind.push('x'),
            |s| s.config = None,
            // the same strings split differently between two fields
            |s| (s.domain, s.certificate_name) = ("a.comns".into(), "/cert".into()),
        ];
        for edit in edits {
            let mut other = full.clone();
            edit(&mut other);
            assert_ne!(LeanRuleSpec::of(&other), lean, "{other:?}");
            assert_eq!(LeanRuleSpec::of(&other).to_spec().dsl, "");
        }
        // an absent source is not one of empty strings
        let none = RuleSpec { source: None, ..Default::default() };
        let empty = RuleSpec { source: Some(Source::default()), ..Default::default() };
        assert_ne!(LeanRuleSpec::of(&none), LeanRuleSpec::of(&empty));
        assert_eq!(LeanRuleSpec::of(&empty).to_spec().source, Some(Source::default()));
        assert_eq!(LeanRuleSpec::of(&none).source(), None);
    }
}
