//! `/portForward/{namespace}/{pod}[/{uid}]`: Kubernetes port-forward over SPDY (a plain upgrade
//! with protocol `portforward.k8s.io`, or tunnelled in WebSocket as `SPDY/3.1+portforward.k8s.io`).
//! The client opens a pair of streams per forwarded connection, an error stream and a data
//! stream with the same `requestID` and `port` headers; the kubelet connects to the pod's IP at that
//! port (reachable from the node for Wasm and OCI pods alike) and copies both ways. A connection
//! that cannot be made is reported on the error stream in the kubelet's words; the SPDY
//! connection stays up for the next pair. A WebSocket without the SPDY tunnel is Kubernetes'
//! channel form of port-forward (`?ports=`, [`super::port_channels`]), as client libraries use it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
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
pub(super) const CONNECT_BOUND: Duration = Duration::from_secs(10);
/// How long the other direction gets once one ended (socat's and containerd's half a second).
pub(super) const LINGER: Duration = Duration::from_millis(500);
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
    let query = request.uri().query().unwrap_or_default().to_string();
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
        Ok(Transport::WebSocket(ws)) if !tunnelled => match super::port_channels::ports(&query) {
            Ok(ports) => ws.protocols(super::port_channels::PROTOCOLS).on_upgrade(move |socket| {
                async move {
                    tracing::info!(transport = "websocket-channels", ?ports, "port-forward connection");
                    super::port_channels::run(socket, ports, address).await
                }
                .instrument(span)
            }),
            Err(message) => plain(StatusCode::BAD_REQUEST, message),
        },
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
pub(super) fn dial_error(addr: SocketAddr, e: &std::io::Error) -> String {
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
                    let _ = tcp.set_nodelay(true);
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
    let out = data.out.clone();
    let send = move |chunk: Bytes| {
        let out = out.clone();
        async move { out.write(&chunk).await.is_ok() }
    };
    splice(tcp, &mut data.data, send, data.reset.clone().cancelled_owned()).await;
}

/// Copies both ways between a client's stream and a pod's socket, whatever carries the stream
/// (SPDY, WebSocket channels): `inbound` is written to the pod, whose write side is then shut;
/// what the pod sends is handed to `send` until it returns false. When one direction ends the
/// other gets [`LINGER`] to finish; `stop` ends both at once (a reset stream).
pub(super) async fn splice<S, F>(
    tcp: TcpStream,
    inbound: &mut tokio::sync::mpsc::Receiver<Bytes>,
    mut send: S,
    stop: impl std::future::Future<Output = ()>,
) where
    S: FnMut(Bytes) -> F,
    F: std::future::Future<Output = bool>,
{
    let (mut from_pod, mut to_pod) = tcp.into_split();
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
                    if !send(Bytes::copy_from_slice(buf.get(..n).unwrap_or_default())).await {
                        break;
                    }
                }
            }
        }
    };
    tokio::pin!(up, down, stop);
    let linger = tokio::select! {
        () = &mut up => tokio::time::timeout(LINGER, &mut down).await.map(|_| ()),
        () = &mut down => tokio::time::timeout(LINGER, &mut up).await.map(|_| ()),
        () = &mut stop => Ok(()),
    };
    if linger.is_err() {
        tracing::debug!("one direction did not end in time after the other");
    }
}

#[cfg(test)]
mod tests {
    use super::super::spdy::frame::{self, Frame, FLAG_FIN};
    use super::super::spdy::headers::{Deflater, Headers, Inflater};
    use super::*;
    use bytes::{Bytes, BytesMut};
    use std::collections::HashMap as Map;

    /// A SPDY client speaking as kubectl does, over an in-memory pipe.
    struct Client {
        io: tokio::io::DuplexStream,
        deflater: Deflater,
        inflater: Inflater,
        buf: BytesMut,
        next_id: u32,
    }

    impl Client {
        async fn send(&mut self, frame: Frame) {
            let mut out = BytesMut::new();
            frame::encode(&frame, &mut out);
            self.io.write_all(&out).await.expect("write");
        }

        /// Opens the error and data streams of one forwarded connection; returns their ids.
        async fn pair(&mut self, request: &str, port: &str) -> (u32, u32) {
            let mut ids = [0u32; 2];
            for (i, kind) in ["error", "data"].iter().enumerate() {
                let h = Headers(vec![
                    ("streamtype".into(), (*kind).into()),
                    ("port".into(), port.into()),
                    ("requestid".into(), request.into()),
                ]);
                let block = self.deflater.write(&h).expect("deflate");
                let id = self.next_id;
                self.next_id += 2;
                // kubectl half-closes the error stream at once.
                let flags = if *kind == "error" { FLAG_FIN } else { 0 };
                self.send(Frame::SynStream { stream_id: id, associated: 0, priority: 0, flags, headers: block.into() })
                    .await;
                ids[i] = id;
            }
            (ids[0], ids[1])
        }

        /// Reads frames until every stream in `until` has ended; the data per stream.
        async fn collect(&mut self, until: &[u32]) -> Map<u32, Vec<u8>> {
            let mut data: Map<u32, Vec<u8>> = Map::new();
            let mut ended = Vec::new();
            while !until.iter().all(|id| ended.contains(id)) {
                let frame = loop {
                    if let Some(f) = frame::decode(&mut self.buf).expect("frame") {
                        break f;
                    }
                    assert!(self.io.read_buf(&mut self.buf).await.expect("read") > 0, "connection ended");
                };
                match frame {
                    Frame::SynReply { headers, .. } => {
                        self.inflater.read(&headers).expect("reply headers");
                    }
                    Frame::Data { stream_id, flags, data: bytes } => {
                        data.entry(stream_id).or_default().extend_from_slice(&bytes);
                        if flags & FLAG_FIN != 0 {
                            ended.push(stream_id);
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            data
        }
    }

    async fn echo_server() -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = w.write_all(b"echo:").await;
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        (port, task)
    }

    #[tokio::test]
    async fn a_refused_port_is_reported_and_the_connection_serves_the_next_pairs() {
        let (port, server) = echo_server().await;
        // A port nothing listens on: bind one, then free it.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let refused = closed.local_addr().expect("addr").port();
        drop(closed);
        let (a, b) = tokio::io::duplex(1 << 20);
        let pod = PodAddress { name: "web".into(), uid: "u1".into(), ip: IpAddr::from([127, 0, 0, 1]) };
        let serving = tokio::spawn(run(Connection::serve(b), pod));
        let mut c = Client {
            io: a,
            deflater: Deflater::new().expect("deflater"),
            inflater: Inflater::default(),
            buf: BytesMut::new(),
            next_id: 1,
        };

        let (err, data) = c.pair("0", &refused.to_string()).await;
        let got = c.collect(&[err, data]).await;
        let message = String::from_utf8_lossy(got.get(&err).map(Vec::as_slice).unwrap_or_default()).into_owned();
        assert!(
            message.starts_with(&format!("error forwarding port {refused} to pod web, uid u1: "))
                && message.ends_with(&format!("dial tcp 127.0.0.1:{refused}: connect: connection refused")),
            "{message}"
        );

        // Two more connections at once on the same SPDY connection, to the listening port.
        let (e1, d1) = c.pair("1", &port.to_string()).await;
        let (e2, d2) = c.pair("2", &port.to_string()).await;
        for (id, text) in [(d1, &b"one"[..]), (d2, &b"two"[..])] {
            c.send(Frame::Data { stream_id: id, flags: 0, data: Bytes::from_static(text) }).await;
            c.send(Frame::Data { stream_id: id, flags: FLAG_FIN, data: Bytes::new() }).await;
        }
        let got = c.collect(&[e1, d1, e2, d2]).await;
        assert_eq!(got.get(&d1).map(Vec::as_slice), Some(&b"echo:one"[..]));
        assert_eq!(got.get(&d2).map(Vec::as_slice), Some(&b"echo:two"[..]));
        assert!(got.get(&e1).is_none_or(Vec::is_empty) && got.get(&e2).is_none_or(Vec::is_empty));

        // A bad port header is an error on the error stream, too.
        let (e3, d3) = c.pair("3", "http").await;
        let got = c.collect(&[e3, d3]).await;
        assert!(String::from_utf8_lossy(&got[&e3]).contains("invalid port"), "{got:?}");

        drop(c);
        tokio::time::timeout(Duration::from_secs(5), serving).await.expect("run ends with the connection").ok();
        server.abort();
    }
}
