//! The nginx the controller feeds: one it started itself (`--spawn-nginx`, supervised like `alb standalone`
//! does) or a sidecar sharing the runtime dir (we write nginx.conf and HUP the pid in `<runtime>/nginx.pid`).

use crate::cli::NginxArgs;
use crate::nginx::process::{ensure_token, Nginx, NginxBinary};
use crate::nginx::render::{reload_reason, render, ConfInput, HttpListener, StreamListener};
use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("nginx refused the rendered configuration: {0}")]
    ConfRefused(String),
    #[error("cannot signal the nginx sidecar: {0}")]
    Signal(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// An nginx sidecar: same runtime dir, its own process.
pub struct Sidecar {
    /// Used for `nginx -t` when the binary is in our image too.
    bin: Option<NginxBinary>,
    input: ConfInput,
}

impl Sidecar {
    fn conf_path(&self) -> PathBuf {
        self.input.runtime_dir.join("conf/nginx.conf")
    }

    /// Writes nginx.conf for `input` when its text differs from the file; HUPs the sidecar then.
    /// Returns whether the sidecar was reloaded.
    fn apply(&mut self, input: ConfInput) -> Result<bool, DataplaneError> {
        let what = reload_reason(&self.input, &input);
        let text = render(&input)?;
        let path = self.conf_path();
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            self.input = input;
            return Ok(false);
        }
        let new = path.with_extension("conf.new");
        std::fs::write(&new, &text)?;
        if let Some(bin) = &self.bin {
            let out = Command::new(&bin.path)
                .arg("-t")
                .arg("-q")
                .arg("-p")
                .arg(format!("{}/", input.runtime_dir.display()))
                .arg("-c")
                .arg(&new)
                .output()?;
            if !out.status.success() {
                return Err(DataplaneError::ConfRefused(String::from_utf8_lossy(&out.stderr).trim().to_string()));
            }
        }
        std::fs::rename(&new, &path)?;
        self.input = input;
        match self.pid() {
            Some(pid) => {
                kill(Pid::from_raw(pid), Signal::SIGHUP)
                    .map_err(|e| DataplaneError::Signal(format!("pid {pid}: {e}")))?;
                tracing::info!(pid, listeners = ?self.ports(), "nginx reloaded: {what}");
                Ok(true)
            }
            None => {
                tracing::info!("wrote {} (no nginx pid yet: the sidecar reads it when it starts)", path.display());
                Ok(false)
            }
        }
    }

    fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.input.runtime_dir.join("nginx.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        (pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
    }

    fn ports(&self) -> Vec<u16> {
        self.input.http_listeners.iter().map(|l| l.port).collect()
    }
}

pub enum Dataplane {
    Spawned(Nginx),
    Sidecar(Sidecar),
}

impl Dataplane {
    /// Prepares the runtime dir and token; starts nginx when `spawn`. Returns the policy API token.
    pub fn start(
        args: &NginxArgs,
        spawn: bool,
        (listeners, stream): (Vec<HttpListener>, Vec<StreamListener>),
    ) -> Result<(Dataplane, String)> {
        if spawn {
            let (bin, mut input, token) = args.prepare(listeners)?;
            input.stream_listeners = stream;
            let mut nginx = Nginx::new(bin, input);
            nginx.start()?;
            return Ok((Dataplane::Spawned(nginx), token));
        }
        // The sidecar image has nginx; ours may not: then nginx.conf is not pre-checked with `nginx -t`.
        let bin = match NginxBinary::locate(args.nginx.as_deref()) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!("no local nginx to check nginx.conf with ({e:#}); writing it unchecked");
                None
            }
        };
        let mut input = args.conf_input(bin.as_ref().map(|b| b.modules.clone()).unwrap_or_default(), listeners)?;
        input.http2 = bin.as_ref().map(|b| b.http2).unwrap_or_default();
        input.stream_listeners = stream;
        let token = ensure_token(&input.token_file()).context("policy token")?;
        let mut sidecar = Sidecar { bin, input: input.clone() };
        sidecar.apply(input)?;
        Ok((Dataplane::Sidecar(sidecar), token))
    }

    pub fn input(&self) -> &ConfInput {
        match self {
            Dataplane::Spawned(n) => n.input(),
            Dataplane::Sidecar(s) => &s.input,
        }
    }

    /// New listeners (http and stream): re-render, reload only when nginx.conf changed. Returns whether nginx
    /// reloaded.
    pub fn set_listeners(
        &mut self,
        (listeners, stream): (Vec<HttpListener>, Vec<StreamListener>),
    ) -> Result<bool, DataplaneError> {
        let mut input = self.input().clone();
        input.http_listeners = listeners;
        input.stream_listeners = stream;
        match self {
            Dataplane::Spawned(n) => Ok(n.apply(input)?),
            Dataplane::Sidecar(s) => s.apply(input),
        }
    }

    /// Restarts a spawned nginx that exited; returns whether it did. A sidecar is restarted by its kubelet.
    pub fn restart_if_exited(&mut self) -> Result<bool> {
        if let Dataplane::Spawned(n) = self {
            if let Some(status) = n.exited() {
                tracing::error!("nginx exited ({status}); restarting it");
                n.start()?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn stop(&mut self) {
        if let Dataplane::Spawned(n) = self {
            n.stop();
        }
    }
}
