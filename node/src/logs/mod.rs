//! Container logs in the CRI log format: where the files live, the writer that produces them and the
//! reader that serves them the way `kubectl logs` expects.
//!
//! Layout (as the Kubernetes kubelet): `<root>/<namespace>_<pod>_<uid>/<container>/<restartCount>.log`,
//! rotated files beside it as `<restartCount>.log.<UTC timestamp>`. Each line of a file is
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>`.

mod format;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use reader::{stream_logs, LogOptions};
pub use writer::{LogWriter, Rotation, StreamSink};

/// Which output stream of a container a chunk of bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The tag written in a CRI log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// The log directory of one pod: `<root>/<namespace>_<pod>_<uid>`.
pub fn pod_log_dir(root: &Path, namespace: &str, pod: &str, uid: &str) -> PathBuf {
    root.join(format!("{namespace}_{pod}_{uid}"))
}

/// The current log file of one container run: `<pod log dir>/<container>/<restartCount>.log`.
pub fn container_log_path(pod_log_dir: &Path, container: &str, restart_count: u32) -> PathBuf {
    pod_log_dir.join(container).join(format!("{restart_count}.log"))
}

/// The log files of one container run, as handed to [`stream_logs`].
///
/// Only the current file is named; rotated files (`<current>.<timestamp>`) are found beside it when
/// the logs are read, so a rotation between locating and reading loses nothing.
#[derive(Debug, Clone)]
pub struct LogFiles {
    /// The current file, `<restartCount>.log`.
    pub current: PathBuf,
    /// For `follow`: `true` while the container runs. Following ends once this is `false` (or its
    /// sender is gone) and the files are drained. `None` means the container is not running.
    pub running: Option<tokio::sync::watch::Receiver<bool>>,
}

impl LogFiles {
    /// The files of a container run that has ended.
    pub fn finished(current: PathBuf) -> Self {
        Self { current, running: None }
    }

    /// The files of a running container; `running` turns `false` when it stops.
    pub fn running(current: PathBuf, running: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { current, running: Some(running) }
    }
}

/// Errors of the log writer.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}
