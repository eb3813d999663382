//! Everything that talks to nginx: rendering nginx.conf, running the process, pushing the policy.
pub mod process;
pub mod push;
pub mod render;
pub mod resolv;
pub mod stream;

use crate::cli::NginxArgs;
use anyhow::Result;
use render::HttpListener;

/// `alb dataplane`: nginx + Lua with the given listeners, no controller. Runs until SIGINT/SIGTERM.
pub async fn dataplane(args: NginxArgs, http_ports: Vec<u16>) -> Result<()> {
    let listeners = http_ports
        .iter()
        .map(|p| HttpListener { name: format!("port-{p}"), port: *p, tls: false, grpc: false })
        .collect();
    let (bin, input, token) = args.prepare(listeners)?;
    let client = push::PolicyClient::new(input.api_port, token);
    let mut nginx = process::Nginx::new(bin, input);
    nginx.start()?;
    client.wait_ready(std::time::Duration::from_secs(10)).await?;
    for l in &nginx.input().http_listeners {
        tracing::info!("listening on {}:{}", nginx.input().bind_address, l.port);
    }
    tracing::info!(
        "data plane ready: policy API on 127.0.0.1:{}, token in {}",
        nginx.input().api_port,
        nginx.input().token_file().display()
    );
    wait_for_shutdown(&mut nginx).await
}

/// The nginx listeners of a compilation: http/https/grpc servers and tcp/udp stream servers.
pub fn listeners_of(c: &crate::compile::Compiled) -> (Vec<HttpListener>, Vec<stream::StreamListener>) {
    use crate::compile::Protocol;
    let http = c
        .listeners
        .iter()
        .map(|l| HttpListener { name: l.name.clone(), port: l.port, tls: l.tls, grpc: l.protocol == Protocol::Grpc })
        .collect();
    (http, c.stream.clone())
}

/// Waits for SIGINT/SIGTERM (then stops nginx) or for nginx to die (an error).
pub async fn wait_for_shutdown(nginx: &mut process::Nginx) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                if let Some(status) = nginx.exited() {
                    anyhow::bail!("nginx exited unexpectedly ({status})");
                }
            }
        }
    }
    tracing::info!("shutting down");
    nginx.stop();
    Ok(())
}
