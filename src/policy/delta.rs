//! Policy deltas (docs/policy.md "Policy deltas"): what changed from a policy A to a policy B, sent with
//! `PATCH /policy` instead of B whole. Applying the delta to A gives B byte for byte.

use super::{BackendGroup, Certificate, HttpPort, Policy, SharedRule};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDelta {
    pub version: u32,
    #[serde(default)]
    pub generation: u64,
    /// sha1 hex of the base policy's bytes.
    pub base: String,
    /// sha1 hex of the new policy's bytes.
    pub digest: String,
    /// Ports whose rule list changed (or are new), each with the new whole list in match order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub http: BTreeMap<String, Vec<RuleRef>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_removed: Vec<String>,
    /// New or changed groups, whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_groups: Vec<Arc<BackendGroup>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_groups_removed: Vec<String>,
    /// New or changed certificates by lookup key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub certificates: BTreeMap<String, Certificate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates_removed: Vec<String>,
}

/// An item of a port's list in [`PolicyDelta::http`]: JSON string or object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RuleRef {
    /// The key of a rule the base has on the same port: that rule, unchanged.
    Key(String),
    /// `[first, count]`: `count` consecutive rules of the base's same port from 0-based position `first`,
    /// unchanged (what [`PolicyDelta::between`] writes: a 10,000-rule port with one rule changed is two runs).
    Run([usize; 2]),
    /// A rule given whole.
    Rule(SharedRule),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("http port {port}: the base policy has no rule with key {key:?} on that port")]
    UnknownKey { port: String, key: String },
    #[error("http port {port}: run [{first}, {count}] is not within the base policy's {len} rules on that port")]
    BadRun { port: String, first: usize, count: usize, len: usize },
    #[error("{kind} {name:?} is both given and removed by the delta")]
    Conflict { kind: &'static str, name: String },
    #[error("backend group {name:?} appears twice ({place})")]
    DuplicateGroup { name: String, place: &'static str },
}

impl PolicyDelta {
    /// The delta that turns `base` into `next`; `base_digest` and `digest` are the sha1 hex of their bytes.
    /// `None` when `next` cannot be expressed exactly: versions differ, or the groups of either policy are not
    /// strictly sorted by name (unsorted or duplicate names).
    pub fn between(base: &Policy, next: &Policy, base_digest: &str, digest: &str) -> Option<PolicyDelta> {
        if base.version != next.version
            || !strictly_sorted(&base.backend_groups)
            || !strictly_sorted(&next.backend_groups)
        {
            return None;
        }
        let mut http = BTreeMap::new();
        for (port, next_port) in &next.http {
            let base_rules = base.http.get(port).map(|p| p.rules.as_slice());
            // By value, not only by key: exact even when keys are absent or stale.
            if base_rules == Some(next_port.rules.as_slice()) {
                continue;
            }
            let base_rules = base_rules.unwrap_or_default();
            let at = positions(base_rules);
            let mut refs = Vec::new();
            let mut run: Option<[usize; 2]> = None;
            for rule in &next_port.rules {
                // A key names the first base rule with it: use it only if that is this very rule.
                let found = at.get(rule.key.as_str()).copied().filter(|&i| base_rules[i] == *rule);
                match (found, run.as_mut()) {
                    (Some(i), Some([first, count])) if *first + *count == i => *count += 1,
                    (Some(i), _) => refs.extend(run.replace([i, 1]).map(RuleRef::Run)),
                    (None, _) => {
                        refs.extend(run.take().map(RuleRef::Run));
                        refs.push(RuleRef::Rule(rule.clone()));
                    }
                }
            }
            refs.extend(run.map(RuleRef::Run));
            http.insert(port.clone(), refs);
        }
        let http_removed = base.http.keys().filter(|p| !next.http.contains_key(*p)).cloned().collect();

        let (backend_groups, backend_groups_removed) = group_changes(&base.backend_groups, &next.backend_groups);

        let certificates = next
            .certificates
            .iter()
            .filter(|(k, c)| base.certificates.get(*k) != Some(*c))
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect();
        let certificates_removed =
            base.certificates.keys().filter(|k| !next.certificates.contains_key(*k)).cloned().collect();

        Some(PolicyDelta {
            version: next.version,
            generation: next.generation,
            base: base_digest.to_string(),
            digest: digest.to_string(),
            http,
            http_removed,
            backend_groups,
            backend_groups_removed,
            certificates,
            certificates_removed,
        })
    }

    /// Applies the delta to `base` (the policy whose digest is `self.base`), giving the new policy with the
    /// delta's version and generation.
    pub fn apply(&self, base: &Policy) -> Result<Policy, DeltaError> {
        if let Some(port) = self.http_removed.iter().find(|p| self.http.contains_key(*p)) {
            return Err(DeltaError::Conflict { kind: "http port", name: port.clone() });
        }
        let mut http: BTreeMap<String, HttpPort> = base
            .http
            .iter()
            .filter(|(port, _)| !self.http.contains_key(*port) && !self.http_removed.contains(*port))
            .map(|(port, p)| (port.clone(), p.clone()))
            .collect();
        for (port, refs) in &self.http {
            let base_rules = base.http.get(port).map(|p| p.rules.as_slice()).unwrap_or_default();
            let at = positions(base_rules);
            let mut rules = Vec::new();
            for r in refs {
                match r {
                    RuleRef::Rule(rule) => rules.push(rule.clone()),
                    RuleRef::Key(key) => {
                        let i = at
                            .get(key.as_str())
                            .ok_or_else(|| DeltaError::UnknownKey { port: port.clone(), key: key.clone() })?;
                        rules.push(base_rules[*i].clone());
                    }
                    &RuleRef::Run([first, count]) => {
                        let end = first.checked_add(count).filter(|_| count > 0);
                        let run = end.and_then(|end| base_rules.get(first..end));
                        let run = run.ok_or_else(|| DeltaError::BadRun {
                            port: port.clone(),
                            first,
                            count,
                            len: base_rules.len(),
                        })?;
                        rules.extend_from_slice(run);
                    }
                }
            }
            http.insert(port.clone(), HttpPort { rules });
        }

        let removed: HashSet<&str> = self.backend_groups_removed.iter().map(String::as_str).collect();
        let mut groups: BTreeMap<&str, &Arc<BackendGroup>> = BTreeMap::new();
        for g in &base.backend_groups {
            if groups.insert(&g.name, g).is_some() {
                return Err(DeltaError::DuplicateGroup { name: g.name.clone(), place: "base policy" });
            }
        }
        groups.retain(|name, _| !removed.contains(name));
        let mut given = HashSet::new();
        for g in &self.backend_groups {
            if removed.contains(g.name.as_str()) {
                return Err(DeltaError::Conflict { kind: "backend group", name: g.name.clone() });
            }
            if !given.insert(g.name.as_str()) {
                return Err(DeltaError::DuplicateGroup { name: g.name.clone(), place: "delta" });
            }
            groups.insert(&g.name, g);
        }
        let backend_groups = groups.into_values().cloned().collect();

        let mut certificates = base.certificates.clone();
        for key in &self.certificates_removed {
            if self.certificates.contains_key(key) {
                return Err(DeltaError::Conflict { kind: "certificate", name: key.clone() });
            }
            certificates.remove(key);
        }
        certificates.extend(self.certificates.iter().map(|(k, c)| (k.clone(), c.clone())));

        Ok(Policy { version: self.version, generation: self.generation, http, backend_groups, certificates })
    }

    /// Whether nothing but version/generation changed.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.http.is_empty()
            && self.http_removed.is_empty()
            && self.backend_groups.is_empty()
            && self.backend_groups_removed.is_empty()
            && self.certificates.is_empty()
            && self.certificates_removed.is_empty()
    }
}

/// The positions of one port's rules by non-empty key (the first rule with a key, should a port hold a key twice).
fn positions(rules: &[SharedRule]) -> HashMap<&str, usize> {
    let mut map = HashMap::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate().filter(|(_, r)| !r.key.is_empty()) {
        map.entry(r.key.as_str()).or_insert(i);
    }
    map
}

fn strictly_sorted(groups: &[Arc<BackendGroup>]) -> bool {
    groups.windows(2).all(|w| w[0].name < w[1].name)
}

/// The groups of `next` that are new or differ from `base`'s, and the names of `base`'s groups that `next` lacks,
/// each in its list's order. Both lists are [`strictly_sorted`], so one walk over the two finds them (tables of
/// the names were ~0.65 MB at 10,000 groups, at every push).
fn group_changes(base: &[Arc<BackendGroup>], next: &[Arc<BackendGroup>]) -> (Vec<Arc<BackendGroup>>, Vec<String>) {
    let (mut changed, mut removed) = (Vec::new(), Vec::new());
    let (mut b, mut n) = (base.iter().peekable(), next.iter().peekable());
    loop {
        match (b.peek(), n.peek()) {
            (Some(old), Some(new)) => match old.name.cmp(&new.name) {
                Ordering::Less => {
                    removed.push(old.name.clone());
                    b.next();
                }
                Ordering::Greater => {
                    changed.push(Arc::clone(new));
                    n.next();
                }
                Ordering::Equal => {
                    if !(Arc::ptr_eq(old, new) || ***old == ***new) {
                        changed.push(Arc::clone(new));
                    }
                    b.next();
                    n.next();
                }
            },
            (Some(old), None) => {
                removed.push(old.name.clone());
                b.next();
            }
            (None, Some(new)) => {
                changed.push(Arc::clone(new));
                n.next();
            }
            (None, None) => return (changed, removed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use sha1::{Digest, Sha1};

    fn load(name: &str) -> Policy {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/fixtures/policy").join(name);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let mut policy: Policy = serde_json::from_str(&text).unwrap();
        policy.set_rule_keys_from(None);
        policy
    }

    fn sha(p: &Policy) -> String {
        hex::encode(Sha1::digest(p.to_bytes()))
    }

    /// The delta from `base` to `next`, checked to give `next` byte for byte, directly and through its JSON.
    fn round_trip(base: &Policy, next: &Policy, what: &str) -> PolicyDelta {
        let d = PolicyDelta::between(base, next, &sha(base), &sha(next)).unwrap_or_else(|| panic!("{what}: None"));
        assert_eq!((d.base.as_str(), d.digest.as_str()), (sha(base).as_str(), sha(next).as_str()), "{what}");
        let applied = d.apply(base).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(applied.to_bytes() == next.to_bytes(), "{what}: {applied:#?}\n!=\n{next:#?}");
        let again: PolicyDelta = serde_json::from_slice(&serde_json::to_vec(&d).unwrap()).unwrap();
        assert_eq!(again, d, "{what}: through JSON");
        d
    }

    fn edited(base: &Policy, edit: impl FnOnce(&mut Policy)) -> Policy {
        let mut next = base.clone();
        edit(&mut next);
        next.set_rule_keys_from(None);
        next
    }

    fn cert(n: &str) -> Certificate {
        Certificate { cert: format!("-----BEGIN CERTIFICATE-----\n{n}\n"), key: format!("key {n}") }
    }

    #[test]
    fn group_changes_walk_both_sorted_lists() {
        let g = |name: &str, mode: &str| {
            Arc::new(BackendGroup {
                name: name.into(),
                mode: mode.into(),
                session_affinity_policy: String::new(),
                session_affinity_attribute: String::new(),
                backends: Vec::new(),
            })
        };
        let b = g("b", "");
        let base = vec![g("a", ""), b.clone(), g("c", ""), g("e", ""), g("f", "")];
        // a: removed; b: the same group; c: an equal copy; d: new; e: changed; f: removed, g: new, at the end
        let next = vec![b, g("c", ""), g("d", ""), g("e", "pod"), g("g", "")];
        let (changed, removed) = group_changes(&base, &next);
        let names = |v: &[Arc<BackendGroup>]| v.iter().map(|g| g.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&changed), ["d", "e", "g"]);
        assert_eq!(changed[1].mode, "pod");
        assert_eq!(removed, ["a", "f"]);
        assert_eq!(group_changes(&next, &next), (Vec::new(), Vec::new()));
        assert_eq!(group_changes(&[], &next).0.len(), 5);
        assert_eq!(group_changes(&base, &[]).1, ["a", "b", "c", "e", "f"]);
    }

    #[test]
    fn deltas_round_trip_byte_for_byte() {
        let basic = load("basic.json");
        fn rules80(p: &mut Policy) -> &mut Vec<SharedRule> {
            &mut p.http.get_mut("80").unwrap().rules
        }

        let next = edited(&basic, |p| rules80(p)[2].make_mut().upstream = Some("shop-web".into()));
        let d = round_trip(&basic, &next, "one upstream");
        assert_eq!(d.http.keys().collect::<Vec<_>>(), ["80"]);
        let items = &d.http["80"];
        assert_eq!(basic.http["80"].rules.len(), 6);
        assert!(matches!(items[..], [RuleRef::Run([0, 2]), RuleRef::Rule(_), RuleRef::Run([3, 3])]), "{items:?}");
        let json: Value = serde_json::to_value(&d).unwrap();
        let obj = json.as_object().unwrap();
        let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["base", "digest", "generation", "http", "version"]);
        let list = json["http"]["80"].as_array().unwrap();
        assert_eq!((&list[0], &list[2]), (&serde_json::json!([0, 2]), &serde_json::json!([3, 3])), "{json}");
        assert_eq!(list[1]["upstream"], "shop-web");

        let d = round_trip(&basic, &basic, "no change");
        assert!(d.is_empty() && serde_json::to_value(&d).unwrap().as_object().unwrap().len() == 4, "{d:?}");
        let next = edited(&basic, |p| p.generation += 1);
        let d = round_trip(&basic, &next, "generation only");
        assert!(d.is_empty() && d.generation == basic.generation + 1);

        let next = edited(&basic, |p| {
            let mut r = rules80(p)[0].clone();
            r.make_mut().name = "added".into();
            rules80(p).insert(1, r);
        });
        let d = round_trip(&basic, &next, "add a rule");
        assert_eq!(d.http["80"].iter().filter(|r| matches!(r, RuleRef::Rule(_))).count(), 1);
        let d = round_trip(&basic, &edited(&basic, |p| _ = rules80(p).remove(3)), "remove a rule");
        assert!(matches!(d.http["80"][..], [RuleRef::Run([0, 3]), RuleRef::Run([4, 2])]), "{:?}", d.http);
        let d = round_trip(&basic, &edited(&basic, |p| rules80(p).swap(0, 4)), "reorder");
        assert!(matches!(
            d.http["80"][..],
            [RuleRef::Run([4, 1]), RuleRef::Run([1, 3]), RuleRef::Run([0, 1]), RuleRef::Run([5, 1])]
        ));
        let next = edited(&basic, |p| _ = p.http.insert("8443".into(), p.http["80"].clone()));
        let d = round_trip(&basic, &next, "new port");
        assert!(d.http.keys().eq(["8443"]) && d.http["8443"].iter().all(|r| matches!(r, RuleRef::Rule(_))));
        let d = round_trip(&basic, &edited(&basic, |p| _ = p.http.remove("8080")), "removed port");
        assert!(d.http.is_empty() && d.http_removed == ["8080"]);

        let next = edited(&basic, |p| Arc::make_mut(&mut p.backend_groups[0]).backends[0].weight += 7);
        let d = round_trip(&basic, &next, "group backends");
        assert!(d.backend_groups == [next.backend_groups[0].clone()] && d.backend_groups_removed.is_empty());
        let next = edited(&basic, |p| {
            let mut g = p.backend_groups[0].clone();
            Arc::make_mut(&mut g).name = "zz-new".into();
            p.backend_groups.push(g);
            p.backend_groups.remove(0);
        });
        let d = round_trip(&basic, &next, "add and remove groups");
        assert_eq!(d.backend_groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["zz-new"]);
        assert_eq!(d.backend_groups_removed, [basic.backend_groups[0].name.clone()]);

        let with_certs = edited(&basic, |p| {
            p.certificates.insert("443".into(), cert("a"));
            p.certificates.insert("a.com".into(), cert("b"));
        });
        let d = round_trip(&basic, &with_certs, "add certificates");
        assert_eq!(d.certificates.len(), 2);
        let next = edited(&with_certs, |p| {
            p.certificates.insert("443".into(), cert("c"));
            p.certificates.remove("a.com");
        });
        let d = round_trip(&with_certs, &next, "change and remove certificates");
        assert!(d.certificates.keys().eq(["443"]) && d.certificates_removed == ["a.com"]);
        round_trip(&with_certs, &basic, "remove all certificates");

        // features.json, and policies without keys: compared by value, rules given whole.
        let features = load("features.json");
        let next = edited(&features, |p| p.http.get_mut("80").unwrap().rules[1].make_mut().priority += 1);
        let d = round_trip(&features, &next, "features");
        assert_eq!(d.http["80"].iter().filter(|r| matches!(r, RuleRef::Rule(_))).count(), 1);
        let strip = |p: &Policy| {
            let mut p = p.clone();
            p.http.values_mut().flat_map(|port| port.rules.iter_mut()).for_each(|r| r.make_mut().key.clear());
            p
        };
        let (base, mut next) = (strip(&basic), strip(&basic));
        rules80(&mut next)[0].make_mut().priority += 1;
        let d = round_trip(&base, &next, "no keys");
        assert!(d.http.keys().eq(["80"]) && d.http["80"].iter().all(|r| matches!(r, RuleRef::Rule(_))));
        // A stale key (same key, other content) is not trusted.
        let mut stale = basic.clone();
        rules80(&mut stale)[0].make_mut().priority += 1;
        let d = round_trip(&basic, &stale, "stale key");
        assert!(matches!(d.http["80"][0], RuleRef::Rule(_)));
    }

    #[test]
    fn apply_refuses_unknown_keys_and_conflicts() {
        let basic = load("basic.json");
        let key8080 = basic.http["8080"].rules[0].key.clone();
        let mut d = PolicyDelta::between(&basic, &basic, "a", "b").unwrap();
        for key in ["00000000deadbeef", key8080.as_str()] {
            d.http.insert("80".into(), vec![RuleRef::Key(key.into())]);
            let err = d.apply(&basic).unwrap_err();
            assert_eq!(err, DeltaError::UnknownKey { port: "80".into(), key: key.into() });
            let msg = err.to_string();
            assert!(msg.contains("port 80") && msg.contains(key), "{msg}");
        }
        let n = basic.http["80"].rules.len();
        for (first, count) in [(0, n + 1), (n, 1), (2, 0), (usize::MAX, 2)] {
            d.http.insert("80".into(), vec![RuleRef::Run([first, count])]);
            let err = d.apply(&basic).unwrap_err();
            assert_eq!(err, DeltaError::BadRun { port: "80".into(), first, count, len: n });
        }
        d.http.insert("80".into(), vec![RuleRef::Run([1, 2]), RuleRef::Key(basic.http["80"].rules[0].key.clone())]);
        let rules = &basic.http["80"].rules;
        assert_eq!(d.apply(&basic).unwrap().http["80"].rules, [rules[1].clone(), rules[2].clone(), rules[0].clone()]);
        d.http.insert("80".into(), vec![]);
        d.http_removed = vec!["80".into()];
        assert!(matches!(d.apply(&basic), Err(DeltaError::Conflict { .. })));
        d.http.clear();
        d.backend_groups = vec![basic.backend_groups[0].clone(), basic.backend_groups[0].clone()];
        assert!(matches!(d.apply(&basic), Err(DeltaError::DuplicateGroup { .. })));
        d.backend_groups.pop();
        d.backend_groups_removed = vec![basic.backend_groups[0].name.clone()];
        assert!(matches!(d.apply(&basic), Err(DeltaError::Conflict { .. })));
        // A delta from JSON as the doc shows it.
        let json = format!(r#"{{"version":1,"base":"a","digest":"b","http":{{"8080":["{key8080}"]}}}}"#);
        let d: PolicyDelta = serde_json::from_str(&json).unwrap();
        assert_eq!(d.apply(&basic).unwrap().http["8080"].rules, basic.http["8080"].rules[..1]);
    }

    #[test]
    fn between_is_none_when_not_exact() {
        let basic = load("basic.json");
        assert!(basic.backend_groups.len() >= 2);
        let unsorted = edited(&basic, |p| p.backend_groups.reverse());
        assert!(PolicyDelta::between(&basic, &unsorted, "a", "b").is_none());
        assert!(PolicyDelta::between(&unsorted, &basic, "a", "b").is_none());
        let dup = edited(&basic, |p| p.backend_groups.insert(0, p.backend_groups[0].clone()));
        assert!(PolicyDelta::between(&basic, &dup, "a", "b").is_none());
        let v2 = edited(&basic, |p| p.version += 1);
        assert!(PolicyDelta::between(&basic, &v2, "a", "b").is_none());
    }

    #[test]
    fn one_changed_rule_in_2000_is_a_small_delta() {
        let basic = load("basic.json");
        let template = basic.http["80"].rules[0].clone();
        let mut base = basic.clone();
        base.http.get_mut("80").unwrap().rules = (0..2000)
            .map(|i| {
                let mut r = template.clone();
                let r_mut = r.make_mut();
                r_mut.name = format!("rule-{i}");
                r_mut.matcher = crate::policy::Json::of(&serde_json::json!([
                    "AND",
                    ["EQ", "HOST", format!("h{i}.example.com")],
                    ["STARTS_WITH", "URL", "/api"]
                ]))
                .unwrap();
                r
            })
            .collect();
        base.set_rule_keys_from(None);
        let next =
            edited(&base, |p| p.http.get_mut("80").unwrap().rules[1234].make_mut().upstream = Some("shop-web".into()));
        let d = round_trip(&base, &next, "2000 rules");
        let (delta_len, policy_len) = (serde_json::to_vec(&d).unwrap().len(), next.to_bytes().len());
        assert!(delta_len * 100 < policy_len, "delta {delta_len} bytes, policy {policy_len}");
        assert!(matches!(d.http["80"][..], [RuleRef::Run([0, 1234]), RuleRef::Rule(_), RuleRef::Run([1235, 765])]));
        assert_eq!(d.http["80"].iter().filter(|r| matches!(r, RuleRef::Rule(_))).count(), 1);
    }
}
