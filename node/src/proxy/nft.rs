//! The nftables rules of the proxy as text for `nft -f -` (pure, no IO), in kube-proxy's nftables
//! design:
//!
//! - one table of the agent's own (`ip skiff-<node>`), replaced atomically at start and deleted
//!   at stop, so several agents on one host never touch each other's rules;
//! - a verdict map `service-ips` (`daddr . proto . port : goto <chain>`) for ClusterIPs and
//!   load-balancer IPs and `service-nodeports` (`proto . port`) applied to traffic for a local
//!   address; both are looked up from the `nat` prerouting (pods, other hosts) and output (the node
//!   itself) hooks, so the cost of a packet does not grow with the number of services;
//! - per service port one chain DNATing new connections, endpoint k of n with `numgen random mod
//!   (n-k) 0` (uniform, as kube-proxy's iptables mode; with `sessionAffinity: ClientIP` through
//!   per-endpoint chains and sets remembering clients). NodePort and LoadBalancer elements go to
//!   the same chain (or to the `local-` chain of a `Local` policy). No anonymous sets: the kernel
//!   looks sets up by walking a list, which made a 10,000-service table take minutes to load;
//! - masquerading by a mark for traffic from outside the pod network and for hairpin traffic;
//! - `no-endpoint-*` maps consulted in filter hooks before DNAT: a port with no endpoint is
//!   rejected (TCP reset / ICMP port unreachable), so a client sees "connection refused" at once.
//!
//! A service is a [`Plan`] (its chains, sets and map elements); [`update`] turns the difference
//! between two plans of one service into one transaction, so a change costs what it touches.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::model::{Endpoint, PortRules};

/// The mark bit of connections to masquerade (kube-proxy's).
pub const MASQUERADE_MARK: &str = "0x4000";

/// The node-wide inputs of the rules.
#[derive(Clone, Debug)]
pub struct Table {
    /// The table's name (family `ip`).
    pub name: String,
    /// Its comment (who owns it).
    pub comment: String,
    /// This node's pod network: traffic from elsewhere to a ClusterIP is masqueraded, so replies
    /// come back through the node.
    pub pod_cidr: String,
}

/// The verdict maps of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Map {
    /// `ipv4_addr . inet_proto . inet_service : verdict` (ClusterIPs and load-balancer IPs).
    ServiceIps,
    /// `inet_proto . inet_service : verdict` for traffic to a local address.
    NodePorts,
    /// ClusterIP/LB ports with no endpoint: rejected (or dropped) before DNAT.
    NoEndpointServices,
    /// NodePorts with no endpoint.
    NoEndpointNodePorts,
}

impl Map {
    fn name(self) -> &'static str {
        match self {
            Map::ServiceIps => "service-ips",
            Map::NodePorts => "service-nodeports",
            Map::NoEndpointServices => "no-endpoint-services",
            Map::NoEndpointNodePorts => "no-endpoint-nodeports",
        }
    }
}

/// Everything one service puts into the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Chain name -> its rules in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Set name -> its definition.
    pub sets: BTreeMap<String, String>,
    /// (map, key) -> verdict.
    pub elements: BTreeMap<(Map, String), String>,
}

impl Plan {
    /// Whether the service puts nothing into the table.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty() && self.elements.is_empty()
    }
}

/// The plan of one service (all its ports).
pub fn plan(table: &Table, ports: &[PortRules]) -> Plan {
    let mut plan = Plan::default();
    for p in ports {
        plan_port(table, p, &mut plan);
    }
    plan
}

/// Where a kind of traffic to a port goes.
enum Target {
    /// Into this chain.
    Chain(String),
    /// Endpoints exist but none for this traffic (a `Local` policy with none on this node).
    Drop,
    /// No endpoint at all: refused.
    Reject,
}

impl Target {
    fn verdict(&self) -> String {
        match self {
            Target::Chain(c) => format!("goto {c}"),
            Target::Drop => "drop".into(),
            Target::Reject => "goto reject-chain".into(),
        }
    }
}

fn endpoint_suffix(e: &Endpoint) -> String {
    format!("{}/{}", e.ip, e.port)
}

fn plan_port(table: &Table, p: &PortRules, plan: &mut Plan) {
    let proto = p.protocol.nft();
    let id = &p.id;
    let affinity = |e: &Endpoint| p.affinity_seconds.map(|t| format!("aff{t}-{id}__{}", endpoint_suffix(e)));
    let ep_chain = |e: &Endpoint| format!("ep-{id}__{}", endpoint_suffix(e));
    // A chain spreading new connections over `eps`. Masqueraded: traffic from outside the pod
    // network (the node itself, NodePort and LoadBalancer clients; for a `Local` policy only the
    // node's own traffic, so external clients keep their address) and hairpin traffic (a client
    // that is one of the endpoints). Without session affinity the DNAT is one rule with a
    // `numgen` map: one chain per service port, whatever its number of endpoints.
    let spread = |chain: String, eps: &[Endpoint], local: bool, plan: &mut Plan| {
        let outside = if local {
            "fib saddr type local jump mark-for-masquerade".to_string()
        } else {
            format!("ip saddr != {} jump mark-for-masquerade", table.pod_cidr)
        };
        let ips: BTreeSet<String> = eps.iter().map(|e| e.ip.to_string()).collect();
        let mut rules = vec![outside];
        rules.extend(ips.iter().map(|ip| format!("ip saddr {ip} jump mark-for-masquerade")));
        // Endpoint k of n is taken with probability 1/(n-k) among those left (uniform overall),
        // as kube-proxy's iptables mode does: plain rules, no anonymous set (the kernel finds
        // sets by walking a list, which makes thousands of them slow).
        let n = eps.len();
        let pick = |k: usize, then: String| {
            if k + 1 < n {
                format!("numgen random mod {} 0 {then}", n - k)
            } else {
                then
            }
        };
        for (k, e) in eps.iter().enumerate() {
            let dnat = format!("meta l4proto {proto} dnat ip to {}:{}", e.ip, e.port);
            match affinity(e) {
                Some(set) => {
                    rules.insert(1 + ips.len() + k, format!("ip saddr @{set} goto {}", ep_chain(e)));
                    rules.push(pick(k, format!("goto {}", ep_chain(e))));
                    let timeout = p.affinity_seconds.unwrap_or_default();
                    let def = format!("{{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}");
                    plan.chains.insert(ep_chain(e), vec![format!("update @{set} {{ ip saddr }}"), dnat]);
                    plan.sets.insert(set, def);
                }
                None => rules.push(pick(k, dnat)),
            }
        }
        plan.chains.insert(chain, rules);
    };
    let cluster = if p.cluster_endpoints.is_empty() {
        Target::Reject
    } else {
        let chain = format!("svc-{id}");
        spread(chain.clone(), &p.cluster_endpoints, false, plan);
        Target::Chain(chain)
    };
    let local = if !(p.internal_local || p.external_local) {
        None
    } else if p.local_endpoints.is_empty() {
        Some(if p.cluster_endpoints.is_empty() { Target::Reject } else { Target::Drop })
    } else {
        let chain = format!("local-{id}");
        spread(chain.clone(), &p.local_endpoints, true, plan);
        Some(Target::Chain(chain))
    };
    let internal = match (&local, p.internal_local) {
        (Some(l), true) => l,
        _ => &cluster,
    };
    let external = match (&local, p.external_local) {
        (Some(l), true) => l,
        _ => &cluster,
    };
    let element = |plan: &mut Plan, target: &Target, ok: Map, none: Map, key: String| {
        let map = if matches!(target, Target::Chain(_)) { ok } else { none };
        plan.elements.insert((map, key), target.verdict());
    };
    element(
        plan,
        internal,
        Map::ServiceIps,
        Map::NoEndpointServices,
        format!("{} . {proto} . {}", p.cluster_ip, p.port),
    );
    for ip in &p.load_balancer_ips {
        element(plan, external, Map::ServiceIps, Map::NoEndpointServices, format!("{ip} . {proto} . {}", p.port));
    }
    if let Some(node_port) = p.node_port {
        element(plan, external, Map::NodePorts, Map::NoEndpointNodePorts, format!("{proto} . {node_port}"));
    }
}

/// The table's fixed part: maps, hooks, masquerading and the reject chain.
fn base(table: &Table, out: &mut String) {
    let t = &table.name;
    let _ = write!(
        out,
        "table ip {t} {{\n\
         \tcomment \"{comment}\"\n\
         \tmap service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict; }}\n\
         \tmap service-nodeports {{ type inet_proto . inet_service : verdict; }}\n\
         \tmap no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict; }}\n\
         \tmap no-endpoint-nodeports {{ type inet_proto . inet_service : verdict; }}\n\
         \tchain mark-for-masquerade {{ meta mark set meta mark or {MASQUERADE_MARK}; }}\n\
         \tchain masquerading {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tmeta mark & {MASQUERADE_MARK} == 0 return\n\
         \t\tmeta mark set meta mark xor {MASQUERADE_MARK}\n\
         \t\tmasquerade fully-random\n\
         \t}}\n\
         \tchain services {{\n\
         \t\tip daddr . meta l4proto . th dport vmap @service-ips\n\
         \t\tfib daddr type local meta l4proto . th dport vmap @service-nodeports\n\
         \t}}\n\
         \tchain nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept; jump services; }}\n\
         \tchain nat-output {{ type nat hook output priority -100; policy accept; jump services; }}\n\
         \tchain reject-chain {{ meta l4proto tcp reject with tcp reset; reject; }}\n\
         \tchain endpoints-check {{\n\
         \t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\
         \t\tfib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports\n\
         \t}}\n\
         \tchain filter-prerouting {{ type filter hook prerouting priority -110; policy accept; ct state new jump endpoints-check; }}\n\
         \tchain filter-output {{ type filter hook output priority -110; policy accept; ct state new jump endpoints-check; }}\n\
         }}\n",
        comment = table.comment.replace('"', "'"),
    );
}

/// The whole table from scratch in one transaction: the old table (if any) is replaced
/// atomically, so established connections (kept by conntrack) are not disturbed.
pub fn full<'a>(table: &Table, plans: impl IntoIterator<Item = &'a Plan>) -> String {
    let t = &table.name;
    let mut out = format!("table ip {t}\ndelete table ip {t}\n");
    base(table, &mut out);
    let empty = Plan::default();
    for plan in plans {
        out.push_str(&update(table, &empty, plan));
    }
    out
}

/// The commands turning `old` (what the table holds for one service) into `new`; empty when
/// nothing changed. Only the chains, sets and elements that differ are touched.
pub fn update(table: &Table, old: &Plan, new: &Plan) -> String {
    let t = &table.name;
    let mut out = String::new();
    // 1. Map elements that go away or change their verdict.
    for ((map, key), verdict) in &old.elements {
        if new.elements.get(&(*map, key.clone())) != Some(verdict) {
            let _ = writeln!(out, "delete element ip {t} {} {{ {key} }}", map.name());
        }
    }
    // 2. New chains and sets exist before any rule refers to them.
    for name in new.chains.keys().filter(|c| !old.chains.contains_key(*c)) {
        let _ = writeln!(out, "add chain ip {t} {name}");
    }
    for (name, def) in new.sets.iter().filter(|(s, _)| !old.sets.contains_key(*s)) {
        let _ = writeln!(out, "add set ip {t} {name} {def}");
    }
    // 3. Changed and removed chains lose their rules (and with them their references).
    let changed: BTreeSet<&String> =
        old.chains.iter().filter(|(c, rules)| new.chains.get(*c) != Some(rules)).map(|(c, _)| c).collect();
    for name in &changed {
        let _ = writeln!(out, "flush chain ip {t} {name}");
    }
    // 4. Rules of changed and new chains.
    for (name, rules) in &new.chains {
        if old.chains.get(name) != Some(rules) {
            for rule in rules {
                let _ = writeln!(out, "add rule ip {t} {name} {rule}");
            }
        }
    }
    // 5. Chains and sets nothing refers to any more.
    for name in changed.iter().filter(|c| !new.chains.contains_key(**c)) {
        let _ = writeln!(out, "delete chain ip {t} {name}");
    }
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
pub fn delete(table: &Table) -> String {
    format!("table ip {0}\ndelete table ip {0}\n", table.name)
}

/// The table name of a node: `skiff-` and the node name with anything but ASCII letters, digits,
/// `-` and `_` replaced by `_`, at most 64 characters in all.
pub fn table_name(node_name: &str) -> String {
    let clean: String = node_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '_' })
        .take(58)
        .collect();
    format!("skiff-{clean}")
}

#[cfg(test)]
mod tests {
    use super::super::model::Proto;
    use super::*;

    fn table() -> Table {
        Table { name: "skiff-n1".into(), comment: "skiff node n1".into(), pod_cidr: "10.88.0.0/24".into() }
    }

    fn ep(ip: &str) -> Endpoint {
        Endpoint { ip: ip.parse().unwrap(), port: 8080 }
    }

    fn port(eps: &[&str]) -> PortRules {
        PortRules {
            id: "shop/web/tcp/http".into(),
            protocol: Proto::Tcp,
            cluster_ip: "10.43.0.10".parse().unwrap(),
            port: 80,
            node_port: Some(30080),
            load_balancer_ips: Vec::new(),
            internal_local: false,
            external_local: false,
            cluster_endpoints: eps.iter().map(|e| ep(e)).collect(),
            local_endpoints: Vec::new(),
            affinity_seconds: None,
        }
    }

    #[test]
    fn a_new_service_gets_chains_rules_and_map_elements() {
        let t = table();
        let script = update(&t, &Plan::default(), &plan(&t, &[port(&["10.88.0.2", "10.88.0.3"])]));
        let expected = "\
add chain ip skiff-n1 svc-shop/web/tcp/http
add rule ip skiff-n1 svc-shop/web/tcp/http ip saddr != 10.88.0.0/24 jump mark-for-masquerade
add rule ip skiff-n1 svc-shop/web/tcp/http ip saddr 10.88.0.2 jump mark-for-masquerade
add rule ip skiff-n1 svc-shop/web/tcp/http ip saddr 10.88.0.3 jump mark-for-masquerade
add rule ip skiff-n1 svc-shop/web/tcp/http numgen random mod 2 0 meta l4proto tcp dnat ip to 10.88.0.2:8080
add rule ip skiff-n1 svc-shop/web/tcp/http meta l4proto tcp dnat ip to 10.88.0.3:8080
add element ip skiff-n1 service-ips { 10.43.0.10 . tcp . 80 : goto svc-shop/web/tcp/http }
add element ip skiff-n1 service-nodeports { tcp . 30080 : goto svc-shop/web/tcp/http }
";
        assert_eq!(script, expected);
    }

    #[test]
    fn removing_one_endpoint_rewrites_only_that_services_chain() {
        let t = table();
        let old = plan(&t, &[port(&["10.88.0.2", "10.88.0.3", "10.88.0.4"])]);
        let new = plan(&t, &[port(&["10.88.0.2", "10.88.0.4"])]);
        let script = update(&t, &old, &new);
        let expected = "\
flush chain ip skiff-n1 svc-shop/web/tcp/http
add rule ip skiff-n1 svc-shop/web/tcp/http ip saddr != 10.88.0.0/24 jump mark-for-masquerade
add rule ip skiff-n1 svc-shop/web/tcp/http ip saddr 10.88.0.2 jump mark-for-masquerade
add rule ip skiff-n1 svc-shop/web/tcp/http ip saddr 10.88.0.4 jump mark-for-masquerade
add rule ip skiff-n1 svc-shop/web/tcp/http numgen random mod 2 0 meta l4proto tcp dnat ip to 10.88.0.2:8080
add rule ip skiff-n1 svc-shop/web/tcp/http meta l4proto tcp dnat ip to 10.88.0.4:8080
";
        assert_eq!(script, expected);
        assert_eq!(update(&t, &new, &new), "", "no change, no commands");
    }

    #[test]
    fn the_last_endpoint_gone_turns_the_port_into_a_rejection_and_back() {
        let t = table();
        let old = plan(&t, &[port(&["10.88.0.2"])]);
        let none = plan(&t, &[port(&[])]);
        let script = update(&t, &old, &none);
        assert!(script.starts_with(
            "delete element ip skiff-n1 service-ips { 10.43.0.10 . tcp . 80 }\n\
             delete element ip skiff-n1 service-nodeports { tcp . 30080 }\n"
        ));
        assert!(script.contains(
            "flush chain ip skiff-n1 svc-shop/web/tcp/http\ndelete chain ip skiff-n1 svc-shop/web/tcp/http\n"
        ));
        assert!(script.ends_with(
            "add element ip skiff-n1 no-endpoint-services { 10.43.0.10 . tcp . 80 : goto reject-chain }\n\
             add element ip skiff-n1 no-endpoint-nodeports { tcp . 30080 : goto reject-chain }\n"
        ));
        assert!(none.chains.is_empty());
        let back = update(&t, &none, &old);
        assert!(back.starts_with("delete element ip skiff-n1 no-endpoint-services { 10.43.0.10 . tcp . 80 }\n"));
        assert!(
            back.ends_with("add element ip skiff-n1 service-nodeports { tcp . 30080 : goto svc-shop/web/tcp/http }\n")
        );
    }

    #[test]
    fn a_deleted_service_leaves_nothing() {
        let t = table();
        let mut p = port(&["10.88.0.2"]);
        p.affinity_seconds = Some(60);
        let old = plan(&t, &[p]);
        let script = update(&t, &old, &Plan::default());
        assert!(script.contains("delete set ip skiff-n1 aff60-shop/web/tcp/http__10.88.0.2/8080\n"), "{script}");
        for chain in old.chains.keys() {
            assert!(script.contains(&format!("delete chain ip skiff-n1 {chain}\n")), "{chain}: {script}");
        }
        assert!(!script.contains("add "), "{script}");
    }

    #[test]
    fn session_affinity_remembers_clients_per_endpoint() {
        let t = table();
        let mut p = port(&["10.88.0.2"]);
        p.affinity_seconds = Some(10_800);
        let plan = plan(&t, &[p]);
        let set = "aff10800-shop/web/tcp/http__10.88.0.2/8080";
        assert_eq!(plan.sets[set], "{ type ipv4_addr; flags dynamic,timeout; timeout 10800s; }");
        let svc = &plan.chains["svc-shop/web/tcp/http"];
        assert_eq!(svc[2], format!("ip saddr @{set} goto ep-shop/web/tcp/http__10.88.0.2/8080"));
        assert_eq!(svc[3], "goto ep-shop/web/tcp/http__10.88.0.2/8080");
        let ep = &plan.chains["ep-shop/web/tcp/http__10.88.0.2/8080"];
        assert_eq!(ep[0], format!("update @{set} {{ ip saddr }}"));
        assert_eq!(ep[1], "meta l4proto tcp dnat ip to 10.88.0.2:8080");
    }

    #[test]
    fn local_policies_use_local_endpoints_and_drop_when_there_are_none_here() {
        let t = table();
        let mut p = port(&["10.88.0.2", "10.99.0.2"]);
        p.load_balancer_ips = vec!["127.0.0.1".parse().unwrap()];
        p.external_local = true;
        p.local_endpoints = vec![ep("10.88.0.2")];
        let plan1 = plan(&t, std::slice::from_ref(&p));
        assert_eq!(
            plan1.elements[&(Map::ServiceIps, "10.43.0.10 . tcp . 80".into())],
            "goto svc-shop/web/tcp/http",
            "internal traffic stays cluster-wide"
        );
        assert_eq!(plan1.elements[&(Map::ServiceIps, "127.0.0.1 . tcp . 80".into())], "goto local-shop/web/tcp/http");
        assert_eq!(plan1.elements[&(Map::NodePorts, "tcp . 30080".into())], "goto local-shop/web/tcp/http");
        let local = &plan1.chains["local-shop/web/tcp/http"];
        // External clients keep their address; only the node's own traffic is masqueraded.
        assert_eq!(local[0], "fib saddr type local jump mark-for-masquerade");
        assert_eq!(local[2], "meta l4proto tcp dnat ip to 10.88.0.2:8080", "{local:?}");
        p.local_endpoints.clear();
        p.internal_local = true;
        let plan2 = plan(&t, &[p]);
        assert_eq!(plan2.elements[&(Map::NoEndpointServices, "10.43.0.10 . tcp . 80".into())], "drop");
        assert_eq!(plan2.elements[&(Map::NoEndpointNodePorts, "tcp . 30080".into())], "drop");
        assert!(!plan2.chains.contains_key("local-shop/web/tcp/http"));
    }

    #[test]
    fn a_full_sync_replaces_the_table_atomically() {
        let t = table();
        let p = plan(&t, &[port(&["10.88.0.2"])]);
        let script = full(&t, [&p]);
        assert!(script.starts_with("table ip skiff-n1\ndelete table ip skiff-n1\ntable ip skiff-n1 {\n"));
        assert!(script.contains("comment \"skiff node n1\""));
        assert!(script
            .ends_with("add element ip skiff-n1 service-nodeports { tcp . 30080 : goto svc-shop/web/tcp/http }\n"));
        assert_eq!(delete(&t), "table ip skiff-n1\ndelete table ip skiff-n1\n");
    }

    #[test]
    fn table_names_are_safe_identifiers() {
        assert_eq!(table_name("t123x4"), "skiff-t123x4");
        assert_eq!(table_name("Node.Example.com"), "skiff-node_example_com");
        assert_eq!(table_name(&"a".repeat(300)).len(), 64);
    }
}
