//! Whether the kernel's OOM killer struck in a Linux container's memory cgroup: the cgroup is found from its
//! init's `/proc/<pid>/cgroup` and the cgroup mounts in `/proc/self/mountinfo` (v1's `memory` controller, else
//! v2's unified hierarchy), and its `oom_kill` count (v1 `memory.oom_control`, v2 `memory.events`) is read
//! when the container is created and again when its init ends, before runc removes the cgroup.

use std::path::{Path, PathBuf};

use super::error::ShimError;

/// The OOM-kill counter of one memory cgroup, with its count when the container was created.
#[derive(Debug, Clone, PartialEq)]
pub struct OomCounter {
    /// `memory.oom_control` (v1) or `memory.events` (v2) of the container's cgroup.
    file: PathBuf,
    baseline: u64,
}

impl OomCounter {
    /// The counter of process `pid`'s memory cgroup; `None` when it has no memory cgroup the shim can see.
    pub fn of_pid(pid: u32) -> Result<Option<Self>, ShimError> {
        let cgroup = read(format!("/proc/{pid}/cgroup"))?;
        let mountinfo = read("/proc/self/mountinfo")?;
        let Some(file) = counter_file(&cgroup, &mountinfo) else { return Ok(None) };
        let baseline = kills(&read(&file)?).unwrap_or(0);
        Ok(Some(Self { file, baseline }))
    }

    /// Whether the OOM killer killed a process of the cgroup since it was created (the cgroup must still be
    /// there: ask before `runc delete`).
    pub fn fired(&self) -> Result<bool, ShimError> {
        Ok(kills(&read(&self.file)?).is_some_and(|n| n > self.baseline))
    }

    /// The file the count is read from.
    pub fn file(&self) -> &Path {
        &self.file
    }
}

fn read(path: impl AsRef<Path>) -> Result<String, ShimError> {
    let path = path.as_ref();
    std::fs::read_to_string(path).map_err(|e| ShimError::io("reading", path, e))
}

/// The counter file of the memory cgroup named in `cgroup` (a `/proc/<pid>/cgroup`), under its mount in
/// `mountinfo`: v1's `memory` controller if the process has one, else v2's unified hierarchy.
fn counter_file(cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let mut unified = None;
    for line in cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return mount_of(mountinfo, Hierarchy::Memory).map(|m| join(&m, path).join("memory.oom_control"));
        }
        if id == "0" && controllers.is_empty() {
            unified = Some(path);
        }
    }
    let path = unified?;
    mount_of(mountinfo, Hierarchy::Unified).map(|m| join(&m, path).join("memory.events"))
}

/// A cgroup hierarchy to find the mount of.
#[derive(Clone, Copy)]
enum Hierarchy {
    /// v1, with the `memory` controller.
    Memory,
    /// v2.
    Unified,
}

/// A mount of `hierarchy` in `mountinfo`: its mount point and the cgroup it shows at that point.
struct Mount<'a> {
    point: &'a str,
    root: &'a str,
}

fn mount_of(mountinfo: &str, hierarchy: Hierarchy) -> Option<Mount<'_>> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let mut mount = mount.split(' ');
        let root = mount.nth(3)?;
        let point = mount.next()?;
        let mut fs = fs.split(' ');
        let (fstype, options) = (fs.next()?, fs.nth(1)?);
        let matches = match hierarchy {
            Hierarchy::Memory => fstype == "cgroup" && options.split(',').any(|o| o == "memory"),
            Hierarchy::Unified => fstype == "cgroup2",
        };
        matches.then_some(Mount { point, root })
    })
}

/// Where cgroup `path` is under `mount` (a mount of a cgroup below the root shows it at its mount point).
fn join(mount: &Mount<'_>, path: &str) -> PathBuf {
    let below = match path.strip_prefix(mount.root) {
        Some(rest) if mount.root != "/" && (rest.is_empty() || rest.starts_with('/')) => rest,
        _ => path,
    };
    Path::new(mount.point).join(below.trim_start_matches('/'))
}

/// The `oom_kill N` count of a `memory.oom_control` or `memory.events`.
fn kills(text: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_memory_controller_wins_on_a_hybrid_host() {
        let cgroup = "9:name=systemd:/default/c1\n4:memory:/default/c1\n1:cpu:/default/c1\n0::/default/c1\n";
        assert_eq!(
            counter_file(cgroup, HYBRID_MOUNTS),
            Some(PathBuf::from("/sys/fs/cgroup/memory/default/c1/memory.oom_control"))
        );
        // Controllers mounted together.
        let joint = "35 31 0:32 / /sys/fs/cgroup/cpu,memory rw - cgroup cgroup rw,cpu,memory\n";
        assert_eq!(
            counter_file("4:cpu,memory:/k/c2\n", joint),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,memory/k/c2/memory.oom_control"))
        );
    }

    #[test]
    fn v2_uses_the_unified_mount() {
        let mounts = "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            counter_file("0::/kubepods/pod1/c3\n", mounts),
            Some(PathBuf::from("/sys/fs/cgroup/kubepods/pod1/c3/memory.events"))
        );
        // A mount of a cgroup below the root shows that cgroup at its mount point.
        let below = "30 23 0:27 /kubepods /mnt/cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(counter_file("0::/kubepods/c4\n", below), Some(PathBuf::from("/mnt/cg/c4/memory.events")));
    }

    #[test]
    fn no_memory_cgroup_or_mount_is_none() {
        assert_eq!(counter_file("0::/x\n", "1 0 0:1 / / rw - ext4 /dev/sda rw\n"), None);
        assert_eq!(counter_file("4:memory:/x\n", "41 31 0:38 / /u rw - cgroup2 cgroup2 rw\n"), None);
        assert_eq!(counter_file("", HYBRID_MOUNTS), None);
    }

    #[test]
    fn reads_the_oom_kill_count() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(kills(v1), Some(2));
        let v2 = "low 0\nhigh 0\nmax 14\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(kills(v2), Some(1));
        assert_eq!(kills("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn fired_compares_with_the_baseline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("memory.events");
        std::fs::write(&file, "oom 1\noom_kill 1\n").expect("write");
        let counter = OomCounter { file: file.clone(), baseline: 1 };
        assert!(!counter.fired().expect("read"));
        std::fs::write(&file, "oom 2\noom_kill 2\n").expect("write");
        assert!(counter.fired().expect("read"));
        std::fs::remove_file(&file).expect("remove");
        assert!(counter.fired().is_err());
    }

    #[test]
    fn reads_this_process_cgroup() {
        // Whatever this host has: a counter found for the test process reads (no OOM here).
        if let Some(counter) = OomCounter::of_pid(std::process::id()).expect("read") {
            assert!(counter.file().exists(), "{counter:?}");
            assert!(!counter.fired().expect("read"));
        }
    }
}
