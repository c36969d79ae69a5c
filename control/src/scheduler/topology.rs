//! [`Topology`]: the cluster-wide facts a pod's inter-pod affinity, anti-affinity and topology
//! spreading depend on, computed once per scheduling attempt from every node's pods, then read
//! per node by the filters and scores. Pure: no IO.

use std::collections::{HashMap, HashSet};

use super::filters;
use super::fit::{Misfit, NodeState};
use super::pod_info::PodInfo;

/// Pod counts per domain of one spread constraint.
#[derive(Clone, Debug, Default)]
struct SpreadCounts {
    key: String,
    max_skew: i64,
    hard: bool,
    /// Matching pods per value of the topology key, over the nodes the pod may go to.
    counts: HashMap<String, i64>,
    /// The smallest count (0 when some eligible domain has none).
    min: i64,
    /// The pod matches its own selector (it adds one to the domain it goes to).
    self_match: i64,
}

/// See the module documentation. [`Topology::default`] is the view of a pod with no such rules
/// in a cluster where no pod has anti-affinity.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    /// Per required affinity term: the domains (values of its topology key) holding a match.
    affinity: Vec<(String, HashSet<String>)>,
    /// Some pod in the cluster matches some affinity term.
    affinity_any: bool,
    /// The pod matches all its own affinity terms (the first pod of a group may go anywhere).
    affinity_self: bool,
    /// Per required anti-affinity term: the domains holding a match.
    anti: Vec<(String, HashSet<String>)>,
    /// `(key, value)` domains where an existing pod's anti-affinity forbids this pod.
    existing_anti: HashSet<(String, String)>,
    spread: Vec<SpreadCounts>,
}

impl Topology {
    /// Computes the view for `pod` over `nodes`. `existing_anti` says whether any pod in the
    /// cluster has required anti-affinity (when false and the pod has no rules of its own,
    /// nothing is computed).
    pub fn compute<'a>(
        pod: &PodInfo,
        nodes: impl IntoIterator<Item = &'a NodeState> + Clone,
        existing_anti: bool,
    ) -> Self {
        let mut topo = Topology::default();
        if pod.is_simple() && !existing_anti {
            return topo;
        }
        topo.affinity = pod.affinity.iter().map(|t| (t.topology_key.clone(), HashSet::new())).collect();
        topo.anti = pod.anti_affinity.iter().map(|t| (t.topology_key.clone(), HashSet::new())).collect();
        topo.affinity_self = pod.affinity.iter().all(|t| t.matches(pod));
        topo.spread = pod
            .spread
            .iter()
            .map(|s| SpreadCounts {
                key: s.topology_key.clone(),
                max_skew: s.max_skew,
                hard: s.hard,
                self_match: i64::from(pod.labels.matched_by(&s.selector)),
                ..Default::default()
            })
            .collect();
        for node in nodes {
            let eligible = filters::node_affinity(pod, node).is_ok();
            for (c, spread) in topo.spread.iter_mut().enumerate() {
                let Some(value) = node.label(&spread.key).filter(|_| eligible) else { continue };
                let n = node
                    .pods
                    .iter()
                    .filter(|p| p.namespace == pod.namespace && p.labels.matched_by(&pod.spread[c].selector))
                    .count();
                let count = spread.counts.entry(value.to_string()).or_insert(0);
                *count = count.saturating_add(i64::try_from(n).unwrap_or(i64::MAX));
            }
            for other in &node.pods {
                for (i, term) in pod.affinity.iter().enumerate() {
                    if term.matches(other) {
                        topo.affinity_any = true;
                        if let Some(v) = node.label(&term.topology_key) {
                            topo.affinity[i].1.insert(v.to_string());
                        }
                    }
                }
                for (i, term) in pod.anti_affinity.iter().enumerate() {
                    if let Some(v) = node.label(&term.topology_key).filter(|_| term.matches(other)) {
                        topo.anti[i].1.insert(v.to_string());
                    }
                }
                for term in other.anti_affinity.iter().filter(|t| t.matches(pod)) {
                    if let Some(v) = node.label(&term.topology_key) {
                        topo.existing_anti.insert((term.topology_key.clone(), v.to_string()));
                    }
                }
            }
        }
        for spread in &mut topo.spread {
            spread.min = spread.counts.values().copied().min().unwrap_or(0);
        }
        topo
    }

    /// `DoNotSchedule` spreading: placing the pod on `node` keeps every hard constraint's skew
    /// within `maxSkew`.
    pub fn spread_filter(&self, node: &NodeState) -> Result<(), Misfit> {
        for spread in self.spread.iter().filter(|s| s.hard) {
            let Some(value) = node.label(&spread.key) else { return Err(Misfit::SpreadMissingLabel) };
            let count = spread.counts.get(value).copied().unwrap_or(0);
            let skew = count.saturating_add(spread.self_match).saturating_sub(spread.min);
            if skew > spread.max_skew {
                return Err(Misfit::Spread);
            }
        }
        Ok(())
    }

    /// Required inter-pod affinity and anti-affinity, the pod's own and existing pods'.
    pub fn affinity_filter(&self, node: &NodeState) -> Result<(), Misfit> {
        if self.existing_anti.iter().any(|(k, v)| node.label(k) == Some(v.as_str())) {
            return Err(Misfit::ExistingAntiAffinity);
        }
        for (key, domains) in &self.anti {
            if node.label(key).is_some_and(|v| domains.contains(v)) {
                return Err(Misfit::PodAntiAffinity);
            }
        }
        let first_of_group = !self.affinity_any && self.affinity_self;
        for (key, domains) in &self.affinity {
            let Some(v) = node.label(key) else { return Err(Misfit::PodAffinity) };
            if !domains.contains(v) && !first_of_group {
                return Err(Misfit::PodAffinity);
            }
        }
        Ok(())
    }

    /// `ScheduleAnyway` spreading: the matching pods already in the node's domains (fewer is
    /// better; a node without the key counts as the worst seen).
    pub fn soft_spread_count(&self, node: &NodeState) -> Option<i64> {
        let mut total: i64 = 0;
        let mut any = false;
        for spread in self.spread.iter().filter(|s| !s.hard) {
            any = true;
            let count = node.label(&spread.key).map_or(i64::MAX / 4, |v| spread.counts.get(v).copied().unwrap_or(0));
            total = total.saturating_add(count);
        }
        any.then_some(total)
    }
}
