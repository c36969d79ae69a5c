//! A task's stdio as containerd hands it over: fifo paths (`ctr`, CRI), `file://` URIs, or nothing. Opens
//! the output ends for the guest (the files close when the guest's run ends, so readers see EOF) and
//! the read end of its stdin.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::error::ShimError;
use skiff_engine::{Input, Output};

/// The stdio paths of a task, as containerd sent them (echoed back in `State`).
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

impl StdioPaths {
    /// [`Self::open_outputs`] off the async runtime (opening a fifo may wait for its reader).
    pub async fn open_outputs_blocking(&self) -> Result<(Option<Output>, Option<Output>), ShimError> {
        let paths = self.clone();
        tokio::task::spawn_blocking(move || paths.open_outputs())
            .await
            .map_err(|e| ShimError::Thread(format!("opening stdio: {e}")))?
    }

    /// Opens stdout and stderr for writing (`None` where containerd gave none).
    pub fn open_outputs(&self) -> Result<(Option<Output>, Option<Output>), ShimError> {
        if self.terminal {
            return Err(ShimError::Unsupported("a terminal (tty)"));
        }
        Ok((open_output(&self.stdout)?, open_output(&self.stderr)?))
    }

    /// A Wasm guest's stdin (`None` without one, or for a `file://` or other URI): the read end of
    /// containerd's stdin fifo, opened now (at Create, so the client's pending open of its write end
    /// completes) without waiting for a writer. It reads as data arrives and ends when the client
    /// has closed its end: a fifo reports hang-up only after a writer came and went, so a read before
    /// the client's end is open waits instead of seeing a premature EOF.
    pub fn open_input(&self) -> Result<Option<Input>, ShimError> {
        if self.stdin.is_empty() || self.stdin.contains("://") {
            return Ok(None);
        }
        let path = Path::new(&self.stdin);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(OFlag::O_NONBLOCK.bits())
            .open(path)
            .map_err(|e| ShimError::io("opening the stdin fifo", path, e))?;
        Ok(Some(Input(Box::new(FifoReader::Opened(Some(file))))))
    }
}

/// A fifo's non-blocking read end, registered with the reactor of the runtime that first reads
/// it (a guest's executor thread has its own).
enum FifoReader {
    Opened(Option<File>),
    Registered(tokio::io::unix::AsyncFd<File>),
}

impl tokio::io::AsyncRead for FifoReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Read;
        use std::task::Poll;
        if let FifoReader::Opened(file) = &mut *self {
            let Some(file) = file.take() else { return Poll::Ready(Ok(())) };
            // SAFETY: the `File` owns its descriptor for as long as the `AsyncFd` owns the `File`.
            let registered =
                unsafe { tokio::io::unix::AsyncFd::register_with_interest(file, tokio::io::Interest::READABLE) };
            *self = FifoReader::Registered(registered?);
        }
        let FifoReader::Registered(fd) = &mut *self else { return Poll::Ready(Ok(())) };
        loop {
            let mut guard = match fd.poll_read_ready(cx) {
                Poll::Ready(ready) => ready?,
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|inner| inner.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Opens one output destination.
fn open_output(target: &str) -> Result<Option<Output>, ShimError> {
    if target.is_empty() {
        return Ok(None);
    }
    if let Some(path) = target.strip_prefix("file://") {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ShimError::io("opening the output file", path, e))?;
        return Ok(Some(Output::File(file)));
    }
    if target.contains("://") {
        return Err(ShimError::Unsupported("this stdio URI scheme (only fifos and file:// are)"));
    }
    Ok(Some(Output::File(open_fifo(Path::new(target))?)))
}

/// How long a task's start waits for containerd's client to open its end of an output fifo (it opens
/// it asynchronously) before writing into the pipe alone.
const READER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens a fifo's write end. With a reader already there: write-only. Otherwise it waits up to
/// [`READER_WAIT`] for one (a blocking open on a helper thread): output written while no reader has
/// the fifo open is lost when the guest ends first, as a short-lived task's output would be. With
/// still no reader: read-write, so the guest never blocks (the pipe buffers until a reader comes).
/// Writes block as usual afterwards.
fn open_fifo(path: &Path) -> Result<File, ShimError> {
    let write_only = OpenOptions::new().write(true).custom_flags(OFlag::O_NONBLOCK.bits()).open(path);
    let file = match write_only {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => match wait_for_reader(path) {
            Some(opened) => opened.map_err(|e| ShimError::io("opening the output fifo", path, e))?,
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| ShimError::io("opening the output fifo", path, e))?,
        },
        Err(e) => return Err(ShimError::io("opening the output fifo", path, e)),
    };
    fcntl(&file, FcntlArg::F_SETFL(OFlag::empty()))
        .map_err(|e| ShimError::io("making the output blocking", path, e.into()))?;
    Ok(file)
}

/// A blocking write-only open of `path`, given up after [`READER_WAIT`] (`None`). A given-up open
/// completes when the caller opens the fifo read-write, and its file is dropped.
fn wait_for_reader(path: &Path) -> Option<std::io::Result<File>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_path_buf();
    std::thread::Builder::new()
        .name("fifo-open".into())
        .spawn(move || {
            let _ = tx.send(OpenOptions::new().write(true).open(&owned));
        })
        .ok()?;
    rx.recv_timeout(READER_WAIT).ok()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn opens_fifos_with_and_without_reader_and_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("out");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        // No reader at all: still opens (after the bounded wait).
        let Some(Output::File(writer)) = open_output(fifo.to_str().expect("utf-8")).expect("open") else {
            panic!("expected a file");
        };
        drop(writer);

        // A reader that comes late gets what is written.
        let late = fifo.clone();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut s = String::new();
            File::open(&late).expect("open reader").read_to_string(&mut s).expect("read");
            s
        });
        let Some(Output::File(mut writer)) = open_output(fifo.to_str().expect("utf-8")).expect("open") else {
            panic!("expected a file");
        };
        std::io::Write::write_all(&mut writer, b"late").expect("write");
        drop(writer);
        assert_eq!(reader.join().expect("reader"), "late");

        let file = dir.path().join("log");
        let uri = format!("file://{}", file.display());
        let paths = StdioPaths { stdout: uri, ..StdioPaths::default() };
        let (out, err) = paths.open_outputs().expect("open");
        assert!(matches!(out, Some(Output::File(_))) && err.is_none());
        let Some(Output::File(mut f)) = out else { unreachable!() };
        std::io::Write::write_all(&mut f, b"x").expect("write");
        let mut s = String::new();
        File::open(&file).expect("open").read_to_string(&mut s).expect("read");
        assert_eq!(s, "x");

        assert!(open_output("binary:///usr/bin/logger").is_err());
        assert!(StdioPaths { terminal: true, ..StdioPaths::default() }.open_outputs().is_err());
    }
}
