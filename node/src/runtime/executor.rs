//! A pod's executor: the engine's [`GuestExecutor`], one OS thread in the pod's network namespace
//! running a current-thread tokio runtime, so every socket a guest of the pod creates lives in the
//! pod's namespace (DESIGN.md, "Wasm workloads"); it fails closed (see `skiff_engine::netns`).

use std::path::Path;

use skiff_engine::netns::{GuestExecutor, NetNs};
use tokio::runtime::Handle;

use super::{PodContext, RuntimeError};

pub struct PodExecutor {
    executor: GuestExecutor,
    /// The pod's uid (the `name` it was started with).
    uid: String,
}

impl PodContext for PodExecutor {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl PodExecutor {
    /// Starts the thread; it enters `netns` (when given) before anything runs on it.
    pub fn start(name: &str, netns: Option<&Path>) -> Result<Self, RuntimeError> {
        let netns = netns.map_or(NetNs::Host, |p| NetNs::Join(p.to_path_buf()));
        let executor = GuestExecutor::start(name, &netns).map_err(|e| RuntimeError::Other(e.to_string()))?;
        Ok(Self { executor, uid: name.to_string() })
    }

    /// The pod's uid.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Where the pod's futures run.
    pub fn handle(&self) -> &Handle {
        self.executor.handle()
    }
}
