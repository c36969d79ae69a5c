//! The OCI runtime: Linux containers as containerd containers + tasks with runtime `io.containerd.runc.v2`
//! (runc), through the same client and task code as Wasm-in-containerd (fifos into CRI-format logs, wait,
//! SIGTERM then SIGKILL, OOMKilled). Images are put into containerd's content store and snapshotter
//! (`image_import.rs`); each run gets a fresh writable snapshot on the image's top layer as its root
//! filesystem (removed with the container), the pod's network namespace, its IPC and UTS namespaces
//! shared with the pod's other Linux containers (`pod_namespaces.rs`), its volumes as bind mounts and
//! kubelet-written /etc/hosts, /etc/resolv.conf and /etc/hostname.

mod content;
mod exec_output;
pub mod image_files;
pub mod image_import;
mod lazy;
mod managed;
pub mod pod_namespaces;
pub mod seccomp;
pub mod spec;
pub mod stop_signal;

pub use lazy::LazyOci;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::containerd::{self, task, Client, ContainerdError};
use super::{ContainerRuntime, ExecOutput, ImageReady, Launch, PodContext, RuntimeError, Started};
use crate::config::ContainerdConfig;
use crate::image::{ImageStore, PullPolicy, RegistryAuth, WasmImage};
use crate::sandbox::Sandbox;
use pod_namespaces::PodNamespaces;

/// The runtime name containerd resolves to `containerd-shim-runc-v2`.
pub const RUNTIME: &str = "io.containerd.runc.v2";
/// The cgroup parent of every Linux container (`/skiff/<container id>`).
const CGROUP_PARENT: &str = "/skiff";
/// Where the shim mounts a container's snapshot, relative to its bundle (the spec's root path).
const ROOTFS_IN_BUNDLE: &str = "rootfs";

/// Runs Linux containers in containerd with runc.
pub struct OciRuntime {
    client: Client,
    node: String,
    images: Arc<ImageStore>,
    runs: AtomicU64,
    epoch: String,
    /// Where pods' IPC and UTS namespaces are pinned.
    podns_root: PathBuf,
    importer: image_import::Importer,
}

/// A pod in this runtime: its uid and sandbox (network namespace and IP), and the IPC and UTS
/// namespaces its Linux containers share (made with the first one, released with this context).
pub struct OciPod {
    uid: String,
    sandbox: Sandbox,
    namespaces: tokio::sync::OnceCell<PodNamespaces>,
}

impl OciPod {
    /// The context of pod `uid` on `sandbox`.
    pub fn new(uid: &str, sandbox: &Sandbox) -> Self {
        Self { uid: uid.to_string(), sandbox: sandbox.clone(), namespaces: tokio::sync::OnceCell::new() }
    }
}

impl PodContext for OciPod {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl OciRuntime {
    /// Connects to containerd (the kubelet's namespace of `config`); pods' IPC and UTS namespaces
    /// are pinned under `podns_root`.
    pub async fn connect(
        config: &ContainerdConfig,
        node: &str,
        images: Arc<ImageStore>,
        podns_root: PathBuf,
    ) -> Result<Self, ContainerdError> {
        let client = Client::connect(&config.address, &config.namespace).await?;
        images.set_layer_holder(Arc::new(content::ContentStore::new(client.clone())));
        Ok(Self {
            client,
            node: node.to_string(),
            images,
            runs: AtomicU64::new(0),
            epoch: containerd::epoch(),
            podns_root,
            importer: image_import::Importer::default(),
        })
    }

    /// Puts Linux image `image` (pulled into the node's cache) into containerd, unless it is there.
    pub async fn import(&self, image: &WasmImage) -> Result<image_import::Imported, image_import::ImportError> {
        self.importer.ensure(&self.client, &self.images, image).await
    }

    /// Deletes the image records of `references` (image garbage collection): containerd then
    /// collects the blobs and snapshots no other image or container holds.
    pub async fn remove_images(&self, references: &[String]) {
        for reference in references {
            self.importer.forget(reference);
            if let Err(e) = self.client.delete_image(reference).await {
                tracing::warn!(error = %e, image = %reference, "deleting an image from containerd");
            }
        }
    }

    /// Removes every container of this node in the namespace (a previous run's, or all at teardown),
    /// and the pod namespaces a previous run left.
    pub async fn remove_all(&self) -> usize {
        let removed = containerd::remove_node_containers(&self.client, &self.node).await;
        let podns_root = self.podns_root.clone();
        let swept = tokio::task::spawn_blocking(move || pod_namespaces::sweep(&podns_root)).await.unwrap_or(0);
        if swept > 0 {
            tracing::info!(pods = swept, "removed pod namespaces a previous run left");
        }
        removed
    }

    /// The newest containerd container (id, OCI spec JSON) of the Linux container `container` of pod
    /// `pod` (`namespace/name`) on this node.
    pub async fn find(&self, pod: &str, container: &str) -> Result<Option<(String, Vec<u8>)>, ContainerdError> {
        let label = |c: &containerd_client::services::v1::Container, key: &str| c.labels.get(key).cloned();
        let newest = self
            .client
            .list_containers()
            .await?
            .into_iter()
            .filter(|c| {
                label(c, task::NODE_LABEL).as_deref() == Some(self.node.as_str())
                    && label(c, task::POD_NAME_LABEL).as_deref() == Some(pod)
                    && label(c, task::CONTAINER_LABEL).as_deref() == Some(container)
            })
            .max_by_key(|c| c.created_at.as_ref().map(|t| (t.seconds, t.nanos)));
        Ok(newest.map(|c| (c.id, c.spec.map(|s| s.value).unwrap_or_default())))
    }

    /// This node's Linux containers in containerd, the newest run of each pod's container only (for
    /// `/stats/summary`; a run's cgroup is gone once runc deleted it).
    pub async fn containers(&self) -> Result<Vec<LinuxContainer>, ContainerdError> {
        let mut newest: HashMap<(String, String), LinuxContainer> = HashMap::new();
        for c in self.client.list_containers().await? {
            let label = |key: &str| c.labels.get(key).cloned().unwrap_or_default();
            if label(task::NODE_LABEL) != self.node {
                continue;
            }
            let created = c
                .created_at
                .as_ref()
                .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let found = LinuxContainer {
                cgroup: format!("{CGROUP_PARENT}/{}", c.id),
                id: c.id.clone(),
                pod_uid: label(task::POD_LABEL),
                pod: label(task::POD_NAME_LABEL),
                container: label(task::CONTAINER_LABEL),
                created,
            };
            let key = (found.pod.clone(), found.container.clone());
            if newest.get(&key).is_none_or(|old| old.created < found.created) {
                newest.insert(key, found);
            }
        }
        Ok(newest.into_values().collect())
    }

    /// Resizes the terminal of container `id`'s own process (a `tty: true` container).
    pub async fn resize(&self, id: &str, width: u16, height: u16) -> Result<(), ContainerdError> {
        self.client.resize_exec(id, "", width.into(), height.into()).await
    }

    /// Starts `req` in the running Linux container `container` of pod `pod` (`namespace/name`) on this
    /// node; `None` when this runtime runs no such container. Fifos go in the system's temporary
    /// directory (`skiff-exec/`, 0700) and are removed when the process ends.
    pub async fn exec_in(
        &self,
        pod: &str,
        container: &str,
        req: &crate::streaming::ExecRequest,
    ) -> Result<Option<crate::streaming::Process>, ContainerdError> {
        let Some((id, spec)) = self.find(pod, container).await? else { return Ok(None) };
        let io_dir = std::env::temp_dir().join("skiff-exec");
        containerd::exec::start(&self.client, &id, &spec, &io_dir, req).await.map(Some)
    }

    /// The process namespace of `launch`'s target (`kubectl debug --target`) when it is a running
    /// Linux container of the same pod; `None` otherwise (a Wasm target has no processes).
    async fn target_pid_namespace(&self, launch: &Launch) -> Option<PathBuf> {
        let target = launch.linux.target.as_deref()?;
        let found = self.find(&launch.linux.pod, target).await.ok().flatten();
        let Some((id, _)) = found else {
            tracing::info!(target, "the debug target is not a Linux container: no process namespace to share");
            return None;
        };
        match self.client.task_pid(&id).await {
            Ok(pid) if pid > 0 => Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))),
            Ok(_) => None,
            Err(e) => {
                tracing::info!(target, error = %e, "the debug target has no running task");
                None
            }
        }
    }

    async fn start_in(&self, pod: &OciPod, launch: Launch, id: String) -> Result<Started, RuntimeError> {
        let image = self
            .images
            .cached(&launch.image)
            .ok_or_else(|| RuntimeError::Other(format!("image {} is not present", launch.image)))?;
        let imported = self.import(&image).await?;
        let scratch = launch.scratch_dir.clone();
        let (ip, hostname, resolv_conf) =
            (pod.sandbox.ip, launch.linux.hostname.clone(), launch.linux.resolv_conf.clone());
        let namespaces = pod
            .namespaces
            .get_or_try_init(|| PodNamespaces::create(&self.podns_root, &pod.uid, &launch.linux.hostname))
            .await
            .map_err(|e| RuntimeError::Other(e.to_string()))?;
        let etc = tokio::task::spawn_blocking(move || etc_files(&scratch, ip, &hostname, &resolv_conf))
            .await
            .map_err(|e| RuntimeError::Other(e.to_string()))??;
        let input = spec::SpecInput {
            rootfs: Path::new(ROOTFS_IN_BUNDLE),
            image_files: &imported.files,
            netns: &pod.sandbox.netns_path,
            etc: &etc,
            cgroups_path: format!("{CGROUP_PARENT}/{id}"),
            pid_namespace: self.target_pid_namespace(&launch).await,
            ipc_namespace: Some(&namespaces.ipc),
            uts_namespace: Some(&namespaces.uts),
        };
        let built = spec::build(&image, &launch, &input).map_err(|e| match e {
            spec::SpecError::Config(m) => RuntimeError::Config(m),
            spec::SpecError::Invalid(m) => RuntimeError::Other(m),
        })?;
        let spec = serde_json::to_vec(&built).map_err(|e| RuntimeError::Other(format!("the container's spec: {e}")))?;
        let labels = HashMap::from([
            (task::NODE_LABEL.to_string(), self.node.clone()),
            (task::POD_LABEL.to_string(), pod.uid.clone()),
            (task::CONTAINER_LABEL.to_string(), launch.name.clone()),
            (task::POD_NAME_LABEL.to_string(), launch.linux.pod.clone()),
        ]);
        let request = task::RunRequest {
            id,
            image: &image.reference,
            runtime: RUNTIME,
            spec,
            labels,
            io_dir: &launch.scratch_dir.join("io"),
            log: Arc::clone(&launch.log),
            memory_limited: launch.memory_limit.is_some(),
            stdin: launch.linux.stdin,
            terminal: launch.linux.tty,
            stop_signal: stop_signal::choose(launch.linux.stop_signal.as_deref(), image.stop_signal.as_deref()),
            reported_stop_signal: stop_signal::reported(
                launch.linux.stop_signal.as_deref(),
                image.stop_signal.as_deref(),
            ),
            snapshot: Some(task::RootSnapshot { snapshotter: image_import::SNAPSHOTTER, parent: &imported.top }),
        };
        let started = task::run(&self.client, request).await;
        if let Err(e) = &started {
            if containerd::is_not_found(e) {
                // The image's layers went missing in containerd (removed behind the node's back):
                // the next start imports them again.
                self.importer.forget(&image.reference);
            }
        }
        Ok(started?)
    }
}

/// A Linux container of this node, as its containerd labels name it.
#[derive(Clone, Debug)]
pub struct LinuxContainer {
    pub id: String,
    pub pod_uid: String,
    /// `namespace/name` of its pod.
    pub pod: String,
    pub container: String,
    pub created: jiff::Timestamp,
    /// Its cgroup as given to runc.
    pub cgroup: String,
}

/// The /etc files of the pod (`resolv_conf`: the text the pod's DNS policy gives), written into the
/// run's scratch directory.
fn etc_files(
    scratch: &Path,
    ip: std::net::IpAddr,
    hostname: &str,
    resolv_conf: &str,
) -> Result<spec::EtcFiles, RuntimeError> {
    let io =
        |what: &str, path: &Path, e: std::io::Error| RuntimeError::Other(format!("{what} {}: {e}", path.display()));
    let etc_dir = scratch.join("etc");
    std::fs::create_dir_all(&etc_dir).map_err(|e| io("creating", &etc_dir, e))?;
    let etc = spec::EtcFiles {
        hosts: etc_dir.join("hosts"),
        resolv_conf: etc_dir.join("resolv.conf"),
        hostname: etc_dir.join("hostname"),
    };
    std::fs::write(&etc.hosts, spec::hosts_file(ip, hostname)).map_err(|e| io("writing", &etc.hosts, e))?;
    std::fs::write(&etc.resolv_conf, resolv_conf).map_err(|e| io("writing", &etc.resolv_conf, e))?;
    std::fs::write(&etc.hostname, format!("{hostname}\n")).map_err(|e| io("writing", &etc.hostname, e))?;
    Ok(etc)
}

fn pod_of(pod: &Arc<dyn PodContext>) -> Result<&OciPod, RuntimeError> {
    pod.as_any().downcast_ref::<OciPod>().ok_or_else(|| RuntimeError::Other("not an OCI pod context".into()))
}

#[async_trait::async_trait]
impl ContainerRuntime for OciRuntime {
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        auths: &[RegistryAuth],
    ) -> Result<ImageReady, RuntimeError> {
        let pulled = self.images.ensure(image, policy, auths.first()).await?;
        self.import(&pulled.image).await?;
        Ok(ImageReady { image_id: pulled.image.image_id.clone(), pulled: pulled.pulled })
    }

    async fn pod_context(&self, pod_uid: &str, sandbox: &Sandbox) -> Result<Arc<dyn PodContext>, RuntimeError> {
        Ok(Arc::new(OciPod::new(pod_uid, sandbox)))
    }

    async fn start(&self, pod: &Arc<dyn PodContext>, launch: Launch) -> Result<Started, RuntimeError> {
        let pod = pod_of(pod)?;
        let id =
            containerd::container_id(&pod.uid, &launch.name, &self.epoch, self.runs.fetch_add(1, Ordering::Relaxed));
        let span = tracing::info_span!("oci_start", id = %id, container = %launch.name);
        tracing::Instrument::instrument(self.start_in(pod, launch, id), span).await
    }

    async fn exec(
        &self,
        _pod: &Arc<dyn PodContext>,
        launch: &Launch,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let req = crate::streaming::ExecRequest {
            command: command.to_vec(),
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let span = tracing::debug_span!("oci_exec", container = %launch.name);
        let started =
            tracing::Instrument::instrument(self.exec_in(&launch.linux.pod, &launch.name, &req), span).await?;
        let Some(process) = started else {
            return Err(RuntimeError::Other(format!("container {} is not running", launch.name)));
        };
        exec_output::collect(process, timeout).await
    }

    fn runs_exec_hooks(&self, _image: &str) -> bool {
        true
    }

    fn compiles(&self) -> u64 {
        0
    }
}
