//! Which streaming transport a kubelet request asks for, and getting the upgraded byte stream:
//! WebSocket (answered by [`axum`]'s upgrade, with a subprotocol) or SPDY/3.1 (`Upgrade: SPDY/3.1`
//! and `X-Stream-Protocol-Version` negotiated as Kubernetes' `httpstream.Handshake` does: the
//! first of the client's versions the server serves; none offered is the legacy protocol, none in
//! common is 403). A WebSocket that tunnels SPDY becomes a byte stream with [`websocket_bytes`].

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The header naming stream protocol versions.
pub const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// The upgrade token of SPDY/3.1.
pub const SPDY: &str = "SPDY/3.1";

/// The transport a request asks for.
pub enum Transport {
    WebSocket(WebSocketUpgrade),
    /// A SPDY upgrade; the negotiated protocol (`None`: the client offered none).
    Spdy {
        on_upgrade: hyper::upgrade::OnUpgrade,
        protocol: Option<&'static str>,
    },
}

fn plain(code: StatusCode, message: String) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

fn upgrade_token(headers: &HeaderMap) -> Option<String> {
    headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase)
}

/// The protocol both sides speak: the first of the client's that the server serves.
pub fn negotiate(client: &[String], server: &[&'static str]) -> Option<&'static str> {
    client.iter().find_map(|c| server.iter().copied().find(|s| s == c))
}

/// Picks the transport of `request`; `spdy_protocols` are the SPDY stream protocols served. An
/// error is the response to send.
pub async fn transport(request: Request, spdy_protocols: &[&'static str]) -> Result<Transport, Response> {
    let (mut parts, _body) = request.into_parts();
    match upgrade_token(&parts.headers).as_deref() {
        Some("websocket") => WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map(Transport::WebSocket)
            .map_err(IntoResponse::into_response),
        Some(token) if token == SPDY.to_ascii_lowercase() => {
            let offered: Vec<String> = parts
                .headers
                .get_all(PROTOCOL_HEADER)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            let protocol = negotiate(&offered, spdy_protocols);
            if protocol.is_none() && !offered.is_empty() {
                let mut response = plain(
                    StatusCode::FORBIDDEN,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {spdy_protocols:?}"
                    ),
                );
                if let Ok(v) = HeaderValue::from_str(&spdy_protocols.join(", ")) {
                    response.headers_mut().insert("x-accepted-stream-protocol-versions", v);
                }
                return Err(response);
            }
            let on_upgrade = parts
                .extensions
                .remove::<hyper::upgrade::OnUpgrade>()
                .ok_or_else(|| plain(StatusCode::BAD_REQUEST, "the connection cannot be upgraded".into()))?;
            Ok(Transport::Spdy { on_upgrade, protocol })
        }
        _ => Err(plain(StatusCode::BAD_REQUEST, "Upgrade request required".into())),
    }
}

/// The `101 Switching Protocols` of a SPDY upgrade.
pub fn spdy_switching(protocol: Option<&str>) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(SPDY));
    if let Some(v) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(PROTOCOL_HEADER, v);
    }
    response
}

/// The upgraded connection of a SPDY upgrade as a byte stream.
pub async fn spdy_io(
    on_upgrade: hyper::upgrade::OnUpgrade,
) -> Result<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>, hyper::Error> {
    on_upgrade.await.map(hyper_util::rt::TokioIo::new)
}

/// A WebSocket whose binary messages carry a byte stream (Kubernetes' tunnelling of SPDY in
/// WebSocket): bytes written go out as binary messages, binary messages come in as bytes; a close
/// either way ends the other.
pub fn websocket_bytes(socket: WebSocket) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut incoming) = socket.split();
        let (mut read, mut write) = tokio::io::split(theirs);
        let inbound = async {
            while let Some(Ok(message)) = incoming.next().await {
                let stop = match message {
                    Message::Binary(data) => write.write_all(&data).await.is_err(),
                    Message::Close(_) => true,
                    _ => false,
                };
                if stop {
                    break;
                }
            }
            let _ = write.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let data = bytes::Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                        if sink.send(Message::Binary(data)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let normal = axum::extract::ws::CloseFrame { code: 1000, reason: "".into() };
            let _ = sink.send(Message::Close(Some(normal))).await;
            let _ = sink.close().await;
        };
        // The stream ends when this side is done writing; the client's input is read until then.
        tokio::select! {
            () = outbound => {}
            () = async { inbound.await; std::future::pending::<()>().await } => {}
        }
    });
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_first_served_protocol_wins() {
        let client: Vec<String> = ["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"].map(String::from).into();
        assert_eq!(negotiate(&client, &["channel.k8s.io", "v4.channel.k8s.io"]), Some("v4.channel.k8s.io"));
        assert_eq!(negotiate(&client, &["portforward.k8s.io"]), None);
        assert_eq!(negotiate(&[], &["portforward.k8s.io"]), None);
    }
}
