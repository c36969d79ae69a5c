//! The DaemonSet controller's decision, pure: which nodes should run a daemon pod (nodeSelector,
//! required node affinity, taints against the pod's tolerations plus the ones Kubernetes adds
//! to every daemon pod), which pods to create or delete (missing, extra, misscheduled, failed,
//! and old revisions within `maxUnavailable` for RollingUpdate), and the status.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::api::object;
use crate::controllers::revision::HASH_LABEL;

/// The tolerations the DaemonSet controller adds to its pods (Kubernetes'
/// `AddOrUpdateDaemonPodTolerations`): daemons survive not-ready/unreachable nodes, node
/// pressure and cordoning.
pub fn default_tolerations() -> Vec<Value> {
    let mut out = vec![
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
    ];
    for key in ["disk-pressure", "memory-pressure", "pid-pressure", "unschedulable"] {
        out.push(json!({"key": format!("node.kubernetes.io/{key}"), "operator": "Exists", "effect": "NoSchedule"}));
    }
    out
}

fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    tolerations.iter().any(|t| {
        let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
        let key_ok = (field(t, "key").is_empty() && op == "Exists") || field(t, "key") == field(taint, "key");
        let effect_ok = field(t, "effect").is_empty() || field(t, "effect") == field(taint, "effect");
        let value_ok = op == "Exists" || field(t, "value") == field(taint, "value");
        key_ok && effect_ok && value_ok
    })
}

/// One `matchExpressions` requirement against a node's labels (or `matchFields` against its name).
fn requirement(req: &Value, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
    let key = req.get("key").and_then(Value::as_str).unwrap_or("");
    let values: Vec<&str> =
        req.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let have = lookup(key);
    let number = |s: &str| s.parse::<i64>().ok();
    match req.get("operator").and_then(Value::as_str).unwrap_or("") {
        "In" => have.is_some_and(|v| values.contains(&v.as_str())),
        "NotIn" => have.is_none_or(|v| !values.contains(&v.as_str())),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" => {
            matches!((have.as_deref().and_then(number), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((have.as_deref().and_then(number), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// Whether the daemon pod template may run on `node` (Kubernetes' `NodeShouldRunDaemonPod`).
pub fn should_run(ds: &Value, node: &Value) -> bool {
    let spec = ds.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({}));
    let labels = object::labels(node);
    let label = |k: &str| labels.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(sel) = spec.get("nodeSelector").and_then(Value::as_object) {
        if sel.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    if let Some(terms) = spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    {
        let node_name = object::name(node).to_string();
        let field = |k: &str| (k == "metadata.name").then(|| node_name.clone());
        let term_ok = |t: &Value| {
            let exprs = t.get("matchExpressions").and_then(Value::as_array);
            let fields = t.get("matchFields").and_then(Value::as_array);
            (exprs.is_some() || fields.is_some())
                && exprs.into_iter().flatten().all(|r| requirement(r, &label))
                && fields.into_iter().flatten().all(|r| requirement(r, &field))
        };
        if !terms.iter().any(term_ok) {
            return false;
        }
    }
    let mut tolerations = spec.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    tolerations.extend(default_tolerations());
    let taints = node.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
    taints.iter().all(|t| {
        !matches!(t.get("effect").and_then(Value::as_str), Some("NoSchedule" | "NoExecute"))
            || tolerates(&tolerations, t)
    })
}

/// The node a daemon pod is for: its `spec.nodeName`, else its node-affinity target.
pub fn pod_node(pod: &Value) -> Option<String> {
    if let Some(n) = object::str_at(pod, &["spec", "nodeName"]).filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    let terms =
        pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")?;
    terms.as_array()?.iter().find_map(|t| {
        t.get("matchFields")?.as_array()?.iter().find_map(|f| {
            (f["key"] == "metadata.name" && f["operator"] == "In")
                .then(|| f["values"][0].as_str().map(str::to_string))?
        })
    })
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn phase(pod: &Value) -> &str {
    object::str_at(pod, &["status", "phase"]).unwrap_or("Pending")
}

/// What the controller does for one DaemonSet now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Nodes that need a pod.
    pub create: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<String>,
    pub status: Value,
}

/// `maxUnavailable` of a RollingUpdate (an int or a percentage of `desired`, rounded up; at least 1).
fn max_unavailable(ds: &Value, desired: usize) -> usize {
    let raw = ds.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable");
    let n = match raw {
        Some(Value::Number(n)) => usize::try_from(n.as_i64().unwrap_or(1).max(0)).unwrap_or(1),
        Some(Value::String(s)) => {
            let pct: usize = s.trim_end_matches('%').parse().unwrap_or(0);
            (desired.saturating_mul(pct)).div_ceil(100)
        }
        _ => 1,
    };
    n.max(1)
}

/// Decides what to do for `ds` given every node and the pods it controls; `hash` is the current
/// template's revision hash.
pub fn plan(ds: &Value, nodes: &[&Value], pods: &[&Value], hash: &str) -> Plan {
    let mut by_node: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    let mut plan = Plan::default();
    for pod in pods {
        if object::deletion_timestamp(pod).is_some() {
            continue;
        }
        match pod_node(pod) {
            Some(n) => by_node.entry(n).or_default().push(pod),
            None => plan.delete.push(object::name(pod).to_string()),
        }
    }
    let known: std::collections::HashSet<&str> = nodes.iter().map(|n| object::name(n)).collect();
    let (mut desired, mut current, mut misscheduled, mut ready, mut updated) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let mut old: Vec<(&Value, bool)> = Vec::new();
    let mut unavailable = 0usize;
    for node in nodes {
        let name = object::name(node).to_string();
        let run = should_run(ds, node);
        let mut here = by_node.remove(&name).unwrap_or_default();
        if !run {
            if !here.is_empty() {
                misscheduled += 1;
            }
            plan.delete.extend(here.iter().map(|p| object::name(p).to_string()));
            continue;
        }
        desired += 1;
        // Failed pods go (and come back); extra pods go, oldest kept.
        let (failed, mut alive): (Vec<&Value>, Vec<&Value>) = here.drain(..).partition(|p| phase(p) == "Failed");
        plan.delete.extend(failed.iter().map(|p| object::name(p).to_string()));
        alive.sort_by_key(|p| object::str_at(p, &["metadata", "creationTimestamp"]).map(str::to_string));
        if alive.len() > 1 {
            plan.delete.extend(alive.split_off(1).iter().map(|p| object::name(p).to_string()));
        }
        match alive.first() {
            None => {
                plan.create.push(name);
                unavailable += 1;
            }
            Some(pod) => {
                current += 1;
                let is_ready = is_ready(pod);
                if is_ready {
                    ready += 1;
                } else {
                    unavailable += 1;
                }
                let pod_hash = object::labels(pod).get(HASH_LABEL).and_then(Value::as_str).map(str::to_string);
                if pod_hash.as_deref() == Some(hash) {
                    updated += 1;
                } else {
                    old.push((pod, is_ready));
                }
            }
        }
    }
    // Pods on nodes that no longer exist.
    for (node, pods) in by_node {
        if !known.contains(node.as_str()) {
            plan.delete.extend(pods.iter().map(|p| object::name(p).to_string()));
        }
    }
    let rolling =
        ds.pointer("/spec/updateStrategy/type").and_then(Value::as_str).unwrap_or("RollingUpdate") == "RollingUpdate";
    if rolling && !old.is_empty() {
        // Old pods that are not ready go first and freely; ready ones within maxUnavailable.
        let budget = max_unavailable(ds, desired);
        let mut room = budget.saturating_sub(unavailable);
        old.sort_by_key(|(_, r)| *r);
        for (pod, pod_ready) in old {
            if !pod_ready {
                plan.delete.push(object::name(pod).to_string());
            } else if room > 0 {
                room -= 1;
                plan.delete.push(object::name(pod).to_string());
            }
        }
    }
    plan.delete.sort();
    plan.delete.dedup();
    plan.status = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "updatedNumberScheduled": updated,
        "numberAvailable": ready,
        "numberUnavailable": desired.saturating_sub(ready),
        "observedGeneration": ds.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0),
    });
    if desired.saturating_sub(ready) == 0 {
        if let Some(m) = plan.status.as_object_mut() {
            m.remove("numberUnavailable");
        }
    }
    plan
}

/// The daemon pod for `node`: the template with the revision hash label, the default
/// tolerations, required node affinity to the node, `spec.nodeName` set to it, and a controller
/// ownerReference.
pub fn pod_for(ds: &Value, node: &str, hash: &str) -> Value {
    let template = ds.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let mut meta = template.get("metadata").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.remove("name");
    }
    meta["generateName"] = json!(format!("{}-", object::name(ds)));
    meta["namespace"] = json!(object::namespace(ds).unwrap_or("default"));
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"][HASH_LABEL] = json!(hash);
    meta["labels"]["pod-template-generation"] =
        json!(ds.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1).to_string());
    meta["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "DaemonSet", "name": object::name(ds),
        "uid": object::str_at(ds, &["metadata", "uid"]).unwrap_or(""),
        "controller": true, "blockOwnerDeletion": true,
    }]);
    let mut spec = template.get("spec").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let mut tolerations = spec.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    for t in default_tolerations() {
        if !tolerations.contains(&t) {
            tolerations.push(t);
        }
    }
    spec["tolerations"] = json!(tolerations);
    // Replace any node affinity's required terms with the one naming the node.
    if !spec["affinity"].is_object() {
        spec["affinity"] = json!({});
    }
    if !spec["affinity"]["nodeAffinity"].is_object() {
        spec["affinity"]["nodeAffinity"] = json!({});
    }
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
    });
    // Also bound at creation (as DaemonSets did before Kubernetes 1.12): the affinity above
    // says where the pod belongs, `nodeName` puts it there without a scheduler that reads it.
    spec["nodeName"] = json!(node);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(spec: Value) -> Value {
        json!({"metadata": {"name": "agent", "namespace": "ns", "uid": "u", "generation": 2},
               "spec": {"template": {"metadata": {"labels": {"app": "agent"}}, "spec": spec}}})
    }

    fn node(name: &str, labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}})
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "labels": {HASH_LABEL: hash}, "creationTimestamp": "2026-01-01T00:00:00Z"},
               "spec": {"nodeName": node},
               "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    #[test]
    fn eligibility_follows_selectors_affinity_and_taints() {
        let plain = ds(json!({"containers": []}));
        assert!(should_run(&plain, &node("a", json!({}), json!([]))));
        // Cordoned, not-ready and pressured nodes still run daemons.
        let cordoned = node(
            "a",
            json!({}),
            json!([
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"}]),
        );
        assert!(should_run(&plain, &cordoned));
        let tainted = node("a", json!({}), json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]));
        assert!(!should_run(&plain, &tainted));
        let tolerant = ds(json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}]}));
        assert!(should_run(&tolerant, &tainted));
        assert!(should_run(&plain, &node("a", json!({}), json!([{"key": "x", "effect": "PreferNoSchedule"}]))));

        let selective = ds(json!({"nodeSelector": {"disk": "ssd"}}));
        assert!(should_run(&selective, &node("a", json!({"disk": "ssd"}), json!([]))));
        assert!(!should_run(&selective, &node("b", json!({"disk": "hdd"}), json!([]))));
        let affine = ds(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}]}}}}));
        assert!(should_run(&affine, &node("a", json!({"zone": "z1"}), json!([]))));
        assert!(!should_run(&affine, &node("a", json!({"zone": "z2"}), json!([]))));
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let d = ds(json!({"nodeSelector": {"run": "yes"}}));
        let (a, b, c) = (
            node("a", json!({"run": "yes"}), json!([])),
            node("b", json!({"run": "yes"}), json!([])),
            node("c", json!({}), json!([])),
        );
        let on_a = pod("p-a", "a", "h1", true);
        let on_c = pod("p-c", "c", "h1", true);
        let plan = plan(&d, &[&a, &b, &c], &[&on_a, &on_c], "h1");
        assert_eq!(plan.create, vec!["b"]);
        assert_eq!(plan.delete, vec!["p-c"], "misscheduled");
        assert_eq!(plan.status["desiredNumberScheduled"], 2);
        assert_eq!(plan.status["currentNumberScheduled"], 1);
        assert_eq!(plan.status["numberMisscheduled"], 1);
        assert_eq!(plan.status["numberReady"], 1);
        assert_eq!(plan.status["observedGeneration"], 2);
    }

    #[test]
    fn rolling_update_respects_max_unavailable() {
        let d = ds(json!({}));
        let nodes: Vec<Value> = ["a", "b", "c"].iter().map(|n| node(n, json!({}), json!([]))).collect();
        let refs: Vec<&Value> = nodes.iter().collect();
        let pods = [pod("p-a", "a", "old", true), pod("p-b", "b", "old", true), pod("p-c", "c", "old", true)];
        let prefs: Vec<&Value> = pods.iter().collect();
        let p = plan(&d, &refs, &prefs, "new");
        assert_eq!(p.delete.len(), 1, "maxUnavailable 1");
        assert_eq!(p.status["updatedNumberScheduled"], 0);
        let mut on_delete = d.clone();
        on_delete["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        assert!(plan(&on_delete, &refs, &prefs, "new").delete.is_empty());
        let mut wide = d.clone();
        wide["spec"]["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}});
        assert_eq!(plan(&wide, &refs, &prefs, "new").delete.len(), 3);
    }

    #[test]
    fn pods_target_their_node() {
        let d = ds(json!({"containers": [{"name": "c", "image": "i"}]}));
        let p = pod_for(&d, "node-1", "h1");
        assert_eq!(pod_node(&p).as_deref(), Some("node-1"));
        assert_eq!(p["metadata"]["labels"][HASH_LABEL], "h1");
        assert_eq!(p["metadata"]["labels"]["app"], "agent");
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
        let tolerations = p["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
        assert!(tolerations.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"));
    }
}
