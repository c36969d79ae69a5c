use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn pod(name: &str, ready: bool, owner_uid: Option<&str>) -> Value {
    let mut p = json!({
        "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    });
    if let Some(uid) = owner_uid {
        p["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": uid, "controller": true}]);
    }
    p
}

fn pdb(spec: Value) -> Value {
    let mut spec = spec;
    spec["selector"] = json!({"matchLabels": {"app": "web"}});
    json!({"metadata": {"name": "budget", "namespace": "ns", "generation": 2}, "spec": spec})
}

fn scale(replicas: i64) -> impl Fn(&Value) -> Option<Scale> {
    move |owner: &Value| (owner["uid"] == "rs").then(|| Scale { uid: "deploy".into(), replicas })
}

fn run(pdb: &Value, pods: &[Value], replicas: i64, now: Timestamp) -> Result<Plan, SyncError> {
    let refs: Vec<&Value> = pods.iter().collect();
    plan(pdb, &refs, &scale(replicas), now)
}

#[test]
fn percentages_round_up_and_integers_stay() {
    assert_eq!(scaled_value(&json!(2), 10), Ok(2));
    assert_eq!(scaled_value(&json!("50%"), 3), Ok(2));
    assert_eq!(scaled_value(&json!("34%"), 3), Ok(2));
    assert_eq!(scaled_value(&json!("100%"), 3), Ok(3));
    assert_eq!(scaled_value(&json!("0%"), 3), Ok(0));
    assert_eq!(
        scaled_value(&json!("2"), 3).map_err(|e| e.to_string()),
        Err("invalid value for IntOrString: invalid type: string is not a percentage".into())
    );
    assert!(scaled_value(&json!("x%"), 3).is_err());
}

#[test]
fn min_available_integer_counts_the_selected_pods() {
    let now = ts("2026-01-01T00:00:00Z");
    let pods = [pod("a", true, Some("rs")), pod("b", true, Some("rs")), pod("c", true, Some("rs"))];
    let p = run(&pdb(json!({"minAvailable": 2})), &pods, 5, now).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.status["expectedPods"], 3, "not the scale: the pods");
    assert_eq!(p.status["desiredHealthy"], 2);
    assert_eq!(p.status["currentHealthy"], 3);
    assert_eq!(p.status["disruptionsAllowed"], 1);
    assert_eq!(p.status["observedGeneration"], 2);
    let cond = &p.status["conditions"][0];
    assert_eq!((cond["type"].as_str(), cond["status"].as_str()), (Some(CONDITION), Some("True")));
    assert_eq!(cond["reason"], SUFFICIENT_PODS);
    assert_eq!(p.recheck, None);
}

#[test]
fn max_unavailable_and_percentages_use_the_controllers_scale() {
    let now = ts("2026-01-01T00:00:00Z");
    let pods = [pod("a", true, Some("rs")), pod("b", true, Some("rs")), pod("c", false, Some("rs"))];
    let p = run(&pdb(json!({"maxUnavailable": 1})), &pods, 4, now).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.status["expectedPods"], 4);
    assert_eq!(p.status["desiredHealthy"], 3);
    assert_eq!(p.status["currentHealthy"], 2);
    assert_eq!(p.status["disruptionsAllowed"], 0);
    assert_eq!(p.status["conditions"][0]["reason"], INSUFFICIENT_PODS);
    assert_eq!(p.status["conditions"][0]["status"], "False");

    let p = run(&pdb(json!({"minAvailable": "50%"})), &pods, 3, now).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((p.status["expectedPods"].as_i64(), p.status["desiredHealthy"].as_i64()), (Some(3), Some(2)));
    assert_eq!(p.status["disruptionsAllowed"], 0);

    let p = run(&pdb(json!({"maxUnavailable": "50%"})), &pods, 3, now).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.status["desiredHealthy"], 1, "3 - ceil(1.5)");
    assert_eq!(p.status["disruptionsAllowed"], 1);

    let p = run(&pdb(json!({"maxUnavailable": 5})), &pods, 3, now).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.status["desiredHealthy"], 0, "never below zero");
}

#[test]
fn no_expected_pods_allows_nothing() {
    let now = ts("2026-01-01T00:00:00Z");
    let p = run(&pdb(json!({"minAvailable": 0})), &[], 3, now).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.status["expectedPods"], 0);
    assert_eq!(p.status["disruptionsAllowed"], 0);
}

#[test]
fn a_pod_of_an_unknown_controller_fails_the_sync_and_unmanaged_pods_are_reported() {
    let now = ts("2026-01-01T00:00:00Z");
    let pods = [pod("a", true, Some("other")), pod("b", true, Some("rs"))];
    let err = run(&pdb(json!({"maxUnavailable": 1})), &pods, 3, now).err();
    assert_eq!(err, Some(SyncError::NoController("a".into())));
    assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("found no controllers for pod \"a\""));

    let pods = [pod("bare", true, None), pod("b", true, Some("rs"))];
    let p = run(&pdb(json!({"maxUnavailable": 1})), &pods, 2, now).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.unmanaged, vec!["bare".to_string()]);
    assert_eq!(p.status["expectedPods"], 2);
}

#[test]
fn disrupted_pods_do_not_count_until_they_expire() {
    let now = ts("2026-01-01T00:01:00Z");
    let pods = [pod("a", true, Some("rs")), pod("b", true, Some("rs")), pod("c", true, Some("rs"))];
    let mut budget = pdb(json!({"minAvailable": 2}));
    budget["status"] = json!({"disruptedPods": {"a": "2026-01-01T00:00:30Z", "old": "2026-01-01T00:00:00Z",
                                                "b": "2025-12-31T23:58:00Z"}});
    let p = run(&budget, &pods, 3, now).unwrap_or_else(|e| panic!("{e}"));
    // "a" is still expected to go; "b" expired (two minutes passed); "old" no longer exists.
    assert_eq!(p.status["disruptedPods"], json!({"a": "2026-01-01T00:00:30Z"}));
    assert_eq!(p.status["currentHealthy"], 2);
    assert_eq!(p.status["disruptionsAllowed"], 0);
    assert_eq!(p.recheck, Some(Duration::from_secs(90)));

    // A pod being deleted is neither healthy nor kept in the map.
    let mut deleting = pods.clone();
    deleting[0]["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:40Z");
    let p = run(&budget, &deleting, 3, now).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.status.get("disruptedPods").is_none());
    assert_eq!(p.status["currentHealthy"], 2);
    assert_eq!(p.recheck, None);
}

#[test]
fn the_condition_moves_its_transition_time_only_on_change() {
    let t0 = ts("2026-01-01T00:00:00Z");
    let t1 = ts("2026-01-01T00:05:00Z");
    let pods = [pod("a", true, Some("rs")), pod("b", true, Some("rs"))];
    let mut budget = pdb(json!({"minAvailable": 1}));
    let first = run(&budget, &pods, 2, t0).unwrap_or_else(|e| panic!("{e}"));
    budget["status"] = first.status.clone();
    let again = run(&budget, &pods, 2, t1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.status, first.status, "nothing changed: the same status, so no write");
    let one_ready = [pod("a", true, Some("rs")), pod("b", false, Some("rs"))];
    let changed = run(&budget, &one_ready, 2, t1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(changed.status["conditions"][0]["lastTransitionTime"], "2026-01-01T00:05:00Z");
    assert_eq!(changed.status["conditions"][0]["reason"], INSUFFICIENT_PODS);
}

#[test]
fn fail_safe_allows_no_disruption_and_says_why() {
    let now = ts("2026-01-01T00:00:00Z");
    let mut budget = pdb(json!({"maxUnavailable": 1}));
    budget["status"] = json!({"disruptionsAllowed": 3, "observedGeneration": 1, "currentHealthy": 3});
    let status = fail_safe(&budget, &SyncError::NoController("a".into()), now);
    assert_eq!(status["disruptionsAllowed"], 0);
    assert_eq!(status["currentHealthy"], 3);
    let cond = &status["conditions"][0];
    assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("False"), Some(SYNC_FAILED)));
    assert_eq!(cond["message"], "found no controllers for pod \"a\"");
    assert_eq!(cond["observedGeneration"], 1);
}

#[test]
fn selectors_follow_policy_v1() {
    let p = pod("a", true, None);
    assert!(selects(&pdb(json!({})), &p));
    let everything = json!({"metadata": {"name": "x", "namespace": "ns"}, "spec": {"selector": {}}});
    assert!(selects(&everything, &p), "an empty selector selects every pod");
    let none = json!({"metadata": {"name": "x", "namespace": "ns"}, "spec": {}});
    assert!(!selects(&none, &p), "no selector selects nothing");
    let other_ns = json!({"metadata": {"name": "x", "namespace": "other"}, "spec": {"selector": {}}});
    assert!(!selects(&other_ns, &p));
}

#[test]
fn the_spec_is_validated_as_kube_apiserver_does() {
    let ok = pdb(json!({"minAvailable": "50%", "unhealthyPodEvictionPolicy": "AlwaysAllow"}));
    assert!(validate(&ok).is_empty(), "{:?}", validate(&ok));
    let fields = |spec: Value| validate(&pdb(spec)).into_iter().map(|(f, _)| f).collect::<Vec<_>>();
    assert_eq!(fields(json!({"minAvailable": 1, "maxUnavailable": 1})), ["spec"]);
    assert_eq!(fields(json!({"minAvailable": -1})), ["spec.minAvailable"]);
    assert_eq!(fields(json!({"maxUnavailable": "150%"})), ["spec.maxUnavailable"]);
    assert_eq!(fields(json!({"maxUnavailable": "two"})), ["spec.maxUnavailable"]);
    assert_eq!(
        fields(json!({"minAvailable": 1, "unhealthyPodEvictionPolicy": "Never"})),
        ["spec.unhealthyPodEvictionPolicy"]
    );
    let both = validate(&pdb(json!({"minAvailable": 1, "maxUnavailable": 1})));
    assert!(both[0].1.ends_with("minAvailable and maxUnavailable cannot be both set"), "{both:?}");
}
