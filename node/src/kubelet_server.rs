//! The kubelet's HTTPS endpoint: `GET /containerLogs/{namespace}/{pod}/{container}` streams a
//! container's logs to the API server (which proxies `pods/log` here); `/exec/{namespace}/{pod}/{container}`
//! runs a command in a container and `/attach/...` follows its output over WebSocket ([`crate::streaming`]);
//! `/portForward/{namespace}/{pod}[/{uid}]` forwards connections to the pod over SPDY;
//! `GET /metrics`; `GET /stats/summary` ([`crate::stats`]); `GET /pods`; `GET /healthz`
//! answers `ok`. Served over TLS ([`crate::kubelet_tls`]); every request passes the gate of
//! [`crate::kubelet_auth`] first: the API server's client certificate, or a user the API server
//! authenticates and authorizes for `nodes/<subresource>` of this Node.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;
use tracing::Instrument;

use crate::logs::{stream_logs, LogFiles, LogOptions};

/// Finds the log files of a container for the endpoint; implemented by the kubelet.
pub trait LogSource: Send + Sync {
    /// The files of the container's current run, or with `previous` of its last terminated run.
    fn locate(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Result<LogFiles, LocateError>;

    /// The node's metrics in the Prometheus text format (`GET /metrics`).
    fn metrics(&self) -> String {
        String::new()
    }

    /// What `/stats/summary` is made from (none: the endpoint answers 404).
    fn stats(&self) -> Option<Arc<crate::stats::StatsSource>> {
        None
    }

    /// The pods bound to this node as a `PodList` (`GET /pods`; none: the endpoint answers 404).
    fn pods(&self) -> Option<futures::future::BoxFuture<'static, Result<serde_json::Value, String>>> {
        None
    }

    /// What serves `/exec` (none: the endpoint answers 404).
    fn streams(&self) -> Option<Arc<dyn crate::streaming::Streams>> {
        None
    }
}

/// Why a container's logs cannot be served; the messages are the Kubernetes kubelet's.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("pod \"{pod}\" does not exist")]
    PodNotFound { pod: String },
    #[error("container \"{container}\" not found in pod \"{pod}\"")]
    ContainerNotFound { pod: String, container: String },
    #[error("previous terminated container \"{container}\" in pod \"{pod}\" not found")]
    NoPrevious { pod: String, container: String },
    #[error("container \"{container}\" in pod \"{pod}\" is waiting to start: {reason}")]
    Waiting { pod: String, container: String, reason: String },
    #[error("{0}")]
    Internal(String),
}

impl LocateError {
    /// The HTTP status the kubelet answers with.
    pub fn code(&self) -> StatusCode {
        match self {
            Self::PodNotFound { .. } | Self::ContainerNotFound { .. } => StatusCode::NOT_FOUND,
            Self::NoPrevious { .. } | Self::Waiting { .. } => StatusCode::BAD_REQUEST,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A failed request: status and a plain-text message, as the kubelet answers.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.1).into_response()
    }
}

impl From<LocateError> for Failure {
    fn from(e: LocateError) -> Self {
        Self(e.code(), e.to_string())
    }
}

#[derive(Clone)]
struct ServerState {
    source: Arc<dyn LogSource>,
    /// Turns `true` at shutdown: open log streams end so connections can drain.
    stopping: watch::Receiver<bool>,
}

/// The endpoint's router, every route behind `gate`.
fn router(state: ServerState, gate: Arc<crate::kubelet_auth::Gate>) -> Router {
    let logs = Router::new()
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .route("/metrics", get(metrics))
        .route("/stats/summary", get(stats_summary))
        .route("/pods", get(pods))
        .route("/exec/{namespace}/{pod}/{container}", get(exec).post(exec))
        .route("/attach/{namespace}/{pod}/{container}", get(attach).post(attach))
        .route("/portForward/{namespace}/{pod}", get(port_forward).post(port_forward))
        .route("/portForward/{namespace}/{pod}/{uid}", get(port_forward_uid).post(port_forward_uid));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(logs)
        .fallback(|| async { Failure(StatusCode::NOT_FOUND, "404 page not found".into()) })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(gate, crate::kubelet_auth::guard))
}

/// `/exec/{namespace}/{pod}/{container}` ([`crate::streaming::session`]).
async fn exec(
    State(state): State<ServerState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    request: axum::extract::Request,
) -> Response {
    let target = crate::streaming::Target { namespace, pod, container };
    let kind = crate::streaming::Kind::Exec;
    crate::streaming::serve_exec(kind, state.source.streams(), target, query, request).await
}

/// `/attach/{namespace}/{pod}/{container}` ([`crate::streaming::session`]).
async fn attach(
    State(state): State<ServerState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    request: axum::extract::Request,
) -> Response {
    let target = crate::streaming::Target { namespace, pod, container };
    let kind = crate::streaming::Kind::Attach;
    crate::streaming::serve_exec(kind, state.source.streams(), target, query, request).await
}

/// `/portForward/{namespace}/{pod}` ([`crate::streaming::port_forward`]).
async fn port_forward(
    State(state): State<ServerState>,
    Path((namespace, pod)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    crate::streaming::port_forward::serve(state.source.streams(), namespace, pod, None, request).await
}

/// `/portForward/{namespace}/{pod}/{uid}` (the form the API server uses).
async fn port_forward_uid(
    State(state): State<ServerState>,
    Path((namespace, pod, uid)): Path<(String, String, String)>,
    request: axum::extract::Request,
) -> Response {
    crate::streaming::port_forward::serve(state.source.streams(), namespace, pod, Some(uid), request).await
}

/// `GET /stats/summary` (the kubelet Summary API, [`crate::stats`]).
async fn stats_summary(State(state): State<ServerState>) -> Response {
    let Some(stats) = state.source.stats() else {
        return Failure(StatusCode::NOT_FOUND, "404 page not found".into()).into_response();
    };
    axum::Json(stats.summary().await).into_response()
}

/// `GET /pods`: the node's pods.
async fn pods(State(state): State<ServerState>) -> Response {
    let Some(pods) = state.source.pods() else {
        return Failure(StatusCode::NOT_FOUND, "404 page not found".into()).into_response();
    };
    match pods.instrument(tracing::debug_span!("kubelet_pods")).await {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => Failure(StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn metrics(State(state): State<ServerState>) -> Response {
    let body = state.source.metrics();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// How long open connections get to finish after shutdown (log streams end at once).
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves the endpoint over TLS (`tls`, from [`crate::kubelet_tls::server_config`]) on `listener`,
/// each request admitted by `gate`, until `shutdown` completes; open log streams are then ended and
/// connections drained.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    source: Arc<dyn LogSource>,
    gate: Arc<crate::kubelet_auth::Gate>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopping) = watch::channel(false);
    let app = router(ServerState { source, stopping }, gate);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "kubelet endpoint listening (TLS, webhook authentication and authorization)");
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
        stopper.graceful_shutdown(Some(DRAIN));
    });
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    // TCP_NODELAY: streams (exec, port-forward) write small frames that must not wait for an ACK.
    axum_server::from_tcp_rustls(listener.into_std()?, config)?
        .map(|tls| {
            let tls = tls.acceptor(axum_server::accept::NoDelayAcceptor::new());
            skiff_tls::peer::PeerAcceptor::new(tls, crate::kubelet_auth::peer_from_certificate)
        })
        .handle(handle)
        .serve(app.into_make_service())
        .await
}

/// The query of `containerLogs`, parsed.
struct LogQuery {
    previous: bool,
    options: LogOptions,
}

fn parse_bool(query: &HashMap<String, String>, key: &str) -> Result<bool, Failure> {
    match query.get(key).map(String::as_str) {
        None | Some("") => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(Failure(StatusCode::BAD_REQUEST, format!("invalid boolean value for {key}: {other:?}"))),
    }
}

fn parse_int(query: &HashMap<String, String>, key: &str) -> Result<Option<i64>, Failure> {
    match query.get(key).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) => {
            v.parse().map(Some).map_err(|_| Failure(StatusCode::BAD_REQUEST, format!("invalid value for {key}: {v:?}")))
        }
    }
}

fn parse_query(query: &HashMap<String, String>) -> Result<LogQuery, Failure> {
    // The kubelet validates like the API server and answers 422 "Invalid request.".
    let invalid = || Failure(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request.".into());
    let tail_lines = parse_int(query, "tailLines")?;
    let limit_bytes = parse_int(query, "limitBytes")?;
    let since_seconds = parse_int(query, "sinceSeconds")?;
    let since_time = match query.get("sinceTime").map(String::as_str) {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<Timestamp>()
                .map_err(|_| Failure(StatusCode::BAD_REQUEST, format!("invalid value for sinceTime: {v:?}")))?,
        ),
    };
    if tail_lines.is_some_and(|n| n < 0)
        || limit_bytes.is_some_and(|n| n < 1)
        || since_seconds.is_some_and(|n| n < 1)
        || (since_seconds.is_some() && since_time.is_some())
    {
        return Err(invalid());
    }
    let since = match since_seconds {
        Some(secs) => Timestamp::now().checked_sub(SignedDuration::from_secs(secs)).ok(),
        None => since_time,
    };
    Ok(LogQuery {
        previous: parse_bool(query, "previous")?,
        options: LogOptions {
            follow: parse_bool(query, "follow")?,
            tail_lines,
            since,
            timestamps: parse_bool(query, "timestamps")?,
            limit_bytes,
        },
    })
}

async fn container_logs(
    State(state): State<ServerState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let span = tracing::info_span!("container_logs", %namespace, %pod, %container);
    async move {
        match open_logs(&state, &namespace, &pod, &container, &query).await {
            Ok(response) => response,
            Err(failure) => {
                tracing::debug!(code = failure.0.as_u16(), message = %failure.1, "container logs refused");
                failure.into_response()
            }
        }
    }
    .instrument(span)
    .await
}

async fn open_logs(
    state: &ServerState,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &HashMap<String, String>,
) -> Result<Response, Failure> {
    let LogQuery { previous, options } = parse_query(query)?;
    let files = state.source.locate(namespace, pod, container, previous)?;
    let stream = stream_logs(files, options)
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("failed to read container logs: {e}")))?;
    let mut stopping = state.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let body = Body::from_stream(stream.take_until(stopped));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

#[cfg(test)]
#[path = "kubelet_server_tests.rs"]
mod tests;
