//! End to end: `kubectl exec` and `kubectl cp` into Wasm containers with the real kubectl 1.32
//! (WebSocket) and 1.29 (SPDY), through the API server to the kubelet: the built-in toolbox (`ls`,
//! `cat`, `env`, `false`, `sh -c`, `tar` for `kubectl cp`) against the container's own volumes, the
//! container's own module run with other arguments, exit codes on the error channel (1, 127, the
//! module's own), an emptyDir shared with a Linux sidecar, a read-only volume refusing writes, and a
//! client that goes away mid-stream leaving nothing running, `attach -i` into a `stdin: true` guest,
//! and `exec -it -- sh` in a terminal (the toolbox's line-by-line shell).
//!
//! Needs root, containerd, runc, ctr, the CNI plugins, docker-registry, umoci, skopeo and busybox-static.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::linux::LinuxCluster as Setup;
use common::{eventually, KUBECTL};

const WAIT: Duration = Duration::from_secs(90);
const OLD_KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.29";

/// A pod of four: `app` (the `tool` module, running `forever`), `api` (an HTTP component), `reader`
/// (`tool echo-stdin` with `stdin: true`) and `side` (busybox), the emptyDir `shared` at `/data` in all, a ConfigMap read-only at `/cfg` in `app`.
fn manifest(tool: &str, web: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{mode: fast}}
---
apiVersion: v1
kind: Pod
metadata: {{name: mixed}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: shared, emptyDir: {{}}}}
  - {{name: cfg, configMap: {{name: settings}}}}
  containers:
  - name: app
    image: {tool}
    args: [forever]
    env: [{{name: GREETING, value: from-the-spec}}]
    volumeMounts: [{{name: shared, mountPath: /data}}, {{name: cfg, mountPath: /cfg}}]
  - name: api
    image: {web}
    ports: [{{containerPort: 8080}}]
  - name: reader
    image: {tool}
    args: [echo-stdin]
    stdin: true
  - name: side
    image: busybox
    command: [sh, -c, "echo from-busybox > /data/side; sleep 3600"]
    volumeMounts: [{{name: shared, mountPath: /data}}]
"#
    )
}

impl Setup {
    fn start() -> Self {
        Setup::start_linux("skiff-wexec")
    }

    /// `kubectl` (`binary`) bounded by a timeout, in the work directory, with `stdin`.
    fn run(&self, binary: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.arg("60").arg(binary).arg("--kubeconfig").arg(self.cluster.kubeconfig());
        cmd.arg("--cache-dir").arg(self.work.path().join("cache")).args(args).current_dir(self.work.path());
        cmd.env("HOME", self.work.path());
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin");
            if let Err(e) = pipe.write_all(input) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
            }
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// kubectl 1.32's stdout, which must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(KUBECTL, args, None);
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

    /// The node's `skiff_wasm_execs_running` gauge, read through the API server's node proxy.
    fn execs_running(&self) -> Option<u64> {
        let path = format!("/api/v1/nodes/{}/proxy/metrics", self.cluster.node_name());
        let out = self.cluster.kubectl_output(&["get", "--raw", &path], None);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find_map(|l| l.strip_prefix("skiff_wasm_execs_running ")).and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl_output(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"], None);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn exec_and_cp_into_a_wasm_container_over_websocket_and_spdy() {
    let s = Setup::start();
    let (tool, web) = (s.registry.push("tool", "1"), s.registry.push("hello-http", "1"));
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest(&tool, &web)));
    s.wait_ready("mixed");
    let app = ["exec", "mixed", "-c", "app", "--"];
    let exec = |args: &[&'static str]| -> Vec<&'static str> { [&app[..], args].concat() };

    // The toolbox sees the container's volumes and env.
    eventually("the sidecar's file in the shared emptyDir", WAIT, || {
        s.run(KUBECTL, &exec(&["ls", "/data"]), None).stdout == b"side\n"
    });
    assert_eq!(s.ok(&exec(&["cat", "/data/side"])), "from-busybox\n");
    assert_eq!(s.ok(&exec(&["ls", "/"])), "cfg\ndata\nvar\n", "the volumes and the service account token");
    assert_eq!(s.ok(&exec(&["cat", "/cfg/mode"])), "fast");
    let env = s.ok(&exec(&["env"]));
    assert!(env.lines().any(|l| l == "GREETING=from-the-spec"), "{env}");
    assert_eq!(s.ok(&exec(&["sh", "-c", "echo a && test -d /data && echo b"])), "a\nb\n");

    // Exit codes through the error channel.
    let out = s.run(KUBECTL, &exec(&["false"]), None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("command terminated with exit code 1"), "{}", stderr(&out));
    let out = s.run(KUBECTL, &["exec", "mixed", "-c", "api", "--", "nosuch"], None);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(stderr(&out).contains("nosuch: command not found"), "{}", stderr(&out));
    let out = s.run(KUBECTL, &exec(&["cat", "/data/missing"]), None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cat: /data/missing: No such file or directory"), "{}", stderr(&out));
    // A read-only volume refuses writes.
    let out = s.run(KUBECTL, &exec(&["mkdir", "/cfg/x"]), None);
    assert!(stderr(&out).contains("Read-only file system") && out.status.code() == Some(1), "{}", stderr(&out));

    // The container's own module with other arguments: `tool write` (not a toolbox command) writes
    // into the emptyDir, the Linux sidecar reads it; a name ending in `.wasm` runs the module too.
    s.ok(&exec(&["write", "/data/by-module", "written by the module"]));
    assert_eq!(s.ok(&["exec", "mixed", "-c", "side", "--", "cat", "/data/by-module"]), "written by the module");
    assert_eq!(s.ok(&exec(&["tool.wasm", "ls", "/data"])), "by-module\nside\n");
    let out = s.run(KUBECTL, &exec(&["tool.wasm", "exit", "7"]), None);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let out = s.run(KUBECTL, &exec(&["tool.wasm", "cat", "/data/nope"]), None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("tool:"), "the module's stderr streams back: {}", stderr(&out));

    // stdin: 200 kB through `cat`.
    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let out = s.run(KUBECTL, &["exec", "-i", "mixed", "-c", "app", "--", "cat"], Some(&input));
    assert!(out.status.success() && out.stdout == input, "{} bytes back: {}", out.stdout.len(), stderr(&out));

    // The module's WASI stdin from `exec -i`, its output as it goes.
    let out = s.run(KUBECTL, &exec(&["tool.wasm", "echo-stdin"]), None);
    assert!(out.status.success(), "no stdin is an empty stdin: {}", stderr(&out));
    let mut piped = vec!["exec", "-i"];
    piped.extend(exec(&["tool.wasm", "echo-stdin"]).into_iter().skip(1));
    let out = s.run(KUBECTL, &piped, Some(b"one\ntwo\n"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got: one\ngot: two\n", "{}", stderr(&out));
    let out = s.run(OLD_KUBECTL, &piped, Some(b"over spdy\n"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got: over spdy\n", "{}", stderr(&out));

    // `attach -i` writes to the stdin of a Wasm container made with `stdin: true`.
    let mut attach = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(s.cluster.kubeconfig())
        .args(["attach", "-i", "mixed", "-c", "reader"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl attach");
    {
        use std::io::Write;
        let mut input = attach.stdin.take().expect("stdin");
        eventually("an attached line reaches the guest", WAIT, || {
            let _ = input.write_all(b"hello\n");
            let _ = input.flush();
            let log = s.cluster.kubectl_output(&["logs", "mixed", "-c", "reader"], None);
            String::from_utf8_lossy(&log.stdout).contains("got: hello")
        });
    }
    let _ = attach.kill();
    let _ = attach.wait();

    // kubectl cp both ways (tar over exec): a file and a directory with a 3 MB file.
    let local = s.work.path().join("upload");
    std::fs::create_dir_all(local.join("nested")).expect("mkdir");
    std::fs::write(local.join("nested/big"), vec![5u8; 3 << 20]).expect("write");
    std::fs::write(s.work.path().join("note"), "a note").expect("write");
    s.ok(&["cp", "note", "mixed:/data/note", "-c", "app"]);
    assert_eq!(s.ok(&["exec", "mixed", "-c", "side", "--", "cat", "/data/note"]), "a note");
    s.ok(&["cp", "upload", "mixed:/data/upload", "-c", "app"]);
    let big = s.run(KUBECTL, &["exec", "mixed", "-c", "side", "--", "cat", "/data/upload/nested/big"], None);
    assert!(big.stdout == vec![5u8; 3 << 20], "{} bytes seen by the sidecar", big.stdout.len());
    s.ok(&["cp", "mixed:/data/side", "back", "-c", "app"]);
    assert_eq!(std::fs::read_to_string(s.work.path().join("back")).expect("copied back"), "from-busybox\n");
    s.ok(&["cp", "mixed:/data/upload", "down", "-c", "app"]);
    assert_eq!(std::fs::read(s.work.path().join("down/nested/big")).expect("dir copied back"), vec![5u8; 3 << 20]);
    let out = s.run(KUBECTL, &["cp", "note", "mixed:/cfg/note", "-c", "app"], None);
    assert!(!out.status.success() && stderr(&out).contains("Read-only file system"), "{}", stderr(&out));

    // kubectl 1.29 over SPDY: the same commands and exit codes.
    let out = s.run(OLD_KUBECTL, &exec(&["ls", "/data"]), None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "by-module\nnote\nside\nupload\n");
    let out = s.run(OLD_KUBECTL, &exec(&["cat", "/data/side"]), None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-busybox\n");
    let out = s.run(OLD_KUBECTL, &exec(&["env"]), None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("GREETING=from-the-spec"));
    assert_eq!(s.run(OLD_KUBECTL, &exec(&["false"]), None).status.code(), Some(1));
    assert_eq!(s.run(OLD_KUBECTL, &["exec", "mixed", "-c", "api", "--", "nosuch"], None).status.code(), Some(127));
    let out = s.run(OLD_KUBECTL, &["exec", "-i", "mixed", "-c", "app", "--", "cat"], Some(&input));
    assert!(out.status.success() && out.stdout == input, "{} bytes back", out.stdout.len());
    let out = s.run(OLD_KUBECTL, &["cp", "note", "mixed:/data/note-old", "-c", "app"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.ok(&["exec", "mixed", "-c", "side", "--", "cat", "/data/note-old"]), "a note");
}

#[test]
fn a_client_that_goes_away_leaves_no_wasm_exec_running() {
    let s = Setup::start();
    let (tool, web) = (s.registry.push("tool", "1"), s.registry.push("hello-http", "1"));
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest(&tool, &web)));
    s.wait_ready("mixed");
    assert_eq!(s.execs_running(), Some(0));
    // A toolbox command and the module itself, both sleeping long; their clients are killed.
    for command in [&["sleep", "300"][..], &["tool.wasm", "sleep", "300"]] {
        let mut cmd = Command::new(KUBECTL);
        cmd.arg("--kubeconfig").arg(s.cluster.kubeconfig()).args(["exec", "-i", "mixed", "-c", "app", "--"]);
        let mut child = cmd
            .args(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl");
        eventually("the exec runs", WAIT, || s.execs_running() == Some(1));
        let _ = child.kill();
        let _ = child.wait();
        eventually(&format!("{command:?} ends with its client"), Duration::from_secs(30), || {
            s.execs_running() == Some(0)
        });
    }
    // The container is untouched and still takes execs.
    assert_eq!(s.ok(&["exec", "mixed", "-c", "app", "--", "echo", "still here"]), "still here\n");

    // `exec -it -- sh` in a terminal: the toolbox's line-by-line shell, its prompt and echo.
    let command = format!(
        "timeout --foreground 60 {KUBECTL} --kubeconfig {} exec -it mixed -c app -- sh",
        s.cluster.kubeconfig().display()
    );
    let mut script = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let mut stdout = script.stdout.take().expect("stdout");
    let sink = std::sync::Arc::clone(&seen);
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    let shown = || String::from_utf8_lossy(&seen.lock().expect("lock")).into_owned();
    {
        use std::io::Write;
        let mut input = script.stdin.take().expect("stdin");
        eventually("the toolbox shell's prompt", WAIT, || shown().contains("$ "));
        input.write_all(b"cat /cfg/mode; echo\r").expect("type a line");
        eventually("the line's output", WAIT, || shown().contains("fast\r\n"));
        input.write_all(b"exit 5\r").expect("type exit");
    }
    let status = script.wait().expect("script");
    let _ = reader.join();
    let text = shown();
    assert_eq!(status.code(), Some(5), "{text:?}");
}
