//! `containerd-shim-skiff-v1`: containerd's runtime v2 shim running the bundle's Wasm with skiff's engine.
//!
//! [`SkiffShim`] is the shim's lifecycle (the `start` and `delete` commands, one shim process per pod
//! sandbox); [`TaskService`] the task API containerd drives over ttrpc. A bundle's first process arg names
//! a `.wasm` file in its rootfs (or, when the rootfs has none and the image is a Wasm OCI artifact, its Wasm
//! layer is read from containerd's content store); bind mounts become preopened directories, the spec's
//! network namespace the guest's network, its memory limit the guest's memory cap and its CPU quota the
//! guest's CPU share. Events reach containerd also across its restart.
//!
//! A container whose first arg names an ELF binary or a `#!` script instead is a Linux container: the
//! shim runs it through `runc` on its bundle (state under `SKIFF_SHIM_RUNC_ROOT`/<namespace>), with the
//! init's real pid as the task's, so one runtime (and one RuntimeClass) serves pods that mix both. CRI
//! sandbox containers run no process: where CRI would join the sandbox's namespaces by its pid (the
//! shim's), a Linux container gets the sandbox's network namespace, the IPC and UTS namespaces (with the
//! sandbox's hostname) of the pod's namespace holder (a child of the shim made with the pod's first Linux
//! container, killed with its sandbox), and a new PID namespace.

mod artifact;
mod bundle;
mod container;
mod content;
mod entry;
mod error;
mod events;
mod holder;
mod linux;
mod linux_spec;
mod logging;
mod oom;
mod publisher;
mod rootfs;
mod runc;
mod shim;
mod stdio;
mod task;

pub use artifact::{ArtifactError, WASM_CONFIG_V0, WASM_LAYERS};
pub use bundle::{Bundle, NetNs, DEFAULT_HTTP_PORT, HTTP_PORT, HTTP_PORT_ENV};
pub use error::ShimError;
pub use holder::{hold_if_asked, HOLD_ARG};
pub use runc::{DEFAULT_RUNC_ROOT, RUNC_BINARY_ENV, RUNC_ROOT_ENV};
pub use shim::{run, SkiffShim, RUNTIME_ID};
pub use task::{TaskService, CACHE_ENV, DEFAULT_CACHE_DIR};
