//! Memory of a node that runs Linux containers, by part: the `skiff server` process, the agent's own
//! containerd (its child), the shims of that containerd (found by the data directory in their command
//! line: their socket lives there), and the container processes runc started under the shims.

use std::collections::BTreeSet;
use std::path::Path;

use crate::shim_mem::{descendants, mem, Mem};
use crate::stats::count;

/// The node's memory by part, and how many processes each part had.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeMem {
    pub skiff: Mem,
    pub containerd: Mem,
    pub shims: Mem,
    pub shim_count: usize,
    pub containers: Mem,
    pub container_count: usize,
}

impl NodeMem {
    /// Reads the parts of the node run by `server` (pid) with its data directory `dir`.
    pub fn read(server: u32, dir: &Path) -> Self {
        let mut m = NodeMem { skiff: mem(server).unwrap_or_default(), ..NodeMem::default() };
        for pid in descendants(server) {
            if comm(pid).as_deref() == Some("containerd") {
                m.containerd = m.containerd + mem(pid).unwrap_or_default();
            }
        }
        let shims: BTreeSet<u32> = skiff_testkit::processes_of("containerd-shim", dir)
            .into_iter()
            .filter_map(|p| u32::try_from(p).ok())
            .collect();
        let containers: BTreeSet<u32> =
            shims.iter().flat_map(|&s| descendants(s)).filter(|p| !shims.contains(p)).collect();
        for &pid in &shims {
            m.shims = m.shims + mem(pid).unwrap_or_default();
        }
        for &pid in &containers {
            m.containers = m.containers + mem(pid).unwrap_or_default();
        }
        (m.shim_count, m.container_count) = (shims.len(), containers.len());
        m
    }

    /// Every part together.
    pub fn total(&self) -> Mem {
        self.skiff + self.containerd + self.shims + self.containers
    }

    /// A Markdown table row: `label`, then RSS in MiB per part and in total, and the total PSS.
    pub fn row(&self, label: &str) -> String {
        let mib = |kb: u64| format!("{:.1}", kb as f64 / 1024.0);
        format!(
            "| {label} | {} | {} | {} ({}) | {} ({}) | **{}** | {} |",
            mib(self.skiff.rss_kb),
            mib(self.containerd.rss_kb),
            mib(self.shims.rss_kb),
            count(self.shim_count),
            mib(self.containers.rss_kb),
            count(self.container_count),
            mib(self.total().rss_kb),
            mib(self.total().pss_kb),
        )
    }
}

/// A process's command name (`/proc/PID/comm`).
fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim().to_string())
}

/// Per pod: the growth of the total from `before` to `after` over `pods` pods, in MiB (RSS, PSS).
pub fn per_pod(before: &NodeMem, after: &NodeMem, pods: usize) -> (f64, f64) {
    let (b, a) = (before.total(), after.total());
    let n = pods.max(1) as f64;
    ((a.rss_kb as f64 - b.rss_kb as f64) / 1024.0 / n, (a.pss_kb as f64 - b.pss_kb as f64) / 1024.0 / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_growth_per_pod() {
        let me = NodeMem::read(std::process::id(), Path::new("/nonexistent-skiff-bench-dir"));
        assert!(me.skiff.rss_kb > 0);
        assert_eq!((me.shim_count, me.container_count), (0, 0));
        let mut more = me;
        more.shims.rss_kb += 20 * 1024 * 10;
        more.shims.pss_kb += 20 * 1024 * 5;
        assert_eq!(per_pod(&me, &more, 20), (10.0, 5.0));
    }
}
