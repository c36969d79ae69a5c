//! NetworkPolicy rules as text for `nft -f -` (pure, no IO).
//!
//! The agent's own table `ip skiff-np-<node>` (the proxy's table is replaced as a whole on its
//! resyncs; a table of its own keeps policy and proxy independent): one base chain on the
//! `forward` hook (priority filter) that accepts replies (`ct state established,related`), then
//! looks the source up in the verdict map `egress-pods` and the destination in `ingress-pods`. A
//! policed pod's address leads to its chain (`pod-out-<ip>` / `pod-in-<ip>`), one nft rule per
//! allowed (peers, port range) with the peers in a named interval set; what no rule allows is
//! dropped, except traffic between a pod and itself (a pod cannot block itself). Traffic from the node itself (kubelet probes, the host) takes the output hook, never
//! `forward`: it is never policed. Bridged pod-to-pod traffic reaches `forward` through
//! br_netfilter.
//!
//! One policed pod is one [`Plan`]; [`update`] turns the difference between two plans of a pod
//! into commands, so a change costs what it touches.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use super::model::{Addrs, PodRules, Rule};

/// The verdict maps of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Map {
    /// Policed pods' addresses as destinations.
    Ingress,
    /// Policed pods' addresses as sources.
    Egress,
}

impl Map {
    fn name(self) -> &'static str {
        match self {
            Map::Ingress => "ingress-pods",
            Map::Egress => "egress-pods",
        }
    }
}

/// Everything one policed pod puts into the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Chain name -> its rules in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Set name -> its elements.
    pub sets: BTreeMap<String, Vec<String>>,
    /// (map, pod address) -> verdict.
    pub elements: BTreeMap<(Map, String), String>,
}

/// The table name of a node: `skiff-np-` and the node name made a safe identifier.
pub fn table_name(node_name: &str) -> String {
    let proxy = crate::proxy::nft::table_name(node_name);
    format!("skiff-np-{}", proxy.strip_prefix("skiff-").unwrap_or(&proxy))
}

/// The plan of one policed pod.
pub fn plan(ip: Ipv4Addr, rules: &PodRules) -> Plan {
    let mut plan = Plan::default();
    if let Some(ingress) = &rules.ingress {
        direction(&mut plan, ip, ingress, Map::Ingress);
    }
    if let Some(egress) = &rules.egress {
        direction(&mut plan, ip, egress, Map::Egress);
    }
    plan
}

fn direction(plan: &mut Plan, ip: Ipv4Addr, rules: &[Rule], map: Map) {
    // Ingress: the peer is the source and an allowed packet is accepted; egress: the peer is the
    // destination and an allowed packet goes on to the ingress check (`return`).
    let (chain, peer, allow) = match map {
        Map::Ingress => (format!("pod-in-{ip}"), "saddr", "accept"),
        Map::Egress => (format!("pod-out-{ip}"), "daddr", "return"),
    };
    // A pod cannot block traffic to itself (also through a Service it backs: hairpin).
    let mut lines = vec![format!("ip {peer} {ip} {allow}")];
    for (i, rule) in rules.iter().enumerate() {
        let who = match &rule.peers {
            None => String::new(),
            Some(addrs) => {
                let set = format!("{chain}-{i}");
                plan.sets.insert(set.clone(), elements(addrs));
                format!("ip {peer} @{set} ")
            }
        };
        match &rule.ports {
            None => lines.push(format!("{who}{allow}")),
            Some(ports) => {
                for p in ports {
                    let proto = p.proto.nft();
                    if p.all() {
                        lines.push(format!("{who}meta l4proto {proto} {allow}"));
                    } else if p.first == p.last {
                        lines.push(format!("{who}meta l4proto {proto} th dport {} {allow}", p.first));
                    } else {
                        lines.push(format!("{who}meta l4proto {proto} th dport {}-{} {allow}", p.first, p.last));
                    }
                }
            }
        }
    }
    lines.push("drop".into());
    plan.elements.insert((map, ip.to_string()), format!("jump {chain}"));
    plan.chains.insert(chain, lines);
}

/// An address set's elements: single addresses and `first-last` ranges.
fn elements(addrs: &Addrs) -> Vec<String> {
    addrs
        .ranges()
        .iter()
        .map(|(a, b)| {
            if a == b {
                Ipv4Addr::from(*a).to_string()
            } else {
                format!("{}-{}", Ipv4Addr::from(*a), Ipv4Addr::from(*b))
            }
        })
        .collect()
}

/// The table's fixed part: the two maps and the base chain.
fn base(table: &str, comment: &str, out: &mut String) {
    let _ = write!(
        out,
        "table ip {table} {{\n\
         \tcomment \"{comment}\"\n\
         \tmap ingress-pods {{ type ipv4_addr : verdict; }}\n\
         \tmap egress-pods {{ type ipv4_addr : verdict; }}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tct state established,related accept\n\
         \t\tip saddr vmap @egress-pods\n\
         \t\tip daddr vmap @ingress-pods\n\
         \t}}\n\
         }}\n",
        comment = comment.replace('"', "'"),
    );
}

/// The whole table from scratch in one transaction (an old table of the same name, e.g. a
/// previous run's, is replaced atomically).
pub fn full<'a>(table: &str, comment: &str, plans: impl IntoIterator<Item = &'a Plan>) -> String {
    let mut out = format!("table ip {table}\ndelete table ip {table}\n");
    base(table, comment, &mut out);
    let empty = Plan::default();
    for plan in plans {
        out.push_str(&update(table, &empty, plan));
    }
    out
}

/// The commands turning `old` (what the table holds for one pod) into `new`; empty when nothing
/// changed.
pub fn update(t: &str, old: &Plan, new: &Plan) -> String {
    let mut out = String::new();
    // 1. Map elements that go away or change.
    for ((map, key), verdict) in &old.elements {
        if new.elements.get(&(*map, key.clone())) != Some(verdict) {
            let _ = writeln!(out, "delete element ip {t} {} {{ {key} }}", map.name());
        }
    }
    // 2. New chains and sets exist before any rule refers to them; changed sets get their new
    // elements.
    for name in new.chains.keys().filter(|c| !old.chains.contains_key(*c)) {
        let _ = writeln!(out, "add chain ip {t} {name}");
    }
    for (name, elems) in &new.sets {
        match old.sets.get(name) {
            Some(before) if before == elems => continue,
            Some(_) => {
                let _ = writeln!(out, "flush set ip {t} {name}");
            }
            None => {
                let _ = writeln!(out, "add set ip {t} {name} {{ type ipv4_addr; flags interval; }}");
            }
        }
        if !elems.is_empty() {
            let _ = writeln!(out, "add element ip {t} {name} {{ {} }}", elems.join(", "));
        }
    }
    // 3.-5. Chains rewritten (as the proxy's), then the sets nothing refers to any more.
    crate::proxy::nft::rewrite_chains(&mut out, t, &old.chains, &new.chains);
    for name in old.sets.keys().filter(|s| !new.sets.contains_key(*s)) {
        let _ = writeln!(out, "delete set ip {t} {name}");
    }
    // 6. New or changed map elements.
    for ((map, key), verdict) in &new.elements {
        if old.elements.get(&(*map, key.clone())) != Some(verdict) {
            let _ = writeln!(out, "add element ip {t} {} {{ {key} : {verdict} }}", map.name());
        }
    }
    out
}

/// Removes the table (the agent stops).
pub fn delete(table: &str) -> String {
    format!("table ip {table}\ndelete table ip {table}\n")
}

#[cfg(test)]
mod tests {
    use super::super::model::{Ports, Proto};
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    fn one(s: &str) -> (u32, u32) {
        (u32::from(ip(s)), u32::from(ip(s)))
    }

    fn web() -> PodRules {
        PodRules {
            ingress: Some(vec![
                Rule {
                    peers: Some(Addrs::from_ranges(vec![
                        one("10.0.0.3"),
                        (u32::from(ip("10.1.0.0")), u32::from(ip("10.1.0.255"))),
                    ])),
                    ports: Some(vec![
                        Ports { proto: Proto::Tcp, first: 8080, last: 8080 },
                        Ports { proto: Proto::Udp, first: 9000, last: 9010 },
                    ]),
                },
                Rule { peers: None, ports: Some(vec![Ports { proto: Proto::Sctp, first: 0, last: u16::MAX }]) },
            ]),
            egress: None,
        }
    }

    #[test]
    fn a_pod_plan_is_its_chain_sets_and_map_element() {
        let plan = plan(ip("10.0.0.2"), &web());
        assert_eq!(
            plan.chains["pod-in-10.0.0.2"],
            vec![
                "ip saddr 10.0.0.2 accept",
                "ip saddr @pod-in-10.0.0.2-0 meta l4proto tcp th dport 8080 accept",
                "ip saddr @pod-in-10.0.0.2-0 meta l4proto udp th dport 9000-9010 accept",
                "meta l4proto sctp accept",
                "drop",
            ]
        );
        assert_eq!(plan.sets["pod-in-10.0.0.2-0"], vec!["10.0.0.3", "10.1.0.0-10.1.0.255"]);
        assert_eq!(plan.elements[&(Map::Ingress, "10.0.0.2".into())], "jump pod-in-10.0.0.2");
        assert!(!plan.elements.contains_key(&(Map::Egress, "10.0.0.2".into())));

        // Deny all: a chain that drops; egress rules return to the ingress check.
        let deny = super::plan(
            ip("10.0.0.2"),
            &PodRules { ingress: Some(vec![]), egress: Some(vec![Rule { peers: None, ports: None }]) },
        );
        assert_eq!(deny.chains["pod-in-10.0.0.2"], vec!["ip saddr 10.0.0.2 accept", "drop"]);
        assert_eq!(deny.chains["pod-out-10.0.0.2"], vec!["ip daddr 10.0.0.2 return", "return", "drop"]);
        assert_eq!(deny.elements[&(Map::Egress, "10.0.0.2".into())], "jump pod-out-10.0.0.2");
    }

    #[test]
    fn full_table_and_updates_touch_what_changed() {
        let t = "skiff-np-n1";
        let a = plan(ip("10.0.0.2"), &web());
        let script = full(t, "skiff \"np\"", [&a]);
        assert!(script.starts_with("table ip skiff-np-n1\ndelete table ip skiff-np-n1\n"), "{script}");
        assert!(script.contains("comment \"skiff 'np'\""));
        assert!(script.contains("type filter hook forward priority filter; policy accept;"));
        assert!(script.contains(
            "ct state established,related accept\n\t\tip saddr vmap @egress-pods\n\t\tip daddr vmap @ingress-pods"
        ));
        assert!(script.contains("add set ip skiff-np-n1 pod-in-10.0.0.2-0 { type ipv4_addr; flags interval; }\n"));
        assert!(script.contains("add element ip skiff-np-n1 pod-in-10.0.0.2-0 { 10.0.0.3, 10.1.0.0-10.1.0.255 }\n"));
        assert!(script.ends_with("add element ip skiff-np-n1 ingress-pods { 10.0.0.2 : jump pod-in-10.0.0.2 }\n"));

        assert_eq!(update(t, &a, &a), "", "nothing changed: nothing to do");

        // Only the set's members change: the set is refilled, the chain stays.
        let mut rules = web();
        if let Some(r) = rules.ingress.as_mut().and_then(|r| r.first_mut()) {
            r.peers = Some(Addrs::from_ranges(vec![one("10.0.0.4")]));
        }
        let b = plan(ip("10.0.0.2"), &rules);
        assert_eq!(
            update(t, &a, &b),
            "flush set ip skiff-np-n1 pod-in-10.0.0.2-0\nadd element ip skiff-np-n1 pod-in-10.0.0.2-0 { 10.0.0.4 }\n"
        );

        // The pod is no longer policed: element, rules, chain and set go, in that order.
        let gone = update(t, &a, &Plan::default());
        assert_eq!(
            gone,
            "delete element ip skiff-np-n1 ingress-pods { 10.0.0.2 }\n\
             flush chain ip skiff-np-n1 pod-in-10.0.0.2\n\
             delete chain ip skiff-np-n1 pod-in-10.0.0.2\n\
             delete set ip skiff-np-n1 pod-in-10.0.0.2-0\n"
        );
        assert_eq!(delete(t), "table ip skiff-np-n1\ndelete table ip skiff-np-n1\n");
        assert_eq!(table_name("Node.Example"), "skiff-np-node_example");
    }
}
