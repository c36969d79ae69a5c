//! One container run through containerd: fifos for stdout and stderr copied into the container's log, the
//! container and its task created and started, then (in the background) the wait for its exit, the log
//! drained, the task and container deleted, and the exit reported. Stopping is SIGTERM, then SIGKILL after the
//! grace period the pod worker gives (the pod's, less what a preStop hook used).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::client::{self, Client, NewContainer};
use super::ContainerdError;
use crate::logs::{LogWriter, Stream};
use crate::runtime::{ContainerExit, Started};

/// The default stop signal, and SIGKILL.
pub const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;
/// How long a task killed during cleanup gets to be reaped before it is deleted again.
const CLEANUP_WAIT: Duration = Duration::from_secs(10);
/// How long the log copy may lag behind the task's exit.
const DRAIN_BOUND: Duration = Duration::from_secs(5);
/// How often a Wait cut off (containerd restarting) is retried before the container counts as lost.
const WAIT_RETRIES: u32 = 30;

/// Labels on every container the kubelet makes: whose it is.
pub const NODE_LABEL: &str = "skiff.io/node";
pub const POD_LABEL: &str = "skiff.io/pod-uid";
pub const CONTAINER_LABEL: &str = "skiff.io/container";
/// `namespace/name` of the pod (Linux containers: what `kubectl exec` finds them by).
pub const POD_NAME_LABEL: &str = "skiff.io/pod";

/// What `run` needs besides the client.
pub struct RunRequest<'a> {
    pub id: String,
    pub image: &'a str,
    pub runtime: &'a str,
    pub spec: Vec<u8>,
    pub labels: HashMap<String, String>,
    /// Where the fifos go.
    pub io_dir: &'a Path,
    pub log: Arc<LogWriter>,
    /// The container has a memory limit (an exit by SIGKILL nobody sent is then an OOM kill).
    pub memory_limited: bool,
    /// A stdin fifo for `kubectl attach -i` ([`stdin_of`]); a terminal (its output on stdout).
    pub stdin: bool,
    pub terminal: bool,
    /// What a stop sends first (SIGTERM unless the container or its image names another).
    pub stop_signal: u32,
    /// The stop signal as the container's status reports it (only when chosen, not defaulted).
    pub reported_stop_signal: Option<String>,
    /// A root filesystem from the snapshotter (the spec's root is then `rootfs`, where the shim
    /// mounts it); `None`: the spec names a directory.
    pub snapshot: Option<RootSnapshot<'a>>,
}

/// A container's writable snapshot: keyed by the container's id, on an image's committed top layer.
#[derive(Clone, Copy)]
pub struct RootSnapshot<'a> {
    pub snapshotter: &'a str,
    pub parent: &'a str,
}

/// A running task's stdin, shared by attached clients.
pub type SharedStdin = Arc<tokio::sync::Mutex<Option<pipe::Sender>>>;

/// The stdins of this kubelet's running tasks that have one, by container id.
static STDINS: std::sync::LazyLock<parking_lot::Mutex<HashMap<String, SharedStdin>>> =
    std::sync::LazyLock::new(Default::default);

/// The stdin of the running container `id`, if it was made with one.
pub fn stdin_of(id: &str) -> Option<SharedStdin> {
    STDINS.lock().get(id).cloned()
}

/// Creates and starts the container; its exit arrives on the returned [`Started`].
pub async fn run(client: &Client, req: RunRequest<'_>) -> Result<Started, ContainerdError> {
    let id = req.id.clone();
    let fifos = Fifos::make(req.io_dir, &id, req.stdin)?;
    let snapshotter = req.snapshot.map(|s| s.snapshotter.to_string());
    let new = NewContainer {
        id: &id,
        image: req.image,
        runtime: req.runtime,
        spec: req.spec,
        labels: req.labels,
        snapshot: req.snapshot.map(|s| (s.snapshotter, id.as_str())),
    };
    client.create_container(new).await?;
    let created = async {
        let rootfs = match req.snapshot {
            Some(s) => client.prepare_snapshot(s.snapshotter, &id, s.parent).await?,
            None => Vec::new(),
        };
        // Read ends first, so the shim's write-only open finds a reader.
        let mut receivers = fifos.open()?;
        let stdin = match &fifos.stdin {
            // Read-write: the open does not wait for the shim; dropping it is the container's EOF.
            Some(path) => Some(
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(path)
                    .map_err(|e| ContainerdError::Prepare(format!("{}: {e}", path.display())))?,
            ),
            None => None,
        };
        if req.terminal {
            receivers.retain(|(_, stream)| *stream == Stream::Stdout);
        }
        let stderr = (!req.terminal).then_some(fifos.stderr.as_path());
        client.create_task_io(&id, fifos.stdin.as_deref(), &fifos.stdout, stderr, req.terminal, rootfs).await?;
        if let Some(sender) = stdin {
            STDINS.lock().insert(id.clone(), Arc::new(tokio::sync::Mutex::new(Some(sender))));
        }
        // The shim opened the write ends during Create: from now on a read sees data or, at the end, EOF.
        let pumps: Vec<JoinHandle<()>> =
            receivers.into_iter().map(|(r, stream)| tokio::spawn(copy(r, Arc::clone(&req.log), stream))).collect();
        if let Err(e) = client.start_task(&id).await {
            for p in &pumps {
                p.abort();
            }
            return Err(e);
        }
        Ok(pumps)
    };
    let pumps = match created.await {
        Ok(pumps) => pumps,
        Err(e) => {
            STDINS.lock().remove(&id);
            cleanup(client, &id, snapshotter.as_deref()).await;
            fifos.remove();
            return Err(e);
        }
    };
    let done = CancellationToken::new();
    let stopping = Arc::new(AtomicBool::new(false));
    let (exit_tx, exited) = oneshot::channel();
    let waiter = Waiter {
        client: client.clone(),
        id: id.clone(),
        log: req.log,
        pumps,
        fifos,
        done: done.clone(),
        stopping: Arc::clone(&stopping),
        memory_limited: req.memory_limited,
        snapshotter,
    };
    tokio::spawn(
        async move {
            let exit = waiter.wait().await;
            let _ = exit_tx.send(exit);
        }
        .instrument(tracing::info_span!("containerd_task", id = %id)),
    );
    let handle = tokio::runtime::Handle::current();
    let (stop_client, stop_id, signal) = (client.clone(), req.id, req.stop_signal);
    let stop: crate::runtime::Stop = Arc::new(move |grace: Duration| {
        if stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let (client, id, done) = (stop_client.clone(), stop_id.clone(), done.clone());
        handle.spawn(
            async move { stop(&client, &id, &done, grace, signal).await }
                .instrument(tracing::info_span!("containerd_stop", id = %stop_id, grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX))),
        );
    });
    Ok(Started { id: Some(format!("containerd://{}", id)), stop, exited, stop_signal: req.reported_stop_signal })
}

/// The stop signal (SIGTERM unless the container chose another), then SIGKILL unless the task
/// ended within `grace` (a zero grace is SIGKILL at once).
async fn stop(client: &Client, id: &str, done: &CancellationToken, grace: Duration, signal: u32) {
    if !grace.is_zero() {
        if let Err(e) = client.kill_task(id, signal).await {
            tracing::warn!(error = %e, signal, "sending the stop signal");
        }
    }
    // `timeout` takes any duration: one past the clock's range never fires.
    if tokio::time::timeout(grace, done.cancelled()).await.is_err() {
        tracing::info!("the grace period ended: sending SIGKILL");
        if let Err(e) = client.kill_task(id, SIGKILL).await {
            tracing::warn!(error = %e, "sending SIGKILL");
        }
    }
}

/// Kills (if running) and deletes the task, then deletes the container and its snapshot (key `id`
/// in `snapshotter`); failures are logged.
pub async fn cleanup(client: &Client, id: &str, snapshotter: Option<&str>) {
    if let Err(e) = client.delete_task(id).await {
        // Still running: kill it and wait (bounded) before deleting again.
        tracing::debug!(error = %e, "deleting the task; killing it first");
        let _ = client.kill_task(id, SIGKILL).await;
        let _ = tokio::time::timeout(CLEANUP_WAIT, client.wait_task(id)).await;
        if let Err(e) = client.delete_task(id).await {
            tracing::warn!(error = %e, "deleting a task");
        }
    }
    if let Err(e) = client.delete_container(id).await {
        tracing::warn!(error = %e, "deleting a container");
    }
    if let Some(snapshotter) = snapshotter.filter(|s| !s.is_empty()) {
        if let Err(e) = client.remove_snapshot(snapshotter, id).await {
            tracing::warn!(error = %e, "removing a container's snapshot");
        }
    }
}

/// The background half of a run: waits for the exit, drains the log, removes the task and container.
struct Waiter {
    client: Client,
    id: String,
    log: Arc<LogWriter>,
    pumps: Vec<JoinHandle<()>>,
    fifos: Fifos,
    done: CancellationToken,
    stopping: Arc<AtomicBool>,
    memory_limited: bool,
    /// Where the container's root snapshot is (removed with it).
    snapshotter: Option<String>,
}

impl Waiter {
    async fn wait(self) -> ContainerExit {
        let status = self.exit_status().await;
        STDINS.lock().remove(&self.id);
        self.done.cancel();
        let drain = futures::future::join_all(self.pumps);
        if tokio::time::timeout(DRAIN_BOUND, drain).await.is_err() {
            tracing::warn!("the container's output did not end with its task");
        }
        let _ = self.log.flush();
        cleanup(&self.client, &self.id, self.snapshotter.as_deref()).await;
        self.fifos.remove();
        let exit = match status {
            Some(code) => exit_of(code, self.stopping.load(Ordering::SeqCst), self.memory_limited),
            None => ContainerExit {
                exit_code: 137,
                reason: "Error".into(),
                message: Some("containerd lost the container's task".into()),
            },
        };
        tracing::info!(code = exit.exit_code, reason = %exit.reason, "task ended");
        exit
    }

    /// The task's exit status; `None` when containerd no longer knows it.
    async fn exit_status(&self) -> Option<u32> {
        for _ in 0..WAIT_RETRIES {
            match self.client.wait_task(&self.id).await {
                Ok(code) => return Some(code),
                Err(e) if client::is_not_found(&e) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for the task; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        None
    }
}

/// The Kubernetes view of a task's exit status.
fn exit_of(code: u32, stopped: bool, memory_limited: bool) -> ContainerExit {
    let code = i32::try_from(code).unwrap_or(255);
    if code == 137 && !stopped && memory_limited {
        return ContainerExit {
            exit_code: 137,
            reason: "OOMKilled".into(),
            message: Some("the module tried to grow its memory past resources.limits.memory".into()),
        };
    }
    ContainerExit::from_code(code)
}

/// The stdout and stderr fifos of one run.
struct Fifos {
    stdin: Option<PathBuf>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Fifos {
    fn make(dir: &Path, id: &str, stdin: bool) -> Result<Self, ContainerdError> {
        let io = |path: &Path, e: std::io::Error| ContainerdError::Prepare(format!("{}: {e}", path.display()));
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let fifos = Fifos {
            stdin: stdin.then(|| dir.join(format!("{id}.stdin"))),
            stdout: dir.join(format!("{id}.stdout")),
            stderr: dir.join(format!("{id}.stderr")),
        };
        for path in [&fifos.stdout, &fifos.stderr].into_iter().chain(fifos.stdin.as_ref()) {
            let _ = std::fs::remove_file(path);
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| io(path, std::io::Error::from(e)))?;
        }
        Ok(fifos)
    }

    /// Opens the read ends (they do not wait for a writer).
    fn open(&self) -> Result<Vec<(pipe::Receiver, Stream)>, ContainerdError> {
        let mut receivers = Vec::new();
        for (path, stream) in [(&self.stdout, Stream::Stdout), (&self.stderr, Stream::Stderr)] {
            let receiver = pipe::OpenOptions::new()
                .open_receiver(path)
                .map_err(|e| ContainerdError::Prepare(format!("{}: {e}", path.display())))?;
            receivers.push((receiver, stream));
        }
        Ok(receivers)
    }

    fn remove(&self) {
        if let Some(stdin) = &self.stdin {
            let _ = std::fs::remove_file(stdin);
        }
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

async fn copy(mut from: pipe::Receiver, log: Arc<LogWriter>, stream: Stream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                if let Err(e) = log.write(stream, &buf[..n]) {
                    tracing::warn!(error = %e, "writing a container log");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading a container's output");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_map_to_kubernetes_reasons() {
        assert_eq!(exit_of(0, false, true).reason, "Completed");
        assert_eq!(exit_of(3, false, false), ContainerExit::from_code(3));
        assert_eq!(exit_of(137, false, true).reason, "OOMKilled");
        assert_eq!(exit_of(137, true, true).reason, "Error");
        assert_eq!(exit_of(137, false, false).reason, "Error");
        assert_eq!(exit_of(143, true, true).exit_code, 143);
    }
}
