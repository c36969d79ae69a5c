//! End to end: lifecycle hooks, grace periods and seccomp profiles of Linux (OCI) containers in skiff's
//! kubelet, with a real private containerd and runc, the offline busybox image from the loopback
//! registry and the real kubectl 1.32.
//!
//! Needs root, containerd, runc, ctr, the CNI plugins, docker-registry, umoci, skopeo and busybox-static.

mod common;

use std::time::{Duration, Instant};

use common::eventually;
use common::linux::LinuxCluster as Setup;

const WAIT: Duration = Duration::from_secs(90);

impl Setup {
    fn jsonpath(&self, pod: &str, path: &str) -> String {
        let out = self.cluster.kubectl_output(&["get", "pod", pod, "-o", &format!("jsonpath={path}")], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ready(&self, pod: &str) -> bool {
        self.jsonpath(pod, "{.status.conditions[?(@.type==\"Ready\")].status}") == "True"
    }

    fn exec(&self, pod: &str, container: &str, script: &str) -> String {
        let out = self.cluster.kubectl_output(&["exec", pod, "-c", container, "--", "sh", "-c", script], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The messages of the events of `reason` about pod `pod`.
    fn events(&self, pod: &str, reason: &str) -> Vec<String> {
        let selector = format!("involvedObject.name={pod},reason={reason}");
        let out = self.cluster.kubectl_output(&["get", "events", "--field-selector", &selector, "-o", "json"], None);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        list["items"].as_array().into_iter().flatten().filter_map(|e| e["message"].as_str().map(String::from)).collect()
    }

    fn logs(&self, pod: &str, container: &str) -> String {
        let out = self.cluster.kubectl_output(&["logs", pod, "-c", container], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// As [`eventually`], printing the pod, its events and its logs when `check` never holds.
    fn eventually_or_dump(&self, what: &str, pod: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let yaml = self.cluster.kubectl_output(&["get", "pod", pod, "-o", "yaml"], None);
        let events = self
            .cluster
            .kubectl_output(&["get", "events", "--field-selector", &format!("involvedObject.name={pod}")], None);
        panic!(
            "timed out waiting for {what}\n{}\n{}\nlogs: {}",
            String::from_utf8_lossy(&yaml.stdout),
            String::from_utf8_lossy(&events.stdout),
            self.logs(pod, "app")
        );
    }

    /// Deletes every pod and checks that no containerd container or task is left.
    fn delete_all_and_check(&self) {
        self.cluster.kubectl(&["delete", "pods", "--all", "--wait=true", "--timeout=90s"]);
        eventually("no containerd containers left", WAIT, || self.containerd.ids("containers").is_empty());
        assert!(self.containerd.ids("tasks").is_empty(), "{}", self.containerd.tasks_table());
    }
}

/// An exec readiness and liveness probe and exec postStart and preStop hooks on a busybox container:
/// the postStart hook runs before the container counts as Running (the readiness probe needs its
/// file), a liveness failure runs the preStop hook before SIGTERM (the order is in the shared emptyDir
/// a second container reads) and the container restarts, running its postStart hook again.
#[test]
fn exec_probes_and_hooks_run_inside_a_linux_container() {
    let s = Setup::start_linux("skiff-life-hooks");
    let manifest = r#"apiVersion: v1
kind: Pod
metadata: {name: hooked}
spec:
  terminationGracePeriodSeconds: 5
  volumes: [{name: shared, emptyDir: {}}]
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "trap 'echo got-TERM >> /shared/log; exit 0' TERM; echo started >> /shared/log; while true; do sleep 0.2; done"]
    volumeMounts: [{name: shared, mountPath: /shared}]
    lifecycle:
      postStart:
        exec: {command: [sh, -c, "echo poststart >> /shared/log; echo ok > /shared/post"]}
      preStop:
        exec: {command: [sh, -c, "echo prestop >> /shared/log; rm -f /shared/post /shared/kill-me"]}
    readinessProbe:
      exec: {command: [sh, -c, "cat /shared/post"]}
      periodSeconds: 1
      timeoutSeconds: 10
    livenessProbe:
      exec: {command: [sh, -c, "test ! -f /shared/kill-me"]}
      periodSeconds: 1
      timeoutSeconds: 10
      failureThreshold: 1
  - name: watcher
    image: busybox
    command: [sh, -c, "while true; do sleep 0.2; done"]
    volumeMounts: [{name: shared, mountPath: /shared}]
"#;
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
    eventually("hooked Ready (its readiness exec probe reads the postStart hook's file)", WAIT, || s.ready("hooked"));
    let log = s.exec("hooked", "watcher", "cat /shared/log");
    assert!(log.contains("poststart"), "{log}");

    // The liveness probe fails: preStop, then SIGTERM (the container's trap), then a new run.
    s.exec("hooked", "watcher", "touch /shared/kill-me");
    eventually("app restarted after its liveness probe failed", WAIT, || {
        s.jsonpath("hooked", "{.status.containerStatuses[?(@.name==\"app\")].restartCount}").parse::<i32>().unwrap_or(0)
            >= 1
    });
    eventually("the new run is Ready again", WAIT, || s.ready("hooked"));
    let log = s.exec("hooked", "watcher", "cat /shared/log");
    let lines: Vec<&str> = log.lines().collect();
    let at = |what: &str| lines.iter().position(|l| *l == what).unwrap_or_else(|| panic!("no {what} in {log}"));
    assert!(at("prestop") < at("got-TERM"), "the preStop hook runs before SIGTERM: {log}");
    assert!(lines.iter().filter(|l| **l == "poststart").count() >= 2, "postStart runs per run: {log}");
    let killing = s.events("hooked", "Killing");
    assert!(killing.iter().any(|m| m.contains("failed liveness probe")), "{killing:?}");
    // The exit of a stopped container is its own (the trap's exit 0), not a SIGKILL.
    assert_eq!(
        s.jsonpath("hooked", "{.status.containerStatuses[?(@.name==\"app\")].lastState.terminated.exitCode}"),
        "0"
    );
    s.delete_all_and_check();
}

/// `lifecycle.stopSignal` (KEP-4960): a container that names SIGUSR1 is stopped with it, not with
/// SIGTERM (its liveness probe fails, so the kubelet stops and restarts it; the traps write which
/// signal came into an emptyDir another container reads), and exits by its own trap (code 0, not
/// a SIGKILL at the end of its 60 s grace). Without `spec.os.name`, or with a signal that is not
/// one, the pod is refused with kube-apiserver's message.
#[test]
fn a_container_is_stopped_with_its_stop_signal() {
    let s = Setup::start_linux("skiff-life-stopsig");
    let pod = |os: &str, signal: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: signalled}}
spec:
  terminationGracePeriodSeconds: 60
{os}  volumes: [{{name: shared, emptyDir: {{}}}}]
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "trap 'echo got-TERM >> /shared/log' TERM; trap 'echo got-USR1 >> /shared/log; exit 0' USR1; echo started >> /shared/log; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
    lifecycle:
      stopSignal: {signal}
    livenessProbe:
      exec: {{command: [sh, -c, "test ! -f /shared/kill-me"]}}
      periodSeconds: 1
      failureThreshold: 1
  - name: watcher
    image: busybox
    command: [sh, -c, "while true; do sleep 0.2; done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
"#
        )
    };
    let refused = |manifest: &str, want: &str| {
        let out = s.cluster.kubectl_output(&["apply", "-f", "-"], Some(manifest));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(want), "{stderr}");
    };
    refused(
        &pod("", "SIGUSR1"),
        "spec.containers[0].lifecycle.stopSignal: Forbidden: may not be set for containers with empty `spec.os.name`",
    );
    refused(
        &pod("  os: {name: linux}\n", "SIGNOPE"),
        "spec.containers[0].lifecycle.stopSignal: Unsupported value: \"SIGNOPE\"",
    );
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pod("  os: {name: linux}\n", "SIGUSR1")));
    s.eventually_or_dump("app running its traps", "signalled", || {
        s.exec("signalled", "watcher", "cat /shared/log").contains("started")
    });
    // Kubernetes 1.33 reports the chosen signal; a container with neither its own nor an image's shows none.
    let stop_signal =
        |c: &str| s.jsonpath("signalled", &format!("{{.status.containerStatuses[?(@.name==\"{c}\")].stopSignal}}"));
    assert_eq!(stop_signal("app"), "SIGUSR1");
    assert_eq!(stop_signal("watcher"), "");
    s.exec("signalled", "watcher", "touch /shared/kill-me");
    eventually("app restarted after its liveness probe failed", WAIT, || {
        s.jsonpath("signalled", "{.status.containerStatuses[?(@.name==\"app\")].restartCount}")
            .parse::<i32>()
            .unwrap_or(0)
            >= 1
    });
    let log = s.exec("signalled", "watcher", "cat /shared/log");
    assert!(log.contains("got-USR1"), "stopped with SIGUSR1: {log}");
    assert!(!log.contains("got-TERM"), "never sent SIGTERM: {log}");
    assert_eq!(
        s.jsonpath("signalled", "{.status.containerStatuses[?(@.name==\"app\")].lastState.terminated.exitCode}"),
        "0",
        "the trap's own exit, not a SIGKILL"
    );
    s.exec("signalled", "watcher", "rm -f /shared/kill-me");
    s.delete_all_and_check();
}

/// `kubectl delete --grace-period=N` on containers that ignore SIGTERM: each is killed after its grace
/// period, not earlier and not after a fixed time; a preStop hook's time comes out of the same budget.
#[test]
fn containers_ignoring_sigterm_are_killed_after_the_grace_period() {
    let s = Setup::start_linux("skiff-life-grace");
    let pod = |name: &str, lifecycle: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 60
  containers:
  - name: stubborn
    image: busybox
    command: [sh, -c, "trap '' TERM; echo ignoring; while true; do sleep 0.2; done"]
{lifecycle}
---
"#
        )
    };
    let hook = "    lifecycle:\n      preStop:\n        sleep: {seconds: 5}\n";
    let manifest = pod("quick", "") + &pod("slow", "") + &pod("hooked", hook);
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    for name in ["quick", "slow", "hooked"] {
        eventually(&format!("{name} Ready"), WAIT, || s.ready(name));
        eventually(&format!("{name} ignores SIGTERM"), WAIT, || s.logs(name, "stubborn").contains("ignoring"));
    }
    let timed = |name: &'static str, grace: &'static str| {
        let cluster = &s.cluster;
        move || {
            let began = Instant::now();
            cluster.kubectl(&[
                "delete",
                "pod",
                name,
                &format!("--grace-period={grace}"),
                "--wait=true",
                "--timeout=90s",
            ]);
            began.elapsed()
        }
    };
    let (quick, slow, hooked) = std::thread::scope(|scope| {
        let quick = scope.spawn(timed("quick", "3"));
        let slow = scope.spawn(timed("slow", "15"));
        let hooked = scope.spawn(timed("hooked", "15"));
        (quick.join().expect("quick"), slow.join().expect("slow"), hooked.join().expect("hooked"))
    });
    eprintln!("deletion took: quick (3 s) {quick:?}, slow (15 s) {slow:?}, hooked (15 s, 5 s hook) {hooked:?}");
    // Killed at 3 s: not before, and well before a fixed 10 s.
    assert!(quick >= Duration::from_secs(3) && quick < Duration::from_secs(10), "quick took {quick:?}");
    // Killed at 15 s: past a fixed 10 s, and not the pod's 60 s.
    assert!(slow >= Duration::from_secs(15) && slow < Duration::from_secs(25), "slow took {slow:?}");
    // The 5 s hook and SIGTERM share the 15 s: killed at 15 s, not at 20 s.
    assert!(hooked >= Duration::from_secs(15) && hooked < Duration::from_secs(19), "hooked took {hooked:?}");
    s.delete_all_and_check();
}

/// A failing postStart hook kills the container (`FailedPostStartHook`) and it restarts per its
/// restart policy, never Running; a failing preStop hook is a Warning and the stop goes on.
/// `RuntimeDefault` seccomp refuses `unshare` (EPERM); an Unconfined privileged container may; a
/// Localhost profile from the node's `<data-dir>/seccomp/` applies; a missing one is a
/// CreateContainerError that names the file.
#[test]
fn failing_hooks_and_seccomp_profiles() {
    let s = Setup::start_linux("skiff-life-seccomp");
    // A Localhost profile in the node's seccomp directory, in the Docker format: mkdir refused.
    let profiles = s.cluster.data_dir().join("node/seccomp/profiles");
    std::fs::create_dir_all(&profiles).expect("seccomp dir");
    std::fs::write(
        profiles.join("no-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .expect("profile");
    let manifest = r#"apiVersion: v1
kind: Pod
metadata: {name: bad-start}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "while true; do sleep 0.2; done"]
    lifecycle:
      postStart:
        exec: {command: [sh, -c, "echo nope; exit 7"]}
---
apiVersion: v1
kind: Pod
metadata: {name: bad-stop}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "while true; do sleep 0.2; done"]
    lifecycle:
      preStop:
        exec: {command: [sh, -c, "exit 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: confined}
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "grep Seccomp: /proc/self/status; unshare -U sh -c : && echo unshare-ok || echo unshare-refused; sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: unconfined}
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: app
    image: busybox
    securityContext:
      privileged: true
      seccompProfile: {type: Unconfined}
    command: [sh, -c, "grep Seccomp: /proc/self/status; unshare -n sh -c : && echo unshare-ok || echo unshare-refused; sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: local}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "mkdir /tmp/made && echo mkdir-ok || echo mkdir-refused; sleep 3600"]
    securityContext:
      seccompProfile: {type: Localhost, localhostProfile: profiles/no-mkdir.json}
---
apiVersion: v1
kind: Pod
metadata: {name: local-missing}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: [sleep, "3600"]
    securityContext:
      seccompProfile: {type: Localhost, localhostProfile: profiles/absent.json}
"#;
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(manifest));

    eventually("bad-start's postStart hook failed and the container restarted", WAIT, || {
        let failed = s.events("bad-start", "FailedPostStartHook");
        failed.iter().any(|m| {
            m.contains("Exec lifecycle hook ([sh -c echo nope; exit 7])")
                && m.contains("exited with 7")
                && m.contains("nope")
        }) && s.jsonpath("bad-start", "{.status.containerStatuses[0].restartCount}").parse::<i32>().unwrap_or(0) >= 1
    });
    assert!(s.jsonpath("bad-start", "{.status.containerStatuses[0].state.running}").is_empty());
    assert!(!s.ready("bad-start"));
    assert!(s.events("bad-start", "Killing").iter().any(|m| m == "FailedPostStartHook"));

    eventually("confined runs", WAIT, || s.logs("confined", "app").contains("unshare-"));
    let confined = s.logs("confined", "app");
    assert!(confined.contains("Seccomp:\t2"), "a seccomp filter is on: {confined}");
    assert!(confined.contains("unshare-refused"), "{confined}");
    assert!(confined.contains("Operation not permitted"), "{confined}");
    s.eventually_or_dump("unconfined runs", "unconfined", || s.logs("unconfined", "app").contains("unshare-"));
    let unconfined = s.logs("unconfined", "app");
    assert!(unconfined.contains("Seccomp:\t0") && unconfined.contains("unshare-ok"), "{unconfined}");

    s.eventually_or_dump("the Localhost profile applies", "local", || s.logs("local", "app").contains("mkdir-"));
    let local = s.logs("local", "app");
    assert!(local.contains("mkdir-refused") && local.contains("Operation not permitted"), "{local}");

    eventually("a missing Localhost profile is a CreateContainerError", WAIT, || {
        s.events("local-missing", "Failed")
            .iter()
            .any(|m| m.contains("cannot load seccomp profile") && m.contains("seccomp/profiles/absent.json"))
    });
    assert!(s.jsonpath("local-missing", "{.status.containerStatuses[0].state.running}").is_empty());

    eventually("bad-stop Ready", WAIT, || s.ready("bad-stop"));
    s.cluster.kubectl(&["delete", "pod", "bad-stop", "--wait=true", "--timeout=60s"]);
    eventually("bad-stop's failed preStop hook is a Warning event", WAIT, || {
        s.events("bad-stop", "FailedPreStopHook").iter().any(|m| m.contains("exited with 3"))
    });

    s.delete_all_and_check();
}

/// A native sidecar (an init container with `restartPolicy: Always`, Kubernetes 1.29+): it starts
/// before the app container (whose first line shows the sidecar's file already there) and keeps
/// running beside it, the pod is 2/2 Ready with both, and when the sidecar exits it alone is
/// restarted, even under `restartPolicy: Never`.
#[test]
fn a_native_sidecar_runs_beside_the_app_and_is_restarted() {
    let s = Setup::start_linux("skiff-life-sidecar");
    let manifest = r#"apiVersion: v1
kind: Pod
metadata: {name: sidecar}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  volumes: [{name: shared, emptyDir: {}}]
  initContainers:
  - name: beat
    image: busybox
    restartPolicy: Always
    command: [sh, -c, "trap 'exit 3' TERM; while true; do echo beat >> /shared/beat; sleep 0.2; done"]
    volumeMounts: [{name: shared, mountPath: /shared}]
    startupProbe:
      exec: {command: [test, -f, /shared/beat]}
      periodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "test -f /shared/beat && echo sidecar-first; sleep 3600"]
    volumeMounts: [{name: shared, mountPath: /shared}]
"#;
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
    s.eventually_or_dump("the pod Ready", "sidecar", || s.ready("sidecar"));
    assert_eq!(s.jsonpath("sidecar", "{.status.phase}"), "Running");
    assert!(!s.jsonpath("sidecar", "{.status.initContainerStatuses[0].state.running.startedAt}").is_empty());
    assert_eq!(s.jsonpath("sidecar", "{.status.initContainerStatuses[0].ready}"), "true");
    eventually("the app saw the sidecar's file at its start", WAIT, || {
        s.logs("sidecar", "app").contains("sidecar-first")
    });

    s.exec("sidecar", "beat", "kill 1");
    s.eventually_or_dump("the sidecar restarted", "sidecar", || {
        s.jsonpath("sidecar", "{.status.initContainerStatuses[0].restartCount}") == "1"
            && !s.jsonpath("sidecar", "{.status.initContainerStatuses[0].state.running.startedAt}").is_empty()
    });
    assert_eq!(s.jsonpath("sidecar", "{.status.initContainerStatuses[0].lastState.terminated.exitCode}"), "3");
    assert_eq!(s.jsonpath("sidecar", "{.status.containerStatuses[0].restartCount}"), "0");
    assert_eq!(s.jsonpath("sidecar", "{.status.phase}"), "Running");
    s.delete_all_and_check();
}
