//! Objects written in kube-apiserver's field order: Go marshals a struct's fields in declaration
//! order, which is also the order of the fields in the `generated.proto` messages (go-to-protobuf
//! keeps it; only the tags differ), so each built-in kind's message descriptor gives its JSON key
//! order, nested messages, lists of them and map values included. `kind` and `apiVersion` come
//! first, as Go's inlined `TypeMeta` does; fields embedded with `json:",inline"` take their
//! parent field's place; map keys stay sorted (Go sorts them); keys the message does not know
//! (a newer field, a custom resource's content) follow in alphabetical order. Custom resources
//! have no message: kube-apiserver writes them from maps, sorted, and so does this.

use std::sync::OnceLock;

use protobuf::reflect::{MessageDescriptor, RuntimeFieldType, RuntimeType};
use serde_json::{Map, Value};
use smallvec::SmallVec;

/// What a field holds, as far as key order goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Child {
    /// A scalar, or a message whose JSON form is not its shape (a time, a quantity, raw JSON):
    /// written as it is.
    Plain,
    /// A message (or a list of them).
    Message(u32),
    /// A map whose values are this message.
    MapOf(u32),
}

/// A message's JSON keys, sorted by name for lookup, each with its rank in Go's order.
#[derive(Default)]
struct Shape {
    slots: Vec<(Box<str>, u32, Child)>,
}

impl Shape {
    fn slot(&self, key: &str) -> Option<(u32, Child)> {
        let at = self.slots.binary_search_by(|(name, _, _)| (**name).cmp(key)).ok()?;
        self.slots.get(at).map(|(_, rank, child)| (*rank, *child))
    }
}

/// The shapes of every message, and the top-level kinds: by name, each with its package tail
/// (`apps.v1`) and shape.
struct Orders {
    shapes: Vec<Shape>,
    kinds: std::collections::HashMap<String, Vec<(String, u32)>>,
}

/// Ranks: `kind`, `apiVersion`, then the message's fields, then unknown keys.
const KIND_RANK: u32 = 0;
const API_VERSION_RANK: u32 = 1;
const FIRST_FIELD_RANK: u32 = 2;
const UNKNOWN_RANK: u32 = u32::MAX;

/// Messages whose JSON form is not their shape: written as they are.
const OPAQUE: &[&str] =
    &["Time", "MicroTime", "Duration", "FieldsV1", "Quantity", "IntOrString", "RawExtension", "ExtraValue", "JSON"];
/// The apiextensions unions whose object form is a `JSONSchemaProps`.
const SCHEMA_UNIONS: &[&str] = &["JSONSchemaPropsOrArray", "JSONSchemaPropsOrBool", "JSONSchemaPropsOrStringArray"];

fn orders() -> &'static Orders {
    static ORDERS: OnceLock<Orders> = OnceLock::new();
    ORDERS.get_or_init(|| {
        let mut builder = Builder::default();
        let mut kinds: std::collections::HashMap<String, Vec<(String, u32)>> = std::collections::HashMap::new();
        for ((tail, name), message) in super::messages() {
            let id = builder.shape(message);
            kinds.entry(name.clone()).or_default().push((tail.clone(), id));
        }
        Orders { shapes: builder.shapes, kinds }
    })
}

#[derive(Default)]
struct Builder {
    shapes: Vec<Shape>,
    ids: std::collections::HashMap<String, u32>,
}

impl Builder {
    /// The id of `message`'s shape, built on first sight (a placeholder first: schemas recurse).
    fn shape(&mut self, message: &MessageDescriptor) -> u32 {
        let full = message.full_name().to_string();
        if let Some(id) = self.ids.get(&full) {
            return *id;
        }
        let id = u32::try_from(self.shapes.len()).unwrap_or(u32::MAX);
        self.shapes.push(Shape::default());
        self.ids.insert(full, id);
        let renames = message.full_name().ends_with("apiextensions.v1.JSONSchemaProps");
        let mut slots = Vec::new();
        for (i, field) in message.fields().enumerate() {
            let position = u32::try_from(i).unwrap_or(u32::MAX >> 9);
            if super::is_inline(&field) {
                if let RuntimeFieldType::Singular(RuntimeType::Message(inner)) = field.runtime_field_type() {
                    for (j, embedded) in inner.fields().enumerate() {
                        let rank = FIRST_FIELD_RANK + (position << 8) + u32::try_from(j).unwrap_or(255).min(255);
                        let child = self.child(&embedded.runtime_field_type());
                        slots.push((super::json_field_name(embedded.name()).into_boxed_str(), rank, child));
                    }
                    continue;
                }
            }
            let name =
                if renames { super::schema_field_name(field.name()) } else { super::json_field_name(field.name()) };
            let child = self.child(&field.runtime_field_type());
            slots.push((name.into_boxed_str(), FIRST_FIELD_RANK + (position << 8), child));
        }
        slots.sort_by(|a, b| a.0.cmp(&b.0));
        slots.dedup_by(|a, b| a.0 == b.0);
        if let Some(shape) = self.shapes.get_mut(usize::try_from(id).unwrap_or(usize::MAX)) {
            shape.slots = slots;
        }
        id
    }

    fn child(&mut self, ty: &RuntimeFieldType) -> Child {
        match ty {
            RuntimeFieldType::Singular(RuntimeType::Message(m))
            | RuntimeFieldType::Repeated(RuntimeType::Message(m)) => {
                self.message_child(m).map_or(Child::Plain, Child::Message)
            }
            RuntimeFieldType::Map(_, RuntimeType::Message(m)) => {
                self.message_child(m).map_or(Child::Plain, Child::MapOf)
            }
            _ => Child::Plain,
        }
    }

    fn message_child(&mut self, message: &MessageDescriptor) -> Option<u32> {
        let name = message.name();
        if OPAQUE.contains(&name) {
            return None;
        }
        if SCHEMA_UNIONS.contains(&name) {
            let schema = message.field_by_name("schema")?;
            return match schema.runtime_field_type() {
                RuntimeFieldType::Singular(RuntimeType::Message(m)) => Some(self.shape(&m)),
                _ => None,
            };
        }
        Some(self.shape(message))
    }
}

/// The shape of the top-level kind `kind` of `api_version`, if it is a built-in one.
fn kind_shape(api_version: &str, kind: &str) -> Option<u32> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let short = if group.is_empty() { "core" } else { group.split('.').next().unwrap_or(group) };
    orders().kinds.get(kind)?.iter().find_map(|(tail, id)| {
        let matches = tail.len() == short.len() + 1 + version.len()
            && tail.starts_with(short)
            && tail.ends_with(version)
            && tail.as_bytes().get(short.len()) == Some(&b'.');
        matches.then_some(*id)
    })
}

/// The shape of a built-in object, by its `apiVersion` and `kind`.
fn built_in_shape(value: &Value) -> Option<u32> {
    match (value.get("apiVersion"), value.get("kind")) {
        (Some(Value::String(v)), Some(Value::String(k))) => kind_shape(v, k),
        _ => None,
    }
}

/// Writes `value` as compact JSON, a built-in object (by its `apiVersion` and `kind`) in
/// kube-apiserver's field order, anything else as it is.
pub fn write(value: &Value, out: &mut Vec<u8>) {
    match built_in_shape(value) {
        Some(id) => write_value(value, Child::Message(id), orders(), out),
        None => plain(value, out),
    }
}

/// Writes a list item as kube-apiserver does: a built-in object without `kind` and
/// `apiVersion` (its list says what it is; Go leaves an item's `TypeMeta` empty), anything else
/// (a custom resource, which kube-apiserver keeps as a map) as [`write`] does.
pub fn write_list_item(value: &Value, out: &mut Vec<u8>) {
    match (value, built_in_shape(value)) {
        (Value::Object(map), Some(id)) => match orders().shapes.get(usize::try_from(id).unwrap_or(usize::MAX)) {
            Some(shape) => write_fields(map, shape, orders(), true, out),
            None => plain(value, out),
        },
        _ => write(value, out),
    }
}

/// [`write`] into a string.
pub fn to_string(value: &Value) -> String {
    let mut out = Vec::new();
    write(value, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn plain(value: &Value, out: &mut Vec<u8>) {
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn write_value(value: &Value, child: Child, orders: &Orders, out: &mut Vec<u8>) {
    match (value, child) {
        (Value::Object(map), Child::Message(id)) => {
            match orders.shapes.get(usize::try_from(id).unwrap_or(usize::MAX)) {
                Some(shape) => write_fields(map, shape, orders, false, out),
                None => plain(value, out),
            }
        }
        (Value::Object(map), Child::MapOf(id)) => {
            out.push(b'{');
            for (n, (key, item)) in map.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                plain(&Value::String(key.clone()), out);
                out.push(b':');
                write_value(item, Child::Message(id), orders, out);
            }
            out.push(b'}');
        }
        (Value::Array(items), Child::Message(_)) => {
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_value(item, child, orders, out);
            }
            out.push(b']');
        }
        _ => plain(value, out),
    }
}

/// Writes an object's fields in `shape`'s order; `untyped` leaves out `kind` and `apiVersion`.
fn write_fields(map: &Map<String, Value>, shape: &Shape, orders: &Orders, untyped: bool, out: &mut Vec<u8>) {
    // Most objects have a few keys: ordered on the stack, without an allocation.
    let mut keys: SmallVec<[(u32, &String, &Value, Child); 16]> = map
        .iter()
        .filter(|(key, _)| !(untyped && (key.as_str() == "kind" || key.as_str() == "apiVersion")))
        .map(|(key, value)| {
            let (rank, child) = shape.slot(key).unwrap_or(match key.as_str() {
                "kind" => (KIND_RANK, Child::Plain),
                "apiVersion" => (API_VERSION_RANK, Child::Plain),
                _ => (UNKNOWN_RANK, Child::Plain),
            });
            (rank, key, value, child)
        })
        .collect();
    // Stable: unknown keys keep the map's (alphabetical) order.
    keys.sort_by_key(|(rank, ..)| *rank);
    out.push(b'{');
    for (n, (_, key, value, child)) in keys.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        write_value(value, child, orders, out);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keys_of(text: &str, path: &[&str]) -> Vec<String> {
        // Reads the keys in written order with a preserving parse of the nested object.
        let mut de = serde_json::Deserializer::from_str(text);
        let value: OrderedValue = serde::Deserialize::deserialize(&mut de).expect("json");
        let mut at = &value;
        for step in path {
            at = match at {
                OrderedValue::Object(entries) => &entries.iter().find(|(k, _)| k == step).expect("path").1,
                OrderedValue::Array(items) => &items[step.parse::<usize>().expect("index")],
                OrderedValue::Other => panic!("no {step}"),
            };
        }
        match at {
            OrderedValue::Object(entries) => entries.iter().map(|(k, _)| k.clone()).collect(),
            _ => panic!("not an object"),
        }
    }

    /// A JSON value that keeps its objects' key order (serde_json's `Map` sorts).
    enum OrderedValue {
        Object(Vec<(String, OrderedValue)>),
        Array(Vec<OrderedValue>),
        Other,
    }

    impl<'de> serde::Deserialize<'de> for OrderedValue {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = OrderedValue;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("json")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<OrderedValue, A::Error> {
                    let mut entries = Vec::new();
                    while let Some((k, v)) = a.next_entry::<String, OrderedValue>()? {
                        entries.push((k, v));
                    }
                    Ok(OrderedValue::Object(entries))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<OrderedValue, A::Error> {
                    let mut items = Vec::new();
                    while let Some(v) = a.next_element::<OrderedValue>()? {
                        items.push(v);
                    }
                    Ok(OrderedValue::Array(items))
                }
                fn visit_str<E>(self, _: &str) -> Result<OrderedValue, E> {
                    Ok(OrderedValue::Other)
                }
                fn visit_bool<E>(self, _: bool) -> Result<OrderedValue, E> {
                    Ok(OrderedValue::Other)
                }
                fn visit_i64<E>(self, _: i64) -> Result<OrderedValue, E> {
                    Ok(OrderedValue::Other)
                }
                fn visit_u64<E>(self, _: u64) -> Result<OrderedValue, E> {
                    Ok(OrderedValue::Other)
                }
                fn visit_f64<E>(self, _: f64) -> Result<OrderedValue, E> {
                    Ok(OrderedValue::Other)
                }
                fn visit_unit<E>(self) -> Result<OrderedValue, E> {
                    Ok(OrderedValue::Other)
                }
            }
            d.deserialize_any(Visitor)
        }
    }

    #[test]
    fn a_pod_is_written_as_kube_apiserver_writes_it() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"uid": "u", "name": "p", "namespace": "d", "labels": {"z": "1", "a": "2"},
                         "creationTimestamp": "2026-01-01T00:00:00Z", "resourceVersion": "5"},
            "spec": {
                "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi", "medium": "Memory"}}],
                "restartPolicy": "Always",
                "containers": [{
                    "resources": {"limits": {"memory": "1Gi", "cpu": "1"}},
                    "name": "c", "image": "busybox", "args": ["a"], "command": ["sh"],
                    "readinessProbe": {"periodSeconds": 1, "httpGet": {"port": 8080, "path": "/"}, "initialDelaySeconds": 2},
                }],
                "nodeName": "n", "initContainers": [], "somethingNew": true,
            },
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": []},
        });
        let text = to_string(&pod);
        assert_eq!(keys_of(&text, &[]), ["kind", "apiVersion", "metadata", "spec", "status"]);
        assert_eq!(
            keys_of(&text, &["metadata"]),
            ["name", "namespace", "uid", "resourceVersion", "creationTimestamp", "labels"]
        );
        // Maps stay sorted; unknown keys come last.
        assert_eq!(keys_of(&text, &["metadata", "labels"]), ["a", "z"]);
        assert_eq!(
            keys_of(&text, &["spec"]),
            ["volumes", "initContainers", "containers", "restartPolicy", "nodeName", "somethingNew"]
        );
        // An inlined VolumeSource's field takes its place after the name; a ProbeHandler's too.
        assert_eq!(keys_of(&text, &["spec", "volumes", "0"]), ["name", "emptyDir"]);
        assert_eq!(keys_of(&text, &["spec", "volumes", "0", "emptyDir"]), ["medium", "sizeLimit"]);
        assert_eq!(
            keys_of(&text, &["spec", "containers", "0"]),
            ["name", "image", "command", "args", "resources", "readinessProbe"]
        );
        assert_eq!(
            keys_of(&text, &["spec", "containers", "0", "readinessProbe"]),
            ["httpGet", "initialDelaySeconds", "periodSeconds"]
        );
        assert_eq!(keys_of(&text, &["spec", "containers", "0", "readinessProbe", "httpGet"]), ["path", "port"]);
        assert_eq!(keys_of(&text, &["status"]), ["phase", "conditions", "podIP"]);
        // Same content.
        assert_eq!(serde_json::from_str::<Value>(&text).expect("json"), pod);
    }

    #[test]
    fn built_in_list_items_leave_out_their_type() {
        let deployment = json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "d"},
                                "spec": {"replicas": 1, "selector": {}}});
        let mut out = Vec::new();
        write_list_item(&deployment, &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(keys_of(&text, &[]), ["metadata", "spec"]);
        assert_eq!(keys_of(&text, &["spec"]), ["replicas", "selector"]);
        // A kind without a message (a custom resource) keeps them, as kube-apiserver's maps do.
        let custom = json!({"kind": "CronTab", "apiVersion": "stable.example.com/v1", "metadata": {"name": "c"}});
        let mut out = Vec::new();
        write_list_item(&custom, &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(keys_of(&text, &[]), ["apiVersion", "kind", "metadata"]);
    }

    #[test]
    fn lists_schemas_and_unknown_kinds() {
        let list = json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "3"},
                          "items": [{"kind": "Deployment", "apiVersion": "apps/v1", "spec": {"template": {}, "selector": {}, "replicas": 1},
                                     "metadata": {"name": "d"}}]});
        let text = to_string(&list);
        assert_eq!(keys_of(&text, &[]), ["kind", "apiVersion", "metadata", "items"]);
        assert_eq!(keys_of(&text, &["items", "0"]), ["kind", "apiVersion", "metadata", "spec"]);
        assert_eq!(keys_of(&text, &["items", "0", "spec"]), ["replicas", "selector", "template"]);
        let crd = json!({"kind": "CustomResourceDefinition", "apiVersion": "apiextensions.k8s.io/v1",
            "spec": {"versions": [{"schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"x-kubernetes-preserve-unknown-fields": true, "type": "object", "description": "d"}}}},
                "served": true, "name": "v1", "storage": true}], "group": "g"}});
        let text = to_string(&crd);
        assert_eq!(keys_of(&text, &["spec", "versions", "0"]), ["name", "served", "storage", "schema"]);
        assert_eq!(
            keys_of(&text, &["spec", "versions", "0", "schema", "openAPIV3Schema", "properties", "spec"]),
            ["description", "type", "x-kubernetes-preserve-unknown-fields"]
        );
        // A custom resource (no message) stays as it is: sorted.
        let custom = json!({"kind": "CronTab", "apiVersion": "stable.example.com/v1", "spec": {}, "metadata": {}});
        assert_eq!(to_string(&custom), serde_json::to_string(&custom).expect("json"));
    }
}
