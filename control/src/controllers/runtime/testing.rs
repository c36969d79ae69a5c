//! A real registry on a SQLite store in a temporary directory, for tests of controllers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::api::registry::{Registry, WriteOptions};
use crate::api::watch_cache::WatchCache;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// A registry with the `default` namespace; keep the directory alive as long as the registry.
pub async fn registry() -> (tempfile::TempDir, Arc<Registry>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("state.db")).expect("sqlite"));
    let cache = WatchCache::start(Arc::clone(&store)).await.expect("watch cache");
    let registry = Arc::new(Registry::new(store, cache));
    let ri = registry.resource("", "Namespace").expect("namespaces");
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
    registry.create(ri, None, ns, &WriteOptions::default()).await.expect("default namespace");
    (dir, registry)
}

/// Polls `check` every 20 ms for up to ten seconds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
