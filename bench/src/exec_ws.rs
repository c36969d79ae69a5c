//! An exec client of its own (no kubectl process): a WebSocket with `v5.channel.k8s.io` to the API
//! server's `pods/exec`, timing the first byte of stdout and the exit status on the error channel.
//! What kubectl adds on top (its start, kubeconfig, discovery) is left out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::node_cluster::NodeServer;

/// stdout and the error channel (the exit status) of the channel protocol.
const STDOUT: u8 = 1;
const ERROR: u8 = 3;

/// One exec of `command` in `pod`: (time to the first stdout byte, time to the exit status).
pub async fn exec_once(server: &NodeServer, pod: &str, command: &[&str]) -> Result<(Option<Duration>, Duration)> {
    let port = server.url.rsplit(':').next().context("no port in the server URL")?;
    let mut query: Vec<String> = command.iter().map(|c| format!("command={c}")).collect();
    query.push("stdout=true".into());
    let url = format!("wss://127.0.0.1:{port}/api/v1/namespaces/default/pods/{pod}/exec?{}", query.join("&"));
    let mut request = url.into_client_request()?;
    let headers = request.headers_mut();
    headers.insert("Authorization", format!("Bearer {}", server.token).parse()?);
    headers.insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse()?);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(server.tls()?));
    let started = Instant::now();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>()?)).await?;
    tcp.set_nodelay(true)?;
    let tls = connector.connect(rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned(), tcp).await?;
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.context("opening the exec WebSocket")?;
    let mut first = None;
    while let Some(message) = ws.next().await {
        let data = match message? {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        match data.first() {
            Some(&STDOUT) if data.len() > 1 && first.is_none() => first = Some(started.elapsed()),
            Some(&ERROR) => {
                let status: serde_json::Value = serde_json::from_slice(data.get(1..).unwrap_or_default())?;
                if status["status"] != "Success" {
                    bail!("exec {command:?} ended with {status}");
                }
                return Ok((first, started.elapsed()));
            }
            _ => {}
        }
    }
    bail!("exec {command:?}: the stream ended without an exit status")
}
