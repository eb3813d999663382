//! `HttpRule.config`, version 1 (docs/policy.md "Rule config (v1)"): the per-rule features of the data plane,
//! in the order the request pipeline applies them (dataplane.md §4.1). Every key is optional; an absent key
//! means "feature off". Unknown keys are kept (`extra`) so that a newer controller can add keys that this Lua
//! ignores without a version bump.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The features are boxed: most rules have none or one, and a rule's struct stays small (10,000 rules with the
/// features inline took 11 MiB of mostly empty options, written and freed by every compilation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleConfig {
    /// Answer with a redirect instead of proxying (first step of the pipeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Box<Redirect>>,
    /// CORS: preflight answered by the gateway, headers added to every other response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Box<Cors>>,
    /// `Host` sent upstream (and the TLS SNI name for https upstreams). Absent: the client `Host` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    /// URL rewrite before proxying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Box<Rewrite>>,
    /// Request header changes (after the URL rewrite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_request: Option<Box<RewriteRequest>>,
    /// Response header changes (header filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_response: Option<Box<RewriteResponse>>,
    /// Upstream timeouts of this rule, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Box<Timeout>>,
    /// Upstream tries on connection failure / timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Box<Retry>>,
    /// Authentication (forward first, then basic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Box<Auth>>,
    /// Source-address access control (allow/deny lists): denied requests get 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Box<Access>>,
    /// Request-rate and connection limits per client address: excess requests get `status` (503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Box<Limit>>,
    /// Largest accepted request body in bytes; larger bodies get 413. Absent: no per-rule limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<u64>,
    /// Upstream error answers (and rules whose backends have no endpoints) served by another backend
    /// (ingress-nginx `custom-http-errors` + `default-backend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_pages: Option<Box<ErrorPages>>,
    /// Keys this version does not know, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308; absent → 302.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Target path or absolute URL. Alone (no scheme/host/port): the `Location` verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Prefix replacement of the path (dataplane.md §4.6 algorithm) when building `scheme://host[:port]path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_match: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix: Option<String>,
    /// alb-rs addition: append the request query string (`?args`, or `&args` when the target has one).
    /// Absent/false: the query string is dropped, as the original ALB does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_query: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cors {
    /// Allowed origins (`https://a.com`, `https://*.a.com`); empty or containing `*` → `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    /// Absent → `GET, PUT, POST, DELETE, PATCH, OPTIONS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<String>,
    /// Absent → `DNT,X-CustomHeader,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<String>,
    /// Absent → no `Access-Control-Expose-Headers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<String>,
    /// Absent → true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// Seconds, absent → 1728000 (preflight only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    /// Prefix rewrite (takes precedence when non-empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_match: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix: Option<String>,
    /// Regex rewrite: the first match of `regex` in the path is replaced by `target` (`$1`..`$9`);
    /// `regex` = `.*` replaces the whole path by `target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewriteRequest {
    /// Set (replace).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Set from an nginx variable (`cookie_x`, `http_x`, `arg_x`, `remote_addr`, ..., `param_<arg>`, `method`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers_var: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_remove: Vec<String>,
    /// Append.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers_add: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers_add_var: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewriteResponse {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_remove: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers_add: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_send_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_read_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Total upstream tries including the first, 1..=5 (nginx `proxy_next_upstream_tries 5` caps it);
    /// absent → min(5, backends). 1 = never retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tries: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
}

/// Strings marked "var" may contain nginx variables `$name` / `${name}` (plus `$escaped_request_uri`,
/// `$pass_access_scheme`), resolved per request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardAuth {
    /// var; `http://` or `https://` (TLS not verified).
    pub url: String,
    /// Absent → GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Extra request headers to the auth service, values var.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auth_headers: BTreeMap<String, String>,
    /// var; sent as `X-Auth-Request-Redirect` when non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_request_redirect: Option<String>,
    /// Headers of a 2xx auth answer copied into the upstream request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream_headers: Vec<String>,
    /// var; on 401 the client is redirected (302) there. Complete URL (the compiler appended `?rd=...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_set_cookie: Option<bool>,
    /// Auth request timeout, absent → 5000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// User → password hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, PasswordHash>,
    /// Non-empty: the configuration could not be built (e.g. Secret missing): every request answers 500
    /// `AuthFail : invalid cfg <err>` (fail closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordHash {
    /// `apr1` (`$apr1$salt$hash`) or `bcrypt` (`$2a$`/`$2b$`/`$2y$`).
    pub algorithm: String,
    pub hash: String,
}

/// Addresses are IPv4/IPv6 addresses or CIDRs; the client address is the socket address (`$remote_addr`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Non-empty: only these addresses are let through.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// These addresses are refused (checked before `allow`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Limits count per rule and per client address, in each worker's shared dict (all workers share it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps: Option<u32>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Burst allowed above the rate, as a multiple of it; absent → 5 (ingress-nginx `limit-burst-multiplier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_multiplier: Option<u32>,
    /// Concurrent requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Addresses/CIDRs never limited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub whitelist: Vec<String>,
    /// Status of a refused request; absent → 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorPages {
    /// Upstream statuses (400..=599) replaced by the error backend's answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    /// The error backend as the user named it (Rule config); the compiler resolves it into `upstream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ErrorService>,
    /// Backend group name in the policy (filled by the compiler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorService {
    pub namespace: String,
    pub name: String,
    pub port: u16,
}
