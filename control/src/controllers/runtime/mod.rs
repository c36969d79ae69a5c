//! The controller runtime: informers over the in-process watch cache, a de-duplicated work queue
//! with per-key back-off, a [`Controller`] driver and a [`Supervisor`]. Controllers built on it
//! are driven by watch events only (nothing polls the store on a timer) and write only through
//! the [`Registry`](crate::api::registry::Registry).
//!
//! A controller in a few lines:
//!
//! ```ignore
//! let pods = informers.get("", "Pod");
//! let sets = informers.get("apps", "ReplicaSet");
//! supervisor.spawn("controller-replicaset", move || {
//!     Controller::new("replicaset", Arc::clone(&sets))
//!         .owns(Arc::clone(&pods), "ReplicaSet")
//!         .run(Arc::clone(&ctx), probe.clone(), reconcile)
//! });
//! async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> { .. }
//! ```

pub mod controller;
pub mod entry;
pub mod informer;
pub mod informers;
pub mod key;
pub mod queue;
pub mod supervisor;
#[cfg(test)]
pub mod testing;

use std::time::Duration;

pub use controller::{controller_key, Controller, Mapper};
pub use informer::{controller_ref, owner_uids, Change, Informer};
pub use informers::Informers;
pub use key::ObjectKey;
pub use queue::WorkQueue;
pub use supervisor::{Probe, Supervisor, TaskState};

use crate::api::error::ApiError;

/// What a reconcile asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Converged: wait for the next change.
    Done,
    /// Look again after the delay (e.g. a `minReadySeconds` or progress deadline to pass).
    RequeueAfter(Duration),
}

/// A reconcile or task failure; the key is retried with back-off, the task restarted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused a read or write.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}
