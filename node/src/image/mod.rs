//! Images for pods: pulling Wasm OCI artifacts, `wasi/wasm` images and Linux images into a content-addressed
//! cache (with pull policies, credentials and single-flight pulls), and pushing a `.wasm` file as an artifact.

mod auth;
mod cache;
mod error;
pub mod gc;
mod held;
mod manifest;
mod mirrors;
mod pull;
mod push;
mod reference;
mod registry;
mod rootfs;
mod store;
mod unpack;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use auth::{auths_from_docker_config, RegistryAuth};
pub use cache::sha256_hex;
pub use error::ImageError;
pub use held::LayerHolder;
pub use mirrors::RegistriesConfig;
pub use push::push_wasm;
pub use reference::{normalize_reference, registry_of, PullPolicy};
pub use store::{ImageStore, Pulled};

/// Where images are cached and which registries are spoken to over plain HTTP.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub cache_dir: PathBuf,
    /// `host:port` (or `host`) of registries reached over plain HTTP. Loopback registries
    /// (127.0.0.0/8, ::1, localhost) always are, as Docker treats them.
    pub insecure_registries: Vec<String>,
    /// Per-registry mirrors, credentials and TLS settings (k3s's `registries.yaml`).
    pub registries: RegistriesConfig,
}

/// Which runtime runs an image: decided when it is pulled, from its media types and its config's platform.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageKind {
    /// A Wasm OCI artifact or a `wasi/wasm` image (wasmtime).
    #[default]
    Wasm,
    /// A Linux image for this node's architecture (runc through containerd).
    Linux,
}

/// A pulled image ready to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasmImage {
    /// Normalized reference, e.g. `127.0.0.1:5000/hello:1`.
    pub reference: String,
    /// What Kubernetes shows in `containerStatuses[].imageID`: `<repo>@sha256:<digest the reference resolved to>`.
    pub image_id: String,
    /// The module/component file in the cache (read-only; for a regular image, inside `rootfs`).
    pub wasm_path: PathBuf,
    /// `sha256:...` of the wasm bytes (the engine's compile-cache key).
    pub wasm_digest: String,
    /// Regular `wasi/wasm` images: their layers unpacked (a read-only template; copy before writing).
    pub rootfs: Option<PathBuf>,
    /// Image config Entrypoint + Cmd for regular images (empty for artifacts); the first is the `.wasm` path.
    pub entrypoint: Vec<String>,
    /// Image config Env as (name, value).
    pub env: Vec<(String, String)>,
    /// Image config WorkingDir.
    pub working_dir: Option<String>,
    /// Wasm or Linux (indexes written before Linux images existed hold only Wasm ones).
    #[serde(default)]
    pub kind: ImageKind,
    /// Linux images: the config's Cmd (their `entrypoint` then holds the config's Entrypoint alone).
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Linux images: the config's User (`uid[:gid]`, or a name looked up in the image's `/etc/passwd`).
    #[serde(default)]
    pub user: Option<String>,
    /// Linux images: the config's StopSignal (what the container is stopped with unless its
    /// `lifecycle.stopSignal` says otherwise).
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// Linux images: the blobs containerd's content store and snapshotter take them from.
    #[serde(default)]
    pub linux: Option<LinuxContent>,
}

/// A blob as a manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

/// What a Linux image is made of: its manifest, config and layers (bottom first) as blobs of the
/// node's cache until containerd holds them, and the layers' uncompressed digests (the config's
/// `rootfs.diff_ids`), which name the snapshots they unpack into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinuxContent {
    pub manifest: BlobRef,
    pub config: BlobRef,
    pub layers: Vec<BlobRef>,
    pub diff_ids: Vec<String>,
}
