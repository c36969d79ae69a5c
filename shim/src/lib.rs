//! skiff's Wasm engine as a library: the kubelet runs it in-process, and the containerd shim
//! (`containerd-shim-skiff-v1`) runs the same engine inside containerd.
//!
//! [`engine::WasmEngine`] compiles modules once per content digest and engine version (cached on
//! disk), and runs WASI preview 1 modules with a memory cap, a CPU bound by epoch interruption,
//! cancellation, and the guest's exit code.

pub mod engine;

pub use engine::{Exit, Preopen, RunSpec, WasmEngine};
