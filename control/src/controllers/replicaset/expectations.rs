//! Expectations: the pods a reconcile created or deleted that the pod informer has not shown
//! yet. While any are outstanding the controller does not create or delete again, so a
//! reconcile never double-creates before the watch catches up (Kubernetes'
//! `ControllerExpectations`, keyed by pod name instead of counts).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

use crate::api::object;
use crate::controllers::runtime::{Informer, ObjectKey};

/// Outstanding expectations expire after this long (a lost event never wedges a controller).
const TTL: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// See the module documentation.
#[derive(Default)]
pub struct Expectations {
    by_owner: Mutex<HashMap<ObjectKey, Pending>>,
}

impl Expectations {
    /// Expects the pod `name` to appear in the cache.
    pub fn expect_create(&self, owner: &ObjectKey, name: &str) {
        let mut map = self.by_owner.lock();
        let p = map.entry(owner.clone()).or_default();
        p.creates.insert(name.to_string());
        p.since.get_or_insert_with(Instant::now);
    }

    /// Expects the pod `name` to be gone from the cache or marked for deletion.
    pub fn expect_delete(&self, owner: &ObjectKey, name: &str) {
        let mut map = self.by_owner.lock();
        let p = map.entry(owner.clone()).or_default();
        p.deletes.insert(name.to_string());
        p.since.get_or_insert_with(Instant::now);
    }

    /// True when the cache shows every expected create and delete of `owner` (or they expired).
    pub fn satisfied(&self, owner: &ObjectKey, pods: &Informer) -> bool {
        let mut map = self.by_owner.lock();
        let Some(p) = map.get_mut(owner) else { return true };
        let ns = owner.namespace.clone().unwrap_or_default();
        p.creates.retain(|name| pods.get(&ObjectKey::namespaced(&ns, name)).is_none());
        p.deletes.retain(|name| {
            pods.get(&ObjectKey::namespaced(&ns, name))
                .is_some_and(|pod: std::sync::Arc<Value>| object::deletion_timestamp(&pod).is_none())
        });
        let expired = p.since.is_some_and(|s| s.elapsed() > TTL);
        if p.creates.is_empty() && p.deletes.is_empty() || expired {
            map.remove(owner);
            return true;
        }
        false
    }

    /// Drops the expectations of a deleted owner.
    pub fn forget(&self, owner: &ObjectKey) {
        self.by_owner.lock().remove(owner);
    }
}
