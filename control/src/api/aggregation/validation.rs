//! kube-aggregator's checks of an APIService: its name is `<version>.<group>`, the priorities
//! are in range, and a service reference is complete; `insecureSkipTLSVerify` and a `caBundle`
//! exclude each other.

use serde_json::Value;

use crate::api::admission::Cause;
use crate::api::resources::ResourceInfo;

/// Whether `ri` is the APIService resource.
pub fn is_apiservice(ri: &ResourceInfo) -> bool {
    ri.group == super::GROUP && ri.kind == "APIService" && ri.custom.is_none()
}

/// The causes an APIService is refused for.
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let text = |k: &str| spec.get(k).and_then(Value::as_str).unwrap_or("");
    let (group, version) = (text("group"), text("version"));
    let name = crate::api::object::name(obj);
    let expected = if group.is_empty() { format!("{version}.") } else { format!("{version}.{group}") };
    if name != expected {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be `spec.version+\".\"+spec.group`"),
        ));
    }
    if version.is_empty() {
        causes.push(("spec.version".into(), "Required value".into()));
    }
    let int = |k: &str| spec.get(k).and_then(Value::as_i64).unwrap_or(0);
    let group_priority = int("groupPriorityMinimum");
    if !(1..=20000).contains(&group_priority) {
        causes.push((
            "spec.groupPriorityMinimum".into(),
            format!("Invalid value: {group_priority}: must be positive and less than 20000"),
        ));
    }
    let version_priority = int("versionPriority");
    if !(1..=1000).contains(&version_priority) {
        causes.push((
            "spec.versionPriority".into(),
            format!("Invalid value: {version_priority}: must be positive and less than 1000"),
        ));
    }
    let insecure = spec.get("insecureSkipTLSVerify").and_then(Value::as_bool).unwrap_or(false);
    if insecure && !text("caBundle").is_empty() {
        causes.push((
            "spec.insecureSkipTLSVerify".into(),
            "Invalid value: true: may not be true if caBundle is present".into(),
        ));
    }
    if let Some(service) = spec.get("service").filter(|s| s.is_object()) {
        for field in ["namespace", "name"] {
            if service.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push((format!("spec.service.{field}"), "Required value".into()));
            }
        }
        if let Some(port) = service.get("port").and_then(Value::as_i64) {
            if !(1..=65535).contains(&port) {
                causes
                    .push(("spec.service.port".into(), format!("Invalid value: {port}: must be a valid port number")));
            }
        }
    }
    causes
}

/// Defaults: a service reference's port is 443.
pub fn default(obj: &mut Value) {
    if let Some(service) = obj.pointer_mut("/spec/service").and_then(Value::as_object_mut) {
        service.entry("port").or_insert(Value::from(443));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_priorities_and_trust_are_checked() {
        let good = json!({"metadata": {"name": "v1.wid.example.com"}, "spec": {"group": "wid.example.com", "version": "v1",
            "groupPriorityMinimum": 1000, "versionPriority": 15, "service": {"namespace": "a", "name": "b"}, "caBundle": "eA=="}});
        assert!(validate(&good).is_empty(), "{:?}", validate(&good));
        let bad = json!({"metadata": {"name": "wrong"}, "spec": {"group": "g", "version": "v1", "groupPriorityMinimum": 0,
            "versionPriority": 15, "insecureSkipTLSVerify": true, "caBundle": "eA==", "service": {"namespace": "a"}}});
        let fields: Vec<String> = validate(&bad).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            ["metadata.name", "spec.groupPriorityMinimum", "spec.insecureSkipTLSVerify", "spec.service.name"]
        );
    }
}
