//! Verbs on resources: get, list, watch, create, update, patch, delete, deletecollection and the
//! `status`, `scale`, `binding`, `eviction` and `ephemeralcontainers` subresources (`log` is in [`super::pod_logs`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::body::{self, PatchKind};
use super::negotiate::{Media, Negotiated};
use super::query::Query;
use super::respond::{self, Shape};
use super::target::Target;
use super::watch::{self, Start, WatchRequest};
use crate::api::error::{ApiError, ApiResult};
use crate::api::metrics::{Metrics, ResourceLabel};
use crate::api::object;
use crate::api::registry::{Binding, DeleteOptions, ListQuery, Listed, Registry, WriteOptions, Written};
use crate::api::resources::ResourceInfo;
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::patch;

/// Everything about one resource request.
pub struct Request<'a> {
    pub method: Method,
    pub target: Target<'a>,
    pub query: Query,
    pub headers: HeaderMap,
    /// Who asks (set by the authentication filter; `None` in handler tests).
    pub user: Option<crate::auth::UserInfo>,
    /// The media type and shape of the answer, from `Accept`.
    pub negotiated: Negotiated,
}

/// The Kubernetes verb of a request, for metrics and logs.
pub fn verb(method: &Method, target: &Target<'_>, query: &Query, headers: &HeaderMap) -> &'static str {
    let watch = query.flag("watch").unwrap_or(false);
    match (method.as_str(), target.name.is_some()) {
        ("GET", _) if watch => "WATCH",
        ("GET", true) => "GET",
        ("GET", false) => "LIST",
        ("POST", _) => "POST",
        ("PUT", _) => "PUT",
        ("PATCH", _) => {
            if target.subresource.is_none() && is_apply(headers) {
                "APPLY"
            } else {
                "PATCH"
            }
        }
        ("DELETE", true) => "DELETE",
        ("DELETE", false) => "DELETECOLLECTION",
        _ => "OTHER",
    }
}

fn is_apply(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|c| c.starts_with("application/apply-patch"))
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

/// Serves one resource request.
pub async fn serve(registry: Arc<Registry>, metrics: &Metrics, req: Request<'_>, body: Body) -> ApiResult<Response> {
    let ri = req.target.resource;
    let ns = req.target.namespace.clone();
    let n = req.negotiated;
    match (req.target.name.clone(), req.target.subresource.clone()) {
        (None, _) => match req.method {
            Method::GET if req.query.flag("watch")? => watch(registry, metrics, &req),
            Method::GET => list(registry, &req).await,
            // As kube-apiserver: the cluster-wide path of a namespaced resource serves only list
            // and watch; a write there would be stored under a key no namespaced request reaches.
            _ if ri.namespaced && ns.is_none() => Err(ApiError::MethodNotAllowed),
            Method::POST => create(&registry, ri, ns.as_deref(), req, body).await,
            Method::DELETE => delete_collection(&registry, &req).await,
            _ => Err(ApiError::MethodNotAllowed),
        },
        (Some(name), None) => match req.method {
            Method::GET if req.query.flag("watch")? => watch(registry, metrics, &req),
            Method::GET => {
                let obj = registry.get(ri, ns.as_deref(), &name).await?;
                Ok(respond::send(
                    n,
                    StatusCode::OK,
                    &respond::single(ri, obj, n.shape, include_object(&req.query)),
                    &[],
                ))
            }
            Method::PUT => update(&registry, ri, ns.as_deref(), &name, None, req, body).await,
            Method::PATCH => patch_object(&registry, ri, ns.as_deref(), &name, None, req, body).await,
            Method::DELETE => delete(&registry, ri, ns.as_deref(), &name, req, body).await,
            _ => Err(ApiError::MethodNotAllowed),
        },
        (Some(name), Some(sub)) => match (sub.as_str(), req.method.clone()) {
            ("status", Method::GET) => {
                Ok(respond::send(n, StatusCode::OK, &registry.get(ri, ns.as_deref(), &name).await?, &[]))
            }
            ("status", Method::PUT) => update(&registry, ri, ns.as_deref(), &name, Some("status"), req, body).await,
            ("status", Method::PATCH) => {
                patch_object(&registry, ri, ns.as_deref(), &name, Some("status"), req, body).await
            }
            ("approval", Method::GET) => {
                Ok(respond::send(n, StatusCode::OK, &registry.get(ri, ns.as_deref(), &name).await?, &[]))
            }
            ("approval", Method::PUT) => update(&registry, ri, ns.as_deref(), &name, Some("approval"), req, body).await,
            ("approval", Method::PATCH) => {
                patch_object(&registry, ri, ns.as_deref(), &name, Some("approval"), req, body).await
            }
            ("ephemeralcontainers", Method::GET) => {
                Ok(respond::send(n, StatusCode::OK, &registry.get(ri, ns.as_deref(), &name).await?, &[]))
            }
            ("ephemeralcontainers", Method::PUT) => {
                update(&registry, ri, ns.as_deref(), &name, Some("ephemeralcontainers"), req, body).await
            }
            ("ephemeralcontainers", Method::PATCH) => {
                patch_object(&registry, ri, ns.as_deref(), &name, Some("ephemeralcontainers"), req, body).await
            }
            ("finalize", Method::PUT) => update(&registry, ri, ns.as_deref(), &name, None, req, body).await,
            ("scale", Method::GET) => {
                let obj = registry.get(ri, ns.as_deref(), &name).await?;
                Ok(respond::send(n, StatusCode::OK, &scale_view(ri, &obj), &[]))
            }
            ("scale", Method::PUT | Method::PATCH) => scale(&registry, ri, ns.as_deref(), &name, req, body).await,
            ("binding", Method::POST) => bind(&registry, ri, ns.as_deref(), &name, req, body).await,
            ("eviction", Method::POST) => evict(&registry, ri, ns.as_deref(), &name, req, body).await,
            _ => Err(ApiError::MethodNotAllowed),
        },
    }
}

fn include_object(query: &Query) -> &str {
    query.get("includeObject").unwrap_or("Metadata")
}

fn write_options(req: &Request<'_>) -> ApiResult<WriteOptions> {
    Ok(WriteOptions {
        dry_run: req.query.dry_run()?,
        // Kubernetes names an unnamed manager after the client's user agent.
        field_manager: req.query.get("fieldManager").map(String::from).or_else(|| {
            let agent = req.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown");
            Some(agent.split('/').next().unwrap_or("unknown").to_string())
        }),
        field_validation: req.query.field_validation()?,
        user: req.user.clone(),
    })
}

/// Parses `labelSelector`, `fieldSelector`, `limit` and `continue` for a list or watch.
pub fn list_query(ri: &ResourceInfo, namespace: Option<String>, query: &Query) -> ApiResult<ListQuery> {
    let labels = query
        .get("labelSelector")
        .map(LabelSelector::parse)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let fields = query
        .get("fieldSelector")
        .map(|s| {
            let parsed =
                FieldSelector::parse(s).map_err(|e| ApiError::BadRequest(format!("invalid field selector: {e}")))?;
            for field in parsed.fields() {
                let supported = match &ri.custom {
                    Some(custom) => custom.selects(field),
                    None => crate::api::selector::is_supported(ri.kind, field),
                };
                if !supported {
                    return Err(ApiError::BadRequest(format!("field label not supported: {field}")));
                }
            }
            Ok(parsed)
        })
        .transpose()?;
    let limit = query.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    let exact_revision = match (query.get("resourceVersionMatch"), query.get("resourceVersion")) {
        (Some("Exact"), Some(rv)) => {
            Some(rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resource version: {rv:?}")))?)
        }
        (Some("Exact" | "NotOlderThan"), None) => {
            return Err(ApiError::BadRequest(
                "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            ))
        }
        (Some("NotOlderThan") | None, _) => None,
        (Some(other), _) => {
            return Err(ApiError::BadRequest(format!("resourceVersionMatch: Unsupported value: \"{other}\"")))
        }
    };
    Ok(ListQuery {
        namespace,
        labels,
        fields,
        limit,
        continue_token: query.get("continue").map(String::from),
        exact_revision,
    })
}

/// Store objects read per page of a streamed (unpaginated) list.
pub const STREAM_PAGE: usize = 500;

async fn list(registry: Arc<Registry>, req: &Request<'_>) -> ApiResult<Response> {
    let ri = req.target.resource;
    let q = list_query(ri, req.target.namespace.clone(), &req.query)?;
    let n = req.negotiated;
    let shape = n.shape;
    let include = include_object(&req.query).to_string();
    // A page (at most `limit` items) is built whole.
    if q.limit.is_some() || q.continue_token.is_some() {
        let listed = registry.list(ri, &q).await?;
        return Ok(respond::send(n, StatusCode::OK, &respond::list(ri, listed, shape, &include), &[]));
    }
    // A protobuf list is streamed in two passes (its envelope's lengths come before its items);
    // one without a protobuf form (an item that does not fit its message) is answered in JSON
    // below, as `respond::send` answers an object without one.
    if n.media == Media::Protobuf {
        let streamed = list_query(ri, req.target.namespace.clone(), &req.query)?;
        if let Some(response) = super::protobuf_list::stream(Arc::clone(&registry), ri, streamed, shape).await? {
            return Ok(response);
        }
    }
    // The whole collection: streamed page by page at the first page's revision, so memory stays
    // bounded by a page whatever the size of the list. The first page is read before answering,
    // so a request error is still a proper status.
    let first = registry.list_page(ri, &q, q.exact_revision, None, STREAM_PAGE).await?;
    let ri = ri.clone();
    let body = async_stream::stream! {
        let mut first_item = true;
        let mut out = respond::list_opening(&ri, first.revision, shape).into_bytes();
        respond::list_items(&ri, &first.items, shape, &include, &mut first_item, &mut out);
        let (revision, mut next) = (first.revision, first.next);
        drop(first.items);
        yield Ok::<_, std::io::Error>(bytes::Bytes::from(std::mem::take(&mut out)));
        while let Some(after) = next.take() {
            match registry.list_page(&ri, &q, Some(revision), Some(after), STREAM_PAGE).await {
                Ok(page) => {
                    respond::list_items(&ri, &page.items, shape, &include, &mut first_item, &mut out);
                    next = page.next;
                    yield Ok(bytes::Bytes::from(std::mem::take(&mut out)));
                }
                Err(e) => {
                    // The status line is sent: the only honest signal left is a broken body.
                    tracing::warn!(error = %e, resource = ri.plural, "streamed list failed midway");
                    yield Err(std::io::Error::other(e.to_string()));
                    return;
                }
            }
        }
        yield Ok(bytes::Bytes::from_static(respond::LIST_CLOSING.as_bytes()));
    };
    Ok((StatusCode::OK, [(http::header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response())
}

fn watch(registry: Arc<Registry>, metrics: &Metrics, req: &Request<'_>) -> ApiResult<Response> {
    let ri = req.target.resource;
    let mut q = list_query(ri, req.target.namespace.clone(), &req.query)?;
    if let Some(name) = &req.target.name {
        let combined = match req.query.get("fieldSelector") {
            Some(existing) => format!("{existing},metadata.name={name}"),
            None => format!("metadata.name={name}"),
        };
        q.fields = Some(FieldSelector::parse(&combined).map_err(|e| ApiError::BadRequest(e.to_string()))?);
    }
    let send_initial = req.query.flag("sendInitialEvents")?;
    let rv = req.query.get("resourceVersion");
    let start = match rv {
        _ if send_initial => Start::InitialState,
        None | Some("0") => Start::InitialState,
        Some(rv) => {
            Start::After(rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resource version: {rv:?}")))?)
        }
    };
    let bookmarks = req.query.flag("allowWatchBookmarks")?;
    let timeout = req
        .query
        .int("timeoutSeconds")?
        .filter(|t| *t > 0)
        .map(|t| t as u64)
        .unwrap_or(1800 + rand::random::<u64>() % 1800);
    let w = WatchRequest {
        resource: ri.clone(),
        query: q,
        start,
        bookmarks,
        initial_events_end: send_initial && bookmarks,
        timeout: Duration::from_secs(timeout),
        shape: req.negotiated.shape,
        media: req.negotiated.media,
        include_object: include_object(&req.query).to_string(),
        open_watches: metrics.watches.get_or_create(&ResourceLabel { resource: ri.plural.to_string() }).clone(),
    };
    let content_type = w.media.content_type(true);
    let body = Body::from_stream(watch::stream(registry, w));
    Ok((StatusCode::OK, [(http::header::CONTENT_TYPE, content_type), (http::header::CACHE_CONTROL, "no-cache")], body)
        .into_response())
}

async fn read_object(headers: &HeaderMap, body: Body) -> ApiResult<Value> {
    let bytes = body::read(body).await?;
    body::decode(&bytes, content_type(headers))
}

/// The answer to a write: the object, or its metadata when the client asked for
/// `PartialObjectMetadata` (a Table is only ever an answer to reads).
fn written(status_created: bool, w: Written, n: Negotiated) -> Response {
    let code = if status_created { StatusCode::CREATED } else { StatusCode::OK };
    match n.shape {
        Shape::Metadata => respond::send(n, code, &respond::metadata_object(&w.object), &w.warnings),
        Shape::Object | Shape::Table => respond::send(n, code, &w.object, &w.warnings),
    }
}

async fn create(
    registry: &Registry,
    ri: &ResourceInfo,
    ns: Option<&str>,
    req: Request<'_>,
    body: Body,
) -> ApiResult<Response> {
    let opts = write_options(&req)?;
    let negotiated = req.negotiated;
    let mut obj = read_object(&req.headers, body).await?;
    if ri.group == "certificates.k8s.io" && ri.kind == "CertificateSigningRequest" {
        record_requester(&mut obj, req.user.as_ref());
    }
    let w = registry.create(ri, ns, obj, &opts).await?;
    Ok(written(true, w, negotiated))
}

/// A CertificateSigningRequest records who made it (`spec.username`, `uid`, `groups`, `extra`),
/// whatever the client sent there, as kube-apiserver does: approvers decide on it.
fn record_requester(csr: &mut serde_json::Value, user: Option<&crate::auth::UserInfo>) {
    let Some(spec) = csr.get_mut("spec").and_then(serde_json::Value::as_object_mut) else { return };
    for field in ["username", "uid", "groups", "extra"] {
        spec.remove(field);
    }
    if let Some(user) = user {
        spec.insert("username".into(), serde_json::json!(user.name));
        if !user.uid.is_empty() {
            spec.insert("uid".into(), serde_json::json!(user.uid));
        }
        spec.insert("groups".into(), serde_json::json!(user.groups));
        if !user.extra.is_empty() {
            spec.insert("extra".into(), serde_json::json!(user.extra));
        }
    }
}

async fn update(
    registry: &Registry,
    ri: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    req: Request<'_>,
    body: Body,
) -> ApiResult<Response> {
    let opts = write_options(&req)?;
    let negotiated = req.negotiated;
    let obj = read_object(&req.headers, body).await?;
    let w = registry.update_with(ri, ns, name, sub, &opts, |_| Ok(obj.clone())).await?;
    Ok(written(false, w, negotiated))
}

async fn patch_object(
    registry: &Registry,
    ri: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    req: Request<'_>,
    body: Body,
) -> ApiResult<Response> {
    let kind = PatchKind::from_content_type(content_type(&req.headers))?;
    let negotiated = req.negotiated;
    let mut opts = write_options(&req)?;
    let force = req.query.flag("force")?;
    let ct = content_type(&req.headers).map(String::from);
    let bytes = body::read(body).await?;
    let patch_body = body::decode(&bytes, ct.as_deref())?;
    if kind == PatchKind::Apply {
        let manager = opts.field_manager.take().ok_or_else(|| {
            ApiError::BadRequest(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
                    .into(),
            )
        })?;
        return apply(registry, ri, ns, name, patch_body, &manager, force, &opts, negotiated).await;
    }
    let w =
        registry.update_with(ri, ns, name, sub, &opts, |current| apply_patch(ri, kind, current, &patch_body)).await?;
    Ok(written(false, w, negotiated))
}

/// Applies a JSON, merge or strategic merge patch to an object.
pub fn apply_patch(ri: &ResourceInfo, kind: PatchKind, current: &Value, patch_body: &Value) -> ApiResult<Value> {
    let unprocessable = |msg: String| ApiError::invalid(ri.kind, object::name(current), vec![("patch".into(), msg)]);
    if kind == PatchKind::Strategic && ri.custom.is_some() {
        // Custom resources have no patch strategies: as kube-apiserver, 415.
        return Err(ApiError::UnsupportedMediaType(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
        ));
    }
    let mut next = current.clone();
    match kind {
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch_body.clone())
                .map_err(|e| ApiError::BadRequest(format!("the JSON patch is malformed: {e}")))?;
            // On a copy that a failure discards: `json_patch::patch` would undo the applied
            // operations instead, and panics when the undo fails (copy then move onto a new path).
            json_patch::patch_unsafe(&mut next, &ops).map_err(|e| unprocessable(e.to_string()))?;
        }
        PatchKind::Merge => {
            if !patch_body.is_object() {
                return Err(ApiError::BadRequest("a merge patch must be a JSON object".into()));
            }
            json_patch::merge(&mut next, patch_body);
        }
        PatchKind::Strategic => {
            if !patch_body.is_object() {
                return Err(ApiError::BadRequest("a strategic merge patch must be a JSON object".into()));
            }
            next = patch::strategic::strategic_merge(ri.kind, current, patch_body)
                .map_err(|e| unprocessable(e.to_string()))?;
        }
        PatchKind::Apply => return Err(ApiError::Internal("apply patches are served by apply()".into())),
    }
    // A patch that does not name a resourceVersion must not trip the concurrency check.
    if patch_body.pointer("/metadata/resourceVersion").is_none() {
        if let Some(rv) = object::resource_version(current).map(String::from) {
            object::meta_mut(&mut next).insert("resourceVersion".into(), json!(rv));
        }
    }
    Ok(next)
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    registry: &Registry,
    ri: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    applied: Value,
    manager: &str,
    force: bool,
    opts: &WriteOptions,
    negotiated: Negotiated,
) -> ApiResult<Response> {
    let now = object::now_rfc3339();
    let apply_error = |e: patch::apply::ApplyError| match e {
        patch::apply::ApplyError::Conflicts(_) => ApiError::ApplyConflict(e.to_string()),
        other => ApiError::BadRequest(other.to_string()),
    };
    let applied_name = object::name(&applied);
    if !applied_name.is_empty() && applied_name != name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({applied_name}) does not match the name on the URL ({name})"
        )));
    }
    let opts_plain = WriteOptions { field_manager: None, ..opts.clone() };
    match registry.get(ri, ns, name).await {
        Err(ApiError::NotFound { .. }) => {
            let mut created =
                patch::apply::apply(ri.kind, None, &applied, manager, force, &now).map_err(apply_error)?;
            object::meta_mut(&mut created).insert("name".into(), json!(name));
            let w = registry.create(ri, ns, created, &opts_plain).await?;
            Ok(written(true, w, negotiated))
        }
        Err(e) => Err(e),
        Ok(_) => {
            let w = registry
                .update_with(ri, ns, name, None, &opts_plain, |current| {
                    let mut next = patch::apply::apply(ri.kind, Some(current), &applied, manager, force, &now)
                        .map_err(apply_error)?;
                    if let Some(rv) = object::resource_version(current).map(String::from) {
                        object::meta_mut(&mut next).insert("resourceVersion".into(), json!(rv));
                    }
                    Ok(next)
                })
                .await?;
            Ok(written(false, w, negotiated))
        }
    }
}

fn delete_options(req_query: &Query, body: Option<&Value>) -> ApiResult<DeleteOptions> {
    let body = body.cloned().unwrap_or(Value::Null);
    let grace = match body.get("gracePeriodSeconds") {
        None | Some(Value::Null) => req_query.int("gracePeriodSeconds")?,
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            ApiError::BadRequest(format!("gracePeriodSeconds: invalid value {v}: must be a 64-bit integer"))
        })?),
    };
    let dry_run = body.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "All"))
        || req_query.dry_run()?;
    let policy = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| req_query.get("propagationPolicy").map(String::from))
        .or_else(|| {
            match body
                .get("orphanDependents")
                .and_then(Value::as_bool)
                .or(req_query.flag("orphanDependents").ok().filter(|b| *b))
            {
                Some(true) => Some("Orphan".into()),
                _ => None,
            }
        });
    if let Some(p) = &policy {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::BadRequest(format!("propagationPolicy: Unsupported value: \"{p}\"")));
        }
    }
    Ok(DeleteOptions {
        grace_period_seconds: grace,
        precondition_uid: body.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from),
        precondition_resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        propagation_policy: policy,
        dry_run,
        user: None,
    })
}

async fn delete_body(req: Request<'_>, body: Body) -> ApiResult<(Query, Option<Value>)> {
    let ct = content_type(&req.headers).map(String::from);
    let bytes = body::read(body).await?;
    let value =
        if bytes.iter().all(u8::is_ascii_whitespace) { None } else { Some(body::decode(&bytes, ct.as_deref())?) };
    Ok((req.query, value))
}

async fn delete(
    registry: &Registry,
    ri: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    req: Request<'_>,
    body: Body,
) -> ApiResult<Response> {
    let user = req.user.clone();
    let n = req.negotiated;
    let (query, body) = delete_body(req, body).await?;
    let opts = DeleteOptions { user, ..delete_options(&query, body.as_ref())? };
    let (obj, gone) = registry.delete(ri, ns, name, &opts).await?;
    let code = if gone { StatusCode::OK } else { StatusCode::ACCEPTED };
    let code = if ri.kind == "Pod" || gone { StatusCode::OK } else { code };
    if gone && !ri.returns_deleted_object {
        return Ok(respond::send(n, code, &deleted_status(ri, &obj), &[]));
    }
    Ok(respond::send(n, code, &obj, &[]))
}

/// The `Status` kube-apiserver answers a delete that removed the object with.
fn deleted_status(ri: &ResourceInfo, obj: &Value) -> Value {
    let mut details = json!({"name": object::name(obj), "kind": ri.plural});
    if !ri.group.is_empty() {
        details["group"] = json!(ri.group);
    }
    if let Some(uid) = object::str_at(obj, &["metadata", "uid"]) {
        details["uid"] = json!(uid);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

async fn delete_collection(registry: &Registry, req: &Request<'_>) -> ApiResult<Response> {
    let ri = req.target.resource;
    let q = list_query(ri, req.target.namespace.clone(), &req.query)?;
    let listed = registry.list(ri, &q).await?;
    let opts = DeleteOptions { user: req.user.clone(), ..delete_options(&req.query, None)? };
    let mut deleted = Vec::new();
    for item in listed.items {
        let name = object::name(&item).to_string();
        match registry.delete(ri, object::namespace(&item), &name, &opts).await {
            Ok((obj, _)) => deleted.push(obj),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let listed = Listed { items: deleted, revision: listed.revision, continue_token: None };
    let list = respond::list(ri, listed, respond::Shape::Object, "");
    Ok(respond::send(req.negotiated, StatusCode::OK, &list, &[]))
}

/// The `autoscaling/v1 Scale` view of an object (a custom one's from its CRD's scale paths).
fn scale_view(ri: &ResourceInfo, obj: &Value) -> Value {
    match ri.custom.as_ref().and_then(|c| c.scale.as_ref()) {
        Some(paths) => crate::api::crd::to_scale(paths, obj),
        None => to_scale(obj),
    }
}

/// The `autoscaling/v1 Scale` view of a workload.
fn to_scale(obj: &Value) -> Value {
    let meta = object::meta(obj);
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| crate::api::selector::from_label_selector(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0))},
    });
    // `selector` is `omitempty` in Go's Scale: no selector, no key.
    if !selector.is_empty() {
        scale["status"]["selector"] = json!(selector);
    }
    scale
}

async fn scale(
    registry: &Registry,
    ri: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    req: Request<'_>,
    body: Body,
) -> ApiResult<Response> {
    let n = req.negotiated;
    let is_patch = req.method == Method::PATCH;
    let kind = if is_patch { Some(PatchKind::from_content_type(content_type(&req.headers))?) } else { None };
    let opts = write_options(&req)?;
    let ct = content_type(&req.headers).map(String::from);
    let bytes = body::read(body).await?;
    let input = body::decode(&bytes, ct.as_deref())?;
    let scale_ri = ri.clone();
    let w = registry
        .update_with(ri, ns, name, None, &opts, |current| {
            let scale = scale_view(&scale_ri, current);
            let desired_scale = match kind {
                Some(PatchKind::Apply) => {
                    return Err(ApiError::UnsupportedMediaType("apply is not supported on scale".into()))
                }
                Some(PatchKind::Strategic) => {
                    let mut s = scale.clone();
                    json_patch::merge(&mut s, &input);
                    s
                }
                Some(k) => apply_patch(&scale_ri, k, &scale, &input)?,
                None => input.clone(),
            };
            let replicas = desired_scale.pointer("/spec/replicas").and_then(Value::as_i64).ok_or_else(|| {
                ApiError::invalid("Scale", name, vec![("spec.replicas".into(), "Required value".into())])
            })?;
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "Scale",
                    name,
                    vec![(
                        "spec.replicas".into(),
                        format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                    )],
                ));
            }
            let mut next = current.clone();
            match scale_ri.custom.as_ref().and_then(|c| c.scale.as_ref()) {
                Some(paths) => crate::api::crd::set_path(&mut next, &paths.spec_replicas, json!(replicas)),
                None => {
                    if let Some(spec) = next.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert("replicas".into(), json!(replicas));
                    }
                }
            }
            if let Some(rv) = desired_scale.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                object::meta_mut(&mut next).insert("resourceVersion".into(), json!(rv));
            }
            Ok(next)
        })
        .await?;
    Ok(respond::send(n, StatusCode::OK, &scale_view(ri, &w.object), &w.warnings))
}

/// `POST .../pods/NAME/eviction`: the Eviction's `deleteOptions` (and the query's `dryRun`)
/// become the delete's options; [`crate::api::eviction`] decides.
async fn evict(
    registry: &Registry,
    ri: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    req: Request<'_>,
    body: Body,
) -> ApiResult<Response> {
    let n = req.negotiated;
    let eviction = read_object(&req.headers, body).await?;
    let delete_body = eviction.get("deleteOptions").filter(|v| v.is_object());
    let opts = DeleteOptions { user: req.user.clone(), ..delete_options(&req.query, delete_body)? };
    let evicted = crate::api::eviction::evict(registry, ri, ns, name, &eviction, opts).await?;
    let code = StatusCode::from_u16(evicted.code).unwrap_or(StatusCode::CREATED);
    Ok(respond::send(n, code, &evicted.status, &[]))
}

async fn bind(
    registry: &Registry,
    ri: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    req: Request<'_>,
    body: Body,
) -> ApiResult<Response> {
    let opts = write_options(&req)?;
    let binding = read_object(&req.headers, body).await?;
    let node = object::str_at(&binding, &["target", "name"])
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid("Binding", name, vec![("target.name".into(), "Required value".into())]))?;
    let annotations = binding.pointer("/metadata/annotations").and_then(Value::as_object);
    registry.bind_pod(ri, ns, name, &Binding { node, annotations }, &opts).await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(respond::send(req.negotiated, StatusCode::CREATED, &status, &[]))
}
