//! Pure helpers over pods the workload controllers share: active, ready and available pods (as
//! `kube-controller-manager`'s `podutil` judges them) and the order in which extra pods go.

use std::cmp::Reverse;
use std::time::Duration;

use serde_json::Value;

use crate::api::object;
use crate::api::registry::WriteOptions;

/// The field manager the workload controllers write as (kube-controller-manager's name).
pub const MANAGER: &str = "kube-controller-manager";

/// A controller's write options: its field manager.
pub fn opts() -> WriteOptions {
    WriteOptions { field_manager: Some(MANAGER.into()), ..Default::default() }
}

/// Writes `status` into the `status` subresource of `obj` (of resource `group`/`kind`); with `pinned`,
/// only over the resourceVersion `obj` has (a newer one is a conflict: a status computed from a
/// stale cache must not undo a newer write). The written object, or `None` when `obj` is gone.
pub async fn write_status(
    registry: &crate::api::registry::Registry,
    (group, kind): (&str, &str),
    obj: &Value,
    status: &Value,
    pinned: bool,
) -> crate::api::error::ApiResult<Option<Value>> {
    let ri = registry.resource(group, kind)?;
    let seen = object::resource_version(obj).filter(|_| pinned).map(String::from);
    let written = registry
        .update_with(ri, object::namespace(obj), object::name(obj), Some("status"), &opts(), |cur| {
            let mut next = cur.clone();
            next["status"] = status.clone();
            if let Some(rv) = &seen {
                object::meta_mut(&mut next).insert("resourceVersion".into(), Value::String(rv.clone()));
            }
            Ok(next)
        })
        .await;
    match written {
        Ok(w) => Ok(Some(w.object)),
        Err(crate::api::error::ApiError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An object's uid ("" when it has none).
pub fn uid(obj: &Value) -> &str {
    object::str_at(obj, &["metadata", "uid"]).unwrap_or("")
}

/// What a workload controller counts of a pod: whether it is active, ready, and since when.
/// Taken once when an informer caches the pod (see [`super::runtime::entry::Summary`]), so a controller
/// counting a thousand pods reads no pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodState {
    /// Not terminated (`Succeeded`/`Failed`) and not being deleted.
    pub active: bool,
    /// Has a `deletionTimestamp`.
    pub deleting: bool,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// When it became ready (the `Ready` condition's `lastTransitionTime`), if ready and known.
    pub ready_since: Option<jiff::Timestamp>,
}

impl PodState {
    /// The state of `pod`.
    pub fn of(pod: &Value) -> Self {
        let deleting = object::deletion_timestamp(pod).is_some();
        let terminated = matches!(object::str_at(pod, &["status", "phase"]), Some("Succeeded" | "Failed"));
        let ready_condition = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|list| list.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Ready")));
        let ready = ready_condition.and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True");
        let ready_since = ready_condition
            .filter(|_| ready)
            .and_then(|c| c.get("lastTransitionTime"))
            .and_then(Value::as_str)
            .and_then(|t| t.parse().ok());
        Self { active: !terminated && !deleting, deleting, ready, ready_since }
    }

    /// How long until a ready pod counts as available with `min_ready_seconds`: `Some(0)` when
    /// it is available now, `None` when it is not ready.
    pub fn until_available(&self, min_ready_seconds: i64, now: jiff::Timestamp) -> Option<Duration> {
        if !self.ready {
            return None;
        }
        if min_ready_seconds <= 0 {
            return Some(Duration::ZERO);
        }
        // A ready pod without a transition time counts as available (as Kubernetes does).
        let Some(since) = self.ready_since else { return Some(Duration::ZERO) };
        let at = since.checked_add(jiff::SignedDuration::from_secs(min_ready_seconds)).ok()?;
        let left = now.duration_until(at);
        Some(if left.is_negative() { Duration::ZERO } else { left.unsigned_abs() })
    }

    /// Ready for at least `min_ready_seconds`.
    pub fn is_available(&self, min_ready_seconds: i64, now: jiff::Timestamp) -> bool {
        self.until_available(min_ready_seconds, now) == Some(Duration::ZERO)
    }
}

/// The `Ready` condition is `True` (one field of [`PodState`]; take the state once to read more).
pub fn is_ready(pod: &Value) -> bool {
    PodState::of(pod).ready
}

fn phase_rank(pod: &Value) -> u8 {
    match object::str_at(pod, &["status", "phase"]) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn restarts(pod: &Value) -> i64 {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(|c| c.get("restartCount").and_then(Value::as_i64)).max().unwrap_or(0))
        .unwrap_or(0)
}

fn deletion_cost(pod: &Value) -> i64 {
    object::meta(pod)
        .pointer("/annotations/controller.kubernetes.io~1pod-deletion-cost")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The order in which a controller deletes extra pods, first to go first, as Kubernetes'
/// `ActivePods` ranks them: unscheduled before scheduled, Pending before Unknown before Running,
/// not ready before ready, lower `pod-deletion-cost`, ready for less time, more restarts, newer.
pub fn sort_for_deletion(pods: &mut [&Value]) {
    pods.sort_by_cached_key(|p| {
        let assigned = object::str_at(p, &["spec", "nodeName"]).is_some_and(|n| !n.is_empty());
        let PodState { ready, ready_since: since, .. } = PodState::of(p);
        (
            assigned,
            phase_rank(p),
            ready,
            deletion_cost(p),
            Reverse(since),
            Reverse(restarts(p)),
            Reverse(object::str_at(p, &["metadata", "creationTimestamp"]).unwrap_or("").to_string()),
            object::name(p).to_string(),
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready_at: Option<&str>, created: &str) -> Value {
        let mut p = json!({"metadata": {"name": name, "creationTimestamp": created},
                           "spec": {}, "status": {"phase": phase}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        if let Some(at) = ready_at {
            p["status"]["conditions"] = json!([{"type": "Ready", "status": "True", "lastTransitionTime": at}]);
        }
        p
    }

    #[test]
    fn deletion_prefers_unscheduled_then_pending_then_not_ready_then_newest() {
        let old_ready = pod("old-ready", Some("n"), "Running", Some("2026-01-01T00:00:00Z"), "2026-01-01T00:00:00Z");
        let new_ready = pod("new-ready", Some("n"), "Running", Some("2026-01-02T00:00:00Z"), "2026-01-02T00:00:00Z");
        let running_not_ready = pod("not-ready", Some("n"), "Running", None, "2025-01-01T00:00:00Z");
        let pending = pod("pending", Some("n"), "Pending", None, "2025-01-01T00:00:00Z");
        let unscheduled = pod("unscheduled", None, "Pending", None, "2024-01-01T00:00:00Z");
        let mut pods = vec![&old_ready, &new_ready, &running_not_ready, &pending, &unscheduled];
        sort_for_deletion(&mut pods);
        let names: Vec<&str> = pods.iter().map(|p| object::name(p)).collect();
        assert_eq!(names, vec!["unscheduled", "pending", "not-ready", "new-ready", "old-ready"]);
    }

    #[test]
    fn deletion_cost_and_creation_break_ties() {
        let mut cheap = pod("cheap", Some("n"), "Pending", None, "2026-01-01T00:00:00Z");
        cheap["metadata"]["annotations"] = json!({"controller.kubernetes.io/pod-deletion-cost": "-5"});
        let older = pod("older", Some("n"), "Pending", None, "2026-01-01T00:00:00Z");
        let newer = pod("newer", Some("n"), "Pending", None, "2026-01-03T00:00:00Z");
        let mut pods = vec![&older, &newer, &cheap];
        sort_for_deletion(&mut pods);
        let names: Vec<&str> = pods.iter().map(|p| object::name(p)).collect();
        assert_eq!(names, vec!["cheap", "newer", "older"]);
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let now: jiff::Timestamp = "2026-01-01T00:00:10Z".parse().unwrap_or_default();
        let p = pod("p", Some("n"), "Running", Some("2026-01-01T00:00:05Z"), "2026-01-01T00:00:00Z");
        let state = PodState::of(&p);
        assert!(state.is_available(0, now));
        assert!(state.is_available(5, now));
        assert!(!state.is_available(8, now));
        assert_eq!(state.until_available(8, now), Some(Duration::from_secs(3)));
        let not_ready = pod("q", Some("n"), "Running", None, "2026-01-01T00:00:00Z");
        assert_eq!(PodState::of(&not_ready).until_available(0, now), None);
        let mut gone = p.clone();
        gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:09Z");
        assert!(!PodState::of(&gone).active);
        assert!(state.active);
    }
}
