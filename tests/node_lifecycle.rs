//! Node lifecycle end to end: a second `skiff agent` is killed (SIGKILL); its node turns Unknown
//! with the unreachable taints, its pods are evicted after their (short) default toleration and
//! replaced on the remaining node; restarted, the node is Ready and untainted again and runs none
//! of them; `kubectl delete node` then removes the pods still bound to it. A node cut off the
//! network (its own host in a network namespace, its link down) has its pods replaced the same
//! way, and stops them when it is back.

mod common;

use std::time::Duration;

use common::node::{AgentProcess, LabNet, Registry, TestNet};
use common::{eventually, Cluster};
use serde_json::Value;

/// Longer than the agents' 10 s Lease renewal, or live nodes would flap.
const GRACE_SECS: u64 = 15;
const TOLERATION_SECS: u64 = 3;
const WAIT: Duration = Duration::from_secs(90);

fn ready_status(cluster: &Cluster, node: &str) -> String {
    let out = cluster.kubectl_output(
        &["get", "node", node, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
        None,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Live (not terminating) pods with `app=<app>`.
fn live_pods(cluster: &Cluster, app: &str) -> Vec<Value> {
    let list = cluster.get_json(&["pods", "-l", &format!("app={app}")]);
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn pods_on(cluster: &Cluster, node: &str) -> Vec<String> {
    let list = cluster.get_json(&["pods"]);
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["spec"]["nodeName"] == node)
        .map(|p| p["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn events_with_reason(cluster: &Cluster, reason: &str) -> Vec<Value> {
    let list = cluster.get_json(&["events", "-A"]);
    list["items"].as_array().cloned().unwrap_or_default().into_iter().filter(|e| e["reason"] == reason).collect()
}

#[test]
fn a_dead_nodes_pods_are_evicted_and_replaced_and_a_deleted_nodes_pods_removed() {
    let cluster = Cluster::with_node_args(vec![
        "--node-monitor-grace-period".into(),
        format!("{GRACE_SECS}s"),
        "--default-unreachable-toleration-seconds".into(),
        TOLERATION_SECS.to_string(),
    ]);
    let registry = Registry::start();
    let image = registry.push("hello-http", "1");
    let mut agent = AgentProcess::start(&cluster);
    let (first, second) = (cluster.node_name(), agent.net.node.clone());
    eventually("the second node Ready", WAIT, || ready_status(&cluster, &second) == "True");

    // Every replica lands on the second node: the first is cordoned meanwhile.
    cluster.kubectl(&["cordon", &first]);
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: web\n        image: {image}\n        ports:\n        - containerPort: 8080\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    // A pod that tolerates the unreachable taint forever stays until its node is deleted.
    let pinned = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: pinned}}\nspec:\n  nodeName: {second}\n  tolerations:\n  - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute}}\n  containers:\n  - {{name: web, image: \"{image}\"}}\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pinned));
    eventually("both replicas Running on the second node", WAIT, || {
        let pods = live_pods(&cluster, "web");
        pods.len() == 2 && pods.iter().all(|p| p["spec"]["nodeName"] == second && p["status"]["phase"] == "Running")
    });
    cluster.kubectl(&["uncordon", &first]);
    let before: Vec<String> =
        live_pods(&cluster, "web").iter().map(|p| p["metadata"]["name"].as_str().unwrap_or_default().into()).collect();
    // Admission gave every pod the default tolerations, with the configured seconds.
    let tolerations = live_pods(&cluster, "web")[0]["spec"]["tolerations"].clone();
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        assert!(
            tolerations
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["key"] == key && t["effect"] == "NoExecute" && t["tolerationSeconds"] == TOLERATION_SECS),
            "{tolerations}"
        );
    }
    let pinned_tolerations = cluster.get_json(&["pod", "pinned"])["spec"]["tolerations"].clone();
    assert!(
        !pinned_tolerations
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && !t["tolerationSeconds"].is_null()),
        "the pod's own toleration is kept: {pinned_tolerations}"
    );

    // The node dies.
    agent.kill9();
    let killed = std::time::Instant::now();
    eventually("the dead node Unknown", WAIT, || ready_status(&cluster, &second) == "Unknown");
    let unknown_after = killed.elapsed();
    let node = cluster.get_json(&["node", &second]);
    let ready = node["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready").cloned();
    let ready = ready.unwrap_or_default();
    assert_eq!(ready["reason"], "NodeStatusUnknown", "{ready}");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.", "{ready}");
    let taints = node["spec"]["taints"].as_array().cloned().unwrap_or_default();
    for effect in ["NoSchedule", "NoExecute"] {
        assert!(
            taints.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == effect),
            "{taints:?}"
        );
    }
    // Not before the grace period (the lease is renewed every 10 s, so at most that early).
    assert!(unknown_after >= Duration::from_secs(GRACE_SECS.saturating_sub(10)), "{unknown_after:?}");
    assert!(cluster.kubectl(&["get", "nodes"]).contains("NotReady"));

    // Its replicas are evicted after the toleration and replaced on the first node (bound within
    // the configured times; Running once the first node pulled and compiled the image).
    eventually("the replicas bound to the first node", WAIT, || {
        let pods = live_pods(&cluster, "web");
        pods.len() == 2 && pods.iter().all(|p| p["spec"]["nodeName"] == first.as_str())
    });
    let replaced_after = killed.elapsed();
    assert!(
        replaced_after < Duration::from_secs(GRACE_SECS + 10 + TOLERATION_SECS + 15),
        "replaced only after {replaced_after:?} (Unknown after {unknown_after:?})\n{}",
        cluster
            .server_log()
            .lines()
            .filter(|l| ["node_lifecycle", "evict", "sched", "taint", "pods"].iter().any(|w| l.contains(w)))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eventually("the replacements Running", WAIT, || {
        live_pods(&cluster, "web").iter().all(|p| p["status"]["phase"] == "Running")
    });
    let running_after = killed.elapsed();
    eprintln!(
        "after the kill: node Unknown {unknown_after:?}, replicas bound elsewhere {replaced_after:?}, Running {running_after:?}"
    );
    let names = pods_on(&cluster, &second);
    assert!(before.iter().all(|b| !names.contains(b)), "evicted pods are gone: {names:?}");
    assert_eq!(names, vec!["pinned".to_string()], "the pod tolerating forever stays");
    assert!(!events_with_reason(&cluster, "NodeNotReady").is_empty());
    let evictions = events_with_reason(&cluster, "TaintManagerEviction");
    assert!(
        before.iter().all(|b| evictions.iter().any(|e| e["involvedObject"]["name"] == b.as_str())),
        "{evictions:?}"
    );

    // The node comes back: Ready again, the unreachable taints gone, none of the replaced pods
    // bound to it (the pod tolerating forever runs there again).
    agent.respawn(&cluster);
    eventually("the node back Ready and untainted", WAIT, || {
        let node = cluster.get_json(&["node", &second]);
        let taints = node["spec"]["taints"].as_array().cloned().unwrap_or_default();
        ready_status(&cluster, &second) == "True"
            && !taints.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable")
    });
    eventually("the pinned pod Running again", WAIT, || {
        cluster.get_json(&["pod", "pinned"])["status"]["phase"] == "Running"
    });
    assert_eq!(pods_on(&cluster, &second), vec!["pinned".to_string()]);
    assert_eq!(live_pods(&cluster, "web").len(), 2);

    // Deleting the node deletes the pods still bound to it.
    cluster.kubectl(&["delete", "node", &second]);
    eventually("no pod bound to the deleted node", WAIT, || pods_on(&cluster, &second).is_empty());
    assert_eq!(live_pods(&cluster, "web").len(), 2);
    cluster.kubectl(&["delete", "deployment", "web"]);
    eventually("the replicas gone", WAIT, || live_pods(&cluster, "web").is_empty());
}

#[test]
fn a_node_cut_off_has_its_pods_replaced_and_stops_them_when_it_returns() {
    let lab = LabNet::new();
    let cluster_cidr = TestNet::new().cidr;
    let registry = Registry::start_on(&lab.gateway);
    let cluster = Cluster::with_allocating_node(
        &lab.gateway,
        [
            "--node-ip",
            &lab.gateway,
            "--cluster-cidr",
            &cluster_cidr,
            "--node-cidr-mask-size",
            "26",
            "--insecure-registry",
            &registry.addr,
            "--node-monitor-grace-period",
            &format!("{GRACE_SECS}s"),
            "--default-unreachable-toleration-seconds",
            &TOLERATION_SECS.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    let image = registry.push("hello-http", "1");
    let agent = AgentProcess::join_in(
        &cluster,
        &cluster.join_token("1h"),
        lab.host(),
        &["--insecure-registry", &registry.addr],
    );
    let (first, second) = (cluster.node_name(), agent.net.node.clone());
    eventually("the second node Ready", WAIT, || ready_status(&cluster, &second) == "True");
    cluster.kubectl(&["cordon", &first]);
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: cut}}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: cut}}\n  template:\n    metadata:\n      labels: {{app: cut}}\n    spec:\n      containers:\n      - name: web\n        image: {image}\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    eventually("the replica Running on the second node", WAIT, || {
        let pods = live_pods(&cluster, "cut");
        pods.len() == 1 && pods[0]["spec"]["nodeName"] == second && pods[0]["status"]["phase"] == "Running"
    });
    cluster.kubectl(&["uncordon", &first]);
    let old = live_pods(&cluster, "cut")[0].clone();
    let old_ip = old["status"]["podIP"].as_str().unwrap_or_default().to_string();
    let answers = |ip: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "--max-time", "2", &format!("http://{ip}:8080/")])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout) == "hello from skiff\n"
    };
    eventually("the replica answering across the lab network", WAIT, || answers(&old_ip));

    // The cable is pulled: the agent lives on but cannot reach the server.
    let host = agent.host().expect("lab host");
    host.set_connected(false);
    eventually("the cut-off node Unknown", WAIT, || ready_status(&cluster, &second) == "Unknown");
    eventually("the replica replaced on the first node", WAIT, || {
        let pods = live_pods(&cluster, "cut");
        pods.len() == 1 && pods[0]["spec"]["nodeName"] == first.as_str() && pods[0]["status"]["phase"] == "Running"
    });
    assert!(pods_on(&cluster, &second).is_empty(), "the old replica is gone from the API");

    // Back on the network: Ready again, and the replaced pod no longer runs there.
    host.set_connected(true);
    eventually("the node back Ready", WAIT, || ready_status(&cluster, &second) == "True");
    eventually("the old replica stopped on the returned node", WAIT, || !answers(&old_ip));
    assert!(pods_on(&cluster, &second).is_empty());
    assert_eq!(live_pods(&cluster, "cut").len(), 1);
}
