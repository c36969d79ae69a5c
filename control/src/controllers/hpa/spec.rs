//! What the API server does to an autoscaling/v2 HorizontalPodAutoscaler on write (pure), as
//! kube-apiserver's defaulting and validation: `minReplicas` 1, the 80% CPU metric when there
//! is none, the `behavior` rules' unset fields from kube's defaults; the bounds and targets
//! checked with kube's messages.

use serde_json::{json, Map, Value};

/// `(field path, message)` of one validation error.
pub type Cause = (String, String);

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

/// Fills in kube's defaults.
pub fn default(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    set_default(spec, "minReplicas", json!(1));
    if spec.get("metrics").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) else { return };
    let up = json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]});
    let down = json!({"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]});
    for (key, defaults) in [("scaleUp", up), ("scaleDown", down)] {
        let rules = behavior.entry(key).or_insert_with(|| json!({}));
        if rules.is_null() {
            *rules = json!({});
        }
        let (Some(rules), Some(defaults)) = (rules.as_object_mut(), defaults.as_object()) else { continue };
        for (field, value) in defaults {
            set_default(rules, field, value.clone());
        }
    }
}

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// kube's checks of the spec.
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(spec) = obj.get("spec") else {
        return vec![("spec".into(), "Required value".into())];
    };
    let mut push = |path: &str, message: String| causes.push((path.to_string(), message));
    let min = int(spec, "minReplicas");
    if let Some(m) = min.filter(|m| *m < 1) {
        push("spec.minReplicas", format!("Invalid value: {m}: must be greater than or equal to 1"));
    }
    match int(spec, "maxReplicas") {
        None => push("spec.maxReplicas", "Required value".into()),
        Some(m) if m < 1 => push("spec.maxReplicas", format!("Invalid value: {m}: must be greater than or equal to 1")),
        Some(m) if min.is_some_and(|min| m < min) => {
            push("spec.maxReplicas", format!("Invalid value: {m}: must be greater than or equal to `minReplicas`"))
        }
        Some(_) => {}
    }
    let target = spec.get("scaleTargetRef").unwrap_or(&Value::Null);
    for field in ["kind", "name"] {
        if target.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
            push(&format!("spec.scaleTargetRef.{field}"), "Required value".into());
        }
    }
    let metrics = spec.get("metrics").and_then(Value::as_array).cloned().unwrap_or_default();
    for (i, m) in metrics.iter().enumerate() {
        let source = match m.get("type").and_then(Value::as_str) {
            Some("Resource") => m.get("resource"),
            Some("ContainerResource") => m.get("containerResource"),
            _ => None,
        };
        let Some(target) = source.and_then(|s| s.get("target")) else { continue };
        let path = |field: &str| {
            let kind = if m.get("type").and_then(Value::as_str) == Some("Resource") {
                "resource"
            } else {
                "containerResource"
            };
            format!("spec.metrics[{i}].{kind}.target.{field}")
        };
        if let Some(u) = int(target, "averageUtilization").filter(|u| *u <= 0) {
            push(&path("averageUtilization"), format!("Invalid value: {u}: must be greater than 0"));
        }
        let value = target.get("averageValue").and_then(Value::as_str);
        if value.is_some_and(|v| crate::scheduler::quantity::parse_milli(v).is_none_or(|m| m <= 0)) {
            push(&path("averageValue"), "Invalid value: must be positive".into());
        }
    }
    for direction in ["scaleUp", "scaleDown"] {
        let Some(rules) = spec.pointer(&format!("/behavior/{direction}")).filter(|r| r.is_object()) else { continue };
        let at = |field: &str| format!("spec.behavior.{direction}.{field}");
        if let Some(w) = int(rules, "stabilizationWindowSeconds") {
            if w < 0 {
                push(
                    &at("stabilizationWindowSeconds"),
                    format!("Invalid value: {w}: must be greater than or equal to zero"),
                );
            } else if w > 3600 {
                push(
                    &at("stabilizationWindowSeconds"),
                    format!("Invalid value: {w}: must be less than or equal to 3600"),
                );
            }
        }
        if let Some(p) =
            rules.get("selectPolicy").and_then(Value::as_str).filter(|p| !["Max", "Min", "Disabled"].contains(p))
        {
            push(
                &at("selectPolicy"),
                format!("Unsupported value: {p:?}: supported values: \"Disabled\", \"Max\", \"Min\""),
            );
        }
        let policies = rules.get("policies").and_then(Value::as_array).cloned().unwrap_or_default();
        for (j, p) in policies.iter().enumerate() {
            let at = |field: &str| format!("spec.behavior.{direction}.policies[{j}].{field}");
            match p.get("type").and_then(Value::as_str) {
                Some("Pods" | "Percent") => {}
                other => push(
                    &at("type"),
                    format!("Unsupported value: {:?}: supported values: \"Percent\", \"Pods\"", other.unwrap_or("")),
                ),
            }
            match int(p, "periodSeconds") {
                Some(s) if s <= 0 => {
                    push(&at("periodSeconds"), format!("Invalid value: {s}: must be greater than zero"))
                }
                Some(s) if s > 1800 => {
                    push(&at("periodSeconds"), format!("Invalid value: {s}: must be less than or equal to 1800"))
                }
                _ => {}
            }
            if let Some(v) = int(p, "value").filter(|v| *v <= 0) {
                push(&at("value"), format!("Invalid value: {v}: must be greater than zero"));
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kubes() {
        let mut hpa = json!({"spec": {"maxReplicas": 3, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}}}});
        default(&mut hpa);
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
        let down = &hpa["spec"]["behavior"]["scaleDown"];
        assert_eq!(
            (down["stabilizationWindowSeconds"].clone(), down["selectPolicy"].clone()),
            (json!(5), json!("Max"))
        );
        assert_eq!(hpa["spec"]["behavior"]["scaleUp"]["policies"].as_array().map(Vec::len), Some(2));
        // Without behavior none is added.
        let mut plain = json!({"spec": {"maxReplicas": 3}});
        default(&mut plain);
        assert!(plain["spec"].get("behavior").is_none());
    }

    #[test]
    fn validation_speaks_kubes_messages() {
        let ok = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 3}});
        assert_eq!(validate(&ok), Vec::<Cause>::new());
        let bad = json!({"spec": {
            "scaleTargetRef": {"kind": "Deployment"}, "minReplicas": 5, "maxReplicas": 3,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 4000,
                                       "policies": [{"type": "Pods", "value": 0, "periodSeconds": 2000}]}}}});
        let paths: Vec<String> = validate(&bad).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "spec.maxReplicas",
                "spec.scaleTargetRef.name",
                "spec.metrics[0].resource.target.averageUtilization",
                "spec.behavior.scaleDown.stabilizationWindowSeconds",
                "spec.behavior.scaleDown.policies[0].periodSeconds",
                "spec.behavior.scaleDown.policies[0].value",
            ]
        );
        assert!(validate(&bad)[0].1.contains("must be greater than or equal to `minReplicas`"));
    }
}
