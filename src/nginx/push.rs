//! Pushing the policy to the Lua policy API (docs/policy.md "Policy API") and waiting for every worker.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha1::{Digest, Sha1};
use std::time::{Duration, Instant};

/// Fields mirror the `/status` answer; not all are read by every caller.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
pub struct Stored {
    pub digest: String,
    pub version: u64,
    #[serde(default)]
    pub generation: u64,
}

#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerAck {
    pub id: i64,
    pub pid: i64,
    pub digest: String,
    pub version: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub stored: Option<Stored>,
    pub worker_count: usize,
    #[serde(default)]
    pub workers: Vec<WorkerAck>,
}

impl Status {
    /// Workers that applied `digest` (each worker id counted once).
    pub fn applied(&self, digest: &str) -> usize {
        let mut ids: Vec<i64> = self.workers.iter().filter(|w| w.digest == digest).map(|w| w.id).collect();
        ids.sort();
        ids.dedup();
        ids.len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the data plane refused the policy: {0}")]
    Refused(String),
    #[error("the data plane is not reachable: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Other(String),
}

pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

#[derive(Clone)]
pub struct PolicyClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl PolicyClient {
    pub fn new(api_port: u16, token: String) -> PolicyClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        PolicyClient { base: format!("http://127.0.0.1:{api_port}"), token, http }
    }

    pub async fn status(&self) -> Result<Status, PushError> {
        let r = self
            .http
            .get(format!("{}/status", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| PushError::Unreachable(e.to_string()))?;
        if !r.status().is_success() {
            return Err(PushError::Other(format!("GET /status answered {}", r.status())));
        }
        r.json::<Status>().await.map_err(|e| PushError::Other(format!("bad /status answer: {e}")))
    }

    /// PUT the policy; returns the digest the data plane stored.
    pub async fn put(&self, body: Vec<u8>) -> Result<String, PushError> {
        let want = digest(&body);
        let r = self
            .http
            .put(format!("{}/policy", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| PushError::Unreachable(e.to_string()))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if status.as_u16() == 400 {
            return Err(PushError::Refused(text));
        }
        if !status.is_success() {
            return Err(PushError::Other(format!("PUT /policy answered {status}: {text}")));
        }
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| PushError::Other(format!("bad PUT answer {text:?}: {e}")))?;
        let got = v.get("digest").and_then(|d| d.as_str()).unwrap_or_default();
        if got != want {
            return Err(PushError::Other(format!("data plane stored digest {got}, expected {want}")));
        }
        Ok(want)
    }

    /// Waits until every worker applied `digest`. Returns the number of workers.
    pub async fn wait_applied(&self, digest: &str, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = self.status().await {
                let n = s.applied(digest);
                if s.worker_count > 0 && n >= s.worker_count {
                    return Ok(n);
                }
            }
            if Instant::now() > deadline {
                let s = self.status().await.context("reading /status")?;
                bail!(
                    "only {} of {} nginx workers applied policy {digest} within {timeout:?}",
                    s.applied(digest),
                    s.worker_count
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the policy API answers at all.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Status> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.status().await {
                Ok(s) => return Ok(s),
                Err(e) if Instant::now() > deadline => bail!("policy API did not come up within {timeout:?}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}
