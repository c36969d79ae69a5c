//! The Deployment controller: rolls a Deployment's pod template out through ReplicaSets, one per
//! template (named and labelled by its `pod-template-hash`), with the RollingUpdate
//! (`maxSurge`/`maxUnavailable`) or Recreate strategy; keeps revisions for `kubectl rollout
//! history|undo`, honours `spec.paused`, cleans up beyond `revisionHistoryLimit`, and reports the
//! status and conditions `kubectl rollout status` reads, including `ProgressDeadlineExceeded`.

pub mod hash;
pub mod replicasets;
pub mod rollout;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::events;
use super::runtime::{controller_key, controller_ref, Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{DeleteOptions, Registry};
use crate::api::resources::ResourceInfo;
use crate::api::selector::{from_label_selector, LabelSelector};
use crate::controllers::podutil::{opts, uid};
use replicasets::{spec_replicas, view};

const COMPONENT: &str = "deployment-controller";

/// What a reconcile works with.
pub struct Ctx {
    registry: Arc<Registry>,
    deployments: Arc<Informer>,
    sets: Arc<Informer>,
    pods: Arc<Informer>,
}

/// Starts the controller under the informers' supervisor.
pub fn start(informers: &Arc<Informers>) {
    let deployments = informers.get("apps", "Deployment");
    let sets = informers.get("apps", "ReplicaSet");
    let pods = informers.get("", "Pod");
    let ctx = Arc::new(Ctx {
        registry: Arc::clone(informers.registry()),
        deployments: Arc::clone(&deployments),
        sets: Arc::clone(&sets),
        pods: Arc::clone(&pods),
    });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe("controller-deployment");
    supervisor.spawn("controller-deployment", move || {
        let (by_rs, by_pod, rs_lookup) = (Arc::clone(&deployments), Arc::clone(&deployments), Arc::clone(&sets));
        Controller::new("controller-deployment", Arc::clone(&deployments))
            .watches(Arc::clone(&sets), move |rs| rs_owners(&by_rs, rs))
            .watches(Arc::clone(&pods), move |pod| recreate_owner(&by_pod, &rs_lookup, pod))
            .workers(4)
            .run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

fn selector_of(d: &Value) -> Option<LabelSelector> {
    let sel = from_label_selector(d.pointer("/spec/selector")?).ok()?;
    (!sel.is_empty() && !sel.is_nothing()).then_some(sel)
}

/// The Deployments a ReplicaSet change concerns: its controller, or for an orphan every
/// Deployment selecting it.
fn rs_owners(deployments: &Informer, rs: &Value) -> Vec<ObjectKey> {
    if controller_ref(rs).is_some() {
        return controller_key(rs, "Deployment").into_iter().collect();
    }
    let Some(ns) = object::namespace(rs) else { return Vec::new() };
    let labels = object::labels(rs);
    deployments
        .list(Some(ns))
        .iter()
        .filter(|d| selector_of(d).is_some_and(|s| s.matches(&labels)))
        .map(|d| ObjectKey::of(d))
        .collect()
}

/// A Recreate Deployment waits for its old pods to be gone: their changes concern it.
fn recreate_owner(deployments: &Informer, sets: &Informer, pod: &Value) -> Vec<ObjectKey> {
    let Some(rs_key) = controller_key(pod, "ReplicaSet") else { return Vec::new() };
    let Some(rs) = sets.get(&rs_key) else { return Vec::new() };
    let Some(d_key) = controller_key(&rs, "Deployment") else { return Vec::new() };
    let recreate =
        deployments.get(&d_key).is_some_and(|d| object::str_at(&d, &["spec", "strategy", "type"]) == Some("Recreate"));
    if recreate {
        vec![d_key]
    } else {
        Vec::new()
    }
}

/// One sync of one Deployment.
struct Sync<'a> {
    ctx: &'a Ctx,
    rs_ri: &'a ResourceInfo,
    d: Value,
    ns: String,
    desired: i64,
    max_surge: i64,
    max_unavailable: i64,
    /// A new ReplicaSet was created in this sync (for the Progressing condition).
    created: Option<String>,
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(d) = ctx.deployments.get(&key) else { return Ok(Action::Done) };
    let Some(ns) = key.ns() else { return Ok(Action::Done) };
    let Some(selector) = selector_of(&d) else {
        tracing::debug!(deployment = %key, "invalid or empty selector; nothing to do");
        return Ok(Action::Done);
    };
    let rs_ri = ctx.registry.resource("apps", "ReplicaSet")?;
    let desired = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).max(0);
    let rolling = object::str_at(&d, &["spec", "strategy", "type"]) != Some("Recreate");
    let (max_surge, max_unavailable) = if rolling {
        match rollout::fenceposts(d.pointer("/spec/strategy/rollingUpdate"), desired) {
            Ok((s, u)) => (s, u.min(desired)),
            Err(why) => {
                tracing::warn!(deployment = %key, error = %why, "bad rolling update parameters");
                return Ok(Action::Done);
            }
        }
    } else {
        (0, 0)
    };
    let mut sync = Sync {
        ctx: &ctx,
        rs_ri,
        d: d.as_ref().clone(),
        ns: ns.to_string(),
        desired,
        max_surge,
        max_unavailable,
        created: None,
    };
    let sets = sync.claim(&selector).await?;
    if object::deletion_timestamp(&d).is_some() {
        return sync.finish(&sets).await;
    }
    let paused = d.pointer("/spec/paused").and_then(Value::as_bool).unwrap_or(false);
    let scaling = sync.is_scaling_event(&sets);
    if paused || scaling {
        let sets = sync.sync_new(sets, false).await?;
        let sets = sync.scale(sets).await?;
        let sets = if paused { sync.clean_up(sets).await? } else { sets };
        return sync.finish(&sets).await;
    }
    let sets = if rolling { sync.rolling(sets).await? } else { sync.recreate(sets).await? };
    sync.finish(&sets).await
}

impl Sync<'_> {
    /// The Deployment's ReplicaSets: owned ones still matching, and matching orphans adopted;
    /// owned ones that stopped matching are released.
    async fn claim(&self, selector: &LabelSelector) -> Result<Vec<Arc<Value>>, Error> {
        let deleting = object::deletion_timestamp(&self.d).is_some();
        let mut out = Vec::new();
        for rs in self.ctx.sets.list(Some(&self.ns)) {
            let matches = selector.matches(&object::labels(&rs));
            match controller_ref(&rs) {
                Some(r) if r.get("uid").and_then(Value::as_str) == Some(uid(&self.d)) => {
                    if matches {
                        out.push(rs);
                    } else if !deleting {
                        self.edit_rs(&rs, |next| {
                            if let Some(list) =
                                object::meta_mut(next).get_mut("ownerReferences").and_then(Value::as_array_mut)
                            {
                                list.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid(&self.d)));
                            }
                        })
                        .await?;
                    }
                }
                None if matches && !deleting && object::deletion_timestamp(&rs).is_none() => {
                    let owner = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": object::name(&self.d),
                                       "uid": uid(&self.d), "controller": true, "blockOwnerDeletion": true});
                    let adopted = self
                        .edit_rs(&rs, |next| {
                            if controller_ref(next).is_none() {
                                let refs = object::meta_mut(next).entry("ownerReferences").or_insert_with(|| json!([]));
                                if let Some(list) = refs.as_array_mut() {
                                    list.push(owner.clone());
                                }
                            }
                        })
                        .await?;
                    if let Some(rs) = adopted.filter(|rs| {
                        controller_ref(rs).and_then(|r| r.get("uid")).and_then(Value::as_str) == Some(uid(&self.d))
                    }) {
                        out.push(Arc::new(rs));
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Read-modify-write of a ReplicaSet; `None` when it is gone.
    async fn edit_rs(&self, rs: &Value, change: impl Fn(&mut Value)) -> Result<Option<Value>, Error> {
        let result = self
            .ctx
            .registry
            .update_with(self.rs_ri, Some(&self.ns), object::name(rs), None, &opts(), |cur| {
                let mut next = cur.clone();
                change(&mut next);
                Ok(next)
            })
            .await;
        match result {
            Ok(w) => Ok(Some(w.object)),
            Err(ApiError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Some active ReplicaSet was last scaled for another `spec.replicas` (`isScalingEvent`).
    fn is_scaling_event(&self, sets: &[Arc<Value>]) -> bool {
        let want = self.desired.to_string();
        sets.iter().filter(|rs| spec_replicas(rs) > 0).any(|rs| {
            object::meta(rs)
                .get("annotations")
                .and_then(|a| a.get(replicasets::DESIRED_REPLICAS))
                .and_then(Value::as_str)
                .is_some_and(|have| have != want)
        })
    }

    fn max_old_revision(&self, sets: &[Arc<Value>], new_name: Option<&str>) -> i64 {
        sets.iter()
            .filter(|rs| Some(object::name(rs)) != new_name)
            .map(|rs| replicasets::revision(rs))
            .max()
            .unwrap_or(0)
    }

    /// Finds the new ReplicaSet (syncing its revision and annotations) or, with `create`,
    /// creates it; returns every ReplicaSet as written.
    async fn sync_new(&mut self, mut sets: Vec<Arc<Value>>, create: bool) -> Result<Vec<Arc<Value>>, Error> {
        let found = replicasets::find_new(&self.d, &sets).cloned();
        if let Some(rs) = found {
            let revision = self.max_old_revision(&sets, Some(object::name(&rs))) + 1;
            let current = object::meta(&rs).get("annotations").and_then(Value::as_object);
            let wanted = replicasets::annotations_for(&self.d, current, revision, self.max_surge);
            let min_ready = self.d.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0));
            let stale = current != Some(&wanted)
                || rs.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0)) != min_ready;
            let rs = if stale {
                let written = self
                    .edit_rs(&rs, |next| {
                        object::meta_mut(next).insert("annotations".into(), Value::Object(wanted.clone()));
                        next["spec"]["minReadySeconds"] = min_ready.clone();
                    })
                    .await?;
                match written {
                    Some(w) => Arc::new(w),
                    None => return Ok(sets),
                }
            } else {
                rs
            };
            self.set_revision(&rs).await?;
            replace(&mut sets, rs);
            return Ok(sets);
        }
        if !create {
            return Ok(sets);
        }
        let all: i64 = sets.iter().map(|rs| spec_replicas(rs)).sum();
        let replicas = if object::str_at(&self.d, &["spec", "strategy", "type"]) == Some("Recreate") {
            self.desired
        } else {
            rollout::new_rs_replicas(self.desired, self.max_surge, 0, all)
        };
        let revision = self.max_old_revision(&sets, None) + 1;
        let collision =
            self.d.pointer("/status/collisionCount").and_then(Value::as_u64).and_then(|c| u32::try_from(c).ok());
        let rs = replicasets::build(&self.d, collision, revision, replicas, self.max_surge);
        let name = object::name(&rs).to_string();
        match self.ctx.registry.create(self.rs_ri, Some(&self.ns), rs.clone(), &opts()).await {
            Ok(w) => {
                tracing::info!(deployment = object::name(&self.d), replicaset = %name, replicas, "created new replica set");
                self.event(
                    "Normal",
                    "ScalingReplicaSet",
                    &format!("Scaled up replica set {name} from 0 to {replicas}"),
                )
                .await;
                self.created = Some(name);
                let rs = Arc::new(w.object);
                self.set_revision(&rs).await?;
                sets.push(rs);
                Ok(sets)
            }
            Err(ApiError::AlreadyExists { .. }) => {
                let existing = self.ctx.registry.get(self.rs_ri, Some(&self.ns), &name).await?;
                let ours =
                    controller_ref(&existing).and_then(|r| r.get("uid")).and_then(Value::as_str) == Some(uid(&self.d));
                let same = match (existing.pointer("/spec/template"), self.d.pointer("/spec/template")) {
                    (Some(a), Some(b)) => replicasets::equal_ignore_hash(a, b),
                    _ => false,
                };
                if ours && same {
                    // The informer has not shown it yet: use it as it is.
                    sets.push(Arc::new(existing));
                    return Ok(sets);
                }
                // A hash collision: bump collisionCount so the next try hashes differently.
                let d_ri = self.ctx.registry.resource("apps", "Deployment")?;
                self.ctx
                    .registry
                    .update_with(d_ri, Some(&self.ns), object::name(&self.d), Some("status"), &opts(), |cur| {
                        let mut next = cur.clone();
                        let count = cur.pointer("/status/collisionCount").and_then(Value::as_i64).unwrap_or(0);
                        next["status"]["collisionCount"] = json!(count.saturating_add(1));
                        Ok(next)
                    })
                    .await?;
                Err(Error::Other(format!("replica set {name} exists with another template (hash collision)")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The Deployment's revision annotation follows its new ReplicaSet's.
    async fn set_revision(&mut self, new_rs: &Value) -> Result<(), Error> {
        let Some(rev) = object::meta(new_rs).get("annotations").and_then(|a| a.get(replicasets::REVISION)).cloned()
        else {
            return Ok(());
        };
        let have = object::meta(&self.d).get("annotations").and_then(|a| a.get(replicasets::REVISION));
        if have == Some(&rev) {
            return Ok(());
        }
        let d_ri = self.ctx.registry.resource("apps", "Deployment")?;
        let written = self
            .ctx
            .registry
            .update_with(d_ri, Some(&self.ns), object::name(&self.d), None, &opts(), |cur| {
                let mut next = cur.clone();
                let ann = object::meta_mut(&mut next).entry("annotations").or_insert_with(|| json!({}));
                if let Some(ann) = ann.as_object_mut() {
                    ann.insert(replicasets::REVISION.into(), rev.clone());
                }
                Ok(next)
            })
            .await?;
        self.d = written.object;
        Ok(())
    }

    /// Sets a ReplicaSet's `spec.replicas` (and its replica annotations).
    async fn scale_rs(&self, rs: &Value, replicas: i64) -> Result<Option<Value>, Error> {
        let (desired, max) = (self.desired.to_string(), self.desired.saturating_add(self.max_surge).to_string());
        let from = spec_replicas(rs);
        let written = self
            .edit_rs(rs, |next| {
                next["spec"]["replicas"] = json!(replicas);
                let ann = object::meta_mut(next).entry("annotations").or_insert_with(|| json!({}));
                if let Some(ann) = ann.as_object_mut() {
                    ann.insert(replicasets::DESIRED_REPLICAS.into(), json!(desired));
                    ann.insert(replicasets::MAX_REPLICAS.into(), json!(max));
                }
            })
            .await?;
        if from != replicas {
            let verb = if replicas > from { "up" } else { "down" };
            let msg = format!("Scaled {verb} replica set {} from {from} to {replicas}", object::name(rs));
            tracing::info!(deployment = object::name(&self.d), "{msg}");
            self.event("Normal", "ScalingReplicaSet", &msg).await;
        }
        Ok(written)
    }

    async fn event(&self, kind: &str, reason: &str, message: &str) {
        events::record(&self.ctx.registry, &self.d, ("apps/v1", "Deployment"), (kind, reason, message), COMPONENT)
            .await;
    }

    /// RollingUpdate: grow the new ReplicaSet within maxSurge, then shrink old ones within
    /// maxUnavailable; clean up once complete.
    async fn rolling(&mut self, sets: Vec<Arc<Value>>) -> Result<Vec<Arc<Value>>, Error> {
        let mut sets = self.sync_new(sets, true).await?;
        let Some(new) = replicasets::find_new(&self.d, &sets).cloned() else { return Ok(sets) };
        let all: i64 = sets.iter().map(|rs| spec_replicas(rs)).sum();
        let have = spec_replicas(&new);
        let want = if have > self.desired {
            self.desired
        } else {
            rollout::new_rs_replicas(self.desired, self.max_surge, have, all)
        };
        if want != have {
            if let Some(rs) = self.scale_rs(&new, want).await? {
                replace(&mut sets, Arc::new(rs));
            }
            return Ok(sets);
        }
        let olds: Vec<_> = sets.iter().filter(|rs| object::name(rs) != object::name(&new)).map(|rs| view(rs)).collect();
        let plan = rollout::scale_down_old(self.desired, self.max_unavailable, Some(&view(&new)), &olds);
        if !plan.is_empty() {
            for (name, replicas) in plan {
                if let Some(rs) = sets.iter().find(|rs| object::name(rs) == name).cloned() {
                    if let Some(rs) = self.scale_rs(&rs, replicas).await? {
                        replace(&mut sets, Arc::new(rs));
                    }
                }
            }
            return Ok(sets);
        }
        if self.complete(&sets) {
            sets = self.clean_up(sets).await?;
        }
        Ok(sets)
    }

    /// Recreate: old ReplicaSets to zero, wait for their pods to be gone, then the new one.
    async fn recreate(&mut self, sets: Vec<Arc<Value>>) -> Result<Vec<Arc<Value>>, Error> {
        let mut sets = self.sync_new(sets, false).await?;
        let new_name = replicasets::find_new(&self.d, &sets).map(|rs| object::name(rs).to_string());
        let olds: Vec<Arc<Value>> =
            sets.iter().filter(|rs| Some(object::name(rs)) != new_name.as_deref()).cloned().collect();
        let mut scaled = false;
        for rs in olds.iter().filter(|rs| spec_replicas(rs) > 0) {
            if let Some(rs) = self.scale_rs(rs, 0).await? {
                replace(&mut sets, Arc::new(rs));
            }
            scaled = true;
        }
        if scaled {
            return Ok(sets);
        }
        let running = olds.iter().any(|rs| {
            self.ctx
                .pods
                .dependents(uid(rs))
                .iter()
                .any(|p| !matches!(object::str_at(p, &["status", "phase"]), Some("Succeeded" | "Failed")))
        });
        if running {
            return Ok(sets);
        }
        let mut sets = self.sync_new(sets, true).await?;
        if let Some(new) = replicasets::find_new(&self.d, &sets).cloned() {
            if spec_replicas(&new) != self.desired {
                if let Some(rs) = self.scale_rs(&new, self.desired).await? {
                    replace(&mut sets, Arc::new(rs));
                }
            }
        }
        if self.complete(&sets) {
            sets = self.clean_up(sets).await?;
        }
        Ok(sets)
    }

    /// A scaling event or a paused Deployment: size the ReplicaSets without rolling out
    /// (Kubernetes' `scale`, proportionally when several are active).
    async fn scale(&mut self, mut sets: Vec<Arc<Value>>) -> Result<Vec<Arc<Value>>, Error> {
        let new = replicasets::find_new(&self.d, &sets).cloned();
        let active: Vec<Arc<Value>> = sets.iter().filter(|rs| spec_replicas(rs) > 0).cloned().collect();
        if active.len() <= 1 {
            let target = active.first().cloned().or_else(|| new.clone()).or_else(|| newest(&sets));
            if let Some(rs) = target {
                if spec_replicas(&rs) != self.desired {
                    if let Some(rs) = self.scale_rs(&rs, self.desired).await? {
                        replace(&mut sets, Arc::new(rs));
                    }
                }
            }
            return Ok(sets);
        }
        if let Some(new) =
            new.as_ref().filter(|n| view(n).replicas == self.desired && view(n).available == self.desired)
        {
            for rs in active.iter().filter(|rs| object::name(rs) != object::name(new)) {
                if let Some(rs) = self.scale_rs(rs, 0).await? {
                    replace(&mut sets, Arc::new(rs));
                }
            }
            return Ok(sets);
        }
        // Proportional: share the difference by size, the rest to the newest.
        let allowed = self.desired.saturating_add(self.max_surge);
        let current: i64 = active.iter().map(|rs| spec_replicas(rs)).sum();
        let diff = allowed - current;
        if diff == 0 || current == 0 {
            return Ok(sets);
        }
        let mut ordered = active.clone();
        ordered.sort_by_key(|rs| {
            std::cmp::Reverse(object::str_at(rs, &["metadata", "creationTimestamp"]).unwrap_or("").to_string())
        });
        let mut left = diff;
        let mut sizes: Vec<i64> = Vec::new();
        for rs in &ordered {
            let share = spec_replicas(rs).saturating_mul(diff) / current;
            let share = if diff > 0 { share.min(left) } else { share.max(left) };
            sizes.push(spec_replicas(rs) + share);
            left -= share;
        }
        if let Some(first) = sizes.first_mut() {
            *first = (*first + left).max(0);
        }
        for (rs, size) in ordered.iter().zip(sizes) {
            if size != spec_replicas(rs) {
                if let Some(rs) = self.scale_rs(rs, size.max(0)).await? {
                    replace(&mut sets, Arc::new(rs));
                }
            }
        }
        Ok(sets)
    }

    fn complete(&self, sets: &[Arc<Value>]) -> bool {
        let counts = self.counts(sets);
        counts.updated == self.desired && counts.replicas == self.desired && counts.available == self.desired
    }

    /// Deletes old ReplicaSets beyond `revisionHistoryLimit`.
    async fn clean_up(&self, mut sets: Vec<Arc<Value>>) -> Result<Vec<Arc<Value>>, Error> {
        let new_name = replicasets::find_new(&self.d, &sets).map(|rs| object::name(rs).to_string());
        let olds: Vec<Arc<Value>> =
            sets.iter().filter(|rs| Some(object::name(rs)) != new_name.as_deref()).cloned().collect();
        for rs in replicasets::to_clean_up(&self.d, &olds) {
            let name = object::name(rs).to_string();
            match self.ctx.registry.delete(self.rs_ri, Some(&self.ns), &name, &DeleteOptions::default()).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => {
                    tracing::info!(deployment = object::name(&self.d), replicaset = %name, "cleaned up old replica set");
                    sets.retain(|s| object::name(s) != name);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(sets)
    }

    fn counts(&self, sets: &[Arc<Value>]) -> status::Counts {
        let st = |rs: &Value, f: &str| rs.pointer(&format!("/status/{f}")).and_then(Value::as_i64).unwrap_or(0);
        let new = replicasets::find_new(&self.d, sets);
        status::Counts {
            total_spec: sets.iter().map(|rs| spec_replicas(rs)).sum(),
            replicas: sets.iter().map(|rs| st(rs, "replicas")).sum(),
            updated: new.map_or(0, |rs| st(rs, "replicas")),
            ready: sets.iter().map(|rs| st(rs, "readyReplicas")).sum(),
            available: sets.iter().map(|rs| st(rs, "availableReplicas")).sum(),
        }
    }

    /// Writes the status; asks to look again by the progress deadline.
    async fn finish(&self, sets: &[Arc<Value>]) -> Result<Action, Error> {
        let new_name = replicasets::find_new(&self.d, sets).map(|rs| object::name(rs).to_string());
        let now = jiff::Timestamp::now();
        let mut d = self.d.clone();
        if let Some(name) = &self.created {
            let mut conditions: Vec<Value> =
                d.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            status::set_condition(
                &mut conditions,
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                &format!("Created new replica set {name:?}"),
                now,
            );
            d["status"]["conditions"] = Value::Array(conditions);
        }
        let outcome = status::compute(&d, self.counts(sets), new_name.as_deref(), self.max_unavailable, now);
        if self.d.get("status") != Some(&outcome.status) {
            let d_ri = self.ctx.registry.resource("apps", "Deployment")?;
            let result = self
                .ctx
                .registry
                .update_with(d_ri, Some(&self.ns), object::name(&self.d), Some("status"), &opts(), |cur| {
                    let mut next = cur.clone();
                    next["status"] = outcome.status.clone();
                    Ok(next)
                })
                .await;
            match result {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(outcome.recheck.map_or(Action::Done, |d| Action::RequeueAfter(d + Duration::from_millis(500))))
    }
}

fn replace(sets: &mut Vec<Arc<Value>>, rs: Arc<Value>) {
    match sets.iter_mut().find(|s| object::name(s) == object::name(&rs)) {
        Some(slot) => *slot = rs,
        None => sets.push(rs),
    }
}

fn newest(sets: &[Arc<Value>]) -> Option<Arc<Value>> {
    sets.iter()
        .max_by_key(|rs| object::str_at(rs, &["metadata", "creationTimestamp"]).unwrap_or("").to_string())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::WriteOptions;
    use crate::controllers::runtime::{testing, Supervisor};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deployment_makes_a_replica_set_and_surges_on_a_new_template() {
        let (_dir, registry) = testing::registry().await;
        let supervisor = Supervisor::new();
        let informers = Informers::new(Arc::clone(&registry), Arc::clone(&supervisor));
        start(&informers);
        crate::controllers::replicaset::start(&informers, crate::controllers::replicaset::Flavor::ReplicaSet);
        let ri = registry.resource("apps", "Deployment").unwrap_or_else(|e| panic!("{e}"));
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                       "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                                "template": {"metadata": {"labels": {"app": "web"}},
                                             "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        registry.create(ri, Some("default"), d, &WriteOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let (sets, pods, deployments) =
            (informers.get("apps", "ReplicaSet"), informers.get("", "Pod"), informers.get("apps", "Deployment"));
        let key = ObjectKey::namespaced("default", "web");
        testing::eventually("a replica set of two, its pods, the status", || {
            sets.len() == 1
                && pods.len() == 2
                && deployments.get(&key).is_some_and(|d| {
                    d.pointer("/status/updatedReplicas") == Some(&json!(2))
                        && d.pointer("/metadata/annotations/deployment.kubernetes.io~1revision") == Some(&json!("1"))
                })
        })
        .await;
        let first = sets.list_all()[0].clone();
        assert_eq!(first.pointer("/spec/replicas"), Some(&json!(2)));
        registry
            .update_with(ri, Some("default"), "web", None, &WriteOptions::default(), |cur| {
                let mut next = cur.clone();
                next["spec"]["template"]["spec"]["containers"][0]["image"] = json!("i:2");
                Ok(next)
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // 25% of 2: surge 1, unavailable 0. No pod is ready, so the old set keeps both.
        testing::eventually("a new replica set of one", || {
            sets.len() == 2
                && sets.list_all().iter().any(|rs| {
                    object::name(rs) != object::name(&first) && rs.pointer("/spec/replicas") == Some(&json!(1))
                })
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let old = sets.get(&ObjectKey::of(&first)).unwrap_or_else(|| panic!("old set gone"));
        assert_eq!(old.pointer("/spec/replicas"), Some(&json!(2)));
        let d = deployments.get(&key).unwrap_or_else(|| panic!("deployment gone"));
        assert_eq!(d.pointer("/status/replicas"), Some(&json!(3)));
        assert_eq!(d.pointer("/status/updatedReplicas"), Some(&json!(1)));
        assert_eq!(d.pointer("/status/unavailableReplicas"), Some(&json!(3)));
    }
}
