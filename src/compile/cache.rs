//! What a compilation takes from the ones before: for each Rule, its dslx products (validated matcher,
//! complexity, ordering length, index), its features (unless they read a Secret) and its resolved backend group.
//! Each is a pure function of objects the snapshot holds as `Arc`s (the Rule; its Frontend; the Services and
//! EndpointSlices its group names), so each is keyed by the identity (address) of those objects: an edited object
//! is a new `Arc` and misses.
//!
//! An address names one object only while that object is alive. The cache therefore holds the objects of the
//! snapshot it last compiled ([`Held`]): no new object can take their addresses. A part of an entry survives a
//! compilation only when that compilation checked it against (or computed it from) its own objects; every other
//! part is dropped, and the held objects are replaced by the new snapshot's. So every address left in the cache
//! names an object that is held.
//!
//! A Rule replaced by an object that differs only in what no result reads (its status, resourceVersion: every
//! status write) keeps its entry: the first compilation that misses it finds the held object of the same
//! namespace/name and, when their spec, labels and annotations are equal, moves the entry to the new address.
//! Without this, the status writes after start-up would make the next compilation compute every Rule again and
//! hold two generations of results for a moment.
//!
//! [`CompileCache::weak`] (the controller) holds the objects through `Weak`s: an address stays reserved (the
//! allocation lives on) but the object's content is freed as soon as nothing else holds it. Otherwise the status
//! writes after start-up left two of every Rule alive until the next compilation (at 10,000 Rules ~35 MB). A held
//! Rule that is gone is matched by what the API server guarantees instead: the same uid and
//! [`crate::crd::spec_fingerprint`] (generation, which moves with every spec change, labels, annotations and
//! deletion mark; kept with the entry).

use crate::compile::features::FeatureError;
use crate::compile::service::Service;
use crate::compile::slice::EndpointSlice;
use crate::compile::{CompileOptions, Snapshot};
use crate::crd::{Frontend, Rule};
use crate::policy::config::RuleConfig;
use crate::policy::{BackendGroup, Json};
use foldhash::{HashMap, HashMapExt};
use std::sync::{Arc, Weak};

/// Carried from one compilation to the next by whoever compiles repeatedly (render loop, standalone, `alb policy
/// --time`). [`crate::compile::compile_cached`] takes it; a new one (or [`CompileCache::default`]) computes all.
#[derive(Default)]
pub struct CompileCache {
    held: Held,
    /// Hold the objects through `Weak`s ([`CompileCache::weak`]).
    weak: bool,
    /// The options the entries were computed with (a change of options empties the cache).
    opts: Option<CompileOptions>,
    /// Boxed: a table of 10,000 entries has 16,384 slots, and an entry is 128 bytes (2.2 MB of slots inline, 1.5
    /// MB boxed; twice as much for a moment while the table grows).
    entries: HashMap<usize, Box<Entry>>,
    /// What the last compilation took from the cache (tests, and a debug line of the render loop).
    pub last_hits: Hits,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hits {
    pub dslx: usize,
    pub groups: usize,
    pub configs: usize,
    /// Entries moved to a Rule's new object (same spec, labels and annotations).
    pub moved: usize,
}

/// The objects of the last compiled snapshot whose addresses key the entries.
/// Frontends, Services and slices are held for their addresses only; Rules are also read (`Memo::adopt`).
#[derive(Default)]
struct Held {
    #[allow(dead_code)]
    frontends: Vec<Hold<Frontend>>,
    rules: Vec<Hold<Rule>>,
    #[allow(dead_code)]
    services: Vec<Hold<Service>>,
    #[allow(dead_code)]
    slices: Vec<Hold<EndpointSlice>>,
}

/// One held object: the object, or (weak cache) its allocation only, which keeps its address from being reused.
enum Hold<T> {
    Strong(Arc<T>),
    Weak(Weak<T>),
}

impl<T> Hold<T> {
    fn new(obj: &Arc<T>, weak: bool) -> Hold<T> {
        match weak {
            true => Hold::Weak(Arc::downgrade(obj)),
            false => Hold::Strong(obj.clone()),
        }
    }

    fn all(objs: &[Arc<T>], weak: bool) -> Vec<Hold<T>> {
        objs.iter().map(|o| Hold::new(o, weak)).collect()
    }

    /// The object's address (its key), whether or not it is still alive.
    fn address(&self) -> usize {
        match self {
            Hold::Strong(a) => Arc::as_ptr(a) as usize,
            Hold::Weak(w) => w.as_ptr() as usize,
        }
    }

    /// The object, while something still holds it.
    fn alive(&self) -> Option<Arc<T>> {
        match self {
            Hold::Strong(a) => Some(a.clone()),
            Hold::Weak(w) => w.upgrade(),
        }
    }
}

/// What identifies a Rule's content when its object is gone (weak cache): its uid and
/// [`crate::crd::spec_fingerprint`]. Only for Rules with a uid and a generation (from an API server); others are
/// matched while their object is alive only.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    /// [`name_hash`]: where `Memo::adopt` files the entry of a Rule that is gone.
    name: u64,
    /// A hash of the uid (10,000 entries: 8 bytes each instead of a 36-character string).
    uid: u64,
    spec: u64,
}

impl Origin {
    fn of(rule: &Rule) -> Option<Origin> {
        let m = &rule.metadata;
        let uid = crate::hashing::hash_of(m.uid.as_deref()?);
        Some(Origin { name: name_hash(rule), uid, spec: m.fingerprint()? })
    }
}

/// The dslx products of a valid Rule.
#[derive(Debug, Clone)]
pub struct Dslx {
    pub complexity: i64,
    pub matcher: Json,
    pub dsl_len: usize,
    pub index: Option<Json>,
}

/// The Frontend's address, the features computed on it (shared with the policies), and their errors.
type KeptConfig = (usize, Arc<RuleConfig>, Vec<FeatureError>);

#[derive(Default)]
struct Entry {
    /// Parts this compilation checked or computed (DSLX, GROUP, CONFIG); the others are dropped at its end.
    touched: u8,
    /// Weak cache: what identifies the Rule the entry was made for once its object is gone.
    origin: Option<Origin>,
    dslx: Option<Dslx>,
    /// The group and the identity of what it was resolved from ([`crate::compile::backends::Lookup::identity_into`]).
    group: Option<(Vec<usize>, Arc<BackendGroup>)>,
    /// The features of the Rule on the Frontend at that address, when they were computed without reading a
    /// Secret (those that read one are computed every time).
    /// Boxed: most of an entry's size, and the entries of 10,000 Rules are one hash table.
    config: Option<Box<KeptConfig>>,
}

/// One compilation's view of the cache: entries move out of the cache while it runs and back after.
#[derive(Default)]
pub struct Memo {
    entries: HashMap<usize, Box<Entry>>,
    hits: Hits,
    /// The objects of the compilation before (their addresses key `entries`).
    held: Held,
    weak: bool,
    /// `held.rules` by a hash of namespace/name ([`name_hash`]), made at the first Rule this compilation has no
    /// entry for.
    by_name: Option<HashMap<u64, usize>>,
}

/// A hash of a Rule's namespace/name (`Memo::adopt`).
fn name_hash(rule: &Rule) -> u64 {
    let m = &rule.metadata;
    crate::hashing::hash_of((m.namespace.as_deref(), m.name.as_deref()))
}

/// The key of a Rule: its address (stable while the cache holds it).
pub fn rule_key(rule: &Rule) -> usize {
    rule as *const Rule as usize
}

impl CompileCache {
    /// A cache that holds the objects it was computed from through `Weak`s (see the module comment): for a
    /// process that keeps the objects in stores anyway and replaces them on every status write.
    pub fn weak() -> CompileCache {
        CompileCache { weak: true, ..Default::default() }
    }

    /// The entries for a compilation with `opts`: all of them, or none when the options changed.
    pub(crate) fn begin(&mut self, opts: &CompileOptions) -> Memo {
        let same = self.opts.as_ref().is_some_and(|o| o.alb_name == opts.alb_name && o.domain == opts.domain);
        let mut entries = std::mem::take(&mut self.entries);
        if !same {
            entries.clear();
            self.opts = Some(opts.clone());
        }
        for e in entries.values_mut() {
            e.touched = 0;
        }
        Memo { entries, hits: Hits::default(), held: std::mem::take(&mut self.held), weak: self.weak, by_name: None }
    }

    /// Back from a compilation of `snapshot`: keeps the entries it used and holds its objects.
    pub(crate) fn finish(&mut self, mut memo: Memo, snapshot: &Snapshot) {
        memo.entries.retain(|_, e| {
            if e.touched & DSLX == 0 {
                e.dslx = None;
            }
            if e.touched & GROUP == 0 {
                e.group = None;
            }
            if e.touched & CONFIG == 0 {
                e.config = None;
            }
            e.touched != 0
        });
        self.entries = memo.entries;
        self.last_hits = memo.hits;
        // The new objects are taken before the old ones (`memo.held`) are released: an address in use stays in use.
        let weak = self.weak;
        self.held = Held {
            frontends: Hold::all(&snapshot.frontends, weak),
            rules: Hold::all(&snapshot.rules, weak),
            services: Hold::all(&snapshot.services, weak),
            slices: Hold::all(&snapshot.endpoint_slices, weak),
        };
        drop(memo.held);
    }
}

const DSLX: u8 = 1;
const GROUP: u8 = 2;
const CONFIG: u8 = 4;

/// A part of an entry (`bit`) when `valid` for this compilation: marked checked and counted. Otherwise it is
/// dropped: it was computed from other objects, which may be gone, so it is never compared again.
fn checked<'e, T>(
    slot: &'e mut Option<T>,
    touched: &mut u8,
    bit: u8,
    hits: &mut usize,
    valid: impl FnOnce(&T) -> bool,
) -> Option<&'e T> {
    if slot.as_ref().is_some_and(valid) {
        *touched |= bit;
        *hits += 1;
        slot.as_ref()
    } else {
        *slot = None;
        None
    }
}

impl Memo {
    fn entry(&mut self, rule: usize) -> &mut Entry {
        self.entries.entry(rule).or_default()
    }

    /// Before `rule` is compiled: when it has no entry but the held Rule of its namespace/name has one and reads
    /// the same (spec, labels, annotations: all that the cached results depend on besides other objects, whose
    /// identities are checked anyway), that entry becomes `rule`'s. A held Rule that is gone (weak cache) reads
    /// the same when its [`Origin`] is `rule`'s.
    pub(crate) fn adopt(&mut self, rule: &Rule) {
        let key = rule_key(rule);
        if self.entries.contains_key(&key) {
            return;
        }
        let moved = self.moved_entry(rule);
        let e = match moved {
            Some(e) => {
                self.hits.moved += 1;
                e
            }
            None => Box::new(Entry { origin: if self.weak { Origin::of(rule) } else { None }, ..Default::default() }),
        };
        self.entries.insert(key, e);
    }

    /// The entry of the held Rule `rule` replaces, taken out when that Rule read the same.
    fn moved_entry(&mut self, rule: &Rule) -> Option<Box<Entry>> {
        let rules = &self.held.rules;
        let by_name = self.by_name.get_or_insert_with(|| {
            let mut m = HashMap::with_capacity(rules.len());
            for (i, r) in rules.iter().enumerate() {
                if let Some(r) = r.alive() {
                    m.insert(name_hash(&r), i);
                } else if let Some(e) = self.entries.get(&r.address()) {
                    // gone: filed under the name hash its entry was made with
                    if let Some(o) = &e.origin {
                        m.insert(o.name, i);
                    }
                }
            }
            m
        });
        let old = &rules[*by_name.get(&name_hash(rule))?];
        let same = match old.alive() {
            Some(old) => {
                // (a hash shared by two names finds the other one: compared here, and not taken)
                let (m, o) = (&rule.metadata, &old.metadata);
                o.namespace == m.namespace
                    && o.name == m.name
                    && old.spec == rule.spec
                    && o.labels == m.labels
                    && o.annotations == m.annotations
            }
            None => {
                let origin = self.entries.get(&old.address()).and_then(|e| e.origin.as_ref());
                origin.is_some() && origin == Origin::of(rule).as_ref()
            }
        };
        let mut e = if same { self.entries.remove(&old.address())? } else { return None };
        if self.weak {
            e.origin = Origin::of(rule);
        }
        Some(e)
    }

    /// The dslx products of `rule`, computed by `make` (None: invalid, nothing kept) unless kept from before.
    pub(crate) fn dslx(&mut self, rule: usize, make: impl FnOnce() -> Option<Dslx>) -> Option<Dslx> {
        let e = self.entry(rule);
        if let Some(d) = &e.dslx {
            let d = d.clone();
            e.touched |= DSLX;
            self.hits.dslx += 1;
            return Some(d);
        }
        let d = make()?;
        let e = self.entry(rule);
        e.dslx = Some(d.clone());
        e.touched |= DSLX;
        Some(d)
    }

    /// The group of `rule` when it was resolved from objects of the same `identity`.
    pub(crate) fn group(&mut self, rule: usize, identity: &[usize]) -> Option<Arc<BackendGroup>> {
        let e = self.entries.entry(rule).or_default();
        let kept = checked(&mut e.group, &mut e.touched, GROUP, &mut self.hits.groups, |(id, _)| id == identity);
        kept.map(|(_, g)| g.clone())
    }

    /// The features of `rule` on the Frontend at `frontend`, when kept.
    pub(crate) fn config(&mut self, rule: usize, frontend: usize) -> Option<(Arc<RuleConfig>, Vec<FeatureError>)> {
        let e = self.entries.entry(rule).or_default();
        let kept = checked(&mut e.config, &mut e.touched, CONFIG, &mut self.hits.configs, |c| c.0 == frontend);
        kept.map(|c| (c.1.clone(), c.2.clone()))
    }

    pub(crate) fn keep_config(
        &mut self,
        rule: usize,
        frontend: usize,
        config: &Arc<RuleConfig>,
        errs: &[FeatureError],
    ) {
        let e = self.entry(rule);
        e.config = Some(Box::new((frontend, config.clone(), errs.to_vec())));
        e.touched |= CONFIG;
    }

    pub(crate) fn keep_group(&mut self, rule: usize, identity: Vec<usize>, group: &Arc<BackendGroup>) {
        let e = self.entry(rule);
        e.group = Some((identity, group.clone()));
        e.touched |= GROUP;
    }
}

#[cfg(test)]
impl CompileCache {
    /// An entry for `rule` (tests).
    pub fn has(&self, rule: &Rule) -> bool {
        self.entries.contains_key(&rule_key(rule))
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}
