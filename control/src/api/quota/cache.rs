//! The LimitRanges and ResourceQuotas admission reads, kept from the in-process watch cache's
//! events (listed once on first use, never per request, never polled), by namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::{broadcast, OnceCell};

use crate::api::watch_cache::{list_decoded, WatchCache};
use crate::store::{Revision, Store, StoreError};

/// Storage prefix of LimitRanges.
pub const LIMIT_RANGES: &str = "/registry/core/limitranges/";
/// Storage prefix of ResourceQuotas.
pub const QUOTAS: &str = "/registry/core/resourcequotas/";

#[derive(Default)]
struct Objects {
    /// Store key -> object (with `resourceVersion`).
    by_key: BTreeMap<String, Arc<Value>>,
    /// The revision the map is complete up to.
    revision: Revision,
}

/// See the module documentation. Started on first use.
pub struct Cache {
    store: Arc<dyn Store>,
    watch: Arc<WatchCache>,
    objects: RwLock<Objects>,
    started: OnceCell<()>,
}

impl Cache {
    /// A cache over `store`, following `watch` once first read.
    pub fn new(store: Arc<dyn Store>, watch: Arc<WatchCache>) -> Self {
        Self { store, watch, objects: RwLock::new(Objects::default()), started: OnceCell::new() }
    }

    /// The LimitRanges of a namespace.
    pub async fn limit_ranges(self: &Arc<Self>, ns: &str) -> Result<Vec<Arc<Value>>, StoreError> {
        self.in_namespace(LIMIT_RANGES, ns).await
    }

    /// The ResourceQuotas of a namespace.
    pub async fn quotas(self: &Arc<Self>, ns: &str) -> Result<Vec<Arc<Value>>, StoreError> {
        self.in_namespace(QUOTAS, ns).await
    }

    async fn in_namespace(self: &Arc<Self>, prefix: &str, ns: &str) -> Result<Vec<Arc<Value>>, StoreError> {
        self.started
            .get_or_try_init(|| async {
                let events = self.prime().await?;
                tokio::spawn(Arc::clone(self).follow(events));
                Ok::<(), StoreError>(())
            })
            .await?;
        let start = format!("{prefix}{ns}/");
        let objects = self.objects.read();
        Ok(objects
            .by_key
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .map(|(_, v)| Arc::clone(v))
            .collect())
    }

    /// Lists both kinds; returns the subscription to follow from there.
    async fn prime(&self) -> Result<crate::api::watch_cache::Receiver, StoreError> {
        // Subscribed before listing: no change between the two is missed.
        let (_, events) = self.watch.subscribe_now();
        let mut fresh = Objects::default();
        fresh.revision = list_decoded(self.store.as_ref(), &[LIMIT_RANGES, QUOTAS], |key, obj| {
            fresh.by_key.insert(key.to_string(), Arc::new(obj));
        })
        .await?;
        *self.objects.write() = fresh;
        Ok(events)
    }

    /// Applies the watch cache's events; lagging behind re-lists.
    async fn follow(self: Arc<Self>, mut events: crate::api::watch_cache::Receiver) {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if !(event.key.starts_with(LIMIT_RANGES) || event.key.starts_with(QUOTAS)) {
                        continue;
                    }
                    let mut objects = self.objects.write();
                    if event.revision <= objects.revision {
                        continue;
                    }
                    objects.revision = event.revision;
                    if event.deleted {
                        objects.by_key.remove(&event.key);
                    } else {
                        objects.by_key.insert(event.key.clone(), Arc::clone(&event.object));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "limit range and quota cache fell behind; re-listing");
                    loop {
                        match self.prime().await {
                            Ok(fresh) => {
                                events = fresh;
                                break;
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "limit range and quota cache re-list failed; retrying");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
