//! skiff's containerd shim (`containerd-shim-skiff-v1`): runs skiff's Wasm engine
//! ([`skiff_engine`], the same one the kubelet runs in process) and Linux containers (through
//! runc) inside an existing containerd, and `skiff shim install` puts it into containerd's
//! configuration.

pub mod containerd;
pub mod install;
