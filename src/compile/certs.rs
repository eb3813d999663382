//! TLS certificates: `certificate_name` of https Frontends and Rules → `kubernetes.io/tls` Secrets → the
//! policy's `certificates` map (controlplane.md §3.5, docs/policy.md "certificates").
//!
//! Keys: `"<port>"` (Frontend default), `"<domain>"` (Rule `domain` + `certificate_name` on an https Frontend),
//! `"<domain>/<port>"` instead when the same domain is on more than one https port; within one port/domain the
//! smallest valid `ns/name` wins; `"*"` is the fallback of `DEFAULT_SSL_STRATEGY` Always/Both ([`TlsFallback`]).
//! Every certificate is checked before it reaches nginx: present Secret, `tls.crt` and `tls.key` present and PEM,
//! the key matches the certificate, within its validity period (not expired, not before its `notBefore`; the
//! caller compiles again at [`CertMap::next_change`]). A bad one is reported as a
//! [`Reject`] on the Frontend/Rule naming the Secret; the object itself keeps routing and the host simply falls
//! back in the data plane's lookup order. Checking is pure Rust (rustls/ring), memoised on the Secret's bytes.

use super::{name_of, ns_of, Reject};
use crate::crd::{Frontend, Rule};
use crate::policy::Certificate;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

pub const REASON_NOT_FOUND: &str = "CertificateNotFound";
pub const REASON_INVALID: &str = "InvalidCertificate";
pub const REASON_MISMATCH: &str = "CertificateKeyMismatch";
pub const REASON_EXPIRED: &str = "CertificateExpired";
pub const REASON_NOT_YET_VALID: &str = "CertificateNotYetValid";
pub const REASON_BAD_NAME: &str = "InvalidCertificateName";
pub const REASON_BAD_DOMAIN: &str = "InvalidDomain";

/// `ns_name` (preferred when `_` is present: namespaces and Secret names never contain one) or `ns/name`.
pub fn parse_ref(s: &str) -> Option<(String, String)> {
    let s = s.trim();
    let (ns, name) = if s.contains('_') { s.split_once('_')? } else { s.split_once('/')? };
    let ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c));
    (ok(ns) && ok(name)).then(|| (ns.to_string(), name.to_string()))
}

/// Why a Secret cannot serve: reason code and a sentence naming the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub problem: String,
}

/// A Secret that passed every check but its validity period.
#[derive(Clone)]
struct Loaded {
    cert: Arc<str>,
    key: Arc<str>,
    /// Unix seconds.
    not_before: i64,
    not_after: i64,
}

fn secret_bytes<'a>(s: &'a Secret, key: &str) -> Option<&'a [u8]> {
    s.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.as_slice()).filter(|b| !b.is_empty())
}

fn pem_block(tag: &str, der: &[u8]) -> String {
    pem::encode_config(&pem::Pem::new(tag, der.to_vec()), pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF))
}

/// Parses and checks the Secret's certificate material (everything but the validity period, which depends on the
/// time).
fn load_uncached(sec: &str, s: &Secret) -> Result<Loaded, Problem> {
    let invalid = |what: String| Problem { reason: REASON_INVALID, problem: format!("Secret {sec}: {what}") };
    let crt = secret_bytes(s, "tls.crt").ok_or_else(|| invalid("has no tls.crt".into()))?;
    let key = secret_bytes(s, "tls.key").ok_or_else(|| invalid("has no tls.key".into()))?;
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    for (field, bytes) in [("tls.crt", Some(crt)), ("ca.crt", secret_bytes(s, "ca.crt"))] {
        let Some(bytes) = bytes else { continue };
        let before = chain.len();
        for c in CertificateDer::pem_slice_iter(bytes) {
            chain.push(c.map_err(|e| invalid(format!("{field} is not valid PEM: {e}")))?);
        }
        if chain.len() == before {
            return Err(invalid(format!("{field} holds no PEM certificate")));
        }
    }
    let key_der = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| invalid(format!("tls.key holds no usable PEM private key ({e})")))?;
    let (not_before, not_after) =
        validity(&chain[0]).ok_or_else(|| invalid("tls.crt is not a valid X.509 certificate".into()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| invalid(format!("tls.key is not a supported private key: {e}")))?;
    let ck = rustls::sign::CertifiedKey::new(chain.clone(), signing);
    match ck.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(Problem {
                reason: REASON_MISMATCH,
                problem: format!("Secret {sec}: tls.key does not match the certificate in tls.crt"),
            })
        }
        Err(e) => return Err(invalid(format!("tls.crt/tls.key cannot be checked: {e}"))),
    }
    let cert: String = chain.iter().map(|c| pem_block("CERTIFICATE", c)).collect();
    let key_tag = match &key_der {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let key = pem_block(key_tag, key_der.secret_der());
    Ok(Loaded { cert: cert.into(), key: key.into(), not_before, not_after })
}

/// Memoised [`load_uncached`], keyed on the sha256 of the Secret's name and bytes (RSA key checks cost
/// milliseconds: a policy with many certificates is recompiled on every change).
fn load(sec: &str, s: &Secret) -> Result<Loaded, Problem> {
    type Cache = Mutex<HashMap<[u8; 32], Result<Loaded, Problem>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut h = Sha256::new();
    h.update(sec.as_bytes());
    for k in ["tls.crt", "tls.key", "ca.crt"] {
        let b = secret_bytes(s, k).unwrap_or_default();
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    }
    let digest: [u8; 32] = h.finalize().into();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&digest) {
        return hit.clone();
    }
    let res = load_uncached(sec, s);
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() > 8192 {
        c.clear();
    }
    c.insert(digest, res.clone());
    res
}

/// Checks one Secret at time `now` (unix seconds): the policy entry or the problem.
#[cfg(test)]
fn check(sec: &str, s: &Secret, now: i64) -> Result<Certificate, Problem> {
    checked(sec, s, now).0
}

/// [`check`], and the next time (unix seconds, after `now`) at which the answer changes: the certificate's
/// `notBefore` while it lies ahead, else just after its `notAfter` while that lies ahead; `None` for a Secret that
/// cannot serve whatever the time.
fn checked(sec: &str, s: &Secret, now: i64) -> (Result<Certificate, Problem>, Option<i64>) {
    let l = match load(sec, s) {
        Ok(l) => l,
        Err(p) => return (Err(p), None),
    };
    if now < l.not_before {
        let problem = format!(
            "Secret {sec}: the certificate in tls.crt is not valid before {} (notBefore is in the future)",
            format_time(l.not_before)
        );
        return (Err(Problem { reason: REASON_NOT_YET_VALID, problem }), Some(l.not_before));
    }
    if l.not_after < now {
        let problem = format!("Secret {sec}: the certificate in tls.crt expired at {}", format_time(l.not_after));
        return (Err(Problem { reason: REASON_EXPIRED, problem }), None);
    }
    (Ok(Certificate { cert: l.cert.to_string(), key: l.key.to_string() }), Some(l.not_after.saturating_add(1)))
}

// ---- minimal DER reading: just enough to find the validity of a certificate ----

/// (tag, content, rest) of the first TLV of `b`.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n].iter().fold(0usize, |acc, x| (acc << 8) | *x as usize);
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// (`notBefore`, `notAfter`) of an X.509 certificate, unix seconds.
fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (0x30, cert, _) = tlv(cert)? else { return None };
    let (0x30, tbs, _) = tlv(cert)? else { return None };
    let (mut tag, _, mut rest) = tlv(tbs)?;
    if tag == 0xa0 {
        let (t, _, r) = tlv(rest)?; // explicit version, then serialNumber
        (tag, rest) = (t, r);
    }
    if tag != 0x02 {
        return None; // serialNumber
    }
    let (_, _, rest) = tlv(rest)?; // signature algorithm
    let (_, _, rest) = tlv(rest)?; // issuer
    let (0x30, validity, _) = tlv(rest)? else { return None };
    let (tag, t, validity) = tlv(validity)?;
    let not_before = parse_time(tag, std::str::from_utf8(t).ok()?)?;
    let (tag, t, _) = tlv(validity)?;
    Some((not_before, parse_time(tag, std::str::from_utf8(t).ok()?)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18) → unix seconds.
fn parse_time(tag: u8, s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    if !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, s.len()) {
        (0x17, 12) => {
            let yy: i64 = s[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (0x18, 14) => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let n = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (mo, d, h, mi, se) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(year, mo, d) * 86400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `2024-05-01T12:00:00Z`.
fn format_time(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86400), t.rem_euclid(86400));
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

// ---- the map ----

/// A host name usable as a map key: DNS characters, optionally one leading `*.` label.
fn valid_domain(d: &str) -> bool {
    let body = d.strip_prefix("*.").unwrap_or(d);
    !body.is_empty()
        && d.len() <= 253
        && body.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// Key of the fallback certificate in the map: step 5 of the handshake lookup (dataplane.md §4.17). Not a host
/// name ([`valid_domain`] refuses it) nor a port.
pub const FALLBACK_KEY: &str = "*";

/// `DEFAULT_SSL_STRATEGY` `Always`/`Both` (controlplane.md §1.3, §3.5): a TLS handshake that found no certificate
/// (no SNI match and no usable port certificate) gets the certificate of the Ingress https port — the
/// `certificate_name` of the https Frontend on `config.ingressHTTPSPort` — or, when that port has none, the ALB's
/// `config.defaultSSLCert`. In the policy as the certificate [`FALLBACK_KEY`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFallback {
    /// `config.ingressHTTPSPort`; 0 = none.
    pub https_port: u16,
    /// `config.defaultSSLCert`, `ns/name` or `ns_name`.
    pub default_cert: Option<String>,
    /// Namespace and name of the ALB, named when `default_cert` cannot serve.
    pub alb_namespace: String,
    pub alb_name: String,
}

impl TlsFallback {
    /// The fallback of an ALB's Ingress settings: only under the strategies `Always` and `Both`.
    pub fn of(cfg: &crate::ingress::AlbIngressConfig) -> Option<TlsFallback> {
        use crate::ingress::SslStrategy;
        matches!(cfg.ssl_strategy, SslStrategy::Always | SslStrategy::Both).then(|| TlsFallback {
            https_port: cfg.https_port,
            default_cert: cfg.default_ssl_cert.clone().filter(|c| !c.trim().is_empty()),
            alb_namespace: cfg.alb_namespace.clone(),
            alb_name: cfg.alb_name.clone(),
        })
    }
}

struct Resolver<'a> {
    secrets: HashMap<(&'a str, &'a str), &'a Secret>,
    now: i64,
    /// Earliest time a resolved certificate becomes valid or expires.
    next_change: std::cell::Cell<Option<i64>>,
}

impl Resolver<'_> {
    /// `certificate_name` → (`ns/name`, checked certificate or problem).
    fn resolve(&self, cert_name: &str) -> (String, Result<Certificate, Problem>) {
        let Some((ns, name)) = parse_ref(cert_name) else {
            let problem = format!("is {cert_name:?}, not ns/name or ns_name");
            return (cert_name.to_string(), Err(Problem { reason: REASON_BAD_NAME, problem }));
        };
        let sec = format!("{ns}/{name}");
        let res = match self.secrets.get(&(ns.as_str(), name.as_str())) {
            None => Err(Problem {
                reason: REASON_NOT_FOUND,
                problem: format!("names Secret {sec}, which does not exist or is not of type kubernetes.io/tls"),
            }),
            Some(s) => {
                let (res, change) = checked(&sec, s, self.now);
                if let Some(t) = change {
                    self.next_change.set(Some(self.next_change.get().map_or(t, |n| n.min(t))));
                }
                res
            }
        };
        (sec, res)
    }
}

/// What [`build`] makes.
#[derive(Debug, Default)]
pub struct CertMap {
    pub certificates: BTreeMap<String, Certificate>,
    /// One per certificate that cannot serve, on the Frontend/Rule (or ALB2) that names it.
    pub rejects: Vec<Reject>,
    /// Unix seconds: the earliest future `notBefore`/`notAfter` of the certificates looked at. The map must be
    /// built again then (a certificate becomes valid or expires).
    pub next_change: Option<i64>,
}

/// The certificate map of the accepted https Frontends (`(Frontend, port)`) and of the accepted Rules on them
/// (`(Rule, port)`), plus the fallback certificate when `fallback` is set, with a [`Reject`] for every
/// certificate that cannot serve.
pub fn build<'s>(
    secrets: impl IntoIterator<Item = &'s Secret>,
    frontends: &[(&Frontend, u16)],
    rules: &[(&Rule, u16)],
    fallback: Option<&TlsFallback>,
    now: i64,
) -> CertMap {
    let tls_type = |s: &&Secret| s.type_.as_deref().is_none_or(|t| t == "kubernetes.io/tls");
    let resolver = Resolver {
        secrets: secrets
            .into_iter()
            .filter(tls_type)
            .map(|s| ((ns_of(&s.metadata), name_of(&s.metadata)), s))
            .collect(),
        now,
        next_change: Default::default(),
    };
    let mut out = BTreeMap::new();
    let mut rejects = Vec::new();
    let field = "spec.certificate_name".to_string();

    for (ft, port) in frontends {
        let name = ft.spec.certificate_name.trim();
        if name.is_empty() {
            continue;
        }
        match resolver.resolve(name) {
            (_, Ok(c)) => {
                out.insert(port.to_string(), c);
            }
            (_, Err(p)) => {
                let problem = format!(
                    "{}: port {port} has no default certificate (handshakes without a matching SNI certificate fail)",
                    p.problem
                );
                rejects.push(Reject::new("Frontend", &ft.metadata, field.clone(), p.reason, &problem));
            }
        }
    }

    // domain → port → candidates (certificate_name, rule)
    type Candidates<'r> = BTreeMap<u16, Vec<(String, &'r Rule)>>;
    let mut by_domain: BTreeMap<String, Candidates> = BTreeMap::new();
    for (rl, port) in rules {
        let (domain, cert) = (rl.spec.domain().trim().to_ascii_lowercase(), rl.spec.certificate_name().trim());
        if domain.is_empty() || cert.is_empty() {
            continue;
        }
        if !valid_domain(&domain) {
            let problem = format!("is {:?}, not a host name: its certificate {cert} is not used", rl.spec.domain());
            rejects.push(Reject::new("Rule", &rl.metadata, "spec.domain".into(), REASON_BAD_DOMAIN, &problem));
            continue;
        }
        by_domain.entry(domain).or_default().entry(*port).or_default().push((cert.to_string(), rl));
    }
    let mut checked: HashMap<String, (String, Result<Certificate, Problem>)> = HashMap::new();
    for (domain, ports) in by_domain {
        let per_port = ports.len() > 1;
        for (port, cands) in ports {
            let key = if per_port { format!("{domain}/{port}") } else { domain.clone() };
            let mut best: Option<(String, Certificate)> = None;
            let mut reported = BTreeSet::new();
            for (cert_name, rl) in cands {
                let (sec, res) =
                    checked.entry(cert_name.clone()).or_insert_with(|| resolver.resolve(&cert_name)).clone();
                match res {
                    Ok(c) => {
                        if best.as_ref().is_none_or(|(b, _)| sec < *b) {
                            best = Some((sec, c));
                        }
                    }
                    Err(p) => {
                        let id = (ns_of(&rl.metadata).to_string(), name_of(&rl.metadata).to_string());
                        if reported.insert(id) {
                            let problem = format!(
                                "{}: host {domain} on port {port} falls back to the next certificate of the lookup order",
                                p.problem
                            );
                            rejects.push(Reject::new("Rule", &rl.metadata, field.clone(), p.reason, &problem));
                        }
                    }
                }
            }
            if let Some((_, c)) = best {
                out.insert(key, c);
            }
        }
    }

    if let Some(fb) = fallback {
        let port_cert = (fb.https_port != 0).then(|| out.get(&fb.https_port.to_string()).cloned()).flatten();
        let fallback_cert = match (port_cert, &fb.default_cert) {
            (Some(c), _) => Some(c),
            (None, Some(name)) => match resolver.resolve(name) {
                (_, Ok(c)) => Some(c),
                (_, Err(p)) => {
                    let meta = ObjectMeta {
                        namespace: Some(fb.alb_namespace.clone()),
                        name: Some(fb.alb_name.clone()),
                        ..Default::default()
                    };
                    let problem = format!(
                        "{}: TLS handshakes that find no certificate fail instead of falling back to it",
                        p.problem
                    );
                    rejects.push(Reject::new("ALB2", &meta, "spec.config.defaultSSLCert".into(), p.reason, &problem));
                    None
                }
            },
            (None, None) => None,
        };
        if let Some(c) = fallback_cert {
            out.insert(FALLBACK_KEY.to_string(), c);
        }
    }
    CertMap { certificates: out, rejects, next_change: resolver.next_change.get() }
}

#[cfg(test)]
mod tests;
