//! Jobs, CronJobs, DaemonSets and StatefulSets on a real node: the real kubectl, Wasm images in a
//! real registry on loopback, the controllers of `skiff server`.
//!
//! The controllers under test: `control/src/controllers/{job,cronjob,daemonset,statefulset}`.

mod common;

use std::time::Duration;

use common::node::Registry;
use common::{eventually, Cluster};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

fn jsonpath(c: &Cluster, args: &[&str], path: &str) -> String {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let jp = format!("jsonpath={path}");
    all.extend_from_slice(&["-o", &jp]);
    String::from_utf8_lossy(&c.kubectl_output(&all, None).stdout).into_owned()
}

fn pods_of(c: &Cluster, selector: &str) -> Vec<Value> {
    c.get_json(&["pods", "-l", selector])["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_job_runs_to_completion_and_a_crashing_job_stops_at_its_backoff_limit() {
    let c = Cluster::with_node();
    let registry = Registry::start();
    let hello = registry.push("hello", "1");
    let crasher = registry.push("crasher", "1");

    let job = format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: count\nspec:\n  completions: 3\n  parallelism: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: hello\n        image: {hello}\n"
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&job));
    let out = c.kubectl(&["wait", "--for=condition=complete", "job/count", "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");
    let j = c.get_json(&["job", "count"]);
    assert_eq!(j["status"]["succeeded"], 3, "{j}");
    assert!(j["status"]["completionTime"].is_string(), "{j}");
    let pods = pods_of(&c, "batch.kubernetes.io/job-name=count");
    assert_eq!(pods.len(), 3, "exactly completions pods ran");
    for p in &pods {
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(p["status"]["phase"], "Succeeded");
        let finalizers = p["metadata"]["finalizers"].as_array().map_or(0, Vec::len);
        assert_eq!(finalizers, 0, "counted pods lose the tracking finalizer: {p}");
    }
    let table = c.kubectl(&["get", "jobs"]);
    assert!(table.contains("count") && table.contains("3/3"), "{table}");

    // A crash-looping Job: backoffLimit 1 -> two failed pods, then Failed.
    let bad = format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: crash\nspec:\n  backoffLimit: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: crasher\n        image: {crasher}\n"
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&bad));
    let out = c.kubectl(&["wait", "--for=condition=failed", "job/crash", "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");
    let j = c.get_json(&["job", "crash"]);
    assert_eq!(j["status"]["failed"], 2, "{j}");
    let failed = j["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Failed").cloned());
    assert_eq!(failed.expect("Failed condition")["reason"], "BackoffLimitExceeded");
    assert_eq!(pods_of(&c, "batch.kubernetes.io/job-name=crash").len(), 2, "no pod after the limit");
}

#[test]
fn cronjob_schedules_are_validated_and_jobs_start_from_them() {
    let c = Cluster::start();
    let image = "127.0.0.1:5000/hello:1";
    let err =
        c.kubectl_fails(&["create", "cronjob", "bad", &format!("--image={image}"), "--schedule=not a schedule"], None);
    assert!(err.contains("spec.schedule: Invalid value: \"not a schedule\""), "{err}");
    let tz = format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: tz\nspec:\n  schedule: '0 9 * * *'\n  timeZone: Mars/Olympus\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers:\n          - name: c\n            image: {image}\n"
    );
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&tz));
    assert!(err.contains("spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"), "{err}");
    let good = tz.replace("Mars/Olympus", "Europe/Berlin");
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&good));
    assert_eq!(c.get_json(&["cronjob", "tz"])["spec"]["timeZone"], "Europe/Berlin");

    c.kubectl(&["create", "cronjob", "tick", &format!("--image={image}"), "--schedule=*/1 * * * *"]);
    let out = c.kubectl(&["create", "job", "manual", "--from=cronjob/tick"]);
    assert!(out.contains("job.batch/manual created"), "{out}");
    let j = c.get_json(&["job", "manual"]);
    assert_eq!(j["spec"]["template"]["spec"]["containers"][0]["image"], image);
    assert_eq!(j["metadata"]["ownerReferences"][0]["kind"], "CronJob");
}

#[test]
fn a_daemonset_runs_one_pod_on_the_node_and_a_statefulset_orders_its_pods() {
    let c = Cluster::with_node();
    c.wait_node_ready();
    let registry = Registry::start();
    let http = registry.push("hello-http", "1");
    let node = c.node_name();

    let ds = format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels: {{app: agent}}\n  template:\n    metadata:\n      labels: {{app: agent}}\n    spec:\n      containers:\n      - name: web\n        image: {http}\n        ports: [{{containerPort: 8080}}]\n"
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&ds));
    let out = c.kubectl(&["rollout", "status", "ds/agent", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = pods_of(&c, "app=agent");
    assert_eq!(pods.len(), 1, "one pod per node");
    assert_eq!(pods[0]["spec"]["nodeName"], node.as_str());
    assert!(pods[0]["metadata"]["labels"]["controller-revision-hash"].is_string());
    let status = c.get_json(&["ds", "agent"])["status"].clone();
    assert_eq!(status["desiredNumberScheduled"], 1, "{status}");
    assert_eq!(status["numberReady"], 1, "{status}");

    let sts = format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  replicas: 3\n  selector:\n    matchLabels: {{app: db}}\n  template:\n    metadata:\n      labels: {{app: db}}\n    spec:\n      containers:\n      - name: web\n        image: {http}\n        ports: [{{containerPort: 8080}}]\n"
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&sts));
    let out = c.kubectl(&["rollout", "status", "sts/db", "--timeout=120s"]);
    assert!(out.contains("roll out complete") || out.contains("rolling update complete"), "{out}");
    let mut pods = pods_of(&c, "app=db");
    pods.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string());
    let names: Vec<&str> = pods.iter().filter_map(|p| p["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    // Ordered: each pod was created after its predecessor was ready.
    let created = |i: usize| pods[i]["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string();
    assert!(created(0) <= created(1) && created(1) <= created(2), "{pods:?}");
    assert_eq!(pods[1]["spec"]["hostname"], "db-1");
    assert_eq!(pods[1]["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], "db-1");

    // Scale down removes the highest ordinal; the name of a deleted pod comes back.
    c.kubectl(&["scale", "sts/db", "--replicas=2"]);
    eventually("db-2 removed", WAIT, || {
        jsonpath(&c, &["pods", "-l", "app=db"], "{.items[*].metadata.name}") == "db-0 db-1"
    });
    c.kubectl(&["delete", "pod", "db-0", "--wait=false"]);
    eventually("db-0 back and ready", WAIT, || {
        jsonpath(&c, &["sts", "db"], "{.status.readyReplicas}") == "2"
            && jsonpath(&c, &["pod", "db-0"], "{.metadata.deletionTimestamp}").is_empty()
    });
    c.kubectl(&["delete", "sts", "db"]);
    c.kubectl(&["delete", "ds", "agent"]);
    eventually("daemon and stateful pods gone", WAIT, || {
        jsonpath(&c, &["pods"], "{.items[*].metadata.name}").is_empty()
    });
}
