//! Images for Wasm pods: pulling Wasm OCI artifacts and `wasi/wasm` images into a content-addressed
//! cache (with pull policies, credentials and single-flight pulls), and pushing a `.wasm` file as an artifact.

mod auth;
mod cache;
mod error;
mod manifest;
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
pub use error::ImageError;
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
}
