//! From a metrics proposal to the count the HPA sets, as kube-controller-manager's
//! `normalizeDesiredReplicas[WithBehaviors]` does it (pure, over the HPA's remembered history):
//! stabilization over recent recommendations, then the bounds (`minReplicas`/`maxReplicas`)
//! and the scaling policies' rate limits, each with the condition reason kube reports.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// One direction's rules with kube's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub stabilization_seconds: i64,
    pub select: Select,
    /// `(Pods|Percent, value, periodSeconds)`.
    pub policies: Vec<Policy>,
}

/// `selectPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

/// One scaling policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub percent: bool,
    pub value: i32,
    pub period_seconds: i32,
}

/// Both directions' rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

fn policy(p: &HPAScalingPolicy) -> Policy {
    Policy { percent: p.type_ == "Percent", value: p.value, period_seconds: p.period_seconds }
}

fn rules(given: Option<&HPAScalingRules>, default: Rules) -> Rules {
    let Some(given) = given else { return default };
    Rules {
        stabilization_seconds: given
            .stabilization_window_seconds
            .map_or(default.stabilization_seconds, |s| i64::from(s.max(0))),
        select: match given.select_policy.as_deref() {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            Some(_) => Select::Max,
            None => default.select,
        },
        policies: match &given.policies {
            Some(list) if !list.is_empty() => list.iter().map(policy).collect(),
            _ => default.policies,
        },
    }
}

impl Behavior {
    /// The rules of `spec.behavior` with kube's defaults: up without stabilization, at most
    /// 100% or 4 pods per 15 s (the larger); down stabilized over `down_window` (300 s unless the
    /// flag says otherwise), up to 100% per 15 s.
    pub fn of(spec: &HorizontalPodAutoscalerBehavior, down_window: SignedDuration) -> Self {
        let up = Rules {
            stabilization_seconds: 0,
            select: Select::Max,
            policies: vec![
                Policy { percent: false, value: 4, period_seconds: 15 },
                Policy { percent: true, value: 100, period_seconds: 15 },
            ],
        };
        let down = Rules {
            stabilization_seconds: down_window.as_secs(),
            select: Select::Max,
            policies: vec![Policy { percent: true, value: 100, period_seconds: 15 }],
        };
        Self { up: rules(spec.scale_up.as_ref(), up), down: rules(spec.scale_down.as_ref(), down) }
    }

    fn longest_period(rules: &Rules) -> i64 {
        rules.policies.iter().map(|p| i64::from(p.period_seconds)).max().unwrap_or(0)
    }
}

/// A change the HPA made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ScaleEvent {
    change: i32,
    at: Timestamp,
}

/// What the controller remembers of one HPA between evaluations (kube keeps it in memory too).
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Unstabilized recommendations.
    recommendations: Vec<(Timestamp, i32)>,
    up: Vec<ScaleEvent>,
    down: Vec<ScaleEvent>,
}

/// A condition the normalization sets: `(reason, message)`.
pub type Reason = (&'static str, &'static str);

/// The normalized count and the two conditions' reasons: `AbleToScale` (stabilized or ready)
/// and `ScalingLimited` (`true` when the count was limited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Normalized {
    pub replicas: i32,
    pub able: Reason,
    pub limited: (bool, Reason),
}

const READY: Reason = ("ReadyForNewScale", "recommended size matches current size");
const UP_STABILIZED: Reason = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const DOWN_STABILIZED: Reason = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const WITHIN: Reason = ("DesiredWithinRange", "the desired count is within the acceptable range");
const TOO_MANY: Reason = ("TooManyReplicas", "the desired replica count is more than the maximum replica count");
const TOO_FEW: Reason = ("TooFewReplicas", "the desired replica count is less than the minimum replica count");
const UP_LIMIT: Reason = ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate");
const DOWN_LIMIT: Reason =
    ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate");

/// The bounds of one evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub current: i32,
    pub min: i32,
    pub max: i32,
}

fn since(at: Timestamp, now: Timestamp, seconds: i64) -> bool {
    at > now - SignedDuration::from_secs(seconds.max(0))
}

impl History {
    /// Starts the history with the current count (kube's `recordInitialRecommendation`).
    pub fn start(&mut self, current: i32, now: Timestamp) {
        if self.recommendations.is_empty() {
            self.recommendations.push((now, current));
        }
    }

    /// Keeps a recommendation, dropping those older than `keep_seconds`.
    fn remember(&mut self, desired: i32, now: Timestamp, keep_seconds: i64) {
        self.recommendations.retain(|(at, _)| since(*at, now, keep_seconds));
        self.recommendations.push((now, desired));
    }

    /// Without `behavior`: the highest recommendation of the down-scale window, then the bounds
    /// and the legacy rate limit (at most double, at least 4).
    pub fn normalize(&mut self, b: Bounds, desired: i32, down_window: SignedDuration, now: Timestamp) -> Normalized {
        let window = down_window.as_secs();
        let stabilized = self
            .recommendations
            .iter()
            .filter(|(at, _)| since(*at, now, window))
            .map(|(_, r)| *r)
            .fold(desired, i32::max);
        self.remember(desired, now, window);
        let able = if stabilized != desired { DOWN_STABILIZED } else { READY };
        let scale_up_limit = b.current.saturating_mul(2).max(4);
        let (max, over) = if b.max > scale_up_limit { (scale_up_limit, UP_LIMIT) } else { (b.max, TOO_MANY) };
        let (replicas, reason) = if stabilized < b.min {
            (b.min, TOO_FEW)
        } else if stabilized > max {
            (max, over)
        } else {
            (stabilized, WITHIN)
        };
        Normalized { replicas, able, limited: (replicas != stabilized, reason) }
    }

    /// With `behavior`: stabilization windows per direction, then the policies' rates.
    pub fn normalize_with(&mut self, b: Bounds, desired: i32, behavior: &Behavior, now: Timestamp) -> Normalized {
        let (up_window, down_window) = (behavior.up.stabilization_seconds, behavior.down.stabilization_seconds);
        let mut up = desired;
        let mut down = desired;
        for (at, r) in &self.recommendations {
            if since(*at, now, up_window) {
                up = up.min(*r);
            }
            if since(*at, now, down_window) {
                down = down.max(*r);
            }
        }
        let stabilized = b.current.max(up).min(down);
        self.remember(desired, now, up_window.max(down_window));
        let able = if stabilized == desired {
            READY
        } else if desired >= b.current {
            UP_STABILIZED
        } else {
            DOWN_STABILIZED
        };
        let (replicas, reason) = self.rate_limit(b, stabilized, behavior, now);
        Normalized { replicas, able, limited: (replicas != stabilized, reason) }
    }

    /// kube's `convertDesiredReplicasWithBehaviorRate`.
    fn rate_limit(&self, b: Bounds, desired: i32, behavior: &Behavior, now: Timestamp) -> (i32, Reason) {
        if desired > b.current {
            let limit = limit(b.current, &self.up, &self.down, &behavior.up, now, true).max(b.current);
            let (allowed, reason) = if b.max > limit { (limit, UP_LIMIT) } else { (b.max, TOO_MANY) };
            if desired > allowed {
                return (allowed, reason);
            }
        } else if desired < b.current {
            let limit = limit(b.current, &self.up, &self.down, &behavior.down, now, false).min(b.current);
            let (allowed, reason) = if b.min < limit { (limit, DOWN_LIMIT) } else { (b.min, TOO_FEW) };
            if desired < allowed {
                return (allowed, reason);
            }
        }
        (desired, WITHIN)
    }

    /// Records a change the HPA made (only with `behavior`, as kube), forgetting events older
    /// than the direction's longest policy period.
    pub fn scaled(&mut self, behavior: &Behavior, from: i32, to: i32, now: Timestamp) {
        let (events, rules, change) = if to > from {
            (&mut self.up, &behavior.up, to.saturating_sub(from))
        } else {
            (&mut self.down, &behavior.down, from.saturating_sub(to))
        };
        let longest = Behavior::longest_period(rules);
        events.retain(|e| since(e.at, now, longest));
        events.push(ScaleEvent { change, at: now });
    }
}

/// The sum of the changes within the last `period_seconds`.
fn changed_within(events: &[ScaleEvent], period_seconds: i32, now: Timestamp) -> i32 {
    events.iter().filter(|e| since(e.at, now, i64::from(period_seconds))).fold(0i32, |a, e| a.saturating_add(e.change))
}

/// The furthest count the policies allow from `current` in one direction (`up`), counted from
/// the count at the start of each policy's period.
fn limit(current: i32, ups: &[ScaleEvent], downs: &[ScaleEvent], rules: &Rules, now: Timestamp, up: bool) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    // Scaling up, Max picks the largest count; scaling down, Max (largest change) the smallest.
    let largest = (rules.select == Select::Max) == up;
    let mut result: Option<i32> = None;
    for p in &rules.policies {
        let start = current.saturating_sub(changed_within(ups, p.period_seconds, now)).saturating_add(changed_within(
            downs,
            p.period_seconds,
            now,
        ));
        let proposed = match (p.percent, up) {
            (false, true) => start.saturating_add(p.value),
            (false, false) => start.saturating_sub(p.value),
            (true, true) => (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32,
            (true, false) => (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32,
        };
        result = Some(match result {
            None => proposed,
            Some(r) if largest => r.max(proposed),
            Some(r) => r.min(proposed),
        });
    }
    result.unwrap_or(current)
}

#[cfg(test)]
#[path = "behavior_tests.rs"]
mod tests;
