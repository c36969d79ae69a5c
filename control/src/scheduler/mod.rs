//! The scheduler: binds each pending pod to a Ready node that offers its runtime and has room,
//! honouring `nodeSelector`, taints and tolerations; a `FailedScheduling` event says why when no
//! node fits. The decision itself ([`fit`]) is pure; this module only reads and writes through
//! the API machinery. (The full scheduler, with affinity and spreading, is its own issue.)

pub mod fit;
pub mod quantity;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::error::ApiResult;
use crate::api::object;
use crate::api::registry::{ListQuery, Registry, WriteOptions};
use fit::NodeState;

const SCHEDULER_NAME: &str = "default-scheduler";
const RESYNC: Duration = Duration::from_millis(500);

/// Runs scheduling passes on every pod or node change, and every [`RESYNC`] at the latest.
pub async fn run(registry: Arc<Registry>) {
    let mut reported: HashMap<String, String> = HashMap::new();
    loop {
        let (_, mut rx) = registry.cache.subscribe_now();
        if let Err(e) = pass(&registry, &mut reported).await {
            tracing::warn!(error = %e, "scheduling pass failed");
        }
        // Wait for a relevant change (or the resync tick), then drain what piled up.
        let _ = tokio::time::timeout(RESYNC, async {
            while let Ok(ev) = rx.recv().await {
                if ev.key.starts_with("/registry/core/pods/") || ev.key.starts_with("/registry/core/nodes/") {
                    break;
                }
            }
        })
        .await;
    }
}

async fn pass(registry: &Registry, reported: &mut HashMap<String, String>) -> ApiResult<()> {
    // Nodes first: with none registered there is nothing to decide, and a control plane without
    // nodes (a fresh server, a benchmark) should not pay for listing every pod on each change.
    let nodes_ri = registry.resource("", "Node")?;
    let mut nodes: Vec<NodeState> =
        registry.list(nodes_ri, &ListQuery::default()).await?.items.iter().map(fit::node_state).collect();
    if nodes.is_empty() {
        return Ok(());
    }
    let pods_ri = registry.resource("", "Pod")?;
    let pods = registry.list(pods_ri, &ListQuery::default()).await?.items;
    let pending: Vec<&Value> = pods
        .iter()
        .filter(|p| object::str_at(p, &["spec", "nodeName"]).is_none_or(str::is_empty))
        .filter(|p| object::deletion_timestamp(p).is_none())
        .filter(|p| object::str_at(p, &["spec", "schedulerName"]).is_none_or(|s| s == SCHEDULER_NAME))
        .collect();
    if pending.is_empty() {
        reported.clear();
        return Ok(());
    }
    for pod in pods.iter().filter(|p| !matches!(object::str_at(p, &["status", "phase"]), Some("Succeeded" | "Failed")))
    {
        if let Some(node) =
            object::str_at(pod, &["spec", "nodeName"]).and_then(|n| nodes.iter_mut().find(|s| s.name == n))
        {
            node.requested.add(fit::pod_requests(pod));
        }
    }
    // Decide in order (each choice takes room on its node), then bind concurrently: a burst of
    // pending pods costs one round of group-committed writes, not one write after another.
    let mut binds = Vec::new();
    for pod in pending {
        let uid = object::str_at(pod, &["metadata", "uid"]).unwrap_or("").to_string();
        let handler = runtime_handler(registry, pod).await;
        let span = tracing::info_span!("schedule", pod = %format!("{}/{}", object::namespace(pod).unwrap_or("default"), object::name(pod)));
        let decision = span.in_scope(|| fit::choose(pod, handler.as_deref(), &nodes).map(|n| n.name.clone()));
        match decision {
            Ok(node) => {
                if let Some(state) = nodes.iter_mut().find(|n| n.name == node) {
                    state.requested.add(fit::pod_requests(pod));
                }
                reported.remove(&uid);
                binds.push((pod, node));
            }
            Err(why) => {
                if reported.get(&uid) != Some(&why) {
                    record_event(registry, pod, "Warning", "FailedScheduling", &why).await;
                    reported.insert(uid, why);
                }
            }
        }
    }
    for chunk in binds.chunks(64) {
        let writes: Vec<_> = chunk.iter().map(|(pod, node)| bind(registry, pods_ri, pod, node)).collect();
        futures::future::join_all(writes).await;
    }
    Ok(())
}

/// Binds one pod and records the `Scheduled` event.
async fn bind(registry: &Registry, pods_ri: &crate::api::resources::ResourceInfo, pod: &Value, node: &str) {
    let (ns, name) = (object::namespace(pod).unwrap_or("default").to_string(), object::name(pod).to_string());
    let opts = WriteOptions { field_manager: Some(SCHEDULER_NAME.into()), ..Default::default() };
    if registry.bind_pod(pods_ri, Some(&ns), &name, node, &opts).await.is_ok() {
        tracing::info!(pod = %format!("{ns}/{name}"), %node, "scheduled");
        record_event(registry, pod, "Normal", "Scheduled", &format!("Successfully assigned {ns}/{name} to {node}"))
            .await;
    }
}

/// The handler of the pod's RuntimeClass, if it names one.
async fn runtime_handler(registry: &Registry, pod: &Value) -> Option<String> {
    let class = object::str_at(pod, &["spec", "runtimeClassName"])?;
    let ri = registry.resource("node.k8s.io", "RuntimeClass").ok()?;
    let rc = registry.get(ri, None, class).await.ok()?;
    object::str_at(&rc, &["handler"]).map(String::from)
}

/// Writes a core/v1 Event about a pod.
pub async fn record_event(registry: &Registry, pod: &Value, kind: &str, reason: &str, message: &str) {
    let Ok(ri) = registry.resource("", "Event") else { return };
    let ns = object::namespace(pod).unwrap_or("default");
    let now = object::now_rfc3339();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", object::name(pod)), "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": object::name(pod), "namespace": ns,
                           "uid": object::str_at(pod, &["metadata", "uid"]), "resourceVersion": object::resource_version(pod)},
        "reason": reason, "message": message, "type": kind, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
        "source": {"component": SCHEDULER_NAME}, "reportingComponent": SCHEDULER_NAME,
    });
    if let Err(e) = registry.create(ri, Some(ns), event, &WriteOptions::default()).await {
        tracing::debug!(error = %e, "recording event");
    }
}
