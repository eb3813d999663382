//! Service group → backend group (controlplane.md §3.2, with EndpointSlices instead of Endpoints).

use super::positions::Positions;
use super::service::Service;
use crate::compile::slice::EndpointSlice;
use crate::crd::{ServiceGroup, ServiceRef};
use crate::policy::config::ErrorService;
use crate::policy::{Backend, BackendGroup};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::IpAddr;

/// Services of a snapshot with their EndpointSlices, indexed by namespace/name. Built by every compilation: a
/// table of positions (4 bytes a Service) and the slices in one list sorted by their Service's position, instead
/// of a map of names to a list each (at 10,000 Services ~1.4 MB, all alive at the compilation's peak).
pub struct Lookup<'a> {
    services: Vec<&'a Service>,
    /// Positions in `services` by namespace/name.
    by_name: Positions,
    /// Each slice with its Service's position, sorted by position, then slice name.
    slices: Vec<(u32, &'a EndpointSlice)>,
}

/// A Service and its EndpointSlices (sorted by name), with their Service's position. Slices of a Service that does
/// not exist are never read.
struct Indexed<'l, 'a> {
    svc: &'a Service,
    slices: &'l [(u32, &'a EndpointSlice)],
}

/// A Service's namespace/name: its key in [`Lookup`].
fn ns_name<'a>(s: &&'a Service) -> (&'a str, &'a str) {
    s.metadata.ns_name()
}

impl<'a> Lookup<'a> {
    pub fn new(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Lookup<'a> {
        let services: Vec<&Service> = services.into_iter().collect();
        let mut by_name = Positions::with_capacity(services.len());
        for i in 0..services.len() {
            // (a second Service of the same namespace/name, which the API does not have, replaces the first)
            if let Some(j) = by_name.file(&services, ns_name, i) {
                *j = u32::try_from(i).unwrap_or(u32::MAX);
            }
        }
        let mut l = Lookup { services, by_name, slices: Vec::new() };
        let mut slices: Vec<(u32, &EndpointSlice)> = slices
            .into_iter()
            .filter_map(|s| Some((l.position(s.metadata.ns_name().0, s.service_name()?)?, s)))
            .collect();
        // Deterministic order whatever the informer order was.
        slices.sort_unstable_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.metadata.name.cmp(&y.metadata.name)));
        l.slices = slices;
        l
    }

    fn position(&self, ns: &str, name: &str) -> Option<u32> {
        self.by_name.find(&self.services, ns_name, (ns, name)).and_then(|i| u32::try_from(i).ok())
    }

    fn get(&self, ns: &str, name: &str) -> Option<Indexed<'_, 'a>> {
        let i = self.position(ns, name)?;
        let (from, to) = (self.slices.partition_point(|s| s.0 < i), self.slices.partition_point(|s| s.0 <= i));
        Some(Indexed { svc: self.services.get(i as usize)?, slices: self.slices.get(from..to).unwrap_or(&[]) })
    }
}

impl Lookup<'_> {
    /// What [`resolve_with`] reads for `sg`, as addresses: per Service of the group, the Service and its slices
    /// (0 for a missing Service), into `id`. Equal identities resolve to equal groups while the objects are alive
    /// (`cache.rs`).
    pub fn identity_into(&self, sg: &ServiceGroup, default_ns: &str, id: &mut Vec<usize>) {
        id.clear();
        for s in &sg.services {
            let ns = if s.namespace.is_empty() { default_ns } else { s.namespace.as_str() };
            match self.get(ns, s.name.as_str()) {
                Some(e) => {
                    id.push(e.svc as *const Service as usize);
                    id.push(e.slices.len());
                    id.extend(e.slices.iter().map(|(_, s)| *s as *const EndpointSlice as usize));
                }
                None => id.push(0),
            }
        }
    }
}

/// A service of the group that cannot be resolved; `field` is relative to the object
/// (`spec.serviceGroup.services[0]`, `...port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupError {
    pub field: String,
    pub reason: &'static str,
    pub problem: String,
}

/// Ready endpoints `(address, port)` of one Service port, each once.
fn endpoints(svc: &Indexed<'_, '_>, sp: &ServicePort) -> Vec<(String, u16)> {
    let spec = svc.svc.spec.as_ref();
    let valid = |port: i32| u16::try_from(port).ok().filter(|p| *p != 0);
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        // Pure compiler: only IP literals (DNS names need the resolver of a later issue).
        let ip = spec.and_then(|s| s.external_name.as_deref()).and_then(|n| n.parse::<IpAddr>().ok());
        return ip.zip(valid(sp.port)).map(|(ip, port)| (ip.to_string(), port)).into_iter().collect();
    }
    let sp_name = sp.name.as_deref().unwrap_or("");
    let target = match &sp.target_port {
        Some(IntOrString::Int(p)) => Some(*p),
        _ => None,
    };
    let mut out: Vec<(String, u16)> = Vec::new();
    let mut seen: HashSet<(&str, u16)> = HashSet::new();
    for (_, slice) in svc.slices {
        if !matches!(&*slice.address_type, "IPv4" | "IPv6") {
            continue;
        }
        let named = slice.ports.iter().flatten().find(|p| p.name.as_deref().unwrap_or("") == sp_name);
        let Some(port) = named.and_then(|p| p.port).or(target).and_then(valid) else { continue };
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if let (true, Some(addr)) = (ready, ep.addresses.first()) {
                if seen.insert((addr, port)) {
                    out.push((addr.clone(), port));
                }
            }
        }
    }
    out
}

/// Rule annotation `alb2.<d>/service-upstream: "true"` (set from the Ingress annotation `service-upstream`):
/// the Rule's Services are reached through their ClusterIP and Service port instead of their endpoints.
pub fn service_upstream_annotation(domain: &str) -> String {
    format!("alb2.{domain}/service-upstream")
}

/// The ClusterIP and Service port of a Service, when it has an IP literal as ClusterIP (not headless).
fn cluster_ip_endpoint(svc: &Service, sp: &ServicePort) -> Option<(String, u16)> {
    let ip = svc.spec.as_ref()?.cluster_ip.as_deref()?.parse::<IpAddr>().ok()?;
    Some((ip.to_string(), u16::try_from(sp.port).ok().filter(|p| *p != 0)?))
}

/// Resolve a service group. Any missing Service or port fails the whole group (all problems reported).
pub fn resolve(
    group_name: &str,
    sg: &ServiceGroup,
    default_ns: &str,
    lookup: &Lookup,
) -> Result<BackendGroup, Vec<GroupError>> {
    resolve_protocol(group_name, sg, default_ns, lookup, "TCP")
}

/// [`resolve`] matching the Service ports of `protocol` (`TCP`, or `UDP` for udp Frontends; controlplane.md
/// §3.2: a port is matched by number and protocol).
pub fn resolve_protocol(
    group_name: &str,
    sg: &ServiceGroup,
    default_ns: &str,
    lookup: &Lookup,
    protocol: &str,
) -> Result<BackendGroup, Vec<GroupError>> {
    resolve_with(group_name, sg, default_ns, lookup, protocol, false)
}

/// [`resolve`] with `cluster_ip`: each Service is one backend, its ClusterIP and Service port
/// ([`service_upstream_annotation`]); a Service without one (headless, ExternalName) falls back to its endpoints.
pub fn resolve_with(
    group_name: &str,
    sg: &ServiceGroup,
    default_ns: &str,
    lookup: &Lookup,
    protocol: &str,
    cluster_ip: bool,
) -> Result<BackendGroup, Vec<GroupError>> {
    let is_tcp = protocol == "TCP";
    let mut errs = Vec::new();
    // (weight, svc, ns, endpoints) per service.
    let mut per_service = Vec::with_capacity(sg.services.len());
    for (i, s) in sg.services.iter().enumerate() {
        let ns = if s.namespace.is_empty() { default_ns } else { s.namespace.as_str() };
        let Some(svc) = lookup.get(ns, s.name.as_str()) else {
            errs.push(GroupError {
                field: format!("spec.serviceGroup.services[{i}]"),
                reason: "ServiceNotFound",
                problem: format!("names Service {ns}/{} which does not exist", s.name),
            });
            continue;
        };
        let ports = svc.svc.spec.as_ref().and_then(|s| s.ports.as_ref());
        let sp = ports.into_iter().flatten().find(|p| {
            p.port == s.port
                && match p.protocol.as_deref() {
                    None | Some("") => is_tcp,
                    Some(pr) => pr == protocol,
                }
        });
        let Some(sp) = sp else {
            errs.push(GroupError {
                field: format!("spec.serviceGroup.services[{i}].port"),
                reason: "PortNotFound",
                problem: format!("is {} but Service {ns}/{} has no {protocol} port {}", s.port, s.name, s.port),
            });
            continue;
        };
        let w = s.weight.unwrap_or(100).clamp(0, 100);
        let eps = match cluster_ip.then(|| cluster_ip_endpoint(svc.svc, sp)).flatten() {
            Some(ep) => vec![ep],
            None => endpoints(&svc, sp),
        };
        per_service.push((w, &s.name, ns, eps));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let total = match per_service.iter().map(|(w, ..)| *w as i64).sum::<i64>() {
        0 => 100,
        t => t,
    };
    let single = per_service.len() == 1;
    // Sized exactly: a group is kept for as long as its Rule is unchanged, and a Vec grown from empty holds room
    // for 4 backends after the first (at 10,000 one-endpoint groups ~2.4 MB of unused capacity).
    let endpoints_total: usize = per_service.iter().map(|(.., eps)| eps.len()).sum();
    let mut backends = Vec::with_capacity(if single { endpoints_total } else { 0 });
    // Same address:port from several services collapse: the last one wins. (The endpoints of one service are
    // distinct already.)
    let mut by_addr: HashMap<(String, u16), Backend> = HashMap::new();
    for (w, svc, ns, eps) in per_service {
        let n = eps.len() as i64;
        let mut weight = ((w as f64 * 100.0) / ((total * n) as f64) + 0.5).floor() as u32;
        if w != 0 && weight == 0 {
            weight = 1;
        }
        for (address, port) in eps {
            let b = Backend { address, port, weight, svc: svc.to_string(), ns: ns.to_string() };
            if single {
                backends.push(b);
            } else {
                by_addr.insert((b.address.clone(), port), b);
            }
        }
    }
    if !single {
        backends = by_addr.into_values().collect();
    }
    // The keys are distinct (port and weight are numbers), so the order does not depend on the one above.
    backends.sort_by_cached_key(|b| format!("{}-{}-{}", b.address, b.port, b.weight));
    Ok(BackendGroup {
        name: group_name.to_string(),
        mode: "http".into(),
        session_affinity_policy: sg.session_affinity_policy.clone(),
        session_affinity_attribute: sg.session_affinity_attribute.clone(),
        backends,
    })
}

/// Name of the backend group of an error backend (`config.error_pages.service`). `:` and `/` never occur in
/// the names of other groups (Kubernetes object names), so it cannot collide with them; Rules naming the same
/// error Service share the group.
pub fn error_group_name(svc: &ErrorService) -> String {
    format!("errors:{}/{}:{}", svc.namespace, svc.name, svc.port)
}

/// The backend group of an error backend: that one Service, round robin. Problems name
/// `spec.config.error_pages.service`.
pub fn resolve_error_service(svc: &ErrorService, lookup: &Lookup) -> Result<BackendGroup, Vec<GroupError>> {
    let sg = ServiceGroup {
        services: vec![ServiceRef {
            name: svc.name.clone(),
            namespace: svc.namespace.clone(),
            port: i32::from(svc.port),
            ..Default::default()
        }],
        ..Default::default()
    };
    resolve(&error_group_name(svc), &sg, &svc.namespace, lookup).map_err(|errs| {
        errs.into_iter()
            .map(|mut e| {
                e.field = e.field.replacen("spec.serviceGroup.services[0]", "spec.config.error_pages.service", 1);
                e
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::testutil::{service, slice};
    use serde_json::json;

    fn sg(v: serde_json::Value) -> ServiceGroup {
        serde_json::from_value(json!({ "services": v })).unwrap()
    }

    fn addrs(g: &BackendGroup) -> Vec<(String, u16, u32)> {
        g.backends.iter().map(|b| (b.address.clone(), b.port, b.weight)).collect()
    }

    /// Each Service finds its own slices (in slice-name order) whatever the order of the lists, a slice of a
    /// Service that does not exist is not read, and a Service without slices has none.
    #[test]
    fn lookup_groups_slices_by_service() {
        let port = &[("", 80, json!(80))];
        let svcs = vec![service("b", "web", port), service("a", "web", port), service("a", "api", port)];
        let slices = vec![
            slice("a", "web", "web-2", &[("", 80)], &[("10.0.0.2", None)]),
            slice("b", "web", "web-1", &[("", 80)], &[("10.0.1.1", None)]),
            slice("a", "gone", "gone-1", &[("", 80)], &[("10.0.9.9", None)]),
            slice("a", "web", "web-1", &[("", 80)], &[("10.0.0.1", None)]),
        ];
        let l = Lookup::new(&svcs, &slices);
        let at = |s: &Service| s as *const Service as usize;
        let sl = |s: &EndpointSlice| s as *const EndpointSlice as usize;
        let mut id = Vec::new();
        l.identity_into(&sg(json!([{"name": "web", "port": 80}])), "a", &mut id);
        assert_eq!(id, vec![at(&svcs[1]), 2, sl(&slices[3]), sl(&slices[0])]);
        l.identity_into(
            &sg(json!([{"name": "web", "port": 80, "namespace": "b"}, {"name": "api", "port": 80}])),
            "a",
            &mut id,
        );
        assert_eq!(id, vec![at(&svcs[0]), 1, sl(&slices[1]), at(&svcs[2]), 0]);
        l.identity_into(&sg(json!([{"name": "gone", "port": 80}])), "a", &mut id);
        assert_eq!(id, vec![0]);
        let g = resolve("g", &sg(json!([{"name": "web", "port": 80}])), "a", &l).unwrap();
        assert_eq!(addrs(&g), vec![("10.0.0.1".into(), 80, 50), ("10.0.0.2".into(), 80, 50)]);
    }

    #[test]
    fn weights_two_services() {
        let svcs =
            vec![service("default", "a", &[("", 80, json!(8080))]), service("default", "b", &[("", 80, json!(8080))])];
        let slices = vec![
            slice("default", "a", "a-1", &[("", 8080)], &[("10.0.0.1", None)]),
            slice(
                "default",
                "b",
                "b-1",
                &[("", 8080)],
                &[("10.0.1.1", None), ("10.0.1.2", None), ("10.0.1.3", Some(true))],
            ),
        ];
        let l = Lookup::new(&svcs, &slices);
        let g = resolve(
            "g",
            &sg(json!([{"name": "a", "port": 80, "weight": 50}, {"name": "b", "port": 80, "weight": 50}])),
            "default",
            &l,
        )
        .unwrap();
        assert_eq!(
            addrs(&g),
            vec![
                ("10.0.0.1".into(), 8080, 50),
                ("10.0.1.1".into(), 8080, 17),
                ("10.0.1.2".into(), 8080, 17),
                ("10.0.1.3".into(), 8080, 17)
            ]
        );
        assert_eq!(g.backends[1].svc, "b");
        assert_eq!(g.backends[1].ns, "default");
        assert_eq!(g.mode, "http");
    }

    #[test]
    fn weight_edge_cases() {
        let svcs =
            vec![service("default", "a", &[("", 80, json!(80))]), service("default", "b", &[("", 80, json!(80))])];
        let eps: Vec<(String, Option<bool>)> =
            (0..300).map(|i| (format!("10.1.{}.{}", i / 200, i % 200), None)).collect();
        let eps: Vec<(&str, Option<bool>)> = eps.iter().map(|(a, r)| (a.as_str(), *r)).collect();
        let slices = vec![
            slice("default", "a", "a-1", &[("", 80)], &[("10.0.0.1", None)]),
            slice("default", "b", "b-1", &[("", 80)], &eps),
        ];
        let l = Lookup::new(&svcs, &slices);
        // Absent weight = 100; 300 endpoints sharing 50 → rounded to 0 → minimum 1.
        let g =
            resolve("g", &sg(json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}])), "default", &l).unwrap();
        assert!(g.backends.iter().filter(|b| b.svc == "b").all(|b| b.weight == 1));
        assert_eq!(g.backends.iter().find(|b| b.svc == "a").unwrap().weight, 50);
        // Weight 0 stays 0 (and clamping: 500 → 100).
        let g = resolve(
            "g",
            &sg(json!([{"name": "a", "port": 80, "weight": 500}, {"name": "b", "port": 80, "weight": 0}])),
            "default",
            &l,
        )
        .unwrap();
        assert!(g.backends.iter().filter(|b| b.svc == "b").all(|b| b.weight == 0));
        assert_eq!(g.backends.iter().find(|b| b.svc == "a").unwrap().weight, 100);
        // All zero: T = 100 → every weight 0.
        let g = resolve("g", &sg(json!([{"name": "a", "port": 80, "weight": 0}])), "default", &l).unwrap();
        assert_eq!(addrs(&g), vec![("10.0.0.1".into(), 80, 0)]);
    }

    #[test]
    fn ready_filtering_and_port_by_name() {
        let svcs = vec![service("ns1", "web", &[("metrics", 9090, json!("m")), ("http", 80, json!("web"))])];
        let slices = vec![
            slice(
                "ns1",
                "web",
                "web-1",
                &[("metrics", 9100), ("http", 8080)],
                &[("10.0.0.1", Some(true)), ("10.0.0.2", Some(false)), ("10.0.0.3", None)],
            ),
            // Another service's slice in the same namespace, and the same service name elsewhere: ignored.
            slice("ns1", "other", "other-1", &[("http", 1)], &[("10.9.9.9", None)]),
            slice("ns2", "web", "web-x", &[("http", 2)], &[("10.8.8.8", None)]),
            // The same endpoint in a second slice (during a slice move) counts once.
            slice("ns1", "web", "web-2", &[("http", 8080)], &[("10.0.0.3", None)]),
        ];
        let l = Lookup::new(&svcs, &slices);
        let g = resolve("g", &sg(json!([{"name": "web", "port": 80}])), "ns1", &l).unwrap();
        assert_eq!(addrs(&g), vec![("10.0.0.1".into(), 8080, 50), ("10.0.0.3".into(), 8080, 50)]);
    }

    #[test]
    fn numeric_target_port_fallback_and_empty() {
        let svcs =
            vec![service("ns1", "web", &[("http", 80, json!(8081))]), service("ns1", "idle", &[("", 80, json!(80))])];
        // Slice port named differently: fall back to the numeric targetPort.
        let slices = vec![slice("ns1", "web", "web-1", &[("other", 9999)], &[("10.0.0.1", None)])];
        let l = Lookup::new(&svcs, &slices);
        let g = resolve("g", &sg(json!([{"name": "web", "port": 80}])), "ns1", &l).unwrap();
        assert_eq!(addrs(&g), vec![("10.0.0.1".into(), 8081, 100)]);
        // No endpoints: not an error, empty group.
        let g = resolve("g", &sg(json!([{"name": "idle", "port": 80}])), "ns1", &l).unwrap();
        assert!(g.backends.is_empty());
    }

    #[test]
    fn collapse_and_sort() {
        let svcs =
            vec![service("default", "a", &[("", 80, json!(80))]), service("default", "b", &[("", 80, json!(80))])];
        let slices = vec![
            slice("default", "a", "a-1", &[("", 80)], &[("10.0.0.9", None), ("10.0.0.10", None)]),
            slice("default", "b", "b-1", &[("", 80)], &[("10.0.0.9", None)]),
        ];
        let l = Lookup::new(&svcs, &slices);
        let g = resolve(
            "g",
            &sg(json!([{"name": "a", "port": 80, "weight": 20}, {"name": "b", "port": 80, "weight": 80}])),
            "default",
            &l,
        )
        .unwrap();
        // a: 20*100/(100*2) = 10 each; b: 80; 10.0.0.9 collapses to b's 80; "10.0.0.10-..." < "10.0.0.9-...".
        assert_eq!(addrs(&g), vec![("10.0.0.10".into(), 80, 10), ("10.0.0.9".into(), 80, 80)]);
        assert_eq!(g.backends[1].svc, "b");
    }

    #[test]
    fn missing_service_and_port() {
        let svcs = vec![service("default", "a", &[("", 80, json!(80))])];
        let l = Lookup::new(&svcs, &[]);
        let e = resolve("g", &sg(json!([{"name": "a", "port": 81}, {"name": "zz", "port": 80}])), "default", &l)
            .unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].reason, e[0].field.as_str()), ("PortNotFound", "spec.serviceGroup.services[0].port"));
        assert_eq!((e[1].reason, e[1].field.as_str()), ("ServiceNotFound", "spec.serviceGroup.services[1]"));
        assert!(e[1].problem.contains("default/zz"));
    }

    #[test]
    fn service_upstream_uses_the_cluster_ip() {
        let mut with_ip = service("default", "a", &[("http", 80, json!(8080))]);
        with_ip.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.7".into());
        let mut headless = service("default", "h", &[("http", 81, json!(8081))]);
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let svcs = vec![with_ip, headless];
        let slices = vec![
            slice("default", "a", "a-1", &[("http", 8080)], &[("10.0.0.1", None), ("10.0.0.2", None)]),
            slice("default", "h", "h-1", &[("http", 8081)], &[("10.0.1.1", None)]),
        ];
        let lookup = Lookup::new(&svcs, &slices);
        let group = sg(json!([{"name": "a", "port": 80, "weight": 75}, {"name": "h", "port": 81, "weight": 25}]));
        let g = resolve_with("g", &group, "default", &lookup, "TCP", true).unwrap();
        assert_eq!(
            addrs(&g),
            vec![("10.0.1.1".into(), 8081, 25), ("10.96.0.7".into(), 80, 75)],
            "ClusterIP:port; the headless Service keeps its endpoints"
        );
        let g = resolve_with("g", &group, "default", &lookup, "TCP", false).unwrap();
        assert_eq!(g.backends.len(), 3, "endpoints without the flag");
    }

    #[test]
    fn external_name_ip_literal() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "192.168.1.1", "ports": [{"port": 443}]}
        }))
        .unwrap();
        let svcs = vec![svc];
        let l = Lookup::new(&svcs, &[]);
        let g = resolve("g", &sg(json!([{"name": "ext", "port": 443}])), "default", &l).unwrap();
        assert_eq!(addrs(&g), vec![("192.168.1.1".into(), 443, 100)]);
    }
}
