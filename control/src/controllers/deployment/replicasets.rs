//! What a Deployment makes of its ReplicaSets, pure: the new ReplicaSet for a template, template
//! equality ignoring the hash label, revisions and the annotations Kubernetes keeps on them.

use serde_json::{json, Map, Value};

use super::hash::pod_template_hash;
use super::rollout::RsView;
use crate::api::object;

/// The label (and name suffix) that tells a Deployment's ReplicaSets apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision of a ReplicaSet, and of its Deployment (the new ReplicaSet's).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a reused ReplicaSet had (comma-separated).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's `spec.replicas` when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas` + maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations never copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// A ReplicaSet's `deployment.kubernetes.io/revision` (0 when absent or bad).
pub fn revision(rs: &Value) -> i64 {
    annotation(rs, REVISION).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    object::meta(obj).get("annotations")?.get(key)?.as_str()
}

/// `spec.replicas` of a ReplicaSet or Deployment (default 1 only for a Deployment's absent field).
pub fn spec_replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)
}

/// The math's view of a ReplicaSet.
pub fn view(rs: &Value) -> RsView {
    RsView {
        name: object::name(rs).to_string(),
        replicas: spec_replicas(rs),
        available: rs.pointer("/status/availableReplicas").and_then(Value::as_i64).unwrap_or(0),
        created: object::str_at(rs, &["metadata", "creationTimestamp"]).unwrap_or("").to_string(),
    }
}

/// The template without the hash label, for comparison.
fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("labels");
            }
        }
    }
    t
}

/// `v` without nulls and empty maps or lists: a client that sends `"resources": {}` or
/// `"creationTimestamp": null` (kubectl's `rollout undo` does) means the same template.
fn pruned(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), pruned(v))).filter(|(_, v)| !is_empty(v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(pruned).collect()),
        other => other.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The two pod templates are equal but for the hash label (`EqualIgnoreHash`), empty fields
/// counting as absent.
pub fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    pruned(&without_hash(a)) == pruned(&without_hash(b))
}

/// The oldest ReplicaSet whose template is the Deployment's.
pub fn find_new<'a>(d: &Value, sets: &'a [std::sync::Arc<Value>]) -> Option<&'a std::sync::Arc<Value>> {
    let template = d.pointer("/spec/template")?;
    let mut matching: Vec<&std::sync::Arc<Value>> =
        sets.iter().filter(|rs| rs.pointer("/spec/template").is_some_and(|t| equal_ignore_hash(t, template))).collect();
    matching.sort_by(|a, b| {
        let key = |v: &Value| object::str_at(v, &["metadata", "creationTimestamp"]).unwrap_or("").to_string();
        key(a).cmp(&key(b)).then_with(|| object::name(a).cmp(object::name(b)))
    });
    matching.first().copied()
}

/// The annotations a Deployment's ReplicaSet carries: the Deployment's own (but the ones
/// above), the revision, and the replica annotations.
pub fn annotations_for(
    d: &Value,
    current: Option<&Map<String, Value>>,
    revision: i64,
    max_surge: i64,
) -> Map<String, Value> {
    let mut out = current.cloned().unwrap_or_default();
    if let Some(from) = object::meta(d).get("annotations").and_then(Value::as_object) {
        for (k, v) in from {
            if !NOT_COPIED.contains(&k.as_str()) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    let old_revision: i64 = out.get(REVISION).and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or(0);
    if old_revision < revision {
        if old_revision > 0 {
            let history = match out.get(REVISION_HISTORY).and_then(Value::as_str) {
                Some(h) if !h.is_empty() => format!("{h},{old_revision}"),
                _ => old_revision.to_string(),
            };
            out.insert(REVISION_HISTORY.into(), json!(history));
        }
        out.insert(REVISION.into(), json!(revision.to_string()));
    }
    let desired = spec_replicas(d);
    out.insert(DESIRED_REPLICAS.into(), json!(desired.to_string()));
    out.insert(MAX_REPLICAS.into(), json!(desired.saturating_add(max_surge).to_string()));
    out
}

/// The new ReplicaSet of `d` for its current template: named `<deployment>-<hash>`, the hash
/// in its labels, selector and template, owned by `d`.
pub fn build(d: &Value, collision_count: Option<u32>, revision: i64, replicas: i64, max_surge: i64) -> Value {
    let template = d.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let hash = pod_template_hash(&template, collision_count);
    let mut template = template;
    if let Some(meta) = template.as_object_mut().map(|t| t.entry("metadata").or_insert_with(|| json!({}))) {
        if let Some(meta) = meta.as_object_mut() {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(labels) = labels.as_object_mut() {
                labels.insert(HASH_LABEL.into(), json!(hash));
            }
        }
    }
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or_else(|| json!({}));
    if let Some(sel) = selector.as_object_mut() {
        let ml = sel.entry("matchLabels").or_insert_with(|| json!({}));
        if let Some(ml) = ml.as_object_mut() {
            ml.insert(HASH_LABEL.into(), json!(hash));
        }
    }
    let labels = template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
    let mut rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{}", object::name(d), hash),
            "labels": labels,
            "annotations": annotations_for(d, None, revision, max_surge),
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": object::name(d),
                "uid": object::str_at(d, &["metadata", "uid"]).unwrap_or(""),
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {"replicas": replicas, "selector": selector, "template": template,
                 "minReadySeconds": d.pointer("/spec/minReadySeconds").and_then(Value::as_i64).unwrap_or(0)},
    });
    if let Some(ns) = object::namespace(d) {
        rs["metadata"]["namespace"] = json!(ns);
    }
    rs
}

/// The old ReplicaSets beyond `revisionHistoryLimit` that may go: scaled to zero, no pods,
/// not being deleted; lowest revision first.
pub fn to_clean_up<'a>(d: &Value, old: &'a [std::sync::Arc<Value>]) -> Vec<&'a std::sync::Arc<Value>> {
    let Some(limit) = d.pointer("/spec/revisionHistoryLimit").and_then(Value::as_i64) else { return Vec::new() };
    let mut idle: Vec<&std::sync::Arc<Value>> = old
        .iter()
        .filter(|rs| {
            spec_replicas(rs) == 0
                && rs.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0) == 0
                && object::deletion_timestamp(rs).is_none()
        })
        .collect();
    let excess =
        usize::try_from(i64::try_from(idle.len()).unwrap_or(i64::MAX).saturating_sub(limit.max(0))).unwrap_or(0);
    idle.sort_by_key(|rs| {
        (revision(rs), object::str_at(rs, &["metadata", "creationTimestamp"]).unwrap_or("").to_string())
    });
    idle.truncate(excess);
    idle
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn deployment() -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns", "uid": "d1",
                            "annotations": {"kubernetes.io/change-cause": "v1", REVISION: "4",
                                            "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
               "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "revisionHistoryLimit": 1,
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}})
    }

    #[test]
    fn the_new_set_carries_the_hash_everywhere() {
        let d = deployment();
        let rs = build(&d, None, 5, 1, 1);
        let hash = rs["spec"]["template"]["metadata"]["labels"][HASH_LABEL].as_str().unwrap_or("").to_string();
        assert!(!hash.is_empty());
        assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(rs["spec"]["selector"]["matchLabels"][HASH_LABEL], hash.as_str());
        assert_eq!(rs["metadata"]["labels"][HASH_LABEL], hash.as_str());
        let ann = &rs["metadata"]["annotations"];
        assert_eq!(ann[REVISION], "5");
        assert_eq!(ann[DESIRED_REPLICAS], "3");
        assert_eq!(ann[MAX_REPLICAS], "4");
        assert_eq!(ann["kubernetes.io/change-cause"], "v1");
        assert!(ann.get("kubectl.kubernetes.io/last-applied-configuration").is_none());
        assert!(equal_ignore_hash(&rs["spec"]["template"], &d["spec"]["template"]));
        let mut verbose = d["spec"]["template"].clone();
        verbose["metadata"]["creationTimestamp"] = Value::Null;
        verbose["spec"]["containers"][0]["resources"] = json!({});
        assert!(equal_ignore_hash(&rs["spec"]["template"], &verbose));
        let sets = vec![Arc::new(rs)];
        assert!(find_new(&d, &sets).is_some());
        let mut changed = d.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("i:2");
        assert!(find_new(&changed, &sets).is_none());
    }

    #[test]
    fn a_reused_set_records_its_old_revision() {
        let d = deployment();
        let current = json!({REVISION: "1"}).as_object().cloned();
        let ann = annotations_for(&d, current.as_ref(), 3, 0);
        assert_eq!(ann[REVISION], "3");
        assert_eq!(ann[REVISION_HISTORY], "1");
        let again = annotations_for(&d, Some(&ann), 5, 0);
        assert_eq!(again[REVISION_HISTORY], "1,3");
        // A lower revision never overwrites.
        let same = annotations_for(&d, Some(&again), 2, 0);
        assert_eq!(same[REVISION], "5");
    }

    #[test]
    fn cleanup_keeps_the_history_limit() {
        let d = deployment();
        let old = |name: &str, rev: &str, replicas: i64| {
            Arc::new(
                json!({"metadata": {"name": name, "annotations": {REVISION: rev}}, "spec": {"replicas": replicas}}),
            )
        };
        let sets = vec![old("a", "1", 0), old("b", "2", 0), old("c", "3", 0), old("busy", "0", 2)];
        let doomed: Vec<&str> = to_clean_up(&d, &sets).iter().map(|rs| object::name(rs)).collect();
        assert_eq!(doomed, vec!["a", "b"]);
    }
}
