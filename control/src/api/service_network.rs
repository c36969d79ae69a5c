//! The service network a server hands out addresses from: `--service-cidr` (ClusterIPs) and
//! `--service-node-port-range` (NodePorts).

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// Where ClusterIPs and NodePorts come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceNetwork {
    /// The IPv4 range ClusterIPs are allocated from (default 10.43.0.0/16, as k3s).
    pub cidr: ipnet::Ipv4Net,
    /// The NodePort range (default 30000-32767, as Kubernetes).
    pub node_ports: RangeInclusive<u16>,
}

impl Default for ServiceNetwork {
    fn default() -> Self {
        ServiceNetwork {
            cidr: ipnet::Ipv4Net::new(Ipv4Addr::new(10, 43, 0, 0), 16).unwrap_or_default(),
            node_ports: 30000..=32767,
        }
    }
}

/// A `--service-node-port-range` value: `LOW-HIGH`, both in 1..=65535, LOW <= HIGH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRange(pub RangeInclusive<u16>);

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (low, high) = s.split_once('-').ok_or_else(|| format!("{s:?}: expected LOW-HIGH, e.g. 30000-32767"))?;
        let parse = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p > 0);
        match (parse(low), parse(high)) {
            (Some(low), Some(high)) if low <= high => Ok(PortRange(low..=high)),
            _ => Err(format!("{s:?}: expected LOW-HIGH with 1 <= LOW <= HIGH <= 65535")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!("30000-32767".parse::<PortRange>().unwrap().0, 30000..=32767);
        for bad in ["", "30000", "0-10", "10-5", "1-70000", "a-b"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_is_k3s() {
        assert_eq!(ServiceNetwork::default().cidr.to_string(), "10.43.0.0/16");
    }
}
