//! The diff between what one Ingress needs and what exists (controlplane.md §2.4), and the cleanup of an
//! Ingress that is deleted or no longer claimed (§2.1.3).
//!
//! The controller applies a [`Plan`] in this order: Frontends (create, update), then Rules: creates, deletes,
//! updates. Rule names are deterministic ([`super::translate::rule_name`]); should a create still meet
//! `AlreadyExists` (a Rule of another Ingress with the same name), the controller retries with the next
//! `attempt`.
//!
//! The Rules that exist are the controller's cached [`Rule`]s, which keep only what alb reads: an update is
//! planned as the expected object under the existing name, and [`updated`] merges it into the object the API
//! server holds at write time.

use super::translate::{annotation_path_index, annotation_rule_index, Expected, SOURCE_TYPE};
use super::AlbIngressConfig;
use crate::compile::meta::{Meta, Pairs};
use crate::crd::{self, Frontend, Rule, RuleObject};
use std::collections::{BTreeMap, BTreeSet};

/// What to write to the API server.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub create_frontends: Vec<Frontend>,
    /// Existing objects (name, resourceVersion, uid kept) with the new content.
    pub update_frontends: Vec<Frontend>,
    pub create_rules: Vec<RuleObject>,
    /// The expected objects under the name of the Rule each replaces: written with [`updated`].
    pub update_rules: Vec<RuleObject>,
    /// `(namespace, name)`.
    pub delete_rules: Vec<(String, String)>,
}

impl Plan {
    /// A Vec grown by one push has room for 4 objects (a Rule is 912 bytes before its strings): at start-up,
    /// 10,000 plans of one Rule each held ~27 MB of such room until their writes.
    fn shrink_to_fit(&mut self) {
        self.create_frontends.shrink_to_fit();
        self.update_frontends.shrink_to_fit();
        self.create_rules.shrink_to_fit();
        self.update_rules.shrink_to_fit();
        self.delete_rules.shrink_to_fit();
    }

    pub fn is_empty(&self) -> bool {
        self.create_frontends.is_empty()
            && self.update_frontends.is_empty()
            && self.create_rules.is_empty()
            && self.update_rules.is_empty()
            && self.delete_rules.is_empty()
    }
}

/// Identity of an ingress Rule: (Frontend label, `"<ruleIdx>:<pathIdx>"`); `None` without identity annotations.
fn identity(cfg: &AlbIngressConfig, m: &dyn Meta) -> Option<(String, String)> {
    let d = &cfg.domain;
    let ft = m.label(&crd::label_frontend(d))?;
    let r = m.annotation(&annotation_rule_index(d))?;
    let p = m.annotation(&annotation_path_index(d))?;
    Some((ft.to_string(), format!("{r}:{p}")))
}

/// Labels the translation owns: `alb*` and `<d>/project`.
fn owned_label(project: &str) -> impl Fn(&str) -> bool + '_ {
    move |k| k.starts_with("alb") || k == project
}

/// Annotations the translation owns: `alb*` and `nginx.ingress*`.
fn owned_annotation(k: &str) -> bool {
    k.starts_with("alb") || k.starts_with("nginx.ingress")
}

/// The owned entries of a cached Rule's and of an expected object's labels (or annotations) are the same (both
/// iterate in key order).
fn same_owned(have: &Pairs, want: &Option<BTreeMap<String, String>>, owned: impl Fn(&str) -> bool) -> bool {
    let want = want.iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()));
    have.iter().filter(|(k, _)| owned(k)).eq(want.filter(|(k, _)| owned(k)))
}

/// `existing` with the owned labels/annotations replaced by `expected`'s (foreign keys kept).
fn merged(
    existing: &Option<BTreeMap<String, String>>,
    expected: &Option<BTreeMap<String, String>>,
    owned: impl Fn(&str) -> bool,
) -> Option<BTreeMap<String, String>> {
    let mut out: BTreeMap<String, String> =
        existing.iter().flatten().filter(|(k, _)| !owned(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    out.extend(expected.iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
    (!out.is_empty()).then_some(out)
}

/// Whether an existing Rule already has the expected content (spec, owned labels/annotations, owners).
fn same_content(cfg: &AlbIngressConfig, existing: &Rule, expected: &RuleObject) -> bool {
    let (have, want) = (&existing.metadata, &expected.metadata);
    let project = crd::label_project(&cfg.domain);
    existing.same_spec(&expected.spec)
        && same_owned(&have.labels, &want.labels, owned_label(&project))
        && same_owned(&have.annotations, &want.annotations, owned_annotation)
        && have.owners == crate::compile::meta::owners_hash(want.owner_references.as_deref())
}

/// The object to write for a planned update: `current` (as the API server holds it now) with the expected spec,
/// owned labels and annotations (foreign ones kept) and owners.
pub fn updated(cfg: &AlbIngressConfig, mut current: RuleObject, expected: &RuleObject) -> RuleObject {
    let project = crd::label_project(&cfg.domain);
    let (m, e) = (&mut current.metadata, &expected.metadata);
    m.labels = merged(&m.labels, &e.labels, owned_label(&project));
    m.annotations = merged(&m.annotations, &e.annotations, owned_annotation);
    m.owner_references = e.owner_references.clone();
    m.managed_fields = None;
    current.spec = expected.spec.clone();
    current
}

fn has_service_group(ft: &Frontend) -> bool {
    ft.spec.service_group.as_ref().is_some_and(|sg| !sg.services.is_empty())
}

/// The diff for one claimed Ingress. `existing_rules` are the Rules of this Ingress (any Frontend);
/// `existing_frontends` the Frontends of this ALB.
pub fn plan(
    cfg: &AlbIngressConfig,
    expected: &Expected,
    existing_rules: &[Rule],
    existing_frontends: &[Frontend],
) -> Plan {
    let mut out = Plan::default();
    for ft in &expected.frontends {
        match existing_frontends.iter().find(|e| e.metadata.ns_name_owned() == ft.metadata.ns_name_owned()) {
            None => out.create_frontends.push(ft.clone()),
            // The only update ever made: a Frontend without default backend gets this Ingress's.
            Some(e) if !has_service_group(e) && has_service_group(ft) => {
                let mut u = e.clone();
                u.spec.service_group = ft.spec.service_group.clone();
                u.spec.backend_protocol = ft.spec.backend_protocol.clone();
                u.spec.source = ft.spec.source.clone();
                out.update_frontends.push(u);
            }
            Some(_) => {}
        }
    }

    // Existing rules by identity, oldest name first so the survivor of duplicates is stable.
    let mut by_key: BTreeMap<(String, String), Vec<&Rule>> = BTreeMap::new();
    let mut sorted: Vec<&Rule> = existing_rules.iter().collect();
    sorted.sort_by_key(|r| r.metadata.ns_name_owned());
    for r in sorted {
        match identity(cfg, &r.metadata) {
            Some(k) => by_key.entry(k).or_default().push(r),
            None => out.delete_rules.push(r.metadata.ns_name_owned()),
        }
    }
    let mut wanted = BTreeSet::new();
    for exp in &expected.rules {
        let Some(key) = identity(cfg, &exp.metadata) else { continue };
        wanted.insert(key.clone());
        let Some(have) = by_key.get(&key).and_then(|v| v.first()) else {
            out.create_rules.push(exp.clone());
            continue;
        };
        if same_content(cfg, have, exp) {
            continue;
        }
        let mut u = exp.clone();
        u.metadata.name = have.metadata.name.clone();
        u.metadata.namespace = have.metadata.namespace.clone();
        out.update_rules.push(u);
    }
    for (key, rules) in &by_key {
        let extras = if wanted.contains(key) { &rules[1..] } else { &rules[..] };
        out.delete_rules.extend(extras.iter().map(|r| r.metadata.ns_name_owned()));
    }
    out.shrink_to_fit();
    out
}

/// Whether `rule` was generated from Ingress `ns/name` (spec.source, else the source labels).
pub fn is_rule_of(cfg: &AlbIngressConfig, rule: &Rule, ns: &str, name: &str) -> bool {
    if let Some(s) = rule.spec.source().filter(|s| !s.kind.is_empty()) {
        return s.kind == SOURCE_TYPE && s.namespace == ns && s.name == name;
    }
    let d = &cfg.domain;
    let l = &rule.metadata.labels;
    l.get(&crd::label_source_type(d)) == Some(SOURCE_TYPE)
        && l.get(&crd::label_source_ns(d)) == Some(&ns.chars().take(63).collect::<String>())
        && l.get(&crd::label_source_name(d)) == Some(&name.chars().take(63).collect::<String>())
}

/// An Ingress that is deleted or not claimed any more: delete its Rules; on the ingress Frontends
/// (`http_port`/`https_port`) whose `source` is this Ingress, clear `serviceGroup`, `source`, `backendProtocol`.
pub fn cleanup(
    cfg: &AlbIngressConfig,
    ing_ns: &str,
    ing_name: &str,
    existing_rules: &[Rule],
    existing_frontends: &[Frontend],
) -> Plan {
    let mut out = Plan::default();
    for r in existing_rules.iter().filter(|r| is_rule_of(cfg, r, ing_ns, ing_name)) {
        out.delete_rules.push(r.metadata.ns_name_owned());
    }
    out.delete_rules.sort();
    let ports: Vec<i32> = [cfg.http_port, cfg.https_port].iter().filter(|p| **p != 0).map(|p| i32::from(*p)).collect();
    for ft in existing_frontends.iter().filter(|f| ports.contains(&f.spec.port)) {
        let ours = ft.spec.source.as_ref().is_some_and(|s| {
            (s.kind == SOURCE_TYPE || s.kind.is_empty()) && s.namespace == ing_ns && s.name == ing_name
        });
        if ours {
            let mut u = ft.clone();
            u.spec.service_group = None;
            u.spec.source = None;
            u.spec.backend_protocol = String::new();
            out.update_frontends.push(u);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::translate::expected;
    use super::*;
    use serde_json::json;

    fn cfg() -> AlbIngressConfig {
        AlbIngressConfig { alb_name: "alb-dev".into(), alb_namespace: "cpaas-system".into(), ..Default::default() }
    }

    fn world_with_ft() -> World {
        let mut w = World::default();
        let mut ft = frontend("cpaas-system", "alb-dev-00080", 80, "http", &[]);
        ft.metadata.uid = Some("ft-uid".into());
        w.frontends = vec![ft];
        w
    }

    fn two_paths() -> crate::ingress::Ingress {
        ingress(
            "ns1",
            "web",
            json!({"rules": [{"host": "a.com", "http": {"paths": [
                {"path": "/a", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 80}}}},
                {"path": "/b", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 80}}}}
            ]}}]}),
        )
    }

    /// What the API server would hold after creating `r`.
    fn stored(mut r: RuleObject, rv: &str) -> RuleObject {
        r.metadata.resource_version = Some(rv.into());
        r.metadata.uid = Some(format!("uid-{rv}"));
        r.metadata.generation = Some(1);
        r
    }

    /// As the controller caches them.
    fn cached(rules: &[RuleObject]) -> Vec<Rule> {
        rules.iter().map(Rule::of).collect()
    }

    #[test]
    fn creates_then_converges() {
        let (cfg, w) = (cfg(), world_with_ft());
        let exp = expected(&cfg, &w.world(), &two_paths());
        let p = plan(&cfg, &exp, &[], &w.frontends);
        assert!(p.create_frontends.is_empty() && p.update_frontends.is_empty());
        assert_eq!(p.create_rules.len(), 2);
        assert!(p.update_rules.is_empty() && p.delete_rules.is_empty());
        let existing: Vec<Rule> =
            p.create_rules.into_iter().enumerate().map(|(i, r)| Rule::from(stored(r, &i.to_string()))).collect();
        let again = plan(&cfg, &exp, &existing, &w.frontends);
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn missing_frontend_is_created() {
        let cfg = cfg();
        let w = World::default();
        let exp = expected(&cfg, &w.world(), &two_paths());
        let p = plan(&cfg, &exp, &[], &[]);
        assert_eq!(p.create_frontends.len(), 1);
        assert_eq!(p.create_frontends[0].metadata.name.as_deref(), Some("alb-dev-00080"));
        assert_eq!(p.create_rules.len(), 2);
    }

    #[test]
    fn update_keeps_name_and_version_delete_unexpected_and_duplicates() {
        let (cfg, w) = (cfg(), world_with_ft());
        let exp = expected(&cfg, &w.world(), &two_paths());
        // Path 0 exists under another name with old content and a foreign label; path 0 also has a duplicate.
        let mut old = stored(exp.rules[0].clone(), "7");
        old.metadata.name = Some("alb-dev-00080-zzzz".into());
        old.spec.priority = 9;
        old.metadata.labels.as_mut().unwrap().insert("team".into(), "x".into());
        let mut dup = old.clone();
        dup.metadata.name = Some("alb-dev-00080-zzzy".into());
        // Path 5 is not expected any more; a Rule without identity annotations is dropped.
        let mut gone = stored(exp.rules[1].clone(), "8");
        gone.metadata.name = Some("alb-dev-00080-gone".into());
        gone.metadata.annotations.as_mut().unwrap().insert(annotation_path_index("cpaas.io"), "5".into());
        let mut anon = stored(exp.rules[1].clone(), "9");
        anon.metadata.name = Some("alb-dev-00080-anon".into());
        anon.metadata.annotations = None;
        let p = plan(&cfg, &exp, &cached(&[old, dup.clone(), gone, anon]), &w.frontends);
        assert_eq!(p.create_rules.len(), 1, "path 1 is missing");
        assert_eq!(p.create_rules[0].metadata.name, exp.rules[1].metadata.name);
        assert_eq!(p.update_rules.len(), 1);
        let u = &p.update_rules[0];
        assert_eq!(u.metadata.name.as_deref(), Some("alb-dev-00080-zzzy"), "the first by name survives");
        assert_eq!(u.metadata.namespace.as_deref(), Some("cpaas-system"));
        // written over the object as the API server holds it at write time
        let w = updated(&cfg, dup, u);
        assert_eq!(w.metadata.name.as_deref(), Some("alb-dev-00080-zzzy"));
        assert_eq!(w.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(w.metadata.uid.as_deref(), Some("uid-7"));
        assert_eq!(w.spec.priority, 5);
        assert_eq!(w.metadata.labels.as_ref().unwrap()["team"], "x", "foreign labels kept");
        assert_eq!(w.metadata.labels.as_ref().unwrap().len(), exp.rules[0].metadata.labels.as_ref().unwrap().len() + 1);
        assert_eq!(w.metadata.annotations, exp.rules[0].metadata.annotations);
        assert_eq!(w.metadata.owner_references, exp.rules[0].metadata.owner_references);
        assert!(same_content(&cfg, &Rule::from(w), &exp.rules[0]), "the written object plans nothing more");
        let mut del = p.delete_rules.clone();
        del.sort();
        let names: Vec<&str> = del.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["alb-dev-00080-anon", "alb-dev-00080-gone", "alb-dev-00080-zzzz"]);
        assert!(del.iter().all(|(ns, _)| ns == "cpaas-system"));
    }

    #[test]
    fn rule_on_another_frontend_is_deleted_and_owner_ref_change_updates() {
        let (cfg, w) = (cfg(), world_with_ft());
        let exp = expected(&cfg, &w.world(), &two_paths());
        let mut elsewhere = stored(exp.rules[0].clone(), "1");
        elsewhere.metadata.labels.as_mut().unwrap().insert("alb2.cpaas.io/frontend".into(), "alb-dev-00443".into());
        let mut no_owner = stored(exp.rules[1].clone(), "2");
        no_owner.metadata.owner_references = None;
        let p = plan(&cfg, &exp, &cached(&[elsewhere.clone(), no_owner]), &w.frontends);
        assert_eq!(p.delete_rules, vec![elsewhere.metadata.ns_name_owned()]);
        assert_eq!(p.create_rules.len(), 1);
        assert_eq!(p.update_rules.len(), 1);
        assert_eq!(p.update_rules[0].metadata.owner_references.as_ref().unwrap()[0].uid, "ft-uid");
    }

    #[test]
    fn frontend_updated_only_to_add_a_default_backend() {
        let cfg = cfg();
        let mut w = world_with_ft();
        let ing =
            ingress("ns1", "dflt", json!({"defaultBackend": {"service": {"name": "s", "port": {"number": 8080}}}}));
        let exp = expected(&cfg, &w.world(), &ing);
        let p = plan(&cfg, &exp, &[], &w.frontends);
        assert_eq!(p.update_frontends.len(), 1);
        let u = &p.update_frontends[0];
        assert_eq!(u.metadata.uid.as_deref(), Some("ft-uid"));
        assert_eq!(u.spec.service_group.as_ref().unwrap().services[0].port, 8080);
        assert_eq!(u.spec.source.as_ref().unwrap().name, "dflt");
        // A Frontend that already has a default backend is left alone.
        w.frontends[0] = u.clone();
        let other =
            ingress("ns1", "other", json!({"defaultBackend": {"service": {"name": "t", "port": {"number": 1}}}}));
        let exp = expected(&cfg, &w.world(), &other);
        assert!(plan(&cfg, &exp, &[], &w.frontends).is_empty());
    }

    #[test]
    fn cleanup_deletes_rules_and_releases_frontends() {
        let cfg = cfg();
        let mut w = world_with_ft();
        let ing = ingress("ns1", "dflt", json!({"defaultBackend": {"service": {"name": "s", "port": {"number": 80}}}}));
        w.frontends[0] = plan(&cfg, &expected(&cfg, &w.world(), &ing), &[], &w.frontends).update_frontends[0].clone();
        let rules = expected(&cfg, &w.world(), &two_paths()).rules;
        let mut foreign = rules[0].clone();
        foreign.spec.source.as_mut().unwrap().name = "someone-else".into();
        let p = cleanup(&cfg, "ns1", "web", &cached(&[rules[0].clone(), rules[1].clone(), foreign]), &w.frontends);
        assert_eq!(p.delete_rules.len(), 2);
        assert!(p.update_frontends.is_empty(), "the Frontend's source is another Ingress");
        let p = cleanup(&cfg, "ns1", "dflt", &cached(&rules), &w.frontends);
        assert!(p.delete_rules.is_empty());
        let u = &p.update_frontends[0];
        assert!(u.spec.service_group.is_none() && u.spec.source.is_none() && u.spec.backend_protocol.is_empty());
        // Labels alone identify the source when spec.source is absent.
        let mut by_label = rules[0].clone();
        by_label.spec.source = None;
        assert!(is_rule_of(&cfg, &Rule::from(by_label.clone()), "ns1", "web"));
        assert!(!is_rule_of(&cfg, &Rule::from(by_label), "ns1", "webx"));
    }
}
