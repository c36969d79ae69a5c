//! The per-container-run log writer: turns raw stdout/stderr bytes into CRI log lines in
//! `<restartCount>.log`, buffering partial lines per stream, and rotates the file by size.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use parking_lot::Mutex;

use super::format::{self, MAX_LINE};
use super::{LogError, Stream};

/// When to rotate a log file and how many rotated files to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate once the current file is larger than this many bytes.
    pub max_size: u64,
    /// Keep at most this many rotated files; older ones are removed.
    pub max_files: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Self { max_size: 10 * 1024 * 1024, max_files: 5 }
    }
}

/// Writes one container run's output as CRI log lines. Cheap, synchronous and thread-safe, so it can
/// be called from Wasm output callbacks. Partial lines are flushed on [`LogWriter::flush`] and on drop.
pub struct LogWriter {
    path: PathBuf,
    rotation: Rotation,
    state: Mutex<State>,
}

struct State {
    file: File,
    size: u64,
    /// The unterminated tail of each stream (stdout, stderr), at most [`MAX_LINE`] bytes.
    pending: [Vec<u8>; 2],
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_path_buf(), source }
}

fn open_append(path: &Path) -> Result<(File, u64), LogError> {
    let file = OpenOptions::new().create(true).append(true).open(path).map_err(io_error(path))?;
    let size = file.metadata().map_err(io_error(path))?.len();
    Ok((file, size))
}

impl LogWriter {
    /// Opens (creating it and its directory, appending if it exists) the log file at `path`, usually
    /// [`super::container_log_path`].
    pub fn create(path: PathBuf, rotation: Rotation) -> Result<Self, LogError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let (file, size) = open_append(&path)?;
        Ok(Self { path, rotation, state: Mutex::new(State { file, size, pending: [Vec::new(), Vec::new()] }) })
    }

    /// The current log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An adapter that writes one stream of this run (for the Wasm engine's output sink).
    pub fn sink(self: &Arc<Self>, stream: Stream) -> StreamSink {
        StreamSink { writer: Arc::clone(self), stream }
    }

    /// Appends output of `stream`: every complete line becomes CRI lines; an unterminated tail waits
    /// for its newline (or `flush`), except that each full [`MAX_LINE`] of it is written as a `P` chunk.
    pub fn write(&self, stream: Stream, bytes: &[u8]) -> Result<(), LogError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let ts = format::timestamp(Timestamp::now());
        let mut state = self.state.lock();
        let mut out = Vec::with_capacity(bytes.len() + 64);
        let pending = &mut state.pending[index(stream)];
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = (&rest[..pos], &rest[pos + 1..]);
            if pending.is_empty() {
                format::encode_line(&mut out, &ts, stream, strip_cr(line));
            } else {
                pending.extend_from_slice(line);
                format::encode_line(&mut out, &ts, stream, strip_cr(pending));
                pending.clear();
            }
            rest = tail;
        }
        pending.extend_from_slice(rest);
        while pending.len() > MAX_LINE {
            format::encode(&mut out, &ts, stream, true, &pending[..MAX_LINE]);
            pending.drain(..MAX_LINE);
        }
        self.append(&mut state, &out)
    }

    /// Writes the unterminated tails of both streams as full lines.
    pub fn flush(&self) -> Result<(), LogError> {
        let ts = format::timestamp(Timestamp::now());
        let mut state = self.state.lock();
        let mut out = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let pending = &mut state.pending[index(stream)];
            if !pending.is_empty() {
                format::encode(&mut out, &ts, stream, false, pending);
                pending.clear();
            }
        }
        self.append(&mut state, &out)
    }

    fn append(&self, state: &mut State, out: &[u8]) -> Result<(), LogError> {
        if out.is_empty() {
            return Ok(());
        }
        state.file.write_all(out).map_err(io_error(&self.path))?;
        state.size += out.len() as u64;
        if state.size > self.rotation.max_size {
            self.rotate(state)?;
        }
        Ok(())
    }

    /// Renames the current file to `<name>.<timestamp>`, starts a new one, removes the oldest
    /// rotated files beyond `max_files`.
    fn rotate(&self, state: &mut State) -> Result<(), LogError> {
        let now = Timestamp::now();
        let stamp = format!("{}.{:09}", now.strftime("%Y%m%d-%H%M%S"), now.subsec_nanosecond());
        let mut target = rotated_name(&self.path, &stamp);
        let mut n = 0;
        while target.exists() {
            n += 1;
            target = rotated_name(&self.path, &format!("{stamp}-{n}"));
        }
        std::fs::rename(&self.path, &target).map_err(io_error(&self.path))?;
        let (file, size) = open_append(&self.path)?;
        state.file = file;
        state.size = size;
        tracing::debug!(path = %self.path.display(), rotated = %target.display(), "rotated container log");
        let rotated = rotated_files(&self.path).map_err(io_error(&self.path))?;
        let excess = rotated.len().saturating_sub(self.rotation.max_files);
        for old in &rotated[..excess] {
            if let Err(e) = std::fs::remove_file(old) {
                tracing::warn!(path = %old.display(), error = %e, "removing rotated container log");
            }
        }
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "flushing container log");
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn rotated_name(current: &Path, stamp: &str) -> PathBuf {
    let mut name = current.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(stamp);
    current.with_file_name(name)
}

/// The rotated files of `current` (`<current>.<timestamp>`), oldest first.
pub(super) fn rotated_files(current: &Path) -> std::io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (current.parent(), current.file_name().and_then(|n| n.to_str())) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let file_name = entry?.file_name();
        if let Some(n) = file_name.to_str().filter(|n| n.starts_with(&prefix)) {
            names.push(n.to_string());
        }
    }
    // The timestamps sort by their text; a collision suffix (`-1`) sorts after its base name.
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// One stream of one container run, as the Wasm engine's output sink (the integration implements
/// `skiff_engine::OutputSink` for it).
#[derive(Clone)]
pub struct StreamSink {
    pub writer: Arc<LogWriter>,
    pub stream: Stream,
}

impl StreamSink {
    /// Writes guest output; a failure is logged, never returned to the guest.
    pub fn write(&self, bytes: &[u8]) {
        if let Err(e) = self.writer.write(self.stream, bytes) {
            tracing::warn!(error = %e, stream = self.stream.as_str(), "writing container log");
        }
    }
}
