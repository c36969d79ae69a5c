//! A [`Store`] decorator that times every operation into a Prometheus histogram.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::{KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchStream};
use crate::api::metrics::StoreOpLabel;

/// Wraps a backend; `latency` is labelled by operation.
pub struct Instrumented {
    inner: Arc<dyn Store>,
    latency: Family<StoreOpLabel, Histogram, fn() -> Histogram>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Store>, latency: Family<StoreOpLabel, Histogram, fn() -> Histogram>) -> Self {
        Self { inner, latency }
    }

    fn observe(&self, operation: &'static str, started: Instant) {
        self.latency
            .get_or_create(&StoreOpLabel { operation: operation.into() })
            .observe(started.elapsed().as_secs_f64());
    }
}

macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.observe($op, started);
        result
    }};
}

#[async_trait::async_trait]
impl Store for Instrumented {
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        timed!(self, "create", self.inner.create(key, value))
    }
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StoreError> {
        timed!(self, "update", self.inner.update(key, value, expected))
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        timed!(self, "delete", self.inner.delete(key, expected))
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        timed!(self, "get", self.inner.get(key))
    }
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult, StoreError> {
        timed!(self, "list", self.inner.list(prefix, opts))
    }
    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        timed!(self, "count", self.inner.count(prefix))
    }
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }
    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.inner.compacted_revision().await
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, after).await
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        timed!(self, "compact", self.inner.compact(revision))
    }
}
