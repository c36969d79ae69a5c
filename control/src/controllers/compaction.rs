//! Compacts store history every five minutes to the revision seen five minutes before, as the
//! Kubernetes API server does. Watches older than that get `410 Gone`.

use std::sync::Arc;
use std::time::Duration;

use crate::api::registry::Registry;

const INTERVAL: Duration = Duration::from_secs(300);

pub async fn run(registry: Arc<Registry>) {
    let mut previous = None;
    let mut ticks = tokio::time::interval(INTERVAL);
    loop {
        ticks.tick().await;
        if let Some(revision) = previous {
            match registry.store.compact(revision).await {
                Ok(()) => tracing::debug!(revision, "store compacted"),
                Err(e) => tracing::warn!(error = %e, revision, "compaction failed"),
            }
        }
        previous = registry.store.current_revision().await.ok();
    }
}
