//! `kubectl exec` into a Wasm container: a toolbox command ([`super::toolbox`]) runs on a blocking
//! thread against the container's files and env; any other command runs the container's own module
//! with those arguments in the container's world (its preopens, env, the pod's network namespace)
//! through [`ContainerRuntime::exec_streaming`](crate::runtime::ContainerRuntime::exec_streaming).
//! Output is streamed as it is written, stdin fed from the client; the command is killed when the
//! client goes away or the container stops.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, DuplexStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::toolbox::{self, Dir, Io, View, World};
use super::{ExecRequest, Process, ProcessControl, StreamError};
use crate::pods::exec_target::ExecTarget;
use crate::runtime::{GuestWorld, StreamIo};

/// Output a module may have written and the client not yet read; past it, output is dropped (the
/// module runs on its pod's executor, which must never wait for a slow client).
const MODULE_BACKLOG: usize = 16 << 20;
/// Output a toolbox command may run ahead of the client; past it, the command waits.
const TOOLBOX_BACKLOG: usize = 1 << 20;
/// The pipe for stdin.
const STDIN_BUFFER: usize = 64 * 1024;

/// Execs into Wasm containers whose command still runs (the kubelet's `/metrics`).
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// How many execs into Wasm containers are running on this node.
pub fn running() -> usize {
    RUNNING.load(Ordering::Relaxed)
}

/// Counts one running exec until dropped (when its command has ended).
struct Running;

impl Running {
    fn start() -> Self {
        RUNNING.fetch_add(1, Ordering::Relaxed);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One output stream on its way to the client: chunks and how many bytes are queued.
#[derive(Clone)]
struct OutPipe {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    /// A terminal shows `\n` as a line feed only: it gets `\r\n`.
    crlf: bool,
}

impl OutPipe {
    /// A pipe and the reader the session pumps to the client.
    fn new(crlf: bool) -> (Self, Box<dyn AsyncRead + Send + Unpin>) {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let queued = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&queued);
        let stream = futures::stream::unfold((rx, counter), |(mut rx, counter)| async move {
            let chunk = rx.recv().await?;
            counter.fetch_sub(chunk.len(), Ordering::Relaxed);
            Some((Ok::<_, std::io::Error>(chunk), (rx, counter)))
        });
        let reader = tokio_util::io::StreamReader::new(Box::pin(stream));
        (Self { tx, queued, crlf }, Box::new(reader))
    }

    /// Queues `bytes`; false when the client is gone.
    fn send(&self, bytes: &[u8]) -> bool {
        let chunk = if self.crlf && bytes.contains(&b'\n') {
            let mut out = Vec::with_capacity(bytes.len().saturating_add(16));
            for &b in bytes {
                if b == b'\n' {
                    out.push(b'\r');
                }
                out.push(b);
            }
            Bytes::from(out)
        } else {
            Bytes::copy_from_slice(bytes)
        };
        self.queued.fetch_add(chunk.len(), Ordering::Relaxed);
        self.tx.send(chunk).is_ok()
    }
}

impl skiff_engine::OutputSink for OutPipe {
    fn write(&self, bytes: &[u8]) {
        if self.queued.load(Ordering::Relaxed) > MODULE_BACKLOG {
            tracing::debug!(bytes = bytes.len(), "the exec client reads too slowly; output dropped");
            return;
        }
        self.send(bytes);
    }
}

/// A discarded output stream.
struct Discard;

impl skiff_engine::OutputSink for Discard {
    fn write(&self, _bytes: &[u8]) {}
}

/// An [`OutPipe`] as a blocking writer for the toolbox (`None`: discarded).
struct BlockingOut {
    pipe: Option<OutPipe>,
    cancel: CancellationToken,
}

impl Write for BlockingOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(pipe) = &self.pipe else { return Ok(buf.len()) };
        while pipe.queued.load(Ordering::Relaxed) > TOOLBOX_BACKLOG {
            if self.cancel.is_cancelled() || pipe.tx.is_closed() {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if pipe.send(buf) {
            Ok(buf.len())
        } else {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The client's stdin as a blocking reader for the toolbox (ends at its close or the exec's stop).
struct BlockingIn {
    pipe: Option<DuplexStream>,
    handle: tokio::runtime::Handle,
    cancel: CancellationToken,
}

impl Read for BlockingIn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(pipe) = self.pipe.as_mut() else { return Ok(0) };
        let cancel = self.cancel.clone();
        self.handle.block_on(async {
            tokio::select! {
                read = pipe.read(buf) => read,
                () = cancel.cancelled() => Ok(0),
            }
        })
    }
}

/// Stops an exec in a Wasm container.
struct Stop(CancellationToken);

#[async_trait::async_trait]
impl ProcessControl for Stop {
    async fn resize(&self, _width: u16, _height: u16) {}
    async fn close_stdin(&self) {}
    async fn kill(&self) {
        self.0.cancel();
    }
}

/// The toolbox's world from the runtime's.
fn world(guest: GuestWorld) -> World {
    let dirs = guest
        .dirs
        .into_iter()
        .map(|m| Dir { container_path: m.container_path, host_path: m.host_path, read_only: m.read_only })
        .collect();
    World { view: View::new(dirs, guest.working_dir.as_deref()), env: guest.env }
}

/// Starts `req` in the Wasm container `target`; `running` turns false when the container stops.
pub async fn exec(
    target: Arc<ExecTarget>,
    guest: GuestWorld,
    running: Option<watch::Receiver<bool>>,
    req: &ExecRequest,
) -> Result<Process, StreamError> {
    let cancel = CancellationToken::new();
    let (stdout_pipe, stdout) = OutPipe::new(req.tty);
    // A terminal has one output: stderr goes where stdout goes.
    let (stderr_pipe, stderr) = if req.tty {
        (stdout_pipe.clone(), None)
    } else {
        let (p, r) = OutPipe::new(false);
        (p, Some(r))
    };
    let (stdin_writer, stdin_reader) = if req.stdin {
        let (w, r) = tokio::io::duplex(STDIN_BUFFER);
        (Some(w), Some(r))
    } else {
        (None, None)
    };
    let (exit_tx, exited) = oneshot::channel();
    let command = req.command.clone();
    if command.first().is_some_and(|c| toolbox::is_builtin(c)) {
        let world = world(guest);
        let handle = tokio::runtime::Handle::current();
        let (out_on, err_on, tty) = (req.stdout, req.stderr || req.tty, req.tty);
        let stop = cancel.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut input = BlockingIn { pipe: stdin_reader, handle, cancel: stop.clone() };
            let mut out = BlockingOut { pipe: out_on.then_some(stdout_pipe), cancel: stop.clone() };
            let mut err = BlockingOut { pipe: err_on.then_some(stderr_pipe), cancel: stop.clone() };
            let mut io = Io { stdin: &mut input, stdout: &mut out, stderr: &mut err, cancel: &stop, tty };
            toolbox::run(&world, &command, &mut io)
        });
        let done = cancel.clone();
        let counted = Running::start();
        tokio::spawn(async move {
            let _counted = counted;
            let code = task.await.map_err(|e| format!("the command failed: {e}"));
            let _ = exit_tx.send(code);
            done.cancel();
        });
    } else {
        let sink = |on: bool, pipe: OutPipe| -> Arc<dyn skiff_engine::OutputSink> {
            if on {
                Arc::new(pipe)
            } else {
                Arc::new(Discard)
            }
        };
        let io = StreamIo {
            stdin: stdin_reader.map(|r| Box::new(r) as Box<dyn AsyncRead + Send + Sync + Unpin>),
            stdout: sink(req.stdout, stdout_pipe),
            stderr: sink(req.stderr || req.tty, stderr_pipe),
            cancel: cancel.clone(),
        };
        let done = target
            .runtime
            .exec_streaming(&target.pod, &target.launch, &command, io)
            .await
            .map_err(|e| StreamError::Internal(e.to_string()))?;
        let finished = cancel.clone();
        let counted = Running::start();
        tokio::spawn(async move {
            let _counted = counted;
            let code = done.await.map_err(|_| "the pod's executor stopped".to_string());
            let _ = exit_tx.send(code);
            finished.cancel();
        });
    }
    // The container's stop ends its execs.
    if let Some(mut running) = running {
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = running.wait_for(|r| !*r) => stop.cancel(),
                () = stop.cancelled() => {}
            }
        });
    }
    Ok(Process {
        stdin: stdin_writer.map(|w| Box::new(w) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
        stdout: req.stdout.then_some(stdout),
        stderr: if req.stderr { stderr } else { None },
        control: Arc::new(Stop(cancel)),
        exited,
    })
}

#[cfg(test)]
mod tests {
    use skiff_engine::OutputSink;

    use super::*;

    #[tokio::test]
    async fn output_reaches_the_client_with_crlf_for_a_terminal() {
        let (pipe, mut reader) = OutPipe::new(true);
        assert!(pipe.send(b"a\nb"));
        OutputSink::write(&pipe, b"\nc");
        drop(pipe);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.expect("read");
        assert_eq!(out, b"a\r\nb\r\nc");
    }

    #[test]
    fn a_module_that_outruns_its_client_loses_output_not_memory() {
        let (pipe, _reader) = OutPipe::new(false);
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..64 {
            OutputSink::write(&pipe, &chunk);
        }
        let queued = pipe.queued.load(Ordering::Relaxed);
        assert!(queued <= MODULE_BACKLOG + chunk.len(), "{queued} bytes queued");
    }

    #[test]
    fn a_toolbox_command_stops_writing_when_the_client_is_gone() {
        let (pipe, reader) = OutPipe::new(false);
        drop(reader);
        let mut out = BlockingOut { pipe: Some(pipe), cancel: CancellationToken::new() };
        assert!(out.write(b"x").is_err());
        let mut discarded = BlockingOut { pipe: None, cancel: CancellationToken::new() };
        assert_eq!(discarded.write(b"xyz").ok(), Some(3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stdin_reads_end_with_the_client_or_the_stop() {
        let (mut writer, reader) = tokio::io::duplex(64);
        let cancel = CancellationToken::new();
        let handle = tokio::runtime::Handle::current();
        let stop = cancel.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut input = BlockingIn { pipe: Some(reader), handle, cancel: stop };
            let mut all = Vec::new();
            input.read_to_end(&mut all).map(|_| all)
        });
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"typed").await.expect("write");
        drop(writer);
        assert_eq!(read.await.expect("join").expect("read"), b"typed");
        // A client that never closes stdin: the stop ends the read.
        let (_writer, reader) = tokio::io::duplex(64);
        let handle = tokio::runtime::Handle::current();
        let stop = cancel.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut input = BlockingIn { pipe: Some(reader), handle, cancel: stop };
            let mut buf = [0u8; 8];
            input.read(&mut buf)
        });
        cancel.cancel();
        assert_eq!(read.await.expect("join").expect("read"), 0);
    }
}
