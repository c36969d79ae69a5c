//! The log backend: events go through a bounded channel to one writer task, which appends them
//! as JSON lines (buffered, flushed per batch) to the log file, rotating it by size with backups
//! named as kube-apiserver's lumberjack names them (`audit-2006-01-02T15-04-05.000.log`) and
//! pruning backups by count and age. `-` writes to stdout instead.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::event::Event;

/// Events the channel holds before senders wait (kube-apiserver's default buffer size).
pub const CHANNEL_CAPACITY: usize = 10_000;
/// How long a request waits for room in a full channel before its event is dropped (counted).
pub const BLOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// Most events written per batch (one flush each).
const BATCH: usize = 512;
/// `--audit-log-maxsize 0` means lumberjack's default of 100 MB, as in kube-apiserver.
const DEFAULT_MAX_MB: u64 = 100;
const MB: u64 = 1024 * 1024;
/// lumberjack's backup timestamp layout (UTC).
const BACKUP_TIME: &str = "%Y-%m-%dT%H-%M-%S";

/// Where events go and how the file is rotated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The log file; `-` is stdout.
    pub path: PathBuf,
    /// Rotate when the file would exceed this many megabytes (0: 100).
    pub max_size_mb: u64,
    /// Backups kept (0: all, unless `max_age_days` removes them).
    pub max_backups: u64,
    /// Days a backup is kept (0: forever).
    pub max_age_days: u64,
}

impl Target {
    fn is_stdout(&self) -> bool {
        self.path.as_os_str() == "-"
    }

    fn max_bytes(&self) -> u64 {
        let mb = if self.max_size_mb == 0 { DEFAULT_MAX_MB } else { self.max_size_mb };
        mb.saturating_mul(MB)
    }
}

/// A write that failed.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The request side: serializes an event and queues it for the writer.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<Vec<u8>>,
    events: Counter,
    errors: Counter,
}

impl Sink {
    /// Queues `event`; waits up to [`BLOCK_TIMEOUT`] when the writer is behind, then drops it
    /// and counts it in `apiserver_audit_error_total`.
    pub async fn send(&self, event: &Event) {
        let Some(line) = self.line(event) else { return };
        let queued = match self.tx.try_send(line) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(line)) => {
                matches!(tokio::time::timeout(BLOCK_TIMEOUT, self.tx.send(line)).await, Ok(Ok(())))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        };
        self.counted(queued);
    }

    /// Queues `event` without waiting (from a context that cannot wait, e.g. a drop).
    pub fn send_now(&self, event: &Event) {
        if let Some(line) = self.line(event) {
            let queued = self.tx.try_send(line).is_ok();
            self.counted(queued);
        }
    }

    fn line(&self, event: &Event) -> Option<Vec<u8>> {
        match serde_json::to_vec(event) {
            Ok(mut line) => {
                line.push(b'\n');
                Some(line)
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit event not serializable");
                self.errors.inc();
                None
            }
        }
    }

    fn counted(&self, queued: bool) {
        if queued {
            self.events.inc();
        } else {
            self.errors.inc();
            tracing::warn!("audit log behind: an audit event was dropped");
        }
    }
}

/// The writer side: owns the receiver; run under the controller supervisor so a failing
/// file shows in `/readyz?verbose` and is retried with back-off.
pub struct Writer {
    rx: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
    target: Target,
    errors: Counter,
}

/// A sink and its writer. `events` and `errors` are the `/metrics` counters.
pub fn channel(target: Target, events: Counter, errors: Counter) -> (Sink, Arc<Writer>) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let writer = Arc::new(Writer { rx: tokio::sync::Mutex::new(rx), target, errors: errors.clone() });
    (Sink { tx, events, errors }, writer)
}

impl Writer {
    /// Checks the log file can be opened (and creates it 0600), so a bad path fails the start.
    pub fn check(&self) -> Result<(), WriteError> {
        if self.target.is_stdout() {
            return Ok(());
        }
        LogFile::open(&self.target).map(drop)
    }

    /// Writes batches until the channel closes or a write fails.
    pub async fn run(self: Arc<Self>) -> Result<(), WriteError> {
        let mut rx = self.rx.lock().await;
        let mut out = if self.target.is_stdout() { None } else { Some(LogFile::open(&self.target)?) };
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            batch.clear();
            if rx.recv_many(&mut batch, BATCH).await == 0 {
                return Ok(());
            }
            let lines = std::mem::take(&mut batch);
            let count = lines.len() as u64;
            let result = match out.take() {
                Some(mut file) => {
                    let (file, result) = tokio::task::spawn_blocking(move || {
                        let r = file.write_batch(&lines);
                        (file, r)
                    })
                    .await
                    .map_err(|e| WriteError { path: self.target.path.clone(), source: std::io::Error::other(e) })?;
                    out = Some(file);
                    result
                }
                None => write_stdout(&lines).map_err(|source| WriteError { path: self.target.path.clone(), source }),
            };
            if let Err(e) = result {
                self.errors.inc_by(count);
                return Err(e);
            }
        }
    }
}

fn write_stdout(lines: &[Vec<u8>]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        out.write_all(line)?;
    }
    out.flush()
}

/// The open log file and its size.
struct LogFile {
    target: Target,
    file: BufWriter<File>,
    size: u64,
}

impl LogFile {
    fn err(&self, source: std::io::Error) -> WriteError {
        WriteError { path: self.target.path.clone(), source }
    }

    /// Opens (appending) or creates the file 0600; a missing directory is created 0700.
    fn open(target: &Target) -> Result<Self, WriteError> {
        let path = &target.path;
        let err = |source| WriteError { path: path.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
        }
        let file = OpenOptions::new().append(true).create(true).mode(0o600).open(path).map_err(err)?;
        crate::server::files::restrict(path).map_err(|e| err(e.source))?;
        let size = file.metadata().map_err(err)?.len();
        Ok(Self { target: target.clone(), file: BufWriter::new(file), size })
    }

    fn write_batch(&mut self, lines: &[Vec<u8>]) -> Result<(), WriteError> {
        let max = self.target.max_bytes();
        for line in lines {
            let len = line.len() as u64;
            if self.size > 0 && self.size.saturating_add(len) > max {
                self.rotate()?;
            }
            self.file.write_all(line).map_err(|e| self.err(e))?;
            self.size = self.size.saturating_add(len);
        }
        self.file.flush().map_err(|e| self.err(e))
    }

    /// Renames the file to a timestamped backup, starts a new one, prunes old backups.
    fn rotate(&mut self) -> Result<(), WriteError> {
        self.file.flush().map_err(|e| self.err(e))?;
        let mut now = jiff::Timestamp::now();
        let mut backup = backup_path(&self.target.path, now);
        while backup.exists() {
            now = now
                .checked_add(jiff::SignedDuration::from_millis(1))
                .map_err(|e| self.err(std::io::Error::other(e)))?;
            backup = backup_path(&self.target.path, now);
        }
        std::fs::rename(&self.target.path, &backup).map_err(|e| self.err(e))?;
        *self = Self::open(&self.target)?;
        prune(&self.target, jiff::Timestamp::now());
        Ok(())
    }
}

/// `dir/audit.log` -> (`audit`, `.log`).
fn stem_and_ext(path: &Path) -> (String, String) {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match name.rfind('.') {
        Some(dot) if dot > 0 => (name[..dot].to_string(), name[dot..].to_string()),
        _ => (name, String::new()),
    }
}

/// The backup name for a rotation at `ts`: `audit-2026-12-06T05-52-38.123.log`.
pub fn backup_path(path: &Path, ts: jiff::Timestamp) -> PathBuf {
    let (stem, ext) = stem_and_ext(path);
    let millis = ts.subsec_millisecond();
    let name = format!("{stem}-{}.{millis:03}{ext}", ts.strftime(BACKUP_TIME));
    path.with_file_name(name)
}

/// The rotation time encoded in a backup's file name, if `name` is a backup of `path`.
fn backup_time(path: &Path, name: &str) -> Option<jiff::Timestamp> {
    let (stem, ext) = stem_and_ext(path);
    let middle = name.strip_prefix(&stem)?.strip_prefix('-')?.strip_suffix(ext.as_str())?;
    let (date, time) = middle.split_once('T')?;
    let iso = format!("{date}T{}Z", time.replacen('-', ":", 2));
    iso.parse().ok()
}

/// Removes backups beyond `max_backups` (newest kept) and older than `max_age_days`.
fn prune(target: &Target, now: jiff::Timestamp) {
    let dir = match target.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let mut backups: Vec<(jiff::Timestamp, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            backup_time(&target.path, &name).map(|t| (t, e.path()))
        })
        .collect();
    backups.sort_by_key(|b| std::cmp::Reverse(b.0));
    let max_age = i64::try_from(target.max_age_days.saturating_mul(86_400)).unwrap_or(i64::MAX);
    let cutoff = now.checked_sub(jiff::SignedDuration::from_secs(max_age)).ok();
    for (i, (time, path)) in backups.iter().enumerate() {
        let too_many = target.max_backups > 0 && i as u64 >= target.max_backups;
        let too_old = target.max_age_days > 0 && cutoff.is_some_and(|c| *time < c);
        if too_many || too_old {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "removing an old audit log backup");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn target(path: PathBuf, max_backups: u64, max_age_days: u64) -> Target {
        Target { path, max_size_mb: 1, max_backups, max_age_days }
    }

    #[test]
    fn backup_names_as_lumberjack() {
        let ts: jiff::Timestamp = "2026-12-06T05:52:38.123456Z".parse().expect("ts");
        let p = backup_path(Path::new("/var/log/audit.log"), ts);
        assert_eq!(p, Path::new("/var/log/audit-2026-12-06T05-52-38.123.log"));
        assert_eq!(
            backup_time(Path::new("/x/audit.log"), "audit-2026-12-06T05-52-38.123.log"),
            Some("2026-12-06T05:52:38.123Z".parse().expect("ts"))
        );
        assert_eq!(backup_time(Path::new("/x/audit.log"), "audit.log"), None);
        assert_eq!(backup_time(Path::new("/x/audit.log"), "other-2026-12-06T05-52-38.123.log"), None);
        let bare = backup_path(Path::new("/x/audit"), ts);
        assert_eq!(bare, Path::new("/x/audit-2026-12-06T05-52-38.123"));
    }

    #[test]
    fn rotates_by_size_appends_and_prunes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("logs/audit.log");
        let t = target(path.clone(), 2, 0);
        let mut f = LogFile::open(&t).expect("open");
        assert_eq!(std::fs::metadata(path.parent().expect("dir")).expect("dir").permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&path).expect("file").permissions().mode() & 0o777, 0o600);
        let line = vec![b'x'; 400 * 1024];
        f.write_batch(&[line.clone(), line.clone()]).expect("write");
        drop(f);
        let mut f = LogFile::open(&t).expect("reopen appends");
        assert_eq!(f.size, 800 * 1024);
        f.write_batch(std::slice::from_ref(&line)).expect("rotates");
        assert_eq!(std::fs::metadata(&path).expect("file").len(), 400 * 1024, "a fresh file");
        for _ in 0..6 {
            f.write_batch(&[line.clone(), line.clone(), line.clone()]).expect("write");
        }
        let names: Vec<String> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let backups: Vec<&String> = names.iter().filter(|n| n.starts_with("audit-")).collect();
        assert_eq!(backups.len(), 2, "maxbackup keeps two: {names:?}");
        for b in backups {
            let mode = std::fs::metadata(path.with_file_name(b)).expect("backup").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn prunes_by_age() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("audit.log");
        let now: jiff::Timestamp = "2026-12-06T00:00:00Z".parse().expect("ts");
        let old = backup_path(&path, "2026-12-01T00:00:00Z".parse().expect("ts"));
        let new = backup_path(&path, "2026-12-05T12:00:00Z".parse().expect("ts"));
        let unrelated = tmp.path().join("audit-notes.txt");
        for p in [&old, &new, &unrelated] {
            std::fs::write(p, "x").expect("write");
        }
        prune(&target(path, 0, 2), now);
        assert!(!old.exists() && new.exists() && unrelated.exists());
    }

    #[tokio::test]
    async fn writer_drains_the_channel_to_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("audit.log");
        let (sink, writer) = channel(target(path.clone(), 0, 0), Counter::default(), Counter::default());
        writer.check().expect("open");
        let task = tokio::spawn(Arc::clone(&writer).run());
        let event = test_event();
        for _ in 0..3 {
            sink.send(&event).await;
        }
        drop(sink);
        task.await.expect("join").expect("run");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 3);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert_eq!(v["kind"], "Event");
        }
    }

    /// A minimal event for the writer test.
    fn test_event() -> Event {
        Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: super::super::policy::Level::Metadata,
            audit_id: "a".into(),
            stage: super::super::policy::Stage::ResponseComplete,
            request_uri: "/".into(),
            verb: "get".into(),
            user: serde_json::json!({}),
            impersonated_user: None,
            source_ips: vec![],
            user_agent: String::new(),
            object_ref: None,
            response_status: None,
            request_object: None,
            response_object: None,
            request_received_timestamp: String::new(),
            stage_timestamp: String::new(),
            annotations: Default::default(),
        }
    }
}
