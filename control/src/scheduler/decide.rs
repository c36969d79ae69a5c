//! One scheduling decision: filter the nodes (a sample of them in a large cluster, as
//! kube-scheduler's `percentageOfNodesToScore`), score the feasible ones, pick the best. Pure.

use super::filters;
use super::fit::{Diagnosis, NodeState};
use super::pod_info::PodInfo;
use super::scores::{self, normalize};
use super::topology::Topology;

/// Below this many nodes every node is examined.
const MIN_FEASIBLE: usize = 100;

/// How many feasible nodes to find before scoring among `n` nodes (kube-scheduler's adaptive
/// percentage: 50% less 1% per 125 nodes, at least 5%, at least 100 nodes).
pub fn feasible_to_find(n: usize) -> usize {
    if n < MIN_FEASIBLE {
        return n;
    }
    let percent = 50usize.saturating_sub(n / 125).max(5);
    (n.saturating_mul(percent) / 100).max(MIN_FEASIBLE)
}

/// Where a pod goes: the index into the nodes given, and how many nodes were examined (the
/// caller starts the next search after them, so load spreads over the whole cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Index of the chosen node.
    pub node: usize,
    /// Nodes filtered.
    pub examined: usize,
}

/// Decides for `pod`, starting the search at `start`; `existing_anti` says whether any pod in
/// the cluster has required anti-affinity.
pub fn decide_from(
    pod: &PodInfo,
    handler: Option<&str>,
    nodes: &[&NodeState],
    start: usize,
    existing_anti: bool,
) -> Result<Placement, Diagnosis> {
    let n = nodes.len();
    let topo = Topology::compute(pod, nodes.iter().copied(), existing_anti);
    let want = feasible_to_find(n);
    let mut diagnosis = Diagnosis { nodes: n, ..Default::default() };
    let mut feasible: Vec<usize> = Vec::new();
    let mut examined = 0;
    for i in 0..n {
        if feasible.len() >= want {
            break;
        }
        let idx = start.checked_add(i).map_or(i, |s| s % n);
        examined += 1;
        match filters::filter(pod, handler, nodes[idx], &topo) {
            Ok(()) => feasible.push(idx),
            Err(m) => *diagnosis.misfits.entry(m).or_default() += 1,
        }
    }
    if feasible.is_empty() {
        return Err(diagnosis);
    }
    let mut affinity: Vec<i64> = feasible.iter().map(|&i| scores::preferred_affinity(pod, nodes[i])).collect();
    normalize(&mut affinity, false);
    let spread: Option<Vec<i64>> =
        feasible.iter().map(|&i| topo.soft_spread_count(nodes[i])).collect::<Option<Vec<i64>>>().map(|mut raw| {
            normalize(&mut raw, true);
            raw
        });
    // The best score; ties are broken at random (reservoir sampling), as kube-scheduler does.
    let mut best: Option<(usize, i64)> = None;
    let mut ties: u32 = 0;
    for (j, &i) in feasible.iter().enumerate() {
        let node = nodes[i];
        let total = scores::least_allocated(pod, node)
            + scores::balanced(pod, node)
            + scores::image_locality(pod, node)
            + affinity[j]
            + spread.as_ref().map_or(0, |s| s[j]);
        match best {
            Some((_, b)) if total < b => {}
            Some((_, b)) if total == b => {
                ties = ties.saturating_add(1);
                if rand::random_range(0..=ties) == 0 {
                    best = Some((i, total));
                }
            }
            _ => {
                best = Some((i, total));
                ties = 0;
            }
        }
    }
    let node = best.map_or(feasible[0], |(i, _)| i);
    Ok(Placement { node, examined })
}

/// [`decide_from`] from the first node, with the existing pods' anti-affinity considered.
pub fn decide(pod: &PodInfo, handler: Option<&str>, nodes: &[&NodeState], start: usize) -> Result<usize, Diagnosis> {
    decide_from(pod, handler, nodes, start, true).map(|p| p.node)
}
