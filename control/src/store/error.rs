use super::{KeyValue, Revision};

/// What a store operation can fail with. The API layer maps each variant to a `Status` once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// The key moved on; `current` is its value now.
    #[error("key {key} was modified: expected revision {expected}, found {}", current.mod_revision)]
    Conflict { key: String, expected: Revision, current: Box<KeyValue> },
    #[error("revision {requested} has been compacted (oldest kept: {compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("storage backend: {0}")]
    Backend(String),
}
