//! The shim's typed errors, and how each becomes a ttrpc status for containerd (and `ctr`'s output).

use std::path::PathBuf;

use containerd_shim::protos::ttrpc::{self, Code};

use super::artifact::ArtifactError;
use skiff_engine::EngineError;

/// Why a task request failed.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("container {0} not found")]
    NotFound(String),
    #[error("container {0} already exists")]
    AlreadyExists(String),
    #[error("container {id} is {state}, cannot {action}")]
    State { id: String, state: &'static str, action: &'static str },
    #[error("invalid bundle {bundle}: {reason}")]
    Bundle { bundle: PathBuf, reason: String },
    #[error("no Wasm entry point: {0}")]
    NoEntry(String),
    #[error("{0} is not supported by the skiff shim")]
    Unsupported(&'static str),
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("mounting the rootfs: {0}")]
    Mount(String),
    #[error(transparent)]
    Netns(#[from] skiff_engine::netns::NetnsError),
    #[error("starting the guest thread: {0}")]
    Thread(String),
    #[error("runc {action} {id}: {message}")]
    Runc { action: &'static str, id: String, message: String },
    #[error("watching the shim's child processes: {0}")]
    Reaper(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

impl ShimError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ShimError::Io { action, path: path.into(), source }
    }

    fn code(&self) -> Code {
        match self {
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::State { .. } => Code::FAILED_PRECONDITION,
            ShimError::Bundle { .. } | ShimError::NoEntry(_) => Code::INVALID_ARGUMENT,
            ShimError::Engine(EngineError::Compile(_) | EngineError::NoEntryPoint | EngineError::NotHttp) => {
                Code::INVALID_ARGUMENT
            }
            ShimError::Unsupported(_) => Code::UNIMPLEMENTED,
            ShimError::Artifact(e) => e.code(),
            _ => Code::INTERNAL,
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}
