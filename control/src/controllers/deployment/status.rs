//! A Deployment's status and its `Available` and `Progressing` conditions, pure (Kubernetes'
//! `calculateStatus` and `syncRolloutStatus`).

use std::time::Duration;

use serde_json::{json, Value};

/// Counts summed over the Deployment's ReplicaSets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sum of `spec.replicas`.
    pub total_spec: i64,
    /// Sum of `status.replicas`.
    pub replicas: i64,
    /// The new ReplicaSet's `status.replicas`.
    pub updated: i64,
    pub ready: i64,
    pub available: i64,
}

/// What the Progressing condition says now and when to look again.
pub struct Outcome {
    pub status: Value,
    /// Re-check after this long (the progress deadline), if the rollout is not complete.
    pub recheck: Option<Duration>,
}

fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn ts(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn find<'a>(conditions: &'a [Value], kind: &str) -> Option<&'a Value> {
    conditions.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// Sets a condition; `lastTransitionTime` is kept when the status does not change, and the
/// condition is left alone when status, reason and message are the same (`SetDeploymentCondition`).
pub fn set_condition(
    conditions: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) {
    let now = ts(now);
    let mut cond = json!({"type": kind, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
                          "reason": reason, "message": message});
    if let Some(i) = conditions.iter().position(|c| c.get("type").and_then(Value::as_str) == Some(kind)) {
        let old = &conditions[i];
        let same_status = old.get("status").and_then(Value::as_str) == Some(status);
        if same_status
            && old.get("reason").and_then(Value::as_str) == Some(reason)
            && old.get("message").and_then(Value::as_str) == Some(message)
        {
            return;
        }
        if same_status {
            cond["lastTransitionTime"] = old.get("lastTransitionTime").cloned().unwrap_or(Value::Null);
        }
        conditions[i] = cond;
    } else {
        conditions.push(cond);
    }
}

/// The new status of `d`. `new_rs` is the new ReplicaSet's name, if it exists; `max_unavailable`
/// the strategy's resolved value (0 for Recreate).
pub fn compute(d: &Value, counts: Counts, new_rs: Option<&str>, max_unavailable: i64, now: jiff::Timestamp) -> Outcome {
    let desired = int(d, "/spec/replicas");
    let old = d.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut conditions: Vec<Value> = old.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let paused = d.pointer("/spec/paused").and_then(Value::as_bool).unwrap_or(false);
    let generation = int(d, "/metadata/generation");

    if counts.available >= desired - max_unavailable {
        set_condition(
            &mut conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
        );
    } else {
        set_condition(
            &mut conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
        );
    }

    let progressing = find(&conditions, "Progressing").cloned();
    let reason_of =
        |c: &Option<Value>| c.as_ref().and_then(|c| c.get("reason")).and_then(Value::as_str).map(String::from);
    let mut recheck = None;
    if paused {
        if reason_of(&progressing).as_deref() != Some("DeploymentPaused") {
            set_condition(&mut conditions, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", now);
        }
    } else if reason_of(&progressing).as_deref() == Some("DeploymentPaused") {
        set_condition(&mut conditions, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed", now);
    } else if let Some(deadline) = d.pointer("/spec/progressDeadlineSeconds").and_then(Value::as_i64) {
        let rs_name = new_rs.unwrap_or("");
        let complete_before =
            counts.replicas == counts.updated && reason_of(&progressing).as_deref() == Some("NewReplicaSetAvailable");
        // (`observedGeneration` becomes `generation` with this very status.)
        let complete = counts.updated == desired && counts.replicas == desired && counts.available == desired;
        let made_progress = counts.updated > int(&old, "/updatedReplicas")
            || counts.replicas - counts.updated < int(&old, "/replicas") - int(&old, "/updatedReplicas")
            || counts.ready > int(&old, "/readyReplicas")
            || counts.available > int(&old, "/availableReplicas");
        if !complete_before {
            if complete {
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    &format!("ReplicaSet {rs_name:?} has successfully progressed."),
                    now,
                );
            } else if made_progress || progressing.is_none() {
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet {rs_name:?} is progressing."),
                    now,
                );
                // A fresh update restarts the deadline even when the message stays the same.
                if let Some(c) =
                    conditions.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some("Progressing"))
                {
                    c["lastUpdateTime"] = json!(ts(now));
                }
            } else if reason_of(&progressing).as_deref() != Some("ProgressDeadlineExceeded") {
                let since = progressing
                    .as_ref()
                    .and_then(|c| c.get("lastUpdateTime"))
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                    .unwrap_or(now);
                let at = since.checked_add(jiff::SignedDuration::from_secs(deadline.max(0))).unwrap_or(now);
                if now >= at {
                    set_condition(
                        &mut conditions,
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        &format!("ReplicaSet {rs_name:?} has timed out progressing."),
                        now,
                    );
                } else {
                    recheck = Some(now.duration_until(at).unsigned_abs());
                }
            }
            let now_reason = find(&conditions, "Progressing").and_then(|c| c.get("reason")).and_then(Value::as_str);
            if recheck.is_none() && !matches!(now_reason, Some("NewReplicaSetAvailable" | "ProgressDeadlineExceeded")) {
                recheck = Some(Duration::from_secs(u64::try_from(deadline.max(1)).unwrap_or(1)));
            }
        }
    }

    let mut status = json!({
        "observedGeneration": generation,
        "replicas": counts.replicas,
        "updatedReplicas": counts.updated,
        "readyReplicas": counts.ready,
        "availableReplicas": counts.available,
        "unavailableReplicas": (counts.total_spec - counts.available).max(0),
        "conditions": conditions,
    });
    if let Some(c) = old.get("collisionCount") {
        status["collisionCount"] = c.clone();
    }
    Outcome { status, recheck }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap_or_default()
    }

    fn reason(status: &Value, kind: &str) -> String {
        status["conditions"]
            .as_array()
            .and_then(|c| find(c, kind))
            .map(|c| c["reason"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_complete_rollout_says_new_replica_set_available() {
        let d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 3, "progressDeadlineSeconds": 600},
                       "status": {"observedGeneration": 2}});
        let counts = Counts { total_spec: 3, replicas: 3, updated: 3, ready: 3, available: 3 };
        let out = compute(&d, counts, Some("web-abc"), 0, at("2026-01-01T00:00:00Z"));
        assert_eq!(reason(&out.status, "Progressing"), "NewReplicaSetAvailable");
        assert_eq!(reason(&out.status, "Available"), "MinimumReplicasAvailable");
        assert_eq!(out.status["unavailableReplicas"], 0);
        assert!(out.recheck.is_none());
    }

    #[test]
    fn a_stalled_rollout_times_out_after_the_deadline() {
        let d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 3, "progressDeadlineSeconds": 10},
                       "status": {"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3, "readyReplicas": 3,
                                  "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                                                  "message": "ReplicaSet \"web-new\" is progressing.",
                                                  "lastUpdateTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        let counts = Counts { total_spec: 4, replicas: 4, updated: 1, ready: 3, available: 3 };
        let early = compute(&d, counts, Some("web-new"), 0, at("2026-01-01T00:00:05Z"));
        assert_eq!(reason(&early.status, "Progressing"), "ReplicaSetUpdated");
        assert_eq!(early.recheck, Some(Duration::from_secs(5)));
        let late = compute(&d, counts, Some("web-new"), 0, at("2026-01-01T00:00:11Z"));
        assert_eq!(reason(&late.status, "Progressing"), "ProgressDeadlineExceeded");
        assert_eq!(reason(&late.status, "Available"), "MinimumReplicasAvailable");
        assert_eq!(late.status["unavailableReplicas"], 1);
    }

    #[test]
    fn pause_and_resume_set_unknown_progress() {
        let d = json!({"metadata": {"generation": 1}, "spec": {"replicas": 1, "paused": true, "progressDeadlineSeconds": 600}});
        let out = compute(&d, Counts::default(), None, 0, at("2026-01-01T00:00:00Z"));
        assert_eq!(reason(&out.status, "Progressing"), "DeploymentPaused");
        let mut resumed = d.clone();
        resumed["spec"]["paused"] = json!(false);
        resumed["status"] = out.status;
        let out = compute(&resumed, Counts::default(), None, 0, at("2026-01-01T00:00:01Z"));
        assert_eq!(reason(&out.status, "Progressing"), "DeploymentResumed");
    }
}
