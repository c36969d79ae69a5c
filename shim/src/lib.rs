//! skiff's Wasm engine as a library: the kubelet runs it in-process, and the containerd shim
//! (`containerd-shim-skiff-v1`) runs the same engine inside containerd.
//!
//! [`engine::WasmEngine`] compiles programs once per content digest and engine version (cached on
//! disk), runs WASI preview 1 modules and preview 2 command components as async tasks with a memory cap,
//! a CPU share, cancellation and the guest's exit code, and serves `wasi:http` components.

pub mod containerd;
pub mod engine;
pub mod install;

pub use engine::{EngineError, Exit, Output, OutputSink, Preopen, Program, RunSpec, WasmEngine};
