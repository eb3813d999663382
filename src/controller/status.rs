//! Leader only: the `Accepted` condition of every Frontend and Rule of this ALB (True, or False with the
//! compiler's reject reason and message), written through the status subresource only when it changes, and a
//! Warning Event for every object that becomes rejected.

use super::events::{EventLog, EventType, Note};
use super::render_loop::Published;
use crate::compile::Reject;
use crate::crd::{accepted_condition, ConditionSeen, Frontend, RuleObject};
use crate::hashing::hash_of;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use crate::crd::ACCEPTED;
/// `alb2-<alb>`: the reporting component of our Events (as the original's event source), and this replica.
pub fn event_log(client: Client, alb_name: &str, identity: &str) -> EventLog {
    EventLog::new(client, format!("alb2-{alb_name}"), identity.to_string())
}

/// The `Accepted` condition we want on one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Desired {
    accepted: bool,
    reason: String,
    message: String,
    generation: Option<i64>,
}

impl Desired {
    fn of(kind: &str, obj: &Target, rejects: &[Reject]) -> Desired {
        let (ns, name) = (obj.ns, obj.name);
        let mine: Vec<&Reject> =
            rejects.iter().filter(|r| r.kind == kind && r.namespace == ns && r.name == name).collect();
        match mine.first() {
            None => Desired {
                accepted: true,
                reason: ACCEPTED.into(),
                message: format!("{kind} is part of the policy"),
                generation: obj.generation,
            },
            Some(first) => Desired {
                accepted: false,
                reason: first.reason.clone(),
                message: mine.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join("; "),
                generation: obj.generation,
            },
        }
    }

    fn matches(&self, c: &ConditionSeen) -> bool {
        c.status == Some(self.accepted)
            && c.digest == ConditionSeen::digest(&self.reason, &self.message, self.generation)
    }

    fn condition(&self, current: Option<&ConditionSeen>) -> Condition {
        let status = if self.accepted { "True" } else { "False" };
        // lastTransitionTime moves only when the status flips.
        let last_transition_time = match current {
            Some(c) if c.status == Some(self.accepted) => c.last_transition_time.clone(),
            _ => Time(Timestamp::now()),
        };
        Condition {
            type_: ACCEPTED.into(),
            status: status.into(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            observed_generation: self.generation,
            last_transition_time,
        }
    }
}

/// A hash of (kind, namespace, name): the writer remembers 10,000 objects by 8 bytes each.
type Key = u64;

/// The object whose condition is written: a Frontend (k8s metadata) or a Rule (alb's lean metadata).
struct Target<'a> {
    ns: &'a str,
    name: &'a str,
    uid: Option<&'a str>,
    generation: Option<i64>,
}

impl<'a> Target<'a> {
    fn of(meta: &'a ObjectMeta) -> Target<'a> {
        Target {
            ns: meta.namespace.as_deref().unwrap_or(""),
            name: meta.name.as_deref().unwrap_or(""),
            uid: meta.uid.as_deref(),
            generation: meta.generation,
        }
    }

    fn of_lean(meta: &'a crate::compile::meta::LeanMeta) -> Target<'a> {
        use crate::compile::meta::Meta;
        Target { ns: meta.ns(), name: meta.name(), uid: meta.uid.as_deref(), generation: meta.generation }
    }

    fn key(&self, kind: &'static str) -> Key {
        hash_of((kind, self.ns, self.name))
    }
}

pub struct StatusWriter {
    client: Client,
    events: EventLog,
    /// A hash of what we patched last, so that a store that has not caught up yet does not make us patch twice.
    written: HashMap<Key, u64>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl StatusWriter {
    pub fn new(client: Client, events: EventLog) -> StatusWriter {
        StatusWriter { client, events, written: HashMap::new(), metrics: None }
    }

    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> StatusWriter {
        self.metrics = Some(metrics);
        self
    }

    /// Brings every object's condition in line with `p`; returns whether something failed (retry later).
    async fn sync(&mut self, p: &Published) -> bool {
        let mut failed = false;
        let mut live = std::collections::HashSet::new();
        for ft in &p.frontends {
            let current = accepted_condition(ft.status.as_ref().and_then(|s| s.conditions.as_deref()));
            let t = Target::of(&ft.metadata);
            live.insert(t.key("Frontend"));
            let current = current.map(ConditionSeen::of);
            failed |= !self.one::<Frontend>(&t, "Frontend", current.as_ref(), &p.compiled.rejects).await;
        }
        for rl in p.rules.iter().filter_map(std::sync::Weak::upgrade) {
            let t = Target::of_lean(&rl.metadata);
            live.insert(t.key("Rule"));
            failed |= !self.one::<RuleObject>(&t, "Rule", rl.accepted.as_ref(), &p.compiled.rejects).await;
        }
        self.written.retain(|k, _| live.contains(k));
        failed
    }

    /// One object, of API type `K`; returns false on an API error.
    async fn one<K>(
        &mut self,
        obj: &Target<'_>,
        kind: &'static str,
        current: Option<&ConditionSeen>,
        rejects: &[Reject],
    ) -> bool
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let desired = Desired::of(kind, obj, rejects);
        let k = obj.key(kind);
        if current.is_some_and(|c| desired.matches(c)) {
            self.written.insert(k, hash_of(&desired));
            return true;
        }
        if self.written.get(&k) == Some(&hash_of(&desired)) {
            return true;
        }
        let (ns, name) = (obj.ns.to_string(), obj.name.to_string());
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let body = serde_json::json!({"status": {"conditions": [desired.condition(current)]}});
        let written = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body)).await;
        if let Some(m) = &self.metrics {
            // A 404 (deleted meanwhile) is not a failure.
            let ok = match &written {
                Ok(_) => true,
                Err(kube::Error::Api(s)) => s.code == 404,
                Err(_) => false,
            };
            m.status_written(kind, ok);
        }
        match written {
            Ok(_) => {}
            // Deleted meanwhile: nothing to report.
            Err(kube::Error::Api(s)) if s.code == 404 => return true,
            Err(e) => {
                tracing::warn!("cannot write the status of {kind} {ns}/{name}: {e}");
                return false;
            }
        }
        if !desired.accepted {
            let ev = Note {
                type_: EventType::Warning,
                reason: &desired.reason,
                message: &desired.message,
                action: "Compile",
            };
            let object = ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(K::kind(&()).into_owned()),
                namespace: Some(ns.clone()),
                name: Some(name.clone()),
                uid: obj.uid.map(String::from),
                ..Default::default()
            };
            if let Err(e) = self.events.publish(&ev, &object).await {
                tracing::warn!("cannot record an Event for {kind} {ns}/{name}: {e}");
            }
        }
        self.written.insert(k, hash_of(&desired));
        true
    }
}

/// Writes statuses for every compiled policy until aborted (leadership lost).
pub async fn run(mut writer: StatusWriter, mut compiled: watch::Receiver<Option<Arc<Published>>>) {
    loop {
        let latest = compiled.borrow_and_update().clone();
        let failed = match latest {
            Some(p) => writer.sync(&p).await,
            None => false,
        };
        if failed {
            // Retry after a pause unless a newer policy arrives first.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                r = compiled.changed() => if r.is_err() { return },
            }
        } else if compiled.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, generation: i64) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            generation: Some(generation),
            ..Default::default()
        }
    }

    fn reject(name: &str, reason: &str) -> Reject {
        Reject {
            kind: "Rule".into(),
            namespace: "ns".into(),
            name: name.into(),
            field: "spec.dslx[0]".into(),
            reason: reason.into(),
            message: format!("Rule ns/{name}: spec.dslx[0] is bad"),
        }
    }

    #[test]
    fn desired_condition_from_rejects() {
        let rejects = vec![reject("bad", "InvalidRegex")];
        let ok = Desired::of("Rule", &Target::of(&meta("good", 1)), &rejects);
        assert!(ok.accepted);
        assert_eq!(ok.reason, ACCEPTED);
        let bad = Desired::of("Rule", &Target::of(&meta("bad", 3)), &rejects);
        assert!(!bad.accepted);
        assert_eq!(bad.reason, "InvalidRegex");
        assert_eq!(bad.generation, Some(3));
        // The same name of another kind is not affected.
        assert!(Desired::of("Frontend", &Target::of(&meta("bad", 1)), &rejects).accepted);
    }

    /// The writer remembers objects and conditions by hashes: different ones stay apart.
    #[test]
    fn remembered_by_hashes_that_tell_objects_and_conditions_apart() {
        let t = |ns, name| Target { ns, name, uid: None, generation: Some(1) };
        let keys =
            [t("a", "b").key("Rule"), t("a", "b").key("Frontend"), t("a", "c").key("Rule"), t("ab", "").key("Rule")];
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(keys.iter().filter(|o| *o == k).count(), 1, "key {i}");
        }
        assert_eq!(t("a", "b").key("Rule"), t("a", "b").key("Rule"));
        let bad = Desired::of("Rule", &t("ns", "bad"), &[reject("bad", "InvalidRegex")]);
        let mut other = bad.clone();
        other.message.push('!');
        assert_eq!(hash_of(&bad), hash_of(bad.clone()));
        assert_ne!(hash_of(&bad), hash_of(&other));
    }

    #[test]
    fn condition_keeps_transition_time_while_status_holds() {
        let bad = Desired::of("Rule", &Target::of(&meta("bad", 1)), &[reject("bad", "InvalidRegex")]);
        let first = bad.condition(None);
        let seen = ConditionSeen::of(&first);
        assert!(bad.matches(&seen));
        let again = bad.condition(Some(&seen));
        assert_eq!(again.last_transition_time, first.last_transition_time);
        let newer = Desired { generation: Some(2), ..bad.clone() };
        assert!(!newer.matches(&seen), "a new generation is written again");
        let other = Desired { message: format!("{}!", bad.message), ..bad.clone() };
        assert!(!other.matches(&seen), "another message is written");
        let ok = Desired::of("Rule", &Target::of(&meta("good", 1)), &[]);
        assert!(!ok.matches(&seen));
        assert_ne!(ok.condition(Some(&seen)).last_transition_time, first.last_transition_time, "the status flipped");
        // a status neither True nor False (set by someone else) is written, and counts as a flip
        let unknown = ConditionSeen::of(&Condition { status: "Unknown".into(), ..first.clone() });
        assert!(!bad.matches(&unknown));
        assert_ne!(bad.condition(Some(&unknown)).last_transition_time, first.last_transition_time);
    }
}
