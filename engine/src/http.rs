//! Serves an HTTP component: an HTTP/1.1 accept loop (hyper, keep-alive) where each request gets a fresh
//! store and instance from one pre-instantiated component, either a WASI 0.2 `wasi:http/incoming-handler`
//! ([`ProxyPre`]) or a WASI 0.3 `wasi:http/handler` ([`ServicePre`]).
//!
//! A WASI 0.3 handler returns its response while it may still be writing the body in tasks of its own,
//! so its store's concurrent event loop runs until the guest has no task left, not only until `handle`
//! returns.
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
use wasmtime::{AsContextMut, Store};
use wasmtime_wasi_http::handler::{Prepared, Proxy};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::WasiHttpView;

use super::limits::{bound_cpu, HasLimits};
use super::program::World;
use super::spec::{EngineError, Exit};
use super::wasi::{GuestEnv, P2State};

/// After a failed `accept` (e.g. out of file descriptors), wait this long before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The pre-instantiated handler of either WASI version.
pub(super) enum Handler {
    P2(ProxyPre<P2State>),
    P3(ServicePre<P2State>),
}

impl Handler {
    /// `component`, an HTTP handler of `world`, linked and checked against its world.
    pub(super) fn new(linker: &Linker<P2State>, component: &Component, world: World) -> Result<Self, EngineError> {
        let instantiate = |e: wasmtime::Error| EngineError::Instantiate(format!("{e:#}"));
        let pre = linker.instantiate_pre(component).map_err(instantiate)?;
        Ok(match world {
            World::HttpP3 => Handler::P3(ServicePre::new(pre).map_err(instantiate)?),
            _ => Handler::P2(ProxyPre::new(pre).map_err(instantiate)?),
        })
    }
}

/// What every request of one server shares.
struct Server {
    pre: Handler,
    env: GuestEnv,
    cpu_millis: Option<u32>,
    deadline: Option<Duration>,
    /// Cancelled when the server stops: ends the requests still running.
    stop: CancellationToken,
}

/// Serves `pre` on `listener` until `cancel` fires (never when `None`); then returns [`Exit::Killed`].
pub(super) async fn serve(
    pre: Handler,
    env: GuestEnv,
    cpu_millis: Option<u32>,
    deadline: Option<Duration>,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<Exit, EngineError> {
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
        let handled = match &self.pre {
            Handler::P2(pre) => self.handle_p2(pre, req, &method, &uri).await,
            Handler::P3(pre) => self.handle_p3(pre, req, &method, &uri).await,
        };
        match handled {
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

    async fn handle_p2(
        self: &Arc<Self>,
        pre: &ProxyPre<P2State>,
        req: Request<Incoming>,
        method: &http::Method,
        uri: &http::Uri,
    ) -> Result<Response<HyperOutgoingBody>, String> {
        let mut store = self.store(pre.engine())?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let mut http = store.data_mut().http();
        let req = http.new_incoming_request(Scheme::Http, req).map_err(|e| format!("{e:#}"))?;
        let out = http.new_response_outparam(sender).map_err(|e| format!("{e:#}"))?;
        // The guest runs in its own task: it may go on writing the body after it has sent the head. The
        // task reports a failing guest itself (also one that fails after the head went out).
        let (server, pre) = (Arc::clone(self), pre.clone());
        let (method, uri) = (method.clone(), uri.clone());
        let guest = tokio::spawn(async move {
            let call = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            };
            let outcome = server.bounded(call).await;
            server.conclude(outcome, store.data_mut().limits().exceeded, &method, &uri)
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(format!("the guest answered with error {code:?}")),
            Err(_) => Self::no_response(guest).await,
        }
    }

    async fn handle_p3(
        self: &Arc<Self>,
        pre: &ServicePre<P2State>,
        req: Request<Incoming>,
        method: &http::Method,
        uri: &http::Uri,
    ) -> Result<Response<HyperOutgoingBody>, String> {
        let mut store = self.store(pre.engine())?;
        let req = absolute(req).map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
        let (sender, receiver) = futures::channel::oneshot::channel();
        let (server, pre) = (Arc::clone(self), pre.clone());
        let (method, uri) = (method.clone(), uri.clone());
        let guest = tokio::spawn(async move {
            let call = async {
                let proxy = Proxy::P3(pre.instantiate_async(&mut store).await?);
                let proxy = &proxy;
                store
                    .run_concurrent(async move |guest| {
                        let prepared = guest.with(|mut store| {
                            Prepared::new(store.as_context_mut(), proxy, req, <P2State as WasiHttpView>::http, sender)
                        })?;
                        prepared.run(guest, std::future::pending()).await?;
                        // The response is out; the guest may still be writing its body.
                        std::future::poll_fn(|cx| guest.poll_no_interesting_tasks(cx)).await;
                        wasmtime::Result::<()>::Ok(())
                    })
                    .await?
            };
            let outcome = server.bounded(call).await;
            server.conclude(outcome, store.data_mut().limits().exceeded, &method, &uri)
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(format!("the guest answered with an error: {e:#}")),
            Err(_) => Self::no_response(guest).await,
        }
    }

    /// A fresh store for one request: the guest's WASI context, memory limit and CPU share.
    fn store(&self, engine: &wasmtime::Engine) -> Result<Store<P2State>, String> {
        let mut store = Store::new(engine, self.env.p2().map_err(|e| e.to_string())?);
        bound_cpu(&mut store, self.cpu_millis);
        Ok(store)
    }

    /// Runs a request's guest `call` within the server's bounds (its stop, the request deadline), its CPU
    /// counted as the guest's; `None` when a bound ended it.
    async fn bounded(
        &self,
        call: impl std::future::Future<Output = wasmtime::Result<()>> + Send,
    ) -> Option<wasmtime::Result<()>> {
        let over = async {
            match self.deadline {
                Some(deadline) => tokio::time::sleep(deadline).await,
                None => std::future::pending().await,
            }
        };
        let call = super::usage::Metered::new(call, self.env.usage.clone());
        tokio::select! {
            outcome = call => Some(outcome),
            () = self.stop.cancelled() => None,
            () = over => None,
        }
    }

    /// How a request's guest ended (`exceeded`: its memory limit refused a growth); a failure is reported.
    /// True when the guest ended well.
    fn conclude(
        &self,
        outcome: Option<wasmtime::Result<()>>,
        exceeded: bool,
        method: &http::Method,
        uri: &http::Uri,
    ) -> bool {
        let exit = match outcome {
            Some(outcome) => Exit::of(outcome, exceeded),
            None => Exit::Killed,
        };
        let failure = match &exit {
            Exit::Code(0) => return true,
            Exit::OutOfMemory => "out of memory".to_string(),
            Exit::Killed => "killed (server stopping or request deadline)".to_string(),
            Exit::Trap(trap) => format!("trap: {trap}"),
            Exit::Code(code) => format!("exited with code {code}"),
        };
        self.report(method, uri, &failure);
        false
    }

    /// The answer when the guest gave no response: why, from its task.
    async fn no_response(guest: tokio::task::JoinHandle<bool>) -> Result<Response<HyperOutgoingBody>, String> {
        match guest.await {
            Ok(true) => Err("the guest did not set a response".into()),
            // Reported by the guest's task.
            Ok(false) => Ok(internal_error()),
            Err(e) => Err(format!("guest task: {e}")),
        }
    }
}

/// `req` with the absolute URI a WASI 0.3 handler reads its scheme and authority from: `http`, and the
/// `Host` header's authority (kept as it came when the header is no valid authority).
fn absolute<B>(mut req: Request<B>) -> Request<B> {
    let mut parts = req.uri().clone().into_parts();
    parts.scheme.get_or_insert(http::uri::Scheme::HTTP);
    if parts.authority.is_none() {
        let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok());
        parts.authority = host.and_then(|h| h.parse().ok());
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    req
}

fn internal_error() -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(b"internal server error\n")).map_err(|never| match never {});
    let mut response = Response::new(body.boxed_unsync());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

#[cfg(test)]
mod tests {
    use super::absolute;

    fn uri_of(uri: &str, host: Option<&str>) -> String {
        let mut req = http::Request::builder().uri(uri);
        if let Some(host) = host {
            req = req.header(http::header::HOST, host);
        }
        absolute(req.body(()).expect("request")).uri().to_string()
    }

    #[test]
    fn an_origin_form_request_gets_scheme_and_authority_from_its_host() {
        assert_eq!(uri_of("/whoami?x=1", Some("10.42.0.7:8080")), "http://10.42.0.7:8080/whoami?x=1");
        assert_eq!(uri_of("/", Some("web.default.svc")), "http://web.default.svc/");
        // An absolute-form request keeps its own.
        assert_eq!(uri_of("http://a:1/p", Some("b:2")), "http://a:1/p");
        // A Host that is no authority leaves the URI as it came.
        assert_eq!(uri_of("/p", Some("bad host")), "/p");
        assert_eq!(uri_of("/p", None), "/p");
    }
}
