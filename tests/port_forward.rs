//! End to end: `kubectl port-forward` through the API server's `pods/portforward` proxy to the
//! kubelet over mutual TLS, which connects to the pod's IP. kubectl 1.32 tunnels SPDY in WebSocket
//! (`SPDY/3.1+portforward.k8s.io`); kubectl 1.29 upgrades to SPDY/3.1 directly. A Wasm HTTP pod
//! (also reached as deploy/web and svc/web, which kubectl resolves to a pod), concurrent
//! connections on one forward, the Python client's WebSocket channel form (`?ports=`), a port
//! nothing listens on (kubectl prints the kubelet's error and, as client-go does, ends the
//! forward), and a Linux (busybox httpd) pod.
//!
//! The Linux test needs root, containerd, runc, ctr, the CNI plugins, docker-registry, umoci, skopeo
//! and busybox-static.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, free_port, Cluster, Process, KUBECTL};

const KUBECTL_129: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.29";
const WAIT: Duration = Duration::from_secs(120);

/// A running `kubectl port-forward` on its own local port, killed on drop.
struct Forward {
    process: Process,
    port: u16,
    output: Arc<Mutex<String>>,
}

impl Forward {
    /// Starts `kubectl port-forward <target> <free port>:<remote>` and waits (bounded) for its
    /// "Forwarding from" line.
    fn start(kubectl: &str, kubeconfig: &std::path::Path, target: &str, remote: u16) -> Self {
        let port = free_port();
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["port-forward", "--address", "127.0.0.1", target, &format!("{port}:{remote}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl port-forward");
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut out = sink.lock().expect("output");
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        let mut forward = Forward { process: Process(Some(child)), port, output };
        let ready = format!("Forwarding from 127.0.0.1:{port}");
        eventually(&format!("kubectl port-forward {target} ready"), Duration::from_secs(60), || {
            if forward.exited() {
                panic!("kubectl port-forward {target} ended: {}", forward.output());
            }
            forward.output().contains(&ready)
        });
        forward
    }

    fn output(&self) -> String {
        self.output.lock().expect("output").clone()
    }

    fn exited(&mut self) -> bool {
        self.process.0.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// `curl` of `path` through the forward: (exit success, body).
    fn curl(&self, path: &str) -> (bool, String) {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "30", &format!("http://127.0.0.1:{}{path}", self.port)])
            .output()
            .expect("curl");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn get(&self, path: &str) -> String {
        let (ok, body) = self.curl(path);
        assert!(ok, "curl {path} through port {} failed; kubectl said: {}", self.port, self.output());
        body
    }
}

const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: web\n        image: IMAGE\n        ports:\n        - {name: http, containerPort: 8080}\n        readinessProbe:\n          httpGet: {path: /healthz, port: 8080}\n          periodSeconds: 1\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: http}\n";

#[test]
fn port_forward_to_a_wasm_pod_with_kubectl_1_32_and_1_29() {
    let c = Cluster::with_node();
    let registry = common::node::Registry::start();
    let image = registry.push("hello-http", "1");
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&WEB.replace("IMAGE", &image)));
    let out = c.kubectl(&["rollout", "status", "deploy/web", "--timeout=180s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let pod = c.kubectl(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"]);
    let kubeconfig = c.kubeconfig();

    // kubectl 1.32 (SPDY tunnelled in WebSocket) to the pod by name.
    let forward = Forward::start(KUBECTL, &kubeconfig, &format!("pod/{pod}"), 8080);
    assert_eq!(forward.get("/"), "hello from skiff\n");
    assert_eq!(forward.get("/healthz"), "ok");
    // Many connections at once on the one forward: 100 concurrent HTTP requests, as the issue asks.
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let port = forward.port;
            std::thread::spawn(move || {
                let out = Command::new("curl")
                    .args(["-s", "--max-time", "30", &format!("http://127.0.0.1:{port}/")])
                    .output()
                    .expect("curl");
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("curl thread"), "hello from skiff\n", "kubectl said: {}", forward.output());
    }
    assert!(forward.output().contains("Handling connection for"), "{}", forward.output());
    drop(forward);
    // It was the WebSocket tunnel, not kubectl's fallback to a SPDY upgrade.
    let log = c.server_log();
    assert!(log.contains("port-forward connection") && log.contains("websocket"), "{}", common::tail(&log));
    assert!(!log.contains("transport=\"spdy\""), "{}", common::tail(&log));

    // A Deployment and a Service: kubectl picks the pod, and the Service's port maps to targetPort.
    let deploy = Forward::start(KUBECTL, &kubeconfig, "deploy/web", 8080);
    assert_eq!(deploy.get("/"), "hello from skiff\n");
    drop(deploy);
    let svc = Forward::start(KUBECTL, &kubeconfig, "svc/web", 80);
    assert_eq!(svc.get("/"), "hello from skiff\n");
    drop(svc);

    // kubectl 1.29 speaks SPDY/3.1 over a plain upgrade.
    let old = Forward::start(KUBECTL_129, &kubeconfig, &format!("pod/{pod}"), 8080);
    assert_eq!(old.get("/"), "hello from skiff\n");
    assert_eq!(old.get("/healthz"), "ok");
    drop(old);
    assert!(c.server_log().contains("transport=\"spdy\""), "{}", common::tail(&c.server_log()));

    // The Python client (WebSocket channels, `?ports=`): a GET through the forward, and a refused
    // port's error on its error channel.
    let stdout = python_check(&c, "port_forward_check.py", &[&pod]);
    assert!(stdout.contains(&format!("error forwarding port 9 to pod {pod}")), "{stdout}");

    // A port nothing listens on: the kubelet's error reaches kubectl on the error stream.
    let mut closed = Forward::start(KUBECTL, &kubeconfig, &format!("pod/{pod}"), 9);
    let (ok, body) = closed.curl("/");
    assert!(!ok || body.is_empty(), "{body}");
    eventually("kubectl reports the refused port", Duration::from_secs(30), || {
        let out = closed.output();
        out.contains("an error occurred forwarding") && out.contains("connect: connection refused")
    });
    let said = closed.output();
    assert!(said.contains(&format!("error forwarding port 9 to pod {pod}, uid ")), "{said}");
    // kubectl (1.29 and 1.32 alike) then closes the whole connection on an error from the error
    // stream, as client-go's port-forward does: the forward ends. (The kubelet keeps serving the
    // connection's other pairs; the unit tests of streaming::port_forward show it.)
    eventually("kubectl ends the forward after the error", Duration::from_secs(30), || closed.exited());
    assert!(closed.output().contains("lost connection to pod"), "{}", closed.output());
}

const HTTPD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: httpd}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: busybox
    command: [sh, -c, "busybox mkdir -p /www && echo linux-hello > /www/index.html && exec busybox httpd -f -p 8080 -h /www"]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
"#;

/// Runs tests/python/`script` with the cluster's kubeconfig and `args` (bounded to 60 s); asserts it
/// ends with `OK` and returns its output.
fn python_check(c: &Cluster, script: &str, args: &[&str]) -> String {
    let path = skiff_testkit::repo_root().join("tests/python").join(script);
    let out = Command::new("timeout")
        .arg("60")
        .arg("python3")
        .arg(&path)
        .arg(c.kubeconfig())
        .args(args)
        .env("HOME", c.data_dir())
        .env("TMPDIR", c.data_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("python3 {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.lines().last() == Some("OK"),
        "{script}: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        common::tail(&c.server_log())
    );
    stdout
}

#[test]
fn port_forward_to_a_linux_pod() {
    let s = common::linux::LinuxCluster::start_linux("skiff-pf");
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(HTTPD));
    eventually("pod httpd Ready", WAIT, || {
        let out = s.cluster.kubectl_output(
            &["get", "pod", "httpd", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
            None,
        );
        String::from_utf8_lossy(&out.stdout) == "True"
    });
    let kubeconfig = s.cluster.kubeconfig();
    for kubectl in [KUBECTL, KUBECTL_129] {
        let forward = Forward::start(kubectl, &kubeconfig, "pod/httpd", 8080);
        assert_eq!(forward.get("/index.html"), "linux-hello\n", "{kubectl}");
    }
    // The Python client's exec (its `stream` module) into the same Linux container.
    let container = s.cluster.kubectl(&["get", "pod", "httpd", "-o", "jsonpath={.spec.containers[0].name}"]);
    python_check(&s.cluster, "exec_check.py", &["httpd", container.trim()]);
    let _ = s.cluster.kubectl_output(&["delete", "pod", "httpd", "--wait=true", "--timeout=60s"], None);
}
