//! `containerd-shim-skiff-v1`: containerd's runtime v2 shim running the bundle's Wasm with skiff's engine.
//!
//! [`SkiffShim`] is the shim's lifecycle (the `start` and `delete` commands, one shim process per pod
//! sandbox); [`TaskService`] the task API containerd drives over ttrpc. A bundle's first process arg names
//! a `.wasm` file in its rootfs (or, when the rootfs has none and the image is a Wasm OCI artifact, its Wasm
//! layer is read from containerd's content store); bind mounts become preopened directories, the spec's
//! network namespace the guest's network, its memory limit the guest's memory cap and its CPU quota the
//! guest's CPU share. Events reach containerd also across its restart.

mod artifact;
mod bundle;
mod container;
mod content;
mod entry;
mod error;
mod events;
mod executor;
mod logging;
mod publisher;
mod rootfs;
mod shim;
mod stdio;
mod task;

pub use artifact::{ArtifactError, WASM_CONFIG_V0, WASM_LAYERS};
pub use bundle::{Bundle, NetNs, DEFAULT_HTTP_PORT, HTTP_PORT, HTTP_PORT_ENV};
pub use error::ShimError;
pub use shim::{run, SkiffShim, RUNTIME_ID};
pub use task::{TaskService, CACHE_ENV, DEFAULT_CACHE_DIR};
