//! Network configuration of the node's pod network, its validation, and the host route overlap check.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::SandboxError;

/// How the node's pods are networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Linux bridge the pods' veths attach to, e.g. `skiff0` (at most 15 characters).
    pub bridge: String,
    /// IPv4 pod subnet, e.g. `10.88.0.0/24`; must not overlap a host route on another interface.
    pub pod_cidr: String,
    /// Where the CNI plugins are, e.g. `/usr/lib/cni`.
    pub cni_bin_dir: PathBuf,
    /// Agent-owned directory: netconf, host-local IPAM data, sandbox records.
    pub state_dir: PathBuf,
    /// Every network namespace we create is named with this prefix, e.g. `skiff-node1-`.
    pub netns_prefix: String,
    /// Sandboxes prepared ahead of demand (0 = none).
    pub pool_size: usize,
    /// The cluster's service CIDR: pods get a route to it through the bridge, where the node's
    /// service proxy translates ClusterIPs (none: no route).
    pub service_cidr: Option<String>,
    /// Pods get a default route through the bridge's gateway, as Kubernetes pods have (on a node
    /// whose pod CIDR the server allocated from the cluster CIDR), so that they and the node reach
    /// pods and hosts beyond it.
    pub default_route: bool,
}

/// Transport protocol of a host port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A `hostPort` of a pod: traffic to `host_ip:host_port` on the node goes to the pod's `container_port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    pub host_ip: Option<IpAddr>,
}

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `a.b.c.d/n`; the host bits must be zero.
    pub fn parse(s: &str) -> Result<Self, SandboxError> {
        let bad = |why: &str| SandboxError::InvalidConfig(format!("pod CIDR {s:?}: {why}"));
        let (addr, prefix) = s.split_once('/').ok_or_else(|| bad("expected a.b.c.d/n"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address (only IPv4 is supported)"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("prefix length must be between 8 and 30"));
        }
        let cidr = Ipv4Cidr { addr, prefix };
        if u32::from(addr) & !cidr.mask() != 0 {
            return Err(bad("host bits are set; give the network address"));
        }
        Ok(cidr)
    }

    fn mask(&self) -> u32 {
        mask_of(self.prefix)
    }

    /// How many pods the subnet can address: every address but the network, the broadcast and the
    /// bridge's gateway address.
    pub fn pod_addresses(&self) -> u32 {
        let size = 1u64 << (32 - u32::from(self.prefix.min(32)));
        u32::try_from(size.saturating_sub(3)).unwrap_or(u32::MAX)
    }

    /// Whether two subnets share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let m = mask_of(self.prefix.min(other.prefix));
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask_of(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// One IPv4 route of the host's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub iface: String,
    pub dest: Ipv4Cidr,
}

/// Reads the host's IPv4 main routing table from `/proc/net/route` (no fork of `ip`).
pub fn host_routes() -> Result<Vec<HostRoute>, SandboxError> {
    let path = "/proc/net/route";
    let text = std::fs::read_to_string(path).map_err(|e| SandboxError::io("read", path, e))?;
    Ok(parse_proc_routes(&text))
}

/// Parses the text of `/proc/net/route` (addresses are little-endian hex).
pub fn parse_proc_routes(text: &str) -> Vec<HostRoute> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let iface = (*f.first()?).to_string();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The kernel prints the network-order bytes as a native (little-endian) integer.
            let dest = Ipv4Addr::from(dest.to_le_bytes());
            let prefix = u32::from_be_bytes(mask.to_le_bytes()).leading_ones() as u8;
            Some(HostRoute { iface, dest: Ipv4Cidr { addr: dest, prefix } })
        })
        .collect()
}

/// Checks `cfg` and returns its parsed pod CIDR: names, paths, and that no host route on another
/// interface than our bridge overlaps the pod CIDR (the default route is not counted).
pub fn validate(cfg: &NetworkConfig, routes: &[HostRoute]) -> Result<Ipv4Cidr, SandboxError> {
    let bad = |s: String| Err(SandboxError::InvalidConfig(s));
    if cfg.bridge.is_empty() || cfg.bridge.len() > 15 || !cfg.bridge.chars().all(is_name_char) {
        return bad(format!("bridge name {:?}: 1 to 15 characters of [A-Za-z0-9_.-]", cfg.bridge));
    }
    if cfg.netns_prefix.is_empty() || cfg.netns_prefix.len() > 200 || !cfg.netns_prefix.chars().all(is_name_char) {
        return bad(format!("netns prefix {:?}: 1 to 200 characters of [A-Za-z0-9_.-]", cfg.netns_prefix));
    }
    if !cfg.state_dir.is_absolute() {
        return bad(format!("state dir {} must be an absolute path", cfg.state_dir.display()));
    }
    if !cfg.cni_bin_dir.is_dir() {
        return bad(format!("CNI plugin directory {} does not exist", cfg.cni_bin_dir.display()));
    }
    let cidr = Ipv4Cidr::parse(&cfg.pod_cidr)?;
    for r in routes {
        if r.dest.prefix == 0 || r.iface == cfg.bridge {
            continue;
        }
        if r.dest.overlaps(&cidr) {
            return Err(SandboxError::CidrOverlap {
                cidr: cidr.to_string(),
                route: r.dest.to_string(),
                iface: r.iface.clone(),
            });
        }
    }
    Ok(cidr)
}

pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}
