//! The kubelet's streaming endpoints (`/exec`, `/attach`, `/portForward`): the Kubernetes channel
//! protocol over WebSocket ([`protocol`]) between the API server's proxied client and a process the
//! runtime starts ([`Streams`]); [`session`] runs one connection. SPDY/3.1 ([`spdy`]) for older
//! clients and for port-forward ([`port_forward`]); [`upgrade`] picks the transport.

pub mod containers;
pub mod port_channels;
pub mod port_forward;
pub mod protocol;
pub mod session;
pub mod spdy;
pub mod spdy_exec;
pub mod toolbox;
pub mod upgrade;
pub mod wasm_exec;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::response::Response;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

/// Serves `/exec` or `/attach` on the transport the request asks for: a SPDY/3.1 upgrade
/// ([`spdy_exec`]) or WebSocket ([`session`]).
pub async fn serve_exec(
    kind: Kind,
    streams: Option<Arc<dyn Streams>>,
    target: Target,
    query: Vec<(String, String)>,
    request: Request,
) -> Response {
    let spdy = request
        .headers()
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(upgrade::SPDY));
    if spdy {
        return spdy_exec::serve(kind, streams, target, query, request).await;
    }
    let (mut parts, _body) = request.into_parts();
    let websocket = axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &()).await;
    session::serve(kind, streams, target, query, websocket).await
}

/// What `/exec` asks for (the query of `pods/exec`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The container a stream is for.
#[derive(Clone, Debug)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// Resizing, stdin's end and killing of a started process.
#[async_trait::async_trait]
pub trait ProcessControl: Send + Sync {
    async fn resize(&self, width: u16, height: u16);
    async fn close_stdin(&self);
    async fn kill(&self);
}

/// A started process: the streams asked for and its exit (a code, or why it cannot be known).
pub struct Process {
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub control: std::sync::Arc<dyn ProcessControl>,
    pub exited: oneshot::Receiver<Result<i32, String>>,
}

/// Why a stream cannot be served; the message goes to the user.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// No such pod or container on this node (404).
    #[error("{0}")]
    NotFound(String),
    /// The container cannot do this (400): not running, a Wasm container.
    #[error("{0}")]
    Refused(String),
    /// The runtime failed (500).
    #[error("{0}")]
    Internal(String),
}

/// Starts processes in containers for the streaming endpoints; implemented by the kubelet.
#[async_trait::async_trait]
pub trait Streams: Send + Sync {
    /// Whether `target` can take an exec (checked before the connection is upgraded).
    async fn check(&self, target: &Target) -> Result<(), StreamError>;
    /// Starts `req` in `target`.
    async fn exec(&self, target: &Target, req: &ExecRequest) -> Result<Process, StreamError>;
    /// Attaches to `target`'s output (from now on) until it stops.
    async fn attach(&self, target: &Target) -> Result<Process, StreamError>;
    /// Where port-forward connects for pod `namespace/pod` (with `uid` when the caller knows it).
    async fn pod_address(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
    ) -> Result<port_forward::PodAddress, StreamError> {
        let _ = uid;
        Err(StreamError::NotFound(format!("pod \"{pod}\" in namespace \"{namespace}\" does not exist")))
    }
}

/// What a streaming connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
}

/// Parses a boolean query value as Go's `strconv.ParseBool` (unknown values are false).
fn truthy(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

impl ExecRequest {
    /// The request of a `/exec` query (`command` repeated, one per argument).
    pub fn from_query(query: &[(String, String)]) -> Self {
        let mut req = ExecRequest::default();
        for (key, value) in query {
            match key.as_str() {
                "command" => req.command.push(value.clone()),
                "stdin" | "input" => req.stdin = truthy(value),
                "stdout" | "output" => req.stdout = truthy(value),
                "stderr" | "error" => req.stderr = truthy(value),
                "tty" => req.tty = truthy(value),
                _ => {}
            }
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_queries_keep_every_command_argument() {
        let q: Vec<(String, String)> =
            [("command", "sh"), ("command", "-c"), ("command", "exit 3"), ("stdout", "true")]
                .iter()
                .chain(&[("stdin", "1"), ("tty", "false"), ("container", "c")])
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect();
        let req = ExecRequest::from_query(&q);
        assert_eq!(req.command, ["sh", "-c", "exit 3"]);
        assert!(req.stdout && req.stdin && !req.stderr && !req.tty);
    }
}
