//! The operator's own Prometheus metrics (`alb_operator_*`), served at `/metrics` on `--metrics-port` (8080 as
//! the original operator, §5.1). One [`OperatorMetrics`] per process, shared by `Arc`.

use crate::crd::alb2::ALB2;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

/// How one reconcile ended (label `result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Objects applied (or nothing to do: ignored, not a v2 ALB, a finalizer or label step, deletion done).
    Ok,
    /// `spec.config` or an annotation is invalid: status Warning, nothing applied.
    Invalid,
    /// An API call failed; retried.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }
}

type HistogramFamily = Family<ResultLabel, Histogram, fn() -> Histogram>;

fn reconcile_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct OperatorMetrics {
    registry: Registry,
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_duration: HistogramFamily,
    pub leader: Gauge,
    albs: Family<PhaseLabel, Gauge>,
    /// The reconciler's ALB2 cache while this replica leads (phases are counted from it at each scrape).
    store: Mutex<Option<kube::runtime::reflector::Store<ALB2>>>,
}

impl OperatorMetrics {
    pub fn new(version: &str) -> OperatorMetrics {
        let mut registry = Registry::with_prefix("alb_operator");
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info.get_or_create(&VersionLabel { version: version.to_string() }).set(1);
        registry.register("build_info", "Operator build: always 1, label version", build_info);
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the Lease alb-operator", leader.clone());
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register("reconciles", "ALB2 reconciles by result (ok, invalid, error)", reconciles.clone());
        let reconcile_duration: HistogramFamily = Family::new_with_constructor(reconcile_histogram);
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one ALB2 reconcile by result",
            reconcile_duration.clone(),
        );
        let albs = Family::<PhaseLabel, Gauge>::default();
        registry.register("albs", "ALB2s by status.state (leader only)", albs.clone());
        OperatorMetrics { registry, reconciles, reconcile_duration, leader, albs, store: Mutex::new(None) }
    }

    pub fn observe(&self, outcome: Outcome, took: Duration) {
        let l = ResultLabel { result: outcome.as_str().to_string() };
        self.reconciles.get_or_create(&l).inc();
        self.reconcile_duration.get_or_create(&l).observe(took.as_secs_f64());
    }

    /// The reconciler's ALB2 cache (`None` when leadership is lost: the phase series disappear).
    pub fn set_store(&self, store: Option<kube::runtime::reflector::Store<ALB2>>) {
        if let Ok(mut s) = self.store.lock() {
            *s = store;
        }
    }

    fn refresh_phases(&self) {
        let albs = self.store.lock().ok().and_then(|s| s.as_ref().map(|s| s.state())).unwrap_or_default();
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        for a in albs {
            let phase = a.status.as_ref().and_then(|s| s.state.clone()).filter(|s| !s.is_empty());
            *counts.entry(phase.unwrap_or_else(|| "Pending".into())).or_default() += 1;
        }
        self.albs.clear();
        for (phase, n) in counts {
            self.albs.get_or_create(&PhaseLabel { phase }).set(n);
        }
    }

    /// The OpenMetrics text ([`crate::metrics::CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        self.refresh_phases();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` on `port` (all addresses).
pub async fn serve(port: u16, metrics: std::sync::Arc<OperatorMetrics>) -> anyhow::Result<()> {
    use anyhow::Context;
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], m.encode()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("binding the metrics port :{port}"))?;
    tracing::info!("operator metrics on :{port}/metrics");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_counts_durations_phases_leader_and_build() {
        let m = OperatorMetrics::new("v1.2.3");
        m.observe(Outcome::Ok, Duration::from_millis(3));
        m.observe(Outcome::Ok, Duration::from_millis(5));
        m.observe(Outcome::Invalid, Duration::from_millis(1));
        m.leader.set(1);
        let (reader, mut writer) = kube::runtime::reflector::store::<ALB2>();
        for (name, state) in [("a", Some("Running")), ("b", Some("Running")), ("c", Some("Warning")), ("d", None)] {
            let mut v = json!({"apiVersion": "crd.alauda.io/v2beta1", "kind": "ALB2",
                "metadata": {"name": name, "namespace": "n"}, "spec": {}});
            if let Some(s) = state {
                v["status"] = json!({"state": s});
            }
            let alb: ALB2 = serde_json::from_value(v).unwrap();
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(alb));
        }
        m.set_store(Some(reader));
        let text = m.encode();
        for line in [
            "alb_operator_build_info{version=\"v1.2.3\"} 1",
            "alb_operator_leader 1",
            "alb_operator_reconciles_total{result=\"ok\"} 2",
            "alb_operator_reconciles_total{result=\"invalid\"} 1",
            "alb_operator_reconcile_duration_seconds_count{result=\"ok\"} 2",
            "alb_operator_albs{phase=\"Running\"} 2",
            "alb_operator_albs{phase=\"Warning\"} 1",
            "alb_operator_albs{phase=\"Pending\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        m.set_store(None);
        assert!(!m.encode().contains("alb_operator_albs{"), "no phases when not leading");
    }
}
