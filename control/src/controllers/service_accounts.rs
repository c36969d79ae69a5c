//! The ServiceAccount controller: every namespace has a ServiceAccount `default` and the ConfigMap
//! `kube-root-ca.crt` with the cluster CA (Kubernetes' root CA publisher), both created with the
//! namespace and put back when deleted or changed, driven by the watch cache.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{ListQuery, Registry, WriteOptions};

const NAMESPACES: &str = "/registry/core/namespaces/";
const SERVICE_ACCOUNTS: &str = "/registry/core/serviceaccounts/";
const CONFIG_MAPS: &str = "/registry/core/configmaps/";
use crate::api::service_account_admission::ROOT_CA_CONFIG_MAP;

/// Runs the controller; `root_ca` is the cluster CA certificate (PEM) pods are given (none: no
/// `kube-root-ca.crt` is published).
pub async fn run(registry: Arc<Registry>, root_ca: Option<Arc<str>>) {
    let (_, mut rx) = registry.cache.subscribe_now();
    let root_ca = root_ca.as_deref();
    ensure_all(&registry, root_ca).await;
    loop {
        match rx.recv().await {
            Ok(ev) => {
                if let Some(ns) = ev.key.strip_prefix(NAMESPACES) {
                    if !ev.deleted && object::deletion_timestamp(&ev.object()).is_none() && !ns.contains('/') {
                        ensure(&registry, ns, root_ca).await;
                    }
                } else if let Some(rest) = ev.key.strip_prefix(SERVICE_ACCOUNTS) {
                    if ev.deleted {
                        if let Some((ns, "default")) = rest.split_once('/') {
                            ensure_default_account(&registry, ns).await;
                        }
                    }
                } else if let (Some(rest), Some(ca)) = (ev.key.strip_prefix(CONFIG_MAPS), root_ca) {
                    if let Some((ns, ROOT_CA_CONFIG_MAP)) = rest.split_once('/') {
                        let object = ev.object();
                        let current = object.pointer("/data/ca.crt").and_then(serde_json::Value::as_str);
                        if ev.deleted || current != Some(ca) {
                            ensure_root_ca(&registry, ns, ca).await;
                        }
                    }
                }
            }
            Err(RecvError::Lagged(_)) => ensure_all(&registry, root_ca).await,
            Err(RecvError::Closed) => return,
        }
    }
}

async fn ensure_all(registry: &Registry, root_ca: Option<&str>) {
    let Ok(ri) = registry.resource("", "Namespace") else { return };
    match registry.list(ri, &ListQuery::default()).await {
        Ok(listed) => {
            for ns in listed.items.iter().filter(|n| object::deletion_timestamp(n).is_none()) {
                ensure(registry, object::name(ns), root_ca).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "service account controller: listing namespaces"),
    }
}

async fn ensure(registry: &Registry, namespace: &str, root_ca: Option<&str>) {
    ensure_default_account(registry, namespace).await;
    if let Some(ca) = root_ca {
        ensure_root_ca(registry, namespace, ca).await;
    }
}

/// Creates `kube-root-ca.crt` in `namespace`, or puts the CA back into it.
async fn ensure_root_ca(registry: &Registry, namespace: &str, ca: &str) {
    let Ok(ri) = registry.resource("", "ConfigMap") else { return };
    let existing = registry.get(ri, Some(namespace), ROOT_CA_CONFIG_MAP).await.ok();
    if existing.as_ref().and_then(|cm| cm.pointer("/data/ca.crt")).and_then(serde_json::Value::as_str) == Some(ca) {
        return;
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ROOT_CA_CONFIG_MAP, "namespace": namespace,
            "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
        "data": {"ca.crt": ca}});
    let opts = WriteOptions::default();
    let written = match existing {
        Some(_) => registry
            .update_with(ri, Some(namespace), ROOT_CA_CONFIG_MAP, None, &opts, |current| {
                let mut next = current.clone();
                next["data"] = json!({"ca.crt": ca});
                Ok(next)
            })
            .await
            .map(|_| ()),
        None => registry.create(ri, Some(namespace), cm, &opts).await.map(|_| ()),
    };
    match written {
        Ok(()) | Err(ApiError::AlreadyExists { .. } | ApiError::Conflict { .. }) => {}
        Err(ApiError::NotFound { .. } | ApiError::Forbidden(_)) => {}
        Err(e) => tracing::warn!(error = %e, namespace, "publishing kube-root-ca.crt"),
    }
}

async fn ensure_default_account(registry: &Registry, namespace: &str) {
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
