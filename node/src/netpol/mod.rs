//! NetworkPolicy enforcement (what Calico, Cilium or kube-router do) in nftables: watches
//! NetworkPolicies, Pods and Namespaces and keeps a table of this agent's own
//! (`ip skiff-np-<node>`) letting into (and out of) this node's policed pods only what their
//! policies allow.
//!
//! `model` computes per policed pod what it allows (pure), `nft` turns that into nft commands
//! (pure), the proxy's `runner` applies them. This module holds the watches and what the table
//! holds: after the first list of all three kinds the table is written as a whole (replacing a
//! previous run's of the same node); after that a batch of changes rewrites only the pods whose
//! rules differ. The table is deleted when the agent stops.

pub mod model;
pub mod nft;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::{AgentConfig, ProxyMode};
use crate::proxy::runner::Nft;
use nft::Plan;

/// How long after a refused transaction the whole table is written again.
const RETRY: Duration = Duration::from_secs(2);

/// Running policy enforcement; [`NetworkPolicies::stop`] removes its table.
pub struct NetworkPolicies {
    task: JoinHandle<()>,
    nft: Nft,
    table: String,
}

impl NetworkPolicies {
    /// Starts enforcing unless it is off (`--network-policy=false`, or the proxy is off) or `nft`
    /// is not installed (said once in the log).
    pub fn start(client: kube::Client, config: &AgentConfig) -> Option<Self> {
        if !config.network_policy || config.proxy == ProxyMode::Off {
            tracing::info!("network policy off: no policy rules on this node");
            return None;
        }
        let Some(nft) = Nft::find() else {
            tracing::warn!("nft is not installed: NetworkPolicies are not enforced on this node");
            return None;
        };
        let table = nft::table_name(&config.node_name);
        let state = State {
            table: table.clone(),
            comment: format!("skiff network policy of node {} (pid {})", config.node_name, std::process::id()),
            node_name: config.node_name.clone(),
            nft: nft.clone(),
            policies: Cache::default(),
            pods: Cache::default(),
            namespaces: Cache::default(),
            programmed: BTreeMap::new(),
            needs_full: true,
            changed: false,
        };
        let task = tokio::spawn(run(client, state));
        tracing::info!(table = %table, "network policy on nftables");
        Some(NetworkPolicies { task, nft, table })
    }

    /// Stops watching and deletes the table.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        match self.nft.apply(&nft::delete(&self.table)).await {
            Ok(()) => tracing::info!(table = %self.table, "network policy rules removed"),
            Err(e) => tracing::warn!(error = %e, "removing the network policy rules"),
        }
    }
}

/// `namespace/name`.
type Key = (String, String);

/// The objects of one kind as the watch says.
struct Cache<K> {
    items: HashMap<Key, K>,
    init: Option<HashMap<Key, K>>,
    listed: bool,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache { items: HashMap::new(), init: None, listed: false }
    }
}

impl<K: Resource> Cache<K> {
    fn key(obj: &K) -> Key {
        let meta = obj.meta();
        (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
    }

    /// Takes one event in; true when what policies see may have changed.
    fn on(&mut self, event: Event<K>) -> bool {
        match event {
            Event::Init => {
                self.init = Some(HashMap::new());
                false
            }
            Event::InitApply(obj) => {
                self.init.get_or_insert_with(HashMap::new).insert(Self::key(&obj), obj);
                false
            }
            Event::InitDone => {
                self.items = self.init.take().unwrap_or_default();
                self.listed = true;
                true
            }
            Event::Apply(obj) => {
                self.items.insert(Self::key(&obj), obj);
                true
            }
            Event::Delete(obj) => {
                self.items.remove(&Self::key(&obj));
                true
            }
        }
    }

    fn all(&self) -> Vec<&K> {
        self.items.values().collect()
    }
}

/// What enforcement knows and what its table holds.
struct State {
    table: String,
    comment: String,
    node_name: String,
    nft: Nft,
    policies: Cache<NetworkPolicy>,
    pods: Cache<Pod>,
    namespaces: Cache<Namespace>,
    /// What the table holds per policed pod.
    programmed: BTreeMap<Ipv4Addr, Plan>,
    /// The next sync rewrites the whole table.
    needs_full: bool,
    /// Something changed since the last sync.
    changed: bool,
}

/// One watch event of any kind (boxed: they differ much in size).
enum Input {
    Policy(Box<Result<Event<NetworkPolicy>, watcher::Error>>),
    Pod(Box<Result<Event<Pod>, watcher::Error>>),
    Namespace(Box<Result<Event<Namespace>, watcher::Error>>),
}

async fn run(client: kube::Client, mut state: State) {
    let config = watcher::Config::default;
    let policies = watcher::watcher(Api::<NetworkPolicy>::all(client.clone()), config())
        .default_backoff()
        .map(|e| Input::Policy(Box::new(e)));
    let pods =
        watcher::watcher(Api::<Pod>::all(client.clone()), config()).default_backoff().map(|e| Input::Pod(Box::new(e)));
    let namespaces = watcher::watcher(Api::<Namespace>::all(client), config())
        .default_backoff()
        .map(|e| Input::Namespace(Box::new(e)));
    let mut inputs = futures::stream::select(futures::stream::select(policies, pods), namespaces).boxed();
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
            let changed = match input {
                Input::Policy(event) => match *event {
                    Ok(event) => state.policies.on(event),
                    Err(e) => warn_watch("NetworkPolicies", &e),
                },
                Input::Pod(event) => match *event {
                    Ok(event) => state.pods.on(event),
                    Err(e) => warn_watch("Pods", &e),
                },
                Input::Namespace(event) => match *event {
                    Ok(event) => state.namespaces.on(event),
                    Err(e) => warn_watch("Namespaces", &e),
                },
            };
            state.changed |= changed;
        }
        if !state.sync().await {
            retry_at = Some(tokio::time::Instant::now() + RETRY);
        }
    }
}

fn warn_watch(kind: &str, e: &watcher::Error) -> bool {
    tracing::warn!(error = %e, "watching {kind}");
    false
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => futures::future::pending().await,
    }
}

impl State {
    /// Every policed pod's plan as the caches say now.
    fn plans(&self) -> BTreeMap<Ipv4Addr, Plan> {
        let rules = model::desired(&self.policies.all(), &self.pods.all(), &self.namespaces.all(), &self.node_name);
        rules.iter().map(|(ip, r)| (*ip, nft::plan(*ip, r))).collect()
    }

    /// Brings the table up to date; false when nft refused (retried later as a full sync).
    async fn sync(&mut self) -> bool {
        if !(self.policies.listed && self.pods.listed && self.namespaces.listed) {
            return true;
        }
        if !self.changed && !self.needs_full {
            return true;
        }
        let started = Instant::now();
        let plans = self.plans();
        let (script, full) = if self.needs_full {
            (nft::full(&self.table, &self.comment, plans.values()), true)
        } else {
            let empty = Plan::default();
            let mut script = String::new();
            let ips: std::collections::BTreeSet<&Ipv4Addr> = self.programmed.keys().chain(plans.keys()).collect();
            for ip in ips {
                let old = self.programmed.get(ip).unwrap_or(&empty);
                let new = plans.get(ip).unwrap_or(&empty);
                script.push_str(&nft::update(&self.table, old, new));
            }
            (script, false)
        };
        self.changed = false;
        if script.is_empty() {
            return true;
        }
        let span = tracing::info_span!("netpol_sync", table = %self.table, pods = plans.len(), full);
        let applied = self.nft.apply(&script).instrument(span.clone()).await;
        let _enter = span.enter();
        match applied {
            Ok(()) => {
                tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "network policy rules written");
                self.programmed = plans;
                self.needs_full = false;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing the network policy rules; rewriting the table");
                self.needs_full = true;
                false
            }
        }
    }
}
