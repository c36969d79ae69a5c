//! The pool of prepared sandboxes: a background task keeps `pool_size` of them wired ahead of demand,
//! at most two being prepared at a time.

use std::sync::{Arc, Weak};

use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;

use super::manager::Inner;
use super::wire;

/// How many sandboxes are prepared concurrently.
pub const REFILL_CONCURRENCY: usize = 2;

/// Runs until the manager is dropped or closed; wakes up whenever `notify` is signalled.
pub async fn refill_loop(weak: Weak<Inner>, notify: Arc<Notify>, permits: Arc<Semaphore>) {
    loop {
        notify.notified().await;
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let Some(inner) = weak.upgrade() else {
                return;
            };
            if inner.is_closed() {
                return;
            }
            let Some(id) = inner.start_pool_prepare() else {
                break;
            };
            let span = tracing::info_span!("sandbox_pool_prepare", container_id = %id);
            tokio::spawn(
                async move {
                    let res = wire::prepare(inner.cni(), inner.netns_prefix(), &id).await;
                    inner.finish_pool_prepare(&id, res).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
}
