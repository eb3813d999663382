//! Admin HTTP server for probes: `/healthz` (200 while the process runs) and `/readyz` (200 once the first
//! policy was applied by every nginx worker).

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(ready): State<Arc<AtomicBool>>) -> (StatusCode, &'static str) {
    if ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no policy applied yet")
    }
}

pub fn router(ready: Arc<AtomicBool>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(ready)
}

/// Binds `0.0.0.0:<port>` (an error when taken) and serves in the background.
pub async fn spawn(port: u16, ready: Arc<AtomicBool>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("admin server: cannot listen on port {port}"))?;
    tracing::info!("admin server on {} (/healthz, /readyz)", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(ready)).await {
            tracing::error!("admin server stopped: {e}");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readyz_follows_the_flag() {
        let ready = Arc::new(AtomicBool::new(false));
        assert_eq!(readyz(State(ready.clone())).await.0, StatusCode::SERVICE_UNAVAILABLE);
        ready.store(true, Ordering::Relaxed);
        assert_eq!(readyz(State(ready)).await.0, StatusCode::OK);
        assert_eq!(healthz().await, "ok");
    }
}
