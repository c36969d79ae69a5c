//! Events the controllers record about the objects they act on (`kubectl describe` shows them).

use serde_json::{json, Value};

use crate::api::object;
use crate::api::registry::{Registry, WriteOptions};

/// Records a core/v1 Event about `obj` (of `api_version`/`kind`) from `component`; a failure
/// to record is logged, never an error of the caller.
pub async fn record(
    registry: &Registry,
    obj: &Value,
    (api_version, kind): (&str, &str),
    (event_type, reason, message): (&str, &str, &str),
    component: &str,
) {
    let Ok(ri) = registry.resource("", "Event") else { return };
    let ns = object::namespace(obj).unwrap_or("default");
    let now = object::now_rfc3339();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", object::name(obj)), "namespace": ns},
        "involvedObject": {"apiVersion": api_version, "kind": kind, "name": object::name(obj), "namespace": ns,
                           "uid": object::str_at(obj, &["metadata", "uid"]), "resourceVersion": object::resource_version(obj)},
        "reason": reason, "message": message, "type": event_type, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
        "source": {"component": component}, "reportingComponent": component,
    });
    if let Err(e) = registry.create(ri, Some(ns), event, &WriteOptions::default()).await {
        tracing::debug!(error = %e, "recording event");
    }
}
