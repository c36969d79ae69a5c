//! The namespace controller: empties a namespace marked for deletion, then removes it. Driven by
//! the Namespace informer; while content remains (pods terminating gracefully, objects held by
//! finalizers) it looks at that namespace again after [`RECHECK`], as Kubernetes' does.

use std::sync::Arc;
use std::time::Duration;

use super::runtime::{Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::error::{ApiError, ApiResult};
use crate::api::object;
use crate::api::registry::{DeleteOptions, ListQuery, Registry};

/// How soon a namespace whose content is still going is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// What a reconcile works with.
pub struct Ctx {
    registry: Arc<Registry>,
    namespaces: Arc<Informer>,
}

/// Starts the controller under the informers' supervisor.
pub fn start(informers: &Arc<Informers>) {
    let namespaces = informers.get("", "Namespace");
    let ctx = Arc::new(Ctx { registry: Arc::clone(informers.registry()), namespaces: Arc::clone(&namespaces) });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe("controller-namespace");
    supervisor.spawn("controller-namespace", move || {
        Controller::new("controller-namespace", Arc::clone(&namespaces)).run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(ns) = ctx.namespaces.get(&key) else { return Ok(Action::Done) };
    if object::deletion_timestamp(&ns).is_none() {
        return Ok(Action::Done);
    }
    let name = object::name(&ns).to_string();
    if empty(&ctx.registry, &name).await? {
        let ri = ctx.registry.resource("", "Namespace")?;
        match ctx.registry.remove_now(ri, None, &name).await {
            Ok(()) | Err(ApiError::NotFound { .. }) => tracing::info!(namespace = %name, "namespace deleted"),
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::Done);
    }
    Ok(Action::RequeueAfter(RECHECK))
}

/// Deletes everything in the namespace; true once nothing is left.
async fn empty(registry: &Registry, namespace: &str) -> ApiResult<bool> {
    let mut left = 0usize;
    let served = registry.served();
    for ri in served.iter().filter(|r| r.namespaced && r.is_storage_version()) {
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
