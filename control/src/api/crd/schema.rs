//! Structural OpenAPI v3 schemas of custom resources, as kube-apiserver applies them to a custom
//! object: defaulting (`default`), pruning of unknown fields (unless
//! `x-kubernetes-preserve-unknown-fields`), and validation (types, required, enum, pattern,
//! bounds, lengths, item counts, formats, nullable, `x-kubernetes-int-or-string`,
//! `x-kubernetes-embedded-resource`). Pure functions over JSON; errors worded as kube-apiserver
//! words them.

use serde_json::{Map, Value};

/// One violated rule: the field path (`spec.replicas`) and the message after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

/// The schema of map values (`additionalProperties` as a schema; `true` is an empty schema).
fn additional(schema: &Value) -> Option<&Value> {
    match schema.get("additionalProperties") {
        Some(Value::Bool(true)) => Some(&Value::Null),
        Some(v @ Value::Object(_)) => Some(v),
        _ => None,
    }
}

/// Fills in `default`s of absent (or null, non-nullable) properties, depth first, as
/// kube-apiserver's structural defaulting does.
pub fn default(schema: &Value, obj: &mut Value) {
    match obj {
        Value::Object(map) => {
            if let Some(props) = properties(schema) {
                for (key, prop) in props {
                    let Some(def) = prop.get("default") else { continue };
                    let absent = match map.get(key) {
                        None => true,
                        Some(Value::Null) => !flag(prop, "nullable"),
                        Some(_) => false,
                    };
                    if absent {
                        map.insert(key.clone(), def.clone());
                    }
                }
                for (key, value) in map.iter_mut() {
                    if let Some(prop) = props.get(key) {
                        default(prop, value);
                    }
                }
            } else if let Some(extra) = additional(schema) {
                for value in map.values_mut() {
                    default(extra, value);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    default(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// Removes fields the schema does not know (unless it preserves unknown fields) and returns
/// their paths. `root` keeps `apiVersion`, `kind` and `metadata` whatever the schema says.
pub fn prune(schema: &Value, obj: &mut Value, root: bool) -> Vec<String> {
    let mut pruned = Vec::new();
    prune_at(schema, obj, "", root, &mut pruned);
    pruned
}

fn prune_at(schema: &Value, obj: &mut Value, path: &str, root: bool, pruned: &mut Vec<String>) {
    match obj {
        Value::Object(map) => {
            let embedded = root || flag(schema, "x-kubernetes-embedded-resource");
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let props = properties(schema);
            let extra = additional(schema);
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    if key == "metadata" && !root {
                        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
                            prune_embedded_metadata(meta, &child(path, "metadata"), pruned);
                        }
                    }
                    continue;
                }
                let sub = props.and_then(|p| p.get(&key)).or(extra);
                match (sub, map.get_mut(&key)) {
                    (Some(sub), Some(value)) => prune_at(sub, value, &child(path, &key), false, pruned),
                    (None, Some(value)) if preserve => {
                        // Unknown fields are kept whole, and so is what is under them.
                        let _ = value;
                    }
                    (None, _) => {
                        map.remove(&key);
                        pruned.push(child(path, &key));
                    }
                    (Some(_), None) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_at(item_schema, item, &index(path, i), false, pruned);
                }
            }
        }
        _ => {}
    }
}

/// ObjectMeta's fields: what a custom object's (or an embedded object's) `metadata` keeps.
pub(crate) const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The `metadata` of an embedded object keeps only ObjectMeta's fields that matter there.
fn prune_embedded_metadata(meta: &mut Map<String, Value>, path: &str, pruned: &mut Vec<String>) {
    let unknown: Vec<String> = meta.keys().filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str())).cloned().collect();
    for key in unknown {
        meta.remove(&key);
        pruned.push(child(path, &key));
    }
}

/// The JSON type name of a value, as kube-openapi reports it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integral(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integral(n: &serde_json::Number) -> bool {
    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.is_finite())
}

/// A value as Go's `field.Invalid` prints it: strings quoted, numbers and booleans bare.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

/// Validates `obj` against `schema`; every violation, in field order.
pub fn validate(schema: &Value, obj: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    validate_at(schema, obj, None, "", &mut out);
    out
}

/// [`validate`] for an update: CEL transition rules (`oldSelf`) see the old object's value at
/// the same place (through object properties and map values; list items are not correlated).
pub fn validate_update(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<Violation> {
    let mut out = Vec::new();
    validate_at(schema, obj, old, "", &mut out);
    out
}

fn invalid(out: &mut Vec<Violation>, path: &str, value: &str, detail: String) {
    out.push(Violation { field: path.to_string(), message: format!("Invalid value: {value}: {detail}") });
}

fn body(path: &str) -> String {
    if path.is_empty() {
        "body".to_string()
    } else {
        format!("{path} in body")
    }
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.as_number().is_some_and(is_integral),
        "number" => v.is_number(),
        _ => true,
    }
}

fn validate_at(schema: &Value, v: &Value, old: Option<&Value>, path: &str, out: &mut Vec<Violation>) {
    if !schema.is_object() {
        return;
    }
    if v.is_null() {
        if !flag(schema, "nullable") && schema.get("type").is_some() {
            let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
            invalid(out, path, "\"null\"", format!("{} must be of type {ty}: \"null\"", body(path)));
        }
        return;
    }
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    if int_or_string {
        if !(v.is_string() || v.as_number().is_some_and(is_integral)) {
            let ty = type_name(v);
            invalid(out, path, &format!("{ty:?}"), format!("{} must be of type integer or string: {ty:?}", body(path)));
            return;
        }
    } else if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        if !type_ok(ty, v) {
            let have = type_name(v);
            invalid(out, path, &format!("{have:?}"), format!("{} must be of type {ty}: {have:?}", body(path)));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(shown).collect();
            out.push(Violation {
                field: path.to_string(),
                message: format!("Unsupported value: {}: supported values: {}", shown(v), list.join(", ")),
            });
        }
    }
    match v {
        Value::String(s) => validate_string(schema, s, v, path, out),
        Value::Number(n) => validate_number(schema, n, v, path, out),
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if len > max {
                    out.push(Violation {
                        field: path.to_string(),
                        message: format!("Too many: {len}: must have at most {max} items"),
                    });
                }
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if len < min {
                    invalid(out, path, &shown(v), format!("{} should have at least {min} items", body(path)));
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_at(item_schema, item, None, &index(path, i), out);
                }
            }
        }
        Value::Object(map) => validate_object(schema, map, old, path, out),
        _ => {}
    }
    super::rules::check(schema, v, old, path, out);
}

fn validate_object(
    schema: &Value,
    map: &Map<String, Value>,
    old: Option<&Value>,
    path: &str,
    out: &mut Vec<Violation>,
) {
    if flag(schema, "x-kubernetes-embedded-resource") {
        for field in ["apiVersion", "kind"] {
            if map.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                out.push(Violation { field: child(path, field), message: "Required value: must not be empty".into() });
            }
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for field in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(field) {
                out.push(Violation { field: child(path, field), message: "Required value".into() });
            }
        }
    }
    let len = map.len() as u64;
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
        if len > max {
            out.push(Violation {
                field: path.to_string(),
                message: format!("Too many: {len}: must have at most {max} items"),
            });
        }
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
        if len < min {
            invalid(out, path, &len.to_string(), format!("{} should have at least {min} properties", body(path)));
        }
    }
    let props = properties(schema);
    let extra = additional(schema);
    for (key, value) in map {
        if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(key)).or(extra) {
            validate_at(sub, value, old.and_then(|o| o.get(key)), &child(path, key), out);
        }
    }
}

fn validate_string(schema: &Value, s: &str, v: &Value, path: &str, out: &mut Vec<Violation>) {
    let chars = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if chars > max {
            out.push(Violation {
                field: path.to_string(),
                message: format!("Too long: may not be more than {max} bytes"),
            });
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if chars < min {
            invalid(out, path, &shown(v), format!("{} should be at least {min} chars long", body(path)));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        if super::compiled::pattern(pattern).is_some_and(|re| !re.is_match(s)) {
            invalid(out, path, &shown(v), format!("{} should match '{pattern}'", body(path)));
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        if !format_ok(format, s) {
            invalid(out, path, &shown(v), format!("{} must be of type {format}: {}", body(path), shown(v)));
        }
    }
}

/// The string formats kube-apiserver checks (unknown formats pass).
pub fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok() && s.len() == 10,
        "uuid" => uuid::Uuid::try_parse(s).is_ok() && s.len() == 36,
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.parse::<ipnet::IpNet>().is_ok(),
        "hostname" => {
            !s.is_empty()
                && s.len() <= 253
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "int32" => s.parse::<i32>().is_ok(),
        "int64" => s.parse::<i64>().is_ok(),
        _ => true,
    }
}

fn validate_number(schema: &Value, n: &serde_json::Number, v: &Value, path: &str, out: &mut Vec<Violation>) {
    let Some(x) = n.as_f64() else { return };
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMaximum");
        if (exclusive && x >= max) || (!exclusive && x > max) {
            let words = if exclusive { "less than" } else { "less than or equal to" };
            invalid(out, path, &shown(v), format!("{} should be {words} {}", body(path), number(max)));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMinimum");
        if (exclusive && x <= min) || (!exclusive && x < min) {
            let words = if exclusive { "greater than" } else { "greater than or equal to" };
            invalid(out, path, &shown(v), format!("{} should be {words} {}", body(path), number(min)));
        }
    }
    if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64).filter(|m| *m > 0.0) {
        if (x / m).fract() != 0.0 {
            invalid(out, path, &shown(v), format!("{} should be a multiple of {}", body(path), number(m)));
        }
    }
    // An integral float (`3.0`) counts as the integer it is.
    let int = n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64));
    match schema.get("format").and_then(Value::as_str) {
        Some("int32") if int.is_none_or(|i| i32::try_from(i).is_err()) => {
            invalid(out, path, &shown(v), format!("{} must be of type int32: {}", body(path), shown(v)));
        }
        Some("int64") if int.is_none() => {
            invalid(out, path, &shown(v), format!("{} must be of type int64: {}", body(path), shown(v)));
        }
        _ => {}
    }
}

/// A bound as Go prints a float: `10`, `0.5`.
fn number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// Checks that a CRD version's schema is structural enough to serve: a type on every node
/// (except where `x-kubernetes-int-or-string` or `x-kubernetes-preserve-unknown-fields` stands
/// for it), an object at the root, and valid patterns. `path` is where the schema sits in the
/// CRD (`spec.versions[0].schema.openAPIV3Schema`).
pub fn structural_errors(schema: &Value, path: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {}
        Some(other) => out.push(Violation {
            field: format!("{path}.type"),
            message: format!("Invalid value: {other:?}: must be object at the root"),
        }),
        None => out.push(Violation {
            field: format!("{path}.type"),
            message: "Required value: must not be empty at the root".into(),
        }),
    }
    structural_at(schema, path, true, &mut out);
    out
}

fn structural_at(schema: &Value, path: &str, root: bool, out: &mut Vec<Violation>) {
    let Some(map) = schema.as_object() else { return };
    let exempt = flag(schema, "x-kubernetes-int-or-string") || flag(schema, "x-kubernetes-preserve-unknown-fields");
    if !root && !exempt && map.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
        out.push(Violation {
            field: format!("{path}.type"),
            message: "Required value: must not be empty for specified object fields".into(),
        });
    }
    if let Some(ty) = map.get("type").and_then(Value::as_str) {
        if !matches!(ty, "object" | "array" | "string" | "integer" | "number" | "boolean") {
            out.push(Violation {
                field: format!("{path}.type"),
                message: format!(
                    "Unsupported value: {ty:?}: supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\""
                ),
            });
        }
        if ty == "array" && map.get("items").is_none() {
            out.push(Violation { field: format!("{path}.items"), message: "Required value: must be specified".into() });
        }
    }
    if map.contains_key("properties") && matches!(map.get("additionalProperties"), Some(Value::Object(_))) {
        out.push(Violation {
            field: format!("{path}.additionalProperties"),
            message: "Forbidden: additionalProperties and properties are mutual exclusive".into(),
        });
    }
    if let Some(pattern) = map.get("pattern").and_then(Value::as_str) {
        if let Err(e) = regex::Regex::new(pattern) {
            out.push(Violation {
                field: format!("{path}.pattern"),
                message: format!("Invalid value: {pattern:?}: {e}"),
            });
        }
    }
    out.extend(super::rules::compile_errors(schema, path));
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (key, sub) in props {
            structural_at(sub, &format!("{path}.properties[{key}]"), false, out);
        }
    }
    if let Some(items) = map.get("items") {
        structural_at(items, &format!("{path}.items"), false, out);
    }
    if let Some(extra @ Value::Object(_)) = map.get("additionalProperties") {
        structural_at(extra, &format!("{path}.additionalProperties"), false, out);
    }
    if let Some(def) = map.get("default") {
        let mut errs = Vec::new();
        validate_at(schema, def, None, "", &mut errs);
        for e in errs {
            out.push(Violation { field: format!("{path}.default"), message: e.message });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crontab() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["cronSpec"],
                    "properties": {
                        "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                        "image": {"type": "string", "minLength": 1, "maxLength": 10},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1, "format": "int32"},
                        "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
                        "port": {"x-kubernetes-int-or-string": true},
                        "when": {"type": "string", "format": "date-time"},
                        "tags": {"type": "array", "maxItems": 2, "minItems": 1, "items": {"type": "string"}},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "note": {"type": "string", "nullable": true},
                        "pods": {"type": "array", "items": {"type": "object", "properties": {
                            "name": {"type": "string"}, "weight": {"type": "integer", "default": 5}}}},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                            "x-kubernetes-preserve-unknown-fields": true},
                    }
                },
                "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
            }
        })
    }

    fn messages(v: &[Violation]) -> Vec<String> {
        v.iter().map(|v| format!("{}: {}", v.field, v.message)).collect()
    }

    #[test]
    fn a_wrong_type_is_worded_as_kube_apiserver() {
        let obj = json!({"apiVersion": "x/v1", "kind": "C", "metadata": {"name": "a"},
            "spec": {"cronSpec": "* * * * */5", "replicas": "string"}});
        assert_eq!(
            messages(&validate(&crontab(), &obj)),
            vec!["spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""]
        );
    }

    #[test]
    fn every_rule_reports_its_field() {
        let obj = json!({"spec": {
            "cronSpec": "nope", "image": "", "replicas": 11, "mode": "medium", "port": 1.5,
            "when": "yesterday", "tags": ["a", "b", "c"], "labels": {"a": 1}, "note": null,
            "template": {"kind": "Pod"}
        }});
        let got = messages(&validate(&crontab(), &obj));
        let want = [
            "spec.cronSpec: Invalid value: \"nope\": spec.cronSpec in body should match",
            "spec.image: Invalid value: \"\": spec.image in body should be at least 1 chars long",
            "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
            "spec.mode: Unsupported value: \"medium\": supported values: \"fast\", \"slow\"",
            "spec.port: Invalid value: \"number\": spec.port in body must be of type integer or string: \"number\"",
            "spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\"",
            "spec.tags: Too many: 3: must have at most 2 items",
            "spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"",
            "spec.template.apiVersion: Required value: must not be empty",
        ];
        for w in want {
            assert!(got.iter().any(|g| g.starts_with(w)), "missing {w:?} in {got:#?}");
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
        let missing = validate(&crontab(), &json!({"spec": {}}));
        assert_eq!(messages(&missing), vec!["spec.cronSpec: Required value"]);
        let ok = json!({"spec": {"cronSpec": "*/5 * * * *", "port": "http", "when": "2024-01-02T03:04:05Z",
            "replicas": 3.0, "tags": ["x"], "note": null}});
        assert!(validate(&crontab(), &ok).is_empty(), "{:?}", validate(&crontab(), &ok));
    }

    #[test]
    fn bounds_and_formats() {
        let s = json!({"type": "integer", "minimum": 1, "exclusiveMinimum": true, "format": "int32"});
        assert_eq!(
            messages(&validate(&json!({"type": "object", "properties": {"n": s}}), &json!({"n": 1}))),
            vec!["n: Invalid value: 1: n in body should be greater than 1"]
        );
        let big = json!({"n": 5_000_000_000i64});
        assert!(messages(&validate(&json!({"type": "object", "properties": {"n": s}}), &big))[0]
            .contains("must be of type int32"));
        assert!(format_ok("uuid", "0b8b5a4e-3c1d-4e8f-9d2a-2f6a3b7c9e10"));
        assert!(!format_ok("ipv4", "300.1.1.1"));
        assert!(format_ok("date", "2024-02-29"));
    }

    #[test]
    fn pruning_keeps_known_and_preserved_fields() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "C", "metadata": {"name": "a"},
            "spec": {"cronSpec": "x", "bogus": 1, "extra": {"anything": {"deep": true}},
                "labels": {"k": "v"}, "pods": [{"name": "p", "junk": 1}],
                "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t", "wat": 1}, "spec": {}}},
            "top": 1});
        let pruned = prune(&crontab(), &mut obj, true);
        assert_eq!(pruned, vec!["spec.bogus", "spec.pods[0].junk", "spec.template.metadata.wat", "top"]);
        assert_eq!(obj["spec"]["extra"]["anything"]["deep"], json!(true));
        assert_eq!(obj["spec"]["labels"]["k"], json!("v"));
        assert_eq!(obj["metadata"]["name"], json!("a"));
        assert!(obj["spec"]["template"]["spec"].is_object());
    }

    #[test]
    fn defaults_fill_absent_fields_at_every_depth() {
        let mut obj = json!({"spec": {"cronSpec": "x", "mode": null, "pods": [{"name": "a"}, {"weight": 2}]}});
        default(&crontab(), &mut obj);
        assert_eq!(obj["spec"]["replicas"], json!(1));
        assert_eq!(obj["spec"]["mode"], json!("fast"));
        assert_eq!(obj["spec"]["pods"], json!([{"name": "a", "weight": 5}, {"weight": 2}]));
    }

    #[test]
    fn structural_schemas_need_types() {
        let bad = json!({"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}},
            "list": {"type": "array"}, "n": {"type": "integer", "default": "x"}}});
        let got = messages(&structural_errors(&bad, "spec.versions[0].schema.openAPIV3Schema"));
        assert!(got.contains(
            &"spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields".to_string()
        ), "{got:#?}");
        assert!(got.iter().any(|g| g.contains("properties[list].items: Required value")), "{got:#?}");
        assert!(got.iter().any(|g| g.contains("properties[n].default: Invalid value")), "{got:#?}");
        let root = structural_errors(&json!({"properties": {}}), "s");
        assert_eq!(messages(&root), vec!["s.type: Required value: must not be empty at the root"]);
        assert!(structural_errors(&crontab(), "s").is_empty());
    }
}
