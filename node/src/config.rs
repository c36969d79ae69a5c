//! How a node agent is configured: its identity, where it keeps state, its pod network and its endpoints.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Everything a node agent needs to join a cluster and run pods.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Node's name (defaults to the host name in the CLI).
    pub node_name: String,
    /// The API server's URL (`https://host:port`).
    pub server_url: String,
    /// PEM of the CA that signed the API server's certificate.
    pub ca_pem: String,
    /// Bearer token for the API server (the kubelet endpoint accepts no token, only the API server's
    /// client certificate).
    pub token: String,
    /// A client certificate and key (PEM) to authenticate with instead of `token`: a joined node's
    /// own `system:node:<name>` identity.
    pub client_cert: Option<(String, String)>,
    /// The kubelet endpoint's serving certificate, signed by the cluster CA; `None`: requested from
    /// the API server through a CertificateSigningRequest at start.
    pub kubelet_serving: Option<crate::kubelet_tls::ServingCert>,
    /// Pod sandboxes, volumes, logs, image and compile caches live here.
    pub data_dir: PathBuf,
    /// The address the Node reports (`InternalIP`) and the kubelet endpoint binds.
    pub node_ip: IpAddr,
    /// The kubelet endpoint (logs); port 0 picks a free one, reported in the Node's `daemonEndpoints`.
    pub kubelet_listen: SocketAddr,
    /// The pod network: a /24 (or larger) that overlaps no host route. Empty: the server allocates
    /// it (`spec.podCIDR`), and the agent waits for it at start.
    pub pod_cidr: String,
    /// The range every node's pod CIDR lies in (the server's `--cluster-cidr`, learnt from the
    /// Node's allocation); when known, pods get a default route through their node, which
    /// routes on to the other nodes' pod networks.
    pub cluster_cidr: Option<String>,
    /// The Linux bridge the pods of this node hang on (at most 15 characters).
    pub bridge: String,
    /// Where the CNI plugins are (`bridge`, `host-local`, `loopback`, `portmap`).
    pub cni_bin_dir: PathBuf,
    /// Sandboxes prepared ahead of demand.
    pub sandbox_pool: usize,
    /// Registries reached over plain HTTP besides loopback ones (`host:port`).
    pub insecure_registries: Vec<String>,
    /// Pods this node accepts.
    pub max_pods: u32,
    /// How often the Lease is renewed (the Node's heartbeat).
    pub lease_interval: Duration,
    /// Remove every sandbox and the bridge when the agent stops (tests; a real node keeps them to adopt).
    pub teardown_on_shutdown: bool,
    /// Where Wasm containers run: in this process, or in containerd through skiff's shim.
    pub wasm_runtime: WasmRuntimeConfig,
    /// Where Linux (OCI) containers run.
    pub linux_runtime: LinuxRuntimeConfig,
    /// A k3s-style `registries.yaml`: mirrors, per-registry credentials and TLS settings.
    pub registry_config: Option<PathBuf>,
    /// The service proxy: nftables rules for ClusterIPs, NodePorts and LoadBalancers, or none.
    pub proxy: ProxyMode,
    /// Enforce NetworkPolicies in nftables (`--network-policy`, default on; needs the proxy on).
    pub network_policy: bool,
    /// The ingress's plain HTTP port on `node_ip` (`--ingress-http-port`, default 80; 0: off).
    pub ingress_http_port: u16,
    /// The ingress's HTTPS port on `node_ip` (`--ingress-https-port`, default 443; 0: off).
    pub ingress_https_port: u16,
    /// The cluster's service CIDR, routed from pods to the node (default 10.43.0.0/16).
    pub service_cidr: Option<String>,
    /// The cluster domain (`--cluster-domain`, default `cluster.local`).
    pub cluster_domain: String,
    /// The cluster DNS address pods get (`--cluster-dns`); `None`: the 10th address of the service
    /// CIDR, the `kube-dns` Service's.
    pub cluster_dns: Option<IpAddr>,
    /// The node's resolver configuration (`--resolv-conf`): the base of `dnsPolicy: Default` pods
    /// and where the cluster DNS forwards other names; `None`: no upstream resolvers.
    pub resolv_conf: Option<PathBuf>,
    /// Serve cluster DNS on this node (on the bridge gateway, port 53).
    pub dns: bool,
    /// Image garbage collection by disk use (`--image-gc-high-threshold`...).
    pub image_gc: crate::image::gc::GcPolicy,
    /// How often image garbage collection looks (the kubelet's 5 minutes).
    pub image_gc_period: Duration,
}

/// `--proxy`: how Service traffic reaches endpoints on this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// A table of the agent's own programmed through `nft` (see `proxy/`).
    #[default]
    Nftables,
    /// No service rules on this node.
    Off,
}

/// Where the kubelet runs Linux containers (runc through containerd).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LinuxRuntimeConfig {
    /// Nowhere: the node runs only Wasm and says so in `status.runtimeHandlers`.
    #[default]
    Off,
    /// In an existing containerd (`--containerd-address`).
    Containerd(ContainerdConfig),
    /// In a containerd of the agent's own (config, root, state and socket under the data dir), started
    /// with the first Linux container and restarted if it dies.
    Managed {
        /// The `containerd` binary.
        binary: PathBuf,
        /// The containerd namespace of the kubelet's containers.
        namespace: String,
    },
}

/// Where the kubelet runs Wasm containers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WasmRuntimeConfig {
    /// On the agent's own engine, one thread per pod inside its network namespace.
    #[default]
    InProcess,
    /// As containerd containers with runtime `io.containerd.skiff.v1` (the shim must be on containerd's PATH).
    Containerd(ContainerdConfig),
}

/// How to reach containerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerdConfig {
    /// containerd's gRPC socket.
    pub address: PathBuf,
    /// The containerd namespace the kubelet's containers live in.
    pub namespace: String,
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        Self { address: PathBuf::from("/run/containerd/containerd.sock"), namespace: "skiff".into() }
    }
}

impl AgentConfig {
    /// A configuration with the defaults of a single-node cluster, for the given identity and server.
    pub fn new(node_name: &str, server_url: &str, ca_pem: &str, token: &str, data_dir: PathBuf) -> Self {
        Self {
            node_name: node_name.to_string(),
            server_url: server_url.to_string(),
            ca_pem: ca_pem.to_string(),
            token: token.to_string(),
            client_cert: None,
            kubelet_serving: None,
            data_dir,
            node_ip: IpAddr::from([127, 0, 0, 1]),
            kubelet_listen: SocketAddr::from(([127, 0, 0, 1], 10250)),
            service_cidr: Some("10.43.0.0/16".into()),
            pod_cidr: "10.88.0.0/24".into(),
            cluster_cidr: None,
            bridge: "skiff0".into(),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            sandbox_pool: 4,
            insecure_registries: Vec::new(),
            max_pods: 1100,
            lease_interval: Duration::from_secs(10),
            teardown_on_shutdown: false,
            wasm_runtime: WasmRuntimeConfig::InProcess,
            linux_runtime: LinuxRuntimeConfig::Off,
            registry_config: None,
            proxy: ProxyMode::Nftables,
            network_policy: true,
            ingress_http_port: 80,
            ingress_https_port: 443,
            cluster_domain: "cluster.local".into(),
            cluster_dns: None,
            resolv_conf: Some(PathBuf::from(crate::dns::resolv::HOST_RESOLV_CONF)),
            dns: true,
            image_gc: crate::image::gc::GcPolicy::default(),
            image_gc_period: Duration::from_secs(300),
        }
    }

    /// The cluster DNS address pods are given: `--cluster-dns`, else the 10th address of the
    /// service CIDR; none without a service CIDR.
    pub fn cluster_dns_ip(&self) -> Option<IpAddr> {
        self.cluster_dns.or_else(|| self.service_cidr.as_deref().and_then(crate::dns::default_cluster_dns))
    }

    /// The node's resolver configuration text (`--resolv-conf`; empty when unset or unreadable).
    pub fn host_resolv_conf(&self) -> String {
        self.resolv_conf.as_deref().map(crate::dns::resolv::read_host).unwrap_or_default()
    }

    /// The pods this node offers: `max_pods`, but never more than its pod CIDR can address less
    /// the sandboxes its pool keeps ready (each holds an address), so a burst beyond it stays
    /// Pending at the scheduler instead of failing CNI ADDs on the node.
    pub fn pod_capacity(&self) -> u32 {
        let Ok(cidr) = crate::sandbox::Ipv4Cidr::parse(&self.pod_cidr) else { return self.max_pods };
        let pool = u32::try_from(self.sandbox_pool).unwrap_or(u32::MAX);
        self.max_pods.min(cidr.pod_addresses().saturating_sub(pool))
    }

    /// The prefix of every network namespace this agent creates (unique per node, so that several
    /// agents on one machine never touch each other's).
    pub fn netns_prefix(&self) -> String {
        let short: String = self.node_name.chars().filter(|c| c.is_ascii_alphanumeric()).take(20).collect();
        format!("skiff-{short}-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cidr: &str, max_pods: u32, pool: usize) -> AgentConfig {
        let mut c = AgentConfig::new("n", "https://127.0.0.1:6443", "", "", PathBuf::from("/tmp/n"));
        c.pod_cidr = cidr.into();
        c.max_pods = max_pods;
        c.sandbox_pool = pool;
        c
    }

    #[test]
    fn capacity_never_exceeds_what_the_pod_cidr_addresses() {
        // A /24 has 256 addresses: network, broadcast and gateway are not pods, the pool holds 4.
        assert_eq!(config("10.88.0.0/24", 1100, 4).pod_capacity(), 249);
        assert_eq!(config("10.88.0.0/24", 110, 4).pod_capacity(), 110);
        assert_eq!(config("10.88.0.0/16", 1100, 4).pod_capacity(), 1100);
        assert_eq!(config("10.88.0.0/30", 1100, 4).pod_capacity(), 0);
        assert_eq!(config("10.88.0.0/22", 5000, 0).pod_capacity(), 1021);
    }

    /// The agent sizes its engine with `WasmEngine::for_pods(pod_capacity())`: every pod the node
    /// advertises can run the largest supported guest (a preview 2 command) at the same time.
    #[test]
    fn the_engine_pool_holds_every_pod_the_node_advertises() {
        for (cidr, max_pods, pool) in
            [("10.88.0.0/24", 1100, 4), ("10.88.0.0/21", 1100, 4), ("10.88.0.0/16", 1100, 0), ("10.88.0.0/16", 5000, 4)]
        {
            let c = config(cidr, max_pods, pool);
            let engine = skiff_engine::Pool::for_pods(c.pod_capacity());
            assert!(engine.guests() >= c.pod_capacity(), "{cidr}, max {max_pods}: {engine:?}");
        }
    }
}
