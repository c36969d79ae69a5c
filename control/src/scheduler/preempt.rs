//! Preemption (kube-scheduler's DefaultPreemption, its core): when a pod fits nowhere, find a
//! node where evicting pods of lower priority lets it fit, evicting as few and as unimportant
//! pods as possible. Pure: the scheduler then nominates the node and deletes the victims.
//!
//! Only failures that removing pods can cure are considered (cpu, memory, the pod count and host
//! ports); a node the pod cannot use for another reason (taints, selectors, affinity, runtime)
//! is never a candidate. PodDisruptionBudgets are not weighed (kube prefers candidates that
//! violate none).

use std::sync::Arc;

use super::filters;
use super::fit::{Misfit, NodeState};
use super::pod_info::PodInfo;
use super::topology::Topology;

/// A node and the pods to evict from it.
#[derive(Clone, Debug)]
pub struct Preemption {
    /// Index of the node in the slice given.
    pub node: usize,
    /// The pods to evict, highest priority first.
    pub victims: Vec<Arc<PodInfo>>,
}

/// Whether evicting pods can cure this misfit.
fn curable(misfit: &Misfit) -> bool {
    matches!(misfit, Misfit::InsufficientCpu | Misfit::InsufficientMemory | Misfit::TooManyPods | Misfit::HostPorts)
}

/// Whether `pod` (of `priority`) may preempt now: its policy allows it, and it has not already
/// preempted on a node where lower-priority pods are still terminating (it waits for them).
pub fn eligible(pod: &PodInfo, nodes: &[&NodeState], priority_of: &dyn Fn(&PodInfo) -> i32, priority: i32) -> bool {
    if pod.never_preempts {
        return false;
    }
    let Some(nominated) = &pod.nominated_node else { return true };
    let Some(node) = nodes.iter().find(|n| &n.name == nominated) else { return true };
    !node.pods.iter().any(|p| p.terminating && priority_of(p) < priority)
}

/// The best preemption for `pod` (of `priority`), or `None` when evicting lower-priority pods
/// helps nowhere. `priority_of` gives another pod's priority.
pub fn preempt(
    pod: &PodInfo,
    priority: i32,
    handler: Option<&str>,
    nodes: &[&NodeState],
    priority_of: &dyn Fn(&PodInfo) -> i32,
    existing_anti: bool,
) -> Option<Preemption> {
    let topo = Topology::compute(pod, nodes.iter().copied(), existing_anti);
    let mut best: Option<(Rank, Preemption)> = None;
    for (i, node) in nodes.iter().enumerate() {
        match filters::filter(pod, handler, node, &topo) {
            Ok(()) => continue, // it fits: nothing to preempt (the cache moved meanwhile)
            Err(m) if !curable(&m) => continue,
            Err(_) => {}
        }
        let Some(victims) = victims_on(pod, priority, handler, node, &topo, priority_of) else { continue };
        let rank = Rank::of(&victims, priority_of);
        if best.as_ref().is_none_or(|(b, _)| rank < *b) {
            best = Some((rank, Preemption { node: i, victims }));
        }
    }
    best.map(|(_, p)| p)
}

/// The fewest lower-priority pods to evict from `node` for `pod` to fit: all of them removed,
/// then reprieved one by one from the highest priority down while the pod still fits.
fn victims_on(
    pod: &PodInfo,
    priority: i32,
    handler: Option<&str>,
    node: &NodeState,
    topo: &Topology,
    priority_of: &dyn Fn(&PodInfo) -> i32,
) -> Option<Vec<Arc<PodInfo>>> {
    // Each pod's priority read once (it may need the PriorityClass cache).
    let mut lower: Vec<(i32, Arc<PodInfo>)> = node
        .pods
        .iter()
        .filter(|p| !p.terminating)
        .map(|p| (priority_of(p), Arc::clone(p)))
        .filter(|(p, _)| *p < priority)
        .collect();
    if lower.is_empty() {
        return None;
    }
    // Highest priority first, then the newest first (kube reprieves the most important first).
    lower.sort_by(|(pa, a), (pb, b)| pb.cmp(pa).then_with(|| b.created.cmp(&a.created)));
    let mut trial = node.clone();
    for (_, victim) in &lower {
        trial.remove_pod(&victim.uid);
    }
    filters::filter(pod, handler, &trial, topo).ok()?;
    let mut victims = Vec::new();
    for (_, candidate) in lower {
        trial.add_pod(Arc::clone(&candidate));
        if filters::filter(pod, handler, &trial, topo).is_err() {
            trial.remove_pod(&candidate.uid);
            victims.push(candidate);
        }
    }
    Some(victims)
}

/// How bad a candidate is (lower is better), in kube's order: the highest victim priority, the
/// sum of the victims' priorities, then their number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    highest: i64,
    sum: i64,
    count: usize,
}

impl Rank {
    fn of(victims: &[Arc<PodInfo>], priority_of: &dyn Fn(&PodInfo) -> i32) -> Self {
        let priorities = victims.iter().map(|v| i64::from(priority_of(v)));
        Rank {
            highest: priorities.clone().max().unwrap_or(i64::MIN),
            sum: priorities.fold(0i64, i64::saturating_add),
            count: victims.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::fit::Resources;

    fn node(name: &str, cpu_milli: i128) -> NodeState {
        NodeState {
            name: name.into(),
            ready: true,
            allocatable: Resources { cpu_milli, memory: 1 << 34, pods: 110 },
            ..Default::default()
        }
    }

    fn pod(name: &str, cpu_milli: i128, priority: i32) -> Arc<PodInfo> {
        let requests = Resources { cpu_milli, memory: 0, pods: 1 };
        Arc::new(PodInfo {
            key: format!("default/{name}"),
            uid: name.into(),
            namespace: "default".into(),
            created: format!("2026-01-01T00:00:{:02}Z", name.len()),
            requests,
            nonzero: requests,
            priority: Some(priority),
            ..Default::default()
        })
    }

    fn prio(p: &PodInfo) -> i32 {
        p.priority.unwrap_or(0)
    }

    #[test]
    fn the_fewest_and_least_important_pods_are_evicted() {
        let mut a = node("a", 1000);
        a.add_pod(pod("a-low", 400, 1));
        a.add_pod(pod("a-mid", 400, 5));
        let mut b = node("b", 1000);
        b.add_pod(pod("b-low1", 300, 1));
        b.add_pod(pod("b-low2", 300, 1));
        b.add_pod(pod("b-high", 400, 100));
        let incoming = pod("new", 500, 10);
        let nodes = [&a, &b];
        let p = preempt(&incoming, 10, None, &nodes, &prio, false).expect("a preemption");
        // a: evicting a-low frees 400 (600 free): enough with 200 already free? 1000-800=200+400=600 >= 500.
        assert_eq!(p.node, 0);
        let names: Vec<&str> = p.victims.iter().map(|v| v.uid.as_str()).collect();
        assert_eq!(names, ["a-low"]);
    }

    #[test]
    fn equal_or_higher_priority_pods_are_never_victims() {
        let mut a = node("a", 1000);
        a.add_pod(pod("same", 800, 10));
        let incoming = pod("new", 500, 10);
        assert!(preempt(&incoming, 10, None, &[&a], &prio, false).is_none());
    }

    #[test]
    fn a_node_unusable_for_other_reasons_is_no_candidate() {
        let mut a = node("a", 1000);
        a.unschedulable = true;
        a.add_pod(pod("low", 800, 0));
        let incoming = pod("new", 500, 10);
        assert!(preempt(&incoming, 10, None, &[&a], &prio, false).is_none());
    }

    #[test]
    fn a_pod_that_would_not_fit_even_on_an_empty_node_preempts_nothing() {
        let mut a = node("a", 1000);
        a.add_pod(pod("low", 800, 0));
        let incoming = pod("huge", 5000, 10);
        assert!(preempt(&incoming, 10, None, &[&a], &prio, false).is_none());
    }

    #[test]
    fn never_policy_and_terminating_victims_make_a_pod_wait() {
        let mut a = node("a", 1000);
        let mut dying = (*pod("dying", 800, 0)).clone();
        dying.terminating = true;
        a.add_pod(Arc::new(dying));
        let mut incoming = (*pod("new", 500, 10)).clone();
        assert!(eligible(&incoming, &[&a], &prio, 10));
        incoming.nominated_node = Some("a".into());
        assert!(!eligible(&incoming, &[&a], &prio, 10), "waits for its victims");
        incoming.nominated_node = None;
        incoming.never_preempts = true;
        assert!(!eligible(&incoming, &[&a], &prio, 10));
        // A terminating pod is no victim: it is already going.
        assert!(preempt(&pod("new", 500, 10), 10, None, &[&a], &prio, false).is_none());
    }
}
