//! `skiff server`: the store, the API over TLS with token auth, the kubeconfig, and the
//! in-process controllers, wired together.

pub mod auth;
pub mod tls;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::api::error::ApiError;
use crate::api::http::pod_logs::KubeletClient;
use crate::api::http::{router, ApiState};
use crate::api::metrics::Metrics;
use crate::api::registry::{Registry, WriteOptions};
use crate::api::watch_cache::WatchCache;
use crate::controllers;
use crate::store::{etcd::EtcdStore, sqlite::SqliteStore, Store};

/// Where objects are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datastore {
    /// SQLite in the data directory (the embedded default).
    Sqlite,
    /// A real etcd v3 cluster.
    Etcd(Vec<String>),
}

impl std::str::FromStr for Datastore {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "sqlite" {
            return Ok(Self::Sqlite);
        }
        let rest = s
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("unknown datastore {s:?}: use `sqlite` or `etcd://host:port[,host:port]`"))?;
        let endpoints: Vec<String> = rest.split(',').filter(|e| !e.is_empty()).map(|e| format!("http://{e}")).collect();
        if endpoints.is_empty() {
            return Err("etcd:// needs at least one host:port".into());
        }
        Ok(Self::Etcd(endpoints))
    }
}

/// How to run the API server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub datastore: Datastore,
    /// The bearer token presented to kubelets (for `pods/log`); `None`: the admin token, which node
    /// agents started from the admin kubeconfig accept.
    pub kubelet_token: Option<String>,
    /// Node monitor grace period and default unreachable toleration (`Default`: 20 s, 30 s).
    pub node_lifecycle: controllers::node_lifecycle::Config,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] ApiError),
    #[error("kubelet client: {0}")]
    KubeletClient(#[from] reqwest::Error),
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// A running API server.
pub struct Server {
    pub registry: Arc<Registry>,
    pub addr: SocketAddr,
    pub admin_token: String,
    pub kubeconfig: PathBuf,
    pub ca_pem: String,
    handle: axum_server::Handle<SocketAddr>,
}

impl Server {
    /// Stops accepting and closes open connections.
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }

    /// The URL clients use.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

fn load_or_create_token(path: &Path) -> Result<String, ServerError> {
    let io = |source| ServerError::DataDir { path: path.to_path_buf(), source };
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
        _ => {
            let token = auth::generate_token();
            std::fs::write(path, &token).map_err(io)?;
            Ok(token)
        }
    }
}

fn kubeconfig(server_url: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {ca}\n\
         users:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\n\
         current-context: skiff\n"
    )
}

async fn open_store(config: &ServerConfig) -> Result<Arc<dyn Store>, ServerError> {
    Ok(match &config.datastore {
        Datastore::Sqlite => Arc::new(SqliteStore::open(&config.data_dir.join("state.db"))?),
        Datastore::Etcd(endpoints) => Arc::new(EtcdStore::connect(endpoints).await?),
    })
}

/// The namespaces every cluster has from its first start.
async fn bootstrap(registry: &Registry) -> Result<(), ApiError> {
    let ri = registry.resource("", "Namespace")?;
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match registry.create(ri, None, ns, &WriteOptions::default()).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Starts the API server and its controllers; returns once it is listening.
pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| ServerError::DataDir { path: dir.clone(), source })?;
    let metrics = Arc::new(Metrics::default());
    let store: Arc<dyn Store> = Arc::new(crate::store::instrumented::Instrumented::new(
        open_store(&config).await?,
        metrics.store_latency.clone(),
    ));
    let cache = WatchCache::start(Arc::clone(&store)).await?;
    let registry = Arc::new(
        Registry::new(store, cache)
            .with_default_toleration_seconds(config.node_lifecycle.default_unreachable_toleration_seconds),
    );
    bootstrap(&registry).await?;

    let host = config.listen.ip().to_string();
    let certs = tls::ensure(dir, &[host])?;
    let admin_token = load_or_create_token(&dir.join("admin.token"))?;
    let tls_config = tls::server_config(&certs).map_err(ServerError::TlsConfig)?;

    let std_listener = std::net::TcpListener::bind(config.listen)
        .map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    std_listener.set_nonblocking(true).map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let addr = std_listener.local_addr().map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let advertise_host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    let url = format!("https://{advertise_host}:{}", addr.port());

    let kubeconfig_path = dir.join("kubeconfig");
    std::fs::write(&kubeconfig_path, kubeconfig(&url, &certs.ca_pem, &admin_token))
        .map_err(|source| ServerError::DataDir { path: kubeconfig_path.clone(), source })?;

    let kubelet_token = config.kubelet_token.clone().unwrap_or_else(|| admin_token.clone());
    let state = ApiState {
        registry: Arc::clone(&registry),
        metrics,
        advertise: format!("{advertise_host}:{}", addr.port()),
        kubelet: Arc::new(KubeletClient::new(kubelet_token)?),
        controllers: controllers::start_with(Arc::clone(&registry), config.node_lifecycle),
    };
    let tokens = auth::Tokens(Arc::new(HashSet::from([admin_token.clone()])));
    let app = router(state).layer(axum::middleware::from_fn_with_state(tokens, auth::require_token));

    let handle = axum_server::Handle::new();
    let rustls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls_config));
    let server = axum_server::from_tcp_rustls(std_listener, rustls)
        .map_err(|source| ServerError::Listen { addr, source })?
        .handle(handle.clone());
    tokio::spawn(async move {
        if let Err(e) = server.serve(app.into_make_service()).await {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    tracing::info!(%url, data_dir = %dir.display(), "API server listening");
    Ok(Server { registry, addr, admin_token, kubeconfig: kubeconfig_path, ca_pem: certs.ca_pem, handle })
}
