//! A containerd client for the kubelet: one gRPC channel over containerd's unix socket, every request in
//! the kubelet's namespace, and the few container and task calls the runtime makes.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteProcessRequest,
    DeleteTaskRequest, ExecProcessRequest, GetRequest, KillRequest, ListContainersRequest, ResizePtyRequest,
    StartRequest, WaitRequest,
};
use containerd_client::types::Mount;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request};

use super::ContainerdError;

/// The header containerd reads the namespace of a request from.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The header naming the lease that keeps what a request makes from containerd's garbage collector.
const LEASE_HEADER: &str = "containerd-lease";
/// The type URL containerd stores an OCI runtime spec under (its JSON is the value).
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The type URL of an OCI process spec (an exec's).
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// Bound on every call but Wait (which lasts as long as the task).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to containerd, scoped to one namespace. Cheap to clone (the channel is shared).
#[derive(Clone)]
pub struct Client {
    pub(super) channel: Channel,
    namespace: MetadataValue<Ascii>,
    namespace_name: String,
    /// The lease every request of this handle is made under ([`Client::leased`]).
    lease: Option<MetadataValue<Ascii>>,
}

/// What a new container is made of.
pub struct NewContainer<'a> {
    pub id: &'a str,
    pub image: &'a str,
    pub runtime: &'a str,
    /// The OCI runtime spec, as JSON.
    pub spec: Vec<u8>,
    pub labels: HashMap<String, String>,
    /// The snapshot holding its root filesystem: (snapshotter, key).
    pub snapshot: Option<(&'a str, &'a str)>,
}

impl Client {
    /// Connects to containerd's socket at `address` (fails when containerd does not answer).
    pub async fn connect(address: &Path, namespace: &str) -> Result<Self, ContainerdError> {
        let namespace_value = namespace
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| ContainerdError::Config(format!("invalid containerd namespace {namespace:?}")))?;
        let channel = containerd_client::connect(address)
            .await
            .map_err(|e| ContainerdError::Connect { address: address.to_path_buf(), reason: e.to_string() })?;
        Ok(Self { channel, namespace: namespace_value, namespace_name: namespace.to_string(), lease: None })
    }

    /// This client with every request made under lease `id` (what it creates is kept until the
    /// lease is deleted or expires).
    pub fn leased(&self, id: &str) -> Result<Self, ContainerdError> {
        let lease =
            id.parse::<MetadataValue<Ascii>>().map_err(|_| ContainerdError::Config(format!("invalid lease {id:?}")))?;
        Ok(Self { lease: Some(lease), ..self.clone() })
    }

    /// The namespace this client works in.
    pub fn namespace(&self) -> &str {
        &self.namespace_name
    }

    pub(super) fn request<T>(&self, message: T, timeout: Option<Duration>) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(NAMESPACE_HEADER, self.namespace.clone());
        if let Some(lease) = &self.lease {
            request.metadata_mut().insert(LEASE_HEADER, lease.clone());
        }
        if let Some(t) = timeout {
            request.set_timeout(t);
        }
        request
    }

    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// Creates a container: metadata, and the snapshot it names (made afterwards, so containerd's
    /// garbage collector never sees it unreferenced); without one the spec names its root directory.
    pub async fn create_container(&self, new: NewContainer<'_>) -> Result<(), ContainerdError> {
        let (snapshotter, snapshot_key) = new.snapshot.unwrap_or_default();
        let container = Container {
            id: new.id.to_string(),
            labels: new.labels,
            image: new.image.to_string(),
            runtime: Some(Runtime { name: new.runtime.to_string(), options: None }),
            spec: Some(prost_types::Any { type_url: SPEC_TYPE_URL.into(), value: new.spec }),
            snapshotter: snapshotter.to_string(),
            snapshot_key: snapshot_key.to_string(),
            ..Container::default()
        };
        let request = self.request(CreateContainerRequest { container: Some(container) }, Some(CALL_TIMEOUT));
        self.containers().create(request).await.map_err(call("creating container", new.id))?;
        Ok(())
    }

    /// Deletes a container; one that is not there is fine.
    pub async fn delete_container(&self, id: &str) -> Result<(), ContainerdError> {
        let request = self.request(DeleteContainerRequest { id: id.to_string() }, Some(CALL_TIMEOUT));
        match self.containers().delete(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(call("deleting container", id)(s)),
        }
    }

    /// The containers of this namespace.
    pub async fn list_containers(&self) -> Result<Vec<Container>, ContainerdError> {
        let request = self.request(ListContainersRequest { filters: Vec::new() }, Some(CALL_TIMEOUT));
        let response = self.containers().list(request).await.map_err(call("listing containers", ""))?;
        Ok(response.into_inner().containers)
    }

    /// Creates the container's task with its stdout and stderr going to the given fifos (no rootfs mounts).
    pub async fn create_task(&self, id: &str, stdout: &Path, stderr: &Path) -> Result<(), ContainerdError> {
        self.create_task_io(id, None, stdout, Some(stderr), false, Vec::new()).await
    }

    /// Creates the container's task with the given fifos (stdin if any, stderr unless a terminal),
    /// its root filesystem mounted from `rootfs` (a snapshot's mounts) when given.
    pub async fn create_task_io(
        &self,
        id: &str,
        stdin: Option<&Path>,
        stdout: &Path,
        stderr: Option<&Path>,
        terminal: bool,
        rootfs: Vec<Mount>,
    ) -> Result<(), ContainerdError> {
        let path = |p: Option<&Path>| p.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let request = self.request(
            CreateTaskRequest {
                container_id: id.to_string(),
                stdin: path(stdin),
                stdout: stdout.to_string_lossy().into_owned(),
                stderr: path(stderr),
                terminal,
                rootfs,
                ..CreateTaskRequest::default()
            },
            Some(CALL_TIMEOUT),
        );
        self.tasks().create(request).await.map_err(call("creating task", id))?;
        Ok(())
    }

    /// Starts a created task.
    pub async fn start_task(&self, id: &str) -> Result<(), ContainerdError> {
        let request =
            self.request(StartRequest { container_id: id.to_string(), exec_id: String::new() }, Some(CALL_TIMEOUT));
        self.tasks().start(request).await.map_err(call("starting task", id))?;
        Ok(())
    }

    /// The host pid of the task's init process.
    pub async fn task_pid(&self, id: &str) -> Result<u32, ContainerdError> {
        let request =
            self.request(GetRequest { container_id: id.to_string(), exec_id: String::new() }, Some(CALL_TIMEOUT));
        let response = self.tasks().get(request).await.map_err(call("reading task", id))?;
        Ok(response.into_inner().process.map(|p| p.pid).unwrap_or(0))
    }

    /// Waits until the task stopped: its exit status.
    pub async fn wait_task(&self, id: &str) -> Result<u32, ContainerdError> {
        let request = self.request(WaitRequest { container_id: id.to_string(), exec_id: String::new() }, None);
        let response = self.tasks().wait(request).await.map_err(call("waiting for task", id))?;
        Ok(response.into_inner().exit_status)
    }

    /// Sends `signal` to the task; a task that is not there (or already stopped) is fine.
    pub async fn kill_task(&self, id: &str, signal: u32) -> Result<(), ContainerdError> {
        let request = self.request(
            KillRequest { container_id: id.to_string(), exec_id: String::new(), signal, all: false },
            Some(CALL_TIMEOUT),
        );
        match self.tasks().kill(request).await {
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(call("killing task", id)(s)),
        }
    }

    /// Deletes a stopped task; one that is not there is fine.
    pub async fn delete_task(&self, id: &str) -> Result<(), ContainerdError> {
        let request = self.request(DeleteTaskRequest { container_id: id.to_string() }, Some(CALL_TIMEOUT));
        match self.tasks().delete(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(call("deleting task", id)(s)),
        }
    }
}

/// An extra process in a running task (`kubectl exec`): its id, fifos and OCI process spec (JSON).
pub struct NewExec<'a> {
    pub container_id: &'a str,
    pub exec_id: &'a str,
    /// Fifo paths; empty for a stream the process does not have.
    pub stdin: &'a str,
    pub stdout: &'a str,
    pub stderr: &'a str,
    pub terminal: bool,
    pub process: Vec<u8>,
}

impl Client {
    /// Adds a process to the container's running task (created, not started).
    pub async fn exec_process(&self, new: NewExec<'_>) -> Result<(), ContainerdError> {
        let request = self.request(
            ExecProcessRequest {
                container_id: new.container_id.to_string(),
                stdin: new.stdin.to_string(),
                stdout: new.stdout.to_string(),
                stderr: new.stderr.to_string(),
                terminal: new.terminal,
                spec: Some(prost_types::Any { type_url: PROCESS_TYPE_URL.into(), value: new.process }),
                exec_id: new.exec_id.to_string(),
            },
            Some(CALL_TIMEOUT),
        );
        self.tasks().exec(request).await.map_err(call("exec in", new.container_id))?;
        Ok(())
    }

    /// Starts an exec'd process.
    pub async fn start_exec(&self, id: &str, exec_id: &str) -> Result<(), ContainerdError> {
        let request = self
            .request(StartRequest { container_id: id.to_string(), exec_id: exec_id.to_string() }, Some(CALL_TIMEOUT));
        self.tasks().start(request).await.map_err(call("starting exec in", id))?;
        Ok(())
    }

    /// Waits until the exec'd process ended: its exit status.
    pub async fn wait_exec(&self, id: &str, exec_id: &str) -> Result<u32, ContainerdError> {
        let request = self.request(WaitRequest { container_id: id.to_string(), exec_id: exec_id.to_string() }, None);
        let response = self.tasks().wait(request).await.map_err(call("waiting for exec in", id))?;
        Ok(response.into_inner().exit_status)
    }

    /// Sends `signal` to an exec'd process; one that is gone is fine.
    pub async fn kill_exec(&self, id: &str, exec_id: &str, signal: u32) -> Result<(), ContainerdError> {
        let request = self.request(
            KillRequest { container_id: id.to_string(), exec_id: exec_id.to_string(), signal, all: false },
            Some(CALL_TIMEOUT),
        );
        match self.tasks().kill(request).await {
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(call("killing exec in", id)(s)),
        }
    }

    /// Resizes an exec'd process's terminal.
    pub async fn resize_exec(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<(), ContainerdError> {
        let request = self.request(
            ResizePtyRequest { container_id: id.to_string(), exec_id: exec_id.to_string(), width, height },
            Some(CALL_TIMEOUT),
        );
        self.tasks().resize_pty(request).await.map_err(call("resizing the terminal of exec in", id))?;
        Ok(())
    }

    /// Closes an exec'd process's stdin (it reads EOF).
    pub async fn close_exec_stdin(&self, id: &str, exec_id: &str) -> Result<(), ContainerdError> {
        let request = self.request(
            CloseIoRequest { container_id: id.to_string(), exec_id: exec_id.to_string(), stdin: true },
            Some(CALL_TIMEOUT),
        );
        self.tasks().close_io(request).await.map_err(call("closing stdin of exec in", id))?;
        Ok(())
    }

    /// Forgets an ended exec'd process; one that is not there is fine.
    pub async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<(), ContainerdError> {
        let request = self.request(
            DeleteProcessRequest { container_id: id.to_string(), exec_id: exec_id.to_string() },
            Some(CALL_TIMEOUT),
        );
        match self.tasks().delete_process(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(call("deleting exec in", id)(s)),
        }
    }
}

/// Whether `e` says the object is not there.
pub fn is_not_found(e: &ContainerdError) -> bool {
    matches!(e, ContainerdError::Call { code: Code::NotFound, .. })
}

pub(super) fn call<'a>(what: &'static str, id: &'a str) -> impl FnOnce(tonic::Status) -> ContainerdError + 'a {
    move |status| ContainerdError::Call {
        what,
        id: id.to_string(),
        code: status.code(),
        message: status.message().to_string(),
    }
}
