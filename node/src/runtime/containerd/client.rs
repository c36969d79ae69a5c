//! A containerd client for the kubelet: one gRPC channel over containerd's unix socket, every request in
//! the kubelet's namespace, and the few container and task calls the runtime makes.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest, KillRequest,
    ListContainersRequest, StartRequest, WaitRequest,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request};

use super::ContainerdError;

/// The header containerd reads the namespace of a request from.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The type URL containerd stores an OCI runtime spec under (its JSON is the value).
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Bound on every call but Wait (which lasts as long as the task).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to containerd, scoped to one namespace. Cheap to clone (the channel is shared).
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    namespace: MetadataValue<Ascii>,
    namespace_name: String,
}

/// What a new container is made of.
pub struct NewContainer<'a> {
    pub id: &'a str,
    pub image: &'a str,
    pub runtime: &'a str,
    /// The OCI runtime spec, as JSON.
    pub spec: Vec<u8>,
    pub labels: HashMap<String, String>,
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
        Ok(Self { channel, namespace: namespace_value, namespace_name: namespace.to_string() })
    }

    /// The namespace this client works in.
    pub fn namespace(&self) -> &str {
        &self.namespace_name
    }

    fn request<T>(&self, message: T, timeout: Option<Duration>) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(NAMESPACE_HEADER, self.namespace.clone());
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

    /// Creates a container (metadata only: no snapshot, the spec names its root directory).
    pub async fn create_container(&self, new: NewContainer<'_>) -> Result<(), ContainerdError> {
        let container = Container {
            id: new.id.to_string(),
            labels: new.labels,
            image: new.image.to_string(),
            runtime: Some(Runtime { name: new.runtime.to_string(), options: None }),
            spec: Some(prost_types::Any { type_url: SPEC_TYPE_URL.into(), value: new.spec }),
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
        let request = self.request(
            CreateTaskRequest {
                container_id: id.to_string(),
                stdout: stdout.to_string_lossy().into_owned(),
                stderr: stderr.to_string_lossy().into_owned(),
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

/// Whether `e` says the object is not there.
pub fn is_not_found(e: &ContainerdError) -> bool {
    matches!(e, ContainerdError::Call { code: Code::NotFound, .. })
}

fn call<'a>(what: &'static str, id: &'a str) -> impl FnOnce(tonic::Status) -> ContainerdError + 'a {
    move |status| ContainerdError::Call {
        what,
        id: id.to_string(),
        code: status.code(),
        message: status.message().to_string(),
    }
}
