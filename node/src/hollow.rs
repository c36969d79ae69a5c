//! Hollow nodes (Kubernetes' kubemark): `skiff agent --hollow N` registers N Nodes that keep
//! their Leases and report the pods bound to them Running with a fake pod IP, executing nothing.
//! For scheduler and controller benchmarks: one process, one client, one pod watch for all N.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::error::AgentError;
use crate::node_status::{KUBELET_VERSION, RUNTIME_HANDLERS};

/// Writes in flight at once (registrations, lease renewals, pod status).
const CONCURRENCY: usize = 32;

/// What the hollow nodes are and where they report.
#[derive(Clone, Debug)]
pub struct HollowConfig {
    /// How many nodes.
    pub count: usize,
    /// Node names are `<prefix>-<i>`.
    pub prefix: String,
    /// How often every Lease is renewed.
    pub lease_interval: Duration,
    /// `allocatable.cpu` of each node.
    pub cpu: String,
    /// `allocatable.memory` of each node.
    pub memory: String,
    /// `allocatable.pods` of each node.
    pub pods: u32,
}

impl Default for HollowConfig {
    fn default() -> Self {
        Self {
            count: 1,
            prefix: "hollow".into(),
            lease_interval: Duration::from_secs(10),
            cpu: "4".into(),
            memory: "16Gi".into(),
            pods: 110,
        }
    }
}

impl HollowConfig {
    /// The name of node `i`.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    /// A fake, unique address for the `n`-th pod started on node `i` (in 100.64.0.0/10, which
    /// nothing routes here: nothing ever sends to it).
    pub fn pod_ip(i: usize, n: u32) -> Ipv4Addr {
        let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
        let node = u32::try_from(i % 16_384).unwrap_or(0);
        Ipv4Addr::from(base.wrapping_add(node << 8).wrapping_add(1 + n % 254))
    }
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn node_status(cfg: &HollowConfig, name: &str, ip: Ipv4Addr) -> Value {
    let now = now();
    let capacity = json!({"cpu": cfg.cpu, "memory": cfg.memory, "pods": cfg.pods.to_string()});
    json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "kubelet is posting ready status (hollow)",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": ip.to_string()}, {"type": "Hostname", "address": name}],
        "nodeInfo": {"kubeletVersion": KUBELET_VERSION, "operatingSystem": "linux", "architecture": "amd64",
                     "containerRuntimeVersion": "hollow://0", "kubeProxyVersion": "", "machineID": "",
                     "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "hollow"},
        "runtimeHandlers": RUNTIME_HANDLERS.iter().map(|h| json!({"name": h, "features": {}})).collect::<Vec<_>>(),
    }})
}

async fn register(client: &kube::Client, cfg: &HollowConfig, i: usize) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let name = cfg.node_name(i);
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                              "kubernetes.io/arch": "amd64", "skiff.dev/hollow": "true"}},
    }))
    .map_err(|e| AgentError::Client(e.to_string()))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(AgentError::api("registering a hollow node")(e)),
    }
    let ip = HollowConfig::pod_ip(i, 253);
    nodes
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(node_status(cfg, &name, ip)))
        .await
        .map_err(AgentError::api("updating a hollow node's status"))?;
    Ok(())
}

async fn renew(leases: &Api<Lease>, name: &str, interval: Duration) -> Result<(), kube::Error> {
    let renew = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let spec = json!({"holderIdentity": name, "leaseDurationSeconds": (interval.as_secs() * 4).max(40),
                      "renewTime": renew});
    match leases.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec}))).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": spec,
            }))
            .map_err(kube::Error::SerdeError)?;
            leases.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Renews every node's Lease each interval, [`CONCURRENCY`] at a time.
async fn keep_leases(client: kube::Client, cfg: HollowConfig) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut tick = tokio::time::interval(cfg.lease_interval);
    loop {
        tick.tick().await;
        futures::stream::iter(0..cfg.count)
            .for_each_concurrent(CONCURRENCY, |i| {
                let (leases, name) = (&leases, cfg.node_name(i));
                async move {
                    if let Err(e) = renew(leases, &name, cfg.lease_interval).await {
                        tracing::warn!(node = %name, error = %e, "renewing a hollow node's lease");
                    }
                }
            })
            .await;
    }
}

/// The status a hollow kubelet reports for a pod it "runs".
fn running_status(pod: &Pod, pod_ip: Ipv4Addr, host_ip: Ipv4Addr) -> Value {
    let now = now();
    let containers: Vec<Value> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "", "ready": true,
                   "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}})
        })
        .collect();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "lastProbeTime": null});
    json!({"status": {
        "phase": "Running", "podIP": pod_ip.to_string(), "podIPs": [{"ip": pod_ip.to_string()}],
        "hostIP": host_ip.to_string(), "hostIPs": [{"ip": host_ip.to_string()}], "startTime": now,
        "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
        "containerStatuses": containers, "qosClass": "BestEffort",
    }})
}

/// Registers the nodes, then keeps their Leases and "runs" their pods until the future is dropped.
pub async fn run(client: kube::Client, cfg: HollowConfig) -> Result<(), AgentError> {
    futures::stream::iter(0..cfg.count)
        .map(|i| {
            let (client, cfg) = (client.clone(), cfg.clone());
            async move { register(&client, &cfg, i).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    tracing::info!(nodes = cfg.count, prefix = %cfg.prefix, "hollow nodes registered");
    let leases = tokio::spawn(keep_leases(client.clone(), cfg.clone()));
    let result = run_pods(client, &cfg).await;
    leases.abort();
    result
}

/// One watch over every pod: a pod bound to a hollow node is reported Running once; a pod
/// being deleted is removed at once (nothing to stop).
async fn run_pods(client: kube::Client, cfg: &HollowConfig) -> Result<(), AgentError> {
    let index: HashMap<String, usize> = (0..cfg.count).map(|i| (cfg.node_name(i), i)).collect();
    let mut started: HashMap<usize, u32> = HashMap::new();
    // Pods whose Running status is written or waiting to be (by uid): reported once, again only
    // after a failed write.
    let reporting: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let pods: Api<Pod> = Api::all(client);
    let mut stream = std::pin::pin!(watcher(pods.clone(), watcher::Config::default()).applied_objects());
    while let Some(next) = stream.next().await {
        let pod = match next {
            Ok(pod) => pod,
            Err(e) => {
                tracing::warn!(error = %e, "hollow pod watch");
                continue;
            }
        };
        let Some(&i) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).and_then(|n| index.get(n)) else {
            continue;
        };
        let (Some(ns), Some(name)) = (pod.metadata.namespace.clone(), pod.metadata.name.clone()) else {
            continue;
        };
        let (ns, name): (String, String) = (ns, name);
        let api: Api<Pod> = Api::namespaced(pods.clone().into_client(), &ns);
        // Each write waits for its turn in a task of its own: the watch is read on at once, so a
        // busy server never makes this watch fall behind.
        let limit = Arc::clone(&limit);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            reporting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&uid);
            tokio::spawn(async move {
                let Ok(_permit) = limit.acquire_owned().await else { return };
                if let Err(e) =
                    api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await
                {
                    tracing::debug!(pod = %name, error = %e, "removing a hollow pod");
                }
            });
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Running" | "Succeeded" | "Failed"))
            || !reporting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(uid.clone())
        {
            continue;
        }
        let reporting = Arc::clone(&reporting);
        let n = started.entry(i).or_insert(0);
        *n = n.wrapping_add(1);
        let status = running_status(&pod, HollowConfig::pod_ip(i, *n), HollowConfig::pod_ip(i, 253));
        tokio::spawn(async move {
            let Ok(_permit) = limit.acquire_owned().await else { return };
            if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await {
                tracing::debug!(pod = %name, error = %e, "reporting a hollow pod Running");
                reporting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&uid);
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_distinct() {
        let cfg = HollowConfig { prefix: "h".into(), ..Default::default() };
        assert_eq!(cfg.node_name(7), "h-7");
        assert_eq!(HollowConfig::pod_ip(0, 1), Ipv4Addr::new(100, 64, 0, 2));
        assert_eq!(HollowConfig::pod_ip(1, 1), Ipv4Addr::new(100, 64, 1, 2));
        assert_ne!(HollowConfig::pod_ip(3, 1), HollowConfig::pod_ip(3, 2));
        assert!(HollowConfig::pod_ip(16_383, 300).octets()[0] == 100);
    }
}
