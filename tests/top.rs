//! End to end: `kubectl top` (kubectl 1.32) on the API server's own `metrics.k8s.io/v1beta1`, fed by the
//! kubelets' `/stats/summary`: a Wasm container measured by the engine (a busy guest's CPU, a growing
//! guest's memory) next to a Linux container measured from its cgroup; `kubectl get --raw
//! /api/v1/nodes/<node>/proxy/stats/summary` through the API server's mutual-TLS client, and RBAC's
//! `nodes/proxy`.
//!
//! The first test needs root, containerd, runc, the CNI plugins, docker-registry, umoci, skopeo and
//! busybox-static (as tests/exec.rs).

mod common;

use std::time::Duration;

use common::linux::LinuxCluster;
use common::{eventually, Cluster};

const WAIT: Duration = Duration::from_secs(120);

/// A row of `kubectl top pods -A --containers`: (namespace, pod, container, millicores, MiB).
fn rows(out: &str) -> Vec<(String, String, String, u64, u64)> {
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [ns, pod, container, cpu, memory] = f.as_slice() else { return None };
            Some((ns.to_string(), pod.to_string(), container.to_string(), millis(cpu)?, mebibytes(memory)?))
        })
        .collect()
}

fn millis(cpu: &str) -> Option<u64> {
    cpu.strip_suffix('m').unwrap_or(cpu).parse().ok()
}

fn mebibytes(memory: &str) -> Option<u64> {
    memory.strip_suffix("Mi").unwrap_or(memory).parse().ok()
}

fn raw(c: &Cluster, path: &str) -> serde_json::Value {
    serde_json::from_str(&c.kubectl(&["get", "--raw", path])).expect("json")
}

fn pods(c: &Cluster, manifest: &str, names: &[&str]) {
    c.kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
    for name in names {
        eventually(&format!("pod {name} running"), WAIT, || {
            c.kubectl_output(&["get", "pod", name, "-o", "jsonpath={.status.phase}"], None).stdout == b"Running"
        });
    }
}

struct Cleanup<'a>(&'a Cluster);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl_output(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"], None);
    }
}

#[test]
fn kubectl_top_shows_wasm_and_linux_containers() {
    let s = LinuxCluster::start_linux("skiff-top");
    let c = &s.cluster;
    let _cleanup = Cleanup(c);
    let busy = s.registry.push("busy-loop", "1");
    let hog = s.registry.push("memory-hog", "1");
    // The busy guest gets 200m: its CPU is measured (thread CPU time), and bounded by the share. The hog
    // gets 10m of CPU so it grows slowly towards its 256Mi limit.
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: busy, labels: {{app: busy}}}}\nspec:\n  containers:\n  - name: spin\n    image: {busy}\n    resources: {{limits: {{cpu: 200m}}}}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: hog}}\nspec:\n  containers:\n  - name: grow\n    image: {hog}\n    resources: {{limits: {{cpu: 10m, memory: 256Mi}}}}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: burn}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: loop\n    image: busybox\n    command: [sh, -c, \"while :; do :; done\"]\n    resources: {{limits: {{cpu: 100m}}}}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: box}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: shell\n    image: busybox\n    command: [sh, -c, \"while true; do i=0; while [ $i -lt 5000 ]; do i=$((i+1)); done; sleep 1; done\"]\n"
    );
    pods(c, &manifest, &["busy", "hog", "box", "burn"]);
    let node = c.node_name();

    // The kubelet's summary through nodes/proxy: the node, and each container with CPU and memory.
    let summary = raw(c, &format!("/api/v1/nodes/{node}/proxy/stats/summary"));
    assert_eq!(summary["node"]["nodeName"], node.as_str());
    assert!(summary["node"]["cpu"]["usageCoreNanoSeconds"].as_u64().is_some_and(|n| n > 0), "{summary}");
    assert!(summary["node"]["memory"]["workingSetBytes"].as_u64().is_some_and(|n| n > 0), "{summary}");
    assert!(summary["node"]["fs"]["capacityBytes"].as_u64().is_some_and(|n| n > 0), "{summary}");
    let container = |summary: &serde_json::Value, pod: &str| -> serde_json::Value {
        let pods = summary["pods"].as_array().cloned().unwrap_or_default();
        let found = pods.into_iter().find(|p| p["podRef"]["name"] == pod && p["podRef"]["namespace"] == "default");
        found.map(|p| p["containers"][0].clone()).unwrap_or_default()
    };
    let spin = container(&summary, "busy");
    assert_eq!(spin["name"], "spin", "{summary}");
    assert!(spin["cpu"]["usageCoreNanoSeconds"].as_u64().is_some_and(|n| n > 0), "{spin}");
    // A Rust guest's linear memory (its 1 MiB stack and data, in 64 KiB pages) and its table.
    let spin_memory = spin["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
    assert!(spin_memory > 1 << 20 && spin_memory % 65_536 > 0 && spin_memory < 4 << 20, "{spin}");
    let shell = container(&summary, "box");
    assert_eq!(shell["name"], "shell", "{summary}");
    assert!(shell["memory"]["workingSetBytes"].as_u64().is_some_and(|n| n > 0), "{shell}");
    assert!(shell["cpu"]["usageCoreNanoSeconds"].as_u64().is_some_and(|n| n > 0), "{shell}");

    // The group is discovered; kubectl top nodes has the node with its usage.
    let top = c.kubectl(&["top", "nodes"]);
    let line = top.lines().find(|l| l.starts_with(&node)).unwrap_or_else(|| panic!("{top}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    assert!(f.len() >= 5 && millis(f[1]).is_some_and(|m| m > 0) && mebibytes(f[3]).is_some_and(|m| m > 0), "{top}");

    // Pods of every namespace with their containers: the busy guest uses CPU, within its 200m share; the
    // Linux shell loop uses CPU too; the hog's memory grows past 8 MiB.
    eventually("kubectl top pods -A --containers shows every container's usage", WAIT, || {
        let top = c.kubectl(&["top", "pods", "-A", "--containers"]);
        let rows = rows(&top);
        let get = |pod: &str| rows.iter().find(|r| r.0 == "default" && r.1 == pod).cloned();
        let (Some(spin), Some(grow), Some(shell)) = (get("busy"), get("hog"), get("box")) else { return false };
        assert_eq!((spin.2.as_str(), grow.2.as_str(), shell.2.as_str()), ("spin", "grow", "shell"), "{top}");
        assert!(spin.3 <= 300, "the busy guest is bounded by its 200m share: {top}");
        assert!(spin.4 >= 1, "{top}");
        spin.3 >= 20 && shell.3 > 0 && grow.4 >= 8
    });

    // Selectors and single objects of the API itself.
    let top = c.kubectl(&["top", "pods", "-l", "app=busy"]);
    assert!(top.contains("busy") && !top.contains("hog") && !top.contains("box"), "{top}");
    let one = raw(c, "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy");
    assert_eq!((one["kind"].as_str(), one["containers"][0]["name"].as_str()), (Some("PodMetrics"), Some("spin")));
    assert!(one["window"].as_str().is_some_and(|w| w.ends_with('s')), "{one}");
    let missing = c.kubectl_fails(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope"], None);
    assert!(missing.contains("NotFound") || missing.contains("not found"), "{missing}");

    agrees_with_the_cgroup(c);
}

/// A quantity of the metrics API in base units (cores or bytes): `12345n`, `12m`, `1024Ki`, `3Mi`, `7`.
fn quantity(q: &str) -> f64 {
    let split = q.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(q.len());
    let (number, unit) = q.split_at(split);
    let scale = match unit {
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other} in {q}"),
    };
    number.parse::<f64>().unwrap_or_else(|_| panic!("number in {q}")) * scale
}

/// `kubectl top`'s figures for a Linux container agree with its own cgroup (where runc put it,
/// `/skiff/<containerd id>`): the working set within 10%, and the CPU within 10% of the cgroup's rate
/// over a span around the request. The container burns CPU under a 100m limit, so its rate is steady.
fn agrees_with_the_cgroup(c: &Cluster) {
    let id = c.kubectl(&["get", "pod", "burn", "-o", "jsonpath={.status.containerStatuses[0].containerID}"]);
    let id = id.trim().strip_prefix("containerd://").unwrap_or_else(|| panic!("container id {id}")).to_string();
    let cgroup = format!("/skiff/{id}");
    let read = || skiff_node::stats::cgroup::read(&cgroup).unwrap_or_else(|| panic!("no cgroup {cgroup}"));
    let mut last = String::new();
    let agreed = (0..10).any(|_| {
        let (before, from) = (read(), std::time::Instant::now());
        std::thread::sleep(Duration::from_secs(2));
        let metrics = raw(c, "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burn");
        let (after, span) = (read(), from.elapsed().as_secs_f64());
        let usage = &metrics["containers"][0]["usage"];
        let cpu = quantity(usage["cpu"].as_str().expect("cpu"));
        let memory = quantity(usage["memory"].as_str().expect("memory"));
        let cgroup_cpu = after.cpu_nanos.saturating_sub(before.cpu_nanos) as f64 / 1e9 / span;
        let cgroup_memory = after.working_set as f64;
        last = format!("metrics cpu {cpu:.4} memory {memory}; cgroup cpu {cgroup_cpu:.4} memory {cgroup_memory}");
        (cpu - cgroup_cpu).abs() <= 0.1 * cgroup_cpu && (memory - cgroup_memory).abs() <= 0.1 * cgroup_memory
    });
    assert!(agreed, "kubectl top and the cgroup never agreed within 10% in 10 tries; last: {last}");
}

/// A pod for the node's `/pods` (never started: the image does not exist, but it is bound).
const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: lone}\nspec:\n  containers:\n  - name: c\n    image: 127.0.0.1:1/none:1\n";

#[test]
fn nodes_proxy_needs_get_on_nodes_proxy() {
    let c = Cluster::with_node();
    c.wait_node_ready();
    let node = c.node_name();
    let path = format!("/api/v1/nodes/{node}/proxy/stats/summary");
    c.kubectl(&["create", "serviceaccount", "watcher"]);
    let token = c.kubectl(&["create", "token", "watcher", "--duration=10m"]).trim().to_string();
    let denied = c.kubectl_fails(&["--token", &token, "get", "--raw", &path], None);
    assert!(denied.contains("cannot get resource \"nodes/proxy\""), "{denied}");
    let denied = c.kubectl_fails(&["--token", &token, "top", "nodes"], None);
    assert!(denied.contains("forbidden") || denied.contains("Forbidden"), "{denied}");

    c.kubectl(&["create", "clusterrole", "node-proxy", "--verb=get", "--resource=nodes/proxy"]);
    c.kubectl(&[
        "create",
        "clusterrolebinding",
        "watcher-proxy",
        "--clusterrole=node-proxy",
        "--serviceaccount=default:watcher",
    ]);
    eventually("the nodes/proxy grant applies", WAIT, || {
        c.kubectl_output(&["--token", &token, "get", "--raw", &path], None).status.success()
    });
    let healthz = c.kubectl(&["--token", &token, "get", "--raw", &format!("/api/v1/nodes/{node}/proxy/healthz")]);
    assert_eq!(healthz, "ok");
    let metrics = c.kubectl(&["get", "--raw", &format!("/api/v1/nodes/{node}/proxy/metrics")]);
    assert!(metrics.contains("skiff_node_pods"), "{metrics}");
    c.kubectl_stdin(&["apply", "-f", "-"], Some(POD));
    eventually("the kubelet lists its pod", WAIT, || {
        let out = c.kubectl_output(&["get", "--raw", &format!("/api/v1/nodes/{node}/proxy/pods")], None);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        list["kind"] == "PodList"
            && list["items"].as_array().is_some_and(|i| i.iter().any(|p| p["metadata"]["name"] == "lone"))
    });
    let _ = c.kubectl_output(&["delete", "pod", "lone", "--wait=false"], None);
    // A node that does not exist.
    let missing = c.kubectl_fails(&["get", "--raw", "/api/v1/nodes/nope/proxy/stats/summary"], None);
    assert!(missing.contains("nodes \"nope\" not found"), "{missing}");
}
