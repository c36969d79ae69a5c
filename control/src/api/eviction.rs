//! The pod `eviction` subresource (`POST .../pods/NAME/eviction`, a `policy/v1` or `v1beta1`
//! Eviction): a delete that honours the pod's PodDisruptionBudget, as kube-apiserver's
//! `EvictionREST` does.
//!
//! - A pod that is terminal, Pending or already being deleted is deleted: it disrupts nothing.
//! - Else the PDBs selecting it: none -> deleted; more than one -> 500 (unsupported).
//! - One PDB, the pod not Ready: deleted without spending the budget when the PDB's
//!   `unhealthyPodEvictionPolicy` is `AlwaysAllow`, or when the budget is met
//!   (`currentHealthy >= desiredHealthy > 0`); the delete is pinned to the pod's
//!   resourceVersion, so a pod that turned Ready meanwhile is refused with 429.
//! - Otherwise the budget is spent: `disruptionsAllowed` 0 -> 429 with a `DisruptionBudget`
//!   cause; else one status write (over the PDB version it checked; a conflict checks again)
//!   decrements it and records the pod in `disruptedPods`, then the pod is deleted.
//! - Every pod it deletes first gets the `DisruptionTarget` condition (`EvictionByEvictionAPI`).

use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::object;
use super::registry::{DeleteOptions, ListQuery, Registry, WriteOptions};
use super::resources::ResourceInfo;
use crate::controllers::disruption::budget;
use crate::controllers::podutil;

/// More unconfirmed evictions than this in one PDB are refused (Kubernetes' `MaxDisruptedPodSize`).
pub const MAX_DISRUPTED_PODS: usize = 2000;

/// kube's message when the budget allows no disruption.
pub const VIOLATES_BUDGET: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// kube's message for a pod selected by several PDBs.
pub const MULTIPLE_BUDGETS: &str =
    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.";

/// The answer to an eviction that was not an error: the HTTP code and its `Status` body.
pub struct Evicted {
    pub code: u16,
    pub status: Value,
}

/// Evicts pod `name` of `ns` as the Eviction object `eviction` asks, deleting with `opts` (from
/// its `deleteOptions` and the query).
#[tracing::instrument(skip_all, fields(namespace = ns.unwrap_or(""), pod = name))]
pub async fn evict(
    registry: &Registry,
    pods_ri: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    eviction: &Value,
    opts: DeleteOptions,
) -> ApiResult<Evicted> {
    if let Some(body_name) = object::str_at(eviction, &["metadata", "name"]).filter(|n| !n.is_empty()) {
        if body_name != name {
            return Err(ApiError::BadRequest("name in URL does not match name in Eviction object".into()));
        }
    }
    let pod = registry.get(pods_ri, ns, name).await?;
    if can_ignore_budget(&pod) {
        delete(registry, pods_ri, ns, name, &opts).await?;
        return Ok(success());
    }
    let pdbs = budgets_of(registry, ns, &pod).await?;
    let pdb = match pdbs.as_slice() {
        [] => {
            delete(registry, pods_ri, ns, name, &opts).await?;
            return Ok(success());
        }
        [one] => one,
        _ => {
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": MULTIPLE_BUDGETS, "code": 500});
            return Ok(Evicted { code: 500, status });
        }
    };
    let pdb_name = object::name(pdb).to_string();
    let unhealthy_exempt = !podutil::is_ready(&pod) && {
        let always_allow =
            pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str) == Some("AlwaysAllow");
        let int = |f: &str| pdb.pointer(&format!("/status/{f}")).and_then(Value::as_i64).unwrap_or(0);
        always_allow || (int("currentHealthy") >= int("desiredHealthy") && int("desiredHealthy") > 0)
    };
    if unhealthy_exempt {
        // Deleted only while still the unready pod it was judged as.
        let mut pinned = opts.clone();
        if pinned.precondition_resource_version.is_none() {
            pinned.precondition_resource_version = object::resource_version(&pod).map(String::from);
        }
        return match delete(registry, pods_ri, ns, name, &pinned).await {
            Ok(_) => Ok(success()),
            Err(ApiError::Conflict { .. }) if opts.precondition_resource_version.is_none() => {
                Err(still_processing(&pdb_name))
            }
            Err(e) => Err(e),
        };
    }
    spend_budget(registry, ns, &pdb_name, name, opts.dry_run).await?;
    delete(registry, pods_ri, ns, name, &opts).await?;
    Ok(success())
}

/// Deletes the evicted pod after marking it with the `DisruptionTarget` condition (reason
/// `EvictionByEvictionAPI`), as kube-apiserver does, so its controller and kubelet can tell an
/// eviction from other deletions. A resourceVersion precondition applies to the pod as it was
/// before the mark, and then follows it.
async fn delete(
    registry: &Registry,
    pods_ri: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> ApiResult<()> {
    let mut opts = opts.clone();
    if !opts.dry_run {
        let pinned = opts.precondition_resource_version.clone();
        let precondition = opts.precondition_uid.clone();
        let marked = registry
            .update_with(pods_ri, ns, name, Some("status"), &WriteOptions::default(), |cur| {
                let mut next = cur.clone();
                if let Some(uid) = &precondition {
                    if podutil::uid(cur) != uid {
                        // Left to the delete, which words the precondition failure.
                        return Ok(next);
                    }
                }
                if let Some(rv) = &pinned {
                    object::meta_mut(&mut next).insert("resourceVersion".into(), json!(rv));
                }
                mark_disruption_target(&mut next, "EvictionByEvictionAPI", "Eviction API: evicting");
                Ok(next)
            })
            .await;
        match marked {
            Ok(w) if pinned.is_some() => {
                opts.precondition_resource_version = object::resource_version(&w.object).map(String::from);
            }
            Ok(_) => {}
            // The delete reports a vanished pod or a failed precondition in its own words.
            Err(ApiError::NotFound { .. } | ApiError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    registry.delete(pods_ri, ns, name, &opts).await?;
    Ok(())
}

/// Sets the pod's `DisruptionTarget` condition with `reason` and `message` (transition time
/// kept when it already held).
pub fn mark_disruption_target(pod: &mut Value, reason: &str, message: &str) {
    let now = object::now_rfc3339();
    let Some(status) = pod.as_object_mut().map(|p| p.entry("status").or_insert_with(|| json!({}))) else { return };
    let Some(status) = status.as_object_mut() else { return };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conditions.as_array_mut() else { return };
    let fresh = json!({"type": "DisruptionTarget", "status": "True", "reason": reason,
                       "message": message, "lastProbeTime": null, "lastTransitionTime": now});
    match list.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some("DisruptionTarget")) {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => {
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        Some(c) => *c = fresh,
        None => list.push(fresh),
    }
}

fn success() -> Evicted {
    Evicted {
        code: 201,
        status: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    }
}

/// Terminal, Pending or being deleted: evicting it disrupts nothing.
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(object::str_at(pod, &["status", "phase"]), Some("Succeeded" | "Failed" | "Pending"))
        || object::deletion_timestamp(pod).is_some()
}

/// The PDBs of the pod's namespace selecting it.
async fn budgets_of(registry: &Registry, ns: Option<&str>, pod: &Value) -> ApiResult<Vec<Value>> {
    let ri = registry.resource("policy", "PodDisruptionBudget")?;
    let listed = registry.list(ri, &ListQuery { namespace: ns.map(String::from), ..Default::default() }).await?;
    Ok(listed.items.into_iter().filter(|b| budget::selects(b, pod)).collect())
}

/// kube's 429 for a budget that cannot be judged now (its status is behind its spec, or the pod
/// changed while being evicted).
fn still_processing(pdb: &str) -> ApiError {
    ApiError::TooManyRequestsBecause {
        message: format!(
            "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget {pdb} is still being processed by the server."
        ),
        retry_after: 10,
        causes: Vec::new(),
    }
}

/// Checks the budget and spends one disruption on `pod` (kube's `checkAndDecrement`), in one
/// status write over the version checked; a concurrent write makes it check again.
async fn spend_budget(registry: &Registry, ns: Option<&str>, pdb: &str, pod: &str, dry_run: bool) -> ApiResult<()> {
    let ri = registry.resource("policy", "PodDisruptionBudget")?;
    let now = object::now_rfc3339();
    let decremented = |cur: &Value| -> ApiResult<Value> {
        let int = |f: &str| cur.pointer(&format!("/status/{f}")).and_then(Value::as_i64).unwrap_or(0);
        let generation = object::meta(cur).get("generation").and_then(Value::as_i64).unwrap_or(0);
        if int("observedGeneration") < generation {
            return Err(still_processing(pdb));
        }
        let allowed = int("disruptionsAllowed");
        if allowed < 0 {
            return Err(ApiError::Forbidden(format!(
                "poddisruptionbudget.policy \"{pdb}\" is forbidden: pdb disruptions allowed is negative"
            )));
        }
        let disrupted = cur.pointer("/status/disruptedPods").and_then(Value::as_object).map_or(0, |m| m.len());
        if disrupted > MAX_DISRUPTED_PODS {
            return Err(ApiError::Forbidden(format!(
                "poddisruptionbudget.policy \"{pdb}\" is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller"
            )));
        }
        if allowed == 0 {
            let cause = format!(
                "The disruption budget {pdb} needs {} healthy pods and has {} currently",
                int("desiredHealthy"),
                int("currentHealthy")
            );
            return Err(ApiError::TooManyRequestsBecause {
                message: VIOLATES_BUDGET.into(),
                retry_after: 0,
                causes: vec![("DisruptionBudget".into(), cause)],
            });
        }
        let mut next = cur.clone();
        let left = allowed.saturating_sub(1);
        next["status"]["disruptionsAllowed"] = json!(left);
        if left == 0 {
            set_insufficient(&mut next, &now);
        }
        let map = next["status"].as_object_mut().map(|s| s.entry("disruptedPods").or_insert_with(|| json!({})));
        if let Some(Value::Object(map)) = map {
            map.insert(pod.to_string(), json!(now));
        }
        Ok(next)
    };
    if dry_run {
        let current = registry.get(ri, ns, pdb).await?;
        decremented(&current)?;
        return Ok(());
    }
    let opts = WriteOptions { field_manager: Some("kube-apiserver".into()), ..Default::default() };
    registry.update_with(ri, ns, pdb, Some("status"), &opts, decremented).await?;
    Ok(())
}

/// The `DisruptionAllowed` condition turned False (no disruption left), as kube's eviction sets it.
fn set_insufficient(pdb: &mut Value, now: &str) {
    let generation = pdb.pointer("/status/observedGeneration").cloned().unwrap_or(json!(0));
    let Some(status) = pdb.get_mut("status").and_then(Value::as_object_mut) else { return };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conditions.as_array_mut() else { return };
    let fresh = json!({"type": budget::CONDITION, "status": "False", "reason": budget::INSUFFICIENT_PODS,
                       "message": "", "observedGeneration": generation, "lastTransitionTime": now});
    match list.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some(budget::CONDITION)) {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("False") => {
            c["reason"] = json!(budget::INSUFFICIENT_PODS);
            c["observedGeneration"] = generation;
        }
        Some(c) => *c = fresh,
        None => list.push(fresh),
    }
}

#[cfg(test)]
#[path = "eviction_tests.rs"]
mod tests;
