//! Filters: pure functions deciding whether one pod may go on one node. Each returns the
//! [`Misfit`] kube-scheduler's plugin of the same job would report; [`filter`] runs them in
//! kube-scheduler's order and stops at the first failure.

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Toleration};
use serde_json::Value;

use super::fit::{Misfit, NodeState};
use super::pod_info::PodInfo;
use super::topology::Topology;

/// Runs every filter; `handler` is the handler the pod's RuntimeClass names, `topo` the
/// cluster-wide view its pod (anti-)affinity and spreading need.
pub fn filter(pod: &PodInfo, handler: Option<&str>, node: &NodeState, topo: &Topology) -> Result<(), Misfit> {
    unschedulable(pod, node)?;
    taints(pod, node)?;
    node_affinity(pod, node)?;
    host_ports(pod, node)?;
    resources(pod, node)?;
    runtime(handler, node)?;
    topo.spread_filter(node)?;
    topo.affinity_filter(node)
}

/// True when one of `tolerations` tolerates the taint `key=value:effect`.
pub fn tolerates(tolerations: &[Toleration], key: &str, value: &str, effect: &str) -> bool {
    tolerations.iter().any(|t| {
        let t_key = t.key.as_deref().unwrap_or("");
        let t_effect = t.effect.as_deref().unwrap_or("");
        let op = t.operator.as_deref().unwrap_or("Equal");
        let key_ok = (t_key.is_empty() && op == "Exists") || t_key == key;
        let effect_ok = t_effect.is_empty() || t_effect == effect;
        let value_ok = op == "Exists" || t.value.as_deref().unwrap_or("") == value;
        key_ok && effect_ok && value_ok
    })
}

/// `spec.unschedulable` (cordon) and a node that is not Ready, unless tolerated as the
/// `node.kubernetes.io/unschedulable` / `not-ready` taints.
pub fn unschedulable(pod: &PodInfo, node: &NodeState) -> Result<(), Misfit> {
    if !node.ready && !tolerates(&pod.tolerations, "node.kubernetes.io/not-ready", "", "NoSchedule") {
        return Err(Misfit::NotReady);
    }
    if node.unschedulable && !tolerates(&pod.tolerations, "node.kubernetes.io/unschedulable", "", "NoSchedule") {
        return Err(Misfit::Unschedulable);
    }
    Ok(())
}

/// Every `NoSchedule`/`NoExecute` taint must be tolerated.
pub fn taints(pod: &PodInfo, node: &NodeState) -> Result<(), Misfit> {
    for taint in &node.taints {
        let text = |k: &str| taint.get(k).and_then(Value::as_str).unwrap_or("");
        let (key, value, effect) = (text("key"), text("value"), text("effect"));
        if matches!(effect, "NoSchedule" | "NoExecute") && !tolerates(&pod.tolerations, key, value, effect) {
            return Err(Misfit::UntoleratedTaint(format!("{key}: {value}")));
        }
    }
    Ok(())
}

/// One node selector requirement against a value (`None`: the label or field is absent).
pub fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), [want]) = (value.and_then(number), values) else { return false };
            let Some(want) = number(want) else { return false };
            if req.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// A node selector term: all its expressions (labels) and fields (`metadata.name`) match. An
/// empty term matches nothing, as in Kubernetes.
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeState) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, node.label(&r.key)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(node.name.as_str());
            requirement_matches(r, value)
        })
}

/// `nodeSelector` and the required node affinity (any term may match).
pub fn node_affinity(pod: &PodInfo, node: &NodeState) -> Result<(), Misfit> {
    if pod.node_selector.iter().any(|(k, v)| node.label(k) != Some(v.as_str())) {
        return Err(Misfit::NodeSelector);
    }
    if let Some(terms) = &pod.required_terms {
        if !terms.iter().any(|t| term_matches(t, node)) {
            return Err(Misfit::NodeSelector);
        }
    }
    Ok(())
}

/// No host port of the pod is held by a pod on the node.
pub fn host_ports(pod: &PodInfo, node: &NodeState) -> Result<(), Misfit> {
    if pod.host_ports.iter().any(|want| node.ports.iter().any(|held| want.conflicts(held))) {
        return Err(Misfit::HostPorts);
    }
    Ok(())
}

/// Requests plus what the node's pods request stay within allocatable (pods, cpu, memory).
pub fn resources(pod: &PodInfo, node: &NodeState) -> Result<(), Misfit> {
    let (req, used, alloc) = (pod.requests, node.requested, node.allocatable);
    if used.pods.saturating_add(req.pods) > alloc.pods {
        return Err(Misfit::TooManyPods);
    }
    if req.cpu_milli > 0 && used.cpu_milli.saturating_add(req.cpu_milli) > alloc.cpu_milli {
        return Err(Misfit::InsufficientCpu);
    }
    if req.memory > 0 && used.memory.saturating_add(req.memory) > alloc.memory {
        return Err(Misfit::InsufficientMemory);
    }
    Ok(())
}

/// The RuntimeClass handler the pod needs is among the node's `status.runtimeHandlers`.
pub fn runtime(handler: Option<&str>, node: &NodeState) -> Result<(), Misfit> {
    match handler {
        Some(h) if !node.runtime_handlers.iter().any(|n| n == h) => Err(Misfit::RuntimeHandler(h.to_string())),
        _ => Ok(()),
    }
}
