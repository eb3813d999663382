//! Leader election on a `coordination.k8s.io/v1` Lease `<albns>/<alb>`, identity `<albns>/<alb>/<pod>`
//! (controlplane.md §6), with get/create/replace and the Lease's resourceVersion for optimistic concurrency.
//!
//! Like client-go, expiry is judged on our own clock: a Lease held by another identity is taken over only
//! when its record (holder, renewTime) has not changed for `lease_duration` since *we* observed it, so clock
//! skew between replicas does not matter. The leader renews every `retry_period` and gives up when it could
//! not renew for `renew_deadline`. Losing the Lease stops the leader work; the process keeps serving.
//! On shutdown a leader releases the Lease (empty holder) so another replica takes over at once.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("Lease {0}: {1}")]
    Api(String, kube::Error),
}

/// What we last saw of the Lease record and when (our clock).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    holder: String,
    renew: Option<MicroTime>,
    at: Instant,
}

/// Pure decision: may `me` write itself as holder of a Lease whose holder is `holder`, observed unchanged
/// since `observed_at`?
fn may_take(me: &str, holder: &str, observed_at: Instant, duration: Duration, now: Instant) -> bool {
    holder.is_empty() || holder == me || now.duration_since(observed_at) >= duration
}

struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    observed: Option<Observed>,
}

impl Elector {
    fn secs(&self) -> i32 {
        self.cfg.lease_duration.as_secs().clamp(1, i32::MAX as u64) as i32
    }

    /// One attempt: true when we hold the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let err = |e| LeaderError::Api(format!("{}/{}", self.cfg.namespace, self.cfg.name), e);
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await.map_err(err)? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(self.secs()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(err(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record_changed =
            self.observed.as_ref().map(|o| o.holder != holder || o.renew != spec.renew_time).unwrap_or(true);
        if record_changed {
            self.observed =
                Some(Observed { holder: holder.clone(), renew: spec.renew_time.clone(), at: Instant::now() });
        }
        let observed_at = self.observed.as_ref().map(|o| o.at).unwrap_or_else(Instant::now);
        let their_duration = spec
            .lease_duration_seconds
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64))
            .unwrap_or(self.cfg.lease_duration);
        if !may_take(&self.cfg.identity, &holder, observed_at, their_duration, Instant::now()) {
            return Ok(false);
        }
        let taking_over = holder != self.cfg.identity;
        let mut new = spec;
        if taking_over {
            new.acquire_time = Some(now.clone());
            new.lease_transitions = Some(new.lease_transitions.unwrap_or(0) + i32::from(!holder.is_empty()));
        }
        new.holder_identity = Some(self.cfg.identity.clone());
        new.renew_time = Some(now);
        new.lease_duration_seconds = Some(self.secs());
        lease.spec = Some(new);
        // metadata.resourceVersion is kept: a concurrent writer makes this fail with 409.
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(l) => {
                let spec = l.spec.unwrap_or_default();
                self.observed =
                    Some(Observed { holder: self.cfg.identity.clone(), renew: spec.renew_time, at: Instant::now() });
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// Empties the holder so that another replica does not wait for the Lease to expire.
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!("released the leader Lease"),
            Err(e) => tracing::warn!("could not release the leader Lease: {e}"),
        }
    }
}

/// Sleeps `d` unless `stop` turns true first; returns whether we must stop.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        r = stop.changed() => r.is_err() || *stop.borrow(),
    }
}

/// Runs the election until `stop`; `leader` tells whether we hold the Lease.
pub async fn run(client: Client, cfg: LeaseConfig, leader: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
    let mut el = Elector { api: Api::namespaced(client, &cfg.namespace), cfg: cfg.clone(), observed: None };
    let mut last_renew: Option<Instant> = None;
    let mut reported: Option<String> = None;
    loop {
        let attempt = tokio::time::timeout(cfg.renew_deadline, el.try_acquire_or_renew()).await;
        let held = match attempt {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                tracing::warn!("leader election: {e}");
                false
            }
            Err(_) => {
                tracing::warn!("leader election: no answer within {:?}", cfg.renew_deadline);
                false
            }
        };
        let is_leader = *leader.borrow();
        if held {
            last_renew = Some(Instant::now());
            if !is_leader {
                tracing::info!("became leader (Lease {}/{}, identity {})", cfg.namespace, cfg.name, cfg.identity);
                leader.send_replace(true);
            }
        } else if is_leader {
            // Someone else holds it now, or we could not renew within the deadline.
            let lost = el.observed.as_ref().map(|o| o.holder != cfg.identity).unwrap_or(false)
                || last_renew.map(|t| t.elapsed() >= cfg.renew_deadline).unwrap_or(true);
            if lost {
                tracing::warn!("lost leadership (Lease {}/{}); leader work stopped", cfg.namespace, cfg.name);
                leader.send_replace(false);
            }
        } else if let Some(o) = &el.observed {
            if reported.as_ref() != Some(&o.holder) {
                tracing::info!("leader is {:?}", o.holder);
                reported = Some(o.holder.clone());
            }
        }
        if sleep_or_stop(cfg.retry_period, &mut stop).await {
            break;
        }
    }
    if *leader.borrow() {
        leader.send_replace(false);
        el.release().await;
    }
}

/// Runs `work()` while we are the leader, aborts it when we are not.
pub async fn supervise<F, Fut>(mut leader: watch::Receiver<bool>, work: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut task: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let is_leader = *leader.borrow_and_update();
        match (is_leader, task.is_some()) {
            (true, false) => task = Some(tokio::spawn(work())),
            (false, true) => {
                if let Some(t) = task.take() {
                    t.abort();
                }
            }
            _ => {}
        }
        if leader.changed().await.is_err() {
            break;
        }
    }
    if let Some(t) = task.take() {
        t.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_free_own_or_expired_leases() {
        let t0 = Instant::now();
        let d = Duration::from_secs(4);
        assert!(may_take("me", "", t0, d, t0));
        assert!(may_take("me", "me", t0, d, t0));
        assert!(!may_take("me", "other", t0, d, t0 + Duration::from_secs(3)));
        assert!(may_take("me", "other", t0, d, t0 + Duration::from_secs(4)));
    }
}
