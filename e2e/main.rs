//! End-to-end suites: real nginx + the Lua data plane + real backend processes on 127.0.0.1.
//! `dataplane`: policies pushed straight to the policy API (the Lua side of the contract).
//! `standalone`: manifests in a folder → `alb standalone` → nginx (the whole spine).
//! `controller`: `alb controller` against a real kube-apiserver (e2e/cluster/up).
//! `ingress_standalone`: Ingress manifests translated in memory by `alb standalone`.
//! `tls`: https listeners, certificates by SNI from TLS Secrets, HTTP/2, rotation without reloads.
//! `metrics`: the Prometheus metrics server of the data plane (counters after known traffic, auth, clear).

mod harness;

mod controller;
mod crds;
mod dataplane;
mod ingress_standalone;
mod metrics;
mod operator;
mod standalone;
mod tls;
