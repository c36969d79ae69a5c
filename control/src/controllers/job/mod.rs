//! The Job controller (batch/v1): runs a Job's pods to completion. The decision is
//! [`plan::plan`]; this file reads the Job and its pods from the informers, carries the plan out
//! through the registry (pods created with the tracking finalizer, status written before the
//! finalizers of counted pods come off) and requeues for back-off, deadlines and TTLs.

pub mod plan;

use std::sync::Arc;

use serde_json::{json, Value};

use super::replicaset::expectations::Expectations;
use super::runtime::{controller_ref, Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{DeleteOptions, Registry};
use crate::api::resources::ResourceInfo;
use crate::controllers::podutil::{opts, uid};

const TASK: &str = "controller-job";

/// What a reconcile works with.
struct Ctx {
    registry: Arc<Registry>,
    jobs: Arc<Informer>,
    pods: Arc<Informer>,
    expectations: Expectations,
}

/// Starts the Job controller under the informers' supervisor.
pub fn start(informers: &Arc<Informers>) {
    let jobs = informers.get("batch", "Job");
    let pods = informers.get("", "Pod");
    let ctx = Arc::new(Ctx {
        registry: Arc::clone(informers.registry()),
        jobs: Arc::clone(&jobs),
        pods: Arc::clone(&pods),
        expectations: Expectations::default(),
    });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(TASK);
    supervisor.spawn(TASK, move || {
        Controller::new(TASK, Arc::clone(&jobs)).owns(Arc::clone(&pods), "Job").workers(4).run(
            Arc::clone(&ctx),
            probe.clone(),
            reconcile,
        )
    });
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let pods_ri = ctx.registry.resource("", "Pod")?;
    let Some(job) = ctx.jobs.get(&key) else {
        ctx.expectations.forget(&key);
        // The Job is gone: its pods must not keep the tracking finalizer, or they never go.
        let orphans: Vec<String> = ctx
            .pods
            .list(key.ns())
            .iter()
            .filter(|p| {
                controller_ref(p).is_some_and(|r| r["kind"] == "Job" && r["name"] == key.name.as_str())
                    && object::finalizers(p).iter().any(|f| f == plan::TRACKING_FINALIZER)
            })
            .map(|p| object::name(p).to_string())
            .collect();
        untrack(&ctx.registry, pods_ri, key.ns(), &orphans).await?;
        return Ok(Action::Done);
    };
    let owned: Vec<Arc<Value>> = ctx
        .pods
        .dependents(uid(&job))
        .into_iter()
        .filter(|p| controller_ref(p).and_then(|r| r.get("uid")).and_then(Value::as_str) == Some(uid(&job)))
        .collect();
    let pods: Vec<&Value> = owned.iter().map(|p| p.as_ref()).collect();
    if object::deletion_timestamp(&job).is_some() {
        // Going away: let the garbage collector remove every pod.
        let tracked: Vec<String> = pods
            .iter()
            .filter(|p| object::finalizers(p).iter().any(|f| f == plan::TRACKING_FINALIZER))
            .map(|p| object::name(p).to_string())
            .collect();
        untrack(&ctx.registry, pods_ri, key.ns(), &tracked).await?;
        return Ok(Action::Done);
    }
    if !ctx.expectations.satisfied(&key, &ctx.pods) {
        // The pod events still to come requeue the Job.
        return Ok(Action::Done);
    }
    let plan = plan::plan(&job, &pods, jiff::Timestamp::now());
    let ns = key.ns();

    let mut failure: Option<ApiError> = None;
    for index in &plan.create {
        match ctx.registry.create(pods_ri, ns, plan::pod_for(&job, *index), &opts()).await {
            Ok(w) => ctx.expectations.expect_create(&key, object::name(&w.object)),
            Err(e) => {
                tracing::warn!(job = %key, error = %e, "creating a pod failed");
                failure = Some(e);
                break;
            }
        }
    }
    for name in &plan.delete {
        match ctx.registry.delete(pods_ri, ns, name, &DeleteOptions::default()).await {
            Ok(_) => ctx.expectations.expect_delete(&key, name),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => failure = Some(e),
        }
    }
    if !plan.create.is_empty() || !plan.delete.is_empty() {
        tracing::info!(job = %key, created = plan.create.len(), deleted = plan.delete.len(), "job pods");
    }

    if job.get("status") != Some(&plan.status) {
        let ri = ctx.registry.resource("batch", "Job")?;
        let status = plan.status.clone();
        let written = ctx
            .registry
            .update_with(ri, ns, &key.name, Some("status"), &opts(), |cur| {
                // Another writer moved on: the counts here are based on an old status.
                if object::resource_version(cur) != object::resource_version(&job) {
                    return Err(ApiError::Conflict {
                        group: "batch".into(),
                        resource: "jobs.batch".into(),
                        name: key.name.clone(),
                        reason: "the object has been modified; please apply your changes to the latest version and try again".into(),
                    });
                }
                let mut cur = cur.clone();
                cur["status"] = status.clone();
                Ok(cur)
            })
            .await;
        match written {
            Ok(_) => {}
            Err(ApiError::NotFound { .. }) => return Ok(Action::Done),
            Err(e) => return Err(e.into()),
        }
        for (kind, reason) in finished(&plan.status, job.get("status")) {
            tracing::info!(job = %key, condition = kind, reason, "job finished");
        }
    }
    // Counted in the status just written: the pods may go.
    untrack(&ctx.registry, pods_ri, ns, &plan.untrack).await?;

    if plan.delete_job {
        let ri = ctx.registry.resource("batch", "Job")?;
        let opts = DeleteOptions {
            propagation_policy: Some("Background".into()),
            precondition_uid: Some(uid(&job).to_string()),
            ..Default::default()
        };
        match ctx.registry.delete(ri, ns, &key.name, &opts).await {
            Ok(_) | Err(ApiError::NotFound { .. } | ApiError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(job = %key, "deleted finished job after its TTL");
        return Ok(Action::Done);
    }
    if let Some(e) = failure {
        return Err(e.into());
    }
    Ok(plan.requeue_after.map_or(Action::Done, |d| Action::RequeueAfter(d + std::time::Duration::from_millis(50))))
}

/// Conditions that turned true between `old` and `new`.
fn finished<'a>(new: &'a Value, old: Option<&Value>) -> Vec<(&'a str, &'a str)> {
    let was = |kind: &str| {
        old.and_then(|s| s["conditions"].as_array())
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == kind && c["status"] == "True"))
    };
    new["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
        .filter_map(|c| Some((c["type"].as_str()?, c["reason"].as_str().unwrap_or(""))))
        .filter(|(kind, _)| !was(kind))
        .collect()
}

/// Removes the tracking finalizer from the named pods.
async fn untrack(registry: &Registry, pods_ri: &ResourceInfo, ns: Option<&str>, names: &[String]) -> Result<(), Error> {
    for name in names {
        let result = registry
            .update_with(pods_ri, ns, name, None, &opts(), |cur| {
                let mut next = cur.clone();
                if let Some(list) = object::meta_mut(&mut next).get_mut("finalizers").and_then(Value::as_array_mut) {
                    list.retain(|f| f != &json!(plan::TRACKING_FINALIZER));
                }
                Ok(next)
            })
            .await;
        match result {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
