//! skiff's node agent (the kubelet): registers its Node, keeps its Lease, watches the pods bound to it
//! and runs them: sandbox (network namespace + CNI), volumes, images, Wasm containers in-process,
//! probes, restarts, logs and status.

pub mod agent;
pub mod batch;
pub mod client;
pub mod config;
pub mod dns;
pub mod error;
pub mod events;
pub mod hollow;
pub mod image;
mod image_gc;
pub mod ingress;
pub mod join;
pub mod kubelet_auth;
pub mod kubelet_csr;
pub mod kubelet_reviews;
pub mod kubelet_server;
pub mod kubelet_tls;
pub mod lease;
pub mod logs;
pub mod netpol;
pub mod node_status;
pub mod pod_cidr;
pub mod pods;
pub mod proxy;
pub mod routes;
pub mod runtime;
pub mod sandbox;
pub mod service_cache;
pub mod stats;
pub mod streaming;
pub mod sysctl;

pub use agent::Agent;
pub use config::AgentConfig;
pub use error::AgentError;
