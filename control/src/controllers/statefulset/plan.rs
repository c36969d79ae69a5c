//! The StatefulSet controller's decision, pure: stable pod names `<sts>-<ordinal>`, PVCs
//! `<template>-<sts>-<ordinal>` from `volumeClaimTemplates`, OrderedReady (one pod at a time,
//! each after its predecessors are Running and Ready; scale down from the highest ordinal) or
//! Parallel, RollingUpdate from the highest ordinal down to `partition`, OnDelete, and status.

use serde_json::{json, Value};

use crate::api::object;
use crate::controllers::revision::HASH_LABEL;

/// The label with a StatefulSet pod's name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with a StatefulSet pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// One step of the plan, in the order it must happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the pod of this ordinal (its PVCs first).
    Create(i64),
    /// Delete this pod (scale down, failed, or an old revision).
    Delete(String),
}

/// What the controller does for one StatefulSet now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub status: Value,
}

/// The ordinal in a pod name `<sts>-<ordinal>`.
pub fn ordinal(sts_name: &str, pod_name: &str) -> Option<i64> {
    pod_name.strip_prefix(sts_name)?.strip_prefix('-')?.parse().ok().filter(|n: &i64| *n >= 0)
}

fn running_ready(pod: &Value) -> bool {
    object::str_at(pod, &["status", "phase"]) == Some("Running")
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        && object::deletion_timestamp(pod).is_none()
}

fn revision_of(pod: &Value) -> Option<String> {
    object::labels(pod).get(HASH_LABEL).and_then(Value::as_str).map(str::to_string)
}

/// Decides what to do for `sts` given its pods, `update` the current template's revision hash.
pub fn plan(sts: &Value, pods: &[&Value], update: &str) -> Plan {
    let name = object::name(sts);
    let replicas = sts.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).max(0);
    let parallel = sts.pointer("/spec/podManagementPolicy").and_then(Value::as_str) == Some("Parallel");
    let strategy = sts.pointer("/spec/updateStrategy/type").and_then(Value::as_str).unwrap_or("RollingUpdate");
    let partition =
        sts.pointer("/spec/updateStrategy/rollingUpdate/partition").and_then(Value::as_i64).unwrap_or(0).max(0);
    let start = sts.pointer("/spec/ordinals/start").and_then(Value::as_i64).unwrap_or(0).max(0);
    let end = start.saturating_add(replicas);

    let mut slots: Vec<Option<&Value>> = vec![None; usize::try_from(replicas).unwrap_or(0).min(100_000)];
    let mut condemned: Vec<(i64, &Value)> = Vec::new();
    for pod in pods {
        let Some(i) = ordinal(name, object::name(pod)) else { continue };
        if i >= start && i < end {
            if let Some(slot) = usize::try_from(i - start).ok().and_then(|k| slots.get_mut(k)) {
                *slot = Some(pod);
            }
        } else {
            condemned.push((i, pod));
        }
    }
    condemned.sort_by_key(|(i, _)| std::cmp::Reverse(*i));

    let mut steps = Vec::new();
    let mut blocked = false;
    for (k, slot) in slots.iter().enumerate() {
        let i = start.saturating_add(i64::try_from(k).unwrap_or(0));
        match slot {
            None => {
                if !blocked || parallel {
                    steps.push(Step::Create(i));
                }
                blocked = true;
            }
            Some(pod) if object::deletion_timestamp(pod).is_some() => blocked = true,
            Some(pod) if object::str_at(pod, &["status", "phase"]) == Some("Failed") => {
                if !blocked || parallel {
                    steps.push(Step::Delete(object::name(pod).to_string()));
                }
                blocked = true;
            }
            Some(pod) => {
                if !running_ready(pod) {
                    blocked = true;
                }
            }
        }
    }
    // Scale down: highest ordinal first; OrderedReady only when the rest are healthy.
    let all_healthy = slots.iter().all(|s| s.is_some_and(running_ready));
    for (_, pod) in &condemned {
        if object::deletion_timestamp(pod).is_some() {
            if !parallel {
                break;
            }
            continue;
        }
        if parallel || (all_healthy && steps.is_empty()) {
            steps.push(Step::Delete(object::name(pod).to_string()));
            if !parallel {
                break;
            }
        }
    }
    // Rolling update: once nothing else is in flight, replace the highest old pod at or above
    // the partition.
    let settled = steps.is_empty() && condemned.is_empty() && all_healthy;
    if strategy == "RollingUpdate" && settled {
        let target = slots.iter().enumerate().rev().find(|(k, s)| {
            let i = start.saturating_add(i64::try_from(*k).unwrap_or(0));
            i >= start.saturating_add(partition) && s.is_some_and(|p| revision_of(p).as_deref() != Some(update))
        });
        if let Some((_, Some(pod))) = target {
            steps.push(Step::Delete(object::name(pod).to_string()));
        }
    }

    let present: Vec<&Value> = slots.iter().flatten().copied().chain(condemned.iter().map(|(_, p)| *p)).collect();
    let ready = present.iter().filter(|p| running_ready(p)).count();
    let updated = present.iter().filter(|p| revision_of(p).as_deref() == Some(update)).count();
    let current_revision = sts.pointer("/status/currentRevision").and_then(Value::as_str).map(str::to_string);
    // The current revision moves to the update revision once every pod runs it.
    let all_updated = updated == present.len() && i64::try_from(present.len()).unwrap_or(0) == replicas;
    let current = if all_updated || current_revision.is_none() {
        update.to_string()
    } else {
        current_revision.unwrap_or_default()
    };
    let current_count = present.iter().filter(|p| revision_of(p).as_deref() == Some(current.as_str())).count();
    Plan {
        steps,
        status: json!({
            "observedGeneration": sts.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0),
            "replicas": present.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": current_count,
            "updatedReplicas": updated,
            "currentRevision": current,
            "updateRevision": update,
            "collisionCount": 0,
        }),
    }
}

/// The claim name of `template` for the pod of `ordinal`.
pub fn claim_name(template: &str, sts: &str, ordinal: i64) -> String {
    format!("{template}-{sts}-{ordinal}")
}

/// The PVCs the pod of `ordinal` needs, from `volumeClaimTemplates`.
pub fn claims_for(sts: &Value, ordinal: i64) -> Vec<Value> {
    let name = object::name(sts);
    let labels = sts.pointer("/spec/selector/matchLabels").cloned().unwrap_or_else(|| json!({}));
    sts.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            let tname = object::name(t);
            let mut meta = t.get("metadata").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
            meta["name"] = json!(claim_name(tname, name, ordinal));
            meta["namespace"] = json!(object::namespace(sts).unwrap_or("default"));
            let mut all = labels.clone();
            if let (Some(all), Some(own)) = (all.as_object_mut(), meta.get("labels").and_then(Value::as_object)) {
                for (k, v) in own {
                    all.insert(k.clone(), v.clone());
                }
            }
            meta["labels"] = all;
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
                   "spec": t.get("spec").cloned().unwrap_or_else(|| json!({}))})
        })
        .collect()
}

/// The pod of `ordinal`: `<sts>-<ordinal>`, hostname and subdomain, the identity and revision
/// labels, the claims as volumes, a controller ownerReference.
pub fn pod_for(sts: &Value, ordinal: i64, hash: &str) -> Value {
    let name = object::name(sts);
    let pod_name = format!("{name}-{ordinal}");
    let template = sts.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let mut meta = template.get("metadata").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    meta["name"] = json!(pod_name);
    meta["namespace"] = json!(object::namespace(sts).unwrap_or("default"));
    if let Some(m) = meta.as_object_mut() {
        m.remove("generateName");
    }
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"][HASH_LABEL] = json!(hash);
    meta["labels"][POD_NAME_LABEL] = json!(pod_name);
    meta["labels"][POD_INDEX_LABEL] = json!(ordinal.to_string());
    meta["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": name,
        "uid": object::str_at(sts, &["metadata", "uid"]).unwrap_or(""),
        "controller": true, "blockOwnerDeletion": true,
    }]);
    let mut spec = template.get("spec").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    spec["hostname"] = json!(pod_name);
    if let Some(svc) = sts.pointer("/spec/serviceName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        spec["subdomain"] = json!(svc);
    }
    // Only claims a container mounts become volumes: the node agent cannot mount a PVC yet, so
    // an unmounted claim must not keep the pod from starting.
    let mounted =
        |volume: &str| {
            ["initContainers", "containers"].iter().any(|list| {
                spec[*list].as_array().into_iter().flatten().any(|c| {
                    c["volumeMounts"].as_array().into_iter().flatten().any(|m| m["name"].as_str() == Some(volume))
                })
            })
        };
    let claims: Vec<Value> = sts
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| mounted(object::name(t)))
        .map(|t| {
            let tname = object::name(t);
            json!({"name": tname, "persistentVolumeClaim": {"claimName": claim_name(tname, name, ordinal)}})
        })
        .collect();
    if !claims.is_empty() {
        if !spec["volumes"].is_array() {
            spec["volumes"] = json!([]);
        }
        if let Some(vols) = spec["volumes"].as_array_mut() {
            for c in claims {
                vols.retain(|v| v["name"] != c["name"]);
                vols.push(c);
            }
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(replicas: i64, extra: Value) -> Value {
        let mut s = json!({"metadata": {"name": "db", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {"replicas": replicas, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        if let (Some(spec), Some(extra)) = (s["spec"].as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        s
    }

    fn pod(name: &str, hash: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "labels": {HASH_LABEL: hash}},
               "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time() {
        let s = sts(3, json!({}));
        assert_eq!(plan(&s, &[], "h").steps, vec![Step::Create(0)]);
        let p0 = pod("db-0", "h", false);
        assert!(plan(&s, &[&p0], "h").steps.is_empty(), "waits for db-0 to be ready");
        let p0 = pod("db-0", "h", true);
        assert_eq!(plan(&s, &[&p0], "h").steps, vec![Step::Create(1)]);
        let p1 = pod("db-1", "h", true);
        let p2 = pod("db-2", "h", true);
        let p = plan(&s, &[&p0, &p1, &p2], "h");
        assert!(p.steps.is_empty());
        assert_eq!(p.status["readyReplicas"], 3);
        assert_eq!(p.status["currentRevision"], "h");
    }

    #[test]
    fn parallel_creates_all_and_scale_down_goes_from_the_top() {
        let s = sts(3, json!({"podManagementPolicy": "Parallel"}));
        assert_eq!(plan(&s, &[], "h").steps, vec![Step::Create(0), Step::Create(1), Step::Create(2)]);
        let one = sts(1, json!({}));
        let (p0, p1, p2) = (pod("db-0", "h", true), pod("db-1", "h", true), pod("db-2", "h", true));
        assert_eq!(plan(&one, &[&p0, &p1, &p2], "h").steps, vec![Step::Delete("db-2".into())]);
    }

    #[test]
    fn rolling_update_goes_down_to_the_partition() {
        let s = sts(3, json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}));
        let (p0, p1, p2) = (pod("db-0", "old", true), pod("db-1", "old", true), pod("db-2", "old", true));
        assert_eq!(plan(&s, &[&p0, &p1, &p2], "new").steps, vec![Step::Delete("db-2".into())]);
        let p2 = pod("db-2", "new", true);
        assert_eq!(plan(&s, &[&p0, &p1, &p2], "new").steps, vec![Step::Delete("db-1".into())]);
        let p1 = pod("db-1", "new", true);
        let p = plan(&s, &[&p0, &p1, &p2], "new");
        assert!(p.steps.is_empty(), "db-0 is below the partition");
        assert_eq!(p.status["updatedReplicas"], 2);
        let on_delete = sts(3, json!({"updateStrategy": {"type": "OnDelete"}}));
        assert!(plan(&on_delete, &[&p0, &p1, &p2], "new").steps.is_empty());
    }

    #[test]
    fn pods_and_claims_have_stable_names() {
        let s = sts(
            2,
            json!({"volumeClaimTemplates": [{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}),
        );
        let p = pod_for(&s, 1, "h");
        assert_eq!(p["metadata"]["name"], "db-1");
        assert_eq!(p["spec"]["hostname"], "db-1");
        assert_eq!(p["spec"]["subdomain"], "db");
        assert_eq!(p["metadata"]["labels"][POD_NAME_LABEL], "db-1");
        assert_eq!(p["metadata"]["labels"][HASH_LABEL], "h");
        assert!(p["spec"]["volumes"].is_null(), "an unmounted claim is no volume: {p}");
        let mut mounting = s.clone();
        mounting["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/d"}]);
        let p = pod_for(&mounting, 1, "h");
        assert_eq!(p["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "data-db-1");
        let claims = claims_for(&s, 1);
        assert_eq!(claims[0]["metadata"]["name"], "data-db-1");
        assert_eq!(claims[0]["metadata"]["labels"]["app"], "db");
        assert_eq!(claims[0]["spec"]["resources"]["requests"]["storage"], "1Gi");
        assert_eq!(ordinal("db", "db-12"), Some(12));
        assert_eq!(ordinal("db", "dbx-1"), None);
    }
}
