//! Router index hints (docs/policy.md "Index"): a necessary condition on host and path, derived from one
//! top-level term of the dslx each. Every non-empty dslx term is a top-level AND child of `match` (or the
//! whole expression), so requiring it is sound.

use crate::crd::DslxTerm;
use crate::policy::Index;

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

/// Hosts and single-label wildcards of a HOST term whose rows are all EQ / IN / ENDS_WITH `*.x`.
fn host_dimension(term: &DslxTerm) -> Option<(Vec<String>, Vec<String>)> {
    let (mut hosts, mut wild) = (Vec::new(), Vec::new());
    for row in &term.values {
        match row.first().map(String::as_str) {
            Some("EQ" | "IN") if row.len() >= 2 => row[1..].iter().for_each(|h| push_unique(&mut hosts, h)),
            Some("ENDS_WITH") if row.len() == 2 && row[1].starts_with("*.") && row[1].len() > 2 => {
                push_unique(&mut wild, &row[1])
            }
            _ => return None,
        }
    }
    Some((hosts, wild))
}

/// Exact paths and prefixes of a URL term whose rows are all EQ / IN / STARTS_WITH (a `""` prefix admits
/// every path, so it disqualifies the term).
fn path_dimension(term: &DslxTerm) -> Option<(Vec<String>, Vec<String>)> {
    let (mut paths, mut prefixes) = (Vec::new(), Vec::new());
    for row in &term.values {
        match row.first().map(String::as_str) {
            Some("EQ" | "IN") if row.len() >= 2 => row[1..].iter().for_each(|p| push_unique(&mut paths, p)),
            Some("STARTS_WITH") if row.len() == 2 && !row[1].is_empty() => push_unique(&mut prefixes, &row[1]),
            _ => return None,
        }
    }
    Some((paths, prefixes))
}

/// Index of a (valid) dslx; `None` when it constrains neither host nor path.
pub fn derive(dslx: &[DslxTerm]) -> Option<Index> {
    let live = || dslx.iter().filter(|t| !t.values.is_empty());
    let mut index = Index::default();
    if let Some((h, w)) = live().filter(|t| t.kind == "HOST").find_map(host_dimension) {
        index.hosts = h;
        index.wildcard_hosts = w;
    }
    if let Some((p, s)) = live().filter(|t| t.kind == "URL").find_map(path_dimension) {
        index.paths = p;
        index.prefixes = s;
    }
    (!index.is_empty()).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::testutil::{eval, index_admits, Req};
    use serde_json::{json, Value};

    fn dslx(v: Value) -> Vec<DslxTerm> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn derives_hosts_and_paths() {
        let d = dslx(json!([
            {"type": "URL", "values": [["STARTS_WITH", "/api"], ["EQ", "/x"], ["IN", "/y", "/z"]]},
            {"type": "HOST", "values": [["EQ", "a.com"], ["ENDS_WITH", "*.b.com"], ["IN", "c.com", "a.com"]]}
        ]));
        let i = derive(&d).unwrap();
        assert_eq!(i.hosts, vec!["a.com", "c.com"]);
        assert_eq!(i.wildcard_hosts, vec!["*.b.com"]);
        assert_eq!(i.paths, vec!["/x", "/y", "/z"]);
        assert_eq!(i.prefixes, vec!["/api"]);
    }

    #[test]
    fn leaves_unsafe_dimensions_empty() {
        // REGEX in the host term → any host; "" prefix → any path.
        let d = dslx(json!([
            {"type": "HOST", "values": [["EQ", "a.com"], ["REGEX", "b"]]},
            {"type": "URL", "values": [["STARTS_WITH", ""]]}
        ]));
        assert_eq!(derive(&d), None);
        // ENDS_WITH without "*." is not a single-label wildcard the router knows.
        assert_eq!(derive(&dslx(json!([{"type": "HOST", "values": [["ENDS_WITH", "x.a.com"]]}]))), None);
        // A later qualifying term is used when the first does not qualify; empty terms are ignored.
        let d = dslx(json!([
            {"type": "URL", "values": []},
            {"type": "URL", "values": [["REGEX", "^/a"]]},
            {"type": "URL", "values": [["STARTS_WITH", "/a"]]}
        ]));
        assert_eq!(derive(&d).unwrap().prefixes, vec!["/a"]);
        assert_eq!(derive(&[]), None);
        assert_eq!(derive(&dslx(json!([{"type": "METHOD", "values": [["EQ", "GET"]]}]))), None);
    }

    /// Property: whenever a rule's match is true for a request, its index admits the request.
    #[test]
    fn index_is_sound() {
        let dslxs = [
            json!([{"type": "HOST", "values": [["EQ", "a.com"]]}]),
            json!([{"type": "HOST", "values": [["ENDS_WITH", "*.a.com"]]}, {"type": "URL", "values": [["STARTS_WITH", "/a"]]}]),
            json!([{"type": "URL", "values": [["STARTS_WITH", "/a"], ["EQ", "/b"]]}, {"type": "HOST", "values": [["IN", "a.com", "x.a.com"], ["ENDS_WITH", "*.b.com"]]}]),
            json!([{"type": "URL", "values": [["REGEX", "^/a"]]}, {"type": "URL", "values": [["IN", "/a", "/a/b"]]}]),
            json!([{"type": "HOST", "values": [["REGEX", "a"]]}, {"type": "HOST", "values": [["EQ", "a.com"], ["ENDS_WITH", "*.com"]]}]),
            json!([{"type": "URL", "values": [["STARTS_WITH", ""]]}, {"type": "METHOD", "values": [["EQ", "GET"]]}]),
            json!([{"type": "HEADER", "key": "x_a", "values": [["EXIST"]]}, {"type": "URL", "values": [["STARTS_WITH", "/"]]}]),
            json!([{"type": "URL", "values": [["EQ", "/"]]}, {"type": "HOST", "values": []}]),
            json!([{"type": "SRC_IP", "values": [["RANGE", "10.0.0.0", "10.0.0.255"]]}, {"type": "HOST", "values": [["ENDS_WITH", "*.b.com"]]}]),
        ];
        let hosts = ["a.com", "x.a.com", "xy.a.com", "x.y.a.com", "b.com", "q.b.com", "com", "", "z.com"];
        let paths = ["/", "/a", "/a/b", "/ab", "/b", "/b/", "/c", ""];
        let mut matched = 0;
        for d in &dslxs {
            let d = dslx(d.clone());
            assert!(crate::compile::dslx::validate(&d).is_empty());
            let m = crate::compile::dslx::to_match(&d);
            let idx = derive(&d);
            for h in hosts {
                for p in paths {
                    for ip in ["10.0.0.5", "1.1.1.1"] {
                        let req = Req::new(h, p).src_ip(ip).header("x_a", "1");
                        if eval(&m, &req) {
                            matched += 1;
                            assert!(
                                idx.as_ref().is_none_or(|i| index_admits(i, &req)),
                                "{m} matches {h}{p} but index {idx:?} refuses it"
                            );
                        }
                    }
                }
            }
        }
        assert!(matched > 20, "the sample should exercise matches, got {matched}");
    }
}
