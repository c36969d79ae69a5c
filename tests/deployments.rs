//! Deployments, ReplicaSets and ReplicationControllers end to end: the real kubectl against a
//! real server whose in-process node runs Wasm pods pulled from a loopback registry.

mod common;

use std::time::Duration;

use common::node::Registry;
use common::{eventually, Cluster};
use serde_json::Value;

const ROLLOUT: &str = "--timeout=180s";

fn deployment(name: &str, replicas: u32, image: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n{extra_spec}  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: web\n        image: {image}\n        ports:\n        - containerPort: 8080\n        readinessProbe:\n          httpGet: {{path: /healthz, port: 8080}}\n          periodSeconds: 1\n"
    )
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

fn replica_sets(cluster: &Cluster, app: &str) -> Vec<Value> {
    cluster.get_json(&["rs", "-l", &format!("app={app}")])["items"].as_array().cloned().unwrap_or_default()
}

fn image_of(obj: &Value) -> String {
    obj["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_string()
}

fn rs_with_image(cluster: &Cluster, app: &str, image: &str) -> Vec<Value> {
    replica_sets(cluster, app).into_iter().filter(|rs| image_of(rs) == image).collect()
}

fn rollout_status(cluster: &Cluster, name: &str) {
    let out = cluster.kubectl(&["rollout", "status", &format!("deploy/{name}"), ROLLOUT]);
    assert!(out.contains("successfully rolled out"), "{out}");
}

#[test]
fn deployment_rolls_out_updates_undoes_restarts_scales_pauses_and_cascades() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let (v1, v2) = (registry.push("hello-http", "1"), registry.push("hello-http", "2"));

    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&deployment("web", 3, &v1, "")));
    rollout_status(&cluster, "web");
    let listing = cluster.kubectl(&["get", "deploy,rs,pods", "-o", "wide"]);
    assert!(listing.contains("deployment.apps/web") && listing.contains("3/3"), "{listing}");
    let d = cluster.get_json(&["deploy", "web"]);
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    let sets = replica_sets(&cluster, "web");
    assert_eq!(sets.len(), 1, "{sets:?}");
    let hash = sets[0]["metadata"]["labels"]["pod-template-hash"].as_str().unwrap_or_default().to_string();
    assert_eq!(sets[0]["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(sets[0]["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    let pods = live_pods(&cluster, "web");
    assert_eq!(pods.len(), 3);
    assert!(pods
        .iter()
        .all(|p| p["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(&format!("web-{hash}-")))));

    // A new image: a new ReplicaSet takes over, the old one is scaled to zero.
    cluster.kubectl(&["set", "image", "deploy/web", &format!("web={v2}")]);
    rollout_status(&cluster, "web");
    let new = rs_with_image(&cluster, "web", &v2);
    let old = rs_with_image(&cluster, "web", &v1);
    assert_eq!((new.len(), old.len()), (1, 1));
    assert_eq!(new[0]["spec"]["replicas"], 3);
    assert_eq!(old[0]["spec"]["replicas"], 0);
    assert_eq!(new[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2");
    eventually("old pods gone", Duration::from_secs(60), || {
        live_pods(&cluster, "web").iter().all(|p| p["spec"]["containers"][0]["image"] == v2.as_str())
    });

    let history = cluster.kubectl(&["rollout", "history", "deploy/web"]);
    assert!(history.contains("REVISION") && history.contains('1') && history.contains('2'), "{history}");

    // Undo: back to the first template, whose ReplicaSet is reused as revision 3.
    cluster.kubectl(&["rollout", "undo", "deploy/web"]);
    rollout_status(&cluster, "web");
    let d = cluster.get_json(&["deploy", "web"]);
    assert_eq!(image_of(&d), v1);
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");
    let back = rs_with_image(&cluster, "web", &v1);
    assert_eq!(back.len(), 1, "the old ReplicaSet is reused");
    assert_eq!(back[0]["spec"]["replicas"], 3);
    assert_eq!(back[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"], "1");

    // Restart: a template annotation change rolls out a new ReplicaSet with the same image.
    cluster.kubectl(&["rollout", "restart", "deploy/web"]);
    rollout_status(&cluster, "web");
    assert_eq!(rs_with_image(&cluster, "web", &v1).len(), 2);

    cluster.kubectl(&["scale", "deploy/web", "--replicas=5"]);
    rollout_status(&cluster, "web");
    assert_eq!(cluster.get_json(&["deploy", "web"])["status"]["availableReplicas"], 5);

    // Paused: a template change rolls nothing out until resumed.
    cluster.kubectl(&["rollout", "pause", "deploy/web"]);
    let sets_before = replica_sets(&cluster, "web").len();
    cluster.kubectl(&["set", "image", "deploy/web", &format!("web={v2}")]);
    eventually("Progressing says DeploymentPaused", Duration::from_secs(30), || {
        let d = cluster.get_json(&["deploy", "web"]);
        d["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused"))
            && d["status"]["observedGeneration"] == d["metadata"]["generation"]
    });
    assert_eq!(replica_sets(&cluster, "web").len(), sets_before, "a paused deployment rolled out");
    cluster.kubectl(&["rollout", "resume", "deploy/web"]);
    rollout_status(&cluster, "web");
    let current = rs_with_image(&cluster, "web", &v2);
    assert!(current.iter().any(|rs| rs["spec"]["replicas"] == 5), "{current:?}");

    // A deleted pod is replaced.
    let pods = live_pods(&cluster, "web");
    let victim = pods[0]["metadata"]["name"].as_str().unwrap_or_default().to_string();
    cluster.kubectl(&["delete", "pod", &victim, "--wait=false"]);
    eventually("the pod replaced", Duration::from_secs(60), || {
        let pods = live_pods(&cluster, "web");
        pods.len() == 5 && pods.iter().all(|p| p["metadata"]["name"] != victim.as_str())
    });
    rollout_status(&cluster, "web");

    // Cascading delete: the garbage collector removes the ReplicaSets and their pods.
    cluster.kubectl(&["delete", "deploy", "web"]);
    eventually("ReplicaSets and pods gone", Duration::from_secs(90), || {
        replica_sets(&cluster, "web").is_empty()
            && cluster.get_json(&["pods", "-l", "app=web"])["items"].as_array().is_some_and(Vec::is_empty)
    });
}

#[test]
fn a_missing_image_stalls_without_losing_old_replicas_and_an_rc_keeps_its_pods() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let v1 = registry.push("hello-http", "1");
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&deployment("stall", 2, &v1, "  progressDeadlineSeconds: 8\n")));
    rollout_status(&cluster, "stall");
    let missing = format!("{}/no-such-image:1", registry.addr);
    cluster.kubectl(&["set", "image", "deploy/stall", &format!("web={missing}")]);
    let out = cluster.kubectl_output(&["rollout", "status", "deploy/stall", ROLLOUT], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rollout status succeeded on a missing image");
    assert!(stderr.contains("exceeded its progress deadline"), "{stderr}");
    let d = cluster.get_json(&["deploy", "stall"]);
    let conditions = d["status"]["conditions"].as_array().cloned().unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Progressing" && c["status"] == "False" && c["reason"] == "ProgressDeadlineExceeded"),
        "{conditions:?}"
    );
    assert!(conditions.iter().any(|c| c["type"] == "Available" && c["status"] == "True"), "{conditions:?}");
    let old = rs_with_image(&cluster, "stall", &v1);
    assert_eq!(old.len(), 1);
    assert_eq!(old[0]["status"]["availableReplicas"], 2, "the old replicas were lost");

    // A ReplicationController of two.
    let rc = format!(
        "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: legacy\nspec:\n  replicas: 2\n  selector: {{app: legacy}}\n  template:\n    metadata:\n      labels: {{app: legacy}}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: web\n        image: {v1}\n        readinessProbe:\n          httpGet: {{path: /healthz, port: 8080}}\n          periodSeconds: 1\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&rc));
    eventually("the RC ready", Duration::from_secs(90), || {
        cluster.get_json(&["rc", "legacy"])["status"]["readyReplicas"] == 2
    });
    let pods = live_pods(&cluster, "legacy");
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| p["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController"));
    let victim = pods[0]["metadata"]["name"].as_str().unwrap_or_default().to_string();
    cluster.kubectl(&["delete", "pod", &victim, "--wait=false"]);
    eventually("the RC's pod replaced and ready", Duration::from_secs(90), || {
        let pods = live_pods(&cluster, "legacy");
        pods.len() == 2
            && pods.iter().all(|p| p["metadata"]["name"] != victim.as_str())
            && cluster.get_json(&["rc", "legacy"])["status"]["readyReplicas"] == 2
    });
    let listing = cluster.kubectl(&["get", "rc", "legacy"]);
    assert!(listing.contains("legacy"), "{listing}");
}

#[test]
fn replica_sets_adopt_release_and_scale_and_controllers_show_in_readyz_and_metrics() {
    let cluster = Cluster::start();
    let orphan = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: orphan\n  labels: {app: rs}\nspec:\n  containers:\n  - name: c\n    image: example/none:1\n";
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(orphan));
    let rs = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: rs\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: rs}\n  template:\n    metadata:\n      labels: {app: rs}\n    spec:\n      containers:\n      - name: c\n        image: example/none:1\n";
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(rs));
    eventually("three pods, the orphan adopted", Duration::from_secs(30), || {
        let pods = live_pods(&cluster, "rs");
        pods.len() == 3 && pods.iter().all(|p| p["metadata"]["ownerReferences"][0]["name"] == "rs")
    });
    let status = cluster.get_json(&["rs", "rs"])["status"].clone();
    assert_eq!(status["replicas"], 3);
    assert_eq!(status["readyReplicas"], 0);
    assert_eq!(status["observedGeneration"], 1);

    // A pod relabelled away is released and replaced.
    cluster.kubectl(&["label", "pod", "orphan", "app=gone", "--overwrite"]);
    eventually("the pod released and replaced", Duration::from_secs(30), || {
        let released = cluster.get_json(&["pod", "orphan"]);
        released["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty)
            && live_pods(&cluster, "rs").len() == 3
    });

    cluster.kubectl(&["scale", "rs/rs", "--replicas=1"]);
    eventually("scaled down to one", Duration::from_secs(30), || live_pods(&cluster, "rs").len() == 1);

    let (code, body) = cluster.curl("GET", "/readyz?verbose", "application/json", None);
    assert_eq!(code, 200, "{body}");
    for line in
        ["[+]controller-replicaset ok", "[+]controller-deployment ok", "[+]informer-pod ok", "readyz check passed"]
    {
        assert!(body.contains(line), "{line} missing from {body}");
    }
    let (code, metrics) = cluster.curl("GET", "/metrics", "text/plain", None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("skiff_controller_reconciles_total{name=\"controller-replicaset\",result=\"success\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("workqueue_depth{name=\"controller-replicaset\"}"), "{metrics}");
    assert!(
        metrics.contains("skiff_controller_reconcile_duration_seconds_count{name=\"controller-replicaset\"}"),
        "{metrics}"
    );
}

/// `--disable-scheduler` and `--disable-controller-manager` (as k3s) leave only the API server's
/// own tasks running; a default server runs the scheduler and the controllers.
#[test]
fn disabled_components_do_not_run() {
    let tasks = |cluster: &Cluster| {
        let (code, body) = cluster.curl("GET", "/readyz?verbose", "application/json", None);
        assert_eq!(code, 200, "{body}");
        body
    };
    let full = Cluster::start();
    let body = tasks(&full);
    for task in ["[+]scheduler ok", "[+]controller-deployment ok", "[+]controller-garbage-collector ok"] {
        assert!(body.contains(task), "a default server runs {task}: {body}");
    }
    drop(full);

    let bare = Cluster::start_with_args(&["--disable-scheduler", "--disable-controller-manager"]);
    let body = tasks(&bare);
    assert!(body.contains("[+]compaction ok"), "the API server's own tasks run: {body}");
    for task in ["scheduler", "controller-deployment", "controller-garbage-collector", "controller-namespace"] {
        assert!(!body.contains(&format!("[+]{task} ok")), "{task} must not run: {body}");
    }
    // The API itself is whole: a Deployment is stored and served.
    bare.kubectl(&["create", "deployment", "web", "--image=registry.k8s.io/pause:3.10"]);
    assert_eq!(bare.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.metadata.name}"]), "web");
}
