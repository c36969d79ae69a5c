use serde_json::json;

use super::*;

fn now() -> Timestamp {
    "2026-12-06T12:00:00Z".parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

fn hpa(extra_spec: Value) -> HorizontalPodAutoscaler {
    let mut spec = json!({
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "burn"},
        "minReplicas": 1, "maxReplicas": 3,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                     "metadata": {"name": "burn", "namespace": "default"}, "spec": spec});
    serde_json::from_value(hpa).unwrap_or_else(|e| panic!("{e}"))
}

fn pod(name: &str) -> Value {
    let ago = |s: i64| (now() - SignedDuration::from_secs(s)).to_string();
    json!({
        "metadata": {"name": name, "labels": {"app": "burn"}},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "50m"}}}]},
        "status": {"phase": "Running", "startTime": ago(600),
                   "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ago(590)}]},
    })
}

fn usage(cpu: &[(&str, i128)]) -> Usage {
    Ok(cpu
        .iter()
        .map(|(pod, milli)| {
            let u = PodUsage {
                containers: vec![ContainerUsage { name: "c".into(), cpu: *milli, memory: 1 << 30 }],
                timestamp: now() - SignedDuration::from_secs(1),
                window: SignedDuration::from_secs(1),
            };
            (pod.to_string(), u)
        })
        .collect())
}

fn scale(replicas: i32) -> Scale {
    Scale { spec_replicas: replicas, status_replicas: replicas, selector: "app=burn".into() }
}

fn condition<'a>(s: &'a HorizontalPodAutoscalerStatus, kind: &str) -> (&'a str, &'a str, &'a str) {
    let c = s.conditions.as_ref().and_then(|cs| cs.iter().find(|c| c.type_ == kind));
    c.map_or(("", "", ""), |c| {
        (c.status.as_str(), c.reason.as_deref().unwrap_or(""), c.message.as_deref().unwrap_or(""))
    })
}

fn run(hpa: &HorizontalPodAutoscaler, scale: &Scale, pods: &[Value], usage: &Usage, history: &mut History) -> Decision {
    let refs: Vec<&Value> = pods.iter().collect();
    decide(&Inputs { hpa, scale, pods: &refs, usage, settings: Settings::default(), now: now() }, history)
}

#[test]
fn load_above_target_scales_up_to_the_maximum() {
    let hpa = hpa(json!({}));
    let pods = [pod("a")];
    let mut d = run(&hpa, &scale(1), &pods, &usage(&[("a", 100)]), &mut History::default());
    // 200% of request against 50%: 4 pods wanted, 3 allowed.
    assert_eq!(d.rescale, Some((3, "cpu resource utilization (percentage of request) above target".to_string())));
    assert_eq!(condition(&d.status, "ScalingLimited").1, "TooManyReplicas");
    assert_eq!(
        condition(&d.status, "ScalingActive"),
        (
            "True",
            "ValidMetricFound",
            "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)"
        )
    );
    let current = &d.status.current_metrics.as_ref().and_then(|m| m.first().cloned()).unwrap_or_default();
    let current = current.resource.as_ref().map(|r| (r.current.average_utilization, r.current.average_value.clone()));
    assert_eq!(current, Some((Some(200), Some(Quantity("100m".into())))));
    rescaled(&mut d, Ok(()), now());
    assert_eq!((d.status.desired_replicas, d.status.last_scale_time.clone()), (3, Some(Time(now()))));
    assert_eq!(condition(&d.status, "AbleToScale").1, "SucceededRescale");
    let event = d.events.last().map(|e| (e.warning, e.reason, e.message.as_str()));
    assert_eq!(
        event,
        Some((
            false,
            "SuccessfulRescale",
            "New size: 3; reason: cpu resource utilization (percentage of request) above target"
        ))
    );
}

#[test]
fn scale_down_is_stabilized_unless_the_window_is_short() {
    let pods = [pod("a"), pod("b"), pod("c")];
    let idle = usage(&[("a", 1), ("b", 1), ("c", 1)]);
    let d = run(&hpa(json!({})), &scale(3), &pods, &idle, &mut History::default());
    assert_eq!(d.rescale, None);
    assert_eq!(condition(&d.status, "AbleToScale").1, "ScaleDownStabilized");
    assert_eq!(d.status.desired_replicas, 3);
    let quick = hpa(json!({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}));
    let d = run(&quick, &scale(3), &pods, &idle, &mut History::default());
    assert_eq!(d.rescale, Some((1, "All metrics below target".to_string())));
}

#[test]
fn missing_metrics_are_reported_as_kube_reports_them() {
    let hpa = hpa(json!({}));
    let d = run(&hpa, &scale(2), &[pod("a")], &usage(&[]), &mut History::default());
    assert_eq!(d.rescale, None);
    let error = "failed to get cpu utilization: unable to get metrics for resource cpu: no metrics returned from resource metrics API";
    assert_eq!(
        condition(&d.status, "ScalingActive"),
        (
            "False",
            "FailedGetResourceMetric",
            format!("the HPA was unable to compute the replica count: {error}").as_str()
        )
    );
    let reasons: Vec<&str> = d.events.iter().map(|e| e.reason).collect();
    assert_eq!(reasons, ["FailedGetResourceMetric", "FailedComputeMetricsReplicas"]);
    assert_eq!(d.events[0].message, error);
    assert_eq!(d.events[1].message, format!("invalid metrics (1 invalid out of 1), first error is: {error}"));
    let broken: Usage = Err("the kubelets did not answer".into());
    let d = run(&hpa, &scale(2), &[pod("a")], &broken, &mut History::default());
    assert!(d.events[0].message.ends_with("unable to get metrics for resource cpu: the kubelets did not answer"));
}

#[test]
fn a_failed_metric_blocks_a_scale_down_but_not_a_scale_up() {
    let two = hpa(json!({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}, "metrics": [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
        {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1"}}},
    ]}));
    let pods = [pod("a"), pod("b")];
    let d = run(&two, &scale(2), &pods, &usage(&[("a", 1), ("b", 1)]), &mut History::default());
    assert_eq!(d.rescale, None);
    assert_eq!(condition(&d.status, "ScalingActive").1, "FailedGetPodsMetric");
    let d = run(&two, &scale(2), &pods, &usage(&[("a", 100), ("b", 100)]), &mut History::default());
    assert_eq!(d.rescale.map(|r| r.0), Some(3));
}

#[test]
fn bounds_and_disabled_scaling() {
    let hpa = hpa(json!({}));
    let d = run(&hpa, &scale(0), &[], &usage(&[]), &mut History::default());
    assert_eq!((d.rescale.clone(), condition(&d.status, "ScalingActive").1), (None, "ScalingDisabled"));
    let d = run(&hpa, &scale(7), &[], &usage(&[]), &mut History::default());
    assert_eq!(d.rescale, Some((3, "Current number of replicas above Spec.MaxReplicas".to_string())));
    let no_selector = Scale { selector: String::new(), ..scale(2) };
    let d = run(&hpa, &no_selector, &[], &usage(&[]), &mut History::default());
    assert_eq!(condition(&d.status, "ScalingActive").1, "InvalidSelector");
}

#[test]
fn a_failed_scale_write_is_a_condition_and_an_event() {
    let hpa = hpa(json!({}));
    let mut d = run(&hpa, &scale(1), &[pod("a")], &usage(&[("a", 100)]), &mut History::default());
    rescaled(&mut d, Err("conflict".into()), now());
    assert_eq!(condition(&d.status, "AbleToScale").0, "False");
    assert_eq!(d.events.last().map(|e| e.reason), Some("FailedRescale"));
}

#[test]
fn conditions_keep_their_transition_time() {
    let mut s = HorizontalPodAutoscalerStatus::default();
    set_condition(&mut s, "AbleToScale", true, "A", "a", now());
    let later = now() + SignedDuration::from_secs(60);
    set_condition(&mut s, "AbleToScale", true, "B", "b", later);
    let c = s.conditions.as_ref().and_then(|c| c.first().cloned()).unwrap_or_default();
    assert_eq!((c.reason.as_deref(), c.last_transition_time), (Some("B"), Some(Time(now()))));
    set_condition(&mut s, "AbleToScale", false, "C", "c", later);
    let c = s.conditions.as_ref().and_then(|c| c.first().cloned()).unwrap_or_default();
    assert_eq!(c.last_transition_time, Some(Time(later)));
}

#[test]
fn quantities_print_canonically() {
    let q = |m: i128| milli_quantity(m).0;
    assert_eq!(
        (q(250), q(2000), q(0), q(12_000_000_000), q(10_485_760_000)),
        ("250m".to_string(), "2".to_string(), "0".to_string(), "12M".to_string(), "10485760".to_string())
    );
}
