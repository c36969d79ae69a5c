//! Pod networking across nodes, end to end. Three nodes on one lab network (a bridge on this host
//! standing for a LAN): the server's own node on this host, and two agents that join with join
//! tokens, each in a network namespace of its own (its own address, bridge, routes and nftables).
//! None is given `--pod-cidr`: the server's node IPAM hands each a block of the cluster CIDR, and
//! every agent routes the other nodes' blocks to their addresses (host-gw). Pods then reach pods
//! on other nodes by pod IP, and a deleted node's route goes away.
//!
//! Needs root, the CNI plugins and docker-registry.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::node::{AgentProcess, LabNet, Registry, TestNet};
use common::{eventually, Cluster};

const WAIT: Duration = Duration::from_secs(90);

fn web_pod(name: &str, node: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: web\n    image: {image}\n    ports: [{{containerPort: 8080}}]\n    readinessProbe:\n      httpGet: {{path: /healthz, port: 8080}}\n      periodSeconds: 1\n"
    )
}

fn pod_ip(cluster: &Cluster, name: &str) -> String {
    cluster.get_json(&["pod", name])["status"]["podIP"].as_str().unwrap_or_default().to_string()
}

/// `curl` from this host (the server's node).
fn get(url: &str) -> String {
    let out = Command::new("curl").args(["-s", "--max-time", "5", url]).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The routes in `netns` that skiff's agents keep (protocol 157).
fn skiff_routes(netns: &str) -> String {
    let out = Command::new("ip").args(["-n", netns, "-4", "route", "show", "proto", "157"]).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pods_on_different_nodes_reach_each_other_through_allocated_pod_cidrs() {
    let lab = LabNet::new();
    // One test /24 is the cluster CIDR; each node gets a /26 of it.
    let cluster_cidr = TestNet::new().cidr;
    let registry = Registry::start_on(&lab.gateway);
    let insecure = ["--insecure-registry", registry.addr.as_str()];
    let mut server_args: Vec<String> =
        ["--node-ip", &lab.gateway, "--cluster-cidr", &cluster_cidr, "--node-cidr-mask-size", "26"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    server_args.extend(insecure.iter().map(|s| s.to_string()));
    let cluster = Cluster::with_allocating_node(&lab.gateway, server_args);
    let token = cluster.join_token("1h");
    let a = AgentProcess::join_in(&cluster, &token, lab.host(), &insecure);
    let b = AgentProcess::join_in(&cluster, &token, lab.host(), &insecure);
    let nodes = [cluster.node_name(), a.net.node.clone(), b.net.node.clone()];
    for node in &nodes[1..] {
        eventually(&format!("{node} Ready"), WAIT, || cluster.node_ready(node));
    }

    // Three distinct /26 blocks of the cluster CIDR, each with the annotation of its origin.
    let mut blocks = BTreeSet::new();
    for node in &nodes {
        let n = cluster.get_json(&["node", node]);
        let cidr = n["spec"]["podCIDR"].as_str().unwrap_or_default().to_string();
        assert_eq!(n["spec"]["podCIDRs"], serde_json::json!([cidr]), "{n}");
        assert_eq!(n["metadata"]["annotations"]["skiff.io/cluster-cidr"], cluster_cidr.as_str(), "{n}");
        assert!(cidr.ends_with("/26") && cidr.starts_with(cluster_cidr.trim_end_matches("0/24")), "{cidr}");
        // A /26 holds 61 pods; the node offers no more than that less its 2 pooled sandboxes.
        assert_eq!(n["status"]["capacity"]["pods"], "59", "{n}");
        blocks.insert(cidr);
    }
    assert_eq!(blocks.len(), 3, "{blocks:?}");

    // A web pod on every node; each gets an address of its node's block.
    let image = registry.push("hello-http", "1");
    for (i, node) in nodes.iter().enumerate() {
        cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&web_pod(&format!("web-{i}"), node, &image)));
    }
    for i in 0..nodes.len() {
        cluster.wait_pod_ready(&format!("web-{i}"), WAIT);
    }
    let ips: Vec<String> = (0..nodes.len()).map(|i| pod_ip(&cluster, &format!("web-{i}"))).collect();

    // This host (the server's node) reaches every pod through the routes its agent keeps.
    for ip in &ips {
        assert_eq!(get(&format!("http://{ip}:8080/")), "hello from skiff\n", "pod {ip} from the server's node");
    }
    // Pod to pod across nodes, both ways and to the server's node: the guest's outgoing request
    // leaves its pod on one node and reaches the other node's pod by its IP.
    for (from, to) in [(1, 2), (2, 1), (1, 0), (0, 2)] {
        let url = format!("http://{}:8080/fetch/{}:8080/", ips[from], ips[to]);
        assert_eq!(get(&url), "200 hello from skiff\n", "web-{from} -> web-{to}");
    }

    // A host on the LAN that is no node (it has no route to any pod CIDR) answers a pod: the
    // pod's traffic leaving the cluster is masqueraded to its node's address.
    let outsider = lab.host();
    let served = tempfile::tempdir().expect("tempdir");
    std::fs::write(served.path().join("greeting"), "hello from outside\n").expect("write");
    let _server = common::Process(Some(
        Command::new("ip")
            .args(["netns", "exec", &outsider.netns, "python3", "-m", "http.server", "8000", "--bind", &outsider.ip])
            .current_dir(served.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server"),
    ));
    let outside = format!("http://{}:8080/fetch/{}:8000/greeting", ips[2], outsider.ip);
    eventually("a pod reaching a host outside the cluster", WAIT, || get(&outside) == "200 hello from outside\n");

    // Each agent routes the two other nodes' blocks to their addresses.
    let (host_a, host_b) = (a.host().expect("lab host"), b.host().expect("lab host"));
    let a_cidr = cluster.get_json(&["node", &nodes[1]])["spec"]["podCIDR"].as_str().unwrap_or_default().to_string();
    let routes_b = skiff_routes(&host_b.netns);
    assert!(routes_b.contains(&format!("{a_cidr} via {}", host_a.ip)), "{routes_b}");
    assert_eq!(routes_b.lines().count(), 2, "{routes_b}");

    // A deleted node's route goes from the others.
    cluster.kubectl(&["delete", "pod", "web-1", "--grace-period=0", "--force"]);
    cluster.kubectl(&["delete", "node", &nodes[1]]);
    eventually("the deleted node's route gone", WAIT, || !skiff_routes(&host_b.netns).contains(&a_cidr));
    assert_eq!(skiff_routes(&host_b.netns).lines().count(), 1);
}

fn node_manifest(name: &str, pod_cidr: Option<&str>) -> String {
    let spec = pod_cidr.map(|c| format!("spec: {{podCIDR: \"{c}\"}}\n")).unwrap_or_default();
    format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n{spec}")
}

fn pod_cidr_of(cluster: &Cluster, node: &str) -> String {
    cluster.get_json(&["node", node])["spec"]["podCIDR"].as_str().unwrap_or_default().to_string()
}

#[test]
fn node_cidrs_are_never_shared_and_a_full_cluster_cidr_waits_for_a_freed_block() {
    // Two /25 blocks; a node that brings its own pod CIDR keeps it, and the block it overlaps is
    // not handed out.
    let cluster = Cluster::start_with_args(&["--cluster-cidr", "10.77.0.0/24", "--node-cidr-mask-size", "25"]);
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&node_manifest("own", Some("10.77.0.0/26"))));
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&node_manifest("first", None)));
    eventually("the first node's block", WAIT, || !pod_cidr_of(&cluster, "first").is_empty());
    assert_eq!(pod_cidr_of(&cluster, "first"), "10.77.0.128/25");
    assert_eq!(pod_cidr_of(&cluster, "own"), "10.77.0.0/26", "a given pod CIDR is kept");

    // Full: the next node waits, with an event saying so.
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&node_manifest("second", None)));
    eventually("a CIDRNotAvailable event", WAIT, || {
        let events = cluster.get_json(&["events", "--field-selector", "involvedObject.name=second"]);
        events["items"].as_array().into_iter().flatten().any(|e| e["reason"] == "CIDRNotAvailable")
    });
    assert_eq!(pod_cidr_of(&cluster, "second"), "");

    // A deleted node's block goes to the waiting one.
    cluster.kubectl(&["delete", "node", "own"]);
    eventually("the freed block allocated", WAIT, || pod_cidr_of(&cluster, "second") == "10.77.0.0/25");
    let node = cluster.get_json(&["node", "second"]);
    assert_eq!(node["metadata"]["annotations"]["skiff.io/cluster-cidr"], "10.77.0.0/24");
    assert_eq!(node["spec"]["podCIDRs"], serde_json::json!(["10.77.0.0/25"]));

    // A node deleted and made again under its name (a new uid) gets a block again.
    cluster.kubectl_stdin(&["replace", "--force", "-f", "-"], Some(&node_manifest("first", None)));
    eventually("the remade node's block", WAIT, || pod_cidr_of(&cluster, "first") == "10.77.0.128/25");
}
