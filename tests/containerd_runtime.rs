//! End to end: a node whose kubelet runs Wasm containers through a real (private) containerd and skiff's
//! shim (`--wasm-runtime containerd`), driven by the real kubectl, with images in a real registry on
//! loopback and the pod network wired by the real CNI plugins.

mod common;

use std::process::Command;
use std::time::Duration;

use common::containerd::Containerd;
use common::node::Registry;
use common::{eventually, Cluster};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

fn pod(cluster: &Cluster, name: &str) -> Value {
    cluster.get_json(&["pod", name])
}

fn jsonpath(cluster: &Cluster, name: &str, path: &str) -> String {
    let out = cluster.kubectl_output(&["get", "pod", name, "-o", &format!("jsonpath={path}")], None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_phase(cluster: &Cluster, name: &str, want: &str) {
    eventually(&format!("pod {name} {want}"), WAIT, || jsonpath(cluster, name, "{.status.phase}") == want);
}

fn wait_ready(cluster: &Cluster, name: &str) {
    eventually(&format!("pod {name} Ready"), WAIT, || {
        jsonpath(cluster, name, "{.status.conditions[?(@.type==\"Ready\")].status}") == "True"
    });
}

fn http_get(url: &str) -> Option<String> {
    let out = Command::new("curl").args(["-sf", "--max-time", "3", url]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn wasm_pods_run_as_containerd_tasks_through_the_shim() {
    // Declared first, dropped last: the cluster's agent tears its containers down while containerd still runs.
    let containerd = Containerd::start(&format!("skiff-t{}", std::process::id()));
    let registry = Registry::start();
    let mut cluster = Cluster::with_node_args(containerd.agent_args());
    let (web, hello, crasher, tool, hog) = (
        registry.push("hello-http", "1"),
        registry.push("hello", "1"),
        registry.push("crasher", "1"),
        registry.push("tool", "1"),
        registry.push("memory-hog", "1"),
    );
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: web
    image: {web}
    ports: [{{containerPort: 8080}}]
    env:
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    readinessProbe:
      httpGet: {{path: /healthz, port: 8080}}
      periodSeconds: 1
    resources:
      limits: {{memory: 64Mi, cpu: 500m}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hello}}
spec:
  restartPolicy: Never
  containers:
  - name: hello
    image: {hello}
    args: ["a", "b"]
    env: [{{name: HELLO_NAME, value: world}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: crash}}
spec:
  containers:
  - name: crash
    image: {crasher}
---
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: {hog}
    resources:
      limits: {{memory: 32Mi}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{greeting: "hi there"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: files}}
spec:
  restartPolicy: Never
  containers:
  - name: files
    image: {tool}
    args: ["cat", "/config/greeting"]
    volumeMounts: [{{name: config, mountPath: /config}}]
  volumes:
  - name: config
    configMap: {{name: settings}}
---
apiVersion: v1
kind: Pod
metadata: {{name: talker}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: a
    image: {tool}
    args: ["forever"]
    readinessProbe:
      exec: {{command: ["exit", "0"]}}
      periodSeconds: 1
  - name: b
    image: {tool}
    args: ["forever"]
"#
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));

    // An HTTP component answers on its pod IP, from inside the pod's network namespace.
    wait_ready(&cluster, "web");
    let ip = pod(&cluster, "web")["status"]["podIP"].as_str().unwrap_or_default().to_string();
    assert!(ip.starts_with("10."), "pod IP {ip}");
    assert_eq!(http_get(&format!("http://{ip}:8080/")).as_deref(), Some("hello from skiff\n"));
    assert_eq!(http_get(&format!("http://{ip}:8080/env/POD_NAME")).as_deref(), Some("web"));

    // A job runs to completion with its argv, env and both streams in `kubectl logs`.
    wait_phase(&cluster, "hello", "Succeeded");
    let logs = cluster.kubectl(&["logs", "hello"]);
    for want in ["hello from skiff", "args: a b", "HELLO_NAME=world", "hello on stderr"] {
        assert!(logs.contains(want), "{want} missing in\n{logs}");
    }
    let status = &pod(&cluster, "hello")["status"]["containerStatuses"][0];
    assert_eq!(status["state"]["terminated"]["reason"], "Completed", "{status}");
    assert_eq!(status["state"]["terminated"]["exitCode"], 0, "{status}");

    // The spec's memory limit caps the guest: an OOM kill.
    wait_phase(&cluster, "hog", "Failed");
    let t = &pod(&cluster, "hog")["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!((t["reason"].as_str(), t["exitCode"].as_i64()), (Some("OOMKilled"), Some(137)), "{t}");

    // A crashing container is restarted, its exit code and output kept.
    eventually("the crasher restarted", WAIT, || {
        pod(&cluster, "crash")["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1
    });
    let s = &pod(&cluster, "crash")["status"]["containerStatuses"][0];
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 3, "{s}");
    assert!(cluster.kubectl(&["logs", "crash", "--previous"]).contains("crashing with 3"));

    // Volumes are the container's directories; an exec probe (run in-process) makes a container ready.
    wait_phase(&cluster, "files", "Succeeded");
    assert_eq!(cluster.kubectl(&["logs", "files"]).trim(), "hi there");
    wait_ready(&cluster, "talker");

    // The running containers are containerd tasks of the kubelet's namespace, one shim per pod.
    let web_uid = pod(&cluster, "web")["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let talker_uid = pod(&cluster, "talker")["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let table = containerd.tasks_table();
    let pids = |uid: &str| -> Vec<i32> {
        table
            .lines()
            .filter(|l| l.starts_with(uid) && l.contains("RUNNING"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect()
    };
    let shims = containerd.shim_pids();
    let (web_pids, talker_pids) = (pids(&web_uid), pids(&talker_uid));
    assert_eq!(web_pids.len(), 1, "{table}");
    assert_eq!(talker_pids.len(), 2, "{table}");
    // A task's pid is its shim's (guests are threads of it): the pod's two tasks share one shim.
    assert_eq!(talker_pids[0], talker_pids[1], "{table}");
    assert_ne!(talker_pids[0], web_pids[0], "{table}");
    for pid in [web_pids[0], talker_pids[0]] {
        assert!(shims.contains(&pid), "task pid {pid} is no shim of {shims:?}:\n{table}");
    }

    // Deleting pods removes their containers and tasks, and their shims end.
    let talker_shim = talker_pids[0];
    cluster.kubectl(&["delete", "pod", "hello", "hog", "crash", "files", "talker", "--timeout=60s"]);
    eventually("only web's container left", WAIT, || {
        let ids = containerd.ids("containers");
        ids.len() == 1 && ids[0].starts_with(&web_uid)
    });
    assert_eq!(containerd.ids("tasks").len(), 1, "{}", containerd.tasks_table());
    eventually("the talker's shim gone", WAIT, || !containerd.shim_pids().contains(&talker_shim));

    // A killed agent's containers are orphans to the next one: removed at its start, the pod's run anew.
    let old = containerd.ids("containers");
    cluster.kill9();
    cluster.spawn();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let ids = containerd.ids("containers");
        if ids.len() == 1 && ids[0].starts_with(&web_uid) && !old.contains(&ids[0]) {
            break;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "web was not run anew: {ids:?} (before: {old:?})\n{}\nserver:\n{}\ncontainerd:\n{}",
                containerd.tasks_table(),
                common::tail(&cluster.server_log()),
                common::tail(&containerd.log())
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_ready(&cluster, "web");
    assert_eq!(http_get(&format!("http://{ip}:8080/")).as_deref(), Some("hello from skiff\n"));
    assert_eq!(containerd.ids("tasks").len(), 1, "{}", containerd.tasks_table());

    // Deleting the last pod leaves no container, task or shim.
    cluster.kubectl(&["delete", "pod", "web", "--timeout=60s"]);
    eventually("no containerd containers left", WAIT, || containerd.ids("containers").is_empty());
    assert!(containerd.ids("tasks").is_empty(), "{}", containerd.tasks_table());
    eventually("no shim process left", WAIT, || containerd.shim_pids().is_empty());
    assert_eq!(http_get(&format!("http://{ip}:8080/")), None, "the pod still answers after deletion");

    // An agent stopping with --teardown-on-exit removes what still runs.
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: last}}\nspec:\n  containers:\n  - {{name: c, image: \"{tool}\", args: [forever]}}\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    eventually("the last pod's task", WAIT, || containerd.ids("tasks").len() == 1);
    drop(cluster);
    assert!(containerd.ids("containers").is_empty(), "{}", containerd.tasks_table());
    eventually("no shim process left after the agent", WAIT, || containerd.shim_pids().is_empty());
}
