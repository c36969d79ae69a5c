//! The embedded SQLite backend, modelled on k3s's kine.
//!
//! One table holds every write as a row whose id IS the store revision (`INTEGER PRIMARY KEY
//! AUTOINCREMENT`, so revisions never go back, even after compaction removed the newest rows).
//! A deletion is a row too (flag `deleted`, carrying the last value). The latest value of a key is
//! its highest row; the value at revision `R` is its highest row with `id <= R`.
//!
//! Writes go through ONE writer thread that owns the only write connection. Callers queue
//! requests on a channel; the writer takes everything pending (up to [`MAX_BATCH`]), applies it
//! in one transaction and commits once, so concurrent writers share one fsync (group commit).
//! After the commit it answers every caller and publishes the events on a broadcast channel that
//! watches follow. Reads use a small pool of read-only connections (WAL lets them run beside the
//! writer) on the blocking thread pool.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use futures::StreamExt;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};

use super::{Event, EventKind, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchStream};

/// Most requests the writer applies in one transaction.
const MAX_BATCH: usize = 256;
/// Requests that may wait for the writer before callers are held back.
const QUEUE_CAPACITY: usize = 4096;
/// Events a watch may fall behind before it is ended (it then resumes from the history table).
/// A broadcast slot keeps its event (value and previous value) until overwritten, so this is
/// also what the channel holds at rest: 4,096 pod writes are about 20 MB.
const EVENT_CAPACITY: usize = 4_096;
/// Read-only connections (and concurrent reads).
const READERS: usize = 4;
/// History rows a watch reads per query while catching up.
const HISTORY_PAGE: i64 = 1000;
/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS kv_key_id ON kv (key, id);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Columns of a `kv` row, in the order [`Row::read`] expects.
const ROW_COLUMNS: &str = "k.id, k.key, k.value, k.create_revision, k.prev_revision, k.deleted";

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

fn writer_gone() -> StoreError {
    StoreError::Backend("sqlite writer has stopped".to_string())
}

/// The key range `[lo, hi)` of a prefix, as blobs (keys are stored as blobs so that SQLite
/// compares them bytewise, like etcd). Keys are UTF-8, which never contains the byte 0xFF, so
/// `[0xFF]` is above every key.
fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let lo = prefix.as_bytes().to_vec();
    let hi = match lo.last() {
        Some(&last) => {
            let mut hi = lo.clone();
            let end = hi.len() - 1;
            hi[end] = last.saturating_add(1);
            hi
        }
        None => vec![0xFF],
    };
    (lo, hi)
}

/// One row of the `kv` table.
struct Row {
    id: Revision,
    key: String,
    value: Vec<u8>,
    create_revision: Revision,
    prev_revision: Revision,
    deleted: bool,
}

impl Row {
    /// Reads the [`ROW_COLUMNS`] starting at column `at`.
    fn read(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Self> {
        let key: Vec<u8> = row.get(at + 1)?;
        let key = String::from_utf8(key)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(at + 1, rusqlite::types::Type::Blob, Box::new(e)))?;
        Ok(Self {
            id: row.get(at)?,
            key,
            value: row.get(at + 2)?,
            create_revision: row.get(at + 3)?,
            prev_revision: row.get(at + 4)?,
            deleted: row.get(at + 5)?,
        })
    }

    /// The key as of this row (for a deletion: the deleted value at the delete's revision).
    fn kv(&self) -> KeyValue {
        KeyValue {
            key: self.key.clone(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.id,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queries shared by the writer and the readers.

fn current_revision(conn: &Connection) -> rusqlite::Result<Revision> {
    conn.query_row("SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'kv'), 0)", [], |r| r.get(0))
}

fn compacted_revision(conn: &Connection) -> rusqlite::Result<Revision> {
    conn.query_row("SELECT COALESCE((SELECT value FROM meta WHERE name = 'compacted'), 0)", [], |r| r.get(0))
}

/// The highest row of `key`, deletion or not.
fn latest_row(conn: &Connection, key: &str) -> rusqlite::Result<Option<Row>> {
    let sql = format!("SELECT {ROW_COLUMNS} FROM kv AS k WHERE k.key = ?1 ORDER BY k.id DESC LIMIT 1");
    conn.prepare_cached(&sql)?.query_row([key.as_bytes()], |r| Row::read(r, 0)).optional()
}

/// Live keys in `[lo, hi)` at `revision`, in key order, at most `limit` (negative: all).
fn list_rows(conn: &Connection, lo: &[u8], hi: &[u8], revision: Revision, limit: i64) -> rusqlite::Result<Vec<Row>> {
    let sql = format!(
        "SELECT {ROW_COLUMNS} FROM kv AS k
         WHERE k.key >= ?1 AND k.key < ?2 AND k.id <= ?3
           AND k.id = (SELECT MAX(m.id) FROM kv AS m WHERE m.key = k.key AND m.id <= ?3)
           AND k.deleted = 0
         ORDER BY k.key LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![lo, hi, revision, limit], |r| Row::read(r, 0))?;
    rows.collect()
}

fn count_live(conn: &Connection, lo: &[u8], hi: &[u8]) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(
        "SELECT COUNT(*) FROM kv AS k
         WHERE k.key >= ?1 AND k.key < ?2 AND k.deleted = 0
           AND k.id = (SELECT MAX(m.id) FROM kv AS m WHERE m.key = k.key)",
    )?;
    stmt.query_row(params![lo, hi], |r| r.get(0))
}

/// Events of the rows in `(after, upto]` with keys in `[lo, hi)`, in revision order, at most
/// `limit` of them.
fn history(
    conn: &Connection,
    lo: &[u8],
    hi: &[u8],
    after: Revision,
    upto: Revision,
    limit: i64,
) -> rusqlite::Result<Vec<Event>> {
    // `+k.key` keeps SQLite on the primary key: history is a revision range, usually short.
    let sql = format!(
        "SELECT {ROW_COLUMNS}, p.value, p.create_revision
         FROM kv AS k LEFT JOIN kv AS p ON p.id = k.prev_revision
         WHERE k.id > ?1 AND k.id <= ?2 AND +k.key >= ?3 AND +k.key < ?4
         ORDER BY k.id LIMIT ?5"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![after, upto, lo, hi, limit], |r| {
        let row = Row::read(r, 0)?;
        let prev_value: Option<Vec<u8>> = r.get(6)?;
        let prev_create: Option<Revision> = r.get(7)?;
        Ok(history_event(row, prev_value.zip(prev_create)))
    })?;
    rows.collect()
}

/// The event of a stored row; `prev` is the value and create revision of the row it replaced.
fn history_event(row: Row, prev: Option<(Vec<u8>, Revision)>) -> Event {
    let kv = row.kv();
    if row.deleted {
        // A deletion row carries the deleted value.
        let prev = KeyValue { mod_revision: row.prev_revision, ..kv.clone() };
        return Event { kind: EventKind::Delete, kv, prev: Some(prev) };
    }
    let prev = match prev {
        Some((value, create_revision)) if row.create_revision != row.id => {
            Some(KeyValue { key: row.key.clone(), value, create_revision, mod_revision: row.prev_revision })
        }
        _ => None,
    };
    Event { kind: EventKind::Put, kv, prev }
}

/// Checks that `revision` can be read in this snapshot.
fn check_readable(conn: &Connection, revision: Revision) -> Result<(), StoreError> {
    let compacted = compacted_revision(conn).map_err(backend)?;
    if revision < compacted {
        return Err(StoreError::Compacted { requested: revision, compacted });
    }
    let current = current_revision(conn).map_err(backend)?;
    if revision > current {
        return Err(StoreError::FutureRevision { requested: revision, current });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The writer.

/// A write, as queued for the writer.
enum Op {
    Create { key: String, value: Vec<u8> },
    Update { key: String, value: Vec<u8>, expected: Revision },
    Delete { key: String, expected: Option<Revision> },
    Compact { revision: Revision },
}

/// What a write answers: the written key, or nothing for a compaction.
type Outcome = Result<Option<KeyValue>, StoreError>;

struct Request {
    op: Op,
    reply: oneshot::Sender<Outcome>,
}

/// Applies the writes of one batch inside its transaction.
struct Batch<'a> {
    tx: &'a Transaction<'a>,
    /// The revision the next row gets.
    next: Revision,
    /// Events of the writes so far, in revision order.
    events: Vec<Event>,
}

impl Batch<'_> {
    /// Applies one write. The outer error is an SQL failure (the whole batch is abandoned); the
    /// inner one is this write's own verdict (`AlreadyExists`, `Conflict`, ...).
    fn apply(&mut self, op: &Op) -> rusqlite::Result<Outcome> {
        match op {
            Op::Create { key, value } => self.create(key, value),
            Op::Update { key, value, expected } => self.update(key, value, *expected),
            Op::Delete { key, expected } => self.delete(key, *expected),
            Op::Compact { revision } => self.compact(*revision),
        }
    }

    /// Inserts a row at the next revision and returns that revision.
    fn insert(
        &mut self,
        key: &str,
        value: &[u8],
        create_revision: Option<Revision>,
        prev: Revision,
        deleted: bool,
    ) -> rusqlite::Result<Revision> {
        let id = self.next;
        self.tx
            .prepare_cached(
                "INSERT INTO kv (id, key, value, create_revision, prev_revision, deleted) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![id, key.as_bytes(), value, create_revision.unwrap_or(id), prev, deleted])?;
        self.next += 1;
        Ok(id)
    }

    fn create(&mut self, key: &str, value: &[u8]) -> rusqlite::Result<Outcome> {
        let latest = latest_row(self.tx, key)?;
        if latest.as_ref().is_some_and(|row| !row.deleted) {
            return Ok(Err(StoreError::AlreadyExists(key.to_string())));
        }
        let prev = latest.map_or(0, |row| row.id);
        let id = self.insert(key, value, None, prev, false)?;
        let kv = KeyValue { key: key.to_string(), value: value.to_vec(), create_revision: id, mod_revision: id };
        self.events.push(Event { kind: EventKind::Put, kv: kv.clone(), prev: None });
        Ok(Ok(Some(kv)))
    }

    /// The live latest row of `key`, or the verdict when it is gone or moved past `expected`.
    fn current(&self, key: &str, expected: Option<Revision>) -> rusqlite::Result<Result<Row, StoreError>> {
        let row = match latest_row(self.tx, key)? {
            Some(row) if !row.deleted => row,
            _ => return Ok(Err(StoreError::NotFound(key.to_string()))),
        };
        match expected {
            Some(expected) if expected != row.id => {
                Ok(Err(StoreError::Conflict { key: key.to_string(), expected, current: Box::new(row.kv()) }))
            }
            _ => Ok(Ok(row)),
        }
    }

    fn update(&mut self, key: &str, value: &[u8], expected: Revision) -> rusqlite::Result<Outcome> {
        let old = match self.current(key, Some(expected))? {
            Ok(row) => row,
            Err(err) => return Ok(Err(err)),
        };
        let id = self.insert(key, value, Some(old.create_revision), old.id, false)?;
        let kv = KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: old.create_revision,
            mod_revision: id,
        };
        self.events.push(Event { kind: EventKind::Put, kv: kv.clone(), prev: Some(old.kv()) });
        Ok(Ok(Some(kv)))
    }

    fn delete(&mut self, key: &str, expected: Option<Revision>) -> rusqlite::Result<Outcome> {
        let old = match self.current(key, expected)? {
            Ok(row) => row,
            Err(err) => return Ok(Err(err)),
        };
        let id = self.insert(key, &old.value, Some(old.create_revision), old.id, true)?;
        let prev = old.kv();
        let kv = KeyValue { mod_revision: id, ..prev.clone() };
        self.events.push(Event { kind: EventKind::Delete, kv: kv.clone(), prev: Some(prev) });
        Ok(Ok(Some(kv)))
    }

    /// Removes every row superseded at or before `revision`, and deletions at or before it.
    fn compact(&mut self, revision: Revision) -> rusqlite::Result<Outcome> {
        let current = self.next - 1;
        if revision > current {
            return Ok(Err(StoreError::FutureRevision { requested: revision, current }));
        }
        let compacted = compacted_revision(self.tx)?;
        if revision <= compacted {
            return Ok(Ok(None));
        }
        let removed = self.tx.execute(
            "DELETE FROM kv WHERE id <= ?1 AND (deleted = 1 OR EXISTS (
                 SELECT 1 FROM kv AS newer WHERE newer.key = kv.key AND newer.id > kv.id AND newer.id <= ?1))",
            [revision],
        )?;
        self.tx.execute(
            "INSERT INTO meta (name, value) VALUES ('compacted', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [revision],
        )?;
        tracing::debug!(revision, removed, "compacted sqlite store");
        Ok(Ok(None))
    }
}

/// Applies a batch in one transaction: each write's outcome, and the events to publish.
fn apply_batch(conn: &mut Connection, ops: &[Op]) -> rusqlite::Result<(Vec<Outcome>, Vec<Event>)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let next = current_revision(&tx)? + 1;
    let mut batch = Batch { tx: &tx, next, events: Vec::new() };
    let outcomes = ops.iter().map(|op| batch.apply(op)).collect::<rusqlite::Result<Vec<_>>>()?;
    let events = batch.events;
    tx.commit()?;
    Ok((outcomes, events))
}

/// The writer thread: owns the write connection until every request sender is gone.
struct Writer {
    conn: Connection,
    requests: mpsc::Receiver<Request>,
    events: broadcast::Sender<Arc<Event>>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.requests.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        tracing::debug!("sqlite writer stopped");
    }

    /// Commits one batch, answers its callers and publishes its events.
    fn commit(&mut self, batch: Vec<Request>) {
        let (ops, replies): (Vec<Op>, Vec<oneshot::Sender<Outcome>>) =
            batch.into_iter().map(|r| (r.op, r.reply)).unzip();
        match apply_batch(&mut self.conn, &ops) {
            Ok((outcomes, events)) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // The caller may have given up waiting; nothing to do then.
                    let _ = reply.send(outcome);
                }
                for event in events {
                    // No receiver is fine: nobody is watching.
                    let _ = self.events.send(Arc::new(event));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, writes = ops.len(), "sqlite write batch failed");
                for reply in replies {
                    let _ = reply.send(Err(backend(&err)));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The readers.

/// Read-only connections, each used by one blocking task at a time.
struct ReadPool {
    conns: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    fn open(path: &Path, size: usize) -> Result<Self, StoreError> {
        let conns = (0..size).map(|_| open_reader(path)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { conns: Mutex::new(conns), permits: Arc::new(Semaphore::new(size)) })
    }

    /// Runs `read` in one read transaction (one consistent snapshot) on a blocking thread.
    async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits).acquire_owned().await.map_err(backend)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = pool.conns.lock().pop().ok_or_else(|| backend("no free sqlite read connection"))?;
            let result = match conn.transaction() {
                Ok(tx) => read(&tx),
                Err(err) => Err(backend(err)),
            };
            pool.conns.lock().push(conn);
            result
        })
        .await
        .map_err(backend)?
    }

    /// One page of watch history after `after`: its events and, when the page is the last one,
    /// the revision the history was read up to.
    async fn history_page(
        self: &Arc<Self>,
        prefix: &str,
        after: Revision,
    ) -> Result<(Vec<Event>, Option<Revision>), StoreError> {
        let (lo, hi) = prefix_range(prefix);
        self.read(move |conn| {
            let compacted = compacted_revision(conn).map_err(backend)?;
            if after < compacted {
                return Err(StoreError::Compacted { requested: after, compacted });
            }
            let current = current_revision(conn).map_err(backend)?;
            let events = history(conn, &lo, &hi, after, current, HISTORY_PAGE).map_err(backend)?;
            let done = (events.len() as i64) < HISTORY_PAGE;
            Ok((events, done.then_some(current)))
        })
        .await
    }
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(backend)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    Ok(conn)
}

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(backend)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!("sqlite refused WAL mode (journal mode is {mode})")));
    }
    // FULL: the WAL is fsynced at every commit, so an acknowledged write survives power loss.
    conn.pragma_update(None, "synchronous", "FULL").map_err(backend)?;
    conn.execute_batch(SCHEMA).map_err(backend)?;
    Ok(conn)
}

// ---------------------------------------------------------------------------------------------
// The store.

/// The SQLite [`Store`]: one database file in WAL mode, group-committed writes.
pub struct SqliteStore {
    path: PathBuf,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    reads: Arc<ReadPool>,
    events: broadcast::Sender<Arc<Event>>,
    commits: Arc<AtomicU64>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = open_writer(path)?;
        let reads = Arc::new(ReadPool::open(path, READERS)?);
        let (requests, queue) = mpsc::channel(QUEUE_CAPACITY);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer { conn, requests: queue, events: events.clone(), commits: Arc::clone(&commits) };
        let writer = std::thread::Builder::new()
            .name("skiff-sqlite-writer".to_string())
            .spawn(move || writer.run())
            .map_err(backend)?;
        tracing::info!(path = %path.display(), "opened sqlite store");
        Ok(Self { path: path.to_path_buf(), requests: Some(requests), writer: Some(writer), reads, events, commits })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write transactions committed since the store was opened (each is one fsync, however many
    /// writes it carried).
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Queues a write for the writer thread and waits for its outcome.
    async fn submit(&self, op: Op) -> Outcome {
        let requests = self.requests.as_ref().ok_or_else(writer_gone)?;
        let (reply, outcome) = oneshot::channel();
        requests.send(Request { op, reply }).await.map_err(|_| writer_gone())?;
        outcome.await.map_err(|_| writer_gone())?
    }

    /// Submits a write that answers with a key.
    async fn write(&self, op: Op) -> Result<KeyValue, StoreError> {
        self.submit(op).await?.ok_or_else(|| backend("sqlite writer answered a write without a value"))
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue stops the writer once it has committed what is pending.
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("sqlite writer thread panicked");
            }
        }
    }
}

/// Follows the writer's events after `after`, reading history from the database first.
fn watch_stream(
    reads: Arc<ReadPool>,
    mut live: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    after: Revision,
    history_needed: bool,
) -> WatchStream {
    async_stream::stream! {
        // Every event with a revision up to `last` has been yielded or filtered out.
        let mut last = after;
        let mut catching_up = history_needed;
        while catching_up {
            match reads.history_page(&prefix, last).await {
                Ok((events, done)) => {
                    for event in events {
                        last = event.revision();
                        yield Ok(event);
                    }
                    if let Some(upto) = done {
                        last = last.max(upto);
                        catching_up = false;
                    }
                }
                Err(err) => {
                    yield Err(err);
                    return;
                }
            }
        }
        loop {
            match live.recv().await {
                Ok(event) => {
                    if event.revision() <= last {
                        continue;
                    }
                    last = event.revision();
                    if event.kv.key.starts_with(prefix.as_str()) {
                        yield Ok(Event::clone(&event));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, prefix = %prefix, "sqlite watch fell behind");
                    yield Err(StoreError::Backend("watch fell behind".to_string()));
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    yield Err(writer_gone());
                    return;
                }
            }
        }
    }
    .boxed()
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.write(Op::Create { key: key.to_string(), value }).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StoreError> {
        self.write(Op::Update { key: key.to_string(), value, expected }).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        self.write(Op::Delete { key: key.to_string(), expected }).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.reads
            .read(move |conn| {
                let row = latest_row(conn, &key).map_err(backend)?;
                Ok(row.filter(|row| !row.deleted).map(|row| row.kv()))
            })
            .await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult, StoreError> {
        let (mut lo, hi) = prefix_range(prefix);
        if let Some(after) = &opts.start_after {
            let mut above = after.as_bytes().to_vec();
            above.push(0);
            lo = lo.max(above);
        }
        let limit = opts.limit.filter(|&l| l > 0);
        // One more than asked tells whether more keys follow.
        let fetch = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX - 1).saturating_add(1));
        self.reads
            .read(move |conn| {
                let revision = match opts.revision.filter(|&r| r > 0) {
                    Some(revision) => {
                        check_readable(conn, revision)?;
                        revision
                    }
                    None => current_revision(conn).map_err(backend)?,
                };
                let rows = list_rows(conn, &lo, &hi, revision, fetch).map_err(backend)?;
                let mut items: Vec<KeyValue> = rows.iter().map(Row::kv).collect();
                let more = limit.is_some_and(|l| items.len() > l);
                if let Some(l) = limit {
                    items.truncate(l);
                }
                Ok(ListResult { items, revision, more })
            })
            .await
    }

    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let (lo, hi) = prefix_range(prefix);
        self.reads.read(move |conn| count_live(conn, &lo, &hi).map_err(backend)).await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.reads.read(|conn| current_revision(conn).map_err(backend)).await
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.reads.read(|conn| compacted_revision(conn).map_err(backend)).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // Subscribe before reading: every event not in the history read below is then received.
        let live = self.events.subscribe();
        // 0 is "from the first revision", like any other `after` (an empty store is at 0).
        let after = after.max(0);
        let history_needed = self
            .reads
            .read(move |conn| {
                let compacted = compacted_revision(conn).map_err(backend)?;
                if after < compacted {
                    return Err(StoreError::Compacted { requested: after, compacted });
                }
                Ok(after < current_revision(conn).map_err(backend)?)
            })
            .await?;
        Ok(watch_stream(Arc::clone(&self.reads), live, prefix.to_string(), after, history_needed))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.submit(Op::Compact { revision }).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges() {
        assert_eq!(prefix_range("/a/"), (b"/a/".to_vec(), b"/a0".to_vec()));
        assert_eq!(prefix_range(""), (Vec::new(), vec![0xFF]));
    }

    #[test]
    fn queries_use_the_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open_writer(&dir.path().join("db")).expect("open");
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("prepare");
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).expect("plan");
            rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("; ")
        };
        let list = plan(
            "SELECT k.id FROM kv AS k WHERE k.key >= x'2f' AND k.key < x'30' AND k.id <= 5
             AND k.id = (SELECT MAX(m.id) FROM kv AS m WHERE m.key = k.key AND m.id <= 5)
             AND k.deleted = 0 ORDER BY k.key LIMIT 10",
        );
        assert!(list.contains("kv_key_id"), "{list}");
        assert!(!list.contains("TEMP B-TREE"), "{list}");
        let history = plan(
            "SELECT k.id FROM kv AS k LEFT JOIN kv AS p ON p.id = k.prev_revision
             WHERE k.id > 1 AND k.id <= 9 AND +k.key >= x'2f' AND +k.key < x'30' ORDER BY k.id LIMIT 5",
        );
        assert!(history.contains("INTEGER PRIMARY KEY"), "{history}");
    }
}
