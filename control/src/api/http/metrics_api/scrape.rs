//! Readings of every kubelet's `/stats/summary`, taken on demand and kept per node: the newest and the
//! one before it, at least [`MIN_WINDOW`] apart. A request reads anew when the newest is older than
//! that, so metrics are at most about a second old (metrics-server scrapes every 15 s); a node read for
//! the first time is read a second time after the window, so the first `kubectl top` already has usage.
//! Requests share one lock: kubelets are read once however many clients ask.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use serde::Deserialize;

use super::super::pod_logs::{decode, kubelet_endpoint, KubeletClient};
use super::usage::{usage, Point, Usage};
use crate::api::error::chain;
use crate::api::error::ApiResult;
use crate::api::registry::{ListQuery, Registry};

/// The least time between the two readings usage is computed from.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// How long one kubelet gets to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct SummaryIn {
    node: NodeIn,
    #[serde(default)]
    pods: Vec<PodIn>,
}

#[derive(Deserialize)]
struct NodeIn {
    cpu: Option<CpuIn>,
    memory: Option<MemoryIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CpuIn {
    time: Timestamp,
    usage_core_nano_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemoryIn {
    working_set_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodIn {
    pod_ref: PodRefIn,
    #[serde(default)]
    containers: Vec<ContainerIn>,
}

#[derive(Deserialize)]
struct PodRefIn {
    name: String,
    namespace: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerIn {
    name: String,
    start_time: Option<Timestamp>,
    cpu: Option<CpuIn>,
    memory: Option<MemoryIn>,
}

/// `(namespace, pod, container)`.
type ContainerKey = (String, String, String);

/// One reading of one node.
#[derive(Clone, Default)]
struct Reading {
    node: Option<Point>,
    containers: HashMap<ContainerKey, Point>,
}

fn point(cpu: Option<&CpuIn>, memory: Option<&MemoryIn>, start: Option<Timestamp>) -> Option<Point> {
    let cpu = cpu?;
    Some(Point {
        at: cpu.time,
        cpu_nanos: cpu.usage_core_nano_seconds?,
        start,
        memory: memory.and_then(|m| m.working_set_bytes)?,
    })
}

impl From<SummaryIn> for Reading {
    fn from(summary: SummaryIn) -> Self {
        let node = point(summary.node.cpu.as_ref(), summary.node.memory.as_ref(), None);
        let mut containers = HashMap::new();
        for pod in summary.pods {
            for c in pod.containers {
                if let Some(p) = point(c.cpu.as_ref(), c.memory.as_ref(), c.start_time) {
                    containers.insert((pod.pod_ref.namespace.clone(), pod.pod_ref.name.clone(), c.name), p);
                }
            }
        }
        Self { node, containers }
    }
}

/// A node's two kept readings.
struct Kept {
    prev: Option<Reading>,
    latest: Reading,
    read_at: Instant,
}

impl Kept {
    fn push(&mut self, reading: Reading) {
        self.prev = Some(std::mem::replace(&mut self.latest, reading));
        self.read_at = Instant::now();
    }
}

/// Usage of every node and container the kubelets reported twice.
#[derive(Default)]
pub struct Snapshot {
    pub nodes: HashMap<String, Usage>,
    /// `(namespace, pod)` -> containers (by name) and their usage.
    pub pods: HashMap<(String, String), Vec<(String, Usage)>>,
}

/// The kept readings of every node.
#[derive(Default)]
pub struct Scraper {
    kept: tokio::sync::Mutex<HashMap<String, Kept>>,
}

/// Reads one kubelet's summary.
async fn read(kubelet: &KubeletClient, node: &Node) -> Option<Reading> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let (host, port) = kubelet_endpoint(node).ok()?;
    let url =
        super::super::node_proxy::kubelet_url(&host, port, "stats/summary", Some("only_cpu_and_memory=true")).ok()?;
    let answer = kubelet.http.get(url).timeout(SCRAPE_TIMEOUT).send().await;
    let summary = match answer {
        Ok(a) if a.status().is_success() => a.json::<SummaryIn>().await,
        Ok(a) => {
            tracing::debug!(node = %name, status = %a.status(), "the kubelet refused its summary");
            return None;
        }
        Err(e) => {
            tracing::debug!(node = %name, error = %chain(&e), "reading a kubelet's summary");
            return None;
        }
    };
    match summary {
        Ok(s) => Some(s.into()),
        Err(e) => {
            tracing::debug!(node = %name, error = %chain(&e), "decoding a kubelet's summary");
            None
        }
    }
}

impl Scraper {
    /// Usage now: kubelets read again where the kept reading is older than [`MIN_WINDOW`].
    pub async fn snapshot(&self, registry: &Registry, kubelet: &KubeletClient) -> ApiResult<Snapshot> {
        let span = tracing::debug_span!("metrics_scrape");
        tracing::Instrument::instrument(self.refresh(registry, kubelet), span).await
    }

    async fn refresh(&self, registry: &Registry, kubelet: &KubeletClient) -> ApiResult<Snapshot> {
        let node_ri = registry.resource("", "Node")?;
        let listed = registry.list(node_ri, &ListQuery::default()).await?;
        let nodes: Vec<Node> = listed.items.into_iter().filter_map(|v| decode(v, "node").ok()).collect();
        let mut kept = self.kept.lock().await;
        let names: Vec<String> = nodes.iter().filter_map(|n| n.metadata.name.clone()).collect();
        kept.retain(|name, _| names.contains(name));
        let stale =
            |kept: &HashMap<String, Kept>, name: &str| kept.get(name).is_none_or(|k| k.read_at.elapsed() >= MIN_WINDOW);
        let due: Vec<&Node> =
            nodes.iter().filter(|n| stale(&kept, n.metadata.name.as_deref().unwrap_or_default())).collect();
        self.read_into(&mut kept, kubelet, &due).await;
        // A node read for the first time is read again once the window passed.
        let first: Vec<&Node> = nodes
            .iter()
            .filter(|n| kept.get(n.metadata.name.as_deref().unwrap_or_default()).is_some_and(|k| k.prev.is_none()))
            .collect();
        if !first.is_empty() {
            tokio::time::sleep(MIN_WINDOW).await;
            self.read_into(&mut kept, kubelet, &first).await;
        }
        Ok(snapshot(&kept))
    }

    async fn read_into(&self, kept: &mut HashMap<String, Kept>, kubelet: &KubeletClient, nodes: &[&Node]) {
        let readings = join_all(nodes.iter().map(|n| read(kubelet, n))).await;
        for (node, reading) in nodes.iter().zip(readings) {
            let (Some(name), Some(reading)) = (node.metadata.name.clone(), reading) else { continue };
            match kept.get_mut(&name) {
                Some(k) => k.push(reading),
                None => {
                    kept.insert(name, Kept { prev: None, latest: reading, read_at: Instant::now() });
                }
            }
        }
    }
}

fn snapshot(kept: &HashMap<String, Kept>) -> Snapshot {
    let mut out = Snapshot::default();
    for (name, k) in kept {
        let Some(prev) = &k.prev else { continue };
        if let Some(u) = k.latest.node.as_ref().and_then(|cur| usage(prev.node.as_ref(), cur)) {
            out.nodes.insert(name.clone(), u);
        }
        for ((ns, pod, container), cur) in &k.latest.containers {
            let key = (ns.clone(), pod.clone(), container.clone());
            if let Some(u) = usage(prev.containers.get(&key), cur) {
                out.pods.entry((ns.clone(), pod.clone())).or_default().push((container.clone(), u));
            }
        }
    }
    for containers in out.pods.values_mut() {
        containers.sort_by(|a, b| a.0.cmp(&b.0));
    }
    out
}
