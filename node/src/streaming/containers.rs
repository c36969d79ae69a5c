//! Which container an exec goes to on this node: the pod workers' index says whether the container
//! exists and runs; Linux containers are found in containerd by their labels; a Wasm container's
//! exec goes to [`super::wasm_exec`] (the toolbox or its own module). Attach follows the
//! container's log from now on (stdout and stderr both on stdout), for either runtime, and writes to
//! the container's stdin when it was made with `stdin: true`.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{ExecRequest, Process, ProcessControl, StreamError, Streams, Target};
use crate::kubelet_server::{LocateError, LogSource};
use crate::logs::{stream_logs, LogOptions};
use crate::pods::log_index::LogIndex;
use crate::runtime::oci::{LazyOci, OciRuntime};

/// The message for an exec into a container no runtime here can exec into (e.g. a Wasm container
/// run by the containerd shim).
pub const WASM_EXEC: &str = "exec is not supported for this container's runtime";

/// The kubelet's [`Streams`].
pub struct NodeStreams {
    pub logs: Arc<LogIndex>,
    pub oci: Option<Arc<LazyOci>>,
    /// The pods' sandboxes (their IPs, for port-forward).
    pub sandboxes: Arc<crate::sandbox::SandboxManager>,
    /// Finds a pod's uid when a port-forward names none.
    pub client: kube::Client,
}

impl NodeStreams {
    /// Checks that `target` runs on this node.
    fn running(&self, target: &Target) -> Result<(), StreamError> {
        match self.logs.locate(&target.namespace, &target.pod, &target.container, false) {
            Ok(files) if files.running.as_ref().is_some_and(|r| *r.borrow()) => Ok(()),
            Ok(_) | Err(LocateError::Waiting { .. }) => Err(StreamError::Refused(format!(
                "container {} is not running in pod {}",
                target.container, target.pod
            ))),
            Err(e @ (LocateError::PodNotFound { .. } | LocateError::ContainerNotFound { .. })) => {
                Err(StreamError::NotFound(e.to_string()))
            }
            Err(e) => Err(StreamError::Internal(e.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl Streams for NodeStreams {
    async fn check(&self, target: &Target) -> Result<(), StreamError> {
        self.running(target)?;
        let pod = format!("{}/{}", target.namespace, target.pod);
        let runtime = self.oci.as_ref().and_then(|o| o.started());
        let found = match runtime {
            Some(rt) => rt.find(&pod, &target.container).await.map_err(|e| StreamError::Internal(e.to_string()))?,
            None => None,
        };
        if found.is_some() || self.wasm_target(target).is_some() {
            return Ok(());
        }
        Err(StreamError::Refused(WASM_EXEC.into()))
    }

    async fn exec(&self, target: &Target, req: &ExecRequest) -> Result<Process, StreamError> {
        let pod = format!("{}/{}", target.namespace, target.pod);
        if let Some(runtime) = self.oci.as_ref().and_then(|o| o.started()) {
            match runtime.exec_in(&pod, &target.container, req).await {
                Ok(Some(process)) => return Ok(process),
                Ok(None) => {}
                Err(e) => return Err(StreamError::Internal(e.to_string())),
            }
        }
        let (exec_target, world) = self.wasm_target(target).ok_or_else(|| StreamError::Refused(WASM_EXEC.into()))?;
        let running = self
            .logs
            .locate(&target.namespace, &target.pod, &target.container, false)
            .ok()
            .and_then(|files| files.running.clone());
        super::wasm_exec::exec(exec_target, world, running, req).await
    }

    async fn pod_address(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
    ) -> Result<super::port_forward::PodAddress, StreamError> {
        let missing = || StreamError::NotFound(format!("pod \"{namespace}/{pod}\" does not exist on this node"));
        let uid = match uid.filter(|u| !u.is_empty()) {
            Some(uid) => uid.to_string(),
            None => {
                let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
                    kube::Api::namespaced(self.client.clone(), namespace);
                let found = api.get_opt(pod).await.map_err(|e| StreamError::Internal(e.to_string()))?;
                found.and_then(|p| p.metadata.uid).ok_or_else(missing)?
            }
        };
        let sandbox = self.sandboxes.get(&uid).ok_or_else(missing)?;
        Ok(super::port_forward::PodAddress { name: pod.to_string(), uid, ip: sandbox.ip })
    }

    async fn attach(&self, target: &Target) -> Result<Process, StreamError> {
        self.running(target)?;
        let files = self
            .logs
            .locate(&target.namespace, &target.pod, &target.container, false)
            .map_err(|e| StreamError::Internal(e.to_string()))?;
        let running = files.running.clone();
        let options =
            LogOptions { follow: true, tail_lines: Some(0), since: None, timestamps: false, limit_bytes: None };
        let output = stream_logs(files, options)
            .await
            .map_err(|e| StreamError::Internal(format!("failed to read container logs: {e}")))?;
        let linux = self.linux_id(target).await;
        let stdin = match &linux {
            Some((_, id)) => crate::runtime::containerd::task::stdin_of(id).map(attach_stdin),
            // A Wasm container made with `stdin: true`: its guest's WASI stdin.
            None => self
                .logs
                .exec_of(&target.namespace, &target.pod, &target.container)
                .and_then(|exec| exec.runtime.attach_stdin(&exec.launch))
                .map(attach_stdin),
        };
        let (exit_tx, exited) = oneshot::channel();
        let detached = CancellationToken::new();
        let gone = detached.clone();
        tokio::spawn(async move {
            if let Some(mut running) = running {
                tokio::select! {
                    _ = running.wait_for(|r| !*r) => {}
                    () = gone.cancelled() => {}
                }
            }
            let _ = exit_tx.send(Ok(0));
        });
        Ok(Process {
            stdin,
            stdout: Some(Box::new(tokio_util::io::StreamReader::new(Box::pin(output)))),
            stderr: None,
            control: Arc::new(Detach { detached, linux }),
            exited,
        })
    }
}

impl NodeStreams {
    /// The current run of `target` and its world, when it is a Wasm container.
    fn wasm_target(
        &self,
        target: &Target,
    ) -> Option<(Arc<crate::pods::exec_target::ExecTarget>, crate::runtime::GuestWorld)> {
        let exec = self.logs.exec_of(&target.namespace, &target.pod, &target.container)?;
        let world = exec.runtime.guest_world(&exec.launch)?;
        Some((exec, world))
    }

    /// The OCI runtime and containerd id of `target` if it is a Linux container.
    async fn linux_id(&self, target: &Target) -> Option<(Arc<OciRuntime>, String)> {
        let runtime = self.oci.as_ref().and_then(|o| o.started())?;
        let pod = format!("{}/{}", target.namespace, target.pod);
        let (id, _) = runtime.find(&pod, &target.container).await.ok().flatten()?;
        Some((Arc::clone(runtime), id))
    }
}

/// A writer into the stdin of a container made with `stdin: true` (a Linux container's fifo, a Wasm
/// guest's pipe): what the client sends is copied into it; it stays open when the client goes.
fn attach_stdin<W>(shared: Arc<tokio::sync::Mutex<Option<W>>>) -> Box<dyn tokio::io::AsyncWrite + Send + Unpin>
where
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    {
        let (writer, mut reader) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut stdin = shared.lock().await;
                let Some(pipe) = stdin.as_mut() else { return };
                if pipe.write_all(buf.get(..n).unwrap_or_default()).await.is_err() {
                    return;
                }
            }
        });
        Box::new(writer)
    }
}

/// An attached client's end: stops following (the container goes on); resizes a Linux
/// container's terminal.
struct Detach {
    detached: CancellationToken,
    linux: Option<(Arc<OciRuntime>, String)>,
}

#[async_trait::async_trait]
impl ProcessControl for Detach {
    async fn resize(&self, width: u16, height: u16) {
        if let Some((runtime, id)) = &self.linux {
            if let Err(e) = runtime.resize(id, width, height).await {
                tracing::debug!(error = %e, "resizing an attached terminal");
            }
        }
    }
    async fn close_stdin(&self) {}
    async fn kill(&self) {
        self.detached.cancel();
    }
}
