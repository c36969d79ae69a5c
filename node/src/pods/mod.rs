//! The pods bound to this node: a watch on them, one worker per pod, and the sweep of what a previous
//! run of the agent left behind.

mod backoff;
pub mod env;
mod ephemeral;
pub mod exec_target;
mod grace;
mod hooks;
pub mod log_index;
pub mod lookup;
mod probes;
pub mod quantity;
pub mod safe_path;
pub mod service_env;
pub mod status;
mod volumes;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::mpsc;

use crate::config::AgentConfig;
use crate::events::Recorder;
use crate::runtime::ContainerRuntime;
use crate::sandbox::{PortMapping, Sandbox, SandboxError, SandboxManager};
use log_index::LogIndex;
use worker::{Msg, Worker};

/// What the pod workers need of the node's sandboxes: the [`SandboxManager`], or a fake in the
/// workers' unit tests.
#[async_trait::async_trait]
pub trait PodSandboxes: Send + Sync {
    /// The pod's sandbox, made if needed (see [`SandboxManager::create`]).
    async fn create(&self, pod_uid: &str, ports: &[PortMapping]) -> Result<Sandbox, SandboxError>;
    /// Removes the pod's sandbox; idempotent (see [`SandboxManager::destroy`]).
    async fn destroy(&self, pod_uid: &str) -> Result<(), SandboxError>;
    /// Removes the sandboxes of pods not in `keep`; how many (see [`SandboxManager::sweep`]).
    async fn sweep(&self, keep: &HashSet<String>) -> usize;
}

#[async_trait::async_trait]
impl PodSandboxes for SandboxManager {
    async fn create(&self, pod_uid: &str, ports: &[PortMapping]) -> Result<Sandbox, SandboxError> {
        SandboxManager::create(self, pod_uid, ports).await
    }
    async fn destroy(&self, pod_uid: &str) -> Result<(), SandboxError> {
        SandboxManager::destroy(self, pod_uid).await
    }
    async fn sweep(&self, keep: &HashSet<String>) -> usize {
        SandboxManager::sweep(self, keep).await
    }
}

/// What every pod worker shares.
pub struct Deps {
    pub client: kube::Client,
    pub config: AgentConfig,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub sandboxes: Arc<dyn PodSandboxes>,
    pub recorder: Recorder,
    pub logs_root: PathBuf,
    pub pods_root: PathBuf,
    pub log_index: Arc<LogIndex>,
    workers: parking_lot::Mutex<HashMap<String, mpsc::UnboundedSender<Msg>>>,
}

impl Deps {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        config: AgentConfig,
        runtime: Arc<dyn ContainerRuntime>,
        sandboxes: Arc<dyn PodSandboxes>,
        recorder: Recorder,
        log_index: Arc<LogIndex>,
    ) -> Arc<Self> {
        let logs_root = config.data_dir.join("logs");
        let pods_root = config.data_dir.join("pods");
        Arc::new(Self {
            client,
            config,
            runtime,
            sandboxes,
            recorder,
            logs_root,
            pods_root,
            log_index,
            workers: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    fn forget(&self, uid: &str) {
        self.workers.lock().remove(uid);
    }

    /// How many pods have a worker on this node.
    pub fn pod_count(&self) -> usize {
        self.workers.lock().len()
    }

    /// Tells every worker that the agent stops.
    pub fn shutdown(&self) {
        for tx in self.workers.lock().values() {
            let _ = tx.send(Msg::Shutdown);
        }
    }
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Hands a pod to its worker, starting one for a pod seen for the first time.
fn dispatch(deps: &Arc<Deps>, pod: Pod) {
    let uid = uid_of(&pod);
    let mut workers = deps.workers.lock();
    if let Some(tx) = workers.get(&uid) {
        if tx.send(Msg::Update(Box::new(pod.clone()))).is_ok() {
            return;
        }
    }
    workers.insert(uid, Worker::spawn(Arc::clone(deps), pod));
}

/// Watches the pods bound to this node until the task is aborted.
pub async fn watch(deps: Arc<Deps>) {
    let pods: Api<Pod> = Api::all(deps.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", deps.config.node_name));
    let mut stream = watcher::watcher(pods, config).default_backoff().boxed();
    let mut listed: HashSet<String> = HashSet::new();
    let mut first_list = true;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                listed.insert(uid_of(&pod));
                dispatch(&deps, pod);
            }
            Ok(Event::InitDone) => {
                let stale: Vec<(String, mpsc::UnboundedSender<Msg>)> = deps
                    .workers
                    .lock()
                    .iter()
                    .filter(|(uid, _)| !listed.contains(*uid))
                    .map(|(u, t)| (u.clone(), t.clone()))
                    .collect();
                for (_, tx) in stale {
                    let _ = tx.send(Msg::Gone);
                }
                if first_list {
                    first_list = false;
                    sweep(&deps, &listed).await;
                }
            }
            Ok(Event::Apply(pod)) => dispatch(&deps, pod),
            Ok(Event::Delete(pod)) => {
                let tx = deps.workers.lock().get(&uid_of(&pod)).cloned();
                if let Some(tx) = tx {
                    let _ = tx.send(Msg::Gone);
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching this node's pods"),
        }
    }
}

/// Removes sandboxes and pod directories of pods that no longer exist (a crashed or killed agent's leftovers).
/// Unmounts every pod's subPath binds and memory-backed emptyDirs (the agent's teardown on exit).
pub fn unmount_all(deps: &Deps) {
    volumes::unmount_all_under(&deps.pods_root);
}

async fn sweep(deps: &Deps, keep: &HashSet<String>) {
    let removed = deps.sandboxes.sweep(keep).await;
    if removed > 0 {
        tracing::info!(removed, "swept sandboxes of pods that are gone");
    }
    if let Ok(entries) = std::fs::read_dir(&deps.pods_root) {
        for entry in entries.flatten() {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&uid) {
                volumes::unmount_all_under(&entry.path());
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(&deps.logs_root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.rsplit('_').next().is_some_and(|uid| !keep.contains(uid)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}
