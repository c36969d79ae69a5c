//! The replica calculator for resource metrics, as kube-controller-manager's
//! `replica_calculator.go` computes it (pure): pods grouped into ready, unready, missing and
//! ignored; the usage ratio against the pods' requests (`Utilization`) or a per-pod value
//! (`AverageValue`); the tolerance; and the missing or unready pods assumed at the value that
//! dampens the change (100% of request or the target when scaling down, 0 when scaling up).
//!
//! Amounts are milli-units (millicores of CPU, milli-bytes of memory) as `i128`; sums saturate.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::api::object;
use crate::scheduler::quantity::parse_milli;

/// How long after a pod starts its CPU samples may still be those of its start-up
/// (`--horizontal-pod-autoscaler-cpu-initialization-period`, 5 minutes).
pub const CPU_INITIALIZATION_PERIOD: SignedDuration = SignedDuration::from_secs(300);
/// How long after a start an unready pod may still become ready for the first time
/// (`--horizontal-pod-autoscaler-initial-readiness-delay`, 30 s).
pub const INITIAL_READINESS_DELAY: SignedDuration = SignedDuration::from_secs(30);

/// One pod's usage of one resource, summed over its (or one named) container(s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Milli-units.
    pub value: i128,
    /// When it was measured.
    pub timestamp: Timestamp,
    /// Over how long (CPU).
    pub window: SignedDuration,
}

/// Pod name -> its sample.
pub type Samples = BTreeMap<String, Sample>;

/// What a resource metric aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Milli-units per pod.
    AverageValue(i128),
}

/// The calculator's answer for one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub replicas: i32,
    /// Current utilization, percent of request (for a `Utilization` target).
    pub utilization: Option<i32>,
    /// Current average per pod, milli-units.
    pub average: i128,
    pub timestamp: Option<Timestamp>,
}

/// Why no proposal could be made (kube's messages).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetricsForPods,
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest { resource: String, container: String, pod: String },
    #[error("no metrics returned matched known pods")]
    NoMatchingMetrics,
    #[error("invalid target: {0}")]
    InvalidTarget(String),
}

/// The inputs for one metric.
pub struct Input<'a> {
    /// The target's `spec.replicas` (kube's current replicas for resource metrics).
    pub current: i32,
    pub target: Target,
    /// `cpu`, `memory`, ...
    pub resource: &'a str,
    /// For a `ContainerResource` metric: only this container counts.
    pub container: Option<&'a str>,
    /// The pods the target's selector selects.
    pub pods: &'a [&'a Value],
    /// The pods' samples (from the resource metrics API).
    pub samples: &'a Samples,
    /// `--horizontal-pod-autoscaler-tolerance`.
    pub tolerance: f64,
    pub now: Timestamp,
}

/// Pods sorted as `groupPods` sorts them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

fn time_at(v: &Value, path: &str) -> Option<Timestamp> {
    v.pointer(path)?.as_str()?.parse().ok()
}

fn group_pods(pods: &[&Value], samples: &Samples, resource: &str, now: Timestamp) -> Groups {
    let mut g = Groups::default();
    for pod in pods {
        let name = object::name(pod).to_string();
        let phase = object::str_at(pod, &["status", "phase"]);
        if object::deletion_timestamp(pod).is_some() || phase == Some("Failed") {
            g.ignored.insert(name);
            continue;
        }
        if phase == Some("Pending") {
            g.unready.insert(name);
            continue;
        }
        let Some(sample) = samples.get(&name) else {
            g.missing.insert(name);
            continue;
        };
        if resource == "cpu" && cpu_unready(pod, sample, now) {
            g.unready.insert(name);
            continue;
        }
        g.ready = g.ready.saturating_add(1);
    }
    g
}

/// A CPU sample that may be one of start-up, or a pod that never became ready.
fn cpu_unready(pod: &Value, sample: &Sample, now: Timestamp) -> bool {
    let condition = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Ready")));
    let (Some(condition), Some(start)) = (condition, time_at(pod, "/status/startTime")) else { return true };
    let is_false = condition.get("status").and_then(Value::as_str) == Some("False");
    let transition = time_at(condition, "/lastTransitionTime");
    let after = |t: Timestamp, d: SignedDuration| t.checked_add(d).unwrap_or(Timestamp::MAX);
    if after(start, CPU_INITIALIZATION_PERIOD) > now {
        // Within the initialization period: unready, or no whole window since it turned ready.
        is_false || transition.is_some_and(|t| sample.timestamp < after(t, sample.window))
    } else {
        // Unready and never ready.
        is_false && transition.is_some_and(|t| after(start, INITIAL_READINESS_DELAY) > t)
    }
}

/// Requests of `resource` per pod (milli-units), over the regular and the restartable init
/// containers (or the one named container).
fn pod_requests(pods: &[&Value], container: Option<&str>, resource: &str) -> Result<BTreeMap<String, i128>, CalcError> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let empty = Vec::new();
        let list = |field: &str| pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array).unwrap_or(&empty);
        let regular = list("containers").iter();
        let sidecars =
            list("initContainers").iter().filter(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"));
        let mut sum: i128 = 0;
        for c in regular.chain(sidecars) {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            if container.is_some_and(|want| want != name) {
                continue;
            }
            let request = c.pointer("/resources/requests").and_then(|r| r.get(resource)).and_then(|q| match q {
                Value::String(s) => parse_milli(s),
                Value::Number(n) => parse_milli(&n.to_string()),
                _ => None,
            });
            let Some(request) = request else {
                return Err(CalcError::MissingRequest {
                    resource: resource.to_string(),
                    container: name.to_string(),
                    pod: object::name(pod).to_string(),
                });
            };
            sum = sum.saturating_add(request);
        }
        out.insert(object::name(pod).to_string(), sum);
    }
    Ok(out)
}

/// `(usage ratio, utilization %, average usage)` of the samples against the requests.
fn utilization_ratio(
    samples: &BTreeMap<String, i128>,
    requests: &BTreeMap<String, i128>,
    target: i32,
) -> Result<(f64, i32, i128), CalcError> {
    let (mut used, mut requested, mut entities) = (0i128, 0i128, 0i128);
    for (pod, value) in samples {
        let Some(request) = requests.get(pod) else { continue };
        used = used.saturating_add(*value);
        requested = requested.saturating_add(*request);
        entities = entities.saturating_add(1);
    }
    if requested == 0 {
        return Err(CalcError::NoMatchingMetrics);
    }
    let utilization = used.saturating_mul(100).checked_div(requested).unwrap_or(0);
    let utilization = i32::try_from(utilization).unwrap_or(if utilization < 0 { i32::MIN } else { i32::MAX });
    let average = used.checked_div(entities).unwrap_or(0);
    Ok((f64::from(utilization) / f64::from(target), utilization, average))
}

/// `(usage ratio, average usage)` of the samples against a per-pod target.
fn value_ratio(samples: &BTreeMap<String, i128>, target: i128) -> (f64, i128) {
    let total = samples.values().fold(0i128, |a, v| a.saturating_add(*v));
    let count = i128::try_from(samples.len()).unwrap_or(i128::MAX);
    let average = total.checked_div(count).unwrap_or(0);
    (average as f64 / target as f64, average)
}

/// `ceil(ratio * count)` as a replica count (saturating; NaN is 0).
fn ceil_replicas(ratio: f64, count: usize) -> i32 {
    let v = (ratio * count as f64).ceil();
    // `as` saturates at the bounds and maps NaN to 0.
    v as i32
}

/// The replica count one resource metric proposes (kube's `GetResourceReplicas` and
/// `GetRawResourceReplicas`).
pub fn replicas(input: &Input<'_>) -> Result<Proposal, CalcError> {
    match input.target {
        Target::Utilization(t) if t <= 0 => {
            return Err(CalcError::InvalidTarget(format!("averageUtilization must be positive, got {t}")))
        }
        Target::AverageValue(v) if v <= 0 => {
            return Err(CalcError::InvalidTarget(format!("averageValue must be positive, got {v}m")))
        }
        _ => {}
    }
    if input.pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let groups = group_pods(input.pods, input.samples, input.resource, input.now);
    let mut samples: BTreeMap<String, i128> = input
        .samples
        .iter()
        .filter(|(pod, _)| !groups.ignored.contains(*pod) && !groups.unready.contains(*pod))
        .filter(|(pod, _)| input.pods.iter().any(|p| object::name(p) == pod.as_str()))
        .map(|(pod, s)| (pod.clone(), s.value))
        .collect();
    if samples.is_empty() {
        return Err(CalcError::NoMetricsForPods);
    }
    let timestamp = input.samples.values().map(|s| s.timestamp).next();
    let requests = match input.target {
        Target::Utilization(_) => Some(pod_requests(input.pods, input.container, input.resource)?),
        Target::AverageValue(_) => None,
    };
    let ratio = |samples: &BTreeMap<String, i128>| -> Result<(f64, Option<i32>, i128), CalcError> {
        match (input.target, &requests) {
            (Target::Utilization(t), Some(requests)) => {
                let (r, u, a) = utilization_ratio(samples, requests, t)?;
                Ok((r, Some(u), a))
            }
            (Target::AverageValue(v), _) => {
                let (r, a) = value_ratio(samples, v);
                Ok((r, None, a))
            }
            (Target::Utilization(_), None) => Err(CalcError::NoMatchingMetrics),
        }
    };
    let (usage_ratio, utilization, average) = ratio(&samples)?;
    let proposal = |replicas: i32| Proposal { replicas, utilization, average, timestamp };
    let within = |r: f64| (1.0 - r).abs() <= input.tolerance;

    let scale_up_with_unready = !groups.unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if within(usage_ratio) {
            return Ok(proposal(input.current));
        }
        return Ok(proposal(ceil_replicas(usage_ratio, groups.ready)));
    }
    // A utilization exactly on target assumes nothing for missing pods (kube's `else if`); a
    // plain value assumes 0 then (kube's `else`).
    let assume = usage_ratio != 1.0 || matches!(input.target, Target::AverageValue(_));
    if assume && !groups.missing.is_empty() {
        for pod in &groups.missing {
            let assumed = if usage_ratio < 1.0 {
                // Scaling down: a pod without metrics is assumed to use what it aims at.
                match (input.target, &requests) {
                    (Target::Utilization(t), Some(requests)) => {
                        let request = requests.get(pod).copied().unwrap_or(0);
                        request.saturating_mul(i128::from(t.max(100))) / 100
                    }
                    (Target::AverageValue(v), _) => v,
                    (Target::Utilization(_), None) => 0,
                }
            } else {
                0
            };
            samples.insert(pod.clone(), assumed);
        }
    }
    if scale_up_with_unready {
        for pod in &groups.unready {
            samples.insert(pod.clone(), 0);
        }
    }
    let (new_ratio, _, _) = ratio(&samples)?;
    if within(new_ratio) || (usage_ratio < 1.0 && new_ratio > 1.0) || (usage_ratio > 1.0 && new_ratio < 1.0) {
        return Ok(proposal(input.current));
    }
    let new_replicas = ceil_replicas(new_ratio, samples.len());
    if (new_ratio < 1.0 && new_replicas > input.current) || (new_ratio > 1.0 && new_replicas < input.current) {
        return Ok(proposal(input.current));
    }
    Ok(proposal(new_replicas))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "calc_tests.rs"]
mod tests;
