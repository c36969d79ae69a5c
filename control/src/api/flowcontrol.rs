//! `flowcontrol.apiserver.k8s.io/v1` FlowSchemas and PriorityLevelConfigurations: stored with
//! their status, defaulted and checked as kube-apiserver does, and the mandatory configuration
//! (`exempt` and `catch-all` of each) made at start when missing. skiff does not enforce them:
//! its own bound on requests in flight ([`super::http::inflight`]) stands in for API Priority
//! and Fairness.

use serde_json::{json, Value};

use super::admission::Cause;
use super::error::{ApiError, ApiResult};
use super::registry::{Registry, WriteOptions};
use super::resources::ResourceInfo;

/// The group of both kinds.
pub const GROUP: &str = "flowcontrol.apiserver.k8s.io";
/// Marks an object the server keeps as kube's bootstrap configuration.
const AUTOUPDATE: &str = "apf.kubernetes.io/autoupdate-spec";

/// Whether `ri` is one of the two flow-control kinds.
pub fn is_flowcontrol(ri: &ResourceInfo) -> bool {
    ri.group == GROUP && ri.custom.is_none()
}

fn everything() -> Value {
    json!({
        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": true, "namespaces": ["*"]}],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
    })
}

fn group_subject(name: &str) -> Value {
    json!({"kind": "Group", "group": {"name": name}})
}

/// kube's mandatory PriorityLevelConfigurations and FlowSchemas.
fn mandatory() -> (Vec<Value>, Vec<Value>) {
    let meta = |name: &str| json!({"name": name, "annotations": {AUTOUPDATE: "true"}});
    let levels = vec![
        json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration", "metadata": meta("exempt"),
               "spec": {"type": "Exempt", "exempt": {"nominalConcurrencyShares": 0, "lendablePercent": 0}}}),
        json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration", "metadata": meta("catch-all"),
               "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 5, "lendablePercent": 0,
                        "limitResponse": {"type": "Reject"}}}}),
    ];
    let mut exempt_rule = everything();
    exempt_rule["subjects"] = json!([group_subject("system:masters")]);
    let mut catch_all_rule = everything();
    catch_all_rule["subjects"] =
        json!([group_subject("system:unauthenticated"), group_subject("system:authenticated")]);
    let schemas = vec![
        json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": meta("exempt"),
               "spec": {"priorityLevelConfiguration": {"name": "exempt"}, "matchingPrecedence": 1, "rules": [exempt_rule]}}),
        json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": meta("catch-all"),
               "spec": {"priorityLevelConfiguration": {"name": "catch-all"}, "matchingPrecedence": 10000,
                        "distinguisherMethod": {"type": "ByUser"}, "rules": [catch_all_rule]}}),
    ];
    (levels, schemas)
}

/// Defaults, as kube's `SetDefaults_*` of flowcontrol/v1.
pub fn default(kind: &str, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    match kind {
        "FlowSchema" => {
            spec.entry("matchingPrecedence").or_insert(json!(1000));
        }
        "PriorityLevelConfiguration" => {
            if let Some(limited) = spec.get_mut("limited").and_then(Value::as_object_mut) {
                limited.entry("nominalConcurrencyShares").or_insert(json!(30));
                limited.entry("lendablePercent").or_insert(json!(0));
                let response = limited.entry("limitResponse").or_insert_with(|| json!({"type": "Reject"}));
                if response.get("type").and_then(Value::as_str) == Some("Queue") {
                    if let Some(map) = response.as_object_mut() {
                        let queuing = map.entry("queuing").or_insert_with(|| json!({}));
                        if let Some(q) = queuing.as_object_mut() {
                            q.entry("queues").or_insert(json!(64));
                            q.entry("handSize").or_insert(json!(8));
                            q.entry("queueLengthLimit").or_insert(json!(50));
                        }
                    }
                }
            }
            if let Some(exempt) = spec.get_mut("exempt").and_then(Value::as_object_mut) {
                exempt.entry("nominalConcurrencyShares").or_insert(json!(0));
                exempt.entry("lendablePercent").or_insert(json!(0));
            }
        }
        _ => {}
    }
}

/// kube's checks of the fields a client is most likely to get wrong.
pub fn validate(kind: &str, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match kind {
        "FlowSchema" => {
            if spec.pointer("/priorityLevelConfiguration/name").and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push((
                    "spec.priorityLevelConfiguration.name".into(),
                    "Required value: must reference a priority level".into(),
                ));
            }
            let precedence = spec.get("matchingPrecedence").and_then(Value::as_i64).unwrap_or(1000);
            if !(1..=10000).contains(&precedence) {
                causes.push((
                    "spec.matchingPrecedence".into(),
                    format!("Invalid value: {precedence}: must be between 1 and 10000 inclusively"),
                ));
            }
        }
        "PriorityLevelConfiguration" => match spec.get("type").and_then(Value::as_str) {
            Some("Limited") if spec.get("limited").is_none_or(Value::is_null) => {
                causes.push(("spec.limited".into(), "Required value: must not be empty when type is Limited".into()))
            }
            Some("Limited" | "Exempt") => {}
            Some(other) => causes.push((
                "spec.type".into(),
                format!("Unsupported value: \"{other}\": supported values: \"Exempt\", \"Limited\""),
            )),
            None => causes.push(("spec.type".into(), "Required value: must not be empty".into())),
        },
        _ => {}
    }
    causes
}

impl Registry {
    /// Creates kube's mandatory flow-control objects when missing; a FlowSchema made here gets
    /// its `Dangling=False` condition.
    pub async fn ensure_flowcontrol_bootstrap(&self) -> ApiResult<()> {
        let (levels, schemas) = mandatory();
        let level_ri = self.resource(GROUP, "PriorityLevelConfiguration")?;
        for level in levels {
            match self.create(level_ri, None, level, &WriteOptions::default()).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let schema_ri = self.resource(GROUP, "FlowSchema")?;
        for schema in schemas {
            let name = super::object::name(&schema).to_string();
            match self.create(schema_ri, None, schema, &WriteOptions::default()).await {
                Ok(_) => {}
                Err(ApiError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
            let condition = json!({"type": "Dangling", "status": "False", "lastTransitionTime": super::object::now_rfc3339(),
                "reason": "Found", "message": format!(
                    "This FlowSchema references the PriorityLevelConfiguration object named \"{name}\" and it exists")});
            self.update_with(schema_ri, None, &name, Some("status"), &WriteOptions::default(), |current| {
                let mut next = current.clone();
                next["status"] = json!({"conditions": [condition.clone()]});
                Ok(next)
            })
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mandatory_objects_pass_their_own_checks() {
        let (levels, schemas) = mandatory();
        for obj in levels.iter().chain(&schemas) {
            let kind = obj["kind"].as_str().unwrap_or("");
            let mut defaulted = obj.clone();
            default(kind, &mut defaulted);
            assert!(validate(kind, &defaulted).is_empty(), "{obj}");
        }
        let mut limited = json!({"spec": {"type": "Limited", "limited": {"limitResponse": {"type": "Queue"}}}});
        default("PriorityLevelConfiguration", &mut limited);
        assert_eq!(limited["spec"]["limited"]["nominalConcurrencyShares"], 30);
        assert_eq!(limited["spec"]["limited"]["limitResponse"]["queuing"]["queues"], 64);
        let bad = json!({"spec": {"type": "Sometimes"}});
        assert_eq!(validate("PriorityLevelConfiguration", &bad)[0].0, "spec.type");
        let orphan = json!({"spec": {"matchingPrecedence": 0}});
        assert_eq!(validate("FlowSchema", &orphan).len(), 2);
    }
}
