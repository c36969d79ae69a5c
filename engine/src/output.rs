//! Where a guest's stdout and stderr go: a file (e.g. containerd's fifo) or a sink (e.g. the kubelet's CRI
//! log writer), for preview 1 modules and components alike.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, OutputFile, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Receives a guest's output as it is written. `write` must not block for long: it runs on the guest's
/// executor thread.
pub trait OutputSink: Send + Sync + 'static {
    fn write(&self, bytes: &[u8]);
}

/// A destination for one of a guest's output streams.
pub enum Output {
    File(std::fs::File),
    Sink(Arc<dyn OutputSink>),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::File(file) => f.debug_tuple("File").field(file).finish(),
            Output::Sink(_) => f.write_str("Sink(..)"),
        }
    }
}

/// What a guest reads on stdin: bytes from an async reader, read as the guest asks for them.
pub struct Input(pub Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>);

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input(..)")
    }
}

/// An [`Input`] in the form wasmtime-wasi takes, shared by every store of a run.
#[derive(Clone)]
pub(super) struct Stdin(Arc<wasmtime_wasi::cli::AsyncStdinStream>);

impl Stdin {
    /// Starts reading `input` (on the current tokio runtime) as the guest asks for it.
    pub(super) fn new(input: Input) -> Self {
        Stdin(Arc::new(wasmtime_wasi::cli::AsyncStdinStream::new(input.0)))
    }
}

impl IsTerminal for Stdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdinStream for Stdin {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::InputStream> {
        self.0.p2_stream()
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        self.0.async_stream()
    }
}

/// An [`Output`] in the form wasmtime-wasi takes, cheap to clone (one per HTTP request).
#[derive(Clone)]
pub(super) enum Stdio {
    File(OutputFile),
    Sink(SinkStream),
}

impl From<Output> for Stdio {
    fn from(output: Output) -> Self {
        match output {
            Output::File(file) => Stdio::File(OutputFile::new(file)),
            Output::Sink(sink) => Stdio::Sink(SinkStream(sink)),
        }
    }
}

impl Stdio {
    /// Writes one line of the engine's own (e.g. "request failed: ...").
    pub(super) fn line(&self, text: &str) {
        let line = Bytes::from(format!("{text}\n"));
        match self {
            Stdio::File(file) => {
                if let Err(e) = OutputStream::write(&mut file.clone(), line) {
                    tracing::debug!(error = %e, "writing to the guest's output file");
                }
            }
            Stdio::Sink(SinkStream(sink)) => sink.write(&line),
        }
    }
}

impl IsTerminal for Stdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Stdio {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        match self {
            Stdio::File(file) => file.p2_stream(),
            Stdio::Sink(sink) => Box::new(sink.clone()),
        }
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        match self {
            Stdio::File(file) => file.async_stream(),
            Stdio::Sink(sink) => Box::new(sink.clone()),
        }
    }
}

/// An [`OutputSink`] as a WASI output stream: every write goes straight to the sink.
#[derive(Clone)]
pub(super) struct SinkStream(Arc<dyn OutputSink>);

/// How much a guest may write in one call (wasmtime-wasi's own limit for files).
const WRITE_BUDGET: usize = 64 * 1024;

#[async_trait::async_trait]
impl Pollable for SinkStream {
    async fn ready(&mut self) {}
}

impl OutputStream for SinkStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl AsyncWrite for SinkStream {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.0.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
