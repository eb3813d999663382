//! Pushing the policy to the Lua policy API (docs/policy.md "Policy API") and waiting for every worker.

use crate::compile::Compiled;
use crate::policy::delta::PolicyDelta;
use crate::policy::Policy;
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
    /// `409` to a delta: the data plane does not hold its base (or its chain is full); send the policy whole.
    #[error("the data plane wants the whole policy: {0}")]
    Conflict(String),
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
        self.send(reqwest::Method::PUT, body, &want).await?;
        Ok(want)
    }

    /// PATCH a delta (docs/policy.md "Policy deltas") whose result has digest `want`.
    pub async fn patch(&self, body: Vec<u8>, want: &str) -> Result<(), PushError> {
        self.send(reqwest::Method::PATCH, body, want).await
    }

    async fn send(&self, method: reqwest::Method, body: Vec<u8>, want: &str) -> Result<(), PushError> {
        let r = self
            .http
            .request(method.clone(), format!("{}/policy", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| PushError::Unreachable(e.to_string()))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        match status.as_u16() {
            400 => return Err(PushError::Refused(text)),
            409 => return Err(PushError::Conflict(text)),
            _ if !status.is_success() => {
                return Err(PushError::Other(format!("{method} /policy answered {status}: {text}")))
            }
            _ => {}
        }
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| PushError::Other(format!("bad {method} answer {text:?}: {e}")))?;
        let got = v.get("digest").and_then(|d| d.as_str()).unwrap_or_default();
        if got != want {
            return Err(PushError::Other(format!("data plane stored digest {got}, expected {want}")));
        }
        Ok(())
    }

    async fn get(&self, path: &str) -> Result<Option<reqwest::Response>, PushError> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| PushError::Unreachable(e.to_string()))?;
        if r.status().as_u16() == 404 {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(PushError::Other(format!("GET {path} answered {}", r.status())));
        }
        Ok(Some(r))
    }

    /// The stored policy: the last one stored whole, with the deltas stored after it applied (in Rust, checked
    /// against the digest of the last delta); `None` when nothing is stored.
    pub async fn policy(&self) -> Result<Option<Vec<u8>>, PushError> {
        let Some(r) = self.get("/policy").await? else { return Ok(None) };
        let deltas = r.headers().get("x-alb-policy-deltas").is_some();
        let body = r.bytes().await.map_err(|e| PushError::Unreachable(e.to_string()))?.to_vec();
        if !deltas {
            return Ok(Some(body));
        }
        let Some(r) = self.get("/policy/deltas").await? else { return Ok(None) };
        let chain: DeltaChain =
            r.json().await.map_err(|e| PushError::Other(format!("bad GET /policy/deltas answer: {e}")))?;
        let mut policy: Policy = serde_json::from_slice(&body)
            .map_err(|e| PushError::Other(format!("the stored policy does not parse: {e}")))?;
        if digest(&body) != chain.base {
            return Err(PushError::Other("the stored policy was replaced while it was read".into()));
        }
        for d in &chain.deltas {
            policy = d.apply(&policy).map_err(|e| PushError::Other(format!("a stored delta does not apply: {e}")))?;
            let bytes = policy.to_bytes();
            if digest(&bytes) != d.digest {
                return Err(PushError::Other(format!(
                    "a stored delta gives digest {}, not the {} it names",
                    digest(&bytes),
                    d.digest
                )));
            }
        }
        Ok(Some(policy.to_bytes()))
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

#[derive(Deserialize)]
struct DeltaChain {
    base: String,
    deltas: Vec<PolicyDelta>,
}

/// `policy` serialised with generation 0 (what decides "unchanged").
fn without_generation(policy: &Policy) -> Vec<u8> {
    if policy.generation == 0 {
        return policy.to_bytes();
    }
    let mut p = policy.clone();
    p.generation = 0;
    p.to_bytes()
}

/// The bytes of `policy` with `generation`, made from its generation-0 bytes without serialising (or cloning)
/// the policy again: `version` and `generation` are its first two fields, so only that prefix differs. The
/// prefix is replaced in place (`to_bytes` leaves room to spare): at 10,000 rules a copy was 5.6 MB more at the
/// controller's peak. Falls back to serialising when the prefix is not the expected one.
fn with_generation(policy: &Policy, mut unnumbered: Vec<u8>, generation: u64) -> Vec<u8> {
    let prefix = format!("{{\"version\":{},\"generation\":0", policy.version);
    match unnumbered.strip_prefix(prefix.as_bytes()) {
        Some(rest) if rest.first() == Some(&b',') || rest.first() == Some(&b'}') => {
            let head = format!("{{\"version\":{},\"generation\":{generation}", policy.version);
            unnumbered.splice(..prefix.len(), head.bytes());
            unnumbered
        }
        _ => {
            let mut p = policy.clone();
            p.generation = generation;
            p.to_bytes()
        }
    }
}

/// What a push decides by, computed while serialising the policy into two hashers rather than into a buffer (at
/// 10,000 rules the bytes are ~5.6 MB, and most pushes send a delta): the digest of its bytes with generation 0
/// (its content), the digest of its bytes with `generation` (what the workers will ack), and their length.
#[derive(Debug, PartialEq)]
struct Digests {
    content: String,
    /// `None` when the bytes do not start as [`with_generation`] expects (never with our serialiser).
    numbered: Option<String>,
    len: usize,
}

impl Digests {
    fn of(policy: &Policy, generation: u64) -> Digests {
        if policy.generation != 0 {
            let bytes = without_generation(policy);
            let numbered = digest(&with_generation(policy, bytes.clone(), generation));
            return Digests { content: digest(&bytes), numbered: Some(numbered), len: bytes.len() };
        }
        let prefix = format!("{{\"version\":{},\"generation\":0,", policy.version).into_bytes();
        let head = format!("{{\"version\":{},\"generation\":{generation},", policy.version).into_bytes();
        let mut w = TwoHashes { content: Sha1::new(), numbered: Sha1::new(), prefix, head, seen: Vec::new(), len: 0 };
        // Serialising plain data structures into a hasher cannot fail.
        let _ = serde_json::to_writer(&mut w, policy);
        let numbered = (w.seen == w.prefix).then(|| hex::encode(w.numbered.finalize()));
        Digests { content: hex::encode(w.content.finalize()), numbered, len: w.len }
    }
}

/// Hashes what is written, and into `numbered` the same with its leading `prefix` replaced by `head`.
struct TwoHashes {
    content: Sha1,
    numbered: Sha1,
    prefix: Vec<u8>,
    head: Vec<u8>,
    /// The first bytes written, up to the length of `prefix`.
    seen: Vec<u8>,
    len: usize,
}

impl std::io::Write for TwoHashes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.content.update(buf);
        self.len += buf.len();
        let mut rest = buf;
        if self.seen.len() < self.prefix.len() {
            let take = (self.prefix.len() - self.seen.len()).min(rest.len());
            self.seen.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.seen.len() == self.prefix.len() {
                match self.seen == self.prefix {
                    true => self.numbered.update(&self.head),
                    false => self.numbered.update(&self.seen),
                }
            }
        }
        self.numbered.update(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The policy last applied by every worker.
#[derive(Debug, Clone)]
struct Applied {
    /// Digest of the policy content (generation 0): what decides "unchanged".
    content: String,
    /// Digest of the bytes pushed (with their generation): what `/status` reports.
    sent: String,
    /// The policy those bytes hold (its `generation` field may be another: deltas carry their own): the base
    /// of the next delta, shared with the compiled result.
    policy: std::sync::Arc<Policy>,
}

/// Pushes compiled policies to one data plane (shared by `alb standalone` and `alb controller`): numbers the
/// generations, skips a policy whose content is unchanged, waits for every worker, logs the outcome, and
/// pushes again when the data plane lost the policy (nginx restarted with an empty shared dict).
pub struct Pusher {
    pub client: PolicyClient,
    generation: u64,
    applied: Option<Applied>,
    /// What a running data plane already held when we started: (content digest, generation).
    adopted: Option<(String, u64)>,
    /// Push latency, failures and worker acks go here when set.
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl Pusher {
    pub fn new(client: PolicyClient) -> Pusher {
        Pusher { client, generation: 0, applied: None, adopted: None, metrics: None }
    }

    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Pusher {
        self.metrics = Some(metrics);
        self
    }

    fn failed(&self) {
        if let Some(m) = &self.metrics {
            m.push_failed();
        }
    }

    /// Reads the policy a running data plane holds (a restarted controller): the generation counter goes on
    /// from it, and the same content is pushed again with the same generation, hence the same digest.
    pub async fn adopt(&mut self) -> Result<()> {
        let body = match self.client.policy().await {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(()),
            Err(PushError::Other(msg)) => {
                tracing::warn!("cannot read the policy the data plane holds ({msg}); replacing it");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let Ok(mut stored) = serde_json::from_slice::<Policy>(&body) else {
            tracing::warn!("the data plane holds a policy we cannot read; replacing it");
            return Ok(());
        };
        let generation = stored.generation;
        stored.generation = 0;
        self.generation = self.generation.max(generation);
        self.adopted = Some((digest(&stored.to_bytes()), generation));
        tracing::info!("the data plane already holds policy v{generation}; continuing from it");
        Ok(())
    }

    /// Digest of the bytes last applied by every worker.
    pub fn sent(&self) -> Option<&str> {
        self.applied.as_ref().map(|a| a.sent.as_str())
    }

    /// Pushes `c.policy` if its content changed (or `force`), waits for every worker, logs the outcome.
    /// Returns whether every worker now holds `c.policy` (false: refused by the data plane).
    pub async fn push(&mut self, c: &Compiled, force: bool) -> Result<bool> {
        let policy = &c.policy;
        let next = self.generation + 1;
        let sums = Digests::of(policy, next);
        let content = sums.content;
        if !force && self.applied.as_ref().map(|a| a.content == content).unwrap_or(false) {
            tracing::debug!("policy unchanged");
            return Ok(true);
        }
        let generation = match self.adopted.take() {
            Some((adopted, g)) if adopted == content => g,
            _ => {
                self.generation = next;
                next
            }
        };
        let started = Instant::now();
        // The whole policy's bytes are made only when they are sent (or, rarely, to digest them).
        let whole = || with_generation(policy, without_generation(policy), generation);
        let want = match sums.numbered {
            Some(d) if generation == next => d,
            _ => digest(&whole()),
        };
        if let Some(m) = &self.metrics {
            m.policy_size(sums.len);
        }
        let mut delta_bytes = None;
        if let Some(last) = &self.applied {
            if let Some(mut d) = PolicyDelta::between(&last.policy, policy, &last.sent, &want) {
                d.generation = generation;
                let body = serde_json::to_vec(&d).unwrap_or_default();
                // a delta when it is smaller than the policy (docs/policy.md "Policy deltas")
                if !body.is_empty() && body.len() < sums.len {
                    let n = body.len();
                    match self.client.patch(body, &want).await {
                        Ok(()) => delta_bytes = Some(n),
                        Err(PushError::Conflict(msg)) => {
                            tracing::info!("data plane asked for the whole policy: {msg}");
                        }
                        Err(PushError::Refused(msg)) => {
                            // Not expected (the whole policy would be refused too): say so, then try it whole.
                            tracing::error!("data plane refused the delta to generation {generation}: {msg}");
                        }
                        Err(e) => {
                            self.failed();
                            return Err(e.into());
                        }
                    }
                }
            }
        }
        let sent = match delta_bytes {
            Some(_) => want,
            None => match self.client.put(whole()).await {
                Ok(d) => d,
                Err(PushError::Refused(msg)) => {
                    // The data plane keeps the previous policy; this is a compiler bug, say so loudly.
                    tracing::error!("data plane refused policy generation {generation}: {msg}");
                    self.failed();
                    return Ok(false);
                }
                Err(e) => {
                    self.failed();
                    return Err(e.into());
                }
            },
        };
        let workers = self.client.wait_applied(&sent, Duration::from_secs(10)).await.inspect_err(|_| self.failed())?;
        if let Some(m) = &self.metrics {
            m.pushed(started.elapsed(), workers);
        }
        tracing::info!(
            "policy v{generation} applied by {workers} workers in {} ms ({} rules, {} rejected, digest {}, {})",
            started.elapsed().as_millis(),
            policy.rule_count(),
            c.rejects.len(),
            &sent[..12],
            match delta_bytes {
                Some(n) => format!("delta of {n} bytes"),
                None => "whole".to_string(),
            }
        );
        self.applied = Some(Applied { content, sent, policy: c.policy.clone() });
        Ok(true)
    }

    /// Pushes `c` again when the data plane does not hold what we last applied (nginx restarted).
    /// Returns whether it pushed.
    pub async fn repair(&mut self, c: &Compiled) -> Result<bool> {
        let Some(sent) = self.sent().map(str::to_string) else { return Ok(false) };
        let Ok(s) = self.client.status().await else { return Ok(false) };
        if let Some(m) = &self.metrics {
            m.acks(s.applied(&sent), s.worker_count);
        }
        if s.stored.as_ref().map(|st| &st.digest) == Some(&sent) {
            return Ok(false);
        }
        tracing::warn!("data plane does not hold our policy any more; pushing it again");
        self.push(c, true).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_spliced_into_the_unnumbered_bytes_equals_serialising_it() {
        let mut p: Policy =
            serde_json::from_str(include_str!("../../e2e/fixtures/policy/features.json")).expect("fixture");
        assert!(p.rule_count() > 0);
        let unnumbered = without_generation(&p);
        assert!(p.generation != 0, "the fixture carries a generation");
        assert!(unnumbered == Policy { generation: 0, ..p.clone() }.to_bytes());
        for g in [0u64, 1, 7, 12345678901] {
            let spliced = with_generation(&p, unnumbered.clone(), g);
            p.generation = g;
            assert_eq!(String::from_utf8(spliced).unwrap(), String::from_utf8(p.to_bytes()).unwrap());
            assert_eq!(without_generation(&p), unnumbered, "the content digest ignores the generation");
        }
        // an empty policy, and bytes that do not start as expected (falls back to serialising)
        let e = Policy::default();
        assert_eq!(
            with_generation(&e, without_generation(&e), 3),
            Policy { generation: 3, ..Policy::default() }.to_bytes()
        );
        assert_eq!(with_generation(&p, b"{}".to_vec(), 9), Policy { generation: 9, ..p.clone() }.to_bytes());
    }

    /// The digests a push decides by, hashed while serialising, are those of the bytes it would have made.
    #[test]
    fn digests_while_serialising_equal_digests_of_the_bytes() {
        let fixture: Policy =
            serde_json::from_str(include_str!("../../e2e/fixtures/policy/features.json")).expect("fixture");
        let unnumbered = Policy { generation: 0, ..fixture.clone() };
        for p in [unnumbered, fixture, Policy::default()] {
            for g in [1u64, 10, 12345678901] {
                let bytes = without_generation(&p);
                let want = Digests {
                    content: digest(&bytes),
                    numbered: Some(digest(&with_generation(&p, bytes.clone(), g))),
                    len: bytes.len(),
                };
                assert_eq!(Digests::of(&p, g), want, "generation {} -> {g}", p.generation);
            }
        }
        // serialised in pieces of every size, the prefix is still recognised
        let p = Policy {
            generation: 0,
            ..serde_json::from_str(include_str!("../../e2e/fixtures/policy/basic.json")).expect("fixture")
        };
        let bytes = p.to_bytes();
        for piece in [1, 2, 5, 27, 28, 29, 4096] {
            let prefix = format!("{{\"version\":{},\"generation\":0,", p.version).into_bytes();
            let head = b"{\"version\":1,\"generation\":42,".to_vec();
            let mut w =
                TwoHashes { content: Sha1::new(), numbered: Sha1::new(), prefix, head, seen: Vec::new(), len: 0 };
            for chunk in bytes.chunks(piece) {
                std::io::Write::write_all(&mut w, chunk).unwrap();
            }
            assert_eq!(hex::encode(w.numbered.finalize()), digest(&with_generation(&p, bytes.clone(), 42)), "{piece}");
        }
        // bytes that do not start with the prefix: no numbered digest (the push then makes the bytes)
        let mut w = TwoHashes {
            content: Sha1::new(),
            numbered: Sha1::new(),
            prefix: b"{\"x".to_vec(),
            head: Vec::new(),
            seen: Vec::new(),
            len: 0,
        };
        std::io::Write::write_all(&mut w, b"{\"y\":1}").unwrap();
        assert!(w.seen != w.prefix);
    }
}
