//! The ingress's HTTP side: HTTP/1.1 and HTTP/2 (hyper-util's auto server, ALPN over TLS),
//! each request routed through the current snapshot and forwarded over HTTP/1.1 to a ready
//! endpoint of its Service (round robin, reusing idle connections; another endpoint when a connect fails), with
//! `X-Forwarded-For/Proto/Host`; an HTTP/1.1 `Upgrade` (WebSocket) is passed through
//! (`upgrade.rs`). Unknown host: 404; a missing Service or no ready endpoint: 503
//! with the reason; a backend too slow to answer: 504.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

use super::backends::Backends;
use super::route::{Backend, Route};
use super::Snapshot;

/// How long a connect to one endpoint may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a backend may take to send its response headers (then 504).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Endpoints tried per request.
const MAX_ATTEMPTS: usize = 3;

/// The response body type: a backend's streamed body or a short text of ours.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// What every connection handler reads.
pub struct Shared {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub backends: Arc<parking_lot::RwLock<Backends>>,
    /// Round-robin position.
    next: AtomicUsize,
    /// Idle backend connections.
    pool: Arc<Pool>,
    pub response_timeout: Duration,
}

impl Shared {
    /// Handlers over `snapshot` and `backends`.
    pub fn new(snapshot: watch::Receiver<Arc<Snapshot>>, backends: Arc<parking_lot::RwLock<Backends>>) -> Self {
        Self { snapshot, backends, next: AtomicUsize::new(0), pool: Arc::default(), response_timeout: RESPONSE_TIMEOUT }
    }
}

pub(super) fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body)).map_err(|never: Infallible| -> hyper::Error { match never {} }).boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// Accepts connections until aborted, each with Nagle off, handing it to `serve`; a failed
/// accept (e.g. out of file descriptors) is logged and retried shortly.
async fn accept_loop(listener: TcpListener, mut serve: impl FnMut(TcpStream, SocketAddr)) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                serve(stream, peer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting an ingress connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts plain connections (HTTP/1.1, and HTTP/2 with prior knowledge) until aborted.
pub async fn serve_http(listener: TcpListener, shared: Arc<Shared>) {
    accept_loop(listener, |stream, peer| {
        tokio::spawn(serve_connection(TokioIo::new(stream), peer, "http", Arc::clone(&shared)));
    })
    .await;
}

/// Accepts TLS connections (certificate by SNI, HTTP/2 or HTTP/1.1 by ALPN) until aborted.
pub async fn serve_https(listener: TcpListener, tls: Arc<rustls::ServerConfig>, shared: Arc<Shared>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    accept_loop(listener, |stream, peer| {
        let acceptor = acceptor.clone();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), peer, "https", shared).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    })
    .await;
}

async fn serve_connection<I>(io: TokioIo<I>, peer: SocketAddr, scheme: &'static str, shared: Arc<Shared>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(&shared, req, peer, scheme).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
        tracing::debug!(%peer, error = %e, "ingress connection");
    }
}

/// The request's host: HTTP/2's `:authority`, else `Host`.
fn request_host(req: &Request<Incoming>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
        .unwrap_or_default()
}

/// Routes and forwards one request.
pub async fn handle(shared: &Shared, req: Request<Incoming>, peer: SocketAddr, scheme: &'static str) -> Response<Body> {
    let host = request_host(&req);
    let path = req.uri().path().to_string();
    let span = tracing::debug_span!("ingress_request", %host, %path, method = %req.method());
    async move {
        let snapshot = Arc::clone(&shared.snapshot.borrow());
        let backend = match snapshot.routes.table.lookup(&host, &path) {
            Route::NotFound => {
                return text(StatusCode::NOT_FOUND, "404 page not found: no ingress rule matches\n".into())
            }
            Route::Backend(b) => b.clone(),
        };
        let (namespace, name, port) = match backend {
            Backend::Unavailable(reason) => {
                return text(StatusCode::SERVICE_UNAVAILABLE, format!("503 Service Unavailable: {reason}\n"))
            }
            Backend::Service { namespace, name, port } => (namespace, name, port),
        };
        let endpoints = match shared.backends.read().endpoints(&namespace, &name, &port) {
            Ok(e) => e,
            Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("503 Service Unavailable: {e}\n")),
        };
        let start = shared.next.fetch_add(1, Ordering::Relaxed);
        if super::upgrade::is_upgrade(&req) {
            return super::upgrade::forward(req, &endpoints, start, &host, peer, scheme, shared.response_timeout).await;
        }
        forward(&shared.pool, req, &endpoints, start, &host, peer, scheme, shared.response_timeout).await
    }
    .instrument(span)
    .await
}

/// Hop-by-hop headers (RFC 9110 7.6.1), never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove(header::UPGRADE);
}

/// The request as the backend gets it: HTTP/1.1, origin-form URI, the client's host, and the
/// forwarding headers.
pub(super) fn backend_request(req: Request<Incoming>, host: &str, peer: SocketAddr, scheme: &str) -> Request<Incoming> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = path.parse::<Uri>().unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Ok(h) = HeaderValue::from_str(host) {
        parts.headers.insert(header::HOST, h.clone());
        parts.headers.insert("x-forwarded-host", h);
    }
    let client = peer.ip().to_string();
    let forwarded_for = match parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.is_empty() => format!("{prior}, {client}"),
        _ => client,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        parts.headers.insert("x-forwarded-for", v);
    }
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }));
    Request::from_parts(parts, body)
}

/// Connects to the first endpoint (from `start`, round robin) that accepts, at most [`MAX_ATTEMPTS`].
pub(super) async fn connect(endpoints: &[SocketAddr], start: usize) -> Option<(TcpStream, SocketAddr)> {
    let n = endpoints.len();
    for i in 0..n.min(MAX_ATTEMPTS) {
        let addr = endpoints[start.wrapping_add(i) % n];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Some((stream, addr)),
            Ok(Err(e)) => tracing::debug!(%addr, error = %e, "endpoint refused; trying the next"),
            Err(_) => tracing::debug!(%addr, "connect timed out; trying the next"),
        }
    }
    None
}

/// Idle HTTP/1.1 connections to endpoints, reused by later requests.
#[derive(Default)]
pub struct Pool {
    idle: parking_lot::Mutex<HashMap<SocketAddr, Vec<SendRequest<Incoming>>>>,
}

/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 256;

impl Pool {
    /// An idle connection to `addr` that can take a request now.
    fn take(&self, addr: SocketAddr) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(&addr)?;
        while let Some(sender) = list.pop() {
            if sender.is_ready() && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Returns `sender` to the pool once its response is read to the end (then the connection
    /// can take another request); a connection that closes meanwhile is dropped.
    fn give_back(self: &Arc<Self>, addr: SocketAddr, mut sender: SendRequest<Incoming>) {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let mut idle = pool.idle.lock();
                let list = idle.entry(addr).or_default();
                if list.len() < MAX_IDLE {
                    list.push(sender);
                }
            }
        });
    }
}

/// A new HTTP/1.1 connection to the first endpoint (from `start`, round robin) that accepts.
async fn open(endpoints: &[SocketAddr], start: usize) -> Result<(SendRequest<Incoming>, SocketAddr), String> {
    let Some((stream, addr)) = connect(endpoints, start).await else {
        return Err("no endpoint accepted a connection".into());
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%addr, error = %e, "backend connection");
        }
    });
    Ok((sender, addr))
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    pool: &Arc<Pool>,
    req: Request<Incoming>,
    endpoints: &[SocketAddr],
    start: usize,
    host: &str,
    peer: SocketAddr,
    scheme: &'static str,
    response_timeout: Duration,
) -> Response<Body> {
    let mut pending = Some(backend_request(req, host, peer, scheme));
    let n = endpoints.len();
    // An idle connection to the endpoint round robin picks, while one takes the request; a
    // connection found closed gives the request back unsent.
    let preferred = endpoints[start % n];
    let mut sent = None;
    while let Some(request) = pending.take() {
        let Some(mut sender) = pool.take(preferred) else {
            pending = Some(request);
            break;
        };
        match tokio::time::timeout(response_timeout, sender.try_send_request(request)).await {
            Err(_) => return timed_out(),
            Ok(Ok(resp)) => sent = Some((resp, sender, preferred)),
            Ok(Err(mut e)) => match e.take_message() {
                Some(unsent) => pending = Some(unsent),
                None => return text(StatusCode::BAD_GATEWAY, format!("502 Bad Gateway: {}\n", e.into_error())),
            },
        }
    }
    let (resp, sender, addr) = match (sent, pending) {
        (Some(sent), _) => sent,
        (None, None) => return text(StatusCode::BAD_GATEWAY, "502 Bad Gateway: the request was lost\n".into()),
        (None, Some(request)) => {
            let (mut sender, addr) = match open(endpoints, start).await {
                Ok(opened) => opened,
                Err(e) => return text(StatusCode::BAD_GATEWAY, format!("502 Bad Gateway: {e}\n")),
            };
            match tokio::time::timeout(response_timeout, sender.send_request(request)).await {
                Err(_) => return timed_out(),
                Ok(Err(e)) => return text(StatusCode::BAD_GATEWAY, format!("502 Bad Gateway: {e}\n")),
                Ok(Ok(resp)) => (resp, sender, addr),
            }
        }
    };
    pool.give_back(addr, sender);
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}

pub(super) fn timed_out() -> Response<Body> {
    text(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Timeout: the backend did not answer in time\n".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    /// A backend on 127.0.0.1 answering `ok` with the request's forwarding headers, `/slow` after 2 s.
    async fn backend() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let body = format!("ok {} {} {}", h("host"), h("x-forwarded-proto"), h("x-forwarded-for"));
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        port
    }

    /// An ingress on 127.0.0.1 (its port) routing `shop.local/` to Service `d/web`, whose endpoints
    /// are `addresses` on `port`.
    async fn front(port: u16, addresses: &[&str], response_timeout: Duration) -> u16 {
        use super::super::route::{Builder, PathMatch, PortRef};
        let mut routes = Builder::default();
        let web = Backend::Service { namespace: "d".into(), name: "web".into(), port: PortRef::Number(80) };
        routes.route(Some("shop.local"), "/", PathMatch::Prefix, web);
        let snapshot = Snapshot {
            routes: super::super::source::Routes { table: routes.build(), tls: Default::default() },
            certs: Default::default(),
        };
        let (publish, snapshot) = watch::channel(Arc::new(snapshot));
        std::mem::forget(publish);
        let mut backends = Backends::new("n");
        backends.put_service(
            serde_json::from_value(serde_json::json!({"metadata": {"name": "web", "namespace": "d"},
                "spec": {"clusterIP": "10.43.0.9", "ports": [{"port": 80, "targetPort": port}]}}))
            .unwrap(),
        );
        let endpoints: Vec<_> = addresses.iter().map(|a| serde_json::json!({"addresses": [a]})).collect();
        backends.put_slice(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-1", "namespace": "d", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "ports": [{"port": port, "protocol": "TCP"}],
                "endpoints": endpoints}))
            .unwrap(),
        );
        let mut shared = Shared::new(snapshot, Arc::new(parking_lot::RwLock::new(backends)));
        shared.response_timeout = response_timeout;
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_port = front.local_addr().unwrap().port();
        tokio::spawn(serve_http(front, Arc::new(shared)));
        front_port
    }

    #[tokio::test]
    async fn forwards_retries_a_dead_endpoint_and_times_out_a_slow_one() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = backend().await;
        // 127.0.0.2 refuses: nothing listens there on that port.
        let front_port = front(port, &["127.0.0.1", "127.0.0.2"], Duration::from_millis(300)).await;
        let client = reqwest::Client::new();
        let get = |path: &str, host: &str| {
            client.get(format!("http://127.0.0.1:{front_port}{path}")).header("host", host.to_string()).send()
        };
        for i in 0..6 {
            let resp = get("/", "shop.local").await.unwrap();
            assert_eq!(resp.status(), 200, "request {i}");
            assert_eq!(resp.text().await.unwrap(), "ok shop.local http 127.0.0.1");
        }
        assert_eq!(get("/slow", "shop.local").await.unwrap().status(), 504);
        assert_eq!(get("/", "other.local").await.unwrap().status(), 404);
    }

    /// A backend that switches to an echo protocol when asked (`Upgrade: echo`, answering with the
    /// `Sec-Echo` header it got), and refuses other upgrades with 400.
    async fn echo_backend() -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    if !head.contains("upgrade: echo") || !head.contains("connection: upgrade") {
                        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nno").await;
                        return;
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\nsec-echo: yes\r\n\r\n")
                        .await;
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        port
    }

    /// Sends `head` to the ingress on `port` and returns the connection with the response head read.
    async fn raw_request(port: u16, head: &str) -> (TcpStream, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "{}", String::from_utf8_lossy(&got));
            got.push(byte[0]);
        }
        (stream, String::from_utf8_lossy(&got).into_owned())
    }

    #[tokio::test]
    async fn upgrades_are_passed_through_and_spliced() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port = echo_backend().await;
        let front_port = front(port, &["127.0.0.1"], Duration::from_secs(5)).await;
        let (mut stream, head) = raw_request(
            front_port,
            "GET /ws HTTP/1.1\r\nHost: shop.local\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await;
        let lower = head.to_ascii_lowercase();
        assert!(lower.starts_with("http/1.1 101"), "{head}");
        assert!(lower.contains("upgrade: echo") && lower.contains("sec-echo: yes"), "{head}");
        for message in ["ping", "a longer message both ways"] {
            stream.write_all(message.as_bytes()).await.unwrap();
            let mut back = vec![0u8; message.len()];
            stream.read_exact(&mut back).await.unwrap();
            assert_eq!(back, message.as_bytes());
        }
        // An upgrade the backend refuses comes back as its answer.
        let (_, head) = raw_request(
            front_port,
            "GET /ws HTTP/1.1\r\nHost: shop.local\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    }
}
