//! Command line: subcommands and their flags.

use crate::nginx::process::{ensure_token, find_lua_dir, prepare_runtime_dir, NginxBinary};
use crate::nginx::render::{ConfInput, HttpListener};
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "alb", version, about = "alb-rs: Kubernetes ingress gateway (Rust controller + nginx/Lua data plane)")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Serve a folder of manifests with no cluster: compile, run nginx, push, watch for changes.
    Standalone(crate::standalone::StandaloneArgs),
    /// Kubernetes controller of one ALB: watches the API server, compiles, runs/feeds nginx, syncs Ingresses.
    Controller(crate::controller::ControllerArgs),
    /// Operator: turns every ALB2 into its Deployment, Services, ConfigMaps, IngressClass and RBAC.
    Operator(crate::operator::OperatorArgs),
    /// Print the compiled policy for a folder of manifests (rejected objects go to stderr).
    Policy {
        /// Folder of manifests.
        #[arg(long)]
        manifests: PathBuf,
        /// Only Frontends/Rules labelled `alb2.<domain>/name=<NAME>`.
        #[arg(long)]
        alb_name: Option<String>,
        /// Label base domain.
        #[arg(long, default_value = "cpaas.io")]
        domain: String,
        /// Compile N more times and print the compile time (min / median / max, the objects already in
        /// memory) to stderr instead of the policy (profiling).
        #[arg(long, value_name = "N")]
        time: Option<u32>,
        #[command(flatten)]
        ingress: crate::standalone::IngressArgs,
    },
    /// Run nginx with the Lua data plane and nothing else: the policy API waits for policies (tests, debugging).
    Dataplane {
        #[command(flatten)]
        nginx: NginxArgs,
        /// HTTP listener port (repeatable).
        #[arg(long = "http-port")]
        http_ports: Vec<u16>,
    },
    /// Print the CRDs (ALB2, Frontend, Rule) generated from the Rust types, or write them to a folder.
    Crds {
        /// Write one file per CRD into this folder instead of printing a multi-document YAML.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Start a demo/test HTTP backend that echoes the request as JSON.
    EchoServer {
        /// Address to listen on (port 0 picks a free port; the chosen address is printed).
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Name reported in every answer (JSON field `backend`, header `x-backend`).
        #[arg(long, default_value = "echo")]
        name: String,
    },
}

/// Flags shared by every command that runs nginx.
#[derive(Args, Debug, Clone)]
pub struct NginxArgs {
    /// nginx or openresty binary (default: `openresty` or `nginx` on PATH).
    #[arg(long, env = "ALB_NGINX")]
    pub nginx: Option<PathBuf>,
    /// Directory holding the Lua data plane (`alb/*.lua`).
    #[arg(long, env = "ALB_LUA_DIR")]
    pub lua_dir: Option<PathBuf>,
    /// Where nginx.conf, the pid file, temp files and the policy token live.
    #[arg(long, env = "ALB_RUNTIME_DIR", default_value = ".runtime")]
    pub runtime_dir: PathBuf,
    /// Loopback port of the Lua policy API.
    #[arg(long, env = "ALB_API_PORT", default_value_t = 1937)]
    pub api_port: u16,
    /// Address the listeners bind to.
    #[arg(long, env = "ALB_BIND", default_value = "0.0.0.0")]
    pub bind: String,
    /// nginx worker processes (default: number of CPUs, at most 4).
    #[arg(long, env = "ALB_WORKERS")]
    pub workers: Option<u32>,
    /// nginx error log level.
    #[arg(long, default_value = "warn")]
    pub nginx_log_level: String,
    /// nginx access log: `off` or an absolute file path.
    #[arg(long, default_value = "off")]
    pub access_log: String,
    /// Metrics server port on `--bind` (`/metrics`, `/healthz`, `/clear`): HTTPS with a self-signed `localhost`
    /// certificate as the original ALB, plain HTTP requests answered too; 0 disables it and the per-request
    /// metrics.
    #[arg(long, env = "METRICS_PORT", default_value_t = 1936)]
    pub metrics_port: u16,
    /// Serve the metrics port in plain HTTP only (no TLS).
    #[arg(long, env = "ALB_METRICS_PLAIN_HTTP")]
    pub metrics_plain_http: bool,
    /// DNS server of nginx's `resolver` (forward auth URLs with host names): `ADDR` or `ADDR:PORT`, IPv6 as
    /// `[ADDR]:PORT` (repeatable, or comma-separated in the env variable). Default: the `nameserver` lines of
    /// /etc/resolv.conf; none there and no flag → no resolver, forward auth URLs must use IP addresses.
    #[arg(long = "resolver", env = "ALB_RESOLVER", value_delimiter = ',',
          value_parser = crate::nginx::resolv::parse_flag)]
    pub resolvers: Vec<crate::nginx::resolv::Nameserver>,
    /// resolv.conf whose `nameserver` lines are the default `--resolver`s.
    #[arg(long, env = "ALB_RESOLV_CONF", default_value = crate::nginx::resolv::RESOLV_CONF)]
    pub resolv_conf: PathBuf,
}

impl NginxArgs {
    /// nginx's DNS servers: the `--resolver` flags, else the resolv.conf nameservers (as recorded at start-up).
    pub fn nameservers(&self) -> Vec<crate::nginx::resolv::Nameserver> {
        if !self.resolvers.is_empty() {
            return self.resolvers.clone();
        }
        match crate::nginx::resolv::recorded() {
            Some(ns) => ns.to_vec(),
            None => crate::nginx::resolv::read_resolv_conf(&self.resolv_conf),
        }
    }

    /// Records nginx's nameservers for nginx.conf and the policy compiler, before the first compilation.
    fn record_resolver(&self) {
        let ns = self.nameservers();
        if ns.is_empty() {
            tracing::warn!(
                "no nameserver in {} and no --resolver: nginx gets no resolver, forward auth URLs must use IP \
                 addresses",
                self.resolv_conf.display()
            );
        }
        crate::nginx::resolv::record(ns);
    }

    /// Locates nginx + Lua, prepares the runtime dir and token; returns what nginx.conf needs.
    pub fn prepare(&self, listeners: Vec<HttpListener>) -> Result<(NginxBinary, ConfInput, String)> {
        let bin = NginxBinary::locate(self.nginx.as_deref())?;
        let mut input = self.conf_input(bin.modules.clone(), listeners)?;
        input.http2 = bin.http2;
        let token = ensure_token(&input.token_file())?;
        Ok((bin, input, token))
    }

    /// nginx.conf inputs from the flags (prepares the runtime dir); `modules` are the `load_module` paths.
    pub fn conf_input(&self, modules: Vec<PathBuf>, listeners: Vec<HttpListener>) -> Result<ConfInput> {
        let workers = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1).min(4));
        Ok(ConfInput {
            runtime_dir: prepare_runtime_dir(&self.runtime_dir)?,
            lua_dir: find_lua_dir(self.lua_dir.as_deref())?,
            modules,
            worker_processes: workers,
            worker_connections: 16384,
            api_port: self.api_port,
            bind_address: self.bind.clone(),
            http_listeners: listeners,
            error_log_level: self.nginx_log_level.clone(),
            access_log: self.access_log.clone(),
            policy_dict_size: "128m".into(),
            metrics_port: self.metrics_port,
            metrics_tls: !self.metrics_plain_http,
            http2: Default::default(),
            stream_listeners: Vec::new(),
            resolvers: self.nameservers(),
        })
    }
}

pub async fn dispatch(cli: Cli) -> Result<()> {
    match &cli.cmd {
        Cmd::Standalone(a) => a.nginx.record_resolver(),
        Cmd::Controller(a) => a.nginx.record_resolver(),
        Cmd::Dataplane { nginx, .. } => nginx.record_resolver(),
        _ => {}
    }
    match cli.cmd {
        Cmd::Standalone(args) => crate::standalone::run(args).await,
        Cmd::Controller(args) => crate::controller::run(args).await,
        Cmd::Operator(args) => crate::operator::run(args).await,
        Cmd::Policy { manifests, alb_name, domain, time, ingress } => {
            print_policy(&manifests, alb_name, domain, time, &ingress)
        }
        Cmd::Dataplane { nginx, http_ports } => crate::nginx::dataplane(nginx, http_ports).await,
        Cmd::Crds { out_dir } => write_crds(out_dir.as_deref()),
        Cmd::EchoServer { listen, name } => crate::echo::run(listen, name).await,
    }
}

fn print_policy(
    dir: &std::path::Path,
    alb_name: Option<String>,
    domain: String,
    time: Option<u32>,
    ingress: &crate::standalone::IngressArgs,
) -> Result<()> {
    let mut m = crate::manifests::ManifestDir::new(dir);
    let mut problems: Vec<String> = m.reload()?.iter().map(|p| p.to_string()).collect();
    let cfg = ingress.config(alb_name.as_deref(), &domain);
    let (mut snap, more, warnings) = crate::standalone::snapshot_with_ingresses(&m, &cfg, alb_name.as_deref());
    snap.tls_fallback = crate::compile::certs::TlsFallback::of(&cfg);
    problems.extend(more.iter().map(|p| p.to_string()));
    problems.extend(warnings.iter().map(|w| w.to_string()));
    let opts = crate::compile::CompileOptions { alb_name, domain, generation: 0 };
    if let Some(n) = time {
        let (mut ms, mut rules) = (Vec::new(), 0);
        // As the controller and standalone compile: after the previous policy (its rule keys are reused) and with
        // what the compilation before computed for the same objects (src/compile/cache.rs).
        let mut cache = crate::compile::cache::CompileCache::default();
        let mut prev = crate::compile::compile_cached(&snap, &opts, None, &mut cache).policy;
        for i in 0..n.max(1) {
            // As in the controller, one Rule changed since the compilation before (the weight of its first
            // Service, back and forth: its place in the order stays).
            if let Some(r) = snap.rules.first_mut() {
                let mut changed = crate::crd::Rule::clone(r);
                if let Some(s) = changed.spec.service_group.as_mut().and_then(|g| g.services.first_mut()) {
                    s.weight = Some(if i % 2 == 0 { 50 } else { 100 });
                }
                *r = std::sync::Arc::new(changed);
            }
            let t = std::time::Instant::now();
            let c = crate::compile::compile_cached(&snap, &opts, Some(&prev), &mut cache);
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            rules = c.policy.http.values().map(|p| p.rules.len()).sum::<usize>();
            prev = c.policy;
        }
        ms.sort_by(f64::total_cmp);
        eprintln!(
            "compile of {rules} rules: min {:.1} ms, median {:.1} ms, max {:.1} ms ({} runs, one Rule changed before each)",
            ms[0],
            ms[ms.len() / 2],
            ms[ms.len() - 1],
            ms.len()
        );
        return Ok(());
    }
    let compiled = crate::compile::compile(&snap, &opts);
    for p in problems {
        eprintln!("warning: {p}");
    }
    for r in &compiled.rejects {
        eprintln!("rejected {r}");
    }
    // Private keys of the certificates stay out of the output.
    let mut shown = crate::policy::Policy::clone(&compiled.policy);
    for c in shown.certificates.values_mut() {
        c.key = "<redacted>".into();
    }
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(())
}

fn write_crds(out_dir: Option<&std::path::Path>) -> Result<()> {
    for (file, crd) in crate::crd::all_crds()? {
        let yaml = crate::crd::crd_yaml(&crd)?;
        match out_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                std::fs::write(dir.join(file), yaml)?;
                eprintln!("wrote {}", dir.join(file).display());
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
