//! `alb standalone --manifests DIR`: no cluster. Reads Frontend/Rule/Service/EndpointSlice (and TLS Secret)
//! manifests from a folder, compiles them, runs nginx and pushes the policy; watches the folder and applies
//! every change without a reload (a reload only when the set of listeners changes).
//!
//! Ingresses (with IngressClasses and Namespaces) of the folder are translated in memory into Frontends and
//! Rules exactly as the leader controller writes them (`src/ingress/`), then compiled with the rest.

use crate::cli::NginxArgs;
use crate::compile::cache::CompileCache;
use crate::compile::{CompileOptions, Compiled, Snapshot};
use crate::crd::Frontend;
use crate::ingress::{AlbIngressConfig, IngressWarning, IngressWorld, SslStrategy};
use crate::manifests::{ManifestDir, Problem};
use crate::metrics::{Metrics, Reload};
use crate::nginx::process::Nginx;
use crate::nginx::push::{PolicyClient, Pusher};
use crate::nginx::render::{HttpListener, StreamListener};
use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct StandaloneArgs {
    /// Folder of manifests (*.yaml, *.yml, *.json): Frontend, Rule, Service, EndpointSlice, Secret
    /// (kubernetes.io/tls), and Ingress (networking.k8s.io/v1), IngressClass, Namespace (v1, for its project label).
    #[arg(long, env = "ALB_MANIFESTS")]
    pub manifests: PathBuf,
    /// Only read Frontends/Rules labelled `alb2.<domain>/name=<NAME>` (default: all of them). Also the ALB name
    /// of the Ingress translation: Ingresses without class or of class NAME are served (default class `alb`).
    #[arg(long, env = "NAME")]
    pub alb_name: Option<String>,
    /// Label base domain.
    #[arg(long, env = "DOMAIN", default_value = "cpaas.io")]
    pub domain: String,
    #[command(flatten)]
    pub ingress: IngressArgs,
    #[command(flatten)]
    pub nginx: NginxArgs,
    /// Admin server port (`/metrics`, `/healthz`, `/readyz`) on all addresses; 0 disables it. Default 1938: when
    /// that port is taken a warning is logged and there is no admin server; an explicit port must be free.
    #[arg(long, env = "ALB_ADMIN_PORT")]
    pub admin_port: Option<u16>,
}

/// The Ingress translation's flags (`alb standalone`, `alb policy`).
#[derive(clap::Args, Debug, Clone)]
pub struct IngressArgs {
    /// Port of the http Frontend of Ingresses (`config.ingressHTTPPort`); 0 = no http for Ingresses.
    #[arg(long, env = "ALB_INGRESS_HTTP_PORT", default_value_t = 80)]
    pub ingress_http_port: u16,
    /// Port of the https Frontend of Ingresses (`config.ingressHTTPSPort`); 0 = no https for Ingresses.
    #[arg(long, env = "ALB_INGRESS_HTTPS_PORT", default_value_t = 443)]
    pub ingress_https_port: u16,
    /// Which Frontends an Ingress host lands on: Never (http unless the host has TLS), Request, Always, Both.
    #[arg(long, env = "ALB_SSL_STRATEGY", default_value = "Never")]
    pub ssl_strategy: SslStrategy,
    /// Certificate (`ns/name`) of the https Frontend created for Ingresses.
    #[arg(long, env = "ALB_DEFAULT_SSL_CERT")]
    pub default_ssl_cert: Option<String>,
    /// Namespace of the Frontends/Rules generated from Ingresses (the ALB's namespace); an existing Frontend of
    /// this namespace on the ingress port is reused.
    #[arg(long, env = "ALB_NAMESPACE", default_value = "default")]
    pub alb_namespace: String,
    /// Projects served (comma list; `ALL_ALL` = all): an Ingress is served when the `<domain>/project` label of
    /// its Namespace is one of them.
    #[arg(long, env = "ALB_PROJECTS", value_delimiter = ',', default_value = "ALL_ALL")]
    pub projects: Vec<String>,
}

impl IngressArgs {
    /// The translation's config; without `--alb-name` the ALB is called `alb`.
    pub fn config(&self, alb_name: Option<&str>, domain: &str) -> AlbIngressConfig {
        AlbIngressConfig {
            alb_name: alb_name.unwrap_or("alb").to_string(),
            alb_namespace: self.alb_namespace.clone(),
            domain: domain.to_string(),
            alb_uid: None,
            http_port: self.ingress_http_port,
            https_port: self.ingress_https_port,
            ssl_strategy: self.ssl_strategy,
            default_ssl_cert: self.default_ssl_cert.clone().filter(|c| !c.is_empty()),
            projects: self.projects.clone(),
            port_mode: false,
        }
    }
}

/// The folder's compiler snapshot with its Ingresses translated in, the manifest problems and the Ingress
/// warnings. `only_alb`: the `--alb-name` filter (Frontends of other ALBs are not reused for Ingresses).
pub fn snapshot_with_ingresses(
    dir: &ManifestDir,
    cfg: &AlbIngressConfig,
    only_alb: Option<&str>,
) -> (Snapshot, Vec<Problem>, Vec<IngressWarning>) {
    let (mut snap, objs, problems) = dir.snapshot_with_ingresses();
    if objs.ingresses.is_empty() {
        return (snap, problems, Vec::new());
    }
    let label = crate::crd::label_name(&cfg.domain);
    let (ours, others): (Vec<_>, Vec<_>) = std::mem::take(&mut snap.frontends).into_iter().partition(|f| {
        only_alb
            .is_none_or(|alb| f.metadata.labels.as_ref().and_then(|l| l.get(&label)).map(String::as_str) == Some(alb))
    });
    // The translation reads owned Frontends (it adds to them); Ingresses and Services are shared.
    let ours: Vec<Frontend> = ours.iter().map(|f| (**f).clone()).collect();
    let world = IngressWorld {
        ingresses: &objs.ingresses,
        namespaces: &objs.namespaces,
        services: &snap.services,
        frontends: &ours,
        canaries: &Default::default(),
    };
    let (frontends, rules, warnings) = crate::ingress::translate_all(cfg, &world);
    snap.frontends = others;
    snap.frontends.extend(frontends.into_iter().map(Arc::new));
    snap.rules.extend(rules.into_iter().map(|r| Arc::new(r.into())));
    (snap, problems, warnings)
}

/// Compiles the folder; logs problems and rejects not logged by the previous build (`seen`). The policy's
/// generation is left at 0 so that two compilations of the same objects give the same bytes. `prev` is the
/// policy of the previous build (its rule keys are reused, [`crate::compile::compile_cached`]).
fn build(
    prev: Option<&crate::policy::Policy>,
    dir: &mut ManifestDir,
    opts: &CompileOptions,
    ingress: &AlbIngressConfig,
    seen: &mut BTreeSet<String>,
    metrics: &Metrics,
    cache: &mut CompileCache,
) -> Result<Compiled> {
    let mut now = BTreeSet::new();
    for p in dir.reload()? {
        tracing::error!("manifest rejected: {p}");
    }
    let (mut snap, problems, warnings) = snapshot_with_ingresses(dir, ingress, opts.alb_name.as_deref());
    snap.tls_fallback = crate::compile::certs::TlsFallback::of(ingress);
    let lines = problems.iter().map(|p| p.to_string()).chain(warnings.iter().map(|w| w.to_string()));
    for line in lines {
        if !seen.contains(&line) {
            tracing::warn!("{line}");
        }
        now.insert(line);
    }
    let compiled = metrics.compile(&snap, opts, prev, cache);
    for r in &compiled.rejects {
        let line = format!("rejected {r}");
        if !seen.contains(&line) {
            tracing::warn!("{line}");
        }
        now.insert(line);
    }
    *seen = now;
    Ok(compiled)
}

fn listeners(c: &Compiled) -> (Vec<HttpListener>, Vec<StreamListener>) {
    crate::nginx::listeners_of(c)
}

pub async fn run(args: StandaloneArgs) -> Result<()> {
    let opts = CompileOptions { alb_name: args.alb_name.clone(), domain: args.domain.clone(), generation: 0 };
    let ingress = args.ingress.config(args.alb_name.as_deref(), &args.domain);
    let mut dir = ManifestDir::new(&args.manifests);
    let mut seen = BTreeSet::new();
    // What the compilation of an unchanged Rule takes from the one before (src/compile/cache.rs).
    let mut cache = CompileCache::default();
    let metrics = Arc::new(Metrics::new());
    // The only instance does everything a leader does.
    metrics.set_leader(true);
    let ready = Arc::new(AtomicBool::new(false));
    spawn_admin(args.admin_port, crate::admin::Admin { ready: ready.clone(), metrics: metrics.clone() }).await?;
    // Watch before the first read: an edit made while nginx starts is not lost.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // A certificate becoming valid or expiring counts as a change of the folder.
    let recheck = tx.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // Our own reads show up as Access events: only changes count.
        if ev.map(|e| !matches!(e.kind, notify::EventKind::Access(_))).unwrap_or(true) {
            let _ = tx.send(());
        }
    })?;
    watcher
        .watch(&args.manifests, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching manifest folder {}", args.manifests.display()))?;
    let mut compiled = build(None, &mut dir, &opts, &ingress, &mut seen, &metrics, &mut cache)
        .with_context(|| format!("reading {}", args.manifests.display()))?;
    let (http, stream) = listeners(&compiled);
    let (bin, mut input, token) = args.nginx.prepare(http)?;
    input.stream_listeners = stream;
    let mut pusher = Pusher::new(PolicyClient::new(input.api_port, token)).with_metrics(metrics.clone());
    let mut nginx = Nginx::new(bin, input);
    nginx.start()?;
    pusher.client.wait_ready(Duration::from_secs(10)).await?;
    for l in &nginx.input().http_listeners {
        tracing::info!("listening on {}:{} (frontend {})", nginx.input().bind_address, l.port, l.name);
    }
    for l in &nginx.input().stream_listeners {
        let (bind, proto) = (&nginx.input().bind_address, l.proto.as_str());
        tracing::info!("listening on {bind}:{}/{proto} (frontend {}, {} backends)", l.port, l.name, l.backends.len());
    }
    pusher.push(&compiled, true).await?;
    ready.store(true, Ordering::Relaxed);

    tracing::info!("watching {} for changes", args.manifests.display());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut health = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            Some(()) = rx.recv() => {
                // Debounce: editors write a file in several steps.
                tokio::time::sleep(Duration::from_millis(30)).await;
                while rx.try_recv().is_ok() {}
                compiled = match build(Some(&compiled.policy), &mut dir, &opts, &ingress, &mut seen, &metrics, &mut cache) {
                    Ok(c) => c,
                    Err(e) => { tracing::error!("cannot read the manifests, keeping the running policy: {e:#}"); continue; }
                };
                let mut input = nginx.input().clone();
                (input.http_listeners, input.stream_listeners) = listeners(&compiled);
                let reloaded = match nginx.apply(input) {
                    Ok(r) => r,
                    Err(e) => { tracing::error!("listeners not applied, keeping the running ones: {e:#}"); false }
                };
                if reloaded {
                    metrics.reloaded(Reload::ListenersChanged);
                }
                if let Err(e) = pusher.push(&compiled, reloaded).await {
                    tracing::error!("push failed: {e:#}");
                }
            }
            _ = health.tick() => {
                if compiled.certificates_change_at.is_some_and(|t| crate::compile::certs::now_unix() >= t) {
                    compiled.certificates_change_at = None;
                    let _ = recheck.send(());
                }
                if let Some(status) = nginx.exited() {
                    tracing::error!("nginx exited ({status}); restarting it");
                    nginx.start()?;
                    metrics.reloaded(Reload::Restart);
                    pusher.client.wait_ready(Duration::from_secs(10)).await?;
                    pusher.push(&compiled, true).await?;
                    continue;
                }
                // A restarted nginx has lost its shared dict: re-push what we had.
                pusher.repair(&compiled).await?;
            }
        }
    }
    tracing::info!("shutting down");
    // The policy client first: its pool may hold a connection that never carried a request (opened while another
    // one was busy), which nginx's graceful stop waits for until its header timeout.
    drop(pusher);
    nginx.stop();
    Ok(())
}

/// Starts the admin server: `None` = the default port 1938, best effort; `Some(0)` = none; `Some(p)` must bind.
async fn spawn_admin(port: Option<u16>, admin: crate::admin::Admin) -> Result<()> {
    match port {
        Some(0) => Ok(()),
        Some(p) => crate::admin::spawn(p, admin).await,
        None => {
            if let Err(e) = crate::admin::spawn(1938, admin).await {
                tracing::warn!("{e:#}; running without the admin server (pass --admin-port)");
            }
            Ok(())
        }
    }
}
