//! Optimistic read-modify-write of one stored object, as kube-apiserver's `GuaranteedUpdate`:
//! read the object, compute the next one, write it at the revision read, and try again when
//! another writer came first. Update, delete, bind and the quota charge share these steps:
//!
//! ```text
//! for _ in 0..optimistic::MAX_ATTEMPTS {
//!     let (kv, current) = optimistic::read(store, ri, key, name).await?;
//!     ... compute next ...
//!     match optimistic::written(store.update(key, bytes, kv.mod_revision).await, ri, name)? {
//!         Some(written) => return Ok(...),
//!         None => continue, // another writer came first
//!     }
//! }
//! Err(optimistic::too_many_writers(ri, name))
//! ```

use serde_json::Value;

use super::error::{from_store, ApiError, ApiResult};
use super::registry::decode;
use super::resources::ResourceInfo;
use crate::store::{KeyValue, Store, StoreError};

/// How many times a write is tried before the caller is told to try again (409).
pub const MAX_ATTEMPTS: usize = 32;

/// The object at `key`, as stored and decoded; 404 when there is none.
pub async fn read(store: &dyn Store, ri: &ResourceInfo, key: &str, name: &str) -> ApiResult<(KeyValue, Value)> {
    let kv = store.get(key).await?.ok_or_else(|| ApiError::not_found(ri.group, ri.plural, name))?;
    let current = decode(ri, &kv)?;
    Ok((kv, current))
}

/// Sorts a conditional write's result: `Some` when written, `None` when another writer came
/// first (read again and retry), an error otherwise.
pub fn written(result: Result<KeyValue, StoreError>, ri: &ResourceInfo, name: &str) -> ApiResult<Option<KeyValue>> {
    match result {
        Ok(kv) => Ok(Some(kv)),
        Err(StoreError::Conflict { .. }) => Ok(None),
        Err(e) => Err(from_store(e, ri.group, ri.plural, name)),
    }
}

/// The answer to a writer that lost [`MAX_ATTEMPTS`] races in a row: 409, try again.
pub fn too_many_writers(ri: &ResourceInfo, name: &str) -> ApiError {
    ApiError::Conflict {
        group: ri.group.into(),
        resource: ri.plural.into(),
        name: name.into(),
        reason: "too many concurrent writers; try again".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_race_is_retried_and_other_failures_are_not() {
        let resources = crate::api::resources::Resources::default();
        let ri = resources.by_kind("", "ConfigMap").expect("configmaps are served");
        let kv = KeyValue { key: "k".into(), value: Vec::new(), create_revision: 1, mod_revision: 2 };
        assert!(matches!(written(Ok(kv.clone()), ri, "a"), Ok(Some(k)) if k.mod_revision == 2));
        let lost = StoreError::Conflict { key: "k".into(), expected: 1, current: Box::new(kv) };
        assert!(matches!(written(Err(lost), ri, "a"), Ok(None)));
        assert!(written(Err(StoreError::NotFound("k".into())), ri, "a").is_err());
        assert!(matches!(too_many_writers(ri, "a"), ApiError::Conflict { .. }));
    }
}
