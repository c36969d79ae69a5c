//! Turning a resolved manifest into a runnable [`WasmImage`]: a Wasm artifact's `application/wasm` layer,
//! a `wasi/wasm` image's layers unpacked into a root filesystem whose entrypoint is a `.wasm` file, or a
//! Linux image (this node's architecture) unpacked for runc.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci_client::Client;
use serde::Deserialize;
use tracing::Instrument;

use super::cache::CacheDir;
use super::error::ImageError;
use super::manifest::{Descriptor, ImageManifest};
use super::reference::ImageRef;
use super::registry::map_oci_error;
use super::rootfs::resolve_in_root;
use super::unpack::{unpack_layers, UnpackError};
use super::{BlobRef, ImageKind, LinuxContent, WasmImage};

/// Config media types of Wasm OCI artifacts (the wasm-oci spec's v0, and oci-client's legacy v1).
pub(crate) const WASM_CONFIG_MEDIA_TYPES: &[&str] =
    &["application/vnd.wasm.config.v0+json", oci_client::manifest::WASM_CONFIG_MEDIA_TYPE];
/// Layer media types holding a Wasm module or component.
pub(crate) const WASM_LAYER_MEDIA_TYPES: &[&str] = &["application/wasm", oci_client::manifest::WASM_LAYER_MEDIA_TYPE];
const IMAGE_CONFIG_MEDIA_TYPES: &[&str] =
    &[oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE, oci_client::manifest::IMAGE_DOCKER_CONFIG_MEDIA_TYPE];
const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// What one pull needs: the registry connection, the cache, the download counter and where Linux
/// layers may be held already.
pub(crate) struct PullCtx<'a> {
    pub client: &'a Client,
    pub cache: &'a CacheDir,
    pub image: &'a ImageRef,
    pub downloads: &'a AtomicU64,
    pub layer_holder: Option<&'a dyn super::LayerHolder>,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    config: Option<ExecConfig>,
    #[serde(default)]
    rootfs: Option<RootFsConfig>,
}

#[derive(Deserialize, Default)]
struct RootFsConfig {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize, Default)]
struct ExecConfig {
    #[serde(rename = "Entrypoint")]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd")]
    cmd: Option<Vec<String>>,
    #[serde(rename = "Env")]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir")]
    working_dir: Option<String>,
    #[serde(rename = "User")]
    user: Option<String>,
    #[serde(rename = "StopSignal")]
    stop_signal: Option<String>,
}

/// This node's architecture as OCI platforms name it (`amd64`, `arm64`...).
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl PullCtx<'_> {
    fn not_wasm(&self, detail: impl Into<String>) -> ImageError {
        ImageError::NotWasm { reference: self.image.normalized.clone(), detail: detail.into() }
    }

    fn invalid(&self, detail: impl Into<String>) -> ImageError {
        ImageError::InvalidImage { reference: self.image.normalized.clone(), detail: detail.into() }
    }

    /// Builds the image from `manifest`; `image_id` is `<repo>@<digest the reference resolved to>`.
    pub async fn materialize(&self, manifest: &ImageManifest, image_id: String) -> Result<WasmImage, ImageError> {
        let config_type = manifest.config.media_type.as_str();
        let has_wasm_layer = manifest.layers.iter().any(|l| WASM_LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()));
        if WASM_CONFIG_MEDIA_TYPES.contains(&config_type) || (!is_image_config(config_type) && has_wasm_layer) {
            return self.artifact(manifest, image_id).await;
        }
        if is_image_config(config_type) {
            return self.regular(manifest, image_id).await;
        }
        Err(self.not_wasm(format!(
            "config media type {config_type} is neither a Wasm artifact config (application/vnd.wasm.config.v0+json) \
             nor an image config"
        )))
    }

    async fn artifact(&self, manifest: &ImageManifest, image_id: String) -> Result<WasmImage, ImageError> {
        let Some(layer) = manifest.layers.iter().find(|l| WASM_LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()))
        else {
            return Err(self.not_wasm(match manifest.layers.first() {
                Some(l) => format!("layer media type {} is not application/wasm", l.media_type),
                None => "the Wasm artifact has no layers".to_string(),
            }));
        };
        let path = self.blob(layer).await?;
        check_magic(&path).await.map_err(|e| match e {
            MagicError::NotWasm => self.not_wasm(format!("layer {} does not hold WebAssembly", layer.digest)),
            MagicError::Io(err) => err,
        })?;
        Ok(WasmImage {
            reference: self.image.normalized.clone(),
            image_id,
            wasm_path: path,
            wasm_digest: layer.digest.clone(),
            rootfs: None,
            entrypoint: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            kind: ImageKind::Wasm,
            cmd: Vec::new(),
            user: None,
            stop_signal: None,
            linux: None,
        })
    }

    async fn regular(&self, manifest: &ImageManifest, image_id: String) -> Result<WasmImage, ImageError> {
        let config_path = self.blob(&manifest.config).await?;
        let bytes =
            tokio::fs::read(&config_path).await.map_err(|e| ImageError::io("reading", config_path.clone(), e))?;
        let config: ConfigFile =
            serde_json::from_slice(&bytes).map_err(|e| self.invalid(format!("unreadable image config: {e}")))?;
        if config.architecture != "wasm" || !config.os.starts_with("wasi") {
            if config.os == "linux" && config.architecture == host_arch() {
                let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
                return self.linux(manifest, image_id, config.config.unwrap_or_default(), diff_ids).await;
            }
            return Err(self.not_wasm(format!(
                "image platform is {}/{}, neither wasi/wasm nor linux/{}",
                or_unknown(&config.os),
                or_unknown(&config.architecture),
                host_arch()
            )));
        }
        let exec = config.config.unwrap_or_default();
        let mut entrypoint = exec.entrypoint.unwrap_or_default();
        entrypoint.extend(exec.cmd.unwrap_or_default());
        let working_dir = exec.working_dir.filter(|w| !w.is_empty());
        let Some(program) = entrypoint.first().filter(|p| p.ends_with(".wasm")) else {
            return Err(self.not_wasm(format!("entrypoint {entrypoint:?} does not start with a .wasm file")));
        };
        let rootfs = self.rootfs(manifest).await?;
        let wasm_path = self.entry_file(&rootfs, program, working_dir.as_deref()).await?;
        let digest = sha256_file(&wasm_path).await?;
        let env = skiff_engine::env_pairs(exec.env.unwrap_or_default());
        Ok(WasmImage {
            reference: self.image.normalized.clone(),
            image_id,
            wasm_path,
            wasm_digest: digest,
            rootfs: Some(rootfs),
            entrypoint,
            env,
            working_dir,
            kind: ImageKind::Wasm,
            cmd: Vec::new(),
            user: None,
            stop_signal: None,
            linux: None,
        })
    }

    /// A Linux image for this node's architecture: its manifest and layers in the cache (until
    /// containerd holds them, `runtime/oci/image_import.rs`), its config kept for the runtime spec.
    async fn linux(
        &self,
        manifest: &ImageManifest,
        image_id: String,
        exec: ExecConfig,
        diff_ids: Vec<String>,
    ) -> Result<WasmImage, ImageError> {
        if manifest.layers.is_empty() {
            return Err(self.invalid("the image has no layers"));
        }
        if diff_ids.len() != manifest.layers.len() {
            return Err(self.invalid(format!(
                "its config lists {} layer digests (rootfs.diff_ids) for {} layers",
                diff_ids.len(),
                manifest.layers.len()
            )));
        }
        for layer in &manifest.layers {
            if !layer.media_type.contains("tar") {
                return Err(self.invalid(format!("layer media type {} is not a tar layer", layer.media_type)));
            }
            if self.held_elsewhere(layer).await {
                tracing::debug!(digest = %layer.digest, "layer held by containerd already: not downloaded");
                continue;
            }
            self.blob(layer).await?;
        }
        let manifest_path =
            self.cache.blob_path(&manifest.digest).ok_or_else(|| self.invalid("manifest digest is not sha256"))?;
        if !manifest_path.is_file() {
            let (path, bytes) = (manifest_path.clone(), manifest.bytes.clone());
            tokio::task::spawn_blocking(move || super::cache::write_atomic(&path, &bytes))
                .await
                .map_err(|e| ImageError::io("writing", manifest_path.clone(), std::io::Error::other(e)))??;
        }
        let blob =
            |d: &Descriptor| BlobRef { media_type: d.media_type.clone(), digest: d.digest.clone(), size: d.size };
        let linux = LinuxContent {
            manifest: BlobRef {
                media_type: manifest.media_type.clone(),
                digest: manifest.digest.clone(),
                size: i64::try_from(manifest.bytes.len()).unwrap_or(i64::MAX),
            },
            config: blob(&manifest.config),
            layers: manifest.layers.iter().map(blob).collect(),
            diff_ids,
        };
        Ok(WasmImage {
            reference: self.image.normalized.clone(),
            image_id,
            wasm_path: PathBuf::new(),
            wasm_digest: String::new(),
            rootfs: None,
            entrypoint: exec.entrypoint.unwrap_or_default(),
            env: skiff_engine::env_pairs(exec.env.unwrap_or_default()),
            working_dir: exec.working_dir.filter(|w| !w.is_empty()),
            kind: ImageKind::Linux,
            cmd: exec.cmd.unwrap_or_default(),
            user: exec.user.filter(|u| !u.is_empty()),
            stop_signal: exec.stop_signal.filter(|s| !s.is_empty()),
            linux: Some(linux),
        })
    }

    /// The entrypoint's file inside `rootfs` (symlinks resolved inside it), checked to be WebAssembly.
    async fn entry_file(&self, rootfs: &Path, program: &str, working_dir: Option<&str>) -> Result<PathBuf, ImageError> {
        let in_image = if program.starts_with('/') {
            program.to_string()
        } else {
            format!("{}/{program}", working_dir.unwrap_or("/"))
        };
        let path = resolve_in_root(rootfs, &in_image)
            .map_err(|detail| self.invalid(format!("entrypoint {program}: {detail}")))?;
        if !path.is_file() {
            return Err(self.invalid(format!("entrypoint {program} is not a file in the image")));
        }
        check_magic(&path).await.map_err(|e| match e {
            MagicError::NotWasm => self.not_wasm(format!("entrypoint {program} is not a WebAssembly file")),
            MagicError::Io(err) => err,
        })?;
        Ok(path)
    }

    /// `rootfs/<manifest hex>`, unpacked from all layers unless an earlier pull already did.
    async fn rootfs(&self, manifest: &ImageManifest) -> Result<PathBuf, ImageError> {
        let target =
            self.cache.rootfs_path(&manifest.digest).ok_or_else(|| self.invalid("manifest digest is not sha256"))?;
        if target.is_dir() {
            return Ok(target);
        }
        let mut blobs = Vec::with_capacity(manifest.layers.len());
        for layer in &manifest.layers {
            if !layer.media_type.contains("tar") {
                return Err(self.invalid(format!("layer media type {} is not a tar layer", layer.media_type)));
            }
            blobs.push(self.blob(layer).await?);
        }
        let tmp = CacheDir::tmp_for(&target);
        std::fs::create_dir_all(&tmp).map_err(|e| ImageError::io("creating", tmp.clone(), e))?;
        let tmp2 = tmp.clone();
        let unpacked = tokio::task::spawn_blocking(move || unpack_layers(&blobs, &tmp2))
            .await
            .unwrap_or_else(|e| Err(UnpackError::Invalid(format!("unpacking task failed: {e}"))));
        let result = match unpacked {
            Ok(()) => match std::fs::rename(&tmp, &target) {
                Ok(()) => Ok(target.clone()),
                // A concurrent pull of the same manifest won the rename: its copy is identical.
                Err(_) if target.is_dir() => Ok(target.clone()),
                Err(e) => Err(ImageError::io("renaming into", target.clone(), e)),
            },
            Err(UnpackError::Invalid(detail)) => Err(self.invalid(detail)),
            Err(UnpackError::Io(op, path, e)) => Err(ImageError::io(op, path, e)),
        };
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Whether a layer the cache lacks is held by the node's other store (containerd), so that
    /// importing the image needs no copy of it. Should that store lose it before the import, the
    /// import fails with `MissingBlob` and the image is pulled again.
    async fn held_elsewhere(&self, layer: &Descriptor) -> bool {
        let Some(holder) = self.layer_holder else { return false };
        let cached = self.cache.blob_path(&layer.digest).is_some_and(|p| p.is_file());
        !cached && holder.holds(&layer.digest).await
    }

    /// The cached blob for `desc`, downloaded (digest verified, then renamed into place) if missing.
    async fn blob(&self, desc: &Descriptor) -> Result<PathBuf, ImageError> {
        let path = self
            .cache
            .blob_path(&desc.digest)
            .ok_or_else(|| self.invalid(format!("blob digest {} is not a sha256 digest", desc.digest)))?;
        if path.is_file() {
            return Ok(path);
        }
        let span = tracing::debug_span!("download_blob", digest = %desc.digest, size = desc.size);
        self.download(desc, path).instrument(span).await
    }

    async fn download(&self, desc: &Descriptor, path: PathBuf) -> Result<PathBuf, ImageError> {
        let tmp = CacheDir::tmp_for(&path);
        let file = tokio::fs::File::create(&tmp).await.map_err(|e| ImageError::io("creating", tmp.clone(), e))?;
        self.downloads.fetch_add(1, Ordering::Relaxed);
        let pulled = self.client.pull_blob(&self.image.oci, desc.digest.as_str(), file).await;
        let result = match pulled {
            Ok(()) => set_read_only(&tmp)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map(|()| path.clone())
                .map_err(|e| ImageError::io("storing", path.clone(), e)),
            Err(e) => Err(map_oci_error(self.image, e)),
        };
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn is_image_config(media_type: &str) -> bool {
    IMAGE_CONFIG_MEDIA_TYPES.contains(&media_type)
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "unknown"
    } else {
        s
    }
}

fn set_read_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444))
}

enum MagicError {
    NotWasm,
    Io(ImageError),
}

async fn check_magic(path: &Path) -> Result<(), MagicError> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await.map_err(|e| MagicError::Io(ImageError::io("opening", path, e)))?;
    let mut magic = [0u8; 4];
    match file.read_exact(&mut magic).await {
        Ok(_) if &magic == WASM_MAGIC => Ok(()),
        Ok(_) => Err(MagicError::NotWasm),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(MagicError::NotWasm),
        Err(e) => Err(MagicError::Io(ImageError::io("reading", path, e))),
    }
}

/// `sha256:<hex>` of a file's contents.
pub(crate) async fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use sha2::Digest as _;
        let mut file = std::fs::File::open(&owned).map_err(|e| ImageError::io("opening", &owned, e))?;
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| ImageError::io("reading", &owned, e))?;
        Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
    })
    .await
    .unwrap_or_else(|e| Err(ImageError::io("hashing", path, std::io::Error::other(e))))
}
