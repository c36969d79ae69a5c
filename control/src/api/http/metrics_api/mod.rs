//! The resource metrics API, `metrics.k8s.io/v1beta1`, served by the API server itself (what
//! metrics-server serves behind an APIService): `NodeMetrics` and `PodMetrics`, list (all namespaces or
//! one, `labelSelector`, `fieldSelector`) and get, from usage computed over two readings of each
//! kubelet's `/stats/summary` ([`scrape`], [`usage`]). Discovery lists the group (legacy and aggregated)
//! so `kubectl top` finds it. Authorization is RBAC on `metrics.k8s.io` `nodes`/`pods`, in the auth filter.

pub mod scrape;
pub mod usage;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{json, Map, Value};

use super::query::Query;
use super::respond::json_response;
use super::ApiState;
use crate::api::error::{ApiError, ApiResult};
use scrape::Snapshot;
use usage::{go_duration, Usage};

/// The group and version.
pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// The group's entry in `/apis` (legacy discovery).
pub fn group_entry() -> Value {
    let version = json!({"groupVersion": API_VERSION, "version": VERSION});
    json!({"name": GROUP, "versions": [version.clone()], "preferredVersion": version})
}

/// The group's entry in aggregated discovery (`apidiscovery.k8s.io/v2`).
pub fn aggregated_entry() -> Value {
    let resource = |plural: &str, kind: &str, singular: &str, scope: &str| {
        json!({
            "resource": plural,
            "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
            "scope": scope,
            "singularResource": singular,
            "verbs": ["get", "list"],
        })
    };
    json!({
        "metadata": {"name": GROUP},
        "versions": [{
            "version": VERSION,
            "resources": [
                resource("nodes", "NodeMetrics", "", "Cluster"),
                resource("pods", "PodMetrics", "", "Namespaced"),
            ],
            "freshness": "Current",
        }],
    })
}

/// `GET /apis/metrics.k8s.io`.
pub async fn group() -> Response {
    let mut doc = group_entry();
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    json_response(StatusCode::OK, &doc, &[])
}

/// `GET /apis/metrics.k8s.io/v1beta1`.
pub async fn resources() -> Response {
    let resource = |name: &str, kind: &str, namespaced: bool| json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": ["get", "list"]});
    let doc = json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": [resource("nodes", "NodeMetrics", false), resource("pods", "PodMetrics", true)],
    });
    json_response(StatusCode::OK, &doc, &[])
}

/// A missing Node or Pod is a missing metrics object (other errors stay as they are).
fn or(not_found: impl Fn() -> ApiError) -> impl Fn(ApiError) -> ApiError {
    move |e| match e {
        ApiError::NotFound { .. } => not_found(),
        other => other,
    }
}

fn answer(result: ApiResult<Value>) -> Response {
    match result {
        Ok(body) => json_response(StatusCode::OK, &body, &[]),
        Err(e) => e.into_response(),
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({"cpu": format!("{}n", u.cpu_nano_cores), "memory": format!("{}", u.memory_bytes)})
}

/// The metadata of a metrics object for `object` (a Node or Pod): name, namespace, labels, made now.
fn metadata(object: &Value, now: &str) -> Value {
    let meta = &object["metadata"];
    let mut out = Map::new();
    out.insert("name".into(), meta["name"].clone());
    if let Some(ns) = meta.get("namespace") {
        out.insert("namespace".into(), ns.clone());
    }
    out.insert("creationTimestamp".into(), json!(now));
    if let Some(labels) = meta.get("labels") {
        out.insert("labels".into(), labels.clone());
    }
    Value::Object(out)
}

fn node_metrics(node: &Value, snapshot: &Snapshot, now: &str) -> Option<Value> {
    let name = node["metadata"]["name"].as_str()?;
    let u = snapshot.nodes.get(name)?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        "metadata": metadata(node, now),
        "timestamp": u.timestamp.to_string(),
        "window": go_duration(u.window),
        "usage": usage_json(u),
    }))
}

fn pod_metrics(pod: &Value, snapshot: &Snapshot, now: &str) -> Option<Value> {
    let meta = &pod["metadata"];
    let key = (meta["namespace"].as_str()?.to_string(), meta["name"].as_str()?.to_string());
    let containers = snapshot.pods.get(&key)?;
    let first = containers.first()?.1;
    let list: Vec<Value> = containers.iter().map(|(name, u)| json!({"name": name, "usage": usage_json(u)})).collect();
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": metadata(pod, now),
        "timestamp": first.timestamp.to_string(),
        "window": go_duration(first.window),
        "containers": list,
    }))
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": API_VERSION, "metadata": {}, "items": items})
}

async fn snapshot(state: &ApiState) -> ApiResult<Snapshot> {
    state.resource_metrics.snapshot(&state.registry, &state.kubelet).await
}

/// Objects of `kind` (in `namespace`) the query's selectors match.
async fn objects(state: &ApiState, kind: &str, namespace: Option<String>, uri: &Uri) -> ApiResult<Vec<Value>> {
    let registry = &state.registry;
    let ri = registry.resource("", kind)?;
    let query = super::handlers::list_query(ri, namespace, &Query::parse(uri.query()))?;
    Ok(registry.list(ri, &query).await?.items)
}

/// `GET /apis/metrics.k8s.io/v1beta1/nodes`.
pub async fn list_nodes(State(state): State<ApiState>, uri: Uri) -> Response {
    let span = tracing::info_span!("node_metrics");
    answer(
        tracing::Instrument::instrument(
            async {
                let nodes = objects(&state, "Node", None, &uri).await?;
                let snapshot = snapshot(&state).await?;
                let now = Timestamp::now().to_string();
                Ok(list("NodeMetricsList", nodes.iter().filter_map(|n| node_metrics(n, &snapshot, &now)).collect()))
            },
            span,
        )
        .await,
    )
}

/// `GET /apis/metrics.k8s.io/v1beta1/nodes/{name}`.
pub async fn get_node(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    let span = tracing::info_span!("node_metrics", %name);
    let not_found = || ApiError::not_found(GROUP, "nodemetrics", &name);
    answer(
        tracing::Instrument::instrument(
            async {
                let registry = &state.registry;
                let node = registry.get(registry.resource("", "Node")?, None, &name).await.map_err(or(not_found))?;
                let snapshot = snapshot(&state).await?;
                node_metrics(&node, &snapshot, &Timestamp::now().to_string()).ok_or_else(not_found)
            },
            span,
        )
        .await,
    )
}

async fn pods_in(state: &ApiState, namespace: Option<String>, uri: &Uri) -> ApiResult<Value> {
    let pods = objects(state, "Pod", namespace, uri).await?;
    let snapshot = snapshot(state).await?;
    let now = Timestamp::now().to_string();
    Ok(list("PodMetricsList", pods.iter().filter_map(|p| pod_metrics(p, &snapshot, &now)).collect()))
}

/// `GET /apis/metrics.k8s.io/v1beta1/pods`.
pub async fn list_all_pods(State(state): State<ApiState>, uri: Uri) -> Response {
    let span = tracing::info_span!("pod_metrics");
    answer(tracing::Instrument::instrument(pods_in(&state, None, &uri), span).await)
}

/// `GET /apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods`.
pub async fn list_pods(State(state): State<ApiState>, Path(namespace): Path<String>, uri: Uri) -> Response {
    let span = tracing::info_span!("pod_metrics", %namespace);
    answer(tracing::Instrument::instrument(pods_in(&state, Some(namespace), &uri), span).await)
}

/// `GET /apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}`.
pub async fn get_pod(State(state): State<ApiState>, Path((namespace, name)): Path<(String, String)>) -> Response {
    let span = tracing::info_span!("pod_metrics", %namespace, %name);
    let not_found = || ApiError::not_found(GROUP, "podmetrics", &name);
    answer(
        tracing::Instrument::instrument(
            async {
                let registry = &state.registry;
                let pod_ri = registry.resource("", "Pod")?;
                let pod = registry.get(pod_ri, Some(&namespace), &name).await.map_err(or(not_found))?;
                let snapshot = snapshot(&state).await?;
                pod_metrics(&pod, &snapshot, &Timestamp::now().to_string()).ok_or_else(not_found)
            },
            span,
        )
        .await,
    )
}
