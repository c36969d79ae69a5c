//! Command-line options of a node agent, shared by `skiff server` (its in-process agent) and `skiff agent`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use skiff_node::config::{ContainerdConfig, WasmRuntimeConfig};
use skiff_node::AgentConfig;

/// `--wasm-runtime`: where Wasm containers run.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WasmRuntimeKind {
    /// On the agent's own engine.
    InProcess,
    /// In containerd, through skiff's shim (`io.containerd.skiff.v1`).
    Containerd,
}

#[derive(Args, Clone, Debug)]
pub struct NodeArgs {
    /// The Node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The address this node reports and its kubelet endpoint binds.
    #[arg(long, default_value = "127.0.0.1")]
    pub node_ip: IpAddr,
    /// Port of the kubelet endpoint (logs); 0 picks a free one.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// This node's pod network; must overlap no host route.
    #[arg(long, default_value = "10.88.0.0/24")]
    pub pod_cidr: String,
    /// The Linux bridge pods hang on (at most 15 characters).
    #[arg(long, default_value = "skiff0")]
    pub bridge: String,
    /// Where the CNI plugins are.
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_bin_dir: PathBuf,
    /// Pod sandboxes prepared ahead of demand.
    #[arg(long, default_value_t = 4)]
    pub sandbox_pool: usize,
    /// A registry reached over plain HTTP (`host:port`); loopback registries always are. Repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Pods this node accepts.
    #[arg(long, default_value_t = 1100)]
    pub max_pods: u32,
    /// On exit, remove every pod sandbox and the bridge instead of keeping them for the next start.
    #[arg(long)]
    pub teardown_on_exit: bool,
    /// Where Wasm containers run: `in-process`, or `containerd` through skiff's shim (`skiff shim install`).
    #[arg(long, value_enum, default_value = "in-process")]
    pub wasm_runtime: WasmRuntimeKind,
    /// containerd's socket (with `--wasm-runtime containerd`).
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub containerd_address: PathBuf,
    /// The containerd namespace of the kubelet's containers (with `--wasm-runtime containerd`).
    #[arg(long, default_value = "skiff")]
    pub containerd_namespace: String,
}

impl NodeArgs {
    pub fn config(&self, server_url: &str, ca_pem: &str, token: &str, data_dir: PathBuf) -> AgentConfig {
        let name = self.node_name.clone().unwrap_or_else(host_name);
        let mut c = AgentConfig::new(&name, server_url, ca_pem, token, data_dir);
        c.node_ip = self.node_ip;
        c.kubelet_listen = SocketAddr::new(self.node_ip, self.kubelet_port);
        c.pod_cidr = self.pod_cidr.clone();
        c.bridge = self.bridge.clone();
        c.cni_bin_dir = self.cni_bin_dir.clone();
        c.sandbox_pool = self.sandbox_pool;
        c.insecure_registries = self.insecure_registries.clone();
        c.max_pods = self.max_pods;
        c.teardown_on_shutdown = self.teardown_on_exit;
        c.wasm_runtime = match self.wasm_runtime {
            WasmRuntimeKind::InProcess => WasmRuntimeConfig::InProcess,
            WasmRuntimeKind::Containerd => WasmRuntimeConfig::Containerd(ContainerdConfig {
                address: self.containerd_address.clone(),
                namespace: self.containerd_namespace.clone(),
            }),
        };
        c
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "skiff-node".into())
}
