//! The APIService controller, kube-aggregator's autoregistration and availability controllers
//! in one loop:
//!
//! - every group-version the server serves itself (built-in, custom, `metrics.k8s.io`) has a
//!   local APIService labelled `kube-aggregator.kubernetes.io/automanaged`, made when it is
//!   first served and deleted when it no longer is (a CRD deleted);
//! - every remote APIService (`spec.service`) is checked every [`CHECK_EVERY`] by fetching its
//!   `/apis/<group>/<version>` over HTTPS: the answer is its discovery document, the outcome its
//!   `Available` condition; the set of remotes is handed to the [`Aggregator`] the proxy and
//!   discovery read.
//!
//! Part of the API server (not leader-elected): every server proxies for itself.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::runtime::Error;
use crate::api::aggregation::{self, proxy, Remote, AUTOMANAGED_LABEL};
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{DeleteOptions, ListQuery, Registry, WriteOptions};
use crate::api::resources::ResourceInfo;

/// How often remote APIServices are checked (and the local ones compared with what is served).
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

fn apiservices(registry: &Registry) -> Result<&ResourceInfo, ApiError> {
    registry.resource(aggregation::GROUP, "APIService")
}

/// Runs until the task is stopped.
pub async fn run(registry: Arc<Registry>) -> Result<(), Error> {
    let mut synced: Vec<(String, String)> = Vec::new();
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let local = local_group_versions(&registry);
        if local != synced {
            match sync_local(&registry, &local).await {
                Ok(()) => synced = local,
                Err(e) => tracing::warn!(error = %e, "local APIServices not synced"),
            }
        }
        if let Err(e) = check_remotes(&registry).await {
            tracing::warn!(error = %e, "remote APIServices not checked");
        }
    }
}

/// The group-versions served here, in discovery order.
fn local_group_versions(registry: &Registry) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        registry.served().group_versions().into_iter().map(|(g, v)| (g.to_string(), v.to_string())).collect();
    out.push(("metrics.k8s.io".into(), "v1beta1".into()));
    out
}

fn apiservice_name(group: &str, version: &str) -> String {
    format!("{version}.{group}")
}

/// The `Available` condition of a local APIService.
fn local_status() -> Value {
    json!({"conditions": [{"type": "Available", "status": "True", "lastTransitionTime": object::now_rfc3339(),
        "reason": "Local", "message": "Local APIServices are always available"}]})
}

async fn sync_local(registry: &Registry, local: &[(String, String)]) -> Result<(), ApiError> {
    let ri = apiservices(registry)?;
    let existing = registry.list(ri, &ListQuery::default()).await?.items;
    let names: Vec<&str> = existing.iter().map(object::name).collect();
    let mut group_rank: Vec<&str> = Vec::new();
    for (index, (group, version)) in local.iter().enumerate() {
        if !group_rank.contains(&group.as_str()) {
            group_rank.push(group);
        }
        let name = apiservice_name(group, version);
        if names.contains(&name.as_str()) {
            continue;
        }
        let rank = i64::try_from(group_rank.len()).unwrap_or(100);
        // Earlier groups first, as kube-apiserver's table orders them; versions by preference.
        let earlier_versions = local[..index].iter().filter(|(g, _)| g == group).count();
        let version_priority = 15_i64.saturating_sub(i64::try_from(earlier_versions).unwrap_or(0)).max(1);
        let obj = json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": name, "labels": {AUTOMANAGED_LABEL: "onstart"}},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": (18100 - 100 * rank).max(1000),
                     "versionPriority": version_priority},
        });
        match registry.create(ri, None, obj, &WriteOptions::default()).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    // Local ones without their Available condition (just made, or made by a user).
    for obj in registry.list(ri, &ListQuery::default()).await?.items {
        let is_local = obj.pointer("/spec/service").is_none_or(Value::is_null);
        let available = condition(&obj).is_some_and(|c| c.get("reason").and_then(Value::as_str) == Some("Local"));
        if is_local && !available {
            write_status(registry, object::name(&obj), |_| local_status()).await?;
        }
    }
    // Automanaged ones for group-versions gone (a deleted CRD's).
    for obj in existing {
        let automanaged = obj.pointer(&format!("/metadata/labels/{}", AUTOMANAGED_LABEL.replace('/', "~1"))).is_some();
        let group = obj.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
        let version = obj.pointer("/spec/version").and_then(Value::as_str).unwrap_or("");
        if automanaged && !local.iter().any(|(g, v)| g == group && v == version) {
            match registry.delete(ri, None, object::name(&obj), &DeleteOptions::default()).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn condition(obj: &Value) -> Option<&Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Available"))
}

/// Fetches a remote's discovery document: its `APIResourceList`, or why it is not available
/// (`(reason, message)` as kube-aggregator words them).
async fn check(registry: &Registry, remote: &Remote) -> Result<Value, (&'static str, String)> {
    let path = format!("/apis/{}/{}", remote.group, remote.version);
    let (client, url) = proxy::connect(&registry.store, &remote.backend, &path).await.map_err(|e| {
        let text = e.to_string();
        let reason = if text.contains("not found") { "ServiceNotFound" } else { "MissingEndpoints" };
        (reason, text)
    })?;
    let failed = |e: String| ("FailedDiscoveryCheck", format!("failing or missing response from {url}: {e}"));
    let answer = client
        .get(&url)
        .header(http::header::ACCEPT, "application/json")
        .timeout(CHECK_TIMEOUT)
        .send()
        .await
        .map_err(|e| failed(crate::api::error::chain(&e)))?;
    let status = answer.status();
    if !status.is_success() {
        return Err(failed(format!("bad status from {url}: {}", status.as_u16())));
    }
    let bytes = answer.bytes().await.map_err(|e| failed(crate::api::error::chain(&e)))?;
    serde_json::from_slice::<Value>(&bytes).map_err(|e| failed(format!("not a discovery document: {e}")))
}

async fn check_remotes(registry: &Registry) -> Result<(), ApiError> {
    let ri = apiservices(registry)?;
    let listed = registry.list(ri, &ListQuery::default()).await?.items;
    let previous = registry.aggregator.remotes();
    let mut remotes = Vec::new();
    for obj in &listed {
        let Some(mut remote) = aggregation::parse_remote(obj) else { continue };
        let (status, reason, message) = match check(registry, &remote).await {
            Ok(list) => {
                remote.available = Ok(());
                remote.resources = Some(list);
                ("True", "Passed", "all checks passed".to_string())
            }
            Err((reason, message)) => {
                remote.available = Err(message.clone());
                // What it served last stays in discovery, marked stale.
                remote.resources = previous.iter().find(|r| r.name == remote.name).and_then(|r| r.resources.clone());
                ("False", reason, message)
            }
        };
        let current = condition(obj);
        let unchanged = current.is_some_and(|c| {
            c.get("status").and_then(Value::as_str) == Some(status)
                && c.get("reason").and_then(Value::as_str) == Some(reason)
                && c.get("message").and_then(Value::as_str) == Some(message.as_str())
        });
        if !unchanged {
            let since = current
                .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(object::now_rfc3339()));
            let condition = json!({"type": "Available", "status": status, "lastTransitionTime": since,
                "reason": reason, "message": message});
            match write_status(registry, object::name(obj), |_| json!({"conditions": [condition.clone()]})).await {
                Ok(()) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => tracing::warn!(apiservice = object::name(obj), error = %e, "status not written"),
            }
        }
        remotes.push(remote);
    }
    registry.aggregator.set(remotes);
    Ok(())
}

async fn write_status(registry: &Registry, name: &str, status: impl Fn(&Value) -> Value) -> Result<(), ApiError> {
    let ri = apiservices(registry)?;
    registry
        .update_with(ri, None, name, Some("status"), &WriteOptions::default(), |current| {
            let mut next = current.clone();
            next["status"] = status(current);
            Ok(next)
        })
        .await
        .map(|_| ())
}
