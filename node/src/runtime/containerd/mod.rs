//! The containerd runtime: each Wasm container of a pod runs as a containerd container + task with runtime
//! `io.containerd.skiff.v1` (skiff's shim, one shim process per pod), on a root directory the kubelet
//! prepares, in the pod's network namespace, with its volumes, limits and logs as in-process. Images stay
//! in the kubelet's own store; exec probes run in-process on the kubelet's engine.

mod client;
pub mod exec;
mod spec;
mod store;
pub(crate) mod task;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

pub use client::{is_not_found, Client};

use super::wasm::WasmRuntime;
use super::{ContainerRuntime, ExecOutput, ImageReady, Launch, PodContext, RuntimeError, Started};
use crate::config::ContainerdConfig;
use crate::image::{ImageStore, PullPolicy, RegistryAuth};
use crate::sandbox::Sandbox;

/// The runtime name containerd resolves to `containerd-shim-skiff-v1` on its PATH.
pub const RUNTIME: &str = "io.containerd.skiff.v1";
/// containerd's limit on identifiers.
const MAX_ID: usize = 76;

/// Why containerd could not do what the kubelet asked.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("{0}")]
    Config(String),
    #[error("connecting to containerd at {address}: {reason}")]
    Connect { address: PathBuf, reason: String },
    #[error("containerd, {what} {id}: {message} ({code:?})")]
    Call { what: &'static str, id: String, code: tonic::Code, message: String },
    #[error("preparing the container: {0}")]
    Prepare(String),
}

/// Runs Wasm containers in containerd through skiff's shim.
pub struct ContainerdRuntime {
    client: Client,
    node: String,
    images: Arc<ImageStore>,
    /// For exec probes, which run in-process.
    wasm: WasmRuntime,
    runs: AtomicU64,
    /// Tells this agent run's container ids from a previous run's (hex of the start time).
    epoch: String,
}

/// A pod in this runtime: its sandbox's network namespace, and an in-process context made on the first exec.
pub struct ContainerdPod {
    uid: String,
    sandbox: Sandbox,
    exec: OnceCell<Arc<dyn PodContext>>,
}

impl PodContext for ContainerdPod {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl ContainerdRuntime {
    /// Connects to containerd; `wasm` (on the same image store) runs exec probes.
    pub async fn connect(
        config: &ContainerdConfig,
        node: &str,
        images: Arc<ImageStore>,
        wasm: WasmRuntime,
    ) -> Result<Self, ContainerdError> {
        let client = Client::connect(&config.address, &config.namespace).await?;
        tracing::info!(address = %config.address.display(), namespace = %config.namespace, "Wasm containers run in containerd");
        Ok(Self { client, node: node.to_string(), images, wasm, runs: AtomicU64::new(0), epoch: epoch() })
    }

    /// Removes every container of this node in the namespace (and its task). At agent start nothing of a
    /// previous run is adopted (its pods' containers are started anew), so all of them are orphans; at
    /// shutdown with teardown everything goes. Returns how many were removed.
    #[tracing::instrument(skip_all, fields(namespace = %self.client.namespace()))]
    pub async fn remove_all(&self) -> usize {
        remove_node_containers(&self.client, &self.node).await
    }

    /// Prepares the root and spec of `launch` and runs it as container `id`.
    async fn start_in(&self, pod: &ContainerdPod, launch: Launch, id: String) -> Result<Started, RuntimeError> {
        let image = self
            .images
            .cached(&launch.image)
            .ok_or_else(|| RuntimeError::Other(format!("image {} is not present", launch.image)))?;
        let root = {
            let (image, launch) = (Arc::clone(&image), launch.clone());
            tokio::task::spawn_blocking(move || spec::prepare_root(&image, &launch))
                .await
                .map_err(|e| RuntimeError::Other(e.to_string()))??
        };
        let spec = spec::build(&image, &launch, &root, &pod.sandbox.netns_path, &pod.uid);
        let spec = serde_json::to_vec(&spec).map_err(|e| RuntimeError::Other(format!("the container's spec: {e}")))?;
        let labels = HashMap::from([
            (task::NODE_LABEL.to_string(), self.node.clone()),
            (task::POD_LABEL.to_string(), pod.uid.clone()),
            (task::CONTAINER_LABEL.to_string(), launch.name.clone()),
        ]);
        let request = task::RunRequest {
            id,
            image: &launch.image,
            runtime: RUNTIME,
            spec,
            labels,
            io_dir: &launch.scratch_dir.join("io"),
            log: Arc::clone(&launch.log),
            memory_limited: launch.memory_limit.is_some(),
            stdin: false,
            terminal: false,
            // The shim ends a Wasm guest on any signal (docs/architecture.md, the guest's stop).
            stop_signal: task::SIGTERM,
            reported_stop_signal: None,
            snapshot: None,
        };
        Ok(task::run(&self.client, request).await?)
    }

    /// A containerd id for a run of container `name` of pod `uid`: unique per run, within containerd's rules.
    fn container_id(&self, uid: &str, name: &str) -> String {
        container_id(uid, name, &self.epoch, self.runs.fetch_add(1, Ordering::Relaxed))
    }
}

/// Tells this agent run's container ids from a previous run's: hex of the start time in milliseconds.
pub(crate) fn epoch() -> String {
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    format!("{:x}", millis & 0xffff_ffff)
}

/// Removes every container of `node` in the client's namespace (and its task): returns how many.
#[tracing::instrument(skip_all, fields(namespace = %client.namespace()))]
pub(crate) async fn remove_node_containers(client: &Client, node: &str) -> usize {
    let containers = match client.list_containers().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "listing containerd containers");
            return 0;
        }
    };
    let ours: Vec<(String, String)> = containers
        .into_iter()
        .filter(|c| c.labels.get(task::NODE_LABEL).is_some_and(|n| n == node))
        .map(|c| (c.id, c.snapshotter))
        .collect();
    let removals = ours.iter().map(|(id, snapshotter)| task::cleanup(client, id, Some(snapshotter)));
    futures::future::join_all(removals).await;
    if !ours.is_empty() {
        tracing::info!(removed = ours.len(), "removed containerd containers");
    }
    ours.len()
}

/// `<pod uid>-<container name>-<epoch>-<run>`, the name cut to fit containerd's 76 characters and reduced
/// to its identifier rules (alphanumerics joined by single separators).
pub(crate) fn container_id(uid: &str, name: &str, epoch: &str, run: u64) -> String {
    let mut clean = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            clean.push(c);
        } else if !clean.ends_with('-') && !clean.is_empty() {
            clean.push('-');
        }
    }
    let suffix = format!("-{epoch}-{run}");
    let room = MAX_ID.saturating_sub(uid.len() + 1 + suffix.len());
    let clean: String = clean.chars().take(room).collect();
    let clean = clean.trim_end_matches('-');
    let uid: String = uid.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    if clean.is_empty() {
        format!("{uid}{suffix}")
    } else {
        format!("{uid}-{clean}{suffix}")
    }
}

fn pod_of(pod: &Arc<dyn PodContext>) -> Result<&ContainerdPod, RuntimeError> {
    pod.as_any()
        .downcast_ref::<ContainerdPod>()
        .ok_or_else(|| RuntimeError::Other("not a containerd pod context".into()))
}

#[async_trait::async_trait]
impl ContainerRuntime for ContainerdRuntime {
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        auths: &[RegistryAuth],
    ) -> Result<ImageReady, RuntimeError> {
        // The shim compiles (and caches) the module itself: the kubelet only needs the files.
        let pulled = self.images.ensure(image, policy, auths.first()).await?;
        Ok(ImageReady { image_id: pulled.image.image_id.clone(), pulled: pulled.pulled })
    }

    async fn pod_context(&self, pod_uid: &str, sandbox: &Sandbox) -> Result<Arc<dyn PodContext>, RuntimeError> {
        Ok(Arc::new(ContainerdPod { uid: pod_uid.to_string(), sandbox: sandbox.clone(), exec: OnceCell::new() }))
    }

    async fn start(&self, pod: &Arc<dyn PodContext>, launch: Launch) -> Result<Started, RuntimeError> {
        let pod = pod_of(pod)?;
        let id = self.container_id(&pod.uid, &launch.name);
        let span = tracing::info_span!("containerd_start", id = %id, container = %launch.name);
        tracing::Instrument::instrument(self.start_in(pod, launch, id), span).await
    }

    async fn exec(
        &self,
        pod: &Arc<dyn PodContext>,
        launch: &Launch,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let containerd_pod = pod_of(pod)?;
        let context = containerd_pod
            .exec
            .get_or_try_init(|| self.wasm.pod_context(&containerd_pod.uid, &containerd_pod.sandbox))
            .await?;
        self.wasm.exec(context, launch, command, timeout).await
    }

    fn compiles(&self) -> u64 {
        self.wasm.compiles()
    }
}

#[cfg(test)]
mod tests {
    use super::container_id;

    #[test]
    fn container_ids_follow_containerds_rules() {
        let uid = "0b357d5f-9e10-4e11-9144-7d390ef1807e";
        assert_eq!(container_id(uid, "web", "1a2b", 7), format!("{uid}-web-1a2b-7"));
        let long = container_id(uid, &format!("a--b{}", "x".repeat(80)), "ffffffff", 12345);
        assert!(long.len() <= 76, "{long}");
        assert!(long.starts_with(&format!("{uid}-a-bxx")) && long.ends_with("-ffffffff-12345"), "{long}");
        assert!(!long.contains("--"), "{long}");
        assert_eq!(container_id(uid, "--", "e", 0), format!("{uid}-e-0"));
    }
}
