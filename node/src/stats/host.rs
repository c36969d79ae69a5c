//! The node's own figures from `/proc` (CPU, memory, network, boot time) and `statvfs` (its data
//! directory's filesystem). The parsers are pure; [`read`] does the reading.

use std::path::Path;

use super::summary::{FsStats, InterfaceStats};

/// Clock ticks per second of `/proc/stat` (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: u64 = 100;
const NANOS_PER_TICK: u64 = 1_000_000_000 / USER_HZ;

/// One reading of the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSample {
    /// CPU time spent not idle, all cores together, nanoseconds.
    pub cpu_nanos: Option<u64>,
    /// Boot time, seconds since the epoch.
    pub boot_time: Option<i64>,
    pub memory: Option<Meminfo>,
    pub interfaces: Vec<InterfaceStats>,
}

/// `/proc/meminfo`, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meminfo {
    pub total: u64,
    pub free: u64,
    pub available: u64,
    pub buffers: u64,
    pub cached: u64,
}

impl Meminfo {
    /// In use by anything (total - free).
    pub fn usage(&self) -> u64 {
        self.total.saturating_sub(self.free)
    }

    /// What could not be reclaimed without swapping (total - available), as the kubelet's working set.
    pub fn working_set(&self) -> u64 {
        self.total.saturating_sub(self.available)
    }
}

/// Reads `/proc/stat`, `/proc/meminfo` and `/proc/net/dev`; a file that cannot be read leaves its part empty.
pub fn read() -> HostSample {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let net = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    HostSample {
        cpu_nanos: parse_stat_cpu(&stat),
        boot_time: parse_boot_time(&stat),
        memory: meminfo.as_deref().and_then(parse_meminfo),
        interfaces: parse_net_dev(&net),
    }
}

/// The busy CPU time of the `cpu ` line of `/proc/stat` (user+nice+system+irq+softirq+steal), nanoseconds.
pub fn parse_stat_cpu(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7].iter().fold(0u64, |sum, i| sum.saturating_add(at(*i)));
    Some(busy.saturating_mul(NANOS_PER_TICK))
}

/// `btime` of `/proc/stat`.
pub fn parse_boot_time(text: &str) -> Option<i64> {
    text.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// `/proc/meminfo` in bytes; `None` without `MemTotal`.
pub fn parse_meminfo(text: &str) -> Option<Meminfo> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.split(':').next() == Some(name))?;
        let kib: u64 = line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()?;
        Some(kib.saturating_mul(1024))
    };
    let total = field("MemTotal")?;
    let free = field("MemFree").unwrap_or(0);
    Some(Meminfo {
        total,
        free,
        available: field("MemAvailable").unwrap_or(free),
        buffers: field("Buffers").unwrap_or(0),
        cached: field("Cached").unwrap_or(0),
    })
}

/// The interfaces of `/proc/net/dev` but `lo`.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let n: Vec<u64> = counters.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
            if name == "lo" || n.len() < 11 {
                return None;
            }
            // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs ...
            Some(InterfaceStats {
                name: name.to_string(),
                rx_bytes: n[0],
                rx_errors: n[2],
                tx_bytes: n[8],
                tx_errors: n[10],
            })
        })
        .collect()
}

/// The filesystem holding `dir`.
// statvfs's field types are the platform's (`fsblkcnt_t` is 32 bits on some).
#[allow(clippy::useless_conversion)]
pub fn fs(dir: &Path, time: &str) -> Option<FsStats> {
    let vfs = nix::sys::statvfs::statvfs(dir).ok()?;
    let block = u64::from(vfs.fragment_size());
    let blocks = u64::from(vfs.blocks());
    let capacity = blocks.saturating_mul(block);
    let free = u64::from(vfs.blocks_free()).saturating_mul(block);
    let inodes = u64::from(vfs.files());
    let inodes_free = u64::from(vfs.files_free());
    Some(FsStats {
        time: time.to_string(),
        available_bytes: u64::from(vfs.blocks_available()).saturating_mul(block),
        capacity_bytes: capacity,
        used_bytes: capacity.saturating_sub(free),
        inodes_free,
        inodes,
        inodes_used: inodes.saturating_sub(inodes_free),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse_as_the_kernel_writes_them() {
        let stat = "cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nbtime 1700000000\n";
        assert_eq!(parse_stat_cpu(stat), Some(161 * 10_000_000));
        assert_eq!(parse_boot_time(stat), Some(1_700_000_000));
        assert_eq!(parse_stat_cpu("nothing"), None);
        let mem = "MemTotal:        2000 kB\nMemFree:          500 kB\nMemAvailable:    1200 kB\nBuffers: 10 kB\nCached: 300 kB\n";
        let m = parse_meminfo(mem).expect("meminfo");
        assert_eq!((m.total, m.usage(), m.working_set()), (2_048_000, 1_536_000, 819_200));
        let net = "Inter-|   Receive                                                |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                   lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  eth0: 1000 10 2 0 0 0 0 0 500 5 1 0 0 0 0 0\n";
        let ifs = parse_net_dev(net);
        assert_eq!(
            ifs,
            [InterfaceStats { name: "eth0".into(), rx_bytes: 1000, rx_errors: 2, tx_bytes: 500, tx_errors: 1 }]
        );
    }
}
