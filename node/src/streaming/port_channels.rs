//! Port-forward in Kubernetes' WebSocket channel form (the kubelet's `v4.channel.k8s.io`
//! port-forward, as client libraries such as the Python client's `stream.portforward` speak it):
//! the ports come in the query (`?ports=8080,9090`), port number *i* gets channel 2*i* for data and
//! 2*i*+1 for errors, each binary message starts with its channel byte, and the server first sends
//! the port (2 bytes, little-endian) on both of a port's channels. Each port is one connection to
//! the pod; the socket closes when all of them ended.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use tokio::sync::mpsc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};

use super::port_forward::{dial_error, splice, PodAddress, CONNECT_BOUND};
use super::protocol::frame;

/// The subprotocols served (binary; no subprotocol is the same).
pub const PROTOCOLS: [&str; 1] = ["v4.channel.k8s.io"];
/// The most ports one socket may forward (two channels each, channel numbers are one byte).
pub const MAX_PORTS: usize = 64;

/// The ports of a `?ports=` query (repeated or comma-separated); an error is the 400's message.
pub fn ports(query: &str) -> Result<Vec<u16>, String> {
    let url = format!("http://x/?{query}");
    let parsed = reqwest::Url::parse(&url).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (key, value) in parsed.query_pairs() {
        if key != "ports" && key != "port" {
            continue;
        }
        for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let port = p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("invalid port: {p:?}"))?;
            out.push(port);
        }
    }
    if out.is_empty() {
        return Err("query parameter \"ports\" is required".into());
    }
    if out.len() > MAX_PORTS {
        return Err(format!("at most {MAX_PORTS} ports can be forwarded at once"));
    }
    Ok(out)
}

/// Serves one socket until every port's connection ended.
pub async fn run(socket: WebSocket, ports: Vec<u16>, pod: PodAddress) {
    let (mut sink, mut incoming) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
        let _ = sink.close().await;
    });
    let mut to_pods = Vec::with_capacity(ports.len());
    let mut forwards = Vec::with_capacity(ports.len());
    for (i, port) in ports.iter().enumerate() {
        let data = u8::try_from(i.saturating_mul(2)).unwrap_or(u8::MAX);
        let error = data.saturating_add(1);
        for channel in [data, error] {
            let _ = tx.send(Message::Binary(frame(channel, &port.to_le_bytes()).into())).await;
        }
        let (to_pod, from_client) = mpsc::channel::<Bytes>(16);
        to_pods.push(Some(to_pod));
        forwards.push(tokio::spawn(forward(pod.clone(), *port, data, from_client, tx.clone())));
    }
    drop(tx);
    let input = async {
        while let Some(Ok(message)) = incoming.next().await {
            let data = match message {
                Message::Binary(data) => data,
                // kube-apiserver takes text frames as bytes too (the Python client sends str data so).
                Message::Text(text) => bytes::Bytes::copy_from_slice(text.as_str().as_bytes()),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, rest)) = data.split_first() else { continue };
            if channel % 2 != 0 || rest.is_empty() {
                continue;
            }
            if let Some(slot) = to_pods.get_mut(usize::from(channel / 2)) {
                let sent = match slot.as_ref() {
                    Some(sender) => sender.send(Bytes::copy_from_slice(rest)).await.is_ok(),
                    None => true,
                };
                if !sent {
                    *slot = None;
                }
            }
        }
        // The client is done sending: the pods see the end of their input.
        to_pods.clear();
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = futures::future::join_all(forwards) => {}
        () = input => {}
    }
    let _ = writer.await;
}

/// One port: dial the pod, copy both ways; a failure goes on the error channel in the kubelet's
/// words.
async fn forward(
    pod: PodAddress,
    port: u16,
    data: u8,
    mut from_client: mpsc::Receiver<Bytes>,
    tx: mpsc::Sender<Message>,
) {
    let addr = SocketAddr::new(pod.ip, port);
    let tcp = match tokio::time::timeout(CONNECT_BOUND, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        failed => {
            let cause = match failed {
                Ok(Err(e)) => dial_error(addr, &e),
                _ => format!("dial tcp {addr}: i/o timeout"),
            };
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: failed to connect to {addr} in the pod's network: {cause}",
                pod.name, pod.uid
            );
            tracing::info!(%message, "port-forward failed");
            let _ = tx.send(Message::Binary(frame(data.saturating_add(1), message.as_bytes()).into())).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let send = move |chunk: Bytes| {
        let tx = tx.clone();
        async move { tx.send(Message::Binary(frame(data, &chunk).into())).await.is_ok() }
    };
    splice(tcp, &mut from_client, send, std::future::pending()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_repeated_or_comma_separated() {
        assert_eq!(ports("ports=8080"), Ok(vec![8080]));
        assert_eq!(ports("ports=80,443&ports=9"), Ok(vec![80, 443, 9]));
        assert!(ports("").is_err());
        assert!(ports("ports=0").is_err());
        assert!(ports("ports=http").is_err());
        assert!(ports(&format!("ports={}", vec!["1"; MAX_PORTS + 1].join(","))).is_err());
    }
}
