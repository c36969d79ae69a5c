//! The scheduler's cache: every node with the pods on it, bound or *assumed* (chosen by this
//! scheduler, the bind still in flight), so concurrent decisions never double-book a node. Fed
//! by the Pod and Node informers; owned by the scheduler's one task.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::fit::{node_state, NodeState};
use super::pod_info::PodInfo;

/// What a pod change did to the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodEffect {
    /// Nothing the scheduler cares about.
    None,
    /// A pod now holds room on a node.
    Placed,
    /// A pod let go of its room (deleted or finished): pending pods may fit now.
    Freed,
}

struct Placed {
    node: String,
    assumed: bool,
}

/// See the module documentation.
#[derive(Default)]
pub struct Cache {
    nodes: Vec<NodeState>,
    index: HashMap<String, usize>,
    placed: HashMap<String, Placed>,
    /// Bound pods whose node is not (yet) known, by node.
    waiting: HashMap<String, Vec<Arc<PodInfo>>>,
    /// Placed pods with required anti-affinity.
    anti: usize,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The nodes, for a decision.
    pub fn nodes(&self) -> Vec<&NodeState> {
        self.nodes.iter().collect()
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// True when some placed pod has required anti-affinity.
    pub fn any_anti_affinity(&self) -> bool {
        self.anti > 0
    }

    /// True when the pod is assumed (chosen, bind not yet seen).
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.placed.get(uid).is_some_and(|p| p.assumed)
    }

    /// Adds or refreshes a node; true when it is new or changed in a way that may let pending
    /// pods fit (not a heartbeat).
    pub fn upsert_node(&mut self, node: &Value) -> bool {
        let mut fresh = node_state(node);
        match self.index.get(&fresh.name) {
            Some(&i) => {
                let old = &mut self.nodes[i];
                let changed = !old.same_shape(&fresh);
                fresh.requested = old.requested;
                fresh.nonzero_requested = old.nonzero_requested;
                fresh.pods = std::mem::take(&mut old.pods);
                fresh.ports = std::mem::take(&mut old.ports);
                *old = fresh;
                changed
            }
            None => {
                let name = fresh.name.clone();
                self.index.insert(name.clone(), self.nodes.len());
                self.nodes.push(fresh);
                for pod in self.waiting.remove(&name).unwrap_or_default() {
                    self.place(pod, false);
                }
                true
            }
        }
    }

    /// Forgets a node and the pods on it.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else { return };
        let node = self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
        for pod in node.pods {
            self.placed.remove(&pod.uid);
            if !pod.anti_affinity.is_empty() {
                self.anti = self.anti.saturating_sub(1);
            }
        }
    }

    fn place(&mut self, pod: Arc<PodInfo>, assumed: bool) {
        let Some(node) = pod.node_name.clone() else { return };
        match self.index.get(&node) {
            Some(&i) => {
                if !pod.anti_affinity.is_empty() {
                    self.anti += 1;
                }
                self.placed.insert(pod.uid.clone(), Placed { node, assumed });
                self.nodes[i].add_pod(pod);
            }
            None => self.waiting.entry(node).or_default().push(pod),
        }
    }

    fn unplace(&mut self, uid: &str) -> bool {
        for pods in self.waiting.values_mut() {
            pods.retain(|p| p.uid != uid);
        }
        let Some(placed) = self.placed.remove(uid) else { return false };
        if let Some(&i) = self.index.get(&placed.node) {
            let node = &mut self.nodes[i];
            if let Some(pod) = node.pods.iter().find(|p| p.uid == uid) {
                if !pod.anti_affinity.is_empty() {
                    self.anti = self.anti.saturating_sub(1);
                }
            }
            node.remove_pod(uid);
        }
        true
    }

    /// Takes room on `node` for a pod this scheduler chose, before its bind is seen.
    pub fn assume(&mut self, pod: &PodInfo, node: &str) {
        let mut placed = pod.clone();
        placed.node_name = Some(node.to_string());
        self.unplace(&pod.uid);
        self.place(Arc::new(placed), true);
    }

    /// Gives back the room of an assumed pod whose bind failed.
    pub fn forget(&mut self, uid: &str) {
        if self.is_assumed(uid) {
            self.unplace(uid);
        }
    }

    /// Applies a pod as the informer now shows it.
    pub fn upsert_pod(&mut self, pod: Arc<PodInfo>) -> PodEffect {
        let holds = pod.node_name.is_some() && !pod.finished;
        if holds {
            self.unplace(&pod.uid);
            self.place(pod, false);
            PodEffect::Placed
        } else if self.is_assumed(&pod.uid) && pod.node_name.is_none() {
            // The bind is still in flight; the informer shows an older state.
            PodEffect::None
        } else if self.unplace(&pod.uid) {
            PodEffect::Freed
        } else {
            PodEffect::None
        }
    }

    /// Applies a pod's deletion.
    pub fn remove_pod(&mut self, uid: &str) -> PodEffect {
        if self.unplace(uid) {
            PodEffect::Freed
        } else {
            PodEffect::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Value {
        json!({"metadata": {"name": name},
               "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"},
                          "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn pod(uid: &str, node: Option<&str>) -> Arc<PodInfo> {
        let mut p = json!({"metadata": {"name": uid, "namespace": "ns", "uid": uid},
                           "spec": {"containers": [{"name": "c", "image": "i",
                                    "resources": {"requests": {"cpu": "500m"}}}]}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        PodInfo::of(&p)
    }

    #[test]
    fn assumed_pods_hold_room_until_bound_or_forgotten() {
        let mut c = Cache::new();
        assert!(c.upsert_node(&node("a")));
        c.assume(&pod("p", None), "a");
        assert_eq!(c.node("a").map(|n| n.requested.cpu_milli), Some(500));
        // A stale informer view (still pending) does not drop the assumption.
        assert_eq!(c.upsert_pod(pod("p", None)), PodEffect::None);
        assert!(c.is_assumed("p"));
        // The bind is seen: confirmed, counted once.
        assert_eq!(c.upsert_pod(pod("p", Some("a"))), PodEffect::Placed);
        assert!(!c.is_assumed("p"));
        assert_eq!(c.node("a").map(|n| n.requested.cpu_milli), Some(500));
        c.assume(&pod("q", None), "a");
        c.forget("q");
        assert_eq!(c.node("a").map(|n| n.requested.cpu_milli), Some(500));
        assert_eq!(c.remove_pod("p"), PodEffect::Freed);
        assert_eq!(c.node("a").map(|n| n.requested.cpu_milli), Some(0));
    }

    #[test]
    fn heartbeats_are_not_changes_and_pods_wait_for_their_node() {
        let mut c = Cache::new();
        assert_eq!(c.upsert_pod(pod("p", Some("late"))), PodEffect::Placed);
        assert!(c.upsert_node(&node("late")));
        assert_eq!(c.node("late").map(|n| n.pods.len()), Some(1));
        assert!(!c.upsert_node(&node("late")), "the same node again is no change");
        let mut cordoned = node("late");
        cordoned["spec"] = json!({"unschedulable": true});
        assert!(c.upsert_node(&cordoned));
        assert_eq!(c.node("late").map(|n| n.pods.len()), Some(1), "pods survive a node update");
        assert!(c.upsert_node(&node("b")));
        c.remove_node("late");
        assert!(c.node("late").is_none());
        assert_eq!(c.nodes().len(), 1);
        assert_eq!(c.node("b").map(|n| n.name.as_str()), Some("b"));
    }
}
