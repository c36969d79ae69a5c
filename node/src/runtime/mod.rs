//! The kubelet's runtime seam: what a container runtime must do for the pod worker.
//!
//! The pod worker owns the lifecycle (order, restarts, probes, status) and speaks only this interface.
//! Two implementations run Wasm containers, picked per node (`--wasm-runtime`): `wasm.rs` in-process on
//! wasmtime (one thread per pod inside its network namespace), and `containerd/` as containerd containers
//! with skiff's shim (`io.containerd.skiff.v1`, one shim process per pod), which reuses `wasm.rs` for the
//! argv/env rules and for exec probes. Linux containers run in `oci/` (runc through containerd). `dispatch.rs`
//! is what the pod worker holds: it sends each container to the runtime its image needs, so one pod can mix
//! Wasm and Linux containers (one sandbox: network namespace, IP, volumes).

pub mod containerd;
pub mod dispatch;
pub mod executor;
pub mod oci;
pub mod wasm;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::logs::LogWriter;
use crate::sandbox::Sandbox;

/// A directory the container sees at `container_path`.
#[derive(Clone, Debug)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// Everything needed to start one container of a pod (after images, volumes and env are resolved).
#[derive(Clone)]
pub struct Launch {
    pub name: String,
    pub image: String,
    /// `command` as Kubernetes gives it (replaces the image entrypoint); `None` keeps the image's.
    pub command: Option<Vec<String>>,
    /// `args` (replaces the image's cmd); `None` keeps the image's.
    pub args: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    pub memory_limit: Option<u64>,
    pub cpu_millis: Option<u32>,
    /// The first declared TCP container port: where an HTTP component is served.
    pub http_port: Option<u16>,
    pub log: Arc<LogWriter>,
    /// A private directory for this container (its copy of the image's files, if any).
    pub scratch_dir: PathBuf,
    /// What a Linux container takes from its pod beyond the fields above.
    pub linux: LinuxExtras,
}

/// The parts of the pod and container spec only Linux containers use.
#[derive(Clone, Debug, Default)]
pub struct LinuxExtras {
    /// The container's `securityContext`.
    pub security: Option<k8s_openapi::api::core::v1::SecurityContext>,
    /// The pod's `securityContext`.
    pub pod_security: Option<k8s_openapi::api::core::v1::PodSecurityContext>,
    /// The pod's hostname (`spec.hostname`, else its name).
    pub hostname: String,
    /// The pod's `/etc/resolv.conf` (its `dnsPolicy` and `dnsConfig` applied); Wasm guests' outgoing
    /// HTTP requests resolve with it too.
    pub resolv_conf: String,
    /// `namespace/name` of the pod (for messages).
    pub pod: String,
    /// The container's `stdin` (it gets a stdin `kubectl attach -i` writes to) and `tty`.
    pub stdin: bool,
    pub tty: bool,
    /// `lifecycle.stopSignal`: what the container is stopped with instead of the image's or SIGTERM.
    pub stop_signal: Option<String>,
    /// Where `Localhost` seccomp profiles are (`<data-dir>/seccomp`).
    pub seccomp_dir: PathBuf,
    /// An ephemeral container's `targetContainerName`: it joins that container's process
    /// namespace when the target is a running Linux container (`kubectl debug --target`).
    pub target: Option<String>,
    /// `resources.requests.cpu` in millicores: the container's CPU shares (its weight against the
    /// node's other containers when the CPU is contended), as the kubelet sets them.
    pub cpu_request_millis: Option<u32>,
}

/// How a container's run ended, in Kubernetes terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerExit {
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, `DeadlineExceeded`, `ContainerCannotRun`...
    pub reason: String,
    pub message: Option<String>,
}

impl ContainerExit {
    pub fn from_code(code: i32) -> Self {
        let reason = if code == 0 { "Completed" } else { "Error" };
        Self { exit_code: code, reason: reason.into(), message: None }
    }
}

/// The result of pulling (or finding) a container's image.
#[derive(Clone, Debug)]
pub struct ImageReady {
    pub image_id: String,
    pub pulled: bool,
}

/// Stops a running container: SIGTERM (or the runtime's equivalent) now, SIGKILL once the given grace
/// period has passed without an exit. Calling it again while a stop is under way does nothing.
pub type Stop = Arc<dyn Fn(std::time::Duration) + Send + Sync>;

/// A started container: a way to stop it and its exit.
pub struct Started {
    /// The container's id as `status.containerStatuses[].containerID` shows it (`containerd://<id>`),
    /// when the runtime has one; in-process Wasm containers have none (the worker names their runs).
    pub id: Option<String>,
    pub stop: Stop,
    pub exited: oneshot::Receiver<ContainerExit>,
    /// `containerStatuses[].stopSignal`: the signal a stop sends first, when the container or its
    /// image chose it (Linux containers); `None` for the default SIGTERM and for Wasm containers.
    pub stop_signal: Option<String>,
}

/// Why a container could not start (shown as the waiting reason and in an event).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Image(#[from] crate::image::ImageError),
    #[error("{0}")]
    Engine(#[from] skiff_engine::EngineError),
    #[error("{0}")]
    Containerd(#[from] containerd::ContainerdError),
    /// A Linux image could not be put into containerd.
    #[error("{0}")]
    ImageImport(#[from] oci::image_import::ImportError),
    /// The container's configuration is refused (`CreateContainerConfigError`, e.g. runAsNonRoot).
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Other(String),
}

impl RuntimeError {
    /// The Kubernetes waiting reason for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            RuntimeError::Image(_) | RuntimeError::ImageImport(_) => "ErrImagePull",
            RuntimeError::Config(_) => "CreateContainerConfigError",
            RuntimeError::Engine(_) | RuntimeError::Containerd(_) | RuntimeError::Other(_) => "CreateContainerError",
        }
    }
}

/// The output of an exec (probe) in a container.
#[derive(Clone, Debug)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub output: String,
}

/// A per-pod context the runtime keeps (for Wasm: the thread inside the pod's network namespace).
pub trait PodContext: Send + Sync {
    fn as_any(&self) -> &dyn std::any::Any;
}

#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Makes the image present, honouring the pull policy and pull secrets.
    async fn ensure_image(
        &self,
        image: &str,
        policy: crate::image::PullPolicy,
        auths: &[crate::image::RegistryAuth],
    ) -> Result<ImageReady, RuntimeError>;
    /// Prepares what the pod's containers share in this runtime.
    async fn pod_context(&self, pod_uid: &str, sandbox: &Sandbox) -> Result<Arc<dyn PodContext>, RuntimeError>;
    /// Starts a container; it runs until it exits or `stop` is called.
    async fn start(&self, pod: &Arc<dyn PodContext>, launch: Launch) -> Result<Started, RuntimeError>;
    /// Runs `command` in the container's context (exec probes), bounded by `timeout`.
    async fn exec(
        &self,
        pod: &Arc<dyn PodContext>,
        launch: &Launch,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<ExecOutput, RuntimeError>;
    /// Whether `exec` lifecycle hooks run in containers of `image` (Linux containers: yes; Wasm
    /// containers: not yet, their hooks are skipped with a Warning event).
    fn runs_exec_hooks(&self, _image: &str) -> bool {
        false
    }
    /// What a command run in the container sees, for a Wasm container (`kubectl exec`'s toolbox);
    /// `None` for containers of other runtimes.
    fn guest_world(&self, _launch: &Launch) -> Option<GuestWorld> {
        None
    }
    /// Runs `command` in a Wasm container's world with its output streamed and stdin fed
    /// (`kubectl exec`); the receiver gets the exit code.
    async fn exec_streaming(
        &self,
        _pod: &Arc<dyn PodContext>,
        _launch: &Launch,
        _command: &[String],
        _io: StreamIo,
    ) -> Result<tokio::sync::oneshot::Receiver<i32>, RuntimeError> {
        Err(RuntimeError::Other("streaming exec is not offered by this runtime".into()))
    }
    /// The stdin of a running Wasm container started with `stdin: true` (`kubectl attach -i`).
    fn attach_stdin(&self, _launch: &Launch) -> Option<GuestStdin> {
        None
    }
    /// The compile/instantiate counters and such, for /metrics.
    fn compiles(&self) -> u64;
    /// The running guests this runtime measures itself (in-process Wasm), for `/stats/summary`.
    fn guests(&self) -> Vec<GuestUsage> {
        Vec::new()
    }
}

/// What a command run in a Wasm container sees: its environment, its directories (volume mounts and
/// its copy of the image's files at `/`) and its working directory.
#[derive(Clone, Debug)]
pub struct GuestWorld {
    pub env: Vec<(String, String)>,
    pub dirs: Vec<Mount>,
    pub working_dir: Option<String>,
}

/// The writing end of a running Wasm container's stdin (`None` once it exited).
pub type GuestStdin = Arc<tokio::sync::Mutex<Option<tokio::io::DuplexStream>>>;

/// The streams and stop of a command run by [`ContainerRuntime::exec_streaming`].
pub struct StreamIo {
    /// What the guest reads on stdin (nothing when `None`).
    pub stdin: Option<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>>,
    pub stdout: Arc<dyn skiff_engine::OutputSink>,
    pub stderr: Arc<dyn skiff_engine::OutputSink>,
    /// Cancelled to kill the command (the client went away, the container stopped).
    pub cancel: tokio_util::sync::CancellationToken,
}

/// A running Wasm container and the engine's accounting of it ([`skiff_engine::Usage`]).
#[derive(Clone, Debug)]
pub struct GuestUsage {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// When this run of the container started.
    pub started: jiff::Timestamp,
    pub usage: Arc<skiff_engine::Usage>,
}
