//! A reflector and its cache for one resource, over the in-process watch cache.
//!
//! The reflector subscribes to the watch cache, lists the resource at exactly the subscription's
//! revision, then applies the events that follow. If it falls behind the watch cache (the
//! broadcast lagged) or the list is refused (`410`, compacted), it lists again and reports the
//! difference as changes, so nothing is missed. Consumers read the cache ([`Informer::get`],
//! [`Informer::list`], [`Informer::dependents`]) and follow [`Change`]s with
//! [`Informer::subscribe`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use super::key::ObjectKey;
use super::Error;
use crate::api::object;
use crate::api::registry::{ListQuery, Registry};
use crate::api::selector::LabelSelector;
use crate::api::watch_cache::take_managed_fields;

/// Changes a slow subscriber may fall behind before it must resync from the cache. Kept small:
/// the channel holds every change it has room for, and each holds the object's previous state.
const CHANGES_CAPACITY: usize = 4_096;

/// One change to the cache.
#[derive(Clone, Debug)]
pub enum Change {
    /// Created or updated: the previous state (if known) and the new one.
    Applied { old: Option<Arc<Value>>, new: Arc<Value> },
    /// Deleted: the last known state.
    Deleted(Arc<Value>),
}

impl Change {
    /// The objects this change concerns (old and new states).
    pub fn objects(&self) -> impl Iterator<Item = &Arc<Value>> {
        let (a, b) = match self {
            Change::Applied { old, new } => (old.as_ref(), Some(new)),
            Change::Deleted(obj) => (Some(obj), None),
        };
        a.into_iter().chain(b)
    }
}

#[derive(Default)]
struct Cache {
    objects: BTreeMap<ObjectKey, Arc<Value>>,
    /// Owner uid -> keys of the objects with an `ownerReference` to it.
    by_owner: HashMap<String, HashSet<ObjectKey>>,
}

/// The uids an object's `ownerReferences` name.
pub fn owner_uids(obj: &Value) -> Vec<&str> {
    object::meta(obj)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).collect())
        .unwrap_or_default()
}

/// The `ownerReference` with `controller: true`, if any.
pub fn controller_ref(obj: &Value) -> Option<&Value> {
    object::meta(obj)
        .get("ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
}

impl Cache {
    fn insert(&mut self, key: ObjectKey, obj: Arc<Value>) -> Option<Arc<Value>> {
        let old = self.objects.insert(key.clone(), Arc::clone(&obj));
        if let Some(old) = &old {
            self.unindex(&key, old);
        }
        for uid in owner_uids(&obj) {
            self.by_owner.entry(uid.to_string()).or_default().insert(key.clone());
        }
        old
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Arc<Value>> {
        let old = self.objects.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }

    fn unindex(&mut self, key: &ObjectKey, obj: &Value) {
        for uid in owner_uids(obj) {
            if let Some(set) = self.by_owner.get_mut(uid) {
                set.remove(key);
                if set.is_empty() {
                    self.by_owner.remove(uid);
                }
            }
        }
    }
}

/// A resource's reflector and cache. Shared (`Arc`) by every controller that watches the kind.
pub struct Informer {
    group: String,
    kind: String,
    cache: RwLock<Cache>,
    changes: broadcast::Sender<Change>,
    synced: watch::Sender<bool>,
}

impl Informer {
    /// An informer for `group`/`kind`, empty until [`Informer::run`] lists.
    pub fn new(group: &str, kind: &str) -> Arc<Self> {
        Arc::new(Self {
            group: group.to_string(),
            kind: kind.to_string(),
            cache: RwLock::new(Cache::default()),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
            synced: watch::channel(false).0,
        })
    }

    /// The kind this informer follows.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Follows changes from now on. A receiver that lags must resync from [`Informer::list_all`].
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Waits until the first list is in the cache.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// True once the first list is in the cache.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// One object by key.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Value>> {
        self.cache.read().objects.get(key).cloned()
    }

    /// Every object of the namespace (of every namespace for `None` on a namespaced kind, or
    /// every object of a cluster-scoped kind).
    pub fn list(&self, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let cache = self.cache.read();
        match namespace {
            None => cache.objects.values().cloned().collect(),
            Some(ns) => {
                let start = ObjectKey::namespaced(ns, "");
                cache
                    .objects
                    .range(start..)
                    .take_while(|(k, _)| k.namespace.as_deref() == Some(ns))
                    .map(|(_, v)| Arc::clone(v))
                    .collect()
            }
        }
    }

    /// Every object.
    pub fn list_all(&self) -> Vec<Arc<Value>> {
        self.list(None)
    }

    /// The objects of `namespace` whose labels `selector` matches.
    pub fn select(&self, namespace: &str, selector: &LabelSelector) -> Vec<Arc<Value>> {
        self.list(Some(namespace)).into_iter().filter(|o| selector.matches(&object::labels(o))).collect()
    }

    /// The objects with an `ownerReference` to `uid` (secondary index).
    pub fn dependents(&self, uid: &str) -> Vec<Arc<Value>> {
        let cache = self.cache.read();
        cache
            .by_owner
            .get(uid)
            .map(|keys| keys.iter().filter_map(|k| cache.objects.get(k).cloned()).collect())
            .unwrap_or_default()
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.cache.read().objects.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn publish(&self, change: Change) {
        let _ = self.changes.send(change);
    }

    /// Replaces the cache with a full list, publishing the difference.
    fn replace(&self, items: Vec<Value>) {
        let mut fresh: BTreeMap<ObjectKey, Arc<Value>> = BTreeMap::new();
        for mut item in items {
            // As the watch cache's objects: no reader of an informer looks at managed fields.
            take_managed_fields(&mut item);
            fresh.insert(ObjectKey::of(&item), Arc::new(item));
        }
        let mut changes = Vec::new();
        {
            let mut cache = self.cache.write();
            let gone: Vec<ObjectKey> = cache.objects.keys().filter(|k| !fresh.contains_key(*k)).cloned().collect();
            for key in gone {
                if let Some(old) = cache.remove(&key) {
                    changes.push(Change::Deleted(old));
                }
            }
            for (key, obj) in fresh {
                let unchanged = cache
                    .objects
                    .get(&key)
                    .is_some_and(|old| object::resource_version(old) == object::resource_version(&obj));
                if unchanged {
                    continue;
                }
                let old = cache.insert(key, Arc::clone(&obj));
                changes.push(Change::Applied { old, new: obj });
            }
        }
        for change in changes {
            self.publish(change);
        }
    }

    /// Applies one watch event to the cache and publishes it.
    fn apply(&self, deleted: bool, obj: Arc<Value>) {
        let key = ObjectKey::of(&obj);
        let change = {
            let mut cache = self.cache.write();
            if deleted {
                cache.remove(&key).map(|_| Change::Deleted(obj))
            } else {
                let old = cache.insert(key, Arc::clone(&obj));
                Some(Change::Applied { old, new: obj })
            }
        };
        if let Some(change) = change {
            self.publish(change);
        }
    }

    /// The reflector: lists and follows the resource until the watch cache closes. Returns an
    /// error when the resource is unknown; relists by itself when it falls behind.
    pub async fn run(self: Arc<Self>, registry: Arc<Registry>) -> Result<(), Error> {
        let ri = registry.resource(&self.group, &self.kind)?;
        let prefix = ri.prefix();
        loop {
            let (revision, mut rx) = registry.cache.subscribe_now();
            let q = ListQuery { exact_revision: Some(revision), ..Default::default() };
            let listed = match registry.list(ri, &q).await {
                Ok(listed) => listed,
                Err(e) => {
                    tracing::debug!(kind = self.kind, error = %e, "informer list failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            self.replace(listed.items);
            self.synced.send_replace(true);
            tracing::debug!(kind = self.kind, revision, objects = self.len(), "informer synced");
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if ev.revision <= revision || !ev.key.starts_with(&prefix) {
                            continue;
                        }
                        self.apply(ev.deleted, Arc::clone(&ev.object));
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::info!(kind = self.kind, missed = n, "informer fell behind the watch cache; relisting");
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, rv: &str, owner: Option<&str>) -> Value {
        let mut meta = json!({"name": name, "namespace": "ns", "resourceVersion": rv, "labels": {"app": "x"}});
        if let Some(uid) = owner {
            meta["ownerReferences"] = json!([{"uid": uid, "controller": true, "kind": "ReplicaSet", "name": "rs"}]);
        }
        json!({"metadata": meta})
    }

    #[tokio::test]
    async fn replace_reports_the_difference_and_indexes_owners() {
        let inf = Informer::new("", "Pod");
        let mut rx = inf.subscribe();
        inf.replace(vec![pod("a", "1", Some("u1")), pod("b", "1", None)]);
        assert_eq!(inf.len(), 2);
        assert_eq!(inf.dependents("u1").len(), 1);
        assert!(matches!(rx.recv().await, Ok(Change::Applied { old: None, .. })));
        assert!(matches!(rx.recv().await, Ok(Change::Applied { old: None, .. })));
        // A relist: a gone, b unchanged, c new.
        inf.replace(vec![pod("b", "1", None), pod("c", "2", Some("u1"))]);
        let mut seen = Vec::new();
        while let Ok(change) = rx.try_recv() {
            seen.push(match change {
                Change::Applied { new, .. } => format!("+{}", object::name(&new)),
                Change::Deleted(old) => format!("-{}", object::name(&old)),
            });
        }
        assert_eq!(seen, vec!["-a", "+c"]);
        let owned: Vec<String> = inf.dependents("u1").iter().map(|o| object::name(o).to_string()).collect();
        assert_eq!(owned, vec!["c"]);
    }

    #[tokio::test]
    async fn events_update_cache_and_index() {
        let inf = Informer::new("", "Pod");
        inf.apply(false, Arc::new(pod("a", "1", Some("u1"))));
        inf.apply(false, Arc::new(pod("a", "2", Some("u2"))));
        assert!(inf.dependents("u1").is_empty());
        assert_eq!(inf.dependents("u2").len(), 1);
        inf.apply(true, Arc::new(pod("a", "3", Some("u2"))));
        assert!(inf.is_empty());
        assert!(inf.dependents("u2").is_empty());
    }

    #[test]
    fn list_is_per_namespace() {
        let inf = Informer::new("", "Pod");
        inf.apply(false, Arc::new(pod("a", "1", None)));
        let mut other = pod("b", "1", None);
        other["metadata"]["namespace"] = json!("ns2");
        inf.apply(false, Arc::new(other));
        assert_eq!(inf.list(Some("ns")).len(), 1);
        assert_eq!(inf.list(Some("ns2")).len(), 1);
        assert_eq!(inf.list(None).len(), 2);
        let sel = LabelSelector::parse("app=x").unwrap_or_else(|_| LabelSelector::nothing());
        assert_eq!(inf.select("ns", &sel).len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reflector_lists_then_follows_a_real_registry() {
        use crate::api::registry::{DeleteOptions, WriteOptions};
        use crate::controllers::runtime::testing;
        let (_dir, registry) = testing::registry().await;
        let ri = registry.resource("", "ConfigMap").unwrap_or_else(|e| panic!("{e}"));
        let cm = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": name}});
        let w = WriteOptions::default();
        registry.create(ri, Some("default"), cm("before"), &w).await.unwrap_or_else(|e| panic!("{e}"));
        let inf = Informer::new("", "ConfigMap");
        let mut rx = inf.subscribe();
        tokio::spawn(Arc::clone(&inf).run(Arc::clone(&registry)));
        inf.wait_synced().await;
        assert!(inf.get(&ObjectKey::namespaced("default", "before")).is_some());
        registry.create(ri, Some("default"), cm("after"), &w).await.unwrap_or_else(|e| panic!("{e}"));
        registry
            .delete(ri, Some("default"), "before", &DeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        testing::eventually("the cache follows", || {
            inf.get(&ObjectKey::namespaced("default", "after")).is_some()
                && inf.get(&ObjectKey::namespaced("default", "before")).is_none()
        })
        .await;
        let mut seen = Vec::new();
        while let Ok(change) = rx.try_recv() {
            seen.push(match change {
                Change::Applied { new, .. } => format!("+{}", object::name(&new)),
                Change::Deleted(old) => format!("-{}", object::name(&old)),
            });
        }
        assert_eq!(seen, vec!["+before", "+after", "-before"]);
    }
}
