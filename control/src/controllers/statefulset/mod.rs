//! The StatefulSet controller (apps/v1): stable, ordered pods with their own PVCs. The decision
//! is [`plan::plan`]; this file feeds it from the informers, records the template's
//! ControllerRevision, creates PVCs before their pod, carries the steps out through the
//! registry and writes the status `kubectl rollout status sts` reads.

pub mod plan;

use std::sync::Arc;

use serde_json::Value;

use super::daemonset::ensure_revision;
use super::replicaset::expectations::Expectations;
use super::revision;
use super::runtime::{controller_ref, Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{DeleteOptions, Registry};
use crate::controllers::podutil::{opts, uid};
use plan::Step;

const TASK: &str = "controller-statefulset";

struct Ctx {
    registry: Arc<Registry>,
    sets: Arc<Informer>,
    pods: Arc<Informer>,
    revisions: Arc<Informer>,
    expectations: Expectations,
}

/// Starts the StatefulSet controller under the informers' supervisor.
pub fn start(informers: &Arc<Informers>) {
    let sets = informers.get("apps", "StatefulSet");
    let pods = informers.get("", "Pod");
    let revisions = informers.get("apps", "ControllerRevision");
    let ctx = Arc::new(Ctx {
        registry: Arc::clone(informers.registry()),
        sets: Arc::clone(&sets),
        pods: Arc::clone(&pods),
        revisions,
        expectations: Expectations::default(),
    });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(TASK);
    supervisor.spawn(TASK, move || {
        Controller::new(TASK, Arc::clone(&sets)).owns(Arc::clone(&pods), "StatefulSet").run(
            Arc::clone(&ctx),
            probe.clone(),
            reconcile,
        )
    });
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(sts) = ctx.sets.get(&key) else {
        ctx.expectations.forget(&key);
        return Ok(Action::Done);
    };
    if object::deletion_timestamp(&sts).is_some() {
        return Ok(Action::Done);
    }
    let ns = key.ns();
    let hash = revision::template_hash(sts.pointer("/spec/template").unwrap_or(&Value::Null));
    ensure_revision(&ctx.registry, &ctx.revisions, &sts, "StatefulSet", &hash).await?;
    let owned: Vec<Arc<Value>> = ctx
        .pods
        .dependents(uid(&sts))
        .into_iter()
        .filter(|p| controller_ref(p).and_then(|r| r.get("uid")).and_then(Value::as_str) == Some(uid(&sts)))
        .collect();
    let pods: Vec<&Value> = owned.iter().map(|p| p.as_ref()).collect();
    let plan = plan::plan(&sts, &pods, &hash);

    let pods_ri = ctx.registry.resource("", "Pod")?;
    let pvc_ri = ctx.registry.resource("", "PersistentVolumeClaim")?;
    if ctx.expectations.satisfied(&key, &ctx.pods) {
        for step in &plan.steps {
            match step {
                Step::Create(i) => {
                    for claim in plan::claims_for(&sts, *i) {
                        match ctx.registry.create(pvc_ri, ns, claim, &opts()).await {
                            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    match ctx.registry.create(pods_ri, ns, plan::pod_for(&sts, *i, &hash), &opts()).await {
                        Ok(w) => {
                            ctx.expectations.expect_create(&key, object::name(&w.object));
                            tracing::info!(statefulset = %key, pod = object::name(&w.object), "created pod");
                        }
                        // The old pod of this name is still going away: its deletion requeues us.
                        Err(ApiError::AlreadyExists { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Step::Delete(name) => match ctx.registry.delete(pods_ri, ns, name, &DeleteOptions::default()).await {
                    Ok(_) => {
                        ctx.expectations.expect_delete(&key, name);
                        tracing::info!(statefulset = %key, pod = name, "deleted pod");
                    }
                    Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                },
            }
        }
    }
    if sts.get("status") != Some(&plan.status) {
        let ri = ctx.registry.resource("apps", "StatefulSet")?;
        let status = plan.status.clone();
        let written = ctx
            .registry
            .update_with(ri, ns, &key.name, Some("status"), &opts(), |cur| {
                let mut cur = cur.clone();
                cur["status"] = status.clone();
                Ok(cur)
            })
            .await;
        match written {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::Done)
}
