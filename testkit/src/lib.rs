//! What the test harnesses (the root crate's tests, the shim's tests) and the benchmark harness share about
//! a private containerd and the processes they start: the command that starts one in a directory with skiff's
//! shim first on its PATH, the shim sockets its bundles name, lazy unmounts under a directory, and whether a
//! process still runs. Nothing here is used by the product.

pub mod extension;
pub mod image;
pub mod webhook;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How many Nodes of a NodeList report `Ready=True`.
pub fn ready_nodes(list: &serde_json::Value) -> usize {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count()
}

/// The checkout the running test was started from: the nearest directory holding `Cargo.lock`
/// above the `CARGO_MANIFEST_DIR` cargo sets when it runs a test. Read at run time, not compiled
/// in, because the build cache is shared between checkouts (a test binary built in one checkout
/// must not reach into another one's scripts).
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")));
    start.ancestors().find(|d| d.join("Cargo.lock").is_file()).map_or(start.clone(), Path::to_path_buf)
}

/// `containerd` on `root` (its `config.toml`; state, root and `containerd.sock` under it), with `shim_dir`
/// first on its PATH, the shim's compile cache under `root/cache`, and its log (the shims' too) appended to
/// `root/containerd.log`. The caller adds env and spawns it.
pub fn containerd_command(root: &Path, shim_dir: &Path) -> std::io::Result<Command> {
    let path = format!("{}:{}", shim_dir.display(), std::env::var("PATH").unwrap_or_default());
    let log = OpenOptions::new().create(true).append(true).open(root.join("containerd.log"))?;
    let mut command = Command::new("containerd");
    command
        .arg("--config")
        .arg(root.join("config.toml"))
        .arg("--root")
        .arg(root.join("root"))
        .arg("--state")
        .arg(root.join("state"))
        .arg("--address")
        .arg(root.join("containerd.sock"))
        .env("PATH", path)
        .env("SKIFF_SHIM_CACHE", root.join("cache"))
        .env("SKIFF_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    Ok(command)
}

/// The shim sockets named by the `address` files of the task bundles under a containerd `state` directory
/// (the sockets themselves live in /run/containerd/s).
pub fn shim_sockets(state: &Path) -> Vec<PathBuf> {
    let mut sockets = Vec::new();
    let tasks = state.join("io.containerd.runtime.v2.task");
    for ns in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
        for bundle in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            if let Ok(address) = std::fs::read_to_string(bundle.path().join("address")) {
                sockets.push(PathBuf::from(address.trim().trim_start_matches("unix://")));
            }
        }
    }
    sockets
}

/// Lazily unmounts every mount point under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let prefix = dir.display().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> =
        mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| p.starts_with(&prefix)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The pids of processes whose command line holds both `program` and `socket` (a containerd's shims: their
/// `-address` names its socket).
pub fn processes_of(program: &str, socket: &Path) -> Vec<i32> {
    let socket = socket.display().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains(program) && cmdline.contains(&socket) {
            pids.push(pid);
        }
    }
    pids
}

/// Stops `child`: SIGTERM, up to `grace` to exit, then SIGKILL; reaped either way.
pub fn stop(child: &mut Child, grace: Duration) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether process `pid` (decimal) still exists.
pub fn pid_alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bundle_addresses_and_this_process() {
        let dir = std::env::temp_dir().join(format!("skiff-testkit-{}", std::process::id()));
        let bundle = dir.join("io.containerd.runtime.v2.task/ns1/c1");
        std::fs::create_dir_all(&bundle).expect("mkdir");
        std::fs::write(bundle.join("address"), "unix:///run/containerd/s/abc\n").expect("write");
        assert_eq!(shim_sockets(&dir), vec![PathBuf::from("/run/containerd/s/abc")]);
        assert!(shim_sockets(&dir.join("none")).is_empty());
        std::fs::remove_dir_all(&dir).expect("rm");
        assert!(pid_alive(&std::process::id().to_string()));
    }
}
