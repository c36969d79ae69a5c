//! What `kubectl exec` into a running Wasm container needs from its pod worker: the runtime that
//! started it, the pod's context in it (its executor, in the pod's network namespace) and what the
//! container was started with. The worker records it with each run in the [`LogIndex`](super::log_index::LogIndex).

use std::sync::Arc;

use crate::runtime::{ContainerRuntime, Launch, PodContext};

/// One container run, as an exec reaches it.
#[derive(Clone)]
pub struct ExecTarget {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub pod: Arc<dyn PodContext>,
    pub launch: Launch,
}
