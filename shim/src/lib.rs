//! skiff Wasm engine
