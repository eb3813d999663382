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

use crate::compile::features::FeatureError;
use crate::compile::slice::EndpointSlice;
use crate::compile::{CompileOptions, Snapshot};
use crate::crd::{Frontend, Rule};
use crate::policy::config::RuleConfig;
use crate::policy::{BackendGroup, Index};
use foldhash::HashMap;
use k8s_openapi::api::core::v1::Service;
use serde_json::Value;
use std::sync::Arc;

/// Carried from one compilation to the next by whoever compiles repeatedly (render loop, standalone, `alb policy
/// --time`). [`crate::compile::compile_cached`] takes it; a new one (or [`CompileCache::default`]) computes all.
#[derive(Default)]
pub struct CompileCache {
    held: Held,
    /// The options the entries were computed with (a change of options empties the cache).
    opts: Option<CompileOptions>,
    entries: HashMap<usize, Entry>,
    /// What the last compilation took from the cache (tests).
    pub last_hits: Hits,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hits {
    pub dslx: usize,
    pub groups: usize,
    pub configs: usize,
}

/// The objects of the last compiled snapshot whose addresses key the entries.
#[derive(Default)]
#[allow(dead_code)] // held for their addresses, never read
struct Held {
    frontends: Vec<Arc<Frontend>>,
    rules: Vec<Arc<Rule>>,
    services: Vec<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
}

/// The dslx products of a valid Rule.
#[derive(Debug, Clone)]
pub struct Dslx {
    pub complexity: i64,
    pub matcher: Arc<Value>,
    pub dsl_len: usize,
    pub index: Option<Arc<Index>>,
}

#[derive(Default)]
struct Entry {
    /// Parts this compilation checked or computed (DSLX, GROUP, CONFIG); the others are dropped at its end.
    touched: u8,
    dslx: Option<Dslx>,
    /// The group and the identity of what it was resolved from ([`crate::compile::backends::Lookup::identity`]).
    group: Option<(Vec<usize>, Arc<BackendGroup>)>,
    /// The features of the Rule on the Frontend at that address, when they were computed without reading a
    /// Secret (those that read one are computed every time).
    config: Option<(usize, RuleConfig, Vec<FeatureError>)>,
}

/// One compilation's view of the cache: entries move out of the cache while it runs and back after.
#[derive(Default)]
pub struct Memo {
    entries: HashMap<usize, Entry>,
    hits: Hits,
}

/// The key of a Rule: its address (stable while the cache holds it).
pub fn rule_key(rule: &Rule) -> usize {
    rule as *const Rule as usize
}

impl CompileCache {
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
        Memo { entries, hits: Hits::default() }
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
        // The new objects are taken before the old ones are released: an address in use stays in use.
        let held = Held {
            frontends: snapshot.frontends.clone(),
            rules: snapshot.rules.clone(),
            services: snapshot.services.clone(),
            slices: snapshot.endpoint_slices.clone(),
        };
        self.held = held;
    }
}

const DSLX: u8 = 1;
const GROUP: u8 = 2;
const CONFIG: u8 = 4;

impl Memo {
    fn entry(&mut self, rule: usize) -> &mut Entry {
        self.entries.entry(rule).or_default()
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
        let e = self.entry(rule);
        match &e.group {
            Some((id, g)) if id.as_slice() == identity => {
                let g = g.clone();
                e.touched |= GROUP;
                self.hits.groups += 1;
                Some(g)
            }
            _ => {
                // computed from other objects, which may be gone: never compared again
                e.group = None;
                None
            }
        }
    }

    /// The features of `rule` on the Frontend at `frontend`, when kept.
    pub(crate) fn config(&mut self, rule: usize, frontend: usize) -> Option<(RuleConfig, Vec<FeatureError>)> {
        let e = self.entry(rule);
        match &e.config {
            Some((f, c, errs)) if *f == frontend => {
                let out = (c.clone(), errs.clone());
                e.touched |= CONFIG;
                self.hits.configs += 1;
                Some(out)
            }
            _ => {
                e.config = None;
                None
            }
        }
    }

    pub(crate) fn keep_config(&mut self, rule: usize, frontend: usize, config: &RuleConfig, errs: &[FeatureError]) {
        let e = self.entry(rule);
        e.config = Some((frontend, config.clone(), errs.to_vec()));
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
