//! `alb echo-server`: a tiny HTTP backend for the quick start and the tests. It answers every request with
//! JSON describing what it received and who it is, so a client can see which backend served it.
//! `/status/<code>` answers with that status code; a path containing `/sleep/<ms>` answers after that delay. The reply names the
//! client address (`peer`), so tests can count the connections a proxy opened. A WebSocket upgrade on `/ws`
//! echoes every text or binary message back (prefixed with the backend name for text).

use anyhow::{Context, Result};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::{body::Bytes, http::StatusCode, response::IntoResponse, response::Response, Router};
use std::net::SocketAddr;

pub async fn run(listen: SocketAddr, name: String) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr()?;
    // Tests read this line to learn the port when --listen used port 0.
    println!("echo-server {name} listening on {local}");
    let app = Router::new().fallback(move |ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request| {
        let name = name.clone();
        async move { handle(name, local, peer, req).await }
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.context("echo server")?;
    Ok(())
}

async fn echo_ws(name: String, mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(t) => Message::Text(format!("{name}: {}", t.as_str()).into()),
            Message::Binary(b) => Message::Binary(b),
            Message::Close(_) => break,
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

async fn handle(name: String, local: SocketAddr, peer: SocketAddr, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    if parts.uri.path() == "/ws" {
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => {
                let n = name.clone();
                ws.on_upgrade(move |socket| echo_ws(n, socket)).into_response()
            }
            Err(e) => e.into_response(),
        };
    }
    let body: Bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
    let mut headers = serde_json::Map::new();
    // repeated headers are joined with ", " in arrival order
    for (k, v) in parts.headers.iter() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        let joined = match headers.get(k.as_str()).and_then(|p| p.as_str()) {
            Some(prev) => format!("{prev}, {v}"),
            None => v,
        };
        headers.insert(k.as_str().to_string(), serde_json::Value::String(joined));
    }
    let uri = parts.uri.to_string();
    let sleep = uri.find("/sleep/").map(|i| &uri[i + 7..]);
    if let Some(ms) = sleep.and_then(|s| s.split(['/', '?']).next()?.parse::<u64>().ok()) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let status = uri
        .strip_prefix("/status/")
        .and_then(|s| s.split(['/', '?']).next())
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let reply = serde_json::json!({
        "backend": name,
        "addr": local.to_string(),
        "peer": peer.to_string(),
        "method": parts.method.as_str(),
        "uri": uri,
        "headers": headers,
        "body_len": body.len(),
    });
    (status, [("content-type", "application/json".to_string()), ("x-backend", name.clone())], reply.to_string())
        .into_response()
}
