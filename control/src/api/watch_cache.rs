//! The watch cache: one store watch over `/registry/`, read by every client watch and informer.
//!
//! Keeps the most recent events in a ring so a client can resume from a recent
//! `resourceVersion`; older than the ring gives `410 Gone` (`Expired`), as in Kubernetes. Each
//! event's JSON is parsed once here, not once per watcher. Readers ([`Receiver`]) keep only a
//! cursor into the ring, so the ring is the only memory events hold: a reader that falls behind
//! its start has lagged and must list again.
//!
//! An event keeps its stored bytes and those of the previous state. The newest [`HOT_EVENTS`]
//! also keep their object decoded without `metadata.managedFields` (no reader of the cache looks
//! at them, and they are about half of a decoded object) and, once a watcher asked, the lines
//! watchers of whole objects are sent (JSON or protobuf, per event type), shared by all of them;
//! older events decode on demand. A decoded object takes about ten times its
//! stored size, so the ring's history is bounded by its stored bytes and its memory by the hot few.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;

use super::error::ApiError;
use super::object;
use crate::store::{Event, EventKind, Revision, Store};

pub use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// Events the ring keeps at most, for resuming watches and for readers that are behind.
const RING_CAPACITY: usize = 20_000;
/// Stored bytes (objects and previous states) the ring keeps at most, so that a count alone does
/// not let large objects (a burst of 1 MB ConfigMaps) take gigabytes.
const RING_BYTES: usize = 32 << 20;
/// The newest events, which keep their objects decoded (about ten times their stored size) for
/// the readers that follow closely; older events decode again when read.
const HOT_EVENTS: usize = 1024;
/// Events the ring keeps however large they are.
const RING_MIN_EVENTS: usize = 100;

/// One store event. Its object is decoded once, when the event arrives, and kept decoded while
/// the event is among the ring's [`HOT_EVENTS`] newest (when the in-process readers and live
/// watches read it); an older event keeps only its stored bytes and decodes them again for the
/// rare reader that is that far behind.
#[derive(Debug)]
pub struct CachedEvent {
    pub key: String,
    pub revision: Revision,
    pub deleted: bool,
    /// True for the put that created the key.
    pub created: bool,
    /// The stored bytes of the object after the event (for a delete: its last state).
    stored: Vec<u8>,
    /// The stored bytes and revision of the object before the event, when there was one.
    prev: Option<(Vec<u8>, Revision)>,
    /// The decoded forms, while the event is hot.
    hot: Mutex<Hot>,
}

/// What a hot event keeps decoded.
#[derive(Debug, Default)]
struct Hot {
    /// The object, `resourceVersion` set, `metadata.managedFields` dropped.
    object: Option<Arc<Value>>,
    /// The previous state the same way, once a watcher with selectors asked: every kubelet
    /// watches pods with `spec.nodeName=<its node>`, and each tests every pod event against the
    /// state before it.
    prev: Option<Arc<Value>>,
    /// The whole object as JSON in kube-apiserver's field order, encoded once for every watcher.
    json: Option<Arc<str>>,
    /// The event's watch lines (ADDED, MODIFIED, DELETED; JSON and protobuf) as watchers of whole
    /// objects get them, each made once and shared by every such watcher (no copy per watcher).
    lines: [[Option<Bytes>; 3]; 2],
}

/// The encodings of a shared watch line.
#[derive(Clone, Copy, Debug)]
pub enum LineFormat {
    Json = 0,
    Protobuf = 1,
}

/// One watch event as a JSON line: `{"type":KIND,"object":OBJECT}` and a newline.
pub fn watch_line(kind: &str, object_json: &str) -> Bytes {
    Bytes::from(format!("{{\"type\":\"{kind}\",\"object\":{object_json}}}\n"))
}

impl CachedEvent {
    /// The object after the event (for a delete: its last state), `resourceVersion` set and
    /// `metadata.managedFields` dropped (no reader of the cache looks at them, and they are about
    /// half of a decoded object).
    pub fn object(&self) -> Arc<Value> {
        if let Some(object) = &self.hot.lock().object {
            return Arc::clone(object);
        }
        let mut object = self.full_object();
        take_managed_fields(&mut object);
        Arc::new(object)
    }

    /// The whole object (managed fields included) as JSON, in kube-apiserver's field order.
    pub fn object_json(&self) -> Arc<str> {
        if let Some(json) = &self.hot.lock().json {
            return Arc::clone(json);
        }
        let json: Arc<str> = crate::api::http::protobuf::field_order::to_string(&self.full_object()).into();
        let mut hot = self.hot.lock();
        if hot.object.is_some() {
            hot.json = Some(Arc::clone(&json));
        }
        json
    }

    /// The event's line in `format` with type `kind` for a watcher of whole objects: `make`
    /// encodes it, once per hot event for ADDED, MODIFIED and DELETED, and every such watcher then
    /// shares it. `None` when `make` gives none.
    pub fn shared_line(&self, format: LineFormat, kind: &str, make: impl FnOnce() -> Option<Bytes>) -> Option<Bytes> {
        let slot = match kind {
            "ADDED" => 0,
            "MODIFIED" => 1,
            "DELETED" => 2,
            _ => return make(),
        };
        if let Some(line) = &self.hot.lock().lines[format as usize][slot] {
            return Some(line.clone());
        }
        let line = make()?;
        let mut hot = self.hot.lock();
        if hot.object.is_some() {
            hot.lines[format as usize][slot] = Some(line.clone());
        }
        Some(line)
    }

    /// The whole object, managed fields included, decoded now.
    pub fn full_object(&self) -> Value {
        decode_stored(&self.stored, self.revision).unwrap_or(Value::Null)
    }

    /// True when the event has a previous state.
    pub fn has_prev(&self) -> bool {
        self.prev.is_some()
    }

    /// The object before the event (`resourceVersion` set, managed fields dropped): decoded
    /// once while the event is hot, shared by every watcher that asks.
    pub fn prev_object(&self) -> Option<Arc<Value>> {
        let (bytes, revision) = self.prev.as_ref()?;
        if let Some(prev) = &self.hot.lock().prev {
            return Some(Arc::clone(prev));
        }
        let mut v = decode_stored(bytes, *revision)?;
        take_managed_fields(&mut v);
        let prev = Arc::new(v);
        let mut hot = self.hot.lock();
        if hot.object.is_some() {
            hot.prev = Some(Arc::clone(&prev));
        }
        Some(prev)
    }

    /// Drops the decoded forms: the event is no longer among the newest.
    fn cool(&self) {
        *self.hot.lock() = Hot::default();
    }

    /// The memory the event holds for the ring's budget: its stored bytes and previous state.
    fn stored_size(&self) -> usize {
        self.stored.len().saturating_add(self.prev.as_ref().map_or(0, |p| p.0.len()))
    }
}

/// Stored bytes as an object with `resourceVersion` set, if they are JSON.
fn decode_stored(bytes: &[u8], revision: Revision) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(bytes).ok()?;
    object::set_resource_version(&mut v, revision);
    Some(v)
}

/// Lists every key under each of `prefixes` a page at a time, all at one revision (that of the
/// first page), and hands each value that decodes as JSON (`resourceVersion` set) to `visit`;
/// returns that revision. For the small caches that list once, then follow a [`Receiver`].
pub async fn list_decoded(
    store: &dyn Store,
    prefixes: &[&str],
    mut visit: impl FnMut(&str, Value),
) -> Result<Revision, crate::store::StoreError> {
    let mut revision = None;
    for prefix in prefixes {
        let mut start_after = None;
        loop {
            let options = crate::store::ListOptions { start_after: start_after.take(), limit: Some(500), revision };
            let page = store.list(prefix, options).await?;
            revision = Some(page.revision);
            for kv in &page.items {
                if let Ok(mut obj) = serde_json::from_slice::<Value>(&kv.value) {
                    object::set_resource_version(&mut obj, kv.mod_revision);
                    visit(&kv.key, obj);
                }
            }
            if !page.more {
                break;
            }
            start_after = page.items.last().map(|kv| kv.key.clone());
        }
    }
    Ok(revision.unwrap_or(0))
}

/// For a cache that fell behind the watch cache: lists again with `prime` (which subscribes, then
/// lists) until it succeeds, a second apart, and returns the new subscription.
pub async fn relist<F, Fut>(what: &str, mut prime: F) -> Receiver
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Receiver, crate::store::StoreError>>,
{
    loop {
        match prime().await {
            Ok(events) => return events,
            Err(err) => {
                tracing::warn!(error = %err, cache = what, "re-list failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Removes and returns `metadata.managedFields`.
pub fn take_managed_fields(obj: &mut Value) -> Option<Value> {
    obj.get_mut("metadata").and_then(Value::as_object_mut)?.remove("managedFields")
}

struct Ring {
    events: VecDeque<Arc<CachedEvent>>,
    /// The stored size of the events in the ring.
    bytes: usize,
    /// Every event after this revision is in `events`.
    complete_after: Revision,
    latest: Revision,
}

/// See the module documentation.
pub struct WatchCache {
    ring: Mutex<Ring>,
    /// The newest revision in the ring: readers wait on it.
    newest: watch::Sender<Revision>,
}

/// The event decoded, or its key when the stored bytes are not JSON.
fn decode(event: Event) -> Result<CachedEvent, String> {
    let Some(mut object) = decode_stored(&event.kv.value, event.kv.mod_revision) else { return Err(event.kv.key) };
    take_managed_fields(&mut object);
    Ok(CachedEvent {
        revision: event.kv.mod_revision,
        deleted: event.kind == EventKind::Delete,
        created: event.kind == EventKind::Put && event.kv.create_revision == event.kv.mod_revision,
        hot: Mutex::new(Hot { object: Some(Arc::new(object)), ..Hot::default() }),
        prev: event.prev.map(|p| (p.value, p.mod_revision)),
        stored: event.kv.value,
        key: event.kv.key,
    })
}

/// A reader of the cache's events: a cursor into the ring. Dropping it costs the cache nothing.
pub struct Receiver {
    cache: Arc<WatchCache>,
    /// The revision of the last event returned.
    after: Revision,
    newest: watch::Receiver<Revision>,
}

impl Receiver {
    /// The next event, waiting for one. `Lagged` when the ring moved past events this reader had
    /// not read (it then continues from the oldest event the ring holds). Cancel-safe.
    pub async fn recv(&mut self) -> Result<Arc<CachedEvent>, RecvError> {
        loop {
            self.newest.borrow_and_update();
            match self.try_recv() {
                Ok(ev) => return Ok(ev),
                Err(TryRecvError::Lagged(n)) => return Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => return Err(RecvError::Closed),
                Err(TryRecvError::Empty) => {}
            }
            if self.newest.changed().await.is_err() {
                return Err(RecvError::Closed);
            }
        }
    }

    /// The next event if there is one now.
    pub fn try_recv(&mut self) -> Result<Arc<CachedEvent>, TryRecvError> {
        let ring = self.cache.ring.lock();
        if self.after < ring.complete_after {
            let missed = u64::try_from(ring.complete_after - self.after).unwrap_or(u64::MAX);
            self.after = ring.complete_after;
            return Err(TryRecvError::Lagged(missed));
        }
        let next = ring.events.partition_point(|e| e.revision <= self.after);
        match ring.events.get(next) {
            Some(ev) => {
                self.after = ev.revision;
                Ok(Arc::clone(ev))
            }
            None => Err(TryRecvError::Empty),
        }
    }
}

impl WatchCache {
    /// Starts following the store from its current revision.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Self>, crate::store::StoreError> {
        let start = store.current_revision().await?;
        let cache = Self::empty(start);
        tokio::spawn(Arc::clone(&cache).follow(store));
        Ok(cache)
    }

    fn empty(start: Revision) -> Arc<Self> {
        Arc::new(Self {
            ring: Mutex::new(Ring { events: VecDeque::new(), bytes: 0, complete_after: start, latest: start }),
            newest: watch::channel(start).0,
        })
    }

    async fn follow(self: Arc<Self>, store: Arc<dyn Store>) {
        loop {
            let after = self.latest();
            match store.watch("/registry/", after).await {
                Ok(mut stream) => {
                    while let Some(item) = stream.next().await {
                        match item {
                            Ok(event) => self.push(event),
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

    fn push(&self, event: Event) {
        let cached = match decode(event) {
            Ok(cached) => cached,
            Err(key) => {
                tracing::warn!(key = %key, "undecodable object in store; skipped");
                return;
            }
        };
        let revision = cached.revision;
        {
            let mut ring = self.ring.lock();
            if revision <= ring.latest {
                return;
            }
            ring.latest = revision;
            ring.bytes = ring.bytes.saturating_add(cached.stored_size());
            ring.events.push_back(Arc::new(cached));
            if let Some(cooled) = ring.events.len().checked_sub(HOT_EVENTS + 1).and_then(|i| ring.events.get(i)) {
                cooled.cool();
            }
            while ring.events.len() > RING_CAPACITY || (ring.bytes > RING_BYTES && ring.events.len() > RING_MIN_EVENTS)
            {
                let Some(old) = ring.events.pop_front() else { break };
                ring.bytes = ring.bytes.saturating_sub(old.stored_size());
                ring.complete_after = old.revision;
            }
        }
        self.newest.send_replace(revision);
    }

    /// The newest revision the cache has seen.
    pub fn latest(&self) -> Revision {
        self.ring.lock().latest
    }

    /// A reader of every event after the newest revision, and that revision.
    pub fn subscribe_now(self: &Arc<Self>) -> (Revision, Receiver) {
        let ring = self.ring.lock();
        let latest = ring.latest;
        (latest, Receiver { cache: Arc::clone(self), after: latest, newest: self.newest.subscribe() })
    }

    /// A reader of the events after `after`, which must still be in the ring.
    pub fn subscribe_from(self: &Arc<Self>, after: Revision) -> Result<Receiver, ApiError> {
        let ring = self.ring.lock();
        if after < ring.complete_after {
            return Err(ApiError::Gone { requested: after, oldest: ring.complete_after + 1 });
        }
        Ok(Receiver { cache: Arc::clone(self), after, newest: self.newest.subscribe() })
    }

    /// Waits until the cache has seen `revision` (for a read-your-writes watch), bounded.
    pub async fn wait_for(&self, revision: Revision) {
        let mut newest = self.newest.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(3), newest.wait_for(|r| *r >= revision)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyValue;

    fn put(cache: &WatchCache, revision: Revision, value: &str, prev: Option<&str>) {
        let kv = |v: &str, rev| KeyValue {
            key: "/registry/core/configmaps/ns/a".into(),
            value: v.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: rev,
        };
        let event = Event { kind: EventKind::Put, kv: kv(value, revision), prev: prev.map(|p| kv(p, revision - 1)) };
        cache.push(event);
    }

    #[tokio::test]
    async fn readers_follow_in_order_wake_on_new_events_and_lag_past_the_ring() {
        let cache = WatchCache::empty(0);
        let (latest, mut rx) = cache.subscribe_now();
        assert_eq!(latest, 0);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        let waiting = tokio::spawn(async move {
            let ev = rx.recv().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((ev.revision, rx))
        });
        put(&cache, 1, r#"{"metadata":{"name":"a"}}"#, None);
        let (rev, mut rx) = waiting.await.expect("join").expect("event");
        assert_eq!(rev, 1);
        put(&cache, 2, r#"{"metadata":{"name":"a"}}"#, Some("{}"));
        assert_eq!(rx.recv().await.expect("second").revision, 2);

        let mut from_start = cache.subscribe_from(0).expect("in the ring");
        assert_eq!(from_start.try_recv().expect("first").revision, 1);
        for rev in 3..(RING_CAPACITY as Revision + 10) {
            put(&cache, rev, "{}", None);
        }
        assert!(matches!(from_start.try_recv(), Err(TryRecvError::Lagged(_))));
        // After the lag it goes on from the oldest event kept.
        let next = from_start.try_recv().expect("continues").revision;
        assert_eq!(next, cache.ring.lock().complete_after + 1);
        assert!(matches!(cache.subscribe_from(1), Err(ApiError::Gone { .. })));
    }

    #[test]
    fn large_events_are_kept_by_size_but_never_fewer_than_the_minimum() {
        let cache = WatchCache::empty(0);
        let big = format!(r#"{{"data":{{"k":"{}"}}}}"#, "x".repeat(64 << 10));
        let events = RING_BYTES / big.len() * 2;
        for rev in 1..=events as Revision {
            put(&cache, rev, &big, None);
        }
        let ring = cache.ring.lock();
        assert!(ring.bytes <= RING_BYTES, "{} bytes kept", ring.bytes);
        assert!(ring.events.len() >= RING_BYTES / big.len() - 1, "{} events kept", ring.events.len());
        drop(ring);
        // Small events: the minimum count holds even when one huge event fills the budget.
        let cache = WatchCache::empty(0);
        put(&cache, 1, &format!(r#"{{"k":"{}"}}"#, "y".repeat(RING_BYTES)), None);
        for rev in 2..=(RING_MIN_EVENTS as Revision) {
            put(&cache, rev, "{}", None);
        }
        assert_eq!(cache.ring.lock().events.len(), RING_MIN_EVENTS);
    }

    #[test]
    fn managed_fields_are_kept_apart_and_put_back_in_place() {
        let cache = WatchCache::empty(0);
        let stored = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"ns","managedFields":[{"manager":"m"}],"uid":"u"},"data":{"k":"v"}}"#;
        put(&cache, 5, stored, Some(r#"{"metadata":{"name":"a","managedFields":[]}}"#));
        let (_, mut rx) = cache.subscribe_now();
        rx.after = 0;
        let ev = rx.try_recv().expect("event");
        assert!(ev.object().pointer("/metadata/managedFields").is_none(), "not in the shared object");
        let whole: Value = serde_json::from_str(&ev.object_json()).expect("json");
        assert_eq!(whole.pointer("/metadata/managedFields/0/manager"), Some(&Value::from("m")));
        assert_eq!(whole.pointer("/metadata/resourceVersion"), Some(&Value::from("5")));
        assert_eq!(whole, ev.full_object());
        let keys: Vec<&String> = whole["metadata"].as_object().expect("meta").keys().collect();
        assert_eq!(keys, ["managedFields", "name", "namespace", "resourceVersion", "uid"]);
        let prev = ev.prev_object().expect("prev");
        assert_eq!(prev.pointer("/metadata/resourceVersion"), Some(&Value::from("4")));
        assert!(prev.pointer("/metadata/managedFields").is_none());
        assert!(Arc::ptr_eq(&prev, &ev.prev_object().expect("prev")), "decoded once while hot");
    }

    #[test]
    fn older_events_keep_only_their_bytes_and_decode_the_same_again() {
        let cache = WatchCache::empty(0);
        let stored = r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a","managedFields":[{"manager":"m"}]},"data":{"k":"v"}}"#;
        put(&cache, 1, stored, None);
        let (_, mut rx) = cache.subscribe_now();
        rx.after = 0;
        let first = rx.try_recv().expect("event");
        let (hot_object, hot_json) = (first.object(), first.object_json());
        assert!(first.hot.lock().json.is_some(), "a hot event keeps its JSON for the next watcher");
        let json_line = || first.shared_line(LineFormat::Json, "MODIFIED", || Some(watch_line("MODIFIED", &hot_json)));
        let line = json_line().expect("line");
        assert_eq!(line, watch_line("MODIFIED", &hot_json));
        assert_eq!(json_line().map(|l| l.as_ptr()), Some(line.as_ptr()), "one line shared by every watcher");
        let made_again = first.shared_line(LineFormat::Json, "MODIFIED", || panic!("made again"));
        assert_eq!(made_again, Some(line.clone()));
        assert_eq!(first.shared_line(LineFormat::Protobuf, "MODIFIED", || None), None, "per format");
        for rev in 2..=(HOT_EVENTS as Revision) {
            put(&cache, rev, "{}", None);
        }
        assert!(first.hot.lock().object.is_some(), "still among the newest {HOT_EVENTS}");
        put(&cache, HOT_EVENTS as Revision + 1, "{}", None);
        assert!(first.hot.lock().object.is_none() && first.hot.lock().json.is_none(), "cooled");
        assert!(first.hot.lock().lines.iter().flatten().all(Option::is_none), "cooled");
        let cold =
            first.shared_line(LineFormat::Json, "MODIFIED", || Some(watch_line("MODIFIED", &first.object_json())));
        assert_eq!(cold, Some(line));
        assert!(first.hot.lock().lines.iter().flatten().all(Option::is_none), "a cold event keeps no line");
        assert_eq!(first.object(), hot_object);
        assert_eq!(first.object_json(), hot_json);
        assert!(first.hot.lock().json.is_none(), "a cold event decodes for each reader, keeping nothing");
        assert_eq!(first.object().pointer("/metadata/resourceVersion"), Some(&Value::from("1")));
    }
}
