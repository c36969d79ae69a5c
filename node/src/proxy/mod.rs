//! The service proxy (kube-proxy's job) in nftables: follows Services and EndpointSlices (the
//! node's shared `service_cache`) and keeps a table of this agent's own (`ip skiff-<node>`)
//! sending ClusterIP, NodePort and LoadBalancer traffic to ready endpoints.
//!
//! `model` computes what one Service needs (pure), `nft` turns that into nft commands and set
//! elements (pure), `runner` applies them (`nft -f -`, or a `netlink` batch when only set
//! elements change). This module holds what the table holds: after the
//! first list of both kinds the table is replaced as a whole (one transaction); after that a
//! change of a Service or EndpointSlice rewrites only what differs for that Service. The table
//! is deleted when the agent stops.

pub mod model;
pub mod netlink;
pub mod nft;
pub mod runner;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::{AgentConfig, ProxyMode};
use crate::service_cache::{Key, ServiceCache, SharedStore, Subscription};
use nft::{Plan, Table};
use runner::Nft;

/// How long after a refused transaction the whole table is written again.
const RETRY: Duration = Duration::from_secs(2);

/// A running proxy; [`Proxy::stop`] removes its table.
pub struct Proxy {
    task: JoinHandle<()>,
    nft: Nft,
    table: Table,
}

impl Proxy {
    /// Starts the proxy unless it is off or `nft` is not installed (said once in the log).
    /// `dns`: this node's cluster DNS server, where the `kube-dns` Service's ports lead.
    pub fn start(cache: &ServiceCache, config: &AgentConfig, dns: Option<std::net::SocketAddr>) -> Option<Self> {
        if config.proxy == ProxyMode::Off {
            tracing::info!("service proxy off (--proxy off): no service rules on this node");
            return None;
        }
        let Some(nft) = Nft::find() else {
            tracing::warn!("nft is not installed: no service rules on this node (apt-get install nftables)");
            return None;
        };
        let table = Table {
            name: nft::table_name(&config.node_name),
            comment: format!("skiff service proxy of node {} (pid {})", config.node_name, std::process::id()),
            pod_cidr: config.pod_cidr.clone(),
            egress: config
                .cluster_cidr
                .as_ref()
                .map(|c| nft::Egress { cluster_cidr: c.clone(), bridge: config.bridge.clone() }),
        };
        let state = State {
            table: table.clone(),
            node_name: config.node_name.clone(),
            bridge: config.bridge.clone(),
            nft: nft.clone(),
            store: cache.store(),
            programmed: HashMap::new(),
            dirty: HashSet::new(),
            needs_full: true,
            localnet: false,
            dns,
        };
        let task = tokio::spawn(run(cache.subscribe(), state));
        tracing::info!(table = %table.name, "service proxy on nftables");
        Some(Proxy { task, nft, table })
    }

    /// Stops watching and deletes the table.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        match self.nft.apply(&nft::delete(&self.table)).await {
            Ok(()) => tracing::info!(table = %self.table.name, "service rules removed"),
            Err(e) => tracing::warn!(error = %e, "removing the service rules"),
        }
    }
}

/// What the proxy knows and what its table holds.
struct State {
    table: Table,
    node_name: String,
    bridge: String,
    nft: Nft,
    /// The node's Services and EndpointSlices.
    store: SharedStore,
    /// What the table holds per Service.
    programmed: HashMap<Key, Plan>,
    /// Services whose rules may have changed since the last sync.
    dirty: HashSet<Key>,
    /// The next sync rewrites the whole table.
    needs_full: bool,
    /// `route_localnet` is on for the bridge (NodePorts on 127.0.0.1 reach pods).
    localnet: bool,
    /// This node's cluster DNS server: the only endpoint of `kube-system/kube-dns` here.
    dns: Option<std::net::SocketAddr>,
}

async fn run(mut changes: Subscription, mut state: State) {
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            changed = changes.changed() => match changed {
                Some(keys) => state.dirty.extend(keys),
                None => return,
            },
            () = sleep_until(retry_at) => {}
        }
        retry_at = None;
        if !state.sync().await {
            retry_at = Some(tokio::time::Instant::now() + RETRY);
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => futures::future::pending().await,
    }
}

impl State {
    /// The plan of one Service as the caches say now.
    fn plan(&self, key: &Key) -> Plan {
        let store = self.store.read();
        let Some(service) = store.service(key) else { return Plan::default() };
        if let Some(dns) = self.dns.filter(|_| (key.0.as_str(), key.1.as_str()) == crate::dns::SERVICE) {
            let local = model::node_local_slice(service, dns, &self.node_name);
            return nft::plan(&self.table, &model::desired(service, &[&local], &self.node_name));
        }
        nft::plan(&self.table, &model::desired(service, &store.slices_of(key), &self.node_name))
    }

    /// Brings the table up to date; false when nft refused (retried later as a full sync).
    async fn sync(&mut self) -> bool {
        if !self.store.read().synced() {
            return true;
        }
        self.route_localnet();
        let started = Instant::now();
        if self.needs_full {
            let keys: Vec<Key> = self.store.read().service_keys().cloned().collect();
            let plans: HashMap<Key, Plan> =
                keys.into_iter().map(|k| (k.clone(), self.plan(&k))).filter(|(_, p)| !p.is_empty()).collect();
            let script = nft::full(&self.table, plans.values());
            let span = tracing::info_span!("proxy_full_sync", table = %self.table.name, services = plans.len());
            return match self.nft.apply(&script).instrument(span.clone()).await {
                Ok(()) => {
                    let _enter = span.enter();
                    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "service rules written");
                    self.programmed = plans;
                    self.needs_full = false;
                    self.dirty.clear();
                    true
                }
                Err(e) => {
                    let _enter = span.enter();
                    tracing::warn!(error = %e, "writing the service rules; retrying");
                    false
                }
            };
        }
        if self.dirty.is_empty() {
            return true;
        }
        let dirty: Vec<Key> = self.dirty.drain().collect();
        let empty = Plan::default();
        let next: Vec<(Key, Plan)> = dirty.into_iter().map(|key| (key.clone(), self.plan(&key))).collect();
        let span = tracing::debug_span!("proxy_sync", table = %self.table.name, services = next.len());
        let pairs = next.iter().map(|(key, plan)| (self.programmed.get(key).unwrap_or(&empty), plan));
        let applied = runner::apply_update(&self.nft, &self.table, pairs).instrument(span.clone()).await;
        let _enter = span.enter();
        match applied {
            Ok(path) => {
                tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, ?path, "service rules updated");
                for (key, plan) in next {
                    if plan.is_empty() {
                        self.programmed.remove(&key);
                    } else {
                        self.programmed.insert(key, plan);
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "updating the service rules; rewriting the table");
                self.needs_full = true;
                false
            }
        }
    }

    /// NodePorts on 127.0.0.1 (the default single node's address) are DNATed to pods on the
    /// bridge with a loopback source, which the kernel allows only with `route_localnet` on the
    /// outgoing interface (as kube-proxy's iptables mode sets it); masquerading then gives the
    /// packet the bridge's address.
    fn route_localnet(&mut self) {
        if self.localnet {
            return;
        }
        let path = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", self.bridge);
        if std::path::Path::new(&path).exists() {
            match std::fs::write(&path, "1") {
                Ok(()) => self.localnet = true,
                Err(e) => tracing::warn!(setting = %path, error = %e, "cannot enable NodePorts on 127.0.0.1"),
            }
        }
    }
}
