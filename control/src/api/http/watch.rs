//! Watch streams: one JSON event per line, or one length-prefixed protobuf `WatchEvent` frame
//! ([`super::protobuf::encode::watch_frame`]), flushed per event, over chunked HTTP/1.1 or HTTP/2.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::api::watch_cache::RecvError;
use bytes::Bytes;
use futures::Stream;
use serde_json::{json, Value};

use super::handlers::STREAM_PAGE;
use super::negotiate::Media;
use super::protobuf::encode;
use super::respond::{self, Shape};
use crate::api::error::ApiError;
use crate::api::registry::{ListQuery, Registry};
use crate::api::resources::ResourceInfo;
use crate::api::watch_cache::{watch_line, CachedEvent, LineFormat};
use crate::store::Revision;

/// Where a watch starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// Synthetic ADDED events for the current state first (no `resourceVersion`, or `0`, or
    /// `sendInitialEvents=true`).
    InitialState,
    /// Only changes after this revision.
    After(Revision),
}

/// Everything one watch needs, owned by its stream.
pub struct WatchRequest {
    pub resource: ResourceInfo,
    pub query: ListQuery,
    pub start: Start,
    pub bookmarks: bool,
    /// Send the `k8s.io/initial-events-end` bookmark after the initial state.
    pub initial_events_end: bool,
    pub timeout: Duration,
    pub shape: Shape,
    /// JSON lines or protobuf frames.
    pub media: Media,
    pub include_object: String,
    /// The open-watches gauge of this resource; counted while the stream lives.
    pub open_watches: prometheus_client::metrics::gauge::Gauge,
}

/// Decrements the open-watches gauge when the stream is dropped (client gone or timeout).
struct Counted(prometheus_client::metrics::gauge::Gauge);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The watch interval between bookmarks.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

/// One event in the watch's media type; `None` when the object has no protobuf form (logged:
/// the watch ends, and the client's next list says why).
fn event(w: &WatchRequest, kind: &str, object: &Value) -> Option<Bytes> {
    match w.media {
        Media::Json => Some(watch_line(kind, &super::protobuf::field_order::to_string(object))),
        Media::Protobuf => match encode::watch_frame(kind, object) {
            Ok(frame) => Some(Bytes::from(frame)),
            Err(e) => {
                tracing::warn!(error = %e, resource = w.resource.plural, "watch event has no protobuf form; closing the watch");
                None
            }
        },
    }
}

fn error_event(w: &WatchRequest, err: &ApiError) -> Option<Bytes> {
    match w.media {
        Media::Json => Some(watch_line("ERROR", &err.status_json())),
        Media::Protobuf => event(w, "ERROR", &err.status()),
    }
}

/// The type a watcher sees for a store event, given its selectors: moving into the selection
/// is ADDED, moving out is DELETED.
fn event_type(registry: &Registry, w: &WatchRequest, ev: &CachedEvent) -> Option<&'static str> {
    let now = registry.matches(&w.resource, &ev.object(), &w.query);
    if ev.deleted {
        return now.then_some("DELETED");
    }
    // Without selectors every event is in the selection: the previous state is not decoded.
    let before = ev.has_prev()
        && (!has_selectors(&w.query) || ev.prev_object().is_some_and(|p| registry.matches(&w.resource, &p, &w.query)));
    match (before, now) {
        (false, true) => Some("ADDED"),
        (true, true) => Some("MODIFIED"),
        (true, false) => Some("DELETED"),
        (false, false) => None,
    }
}

/// True when the watch selects by labels or fields (the namespace is the key prefix).
fn has_selectors(q: &ListQuery) -> bool {
    q.labels.is_some() || q.fields.is_some()
}

/// A cached event as the watcher asked for it: for watchers of whole objects the line made once
/// and shared, else the object (managed fields put back) in the watcher's shape.
fn encode_event(w: &WatchRequest, kind: &str, ev: &CachedEvent) -> Option<Bytes> {
    let converted = !w.resource.is_storage_version();
    match (w.media, w.shape) {
        (Media::Json, Shape::Object) if !converted => {
            ev.shared_line(LineFormat::Json, kind, || Some(watch_line(kind, &ev.object_json())))
        }
        (Media::Protobuf, Shape::Object) if !converted => {
            ev.shared_line(LineFormat::Protobuf, kind, || event(w, kind, &ev.full_object()))
        }
        _ => encode_object(w, kind, &ev.full_object()),
    }
}

fn encode_object(w: &WatchRequest, kind: &str, ev_object: &Value) -> Option<Bytes> {
    match w.shape {
        // An object read through a version other than its storage one.
        Shape::Object if !w.resource.is_storage_version() => {
            let mut obj = ev_object.clone();
            crate::api::conversion::to_version(&w.resource, &mut obj);
            event(w, kind, &obj)
        }
        Shape::Object => event(w, kind, ev_object),
        Shape::Metadata => event(w, kind, &respond::metadata_object(ev_object)),
        Shape::Table => {
            let rv = crate::api::object::resource_version(ev_object).unwrap_or("").to_string();
            let table = respond::table(
                &w.resource,
                std::slice::from_ref(ev_object),
                json!({"resourceVersion": rv}),
                &w.include_object,
            );
            event(w, kind, &table)
        }
    }
}

fn bookmark(w: &WatchRequest, revision: Revision, initial_end: bool) -> Option<Bytes> {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = match w.shape {
        Shape::Object => json!({"kind": w.resource.kind, "apiVersion": w.resource.api_version(), "metadata": meta}),
        Shape::Table => {
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": [], "rows": []})
        }
        Shape::Metadata => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}),
    };
    event(w, "BOOKMARK", &object)
}

/// The body of a watch response.
pub fn stream(registry: Arc<Registry>, w: WatchRequest) -> impl Stream<Item = Result<Bytes, Infallible>> {
    w.open_watches.inc();
    let counted = Counted(w.open_watches.clone());
    async_stream::stream! {
        let _counted = counted;
        let prefix = w.resource.namespace_prefix(w.query.namespace.as_deref());
        let (mut last, mut rx) = match w.start {
            Start::InitialState => {
                let (latest, rx) = registry.cache.subscribe_now();
                let query = clone_query(&w.query);
                // The initial state page by page at one revision: memory bounded by a page.
                let mut after = None;
                loop {
                    let page = registry.list_page(&w.resource, &query, Some(latest), after, STREAM_PAGE).await;
                    match page {
                        Ok(page) => {
                            for item in &page.items {
                                let Some(bytes) = encode_object(&w, "ADDED", item) else { return };
                                yield Ok(bytes);
                            }
                            after = page.next;
                            if after.is_none() {
                                break;
                            }
                        }
                        Err(err) => {
                            if let Some(bytes) = error_event(&w, &err) { yield Ok(bytes); }
                            return;
                        }
                    }
                }
                if w.initial_events_end {
                    let Some(bytes) = bookmark(&w, latest, true) else { return };
                    yield Ok(bytes);
                }
                (latest, rx)
            }
            // The events still in the ring after `after` come first from the reader itself.
            Start::After(after) => match registry.cache.subscribe_from(after) {
                Ok(rx) => (after, rx),
                Err(err) => {
                    if let Some(bytes) = error_event(&w, &err) { yield Ok(bytes); }
                    return;
                }
            },
        };
        let deadline = tokio::time::sleep(w.timeout);
        tokio::pin!(deadline);
        let mut ticks = tokio::time::interval(BOOKMARK_EVERY);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = ticks.tick(), if w.bookmarks => {
                    let Some(bytes) = bookmark(&w, last, false) else { return };
                    yield Ok(bytes);
                }
                received = rx.recv() => match received {
                    Ok(ev) => {
                        if ev.revision <= last { continue; }
                        last = ev.revision;
                        // A custom resource's watches end with its CRD.
                        if ev.deleted && crate::api::crd::serves(&ev.key, &w.resource) { return; }
                        if !ev.key.starts_with(&prefix) { continue; }
                        if let Some(kind) = event_type(&registry, &w, &ev) {
                            let Some(bytes) = encode_event(&w, kind, &ev) else { return };
                            yield Ok(bytes);
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, resource = w.resource.plural, "watcher fell behind; closing it");
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }
}

fn clone_query(q: &ListQuery) -> ListQuery {
    ListQuery {
        namespace: q.namespace.clone(),
        labels: q.labels.clone(),
        fields: q.fields.clone(),
        limit: None,
        continue_token: None,
        exact_revision: q.exact_revision,
    }
}
