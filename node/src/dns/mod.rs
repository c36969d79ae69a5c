//! Cluster DNS on the node (CoreDNS' job, inside the agent): a hickory-server on the bridge's
//! gateway address, port 53 (UDP and TCP), answering `cluster.local` from the node's Services and
//! EndpointSlices (its shared `service_cache`) and forwarding other names to the node's resolvers (`--resolv-conf`).
//!
//! Pods reach it as the `kube-dns` Service in `kube-system` (the 10th address of the service CIDR,
//! `--cluster-dns`): the proxy sends that Service's port 53 to this node's server, so every node
//! answers its own pods (see docs/architecture.md). `records` builds the zone (pure), `resolv` a
//! pod's resolver settings (pure), `server` answers queries.

pub mod guest;
pub mod records;
pub mod resolv;
pub mod server;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::task::JoinHandle;

use crate::service_cache::{ServiceCache, Subscription};
use records::{Key, Zone};
use server::SharedZone;

/// The namespace and name of the cluster DNS Service.
pub const SERVICE: (&str, &str) = ("kube-system", "kube-dns");
/// The DNS port.
pub const PORT: u16 = 53;

/// The conventional cluster DNS address: the 10th of the service CIDR (10.43.0.10 for 10.43.0.0/16).
pub fn default_cluster_dns(service_cidr: &str) -> Option<IpAddr> {
    let net: ipnet::Ipv4Net = service_cidr.parse().ok()?;
    let ip = u32::from(net.network()).checked_add(10)?;
    net.contains(&std::net::Ipv4Addr::from(ip)).then(|| IpAddr::V4(ip.into()))
}

/// The running cluster DNS of a node.
pub struct ClusterDns {
    /// Where it answers.
    pub addr: SocketAddr,
    zone: SharedZone,
    watch: JoinHandle<()>,
    server: JoinHandle<()>,
    stop: tokio_util::sync::CancellationToken,
}

impl ClusterDns {
    /// Listens on `addr` (the bridge gateway, port 53) and keeps the zone of `domain` from the
    /// node's `cache`; names outside it go to the nameservers of `upstream_conf` (resolv.conf text).
    pub fn start(cache: &ServiceCache, addr: SocketAddr, domain: &str, upstream_conf: &str) -> std::io::Result<Self> {
        let zone: SharedZone = Arc::new(RwLock::new(Zone::new(domain)));
        let (udp, tcp) = server::bind(addr)?;
        let addr = udp.local_addr()?;
        let handler = server::Handler::new(Arc::clone(&zone), server::upstream(upstream_conf));
        let mut future = server::serve(handler, udp, tcp);
        let stop = future.shutdown_token().clone();
        let server = tokio::spawn(async move {
            if let Err(e) = future.block_until_done().await {
                tracing::warn!(error = %e, "cluster DNS server stopped");
            }
        });
        let watch = tokio::spawn(run(cache.subscribe(), Arc::clone(&zone), domain.to_string()));
        tracing::info!(%addr, domain, "cluster DNS serving");
        Ok(ClusterDns { addr, zone, watch, server, stop })
    }

    /// The zone it answers from.
    pub fn zone(&self) -> SharedZone {
        Arc::clone(&self.zone)
    }

    /// Stops watching and serving.
    pub async fn stop(self) {
        self.watch.abort();
        self.stop.cancel();
        let _ = self.watch.await;
        let _ = self.server.await;
    }
}

async fn run(mut changes: Subscription, zone: SharedZone, domain: String) {
    while let Some(dirty) = changes.changed().await {
        let updates: Vec<(Key, Vec<records::Entry>)> = {
            let store = changes.store.read();
            dirty
                .into_iter()
                .map(|key| {
                    let entries = match store.service(&key) {
                        Some(svc) => records::service_records(&domain, svc, &store.slices_of(&key)),
                        None => Vec::new(),
                    };
                    (key, entries)
                })
                .collect()
        };
        if updates.is_empty() {
            continue;
        }
        let span = tracing::debug_span!("dns_zone_update", services = updates.len());
        let _enter = span.enter();
        let mut zone = zone.write();
        for (key, entries) in updates {
            zone.set_service(&key, entries);
        }
        tracing::debug!(names = zone.len(), "cluster DNS zone updated");
    }
}
