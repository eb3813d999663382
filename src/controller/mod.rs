//! `alb controller`: the Kubernetes controller of one ALB (controlplane.md §3.1, §6).
//!
//! Every replica watches Frontends, Rules, Services, EndpointSlices, TLS Secrets, Namespaces, Ingresses,
//! IngressClasses and its own ALB2 ([`stores`]), compiles a policy on every change (debounced) and pushes it to
//! its nginx ([`render_loop`]). One replica, the holder of the Lease `<albns>/<alb>` ([`leader`]), also
//! translates Ingresses into Frontend/Rule objects ([`ingress_sync`]) and writes statuses and Events
//! ([`status`]). The admin server ([`crate::admin`]) serves `/healthz`, `/readyz` and `/metrics`
//! ([`crate::metrics`]).

pub mod cache;
pub mod dataplane;
pub mod events;
pub mod ingress_inputs;
pub mod ingress_sync;
pub mod leader;
pub mod render_loop;
pub mod status;
pub mod stores;

use crate::cli::NginxArgs;
use crate::metrics::Metrics;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Name of the ALB2 this controller serves (Frontends/Rules labelled `alb2.<domain>/name=<NAME>`).
    #[arg(long, env = "NAME")]
    pub alb_name: String,
    /// Namespace of the ALB2, its Frontends, Rules and Lease.
    #[arg(long, env = "ALB_NS")]
    pub alb_namespace: String,
    /// Label base domain.
    #[arg(long, env = "DOMAIN", default_value = "cpaas.io")]
    pub domain: String,
    #[command(flatten)]
    pub nginx: NginxArgs,
    /// Start and supervise a local nginx (like `alb standalone`). Without it the controller drives an nginx
    /// sidecar sharing the runtime dir: it writes nginx.conf, HUPs the pid in `<runtime>/nginx.pid` when the
    /// listeners change and pushes over the loopback policy API.
    #[arg(long, env = "ALB_SPAWN_NGINX")]
    pub spawn_nginx: bool,
    /// Port of the admin server (`/healthz`, `/readyz`, `/metrics`) on all addresses; 0 disables it.
    #[arg(long, env = "ALB_ADMIN_PORT", default_value_t = 1938)]
    pub admin_port: u16,
    /// Pod name, part of the leader identity `<albns>/<alb>/<pod>` (default: the host name).
    #[arg(long, env = "MY_POD_NAME")]
    pub pod_name: Option<String>,
    /// kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then the in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Leader election: how long a Lease holds without renewal, in seconds.
    #[arg(long, env = "ALB_LEASE_DURATION", default_value_t = 120)]
    pub lease_duration: u64,
    /// Leader election: the leader gives up when it could not renew for this long, in seconds.
    #[arg(long, env = "ALB_RENEW_DEADLINE", default_value_t = 40)]
    pub renew_deadline: u64,
    /// Leader election: interval between acquire/renew attempts, in seconds.
    #[arg(long, env = "ALB_RETRY_PERIOD", default_value_t = 12)]
    pub retry_period: u64,
    /// Leader: full Ingress resync period, in seconds (changes are synced at once anyway).
    #[arg(long, env = "ALB_RESYNC_PERIOD", default_value_t = 300)]
    pub resync_period: u64,
}

impl ControllerArgs {
    fn identity(&self) -> String {
        let pod = self.pod_name.clone().filter(|p| !p.is_empty()).unwrap_or_else(hostname);
        format!("{}/{}/{}", self.alb_namespace, self.alb_name, pod)
    }

    fn check(&self) -> Result<()> {
        anyhow::ensure!(!self.alb_name.is_empty(), "--alb-name (NAME) must not be empty");
        anyhow::ensure!(!self.alb_namespace.is_empty(), "--alb-namespace (ALB_NS) must not be empty");
        anyhow::ensure!(
            self.retry_period > 0
                && self.retry_period < self.renew_deadline
                && self.renew_deadline < self.lease_duration,
            "leader election needs 0 < --retry-period < --renew-deadline < --lease-duration (got {}/{}/{})",
            self.retry_period,
            self.renew_deadline,
            self.lease_duration
        );
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "alb".into())
}

async fn client(args: &ControllerArgs) -> Result<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context("no kubeconfig and not in a cluster")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Resolves once SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// What only the leader does; started when we get the Lease, aborted when we lose it.
#[derive(Clone)]
struct LeaderWork {
    client: kube::Client,
    stores: Arc<stores::Stores>,
    args: ControllerArgs,
    identity: String,
    compiled: watch::Receiver<Option<Arc<render_loop::Published>>>,
    changes: watch::Receiver<u64>,
    metrics: Arc<Metrics>,
}

impl LeaderWork {
    async fn run(self) {
        let events = status::event_log(self.client.clone(), &self.args.alb_name, &self.identity);
        let writer = status::StatusWriter::new(self.client.clone(), events.clone()).with_metrics(self.metrics.clone());
        let statuses = tokio::spawn(status::run(writer, self.compiled));
        // Aborting this future (leadership lost) must stop the status writer too.
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _guard = AbortOnDrop(statuses);
        let sync = ingress_sync::IngressSync::new(self.client, self.stores, self.args.clone(), events)
            .with_metrics(self.metrics);
        ingress_sync::run(sync, self.changes, Duration::from_secs(self.args.resync_period.max(1))).await;
    }
}

pub async fn run(args: ControllerArgs) -> Result<()> {
    args.check()?;
    let client = client(&args).await?;
    let identity = args.identity();
    tracing::info!(
        "controller for ALB {}/{} starting as {identity} ({} nginx)",
        args.alb_namespace,
        args.alb_name,
        if args.spawn_nginx { "spawned" } else { "sidecar" }
    );

    // Cancelled on SIGINT/SIGTERM: every task watches this.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (policy_tx, policy_rx) = watch::channel(0u64);
    let (ingress_tx, ingress_rx) = watch::channel(0u64);
    let changes = stores::Changes { policy: policy_tx, ingress: ingress_tx };
    let stores = Arc::new(stores::Stores::start(client.clone(), &args, changes));

    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(Metrics::new());
    if args.admin_port != 0 {
        let admin = crate::admin::Admin { ready: ready.clone(), metrics: metrics.clone() };
        crate::admin::spawn(args.admin_port, admin).await?;
    }

    let (leader_tx, leader_rx) = watch::channel(false);
    let lease = leader::LeaseConfig {
        namespace: args.alb_namespace.clone(),
        name: args.alb_name.clone(),
        identity: identity.clone(),
        lease_duration: Duration::from_secs(args.lease_duration),
        renew_deadline: Duration::from_secs(args.renew_deadline),
        retry_period: Duration::from_secs(args.retry_period),
    };
    let elector = tokio::spawn(leader::run(client.clone(), lease, leader_tx, stop_rx.clone()));
    let leader_gauge = tokio::spawn({
        let (mut leader, metrics) = (leader_rx.clone(), metrics.clone());
        async move {
            loop {
                metrics.set_leader(*leader.borrow_and_update());
                if leader.changed().await.is_err() {
                    return;
                }
            }
        }
    });

    let (compiled_tx, compiled_rx) = watch::channel(None);
    let work = LeaderWork {
        client: client.clone(),
        stores: stores.clone(),
        args: args.clone(),
        identity,
        compiled: compiled_rx,
        changes: ingress_rx,
        metrics: metrics.clone(),
    };
    let leader_work = tokio::spawn(leader::supervise(leader_rx, move || work.clone().run()));

    let render = render_loop::RenderLoop::new(&args, stores.clone(), policy_rx, compiled_tx, ready, metrics)?;
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let result = render.run(stop_rx).await;
    leader_work.abort();
    leader_gauge.abort();
    // Give the elector a moment to release the Lease so another replica takes over at once.
    let _ = tokio::time::timeout(Duration::from_secs(3), elector).await;
    signal.abort();
    result
}
