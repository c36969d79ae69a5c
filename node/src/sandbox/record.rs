//! Sandboxes and pool entries as records on disk (one JSON file each, written atomically), so a
//! restarted agent can adopt or remove what the previous one made.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::PortMapping;
use super::error::SandboxError;

/// A pod's network sandbox: its namespace, address and host ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub pod_uid: String,
    /// CNI container id the plugins know this sandbox by.
    pub container_id: String,
    pub netns_path: PathBuf,
    pub ip: IpAddr,
    pub gateway: IpAddr,
    pub ports: Vec<PortMapping>,
}

/// A network namespace wired to the bridge (loopback + bridge ADD done), with or without a pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prepared {
    pub container_id: String,
    pub netns_path: PathBuf,
    pub ip: IpAddr,
    pub gateway: IpAddr,
    /// The bridge plugin's result: `prevResult` for portmap and for DEL.
    pub bridge_result: Value,
}

/// What is stored for a pod's sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub sandbox: Sandbox,
    pub bridge_result: Value,
}

/// The record directories: `state_dir/sandboxes/<pod uid>.json` and `state_dir/pool/<container id>.json`.
#[derive(Debug, Clone)]
pub struct RecordStore {
    sandboxes: PathBuf,
    pool: PathBuf,
}

impl RecordStore {
    /// Opens (creating) the record directories under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, SandboxError> {
        let store = RecordStore { sandboxes: state_dir.join("sandboxes"), pool: state_dir.join("pool") };
        for dir in [&store.sandboxes, &store.pool] {
            std::fs::create_dir_all(dir).map_err(|e| SandboxError::io("create", dir, e))?;
        }
        Ok(store)
    }

    /// Directory of the pool records.
    pub fn pool_dir(&self) -> &Path {
        &self.pool
    }

    fn sandbox_path(&self, pod_uid: &str) -> PathBuf {
        self.sandboxes.join(format!("{pod_uid}.json"))
    }

    fn pool_path(&self, id: &str) -> PathBuf {
        self.pool.join(format!("{id}.json"))
    }

    /// Writes a pod's record (atomically) before returning.
    pub async fn put_sandbox(&self, rec: &SandboxRecord) -> Result<(), SandboxError> {
        write_atomic(self.sandbox_path(&rec.sandbox.pod_uid), rec).await
    }

    /// Removes a pod's record; missing is fine.
    pub async fn remove_sandbox(&self, pod_uid: &str) -> Result<(), SandboxError> {
        remove(self.sandbox_path(pod_uid)).await
    }

    /// Writes a pool entry's record.
    pub async fn put_pool(&self, p: &Prepared) -> Result<(), SandboxError> {
        write_atomic(self.pool_path(&p.container_id), p).await
    }

    /// Removes a pool entry's record; missing is fine.
    pub async fn remove_pool(&self, id: &str) -> Result<(), SandboxError> {
        remove(self.pool_path(id)).await
    }

    /// Every pod record on disk; unreadable files are skipped with a warning.
    pub fn load_sandboxes(&self) -> Vec<SandboxRecord> {
        load_dir(&self.sandboxes)
    }

    /// Every pool record on disk.
    pub fn load_pool(&self) -> Vec<Prepared> {
        load_dir(&self.pool)
    }
}

fn load_dir<T: serde::de::DeserializeOwned>(dir: &Path) -> Vec<T> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            // A temp file from a write that did not finish.
            let _ = std::fs::remove_file(&path);
            continue;
        }
        match std::fs::read(&path).map(|b| serde_json::from_slice::<T>(&b)) {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => tracing::warn!(path = %path.display(), error = %e, "skipping unreadable sandbox record"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "skipping unreadable sandbox record"),
        }
    }
    out
}

async fn write_atomic<T: Serialize>(path: PathBuf, value: &T) -> Result<(), SandboxError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| SandboxError::Record { path: path.clone(), source: e })?;
    tokio::task::spawn_blocking(move || write_atomic_blocking(&path, &bytes))
        .await
        .map_err(|e| SandboxError::Task(e.to_string()))?
}

/// Temp file + rename: a reader (a restarted agent) sees the old or the new record, never a torn
/// one. No fsync: the records describe network namespaces, which live in /run and do not survive a
/// host crash either; what a lost record leaves behind (host-local leases) the sweep releases.
fn write_atomic_blocking(path: &Path, bytes: &[u8]) -> Result<(), SandboxError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!("tmp.{}.{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SandboxError::io("write record", path, e)
    })
}

async fn remove(path: PathBuf) -> Result<(), SandboxError> {
    match tokio::fs::remove_file(&path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SandboxError::io("remove record", path, e)),
    }
}
