//! `nodes/proxy`: `GET /api/v1/nodes/{name}/proxy/{path}` is sent to that node's kubelet over the
//! mutual-TLS channel ([`super::pod_logs::KubeletClient`]) with the same query, and its answer (status,
//! content type, body) streamed back. Authorization (`get` on `nodes/proxy`) happens before, in the auth
//! filter; kubelets serve `/stats/summary`, `/metrics`, `/healthz`, `/containerLogs`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Node;
use tracing::Instrument;

use super::pod_logs::{decode, kubelet_endpoint};
use super::ApiState;
use crate::api::error::chain;
use crate::api::error::{ApiError, ApiResult};

/// `/api/v1/nodes/{name}/proxy`: the kubelet's root.
pub async fn root(state: State<ApiState>, Path(name): Path<String>, method: Method, uri: Uri) -> Response {
    serve(state, name, String::new(), method, uri).await
}

/// `/api/v1/nodes/{name}/proxy/{*path}`.
pub async fn path(
    state: State<ApiState>,
    Path((name, path)): Path<(String, String)>,
    method: Method,
    uri: Uri,
) -> Response {
    serve(state, name, path, method, uri).await
}

async fn serve(State(state): State<ApiState>, name: String, path: String, method: Method, uri: Uri) -> Response {
    let span = tracing::info_span!("node_proxy", node = %name, %path);
    match proxy(&state, &name, &path, &method, &uri).instrument(span).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// The kubelet URL for `path` (with `query`) on `host:port`.
pub(super) fn kubelet_url(host: &str, port: i32, path: &str, query: Option<&str>) -> ApiResult<reqwest::Url> {
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
    let mut url = reqwest::Url::parse(&format!("https://{host}:{port}/"))
        .map_err(|e| ApiError::Internal(format!("kubelet address {host}:{port}: {e}")))?;
    url.set_path(&format!("/{}", path.trim_start_matches('/')));
    url.set_query(query);
    Ok(url)
}

async fn proxy(state: &ApiState, name: &str, path: &str, method: &Method, uri: &Uri) -> ApiResult<Response> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed);
    }
    let registry = &state.registry;
    let node: Node = decode(registry.get(registry.resource("", "Node")?, None, name).await?, "node")?;
    let (host, port) = kubelet_endpoint(&node)?;
    let url = kubelet_url(&host, port, path, uri.query())?;
    tracing::debug!(%url, "proxying to the kubelet");
    let answer = state
        .kubelet
        .http
        .request(method.clone(), url.clone())
        .send()
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("error trying to reach service: {}", chain(&e))))?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::builder().status(status);
    if let Some(kind) = answer.headers().get(header::CONTENT_TYPE) {
        response = response.header(header::CONTENT_TYPE, kind);
    }
    response.body(Body::from_stream(answer.bytes_stream())).map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_url_keeps_the_path_and_query() {
        let url = kubelet_url("10.0.0.5", 10250, "stats/summary", Some("only_cpu_and_memory=true")).expect("url");
        assert_eq!(url.as_str(), "https://10.0.0.5:10250/stats/summary?only_cpu_and_memory=true");
        let url = kubelet_url("::1", 1, "", None).expect("url");
        assert_eq!(url.as_str(), "https://[::1]:1/");
    }
}
