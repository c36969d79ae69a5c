//! What NetworkPolicies mean for the pods of one node (pure, no IO): policies, pods and namespaces
//! in, per policed pod IP the traffic it accepts (ingress) and may send (egress) out.
//!
//! Kubernetes' semantics: a pod selected by no policy of a type allows all traffic of that type; a
//! pod selected by any allows only the union of what those policies' rules allow. A rule matches a
//! peer (any of its `from`/`to` entries, or anyone when none is given) and a port (any of its
//! `ports`, or any port when none is given). `podSelector` peers are pods of the policy's namespace,
//! `namespaceSelector` peers pods of the selected namespaces, both together pods matching both;
//! `ipBlock` is a CIDR less its `except`s. Named ports are resolved on the pod the traffic goes to:
//! the policed pod for ingress, each destination pod for egress.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{Selector, SelectorExt};

/// The label the API server gives every namespace (its name), which namespace selectors often use.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The transport protocols are the proxy's (same names, same parsing, absent is TCP).
pub use crate::proxy::model::Proto;

/// Ports of one protocol, `first..=last` (`0..=65535`: the whole protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ports {
    /// The protocol.
    pub proto: Proto,
    /// The first port.
    pub first: u16,
    /// The last port (inclusive).
    pub last: u16,
}

impl Ports {
    /// Whether these are all ports of the protocol.
    pub fn all(&self) -> bool {
        self.first == 0 && self.last == u16::MAX
    }
}

/// IPv4 addresses as sorted, disjoint, non-adjacent inclusive ranges (what an nft interval set holds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addrs(Vec<(u32, u32)>);

impl Addrs {
    /// The union of `ranges` (any order, may overlap; a range with `first > last` is empty).
    pub fn from_ranges(mut ranges: Vec<(u32, u32)>) -> Self {
        ranges.retain(|(a, b)| a <= b);
        ranges.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Addrs(out)
    }

    /// The ranges, first to last.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.0
    }

    /// Whether `ip` is one of the addresses.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        self.0.iter().any(|(a, b)| *a <= ip && ip <= *b)
    }

    /// The addresses of `cidr` less those of `except` (unparsable CIDRs count as no address).
    pub fn block(cidr: &str, except: &[String]) -> Self {
        let Some(block) = cidr_range(cidr) else { return Addrs::default() };
        let mut left = vec![block];
        for hole in except.iter().filter_map(|e| cidr_range(e)) {
            left = left
                .into_iter()
                .flat_map(|(a, b)| {
                    let mut parts = Vec::with_capacity(2);
                    if hole.0 > a {
                        parts.push((a, b.min(hole.0 - 1)));
                    }
                    if hole.1 < b {
                        parts.push((a.max(hole.1 + 1), b));
                    }
                    if hole.1 < a || hole.0 > b {
                        parts = vec![(a, b)];
                    }
                    parts
                })
                .collect();
        }
        Addrs::from_ranges(left)
    }
}

/// The first and last address of an IPv4 CIDR (IPv6 and garbage: `None`).
fn cidr_range(cidr: &str) -> Option<(u32, u32)> {
    let net: ipnet::Ipv4Net = cidr.trim().parse().ok()?;
    Some((u32::from(net.network()), u32::from(net.broadcast())))
}

/// One allow rule of a policed pod: traffic from (ingress) or to (egress) `peers` on `ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Who; `None`: anyone.
    pub peers: Option<Addrs>,
    /// Which destination ports; `None`: all ports of all protocols.
    pub ports: Option<Vec<Ports>>,
}

/// What one policed pod allows; `None` for a direction no policy selects it for (all allowed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRules {
    /// Traffic it accepts (an empty list: none).
    pub ingress: Option<Vec<Rule>>,
    /// Traffic it may send (an empty list: none).
    pub egress: Option<Vec<Rule>>,
}

/// A pod as policies see it.
/// The labels of a pod that has none.
static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

struct PodView<'a> {
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    ip: Ipv4Addr,
    node: Option<&'a str>,
    pod: &'a Pod,
}

/// The cluster as policies see it: pods with an address and namespaces' labels.
struct World<'a> {
    pods: Vec<PodView<'a>>,
    namespaces: HashMap<&'a str, BTreeMap<String, String>>,
}

impl World<'_> {
    /// A namespace's labels (with the name label the API server sets, also for one not seen yet).
    fn namespace_labels(&self, name: &str) -> BTreeMap<String, String> {
        let mut labels = self.namespaces.get(name).cloned().unwrap_or_default();
        labels.entry(NAMESPACE_NAME_LABEL.to_string()).or_insert_with(|| name.to_string());
        labels
    }
}

/// A label selector; one that does not parse selects nothing (the API server validates them).
fn selector(s: &LabelSelector) -> Option<Selector> {
    Selector::try_from(s.clone()).ok()
}

/// The pod's IPv4 address, unless it has none, shares the node's network or has ended.
fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

/// The pods of one node that policies select, with what they allow. Pods not in the result allow
/// all traffic.
pub fn desired(
    policies: &[&NetworkPolicy],
    pods: &[&Pod],
    namespaces: &[&Namespace],
    node: &str,
) -> BTreeMap<Ipv4Addr, PodRules> {
    if policies.is_empty() {
        // Nothing is policed: every pod is open (and nothing needs a look at the pods).
        return BTreeMap::new();
    }
    let world = World {
        pods: pods
            .iter()
            .filter_map(|pod| {
                Some(PodView {
                    namespace: pod.metadata.namespace.as_deref()?,
                    labels: pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
                    ip: pod_ip(pod)?,
                    node: pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
                    pod,
                })
            })
            .collect(),
        namespaces: namespaces
            .iter()
            .filter_map(|ns| Some((ns.metadata.name.as_deref()?, ns.metadata.labels.clone().unwrap_or_default())))
            .collect(),
    };
    let mut out: BTreeMap<Ipv4Addr, PodRules> = BTreeMap::new();
    for policy in policies {
        let (Some(ns), Some(spec)) = (policy.metadata.namespace.as_deref(), policy.spec.as_ref()) else { continue };
        let Some(targets) = selector(&spec.pod_selector.clone().unwrap_or_default()) else { continue };
        let egress_rules = spec.egress.as_deref().unwrap_or_default();
        let (ingress, egress) = match &spec.policy_types {
            Some(types) => (types.iter().any(|t| t == "Ingress"), types.iter().any(|t| t == "Egress")),
            // The API server's default: Ingress, and Egress when the policy has egress rules.
            None => (true, !egress_rules.is_empty()),
        };
        for target in world.pods.iter().filter(|p| p.namespace == ns && p.node == Some(node)) {
            if !targets.matches(target.labels) {
                continue;
            }
            let rules = out.entry(target.ip).or_default();
            if ingress {
                let list = rules.ingress.get_or_insert_with(Vec::new);
                for rule in spec.ingress.as_deref().unwrap_or_default() {
                    let peers = peers(&world, ns, rule.from.as_deref());
                    let ports = rule.ports.as_deref().filter(|p| !p.is_empty()).map(|ports| {
                        ports
                            .iter()
                            .filter_map(|p| port_range(p, |name, proto| named_port(target.pod, name, proto)))
                            .collect()
                    });
                    list.push(Rule { peers, ports });
                }
            }
            if egress {
                let list = rules.egress.get_or_insert_with(Vec::new);
                for rule in egress_rules {
                    let peers = peers(&world, ns, rule.to.as_deref());
                    list.extend(egress_rule(&world, peers, rule.ports.as_deref()));
                }
            }
        }
    }
    out
}

/// The peers of a rule: `None` (anyone) when it names none, else the union of their addresses.
fn peers(world: &World<'_>, policy_ns: &str, list: Option<&[NetworkPolicyPeer]>) -> Option<Addrs> {
    let list = list.filter(|l| !l.is_empty())?;
    let mut ranges = Vec::new();
    for peer in list {
        if let Some(block) = &peer.ip_block {
            ranges.extend_from_slice(Addrs::block(&block.cidr, block.except.as_deref().unwrap_or_default()).ranges());
            continue;
        }
        let pods = peer.pod_selector.as_ref().map(selector);
        let namespaces = peer.namespace_selector.as_ref().map(selector);
        for pod in &world.pods {
            let in_namespace = match &namespaces {
                None => pod.namespace == policy_ns,
                Some(None) => false,
                Some(Some(sel)) => sel.matches(&world.namespace_labels(pod.namespace)),
            };
            let selected = match &pods {
                None => true,
                Some(None) => false,
                Some(Some(sel)) => sel.matches(pod.labels),
            };
            if in_namespace && selected {
                let ip = u32::from(pod.ip);
                ranges.push((ip, ip));
            }
        }
    }
    Some(Addrs::from_ranges(ranges))
}

/// The ports of a policy port; `named` resolves a port name (for a protocol) to a number. `None`
/// when it matches nothing (an unknown protocol or name, `endPort` before `port`).
fn port_range(port: &NetworkPolicyPort, named: impl Fn(&str, Proto) -> Option<u16>) -> Option<Ports> {
    let proto = Proto::parse(port.protocol.as_deref())?;
    match &port.port {
        None => Some(Ports { proto, first: 0, last: u16::MAX }),
        Some(IntOrString::Int(n)) => {
            let first = u16::try_from(*n).ok()?;
            let last = match port.end_port {
                Some(end) => u16::try_from(end).ok().filter(|end| *end >= first)?,
                None => first,
            };
            Some(Ports { proto, first, last })
        }
        Some(IntOrString::String(name)) => {
            let n = named(name, proto)?;
            Some(Ports { proto, first: n, last: n })
        }
    }
}

/// The number of a pod's container port by name and protocol.
fn named_port(pod: &Pod, name: &str, proto: Proto) -> Option<u16> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name) && Proto::parse(p.protocol.as_deref()) == Some(proto))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// An egress rule as allow rules: numeric ports as they are, each named port resolved on every
/// destination pod among `peers` that has it (grouped by the number it resolves to).
fn egress_rule(world: &World<'_>, peers: Option<Addrs>, ports: Option<&[NetworkPolicyPort]>) -> Vec<Rule> {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else { return vec![Rule { peers, ports: None }] };
    let numeric: Vec<Ports> = ports
        .iter()
        .filter(|p| !matches!(p.port, Some(IntOrString::String(_))))
        .filter_map(|p| port_range(p, |_, _| None))
        .collect();
    let mut out = Vec::new();
    if !numeric.is_empty() {
        out.push(Rule { peers: peers.clone(), ports: Some(numeric) });
    }
    let mut by_number: BTreeMap<Ports, Vec<(u32, u32)>> = BTreeMap::new();
    for port in ports.iter().filter(|p| matches!(p.port, Some(IntOrString::String(_)))) {
        for pod in world.pods.iter().filter(|p| peers.as_ref().is_none_or(|a| a.contains(p.ip))) {
            if let Some(resolved) = port_range(port, |name, proto| named_port(pod.pod, name, proto)) {
                let ip = u32::from(pod.ip);
                by_number.entry(resolved).or_default().push((ip, ip));
            }
        }
    }
    for (ports, ips) in by_number {
        out.push(Rule { peers: Some(Addrs::from_ranges(ips)), ports: Some(vec![ports]) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, ip: &str, node: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"}
            ]}]},
            "status": {"phase": "Running", "podIP": ip}
        }))
        .unwrap_or_default()
    }

    fn ns(name: &str, labels: serde_json::Value) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap_or_default()
    }

    fn policy(ns: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": "p"}, "spec": spec})).unwrap_or_default()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    fn addrs(ips: &[&str]) -> Addrs {
        Addrs::from_ranges(ips.iter().map(|s| (u32::from(ip(s)), u32::from(ip(s)))).collect())
    }

    fn tcp(first: u16, last: u16) -> Ports {
        Ports { proto: Proto::Tcp, first, last }
    }

    /// web (a, app=web) and client (a, role=client) on n1, other (a, role=other) on n2, far (b,
    /// role=client) on n2.
    fn world() -> (Vec<Pod>, Vec<Namespace>) {
        (
            vec![
                pod("a", "web", "10.0.0.2", "n1", json!({"app": "web"})),
                pod("a", "client", "10.0.0.3", "n1", json!({"role": "client"})),
                pod("a", "other", "10.0.1.4", "n2", json!({"role": "other"})),
                pod("b", "far", "10.0.1.5", "n2", json!({"role": "client"})),
            ],
            vec![ns("a", json!({"team": "x"})), ns("b", json!({"team": "y"}))],
        )
    }

    fn run(policies: &[NetworkPolicy]) -> BTreeMap<Ipv4Addr, PodRules> {
        let (pods, namespaces) = world();
        let policies: Vec<&NetworkPolicy> = policies.iter().collect();
        let pods: Vec<&Pod> = pods.iter().collect();
        let namespaces: Vec<&Namespace> = namespaces.iter().collect();
        desired(&policies, &pods, &namespaces, "n1")
    }

    #[test]
    fn no_policy_allows_all_and_an_empty_ingress_list_denies_all() {
        assert!(run(&[]).is_empty(), "no pod is policed");
        let out = run(&[policy("a", json!({"podSelector": {}, "policyTypes": ["Ingress"]}))]);
        // Both local pods of namespace a are policed, with no rule: nothing gets in.
        assert_eq!(out.len(), 2);
        assert_eq!(out[&ip("10.0.0.2")].ingress, Some(vec![]));
        assert_eq!(out[&ip("10.0.0.2")].egress, None, "egress stays open");
        // A policy of another namespace polices none of them.
        assert!(run(&[policy("b", json!({"podSelector": {}}))]).is_empty());
    }

    #[test]
    fn peers_by_pod_and_namespace_selector_and_both() {
        let by_pod = run(&[policy(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}),
        )]);
        assert_eq!(by_pod.len(), 1, "only web is selected");
        let rule = &by_pod[&ip("10.0.0.2")].ingress.as_ref().map(|r| r[0].clone());
        // Pods of the policy's own namespace only: far (in b) is not a peer.
        assert_eq!(rule.as_ref().and_then(|r| r.peers.clone()), Some(addrs(&["10.0.0.3"])));
        assert_eq!(rule.as_ref().and_then(|r| r.ports.clone()), None);

        let by_ns = run(&[policy(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}]}]}),
        )]);
        let peers = by_ns[&ip("10.0.0.2")].ingress.as_ref().and_then(|r| r[0].peers.clone());
        assert_eq!(peers, Some(addrs(&["10.0.1.5"])));

        // Both in one peer: AND (clients in namespaces of team x or y).
        let and = run(&[policy(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{
                "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["x", "y"]}]},
                "podSelector": {"matchLabels": {"role": "client"}}}]}]}),
        )]);
        let peers = and[&ip("10.0.0.2")].ingress.as_ref().and_then(|r| r[0].peers.clone());
        assert_eq!(peers, Some(addrs(&["10.0.0.3", "10.0.1.5"])));

        // Two peers: OR; the name label every namespace carries works without a Namespace object.
        let or = run(&[policy(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "b"}}},
                {"podSelector": {"matchLabels": {"role": "other"}}}]}]}),
        )]);
        let peers = or[&ip("10.0.0.2")].ingress.as_ref().and_then(|r| r[0].peers.clone());
        assert_eq!(peers, Some(addrs(&["10.0.1.4", "10.0.1.5"])));
    }

    #[test]
    fn policies_and_rules_add_up() {
        let out = run(&[
            policy("a", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})),
            policy(
                "a",
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": 443}]}]}),
            ),
        ]);
        let web = out[&ip("10.0.0.2")].ingress.clone().unwrap_or_default();
        assert_eq!(web.len(), 2, "the union of both policies' rules");
        assert_eq!(web[1].ports, Some(vec![tcp(443, 443)]));
        assert_eq!(out[&ip("10.0.0.3")].ingress.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn ports_numeric_named_ranges_and_protocols() {
        let out = run(&[policy(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [
                {"port": 80},
                {"port": "http"},
                {"port": "dns", "protocol": "UDP"},
                {"port": "dns"},
                {"port": "nope"},
                {"port": 9000, "endPort": 9010, "protocol": "SCTP"},
                {"protocol": "UDP"}
            ]}]}),
        )]);
        let ports = out[&ip("10.0.0.2")].ingress.as_ref().and_then(|r| r[0].ports.clone());
        assert_eq!(
            ports,
            Some(vec![
                tcp(80, 80),
                tcp(8080, 8080),
                Ports { proto: Proto::Udp, first: 53, last: 53 },
                // `dns` over TCP and `nope` name no port of the pod: they match nothing.
                Ports { proto: Proto::Sctp, first: 9000, last: 9010 },
                Ports { proto: Proto::Udp, first: 0, last: u16::MAX },
            ])
        );
        // A rule whose only port is a name the pod lacks allows nothing (not everything).
        let none = run(&[policy("a", json!({"podSelector": {}, "ingress": [{"ports": [{"port": "nope"}]}]}))]);
        assert_eq!(none[&ip("10.0.0.2")].ingress.as_ref().and_then(|r| r[0].ports.clone()), Some(vec![]));
    }

    #[test]
    fn ip_blocks_with_excepts() {
        let a = Addrs::block("10.0.0.0/16", &["10.0.1.0/24".into(), "10.0.5.0/24".into(), "192.168.0.0/16".into()]);
        let r = |a: &str, b: &str| (u32::from(ip(a)), u32::from(ip(b)));
        assert_eq!(
            a.ranges(),
            &[r("10.0.0.0", "10.0.0.255"), r("10.0.2.0", "10.0.4.255"), r("10.0.6.0", "10.0.255.255")]
        );
        assert!(a.contains(ip("10.0.0.3")) && !a.contains(ip("10.0.1.4")));
        assert_eq!(Addrs::block("10.0.0.0/24", &["10.0.0.0/16".into()]).ranges(), &[]);
        assert_eq!(Addrs::block("0.0.0.0/0", &[]).ranges(), &[(0, u32::MAX)]);
        assert_eq!(Addrs::block("fd00::/8", &[]).ranges(), &[], "IPv6 blocks match no IPv4 address");
        // Overlapping and adjacent ranges merge.
        assert_eq!(Addrs::from_ranges(vec![(5, 9), (1, 3), (4, 4), (20, 30), (25, 26)]).ranges(), &[(1, 9), (20, 30)]);
        let out = run(&[policy(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [
                {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}},
                {"podSelector": {"matchLabels": {"role": "other"}}}]}]}),
        )]);
        let peers = out[&ip("10.0.0.2")].ingress.as_ref().and_then(|r| r[0].peers.clone()).unwrap_or_default();
        assert!(peers.contains(ip("10.0.0.3")) && peers.contains(ip("10.0.1.4")) && !peers.contains(ip("10.0.1.5")));
    }

    #[test]
    fn egress_with_default_types_and_named_ports_on_destinations() {
        let out = run(&[policy(
            "a",
            json!({"podSelector": {"matchLabels": {"role": "client"}}, "egress": [{
                "to": [{"namespaceSelector": {}}],
                "ports": [{"port": "http"}, {"port": 53, "protocol": "UDP"}]}]}),
        )]);
        let client = &out[&ip("10.0.0.3")];
        assert_eq!(client.ingress, Some(vec![]), "policyTypes defaults to Ingress too");
        let egress = client.egress.clone().unwrap_or_default();
        assert_eq!(egress.len(), 2);
        assert_eq!(egress[0].ports, Some(vec![Ports { proto: Proto::Udp, first: 53, last: 53 }]));
        assert_eq!(egress[1].ports, Some(vec![tcp(8080, 8080)]));
        assert_eq!(egress[1].peers, Some(addrs(&["10.0.0.2", "10.0.0.3", "10.0.1.4", "10.0.1.5"])));
        // Egress only: ingress stays open.
        let out = run(&[policy("a", json!({"podSelector": {}, "policyTypes": ["Egress"]}))]);
        assert_eq!(out[&ip("10.0.0.2")], PodRules { ingress: None, egress: Some(vec![]) });
    }

    #[test]
    fn host_network_ended_and_addressless_pods_are_neither_policed_nor_peers() {
        let mut pods = world().0;
        if let Some(spec) = pods[1].spec.as_mut() {
            spec.host_network = Some(true);
        }
        if let Some(status) = pods[2].status.as_mut() {
            status.phase = Some("Succeeded".into());
        }
        if let Some(status) = pods[3].status.as_mut() {
            status.pod_ip = None;
        }
        let p = policy("a", json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}));
        let out = desired(&[&p], &pods.iter().collect::<Vec<_>>(), &[], "n1");
        assert_eq!(out.keys().collect::<Vec<_>>(), vec![&ip("10.0.0.2")]);
        assert_eq!(out[&ip("10.0.0.2")].ingress.as_ref().and_then(|r| r[0].peers.clone()), Some(addrs(&["10.0.0.2"])));
    }
}
