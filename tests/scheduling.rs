//! The scheduler end to end with kubectl 1.32: hollow nodes (`skiff agent --hollow N`) register
//! and run pods; an unsatisfiable pod stays Pending with Kubernetes' FailedScheduling wording
//! and never blocks later pods; cordon, taints and tolerations steer pods; a node change wakes
//! an unschedulable pod. A second test uses two real agents for taints and tolerations.

mod common;

use std::time::Duration;

use common::node::{AgentProcess, Registry};
use common::{eventually, Cluster};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn pod_manifest(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n{extra_spec}  containers:\n  - name: c\n    image: 127.0.0.1:1/none:1\n"
    )
}

fn pod(cluster: &Cluster, name: &str) -> Value {
    cluster.get_json(&["pod", name])
}

fn node_of(cluster: &Cluster, name: &str) -> String {
    pod(cluster, name)["spec"]["nodeName"].as_str().unwrap_or_default().to_string()
}

fn running_on(cluster: &Cluster, name: &str) -> Option<String> {
    let p = pod(cluster, name);
    (p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
        .then(|| p["spec"]["nodeName"].as_str().unwrap_or_default().to_string())
}

fn events_for(cluster: &Cluster, pod: &str, reason: &str) -> Vec<String> {
    let list = cluster.get_json(&["events", "--field-selector", &format!("involvedObject.name={pod}")]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect()
}

#[test]
fn hollow_nodes_run_pods_and_the_scheduler_explains_and_steers() {
    let cluster = Cluster::start();
    let _hollow = cluster.hollow(3, "hollow");
    eventually("three hollow nodes Ready", WAIT, || cluster.ready_nodes() == 3);

    // A pod no node can take stays Pending with the reason, worded as kube-scheduler words it.
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pod_manifest("stuck", "  nodeSelector: {disk: ssd}\n")));
    let expected = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
                    preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    eventually("a FailedScheduling event", WAIT, || {
        events_for(&cluster, "stuck", "FailedScheduling").iter().any(|m| m == expected)
    });
    let stuck = pod(&cluster, "stuck");
    let cond = stuck["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "PodScheduled");
    let cond = cond.cloned().unwrap_or_default();
    assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("False"), Some("Unschedulable")), "{cond}");
    assert_eq!(cond["message"], expected);
    let described = cluster.kubectl(&["describe", "pod", "stuck"]);
    assert!(described.contains("FailedScheduling"), "{described}");

    // It does not block the queue: a later pod is bound and "runs" on a hollow node.
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pod_manifest("free", "")));
    eventually("the later pod Running", WAIT, || running_on(&cluster, "free").is_some());
    assert!(node_of(&cluster, "free").starts_with("hollow-"));
    assert!(!events_for(&cluster, "free", "Scheduled").is_empty());
    assert_eq!(node_of(&cluster, "stuck"), "", "still pending");

    // Cordon two nodes: new pods go to the third.
    cluster.kubectl(&["cordon", "hollow-0"]);
    cluster.kubectl(&["cordon", "hollow-1"]);
    eventually("the cordons seen", WAIT, || {
        ["hollow-0", "hollow-1"].iter().all(|n| cluster.get_json(&["node", n])["spec"]["unschedulable"] == true)
    });
    for name in ["c1", "c2", "c3"] {
        cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pod_manifest(name, "")));
    }
    for name in ["c1", "c2", "c3"] {
        eventually("a pod on the uncordoned node", WAIT, || running_on(&cluster, name).is_some());
        assert_eq!(node_of(&cluster, name), "hollow-2", "{name}");
    }

    // Taint the third node: a pod that does not tolerate it has nowhere to go...
    cluster.kubectl(&["taint", "nodes", "hollow-2", "dedicated=edge:NoSchedule"]);
    eventually("the taint seen", WAIT, || cluster.get_json(&["node", "hollow-2"])["spec"]["taints"].is_array());
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pod_manifest("plain", "")));
    eventually("the untolerated taint reported", WAIT, || {
        events_for(&cluster, "plain", "FailedScheduling").iter().any(|m| {
            m.starts_with("0/3 nodes are available: 2 node(s) were unschedulable, 1 node(s) had untolerated taint {dedicated: edge}.")
        })
    });
    // ...while a tolerating one goes there.
    let tolerant = "  tolerations:\n  - {key: dedicated, operator: Equal, value: edge, effect: NoSchedule}\n";
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pod_manifest("tolerant", tolerant)));
    eventually("the tolerating pod Running", WAIT, || running_on(&cluster, "tolerant").is_some());
    assert_eq!(node_of(&cluster, "tolerant"), "hollow-2");

    // Uncordoning wakes the waiting pod; labelling a node wakes the stuck one.
    cluster.kubectl(&["uncordon", "hollow-0"]);
    eventually("the plain pod placed once a node is uncordoned", WAIT, || running_on(&cluster, "plain").is_some());
    assert_eq!(node_of(&cluster, "plain"), "hollow-0");
    cluster.kubectl(&["label", "node", "hollow-1", "disk=ssd"]);
    cluster.kubectl(&["uncordon", "hollow-1"]);
    eventually("the stuck pod placed once a node matches", WAIT, || running_on(&cluster, "stuck").is_some());
    assert_eq!(node_of(&cluster, "stuck"), "hollow-1");

    // Deleted pods go away (the hollow kubelet confirms at once).
    cluster.kubectl(&["delete", "pod", "c1", "--wait=false"]);
    eventually("the deleted pod gone", WAIT, || !cluster.kubectl_output(&["get", "pod", "c1"], None).status.success());
}

#[test]
fn a_full_node_leaves_pods_pending_and_a_deployment_spreads_over_hollow_nodes() {
    let cluster = Cluster::start();
    let _hollow = cluster.hollow(4, "h");
    eventually("four hollow nodes Ready", WAIT, || cluster.ready_nodes() == 4);
    cluster.kubectl(&["create", "deployment", "web", "--image=127.0.0.1:1/none:1", "--replicas=8"]);
    eventually("eight replicas available", WAIT, || {
        cluster.get_json(&["deploy", "web"])["status"]["availableReplicas"] == 8
    });
    let pods = cluster.get_json(&["pods", "-l", "app=web"]);
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for p in pods["items"].as_array().into_iter().flatten() {
        *per_node.entry(p["spec"]["nodeName"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    assert_eq!(per_node.len(), 4, "least-allocated spreads the replicas: {per_node:?}");
    // A pod asking for more cpu than any node has stays Pending with the reason.
    let big = "  containers:\n  - name: c\n    image: 127.0.0.1:1/none:1\n    resources: {requests: {cpu: \"64\"}}\n";
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: big\nspec:\n".to_string() + big;
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    eventually("Insufficient cpu reported", WAIT, || {
        events_for(&cluster, "big", "FailedScheduling")
            .iter()
            .any(|m| m.starts_with("0/4 nodes are available: 4 Insufficient cpu."))
    });
}

/// Two real agents: a tainted node only takes pods that tolerate the taint.
#[test]
fn taints_and_tolerations_across_two_real_nodes() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let image = registry.push("hello-http", "1");
    let agent = AgentProcess::start(&cluster);
    let (first, second) = (cluster.node_name(), agent.net.node.clone());
    eventually("two nodes Ready", WAIT, || cluster.ready_nodes() == 2);
    cluster.kubectl(&["taint", "nodes", &first, "dedicated=edge:NoSchedule"]);
    eventually("the taint seen", WAIT, || cluster.get_json(&["node", &first])["spec"]["taints"].is_array());
    let manifest = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{extra}  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: {image}\n"
        )
    };
    for i in 0..3 {
        cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest(&format!("plain-{i}"), "")));
    }
    let tolerant = format!(
        "  nodeSelector: {{kubernetes.io/hostname: {first}}}\n  tolerations:\n  - {{key: dedicated, operator: Exists, effect: NoSchedule}}\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest("tolerant", &tolerant)));
    for i in 0..3 {
        let name = format!("plain-{i}");
        eventually("a plain pod Running", WAIT, || running_on(&cluster, &name).is_some());
        assert_eq!(node_of(&cluster, &name), second, "{name} avoided the tainted node");
    }
    eventually("the tolerating pod Running", WAIT, || running_on(&cluster, "tolerant").is_some());
    assert_eq!(node_of(&cluster, "tolerant"), first);
    cluster.kubectl(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

/// Priority admission and preemption on one hollow node (4 cpu): a high-priority pod evicts the
/// fewest lower-priority pods it needs; a pod whose class says `Never` waits instead.
#[test]
fn a_higher_priority_pod_preempts_the_fewest_lower_priority_pods() {
    let cluster = Cluster::start();
    let _hollow = cluster.hollow(1, "pre");
    eventually("one hollow node Ready", WAIT, || cluster.ready_nodes() == 1);
    let classes = cluster.kubectl(&["get", "priorityclasses"]);
    assert!(classes.contains("system-node-critical") && classes.contains("system-cluster-critical"), "{classes}");
    cluster.kubectl(&["create", "priorityclass", "low", "--value=10"]);
    cluster.kubectl(&["create", "priorityclass", "high", "--value=1000"]);
    cluster.kubectl(&["create", "priorityclass", "polite", "--value=2000", "--preemption-policy=Never"]);
    let pod = |name: &str, class: &str, cpu: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  priorityClassName: {class}\n  containers:\n  - name: c\n    image: 127.0.0.1:1/none:1\n    resources: {{requests: {{cpu: \"{cpu}\"}}}}\n"
        )
    };
    // Admission: the class's value and policy are written into the pod; unknown classes and
    // contradicting priorities are refused with kube's words.
    let err = cluster.kubectl_fails(&["apply", "-f", "-"], Some(&pod("x", "nope", "1")));
    assert!(err.contains("no PriorityClass with name nope was found"), "{err}");
    let contradicting = pod("contra", "low", "1").replace("  priorityClassName", "  priority: 5\n  priorityClassName");
    let err = cluster.kubectl_fails(&["apply", "-f", "-"], Some(&contradicting));
    assert!(err.contains("must not be provided in pod spec"), "{err}");
    for name in ["low-a", "low-b"] {
        cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pod(name, "low", "1500m")));
        eventually("a low pod bound", WAIT, || !node_of(&cluster, name).is_empty());
    }
    assert_eq!(cluster.get_json(&["pod", "low-a"])["spec"]["priority"], 10);
    assert_eq!(cluster.get_json(&["pod", "low-a"])["spec"]["preemptionPolicy"], "PreemptLowerPriority");

    // `Never`: it waits, nobody is evicted.
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pod("polite", "polite", "2")));
    eventually("the polite pod unschedulable", WAIT, || !events_for(&cluster, "polite", "FailedScheduling").is_empty());
    cluster.kubectl(&["delete", "pod", "polite", "--wait=true"]);
    assert!(!node_of(&cluster, "low-a").is_empty() && !node_of(&cluster, "low-b").is_empty());

    // 1 cpu free, 2 asked: one low pod (1.5 cpu) is enough to evict. The node is read first:
    // the victim may be gone by the time the urgent pod's create returns.
    let node = node_of(&cluster, "low-a");
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pod("urgent", "high", "2")));
    eventually("the urgent pod bound", WAIT, || node_of(&cluster, "urgent") == node);
    assert_eq!(cluster.get_json(&["pod", "urgent"])["status"]["nominatedNodeName"], node.as_str());
    let left = cluster.get_json(&["pods"]);
    let names: Vec<String> = left["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect();
    let lows: Vec<&String> = names.iter().filter(|n| n.starts_with("low-")).collect();
    assert_eq!(lows.len(), 1, "exactly one victim: {names:?}");
    let victim = if lows[0] == "low-a" { "low-b" } else { "low-a" };
    let events = cluster.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={victim},reason=Preempted"),
    ]);
    assert!(events.contains("Preempted by pod") && events.contains(&format!("on node {node}")), "{events}");
}
