//! The real kube-apiserver + etcd of `e2e/cluster/up`, shared by every test of one test binary.
//! `Cluster::shared()` builds (or reuses the cached) binaries, starts a control plane for this test process
//! (its own run dir and ports: concurrent test runs do not interfere), applies our CRDs from `crds/`, and stops it
//! when the test process exits. With `ALB_E2E_RUN=DIR` it uses (or starts) the cluster in DIR instead and leaves
//! a cluster it did not start running.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
    /// Set for a private cluster (its own run dir, stopped by [`Cluster::down`]).
    pub run_dir: Option<PathBuf>,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static STARTED_HERE: OnceLock<bool> = OnceLock::new();
static RUN_DIR: OnceLock<PathBuf> = OnceLock::new();
/// Run dirs of private clusters, stopped at exit too (a test that panics never reaches its `down`).
static PRIVATE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
static AT_EXIT: std::sync::Once = std::sync::Once::new();

fn stop_everything_at_exit() {
    AT_EXIT.call_once(|| unsafe {
        atexit(stop_at_exit);
    });
}

extern "C" fn stop_at_exit() {
    let mut dirs: Vec<PathBuf> = PRIVATE.lock().map(|v| v.clone()).unwrap_or_default();
    if STARTED_HERE.get().copied().unwrap_or(false) && std::env::var_os("KEEP_CLUSTER").is_none() {
        dirs.extend(RUN_DIR.get().cloned());
    }
    for run in dirs {
        let _ = Command::new(super::repo_dir().join("e2e/cluster/down"))
            .env("ALB_E2E_RUN", run)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

extern "C" {
    fn atexit(cb: extern "C" fn()) -> i32;
}

fn last_line(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
}

impl Cluster {
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(|| {
            let repo = super::repo_dir();
            let build = Command::new(repo.join("e2e/cluster/build.sh")).output().expect("run e2e/cluster/build.sh");
            let bin_dir = PathBuf::from(last_line(&build, "e2e/cluster/build.sh"));
            // One control plane per test process (its own run dir and ports), so concurrent test runs never stop
            // each other's API server. ALB_E2E_RUN=DIR shares one started by hand (left running at exit).
            let (run_dir, already) = match std::env::var("ALB_E2E_RUN") {
                Ok(dir) => (PathBuf::from(&dir), Path::new(&dir).join("kubeconfig").exists()),
                Err(_) => (PathBuf::from(format!("/tmp/alb-e2e-cluster-{}", std::process::id())), false),
            };
            let _ = RUN_DIR.set(run_dir.clone());
            let up = Command::new(repo.join("e2e/cluster/up")).env("ALB_E2E_RUN", &run_dir).output().expect("run up");
            let kubeconfig = PathBuf::from(last_line(&up, "e2e/cluster/up"));
            let _ = STARTED_HERE.set(!already);
            stop_everything_at_exit();
            let c = Cluster { kubeconfig, bin_dir, run_dir: None };
            c.install_crds();
            c
        })
    }

    /// A cluster of its own (separate run dir and ports), for tests that stop the API server. Leaked so that
    /// helpers taking `&'static Cluster` work; call [`Cluster::down`] at the end.
    pub fn private(tag: &str) -> &'static Cluster {
        let repo = super::repo_dir();
        let run_dir = PathBuf::from(format!("/tmp/alb-e2e-{tag}-{}", std::process::id()));
        let build = Command::new(repo.join("e2e/cluster/build.sh")).output().expect("run e2e/cluster/build.sh");
        let bin_dir = PathBuf::from(last_line(&build, "e2e/cluster/build.sh"));
        let up = Command::new(repo.join("e2e/cluster/up")).env("ALB_E2E_RUN", &run_dir).output().expect("run up");
        let kubeconfig = PathBuf::from(last_line(&up, "e2e/cluster/up"));
        if let Ok(mut v) = PRIVATE.lock() {
            v.push(run_dir.clone());
        }
        stop_everything_at_exit();
        let c: &'static Cluster = Box::leak(Box::new(Cluster { kubeconfig, bin_dir, run_dir: Some(run_dir) }));
        c.install_crds();
        c
    }

    /// Stops a private cluster.
    pub fn down(&self) {
        if let Some(run) = &self.run_dir {
            let _ = Command::new(super::repo_dir().join("e2e/cluster/down")).env("ALB_E2E_RUN", run).output();
        }
    }

    fn pids_file(&self) -> PathBuf {
        self.run_dir.as_ref().expect("only private clusters can stop their API server").join("pids")
    }

    /// Stops kube-apiserver (etcd keeps running); returns its command line for [`Cluster::start_apiserver`].
    pub fn stop_apiserver(&self) -> Vec<String> {
        let pids = std::fs::read_to_string(self.pids_file()).expect("pids file");
        let pid: i32 = pids
            .lines()
            .find_map(|l| l.strip_prefix("kube-apiserver ").and_then(|r| r.split_whitespace().next()?.parse().ok()))
            .expect("kube-apiserver pid");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("apiserver cmdline");
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // SIGKILL: an abrupt outage (a graceful stop waits for watches to drain).
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}/cmdline")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z")
        {
            assert!(Instant::now() < deadline, "kube-apiserver did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        args
    }

    /// Starts kube-apiserver again with the same command line and waits until it answers.
    pub fn start_apiserver(&self, args: &[String]) {
        let run = self.run_dir.as_ref().expect("private cluster");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(run.join("logs/kube-apiserver.log"))
            .expect("log");
        let mut child = Command::new("setsid")
            .arg(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start kube-apiserver");
        // Keep `down` able to stop it: replace the recorded pid.
        let pids = std::fs::read_to_string(self.pids_file()).expect("pids file");
        let updated: Vec<String> = pids
            .lines()
            .map(|l| {
                if l.starts_with("kube-apiserver ") {
                    format!("kube-apiserver {} {}", child.id(), args[0])
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(self.pids_file(), updated.join("\n") + "\n").expect("write pids");
        // Reap it when `down` stops it.
        std::thread::spawn(move || child.wait());
        self.wait_for(&["get", "--raw", "/readyz"]);
    }

    fn install_crds(&self) {
        let repo = super::repo_dir();
        let out =
            self.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &repo.join("crds").to_string_lossy()]);
        assert!(out.status.success(), "applying crds/: {}", String::from_utf8_lossy(&out.stderr));
        self.wait_for(&["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"]);
    }

    pub fn kubectl_path(&self) -> PathBuf {
        let built = self.bin_dir.join("kubectl");
        if built.exists() {
            built
        } else {
            PathBuf::from("kubectl")
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(self.kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// kubectl with stdin; panics with kubectl's stderr on failure.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> String {
        use std::io::Write;
        let mut child = Command::new(self.kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        let out = child.wait_with_output().expect("kubectl");
        assert!(out.status.success(), "kubectl {args:?} failed: {}\n{input}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A kubeconfig (written to `path`) that authenticates as ServiceAccount `ns/sa` with a token from the
    /// TokenRequest API, as a pod of that ServiceAccount would: what the RBAC rules given to it allow, nothing more.
    pub fn service_account_kubeconfig(&self, ns: &str, sa: &str, path: &Path) -> PathBuf {
        let out = self.kubectl(&["create", "token", sa, "-n", ns, "--duration", "2h"]);
        let token = last_line(&out, &format!("kubectl create token {sa}"));
        let admin: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&self.kubeconfig).expect("read kubeconfig")).expect("yaml");
        let cluster = &admin["clusters"][0]["cluster"];
        let server = cluster["server"].as_str().expect("server");
        let ca = cluster["certificate-authority-data"].as_str().expect("certificate-authority-data");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: {sa}\n  user:\n    token: {token}\ncontexts:\n- \
             name: c\n  context:\n    cluster: c\n    user: {sa}\n    namespace: {ns}\ncurrent-context: c\n"
        );
        std::fs::write(path, text).expect("write the ServiceAccount kubeconfig");
        path.to_path_buf()
    }

    /// `kubectl apply -f -`.
    pub fn apply(&self, yaml: &str) -> String {
        self.kubectl_stdin(&["apply", "-f", "-"], yaml)
    }

    /// `kubectl delete -f -` (ignoring objects already gone).
    pub fn delete(&self, yaml: &str) -> String {
        self.kubectl_stdin(&["delete", "--ignore-not-found", "-f", "-"], yaml)
    }

    /// `kubectl get ... -o json` as a value (panics on failure).
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&a);
        assert!(out.status.success(), "kubectl {a:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("kubectl json")
    }

    fn wait_for(&self, args: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.kubectl(args);
            if out.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A fresh namespace for one test: `<prefix>-<pid>-<n>`.
    pub fn namespace(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let out = self.kubectl(&["create", "namespace", &name]);
        assert!(out.status.success(), "create namespace {name}: {}", String::from_utf8_lossy(&out.stderr));
        name
    }
}
