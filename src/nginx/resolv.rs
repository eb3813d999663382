//! The DNS servers of nginx's `resolver` directive (forward auth to host names, `lua/alb/features/auth.lua`):
//! the `--resolver` flags, else the `nameserver` lines of `/etc/resolv.conf`. Every address is parsed as an IP
//! address before it can reach nginx.conf; anything else is dropped with a warning.

use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

/// Where the system's nameservers are read from by default (`--resolv-conf`).
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// One DNS server: an IP address and an optional port (nginx's default is 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Nameserver {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl fmt::Display for Nameserver {
    /// nginx's `resolver` syntax: `10.0.0.10`, `10.0.0.10:5353`, `[fd00::10]`, `[fd00::10]:5353`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(a) => write!(f, "{a}")?,
            IpAddr::V6(a) => write!(f, "[{a}]")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// A `--resolver` value: `ADDR` or `ADDR:PORT` (IPv6 as `::1` or `[::1]:5353`).
pub fn parse_flag(s: &str) -> Result<Nameserver, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Nameserver { ip, port: None });
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        if let Ok(ip) = inner.parse::<std::net::Ipv6Addr>() {
            return Ok(Nameserver { ip: IpAddr::V6(ip), port: None });
        }
    }
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(Nameserver { ip: a.ip(), port: Some(a.port()) }),
        Ok(_) => Err(format!("{s:?}: port 0 is not a DNS server port")),
        Err(_) => Err(format!("{s:?} is not ADDR or ADDR:PORT with an IP address (IPv6 with a port: [ADDR]:PORT)")),
    }
}

/// The `nameserver` addresses of a resolv.conf text, in order, without duplicates. Lines that are not
/// `nameserver <IP address>` are ignored; an unusable nameserver value (a name, a scoped IPv6 address `fe80::1%eth0`
/// nginx cannot use, garbage) is skipped and reported in the second list.
pub fn parse_resolv_conf(text: &str) -> (Vec<Nameserver>, Vec<String>) {
    let mut out: Vec<Nameserver> = Vec::new();
    let mut skipped = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        match addr.parse::<IpAddr>() {
            Ok(ip) => {
                let ns = Nameserver { ip, port: None };
                if !out.contains(&ns) {
                    out.push(ns);
                }
            }
            Err(_) => skipped.push(addr.chars().take(80).collect()),
        }
    }
    (out, skipped)
}

/// The nameservers of a resolv.conf file (unreadable → none), skipped lines reported as warnings.
pub fn read_resolv_conf(path: &std::path::Path) -> Vec<Nameserver> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let (ns, skipped) = parse_resolv_conf(&text);
            for s in skipped {
                tracing::warn!("{}: ignoring nameserver {s:?}: not an IP address nginx can use", path.display());
            }
            ns
        }
        Err(e) => {
            tracing::warn!("cannot read {}: {e}", path.display());
            Vec::new()
        }
    }
}

/// The `resolver` directive arguments for nginx.conf, `None` without nameservers. Only ever built from parsed
/// IP addresses. IPv6 answers are asked for only when an IPv6 nameserver is configured.
pub fn directive(ns: &[Nameserver]) -> Option<String> {
    if ns.is_empty() {
        return None;
    }
    let mut parts: Vec<String> = ns.iter().map(|n| n.to_string()).collect();
    parts.push("valid=30s".into());
    if !ns.iter().any(|n| n.ip.is_ipv6()) {
        parts.push("ipv6=off".into());
    }
    Some(parts.join(" "))
}

/// This process's nginx nameservers, recorded once at start-up (`cli::dispatch`) before the first compilation:
/// nginx.conf renders them and the policy compiler refuses forward auth to host names without any.
static RECORDED: OnceLock<Vec<Nameserver>> = OnceLock::new();

pub fn record(ns: Vec<Nameserver>) {
    let _ = RECORDED.set(ns);
}

pub fn recorded() -> Option<&'static [Nameserver]> {
    RECORDED.get().map(|v| v.as_slice())
}

/// `Some(false)`: nginx has no resolver; `None`: unknown (no nginx in this process, e.g. `alb policy`).
pub fn available() -> Option<bool> {
    recorded().map(|ns| !ns.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> Nameserver {
        parse_flag(s).unwrap()
    }

    #[test]
    fn resolv_conf_nameservers_in_order_without_duplicates() {
        let text = "# generated\nsearch svc.cluster.local cluster.local\n  nameserver 10.96.0.10\n\
                    nameserver\tfd00::a  # trailing words ignored\nnameserver 10.96.0.10\n;nameserver 1.1.1.1\n\
                    #nameserver 8.8.8.8\noptions ndots:5\nnameservers 9.9.9.9\n";
        let (got, skipped) = parse_resolv_conf(text);
        assert_eq!(got, vec![ns("10.96.0.10"), ns("fd00::a")]);
        assert!(skipped.is_empty());
        assert_eq!(directive(&got).unwrap(), "10.96.0.10 [fd00::a] valid=30s");
    }

    #[test]
    fn hostile_resolv_conf_never_reaches_the_directive() {
        let text = "nameserver 1.2.3.4;include /etc/passwd\nnameserver dns.example\nnameserver fe80::1%eth0\n\
                    nameserver \"10.0.0.1\"\nnameserver 10.0.0.1}\nnameserver 10.0.0.256\nnameserver $x\n\
                    nameserver 127.0.0.1:53\n";
        let (got, skipped) = parse_resolv_conf(text);
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(skipped.len(), 8);
        assert_eq!(directive(&got), None);
        let (got, _) = parse_resolv_conf("nameserver 10.0.0.2\nnameserver 1.2.3.4;evil\n");
        assert_eq!(directive(&got).unwrap(), "10.0.0.2 valid=30s ipv6=off");
    }

    #[test]
    fn flag_values() {
        assert_eq!(ns("127.0.0.1:5353").to_string(), "127.0.0.1:5353");
        assert_eq!(ns("10.0.0.1").to_string(), "10.0.0.1");
        assert_eq!(ns("::1").to_string(), "[::1]");
        assert_eq!(ns("[::1]").to_string(), "[::1]");
        assert_eq!(ns("[fd00::1]:53").to_string(), "[fd00::1]:53");
        for bad in ["", "dns.local", "1.2.3.4:0", "1.2.3.4:99999", "1.2.3.4; x", "[::1", "::1:53x", "1.2.3.4:53;"] {
            assert!(parse_flag(bad).is_err(), "{bad}");
        }
        let d = directive(&[ns("127.0.0.1:5353"), ns("10.0.0.1")]).unwrap();
        assert_eq!(d, "127.0.0.1:5353 10.0.0.1 valid=30s ipv6=off");
    }
}
