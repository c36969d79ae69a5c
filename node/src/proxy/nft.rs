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
use std::fmt::{self, Write};
use std::net::Ipv4Addr;

use super::model::{Endpoint, PortRules, Proto};

/// The mark bit of connections to masquerade (kube-proxy's).
pub const MASQUERADE_MARK: &str = "0x4000";

/// The most endpoints a service port may have for its traffic to be spread by set elements (one
/// static `dnat` rule per count in the `*-pick` chains); ports with more, and ports with session
/// affinity, get chains of their own.
pub const MAX_SET_ENDPOINTS: usize = 64;

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
    /// Pods' traffic leaving the cluster, masqueraded to the node's address (on a node whose pod
    /// CIDR was allocated from a cluster CIDR; its pods have a default route).
    pub egress: Option<Egress>,
}

/// What pod traffic leaves the cluster: from the pod CIDR, not to the cluster CIDR, not onto the
/// pods' own bridge.
#[derive(Clone, Debug)]
pub struct Egress {
    pub cluster_cidr: String,
    pub bridge: String,
}

/// The two kinds of service address: a ClusterIP or load-balancer IP (`daddr . proto . port`)
/// and a NodePort on any local address (`proto . port`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `ipv4_addr . inet_proto . inet_service`.
    Ip,
    /// `inet_proto . inet_service` of traffic to a local address.
    NodePort,
}

impl Family {
    fn prefix(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::NodePort => "nodeport",
        }
    }

    /// The nft type of a key of this family.
    fn key_type(self) -> &'static str {
        match self {
            Family::Ip => "ipv4_addr . inet_proto . inet_service",
            Family::NodePort => "inet_proto . inet_service",
        }
    }

    /// The packet fields a key of this family is matched against.
    fn key_expr(self) -> &'static str {
        match self {
            Family::Ip => "ip daddr . meta l4proto . th dport",
            Family::NodePort => "meta l4proto . th dport",
        }
    }

    /// The condition before a lookup of this family (NodePorts: traffic to a local address).
    fn guard(self) -> &'static str {
        match self {
            Family::Ip => "",
            Family::NodePort => "fib daddr type local ",
        }
    }
}

/// The sets and maps of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Map {
    /// Verdict map `key : goto <chain>` for ports with chains of their own (`service-ips`,
    /// `service-nodeports`).
    Verdicts(Family),
    /// Ports with no endpoint: `key : goto reject-chain` or `drop` (`no-endpoint-services`,
    /// `no-endpoint-nodeports`), consulted before DNAT.
    NoEndpoint(Family),
    /// Keys spread over their endpoints by sets, masqueraded from outside the pod network.
    Cluster(Family),
    /// Keys spread over this node's endpoints (a `Local` policy): only the node's own traffic
    /// is masqueraded.
    Local(Family),
    /// Keys with this many endpoints (1 to [`MAX_SET_ENDPOINTS`]).
    Count(Family, u8),
    /// `key . slot : address . port`: endpoint `slot` of a key (slots 0 to count - 1), one map
    /// per protocol (nft ties a map's port data to one transport protocol).
    Endpoints(Family, Proto),
    /// `client . key`: a client that is one of the key's endpoints (hairpin, masqueraded).
    Hairpin(Family),
}

impl Map {
    /// The set's name in the table.
    pub fn name(self) -> String {
        match self {
            Map::Verdicts(Family::Ip) => "service-ips".into(),
            Map::Verdicts(Family::NodePort) => "service-nodeports".into(),
            Map::NoEndpoint(Family::Ip) => "no-endpoint-services".into(),
            Map::NoEndpoint(Family::NodePort) => "no-endpoint-nodeports".into(),
            Map::Cluster(f) => format!("{}-cluster", f.prefix()),
            Map::Local(f) => format!("{}-local", f.prefix()),
            Map::Count(f, n) => format!("{}-count-{n}", f.prefix()),
            Map::Endpoints(f, proto) => format!("{}-endpoints-{}", f.prefix(), proto.nft()),
            Map::Hairpin(f) => format!("{}-hairpin", f.prefix()),
        }
    }
}

/// One field of a set element's key or data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// An IPv4 address.
    Addr(Ipv4Addr),
    /// A transport protocol.
    Proto(Proto),
    /// A port.
    Port(u16),
    /// An endpoint's slot (what `numgen` yields).
    Slot(u32),
}

impl Field {
    /// The bytes the kernel compares: each field in a 32-bit register of its own, addresses and
    /// ports in network order, a slot (numgen's output) in host order, the rest zero.
    pub fn put(self, out: &mut Vec<u8>) {
        match self {
            Field::Addr(a) => out.extend_from_slice(&a.octets()),
            Field::Proto(p) => out.extend_from_slice(&[proto_number(p), 0, 0, 0]),
            Field::Port(p) => {
                out.extend_from_slice(&p.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Field::Slot(s) => out.extend_from_slice(&s.to_ne_bytes()),
        }
    }
}

/// The IP protocol number.
fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
        Proto::Sctp => 132,
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Addr(a) => write!(f, "{a}"),
            Field::Proto(p) => f.write_str(p.nft()),
            Field::Port(p) => write!(f, "{p}"),
            Field::Slot(s) => write!(f, "{s}"),
        }
    }
}

/// A concatenation of fields (`10.43.0.10 . tcp . 80`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fields(pub Vec<Field>);

impl Fields {
    /// The concatenation as the kernel stores it.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 4);
        for f in &self.0 {
            f.put(&mut out);
        }
        out
    }
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" . ")?;
            }
            write!(f, "{field}")?;
        }
        Ok(())
    }
}

/// What an element maps its key to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Nothing (an element of a set).
    None,
    /// Data (an endpoint's address and port).
    Data(Fields),
    /// `goto <chain>`.
    Goto(String),
    /// `drop`.
    Drop,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => Ok(()),
            Value::Data(d) => write!(f, " : {d}"),
            Value::Goto(c) => write!(f, " : goto {c}"),
            Value::Drop => f.write_str(" : drop"),
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
    /// (set, key) -> value.
    pub elements: BTreeMap<(Map, Fields), Value>,
}

impl Plan {
    /// Whether the service puts nothing into the table.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty() && self.elements.is_empty()
    }

    /// The element of `map` whose key reads `key` in nft's notation (`10.43.0.10 . tcp . 80`).
    pub fn element(&self, map: Map, key: &str) -> Option<&Value> {
        self.elements.iter().find(|((m, k), _)| *m == map && k.to_string() == key).map(|(_, v)| v)
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
enum Target<'a> {
    /// Into this chain of the port's own.
    Chain(String),
    /// Spread over these endpoints by set elements; `local`: masquerade only the node's own
    /// traffic (a `Local` policy).
    Sets { endpoints: &'a [Endpoint], local: bool },
    /// Endpoints exist but none for this traffic (a `Local` policy with none on this node).
    Drop,
    /// No endpoint at all: refused.
    Reject,
}

fn endpoint_suffix(e: &Endpoint) -> String {
    format!("{}/{}", e.ip, e.port)
}

fn plan_port(table: &Table, p: &PortRules, plan: &mut Plan) {
    let proto = p.protocol.nft();
    let id = &p.id;
    let affinity = |e: &Endpoint| p.affinity_seconds.map(|t| format!("aff{t}-{id}__{}", endpoint_suffix(e)));
    let ep_chain = |e: &Endpoint| format!("ep-{id}__{}", endpoint_suffix(e));
    // Without session affinity and with at most MAX_SET_ENDPOINTS endpoints, a port's traffic
    // is spread by set elements only (an endpoint change is an element change, which the kernel
    // commits without revalidating the table); otherwise it gets chains of its own.
    let in_sets = p.affinity_seconds.is_none()
        && p.cluster_endpoints.len() <= MAX_SET_ENDPOINTS
        && p.local_endpoints.len() <= MAX_SET_ENDPOINTS;
    // A chain spreading new connections over `eps`. Masqueraded: traffic from outside the pod
    // network (the node itself, NodePort and LoadBalancer clients; for a `Local` policy only the
    // node's own traffic, so external clients keep their address) and hairpin traffic (a client
    // that is one of the endpoints).
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
    } else if in_sets {
        Target::Sets { endpoints: &p.cluster_endpoints, local: false }
    } else {
        let chain = format!("svc-{id}");
        spread(chain.clone(), &p.cluster_endpoints, false, plan);
        Target::Chain(chain)
    };
    let local = if !(p.internal_local || p.external_local) {
        None
    } else if p.local_endpoints.is_empty() {
        Some(if p.cluster_endpoints.is_empty() { Target::Reject } else { Target::Drop })
    } else if in_sets {
        Some(Target::Sets { endpoints: &p.local_endpoints, local: true })
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
    let (proto, port) = (Field::Proto(p.protocol), Field::Port(p.port));
    let l4 = p.protocol;
    elements(plan, internal, Family::Ip, l4, vec![Field::Addr(p.cluster_ip), proto, port]);
    for ip in &p.load_balancer_ips {
        elements(plan, external, Family::Ip, l4, vec![Field::Addr(*ip), proto, port]);
    }
    if let Some(node_port) = p.node_port {
        elements(plan, external, Family::NodePort, l4, vec![proto, Field::Port(node_port)]);
    }
}

/// The elements sending traffic for `key` to `target`.
fn elements(plan: &mut Plan, target: &Target, family: Family, l4: Proto, key: Vec<Field>) {
    let mut put = |map: Map, key: Vec<Field>, value: Value| {
        plan.elements.insert((map, Fields(key)), value);
    };
    match target {
        Target::Chain(c) => put(Map::Verdicts(family), key, Value::Goto(c.clone())),
        Target::Drop => put(Map::NoEndpoint(family), key, Value::Drop),
        Target::Reject => put(Map::NoEndpoint(family), key, Value::Goto("reject-chain".into())),
        Target::Sets { endpoints, local } => {
            let kind = if *local { Map::Local(family) } else { Map::Cluster(family) };
            put(kind, key.clone(), Value::None);
            // At most MAX_SET_ENDPOINTS (64) here, so the count fits.
            let count = u8::try_from(endpoints.len()).unwrap_or(u8::MAX);
            put(Map::Count(family, count), key.clone(), Value::None);
            for (slot, e) in (0u32..).zip(endpoints.iter()) {
                let mut k = key.clone();
                k.push(Field::Slot(slot));
                put(Map::Endpoints(family, l4), k, Value::Data(Fields(vec![Field::Addr(e.ip), Field::Port(e.port)])));
            }
            let ips: BTreeSet<Ipv4Addr> = endpoints.iter().map(|e| e.ip).collect();
            for ip in ips {
                let mut k = vec![Field::Addr(ip)];
                k.extend(key.iter().copied());
                put(Map::Hairpin(family), k, Value::None);
            }
        }
    }
}

/// The sets and chains spreading the connections of one key family by set elements.
fn family_base(table: &Table, family: Family, out: &mut String) {
    let (p, ty, key) = (family.prefix(), family.key_type(), family.key_expr());
    let hairpin = match family {
        Family::Ip => "ip saddr . ip daddr . meta l4proto . th dport",
        Family::NodePort => "ip saddr . meta l4proto . th dport",
    };
    let _ = write!(
        out,
        "\tset {p}-cluster {{ type {ty}; }}\n\
         \tset {p}-local {{ type {ty}; }}\n\
         \tset {p}-hairpin {{ type ipv4_addr . {ty}; }}\n"
    );
    for l4 in PROTOS {
        let proto = l4.nft();
        let _ = writeln!(
            out,
            "\tmap {p}-endpoints-{proto} {{ typeof {key} . numgen random mod 2 : ip daddr . {proto} dport; }}"
        );
    }
    for n in 1..=MAX_SET_ENDPOINTS {
        let _ = writeln!(out, "\tset {p}-count-{n} {{ type {ty}; }}");
    }
    let _ = write!(
        out,
        "\tchain {p}-pick-cluster {{\n\
         \t\tip saddr != {cidr} jump mark-for-masquerade\n\
         \t\t{hairpin} @{p}-hairpin jump mark-for-masquerade\n\
         \t\tgoto {p}-pick\n\
         \t}}\n\
         \tchain {p}-pick-local {{\n\
         \t\tfib saddr type local jump mark-for-masquerade\n\
         \t\t{hairpin} @{p}-hairpin jump mark-for-masquerade\n\
         \t\tgoto {p}-pick\n\
         \t}}\n\
         \tchain {p}-pick {{\n",
        cidr = table.pod_cidr,
    );
    for l4 in PROTOS {
        let _ = writeln!(out, "\t\tmeta l4proto {0} goto {p}-pick-{0}", l4.nft());
    }
    out.push_str("\t}\n");
    // Endpoint `numgen random mod n` of the key's n: uniform over the endpoints. One chain and
    // map per protocol: nft makes a map's port data depend on one transport protocol.
    for l4 in PROTOS {
        let proto = l4.nft();
        let _ = writeln!(out, "\tchain {p}-pick-{proto} {{");
        for n in 1..=MAX_SET_ENDPOINTS {
            let _ = writeln!(
                out,
                "\t\t{key} @{p}-count-{n} dnat ip addr . port to {key} . numgen random mod {n} map @{p}-endpoints-{proto}"
            );
        }
        out.push_str("\t}\n");
    }
}

/// The transport protocols of service ports.
const PROTOS: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

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
         {egress}\
         \t\tmeta mark & {MASQUERADE_MARK} == 0 return\n\
         \t\tmeta mark set meta mark xor {MASQUERADE_MARK}\n\
         \t\tmasquerade fully-random\n\
         \t}}\n",
        comment = table.comment.replace('"', "'"),
        egress = table
            .egress
            .as_ref()
            .map(|e| {
                format!(
                    "\t\tip saddr {} ip daddr != {} oifname != \"{}\" masquerade\n",
                    table.pod_cidr, e.cluster_cidr, e.bridge
                )
            })
            .unwrap_or_default(),
    );
    family_base(table, Family::Ip, out);
    family_base(table, Family::NodePort, out);
    out.push_str("\tchain services {\n");
    for family in [Family::Ip, Family::NodePort] {
        let (p, guard, key) = (family.prefix(), family.guard(), family.key_expr());
        let _ = write!(
            out,
            "\t\t{guard}{key} @{p}-cluster goto {p}-pick-cluster\n\
             \t\t{guard}{key} @{p}-local goto {p}-pick-local\n\
             \t\t{guard}{key} vmap @{verdicts}\n",
            verdicts = Map::Verdicts(family).name(),
        );
    }
    out.push_str(
        "\t}\n\
         \tchain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }\n\
         \tchain nat-output { type nat hook output priority -100; policy accept; jump services; }\n\
         \tchain reject-chain { meta l4proto tcp reject with tcp reset; reject; }\n\
         \tchain endpoints-check {\n\
         \t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\
         \t\tfib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports\n\
         \t}\n\
         \tchain filter-prerouting { type filter hook prerouting priority -110; policy accept; ct state new jump endpoints-check; }\n\
         \tchain filter-output { type filter hook output priority -110; policy accept; ct state new jump endpoints-check; }\n\
         }\n",
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

/// One element to delete (`value` is `None`) or add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElementChange<'a> {
    /// Its set.
    pub map: Map,
    /// Its key.
    pub key: &'a Fields,
    /// Its value when added.
    pub value: Option<&'a Value>,
}

/// The element changes turning `old` into `new`: first the deletions (elements that go away or
/// change their value), then the additions.
pub fn element_changes<'a>(old: &'a Plan, new: &'a Plan) -> Vec<ElementChange<'a>> {
    let mut out = Vec::new();
    for ((map, key), value) in &old.elements {
        if new.elements.get(&(*map, key.clone())) != Some(value) {
            out.push(ElementChange { map: *map, key, value: None });
        }
    }
    for ((map, key), value) in &new.elements {
        if old.elements.get(&(*map, key.clone())) != Some(value) {
            out.push(ElementChange { map: *map, key, value: Some(value) });
        }
    }
    out
}

/// Whether turning `old` into `new` changes set elements only (no chain, rule or set), which
/// [`super::netlink`] applies without `nft`.
pub fn elements_only(old: &Plan, new: &Plan) -> bool {
    old.chains == new.chains && old.sets == new.sets
}

/// The commands turning `old` (what the table holds for one service) into `new`; empty when
/// nothing changed. Only the chains, sets and elements that differ are touched.
pub fn update(table: &Table, old: &Plan, new: &Plan) -> String {
    let t = &table.name;
    let mut out = String::new();
    let changes = element_changes(old, new);
    // 1. Elements that go away or change their value.
    for c in changes.iter().filter(|c| c.value.is_none()) {
        let _ = writeln!(out, "delete element ip {t} {} {{ {} }}", c.map.name(), c.key);
    }
    // 2. New chains and sets exist before any rule refers to them.
    for name in new.chains.keys().filter(|c| !old.chains.contains_key(*c)) {
        let _ = writeln!(out, "add chain ip {t} {name}");
    }
    for (name, def) in new.sets.iter().filter(|(s, _)| !old.sets.contains_key(*s)) {
        let _ = writeln!(out, "add set ip {t} {name} {def}");
    }
    // 3.-5. Chains rewritten, then the sets nothing refers to any more.
    rewrite_chains(&mut out, t, &old.chains, &new.chains);
    for name in old.sets.keys().filter(|s| !new.sets.contains_key(*s)) {
        let _ = writeln!(out, "delete set ip {t} {name}");
    }
    // 6. New or changed elements.
    for c in &changes {
        if let Some(value) = c.value {
            let _ = writeln!(out, "add element ip {t} {} {{ {}{value} }}", c.map.name(), c.key);
        }
    }
    out
}

/// The chain part of an update from `old` to `new` chains (name -> rules) of table `t`, for the
/// proxy's and the network policy's tables alike: changed and removed chains lose their rules (and
/// with them their references to sets), changed and new chains get theirs, removed chains are
/// deleted. New chains must already exist (`add chain`), as elements may jump to them.
pub fn rewrite_chains(
    out: &mut String,
    t: &str,
    old: &BTreeMap<String, Vec<String>>,
    new: &BTreeMap<String, Vec<String>>,
) {
    let changed: BTreeSet<&String> =
        old.iter().filter(|(c, rules)| new.get(*c) != Some(rules)).map(|(c, _)| c).collect();
    for name in &changed {
        let _ = writeln!(out, "flush chain ip {t} {name}");
    }
    for (name, rules) in new {
        if old.get(name) != Some(rules) {
            for rule in rules {
                let _ = writeln!(out, "add rule ip {t} {name} {rule}");
            }
        }
    }
    for name in changed.iter().filter(|c| !new.contains_key(**c)) {
        let _ = writeln!(out, "delete chain ip {t} {name}");
    }
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
pub(crate) mod tests {
    use super::super::model::Proto;
    use super::*;

    fn table() -> Table {
        Table {
            name: "skiff-n1".into(),
            comment: "skiff node n1".into(),
            pod_cidr: "10.88.0.0/24".into(),
            egress: None,
        }
    }

    pub(crate) fn ep(ip: &str) -> Endpoint {
        Endpoint { ip: ip.parse().unwrap(), port: 8080 }
    }

    /// One TCP service port (ClusterIP 10.43.0.10:80, NodePort 30080) with these endpoints on 8080.
    pub(crate) fn port(eps: &[&str]) -> PortRules {
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
    fn a_new_service_gets_set_elements_and_no_chain() {
        let t = table();
        let new = plan(&t, &[port(&["10.88.0.2", "10.88.0.3"])]);
        assert!(new.chains.is_empty() && new.sets.is_empty(), "{new:?}");
        let script = update(&t, &Plan::default(), &new);
        let expected = "\
add element ip skiff-n1 ip-cluster { 10.43.0.10 . tcp . 80 }
add element ip skiff-n1 nodeport-cluster { tcp . 30080 }
add element ip skiff-n1 ip-count-2 { 10.43.0.10 . tcp . 80 }
add element ip skiff-n1 nodeport-count-2 { tcp . 30080 }
add element ip skiff-n1 ip-endpoints-tcp { 10.43.0.10 . tcp . 80 . 0 : 10.88.0.2 . 8080 }
add element ip skiff-n1 ip-endpoints-tcp { 10.43.0.10 . tcp . 80 . 1 : 10.88.0.3 . 8080 }
add element ip skiff-n1 nodeport-endpoints-tcp { tcp . 30080 . 0 : 10.88.0.2 . 8080 }
add element ip skiff-n1 nodeport-endpoints-tcp { tcp . 30080 . 1 : 10.88.0.3 . 8080 }
add element ip skiff-n1 ip-hairpin { 10.88.0.2 . 10.43.0.10 . tcp . 80 }
add element ip skiff-n1 ip-hairpin { 10.88.0.3 . 10.43.0.10 . tcp . 80 }
add element ip skiff-n1 nodeport-hairpin { 10.88.0.2 . tcp . 30080 }
add element ip skiff-n1 nodeport-hairpin { 10.88.0.3 . tcp . 30080 }
";
        assert_eq!(script, expected);
    }

    #[test]
    fn replacing_one_endpoint_changes_only_its_elements() {
        let t = table();
        let old = plan(&t, &[port(&["10.88.0.2", "10.88.0.3", "10.88.0.4"])]);
        let new = plan(&t, &[port(&["10.88.0.2", "10.88.0.3", "10.88.0.9"])]);
        assert!(elements_only(&old, &new));
        let script = update(&t, &old, &new);
        let expected = "\
delete element ip skiff-n1 ip-endpoints-tcp { 10.43.0.10 . tcp . 80 . 2 }
delete element ip skiff-n1 nodeport-endpoints-tcp { tcp . 30080 . 2 }
delete element ip skiff-n1 ip-hairpin { 10.88.0.4 . 10.43.0.10 . tcp . 80 }
delete element ip skiff-n1 nodeport-hairpin { 10.88.0.4 . tcp . 30080 }
add element ip skiff-n1 ip-endpoints-tcp { 10.43.0.10 . tcp . 80 . 2 : 10.88.0.9 . 8080 }
add element ip skiff-n1 nodeport-endpoints-tcp { tcp . 30080 . 2 : 10.88.0.9 . 8080 }
add element ip skiff-n1 ip-hairpin { 10.88.0.9 . 10.43.0.10 . tcp . 80 }
add element ip skiff-n1 nodeport-hairpin { 10.88.0.9 . tcp . 30080 }
";
        assert_eq!(script, expected);
        assert_eq!(update(&t, &new, &new), "", "no change, no commands");
        assert!(element_changes(&new, &new).is_empty());
    }

    #[test]
    fn removing_one_endpoint_moves_the_key_to_the_smaller_count() {
        let t = table();
        let old = plan(&t, &[port(&["10.88.0.2", "10.88.0.3", "10.88.0.4"])]);
        let new = plan(&t, &[port(&["10.88.0.2", "10.88.0.4"])]);
        assert!(elements_only(&old, &new));
        let script = update(&t, &old, &new);
        for line in [
            "delete element ip skiff-n1 ip-count-3 { 10.43.0.10 . tcp . 80 }\n",
            "add element ip skiff-n1 ip-count-2 { 10.43.0.10 . tcp . 80 }\n",
            "delete element ip skiff-n1 ip-endpoints-tcp { 10.43.0.10 . tcp . 80 . 2 }\n",
            "add element ip skiff-n1 ip-endpoints-tcp { 10.43.0.10 . tcp . 80 . 1 : 10.88.0.4 . 8080 }\n",
            "delete element ip skiff-n1 ip-hairpin { 10.88.0.3 . 10.43.0.10 . tcp . 80 }\n",
        ] {
            assert!(script.contains(line), "{line} missing from {script}");
        }
        assert!(!script.contains("chain"), "{script}");
        // Deletions first: a changed element is deleted before its new value is added.
        let changes = element_changes(&old, &new);
        let first_add = changes.iter().position(|c| c.value.is_some()).unwrap();
        assert!(changes[first_add..].iter().all(|c| c.value.is_some()));
    }

    #[test]
    fn the_last_endpoint_gone_turns_the_port_into_a_rejection_and_back() {
        let t = table();
        let old = plan(&t, &[port(&["10.88.0.2"])]);
        let none = plan(&t, &[port(&[])]);
        assert!(elements_only(&old, &none));
        let script = update(&t, &old, &none);
        assert!(script.starts_with("delete element ip skiff-n1 ip-cluster { 10.43.0.10 . tcp . 80 }\n"), "{script}");
        assert!(script.contains("delete element ip skiff-n1 ip-endpoints-tcp { 10.43.0.10 . tcp . 80 . 0 }\n"));
        assert!(script.ends_with(
            "add element ip skiff-n1 no-endpoint-services { 10.43.0.10 . tcp . 80 : goto reject-chain }\n\
             add element ip skiff-n1 no-endpoint-nodeports { tcp . 30080 : goto reject-chain }\n"
        ));
        assert!(none.chains.is_empty());
        let back = update(&t, &none, &old);
        assert!(back.starts_with("delete element ip skiff-n1 no-endpoint-services { 10.43.0.10 . tcp . 80 }\n"));
        assert!(back.ends_with("add element ip skiff-n1 nodeport-hairpin { 10.88.0.2 . tcp . 30080 }\n"), "{back}");
    }

    #[test]
    fn ports_with_more_endpoints_than_the_sets_hold_get_a_chain() {
        let t = table();
        let ips: Vec<String> = (0..=MAX_SET_ENDPOINTS).map(|i| format!("10.88.1.{i}")).collect();
        let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
        let big = plan(&t, &[port(&refs)]);
        let small = plan(&t, &[port(&refs[..MAX_SET_ENDPOINTS])]);
        assert_eq!(
            big.element(Map::Verdicts(Family::Ip), "10.43.0.10 . tcp . 80"),
            Some(&Value::Goto("svc-shop/web/tcp/http".into()))
        );
        assert_eq!(big.chains["svc-shop/web/tcp/http"].len(), 1 + 65 + 65);
        assert!(small.chains.is_empty());
        assert_eq!(small.element(Map::Count(Family::Ip, 64), "10.43.0.10 . tcp . 80"), Some(&Value::None));
        // Crossing the limit rewrites the port as a chain in one transaction.
        assert!(!elements_only(&small, &big));
        let script = update(&t, &small, &big);
        assert!(script.starts_with("delete element ip skiff-n1 ip-cluster { 10.43.0.10 . tcp . 80 }\n"), "{script}");
        assert!(script
            .ends_with("add element ip skiff-n1 service-nodeports { tcp . 30080 : goto svc-shop/web/tcp/http }\n"));
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
        let sets = plan(&t, &[port(&["10.88.0.2", "10.88.0.3"])]);
        let script = update(&t, &sets, &Plan::default());
        assert_eq!(script.lines().count(), sets.elements.len(), "{script}");
        assert!(script.lines().all(|l| l.starts_with("delete element ")), "{script}");
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
        assert_eq!(
            plan.element(Map::Verdicts(Family::Ip), "10.43.0.10 . tcp . 80"),
            Some(&Value::Goto("svc-shop/web/tcp/http".into()))
        );
    }

    #[test]
    fn local_policies_use_local_endpoints_and_drop_when_there_are_none_here() {
        let t = table();
        let mut p = port(&["10.88.0.2", "10.99.0.2"]);
        p.load_balancer_ips = vec!["127.0.0.1".parse().unwrap()];
        p.external_local = true;
        p.local_endpoints = vec![ep("10.88.0.2")];
        let plan1 = plan(&t, std::slice::from_ref(&p));
        let ip = Family::Ip;
        // Internal traffic stays cluster-wide (masqueraded from outside the pod network) ...
        assert_eq!(plan1.element(Map::Cluster(ip), "10.43.0.10 . tcp . 80"), Some(&Value::None));
        assert_eq!(plan1.element(Map::Count(ip, 2), "10.43.0.10 . tcp . 80"), Some(&Value::None));
        // ... external traffic goes to this node's endpoint, and external clients keep their
        // address (the `-local` sets lead to the pick-local chains).
        assert_eq!(plan1.element(Map::Local(ip), "127.0.0.1 . tcp . 80"), Some(&Value::None));
        assert_eq!(plan1.element(Map::Cluster(ip), "127.0.0.1 . tcp . 80"), None);
        assert_eq!(plan1.element(Map::Count(ip, 1), "127.0.0.1 . tcp . 80"), Some(&Value::None));
        assert_eq!(
            plan1.element(Map::Endpoints(ip, Proto::Tcp), "127.0.0.1 . tcp . 80 . 0"),
            Some(&Value::Data(Fields(vec![Field::Addr("10.88.0.2".parse().unwrap()), Field::Port(8080)])))
        );
        assert_eq!(plan1.element(Map::Local(Family::NodePort), "tcp . 30080"), Some(&Value::None));
        let mut base_text = String::new();
        base(&t, &mut base_text);
        assert!(base_text.contains("\tchain ip-pick-local {\n\t\tfib saddr type local jump mark-for-masquerade\n"));
        p.local_endpoints.clear();
        p.internal_local = true;
        let plan2 = plan(&t, &[p]);
        assert_eq!(plan2.element(Map::NoEndpoint(ip), "10.43.0.10 . tcp . 80"), Some(&Value::Drop));
        assert_eq!(plan2.element(Map::NoEndpoint(Family::NodePort), "tcp . 30080"), Some(&Value::Drop));
        assert!(plan2.chains.is_empty());
    }

    #[test]
    fn pod_traffic_leaving_the_cluster_is_masqueraded_only_on_allocated_nodes() {
        let mut t = table();
        let mut text = String::new();
        base(&t, &mut text);
        assert!(!text.contains("oifname"), "{text}");
        t.egress = Some(Egress { cluster_cidr: "10.42.0.0/16".into(), bridge: "skiff0".into() });
        let mut text = String::new();
        base(&t, &mut text);
        assert!(
            text.contains(
                "srcnat; policy accept;\n\t\tip saddr 10.88.0.0/24 ip daddr != 10.42.0.0/16 oifname != \"skiff0\" masquerade\n\t\tmeta mark"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_full_sync_replaces_the_table_atomically() {
        let t = table();
        let p = plan(&t, &[port(&["10.88.0.2"])]);
        let script = full(&t, [&p]);
        assert!(script.starts_with("table ip skiff-n1\ndelete table ip skiff-n1\ntable ip skiff-n1 {\n"));
        assert!(script.contains("comment \"skiff node n1\""));
        assert!(script.contains(
            "\t\tip daddr . meta l4proto . th dport @ip-count-3 dnat ip addr . port to ip daddr . meta l4proto . th dport . numgen random mod 3 map @ip-endpoints-tcp\n"
        ));
        assert!(script.ends_with("add element ip skiff-n1 nodeport-hairpin { 10.88.0.2 . tcp . 30080 }\n"));
        assert_eq!(delete(&t), "table ip skiff-n1\ndelete table ip skiff-n1\n");
    }

    #[test]
    fn element_fields_are_laid_out_as_the_kernels_registers() {
        let key = Fields(vec![
            Field::Addr("10.43.0.10".parse().unwrap()),
            Field::Proto(Proto::Udp),
            Field::Port(53),
            Field::Slot(2),
        ]);
        let mut expected = vec![10, 43, 0, 10, 17, 0, 0, 0, 0, 53, 0, 0];
        expected.extend_from_slice(&2u32.to_ne_bytes());
        assert_eq!(key.bytes(), expected);
        assert_eq!(key.to_string(), "10.43.0.10 . udp . 53 . 2");
    }

    #[test]
    fn table_names_are_safe_identifiers() {
        assert_eq!(table_name("t123x4"), "skiff-t123x4");
        assert_eq!(table_name("Node.Example.com"), "skiff-node_example_com");
        assert_eq!(table_name(&"a".repeat(300)).len(), 64);
    }
}
