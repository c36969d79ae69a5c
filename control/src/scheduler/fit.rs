//! The scheduler's model of a node ([`NodeState`]), a pod's requests ([`Resources`]), why a node
//! does not fit ([`Misfit`]) and how a failed attempt is worded ([`Diagnosis`]); plus
//! [`fits`]/[`score`]/[`choose`] over plain pod objects. Pure: no IO.
//!
//! The filters themselves are in [`super::filters`], the scores in [`super::scores`].

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::pod_info::{HostPort, PodInfo};
use super::quantity::{parse_milli, parse_units};
use super::{filters, scores, topology};
use crate::api::object;

/// What the scheduler knows about one node.
#[derive(Clone, Debug, Default)]
pub struct NodeState {
    /// `metadata.name`.
    pub name: String,
    /// The Ready condition is True.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `metadata.labels`.
    pub labels: serde_json::Map<String, Value>,
    /// `spec.taints`.
    pub taints: Vec<Value>,
    /// Names from `status.runtimeHandlers`.
    pub runtime_handlers: Vec<String>,
    /// `status.allocatable` (or `capacity`).
    pub allocatable: Resources,
    /// The sum of the requests of the pods on it (bound or assumed), finished pods excepted.
    pub requested: Resources,
    /// The same sum with the scoring defaults for pods that request nothing.
    pub nonzero_requested: Resources,
    /// Images the node reports having (`status.images[].names`).
    pub images: HashSet<String>,
    /// The pods on it (bound or assumed), finished pods excepted.
    pub pods: Vec<Arc<PodInfo>>,
    /// The host ports those pods hold.
    pub ports: Vec<HostPort>,
}

impl NodeState {
    /// The fields a pod's fit depends on, other than its pods: a change of these may make an
    /// unschedulable pod schedulable (a heartbeat changes none of them).
    pub fn same_shape(&self, other: &NodeState) -> bool {
        self.ready == other.ready
            && self.unschedulable == other.unschedulable
            && self.labels == other.labels
            && self.taints == other.taints
            && self.runtime_handlers == other.runtime_handlers
            && self.allocatable == other.allocatable
            && self.images == other.images
    }

    /// Counts a pod as placed on this node.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(pod.requests);
        self.nonzero_requested.add(pod.nonzero);
        self.ports.extend(pod.host_ports.iter().cloned());
        self.pods.push(pod);
    }

    /// Forgets a pod placed on this node (by uid); true if it was there.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.uid == uid) else { return false };
        let pod = self.pods.swap_remove(i);
        self.requested.sub(pod.requests);
        self.nonzero_requested.sub(pod.nonzero);
        for port in &pod.host_ports {
            if let Some(j) = self.ports.iter().position(|p| p == port) {
                self.ports.swap_remove(j);
            }
        }
        true
    }

    /// The value of a node label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).and_then(Value::as_str)
    }
}

/// CPU in millicores, memory in bytes, and a pod count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Millicores.
    pub cpu_milli: i128,
    /// Bytes.
    pub memory: i128,
    /// Pods.
    pub pods: i128,
}

impl Resources {
    /// Adds `other`, saturating.
    pub fn add(&mut self, other: Resources) {
        self.cpu_milli = self.cpu_milli.saturating_add(other.cpu_milli);
        self.memory = self.memory.saturating_add(other.memory);
        self.pods = self.pods.saturating_add(other.pods);
    }

    /// Subtracts `other`, saturating and never below zero.
    pub fn sub(&mut self, other: Resources) {
        self.cpu_milli = self.cpu_milli.saturating_sub(other.cpu_milli).max(0);
        self.memory = self.memory.saturating_sub(other.memory).max(0);
        self.pods = self.pods.saturating_sub(other.pods).max(0);
    }
}

/// Why a node does not fit, worded as Kubernetes' `FailedScheduling` events word it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Misfit {
    /// The Ready condition is not True (the `not-ready` taint Kubernetes would have set).
    NotReady,
    /// Cordoned.
    Unschedulable,
    /// `nodeSelector` or required node affinity.
    NodeSelector,
    /// A `NoSchedule`/`NoExecute` taint the pod does not tolerate (`key: value`).
    UntoleratedTaint(String),
    /// The RuntimeClass handler is not in `status.runtimeHandlers`.
    RuntimeHandler(String),
    /// A host port is taken.
    HostPorts,
    /// Not enough cpu.
    InsufficientCpu,
    /// Not enough memory.
    InsufficientMemory,
    /// The pod count is at `allocatable.pods`.
    TooManyPods,
    /// Required pod affinity.
    PodAffinity,
    /// Required pod anti-affinity.
    PodAntiAffinity,
    /// An existing pod's anti-affinity forbids the pod.
    ExistingAntiAffinity,
    /// `DoNotSchedule` topology spread.
    Spread,
    /// The node lacks a spread constraint's topology label.
    SpreadMissingLabel,
    /// A bound PersistentVolume's node affinity excludes the node.
    VolumeNodeAffinity,
    /// The pod's claims cannot be used on any node (a missing claim, an unbound immediate one).
    Volume(String),
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Misfit::NotReady => write!(f, "node(s) had untolerated taint {{node.kubernetes.io/not-ready: }}"),
            Misfit::Unschedulable => write!(f, "node(s) were unschedulable"),
            Misfit::NodeSelector => write!(f, "node(s) didn't match Pod's node affinity/selector"),
            Misfit::UntoleratedTaint(t) => write!(f, "node(s) had untolerated taint {{{t}}}"),
            Misfit::RuntimeHandler(h) => write!(f, "node(s) don't offer runtime handler \"{h}\""),
            Misfit::HostPorts => write!(f, "node(s) didn't have free ports for the requested pod ports"),
            Misfit::InsufficientCpu => write!(f, "Insufficient cpu"),
            Misfit::InsufficientMemory => write!(f, "Insufficient memory"),
            Misfit::TooManyPods => write!(f, "Too many pods"),
            Misfit::PodAffinity => write!(f, "node(s) didn't match pod affinity rules"),
            Misfit::PodAntiAffinity => write!(f, "node(s) didn't match pod anti-affinity rules"),
            Misfit::ExistingAntiAffinity => write!(f, "node(s) didn't satisfy existing pods anti-affinity rules"),
            Misfit::Spread => write!(f, "node(s) didn't match pod topology spread constraints"),
            Misfit::SpreadMissingLabel => {
                write!(f, "node(s) didn't match pod topology spread constraints (missing required label)")
            }
            Misfit::VolumeNodeAffinity => write!(f, "node(s) had volume node affinity conflict"),
            Misfit::Volume(why) => write!(f, "{why}"),
        }
    }
}

/// Why no node fits: how many nodes failed for each reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnosis {
    /// Nodes considered.
    pub nodes: usize,
    /// Failures by reason.
    pub misfits: BTreeMap<Misfit, usize>,
}

impl std::fmt::Display for Diagnosis {
    /// `0/3 nodes are available: 2 Insufficient memory, 1 node(s) had untolerated taint {..}.`:
    /// reasons by count (most first), then by text, as kube-scheduler sorts them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut reasons: Vec<(usize, String)> = self.misfits.iter().map(|(m, n)| (*n, m.to_string())).collect();
        reasons.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let detail = if reasons.is_empty() {
            "no nodes registered".to_string()
        } else {
            reasons.iter().map(|(n, m)| format!("{n} {m}")).collect::<Vec<_>>().join(", ")
        };
        write!(f, "0/{} nodes are available: {detail}.", self.nodes)
    }
}

impl Diagnosis {
    /// The event message of a pod that preempts nothing: the diagnosis and the preemption
    /// verdict kube-scheduler appends.
    pub fn event_message(&self) -> String {
        if self.nodes == 0 {
            return "no nodes available to schedule pods".to_string();
        }
        format!(
            "{self} preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.",
            n = self.nodes
        )
    }
}

fn quantity(v: Option<&Value>, milli: bool) -> i128 {
    let Some(s) =
        v.and_then(Value::as_str).map(String::from).or_else(|| v.and_then(Value::as_i64).map(|n| n.to_string()))
    else {
        return 0;
    };
    (if milli { parse_milli(&s) } else { parse_units(&s) }).unwrap_or(0).max(0)
}

/// A node's allocatable resources and everything else the filters read (no pods yet).
pub fn node_state(node: &Value) -> NodeState {
    let status = node.get("status").cloned().unwrap_or(Value::Null);
    let alloc = status.get("allocatable").or_else(|| status.get("capacity"));
    let ready = status.get("conditions").and_then(Value::as_array).is_some_and(|c| {
        c.iter().any(|c| c.get("type") == Some(&"Ready".into()) && c.get("status") == Some(&"True".into()))
    });
    NodeState {
        name: object::name(node).to_string(),
        ready,
        unschedulable: node.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false),
        labels: object::labels(node),
        taints: node.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default(),
        runtime_handlers: status
            .get("runtimeHandlers")
            .and_then(Value::as_array)
            .map(|hs| hs.iter().filter_map(|h| h.get("name").and_then(Value::as_str)).map(String::from).collect())
            .unwrap_or_default(),
        allocatable: Resources {
            cpu_milli: quantity(alloc.and_then(|a| a.get("cpu")), true),
            memory: quantity(alloc.and_then(|a| a.get("memory")), false),
            pods: quantity(alloc.and_then(|a| a.get("pods")), false),
        },
        requested: Resources::default(),
        nonzero_requested: Resources::default(),
        images: status
            .get("images")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("names").and_then(Value::as_array))
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        pods: Vec::new(),
        ports: Vec::new(),
    }
}

/// What a pod asks for: the sum of its containers' requests, or its largest init container's.
pub fn pod_requests(pod: &Value) -> Resources {
    let sum = |list: &str| {
        let mut total = Resources::default();
        let mut max_init = Resources::default();
        for c in pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten() {
            let req = c.pointer("/resources/requests").or_else(|| c.pointer("/resources/limits"));
            let r = Resources {
                cpu_milli: quantity(req.and_then(|r| r.get("cpu")), true),
                memory: quantity(req.and_then(|r| r.get("memory")), false),
                pods: 0,
            };
            total.add(r);
            max_init.cpu_milli = max_init.cpu_milli.max(r.cpu_milli);
            max_init.memory = max_init.memory.max(r.memory);
        }
        (total, max_init)
    };
    let (mut total, _) = sum("containers");
    let (_, init) = sum("initContainers");
    total.cpu_milli = total.cpu_milli.max(init.cpu_milli);
    total.memory = total.memory.max(init.memory);
    total.pods = 1;
    total
}

/// Checks one pod object against one node alone (no other nodes' pods); `runtime_handler` is
/// the handler its RuntimeClass names.
pub fn fits(pod: &Value, requests: Resources, runtime_handler: Option<&str>, node: &NodeState) -> Result<(), Misfit> {
    let mut info = (*PodInfo::of(pod)).clone();
    info.requests = requests;
    let topo = topology::Topology::compute(&info, std::slice::from_ref(node), true);
    filters::filter(&info, runtime_handler, node, &topo)
}

/// The least-allocated score (0..=200: the percent of cpu and of memory left free after placing
/// the pod).
pub fn score(requests: Resources, node: &NodeState) -> i128 {
    scores::free_percent(node.allocatable.cpu_milli, node.requested.cpu_milli.saturating_add(requests.cpu_milli))
        + scores::free_percent(node.allocatable.memory, node.requested.memory.saturating_add(requests.memory))
}

/// The best node for a pod object, or the reasons no node fits (`0/N nodes are available: ...`).
pub fn choose<'a>(pod: &Value, runtime_handler: Option<&str>, nodes: &'a [NodeState]) -> Result<&'a NodeState, String> {
    let info = PodInfo::of(pod);
    let refs: Vec<&NodeState> = nodes.iter().collect();
    super::decide::decide(&info, runtime_handler, &refs, 0).map(|i| &nodes[i]).map_err(|d| d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, mem: &str) -> NodeState {
        node_state(&json!({
            "metadata": {"name": name, "labels": {"zone": "a"}},
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "runtimeHandlers": [{"name": "skiff-wasm"}]},
        }))
    }

    fn pod(cpu: &str) -> Value {
        json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}})
    }

    #[test]
    fn picks_the_least_loaded_node_that_fits() {
        let mut busy = node("busy", "2", "4Gi");
        busy.requested = Resources { cpu_milli: 1500, memory: 1 << 30, pods: 3 };
        let idle = node("idle", "2", "4Gi");
        let nodes = vec![busy, idle];
        assert_eq!(choose(&pod("250m"), None, &nodes).map(|n| n.name.as_str()), Ok("idle"));
        let err = choose(&pod("3"), None, &nodes).expect_err("too big");
        assert_eq!(err, "0/2 nodes are available: 2 Insufficient cpu.");
    }

    #[test]
    fn selectors_taints_and_runtimes() {
        let mut tainted = node("t", "2", "4Gi");
        tainted.taints = vec![json!({"key": "edge", "value": "yes", "effect": "NoSchedule"})];
        let nodes = vec![tainted];
        assert!(matches!(fits(&pod("1"), pod_requests(&pod("1")), None, &nodes[0]), Err(Misfit::UntoleratedTaint(_))));
        let mut tolerant = pod("1");
        tolerant["spec"]["tolerations"] =
            json!([{"key": "edge", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]);
        assert!(choose(&tolerant, None, &nodes).is_ok());
        tolerant["spec"]["nodeSelector"] = json!({"zone": "b"});
        assert!(choose(&tolerant, None, &nodes).expect_err("selector").contains("node affinity/selector"));
        tolerant["spec"]["nodeSelector"] = json!({"zone": "a"});
        assert!(choose(&tolerant, Some("skiff-wasm"), &nodes).is_ok());
        assert!(choose(&tolerant, Some("runc"), &nodes).expect_err("handler").contains("runtime handler"));
        let mut down = node("down", "2", "4Gi");
        down.ready = false;
        assert!(choose(&pod("1"), None, &[down]).is_err());
        assert_eq!(choose(&pod("1"), None, &[]).expect_err("none"), "0/0 nodes are available: no nodes registered.");
    }

    /// Property: whatever quantities a node offers and pods ask for (up to the largest a string
    /// can name), filtering and scoring neither overflow nor panic, and a score stays in 0..=200.
    #[test]
    fn huge_quantities_never_overflow() {
        let quantities = [
            "0",
            "1",
            "250m",
            "9223372036854775807",
            "9223372036854775807P",
            "170141183460469231731687303715884105727",
            "170141183460469231731687303715884105727m",
            "99999999999999999999999999999999999999",
            "1e37",
            "-170141183460469231731687303715884105727",
        ];
        for alloc in quantities {
            for used in [0i128, 1, i128::MAX / 2, i128::MAX] {
                for asked in quantities {
                    let mut n = node("n", alloc, alloc);
                    n.allocatable.pods = i128::MAX;
                    n.requested = Resources { cpu_milli: used, memory: used, pods: used };
                    let p = json!({"spec": {"containers": [
                        {"name": "a", "image": "i", "resources": {"requests": {"cpu": asked, "memory": asked}}},
                        {"name": "b", "image": "i", "resources": {"requests": {"cpu": asked, "memory": asked}}},
                    ]}});
                    let requests = pod_requests(&p);
                    let _ = fits(&p, requests, None, &n);
                    let s = score(requests, &n);
                    assert!((0..=200).contains(&s), "score {s} for {alloc}/{used}/{asked}");
                    let _ = choose(&p, None, std::slice::from_ref(&n));
                }
            }
        }
    }
}
