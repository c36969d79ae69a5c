//! Host settings a node sized for many pods needs. The kernel keeps one neighbour (ARP) table for all
//! network namespaces and every pod takes two entries in it; Debian's default hard limit (1,024)
//! fills at about 500 pods, after which new pods are unreachable. The agent raises the limits (never
//! lowers them) to fit `max_pods`.

use std::path::Path;

const NEIGH: &str = "/proc/sys/net/ipv4/neigh/default";

/// Raises `gc_thresh1..3` so the neighbour table holds `max_pods` pods; returns what it changed.
pub fn fit_neighbour_table(max_pods: u32) -> Vec<(String, u64, u64)> {
    let entries = u64::from(max_pods) * 2 + 256;
    let wanted = [("gc_thresh1", entries), ("gc_thresh2", entries * 2), ("gc_thresh3", entries * 4)];
    let mut changed = Vec::new();
    for (name, want) in wanted {
        let path = Path::new(NEIGH).join(name);
        let Some(have) = std::fs::read_to_string(&path).ok().and_then(|v| v.trim().parse::<u64>().ok()) else {
            continue;
        };
        if have >= want {
            continue;
        }
        match std::fs::write(&path, want.to_string()) {
            Ok(()) => changed.push((name.to_string(), have, want)),
            Err(e) => tracing::warn!(setting = %path.display(), error = %e, "cannot raise the neighbour table limit"),
        }
    }
    changed
}
