//! LimitRange admission (kube's `LimitRanger`), as pure functions: the defaults a LimitRange
//! object gets when stored, the default requests and limits it gives a pod's containers
//! (mutating), and the min/max/ratio bounds it holds pods and PersistentVolumeClaims to
//! (validating), with kube-apiserver's messages.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::quota::usage::{milli, Usage};

/// The annotation naming what defaults a pod got.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn items(range: &Value) -> impl Iterator<Item = &Value> {
    range.pointer("/spec/limits").and_then(Value::as_array).into_iter().flatten()
}

fn item_type(item: &Value) -> &str {
    item.get("type").and_then(Value::as_str).unwrap_or("")
}

/// A `ResourceList` of an item, sorted by resource name (kube walks a Go map; skiff is stable).
fn list<'a>(item: &'a Value, field: &str) -> Vec<(&'a String, &'a Value)> {
    let mut v: Vec<_> = item.get(field).and_then(Value::as_object).into_iter().flatten().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// The LimitRange's own defaults (`SetDefaults_LimitRangeItem`): for a Container item, `default`
/// from `max`, then `defaultRequest` from `default`, then from `min`.
pub fn default_object(obj: &mut Value) {
    let Some(limits) = obj.pointer_mut("/spec/limits").and_then(Value::as_array_mut) else { return };
    for item in limits.iter_mut().filter_map(Value::as_object_mut) {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let copy = |item: &mut Map<String, Value>, from: &str, to: &str| {
            let source = item.get(from).and_then(Value::as_object).cloned().unwrap_or_default();
            let target = item.entry(to).or_insert_with(|| json!({}));
            if let Some(target) = target.as_object_mut() {
                for (k, v) in source {
                    target.entry(k).or_insert(v);
                }
            }
        };
        copy(item, "max", "default");
        copy(item, "default", "defaultRequest");
        copy(item, "min", "defaultRequest");
        for field in ["default", "defaultRequest"] {
            if item.get(field).and_then(Value::as_object).is_some_and(Map::is_empty) {
                item.remove(field);
            }
        }
    }
}

/// Gives each container the requests and limits it lacks from the Container items of `ranges`
/// (kube's `mergePodResourceRequirements`), recording them in the `kubernetes.io/limit-ranger`
/// annotation.
pub fn default_pod(ranges: &[Arc<Value>], pod: &mut Value) {
    let mut notes = Vec::new();
    for range in ranges {
        let mut limits = Map::new();
        let mut requests = Map::new();
        for item in items(range).filter(|i| item_type(i) == "Container") {
            for (k, v) in list(item, "default") {
                limits.insert(k.clone(), v.clone());
            }
            for (k, v) in list(item, "defaultRequest") {
                requests.insert(k.clone(), v.clone());
            }
        }
        if limits.is_empty() && requests.is_empty() {
            continue;
        }
        for (field, prefix) in [("containers", "container"), ("initContainers", "init container")] {
            let Some(containers) = pod.pointer_mut(&format!("/spec/{field}")).and_then(Value::as_array_mut) else {
                continue;
            };
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
                let Some(resources) = c.entry("resources").or_insert_with(|| json!({})).as_object_mut() else {
                    continue;
                };
                let mut set = |which: &str, defaults: &Map<String, Value>| {
                    let Some(target) = resources.entry(which).or_insert_with(|| json!({})).as_object_mut() else {
                        return Vec::new();
                    };
                    let mut set: Vec<String> = Vec::new();
                    for (k, v) in defaults {
                        if !target.contains_key(k) {
                            target.insert(k.clone(), v.clone());
                            set.push(k.clone());
                        }
                    }
                    set.sort();
                    set
                };
                let set_requests = set("requests", &requests);
                let set_limits = set("limits", &limits);
                for (which, set) in [("requests", &set_requests), ("limits", &set_limits)] {
                    if set.is_empty() && resources.get(which).and_then(Value::as_object).is_some_and(Map::is_empty) {
                        resources.remove(which);
                    }
                }
                if !set_requests.is_empty() {
                    notes.push(format!("{} request for {prefix} {name}", set_requests.join(", ")));
                }
                if !set_limits.is_empty() {
                    notes.push(format!("{} limit for {prefix} {name}", set_limits.join(", ")));
                }
            }
        }
    }
    if !notes.is_empty() {
        let meta = super::object::meta_mut(pod);
        if let Some(annotations) = meta.entry("annotations").or_insert_with(|| json!({})).as_object_mut() {
            annotations.insert(ANNOTATION.into(), json!(format!("LimitRanger plugin set: {}", notes.join("; "))));
        }
    }
}

/// A request and limit as given (`None` when absent), for messages and comparisons.
struct Observed<'a> {
    request: Option<&'a Value>,
    limit: Option<&'a Value>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn amount(v: Option<&Value>) -> i128 {
    v.and_then(milli).unwrap_or(0)
}

fn min_constraint(kind: &str, resource: &str, enforced: &Value, o: &Observed) -> Option<String> {
    let e = text(enforced);
    let Some(req) = o.request else {
        return Some(format!("minimum {resource} usage per {kind} is {e}.  No request is specified"));
    };
    if amount(Some(req)) < amount(Some(enforced)) {
        return Some(format!("minimum {resource} usage per {kind} is {e}, but request is {}", text(req)));
    }
    if let Some(lim) = o.limit.filter(|l| amount(Some(l)) < amount(Some(enforced))) {
        return Some(format!("minimum {resource} usage per {kind} is {e}, but limit is {}", text(lim)));
    }
    None
}

fn max_constraint(kind: &str, resource: &str, enforced: &Value, o: &Observed) -> Option<String> {
    let e = text(enforced);
    let Some(lim) = o.limit else {
        return Some(format!("maximum {resource} usage per {kind} is {e}.  No limit is specified"));
    };
    if amount(Some(lim)) > amount(Some(enforced)) {
        return Some(format!("maximum {resource} usage per {kind} is {e}, but limit is {}", text(lim)));
    }
    if let Some(req) = o.request.filter(|r| amount(Some(r)) > amount(Some(enforced))) {
        return Some(format!("maximum {resource} usage per {kind} is {e}, but request is {}", text(req)));
    }
    None
}

fn ratio_constraint(kind: &str, resource: &str, enforced: &Value, o: &Observed) -> Option<String> {
    let e = text(enforced);
    let req = amount(o.request);
    let lim = amount(o.limit);
    if o.request.is_none() || req == 0 {
        return Some(format!(
            "{resource} max limit to request ratio per {kind} is {e}, but no request is specified or request is 0"
        ));
    }
    if o.limit.is_none() || lim == 0 {
        return Some(format!(
            "{resource} max limit to request ratio per {kind} is {e}, but no limit is specified or limit is 0"
        ));
    }
    // Compared exactly: lim / req > enforced  <=>  lim * 1000 > enforced_milli * req (all positive).
    let enforced_milli = amount(Some(enforced));
    let over = match (lim.checked_mul(1000), enforced_milli.checked_mul(req)) {
        (Some(l), Some(r)) => l > r,
        _ => (lim as f64) * 1000.0 > (enforced_milli as f64) * (req as f64),
    };
    over.then(|| {
        let ratio = lim as f64 / req as f64;
        format!("{resource} max limit to request ratio per {kind} is {e}, but provided ratio is {ratio:.6}")
    })
}

/// Checks one request/limit pair against an item's min, max and ratio.
fn check_item(
    item: &Value,
    kind: &str,
    requests: &Map<String, Value>,
    limits: &Map<String, Value>,
    errs: &mut Vec<String>,
) {
    let observed = |k: &str| Observed { request: requests.get(k), limit: limits.get(k) };
    for (k, v) in list(item, "min") {
        errs.extend(min_constraint(kind, k, v, &observed(k)));
    }
    for (k, v) in list(item, "max") {
        errs.extend(max_constraint(kind, k, v, &observed(k)));
    }
    for (k, v) in list(item, "maxLimitRequestRatio") {
        errs.extend(ratio_constraint(kind, k, v, &observed(k)));
    }
}

fn resources(c: &Value, which: &str) -> Map<String, Value> {
    c.pointer(&format!("/resources/{which}")).and_then(Value::as_object).cloned().unwrap_or_default()
}

/// A pod's total requests or limits: regular containers summed, init containers as a maximum.
fn pod_total(pod: &Value, which: &str) -> Map<String, Value> {
    let mut sum = Usage::new();
    let containers = |field: &str| pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array).cloned();
    for c in containers("containers").unwrap_or_default() {
        for (k, v) in resources(&c, which) {
            let e = sum.entry(k).or_insert(0);
            *e = e.saturating_add(milli(&v).unwrap_or(0));
        }
    }
    for c in containers("initContainers").unwrap_or_default() {
        for (k, v) in resources(&c, which) {
            let e = sum.entry(k).or_insert(0);
            *e = (*e).max(milli(&v).unwrap_or(0));
        }
    }
    sum.into_iter().map(|(k, v)| (k.clone(), json!(super::quota::usage::format(&k, v)))).collect()
}

/// Kube's aggregate error text: one message alone, several in brackets (duplicates once).
fn aggregate(mut errs: Vec<String>) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    errs.retain(|e| seen.insert(e.clone()));
    match errs.len() {
        0 => Ok(()),
        1 => Err(errs.remove(0)),
        _ => Err(format!("[{}]", errs.join(", "))),
    }
}

/// The bounds of every Container and Pod item of `ranges` on a pod (`PodValidateLimitFunc`).
pub fn validate_pod(ranges: &[Arc<Value>], pod: &Value) -> Result<(), String> {
    let mut errs = Vec::new();
    for range in ranges {
        for item in items(range) {
            match item_type(item) {
                "Container" => {
                    for field in ["containers", "initContainers"] {
                        for c in pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array).into_iter().flatten()
                        {
                            check_item(
                                item,
                                "Container",
                                &resources(c, "requests"),
                                &resources(c, "limits"),
                                &mut errs,
                            );
                        }
                    }
                }
                "Pod" => check_item(item, "Pod", &pod_total(pod, "requests"), &pod_total(pod, "limits"), &mut errs),
                _ => {}
            }
        }
    }
    aggregate(errs)
}

/// The storage bounds of every PersistentVolumeClaim item on a claim's requests.
pub fn validate_pvc(ranges: &[Arc<Value>], pvc: &Value) -> Result<(), String> {
    let kind = "PersistentVolumeClaim";
    let requests = pvc.pointer("/spec/resources/requests").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut errs = Vec::new();
    for range in ranges {
        for item in items(range).filter(|i| item_type(i) == kind) {
            for (k, v) in list(item, "min") {
                errs.extend(min_constraint(kind, k, v, &Observed { request: requests.get(k), limit: None }));
            }
            for (k, v) in list(item, "max") {
                let e = text(v);
                match requests.get(k) {
                    None => errs.push(format!("maximum {k} usage per {kind} is {e}.  No request is specified")),
                    Some(req) if amount(Some(req)) > amount(Some(v)) => {
                        errs.push(format!("maximum {k} usage per {kind} is {e}, but request is {}", text(req)))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    aggregate(errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(limits: Value) -> Arc<Value> {
        let mut obj = json!({"metadata": {"name": "lr"}, "spec": {"limits": limits}});
        default_object(&mut obj);
        Arc::new(obj)
    }

    fn pod(resources: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": resources}]}})
    }

    #[test]
    fn the_object_defaults_default_from_max_and_requests_from_default() {
        let r = range(json!([{"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "1Mi"}}]));
        let item = &r["spec"]["limits"][0];
        assert_eq!(item["default"], json!({"cpu": "1"}));
        assert_eq!(item["defaultRequest"], json!({"cpu": "1", "memory": "1Mi"}));
        let p = range(json!([{"type": "Pod", "max": {"cpu": "1"}}]));
        assert!(p["spec"]["limits"][0].get("default").is_none());
    }

    #[test]
    fn containers_get_defaults_and_the_annotation() {
        let r = range(json!([{"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"},
                                "defaultRequest": {"cpu": "100m"}}]));
        let mut p = pod(json!({"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}}));
        default_pod(&[r], &mut p);
        let res = &p["spec"]["containers"][0]["resources"];
        assert_eq!(res["limits"], json!({"cpu": "500m", "memory": "64Mi"}));
        assert_eq!(res["requests"], json!({"cpu": "100m", "memory": "64Mi"}));
        assert_eq!(
            p["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu request for container c; cpu limit for container c"
        );
        let mut untouched = pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1"}}));
        let r = range(json!([{"type": "Container", "default": {"cpu": "500m"}}]));
        default_pod(&[r], &mut untouched);
        assert!(untouched["metadata"].get("annotations").is_none());
    }

    #[test]
    fn bounds_per_container_with_kube_messages() {
        let r = range(json!([{"type": "Container", "max": {"cpu": "500m"}, "min": {"cpu": "100m"}}]));
        let over = pod(json!({"limits": {"cpu": "1"}, "requests": {"cpu": "200m"}}));
        assert_eq!(
            validate_pod(std::slice::from_ref(&r), &over).expect_err("refused"),
            "maximum cpu usage per Container is 500m, but limit is 1"
        );
        let under = pod(json!({"limits": {"cpu": "50m"}, "requests": {"cpu": "50m"}}));
        assert_eq!(
            validate_pod(std::slice::from_ref(&r), &under).expect_err("refused"),
            "minimum cpu usage per Container is 100m, but request is 50m"
        );
        assert!(validate_pod(
            std::slice::from_ref(&r),
            &pod(json!({"limits": {"cpu": "500m"}, "requests": {"cpu": "0.1"}}))
        )
        .is_ok());
        let both = range(json!([{"type": "Container", "max": {"cpu": "500m", "memory": "1Gi"}}]));
        assert_eq!(
            validate_pod(&[both], &pod(json!({"limits": {"cpu": "1"}}))).expect_err("refused"),
            "[maximum cpu usage per Container is 500m, but limit is 1, maximum memory usage per Container is 1Gi.  No limit is specified]"
        );
    }

    #[test]
    fn ratio_and_pod_sums() {
        let r = range(json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}]));
        let p = pod(json!({"limits": {"cpu": "1"}, "requests": {"cpu": "250m"}}));
        assert_eq!(
            validate_pod(std::slice::from_ref(&r), &p).expect_err("refused"),
            "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"
        );
        let ok = pod(json!({"limits": {"cpu": "1"}, "requests": {"cpu": "500m"}}));
        assert!(validate_pod(&[r], &ok).is_ok());
        let per_pod = range(json!([{"type": "Pod", "max": {"memory": "100Mi"}}]));
        let mut two = pod(json!({"limits": {"memory": "60Mi"}}));
        two["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(json!({"name": "d", "resources": {"limits": {"memory": "60Mi"}}}));
        assert_eq!(
            validate_pod(&[per_pod], &two).expect_err("refused"),
            "maximum memory usage per Pod is 100Mi, but limit is 120Mi"
        );
    }

    #[test]
    fn claims_are_bounded_by_storage() {
        let r = range(json!([{"type": "PersistentVolumeClaim", "max": {"storage": "2Gi"}, "min": {"storage": "1Gi"}}]));
        let claim = |s: &str| json!({"spec": {"resources": {"requests": {"storage": s}}}});
        assert!(validate_pvc(std::slice::from_ref(&r), &claim("1Gi")).is_ok());
        assert_eq!(
            validate_pvc(std::slice::from_ref(&r), &claim("5Gi")).expect_err("refused"),
            "maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"
        );
        assert_eq!(
            validate_pvc(&[r], &claim("500Mi")).expect_err("refused"),
            "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"
        );
    }

    #[test]
    fn hostile_quantities_never_panic() {
        let r = range(json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "99999999999999999999999P"},
                                "max": {"cpu": "1e99999"}}]));
        let p = pod(json!({"limits": {"cpu": "170141183460469231731687303715884105727"}, "requests": {"cpu": "1n"}}));
        let _ = validate_pod(&[r], &p);
    }
}
