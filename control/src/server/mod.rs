//! `skiff server`: the store, the API over TLS with token auth, the kubeconfig, and the
//! in-process controllers, wired together.

pub mod auth;
pub mod files;
pub mod identity;
pub mod kubelet_certs;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::api::error::ApiError;
use crate::api::http::pod_logs::{KubeletClient, KubeletClientTls};
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
    /// More names and addresses for the serving certificate (`--tls-san`): those nodes and clients
    /// reach the server by, e.g. its LAN address when it listens on 0.0.0.0.
    pub tls_sans: Vec<String>,
    pub datastore: Datastore,
    /// Node monitor grace period and default unreachable toleration (`Default`: 20 s, 30 s).
    pub node_lifecycle: controllers::node_lifecycle::Config,
    /// Where ClusterIPs and NodePorts are allocated from.
    pub service_network: crate::api::service_network::ServiceNetwork,
    /// The audit log (off by default).
    pub audit: crate::audit::AuditConfig,
    /// The scheduler and controllers to run in process (`Default`: all).
    pub components: controllers::Components,
    /// Elect the scheduler and the controller manager through Leases (`--leader-elect`, the
    /// default), with this timing; `None` runs them without election.
    pub leader_elect: Option<controllers::leader_election::Timing>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("data directory: {0}")]
    Files(#[from] files::FileError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] ApiError),
    #[error("secrets encryption keys: {0}")]
    EncryptionKeys(#[from] crate::store::encrypted::KeyError),
    #[error(transparent)]
    KubeletClient(#[from] crate::api::http::pod_logs::KubeletClientError),
    #[error("kubelet certificates: {0}")]
    KubeletCerts(#[from] kubelet_certs::CertError),
    #[error(transparent)]
    ServiceAccountKey(#[from] crate::auth::service_account::KeyError),
    #[error("admin client certificate: {0}")]
    ClientCertificate(String),
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
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
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => {
            files::restrict(path)?;
            Ok(token.trim().to_string())
        }
        _ => {
            let token = auth::generate_token();
            files::write_private(path, token.as_bytes())?;
            Ok(token)
        }
    }
}

/// The data directory 0700 and the store's files 0600, created so from the start and narrowed
/// when an earlier start left them wider.
fn secure_data_dir(config: &ServerConfig) -> Result<(), ServerError> {
    let dir = &config.data_dir;
    files::private_dir(dir)?;
    if config.datastore == Datastore::Sqlite {
        // SQLite gives `-wal` and `-shm` the database file's mode, so the file exists 0600 first.
        files::create_private(&dir.join("state.db"))?;
    }
    for name in ["state.db-wal", "state.db-shm", "state.db-journal", "admin.token", "kubeconfig"] {
        files::restrict(&dir.join(name))?;
    }
    Ok(())
}

fn kubeconfig(server_url: &str, ca_pem: &str, token: &str, client: &(String, String)) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let ca = b64(ca_pem);
    let (cert, key) = (b64(&client.0), b64(&client.1));
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {ca}\n\
         users:\n- name: admin\n  user:\n    token: {token}\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\n\
         current-context: skiff\n"
    )
}

async fn open_store(config: &ServerConfig) -> Result<Arc<dyn Store>, ServerError> {
    Ok(match &config.datastore {
        Datastore::Sqlite => Arc::new(SqliteStore::open(&config.data_dir.join("state.db"))?),
        Datastore::Etcd(endpoints) => Arc::new(EtcdStore::connect(endpoints).await?),
    })
}

/// `POST /skiff/v1/secrets/rotate` (a non-resource URL: `system:masters` only by default): a new
/// write key, every Secret re-encrypted with it, then the old keys retired. Online: writes
/// meanwhile use the new key, reads use whichever key sealed the value.
async fn rotate_secrets_key(
    raw: Arc<dyn Store>,
    keys: Arc<crate::store::encrypted::Keyring>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let rotated = async {
        let (key, rewritten) = crate::store::encrypted::rotate(raw.as_ref(), &keys)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        tracing::info!(key, rewritten, "rotated the secrets encryption key");
        Ok::<_, ApiError>(json!({"key": key, "rewritten": rewritten}))
    };
    match rotated.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    }
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

/// How long a client may take to send a request's headers (HTTP/1.1, also between requests on
/// a kept-alive connection); a slower one is disconnected.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// HTTP/2 pings on idle connections, and how long a ping may go unanswered before the connection
/// is closed (a vanished client does not hold its connection and streams forever).
pub const H2_KEEPALIVE: (std::time::Duration, std::time::Duration) =
    (std::time::Duration::from_secs(30), std::time::Duration::from_secs(20));

/// Timeouts against slow or vanished clients. hyper applies none without a timer; the TLS
/// handshake has axum-server's own 10 s bound.
fn slow_client_timeouts(builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>) {
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE.0)
        .keep_alive_timeout(H2_KEEPALIVE.1);
}

/// Starts the API server and its controllers; returns once it is listening.
pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
    let dir = &config.data_dir;
    secure_data_dir(&config)?;
    let metrics = Arc::new(Metrics::default());
    let audit =
        crate::audit::Auditor::from_config(&config.audit, metrics.audit_events.clone(), metrics.audit_errors.clone())?;
    // Secrets are sealed at rest with the keys in the data directory, below the metrics.
    let keyring = crate::store::encrypted::Keyring::load_or_create(dir)?;
    let raw_store = open_store(&config).await?;
    let sealed: Arc<dyn Store> =
        Arc::new(crate::store::encrypted::Encrypted::new(Arc::clone(&raw_store), Arc::clone(&keyring)));
    let store: Arc<dyn Store> =
        Arc::new(crate::store::instrumented::Instrumented::new(sealed, metrics.store_latency.clone()));
    let cache = WatchCache::start(Arc::clone(&store)).await?;
    let registry = Arc::new(
        Registry::new(store, cache)
            .with_default_toleration_seconds(config.node_lifecycle.default_unreachable_toleration_seconds)
            .with_service_network(config.service_network.clone()),
    );
    registry.repair_services().await?;
    bootstrap(&registry).await?;
    registry.ensure_system_priority_classes().await?;
    registry.ensure_flowcontrol_bootstrap().await?;
    crate::auth::bootstrap_policy::ensure(&registry).await?;

    let hosts: Vec<String> = std::iter::once(config.listen.ip().to_string()).chain(config.tls_sans.clone()).collect();
    let certs = tls::ensure(dir, &hosts)?;
    let admin_token = load_or_create_token(&dir.join("admin.token"))?;
    // tls::server_config plus optional client certificates verified against the cluster CA.
    let tls_config = crate::auth::client_cert::server_config(&certs).map_err(ServerError::TlsConfig)?;
    let admin_client =
        crate::auth::client_cert::ensure_client_certificate(dir, "admin", "admin", &[crate::auth::MASTERS])
            .map_err(ServerError::ClientCertificate)?;

    let std_listener = std::net::TcpListener::bind(config.listen)
        .map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    std_listener.set_nonblocking(true).map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let addr = std_listener.local_addr().map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let advertise_host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    let url = format!("https://{advertise_host}:{}", addr.port());
    let advertise_ip = if addr.ip().is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { addr.ip() };
    controllers::endpoints::kubernetes::ensure_kubernetes_service(&registry, advertise_ip, addr.port()).await?;
    controllers::endpoints::kube_dns::ensure_kube_dns_service(&registry).await?;

    let kubeconfig_path = dir.join("kubeconfig");
    files::write_private(&kubeconfig_path, kubeconfig(&url, &certs.ca_pem, &admin_token, &admin_client).as_bytes())?;

    // The API server reaches kubelets over mutual TLS with its own client certificate, no token.
    let ca = Arc::new(kubelet_certs::CertAuthority::load(dir)?);
    let client_cert = ca.kubelet_client(dir)?;
    let kubelet_tls =
        KubeletClientTls { ca_pem: certs.ca_pem.clone(), cert_pem: client_cert.cert_pem, key_pem: client_cert.key_pem };
    let node_graph = Arc::new(crate::auth::node_graph::NodeGraph::default());
    let issuer = Arc::new(crate::auth::service_account::TokenIssuer::load_or_create(dir)?);
    let mut components = config.components.clone();
    if let Some(timing) = config.leader_elect {
        let identity = identity::server_identity(dir)?;
        components.election = Some(controllers::leader_election::Election { identity, timing });
    }
    // The HPA controller reads usage from the same scraper the metrics API serves from.
    let (kubelet, resource_metrics) = (Arc::new(KubeletClient::new(&kubelet_tls)?), Arc::default());
    components.autoscaler.metrics = Some(Arc::new(controllers::hpa::ScrapedMetrics {
        scraper: Arc::clone(&resource_metrics),
        registry: Arc::clone(&registry),
        kubelet: Arc::clone(&kubelet),
    }));
    let state = ApiState {
        registry: Arc::clone(&registry),
        metrics,
        advertise: format!("{advertise_host}:{}", addr.port()),
        kubelet,
        controllers: controllers::start_with(
            Arc::clone(&registry),
            config.node_lifecycle,
            Some(Arc::from(certs.ca_pem.as_str())),
            Arc::clone(&node_graph),
            Some(Arc::clone(&issuer)),
            Some(Arc::clone(&ca)),
            components,
        ),
        resource_metrics,
        openapi: Arc::default(),
    };
    let auditor = audit.map(|(auditor, writer)| {
        state.controllers.spawn("audit-log", move || {
            let writer = Arc::clone(&writer);
            async move { writer.run().await.map_err(|e| controllers::runtime::Error::Other(e.to_string())) }
        });
        auditor
    });
    let auth_state = crate::auth::filter::AuthState {
        authn: Arc::new(crate::auth::authn::Authenticator::new(admin_token.clone(), issuer, Arc::clone(&registry))),
        authz: crate::auth::authorizer::Authorizer::start(Arc::clone(&registry), node_graph).await?,
        registry: Arc::clone(&registry),
        url: url.clone(),
    };
    // Every request is authenticated and authorized before it reaches a handler.
    // The cluster CA for joining nodes, which check it against the hash in their join token.
    let cacerts = certs.ca_pem.clone();
    let app = router(state)
        .route("/cacerts", axum::routing::get(move || std::future::ready(cacerts.clone())))
        .route(
            "/skiff/v1/secrets/rotate",
            axum::routing::post(move || rotate_secrets_key(raw_store.clone(), keyring.clone())),
        )
        .merge(crate::auth::reviews::router(auth_state.clone()))
        .layer(axum::middleware::from_fn(crate::audit::layer::request_body))
        .layer(axum::middleware::from_fn_with_state(auth_state, crate::auth::filter::authorize_request))
        .layer(axum::middleware::from_fn_with_state(auditor, crate::audit::layer::audit));
    tokio::spawn(crate::auth::bootstrap_policy::aggregate(Arc::clone(&registry)));

    let handle = axum_server::Handle::new();
    let rustls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls_config));
    let mut server = axum_server::from_tcp_rustls(std_listener, rustls)
        .map_err(|source| ServerError::Listen { addr, source })?
        // TCP_NODELAY: small writes (streams, watch events) go out without waiting for an ACK.
        .map(|tls| {
            let tls = tls.acceptor(axum_server::accept::NoDelayAcceptor::new());
            skiff_tls::peer::PeerAcceptor::new(tls, crate::auth::client_cert::peer_identity)
        })
        .handle(handle.clone());
    slow_client_timeouts(server.http_builder());
    tokio::spawn(async move {
        if let Err(e) = server.serve(app.into_make_service_with_connect_info::<SocketAddr>()).await {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    tracing::info!(%url, data_dir = %dir.display(), "API server listening");
    Ok(Server { registry, addr, admin_token, kubeconfig: kubeconfig_path, ca_pem: certs.ca_pem, handle })
}
