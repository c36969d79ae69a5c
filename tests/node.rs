//! End to end: Wasm pods on skiff's node agent, driven by the real kubectl, with images in a real
//! registry on loopback and pod networks wired by the real CNI plugins.

mod common;

use std::process::Command;
use std::time::Duration;

use common::node::{AgentProcess, Registry};
use common::{eventually, Cluster};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn pod(cluster: &Cluster, name: &str) -> Value {
    cluster.get_json(&["pod", name])
}

fn phase(cluster: &Cluster, name: &str) -> String {
    let out = cluster.kubectl_output(&["get", "pod", name, "-o", "jsonpath={.status.phase}"], None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_phase(cluster: &Cluster, name: &str, want: &str) {
    eventually(&format!("pod {name} {want}"), WAIT, || phase(cluster, name) == want);
}

fn wait_ready(cluster: &Cluster, name: &str) {
    eventually(&format!("pod {name} Ready"), WAIT, || {
        let out = cluster.kubectl_output(
            &["get", "pod", name, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
            None,
        );
        String::from_utf8_lossy(&out.stdout) == "True"
    });
}

fn http_get(url: &str) -> Option<String> {
    let out = Command::new("curl").args(["-sf", "--max-time", "3", url]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn events_of(cluster: &Cluster, name: &str) -> String {
    cluster.kubectl(&["get", "events", "--field-selector", &format!("involvedObject.name={name}")])
}

#[test]
fn hello_runs_to_completion_with_its_logs() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let image = registry.push("hello", "1");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\nspec:\n  restartPolicy: Never\n  containers:\n  - name: hello\n    image: {image}\n    args: [\"a\", \"b\"]\n    env:\n    - {{name: HELLO_NAME, value: world}}\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    wait_phase(&cluster, "hello", "Succeeded");
    let logs = cluster.kubectl(&["logs", "hello"]);
    assert!(logs.contains("hello from skiff"), "{logs}");
    assert!(logs.contains("args: a b"), "{logs}");
    assert!(logs.contains("HELLO_NAME=world"), "{logs}");
    assert!(logs.contains("hello on stderr"), "{logs}");
    let p = pod(&cluster, "hello");
    let status = &p["status"]["containerStatuses"][0];
    assert_eq!(status["state"]["terminated"]["reason"], "Completed", "{p}");
    assert_eq!(status["state"]["terminated"]["exitCode"], 0);
    assert!(status["imageID"].as_str().is_some_and(|id| id.contains("@sha256:")), "{status}");
    assert_eq!(p["spec"]["nodeName"], cluster.node_name().as_str());
    let events = events_of(&cluster, "hello");
    for reason in ["Scheduled", "Pulling", "Pulled", "Created", "Started"] {
        assert!(events.contains(reason), "missing {reason} in\n{events}");
    }

    // A second pod of the same image: no second pull, no second compile (the kubelet's /metrics says so).
    let again = manifest.replace("name: hello\nspec", "name: hello-again\nspec");
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&again));
    wait_phase(&cluster, "hello-again", "Succeeded");
    let metrics = kubelet_metrics(&cluster);
    assert!(metrics.contains("skiff_wasm_compiles_total 1\n"), "{metrics}");
    assert!(metrics.contains("skiff_image_pulls_total 1\n"), "{metrics}");
    assert!(events_of(&cluster, "hello-again").contains("already present on machine"));
}

/// `https://<InternalIP>:<port>` of the node's kubelet endpoint.
fn kubelet_url(cluster: &Cluster) -> String {
    let node = cluster.get_json(&["node", &cluster.node_name()]);
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().expect("kubelet port");
    let addresses = node["status"]["addresses"].as_array().cloned().unwrap_or_default();
    let ip = addresses.iter().find(|a| a["type"] == "InternalIP").and_then(|a| a["address"].as_str()).expect("ip");
    format!("https://{ip}:{port}")
}

/// curl against the kubelet endpoint trusting the cluster CA, with `extra` arguments; (exit ok, body).
fn kubelet_curl(cluster: &Cluster, path: &str, extra: &[&str]) -> (bool, String) {
    let ca = cluster.data_dir().join("ca.crt");
    let out = Command::new("curl")
        .args(["-sS", "-f", "--max-time", "10", "--cacert"])
        .arg(&ca)
        .args(extra)
        .arg(format!("{}{path}", kubelet_url(cluster)))
        .output()
        .expect("curl");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The HTTP status (0: no answer, e.g. a refused handshake) and body of `path` on the kubelet
/// endpoint, with `extra` curl arguments.
fn kubelet_status(cluster: &Cluster, path: &str, extra: &[&str]) -> (u16, String) {
    let ca = cluster.data_dir().join("ca.crt");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", "--cacert"])
        .arg(&ca)
        .args(extra)
        .arg(format!("{}{path}", kubelet_url(cluster)))
        .output()
        .expect("curl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The node's kubelet endpoint `/metrics`, read with the API server's kubelet client certificate.
fn kubelet_metrics(cluster: &Cluster) -> String {
    let (cert, key) = (cluster.data_dir().join("kubelet-client.crt"), cluster.data_dir().join("kubelet-client.key"));
    let (cert, key) = (cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned());
    kubelet_curl(cluster, "/metrics", &["--cert", &cert, "--key", &key]).1
}

#[test]
fn logs_follow_a_running_container_and_wasi_0_2_and_0_3_commands_run() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let (tool, p2, p3) = (registry.push("tool", "1"), registry.push("hello-p2", "1"), registry.push("hello-p3", "1"));
    let once = |name: &str, image: &str, args: &str| {
        format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  activeDeadlineSeconds: 600\n  containers:\n  - {{name: c, image: \"{image}\", args: [{args}], env: [{{name: HELLO_NAME, value: comp}}]}}\n")
    };
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: talker}}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - {{name: c, image: \"{tool}\", args: [forever]}}\n{}{}{}",
        once("p2", &p2, "\"x\", \"y\""),
        once("p3", &p3, "sleep, \"20\""),
        once("p3-fails", &p3, "fail"),
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    wait_phase(&cluster, "talker", "Running");
    // `kubectl logs -f` streams until the container stops: read its first line, then stop the pod.
    let mut follow = cluster.kubectl_stream(&["logs", "-f", "talker"]);
    let first = follow.next_line(Duration::from_secs(30)).expect("a line from kubectl logs -f");
    assert_eq!(first, "running");
    cluster.kubectl(&["delete", "pod", "talker", "--wait=false"]);
    let ended = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        follow.has_exited()
    });
    drop(follow);
    assert!(ended, "kubectl logs -f did not end when the container stopped");

    wait_phase(&cluster, "p2", "Succeeded");
    let logs = cluster.kubectl(&["logs", "p2"]);
    assert!(logs.contains("hello from a component") && logs.contains("HELLO_NAME=comp"), "{logs}");

    // WASI 0.3 components: an async `run` that waits on the host clock, and one whose `run` fails.
    wait_phase(&cluster, "p3", "Succeeded");
    let logs = cluster.kubectl(&["logs", "p3"]);
    assert!(logs.starts_with("slept "), "{logs}");
    wait_phase(&cluster, "p3-fails", "Failed");
    assert_eq!(cluster.kubectl(&["logs", "p3-fails"]), "failing\n");
    let failed = pod(&cluster, "p3-fails");
    assert_eq!(failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 1, "{failed}");
}

#[test]
fn active_deadline_fails_the_pod() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let tool = registry.push("tool", "1");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: late}}\nspec:\n  activeDeadlineSeconds: 2\n  containers:\n  - {{name: c, image: \"{tool}\", args: [forever]}}\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    wait_phase(&cluster, "late", "Failed");
    let p = pod(&cluster, "late");
    assert_eq!(p["status"]["reason"], "DeadlineExceeded", "{p}");
}

fn http_pod(name: &str, image: &str, extra: &str) -> String {
    http_pod_with(name, image, extra, None)
}

fn http_pod_with(name: &str, image: &str, extra: &str, host_port: Option<u16>) -> String {
    let host_port = host_port.map(|p| format!("      hostPort: {p}\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: web\n    image: {image}\n    ports:\n    - containerPort: 8080\n{host_port}    env:\n    - name: POD_NAME\n      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}\n    - name: POD_IP\n      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}\n    readinessProbe:\n      httpGet: {{path: /healthz, port: 8080}}\n      periodSeconds: 1\n{extra}"
    )
}

fn pod_ip(cluster: &Cluster, name: &str) -> String {
    pod(cluster, name)["status"]["podIP"].as_str().unwrap_or_default().to_string()
}

#[test]
fn http_component_answers_on_its_pod_ip_and_goes_away_on_delete() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let image = registry.push("hello-http", "1");
    let host_port = common::free_port();
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&http_pod_with("web", &image, "", Some(host_port))));
    wait_ready(&cluster, "web");
    let ip = pod_ip(&cluster, "web");
    // hostPort (CNI portmap): reachable on the node's bridge address.
    let node = cluster.get_json(&["node", &cluster.node_name()]);
    let cidr = node["spec"]["podCIDR"].as_str().expect("podCIDR").to_string();
    let gateway = format!("{}.1", cidr.rsplit_once('.').expect("cidr").0);
    assert_eq!(http_get(&format!("http://{gateway}:{host_port}/")).as_deref(), Some("hello from skiff\n"));
    assert!(ip.starts_with("10."), "pod IP {ip}");
    let wide = cluster.kubectl(&["get", "pods", "-o", "wide"]);
    assert!(wide.contains(&ip) && wide.contains(&cluster.node_name()) && wide.contains("1/1"), "{wide}");
    assert_eq!(http_get(&format!("http://{ip}:8080/")).as_deref(), Some("hello from skiff\n"));
    assert_eq!(http_get(&format!("http://{ip}:8080/env/POD_NAME")).as_deref(), Some("web"));
    assert_eq!(http_get(&format!("http://{ip}:8080/env/POD_IP")).as_deref(), Some(ip.as_str()));
    cluster.kubectl(&["delete", "pod", "web", "--timeout=30s"]);
    let out = cluster.kubectl_output(&["get", "pod", "web"], None);
    assert!(!out.status.success(), "the pod is still there");
    assert_eq!(http_get(&format!("http://{ip}:8080/")), None, "the pod still answers after deletion");
}

/// A WASI 0.3 HTTP service in a pod: Ready through its HTTP probe, answering on its pod IP with a body
/// it writes after `handle` returned, and with the pod's environment.
#[test]
fn a_wasi_0_3_http_service_answers_on_its_pod_ip() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let image = registry.push("hello-http-p3", "1");
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&http_pod("web3", &image, "")));
    wait_ready(&cluster, "web3");
    let ip = pod_ip(&cluster, "web3");
    assert_eq!(http_get(&format!("http://{ip}:8080/")).as_deref(), Some("hello from p3\n"));
    assert_eq!(http_get(&format!("http://{ip}:8080/env/POD_NAME")).as_deref(), Some("web3"));
    let chunks = http_get(&format!("http://{ip}:8080/chunks/500")).unwrap_or_default();
    assert_eq!(chunks.lines().count(), 500, "{chunks}");
}

#[test]
fn crash_loop_backs_off_and_counts_restarts() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let image = registry.push("crasher", "1");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: crash\nspec:\n  containers:\n  - name: crash\n    image: {image}\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    eventually("CrashLoopBackOff with restarts", WAIT, || {
        let s = &pod(&cluster, "crash")["status"]["containerStatuses"][0];
        s["restartCount"].as_i64().unwrap_or(0) >= 1 && s["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let s = &pod(&cluster, "crash")["status"]["containerStatuses"][0];
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 3, "{s}");
    assert_eq!(s["lastState"]["terminated"]["reason"], "Error", "{s}");
    assert!(events_of(&cluster, "crash").contains("BackOff"));
    assert!(cluster.kubectl(&["logs", "crash", "--previous"]).contains("crashing with 3"));
    assert!(cluster.kubectl(&["get", "pods"]).contains("CrashLoopBackOff"));
}

#[test]
fn memory_bomb_is_oom_killed_and_busy_loop_does_not_starve_a_neighbour() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let (hog, busy, web) =
        (registry.push("memory-hog", "1"), registry.push("busy-loop", "1"), registry.push("hello-http", "1"));
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hog\nspec:\n  restartPolicy: Never\n  containers:\n  - name: hog\n    image: {hog}\n    resources:\n      limits: {{memory: 32Mi}}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: busy\nspec:\n  containers:\n  - name: busy\n    image: {busy}\n---\n{}",
        http_pod("web", &web, "")
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    wait_phase(&cluster, "hog", "Failed");
    let t = &pod(&cluster, "hog")["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{t}");
    assert_eq!(t["exitCode"], 137);
    wait_phase(&cluster, "busy", "Running");
    wait_ready(&cluster, "web");
    let ip = pod_ip(&cluster, "web");
    for _ in 0..20 {
        assert_eq!(http_get(&format!("http://{ip}:8080/")).as_deref(), Some("hello from skiff\n"));
    }
    assert_eq!(phase(&cluster, "busy"), "Running");
}

#[test]
fn config_maps_secrets_env_and_volumes() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let tool = registry.push("tool", "1");
    let manifest = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{greeting: "hi there", COLOR: blue}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{password: s3cret}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reader, labels: {{tier: test}}}}
spec:
  restartPolicy: Never
  containers:
  - name: env
    image: {tool}
    args: ["env"]
    envFrom:
    - configMapRef: {{name: settings}}
      prefix: CM_
    env:
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}
    - name: NODE
      valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}
    - name: NS
      valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
    - name: GREETING_TWICE
      value: "$(CM_COLOR)-$(CM_COLOR)"
  - name: files
    image: {tool}
    command: ["cat", "/config/greeting"]
    volumeMounts:
    - {{name: config, mountPath: /config}}
  - name: secret
    image: {tool}
    args: ["cat", "/secret/password"]
    volumeMounts:
    - {{name: secret, mountPath: /secret}}
  - name: labels
    image: {tool}
    args: ["cat", "/info/labels"]
    volumeMounts:
    - {{name: info, mountPath: /info}}
  volumes:
  - name: config
    configMap: {{name: settings}}
  - name: secret
    secret: {{secretName: creds}}
  - name: info
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
"#
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    wait_phase(&cluster, "reader", "Succeeded");
    let env = cluster.kubectl(&["logs", "reader", "-c", "env"]);
    for want in ["CM_greeting=hi there", "CM_COLOR=blue", "PASSWORD=s3cret", "NS=default", "GREETING_TWICE=blue-blue"] {
        assert!(env.contains(want), "{want} missing in\n{env}");
    }
    assert!(env.contains(&format!("NODE={}", cluster.node_name())), "{env}");
    assert_eq!(cluster.kubectl(&["logs", "reader", "-c", "files"]).trim(), "hi there");
    assert_eq!(cluster.kubectl(&["logs", "reader", "-c", "secret"]).trim(), "s3cret");
    assert!(cluster.kubectl(&["logs", "reader", "-c", "labels"]).contains("tier=\"test\""));

    // A volume naming a missing ConfigMap: the pod waits and says why.
    let missing = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: missing}}\nspec:\n  containers:\n  - name: c\n    image: {tool}\n    args: [forever]\n    volumeMounts: [{{name: v, mountPath: /v}}]\n  volumes:\n  - name: v\n    configMap: {{name: nope}}\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&missing));
    eventually("a FailedMount event", WAIT, || events_of(&cluster, "missing").contains("configmap \"nope\" not found"));
    assert_eq!(phase(&cluster, "missing"), "Pending");
}

#[test]
fn containers_share_an_empty_dir_and_init_containers_run_in_order() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let tool = registry.push("tool", "1");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: shared}}
spec:
  restartPolicy: Never
  initContainers:
  - {{name: first, image: "{tool}", args: [append, /work/order, one], volumeMounts: [{{name: work, mountPath: /work}}]}}
  - {{name: second, image: "{tool}", args: [append, /work/order, two], volumeMounts: [{{name: work, mountPath: /work}}]}}
  containers:
  - {{name: writer, image: "{tool}", args: [write, /shared/msg, hello-neighbour], volumeMounts: [{{name: shared, mountPath: /shared}}]}}
  - {{name: reader, image: "{tool}", args: [wait-cat, /shared/msg, "30"], volumeMounts: [{{name: shared, mountPath: /shared}}]}}
  - {{name: order, image: "{tool}", args: [cat, /work/order], volumeMounts: [{{name: work, mountPath: /work, readOnly: true}}]}}
  volumes:
  - {{name: shared, emptyDir: {{medium: Memory}}}}
  - {{name: work, emptyDir: {{}}}}
"#
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    wait_phase(&cluster, "shared", "Succeeded");
    assert_eq!(cluster.kubectl(&["logs", "shared", "-c", "reader"]).trim(), "hello-neighbour");
    assert_eq!(cluster.kubectl(&["logs", "shared", "-c", "order"]).trim(), "one\ntwo");
    let p = pod(&cluster, "shared");
    let init = p["status"]["initContainerStatuses"].as_array().expect("init statuses").clone();
    assert!(init.iter().all(|c| c["state"]["terminated"]["reason"] == "Completed"), "{init:?}");
}

#[test]
fn liveness_failure_restarts_and_exec_probes_gate_readiness() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let (web, slow) = (registry.push("hello-http", "1"), registry.push("slow-starter", "1"));
    let liveness = "    livenessProbe:\n      httpGet: {path: /status/500, port: 8080}\n      periodSeconds: 1\n      failureThreshold: 2\n";
    let manifest = format!(
        "{}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: slow}}\nspec:\n  containers:\n  - name: slow\n    image: {slow}\n    env: [{{name: START_DELAY, value: \"2\"}}]\n    startupProbe: {{exec: {{command: [check]}}, periodSeconds: 1, failureThreshold: 30}}\n    readinessProbe: {{exec: {{command: [check]}}, periodSeconds: 1}}\n    volumeMounts: [{{name: work, mountPath: /work}}]\n  volumes: [{{name: work, emptyDir: {{}}}}]\n",
        http_pod("sick", &web, liveness)
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    eventually("the liveness restart", WAIT, || {
        pod(&cluster, "sick")["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1
    });
    let events = events_of(&cluster, "sick");
    assert!(events.contains("Unhealthy") && events.contains("Liveness probe failed"), "{events}");
    assert!(events.contains("failed liveness probe, will be restarted"), "{events}");
    wait_ready(&cluster, "slow");
    assert!(cluster.kubectl(&["logs", "slow"]).contains("ready"));
    assert!(events_of(&cluster, "slow").contains("Startup probe failed"), "the startup probe never waited");
}

#[test]
fn bad_images_show_in_status() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let garbage = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(garbage.path(), b"\0asm\x01\0\0\0this is not wasm").expect("write");
    let broken = format!("{}/broken:1", registry.addr);
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["image", "push"])
        .arg(garbage.path())
        .arg(&broken)
        .output()
        .expect("push");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: missing}}\nspec:\n  containers:\n  - {{name: c, image: \"{}/nothing:1\"}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: broken}}\nspec:\n  containers:\n  - {{name: c, image: \"{broken}\"}}\n",
        registry.addr
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    eventually("ErrImagePull / ImagePullBackOff", WAIT, || {
        let s = &pod(&cluster, "missing")["status"]["containerStatuses"][0]["state"]["waiting"];
        s["reason"] == "ErrImagePull" || s["reason"] == "ImagePullBackOff"
    });
    eventually("a compile error in the status", WAIT, || {
        let s = pod(&cluster, "broken")["status"]["containerStatuses"][0].clone();
        s.to_string().contains("compile")
    });
    assert!(events_of(&cluster, "missing").contains("Failed to pull image"));
}

#[test]
fn a_killed_agent_adopts_its_pods_without_duplicates() {
    let mut cluster = Cluster::with_node();
    let registry = Registry::start();
    let image = registry.push("hello-http", "1");
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&http_pod("keep", &image, "")));
    wait_ready(&cluster, "keep");
    let ip = pod_ip(&cluster, "keep");
    let prefix = format!("skiff-{}-", cluster.node_name());
    let netns_count = || {
        std::fs::read_dir("/var/run/netns")
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).count())
            .unwrap_or(0)
    };
    let before = netns_count();
    cluster.kill9();
    cluster.spawn();
    // The status still reads Ready from before the kill until the new process adopts the
    // sandbox and starts the container again, so wait for the component to answer.
    let url = format!("http://{ip}:8080/");
    eventually("the adopted pod to answer on its IP", WAIT, || http_get(&url).as_deref() == Some("hello from skiff\n"));
    wait_ready(&cluster, "keep");
    assert_eq!(pod_ip(&cluster, "keep"), ip, "the pod kept its IP");
    assert_eq!(netns_count(), before, "sandboxes were duplicated or lost");
    let pods = cluster.get_json(&["pods"]);
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_second_agent_joins_and_runs_pods() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let agent = AgentProcess::start(&cluster);
    let node = agent.net.node.clone();
    eventually("the second node Ready", WAIT, || {
        let out = cluster.kubectl_output(
            &["get", "node", &node, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
            None,
        );
        String::from_utf8_lossy(&out.stdout) == "True"
    });
    let image = registry.push("hello", "1");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: there}}\nspec:\n  restartPolicy: Never\n  nodeSelector: {{kubernetes.io/hostname: {node}}}\n  containers:\n  - {{name: hello, image: \"{image}\"}}\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    eventually("the pod to succeed on the second node", WAIT, || phase(&cluster, "there") == "Succeeded");
    assert_eq!(pod(&cluster, "there")["spec"]["nodeName"], node.as_str(), "{}", agent.log());
    assert!(cluster.kubectl(&["logs", "there"]).contains("hello from skiff"));
    let nodes = cluster.kubectl(&["get", "nodes"]);
    assert!(nodes.contains(&node) && nodes.contains(&cluster.node_name()), "{nodes}");
}

#[test]
fn the_kubelet_port_authenticates_and_authorizes_through_the_api_server() {
    let cluster = Cluster::with_node();
    let dir = cluster.data_dir();
    let (cert, key) = (dir.join("kubelet-client.crt"), dir.join("kubelet-client.key"));
    let (cert, key) = (cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned());
    let (ok, body) = kubelet_curl(&cluster, "/healthz", &["--cert", &cert, "--key", &key]);
    assert!(ok && body == "ok", "the API server's certificate is admitted: {body}");

    // No credential: 401. Plain HTTP: no answer.
    assert_eq!(kubelet_status(&cluster, "/metrics", &[]), (401, "Unauthorized".into()));
    let plain = kubelet_url(&cluster).replacen("https://", "http://", 1);
    let out = Command::new("curl").args(["-sf", "--max-time", "5"]).arg(format!("{plain}/metrics")).output();
    assert!(!out.expect("curl").status.success(), "cleartext HTTP");

    // The admin's token: the API server vouches for it (TokenReview) and allows everything (SubjectAccessReview).
    let bearer = |token: &str| format!("Authorization: Bearer {token}");
    let admin = bearer(&cluster.token());
    let (code, metrics) = kubelet_status(&cluster, "/metrics", &["-H", &admin]);
    assert_eq!(code, 200, "{metrics}");
    assert!(metrics.contains("skiff_node_pods"), "{metrics}");
    let forged = bearer("not-a-token");
    assert_eq!(kubelet_status(&cluster, "/metrics", &["-H", &forged]).0, 401);

    // A ServiceAccount with no rights on nodes is forbidden, with the kubelet's message...
    cluster.kubectl(&["create", "serviceaccount", "node-reader"]);
    let reader = bearer(cluster.kubectl(&["create", "token", "node-reader"]).trim());
    let (code, body) = kubelet_status(&cluster, "/pods", &["-H", &reader]);
    let who = "user=system:serviceaccount:default:node-reader";
    assert_eq!((code, body), (403, format!("Forbidden ({who}, verb=get, resource=nodes, subresource=proxy)")));
    // ...and given `nodes/metrics` by RBAC, it reads the metrics and still nothing else.
    cluster.kubectl(&["create", "clusterrole", "node-metrics", "--verb=get", "--resource=nodes/metrics"]);
    let subject = "--serviceaccount=default:node-reader";
    cluster.kubectl(&["create", "clusterrolebinding", "node-reader", "--clusterrole=node-metrics", subject]);
    let (code, metrics) = kubelet_status(&cluster, "/metrics", &["-H", &reader]);
    assert_eq!(code, 200, "{metrics}");
    assert!(metrics.contains("skiff_node_pods"), "{metrics}");
    assert_eq!(kubelet_status(&cluster, "/stats/summary", &["-H", &reader]).0, 403);

    // A certificate with the API server's name from another CA: no connection. One of this CA for
    // another node: a user like any other, without rights on this Node.
    let other = tempfile::tempdir().expect("tempdir");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(other.path()).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let req = |key: &str, out: &str, subj: &str, x509: bool| {
        let mut args = vec!["req"];
        if x509 {
            args.extend(["-x509", "-days", "1"]);
        } else {
            args.push("-new");
        }
        args.extend(new_key);
        args.extend(["-keyout", key, "-out", out, "-subj", subj]);
        openssl(&args);
    };
    std::fs::write(other.path().join("ext.cnf"), "extendedKeyUsage=clientAuth\n").expect("ext");
    let sign = |csr: &str, ca_crt: &str, ca_key: &str, out: &str| {
        openssl(&[
            "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-days", "1", "-out", out, "-extfile",
            "ext.cnf",
        ]);
    };
    req("other-ca.key", "other-ca.crt", "/CN=other-ca", true);
    req("a.key", "a.csr", "/O=system:masters/CN=kube-apiserver-kubelet-client", false);
    sign("a.csr", "other-ca.crt", "other-ca.key", "a.crt");
    req("b.key", "b.csr", "/O=system:nodes/CN=system:node:intruder", false);
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    sign("b.csr", &ca_crt.to_string_lossy(), &ca_key.to_string_lossy(), "b.crt");
    let at = |f: &str| other.path().join(f).to_string_lossy().into_owned();
    let (code, body) = kubelet_status(&cluster, "/metrics", &["--cert", &at("a.crt"), "--key", &at("a.key")]);
    assert_eq!(code, 0, "the API server's name from another CA was answered: {body}");
    let (code, body) = kubelet_status(&cluster, "/metrics", &["--cert", &at("b.crt"), "--key", &at("b.key")]);
    let intruder = "Forbidden (user=system:node:intruder, verb=get, resource=nodes, subresource=metrics)";
    assert_eq!((code, body.as_str()), (403, intruder));
    // The API server's own certificate still works, and kubectl logs rides on it.
    assert!(kubelet_curl(&cluster, "/metrics", &["--cert", &cert, "--key", &key]).0);
}

#[test]
fn a_sub_path_through_a_link_planted_in_the_volume_is_refused() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let tool = registry.push("tool", "1");
    // `victim` mounts subPath `escape` of a shared emptyDir and exits (so the kubelet mounts it again
    // on each restart); between two starts a link `escape -> /etc` appears in the volume, as one
    // container of the pod (here: the test, on the host) can plant it.
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: escape}}
spec:
  containers:
  - {{name: planter, image: "{tool}", args: [forever], volumeMounts: [{{name: shared, mountPath: /shared}}]}}
  - {{name: victim, image: "{tool}", args: [cat, /data/hostname], volumeMounts: [{{name: shared, mountPath: /data, subPath: escape}}]}}
  volumes:
  - {{name: shared, emptyDir: {{}}}}
"#
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    let victim = |p: &Value| -> Value {
        p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == "victim")
            .cloned()
            .unwrap_or_default()
    };
    eventually("the victim ran once", WAIT, || {
        victim(&pod(&cluster, "escape"))["lastState"]["terminated"].is_object()
            || victim(&pod(&cluster, "escape"))["state"]["terminated"].is_object()
    });
    let uid = pod(&cluster, "escape")["metadata"]["uid"].as_str().expect("uid").to_string();
    let volume = cluster.data_dir().join("node/pods").join(&uid).join("volumes/shared");
    let made = volume.join("escape");
    assert!(made.is_dir(), "the kubelet made the subPath directory {}", made.display());
    std::fs::remove_dir_all(&made).expect("remove");
    std::os::unix::fs::symlink("/etc", &made).expect("plant the link");
    eventually("the victim refused with CreateContainerConfigError", Duration::from_secs(90), || {
        let c = victim(&pod(&cluster, "escape"));
        c["state"]["waiting"]["reason"] == "CreateContainerConfigError"
            && c["state"]["waiting"]["message"].as_str().is_some_and(|m| {
                m.contains("failed to prepare subPath for volumeMount \"shared\" of container \"victim\"")
            })
    });
    let logs = cluster.kubectl_output(&["logs", "escape", "-c", "victim"], None);
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(host.trim().is_empty() || !logs.contains(host.trim()), "the host's /etc leaked: {logs}");
    assert!(events_of(&cluster, "escape").contains("failed to prepare subPath"));
    // A clean stop leaves nothing mounted in the pods' directories (the subPath bind included),
    // so the data directory goes too.
    let root = cluster.data_dir().to_path_buf();
    drop(cluster);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&root.display().to_string())).collect();
    assert!(left.is_empty(), "left mounted after the agent stopped: {left:?}");
    assert!(!root.exists(), "the data directory {} was left behind", root.display());
}

#[test]
fn huge_deadlines_and_quantities_do_not_break_the_kubelet() {
    let cluster = Cluster::with_node();
    let registry = Registry::start();
    let tool = registry.push("tool", "1");
    let manifest = |deadline: i64| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: huge}}
spec:
  restartPolicy: Never
  activeDeadlineSeconds: {deadline}
  containers:
  - name: c
    image: "{tool}"
    args: [write, /scratch/out, fine]
    resources:
      limits: {{memory: "9223372036854775", cpu: "9223372036854775"}}
      requests: {{memory: 1Mi, cpu: 1m}}
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  - name: reader
    image: "{tool}"
    args: [wait-cat, /scratch/out, "30"]
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  volumes:
  - {{name: scratch, emptyDir: {{medium: Memory, sizeLimit: "9223372036854775"}}}}
"#
        )
    };
    // The largest quantities the API server admits (64-bit milli-units), and a deadline past what it
    // admits first: another API server may hand the kubelet that; this one bounds it as Kubernetes
    // does (1..=2^31-1, 422 otherwise), so the largest it admits is used instead.
    let out = cluster.kubectl_output(&["apply", "-f", "-"], Some(&manifest(i64::MAX)));
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("activeDeadlineSeconds"), "{stderr}");
        cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest(i64::from(i32::MAX))));
    }
    wait_phase(&cluster, "huge", "Succeeded");
    assert_eq!(cluster.kubectl(&["logs", "huge", "-c", "reader"]).trim(), "fine");
    // The kubelet is still there for the next pod.
    let hello = registry.push("hello", "1");
    let next = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: after}}\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: c, image: \"{hello}\"}}\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&next));
    wait_phase(&cluster, "after", "Succeeded");
}
