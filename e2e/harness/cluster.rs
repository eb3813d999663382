//! The real kube-apiserver + etcd of `e2e/cluster/up`, shared by every test of one test binary.
//! `Cluster::shared()` builds (or reuses the cached) binaries, starts the control plane once, applies our CRDs
//! from `crds/`, and stops it when the test binary exits (unless it was already running: then it is left up).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static STARTED_HERE: OnceLock<bool> = OnceLock::new();

extern "C" fn stop_at_exit() {
    if STARTED_HERE.get().copied().unwrap_or(false) && std::env::var_os("KEEP_CLUSTER").is_none() {
        let _ = Command::new(super::repo_dir().join("e2e/cluster/down"))
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
            let already = Path::new(&std::env::var("ALB_E2E_RUN").unwrap_or_else(|_| "/tmp/alb-e2e-cluster".into()))
                .join("kubeconfig")
                .exists();
            let up = Command::new(repo.join("e2e/cluster/up")).output().expect("run e2e/cluster/up");
            let kubeconfig = PathBuf::from(last_line(&up, "e2e/cluster/up"));
            let _ = STARTED_HERE.set(!already);
            unsafe {
                atexit(stop_at_exit);
            }
            let c = Cluster { kubeconfig, bin_dir };
            let out =
                c.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &repo.join("crds").to_string_lossy()]);
            assert!(out.status.success(), "applying crds/: {}", String::from_utf8_lossy(&out.stderr));
            c.wait_for(&["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"]);
            c
        })
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
