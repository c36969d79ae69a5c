//! The processes a node benchmark runs against: a fresh `skiff server` with its in-process node agent
//! on a private pod network (its own bridge, a CIDR no host route overlaps, names derived from this
//! process id), stopped with SIGTERM on drop so the agent removes its sandboxes and bridge, then
//! SIGKILLed if it lingers; whatever it left behind is removed after it exits. Leftovers of an
//! earlier harness that died are swept at the next start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::cluster::{die_with_parent, free_port};
use skiff_testkit::pid_alive;

/// How long the server gets to tear its pods down after SIGTERM before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(180);

/// Names and addresses of this run's pod network.
#[derive(Clone, Debug)]
pub struct Net {
    pub node: String,
    pub bridge: String,
    pub cidr: String,
    /// The server's `--service-cidr`: 10.250-254.X.0/24 from the pid, outside the pod CIDRs of the
    /// benchmarks (10.200-249) and of the tests (pods 10.100-199, services 10.200-249), so that
    /// ClusterIPs of parallel runs never meet in the host's service rules.
    pub service_cidr: String,
}

impl Net {
    /// Names from the process id; the CIDR is the first 10.X.0.0/`prefix` (X from 200) that no host
    /// route overlaps.
    fn pick(prefix: u8) -> Result<Self> {
        Self::pick_for(NodeKind::Server, prefix)
    }

    /// As [`Net::pick`], for the server's node or a second agent's (`a{pid}` on bridge `ska{pid}`); a
    /// second agent picks after the server's bridge is up, so the host route of its CIDR is avoided.
    pub fn pick_for(kind: NodeKind, prefix: u8) -> Result<Self> {
        let pid = std::process::id();
        let k = kind.letter();
        let routes = host_routes();
        let size = 1u32 << (32 - u32::from(prefix));
        for i in 0..50u32 {
            let x = 200 + (pid + i) % 50;
            let base = (10u32 << 24) | (x << 16);
            if routes.iter().all(|&(net, len)| !overlaps(base, size, net, len)) {
                return Ok(Net {
                    node: format!("{k}{pid}"),
                    bridge: format!("sk{k}{pid}"),
                    cidr: format!("10.{x}.0.0/{prefix}"),
                    service_cidr: format!("10.{}.{}.0/24", 250 + pid % 5, (pid / 5) % 256),
                });
            }
        }
        bail!("no free 10.X.0.0/{prefix} (X in 200..250) without a host route")
    }

    /// Prefix of the network namespaces the agent creates (see `AgentConfig::netns_prefix`).
    pub fn netns_prefix(&self) -> String {
        format!("skiff-{}-", self.node)
    }

    /// The nftables table of the node's service proxy.
    pub fn nft_table(&self) -> String {
        format!("skiff-{}", self.node)
    }

    /// Removes the network namespaces, bridge and proxy table a node of this network left behind
    /// (its agent killed, or gone without tearing down); how many there were.
    pub fn remove_leftovers(&self) -> usize {
        let mut leftovers = 0;
        for ns in netns_with(&self.netns_prefix()) {
            leftovers += 1;
            let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
        }
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            leftovers += 1;
            let _ = Command::new("ip").args(["link", "delete", &self.bridge]).status();
        }
        let deleted =
            Command::new("nft").args(["delete", "table", "ip", &self.nft_table()]).stderr(Stdio::null()).status();
        leftovers += usize::from(deleted.is_ok_and(|s| s.success()));
        leftovers
    }
}

/// Whose node a [`Net`] is for: the server's in-process agent, or a second `skiff agent` process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Server,
    Agent,
}

impl NodeKind {
    const ALL: [NodeKind; 2] = [NodeKind::Server, NodeKind::Agent];

    fn letter(self) -> char {
        match self {
            NodeKind::Server => 'b',
            NodeKind::Agent => 'a',
        }
    }
}

/// IPv4 routes of the host as (network, prefix length).
fn host_routes() -> Vec<(u32, u32)> {
    let out = Command::new("ip").args(["-4", "route", "show", "table", "all"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.contains('.')))
        .filter_map(|dest| {
            let (addr, len) = dest.split_once('/').unwrap_or((dest, "32"));
            let addr: std::net::Ipv4Addr = addr.parse().ok()?;
            Some((u32::from(addr), len.parse().ok()?))
        })
        .filter(|&(_, len)| len > 0) // the default route overlaps everything by definition
        .collect()
}

fn overlaps(a: u32, a_size: u32, net: u32, len: u32) -> bool {
    let b_size = if len >= 32 { 1 } else { 1u32 << (32 - len) };
    let b = net & !(b_size.wrapping_sub(1));
    a < b.wrapping_add(b_size) && b < a.wrapping_add(a_size)
}

/// The pid in a name `{prefix}{digits}{rest}`, if the name has that shape.
fn pid_in<'a>(name: &'a str, prefix: &str, end: char) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    let pid = rest.split(end).next()?;
    (!pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit())).then_some(pid)
}

/// Removes the bridges, network namespaces and proxy tables of benchmark runs whose process is gone.
pub fn sweep_dead_runs() {
    let dead = |name: &str, prefix: &str, end: char| {
        NodeKind::ALL
            .iter()
            .any(|k| pid_in(name, &format!("{prefix}{}", k.letter()), end).is_some_and(|pid| !pid_alive(pid)))
    };
    let links = Command::new("ip").args(["-o", "link", "show", "type", "bridge"]).output();
    for line in links.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
        let Some(name) = line.split(':').nth(1).map(str::trim) else { continue };
        if dead(name, "sk", '\0') {
            eprintln!("note: removing bridge {name} of a dead benchmark run");
            let _ = Command::new("ip").args(["link", "delete", name]).status();
        }
    }
    let tables = Command::new("nft").args(["list", "tables", "ip"]).stderr(Stdio::null()).output();
    for line in tables.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
        let Some(name) = line.strip_prefix("table ip ").map(str::trim) else { continue };
        if dead(name, "skiff-", '\0') {
            eprintln!("note: removing nftables table {name} of a dead benchmark run");
            let _ = Command::new("nft").args(["delete", "table", "ip", name]).status();
        }
    }
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if dead(&name, "skiff-", '-') {
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        }
    }
}

/// Network namespaces whose name starts with `prefix`.
fn netns_with(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else { return Vec::new() };
    entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(prefix)).collect()
}

/// CPU seconds of the children a process has waited for (its CNI plugin runs), from /proc/PID/stat.
pub fn children_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // cutime and cstime are fields 16 and 17; the clock ticks 100 times a second on Linux.
    (ticks(13) + ticks(14)) / 100.0
}

/// How the server was stopped.
pub struct Stopped {
    pub seconds: f64,
    /// It exited on SIGTERM within the grace period.
    pub clean: bool,
    /// Network namespaces, bridges and containerd processes (containerd, shims) still there after
    /// it exited (removed by the harness).
    pub leftovers: usize,
}

/// Options of the node under test.
pub struct NodeOpts {
    /// `--sandbox-pool`.
    pub sandbox_pool: usize,
    /// Prefix length of the pod CIDR (20 leaves room for 4,000 pods).
    pub cidr_prefix: u8,
    /// Where to copy the server log when the server stops.
    pub keep_log: Option<PathBuf>,
    /// More flags for `skiff server` (e.g. `--registry-config`).
    pub extra_args: Vec<String>,
}

/// A running `skiff server` with its node agent, and what a client needs to talk to it.
pub struct NodeServer {
    child: Option<Child>,
    pub net: Net,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub token: String,
    pub kubelet_port: u16,
    /// The node's ingress (plain HTTP) on 127.0.0.1.
    pub ingress_port: u16,
    ca_pem: Vec<u8>,
    keep_log: Option<PathBuf>,
}

impl NodeServer {
    pub async fn start(bin: &Path, opts: &NodeOpts) -> Result<Self> {
        sweep_dead_runs();
        let net = Net::pick(opts.cidr_prefix)?;
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let ingress_port = free_port()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = die_with_parent(&mut Command::new(bin))
            .args(["server", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--datastore", "sqlite"])
            .args(["--node-name", &net.node, "--bridge", &net.bridge, "--pod-cidr", &net.cidr])
            .args(["--service-cidr", &net.service_cidr])
            .args(["--kubelet-port", "0", "--sandbox-pool", &opts.sandbox_pool.to_string(), "--teardown-on-exit"])
            .args(["--ingress-http-port", &ingress_port.to_string(), "--ingress-https-port", "0"])
            .args(&opts.extra_args)
            .env("SKIFF_LOG", std::env::var("SKIFF_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut server = NodeServer {
            child: Some(child),
            net,
            dir,
            url: format!("https://127.0.0.1:{port}"),
            token: String::new(),
            kubelet_port: 0,
            ingress_port,
            ca_pem: Vec::new(),
            keep_log: opts.keep_log.clone(),
        };
        server.wait_ready().await.map_err(|e| anyhow!("{e:#}\nserver log tail:\n{}", server.log_tail(30)))?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (ca, token) = (self.dir.path().join("ca.crt"), self.dir.path().join("admin.token"));
        while self.token.is_empty() {
            self.check_alive()?;
            if self.dir.path().join("kubeconfig").exists() && ca.exists() && token.exists() {
                self.ca_pem = std::fs::read(&ca)?;
                self.token = std::fs::read_to_string(&token)?.trim().to_string();
            } else if Instant::now() > deadline {
                bail!("skiff server did not write its kubeconfig within 60 s");
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let client = self.client()?;
        let node_url = format!("{}/api/v1/nodes/{}", self.url, self.net.node);
        loop {
            self.check_alive()?;
            if let Ok(resp) = client.get(&node_url).send().await {
                if resp.status().is_success() {
                    let node: serde_json::Value = resp.json().await?;
                    let ready = node["status"]["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().unwrap_or(0);
                    if ready && port > 0 {
                        self.kubelet_port = u16::try_from(port)?;
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("node {} was not Ready within 60 s", self.net.node);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new HTTPS client (its own connection pool) trusting the cluster CA, sending the bearer
    /// token. HTTP/1.1: the workspace's reqwest is built without HTTP/2.
    pub fn client(&self) -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .use_preconfigured_tls(self.tls()?)
            .default_headers(self.auth_headers()?)
            .pool_idle_timeout(None)
            .tcp_nodelay(true)
            .build()?)
    }

    /// TLS to the API server: its CA, HTTP/1.1.
    pub fn tls(&self) -> Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots.add(cert.context("parsing ca.crt")?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tls)
    }

    fn auth_headers(&self) -> Result<reqwest::header::HeaderMap> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", self.token).parse()?);
        Ok(headers)
    }

    /// The kubelet's `/metrics` as name → value, through the API server's node proxy (the kubelet
    /// endpoint itself admits only the API server, over mutual TLS).
    pub async fn metrics(&self) -> Result<std::collections::HashMap<String, f64>> {
        let text = self
            .client()?
            .get(format!("{}/api/v1/nodes/{}/proxy/metrics", self.url, self.net.node))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.trim().to_string(), value.trim().parse().ok()?))
            })
            .collect())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("skiff server exited unexpectedly: {status}\nserver log tail:\n{}", self.log_tail(30));
            }
        }
        Ok(())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Prints the count and the first of the server's warnings and errors to stderr.
    pub fn report_log(&self) {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let bad: Vec<&str> =
            log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked")).collect();
        if !bad.is_empty() {
            eprintln!("note: the server logged {} warning/error lines; first ones:", bad.len());
            for l in bad.iter().take(10) {
                eprintln!("  {l}");
            }
        }
    }

    /// SIGTERM, wait for the agent's teardown (SIGKILL after the grace period), then remove
    /// whatever network namespaces, bridge, containerd processes (the agent's own containerd and its
    /// shims, whose command lines name the data directory) and mounts under the data directory are
    /// left. Idempotent.
    pub fn stop(&mut self) -> Stopped {
        let started = Instant::now();
        let mut clean = true;
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            clean = false;
            while started.elapsed() < STOP_GRACE {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    clean = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !clean {
                eprintln!("note: the server did not exit within {} s of SIGTERM; killing it", STOP_GRACE.as_secs());
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut leftovers = self.net.remove_leftovers();
        let left = skiff_testkit::processes_of("containerd", self.dir.path());
        // A shim's container processes go with it.
        let mut doomed: Vec<u32> = left.iter().filter_map(|&p| u32::try_from(p).ok()).collect();
        doomed.extend(doomed.clone().into_iter().flat_map(crate::shim_mem::descendants));
        leftovers += left.len();
        for pid in doomed {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
        }
        skiff_testkit::unmount_under(self.dir.path());
        if let Some(to) = self.keep_log.take() {
            if let Err(e) = std::fs::copy(self.log_path(), &to) {
                eprintln!("note: copying the server log to {}: {e}", to.display());
            } else {
                eprintln!("server log kept in {}", to.display());
            }
        }
        Stopped { seconds, clean, leftovers }
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real OCI registry (`docker-registry serve`) on a free loopback port, killed on drop.
pub struct Registry {
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning docker-registry (apt-get install docker-registry)")?;
        let mut registry = Registry { addr: format!("127.0.0.1:{port}"), child, _dir: dir };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = registry.child.try_wait()? {
                bail!("docker-registry exited: {status}");
            }
            if http.get(format!("http://{}/v2/", registry.addr)).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(registry);
            }
            if Instant::now() > deadline {
                bail!("the registry did not answer within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pushes `wasm` as `{addr}/{name}:1` with `skiff image push`; returns the reference.
    pub fn push(&self, skiff: &Path, wasm: &Path, name: &str) -> Result<String> {
        if !wasm.exists() {
            bail!("{} does not exist (build the guests with scripts/build-workloads.sh)", wasm.display());
        }
        let reference = format!("{}/{name}:1", self.addr);
        let out = Command::new(skiff).args(["image", "push"]).arg(wasm).arg(&reference).output()?;
        if !out.status.success() {
            bail!("skiff image push failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(reference)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every node benchmark starts with: a registry holding the guest, and a node server.
pub struct Setup {
    // Drop order: the server (and its pods) before the registry.
    pub server: NodeServer,
    pub registry: Registry,
    pub image: String,
}

impl Setup {
    pub async fn start(bin: &Path, wasm: &Path, opts: &NodeOpts) -> Result<Self> {
        let registry = Registry::start().await?;
        let name = wasm.file_stem().and_then(|s| s.to_str()).unwrap_or("guest");
        let image = registry.push(bin, wasm, name)?;
        let server = NodeServer::start(bin, opts).await?;
        eprintln!(
            "node {} Ready (bridge {}, pod CIDR {}, kubelet port {}); image {image}",
            server.net.node, server.net.bridge, server.net.cidr, server.kubelet_port
        );
        Ok(Setup { server, registry, image })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap() {
        let net = |a: [u8; 4]| u32::from(std::net::Ipv4Addr::from(a));
        assert!(overlaps(net([10, 200, 0, 0]), 4096, net([10, 200, 3, 0]), 24));
        assert!(!overlaps(net([10, 200, 0, 0]), 4096, net([10, 200, 16, 0]), 24));
        assert!(overlaps(net([10, 200, 0, 0]), 4096, net([10, 0, 0, 0]), 8));
        assert!(!overlaps(net([10, 200, 0, 0]), 4096, net([192, 0, 2, 0]), 24));
    }

    #[test]
    fn pids_in_names() {
        assert_eq!(pid_in("skb1234", "skb", '\0'), Some("1234"));
        assert_eq!(pid_in("skiff-b77-abc", "skiff-b", '-'), Some("77"));
        assert_eq!(pid_in("skiff-box-abc", "skiff-b", '-'), None);
        assert_eq!(pid_in("skiff0", "skb", '\0'), None);
    }
}
