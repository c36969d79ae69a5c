//! The status a ReplicaSet (or ReplicationController) reports, computed from its active pods.

use serde_json::{json, Map, Value};

use crate::api::object;
use crate::controllers::runtime::entry::Summary;

/// Why the last create or delete of pods failed, for the `ReplicaFailure` condition.
pub struct Failure {
    /// `FailedCreate` or `FailedDelete`.
    pub reason: &'static str,
    pub message: String,
}

/// The new `status` of `set` with these active pods (their informer summaries: counting reads
/// no pod); `failure` sets the `ReplicaFailure` condition, its absence clears it.
pub fn compute(set: &Value, active: &[&Summary], now: jiff::Timestamp, failure: Option<&Failure>) -> Value {
    let min_ready = set.pointer("/spec/minReadySeconds").and_then(Value::as_i64).unwrap_or(0);
    let template_labels =
        set.pointer("/spec/template/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| template_labels.iter().all(|(k, v)| v.as_str().is_some_and(|v| p.label(k) == Some(v))))
        .count();
    let ready = active.iter().filter(|p| p.pod_state().ready).count();
    let available = active.iter().filter(|p| p.pod_state().is_available(min_ready, now)).count();
    let mut status = set.get("status").and_then(Value::as_object).cloned().unwrap_or_else(Map::new);
    status.insert("replicas".into(), json!(active.len()));
    status.insert("fullyLabeledReplicas".into(), json!(fully_labeled));
    status.insert("readyReplicas".into(), json!(ready));
    status.insert("availableReplicas".into(), json!(available));
    if let Some(generation) = object::meta(set).get("generation") {
        status.insert("observedGeneration".into(), generation.clone());
    }
    let mut conditions: Vec<Value> = status.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let had = conditions.iter().position(|c| c.get("type").and_then(Value::as_str) == Some("ReplicaFailure"));
    match (failure, had) {
        (Some(f), Some(i)) => {
            conditions[i]["reason"] = json!(f.reason);
            conditions[i]["message"] = json!(f.message);
        }
        (Some(f), None) => conditions.push(json!({
            "type": "ReplicaFailure", "status": "True", "reason": f.reason, "message": f.message,
            "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        })),
        (None, Some(i)) => {
            conditions.remove(i);
        }
        (None, None) => {}
    }
    if conditions.is_empty() {
        status.remove("conditions");
    } else {
        status.insert("conditions".into(), Value::Array(conditions));
    }
    Value::Object(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ready_available_and_labeled_pods() {
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap_or_default();
        let set = json!({"metadata": {"generation": 3},
                         "spec": {"minReadySeconds": 30, "template": {"metadata": {"labels": {"app": "a", "tier": "t"}}}}});
        let ready_long = json!({"metadata": {"labels": {"app": "a", "tier": "t"}}, "status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        let ready_new = json!({"metadata": {"labels": {"app": "a"}}, "status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:50Z"}]}});
        let pending = json!({"metadata": {"labels": {"app": "a", "tier": "t"}}, "status": {"phase": "Pending"}});
        let failure = Failure { reason: "FailedCreate", message: "quota".into() };
        let pods = [&ready_long, &ready_new, &pending].map(Summary::of);
        let status = compute(&set, &pods.each_ref(), now, Some(&failure));
        assert_eq!(status["replicas"], 3);
        assert_eq!(status["fullyLabeledReplicas"], 2);
        assert_eq!(status["readyReplicas"], 2);
        assert_eq!(status["availableReplicas"], 1);
        assert_eq!(status["observedGeneration"], 3);
        assert_eq!(status["conditions"][0]["reason"], "FailedCreate");
        let mut set2 = set.clone();
        set2["status"] = status;
        let cleared = compute(&set2, &[], now, None);
        assert!(cleared.get("conditions").is_none());
        assert_eq!(cleared["replicas"], 0);
    }
}
