//! What node tests need besides a cluster: a private pod network per cluster (bridge, CIDR, names
//! derived from the test process id so parallel tests never collide and a later run can sweep a
//! crashed one's leftovers), a real OCI registry on loopback, and the Wasm guests of `workloads/`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Once, OnceLock};
use std::time::Duration;

use super::{eventually, free_port, Process};
use skiff_testkit::pid_alive;

static NEXT: AtomicU32 = AtomicU32::new(1);
static SWEEP: Once = Once::new();

/// The names and addresses of one test node's pod network.
pub struct TestNet {
    pub node: String,
    pub bridge: String,
    pub cidr: String,
    /// This cluster's own `--service-cidr`, so that ClusterIPs of parallel tests never overlap
    /// in the host's service rules.
    pub service_cidr: String,
}

impl TestNet {
    pub fn new() -> Self {
        SWEEP.call_once(sweep_dead_runs);
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TestNet {
            node: format!("t{pid}x{n}"),
            bridge: format!("sk{pid}x{n}"),
            cidr: format!("10.{}.{}.0/24", 100 + pid % 100, n % 250),
            service_cidr: format!("10.{}.{}.0/24", 200 + pid % 50, n % 250),
        }
    }

    /// `skiff server`/`skiff agent` arguments for this network.
    pub fn agent_args(&self) -> Vec<String> {
        [
            "--node-name",
            &self.node,
            "--bridge",
            &self.bridge,
            "--pod-cidr",
            &self.cidr,
            "--kubelet-port",
            "0",
            "--teardown-on-exit",
            "--sandbox-pool",
            "2",
            // Tests never take ports 80/443; an ingress test passes free ports instead.
            "--ingress-http-port",
            "0",
            "--ingress-https-port",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl TestNet {
    /// [`TestNet::agent_args`] without `--pod-cidr`: the server's node IPAM allocates it.
    pub fn allocated_agent_args(&self) -> Vec<String> {
        let mut args = self.agent_args();
        if let Some(at) = args.iter().position(|a| a == "--pod-cidr") {
            args.drain(at..=at + 1);
        }
        args
    }
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}

/// The test process a test network name (`t<pid>x<n>`, `sk<pid>x<n>`) belongs to.
fn owner_pid(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("sk").or_else(|| name.strip_prefix('t'))?;
    let (pid, n) = rest.split_once('x')?;
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    (digits(pid) && digits(n)).then_some(pid)
}

/// Kills the `skiff` servers and agents that test processes which no longer run left behind (a
/// killed test run never dropped them): the ones whose `--node-name` or `--bridge` names a dead test
/// process.
fn kill_orphaned_nodes() {
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for entry in procs.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if !args.first().is_some_and(|a| a.ends_with("/skiff")) {
            continue;
        }
        let names = args.windows(2).filter(|w| w[0] == "--node-name" || w[0] == "--bridge").map(|w| w[1].as_str());
        let orphaned = names.filter_map(owner_pid).any(|owner| !pid_alive(owner));
        if orphaned {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

/// Removes what test processes which no longer run left behind: `skiff` processes, bridges,
/// network namespaces and service proxy tables.
fn sweep_dead_runs() {
    kill_orphaned_nodes();
    let dead = |name: Option<&str>| name.and_then(owner_pid).is_some_and(|pid| !pid_alive(pid));
    let links = Command::new("ip").args(["-o", "link", "show", "type", "bridge"]).output();
    for line in links.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
        let Some(name) = line.split(':').nth(1).map(str::trim) else { continue };
        if name.starts_with("sk") && dead(Some(name)) {
            let _ = Command::new("ip").args(["link", "delete", name]).status();
        }
    }
    // The service proxy's and the network policy's nftables tables (`skiff-t<pid>x<n>`,
    // `skiff-np-t<pid>x<n>`, named after the node).
    let tables = Command::new("nft").args(["list", "tables", "ip"]).output();
    for line in tables.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
        let Some(name) = line.strip_prefix("table ip ").map(str::trim) else { continue };
        if dead(name.strip_prefix("skiff-np-").or_else(|| name.strip_prefix("skiff-"))) {
            let _ = Command::new("nft").args(["delete", "table", "ip", name]).status();
        }
    }
    // Pods' network namespaces (`skiff-t<pid>x<n>-<sandbox>`).
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if dead(name.strip_prefix("skiff-").and_then(|r| r.split('-').next())) {
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        }
    }
}

#[cfg(test)]
mod sweep_tests {
    #[test]
    fn test_network_names_tell_their_test_process() {
        assert_eq!(super::owner_pid("t123x4"), Some("123"));
        assert_eq!(super::owner_pid("sk123x45"), Some("123"));
        assert_eq!(super::owner_pid("tx4"), None);
        assert_eq!(super::owner_pid("t12x"), None);
        assert_eq!(super::owner_pid("node-1"), None);
        assert_eq!(super::owner_pid("skiff0"), None);
    }
}

/// A real OCI registry (`docker-registry`) on a free loopback port, killed on drop.
pub struct Registry {
    pub addr: String,
    _dir: tempfile::TempDir,
    _process: Process,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_on(super::LOOPBACK)
    }

    /// A registry on `ip` (an address of this host that nodes in other namespaces reach; they
    /// need `--insecure-registry <addr>`, since only loopback registries are plain HTTP by default).
    pub fn start_on(ip: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {ip}:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let addr = format!("{ip}:{port}");
        eventually("the registry to answer", Duration::from_secs(20), || {
            Command::new("curl")
                .args(["-sf", "-o", "/dev/null", &format!("http://{addr}/v2/")])
                .status()
                .is_ok_and(|s| s.success())
        });
        Registry { addr, _dir: dir, _process: Process(Some(child)) }
    }

    /// Pushes a guest from `workloads/` with `skiff image push`; returns the image reference.
    pub fn push(&self, guest: &str, tag: &str) -> String {
        let reference = format!("{}/{guest}:{tag}", self.addr);
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["image", "push", "--insecure-registry", &self.addr])
            .arg(workload(guest))
            .arg(&reference)
            .output()
            .expect("skiff image push");
        assert!(out.status.success(), "skiff image push failed: {}", String::from_utf8_lossy(&out.stderr));
        reference
    }
}

/// The path of a built guest (`hello`, `hello-http`, ...), building `workloads/` once per test process.
pub fn workload(name: &str) -> PathBuf {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    let out = OUT.get_or_init(|| {
        let root = skiff_testkit::repo_root();
        let out = root.join("workloads").join("out");
        let status = Command::new(root.join("scripts/build-workloads.sh")).arg(&out).status().expect("build workloads");
        assert!(status.success(), "scripts/build-workloads.sh failed");
        out
    });
    let path = out.join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A `skiff agent` process joining a cluster as a second node, stopped cleanly on drop.
pub struct AgentProcess {
    pub net: TestNet,
    pub dir: tempfile::TempDir,
    /// How it authenticates (`--token-file F` or `--token T`), and anything else it was given.
    auth: Vec<String>,
    /// The lab host (network namespace) it runs in; `None`: this host's namespace.
    host: Option<LabHost>,
    process: Process,
}

impl AgentProcess {
    /// An agent with the admin token (`--token-file`).
    pub fn start(cluster: &super::Cluster) -> Self {
        let token_file = cluster.data_dir().join("admin.token").display().to_string();
        Self::start_with(cluster, vec!["--token-file".into(), token_file])
    }

    /// An agent joining with a join token (`--token`).
    pub fn join(cluster: &super::Cluster, token: &str) -> Self {
        Self::start_with(cluster, vec!["--token".into(), token.into()])
    }

    /// An agent joining with a join token as its own host: in the lab host's network namespace,
    /// reporting the host's address, with its pod CIDR allocated by the server (no `--pod-cidr`),
    /// and `extra` arguments.
    pub fn join_in(cluster: &super::Cluster, token: &str, host: LabHost, extra: &[&str]) -> Self {
        let mut auth = vec!["--token".to_string(), token.to_string(), "--node-ip".into(), host.ip.clone()];
        auth.extend(extra.iter().map(|a| a.to_string()));
        let net = TestNet::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Self::spawn(cluster, &net, &dir, &auth, Some(&host));
        AgentProcess { net, dir, auth, host: Some(host), process: Process(Some(child)) }
    }

    fn start_with(cluster: &super::Cluster, auth: Vec<String>) -> Self {
        let net = TestNet::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Self::spawn(cluster, &net, &dir, &auth, None);
        AgentProcess { net, dir, auth, host: None, process: Process(Some(child)) }
    }

    /// Starts the agent again (after [`AgentProcess::kill9`]) as the same node on the same data.
    pub fn respawn(&mut self, cluster: &super::Cluster) {
        self.process.kill();
        self.process = Process(Some(Self::spawn(cluster, &self.net, &self.dir, &self.auth, self.host.as_ref())));
    }

    /// The lab host it runs in, if any.
    pub fn host(&self) -> Option<&LabHost> {
        self.host.as_ref()
    }

    /// Whether the process has ended (with its status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    fn spawn(
        cluster: &super::Cluster,
        net: &TestNet,
        dir: &tempfile::TempDir,
        auth: &[String],
        host: Option<&LabHost>,
    ) -> std::process::Child {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("agent.log")).expect("log");
        // On its own host, the server allocates its pod CIDR.
        let args = if host.is_some() { net.allocated_agent_args() } else { net.agent_args() };
        // `ip netns exec` execs the agent: the child is the agent itself (kill -9 kills it).
        let mut command = match host {
            Some(h) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &h.netns]).arg(env!("CARGO_BIN_EXE_skiff"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_skiff")),
        };
        command
            .args(["agent", "--server", &cluster.url()])
            .args(auth)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .env("SKIFF_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn skiff agent")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Kills the agent outright (SIGKILL: a node dying), then removes the bridge, network
    /// namespaces and proxy table it could not tear down.
    pub fn kill9(&mut self) {
        self.process.kill();
        let _ = Command::new("ip").args(["link", "delete", &self.net.bridge]).status();
        let _ = Command::new("nft").args(["delete", "table", "ip", &format!("skiff-{}", self.net.node)]).output();
        let short: String = self.net.node.chars().filter(|c| c.is_ascii_alphanumeric()).take(20).collect();
        let prefix = format!("skiff-{short}-");
        let Ok(entries) = std::fs::read_dir("/var/run/netns") else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                let _ = Command::new("ip").args(["netns", "delete", &name]).status();
            }
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.process.terminate(Duration::from_secs(15));
    }
}

/// A lab network standing for a LAN: a bridge on this host with the first address of a test /24,
/// and hosts on it, each a network namespace with a veth and the next address. Routes, bridges
/// and nftables tables that agents make inside a host go with its namespace. Removed on drop;
/// a crashed run's leftovers are swept by name (`sk<pid>x<n>`, `skiff-t<pid>x<n>...`).
pub struct LabNet {
    net: TestNet,
    /// This host's address on the lab network.
    pub gateway: String,
    prefix: String,
    next: AtomicU32,
}

/// A host on a [`LabNet`]: its network namespace and address.
pub struct LabHost {
    pub netns: String,
    pub ip: String,
    /// Its link's end on the lab bridge (down: the host is cut off).
    link: String,
}

impl LabNet {
    pub fn new() -> Self {
        let net = TestNet::new();
        let prefix = net.cidr.trim_end_matches(".0/24").to_string();
        let gateway = format!("{prefix}.1");
        run_ip(&["link", "add", &net.bridge, "type", "bridge"]);
        run_ip(&["addr", "add", &format!("{gateway}/24"), "dev", &net.bridge]);
        run_ip(&["link", "set", &net.bridge, "up"]);
        LabNet { net, gateway, prefix, next: AtomicU32::new(2) }
    }

    /// A new host on the network (addresses .2, .3, ...).
    pub fn host(&self) -> LabHost {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let (outside, inside) = (format!("{}v{k}", self.net.bridge), format!("{}p{k}", self.net.bridge));
        let host = LabHost {
            netns: format!("skiff-{}h{k}", self.net.node),
            ip: format!("{}.{k}", self.prefix),
            link: outside.clone(),
        };
        run_ip(&["netns", "add", &host.netns]);
        run_ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside]);
        run_ip(&["link", "set", &inside, "netns", &host.netns]);
        run_ip(&["link", "set", &outside, "master", &self.net.bridge, "up"]);
        run_ip(&["-n", &host.netns, "link", "set", &inside, "name", "eth0"]);
        run_ip(&["-n", &host.netns, "addr", "add", &format!("{}/24", host.ip), "dev", "eth0"]);
        run_ip(&["-n", &host.netns, "link", "set", "eth0", "up"]);
        run_ip(&["-n", &host.netns, "link", "set", "lo", "up"]);
        host
    }
}

impl Default for LabNet {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for LabNet {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "delete", &self.net.bridge]).status();
    }
}

impl LabHost {
    /// Cuts the host off the network (its cable pulled) or connects it again; processes in it live on.
    pub fn set_connected(&self, connected: bool) {
        run_ip(&["link", "set", &self.link, if connected { "up" } else { "down" }]);
    }
}

impl Drop for LabHost {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = Command::new("ip").args(["netns", "delete", &self.netns]).status();
    }
}

fn run_ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("ip");
    assert!(status.success(), "ip {args:?}");
}
