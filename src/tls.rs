//! TLS helpers outside the compiler: the placeholder certificate nginx needs on an `ssl` listener, and the
//! self-signed `localhost` certificate of the metrics port.
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
/// The metrics port's certificate (HTTPS as the original ALB: self-signed, `CN=localhost`). Relative to the
/// runtime dir.
pub const METRICS_CERT: &str = "conf/metrics.crt";
pub const METRICS_KEY: &str = "conf/metrics.key";

/// Both certificates of the runtime dir ([`ensure_placeholder`], [`ensure_metrics_cert`]).
pub fn ensure_runtime_certs(runtime_dir: &Path) -> Result<()> {
    ensure_placeholder(runtime_dir)?;
    ensure_metrics_cert(runtime_dir)
}

/// Writes the placeholder certificate and key into `runtime_dir` unless both exist. The key is mode 0600: only
/// the nginx master (which loads it at configuration time) reads it.
pub fn ensure_placeholder(runtime_dir: &Path) -> Result<()> {
    let ck = || rcgen::generate_simple_self_signed(vec!["alb-placeholder.invalid".to_string()]);
    ensure_self_signed(runtime_dir, PLACEHOLDER_CERT, PLACEHOLDER_KEY, "placeholder", || {
        let ck = ck()?;
        Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
    })
}

/// Writes the metrics port's certificate (`CN=localhost`, names `localhost` and `127.0.0.1`; the original
/// generates the same kind at controller start) unless it exists; key mode 0600, read by the nginx master only.
pub fn ensure_metrics_cert(runtime_dir: &Path) -> Result<()> {
    ensure_self_signed(runtime_dir, METRICS_CERT, METRICS_KEY, "metrics", || {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    })
}

fn ensure_self_signed(
    runtime_dir: &Path,
    cert_file: &str,
    key_file: &str,
    what: &str,
    generate: impl FnOnce() -> std::result::Result<(String, String), rcgen::Error>,
) -> Result<()> {
    let (crt, key) = (runtime_dir.join(cert_file), runtime_dir.join(key_file));
    if crt.is_file() && key.is_file() {
        return Ok(());
    }
    let (cert_pem, key_pem) = generate().with_context(|| format!("generating the {what} certificate"))?;
    let write = |path: &Path, text: String, mode: u32| -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    };
    write(&key, key_pem, 0o600)?;
    write(&crt, cert_pem, 0o644)?;
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

    #[test]
    fn metrics_certificate_is_localhost() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        super::ensure_runtime_certs(dir.path()).unwrap();
        let crt = std::fs::read_to_string(dir.path().join(super::METRICS_CERT)).unwrap();
        let placeholder = std::fs::read_to_string(dir.path().join(super::PLACEHOLDER_CERT)).unwrap();
        assert_ne!(crt, placeholder);
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-ext", "subjectAltName", "-in"])
            .arg(dir.path().join(super::METRICS_CERT))
            .output();
        if let Some(out) = out.ok().filter(|o| o.status.success()) {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("CN = localhost") && text.contains("DNS:localhost"), "{text}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(super::METRICS_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
