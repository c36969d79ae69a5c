//! Routes between the nodes' pod networks, as flannel's host-gw backend keeps them: for every
//! other Node with a pod CIDR and an InternalIP that is not this host's, a kernel route
//! `<its pod CIDR> via <its InternalIP>`, so pods (and the host) reach pods on other nodes by pod
//! IP without encapsulation. The nodes must share a link (one L2 segment), as host-gw requires.
//! Driven by a watch of Nodes: a node that joins gets its route, a deleted node's route goes.
//!
//! The routes carry [`ROUTE_PROTOCOL`] so that they are told apart from everyone else's: at start
//! the agent adopts the ones inside the cluster CIDR (a previous run's), and removes them all
//! when it tears down. One routing agent per network namespace.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::config::AgentConfig;

/// The routing protocol number of skiff's routes (unassigned in iproute2's `rt_protos`).
pub const ROUTE_PROTOCOL: &str = "157";

/// Routes as destination -> gateway.
type Table = BTreeMap<Ipv4Net, Ipv4Addr>;

/// What the kernel holds of this agent's routes, and the routes it refused (said once each).
#[derive(Default)]
struct Kept {
    installed: Table,
    refused: Table,
}

/// The route keeper; [`NodeRoutes::shutdown`] stops it (and removes its routes on a teardown).
pub struct NodeRoutes {
    task: JoinHandle<()>,
    kept: Arc<Mutex<Kept>>,
}

impl NodeRoutes {
    /// Starts following the Nodes.
    pub fn start(client: kube::Client, config: &AgentConfig) -> Self {
        let kept = Arc::new(Mutex::new(Kept::default()));
        let own_cidr = config.pod_cidr.parse::<Ipv4Net>().ok().map(|c| c.trunc());
        let cluster = config.cluster_cidr.as_deref().and_then(|c| c.parse::<Ipv4Net>().ok());
        let (node_name, state) = (config.node_name.clone(), Arc::clone(&kept));
        let task = tokio::spawn(async move {
            state.lock().await.installed = adopt(cluster).await;
            let (store, writer) = reflector::store::<Node>();
            let events =
                watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff().reflect(writer);
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                if let Err(e) = event {
                    tracing::debug!(error = %e, "watching nodes for routes");
                    continue;
                }
                let nodes = store.state();
                let want = desired(nodes.iter().map(|n| n.as_ref()), &node_name, own_cidr, is_local);
                sync(&mut *state.lock().await, &want).await;
            }
        });
        Self { task, kept }
    }

    /// Stops following the Nodes; with `remove`, deletes every route it installed.
    pub async fn shutdown(self, remove: bool) {
        self.task.abort();
        if remove {
            sync(&mut *self.kept.lock().await, &Table::new()).await;
        }
    }
}

/// The routes the other nodes need: their pod CIDR via their InternalIP, except for nodes on
/// this host (a loopback or local address: their bridges are connected routes here) and for a
/// CIDR that overlaps this node's own.
pub fn desired<'a>(
    nodes: impl Iterator<Item = &'a Node>,
    own_name: &str,
    own_cidr: Option<Ipv4Net>,
    local: impl Fn(IpAddr) -> bool,
) -> Table {
    let mut want = Table::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(own_name) {
            continue;
        }
        let Some(cidr) = crate::pod_cidr::of(node) else { continue };
        if own_cidr.is_some_and(|own| own.contains(&cidr) || cidr.contains(&own)) {
            continue;
        }
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        let internal = addresses
            .into_iter()
            .flatten()
            .find(|a| a.type_ == "InternalIP" && a.address.parse::<Ipv4Addr>().is_ok())
            .and_then(|a| a.address.parse::<Ipv4Addr>().ok());
        let Some(gateway) = internal else { continue };
        if gateway.is_loopback() || gateway.is_unspecified() || local(IpAddr::V4(gateway)) {
            continue;
        }
        want.insert(cidr, gateway);
    }
    want
}

/// Whether `ip` is one of this host's addresses (a socket can be bound to it).
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Brings the kernel's routes from what `kept` installed to `want`, keeping what worked. A route the
/// kernel refuses (a gateway not on a shared link) is tried again on the next change, and warned
/// about only once.
async fn sync(kept: &mut Kept, want: &Table) {
    kept.refused.retain(|cidr, gateway| want.get(cidr) == Some(gateway));
    let stale: Vec<Ipv4Net> = kept.installed.keys().filter(|c| !want.contains_key(c)).copied().collect();
    for cidr in stale {
        match ip(&["-4", "route", "del", &cidr.to_string(), "proto", ROUTE_PROTOCOL]).await {
            Ok(()) => tracing::info!(%cidr, "removed the route to a node that left"),
            Err(e) => tracing::debug!(%cidr, error = %e, "removing a route (gone already?)"),
        }
        kept.installed.remove(&cidr);
    }
    for (cidr, gateway) in want {
        if kept.installed.get(cidr) == Some(gateway) {
            continue;
        }
        let (dst, via) = (cidr.to_string(), gateway.to_string());
        match ip(&["-4", "route", "replace", &dst, "via", &via, "proto", ROUTE_PROTOCOL]).await {
            Ok(()) => {
                tracing::info!(%cidr, %gateway, "routing a node's pod network");
                kept.installed.insert(*cidr, *gateway);
                kept.refused.remove(cidr);
            }
            Err(e) if kept.refused.insert(*cidr, *gateway).is_none() => {
                tracing::warn!(%cidr, %gateway, error = %e, "cannot route a node's pod network (not on a shared link?)")
            }
            Err(e) => tracing::debug!(%cidr, %gateway, error = %e, "cannot route a node's pod network, still"),
        }
    }
}

/// The routes a previous run left (skiff's protocol, inside the cluster CIDR).
async fn adopt(cluster: Option<Ipv4Net>) -> Table {
    let Some(cluster) = cluster else { return Table::new() };
    let out = tokio::process::Command::new("ip").args(["-4", "route", "show", "proto", ROUTE_PROTOCOL]).output().await;
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    parse_routes(&text).into_iter().filter(|(dst, _)| cluster.contains(dst)).collect()
}

/// `ip route show` lines of the form `<dst> via <gateway> ...`.
fn parse_routes(text: &str) -> Table {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let dst: Ipv4Net = words.next()?.parse().ok()?;
            (words.next()? == "via").then_some(())?;
            Some((dst, words.next()?.parse().ok()?))
        })
        .collect()
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new("ip").args(args).output().await.map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: &str, ip: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]},
        }))
        .unwrap()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn every_other_node_by_its_internal_ip() {
        let nodes = [
            node("a", "10.42.0.0/24", "192.0.2.10"),
            node("b", "10.42.1.0/24", "192.0.2.11"),
            node("c", "10.42.2.0/24", "192.0.2.12"),
        ];
        let want = desired(nodes.iter(), "a", Some(net("10.42.0.0/24")), |_| false);
        let expected: Table = [
            (net("10.42.1.0/24"), "192.0.2.11".parse().unwrap()),
            (net("10.42.2.0/24"), "192.0.2.12".parse().unwrap()),
        ]
        .into();
        assert_eq!(want, expected);
    }

    #[test]
    fn nodes_on_this_host_or_without_a_network_get_no_route() {
        let mut bare = node("bare", "10.42.5.0/24", "192.0.2.15");
        bare.spec = None;
        let nodes = [
            node("loop", "10.42.1.0/24", "127.0.0.1"),
            node("here", "10.42.2.0/24", "192.0.2.2"),
            node("overlap", "10.42.0.128/25", "192.0.2.13"),
            node("v6", "10.42.4.0/24", "fd00::4"),
            bare,
        ];
        let local = |ip: IpAddr| ip == "192.0.2.2".parse::<IpAddr>().unwrap();
        assert!(desired(nodes.iter(), "a", Some(net("10.42.0.0/24")), local).is_empty());
    }

    #[test]
    fn reads_ip_route_show() {
        let text = "10.42.1.0/24 via 192.0.2.11 dev eth0 proto 157 \n10.42.2.0/24 dev skiff0 proto 157 scope link\n";
        let routes = parse_routes(text);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[&net("10.42.1.0/24")], "192.0.2.11".parse::<Ipv4Addr>().unwrap());
    }
}
