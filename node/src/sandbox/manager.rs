//! The sandbox manager: hands out pod sandboxes (from the pool or made on demand), records them on
//! disk, destroys them, adopts them after a restart, and sweeps what nobody owns any more.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;

use super::cni::{Cni, Command, NETWORK_NAME};
use super::config::{self, is_name_char, NetworkConfig, PortMapping};
use super::error::SandboxError;
use super::netns::{is_live_netns, list_netns};
use super::pool::{refill_loop, REFILL_CONCURRENCY};
use super::record::{Prepared, RecordStore, Sandbox, SandboxRecord};
use super::wire;

/// Creates, records and removes the pod sandboxes of one node.
pub struct SandboxManager {
    inner: Arc<Inner>,
}

/// The shared state behind [`SandboxManager`], also used by the pool's background task.
pub(crate) struct Inner {
    cfg: NetworkConfig,
    cni: Cni,
    store: RecordStore,
    ipam_dir: PathBuf,
    state: Mutex<State>,
    pod_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    refill: Arc<Notify>,
    permits: Arc<Semaphore>,
    closed: AtomicBool,
    sweeping: tokio::sync::Mutex<()>,
}

/// Everything the manager knows; one lock so that a sweep sees a consistent picture.
#[derive(Default)]
struct State {
    sandboxes: HashMap<String, SandboxRecord>,
    pool: VecDeque<Prepared>,
    /// Container ids being set up or torn down right now.
    busy: HashSet<String>,
    /// Pool entries being prepared.
    preparing: usize,
    /// Records of a previous run whose namespace is gone (e.g. after a reboot): to be released.
    stale_pods: Vec<SandboxRecord>,
    stale_pool: Vec<Prepared>,
}

impl State {
    fn known_ids(&self) -> HashSet<String> {
        let mut ids = self.busy.clone();
        ids.extend(self.sandboxes.values().map(|r| r.sandbox.container_id.clone()));
        ids.extend(self.pool.iter().map(|p| p.container_id.clone()));
        ids.extend(self.stale_pods.iter().map(|r| r.sandbox.container_id.clone()));
        ids.extend(self.stale_pool.iter().map(|p| p.container_id.clone()));
        ids
    }
}

impl SandboxManager {
    /// Validates `cfg` (names, CIDR, no overlap with host routes on other interfaces), writes the
    /// network configuration into the state dir, loads the records of a previous run and starts
    /// filling the pool in the background.
    pub async fn new(cfg: NetworkConfig) -> Result<Arc<Self>, SandboxError> {
        let routes = config::host_routes()?;
        let cidr = config::validate(&cfg, &routes)?;
        let ipam_dir = cfg.state_dir.join("ipam");
        std::fs::create_dir_all(&ipam_dir).map_err(|e| SandboxError::io("create", &ipam_dir, e))?;
        let cni = Cni::new(&cfg, cidr, &ipam_dir);
        for (file, conf) in [("skiff.conflist", cni.conflist()), ("skiff-loopback.conflist", cni.loopback_conf())] {
            let path = cfg.state_dir.join(file);
            let text =
                serde_json::to_vec_pretty(&conf).map_err(|e| SandboxError::Record { path: path.clone(), source: e })?;
            std::fs::write(&path, text).map_err(|e| SandboxError::io("write", &path, e))?;
        }
        let store = RecordStore::open(&cfg.state_dir)?;
        let state = load_state(&store, cfg.pool_size);
        tracing::info!(
            bridge = %cfg.bridge, pod_cidr = %cidr, adopted = state.sandboxes.len(), pooled = state.pool.len(),
            stale = state.stale_pods.len() + state.stale_pool.len(), "sandbox manager started"
        );
        let inner = Arc::new(Inner {
            cfg,
            cni,
            store,
            ipam_dir,
            state: Mutex::new(state),
            pod_locks: Mutex::new(HashMap::new()),
            refill: Arc::new(Notify::new()),
            permits: Arc::new(Semaphore::new(REFILL_CONCURRENCY)),
            closed: AtomicBool::new(false),
            sweeping: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(refill_loop(Arc::downgrade(&inner), inner.refill.clone(), inner.permits.clone()));
        inner.refill.notify_one();
        Ok(Arc::new(SandboxManager { inner }))
    }

    /// Returns the pod's sandbox, creating it if needed: a prepared one from the pool when there is
    /// one (then only portmap ADD for `ports`), else namespace + loopback + bridge (+ portmap).
    /// The sandbox is recorded on disk before this returns. Idempotent per pod uid (a second call
    /// returns the existing sandbox with its original ports). Runs to completion even if the caller
    /// stops waiting.
    pub async fn create(&self, pod_uid: &str, ports: &[PortMapping]) -> Result<Sandbox, SandboxError> {
        check_pod_uid(pod_uid)?;
        let inner = self.inner.clone();
        let (uid, ports) = (pod_uid.to_string(), ports.to_vec());
        let span = tracing::info_span!("sandbox_create", pod_uid = %uid);
        tokio::spawn(async move { inner.create(&uid, &ports).await }.instrument(span))
            .await
            .map_err(|e| SandboxError::Task(e.to_string()))?
    }

    /// Removes the pod's sandbox: CNI DEL in reverse order, namespace unmounted and deleted, record
    /// removed; the address goes back to host-local. Idempotent.
    pub async fn destroy(&self, pod_uid: &str) -> Result<(), SandboxError> {
        check_pod_uid(pod_uid)?;
        let inner = self.inner.clone();
        let uid = pod_uid.to_string();
        let span = tracing::info_span!("sandbox_destroy", pod_uid = %uid);
        tokio::spawn(async move { inner.destroy(&uid).await }.instrument(span))
            .await
            .map_err(|e| SandboxError::Task(e.to_string()))?
    }

    /// The recorded sandboxes whose namespace is alive: after a restart, those of the previous run.
    pub fn adoptable(&self) -> Vec<Sandbox> {
        self.inner.state.lock().sandboxes.values().map(|r| r.sandbox.clone()).collect()
    }

    /// The pod's sandbox if it has one.
    pub fn get(&self, pod_uid: &str) -> Option<Sandbox> {
        self.inner.state.lock().sandboxes.get(pod_uid).map(|r| r.sandbox.clone())
    }

    /// Number of prepared sandboxes waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.inner.state.lock().pool.len()
    }

    /// Destroys recorded sandboxes whose pod is not in `keep`, records whose namespace vanished,
    /// dead or surplus pool entries, and namespaces with our prefix that nothing records; releases
    /// addresses host-local still holds for unknown container ids. Returns how many sandboxes,
    /// pool entries and namespaces it removed.
    pub async fn sweep(&self, keep: &HashSet<String>) -> usize {
        let inner = self.inner.clone();
        let keep = keep.clone();
        let span = tracing::info_span!("sandbox_sweep", keep = keep.len());
        let pool_size = inner.cfg.pool_size;
        tokio::spawn(async move { inner.sweep(&keep, pool_size).await }.instrument(span)).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "sandbox sweep task failed");
            0
        })
    }

    /// Removes every sandbox, the pool and the bridge link; the manager creates nothing afterwards.
    pub async fn teardown_all(&self) {
        let inner = self.inner.clone();
        let span = tracing::info_span!("sandbox_teardown_all", bridge = %inner.cfg.bridge);
        if let Err(e) = tokio::spawn(async move { inner.teardown_all().await }.instrument(span)).await {
            tracing::warn!(error = %e, "sandbox teardown task failed");
        }
    }

    /// The configuration this manager runs with.
    pub fn config(&self) -> &NetworkConfig {
        &self.inner.cfg
    }

    /// The pods' gateway: the bridge's address.
    pub fn gateway(&self) -> IpAddr {
        IpAddr::V4(self.inner.cni.gateway())
    }
}

impl Drop for SandboxManager {
    fn drop(&mut self) {
        // Stop the refill task; what exists stays recorded for the next run.
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.refill.notify_one();
    }
}

impl Inner {
    pub(crate) fn cni(&self) -> &Cni {
        &self.cni
    }

    pub(crate) fn netns_prefix(&self) -> &str {
        &self.cfg.netns_prefix
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Reserves a pool slot and a container id when the pool is short of `pool_size`.
    pub(crate) fn start_pool_prepare(&self) -> Option<String> {
        let mut st = self.state.lock();
        if self.is_closed() || st.pool.len() + st.preparing >= self.cfg.pool_size {
            return None;
        }
        let id = new_id();
        st.preparing += 1;
        st.busy.insert(id.clone());
        Some(id)
    }

    /// Records a prepared sandbox and puts it in the pool (or cleans up after a failure).
    pub(crate) async fn finish_pool_prepare(&self, id: &str, res: Result<Prepared, SandboxError>) {
        let res = match res {
            Ok(p) => match self.store.put_pool(&p).await {
                Ok(()) => Ok(p),
                Err(e) => {
                    self.unwire_logged(&p.container_id, &p.netns_path, &[], Some(&p.bridge_result)).await;
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        let mut st = self.state.lock();
        st.preparing -= 1;
        st.busy.remove(id);
        match res {
            Ok(p) => {
                tracing::debug!(ip = %p.ip, "pool sandbox ready");
                st.pool.push_back(p);
            }
            Err(e) => tracing::warn!(error = %e, "preparing a pool sandbox failed"),
        }
    }

    fn pod_lock(&self, uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.pod_locks.lock().entry(uid.to_string()).or_default().clone()
    }

    fn release_pod_lock(&self, uid: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.pod_locks.lock();
        // Only the map and `lock` hold it: nobody waits, forget it.
        if Arc::strong_count(&lock) <= 2 {
            locks.remove(uid);
        }
    }

    async fn create(&self, uid: &str, ports: &[PortMapping]) -> Result<Sandbox, SandboxError> {
        if self.is_closed() {
            return Err(SandboxError::Closed);
        }
        let lock = self.pod_lock(uid);
        let guard = lock.clone().lock_owned().await;
        let res = self.create_locked(uid, ports).await;
        drop(guard);
        self.release_pod_lock(uid, lock);
        res
    }

    async fn create_locked(&self, uid: &str, ports: &[PortMapping]) -> Result<Sandbox, SandboxError> {
        let stale = {
            let mut st = self.state.lock();
            if let Some(rec) = st.sandboxes.get(uid) {
                return Ok(rec.sandbox.clone());
            }
            let i = st.stale_pods.iter().position(|r| r.sandbox.pod_uid == uid);
            let rec = i.map(|i| st.stale_pods.remove(i));
            if let Some(r) = &rec {
                st.busy.insert(r.sandbox.container_id.clone());
            }
            rec
        };
        if let Some(rec) = stale {
            // The pod had a sandbox in a previous run that did not survive: release it first.
            let _ = self.release_stale_locked(rec).await;
        }
        let started = Instant::now();
        let pooled = {
            let mut st = self.state.lock();
            let p = st.pool.pop_front();
            if let Some(p) = &p {
                st.busy.insert(p.container_id.clone());
            }
            p
        };
        let from_pool = pooled.is_some();
        let prepared = match pooled {
            Some(p) => {
                self.refill.notify_one();
                p
            }
            None => {
                let id = new_id();
                self.state.lock().busy.insert(id.clone());
                match wire::prepare(&self.cni, &self.cfg.netns_prefix, &id).await {
                    Ok(p) => p,
                    Err(e) => {
                        self.state.lock().busy.remove(&id);
                        return Err(e);
                    }
                }
            }
        };
        let id = prepared.container_id.clone();
        match self.attach(uid, ports, &prepared).await {
            Ok(rec) => {
                let sandbox = rec.sandbox.clone();
                {
                    let mut st = self.state.lock();
                    st.sandboxes.insert(uid.to_string(), rec);
                    st.busy.remove(&id);
                }
                if from_pool {
                    if let Err(e) = self.store.remove_pool(&id).await {
                        tracing::warn!(error = %e, "removing the pool record of a used sandbox");
                    }
                }
                tracing::info!(
                    ip = %sandbox.ip, container_id = %id, from_pool, elapsed_us = started.elapsed().as_micros() as u64,
                    "sandbox created"
                );
                Ok(sandbox)
            }
            Err(e) => {
                if from_pool {
                    // Still a good prepared sandbox (attach undid its port mappings): back to the pool.
                    let mut st = self.state.lock();
                    st.pool.push_front(prepared);
                    st.busy.remove(&id);
                } else {
                    self.unwire_logged(&id, &prepared.netns_path, &[], Some(&prepared.bridge_result)).await;
                    self.state.lock().busy.remove(&id);
                }
                Err(e)
            }
        }
    }

    /// Gives a prepared sandbox to a pod: host ports, then the record on disk.
    async fn attach(&self, uid: &str, ports: &[PortMapping], p: &Prepared) -> Result<SandboxRecord, SandboxError> {
        wire::map_ports(&self.cni, p, ports).await?;
        let rec = SandboxRecord {
            sandbox: Sandbox {
                pod_uid: uid.to_string(),
                container_id: p.container_id.clone(),
                netns_path: p.netns_path.clone(),
                ip: p.ip,
                gateway: p.gateway,
                ports: ports.to_vec(),
            },
            bridge_result: p.bridge_result.clone(),
        };
        if let Err(e) = self.store.put_sandbox(&rec).await {
            if !ports.is_empty() {
                let del = self.cni.portmap(Command::Del, &p.container_id, &p.netns_path, ports, Some(&p.bridge_result));
                if let Err(e) = del.await {
                    tracing::warn!(error = %e, "removing port mappings after a failed record write");
                }
            }
            return Err(e);
        }
        Ok(rec)
    }

    async fn destroy(&self, uid: &str) -> Result<(), SandboxError> {
        let lock = self.pod_lock(uid);
        let guard = lock.clone().lock_owned().await;
        let res = self.destroy_locked(uid).await;
        drop(guard);
        self.release_pod_lock(uid, lock);
        res
    }

    async fn destroy_locked(&self, uid: &str) -> Result<(), SandboxError> {
        let rec = {
            let mut st = self.state.lock();
            let Some(rec) = st.sandboxes.get(uid).cloned() else {
                return Ok(());
            };
            st.busy.insert(rec.sandbox.container_id.clone());
            rec
        };
        let s = &rec.sandbox;
        let mut res = wire::unwire(&self.cni, &s.container_id, &s.netns_path, &s.ports, Some(&rec.bridge_result)).await;
        if res.is_ok() {
            res = self.store.remove_sandbox(uid).await;
        }
        let mut st = self.state.lock();
        if res.is_ok() {
            st.sandboxes.remove(uid);
        }
        st.busy.remove(&s.container_id);
        match &res {
            Ok(()) => tracing::info!(ip = %s.ip, container_id = %s.container_id, "sandbox destroyed"),
            Err(e) => tracing::warn!(error = %e, "destroying sandbox failed"),
        }
        res
    }

    /// Releases a dead sandbox of a previous run (the pod's lock is held, the caller marked its
    /// container id busy); kept for a later sweep on failure.
    async fn release_stale_locked(&self, rec: SandboxRecord) -> Result<(), SandboxError> {
        let s = &rec.sandbox;
        let id = s.container_id.clone();
        let mut res = wire::unwire(&self.cni, &id, &s.netns_path, &s.ports, Some(&rec.bridge_result)).await;
        if res.is_ok() && !self.state.lock().sandboxes.contains_key(&s.pod_uid) {
            res = self.store.remove_sandbox(&s.pod_uid).await;
        }
        let mut st = self.state.lock();
        st.busy.remove(&id);
        match &res {
            Ok(()) => tracing::info!(pod_uid = %s.pod_uid, container_id = %id, "released a stale sandbox"),
            Err(e) => {
                tracing::warn!(pod_uid = %s.pod_uid, error = %e, "releasing a stale sandbox failed");
                st.stale_pods.push(rec.clone());
            }
        }
        res
    }

    async fn unwire_logged(&self, id: &str, netns: &Path, ports: &[PortMapping], result: Option<&serde_json::Value>) {
        if let Err(e) = wire::unwire(&self.cni, id, netns, ports, result).await {
            tracing::warn!(container_id = id, error = %e, "removing a sandbox failed");
        }
    }

    async fn sweep(&self, keep: &HashSet<String>, pool_keep: usize) -> usize {
        let _one_at_a_time = self.sweeping.lock().await;
        let mut removed = 0;

        // Pods nobody wants any more.
        let unwanted: Vec<String> =
            self.state.lock().sandboxes.keys().filter(|uid| !keep.contains(*uid)).cloned().collect();
        for uid in unwanted {
            if self.destroy(&uid).await.is_ok() {
                removed += 1;
            }
        }

        // Records of a previous run whose namespace is gone: release what the plugins still hold.
        let stale_pods: Vec<SandboxRecord> = {
            let mut st = self.state.lock();
            let taken = std::mem::take(&mut st.stale_pods);
            st.busy.extend(taken.iter().map(|r| r.sandbox.container_id.clone()));
            taken
        };
        for rec in stale_pods {
            let uid = rec.sandbox.pod_uid.clone();
            let lock = self.pod_lock(&uid);
            let guard = lock.clone().lock_owned().await;
            if self.release_stale_locked(rec).await.is_ok() {
                removed += 1;
            }
            drop(guard);
            self.release_pod_lock(&uid, lock);
        }

        // Dead, stale and surplus pool entries.
        let drop_pool: Vec<Prepared> = {
            let mut st = self.state.lock();
            let mut out = std::mem::take(&mut st.stale_pool);
            let pool = std::mem::take(&mut st.pool);
            for p in pool {
                if is_live_netns(&p.netns_path) && st.pool.len() < pool_keep {
                    st.pool.push_back(p);
                } else {
                    out.push(p);
                }
            }
            for p in &out {
                st.busy.insert(p.container_id.clone());
            }
            out
        };
        for p in drop_pool {
            let res = wire::unwire(&self.cni, &p.container_id, &p.netns_path, &[], Some(&p.bridge_result)).await;
            let res = match res {
                Ok(()) => self.store.remove_pool(&p.container_id).await,
                Err(e) => Err(e),
            };
            let mut st = self.state.lock();
            st.busy.remove(&p.container_id);
            match res {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(container_id = %p.container_id, error = %e, "removing a pool sandbox failed");
                    st.stale_pool.push(p);
                }
            }
        }

        // Namespaces with our prefix that nothing records (e.g. a crash between setup and record).
        let names = list_netns(&self.cfg.netns_prefix);
        let known = self.state.lock().known_ids();
        for name in names {
            let Some(id) = name.strip_prefix(&self.cfg.netns_prefix) else {
                continue;
            };
            if !is_our_id(id) || known.contains(id) {
                continue;
            }
            let netns = wire::netns_of(&self.cfg.netns_prefix, id);
            match wire::unwire(&self.cni, id, &netns, &[], None).await {
                Ok(()) => {
                    tracing::info!(netns = %name, "removed an unrecorded network namespace");
                    removed += 1;
                }
                Err(e) => tracing::warn!(netns = %name, error = %e, "removing an unrecorded network namespace"),
            }
        }

        // Addresses host-local still holds for container ids nobody knows.
        let leases = ipam_leases(&self.ipam_dir.join(NETWORK_NAME));
        let known = self.state.lock().known_ids();
        for (ip, id) in leases {
            if known.contains(&id) {
                continue;
            }
            match self.cni.bridge(Command::Del, &id, Path::new(""), None).await {
                Ok(_) => tracing::info!(%ip, container_id = %id, "released a leaked pod address"),
                Err(e) => tracing::warn!(%ip, container_id = %id, error = %e, "releasing a leaked pod address"),
            }
        }
        removed
    }

    async fn teardown_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.refill.notify_one();
        // Wait for pool entries being prepared: they land in the pool and are removed below.
        let _all = self.permits.acquire_many(REFILL_CONCURRENCY as u32).await;
        let removed = self.sweep(&HashSet::new(), 0).await;
        match tokio::process::Command::new("ip").args(["link", "del", "dev", &self.cfg.bridge]).output().await {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                if !err.contains("Cannot find device") {
                    tracing::warn!(bridge = %self.cfg.bridge, error = %err.trim(), "deleting the bridge");
                }
            }
            Err(e) => tracing::warn!(bridge = %self.cfg.bridge, error = %e, "running ip link del"),
        }
        tracing::info!(removed, "sandboxes torn down");
    }
}

/// Loads the records of a previous run: live ones are adopted, dead ones kept for the sweep.
fn load_state(store: &RecordStore, pool_size: usize) -> State {
    let mut st = State::default();
    for rec in store.load_sandboxes() {
        if is_live_netns(&rec.sandbox.netns_path) {
            st.sandboxes.insert(rec.sandbox.pod_uid.clone(), rec);
        } else {
            st.stale_pods.push(rec);
        }
    }
    let used: HashSet<String> = st
        .sandboxes
        .values()
        .map(|r| &r.sandbox)
        .chain(st.stale_pods.iter().map(|r| &r.sandbox))
        .map(|s| s.container_id.clone())
        .collect();
    for p in store.load_pool() {
        if used.contains(&p.container_id) {
            // Handed to a pod just before a crash: the pod record owns it now.
            let _ = std::fs::remove_file(store_pool_path(store, &p.container_id));
        } else if is_live_netns(&p.netns_path) && st.pool.len() < pool_size {
            st.pool.push_back(p);
        } else {
            st.stale_pool.push(p);
        }
    }
    st
}

fn store_pool_path(store: &RecordStore, id: &str) -> PathBuf {
    store.pool_dir().join(format!("{id}.json"))
}

/// `(address, container id)` of every lease in a host-local data directory.
fn ipam_leases(dir: &Path) -> Vec<(IpAddr, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let ip: IpAddr = e.file_name().to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(e.path()).ok()?;
            let id = text.lines().next()?.trim().to_string();
            (!id.is_empty()).then_some((ip, id))
        })
        .collect()
}

/// A fresh container id: 16 lowercase hex digits.
fn new_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(nanos.to_le_bytes());
    h.update(SEQ.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hex::encode(&h.finalize()[..8])
}

/// Whether `s` is a container id [`new_id`] could have made.
fn is_our_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Pod uids name record files: keep them to safe characters.
fn check_pod_uid(uid: &str) -> Result<(), SandboxError> {
    if uid.is_empty() || uid.len() > 253 || uid.starts_with('.') || !uid.chars().all(is_name_char) {
        return Err(SandboxError::InvalidPodUid(uid.to_string()));
    }
    Ok(())
}
