//! The inverse of [`super::to_json`]: an object's JSON form as the dynamic message of its type,
//! for protobuf responses.
//!
//! Fields are looked up by the JSON names [`super::to_json`] writes (proto names, with the
//! `uID` and JSONSchemaProps renames), the `json:",inline"` structs are filled from their parent's
//! object, and the types whose JSON is not their message shape (Time, MicroTime, Duration,
//! Quantity, IntOrString, RawExtension, FieldsV1, apiextensions JSON and the JSONSchemaProps
//! unions) are built from their JSON form. JSON keys without a field are dropped, as Go's
//! protobuf marshalling of the typed object would never have seen them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use base64::Engine;
use protobuf::reflect::{FieldDescriptor, MessageDescriptor, ReflectValueBox, RuntimeFieldType, RuntimeType};
use protobuf::MessageDyn;
use serde_json::{json, Map, Value};

use super::{is_inline, json_field_name, schema_field_name};

/// A JSON value that does not fit the message field it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct FromJsonError {
    /// Where, as a dotted path of JSON keys and indexes (built on the way out).
    pub path: String,
    pub why: String,
}

impl FromJsonError {
    fn new(why: impl Into<String>) -> Self {
        Self { path: String::new(), why: why.into() }
    }

    fn expected(what: &str, found: &Value) -> Self {
        let found = match found {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        Self::new(format!("expected {what}, found {found}"))
    }

    /// The same error one level further out.
    fn within(mut self, key: &str) -> Self {
        self.path = if self.path.is_empty() { key.to_string() } else { format!("{key}.{}", self.path) };
        self
    }
}

type Result<T> = std::result::Result<T, FromJsonError>;

/// The message of type `descriptor` that `value` is the JSON form of.
pub fn message(descriptor: &MessageDescriptor, value: &Value) -> Result<Box<dyn MessageDyn>> {
    let mut message = descriptor.new_instance();
    if special_form(descriptor, value, &mut *message)? {
        return Ok(message);
    }
    match value {
        Value::Object(object) => fill(descriptor, object, &mut *message)?,
        // Go's JSON decodes `null` into the zero struct.
        Value::Null => {}
        other => return Err(FromJsonError::expected("an object", other)),
    }
    Ok(message)
}

/// A field as [`fill`] reads it: its JSON key, or the embedded message whose fields sit in the
/// parent's object (`json:",inline"`).
enum Slot {
    Key(String),
    Inline(MessageDescriptor),
}

thread_local! {
    /// Each message type's fields with their slots, worked out once per type and thread (field
    /// reflection and the key's name cost more than reading most fields).
    static SLOTS: RefCell<HashMap<MessageDescriptor, Rc<[(FieldDescriptor, Slot)]>>> = RefCell::new(HashMap::new());
}

fn slots(descriptor: &MessageDescriptor) -> Rc<[(FieldDescriptor, Slot)]> {
    if let Some(slots) = SLOTS.with(|s| s.borrow().get(descriptor).cloned()) {
        return slots;
    }
    let renames_schema_fields = descriptor.full_name().ends_with("apiextensions.v1.JSONSchemaProps");
    let slots: Rc<[(FieldDescriptor, Slot)]> = descriptor
        .fields()
        .filter_map(|field| {
            let slot = if is_inline(&field) {
                match field.runtime_field_type() {
                    RuntimeFieldType::Singular(RuntimeType::Message(inner)) => Slot::Inline(inner),
                    _ => return None,
                }
            } else if renames_schema_fields {
                Slot::Key(schema_field_name(field.name()))
            } else {
                Slot::Key(json_field_name(field.name()))
            };
            Some((field, slot))
        })
        .collect();
    SLOTS.with(|s| s.borrow_mut().insert(descriptor.clone(), Rc::clone(&slots)));
    slots
}

/// Sets the fields of `message` from the keys of `object`.
fn fill(descriptor: &MessageDescriptor, object: &Map<String, Value>, message: &mut dyn MessageDyn) -> Result<()> {
    for (field, slot) in slots(descriptor).iter() {
        match slot {
            Slot::Inline(inner) => {
                // The embedded struct's fields sit in this very object.
                let mut embedded = inner.new_instance();
                fill(inner, object, &mut *embedded)?;
                field.set_singular_field(message, ReflectValueBox::Message(embedded));
            }
            Slot::Key(key) => match object.get(key) {
                None | Some(Value::Null) => {}
                Some(value) => set(field, message, value).map_err(|e| e.within(key))?,
            },
        }
    }
    Ok(())
}

/// Sets one field (singular, repeated or map) from its JSON value.
fn set(field: &FieldDescriptor, message: &mut dyn MessageDyn, value: &Value) -> Result<()> {
    match field.runtime_field_type() {
        RuntimeFieldType::Singular(ty) => field.set_singular_field(message, value_box(&ty, value)?),
        RuntimeFieldType::Repeated(ty) => {
            let Value::Array(items) = value else { return Err(FromJsonError::expected("an array", value)) };
            let mut repeated = field.mut_repeated(message);
            for (i, item) in items.iter().enumerate() {
                repeated.push(value_box(&ty, item).map_err(|e| e.within(&i.to_string()))?);
            }
        }
        RuntimeFieldType::Map(key_type, value_type) => {
            let Value::Object(entries) = value else { return Err(FromJsonError::expected("an object", value)) };
            let mut map = field.mut_map(message);
            for (key, item) in entries {
                let k = map_key(&key_type, key)?;
                map.insert(k, value_box(&value_type, item).map_err(|e| e.within(key))?);
            }
        }
    }
    Ok(())
}

fn map_key(ty: &RuntimeType, key: &str) -> Result<ReflectValueBox> {
    match ty {
        RuntimeType::String => Ok(ReflectValueBox::String(key.to_string())),
        // Map keys of other types are written as JSON text by `to_json`.
        other => value_box(other, &serde_json::from_str(key).unwrap_or_else(|_| json!(key))),
    }
}

/// A field value of type `ty` from JSON; `null` is the type's zero value.
fn value_box(ty: &RuntimeType, value: &Value) -> Result<ReflectValueBox> {
    let out_of_range = |n: i128| FromJsonError::new(format!("{n} is out of range"));
    Ok(match ty {
        RuntimeType::I32 => {
            let n = integer(value)?;
            ReflectValueBox::I32(i32::try_from(n).map_err(|_| out_of_range(n))?)
        }
        RuntimeType::I64 => {
            let n = integer(value)?;
            ReflectValueBox::I64(i64::try_from(n).map_err(|_| out_of_range(n))?)
        }
        RuntimeType::U32 => {
            let n = integer(value)?;
            ReflectValueBox::U32(u32::try_from(n).map_err(|_| out_of_range(n))?)
        }
        RuntimeType::U64 => {
            let n = integer(value)?;
            ReflectValueBox::U64(u64::try_from(n).map_err(|_| out_of_range(n))?)
        }
        // Narrowing to the field's precision is what Go's float32 fields do.
        #[allow(clippy::cast_possible_truncation)]
        RuntimeType::F32 => ReflectValueBox::F32(float(value)? as f32),
        RuntimeType::F64 => ReflectValueBox::F64(float(value)?),
        RuntimeType::Bool => match value {
            Value::Bool(b) => ReflectValueBox::Bool(*b),
            Value::Null => ReflectValueBox::Bool(false),
            other => return Err(FromJsonError::expected("a boolean", other)),
        },
        RuntimeType::String => match value {
            Value::String(s) => ReflectValueBox::String(s.clone()),
            Value::Null => ReflectValueBox::String(String::new()),
            other => return Err(FromJsonError::expected("a string", other)),
        },
        RuntimeType::VecU8 => match value {
            Value::String(s) => ReflectValueBox::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| FromJsonError::new(format!("not base64: {e}")))?,
            ),
            Value::Null => ReflectValueBox::Bytes(Vec::new()),
            other => return Err(FromJsonError::expected("a base64 string", other)),
        },
        RuntimeType::Enum(descriptor) => {
            let number = match value {
                Value::String(name) => descriptor
                    .value_by_name(name)
                    .map(|v| v.value())
                    .ok_or_else(|| FromJsonError::new(format!("{name:?} is not a value of {}", descriptor.name())))?,
                other => {
                    let n = integer(other)?;
                    i32::try_from(n).map_err(|_| out_of_range(n))?
                }
            };
            ReflectValueBox::Enum(descriptor.clone(), number)
        }
        RuntimeType::Message(descriptor) => ReflectValueBox::Message(message(descriptor, value)?),
    })
}

/// A JSON integer (a float with no fraction too, as Go's decoder takes `1.0` for an int).
fn integer(value: &Value) -> Result<i128> {
    match value {
        Value::Null => Ok(0),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(i128::from(u))
            } else {
                match n.as_f64() {
                    // Exact: the value is integral and within i64.
                    #[allow(clippy::cast_possible_truncation)]
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i128),
                    _ => Err(FromJsonError::new(format!("{n} is not an integer"))),
                }
            }
        }
        other => Err(FromJsonError::expected("an integer", other)),
    }
}

fn float(value: &Value) -> Result<f64> {
    match value {
        Value::Null => Ok(0.0),
        Value::Number(n) => n.as_f64().ok_or_else(|| FromJsonError::new(format!("{n} is not a number"))),
        other => Err(FromJsonError::expected("a number", other)),
    }
}

/// Sets field `name` of `message` from a JSON value, if the message has that field.
fn put(message: &mut dyn MessageDyn, name: &str, value: &Value) -> Result<()> {
    let descriptor = message.descriptor_dyn();
    match descriptor.field_by_name(name) {
        Some(field) => set(&field, message, value).map_err(|e| e.within(name)),
        None => Err(FromJsonError::new(format!("{} has no field {name}", descriptor.full_name()))),
    }
}

/// Raw JSON bytes (RawExtension, FieldsV1, apiextensions JSON) from a value.
fn put_raw(message: &mut dyn MessageDyn, name: &str, value: &Value) -> Result<()> {
    let descriptor = message.descriptor_dyn();
    let field = descriptor
        .field_by_name(name)
        .ok_or_else(|| FromJsonError::new(format!("{} has no field {name}", descriptor.full_name())))?;
    let bytes = serde_json::to_vec(value).map_err(|e| FromJsonError::new(e.to_string()))?;
    field.set_singular_field(message, ReflectValueBox::Bytes(bytes));
    Ok(())
}

/// Builds the types whose JSON form is not their message shape (the inverse of
/// [`super::special_form`]); false for any other type.
fn special_form(descriptor: &MessageDescriptor, value: &Value, message: &mut dyn MessageDyn) -> Result<bool> {
    let full = descriptor.full_name();
    let (package, name) = full.rsplit_once('.').unwrap_or(("", full));
    let meta = package.ends_with("meta.v1");
    match (package.rsplit('.').next().unwrap_or(""), name) {
        (_, "Time" | "MicroTime") if meta => {
            if let Some((seconds, nanos)) = timestamp(value)? {
                put(message, "seconds", &json!(seconds))?;
                if nanos != 0 {
                    put(message, "nanos", &json!(nanos))?;
                }
            }
        }
        (_, "Duration") if meta => {
            let text = value.as_str().ok_or_else(|| FromJsonError::expected("a duration string", value))?;
            put(message, "duration", &json!(parse_go_duration(text)?))?;
        }
        (_, "FieldsV1") => put_raw(message, "Raw", value)?,
        ("resource", "Quantity") => match value {
            Value::String(s) => put(message, "string", &json!(s))?,
            Value::Number(n) => put(message, "string", &json!(n.to_string()))?,
            other => return Err(FromJsonError::expected("a quantity", other)),
        },
        ("intstr", "IntOrString") => match value {
            Value::Number(_) => {
                put(message, "type", &json!(0))?;
                put(message, "intVal", value)?;
            }
            Value::String(s) => {
                put(message, "type", &json!(1))?;
                put(message, "strVal", &json!(s))?;
            }
            other => return Err(FromJsonError::expected("an integer or a string", other)),
        },
        ("runtime", "RawExtension") => put_raw(message, "raw", value)?,
        (_, "ExtraValue") => put(message, "items", value)?,
        (_, "JSON") if package.ends_with("apiextensions.v1") => put_raw(message, "raw", value)?,
        (_, "JSONSchemaPropsOrArray") => match value {
            Value::Array(_) => put(message, "jSONSchemas", value)?,
            _ => put(message, "schema", value)?,
        },
        (_, "JSONSchemaPropsOrBool") => match value {
            Value::Bool(_) => put(message, "allows", value)?,
            _ => {
                put(message, "allows", &json!(true))?;
                put(message, "schema", value)?;
            }
        },
        (_, "JSONSchemaPropsOrStringArray") => match value {
            Value::Array(_) => put(message, "property", value)?,
            _ => put(message, "schema", value)?,
        },
        _ => return Ok(false),
    }
    Ok(true)
}

/// An RFC 3339 time as Unix seconds and nanoseconds; `null` is the zero time (no fields).
fn timestamp(value: &Value) -> Result<Option<(i64, i32)>> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => {
            let ts: jiff::Timestamp =
                text.parse().map_err(|e| FromJsonError::new(format!("{text:?} is not an RFC 3339 time: {e}")))?;
            Ok(Some((ts.as_second(), ts.subsec_nanosecond())))
        }
        other => Err(FromJsonError::expected("an RFC 3339 time", other)),
    }
}

/// Go's `time.ParseDuration`: `1h2m3.5s`, `150ms`, `-1.5h`, `0`.
fn parse_go_duration(text: &str) -> Result<i64> {
    let bad = || FromJsonError::new(format!("{text:?} is not a duration"));
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad());
        }
        let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
        let mut part = whole.checked_mul(scale).ok_or_else(bad)?;
        let mut place = scale;
        for digit in fraction.chars() {
            place /= 10;
            let d = i128::from(digit.to_digit(10).ok_or_else(bad)?);
            part = part.checked_add(d.checked_mul(place).ok_or_else(bad)?).ok_or_else(bad)?;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = tail;
    }
    let total = if negative { -total } else { total };
    i64::try_from(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("0").ok(), Some(0));
        assert_eq!(parse_go_duration("0s").ok(), Some(0));
        assert_eq!(parse_go_duration("150ms").ok(), Some(150_000_000));
        assert_eq!(parse_go_duration("1h2m3.5s").ok(), Some(3_723_500_000_000));
        assert_eq!(parse_go_duration("-1.5h").ok(), Some(-5_400_000_000_000));
        assert_eq!(parse_go_duration("2µs").ok(), Some(2_000));
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("3x").is_err());
        assert!(parse_go_duration("9999999999h").is_err());
    }
}
