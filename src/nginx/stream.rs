//! L4 (tcp/udp Frontends) through nginx's stream module.
//!
//! Debian 12's nginx has no stream Lua module (no `preread_by_lua`/`balancer_by_lua` in `stream {}`), so the L4
//! upstreams are **rendered** into nginx.conf and applied with a graceful reload (HUP: connections open on the
//! old workers finish there). Only typed values reach the text: IP addresses (parsed), ports, weights and
//! timeouts as numbers. This module is the whole of that path: [`StreamListener`] is what the compiler produces
//! and `ConfInput` carries, [`render_block`] the `stream {}` block. A future stream-Lua data plane replaces it by
//! moving the backends into the policy and keeping only the `listen` lines here.

use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum StreamProto {
    Tcp,
    Udp,
}

impl StreamProto {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamProto::Tcp => "tcp",
            StreamProto::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StreamBackend {
    pub ip: IpAddr,
    pub port: u16,
    /// Relative weight as in the policy: 0 = never chosen unless every backend is 0 (then all count as 1).
    pub weight: u32,
}

/// One tcp or udp Frontend: its port and its (already resolved) default service group.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StreamListener {
    /// Frontend name: only in a comment, checked like the http listeners' names.
    pub name: String,
    pub port: u16,
    pub proto: StreamProto,
    /// Sorted; empty = connections are closed at once (no upstream).
    pub backends: Vec<StreamBackend>,
    /// `proxy_connect_timeout` in ms (tcp only; `None` = 5000).
    pub connect_timeout_ms: Option<u32>,
    /// `proxy_timeout` in ms (`None` = 120000).
    pub timeout_ms: Option<u32>,
}

pub const DEFAULT_CONNECT_TIMEOUT_MS: u32 = 5_000;
pub const DEFAULT_TIMEOUT_MS: u32 = 120_000;

fn is_safe_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Checks what `render_block` relies on: names, distinct (port, proto), no clash with `taken` tcp ports.
pub fn validate(listeners: &[StreamListener], taken_tcp: &BTreeSet<u16>) -> Result<()> {
    let mut seen = BTreeSet::new();
    for l in listeners {
        if !is_safe_name(&l.name) {
            bail!("stream listener name {:?} is not a DNS-style name", l.name);
        }
        if l.port == 0 || !seen.insert((l.port, l.proto)) {
            bail!("stream listener port {}/{} is zero or duplicated", l.port, l.proto.as_str());
        }
        if l.proto == StreamProto::Tcp && taken_tcp.contains(&l.port) {
            bail!("stream listener port {}/tcp is also an http listener, the policy API or the metrics port", l.port);
        }
        for b in &l.backends {
            if b.port == 0 {
                bail!("stream listener {}: backend {} has port 0", l.port, b.ip);
            }
        }
    }
    Ok(())
}

/// The `stream {}` block (empty string when there is no stream listener). `bind` is already bracketed for IPv6.
pub fn render_block(listeners: &[StreamListener], bind: &str) -> String {
    if listeners.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    s.push_str("\n# L4 (tcp/udp Frontends): rendered upstreams, applied by a graceful reload (src/nginx/stream.rs)\n");
    s.push_str("stream {\n");
    s.push_str("    access_log off;\n");
    s.push_str("    tcp_nodelay on;\n");
    s.push_str("    proxy_next_upstream on;\n");
    s.push_str("    proxy_next_upstream_tries 5;\n");
    for l in listeners {
        let proto = l.proto.as_str();
        let upstream = format!("alb_stream_{proto}_{}", l.port);
        let all_zero = l.backends.iter().all(|b| b.weight == 0);
        let servers: Vec<String> = l
            .backends
            .iter()
            .filter(|b| all_zero || b.weight > 0)
            .map(|b| {
                let addr = match b.ip {
                    IpAddr::V6(a) => format!("[{a}]"),
                    IpAddr::V4(a) => a.to_string(),
                };
                let w = if all_zero { 1 } else { b.weight };
                format!("        server {addr}:{} weight={w} max_fails=0;\n", b.port)
            })
            .collect();
        let _ = writeln!(s, "\n    # frontend {} ({proto})", l.name);
        if !servers.is_empty() {
            let _ = writeln!(s, "    upstream {upstream} {{");
            for line in &servers {
                s.push_str(line);
            }
            s.push_str("    }\n");
        }
        s.push_str("    server {\n");
        let udp = if l.proto == StreamProto::Udp { " udp" } else { "" };
        let _ = writeln!(s, "        listen {bind}:{}{udp};", l.port);
        if servers.is_empty() {
            s.push_str("        # no ready backend: connections are closed at once\n");
            s.push_str("        return \"\";\n");
        } else {
            if l.proto == StreamProto::Tcp {
                let ct = l.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS).max(1);
                let _ = writeln!(s, "        proxy_connect_timeout {ct}ms;");
            }
            let t = l.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).max(1);
            let _ = writeln!(s, "        proxy_timeout {t}ms;");
            let _ = writeln!(s, "        proxy_pass {upstream};");
        }
        s.push_str("    }\n");
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(port: u16, proto: StreamProto, backends: &[(&str, u16, u32)]) -> StreamListener {
        StreamListener {
            name: format!("ft-{port}"),
            port,
            proto,
            backends: backends
                .iter()
                .map(|(ip, port, weight)| StreamBackend { ip: ip.parse().unwrap(), port: *port, weight: *weight })
                .collect(),
            connect_timeout_ms: None,
            timeout_ms: None,
        }
    }

    #[test]
    fn renders_weighted_upstreams_udp_and_timeouts() {
        let mut tcp = l(9000, StreamProto::Tcp, &[("10.0.0.1", 80, 25), ("fd00::1", 81, 75), ("10.0.0.3", 82, 0)]);
        tcp.connect_timeout_ms = Some(1500);
        tcp.timeout_ms = Some(30000);
        let udp = l(9000, StreamProto::Udp, &[("10.0.0.9", 53, 100)]);
        let text = render_block(&[tcp, udp], "0.0.0.0");
        assert!(text.contains("upstream alb_stream_tcp_9000 {"), "{text}");
        assert!(text.contains("server 10.0.0.1:80 weight=25 max_fails=0;"));
        assert!(text.contains("server [fd00::1]:81 weight=75 max_fails=0;"));
        assert!(!text.contains("10.0.0.3"), "weight 0 is never chosen: {text}");
        assert!(text.contains("listen 0.0.0.0:9000;"));
        assert!(text.contains("listen 0.0.0.0:9000 udp;"));
        assert!(text.contains("proxy_connect_timeout 1500ms;"));
        assert!(text.contains("proxy_timeout 30000ms;"));
        assert!(text.contains("proxy_timeout 120000ms;"));
        assert!(text.contains("proxy_pass alb_stream_udp_9000;"));
        assert_eq!(render_block(&[], "0.0.0.0"), "");
    }

    #[test]
    fn all_zero_weights_count_as_one_and_no_backend_closes() {
        let text = render_block(&[l(9001, StreamProto::Tcp, &[("10.0.0.1", 80, 0), ("10.0.0.2", 80, 0)])], "::1");
        assert!(text.contains("server 10.0.0.1:80 weight=1"), "{text}");
        assert!(text.contains("server 10.0.0.2:80 weight=1"), "{text}");
        let text = render_block(&[l(9002, StreamProto::Tcp, &[])], "127.0.0.1");
        assert!(!text.contains("upstream alb_"), "{text}");
        assert!(text.contains("return \"\";"));
    }

    #[test]
    fn validation() {
        let taken: BTreeSet<u16> = [80].into();
        assert!(validate(&[l(80, StreamProto::Udp, &[])], &taken).is_ok(), "udp 80 does not clash with http 80");
        assert!(validate(&[l(80, StreamProto::Tcp, &[])], &taken).is_err());
        assert!(validate(&[l(81, StreamProto::Tcp, &[]), l(81, StreamProto::Tcp, &[])], &taken).is_err());
        let mut bad = l(82, StreamProto::Tcp, &[]);
        bad.name = "x; evil".into();
        assert!(validate(&[bad], &taken).is_err());
        assert!(validate(&[l(83, StreamProto::Tcp, &[("10.0.0.1", 0, 1)])], &taken).is_err());
    }
}
