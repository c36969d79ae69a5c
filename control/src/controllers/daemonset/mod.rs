//! The DaemonSet controller (apps/v1): one pod per eligible node. The decision is
//! [`plan::plan`]; this file feeds it from the DaemonSet, Node and Pod informers, records the
//! template's ControllerRevision, creates and deletes pods through the registry and writes the
//! status `kubectl rollout status ds` reads.

pub mod plan;

use std::sync::Arc;

use serde_json::Value;

use super::replicaset::expectations::Expectations;
use super::revision;
use super::runtime::{controller_ref, Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{DeleteOptions, Registry};
use crate::controllers::podutil::{opts, uid};

const TASK: &str = "controller-daemonset";

struct Ctx {
    registry: Arc<Registry>,
    sets: Arc<Informer>,
    nodes: Arc<Informer>,
    pods: Arc<Informer>,
    revisions: Arc<Informer>,
    expectations: Expectations,
}

/// Starts the DaemonSet controller under the informers' supervisor.
pub fn start(informers: &Arc<Informers>) {
    let sets = informers.get("apps", "DaemonSet");
    let nodes = informers.get("", "Node");
    let pods = informers.get("", "Pod");
    let revisions = informers.get("apps", "ControllerRevision");
    let ctx = Arc::new(Ctx {
        registry: Arc::clone(informers.registry()),
        sets: Arc::clone(&sets),
        nodes: Arc::clone(&nodes),
        pods: Arc::clone(&pods),
        revisions,
        expectations: Expectations::default(),
    });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(TASK);
    supervisor.spawn(TASK, move || {
        let all = Arc::clone(&sets);
        Controller::new(TASK, Arc::clone(&sets))
            .owns(Arc::clone(&pods), "DaemonSet")
            // A node change may change where every daemon runs.
            .watches(Arc::clone(&nodes), move |_| all.list_all().iter().map(|s| ObjectKey::of(s)).collect())
            .run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

/// Makes sure a ControllerRevision records the current template.
pub(crate) async fn ensure_revision(
    registry: &Registry,
    revisions: &Informer,
    owner: &Value,
    kind: &str,
    hash: &str,
) -> Result<(), Error> {
    let ns = object::namespace(owner).unwrap_or("default");
    let name = format!("{}-{hash}", object::name(owner));
    if revisions.get(&ObjectKey::namespaced(ns, &name)).is_some() {
        return Ok(());
    }
    let latest = revisions
        .dependents(uid(owner))
        .iter()
        .filter_map(|r| r.get("revision").and_then(Value::as_i64))
        .max()
        .unwrap_or(0);
    let ri = registry.resource("apps", "ControllerRevision")?;
    let cr = revision::controller_revision(owner, "apps/v1", kind, hash, latest.saturating_add(1));
    match registry.create(ri, Some(ns), cr, &opts()).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(ds) = ctx.sets.get(&key) else {
        ctx.expectations.forget(&key);
        return Ok(Action::Done);
    };
    if object::deletion_timestamp(&ds).is_some() {
        return Ok(Action::Done);
    }
    let ns = key.ns();
    let hash = revision::template_hash(ds.pointer("/spec/template").unwrap_or(&Value::Null));
    ensure_revision(&ctx.registry, &ctx.revisions, &ds, "DaemonSet", &hash).await?;
    let owned: Vec<Arc<Value>> = ctx
        .pods
        .dependents(uid(&ds))
        .into_iter()
        .filter(|p| controller_ref(p).and_then(|r| r.get("uid")).and_then(Value::as_str) == Some(uid(&ds)))
        .collect();
    let pods: Vec<&Value> = owned.iter().map(|p| p.as_ref()).collect();
    let nodes_owned = ctx.nodes.list_all();
    let nodes: Vec<&Value> = nodes_owned.iter().map(|n| n.as_ref()).collect();
    let plan = plan::plan(&ds, &nodes, &pods, &hash);

    let pods_ri = ctx.registry.resource("", "Pod")?;
    let mut failure = None;
    if ctx.expectations.satisfied(&key, &ctx.pods) {
        for node in &plan.create {
            match ctx.registry.create(pods_ri, ns, plan::pod_for(&ds, node, &hash), &opts()).await {
                Ok(w) => ctx.expectations.expect_create(&key, object::name(&w.object)),
                Err(e) => failure = Some(e),
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
            tracing::info!(daemonset = %key, created = plan.create.len(), deleted = plan.delete.len(), "daemon pods");
        }
    }
    if ds.get("status") != Some(&plan.status) {
        let ri = ctx.registry.resource("apps", "DaemonSet")?;
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
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(Action::Done),
    }
}
