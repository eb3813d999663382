//! Running nginx: find the binary and its Lua module, lay out the runtime dir, start it in its own session,
//! reload with HUP only when nginx.conf changed, stop it with QUIT.

use super::render::{render, ConfInput, Http2Syntax};
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

const DEBIAN_MODULES: &str = "/usr/lib/nginx/modules";

/// The pid of the nginx master this process started and has not stopped (0: none), for [`stop_spawned_at_once`].
static SPAWNED: AtomicI32 = AtomicI32::new(0);

/// Ends the nginx this process started, if any, with TERM (nginx's fast shutdown), without waiting. For the
/// panic hook (`src/main.rs`): a panic ends the process without running destructors, and an nginx left behind in
/// its own session would keep the listeners' ports, so that alb could not start again.
pub fn stop_spawned_at_once() {
    let pid = SPAWNED.swap(0, Ordering::SeqCst);
    if pid > 0 {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// The nginx binary and the `load_module` lines it needs for Lua.
#[derive(Debug, Clone)]
pub struct NginxBinary {
    pub path: PathBuf,
    pub modules: Vec<PathBuf>,
    pub version: String,
    /// How this version turns HTTP/2 on (from `version`).
    pub http2: Http2Syntax,
}

impl NginxBinary {
    /// `explicit` (from `--nginx`) or the first of `openresty`, `nginx` on PATH.
    pub fn locate(explicit: Option<&Path>) -> Result<NginxBinary> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => ["openresty", "nginx"]
                .iter()
                .find_map(|n| which(n))
                .context("no nginx found: install Debian's nginx + libnginx-mod-http-lua (scripts/setup.sh does) or OpenResty, or pass --nginx PATH")?,
        };
        let out = Command::new(&path).arg("-V").output().with_context(|| format!("cannot run {}", path.display()))?;
        let info = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        let version =
            info.lines().find_map(|l| l.split_once("version: ").map(|(_, v)| v.trim().to_string())).unwrap_or_default();
        let builtin_lua =
            info.contains("lua-nginx-module") || info.contains("ngx_lua") || version.contains("openresty");
        let mut modules = Vec::new();
        if !builtin_lua {
            for m in ["ndk_http_module.so", "ngx_http_lua_module.so"] {
                let p = Path::new(DEBIAN_MODULES).join(m);
                if !p.exists() {
                    bail!(
                        "{} ({version}) has no Lua module: {} is missing. Install libnginx-mod-http-lua (scripts/setup.sh) or use OpenResty",
                        path.display(),
                        p.display()
                    );
                }
                modules.push(p);
            }
            if !Path::new("/usr/share/lua/5.1/resty/core.lua").exists() {
                bail!("lua-resty-core is missing (/usr/share/lua/5.1/resty/core.lua): install lua-resty-core (scripts/setup.sh)");
            }
            if !Path::new("/usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so").exists()
                && !Path::new("/usr/lib/aarch64-linux-gnu/lua/5.1/cjson.so").exists()
            {
                bail!("lua-cjson is missing: install lua-cjson (scripts/setup.sh)");
            }
        }
        // L4 listeners need the stream module: Debian builds it as a module (libnginx-mod-stream), OpenResty in.
        let stream = Path::new(DEBIAN_MODULES).join("ngx_stream_module.so");
        if info.contains("--with-stream=dynamic") && stream.exists() {
            modules.push(stream);
        }
        let http2 = Http2Syntax::for_version(&version);
        Ok(NginxBinary { path, modules, version, http2 })
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/local/openresty/bin", "/usr/local/openresty/nginx/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Where `alb/lua` lives: `--lua-dir`, `$ALB_LUA_DIR`, next to the binary's repo, or the image path.
pub fn find_lua_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    }
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lua"));
    if let Ok(exe) = std::env::current_exe() {
        for anc in exe.ancestors().skip(1).take(4) {
            candidates.push(anc.join("lua"));
        }
    }
    candidates.push(PathBuf::from("/alb/lua"));
    for c in &candidates {
        if c.join("alb/phase.lua").is_file() {
            return c.canonicalize().with_context(|| format!("{}", c.display()));
        }
    }
    bail!("cannot find the Lua data plane (alb/phase.lua) in any of {candidates:?}; pass --lua-dir")
}

/// The runtime dir: conf/, tmp/, logs/, nginx.pid and the policy token.
pub fn prepare_runtime_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir.join("conf")).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::create_dir_all(dir.join("tmp"))?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let dir = dir.canonicalize()?;
    // Workers run as an unprivileged user when the master is root: they must traverse the dir.
    for d in [dir.clone(), dir.join("tmp"), dir.join("logs")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
    }
    crate::tls::ensure_runtime_certs(&dir)?;
    Ok(dir)
}

/// Reuses the token file if present (a restarted controller keeps talking to the running nginx),
/// else writes a new random one, mode 0600 (read by the nginx master in init_by_lua).
pub fn ensure_token(path: &Path) -> Result<String> {
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_string();
        if t.len() >= 32 {
            return Ok(t);
        }
    }
    let bytes: [u8; 24] = rand::random();
    let token = hex::encode(bytes);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &token)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(token)
}

pub struct Nginx {
    bin: NginxBinary,
    input: ConfInput,
    child: Option<Child>,
}

impl Nginx {
    pub fn new(bin: NginxBinary, input: ConfInput) -> Nginx {
        Nginx { bin, input, child: None }
    }

    pub fn input(&self) -> &ConfInput {
        &self.input
    }

    fn conf_path(&self) -> PathBuf {
        self.input.runtime_dir.join("conf/nginx.conf")
    }

    fn write_conf(&self, input: &ConfInput) -> Result<PathBuf> {
        let text = render(input)?;
        let path = input.runtime_dir.join("conf/nginx.conf.new");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// `nginx -t` on a rendered file; the error text is nginx's own.
    fn test_conf(&self, path: &Path) -> Result<()> {
        let out = Command::new(&self.bin.path)
            .arg("-t")
            .arg("-q")
            .arg("-p")
            .arg(format!("{}/", self.input.runtime_dir.display()))
            .arg("-c")
            .arg(path)
            .output()
            .context("running nginx -t")?;
        if !out.status.success() {
            bail!("nginx refused the rendered configuration: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    pub fn start(&mut self) -> Result<()> {
        let new = self.write_conf(&self.input)?;
        self.test_conf(&new)?;
        std::fs::rename(&new, self.conf_path())?;
        let mut cmd = Command::new(&self.bin.path);
        cmd.arg("-p")
            .arg(format!("{}/", self.input.runtime_dir.display()))
            .arg("-c")
            .arg(self.conf_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Own session: signals to our process group do not hit nginx, and it is never left defunct.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {}", self.bin.path.display()))?;
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if line.contains("[emerg]")
                        || line.contains("[alert]")
                        || line.contains("[crit]")
                        || line.contains("[error]")
                    {
                        tracing::warn!(target: "nginx", "{line}");
                    } else {
                        tracing::debug!(target: "nginx", "{line}");
                    }
                }
            });
        }
        let pid = child.id();
        SPAWNED.store(pid as i32, Ordering::SeqCst);
        self.child = Some(child);
        // Wait until the master wrote its pid file (it has bound its ports by then) or died.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.exited() {
                bail!("nginx exited at start with {status}; see the nginx lines above");
            }
            if std::fs::read_to_string(self.input.runtime_dir.join("nginx.pid"))
                .map(|s| s.trim() == pid.to_string())
                .unwrap_or(false)
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("nginx did not write its pid file within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(pid, version = %self.bin.version, "nginx started");
        Ok(())
    }

    /// Re-render; reload (HUP) only if nginx.conf changed. Returns whether it reloaded.
    pub fn apply(&mut self, input: ConfInput) -> Result<bool> {
        if input == self.input {
            return Ok(false);
        }
        let new = self.write_conf(&input)?;
        self.test_conf(&new)?;
        std::fs::rename(&new, self.conf_path())?;
        let what = super::render::reload_reason(&self.input, &input);
        self.input = input;
        let pid = self.master_pid().context("nginx is not running")?;
        kill(Pid::from_raw(pid), Signal::SIGHUP).context("sending HUP to nginx")?;
        tracing::info!(pid, listeners = ?self.input.http_listeners.iter().map(|l| l.port).collect::<Vec<_>>(), "nginx reloaded: {what}");
        Ok(true)
    }

    pub fn master_pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// `Some(status)` when nginx has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Graceful stop: QUIT, then KILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = SPAWNED.compare_exchange(pid.as_raw(), 0, Ordering::SeqCst, Ordering::SeqCst);
            let _ = kill(pid, Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    tracing::info!("nginx stopped");
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait();
            tracing::warn!("nginx did not stop within 10 s: killed");
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn the_panic_hook_ends_the_spawned_nginx() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        SPAWNED.store(child.id() as i32, Ordering::SeqCst);
        stop_spawned_at_once();
        let status = child.wait().expect("sleep ends");
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status:?}");
        assert_eq!(SPAWNED.load(Ordering::SeqCst), 0, "forgotten once stopped");
    }
}
