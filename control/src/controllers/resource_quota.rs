//! The ResourceQuota controller: `status.hard` is a copy of `spec.hard`, `status.used` what the
//! namespace's objects that the quota selects cost (see [`crate::api::quota::usage`]).
//!
//! Admission charges creates as they happen (`api/quota`), so, as kube-controller-manager, this
//! controller recomputes a quota only when that cannot be right: the quota is new to it or its
//! `spec.hard` changed, or a counted object went away or costs less than before (deleted, a pod
//! turned Succeeded/Failed, a Service lost its NodePorts). It is driven by the informers of the
//! counted kinds; kinds named by `count/<resource>.<group>` get an informer on first use.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use super::podutil::{opts, uid};
use super::runtime::{Action, Change, Controller, Error, Informer, Informers, ObjectKey, WorkQueue};
use crate::api::object;
use crate::api::quota::usage::{self, Usage};

const TASK: &str = "controller-resourcequota";

/// The kinds whose objects quotas count from the start: (group, kind, plural).
const COUNTED: [(&str, &str, &str); 7] = [
    ("", "Pod", "pods"),
    ("", "Service", "services"),
    ("", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("", "ConfigMap", "configmaps"),
    ("", "Secret", "secrets"),
    ("", "ReplicationController", "replicationcontrollers"),
    ("", "ResourceQuota", "resourcequotas"),
];

/// What a reconcile works with.
pub struct Ctx {
    informers: Arc<Informers>,
    quotas: Arc<Informer>,
    /// The controller's queue of this run (replaced when the supervisor restarts it).
    queue: Mutex<Option<WorkQueue<ObjectKey>>>,
    /// Quotas to recompute: something they count went away or shrank.
    dirty: Mutex<HashSet<ObjectKey>>,
    /// The quotas (by uid) computed by this process.
    computed: Mutex<HashSet<String>>,
    /// The kinds followed so far, as (group, kind).
    followed: Mutex<HashSet<(String, String)>>,
}

/// Starts the controller under the informers' supervisor.
pub fn start(informers: &Arc<Informers>) {
    let quotas = informers.get("", "ResourceQuota");
    let ctx = Arc::new(Ctx {
        informers: Arc::clone(informers),
        quotas: Arc::clone(&quotas),
        queue: Mutex::new(None),
        dirty: Mutex::default(),
        computed: Mutex::default(),
        followed: Mutex::default(),
    });
    for (group, kind, plural) in COUNTED {
        follow(&ctx, group, kind, plural);
    }
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(TASK);
    supervisor.spawn(TASK, move || {
        let controller = Controller::new(TASK, Arc::clone(&quotas)).workers(2);
        *ctx.queue.lock() = Some(controller.queue());
        controller.run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

/// Starts following a counted kind (once): changes that lower usage mark the namespace's
/// quotas for a recount.
fn follow(ctx: &Arc<Ctx>, group: &str, kind: &str, plural: &'static str) -> Arc<Informer> {
    let informer = ctx.informers.get(group, kind);
    if !ctx.followed.lock().insert((group.to_string(), kind.to_string())) {
        return informer;
    }
    let supervisor = Arc::clone(ctx.informers.supervisor());
    let (ctx, inf, group) = (Arc::clone(ctx), Arc::clone(&informer), group.to_string());
    let name = format!("{TASK}-replenish-{}", kind.to_lowercase());
    supervisor.spawn(&name, move || {
        let (ctx, inf, group) = (Arc::clone(&ctx), Arc::clone(&inf), group.clone());
        async move {
            let rx = inf.subscribe();
            replenish(ctx, inf, &group, plural, rx).await;
            Ok::<(), Error>(())
        }
    });
    informer
}

/// Whether a change lowers what the object costs (a deletion, a pod that finished, ...).
fn lowers_usage(group: &str, plural: &str, change: &Change) -> bool {
    match change {
        Change::Deleted(_) => true,
        Change::Applied { old: None, .. } => false,
        Change::Applied { old: Some(old), new } => {
            let (before, after) = (usage::object_usage(group, plural, old), usage::object_usage(group, plural, new));
            before.iter().any(|(k, v)| after.get(k).copied().unwrap_or(0) < *v)
        }
    }
}

async fn replenish(
    ctx: Arc<Ctx>,
    informer: Arc<Informer>,
    group: &str,
    plural: &str,
    mut rx: broadcast::Receiver<Change>,
) {
    loop {
        match rx.recv().await {
            Ok(change) => {
                if !lowers_usage(group, plural, &change) {
                    continue;
                }
                let ns = change.objects().next().and_then(|o| object::namespace(o).map(String::from));
                if let Some(ns) = ns {
                    recount(&ctx, ctx.quotas.list(Some(&ns)));
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                tracing::debug!(kind = informer.kind(), "quota replenishment lagged; recounting every quota");
                recount(&ctx, ctx.quotas.list_all());
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn recount(ctx: &Ctx, quotas: Vec<Arc<Value>>) {
    let queue = ctx.queue.lock().clone();
    for quota in quotas {
        let key = ObjectKey::of(&quota);
        ctx.dirty.lock().insert(key.clone());
        if let Some(queue) = &queue {
            queue.add(key);
        }
    }
}

/// The kinds that report `name`: the counted built-ins, or the kind a `count/<plural>[.<group>]`
/// names among the served resources.
fn kinds_for(ctx: &Ctx, name: &str) -> Vec<(String, String, &'static str)> {
    let mut out: Vec<(String, String, &'static str)> = COUNTED
        .iter()
        .filter(|(g, _, p)| usage::covers(g, p, name))
        .map(|(g, k, p)| (g.to_string(), k.to_string(), *p))
        .collect();
    if out.is_empty() {
        if let Some(resource) = name.strip_prefix("count/") {
            let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
            let served = ctx.informers.registry().served();
            let found = served.iter().find(|r| r.group == group && r.plural == plural && r.namespaced);
            out.extend(found.map(|ri| (ri.group.to_string(), ri.kind.to_string(), ri.plural)));
        }
    }
    out
}

/// `status.used` of `quota` from the informers' caches, for the names of its `spec.hard`.
async fn compute_used(ctx: &Arc<Ctx>, quota: &Value, ns: &str) -> Map<String, Value> {
    let hard: Vec<String> =
        quota.pointer("/spec/hard").and_then(Value::as_object).into_iter().flatten().map(|(k, _)| k.clone()).collect();
    let mut kinds: Vec<(String, String, &'static str)> = Vec::new();
    for name in &hard {
        for k in kinds_for(ctx, name) {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
    }
    let mut total = Usage::new();
    for (group, kind, plural) in kinds {
        let informer = follow(ctx, &group, &kind, plural);
        informer.wait_synced().await;
        for obj in informer.list(Some(ns)) {
            if usage::quota_selects(quota, &group, plural, &obj) {
                total = usage::add(&total, &usage::mask(&usage::object_usage(&group, plural, &obj), &hard));
            }
        }
    }
    hard.iter().map(|k| (k.clone(), json!(usage::format(k, total.get(k).copied().unwrap_or(0))))).collect()
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(quota) = ctx.quotas.get(&key) else {
        ctx.dirty.lock().remove(&key);
        return Ok(Action::Done);
    };
    let Some(ns) = key.ns() else { return Ok(Action::Done) };
    let spec_hard = quota.pointer("/spec/hard").cloned().unwrap_or_else(|| json!({}));
    let hard_changed = quota.pointer("/status/hard") != Some(&spec_hard);
    let first = !ctx.computed.lock().contains(uid(&quota));
    let dirty = ctx.dirty.lock().remove(&key);
    if !(hard_changed || first || dirty) {
        return Ok(Action::Done);
    }
    let used = compute_used(&ctx, &quota, ns).await;
    let status = json!({"hard": spec_hard, "used": used});
    if quota.get("status") != Some(&status) {
        let registry = ctx.informers.registry();
        let ri = registry.resource("", "ResourceQuota")?;
        let rv = object::resource_version(&quota).map(String::from);
        let written = registry
            .update_with(ri, Some(ns), &key.name, Some("status"), &opts(), |cur| {
                let mut next = cur.clone();
                // Written over the version it was computed from: a newer quota is recounted.
                if let Some(rv) = &rv {
                    object::meta_mut(&mut next).insert("resourceVersion".into(), json!(rv));
                }
                next["status"] = status.clone();
                Ok(next)
            })
            .await;
        match written {
            Ok(_) => tracing::debug!(quota = %key, "quota usage recomputed"),
            Err(crate::api::error::ApiError::NotFound { .. }) => return Ok(Action::Done),
            Err(e) => {
                ctx.dirty.lock().insert(key);
                return Err(e.into());
            }
        }
    }
    ctx.computed.lock().insert(uid(&quota).to_string());
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_that_lower_usage_recount() {
        let pod = |phase: &str| {
            Arc::new(json!({"metadata": {"namespace": "n"}, "spec": {"containers": [{"name": "c"}]},
                            "status": {"phase": phase}}))
        };
        let created = Change::Applied { old: None, new: pod("Pending") };
        assert!(!lowers_usage("", "pods", &created));
        let running = Change::Applied { old: Some(pod("Pending")), new: pod("Running") };
        assert!(!lowers_usage("", "pods", &running));
        let finished = Change::Applied { old: Some(pod("Running")), new: pod("Succeeded") };
        assert!(lowers_usage("", "pods", &finished));
        assert!(lowers_usage("", "configmaps", &Change::Deleted(pod("x"))));
    }
}
