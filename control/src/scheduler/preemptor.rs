//! Carrying out a [`Preemption`](super::preempt::Preemption): the preemptor is nominated to the
//! node (`status.nominatedNodeName`), then each victim gets the `DisruptionTarget` condition
//! (reason `PreemptionByScheduler`), a `Preempted` event, and a graceful delete pinned to its
//! uid. The preemptor is scheduled again once the victims are gone (their removal frees the node
//! in the scheduler's cache, which wakes the unschedulable pods).

use std::sync::Arc;

use serde_json::json;

use super::pod_info::PodInfo;
use super::{split_key, SCHEDULER_NAME};
use crate::api::error::ApiError;
use crate::api::eviction::mark_disruption_target;
use crate::api::object;
use crate::api::registry::{DeleteOptions, Registry, WriteOptions};
use crate::controllers::events;

/// Nominates `preemptor` to `node` and evicts `victims`. Failures are logged: the preemptor
/// stays in the queue and is looked at again.
pub async fn preempt(registry: Arc<Registry>, preemptor: Arc<PodInfo>, node: String, victims: Vec<Arc<PodInfo>>) {
    let Ok(ri) = registry.resource("", "Pod") else { return };
    let opts = WriteOptions { field_manager: Some(SCHEDULER_NAME.into()), ..Default::default() };
    let (ns, name) = split_key(&preemptor.key);
    let nominated = registry
        .update_with(ri, Some(ns), name, Some("status"), &opts, |current| {
            if object::str_at(current, &["metadata", "uid"]) != Some(preemptor.uid.as_str()) {
                return Err(ApiError::BadRequest("the preemptor was replaced".into()));
            }
            let mut next = current.clone();
            next["status"]["nominatedNodeName"] = json!(node);
            Ok(next)
        })
        .await;
    if let Err(e) = nominated {
        tracing::info!(error = %e, "nominating the preemptor; not preempting");
        return;
    }
    let message = format!("{SCHEDULER_NAME}: preempting to accommodate a higher priority pod");
    for victim in victims {
        let (vns, vname) = split_key(&victim.key);
        let marked = registry
            .update_with(ri, Some(vns), vname, Some("status"), &opts, |current| {
                if object::str_at(current, &["metadata", "uid"]) != Some(victim.uid.as_str()) {
                    return Err(ApiError::BadRequest("the victim was replaced".into()));
                }
                let mut next = current.clone();
                mark_disruption_target(&mut next, "PreemptionByScheduler", &message);
                Ok(next)
            })
            .await;
        let victim_obj = match marked {
            Ok(written) => written.object,
            Err(e) => {
                tracing::debug!(victim = %victim.key, error = %e, "marking the victim");
                continue;
            }
        };
        let why = format!("Preempted by pod {} on node {node}", preemptor.uid);
        events::record(&registry, &victim_obj, ("v1", "Pod"), ("Normal", "Preempted", &why), SCHEDULER_NAME).await;
        let delete = DeleteOptions { precondition_uid: Some(victim.uid.clone()), ..Default::default() };
        match registry.delete(ri, Some(vns), vname, &delete).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => tracing::info!(victim = %victim.key, %node, "preempted"),
            Err(e) => tracing::warn!(victim = %victim.key, error = %e, "deleting the victim"),
        }
    }
}
