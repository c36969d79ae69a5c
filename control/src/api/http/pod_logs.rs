//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: validates the request as Kubernetes does, finds
//! the pod's node and its kubelet endpoint, and streams the kubelet's `containerLogs` answer through
//! unbuffered (so `kubectl logs -f` follows). Kubelets are reached over mutual TLS only: the API
//! server presents its kubelet client certificate and verifies the kubelet's serving certificate
//! against the cluster CA for the node's address; no token is sent.

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::{Node, Pod};

use super::query::Query;
use super::target::Target;
use crate::api::error::{chain, ApiError, ApiResult};
use crate::api::registry::Registry;

/// The port a kubelet serves on when its Node does not say.
const DEFAULT_KUBELET_PORT: i32 = 10250;
/// The most of a kubelet's error answer that is read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The API server's side of the kubelet channel: the cluster CA (to verify kubelets) and the client
/// certificate kubelets accept (PEM).
#[derive(Clone)]
pub struct KubeletClientTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletClientError {
    #[error("kubelet client TLS: {0}")]
    Tls(String),
    #[error("kubelet client: {0}")]
    Http(#[from] reqwest::Error),
}

/// How the API server talks to kubelets: HTTPS with mutual certificates.
pub struct KubeletClient {
    pub(super) http: reqwest::Client,
    /// The same identity, HTTP/1.1 only: for upgraded streams (`pods/exec`, [`super::pod_stream`]).
    pub(super) stream: reqwest::Client,
}

impl KubeletClient {
    /// A client presenting `tls`'s certificate to kubelets and trusting only serving certificates
    /// the cluster CA signed for the address it dials.
    pub fn new(tls: &KubeletClientTls) -> Result<Self, KubeletClientError> {
        let bad = |e: &dyn std::fmt::Display| KubeletClientError::Tls(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut tls.ca_pem.as_bytes()) {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        let chain =
            rustls_pemfile::certs(&mut tls.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| bad(&e))?;
        let key = rustls_pemfile::private_key(&mut tls.key_pem.as_bytes())
            .map_err(|e| bad(&e))?
            .ok_or_else(|| KubeletClientError::Tls("no private key".into()))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad(&e))?;
        let mut http1 = config.clone();
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = |config: rustls::ClientConfig| {
            reqwest::Client::builder()
                .use_preconfigured_tls(config)
                .https_only(true)
                .connect_timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
        };
        Ok(Self { http: client(config)?, stream: client(http1)? })
    }
}

/// The `pods/log` query, validated.
struct LogQuery {
    container: Option<String>,
    /// The kubelet's query parameters, as given.
    forward: Vec<(&'static str, String)>,
}

fn parse_query(name: &str, query: &Query) -> ApiResult<LogQuery> {
    let mut forward = Vec::new();
    for key in ["follow", "previous", "timestamps"] {
        if query.flag(key)? {
            forward.push((key, "true".to_string()));
        }
    }
    let mut causes = Vec::new();
    let tail_lines = query.int("tailLines")?;
    if let Some(n) = tail_lines.filter(|n| *n < 0) {
        causes.push(("tailLines".into(), format!("Invalid value: {n}: must be greater than or equal to 0")));
    }
    let since_seconds = query.int("sinceSeconds")?;
    if let Some(n) = since_seconds.filter(|n| *n < 1) {
        causes.push(("sinceSeconds".into(), format!("Invalid value: {n}: must be greater than 0")));
    }
    let limit_bytes = query.int("limitBytes")?;
    if let Some(n) = limit_bytes.filter(|n| *n < 1) {
        causes.push(("limitBytes".into(), format!("Invalid value: {n}: must be greater than 0")));
    }
    let since_time = query.get("sinceTime");
    if let Some(t) = since_time {
        t.parse::<jiff::Timestamp>()
            .map_err(|_| ApiError::BadRequest(format!("invalid value for sinceTime: {t:?}: not an RFC3339 time")))?;
        if since_seconds.is_some() {
            causes.push((
                String::new(),
                "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
            ));
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("PodLogOptions", name, causes));
    }
    for (key, value) in [("tailLines", tail_lines), ("sinceSeconds", since_seconds), ("limitBytes", limit_bytes)] {
        if let Some(v) = value {
            forward.push((key, v.to_string()));
        }
    }
    if let Some(t) = since_time {
        forward.push(("sinceTime", t.to_string()));
    }
    Ok(LogQuery { container: query.get("container").map(String::from), forward })
}

/// The container whose logs are asked for, as Kubernetes picks it.
pub(super) fn pick_container(pod: &Pod, name: &str, requested: Option<String>) -> ApiResult<String> {
    let spec = pod.spec.as_ref();
    let init = spec.into_iter().flat_map(|s| s.init_containers.iter().flatten().map(|c| c.name.clone()));
    let main: Vec<String> = spec.into_iter().flat_map(|s| s.containers.iter().map(|c| c.name.clone())).collect();
    let ephemeral = spec.into_iter().flat_map(|s| s.ephemeral_containers.iter().flatten().map(|c| c.name.clone()));
    let all: Vec<String> = init.chain(main.iter().cloned()).chain(ephemeral).collect();
    match requested {
        Some(c) if all.contains(&c) => Ok(c),
        Some(c) => Err(ApiError::BadRequest(format!("container {c} is not valid for pod {name}"))),
        None => match main.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::BadRequest(format!("no container found for pod {name}"))),
            _ => Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                all.join(" ")
            ))),
        },
    }
}

/// `host:port` of the kubelet on `node`.
pub(super) fn kubelet_endpoint(node: &Node) -> ApiResult<(String, i32)> {
    let status = node.status.as_ref();
    let addresses = status.and_then(|s| s.addresses.as_deref()).unwrap_or_default();
    let host = ["InternalIP", "Hostname", "ExternalIP"]
        .iter()
        .find_map(|kind| addresses.iter().find(|a| a.type_ == *kind && !a.address.is_empty()))
        .map(|a| a.address.clone())
        .ok_or_else(|| {
            let known: Vec<String> = addresses.iter().map(|a| format!("{}:{}", a.type_, a.address)).collect();
            ApiError::Internal(format!("no preferred addresses found; known addresses: [{}]", known.join(" ")))
        })?;
    let port = status
        .and_then(|s| s.daemon_endpoints.as_ref())
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map(|e| e.port)
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok((host, port))
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value, what: &str) -> ApiResult<T> {
    serde_json::from_value(value).map_err(|e| ApiError::Internal(format!("decoding {what}: {e}")))
}

/// Serves `pods/log` by proxying to the pod's kubelet.
pub async fn serve(
    registry: &Registry,
    kubelet: &KubeletClient,
    target: &Target<'_>,
    query: &Query,
) -> ApiResult<Response> {
    let ns = target.namespace.as_deref().unwrap_or("default");
    let name = target.name.as_deref().ok_or(ApiError::MethodNotAllowed)?;
    let pod: Pod = decode(registry.get(target.resource, Some(ns), name).await?, "pod")?;
    let LogQuery { container, forward } = parse_query(name, query)?;
    let container = pick_container(&pod, name, container)?;
    let mut url = kubelet_url(registry, &pod, name, &["containerLogs", ns, name, &container]).await?;
    if !forward.is_empty() {
        url.query_pairs_mut().extend_pairs(forward.iter().map(|(k, v)| (*k, v.as_str())));
    }
    tracing::debug!(%url, "proxying pod logs to the kubelet");
    let answer = kubelet
        .http
        .get(url.clone())
        .send()
        .await
        .map_err(|e| ApiError::Internal(format!("Get \"{url}\": {}", chain(&e))))?;
    let code = answer.status();
    if !code.is_success() {
        return Err(kubelet_error(code, answer).await);
    }
    let body = Body::from_stream(answer.bytes_stream());
    Ok((StatusCode::OK, [(http::header::CONTENT_TYPE, "text/plain")], body).into_response())
}

/// `https://<kubelet of the pod's node>/<segments>` for pod `name`.
pub(super) async fn kubelet_url(
    registry: &Registry,
    pod: &Pod,
    name: &str,
    segments: &[&str],
) -> ApiResult<reqwest::Url> {
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty());
    let node_name =
        node_name.ok_or_else(|| ApiError::BadRequest(format!("pod {name} does not have a host assigned")))?;
    let node_ri = registry.resource("", "Node")?;
    let node: Node = decode(registry.get(node_ri, None, node_name).await?, "node")?;
    let (host, port) = kubelet_endpoint(&node)?;
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let mut url = reqwest::Url::parse(&format!("https://{host}:{port}/"))
        .map_err(|e| ApiError::Internal(format!("kubelet address {host}:{port} of node {node_name}: {e}")))?;
    url.path_segments_mut()
        .map_err(|()| ApiError::Internal(format!("kubelet address {host}:{port} of node {node_name}")))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// A kubelet's failure answer as the API error with its message and (where one fits) its code.
pub(super) async fn kubelet_error(code: reqwest::StatusCode, mut answer: reqwest::Response) -> ApiError {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = answer.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    let message = String::from_utf8_lossy(&body).trim().to_string();
    match code.as_u16() {
        400 | 422 => ApiError::BadRequest(message),
        401 => ApiError::Unauthorized,
        403 => ApiError::Forbidden(message),
        404 => ApiError::Unavailable(message),
        504 => ApiError::Timeout(message),
        500 => ApiError::Internal(message),
        other => ApiError::Internal(format!("the kubelet answered {other}: {message}")),
    }
}
