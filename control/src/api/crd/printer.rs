//! `additionalPrinterColumns`: the Table columns of a custom resource (NAME, the CRD's columns,
//! and AGE unless the CRD names its own), with the simple JSONPath subset CRDs use
//! (`.spec.cronSpec`, `.status.conditions[0].type`, `.metadata.labels.app`).

use jiff::Timestamp;
use serde_json::{json, Value};

/// One printer column of a CRD version.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

impl Column {
    /// Reads a column of `additionalPrinterColumns`; `None` when it lacks a name or a path.
    pub fn from_json(v: &Value) -> Option<Self> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let column = Column {
            name: s("name"),
            ty: s("type"),
            format: s("format"),
            description: s("description"),
            priority: v.get("priority").and_then(Value::as_i64).unwrap_or(0),
            json_path: s("jsonPath"),
        };
        (!column.name.is_empty() && column.json_path.starts_with('.')).then_some(column)
    }
}

/// Whether the CRD's columns already show the age (then AGE is not added again).
fn has_age(columns: &[Column]) -> bool {
    columns.iter().any(|c| c.json_path == ".metadata.creationTimestamp")
}

/// The `columnDefinitions` of a custom resource's Table.
pub fn column_definitions(columns: &[Column]) -> Vec<Value> {
    let mut out = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    for c in columns {
        // Kubernetes shows dates as ages, so their Table type is a string.
        let ty = if c.ty == "date" { "date" } else { c.ty.as_str() };
        out.push(json!({"name": c.name, "type": ty, "format": c.format, "description": c.description, "priority": c.priority}));
    }
    if !has_age(columns) {
        out.push(json!({"name": "Age", "type": "date", "format": "",
            "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
            "priority": 0}));
    }
    out
}

/// The value at a simple JSONPath (`.a.b[0].c`, `.a['b.c']`); `None` when absent.
pub fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let mut rest = path.trim_start_matches('{').trim_end_matches('}').trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if !key.is_empty() {
                cur = cur.get(key)?;
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            let quoted = inner.trim_matches(|c| c == '\'' || c == '"');
            cur = match inner.parse::<usize>() {
                Ok(i) => cur.get(i)?,
                Err(_) => cur.get(quoted)?,
            };
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(cur)
}

fn age_of(v: &Value, now: Timestamp) -> Value {
    let Some(t) = v.as_str().and_then(|s| s.parse::<Timestamp>().ok()) else { return json!("<unknown>") };
    let d = now.duration_since(t);
    let d = std::time::Duration::from_secs(d.as_secs().max(0).unsigned_abs());
    json!(crate::api::table::human_duration(d))
}

/// The cells of one row, in the order of [`column_definitions`].
pub fn row_cells(columns: &[Column], obj: &Value, now: Timestamp) -> Vec<Value> {
    let mut cells = vec![json!(crate::api::object::name(obj))];
    for c in columns {
        let cell = match (lookup(obj, &c.json_path), c.ty.as_str()) {
            (None, _) => Value::Null,
            (Some(v), "date") => age_of(v, now),
            (Some(v @ (Value::Number(_) | Value::Bool(_))), "integer" | "number" | "boolean") => v.clone(),
            (Some(Value::String(s)), _) => json!(s),
            (Some(v), _) => json!(v.to_string()),
        };
        cells.push(cell);
    }
    if !has_age(columns) {
        cells.push(age_of(obj.pointer("/metadata/creationTimestamp").unwrap_or(&Value::Null), now));
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_cells() {
        let cols: Vec<Column> = [
            json!({"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"}),
            json!({"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}),
            json!({"name": "First", "type": "string", "jsonPath": ".spec.list[0].name", "priority": 1}),
            json!({"name": "Dotted", "type": "string", "jsonPath": ".metadata.labels['app.io/x']"}),
        ]
        .iter()
        .filter_map(Column::from_json)
        .collect();
        let defs = column_definitions(&cols);
        let names: Vec<&str> = defs.iter().filter_map(|d| d["name"].as_str()).collect();
        assert_eq!(names, ["Name", "Spec", "Replicas", "First", "Dotted", "Age"]);
        let now: Timestamp = "2024-01-01T01:00:00Z".parse().expect("time");
        let obj = json!({"metadata": {"name": "c", "creationTimestamp": "2024-01-01T00:00:00Z",
            "labels": {"app.io/x": "y"}}, "spec": {"cronSpec": "* * * * */5", "replicas": 3, "list": [{"name": "n"}]}});
        assert_eq!(
            row_cells(&cols, &obj, now),
            vec![json!("c"), json!("* * * * */5"), json!(3), json!("n"), json!("y"), json!("60m")]
        );
        let bare = json!({"metadata": {"name": "d"}});
        assert_eq!(row_cells(&cols, &bare, now)[1], Value::Null);
    }
}
