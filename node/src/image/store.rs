//! The node's image store: `ensure()` applies the pull policy, serves cache hits from memory, shares one
//! pull among concurrent callers (single flight) and records pulled images in the on-disk index.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::{Mutex, RwLock};
use tracing::Instrument;

use super::auth::RegistryAuth;
use super::cache::CacheDir;
use super::error::ImageError;
use super::gc::{self, DiskUse, GcPolicy, ImageUse};
use super::manifest::{fetch_top, select_image_manifest};
use super::mirrors::{Endpoint, RegistriesConfig};
use super::pull::PullCtx;
use super::reference::{ImageRef, PullPolicy};
use super::registry::client_for;
use super::{ImageConfig, WasmImage};

type PullKey = (String, Option<RegistryAuth>);
type SharedPull = Shared<BoxFuture<'static, Result<Arc<WasmImage>, ImageError>>>;

/// The result of [`ImageStore::ensure`].
#[derive(Debug, Clone)]
pub struct Pulled {
    pub image: Arc<WasmImage>,
    /// `true` when the registry was consulted (a pull), `false` when the node's copy was used as is.
    pub pulled: bool,
}

/// Images on this node: an in-memory map backed by the content-addressed cache directory.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ImageConfig,
    cache: CacheDir,
    images: RwLock<HashMap<String, Arc<WasmImage>>>,
    inflight: Mutex<HashMap<PullKey, SharedPull>>,
    clients: Mutex<HashMap<PullKey, oci_client::Client>>,
    index_write: tokio::sync::Mutex<()>,
    pulls: AtomicU64,
    downloads: AtomicU64,
    /// When the node first had each image and when a container last asked for it (image GC).
    uses: Mutex<HashMap<String, Use>>,
    /// Where Linux layers may be held already (containerd, once connected).
    layer_holder: std::sync::OnceLock<Arc<dyn super::LayerHolder>>,
}

#[derive(Clone, Copy, Debug)]
struct Use {
    first_seen: SystemTime,
    last_used: SystemTime,
}

/// What one image collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// The removed images' references.
    pub removed: Vec<String>,
    /// Bytes of files removed (the images' and blobs no image needs any more).
    pub freed: u64,
}

impl ImageStore {
    /// Opens the cache under `cfg.cache_dir` and loads its index (reference -> image).
    pub fn new(cfg: ImageConfig) -> Result<Self, ImageError> {
        let cache = CacheDir::open(&cfg.cache_dir)?;
        let images: HashMap<String, Arc<WasmImage>> =
            cache.load_index()?.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        cache.sweep_orphan_roots(images.values().map(|i| i.as_ref()));
        // Images found at start count as first seen, and used, now (as the kubelet detects them).
        let now = SystemTime::now();
        let uses = images.keys().map(|k| (k.clone(), Use { first_seen: now, last_used: now })).collect();
        Ok(ImageStore {
            inner: Arc::new(Inner {
                cfg,
                cache,
                images: RwLock::new(images),
                inflight: Mutex::new(HashMap::new()),
                clients: Mutex::new(HashMap::new()),
                index_write: tokio::sync::Mutex::new(()),
                pulls: AtomicU64::new(0),
                downloads: AtomicU64::new(0),
                uses: Mutex::new(uses),
                layer_holder: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Makes `reference` available on this node according to `policy`. Concurrent calls for the same
    /// reference and credentials share one pull; an `IfNotPresent` hit is a map lookup.
    pub async fn ensure(
        &self,
        reference: &str,
        policy: PullPolicy,
        auth: Option<&RegistryAuth>,
    ) -> Result<Pulled, ImageError> {
        let image = ImageRef::parse(reference)?;
        self.inner.used(&image.normalized);
        let cached = self.inner.images.read().get(&image.normalized).cloned();
        match (policy, cached) {
            (PullPolicy::IfNotPresent | PullPolicy::Never, Some(image)) => return Ok(Pulled { image, pulled: false }),
            (PullPolicy::Never, None) => return Err(ImageError::NotPresent { reference: image.normalized }),
            _ => {}
        }
        let key: PullKey = (image.normalized.clone(), auth.cloned());
        let shared = {
            let mut inflight = self.inner.inflight.lock();
            match inflight.get(&key) {
                Some(running) => running.clone(),
                None => {
                    let inner = self.inner.clone();
                    let task_key = key.clone();
                    let span = tracing::info_span!("image_pull", reference = %image.normalized);
                    let task = tokio::spawn(
                        async move {
                            let result = inner.pull(&image, task_key.1.as_ref()).await;
                            inner.inflight.lock().remove(&task_key);
                            result
                        }
                        .instrument(span),
                    );
                    let shared = task
                        .map(|joined| {
                            joined.unwrap_or_else(|e| {
                                Err(ImageError::io("pulling", "", std::io::Error::other(format!("pull task: {e}"))))
                            })
                        })
                        .boxed()
                        .shared();
                    inflight.insert(key, shared.clone());
                    shared
                }
            }
        };
        let image = shared.await?;
        Ok(Pulled { image, pulled: true })
    }

    /// The node's copy of `reference`, if any (memory only).
    pub fn cached(&self, reference: &str) -> Option<Arc<WasmImage>> {
        let normalized = ImageRef::parse(reference).ok()?.normalized;
        self.inner.images.read().get(&normalized).cloned()
    }

    /// The file of blob `digest` in the cache, if it is there.
    pub fn blob_file(&self, digest: &str) -> Option<PathBuf> {
        self.inner.cache.blob_path(digest).filter(|p| p.is_file())
    }

    /// From now on a pull skips the Linux layers `holder` holds already (the first holder set stays).
    pub fn set_layer_holder(&self, holder: Arc<dyn super::LayerHolder>) {
        let _ = self.inner.layer_holder.set(holder);
    }

    /// Removes the cache's copies of blobs another store now holds (a Linux image's layers, once
    /// in containerd); a missing one is fine.
    pub fn drop_blobs<'a>(&self, digests: impl IntoIterator<Item = &'a str>) {
        for path in digests.into_iter().filter_map(|d| self.inner.cache.blob_path(d)) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "removing a blob"),
            }
        }
    }

    /// Drops `reference` from the node's images (its next `ensure` pulls it again).
    pub async fn forget(&self, reference: &str) -> Result<(), ImageError> {
        let normalized = ImageRef::parse(reference)?.normalized;
        if self.inner.images.write().remove(&normalized).is_some() {
            self.inner.save_index().await?;
        }
        Ok(())
    }

    /// How many pulls (registry resolutions) this store has started.
    pub fn pulls(&self) -> u64 {
        self.inner.pulls.load(Ordering::Relaxed)
    }

    /// How many blobs this store has downloaded.
    pub fn blob_downloads(&self) -> u64 {
        self.inner.downloads.load(Ordering::Relaxed)
    }

    /// Image garbage collection: when the filesystem of the cache is fuller than `policy`'s high
    /// mark, removes the images [`gc::choose`] picks (none of `in_use`, references as pods write
    /// them), then the blobs no remaining image needs that are older than the minimum age (layers
    /// and configs of unpacked images: a later pull fetches them again). Skipped while a pull is
    /// under way (its blobs are not yet an image's).
    pub async fn collect(&self, in_use: &[String], policy: &GcPolicy) -> Result<Collected, ImageError> {
        if !self.inner.inflight.lock().is_empty() {
            return Ok(Collected::default());
        }
        let in_use: HashSet<String> =
            in_use.iter().filter_map(|r| ImageRef::parse(r).ok()).map(|r| r.normalized).collect();
        let images: Vec<(String, Arc<WasmImage>)> =
            self.inner.images.read().iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect();
        let uses = self.inner.uses.lock().clone();
        let (root, policy_copy) = (self.inner.cache.root().to_path_buf(), *policy);
        let chosen = tokio::task::spawn_blocking(move || {
            let disk = disk_use(&root)?;
            let now = SystemTime::now();
            let listed = image_uses(&images, &uses, now);
            Ok::<_, ImageError>(gc::choose(&listed, &in_use, disk, &policy_copy, now))
        })
        .await
        .map_err(|e| ImageError::io("collecting", "", std::io::Error::other(e)))??;
        if chosen.is_empty() {
            return Ok(Collected::default());
        }
        let removed: Vec<Arc<WasmImage>> = {
            let mut map = self.inner.images.write();
            chosen.iter().filter_map(|r| map.remove(r)).collect()
        };
        {
            let mut uses = self.inner.uses.lock();
            chosen.iter().for_each(|r| {
                uses.remove(r);
            });
        }
        self.inner.save_index().await?;
        let remaining: Vec<Arc<WasmImage>> = self.inner.images.read().values().cloned().collect();
        let (cache, min_age) = (self.inner.cache.clone(), policy.min_age);
        let freed = tokio::task::spawn_blocking(move || cache.remove_unneeded(&removed, &remaining, min_age))
            .await
            .map_err(|e| ImageError::io("collecting", "", std::io::Error::other(e)))?;
        tracing::info!(removed = ?chosen, freed, "image garbage collection");
        Ok(Collected { removed: chosen, freed })
    }
}

/// The node's images as collection sees them: references whose files are the same (one unpacked
/// root, one Wasm blob, or one Linux manifest) are one image, its size counted once, first seen
/// when the first of them was and last used when the last of them was.
fn image_uses(images: &[(String, Arc<WasmImage>)], uses: &HashMap<String, Use>, now: SystemTime) -> Vec<ImageUse> {
    let mut by_content: BTreeMap<String, ImageUse> = BTreeMap::new();
    for (reference, image) in images {
        let u = uses.get(reference).copied().unwrap_or(Use { first_seen: now, last_used: now });
        let entry = by_content.entry(content_key(image)).or_insert_with(|| ImageUse {
            references: Vec::new(),
            size: files_size(image),
            first_seen: u.first_seen,
            last_used: u.last_used,
        });
        entry.references.push(reference.clone());
        entry.first_seen = entry.first_seen.min(u.first_seen);
        entry.last_used = entry.last_used.max(u.last_used);
    }
    let mut listed: Vec<ImageUse> = by_content.into_values().collect();
    listed.iter_mut().for_each(|i| i.references.sort());
    listed
}

/// What an image's files are, whichever reference names it.
fn content_key(image: &WasmImage) -> String {
    match (&image.rootfs, &image.linux) {
        (Some(root), _) => format!("rootfs:{}", root.display()),
        (None, Some(linux)) => format!("linux:{}", linux.manifest.digest),
        (None, None) => format!("wasm:{}", image.wasm_path.display()),
    }
}

/// Size and use of the filesystem holding `dir` (use = capacity - what is available to users, as
/// the kubelet counts it).
fn disk_use(dir: &Path) -> Result<DiskUse, ImageError> {
    let vfs = nix::sys::statvfs::statvfs(dir).map_err(|e| ImageError::io("statvfs", dir, std::io::Error::from(e)))?;
    #[allow(clippy::useless_conversion)]
    let (blocks, available, frsize) =
        (u64::from(vfs.blocks()), u64::from(vfs.blocks_available()), u64::from(vfs.fragment_size()));
    let capacity = blocks.saturating_mul(frsize);
    Ok(DiskUse { capacity, used: capacity.saturating_sub(available.saturating_mul(frsize)) })
}

/// The bytes of an image's own files: its unpacked root, its Wasm blob, or (a Linux image, in
/// containerd) its compressed layers.
fn files_size(image: &WasmImage) -> u64 {
    match (&image.rootfs, &image.linux) {
        (Some(root), _) => super::cache::tree_size(root),
        (None, Some(linux)) => linux.layers.iter().map(|l| u64::try_from(l.size).unwrap_or(0)).sum(),
        (None, None) => std::fs::metadata(&image.wasm_path).map_or(0, |m| m.len()),
    }
}

impl Inner {
    /// Notes that a container asked for `reference` now.
    fn used(&self, reference: &str) {
        let now = SystemTime::now();
        self.uses
            .lock()
            .entry(reference.to_string())
            .and_modify(|u| u.last_used = now)
            .or_insert(Use { first_seen: now, last_used: now });
    }
}

impl Inner {
    fn client(&self, endpoint: &Endpoint, auth: Option<&RegistryAuth>) -> oci_client::Client {
        let mut clients = self.clients.lock();
        clients
            .entry((endpoint.host.clone(), auth.cloned()))
            .or_insert_with(|| {
                let mut insecure = self.cfg.insecure_registries.clone();
                if endpoint.plain_http {
                    insecure.push(endpoint.host.clone());
                }
                client_for(&endpoint.host, &insecure, endpoint.skip_verify)
            })
            .clone()
    }

    async fn pull(&self, image: &ImageRef, auth: Option<&RegistryAuth>) -> Result<Arc<WasmImage>, ImageError> {
        self.pulls.fetch_add(1, Ordering::Relaxed);
        // A mirror serves the bytes; the image keeps its name (and its ID names the original repository).
        let endpoint = self.cfg.registries.endpoint(image);
        let image_id_repo = image.repo();
        let image = &RegistriesConfig::at(image, &endpoint);
        let configured =
            self.cfg.registries.auth(&endpoint.host).or_else(|| self.cfg.registries.auth(image.registry()));
        let auth = auth.or(configured.as_ref());
        let client = self.client(&endpoint, auth);
        let oci_auth = RegistryAuth::to_oci(auth);
        let (top, top_digest) = fetch_top(&client, image, &oci_auth).await?;
        let image_id = format!("{image_id_repo}@{top_digest}");
        if let Some(current) = self.images.read().get(&image.normalized) {
            if current.image_id == image_id {
                tracing::debug!(%image_id, "image unchanged at the registry");
                return Ok(current.clone());
            }
        }
        let manifest = select_image_manifest(&client, image, &oci_auth, &top, &top_digest).await?;
        let ctx = PullCtx {
            client: &client,
            cache: &self.cache,
            image,
            downloads: &self.downloads,
            layer_holder: self.layer_holder.get().map(|h| h.as_ref()),
        };
        let pulled = Arc::new(ctx.materialize(&manifest, image_id).await?);
        tracing::info!(image_id = %pulled.image_id, wasm_digest = %pulled.wasm_digest, "image pulled");
        self.images.write().insert(image.normalized.clone(), pulled.clone());
        self.save_index().await?;
        Ok(pulled)
    }

    /// Writes the index; writers are serialized so a later snapshot is never overwritten by an older one.
    async fn save_index(&self) -> Result<(), ImageError> {
        let _guard = self.index_write.lock().await;
        let snapshot: HashMap<String, WasmImage> =
            self.images.read().iter().map(|(k, v)| (k.clone(), WasmImage::clone(v))).collect();
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || cache.save_index(snapshot))
            .await
            .unwrap_or_else(|e| Err(ImageError::io("writing", "index.json", std::io::Error::other(e))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{normalize_reference, BlobRef, ImageConfig, ImageKind, LinuxContent};

    /// A Linux image in the cache: one layer blob of `size` bytes, its index entry.
    fn linux_image(cache: &Path, reference: &str, hex: char, size: usize) -> (String, WasmImage) {
        let blob = |c: char, size: i64| BlobRef {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest: format!("sha256:{}", c.to_string().repeat(64)),
            size,
        };
        let layer = blob(hex, i64::try_from(size).expect("size"));
        let dir = cache.join("blobs/sha256");
        std::fs::create_dir_all(&dir).expect("blobs");
        std::fs::write(dir.join(hex.to_string().repeat(64)), vec![0u8; size]).expect("layer");
        // Each image its own manifest (named after its layer), one config they share.
        let manifest = BlobRef { digest: format!("sha256:{hex}{}", "e".repeat(63)), ..blob('e', 10) };
        let linux = LinuxContent { manifest, config: blob('f', 10), layers: vec![layer], diff_ids: vec![] };
        let reference = normalize_reference(reference).expect("reference");
        let image = WasmImage {
            reference: reference.clone(),
            image_id: format!("{reference}@sha256:{}", hex.to_string().repeat(64)),
            wasm_path: Default::default(),
            wasm_digest: String::new(),
            rootfs: None,
            entrypoint: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            kind: ImageKind::Linux,
            cmd: vec!["sh".into()],
            user: None,
            stop_signal: None,
            linux: Some(linux),
        };
        (reference, image)
    }

    #[test]
    fn references_to_one_manifest_are_one_image_counted_once() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, image) = linux_image(dir.path(), "app:1", 'a', 1000);
        let alias = WasmImage { reference: normalize_reference("app:latest").expect("reference"), ..image.clone() };
        let (b, other) = linux_image(dir.path(), "other:1", 'b', 3000);
        let images = vec![
            (a.clone(), Arc::new(image)),
            (alias.reference.clone(), Arc::new(alias.clone())),
            (b.clone(), Arc::new(other)),
        ];
        let now = SystemTime::now();
        let earlier = now - std::time::Duration::from_secs(60);
        let uses = HashMap::from([(a.clone(), Use { first_seen: earlier, last_used: earlier })]);
        let listed = image_uses(&images, &uses, now);
        assert_eq!(listed.len(), 2, "{listed:?}");
        let app = listed.iter().find(|i| i.references.contains(&a)).expect("app");
        assert_eq!(app.references, {
            let mut both = vec![a.clone(), alias.reference.clone()];
            both.sort();
            both
        });
        assert_eq!(app.size, 1000, "its layer once, not once per tag");
        assert_eq!((app.first_seen, app.last_used), (earlier, now), "the first seen and the last used of its tags");
    }

    #[tokio::test]
    async fn collection_removes_unused_images_and_their_files_and_keeps_used_ones() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = CacheDir::open(dir.path()).expect("cache");
        let images: HashMap<String, WasmImage> =
            [linux_image(dir.path(), "busybox", 'a', 1000), linux_image(dir.path(), "127.0.0.1:5000/old:1", 'b', 3000)]
                .into_iter()
                .collect();
        cache.save_index(images).expect("index");
        let stray = cache.blob_path(&format!("sha256:{}", "c".repeat(64))).expect("blob path");
        std::fs::write(&stray, vec![1u8; 500]).expect("blob");
        let store =
            ImageStore::new(ImageConfig { cache_dir: dir.path().to_path_buf(), ..Default::default() }).expect("store");

        // The defaults: however full this test's filesystem is, images the node has had for less
        // than two minutes stay.
        let none = store.collect(&["busybox".into()], &GcPolicy::default()).await.expect("collect");
        assert_eq!(none, Collected::default());

        // Forced to 0 %: every image no pod uses goes, with the blobs nothing needs (a Linux image's
        // layers are containerd's once it runs: the cache's copies go too).
        let zero = GcPolicy::new(0, 0, std::time::Duration::ZERO).expect("policy");
        let done = store.collect(&["busybox".into()], &zero).await.expect("collect");
        let old = normalize_reference("127.0.0.1:5000/old:1").expect("reference");
        assert_eq!(done.removed, [old], "{done:?}");
        assert!(done.freed >= 3500, "{done:?}");
        assert!(store.cached("busybox").is_some() && store.cached("127.0.0.1:5000/old:1").is_none());
        assert!(cache.blob_path(&format!("sha256:{}", "b".repeat(64))).is_some_and(|p| !p.exists()), "layer gone");
        assert!(!stray.exists(), "a blob no image needs is gone");
        // The index on disk agrees: a new store finds only busybox.
        let reopened =
            ImageStore::new(ImageConfig { cache_dir: dir.path().to_path_buf(), ..Default::default() }).expect("store");
        assert!(reopened.cached("busybox").is_some() && reopened.cached("127.0.0.1:5000/old:1").is_none());
        // Nothing more to take.
        assert_eq!(store.collect(&["busybox".into()], &zero).await.expect("collect"), Collected::default());
    }
}
