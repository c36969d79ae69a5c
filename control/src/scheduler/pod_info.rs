//! [`PodInfo`]: what the scheduler reads of a pod, parsed once when the pod enters its queue or
//! cache (typed through k8s-openapi), so filters and scores over many nodes do no JSON work.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, PodAffinityTerm, PodSpec, Toleration, TopologySpreadConstraint};
use serde_json::Value;

use super::fit::{pod_requests, Resources};
use crate::api::object;
use crate::api::selector::{from_label_selector, LabelSelector, Labels};

/// A host port a container asks for: protocol, host IP (empty for all) and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The host IP, `""` or `0.0.0.0` for every address.
    pub ip: String,
    /// The port.
    pub port: i32,
}

impl HostPort {
    /// True when both cannot be bound at once on one node.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0";
        self.port == other.port
            && self.protocol == other.protocol
            && (wildcard(&self.ip) || wildcard(&other.ip) || self.ip == other.ip)
    }
}

/// A pod (anti-)affinity term with its selector parsed.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    /// The pods it is about.
    pub selector: LabelSelector,
    /// The namespaces those pods may be in (the pod's own when the term names none).
    pub namespaces: Vec<String>,
    /// The node label that defines "together".
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse(term: &PodAffinityTerm, own_namespace: &str) -> Self {
        let selector = term
            .label_selector
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| from_label_selector(&v).ok())
            .unwrap_or_else(LabelSelector::nothing);
        let mut namespaces = term.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() {
            namespaces.push(own_namespace.to_string());
        }
        Self { selector, namespaces, topology_key: term.topology_key.clone() }
    }

    /// True when `pod` is one of the pods the term is about.
    pub fn matches(&self, pod: &PodInfo) -> bool {
        self.namespaces.contains(&pod.namespace) && pod.labels.matched_by(&self.selector)
    }
}

/// A topology spread constraint with its selector parsed.
#[derive(Clone, Debug)]
pub struct Spread {
    /// The largest allowed difference between topology domains.
    pub max_skew: i64,
    /// The node label whose values are the domains.
    pub topology_key: String,
    /// `DoNotSchedule` (a filter) or `ScheduleAnyway` (a score).
    pub hard: bool,
    /// The pods counted.
    pub selector: LabelSelector,
}

impl Spread {
    fn parse(c: &TopologySpreadConstraint) -> Self {
        let selector = c
            .label_selector
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| from_label_selector(&v).ok())
            .unwrap_or_else(LabelSelector::nothing);
        Self {
            max_skew: i64::from(c.max_skew.max(1)),
            topology_key: c.topology_key.clone(),
            hard: c.when_unsatisfiable != "ScheduleAnyway",
            selector,
        }
    }
}

/// kube-scheduler's default cpu for scoring a pod that requests none.
pub const DEFAULT_MILLI_CPU: i128 = 100;
/// kube-scheduler's default memory for scoring a pod that requests none.
pub const DEFAULT_MEMORY: i128 = 200 << 20;

/// `requests` with zero cpu or memory replaced by the scoring defaults.
pub fn nonzero(requests: Resources) -> Resources {
    Resources {
        cpu_milli: if requests.cpu_milli == 0 { DEFAULT_MILLI_CPU } else { requests.cpu_milli },
        memory: if requests.memory == 0 { DEFAULT_MEMORY } else { requests.memory },
        pods: requests.pods,
    }
}

/// The tolerations of the last pod parsed, shared by the next ones that carry the same.
type LastTolerations = parking_lot::Mutex<Option<Arc<[Toleration]>>>;

/// `tolerations` as an `Arc`, the same one as the last pod's when they are equal: a scheduler
/// holding 100,000 bound pods keeps their (nearly always identical) tolerations once.
fn shared_tolerations(tolerations: Vec<Toleration>) -> Arc<[Toleration]> {
    static LAST: LastTolerations = parking_lot::Mutex::new(None);
    share_with(&LAST, tolerations)
}

fn share_with(last: &LastTolerations, tolerations: Vec<Toleration>) -> Arc<[Toleration]> {
    if tolerations.is_empty() {
        return Arc::default();
    }
    let mut last = last.lock();
    match last.as_ref() {
        Some(shared) if **shared == *tolerations => Arc::clone(shared),
        _ => Arc::clone(last.insert(tolerations.into())),
    }
}

/// See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: String,
    /// `metadata.uid`.
    pub uid: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's labels.
    pub labels: Labels,
    /// `metadata.creationTimestamp` (RFC 3339 sorts as text).
    pub created: String,
    /// cpu, memory and one pod.
    pub requests: Resources,
    /// The requests as scores see them: a pod asking for nothing counts as 100m cpu and
    /// 200 MiB (kube-scheduler's non-zero defaults), so empty pods still spread.
    pub nonzero: Resources,
    /// The node it is bound to, if any.
    pub node_name: Option<String>,
    /// `spec.priorityClassName`.
    pub priority_class: Option<String>,
    /// `spec.priority` as admitted.
    pub priority: Option<i32>,
    /// `spec.runtimeClassName`.
    pub runtime_class: Option<String>,
    /// `spec.tolerations`, shared with the pod parsed before it when they are the same (most
    /// pods carry just the two tolerations admission adds).
    pub tolerations: Arc<[Toleration]>,
    /// `spec.nodeSelector`.
    pub node_selector: Vec<(String, String)>,
    /// The required node affinity's terms (any may match); `None` when there is none.
    pub required_terms: Option<Vec<NodeSelectorTerm>>,
    /// The preferred node affinity's terms with their weights.
    pub preferred_terms: Vec<(i32, NodeSelectorTerm)>,
    /// Host ports of all containers.
    pub host_ports: Vec<HostPort>,
    /// Required pod affinity terms.
    pub affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub anti_affinity: Vec<AffinityTerm>,
    /// Topology spread constraints.
    pub spread: Vec<Spread>,
    /// The containers' images.
    pub images: Vec<String>,
    /// `Succeeded` or `Failed`: holds no resources.
    pub finished: bool,
    /// `spec.schedulerName` (default `default-scheduler`).
    pub scheduler_name: String,
    /// `spec.preemptionPolicy` is `Never`: the pod waits instead of evicting others.
    pub never_preempts: bool,
    /// Being deleted (`metadata.deletionTimestamp`): still holds its resources.
    pub terminating: bool,
    /// `status.nominatedNodeName`: where it preempted pods to fit.
    pub nominated_node: Option<String>,
    /// The PersistentVolumeClaims its volumes name (`persistentVolumeClaim.claimName`).
    pub claims: Vec<String>,
}

impl PodInfo {
    /// Parses what the scheduler needs from a pod object.
    pub fn of(pod: &Value) -> Arc<Self> {
        let namespace = object::namespace(pod).unwrap_or("default").to_string();
        let spec: PodSpec = pod
            .get("spec")
            .cloned()
            .and_then(|s| serde_json::from_value(s).map_err(|e| tracing::debug!(error = %e, "pod spec")).ok())
            .unwrap_or_default();
        let node_affinity = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref());
        let required_terms = node_affinity
            .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
            .map(|s| s.node_selector_terms.clone());
        let preferred_terms = node_affinity
            .and_then(|n| n.preferred_during_scheduling_ignored_during_execution.as_ref())
            .map(|p| p.iter().map(|t| (t.weight, t.preference.clone())).collect())
            .unwrap_or_default();
        let terms = |required: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            required.into_iter().flatten().map(|t| AffinityTerm::parse(t, &namespace)).collect()
        };
        let affinity = terms(
            spec.affinity
                .as_ref()
                .and_then(|a| a.pod_affinity.as_ref())
                .and_then(|p| p.required_during_scheduling_ignored_during_execution.as_ref()),
        );
        let anti_affinity = terms(
            spec.affinity
                .as_ref()
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|p| p.required_during_scheduling_ignored_during_execution.as_ref()),
        );
        let host_ports = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let port = p.host_port.filter(|h| *h > 0)?;
                Some(HostPort {
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    ip: p.host_ip.clone().unwrap_or_default(),
                    port,
                })
            })
            .collect();
        let phase = object::str_at(pod, &["status", "phase"]);
        Arc::new(Self {
            key: format!("{namespace}/{}", object::name(pod)),
            uid: object::str_at(pod, &["metadata", "uid"]).unwrap_or_default().to_string(),
            labels: Labels::of(pod),
            created: object::str_at(pod, &["metadata", "creationTimestamp"]).unwrap_or_default().to_string(),
            requests: pod_requests(pod),
            nonzero: nonzero(pod_requests(pod)),
            node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
            priority_class: spec.priority_class_name.clone().filter(|n| !n.is_empty()),
            priority: spec.priority,
            runtime_class: spec.runtime_class_name.clone().filter(|n| !n.is_empty()),
            tolerations: shared_tolerations(spec.tolerations.clone().unwrap_or_default()),
            node_selector: spec.node_selector.clone().unwrap_or_default().into_iter().collect(),
            required_terms,
            preferred_terms,
            host_ports,
            affinity,
            anti_affinity,
            spread: spec.topology_spread_constraints.iter().flatten().map(Spread::parse).collect(),
            images: spec.containers.iter().filter_map(|c| c.image.clone()).collect(),
            finished: matches!(phase, Some("Succeeded" | "Failed")),
            scheduler_name: spec.scheduler_name.clone().unwrap_or_else(|| "default-scheduler".into()),
            never_preempts: spec.preemption_policy.as_deref() == Some("Never"),
            terminating: object::deletion_timestamp(pod).is_some(),
            nominated_node: object::str_at(pod, &["status", "nominatedNodeName"])
                .filter(|n| !n.is_empty())
                .map(str::to_string),
            claims: spec
                .volumes
                .iter()
                .flatten()
                .filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()))
                .collect(),
            namespace,
        })
    }

    /// True when the pod needs nothing from other pods' placement (no pod affinity, anti-affinity
    /// or spreading), so the cluster-wide pre-computation can be skipped.
    pub fn is_simple(&self) -> bool {
        self.affinity.is_empty() && self.anti_affinity.is_empty() && self.spread.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_tolerations_are_held_once() {
        let toleration = |seconds: i64| Toleration {
            key: Some("node.kubernetes.io/unreachable".into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(seconds),
            value: None,
        };
        let last = LastTolerations::new(None);
        let a = share_with(&last, vec![toleration(30)]);
        let b = share_with(&last, vec![toleration(30)]);
        let c = share_with(&last, vec![toleration(60)]);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c[0].toleration_seconds, Some(60));
        assert!(share_with(&last, Vec::new()).is_empty());
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
                         "spec": {"containers": [], "tolerations": [{"operator": "Exists"}]}});
        assert_eq!(PodInfo::of(&pod).tolerations.len(), 1);
    }
}
