//! Small accessors over an object's JSON, so handlers read like the Kubernetes rules they apply.

use serde_json::{Map, Value};

pub fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

/// `metadata`, created as an empty map when absent or not a map.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("made an object above");
    let metadata = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    metadata.as_object_mut().expect("made an object above")
}

pub fn str_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(obj, |v, k| v.get(*k)).and_then(Value::as_str)
}

pub fn name(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"]).unwrap_or("")
}

pub fn namespace(obj: &Value) -> Option<&str> {
    str_at(obj, &["metadata", "namespace"])
}

pub fn resource_version(obj: &Value) -> Option<&str> {
    str_at(obj, &["metadata", "resourceVersion"]).filter(|s| !s.is_empty())
}

pub fn set_resource_version(obj: &mut Value, revision: i64) {
    meta_mut(obj).insert("resourceVersion".into(), Value::String(revision.to_string()));
}

pub fn labels(obj: &Value) -> Map<String, Value> {
    meta(obj).get("labels").and_then(Value::as_object).cloned().unwrap_or_default()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default()
}

pub fn deletion_timestamp(obj: &Value) -> Option<&str> {
    str_at(obj, &["metadata", "deletionTimestamp"])
}

/// Everything but `metadata` and `status`: what a change to bumps `metadata.generation`.
pub fn spec_part(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    out
}

/// The current time as Kubernetes writes it (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Parses a Kubernetes boolean query value the way Go's `strconv.ParseBool` does.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Sets or replaces one entry of `status.conditions`.
pub fn set_condition(obj: &mut Value, kind: &str, status: &str, reason: Option<&str>) {
    let Some(map) = obj.as_object_mut() else { return };
    let st = map.entry("status").or_insert_with(|| Value::Object(Map::new()));
    let Some(st) = st.as_object_mut() else { return };
    let conditions = st.entry("conditions").or_insert_with(|| Value::Array(Vec::new()));
    let Some(list) = conditions.as_array_mut() else { return };
    list.retain(|c| c.get("type").and_then(Value::as_str) != Some(kind));
    let mut cond =
        serde_json::json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now_rfc3339()});
    if let Some(reason) = reason {
        cond["reason"] = Value::String(reason.to_string());
    }
    list.push(cond);
}
