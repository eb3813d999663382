//! Reading a folder of manifests (standalone mode): every `*.yaml`, `*.yml` and `*.json`, multi-document YAML
//! and `kind: List` included. A file that does not parse keeps its last good content, so a half-saved edit
//! never drops routes; the error names the file and document.

use crate::compile::service::Service;
use crate::compile::slice::EndpointSlice;
use crate::compile::Snapshot;
use crate::crd::{Frontend, Rule};
use crate::ingress::Ingress;
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::IngressClass;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Problem {
    pub file: PathBuf,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

/// The objects `alb standalone` translates into Frontends/Rules (`src/ingress/`) before compiling.
#[derive(Debug, Clone, Default)]
pub struct IngressObjects {
    pub ingresses: Vec<Arc<Ingress>>,
    /// Read so that they are not reported as unknown; the claim does not consult them (controlplane.md §2.1).
    pub ingress_classes: Vec<IngressClass>,
    /// For their `<d>/project` label.
    pub namespaces: Vec<Namespace>,
}

/// What identifies a file's content without reading it: modification time, size and inode.
type Stamp = (Option<std::time::SystemTime>, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok(), m.len(), m.ino()))
}

/// Objects of one file, already typed: a change re-reads only the files whose [`Stamp`] changed.
#[derive(Debug, Clone, Default)]
struct FileObjects {
    stamp: Option<Stamp>,
    snap: Snapshot,
    ing: IngressObjects,
    problems: Vec<Problem>,
}

/// The folder, with the last good content of each file.
#[derive(Debug, Default)]
pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileObjects>,
}

fn is_manifest(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
        && !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// Parses one file's text into JSON documents (YAML is a superset of JSON).
pub fn parse_documents(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v: serde_yaml::Value =
            serde::Deserialize::deserialize(de).with_context(|| format!("document {}", i + 1))?;
        if v.is_null() {
            continue;
        }
        let v: Value = serde_json::to_value(v).with_context(|| format!("document {}", i + 1))?;
        if v.get("kind").and_then(Value::as_str) == Some("List") {
            if let Some(items) = v.get("items").and_then(Value::as_array) {
                docs.extend(items.iter().cloned());
            }
        } else {
            docs.push(v);
        }
    }
    Ok(docs)
}

impl ManifestDir {
    pub fn new(dir: &Path) -> ManifestDir {
        ManifestDir { dir: dir.to_path_buf(), files: BTreeMap::new() }
    }

    /// Re-reads the folder. Returns the problems found; files with problems keep their previous objects.
    pub fn reload(&mut self) -> Result<Vec<Problem>> {
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        let rd =
            std::fs::read_dir(&self.dir).with_context(|| format!("reading manifest folder {}", self.dir.display()))?;
        let mut paths: Vec<PathBuf> =
            rd.flatten().map(|e| e.path()).filter(|p| p.is_file() && is_manifest(p)).collect();
        paths.sort();
        for path in paths {
            seen.push(path.clone());
            let st = stamp(&path);
            if st.is_some() && self.files.get(&path).is_some_and(|f| f.stamp == st) {
                continue;
            }
            let parsed = std::fs::read_to_string(&path).map_err(anyhow::Error::from).and_then(|t| parse_documents(&t));
            match parsed {
                Ok(docs) => {
                    let (snap, ing, problems) = typed(&path, docs);
                    self.files.insert(path, FileObjects { stamp: st, snap, ing, problems });
                }
                Err(e) => {
                    let kept = if self.files.contains_key(&path) { " (keeping its previous content)" } else { "" };
                    problems.push(Problem { file: path, message: format!("{e:#}{kept}") });
                }
            }
        }
        self.files.retain(|p, _| seen.contains(p));
        Ok(problems)
    }

    /// Builds the compiler's snapshot; objects of unknown kinds or that do not fit their type are reported.
    /// Ingress-related objects are not part of it: see [`ManifestDir::snapshot_with_ingresses`].
    #[allow(dead_code)] // the standalone paths use snapshot_with_ingresses
    pub fn snapshot(&self) -> (Snapshot, Vec<Problem>) {
        let (snap, _, problems) = self.snapshot_with_ingresses();
        (snap, problems)
    }

    /// The compiler's snapshot plus the Ingresses, IngressClasses and Namespaces of the folder.
    pub fn snapshot_with_ingresses(&self) -> (Snapshot, IngressObjects, Vec<Problem>) {
        let mut snap = Snapshot::default();
        let mut ing = IngressObjects::default();
        let mut problems = Vec::new();
        for f in self.files.values() {
            snap.frontends.extend_from_slice(&f.snap.frontends);
            snap.rules.extend_from_slice(&f.snap.rules);
            snap.services.extend_from_slice(&f.snap.services);
            snap.endpoint_slices.extend_from_slice(&f.snap.endpoint_slices);
            snap.secrets.extend_from_slice(&f.snap.secrets);
            ing.ingresses.extend_from_slice(&f.ing.ingresses);
            ing.ingress_classes.extend_from_slice(&f.ing.ingress_classes);
            ing.namespaces.extend_from_slice(&f.ing.namespaces);
            problems.extend_from_slice(&f.problems);
        }
        (snap, ing, problems)
    }
}

/// Types the documents of one file; objects of unknown kinds or that do not fit their type are reported.
fn typed(path: &Path, docs: Vec<Value>) -> (Snapshot, IngressObjects, Vec<Problem>) {
    let mut snap = Snapshot::default();
    let mut ing = IngressObjects::default();
    let mut problems = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let mut doc = doc;
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
        let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
        let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        // Objects without a namespace land in "default", as kubectl would put them (cluster-scoped kinds
        // excepted).
        let cluster_scoped = matches!(kind.as_str(), "Namespace" | "IngressClass");
        if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut).filter(|_| !cluster_scoped) {
            meta.entry("namespace").or_insert_with(|| Value::String("default".into()));
        }
        let what = format!("document {} ({kind} {name:?})", i + 1);
        let res: Result<(), serde_json::Error> = match (api.as_str(), kind.as_str()) {
            ("crd.alauda.io/v1", "Frontend") => {
                serde_json::from_value::<Frontend>(doc).map(|o| snap.frontends.push(o.into()))
            }
            ("crd.alauda.io/v1", "Rule") => serde_json::from_value::<Rule>(doc).map(|o| snap.rules.push(o.into())),
            ("v1", "Service") => serde_json::from_value(doc).map(|o: Service| snap.services.push(o.into())),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                serde_json::from_value(doc).map(|o: EndpointSlice| snap.endpoint_slices.push(o.into()))
            }
            ("networking.k8s.io/v1", "Ingress") => {
                serde_json::from_value(doc).map(|o: Ingress| ing.ingresses.push(Arc::new(o)))
            }
            ("networking.k8s.io/v1", "IngressClass") => {
                serde_json::from_value(doc).map(|o| ing.ingress_classes.push(o))
            }
            ("v1", "Namespace") => serde_json::from_value(doc).map(|o| ing.namespaces.push(o)),
            ("v1", "Secret") => serde_json::from_value(doc).map(|o| match tls_secret(o) {
                Ok(s) => snap.secrets.push(s.into()),
                Err(t) => problems.push(Problem {
                    file: path.to_path_buf(),
                    message: format!(
                        "{what}: Secret of type {t:?} is not read (only kubernetes.io/tls and Opaque); skipped"
                    ),
                }),
            }),
            _ => {
                problems.push(Problem {
                    file: path.to_path_buf(),
                    message: format!(
                        "{what}: kind {kind:?} of apiVersion {api:?} is not read by alb standalone; skipped"
                    ),
                });
                Ok(())
            }
        };
        if let Err(e) = res {
            problems.push(Problem { file: path.to_path_buf(), message: format!("{what}: {e}; skipped") });
        }
    }
    (snap, ing, problems)
}

/// A `kubernetes.io/tls` or `Opaque` Secret with its `stringData` merged into `data` (as the API server does), or the type
/// it has instead.
fn tls_secret(mut s: k8s_openapi::api::core::v1::Secret) -> Result<k8s_openapi::api::core::v1::Secret, String> {
    let t = s.type_.clone().unwrap_or_else(|| "Opaque".into());
    // Opaque: basic auth users (compile/features.rs)
    if t != "kubernetes.io/tls" && t != "Opaque" {
        return Err(t);
    }
    if let Some(sd) = s.string_data.take() {
        let data = s.data.get_or_insert_with(Default::default);
        for (k, v) in sd {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_and_lists() {
        let docs = parse_documents("a: 1\n---\n---\nkind: List\nitems:\n- b: 2\n- c: 3\n").unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[2]["c"], 3);
    }

    #[test]
    fn broken_file_keeps_previous_content() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("svc.yaml");
        std::fs::write(&f, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n")
            .unwrap();
        let mut m = ManifestDir::new(dir.path());
        assert!(m.reload().unwrap().is_empty());
        assert_eq!(m.snapshot().0.services.len(), 1);
        std::fs::write(&f, "apiVersion: v1\nkind: Service\nmetadata: {name: a\n").unwrap();
        let problems = m.reload().unwrap();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].to_string().contains("svc.yaml"), "{}", problems[0]);
        assert!(problems[0].message.contains("keeping its previous content"));
        assert_eq!(m.snapshot().0.services.len(), 1);
        std::fs::remove_file(&f).unwrap();
        m.reload().unwrap();
        assert_eq!(m.snapshot().0.services.len(), 0);
    }

    #[test]
    fn ingress_kinds_are_read_apart() {
        let dir = tempfile::tempdir().unwrap();
        let text = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\nspec: {rules: [{host: a.com}]}\n\
                    ---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: alb}\nspec: {controller: x}\n\
                    ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {cpaas.io/project: p1}}\n";
        std::fs::write(dir.path().join("ing.yaml"), text).unwrap();
        let mut m = ManifestDir::new(dir.path());
        m.reload().unwrap();
        let (snap, ing, problems) = m.snapshot_with_ingresses();
        assert!(problems.is_empty(), "{problems:?}");
        assert!(snap.frontends.is_empty() && snap.rules.is_empty());
        assert_eq!(ing.ingresses[0].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(ing.ingress_classes.len(), 1);
        assert_eq!(ing.namespaces[0].metadata.namespace, None, "cluster-scoped");
    }

    #[test]
    fn unknown_kinds_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n").unwrap();
        let mut m = ManifestDir::new(dir.path());
        m.reload().unwrap();
        let (_, problems) = m.snapshot();
        assert!(problems[0].message.contains("ConfigMap"));
    }
}
