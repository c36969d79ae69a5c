//! Protobuf response bodies, as kube-apiserver writes them.
//!
//! An object (a single one, a `<Kind>List`, a `meta.k8s.io/v1` Status or PartialObjectMetadata)
//! is the magic `k8s\0` and a `runtime.Unknown` whose `typeMeta` names it, whose `raw` is the
//! typed message and whose `contentEncoding` and `contentType` are empty. A watch event is one
//! frame: a 4-byte big-endian length, then a `meta.k8s.io/v1 WatchEvent` message with no
//! envelope (Kubernetes encodes it with its raw serializer) whose `object.raw` is the event's
//! object enveloped as above.

use protobuf::reflect::{MessageDescriptor, RuntimeFieldType, RuntimeType};
use protobuf::Message;
use serde_json::{json, Value};

use super::from_json::{self, FromJsonError};
use super::wire;
use super::{descriptor_for, MAGIC};
use crate::api::error::ApiError;
use k8s_rs_pb::apimachinery::pkg::apis::meta::v1::WatchEvent;
use k8s_rs_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};

/// Why an object has no protobuf form.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("the object has no apiVersion or kind")]
    Untyped,
    #[error("no protobuf message for {kind} in {api_version:?}")]
    NoSchema { api_version: String, kind: String },
    #[error("{kind} does not fit its protobuf message: {source}")]
    Field { kind: String, source: FromJsonError },
    #[error("protobuf encoding failed: {0}")]
    Protobuf(#[from] protobuf::Error),
    #[error("a watch event of {0} bytes does not fit a frame")]
    FrameTooLarge(usize),
}

impl From<EncodeError> for ApiError {
    fn from(err: EncodeError) -> Self {
        ApiError::Internal(err.to_string())
    }
}

/// The `meta.k8s.io/v1` kinds that Kubernetes also sends under other group versions (a
/// `Status` is `v1`).
const META_KINDS: &[&str] = &["Status", "PartialObjectMetadata", "PartialObjectMetadataList", "List", "WatchEvent"];

/// True when objects of this kind in this group version have a protobuf message.
pub fn has_message(api_version: &str, kind: &str) -> bool {
    descriptor_for(api_version, kind).is_some()
}

/// An object as a protobuf response body: `k8s\0` + `runtime.Unknown{typeMeta, raw}`.
pub fn object(value: &Value) -> Result<Vec<u8>, EncodeError> {
    let api_version = value.get("apiVersion").and_then(Value::as_str).ok_or(EncodeError::Untyped)?;
    let kind = value.get("kind").and_then(Value::as_str).ok_or(EncodeError::Untyped)?;
    let descriptor = descriptor_for(api_version, kind)
        .or_else(|| META_KINDS.contains(&kind).then(|| descriptor_for("meta.k8s.io/v1", kind)).flatten())
        .ok_or_else(|| EncodeError::NoSchema { api_version: api_version.into(), kind: kind.into() })?;
    let message =
        from_json::message(descriptor, value).map_err(|source| EncodeError::Field { kind: kind.into(), source })?;
    let raw = wire::to_bytes(&*message)?;
    envelope(api_version, kind, raw)
}

/// `k8s\0` and the `runtime.Unknown` carrying `raw`, with empty content encoding and type (Go
/// writes its empty strings).
pub fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Result<Vec<u8>, EncodeError> {
    let mut type_meta = TypeMeta::new();
    type_meta.set_apiVersion(api_version.into());
    type_meta.set_kind(kind.into());
    let mut unknown = Unknown::new();
    unknown.typeMeta = Some(type_meta).into();
    unknown.set_raw(raw);
    unknown.set_contentEncoding(String::new());
    unknown.set_contentType(String::new());
    let mut out = MAGIC.to_vec();
    unknown.write_to_vec(&mut out)?;
    Ok(out)
}

/// A `<Kind>List` encoded piece by piece, so that a list of any length is sent without holding
/// it: the envelope's `raw` carries its length before the items, so a caller measures the items
/// first ([`ListEncoder::item`] once to count, again to send). `head`, the items in order and
/// `tail` together are the bytes [`object`] writes for the whole list.
pub struct ListEncoder {
    api_version: String,
    list_kind: String,
    list: &'static MessageDescriptor,
    item: MessageDescriptor,
}

/// The list message's field of its items (`items`, 2).
const ITEMS_FIELD: u32 = 2;

impl ListEncoder {
    /// The encoder of `list_kind` in `api_version`.
    pub fn new(api_version: &str, list_kind: &str) -> Result<Self, EncodeError> {
        let no_schema = || EncodeError::NoSchema { api_version: api_version.into(), kind: list_kind.into() };
        let list = descriptor_for(api_version, list_kind)
            .or_else(|| META_KINDS.contains(&list_kind).then(|| descriptor_for("meta.k8s.io/v1", list_kind)).flatten())
            .ok_or_else(no_schema)?;
        let items = list.field_by_number(ITEMS_FIELD).filter(|f| f.name() == "items").ok_or_else(no_schema)?;
        let RuntimeFieldType::Repeated(RuntimeType::Message(item)) = items.runtime_field_type() else {
            return Err(no_schema());
        };
        Ok(Self { api_version: api_version.into(), list_kind: list_kind.into(), list, item })
    }

    /// One item as its list carries it: the field's tag, the message's length, the message.
    pub fn item(&self, value: &Value) -> Result<Vec<u8>, EncodeError> {
        let kind = || self.list_kind.clone();
        let message =
            from_json::message(&self.item, value).map_err(|source| EncodeError::Field { kind: kind(), source })?;
        let body = wire::to_bytes(&*message)?;
        let mut out = Vec::with_capacity(body.len().saturating_add(8));
        wire::length_prefix(&mut out, ITEMS_FIELD, body.len())?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Everything before the items: the magic, the envelope's `typeMeta`, the tag and length of
    /// its `raw` (the list's `metadata` and `items_len` bytes of items), and the list's metadata.
    pub fn head(&self, metadata: &Value, items_len: usize) -> Result<Vec<u8>, EncodeError> {
        let kind = || self.list_kind.clone();
        let meta = from_json::message(self.list, &json!({"metadata": metadata}))
            .map_err(|source| EncodeError::Field { kind: kind(), source })
            .and_then(|m| Ok(wire::to_bytes(&*m)?))?;
        let mut type_meta = TypeMeta::new();
        type_meta.set_apiVersion(self.api_version.clone());
        type_meta.set_kind(self.list_kind.clone());
        let mut unknown = Unknown::new();
        unknown.typeMeta = Some(type_meta).into();
        let mut out = MAGIC.to_vec();
        unknown.write_to_vec(&mut out)?;
        wire::length_prefix(&mut out, RAW_FIELD, meta.len().saturating_add(items_len))?;
        out.extend_from_slice(&meta);
        Ok(out)
    }

    /// Everything after the items: the envelope's empty content encoding and type.
    pub fn tail(&self) -> Result<Vec<u8>, EncodeError> {
        let mut unknown = Unknown::new();
        unknown.set_contentEncoding(String::new());
        unknown.set_contentType(String::new());
        Ok(unknown.write_to_bytes()?)
    }
}

/// `runtime.Unknown`'s field of the typed message (`raw`, 2).
const RAW_FIELD: u32 = 2;

/// One watch frame: the length of the `WatchEvent` message (4 bytes, big-endian), then the
/// message, whose object is `object` in its enveloped form.
pub fn watch_frame(event_type: &str, object: &Value) -> Result<Vec<u8>, EncodeError> {
    let mut raw = RawExtension::new();
    raw.set_raw(self::object(object)?);
    let mut event = WatchEvent::new();
    event.set_type(event_type.into());
    event.object = Some(raw).into();
    let body = event.write_to_bytes()?;
    let len = u32::try_from(body.len()).map_err(|_| EncodeError::FrameTooLarge(body.len()))?;
    let mut out = Vec::with_capacity(body.len().saturating_add(4));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests;
