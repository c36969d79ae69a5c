//! Memory of (shim) processes from /proc: RSS and PSS (`smaps_rollup`), peak RSS (`VmHWM`), and the
//! descendants of a process (a shim's container processes).

use std::collections::HashMap;

/// One process's memory, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub rss_kb: u64,
    pub pss_kb: u64,
    /// Peak resident set (VmHWM).
    pub hwm_kb: u64,
}

impl std::ops::Add for Mem {
    type Output = Mem;
    fn add(self, other: Mem) -> Mem {
        Mem {
            rss_kb: self.rss_kb + other.rss_kb,
            pss_kb: self.pss_kb + other.pss_kb,
            hwm_kb: self.hwm_kb + other.hwm_kb,
        }
    }
}

/// The value in KiB of the `key:` line of a /proc file such as `smaps_rollup` or `status`.
fn field_kb(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.strip_prefix(key).is_some_and(|rest| rest.starts_with(':')))?;
    line[key.len() + 1..].split_whitespace().next()?.parse().ok()
}

/// `pid`'s memory, or `None` if it is gone.
pub fn mem(pid: u32) -> Option<Mem> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Mem {
        rss_kb: field_kb(&rollup, "Rss")?,
        pss_kb: field_kb(&rollup, "Pss")?,
        hwm_kb: field_kb(&status, "VmHWM").unwrap_or(0),
    })
}

/// Every descendant of `root` (children, their children, ...), not `root` itself.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so parse after the last `)`.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            out.push(child);
            todo.push(child);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_a_child() {
        let me = mem(std::process::id()).expect("own memory");
        assert!(me.rss_kb > 0 && me.pss_kb > 0 && me.hwm_kb >= me.rss_kb);
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let found = descendants(std::process::id()).contains(&child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found, "the child is a descendant");
    }
}
