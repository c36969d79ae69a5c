//! The storage seam: an etcd-shaped key-value store with one global revision.
//!
//! Every object lives under `/registry/<group>/<resource>/<namespace>/<name>` as JSON. Each write
//! bumps the single store revision; an object's `resourceVersion` is the revision that last wrote
//! it (`mod_revision`). Two backends implement [`Store`]: SQLite (the embedded default) and etcd v3.
//! Nothing but the API server touches a `Store`.

#[cfg(test)]
mod conformance;
pub mod encrypted;
mod error;
pub mod etcd;
pub mod instrumented;
pub mod sqlite;

pub use error::StoreError;

use futures::stream::BoxStream;

/// A store revision; strictly increasing, starts at 1 for the first write.
pub type Revision = i64;

/// One key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision that created this key (stays the same across updates).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
}

/// What a write did to a key, in revision order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a put: the new value. For a delete: the last value, with `mod_revision` set to the
    /// revision of the delete.
    pub kv: KeyValue,
    /// The value before this event, when there was one.
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A page of a prefix list.
#[derive(Clone, Debug, Default)]
pub struct ListResult {
    /// Keys in ascending byte order.
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// True when more keys follow the last item (the caller asked for `limit`).
    pub more: bool,
}

/// Options of a prefix list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Only keys strictly greater than this one (for `continue` tokens).
    pub start_after: Option<String>,
    /// At most this many items; `None` or 0 means all.
    pub limit: Option<usize>,
    /// Read at this revision instead of the latest; older than the compacted revision gives
    /// [`StoreError::Compacted`], newer than the current one gives [`StoreError::FutureRevision`].
    pub revision: Option<Revision>,
}

/// A stream of events, strictly in revision order, ended by an error (compaction, backend gone).
pub type WatchStream = BoxStream<'static, Result<Event, StoreError>>;

/// The etcd data model, implemented by every backend.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes `value` under `key` if the key does not exist. `AlreadyExists` otherwise.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError>;

    /// Replaces `key`'s value if its `mod_revision` is still `expected`. `Conflict` (with the
    /// current value) if it moved, `NotFound` if the key is gone.
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StoreError>;

    /// Deletes `key`, if its `mod_revision` is `expected` when given. Returns the deleted value
    /// with `mod_revision` set to the revision of the delete.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError>;

    /// The latest value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Keys starting with `prefix`, in order, at one revision.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult, StoreError>;

    /// Number of live keys under `prefix`.
    async fn count(&self, prefix: &str) -> Result<u64, StoreError>;

    /// The newest revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// The oldest revision that can still be read or watched from.
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;

    /// Every change under `prefix` with a revision greater than `after`, then live changes.
    /// `Compacted` (as the first item or at once) when `after` is older than the compacted revision.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// Forgets history older than `revision`; reads and watches before it give `Compacted`.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
}
