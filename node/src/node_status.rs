//! The Node object: registration with capacity, addresses, node info and runtime handlers; status refresh.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use crate::config::AgentConfig;
use crate::error::AgentError;

/// The runtime handlers every node offers (`status.runtimeHandlers`): the default one and the Wasm one.
pub const RUNTIME_HANDLERS: [&str; 2] = ["", "skiff-wasm"];
/// The handler of Linux containers (runc), offered only by nodes with containerd: a RuntimeClass naming it
/// is never bound to a Wasm-only node.
pub const LINUX_HANDLER: &str = "runc";

/// The handlers `config`'s node offers.
pub fn runtime_handlers(config: &AgentConfig) -> Vec<&'static str> {
    let mut handlers = RUNTIME_HANDLERS.to_vec();
    if config.linux_runtime != crate::config::LinuxRuntimeConfig::Off {
        handlers.push(LINUX_HANDLER);
    }
    handlers
}

/// The kubelet version this agent reports.
pub const KUBELET_VERSION: &str = "v1.32.0-skiff";

/// Creates the Node if it is missing, then writes its status.
#[tracing::instrument(skip_all, fields(node = %config.node_name))]
pub async fn register(client: &kube::Client, config: &AgentConfig, kubelet_port: u16) -> Result<(), AgentError> {
    create(client, config).await?;
    refresh(client, config, kubelet_port).await
}

/// Creates the Node (labels, annotations, and the pod CIDR when the agent was given one) unless
/// it exists. Without a status it is not Ready: nothing is scheduled to it yet.
pub async fn create(client: &kube::Client, config: &AgentConfig) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let spec = match config.pod_cidr.as_str() {
        "" => json!({}),
        cidr => json!({"podCIDR": cidr, "podCIDRs": [cidr]}),
    };
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": config.node_name,
            // Where the local-path provisioner puts this node's volumes.
            "annotations": {"skiff.io/local-storage-path": config.data_dir.join("storage").to_string_lossy()},
            "labels": {
            "kubernetes.io/hostname": config.node_name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        }},
        "spec": spec,
    }))
    .map_err(|e| AgentError::Client(e.to_string()))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!("node registered"),
        Err(kube::Error::Api(e)) if e.code == 409 => tracing::debug!("node already registered"),
        Err(e) => return Err(AgentError::api("registering the node")(e)),
    }
    Ok(())
}

/// Writes the Node's status: capacity, conditions (Ready), addresses, endpoints, node info, handlers.
pub async fn refresh(client: &kube::Client, config: &AgentConfig, kubelet_port: u16) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(&config.node_name, &PatchParams::default(), &Patch::Merge(status(config, kubelet_port)))
        .await
        .map_err(AgentError::api("updating the node status"))?;
    Ok(())
}

fn status(config: &AgentConfig, kubelet_port: u16) -> Value {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let memory = memory_kib().map(|k| format!("{k}Ki")).unwrap_or_else(|| "1Gi".into());
    let capacity = json!({"cpu": cpus.to_string(), "memory": memory, "pods": config.pod_capacity().to_string(),
                          "ephemeral-storage": "10Gi"});
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": config.node_ip.to_string()},
                      {"type": "Hostname", "address": config.node_name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": read_trimmed("/etc/machine-id"), "systemUUID": read_trimmed("/etc/machine-id"),
            "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"), "osImage": os_image(),
            "containerRuntimeVersion": format!("skiff-wasm://{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        },
        "runtimeHandlers": runtime_handlers(config).iter().map(|h| json!({"name": h, "features": {}})).collect::<Vec<_>>(),
    }})
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn os_image() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

fn memory_kib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
