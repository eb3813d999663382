//! Which Ingresses an ALB claims (controlplane.md §2.1, §2.7).

use super::{AlbIngressConfig, IngressWorld, ALL_PROJECTS};
use crate::crd::{self, Frontend};
use crate::ingress::Ingress;
use k8s_openapi::api::core::v1::Namespace;
use std::collections::BTreeSet;

/// Annotation naming the class when `spec.ingressClassName` is absent.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// The Ingress class: `spec.ingressClassName`, else the `kubernetes.io/ingress.class` annotation; blank = none.
pub fn ingress_class(ing: &Ingress) -> Option<&str> {
    let spec = ing.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()).filter(|c| !c.trim().is_empty());
    spec.or_else(|| ing.annotation(CLASS_ANNOTATION).filter(|c| !c.trim().is_empty()))
}

/// The project of namespace `ns`: its `<d>/project` label, `""` when absent (or the namespace is unknown).
pub fn namespace_project(domain: &str, namespaces: &[Namespace], ns: &str) -> String {
    let key = crd::label_project(domain);
    namespaces
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(ns))
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(&key))
        .cloned()
        .unwrap_or_default()
}

/// Projects in labels: `project.<d>/<p>: "true"` and the legacy `project.<d>/name: <p>`.
pub fn label_projects(domain: &str, labels: Option<&std::collections::BTreeMap<String, String>>) -> BTreeSet<String> {
    let prefix = format!("project.{domain}/");
    let mut out = BTreeSet::new();
    for (k, v) in labels.into_iter().flatten() {
        let Some(p) = k.strip_prefix(&prefix) else { continue };
        if p == "name" {
            if !v.is_empty() {
                out.insert(v.clone());
            }
        } else if v == "true" {
            out.insert(p.to_string());
        }
    }
    out
}

fn project_allowed<'a>(mut projects: impl Iterator<Item = &'a str>, project: &str) -> bool {
    projects.any(|p| p == ALL_PROJECTS || (!project.is_empty() && p == project))
}

/// The existing Frontend of this ALB listening on `port` (Frontends of another namespace are ignored).
pub(crate) fn frontend_at<'a>(cfg: &AlbIngressConfig, frontends: &'a [Frontend], port: u16) -> Option<&'a Frontend> {
    frontends.iter().find(|f| {
        f.spec.port == i32::from(port)
            && f.metadata.namespace.as_deref().is_none_or(|ns| ns == cfg.alb_namespace)
            && f.metadata.deletion_timestamp.is_none()
    })
}

/// Whether this ALB serves `ing` (§2.1): its class is absent or the ALB name, and its namespace's project
/// is served (instance mode: `projects`; port mode: the project labels of the Frontends on both ingress ports,
/// which must exist).
pub fn claims(cfg: &AlbIngressConfig, world: &IngressWorld<'_>, ing: &Ingress) -> bool {
    if ing.metadata.deleting {
        return false;
    }
    if let Some(class) = ingress_class(ing) {
        if class != cfg.alb_name {
            return false;
        }
    }
    let ns = ing.metadata.namespace.as_deref().unwrap_or("");
    let project = namespace_project(&cfg.domain, world.namespaces, ns);
    if !cfg.port_mode {
        return project_allowed(cfg.projects.iter().map(String::as_str), &project);
    }
    [cfg.http_port, cfg.https_port].iter().all(|&port| match frontend_at(cfg, world.frontends, port) {
        Some(ft) => {
            let projects = label_projects(&cfg.domain, ft.metadata.labels.as_ref());
            project_allowed(projects.iter().map(String::as_str), &project)
        }
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use serde_json::json;

    fn cfg() -> AlbIngressConfig {
        AlbIngressConfig { alb_name: "alb-dev".into(), alb_namespace: "cpaas-system".into(), ..Default::default() }
    }

    fn with_class(class_field: Option<&str>, class_anno: Option<&str>) -> Ingress {
        let mut ing = ingress("ns1", "web", json!({"rules": [{"host": "a.com"}]}));
        if let Some(c) = class_field {
            ing.spec.as_mut().unwrap().ingress_class_name = Some(c.into());
        }
        if let Some(c) = class_anno {
            ing.metadata.annotations.insert(CLASS_ANNOTATION, c);
        }
        ing
    }

    #[test]
    fn class_field_then_annotation_blank_is_absent() {
        let (cfg, w) = (cfg(), World::default());
        let world = w.world();
        assert!(claims(&cfg, &world, &with_class(None, None)), "no class: claimed");
        assert!(claims(&cfg, &world, &with_class(Some("alb-dev"), None)));
        assert!(!claims(&cfg, &world, &with_class(Some("nginx"), None)));
        assert!(claims(&cfg, &world, &with_class(None, Some("alb-dev"))));
        assert!(!claims(&cfg, &world, &with_class(None, Some("nginx"))));
        // The spec field wins over the annotation.
        assert!(claims(&cfg, &world, &with_class(Some("alb-dev"), Some("nginx"))));
        assert!(!claims(&cfg, &world, &with_class(Some("nginx"), Some("alb-dev"))));
        // Blank counts as absent.
        assert!(claims(&cfg, &world, &with_class(Some(" "), None)));
        assert!(!claims(&cfg, &world, &with_class(Some(""), Some("other"))));
        assert_eq!(ingress_class(&with_class(Some(""), Some("x"))), Some("x"));
        // A deleted Ingress is never claimed.
        let mut gone = with_class(None, None);
        gone.metadata.deleting = true;
        assert!(!claims(&cfg, &world, &gone));
    }

    #[test]
    fn instance_mode_projects() {
        let w = World { namespaces: vec![namespace("ns1", Some("p1")), namespace("ns2", None)], ..Default::default() };
        let world = w.world();
        let ing1 = with_class(None, None);
        let ing2 = ingress("ns2", "web", json!({"rules": [{"host": "a.com"}]}));
        let mut cfg = cfg();
        assert!(claims(&cfg, &world, &ing1) && claims(&cfg, &world, &ing2), "ALL_ALL claims everything");
        cfg.projects = vec!["p1".into()];
        assert!(claims(&cfg, &world, &ing1));
        assert!(!claims(&cfg, &world, &ing2), "namespace without project");
        cfg.projects = vec!["p2".into()];
        assert!(!claims(&cfg, &world, &ing1));
        cfg.projects = vec![];
        assert!(!claims(&cfg, &world, &ing1) && !claims(&cfg, &world, &ing2), "no projects: nothing");
        assert_eq!(namespace_project("cpaas.io", &w.namespaces, "ns1"), "p1");
        assert_eq!(namespace_project("cpaas.io", &w.namespaces, "nope"), "");
    }

    #[test]
    fn port_mode_reads_frontend_project_labels() {
        let mut cfg = cfg();
        cfg.port_mode = true;
        cfg.projects = vec![]; // ignored in port mode
        let mut w = World { namespaces: vec![namespace("ns1", Some("p1"))], ..Default::default() };
        let ing = with_class(None, None);
        // Both Frontends must exist.
        w.frontends = vec![frontend("cpaas-system", "alb-dev-00080", 80, "http", &[("project.cpaas.io/p1", "true")])];
        assert!(!claims(&cfg, &w.world(), &ing), "https Frontend missing");
        w.frontends.push(frontend("cpaas-system", "alb-dev-00443", 443, "https", &[("project.cpaas.io/name", "p1")]));
        assert!(claims(&cfg, &w.world(), &ing), "new and legacy label forms");
        w.frontends[1] = frontend("cpaas-system", "alb-dev-00443", 443, "https", &[("project.cpaas.io/p2", "true")]);
        assert!(!claims(&cfg, &w.world(), &ing), "https Frontend serves another project");
        w.frontends[1] =
            frontend("cpaas-system", "alb-dev-00443", 443, "https", &[("project.cpaas.io/ALL_ALL", "true")]);
        assert!(claims(&cfg, &w.world(), &ing));
        w.frontends[0] = frontend("cpaas-system", "alb-dev-00080", 80, "http", &[("project.cpaas.io/p1", "false")]);
        assert!(!claims(&cfg, &w.world(), &ing), "\"false\" is not membership");
        // A Frontend of another namespace is not this ALB's.
        w.frontends[0] = frontend("other", "alb-dev-00080", 80, "http", &[("project.cpaas.io/p1", "true")]);
        assert!(!claims(&cfg, &w.world(), &ing));
    }
}
