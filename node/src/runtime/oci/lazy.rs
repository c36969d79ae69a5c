//! The node's OCI runtime as the agent configured it: an existing containerd (connected at agent start), or
//! the agent's own containerd started with the first Linux container (so that Wasm-only nodes and tests pay
//! nothing for it).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::OnceCell;

use super::managed::Managed;
use super::OciRuntime;
use crate::config::{ContainerdConfig, LinuxRuntimeConfig};
use crate::image::ImageStore;
use crate::runtime::containerd::ContainerdError;

/// Connects (and starts containerd) once, on first use.
pub struct LazyOci {
    config: LinuxRuntimeConfig,
    dir: PathBuf,
    node: String,
    images: Arc<ImageStore>,
    runtime: OnceCell<Arc<OciRuntime>>,
    managed: OnceCell<Arc<Managed>>,
}

impl LazyOci {
    /// `None` when the node runs no Linux containers. `dir` is where an own containerd keeps its files.
    pub fn new(config: &LinuxRuntimeConfig, dir: PathBuf, node: &str, images: Arc<ImageStore>) -> Option<Self> {
        if *config == LinuxRuntimeConfig::Off {
            return None;
        }
        Some(Self {
            config: config.clone(),
            dir,
            node: node.to_string(),
            images,
            runtime: OnceCell::new(),
            managed: OnceCell::new(),
        })
    }

    /// The runtime, connected (a previous run's containers of this node removed) on the first call.
    pub async fn get(&self) -> Result<&Arc<OciRuntime>, ContainerdError> {
        self.runtime
            .get_or_try_init(|| async {
                let config = match &self.config {
                    LinuxRuntimeConfig::Containerd(c) => c.clone(),
                    LinuxRuntimeConfig::Managed { binary, namespace } => {
                        let managed =
                            self.managed.get_or_try_init(|| Managed::start(binary, &self.dir, namespace)).await?;
                        ContainerdConfig { address: managed.socket().to_path_buf(), namespace: namespace.clone() }
                    }
                    LinuxRuntimeConfig::Off => {
                        return Err(ContainerdError::Config("this node runs no Linux containers".into()))
                    }
                };
                let runtime =
                    OciRuntime::connect(&config, &self.node, Arc::clone(&self.images), self.dir.join("pod-namespaces"))
                        .await?;
                tracing::info!(address = %config.address.display(), "Linux containers run in containerd");
                runtime.remove_all().await;
                Ok(Arc::new(runtime))
            })
            .await
    }

    /// The runtime if it is connected already (no Linux container has run otherwise).
    pub fn started(&self) -> Option<&Arc<OciRuntime>> {
        self.runtime.get()
    }

    /// Whether the configuration uses an existing containerd (connected at agent start).
    pub fn is_external(&self) -> bool {
        matches!(self.config, LinuxRuntimeConfig::Containerd(_))
    }

    /// At agent stop: removes the node's containers when `teardown`, then stops an own containerd.
    pub async fn shutdown(&self, teardown: bool) {
        if teardown {
            if let Some(rt) = self.runtime.get() {
                rt.remove_all().await;
            }
        }
        if let Some(m) = self.managed.get() {
            m.stop().await;
        }
    }
}
