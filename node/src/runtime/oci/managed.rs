//! A containerd of the agent's own, as k3s runs one: its config, root, state, socket and log under
//! `<data dir>/containerd`, no CRI plugin, a child process restarted (with back-off) when it dies and stopped
//! (SIGTERM, then SIGKILL) with the agent. A containerd already serving the socket (left by an agent that
//! died) is used as it is.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::runtime::containerd::{Client, ContainerdError};

/// How long containerd may take to answer on its socket.
const READY_BOUND: Duration = Duration::from_secs(30);
/// How long containerd gets to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The running containerd and its supervisor.
pub struct Managed {
    socket: PathBuf,
    stop: CancellationToken,
    supervisor: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Managed {
    /// Starts containerd under `dir` (or finds one serving there) and waits until it answers.
    pub async fn start(binary: &Path, dir: &Path, namespace: &str) -> Result<Arc<Self>, ContainerdError> {
        let socket = dir.join("containerd.sock");
        let stop = CancellationToken::new();
        if Client::connect(&socket, namespace).await.is_ok() {
            tracing::info!(socket = %socket.display(), "using the containerd already serving the agent's socket");
            return Ok(Arc::new(Self { socket, stop, supervisor: parking_lot::Mutex::new(None) }));
        }
        let spawn = Spawn { binary: binary.to_path_buf(), dir: dir.to_path_buf() };
        let child = spawn.spawn()?;
        let ready = async {
            let deadline = tokio::time::Instant::now() + READY_BOUND;
            loop {
                match Client::connect(&socket, namespace).await {
                    Ok(_) => return Ok(()),
                    Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        };
        let mut child = child;
        if let Err(e) = ready.await {
            terminate(&mut child).await;
            return Err(ContainerdError::Config(format!(
                "containerd did not start (see {}): {e}",
                dir.join("containerd.log").display()
            )));
        }
        tracing::info!(socket = %socket.display(), pid = ?child.id(), "started the agent's containerd");
        let supervisor = tokio::spawn(supervise(spawn, child, stop.clone()));
        Ok(Arc::new(Self { socket, stop, supervisor: parking_lot::Mutex::new(Some(supervisor)) }))
    }

    /// containerd's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops containerd (SIGTERM, SIGKILL after a grace period) and its supervisor.
    pub async fn stop(&self) {
        self.stop.cancel();
        let supervisor = self.supervisor.lock().take();
        if let Some(s) = supervisor {
            let _ = s.await;
        }
    }
}

struct Spawn {
    binary: PathBuf,
    dir: PathBuf,
}

impl Spawn {
    fn spawn(&self) -> Result<Child, ContainerdError> {
        let dir = &self.dir;
        let fail = |what: &str, e: std::io::Error| ContainerdError::Config(format!("{what} {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| fail("creating", e))?;
        // Only the services the kubelet uses: no CRI plugin (it would bring its own networking), nothing on TCP.
        std::fs::write(dir.join("config.toml"), "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n")
            .map_err(|e| fail("writing the config in", e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("containerd.log"))
            .map_err(|e| fail("opening the log in", e))?;
        Command::new(&self.binary)
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(dir.join("containerd.sock"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ContainerdError::Config(format!("starting {}: {e}", self.binary.display())))
    }
}

/// Restarts containerd whenever it exits, until `stop`; then stops it.
async fn supervise(spawn: Spawn, mut child: Child, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            status = child.wait() => {
                tracing::warn!(?status, "containerd exited; restarting it");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                match spawn.spawn() {
                    Ok(c) => child = c,
                    Err(e) => {
                        tracing::error!(error = %e, "restarting containerd");
                        // Wait for the next attempt without a child: a process that exits at once.
                        match Command::new("true").kill_on_drop(true).spawn() {
                            Ok(c) => child = c,
                            Err(_) => return,
                        }
                    }
                }
            }
            _ = stop.cancelled() => {
                terminate(&mut child).await;
                tracing::info!("stopped the agent's containerd");
                return;
            }
        }
    }
}

async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
