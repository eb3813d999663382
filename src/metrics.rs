//! The control plane's own Prometheus metrics (`alb_controller_*`), shared by `alb controller` and
//! `alb standalone` and served by the admin server at `/metrics` ([`crate::admin`]). One [`Metrics`] per process,
//! passed by `Arc`; the data plane's metrics are nginx's (`lua/alb/metrics.lua`, `--metrics-port`).

use crate::compile::cache::CompileCache;
use crate::compile::{compile_cached, CompileOptions, Compiled, Snapshot};
use crate::policy::Policy;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::{Duration, Instant};

/// `Content-Type` of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindResult {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindReason {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

/// Why nginx was reloaded (label `reason` of `alb_controller_nginx_reloads_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The set of listening ports changed: nginx.conf re-rendered and HUPed.
    ListenersChanged,
    /// A spawned nginx exited and was started again.
    Restart,
}

impl Reload {
    pub fn as_str(self) -> &'static str {
        match self {
            Reload::ListenersChanged => "listeners_changed",
            Reload::Restart => "restart",
        }
    }
}

/// Every `alb_controller_*` metric. Cheap to update (atomics); `encode` renders the OpenMetrics text.
pub struct Metrics {
    registry: Registry,
    /// Per-object reconciles, e.g. `{kind="Ingress", result="ok|error"}` for each Ingress of a sync pass.
    pub reconciles: Family<KindResult, Counter>,
    /// Status writes to the API server: `{kind="Rule|Frontend|Ingress", result="ok|error"}`.
    pub status_writes: Family<KindResult, Counter>,
    pub compile_duration: Histogram,
    pub policy_size_bytes: Gauge,
    pub policy_rules: Gauge,
    /// Policy pushes that every worker applied: PUT + wait for the acks.
    pub push_duration: Histogram,
    pub push_failures: Counter,
    /// nginx workers that applied the digest we last pushed.
    pub push_workers_applied: Gauge,
    /// nginx workers running (as the policy API reports them).
    pub nginx_workers: Gauge,
    pub nginx_reloads: Family<ReasonLabel, Counter>,
    /// Objects left out of the current policy, by kind and reason (e.g. `{kind="Rule", reason="InvalidRegex"}`).
    pub rejected_objects: Family<KindReason, Gauge>,
    /// Objects in the controller's caches, by kind.
    pub watched_objects: Family<KindLabel, Gauge>,
    /// 1 while this process holds the leader Lease (always 1 for `alb standalone`).
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("alb_controller");
        let reconciles = Family::<KindResult, Counter>::default();
        registry.register("reconciles", "Object reconciles by kind and result (ok, error)", reconciles.clone());
        let status_writes = Family::<KindResult, Counter>::default();
        registry.register(
            "status_writes",
            "Status writes to the API server by kind and result (ok, error)",
            status_writes.clone(),
        );
        // 0.25 ms .. ~4 s
        let compile_duration = Histogram::new(exponential_buckets(0.00025, 2.0, 15));
        registry.register(
            "compile_duration_seconds",
            "Time to compile the objects into a policy",
            compile_duration.clone(),
        );
        let policy_size_bytes = Gauge::default();
        registry.register("policy_size_bytes", "Size of the current policy JSON", policy_size_bytes.clone());
        let policy_rules = Gauge::default();
        registry.register("policy_rules", "Rules in the current policy", policy_rules.clone());
        // 1 ms .. ~16 s
        let push_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "push_duration_seconds",
            "Time from PUT /policy until every nginx worker applied it (successful pushes)",
            push_duration.clone(),
        );
        let push_failures = Counter::default();
        registry.register(
            "push_failures",
            "Pushes that failed (data plane unreachable, policy refused, workers did not apply it in time)",
            push_failures.clone(),
        );
        let push_workers_applied = Gauge::default();
        registry.register(
            "push_workers_applied",
            "nginx workers that applied the policy digest last pushed",
            push_workers_applied.clone(),
        );
        let nginx_workers = Gauge::default();
        registry.register("nginx_workers", "nginx workers reported by the policy API", nginx_workers.clone());
        let nginx_reloads = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "nginx_reloads",
            "nginx reloads and restarts by reason (listeners_changed, restart)",
            nginx_reloads.clone(),
        );
        let rejected_objects = Family::<KindReason, Gauge>::default();
        registry.register(
            "rejected_objects",
            "Objects left out of the current policy, by kind and reason",
            rejected_objects.clone(),
        );
        let watched_objects = Family::<KindLabel, Gauge>::default();
        registry.register("watched_objects", "Objects in the controller's caches, by kind", watched_objects.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 while this process is the leader", leader.clone());
        let build_info = Family::<VersionLabel, Gauge>::default();
        registry.register("build_info", "Always 1; the version of the alb binary", build_info.clone());
        build_info.get_or_create(&VersionLabel { version: env!("CARGO_PKG_VERSION").to_string() }).set(1);
        Metrics {
            registry,
            reconciles,
            status_writes,
            compile_duration,
            policy_size_bytes,
            policy_rules,
            push_duration,
            push_failures,
            push_workers_applied,
            nginx_workers,
            nginx_reloads,
            rejected_objects,
            watched_objects,
            leader,
        }
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Compiles `snap` (after `prev`, with `cache`: [`compile_cached`]) and records the duration, the policy's size and
    /// rule count and the rejected objects.
    pub fn compile(
        &self,
        snap: &Snapshot,
        opts: &CompileOptions,
        prev: Option<&Policy>,
        cache: &mut CompileCache,
    ) -> Compiled {
        let started = Instant::now();
        let compiled = compile_cached(snap, opts, prev, cache);
        self.compile_duration.observe(started.elapsed().as_secs_f64());
        self.compiled(&compiled);
        compiled
    }

    /// Gauges describing the current policy.
    pub fn compiled(&self, c: &Compiled) {
        self.policy_rules.set(c.policy.rule_count() as i64);
        let mut counts: std::collections::BTreeMap<(&str, &str), i64> = Default::default();
        for r in &c.rejects {
            *counts.entry((r.kind.as_str(), r.reason.as_str())).or_default() += 1;
        }
        // Reasons that went away drop out of the exposition.
        self.rejected_objects.clear();
        for ((kind, reason), n) in counts {
            self.rejected_objects.get_or_create(&KindReason { kind: kind.into(), reason: reason.into() }).set(n);
        }
    }

    pub fn reconciled(&self, kind: &str, ok: bool) {
        self.reconciles.get_or_create(&kind_result(kind, ok)).inc();
    }

    pub fn status_written(&self, kind: &str, ok: bool) {
        self.status_writes.get_or_create(&kind_result(kind, ok)).inc();
    }

    /// A push every worker applied.
    /// Bytes of the policy being pushed (serialised by the pusher anyway; not again per compilation).
    pub fn policy_size(&self, bytes: usize) {
        self.policy_size_bytes.set(bytes as i64);
    }

    pub fn pushed(&self, took: Duration, workers: usize) {
        self.push_duration.observe(took.as_secs_f64());
        self.push_workers_applied.set(workers as i64);
        self.nginx_workers.set(workers as i64);
    }

    pub fn push_failed(&self) {
        self.push_failures.inc();
    }

    /// What the data plane reports now: workers holding our digest, workers running.
    pub fn acks(&self, applied: usize, workers: usize) {
        self.push_workers_applied.set(applied as i64);
        self.nginx_workers.set(workers as i64);
    }

    pub fn reloaded(&self, why: Reload) {
        self.nginx_reloads.get_or_create(&ReasonLabel { reason: why.as_str().into() }).inc();
    }

    pub fn watched(&self, kind: &str, n: usize) {
        self.watched_objects.get_or_create(&KindLabel { kind: kind.into() }).set(n as i64);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

fn kind_result(kind: &str, ok: bool) -> KindResult {
    KindResult { kind: kind.into(), result: if ok { "ok" } else { "error" }.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::Reject;

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
    fn exposition_has_every_metric_with_its_prefix() {
        let m = Metrics::new();
        m.reconciled("Ingress", true);
        m.reconciled("Ingress", false);
        m.status_written("Rule", true);
        m.reloaded(Reload::ListenersChanged);
        m.pushed(Duration::from_millis(3), 2);
        m.push_failed();
        m.watched("Ingress", 4);
        m.set_leader(true);
        let text = m.encode();
        for line in [
            "alb_controller_reconciles_total{kind=\"Ingress\",result=\"ok\"} 1",
            "alb_controller_reconciles_total{kind=\"Ingress\",result=\"error\"} 1",
            "alb_controller_status_writes_total{kind=\"Rule\",result=\"ok\"} 1",
            "alb_controller_nginx_reloads_total{reason=\"listeners_changed\"} 1",
            "alb_controller_push_duration_seconds_count 1",
            "alb_controller_push_failures_total 1",
            "alb_controller_push_workers_applied 2",
            "alb_controller_nginx_workers 2",
            "alb_controller_watched_objects{kind=\"Ingress\"} 4",
            "alb_controller_leader 1",
            "alb_controller_compile_duration_seconds_count 0",
            "alb_controller_policy_rules 0",
            "alb_controller_policy_size_bytes 0",
            &format!("alb_controller_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn rejected_gauge_is_the_current_count() {
        let m = Metrics::new();
        let mut c = crate::compile::compile(&Snapshot::default(), &CompileOptions::default());
        c.rejects = vec![reject("a", "InvalidRegex"), reject("b", "InvalidRegex"), reject("c", "InvalidPort")];
        m.compiled(&c);
        let text = m.encode();
        assert!(text.contains("alb_controller_rejected_objects{kind=\"Rule\",reason=\"InvalidRegex\"} 2"), "{text}");
        assert!(text.contains("alb_controller_rejected_objects{kind=\"Rule\",reason=\"InvalidPort\"} 1"), "{text}");
        c.rejects = vec![reject("a", "InvalidRegex")];
        m.compiled(&c);
        let text = m.encode();
        assert!(text.contains("alb_controller_rejected_objects{kind=\"Rule\",reason=\"InvalidRegex\"} 1"), "{text}");
        assert!(!text.contains("InvalidPort"), "{text}");
        m.policy_size(1234);
        assert!(m.encode().contains("alb_controller_policy_size_bytes 1234"));
    }
}
