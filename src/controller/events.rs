//! Kubernetes Events (`events.k8s.io/v1`) on the objects the leader reports on: Ingress sync results and
//! warnings, rejected Rules and Frontends.
//!
//! As client-go's recorder does, the same event on the same object again within [`SERIES_TTL`] of its last
//! occurrence updates the first Event's `series` (count, last time) instead of creating another. What is kept of
//! an Event sent is small (its name and count under a hash of its identity) and expired entries are dropped at
//! most once a minute. kube-runtime's `Recorder`, used before, kept a whole copy of every Event and scanned
//! all of them at every publish: at 10,000 Ingresses (one `Synced` Event each) that was a large part of the
//! controller's memory and a loop quadratic in the number of Ingresses.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A repeat within this time of the last occurrence joins the series of the first Event (client-go: 6 min).
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);
/// How often expired entries are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub use kube::runtime::events::EventType;

/// Event notes are limited to 1 kB by the API server.
const NOTE_MAX: usize = 1000;

/// `s` cut to [`NOTE_MAX`] bytes at a character boundary (ending with `…` when cut).
fn note(s: &str) -> String {
    if s.len() <= NOTE_MAX {
        return s.to_string();
    }
    let mut end = NOTE_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One event to record on an object.
pub struct Note<'a> {
    pub type_: EventType,
    /// Short, PascalCase (`Synced`, `InvalidRegex`).
    pub reason: &'a str,
    /// Human readable; cut to the API's 1 kB by [`note`].
    pub message: &'a str,
    /// PascalCase (`Sync`, `Compile`).
    pub action: &'a str,
}

/// The Event last sent for one identity. Its name is not kept: it is made again from the object's name and
/// `first` (at 10,000 Ingresses, one `Synced` Event each, 10,000 strings less).
struct Sent {
    first: Timestamp,
    count: i32,
    last: Timestamp,
}

struct Memory {
    sent: HashMap<u64, Sent>,
    pruned: Instant,
}

/// Records Events as `controller` / `instance` (`reportingController` / `reportingInstance`). Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    client: Client,
    controller: String,
    instance: String,
    memory: Arc<Mutex<Memory>>,
}

impl EventLog {
    pub fn new(client: Client, controller: String, instance: String) -> EventLog {
        let memory = Memory { sent: HashMap::new(), pruned: Instant::now() };
        EventLog { client, controller, instance, memory: Arc::new(Mutex::new(memory)) }
    }

    /// Records `note` on the object `regarding` (its namespace holds the Event; `default` for cluster objects).
    pub async fn publish(&self, note: &Note<'_>, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = identity(note, regarding);
        let repeat = self.repeat_of(key, now).map(|(first, count)| (self.event_name(regarding, first), first, count));
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_string());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Some((name, first, count)) = repeat {
            let series = serde_json::json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&series)).await {
                Ok(_) => {
                    self.remember(key, first, count, now);
                    return Ok(());
                }
                // deleted meanwhile (by hand, or the API server's Event TTL): a new Event
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.event(note, regarding, &namespace, now);
        api.create(&PostParams::default(), &event).await?;
        self.remember(key, now, 1, now);
        Ok(())
    }

    fn remember(&self, key: u64, first: Timestamp, count: i32, now: Timestamp) {
        if let Ok(mut m) = self.memory.lock() {
            m.sent.insert(key, Sent { first, count, last: now });
        }
    }

    /// The name of the Event first sent at `first` about `regarding`.
    fn event_name(&self, regarding: &ObjectReference, first: Timestamp) -> String {
        let base = regarding.name.as_deref().unwrap_or(&self.controller);
        format!("{base}.{:x}", first.as_nanosecond())
    }

    /// When the Event to update was first sent, and its next count, when this identity was sent within
    /// [`SERIES_TTL`].
    fn repeat_of(&self, key: u64, now: Timestamp) -> Option<(Timestamp, i32)> {
        let Ok(mut m) = self.memory.lock() else { return None };
        if m.pruned.elapsed() >= PRUNE_EVERY {
            m.sent.retain(|_, s| s.last + SERIES_TTL > now);
            m.pruned = Instant::now();
        }
        let s = m.sent.get(&key).filter(|s| s.last + SERIES_TTL > now)?;
        Some((s.first, s.count.saturating_add(1).max(2)))
    }

    fn event(&self, note: &Note<'_>, regarding: &ObjectReference, namespace: &str, now: Timestamp) -> Event {
        Event {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_string()),
                name: Some(self.event_name(regarding, now)),
                ..Default::default()
            },
            action: Some(note.action.to_string()),
            reason: Some(note.reason.to_string()),
            note: Some(self::note(note.message)),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(match note.type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            ..Default::default()
        }
    }
}

/// What makes two Events the same occurrence: type, action, reason, message and the object (by uid, else name).
fn identity(note: &Note<'_>, regarding: &ObjectReference) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (note.type_, note.action, note.reason, note.message).hash(&mut h);
    (&regarding.kind, &regarding.namespace, &regarding.name, &regarding.uid).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("Ingress".into()),
            namespace: Some("shop".into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..Default::default()
        }
    }

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let s = "é".repeat(800);
        let n = note(&s);
        assert!(n.len() <= NOTE_MAX + '…'.len_utf8());
    }

    #[test]
    fn identity_is_the_occurrence_and_the_object() {
        let n = |reason, message| Note { type_: EventType::Normal, reason, message, action: "Sync" };
        let a = identity(&n("Synced", "ok"), &obj("web", "u1"));
        assert_eq!(a, identity(&n("Synced", "ok"), &obj("web", "u1")));
        assert_ne!(a, identity(&n("Synced", "other"), &obj("web", "u1")), "another message");
        assert_ne!(a, identity(&n("Failed", "ok"), &obj("web", "u1")), "another reason");
        assert_ne!(a, identity(&n("Synced", "ok"), &obj("web", "u2")), "the same name, another object");
        let w = Note { type_: EventType::Warning, reason: "Synced", message: "ok", action: "Sync" };
        assert_ne!(a, identity(&w, &obj("web", "u1")), "another type");
    }
}
