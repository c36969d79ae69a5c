//! A whole collection listed in protobuf, streamed page by page like the JSON list.
//!
//! A protobuf list's envelope carries the length of the typed list before its items, so the list
//! is read twice at one revision: once to measure each item's encoding, then again to send it.
//! Memory stays bounded by a page whatever the size of the collection (kube-apiserver's Go
//! clients list in protobuf, 100,000 pods included), for twice the encoding work. A list whose
//! encoding fits [`KEEP_BYTES`] is kept from the first pass and sent as it is (one pass).

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use super::handlers::STREAM_PAGE;
use super::negotiate::Media;
use super::protobuf::encode::ListEncoder;
use super::respond::{self, Shape};
use crate::api::error::ApiResult;
use crate::api::registry::{ListQuery, Page, Registry};
use crate::api::resources::ResourceInfo;
use crate::store::Revision;

/// Encoded items kept from the first pass at most; a larger list is encoded again to be sent.
const KEEP_BYTES: usize = 8 << 20;

/// The list answered as a streamed protobuf body; `None` when it has no protobuf form (a custom
/// resource, a Table, an item that does not fit its message), for the caller to answer in JSON.
pub async fn stream(
    registry: Arc<Registry>,
    ri: &ResourceInfo,
    q: ListQuery,
    shape: Shape,
) -> ApiResult<Option<Response>> {
    stream_keeping(registry, ri, q, shape, KEEP_BYTES).await
}

/// [`stream`], keeping the first pass's encoding when it fits `keep_bytes`.
async fn stream_keeping(
    registry: Arc<Registry>,
    ri: &ResourceInfo,
    q: ListQuery,
    shape: Shape,
    keep_bytes: usize,
) -> ApiResult<Option<Response>> {
    let (api_version, list_kind) = match shape {
        Shape::Object if ri.custom.is_none() => (ri.api_version(), ri.list_kind()),
        Shape::Metadata => ("meta.k8s.io/v1".to_string(), "PartialObjectMetadataList".to_string()),
        _ => return Ok(None),
    };
    let Ok(encoder) = ListEncoder::new(&api_version, &list_kind) else { return Ok(None) };
    // First pass: the length of every item's encoding, page by page.
    let mut page = registry.list_page(ri, &q, q.exact_revision, None, STREAM_PAGE).await?;
    let revision = page.revision;
    let mut items_len = 0usize;
    let mut kept: Option<Vec<u8>> = Some(Vec::new());
    loop {
        for item in &page.items {
            match encoder.item(&shaped(item, shape)) {
                Ok(bytes) => {
                    items_len = items_len.saturating_add(bytes.len());
                    kept = kept.filter(|_| items_len <= keep_bytes).map(|mut k| {
                        k.extend_from_slice(&bytes);
                        k
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, resource = ri.plural, "an item has no protobuf form; answering in JSON");
                    return Ok(None);
                }
            }
        }
        let Some(after) = page.next.take() else { break };
        page = registry.list_page(ri, &q, Some(revision), Some(after), STREAM_PAGE).await?;
    }
    let head = encoder.head(&json!({"resourceVersion": revision.to_string()}), items_len)?;
    let tail = encoder.tail()?;
    let content_type = Media::Protobuf.content_type(false);
    if let Some(items) = kept {
        let body = [head, items, tail].concat();
        return Ok(Some((StatusCode::OK, [(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()));
    }
    let body = send(registry, ri.clone(), q, shape, encoder, revision, items_len);
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) });
    let last = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(tail)) });
    let body = futures::StreamExt::chain(futures::StreamExt::chain(first, body), last);
    Ok(Some(
        (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, content_type)], Body::from_stream(body)).into_response(),
    ))
}

/// The second pass: the items again, at the same revision, checked against the first pass's
/// length (the body breaks rather than send a list its envelope does not describe).
fn send(
    registry: Arc<Registry>,
    ri: ResourceInfo,
    q: ListQuery,
    shape: Shape,
    encoder: ListEncoder,
    revision: Revision,
    items_len: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    async_stream::stream! {
        let mut sent = 0usize;
        let mut after = None;
        loop {
            let page: Page = match registry.list_page(&ri, &q, Some(revision), after.take(), STREAM_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, resource = ri.plural, "streamed protobuf list failed midway");
                    yield Err(std::io::Error::other(e.to_string()));
                    return;
                }
            };
            let mut out = Vec::new();
            for item in &page.items {
                match encoder.item(&shaped(item, shape)) {
                    Ok(bytes) => {
                        sent = sent.saturating_add(bytes.len());
                        out.extend_from_slice(&bytes);
                    }
                    Err(e) => {
                        yield Err(std::io::Error::other(e.to_string()));
                        return;
                    }
                }
            }
            if sent > items_len {
                yield Err(std::io::Error::other("the list grew between its two passes"));
                return;
            }
            yield Ok(Bytes::from(out));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        if sent != items_len {
            yield Err(std::io::Error::other("the list shrank between its two passes"));
        }
    }
}

/// An item as its list carries it: the object, or its metadata for a metadata-only list.
fn shaped(item: &Value, shape: Shape) -> std::borrow::Cow<'_, Value> {
    match shape {
        Shape::Metadata => std::borrow::Cow::Owned(respond::metadata_object(item)),
        _ => std::borrow::Cow::Borrowed(item),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::WriteOptions;
    use crate::controllers::runtime::testing;
    use k8s_rs_pb::api::core::v1::ConfigMapList;
    use k8s_rs_pb::apimachinery::pkg::runtime::Unknown;
    use protobuf::Message;

    async fn body(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX).await.map(|b| b.to_vec()).unwrap_or_default()
    }

    /// Three pages of ConfigMaps: streamed in two passes, or kept from the first, the body is the
    /// same list, every item once in key order, at one revision.
    #[tokio::test]
    async fn a_list_of_several_pages_is_the_same_streamed_or_kept() {
        let (_dir, registry) = testing::registry().await;
        let ri = registry.resource("", "ConfigMap").unwrap_or_else(|e| panic!("{e}"));
        let n = STREAM_PAGE * 2 + 100;
        for i in 0..n {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": format!("cm-{i:05}"), "namespace": "default"}, "data": {"i": i.to_string()}});
            registry.create(ri, Some("default"), cm, &WriteOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let query = || ListQuery { namespace: Some("default".into()), ..Default::default() };
        let list = |keep| stream_keeping(Arc::clone(&registry), ri, query(), Shape::Object, keep);
        let streamed = body(list(0).await.unwrap_or_else(|e| panic!("{e}")).expect("a protobuf list")).await;
        let kept = body(list(KEEP_BYTES).await.unwrap_or_else(|e| panic!("{e}")).expect("a protobuf list")).await;
        assert_eq!(streamed, kept);
        let unknown = Unknown::parse_from_bytes(streamed.strip_prefix(b"k8s\0").expect("magic")).expect("an Unknown");
        let list = ConfigMapList::parse_from_bytes(unknown.raw()).expect("a ConfigMapList");
        let names: Vec<&str> = list.items.iter().map(|c| c.metadata.name()).collect();
        let want: Vec<String> = (0..n).map(|i| format!("cm-{i:05}")).collect();
        assert_eq!(names, want);
        assert!(list.metadata.resourceVersion().parse::<i64>().is_ok_and(|rv| rv > 0));
        // A Table has no streamed protobuf form: the caller builds it whole.
        assert!(stream(Arc::clone(&registry), ri, query(), Shape::Table).await.is_ok_and(|r| r.is_none()));
    }
}
