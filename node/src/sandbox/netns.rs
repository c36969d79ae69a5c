//! Named network namespaces under /var/run/netns, created without forking `ip`, and entering them.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::error::SandboxError;

/// Where named network namespaces live (the same place as `ip netns`).
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Path of the named network namespace `name`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Moves the calling thread into the network namespace at `path` (`setns(CLONE_NEWNET)`).
/// Sockets the thread creates afterwards belong to that namespace; other threads are not affected.
pub fn enter_netns(path: &Path) -> Result<(), SandboxError> {
    let file = std::fs::File::open(path).map_err(|e| SandboxError::io("open netns", path, e))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| SandboxError::sys("setns", path, e))
}

/// Makes /var/run/netns a shared mount point, as iproute2 does, so the namespace mounts propagate
/// to mount namespaces created later (e.g. containerd's). Done once per process.
fn prepare_run_dir() -> Result<(), SandboxError> {
    static READY: Mutex<bool> = Mutex::new(false);
    let mut ready = READY.lock();
    if *ready {
        return Ok(());
    }
    let dir = Path::new(NETNS_RUN_DIR);
    std::fs::create_dir_all(dir).map_err(|e| SandboxError::io("create", dir, e))?;
    let mut made_bind = false;
    loop {
        match mount(None::<&str>, dir, Some("none"), MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>) {
            Ok(()) => break,
            Err(Errno::EINVAL) if !made_bind => {
                mount(Some(dir), dir, Some("none"), MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                    .map_err(|e| SandboxError::sys("bind-mount", dir, e))?;
                made_bind = true;
            }
            Err(e) => return Err(SandboxError::sys("make-shared", dir, e)),
        }
    }
    *ready = true;
    Ok(())
}

/// Creates the named network namespace `name` and returns its path. A short-lived thread unshares
/// its network namespace and bind-mounts `/proc/thread-self/ns/net` onto the name (no `ip` fork).
pub async fn create_netns(name: &str) -> Result<PathBuf, SandboxError> {
    let path = netns_path(name);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_path = path.clone();
    std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || {
            let _ = tx.send(create_netns_blocking(&thread_path));
        })
        .map_err(|e| SandboxError::io("spawn thread for", &path, e))?;
    rx.await.map_err(|_| SandboxError::Task("netns thread ended without an answer".into()))??;
    Ok(path)
}

/// Must run on a thread that ends right after: it leaves the thread in the new namespace.
fn create_netns_blocking(path: &Path) -> Result<(), SandboxError> {
    prepare_run_dir()?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(path)
        .map_err(|e| SandboxError::io("create netns file", path, e))?;
    let res = unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| SandboxError::sys("unshare(CLONE_NEWNET) for", path, e))
        .and_then(|()| {
            mount(Some("/proc/thread-self/ns/net"), path, Some("none"), MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| SandboxError::sys("bind-mount netns onto", path, e))
        });
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

/// Removes a named network namespace: detaches its mount and deletes the file. Missing is fine.
pub fn remove_netns(path: &Path) -> Result<(), SandboxError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(SandboxError::sys("unmount netns", path, e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SandboxError::io("remove netns file", path, e)),
    }
}

/// Whether `path` is a mounted network namespace (an nsfs mount), not just a leftover file.
pub fn is_live_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Names of the named network namespaces that start with `prefix`.
pub fn list_netns(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect()
}
