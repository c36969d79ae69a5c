//! Which log files belong to which container of which pod: filled by the pod workers, read by the
//! kubelet endpoint (`kubectl logs`, `--previous`, `-f`).

use std::collections::HashMap;
use std::path::PathBuf;

use tokio::sync::watch;

use std::sync::Arc;

use super::exec_target::ExecTarget;
use crate::kubelet_server::{LocateError, LogSource};
use crate::logs::LogFiles;

#[derive(Default)]
struct ContainerLogs {
    current: Option<(PathBuf, watch::Receiver<bool>)>,
    previous: Option<PathBuf>,
    waiting: Option<String>,
    /// What an exec into the current run reaches.
    exec: Option<Arc<ExecTarget>>,
}

#[derive(Default)]
pub struct LogIndex {
    pods: parking_lot::Mutex<HashMap<(String, String), HashMap<String, ContainerLogs>>>,
}

impl LogIndex {
    /// A new run of a container writes to `path`; the previous current file becomes `previous`.
    pub fn started(&self, ns: &str, pod: &str, container: &str, path: PathBuf, running: watch::Receiver<bool>) {
        let mut pods = self.pods.lock();
        let entry = pods.entry((ns.into(), pod.into())).or_default().entry(container.into()).or_default();
        if let Some((old, _)) = entry.current.take() {
            entry.previous = Some(old);
        }
        entry.current = Some((path, running));
        entry.waiting = None;
        entry.exec = None;
    }

    /// Records what an exec into the current run of a container reaches (after [`Self::started`]).
    pub fn exec_target(&self, ns: &str, pod: &str, container: &str, target: ExecTarget) {
        let mut pods = self.pods.lock();
        if let Some(entry) = pods.get_mut(&(ns.to_string(), pod.to_string())).and_then(|p| p.get_mut(container)) {
            entry.exec = Some(Arc::new(target));
        }
    }

    /// Drops what execs into a pod's containers reach (its runtime context), keeping its logs: a
    /// finished pod's context must not outlive it here.
    pub fn forget_exec(&self, ns: &str, pod: &str) {
        if let Some(containers) = self.pods.lock().get_mut(&(ns.to_string(), pod.to_string())) {
            containers.values_mut().for_each(|c| c.exec = None);
        }
    }

    /// What an exec into the current run of a container reaches, if it was recorded.
    pub fn exec_of(&self, ns: &str, pod: &str, container: &str) -> Option<Arc<ExecTarget>> {
        let pods = self.pods.lock();
        pods.get(&(ns.to_string(), pod.to_string()))?.get(container)?.exec.clone()
    }

    /// The container is known but has not run (yet); `reason` is its waiting reason.
    pub fn waiting(&self, ns: &str, pod: &str, container: &str, reason: &str) {
        let mut pods = self.pods.lock();
        let entry = pods.entry((ns.into(), pod.into())).or_default().entry(container.into()).or_default();
        if entry.current.is_none() {
            entry.waiting = Some(reason.into());
        }
    }

    pub fn remove_pod(&self, ns: &str, pod: &str) {
        self.pods.lock().remove(&(ns.to_string(), pod.to_string()));
    }
}

impl LogSource for LogIndex {
    fn locate(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Result<LogFiles, LocateError> {
        let pods = self.pods.lock();
        let containers = pods
            .get(&(namespace.to_string(), pod.to_string()))
            .ok_or_else(|| LocateError::PodNotFound { pod: pod.into() })?;
        let c = containers
            .get(container)
            .ok_or_else(|| LocateError::ContainerNotFound { pod: pod.into(), container: container.into() })?;
        if previous {
            return c
                .previous
                .clone()
                .map(LogFiles::finished)
                .ok_or_else(|| LocateError::NoPrevious { pod: pod.into(), container: container.into() });
        }
        match &c.current {
            Some((path, running)) if *running.borrow() => Ok(LogFiles::running(path.clone(), running.clone())),
            Some((path, _)) => Ok(LogFiles::finished(path.clone())),
            None => Err(LocateError::Waiting {
                pod: pod.into(),
                container: container.into(),
                reason: c.waiting.clone().unwrap_or_else(|| "ContainerCreating".into()),
            }),
        }
    }
}
