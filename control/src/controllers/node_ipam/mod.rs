//! Node IPAM (kube-controller-manager's range allocator, `--allocate-node-cidrs`): every Node
//! without `spec.podCIDR` gets the next free block of the cluster CIDR, written with the
//! annotation [`CLUSTER_CIDR_ANNOTATION`] so that its agent routes the whole cluster CIDR from
//! its pods to the node (pods on other nodes are then reached through the routes between nodes
//! each agent keeps, as flannel's host-gw does). A node given a pod CIDR on its agent's command
//! line keeps it, and it is never handed to another node. A deleted node's block is free again.
//! When the cluster CIDR is full, the node gets a `CIDRNotAvailable` event and waits for a block
//! to be freed.

pub mod allocator;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ipnet::Ipv4Net;
use parking_lot::Mutex;
use serde_json::{json, Value};

pub use allocator::Config;

use super::events;
use super::runtime::{Action, Controller, Error, Informer, Informers, ObjectKey, WorkQueue};
use crate::api::object;
use crate::api::registry::{Registry, WriteOptions};

/// The controller's name (task, field manager).
const NAME: &str = "controller-node-ipam";
/// The component its events come from (Kubernetes' name).
const COMPONENT: &str = "cidrAllocator";
/// The cluster CIDR the node's block was allocated from (read by the agent:
/// `skiff_node::pod_cidr::CLUSTER_CIDR_ANNOTATION`).
pub const CLUSTER_CIDR_ANNOTATION: &str = "skiff.io/cluster-cidr";

/// What a reconcile works with.
pub struct Ctx {
    registry: Arc<Registry>,
    nodes: Arc<Informer>,
    config: Config,
    /// Blocks written by this process that the informer may not show yet (node name -> the
    /// node's uid and its block), so two nodes reconciled back to back never get the same one. A
    /// node deleted and made again under its name (a new uid) is allocated anew.
    written: Mutex<HashMap<String, (String, Ipv4Net)>>,
    /// Nodes already told that no block is free (one event each, not one per retry).
    warned: Mutex<HashSet<String>>,
    queue: Mutex<Option<WorkQueue<ObjectKey>>>,
}

/// Starts the allocator under the informers' supervisor.
pub fn start(informers: &Arc<Informers>, config: Config) {
    let nodes = informers.get("", "Node");
    let ctx = Arc::new(Ctx {
        registry: Arc::clone(informers.registry()),
        nodes: Arc::clone(&nodes),
        config,
        written: Mutex::default(),
        warned: Mutex::default(),
        queue: Mutex::new(None),
    });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(NAME);
    supervisor.spawn(NAME, move || {
        // One worker: an allocation reads what is in use and writes in one step.
        let controller = Controller::new(NAME, Arc::clone(&nodes)).workers(1);
        *ctx.queue.lock() = Some(controller.queue());
        controller.run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

/// A node's pod CIDR (`spec.podCIDR`, else the first of `spec.podCIDRs`), if it has a valid one.
pub fn pod_cidr(node: &Value) -> Option<Ipv4Net> {
    let text = object::str_at(node, &["spec", "podCIDR"])
        .or_else(|| node.pointer("/spec/podCIDRs/0").and_then(Value::as_str))
        .filter(|s| !s.is_empty())?;
    text.parse().ok()
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(node) = ctx.nodes.get(&key) else {
        // Deleted: its block is free; nodes waiting for one look again.
        ctx.written.lock().remove(&key.name);
        let mut warned = ctx.warned.lock();
        warned.remove(&key.name);
        if !warned.is_empty() {
            drop(warned);
            wake_waiting(&ctx);
        }
        return Ok(Action::Done);
    };
    if pod_cidr(&node).is_some() {
        // The informer shows it now; nothing of ours to remember.
        ctx.written.lock().remove(&key.name);
        return Ok(Action::Done);
    }
    let uid = object::str_at(&node, &["metadata", "uid"]).unwrap_or_default().to_string();
    {
        let mut written = ctx.written.lock();
        match written.get(&key.name) {
            Some((for_uid, block)) if *for_uid == uid => {
                tracing::debug!(node = %key.name, %block, "allocated, not yet in the cache");
                return Ok(Action::Done);
            }
            Some(_) => {
                written.remove(&key.name);
            }
            None => {}
        }
    }
    let used: Vec<Ipv4Net> = {
        let written = ctx.written.lock();
        ctx.nodes.list_all().iter().filter_map(|n| pod_cidr(n)).chain(written.values().map(|(_, b)| *b)).collect()
    };
    let Some(block) = ctx.config.allocate(&used) else {
        if ctx.warned.lock().insert(key.name.clone()) {
            let message = format!("Node {} status is now: CIDRNotAvailable", key.name);
            tracing::warn!(node = %key.name, cluster_cidr = %ctx.config.cluster_cidr, "no free pod CIDR");
            events::record(&ctx.registry, &node, ("v1", "Node"), ("Normal", "CIDRNotAvailable", &message), COMPONENT)
                .await;
        }
        return Ok(Action::Done);
    };
    let ri = ctx.registry.resource("", "Node")?;
    let opts = WriteOptions { field_manager: Some(NAME.into()), ..Default::default() };
    let cluster = ctx.config.cluster_cidr.to_string();
    let mut assigned = None;
    ctx.registry
        .update_with(ri, None, &key.name, None, &opts, |cur| {
            let mut next = cur.clone();
            // Set meanwhile (an agent's own, or another server's): keep it.
            if let Some(existing) = pod_cidr(cur) {
                assigned = Some(existing);
                return Ok(next);
            }
            assigned = Some(block);
            next["spec"]["podCIDR"] = json!(block.to_string());
            next["spec"]["podCIDRs"] = json!([block.to_string()]);
            next["metadata"]["annotations"][CLUSTER_CIDR_ANNOTATION] = json!(cluster);
            Ok(next)
        })
        .await?;
    if assigned == Some(block) {
        ctx.written.lock().insert(key.name.clone(), (uid, block));
        ctx.warned.lock().remove(&key.name);
        tracing::info!(node = %key.name, pod_cidr = %block, "allocated the node's pod CIDR");
    }
    Ok(Action::Done)
}

/// Queues the nodes still without a block.
fn wake_waiting(ctx: &Ctx) {
    let Some(queue) = ctx.queue.lock().clone() else { return };
    for node in ctx.nodes.list_all().iter().filter(|n| pod_cidr(n).is_none()) {
        queue.add(ObjectKey::of(node));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_pod_cidr_from_either_field() {
        assert_eq!(pod_cidr(&json!({"spec": {"podCIDR": "10.42.3.0/24"}})), Some("10.42.3.0/24".parse().unwrap()));
        assert_eq!(pod_cidr(&json!({"spec": {"podCIDRs": ["10.42.4.0/24"]}})), Some("10.42.4.0/24".parse().unwrap()));
        assert_eq!(pod_cidr(&json!({"spec": {"podCIDR": ""}})), None);
        assert_eq!(pod_cidr(&json!({"spec": {}})), None);
        assert_eq!(pod_cidr(&json!({"spec": {"podCIDR": "fd00::/64"}})), None, "IPv4 only");
    }
}
