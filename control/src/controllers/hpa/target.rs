//! The HPA's target through its scale subresource view, in process: `scaleTargetRef` resolved
//! to a served resource with a scale (built-in or a CRD's `subresources.scale`), its
//! `autoscaling/v1 Scale` (`spec.replicas`, `status.replicas`, `status.selector`), and
//! `spec.replicas` written as `PUT .../scale` writes it.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::{json, Value};

use super::decide::Scale;
use crate::api::error::ApiError;
use crate::api::registry::Registry;
use crate::api::resources::ResourceInfo;

/// Why the target's scale could not be read (the message kube's `FailedGetScale` carries).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid API version in scale target reference: {0}")]
    ApiVersion(String),
    #[error(
        "unable to determine resource for scale target reference: no matches for kind {kind:?} in group {group:?}"
    )]
    NoScale { group: String, kind: String },
    #[error("failed to query scale subresource for {reference}: {source}")]
    Read { reference: String, source: ApiError },
}

/// A resolved target and its scale now.
pub struct Target {
    pub ri: ResourceInfo,
    pub namespace: String,
    pub name: String,
    pub scale: Scale,
}

fn int(v: Option<&Value>) -> i32 {
    v.and_then(Value::as_i64).and_then(|n| i32::try_from(n).ok()).unwrap_or(0)
}

/// The Scale view of a workload (as the scale subresource shows it).
pub fn scale_of(ri: &ResourceInfo, obj: &Value) -> Scale {
    let view = match ri.custom.as_ref().and_then(|c| c.scale.as_ref()) {
        Some(paths) => crate::api::crd::to_scale(paths, obj),
        None => {
            let selector = obj
                .pointer("/spec/selector")
                .and_then(|s| crate::api::selector::from_label_selector(s).ok())
                .map(|s| s.to_string())
                .unwrap_or_default();
            json!({"spec": {"replicas": obj.pointer("/spec/replicas")},
                   "status": {"replicas": obj.pointer("/status/replicas"), "selector": selector}})
        }
    };
    Scale {
        spec_replicas: int(view.pointer("/spec/replicas")),
        status_replicas: int(view.pointer("/status/replicas")),
        selector: view.pointer("/status/selector").and_then(Value::as_str).unwrap_or_default().to_string(),
    }
}

/// Resolves and reads the target of `hpa`.
pub async fn read(registry: &Registry, hpa: &HorizontalPodAutoscaler) -> Result<Target, TargetError> {
    let spec = hpa.spec.clone().unwrap_or_default();
    let r = spec.scale_target_ref;
    let group = match r.api_version.as_deref().unwrap_or("").split_once('/') {
        Some((group, _)) if !group.is_empty() => group.to_string(),
        Some(_) => return Err(TargetError::ApiVersion(r.api_version.clone().unwrap_or_default())),
        None => String::new(),
    };
    let served = registry.served();
    let ri = served
        .by_kind(&group, &r.kind)
        .filter(|ri| ri.subresources.contains(&"scale") || ri.custom.as_ref().is_some_and(|c| c.scale.is_some()))
        .cloned()
        .ok_or_else(|| TargetError::NoScale { group: group.clone(), kind: r.kind.clone() })?;
    let namespace = hpa.metadata.namespace.clone().unwrap_or_default();
    let obj = registry
        .get(&ri, Some(&namespace), &r.name)
        .await
        .map_err(|source| TargetError::Read { reference: format!("{namespace}/{}/{}", r.kind, r.name), source })?;
    let scale = scale_of(&ri, &obj);
    Ok(Target { ri, namespace, name: r.name, scale })
}

/// Sets the target's `spec.replicas` (or its CRD's scale path), as the scale subresource does.
pub async fn set_replicas(registry: &Registry, target: &Target, replicas: i32) -> Result<(), ApiError> {
    let ri = &target.ri;
    registry
        .update_with(ri, Some(&target.namespace), &target.name, None, &super::super::podutil::opts(), |cur| {
            let mut next = cur.clone();
            match ri.custom.as_ref().and_then(|c| c.scale.as_ref()) {
                Some(paths) => crate::api::crd::set_path(&mut next, &paths.spec_replicas, json!(replicas)),
                None => {
                    if let Some(spec) = next.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert("replicas".into(), json!(replicas));
                    }
                }
            }
            Ok(next)
        })
        .await
        .map(|_| ())
}
