//! One `/exec` connection: the upgrade (v5 or v4 channel protocol), the process started, its output
//! framed onto the socket, the client's stdin, resizes and stdin close passed on, and at the end the
//! exit as a Status on the error channel. A client that goes away kills the process.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::protocol::{self, Incoming};
use super::{ExecRequest, Kind, StreamError, Streams, Target};

/// How long the output may lag behind the process's exit.
const DRAIN_BOUND: Duration = Duration::from_secs(5);

pub(super) fn plain(code: StatusCode, message: String) -> Response {
    (code, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

/// The checks before an exec or attach upgrade (either transport): a served endpoint, a command,
/// at least one stream, a target that can take it. An error is the response to send.
pub(super) async fn precheck(
    kind: Kind,
    streams: Option<Arc<dyn Streams>>,
    target: &Target,
    req: &ExecRequest,
) -> Result<Arc<dyn Streams>, Response> {
    let Some(streams) = streams else {
        return Err(plain(StatusCode::NOT_FOUND, "exec is not served by this kubelet".into()));
    };
    if kind == Kind::Exec && req.command.is_empty() {
        return Err(plain(StatusCode::BAD_REQUEST, "you must specify at least one command for the container".into()));
    }
    if !(req.stdin || req.stdout || req.stderr) {
        return Err(plain(StatusCode::BAD_REQUEST, "you must specify at least 1 of stdin, stdout, stderr".into()));
    }
    let checked = match kind {
        Kind::Exec => streams.check(target).await,
        Kind::Attach => Ok(()),
    };
    if let Err(e) = checked {
        let code = match e {
            StreamError::NotFound(_) => StatusCode::NOT_FOUND,
            StreamError::Refused(_) => StatusCode::BAD_REQUEST,
            StreamError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        return Err(plain(code, e.to_string()));
    }
    Ok(streams)
}

/// Serves `/exec/{namespace}/{pod}/{container}` and `/attach/...`: checks the target, then upgrades
/// to WebSocket.
pub async fn serve(
    kind: Kind,
    streams: Option<Arc<dyn Streams>>,
    target: Target,
    query: Vec<(String, String)>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let req = ExecRequest::from_query(&query);
    let streams = match precheck(kind, streams, &target, &req).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(_) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "Upgrade request required: WebSocket (v5.channel.k8s.io, v4.channel.k8s.io) or SPDY/3.1".into(),
            )
        }
    };
    let span =
        tracing::info_span!("exec", namespace = %target.namespace, pod = %target.pod, container = %target.container);
    upgrade
        .protocols(protocol::PROTOCOLS)
        .on_upgrade(move |socket| run(kind, socket, streams, target, req).instrument(span))
}

/// Copies one output stream onto the socket, framed for `channel`, until its end.
async fn pump(mut from: Box<dyn AsyncRead + Send + Unpin>, channel: u8, to: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                let data = buf.get(..n).unwrap_or_default();
                if to.send(Message::Binary(protocol::frame(channel, data).into())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, channel, "reading a process's output");
                return;
            }
        }
    }
}

fn status_message(status: &serde_json::Value) -> Message {
    Message::Binary(protocol::frame(protocol::ERROR, status.to_string().as_bytes()).into())
}

/// Runs one upgraded connection to its end.
async fn run(kind: Kind, socket: WebSocket, streams: Arc<dyn Streams>, target: Target, req: ExecRequest) {
    let v5 = socket.protocol().is_some_and(|p| p.as_bytes() == protocol::V5.as_bytes());
    let (mut sink, mut incoming) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        // A normal closure (1000): kubectl reads any other close (even "no status") as an error.
        let normal = axum::extract::ws::CloseFrame { code: 1000, reason: "".into() };
        let _ = sink.send(Message::Close(Some(normal))).await;
        let _ = sink.close().await;
    });
    let started = match kind {
        Kind::Exec => streams.exec(&target, &req).await,
        Kind::Attach => streams.attach(&target).await,
    };
    let process = match started {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(error = %e, "exec could not start");
            let message = format!("error executing command in container: {e}");
            let _ = tx.send(status_message(&protocol::failure_status(&message))).await;
            drop(tx);
            let _ = writer.await;
            drain(&mut incoming).await;
            return;
        }
    };
    let super::Process { stdin, stdout, stderr, control, mut exited } = process;
    let mut pumps = Vec::new();
    for (channel, out) in [(protocol::STDOUT, stdout), (protocol::STDERR, stderr)] {
        if let Some(out) = out {
            pumps.push(tokio::spawn(pump(out, channel, tx.clone())));
        }
    }
    let input = async {
        let incoming = &mut incoming;
        let mut stdin = stdin;
        while let Some(Ok(message)) = incoming.next().await {
            let data = match message {
                Message::Binary(data) => data,
                // kube-apiserver takes text frames as bytes too (the Python client sends str data so).
                Message::Text(text) => bytes::Bytes::copy_from_slice(text.as_str().as_bytes()),
                Message::Close(_) => return,
                _ => continue,
            };
            match protocol::incoming(&data) {
                Incoming::Stdin(bytes) => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(bytes).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Incoming::CloseStdin if v5 => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                    control.close_stdin().await;
                }
                Incoming::Resize { width, height } => control.resize(width, height).await,
                Incoming::CloseStdin | Incoming::Ignored => {}
            }
        }
    };
    let exit = tokio::select! {
        exit = &mut exited => exit,
        () = input => {
            tracing::info!("the client went away; killing the process");
            control.kill().await;
            (&mut exited).await
        }
    };
    let aborts: Vec<_> = pumps.iter().map(tokio::task::JoinHandle::abort_handle).collect();
    if tokio::time::timeout(DRAIN_BOUND, futures::future::join_all(pumps)).await.is_err() {
        tracing::warn!("the process's output did not end with it");
        aborts.iter().for_each(tokio::task::AbortHandle::abort);
    }
    let status = match exit {
        Ok(Ok(code)) => protocol::exit_status(code, &req.command),
        Ok(Err(message)) => protocol::failure_status(&message),
        Err(_) => protocol::failure_status("the process's exit status was lost"),
    };
    tracing::debug!(%status, "exec ended");
    let _ = tx.send(status_message(&status)).await;
    drop(tx);
    let _ = writer.await;
    drain(&mut incoming).await;
}

/// After the close frame: reads what the client still sends until it closes too (bounded), so
/// closing the socket with unread input does not reset the connection before the client read the
/// status.
async fn drain(incoming: &mut futures::stream::SplitStream<WebSocket>) {
    let rest = async {
        while let Some(Ok(message)) = incoming.next().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_BOUND, rest).await;
}
