//! Task events the shim publishes to containerd: create, start, exit, delete and OOM.

use std::sync::Arc;

use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::types::mount::Mount;

use super::publisher::Publisher;
use super::stdio::StdioPaths;

/// Publishes a shim's events in its containerd namespace through the shim's [`Publisher`] (which retries
/// them across a containerd restart); a failure to queue is logged.
pub struct Events {
    publisher: Arc<Publisher>,
    namespace: String,
}

impl Events {
    pub fn new(publisher: Arc<Publisher>, namespace: String) -> Self {
        Self { publisher, namespace }
    }

    async fn publish<E: Event + MessageDyn>(&self, event: E) {
        let topic = event.topic();
        if let Err(e) = self.publisher.publish(&topic, &self.namespace, Box::new(event)) {
            tracing::warn!(%topic, error = %e, "publishing an event");
        }
    }

    pub async fn created(&self, id: &str, bundle: &str, rootfs: &[Mount], io: &StdioPaths, pid: u32) {
        let io = TaskIO {
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            terminal: io.terminal,
            ..Default::default()
        };
        self.publish(TaskCreate {
            container_id: id.into(),
            bundle: bundle.into(),
            rootfs: rootfs.to_vec(),
            io: Some(io).into(),
            pid,
            ..Default::default()
        })
        .await;
    }

    pub async fn started(&self, id: &str, pid: u32) {
        self.publish(TaskStart { container_id: id.into(), pid, ..Default::default() }).await;
    }

    pub async fn oom(&self, id: &str) {
        self.publish(TaskOOM { container_id: id.into(), ..Default::default() }).await;
    }

    pub async fn exited(&self, id: &str, pid: u32, exit_status: u32, exited_at: &Timestamp) {
        self.publish(TaskExit {
            container_id: id.into(),
            id: id.into(),
            pid,
            exit_status,
            exited_at: Some(exited_at.clone()).into(),
            ..Default::default()
        })
        .await;
    }

    pub async fn deleted(&self, id: &str, pid: u32, exit_status: u32, exited_at: &Timestamp) {
        self.publish(TaskDelete {
            container_id: id.into(),
            id: id.into(),
            pid,
            exit_status,
            exited_at: Some(exited_at.clone()).into(),
            ..Default::default()
        })
        .await;
    }
}
