//! Tests of the filters, scores and decisions together (pure), with property tests.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::decide::{decide, decide_from, feasible_to_find};
use super::filters;
use super::fit::{node_state, Diagnosis, Misfit, NodeState};
use super::pod_info::PodInfo;
use super::scores;
use super::topology::Topology;

fn node(name: &str, labels: Value) -> NodeState {
    node_state(&json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "runtimeHandlers": [{"name": ""}, {"name": "skiff-wasm"}]},
    }))
}

fn pod(name: &str, spec: Value) -> Arc<PodInfo> {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "img"}]);
    }
    PodInfo::of(&json!({"metadata": {"name": name, "namespace": "ns", "uid": name, "labels": {"app": "web"}},
                        "spec": spec}))
}

fn placed(node: &mut NodeState, name: &str, spec: Value) {
    let mut p = (*pod(name, spec)).clone();
    p.node_name = Some(node.name.clone());
    node.add_pod(Arc::new(p));
}

fn check(p: &PodInfo, n: &NodeState) -> Result<(), Misfit> {
    filters::filter(p, None, n, &Topology::compute(p, std::slice::from_ref(n), true))
}

#[test]
fn node_affinity_operators_and_match_fields() {
    let n = node("n1", json!({"zone": "a", "gen": "5"}));
    let with = |exprs: Value| {
        pod(
            "p",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [exprs]}}}}),
        )
    };
    let ok = |exprs: Value| check(&with(exprs), &n).is_ok();
    assert!(ok(json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]})));
    assert!(!ok(json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]})));
    assert!(ok(json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["b"]}]})));
    assert!(ok(json!({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["b"]}]})));
    assert!(ok(json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]})));
    assert!(!ok(json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]})));
    assert!(ok(json!({"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]})));
    assert!(!ok(json!({"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["5"]}]})));
    assert!(ok(json!({"matchExpressions": [{"key": "gen", "operator": "Lt", "values": ["6"]}]})));
    assert!(!ok(json!({"matchExpressions": [{"key": "zone", "operator": "Lt", "values": ["6"]}]})), "not a number");
    assert!(ok(json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})));
    assert!(!ok(json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]})));
    assert!(!ok(json!({})), "an empty term matches nothing");
    assert_eq!(
        check(&with(json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]})), &n),
        Err(Misfit::NodeSelector)
    );
}

#[test]
fn host_ports_conflict_by_protocol_and_address() {
    let mut n = node("n", json!({}));
    placed(
        &mut n,
        "old",
        json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
    );
    let asking = |port: i64, proto: &str, ip: &str| {
        pod(
            "p",
            json!({"containers": [{"name": "c", "image": "i",
            "ports": [{"containerPort": 80, "hostPort": port, "protocol": proto, "hostIP": ip}]}]}),
        )
    };
    assert_eq!(check(&asking(8080, "TCP", ""), &n), Err(Misfit::HostPorts));
    assert_eq!(check(&asking(8080, "TCP", "10.0.0.1"), &n), Err(Misfit::HostPorts), "the old one binds all");
    assert!(check(&asking(8080, "UDP", ""), &n).is_ok());
    assert!(check(&asking(8081, "TCP", ""), &n).is_ok());
    assert!(n.remove_pod("old"));
    assert!(check(&asking(8080, "TCP", ""), &n).is_ok(), "a removed pod frees its port");
}

#[test]
fn taints_cordon_and_runtime() {
    let mut n = node("n", json!({}));
    n.taints = vec![json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"})];
    let plain = pod("p", json!({}));
    assert_eq!(
        check(&plain, &n).map_err(|m| m.to_string()),
        Err("node(s) had untolerated taint {node.kubernetes.io/unreachable: }".into())
    );
    let tolerant = pod("p", json!({"tolerations": [{"operator": "Exists"}]}));
    assert!(check(&tolerant, &n).is_ok(), "an empty key with Exists tolerates everything");
    n.taints = vec![json!({"key": "soft", "effect": "PreferNoSchedule"})];
    assert!(check(&plain, &n).is_ok(), "PreferNoSchedule does not filter");
    n.unschedulable = true;
    assert_eq!(check(&plain, &n), Err(Misfit::Unschedulable));
    n.unschedulable = false;
    assert_eq!(filters::runtime(Some("runc"), &n), Err(Misfit::RuntimeHandler("runc".into())));
    assert!(filters::runtime(Some("skiff-wasm"), &n).is_ok());
}

#[test]
fn pod_anti_affinity_and_affinity_by_topology() {
    let mut a = node("a", json!({"zone": "z1", "kubernetes.io/hostname": "a"}));
    let b = node("b", json!({"zone": "z2", "kubernetes.io/hostname": "b"}));
    placed(&mut a, "web-0", json!({}));
    let nodes = [&a, &b];
    let anti = pod(
        "web-1",
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}),
    );
    assert_eq!(decide(&anti, None, &nodes, 0).map(|i| nodes[i].name.as_str()), Ok("b"));
    let topo = Topology::compute(&anti, nodes, true);
    assert_eq!(topo.affinity_filter(&a), Err(Misfit::PodAntiAffinity));
    let near = pod(
        "cache",
        json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}),
    );
    assert_eq!(decide(&near, None, &nodes, 1).map(|i| nodes[i].name.as_str()), Ok("a"));
    // The first pod of a group that matches its own affinity may go anywhere.
    let empty_a = node("a", json!({"zone": "z1"}));
    assert!(decide(&near, None, &[&empty_a], 0).is_ok());
    // An existing pod's anti-affinity keeps matching pods out of its zone.
    let mut c = node("c", json!({"zone": "z1"}));
    placed(
        &mut c,
        "loner",
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}),
    );
    let topo = Topology::compute(&pod("x", json!({})), [&c], true);
    assert_eq!(topo.affinity_filter(&c), Err(Misfit::ExistingAntiAffinity));
}

#[test]
fn topology_spread_do_not_schedule_and_schedule_anyway() {
    let mut a = node("a", json!({"zone": "z1"}));
    let b = node("b", json!({"zone": "z2"}));
    let bare = node("bare", json!({}));
    placed(&mut a, "w0", json!({}));
    let spread = |when: &str| {
        pod(
            "w1",
            json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}}]}),
        )
    };
    let hard = spread("DoNotSchedule");
    let topo = Topology::compute(&hard, [&a, &b, &bare], true);
    assert_eq!(topo.spread_filter(&a), Err(Misfit::Spread));
    assert!(topo.spread_filter(&b).is_ok());
    assert_eq!(topo.spread_filter(&bare), Err(Misfit::SpreadMissingLabel));
    let soft = spread("ScheduleAnyway");
    let nodes = [&a, &b];
    assert_eq!(decide(&soft, None, &nodes, 0).map(|i| nodes[i].name.as_str()), Ok("b"));
    assert!(Topology::compute(&soft, nodes, true).spread_filter(&a).is_ok(), "soft constraints never filter");
}

#[test]
fn preferred_affinity_and_image_locality_score() {
    let a = node("a", json!({"disk": "hdd"}));
    let mut b = node("b", json!({"disk": "ssd"}));
    let nodes = [&a, &b];
    let p = pod(
        "p",
        json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}}),
    );
    assert_eq!(decide(&p, None, &nodes, 0).map(|i| nodes[i].name.as_str()), Ok("b"));
    assert_eq!(scores::preferred_affinity(&p, &b), 50);
    b.images.insert("img".into());
    let plain = pod("q", json!({}));
    assert_eq!(scores::image_locality(&plain, &b), 100);
    assert_eq!(scores::image_locality(&plain, &a), 0);
}

#[test]
fn failed_scheduling_reads_like_kubernetes() {
    let d = Diagnosis {
        nodes: 3,
        misfits: [
            (Misfit::InsufficientMemory, 2),
            (Misfit::UntoleratedTaint("node.kubernetes.io/unreachable: ".into()), 1),
        ]
        .into_iter()
        .collect(),
    };
    assert_eq!(
        d.event_message(),
        "0/3 nodes are available: 2 Insufficient memory, 1 node(s) had untolerated taint \
         {node.kubernetes.io/unreachable: }. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    assert_eq!(Diagnosis::default().event_message(), "no nodes available to schedule pods");
}

#[test]
fn large_clusters_are_sampled_and_the_search_rotates() {
    assert_eq!(feasible_to_find(50), 50);
    assert_eq!(feasible_to_find(1000), 420);
    assert_eq!(feasible_to_find(5000), 500);
    assert_eq!(feasible_to_find(100_000), 5000);
    let nodes: Vec<NodeState> = (0..1000).map(|i| node(&format!("n{i}"), json!({}))).collect();
    let refs: Vec<&NodeState> = nodes.iter().collect();
    let p = pod("p", json!({}));
    let first = decide_from(&p, None, &refs, 0, false).expect("fits");
    assert_eq!(first.examined, 420);
    let next = decide_from(&p, None, &refs, first.examined, false).expect("fits");
    assert!(next.node >= 420, "the next search starts after the last");
}

fn arb_quantity() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..100_000).prop_map(|n| format!("{n}m")),
        (0u64..64).prop_map(|n| format!("{n}")),
        (0u64..64).prop_map(|n| format!("{n}Gi")),
        Just("170141183460469231731687303715884105727".to_string()),
        Just("9223372036854775807P".to_string()),
        "[0-9.eEmkKMGTPi+-]{0,12}",
    ]
}

fn arb_node(i: usize) -> impl Strategy<Value = NodeState> {
    (arb_quantity(), arb_quantity(), 0u32..200, any::<bool>(), any::<bool>(), proptest::option::of("[ab]")).prop_map(
        move |(cpu, mem, pods, ready, cordoned, zone)| {
            let mut n = node_state(&json!({
                "metadata": {"name": format!("n{i}"), "labels": zone.map_or(json!({}), |z| json!({"zone": z}))},
                "spec": {"unschedulable": cordoned},
                "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": pods.to_string()},
                           "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
            }));
            n.name = format!("n{i}");
            n
        },
    )
}

fn arb_pod() -> impl Strategy<Value = Arc<PodInfo>> {
    (arb_quantity(), arb_quantity(), proptest::option::of("[ab]"), any::<bool>()).prop_map(
        |(cpu, mem, zone, spread)| {
            let mut spec = json!({"containers": [{"name": "c", "image": "i",
                                               "resources": {"requests": {"cpu": cpu, "memory": mem}}}]});
            if let Some(z) = zone {
                spec["nodeSelector"] = json!({"zone": z});
            }
            if spread {
                spec["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "zone",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]);
            }
            pod("p", spec)
        },
    )
}

proptest! {
    /// Whatever the nodes and the pod: a decision never panics; a chosen node passes every
    /// filter; a failure counts every node exactly once; scores stay in range.
    #[test]
    fn decisions_are_consistent(nodes in proptest::collection::vec(any::<usize>(), 0..8)
            .prop_flat_map(|v| (0..v.len()).map(arb_node).collect::<Vec<_>>()),
        p in arb_pod(), start in 0usize..16) {
        let refs: Vec<&NodeState> = nodes.iter().collect();
        match decide_from(&p, None, &refs, start, true) {
            Ok(placement) => {
                let topo = Topology::compute(&p, refs.iter().copied(), true);
                prop_assert!(filters::filter(&p, None, refs[placement.node], &topo).is_ok());
                prop_assert!(placement.examined <= refs.len());
            }
            Err(d) => {
                prop_assert_eq!(d.nodes, refs.len());
                prop_assert_eq!(d.misfits.values().sum::<usize>(), refs.len());
            }
        }
        for n in &refs {
            prop_assert!((0..=100).contains(&scores::least_allocated(&p, n)));
            prop_assert!((0..=100).contains(&scores::balanced(&p, n)));
        }
    }

    /// Placing a pod never lets a node exceed its allocatable: after adding pods while the
    /// resources filter passes, requests stay within allocatable.
    #[test]
    fn the_resources_filter_never_overcommits(n in arb_node(0), pods in proptest::collection::vec(arb_pod(), 1..20)) {
        let mut n = n;
        for p in pods {
            if filters::resources(&p, &n).is_ok() {
                n.add_pod(p);
            }
        }
        prop_assert!(n.requested.pods <= n.allocatable.pods);
        prop_assert!(n.requested.cpu_milli <= n.allocatable.cpu_milli || n.pods.iter().all(|p| p.requests.cpu_milli == 0));
        prop_assert!(n.requested.memory <= n.allocatable.memory || n.pods.iter().all(|p| p.requests.memory == 0));
    }

    /// normalize keeps every score within 0..=100 for any raw values.
    #[test]
    fn normalize_stays_in_range(raw in proptest::collection::vec(any::<i64>(), 0..16), reverse in any::<bool>()) {
        let mut s = raw;
        scores::normalize(&mut s, reverse);
        prop_assert!(s.iter().all(|v| (0..=100).contains(v)));
    }
}
