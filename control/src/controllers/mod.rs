//! In-process controllers. Each is a client of the [`Registry`](crate::api::registry::Registry)
//! (the API machinery with its admission rules), never of the store.

pub mod compaction;
pub mod garbage_collector;
pub mod namespace;
pub mod service_accounts;

use std::sync::Arc;

use crate::api::registry::Registry;

/// Starts every controller as a background task.
pub fn start(registry: Arc<Registry>) {
    tokio::spawn(namespace::run(Arc::clone(&registry)));
    tokio::spawn(garbage_collector::run(Arc::clone(&registry)));
    tokio::spawn(crate::scheduler::run(Arc::clone(&registry)));
    tokio::spawn(service_accounts::run(Arc::clone(&registry)));
    tokio::spawn(compaction::run(registry));
}
