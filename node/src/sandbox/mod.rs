//! Pod sandboxes: one network namespace per pod, wired to the node's bridge with the real CNI
//! plugins (loopback, bridge + host-local, portmap), recorded on disk, optionally prepared ahead.

mod cni;
mod config;
mod error;
mod manager;
mod netns;
mod pool;
mod record;
mod wire;

#[cfg(test)]
mod tests;

pub use config::{Ipv4Cidr, NetworkConfig, PortMapping, Protocol};
pub use error::SandboxError;
pub use manager::SandboxManager;
pub use netns::{enter_netns, NETNS_RUN_DIR};
pub use record::Sandbox;
