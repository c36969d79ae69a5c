//! The node lifecycle controller's decisions as pure functions of the objects and the time:
//! when a node's heartbeat is stale, what its conditions and taints become, and when a pod on a
//! node with `NoExecute` taints is evicted.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

/// The taint key of a node whose heartbeat is stale.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint key of a node that reports itself not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The reason of the conditions of a node whose heartbeat is stale.
pub const UNKNOWN_REASON: &str = "NodeStatusUnknown";
/// Their message (Kubernetes' words).
pub const UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";
/// The conditions a kubelet posts, which turn `Unknown` when it stops.
const CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

fn time_at(obj: &Value, pointer: &str) -> Option<Timestamp> {
    obj.pointer(pointer)?.as_str()?.parse().ok()
}

/// The condition `kind` of a node.
pub fn condition<'a>(node: &'a Value, kind: &str) -> Option<&'a Value> {
    node.pointer("/status/conditions")?.as_array()?.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// The last time the node was heard from: its Lease's `renewTime`, its Ready condition's
/// `lastHeartbeatTime`, but never before `started` (a restarted controller gives every node a
/// full grace period, as Kubernetes' does from its own observation time).
pub fn last_heard(node: &Value, lease: Option<&Value>, started: Timestamp) -> Timestamp {
    let renewed = lease.and_then(|l| time_at(l, "/spec/renewTime"));
    let heartbeat = condition(node, "Ready").and_then(|c| time_at(c, "/lastHeartbeatTime"));
    [renewed, heartbeat, Some(started)].into_iter().flatten().max().unwrap_or(started)
}

/// How long the node stays reachable from `now`; `None` once `last_heard + grace` has passed.
pub fn reachable_for(last_heard: Timestamp, grace: Duration, now: Timestamp) -> Option<Duration> {
    let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
    let expiry = last_heard.checked_add(grace).unwrap_or(Timestamp::MAX);
    let left = expiry.duration_since(now);
    (left > SignedDuration::ZERO).then(|| Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// The conditions of an unreachable node: the kubelet's conditions `Unknown` (added when never
/// posted), the others kept. `None` when they already are.
pub fn unknown_conditions(node: &Value, now: Timestamp) -> Option<Vec<Value>> {
    let mut conditions = node.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let now_s = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut changed = false;
    for kind in CONDITIONS {
        match conditions.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some(kind)) {
            Some(c) if c.get("status").and_then(Value::as_str) == Some("Unknown") => {}
            Some(c) => {
                c["status"] = json!("Unknown");
                c["reason"] = json!(UNKNOWN_REASON);
                c["message"] = json!(UNKNOWN_MESSAGE);
                c["lastTransitionTime"] = json!(now_s);
                changed = true;
            }
            None => {
                conditions.push(json!({"type": kind, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                                       "message": UNKNOWN_MESSAGE, "lastHeartbeatTime": now_s,
                                       "lastTransitionTime": now_s}));
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

fn is_unreachable_taint(t: &Value) -> bool {
    t.get("key").and_then(Value::as_str) == Some(UNREACHABLE)
}

/// The node's taints with the unreachable taints (`NoSchedule` and `NoExecute`, the latter
/// stamped with `timeAdded`) present when `unreachable`, absent otherwise. `None` when nothing
/// changes.
pub fn taints(node: &Value, unreachable: bool, now: Timestamp) -> Option<Vec<Value>> {
    let current = node.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
    let has = |effect: &str| {
        current.iter().any(|t| is_unreachable_taint(t) && t.get("effect").and_then(Value::as_str) == Some(effect))
    };
    if unreachable {
        let mut next = current.clone();
        if !has("NoSchedule") {
            next.push(json!({"key": UNREACHABLE, "effect": "NoSchedule"}));
        }
        if !has("NoExecute") {
            let added = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            next.push(json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": added}));
        }
        (next.len() != current.len()).then_some(next)
    } else {
        let next: Vec<Value> = current.iter().filter(|t| !is_unreachable_taint(t)).cloned().collect();
        (next.len() != current.len()).then_some(next)
    }
}

/// What happens to a pod on a node with `NoExecute` taints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// It tolerates every one of them forever (or there are none).
    Never,
    /// It does not tolerate one of them, or its toleration has run out: delete it now.
    Now,
    /// It tolerates them until this time.
    At(Timestamp),
}

/// Whether `toleration` tolerates `taint` (key, operator `Equal`/`Exists`, value, effect).
pub fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (t_key, t_effect, op) = (s(toleration, "key"), s(toleration, "effect"), s(toleration, "operator"));
    let exists = op == "Exists";
    let key_ok = (t_key.is_empty() && exists) || t_key == s(taint, "key");
    let effect_ok = t_effect.is_empty() || t_effect == s(taint, "effect");
    let value_ok = exists || s(toleration, "value") == s(taint, "value");
    key_ok && effect_ok && value_ok
}

/// When the pod `pod` is evicted from a node with `taints` (only the `NoExecute` ones count), as
/// Kubernetes' taint manager decides: at once if one is not tolerated; otherwise after the
/// shortest `tolerationSeconds` of the tolerations used, counted from when the taint was added
/// (`timeAdded`, else `now`); never when none of them bounds it.
pub fn eviction(pod: &Value, taints: &[Value], now: Timestamp) -> Eviction {
    let tolerations = pod.pointer("/spec/tolerations").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let mut at: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.get("effect").and_then(Value::as_str) == Some("NoExecute")) {
        let used: Vec<&Value> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Eviction::Now;
        }
        // The shortest bounded toleration counts (negative as zero); none bounded: forever.
        let Some(secs) =
            used.iter().filter_map(|t| t.get("tolerationSeconds").and_then(Value::as_i64)).map(|s| s.max(0)).min()
        else {
            continue;
        };
        let added = time_at(taint, "/timeAdded").unwrap_or(now);
        let when = added.checked_add(SignedDuration::from_secs(secs)).unwrap_or(Timestamp::MAX);
        at = Some(at.map_or(when, |a| a.min(when)));
    }
    match at {
        None => Eviction::Never,
        Some(t) if t <= now => Eviction::Now,
        Some(t) => Eviction::At(t),
    }
}

/// The tolerations Kubernetes' `DefaultTolerationSeconds` admission adds to a pod that has none
/// for the key: `not-ready` and `unreachable`, `NoExecute`, for `seconds`.
pub fn add_default_tolerations(pod: &mut Value, seconds: i64) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let list = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = list.as_array_mut() else { return };
    for key in [NOT_READY, UNREACHABLE] {
        let covered = list.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (k == key || (k.is_empty() && op == "Exists")) && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn the_newest_of_lease_heartbeat_and_start_counts() {
        let node = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                                                      "lastHeartbeatTime": "2026-01-01T00:00:10Z"}]}});
        let lease = json!({"spec": {"renewTime": "2026-01-01T00:00:20.500000Z"}});
        let start = ts("2026-01-01T00:00:00Z");
        assert_eq!(last_heard(&node, Some(&lease), start), ts("2026-01-01T00:00:20.5Z"));
        assert_eq!(last_heard(&node, None, start), ts("2026-01-01T00:00:10Z"));
        assert_eq!(last_heard(&json!({}), None, start), start);
        assert_eq!(last_heard(&node, Some(&lease), ts("2026-01-01T00:01:00Z")), ts("2026-01-01T00:01:00Z"));
    }

    #[test]
    fn a_lease_older_than_the_grace_period_is_stale() {
        let heard = ts("2026-01-01T00:00:00Z");
        let grace = Duration::from_secs(20);
        assert_eq!(reachable_for(heard, grace, ts("2026-01-01T00:00:05Z")), Some(Duration::from_secs(15)));
        assert_eq!(reachable_for(heard, grace, ts("2026-01-01T00:00:19.9Z")), Some(Duration::from_millis(100)));
        assert_eq!(reachable_for(heard, grace, ts("2026-01-01T00:00:20Z")), None);
        assert_eq!(reachable_for(heard, grace, ts("2026-01-01T00:05:00Z")), None);
        // A clock behind the heartbeat still counts the whole grace period, no panic.
        assert_eq!(reachable_for(heard, grace, ts("2025-12-31T23:59:50Z")), Some(Duration::from_secs(30)));
        assert!(reachable_for(heard, Duration::MAX, heard).is_some());
    }

    #[test]
    fn unreachable_conditions_turn_unknown_once() {
        let node = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2026-01-01T00:00:00Z"},
            {"type": "MemoryPressure", "status": "False"},
            {"type": "NetworkUnavailable", "status": "False"}]}});
        let now = ts("2026-01-01T00:01:00Z");
        let next = unknown_conditions(&node, now).unwrap_or_else(|| panic!("changes"));
        let ready = next.iter().find(|c| c["type"] == "Ready").unwrap_or_else(|| panic!("ready"));
        assert_eq!(ready["status"], "Unknown");
        assert_eq!(ready["reason"], UNKNOWN_REASON);
        assert_eq!(ready["message"], UNKNOWN_MESSAGE);
        assert_eq!(ready["lastHeartbeatTime"], "2026-01-01T00:00:00Z");
        assert_eq!(ready["lastTransitionTime"], "2026-01-01T00:01:00Z");
        assert!(next.iter().any(|c| c["type"] == "DiskPressure" && c["reason"] == "NodeStatusNeverUpdated"));
        assert!(next.iter().any(|c| c["type"] == "NetworkUnavailable" && c["status"] == "False"));
        let again = json!({"status": {"conditions": next}});
        assert_eq!(unknown_conditions(&again, now), None);
    }

    #[test]
    fn unreachable_taints_come_and_go() {
        let now = ts("2026-01-01T00:01:00Z");
        let node = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}});
        let tainted = taints(&node, true, now).unwrap_or_else(|| panic!("adds"));
        assert_eq!(tainted.len(), 3);
        assert!(tainted.iter().any(|t| t["key"] == UNREACHABLE
            && t["effect"] == "NoExecute"
            && t["timeAdded"] == "2026-01-01T00:01:00Z"));
        assert!(tainted.iter().any(|t| t["key"] == UNREACHABLE && t["effect"] == "NoSchedule"));
        let node = json!({"spec": {"taints": tainted}});
        assert_eq!(taints(&node, true, now), None);
        assert_eq!(taints(&node, false, now), Some(vec![json!({"key": "a", "effect": "NoSchedule"})]));
        assert_eq!(taints(&json!({}), false, now), None);
    }

    fn unreachable_at(added: &str) -> Vec<Value> {
        vec![
            json!({"key": UNREACHABLE, "effect": "NoSchedule"}),
            json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": added}),
        ]
    }

    #[test]
    fn evictions_follow_the_tolerations() {
        let now = ts("2026-01-01T00:00:10Z");
        let taints = unreachable_at("2026-01-01T00:00:00Z");
        assert_eq!(eviction(&json!({"spec": {}}), &taints, now), Eviction::Now);
        let mut pod = json!({"spec": {}});
        add_default_tolerations(&mut pod, 30);
        assert_eq!(eviction(&pod, &taints, now), Eviction::At(ts("2026-01-01T00:00:30Z")));
        assert_eq!(eviction(&pod, &taints, ts("2026-01-01T00:00:30Z")), Eviction::Now);
        // Counted from now when the taint carries no timeAdded.
        let bare = vec![json!({"key": UNREACHABLE, "effect": "NoExecute"})];
        assert_eq!(eviction(&pod, &bare, now), Eviction::At(ts("2026-01-01T00:00:40Z")));
        let forever = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert_eq!(eviction(&forever, &taints, now), Eviction::Never);
        let short = json!({"spec": {"tolerations": [
            {"operator": "Exists"},
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 3}]}});
        assert_eq!(eviction(&short, &taints, now), Eviction::Now);
        assert_eq!(eviction(&short, &taints, ts("2026-01-01T00:00:01Z")), Eviction::At(ts("2026-01-01T00:00:03Z")));
        // Only NoExecute taints evict.
        assert_eq!(eviction(&json!({}), &[json!({"key": "x", "effect": "NoSchedule"})], now), Eviction::Never);
        let other = vec![json!({"key": "dedicated", "value": "gpu", "effect": "NoExecute"})];
        assert_eq!(eviction(&pod, &other, now), Eviction::Now);
        let equal = json!({"spec": {"tolerations": [{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]}});
        assert_eq!(eviction(&equal, &other, now), Eviction::Never);
    }

    #[test]
    fn default_tolerations_are_added_once_and_respect_the_pods_own() {
        let mut pod = json!({"spec": {"tolerations": [
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        add_default_tolerations(&mut pod, 30);
        let list = pod["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
        assert_eq!(list.len(), 2);
        assert!(list.iter().any(|t| t["key"] == NOT_READY && t["tolerationSeconds"] == 30));
        assert!(list.iter().any(|t| t["key"] == UNREACHABLE && t["tolerationSeconds"] == 5));
        add_default_tolerations(&mut pod, 30);
        assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        add_default_tolerations(&mut all, 30);
        assert_eq!(all["spec"]["tolerations"].as_array().map(Vec::len), Some(1));
    }
}
