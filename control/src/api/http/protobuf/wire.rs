//! A dynamic message in protobuf's wire format, written bottom-up: each nested message is written
//! once into its own buffer and copied into its parent after its length.
//!
//! rust-protobuf's dynamic messages cache no sizes, so their own writer computes a nested
//! message's size again at every level above it: a pod (nested eight deep) took about 0.4 ms to
//! encode, most of it in field reflection. This writer visits each field once, in the same field
//! order (the descriptor's) with the same encodings, and writes a map's entries sorted by key as
//! Kubernetes' generated Go marshallers do (rust-protobuf writes them in hash order).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use protobuf::descriptor::field_descriptor_proto::Type;
use protobuf::reflect::{FieldDescriptor, MessageDescriptor, ReflectValueRef, RuntimeFieldType};
use protobuf::rt::WireType;
use protobuf::{CodedOutputStream, MessageDyn};

/// `message` in protobuf's wire format.
pub fn to_bytes(message: &dyn MessageDyn) -> protobuf::Result<Vec<u8>> {
    let mut out = Vec::new();
    write_message(message, &mut out)?;
    Ok(out)
}

/// How a field is written, read from its descriptor once per message type and thread.
enum Layout {
    Singular(Type),
    Repeated(Type),
    Map(Type, Type),
}

/// A message type's fields in the order they are written.
type Plan = Rc<[(FieldDescriptor, u32, Layout)]>;

thread_local! {
    static PLANS: RefCell<HashMap<MessageDescriptor, Plan>> = RefCell::new(HashMap::new());
}

/// The plan of `descriptor`: field reflection (`proto()`, `runtime_field_type()`) costs more than
/// writing the field, so it is done once per message type.
fn plan(descriptor: &MessageDescriptor) -> protobuf::Result<Plan> {
    if let Some(plan) = PLANS.with(|p| p.borrow().get(descriptor).cloned()) {
        return Ok(plan);
    }
    let mut fields = Vec::new();
    for field in descriptor.fields() {
        let proto = field.proto();
        let number = proto.number() as u32;
        let layout = match field.runtime_field_type() {
            RuntimeFieldType::Singular(_) => Layout::Singular(proto.type_()),
            RuntimeFieldType::Repeated(_) if proto.options.get_or_default().packed() => {
                // Kubernetes' messages have no packed fields.
                return Err(protobuf::Error::from(std::io::Error::other("packed repeated fields are not written")));
            }
            RuntimeFieldType::Repeated(_) => Layout::Repeated(proto.type_()),
            RuntimeFieldType::Map(_, _) => {
                let (key, value) = map_types(&field).ok_or_else(|| mismatch(number))?;
                Layout::Map(key, value)
            }
        };
        fields.push((field, number, layout));
    }
    let plan: Plan = fields.into();
    PLANS.with(|p| p.borrow_mut().insert(descriptor.clone(), Rc::clone(&plan)));
    Ok(plan)
}

fn write_message(message: &dyn MessageDyn, out: &mut Vec<u8>) -> protobuf::Result<()> {
    let plan = plan(&message.descriptor_dyn())?;
    for (field, number, layout) in plan.iter() {
        let number = *number;
        match layout {
            Layout::Singular(ty) => {
                if let Some(value) = field.get_singular(message) {
                    write_value(*ty, number, &value, out)?;
                }
            }
            Layout::Repeated(ty) => {
                let repeated = field.get_repeated(message);
                for i in 0..repeated.len() {
                    write_value(*ty, number, &repeated.get(i), out)?;
                }
            }
            Layout::Map(key_type, value_type) => {
                let map = field.get_map(message);
                let mut entries: Vec<(ReflectValueRef, ReflectValueRef)> = map.into_iter().collect();
                // Sorted by key, as Kubernetes' generated marshallers write maps.
                entries.sort_by(|(a, _), (b, _)| a.to_str().cmp(&b.to_str()));
                for (key, value) in entries {
                    let mut entry = Vec::new();
                    write_value(*key_type, 1, &key, &mut entry)?;
                    write_value(*value_type, 2, &value, &mut entry)?;
                    length_delimited(number, &entry, out)?;
                }
            }
        }
    }
    let unknown = message.special_fields_dyn().unknown_fields();
    if unknown.iter().next().is_some() {
        let mut os = CodedOutputStream::vec(out);
        os.write_unknown_fields(unknown)?;
        os.flush()?;
    }
    Ok(())
}

/// The declared types of a map field's keys and values: fields 1 and 2 of its entry message,
/// nested in the message that holds the map.
fn map_types(field: &FieldDescriptor) -> Option<(Type, Type)> {
    let entry_name = field.proto().type_name().rsplit('.').next()?;
    let entry = field.containing_message().nested_messages().find(|m| m.name() == entry_name)?;
    Some((entry.field_by_number(1)?.proto().type_(), entry.field_by_number(2)?.proto().type_()))
}

/// Field `number`'s tag, `bytes`' length and `bytes`.
fn length_delimited(number: u32, bytes: &[u8], out: &mut Vec<u8>) -> protobuf::Result<()> {
    length_prefix(out, number, bytes.len())?;
    out.extend_from_slice(bytes);
    Ok(())
}

/// Appends the tag of length-delimited field `number` and the length `len` of what follows.
pub fn length_prefix(out: &mut Vec<u8>, number: u32, len: usize) -> protobuf::Result<()> {
    let mut os = CodedOutputStream::vec(out);
    os.write_tag(number, WireType::LengthDelimited)?;
    os.write_raw_varint64(len as u64)?;
    os.flush()
}

fn write_value(ty: Type, number: u32, value: &ReflectValueRef, out: &mut Vec<u8>) -> protobuf::Result<()> {
    if ty == Type::TYPE_MESSAGE {
        let Some(message) = value.to_message() else { return Err(mismatch(number)) };
        let mut inner = Vec::new();
        write_message(&*message, &mut inner)?;
        return length_delimited(number, &inner, out);
    }
    let mut os = CodedOutputStream::vec(out);
    let missing = || mismatch(number);
    match ty {
        Type::TYPE_ENUM => os.write_enum(number, value.to_enum_value().ok_or_else(missing)?)?,
        Type::TYPE_UINT32 => os.write_uint32(number, value.to_u32().ok_or_else(missing)?)?,
        Type::TYPE_UINT64 => os.write_uint64(number, value.to_u64().ok_or_else(missing)?)?,
        Type::TYPE_INT32 => os.write_int32(number, value.to_i32().ok_or_else(missing)?)?,
        Type::TYPE_INT64 => os.write_int64(number, value.to_i64().ok_or_else(missing)?)?,
        Type::TYPE_SINT32 => os.write_sint32(number, value.to_i32().ok_or_else(missing)?)?,
        Type::TYPE_SINT64 => os.write_sint64(number, value.to_i64().ok_or_else(missing)?)?,
        Type::TYPE_FIXED32 => os.write_fixed32(number, value.to_u32().ok_or_else(missing)?)?,
        Type::TYPE_FIXED64 => os.write_fixed64(number, value.to_u64().ok_or_else(missing)?)?,
        Type::TYPE_SFIXED32 => os.write_sfixed32(number, value.to_i32().ok_or_else(missing)?)?,
        Type::TYPE_SFIXED64 => os.write_sfixed64(number, value.to_i64().ok_or_else(missing)?)?,
        Type::TYPE_BOOL => os.write_bool(number, value.to_bool().ok_or_else(missing)?)?,
        Type::TYPE_STRING => os.write_string(number, value.to_str().ok_or_else(missing)?)?,
        Type::TYPE_BYTES => os.write_bytes(number, value.to_bytes().ok_or_else(missing)?)?,
        Type::TYPE_FLOAT => os.write_float(number, value.to_f32().ok_or_else(missing)?)?,
        Type::TYPE_DOUBLE => os.write_double(number, value.to_f64().ok_or_else(missing)?)?,
        Type::TYPE_MESSAGE | Type::TYPE_GROUP => return Err(mismatch(number)),
    }
    os.flush()
}

/// A value that is not of its field's declared type (never, for messages built from their
/// descriptors).
fn mismatch(number: u32) -> protobuf::Error {
    protobuf::Error::from(std::io::Error::other(format!("field {number} holds a value of another type")))
}
