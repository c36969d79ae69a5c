//! Fuzzing entry points: one function per cargo-fuzz target in `fuzz/fuzz_targets/`.
//!
//! Each takes arbitrary bytes and feeds them through the functions the API server itself uses on a
//! request: body decoding ([`body::decode`] for JSON, YAML and Kubernetes protobuf), the patch
//! flavours ([`handlers::apply_patch`] for JSON, merge and strategic merge patches,
//! [`patch::apply::apply`] for server-side apply), admission of the result (defaulting, typed
//! normalization, validation, Pod Security, CRD validation) and the label and field selector
//! parsers. The invariant under test: no input panics (an error is the expected answer to
//! garbage). Selectors also check that a parsed selector prints as text that parses back to a
//! selector matching the same objects.
//!
//! The same functions replay the committed seed corpora and every crash input kept under
//! `fuzz/regressions/<target>/` in this module's tests, so a fixed crash stays fixed in the
//! ordinary `cargo test --workspace`.

use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::api::http::body::{self, PatchKind};
use crate::api::http::handlers;
use crate::api::resources::{ResourceInfo, Resources};
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::{admission, crd, pod_security};
use crate::patch;

/// A fuzz target: its name (the file `fuzz/fuzz_targets/<name>.rs`, the corpus directory
/// `fuzz/corpus/<name>/`) and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every fuzz target, by name.
pub const TARGETS: &[Target] = &[
    ("decode_json", decode_json),
    ("decode_yaml", decode_yaml),
    ("decode_protobuf", decode_protobuf),
    ("json_patch", json_patch),
    ("merge_patch", merge_patch),
    ("strategic_merge_patch", strategic_merge_patch),
    ("apply_patch", apply_patch),
    ("label_selector", label_selector),
    ("field_selector", field_selector),
];

/// The field manager and time the patch targets write with.
const MANAGER: &str = "fuzz";
const NOW: &str = "2026-01-01T00:00:00Z";

/// A create/update body sent as `application/json`, then admitted as the kind it names.
pub fn decode_json(data: &[u8]) {
    decode_and_admit(data, "application/json");
}

/// A create/update body sent as `application/yaml`, then admitted as the kind it names.
pub fn decode_yaml(data: &[u8]) {
    decode_and_admit(data, "application/yaml");
}

/// A create/update body sent as `application/vnd.kubernetes.protobuf` (`k8s\0` + a
/// `runtime.Unknown` envelope), then admitted as the kind it names.
pub fn decode_protobuf(data: &[u8]) {
    decode_and_admit(data, "application/vnd.kubernetes.protobuf");
}

/// The first byte picks a stored object ([`stored`]); the rest is an
/// `application/json-patch+json` body applied to it.
pub fn json_patch(data: &[u8]) {
    patch_and_admit(data, PatchKind::Json, "application/json-patch+json");
}

/// As [`json_patch`], with an `application/merge-patch+json` body.
pub fn merge_patch(data: &[u8]) {
    patch_and_admit(data, PatchKind::Merge, "application/merge-patch+json");
}

/// As [`json_patch`], with an `application/strategic-merge-patch+json` body.
pub fn strategic_merge_patch(data: &[u8]) {
    patch_and_admit(data, PatchKind::Strategic, "application/strategic-merge-patch+json");
}

/// Server-side apply: the first byte picks a stored object (whose fields another manager owns)
/// and, by its high bit, `force`; the rest is an `application/apply-patch+yaml` body applied to
/// it and, as a create, to nothing.
pub fn apply_patch(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return };
    let Some((ri, current)) = stored(first) else { return };
    let Ok(applied) = body::decode(rest, Some("application/apply-patch+yaml")) else { return };
    let force = first & 0x80 != 0;
    for live in [None, Some(current)] {
        if let Ok(next) = patch::apply::apply(ri.kind, live, &applied, MANAGER, force, NOW) {
            admit(ri, next);
        }
    }
}

/// A `labelSelector` query parameter: parsed, matched against the stored objects, and its
/// canonical text must parse back to the same selector.
pub fn label_selector(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(selector) = LabelSelector::parse(&text) else { return };
    for (_, obj) in stored_objects() {
        selector.matches_object(obj);
    }
    let printed = selector.to_string();
    match LabelSelector::parse(&printed) {
        Ok(again) => assert_eq!(again, selector, "{text:?} prints as {printed:?}, which parses differently"),
        Err(e) => panic!("{text:?} prints as {printed:?}, which does not parse: {e}"),
    }
}

/// A `fieldSelector` query parameter: parsed, validated and matched for every stored object's
/// kind, and its printed text must parse back to a selector matching the same objects.
pub fn field_selector(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(selector) = FieldSelector::parse(&text) else { return };
    selector.exact_match("metadata.name");
    let printed = selector.to_string();
    let again = match FieldSelector::parse(&printed) {
        Ok(again) => again,
        Err(e) => panic!("{text:?} prints as {printed:?}, which does not parse: {e}"),
    };
    for (ri, obj) in stored_objects() {
        let _ = selector.validate(ri.kind);
        assert_eq!(
            selector.matches_kind(ri.kind, obj),
            again.matches_kind(ri.kind, obj),
            "{text:?} and its printed form {printed:?} disagree on a {}",
            ri.kind
        );
    }
}

/// Decodes a body as the server does and admits it as the built-in kind its `apiVersion` and
/// `kind` name (the server takes the resource from the URL and refuses a body naming another).
fn decode_and_admit(data: &[u8], content_type: &str) {
    let Ok(obj) = body::decode(data, Some(content_type)) else { return };
    let group = obj.get("apiVersion").and_then(Value::as_str).and_then(|v| v.rsplit_once('/')).map(|(g, _)| g);
    let Some(kind) = obj.get("kind").and_then(Value::as_str) else { return };
    let Some(ri) = resources().by_kind(group.unwrap_or(""), kind) else { return };
    admit(ri, obj);
}

/// Decodes a patch body, applies it to a stored object as `handlers::apply_patch` does for a
/// PATCH request, records the write's managed fields and admits the result.
fn patch_and_admit(data: &[u8], kind: PatchKind, content_type: &str) {
    let Some((&first, rest)) = data.split_first() else { return };
    let Some((ri, current)) = stored(first) else { return };
    let Ok(patch_body) = body::decode(rest, Some(content_type)) else { return };
    let Ok(next) = handlers::apply_patch(ri, kind, current, &patch_body) else { return };
    let next = patch::apply::record_update(Some(current), &next, MANAGER, NOW);
    admit(ri, next);
}

/// What `Registry::admit` does to a built-in object before it is stored (defaulting, typed
/// normalization, validation, CRD rules), plus Pod Security's checks for pods. Parts that need
/// the store (service account and namespace lookups) are left out.
fn admit(ri: &ResourceInfo, mut obj: Value) {
    if obj.get("kind").and_then(Value::as_str).is_some_and(|k| k != ri.kind) {
        return;
    }
    admission::default(ri.kind, &mut obj);
    let is_crd = crd::definition::is_crd(ri);
    if is_crd {
        crd::definition::default(&mut obj);
    }
    let Ok((obj, _unknown)) = (ri.normalize)(obj) else { return };
    let _ = admission::validate(ri.kind, ri.namespaced, &obj);
    if is_crd {
        let _ = crd::definition::validate(&obj, resources());
    }
    if ri.kind == "Pod" {
        for level in [pod_security::Level::Baseline, pod_security::Level::Restricted] {
            let _ = pod_security::violations(level, &obj);
        }
    }
}

/// The built-in resource table.
fn resources() -> &'static Resources {
    static TABLE: OnceLock<Resources> = OnceLock::new();
    TABLE.get_or_init(Resources::default)
}

/// The stored object a patch target's first byte picks (ASCII `0`, `1`, ... pick the first,
/// second, ... so corpus files stay readable).
fn stored(selector: u8) -> Option<(&'static ResourceInfo, &'static Value)> {
    let objects = stored_objects();
    let index = usize::from(selector.wrapping_sub(b'0') & 0x7f).checked_rem(objects.len())?;
    objects.get(index).map(|(ri, obj)| (ri, obj))
}

/// A few objects as the store holds them: admitted, with a resourceVersion, and with fields
/// owned by an earlier apply of another manager.
fn stored_objects() -> &'static [(ResourceInfo, Value)] {
    static OBJECTS: OnceLock<Vec<(ResourceInfo, Value)>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        let meta = |name: &str| {
            json!({"name": name, "namespace": "default", "uid": "00000000-0000-4000-8000-000000000001",
                   "resourceVersion": "7", "creationTimestamp": NOW, "labels": {"app": name, "tier": "web"}})
        };
        let pod_spec = json!({
            "containers": [{
                "name": "web", "image": "busybox:1", "command": ["sh", "-c", "sleep 1d"],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "b"}}}],
                "resources": {"limits": {"memory": "64Mi", "cpu": "100m"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]
        });
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("web-0"), "spec": pod_spec,
                   "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
                   "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cfg"),
                   "data": {"b": "2", "config.yaml": "a: 1\n"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("web"),
                   "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "type": "ClusterIP",
                            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}),
        ];
        objects
            .into_iter()
            .filter_map(|obj| {
                let kind = obj.get("kind").and_then(Value::as_str)?;
                let ri = resources().iter().find(|r| r.kind == kind)?.clone();
                let mut obj = obj;
                admission::default(ri.kind, &mut obj);
                let owned = patch::apply::apply(ri.kind, None, &obj, "before", false, NOW).unwrap_or(obj);
                Some((ri, owned))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Every committed seed and every kept crash input runs through its target without a panic.
    #[test]
    fn corpora_and_regressions_replay_without_panic() {
        let root = fuzz_dir();
        for (name, run) in TARGETS {
            let mut seeds = 0;
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else { continue };
                for entry in entries.flatten() {
                    let data = std::fs::read(entry.path()).expect("reading a fuzz input");
                    run(&data);
                    seeds += usize::from(dir == "corpus");
                }
            }
            assert!(seeds > 0, "no seed corpus for fuzz target {name} under {}", root.display());
        }
    }

    /// `fuzz/` of the checkout the test runs in (read at run time: the build cache is shared
    /// between checkouts).
    fn fuzz_dir() -> PathBuf {
        let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from);
        crate_dir.join("../fuzz")
    }

    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = fuzz_dir().join("corpus").join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut out: Vec<_> = entries
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("a seed")))
            .collect();
        out.sort();
        out
    }

    /// The seeds get past decoding, so the fuzzer starts from requests the server accepts.
    #[test]
    fn seeds_are_accepted_requests() {
        for (target, content_type) in [
            ("decode_json", "application/json"),
            ("decode_yaml", "application/yaml"),
            ("decode_protobuf", "application/vnd.kubernetes.protobuf"),
        ] {
            for (name, data) in seeds(target) {
                let obj = body::decode(&data, Some(content_type)).unwrap_or_else(|e| panic!("{target}/{name}: {e}"));
                let kind = obj["kind"].as_str().unwrap_or_default();
                let ri = resources().iter().find(|r| r.kind == kind).unwrap_or_else(|| panic!("{target}/{name}"));
                (ri.normalize)(obj).unwrap_or_else(|e| panic!("{target}/{name}: {e}"));
            }
        }
        for (target, kind, content_type) in [
            ("json_patch", PatchKind::Json, "application/json-patch+json"),
            ("merge_patch", PatchKind::Merge, "application/merge-patch+json"),
            ("strategic_merge_patch", PatchKind::Strategic, "application/strategic-merge-patch+json"),
        ] {
            for (name, data) in seeds(target) {
                let (first, rest) = data.split_first().expect("a kind byte");
                let (ri, current) = stored(*first).expect("an object");
                let patch = body::decode(rest, Some(content_type)).unwrap_or_else(|e| panic!("{target}/{name}: {e}"));
                let next =
                    handlers::apply_patch(ri, kind, current, &patch).unwrap_or_else(|e| panic!("{target}/{name}: {e}"));
                assert_ne!(&next, current, "{target}/{name} changes nothing");
            }
        }
        for (name, data) in seeds("apply_patch") {
            let (first, rest) = data.split_first().expect("a kind byte");
            let (ri, current) = stored(*first).expect("an object");
            let applied = body::decode(rest, Some("application/apply-patch+yaml")).expect("an apply body");
            let force = first & 0x80 != 0;
            match patch::apply::apply(ri.kind, Some(current), &applied, MANAGER, force, NOW) {
                Ok(_) => {}
                Err(patch::apply::ApplyError::Conflicts(_)) if !force => {}
                Err(e) => panic!("apply_patch/{name}: {e}"),
            }
        }
        for (name, data) in seeds("label_selector") {
            LabelSelector::parse(&String::from_utf8_lossy(&data))
                .unwrap_or_else(|e| panic!("label_selector/{name}: {e}"));
        }
        for (name, data) in seeds("field_selector") {
            FieldSelector::parse(&String::from_utf8_lossy(&data))
                .unwrap_or_else(|e| panic!("field_selector/{name}: {e}"));
        }
    }

    #[test]
    fn patch_targets_reach_the_objects() {
        assert_eq!(stored_objects().len(), 4);
        assert_eq!(stored(b'0').map(|(ri, _)| ri.kind), Some("Pod"));
        assert_eq!(stored(b'3').map(|(ri, _)| ri.kind), Some("Service"));
        let (ri, current) = stored(b'2').expect("a ConfigMap");
        let next = handlers::apply_patch(ri, PatchKind::Merge, current, &json!({"data": {"b": "3"}})).expect("patch");
        assert_eq!(next["data"]["b"], "3");
    }
}
