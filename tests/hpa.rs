//! End to end: the HorizontalPodAutoscaler controller with kubectl 1.32 on real busybox pods in
//! containerd/runc, measured through the kubelet's `/stats/summary` (the source
//! `metrics.k8s.io/v1beta1` serves from). `kubectl autoscale` makes an autoscaling/v2 HPA (kubectl
//! 1.33 writes v2 first; 1.32 writes autoscaling/v1, served from the same v2 storage); the pods
//! burn CPU while a file exists in a hostPath directory the test owns: the HPA scales the
//! Deployment up to its maximum, and once the file is gone back down to its minimum.
//!
//! Needs root, containerd, runc, the CNI plugins, docker-registry, umoci, skopeo and
//! busybox-static (as tests/top.rs).

mod common;

use std::process::Command;
use std::time::Duration;

use common::linux::LinuxCluster;
use common::{eventually, Cluster};

const WAIT: Duration = Duration::from_secs(180);

/// Deletes what the test made in the cluster, also when it fails.
struct Cleanup<'a>(&'a Cluster);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl_output(&["delete", "hpa", "burn", "--ignore-not-found"], None);
        let _ = self.0.kubectl_output(&["delete", "deployment", "burn", "--wait=true", "--timeout=60s"], None);
        let _ = self.0.kubectl_output(&["delete", "pods", "-l", "app=burn", "--wait=true", "--timeout=60s"], None);
    }
}

/// `kubectl autoscale` of kubectl 1.33, the first to write autoscaling/v2.
fn autoscale(c: &Cluster, args: &[&str]) {
    let out = Command::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .arg("autoscale")
        .args(args)
        .env("HOME", c.dir.path())
        .output()
        .expect("run kubectl 1.33");
    assert!(out.status.success(), "kubectl autoscale: {}", String::from_utf8_lossy(&out.stderr));
}

fn replicas(c: &Cluster) -> String {
    c.kubectl(&["get", "deployment", "burn", "-o", "jsonpath={.spec.replicas}"])
}

#[test]
fn hpa_scales_a_deployment_up_under_load_and_back_down() {
    let s = LinuxCluster::start_linux_with(
        "skiff-hpa",
        vec!["--horizontal-pod-autoscaler-sync-period".into(), "2s".into()],
    );
    let c = &s.cluster;
    let _cleanup = Cleanup(c);
    // The switch: pods burn CPU while `burn` exists in this directory (mounted as /ctl).
    let control = s.work.path().join("control");
    std::fs::create_dir_all(&control).expect("control dir");
    let switch = control.join("burn");
    std::fs::write(&switch, b"on").expect("switch on");
    // Each pod may use 100m (its cgroup quota): 200% of its 50m request while burning.
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: burn}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: burn}}}}\n  template:\n    metadata: {{labels: {{app: burn}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      volumes: [{{name: ctl, hostPath: {{path: {}}}}}]\n      containers:\n      - name: burn\n        image: busybox\n        command: [sh, -c, \"while true; do while [ -f /ctl/burn ]; do :; done; sleep 1; done\"]\n        resources: {{requests: {{cpu: 50m}}, limits: {{cpu: 100m}}}}\n        volumeMounts: [{{name: ctl, mountPath: /ctl}}]\n",
        control.display()
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    eventually("the first pod is available", WAIT, || {
        c.kubectl_output(&["get", "deployment", "burn", "-o", "jsonpath={.status.availableReplicas}"], None).stdout
            == b"1"
    });

    // An autoscaling/v2 HPA; the scale-down window is made short for the test.
    autoscale(c, &["deployment", "burn", "--cpu-percent=50", "--min=1", "--max=3"]);
    let hpa = c.get_json(&["hpa", "burn"]);
    assert_eq!(hpa["apiVersion"], "autoscaling/v2", "{hpa}");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50, "{hpa}");
    c.kubectl(&[
        "patch",
        "hpa",
        "burn",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":5}}}}"#,
    ]);

    // Under load it scales up to the maximum.
    eventually("the HPA scales the Deployment up to 3", WAIT, || replicas(c) == "3");
    // The scale is written first, then the event, then the HPA's status.
    eventually("the HPA's status after the scale-up", WAIT, || {
        c.get_json(&["hpa", "burn"])["status"]["desiredReplicas"] == 3
    });
    let get = c.kubectl(&["get", "hpa", "burn"]);
    let header: Vec<&str> = get.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"], "{get}");
    let row = get.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with("burn") && row.contains("Deployment/burn") && row.contains("%/50%"), "{get}");
    let status = c.get_json(&["hpa", "burn"])["status"].clone();
    assert!(status["lastScaleTime"].is_string(), "{status}");
    let utilization = status["currentMetrics"][0]["resource"]["current"]["averageUtilization"].as_i64();
    assert!(utilization.is_some_and(|u| u > 50), "{status}");
    let describe = c.kubectl(&["describe", "hpa", "burn"]);
    for expected in [
        "Conditions:",
        "AbleToScale",
        "ScalingActive",
        "ValidMetricFound",
        "SuccessfulRescale",
        "New size: 3; reason: cpu resource utilization (percentage of request) above target",
    ] {
        assert!(describe.contains(expected), "{expected} missing in:\n{describe}");
    }
    eventually("the three pods are available", WAIT, || {
        c.kubectl_output(&["get", "deployment", "burn", "-o", "jsonpath={.status.availableReplicas}"], None).stdout
            == b"3"
    });

    // The load stops: back down to the minimum once the window has passed.
    std::fs::remove_file(&switch).expect("switch off");
    eventually("the HPA scales the Deployment back down to 1", WAIT, || replicas(c) == "1");
    eventually("the scale-down event and status", WAIT, || {
        let describe = c.kubectl(&["describe", "hpa", "burn"]);
        describe.contains("New size: 1; reason: All metrics below target")
            && c.get_json(&["hpa", "burn"])["status"]["desiredReplicas"] == 1
    });
}

#[test]
fn hpa_without_metrics_says_why() {
    // A control plane without a node: no pod ever runs, so no metrics; the HPA says so as kube's
    // does, and an HPA on a missing target reports FailedGetScale.
    let c = Cluster::start_with_args(&["--horizontal-pod-autoscaler-sync-period", "1s"]);
    c.kubectl(&["create", "deployment", "idle", "--image=busybox", "--replicas=2"]);
    autoscale(&c, &["deployment", "idle", "--cpu-percent=50", "--min=1", "--max=4"]);
    eventually("FailedGetResourceMetric", WAIT, || {
        let status = c.get_json(&["hpa", "idle"])["status"].clone();
        status["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "ScalingActive"
                    && c["reason"] == "FailedGetResourceMetric"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("the HPA was unable to compute the replica count"))
            })
        })
    });
    assert_eq!(c.kubectl(&["get", "deployment", "idle", "-o", "jsonpath={.spec.replicas}"]), "2");
    let get = c.kubectl(&["get", "hpa", "idle"]);
    assert!(get.contains("cpu: <unknown>/50%"), "{get}");
    let ghost = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: ghost}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ghost}\n  maxReplicas: 2\n";
    c.kubectl_stdin(&["apply", "-f", "-"], Some(ghost));
    // Bounds are validated as kube validates them.
    let inverted = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: inverted}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: idle}\n  minReplicas: 5\n  maxReplicas: 3\n";
    let refused = c.kubectl_fails(&["apply", "-f", "-"], Some(inverted));
    assert!(
        refused.contains("spec.maxReplicas: Invalid value: 3: must be greater than or equal to `minReplicas`"),
        "{refused}"
    );
    eventually("FailedGetScale", WAIT, || {
        let describe = c.kubectl(&["describe", "hpa", "ghost"]);
        describe.contains("FailedGetScale")
    });
}

#[test]
fn autoscaling_v1_from_kubectl_1_32_is_served_beside_v2() {
    // kubectl 1.32 (the harness's default) writes autoscaling/v1; it is stored as v2 and read in
    // either version.
    let c = Cluster::start();
    c.kubectl(&["create", "deployment", "x", "--image=busybox"]);
    let out = c.kubectl(&["autoscale", "deploy/x", "--min=1", "--max=3", "--cpu-percent=50"]);
    assert!(out.contains("horizontalpodautoscaler.autoscaling/x autoscaled"), "{out}");
    let get = c.kubectl(&["get", "hpa"]);
    assert!(get.contains("Deployment/x") && get.contains("50%"), "{get}");

    let v2 = c.get_json(&["hpa", "x"]);
    assert_eq!(v2["apiVersion"], "autoscaling/v2", "{v2}");
    assert_eq!(
        v2["spec"]["metrics"],
        serde_json::json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}]),
        "{v2}"
    );
    let v1 = c.get_json(&["horizontalpodautoscalers.v1.autoscaling", "x"]);
    assert_eq!(v1["apiVersion"], "autoscaling/v1", "{v1}");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50, "{v1}");
    assert_eq!(v1["spec"]["maxReplicas"], 3, "{v1}");

    // Discovery lists both versions, v2 preferred.
    let group: serde_json::Value =
        serde_json::from_str(&c.kubectl(&["get", "--raw", "/apis/autoscaling"])).expect("APIGroup");
    assert_eq!(group["preferredVersion"]["version"], "v2", "{group}");
    let versions: Vec<&str> =
        group["versions"].as_array().into_iter().flatten().filter_map(|v| v["version"].as_str()).collect();
    assert_eq!(versions, ["v2", "v1"], "{group}");
    let v1_list: serde_json::Value = serde_json::from_str(&c.kubectl(&[
        "get",
        "--raw",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
    ]))
    .expect("list");
    assert_eq!(v1_list["kind"], "HorizontalPodAutoscalerList", "{v1_list}");
    assert_eq!(v1_list["items"][0]["spec"]["targetCPUUtilizationPercentage"], 50, "{v1_list}");

    // A metric v1 cannot say survives a write through v1 (it rides in an annotation).
    let memory = r#"{"spec":{"metrics":[
        {"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":50}}},
        {"type":"Resource","resource":{"name":"memory","target":{"type":"AverageValue","averageValue":"100Mi"}}}]}}"#;
    c.kubectl(&["patch", "horizontalpodautoscalers.v2.autoscaling", "x", "--type=merge", "-p", memory]);
    c.kubectl(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "x",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxReplicas":5}}"#,
    ]);
    let v2 = c.get_json(&["hpa", "x"]);
    assert_eq!(v2["spec"]["maxReplicas"], 5, "{v2}");
    assert_eq!(v2["spec"]["metrics"][1]["resource"]["name"], "memory", "{v2}");
    assert!(v2["metadata"]["annotations"].get("autoscaling.alpha.kubernetes.io/metrics").is_none(), "{v2}");

    // Validation happens in v1 too, with kube's message.
    let bad = "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: bad}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: x}\n  minReplicas: 4\n  maxReplicas: 2\n";
    let refused = c.kubectl_fails(&["create", "-f", "-"], Some(bad));
    assert!(refused.contains("must be greater than or equal to `minReplicas`"), "{refused}");
    c.kubectl(&["delete", "hpa", "x"]);
    let left = c.kubectl(&["get", "horizontalpodautoscalers.v1.autoscaling", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
}
