//! The disruption controller's decision, a pure function of a PodDisruptionBudget, the pods it
//! selects, their controllers' scale and the time: the PDB's new `status`, as
//! kube-controller-manager's disruption controller computes it.
//!
//! - `expectedPods`: with `maxUnavailable` or a percentage `minAvailable`, the sum of the
//!   `spec.replicas` of the pods' controllers (a Deployment for a ReplicaSet it controls); with an
//!   integer `minAvailable`, the number of selected pods.
//! - `desiredHealthy`: `minAvailable`, or `expectedPods - maxUnavailable` (not below 0);
//!   percentages are rounded up.
//! - `currentHealthy`: Ready pods not being deleted and not recently evicted (`disruptedPods`).
//! - `disruptionsAllowed`: `currentHealthy - desiredHealthy`, 0 when negative or when no pods
//!   are expected.
//! - `disruptedPods`: the eviction API's entries for pods it is about to delete; an entry lasts
//!   [`DELETION_TIMEOUT`], after which the pod counts again.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};

use crate::api::object;
use crate::api::selector::{from_label_selector, LabelSelector};
use crate::controllers::podutil;

/// How long a pod the eviction API admitted is expected to take to go (Kubernetes'
/// `DeletionTimeout`); after that it counts as healthy again.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);
/// The condition the controller keeps on every PDB.
pub const CONDITION: &str = "DisruptionAllowed";
/// The condition's reason when disruptions are allowed.
pub const SUFFICIENT_PODS: &str = "SufficientPods";
/// The condition's reason when no disruption is allowed.
pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
/// The condition's reason when the status could not be computed.
pub const SYNC_FAILED: &str = "SyncFailed";

/// Why a PDB's status cannot be computed (worded as Kubernetes words it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// A selected pod's controller is not a kind with a known scale, or is not in the cache.
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    /// `minAvailable` / `maxUnavailable` is neither an integer nor a percentage.
    #[error("invalid value for IntOrString: {0}")]
    IntOrPercent(String),
}

/// A controller's identity and desired scale (`spec.replicas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    pub uid: String,
    pub replicas: i64,
}

/// The PDB's selector: `None` (nothing selected) when it is missing or invalid; `{}` selects
/// every pod of the namespace (policy/v1).
pub fn selector(pdb: &Value) -> Option<LabelSelector> {
    let sel = from_label_selector(pdb.pointer("/spec/selector").unwrap_or(&Value::Null)).ok()?;
    (!sel.is_nothing()).then_some(sel)
}

/// Whether `pdb` covers `pod` (same namespace, selector matches its labels).
pub fn selects(pdb: &Value, pod: &Value) -> bool {
    object::namespace(pdb) == object::namespace(pod) && selector(pdb).is_some_and(|s| s.matches(&object::labels(pod)))
}

/// An int-or-percent scaled against `total`, rounded up (`intstr.GetScaledValueFromIntOrPercent`).
pub fn scaled_value(value: &Value, total: i64) -> Result<i64, SyncError> {
    match value {
        Value::Number(n) => n.as_i64().ok_or_else(|| SyncError::IntOrPercent(format!("invalid value {n}"))),
        Value::String(s) => {
            let Some(digits) = s.strip_suffix('%') else {
                return Err(SyncError::IntOrPercent("invalid type: string is not a percentage".into()));
            };
            let percent: i64 =
                digits.parse().map_err(|e| SyncError::IntOrPercent(format!("invalid value {s:?}: {e}")))?;
            let product = i128::from(percent) * i128::from(total);
            let rounded_up = -((-product).div_euclid(100));
            i64::try_from(rounded_up).map_err(|_| SyncError::IntOrPercent(format!("invalid value {s:?}: out of range")))
        }
        other => Err(SyncError::IntOrPercent(format!("invalid type: neither int nor percentage: {other}"))),
    }
}

/// `expectedPods` and `desiredHealthy` of `pdb` over `pods`, and the names of selected pods
/// without a controller (which cannot be accounted for with `maxUnavailable` or a percentage).
/// `scale_of` finds the scale of a pod's controller from its controller `ownerReference`.
pub fn expected_and_desired(
    pdb: &Value,
    pods: &[&Value],
    scale_of: &dyn Fn(&Value) -> Option<Scale>,
) -> Result<(i64, i64, Vec<String>), SyncError> {
    let spec = pdb.get("spec").unwrap_or(&Value::Null);
    let present = |field: &str| spec.get(field).filter(|v| !v.is_null());
    if let Some(max_unavailable) = present("maxUnavailable") {
        let (expected, unmanaged) = expected_scale(pods, scale_of)?;
        let max = scaled_value(max_unavailable, expected)?;
        return Ok((expected, expected.saturating_sub(max).max(0), unmanaged));
    }
    match present("minAvailable") {
        Some(Value::String(_)) => {
            let (expected, unmanaged) = expected_scale(pods, scale_of)?;
            let min = scaled_value(&spec["minAvailable"], expected)?;
            Ok((expected, min, unmanaged))
        }
        Some(v) => {
            let expected = i64::try_from(pods.len()).unwrap_or(i64::MAX);
            Ok((expected, scaled_value(v, expected)?, Vec::new()))
        }
        None => Ok((0, 0, Vec::new())),
    }
}

/// The sum of the scales of the selected pods' controllers, each controller counted once.
fn expected_scale(
    pods: &[&Value],
    scale_of: &dyn Fn(&Value) -> Option<Scale>,
) -> Result<(i64, Vec<String>), SyncError> {
    let mut scales: Vec<Scale> = Vec::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let Some(owner) = crate::controllers::runtime::controller_ref(pod) else {
            unmanaged.push(object::name(pod).to_string());
            continue;
        };
        let owner_uid = owner.get("uid").and_then(Value::as_str).unwrap_or("");
        if scales.iter().any(|s| s.uid == owner_uid) {
            continue;
        }
        let scale = scale_of(owner).ok_or_else(|| SyncError::NoController(object::name(pod).to_string()))?;
        if !scales.iter().any(|s| s.uid == scale.uid) {
            scales.push(scale);
        }
    }
    let expected = scales.iter().fold(0i64, |sum, s| sum.saturating_add(s.replicas.max(0)));
    Ok((expected, unmanaged))
}

/// The parsed `status.disruptedPods` entry of a pod.
fn disrupted_at(status: &Value, pod: &str) -> Option<Timestamp> {
    status.pointer("/disruptedPods")?.get(pod)?.as_str()?.parse().ok()
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn expires(at: Timestamp) -> Option<Timestamp> {
    at.checked_add(SignedDuration::try_from(DELETION_TIMEOUT).ok()?).ok()
}

/// The PDB's next status and when to look again (the earliest `disruptedPods` expiry).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub status: Value,
    pub recheck: Option<Duration>,
    /// Selected pods without a controller (reported, not fatal).
    pub unmanaged: Vec<String>,
}

/// The status kube-controller-manager would write for `pdb` over the pods it selects at `now`.
pub fn plan(
    pdb: &Value,
    pods: &[&Value],
    scale_of: &dyn Fn(&Value) -> Option<Scale>,
    now: Timestamp,
) -> Result<Plan, SyncError> {
    let (expected, desired, unmanaged) = expected_and_desired(pdb, pods, scale_of)?;
    let old = pdb.get("status").unwrap_or(&Value::Null);
    // Entries of pods still there, not yet being deleted, and not expired.
    let mut disrupted = Map::new();
    let mut recheck: Option<Timestamp> = None;
    for pod in pods.iter().filter(|p| object::deletion_timestamp(p).is_none()) {
        let name = object::name(pod);
        let Some(at) = disrupted_at(old, name) else { continue };
        let Some(until) = expires(at) else { continue };
        if until > now {
            recheck = Some(recheck.map_or(until, |r| r.min(until)));
            disrupted.insert(name.to_string(), json!(rfc3339(at)));
        } else {
            tracing::info!(pod = name, pdb = object::name(pdb), "pod was expected to be deleted but it wasn't");
        }
    }
    let healthy = pods
        .iter()
        .filter(|p| object::deletion_timestamp(p).is_none())
        .filter(|p| !disrupted.contains_key(object::name(p)))
        .filter(|p| podutil::is_ready(p))
        .count();
    let healthy = i64::try_from(healthy).unwrap_or(i64::MAX);
    let allowed = if expected <= 0 { 0 } else { healthy.saturating_sub(desired).max(0) };
    let generation = object::meta(pdb).get("generation").and_then(Value::as_i64).unwrap_or(0);
    let mut status = json!({
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "disruptionsAllowed": allowed,
        "observedGeneration": generation,
    });
    if !disrupted.is_empty() {
        status["disruptedPods"] = Value::Object(disrupted);
    }
    let (state, reason) = if allowed > 0 { ("True", SUFFICIENT_PODS) } else { ("False", INSUFFICIENT_PODS) };
    status["conditions"] = with_condition(old, state, reason, "", generation, now);
    let recheck = recheck.map(|t| now.duration_until(t).unsigned_abs());
    Ok(Plan { status, recheck, unmanaged })
}

/// The status after a failed sync: no disruption allowed, the `SyncFailed` reason with the error
/// (kube's `failSafe`); everything else kept.
pub fn fail_safe(pdb: &Value, error: &SyncError, now: Timestamp) -> Value {
    let old = pdb.get("status").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let observed = old.get("observedGeneration").and_then(Value::as_i64).unwrap_or(0);
    let mut status = old.clone();
    status["disruptionsAllowed"] = json!(0);
    status["conditions"] = with_condition(&old, "False", SYNC_FAILED, &error.to_string(), observed, now);
    status
}

/// `status.conditions` with the `DisruptionAllowed` condition set as `meta.SetStatusCondition`
/// does: the transition time moves only when the status changes.
fn with_condition(old: &Value, state: &str, reason: &str, message: &str, generation: i64, now: Timestamp) -> Value {
    let mut conditions: Vec<Value> = old.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let existing = conditions.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some(CONDITION));
    match existing {
        Some(c) => {
            if c.get("status").and_then(Value::as_str) != Some(state) {
                c["status"] = json!(state);
                c["lastTransitionTime"] = json!(rfc3339(now));
            }
            c["reason"] = json!(reason);
            c["message"] = json!(message);
            c["observedGeneration"] = json!(generation);
        }
        None => conditions.push(json!({
            "type": CONDITION, "status": state, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": rfc3339(now),
        })),
    }
    Value::Array(conditions)
}

/// The API server's checks of a PodDisruptionBudget's spec, as `(field, message)` causes
/// worded as kube-apiserver's validation.
pub fn validate(pdb: &Value) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    let spec = pdb.get("spec").unwrap_or(&Value::Null);
    let present = |field: &str| spec.get(field).filter(|v| !v.is_null());
    if present("minAvailable").is_some() && present("maxUnavailable").is_some() {
        causes.push((
            "spec".into(),
            "Invalid value: \"object\": minAvailable and maxUnavailable cannot be both set".into(),
        ));
    }
    for field in ["minAvailable", "maxUnavailable"] {
        let path = format!("spec.{field}");
        match present(field) {
            Some(Value::Number(n)) if n.as_i64().is_none_or(|v| v < 0) => {
                causes.push((path, format!("Invalid value: {n}: must be greater than or equal to 0")));
            }
            Some(Value::String(s)) => match s.strip_suffix('%').map(str::parse::<i64>) {
                Some(Ok(p)) if p < 0 => {
                    causes.push((path, format!("Invalid value: \"{s}\": must be greater than or equal to 0")))
                }
                Some(Ok(p)) if p > 100 => {
                    causes.push((path, format!("Invalid value: \"{s}\": must not be greater than 100%")))
                }
                Some(Ok(_)) => {}
                _ => causes.push((
                    path,
                    format!("Invalid value: \"{s}\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"),
                )),
            },
            _ => {}
        }
    }
    if let Some(policy) = present("unhealthyPodEvictionPolicy") {
        if !matches!(policy.as_str(), Some("IfHealthyBudget" | "AlwaysAllow")) {
            causes.push((
                "spec.unhealthyPodEvictionPolicy".into(),
                format!("Unsupported value: {policy}: supported values: \"AlwaysAllow\", \"IfHealthyBudget\""),
            ));
        }
    }
    if let Some(sel) = present("selector") {
        if let Err(e) = from_label_selector(sel) {
            causes.push(("spec.selector".into(), format!("Invalid value: {sel}: {e}")));
        }
    }
    causes
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
