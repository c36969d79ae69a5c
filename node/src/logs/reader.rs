//! Reads a container run's CRI log files back as `kubectl logs` output: content only, partial
//! entries joined, optional timestamps, `tailLines`, `since`, `limitBytes`, and `follow` across
//! rotations until the container has stopped and its file is drained.

use std::collections::VecDeque;
use std::io::{self, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use jiff::Timestamp;
use tokio::fs::File;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use super::format::{self, Entry};
use super::writer::rotated_files;
use super::LogFiles;

/// How often a follower looks for new lines.
const POLL: Duration = Duration::from_millis(50);
/// Output is sent in chunks of about this size (and at every end of the file).
const CHUNK: usize = 32 * 1024;

/// What to read, as the `pods/log` query says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new lines until the container stops.
    pub follow: bool,
    /// Only the last this many lines (negative: all).
    pub tail_lines: Option<i64>,
    /// Only lines written at or after this time.
    pub since: Option<Timestamp>,
    /// Prefix each line with its RFC3339Nano timestamp and a space.
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<i64>,
}

/// Streams the logs of one container run. Files are opened before this returns, so a missing log
/// file is an error here rather than in the stream. The stream ends at the end of the files, or
/// with `follow` once the container has stopped and everything is read; dropping it stops the reader.
pub async fn stream_logs(
    files: LogFiles,
    opts: LogOptions,
) -> io::Result<impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static> {
    let current = File::open(&files.current).await?;
    let current_id = file_id(&current.metadata().await?);
    let mut sources = Vec::new();
    for path in rotated_files(&files.current)? {
        match File::open(&path).await {
            Ok(file) if file_id(&file.metadata().await?) != current_id => sources.push(file),
            Ok(_) => {}
            // Removed by a rotation since it was listed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    sources.push(current);
    let (tx, rx) = mpsc::channel(4);
    let span = tracing::debug_span!("stream_logs", path = %files.current.display(), follow = opts.follow);
    let reader = Reader {
        path: files.current,
        current_id,
        running: files.running,
        out: Output::new(tx, &opts),
        assembler: Assembler { since: opts.since, timestamps: opts.timestamps, in_line: false, include: false },
        follow: opts.follow,
    };
    tokio::spawn(
        async move {
            let mut reader = reader;
            let result = reader.run(sources, opts.tail_lines).await;
            // Whatever was read before an error still goes out; a send fails only when the client left.
            let _ = reader.out.flush().await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "reading container log");
                let _ = reader.out.tx.send(Err(e)).await;
            }
        }
        .instrument(span),
    );
    Ok(ReceiverStream::new(rx))
}

type FileId = (u64, u64);

fn file_id(meta: &std::fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

/// The producer task's state.
struct Reader {
    path: PathBuf,
    current_id: FileId,
    running: Option<watch::Receiver<bool>>,
    out: Output,
    assembler: Assembler,
    follow: bool,
}

impl Reader {
    async fn run(&mut self, mut sources: Vec<File>, tail: Option<i64>) -> io::Result<()> {
        let start = match tail.filter(|n| *n >= 0) {
            Some(n) => tail_start(&mut sources, usize::try_from(n).unwrap_or(usize::MAX)).await?,
            None => (0, 0),
        };
        let last = sources.len().saturating_sub(1);
        for (i, mut file) in sources.into_iter().enumerate().skip(start.0) {
            file.seek(SeekFrom::Start(if i == start.0 { start.1 } else { 0 })).await?;
            let mut reader = BufReader::with_capacity(64 * 1024, file);
            let mut line = Vec::new();
            if i == last {
                return self.tail_current(&mut reader, &mut line).await;
            }
            if self.drain(&mut reader, &mut line).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Reads the current file to its end, following rotations and, with `follow`, its growth until
    /// the container has stopped.
    async fn tail_current(&mut self, reader: &mut BufReader<File>, line: &mut Vec<u8>) -> io::Result<()> {
        let mut stopped = !self.follow;
        loop {
            if self.drain(reader, line).await? {
                return Ok(());
            }
            if let Some((between, new)) = self.rotated().await? {
                // Everything the writer put in the old file was written before the rename; then come
                // the files rotated since, then the new current file.
                if self.drain(reader, line).await? {
                    return Ok(());
                }
                for file in between {
                    line.clear();
                    let mut older = BufReader::with_capacity(64 * 1024, file);
                    if self.drain(&mut older, line).await? {
                        return Ok(());
                    }
                }
                line.clear();
                *reader = BufReader::with_capacity(64 * 1024, new);
                continue;
            }
            if self.out.flush().await.is_err() || stopped {
                return Ok(());
            }
            let running = match &mut self.running {
                Some(rx) => *rx.borrow_and_update(),
                None => false,
            };
            if !running {
                // One more pass for the lines written just before the container stopped.
                stopped = true;
                continue;
            }
            self.wait().await;
            if self.out.tx.is_closed() {
                return Ok(());
            }
        }
    }

    /// Waits for the poll interval, the running flag to change, or the client to go away.
    async fn wait(&mut self) {
        let closed = self.out.tx.clone();
        let running = &mut self.running;
        let changed = async {
            match running {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        // The sender is gone: the container is not running any more.
                        *running = None;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = changed => {}
            _ = closed.closed() => {}
        }
    }

    /// After a rotation of the file being read: the files rotated since (oldest first) and the new
    /// current file; `None` while the path still names the file being read.
    async fn rotated(&mut self) -> io::Result<Option<(Vec<File>, File)>> {
        let new = match File::open(&self.path).await {
            Ok(file) => file,
            // Between the rename and the new file's creation.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let new_id = file_id(&new.metadata().await?);
        if new_id == self.current_id {
            return Ok(None);
        }
        // Listed after opening the new current file, so a rotation in between is in the list.
        let mut rotated = Vec::new();
        for path in rotated_files(&self.path)? {
            match File::open(&path).await {
                Ok(file) => {
                    let id = file_id(&file.metadata().await?);
                    rotated.push((id, file));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // The file read so far is among them unless it was already removed, being the oldest.
        let after = rotated.iter().position(|(id, _)| *id == self.current_id).map_or(0, |i| i + 1);
        let between = rotated.into_iter().skip(after).filter(|(id, _)| *id != new_id).map(|(_, f)| f).collect();
        self.current_id = new_id;
        Ok(Some((between, new)))
    }

    /// Reads complete CRI lines to the end of the file (an unterminated last line stays in `line`).
    /// `true` when output should stop: the client is gone or `limitBytes` is reached.
    async fn drain(&mut self, reader: &mut BufReader<File>, line: &mut Vec<u8>) -> io::Result<bool> {
        loop {
            let n = reader.read_until(b'\n', line).await?;
            if n == 0 || line.last() != Some(&b'\n') {
                return Ok(false);
            }
            if let Some(entry) = format::parse(line) {
                if self.assembler.push(&entry, &mut self.out).await.is_err() {
                    return Ok(true);
                }
            }
            line.clear();
        }
    }
}

/// Where output starts for `tailLines = n`: `(file index, offset)` of the first of the last `n`
/// output lines.
async fn tail_start(sources: &mut [File], n: usize) -> io::Result<(usize, u64)> {
    let mut starts: VecDeque<(usize, u64)> = VecDeque::new();
    let mut end = (0, 0);
    let mut in_line = false;
    for (i, file) in sources.iter_mut().enumerate() {
        let mut reader = BufReader::with_capacity(64 * 1024, &mut *file);
        let mut offset = 0u64;
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).await?;
            if read == 0 || line.last() != Some(&b'\n') {
                break;
            }
            if let Some(entry) = format::parse(&line) {
                if !in_line {
                    starts.push_back((i, offset));
                    if starts.len() > n {
                        starts.pop_front();
                    }
                }
                in_line = entry.partial;
            }
            offset += read as u64;
        }
        end = (i, offset);
    }
    Ok(if n == 0 { end } else { starts.front().copied().unwrap_or((0, 0)) })
}

/// Joins partial entries into output lines and applies `since` and `timestamps`.
struct Assembler {
    since: Option<Timestamp>,
    timestamps: bool,
    /// The previous entry was partial: this one continues its line.
    in_line: bool,
    /// Whether the line being assembled is shown.
    include: bool,
}

impl Assembler {
    async fn push(&mut self, entry: &Entry<'_>, out: &mut Output) -> Result<(), Closed> {
        if !self.in_line {
            self.include = self.since.is_none_or(|since| entry.ts >= since);
            if self.include && self.timestamps {
                let mut prefix = format::timestamp(entry.ts);
                prefix.push(' ');
                out.write(prefix.as_bytes()).await?;
            }
        }
        if self.include {
            out.write(entry.content).await?;
            if !entry.partial {
                out.write(b"\n").await?;
            }
        }
        self.in_line = entry.partial;
        Ok(())
    }
}

/// The client is gone or the byte limit is reached: stop reading.
#[derive(Debug)]
struct Closed;

/// Buffered output to the stream, honouring `limitBytes`.
struct Output {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
    remaining: Option<u64>,
}

impl Output {
    fn new(tx: mpsc::Sender<Result<Bytes, io::Error>>, opts: &LogOptions) -> Self {
        let remaining = opts.limit_bytes.map(|l| u64::try_from(l).unwrap_or(0));
        Self { tx, buf: Vec::with_capacity(CHUNK), remaining }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        let bytes = match self.remaining {
            Some(0) => return Err(Closed),
            Some(left) => {
                let take = bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                self.remaining = Some(left - take as u64);
                &bytes[..take]
            }
            None => bytes,
        };
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        if self.remaining == Some(0) {
            self.flush().await?;
            return Err(Closed);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.send(Ok(chunk)).await.map_err(|_| Closed)
    }
}
