//! The schemas behind the OpenAPI documents: the built-in kinds' from `k8s-openapi` (derived by
//! schemars, with Kubernetes' field descriptions) and the custom resources' from their CRDs,
//! named as kube-apiserver names them (`io.k8s.api.apps.v1.Deployment`,
//! `com.example.stable.v1.CronTab`) and marked with `x-kubernetes-group-version-kind`.
//!
//! Nothing here carries strategic-merge metadata (`x-kubernetes-patch-merge-key`): the documents
//! do not offer the strategic-merge content type, so kubectl computes its apply patches from its
//! compiled-in types and never reads merge keys from these schemas.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::api::resources::ResourceInfo;

/// Name of the `ObjectMeta` definition, which custom resources' `metadata` refers to.
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

const GVK: &str = "x-kubernetes-group-version-kind";

/// Where a document keeps its schemas, which decides the form of references.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Swagger 2.0: `#/definitions/<name>`, `$ref` with sibling descriptions.
    V2,
    /// OpenAPI 3.0: `#/components/schemas/<name>`, a `$ref` with siblings wrapped in `allOf`.
    V3,
}

impl Flavor {
    /// The prefix of a reference to a named schema.
    pub fn ref_prefix(self) -> &'static str {
        match self {
            Flavor::V2 => "#/definitions/",
            Flavor::V3 => "#/components/schemas/",
        }
    }
}

/// The named schemas of a set of served resources.
#[derive(Debug, Default)]
pub struct Schemas {
    /// Every schema by name: the kinds' and every type they use.
    pub definitions: Map<String, Value>,
    /// The schema name of each served `(group, version, kind)`.
    pub names: HashMap<(&'static str, &'static str, &'static str), String>,
}

impl Schemas {
    /// The schema name of a served resource.
    pub fn name_of(&self, ri: &ResourceInfo) -> String {
        self.names.get(&(ri.group, ri.version, ri.kind)).cloned().unwrap_or_else(|| custom_name(ri))
    }
}

/// Builds the schemas of `resources` in `flavor`.
pub fn build<'a>(resources: impl IntoIterator<Item = &'a ResourceInfo>, flavor: Flavor) -> Schemas {
    let mut generator = SchemaSettings::draft07()
        .with(|s| {
            s.transforms.clear();
            s.meta_schema = None;
        })
        .into_generator();
    let mut names = HashMap::new();
    let mut custom = Vec::new();
    for ri in resources {
        if let Some(schema_fn) = ri.schema {
            let reference = schema_fn(&mut generator);
            if let Some(name) =
                reference.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/definitions/"))
            {
                names.insert((ri.group, ri.version, ri.kind), name.to_string());
            }
        } else if let Some(c) = &ri.custom {
            let name = custom_name(ri);
            names.insert((ri.group, ri.version, ri.kind), name.clone());
            custom.push((name, c.schema.clone()));
        }
    }
    if !custom.is_empty() {
        let _ = generator.subschema_for::<ObjectMeta>();
    }
    let mut definitions = generator.take_definitions(false);
    for (name, schema) in custom {
        definitions.insert(name, custom_schema(schema.unwrap_or_else(|| json!({"type": "object"})), flavor));
    }
    for ((group, version, kind), name) in &names {
        if let Some(Value::Object(schema)) = definitions.get_mut(name) {
            let entry = json!({"group": group, "version": version, "kind": kind});
            match schema.get_mut(GVK) {
                Some(Value::Array(list)) if !list.contains(&entry) => list.push(entry),
                Some(Value::Array(_)) => {}
                _ => {
                    schema.insert(GVK.to_string(), json!([entry]));
                }
            }
        }
    }
    if flavor == Flavor::V3 {
        for schema in definitions.values_mut() {
            to_v3(schema, 0);
        }
    }
    Schemas { definitions, names }
}

/// kube-apiserver's name for a custom resource's schema: the group reversed, the version and
/// the kind (`com.example.stable.v1.CronTab`).
fn custom_name(ri: &ResourceInfo) -> String {
    let mut labels: Vec<&str> = ri.group.split('.').filter(|l| !l.is_empty()).collect();
    labels.reverse();
    labels.push(ri.version);
    labels.push(ri.kind);
    labels.join(".")
}

/// A CRD's `openAPIV3Schema` as the documents publish it: `apiVersion`, `kind` and `metadata`
/// (a reference to `ObjectMeta`) filled in as kube-apiserver does; for v2, without the
/// OpenAPI 3 keywords Swagger 2.0 lacks and with every array given `items`, since kubectl
/// rejects the whole v2 document over one array without them.
fn custom_schema(mut schema: Value, flavor: Flavor) -> Value {
    if let Some(props) = schema.as_object_mut().and_then(|s| {
        if !s.contains_key("properties") && s.get("type").and_then(Value::as_str) == Some("object") {
            s.insert("properties".into(), json!({}));
        }
        s.get_mut("properties")
    }) {
        if let Some(props) = props.as_object_mut() {
            let api_version = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
            let kind = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
            props.entry("apiVersion").or_insert_with(|| json!({"type": "string", "description": api_version}));
            props.entry("kind").or_insert_with(|| json!({"type": "string", "description": kind}));
            props.insert(
                "metadata".into(),
                json!({"$ref": format!("#/definitions/{OBJECT_META}"),
                       "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}),
            );
        }
    }
    if flavor == Flavor::V2 {
        to_v2(&mut schema, 0);
    }
    schema
}

/// Deepest schema nesting walked; CRD schemas arrive through a JSON parser with a lower limit.
const MAX_DEPTH: usize = 256;

/// Turns an OpenAPI 3 schema into the Swagger 2.0 subset kubectl parses.
fn to_v2(schema: &mut Value, depth: usize) {
    let Some(map) = schema.as_object_mut() else { return };
    if depth > MAX_DEPTH {
        map.clear();
        return;
    }
    for keyword in ["nullable", "anyOf", "oneOf", "allOf", "not"] {
        map.remove(keyword);
    }
    if map.get("type").and_then(Value::as_str) == Some("array") && !map.get("items").is_some_and(Value::is_object) {
        let first = match map.remove("items") {
            Some(Value::Array(mut list)) if !list.is_empty() => list.swap_remove(0),
            _ => json!({}),
        };
        map.insert("items".into(), first);
    }
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        for prop in props.values_mut() {
            to_v2(prop, depth + 1);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = map.get_mut(key) {
            to_v2(sub, depth + 1);
        }
    }
}

/// Rewrites references to the v3 form: `#/components/schemas/`, and a `$ref` with siblings
/// (a field's description) as `allOf: [{$ref}]` beside them, as kube-apiserver writes them.
fn to_v3(schema: &mut Value, depth: usize) {
    let Some(map) = schema.as_object_mut() else { return };
    if depth > MAX_DEPTH {
        return;
    }
    if let Some(Value::String(reference)) = map.remove("$ref") {
        let reference = match reference.strip_prefix("#/definitions/") {
            Some(name) => format!("{}{name}", Flavor::V3.ref_prefix()),
            None => reference,
        };
        if map.is_empty() {
            map.insert("$ref".into(), Value::String(reference));
        } else {
            map.insert("allOf".into(), json!([{"$ref": reference}]));
            return;
        }
    }
    for (key, value) in map.iter_mut() {
        match (key.as_str(), value) {
            ("properties" | "patternProperties", Value::Object(fields)) => {
                fields.values_mut().for_each(|field| to_v3(field, depth + 1));
            }
            ("items" | "additionalProperties" | "not", sub @ Value::Object(_)) => to_v3(sub, depth + 1),
            ("items" | "allOf" | "anyOf" | "oneOf", Value::Array(list)) => {
                list.iter_mut().for_each(|sub| to_v3(sub, depth + 1));
            }
            _ => {}
        }
    }
}

/// Pushes the names every `$ref` under `value` points to (with `prefix`).
pub fn collect_refs(value: &Value, prefix: &str, out: &mut Vec<String>) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => {
                            if let Some(name) = r.strip_prefix(prefix) {
                                out.push(name.to_string());
                            }
                        }
                        _ => stack.push(v),
                    }
                }
            }
            Value::Array(list) => stack.extend(list),
            _ => {}
        }
    }
}
