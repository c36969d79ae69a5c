//! The authorizer chain as the server runs it, kube-apiserver's `--authorization-mode=Node,RBAC`:
//! the Node authorizer (over the [`NodeGraph`]) first, then RBAC over an [`Index`] swapped in
//! whole whenever an RBAC object changes, fed by the watch cache (one subscription, no store scan
//! per request).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::broadcast::error::RecvError;

use super::node_authorizer::{self, Decision};
use super::node_graph::NodeGraph;
use super::rbac::{self, is_policy_key, Index, PolicyObjects};
use super::request_info::Attributes;
use crate::api::error::ApiResult;
use crate::api::registry::{ListQuery, Registry};
use crate::store::Revision;

const KINDS: [&str; 4] = ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];

/// See the module documentation.
pub struct Authorizer {
    index: RwLock<Arc<Index>>,
    objects: RwLock<PolicyObjects>,
    /// The newest store revision the index reflects.
    seen: AtomicI64,
    registry: Arc<Registry>,
    /// Pods and what they use, per node, for the Node authorizer.
    nodes: Arc<NodeGraph>,
}

async fn list_policy(registry: &Registry) -> ApiResult<(PolicyObjects, Revision)> {
    let mut objects = PolicyObjects::default();
    let mut revision = 0;
    for kind in KINDS {
        let ri = registry.resource("rbac.authorization.k8s.io", kind)?;
        let listed = registry.list(ri, &ListQuery::default()).await?;
        revision = revision.max(listed.revision);
        for item in listed.items {
            let key = ri.key(crate::api::object::namespace(&item), crate::api::object::name(&item));
            objects.objects.insert(key, item);
        }
    }
    Ok((objects, revision))
}

impl Authorizer {
    /// Lists the RBAC objects, builds the index and keeps it current from the watch cache.
    pub async fn start(registry: Arc<Registry>, nodes: Arc<NodeGraph>) -> ApiResult<Arc<Self>> {
        let (_, rx) = registry.cache.subscribe_now();
        let (objects, revision) = list_policy(&registry).await?;
        let authorizer = Arc::new(Self {
            index: RwLock::new(Arc::new(Index::build(&objects))),
            objects: RwLock::new(objects),
            seen: AtomicI64::new(revision),
            registry,
            nodes,
        });
        tokio::spawn(Arc::clone(&authorizer).follow(rx, revision));
        Ok(authorizer)
    }

    /// An authorizer over fixed objects (tests, benchmarks).
    pub fn fixed(registry: Arc<Registry>, objects: PolicyObjects) -> Self {
        Self {
            index: RwLock::new(Arc::new(Index::build(&objects))),
            objects: RwLock::new(objects),
            seen: AtomicI64::new(i64::MAX),
            registry,
            nodes: Arc::default(),
        }
    }

    async fn follow(self: Arc<Self>, mut rx: crate::api::watch_cache::Receiver, mut listed: Revision) {
        loop {
            let first = match rx.recv().await {
                Ok(ev) => ev,
                Err(RecvError::Lagged(_)) => {
                    // Missed events: start over from a fresh list.
                    let (_, fresh) = self.registry.cache.subscribe_now();
                    rx = fresh;
                    match list_policy(&self.registry).await {
                        Ok((objects, revision)) => {
                            *self.index.write() = Arc::new(Index::build(&objects));
                            *self.objects.write() = objects;
                            listed = revision;
                            self.seen.fetch_max(revision, Ordering::SeqCst);
                        }
                        Err(e) => tracing::warn!(error = %e, "RBAC re-list failed"),
                    }
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let mut batch = vec![first];
            while let Ok(ev) = rx.try_recv() {
                batch.push(ev);
            }
            let mut changed = false;
            let mut newest = 0;
            {
                let mut objects = self.objects.write();
                for ev in &batch {
                    newest = newest.max(ev.revision);
                    if ev.revision <= listed || !is_policy_key(&ev.key) {
                        continue;
                    }
                    changed = true;
                    if ev.deleted {
                        objects.objects.remove(&ev.key);
                    } else {
                        objects.objects.insert(ev.key.clone(), (*ev.object()).clone());
                    }
                }
                if changed {
                    let index = Index::build(&objects);
                    *self.index.write() = Arc::new(index);
                }
            }
            self.seen.fetch_max(newest, Ordering::SeqCst);
        }
    }

    /// The current index.
    pub fn index(&self) -> Arc<Index> {
        Arc::clone(&self.index.read())
    }

    /// The decision from the current index only.
    pub fn allows_now(&self, a: &Attributes) -> bool {
        rbac::authorize(&self.index.read(), a)
    }

    /// The decision of the whole chain.
    pub async fn authorize(&self, a: &Attributes) -> bool {
        self.decide(a, None).await == Decision::Allow
    }

    /// The decision of the whole chain with the reason of a Node authorizer denial. `created` is
    /// the name a create carries in its body when [`node_authorizer::needs_created_name`].
    pub async fn decide(&self, a: &Attributes, created: Option<&str>) -> Decision {
        if let Some(decided) = node_authorizer::decide_persistent_volume(&self.nodes, &self.registry, a).await {
            return decided;
        }
        match node_authorizer::decide(&self.nodes, a, created).await {
            Decision::NoOpinion if self.rbac_allows(a).await => Decision::Allow,
            Decision::NoOpinion => Decision::Deny(String::new()),
            decided => decided,
        }
    }

    /// The RBAC decision. A denial is re-checked once the index has caught up with the store, so
    /// a client that just wrote a binding sees it take effect (bounded wait).
    async fn rbac_allows(&self, a: &Attributes) -> bool {
        if self.allows_now(a) {
            return true;
        }
        let Ok(current) = self.registry.store.current_revision().await else { return false };
        for _ in 0..200 {
            if self.seen.load(Ordering::SeqCst) >= current {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.allows_now(a)
    }
}
