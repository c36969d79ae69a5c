//! End to end: `kubectl debug` (kubectl 1.32) into a Wasm pod. The `pods/ephemeralcontainers`
//! subresource takes kubectl's strategic merge patch, the kubelet starts the busybox debug container
//! through a real (private) containerd/runc in the Wasm pod's network namespace with the pod's volume
//! (mounted through kubectl's `--custom` partial container spec), so it reaches the Wasm server on
//! 127.0.0.1 and reads the file a Wasm init container wrote; `kubectl debug -it` attaches a terminal;
//! the API refuses what kube-apiserver refuses (422, kube's messages).
//!
//! Needs root, containerd, runc, ctr, the CNI plugins, docker-registry, umoci, skopeo and busybox-static.

mod common;

use std::time::Duration;

use common::{eventually, KUBECTL};
use serde_json::{json, Value};

use common::linux::LinuxCluster as Setup;

const WAIT: Duration = Duration::from_secs(90);
const PATH: &str = "/api/v1/namespaces/default/pods/web/ephemeralcontainers";

impl Setup {
    fn pod(&self) -> Value {
        self.cluster.get_json(&["pod", "web"])
    }

    /// The status of ephemeral container `name`, once there is one.
    fn ephemeral_status(&self, name: &str) -> Option<Value> {
        let pod = self.pod();
        pod["status"]["ephemeralContainerStatuses"].as_array()?.iter().find(|s| s["name"] == name).cloned()
    }

    fn logs(&self, container: &str) -> String {
        let out = self.cluster.kubectl_output(&["logs", "web", "-c", container], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl_output(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"], None);
    }
}

#[test]
fn kubectl_debug_runs_a_linux_container_in_a_wasm_pod() {
    let s = Setup::start_linux("skiff-debug");
    let (web, tool) = (s.registry.push("hello-http", "1"), s.registry.push("tool", "1"));
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{{name: shared, emptyDir: {{}}}}]
  initContainers:
  - name: seed
    image: {tool}
    args: [write, /shared/note, "written by wasm"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: api
    image: {web}
    ports: [{{containerPort: 8080}}]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
"#
    );
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    eventually("pod web Ready", WAIT, || {
        s.pod()["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    });

    // Discovery lists the subresource.
    let discovery = s.cluster.kubectl(&["get", "--raw", "/api/v1"]);
    assert!(discovery.contains("\"pods/ephemeralcontainers\""), "{discovery}");

    // kubectl debug with a partial container spec mounting the pod's volume.
    let custom = s.work.path().join("custom.json");
    std::fs::write(&custom, r#"{"volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}"#).expect("custom");
    let custom_arg = format!("--custom={}", custom.display());
    let out = s.cluster.kubectl(&[
        "debug",
        "web",
        "--image=busybox",
        "-c",
        "dbg",
        "--target=api",
        &custom_arg,
        "--",
        "sh",
        "-c",
        "wget -qO- http://127.0.0.1:8080/; echo; ls /shared; cat /shared/note",
    ]);
    assert!(!out.contains("rror"), "{out}");
    eventually("the debug container ran to completion", WAIT, || {
        s.ephemeral_status("dbg").is_some_and(|st| st["state"]["terminated"]["exitCode"] == 0)
    });
    let log = s.logs("dbg");
    assert!(log.contains("hello from skiff"), "the Wasm server over 127.0.0.1: {log}");
    assert!(log.contains("note") && log.contains("written by wasm"), "the pod's volume: {log}");

    // Its status as the kubelet reports it; the pod's own containers are untouched.
    let st = s.ephemeral_status("dbg").expect("status");
    assert_eq!(st["image"], "busybox", "{st}");
    assert!(st["imageID"].as_str().is_some_and(|i| i.starts_with("docker.io/library/busybox@sha256:")), "{st}");
    assert!(st["containerID"].as_str().is_some_and(|i| !i.is_empty()), "{st}");
    assert_eq!(st["state"]["terminated"]["reason"], "Completed", "{st}");
    assert_eq!(st["restartCount"], 0, "{st}");
    assert_eq!(st["ready"], false, "{st}");
    let pod = s.pod();
    assert_eq!(pod["spec"]["ephemeralContainers"][0]["targetContainerName"], "api", "{pod}");
    assert_eq!(pod["spec"]["ephemeralContainers"][0]["imagePullPolicy"], "Always", "{pod}");
    assert_eq!(pod["status"]["containerStatuses"].as_array().map(Vec::len), Some(1), "{pod}");
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");

    // A second one, interactive: a terminal (script gives kubectl a pty) attached to its shell.
    let command = format!(
        "timeout --foreground 90 {KUBECTL} --kubeconfig {} debug -it web --image=busybox -c shell --target=api -- sh -c 'read x; echo got-$x'",
        s.cluster.kubeconfig().display()
    );
    let (status, text) = common::typed_in_terminal(&command, b"hi\n", 120);
    assert!(text.contains("got-hi"), "{status:?} {text}");
    eventually("the interactive one ended", WAIT, || {
        s.ephemeral_status("shell").is_some_and(|st| st["state"].get("terminated").is_some())
    });
    let statuses = s.pod()["status"]["ephemeralContainerStatuses"].as_array().map(Vec::len);
    assert_eq!(statuses, Some(2));

    // Refusals, as kube-apiserver words them. An existing ephemeral container is not changed...
    let mut pod = s.pod();
    pod["spec"]["ephemeralContainers"][0]["image"] = json!("busybox:1.36");
    let (code, body) = s.cluster.curl("PUT", PATH, "application/json", Some(pod.to_string().as_bytes()));
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("existing ephemeral containers \\\"dbg\\\" may not be changed"), "{body}");
    // ... nor removed.
    let patch = json!([{"op": "remove", "path": "/spec/ephemeralContainers/0"}]).to_string();
    let (code, body) = s.cluster.curl("PATCH", PATH, "application/json-patch+json", Some(patch.as_bytes()));
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("may not be removed"), "{body}");
    // Ports are not for ephemeral containers (through kubectl debug itself).
    let ports = s.work.path().join("ports.json");
    std::fs::write(&ports, r#"{"ports": [{"containerPort": 9000}]}"#).expect("ports");
    let err = s.cluster.kubectl_fails(
        &["debug", "web", "--image=busybox", "-c", "porty", &format!("--custom={}", ports.display()), "--", "true"],
        None,
    );
    assert!(
        err.contains("spec.ephemeralContainers[2].ports: Forbidden: cannot be set for an Ephemeral Container"),
        "{err}"
    );
    // The target must be a container of the pod; names are unique across the pod.
    let err =
        s.cluster.kubectl_fails(&["debug", "web", "--image=busybox", "-c", "x", "--target=nope", "--", "true"], None);
    assert!(err.contains("targetContainerName: Not found: \"nope\""), "{err}");
    let err = s.cluster.kubectl_fails(&["debug", "web", "--image=busybox", "-c", "api", "--", "true"], None);
    assert!(err.contains("Duplicate value: \"api\""), "{err}");
    // The pod itself refuses changes to its ephemeral containers.
    let err = s.cluster.kubectl_fails(
        &["patch", "pod", "web", "--type=json", "-p", r#"[{"op":"remove","path":"/spec/ephemeralContainers/1"}]"#],
        None,
    );
    assert!(err.contains("pod updates may not change fields other than"), "{err}");
    // Nothing of the refused ones was stored.
    assert_eq!(s.pod()["spec"]["ephemeralContainers"].as_array().map(Vec::len), Some(2));

    // Deleting the pod removes its debug containers with the rest.
    s.cluster.kubectl(&["delete", "pod", "web", "--wait=true", "--timeout=60s"]);
    eventually("no containerd containers left", WAIT, || s.containerd.ids("containers").is_empty());
    assert!(s.containerd.ids("tasks").is_empty(), "{}", s.containerd.tasks_table());
}

#[test]
fn a_running_debug_container_stops_with_its_pod() {
    let s = Setup::start_linux("skiff-debug2");
    let web = s.registry.push("hello-http", "1");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: api\n    image: {web}\n"
    );
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    eventually("pod web running", WAIT, || s.pod()["status"]["phase"] == "Running");
    // A strategic merge patch as kubectl sends it, straight to the subresource; the whole Pod comes back.
    let patch = json!({"spec": {"ephemeralContainers": [
        {"name": "sleeper", "image": "busybox", "command": ["sleep", "3600"]}
    ]}})
    .to_string();
    let (code, body) = s.cluster.curl("PATCH", PATH, "application/strategic-merge-patch+json", Some(patch.as_bytes()));
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("pod");
    assert_eq!(answer["kind"], "Pod");
    assert_eq!(answer["spec"]["ephemeralContainers"][0]["name"], "sleeper");
    // GET on the subresource is the Pod too.
    let (code, body) = s.cluster.curl_accept(PATH, "application/json");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"sleeper\""), "{body}");

    eventually("the debug container runs", WAIT, || {
        s.ephemeral_status("sleeper").is_some_and(|st| st["state"].get("running").is_some())
    });
    assert_eq!(s.containerd.ids("tasks").len(), 1, "{}", s.containerd.tasks_table());

    // An image that cannot be pulled shows in the debug container's status, as for any container.
    let missing = format!("--image={}/missing:1", s.registry.addr);
    s.cluster.kubectl(&["debug", "web", &missing, "-c", "nopull", "--", "true"]);
    eventually("ErrImagePull / ImagePullBackOff", WAIT, || {
        s.ephemeral_status("nopull").is_some_and(|st| {
            let reason = st["state"]["waiting"]["reason"].as_str().unwrap_or_default().to_string();
            reason == "ErrImagePull" || reason == "ImagePullBackOff"
        })
    });

    // Pod Security admission checks ephemeral containers on the subresource.
    s.cluster.kubectl(&["create", "namespace", "psa"]);
    s.cluster.kubectl(&["label", "namespace", "psa", "pod-security.kubernetes.io/enforce=baseline"]);
    s.cluster.kubectl_stdin(&["apply", "-n", "psa", "-f", "-"], Some(&manifest));
    let err = s.cluster.kubectl_fails(
        &["debug", "-n", "psa", "web", "--image=busybox", "--profile=sysadmin", "-c", "root", "--", "true"],
        None,
    );
    assert!(err.contains("violates PodSecurity \"baseline:latest\": privileged"), "{err}");
    s.cluster.kubectl(&["debug", "-n", "psa", "web", "--image=busybox", "-c", "plain", "--", "true"]);
    s.cluster.kubectl(&["delete", "namespace", "psa", "--wait=true", "--timeout=60s"]);
    s.cluster.kubectl(&["delete", "pod", "web", "--wait=true", "--timeout=60s"]);
    eventually("the debug container's task is gone", WAIT, || s.containerd.ids("tasks").is_empty());
    eventually("no containerd containers left", WAIT, || s.containerd.ids("containers").is_empty());

    // `--target` a Linux container: the debug container joins its process namespace and sees its
    // processes; without a target it sees only its own.
    let app = "apiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, \"3601\"]\n";
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(app));
    let phase = || s.cluster.get_json(&["pod", "app"])["status"]["phase"].as_str().unwrap_or_default().to_string();
    eventually("pod app running", WAIT, || phase() == "Running");
    let logs = |c: &str| {
        String::from_utf8_lossy(&s.cluster.kubectl_output(&["logs", "app", "-c", c], None).stdout).into_owned()
    };
    s.cluster.kubectl(&["debug", "app", "--image=busybox", "-c", "peek", "--target=main", "--", "busybox", "ps"]);
    eventually("the targeted debug container lists the target's processes", WAIT, || {
        logs("peek").contains("sleep 3601")
    });
    s.cluster.kubectl(&["debug", "app", "--image=busybox", "-c", "alone", "--", "busybox", "ps"]);
    eventually("an untargeted debug container lists only its own", WAIT, || {
        let out = logs("alone");
        out.contains("busybox ps") && !out.contains("sleep 3601")
    });
    s.cluster.kubectl(&["delete", "pod", "app", "--wait=true", "--timeout=60s"]);
}

#[test]
fn a_wasm_only_node_says_why_a_linux_debug_container_waits() {
    let registry = common::node::Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let mirrors = common::linux::busybox_mirror(&registry, work.path());
    let cluster = common::Cluster::with_node_args(vec![
        "--linux-containers".into(),
        "off".into(),
        "--registry-config".into(),
        mirrors.display().to_string(),
    ]);
    let web = registry.push("hello-http", "1");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: api\n    image: {web}\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    let pod = || cluster.get_json(&["pod", "web"]);
    eventually("pod web running", WAIT, || pod()["status"]["phase"] == "Running");
    cluster.kubectl(&["debug", "web", "--image=busybox", "-c", "dbg", "--", "true"]);
    eventually("the debug container waits, saying why", WAIT, || {
        let p = pod();
        let Some(st) = p["status"]["ephemeralContainerStatuses"].as_array().and_then(|l| l.first().cloned()) else {
            return false;
        };
        let message = st["state"]["waiting"]["message"].as_str().unwrap_or_default().to_string();
        message.contains("Linux image") && message.contains("containerd")
    });
    // RBAC: the edit role may add ephemeral containers, the view role may not.
    cluster.kubectl(&["create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice"]);
    cluster.kubectl(&["create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob"]);
    let can = |user: &str| {
        let out = cluster.kubectl_output(
            &["auth", "can-i", "patch", "pods", "--subresource=ephemeralcontainers", &format!("--as={user}")],
            None,
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    eventually("edit may patch pods/ephemeralcontainers", WAIT, || can("alice") == "yes");
    assert_eq!(can("bob"), "no");
    // The Wasm container runs on, unharmed.
    assert_eq!(pod()["status"]["phase"], "Running");
    cluster.kubectl(&["delete", "pod", "web", "--wait=true", "--timeout=60s"]);
}
