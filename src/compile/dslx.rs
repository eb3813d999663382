//! dslx (Rule `spec.dslx`) validation, conversion to the policy `match` expression, complexity and the
//! original ALB's `internal_dsl` JSON length (ordering key). dataplane.md §3, controlplane.md §1.6.

use crate::crd::DslxTerm;
use serde_json::Value;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const MATCHERS: &[&str] = &["HOST", "URL", "SRC_IP", "METHOD", "HEADER", "PARAM", "COOKIE"];
/// Matchers that take a key (header / query argument / cookie name).
pub const DUAL_MATCHERS: &[&str] = &["HEADER", "PARAM", "COOKIE"];
pub const OPERATORS: &[&str] = &["EQ", "IN", "STARTS_WITH", "ENDS_WITH", "REGEX", "RANGE", "EXIST"];

/// One problem found in a dslx; `field` is relative to the object (`spec.dslx[0].values[1][1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DslxError {
    pub field: String,
    pub reason: &'static str,
    /// What is wrong, as the end of a sentence starting with the field.
    pub problem: String,
}

fn is_dual(matcher: &str) -> bool {
    DUAL_MATCHERS.contains(&matcher)
}

/// Every problem of a dslx (empty = valid). Any problem makes the whole Rule invalid.
pub fn validate(dslx: &[DslxTerm]) -> Vec<DslxError> {
    let mut errs = Vec::new();
    for (i, term) in dslx.iter().enumerate() {
        if !MATCHERS.contains(&term.kind.as_str()) {
            errs.push(DslxError {
                field: format!("spec.dslx[{i}].type"),
                reason: "UnknownMatcher",
                problem: format!("has unknown matcher {:?} (expected one of {})", term.kind, MATCHERS.join(", ")),
            });
        }
        if is_dual(&term.kind) && term.key.as_deref().unwrap_or("").is_empty() {
            errs.push(DslxError {
                field: format!("spec.dslx[{i}].key"),
                reason: "MissingKey",
                problem: format!("is required by matcher {} but is empty", term.kind),
            });
        }
        for (j, row) in term.values.iter().enumerate() {
            if let Some(e) = validate_row(i, j, row) {
                errs.push(e);
            }
        }
    }
    errs
}

fn validate_row(i: usize, j: usize, row: &[String]) -> Option<DslxError> {
    // Formatted only for a problem: most rows have none.
    let field = || format!("spec.dslx[{i}].values[{j}]");
    let Some(op) = row.first() else {
        return Some(DslxError {
            field: field(),
            reason: "WrongArity",
            problem: "is empty (expected [OP, args...])".into(),
        });
    };
    let args = &row[1..];
    let (ok, want) = match op.as_str() {
        "EQ" | "STARTS_WITH" | "ENDS_WITH" | "REGEX" => (args.len() == 1, "exactly 1 argument"),
        "RANGE" => (args.len() == 2, "exactly 2 arguments"),
        "EXIST" => (args.is_empty(), "no argument"),
        "IN" => (!args.is_empty(), "at least 1 argument"),
        _ => {
            return Some(DslxError {
                field: format!("{}[0]", field()),
                reason: "UnknownOperator",
                problem: format!("has unknown operator {op:?} (expected one of {})", OPERATORS.join(", ")),
            })
        }
    };
    if !ok {
        return Some(DslxError {
            field: field(),
            reason: "WrongArity",
            problem: format!("has {} argument(s) but {op} takes {want}", args.len()),
        });
    }
    match op.as_str() {
        "REGEX" => {
            if let Err(e) = compile_regex(&args[0]) {
                return Some(DslxError {
                    field: format!("{}[1]", field()),
                    reason: "InvalidRegex",
                    problem: format!("{:?} is not a valid PCRE regular expression: {e}", args[0]),
                });
            }
        }
        "RANGE" => {
            if let Err(why) = check_range(&args[0], &args[1]) {
                return Some(DslxError { field: field(), reason: "InvalidRange", problem: why });
            }
        }
        _ => {}
    }
    None
}

/// Compile as nginx does (`ngx.re`, PCRE without UTF mode).
fn compile_regex(pattern: &str) -> Result<(), pcre2::Error> {
    pcre2::bytes::RegexBuilder::new().utf(false).ucp(false).build(pattern).map(|_| ())
}

/// A decimal number: optional sign, digits, optional `.digits`.
fn parse_decimal(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (body, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    s.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Bound {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Num(f64),
    Str,
}

fn classify(s: &str) -> Bound {
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        Bound::V4(a)
    } else if let Ok(a) = s.parse::<Ipv6Addr>() {
        Bound::V6(a)
    } else if let Some(n) = parse_decimal(s) {
        Bound::Num(n)
    } else {
        Bound::Str
    }
}

/// RANGE bounds: same family (IPv4, IPv6, number) compared as such, strings compared bytewise; lo ≤ hi.
fn check_range(lo: &str, hi: &str) -> Result<(), String> {
    let fam = |x: Bound| match x {
        Bound::V4(_) => "an IPv4 address",
        Bound::V6(_) => "an IPv6 address",
        _ => "not an IP address",
    };
    let is_ip = |x: Bound| matches!(x, Bound::V4(_) | Bound::V6(_));
    let ordered = match (classify(lo), classify(hi)) {
        (Bound::V4(a), Bound::V4(b)) => a <= b,
        (Bound::V6(a), Bound::V6(b)) => a <= b,
        (Bound::Num(a), Bound::Num(b)) => a <= b,
        (a, b) if is_ip(a) || is_ip(b) => {
            return Err(format!("mixes address families: {lo:?} is {} but {hi:?} is {}", fam(a), fam(b)));
        }
        // A number and a plain string, or two strings: string order.
        _ => lo.as_bytes() <= hi.as_bytes(),
    };
    if ordered {
        Ok(())
    } else {
        Err(format!("has lower bound {lo:?} greater than upper bound {hi:?}"))
    }
}

/// Leaf `[OP, MATCHER, (key), args...]` of one row (non-empty).
fn leaf(term: &DslxTerm, row: &[String]) -> Value {
    let Some((op, args)) = row.split_first() else { return Value::Array(Vec::new()) };
    let mut v = Vec::with_capacity(row.len() + 2);
    v.push(Value::String(op.clone()));
    v.push(Value::String(term.kind.clone()));
    if is_dual(&term.kind) {
        v.push(Value::String(term.key.clone().unwrap_or_default()));
    }
    v.extend(args.iter().map(|a| Value::String(a.clone())));
    Value::Array(v)
}

/// Expression of one non-empty term: leaf, or `["OR", leaves...]`.
fn term_expr(term: &DslxTerm) -> Value {
    let mut leaves: Vec<Value> = term.values.iter().filter(|r| !r.is_empty()).map(|r| leaf(term, r)).collect();
    if leaves.len() == 1 {
        leaves.pop().unwrap_or_default()
    } else {
        let mut or = vec![Value::from("OR")];
        or.extend(leaves);
        Value::Array(or)
    }
}

fn live_terms(dslx: &[DslxTerm]) -> impl Iterator<Item = &DslxTerm> {
    dslx.iter().filter(|t| t.values.iter().any(|r| !r.is_empty()))
}

/// The policy `match` of a (valid) dslx: no one-element wrapper; empty → `["OR"]` (never matches).
pub fn to_match(dslx: &[DslxTerm]) -> Value {
    let mut exprs: Vec<Value> = live_terms(dslx).map(term_expr).collect();
    match exprs.len() {
        0 => Value::from(vec!["OR"]),
        1 => exprs.pop().unwrap_or_default(),
        _ => {
            let mut and = vec![Value::from("AND")];
            and.extend(exprs);
            Value::Array(and)
        }
    }
}

/// The original ALB's `internal_dsl`: as `to_match` but a single expression is wrapped in a one-element list.
#[cfg(test)]
pub fn to_internal_dsl(dslx: &[DslxTerm]) -> Value {
    let live = live_terms(dslx).count();
    match live {
        0 => Value::Array(vec![]),
        1 => Value::Array(vec![to_match(dslx)]),
        _ => to_match(dslx),
    }
}

/// `go_json_len(&to_internal_dsl(dslx))` (the ordering key) from `matcher`, the dslx's [`to_match`], without
/// building the `internal_dsl` again: `[]`, `[matcher]` or `matcher` itself.
pub fn internal_dsl_len(dslx: &[DslxTerm], matcher: &Value) -> usize {
    match live_terms(dslx).count() {
        0 => 2,
        1 => 2 + go_json_len(matcher),
        _ => go_json_len(matcher),
    }
}

/// Length in bytes of Go's `json.Marshal` of a value made of arrays and strings
/// (`<`, `>`, `&`, U+2028, U+2029 and control characters escaped as `\uXXXX`).
pub fn go_json_len(v: &Value) -> usize {
    match v {
        Value::Array(items) => 2 + items.iter().map(go_json_len).sum::<usize>() + items.len().saturating_sub(1),
        Value::String(s) => {
            // Bytes as they are, plus what Go's escaping adds; U+2028 and U+2029 (3 bytes) become 6.
            let extra: usize = s
                .bytes()
                .map(|b| match b {
                    b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
                    b'<' | b'>' | b'&' | 0..=0x1f => 5,
                    _ => 0,
                })
                .sum();
            let separators = if s.is_ascii() { 0 } else { s.matches(['\u{2028}', '\u{2029}']).count() };
            2 + s.len() + extra + 3 * separators
        }
        // Not produced by the conversion; fall back to serde's encoding.
        other => other.to_string().len(),
    }
}

/// Complexity priority (bigger sorts first among equal user priorities), controlplane.md §1.6.
pub fn complexity(dslx: &[DslxTerm]) -> i64 {
    let mut c: i64 = 0;
    for term in dslx {
        match term.kind.as_str() {
            "HOST" => match term.values.first().and_then(|r| r.first()).map(String::as_str) {
                Some("EQ" | "IN") => c += 50000,
                Some("ENDS_WITH") => c += 10000,
                _ => {}
            },
            "URL" => {
                for row in &term.values {
                    let arg_len = row.get(1).map_or(0, |a| a.len()) as i64;
                    match row.first().map(String::as_str) {
                        Some("EQ") => c += 2000,
                        Some("STARTS_WITH") => c += 1000 + arg_len + 2,
                        Some("REGEX") => c += 1000 + arg_len,
                        _ => {}
                    }
                }
            }
            _ => c += 100 * term.values.len() as i64,
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dslx(v: Value) -> Vec<DslxTerm> {
        serde_json::from_value(v).unwrap()
    }

    fn term(kind: &str, key: Option<&str>, rows: Value) -> Vec<DslxTerm> {
        dslx(json!([{"type": kind, "key": key, "values": rows}]))
    }

    #[test]
    fn every_matcher_and_operator_converts() {
        let rows: Vec<(&str, Vec<&str>)> = vec![
            ("EQ", vec!["a"]),
            ("IN", vec!["a", "b"]),
            ("STARTS_WITH", vec!["/a"]),
            ("ENDS_WITH", vec!["*.a.com"]),
            ("REGEX", vec!["^/a.*$"]),
            ("RANGE", vec!["1", "9"]),
            ("EXIST", vec![]),
        ];
        for m in MATCHERS {
            let key = is_dual(m).then_some("k_1");
            for (op, args) in &rows {
                let mut row = vec![op.to_string()];
                row.extend(args.iter().map(|s| s.to_string()));
                let d = term(m, key, json!([row]));
                assert!(validate(&d).is_empty(), "{m} {op}: {:?}", validate(&d));
                let mut want = vec![op.to_string(), m.to_string()];
                if let Some(k) = key {
                    want.push(k.into());
                }
                want.extend(args.iter().map(|s| s.to_string()));
                assert_eq!(to_match(&d), json!(want), "{m} {op}");
                assert_eq!(to_internal_dsl(&d), json!([want]), "{m} {op}");
            }
        }
    }

    #[test]
    fn shapes_or_and_and() {
        let d = dslx(json!([
            {"type": "URL", "values": [["STARTS_WITH", "/a"], ["STARTS_WITH", "/b"]]},
            {"type": "HOST", "values": [["EQ", "a.com"]]}
        ]));
        let want =
            json!(["AND", ["OR", ["STARTS_WITH", "URL", "/a"], ["STARTS_WITH", "URL", "/b"]], ["EQ", "HOST", "a.com"]]);
        assert_eq!(to_match(&d), want);
        assert_eq!(to_internal_dsl(&d), want);
        // Single term with two rows: OR, wrapped only in internal_dsl.
        let d = term("URL", None, json!([["EQ", "/a"], ["EQ", "/b"]]));
        assert_eq!(to_match(&d), json!(["OR", ["EQ", "URL", "/a"], ["EQ", "URL", "/b"]]));
        assert_eq!(to_internal_dsl(&d), json!([["OR", ["EQ", "URL", "/a"], ["EQ", "URL", "/b"]]]));
        // Empty term skipped; empty dslx never matches.
        let d = dslx(json!([{"type": "HOST", "values": []}, {"type": "URL", "values": [["EQ", "/"]]}]));
        assert_eq!(to_match(&d), json!(["EQ", "URL", "/"]));
        assert_eq!(to_match(&[]), json!(["OR"]));
        assert_eq!(to_internal_dsl(&[]), json!([]));
        // Key of a dual matcher sits between matcher and args.
        let d = term("HEADER", Some("x_user"), json!([["IN", "a", "b"]]));
        assert_eq!(to_match(&d), json!(["IN", "HEADER", "x_user", "a", "b"]));
    }

    fn one_err(d: &[DslxTerm]) -> DslxError {
        let e = validate(d);
        assert_eq!(e.len(), 1, "{e:?}");
        e[0].clone()
    }

    #[test]
    fn validation_errors() {
        let e = one_err(&term("PATH", None, json!([["EQ", "/"]])));
        assert_eq!((e.reason, e.field.as_str()), ("UnknownMatcher", "spec.dslx[0].type"));
        let e = one_err(&term("URL", None, json!([["LIKE", "/"]])));
        assert_eq!((e.reason, e.field.as_str()), ("UnknownOperator", "spec.dslx[0].values[0][0]"));
        for bad in [
            json!(["EQ"]),
            json!(["EQ", "a", "b"]),
            json!(["RANGE", "1"]),
            json!(["EXIST", "x"]),
            json!(["IN"]),
            json!([]),
        ] {
            let e = one_err(&term("URL", None, json!([["EQ", "/"], bad])));
            assert_eq!((e.reason, e.field.as_str()), ("WrongArity", "spec.dslx[0].values[1]"), "{bad}");
        }
        let e = one_err(&term("COOKIE", None, json!([["EXIST"]])));
        assert_eq!((e.reason, e.field.as_str()), ("MissingKey", "spec.dslx[0].key"));
        let e = one_err(&term("PARAM", Some(""), json!([["EXIST"]])));
        assert_eq!(e.reason, "MissingKey");
        let e = one_err(&term("URL", None, json!([["REGEX", "/(a"]])));
        assert_eq!((e.reason, e.field.as_str()), ("InvalidRegex", "spec.dslx[0].values[0][1]"));
        assert!(e.problem.contains("/(a"), "{}", e.problem);
        // Bytes that are not UTF-8 patterns are fine without UTF mode; lookbehind etc. are PCRE.
        assert!(validate(&term("URL", None, json!([["REGEX", "(?<=/a)\\d+\\xff"]]))).is_empty());
    }

    #[test]
    fn range_validation() {
        let ok = |lo: &str, hi: &str| check_range(lo, hi).is_ok();
        assert!(ok("10.0.0.1", "10.0.0.255"));
        assert!(ok("10.0.0.1", "10.0.0.1"));
        assert!(!ok("10.0.0.2", "10.0.0.1"));
        assert!(ok("::1", "fe80::1"));
        assert!(!ok("fe80::1", "::1"));
        assert!(ok("2", "10"), "numbers compare numerically");
        assert!(!ok("10", "2"));
        assert!(ok("-1.5", "0"));
        assert!(ok("a", "b"));
        assert!(!ok("b", "a"));
        assert!(!ok("10.0.0.1", "::1"), "mixed families");
        assert!(!ok("::1", "10.0.0.1"));
        assert!(!ok("10.0.0.1", "zzz"));
        assert!(!ok("1", "10.0.0.1"));
        assert!(ok("1", "a"), "number vs string: string order");
        let e = one_err(&term("SRC_IP", None, json!([["RANGE", "10.0.0.9", "10.0.0.1"]])));
        assert_eq!((e.reason, e.field.as_str()), ("InvalidRange", "spec.dslx[0].values[0]"));
        let e = one_err(&term("SRC_IP", None, json!([["RANGE", "10.0.0.1", "::1"]])));
        assert!(e.problem.contains("IPv4") && e.problem.contains("IPv6"), "{}", e.problem);
    }

    #[test]
    fn complexity_examples() {
        let c = |v: Value| complexity(&dslx(v));
        assert_eq!(c(json!([{"type": "HOST", "values": [["EQ", "a.com"]]}])), 50000);
        assert_eq!(c(json!([{"type": "HOST", "values": [["IN", "a.com", "b.com"]]}])), 50000);
        assert_eq!(c(json!([{"type": "HOST", "values": [["ENDS_WITH", "*.a.com"], ["EQ", "a.com"]]}])), 10000);
        assert_eq!(c(json!([{"type": "HOST", "values": [["REGEX", "a"]]}])), 0);
        assert_eq!(c(json!([{"type": "URL", "values": [["EQ", "/a"]]}])), 2000);
        assert_eq!(c(json!([{"type": "URL", "values": [["STARTS_WITH", "/api"]]}])), 1006);
        assert_eq!(c(json!([{"type": "URL", "values": [["REGEX", "^/a"]]}])), 1003);
        assert_eq!(
            c(
                json!([{"type": "URL", "values": [["EQ", "/a"], ["STARTS_WITH", "/"]]}, {"type": "HOST", "values": [["EQ", "x"]]}])
            ),
            2000 + 1003 + 50000
        );
        assert_eq!(c(json!([{"type": "HEADER", "key": "a", "values": [["EQ", "1"], ["EQ", "2"]]}])), 200);
        assert_eq!(
            c(json!([{"type": "METHOD", "values": [["EQ", "GET"]]}, {"type": "SRC_IP", "values": [["EXIST"]]}])),
            200
        );
        // docs/policy.md example: HOST EQ + URL STARTS_WITH /api.
        assert_eq!(
            c(
                json!([{"type": "HOST", "values": [["EQ", "shop.example.com"]]}, {"type": "URL", "values": [["STARTS_WITH", "/api"]]}])
            ),
            51006
        );
    }

    #[test]
    fn go_json_length() {
        let v = json!([["STARTS_WITH", "URL", "/"]]);
        assert_eq!(go_json_len(&v), serde_json::to_string(&v).unwrap().len());
        assert_eq!(go_json_len(&json!("<a&b>")), 2 + 6 + 1 + 6 + 1 + 6);
        assert_eq!(go_json_len(&json!("a\"\\\n\u{1}é")), 2 + 1 + 2 + 2 + 2 + 6 + 2);
        assert_eq!(go_json_len(&json!(["a", "b"])), "[\"a\",\"b\"]".len());
        assert_eq!(go_json_len(&json!([])), 2);
        assert_eq!(go_json_len(&json!("a\u{2028}b\u{2029}\u{7f}\u{1f}")), 2 + 1 + 6 + 1 + 6 + 1 + 6);
    }

    #[test]
    fn internal_dsl_len_is_the_length_of_internal_dsl() {
        for d in [
            json!([]),
            json!([{"type": "HOST", "values": []}]),
            json!([{"type": "URL", "values": [["STARTS_WITH", "/<a>"]]}]),
            json!([{"type": "URL", "values": [["EQ", "/a"], ["EQ", "/b"]]}, {"type": "HOST", "values": []}]),
            json!([{"type": "URL", "values": [["EQ", "/a"]]}, {"type": "HEADER", "key": "k", "values": [["IN", "1", "2"]]}]),
        ] {
            let d = dslx(d);
            assert_eq!(internal_dsl_len(&d, &to_match(&d)), go_json_len(&to_internal_dsl(&d)), "{d:?}");
        }
    }
}
