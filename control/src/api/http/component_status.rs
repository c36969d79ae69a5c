//! `componentstatuses` (core/v1 ComponentStatus, deprecated but still served by kube-apiserver
//! and read by clients): computed on each request, never stored. `scheduler` and
//! `controller-manager` report the supervised in-process tasks (the scheduler's and the
//! controllers'), `etcd-0` whether the store answers. Only get and list.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::negotiate::Negotiated;
use super::respond::{self, Shape};
use crate::api::error::{ApiError, ApiResult};
use crate::api::registry::Registry;
use crate::api::resources::ResourceInfo;
use crate::controllers::runtime::Supervisor;

/// The component names, in kube-apiserver's order.
const COMPONENTS: [&str; 3] = ["controller-manager", "scheduler", "etcd-0"];

fn status(name: &str, healthy: bool, message: &str) -> Value {
    let condition = if healthy {
        json!({"type": "Healthy", "status": "True", "message": "ok"})
    } else {
        json!({"type": "Healthy", "status": "False", "error": message})
    };
    json!({"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": name}, "conditions": [condition]})
}

/// Whether the supervised tasks whose names pass `belongs` all run, and the failures if not.
fn tasks_health(controllers: &Supervisor, belongs: impl Fn(&str) -> bool) -> (bool, String) {
    let failed: Vec<String> = controllers
        .failed_tasks()
        .into_iter()
        .filter(|(name, _)| belongs(name))
        .map(|(name, error)| format!("{name}: {error}"))
        .collect();
    (failed.is_empty(), failed.join("; "))
}

async fn component(registry: &Registry, controllers: &Supervisor, name: &str) -> Option<Value> {
    let is_scheduler = |task: &str| task.starts_with("scheduler");
    let (healthy, message) = match name {
        "scheduler" => tasks_health(controllers, is_scheduler),
        "controller-manager" => tasks_health(controllers, |t| !is_scheduler(t)),
        "etcd-0" => match registry.store.current_revision().await {
            Ok(_) => (true, String::new()),
            Err(e) => (false, e.to_string()),
        },
        _ => return None,
    };
    Some(status(name, healthy, &message))
}

/// Serves `GET /api/v1/componentstatuses[/NAME]` in the shape the client accepts (a Table for
/// kubectl); every other verb is 405.
pub async fn serve(
    registry: &Arc<Registry>,
    controllers: &Supervisor,
    request: (&Method, Negotiated, &ResourceInfo),
    name: Option<&str>,
    watch: bool,
) -> ApiResult<Response> {
    let (method, negotiated, ri) = request;
    if method != Method::GET || watch {
        return Err(ApiError::MethodNotAllowed);
    }
    let shape = negotiated.shape;
    let include = "Metadata";
    let body = match name {
        Some(name) => {
            let obj = component(registry, controllers, name)
                .await
                .ok_or_else(|| ApiError::not_found("", "componentstatuses", name))?;
            respond::single(ri, obj, shape, include)
        }
        None => {
            let mut items = Vec::new();
            for name in COMPONENTS {
                items.extend(component(registry, controllers, name).await);
            }
            match shape {
                Shape::Table => respond::table(ri, &items, json!({}), include),
                Shape::Metadata => {
                    let items: Vec<Value> = items.iter().map(respond::metadata_object).collect();
                    json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "items": items})
                }
                Shape::Object => {
                    json!({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": items})
                }
            }
        }
    };
    Ok(respond::send(negotiated, StatusCode::OK, &body, &[]))
}
