//! nginx.conf from `nginx-templates/nginx.conf.hbs`. The template only ever receives numbers, enums and
//! paths that we checked: no user text reaches nginx.conf.

use anyhow::{bail, Context, Result};
use handlebars::{handlebars_helper, Handlebars};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub use super::stream::StreamListener;

const TEMPLATE: &str = include_str!("../../nginx-templates/nginx.conf.hbs");

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HttpListener {
    /// Frontend name: only used in a comment, checked by [`safe_name`].
    pub name: String,
    pub port: u16,
    /// https: `listen ... ssl` + HTTP/2, certificates chosen per handshake by `lua/alb/ssl.lua`.
    pub tls: bool,
    /// A grpc Frontend: every request goes to `grpc_pass`; without `tls` the listener speaks h2c (HTTP/2 with
    /// prior knowledge, no HTTP/1).
    #[serde(default)]
    pub grpc: bool,
}

/// How this nginx turns HTTP/2 on for a TLS listener: `listen ... ssl http2` up to 1.25.0, the `http2 on;`
/// directive from 1.25.1 (where the listen parameter is deprecated).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub enum Http2Syntax {
    /// `listen <addr>:<port> ssl http2` (Debian 12's nginx 1.22). The default when the version is unknown: it
    /// also works, with a deprecation warning, on newer nginx.
    #[default]
    ListenParameter,
    /// `http2 on;` (nginx >= 1.25.1, current OpenResty).
    Directive,
}

impl Http2Syntax {
    /// From `nginx -V`'s version, e.g. `nginx/1.22.1` or `openresty/1.27.1.2` (OpenResty's first three numbers are
    /// nginx's).
    pub fn for_version(version: &str) -> Http2Syntax {
        let nums: Vec<u32> = version
            .split_once('/')
            .map_or(version, |(_, v)| v)
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        match nums.as_slice() {
            [a, b, c] if (*a, *b, *c) >= (1, 25, 1) => Http2Syntax::Directive,
            _ => Http2Syntax::ListenParameter,
        }
    }
}

/// Everything nginx.conf depends on. Two equal values render the same file, so comparing
/// `ConfInput`s is how we decide whether a reload is needed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConfInput {
    pub runtime_dir: PathBuf,
    pub lua_dir: PathBuf,
    pub modules: Vec<PathBuf>,
    pub worker_processes: u32,
    pub worker_connections: u32,
    pub api_port: u16,
    pub bind_address: String,
    pub http_listeners: Vec<HttpListener>,
    pub error_log_level: String,
    /// `off` or an absolute path.
    pub access_log: String,
    pub policy_dict_size: String,
    /// Metrics/health server port on `bind_address` (`/metrics`, `/healthz`, `/clear`); 0 = no metrics server
    /// and no per-request metrics hook.
    pub metrics_port: u16,
    /// The metrics port speaks HTTPS (self-signed `localhost` certificate, `src/tls.rs`) and still answers plain
    /// HTTP requests; false = plain HTTP only (`--metrics-plain-http`).
    pub metrics_tls: bool,
    /// HTTP/2 syntax of this nginx (TLS and grpc listeners).
    pub http2: Http2Syntax,
    /// tcp/udp Frontends, rendered into `stream {}` (`src/nginx/stream.rs`).
    pub stream_listeners: Vec<StreamListener>,
    /// DNS servers of the `resolver` directive (`src/nginx/resolv.rs`); empty = no resolver, forward auth URLs
    /// must then use IP addresses.
    pub resolvers: Vec<super::resolv::Nameserver>,
}

impl ConfInput {
    pub fn token_file(&self) -> PathBuf {
        self.runtime_dir.join("policy-token")
    }

    /// Self-signed certificate nginx needs on an `ssl` listener to start; never served (`lua/alb/ssl.lua`
    /// replaces it on every handshake or fails it). Written by `prepare_runtime_dir`.
    pub fn placeholder_cert(&self) -> PathBuf {
        self.runtime_dir.join(crate::tls::PLACEHOLDER_CERT)
    }

    pub fn placeholder_key(&self) -> PathBuf {
        self.runtime_dir.join(crate::tls::PLACEHOLDER_KEY)
    }
}

/// Why nginx.conf changed from `old` to `new`, for the reload log line: `listeners changed` (ports, TLS, grpc) or
/// `stream backends changed` (only the rendered L4 upstreams or timeouts, see `stream.rs`).
pub fn reload_reason(old: &ConfInput, new: &ConfInput) -> &'static str {
    let ports = |i: &ConfInput| i.stream_listeners.iter().map(|l| (l.port, l.proto)).collect::<Vec<_>>();
    if old.http_listeners == new.http_listeners
        && ports(old) == ports(new)
        && old.stream_listeners != new.stream_listeners
    {
        "stream backends changed"
    } else {
        "listeners changed"
    }
}

/// Only characters that are inert in nginx.conf and Lua strings.
fn safe_path(p: &Path) -> Result<String> {
    let s = p.to_str().context("path is not UTF-8")?;
    if !p.is_absolute() {
        bail!("path {s:?} must be absolute");
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c)) {
        bail!("path {s:?} has characters we refuse to put into nginx.conf (allowed: letters, digits, / . _ - +)");
    }
    Ok(s.to_string())
}

fn safe_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

handlebars_helper!(lua_str: |s: str| {
    // Only called with paths already checked by safe_path; quote anyway.
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
});

pub fn render(input: &ConfInput) -> Result<String> {
    let runtime_dir = safe_path(&input.runtime_dir)?;
    let lua_dir = safe_path(&input.lua_dir)?;
    let mut modules = Vec::new();
    for m in &input.modules {
        modules.push(safe_path(m)?);
    }
    let token_file = safe_path(&input.token_file())?;
    if input.bind_address.parse::<std::net::IpAddr>().is_err() {
        bail!("bind address {:?} is not an IP address", input.bind_address);
    }
    let bind = match input.bind_address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(a)) => format!("[{a}]"),
        _ => input.bind_address.clone(),
    };
    if !["debug", "info", "notice", "warn", "error", "crit"].contains(&input.error_log_level.as_str()) {
        bail!("error log level {:?} is not one of debug, info, notice, warn, error, crit", input.error_log_level);
    }
    let access_log =
        if input.access_log == "off" { "off".to_string() } else { safe_path(Path::new(&input.access_log))? };
    let dict = &input.policy_dict_size;
    if !(dict.len() > 1
        && dict[..dict.len() - 1].chars().all(|c| c.is_ascii_digit())
        && (dict.ends_with('m') || dict.ends_with('k')))
    {
        bail!("policy dict size {dict:?} must look like 64m");
    }
    if input.metrics_port != 0 && input.metrics_port == input.api_port {
        bail!("metrics port {} is the policy API port", input.metrics_port);
    }
    let mut seen = std::collections::BTreeSet::new();
    for l in &input.http_listeners {
        if !safe_name(&l.name) {
            bail!("listener name {:?} is not a DNS-style name", l.name);
        }
        if l.port == 0 || l.port == input.api_port || !seen.insert(l.port) {
            bail!("listener port {} is zero, duplicated or the policy API port", l.port);
        }
        if l.port == input.metrics_port {
            bail!("listener port {} is the metrics port", l.port);
        }
    }
    let mut taken: std::collections::BTreeSet<u16> = seen;
    taken.insert(input.api_port);
    if input.metrics_port != 0 {
        taken.insert(input.metrics_port);
    }
    super::stream::validate(&input.stream_listeners, &taken)?;
    let stream_conf = super::stream::render_block(&input.stream_listeners, &bind);
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("lua_str", Box::new(lua_str));
    hb.register_template_string("nginx", TEMPLATE).context("nginx template does not parse")?;
    let data = serde_json::json!({
        "runtime_dir": runtime_dir,
        "lua_dir": lua_dir,
        "modules": modules,
        "token_file": token_file,
        "worker_processes": input.worker_processes.max(1),
        "worker_connections": input.worker_connections.max(64),
        "api_port": input.api_port,
        "bind_address": bind,
        "http_listeners": input.http_listeners,
        "error_log_level": input.error_log_level,
        "access_log": access_log,
        "policy_dict_size": dict,
        "metrics_port": input.metrics_port,
        "metrics_tls": input.metrics_tls,
        "metrics_cert": safe_path(&input.runtime_dir.join(crate::tls::METRICS_CERT))?,
        "metrics_key": safe_path(&input.runtime_dir.join(crate::tls::METRICS_KEY))?,
        "placeholder_cert": safe_path(&input.placeholder_cert())?,
        "placeholder_key": safe_path(&input.placeholder_key())?,
        "http2_listen_parameter": input.http2 == Http2Syntax::ListenParameter,
        "http2_directive": input.http2 == Http2Syntax::Directive,
        "stream_conf": stream_conf,
        "resolver": super::resolv::directive(&input.resolvers).unwrap_or_default(),
    });
    hb.render("nginx", &data).context("rendering nginx.conf")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ConfInput {
        ConfInput {
            runtime_dir: "/tmp/alb".into(),
            lua_dir: "/opt/alb/lua".into(),
            modules: vec!["/usr/lib/nginx/modules/ndk_http_module.so".into()],
            worker_processes: 2,
            worker_connections: 1024,
            api_port: 1937,
            bind_address: "0.0.0.0".into(),
            http_listeners: vec![HttpListener { name: "alb-00080".into(), port: 80, tls: false, grpc: false }],
            error_log_level: "notice".into(),
            access_log: "off".into(),
            policy_dict_size: "64m".into(),
            metrics_port: 1936,
            metrics_tls: false,
            http2: Http2Syntax::ListenParameter,
            stream_listeners: vec![],
            resolvers: vec![],
        }
    }

    #[test]
    fn renders_listeners_modules_and_api() {
        let conf = render(&input()).unwrap();
        assert!(conf.contains("load_module /usr/lib/nginx/modules/ndk_http_module.so;"));
        assert!(conf.contains("listen 0.0.0.0:80 default_server"));
        assert!(conf.contains("listen 127.0.0.1:1937;"));
        assert!(conf.contains("token_file = \"/tmp/alb/policy-token\""));
        assert!(conf.contains("pid /tmp/alb/nginx.pid;"));
        // keepalive must follow balancer_by_lua or nginx silently drops it
        let b = conf.find("balancer_by_lua_block").unwrap();
        let k = conf.find("keepalive 320;").unwrap();
        assert!(b < k);
        // `location /` proxies with a fixed URL (http backends); @alb_hf takes the scheme from the variable
        let hf = conf.find("location @alb_hf {").unwrap();
        let loc = conf[..hf].rfind("location / {").unwrap();
        let root_pass = conf[loc..hf].find("proxy_pass ").map(|p| &conf[loc + p..]).unwrap();
        assert!(root_pass.starts_with("proxy_pass http://alb_http_backend;"));
        assert!(conf[hf..].contains("proxy_pass $alb_backend_scheme://alb_http_backend;"));
    }

    #[test]
    fn ipv6_bind_is_bracketed() {
        let mut i = input();
        i.bind_address = "::".into();
        assert!(render(&i).unwrap().contains("listen [::]:80 "));
    }

    #[test]
    fn refuses_unsafe_values() {
        let mut i = input();
        i.runtime_dir = "/tmp/a;b".into();
        assert!(render(&i).is_err());
        let mut i = input();
        i.runtime_dir = "relative".into();
        assert!(render(&i).is_err());
        let mut i = input();
        i.http_listeners[0].name = "x; include /etc/passwd".into();
        assert!(render(&i).is_err());
        let mut i = input();
        i.bind_address = "0.0.0.0; evil".into();
        assert!(render(&i).is_err());
        let mut i = input();
        i.http_listeners.push(HttpListener { name: "b".into(), port: 80, tls: false, grpc: false });
        assert!(render(&i).is_err());
    }

    #[test]
    fn metrics_server_and_log_hook_follow_the_metrics_port() {
        let conf = render(&input()).unwrap();
        assert!(conf.contains("listen 0.0.0.0:1936;"));
        assert!(conf.contains("lua_shared_dict alb_metrics 20m;"));
        assert!(conf.contains("env METRICS_AUTH;"));
        assert!(conf.contains("require(\"alb.metrics\").init({ enabled = true })"));
        assert!(conf.contains("location = /metrics"));
        // the log hook is at server level, so it also runs for @alb_error's answers
        let server = conf.find("# frontend alb-00080").unwrap();
        let hook = conf[server..].find("log_by_lua_block").unwrap();
        let loc = conf[server..].find("location /").unwrap();
        assert!(hook < loc);
        // the listener's port is passed, not read; what the log phase counts is read by Lua, no map formats it
        assert!(!conf.contains("$alb_log"));
        assert!(conf[server..].contains("require(\"alb.phase\").log(\"80\")"));
        assert!(conf[server..].contains("require(\"alb.phase\").rewrite(\"80\")"));

        let mut i = input();
        i.metrics_port = 0;
        let conf = render(&i).unwrap();
        assert!(!conf.contains("1936"));
        assert!(!conf.contains("alb_metrics"));
        // the server-level log hook stays (config.limit.connections; Lua skips the metrics when they are off)
        assert!(conf.contains("require(\"alb.phase\").log(\"80\")"));
    }

    #[test]
    fn metrics_port_speaks_https_and_answers_plain_http() {
        let mut i = input();
        i.metrics_tls = true;
        let conf = render(&i).unwrap();
        let server = &conf[conf.find("# Metrics and health").unwrap()..conf.find("# frontend alb-00080").unwrap()];
        assert!(server.contains("listen 0.0.0.0:1936 ssl;"), "{server}");
        assert!(server.contains("ssl_certificate /tmp/alb/conf/metrics.crt;"), "{server}");
        assert!(server.contains("ssl_certificate_key /tmp/alb/conf/metrics.key;"), "{server}");
        assert!(server.contains("error_page 497 = $uri;"), "{server}");
        assert!(!server.contains("ssl_certificate_by_lua"), "a static certificate: {server}");
        assert!(!render(&input()).unwrap().contains("metrics.crt"), "plain HTTP: no certificate");
    }

    #[test]
    fn metrics_port_must_not_collide() {
        let mut i = input();
        i.metrics_port = 80;
        assert!(render(&i).is_err());
        let mut i = input();
        i.metrics_port = 1937;
        assert!(render(&i).is_err());
    }

    #[test]
    fn tls_listeners_use_ssl_lua_and_the_http2_syntax_of_the_version() {
        let mut i = input();
        i.http_listeners.push(HttpListener { name: "alb-00443".into(), port: 443, tls: true, grpc: false });
        let conf = render(&i).unwrap();
        assert!(conf.contains("listen 0.0.0.0:443 ssl http2 default_server"), "{conf}");
        assert!(!conf.contains("http2 on;"));
        assert!(conf.contains("ssl_certificate /tmp/alb/conf/placeholder.crt;"));
        assert!(conf.contains("ssl_certificate_key /tmp/alb/conf/placeholder.key;"));
        assert!(conf.contains("require(\"alb.ssl\").certificate()"));
        assert!(conf.contains("env FallbackDefaultPortCert;"));
        // the plain listener stays plain
        assert!(conf.contains("listen 0.0.0.0:80 default_server"));
        assert_eq!(conf.matches("ssl_certificate_by_lua_block").count(), 1);

        i.http2 = Http2Syntax::Directive;
        let conf = render(&i).unwrap();
        assert!(conf.contains("listen 0.0.0.0:443 ssl default_server"), "{conf}");
        assert!(conf.contains("http2 on;"));

        assert_eq!(Http2Syntax::for_version("nginx/1.22.1"), Http2Syntax::ListenParameter);
        assert_eq!(Http2Syntax::for_version("nginx/1.25.0"), Http2Syntax::ListenParameter);
        assert_eq!(Http2Syntax::for_version("nginx/1.25.1"), Http2Syntax::Directive);
        assert_eq!(Http2Syntax::for_version("openresty/1.27.1.2"), Http2Syntax::Directive);
        assert_eq!(Http2Syntax::for_version("openresty/1.21.4.3"), Http2Syntax::ListenParameter);
        assert_eq!(Http2Syntax::for_version(""), Http2Syntax::ListenParameter);
    }

    #[test]
    fn resolver_line_only_with_nameservers() {
        let conf = render(&input()).unwrap();
        assert!(!conf.contains("\n    resolver "), "no nameserver, no resolver line");
        assert!(conf.contains("require(\"alb.features.auth\").init({ resolver = false })"));

        let mut i = input();
        let p = |s: &str| super::super::resolv::parse_flag(s).unwrap();
        i.resolvers = vec![p("127.0.0.1:5353"), p("10.96.0.10")];
        let conf = render(&i).unwrap();
        assert!(conf.contains("\n    resolver 127.0.0.1:5353 10.96.0.10 valid=30s ipv6=off;\n"), "{conf}");
        assert!(conf.contains("resolver_timeout 5s;"));
        assert!(conf.contains("require(\"alb.features.auth\").init({ resolver = true })"));
        // the directive sits in the http block
        assert!(conf.find("http {").unwrap() < conf.find("resolver 127").unwrap());
        assert!(conf.find("resolver 127").unwrap() < conf.find("init_by_lua_block").unwrap());

        i.resolvers = vec![p("fd00::10")];
        assert!(render(&i).unwrap().contains("resolver [fd00::10] valid=30s;"));

        // hostile resolv.conf content: only parsed addresses get through
        let (ns, _) = super::super::resolv::parse_resolv_conf(
            "nameserver 10.0.0.1;\nnameserver 10.0.0.2 ;include /etc/passwd;\nnameserver }\nnameserver a\"b\n",
        );
        i.resolvers = ns;
        let conf = render(&i).unwrap();
        assert!(conf.contains("resolver 10.0.0.2 valid=30s ipv6=off;"), "{conf}");
        assert!(!conf.contains("passwd") && !conf.contains("10.0.0.1") && !conf.contains("a\"b"));
    }

    #[test]
    fn same_input_same_output() {
        assert_eq!(render(&input()).unwrap(), render(&input()).unwrap());
    }
}
