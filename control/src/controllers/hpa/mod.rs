//! The HorizontalPodAutoscaler controller (kube-controller-manager's): every sync period
//! (`--horizontal-pod-autoscaler-sync-period`) and at once when an HPA changes, it reads the
//! target's scale subresource view and selector, the selected pods from the shared informer and
//! their usage from the resource metrics source ([`source`]), decides ([`decide`], pure, with
//! [`calc`] and [`behavior`]), writes `spec.replicas` of the target as the scale subresource
//! does, the HPA's `status`, and the events `SuccessfulRescale`, `FailedGetResourceMetric`, ...
//!
//! The stabilization and rate-limit history of each HPA is kept in memory, as kube keeps it;
//! a new leader starts it afresh. The controller's own status writes do not re-evaluate an HPA
//! before its period is over.

pub mod behavior;
pub mod calc;
pub mod decide;
pub mod source;
pub mod spec;
pub mod target;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::Value;

use super::podutil;
use super::runtime::{Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::Registry;
use crate::api::selector::LabelSelector;
use behavior::History;
use decide::{Decision, Event, Settings};
pub use source::{MetricsSource, ScrapedMetrics};

const NAME: &str = "controller-horizontal-pod-autoscaler";
/// The events' source, as kube's.
const COMPONENT: &str = "horizontal-pod-autoscaler";
/// How long an identical warning is not recorded again.
const WARNING_REPEAT: Duration = Duration::from_secs(300);
/// How soon an HPA whose status write met a newer version is evaluated again.
const CONFLICT_RETRY: Duration = Duration::from_millis(100);

/// How the controller runs: kube's flags and the metrics source (`None`: every resource
/// metric fails as metrics-server being absent does).
#[derive(Clone, Default)]
pub struct Config {
    pub settings: Settings,
    pub metrics: Option<Arc<dyn MetricsSource>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config").field("settings", &self.settings).field("metrics", &self.metrics.is_some()).finish()
    }
}

/// What the controller remembers of one HPA.
#[derive(Default)]
struct Memory {
    history: History,
    /// The resourceVersion after the last evaluation (ours when we wrote), and when.
    evaluated: Option<(String, Instant)>,
    /// Warnings recorded lately: `(reason, message)` -> when.
    warned: HashMap<(String, String), Instant>,
}

/// What a reconcile works with.
pub struct Ctx {
    registry: Arc<Registry>,
    hpas: Arc<Informer>,
    pods: Arc<Informer>,
    config: Config,
    memory: parking_lot::Mutex<HashMap<ObjectKey, Memory>>,
}

/// Starts the controller under the informers' supervisor.
pub fn start(informers: &Arc<Informers>, config: Config) {
    let ctx = Arc::new(Ctx {
        registry: Arc::clone(informers.registry()),
        hpas: informers.get("autoscaling", "HorizontalPodAutoscaler"),
        pods: informers.get("", "Pod"),
        config,
        memory: parking_lot::Mutex::default(),
    });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(NAME);
    supervisor.spawn(NAME, move || {
        Controller::new(NAME, Arc::clone(&ctx.hpas)).workers(2).run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let period = ctx.config.settings.sync_period;
    let Some(obj) = ctx.hpas.get(&key) else {
        ctx.memory.lock().remove(&key);
        return Ok(Action::Done);
    };
    let rv = object::resource_version(&obj).unwrap_or_default().to_string();
    // Our own status write (or an early timer) does not re-evaluate before the period is over.
    let since = ctx.memory.lock().get(&key).and_then(|m| m.evaluated.clone()).filter(|(seen, _)| *seen == rv);
    if let Some((_, at)) = since {
        if let Some(rest) = period.checked_sub(at.elapsed()).filter(|d| !d.is_zero()) {
            return Ok(Action::RequeueAfter(rest));
        }
    }
    let hpa: HorizontalPodAutoscaler = match serde_json::from_value(obj.as_ref().clone()) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(hpa = %key, error = %e, "undecodable HorizontalPodAutoscaler");
            return Ok(Action::Done);
        }
    };
    let now = jiff::Timestamp::now();
    let (decision, target) = match target::read(&ctx.registry, &hpa).await {
        Err(e) => {
            let (status, event) = decide::failed_get_scale(&hpa, &e.to_string(), now);
            (Decision { status, rescale: None, events: vec![event] }, None)
        }
        Ok(target) => {
            let ns = key.ns().unwrap_or_default();
            let selected =
                LabelSelector::parse(&target.scale.selector).map(|s| ctx.pods.select(ns, &s)).unwrap_or_default();
            let pods: Vec<&Value> = selected.iter().map(|p| p.as_ref()).collect();
            let usage = match &ctx.config.metrics {
                Some(source) => source.pod_usage(ns).await,
                None => Err("the resource metrics API is not served".to_string()),
            }
            .map(|mut all| {
                all.retain(|name, _| pods.iter().any(|p| object::name(p) == name.as_str()));
                all
            });
            let mut memory = ctx.memory.lock();
            let history = &mut memory.entry(key.clone()).or_default().history;
            let inputs = decide::Inputs {
                hpa: &hpa,
                scale: &target.scale,
                pods: &pods,
                usage: &usage,
                settings: ctx.config.settings,
                now,
            };
            (decide::decide(&inputs, history), Some(target))
        }
    };
    let decision = apply(&ctx, &key, &hpa, decision, target, now).await;
    // Events first, as kube records them when they happen, before the status update.
    record(&ctx, &key, &obj, &decision.events).await;
    let written = match write_status(&ctx.registry, &obj, &decision).await {
        // Computed from a version the cache had not caught up past: evaluate the newer one.
        Err(Error::Api(ApiError::Conflict { .. })) => return Ok(Action::RequeueAfter(CONFLICT_RETRY)),
        other => other?,
    };
    let seen = written.unwrap_or(rv);
    ctx.memory.lock().entry(key).or_default().evaluated = Some((seen, Instant::now()));
    Ok(Action::RequeueAfter(period))
}

/// Writes the rescale the decision asks for and completes the decision with its outcome.
async fn apply(
    ctx: &Ctx,
    key: &ObjectKey,
    hpa: &HorizontalPodAutoscaler,
    mut decision: Decision,
    target: Option<target::Target>,
    now: jiff::Timestamp,
) -> Decision {
    let (Some((desired, _)), Some(target)) = (decision.rescale.clone(), target) else { return decision };
    let written = target::set_replicas(&ctx.registry, &target, desired).await.map_err(|e| e.to_string());
    if written.is_ok() {
        tracing::info!(hpa = %key, from = target.scale.spec_replicas, to = desired, "rescaled");
        if let Some(b) = hpa.spec.as_ref().and_then(|s| s.behavior.as_ref()) {
            let window = jiff::SignedDuration::try_from(ctx.config.settings.downscale_stabilization)
                .unwrap_or(jiff::SignedDuration::MAX);
            let behavior = behavior::Behavior::of(b, window);
            if let Some(m) = ctx.memory.lock().get_mut(key) {
                m.history.scaled(&behavior, target.scale.spec_replicas, desired, now);
            }
        }
    }
    decide::rescaled(&mut decision, written, now);
    decision
}

/// Writes the status when it changed; returns the new resourceVersion. Without a rescale, only
/// over exactly the version it was computed from (a newer one, e.g. our own last write the cache
/// has not shown yet, is a conflict: a status computed from a stale cache must not drop
/// `lastScaleTime` or a condition); the status of a rescale just made is written over any
/// version (a spec change meanwhile does not undo the rescale).
async fn write_status(registry: &Registry, hpa: &Value, decision: &Decision) -> Result<Option<String>, Error> {
    let status = serde_json::to_value(&decision.status).map_err(|e| Error::Other(e.to_string()))?;
    if hpa.get("status") == Some(&status) {
        return Ok(None);
    }
    let kind = ("autoscaling", "HorizontalPodAutoscaler");
    let written = podutil::write_status(registry, kind, hpa, &status, decision.rescale.is_none()).await?;
    Ok(written.as_ref().and_then(object::resource_version).map(String::from))
}

/// Records the events, a warning identical to one recorded lately only once.
async fn record(ctx: &Ctx, key: &ObjectKey, hpa: &Value, events: &[Event]) {
    for event in events {
        if event.warning {
            let mut memory = ctx.memory.lock();
            let warned = &mut memory.entry(key.clone()).or_default().warned;
            warned.retain(|_, at| at.elapsed() < WARNING_REPEAT);
            let id = (event.reason.to_string(), event.message.clone());
            if warned.contains_key(&id) {
                continue;
            }
            warned.insert(id, Instant::now());
        }
        let kind = if event.warning { "Warning" } else { "Normal" };
        crate::controllers::events::record(
            &ctx.registry,
            hpa,
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
            (kind, event.reason, &event.message),
            COMPONENT,
        )
        .await;
    }
}

#[cfg(test)]
mod tests;
