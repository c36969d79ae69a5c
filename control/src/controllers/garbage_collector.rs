//! The garbage collector: cascading deletion through `ownerReferences`.
//!
//! It keeps an index from owner uid to dependents, fed by the watch cache. When an owner is
//! deleted its dependents are deleted (background propagation) or lose their reference to it
//! when they have other owners; an owner held by the `orphan` finalizer has the references to it
//! removed from its dependents, and one held by `foregroundDeletion` waits until its dependents
//! are gone. Then the finalizer is removed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::api::watch_cache::RecvError;
use serde_json::{json, Value};

use crate::api::error::{ApiError, ApiResult};
use crate::api::object;
use crate::api::registry::{DeleteOptions, ListQuery, Registry, WriteOptions};
use crate::api::resources::ResourceInfo;

/// A dependent, by storage key (which names its resource, namespace and name).
type Key = String;

#[derive(Default)]
struct Index {
    dependents: HashMap<String, HashSet<Key>>,
    /// The owner uids each dependent was learned with (so a change forgets them without the
    /// previous state of the object).
    owners: HashMap<Key, Vec<String>>,
}

fn owner_uids(obj: &Value) -> Vec<String> {
    object::meta(obj)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).map(String::from).collect())
        .unwrap_or_default()
}

impl Index {
    fn forget(&mut self, key: &str) {
        for uid in self.owners.remove(key).unwrap_or_default() {
            if let Some(set) = self.dependents.get_mut(&uid) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(&uid);
                }
            }
        }
    }

    fn learn(&mut self, key: &str, obj: &Value) {
        self.forget(key);
        let uids = owner_uids(obj);
        if uids.is_empty() {
            return;
        }
        for uid in &uids {
            self.dependents.entry(uid.clone()).or_default().insert(key.to_string());
        }
        self.owners.insert(key.to_string(), uids);
    }
}

pub async fn run(registry: Arc<Registry>) {
    loop {
        if let Err(e) = follow(&registry).await {
            tracing::warn!(error = %e, "garbage collector restarting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The served resource (built-in or custom, in its storage version) a storage key belongs to.
fn resource_of(registry: &Registry, key: &str) -> Option<ResourceInfo> {
    registry.served().iter().find(|ri| ri.is_storage_version() && key.starts_with(&ri.prefix())).cloned()
}

/// (namespace, name) from a storage key of `ri`.
fn locate(ri: &ResourceInfo, key: &str) -> Option<(Option<String>, String)> {
    let rest = key.strip_prefix(&ri.prefix())?;
    match (ri.namespaced, rest.split_once('/')) {
        (true, Some((ns, name))) => Some((Some(ns.to_string()), name.to_string())),
        (false, None) => Some((None, rest.to_string())),
        _ => None,
    }
}

async fn follow(registry: &Registry) -> ApiResult<()> {
    let (revision, mut rx) = registry.cache.subscribe_now();
    let mut index = Index::default();
    let served = registry.served();
    for ri in served.iter().filter(|ri| ri.is_storage_version()) {
        let listed = registry.list(ri, &ListQuery { exact_revision: Some(revision), ..Default::default() }).await?;
        for obj in &listed.items {
            index.learn(&ri.key(object::namespace(obj), object::name(obj)), obj);
        }
    }
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(RecvError::Lagged(_)) => return Err(ApiError::Internal("fell behind the watch cache".into())),
            Err(RecvError::Closed) => return Ok(()),
        };
        if ev.revision <= revision {
            continue;
        }
        let obj = ev.object();
        let uid = object::str_at(&obj, &["metadata", "uid"]).unwrap_or("").to_string();
        if ev.deleted {
            index.forget(&ev.key);
            let dependents = index.dependents.remove(&uid).unwrap_or_default();
            for key in dependents {
                cascade(registry, &key, &uid).await;
            }
            continue;
        }
        index.learn(&ev.key, &obj);
        if object::deletion_timestamp(&obj).is_some() {
            let finalizers = object::finalizers(&obj);
            let dependents: Vec<Key> =
                index.dependents.get(&uid).map(|s| s.iter().cloned().collect()).unwrap_or_default();
            if finalizers.iter().any(|f| f == "orphan") {
                for key in &dependents {
                    drop_reference(registry, key, &uid).await;
                }
                remove_finalizer(registry, &ev.key, "orphan").await;
            } else if finalizers.iter().any(|f| f == "foregroundDeletion") {
                if dependents.is_empty() {
                    remove_finalizer(registry, &ev.key, "foregroundDeletion").await;
                }
                for key in &dependents {
                    cascade(registry, key, &uid).await;
                }
            }
        }
    }
}

/// The owner `uid` is gone: delete the dependent, or only drop the reference when it has others.
async fn cascade(registry: &Registry, key: &str, uid: &str) {
    let Some(ri) = resource_of(registry, key) else { return };
    let ri = &ri;
    let Some((ns, name)) = locate(ri, key) else { return };
    let Ok(obj) = registry.get(ri, ns.as_deref(), &name).await else { return };
    if owner_uids(&obj).iter().any(|u| u != uid) {
        drop_reference(registry, key, uid).await;
        return;
    }
    match registry
        .delete(
            ri,
            ns.as_deref(),
            &name,
            &DeleteOptions { propagation_policy: Some("Background".into()), ..Default::default() },
        )
        .await
    {
        Ok(_) | Err(ApiError::NotFound { .. }) => {
            tracing::debug!(resource = ri.plural, name, owner = uid, "deleted dependent")
        }
        Err(e) => tracing::warn!(error = %e, resource = ri.plural, name, "deleting dependent"),
    }
}

async fn drop_reference(registry: &Registry, key: &str, uid: &str) {
    edit(registry, key, |obj| {
        if let Some(refs) = object::meta_mut(obj).get_mut("ownerReferences").and_then(Value::as_array_mut) {
            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        }
    })
    .await;
}

async fn remove_finalizer(registry: &Registry, key: &str, finalizer: &str) {
    edit(registry, key, |obj| {
        if let Some(list) = object::meta_mut(obj).get_mut("finalizers").and_then(Value::as_array_mut) {
            list.retain(|f| f != &json!(finalizer));
        }
    })
    .await;
}

async fn edit(registry: &Registry, key: &str, change: impl Fn(&mut Value)) {
    let Some(ri) = resource_of(registry, key) else { return };
    let ri = &ri;
    let Some((ns, name)) = locate(ri, key) else { return };
    let opts = WriteOptions { field_manager: Some("garbage-collector".into()), ..Default::default() };
    let result = registry
        .update_with(ri, ns.as_deref(), &name, None, &opts, |current| {
            let mut next = current.clone();
            change(&mut next);
            Ok(next)
        })
        .await;
    match result {
        Ok(_) | Err(ApiError::NotFound { .. }) => {}
        Err(e) => tracing::warn!(error = %e, resource = ri.plural, name, "garbage collector update"),
    }
}
