//! `/exec` and `/attach` over a SPDY/3.1 upgrade (kubectl 1.27–1.30's remotecommand): the client
//! opens one stream per channel, named by its `streamType` header (`error`, `stdin`, `stdout`,
//! `stderr`, `resize`); once the streams the query asks for are there the process starts on the
//! same [`Streams`] as WebSocket sessions use. Its output goes to the stdout/stderr streams, the
//! stdin stream's FIN closes its stdin, resize JSON objects resize its terminal, and at the end the
//! exit goes on the error stream: a `metav1.Status` in `v4.channel.k8s.io`, the message text in
//! older versions. A client that goes away kills the process.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::Instrument;

use super::protocol;
use super::session::{plain, precheck};
use super::spdy::{Connection, Incoming, StreamOut};
use super::upgrade::{self, Transport};
use super::{ExecRequest, Kind, Process, Streams, Target};

/// The remotecommand versions served over SPDY, newest first.
pub const PROTOCOLS: [&str; 4] = ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
/// How long the client gets to open its streams (the kubelet's stream creation timeout).
const STREAMS_BOUND: Duration = Duration::from_secs(30);
/// How long the output may lag behind the process's exit.
const DRAIN_BOUND: Duration = Duration::from_secs(5);

/// Serves an exec or attach request that asks for a SPDY upgrade.
pub async fn serve(
    kind: Kind,
    streams: Option<Arc<dyn Streams>>,
    target: Target,
    query: Vec<(String, String)>,
    request: Request,
) -> Response {
    let req = ExecRequest::from_query(&query);
    let streams = match precheck(kind, streams, &target, &req).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let (on_upgrade, protocol) = match upgrade::transport(request, &PROTOCOLS).await {
        Ok(Transport::Spdy { on_upgrade, protocol }) => (on_upgrade, protocol),
        Ok(Transport::WebSocket(_)) => return plain(StatusCode::BAD_REQUEST, "expected a SPDY/3.1 upgrade".into()),
        Err(response) => return response,
    };
    let v4 = protocol == Some(PROTOCOLS[0]);
    let span = tracing::info_span!("exec_spdy", namespace = %target.namespace, pod = %target.pod,
        container = %target.container, protocol = protocol.unwrap_or("none"));
    tokio::spawn(
        async move {
            match upgrade::spdy_io(on_upgrade).await {
                Ok(io) => run(kind, Connection::serve(io), streams, target, req, v4).await,
                Err(e) => tracing::debug!(error = %e, "the SPDY upgrade failed"),
            }
        }
        .instrument(span),
    );
    upgrade::spdy_switching(protocol)
}

/// The streams of one exec.
#[derive(Default)]
struct Channels {
    error: Option<Incoming>,
    stdin: Option<Incoming>,
    stdout: Option<Incoming>,
    stderr: Option<Incoming>,
    resize: Option<Incoming>,
}

impl Channels {
    /// Files a new stream by its type; false for an unknown or repeated one.
    fn file(&mut self, stream: Incoming) -> Result<(), Incoming> {
        let kind = stream.headers.get("streamtype").unwrap_or_default().to_string();
        let slot = match kind.as_str() {
            "error" => &mut self.error,
            "stdin" => &mut self.stdin,
            "stdout" => &mut self.stdout,
            "stderr" => &mut self.stderr,
            "resize" => &mut self.resize,
            _ => return Err(stream),
        };
        if slot.is_some() {
            return Err(stream);
        }
        *slot = Some(stream);
        Ok(())
    }

    fn complete(&self, req: &ExecRequest) -> bool {
        self.error.is_some()
            && (!req.stdin || self.stdin.is_some())
            && (!req.stdout || self.stdout.is_some())
            && (!req.stderr || req.tty || self.stderr.is_some())
    }
}

/// The error stream's content for `status` in the negotiated version.
fn error_bytes(status: &serde_json::Value, v4: bool) -> Option<Vec<u8>> {
    if v4 {
        return Some(status.to_string().into_bytes());
    }
    (status["status"] != "Success").then(|| status["message"].as_str().unwrap_or("error").as_bytes().to_vec())
}

async fn report(error: &StreamOut, status: &serde_json::Value, v4: bool) {
    if let Some(bytes) = error_bytes(status, v4) {
        let _ = error.write(&bytes).await;
    }
    error.finish().await;
}

/// Runs one connection to its end.
async fn run(kind: Kind, mut conn: Connection, streams: Arc<dyn Streams>, target: Target, req: ExecRequest, v4: bool) {
    let mut channels = Channels::default();
    let gathered = tokio::time::timeout(STREAMS_BOUND, async {
        while !channels.complete(&req) {
            let Some(stream) = conn.streams.recv().await else { return false };
            if let Err(stream) = channels.file(stream) {
                stream.out.reset().await;
            }
        }
        true
    })
    .await;
    if !matches!(gathered, Ok(true)) {
        tracing::info!("the client did not open its streams");
        if let Some(error) = &channels.error {
            report(&error.out, &protocol::failure_status("timed out waiting for client to create streams"), v4).await;
        }
        conn.close().await;
        return;
    }
    let Some(error) = channels.error.take() else { return };
    let started = match kind {
        Kind::Exec => streams.exec(&target, &req).await,
        Kind::Attach => streams.attach(&target).await,
    };
    let process = match started {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(error = %e, "exec could not start");
            let message = format!("error executing command in container: {e}");
            report(&error.out, &protocol::failure_status(&message), v4).await;
            conn.close().await;
            return;
        }
    };
    let Process { stdin, stdout, stderr, control, mut exited } = process;
    let mut pumps = Vec::new();
    for (out, stream) in [(stdout, channels.stdout.as_ref()), (stderr, channels.stderr.as_ref())] {
        if let (Some(out), Some(stream)) = (out, stream) {
            pumps.push(tokio::spawn(pump(out, stream.out.clone())));
        }
    }
    let stdin_stream = channels.stdin.take();
    let mut resize = channels.resize.take();
    let closed = conn.closed.clone();
    let later_streams = &mut conn.streams;
    let input = async {
        let mut stdin = stdin;
        let Some(mut stream) = stdin_stream else { return std::future::pending::<()>().await };
        while let Some(chunk) = stream.data.recv().await {
            if let Some(w) = stdin.as_mut() {
                if w.write_all(&chunk).await.is_err() {
                    stdin = None;
                }
            }
        }
        if let Some(mut w) = stdin.take() {
            let _ = w.shutdown().await;
        }
        control.close_stdin().await;
        std::future::pending::<()>().await
    };
    let resizes = async {
        let mut pending = Vec::new();
        loop {
            // A late resize stream (kubectl opens it last) is taken from the connection.
            if resize.is_none() {
                match later_streams.recv().await {
                    Some(s) if s.headers.get("streamtype") == Some("resize") => resize = Some(s),
                    Some(s) => s.out.reset().await,
                    None => return std::future::pending::<()>().await,
                }
                continue;
            }
            let Some(stream) = resize.as_mut() else { continue };
            let Some(chunk) = stream.data.recv().await else { return std::future::pending::<()>().await };
            pending.extend_from_slice(&chunk);
            if pending.len() > 64 * 1024 {
                pending.clear();
            }
            for (width, height) in sizes(&mut pending) {
                control.resize(width, height).await;
            }
        }
    };
    let exit = tokio::select! {
        exit = &mut exited => exit,
        () = input => unreachable_pending(),
        () = resizes => unreachable_pending(),
        () = closed.cancelled() => {
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
    for stream in [channels.stdout.as_ref(), channels.stderr.as_ref()].into_iter().flatten() {
        stream.out.finish().await;
    }
    let status = match exit {
        Ok(Ok(code)) => protocol::exit_status(code, &req.command),
        Ok(Err(message)) => protocol::failure_status(&message),
        Err(_) => protocol::failure_status("the process's exit status was lost"),
    };
    tracing::debug!(%status, "exec ended");
    report(&error.out, &status, v4).await;
    conn.close().await;
}

/// The arms above never end on their own (they wait forever once done).
fn unreachable_pending() -> Result<Result<i32, String>, tokio::sync::oneshot::error::RecvError> {
    Ok(Err("the exec session ended unexpectedly".into()))
}

/// The complete resize objects at the front of `buf` (removed); a partial one stays.
fn sizes(buf: &mut Vec<u8>) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut used = 0usize;
    let mut values = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    loop {
        match values.next() {
            Some(Ok(v)) => {
                used = values.byte_offset();
                if let Ok(s) = serde_json::from_value::<protocol::Size>(v) {
                    out.push((s.width, s.height));
                }
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                used = buf.len();
                break;
            }
            None => {
                used = buf.len();
                break;
            }
        }
    }
    buf.drain(..used.min(buf.len()));
    out
}

/// Copies one output stream onto its SPDY stream until its end.
async fn pump(mut from: Box<dyn AsyncRead + Send + Unpin>, to: StreamOut) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                if to.write(buf.get(..n).unwrap_or_default()).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading a process's output");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_objects_are_read_as_they_complete() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":100,"#.to_vec();
        assert_eq!(sizes(&mut buf), [(80, 24)]);
        assert_eq!(buf, br#"{"Width":100,"#.to_vec());
        buf.extend_from_slice(br#""Height":30}"#);
        assert_eq!(sizes(&mut buf), [(100, 30)]);
        assert!(buf.is_empty());
        let mut junk = b"][".to_vec();
        assert!(sizes(&mut junk).is_empty());
        assert!(junk.is_empty());
    }

    #[test]
    fn the_error_stream_speaks_the_negotiated_version() {
        let ok = protocol::exit_status(0, &[]);
        assert_eq!(error_bytes(&ok, true), Some(ok.to_string().into_bytes()));
        assert_eq!(error_bytes(&ok, false), None);
        let failed = protocol::failure_status("boom");
        assert_eq!(error_bytes(&failed, false), Some(b"boom".to_vec()));
    }
}
