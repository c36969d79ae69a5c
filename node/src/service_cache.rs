//! One per-node cache of Services and EndpointSlices (a reflector with subscribers), feeding the
//! service proxy, the cluster DNS and the ingress: each object is watched, decoded and held once
//! on the node, with one slice bookkeeping (which slices belong to which Service).
//!
//! [`ServiceCache::start`] watches both kinds and keeps a [`Store`]; a [`Subscription`] hands its
//! holder, batch by batch, the keys of the Services whose object or slices changed, and the holder
//! reads what it needs from the shared store. A subscriber hears nothing before both first lists
//! are in; its first batch then names every Service (so one subscribing late catches up the same
//! way). After a re-list (a broken watch), every Service of the old or new list is named.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::proxy::model;

/// `namespace/name`.
pub type Key = (String, String);

/// The store, shared between the reflector (the only writer) and the subscribers.
pub type SharedStore = Arc<RwLock<Store>>;

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// The Service a slice belongs to (its `kubernetes.io/service-name` label), in the slice's namespace.
fn service_of(slice: &EndpointSlice) -> Option<Key> {
    let ns = slice.metadata.namespace.clone().unwrap_or_default();
    model::slice_service(slice).map(|s| (ns, s.to_string()))
}

/// Services, EndpointSlices and which slices belong to which Service. Every write returns the
/// Services it touched.
#[derive(Default)]
pub struct Store {
    services: HashMap<Key, Service>,
    slices: HashMap<Key, EndpointSlice>,
    /// Service -> names of its slices (in its namespace).
    by_service: HashMap<Key, BTreeSet<String>>,
    /// Whether the first list of Services and of EndpointSlices is in.
    listed: (bool, bool),
}

impl Store {
    /// Both first lists are in.
    pub fn synced(&self) -> bool {
        self.listed.0 && self.listed.1
    }

    /// Service `key`, if there is one.
    pub fn service(&self, key: &Key) -> Option<&Service> {
        self.services.get(key)
    }

    /// The keys of every Service.
    pub fn service_keys(&self) -> impl Iterator<Item = &Key> {
        self.services.keys()
    }

    /// The slices of Service `key`, by slice name.
    pub fn slices_of(&self, key: &Key) -> Vec<&EndpointSlice> {
        self.by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.slices.get(&(key.0.clone(), name.clone())))
            .collect()
    }

    /// Replaces every Service (a fresh list).
    pub fn reset_services(&mut self, services: Vec<Service>) -> BTreeSet<Key> {
        let mut touched: BTreeSet<Key> = self.services.keys().cloned().collect();
        self.services = services.into_iter().map(|s| (key_of(&s.metadata), s)).collect();
        touched.extend(self.services.keys().cloned());
        self.listed.0 = true;
        touched
    }

    /// A Service added or changed.
    pub fn put_service(&mut self, svc: Service) -> Key {
        let key = key_of(&svc.metadata);
        self.services.insert(key.clone(), svc);
        key
    }

    /// A Service deleted.
    pub fn remove_service(&mut self, svc: &Service) -> Key {
        let key = key_of(&svc.metadata);
        self.services.remove(&key);
        key
    }

    /// Replaces every slice (a fresh list).
    pub fn reset_slices(&mut self, slices: Vec<EndpointSlice>) -> BTreeSet<Key> {
        let old: Vec<Key> = self.slices.keys().cloned().collect();
        let mut touched = BTreeSet::new();
        for key in old {
            touched.extend(self.take_slice(&key));
        }
        for slice in slices {
            touched.extend(self.insert_slice(slice));
        }
        self.listed.1 = true;
        touched
    }

    /// A slice added or changed (it may have moved to another Service: both are touched).
    pub fn put_slice(&mut self, slice: EndpointSlice) -> BTreeSet<Key> {
        let key = key_of(&slice.metadata);
        let mut touched: BTreeSet<Key> = self.take_slice(&key).into_iter().collect();
        touched.extend(self.insert_slice(slice));
        touched
    }

    /// A slice deleted.
    pub fn remove_slice(&mut self, slice: &EndpointSlice) -> Option<Key> {
        self.take_slice(&key_of(&slice.metadata))
    }

    fn insert_slice(&mut self, slice: EndpointSlice) -> Option<Key> {
        let key = key_of(&slice.metadata);
        let service = service_of(&slice);
        if let Some(service) = &service {
            self.by_service.entry(service.clone()).or_default().insert(key.1.clone());
        }
        self.slices.insert(key, slice);
        service
    }

    fn take_slice(&mut self, key: &Key) -> Option<Key> {
        let slice = self.slices.remove(key)?;
        let service = service_of(&slice)?;
        if let Some(names) = self.by_service.get_mut(&service) {
            names.remove(&key.1);
            if names.is_empty() {
                self.by_service.remove(&service);
            }
        }
        Some(service)
    }
}

type Subscribers = Arc<Mutex<Vec<mpsc::UnboundedSender<BTreeSet<Key>>>>>;

/// The node's running reflector of Services and EndpointSlices.
pub struct ServiceCache {
    store: SharedStore,
    subscribers: Subscribers,
    task: JoinHandle<()>,
}

impl ServiceCache {
    /// Starts watching every Service and EndpointSlice through `client`.
    pub fn start(client: kube::Client) -> Self {
        let store = SharedStore::default();
        let subscribers = Subscribers::default();
        let task = tokio::spawn(run(client, Arc::clone(&store), Arc::clone(&subscribers)));
        ServiceCache { store, subscribers, task }
    }

    /// A cache fed by hand (for tests): [`ServiceCache::store`] is written by the caller, who calls
    /// [`ServiceCache::publish`] after each change.
    #[cfg(test)]
    pub fn detached() -> Self {
        let task = tokio::spawn(async {});
        ServiceCache { store: SharedStore::default(), subscribers: Subscribers::default(), task }
    }

    /// The shared store.
    pub fn store(&self) -> SharedStore {
        Arc::clone(&self.store)
    }

    /// A new subscriber; once the store is synced its first batch names every Service.
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subscribers = self.subscribers.lock();
        let store = self.store.read();
        if store.synced() {
            let _ = tx.send(store.service_keys().cloned().collect());
        }
        drop(store);
        subscribers.push(tx);
        Subscription { store: Arc::clone(&self.store), rx }
    }

    /// Tells every subscriber that `touched` changed, if the store is synced (what the reflector
    /// does after each batch; for tests).
    #[cfg(test)]
    pub fn publish(&self, touched: BTreeSet<Key>) {
        publish(&self.store, &self.subscribers, touched);
    }

    /// Stops watching (subscribers see their stream end). Also done on drop.
    pub fn stop(&self) {
        self.task.abort();
        self.subscribers.lock().clear();
    }
}

impl Drop for ServiceCache {
    fn drop(&mut self) {
        self.stop();
    }
}

fn publish(store: &SharedStore, subscribers: &Subscribers, touched: BTreeSet<Key>) {
    if touched.is_empty() || !store.read().synced() {
        return;
    }
    subscribers.lock().retain(|tx| tx.send(touched.clone()).is_ok());
}

/// What one subscriber hears from the cache, and the store to read.
pub struct Subscription {
    /// The store the changes are about.
    pub store: SharedStore,
    rx: mpsc::UnboundedReceiver<BTreeSet<Key>>,
}

impl Subscription {
    /// The Services changed since the last call (every batch already waiting, merged); waits for
    /// one. `None` once the cache has stopped.
    pub async fn changed(&mut self) -> Option<BTreeSet<Key>> {
        let mut keys = self.rx.recv().await?;
        while let Ok(more) = self.rx.try_recv() {
            keys.extend(more);
        }
        Some(keys)
    }

    /// The batches as a stream (for a holder that selects over other watches too).
    pub fn into_stream(self) -> futures::stream::BoxStream<'static, BTreeSet<Key>> {
        futures::stream::unfold(self.rx, |mut rx| async move { rx.recv().await.map(|keys| (keys, rx)) }).boxed()
    }
}

/// One watch event of either kind (boxed: the two differ much in size).
enum Input {
    Services(Box<Result<Event<Service>, watcher::Error>>),
    Slices(Box<Result<Event<EndpointSlice>, watcher::Error>>),
}

async fn run(client: kube::Client, store: SharedStore, subscribers: Subscribers) {
    let services = watcher::watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|e| Input::Services(Box::new(e)));
    let slices = watcher::watcher(Api::<EndpointSlice>::all(client), watcher::Config::default())
        .default_backoff()
        .map(|e| Input::Slices(Box::new(e)));
    let mut inputs = futures::stream::select(services, slices).boxed();
    let (mut init_services, mut init_slices) = (Vec::new(), Vec::new());
    // Touched before both first lists were in: told with the first batch after.
    let mut pending: BTreeSet<Key> = BTreeSet::new();
    while let Some(first) = inputs.next().await {
        // Take everything already waiting, so a burst of changes is one batch for the subscribers.
        let mut batch = vec![first];
        crate::batch::take_ready(&mut batch, &mut inputs);
        let span = tracing::debug_span!("service_cache_batch", events = batch.len());
        let _enter = span.enter();
        {
            let mut store = store.write();
            for input in batch {
                match input {
                    Input::Services(event) => match *event {
                        Ok(Event::Init) => init_services.clear(),
                        Ok(Event::InitApply(s)) => init_services.push(s),
                        Ok(Event::InitDone) => pending.extend(store.reset_services(std::mem::take(&mut init_services))),
                        Ok(Event::Apply(s)) => {
                            pending.insert(store.put_service(s));
                        }
                        Ok(Event::Delete(s)) => {
                            pending.insert(store.remove_service(&s));
                        }
                        Err(e) => tracing::warn!(error = %e, "watching Services"),
                    },
                    Input::Slices(event) => match *event {
                        Ok(Event::Init) => init_slices.clear(),
                        Ok(Event::InitApply(s)) => init_slices.push(s),
                        Ok(Event::InitDone) => pending.extend(store.reset_slices(std::mem::take(&mut init_slices))),
                        Ok(Event::Apply(s)) => pending.extend(store.put_slice(s)),
                        Ok(Event::Delete(s)) => pending.extend(store.remove_slice(&s)),
                        Err(e) => tracing::warn!(error = %e, "watching EndpointSlices"),
                    },
                }
            }
            if !store.synced() {
                continue;
            }
        }
        tracing::debug!(services = pending.len(), "services changed");
        publish(&store, &subscribers, std::mem::take(&mut pending));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn service(name: &str) -> Service {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": "d"}, "spec": {}})).unwrap()
    }

    fn slice(name: &str, service: &str) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "d", "labels": {model::SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4", "endpoints": []
        }))
        .unwrap()
    }

    fn key(name: &str) -> Key {
        ("d".to_string(), name.to_string())
    }

    #[test]
    fn slices_are_filed_under_their_service_and_writes_say_what_they_touched() {
        let mut s = Store::default();
        assert!(!s.synced());
        assert_eq!(s.reset_services(vec![service("a"), service("b")]), [key("a"), key("b")].into());
        assert_eq!(s.put_slice(slice("a-1", "a")), [key("a")].into());
        assert_eq!(s.put_slice(slice("a-2", "a")), [key("a")].into());
        assert_eq!(s.slices_of(&key("a")).len(), 2);
        // A slice relabelled to another Service touches both.
        assert_eq!(s.put_slice(slice("a-2", "b")), [key("a"), key("b")].into());
        assert_eq!(s.slices_of(&key("a")).len(), 1);
        assert_eq!(s.slices_of(&key("b")).len(), 1);
        assert!(!s.synced(), "no slice list yet");
        assert_eq!(s.reset_slices(vec![slice("b-1", "b")]), [key("a"), key("b")].into());
        assert!(s.synced());
        assert!(s.slices_of(&key("a")).is_empty());
        assert_eq!(s.remove_slice(&slice("b-1", "b")), Some(key("b")));
        assert!(s.by_service.is_empty() && s.slices.is_empty());
        assert_eq!(s.remove_service(&service("a")), key("a"));
        assert_eq!(s.reset_services(vec![service("c")]), [key("b"), key("c")].into());
        assert!(s.service(&key("c")).is_some() && s.service(&key("b")).is_none());
    }

    #[tokio::test]
    async fn subscribers_hear_nothing_before_the_sync_then_everything_then_changes() {
        let cache = ServiceCache::detached();
        let mut early = cache.subscribe();
        cache.store().write().reset_services(vec![service("a")]);
        cache.publish([key("a")].into());
        assert!(early.rx.try_recv().is_err(), "not synced yet");
        cache.store().write().reset_slices(Vec::new());
        cache.publish([key("a")].into());
        cache.store().write().put_service(service("b"));
        cache.publish([key("b")].into());
        assert_eq!(early.changed().await, Some([key("a"), key("b")].into()), "batches waiting are merged");
        // A late subscriber's first batch names every Service.
        let mut late = cache.subscribe();
        assert_eq!(late.changed().await, Some([key("a"), key("b")].into()));
        cache.stop();
        assert_eq!(late.changed().await, None);
    }
}
