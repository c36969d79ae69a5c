use k8s_openapi::api::autoscaling::v2::{HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscalerBehavior};
use proptest::prelude::*;

use super::*;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn defaults() -> Behavior {
    Behavior::of(&HorizontalPodAutoscalerBehavior::default(), SignedDuration::from_secs(300))
}

fn bounds(current: i32, min: i32, max: i32) -> Bounds {
    Bounds { current, min, max }
}

#[test]
fn defaults_are_kubes() {
    let b = defaults();
    assert_eq!((b.up.stabilization_seconds, b.down.stabilization_seconds), (0, 300));
    assert_eq!(b.up.policies.len(), 2);
    assert_eq!(b.down.policies, vec![Policy { percent: true, value: 100, period_seconds: 15 }]);
    // Given rules replace only what they set.
    let spec = HorizontalPodAutoscalerBehavior {
        scale_down: Some(HPAScalingRules { stabilization_window_seconds: Some(5), ..Default::default() }),
        scale_up: Some(HPAScalingRules { select_policy: Some("Disabled".into()), ..Default::default() }),
    };
    let b = Behavior::of(&spec, SignedDuration::from_secs(300));
    assert_eq!((b.down.stabilization_seconds, b.up.select), (5, Select::Disabled));
    assert_eq!(b.down.policies.len(), 1);
}

#[test]
fn scale_down_waits_for_the_window() {
    let b = defaults();
    let mut h = History::default();
    h.start(3, t(0));
    let n = h.normalize_with(bounds(3, 1, 5), 1, &b, t(10));
    // The initial recommendation of 3 is within 300 s: stay at 3.
    assert_eq!((n.replicas, n.able.0), (3, "ScaleDownStabilized"));
    assert_eq!(n.limited, (false, ("DesiredWithinRange", "the desired count is within the acceptable range")));
    // After the window, the highest recommendation in it is 1.
    let n = h.normalize_with(bounds(3, 1, 5), 1, &b, t(320));
    assert_eq!((n.replicas, n.able.0), (1, "ReadyForNewScale"));
}

#[test]
fn scale_up_is_rate_limited_by_the_default_policies() {
    let b = defaults();
    let mut h = History::default();
    h.start(1, t(0));
    // 1 -> 10 wanted: max(1 + 4, 1 * 2) = 5 per 15 s.
    let n = h.normalize_with(bounds(1, 1, 20), 10, &b, t(1));
    assert_eq!(n.replicas, 5);
    assert_eq!(n.limited, (true, UP_LIMIT));
    h.scaled(&b, 1, 5, t(1));
    // Within the same period the start count is still 1: no further step.
    assert_eq!(h.normalize_with(bounds(5, 1, 20), 10, &b, t(5)).replicas, 5);
    // A period later: max(5 + 4, 10) = 10.
    assert_eq!(h.normalize_with(bounds(5, 1, 20), 10, &b, t(17)).replicas, 10);
    // The maximum wins over the policies.
    let mut h = History::default();
    let n = h.normalize_with(bounds(2, 1, 3), 10, &b, t(1));
    assert_eq!((n.replicas, n.limited), (3, (true, TOO_MANY)));
}

#[test]
fn select_min_and_disabled() {
    let spec = HorizontalPodAutoscalerBehavior {
        scale_down: Some(HPAScalingRules {
            stabilization_window_seconds: Some(0),
            select_policy: Some("Min".into()),
            policies: Some(vec![
                HPAScalingPolicy { type_: "Pods".into(), value: 1, period_seconds: 60 },
                HPAScalingPolicy { type_: "Percent".into(), value: 50, period_seconds: 60 },
            ]),
            ..Default::default()
        }),
        scale_up: Some(HPAScalingRules { select_policy: Some("Disabled".into()), ..Default::default() }),
    };
    let b = Behavior::of(&spec, SignedDuration::from_secs(300));
    let mut h = History::default();
    // Down from 10 to 1: Min picks the smaller change, 1 pod.
    let n = h.normalize_with(bounds(10, 1, 20), 1, &b, t(0));
    assert_eq!((n.replicas, n.limited), (9, (true, DOWN_LIMIT)));
    // Up is disabled.
    let n = h.normalize_with(bounds(10, 1, 20), 15, &b, t(1));
    assert_eq!(n.replicas, 10);
}

#[test]
fn without_behavior_the_legacy_rules_apply() {
    let mut h = History::default();
    h.start(2, t(0));
    let w = SignedDuration::from_secs(300);
    let n = h.normalize(bounds(2, 1, 100), 50, w, t(1));
    assert_eq!((n.replicas, n.limited), (4, (true, UP_LIMIT)));
    let n = h.normalize(bounds(2, 1, 3), 50, w, t(2));
    assert_eq!((n.replicas, n.limited.1 .0), (3, "TooManyReplicas"));
    let n = h.normalize(bounds(4, 2, 10), 1, w, t(3));
    // The recent recommendations of 50 hold the count up (then the legacy rate: at most double).
    assert_eq!((n.replicas, n.able.0), (8, "ScaleDownStabilized"));
    let mut h = History::default();
    let n = h.normalize(bounds(4, 2, 10), 1, w, t(3));
    assert_eq!((n.replicas, n.limited.1 .0), (2, "TooFewReplicas"));
}

proptest! {
    /// The count always stays within [min, max] when the current count is, and moves only in the
    /// direction of the recommendation.
    #[test]
    fn stays_in_bounds_and_direction(
        steps in prop::collection::vec((0i32..200, 0i64..40), 1..30),
        min in 1i32..5,
        span in 0i32..50,
        up_window in 0i32..120,
        down_window in 0i32..120,
        legacy in any::<bool>(),
    ) {
        let max = min + span;
        let spec = HorizontalPodAutoscalerBehavior {
            scale_up: Some(HPAScalingRules { stabilization_window_seconds: Some(up_window), ..Default::default() }),
            scale_down: Some(HPAScalingRules { stabilization_window_seconds: Some(down_window), ..Default::default() }),
        };
        let b = Behavior::of(&spec, SignedDuration::from_secs(300));
        let mut h = History::default();
        let mut current = min;
        let mut now = 0i64;
        h.start(current, t(now));
        for (desired, dt) in steps {
            now += dt;
            let n = if legacy {
                h.normalize(bounds(current, min, max), desired, SignedDuration::from_secs(i64::from(down_window)), t(now))
            } else {
                h.normalize_with(bounds(current, min, max), desired, &b, t(now))
            };
            prop_assert!(n.replicas >= min && n.replicas <= max, "{} not in [{min}, {max}]", n.replicas);
            // (Without behavior kube's stabilization may move against the recommendation.)
            if !legacy && n.replicas > current { prop_assert!(desired > current) }
            if !legacy && n.replicas < current { prop_assert!(desired < current) }
            if n.replicas != current {
                h.scaled(&b, current, n.replicas, t(now));
                current = n.replicas;
            }
        }
    }
}
