//! What one Ingress's expected Frontends and Rules, and the plan against its existing Rules, depend on, as one
//! fingerprint per Ingress: the Ingress pass ([`super::ingress_sync`]) skips translating and planning an Ingress
//! whose fingerprint is the one of its last clean sync (at 10,000 Ingresses, one changed Ingress is planned, not
//! all of them).
//!
//! Conservative by design: besides the Ingress itself and its own Rules, the fingerprint covers its Namespace and
//! **every** Service of its namespace (backends by port name, error-page Services of annotations), the ALB's
//! settings and addresses, every Frontend, and every canary Ingress with the Services of its namespace (a main
//! Ingress merges its canaries; canaries are the Ingresses with the canary annotation, [`canary::marked`]). A
//! canary Ingress itself (its warnings depend on every main Ingress) is always planned, and so is everything when
//! an object lacks a resourceVersion (never the case for objects read from the API server).

use crate::crd::Rule;
use crate::ingress::Ingress;
use crate::ingress::{canary, AlbIngressConfig, IngressWorld};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

pub struct Inputs<'a> {
    /// Everything every Ingress depends on; `None`: some object has no resourceVersion, plan everything.
    global: Option<u64>,
    /// Per namespace name: its Namespace object and its Services (an order-independent sum).
    namespaces: HashMap<&'a str, u64>,
}

use crate::hashing::hash_of;

/// An object's identity and version; `None` without a resourceVersion.
fn version(m: &ObjectMeta) -> Option<u64> {
    fields_version(m.namespace.as_deref(), m.name.as_deref(), m.uid.as_deref(), m.resource_version.as_deref())
}

/// [`version`] of a Rule or Ingress (whose cached metadata is alb's [`crate::compile::meta::LeanMeta`]).
fn lean_version(m: &crate::compile::meta::LeanMeta) -> Option<u64> {
    fields_version(m.namespace.as_deref(), m.name.as_deref(), m.uid.as_deref(), m.resource_version.as_deref())
}

/// [`version`] of a Service (whose cached metadata is alb's lean [`crate::compile::meta::NameMeta`]).
fn service_version(m: &crate::compile::meta::NameMeta) -> Option<u64> {
    fields_version(m.namespace.as_deref(), m.name.as_deref(), m.uid.as_deref(), m.resource_version.as_deref())
}

/// The identity and version of an object from its namespace, name, uid and resourceVersion.
pub(super) fn fields_version(ns: Option<&str>, name: Option<&str>, uid: Option<&str>, rv: Option<&str>) -> Option<u64> {
    Some(hash_of((ns, name, uid, rv?)))
}

impl<'a> Inputs<'a> {
    pub fn of(cfg: &AlbIngressConfig, addresses: &[String], world: &IngressWorld<'a>) -> Inputs<'a> {
        let mut complete = true;
        let mut namespaces: HashMap<&'a str, u64> = HashMap::new();
        let mut add = |ns: &'a str, v: Option<u64>| match v {
            Some(v) => {
                let e = namespaces.entry(ns).or_default();
                *e = e.wrapping_add(v);
            }
            None => complete = false,
        };
        for svc in world.services {
            add(svc.metadata.namespace.as_deref().unwrap_or_default(), service_version(&svc.metadata));
        }
        for ns in world.namespaces {
            add(ns.metadata.name.as_deref().unwrap_or_default(), version(&ns.metadata));
        }
        let mut global = hash_of((format!("{cfg:?}"), addresses));
        for ft in world.frontends {
            match version(&ft.metadata) {
                Some(v) => global = global.wrapping_add(v),
                None => complete = false,
            }
        }
        // the world's canary index, which the translation of every main Ingress reads too
        for ing in world.canaries.of(world.ingresses).iter().filter_map(|&n| world.ingresses.get(n)) {
            let ns = ing.metadata.namespace.as_deref().unwrap_or_default();
            match lean_version(&ing.metadata) {
                Some(v) => {
                    global = global.wrapping_add(v).wrapping_add(hash_of(namespaces.get(ns)));
                }
                None => complete = false,
            }
        }
        Inputs { global: complete.then_some(global), namespaces }
    }

    /// The fingerprint of `ing` with its own Rules (in namespace/name order); never 0. `None`: always plan it.
    pub fn of_ingress(&self, ing: &Ingress, rules: &[&Rule]) -> Option<u64> {
        if canary::marked(ing) {
            return None;
        }
        let mut s = DefaultHasher::new();
        self.global?.hash(&mut s);
        lean_version(&ing.metadata)?.hash(&mut s);
        self.namespaces.get(ing.metadata.namespace.as_deref().unwrap_or_default()).hash(&mut s);
        for r in rules {
            lean_version(&r.metadata)?.hash(&mut s);
        }
        Some(s.finish() | 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::service::Service;
    use crate::crd::Frontend;
    use k8s_openapi::api::core::v1::Namespace;
    use serde_json::json;

    fn meta(ns: &str, name: &str, rv: &str) -> serde_json::Value {
        json!({"namespace": ns, "name": name, "uid": format!("uid-{name}"), "resourceVersion": rv})
    }

    fn ingress(ns: &str, name: &str, rv: &str, canary: bool) -> Ingress {
        let mut m = meta(ns, name, rv);
        if canary {
            m["annotations"] = json!({"nginx.ingress.kubernetes.io/canary": "true"});
        }
        serde_json::from_value(json!({"metadata": m, "spec": {}})).unwrap()
    }

    fn service(ns: &str, name: &str, rv: &str) -> Service {
        serde_json::from_value(json!({"metadata": meta(ns, name, rv)})).unwrap()
    }

    fn namespace(name: &str, rv: &str) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "resourceVersion": rv}})).unwrap()
    }

    fn rule(name: &str, rv: &str) -> Rule {
        serde_json::from_value(
            json!({"apiVersion": "crd.alauda.io/v1", "kind": "Rule", "metadata": meta("alb", name, rv),
            "spec": {"priority": 5}}),
        )
        .unwrap()
    }

    fn frontend(rv: &str) -> Frontend {
        serde_json::from_value(json!({"apiVersion": "crd.alauda.io/v1", "kind": "Frontend",
            "metadata": meta("alb", "alb-00080", rv), "spec": {"port": 80, "protocol": "http"}}))
        .unwrap()
    }

    struct World {
        ingresses: Vec<Ingress>,
        namespaces: Vec<Namespace>,
        services: Vec<Service>,
        frontends: Vec<Frontend>,
        rules: Vec<Rule>,
    }

    impl World {
        fn new() -> World {
            World {
                ingresses: vec![ingress("a", "web", "1", false), ingress("b", "shop", "1", false)],
                namespaces: vec![namespace("a", "1"), namespace("b", "1")],
                services: vec![service("a", "svc", "1"), service("b", "svc", "1")],
                frontends: vec![frontend("1")],
                rules: vec![rule("web-0", "1")],
            }
        }

        /// The fingerprints of both Ingresses (the first with its Rule).
        fn prints(&self, cfg: &AlbIngressConfig) -> (Option<u64>, Option<u64>) {
            let ingresses: Vec<_> = self.ingresses.iter().cloned().map(std::sync::Arc::new).collect();
            let services: Vec<_> = self.services.iter().cloned().map(std::sync::Arc::new).collect();
            let world = IngressWorld {
                ingresses: &ingresses,
                namespaces: &self.namespaces,
                services: &services,
                frontends: &self.frontends,
                canaries: &Default::default(),
            };
            let inputs = Inputs::of(cfg, &["10.0.0.1".to_string()], &world);
            let rules: Vec<&Rule> = self.rules.iter().collect();
            (inputs.of_ingress(&self.ingresses[0], &rules), inputs.of_ingress(&self.ingresses[1], &[]))
        }
    }

    fn cfg() -> AlbIngressConfig {
        AlbIngressConfig { alb_name: "alb-dev".into(), alb_namespace: "alb".into(), ..Default::default() }
    }

    #[test]
    fn what_an_ingress_depends_on_changes_its_fingerprint_and_nothing_else_does() {
        let cfg = cfg();
        let w = World::new();
        let (a, b) = w.prints(&cfg);
        assert!(a.is_some() && b.is_some() && a != b);
        assert_eq!(w.prints(&cfg), (a, b), "the same objects, the same fingerprints");

        let changed = |edit: &dyn Fn(&mut World)| {
            let mut w = World::new();
            edit(&mut w);
            w.prints(&cfg)
        };
        // its own objects: only its fingerprint moves
        let (a2, b2) = changed(&|w| w.ingresses[0].metadata.resource_version = Some("2".into()));
        assert!(a2 != a && b2 == b);
        let (a2, b2) = changed(&|w| w.rules[0].metadata.resource_version = Some("2".into()));
        assert!(a2 != a && b2 == b);
        let (a2, b2) = changed(&|w| w.services[0].metadata.resource_version = Some("2".into()));
        assert!(a2 != a && b2 == b, "a Service of its namespace");
        let (a2, b2) = changed(&|w| w.services.push(service("a", "new", "1")));
        assert!(a2 != a && b2 == b, "a new Service in its namespace");
        let (a2, b2) = changed(&|w| w.namespaces[1].metadata.resource_version = Some("2".into()));
        assert!(a2 == a && b2 != b, "the other Ingress's Namespace");
        // what every Ingress depends on
        let (a2, b2) = changed(&|w| w.frontends[0].metadata.resource_version = Some("2".into()));
        assert!(a2 != a && b2 != b);
        let mut other = cfg.clone();
        other.http_port = 8080;
        let (a2, b2) = World::new().prints(&other);
        assert!(a2 != a && b2 != b);
        // a canary Ingress: always planned itself, and its changes reach every main Ingress
        let (a2, b2) = changed(&|w| w.ingresses.push(ingress("b", "canary", "1", true)));
        assert!(a2 != a && b2 != b);
        let w =
            World { ingresses: vec![ingress("a", "web", "1", true), ingress("b", "shop", "1", false)], ..World::new() };
        assert_eq!(w.prints(&cfg).0, None);
        // an object without a resourceVersion: plan everything
        let (a2, b2) = changed(&|w| w.services[1].metadata.resource_version = None);
        assert!(a2.is_none() && b2.is_none());
    }
}
