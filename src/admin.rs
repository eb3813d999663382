//! Admin HTTP server of `alb controller` and `alb standalone` (`--admin-port`, default 1938): `/healthz` (200
//! while the process runs), `/readyz` (200 once the first policy was applied by every nginx worker) and
//! `/metrics` (the `alb_controller_*` metrics of [`Metrics`], OpenMetrics text).

use crate::metrics::{Metrics, CONTENT_TYPE};
use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the handlers read.
#[derive(Clone)]
pub struct Admin {
    /// Set once the first policy was applied by every worker.
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(admin): State<Admin>) -> (StatusCode, &'static str) {
    if admin.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no policy applied yet")
    }
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], admin.metrics.encode())
}

pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(admin)
}

/// Binds `0.0.0.0:<port>` (an error when taken) and serves in the background.
pub async fn spawn(port: u16, admin: Admin) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("admin server: cannot listen on port {port}"))?;
    tracing::info!("admin server on {} (/healthz, /readyz, /metrics)", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(admin)).await {
            tracing::error!("admin server stopped: {e}");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readyz_follows_the_flag_and_metrics_are_served() {
        let admin = Admin { ready: Arc::new(AtomicBool::new(false)), metrics: Arc::new(Metrics::new()) };
        assert_eq!(readyz(State(admin.clone())).await.0, StatusCode::SERVICE_UNAVAILABLE);
        admin.ready.store(true, Ordering::Relaxed);
        assert_eq!(readyz(State(admin.clone())).await.0, StatusCode::OK);
        assert_eq!(healthz().await, "ok");
        let resp = metrics(State(admin)).await.into_response();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }
}
