use proptest::prelude::*;
use serde_json::json;

use super::*;

fn now() -> Timestamp {
    "2026-12-06T12:00:00Z".parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

fn ago(secs: i64) -> String {
    (now() - SignedDuration::from_secs(secs)).to_string()
}

/// A running pod started ten minutes ago, Ready since then, requesting `cpu`.
fn pod(name: &str, cpu: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]},
        "status": {"phase": "Running", "startTime": ago(600),
                   "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ago(590)}]},
    })
}

fn sample(milli: i128) -> Sample {
    Sample { value: milli, timestamp: now() - SignedDuration::from_secs(1), window: SignedDuration::from_secs(1) }
}

fn samples(list: &[(&str, i128)]) -> Samples {
    list.iter().map(|(n, v)| (n.to_string(), sample(*v))).collect()
}

fn run(current: i32, target: Target, pods: &[Value], samples: &Samples) -> Result<Proposal, CalcError> {
    let refs: Vec<&Value> = pods.iter().collect();
    replicas(&Input {
        current,
        target,
        resource: "cpu",
        container: None,
        pods: &refs,
        samples,
        tolerance: 0.1,
        now: now(),
    })
}

#[test]
fn utilization_above_target_scales_up_in_proportion() {
    let pods = [pod("a", "100m"), pod("b", "100m")];
    let p = run(2, Target::Utilization(50), &pods, &samples(&[("a", 90), ("b", 90)])).unwrap();
    // 90% of request against 50%: ratio 1.8, ceil(1.8 * 2) = 4.
    assert_eq!((p.replicas, p.utilization, p.average), (4, Some(90), 90));
}

#[test]
fn within_tolerance_keeps_the_current_count() {
    let pods = [pod("a", "100m"), pod("b", "100m")];
    let p = run(2, Target::Utilization(50), &pods, &samples(&[("a", 54), ("b", 50)])).unwrap();
    assert_eq!((p.replicas, p.utilization), (2, Some(52)));
    let p = run(2, Target::Utilization(50), &pods, &samples(&[("a", 10), ("b", 10)])).unwrap();
    assert_eq!(p.replicas, 1);
}

#[test]
fn a_pod_without_metrics_dampens_a_scale_down() {
    let pods = [pod("a", "100m"), pod("b", "100m"), pod("c", "100m")];
    // a and b idle at 10%: alone they would give 1 pod; c, without a sample, counts as 100%:
    // (10 + 10 + 100) / 300 = 40% -> ratio 0.8 -> ceil(2.4) = 3, the current count.
    let p = run(3, Target::Utilization(50), &pods, &samples(&[("a", 10), ("b", 10)])).unwrap();
    assert_eq!(p.replicas, 3);
    // And a scale up with a missing pod counts it as 0%.
    let p = run(3, Target::Utilization(50), &pods, &samples(&[("a", 200), ("b", 200)])).unwrap();
    // (200 + 200 + 0) / 300 = 133% -> ratio 2.66 -> ceil(8) = 8.
    assert_eq!(p.replicas, 8);
}

#[test]
fn exactly_on_target_with_a_missing_pod_keeps_the_count() {
    let pods = [pod("a", "100m"), pod("b", "100m"), pod("c", "100m")];
    // 50% of request on a 50% target: kube assumes nothing for c, so no change.
    let p = run(3, Target::Utilization(50), &pods, &samples(&[("a", 50), ("b", 50)])).unwrap();
    assert_eq!((p.replicas, p.utilization), (3, Some(50)));
}

#[test]
fn unready_pods_count_as_idle_when_scaling_up() {
    let mut pending = pod("b", "100m");
    pending["status"]["phase"] = json!("Pending");
    let pods = [pod("a", "100m"), pending];
    // a at 100% alone says 2; b (pending) counts as 0%: (100 + 0) / 200 = 50% -> on target.
    let p = run(2, Target::Utilization(50), &pods, &samples(&[("a", 100)])).unwrap();
    assert_eq!(p.replicas, 2);
}

#[test]
fn a_cpu_sample_from_before_readiness_is_not_used() {
    let mut young = pod("b", "100m");
    young["status"]["startTime"] = json!(ago(20));
    // Ready half a second ago: the one-second sample still covers its start-up.
    young["status"]["conditions"][0]["lastTransitionTime"] =
        json!((now() - SignedDuration::from_millis(500)).to_string());
    let pods = [pod("a", "100m"), young];
    let p = run(2, Target::Utilization(50), &pods, &samples(&[("a", 100), ("b", 500)])).unwrap();
    // b is unready: a's 100% says 2 pods, b counts as 0 while scaling up: 50% -> keep 2.
    assert_eq!((p.replicas, p.utilization), (2, Some(100)));
}

#[test]
fn failed_and_deleted_pods_are_ignored() {
    let mut failed = pod("b", "100m");
    failed["status"]["phase"] = json!("Failed");
    let mut leaving = pod("c", "100m");
    leaving["metadata"]["deletionTimestamp"] = json!(ago(1));
    let pods = [pod("a", "100m"), failed, leaving];
    let p = run(3, Target::Utilization(50), &pods, &samples(&[("a", 100), ("b", 900), ("c", 900)])).unwrap();
    assert_eq!((p.replicas, p.utilization), (2, Some(100)));
}

#[test]
fn average_value_targets_usage_per_pod() {
    let pods = [pod("a", "100m"), pod("b", "100m"), pod("c", "100m")];
    let p = run(3, Target::AverageValue(100), &pods, &samples(&[("a", 200), ("b", 200), ("c", 200)])).unwrap();
    assert_eq!((p.replicas, p.utilization, p.average), (6, None, 200));
    // Missing pods count as the target when scaling down.
    let p = run(3, Target::AverageValue(100), &pods, &samples(&[("a", 10)])).unwrap();
    // (10 + 100 + 100) / 3 = 70 -> ratio 0.7 -> ceil(2.1) = 3.
    assert_eq!(p.replicas, 3);
}

#[test]
fn errors_say_what_kube_says() {
    let no_pods = run(1, Target::Utilization(50), &[], &Samples::new()).unwrap_err();
    assert_eq!(no_pods.to_string(), "no pods returned by selector while calculating replica count");
    let no_metrics = run(1, Target::Utilization(50), &[pod("a", "100m")], &Samples::new()).unwrap_err();
    assert_eq!(no_metrics.to_string(), "did not receive metrics for targeted pods (pods might be unready)");
    let mut bare = pod("a", "100m");
    bare["spec"]["containers"][0]["resources"] = json!({});
    let missing = run(1, Target::Utilization(50), &[bare], &samples(&[("a", 10)])).unwrap_err();
    assert_eq!(missing.to_string(), "missing request for cpu in container c of Pod a");
    assert!(run(1, Target::Utilization(0), &[pod("a", "1")], &samples(&[("a", 10)])).is_err());
}

#[test]
fn memory_requests_count_in_milli_bytes() {
    let pods = [pod("a", "100m")];
    let refs: Vec<&Value> = pods.iter().collect();
    let s = samples(&[("a", 64 * 1024 * 1024 * 1000 * 2)]);
    let input = Input {
        current: 1,
        target: Target::Utilization(100),
        resource: "memory",
        container: Some("c"),
        pods: &refs,
        samples: &s,
        tolerance: 0.1,
        now: now(),
    };
    assert_eq!(replicas(&input).map(|p| (p.replicas, p.utilization)), Ok((2, Some(200))));
}

#[test]
fn usage_under_one_percent_proposes_zero_as_kubernetes_truncates_it() {
    // 1m of 101m is 0 % in whole percent: the ratio is 0 and so is the proposal; the
    // controller's `minReplicas` bound (at least 1) applies after.
    let pods = [pod("p0", "101m")];
    let p = run(1, Target::Utilization(1), &pods, &samples(&[("p0", 1)])).map(|p| (p.replicas, p.utilization));
    assert_eq!(p, Ok((0, Some(0))));
}

proptest! {
    /// Whatever the samples (some pods without one), a change of the count (as many replicas as
    /// pods) goes the way the measured pods' own usage points, never the other way.
    #[test]
    fn a_change_follows_the_measured_usage(
        usage in prop::collection::vec(prop::option::of(0i128..5_000), 1..12),
        request in 1u32..2_000,
        target in 1i32..200,
    ) {
        let current = usage.len() as i32;
        let pods: Vec<Value> = (0..usage.len()).map(|i| pod(&format!("p{i}"), &format!("{request}m"))).collect();
        let measured: Vec<(String, i128)> =
            usage.iter().enumerate().filter_map(|(i, u)| Some((format!("p{i}"), (*u)?))).collect();
        let s: Samples = measured.iter().map(|(n, v)| (n.clone(), sample(*v))).collect();
        match run(current, Target::Utilization(target), &pods, &s) {
            Err(e) => prop_assert_eq!(e, CalcError::NoMetricsForPods),
            Ok(p) => {
                let used: i128 = measured.iter().map(|(_, v)| *v).sum();
                let requested = i128::from(request) * measured.len() as i128;
                let utilization = used * 100 / requested;
                prop_assert_eq!(p.utilization, Some(utilization as i32));
                let ratio = utilization as f64 / f64::from(target);
                if p.replicas > current { prop_assert!(ratio > 1.0) }
                if p.replicas < current { prop_assert!(ratio < 1.0) }
                if (1.0 - ratio).abs() <= 0.1 { prop_assert_eq!(p.replicas, current) }
                // Zero only when the whole-percent utilization is zero (as Kubernetes' replica
                // calculator, which truncates it; `minReplicas` bounds the result later).
                prop_assert!(p.replicas >= 1 || utilization == 0);
            }
        }
    }

    /// Huge client values saturate instead of overflowing.
    #[test]
    fn huge_values_do_not_panic(value in any::<i64>(), target in any::<i32>(), current in any::<i32>()) {
        let pods = [pod("a", "9223372036854775807"), pod("b", "1")];
        let s = samples(&[("a", i128::from(value)), ("b", i128::from(value))]);
        let _ = run(current, Target::Utilization(target), &pods, &s);
        let _ = run(current, Target::AverageValue(i128::from(target)), &pods, &s);
    }
}
