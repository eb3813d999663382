//! e2e harness: starts real processes (`alb standalone`, `alb dataplane`, `alb echo-server`, nginx through
//! them) on 127.0.0.1 and talks plain HTTP/1.1 to them. Everything started is stopped on drop.
#![allow(dead_code)]

pub mod cluster;
pub mod http;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use http::{get, request, Conn, Resp};

pub fn alb_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_alb"))
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port that was free a moment ago.
///
/// Ports come from 10000–19999, below the kernel's ephemeral range (32768+, where port-0 binds and client
/// sockets land) and the test control plane's (20000–31999), each handed out once per test process (a
/// per-process offset keeps concurrent test runs apart), and only if nothing listens on it now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id() * 389 % 10000;
    for _ in 0..10000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10000 + ((base + n) % 10000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port left in 10000-19999");
}

/// A child process stopped with SIGTERM (then SIGKILL) on drop; its stderr lines are kept.
pub struct Proc {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
    pub what: String,
}

impl Proc {
    pub fn spawn(what: &str, cmd: &mut Command) -> Proc {
        let mut child =
            cmd.stdin(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().expect("stderr");
        let l2 = log.clone();
        let tag = what.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if std::env::var_os("E2E_VERBOSE").is_some() {
                    eprintln!("[{tag}] {line}");
                }
                l2.lock().unwrap().push(line);
            }
        });
        Proc { child, log, what: what.to_string() }
    }

    pub fn logs(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle` (counting only lines after `skip`); panics with the log.
    pub fn wait_log_after(&self, skip: usize, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.logs().iter().skip(skip).find(|l| l.contains(needle)) {
                return l.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: no log line with {needle:?} within {timeout:?}; log:\n{}",
                    self.what,
                    self.logs().join("\n")
                );
            }
            if let Ok(Some(st)) = self.child.try_wait_ref() {
                panic!("{} exited ({st}) while waiting for {needle:?}; log:\n{}", self.what, self.logs().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_log_after(0, needle, timeout)
    }

    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.child.id() as i32;
        unsafe {
            libc_kill(pid, 15);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

trait TryWaitRef {
    fn try_wait_ref(&self) -> std::io::Result<Option<std::process::ExitStatus>>;
}
impl TryWaitRef for Child {
    fn try_wait_ref(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        // Child::try_wait needs &mut; peek at /proc instead.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.id())).unwrap_or_default();
        if stat.is_empty() || stat.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')).unwrap_or(false) {
            use std::os::unix::process::ExitStatusExt;
            return Ok(Some(std::process::ExitStatus::from_raw(0)));
        }
        Ok(None)
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// A real HTTP backend process (`alb echo-server`) on 127.0.0.1.
pub struct Backend {
    pub name: String,
    pub port: u16,
    proc: Proc,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        let mut cmd = Command::new(alb_bin());
        cmd.args(["echo-server", "--listen", "127.0.0.1:0", "--name", name]).stdout(Stdio::piped());
        let mut proc = Proc::spawn(&format!("backend {name}"), &mut cmd);
        let out = proc.child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("echo-server prints its address");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse echo-server line {line:?}"));
        Backend { name: name.to_string(), port, proc }
    }

    pub fn stop(&mut self) {
        self.proc.terminate();
    }
}

/// Reads a worker/master pid set: the master from nginx.pid and its children.
pub fn nginx_pids(runtime_dir: &Path) -> Vec<i32> {
    let master: i32 =
        std::fs::read_to_string(runtime_dir.join("nginx.pid")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let mut out = vec![master];
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some((_, rest)) = stat.rsplit_once(')') {
                    if rest.split_whitespace().nth(1).and_then(|s| s.parse::<i32>().ok()) == Some(master) {
                        out.push(pid);
                    }
                }
            }
        }
    }
    out.sort();
    out
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix(prefix).tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// `alb standalone` on a temporary manifest folder.
pub struct Standalone {
    pub manifests: tempfile::TempDir,
    pub runtime: tempfile::TempDir,
    pub api_port: u16,
    pub proc: Proc,
}

impl Standalone {
    /// Writes `files` (name → YAML) and starts; returns once the first policy is applied.
    pub fn start(files: &[(&str, String)]) -> Standalone {
        Standalone::start_with(files, &[], &[])
    }

    /// Like [`Standalone::start`] with extra arguments (a `--metrics-port` among them replaces the free port
    /// chosen here) and environment variables.
    pub fn start_with(files: &[(&str, String)], args: &[&str], env: &[(&str, &str)]) -> Standalone {
        let manifests = tempdir("alb-e2e-manifests-");
        for (name, text) in files {
            std::fs::write(manifests.path().join(name), text).expect("write manifest");
        }
        let runtime = tempdir("alb-e2e-runtime-");
        let api_port = free_port();
        let mut cmd = Command::new(alb_bin());
        cmd.arg("standalone")
            .arg("--manifests")
            .arg(manifests.path())
            .arg("--runtime-dir")
            .arg(runtime.path())
            .args(["--api-port", &api_port.to_string(), "--bind", "127.0.0.1", "--workers", "2"])
            .env("ALB_LOG", "info");
        if !args.contains(&"--metrics-port") {
            cmd.args(["--metrics-port", &free_port().to_string()]);
        }
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn("alb standalone", &mut cmd);
        proc.wait_log("policy v1 applied", Duration::from_secs(20));
        Standalone { manifests, runtime, api_port, proc }
    }

    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.manifests.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.manifests.path().join(name)).expect("rename");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.manifests.path().join(name)).expect("remove");
    }

    pub fn pids(&self) -> Vec<i32> {
        nginx_pids(self.runtime.path())
    }

    /// Applies a change and waits until a policy generation is applied by every worker after it. Only exact when
    /// no earlier push is still in flight: after polling for an earlier change, wait for its log line first.
    pub fn change(&self, f: impl FnOnce(&Self)) -> String {
        let skip = self.proc.log_len();
        f(self);
        self.proc.wait_log_after(skip, "applied by", Duration::from_secs(10))
    }
}

/// `alb dataplane`: nginx + Lua only; tests push policies themselves.
pub struct Dataplane {
    pub runtime: tempfile::TempDir,
    pub api_port: u16,
    pub http_ports: Vec<u16>,
    /// Metrics server (`/metrics`, `/healthz`, `/clear`).
    pub metrics_port: u16,
    pub token: String,
    pub proc: Proc,
}

impl Dataplane {
    pub fn start(n_ports: usize) -> Dataplane {
        Dataplane::start_with(n_ports, &[], &[])
    }

    /// [`Dataplane::start`] with more `alb dataplane` arguments and environment (e.g. `--nginx-log-level notice`
    /// and `ALB_LOG=info,nginx=debug`, for the workers' "applied policy version" lines in `proc.logs()`).
    pub fn start_with(n_ports: usize, args: &[&str], env: &[(&str, &str)]) -> Dataplane {
        let runtime = tempdir("alb-e2e-dp-");
        let api_port = free_port();
        let http_ports: Vec<u16> = (0..n_ports).map(|_| free_port()).collect();
        let metrics_port = free_port();
        let mut cmd = Command::new(alb_bin());
        cmd.arg("dataplane").arg("--runtime-dir").arg(runtime.path()).args([
            "--api-port",
            &api_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--workers",
            "2",
            "--metrics-port",
            &metrics_port.to_string(),
        ]);
        for p in &http_ports {
            cmd.args(["--http-port", &p.to_string()]);
        }
        cmd.args(args).envs(env.iter().copied());
        let proc = Proc::spawn("alb dataplane", &mut cmd);
        proc.wait_log("data plane ready", Duration::from_secs(20));
        let token = std::fs::read_to_string(runtime.path().join("policy-token")).expect("token").trim().to_string();
        Dataplane { runtime, api_port, http_ports, metrics_port, token, proc }
    }

    pub fn api(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Resp {
        let mut headers = vec![];
        let auth;
        if let Some(t) = token {
            auth = format!("Bearer {t}");
            headers.push(("Authorization", auth.as_str()));
        }
        request(self.api_port, method, path, &headers, body)
    }

    /// PUTs a policy and waits until every worker applied it. Panics on refusal.
    pub fn push(&self, policy: &serde_json::Value) -> String {
        let body = serde_json::to_vec(policy).unwrap();
        let r = self.api("PUT", "/policy", Some(&self.token.clone()), &body);
        assert_eq!(r.status, 200, "PUT /policy: {}", r.body);
        let digest = r.json()["digest"].as_str().expect("digest").to_string();
        self.wait_applied(&digest);
        digest
    }

    pub fn status(&self) -> serde_json::Value {
        self.api("GET", "/status", Some(&self.token.clone()), b"").json()
    }

    pub fn wait_applied(&self, digest: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.status();
            let n = s["worker_count"].as_u64().unwrap_or(0);
            let ok =
                s["workers"].as_array().map(|w| w.iter().filter(|w| w["digest"] == digest).count() as u64).unwrap_or(0);
            if n > 0 && ok >= n {
                return;
            }
            assert!(Instant::now() < deadline, "workers did not apply {digest}: {s}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pids(&self) -> Vec<i32> {
        nginx_pids(self.runtime.path())
    }
}
