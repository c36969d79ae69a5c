//! The protobuf form of the OpenAPI v2 document, the one kubectl asks for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`): the gnostic `openapi.v2`
//! messages client-go unmarshals, generated at build time from `proto/openapi_v2.proto`.
//! Built from the JSON document ([`super::v2`]), field by field; vendor extensions travel as
//! YAML text in `Any.yaml`, which is how client-go reads them.

use protobuf::{Message, MessageField};
use serde_json::{Map, Value};

/// The messages generated from `proto/openapi_v2.proto`.
#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used, missing_docs, unused_qualifications)]
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/openapi_v2/mod.rs"));
}

use generated::openapi_v2 as pb;

/// Content type of the protobuf document as sent: the dotted form, since Go's MIME parser
/// (which kubectl runs on every response) rejects the `@` of the form clients ask for.
pub const CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The form client-go puts in `Accept`.
const CONTENT_TYPE_ASKED: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// Whether an `Accept` header asks for the protobuf document (in either form).
pub fn wanted(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        media == CONTENT_TYPE || media == CONTENT_TYPE_ASKED
    })
}

/// Deepest schema nesting encoded (deeper levels are left out).
const MAX_DEPTH: usize = 256;

/// Encodes the JSON Swagger document `doc` as the protobuf `openapi.v2.Document`.
pub fn encode(doc: &Value) -> Result<Vec<u8>, protobuf::Error> {
    document(doc).write_to_bytes()
}

/// The protobuf message of the JSON document `doc`.
pub fn document(doc: &Value) -> pb::Document {
    let mut out = pb::Document {
        swagger: string(doc, "swagger"),
        info: MessageField::some(pb::Info {
            title: string(&doc["info"], "title"),
            version: string(&doc["info"], "version"),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut paths = pb::Paths::default();
    for (name, item) in object(doc, "paths") {
        paths.path.push(pb::NamedPathItem {
            name: name.clone(),
            value: MessageField::some(path_item(item)),
            ..Default::default()
        });
    }
    out.paths = MessageField::some(paths);
    let mut definitions = pb::Definitions::default();
    for (name, value) in object(doc, "definitions") {
        definitions.additional_properties.push(named_schema(name, value, 0));
    }
    out.definitions = MessageField::some(definitions);
    out
}

fn path_item(item: &Value) -> pb::PathItem {
    let op = |verb: &str| match item.get(verb) {
        Some(op) if op.is_object() => MessageField::some(operation(op)),
        _ => MessageField::none(),
    };
    pb::PathItem {
        get: op("get"),
        put: op("put"),
        post: op("post"),
        delete: op("delete"),
        patch: op("patch"),
        parameters: array(item, "parameters").iter().map(parameter).collect(),
        ..Default::default()
    }
}

fn operation(op: &Value) -> pb::Operation {
    let mut responses = pb::Responses::default();
    for (code, response) in object(op, "responses") {
        let schema = match response.get("schema") {
            Some(s) => MessageField::some(pb::SchemaItem {
                oneof: Some(pb::schema_item::Oneof::Schema(schema(s, 0))),
                ..Default::default()
            }),
            None => MessageField::none(),
        };
        let value = pb::Response { description: string(response, "description"), schema, ..Default::default() };
        responses.response_code.push(pb::NamedResponseValue {
            name: code.clone(),
            value: MessageField::some(pb::ResponseValue {
                oneof: Some(pb::response_value::Oneof::Response(value)),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    pb::Operation {
        description: string(op, "description"),
        operation_id: string(op, "operationId"),
        produces: strings(op, "produces"),
        consumes: strings(op, "consumes"),
        parameters: array(op, "parameters").iter().map(parameter).collect(),
        responses: MessageField::some(responses),
        vendor_extension: extensions(op),
        ..Default::default()
    }
}

fn parameter(param: &Value) -> pb::ParametersItem {
    use pb::non_body_parameter::Oneof as NonBody;
    let location = string(param, "in");
    let (name, description) = (string(param, "name"), string(param, "description"));
    let required = param.get("required").and_then(Value::as_bool).unwrap_or(false);
    let unique_items = param.get("uniqueItems").and_then(Value::as_bool).unwrap_or(false);
    let kind = match location.as_str() {
        "body" => pb::parameter::Oneof::BodyParameter(pb::BodyParameter {
            description,
            name,
            in_: location,
            required,
            schema: match param.get("schema") {
                Some(s) => MessageField::some(schema(s, 0)),
                None => MessageField::none(),
            },
            ..Default::default()
        }),
        "path" => pb::parameter::Oneof::NonBodyParameter(pb::NonBodyParameter {
            oneof: Some(NonBody::PathParameterSubSchema(pb::PathParameterSubSchema {
                required,
                in_: location,
                description,
                name,
                type_: string(param, "type"),
                unique_items,
                ..Default::default()
            })),
            ..Default::default()
        }),
        _ => pb::parameter::Oneof::NonBodyParameter(pb::NonBodyParameter {
            oneof: Some(NonBody::QueryParameterSubSchema(pb::QueryParameterSubSchema {
                required,
                in_: location,
                description,
                name,
                type_: string(param, "type"),
                unique_items,
                ..Default::default()
            })),
            ..Default::default()
        }),
    };
    pb::ParametersItem {
        oneof: Some(pb::parameters_item::Oneof::Parameter(pb::Parameter { oneof: Some(kind), ..Default::default() })),
        ..Default::default()
    }
}

fn named_schema(name: &str, value: &Value, depth: usize) -> pb::NamedSchema {
    pb::NamedSchema { name: name.to_string(), value: MessageField::some(schema(value, depth)), ..Default::default() }
}

fn schema(value: &Value, depth: usize) -> pb::Schema {
    let mut out = pb::Schema::default();
    if depth > MAX_DEPTH || !value.is_object() {
        return out;
    }
    out._ref = string(value, "$ref");
    out.format = string(value, "format");
    out.title = string(value, "title");
    out.description = string(value, "description");
    out.required = strings(value, "required");
    let types = match value.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(String::from).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        out.type_ = MessageField::some(pb::TypeItem { value: types, ..Default::default() });
    }
    let items: Vec<pb::Schema> = match value.get("items") {
        Some(Value::Array(list)) => list.iter().map(|s| schema(s, depth + 1)).collect(),
        Some(item @ Value::Object(_)) => vec![schema(item, depth + 1)],
        _ => Vec::new(),
    };
    if !items.is_empty() {
        out.items = MessageField::some(pb::ItemsItem { schema: items, ..Default::default() });
    }
    let additional = match value.get("additionalProperties") {
        Some(Value::Bool(b)) => Some(pb::additional_properties_item::Oneof::Boolean(*b)),
        Some(s @ Value::Object(_)) => Some(pb::additional_properties_item::Oneof::Schema(schema(s, depth + 1))),
        _ => None,
    };
    if additional.is_some() {
        out.additional_properties =
            MessageField::some(pb::AdditionalPropertiesItem { oneof: additional, ..Default::default() });
    }
    if let Some(Value::Object(props)) = value.get("properties") {
        let fields = props.iter().map(|(name, s)| named_schema(name, s, depth + 1)).collect();
        out.properties = MessageField::some(pb::Properties { additional_properties: fields, ..Default::default() });
    }
    out.vendor_extension = extensions(value);
    out
}

/// The `x-` members of an object, each as its YAML text.
fn extensions(value: &Value) -> Vec<pb::NamedAny> {
    let Some(map) = value.as_object() else { return Vec::new() };
    map.iter()
        .filter(|(key, _)| key.starts_with("x-"))
        .map(|(key, v)| pb::NamedAny {
            name: key.clone(),
            value: MessageField::some(pb::Any {
                yaml: serde_yaml::to_string(v).unwrap_or_else(|_| v.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

fn string(value: &Value, key: &str) -> String {
    value.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    array(value, key).iter().filter_map(Value::as_str).map(String::from).collect()
}

fn array<'v>(value: &'v Value, key: &str) -> &'v [Value] {
    value.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn object<'v>(value: &'v Value, key: &str) -> impl Iterator<Item = (&'v String, &'v Value)> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    value.get(key).and_then(Value::as_object).unwrap_or_else(|| EMPTY.get_or_init(Map::new)).iter()
}
