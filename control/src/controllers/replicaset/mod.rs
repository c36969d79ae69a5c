//! The ReplicaSet and ReplicationController controllers (one code, two [`Flavor`]s): keep
//! `spec.replicas` active pods matching the selector, adopting matching orphans and releasing
//! pods that stop matching; report status.

pub mod expectations;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::podutil;
use super::runtime::entry::{Cached, Summary};
use super::runtime::{controller_key, controller_ref, Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{DeleteOptions, Registry};
use crate::api::resources::ResourceInfo;
use crate::api::selector::{from_label_selector, LabelSelector};
use crate::controllers::podutil::{opts, uid};
use expectations::Expectations;

/// At most this many pods are created or deleted by one reconcile (Kubernetes' `burstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// Which of the two kinds a controller runs for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `apps/v1` ReplicaSet: a `metav1.LabelSelector`.
    ReplicaSet,
    /// `v1` ReplicationController: a map selector, defaulting to the template's labels.
    ReplicationController,
}

impl Flavor {
    /// The API group.
    pub fn group(self) -> &'static str {
        match self {
            Flavor::ReplicaSet => "apps",
            Flavor::ReplicationController => "",
        }
    }

    /// The kind.
    pub fn kind(self) -> &'static str {
        match self {
            Flavor::ReplicaSet => "ReplicaSet",
            Flavor::ReplicationController => "ReplicationController",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Flavor::ReplicaSet => "apps/v1",
            Flavor::ReplicationController => "v1",
        }
    }

    fn task_name(self) -> &'static str {
        match self {
            Flavor::ReplicaSet => "controller-replicaset",
            Flavor::ReplicationController => "controller-replicationcontroller",
        }
    }

    /// The selector of `set`; `None` when it is invalid or selects nothing.
    pub fn selector(self, set: &Value) -> Option<LabelSelector> {
        let sel = match self {
            Flavor::ReplicaSet => from_label_selector(set.pointer("/spec/selector")?).ok()?,
            Flavor::ReplicationController => {
                let map = set
                    .pointer("/spec/selector")
                    .and_then(Value::as_object)
                    .filter(|m| !m.is_empty())
                    .or_else(|| set.pointer("/spec/template/metadata/labels").and_then(Value::as_object))?;
                LabelSelector::from_match_labels(map).ok()?
            }
        };
        (!sel.is_empty() && !sel.is_nothing()).then_some(sel)
    }
}

/// What a reconcile works with.
pub struct Ctx {
    flavor: Flavor,
    registry: Arc<Registry>,
    sets: Arc<Informer>,
    pods: Arc<Informer>,
    expectations: Expectations,
}

/// Starts the controller of `flavor` under the informers' supervisor.
pub fn start(informers: &Arc<Informers>, flavor: Flavor) {
    let sets = informers.get(flavor.group(), flavor.kind());
    let pods = informers.get("", "Pod");
    let ctx = Arc::new(Ctx {
        flavor,
        registry: Arc::clone(informers.registry()),
        sets: Arc::clone(&sets),
        pods: Arc::clone(&pods),
        expectations: Expectations::default(),
    });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(flavor.task_name());
    supervisor.spawn(flavor.task_name(), move || {
        let lookup = Arc::clone(&sets);
        Controller::new(flavor.task_name(), Arc::clone(&sets))
            .watches(Arc::clone(&pods), move |pod| pod_owners(flavor, &lookup, pod))
            .workers(4)
            .run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

/// The sets a pod change concerns: its controller, or for an orphan every set selecting it.
fn pod_owners(flavor: Flavor, sets: &Informer, pod: &Value) -> Vec<ObjectKey> {
    if controller_ref(pod).is_some() {
        return controller_key(pod, flavor.kind()).into_iter().collect();
    }
    let Some(ns) = object::namespace(pod) else { return Vec::new() };
    let labels = object::labels(pod);
    sets.list(Some(ns))
        .iter()
        .filter(|s| flavor.selector(s).is_some_and(|sel| sel.matches(&labels)))
        .map(|s| ObjectKey::of(s))
        .collect()
}

/// The pod a set creates from its template.
pub fn pod_from_template(set: &Value, api_version: &str, kind: &str) -> Value {
    let template = set.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let mut meta = json!({
        "generateName": format!("{}-", object::name(set)),
        "ownerReferences": [{
            "apiVersion": api_version, "kind": kind, "name": object::name(set), "uid": uid(set),
            "controller": true, "blockOwnerDeletion": true,
        }],
    });
    for field in ["labels", "annotations", "finalizers"] {
        if let Some(v) = template.pointer(&format!("/metadata/{field}")) {
            meta[field] = v.clone();
        }
    }
    if let Some(ns) = object::namespace(set) {
        meta["namespace"] = json!(ns);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
           "spec": template.get("spec").cloned().unwrap_or_else(|| json!({}))})
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(set) = ctx.sets.get(&key) else {
        ctx.expectations.forget(&key);
        return Ok(Action::Done);
    };
    let Some(ns) = key.ns() else { return Ok(Action::Done) };
    let Some(selector) = ctx.flavor.selector(&set) else {
        tracing::debug!(set = %key, "invalid or empty selector; nothing to do");
        return Ok(Action::Done);
    };
    let pods_ri = ctx.registry.resource("", "Pod")?;
    let set_deleting = object::deletion_timestamp(&set).is_some();
    let mut owned: Vec<Cached> = Vec::new();
    // Only this set's pods and orphans it selects (the rest stay packed in the cache). They are
    // counted from their summaries; a pod is decoded only to adopt, release or delete it.
    let set_uid = uid(&set).to_string();
    let candidates = ctx.pods.cached_where(Some(ns), |s| match s.controller_uid() {
        Some(owner) => owner == set_uid,
        None => s.matches(&selector),
    });
    for pod in candidates {
        let matches = pod.summary.matches(&selector);
        let pod_deleting = pod.summary.pod_state().deleting;
        match pod.summary.controller_uid() {
            Some(owner) if owner == set_uid => {
                if matches {
                    owned.push(pod);
                } else if !set_deleting && !pod_deleting {
                    if let Some(obj) = pod.object() {
                        release(&ctx.registry, pods_ri, &obj, &set_uid).await?;
                    }
                }
            }
            Some(_) => {}
            None if matches && !set_deleting && !pod_deleting => {
                let Some(obj) = pod.object() else { continue };
                if let Some(adopted) = adopt(&ctx, pods_ri, &set, &obj).await? {
                    owned.push(Cached::decoded(Arc::new(adopted)));
                }
            }
            None => {}
        }
    }
    let active: Vec<&Cached> = owned.iter().filter(|p| p.summary.pod_state().active).collect();
    let mut failure = None;
    if !set_deleting && ctx.expectations.satisfied(&key, &ctx.pods) {
        failure = manage(&ctx, pods_ri, &key, &set, &active).await;
    }
    let now = jiff::Timestamp::now();
    let summaries: Vec<&Summary> = active.iter().map(|p| p.summary.as_ref()).collect();
    let next = status::compute(&set, &summaries, now, failure.as_ref().map(|(f, _)| f));
    if set.get("status") != Some(&next) {
        let ri = ctx.registry.resource(ctx.flavor.group(), ctx.flavor.kind())?;
        let written = ctx
            .registry
            .update_with(ri, Some(ns), &key.name, Some("status"), &opts(), |cur| {
                let mut cur = cur.clone();
                cur["status"] = next.clone();
                Ok(cur)
            })
            .await;
        match written {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some((_, e)) = failure {
        return Err(e);
    }
    let min_ready = set.pointer("/spec/minReadySeconds").and_then(Value::as_i64).unwrap_or(0);
    let wait =
        summaries.iter().filter_map(|p| p.pod_state().until_available(min_ready, now)).filter(|d| !d.is_zero()).min();
    Ok(wait.map_or(Action::Done, |d| Action::RequeueAfter(d + Duration::from_millis(100))))
}

/// Creates or deletes pods to reach `spec.replicas`; the failure, if any.
async fn manage(
    ctx: &Ctx,
    pods_ri: &ResourceInfo,
    key: &ObjectKey,
    set: &Value,
    active: &[&Cached],
) -> Option<(status::Failure, Error)> {
    let want = usize::try_from(set.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).max(0)).unwrap_or(0);
    let have = active.len();
    let ns = key.ns();
    if have < want {
        let mut left = (want - have).min(BURST_REPLICAS);
        let pod = pod_from_template(set, ctx.flavor.api_version(), ctx.flavor.kind());
        let create_opts = opts();
        // Slow start: batches of 1, 2, 4, ... so a failing create (quota, admission) fails once.
        let mut batch = 1usize;
        let mut created = 0usize;
        while left > 0 {
            let n = batch.min(left);
            let writes = (0..n).map(|_| ctx.registry.create(pods_ri, ns, pod.clone(), &create_opts));
            let mut error = None;
            for result in futures::future::join_all(writes).await {
                match result {
                    Ok(w) => {
                        created += 1;
                        ctx.expectations.expect_create(key, object::name(&w.object));
                    }
                    Err(e) => error = Some(e),
                }
            }
            if let Some(e) = error {
                tracing::warn!(set = %key, error = %e, created, "creating pods failed");
                let failure = status::Failure { reason: "FailedCreate", message: e.to_string() };
                return Some((failure, e.into()));
            }
            left -= n;
            batch = batch.saturating_mul(2);
        }
        tracing::info!(set = %key, created, "created pods");
    } else if have > want {
        // Ranking for deletion reads the pods themselves (node, phase, restarts, annotations).
        let decoded: Vec<Arc<Value>> = active.iter().filter_map(|p| p.object()).collect();
        let mut doomed: Vec<&Value> = decoded.iter().map(AsRef::as_ref).collect();
        podutil::sort_for_deletion(&mut doomed);
        doomed.truncate((have - want).min(BURST_REPLICAS));
        let deletes = doomed.iter().map(|p| async move {
            let name = object::name(p);
            let r = ctx.registry.delete(pods_ri, ns, name, &DeleteOptions::default()).await;
            (name, r)
        });
        let mut error = None;
        for (name, result) in futures::future::join_all(deletes).await {
            match result {
                Ok(_) => ctx.expectations.expect_delete(key, name),
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => error = Some(e),
            }
        }
        tracing::info!(set = %key, deleted = doomed.len(), "deleted extra pods");
        if let Some(e) = error {
            let failure = status::Failure { reason: "FailedDelete", message: e.to_string() };
            return Some((failure, e.into()));
        }
    }
    None
}

/// Makes `set` the controller of the orphan `pod`; the pod as written, or `None` if it changed
/// meanwhile (it got another controller or stopped matching).
async fn adopt(ctx: &Ctx, pods_ri: &ResourceInfo, set: &Value, pod: &Value) -> Result<Option<Value>, Error> {
    let owner = json!({
        "apiVersion": ctx.flavor.api_version(), "kind": ctx.flavor.kind(), "name": object::name(set),
        "uid": uid(set), "controller": true, "blockOwnerDeletion": true,
    });
    let selector = ctx.flavor.selector(set);
    let result = ctx
        .registry
        .update_with(pods_ri, object::namespace(pod), object::name(pod), None, &opts(), |cur| {
            let mut next = cur.clone();
            let still = controller_ref(cur).is_none()
                && object::deletion_timestamp(cur).is_none()
                && selector.as_ref().is_some_and(|s| s.matches(&object::labels(cur)));
            if still {
                let meta = object::meta_mut(&mut next);
                let refs = meta.entry("ownerReferences").or_insert_with(|| json!([]));
                if let Some(list) = refs.as_array_mut() {
                    list.push(owner.clone());
                }
            }
            Ok(next)
        })
        .await;
    match result {
        Ok(w) if controller_ref(&w.object).and_then(|r| r.get("uid")).and_then(Value::as_str) == Some(uid(set)) => {
            tracing::info!(pod = object::name(pod), set = object::name(set), "adopted pod");
            Ok(Some(w.object))
        }
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Drops `owner_uid`'s reference from a pod that no longer matches its selector.
async fn release(registry: &Registry, pods_ri: &ResourceInfo, pod: &Value, owner_uid: &str) -> Result<(), Error> {
    let result = registry
        .update_with(pods_ri, object::namespace(pod), object::name(pod), None, &opts(), |cur| {
            let mut next = cur.clone();
            if let Some(list) = object::meta_mut(&mut next).get_mut("ownerReferences").and_then(Value::as_array_mut) {
                list.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
            }
            Ok(next)
        })
        .await;
    match result {
        Ok(_) | Err(ApiError::NotFound { .. }) => {
            tracing::info!(pod = object::name(pod), "released pod");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::WriteOptions;

    #[test]
    fn pods_carry_the_template_and_a_controller_reference() {
        let set = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
                         "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}});
        let pod = pod_from_template(&set, "apps/v1", "ReplicaSet");
        assert_eq!(pod["metadata"]["generateName"], "web-");
        assert_eq!(pod["metadata"]["namespace"], "ns");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], "u1");
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
    }

    #[test]
    fn a_replication_controller_selects_by_map_or_template_labels() {
        let rc =
            json!({"spec": {"selector": {"app": "a"}, "template": {"metadata": {"labels": {"app": "a", "x": "y"}}}}});
        let sel = Flavor::ReplicationController.selector(&rc);
        assert!(sel.as_ref().is_some_and(|s| s.matches(&json!({"app": "a"}).as_object().cloned().unwrap_or_default())));
        let defaulted = json!({"spec": {"template": {"metadata": {"labels": {"app": "a", "x": "y"}}}}});
        let sel = Flavor::ReplicationController.selector(&defaulted);
        assert!(sel
            .as_ref()
            .is_some_and(|s| !s.matches(&json!({"app": "a"}).as_object().cloned().unwrap_or_default())));
        let rs = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}}});
        assert!(Flavor::ReplicaSet.selector(&rs).is_some());
        assert!(Flavor::ReplicaSet.selector(&json!({"spec": {"selector": {}}})).is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_set_creates_its_pods_once_and_reports_status() {
        use crate::controllers::runtime::{testing, Supervisor};
        let (_dir, registry) = testing::registry().await;
        let supervisor = Supervisor::new();
        let informers = Informers::new(Arc::clone(&registry), Arc::clone(&supervisor));
        start(&informers, Flavor::ReplicaSet);
        let ri = registry.resource("apps", "ReplicaSet").unwrap_or_else(|e| panic!("{e}"));
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
                        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                                 "template": {"metadata": {"labels": {"app": "web"}},
                                              "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        registry.create(ri, Some("default"), rs, &WriteOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let pods = informers.get("", "Pod");
        let sets = informers.get("apps", "ReplicaSet");
        let key = ObjectKey::namespaced("default", "web");
        testing::eventually("three pods and status", || {
            pods.len() == 3 && sets.get(&key).is_some_and(|s| s.pointer("/status/replicas") == Some(&json!(3)))
        })
        .await;
        // Nothing more is created once the watch shows the pods.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pods.len(), 3);
        assert!(pods.list_all().iter().all(|p| controller_key(p, "ReplicaSet") == Some(key.clone())));
        registry
            .update_with(ri, Some("default"), "web", None, &WriteOptions::default(), |cur| {
                let mut next = cur.clone();
                next["spec"]["replicas"] = json!(1);
                Ok(next)
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Unbound pods are removed at once.
        testing::eventually("scaled down to one", || pods.len() == 1).await;
        assert!(supervisor.readyz().1.contains("[+]controller-replicaset ok"));
    }
}
