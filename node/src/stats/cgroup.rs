//! A Linux container's CPU and memory from its cgroup (v2 unified, or v1's `cpuacct` and `memory`
//! hierarchies), as cAdvisor reads them for the kubelet.

use std::path::{Path, PathBuf};

/// Where cgroup hierarchies are mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// One reading of a cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupSample {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_nanos: u64,
    /// All memory charged to the cgroup (page cache included), bytes.
    pub usage: u64,
    /// `usage` less inactive file pages: what the kubelet evicts and `kubectl top` shows.
    pub working_set: u64,
    pub rss: Option<u64>,
}

/// Reads the cgroup at `path` (as given to runc: `/skiff/<id>`); `None` when it does not exist.
pub fn read(path: &str) -> Option<CgroupSample> {
    let relative = path.trim_start_matches('/');
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        read_v2(&Path::new(ROOT).join(relative))
    } else {
        read_v1(&Path::new(ROOT).join("cpuacct").join(relative), &Path::new(ROOT).join("memory").join(relative))
    }
}

fn number(path: PathBuf) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`memory.stat`, `cpu.stat`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

fn read_v2(dir: &Path) -> Option<CgroupSample> {
    let cpu = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    let usage = number(dir.join("memory.current")).unwrap_or(0);
    let inactive = keyed(&stat, "inactive_file").unwrap_or(0);
    Some(CgroupSample {
        cpu_nanos: keyed(&cpu, "usage_usec").unwrap_or(0).saturating_mul(1000),
        usage,
        working_set: usage.saturating_sub(inactive),
        rss: keyed(&stat, "anon"),
    })
}

fn read_v1(cpuacct: &Path, memory: &Path) -> Option<CgroupSample> {
    let cpu_nanos = number(cpuacct.join("cpuacct.usage"))?;
    let stat = std::fs::read_to_string(memory.join("memory.stat")).unwrap_or_default();
    let usage = number(memory.join("memory.usage_in_bytes")).unwrap_or(0);
    let inactive = keyed(&stat, "total_inactive_file").unwrap_or(0);
    Some(CgroupSample { cpu_nanos, usage, working_set: usage.saturating_sub(inactive), rss: keyed(&stat, "total_rss") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_give_the_named_counter() {
        let stat = "cache 10\nrss 20\ntotal_rss 30\ntotal_inactive_file 4096\ninactive_file 1\n";
        assert_eq!(keyed(stat, "total_rss"), Some(30));
        assert_eq!(keyed(stat, "rss"), Some(20));
        assert_eq!(keyed(stat, "inactive_file"), Some(1));
        assert_eq!(keyed(stat, "missing"), None);
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").expect("write");
        std::fs::write(dir.path().join("memory.current"), "10000\n").expect("write");
        std::fs::write(dir.path().join("memory.stat"), "anon 6000\ninactive_file 3000\n").expect("write");
        let s = read_v2(dir.path()).expect("sample");
        assert_eq!(s, CgroupSample { cpu_nanos: 1_500_000, usage: 10_000, working_set: 7000, rss: Some(6000) });
        assert_eq!(read("/skiff/no-such-container-here"), None);
    }
}
