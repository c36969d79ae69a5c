//! What an object costs a ResourceQuota, as kube's quota evaluators count it (pure functions).
//!
//! Amounts are milli-units (`i128`, from [`parse_milli`]) so `250m` of CPU and `128Mi` of memory
//! add up exactly; sums saturate instead of overflowing (client values).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::object;
use crate::scheduler::quantity::parse_milli;

/// Resource name -> amount in milli-units.
pub type Usage = BTreeMap<String, i128>;

/// The milli-units of a quantity given as a string or a number; `None` if it does not parse.
pub fn milli(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) => parse_milli(s),
        Value::Number(n) => parse_milli(&n.to_string()),
        _ => None,
    }
}

/// A `ResourceList` (`{"cpu": "1", ...}`) as amounts; entries that do not parse are left out.
pub fn parse_list(v: Option<&Value>) -> Usage {
    v.and_then(Value::as_object).into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), milli(v)?))).collect()
}

/// `a + b` per resource, saturating.
pub fn add(a: &Usage, b: &Usage) -> Usage {
    let mut out = a.clone();
    for (k, v) in b {
        let e = out.entry(k.clone()).or_insert(0);
        *e = e.saturating_add(*v);
    }
    out
}

/// `a - b` per resource of `a`, never below zero.
pub fn subtract_non_negative(a: &Usage, b: &Usage) -> Usage {
    a.iter().map(|(k, v)| (k.clone(), v.saturating_sub(b.get(k).copied().unwrap_or(0)).max(0))).collect()
}

/// The entries of `u` whose names `names` has.
pub fn mask<'a>(u: &Usage, names: impl IntoIterator<Item = &'a String>) -> Usage {
    names.into_iter().filter_map(|n| Some((n.clone(), *u.get(n)?))).collect()
}

/// Resources whose names hold bytes (printed with binary suffixes when they divide evenly).
fn is_bytes(name: &str) -> bool {
    name.contains("memory") || name.contains("storage") || name.contains("hugepages")
}

/// An amount as Kubernetes prints a quantity: `500m`, `2`, `512Mi`, `1G`.
pub fn format(name: &str, milli: i128) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let units = milli / 1000;
    if units == 0 {
        return "0".into();
    }
    if is_bytes(name) && units % 1024 == 0 {
        let mut value = units;
        let mut suffix = "";
        for s in ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"] {
            if value % 1024 != 0 {
                break;
            }
            value /= 1024;
            suffix = s;
        }
        return format!("{value}{suffix}");
    }
    let mut value = units;
    let mut suffix = "";
    for s in ["k", "M", "G", "T", "P", "E"] {
        if value % 1000 != 0 {
            break;
        }
        value /= 1000;
        suffix = s;
    }
    format!("{value}{suffix}")
}

/// `k=v,k=v` sorted by name, as kube's quota messages print usage.
pub fn pretty(u: &Usage) -> String {
    u.iter().map(|(k, v)| format!("{k}={}", format(k, *v))).collect::<Vec<_>>().join(",")
}

/// Succeeded and Failed pods hold no quota.
pub fn pod_is_terminal(pod: &Value) -> bool {
    matches!(object::str_at(pod, &["status", "phase"]), Some("Succeeded" | "Failed"))
}

/// The names of resources a pod's containers count under for one container's requests and
/// limits (`podComputeUsageHelper`).
fn container_usage(c: &Value) -> Usage {
    let mut u = Usage::new();
    for (k, v) in parse_list(c.pointer("/resources/requests")) {
        if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
            u.insert(k.clone(), v);
        }
        u.insert(format!("requests.{k}"), v);
    }
    for (k, v) in parse_list(c.pointer("/resources/limits")) {
        if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
            u.insert(format!("limits.{k}"), v);
        }
    }
    u
}

/// The sum over regular containers, raised to the largest init container per resource, plus
/// the pod overhead (kube's `PodRequests`/`PodLimits`).
fn pod_compute(pod: &Value) -> Usage {
    let list = |field: &str| pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array).cloned();
    let mut sum = Usage::new();
    for c in list("containers").unwrap_or_default() {
        sum = add(&sum, &container_usage(&c));
    }
    for c in list("initContainers").unwrap_or_default() {
        for (k, v) in container_usage(&c) {
            let e = sum.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
    }
    let overhead = parse_list(pod.pointer("/spec/overhead"));
    if !overhead.is_empty() && !sum.is_empty() {
        for (k, v) in overhead {
            for name in [k.clone(), format!("requests.{k}"), format!("limits.{k}")] {
                if let Some(e) = sum.get_mut(&name) {
                    *e = e.saturating_add(v);
                }
            }
        }
    }
    sum
}

/// What one pod costs (nothing when it is terminal).
pub fn pod_usage(pod: &Value) -> Usage {
    if pod_is_terminal(pod) {
        return Usage::new();
    }
    let mut u = pod_compute(pod);
    u.insert("pods".into(), 1000);
    u.insert("count/pods".into(), 1000);
    u
}

/// True when no container of the pod requests or limits anything (QoS class BestEffort).
pub fn pod_is_best_effort(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().all(|list| {
        pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten().all(|c| {
            ["requests", "limits"]
                .iter()
                .all(|f| c.pointer(&format!("/resources/{f}")).and_then(Value::as_object).is_none_or(|m| m.is_empty()))
        })
    })
}

/// The pod-level resource names the pod evaluator understands.
fn is_pod_resource(name: &str) -> bool {
    matches!(
        name,
        "pods"
            | "count/pods"
            | "cpu"
            | "memory"
            | "ephemeral-storage"
            | "requests.cpu"
            | "requests.memory"
            | "requests.ephemeral-storage"
            | "limits.cpu"
            | "limits.memory"
            | "limits.ephemeral-storage"
    ) || name.starts_with("requests.hugepages-")
}

/// The name a legacy quota counts a core kind under (`services`, `secrets`, ...).
fn legacy_count(group: &str, plural: &str) -> Option<&'static str> {
    if !group.is_empty() {
        return None;
    }
    Some(match plural {
        "services" => "services",
        "configmaps" => "configmaps",
        "secrets" => "secrets",
        "persistentvolumeclaims" => "persistentvolumeclaims",
        "replicationcontrollers" => "replicationcontrollers",
        "resourcequotas" => "resourcequotas",
        _ => return None,
    })
}

/// The `count/<resource>[.<group>]` name of a kind.
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// Whether the evaluator of `group`/`plural` reports `name` (kube's `MatchingResources`).
pub fn covers(group: &str, plural: &str, name: &str) -> bool {
    if name == count_name(group, plural) || legacy_count(group, plural) == Some(name) {
        return true;
    }
    match (group, plural) {
        ("", "pods") => is_pod_resource(name),
        ("", "services") => matches!(name, "services.nodeports" | "services.loadbalancers"),
        ("", "persistentvolumeclaims") => {
            name == "requests.storage"
                || name.ends_with(".storageclass.storage.k8s.io/requests.storage")
                || name.ends_with(".storageclass.storage.k8s.io/persistentvolumeclaims")
        }
        _ => false,
    }
}

/// What one object of `group`/`plural` costs.
pub fn object_usage(group: &str, plural: &str, obj: &Value) -> Usage {
    if group.is_empty() && plural == "pods" {
        return pod_usage(obj);
    }
    let mut u = Usage::new();
    u.insert(count_name(group, plural), 1000);
    if let Some(legacy) = legacy_count(group, plural) {
        u.insert(legacy.into(), 1000);
    }
    match (group, plural) {
        ("", "services") => {
            let ports = obj.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
            let ports = i128::try_from(ports).unwrap_or(i128::MAX).saturating_mul(1000);
            match object::str_at(obj, &["spec", "type"]) {
                Some("NodePort") => {
                    u.insert("services.nodeports".into(), ports);
                }
                Some("LoadBalancer") => {
                    u.insert("services.loadbalancers".into(), 1000);
                    if obj.pointer("/spec/allocateLoadBalancerNodePorts").and_then(Value::as_bool) != Some(false) {
                        u.insert("services.nodeports".into(), ports);
                    }
                }
                _ => {}
            }
        }
        ("", "persistentvolumeclaims") => {
            let storage = obj.pointer("/spec/resources/requests/storage").and_then(milli);
            let class = object::str_at(obj, &["spec", "storageClassName"]).filter(|c| !c.is_empty());
            if let Some(storage) = storage {
                u.insert("requests.storage".into(), storage);
                if let Some(class) = class {
                    u.insert(format!("{class}.storageclass.storage.k8s.io/requests.storage"), storage);
                }
            }
            if let Some(class) = class {
                u.insert(format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"), 1000);
            }
        }
        _ => {}
    }
    u
}

/// One scope selector requirement: the scope, its operator and values.
fn scope_matches(scope: &str, operator: &str, values: &[&str], pod: &Value) -> bool {
    let priority = object::str_at(pod, &["spec", "priorityClassName"]).unwrap_or("");
    match scope {
        "Terminating" => pod.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64).is_some_and(|s| s >= 0),
        "NotTerminating" => pod.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64).is_none_or(|s| s < 0),
        "BestEffort" => pod_is_best_effort(pod),
        "NotBestEffort" => !pod_is_best_effort(pod),
        "PriorityClass" => match operator {
            "In" => values.contains(&priority),
            "NotIn" => !values.contains(&priority),
            "Exists" => !priority.is_empty(),
            "DoesNotExist" => priority.is_empty(),
            _ => false,
        },
        _ => false,
    }
}

/// Whether `quota`'s scopes (and `scopeSelector`) select the object; only pods can be in a scope,
/// and a quota without scopes selects every object.
pub fn quota_selects(quota: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    let scopes: Vec<&str> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let exprs = quota.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array);
    if scopes.is_empty() && exprs.is_none_or(|e| e.is_empty()) {
        return true;
    }
    if !(group.is_empty() && plural == "pods") {
        return false;
    }
    scopes.iter().all(|s| scope_matches(s, "Exists", &[], obj))
        && exprs.into_iter().flatten().all(|e| {
            let scope = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
            let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> =
                e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            scope_matches(scope, op, &values, obj)
        })
}

/// The resources kube insists every container names when a quota limits them.
const MUST_SPECIFY: [&str; 6] = ["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];

/// kube's pod `Constraints`: a quota on cpu or memory needs every container to request (or
/// limit) it. `Err("must specify limits.cpu for: c; ...")` names what is missing.
pub fn pod_constraints(pod: &Value, hard: &[String]) -> Result<(), String> {
    let required: Vec<&str> = MUST_SPECIFY.into_iter().filter(|r| hard.iter().any(|h| h == r)).collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for list in ["containers", "initContainers"] {
        for c in pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten() {
            let has = container_usage(c);
            let name = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            for r in &required {
                if !has.contains_key(*r) {
                    missing.entry(r).or_default().push(name.clone());
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(r, mut names)| {
            names.sort();
            names.dedup();
            format!("{r} for: {}", names.join(","))
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    #[test]
    fn pods_count_their_requests_and_limits() {
        let p = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
        ]));
        let u = pod_usage(&p);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["count/pods"], 1000);
        assert_eq!(u["requests.cpu"], 500);
        assert_eq!(u["cpu"], 500);
        assert_eq!(format("requests.memory", u["requests.memory"]), "128Mi");
        assert_eq!(format("limits.cpu", u["limits.cpu"]), "1");
        assert!(!u.contains_key("limits.memory"));
        let mut done = p.clone();
        done["status"] = json!({"phase": "Succeeded"});
        assert!(pod_usage(&done).is_empty());
    }

    #[test]
    fn init_containers_raise_the_sum() {
        let mut p = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]));
        p["spec"]["initContainers"] = json!([{"name": "i", "resources": {"requests": {"cpu": "2"}}}]);
        assert_eq!(pod_usage(&p)["requests.cpu"], 2000);
    }

    #[test]
    fn other_kinds_count_by_name() {
        let cm = json!({"metadata": {"name": "c"}});
        let u = object_usage("", "configmaps", &cm);
        assert_eq!(u.keys().collect::<Vec<_>>(), ["configmaps", "count/configmaps"]);
        let d = object_usage("apps", "deployments", &cm);
        assert_eq!(d.keys().collect::<Vec<_>>(), ["count/deployments.apps"]);
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}});
        assert_eq!(object_usage("", "services", &svc)["services.nodeports"], 2000);
        let pvc = json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}});
        let u = object_usage("", "persistentvolumeclaims", &pvc);
        assert_eq!(format("requests.storage", u["requests.storage"]), "1Gi");
        assert_eq!(u["fast.storageclass.storage.k8s.io/persistentvolumeclaims"], 1000);
        assert!(covers("", "pods", "limits.memory"));
        assert!(!covers("", "pods", "requests.storage"));
        assert!(covers("", "persistentvolumeclaims", "requests.storage"));
        assert!(covers("apps", "deployments", "count/deployments.apps"));
    }

    #[test]
    fn formats_like_kubernetes() {
        assert_eq!(format("cpu", 500), "500m");
        assert_eq!(format("cpu", 2000), "2");
        assert_eq!(format("memory", 1000 * (1 << 30)), "1Gi");
        assert_eq!(format("memory", 1000 * 500_000_000), "500M");
        assert_eq!(format("pods", 0), "0");
        assert_eq!(format("pods", 3000), "3");
        let u: Usage = [("pods".to_string(), 1000), ("count/configmaps".to_string(), 2000)].into();
        assert_eq!(pretty(&u), "count/configmaps=2,pods=1");
        let big = add(&[("x".to_string(), i128::MAX)].into(), &[("x".to_string(), 5)].into());
        assert_eq!(big["x"], i128::MAX);
    }

    #[test]
    fn scopes_select_pods() {
        let best = pod(json!([{"name": "a"}]));
        let mut burst = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
        burst["spec"]["activeDeadlineSeconds"] = json!(10);
        burst["spec"]["priorityClassName"] = json!("high");
        let q = |spec: Value| json!({"spec": spec});
        let be = q(json!({"scopes": ["BestEffort"]}));
        assert!(quota_selects(&be, "", "pods", &best));
        assert!(!quota_selects(&be, "", "pods", &burst));
        assert!(!quota_selects(&be, "", "services", &best));
        let term = q(json!({"scopes": ["Terminating", "NotBestEffort"]}));
        assert!(quota_selects(&term, "", "pods", &burst));
        assert!(!quota_selects(&term, "", "pods", &best));
        let prio = q(json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}));
        assert!(quota_selects(&prio, "", "pods", &burst));
        assert!(!quota_selects(&prio, "", "pods", &best));
        assert!(quota_selects(&q(json!({"hard": {"pods": "1"}})), "", "secrets", &best));
    }

    #[test]
    fn cpu_and_memory_quotas_need_every_container_to_say() {
        let p = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "1"}}},
            {"name": "b"},
        ]));
        let hard = vec!["pods".to_string(), "limits.cpu".to_string(), "requests.cpu".to_string()];
        assert_eq!(
            pod_constraints(&p, &hard).expect_err("refused"),
            "must specify limits.cpu for: a,b; requests.cpu for: b"
        );
        assert!(pod_constraints(&p, &["pods".to_string()]).is_ok());
    }
}
