//! `alb operator`: turns every ALB2 (`crd.alauda.io/v2beta1`) into the Deployment (OpenResty + `alb controller`),
//! Services, ConfigMaps, IngressClass, ServiceAccount and RBAC it needs, and reports the ALB2 status
//! (controlplane.md §5.1–5.4). One kube-rs `Controller` reconciles ALB2s; it runs only on the holder of the
//! Lease `alb-operator` ([`crate::controller::leader`]). Objects are server-side applied with the field manager
//! `alb-operator`; objects of the original operator (same names, §1.8 labels) are adopted once ([`reconcile`]).

pub mod config;
pub mod image;
pub mod metrics;
pub mod objects;
pub mod reconcile;

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// Image of the `alb2` container (`alb controller`).
    #[arg(long, env = "ALB_IMAGE")]
    pub alb_image: String,
    /// Image of the `nginx` container (OpenResty + the Lua data plane).
    #[arg(long, env = "NGINX_IMAGE")]
    pub nginx_image: String,
    /// Operator version: label `alb.cpaas.io/version` of every object, ALB2 `status.detail.version`.
    #[arg(long, env = "VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    pub operator_version: String,
    /// Label base domain.
    #[arg(long, env = "LABEL_BASE_DOMAIN", default_value = "cpaas.io")]
    pub domain: String,
    #[arg(long, env = "IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub image_pull_policy: String,
    /// Image pull secrets of the ALB ServiceAccounts (comma separated).
    #[arg(long, env = "IMAGE_PULL_SECRETS", value_delimiter = ',')]
    pub image_pull_secrets: Vec<String>,
    /// Namespace of the Lease `alb-operator` (default: this pod's namespace, else `cpaas-system`).
    #[arg(long, env = "LEADER_NS")]
    pub leader_namespace: Option<String>,
    /// Pod name, the leader identity (default: the host name).
    #[arg(long, env = "MY_POD_NAME")]
    pub pod_name: Option<String>,
    /// Reconcile only the ALB2s of this namespace (default: every namespace).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then the in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// `/healthz` and `/readyz` (0 disables).
    #[arg(long, env = "ALB_OPERATOR_PROBE_PORT", default_value_t = 8081)]
    pub probe_port: u16,
    /// Prometheus `/metrics` (`alb_operator_*`, OpenMetrics text; 0 disables).
    #[arg(long, env = "ALB_OPERATOR_METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,
    #[arg(long, default_value_t = 60)]
    pub lease_duration: u64,
    #[arg(long, default_value_t = 40)]
    pub renew_deadline: u64,
    #[arg(long, default_value_t = 12)]
    pub retry_period: u64,
}

impl OperatorArgs {
    fn env(&self) -> objects::OperatorEnv {
        objects::OperatorEnv {
            alb_image: self.alb_image.clone(),
            nginx_image: self.nginx_image.clone(),
            version: self.operator_version.clone(),
            domain: self.domain.clone(),
            pull_policy: self.image_pull_policy.clone(),
            pull_secrets: self.image_pull_secrets.iter().filter(|s| !s.is_empty()).cloned().collect(),
        }
    }

    fn check(&self) -> Result<()> {
        anyhow::ensure!(!self.alb_image.is_empty(), "--alb-image (ALB_IMAGE) must not be empty");
        anyhow::ensure!(!self.nginx_image.is_empty(), "--nginx-image (NGINX_IMAGE) must not be empty");
        anyhow::ensure!(
            config::valid_label_value(&self.operator_version) && !self.operator_version.is_empty(),
            "VERSION {:?} must be a valid label value",
            self.operator_version
        );
        anyhow::ensure!(
            self.retry_period > 0
                && self.retry_period < self.renew_deadline
                && self.renew_deadline < self.lease_duration,
            "leader election needs 0 < --retry-period < --renew-deadline < --lease-duration"
        );
        Ok(())
    }
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await.context("no kubeconfig and not in a cluster")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

fn own_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

async fn probes(port: u16) -> Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(|| async { "ok" }));
    let listener =
        tokio::net::TcpListener::bind(("0.0.0.0", port)).await.with_context(|| format!("binding :{port}"))?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}

pub async fn run(args: OperatorArgs) -> Result<()> {
    args.check()?;
    let client = client(args.kubeconfig.as_ref()).await?;
    let pod = args.pod_name.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
    });
    let lease_ns = args.leader_namespace.clone().or_else(own_namespace).unwrap_or_else(|| "cpaas-system".into());
    tracing::info!("alb operator {} starting as {pod} (Lease {lease_ns}/alb-operator)", args.operator_version);
    if args.probe_port != 0 {
        probes(args.probe_port).await?;
    }
    let op_metrics = std::sync::Arc::new(metrics::OperatorMetrics::new(&args.operator_version));
    if args.metrics_port != 0 {
        metrics::serve(args.metrics_port, op_metrics.clone()).await?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let (leader_tx, leader_rx) = watch::channel(false);
    let lease = crate::controller::leader::LeaseConfig {
        namespace: lease_ns,
        name: "alb-operator".into(),
        identity: pod,
        lease_duration: Duration::from_secs(args.lease_duration),
        renew_deadline: Duration::from_secs(args.renew_deadline),
        retry_period: Duration::from_secs(args.retry_period),
    };
    let elector = tokio::spawn(crate::controller::leader::run(client.clone(), lease, leader_tx, stop_rx));
    // alb_operator_leader, and no ALB2 phases from a stale cache once leadership is lost.
    let mut leading = leader_rx.clone();
    let m = op_metrics.clone();
    tokio::spawn(async move {
        loop {
            let is_leader = *leading.borrow_and_update();
            m.leader.set(i64::from(is_leader));
            if !is_leader {
                m.set_store(None);
            }
            if leading.changed().await.is_err() {
                break;
            }
        }
    });
    let ctx = std::sync::Arc::new(reconcile::Ctx::new(client, args.env(), args.namespace.clone(), op_metrics));
    let work = tokio::spawn(crate::controller::leader::supervise(leader_rx, move || reconcile::run(ctx.clone())));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    work.abort();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), elector).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The chart ships our CRDs: its `crds/` must be a byte-for-byte copy of `crds/` (`cp crds/*.yaml
    /// charts/alauda-alb2/crds/` after `alb crds --out-dir crds`).
    #[test]
    fn chart_crds_match_crds_dir() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let names = |dir: &std::path::Path| {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".yaml"))
                .collect();
            v.sort();
            v
        };
        let src = root.join("crds");
        let chart = root.join("charts/alauda-alb2/crds");
        assert_eq!(names(&src), names(&chart), "same CRD files in crds/ and the chart");
        for n in names(&src) {
            let a = std::fs::read(src.join(&n)).unwrap();
            let b = std::fs::read(chart.join(&n)).unwrap();
            assert!(a == b, "charts/alauda-alb2/crds/{n} drifted from crds/{n}: copy it again");
        }
    }
}
