//! The file layout of the two images and the container commands that rely on it. `Dockerfile.controller` and
//! `Dockerfile.openresty` put files where these constants say; a unit test parses both Dockerfiles and fails
//! when they drift apart from what the Deployment's containers run.

/// The `alb` binary in the controller image.
pub const ALB_BIN: &str = "/alb/bin/alb";
/// OpenResty's nginx in the stock base image (the Dockerfile checks it is there).
pub const OPENRESTY_BIN: &str = "/usr/local/openresty/bin/openresty";
/// The Lua data plane in the OpenResty image; the controller sees a copy at the same path (init container).
pub const LUA_DIR: &str = "/alb/lua";
/// The bootstrap nginx.conf (policy API + its /healthz on loopback only) in the OpenResty image.
pub const BOOTSTRAP_CONF: &str = "/alb/nginx/bootstrap.conf";
/// Shared emptyDir: nginx.conf, nginx.pid, policy token, temp files.
pub const RUNTIME_DIR: &str = "/alb/run";
/// Where the init container copies the Lua files for the controller container.
pub const SHARED_LUA_DIR: &str = "/alb/share/lua";
/// uid/gid of both images (as the original operator image).
pub const UID: i64 = 697;
/// Policy API port (loopback) of the bootstrap conf and the controller default.
pub const API_PORT: u16 = 1937;
/// Controller admin port (`/healthz`, `/readyz`, metrics).
pub const ADMIN_PORT: u16 = 1938;

/// Init container (OpenResty image): lays out the runtime dir with the bootstrap nginx.conf and a policy token
/// (only when absent: a restarted pod keeps them), and copies the Lua files for the controller container, which
/// checks them and names their path in nginx.conf.
pub fn init_script() -> String {
    format!(
        "set -e; mkdir -p {run}/conf {run}/tmp {run}/logs; \
         [ -f {run}/conf/nginx.conf ] || cp {boot} {run}/conf/nginx.conf; \
         [ -s {run}/policy-token ] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {run}/policy-token); \
         cp -R {lua}/. {shared}/",
        run = RUNTIME_DIR,
        boot = BOOTSTRAP_CONF,
        lua = LUA_DIR,
        shared = SHARED_LUA_DIR
    )
}

pub fn init_command() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), init_script()]
}

/// The nginx container: OpenResty in the foreground on the shared runtime dir. The controller rewrites
/// `conf/nginx.conf` and HUPs the pid in `nginx.pid` (shared process namespace, same uid).
pub fn nginx_command() -> Vec<String> {
    vec![
        OPENRESTY_BIN.into(),
        "-p".into(),
        format!("{RUNTIME_DIR}/"),
        "-c".into(),
        format!("{RUNTIME_DIR}/conf/nginx.conf"),
        "-e".into(),
        "stderr".into(),
    ]
}

/// The controller container: `alb controller` in sidecar mode (configuration from the env).
pub fn controller_command() -> Vec<String> {
    vec![ALB_BIN.into(), "controller".into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROLLER: &str = include_str!("../../Dockerfile.controller");
    const OPENRESTY: &str = include_str!("../../Dockerfile.openresty");

    /// Instructions of the final stage (after the last FROM), continuation lines joined.
    fn final_stage(df: &str) -> Vec<(String, String)> {
        let joined = df.replace("\\\n", " ");
        let mut out = Vec::new();
        for line in joined.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (inst, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let inst = inst.to_ascii_uppercase();
            if inst == "FROM" {
                out.clear();
            }
            out.push((inst, rest.trim().to_string()));
        }
        out
    }

    fn from_lines(df: &str) -> Vec<String> {
        df.lines().filter_map(|l| l.trim().strip_prefix("FROM ").map(|s| s.trim().to_string())).collect()
    }

    /// COPY destinations of the final stage.
    fn copies(df: &str) -> Vec<String> {
        final_stage(df)
            .into_iter()
            .filter(|(i, _)| i == "COPY")
            .filter_map(|(_, rest)| rest.split_whitespace().last().map(str::to_string))
            .collect()
    }

    /// Is `path` put there by a COPY (exactly, or under a copied folder)?
    fn provided(df: &str, path: &str) -> bool {
        copies(df).iter().any(|d| d == path || (d.ends_with('/') && path.starts_with(d.as_str())))
    }

    fn instruction(df: &str, inst: &str) -> Vec<String> {
        final_stage(df).into_iter().filter(|(i, _)| i == inst).map(|(_, r)| r).collect()
    }

    fn json_list(s: &str) -> Vec<String> {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("{s:?} is not a JSON list: {e}"))
    }

    #[test]
    fn controller_image_matches_the_container_spec() {
        assert!(provided(CONTROLLER, ALB_BIN), "Dockerfile.controller must COPY the binary to {ALB_BIN}");
        assert_eq!(copies(CONTROLLER).len(), 1, "only the alb binary goes into the runtime image");
        assert_eq!(instruction(CONTROLLER, "USER"), vec![format!("{UID}:{UID}")]);
        assert_eq!(json_list(&instruction(CONTROLLER, "ENTRYPOINT")[0]), controller_command());
    }

    #[test]
    fn openresty_image_matches_the_container_spec() {
        assert!(provided(OPENRESTY, &format!("{LUA_DIR}/alb/phase.lua")), "lua/ must be copied to {LUA_DIR}/");
        assert!(provided(OPENRESTY, BOOTSTRAP_CONF), "the bootstrap conf must be copied to {BOOTSTRAP_CONF}");
        let runs = instruction(OPENRESTY, "RUN").join("\n");
        assert!(runs.contains(&format!("test -x {OPENRESTY_BIN}")), "the Dockerfile checks {OPENRESTY_BIN}");
        assert!(runs.contains(RUNTIME_DIR) && runs.contains(SHARED_LUA_DIR), "runtime dirs are created");
        assert_eq!(instruction(OPENRESTY, "USER"), vec![format!("{UID}:{UID}")]);
        assert_eq!(json_list(&instruction(OPENRESTY, "CMD")[0]), nginx_command());
    }

    #[test]
    fn base_images_are_pinned() {
        for df in [CONTROLLER, OPENRESTY] {
            for from in from_lines(df) {
                let image = from.split_whitespace().next().unwrap();
                let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
                assert!(!tag.is_empty() && tag != "latest", "{image} must be pinned to a version tag");
            }
        }
        assert!(from_lines(OPENRESTY)[0].starts_with("openresty/openresty:"), "stock OpenResty base");
    }

    #[test]
    fn bootstrap_conf_opens_only_the_loopback_policy_api() {
        let conf = include_str!("../../nginx-templates/bootstrap.conf");
        let listens: Vec<&str> = conf.lines().map(str::trim).filter(|l| l.starts_with("listen ")).collect();
        assert_eq!(listens, vec![format!("listen 127.0.0.1:{API_PORT};").as_str()]);
        assert!(conf.contains("require(\"alb.api\").handle()"));
        assert!(conf.contains("pid nginx.pid;"), "pid file in the runtime dir the controller reads");
    }
}
