//! TLS pieces the API server (`skiff-control`) and the kubelet endpoint (`skiff-node`) share, kept
//! apart so that neither crate has to build the other.

pub mod peer;
