//! A second real node: a `skiff agent` process joined to a [`NodeServer`] with the admin token, on a
//! private pod network of its own (`a{pid}` on bridge `ska{pid}`, a CIDR beside the server node's), as
//! the node lifecycle tests run one. It can be killed outright (SIGKILL: a node dying) and started
//! again as the same node; what a killed agent leaves (network namespaces, bridge, proxy table) is
//! removed by the harness. The process gets SIGKILL if the harness dies (`PR_SET_PDEATHSIG`), and its
//! network leftovers are swept by the next run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cluster::die_with_parent;
use crate::node_cluster::{Net, NodeKind, NodeServer};

pub struct AgentNode {
    child: Option<Child>,
    pub net: Net,
    bin: PathBuf,
    server_url: String,
    token_file: PathBuf,
    dir: tempfile::TempDir,
}

impl AgentNode {
    /// Starts the agent and waits until its node is Ready.
    pub async fn start(bin: &Path, server: &NodeServer, cidr_prefix: u8) -> Result<Self> {
        let net = Net::pick_for(NodeKind::Agent, cidr_prefix)?;
        let mut agent = AgentNode {
            child: None,
            net,
            bin: bin.to_path_buf(),
            server_url: server.url.clone(),
            token_file: server.dir.path().join("admin.token"),
            dir: tempfile::tempdir()?,
        };
        agent.spawn(server)?;
        agent.wait_ready(server).await?;
        Ok(agent)
    }

    fn spawn(&mut self, server: &NodeServer) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let mut command = Command::new(&self.bin);
        command
            .args(["agent", "--server", &self.server_url, "--token-file"])
            .arg(&self.token_file)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--node-name", &self.net.node, "--bridge", &self.net.bridge, "--pod-cidr", &self.net.cidr])
            .args(["--service-cidr", &server.net.service_cidr])
            .args(["--kubelet-port", "0", "--sandbox-pool", "2", "--teardown-on-exit"])
            .args(["--ingress-http-port", "0", "--ingress-https-port", "0"])
            .env("SKIFF_LOG", std::env::var("SKIFF_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(die_with_parent(&mut command).spawn().context("spawning skiff agent")?);
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until the node is Ready and carries no taint of the node lifecycle controller.
    pub async fn wait_ready(&mut self, server: &NodeServer) -> Result<()> {
        let client = server.client()?;
        let url = format!("{}/api/v1/nodes/{}", server.url, self.net.node);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("skiff agent exited: {status}\nagent log tail:\n{}", self.log_tail(30));
            }
            if let Ok(resp) = client.get(&url).send().await {
                if resp.status().is_success() {
                    let node: serde_json::Value = resp.json().await?;
                    let tainted = node["spec"]["taints"].as_array().is_some_and(|t| {
                        t.iter().any(|t| t["key"].as_str().is_some_and(|k| k.starts_with("node.kubernetes.io/")))
                    });
                    if ready_condition(&node) == "True" && !tainted {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} was not Ready (untainted) within 120 s\nagent log tail:\n{}",
                    self.net.node,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL (the node dies: no teardown, no status update), reaped.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the agent again as the same node on the same data (after [`AgentNode::kill9`] and
    /// [`Net::remove_leftovers`]) and waits until it is Ready.
    pub async fn respawn(&mut self, server: &NodeServer) -> Result<()> {
        self.kill9();
        self.spawn(server)?;
        self.wait_ready(server).await
    }
}

/// The status of a node's `Ready` condition (`True`, `False`, `Unknown`), or "" without one.
pub fn ready_condition(node: &serde_json::Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

impl Drop for AgentNode {
    /// SIGTERM (the agent tears its pods and bridge down), SIGKILL after 60 s; then whatever is left.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
            }
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(60) {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.net.remove_leftovers();
        skiff_testkit::unmount_under(self.dir.path());
    }
}
