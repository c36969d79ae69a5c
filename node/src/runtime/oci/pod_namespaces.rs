//! The IPC and UTS namespaces a pod's Linux containers share, as a Kubernetes pod's sandbox (pause)
//! container holds them: made for the pod's first Linux container, kept by bind mounts under
//! `<root>/<pod uid>/{ipc,uts}` (the root is the agent's, under its data directory), and released
//! with the pod's context. The UTS namespace carries the pod's hostname; containers join both by path.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// The namespaces of one pod; unmounted and removed on drop, unless a later context of the same pod
/// has replaced them.
#[derive(Debug)]
pub struct PodNamespaces {
    dir: PathBuf,
    pub ipc: PathBuf,
    pub uts: PathBuf,
    /// The inode of the IPC namespace this context pinned (0 until pinned).
    pinned: u64,
}

/// Why a pod's namespaces could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the pod's IPC and UTS namespaces: {action} {path}: {reason}")]
pub struct PodNamespacesError {
    action: &'static str,
    path: PathBuf,
    reason: String,
}

fn failed(action: &'static str, path: &Path, reason: impl std::fmt::Display) -> PodNamespacesError {
    PodNamespacesError { action, path: path.to_path_buf(), reason: reason.to_string() }
}

impl PodNamespaces {
    /// Makes the namespaces of pod `uid` (a UTS namespace with `hostname`) under `root`; what an
    /// earlier context of the same pod left there is replaced.
    pub async fn create(root: &Path, uid: &str, hostname: &str) -> Result<Self, PodNamespacesError> {
        let dir = root.join(uid);
        let mut namespaces = PodNamespaces { ipc: dir.join("ipc"), uts: dir.join("uts"), dir, pinned: 0 };
        release(&namespaces.dir);
        std::fs::create_dir_all(&namespaces.dir).map_err(|e| failed("creating", &namespaces.dir, e))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (ipc, uts, hostname) = (namespaces.ipc.clone(), namespaces.uts.clone(), hostname.to_string());
        // unshare() moves the calling thread: a short-lived thread of its own, as for network namespaces.
        std::thread::Builder::new()
            .name("podns-create".into())
            .spawn(move || {
                let _ = tx.send(make(&ipc, &uts, &hostname));
            })
            .map_err(|e| failed("starting a thread for", &namespaces.dir, e))?;
        let made = rx.await.map_err(|_| failed("making", &namespaces.dir, "the thread ended without an answer"))?;
        // On an error, `namespaces` drops here and removes what was made.
        made?;
        namespaces.pinned = inode(&namespaces.ipc).unwrap_or(0);
        Ok(namespaces)
    }
}

/// The inode of `path` (for a pinned namespace: the namespace's).
fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

/// On a thread that ends right after: unshares IPC and UTS, names the host, pins both by bind mounts.
fn make(ipc: &Path, uts: &Path, hostname: &str) -> Result<(), PodNamespacesError> {
    for file in [ipc, uts] {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(file)
            .map_err(|e| failed("creating", file, e))?;
    }
    unshare(CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS).map_err(|e| failed("unsharing for", ipc, e))?;
    nix::unistd::sethostname(hostname).map_err(|e| failed("setting the hostname in", uts, e))?;
    for (source, file) in [("/proc/thread-self/ns/ipc", ipc), ("/proc/thread-self/ns/uts", uts)] {
        mount(Some(source), file, Some("none"), MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| failed("bind-mounting onto", file, e))?;
    }
    Ok(())
}

/// Unmounts and removes the namespace files in `dir`, then `dir`; anything missing is fine.
fn release(dir: &Path) {
    for name in ["ipc", "uts"] {
        let file = dir.join(name);
        match umount2(&file, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => tracing::warn!(path = %file.display(), error = %e, "unmounting a pod namespace"),
        }
        if let Err(e) = std::fs::remove_file(&file) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %file.display(), error = %e, "removing a pod namespace file");
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %dir.display(), error = %e, "removing a pod namespace directory");
        }
    }
}

impl Drop for PodNamespaces {
    fn drop(&mut self) {
        // A context made later for the same pod replaced the pins: they are its to release.
        let replaced = self.pinned != 0 && inode(&self.ipc) != Some(self.pinned);
        if !replaced {
            release(&self.dir);
        }
    }
}

/// Removes every pod's namespaces under `root`: what an agent that stopped without releasing them
/// left (its containers are gone with it). Returns how many pods' were removed.
pub fn sweep(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        release(&entry.path());
        removed += 1;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(path: &Path) -> u64 {
        super::inode(path).expect("stat")
    }

    fn is_pinned(path: &Path) -> bool {
        nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
    }

    /// Needs root (unshare, mount), as the sandbox tests.
    #[tokio::test]
    async fn a_pods_namespaces_are_pinned_named_and_released() {
        let root = tempfile::tempdir().expect("tempdir");
        let ns = PodNamespaces::create(root.path(), "uid-a", "pod-a").await.expect("namespaces");
        // Pinned: the files are the namespaces (not this process's own).
        assert_ne!(inode(&ns.ipc), inode(Path::new("/proc/self/ns/ipc")));
        assert_ne!(inode(&ns.uts), inode(Path::new("/proc/self/ns/uts")));
        // The UTS namespace carries the hostname: read it from a thread that joins it.
        let uts = ns.uts.clone();
        let name = std::thread::spawn(move || {
            let file = std::fs::File::open(&uts).expect("open uts");
            nix::sched::setns(&file, CloneFlags::CLONE_NEWUTS).expect("setns");
            nix::unistd::gethostname().expect("hostname").into_string().expect("utf-8")
        })
        .join()
        .expect("thread");
        assert_eq!(name, "pod-a");
        let dir = ns.dir.clone();
        drop(ns);
        assert!(!dir.exists(), "{} is left", dir.display());
    }

    #[tokio::test]
    async fn a_sweep_removes_what_a_stopped_agent_left() {
        let root = tempfile::tempdir().expect("tempdir");
        for uid in ["a", "b"] {
            // A crashed agent leaves its pins behind: forget them without dropping.
            std::mem::forget(PodNamespaces::create(root.path(), uid, uid).await.expect("namespaces"));
        }
        // A context made again for a pod replaces what was there; the one it replaced, dropped
        // afterwards, leaves the new pins alone.
        let first = PodNamespaces::create(root.path(), "c", "c").await.expect("namespaces");
        let again = PodNamespaces::create(root.path(), "a", "a").await.expect("made again");
        let second = PodNamespaces::create(root.path(), "c", "c").await.expect("made again");
        drop(first);
        assert!(is_pinned(&second.ipc) && is_pinned(&second.uts), "the replaced context took the new pins");
        drop(second);
        drop(again);
        assert_eq!(sweep(root.path()), 1);
        assert_eq!(std::fs::read_dir(root.path()).expect("root").count(), 0);
    }
}
