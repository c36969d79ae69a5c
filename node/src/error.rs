//! The agent's typed errors; the binary's edge turns them into messages.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("API client: {0}")]
    Client(String),
    #[error("API request {what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("wasm engine: {0}")]
    Engine(#[from] skiff_engine::EngineError),
    #[error("pod network: {0}")]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("images: {0}")]
    Image(#[from] crate::image::ImageError),
    #[error("container runtime: {0}")]
    Runtime(#[from] crate::runtime::containerd::ContainerdError),
    #[error(transparent)]
    KubeletTls(#[from] crate::kubelet_tls::KubeletTlsError),
    #[error("kubelet endpoint on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

impl AgentError {
    pub fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Api { what, source }
    }
}
