//! End to end: `kubectl exec` and `kubectl cp` (tar over exec) into a Linux (OCI) busybox container with
//! the real kubectl 1.32 (WebSocket, `v5.channel.k8s.io`), through the API server's proxy to the
//! kubelet over mutual TLS, and containerd's exec API; kubectl 1.29 over SPDY/3.1; RBAC's
//! `create pods/exec`; a Wasm container answers with the kubelet's toolbox.
//!
//! Needs root, containerd, runc, ctr, the CNI plugins, docker-registry, umoci, skopeo and busybox-static.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{eventually, KUBECTL};

use common::linux::LinuxCluster as Setup;

const WAIT: Duration = Duration::from_secs(90);

impl Setup {
    fn start() -> Self {
        Setup::start_linux("skiff-exec")
    }

    /// kubectl bounded by a timeout (a stream that does not end fails the test instead of hanging it),
    /// run in the work directory.
    fn kubectl(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.arg("60").arg(KUBECTL).arg("--kubeconfig").arg(self.cluster.kubeconfig());
        cmd.arg("--cache-dir").arg(self.work.path().join("cache")).args(args).current_dir(self.work.path());
        cmd.env("HOME", self.work.path());
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin");
            // kubectl may end before reading all of it (a command that fails at once).
            if let Err(e) = pipe.write_all(input) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
            }
        }
        child.wait_with_output().expect("kubectl output")
    }

    fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {:?}\nstdout: {}\nstderr: {}\nserver log: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            common::tail(&self.cluster.server_log())
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_ready(&self, pod: &str) {
        self.cluster.wait_pod_ready(pod, WAIT);
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl_output(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"], None);
    }
}

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: box}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: busybox
    command: [sh, -c, "echo ready; sleep 3600"]
    env: [{name: GREETING, value: from-the-spec}]
    workingDir: /tmp
"#;

#[test]
fn kubectl_exec_and_cp_into_a_linux_container() {
    let s = Setup::start();
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(POD));
    s.wait_ready("box");
    // The test image links a few busybox applets only; kubectl cp needs tar.
    s.ok(&["exec", "box", "--", "sh", "-c", "for a in tar wc tty stty; do busybox ln -s busybox /bin/$a; done"], None);

    // Output, and the container's own env and working directory.
    assert_eq!(s.ok(&["exec", "box", "--", "echo", "hi"], None), "hi\n");
    assert_eq!(s.ok(&["exec", "box", "--", "sh", "-c", "echo $GREETING $(pwd)"], None), "from-the-spec /tmp\n");

    // The exit code goes through the error channel: kubectl exits with it.
    let out = s.kubectl(&["exec", "box", "--", "sh", "-c", "exit 3"], None);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", String::from_utf8_lossy(&out.stderr));

    // stderr stays separate from stdout.
    let out = s.kubectl(&["exec", "box", "--", "sh", "-c", "echo out; echo err >&2"], None);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // stdin: piped input comes back, and the command ends when stdin closes (v5 half-close).
    let input = b"line one\nline two\n";
    assert_eq!(s.ok(&["exec", "-i", "box", "--", "cat"], Some(input)).as_bytes(), input);
    assert_eq!(s.ok(&["exec", "-i", "box", "--", "wc", "-c"], Some(&[7u8; 100_000])).trim(), "100000");

    // An unknown container: the API server's 400 with Kubernetes' message.
    let out = s.kubectl(&["exec", "box", "-c", "nope", "--", "true"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("container nope is not valid for pod box"), "{stderr}");

    // A command that does not exist fails with the runtime's reason.
    let out = s.kubectl(&["exec", "-i", "box", "--", "no-such-command"], Some(&[1u8; 200_000]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-command"), "{stderr}");

    // kubectl cp in both directions (tar over exec), binary content intact.
    let content: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(s.work.path().join("data.bin"), &content).expect("write");
    s.ok(&["cp", "data.bin", "box:/tmp/data.bin"], None);
    assert_eq!(
        s.ok(&["exec", "box", "--", "wc", "-c", "/tmp/data.bin"], None).split_whitespace().next(),
        Some("300000")
    );
    s.ok(&["cp", "box:/tmp/data.bin", "back.bin"], None);
    assert!(std::fs::read(s.work.path().join("back.bin")).expect("read back") == content, "cp changed the bytes");

    // A terminal: kubectl in a pseudo-terminal (script), the command sees a tty. `timeout
    // --foreground` keeps kubectl in the terminal's foreground process group: in a background one,
    // its switch to raw mode stops it (SIGTTOU) when the test runs without a controlling terminal.
    let command = format!(
        "timeout --foreground 60 {KUBECTL} --kubeconfig {} --cache-dir {} exec -it box -- sh -c 'tty; echo cols=$(stty size)'",
        s.cluster.kubeconfig().display(),
        s.work.path().join("cache").display()
    );
    let out =
        Command::new("script").args(["-qec", &command, "/dev/null"]).stdin(Stdio::null()).output().expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("/dev/pts/"), "{:?} {text}", out.status);

    // A client that goes away mid-stream: its process is killed. No exec process is left in the
    // container's task.
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "3", KUBECTL]).arg("--kubeconfig").arg(s.cluster.kubeconfig());
    let out = cmd.args(["exec", "box", "--", "sleep", "300"]).output().expect("kubectl");
    assert!(!out.status.success(), "killed by timeout");
    let tasks = s.containerd.ctr(&["tasks", "ls", "-q"]);
    let ids: Vec<String> = String::from_utf8_lossy(&tasks.stdout).lines().map(String::from).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    eventually("only the container's own process is left", WAIT, || {
        let ps = s.containerd.ctr(&["tasks", "ps", &ids[0]]);
        String::from_utf8_lossy(&ps.stdout).lines().skip(1).count() == 1
    });
    let _ = &s.registry;
}

#[test]
fn exec_needs_create_on_pods_exec_and_wasm_containers_refuse_it() {
    let s = Setup::start();
    let web = s.registry.push("hello-http", "1");
    let manifest = format!(
        "{POD}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: wasm}}\nspec:\n  containers:\n  - name: api\n    image: {web}\n"
    );
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
    s.wait_ready("box");
    s.wait_ready("wasm");

    s.ok(&["create", "serviceaccount", "viewer"], None);
    s.ok(&["create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods"], None);
    s.ok(&["create", "rolebinding", "viewer-reads", "--role=pod-reader", "--serviceaccount=default:viewer"], None);
    let token = s.ok(&["create", "token", "viewer", "--duration=10m"], None).trim().to_string();
    // Reading the pod is allowed; exec (a GET over WebSocket) needs create on pods/exec.
    s.ok(&["--token", &token, "get", "pod", "box"], None);
    let out = s.kubectl(&["--token", &token, "exec", "box", "--", "true"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot create resource \"pods/exec\""), "{stderr}");

    // Granted, the same token execs.
    s.ok(&["create", "role", "exec", "--verb=create", "--resource=pods/exec"], None);
    s.ok(&["create", "rolebinding", "viewer-execs", "--role=exec", "--serviceaccount=default:viewer"], None);
    eventually("the exec grant applies", WAIT, || {
        s.kubectl(&["--token", &token, "exec", "box", "--", "true"], None).status.success()
    });

    // Attach follows the live output until the container ends; kubectl then exits 0.
    let ticker = "apiVersion: v1\nkind: Pod\nmetadata: {name: ticker}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: t\n    image: busybox\n    command: [sh, -c, \"echo before; sleep 2; for i in 1 2 3 4 5 6 7 8 9 10; do echo tick $i; sleep 0.4; done; echo done\"]\n";
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(ticker));
    s.wait_ready("ticker");
    let attached = s.ok(&["attach", "ticker"], None);
    assert!(attached.ends_with("tick 10\ndone\n"), "{attached}");
    assert!(!attached.contains("before"), "attach starts at the live output: {attached}");

    // attach -i writes to the stdin of a container made with `stdin: true`.
    let reader = "apiVersion: v1\nkind: Pod\nmetadata: {name: reader}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: r\n    image: busybox\n    stdin: true\n    command: [sh, -c, \"read line; echo got $line; sleep 1\"]\n";
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(reader));
    s.wait_ready("reader");
    let attached = s.ok(&["attach", "-i", "reader"], Some(b"hello\n"));
    assert!(attached.contains("got hello"), "{attached}");

    // kubectl run -it --rm: a terminal attached to a new pod's shell, in a pseudo-terminal (script).
    let command = format!(
        "timeout --foreground 90 {KUBECTL} --kubeconfig {} run -it --rm tmp --image=busybox --restart=Never -- sh -c 'read x; echo got-$x'",
        s.cluster.kubeconfig().display()
    );
    let (status, text) = common::typed_in_terminal(&command, b"hi\n", 40);
    assert!(text.contains("got-hi"), "{status:?} {text}");

    // kubectl 1.29 speaks only SPDY (a plain `Upgrade: SPDY/3.1`, `v4.channel.k8s.io`): output,
    // the exit code through the error stream, and stdin until its end.
    let old_kubectl = |args: &[&str], input: Option<&[u8]>| {
        let mut cmd = Command::new("timeout");
        cmd.args(["60", "/usr/lib/google-cloud-sdk/bin/kubectl.1.29", "--kubeconfig"]).arg(s.cluster.kubeconfig());
        cmd.args(args).stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("kubectl 1.29");
        if let Some(input) = input {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl 1.29 output")
    };
    let out = old_kubectl(&["exec", "box", "--", "sh", "-c", "echo out; echo err >&2"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let out = old_kubectl(&["exec", "box", "--", "sh", "-c", "exit 3"], None);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let out = old_kubectl(&["exec", "-i", "box", "--", "cat"], Some(&[7u8; 100_000]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == vec![7u8; 100_000], "{} bytes back", out.stdout.len());
    // Attach over SPDY follows the live output to the container's end.
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&ticker.replace("name: ticker", "name: ticker-old")));
    s.wait_ready("ticker-old");
    let out = old_kubectl(&["attach", "ticker-old"], None);
    let attached = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && attached.ends_with("tick 10\ndone\n"), "{attached}");
    // A terminal over SPDY (the resize stream is opened too).
    let command = format!(
        "timeout --foreground 60 /usr/lib/google-cloud-sdk/bin/kubectl.1.29 --kubeconfig {} exec -it box -- sh -c 'test -t 0 && echo is-a-tty'",
        s.cluster.kubeconfig().display()
    );
    let out =
        Command::new("script").args(["-qec", &command, "/dev/null"]).stdin(Stdio::null()).output().expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("is-a-tty"), "{:?} {text}", out.status);

    // A Wasm container: the kubelet's toolbox answers (tests/wasm_exec.rs has the rest); a command
    // neither the toolbox nor the module runs (an HTTP component runs no commands) exits 127.
    let out = s.kubectl(&["exec", "wasm", "--", "ls", "/"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = s.kubectl(&["exec", "wasm", "--", "nosuch"], None);
    assert_eq!(out.status.code(), Some(127), "{}", String::from_utf8_lossy(&out.stderr));
}
