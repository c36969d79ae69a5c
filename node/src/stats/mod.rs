//! The kubelet's `/stats/summary`: the node from `/proc` ([`host`]), Linux containers from their cgroups
//! ([`cgroup`]), in-process Wasm containers from the engine's own accounting
//! ([`skiff_engine::Usage`]: thread CPU time polling the guest, bytes of its linear memories and
//! tables). `usageNanoCores` is the rate between this reading and the one kept from at least
//! [`MIN_WINDOW`] before ([`Rates`]); absent on the first reading.

pub mod cgroup;
pub mod host;
pub mod summary;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::runtime::oci::LazyOci;
use crate::runtime::ContainerRuntime;
use summary::{ContainerStats, CpuStats, MemoryStats, NetworkStats, NodeStats, PodReference, PodStats, Summary};

/// The shortest interval a CPU rate is computed over.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);

/// A cumulative CPU counter read at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuSample {
    pub at: Timestamp,
    pub nanos: u64,
}

/// Nanocores used between `prev` and `cur`: `None` when there is no earlier reading, the time did not
/// advance, or the counter went back (a restarted container: a new counter).
pub fn nano_cores(prev: Option<CpuSample>, cur: CpuSample) -> Option<u64> {
    let prev = prev?;
    let elapsed = cur.at.as_nanosecond().checked_sub(prev.at.as_nanosecond()).filter(|e| *e > 0)?;
    let used = cur.nanos.checked_sub(prev.nanos)?;
    let rate = i128::from(used).checked_mul(1_000_000_000)?.checked_div(elapsed)?;
    u64::try_from(rate).ok()
}

/// The readings CPU rates are computed from, per counter: the last one at least [`MIN_WINDOW`] old.
#[derive(Default)]
pub struct Rates {
    kept: parking_lot::Mutex<HashMap<String, (CpuSample, CpuSample)>>,
}

impl Rates {
    /// The rate of counter `key` now at `cur` (and `cur` remembered).
    pub fn observe(&self, key: &str, cur: CpuSample) -> Option<u64> {
        let mut kept = self.kept.lock();
        let Some((base, latest)) = kept.get_mut(key) else {
            kept.insert(key.to_string(), (cur, cur));
            return None;
        };
        if cur.nanos < latest.nanos {
            // A new counter: start over from it.
            *base = cur;
            *latest = cur;
            return None;
        }
        let window = i128::try_from(MIN_WINDOW.as_nanos()).unwrap_or(i128::MAX);
        if cur.at.as_nanosecond().saturating_sub(latest.at.as_nanosecond()) >= window {
            *base = *latest;
        }
        *latest = cur;
        nano_cores(Some(*base), cur)
    }

    /// Forgets counters not in `live`.
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        self.kept.lock().retain(|k, _| live.contains(k));
    }
}

/// What `/stats/summary` is built from.
pub struct StatsSource {
    pub node_name: String,
    /// The node's data directory (its filesystem is the node's `fs`).
    pub data_dir: PathBuf,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub oci: Option<Arc<LazyOci>>,
    pub rates: Rates,
}

fn cpu(rates: &Rates, key: &str, at: Timestamp, nanos: u64) -> CpuStats {
    CpuStats {
        time: at.to_string(),
        usage_nano_cores: rates.observe(key, CpuSample { at, nanos }),
        usage_core_nano_seconds: nanos,
    }
}

/// One container's reading, before it is put in its pod.
struct Reading {
    pod_uid: String,
    stats: ContainerStats,
    started: Timestamp,
}

impl StatsSource {
    /// The node's summary now.
    pub async fn summary(&self) -> Summary {
        let span = tracing::debug_span!("stats_summary");
        tracing::Instrument::instrument(self.collect(), span).await
    }

    async fn collect(&self) -> Summary {
        let now = Timestamp::now();
        let time = now.to_string();
        let host = host::read();
        let mut live = std::collections::HashSet::new();
        live.insert("node".to_string());
        let interfaces = host.interfaces.clone();
        let node = NodeStats {
            node_name: self.node_name.clone(),
            start_time: host
                .boot_time
                .and_then(|b| Timestamp::from_second(b).ok())
                .map(|t| t.to_string())
                .unwrap_or_else(|| time.clone()),
            cpu: host.cpu_nanos.map(|n| cpu(&self.rates, "node", now, n)),
            memory: host.memory.map(|m| MemoryStats {
                time: time.clone(),
                available_bytes: Some(m.available),
                usage_bytes: m.usage(),
                working_set_bytes: m.working_set(),
                rss_bytes: None,
            }),
            network: Some(NetworkStats { time: time.clone(), default: interfaces.first().cloned(), interfaces }),
            fs: host::fs(&self.data_dir, &time),
        };
        let mut pods: BTreeMap<(String, String), Vec<Reading>> = BTreeMap::new();
        for guest in self.runtime.guests() {
            let key = format!("wasm/{}/{}/{}", guest.pod_uid, guest.container, guest.started);
            let stats = ContainerStats {
                name: guest.container.clone(),
                start_time: guest.started.to_string(),
                cpu: Some(cpu(&self.rates, &key, now, guest.usage.cpu_nanos())),
                memory: Some(MemoryStats {
                    time: time.clone(),
                    available_bytes: None,
                    usage_bytes: guest.usage.memory_bytes(),
                    working_set_bytes: guest.usage.memory_bytes(),
                    rss_bytes: Some(guest.usage.memory_bytes()),
                }),
            };
            live.insert(key);
            let reading = Reading { pod_uid: guest.pod_uid, stats, started: guest.started };
            pods.entry((guest.namespace, guest.pod)).or_default().push(reading);
        }
        for linux in self.linux_containers().await {
            let Some(sample) = cgroup::read(&linux.cgroup) else { continue };
            let key = format!("linux/{}", linux.id);
            let stats = ContainerStats {
                name: linux.container.clone(),
                start_time: linux.created.to_string(),
                cpu: Some(cpu(&self.rates, &key, now, sample.cpu_nanos)),
                memory: Some(MemoryStats {
                    time: time.clone(),
                    available_bytes: None,
                    usage_bytes: sample.usage,
                    working_set_bytes: sample.working_set,
                    rss_bytes: sample.rss,
                }),
            };
            live.insert(key);
            let (namespace, pod) = linux.pod.split_once('/').unwrap_or(("", linux.pod.as_str()));
            let reading = Reading { pod_uid: linux.pod_uid.clone(), stats, started: linux.created };
            pods.entry((namespace.to_string(), pod.to_string())).or_default().push(reading);
        }
        self.rates.retain(&live);
        let pods =
            pods.into_iter().map(|((namespace, name), readings)| pod_stats(namespace, name, readings, &time)).collect();
        Summary { node, pods }
    }

    async fn linux_containers(&self) -> Vec<crate::runtime::oci::LinuxContainer> {
        let Some(runtime) = self.oci.as_ref().and_then(|o| o.started()) else { return Vec::new() };
        match runtime.containers().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "listing Linux containers for stats");
                Vec::new()
            }
        }
    }
}

/// A pod's entry: its containers (sorted by name) and their sums.
fn pod_stats(namespace: String, name: String, mut readings: Vec<Reading>, time: &str) -> PodStats {
    readings.sort_by(|a, b| a.stats.name.cmp(&b.stats.name));
    let uid = readings.iter().map(|r| r.pod_uid.clone()).find(|u| !u.is_empty()).unwrap_or_default();
    let started = readings.iter().map(|r| r.started).min().unwrap_or(Timestamp::UNIX_EPOCH);
    let containers: Vec<ContainerStats> = readings.into_iter().map(|r| r.stats).collect();
    let cpus: Vec<&CpuStats> = containers.iter().filter_map(|c| c.cpu.as_ref()).collect();
    let mems: Vec<&MemoryStats> = containers.iter().filter_map(|c| c.memory.as_ref()).collect();
    let cpu = CpuStats {
        time: time.to_string(),
        usage_nano_cores: cpus.iter().try_fold(0u64, |sum, c| c.usage_nano_cores.map(|n| sum.saturating_add(n))),
        usage_core_nano_seconds: cpus.iter().fold(0u64, |sum, c| sum.saturating_add(c.usage_core_nano_seconds)),
    };
    let memory = MemoryStats {
        time: time.to_string(),
        available_bytes: None,
        usage_bytes: mems.iter().fold(0u64, |sum, m| sum.saturating_add(m.usage_bytes)),
        working_set_bytes: mems.iter().fold(0u64, |sum, m| sum.saturating_add(m.working_set_bytes)),
        rss_bytes: None,
    };
    PodStats {
        pod_ref: PodReference { name, namespace, uid },
        start_time: started.to_string(),
        containers,
        cpu: Some(cpu),
        memory: Some(memory),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: u64) -> CpuSample {
        CpuSample { at: Timestamp::from_second(secs).expect("time"), nanos }
    }

    #[test]
    fn rates_start_after_the_first_reading_and_restart_after_a_counter_reset() {
        assert_eq!(nano_cores(None, at(10, 5)), None);
        assert_eq!(nano_cores(Some(at(10, 0)), at(12, 1_000_000_000)), Some(500_000_000));
        assert_eq!(nano_cores(Some(at(10, 0)), at(10, 7)), None);
        assert_eq!(nano_cores(Some(at(10, 9)), at(12, 7)), None);
        let rates = Rates::default();
        assert_eq!(rates.observe("c", at(100, 0)), None);
        assert_eq!(rates.observe("c", at(102, 2_000_000_000)), Some(1_000_000_000));
        // A reading closer than the window to the last keeps the older base.
        assert_eq!(rates.observe("c", at(102, 2_500_000_000)), Some(1_250_000_000));
        assert_eq!(rates.observe("c", at(103, 100)), None);
        assert_eq!(rates.observe("c", at(105, 200_000_100)), Some(100_000_000));
    }
}
