//! `alb echo-server`: a tiny HTTP backend for the quick start and the tests. It answers every request with
//! JSON describing what it received and who it is, so a client can see which backend served it.
//! `/status/<code>` answers with that status code.

use anyhow::{Context, Result};
use axum::{body::Bytes, extract::Request, http::StatusCode, response::IntoResponse, Router};
use std::net::SocketAddr;

pub async fn run(listen: SocketAddr, name: String) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr()?;
    // Tests read this line to learn the port when --listen used port 0.
    println!("echo-server {name} listening on {local}");
    let app = Router::new().fallback(move |req: Request| {
        let name = name.clone();
        async move { handle(name, local, req).await }
    });
    axum::serve(listener, app).await.context("echo server")?;
    Ok(())
}

async fn handle(name: String, local: SocketAddr, req: Request) -> impl IntoResponse {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for (k, v) in parts.headers.iter() {
        headers.insert(
            k.as_str().to_string(),
            serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        );
    }
    let uri = parts.uri.to_string();
    let status = uri
        .strip_prefix("/status/")
        .and_then(|s| s.split(['/', '?']).next())
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let reply = serde_json::json!({
        "backend": name,
        "addr": local.to_string(),
        "method": parts.method.as_str(),
        "uri": uri,
        "headers": headers,
        "body_len": body.len(),
    });
    (status, [("content-type", "application/json".to_string()), ("x-backend", name.clone())], reply.to_string())
}
