//! The node lifecycle controller (Kubernetes' node lifecycle controller, its taint-eviction
//! controller and the orphan part of the pod GC in one reconcile per node name):
//! - a node whose Lease (or status heartbeat) is older than the node monitor grace period gets
//!   its kubelet conditions `Unknown` and the `node.kubernetes.io/unreachable` taints
//!   (`NoSchedule`, `NoExecute`); a renewed Lease removes the taints again;
//! - pods on a node with `NoExecute` taints they do not tolerate are deleted, those tolerating
//!   them for `tolerationSeconds` once that has passed (force-deleted when the node is
//!   unreachable: no kubelet will confirm);
//! - pods bound to a node that no longer exists are force-deleted.
//!
//! Every wait is a [`Action::RequeueAfter`] at the moment something is due: nothing polls.

pub mod decide;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::events;
use super::runtime::{Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{DeleteOptions, Registry, WriteOptions};
use decide::Eviction;

const TASK: &str = "controller-node-lifecycle";
/// The namespace of the nodes' Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Pods bound to a node never seen are left this long before they count as orphans (the node
/// may be registering); Kubernetes' pod GC quarantines them 40 s too.
const ORPHAN_QUARANTINE: Duration = Duration::from_secs(40);

/// The controller's settings (server flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// How long a node may go without renewing its Lease before it is `Unknown` and tainted
    /// unreachable (`--node-monitor-grace-period`).
    pub node_monitor_grace_period: Duration,
    /// The `tolerationSeconds` admission gives every pod for the not-ready and unreachable
    /// `NoExecute` taints (`--default-unreachable-toleration-seconds`).
    pub default_unreachable_toleration_seconds: i64,
}

impl Default for Config {
    /// 20 s and 30 s: edge defaults (Kubernetes: 40-50 s and 300 s).
    fn default() -> Self {
        Self { node_monitor_grace_period: Duration::from_secs(20), default_unreachable_toleration_seconds: 30 }
    }
}

/// What a reconcile works with.
struct Ctx {
    registry: Arc<Registry>,
    nodes: Arc<Informer>,
    leases: Arc<Informer>,
    pods: Arc<Informer>,
    grace: Duration,
    started: Timestamp,
    /// Nodes seen to exist: their pods are orphans as soon as they are gone.
    seen: Mutex<HashSet<String>>,
    /// Node names pods are bound to that were never seen, since when.
    missing_since: Mutex<HashMap<String, Instant>>,
}

/// Starts the controller under the informers' supervisor.
pub fn start(informers: &Arc<Informers>, config: Config) {
    let nodes = informers.get("", "Node");
    let leases = informers.get("coordination.k8s.io", "Lease");
    let pods = informers.get("", "Pod");
    let ctx = Arc::new(Ctx {
        registry: Arc::clone(informers.registry()),
        nodes: Arc::clone(&nodes),
        leases: Arc::clone(&leases),
        pods: Arc::clone(&pods),
        grace: config.node_monitor_grace_period,
        started: Timestamp::now(),
        seen: Mutex::new(HashSet::new()),
        missing_since: Mutex::new(HashMap::new()),
    });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(TASK);
    supervisor.spawn(TASK, move || {
        Controller::new(TASK, Arc::clone(&nodes))
            .watches(Arc::clone(&leases), lease_node)
            .watches(Arc::clone(&pods), pod_node)
            .workers(2)
            .run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

fn node_key(name: &str) -> ObjectKey {
    ObjectKey { namespace: None, name: name.to_string() }
}

/// A node's Lease -> the node.
fn lease_node(lease: &Value) -> Vec<ObjectKey> {
    match object::namespace(lease) {
        Some(LEASE_NAMESPACE) => vec![node_key(object::name(lease))],
        _ => Vec::new(),
    }
}

/// A bound pod -> its node.
fn pod_node(pod: &Value) -> Vec<ObjectKey> {
    match object::str_at(pod, &["spec", "nodeName"]) {
        Some(n) if !n.is_empty() => vec![node_key(n)],
        _ => Vec::new(),
    }
}

fn opts() -> WriteOptions {
    WriteOptions { field_manager: Some("kube-controller-manager".into()), ..Default::default() }
}

fn pods_on(ctx: &Ctx, node: &str) -> Vec<Arc<Value>> {
    ctx.pods.list_where(None, |s| s.node_name() == Some(node))
}

#[tracing::instrument(skip_all, fields(node = %key.name))]
async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    match ctx.nodes.get(&key) {
        Some(node) => {
            ctx.seen.lock().insert(key.name.clone());
            ctx.missing_since.lock().remove(&key.name);
            monitor(&ctx, &key.name, &node).await
        }
        None => orphans(&ctx, &key.name).await,
    }
}

/// Pods bound to a node that does not exist: force-deleted (at once when the node was seen and
/// is gone, after [`ORPHAN_QUARANTINE`] when it never was).
async fn orphans(ctx: &Ctx, name: &str) -> Result<Action, Error> {
    let pods = pods_on(ctx, name);
    if pods.is_empty() {
        ctx.missing_since.lock().remove(name);
        return Ok(Action::Done);
    }
    if !ctx.seen.lock().contains(name) {
        let since = *ctx.missing_since.lock().entry(name.to_string()).or_insert_with(Instant::now);
        let waited = since.elapsed();
        if waited < ORPHAN_QUARANTINE {
            return Ok(Action::RequeueAfter(ORPHAN_QUARANTINE - waited));
        }
    }
    for pod in &pods {
        tracing::info!(pod = %ObjectKey::of(pod), "deleting pod bound to a node that no longer exists");
        force_delete(ctx, pod).await?;
    }
    Ok(Action::Done)
}

async fn force_delete(ctx: &Ctx, pod: &Value) -> Result<(), Error> {
    let ri = ctx.registry.resource("", "Pod")?;
    let opts = DeleteOptions { grace_period_seconds: Some(0), ..Default::default() };
    match ctx.registry.delete(ri, object::namespace(pod), object::name(pod), &opts).await {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Checks a node's heartbeat, keeps its conditions and taints in line, evicts its pods.
async fn monitor(ctx: &Ctx, name: &str, node: &Value) -> Result<Action, Error> {
    let lease = ctx.leases.get(&ObjectKey::namespaced(LEASE_NAMESPACE, name));
    let now = Timestamp::now();
    let heard = decide::last_heard(node, lease.as_deref(), ctx.started);
    let reachable_for = decide::reachable_for(heard, ctx.grace, now);
    let unreachable = reachable_for.is_none();
    let ri = ctx.registry.resource("", "Node")?;
    let mut node = node.clone();
    if unreachable && decide::unknown_conditions(&node, now).is_some() {
        let was_ready = decide::condition(&node, "Ready").and_then(|c| c.get("status")) == Some(&json!("True"));
        let written = ctx
            .registry
            .update_with(ri, None, name, Some("status"), &opts(), |cur| {
                let mut next = cur.clone();
                if let Some(conditions) = decide::unknown_conditions(cur, now) {
                    next["status"]["conditions"] = json!(conditions);
                }
                Ok(next)
            })
            .await;
        match written {
            Ok(w) => node = w.object,
            Err(ApiError::NotFound { .. }) => return Ok(Action::Done),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(last_heard = %heard, "node stopped posting status: conditions Unknown");
        if was_ready {
            let message = format!("Node {name} status is now: NodeNotReady");
            events::record(
                &ctx.registry,
                &node,
                ("v1", "Node"),
                ("Normal", "NodeNotReady", &message),
                "node-controller",
            )
            .await;
        }
    }
    if decide::taints(&node, unreachable, now).is_some() {
        let written = ctx
            .registry
            .update_with(ri, None, name, None, &opts(), |cur| {
                let mut next = cur.clone();
                if let Some(taints) = decide::taints(cur, unreachable, now) {
                    if let Some(spec) = object_at(&mut next, "spec") {
                        spec.insert("taints".into(), json!(taints));
                    }
                }
                Ok(next)
            })
            .await;
        match written {
            Ok(w) => node = w.object,
            Err(ApiError::NotFound { .. }) => return Ok(Action::Done),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(unreachable, "node taints updated");
    }
    let next_eviction = evict(ctx, &node, unreachable, now).await?;
    let wait = [reachable_for, next_eviction].into_iter().flatten().min();
    // A little past the deadline, so the reconcile sees it passed.
    Ok(wait.map_or(Action::Done, |d| Action::RequeueAfter(d + Duration::from_millis(50))))
}

fn object_at<'a>(obj: &'a mut Value, field: &str) -> Option<&'a mut serde_json::Map<String, Value>> {
    let map = obj.as_object_mut()?;
    map.entry(field).or_insert_with(|| json!({})).as_object_mut()
}

/// Deletes the pods the node's `NoExecute` taints evict now; how long until the next one is due.
async fn evict(ctx: &Ctx, node: &Value, unreachable: bool, now: Timestamp) -> Result<Option<Duration>, Error> {
    let taints: Vec<Value> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(|ts| ts.iter().filter(|t| t.get("effect").and_then(Value::as_str) == Some("NoExecute")).cloned().collect())
        .unwrap_or_default();
    if taints.is_empty() {
        return Ok(None);
    }
    let ri = ctx.registry.resource("", "Pod")?;
    let mut next: Option<Duration> = None;
    for pod in pods_on(ctx, object::name(node)) {
        let deleting = object::deletion_timestamp(&pod).is_some();
        if deleting && !unreachable {
            continue;
        }
        match decide::eviction(&pod, &taints, now) {
            Eviction::Never => {}
            Eviction::At(t) => {
                let d = Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO);
                next = Some(next.map_or(d, |n| n.min(d)));
            }
            Eviction::Now => {
                let key = ObjectKey::of(&pod);
                // Nobody confirms a pod's end on an unreachable node: delete it outright.
                let grace = unreachable.then_some(0);
                let opts = DeleteOptions { grace_period_seconds: grace, ..Default::default() };
                match ctx.registry.delete(ri, key.ns(), &key.name, &opts).await {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                if !deleting {
                    tracing::info!(pod = %key, "taint manager evicted pod");
                    let message = format!("Marking for deletion Pod {key}");
                    events::record(
                        &ctx.registry,
                        &pod,
                        ("v1", "Pod"),
                        ("Normal", "TaintManagerEviction", &message),
                        "taint-eviction-controller",
                    )
                    .await;
                }
            }
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::runtime::{testing, Supervisor};

    fn fail<E: std::fmt::Display>(e: E) -> String {
        format!("{e}")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_lease_taints_the_node_evicts_its_pods_and_a_renewal_untaints_it() -> Result<(), String> {
        let (_dir, registry) = testing::registry().await;
        let w = WriteOptions::default();
        let ns_ri = registry.resource("", "Namespace").map_err(fail)?;
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}});
        registry.create(ns_ri, None, ns, &w).await.map_err(fail)?;
        let supervisor = Supervisor::new();
        let informers = Informers::new(Arc::clone(&registry), Arc::clone(&supervisor));
        let config = Config { node_monitor_grace_period: Duration::from_secs(1), ..Config::default() };
        start(&informers, config);
        let node_ri = registry.resource("", "Node").map_err(fail)?;
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                          "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                                     "lastHeartbeatTime": "2020-01-01T00:00:00Z"}]}});
        registry.create(node_ri, None, node, &w).await.map_err(fail)?;
        let pod_ri = registry.resource("", "Pod").map_err(fail)?;
        let pod = |name: &str, tolerations: Value| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                   "spec": {"nodeName": "n1", "tolerations": tolerations,
                            "containers": [{"name": "c", "image": "i:1"}]}})
        };
        let quick = json!([{"key": decide::UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
                            "tolerationSeconds": 1}]);
        let forever = json!([{"key": decide::UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]);
        registry.create(pod_ri, Some("default"), pod("quick", quick), &w).await.map_err(fail)?;
        registry.create(pod_ri, Some("default"), pod("stays", forever), &w).await.map_err(fail)?;
        let (nodes, pods) = (informers.get("", "Node"), informers.get("", "Pod"));
        let key = node_key("n1");
        let tainted =
            |nodes: &Informer| nodes.get(&key).is_some_and(|n| decide::taints(&n, true, Timestamp::now()).is_none());
        // No Lease and an old heartbeat: the controller's own start time gives one grace period.
        testing::eventually("the node Unknown and tainted", || {
            tainted(&nodes)
                && nodes.get(&key).is_some_and(|n| {
                    decide::condition(&n, "Ready").and_then(|c| c.get("status")) == Some(&json!("Unknown"))
                })
        })
        .await;
        testing::eventually("the quick pod evicted", || pods.get(&ObjectKey::namespaced("default", "quick")).is_none())
            .await;
        assert!(pods.get(&ObjectKey::namespaced("default", "stays")).is_some());

        // The Lease is renewed: the taints go.
        let lease_ri = registry.resource("coordination.k8s.io", "Lease").map_err(fail)?;
        let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"},
                           "spec": {"holderIdentity": "n1", "renewTime": now}});
        registry.create(lease_ri, Some(LEASE_NAMESPACE), lease, &w).await.map_err(fail)?;
        testing::eventually("the taints removed", || {
            nodes
                .get(&key)
                .is_some_and(|n| n.pointer("/spec/taints").and_then(Value::as_array).is_none_or(Vec::is_empty))
        })
        .await;
        // ... and come back once it is stale again, without any further change.
        testing::eventually("tainted again", || tainted(&nodes)).await;

        // The node is deleted: its remaining pod goes too.
        registry.delete(node_ri, None, "n1", &DeleteOptions::default()).await.map_err(fail)?;
        testing::eventually("the pod of the deleted node removed", || pods.is_empty()).await;
        assert!(supervisor.readyz().1.contains("[+]controller-node-lifecycle ok"));
        Ok(())
    }
}
