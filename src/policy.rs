//! The policy model: the one contract between the controller and the Lua data plane.
//! Documented in `docs/policy.md`; both sides are tested against `e2e/fixtures/policy/*.json`.

use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

pub mod config;
pub mod delta;
pub use config::RuleConfig;

/// Schema version understood by `lua/alb/schema.lua`.
pub const POLICY_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub version: u32,
    #[serde(default)]
    pub generation: u64,
    /// Port (decimal string) -> rules of that listener, in match order.
    #[serde(default)]
    pub http: BTreeMap<String, HttpPort>,
    #[serde(default)]
    /// Shared: a compilation takes an unchanged Rule's group from the one before (`compile::cache`).
    pub backend_groups: Vec<Arc<BackendGroup>>,
    /// TLS certificates by lookup key (`"<port>"`, `"<domain>"`, `"<domain>/<port>"`), docs/policy.md
    /// "certificates". Absent when empty, so policies without TLS keep their bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub certificates: BTreeMap<String, Certificate>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            version: POLICY_VERSION,
            generation: 0,
            http: BTreeMap::new(),
            backend_groups: Vec::new(),
            certificates: BTreeMap::new(),
        }
    }
}

/// A certificate chain and its private key, PEM. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The leaf certificate first, then intermediates (and the Secret's `ca.crt`).
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate").field("cert", &self.cert).field("key", &"<redacted>").finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpPort {
    pub rules: Vec<SharedRule>,
}

/// A rule of a policy, shared with the policies before and after it that have it unchanged: a compilation
/// takes the previous policy's rule when it builds an equal one (`compile`), so two consecutive policies (the
/// published one and the one being compiled; the pusher's base and the next) hold one copy of what did not
/// change. Written as the rule itself. Read through `Deref`; [`SharedRule::make_mut`] copies a rule that is
/// shared before it changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SharedRule(Arc<HttpRule>);

impl SharedRule {
    pub fn new(rule: HttpRule) -> SharedRule {
        SharedRule(Arc::new(rule))
    }

    /// The rule, to change it: a copy of its own when another policy holds it too.
    pub fn make_mut(&mut self) -> &mut HttpRule {
        Arc::make_mut(&mut self.0)
    }

    /// The same allocation (not only equal content).
    pub fn ptr_eq(&self, other: &SharedRule) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::ops::Deref for SharedRule {
    type Target = HttpRule;

    fn deref(&self) -> &HttpRule {
        &self.0
    }
}

impl PartialEq for SharedRule {
    fn eq(&self, other: &SharedRule) -> bool {
        self.ptr_eq(other) || *self.0 == *other.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRule {
    pub name: String,
    pub priority: i64,
    pub complexity: i64,
    pub source: Source,
    /// Prefix expression, see docs/policy.md "Expr".
    /// Shared: a compilation takes it from the previous one for an unchanged Rule (`compile::cache`).
    #[serde(rename = "match")]
    pub matcher: Json,
    /// An [`Index`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(default)]
    pub backend_protocol: String,
    /// Per-rule features, docs/policy.md "Rule config (v1)".
    /// Shared: with the compile cache, which keeps the features of an unchanged Rule (`compile::cache`).
    #[serde(default)]
    pub config: Arc<RuleConfig>,
    /// Content key (docs/policy.md "Rule keys"): 16 hex digits, FNV-1a 64 of this rule's JSON without `key`,
    /// set by [`Policy::set_rule_keys_from`]. The data plane reuses what it compiled for an equal key on the same port.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

/// A part of a rule the controller only writes into the policy (its match expression, its index hints), kept
/// as its JSON text: a match expression is ~80 bytes as text and ~650 as a `serde_json::Value` tree, index hints
/// ~60 against ~250 as an [`Index`] (at 10,000 rules ~6 MB less). Shared between the compilations that keep it.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Json(Arc<serde_json::value::RawValue>);

impl Json {
    /// (Serialising alb's own types and `Value`s does not fail: the error is serde_json's signature.)
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Json, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(|raw| Json(Arc::from(raw)))
    }

    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// Read back (tests evaluate match expressions and check index hints).
    #[cfg(test)]
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(self.text()).unwrap_or_else(|e| panic!("{}: {e}", self.text()))
    }
}

/// Read through a `Value`, so any deserializer will do (a `RawValue` alone reads only from JSON text, not from
/// the buffered content of an untagged enum like the delta's rule references).
impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        Json::of(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.text() == other.text()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
}

/// Necessary-condition hints for the Lua router (docs/policy.md "Index").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wildcard_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
}

impl Index {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.wildcard_hosts.is_empty() && self.paths.is_empty() && self.prefixes.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendGroup {
    pub name: String,
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub session_affinity_policy: String,
    #[serde(default)]
    pub session_affinity_attribute: String,
    #[serde(default)]
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backend {
    pub address: String,
    pub port: u16,
    pub weight: u32,
    #[serde(default)]
    pub svc: String,
    #[serde(default)]
    pub ns: String,
}

impl Policy {
    /// Canonical bytes pushed to nginx; the digest the data plane acks is the sha1 of these bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Sized up front: grown by doubling from empty, a 10,000-rule policy (~6 MB) was copied ~16 times into
        // fresh pages, about half of its serialisation time. An estimate too large costs only address space.
        let certs: usize = self.certificates.values().map(|c| c.cert.len() + c.key.len() + 64).sum();
        let estimate = 4096 + 640 * self.rule_count() + 320 * self.backend_groups.len() + 2 * certs;
        let mut out = Vec::with_capacity(estimate);
        // Serialising plain data structures cannot fail.
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }

    /// Sets every rule's `key` from its content (the JSON of the rule without `key`). Equal keys mean
    /// byte-identical rules, which lets the data plane skip validating and compiling unchanged rules.
    /// With `prev`, a rule takes the key of `prev`'s rule of the same port and name when that rule is equal to
    /// it ([`same_content`]): comparing two rules costs a fraction of serialising and hashing one, and between
    /// two compilations of a large policy almost every rule is unchanged.
    /// An equal rule of `prev` is taken whole (shared, see [`SharedRule`]), with its key.
    pub fn set_rule_keys_from(&mut self, prev: Option<&Policy>) {
        // FNV-1a waits for one multiplication per byte: hashing LANES rules side by side lets the CPU overlap them.
        let mut bufs: [Vec<u8>; LANES] = Default::default();
        let mut todo: Vec<&mut HttpRule> = Vec::new();
        for (port, rules) in self.http.iter_mut() {
            let before: &[SharedRule] = prev.and_then(|p| p.http.get(port)).map_or(&[], |p| &p.rules);
            // Mostly the rule at the same position is the one of the same name; the others are found by name.
            let mut by_name: Option<HashMap<&str, &SharedRule>> = None;
            for (i, rule) in rules.rules.iter_mut().enumerate() {
                let old = match before.get(i).filter(|o| o.name == rule.name) {
                    Some(o) => Some(o),
                    None => by_name
                        .get_or_insert_with(|| before.iter().map(|r| (r.name.as_str(), r)).collect())
                        .get(rule.name.as_str())
                        .copied(),
                };
                match old {
                    // taken from `prev` by the compilation, with its key
                    Some(old) if old.ptr_eq(rule) && !old.key.is_empty() => {}
                    Some(old) if !old.key.is_empty() && same_content(rule, old) => *rule = old.clone(),
                    _ => {
                        let rule = rule.make_mut();
                        rule.key.clear();
                        todo.push(rule);
                    }
                }
            }
        }
        for rules in todo.chunks_mut(LANES) {
            for (rule, buf) in rules.iter().zip(bufs.iter_mut()) {
                buf.clear();
                // Serialising plain data structures into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *buf, &**rule);
            }
            let hashes = fnv1a64_lanes(std::array::from_fn(|i| match i < rules.len() {
                true => bufs[i].as_slice(),
                false => &[],
            }));
            for (rule, h) in rules.iter_mut().zip(hashes) {
                rule.key = format!("{h:016x}");
            }
        }
    }

    pub fn rule_count(&self) -> usize {
        self.http.values().map(|p| p.rules.len()).sum()
    }
}

/// Two rules equal in every field but `key` (which is left out of the content a key hashes). Every field is
/// named: a field added to [`HttpRule`] does not compile here until it is compared. Equal values serialise to
/// the same JSON (numbers keep their kind: `Value`'s equality tells 1 from 1.0).
pub(crate) fn same_content(a: &HttpRule, b: &HttpRule) -> bool {
    let HttpRule { name, priority, complexity, source, matcher, index, upstream, backend_protocol, config, key: _ } = a;
    *name == b.name
        && *priority == b.priority
        && *complexity == b.complexity
        && *upstream == b.upstream
        && *backend_protocol == b.backend_protocol
        && *source == b.source
        && *index == b.index
        && *matcher == b.matcher
        && *config == b.config
}

/// FNV-1a, 64 bits: a fixed, fast content hash (not a defence against crafted collisions: only the controller
/// writes policies).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a64_from(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
    }
    h
}

#[cfg(test)]
fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_from(FNV_OFFSET, bytes)
}

/// How many rules [`Policy::set_rule_keys_from`] hashes at once.
const LANES: usize = 4;

/// [`fnv1a64`] of each input, the inputs interleaved byte by byte (independent chains of multiplications).
fn fnv1a64_lanes(inputs: [&[u8]; LANES]) -> [u64; LANES] {
    let mut h = [FNV_OFFSET; LANES];
    let common = inputs.iter().map(|b| b.len()).min().unwrap_or(0);
    for i in 0..common {
        for (h, b) in h.iter_mut().zip(inputs) {
            *h = (*h ^ u64::from(b[i])).wrapping_mul(FNV_PRIME);
        }
    }
    for (h, b) in h.iter_mut().zip(inputs) {
        *h = fnv1a64_from(*h, &b[common..]);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/fixtures/policy").join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// A match expression is written as the tree it was made of, and reads back from text or from a tree.
    #[test]
    fn json_parts_are_their_text() {
        let expr = serde_json::json!(["AND", ["STARTS_WITH", "URL", "/a"], ["IN", "HOST", "a.com", "\"q\"\u{e9}"]]);
        let m = Json::of(&expr).unwrap();
        assert_eq!(m.text(), expr.to_string());
        assert_eq!(serde_json::to_string(&m).unwrap(), expr.to_string());
        assert_eq!(m.parse::<Value>(), expr);
        let pretty = serde_json::to_string_pretty(&expr).unwrap();
        let from_text: Json = serde_json::from_str(&format!(" {pretty} ")).unwrap();
        let from_tree: Json = serde_json::from_value(expr.clone()).unwrap();
        assert_eq!((from_text.text(), from_tree.text()), (m.text(), m.text()), "read back compact");
        assert_eq!(from_text, m);
        assert_ne!(Json::of(&serde_json::json!(["OR"])).unwrap(), m);
        let index = Index { hosts: vec!["a.com".into()], prefixes: vec!["/a".into()], ..Default::default() };
        let j = Json::of(&index).unwrap();
        assert_eq!(j.text(), r#"{"hosts":["a.com"],"prefixes":["/a"]}"#);
        assert_eq!(j.parse::<Index>(), index);
    }

    /// The Rust side of the contract: every fixture the Lua side is tested with is a `Policy`, and
    /// serialising it again keeps every field (nothing the Lua side reads is lost in Rust).
    #[test]
    fn fixtures_round_trip_through_the_rust_model() {
        for name in [
            "basic.json",
            "empty.json",
            "empty-port.json",
            "invalid-regex.json",
            "invalid-expr.json",
            "bad-version.json",
            "features.json",
        ] {
            let text = fixture(name);
            let policy: Policy = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let original: Value = serde_json::from_str(&text).unwrap();
            let again = serde_json::to_value(&policy).unwrap();
            assert_eq!(strip_defaults(original), strip_defaults(again), "{name}");
            assert_eq!(policy.to_bytes(), serde_json::to_vec(&policy).unwrap(), "{name}: to_bytes is plain JSON");
        }
        let basic: Policy = serde_json::from_str(&fixture("basic.json")).unwrap();
        assert_eq!(basic.version, POLICY_VERSION);
        assert_eq!(basic.rule_count(), 8);
    }

    /// Equal rules get equal keys, whatever their position or port; any change of content changes the key;
    /// the key is not part of what it hashes (setting keys twice gives the same keys).
    #[test]
    fn rule_keys_follow_the_content() {
        let mut p: Policy = serde_json::from_str(&fixture("basic.json")).unwrap();
        let first = p.http.values().next().unwrap().rules[0].clone();
        let port = p.http.keys().next().unwrap().clone();
        let rules = &mut p.http.get_mut(&port).unwrap().rules;
        rules.push(first.clone());
        let mut changed = first.clone();
        changed.make_mut().upstream = Some("another-group".into());
        rules.push(changed);
        p.set_rule_keys_from(None);
        let keys = |p: &Policy| -> Vec<String> { p.http[&port].rules.iter().map(|r| r.key.clone()).collect() };
        let k = keys(&p);
        let n = k.len();
        assert!(k.iter().all(|x| x.len() == 16 && x.bytes().all(|b| b.is_ascii_hexdigit())), "{k:?}");
        assert_eq!(k[0], k[n - 2], "a copy of rule 0 has its key");
        assert_ne!(k[0], k[n - 1], "another upstream, another key");
        let distinct: std::collections::BTreeSet<_> = k[..n - 2].iter().collect();
        assert_eq!(distinct.len(), n - 2, "the fixture's rules all differ: {k:?}");
        p.set_rule_keys_from(None);
        assert_eq!(keys(&p), k);
        for (rule, key) in p.http[&port].rules.iter().zip(&k) {
            let mut unkeyed = HttpRule::clone(rule);
            unkeyed.key.clear();
            assert_eq!(key, &format!("{:016x}", fnv1a64(&serde_json::to_vec(&unkeyed).unwrap())), "FNV of the JSON");
        }
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let inputs: [&[u8]; LANES] = [b"abc", b"", b"a", b"a longer input"];
        assert_eq!(fnv1a64_lanes(inputs), inputs.map(fnv1a64), "lanes hash each input alone");
    }

    /// With a previous policy, an equal rule of the same port and name takes its key (even one that is not the
    /// hash, which shows the key was taken, not computed); a rule that differs in any field, moved, or has no
    /// equal rule of its name is hashed; the result equals keys computed from scratch when `prev`'s keys are.
    #[test]
    fn rule_keys_are_taken_from_equal_rules_of_the_previous_policy() {
        let mut prev: Policy = serde_json::from_str(&fixture("basic.json")).unwrap();
        prev.set_rule_keys_from(None);
        let port = prev.http.keys().next().unwrap().clone();
        let fresh = |p: &Policy| -> Vec<String> {
            let mut q = p.clone();
            q.set_rule_keys_from(None);
            q.http[&port].rules.iter().map(|r| r.key.clone()).collect()
        };
        let mut next = prev.clone();
        let rules = &mut next.http.get_mut(&port).unwrap().rules;
        rules[1].make_mut().priority += 1; // changed content
        rules.swap(2, 3); // moved: found by name
        rules[0].make_mut().key = "stale".into(); // whatever the rule carries is replaced
        next.set_rule_keys_from(Some(&prev));
        assert_eq!(next.http[&port].rules.iter().map(|r| r.key.clone()).collect::<Vec<_>>(), fresh(&next));
        assert_ne!(next.http[&port].rules[1].key, prev.http[&port].rules[1].key);

        let mut marked = prev.clone();
        marked.http.get_mut(&port).unwrap().rules[0].make_mut().key = "taken".into();
        let mut again = prev.clone();
        again.set_rule_keys_from(Some(&marked));
        assert_eq!(again.http[&port].rules[0].key, "taken");
        // Only the key may differ: any other field makes the rule hashed again.
        let mut edited = prev.clone();
        Arc::make_mut(&mut edited.http.get_mut(&port).unwrap().rules[0].make_mut().config).vhost =
            Some("edited.test".into());
        edited.set_rule_keys_from(Some(&marked));
        assert_ne!(edited.http[&port].rules[0].key, "taken");
        assert_eq!(edited.http[&port].rules[0].key, fresh(&edited)[0]);
    }

    /// Fields that serialise with a default value may be absent from the fixture: compare without them.
    fn strip_defaults(v: Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .filter(|(_, v)| !matches!(v, Value::String(s) if s.is_empty()))
                    .filter(|(k, v)| !(k == "config" && v.as_object().is_some_and(|o| o.is_empty())))
                    .filter(|(k, v)| !(k == "generation" && v == &Value::from(0)))
                    .map(|(k, v)| (k, strip_defaults(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(strip_defaults).collect()),
            v => v,
        }
    }
}
