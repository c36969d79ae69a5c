//! Kubernetes' protobuf request bodies, decoded for every built-in kind from the upstream
//! message descriptors.
//!
//! kubectl's typed clients (`kubectl create deployment|job|cronjob|service|configmap|...`, `run`,
//! `expose`, `auth`) send `application/vnd.kubernetes.protobuf` bodies and do not fall back to JSON.
//! The body is the magic `k8s\0` and a `runtime.Unknown` envelope (`typeMeta`, `raw`); `raw` is the
//! typed object. Nothing here is written per kind: the object's message type is found by its
//! apiVersion and kind among the file descriptors generated from Kubernetes' `generated.proto`
//! files (embedded in the `k8s-rs-pb` crate, collected by `build.rs`), parsed as a dynamic message, and turned into the object's JSON
//! form by the rules that map Kubernetes' protobuf to its JSON ([`to_json`]). The JSON then goes
//! through the same typed admission as any JSON body.
//!
//! Responses go the other way: [`from_json`] builds the message from the JSON form and
//! [`encode`] wraps it as kube-apiserver does, for clients whose `Accept` negotiates protobuf
//! (see [`super::negotiate`]).

pub mod encode;
pub mod field_order;
pub mod from_json;
pub mod wire;

use std::collections::HashMap;
use std::sync::OnceLock;

use protobuf::descriptor::FileDescriptorProto;
use protobuf::reflect::{FileDescriptor, MessageDescriptor, ReflectValueRef, RuntimeFieldType};
use protobuf::{Message, MessageDyn};
use serde_json::{json, Map, Value};

use crate::api::error::{ApiError, ApiResult};
use k8s_rs_pb::apimachinery::pkg::runtime::Unknown;

const MAGIC: &[u8] = b"k8s\0";

/// The serialized `FileDescriptorProto`s of Kubernetes' `generated.proto` files, length-prefixed
/// (collected by `build.rs` from the `k8s-rs-pb` crate).
static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/k8s_descriptors.bin"));

/// Dynamic descriptors of every file in [`DESCRIPTORS`], dependencies resolved among them.
fn files() -> Result<Vec<FileDescriptor>, String> {
    let mut protos = Vec::new();
    let mut rest = DESCRIPTORS;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|e| e.to_string())?;
        if tail.len() < len {
            return Err("truncated descriptor blob".into());
        }
        let (one, tail) = tail.split_at(len);
        protos.push(FileDescriptorProto::parse_from_bytes(one).map_err(|e| e.to_string())?);
        rest = tail;
    }
    FileDescriptor::new_dynamic_fds(protos, &[]).map_err(|e| e.to_string())
}

/// Top-level messages by the last two labels of their package (`apps.v1` of `api.apps.v1`,
/// `apiextensions.v1`, `meta.v1`) and their name; built on first use.
fn messages() -> &'static HashMap<(String, String), MessageDescriptor> {
    static INDEX: OnceLock<HashMap<(String, String), MessageDescriptor>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index = HashMap::new();
        match files() {
            Ok(files) => {
                for file in files {
                    let package = file.package();
                    let tail = match package.rsplitn(3, '.').collect::<Vec<_>>().as_slice() {
                        [last, before, ..] => format!("{before}.{last}"),
                        _ => package.to_string(),
                    };
                    for message in file.messages() {
                        index.insert((tail.clone(), message.name().to_string()), message);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "the Kubernetes protobuf descriptors do not load; protobuf bodies will be refused"),
        }
        index
    })
}

/// The message of `kind` in `apiVersion`: packages are named after the group's first label and
/// the version (`apps/v1` -> `api.apps.v1`, `v1` -> `api.core.v1`, `rbac.authorization.k8s.io/v1`
/// -> `api.rbac.v1`, `apiextensions.k8s.io/v1` -> `...apiextensions.v1`), so the index's key is
/// the group's first label and the version.
fn descriptor_for(api_version: &str, kind: &str) -> Option<&'static MessageDescriptor> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let short = if group.is_empty() { "core" } else { group.split('.').next().unwrap_or(group) };
    messages().get(&(format!("{short}.{version}"), kind.to_string()))
}

/// Decodes a protobuf request body into the JSON form of its object.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let malformed = |why: String| ApiError::BadRequest(format!("the protobuf request body is malformed: {why}"));
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| malformed("no k8s\\0 prefix".into()))?;
    let unknown = Unknown::parse_from_bytes(envelope).map_err(|e| malformed(e.to_string()))?;
    if !unknown.contentEncoding().is_empty() {
        return Err(ApiError::UnsupportedMediaType(format!(
            "protobuf bodies with content encoding {:?} are not supported",
            unknown.contentEncoding()
        )));
    }
    let (api_version, kind) = (unknown.typeMeta.apiVersion(), unknown.typeMeta.kind());
    let descriptor = descriptor_for(api_version, kind).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "no protobuf schema for {kind} in {api_version:?}: send application/json or application/yaml"
        ))
    })?;
    let message = descriptor.parse_from_bytes(unknown.raw()).map_err(|e| malformed(e.to_string()))?;
    let mut obj = to_json(&*message);
    if let Value::Object(map) = &mut obj {
        map.insert("apiVersion".into(), json!(api_version));
        map.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

/// The JSON form of a Kubernetes protobuf message: fields by their proto names (which are the
/// JSON names), unset optional fields and empty lists and maps omitted, `bytes` as base64, and
/// the types whose JSON form is not their message shape mapped as Kubernetes marshals them.
pub fn to_json(message: &dyn MessageDyn) -> Value {
    let descriptor = message.descriptor_dyn();
    if let Some(special) = special_form(&descriptor, message) {
        return special;
    }
    let renames_schema_fields = descriptor.full_name().ends_with("apiextensions.v1.JSONSchemaProps");
    let mut out = Map::new();
    for field in descriptor.fields() {
        let value = match field.runtime_field_type() {
            RuntimeFieldType::Singular(_) => match field.get_singular(message) {
                // Go's protobuf writes every non-pointer field, zero or not; its JSON omits an
                // empty string and a zero time (`omitempty`), and so does this. Zero numbers and
                // false stay: for pointer fields (`replicas: 0`) they are values.
                Some(ReflectValueRef::String("")) => continue,
                Some(v) => match value_json(v) {
                    Value::Null => continue,
                    v => v,
                },
                None => continue,
            },
            RuntimeFieldType::Repeated(_) => {
                let items: Vec<Value> = field.get_repeated(message).into_iter().map(value_json).collect();
                if items.is_empty() {
                    continue;
                }
                Value::Array(items)
            }
            RuntimeFieldType::Map(..) => {
                let mut map = Map::new();
                for (k, v) in &field.get_map(message) {
                    let key = match k {
                        ReflectValueRef::String(s) => s.to_string(),
                        other => value_json(other).to_string(),
                    };
                    map.insert(key, value_json(v));
                }
                if map.is_empty() {
                    continue;
                }
                Value::Object(map)
            }
        };
        if is_inline(&field) {
            if let Value::Object(embedded) = value {
                out.extend(embedded);
            }
            continue;
        }
        let name = if renames_schema_fields { schema_field_name(field.name()) } else { json_field_name(field.name()) };
        out.insert(name, value);
    }
    Value::Object(out)
}

/// The Go structs that Kubernetes embeds with `json:",inline"`: in protobuf they are a field named
/// after the type (`Probe.handler` for ProbeHandler), in JSON their fields sit in the parent.
const INLINE_TYPES: &[&str] = &[
    "LocalObjectReference",
    "VolumeSource",
    "PersistentVolumeSource",
    "ProbeHandler",
    "EphemeralContainerCommon",
    "IngressRuleValue",
];

fn is_inline(field: &protobuf::reflect::FieldDescriptor) -> bool {
    let RuntimeFieldType::Singular(protobuf::reflect::RuntimeType::Message(ty)) = field.runtime_field_type() else {
        return false;
    };
    let type_name = ty.name();
    if !INLINE_TYPES.contains(&type_name) {
        return false;
    }
    let mut chars = type_name.chars();
    let lower_camel: String = chars.next().map(|c| c.to_ascii_lowercase()).into_iter().chain(chars).collect();
    field.name() == lower_camel || (type_name == "ProbeHandler" && field.name() == "handler")
}

fn value_json(value: ReflectValueRef<'_>) -> Value {
    match value {
        ReflectValueRef::U32(v) => json!(v),
        ReflectValueRef::U64(v) => json!(v),
        ReflectValueRef::I32(v) => json!(v),
        ReflectValueRef::I64(v) => json!(v),
        ReflectValueRef::F32(v) => json!(v),
        ReflectValueRef::F64(v) => json!(v),
        ReflectValueRef::Bool(v) => json!(v),
        ReflectValueRef::String(v) => json!(v),
        ReflectValueRef::Bytes(v) => base64(v),
        ReflectValueRef::Enum(descriptor, n) => {
            descriptor.value_by_number(n).map(|v| json!(v.name())).unwrap_or_else(|| json!(n))
        }
        ReflectValueRef::Message(m) => to_json(&*m),
    }
}

fn base64(bytes: &[u8]) -> Value {
    use base64::Engine;
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The JSON name of a field of the built-in types whose proto name differs from it
/// (`BoundObjectReference.uID`, as TokenRequests from kubectl carry it).
fn json_field_name(proto: &str) -> String {
    match proto {
        "uID" => "uid".into(),
        _ => proto.to_string(),
    }
}

/// JSONSchemaProps' proto names that differ from its JSON names.
fn schema_field_name(proto: &str) -> String {
    match proto {
        "ref" => "$ref".into(),
        "schema" => "$schema".into(),
        _ => match proto.strip_prefix("xKubernetes") {
            Some(rest) => {
                let mut name = String::from("x-kubernetes");
                for c in rest.chars() {
                    if c.is_ascii_uppercase() {
                        name.push('-');
                        name.push(c.to_ascii_lowercase());
                    } else {
                        name.push(c);
                    }
                }
                name
            }
            None => proto.to_string(),
        },
    }
}

/// A field of `message` by name, if set.
fn get<'a>(message: &'a dyn MessageDyn, name: &str) -> Option<ReflectValueRef<'a>> {
    message.descriptor_dyn().field_by_name(name)?.get_singular(message)
}

fn repeated(message: &dyn MessageDyn, name: &str) -> Vec<Value> {
    let descriptor = message.descriptor_dyn();
    match descriptor.field_by_name(name) {
        Some(field) if field.is_repeated() => field.get_repeated(message).into_iter().map(value_json).collect(),
        _ => Vec::new(),
    }
}

fn int(value: Option<ReflectValueRef<'_>>) -> i64 {
    match value {
        Some(ReflectValueRef::I64(v)) => v,
        Some(ReflectValueRef::I32(v)) => i64::from(v),
        _ => 0,
    }
}

/// Raw JSON bytes (RawExtension, FieldsV1, apiextensions JSON) as a value; invalid JSON stays
/// a string so admission can name it.
fn raw_json(value: Option<ReflectValueRef<'_>>) -> Value {
    match value {
        Some(ReflectValueRef::Bytes(b)) if !b.is_empty() => {
            serde_json::from_slice(b).unwrap_or_else(|_| json!(String::from_utf8_lossy(b)))
        }
        _ => Value::Null,
    }
}

/// The types Kubernetes marshals to JSON differently from their message shape.
fn special_form(descriptor: &MessageDescriptor, message: &dyn MessageDyn) -> Option<Value> {
    let full = descriptor.full_name();
    let (package, name) = full.rsplit_once('.').unwrap_or(("", full));
    let value = match (package.rsplit('.').next().unwrap_or(""), name) {
        (_, "Time") if package.ends_with("meta.v1") => {
            time(int(get(message, "seconds")), int(get(message, "nanos")), false)
        }
        (_, "MicroTime") if package.ends_with("meta.v1") => {
            time(int(get(message, "seconds")), int(get(message, "nanos")), true)
        }
        (_, "Duration") if package.ends_with("meta.v1") => json!(go_duration(int(get(message, "duration")))),
        (_, "FieldsV1") => raw_json(get(message, "Raw")),
        ("resource", "Quantity") => match get(message, "string") {
            Some(ReflectValueRef::String(s)) => json!(s),
            _ => json!("0"),
        },
        ("intstr", "IntOrString") => {
            let text = match get(message, "strVal") {
                Some(ReflectValueRef::String(s)) => Some(s.to_string()),
                _ => None,
            };
            match (int(get(message, "type")), text) {
                (1, Some(s)) => json!(s),
                (0, _) if get(message, "intVal").is_some() => json!(int(get(message, "intVal"))),
                (_, Some(s)) => json!(s),
                _ => json!(int(get(message, "intVal"))),
            }
        }
        ("runtime", "RawExtension") => raw_json(get(message, "raw")),
        (_, "ExtraValue") => Value::Array(repeated(message, "items")),
        (_, "JSON") if package.ends_with("apiextensions.v1") => raw_json(get(message, "raw")),
        (_, "JSONSchemaPropsOrArray") => {
            let schemas = repeated(message, "jSONSchemas");
            if schemas.is_empty() {
                get(message, "schema").map(value_json).unwrap_or(Value::Null)
            } else {
                Value::Array(schemas)
            }
        }
        (_, "JSONSchemaPropsOrBool") => match get(message, "schema") {
            Some(schema) => value_json(schema),
            None => json!(matches!(get(message, "allows"), Some(ReflectValueRef::Bool(true)))),
        },
        (_, "JSONSchemaPropsOrStringArray") => {
            let property = repeated(message, "property");
            if property.is_empty() {
                get(message, "schema").map(value_json).unwrap_or(Value::Null)
            } else {
                Value::Array(property)
            }
        }
        _ => return None,
    };
    Some(value)
}

/// RFC 3339 in UTC: seconds for `Time`, microseconds for `MicroTime`; the zero time is null
/// (as Go marshals it).
fn time(seconds: i64, nanos: i64, micro: bool) -> Value {
    if seconds == 0 && nanos == 0 {
        return Value::Null;
    }
    let nanos = i32::try_from(nanos.clamp(0, 999_999_999)).unwrap_or(0);
    match jiff::Timestamp::new(seconds, if micro { nanos } else { 0 }) {
        Ok(ts) if micro => json!(format!("{}.{:06}Z", ts.strftime("%Y-%m-%dT%H:%M:%S"), nanos / 1000)),
        Ok(ts) => json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        Err(_) => Value::Null,
    }
}

/// A duration in nanoseconds as Go's `time.Duration.String()` writes it (`1h2m3.5s`, `150ms`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let fraction = |value: u64, unit: u64| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            whole.to_string()
        } else {
            let digits = unit.ilog10() as usize;
            let text = format!("{whole}.{rest:0digits$}");
            text.trim_end_matches('0').to_string()
        }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", fraction(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", fraction(n, 1_000_000));
    }
    let (hours, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (minutes, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let seconds = fraction(rest, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests;
