//! The Priority admission plugin: a new pod's `spec.priorityClassName` resolved to its
//! `spec.priority` and `spec.preemptionPolicy`, with kube-apiserver's refusals (an unknown class,
//! a priority that contradicts the class). Pods naming no class are left as they are: the
//! scheduler gives them the global default class's value (or 0) when it orders and preempts.
//! The two system classes kube has from its first start are made by the server's bootstrap.

use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::object;
use super::registry::Registry;

/// kube's built-in classes: name, value, description.
pub const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// What admission writes into the pod, from its class (`value`, `preemptionPolicy`).
pub fn resolve(pod: &mut Value, class: &Value) -> ApiResult<()> {
    let value = class.get("value").and_then(Value::as_i64).and_then(|v| i32::try_from(v).ok()).unwrap_or(0);
    let name = object::name(pod).to_string();
    let spec = pod
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::BadRequest("a pod needs a spec".into()))?;
    if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
        if given != i64::from(value) {
            return Err(ApiError::Forbidden(format!(
                "pods \"{name}\" is forbidden: the integer value of priority ({given}) must not be provided in pod spec; \
                 priority admission controller computed {value} from the given PriorityClass name"
            )));
        }
    }
    spec.insert("priority".into(), json!(value));
    let policy = class.get("preemptionPolicy").and_then(Value::as_str).unwrap_or("PreemptLowerPriority");
    spec.entry("preemptionPolicy").or_insert_with(|| json!(policy));
    Ok(())
}

impl Registry {
    /// Resolves the pod's PriorityClass (see the module documentation).
    pub(super) async fn admit_priority(&self, pod: &mut Value) -> ApiResult<()> {
        let Some(class_name) = object::str_at(pod, &["spec", "priorityClassName"]).filter(|c| !c.is_empty()) else {
            return Ok(());
        };
        let class_name = class_name.to_string();
        let ri = self.resource("scheduling.k8s.io", "PriorityClass")?;
        let class = match self.get(ri, None, &class_name).await {
            Ok(class) => class,
            Err(ApiError::NotFound { .. }) => {
                return Err(ApiError::Forbidden(format!(
                    "pods \"{}\" is forbidden: no PriorityClass with name {class_name} was found",
                    object::name(pod)
                )))
            }
            Err(e) => return Err(e),
        };
        resolve(pod, &class)
    }

    /// Creates kube's system PriorityClasses when missing.
    pub async fn ensure_system_priority_classes(&self) -> ApiResult<()> {
        let ri = self.resource("scheduling.k8s.io", "PriorityClass")?;
        for (name, value, description) in SYSTEM_CLASSES {
            let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                               "metadata": {"name": name}, "value": value, "description": description,
                               "preemptionPolicy": "PreemptLowerPriority"});
            match self.create(ri, None, class, &Default::default()).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn the_class_gives_priority_and_policy() {
        let mut p = pod(json!({"priorityClassName": "high"}));
        resolve(&mut p, &json!({"value": 1000, "preemptionPolicy": "Never"})).expect("admitted");
        assert_eq!(p["spec"]["priority"], 1000);
        assert_eq!(p["spec"]["preemptionPolicy"], "Never");
        let mut p = pod(json!({"priorityClassName": "high"}));
        resolve(&mut p, &json!({"value": 5})).expect("admitted");
        assert_eq!(p["spec"]["preemptionPolicy"], "PreemptLowerPriority");
    }

    #[test]
    fn a_contradicting_priority_is_forbidden_and_a_matching_one_kept() {
        let mut p = pod(json!({"priorityClassName": "high", "priority": 7}));
        let err = resolve(&mut p, &json!({"value": 1000})).expect_err("forbidden");
        assert!(err.to_string().contains("must not be provided in pod spec"), "{err}");
        let mut p = pod(json!({"priorityClassName": "high", "priority": 1000}));
        resolve(&mut p, &json!({"value": 1000})).expect("admitted");
    }

    #[test]
    fn a_class_value_out_of_range_counts_as_zero() {
        let mut p = pod(json!({"priorityClassName": "huge"}));
        resolve(&mut p, &json!({"value": i64::MAX})).expect("admitted");
        assert_eq!(p["spec"]["priority"], 0);
    }
}
