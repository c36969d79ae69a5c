//! Behaviour every [`Store`] backend must have, checked against SQLite and a real etcd.
//!
//! Each case is an async function over `Arc<dyn Store>`; [`conformance!`] instantiates it once
//! per backend, each test on a fresh store. The etcd tests start an `etcd` process (package
//! `etcd-server`) and FAIL when the binary is missing.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tempfile::TempDir;

use super::etcd::EtcdStore;
use super::sqlite::SqliteStore;
use super::{Event, EventKind, KeyValue, ListOptions, Revision, Store, StoreError, WatchStream};

/// How long a watch may take to deliver an expected event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// A SQLite store in a temporary directory.
struct SqliteFixture {
    store: Arc<SqliteStore>,
    dir: TempDir,
}

impl SqliteFixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(&dir.path().join("skiff.db")).expect("open sqlite store"));
        Self { store, dir }
    }

    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
}

/// An `etcd` process on free loopback ports, killed on drop (also when a test fails).
struct EtcdServer {
    child: Child,
    endpoint: String,
    dir: TempDir,
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `etcd` binary: on `PATH`, else `/usr/bin/etcd`.
fn etcd_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"));
    on_path.chain([PathBuf::from("/usr/bin/etcd")]).find(|path| path.is_file())
}

/// Two distinct free loopback ports.
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    (a.local_addr().expect("addr").port(), b.local_addr().expect("addr").port())
}

impl EtcdServer {
    /// Starts etcd and connects a store to it.
    async fn start() -> (Self, Arc<EtcdStore>) {
        let Some(binary) = etcd_binary() else {
            panic!(
                "the etcd store tests need the `etcd` binary (not on PATH nor at /usr/bin/etcd); \
                 install it with `apt-get install -y etcd-server`"
            );
        };
        let mut failures = Vec::new();
        // A port picked as free may be taken before etcd binds it: try again on new ones.
        for _ in 0..3 {
            match Self::try_start(&binary).await {
                Ok(started) => return started,
                Err(err) => failures.push(err),
            }
        }
        panic!("etcd did not start:\n{}", failures.join("\n---\n"));
    }

    async fn try_start(binary: &PathBuf) -> Result<(Self, Arc<EtcdStore>), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (client, peer) = free_ports();
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let mut server = Self { child, endpoint: client_url, dir };
        let store = server.wait_until_ready().await?;
        Ok((server, Arc::new(store)))
    }

    async fn wait_until_ready(&mut self) -> Result<EtcdStore, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last_error = String::from("never answered");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("etcd exited with {status}:\n{}", self.log()));
            }
            let attempt = EtcdStore::connect(std::slice::from_ref(&self.endpoint));
            match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                Ok(Ok(store)) => return Ok(store),
                Ok(Err(err)) => last_error = err.to_string(),
                Err(_) => last_error = "connect timed out".to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("etcd at {} did not answer in time ({last_error}):\n{}", self.endpoint, self.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

/// Instantiates every case for both backends.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let fixture = super::SqliteFixture::new();
                    super::$case(fixture.store()).await;
                }
            )*
        }

        mod etcd_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (_server, store) = super::EtcdServer::start().await;
                    super::$case(store).await;
                }
            )*
        }
    };
}

conformance!(
    create_then_already_exists,
    update_compares_mod_revision,
    delete_with_and_without_expected_revision,
    get_returns_latest_value,
    list_is_in_key_order_under_the_prefix,
    list_pages_with_start_after_and_limit,
    list_at_an_old_revision,
    count_live_keys,
    unlimited_list_larger_than_one_response,
    revisions_strictly_increase_across_keys,
    watch_replays_history_then_follows_live,
    watch_filters_by_prefix,
    watch_from_zero_replays_everything,
    watch_replays_long_history,
    compaction_forgets_old_revisions,
    concurrent_writers_all_acknowledged,
    concurrent_updates_one_wins,
);

// ---------------------------------------------------------------------------------------------
// Helpers.

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

async fn next_event(stream: &mut WatchStream) -> Event {
    match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(err))) => panic!("watch failed: {err}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

fn assert_put(event: &Event, kv: &KeyValue, prev: Option<&KeyValue>) {
    assert_eq!(event.kind, EventKind::Put, "{event:?}");
    assert_eq!(&event.kv, kv);
    assert_eq!(event.prev.as_ref(), prev, "prev of {event:?}");
}

/// A delete event: the last value at the delete's revision, and that value as `prev`.
fn assert_delete(event: &Event, deleted: &KeyValue, last: &KeyValue) {
    assert_eq!(event.kind, EventKind::Delete, "{event:?}");
    assert_eq!(&event.kv, deleted);
    assert_eq!(event.kv.value, last.value);
    assert_eq!(event.kv.create_revision, last.create_revision);
    assert_eq!(event.prev.as_ref(), Some(last), "prev of {event:?}");
}

fn assert_compacted<T: std::fmt::Debug>(result: Result<T, StoreError>, requested: Revision, compacted: Revision) {
    match result {
        Err(StoreError::Compacted { requested: r, compacted: c }) => {
            assert_eq!((r, c), (requested, compacted));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The cases.

async fn create_then_already_exists(store: Arc<dyn Store>) {
    let kv = store.create("/c/a", bytes("1")).await.expect("create");
    assert_eq!(kv.key, "/c/a");
    assert_eq!(kv.value, bytes("1"));
    assert!(kv.mod_revision > 0);
    assert_eq!(kv.create_revision, kv.mod_revision);

    let err = store.create("/c/a", bytes("2")).await.expect_err("second create");
    assert!(matches!(err, StoreError::AlreadyExists(ref key) if key == "/c/a"), "{err:?}");
    assert_eq!(store.get("/c/a").await.expect("get"), Some(kv.clone()));
    // The refused create wrote nothing.
    assert_eq!(store.current_revision().await.expect("revision"), kv.mod_revision);
}

async fn update_compares_mod_revision(store: Arc<dyn Store>) {
    let created = store.create("/u/a", bytes("1")).await.expect("create");
    let updated = store.update("/u/a", bytes("2"), created.mod_revision).await.expect("update");
    assert_eq!(updated.value, bytes("2"));
    assert_eq!(updated.create_revision, created.create_revision);
    assert!(updated.mod_revision > created.mod_revision);

    // A stale revision conflicts and reports the current value.
    match store.update("/u/a", bytes("3"), created.mod_revision).await {
        Err(StoreError::Conflict { key, expected, current }) => {
            assert_eq!(key, "/u/a");
            assert_eq!(expected, created.mod_revision);
            assert_eq!(*current, updated);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get("/u/a").await.expect("get"), Some(updated.clone()));

    // A missing key, whatever the revision (0 included), is NotFound, and is not created.
    for expected in [0, updated.mod_revision] {
        let err = store.update("/u/missing", bytes("x"), expected).await.expect_err("update missing");
        assert!(matches!(err, StoreError::NotFound(ref key) if key == "/u/missing"), "{err:?}");
    }
    assert_eq!(store.get("/u/missing").await.expect("get"), None);

    // A deleted key is NotFound too.
    store.delete("/u/a", None).await.expect("delete");
    let err = store.update("/u/a", bytes("4"), updated.mod_revision).await.expect_err("update deleted");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

async fn delete_with_and_without_expected_revision(store: Arc<dyn Store>) {
    let a = store.create("/d/a", bytes("a")).await.expect("create a");
    let a2 = store.update("/d/a", bytes("a2"), a.mod_revision).await.expect("update a");

    // Wrong expected revision: Conflict, nothing deleted.
    match store.delete("/d/a", Some(a.mod_revision)).await {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(*current, a2),
        other => panic!("expected Conflict, got {other:?}"),
    }
    // Right expected revision: the last value at the delete's revision.
    let deleted = store.delete("/d/a", Some(a2.mod_revision)).await.expect("delete a");
    assert_eq!(deleted.value, bytes("a2"));
    assert_eq!(deleted.create_revision, a.create_revision);
    assert!(deleted.mod_revision > a2.mod_revision);
    assert_eq!(store.current_revision().await.expect("revision"), deleted.mod_revision);
    assert_eq!(store.get("/d/a").await.expect("get"), None);

    // Unconditional delete.
    let b = store.create("/d/b", bytes("b")).await.expect("create b");
    let deleted_b = store.delete("/d/b", None).await.expect("delete b");
    assert_eq!(deleted_b.value, b.value);
    assert!(deleted_b.mod_revision > b.mod_revision);

    // Deleting what is not there.
    for expected in [None, Some(b.mod_revision)] {
        let err = store.delete("/d/b", expected).await.expect_err("delete again");
        assert!(matches!(err, StoreError::NotFound(ref key) if key == "/d/b"), "{err:?}");
    }
    let err = store.delete("/d/never", None).await.expect_err("delete missing");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");

    // A deleted key can be created again, as a new key.
    let again = store.create("/d/a", bytes("again")).await.expect("recreate");
    assert!(again.create_revision > deleted.mod_revision);
    assert_eq!(again.create_revision, again.mod_revision);
}

async fn get_returns_latest_value(store: Arc<dyn Store>) {
    assert_eq!(store.get("/g/a").await.expect("get missing"), None);
    let mut kv = store.create("/g/a", bytes("0")).await.expect("create");
    for i in 1..5 {
        kv = store.update("/g/a", bytes(&i.to_string()), kv.mod_revision).await.expect("update");
    }
    assert_eq!(store.get("/g/a").await.expect("get"), Some(kv.clone()));
    assert_eq!(kv.value, bytes("4"));
    // A key is not a prefix: "/g/a" says nothing of "/g/ab".
    assert_eq!(store.get("/g/ab").await.expect("get other"), None);
    assert_eq!(store.get("/g/").await.expect("get prefix"), None);
}

async fn list_is_in_key_order_under_the_prefix(store: Arc<dyn Store>) {
    for key in ["/l/b", "/l/a/x", "/l/c", "/l/a", "/lx", "/k/a", "/l/B"] {
        store.create(key, bytes(key)).await.expect("create");
    }
    store.delete("/l/c", None).await.expect("delete");
    let written = store.current_revision().await.expect("revision");

    let list = store.list("/l/", ListOptions::default()).await.expect("list");
    assert_eq!(keys(&list.items), ["/l/B", "/l/a", "/l/a/x", "/l/b"]);
    assert!(!list.more);
    assert_eq!(list.revision, written);
    for kv in &list.items {
        assert_eq!(kv.value, bytes(&kv.key));
        assert_eq!(store.get(&kv.key).await.expect("get").as_ref(), Some(kv));
    }

    let all = store.list("", ListOptions::default()).await.expect("list all");
    assert_eq!(keys(&all.items), ["/k/a", "/l/B", "/l/a", "/l/a/x", "/l/b", "/lx"]);
    let none = store.list("/nothing/", ListOptions::default()).await.expect("list empty");
    assert!(none.items.is_empty() && !none.more);
}

async fn list_pages_with_start_after_and_limit(store: Arc<dyn Store>) {
    let mut expected = Vec::new();
    for i in 0..23 {
        let key = format!("/p/{i:03}");
        store.create(&key, bytes("v")).await.expect("create");
        expected.push(key);
    }
    store.create("/q/after", bytes("v")).await.expect("create outside");

    let mut seen = Vec::new();
    let mut start_after = None;
    let mut revision = None;
    loop {
        let opts = ListOptions { start_after: start_after.clone(), limit: Some(5), revision };
        let page = store.list("/p/", opts).await.expect("page");
        assert!(page.items.len() <= 5);
        // Every page reads the revision of the first.
        if let Some(revision) = revision {
            assert_eq!(page.revision, revision);
        }
        revision = Some(page.revision);
        seen.extend(page.items.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
        // Writes between pages do not show in the pages.
        store.create(&format!("/p/{:03}z", seen.len()), bytes("late")).await.expect("create late");
    }
    assert_eq!(seen, expected);

    // An exact multiple of the limit: the last full page says no more.
    let full = store.list("/p/", ListOptions { limit: Some(3), start_after: Some("/p/019".into()), revision }).await;
    let full = full.expect("last page");
    assert_eq!(keys(&full.items), ["/p/020", "/p/021", "/p/022"]);
    assert!(!full.more);

    // Limit 0 means all; a start_after before the prefix changes nothing.
    let all = store.list("/p/", ListOptions { limit: Some(0), start_after: Some("/a".into()), revision }).await;
    assert_eq!(all.expect("all").items.len(), 23);
}

async fn list_at_an_old_revision(store: Arc<dyn Store>) {
    let a = store.create("/o/a", bytes("a1")).await.expect("create a");
    let b = store.create("/o/b", bytes("b1")).await.expect("create b");
    let old = store.current_revision().await.expect("revision");

    store.update("/o/a", bytes("a2"), a.mod_revision).await.expect("update a");
    store.create("/o/c", bytes("c1")).await.expect("create c");
    store.delete("/o/b", None).await.expect("delete b");

    let then = store.list("/o/", ListOptions { revision: Some(old), ..Default::default() }).await.expect("old list");
    assert_eq!(then.revision, old);
    assert_eq!(then.items, vec![a.clone(), b.clone()]);

    let now = store.list("/o/", ListOptions::default()).await.expect("list");
    assert_eq!(keys(&now.items), ["/o/a", "/o/c"]);
    assert_eq!(now.items[0].value, bytes("a2"));

    // Paging works at an old revision too.
    let opts = ListOptions { revision: Some(old), limit: Some(1), start_after: None };
    let first = store.list("/o/", opts).await.expect("old page");
    assert_eq!((first.items, first.more), (vec![a], true));

    let future = now.revision + 100;
    match store.list("/o/", ListOptions { revision: Some(future), ..Default::default() }).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (future, now.revision));
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

/// An unlimited list returns every key even when they exceed one backend response (etcd's gRPC
/// limit is 4 MiB).
async fn unlimited_list_larger_than_one_response(store: Arc<dyn Store>) {
    let big = vec![b'x'; 4096];
    let writes: Vec<_> = (0..1500)
        .map(|i| {
            let (store, value) = (Arc::clone(&store), big.clone());
            async move { store.create(&format!("/big/{i:05}"), value).await }
        })
        .collect();
    for write in futures::future::join_all(writes).await {
        write.expect("create");
    }
    let listed = store.list("/big/", ListOptions::default()).await.expect("list all");
    assert_eq!(listed.items.len(), 1500);
    assert!(!listed.more);
    assert!(listed.items.windows(2).all(|w| w[0].key < w[1].key), "in key order");
}

async fn count_live_keys(store: Arc<dyn Store>) {
    assert_eq!(store.count("/n/").await.expect("count"), 0);
    for i in 0..10 {
        store.create(&format!("/n/{i}"), bytes("v")).await.expect("create");
    }
    store.create("/nx", bytes("v")).await.expect("create outside");
    let kv = store.get("/n/3").await.expect("get").expect("present");
    store.update("/n/3", bytes("w"), kv.mod_revision).await.expect("update");
    store.delete("/n/4", None).await.expect("delete");
    store.delete("/n/5", None).await.expect("delete");
    store.create("/n/5", bytes("back")).await.expect("recreate");
    assert_eq!(store.count("/n/").await.expect("count"), 9);
    assert_eq!(store.count("").await.expect("count all"), 10);
}

async fn revisions_strictly_increase_across_keys(store: Arc<dyn Store>) {
    let start = store.current_revision().await.expect("revision");
    let mut last = start;
    let mut kvs = Vec::new();
    for i in 0..5 {
        let kv = store.create(&format!("/r/{i}"), bytes("v")).await.expect("create");
        assert!(kv.mod_revision > last);
        last = kv.mod_revision;
        kvs.push(kv);
    }
    for kv in &kvs {
        let updated = store.update(&kv.key, bytes("w"), kv.mod_revision).await.expect("update");
        assert!(updated.mod_revision > last);
        last = updated.mod_revision;
    }
    let deleted = store.delete("/r/0", None).await.expect("delete");
    assert!(deleted.mod_revision > last);
    assert_eq!(store.current_revision().await.expect("revision"), deleted.mod_revision);
    // One write, one revision.
    assert_eq!(deleted.mod_revision - start, 11);
}

async fn watch_replays_history_then_follows_live(store: Arc<dyn Store>) {
    let before = store.current_revision().await.expect("revision");
    let a1 = store.create("/w/a", bytes("1")).await.expect("create a");
    let a2 = store.update("/w/a", bytes("2"), a1.mod_revision).await.expect("update a");
    let b1 = store.create("/w/b", bytes("1")).await.expect("create b");
    let a_deleted = store.delete("/w/a", None).await.expect("delete a");
    store.create("/other/x", bytes("x")).await.expect("create outside");

    let mut watch = store.watch("/w/", before).await.expect("watch");
    assert_put(&next_event(&mut watch).await, &a1, None);
    assert_put(&next_event(&mut watch).await, &a2, Some(&a1));
    assert_put(&next_event(&mut watch).await, &b1, None);
    assert_delete(&next_event(&mut watch).await, &a_deleted, &a2);

    // Live events follow, in revision order.
    let b2 = store.update("/w/b", bytes("2"), b1.mod_revision).await.expect("update b");
    let a_again = store.create("/w/a", bytes("again")).await.expect("recreate a");
    let b_deleted = store.delete("/w/b", Some(b2.mod_revision)).await.expect("delete b");
    assert_put(&next_event(&mut watch).await, &b2, Some(&b1));
    assert_put(&next_event(&mut watch).await, &a_again, None);
    assert_delete(&next_event(&mut watch).await, &b_deleted, &b2);

    // A watch from the middle replays only what followed.
    let mut late = store.watch("/w/", b1.mod_revision).await.expect("watch from middle");
    let revisions: Vec<Revision> = [
        next_event(&mut late).await,
        next_event(&mut late).await,
        next_event(&mut late).await,
        next_event(&mut late).await,
    ]
    .iter()
    .map(Event::revision)
    .collect();
    assert_eq!(revisions, [a_deleted.mod_revision, b2.mod_revision, a_again.mod_revision, b_deleted.mod_revision]);
}

async fn watch_filters_by_prefix(store: Arc<dyn Store>) {
    let before = store.current_revision().await.expect("revision");
    store.create("/f/x", bytes("no")).await.expect("create outside");
    let a = store.create("/f/a/1", bytes("yes")).await.expect("create inside");
    store.create("/f/ab", bytes("no")).await.expect("create sibling");

    let mut watch = store.watch("/f/a/", before).await.expect("watch");
    assert_put(&next_event(&mut watch).await, &a, None);

    store.create("/f/b/1", bytes("no")).await.expect("create outside");
    store.create("/f/a", bytes("no")).await.expect("create prefix without slash");
    let b = store.create("/f/a/2", bytes("yes")).await.expect("create inside");
    assert_put(&next_event(&mut watch).await, &b, None);

    // The empty prefix watches everything.
    let mut everything = store.watch("", before).await.expect("watch all");
    let first = next_event(&mut everything).await;
    assert_eq!(first.kv.key, "/f/x");
    assert_eq!(first.revision(), before + 1);
}

/// `after = 0` replays from the first revision (the store's revision when nothing was written).
async fn watch_from_zero_replays_everything(store: Arc<dyn Store>) {
    let mut from_empty = store.watch("/z/", 0).await.expect("watch empty");
    let old = store.create("/z/old", bytes("old")).await.expect("create");
    let mut watch = store.watch("/z/", 0).await.expect("watch");
    let new = store.create("/z/new", bytes("new")).await.expect("create");
    for stream in [&mut from_empty, &mut watch] {
        assert_put(&next_event(stream).await, &old, None);
        assert_put(&next_event(stream).await, &new, None);
    }
    // The current revision as `after` replays nothing.
    let now = store.current_revision().await.expect("revision");
    let mut live = store.watch("/z/", now).await.expect("watch now");
    let newer = store.create("/z/newer", bytes("newer")).await.expect("create");
    assert_put(&next_event(&mut live).await, &newer, None);
}

/// More history than one read (SQLite pages it) arrives complete and in order.
async fn watch_replays_long_history(store: Arc<dyn Store>) {
    let start = store.current_revision().await.expect("revision");
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..80 {
                    let key = format!("/long/{t:02}/{i:02}");
                    let kv = store.create(&key, bytes("v")).await.expect("create");
                    if i % 2 == 0 {
                        store.delete(&key, Some(kv.mod_revision)).await.expect("delete");
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let end = store.current_revision().await.expect("revision");
    let mut watch = store.watch("/long/", start).await.expect("watch");
    let mut expected = start + 1;
    while expected <= end {
        let event = next_event(&mut watch).await;
        assert_eq!(event.revision(), expected);
        if event.kind == EventKind::Delete {
            assert_eq!(event.prev.as_ref().map(|p| p.value.clone()), Some(bytes("v")));
        }
        expected += 1;
    }
    let live = store.create("/long/live", bytes("v")).await.expect("create");
    assert_put(&next_event(&mut watch).await, &live, None);
}

async fn compaction_forgets_old_revisions(store: Arc<dyn Store>) {
    let a1 = store.create("/x/a", bytes("1")).await.expect("create a");
    store.create("/x/b", bytes("1")).await.expect("create b");
    let old = store.current_revision().await.expect("revision");
    let a2 = store.update("/x/a", bytes("2"), a1.mod_revision).await.expect("update a");
    let c1 = store.create("/x/c", bytes("1")).await.expect("create c");
    store.delete("/x/b", None).await.expect("delete b");
    let mid = store.current_revision().await.expect("revision");
    let a3 = store.update("/x/a", bytes("3"), a2.mod_revision).await.expect("update a");
    let c_deleted = store.delete("/x/c", None).await.expect("delete c");
    let current = store.current_revision().await.expect("revision");

    store.compact(mid).await.expect("compact");
    assert_eq!(store.compacted_revision().await.expect("compacted"), mid);
    assert_eq!(store.current_revision().await.expect("revision"), current);

    // Before the compacted revision: gone, for lists and watches.
    let opts = ListOptions { revision: Some(old), ..Default::default() };
    assert_compacted(store.list("/x/", opts).await, old, mid);
    match store.watch("/x/", old).await {
        Err(err) => assert_compacted::<()>(Err(err), old, mid),
        Ok(mut watch) => {
            let first = tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await.expect("watch answers");
            assert_compacted(first.expect("an item"), old, mid);
        }
    }

    // At the compacted revision: still the state of then.
    let then = store.list("/x/", ListOptions { revision: Some(mid), ..Default::default() }).await.expect("list");
    assert_eq!(then.items, vec![a2.clone(), c1.clone()]);
    let now = store.list("/x/", ListOptions::default()).await.expect("list");
    assert_eq!(now.items, vec![a3.clone()]);
    assert_eq!(store.get("/x/a").await.expect("get"), Some(a3.clone()));

    // And history after it, with previous values.
    let mut watch = store.watch("/x/", mid).await.expect("watch from compacted revision");
    assert_put(&next_event(&mut watch).await, &a3, Some(&a2));
    assert_delete(&next_event(&mut watch).await, &c_deleted, &c1);

    // Compacting an older revision again is a no-op; a future one is refused.
    store.compact(old).await.expect("compact older");
    assert_eq!(store.compacted_revision().await.expect("compacted"), mid);
    match store.compact(current + 100).await {
        Err(StoreError::FutureRevision { requested, .. }) => assert_eq!(requested, current + 100),
        other => panic!("expected FutureRevision, got {other:?}"),
    }

    // Writes go on after the compacted revisions; compacting everything keeps live keys.
    let d = store.create("/x/d", bytes("1")).await.expect("create d");
    assert!(d.mod_revision > current);
    let latest = store.current_revision().await.expect("revision");
    store.compact(latest).await.expect("compact all");
    let now = store.list("/x/", ListOptions::default()).await.expect("list");
    assert_eq!(now.items, vec![a3, d]);
    let e = store.create("/x/e", bytes("1")).await.expect("create e");
    assert!(e.mod_revision > latest);
}

async fn concurrent_writers_all_acknowledged(store: Arc<dyn Store>) {
    const TASKS: usize = 64;
    const WRITES: usize = 20;
    let start = store.current_revision().await.expect("revision");
    let mut watch = store.watch("/cc/", start).await.expect("watch");
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut revisions = Vec::new();
                for i in 0..WRITES {
                    let kv = store.create(&format!("/cc/{t:02}/{i:02}"), bytes("v")).await.expect("create");
                    revisions.push(kv.mod_revision);
                }
                revisions
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        let mine = task.await.expect("task");
        // One writer's revisions increase.
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
        revisions.extend(mine);
    }
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), TASKS * WRITES, "revisions must be distinct");
    assert_eq!(store.current_revision().await.expect("revision"), start + (TASKS * WRITES) as Revision);
    assert_eq!(store.count("/cc/").await.expect("count"), (TASKS * WRITES) as u64);
    let list = store.list("/cc/", ListOptions::default()).await.expect("list");
    assert_eq!(list.items.len(), TASKS * WRITES);
    assert!(list.items.windows(2).all(|w| w[0].key < w[1].key));

    // The watch saw every write once, in revision order.
    let mut seen = Vec::new();
    while seen.len() < TASKS * WRITES {
        seen.push(next_event(&mut watch).await.revision());
    }
    assert_eq!(seen, revisions);
}

async fn concurrent_updates_one_wins(store: Arc<dyn Store>) {
    let kv = store.create("/race", bytes("0")).await.expect("create");
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.update("/race", bytes(&t.to_string()), kv.mod_revision).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => winners += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(err) => panic!("unexpected error {err:?}"),
        }
    }
    assert_eq!(winners, 1);
}

// ---------------------------------------------------------------------------------------------
// SQLite only.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_reopen_keeps_data_and_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("skiff.db");
    let (kept, last) = {
        let store = SqliteStore::open(&path).expect("open");
        let kept = store.create("/re/kept", bytes("v")).await.expect("create");
        store.create("/re/gone", bytes("v")).await.expect("create");
        let gone = store.delete("/re/gone", None).await.expect("delete");
        // Compacting everything removes the newest row (a deletion): the revision must not go back.
        store.compact(gone.mod_revision).await.expect("compact");
        (kept, gone.mod_revision)
    };
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(store.get("/re/kept").await.expect("get"), Some(kept));
    assert_eq!(store.get("/re/gone").await.expect("get"), None);
    assert_eq!(store.current_revision().await.expect("revision"), last);
    assert_eq!(store.compacted_revision().await.expect("compacted"), last);
    let next = store.create("/re/next", bytes("v")).await.expect("create");
    assert_eq!(next.mod_revision, last + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_group_commit_shares_transactions() {
    let fixture = SqliteFixture::new();
    let store = fixture.store();
    let writes = 64 * 20;
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..20 {
                    store.create(&format!("/gc/{t}/{i}"), bytes("v")).await.expect("create");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let commits = fixture.store.commit_count();
    eprintln!("group commit: {commits} commits for {writes} writes");
    assert!(commits < writes / 2, "{commits} commits for {writes} writes: no group commit");

    // Refused writes in a batch do not abort the others.
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = Arc::clone(&store);
            // Even: new keys; odd: keys that exist.
            let key = if i % 2 == 0 { format!("/gc/new/{i}") } else { format!("/gc/{i}/0") };
            tokio::spawn(async move { store.create(&key, bytes("v")).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.expect("task");
        if i % 2 == 0 {
            result.expect("new key");
        } else {
            assert!(matches!(result, Err(StoreError::AlreadyExists(_))), "{result:?}");
        }
    }
    assert_eq!(store.count("/gc/new/").await.expect("count"), 16);
}

#[tokio::test]
async fn sqlite_uses_wal() {
    let fixture = SqliteFixture::new();
    fixture.store.create("/wal", bytes("v")).await.expect("create");
    let conn = rusqlite::Connection::open(fixture.dir.path().join("skiff.db")).expect("open");
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("pragma");
    assert_eq!(mode, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_watch_that_falls_behind_ends() {
    let fixture = SqliteFixture::new();
    let store = fixture.store();
    let mut watch = store.watch("/lag/", 0).await.expect("watch");
    // More events than the broadcast keeps, while nobody reads the watch.
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..260 {
                    store.create(&format!("/lag/{t}/{i}"), bytes("v")).await.expect("create");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let mut delivered = 0;
    loop {
        match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await.expect("watch answers") {
            Some(Ok(_)) => delivered += 1,
            Some(Err(StoreError::Backend(message))) => {
                assert_eq!(message, "watch fell behind");
                break;
            }
            other => {
                panic!("expected the watch to fall behind, got {other:?} after {delivered} events")
            }
        }
    }
    assert!(watch.next().await.is_none(), "the stream ends after its error");
}
