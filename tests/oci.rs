//! End to end: Linux (OCI) containers in skiff's own kubelet, run by runc through a real (private)
//! containerd, beside Wasm containers in the same pod; images from a real loopback registry reached
//! through the node's registry mirror configuration (`image: busybox` stays `busybox`), the pod network
//! wired by the real CNI plugins, driven by the real kubectl.
//!
//! Needs root, containerd, runc, ctr, the CNI plugins, docker-registry, umoci, skopeo and busybox-static.

mod common;

use std::process::Command;
use std::time::Duration;

use common::eventually;

use common::linux::LinuxCluster as Setup;

const WAIT: Duration = Duration::from_secs(90);

impl Setup {
    fn start() -> Self {
        Setup::start_linux("skiff-oci")
    }

    fn jsonpath(&self, pod: &str, path: &str) -> String {
        let out = self.cluster.kubectl_output(&["get", "pod", pod, "-o", &format!("jsonpath={path}")], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_ready(&self, pod: &str) {
        eventually(&format!("pod {pod} Ready"), WAIT, || {
            self.jsonpath(pod, "{.status.conditions[?(@.type==\"Ready\")].status}") == "True"
        });
    }

    fn logs(&self, pod: &str, container: &str) -> String {
        let out = self.cluster.kubectl_output(&["logs", pod, "-c", container], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Deletes every pod and checks that nothing of them is left: containerd containers and tasks, the
    /// node's network namespaces.
    fn delete_all_and_check(&self) {
        self.cluster.kubectl(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"]);
        eventually("no containerd containers left", WAIT, || self.containerd.ids("containers").is_empty());
        assert!(self.containerd.ids("tasks").is_empty(), "{}", self.containerd.tasks_table());
        // The images' layers stay (committed snapshots); the containers' own are removed with them.
        let snapshots = self.containerd.ctr(&["snapshots", "ls"]);
        let table = String::from_utf8_lossy(&snapshots.stdout).into_owned();
        let left: Vec<&str> = table.lines().skip(1).filter(|l| !l.trim_end().ends_with("Committed")).collect();
        assert!(left.is_empty(), "snapshots left: {table}");
        // The pods' IPC and UTS namespaces are released with them.
        let pinned = self.cluster.data_dir().join(PINNED_NAMESPACES);
        let pinned = pinned.to_string_lossy().into_owned();
        eventually("the pods' IPC and UTS namespaces are unmounted", WAIT, || {
            !std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo").contains(&pinned)
        });
        let prefix = format!("skiff-{}-", self.cluster.node_name().replace(|c: char| !c.is_ascii_alphanumeric(), ""));
        eventually("the pods' network namespaces are gone", WAIT, || {
            let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns");
            // Pooled sandboxes stay (they belong to no pod): count only those with a pod is not possible from
            // here, so the check is that no more remain than the pool keeps.
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with(&prefix)).count() <= 2
        });
    }
}

/// Where the in-process node pins its pods' IPC and UTS namespaces, under the server's data directory.
const PINNED_NAMESPACES: &str = "node/containerd/pod-namespaces";

fn http_get(url: &str) -> Option<String> {
    let out = Command::new("curl").args(["-sf", "--max-time", "3", url]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn busybox_and_a_mixed_wasm_and_linux_pod_share_one_sandbox() {
    let s = Setup::start();
    let (web, tool) = (s.registry.push("hello-http", "1"), s.registry.push("tool", "1"));
    let node = s.cluster.node_name();
    let handlers = s.cluster.get_json(&["node", &node]);
    let handlers: Vec<&str> = handlers["status"]["runtimeHandlers"]
        .as_array()
        .expect("runtimeHandlers")
        .iter()
        .filter_map(|h| h["name"].as_str())
        .collect();
    assert!(handlers.contains(&"runc") && handlers.contains(&"skiff-wasm"), "{handlers:?}");

    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: shell}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: shell
    image: busybox
    command: [sh, -c, "echo started as $(id -u) on $(hostname); echo ns $(readlink /proc/self/ns/ipc) $(readlink /proc/self/ns/uts) on $(hostname); echo cpu $(cat /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu.weight /sys/fs/cgroup/cpu.max); sleep 3600"]
    resources:
      limits: {{memory: 64Mi, cpu: 500m}}
  - name: peer
    image: busybox
    command: [sh, -c, "echo ns $(readlink /proc/self/ns/ipc) $(readlink /proc/self/ns/uts) on $(hostname); sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: mixed}}
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{{name: shared, emptyDir: {{}}}}]
  initContainers:
  - name: seed
    image: {tool}
    args: [write, /shared/from-wasm, "written by wasm"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: api
    image: {web}
    ports: [{{containerPort: 8080}}]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: fetcher
    image: busybox
    command: [sh, -c]
    args:
    - until wget -qO /shared/page http://127.0.0.1:8080/; do sleep 0.2; done;
      cat /shared/page; echo written by busybox > /shared/from-busybox;
      cat /shared/from-wasm; echo; sleep 3600
    volumeMounts: [{{name: shared, mountPath: /shared}}]
"#
    );
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));

    // busybox alone: Running with a pod IP, its output in `kubectl logs`, its image by its ordinary name.
    s.wait_ready("shell");
    assert!(!s.jsonpath("shell", "{.status.podIP}").is_empty());
    eventually("shell's log", WAIT, || s.logs("shell", "shell").contains("started as 0 on shell"));
    // Its cgroup: the CPU limit as a quota (50 ms of 100), the request (defaulted from the limit) as
    // 512 shares (cgroup v1), or the weight runc derives from them (v2; not the default 100).
    let log = s.logs("shell", "shell");
    let cpu = log.lines().find_map(|l| l.strip_prefix("cpu ")).unwrap_or_default().to_string();
    let v1 = cpu == "512 50000";
    let v2 = cpu.ends_with(" 50000 100000") && !cpu.starts_with("100 ");
    assert!(v1 || v2, "cpu shares or weight, and quota: {cpu:?}");
    // Its two containers share one IPC and one UTS namespace (the pod's, named after it), not the
    // node's.
    let ns_of = |container: &str| {
        let mut line = String::new();
        eventually(&format!("{container}'s namespaces"), WAIT, || {
            line = s.logs("shell", container).lines().find(|l| l.starts_with("ns ")).unwrap_or_default().to_string();
            !line.is_empty()
        });
        line
    };
    let (shell_ns, peer_ns) = (ns_of("shell"), ns_of("peer"));
    assert_eq!(shell_ns, peer_ns);
    assert!(shell_ns.ends_with(" on shell"), "{shell_ns}");
    let node_ipc = std::fs::read_link("/proc/self/ns/ipc").expect("the node's ipc namespace");
    assert!(!shell_ns.contains(&node_ipc.to_string_lossy().into_owned()), "{shell_ns} is the node's");
    let uid = s.jsonpath("shell", "{.metadata.uid}");
    let pin = s.cluster.data_dir().join(PINNED_NAMESPACES).join(uid).join("ipc");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(mounts.contains(&pin.to_string_lossy().into_owned()), "{} is not mounted", pin.display());
    let image_id = s.jsonpath("shell", "{.status.containerStatuses[0].imageID}");
    assert!(image_id.starts_with("docker.io/library/busybox@sha256:"), "{image_id}");
    assert_eq!(s.jsonpath("shell", "{.status.containerStatuses[0].image}"), "busybox");
    // The image is containerd's, under its full name, unpacked into committed snapshots; each
    // running container has its own active snapshot on them.
    let images = s.containerd.ctr(&["images", "ls", "-q"]);
    let images = String::from_utf8_lossy(&images.stdout).into_owned();
    assert!(images.lines().any(|l| l == "docker.io/library/busybox:latest"), "containerd's images: {images}");
    let snapshots = String::from_utf8_lossy(&s.containerd.ctr(&["snapshots", "ls"]).stdout).into_owned();
    let kinds = |kind: &str| snapshots.lines().filter(|l| l.trim_end().ends_with(kind)).count();
    assert!(kinds("Committed") >= 1 && kinds("Active") >= 2, "{snapshots}");

    // The mixed pod: 2/2 with one IP; localhost and the emptyDir shared both ways.
    s.wait_ready("mixed");
    let ready = s.jsonpath("mixed", "{.status.containerStatuses[*].ready}");
    assert_eq!(ready, "true true", "{ready}");
    let ip = s.jsonpath("mixed", "{.status.podIP}");
    assert!(!ip.is_empty());
    eventually("the fetcher got the Wasm server's page over localhost", WAIT, || {
        let log = s.logs("mixed", "fetcher");
        log.contains("hello from skiff") && log.contains("written by wasm")
    });
    eventually("the Wasm server reads what busybox wrote", WAIT, || {
        http_get(&format!("http://{ip}:8080/file/shared/from-busybox")).as_deref() == Some("written by busybox\n")
    });
    // Every Linux container is a containerd task (three here); the Wasm ones run in-process.
    assert_eq!(s.containerd.ids("tasks").len(), 3, "{}", s.containerd.tasks_table());

    s.delete_all_and_check();
}

/// containerd killed (SIGKILL) and started again under a running Linux container: the container lives
/// on in its shim, the kubelet keeps waiting on it (no restart), exec reaches it, new Linux pods start,
/// and deleting everything leaves nothing behind.
#[test]
fn linux_containers_live_through_a_containerd_restart() {
    let mut s = Setup::start();
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: survivor}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - {name: c, image: busybox, command: [sleep, \"3600\"]}\n";
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
    s.wait_ready("survivor");
    let tasks_before = s.containerd.tasks_table();

    s.containerd.kill_and_restart();
    // containerd finds the running task again through its shim.
    eventually("the task RUNNING again in containerd", WAIT, || {
        s.containerd.tasks_table().lines().any(|l| l.contains("RUNNING"))
    });
    // The kubelet reaches the same container: exec goes through containerd's restored task.
    eventually("exec into the container after the restart", WAIT, || {
        s.cluster.kubectl_output(&["exec", "survivor", "--", "echo", "still here"], None).status.success()
    });
    let after = s.cluster.kubectl(&["exec", "survivor", "--", "echo", "still here"]);
    assert_eq!(after.trim(), "still here");
    assert_eq!(s.jsonpath("survivor", "{.status.containerStatuses[0].restartCount}"), "0", "{tasks_before}");
    assert_eq!(s.jsonpath("survivor", "{.status.phase}"), "Running");

    // A new Linux pod starts on the restarted containerd.
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: newcomer}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - {name: c, image: busybox, command: [sh, -c, \"echo born after; sleep 3600\"]}\n";
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
    s.wait_ready("newcomer");
    eventually("the newcomer's log", WAIT, || s.logs("newcomer", "c").contains("born after"));
    // The kubelet's wait on the survivor resumed: its process killed behind its back is seen as its
    // exit (137, not "containerd lost the container's task") and the container restarted.
    let id = s.containerd.ids("tasks").into_iter().find(|id| {
        let info = s.containerd.ctr(&["containers", "info", id]);
        String::from_utf8_lossy(&info.stdout).contains("default/survivor")
    });
    let id = id.expect("the survivor's task");
    assert!(s.containerd.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]).status.success());
    eventually("the survivor restarted after its kill", WAIT, || {
        s.jsonpath("survivor", "{.status.containerStatuses[0].restartCount}") == "1"
    });
    let last = s.jsonpath("survivor", "{.status.containerStatuses[0].lastState.terminated.exitCode}");
    let message = s.jsonpath("survivor", "{.status.containerStatuses[0].lastState.terminated.message}");
    assert_eq!(last, "137", "{message}");
    assert!(!message.contains("lost"), "{message}");
    s.delete_all_and_check();
}

/// What this cluster's Linux containers leave on the host, counted: containerd's containers, tasks
/// and snapshots, mounts under its directories, its network namespaces, the links on its bridge, the
/// cgroups of containers named `leakcheck`, and the pods' pinned namespaces. (Only this test's: other
/// tests run beside it.)
#[derive(Debug, PartialEq, Eq)]
struct HostFootprint {
    containers: usize,
    tasks: usize,
    snapshots: usize,
    mounts: usize,
    netns: usize,
    links: usize,
    cgroups: usize,
    pinned: usize,
}

impl Setup {
    fn footprint(&self) -> HostFootprint {
        let text = |out: std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
        let node = self.cluster.node_name();
        let (data, ctd) =
            (self.cluster.data_dir().display().to_string(), self.containerd.dir.path().display().to_string());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let netns_prefix = format!("skiff-{}-", node.replace(|c: char| !c.is_ascii_alphanumeric(), ""));
        let bridge = format!("sk{}", node.trim_start_matches('t'));
        let cgroups = ["memory", "cpu", "pids", "unified"]
            .iter()
            .filter_map(|c| std::fs::read_dir(format!("/sys/fs/cgroup/{c}/skiff")).ok())
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().contains("-leakcheck-")).count())
            .sum();
        HostFootprint {
            containers: self.containerd.ids("containers").len(),
            tasks: self.containerd.ids("tasks").len(),
            snapshots: text(self.containerd.ctr(&["snapshots", "ls"])).lines().count().saturating_sub(1),
            mounts: mountinfo.lines().filter(|l| l.contains(&data) || l.contains(&ctd)).count(),
            netns: text(Command::new("ip").args(["netns", "list"]).output().expect("ip netns"))
                .lines()
                .filter(|l| l.starts_with(&netns_prefix))
                .count(),
            links: text(Command::new("ip").args(["-o", "link", "show", "master", &bridge]).output().expect("ip link"))
                .lines()
                .count(),
            cgroups,
            pinned: std::fs::read_dir(self.cluster.data_dir().join(PINNED_NAMESPACES)).map_or(0, |d| d.count()),
        }
    }
}

/// 1,000 Linux pods created and deleted (a Deployment of busybox scaled between 100 and 0, ten
/// times) leave the host as they found it.
#[test]
fn a_thousand_linux_pod_cycles_leave_nothing_behind() {
    const REPLICAS: usize = 100;
    const ROUNDS: usize = 10;
    let s = Setup::start();
    // Warm: the image pulled, containerd started, the sandbox pool filled; then counted.
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: cycle}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: cycle}}}}\n  template:\n    metadata: {{labels: {{app: cycle}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - {{name: leakcheck, image: busybox, command: [sleep, \"3600\"]}}\n"
    );
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    let ready = || s.cluster.kubectl(&["get", "deploy", "cycle", "-o", "jsonpath={.status.readyReplicas}"]);
    let pods = || s.cluster.kubectl(&["get", "pods", "-l", "app=cycle", "-o", "name"]).lines().count();
    eventually("the first replica Ready", WAIT, || ready() == "1");
    s.cluster.kubectl(&["scale", "deploy/cycle", "--replicas=0"]);
    eventually("no replica", WAIT, || pods() == 0);
    eventually("the first replica's container gone", WAIT, || s.containerd.ids("containers").is_empty());
    let before = s.footprint();

    let cycles = Duration::from_secs(300);
    for round in 0..ROUNDS {
        s.cluster.kubectl(&["scale", "deploy/cycle", &format!("--replicas={REPLICAS}")]);
        eventually(&format!("round {round}: {REPLICAS} replicas Ready"), cycles, || ready() == REPLICAS.to_string());
        // One task per replica, once the previous round's last containers are removed (that trails
        // the pods' deletion, as the kubelet's container removal does).
        eventually(&format!("round {round}: {REPLICAS} tasks"), WAIT, || s.containerd.ids("tasks").len() == REPLICAS);
        if round == 0 {
            // The footprint sees what the pods hold while they run.
            let running = s.footprint();
            assert!(running.links >= REPLICAS && running.cgroups >= REPLICAS, "{running:?}");
            // A pod's IPC and UTS namespaces, and those of the spare sandboxes the pool (default
            // size 4) has refilled by now.
            assert!((REPLICAS..=REPLICAS + 4).contains(&running.pinned), "{running:?}");
            assert!(running.mounts > before.mounts, "{running:?}");
            assert!(running.snapshots >= before.snapshots + REPLICAS, "a snapshot per container: {running:?}");
        }
        s.cluster.kubectl(&["scale", "deploy/cycle", "--replicas=0"]);
        eventually(&format!("round {round}: every replica gone"), cycles, || pods() == 0);
    }
    eventually("every container removed from containerd", WAIT, || s.containerd.ids("containers").is_empty());
    let mut after = s.footprint();
    eventually("the host as before the cycles", WAIT, || {
        after = s.footprint();
        after == before
    });
    assert_eq!(after, before);
}

#[test]
fn linux_containers_fail_with_kubernetes_statuses() {
    let s = Setup::start();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: quits}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: quits
    image: busybox
    command: [sh, -c, "echo bye; exit 3"]
---
apiVersion: v1
kind: Pod
metadata: {{name: missing}}
spec:
  containers:
  - name: missing
    image: {}/nothing-here:1
---
apiVersion: v1
kind: Pod
metadata: {{name: rooted}}
spec:
  securityContext: {{runAsNonRoot: true}}
  containers:
  - name: rooted
    image: busybox
    command: [sleep, "3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: nobody}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsNonRoot: true, runAsUser: 65534}}
  containers:
  - name: nobody
    image: busybox
    command: [sh, -c, "echo uid=$(id -u) gid=$(id -g); sleep 3600"]
"#,
        s.registry.addr
    );
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));

    eventually("quits restarts with its exit code", WAIT, || {
        let restarts: i64 = s.jsonpath("quits", "{.status.containerStatuses[0].restartCount}").parse().unwrap_or(0);
        restarts >= 1
            && s.jsonpath("quits", "{.status.containerStatuses[0].lastState.terminated.exitCode}") == "3"
            && s.jsonpath("quits", "{.status.containerStatuses[0].lastState.terminated.reason}") == "Error"
    });
    eventually("quits backs off", WAIT, || {
        s.jsonpath("quits", "{.status.containerStatuses[0].state.waiting.reason}") == "CrashLoopBackOff"
    });
    assert!(s.logs("quits", "quits").contains("bye"));

    eventually("the missing image backs off", WAIT, || {
        let reason = s.jsonpath("missing", "{.status.containerStatuses[0].state.waiting.reason}");
        reason == "ImagePullBackOff" || reason == "ErrImagePull"
    });

    // The refusal is reported with Kubernetes' message (as the Failed event; the waiting reason turns into
    // CrashLoopBackOff between retries, where the kubelet keeps CreateContainerConfigError: see the report).
    let refusal = "container has runAsNonRoot and image will run as root (pod: \"default/rooted\", container: rooted)";
    eventually("runAsNonRoot refuses the root image", WAIT, || {
        let out = s.cluster.kubectl_output(&["get", "events", "--field-selector", "involvedObject.name=rooted"], None);
        String::from_utf8_lossy(&out.stdout).contains(refusal)
    });
    assert!(s.jsonpath("rooted", "{.status.containerStatuses[0].state.running}").is_empty());

    s.wait_ready("nobody");
    // Its group is the user's in the image's /etc/passwd (read from the image's layers in containerd).
    eventually("nobody runs as 65534", WAIT, || s.logs("nobody", "nobody").contains("uid=65534 gid=65534"));

    s.delete_all_and_check();
}

/// A Linux pod calls a Wasm Deployment by its Service's ClusterIP: the address allocated at
/// admission, the EndpointSlice of the ready Wasm pods, the pod's route to the service CIDR and the
/// node's nftables proxy, all real; the Service's name resolves in no DNS yet, so the test reads
/// the ClusterIP.
#[test]
fn a_linux_pod_reaches_a_wasm_deployment_through_its_cluster_ip() {
    let s = Setup::start();
    let web = s.registry.push("hello-http", "1");
    let manifest = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: api
        image: {web}
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: busybox
    command: [sleep, "3600"]
"#
    );
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    s.wait_ready("client");
    let cluster_ip =
        s.cluster.get_json(&["service", "web"])["spec"]["clusterIP"].as_str().unwrap_or_default().to_string();
    assert!(!cluster_ip.is_empty() && cluster_ip != "None", "a ClusterIP was allocated");
    eventually("two ready endpoints", WAIT, || {
        let slices = s.cluster.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
        let ready = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|slice| slice["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .count();
        ready == 2
    });
    // busybox's `wget -T` crashes in this static build; kubectl is bounded from outside instead.
    let kubeconfig = s.cluster.kubeconfig();
    let fetch = || {
        Command::new("timeout")
            .args(["20", common::KUBECTL, "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["exec", "client", "--", "wget", "-qO-", &format!("http://{cluster_ip}/")])
            .output()
            .expect("run kubectl")
    };
    eventually("the Linux pod reads the Wasm page through the ClusterIP", WAIT, || {
        String::from_utf8_lossy(&fetch().stdout).contains("hello from skiff")
    });
}

/// Image garbage collection with its thresholds forced to 0 % (and no minimum age), looking every
/// second: once no pod on the node names busybox, the node's copy goes (its index entry, its
/// record in containerd and, through containerd's garbage collector, its layers), and the next
/// busybox pod (`IfNotPresent`) pulls it again.
#[test]
fn unused_images_are_collected_when_the_disk_is_over_the_threshold() {
    let s = Setup::start_linux_with(
        "skiff-oci-gc",
        ["--image-gc-high-threshold", "0", "--image-gc-low-threshold", "0", "--image-minimum-gc-age", "0"]
            .into_iter()
            .chain(["--image-gc-period", "1s"])
            .map(String::from)
            .collect(),
    );
    let images = s.cluster.data_dir().join("node").join("images");
    let has_busybox =
        || std::fs::read_to_string(images.join("index.json")).unwrap_or_default().contains("library/busybox");
    // In containerd: the image record, and the layers' committed snapshots.
    let in_containerd = || {
        let listed = s.containerd.ctr(&["images", "ls", "-q"]);
        String::from_utf8_lossy(&listed.stdout).lines().any(|l| l == "docker.io/library/busybox:latest")
    };
    let layers = || {
        let listed = s.containerd.ctr(&["snapshots", "ls"]);
        String::from_utf8_lossy(&listed.stdout).lines().filter(|l| l.trim_end().ends_with("Committed")).count()
    };
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
             containers: [{{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, '3600']}}]\n"
        )
    };
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pod("first")));
    s.wait_ready("first");
    assert!(has_busybox() && in_containerd() && layers() == 1, "busybox is on the node while a pod uses it");
    s.delete_all_and_check();
    // Deleting the record lets containerd's garbage collector take the blobs and snapshots.
    eventually("busybox collected", WAIT, || !has_busybox() && !in_containerd() && layers() == 0);
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pod("second")));
    s.wait_ready("second");
    let events = s.cluster.kubectl(&["get", "events", "--field-selector", "involvedObject.name=second"]);
    assert!(events.contains("Successfully pulled image \"busybox\""), "pulled again: {events}");
    s.delete_all_and_check();
}

/// An image whose layers containerd holds already (busybox under a second name, after a busybox
/// pod ran) is pulled without them, and its container runs from the layers containerd had.
#[test]
fn layers_containerd_holds_already_are_not_downloaded_again() {
    let s = Setup::start_linux("skiff-oci-layers");
    let pod = |name: &str, image: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
             containers: [{{name: c, image: {image}, command: [sleep, '3600']}}]\n"
        )
    };
    let downloads = || {
        let path = format!("/api/v1/nodes/{}/proxy/metrics", s.cluster.node_name());
        let metrics = s.cluster.kubectl(&["get", "--raw", &path]);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("skiff_image_blob_downloads_total "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no blob download count in the node's metrics: {metrics}"))
    };
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pod("first", "busybox")));
    s.wait_ready("first");
    let before = downloads();
    let layout = format!("oci:{}:busybox", s.work.path().join("busybox").join("layout").display());
    skiff_testkit::image::push_to_registry(&layout, &s.registry.addr, "library/toolbox:1").expect("push");
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&pod("second", "toolbox:1")));
    s.wait_ready("second");
    // Its config is the one the node's cache keeps of busybox; its one layer is busybox's, in containerd.
    assert_eq!(downloads(), before, "toolbox:1 was pulled with a download");
    s.delete_all_and_check();
}
