//! The scheduler: binds each pending pod to a node that can run it, driven by the Pod and Node
//! informers (no re-lists). One task owns the [`queue::SchedulingQueue`] and the
//! [`cache::Cache`]; it decides one pod at a time ([`decide`], pure) and hands each bind to a
//! task of its own, up to [`MAX_IN_FLIGHT`] at once, counting the pod on its node (assumed)
//! until the bind is seen. A pod no node fits gets a `FailedScheduling` event and the
//! `PodScheduled=False` condition (reason `Unschedulable`), and waits in the unschedulable set
//! for a cluster change that may help; it never blocks the pods behind it.

pub mod cache;
pub mod decide;
pub mod filters;
pub mod fit;
pub mod pod_info;
pub mod preempt;
mod preemptor;
pub mod quantity;
pub mod queue;
pub mod scores;
#[cfg(test)]
mod tests;
pub mod topology;
pub mod volumes;

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{Binding, Registry, WriteOptions};
use crate::controllers::events;
use crate::controllers::runtime::{Change, Error, Informer, Informers, ObjectKey};
use cache::{Cache, PodEffect};
use fit::Diagnosis;
use pod_info::PodInfo;
use queue::{Popped, SchedulingQueue};

/// The name pods ask for in `spec.schedulerName`.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Binds in flight at once.
pub const MAX_IN_FLIGHT: usize = 128;

/// Starts the scheduler under the informers' supervisor (task `scheduler`).
pub fn start(informers: &Arc<Informers>) {
    let pods = informers.get("", "Pod");
    let nodes = informers.get("", "Node");
    let classes = informers.get("scheduling.k8s.io", "PriorityClass");
    let runtimes = informers.get("node.k8s.io", "RuntimeClass");
    let claims = informers.get("", "PersistentVolumeClaim");
    let volumes = informers.get("", "PersistentVolume");
    let storage_classes = informers.get("storage.k8s.io", "StorageClass");
    let registry = Arc::clone(informers.registry());
    informers.supervisor().spawn("scheduler", move || {
        let s = Scheduler {
            registry: Arc::clone(&registry),
            pods: Arc::clone(&pods),
            nodes: Arc::clone(&nodes),
            classes: Arc::clone(&classes),
            runtimes: Arc::clone(&runtimes),
            claims: Arc::clone(&claims),
            volumes: Arc::clone(&volumes),
            storage_classes: Arc::clone(&storage_classes),
        };
        s.run()
    });
}

struct Scheduler {
    registry: Arc<Registry>,
    pods: Arc<Informer>,
    nodes: Arc<Informer>,
    classes: Arc<Informer>,
    runtimes: Arc<Informer>,
    claims: Arc<Informer>,
    volumes: Arc<Informer>,
    storage_classes: Arc<Informer>,
}

/// How a bind ended, reported by its task.
struct Bound {
    uid: String,
    result: Result<(), ApiError>,
}

/// The loop's state.
struct State {
    queue: SchedulingQueue,
    cache: Cache,
    in_flight: usize,
    /// Where the next search starts (spreads the search over all nodes).
    start: usize,
}

impl Scheduler {
    async fn run(self) -> Result<(), Error> {
        let mut pod_rx = self.pods.subscribe();
        let mut node_rx = self.nodes.subscribe();
        let mut claim_rx = self.claims.subscribe();
        let mut volume_rx = self.volumes.subscribe();
        for inf in
            [&self.pods, &self.nodes, &self.classes, &self.runtimes, &self.claims, &self.volumes, &self.storage_classes]
        {
            inf.wait_synced().await;
        }
        let mut st = State { queue: SchedulingQueue::new(), cache: Cache::new(), in_flight: 0, start: 0 };
        self.resync(&mut st);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Bound>();
        tracing::info!("scheduler started");
        loop {
            let timer = st.queue.next_timer().map(tokio::time::Instant::from_std);
            let can_schedule = st.in_flight < MAX_IN_FLIGHT && st.queue.has_active();
            tokio::select! {
                change = pod_rx.recv() => match change {
                    Ok(change) => self.on_pod(&mut st, &change),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.resync(&mut st),
                    Err(broadcast::error::RecvError::Closed) => return Err(Error::Other("pod informer closed".into())),
                },
                change = node_rx.recv() => match change {
                    Ok(change) => self.on_node(&mut st, &change),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.resync(&mut st),
                    Err(broadcast::error::RecvError::Closed) => return Err(Error::Other("node informer closed".into())),
                },
                // A claim or volume that appears or binds may let a waiting pod in.
                change = claim_rx.recv() => match change {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => st.queue.wake_all(Instant::now()),
                    Err(broadcast::error::RecvError::Closed) => return Err(Error::Other("claim informer closed".into())),
                },
                change = volume_rx.recv() => match change {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => st.queue.wake_all(Instant::now()),
                    Err(broadcast::error::RecvError::Closed) => return Err(Error::Other("volume informer closed".into())),
                },
                Some(bound) = done_rx.recv() => {
                    st.in_flight = st.in_flight.saturating_sub(1);
                    match bound.result {
                        Ok(()) => st.queue.done(&bound.uid),
                        Err(e) => {
                            tracing::info!(uid = %bound.uid, error = %e, "bind failed; retrying");
                            st.cache.forget(&bound.uid);
                            if matches!(e, ApiError::NotFound { .. }) {
                                st.queue.remove(&bound.uid);
                            } else {
                                st.queue.failed(&bound.uid, Instant::now());
                            }
                        }
                    }
                },
                () = sleep_until(timer) => st.queue.flush(Instant::now()),
                () = std::future::ready(()), if can_schedule => self.schedule_one(&mut st, &done_tx),
            }
        }
    }

    /// Rebuilds the cache and queue from the informers (at start, and when a feed lagged).
    fn resync(&self, st: &mut State) {
        let mut cache = Cache::new();
        for node in self.nodes.list_all() {
            cache.upsert_node(&node);
        }
        for pod in self.pods.list_all() {
            let info = PodInfo::of(&pod);
            if st.cache.is_assumed(&info.uid) && info.node_name.is_none() {
                if let Some(node) = st.cache.nodes().iter().find(|n| n.pods.iter().any(|p| p.uid == info.uid)) {
                    cache.assume(&info, &node.name);
                }
                continue;
            }
            cache.upsert_pod(Arc::clone(&info));
            if self.wants(&pod, &info) {
                let priority = self.priority(&info);
                st.queue.upsert(info, priority, true);
            } else {
                st.queue.remove(&info.uid);
            }
        }
        st.cache = cache;
        st.queue.wake_all(Instant::now());
    }

    /// True when the pod is pending and this scheduler's to place.
    fn wants(&self, pod: &Value, info: &PodInfo) -> bool {
        info.node_name.is_none()
            && info.scheduler_name == SCHEDULER_NAME
            && object::deletion_timestamp(pod).is_none()
            && !info.finished
    }

    /// The pod's priority: `spec.priority`, else its PriorityClass's value, else the global
    /// default class's, else 0.
    fn priority(&self, info: &PodInfo) -> i32 {
        if let Some(p) = info.priority {
            return p;
        }
        let value = |c: &Value| c.get("value").and_then(Value::as_i64).and_then(|v| i32::try_from(v).ok());
        if let Some(class) = &info.priority_class {
            return self
                .classes
                .get(&ObjectKey { namespace: None, name: class.to_string() })
                .as_deref()
                .and_then(value)
                .unwrap_or(0);
        }
        self.classes
            .list_all()
            .iter()
            .find(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
            .and_then(|c| value(c))
            .unwrap_or(0)
    }

    fn on_pod(&self, st: &mut State, change: &Change) {
        let now = Instant::now();
        match change {
            Change::Applied { old, new } => {
                let info = PodInfo::of(new);
                if st.cache.upsert_pod(Arc::clone(&info)) == PodEffect::Freed {
                    st.queue.wake_all(now);
                }
                if self.wants(new, &info) && !st.cache.is_assumed(&info.uid) {
                    let moved = old
                        .as_ref()
                        .is_none_or(|o| o.get("spec") != new.get("spec") || object::labels(o) != object::labels(new));
                    let priority = self.priority(&info);
                    st.queue.upsert(info, priority, moved);
                } else if !self.wants(new, &info) {
                    st.queue.remove(&info.uid);
                }
            }
            Change::Deleted(old) => {
                let uid = object::str_at(old, &["metadata", "uid"]).unwrap_or_default();
                st.queue.remove(uid);
                if st.cache.remove_pod(uid) == PodEffect::Freed {
                    st.queue.wake_all(now);
                }
            }
        }
    }

    fn on_node(&self, st: &mut State, change: &Change) {
        match change {
            Change::Applied { new, .. } => {
                if st.cache.upsert_node(new) {
                    st.queue.wake_all(Instant::now());
                }
            }
            Change::Deleted(old) => st.cache.remove_node(object::name(old)),
        }
    }

    /// What the pod's PersistentVolumeClaims require of its node ([`volumes::plan`]).
    fn volume_plan(&self, pod: &PodInfo) -> Result<volumes::VolumePlan, String> {
        if pod.claims.is_empty() {
            return Ok(volumes::VolumePlan::default());
        }
        let cluster = |name: &str| ObjectKey { namespace: None, name: name.to_string() };
        volumes::plan(
            pod,
            |name| self.claims.get(&ObjectKey::namespaced(&pod.namespace, name)),
            |name| self.volumes.get(&cluster(name)),
            |name| self.storage_classes.get(&cluster(name)),
        )
    }

    /// The handler of the pod's RuntimeClass, if it names one that exists.
    fn handler(&self, info: &PodInfo) -> Option<String> {
        let class = info.runtime_class.as_deref()?;
        let rc = self.runtimes.get(&ObjectKey { namespace: None, name: class.to_string() })?;
        object::str_at(&rc, &["handler"]).map(String::from)
    }

    /// A pod that waited as unschedulable (the queue kept no [`PodInfo`]), as the informer now
    /// shows it; `None` when it is gone, replaced by another of its name, or no longer pending.
    fn read_again(&self, popped: &Popped) -> Option<Arc<PodInfo>> {
        let (namespace, name) = split_key(&popped.key);
        let pod = self.pods.get(&ObjectKey::namespaced(namespace, name))?;
        let info = PodInfo::of(&pod);
        (*info.uid == *popped.uid && self.wants(&pod, &info)).then_some(info)
    }

    /// Decides for the next active pod; binds in a task of its own or reports why it waits.
    fn schedule_one(&self, st: &mut State, done: &mpsc::UnboundedSender<Bound>) {
        let Some(popped) = st.queue.pop() else { return };
        let Some(pod) = popped.info.clone().or_else(|| self.read_again(&popped)) else {
            st.queue.remove(&popped.uid);
            return;
        };
        let span = tracing::info_span!("schedule", pod = %pod.key, uid = %pod.uid);
        let _entered = span.enter();
        let handler = self.handler(&pod);
        let all = st.cache.nodes();
        let plan = self.volume_plan(&pod);
        // Nodes a bound volume rules out are counted as such, then left out of the search.
        let nodes: Vec<&fit::NodeState> = match &plan {
            Ok(p) if !p.terms.is_empty() => all.iter().copied().filter(|n| p.fits(n)).collect(),
            _ => all.clone(),
        };
        let excluded = all.len().saturating_sub(nodes.len());
        let n = nodes.len();
        let start = if n == 0 { 0 } else { st.start % n };
        let decision = match &plan {
            Err(why) => Err(Diagnosis {
                nodes: all.len(),
                misfits: [(fit::Misfit::Volume(why.clone()), all.len())].into_iter().collect(),
            }),
            Ok(_) => decide::decide_from(&pod, handler.as_deref(), &nodes, start, st.cache.any_anti_affinity())
                .map_err(|mut d| {
                    if excluded > 0 {
                        d.nodes = d.nodes.saturating_add(excluded);
                        d.misfits.insert(fit::Misfit::VolumeNodeAffinity, excluded);
                    }
                    d
                }),
        };
        let nodes = all;
        match decision {
            Ok(placement) => {
                let chosen: &fit::NodeState = match &plan {
                    Ok(p) if !p.terms.is_empty() => {
                        nodes.iter().copied().filter(|n| p.fits(n)).nth(placement.node).unwrap_or(nodes[0])
                    }
                    _ => nodes[placement.node],
                };
                let node = chosen.name.clone();
                let to_select = plan.map(|p| p.to_select).unwrap_or_default();
                st.start = start.saturating_add(placement.examined);
                st.cache.assume(&pod, &node);
                st.in_flight += 1;
                let (registry, done) = (Arc::clone(&self.registry), done.clone());
                let bind_span = tracing::info_span!("bind", pod = %pod.key, %node);
                tokio::spawn(
                    async move {
                        let result = match select_node(&registry, &pod, &to_select, &node).await {
                            Ok(()) => bind(&registry, &pod, &node).await,
                            Err(e) => Err(e),
                        };
                        let _ = done.send(Bound { uid: pod.uid.clone(), result });
                    }
                    .instrument(bind_span),
                );
            }
            Err(diagnosis) => {
                st.queue.unschedulable(&pod.uid, Instant::now());
                let priority = self.priority(&pod);
                let priority_of = |p: &PodInfo| self.priority(p);
                let preemption = if preempt::eligible(&pod, &nodes, &priority_of, priority) {
                    let anti = st.cache.any_anti_affinity();
                    preempt::preempt(&pod, priority, handler.as_deref(), &nodes, &priority_of, anti)
                } else {
                    None
                };
                let message = match &preemption {
                    Some(_) => diagnosis.to_string(),
                    None => diagnosis.event_message(),
                };
                if let Some(p) = preemption {
                    let node = nodes[p.node].name.clone();
                    tracing::info!(%node, victims = p.victims.len(), "preempting lower-priority pods");
                    let registry = Arc::clone(&self.registry);
                    let preempting = preemptor::preempt(registry, Arc::clone(&pod), node, p.victims);
                    tokio::spawn(preempting.instrument(tracing::info_span!("preempt", pod = %pod.key)));
                }
                if st.queue.report(&pod.uid, &message) {
                    tracing::info!(reason = %diagnosis, "unschedulable");
                    let registry = Arc::clone(&self.registry);
                    let pods = Arc::clone(&self.pods);
                    tokio::spawn(
                        async move { report_unschedulable(&registry, &pods, &pod, &diagnosis, &message).await },
                    );
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("default", key))
}

/// Marks the pod's unbound `WaitForFirstConsumer` claims with the chosen node (the provisioner
/// makes their volumes there); a claim another pod already placed keeps its node.
async fn select_node(registry: &Registry, pod: &PodInfo, claims: &[String], node: &str) -> Result<(), ApiError> {
    if claims.is_empty() {
        return Ok(());
    }
    let ri = registry.resource("", "PersistentVolumeClaim")?;
    let opts = WriteOptions { field_manager: Some(SCHEDULER_NAME.into()), ..Default::default() };
    for claim in claims {
        registry
            .update_with(ri, Some(&pod.namespace), claim, None, &opts, |current| {
                let mut next = current.clone();
                let annotations = &mut next["metadata"]["annotations"];
                if annotations.get(volumes::SELECTED_NODE).is_none() {
                    annotations[volumes::SELECTED_NODE] = json!(node);
                }
                Ok(next)
            })
            .await?;
    }
    Ok(())
}

/// Binds through the `binding` rules and records the `Scheduled` event.
async fn bind(registry: &Registry, pod: &PodInfo, node: &str) -> Result<(), ApiError> {
    let (ns, name) = split_key(&pod.key);
    let ri = registry.resource("", "Pod")?;
    let opts = WriteOptions { field_manager: Some(SCHEDULER_NAME.into()), ..Default::default() };
    registry.bind_pod(ri, Some(ns), name, &Binding { node, annotations: None }, &opts).await?;
    tracing::debug!("scheduled");
    let obj = json!({"metadata": {"name": name, "namespace": ns, "uid": pod.uid}});
    let message = format!("Successfully assigned {ns}/{name} to {node}");
    events::record(registry, &obj, ("v1", "Pod"), ("Normal", "Scheduled", &message), SCHEDULER_NAME).await;
    Ok(())
}

/// Records `FailedScheduling` and sets `PodScheduled=False` (reason `Unschedulable`).
async fn report_unschedulable(
    registry: &Registry,
    pods: &Informer,
    pod: &PodInfo,
    diagnosis: &Diagnosis,
    message: &str,
) {
    let (ns, name) = split_key(&pod.key);
    let obj = pods
        .get(&ObjectKey::namespaced(ns, name))
        .map(|o| (*o).clone())
        .unwrap_or_else(|| json!({"metadata": {"name": name, "namespace": ns, "uid": pod.uid}}));
    events::record(registry, &obj, ("v1", "Pod"), ("Warning", "FailedScheduling", message), SCHEDULER_NAME).await;
    let Ok(ri) = registry.resource("", "Pod") else { return };
    let opts = WriteOptions { field_manager: Some(SCHEDULER_NAME.into()), ..Default::default() };
    let written = registry
        .update_with(ri, Some(ns), name, Some("status"), &opts, |current| {
            if object::str_at(current, &["metadata", "uid"]) != Some(pod.uid.as_str())
                || object::str_at(current, &["spec", "nodeName"]).is_some_and(|n| !n.is_empty())
            {
                return Err(ApiError::BadRequest("pod changed".into()));
            }
            let mut next = current.clone();
            set_unschedulable(&mut next, message);
            Ok(next)
        })
        .await;
    if let Err(e) = written {
        tracing::debug!(error = %e, %diagnosis, "recording PodScheduled=False");
    }
}

/// Sets the `PodScheduled` condition to False with reason `Unschedulable` and the message.
fn set_unschedulable(pod: &mut Value, message: &str) {
    let Some(obj) = pod.as_object_mut() else { return };
    let status = obj.entry("status").or_insert_with(|| json!({}));
    let Some(status) = status.as_object_mut() else { return };
    status.entry("phase").or_insert_with(|| json!("Pending"));
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conditions.as_array_mut() else { return };
    list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
    list.push(json!({
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
        "lastProbeTime": null, "lastTransitionTime": object::now_rfc3339(),
    }));
}
