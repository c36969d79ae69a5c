//! `pods/exec`, `pods/attach` and `pods/portforward` (GET or POST, as kubectl sends them): the pod
//! and container are checked as kube-apiserver does, then the client's upgrade (WebSocket with the `v5.channel.k8s.io` or
//! `v4.channel.k8s.io` subprotocol, `SPDY/3.1+portforward.k8s.io` for port-forward, or a SPDY/3.1
//! upgrade) is sent on to the pod's kubelet over the mutual-TLS
//! channel ([`super::pod_logs::KubeletClient`]); on the kubelet's `101 Switching Protocols` the two
//! upgraded connections are spliced byte for byte. Authorization (`create` on the subresource, also
//! for GET) happens before, in the auth filter.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Pod;
use tracing::Instrument;

use super::pod_logs::{decode, kubelet_error, kubelet_url, pick_container};
use super::ApiState;
use crate::api::error::chain;
use crate::api::error::{ApiError, ApiResult};

/// The copy buffer of each direction of a spliced stream (exec, attach, port-forward).
const SPLICE_BUFFER: usize = 64 * 1024;

/// The headers of an upgrade passed to the kubelet, and of its answer passed back.
const UPGRADE_HEADERS: [&str; 6] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
/// The headers of the kubelet's 101 passed back to the client.
const ANSWER_HEADERS: [&str; 5] =
    ["connection", "upgrade", "sec-websocket-accept", "sec-websocket-protocol", "x-stream-protocol-version"];

/// `GET|POST /api/v1/namespaces/{namespace}/pods/{name}/exec`.
pub async fn exec(state: State<ApiState>, path: Path<(String, String)>, request: Request) -> Response {
    serve(state, path, request, "exec").await
}

/// `GET|POST /api/v1/namespaces/{namespace}/pods/{name}/attach`.
pub async fn attach(state: State<ApiState>, path: Path<(String, String)>, request: Request) -> Response {
    serve(state, path, request, "attach").await
}

/// `GET|POST /api/v1/namespaces/{namespace}/pods/{name}/portforward` (to the kubelet's
/// `/portForward/{namespace}/{name}/{uid}`; the streams name the ports).
pub async fn portforward(state: State<ApiState>, path: Path<(String, String)>, request: Request) -> Response {
    serve(state, path, request, "portforward").await
}

async fn serve(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
    kind: &'static str,
) -> Response {
    let span = tracing::info_span!("pod_stream", kind, %namespace, %name);
    match proxy(&state, &namespace, &name, request, kind).instrument(span).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    let connection = headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok());
    let says_upgrade = connection.flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    says_upgrade && headers.contains_key(header::UPGRADE)
}

/// The options of the request (`container`, `stdin`, ... and `command` once per argument).
fn options(query: Option<&str>) -> Vec<(String, String)> {
    let url = format!("http://x/?{}", query.unwrap_or_default());
    reqwest::Url::parse(&url)
        .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

fn flag(options: &[(String, String)], key: &str) -> bool {
    options.iter().any(|(k, v)| k == key && matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

async fn proxy(state: &ApiState, ns: &str, name: &str, mut request: Request, kind: &str) -> ApiResult<Response> {
    if !matches!(*request.method(), Method::GET | Method::POST) {
        return Err(ApiError::MethodNotAllowed);
    }
    let options = options(request.uri().query());
    let forward = kind == "portforward";
    if !forward && !["stdin", "stdout", "stderr"].iter().any(|k| flag(&options, k)) {
        return Err(ApiError::BadRequest("you must specify at least 1 of stdin, stdout, stderr".into()));
    }
    let registry = &state.registry;
    let pod_ri = registry.resource("", "Pod")?;
    let pod: Pod = decode(registry.get(pod_ri, Some(ns), name).await?, "pod")?;
    let segments: Vec<String> = if forward {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        ["portForward", ns, name, uid.as_str()].map(String::from).into()
    } else {
        let requested =
            options.iter().find(|(k, _)| k == "container").map(|(_, v)| v.clone()).filter(|c| !c.is_empty());
        let container = pick_container(&pod, name, requested)?;
        [kind, ns, name, container.as_str()].map(String::from).into()
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
    if !forward && matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::BadRequest(format!(
            "cannot exec into or attach to a container in a completed pod; current phase is {phase}"
        )));
    }
    if !is_upgrade(request.headers()) {
        return Err(ApiError::BadRequest("Upgrade request required".into()));
    }
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let mut url = kubelet_url(registry, &pod, name, &segments).await?;
    url.set_query(request.uri().query());
    let mut outgoing = state.kubelet.stream.request(request.method().clone(), url.clone());
    for key in UPGRADE_HEADERS {
        for value in request.headers().get_all(key) {
            outgoing = outgoing.header(key, value);
        }
    }
    let on_client_upgrade = hyper::upgrade::on(&mut request);
    tracing::debug!(%url, "proxying the upgrade to the kubelet");
    let answer = outgoing
        .send()
        .await
        .map_err(|e| ApiError::Internal(format!("{} \"{url}\": {}", request.method(), chain(&e))))?;
    if answer.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        return Err(kubelet_error(answer.status(), answer).await);
    }
    let mut response = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for key in ANSWER_HEADERS {
        for value in answer.headers().get_all(key) {
            response = response.header(HeaderName::from_static(key), value);
        }
    }
    let response = response.body(axum::body::Body::empty()).map_err(|e| ApiError::Internal(e.to_string()))?;
    tokio::spawn(
        async move {
            let mut kubelet = match answer.upgrade().await {
                Ok(io) => io,
                Err(e) => return tracing::warn!(error = %chain(&e), "the kubelet's upgrade failed"),
            };
            let client = match on_client_upgrade.await {
                Ok(io) => io,
                Err(e) => return tracing::debug!(error = %e, "the client's upgrade failed"),
            };
            let mut client = hyper_util::rt::TokioIo::new(client);
            // 64 KiB each way (tokio's default is 8 KiB): fewer, fuller TLS records on both legs.
            match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut kubelet, SPLICE_BUFFER, SPLICE_BUFFER)
                .await
            {
                Ok((up, down)) => tracing::debug!(up, down, "stream ended"),
                Err(e) => tracing::debug!(error = %e, "stream ended"),
            }
        }
        .instrument(tracing::Span::current()),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_keep_every_command_argument_and_upgrades_are_recognised() {
        let o = options(Some("command=sh&command=-c&command=exit%203&container=c&stdout=true&stdin=1"));
        let commands: Vec<&str> = o.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.as_str()).collect();
        assert_eq!(commands, ["sh", "-c", "exit 3"]);
        assert!(flag(&o, "stdout") && flag(&o, "stdin") && !flag(&o, "stderr"));
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().expect("value"));
        assert!(!is_upgrade(&h));
        h.insert(header::UPGRADE, "websocket".parse().expect("value"));
        assert!(is_upgrade(&h));
    }
}
