//! `alb standalone --manifests DIR`: no cluster. Reads Frontend/Rule/Service/EndpointSlice manifests from a
//! folder, compiles them, runs nginx and pushes the policy; watches the folder and applies every change
//! without a reload (a reload only when the set of listeners changes).

use crate::cli::NginxArgs;
use crate::compile::{compile, CompileOptions, Compiled};
use crate::manifests::ManifestDir;
use crate::nginx::process::Nginx;
use crate::nginx::push::{digest, PolicyClient, PushError};
use crate::nginx::render::HttpListener;
use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct StandaloneArgs {
    /// Folder of manifests (*.yaml, *.yml, *.json): Frontend, Rule, Service, EndpointSlice.
    #[arg(long, env = "ALB_MANIFESTS")]
    pub manifests: PathBuf,
    /// Only read Frontends/Rules labelled `alb2.<domain>/name=<NAME>` (default: all of them).
    #[arg(long, env = "NAME")]
    pub alb_name: Option<String>,
    /// Label base domain.
    #[arg(long, env = "DOMAIN", default_value = "cpaas.io")]
    pub domain: String,
    #[command(flatten)]
    pub nginx: NginxArgs,
}

/// Compiles the folder; logs problems and rejects not logged by the previous build (`seen`). The policy's
/// generation is left at 0 so that two compilations of the same objects give the same bytes.
fn build(dir: &mut ManifestDir, opts: &CompileOptions, seen: &mut BTreeSet<String>) -> Result<Compiled> {
    let mut now = BTreeSet::new();
    for p in dir.reload()? {
        tracing::error!("manifest rejected: {p}");
    }
    let (snap, problems) = dir.snapshot();
    for p in problems {
        let line = p.to_string();
        if !seen.contains(&line) {
            tracing::warn!("{line}");
        }
        now.insert(line);
    }
    let compiled = compile(&snap, opts);
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

fn listeners(c: &Compiled) -> Vec<HttpListener> {
    c.listeners.iter().map(|l| HttpListener { name: l.name.clone(), port: l.port }).collect()
}

struct Pusher {
    client: PolicyClient,
    generation: u64,
    /// Digest of the policy content (generation 0) last applied by every worker, and the bytes pushed.
    applied: Option<(String, String)>,
}

impl Pusher {
    /// Pushes `c.policy` if its content changed (or `force`), waits for every worker, logs the outcome.
    async fn push(&mut self, c: &Compiled, force: bool) -> Result<()> {
        let content = digest(&c.policy.to_bytes());
        if !force && self.applied.as_ref().map(|(d, _)| d == &content).unwrap_or(false) {
            tracing::debug!("policy unchanged");
            return Ok(());
        }
        self.generation += 1;
        let mut policy = c.policy.clone();
        policy.generation = self.generation;
        let started = Instant::now();
        let sent = match self.client.put(policy.to_bytes()).await {
            Ok(d) => d,
            Err(PushError::Refused(msg)) => {
                // The data plane keeps the previous policy; this is a compiler bug, say so loudly.
                tracing::error!("data plane refused policy generation {}: {msg}", self.generation);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let workers = self.client.wait_applied(&sent, Duration::from_secs(10)).await?;
        tracing::info!(
            "policy v{} applied by {workers} workers in {} ms ({} rules, {} rejected, digest {})",
            self.generation,
            started.elapsed().as_millis(),
            policy.rule_count(),
            c.rejects.len(),
            &sent[..12]
        );
        self.applied = Some((content, sent));
        Ok(())
    }
}

pub async fn run(args: StandaloneArgs) -> Result<()> {
    let opts = CompileOptions { alb_name: args.alb_name.clone(), domain: args.domain.clone(), generation: 0 };
    let mut dir = ManifestDir::new(&args.manifests);
    let mut seen = BTreeSet::new();
    let mut compiled =
        build(&mut dir, &opts, &mut seen).with_context(|| format!("reading {}", args.manifests.display()))?;
    let (bin, input, token) = args.nginx.prepare(listeners(&compiled))?;
    let mut pusher = Pusher { client: PolicyClient::new(input.api_port, token), generation: 0, applied: None };
    let mut nginx = Nginx::new(bin, input);
    nginx.start()?;
    pusher.client.wait_ready(Duration::from_secs(10)).await?;
    for l in &nginx.input().http_listeners {
        tracing::info!("listening on {}:{} (frontend {})", nginx.input().bind_address, l.port, l.name);
    }
    pusher.push(&compiled, true).await?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // Our own reads show up as Access events: only changes count.
        if ev.map(|e| !matches!(e.kind, notify::EventKind::Access(_))).unwrap_or(true) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&args.manifests, RecursiveMode::NonRecursive)?;
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
                compiled = build(&mut dir, &opts, &mut seen)?;
                let mut input = nginx.input().clone();
                input.http_listeners = listeners(&compiled);
                let reloaded = match nginx.apply(input) {
                    Ok(r) => r,
                    Err(e) => { tracing::error!("listeners not applied, keeping the running ones: {e:#}"); false }
                };
                if let Err(e) = pusher.push(&compiled, reloaded).await {
                    tracing::error!("push failed: {e:#}");
                }
            }
            _ = health.tick() => {
                if let Some(status) = nginx.exited() {
                    tracing::error!("nginx exited ({status}); restarting it");
                    nginx.start()?;
                    pusher.client.wait_ready(Duration::from_secs(10)).await?;
                    pusher.push(&compiled, true).await?;
                    continue;
                }
                // A restarted nginx has lost its shared dict: re-push what we had.
                if let (Ok(s), Some((_, sent))) = (pusher.client.status().await, pusher.applied.as_ref()) {
                    if s.stored.as_ref().map(|st| &st.digest) != Some(sent) {
                        tracing::warn!("data plane does not hold our policy any more; pushing it again");
                        pusher.push(&compiled, true).await?;
                    }
                }
            }
        }
    }
    tracing::info!("shutting down");
    nginx.stop();
    Ok(())
}
