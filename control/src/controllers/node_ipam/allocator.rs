//! Which pod CIDR a node gets: the first block of the node mask size inside the cluster CIDR that
//! overlaps no CIDR already in use (by any node, allocated here or given on an agent's command
//! line). Pure, so the property that two nodes never share addresses is tested without a server.

use std::collections::HashSet;

use ipnet::Ipv4Net;

/// The cluster CIDR and the size of each node's block (kube-controller-manager's
/// `--cluster-cidr` and `--node-cidr-mask-size`; k3s's defaults are 10.42.0.0/16 and 24).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub cluster_cidr: Ipv4Net,
    pub node_mask: u8,
}

/// Why a configuration cannot hand out blocks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "--node-cidr-mask-size {mask} must be at least the cluster CIDR's prefix length ({prefix}) and at most 30"
    )]
    Mask { mask: u8, prefix: u8 },
}

impl Config {
    /// A configuration whose blocks fit the cluster CIDR and hold at least two pod addresses.
    pub fn new(cluster_cidr: Ipv4Net, node_mask: u8) -> Result<Self, ConfigError> {
        let prefix = cluster_cidr.prefix_len();
        if node_mask < prefix || node_mask > 30 {
            return Err(ConfigError::Mask { mask: node_mask, prefix });
        }
        Ok(Self { cluster_cidr: cluster_cidr.trunc(), node_mask })
    }

    /// How many node blocks the cluster CIDR holds.
    pub fn blocks(&self) -> u64 {
        1u64 << (self.node_mask - self.cluster_cidr.prefix_len())
    }

    /// The first free block, or `None` when every block overlaps one of `used`.
    pub fn allocate<'a>(&self, used: impl IntoIterator<Item = &'a Ipv4Net> + Clone) -> Option<Ipv4Net> {
        if used.clone().into_iter().any(|u| u.trunc().contains(&self.cluster_cidr)) {
            return None;
        }
        let blocked = self.blocked(used);
        let first = u32::from(self.cluster_cidr.network());
        let step = 1u32.checked_shl(32 - u32::from(self.node_mask))?;
        (0..self.blocks())
            .filter_map(|i| u32::try_from(i).ok()?.checked_mul(step)?.checked_add(first))
            .find(|network| !blocked.contains(network))
            .and_then(|network| Ipv4Net::new(network.into(), self.node_mask).ok())
    }

    /// The network addresses of the node blocks that `used` overlaps.
    fn blocked<'a>(&self, used: impl IntoIterator<Item = &'a Ipv4Net>) -> HashSet<u32> {
        let mut blocked = HashSet::new();
        for net in used {
            let net = net.trunc();
            if !(self.cluster_cidr.contains(&net) || net.contains(&self.cluster_cidr)) {
                continue;
            }
            // Clamp to the cluster CIDR, then mark every block the range touches.
            let start = u32::from(net.network()).max(u32::from(self.cluster_cidr.network()));
            let end = u32::from(net.broadcast()).min(u32::from(self.cluster_cidr.broadcast()));
            let shift = 32 - u32::from(self.node_mask);
            let (first, last) = (start >> shift, end >> shift);
            for block in first..=last {
                blocked.insert(block << shift);
            }
        }
        blocked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn k3s() -> Config {
        Config::new(net("10.42.0.0/16"), 24).unwrap()
    }

    #[test]
    fn the_first_free_block_in_order() {
        let c = k3s();
        assert_eq!(c.allocate(&[]), Some(net("10.42.0.0/24")));
        assert_eq!(c.allocate(&[net("10.42.0.0/24")]), Some(net("10.42.1.0/24")));
        assert_eq!(c.allocate(&[net("10.42.1.0/24")]), Some(net("10.42.0.0/24")), "a released block is reused");
    }

    #[test]
    fn a_given_cidr_of_another_size_blocks_what_it_overlaps() {
        let c = k3s();
        // An agent started with --pod-cidr 10.42.0.0/23 holds the first two blocks.
        assert_eq!(c.allocate(&[net("10.42.0.0/23")]), Some(net("10.42.2.0/24")));
        // A smaller one blocks the block it lies in.
        assert_eq!(c.allocate(&[net("10.42.0.128/25")]), Some(net("10.42.1.0/24")));
        // CIDRs outside the cluster CIDR change nothing.
        assert_eq!(c.allocate(&[net("10.88.0.0/24"), net("192.168.0.0/16")]), Some(net("10.42.0.0/24")));
        // One covering the whole cluster CIDR leaves nothing.
        assert_eq!(c.allocate(&[net("10.0.0.0/8")]), None);
    }

    #[test]
    fn exhaustion_is_none() {
        let c = Config::new(net("10.42.0.0/24"), 26).unwrap();
        assert_eq!(c.blocks(), 4);
        let mut used = Vec::new();
        while let Some(block) = c.allocate(&used) {
            used.push(block);
        }
        assert_eq!(used.len(), 4);
        assert_eq!(used[3], net("10.42.0.192/26"));
    }

    #[test]
    fn masks_that_do_not_fit_are_refused() {
        assert!(Config::new(net("10.42.0.0/16"), 15).is_err());
        assert!(Config::new(net("10.42.0.0/16"), 31).is_err());
        assert_eq!(Config::new(net("10.42.7.9/16"), 24).unwrap().cluster_cidr, net("10.42.0.0/16"));
        assert_eq!(Config::new(net("0.0.0.0/0"), 8).unwrap().blocks(), 256);
    }

    proptest! {
        /// Allocating until exhaustion from any starting set never hands out a block that
        /// overlaps another, and only stops when no block is free.
        #[test]
        fn blocks_never_overlap(prefix in 8u8..=24, extra in 0u8..=6, given in proptest::collection::vec((0u32..1 << 16, 16u8..=30), 0..6)) {
            let c = Config::new(Ipv4Net::new(std::net::Ipv4Addr::new(10, 0, 0, 0), prefix).unwrap(), (prefix + extra).min(30)).unwrap();
            let mut used: Vec<Ipv4Net> = given
                .iter()
                .map(|(offset, len)| Ipv4Net::new((u32::from(c.cluster_cidr.network()) | (offset << 8)).into(), *len).unwrap().trunc())
                .collect();
            let mut handed = 0u64;
            while let Some(block) = c.allocate(&used) {
                prop_assert!(c.cluster_cidr.contains(&block));
                prop_assert!(used.iter().all(|u| !u.contains(&block.network()) && !block.contains(&u.network())), "{block} overlaps {used:?}");
                used.push(block);
                handed += 1;
                prop_assert!(handed <= c.blocks());
            }
        }
    }
}
