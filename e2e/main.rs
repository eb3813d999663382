//! End-to-end suites: real nginx + the Lua data plane + real backend processes on 127.0.0.1.
//! `dataplane`: policies pushed straight to the policy API (the Lua side of the contract).
//! `standalone`: manifests in a folder → `alb standalone` → nginx (the whole spine).
//! `controller`: `alb controller` against a real kube-apiserver (e2e/cluster/up).
//! `ingress_standalone`: Ingress manifests translated in memory by `alb standalone`.
//! `tls`: https listeners, certificates by SNI from TLS Secrets, HTTP/2, rotation without reloads.
//! `l7`: rule features (redirect, CORS, rewrite, headers, timeouts, retries, affinity, auth, WebSocket).
//! `l7_limits`: access lists, rate/connection limits, body size limits and error pages per rule.
//! `l4`: tcp/udp Frontends through nginx's stream module (weights, graceful reloads under HTTP load).
//! `grpc`: gRPC unary/streaming calls through grpc (h2c, TLS) and https Frontends, real grpcio server/client.
//! `metrics`: the Prometheus metrics server of the data plane (counters after known traffic, auth, clear).
//! `canary`: ingress-nginx canary, affinity and load-balancing annotations on Ingresses (standalone).
//! `annotations`: ingress-nginx/ALB Ingress annotations (standalone through nginx, Events through the API server).
//! `resolver`: forward auth to host names through nginx's `resolver` (a DNS server inside the test).
//! `controller_metrics`: the control plane's `alb_controller_*` metrics (admin `/metrics`), standalone and controller.

mod harness;

mod annotations;
mod canary;
mod controller;
mod controller_metrics;
mod crds;
mod dataplane;
mod grpc;
mod ingress_standalone;
mod l4;
mod l7;
mod l7_limits;
mod metrics;
mod operator;
mod resolver;
mod standalone;
mod tls;
