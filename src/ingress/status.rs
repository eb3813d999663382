//! `Ingress.status.loadBalancer` (controlplane.md §2.5): add-only merge of this ALB's addresses and ports.

use k8s_openapi::api::networking::v1::{IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressPortStatus};
use std::net::IpAddr;

/// `current` with every address of `addresses` (IP or hostname) present and carrying every port of `ports`
/// (protocol TCP). Existing entries only ever gain ports; other controllers' entries are untouched.
pub fn load_balancer_status(
    addresses: &[String],
    ports: &[(u16, &str)],
    current: Option<&IngressLoadBalancerStatus>,
) -> IngressLoadBalancerStatus {
    let mut out = current.cloned().unwrap_or_default();
    let entries = out.ingress.get_or_insert_default();
    for addr in addresses.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        let is_ip = addr.parse::<IpAddr>().is_ok();
        let found = entries.iter_mut().find(|e| {
            if is_ip {
                e.ip.as_deref() == Some(addr)
            } else {
                e.hostname.as_deref() == Some(addr)
            }
        });
        let entry = match found {
            Some(e) => e,
            None => {
                entries.push(IngressLoadBalancerIngress {
                    ip: is_ip.then(|| addr.to_string()),
                    hostname: (!is_ip).then(|| addr.to_string()),
                    ports: None,
                });
                entries.last_mut().expect("just pushed")
            }
        };
        for &(port, _) in ports {
            let list = entry.ports.get_or_insert_default();
            if !list.iter().any(|p| p.port == i32::from(port) && p.protocol == "TCP") {
                list.push(IngressPortStatus { port: i32::from(port), protocol: "TCP".into(), error: None });
            }
        }
    }
    if entries.is_empty() {
        out.ingress = None;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lb(v: serde_json::Value) -> IngressLoadBalancerStatus {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn adds_addresses_and_ports_only() {
        let current = lb(json!({"ingress": [
            {"ip": "10.0.0.9", "ports": [{"port": 8443, "protocol": "TCP"}]},
            {"ip": "10.0.0.1", "ports": [{"port": 80, "protocol": "TCP"}]}
        ]}));
        let addrs = vec!["10.0.0.1".to_string(), "lb.example.com".into(), "fd00::1".into(), " ".into()];
        let got = load_balancer_status(&addrs, &[(80, "http"), (443, "https")], Some(&current));
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            json!({"ingress": [
                {"ip": "10.0.0.9", "ports": [{"port": 8443, "protocol": "TCP"}]},
                {"ip": "10.0.0.1", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]},
                {"hostname": "lb.example.com", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]},
                {"ip": "fd00::1", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]}
            ]})
        );
        // Idempotent.
        assert_eq!(load_balancer_status(&addrs, &[(80, "http"), (443, "https")], Some(&got)), got);
        // Nothing removed when our ports or addresses shrink.
        assert_eq!(load_balancer_status(&addrs[..1], &[], Some(&got)), got);
    }

    #[test]
    fn empty_inputs() {
        let got = load_balancer_status(&[], &[(80, "http")], None);
        assert_eq!(got, IngressLoadBalancerStatus::default());
        let got = load_balancer_status(&["1.2.3.4".into()], &[], None);
        assert_eq!(serde_json::to_value(&got).unwrap(), json!({"ingress": [{"ip": "1.2.3.4"}]}));
    }
}
