//! autoscaling/v1 <-> autoscaling/v2 HorizontalPodAutoscalers, as kube-apiserver converts them:
//! v1's `targetCPUUtilizationPercentage` is a `Resource` metric on `cpu` with an `Utilization`
//! target (and `currentCPUUtilizationPercentage` its current value); what v1 cannot say (the other
//! metrics and current metrics, `behavior`, `conditions`) rides in `autoscaling.alpha.kubernetes.io/*`
//! annotations of the v1 object, so a read-modify-write through v1 keeps it. Unlike Kubernetes,
//! the annotations hold those fields in their v2 form (Kubernetes writes v2beta1-shaped metrics).

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::{json, Map, Value};

use super::Conversion;

/// The annotation with the spec metrics v1 cannot express.
pub const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// The annotation with the current metrics v1 cannot express.
pub const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
/// The annotation with `spec.behavior`.
pub const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
/// The annotation with `status.conditions`.
pub const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";

/// autoscaling/v1 served from autoscaling/v2 storage.
pub static V1: Conversion = Conversion {
    storage_version: "v2",
    storage_normalize: crate::api::resources::normalize::<HorizontalPodAutoscaler>,
    to_storage: v1_to_v2,
    from_storage: v2_to_v1,
};

/// Whether a v2 metric (spec or current) is the CPU utilization v1 has a field for; its
/// percentage.
fn cpu_utilization(metric: &Value, value_key: &str) -> Option<Value> {
    if metric.get("type").and_then(Value::as_str) != Some("Resource") {
        return None;
    }
    let resource = metric.get("resource")?;
    if resource.get("name").and_then(Value::as_str) != Some("cpu") {
        return None;
    }
    let target = resource.get(value_key)?;
    if value_key == "target" && target.get("type").and_then(Value::as_str) != Some("Utilization") {
        return None;
    }
    target.get("averageUtilization").filter(|v| !v.is_null()).cloned()
}

/// Splits a list of v2 metrics into the CPU utilization and the others.
fn split_metrics(metrics: Option<&Value>, value_key: &str) -> (Option<Value>, Vec<Value>) {
    let mut cpu = None;
    let mut others = Vec::new();
    for m in metrics.and_then(Value::as_array).into_iter().flatten() {
        match cpu_utilization(m, value_key) {
            Some(percent) => cpu = Some(percent),
            None => others.push(m.clone()),
        }
    }
    (cpu, others)
}

fn copy(from: &Value, to: &mut Map<String, Value>, keys: &[&str]) {
    for key in keys {
        if let Some(v) = from.get(*key).filter(|v| !v.is_null()) {
            to.insert((*key).into(), v.clone());
        }
    }
}

fn annotations_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let meta = obj.as_object_mut()?.entry("metadata").or_insert_with(|| json!({}));
    let annotations = meta.as_object_mut()?.entry("annotations").or_insert_with(|| json!({}));
    if annotations.is_null() {
        *annotations = json!({});
    }
    annotations.as_object_mut()
}

/// Takes an annotation's JSON out of `obj` (an annotation that is not JSON is dropped, as
/// Kubernetes ignores it).
fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let annotations = obj.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut)?;
    let raw = annotations.remove(key)?;
    raw.as_str().and_then(|s| serde_json::from_str(s).ok())
}

fn drop_empty_annotations(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if meta.get("annotations").and_then(Value::as_object).is_some_and(Map::is_empty) {
            meta.remove("annotations");
        }
    }
}

/// A stored (v2) object as autoscaling/v1 shows it.
pub fn v2_to_v1(mut obj: Value) -> Value {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let status = obj.get("status").cloned();
    let mut extra: Vec<(&str, Value)> = Vec::new();

    let mut v1_spec = Map::new();
    copy(&spec, &mut v1_spec, &["scaleTargetRef", "minReplicas", "maxReplicas"]);
    let (cpu, others) = split_metrics(spec.get("metrics"), "target");
    if let Some(cpu) = cpu {
        v1_spec.insert("targetCPUUtilizationPercentage".into(), cpu);
    }
    if !others.is_empty() {
        extra.push((METRICS, Value::Array(others)));
    }
    if let Some(behavior) = spec.get("behavior").filter(|b| !b.is_null()) {
        extra.push((BEHAVIOR, behavior.clone()));
    }

    let v1_status = status.filter(|s| !s.is_null()).map(|status| {
        let mut out = Map::new();
        copy(&status, &mut out, &["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"]);
        // Both are required in v1.
        for key in ["currentReplicas", "desiredReplicas"] {
            out.entry(key).or_insert(json!(0));
        }
        let (cpu, others) = split_metrics(status.get("currentMetrics"), "current");
        if let Some(cpu) = cpu {
            out.insert("currentCPUUtilizationPercentage".into(), cpu);
        }
        if !others.is_empty() {
            extra.push((CURRENT_METRICS, Value::Array(others)));
        }
        if let Some(conditions) = status.get("conditions").filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
            extra.push((CONDITIONS, conditions.clone()));
        }
        Value::Object(out)
    });

    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), json!("autoscaling/v1"));
        map.insert("spec".into(), Value::Object(v1_spec));
        match v1_status {
            Some(s) => map.insert("status".into(), s),
            None => map.remove("status"),
        };
    }
    if !extra.is_empty() {
        if let Some(annotations) = annotations_mut(&mut obj) {
            for (key, value) in extra {
                annotations.insert(key.into(), json!(value.to_string()));
            }
        }
    }
    obj
}

/// An autoscaling/v1 object in its stored (v2) form.
pub fn v1_to_v2(mut obj: Value) -> Value {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let status = obj.get("status").cloned().filter(|s| !s.is_null());
    let other_metrics = take_annotation(&mut obj, METRICS);
    let behavior = take_annotation(&mut obj, BEHAVIOR);
    let current_metrics = take_annotation(&mut obj, CURRENT_METRICS);
    let conditions = take_annotation(&mut obj, CONDITIONS);
    drop_empty_annotations(&mut obj);

    let mut v2_spec = Map::new();
    copy(&spec, &mut v2_spec, &["scaleTargetRef", "minReplicas", "maxReplicas"]);
    let mut metrics = Vec::new();
    if let Some(cpu) = spec.get("targetCPUUtilizationPercentage").filter(|v| !v.is_null()) {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": cpu}}}));
    }
    metrics.extend(other_metrics.and_then(|m| m.as_array().cloned()).unwrap_or_default());
    if !metrics.is_empty() {
        v2_spec.insert("metrics".into(), Value::Array(metrics));
    }
    if let Some(behavior) = behavior.filter(Value::is_object) {
        v2_spec.insert("behavior".into(), behavior);
    }

    let v2_status = status.map(|status| {
        let mut out = Map::new();
        copy(&status, &mut out, &["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"]);
        let mut current = Vec::new();
        if let Some(cpu) = status.get("currentCPUUtilizationPercentage").filter(|v| !v.is_null()) {
            current
                .push(json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}));
        }
        current.extend(current_metrics.and_then(|m| m.as_array().cloned()).unwrap_or_default());
        if !current.is_empty() {
            out.insert("currentMetrics".into(), Value::Array(current));
        }
        if let Some(conditions) = conditions.filter(Value::is_array) {
            out.insert("conditions".into(), conditions);
        }
        Value::Object(out)
    });

    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), json!("autoscaling/v2"));
        map.insert("spec".into(), Value::Object(v2_spec));
        match v2_status {
            Some(s) => map.insert("status".into(), s),
            None => map.remove("status"),
        };
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "shop", "annotations": {"team": "a"}},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 3,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}
            },
            "status": {
                "currentReplicas": 2, "desiredReplicas": 2, "observedGeneration": 1,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 30, "averageValue": "30m"}}}],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}]
            }
        })
    }

    #[test]
    fn cpu_utilization_is_v1s_field_and_the_rest_rides_in_annotations() {
        let v1 = v2_to_v1(v2());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["spec"]["maxReplicas"], 3);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 30);
        let annotations = &v1["metadata"]["annotations"];
        assert_eq!(annotations["team"], "a");
        let others: Value = serde_json::from_str(annotations[METRICS].as_str().expect("metrics")).expect("json");
        assert_eq!(others[0]["resource"]["name"], "memory");
        assert!(annotations[CONDITIONS].as_str().is_some_and(|c| c.contains("AbleToScale")));
        // The v1 form is one the v1 type accepts, with nothing unknown.
        let (_, unknown) =
            crate::api::resources::normalize::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>(v1.clone())
                .expect("decodes as v1");
        assert!(unknown.is_empty(), "{unknown:?}");
    }

    #[test]
    fn a_round_trip_through_v1_keeps_what_v1_cannot_say() {
        let back = v1_to_v2(v2_to_v1(v2()));
        let original = v2();
        assert_eq!(back["spec"]["metrics"], original["spec"]["metrics"]);
        assert_eq!(back["spec"]["behavior"], original["spec"]["behavior"]);
        assert_eq!(back["status"]["conditions"], original["status"]["conditions"]);
        assert_eq!(back["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"], 30);
        assert_eq!(back["metadata"]["annotations"], json!({"team": "a"}));
    }

    #[test]
    fn kubectl_autoscale_v1_object_becomes_a_cpu_metric() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}});
        let v2 = v1_to_v2(v1);
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}])
        );
        assert!(v2.get("status").is_none());
        assert!(v2["metadata"].get("annotations").is_none());
    }
}
