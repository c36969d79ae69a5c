//! The watch cache: one store watch over `/registry/`, fanned out to every client watch.
//!
//! Keeps the most recent events in a ring so a client can resume from a recent
//! `resourceVersion`; older than the ring gives `410 Gone` (`Expired`), as in Kubernetes. Each
//! event's JSON is parsed once here, not once per watcher.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::broadcast;

use super::error::ApiError;
use super::object;
use crate::store::{Event, EventKind, Revision, Store};

/// Events the ring keeps for resuming watches.
const RING_CAPACITY: usize = 20_000;
/// Events a slow watcher may fall behind before it is closed (the client then re-lists).
const FANOUT_CAPACITY: usize = 65_536;

/// One store event, decoded once.
#[derive(Debug)]
pub struct CachedEvent {
    pub key: String,
    pub revision: Revision,
    pub deleted: bool,
    /// True for the put that created the key.
    pub created: bool,
    /// The object after the event (for a delete: its last state), `resourceVersion` set.
    pub object: Arc<Value>,
    /// The object before the event, when there was one.
    pub prev: Option<Arc<Value>>,
    /// `object` as JSON, encoded once for all watchers that want it whole.
    json: std::sync::OnceLock<String>,
}

/// The backlog a new watch starts with and the receiver of the events that follow it.
pub type Subscription = (Vec<Arc<CachedEvent>>, broadcast::Receiver<Arc<CachedEvent>>);

impl CachedEvent {
    pub fn object_json(&self) -> &str {
        self.json.get_or_init(|| self.object.to_string())
    }
}

struct Ring {
    events: VecDeque<Arc<CachedEvent>>,
    /// Every event after this revision is in `events`.
    complete_after: Revision,
    latest: Revision,
}

/// See the module documentation.
pub struct WatchCache {
    ring: Mutex<Ring>,
    fanout: broadcast::Sender<Arc<CachedEvent>>,
}

fn decode(event: &Event) -> Option<CachedEvent> {
    let mut object: Value = serde_json::from_slice(&event.kv.value).ok()?;
    object::set_resource_version(&mut object, event.kv.mod_revision);
    let prev = event.prev.as_ref().and_then(|p| {
        let mut v: Value = serde_json::from_slice(&p.value).ok()?;
        object::set_resource_version(&mut v, p.mod_revision);
        Some(Arc::new(v))
    });
    Some(CachedEvent {
        key: event.kv.key.clone(),
        revision: event.kv.mod_revision,
        deleted: event.kind == EventKind::Delete,
        created: event.kind == EventKind::Put && event.kv.create_revision == event.kv.mod_revision,
        object: Arc::new(object),
        prev,
        json: std::sync::OnceLock::new(),
    })
}

impl WatchCache {
    /// Starts following the store from its current revision.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Self>, crate::store::StoreError> {
        let start = store.current_revision().await?;
        let (fanout, _) = broadcast::channel(FANOUT_CAPACITY);
        let cache = Arc::new(Self {
            ring: Mutex::new(Ring { events: VecDeque::new(), complete_after: start, latest: start }),
            fanout,
        });
        tokio::spawn(Arc::clone(&cache).follow(store));
        Ok(cache)
    }

    async fn follow(self: Arc<Self>, store: Arc<dyn Store>) {
        loop {
            let after = self.latest();
            match store.watch("/registry/", after).await {
                Ok(mut stream) => {
                    while let Some(item) = stream.next().await {
                        match item {
                            Ok(event) => self.push(&event),
                            Err(err) => {
                                tracing::warn!(error = %err, "store watch ended; resuming");
                                break;
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, after, "store watch failed; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn push(&self, event: &Event) {
        let Some(cached) = decode(event) else {
            tracing::warn!(key = %event.kv.key, "undecodable object in store; skipped");
            return;
        };
        let cached = Arc::new(cached);
        let mut ring = self.ring.lock();
        if cached.revision <= ring.latest {
            return;
        }
        ring.latest = cached.revision;
        ring.events.push_back(Arc::clone(&cached));
        if ring.events.len() > RING_CAPACITY {
            if let Some(old) = ring.events.pop_front() {
                ring.complete_after = old.revision;
            }
        }
        // Sent under the lock so a subscriber never misses or duplicates an event.
        let _ = self.fanout.send(cached);
    }

    /// The newest revision the cache has seen.
    pub fn latest(&self) -> Revision {
        self.ring.lock().latest
    }

    /// Subscribes to live events and returns the newest revision at that instant: every event
    /// after it arrives on the receiver.
    pub fn subscribe_now(&self) -> (Revision, broadcast::Receiver<Arc<CachedEvent>>) {
        let ring = self.ring.lock();
        (ring.latest, self.fanout.subscribe())
    }

    /// Events after `after` still in the ring, and a receiver for those that follow.
    pub fn subscribe_from(&self, after: Revision) -> Result<Subscription, ApiError> {
        let ring = self.ring.lock();
        if after < ring.complete_after {
            return Err(ApiError::Gone { requested: after, oldest: ring.complete_after + 1 });
        }
        let backlog = ring.events.iter().filter(|e| e.revision > after).cloned().collect();
        Ok((backlog, self.fanout.subscribe()))
    }

    /// Waits until the cache has seen `revision` (for a read-your-writes watch), bounded.
    pub async fn wait_for(&self, revision: Revision) {
        for _ in 0..300 {
            if self.latest() >= revision {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
