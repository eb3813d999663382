//! tcp and udp Frontends → typed [`StreamListener`]s (rendered into nginx.conf by `src/nginx/stream.rs`).
//!
//! An L4 Frontend has no rules: its `serviceGroup` is the only backend (controlplane.md §1.5, dataplane.md §5).
//! Service ports are matched by number and protocol: UDP for udp Frontends, TCP otherwise (§3.2). Weights are
//! the ones of the HTTP backend groups. `config.timeout` (`proxy_connect_timeout_ms`, `proxy_read_timeout_ms`,
//! else `proxy_send_timeout_ms`) gives the tcp connect and idle timeouts.

use super::backends::{self, GroupError, Lookup};
use crate::crd::Frontend;
use crate::nginx::stream::{StreamBackend, StreamListener, StreamProto};
use serde_json::Value;
use std::net::IpAddr;

/// A `config.timeout` field that is not a number of milliseconds in 1..2^32-1.
fn timeout_field(config: Option<&Value>, key: &str) -> Result<Option<u32>, GroupError> {
    let Some(v) = config.and_then(|c| c.get("timeout")).and_then(|t| t.get(key)) else { return Ok(None) };
    if v.is_null() {
        return Ok(None);
    }
    match v.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0) {
        Some(n) => Ok(Some(n)),
        None => Err(GroupError {
            field: format!("spec.config.timeout.{key}"),
            reason: "InvalidTimeout",
            problem: format!("is {v}, not a number of milliseconds in 1..4294967295: the default is used"),
        }),
    }
}

/// The listener of an accepted tcp/udp Frontend. `Err` = the service group cannot be resolved (the Frontend is
/// then left out); the second value lists problems that only drop a setting (bad timeouts).
pub fn listener(
    ft: &Frontend,
    port: u16,
    proto: StreamProto,
    group_name: &str,
    lookup: &Lookup,
) -> Result<(StreamListener, Vec<GroupError>), Vec<GroupError>> {
    let ns = ft.metadata.namespace.as_deref().unwrap_or("");
    let name = ft.metadata.name.as_deref().unwrap_or("");
    let mut backends = Vec::new();
    if let Some(sg) = ft.spec.service_group.as_ref().filter(|sg| !sg.services.is_empty()) {
        let svc_proto = if proto == StreamProto::Udp { "UDP" } else { "TCP" };
        let g = backends::resolve_protocol(group_name, sg, ns, lookup, svc_proto)?;
        for b in g.backends {
            // EndpointSlices of type IPv4/IPv6 only: always an address; anything else never reaches nginx.conf.
            if let Ok(ip) = b.address.parse::<IpAddr>() {
                backends.push(StreamBackend { ip, port: b.port, weight: b.weight });
            }
        }
    }
    let mut warnings = Vec::new();
    let mut field = |key: &str| match timeout_field(ft.spec.config.as_ref(), key) {
        Ok(v) => v,
        Err(e) => {
            warnings.push(e);
            None
        }
    };
    let (connect, read, send) =
        (field("proxy_connect_timeout_ms"), field("proxy_read_timeout_ms"), field("proxy_send_timeout_ms"));
    // The timeout plugin only applies to tcp Frontends (controlplane.md §1.4).
    let tcp = proto == StreamProto::Tcp;
    let l = StreamListener {
        name: name.to_string(),
        port,
        proto,
        backends,
        connect_timeout_ms: connect.filter(|_| tcp),
        timeout_ms: read.or(send).filter(|_| tcp),
    };
    Ok((l, warnings))
}
