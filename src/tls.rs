//! TLS helpers outside the compiler: the placeholder certificate nginx needs on an `ssl` listener.
//!
//! nginx (1.22 with lua-nginx-module) refuses an `ssl` listener without a static `ssl_certificate` ("no ssl
//! configured for the server"), even when `ssl_certificate_by_lua` sets the real one. The placeholder is a
//! throwaway self-signed certificate generated here at runtime-dir preparation (no external command); it is
//! never served: `lua/alb/ssl.lua` clears it on every handshake and installs the policy's certificate or fails
//! the handshake. Real certificates and keys only reach the workers through the policy.

use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Relative to the runtime dir.
pub const PLACEHOLDER_CERT: &str = "conf/placeholder.crt";
pub const PLACEHOLDER_KEY: &str = "conf/placeholder.key";

/// Writes the placeholder certificate and key into `runtime_dir` unless both exist. The key is mode 0600: only
/// the nginx master (which loads it at configuration time) reads it.
pub fn ensure_placeholder(runtime_dir: &Path) -> Result<()> {
    let (crt, key) = (runtime_dir.join(PLACEHOLDER_CERT), runtime_dir.join(PLACEHOLDER_KEY));
    if crt.is_file() && key.is_file() {
        return Ok(());
    }
    let ck = rcgen::generate_simple_self_signed(vec!["alb-placeholder.invalid".to_string()])
        .context("generating the placeholder certificate")?;
    let write = |path: &Path, text: String, mode: u32| -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    };
    write(&key, ck.signing_key.serialize_pem(), 0o600)?;
    write(&crt, ck.cert.pem(), 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholder_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        super::ensure_placeholder(dir.path()).unwrap();
        let crt = std::fs::read_to_string(dir.path().join(super::PLACEHOLDER_CERT)).unwrap();
        assert!(crt.starts_with("-----BEGIN CERTIFICATE-----"));
        super::ensure_placeholder(dir.path()).unwrap();
        assert_eq!(crt, std::fs::read_to_string(dir.path().join(super::PLACEHOLDER_CERT)).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(super::PLACEHOLDER_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
