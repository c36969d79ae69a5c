//! Response shapes: objects, lists, `meta.k8s.io/v1 Table`, and the `Warning` header; bodies in
//! the negotiated media type ([`send`], [`error`]).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::negotiate::{self, Media, Negotiated};
use super::protobuf::encode;
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::Listed;
use crate::api::resources::ResourceInfo;
use crate::api::table;

/// What the client asked to get back, from its `Accept` header ([`super::negotiate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Object,
    Table,
    /// `meta.k8s.io/v1` PartialObjectMetadata(List): metadata-only clients and informers.
    Metadata,
}

/// An object as `PartialObjectMetadata`: its whole metadata, nothing else.
pub fn metadata_object(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object::meta(obj)})
}

/// A JSON response with optional warnings (`Warning: 299 - "..."`).
pub fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    // kube-apiserver's field order, and the newline Go's JSON encoder ends a body with.
    let mut text = super::protobuf::field_order::to_string(body);
    text.push('\n');
    let response = (code, [(http::header::CONTENT_TYPE, "application/json")], text).into_response();
    with_warnings(response, warnings)
}

/// A response in the negotiated media type. An object without a protobuf form (which the
/// negotiation should have ruled out) is answered in JSON, which every client decodes by the
/// response's `Content-Type`.
pub fn send(negotiated: Negotiated, code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    match negotiated.media {
        Media::Json => json_response(code, body, warnings),
        Media::Protobuf => match encode::object(body) {
            Ok(bytes) => {
                let content_type = Media::Protobuf.content_type(false);
                with_warnings((code, [(http::header::CONTENT_TYPE, content_type)], bytes).into_response(), warnings)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no protobuf form; answering in JSON");
                json_response(code, body, warnings)
            }
        },
    }
}

/// An error's `Status` in the negotiated media type.
pub fn error(media: Media, err: ApiError) -> Response {
    let status = (media == Media::Protobuf).then(|| err.status());
    let mut response = err.into_response();
    if let Some(Ok(bytes)) = status.map(|s| encode::object(&s)) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(negotiate::PROTOBUF));
        *response.body_mut() = axum::body::Body::from(bytes);
    }
    response
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(http::header::WARNING, value);
        }
    }
    response
}

fn partial_metadata(obj: &Value) -> Value {
    let mut meta = object::meta(obj).clone();
    if let Some(map) = meta.as_object_mut() {
        map.remove("managedFields");
    }
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
}

/// One table row for an object.
pub fn table_row(ri: &ResourceInfo, obj: &Value, include_object: &str) -> Value {
    let now = jiff::Timestamp::now();
    let object = match include_object {
        "None" => Value::Null,
        "Object" => obj.clone(),
        _ => partial_metadata(obj),
    };
    let cells = match (&ri.custom, ri.conversion) {
        (Some(custom), _) => crate::api::crd::printer::row_cells(&custom.columns, obj, now),
        // The columns read the storage version's fields.
        (None, Some(_)) => {
            let mut stored = obj.clone();
            crate::api::conversion::to_storage(ri, &mut stored);
            table::row_cells(ri.kind, &stored, now)
        }
        (None, None) => table::row_cells(ri.kind, obj, now),
    };
    json!({"cells": cells, "object": object})
}

/// The Table columns of a resource (a custom resource's from its CRD).
fn column_definitions(ri: &ResourceInfo) -> Vec<Value> {
    match &ri.custom {
        Some(custom) => crate::api::crd::printer::column_definitions(&custom.columns),
        None => table::column_definitions(ri.kind),
    }
}

/// A `Table` of the given objects.
pub fn table(ri: &ResourceInfo, objects: &[Value], list_meta: Value, include_object: &str) -> Value {
    let rows: Vec<Value> = objects.iter().map(|o| table_row(ri, o, include_object)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": column_definitions(ri),
        "rows": rows,
    })
}

fn list_meta(listed: &Listed) -> Value {
    let mut meta = json!({"resourceVersion": listed.revision.to_string()});
    if let Some(token) = &listed.continue_token {
        meta["continue"] = json!(token);
    }
    meta
}

/// A list response in the requested shape.
pub fn list(ri: &ResourceInfo, listed: Listed, shape: Shape, include_object: &str) -> Value {
    match shape {
        Shape::Table => table(ri, &listed.items, list_meta(&listed), include_object),
        Shape::Object => {
            let meta = list_meta(&listed);
            let mut items = listed.items;
            if ri.custom.is_none() {
                // As kube-apiserver: a built-in list's items carry no `kind` or `apiVersion`.
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    item.remove("kind");
                    item.remove("apiVersion");
                }
            }
            json!({
                "kind": ri.list_kind(),
                "apiVersion": ri.api_version(),
                "metadata": meta,
                "items": items,
            })
        }
        Shape::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": list_meta(&listed),
            "items": listed.items.iter().map(metadata_object).collect::<Vec<_>>(),
        }),
    }
}

/// The opening of a streamed list body, up to and including the `[` of its items (or rows):
/// `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[`.
pub fn list_opening(ri: &ResourceInfo, revision: i64, shape: Shape) -> String {
    let meta = json!({"resourceVersion": revision.to_string()});
    match shape {
        Shape::Table => format!(
            r#"{{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{meta},"columnDefinitions":{},"rows":["#,
            Value::Array(column_definitions(ri))
        ),
        Shape::Metadata => {
            format!(r#"{{"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1","metadata":{meta},"items":["#)
        }
        Shape::Object => format!(
            r#"{{"kind":{},"apiVersion":{},"metadata":{meta},"items":["#,
            json!(ri.list_kind()),
            json!(ri.api_version())
        ),
    }
}

/// The end of a streamed list body (and the newline Go's JSON encoder ends a body with).
pub const LIST_CLOSING: &str = "]}\n";

/// Appends items of a streamed list to `out`, each preceded by a comma unless it is the first
/// of the list (`first` is updated).
pub fn list_items(
    ri: &ResourceInfo,
    items: &[Value],
    shape: Shape,
    include_object: &str,
    first: &mut bool,
    out: &mut Vec<u8>,
) {
    for item in items {
        if !std::mem::take(first) {
            out.push(b',');
        }
        let written = match shape {
            Shape::Table => serde_json::to_writer(&mut *out, &table_row(ri, item, include_object)),
            Shape::Object if ri.custom.is_none() => {
                super::protobuf::field_order::write_list_item(item, out);
                Ok(())
            }
            Shape::Object => {
                super::protobuf::field_order::write(item, out);
                Ok(())
            }
            Shape::Metadata => serde_json::to_writer(&mut *out, &metadata_object(item)),
        };
        // Writing a `Value` into a Vec cannot fail.
        if written.is_err() {
            tracing::warn!(resource = ri.plural, "list item did not encode");
        }
    }
}

/// A single object in the requested shape.
pub fn single(ri: &ResourceInfo, obj: Value, shape: Shape, include_object: &str) -> Value {
    match shape {
        Shape::Table => {
            let rv = object::resource_version(&obj).unwrap_or("").to_string();
            table(ri, &[obj], json!({"resourceVersion": rv}), include_object)
        }
        Shape::Object => obj,
        Shape::Metadata => metadata_object(&obj),
    }
}
