//! Every replica: store change → debounce → snapshot → compile → listeners (reload only when they change) →
//! push (skipped when the policy content is unchanged). Also keeps the data plane holding our policy: a
//! spawned nginx that died is restarted, and a data plane that lost the policy gets it again.

use super::dataplane::Dataplane;
use super::stores::Stores;
use super::ControllerArgs;
use crate::compile::cache::CompileCache;
use crate::compile::{CompileOptions, Compiled};
use crate::metrics::{Metrics, Reload};
use crate::nginx::push::{PolicyClient, Pusher};
use crate::nginx::render::{HttpListener, StreamListener};
use anyhow::Result;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the data plane is checked (nginx alive, policy still held).
const HEALTH_PERIOD: Duration = Duration::from_millis(500);

/// A compiled policy and the Frontend/Rule objects it was compiled from (for their statuses).
pub struct Published {
    pub compiled: Compiled,
    pub frontends: Vec<Arc<crate::crd::Frontend>>,
    /// Held weakly: the status writes replace every Rule in the store, and holding the compiled objects here
    /// kept two of each alive until the next compilation (at 10,000 Rules ~35 MB). A Rule that is gone was
    /// replaced: by its status write, or by an edit that is compiled again.
    pub rules: Vec<std::sync::Weak<crate::crd::Rule>>,
}

pub struct RenderLoop {
    args: ControllerArgs,
    stores: Arc<Stores>,
    changes: watch::Receiver<u64>,
    published: watch::Sender<Option<Arc<Published>>>,
    ready: Arc<AtomicBool>,
    opts: CompileOptions,
    /// Reject lines logged by the previous compilation (each is logged once, when it appears).
    seen: BTreeSet<String>,
    metrics: Arc<Metrics>,
    /// What the compilation of an unchanged Rule takes from the one before (src/compile/cache.rs).
    cache: CompileCache,
}

fn listeners(c: &Compiled) -> (Vec<HttpListener>, Vec<StreamListener>) {
    crate::nginx::listeners_of(c)
}

impl RenderLoop {
    pub fn new(
        args: &ControllerArgs,
        stores: Arc<Stores>,
        changes: watch::Receiver<u64>,
        published: watch::Sender<Option<Arc<Published>>>,
        ready: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> Result<RenderLoop> {
        let opts = CompileOptions { alb_name: Some(args.alb_name.clone()), domain: args.domain.clone(), generation: 0 };
        Ok(RenderLoop {
            args: args.clone(),
            stores,
            changes,
            published,
            ready,
            opts,
            seen: BTreeSet::new(),
            metrics,
            // The stores hold the objects; the cache only reserves their addresses (src/compile/cache.rs).
            cache: CompileCache::weak(),
        })
    }

    fn build(&mut self) -> Compiled {
        let mut snapshot = self.stores.snapshot();
        snapshot.tls_fallback = self
            .stores
            .alb()
            .and_then(|alb| crate::compile::certs::TlsFallback::of(&super::ingress_sync::alb_config(&self.args, &alb)));
        self.stores.count_into(&self.metrics);
        let prev = self.published.borrow().as_ref().map(|p| p.compiled.policy.clone());
        let compiled = self.metrics.compile(&snapshot, &self.opts, prev.as_deref(), &mut self.cache);
        tracing::debug!(rules = snapshot.rules.len(), taken = ?self.cache.last_hits, "compiled");
        let mut now = BTreeSet::new();
        for r in &compiled.rejects {
            let line = format!("rejected {r}");
            if !self.seen.contains(&line) {
                tracing::warn!("{line}");
            }
            now.insert(line);
        }
        self.seen = now;
        let rules = snapshot.rules.iter().map(Arc::downgrade).collect();
        let published = Published { compiled: compiled.clone(), frontends: snapshot.frontends, rules };
        self.published.send_replace(Some(Arc::new(published)));
        compiled
    }

    /// [`Self::build`] without holding up the other tasks of this runtime thread (watches, the admin
    /// endpoint, the Ingress sync): with 10,000 Rules a compile takes a few hundred ms of CPU.
    fn build_blocking(&mut self) -> Compiled {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(|| self.build())
        } else {
            self.build()
        }
    }

    /// Returns false when the push should be retried (data plane unreachable or not all workers applied).
    async fn push(&self, pusher: &mut Pusher, compiled: &Compiled, force: bool) -> bool {
        match pusher.push(compiled, force).await {
            Ok(true) => {
                self.ready.store(true, Ordering::Relaxed);
                true
            }
            // Refused: retrying the same policy cannot help; the next change will be pushed.
            Ok(false) => true,
            Err(e) => {
                tracing::error!("push failed (the data plane keeps its previous policy; retrying): {e:#}");
                false
            }
        }
    }

    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        tokio::select! {
            _ = self.stores.wait_policy_inputs() => {}
            _ = stop.changed() => return Ok(()),
        }
        self.changes.borrow_and_update();
        self.stores.sync_auth_secret_watches().await;
        let mut compiled = self.build_blocking();
        let (mut dataplane, token) = Dataplane::start(&self.args.nginx, self.args.spawn_nginx, listeners(&compiled))?;
        let mut pusher =
            Pusher::new(PolicyClient::new(self.args.nginx.api_port, token)).with_metrics(self.metrics.clone());
        // A sidecar may still be starting: wait for its policy API as long as it takes.
        loop {
            match pusher.client.wait_ready(Duration::from_secs(10)).await {
                Ok(_) => break,
                Err(e) if self.args.spawn_nginx => return Err(e),
                Err(e) => tracing::warn!("waiting for the nginx sidecar: {e:#}"),
            }
            if *stop.borrow() {
                return Ok(());
            }
        }
        for l in &dataplane.input().http_listeners {
            tracing::info!("listening on {}:{} (frontend {})", dataplane.input().bind_address, l.port, l.name);
        }
        // A restarted controller continues from what the running data plane holds (same digest, no gap).
        if let Err(e) = pusher.adopt().await {
            tracing::warn!("cannot read the data plane's current policy: {e:#}");
        }
        let mut pushed = self.push(&mut pusher, &compiled, false).await;
        // Store events closer than the debounce are compiled once (super::stores::debounce_after).
        let mut last = std::time::Instant::now();

        let mut health = tokio::time::interval(HEALTH_PERIOD);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    tokio::time::sleep(super::stores::debounce_after(last)).await;
                    self.changes.borrow_and_update();
                    self.stores.sync_auth_secret_watches().await;
                    compiled = self.build_blocking();
                    let before: BTreeSet<u16> = dataplane.input().http_listeners.iter().map(|l| l.port).collect();
                    let reloaded = match dataplane.set_listeners(listeners(&compiled)) {
                        Ok(r) => {
                            let input = dataplane.input();
                            for l in input.http_listeners.iter().filter(|l| !before.contains(&l.port)) {
                                tracing::info!("listening on {}:{} (frontend {})", input.bind_address, l.port, l.name);
                            }
                            r
                        }
                        Err(e) => {
                            tracing::error!("listeners not applied, keeping the running ones: {e:#}");
                            false
                        }
                    };
                    if reloaded {
                        self.metrics.reloaded(Reload::ListenersChanged);
                    }
                    pushed = self.push(&mut pusher, &compiled, reloaded).await;
                    last = std::time::Instant::now();
                }
                _ = health.tick() => {
                    // A certificate became valid or expired: compile again (listener changes come as changes).
                    if compiled.certificates_change_at.is_some_and(|t| crate::compile::certs::now_unix() >= t) {
                        compiled = self.build_blocking();
                        pushed = self.push(&mut pusher, &compiled, false).await;
                        continue;
                    }
                    match dataplane.restart_if_exited() {
                        Ok(true) => {
                            self.metrics.reloaded(Reload::Restart);
                            if let Err(e) = pusher.client.wait_ready(Duration::from_secs(10)).await {
                                tracing::error!("restarted nginx does not answer: {e:#}");
                                continue;
                            }
                            pushed = self.push(&mut pusher, &compiled, true).await;
                            continue;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!("cannot restart nginx: {e:#}");
                            continue;
                        }
                    }
                    if !pushed {
                        pushed = self.push(&mut pusher, &compiled, false).await;
                        continue;
                    }
                    // A restarted nginx has lost its shared dict: push what we had again.
                    if let Err(e) = pusher.repair(&compiled).await {
                        tracing::error!("re-push failed: {e:#}");
                    }
                }
            }
        }
        // The policy client first: its pool may hold a connection that never carried a request (opened while
        // another one was busy), which nginx's graceful stop waits for until its header timeout.
        drop(pusher);
        dataplane.stop();
        Ok(())
    }
}
