//! One evaluation of one HorizontalPodAutoscaler, as kube-controller-manager's
//! `reconcileAutoscaler` makes it (pure): the bounds, each metric's proposal (the largest wins;
//! failed metrics block a scale down), the normalization, the conditions (`AbleToScale`,
//! `ScalingActive`, `ScalingLimited`) with kube's reasons and messages, the status and the
//! events. The controller ([`super`]) reads the inputs and writes the outcome.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricTarget, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::behavior::{Behavior, Bounds, History};
use super::calc::{self, Sample, Samples, Target};
use crate::scheduler::quantity::parse_milli;

/// The settings of `--horizontal-pod-autoscaler-*`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// How often each HPA is evaluated (`--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub sync_period: std::time::Duration,
    /// The ratio within which no scaling happens (`--horizontal-pod-autoscaler-tolerance`, 0.1).
    pub tolerance: f64,
    /// The scale-down stabilization window of HPAs without one of their own
    /// (`--horizontal-pod-autoscaler-downscale-stabilization`, 5 minutes).
    pub downscale_stabilization: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sync_period: std::time::Duration::from_secs(15),
            tolerance: 0.1,
            downscale_stabilization: std::time::Duration::from_secs(300),
        }
    }
}

/// The target's `autoscaling/v1 Scale`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scale {
    pub spec_replicas: i32,
    pub status_replicas: i32,
    /// `status.selector`, a label selector string.
    pub selector: String,
}

/// One container's usage, milli-units (millicores, milli-bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerUsage {
    pub name: String,
    pub cpu: i128,
    pub memory: i128,
}

/// One pod's usage from the resource metrics API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodUsage {
    pub containers: Vec<ContainerUsage>,
    pub timestamp: Timestamp,
    pub window: SignedDuration,
}

/// Pod name -> usage, for the pods the selector selects; `Err` when the API could not answer.
pub type Usage = Result<BTreeMap<String, PodUsage>, String>;

/// An event to record on the HPA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What to do after one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write (when the scale write, if any, succeeds: see [`rescaled`]).
    pub status: HorizontalPodAutoscalerStatus,
    /// `(new spec.replicas, reason)` to write through the scale subresource.
    pub rescale: Option<(i32, String)>,
    pub events: Vec<Event>,
}

/// Sets a condition as kube's `setCondition`: the transition time moves only with the status.
pub fn set_condition(
    status: &mut HorizontalPodAutoscalerStatus,
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let value = if ok { "True" } else { "False" };
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let at = match conditions.iter().position(|c| c.type_ == kind) {
        Some(at) => at,
        None => {
            conditions.push(HorizontalPodAutoscalerCondition { type_: kind.to_string(), ..Default::default() });
            conditions.len() - 1
        }
    };
    let Some(c) = conditions.get_mut(at) else { return };
    if c.status != value {
        c.last_transition_time = Some(Time(now));
    }
    c.status = value.to_string();
    c.reason = Some(reason.to_string());
    c.message = Some(message.to_string());
}

/// A quantity of `milli` milli-units in canonical decimal form (`250m`, `2`, `12M`).
pub fn milli_quantity(milli: i128) -> Quantity {
    if milli % 1000 != 0 {
        return Quantity(format!("{milli}m"));
    }
    let mut n = milli / 1000;
    for suffix in ["", "k", "M", "G", "T", "P"] {
        if n == 0 || n % 1000 != 0 {
            return Quantity(format!("{n}{suffix}"));
        }
        n /= 1000;
    }
    Quantity(format!("{n}E"))
}

/// The status kube keeps after a failure to read the target's scale.
pub fn failed_get_scale(
    hpa: &HorizontalPodAutoscaler,
    error: &str,
    now: Timestamp,
) -> (HorizontalPodAutoscalerStatus, Event) {
    let mut status = hpa.status.clone().unwrap_or_default();
    let message = format!("the HPA controller was unable to get the target's current scale: {error}");
    set_condition(&mut status, "AbleToScale", false, "FailedGetScale", &message, now);
    (status, Event { warning: true, reason: "FailedGetScale", message: error.to_string() })
}

/// Completes a decision once the scale write is done: on success the `SucceededRescale`
/// condition, `lastScaleTime` and the `SuccessfulRescale` event; on failure `FailedUpdateScale`.
pub fn rescaled(decision: &mut Decision, written: Result<(), String>, now: Timestamp) {
    let Some((desired, reason)) = decision.rescale.clone() else { return };
    match written {
        Ok(()) => {
            let message = format!("the HPA controller was able to update the target scale to {desired}");
            set_condition(&mut decision.status, "AbleToScale", true, "SucceededRescale", &message, now);
            decision.status.desired_replicas = desired;
            decision.status.last_scale_time = Some(Time(now));
            decision.events.push(Event {
                warning: false,
                reason: "SuccessfulRescale",
                message: format!("New size: {desired}; reason: {reason}"),
            });
        }
        Err(e) => {
            let message = format!("the HPA controller was unable to update the target scale: {e}");
            set_condition(&mut decision.status, "AbleToScale", false, "FailedUpdateScale", &message, now);
            decision.events.push(Event {
                warning: true,
                reason: "FailedRescale",
                message: format!("New size: {desired}; reason: {reason}; error: {e}"),
            });
        }
    }
}

/// Everything one evaluation reads.
pub struct Inputs<'a> {
    pub hpa: &'a HorizontalPodAutoscaler,
    pub scale: &'a Scale,
    /// The pods `scale.selector` selects.
    pub pods: &'a [&'a Value],
    pub usage: &'a Usage,
    pub settings: Settings,
    pub now: Timestamp,
}

/// The metrics of the spec, with kube's default (80% CPU) when there are none.
fn metric_specs(hpa: &HorizontalPodAutoscaler) -> Vec<MetricSpec> {
    let given = hpa.spec.as_ref().and_then(|s| s.metrics.clone()).unwrap_or_default();
    if !given.is_empty() {
        return given;
    }
    vec![MetricSpec {
        type_: "Resource".into(),
        resource: Some(k8s_openapi::api::autoscaling::v2::ResourceMetricSource {
            name: "cpu".into(),
            target: MetricTarget { type_: "Utilization".into(), average_utilization: Some(80), ..Default::default() },
        }),
        ..Default::default()
    }]
}

/// A failed metric: the condition reason and the error.
struct Failed {
    reason: &'static str,
    error: String,
}

/// The samples of `resource` (one container's, or all summed) per pod; pods missing the
/// container or the resource are left out.
fn samples(usage: &BTreeMap<String, PodUsage>, resource: &str, container: Option<&str>) -> Samples {
    let mut out = Samples::new();
    for (pod, u) in usage {
        let pick = |c: &ContainerUsage| match resource {
            "cpu" => Some(c.cpu),
            "memory" => Some(c.memory),
            _ => None,
        };
        let value = match container {
            Some(name) => u.containers.iter().find(|c| c.name == name).and_then(pick),
            None => u.containers.iter().try_fold(0i128, |sum, c| Some(sum.saturating_add(pick(c)?))),
        };
        if let Some(value) = value {
            out.insert(pod.clone(), Sample { value, timestamp: u.timestamp, window: u.window });
        }
    }
    out
}

/// One resource metric's proposal: `(replicas, metric name, status)`.
fn resource_metric(input: &Inputs<'_>, current: i32, spec: &MetricSpec) -> Result<(i32, String, MetricStatus), Failed> {
    let (name, target, container, reason) = match (spec.type_.as_str(), &spec.resource, &spec.container_resource) {
        ("Resource", Some(r), _) => (r.name.as_str(), &r.target, None, "FailedGetResourceMetric"),
        ("ContainerResource", _, Some(r)) => {
            (r.name.as_str(), &r.target, Some(r.container.as_str()), "FailedGetContainerResourceMetric")
        }
        (other @ ("Pods" | "Object" | "External"), _, _) => {
            let reason = match other {
                "Pods" => "FailedGetPodsMetric",
                "Object" => "FailedGetObjectMetric",
                _ => "FailedGetExternalMetric",
            };
            let api = if other == "External" { "external.metrics.k8s.io" } else { "custom.metrics.k8s.io" };
            return Err(Failed { reason, error: format!("unable to get {other} metric: the {api} API is not served") });
        }
        (other, _, _) => {
            return Err(Failed {
                reason: "InvalidMetricSourceType",
                error: format!("unknown metric source type {other:?}"),
            })
        }
    };
    let kind = if container.is_some() { "container resource" } else { "resource" };
    let (target, what) = if let Some(q) = &target.average_value {
        let milli = parse_milli(&q.0).unwrap_or(0);
        (Target::AverageValue(milli), "usage")
    } else if let Some(u) = target.average_utilization {
        (Target::Utilization(u), "utilization")
    } else {
        return Err(Failed {
            reason,
            error: "invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into(),
        });
    };
    let fail = |e: String| Failed { reason, error: format!("failed to get {name} {what}: {e}") };
    let usage = input.usage.as_ref().map_err(|e| fail(format!("unable to get metrics for resource {name}: {e}")))?;
    let samples = samples(usage, name, container);
    if samples.is_empty() {
        return Err(fail(format!(
            "unable to get metrics for resource {name}: no metrics returned from resource metrics API"
        )));
    }
    let proposal = calc::replicas(&calc::Input {
        current,
        target,
        resource: name,
        container,
        pods: input.pods,
        samples: &samples,
        tolerance: input.settings.tolerance,
        now: input.now,
    })
    .map_err(|e| fail(e.to_string()))?;
    let current_value = MetricValueStatus {
        average_utilization: proposal.utilization,
        average_value: Some(milli_quantity(proposal.average)),
        value: None,
    };
    let metric = match target {
        Target::Utilization(_) => format!("{name} {kind} utilization (percentage of request)"),
        Target::AverageValue(_) => format!("{name} {kind}"),
    };
    let status = match container {
        None => MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus { name: name.to_string(), current: current_value }),
            ..Default::default()
        },
        Some(c) => MetricStatus {
            type_: "ContainerResource".into(),
            container_resource: Some(ContainerResourceMetricStatus {
                name: name.to_string(),
                container: c.to_string(),
                current: current_value,
            }),
            ..Default::default()
        },
    };
    Ok((proposal.replicas, metric, status))
}

/// Evaluates one HPA against its target's scale.
pub fn decide(input: &Inputs<'_>, history: &mut History) -> Decision {
    let hpa = input.hpa;
    let now = input.now;
    let spec = hpa.spec.clone().unwrap_or_default();
    let mut status = hpa.status.clone().unwrap_or_default();
    let mut events = Vec::new();
    set_condition(
        &mut status,
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
        now,
    );
    let current = input.scale.spec_replicas;
    history.start(current, now);
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let mut metric_statuses = Vec::new();
    let (desired, reason) = if current == 0 && min != 0 {
        let message = "scaling is disabled since the replica count of the target is zero";
        set_condition(&mut status, "ScalingActive", false, "ScalingDisabled", message, now);
        (0, None)
    } else if current > max {
        (max, Some("Current number of replicas above Spec.MaxReplicas".to_string()))
    } else if current < min {
        (min, Some("Current number of replicas below Spec.MinReplicas".to_string()))
    } else {
        match metrics_proposal(input, current, &mut status, &mut events) {
            Err(statuses) => {
                status.current_replicas = Some(current);
                status.current_metrics = Some(statuses);
                return Decision { status, rescale: None, events };
            }
            Ok((proposed, metric, statuses)) => {
                metric_statuses = statuses;
                let reason = match proposed.cmp(&current) {
                    std::cmp::Ordering::Greater => format!("{metric} above target"),
                    std::cmp::Ordering::Less => "All metrics below target".to_string(),
                    std::cmp::Ordering::Equal => String::new(),
                };
                let bounds = Bounds { current, min, max };
                let normalized = match &spec.behavior {
                    None => history.normalize(bounds, proposed, window(input.settings.downscale_stabilization), now),
                    Some(b) => {
                        let behavior = Behavior::of(b, window(input.settings.downscale_stabilization));
                        history.normalize_with(bounds, proposed, &behavior, now)
                    }
                };
                set_condition(&mut status, "AbleToScale", true, normalized.able.0, normalized.able.1, now);
                let (limited, (why, message)) = normalized.limited;
                set_condition(&mut status, "ScalingLimited", limited, why, message, now);
                (normalized.replicas, Some(reason))
            }
        }
    };
    let rescale = match reason {
        Some(reason) if desired != current => Some((desired, reason)),
        _ => None,
    };
    status.current_replicas = Some(current);
    status.desired_replicas = if rescale.is_some() { desired } else { current };
    status.current_metrics = (!metric_statuses.is_empty()).then_some(metric_statuses);
    Decision { status, rescale, events }
}

fn window(d: std::time::Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// kube's `computeReplicasForMetrics`: the largest proposal, or the statuses when every metric
/// failed or a failed one would let the count fall.
fn metrics_proposal(
    input: &Inputs<'_>,
    current: i32,
    status: &mut HorizontalPodAutoscalerStatus,
    events: &mut Vec<Event>,
) -> Result<(i32, String, Vec<MetricStatus>), Vec<MetricStatus>> {
    let now = input.now;
    if input.scale.selector.is_empty() {
        events.push(Event { warning: true, reason: "SelectorRequired", message: "selector is required".into() });
        let message = "the HPA target's scale is missing a selector";
        set_condition(status, "ScalingActive", false, "InvalidSelector", message, now);
        return Err(Vec::new());
    }
    let specs = metric_specs(input.hpa);
    let mut statuses = Vec::with_capacity(specs.len());
    let (mut best, mut best_metric) = (0i32, String::new());
    let mut first_failure: Option<Failed> = None;
    let mut failures = 0usize;
    for spec in &specs {
        match resource_metric(input, current, spec) {
            Ok((replicas, metric, s)) => {
                statuses.push(s);
                if best == 0 || replicas > best {
                    best = replicas;
                    best_metric = metric;
                }
            }
            Err(failed) => {
                statuses.push(MetricStatus::default());
                events.push(Event { warning: true, reason: failed.reason, message: failed.error.clone() });
                failures = failures.saturating_add(1);
                first_failure.get_or_insert(failed);
            }
        }
    }
    if let Some(first) = first_failure.filter(|_| failures >= specs.len() || best < current) {
        let message = format!("the HPA was unable to compute the replica count: {}", first.error);
        set_condition(status, "ScalingActive", false, first.reason, &message, now);
        events.push(Event {
            warning: true,
            reason: "FailedComputeMetricsReplicas",
            message: format!(
                "invalid metrics ({failures} invalid out of {}), first error is: {}",
                specs.len(),
                first.error
            ),
        });
        return Err(statuses);
    }
    let message = format!("the HPA was able to successfully calculate a replica count from {best_metric}");
    set_condition(status, "ScalingActive", true, "ValidMetricFound", &message, now);
    Ok((best, best_metric, statuses))
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
