//! Serves a `wasi:http/incoming-handler` component: an HTTP/1.1 accept loop (hyper, keep-alive) where each
//! request gets a fresh store and instance from one pre-instantiated [`ProxyPre`].
//!
//! Connections and requests are tasks spawned with `tokio::spawn` on the caller's runtime, so every
//! socket (accepted, and the guest's outbound ones) is made on that runtime's threads.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wasmtime::component::{Component, Linker};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use super::limits::{bound_cpu, HasLimits};
use super::spec::{EngineError, Exit};
use super::wasi::{GuestEnv, P2State};

/// After a failed `accept` (e.g. out of file descriptors), wait this long before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every request of one server shares.
struct Server {
    pre: ProxyPre<P2State>,
    env: GuestEnv,
    cpu_millis: Option<u32>,
    deadline: Option<Duration>,
    /// Cancelled when the server stops: ends the requests still running.
    stop: CancellationToken,
}

/// Serves `component` on `listener` until `cancel` fires (never when `None`); then returns [`Exit::Killed`].
pub(super) async fn serve(
    linker: &Linker<P2State>,
    component: &Component,
    env: GuestEnv,
    cpu_millis: Option<u32>,
    deadline: Option<Duration>,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<Exit, EngineError> {
    let instantiate = |e: wasmtime::Error| EngineError::Instantiate(format!("{e:#}"));
    let pre = ProxyPre::new(linker.instantiate_pre(component).map_err(instantiate)?).map_err(instantiate)?;
    let server = Arc::new(Server { pre, env, cpu_millis, deadline, stop: cancel.child_token() });
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = tracing::debug_span!("http connection", %peer);
                    connections.spawn(Arc::clone(&server).connection(stream).instrument(span));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    server.stop.cancel();
    connections.shutdown().await;
    Ok(Exit::Killed)
}

impl Server {
    async fn connection(self: Arc<Self>, stream: TcpStream) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let service = service_fn(move |req| Arc::clone(&self).request(req));
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .keep_alive(true)
            // A client may end its side once the request is sent (`printf 'GET ...' | nc`); the
            // answer still goes out instead of the connection being dropped unanswered.
            .half_close(true)
            .serve_connection(TokioIo::new(stream), service)
            .await;
        if let Err(e) = served {
            tracing::debug!(error = %e, "connection ended");
        }
    }

    /// Answers one request: the guest's response, or 500 when the guest fails before giving one.
    async fn request(self: Arc<Self>, mut req: Request<Incoming>) -> Result<Response<HyperOutgoingBody>, Infallible> {
        if !req.headers().contains_key(http::header::HOST) {
            // HTTP/1.0 clients may omit it; the guest's request needs an authority.
            req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("localhost"));
        }
        let (method, uri) = (req.method().clone(), req.uri().clone());
        match self.handle(req, &method, &uri).await {
            Ok(response) => Ok(response),
            Err(reason) => {
                self.report(&method, &uri, &reason);
                Ok(internal_error())
            }
        }
    }

    /// A failed request: a warning, and a line on the guest's stderr.
    fn report(&self, method: &http::Method, uri: &http::Uri, reason: &str) {
        tracing::warn!(%method, %uri, %reason, "request failed");
        if let Some(stderr) = &self.env.stderr {
            stderr.line(&format!("skiff: {method} {uri} failed: {reason}"));
        }
    }

    async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        method: &http::Method,
        uri: &http::Uri,
    ) -> Result<Response<HyperOutgoingBody>, String> {
        let mut store = Store::new(self.pre.engine(), self.env.p2().map_err(|e| e.to_string())?);
        bound_cpu(&mut store, self.cpu_millis);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let mut http = store.data_mut().http();
        let req = http.new_incoming_request(Scheme::Http, req).map_err(|e| format!("{e:#}"))?;
        let out = http.new_response_outparam(sender).map_err(|e| format!("{e:#}"))?;
        // The guest runs in its own task: it may go on writing the body after it has sent the head. The
        // task reports a failing guest itself (also one that fails after the head went out).
        let server = Arc::clone(self);
        let (method, uri) = (method.clone(), uri.clone());
        let guest = tokio::spawn(async move {
            let call = async {
                let proxy = server.pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            };
            let over = async {
                match server.deadline {
                    Some(deadline) => tokio::time::sleep(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let call = super::usage::Metered::new(call, server.env.usage.clone());
            let outcome = tokio::select! {
                outcome = call => Some(outcome),
                () = server.stop.cancelled() => None,
                () = over => None,
            };
            let exit = match outcome {
                Some(outcome) => Exit::of(outcome, store.data_mut().limits().exceeded),
                None => Exit::Killed,
            };
            let failure = match &exit {
                Exit::Code(0) => return true,
                Exit::OutOfMemory => "out of memory".to_string(),
                Exit::Killed => "killed (server stopping or request deadline)".to_string(),
                Exit::Trap(trap) => format!("trap: {trap}"),
                Exit::Code(code) => format!("exited with code {code}"),
            };
            server.report(&method, &uri, &failure);
            false
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(format!("the guest answered with error {code:?}")),
            Err(_) => match guest.await {
                Ok(true) => Err("the guest did not set a response".into()),
                // Reported by the guest's task.
                Ok(false) => Ok(internal_error()),
                Err(e) => Err(format!("guest task: {e}")),
            },
        }
    }
}

fn internal_error() -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(b"internal server error\n")).map_err(|never| match never {});
    let mut response = Response::new(body.boxed_unsync());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
