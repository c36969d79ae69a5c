//! Command-line options of a node agent, shared by `skiff server` (its in-process agent) and `skiff agent`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use skiff_node::config::{ContainerdConfig, LinuxRuntimeConfig, ProxyMode, WasmRuntimeConfig};
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
    /// This node's pod network; must overlap no host route (default: a block of the server's
    /// `--cluster-cidr`, allocated when the node registers).
    #[arg(long)]
    pub pod_cidr: Option<String>,
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
    /// An existing containerd's socket: Linux containers (and, with `--wasm-runtime containerd`, Wasm ones)
    /// run there. Without it the agent starts a containerd of its own for the first Linux container when the
    /// `containerd` binary is installed (Wasm-in-containerd then uses /run/containerd/containerd.sock).
    #[arg(long)]
    pub containerd_address: Option<PathBuf>,
    /// The containerd namespace of the kubelet's containers.
    #[arg(long, default_value = "skiff")]
    pub containerd_namespace: String,
    /// Linux (OCI) containers: `auto` (an existing or an own containerd), or `off` (this node runs only Wasm).
    #[arg(long, value_enum, default_value = "auto")]
    pub linux_containers: LinuxContainers,
    /// Image garbage collection starts when the image filesystem is fuller than this (percent; 100: never).
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_high_threshold: u8,
    /// Image garbage collection frees space down to this (percent; at most the high threshold).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low_threshold: u8,
    /// An image the node has had for less than this is never collected (Go duration: 2m, 1h30m).
    #[arg(long, default_value = "2m", value_parser = skiff_node::image::gc::parse_go_duration)]
    pub image_minimum_gc_age: std::time::Duration,
    /// How often image garbage collection looks (the kubelet's 5 minutes; tests use less).
    #[arg(long, default_value = "5m", value_parser = skiff_node::image::gc::parse_go_duration, hide = true)]
    pub image_gc_period: std::time::Duration,
    /// A k3s-style `registries.yaml`: mirrors (e.g. `docker.io` -> `http://127.0.0.1:5000`), per-registry
    /// credentials and TLS settings.
    #[arg(long)]
    pub registry_config: Option<PathBuf>,
    /// The service proxy: `nftables` (a table `skiff-<node>` programmed with /usr/sbin/nft) or `off`.
    #[arg(long, value_enum, default_value = "nftables")]
    pub proxy: ProxyKind,
    /// Enforce NetworkPolicies on this node's pods (a table `skiff-np-<node>`; with the proxy on).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub network_policy: bool,
    /// The port the ingress serves plain HTTP (HTTP/1.1, HTTP/2 with prior knowledge) on, on the node's address; 0: off.
    #[arg(long, default_value_t = 80)]
    pub ingress_http_port: u16,
    /// The port the ingress serves HTTPS (certificates from the Ingresses' TLS Secrets by SNI) on; 0: off.
    #[arg(long, default_value_t = 443)]
    pub ingress_https_port: u16,
    /// The cluster domain pods' names live in.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The cluster DNS address pods get in resolv.conf (default: the 10th address of the service
    /// CIDR, the `kube-dns` Service's); `none`: no cluster DNS on this node (pods get the node's
    /// resolvers).
    #[arg(long, value_parser = cluster_dns_arg)]
    pub cluster_dns: Option<String>,
    /// The node's resolver configuration: the base of `dnsPolicy: Default` pods and where the cluster
    /// DNS forwards names outside the cluster domain; `none`: no upstream resolvers.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
}

/// `--proxy`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    /// ClusterIP, NodePort and LoadBalancer rules in nftables.
    Nftables,
    /// No service rules on this node.
    Off,
}

/// `--linux-containers`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxContainers {
    /// Through `--containerd-address`, else a containerd of the agent's own if the binary is installed.
    Auto,
    /// None: only Wasm.
    Off,
}

impl NodeArgs {
    /// The node's name: `--node-name`, else the host name.
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(host_name)
    }

    pub fn config(&self, server_url: &str, ca_pem: &str, token: &str, data_dir: PathBuf) -> AgentConfig {
        let name = self.node_name();
        let mut c = AgentConfig::new(&name, server_url, ca_pem, token, data_dir);
        c.node_ip = self.node_ip;
        c.kubelet_listen = SocketAddr::new(self.node_ip, self.kubelet_port);
        c.pod_cidr = self.pod_cidr.clone().unwrap_or_default();
        c.bridge = self.bridge.clone();
        c.cni_bin_dir = self.cni_bin_dir.clone();
        c.sandbox_pool = self.sandbox_pool;
        c.insecure_registries = self.insecure_registries.clone();
        c.max_pods = self.max_pods;
        c.teardown_on_shutdown = self.teardown_on_exit;
        c.wasm_runtime = match self.wasm_runtime {
            WasmRuntimeKind::InProcess => WasmRuntimeConfig::InProcess,
            WasmRuntimeKind::Containerd => WasmRuntimeConfig::Containerd(ContainerdConfig {
                address: self.containerd_address.clone().unwrap_or_else(|| ContainerdConfig::default().address),
                namespace: self.containerd_namespace.clone(),
            }),
        };
        let namespace = self.containerd_namespace.clone();
        c.linux_runtime = match (self.linux_containers, &self.containerd_address) {
            (LinuxContainers::Off, _) => LinuxRuntimeConfig::Off,
            (LinuxContainers::Auto, Some(address)) => {
                LinuxRuntimeConfig::Containerd(ContainerdConfig { address: address.clone(), namespace })
            }
            (LinuxContainers::Auto, None) => match find_on_path("containerd") {
                Some(binary) => LinuxRuntimeConfig::Managed { binary, namespace },
                None => LinuxRuntimeConfig::Off,
            },
        };
        c.registry_config = self.registry_config.clone();
        c.image_gc_period = self.image_gc_period.max(std::time::Duration::from_millis(100));
        let (high, low, age) = (self.image_gc_high_threshold, self.image_gc_low_threshold, self.image_minimum_gc_age);
        c.image_gc = skiff_node::image::gc::GcPolicy::new(high, low, age).unwrap_or_else(|e| {
            tracing::warn!("{e}; collecting down to the high threshold");
            skiff_node::image::gc::GcPolicy { high_percent: high, low_percent: high, min_age: age }
        });
        c.cluster_domain = self.cluster_domain.trim_end_matches('.').to_string();
        match self.cluster_dns.as_deref() {
            Some("none") => c.dns = false,
            Some(ip) => c.cluster_dns = ip.parse().ok(),
            None => {}
        }
        let none = self.resolv_conf.as_os_str().is_empty() || self.resolv_conf.as_os_str() == "none";
        c.resolv_conf = (!none).then(|| self.resolv_conf.clone());
        c.ingress_http_port = self.ingress_http_port;
        c.ingress_https_port = self.ingress_https_port;
        c.network_policy = self.network_policy;
        c.proxy = match self.proxy {
            ProxyKind::Nftables => ProxyMode::Nftables,
            ProxyKind::Off => ProxyMode::Off,
        };
        c
    }
}

/// `--cluster-dns`: an IP address or `none`.
fn cluster_dns_arg(s: &str) -> Result<String, String> {
    if s == "none" || s.parse::<IpAddr>().is_ok() {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is neither an IP address nor \"none\""))
    }
}

/// The first executable `name` on PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "skiff-node".into())
}
