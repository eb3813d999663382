//! Ingress (`networking.k8s.io/v1`) → Frontend/Rule translation (controlplane.md §2). Pure: no I/O.
//!
//! Used by the leader controller, which writes the result to the API server as real Frontend/Rule CRs
//! ([`expected`] → [`plan`] / [`cleanup`], then [`load_balancer_status`]), and by `alb standalone`, which
//! translates every Ingress of its folder in memory ([`translate_all`]).
//!
//! * [`object`]: the Ingress as alb reads and caches it (lean metadata; decodes from the API's JSON).
//! * [`claim`]: which Ingresses an ALB serves (class, projects; §2.1).
//! * [`canary`], [`balance`]: the ingress-nginx canary, affinity and load-balancing annotations.
//! * [`annotations`]: typed reading of the Ingress annotations, one function per key (§2.6, ingress-nginx keys;
//!   docs/annotations.md is the table, checked against the key registry by a test).
//! * [`translate`]: SSL strategy, Frontends, one Rule per path per Frontend (§2.2, §2.3).
//! * [`plan`]: the diff against what exists (§2.4).
//! * [`status`]: the add-only `status.loadBalancer` merge (§2.5).
//!
//! Deliberate differences from the original ALB (each covered by a test):
//! * Rule names are `<ft>-<4 chars>` derived from a hash (ingress ns/name, rule index, path index, Frontend),
//!   not random, so two leaders or a restart compute the same names; existing Rules keep their names.
//! * The host in `dslx` is lower-cased (request hosts are lower case); `spec.domain` keeps the host as written.
//! * A path with an invalid `backend-protocol`, a resource backend or an unresolvable named port is skipped
//!   with an [`IngressWarning`] (the original appended a nil Rule and crashed the sync).
//! * Annotations follow ingress-nginx where the original ALB differed: `rewrite-target` replaces the whole path
//!   (captures of the path regex, in `config.rewrite`); `ssl-redirect` defaults to true for TLS hosts; every
//!   multi-prefix key accepts the three prefixes; invalid values are ignored with a Warning (auth fails closed);
//!   snippets are refused; features land in the Rule's `spec.config`, never in nginx.conf.

pub mod annotations;
pub mod balance;
pub mod canary;
pub mod claim;
pub mod object;
pub mod plan;
pub mod status;
pub mod translate;

#[cfg(test)]
mod testutil;

use crate::compile::service::Service;
use crate::crd::Frontend;
use k8s_openapi::api::core::v1::Namespace;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use claim::claims;
pub use object::Ingress;
pub use plan::{cleanup, plan, Plan};
pub use status::load_balancer_status;
#[allow(unused_imports)] // public API: callers name the type
pub use translate::{expected, translate_all, Expected};

/// `ALL_ALL` in `config.projects` / project labels: every project.
pub const ALL_PROJECTS: &str = "ALL_ALL";
/// Priority of an ingress Rule without `alb.<d>/ingress-rule-priority-<r>-<p>`.
pub const DEFAULT_RULE_PRIORITY: i64 = 5;

/// `config.defaultSSLStrategy` (controlplane.md §1.3, §2.2): which Frontends an Ingress host lands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslStrategy {
    /// http only, unless the host has TLS (the original's default).
    #[default]
    Never,
    /// https when the Ingress asks for it (`alb.networking.<d>/enable-https: "true"`).
    Request,
    /// https unless the Ingress opts out (`enable-https: "false"`).
    Always,
    /// http and https unless the Ingress opts out.
    Both,
}

impl SslStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            SslStrategy::Never => "Never",
            SslStrategy::Request => "Request",
            SslStrategy::Always => "Always",
            SslStrategy::Both => "Both",
        }
    }
}

impl fmt::Display for SslStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslStrategy {
    type Err = String;
    /// Case-insensitive `Never`, `Request`, `Always`, `Both`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "never" => Ok(SslStrategy::Never),
            "request" => Ok(SslStrategy::Request),
            "always" => Ok(SslStrategy::Always),
            "both" => Ok(SslStrategy::Both),
            _ => Err(format!("{s:?} is not an SSL strategy (Never, Request, Always, Both)")),
        }
    }
}

/// What the translation needs to know about the ALB (plain values: the ALB2 type is not used here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlbIngressConfig {
    pub alb_name: String,
    /// Namespace of the ALB: every generated Frontend/Rule lives there.
    pub alb_namespace: String,
    /// Label domain, `cpaas.io` by default.
    pub domain: String,
    /// uid of the ALB2 (`crd.alauda.io/v2beta1`): ownerReference of created Frontends. `None` in standalone.
    pub alb_uid: Option<String>,
    /// `config.ingressHTTPPort` (80); 0 disables http for ingresses.
    pub http_port: u16,
    /// `config.ingressHTTPSPort` (443); 0 disables https for ingresses.
    pub https_port: u16,
    /// `config.defaultSSLStrategy` (default `Never`).
    pub ssl_strategy: SslStrategy,
    /// `config.defaultSSLCert` as `ns/name`: certificate of a created https Frontend (stored as `ns_name`).
    pub default_ssl_cert: Option<String>,
    /// `config.projects`; [`ALL_PROJECTS`] = every project. Empty: no Ingress is claimed (instance mode).
    pub projects: Vec<String>,
    /// ALB label `<d>/role=port`: projects come from the Frontends' labels instead of `projects`.
    pub port_mode: bool,
}

impl Default for AlbIngressConfig {
    /// The operator's defaults (controlplane.md §1.3) for an ALB named `alb` in `default`, serving all projects.
    fn default() -> Self {
        AlbIngressConfig {
            alb_name: "alb".into(),
            alb_namespace: "default".into(),
            domain: crate::crd::DEFAULT_DOMAIN.into(),
            alb_uid: None,
            http_port: 80,
            https_port: 443,
            ssl_strategy: SslStrategy::Never,
            default_ssl_cert: None,
            projects: vec![ALL_PROJECTS.into()],
            port_mode: false,
        }
    }
}

/// Everything the translation reads besides the Ingress itself.
#[derive(Debug, Clone, Copy)]
pub struct IngressWorld<'a> {
    /// Every Ingress (used by [`translate_all`]); shared with the controller's store, not copied per pass.
    pub ingresses: &'a [Arc<Ingress>],
    /// Namespaces, for their `<d>/project` label.
    pub namespaces: &'a [Namespace],
    /// Services, to resolve backend ports given by name (shared with the store like `ingresses`).
    pub services: &'a [Arc<Service>],
    /// Existing Frontends of this ALB (Frontends of another namespace are ignored).
    pub frontends: &'a [Frontend],
    /// Which of `ingresses` carry the canary annotation, found once for every Ingress translated with this world
    /// (and its copies): `&CanaryIndex::default()` where a world is made.
    pub canaries: &'a CanaryIndex,
}

/// The positions in [`IngressWorld::ingresses`] of the Ingresses with the canary annotation. Every main Ingress
/// looks for the canaries of its paths: without the index that is a scan of every Ingress per Ingress.
#[derive(Debug, Default)]
pub struct CanaryIndex(std::sync::OnceLock<(usize, usize, Vec<usize>)>);

impl CanaryIndex {
    /// The canary positions of `ingresses` (computed once; computed afresh for another slice).
    pub fn of<'s>(&'s self, ingresses: &[Arc<Ingress>]) -> std::borrow::Cow<'s, [usize]> {
        let id = (ingresses.as_ptr() as usize, ingresses.len());
        let scan = || -> Vec<usize> {
            ingresses.iter().enumerate().filter(|(_, i)| canary::marked(i)).map(|(n, _)| n).collect()
        };
        let (ptr, len, found) = self.0.get_or_init(|| (id.0, id.1, scan()));
        if (*ptr, *len) == id {
            std::borrow::Cow::Borrowed(found)
        } else {
            std::borrow::Cow::Owned(scan())
        }
    }
}

/// Something of one Ingress that could not be translated; the rest of the Ingress still is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IngressWarning {
    pub namespace: String,
    pub name: String,
    /// CamelCase code, e.g. `InvalidBackendProtocol`.
    pub reason: String,
    /// Names the field or annotation and its value.
    pub message: String,
}

impl fmt::Display for IngressWarning {
    /// `ingress ns/name: Reason: message`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ingress {}/{}: {}: {}", self.namespace, self.name, self.reason, self.message)
    }
}

#[cfg(test)]
mod canary_index_tests {
    use super::testutil::{annotate, ingress};
    use super::*;
    use serde_json::json;

    #[test]
    fn canary_positions_are_found_once_per_slice() {
        let spec = json!({"rules": []});
        let ings = vec![
            ingress("a", "main", spec.clone()),
            annotate(ingress("a", "can", spec.clone()), canary::CANARY, "true"),
            annotate(ingress("b", "other", spec.clone()), "example.com/team", "x"),
            annotate(ingress("b", "can2", spec.clone()), canary::CANARY, "false"),
        ]
        .into_iter()
        .map(Arc::new)
        .collect::<Vec<_>>();
        let idx = CanaryIndex::default();
        assert_eq!(&*idx.of(&ings), &[1, 3], "the annotation's presence, whatever its value (parse decides)");
        assert!(matches!(idx.of(&ings), std::borrow::Cow::Borrowed(_)), "computed once");
        let fewer = &ings[..2];
        assert_eq!(&*idx.of(fewer), &[1], "another slice is scanned afresh");
        assert_eq!(&*idx.of(&ings), &[1, 3]);
    }
}
