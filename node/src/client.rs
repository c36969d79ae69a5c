//! The agent's Kubernetes client: the same `kube` client any controller would use, over HTTPS with the
//! cluster CA and a bearer token or the node's own client certificate.

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::AgentConfig;
use crate::error::AgentError;

/// A client for the API server of `config`.
pub async fn connect(config: &AgentConfig) -> Result<kube::Client, AgentError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(&config.ca_pem);
    let user = match &config.client_cert {
        Some((cert, key)) => {
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            format!("client-certificate-data: {}\n    client-key-data: {}", b64(cert), b64(key))
        }
        None => format!("token: {}", config.token),
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n\
         users:\n- name: u\n  user:\n    {user}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
        config.server_url
    );
    let kubeconfig = Kubeconfig::from_yaml(&yaml).map_err(|e| AgentError::Client(e.to_string()))?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| AgentError::Client(e.to_string()))?;
    // Watches idle longer than this between bookmarks; the default read timeout would cut them.
    cfg.read_timeout = None;
    kube::Client::try_from(cfg).map_err(|e| AgentError::Client(e.to_string()))
}

/// A client from a kubeconfig file (the server's admin kubeconfig, for the CLI's admin commands).
pub async fn from_kubeconfig(path: &std::path::Path) -> Result<kube::Client, AgentError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| AgentError::Client(format!("{}: {e}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| AgentError::Client(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| AgentError::Client(e.to_string()))
}

/// `POST path` (no body) with the kubeconfig's credentials; the answer's body.
pub async fn post(kubeconfig: &std::path::Path, path: &str) -> Result<String, AgentError> {
    let client = from_kubeconfig(kubeconfig).await?;
    let request = http::Request::post(path).body(Vec::new()).map_err(|e| AgentError::Client(e.to_string()))?;
    client.request_text(request).await.map_err(|e| AgentError::Client(e.to_string()))
}
