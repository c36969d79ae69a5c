//! The ServiceAccount controller: every namespace has a ServiceAccount `default` (created with
//! the namespace, recreated when deleted), driven by the watch cache.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{ListQuery, Registry, WriteOptions};

const NAMESPACES: &str = "/registry/core/namespaces/";
const SERVICE_ACCOUNTS: &str = "/registry/core/serviceaccounts/";

pub async fn run(registry: Arc<Registry>) {
    let (_, mut rx) = registry.cache.subscribe_now();
    ensure_all(&registry).await;
    loop {
        match rx.recv().await {
            Ok(ev) => {
                if let Some(ns) = ev.key.strip_prefix(NAMESPACES) {
                    if !ev.deleted && object::deletion_timestamp(&ev.object).is_none() && !ns.contains('/') {
                        ensure(&registry, ns).await;
                    }
                } else if let Some(rest) = ev.key.strip_prefix(SERVICE_ACCOUNTS) {
                    if ev.deleted {
                        if let Some((ns, "default")) = rest.split_once('/') {
                            ensure(&registry, ns).await;
                        }
                    }
                }
            }
            Err(RecvError::Lagged(_)) => ensure_all(&registry).await,
            Err(RecvError::Closed) => return,
        }
    }
}

async fn ensure_all(registry: &Registry) {
    let Ok(ri) = registry.resource("", "Namespace") else { return };
    match registry.list(ri, &ListQuery::default()).await {
        Ok(listed) => {
            for ns in listed.items.iter().filter(|n| object::deletion_timestamp(n).is_none()) {
                ensure(registry, object::name(ns)).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "service account controller: listing namespaces"),
    }
}

async fn ensure(registry: &Registry, namespace: &str) {
    let Ok(ri) = registry.resource("", "ServiceAccount") else { return };
    if registry.get(ri, Some(namespace), "default").await.is_ok() {
        return;
    }
    let sa =
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}});
    match registry.create(ri, Some(namespace), sa, &WriteOptions::default()).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) | Err(ApiError::NotFound { .. }) | Err(ApiError::Forbidden(_)) => {}
        Err(e) => tracing::warn!(error = %e, namespace, "creating the default service account"),
    }
}
