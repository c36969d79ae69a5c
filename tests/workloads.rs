//! Jobs, CronJobs, DaemonSets and StatefulSets on a real node: the real kubectl, Wasm images in a
//! real registry on loopback, the controllers of `skiff server`.
//!
//! The controllers under test: `control/src/controllers/{job,cronjob,daemonset,statefulset}`.

mod common;

use std::time::Duration;

use common::node::{AgentProcess, Registry};
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

    // The imperative way: `kubectl create job` (a protobuf body) runs to completion.
    c.kubectl(&["create", "job", "pi", &format!("--image={hello}")]);
    let out = c.kubectl(&["wait", "--for=condition=complete", "job/pi", "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");
    let j = c.get_json(&["job", "pi"]);
    assert_eq!((j["status"]["succeeded"].clone(), j["status"]["active"].clone()), (1.into(), 0.into()), "{j}");
    assert!(j["status"]["startTime"].is_string() && j["status"]["completionTime"].is_string(), "{j}");

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

fn job_yaml(name: &str, image: &str, spec: &str, container: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: c\n        image: {image}\n{container}"
    )
}

fn condition(obj: &Value, kind: &str) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind && c["status"] == "True").cloned())
}

#[test]
fn indexed_suspended_deadline_and_ttl_jobs() {
    let c = Cluster::with_node();
    let registry = Registry::start();
    let hello = registry.push("hello", "1");
    let http = registry.push("hello-http", "1");

    // Indexed: each pod has its index (annotation, label, JOB_COMPLETION_INDEX).
    let indexed = job_yaml(
        "idx",
        &hello,
        "  completionMode: Indexed\n  completions: 3\n  parallelism: 3\n",
        "        args: [\"$(JOB_COMPLETION_INDEX)\"]\n",
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&indexed));
    // Suspended: no pods until resumed.
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&job_yaml("sus", &hello, "  suspend: true\n", "")));
    // A deadline on a pod that never ends.
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&job_yaml("slow", &http, "  activeDeadlineSeconds: 3\n", "")));
    // Deleted one second after it finished.
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&job_yaml("ttl", &hello, "  ttlSecondsAfterFinished: 1\n", "")));

    let out = c.kubectl(&["wait", "--for=condition=complete", "job/idx", "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");
    let j = c.get_json(&["job", "idx"]);
    assert_eq!(j["status"]["completedIndexes"], "0-2", "{j}");
    assert_eq!(j["status"]["succeeded"], 3, "{j}");
    let pods = pods_of(&c, "batch.kubernetes.io/job-name=idx");
    assert_eq!(pods.len(), 3);
    let mut seen: Vec<String> = Vec::new();
    for p in &pods {
        let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"].as_str().unwrap_or("");
        assert_eq!(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"], index, "{p}");
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        assert!(name.starts_with(&format!("idx-{index}-")), "{name}");
        let logs = c.kubectl(&["logs", name]);
        assert!(logs.contains(&format!("args: {index}")), "JOB_COMPLETION_INDEX reaches the container: {logs}");
        seen.push(index.to_string());
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);

    let sus = c.get_json(&["job", "sus"]);
    assert!(condition(&sus, "Suspended").is_some(), "{sus}");
    assert!(pods_of(&c, "batch.kubernetes.io/job-name=sus").is_empty(), "a suspended Job has no pods");
    let table = c.kubectl(&["get", "job", "sus"]);
    assert!(table.contains("Suspended"), "{table}");
    c.kubectl(&["patch", "job", "sus", "--type=merge", "-p", r#"{"spec":{"suspend":false}}"#]);
    let out = c.kubectl(&["wait", "--for=condition=complete", "job/sus", "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");

    let out = c.kubectl(&["wait", "--for=condition=failed", "job/slow", "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");
    let slow = c.get_json(&["job", "slow"]);
    assert_eq!(condition(&slow, "Failed").expect("Failed")["reason"], "DeadlineExceeded", "{slow}");
    eventually("the deadline's pod removed", WAIT, || pods_of(&c, "batch.kubernetes.io/job-name=slow").is_empty());

    eventually("the finished Job deleted after its TTL", WAIT, || {
        !c.kubectl_output(&["get", "job", "ttl"], None).status.success()
    });
    eventually("the TTL Job's pods collected", WAIT, || pods_of(&c, "batch.kubernetes.io/job-name=ttl").is_empty());
}

#[test]
fn a_cronjob_starts_jobs_on_its_schedule() {
    let c = Cluster::with_node();
    let registry = Registry::start();
    let hello = registry.push("hello", "1");
    c.kubectl(&["create", "cronjob", "tick", &format!("--image={hello}"), "--schedule=* * * * *"]);
    // The next minute starts a Job owned by the CronJob, which completes.
    eventually("a scheduled Job complete and recorded", Duration::from_secs(100), || {
        let cj = c.get_json(&["cronjob", "tick"]);
        cj["status"]["lastScheduleTime"].is_string() && cj["status"]["lastSuccessfulTime"].is_string()
    });
    let jobs = c.get_json(&["jobs"])["items"].as_array().cloned().unwrap_or_default();
    let scheduled: Vec<&Value> =
        jobs.iter().filter(|j| j["metadata"]["ownerReferences"][0]["name"] == "tick").collect();
    assert!(!scheduled.is_empty(), "{jobs:?}");
    let job = scheduled[0];
    let at = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].as_str().unwrap_or("");
    assert!(at.ends_with(":00Z"), "scheduled on a whole minute: {at}");
    assert!(condition(job, "Complete").is_some(), "{job}");
    // Finished Jobs are not active.
    eventually("no active Job listed", WAIT, || c.get_json(&["cronjob", "tick"])["status"]["active"].is_null());
    // Suspended: the CronJob reports it and starts nothing.
    c.kubectl(&["patch", "cronjob", "tick", "--type=merge", "-p", r#"{"spec":{"suspend":true}}"#]);
    let table = c.kubectl(&["get", "cronjob", "tick"]);
    assert!(table.contains("True"), "SUSPEND column: {table}");
    c.kubectl(&["delete", "cronjob", "tick"]);
    eventually("the CronJob's Jobs collected", WAIT, || {
        c.get_json(&["jobs"])["items"]
            .as_array()
            .is_none_or(|a| a.iter().all(|j| j["metadata"]["ownerReferences"][0]["name"] != "tick"))
    });
}

fn daemonset_yaml(name: &str, image: &str, selector: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n{selector}      containers:\n      - name: web\n        image: {image}\n"
    )
}

fn nodes_of(c: &Cluster, app: &str) -> Vec<String> {
    let mut nodes: Vec<String> = pods_of(c, &format!("app={app}"))
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn a_daemonset_follows_nodes_selectors_and_template_updates() {
    let c = Cluster::with_node();
    let registry = Registry::start();
    let http = registry.push("hello-http", "1");
    let http2 = registry.push("hello-http", "2");
    let first = c.node_name();

    c.kubectl_stdin(&["apply", "-f", "-"], Some(&daemonset_yaml("agent", &http, "")));
    let out = c.kubectl(&["rollout", "status", "ds/agent", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(nodes_of(&c, "agent"), [first.clone()]);
    let pod = &pods_of(&c, "app=agent")[0];
    assert!(pod["metadata"]["labels"]["controller-revision-hash"].is_string(), "{pod}");
    let tolerations = pod["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
    assert!(
        tolerations.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["operator"] == "Exists"),
        "daemon pods tolerate unreachable nodes: {pod}"
    );

    // A second node joins: the daemon follows it.
    let agent = AgentProcess::start(&c);
    let second = agent.net.node.clone();
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    eventually("a daemon pod on each node", WAIT, || nodes_of(&c, "agent") == both);
    let out = c.kubectl(&["rollout", "status", "ds/agent", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let status = c.get_json(&["ds", "agent"])["status"].clone();
    for field in
        ["desiredNumberScheduled", "currentNumberScheduled", "numberReady", "updatedNumberScheduled", "numberAvailable"]
    {
        assert_eq!(status[field], 2, "{field}: {status}");
    }
    let table = c.kubectl(&["get", "ds", "agent"]);
    assert!(table.lines().nth(1).is_some_and(|l| l.split_whitespace().filter(|w| *w == "2").count() >= 5), "{table}");

    // A nodeSelector: pods only on labelled nodes, and gone when the label goes.
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&daemonset_yaml("edge", &http, "      nodeSelector: {role: edge}\n")));
    c.kubectl(&["label", "node", &second, "role=edge"]);
    eventually("the edge daemon on the labelled node only", WAIT, || nodes_of(&c, "edge") == [second.clone()]);
    c.kubectl(&["label", "node", &second, "role-"]);
    eventually("the edge daemon gone with the label", WAIT, || nodes_of(&c, "edge").is_empty());

    // A template update rolls out node by node (maxUnavailable 1).
    c.kubectl(&["set", "image", "ds/agent", &format!("web={http2}")]);
    let out = c.kubectl(&["rollout", "status", "ds/agent", "--timeout=120s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    eventually("every daemon pod on the new image", WAIT, || {
        let pods = pods_of(&c, "app=agent");
        pods.len() == 2 && pods.iter().all(|p| p["spec"]["containers"][0]["image"] == http2.as_str())
    });
    assert_eq!(nodes_of(&c, "agent"), both);
    let revisions = c.get_json(&["controllerrevisions"])["items"].as_array().map_or(0, Vec::len);
    assert!(revisions >= 2, "a ControllerRevision per template");

    c.kubectl(&["delete", "ds", "agent", "edge"]);
    eventually("daemon pods gone", WAIT, || pods_of(&c, "app=agent").is_empty());
    drop(agent);
}

#[test]
fn a_statefulset_orders_its_pods_claims_and_partitioned_updates() {
    let c = Cluster::with_node();
    let registry = Registry::start();
    let http = registry.push("hello-http", "1");
    let http2 = registry.push("hello-http", "2");

    let sts = format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  replicas: 3\n  selector:\n    matchLabels: {{app: db}}\n  template:\n    metadata:\n      labels: {{app: db}}\n    spec:\n      containers:\n      - name: web\n        image: {http}\n        ports: [{{containerPort: 8080}}]\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec:\n      accessModes: [ReadWriteOnce]\n      resources: {{requests: {{storage: 1Mi}}}}\n"
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&sts));
    let out = c.kubectl(&["rollout", "status", "sts/db", "--timeout=120s"]);
    assert!(out.contains("roll out complete") || out.contains("rolling update complete"), "{out}");
    let mut pods = pods_of(&c, "app=db");
    pods.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string());
    let names: Vec<&str> = pods.iter().filter_map(|p| p["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    // OrderedReady: each pod was created no earlier than its predecessor became Ready.
    let ready_at = |p: &Value| {
        p["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or("")
            .to_string()
    };
    let created = |p: &Value| p["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string();
    assert!(ready_at(&pods[0]) <= created(&pods[1]) && ready_at(&pods[1]) <= created(&pods[2]), "{pods:?}");
    assert_eq!(pods[1]["spec"]["hostname"], "db-1");
    assert_eq!(pods[1]["spec"]["subdomain"], "db");
    assert_eq!(pods[1]["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], "db-1");
    // Claims per ordinal, named <template>-<set>-<ordinal>.
    let claims = jsonpath(&c, &["pvc"], "{.items[*].metadata.name}");
    assert_eq!(claims, "data-db-0 data-db-1 data-db-2");

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

    // RollingUpdate with a partition: only ordinals >= 1 take the new template.
    c.kubectl(&["scale", "sts/db", "--replicas=3"]);
    c.kubectl(&[
        "patch",
        "sts",
        "db",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":1}}}}"#,
    ]);
    c.kubectl(&["set", "image", "sts/db", &format!("web={http2}")]);
    let out = c.kubectl(&["rollout", "status", "sts/db", "--timeout=120s"]);
    assert!(out.contains("partitioned roll out complete"), "{out}");
    let image = |name: &str| jsonpath(&c, &["pod", name], "{.spec.containers[0].image}");
    eventually("db-1 and db-2 updated", WAIT, || image("db-1") == http2 && image("db-2") == http2);
    assert_eq!(image("db-0"), http, "below the partition");
    let status = c.get_json(&["sts", "db"])["status"].clone();
    assert_eq!(status["updatedReplicas"], 2, "{status}");
    assert_ne!(status["currentRevision"], status["updateRevision"], "{status}");

    c.kubectl(&["delete", "sts", "db"]);
    eventually("stateful pods gone", WAIT, || pods_of(&c, "app=db").is_empty());
}
