//! Filtering and scoring: pure functions from a pod and the nodes' state to a choice. No IO.

use serde_json::Value;

use super::quantity::{parse_milli, parse_units};
use crate::api::object;

/// What the scheduler knows about one node.
#[derive(Clone, Debug, Default)]
pub struct NodeState {
    pub name: String,
    pub ready: bool,
    pub unschedulable: bool,
    pub labels: serde_json::Map<String, Value>,
    pub taints: Vec<Value>,
    /// Names from `status.runtimeHandlers`.
    pub runtime_handlers: Vec<String>,
    pub allocatable: Resources,
    pub requested: Resources,
}

/// CPU in millicores, memory in bytes, and a pod count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_milli: i128,
    pub memory: i128,
    pub pods: i128,
}

impl Resources {
    pub fn add(&mut self, other: Resources) {
        self.cpu_milli = self.cpu_milli.saturating_add(other.cpu_milli);
        self.memory = self.memory.saturating_add(other.memory);
        self.pods = self.pods.saturating_add(other.pods);
    }
}

/// Why a node does not fit, worded as Kubernetes' `FailedScheduling` events word it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Misfit {
    NotReady,
    Unschedulable,
    NodeSelector,
    UntoleratedTaint(String),
    RuntimeHandler(String),
    InsufficientCpu,
    InsufficientMemory,
    TooManyPods,
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Misfit::NotReady => write!(f, "node(s) had untolerated taint {{node.kubernetes.io/not-ready: }}"),
            Misfit::Unschedulable => write!(f, "node(s) were unschedulable"),
            Misfit::NodeSelector => write!(f, "node(s) didn't match Pod's node affinity/selector"),
            Misfit::UntoleratedTaint(t) => write!(f, "node(s) had untolerated taint {{{t}}}"),
            Misfit::RuntimeHandler(h) => write!(f, "node(s) don't offer runtime handler \"{h}\""),
            Misfit::InsufficientCpu => write!(f, "Insufficient cpu"),
            Misfit::InsufficientMemory => write!(f, "Insufficient memory"),
            Misfit::TooManyPods => write!(f, "Too many pods"),
        }
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

/// A node's allocatable resources and everything else the filters read.
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

fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    let key = taint.get("key").and_then(Value::as_str).unwrap_or("");
    let value = taint.get("value").and_then(Value::as_str).unwrap_or("");
    let effect = taint.get("effect").and_then(Value::as_str).unwrap_or("");
    tolerations.iter().any(|t| {
        let t_key = t.get("key").and_then(Value::as_str).unwrap_or("");
        let t_effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
        let key_ok = t_key.is_empty() && op == "Exists" || t_key == key;
        let effect_ok = t_effect.is_empty() || t_effect == effect;
        let value_ok = op == "Exists" || t.get("value").and_then(Value::as_str).unwrap_or("") == value;
        key_ok && effect_ok && value_ok
    })
}

/// Checks one pod against one node; `runtime_handler` is the handler its RuntimeClass names.
pub fn fits(pod: &Value, requests: Resources, runtime_handler: Option<&str>, node: &NodeState) -> Result<(), Misfit> {
    let tolerations = pod.pointer("/spec/tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    if !node.ready
        && !tolerates(&tolerations, &serde_json::json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}))
    {
        return Err(Misfit::NotReady);
    }
    if node.unschedulable
        && !tolerates(
            &tolerations,
            &serde_json::json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}),
        )
    {
        return Err(Misfit::Unschedulable);
    }
    if let Some(selector) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object) {
        if selector.iter().any(|(k, v)| node.labels.get(k) != Some(v)) {
            return Err(Misfit::NodeSelector);
        }
    }
    for taint in &node.taints {
        let effect = taint.get("effect").and_then(Value::as_str).unwrap_or("");
        if matches!(effect, "NoSchedule" | "NoExecute") && !tolerates(&tolerations, taint) {
            let key = taint.get("key").and_then(Value::as_str).unwrap_or("");
            let value = taint.get("value").and_then(Value::as_str).unwrap_or("");
            return Err(Misfit::UntoleratedTaint(format!("{key}: {value}")));
        }
    }
    if let Some(handler) = runtime_handler {
        if !node.runtime_handlers.iter().any(|h| h == handler) {
            return Err(Misfit::RuntimeHandler(handler.to_string()));
        }
    }
    let after = |used: i128, asked: i128| used.saturating_add(asked);
    if after(node.requested.pods, requests.pods) > node.allocatable.pods {
        return Err(Misfit::TooManyPods);
    }
    if requests.cpu_milli > 0 && after(node.requested.cpu_milli, requests.cpu_milli) > node.allocatable.cpu_milli {
        return Err(Misfit::InsufficientCpu);
    }
    if requests.memory > 0 && after(node.requested.memory, requests.memory) > node.allocatable.memory {
        return Err(Misfit::InsufficientMemory);
    }
    Ok(())
}

/// Higher is better: the share of cpu and memory left free after placing the pod.
pub fn score(requests: Resources, node: &NodeState) -> i128 {
    // The share left free, in percent; every step saturates so no quantity can overflow it.
    let free = |alloc: i128, used: i128| {
        if alloc <= 0 {
            return 0;
        }
        let left = alloc.saturating_sub(used).max(0);
        // Past i128, left / (alloc / 100) gives the same percent without multiplying a huge value.
        let percent = match left.checked_mul(100) {
            Some(scaled) => scaled / alloc,
            None => left / (alloc / 100).max(1),
        };
        percent.min(100)
    };
    free(node.allocatable.cpu_milli, node.requested.cpu_milli.saturating_add(requests.cpu_milli))
        + free(node.allocatable.memory, node.requested.memory.saturating_add(requests.memory))
}

/// The best node for a pod, or the reasons no node fits (`0/N nodes are available: ...`).
pub fn choose<'a>(pod: &Value, runtime_handler: Option<&str>, nodes: &'a [NodeState]) -> Result<&'a NodeState, String> {
    let requests = pod_requests(pod);
    let mut misfits: std::collections::BTreeMap<Misfit, usize> = Default::default();
    let mut best: Option<(&NodeState, i128)> = None;
    for node in nodes {
        match fits(pod, requests, runtime_handler, node) {
            Ok(()) => {
                let s = score(requests, node);
                if best.is_none_or(|(_, b)| s > b) {
                    best = Some((node, s));
                }
            }
            Err(m) => *misfits.entry(m).or_default() += 1,
        }
    }
    best.map(|(n, _)| n).ok_or_else(|| {
        let reasons: Vec<String> = misfits.iter().map(|(m, n)| format!("{n} {m}")).collect();
        let detail = if reasons.is_empty() { "no nodes registered".to_string() } else { reasons.join(", ") };
        format!("0/{} nodes are available: {detail}.", nodes.len())
    })
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
