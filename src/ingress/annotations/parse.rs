//! Typed parsers of annotation values: each returns the value or the problem (a short sentence). Pure.
//!
//! Everything a parser accepts is safe to put into the policy JSON: no control characters, header names are
//! HTTP tokens, addresses are real CIDRs. Nothing an annotation holds ever reaches nginx.conf.

use crate::compile::features::{header_name_ok, header_value_ok, var_string_ok};
use std::net::IpAddr;

/// `true` / `false`, case-insensitive.
pub fn boolean(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected \"true\" or \"false\"".into()),
    }
}

/// A decimal integer in `min..=max`.
pub fn int_in(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = v.trim().parse().map_err(|_| format!("not an integer in {min}..={max}"))?;
    if n < min || n > max {
        return Err(format!("not in {min}..={max}"));
    }
    Ok(n)
}

/// A timeout: `N` or `Ns` (seconds, as ingress-nginx) or `Nms`; > 0 and at most 2^32-1 ms. → milliseconds.
pub fn timeout_ms(v: &str) -> Result<u64, String> {
    let t = v.trim();
    let (digits, mult) = if let Some(d) = t.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = t.strip_suffix('s') {
        (d, 1000)
    } else {
        (t, 1000)
    };
    let bad = || "expected a positive number of seconds (`30`, `30s`) or milliseconds (`500ms`)".to_string();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let ms = n.checked_mul(mult).filter(|ms| *ms > 0 && *ms <= u64::from(u32::MAX)).ok_or_else(bad)?;
    Ok(ms)
}

/// An nginx size (`0`, `1024`, `8k`, `1m`, `2g`, any case) → bytes; `0` → `None` (no limit, as nginx).
pub fn size(v: &str) -> Result<Option<u64>, String> {
    let t = v.trim();
    let bad = || "expected an nginx size: digits with an optional k, m or g suffix (`8k`, `1m`, `0`)".to_string();
    let (digits, mult) = match t.as_bytes().last().map(|b| b.to_ascii_lowercase()) {
        Some(b'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some(b'm') => (&t[..t.len() - 1], 1 << 20),
        Some(b'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    Ok((bytes > 0).then_some(bytes))
}

/// A comma list, trimmed, empty entries dropped.
pub fn list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// One IPv4/IPv6 address or CIDR (`10.0.0.0/8`, `fd00::/8`, `1.2.3.4`). Returned normalised (`addr/len`
/// as written, address re-printed).
pub fn cidr(s: &str) -> Result<String, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match len {
        None => Ok(ip.to_string()),
        Some(l) => {
            let n: u8 = l
                .parse()
                .ok()
                .filter(|n| *n <= max && l.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("{s:?} has an invalid prefix length (0..={max})"))?;
            Ok(format!("{ip}/{n}"))
        }
    }
}

/// A comma list of addresses/CIDRs, at least one.
pub fn cidr_list(v: &str) -> Result<Vec<String>, String> {
    let items = list(v);
    if items.is_empty() {
        return Err("expected a comma-separated list of addresses or CIDRs".into());
    }
    items.iter().map(|s| cidr(s)).collect()
}

/// A redirect status the data plane sends: 301, 302, 303, 307, 308.
pub fn redirect_code(v: &str) -> Result<u16, String> {
    match v.trim().parse::<u16>() {
        Ok(c @ (301 | 302 | 303 | 307 | 308)) => Ok(c),
        _ => Err("expected 301, 302, 303, 307 or 308".into()),
    }
}

/// An absolute `http(s)://` URL or an absolute path, no spaces or control characters.
pub fn redirect_url(v: &str) -> Result<String, String> {
    let t = v.trim();
    let ok_chars = !t.is_empty() && header_value_ok(t) && !t.contains([' ', '\t']);
    let ok_form = t.starts_with("http://") || t.starts_with("https://") || t.starts_with('/');
    if !ok_chars || !ok_form {
        return Err("expected an http:// or https:// URL or a path starting with /, without spaces".into());
    }
    Ok(t.to_string())
}

/// A comma list of HTTP status codes in 400..=599.
pub fn error_codes(v: &str) -> Result<Vec<u16>, String> {
    let items = list(v);
    if items.is_empty() {
        return Err("expected a comma-separated list of status codes (400..=599)".into());
    }
    let mut out = Vec::new();
    for s in items {
        match s.parse::<u16>() {
            Ok(c) if (400..=599).contains(&c) => {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
            _ => return Err(format!("{s:?} is not a status code in 400..=599")),
        }
    }
    Ok(out)
}

/// A DNS host name, lower-cased; `*.` wildcard allowed when `wildcard`.
pub fn host(s: &str, wildcard: bool) -> Result<String, String> {
    let h = s.trim().to_ascii_lowercase();
    let body = match h.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        _ => h.as_str(),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if body.is_empty() || h.len() > 253 || !body.split('.').all(label_ok) {
        return Err(format!("{s:?} is not a host name"));
    }
    Ok(h)
}

/// A comma list of host names (wildcards allowed).
pub fn host_list(v: &str) -> Result<Vec<String>, String> {
    let items = list(v);
    if items.is_empty() {
        return Err("expected a comma-separated list of host names".into());
    }
    items.iter().map(|s| host(s, true)).collect()
}

/// A comma list of HTTP header names; `*` allowed when `star`. Returned joined by `, ` (kept as written).
pub fn header_names(v: &str, star: bool) -> Result<Vec<String>, String> {
    let items = list(v);
    if items.is_empty() {
        return Err("expected a comma-separated list of header names".into());
    }
    for h in &items {
        if !(header_name_ok(h) || star && h == "*") {
            return Err(format!("{h:?} is not a header name"));
        }
    }
    Ok(items)
}

/// A comma list of HTTP methods (upper-cased).
pub fn methods(v: &str) -> Result<Vec<String>, String> {
    let items = list(v);
    if items.is_empty() {
        return Err("expected a comma-separated list of methods".into());
    }
    items
        .iter()
        .map(|m| {
            let ok = m.bytes().all(|b| b.is_ascii_alphabetic()) && m.len() <= 20;
            if ok {
                Ok(m.to_ascii_uppercase())
            } else {
                Err(format!("{m:?} is not an HTTP method"))
            }
        })
        .collect()
}

/// CORS origins: `*` or a comma list of `scheme://host[:port]` (host may start with `*.`).
pub fn origins(v: &str) -> Result<Vec<String>, String> {
    let items = list(v);
    if items.is_empty() {
        return Err("expected `*` or a comma-separated list of origins".into());
    }
    for o in &items {
        if o == "*" {
            continue;
        }
        let rest = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
        let Some(rest) = rest else {
            return Err(format!("origin {o:?} does not start with http:// or https://"));
        };
        let (h, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
        if host(h, true).is_err() || !port_ok {
            return Err(format!("origin {o:?} is not scheme://host[:port]"));
        }
    }
    Ok(items)
}

/// A `rewrite-target`: a path starting with `/` (or a full http(s) URL is refused: use a redirect); `$n` and
/// `${n}` are capture references (digits only); no other `$`, no spaces or control characters.
pub fn rewrite_target(v: &str) -> Result<String, String> {
    let t = v.trim();
    if !t.starts_with('/') {
        return Err("expected a path starting with /".into());
    }
    if !header_value_ok(t) || t.contains([' ', '\t']) {
        return Err("contains spaces or control characters".into());
    }
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let rest = &t[i + 1..];
            let n = if let Some(inner) = rest.strip_prefix('{') {
                let end = inner.find('}').ok_or("unclosed ${")?;
                if end == 0 || !inner[..end].bytes().all(|c| c.is_ascii_digit()) {
                    return Err("${...} must hold a capture number".into());
                }
                end + 2
            } else {
                let d = rest.bytes().take_while(u8::is_ascii_digit).count();
                if d == 0 {
                    return Err("`$` must be followed by a capture number ($1, ${1})".into());
                }
                d
            };
            i += 1 + n;
            continue;
        }
        i += 1;
    }
    Ok(t.to_string())
}

/// Whether a (valid) rewrite target references a capture group.
pub fn has_capture(target: &str) -> bool {
    target.contains('$')
}

/// A header value: no control characters, not empty.
pub fn header_value(v: &str) -> Result<String, String> {
    let t = v.trim();
    if t.is_empty() || !header_value_ok(t) {
        return Err("expected a non-empty header value without control characters".into());
    }
    Ok(t.to_string())
}

/// An `http://` / `https://` URL with a literal host; nginx variables (`$host`, `${x}`) allowed elsewhere.
pub fn auth_url(v: &str) -> Result<String, String> {
    let t = v.trim();
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
        .ok_or("expected an http:// or https:// URL")?;
    let h = rest.split(['/', '?']).next().unwrap_or("");
    if h.is_empty() || h.contains(['$', ' ', '@']) {
        return Err("the URL must have a literal host".into());
    }
    if t.contains([' ', '\t']) {
        return Err("contains spaces".into());
    }
    var_string_ok(t)?;
    Ok(t.to_string())
}

/// A URL (`http(s)://...`) or an absolute path that may hold nginx variables (`$host`, `${x}`), no spaces or
/// control characters (`auth-signin`, `auth-request-redirect`).
pub fn var_url(v: &str) -> Result<String, String> {
    let t = v.trim();
    let form = t.starts_with("http://") || t.starts_with("https://") || t.starts_with('/') || t.starts_with('$');
    if !form || t.contains([' ', '\t']) {
        return Err("expected an http(s):// URL or a path (nginx variables allowed), without spaces".into());
    }
    var_string_ok(t)?;
    Ok(t.to_string())
}

/// A basic-auth realm: no quotes, no control characters.
pub fn realm(v: &str) -> Result<String, String> {
    if !header_value_ok(v) || v.contains(['"', '\\']) {
        return Err("must not contain quotes, backslashes or control characters".into());
    }
    Ok(v.to_string())
}

/// A Kubernetes object name (DNS-1123 subdomain).
pub fn object_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a valid object name"))
    }
}

/// `name` or `namespace/name` of an object that must live in `ns`: → name.
pub fn same_namespace_ref(v: &str, ns: &str) -> Result<String, String> {
    let t = v.trim();
    let name = match t.split_once('/') {
        Some((n, _)) if n != ns => {
            return Err(format!("names namespace {n:?}: only objects of the Ingress's namespace {ns:?} can be used"))
        }
        Some((_, name)) => name,
        None => t,
    };
    object_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_and_ints() {
        assert_eq!(boolean(" TRUE "), Ok(true));
        assert_eq!(boolean("false"), Ok(false));
        assert!(boolean("yes").is_err() && boolean("").is_err() && boolean("1").is_err());
        assert_eq!(int_in("5", 1, 10), Ok(5));
        assert!(int_in("0", 1, 10).is_err() && int_in("11", 1, 10).is_err() && int_in("-1", 0, 10).is_err());
        assert!(int_in("1.5", 0, 10).is_err() && int_in("", 0, 10).is_err());
    }

    #[test]
    fn timeouts() {
        assert_eq!(timeout_ms("30"), Ok(30_000));
        assert_eq!(timeout_ms("30s"), Ok(30_000));
        assert_eq!(timeout_ms("500ms"), Ok(500));
        assert_eq!(timeout_ms(" 1 "), Ok(1000));
        for bad in ["0", "0ms", "-1", "1.5", "abc", "", "s", "ms", "10m", "5000000000", "99999999999999999999"] {
            assert!(timeout_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(size("0"), Ok(None));
        assert_eq!(size("1024"), Ok(Some(1024)));
        assert_eq!(size("8k"), Ok(Some(8192)));
        assert_eq!(size("8K"), Ok(Some(8192)));
        assert_eq!(size("1m"), Ok(Some(1 << 20)));
        assert_eq!(size("2G"), Ok(Some(2 << 30)));
        for bad in ["", "m", "1.5m", "1mb", "-1", "1t", "99999999999999999999g", "1 m"] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            cidr_list("10.0.0.0/8, 1.2.3.4,fd00::/8"),
            Ok(vec!["10.0.0.0/8".into(), "1.2.3.4".into(), "fd00::/8".into()])
        );
        for bad in ["", ",", "10.0.0.0/33", "fd00::/129", "10.0.0/8", "host.com", "1.2.3.4/", "1.2.3.4/+8", "1.2.3.4;x"]
        {
            assert!(cidr_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_and_codes() {
        for c in ["301", "302", "303", "307", "308"] {
            assert!(redirect_code(c).is_ok());
        }
        for bad in ["300", "304", "200", "x", ""] {
            assert!(redirect_code(bad).is_err(), "{bad}");
        }
        assert_eq!(redirect_url("https://a.com/x?y=1"), Ok("https://a.com/x?y=1".into()));
        assert_eq!(redirect_url("/login"), Ok("/login".into()));
        for bad in ["", "a.com", "ftp://a", "/a b", "/a\nb", "javascript:x"] {
            assert!(redirect_url(bad).is_err(), "{bad}");
        }
        assert_eq!(error_codes("404, 503,404"), Ok(vec![404, 503]));
        for bad in ["", "200", "600", "40x", "404;500"] {
            assert!(error_codes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(host_list("A.com, *.b.org"), Ok(vec!["a.com".into(), "*.b.org".into()]));
        for bad in ["", "a..com", "-a.com", "a.com;", "a com", "a.\ncom", "*.", "a.*.com", "{a}.com"] {
            assert!(host_list(bad).is_err(), "{bad}");
        }
        assert!(host("*.a.com", false).is_err());
    }

    #[test]
    fn headers_methods_origins() {
        assert_eq!(header_names("X-A, x-b", false), Ok(vec!["X-A".into(), "x-b".into()]));
        assert!(header_names("*", true).is_ok());
        for bad in ["", "X A", "X:A", "X\"A", "X\nA"] {
            assert!(header_names(bad, false).is_err(), "{bad}");
        }
        assert_eq!(methods("get, PUT"), Ok(vec!["GET".into(), "PUT".into()]));
        assert!(methods("GET;").is_err() && methods("").is_err());
        assert_eq!(
            origins("https://a.com, http://*.b.com:8080"),
            Ok(vec!["https://a.com".into(), "http://*.b.com:8080".into()])
        );
        assert!(origins("*").is_ok());
        for bad in ["", "a.com", "https://", "https://a.com:x", "https://a.com/path", "https://a\".com"] {
            assert!(origins(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rewrite_targets() {
        assert_eq!(rewrite_target("/$2"), Ok("/$2".into()));
        assert_eq!(rewrite_target("/x/${1}/y$10"), Ok("/x/${1}/y$10".into()));
        assert_eq!(rewrite_target("/"), Ok("/".into()));
        assert!(has_capture("/$1") && !has_capture("/a"));
        for bad in ["", "x", "/$", "/$a", "/${a}", "/${1", "/a b", "/a\nb", "http://a.com/"] {
            assert!(rewrite_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn auth_values() {
        assert!(auth_url("http://10.0.0.1:8080/auth?u=$host").is_ok());
        assert!(auth_url("https://auth.svc/x").is_ok());
        for bad in ["", "auth.svc", "http:///x", "http://$host/x", "http://a/${x", "http://a/\nx", "http://a/b c"] {
            assert!(auth_url(bad).is_err(), "{bad}");
        }
        assert!(var_url("https://$host/signin").is_ok() && var_url("/after").is_ok() && var_url("$scheme://x").is_ok());
        for bad in ["", "login", "https://a b", "https://a/${x", "https://a/\nb"] {
            assert!(var_url(bad).is_err(), "{bad}");
        }
        assert!(realm("Users only").is_ok());
        assert!(realm("a\"b").is_err() && realm("a\nb").is_err());
        assert_eq!(same_namespace_ref("users", "ns"), Ok("users".into()));
        assert_eq!(same_namespace_ref("ns/users", "ns"), Ok("users".into()));
        for bad in ["other/users", "", "Users", "a/b/c", "ns/", "x;y"] {
            assert!(same_namespace_ref(bad, "ns").is_err(), "{bad}");
        }
    }

    #[test]
    fn header_values() {
        assert_eq!(header_value(" /api "), Ok("/api".into()));
        assert!(header_value("").is_err() && header_value("a\r\nX-Evil: 1").is_err());
    }
}
