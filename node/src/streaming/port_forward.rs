//! `/portForward/{namespace}/{pod}[/{uid}]`: Kubernetes port-forward over SPDY (a plain upgrade
//! with protocol `portforward.k8s.io`, or tunnelled in WebSocket as `SPDY/3.1+portforward.k8s.io`).
//! The client opens a pair of streams per forwarded connection, an error stream and a data
//! stream with the same `requestID` and `port` headers; the kubelet connects to the pod's IP at that
//! port (reachable from the node for Wasm and OCI pods alike) and copies both ways. A connection
//! that cannot be made is reported on the error stream in the kubelet's words; the SPDY
//! connection stays up for the next pair.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;

use super::spdy::{Connection, Incoming};
use super::upgrade::{self, Transport};
use super::{StreamError, Streams};

/// The SPDY stream protocol of port-forward.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol tunnelling it (kubectl 1.31+).
pub const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// How long connecting to the pod may take.
const CONNECT_BOUND: Duration = Duration::from_secs(10);
/// How long the other direction gets once one ended (socat's and containerd's half a second).
const LINGER: Duration = Duration::from_millis(500);
/// Pairs waiting for their second stream, at most.
const MAX_PENDING: usize = 1024;

/// The pod a forward goes to.
#[derive(Clone, Debug)]
pub struct PodAddress {
    pub name: String,
    pub uid: String,
    pub ip: IpAddr,
}

fn plain(code: StatusCode, message: String) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

/// Serves one port-forward request: finds the pod, upgrades, forwards until the client goes.
pub async fn serve(
    streams: Option<Arc<dyn Streams>>,
    namespace: String,
    pod: String,
    uid: Option<String>,
    request: Request,
) -> Response {
    let Some(streams) = streams else {
        return plain(StatusCode::NOT_FOUND, "port-forward is not served by this kubelet".into());
    };
    let address = match streams.pod_address(&namespace, &pod, uid.as_deref()).await {
        Ok(a) => a,
        Err(e) => {
            let code = match e {
                StreamError::NotFound(_) => StatusCode::NOT_FOUND,
                StreamError::Refused(_) => StatusCode::BAD_REQUEST,
                StreamError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return plain(code, e.to_string());
        }
    };
    let tunnelled = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == TUNNEL);
    let span = tracing::info_span!("port_forward", %namespace, pod = %address.name, ip = %address.ip);
    match upgrade::transport(request, &[PROTOCOL]).await {
        Err(response) => response,
        Ok(Transport::WebSocket(_)) if !tunnelled => {
            plain(StatusCode::BAD_REQUEST, format!("port-forward over WebSocket needs the {TUNNEL} subprotocol"))
        }
        Ok(Transport::WebSocket(ws)) => ws.protocols([TUNNEL]).on_upgrade(move |socket| {
            async move {
                tracing::info!(transport = "websocket", "port-forward connection");
                run(Connection::serve(upgrade::websocket_bytes(socket)), address).await
            }
            .instrument(span)
        }),
        Ok(Transport::Spdy { on_upgrade, protocol }) => {
            tokio::spawn(
                async move {
                    match upgrade::spdy_io(on_upgrade).await {
                        Ok(io) => {
                            tracing::info!(transport = "spdy", "port-forward connection");
                            run(Connection::serve(io), address).await
                        }
                        Err(e) => tracing::debug!(error = %e, "the SPDY upgrade failed"),
                    }
                }
                .instrument(span),
            );
            upgrade::spdy_switching(protocol)
        }
    }
}

/// One forwarded connection's streams as they arrive.
#[derive(Default)]
struct Pair {
    data: Option<Incoming>,
    error: Option<Incoming>,
}

/// The pair a stream belongs to: its `requestID`, or for old clients without one the id of the
/// pair's error stream (the data stream follows it: id + 2), as the kubelet guesses.
fn request_id(stream: &Incoming, kind: &str) -> String {
    match stream.headers.get("requestid") {
        Some(id) => id.to_string(),
        None if kind == "data" => format!("stream-{}", stream.id.saturating_sub(2)),
        None => format!("stream-{}", stream.id),
    }
}

/// Serves the streams of one connection.
async fn run(mut conn: Connection, pod: PodAddress) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    loop {
        let stream = tokio::select! {
            s = conn.streams.recv() => s,
            () = conn.closed.cancelled() => None,
        };
        let Some(stream) = stream else { break };
        let kind = stream.headers.get("streamtype").unwrap_or_default().to_string();
        let id = request_id(&stream, &kind);
        if !pending.contains_key(&id) && pending.len() >= MAX_PENDING {
            tracing::debug!(request = %id, "too many incomplete port-forward pairs; resetting the stream");
            stream.out.reset().await;
            continue;
        }
        let pair = pending.entry(id.clone()).or_default();
        let unexpected = match kind.as_str() {
            "data" if pair.data.is_none() => {
                pair.data = Some(stream);
                None
            }
            "error" if pair.error.is_none() => {
                pair.error = Some(stream);
                None
            }
            _ => Some(stream),
        };
        if let Some(stream) = unexpected {
            tracing::debug!(kind = %kind, request = %id, "unexpected port-forward stream; resetting it");
            if pending.get(&id).is_some_and(|p| p.data.is_none() && p.error.is_none()) {
                pending.remove(&id);
            }
            stream.out.reset().await;
            continue;
        }
        let Some(pair) = pending.get(&id) else { continue };
        if pair.data.is_some() && pair.error.is_some() {
            if let Some(Pair { data: Some(data), error: Some(error) }) = pending.remove(&id) {
                let span = tracing::debug_span!("forward", request = %id);
                tokio::spawn(forward(data, error, pod.clone()).instrument(span));
            }
        }
    }
    tracing::debug!("port-forward connection ended");
}

/// The port a stream asks for (a decimal in 1..=65535).
fn port_of(stream: &Incoming) -> Option<u16> {
    stream.headers.get("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p != 0)
}

/// Words a failed dial as Go does (`dial tcp 10.0.0.5:81: connect: connection refused`).
fn dial_error(addr: SocketAddr, e: &std::io::Error) -> String {
    let cause = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        std::io::ErrorKind::TimedOut => "i/o timeout".to_string(),
        std::io::ErrorKind::HostUnreachable => "connect: no route to host".to_string(),
        std::io::ErrorKind::NetworkUnreachable => "connect: network is unreachable".to_string(),
        _ => e.to_string(),
    };
    format!("dial tcp {addr}: {cause}")
}

/// Forwards one connection: dial the pod, copy both ways, report a failure on the error stream,
/// then half-close both streams (kubectl waits for the error stream's end).
async fn forward(mut data: Incoming, error: Incoming, pod: PodAddress) {
    let outcome = match port_of(&data) {
        None => Err(format!("invalid port {:?}", data.headers.get("port").unwrap_or_default())),
        Some(port) => {
            let addr = SocketAddr::new(pod.ip, port);
            match tokio::time::timeout(CONNECT_BOUND, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    copy(&mut data, tcp).await;
                    Ok(())
                }
                Ok(Err(e)) => {
                    Err(format!("failed to connect to {addr} in the pod's network: {}", dial_error(addr, &e)))
                }
                Err(_) => {
                    Err(format!("failed to connect to {addr} in the pod's network: dial tcp {addr}: i/o timeout"))
                }
            }
        }
    };
    if let Err(cause) = outcome {
        let port = data.headers.get("port").unwrap_or_default().to_string();
        let message = format!("error forwarding port {port} to pod {}, uid {}: {cause}", pod.name, pod.uid);
        tracing::info!(%message, "port-forward failed");
        let _ = error.out.write(message.as_bytes()).await;
    }
    data.out.finish().await;
    error.out.finish().await;
}

/// Copies between the data stream and the pod's socket until one direction ends (then the other
/// gets [`LINGER`]) or the client resets the stream.
async fn copy(data: &mut Incoming, tcp: TcpStream) {
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let out = data.out.clone();
    let reset = data.reset.clone();
    let inbound = &mut data.data;
    let up = async {
        while let Some(chunk) = inbound.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write(buf.get(..n).unwrap_or_default()).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    tokio::pin!(up, down);
    let linger = tokio::select! {
        () = &mut up => tokio::time::timeout(LINGER, &mut down).await.map(|_| ()),
        () = &mut down => tokio::time::timeout(LINGER, &mut up).await.map(|_| ()),
        () = reset.cancelled() => Ok(()),
    };
    if linger.is_err() {
        tracing::debug!("one direction did not end in time after the other");
    }
}
