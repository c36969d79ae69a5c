//! Objects under a few storage prefixes that admission reads on every write (LimitRanges and
//! ResourceQuotas by namespace, Namespaces by name), kept from the in-process watch cache's
//! events: listed once on first use, never per request, never polled.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::{broadcast, OnceCell};

use crate::api::watch_cache::{list_decoded, relist, WatchCache};
use crate::store::{Revision, Store, StoreError};

#[derive(Default)]
struct Objects {
    /// Store key -> object (with `resourceVersion`).
    by_key: BTreeMap<String, Arc<Value>>,
    /// The revision the map is complete up to.
    revision: Revision,
}

/// See the module documentation. Started on first use.
pub struct PrefixCache {
    /// What it holds, for its log lines.
    name: &'static str,
    prefixes: &'static [&'static str],
    store: Arc<dyn Store>,
    watch: Arc<WatchCache>,
    objects: RwLock<Objects>,
    started: OnceCell<()>,
}

impl PrefixCache {
    /// A cache of the objects under `prefixes` of `store`, following `watch` once first read.
    pub fn new(
        name: &'static str,
        prefixes: &'static [&'static str],
        store: Arc<dyn Store>,
        watch: Arc<WatchCache>,
    ) -> Self {
        Self { name, prefixes, store, watch, objects: RwLock::new(Objects::default()), started: OnceCell::new() }
    }

    async fn started(self: &Arc<Self>) -> Result<(), StoreError> {
        self.started
            .get_or_try_init(|| async {
                let events = self.prime().await?;
                tokio::spawn(Arc::clone(self).follow(events));
                Ok::<(), StoreError>(())
            })
            .await
            .map(|_| ())
    }

    /// The object stored under `key` as far as the cache has followed (one of its prefixes).
    pub async fn get(self: &Arc<Self>, key: &str) -> Result<Option<Arc<Value>>, StoreError> {
        self.started().await?;
        Ok(self.objects.read().by_key.get(key).cloned())
    }

    /// The objects under `prefix` (one of the cache's) in namespace `ns`.
    pub async fn in_namespace(self: &Arc<Self>, prefix: &str, ns: &str) -> Result<Vec<Arc<Value>>, StoreError> {
        self.started().await?;
        let start = format!("{prefix}{ns}/");
        let objects = self.objects.read();
        Ok(objects
            .by_key
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .map(|(_, v)| Arc::clone(v))
            .collect())
    }

    /// Lists every prefix; returns the subscription to follow from there.
    async fn prime(&self) -> Result<crate::api::watch_cache::Receiver, StoreError> {
        // Subscribed before listing: no change between the two is missed.
        let (_, events) = self.watch.subscribe_now();
        let mut fresh = Objects::default();
        fresh.revision = list_decoded(self.store.as_ref(), self.prefixes, |key, obj| {
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
                    if !self.prefixes.iter().any(|p| event.key.starts_with(p)) {
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
                        objects.by_key.insert(event.key.clone(), event.object());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, cache = self.name, "admission cache fell behind; re-listing");
                    events = relist(self.name, || self.prime()).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
