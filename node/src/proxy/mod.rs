//! The service proxy (kube-proxy's job) in nftables: watches Services and EndpointSlices and
//! keeps a table of this agent's own (`ip skiff-<node>`) sending ClusterIP, NodePort and
//! LoadBalancer traffic to ready endpoints.
//!
//! `model` computes what one Service needs (pure), `nft` turns that into nft commands and set
//! elements (pure), `runner` applies them (`nft -f -`, or a `netlink` batch when only set
//! elements change). This module holds the watches and what the table holds: after the
//! first list of both kinds the table is replaced as a whole (one transaction); after that a
//! change of a Service or EndpointSlice rewrites only what differs for that Service. The table
//! is deleted when the agent stops.

pub mod model;
pub mod netlink;
pub mod nft;
pub mod runner;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::{AgentConfig, ProxyMode};
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
    pub fn start(client: kube::Client, config: &AgentConfig, dns: Option<std::net::SocketAddr>) -> Option<Self> {
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
        };
        let state = State {
            table: table.clone(),
            node_name: config.node_name.clone(),
            bridge: config.bridge.clone(),
            nft: nft.clone(),
            services: HashMap::new(),
            slices: HashMap::new(),
            by_service: HashMap::new(),
            programmed: HashMap::new(),
            dirty: HashSet::new(),
            listed: (false, false),
            needs_full: true,
            localnet: false,
            dns,
        };
        let task = tokio::spawn(run(client, state));
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

/// `namespace/name`.
type Key = (String, String);

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// The Service a slice belongs to.
fn service_of(slice: &EndpointSlice) -> Option<Key> {
    let ns = slice.metadata.namespace.clone().unwrap_or_default();
    model::slice_service(slice).map(|s| (ns, s.to_string()))
}

/// What the proxy knows and what its table holds.
struct State {
    table: Table,
    node_name: String,
    bridge: String,
    nft: Nft,
    services: HashMap<Key, Service>,
    slices: HashMap<Key, EndpointSlice>,
    /// Service -> names of its slices.
    by_service: HashMap<Key, BTreeSet<String>>,
    /// What the table holds per Service.
    programmed: HashMap<Key, Plan>,
    /// Services whose rules may have changed since the last sync.
    dirty: HashSet<Key>,
    /// Whether the first list of Services and of EndpointSlices is in.
    listed: (bool, bool),
    /// The next sync rewrites the whole table.
    needs_full: bool,
    /// `route_localnet` is on for the bridge (NodePorts on 127.0.0.1 reach pods).
    localnet: bool,
    /// This node's cluster DNS server: the only endpoint of `kube-system/kube-dns` here.
    dns: Option<std::net::SocketAddr>,
}

/// One watch event of either kind (boxed: the two differ much in size).
enum Input {
    Services(Box<Result<Event<Service>, watcher::Error>>),
    Slices(Box<Result<Event<EndpointSlice>, watcher::Error>>),
}

async fn run(client: kube::Client, mut state: State) {
    let services = watcher::watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|e| Input::Services(Box::new(e)));
    let slices = watcher::watcher(Api::<EndpointSlice>::all(client), watcher::Config::default())
        .default_backoff()
        .map(|e| Input::Slices(Box::new(e)));
    let mut inputs = futures::stream::select(services, slices).boxed();
    let (mut init_services, mut init_slices) = (None::<HashMap<Key, Service>>, None::<HashMap<Key, EndpointSlice>>);
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let first = tokio::select! {
            input = inputs.next() => match input {
                Some(input) => Some(input),
                None => return,
            },
            () = sleep_until(retry_at) => None,
        };
        retry_at = None;
        // Take everything already waiting, so a burst of changes is one transaction.
        let mut batch: Vec<Input> = first.into_iter().collect();
        crate::batch::take_ready(&mut batch, &mut inputs);
        for input in batch {
            match input {
                Input::Services(event) => match *event {
                    Ok(event) => state.on_service(event, &mut init_services),
                    Err(e) => tracing::warn!(error = %e, "watching Services"),
                },
                Input::Slices(event) => match *event {
                    Ok(event) => state.on_slice(event, &mut init_slices),
                    Err(e) => tracing::warn!(error = %e, "watching EndpointSlices"),
                },
            }
        }
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
    fn on_service(&mut self, event: Event<Service>, init: &mut Option<HashMap<Key, Service>>) {
        match event {
            Event::Init => *init = Some(HashMap::new()),
            Event::InitApply(svc) => {
                init.get_or_insert_with(HashMap::new).insert(key_of(&svc.metadata), svc);
            }
            Event::InitDone => {
                let fresh = init.take().unwrap_or_default();
                self.dirty.extend(self.services.keys().cloned());
                self.dirty.extend(fresh.keys().cloned());
                self.services = fresh;
                self.listed.0 = true;
            }
            Event::Apply(svc) => {
                let key = key_of(&svc.metadata);
                self.dirty.insert(key.clone());
                self.services.insert(key, svc);
            }
            Event::Delete(svc) => {
                let key = key_of(&svc.metadata);
                self.services.remove(&key);
                self.dirty.insert(key);
            }
        }
    }

    fn on_slice(&mut self, event: Event<EndpointSlice>, init: &mut Option<HashMap<Key, EndpointSlice>>) {
        match event {
            Event::Init => *init = Some(HashMap::new()),
            Event::InitApply(slice) => {
                init.get_or_insert_with(HashMap::new).insert(key_of(&slice.metadata), slice);
            }
            Event::InitDone => {
                let fresh = init.take().unwrap_or_default();
                let old: Vec<Key> = self.slices.keys().cloned().collect();
                for key in old {
                    self.remove_slice(&key);
                }
                for (key, slice) in fresh {
                    self.put_slice(key, slice);
                }
                self.listed.1 = true;
            }
            Event::Apply(slice) => {
                let key = key_of(&slice.metadata);
                self.remove_slice(&key);
                self.put_slice(key, slice);
            }
            Event::Delete(slice) => self.remove_slice(&key_of(&slice.metadata)),
        }
    }

    fn put_slice(&mut self, key: Key, slice: EndpointSlice) {
        if let Some(service) = service_of(&slice) {
            self.by_service.entry(service.clone()).or_default().insert(key.1.clone());
            self.dirty.insert(service);
        }
        self.slices.insert(key, slice);
    }

    fn remove_slice(&mut self, key: &Key) {
        let Some(slice) = self.slices.remove(key) else { return };
        if let Some(service) = service_of(&slice) {
            if let Some(names) = self.by_service.get_mut(&service) {
                names.remove(&key.1);
                if names.is_empty() {
                    self.by_service.remove(&service);
                }
            }
            self.dirty.insert(service);
        }
    }

    /// The plan of one Service as the caches say now.
    fn plan(&self, key: &Key) -> Plan {
        let Some(service) = self.services.get(key) else { return Plan::default() };
        if let Some(dns) = self.dns.filter(|_| (key.0.as_str(), key.1.as_str()) == crate::dns::SERVICE) {
            let local = model::node_local_slice(service, dns, &self.node_name);
            return nft::plan(&self.table, &model::desired(service, &[&local], &self.node_name));
        }
        let slices: Vec<&EndpointSlice> = self
            .by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.slices.get(&(key.0.clone(), name.clone())))
            .collect();
        nft::plan(&self.table, &model::desired(service, &slices, &self.node_name))
    }

    /// Brings the table up to date; false when nft refused (retried later as a full sync).
    async fn sync(&mut self) -> bool {
        if !(self.listed.0 && self.listed.1) {
            return true;
        }
        self.route_localnet();
        let started = Instant::now();
        if self.needs_full {
            let plans: HashMap<Key, Plan> =
                self.services.keys().map(|k| (k.clone(), self.plan(k))).filter(|(_, p)| !p.is_empty()).collect();
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
