//! Response negotiation: which media type and which shape (object, Table, metadata) a request
//! is answered in, from its `Accept` header.
//!
//! As kube-apiserver: the entries are tried by quality, then specific types before wildcards,
//! then in the order sent, and an entry the server cannot serve is skipped. Protobuf serves the
//! built-in kinds (whole objects and lists) and `PartialObjectMetadata(List)` of any kind; custom
//! resources and `Table`s have no protobuf form, so such an entry falls through to the next
//! (`application/vnd.kubernetes.protobuf, */*` gets JSON), and a request that accepts nothing
//! else is 406. Any other entry is answered in JSON, as before protobuf.

use axum::http::HeaderMap;

use super::respond::Shape;
use crate::api::error::ApiError;

/// Kubernetes' protobuf media type.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// The encoding of a response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    Json,
    Protobuf,
}

impl Media {
    /// The `Content-Type` of a response (`;stream=watch` for a watch in protobuf).
    pub fn content_type(self, watch: bool) -> &'static str {
        match (self, watch) {
            (Media::Json, _) => "application/json",
            (Media::Protobuf, false) => PROTOBUF,
            (Media::Protobuf, true) => "application/vnd.kubernetes.protobuf;stream=watch",
        }
    }
}

/// How a response is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub media: Media,
    pub shape: Shape,
}

impl Negotiated {
    pub const JSON: Negotiated = Negotiated { media: Media::Json, shape: Shape::Object };
}

/// No entry of the `Accept` header can be served: only protobuf was accepted for a kind
/// without a protobuf form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("only the following media types are accepted: application/json, application/yaml")]
pub struct NotAcceptable;

impl From<NotAcceptable> for ApiError {
    fn from(err: NotAcceptable) -> Self {
        ApiError::NotAcceptable(err.to_string())
    }
}

/// One entry of an `Accept` header.
struct Entry<'a> {
    media_type: &'a str,
    as_kind: Option<&'a str>,
    quality: f32,
}

fn entries(accept: &str) -> Vec<Entry<'_>> {
    let mut out: Vec<Entry<'_>> = accept
        .split(',')
        .filter_map(|part| {
            let mut params = part.split(';').map(str::trim);
            let media_type = params.next().filter(|m| !m.is_empty())?;
            let mut entry = Entry { media_type, as_kind: None, quality: 1.0 };
            for param in params {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                match key.trim() {
                    "as" => entry.as_kind = Some(value.trim()),
                    "q" => entry.quality = value.trim().parse().unwrap_or(1.0),
                    _ => {}
                }
            }
            (entry.quality > 0.0).then_some(entry)
        })
        .collect();
    let rank = |e: &Entry<'_>| {
        let (ty, sub) = e.media_type.split_once('/').unwrap_or((e.media_type, ""));
        (u8::from(ty == "*"), u8::from(sub == "*"))
    };
    // A stable sort: equal entries keep the client's order.
    out.sort_by(|a, b| b.quality.total_cmp(&a.quality).then_with(|| rank(a).cmp(&rank(b))));
    out
}

/// The response form for a request with these headers; `objects_in_protobuf` tells whether the
/// resource's objects have a protobuf form.
pub fn negotiate(headers: &HeaderMap, objects_in_protobuf: bool) -> Result<Negotiated, NotAcceptable> {
    let accept = headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut skipped_protobuf = false;
    for entry in entries(accept) {
        let shape = match entry.as_kind {
            None => Shape::Object,
            Some("Table") => Shape::Table,
            Some("PartialObjectMetadata" | "PartialObjectMetadataList") => Shape::Metadata,
            Some(_) => continue,
        };
        if entry.media_type.eq_ignore_ascii_case(PROTOBUF) {
            let served = match shape {
                Shape::Object => objects_in_protobuf,
                Shape::Metadata => true,
                Shape::Table => false,
            };
            if served {
                return Ok(Negotiated { media: Media::Protobuf, shape });
            }
            skipped_protobuf = true;
            continue;
        }
        return Ok(Negotiated { media: Media::Json, shape });
    }
    if skipped_protobuf {
        return Err(NotAcceptable);
    }
    Ok(Negotiated::JSON)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(accept: &str, protobuf: bool) -> Result<Negotiated, NotAcceptable> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ACCEPT, accept.parse().expect("header"));
        negotiate(&headers, protobuf)
    }

    fn ok(media: Media, shape: Shape) -> Result<Negotiated, NotAcceptable> {
        Ok(Negotiated { media, shape })
    }

    #[test]
    fn client_go_typed_clients_get_protobuf() {
        assert_eq!(with("application/vnd.kubernetes.protobuf, */*", true), ok(Media::Protobuf, Shape::Object));
        assert_eq!(
            with("application/vnd.kubernetes.protobuf,application/json", true),
            ok(Media::Protobuf, Shape::Object)
        );
        assert_eq!(with("application/vnd.kubernetes.protobuf;stream=watch", true), ok(Media::Protobuf, Shape::Object));
        assert_eq!(with("*/*, application/vnd.kubernetes.protobuf", true), ok(Media::Protobuf, Shape::Object));
    }

    #[test]
    fn custom_resources_fall_through_or_are_not_acceptable() {
        assert_eq!(with("application/vnd.kubernetes.protobuf, */*", false), ok(Media::Json, Shape::Object));
        assert_eq!(with("application/vnd.kubernetes.protobuf", false), Err(NotAcceptable));
        // Metadata has a protobuf form for every kind.
        let meta =
            "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        assert_eq!(with(meta, false), ok(Media::Protobuf, Shape::Metadata));
    }

    #[test]
    fn tables_are_json_and_json_is_unchanged() {
        let table = "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        assert_eq!(with(table, true), ok(Media::Json, Shape::Table));
        assert_eq!(with("application/json", true), ok(Media::Json, Shape::Object));
        assert_eq!(with("", true), ok(Media::Json, Shape::Object));
        assert_eq!(with("application/json;as=Foo;v=v1, application/json", true), ok(Media::Json, Shape::Object));
        assert_eq!(
            with("application/json;q=0.5, application/vnd.kubernetes.protobuf", true),
            ok(Media::Protobuf, Shape::Object)
        );
        assert_eq!(
            with("application/vnd.kubernetes.protobuf;q=0, application/json", true),
            ok(Media::Json, Shape::Object)
        );
    }
}
