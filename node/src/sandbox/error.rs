//! The error type of the pod sandbox module.

use std::path::PathBuf;

/// Everything that can go wrong while creating, recording or removing pod sandboxes.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The [`NetworkConfig`](super::NetworkConfig) is unusable (bad name, bad CIDR, ...).
    #[error("invalid network config: {0}")]
    InvalidConfig(String),
    /// The pod CIDR overlaps a route the host already has on another interface.
    #[error("pod CIDR {cidr} overlaps the host route {route} on {iface}")]
    CidrOverlap { cidr: String, route: String, iface: String },
    /// A pod uid that cannot name a record file.
    #[error("invalid pod uid {0:?}")]
    InvalidPodUid(String),
    /// A CNI plugin reported an error (its JSON `{"code","msg"}`) or died.
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}")]
    Plugin { plugin: String, command: &'static str, code: u32, msg: String },
    /// A CNI plugin succeeded but its result is not what we can use.
    #[error("CNI plugin {plugin}: unusable result: {reason}")]
    BadResult { plugin: String, reason: String },
    /// A file or process operation failed.
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    /// A system call (mount, unshare, setns) failed.
    #[error("{op} {path}: {source}")]
    Sys { op: &'static str, path: PathBuf, source: nix::Error },
    /// A sandbox record on disk could not be encoded or decoded.
    #[error("sandbox record {path}: {source}")]
    Record { path: PathBuf, source: serde_json::Error },
    /// The manager was torn down.
    #[error("sandbox manager is shut down")]
    Closed,
    /// A background task of the manager panicked or was cancelled.
    #[error("sandbox task failed: {0}")]
    Task(String),
}

impl SandboxError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SandboxError::Io { op, path: path.into(), source }
    }

    pub(crate) fn sys(op: &'static str, path: impl Into<PathBuf>, source: nix::Error) -> Self {
        SandboxError::Sys { op, path: path.into(), source }
    }
}
