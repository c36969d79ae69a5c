//! Test harness: a real `skiff server` process in a temporary directory, driven by the real
//! kubectl. Everything a test starts is stopped when its guard drops, also on failure.

#![allow(dead_code)]

pub mod containerd;
pub mod linux;
pub mod node;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// kubectl matching the server's reported minor version (see shared/KUBECTL.md).
pub const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";

/// Where servers listen unless a test gives an address.
pub const LOOPBACK: &str = "127.0.0.1";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A child process killed (SIGKILL) and reaped on drop.
/// A kubectl that streams (`get -w`, `logs -f`), from [`Cluster::kubectl_stream`].
pub struct KubectlStream {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl KubectlStream {
    /// Its next line of output, or `None` when none came within `timeout` (or it ended).
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Whether kubectl has exited on its own.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for KubectlStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Process(pub Option<Child>);

impl Process {
    /// SIGTERM, then SIGKILL if the process is still there after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(child) = &mut self.0 {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    self.0 = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `skiff server`.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// The address the server listens on (loopback, unless its nodes live in other namespaces).
    pub host: String,
    pub port: u16,
    pub datastore: String,
    process: Process,
    cache_dir: PathBuf,
    /// Extra `skiff server` arguments (the in-process node agent's network), `--no-agent` when none.
    pub server_args: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A clean stop lets the node agent remove its sandboxes and bridge (`--teardown-on-exit`).
        self.process.terminate(Duration::from_secs(15));
    }
}

impl Cluster {
    /// Starts a server on the embedded SQLite store.
    pub fn start() -> Self {
        Self::start_with("sqlite")
    }

    pub fn start_with(datastore: &str) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), datastore, &[])
    }

    /// Starts a control-plane-only server (`--no-agent`) with extra `skiff server` arguments.
    pub fn start_with_args(extra: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), "sqlite", extra)
    }

    /// Starts a control-plane-only server (`--no-agent`) on `datastore` in the data directory
    /// `dir`, which may already hold files (e.g. another server's CA and keys), with extra
    /// `skiff server` arguments.
    pub fn start_in(dir: tempfile::TempDir, datastore: &str, extra: &[&str]) -> Self {
        let mut server_args = vec!["--no-agent".to_string()];
        server_args.extend(extra.iter().map(|a| a.to_string()));
        Self::launch(dir, LOOPBACK, datastore, server_args)
    }

    /// Starts `skiff server` on `host` and a free port with `server_args`, and waits until it is ready.
    fn launch(dir: tempfile::TempDir, host: &str, datastore: &str, server_args: Vec<String>) -> Self {
        let port = free_port();
        let cache_dir = dir.path().join("kube-cache");
        let mut cluster = Cluster {
            dir,
            host: host.into(),
            port,
            datastore: datastore.to_string(),
            process: Process(None),
            cache_dir,
            server_args,
        };
        cluster.spawn();
        cluster
    }

    /// Starts a server with its in-process node agent on a private pod network.
    pub fn with_node() -> Self {
        Self::with_node_args(Vec::new())
    }

    /// As [`Cluster::with_node`], with `extra` node agent arguments (e.g. `--wasm-runtime containerd`).
    pub fn with_node_args(extra: Vec<String>) -> Self {
        Self::with_node_on(LOOPBACK, true, extra)
    }

    /// A server listening on `host` whose in-process node gets its pod CIDR from the server's
    /// node IPAM (no `--pod-cidr`), with `extra` server and node arguments.
    pub fn with_allocating_node(host: &str, extra: Vec<String>) -> Self {
        Self::with_node_on(host, false, extra)
    }

    fn with_node_on(host: &str, own_pod_cidr: bool, extra: Vec<String>) -> Self {
        let net = node::TestNet::new();
        let mut server_args = if own_pod_cidr { net.agent_args() } else { net.allocated_agent_args() };
        server_args.extend(["--service-cidr".to_string(), net.service_cidr.clone()]);
        // A flag given in `extra` replaces the default one (clap takes each flag once).
        for flag in extra.iter().filter(|a| a.starts_with("--")) {
            if let Some(at) = server_args.iter().position(|a| a == flag) {
                let valued = server_args.get(at + 1).is_some_and(|v| !v.starts_with("--"));
                server_args.drain(at..=at + usize::from(valued));
            }
        }
        server_args.extend(extra);
        let cluster = Self::launch(tempfile::tempdir().expect("tempdir"), host, "sqlite", server_args);
        cluster.wait_node_ready();
        cluster
    }

    /// The node's name (the in-process agent's).
    pub fn node_name(&self) -> String {
        let at = self.server_args.iter().position(|a| a == "--node-name").expect("a node cluster");
        self.server_args[at + 1].clone()
    }

    /// Whether node `node` reports `Ready=True`.
    pub fn node_ready(&self, node: &str) -> bool {
        let out = self.kubectl_output(
            &["get", "node", node, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
            None,
        );
        String::from_utf8_lossy(&out.stdout) == "True"
    }

    /// Waits until the node is registered and Ready.
    pub fn wait_node_ready(&self) {
        let node = self.node_name();
        eventually(&format!("node {node} Ready"), Duration::from_secs(60), || self.node_ready(&node));
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// (Re)starts the server process on the same data directory and port.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["server", "--data-dir"])
            .arg(self.dir.path())
            .args(["--listen", &format!("{}:{}", self.host, self.port), "--datastore", &self.datastore])
            .args(&self.server_args)
            .env("SKIFF_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn skiff server");
        self.process = Process(Some(child));
        self.wait_ready();
    }

    /// Waits (bounded by `timeout`) until pod `pod` in the current namespace is Ready.
    pub fn wait_pod_ready(&self, pod: &str, timeout: Duration) {
        eventually(&format!("pod {pod} Ready"), timeout, || {
            let out = self.kubectl_output(
                &["get", "pod", pod, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
                None,
            );
            String::from_utf8_lossy(&out.stdout) == "True"
        });
    }

    /// Kills the server with SIGKILL.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.kubeconfig().exists() {
                let out =
                    Command::new("curl").args(["-sk", &format!("https://{}:{}/readyz", self.host, self.port)]).output();
                if out.is_ok_and(|o| o.stdout == b"ok") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("skiff server did not become ready:\n{}", self.server_log());
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// `skiff agent --hollow <count>` against this cluster (nodes `<prefix>-<i>` that run pods
    /// without executing anything), logging to `hollow-<prefix>.log`; killed on drop.
    pub fn hollow(&self, count: usize, prefix: &str) -> Process {
        let log = std::fs::File::create(self.data_dir().join(format!("hollow-{prefix}.log"))).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["agent", "--server", &self.url(), "--token-file"])
            .arg(self.data_dir().join("admin.token"))
            .args(["--hollow", &count.to_string(), "--hollow-prefix", prefix])
            .env("SKIFF_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn skiff agent --hollow");
        Process(Some(child))
    }

    /// A join token from `skiff token create --ttl <ttl>` (its last line).
    pub fn join_token(&self, ttl: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["token", "create", "--data-dir"])
            .arg(self.data_dir())
            .args(["--ttl", ttl])
            .output()
            .expect("skiff token create");
        assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin.token")).expect("token").trim().to_string()
    }

    pub fn url(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }

    /// Starts a streaming kubectl (`get -w`, `logs -f`) with this cluster's kubeconfig; its
    /// stdout lines arrive through [`KubectlStream::next_line`], and it is killed when dropped.
    pub fn kubectl_stream(&self, args: &[&str]) -> KubectlStream {
        let mut child = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .args(args)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run kubectl");
        let stdout = child.stdout.take().expect("kubectl stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        KubectlStream { child, lines }
    }

    /// Runs kubectl with this cluster's kubeconfig and a private discovery cache.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(KUBECTL);
        cmd.arg("--kubeconfig").arg(self.kubeconfig()).arg("--cache-dir").arg(&self.cache_dir).args(args);
        cmd.env("HOME", self.dir.path());
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns stdout; panics with stderr if it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_output(args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed\nstdout: {stdout}\nstderr: {stderr}\nserver log tail: {}",
            tail(&self.server_log())
        );
        stdout
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn kubectl_fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_output(args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail but printed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    /// `kubectl get -o json` parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).expect("kubectl json")
    }

    /// How many Nodes report `Ready=True`.
    pub fn ready_nodes(&self) -> usize {
        skiff_testkit::ready_nodes(&self.get_json(&["nodes"]))
    }

    /// A GET with an `Accept` header, as the admin: (status code, body).
    pub fn curl_accept(&self, path: &str, accept: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sk", "-o", "-", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {}", self.token()))
            .args(["-H", &format!("Accept: {accept}")])
            .arg(format!("{}{path}", self.url()))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// A raw HTTPS request with curl (for status codes kubectl hides). Returns (code, body).
    pub fn curl(&self, method: &str, path: &str, content_type: &str, body: Option<&[u8]>) -> (u16, String) {
        let body_file = self.dir.path().join("curl-body");
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sk",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            "-H",
            &format!("Authorization: Bearer {}", self.token()),
        ]);
        cmd.args(["-H", &format!("Content-Type: {content_type}")]);
        if let Some(body) = body {
            std::fs::write(&body_file, body).expect("body file");
            cmd.arg("--data-binary").arg(format!("@{}", body_file.display()));
        }
        cmd.arg(format!("{}{path}", self.url()));
        let out = cmd.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Runs the shell `command` in a pseudo-terminal (`script`), typing `line` every half second until
/// it ends or `tries` lines were typed (kubectl attaches a terminal only once the container runs);
/// returns what the terminal showed.
pub fn typed_in_terminal(command: &str, line: &'static [u8], tries: usize) -> (std::process::ExitStatus, String) {
    let mut script = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script");
    let mut keys = script.stdin.take().expect("stdin");
    let typist = std::thread::spawn(move || {
        use std::io::Write;
        for _ in 0..tries {
            std::thread::sleep(Duration::from_millis(500));
            if keys.write_all(line).is_err() {
                return;
            }
        }
    });
    let out = script.wait_with_output().expect("script output");
    let _ = typist.join();
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits for `check` to hold, polling; panics with `what` on timeout.
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// A single-member etcd on free loopback ports, killed on drop.
pub struct Etcd {
    pub endpoint: String,
    _dir: tempfile::TempDir,
    _process: Process,
}

impl Etcd {
    pub fn start() -> Self {
        assert!(
            Path::new("/usr/bin/etcd").exists(),
            "etcd is not installed: run the README's install step (apt-get install etcd-server)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let child = Command::new("/usr/bin/etcd")
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        let process = Process(Some(child));
        let endpoint = format!("127.0.0.1:{client}");
        eventually("etcd to answer", Duration::from_secs(20), || {
            Command::new("curl")
                .args(["-s", &format!("http://{endpoint}/health")])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("true"))
        });
        Etcd { endpoint, _dir: dir, _process: process }
    }
}
