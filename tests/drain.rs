//! `kubectl drain` with PodDisruptionBudgets end to end, with kubectl 1.32 on hollow nodes
//! (`skiff agent --hollow N`, nothing executed): the disruption controller computes the budget,
//! the eviction API spends it, drain cordons and evicts and the Deployment's pods come back on
//! the other nodes; a `maxUnavailable: 0` budget makes drain report kube's disruption-budget
//! error and the pod stays; uncordon; `kubectl get pdb` prints the budget's columns.

mod common;

use std::time::Duration;

use common::{eventually, Cluster};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

/// The pods labelled `app=<app>` that are not being deleted.
fn live_pods(cluster: &Cluster, app: &str) -> Vec<Value> {
    let list = cluster.get_json(&["pods", "-l", &format!("app={app}")]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn node_of(pod: &Value) -> String {
    pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string()
}

/// Ready pods of `app` and the nodes they run on.
fn ready_on(cluster: &Cluster, app: &str) -> Vec<String> {
    live_pods(cluster, app).iter().filter(|p| is_ready(p)).map(node_of).collect()
}

fn pdb_status(cluster: &Cluster, name: &str, field: &str) -> Value {
    cluster.get_json(&["pdb", name])["status"][field].clone()
}

#[test]
fn drain_honours_pod_disruption_budgets() {
    let cluster = Cluster::start();
    let _hollow = cluster.hollow(3, "drain");
    eventually("three hollow nodes Ready", WAIT, || cluster.ready_nodes() == 3);

    cluster.kubectl(&["create", "deployment", "web", "--image=127.0.0.1:1/none:1", "--replicas=3"]);
    eventually("three Ready web pods", WAIT, || ready_on(&cluster, "web").len() == 3);

    // A plain `kubectl create pdb`, computed by the disruption controller.
    let created = cluster.kubectl(&["create", "pdb", "web", "--selector=app=web", "--min-available=2"]);
    assert!(created.contains("poddisruptionbudget.policy/web created"), "{created}");
    eventually("the budget computed", WAIT, || pdb_status(&cluster, "web", "disruptionsAllowed") == 1);
    assert_eq!(pdb_status(&cluster, "web", "currentHealthy"), 3);
    assert_eq!(pdb_status(&cluster, "web", "desiredHealthy"), 2);
    assert_eq!(pdb_status(&cluster, "web", "expectedPods"), 3);

    // `kubectl get pdb` prints kube's columns.
    let table = cluster.kubectl(&["get", "pdb", "web"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED", "DISRUPTIONS", "AGE"], "{table}");
    let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(row[..4], ["web", "2", "N/A", "1"], "{table}");

    let described = cluster.kubectl(&["describe", "pdb", "web"]);
    let field = |name: &str| {
        described.lines().find_map(|l| l.trim().strip_prefix(name)).map(str::trim).unwrap_or_default().to_string()
    };
    assert_eq!(
        [field("Min available:"), field("Allowed disruptions:"), field("Current:"), field("Desired:"), field("Total:")],
        ["2", "1", "3", "2", "3"],
        "{described}"
    );

    // Drain a node running web pods: cordoned, evicted within the budget, replaced elsewhere.
    let target = ready_on(&cluster, "web").first().cloned().unwrap_or_default();
    // A server-side dry run changes nothing: no cordon, no eviction, the budget unspent.
    let before: Vec<Value> = live_pods(&cluster, "web").iter().map(|p| p["metadata"]["name"].clone()).collect();
    let dry = cluster.kubectl(&["drain", &target, "--ignore-daemonsets", "--dry-run=server", "--timeout=30s"]);
    assert!(dry.contains("(server dry run)"), "{dry}");
    assert_ne!(cluster.get_json(&["node", &target])["spec"]["unschedulable"], true);
    let after: Vec<Value> = live_pods(&cluster, "web").iter().map(|p| p["metadata"]["name"].clone()).collect();
    assert_eq!(before, after);
    assert_eq!(pdb_status(&cluster, "web", "disruptionsAllowed"), 1);
    assert!(pdb_status(&cluster, "web", "disruptedPods").is_null());
    let drained = cluster.kubectl_output(&["drain", &target, "--ignore-daemonsets", "--timeout=80s"], None);
    let (out, err) = (String::from_utf8_lossy(&drained.stdout), String::from_utf8_lossy(&drained.stderr));
    assert!(drained.status.success(), "drain failed\nstdout: {out}\nstderr: {err}");
    assert!(out.contains(&format!("node/{target} cordoned")), "{out}");
    assert!(out.contains("evicted"), "{out}");
    assert!(out.contains(&format!("node/{target} drained")), "{out}");
    assert_eq!(cluster.get_json(&["node", &target])["spec"]["unschedulable"], true);
    eventually("three Ready web pods on the other nodes", WAIT, || {
        let nodes = ready_on(&cluster, "web");
        nodes.len() == 3 && nodes.iter().all(|n| *n != target)
    });
    assert!(live_pods(&cluster, "web").iter().all(|p| node_of(p) != target));
    eventually("the budget restored", WAIT, || pdb_status(&cluster, "web", "disruptionsAllowed") == 1);

    // A budget allowing no disruption: drain reports kube's error and the pod stays.
    cluster.kubectl(&["create", "deployment", "solo", "--image=127.0.0.1:1/none:1", "--replicas=1"]);
    eventually("a Ready solo pod", WAIT, || ready_on(&cluster, "solo").len() == 1);
    cluster.kubectl(&["create", "pdb", "solo", "--selector=app=solo", "--max-unavailable=0"]);
    eventually("the strict budget computed", WAIT, || {
        pdb_status(&cluster, "solo", "expectedPods") == 1 && pdb_status(&cluster, "solo", "currentHealthy") == 1
    });
    assert_eq!(pdb_status(&cluster, "solo", "disruptionsAllowed"), 0);
    let solo = live_pods(&cluster, "solo").first().cloned().unwrap_or_default();
    let (solo_name, solo_node) = (solo["metadata"]["name"].as_str().unwrap_or_default().to_string(), node_of(&solo));
    let refused = cluster.kubectl_output(
        &["drain", &solo_node, "--ignore-daemonsets", "--pod-selector=app=solo", "--timeout=12s"],
        None,
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "drain should fail: {err}");
    assert!(
        err.contains(&format!("error when evicting pods/\"{solo_name}\" -n \"default\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.")),
        "{err}"
    );
    let still = cluster.get_json(&["pod", &solo_name]);
    assert!(still["metadata"]["deletionTimestamp"].is_null(), "the pod stays: {still}");
    assert_eq!(pdb_status(&cluster, "solo", "disruptionsAllowed"), 0);

    // Uncordon both nodes.
    for node in [&target, &solo_node] {
        let out = cluster.kubectl(&["uncordon", node]);
        assert!(out.contains(&format!("node/{node} uncordoned")) || out.contains("already uncordoned"), "{out}");
        assert_ne!(cluster.get_json(&["node", node])["spec"]["unschedulable"], true);
    }
    let table = cluster.kubectl(&["get", "pdb"]);
    let solo_row: Vec<&str> =
        table.lines().find(|l| l.starts_with("solo")).unwrap_or_default().split_whitespace().collect();
    assert_eq!(solo_row[..4], ["solo", "N/A", "0", "0"], "{table}");
}
