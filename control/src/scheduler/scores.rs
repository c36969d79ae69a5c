//! Scores: pure functions rating a node that passed the filters, each on 0..=100 (higher is
//! better) once normalized, as kube-scheduler's score plugins of the same names do.

use super::filters::term_matches;
use super::fit::NodeState;
use super::pod_info::PodInfo;

/// The top of every score.
pub const MAX: i64 = 100;

/// The percent of `alloc` left free when `used` is taken (0..=100; 0 for nothing allocatable).
/// Saturates: no quantity can overflow it.
pub fn free_percent(alloc: i128, used: i128) -> i128 {
    if alloc <= 0 {
        return 0;
    }
    let left = alloc.saturating_sub(used).max(0);
    // Past i128, left / (alloc / 100) gives the same percent without multiplying a huge value.
    let percent = match left.checked_mul(100) {
        Some(scaled) => scaled / alloc,
        None => left / (alloc / 100).max(1),
    };
    percent.clamp(0, 100)
}

/// What the node's pods use as scores see it (the non-zero sum; never below the real one).
fn scoring_used(node: &NodeState) -> super::fit::Resources {
    let (a, b) = (node.requested, node.nonzero_requested);
    super::fit::Resources { cpu_milli: a.cpu_milli.max(b.cpu_milli), memory: a.memory.max(b.memory), pods: a.pods }
}

/// `NodeResourcesFit` LeastAllocated: the mean share of cpu and memory left free after
/// placing the pod.
pub fn least_allocated(pod: &PodInfo, node: &NodeState) -> i64 {
    let (req, used, alloc) = (pod.nonzero, scoring_used(node), node.allocatable);
    let cpu = free_percent(alloc.cpu_milli, used.cpu_milli.saturating_add(req.cpu_milli));
    let mem = free_percent(alloc.memory, used.memory.saturating_add(req.memory));
    i64::try_from((cpu + mem) / 2).unwrap_or(0)
}

/// `NodeResourcesBalancedAllocation`: 100 when cpu and memory would be used in equal shares,
/// less the further apart they are.
pub fn balanced(pod: &PodInfo, node: &NodeState) -> i64 {
    let (req, used, alloc) = (pod.nonzero, scoring_used(node), node.allocatable);
    let cpu_used = 100 - free_percent(alloc.cpu_milli, used.cpu_milli.saturating_add(req.cpu_milli));
    let mem_used = 100 - free_percent(alloc.memory, used.memory.saturating_add(req.memory));
    i64::try_from(100 - (cpu_used - mem_used).abs()).unwrap_or(0).clamp(0, MAX)
}

/// `NodeAffinity` (raw): the summed weights of the preferred terms the node matches.
pub fn preferred_affinity(pod: &PodInfo, node: &NodeState) -> i64 {
    pod.preferred_terms
        .iter()
        .filter(|(_, term)| term_matches(term, node))
        .fold(0i64, |sum, (w, _)| sum.saturating_add(i64::from(*w)))
}

/// `ImageLocality` (simplified to counts, as image sizes are not reported): the percent of the
/// pod's images the node already has.
pub fn image_locality(pod: &PodInfo, node: &NodeState) -> i64 {
    if pod.images.is_empty() || node.images.is_empty() {
        return 0;
    }
    let present = pod.images.iter().filter(|i| node.images.contains(*i)).count();
    i64::try_from(present.saturating_mul(100) / pod.images.len()).unwrap_or(0)
}

/// Scales raw scores to 0..=100 by the largest (`reverse`: the smallest raw score gets 100).
pub fn normalize(raw: &mut [i64], reverse: bool) {
    let max = raw.iter().copied().max().unwrap_or(0);
    let min = raw.iter().copied().min().unwrap_or(0);
    for s in raw.iter_mut() {
        *s = if reverse {
            let span = max.saturating_sub(min);
            if span == 0 {
                MAX
            } else {
                max.saturating_sub(*s).saturating_mul(MAX) / span
            }
        } else if max <= 0 {
            0
        } else {
            (*s).max(0).saturating_mul(MAX) / max
        };
    }
}
