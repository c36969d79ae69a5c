//! The HTTP face of the API: routing, discovery, OpenAPI, health, metrics and resource verbs.

pub mod body;
pub mod component_status;
pub mod handlers;
pub mod inflight;
pub mod metrics_api;
pub mod negotiate;
pub mod node_proxy;
pub mod openapi;
pub mod pod_logs;
pub mod pod_stream;
pub mod protobuf;
pub mod protobuf_list;
pub mod query;
pub mod respond;
pub mod target;
pub mod watch;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::{json, Value};

use super::aggregation;
use super::discovery;
use super::error::ApiError;
use super::metrics::Metrics;
use super::registry::Registry;
use query::Query;
use respond::json_response;
use target::Route;

/// Kubernetes version reported by `/version`: kubectl's dispatcher picks its binary by `minor`.
pub const KUBERNETES_MINOR: &str = "32";

/// Shared state of every request handler.
#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// `host:port` clients reach this server on, for the legacy `/api` document.
    pub advertise: String,
    /// How `pods/log` reaches kubelets.
    pub kubelet: Arc<pod_logs::KubeletClient>,
    /// The supervised controllers, for `/readyz` and `/metrics`.
    pub controllers: Arc<crate::controllers::runtime::Supervisor>,
    /// The kubelets' summaries behind `metrics.k8s.io` ([`metrics_api`]).
    pub resource_metrics: Arc<metrics_api::scrape::Scraper>,
    /// The OpenAPI documents built so far (none until a client asks).
    pub openapi: Arc<crate::api::openapi::Cache>,
}

/// The API router (authentication is layered on by the server).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::v3_index))
        .route("/openapi/v3/{*path}", get(openapi::v3_document))
        .route("/api", get(api_root))
        .route("/api/", get(api_root))
        .route("/apis", get(apis_root))
        .route("/apis/", get(apis_root))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/exec", any(pod_stream::exec))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/attach", any(pod_stream::attach))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/portforward", any(pod_stream::portforward))
        .route("/api/v1/nodes/{name}/proxy", any(node_proxy::root))
        .route("/api/v1/nodes/{name}/proxy/{*path}", any(node_proxy::path))
        .route("/apis/metrics.k8s.io", get(metrics_api::group))
        .route("/apis/metrics.k8s.io/v1beta1", get(metrics_api::resources))
        .route("/apis/metrics.k8s.io/v1beta1/nodes", get(metrics_api::list_nodes))
        .route("/apis/metrics.k8s.io/v1beta1/nodes/{name}", get(metrics_api::get_node))
        .route("/apis/metrics.k8s.io/v1beta1/pods", get(metrics_api::list_all_pods))
        .route("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods", get(metrics_api::list_pods))
        .route("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}", get(metrics_api::get_pod))
        .route("/api/{*rest}", any(legacy_resource))
        .route("/apis/{*rest}", any(group_resource))
        .fallback(|| async { ApiError::NoSuchResource.into_response() })
        .layer(axum::middleware::from_fn_with_state(Arc::new(inflight::Inflight::default()), inflight::limit))
        .with_state(state)
}

async fn version() -> Response {
    let body = json!({
        "major": "1", "minor": KUBERNETES_MINOR, "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-skiff"),
        "gitCommit": env!("CARGO_PKG_VERSION"), "gitTreeState": "clean", "buildDate": "2026-11-23T00:00:00Z",
        "goVersion": "rust", "compiler": "rustc", "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    });
    json_response(StatusCode::OK, &body, &[])
}

async fn health() -> &'static str {
    "ok"
}

/// `/readyz`: `ok`, or with `?verbose` a line per supervised controller (`[+]controller-x ok`);
/// 500 while a controller waits to be restarted.
async fn readyz(State(state): State<ApiState>, uri: Uri) -> Response {
    let (ok, checks) = state.controllers.readyz();
    let verbose = uri.query().is_some_and(|q| q.split('&').any(|p| p == "verbose" || p.starts_with("verbose=")));
    let status = if ok { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    let body = match (verbose || !ok, ok) {
        (false, _) => "ok".to_string(),
        (true, true) => format!("[+]ping ok\n{checks}readyz check passed\n"),
        (true, false) => format!("[+]ping ok\n{checks}readyz check failed\n"),
    };
    (status, body).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let mut extra = crate::api::http::store_metrics(&state.registry).await;
    extra.push_str(&state.controllers.render_metrics());
    (StatusCode::OK, [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(&extra))
        .into_response()
}

async fn store_metrics(registry: &Registry) -> String {
    let revision = registry.store.current_revision().await.unwrap_or(0);
    let cached = registry.cache.latest();
    format!(
        "# HELP skiff_store_revision Current store revision.\n# TYPE skiff_store_revision gauge\nskiff_store_revision {revision}\n\
         # HELP skiff_watch_cache_revision Newest revision in the watch cache.\n# TYPE skiff_watch_cache_revision gauge\nskiff_watch_cache_revision {cached}\n"
    )
}

fn accept(headers: &HeaderMap) -> &str {
    headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn discovery_response(body: Value) -> Response {
    (StatusCode::OK, [(http::header::CONTENT_TYPE, discovery::AGGREGATED_CONTENT_TYPE)], body.to_string())
        .into_response()
}

async fn api_root(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if discovery::wants_aggregated(accept(&headers)) {
        return discovery_response(discovery::aggregated(&state.registry.served(), true));
    }
    json_response(StatusCode::OK, &discovery::api_versions(&state.advertise), &[])
}

async fn apis_root(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if discovery::wants_aggregated(accept(&headers)) {
        let served = state.registry.served();
        let mut doc = discovery::aggregated(&served, false);
        if let Some(items) = doc["items"].as_array_mut() {
            items.push(metrics_api::aggregated_entry());
            items.extend(aggregation::discovery::aggregated_items(&state.registry.aggregator.remotes(), &served));
        }
        return discovery_response(doc);
    }
    let served = state.registry.served();
    let mut doc = discovery::api_group_list(&served);
    if let Some(groups) = doc["groups"].as_array_mut() {
        groups.push(metrics_api::group_entry());
        let remotes = state.registry.aggregator.remotes();
        for (group, versions) in aggregation::discovery::groups(&remotes, &served) {
            groups.push(aggregation::discovery::group_entry(group, &versions));
        }
    }
    json_response(StatusCode::OK, &doc, &[])
}

async fn legacy_resource(
    state: State<ApiState>,
    path: Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    user: Option<axum::Extension<crate::auth::UserInfo>>,
    body: Body,
) -> Response {
    send(resource(state, true, path, method, uri, headers, user.map(|u| u.0), body)).await
}

async fn group_resource(
    state: State<ApiState>,
    path: Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    user: Option<axum::Extension<crate::auth::UserInfo>>,
    body: Body,
) -> Response {
    send(resource(state, false, path, method, uri, headers, user.map(|u| u.0), body)).await
}

/// The remote APIService `/apis/<group>/<version>/...` belongs to, unless the server serves
/// that group-version itself.
fn remote_of(
    registry: &Registry,
    served: &super::resources::Resources,
    rest: &str,
) -> Option<super::aggregation::Remote> {
    let mut segs = rest.split('/').filter(|s| !s.is_empty());
    let (group, version) = (segs.next()?, segs.next()?);
    if served.iter().any(|r| r.group == group && r.version == version) {
        return None;
    }
    registry.aggregator.find(group, version)
}

/// Pins the future's `Send`-ness where rustc cannot prove it through the handler trait's
/// higher-ranked bounds (the request borrows the resource table across awaits).
fn send<F: std::future::Future + Send>(f: F) -> F {
    f
}

#[allow(clippy::too_many_arguments)] // axum extractors, one per part of the request
async fn resource(
    State(state): State<ApiState>,
    legacy: bool,
    Path(rest): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    user: Option<crate::auth::UserInfo>,
    body: Body,
) -> Response {
    let started = Instant::now();
    // A write's body is read before anything can answer: an error answered with the body unread
    // ends an HTTP/2 stream with RST_STREAM while the client is still sending, and some clients
    // (curl) then drop the answer. Bodies are small (`MAX_BODY`), and every write reads its own anyway.
    let body = if matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        match body::read(body).await {
            Ok(bytes) => Body::from(bytes),
            Err(e) => return e.into_response(),
        }
    } else {
        body
    };
    let registry = Arc::clone(&state.registry);
    // One snapshot of the served resources (custom ones come and go with their CRDs).
    let served = registry.served();
    if let Some(remote) = (!legacy).then(|| remote_of(&registry, &served, &rest)).flatten() {
        let started = Instant::now();
        let response = match &remote.available {
            Err(why) => ApiError::ServiceUnavailable(format!("service unavailable: {why}")).into_response(),
            Ok(()) => {
                let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
                let user = user.as_ref();
                aggregation::proxy::forward(&registry.store, &remote, method, path, &headers, user, body).await
            }
        };
        state.metrics.observe("PROXY", &remote.name, response.status().as_u16(), started.elapsed());
        return response;
    }
    let route = match target::parse(&served, legacy, &rest) {
        Ok(route) => route,
        Err(e) => return e.into_response(),
    };
    let target = match route {
        Route::GroupVersion { group, version } => {
            return json_response(StatusCode::OK, &discovery::api_resource_list(&served, &group, &version), &[]);
        }
        Route::Group { group } => {
            let doc = discovery::api_group(&served, &group)
                .or_else(|| aggregation::discovery::api_group(&registry.aggregator.remotes(), &served, &group));
            return match doc {
                Some(doc) => json_response(StatusCode::OK, &doc, &[]),
                None => ApiError::NoSuchResource.into_response(),
            };
        }
        Route::Resource(target) => target,
    };
    let query = Query::parse(uri.query());
    let verb = handlers::verb(&method, &target, &query, &headers);
    let resource_name = match &target.subresource {
        Some(sub) => format!("{}/{sub}", target.resource.plural),
        None => target.resource.plural.to_string(),
    };
    let span = tracing::debug_span!("request", verb, resource = %resource_name, namespace = ?target.namespace, name = ?target.name);
    let logs = method == Method::GET && target.subresource.as_deref() == Some("log");
    // Logs answer in text (their errors in JSON) whatever the client accepts.
    let negotiated = if logs {
        Ok(negotiate::Negotiated::JSON)
    } else {
        let ri = target.resource;
        let protobuf = ri.custom.is_none() && protobuf::encode::has_message(&ri.api_version(), ri.kind);
        negotiate::negotiate(&headers, protobuf)
    };
    let error_media = negotiated.as_ref().map_or(negotiate::Media::Json, |n| n.media);
    let served = async {
        if logs {
            return pod_logs::serve(&registry, &state.kubelet, &target, &query).await;
        }
        let negotiated = negotiated?;
        if target.resource.group.is_empty() && target.resource.kind == "ComponentStatus" {
            let watch = query.flag("watch")?;
            let name = target.name.as_deref();
            let request = (&method, negotiated, target.resource);
            return component_status::serve(&registry, &state.controllers, request, name, watch).await;
        }
        handlers::serve(
            Arc::clone(&registry),
            &state.metrics,
            handlers::Request { method, target, query, headers, user, negotiated },
            body,
        )
        .await
    };
    let response = match tracing::Instrument::instrument(served, span).await {
        Ok(response) => response,
        Err(e) => respond::error(error_media, e),
    };
    state.metrics.observe(verb, &resource_name, response.status().as_u16(), started.elapsed());
    response
}
