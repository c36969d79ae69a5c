//! Cluster DNS on the node (CoreDNS' job, inside the agent): a hickory-server on the bridge's
//! gateway address, port 53 (UDP and TCP), answering `cluster.local` from watches of Services and
//! EndpointSlices and forwarding other names to the node's resolvers (`--resolv-conf`).
//!
//! Pods reach it as the `kube-dns` Service in `kube-system` (the 10th address of the service CIDR,
//! `--cluster-dns`): the proxy sends that Service's port 53 to this node's server, so every node
//! answers its own pods (see docs/architecture.md). `records` builds the zone (pure), `resolv` a
//! pod's resolver settings (pure), `server` answers queries.

pub mod guest;
pub mod records;
pub mod resolv;
pub mod server;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use parking_lot::RwLock;
use tokio::task::JoinHandle;

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
    /// Listens on `addr` (the bridge gateway, port 53) and keeps the zone of `domain` from watches
    /// through `client`; names outside it go to the nameservers of `upstream_conf` (resolv.conf text).
    pub fn start(client: kube::Client, addr: SocketAddr, domain: &str, upstream_conf: &str) -> std::io::Result<Self> {
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
        let watch = tokio::spawn(run(client, Arc::clone(&zone), domain.to_string()));
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

/// One watch event of either kind.
enum Input {
    Services(Box<Result<Event<Service>, watcher::Error>>),
    Slices(Box<Result<Event<EndpointSlice>, watcher::Error>>),
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

fn service_of(slice: &EndpointSlice) -> Option<Key> {
    let ns = slice.metadata.namespace.clone().unwrap_or_default();
    crate::proxy::model::slice_service(slice).map(|s| (ns, s.to_string()))
}

/// What the watches have seen.
#[derive(Default)]
struct Cache {
    services: HashMap<Key, Service>,
    slices: HashMap<Key, EndpointSlice>,
    /// Service -> keys of its slices.
    by_service: HashMap<Key, HashSet<Key>>,
    dirty: HashSet<Key>,
}

impl Cache {
    fn slices_of(&self, key: &Key) -> Vec<&EndpointSlice> {
        self.by_service.get(key).into_iter().flatten().filter_map(|k| self.slices.get(k)).collect()
    }

    fn put_slice(&mut self, key: Key, slice: EndpointSlice) {
        self.remove_slice(&key);
        if let Some(service) = service_of(&slice) {
            self.by_service.entry(service.clone()).or_default().insert(key.clone());
            self.dirty.insert(service);
        }
        self.slices.insert(key, slice);
    }

    fn remove_slice(&mut self, key: &Key) {
        let Some(slice) = self.slices.remove(key) else { return };
        if let Some(service) = service_of(&slice) {
            if let Some(keys) = self.by_service.get_mut(&service) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_service.remove(&service);
                }
            }
            self.dirty.insert(service);
        }
    }
}

async fn run(client: kube::Client, zone: SharedZone, domain: String) {
    let services = watcher::watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|e| Input::Services(Box::new(e)));
    let slices = watcher::watcher(Api::<EndpointSlice>::all(client), watcher::Config::default())
        .default_backoff()
        .map(|e| Input::Slices(Box::new(e)));
    let mut inputs = futures::stream::select(services, slices).boxed();
    let mut cache = Cache::default();
    let (mut init_services, mut init_slices) = (None::<HashMap<Key, Service>>, None::<HashMap<Key, EndpointSlice>>);
    while let Some(first) = inputs.next().await {
        let mut batch = vec![first];
        crate::batch::take_ready(&mut batch, &mut inputs);
        for input in batch {
            match input {
                Input::Services(event) => match *event {
                    Ok(Event::Init) => init_services = Some(HashMap::new()),
                    Ok(Event::InitApply(s)) => {
                        init_services.get_or_insert_with(HashMap::new).insert(key_of(&s.metadata), s);
                    }
                    Ok(Event::InitDone) => {
                        let fresh = init_services.take().unwrap_or_default();
                        cache.dirty.extend(cache.services.keys().cloned());
                        cache.dirty.extend(fresh.keys().cloned());
                        cache.services = fresh;
                    }
                    Ok(Event::Apply(s)) => {
                        let key = key_of(&s.metadata);
                        cache.dirty.insert(key.clone());
                        cache.services.insert(key, s);
                    }
                    Ok(Event::Delete(s)) => {
                        let key = key_of(&s.metadata);
                        cache.services.remove(&key);
                        cache.dirty.insert(key);
                    }
                    Err(e) => tracing::warn!(error = %e, "cluster DNS: watching Services"),
                },
                Input::Slices(event) => match *event {
                    Ok(Event::Init) => init_slices = Some(HashMap::new()),
                    Ok(Event::InitApply(s)) => {
                        init_slices.get_or_insert_with(HashMap::new).insert(key_of(&s.metadata), s);
                    }
                    Ok(Event::InitDone) => {
                        let fresh = init_slices.take().unwrap_or_default();
                        let old: Vec<Key> = cache.slices.keys().cloned().collect();
                        for key in old {
                            cache.remove_slice(&key);
                        }
                        for (key, slice) in fresh {
                            cache.put_slice(key, slice);
                        }
                    }
                    Ok(Event::Apply(s)) => cache.put_slice(key_of(&s.metadata), s),
                    Ok(Event::Delete(s)) => cache.remove_slice(&key_of(&s.metadata)),
                    Err(e) => tracing::warn!(error = %e, "cluster DNS: watching EndpointSlices"),
                },
            }
        }
        let dirty: Vec<Key> = cache.dirty.drain().collect();
        let updates: Vec<(Key, Vec<records::Entry>)> = dirty
            .into_iter()
            .map(|key| {
                let entries = match cache.services.get(&key) {
                    Some(svc) => records::service_records(&domain, svc, &cache.slices_of(&key)),
                    None => Vec::new(),
                };
                (key, entries)
            })
            .collect();
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
