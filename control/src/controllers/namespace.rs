//! The namespace controller: empties a namespace marked for deletion, then removes it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::api::error::{ApiError, ApiResult};
use crate::api::object;
use crate::api::registry::{DeleteOptions, ListQuery, Registry};

const RESYNC: Duration = Duration::from_secs(1);

pub async fn run(registry: Arc<Registry>) {
    loop {
        if let Err(e) = sync_all(&registry).await {
            tracing::warn!(error = %e, "namespace controller");
        }
        tokio::time::sleep(RESYNC).await;
    }
}

async fn sync_all(registry: &Registry) -> ApiResult<()> {
    let ri = registry.resource("", "Namespace")?;
    let namespaces = registry.list(ri, &ListQuery::default()).await?;
    for ns in namespaces.items.iter().filter(|ns| object::deletion_timestamp(ns).is_some()) {
        let name = object::name(ns).to_string();
        if empty(registry, &name).await? {
            finish(registry, ns).await?;
            tracing::info!(namespace = %name, "namespace deleted");
        }
    }
    Ok(())
}

/// Deletes everything in the namespace; true once nothing is left.
async fn empty(registry: &Registry, namespace: &str) -> ApiResult<bool> {
    let mut left = 0usize;
    for ri in registry.resources.iter().filter(|r| r.namespaced) {
        let q = ListQuery { namespace: Some(namespace.to_string()), ..Default::default() };
        let items = registry.list(ri, &q).await?.items;
        left += items.len();
        for item in items {
            let name = object::name(&item).to_string();
            match registry.delete(ri, Some(namespace), &name, &DeleteOptions::default()).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => tracing::warn!(error = %e, resource = ri.plural, name, "deleting namespace content"),
            }
        }
    }
    Ok(left == 0)
}

async fn finish(registry: &Registry, ns: &Value) -> ApiResult<()> {
    let ri = registry.resource("", "Namespace")?;
    registry.remove_now(ri, None, object::name(ns)).await
}
