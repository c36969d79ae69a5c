//! The Node authorizer's graph: which node each pod is bound to and which Secrets, ConfigMaps,
//! PersistentVolumeClaims and ServiceAccounts those pods use. Kept current from the shared Pod
//! informer (no store scan per request); a decision that finds no relationship may wait, bounded,
//! for the graph to catch up with a pod bound a moment ago.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::Notify;

use crate::api::object;
use crate::api::registry::{ListQuery, Registry};
use crate::api::resources::ResourceInfo;
use crate::api::watch_cache::RecvError;
use crate::controllers::runtime::Error;
use crate::store::Revision;

/// Pods read per page when the index is rebuilt.
const LIST_PAGE: usize = 500;
/// The kinds of object a pod relates a node to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RefKind {
    Secret,
    ConfigMap,
    PersistentVolumeClaim,
    ServiceAccount,
}

/// One object a pod uses: kind, namespace (the pod's) and name.
type Ref = (RefKind, String, String);

/// What one bound pod contributes to the graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRefs {
    pub node: String,
    pub refs: HashSet<Ref>,
}

fn names_at<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a str> {
    v.pointer(pointer).and_then(Value::as_str).into_iter()
}

/// The objects a pod refers to: volumes (incl. projected sources), env and envFrom of every
/// container kind, image pull secrets and its service account. `None` for a pod not yet bound.
pub fn pod_refs(pod: &Value) -> Option<PodRefs> {
    let spec = pod.get("spec")?;
    let node = spec.get("nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())?;
    let ns = object::namespace(pod).unwrap_or("default").to_string();
    let mut refs = HashSet::new();
    let mut add = |kind: RefKind, name: &str| {
        if !name.is_empty() {
            refs.insert((kind, ns.clone(), name.to_string()));
        }
    };
    add(RefKind::ServiceAccount, spec.get("serviceAccountName").and_then(Value::as_str).unwrap_or("default"));
    for s in spec.get("imagePullSecrets").and_then(Value::as_array).into_iter().flatten() {
        names_at(s, "/name").for_each(|n| add(RefKind::Secret, n));
    }
    for vol in spec.get("volumes").and_then(Value::as_array).into_iter().flatten() {
        names_at(vol, "/secret/secretName").for_each(|n| add(RefKind::Secret, n));
        names_at(vol, "/configMap/name").for_each(|n| add(RefKind::ConfigMap, n));
        names_at(vol, "/persistentVolumeClaim/claimName").for_each(|n| add(RefKind::PersistentVolumeClaim, n));
        for source in vol.pointer("/projected/sources").and_then(Value::as_array).into_iter().flatten() {
            names_at(source, "/secret/name").for_each(|n| add(RefKind::Secret, n));
            names_at(source, "/configMap/name").for_each(|n| add(RefKind::ConfigMap, n));
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec.get(list).and_then(Value::as_array).into_iter().flatten() {
            for from in c.get("envFrom").and_then(Value::as_array).into_iter().flatten() {
                names_at(from, "/secretRef/name").for_each(|n| add(RefKind::Secret, n));
                names_at(from, "/configMapRef/name").for_each(|n| add(RefKind::ConfigMap, n));
            }
            for env in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                names_at(env, "/valueFrom/secretKeyRef/name").for_each(|n| add(RefKind::Secret, n));
                names_at(env, "/valueFrom/configMapKeyRef/name").for_each(|n| add(RefKind::ConfigMap, n));
            }
        }
    }
    Some(PodRefs { node: node.to_string(), refs })
}

#[derive(Default)]
struct Index {
    /// (namespace, name) of each bound pod -> what it contributes.
    pods: HashMap<(String, String), PodRefs>,
    /// (node, object) -> how many of the node's pods use the object.
    edges: HashMap<(String, Ref), u32>,
}

impl Index {
    fn remove(&mut self, key: &(String, String)) {
        let Some(old) = self.pods.remove(key) else { return };
        for r in old.refs {
            let edge = (old.node.clone(), r);
            if let Some(count) = self.edges.get_mut(&edge) {
                *count -= 1;
                if *count == 0 {
                    self.edges.remove(&edge);
                }
            }
        }
    }

    fn set(&mut self, pod: &Value) {
        let key = (object::namespace(pod).unwrap_or("default").to_string(), object::name(pod).to_string());
        self.remove(&key);
        if let Some(refs) = pod_refs(pod) {
            for r in &refs.refs {
                *self.edges.entry((refs.node.clone(), r.clone())).or_insert(0) += 1;
            }
            self.pods.insert(key, refs);
        }
    }
}

/// See the module documentation.
pub struct NodeGraph {
    index: RwLock<Index>,
    changed: Notify,
    /// How long a decision that found no relationship waits for the graph to learn of a new pod.
    catch_up: Duration,
}

impl Default for NodeGraph {
    fn default() -> Self {
        Self::with_catch_up(Duration::from_secs(2))
    }
}

impl NodeGraph {
    /// An empty graph whose decisions wait at most `catch_up` for a pod they do not know yet.
    pub fn with_catch_up(catch_up: Duration) -> Self {
        Self { index: RwLock::default(), changed: Notify::new(), catch_up }
    }

    /// Whether a pod bound to `node` uses the object.
    pub fn related(&self, node: &str, kind: RefKind, namespace: &str, name: &str) -> bool {
        let edge = (node.to_string(), (kind, namespace.to_string(), name.to_string()));
        self.index.read().edges.contains_key(&edge)
    }

    /// The (namespace, name) of every PersistentVolumeClaim the node's pods use.
    pub fn claims_of(&self, node: &str) -> Vec<(String, String)> {
        let index = self.index.read();
        index
            .edges
            .keys()
            .filter(|(n, (kind, _, _))| n == node && *kind == RefKind::PersistentVolumeClaim)
            .map(|(_, (_, ns, name))| (ns.clone(), name.clone()))
            .collect()
    }

    /// The node the pod is bound to, if the graph knows it.
    pub fn node_of_pod(&self, namespace: &str, name: &str) -> Option<String> {
        self.index.read().pods.get(&(namespace.to_string(), name.to_string())).map(|p| p.node.clone())
    }

    /// Evaluates `check` now and, while it is false, again after each graph change until
    /// the catch-up time has passed: a kubelet may ask for a pod's secret as soon as it sees it.
    pub async fn eventually(&self, check: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + self.catch_up;
        loop {
            let notified = self.changed.notified();
            if check(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(self);
            }
        }
    }

    /// Adds (or replaces) one pod, as the informer would (benchmarks and tests).
    pub fn insert_pod(&self, pod: &Value) {
        self.index.write().set(pod);
    }

    /// Applies one pod's new state, or its deletion.
    pub(crate) fn apply(&self, pod: &Value, deleted: bool) {
        {
            let mut index = self.index.write();
            if deleted {
                let key = (object::namespace(pod).unwrap_or("default").to_string(), object::name(pod).to_string());
                index.remove(&key);
            } else {
                index.set(pod);
            }
        }
        self.changed.notify_waiters();
    }

    /// Rebuilds the index from every pod at `revision`, a page at a time (no pod is kept).
    async fn rebuild(&self, registry: &Registry, ri: &ResourceInfo, revision: Revision) -> Result<(), Error> {
        let mut fresh = Index::default();
        let mut after = None;
        loop {
            let page = registry.list_page(ri, &ListQuery::default(), Some(revision), after, LIST_PAGE).await?;
            for pod in &page.items {
                fresh.set(pod);
            }
            after = page.next;
            if after.is_none() {
                break;
            }
        }
        *self.index.write() = fresh;
        self.changed.notify_waiters();
        Ok(())
    }

    /// Follows the pods through the watch cache (run under the supervisor). It keeps only its
    /// index, never the pods themselves: the API server holds no pod cache of its own.
    pub async fn follow(self: Arc<Self>, registry: Arc<Registry>) -> Result<(), Error> {
        let ri = registry.resource("", "Pod")?;
        let prefix = ri.prefix();
        loop {
            let (revision, mut rx) = registry.cache.subscribe_now();
            self.rebuild(&registry, ri, revision).await?;
            loop {
                match rx.recv().await {
                    Ok(ev) if ev.revision > revision && ev.key.starts_with(&prefix) => {
                        self.apply(&ev.object(), ev.deleted);
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "runner",
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "a", "secret": {"secretName": "vol-secret"}},
                    {"name": "b", "configMap": {"name": "vol-cm"}},
                    {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "d", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}}
                ],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
                "containers": [{"name": "c", "env": [
                    {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                    {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}
                ]}]
            }
        })
    }

    #[test]
    fn every_reference_of_a_bound_pod_is_an_edge() {
        let refs = pod_refs(&pod("p", "n1")).expect("bound");
        assert_eq!(refs.node, "n1");
        let has = |k, n: &str| refs.refs.contains(&(k, "ns".to_string(), n.to_string()));
        for s in ["pull", "vol-secret", "init-env", "env-secret"] {
            assert!(has(RefKind::Secret, s), "{s}");
        }
        for c in ["vol-cm", "kube-root-ca.crt", "env-cm"] {
            assert!(has(RefKind::ConfigMap, c), "{c}");
        }
        assert!(has(RefKind::PersistentVolumeClaim, "data"));
        assert!(has(RefKind::ServiceAccount, "runner"));
        assert_eq!(refs.refs.len(), 9);
    }

    #[test]
    fn an_unbound_pod_relates_no_node() {
        assert!(pod_refs(&json!({"metadata": {"name": "p"}, "spec": {"containers": []}})).is_none());
    }

    #[test]
    fn edges_are_counted_per_node_and_removed_with_the_last_pod() {
        let g = NodeGraph::default();
        g.apply(&pod("p1", "n1"), false);
        g.apply(&pod("p2", "n1"), false);
        assert!(g.related("n1", RefKind::Secret, "ns", "vol-secret"));
        assert!(!g.related("n2", RefKind::Secret, "ns", "vol-secret"), "another node");
        assert!(!g.related("n1", RefKind::Secret, "other", "vol-secret"), "another namespace");
        assert_eq!(g.node_of_pod("ns", "p1").as_deref(), Some("n1"));
        g.apply(&pod("p1", "n1"), true);
        assert!(g.related("n1", RefKind::Secret, "ns", "vol-secret"), "p2 still uses it");
        // p2 moves (a re-created pod of the same name on another node).
        g.apply(&pod("p2", "n2"), false);
        assert!(!g.related("n1", RefKind::Secret, "ns", "vol-secret"));
        assert!(g.related("n2", RefKind::Secret, "ns", "vol-secret"));
        assert!(g.index.read().edges.keys().all(|(node, _)| node == "n2"));
    }

    #[tokio::test]
    async fn a_waiting_decision_sees_a_pod_bound_meanwhile() {
        let g = Arc::new(NodeGraph::default());
        let waiter = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.eventually(|g| g.related("n1", RefKind::ConfigMap, "ns", "env-cm")).await })
        };
        tokio::task::yield_now().await;
        g.apply(&pod("p", "n1"), false);
        assert!(waiter.await.expect("joined"));
    }
}
