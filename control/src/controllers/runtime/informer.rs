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

use super::entry::{Cached, Entry, Repr, Summary};
use super::key::ObjectKey;
use super::Error;
use crate::api::object;
use crate::api::registry::{ListQuery, Registry};
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::watch_cache::take_managed_fields;

/// Changes a slow subscriber may fall behind before it must resync from the cache. Kept small:
/// a broadcast slot keeps its change (the object and its previous state, decoded) until it is
/// overwritten, so at rest the channel holds this many changes: about 30 MB of pods.
const CHANGES_CAPACITY: usize = 1_024;

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
    objects: BTreeMap<ObjectKey, Entry>,
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
    fn insert(&mut self, key: ObjectKey, entry: Entry) -> Option<Entry> {
        for uid in entry.summary.owner_uids() {
            self.by_owner.entry(uid.to_string()).or_default().insert(key.clone());
        }
        let old = self.objects.insert(key.clone(), entry);
        if let Some(old) = &old {
            self.unindex(&key, old);
        }
        old
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Entry> {
        let old = self.objects.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }

    /// Forgets the owners `old` named that the entry now cached under `key` no longer names.
    fn unindex(&mut self, key: &ObjectKey, old: &Entry) {
        let current = self.objects.get(key);
        for uid in old.summary.owner_uids() {
            if current.is_some_and(|c| c.summary.owner_uids().any(|u| u == uid)) {
                continue;
            }
            if let Some(set) = self.by_owner.get_mut(uid) {
                set.remove(key);
                if set.is_empty() {
                    self.by_owner.remove(uid);
                }
            }
        }
    }
}

/// Decodes what a reader collected under the lock (outside it).
fn decode(reprs: Vec<Repr>) -> Vec<Arc<Value>> {
    reprs.iter().filter_map(Repr::object).collect()
}

/// A resource's reflector and cache. Shared (`Arc`) by every controller that watches the kind.
pub struct Informer {
    group: String,
    kind: String,
    /// Objects are kept packed (see [`super::entry`]): for kinds that can number in the
    /// hundreds of thousands.
    packed: bool,
    /// Only the objects this field selector matches are cached (as a reflector with
    /// `fieldSelector`); an object that stops matching leaves the cache as if deleted.
    fields: Option<FieldSelector>,
    cache: RwLock<Cache>,
    changes: broadcast::Sender<Change>,
    synced: watch::Sender<bool>,
}

impl Informer {
    /// An informer for `group`/`kind`, empty until [`Informer::run`] lists. Pods are kept
    /// packed, everything else decoded.
    pub fn new(group: &str, kind: &str) -> Arc<Self> {
        Self::with_fields(group, kind, None)
    }

    /// An informer for the objects of `group`/`kind` that `fields` matches.
    pub fn with_fields(group: &str, kind: &str, fields: Option<FieldSelector>) -> Arc<Self> {
        Arc::new(Self {
            group: group.to_string(),
            kind: kind.to_string(),
            packed: group.is_empty() && kind == "Pod",
            fields,
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
        let repr = self.cache.read().objects.get(key).map(|e| e.repr.clone())?;
        repr.object()
    }

    /// Every object of the namespace (of every namespace for `None` on a namespaced kind, or
    /// every object of a cluster-scoped kind).
    pub fn list(&self, namespace: Option<&str>) -> Vec<Arc<Value>> {
        self.list_where(namespace, |_| true)
    }

    /// The objects of the namespace (or all, for `None`) whose [`Summary`] `keep` accepts;
    /// only those are decoded.
    pub fn list_where(&self, namespace: Option<&str>, keep: impl Fn(&Summary) -> bool) -> Vec<Arc<Value>> {
        self.cached_where(namespace, keep).iter().filter_map(Cached::object).collect()
    }

    /// The entries of the namespace (or all, for `None`) whose [`Summary`] `keep` accepts, none
    /// decoded: a reader that needs only their summaries decodes nothing.
    pub fn cached_where(&self, namespace: Option<&str>, keep: impl Fn(&Summary) -> bool) -> Vec<Cached> {
        let cache = self.cache.read();
        let wanted = |e: &Entry| keep(&e.summary).then(|| Cached::new(e));
        match namespace {
            None => cache.objects.values().filter_map(wanted).collect(),
            Some(ns) => {
                let start = ObjectKey::namespaced(ns, "");
                cache
                    .objects
                    .range(start..)
                    .take_while(|(k, _)| k.namespace.as_deref() == Some(ns))
                    .filter_map(|(_, e)| wanted(e))
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
        self.list_where(Some(namespace), |s| s.matches(selector))
    }

    /// The objects with an `ownerReference` to `uid` (secondary index).
    pub fn dependents(&self, uid: &str) -> Vec<Arc<Value>> {
        let reprs: Vec<Repr> = {
            let cache = self.cache.read();
            cache
                .by_owner
                .get(uid)
                .map(|keys| keys.iter().filter_map(|k| cache.objects.get(k).map(|e| e.repr.clone())).collect())
                .unwrap_or_default()
        };
        decode(reprs)
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

    /// The previous state of a replaced entry, for a change (decoded only if anyone listens).
    fn previous(&self, old: Option<Entry>) -> Option<Arc<Value>> {
        if self.changes.receiver_count() == 0 {
            return None;
        }
        old?.repr.object()
    }

    /// Replaces the cache with a full list, publishing the difference.
    fn replace(&self, items: Vec<Value>) {
        let mut fresh: BTreeMap<ObjectKey, Arc<Value>> = BTreeMap::new();
        for mut item in items {
            // As the watch cache's objects: no reader of an informer looks at managed fields.
            take_managed_fields(&mut item);
            fresh.insert(ObjectKey::of(&item), Arc::new(item));
        }
        let mut gone = Vec::new();
        let mut applied = Vec::new();
        {
            let mut cache = self.cache.write();
            let stale: Vec<ObjectKey> = cache.objects.keys().filter(|k| !fresh.contains_key(*k)).cloned().collect();
            for key in stale {
                if let Some(old) = cache.remove(&key) {
                    gone.push(old);
                }
            }
            for (key, obj) in fresh {
                let unchanged = cache.objects.get(&key).is_some_and(|old| {
                    Some(old.summary.resource_version()).filter(|rv| !rv.is_empty()) == object::resource_version(&obj)
                });
                if unchanged {
                    continue;
                }
                let old = cache.insert(key, Entry::new(Arc::clone(&obj), self.packed));
                applied.push((old, obj));
            }
        }
        for old in gone {
            if let Some(obj) = old.repr.object() {
                self.publish(Change::Deleted(obj));
            }
        }
        for (old, new) in applied {
            let old = self.previous(old);
            self.publish(Change::Applied { old, new });
        }
    }

    /// Applies one watch event to the cache and publishes it.
    fn apply(&self, deleted: bool, obj: Arc<Value>) {
        let key = ObjectKey::of(&obj);
        let selected = self.fields.as_ref().is_none_or(|f| f.matches_kind(&self.kind, &obj));
        if deleted || !selected {
            let removed = self.cache.write().remove(&key);
            if removed.is_some() {
                self.publish(Change::Deleted(obj));
            }
        } else {
            let entry = Entry::new(Arc::clone(&obj), self.packed);
            let old = self.cache.write().insert(key, entry);
            let old = self.previous(old);
            self.publish(Change::Applied { old, new: obj });
        }
    }

    /// The reflector: lists and follows the resource until the watch cache closes. Returns an
    /// error when the resource is unknown; relists by itself when it falls behind.
    pub async fn run(self: Arc<Self>, registry: Arc<Registry>) -> Result<(), Error> {
        let ri = registry.resource(&self.group, &self.kind)?;
        let prefix = ri.prefix();
        loop {
            let (revision, mut rx) = registry.cache.subscribe_now();
            let q = ListQuery { exact_revision: Some(revision), fields: self.fields.clone(), ..Default::default() };
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
                        self.apply(ev.deleted, ev.object());
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
    fn a_field_selected_informer_keeps_only_matching_objects() {
        let fields = FieldSelector::parse("type=kubernetes.io/service-account-token").ok();
        let inf = Informer::with_fields("", "Secret", fields);
        let secret = |name: &str, ty: &str| {
            Arc::new(
                json!({"kind": "Secret", "metadata": {"name": name, "namespace": "ns"}, "type": ty, "data": {"k": "dg=="}}),
            )
        };
        let mut rx = inf.subscribe();
        inf.apply(false, secret("token", "kubernetes.io/service-account-token"));
        inf.apply(false, secret("plain", "Opaque"));
        assert!(inf.get(&ObjectKey::namespaced("ns", "token")).is_some());
        assert!(inf.get(&ObjectKey::namespaced("ns", "plain")).is_none());
        assert_eq!(inf.len(), 1);
        // One that stops matching leaves the cache as a deletion.
        inf.apply(false, secret("token", "Opaque"));
        assert!(inf.is_empty());
        let mut seen = Vec::new();
        while let Ok(change) = rx.try_recv() {
            seen.push(matches!(change, Change::Deleted(_)));
        }
        assert_eq!(seen, vec![false, true]);
    }

    #[test]
    fn pods_are_packed_and_read_back_whole() {
        let inf = Informer::new("", "Pod");
        assert!(inf.packed);
        let mut p = pod("a", "1", Some("u1"));
        p["spec"] = json!({"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]});
        inf.apply(false, Arc::new(p.clone()));
        assert_eq!(inf.get(&ObjectKey::namespaced("ns", "a")).as_deref(), Some(&p));
        assert_eq!(inf.list_where(None, |s| s.node_name() == Some("n1")).len(), 1);
        assert!(inf.list_where(None, |s| s.node_name() == Some("n2")).is_empty());
        assert_eq!(inf.list_where(Some("ns"), |s| s.controller_uid() == Some("u1")).len(), 1);
        assert_eq!(inf.dependents("u1").first().map(|o| o.as_ref()), Some(&p));
        assert!(!Informer::new("", "ConfigMap").packed);
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
        // Listed, or (when the watch cache had not seen the create yet) delivered right after.
        testing::eventually("the earlier object", || inf.get(&ObjectKey::namespaced("default", "before")).is_some())
            .await;
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
