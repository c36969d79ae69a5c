//! The disruption controller (kube-controller-manager's): keeps every PodDisruptionBudget's
//! `status` (expected, desired and current healthy pods, `disruptionsAllowed`, `disruptedPods`,
//! the `DisruptionAllowed` condition) current from the pods it selects and their controllers'
//! scale. The eviction API ([`crate::api::eviction`]) reads that status and spends it.
//!
//! Driven by PDB, Pod and scale-owner (Deployment, ReplicaSet, StatefulSet,
//! ReplicationController) changes; the only timer is the requeue when a `disruptedPods` entry
//! expires. The decision is [`budget::plan`], a pure function. A status is written only over the
//! version it was computed from, so an eviction's decrement is never overwritten by a stale cache.

pub mod budget;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::podutil;
use super::runtime::{Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::object;
use crate::api::registry::Registry;
use budget::Scale;

const NAME: &str = "controller-disruption";

/// What a reconcile works with.
pub struct Ctx {
    registry: Arc<Registry>,
    pdbs: Arc<Informer>,
    pods: Arc<Informer>,
    deployments: Arc<Informer>,
    replica_sets: Arc<Informer>,
    stateful_sets: Arc<Informer>,
    replication_controllers: Arc<Informer>,
}

/// Starts the controller under the informers' supervisor.
pub fn start(informers: &Arc<Informers>) {
    let ctx = Arc::new(Ctx {
        registry: Arc::clone(informers.registry()),
        pdbs: informers.get("policy", "PodDisruptionBudget"),
        pods: informers.get("", "Pod"),
        deployments: informers.get("apps", "Deployment"),
        replica_sets: informers.get("apps", "ReplicaSet"),
        stateful_sets: informers.get("apps", "StatefulSet"),
        replication_controllers: informers.get("", "ReplicationController"),
    });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(NAME);
    supervisor.spawn(NAME, move || {
        let (for_pods, for_owners) = (Arc::clone(&ctx.pdbs), Arc::clone(&ctx.pdbs));
        let owners = move |obj: &Value| pdbs_in_namespace(&for_owners, obj);
        Controller::new(NAME, Arc::clone(&ctx.pdbs))
            .watches(Arc::clone(&ctx.pods), move |pod| pdbs_of_pod(&for_pods, pod))
            .watches(Arc::clone(&ctx.deployments), owners.clone())
            .watches(Arc::clone(&ctx.replica_sets), owners.clone())
            .watches(Arc::clone(&ctx.stateful_sets), owners.clone())
            .watches(Arc::clone(&ctx.replication_controllers), owners)
            .workers(2)
            .run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

/// The PDBs selecting `pod`.
fn pdbs_of_pod(pdbs: &Informer, pod: &Value) -> Vec<ObjectKey> {
    let Some(ns) = object::namespace(pod) else { return Vec::new() };
    pdbs.list(Some(ns)).iter().filter(|b| budget::selects(b, pod)).map(|b| ObjectKey::of(b)).collect()
}

/// Every PDB of the namespace of a scale owner (its scale may be any of theirs' expected count).
fn pdbs_in_namespace(pdbs: &Informer, owner: &Value) -> Vec<ObjectKey> {
    let Some(ns) = object::namespace(owner) else { return Vec::new() };
    pdbs.list(Some(ns)).iter().map(|b| ObjectKey::of(b)).collect()
}

impl Ctx {
    /// The scale of a pod's controller from its controller `ownerReference`, as the disruption
    /// controller's finders look it up: a ReplicaSet a Deployment controls counts as the
    /// Deployment; `None` when the controller is not cached or not a kind with a scale.
    fn scale_of(&self, ns: &str, owner: &Value) -> Option<Scale> {
        let kind = owner.get("kind").and_then(Value::as_str)?;
        let name = owner.get("name").and_then(Value::as_str)?;
        let uid = owner.get("uid").and_then(Value::as_str)?;
        let key = ObjectKey::namespaced(ns, name);
        let informer = match kind {
            "ReplicaSet" => &self.replica_sets,
            "StatefulSet" => &self.stateful_sets,
            "ReplicationController" => &self.replication_controllers,
            _ => return None,
        };
        let found = informer.get(&key).filter(|o| super::podutil::uid(o) == uid)?;
        if kind == "ReplicaSet" {
            if let Some(dep_ref) = super::runtime::controller_ref(&found) {
                if dep_ref.get("kind").and_then(Value::as_str) != Some("Deployment") {
                    return None;
                }
                let dep_name = dep_ref.get("name").and_then(Value::as_str)?;
                let dep_uid = dep_ref.get("uid").and_then(Value::as_str)?;
                let dep = self.deployments.get(&ObjectKey::namespaced(ns, dep_name))?;
                return (super::podutil::uid(&dep) == dep_uid).then(|| scale(&dep));
            }
        }
        Some(scale(&found))
    }
}

fn scale(controller: &Value) -> Scale {
    Scale {
        uid: super::podutil::uid(controller).to_string(),
        replicas: controller.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1),
    }
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(pdb) = ctx.pdbs.get(&key) else { return Ok(Action::Done) };
    let Some(ns) = key.ns() else { return Ok(Action::Done) };
    let selected: Vec<Arc<Value>> = match budget::selector(&pdb) {
        Some(selector) => ctx.pods.select(ns, &selector),
        None => Vec::new(),
    };
    let pods: Vec<&Value> = selected.iter().map(|p| p.as_ref()).collect();
    let now = jiff::Timestamp::now();
    let scale_of = |owner: &Value| ctx.scale_of(ns, owner);
    let (status, recheck, event) = match budget::plan(&pdb, &pods, &scale_of, now) {
        Ok(plan) => {
            let event = (!plan.unmanaged.is_empty()).then(|| {
                (
                    "UnmanagedPods",
                    format!(
                    "Pods selected by this PodDisruptionBudget (selector: {}) were found to be unmanaged. As a result, \
                     the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To \
                     account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
                    pdb.pointer("/spec/selector").cloned().unwrap_or(Value::Null)
                ),
                )
            });
            (plan.status, plan.recheck, event)
        }
        Err(e) => {
            tracing::warn!(pdb = %key, error = %e, "failed to sync PDB");
            let event = Some((
                "CalculateExpectedPodCountFailed",
                format!("Failed to calculate the number of expected pods: {e}"),
            ));
            (budget::fail_safe(&pdb, &e, now), None, event)
        }
    };
    if pdb.get("status") != Some(&status) {
        write_status(&ctx.registry, &pdb, status).await?;
        if let Some((reason, message)) = event {
            crate::controllers::events::record(
                &ctx.registry,
                &pdb,
                ("policy/v1", "PodDisruptionBudget"),
                ("Warning", reason, &message),
                "controllermanager",
            )
            .await;
        }
    }
    Ok(recheck.map_or(Action::Done, |d| Action::RequeueAfter(d + Duration::from_millis(100))))
}

/// Writes `status` over exactly the version of `pdb` it was computed from: a newer version
/// (an eviction spent a disruption) is a conflict, and the newer version is reconciled again.
async fn write_status(registry: &Registry, pdb: &Value, status: Value) -> Result<(), Error> {
    podutil::write_status(registry, ("policy", "PodDisruptionBudget"), pdb, &status, true).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
