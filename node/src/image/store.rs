//! The node's image store: `ensure()` applies the pull policy, serves cache hits from memory, shares one
//! pull among concurrent callers (single flight) and records pulled images in the on-disk index.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::{Mutex, RwLock};
use tracing::Instrument;

use super::auth::RegistryAuth;
use super::cache::CacheDir;
use super::error::ImageError;
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
}

impl ImageStore {
    /// Opens the cache under `cfg.cache_dir` and loads its index (reference -> image).
    pub fn new(cfg: ImageConfig) -> Result<Self, ImageError> {
        let cache = CacheDir::open(&cfg.cache_dir)?;
        let images = cache.load_index()?.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
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

    /// How many pulls (registry resolutions) this store has started.
    pub fn pulls(&self) -> u64 {
        self.inner.pulls.load(Ordering::Relaxed)
    }

    /// How many blobs this store has downloaded.
    pub fn blob_downloads(&self) -> u64 {
        self.inner.downloads.load(Ordering::Relaxed)
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
        let ctx = PullCtx { client: &client, cache: &self.cache, image, downloads: &self.downloads };
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
