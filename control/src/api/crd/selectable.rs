//! `selectableFields`: the fields of a custom resource that field selectors may use
//! (`kubectl get crontabs --field-selector spec.color=blue`), beside `metadata.name` and
//! `metadata.namespace`. Each is a simple JSON path (no array notation) to a string, boolean or
//! integer of the version's schema; an absent field selects as the empty string.

use serde_json::Value;

use super::printer::lookup;

/// At most this many selectable fields per version, as Kubernetes allows.
pub const MAX_FIELDS: usize = 8;

/// The field-selector names (`spec.color`) of a version's `selectableFields`.
pub fn fields(version: &Value) -> Vec<String> {
    version
        .get("selectableFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
        .filter_map(|p| p.strip_prefix('.'))
        .map(str::to_string)
        .collect()
}

/// The value a field selector compares for `field` (a name from [`fields`]): strings as they
/// are, integers in decimal, booleans as `true`/`false`; `None` when absent (compared as "").
pub fn value(obj: &Value, field: &str) -> Option<String> {
    match lookup(obj, &format!(".{field}"))? {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Every violated rule of a version's `selectableFields`, as `(field, message)` causes; `at` is
/// the version's path (`spec.versions[0]`).
pub fn validate(version: &Value, at: &str) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    let Some(list) = version.get("selectableFields").and_then(Value::as_array) else { return causes };
    if list.len() > MAX_FIELDS {
        causes.push((
            format!("{at}.selectableFields"),
            format!("Too many: {}: must have at most {MAX_FIELDS} items", list.len()),
        ));
    }
    let schema = version.pointer("/schema/openAPIV3Schema");
    let mut seen: Vec<&str> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let field = format!("{at}.selectableFields[{i}].jsonPath");
        let Some(path) = item.get("jsonPath").and_then(Value::as_str).filter(|p| !p.is_empty()) else {
            causes.push((field, "Required value".into()));
            continue;
        };
        if let Err(why) = check_path(schema, path) {
            causes.push((field, format!("Invalid value: {path:?}: {why}")));
        } else if seen.contains(&path) {
            causes.push((field, format!("Duplicate value: {path:?}")));
        }
        seen.push(path);
    }
    causes
}

/// Whether `path` is a simple JSON path to a string, boolean or integer of `schema`.
fn check_path(schema: Option<&Value>, path: &str) -> Result<(), &'static str> {
    let Some(rest) = path.strip_prefix('.') else { return Err("must be a simple json path starting with .") };
    let segments: Vec<&str> = rest.split('.').collect();
    if segments.iter().any(|s| s.is_empty() || s.contains(['[', ']', '*', '\'', '"', '@', '$'])) {
        return Err("must be a simple json path without array notation");
    }
    if segments[0] == "metadata" {
        return Err("is an invalid path: must not point to metadata fields");
    }
    let mut node = schema.ok_or("is an invalid path: the version has no schema")?;
    for segment in &segments {
        node = node
            .get("properties")
            .and_then(|p| p.get(*segment))
            .ok_or("is an invalid path: does not refer to a field of the schema")?;
    }
    match node.get("type").and_then(Value::as_str) {
        Some("string" | "boolean" | "integer") => Ok(()),
        _ => Err("must point to a field of type string, boolean or integer. Enum string fields and strings with formats are allowed"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn version(paths: &[&str]) -> Value {
        let fields: Vec<Value> = paths.iter().map(|p| json!({"jsonPath": p})).collect();
        json!({
            "name": "v1",
            "selectableFields": fields,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {
                    "color": {"type": "string", "enum": ["blue", "red"]},
                    "size": {"type": "integer"},
                    "on": {"type": "boolean"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "nested": {"type": "object", "properties": {"zone": {"type": "string"}}},
                }},
            }}},
        })
    }

    #[test]
    fn scalar_fields_of_the_schema_are_accepted() {
        let v = version(&[".spec.color", ".spec.size", ".spec.on", ".spec.nested.zone"]);
        assert!(validate(&v, "spec.versions[0]").is_empty(), "{:?}", validate(&v, "spec.versions[0]"));
        assert_eq!(fields(&v), ["spec.color", "spec.size", "spec.on", "spec.nested.zone"]);
    }

    #[test]
    fn bad_paths_are_refused_with_their_index() {
        let v = version(&[
            "spec.color",
            ".spec.tags",
            ".spec.tags[0]",
            ".metadata.name",
            ".spec.missing",
            ".spec.size",
            ".spec.size",
        ]);
        let causes = validate(&v, "spec.versions[0]");
        let at = |i: usize| format!("spec.versions[0].selectableFields[{i}].jsonPath");
        assert_eq!(causes.len(), 6, "{causes:?}");
        assert!(causes[0].0 == at(0) && causes[0].1.contains("starting with ."), "{causes:?}");
        assert!(causes[1].0 == at(1) && causes[1].1.contains("string, boolean or integer"), "{causes:?}");
        assert!(causes[2].1.contains("without array notation"), "{causes:?}");
        assert!(causes[3].1.contains("metadata"), "{causes:?}");
        assert!(causes[4].1.contains("does not refer to a field"), "{causes:?}");
        assert_eq!(causes[5], (at(6), "Duplicate value: \".spec.size\"".to_string()));
    }

    #[test]
    fn more_than_eight_is_too_many() {
        let paths = [".spec.color"; 9];
        let causes = validate(&version(&paths), "spec.versions[0]");
        assert!(causes.iter().any(|(f, m)| f == "spec.versions[0].selectableFields" && m.starts_with("Too many: 9")));
    }

    #[test]
    fn values_render_as_kubernetes_compares_them() {
        let obj = json!({"spec": {"color": "blue", "size": 3, "on": false, "tags": ["a"]}});
        assert_eq!(value(&obj, "spec.color").as_deref(), Some("blue"));
        assert_eq!(value(&obj, "spec.size").as_deref(), Some("3"));
        assert_eq!(value(&obj, "spec.on").as_deref(), Some("false"));
        assert_eq!(value(&obj, "spec.nested.zone"), None);
        assert_eq!(value(&obj, "spec.tags"), None);
    }
}
