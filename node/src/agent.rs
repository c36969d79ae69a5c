//! The node agent: joins the cluster (Node + Lease), serves its kubelet endpoint and runs the pods
//! bound to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use skiff_engine::WasmEngine;
use tokio::task::JoinHandle;

use crate::config::{AgentConfig, WasmRuntimeConfig};
use crate::error::AgentError;
use crate::events::Recorder;
use crate::image::{ImageConfig, ImageStore, RegistriesConfig};
use crate::pods::log_index::LogIndex;
use crate::pods::{self, Deps};
use crate::runtime::containerd::ContainerdRuntime;
use crate::runtime::dispatch::Dispatch;
use crate::runtime::oci::LazyOci;
use crate::runtime::wasm::WasmRuntime;
use crate::runtime::ContainerRuntime;
use crate::sandbox::{NetworkConfig, SandboxManager};

/// A running node agent.
pub struct Agent {
    pub kubelet_addr: SocketAddr,
    deps: Arc<Deps>,
    sandboxes: Arc<SandboxManager>,
    tasks: Vec<JoinHandle<()>>,
    stop_server: Option<tokio::sync::oneshot::Sender<()>>,
    teardown: bool,
    /// The containerd runtime, when Wasm containers run there (removed on a teardown).
    containerd: Option<Arc<ContainerdRuntime>>,
    /// The OCI runtime, when the node runs Linux containers (its own containerd is stopped with the agent).
    oci: Option<Arc<LazyOci>>,
    /// The service proxy (its table is removed on shutdown).
    proxy: Option<crate::proxy::Proxy>,
    /// NetworkPolicy enforcement (its table is removed on shutdown).
    netpol: Option<crate::netpol::NetworkPolicies>,
    /// The ingress proxy on the node's address (ports 80/443 by default).
    ingress: Option<crate::ingress::IngressProxy>,
    /// This node's cluster DNS server.
    dns: Option<crate::dns::ClusterDns>,
    /// The Services and EndpointSlices the proxy, the ingress and the DNS are fed from.
    services: crate::service_cache::ServiceCache,
    /// Routes to the other nodes' pod networks.
    routes: Option<crate::routes::NodeRoutes>,
}

impl Agent {
    /// Joins the cluster and starts running the pods bound to this node.
    #[tracing::instrument(skip_all, fields(node = %config.node_name))]
    pub async fn start(mut config: AgentConfig) -> Result<Self, AgentError> {
        private_dir(&config.data_dir).map_err(|source| AgentError::Io { path: config.data_dir.clone(), source })?;
        let client = crate::client::connect(&config).await?;
        crate::pod_cidr::obtain(&client, &mut config).await?;
        let dir = &config.data_dir;
        for (setting, from, to) in crate::sysctl::fit_neighbour_table(config.pod_capacity()) {
            tracing::info!(%setting, from, to, "raised the neighbour table limit for max pods");
        }
        // Room in the engine for as many of the largest guests as this node offers pods (`max_pods`,
        // or fewer when its pod CIDR addresses fewer).
        let engine = Arc::new(WasmEngine::for_pods(&dir.join("wasm-cache"), config.pod_capacity())?);
        let registries = match &config.registry_config {
            Some(path) => RegistriesConfig::load(path)?,
            None => RegistriesConfig::default(),
        };
        let images = Arc::new(ImageStore::new(ImageConfig {
            cache_dir: dir.join("images"),
            insecure_registries: config.insecure_registries.clone(),
            registries,
        })?);
        let wasm = WasmRuntime::new(engine, Arc::clone(&images));
        let (wasm_runtime, containerd): (Arc<dyn ContainerRuntime>, _) = match &config.wasm_runtime {
            WasmRuntimeConfig::InProcess => (Arc::new(wasm), None),
            WasmRuntimeConfig::Containerd(c) => {
                let rt = Arc::new(ContainerdRuntime::connect(c, &config.node_name, Arc::clone(&images), wasm).await?);
                // A previous run's containers belong to no pod of this run: its workers start theirs anew.
                rt.remove_all().await;
                (rt.clone(), Some(rt))
            }
        };
        let oci = LazyOci::new(&config.linux_runtime, dir.join("containerd"), &config.node_name, Arc::clone(&images))
            .map(Arc::new);
        if let Some(oci) = oci.as_ref().filter(|o| o.is_external()) {
            // An existing containerd answers now (or the agent does not start); an own one starts on demand.
            oci.get().await?;
        }
        let runtime: Arc<dyn ContainerRuntime> =
            Arc::new(Dispatch::new(wasm_runtime, oci.clone(), Arc::clone(&images)));
        let sandboxes = SandboxManager::new(NetworkConfig {
            bridge: config.bridge.clone(),
            pod_cidr: config.pod_cidr.clone(),
            cni_bin_dir: config.cni_bin_dir.clone(),
            state_dir: dir.join("network"),
            netns_prefix: config.netns_prefix(),
            pool_size: config.sandbox_pool,
            service_cidr: config.service_cidr.clone(),
            default_route: config.cluster_cidr.is_some(),
        })
        .await?;
        let log_index = Arc::new(LogIndex::default());
        let listener = tokio::net::TcpListener::bind(config.kubelet_listen)
            .await
            .map_err(|source| AgentError::Listen { addr: config.kubelet_listen, source })?;
        let kubelet_addr =
            listener.local_addr().map_err(|source| AgentError::Listen { addr: config.kubelet_listen, source })?;
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let pods_cell: Arc<std::sync::OnceLock<std::sync::Weak<Deps>>> = Arc::default();
        let source: Arc<dyn crate::kubelet_server::LogSource> = Arc::new(Endpoint {
            logs: Arc::clone(&log_index),
            runtime: Arc::clone(&runtime),
            images: Arc::clone(&images),
            sandboxes: Arc::clone(&sandboxes),
            pods: Arc::clone(&pods_cell),
            streams: Arc::new(crate::streaming::containers::NodeStreams {
                logs: Arc::clone(&log_index),
                oci: oci.clone(),
                sandboxes: Arc::clone(&sandboxes),
                client: client.clone(),
            }),
            stats: Arc::new(crate::stats::StatsSource {
                node_name: config.node_name.clone(),
                data_dir: dir.clone(),
                runtime: Arc::clone(&runtime),
                oci: oci.clone(),
                rates: crate::stats::Rates::default(),
            }),
        });
        register_until_done(&client, &config, kubelet_addr.port()).await;
        // The serving certificate: given (the in-process agent, by its server), else requested through
        // a CSR, which the signer checks against the Node just registered.
        let serving = match &config.kubelet_serving {
            Some(serving) => serving.clone(),
            None => crate::kubelet_csr::obtain(&client, &config).await?,
        };
        let tls = crate::kubelet_tls::server_config(&config.ca_pem, &serving)?;
        let reviews = crate::kubelet_reviews::ApiReviews::new(client.clone(), config.node_name.clone());
        let gate = Arc::new(crate::kubelet_auth::Gate::new(Arc::new(reviews)));
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = crate::kubelet_server::serve(listener, tls, source, gate, async {
                let _ = stopped.await;
            })
            .await
            {
                tracing::error!(error = %e, "kubelet endpoint stopped");
            }
        })];
        tasks.push(tokio::spawn(crate::lease::keep_fresh(client.clone(), config.clone())));
        tasks.push(tokio::spawn(crate::image_gc::run(
            client.clone(),
            config.clone(),
            Arc::clone(&images),
            oci.clone(),
        )));
        let (status_client, status_config, port) = (client.clone(), config.clone(), kubelet_addr.port());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = crate::node_status::refresh(&status_client, &status_config, port).await {
                    tracing::warn!(error = %e, "refreshing the node status");
                }
            }
        }));
        let routes = Some(crate::routes::NodeRoutes::start(client.clone(), &config));
        let services = crate::service_cache::ServiceCache::start(client.clone());
        let dns = start_dns(&services, &config, sandboxes.gateway());
        let proxy = crate::proxy::Proxy::start(&services, &config, dns.as_ref().map(|d| d.addr));
        let netpol = crate::netpol::NetworkPolicies::start(client.clone(), &config);
        let ingress = crate::ingress::IngressProxy::start(client.clone(), &services, &config).await;
        let recorder = Recorder::new(client.clone(), &config.node_name);
        let teardown = config.teardown_on_shutdown;
        let pod_sandboxes: Arc<dyn pods::PodSandboxes> = sandboxes.clone();
        let deps = Deps::new(client, config, runtime, pod_sandboxes, recorder, log_index);
        let _ = pods_cell.set(Arc::downgrade(&deps));
        tasks.push(tokio::spawn(pods::watch(Arc::clone(&deps))));
        tracing::info!(%kubelet_addr, "node agent running");
        Ok(Self {
            kubelet_addr,
            deps,
            sandboxes,
            tasks,
            stop_server: Some(stop_server),
            teardown,
            containerd,
            oci,
            proxy,
            netpol,
            ingress,
            dns,
            services,
            routes,
        })
    }

    /// Where this node's cluster DNS server answers (the bridge gateway, port 53), if it runs.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns.as_ref().map(|d| d.addr)
    }

    /// How many pods this agent runs.
    pub fn pod_count(&self) -> usize {
        self.deps.pod_count()
    }

    /// Stops watching and running pods. Sandboxes stay for the next start to adopt, unless the
    /// configuration asks to tear everything down.
    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.deps.shutdown();
        if let Some(ingress) = self.ingress.take() {
            ingress.stop().await;
        }
        if let Some(proxy) = self.proxy.take() {
            proxy.stop().await;
        }
        if let Some(netpol) = self.netpol.take() {
            netpol.stop().await;
        }
        if let Some(dns) = self.dns.take() {
            dns.stop().await;
        }
        if let Some(routes) = self.routes.take() {
            routes.shutdown(self.teardown).await;
        }
        self.services.stop();
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(oci) = &self.oci {
            oci.shutdown(self.teardown).await;
        }
        if self.teardown {
            if let Some(containerd) = &self.containerd {
                containerd.remove_all().await;
            }
            self.sandboxes.teardown_all().await;
            // The pods' subPath binds and memory-backed emptyDirs: the pod directories stay
            // (a restarted agent adopts or sweeps them) but nothing stays mounted in them.
            crate::pods::unmount_all(&self.deps);
        }
    }
}

/// Starts the node's cluster DNS server on the bridge gateway (none when `--cluster-dns` is off or
/// port 53 there is taken, said in the log).
fn start_dns(
    services: &crate::service_cache::ServiceCache,
    config: &AgentConfig,
    gateway: std::net::IpAddr,
) -> Option<crate::dns::ClusterDns> {
    if !config.dns {
        return None;
    }
    let addr = SocketAddr::new(gateway, crate::dns::PORT);
    match crate::dns::ClusterDns::start(services, addr, &config.cluster_domain, &config.host_resolv_conf()) {
        Ok(dns) => Some(dns),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot serve cluster DNS on this node");
            None
        }
    }
}

/// Registers the Node, retrying while the API server is not reachable yet.
async fn register_until_done(client: &kube::Client, config: &AgentConfig, port: u16) {
    let mut delay = Duration::from_millis(100);
    loop {
        match crate::node_status::register(client, config, port).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "registering the node; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// What the kubelet endpoint serves: logs through the log index, and the node's metrics.
struct Endpoint {
    logs: Arc<LogIndex>,
    runtime: Arc<dyn ContainerRuntime>,
    images: Arc<ImageStore>,
    sandboxes: Arc<SandboxManager>,
    pods: Arc<std::sync::OnceLock<std::sync::Weak<Deps>>>,
    streams: Arc<dyn crate::streaming::Streams>,
    stats: Arc<crate::stats::StatsSource>,
}

impl crate::kubelet_server::LogSource for Endpoint {
    fn locate(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<crate::logs::LogFiles, crate::kubelet_server::LocateError> {
        self.logs.locate(namespace, pod, container, previous)
    }

    fn streams(&self) -> Option<Arc<dyn crate::streaming::Streams>> {
        Some(Arc::clone(&self.streams))
    }

    fn stats(&self) -> Option<Arc<crate::stats::StatsSource>> {
        Some(Arc::clone(&self.stats))
    }

    fn pods(&self) -> Option<futures::future::BoxFuture<'static, Result<serde_json::Value, String>>> {
        let deps = self.pods.get().and_then(std::sync::Weak::upgrade)?;
        Some(Box::pin(async move {
            let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(deps.client.clone());
            let params = kube::api::ListParams::default().fields(&format!("spec.nodeName={}", deps.config.node_name));
            let listed = api.list(&params).await.map_err(|e| format!("listing the node's pods: {e}"))?;
            let items: Vec<serde_json::Value> =
                listed.items.iter().filter_map(|p| serde_json::to_value(p).ok()).collect();
            Ok(serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}))
        }))
    }

    fn metrics(&self) -> String {
        let pods = self.pods.get().and_then(std::sync::Weak::upgrade).map_or(0, |d| d.pod_count());
        format!(
            "# HELP skiff_wasm_compiles_total Wasm modules and components compiled (compile-cache misses).\n\
             # TYPE skiff_wasm_compiles_total counter\nskiff_wasm_compiles_total {}\n\
             # HELP skiff_image_pulls_total Image pulls that contacted a registry.\n\
             # TYPE skiff_image_pulls_total counter\nskiff_image_pulls_total {}\n\
             # HELP skiff_image_blob_downloads_total Image blobs (configs, layers) downloaded from registries.\n\
             # TYPE skiff_image_blob_downloads_total counter\nskiff_image_blob_downloads_total {}\n\
             # HELP skiff_node_pods Pods this node agent runs.\n# TYPE skiff_node_pods gauge\nskiff_node_pods {pods}\n\
             # HELP skiff_sandboxes_pooled Pod sandboxes prepared ahead of demand.\n\
             # TYPE skiff_sandboxes_pooled gauge\nskiff_sandboxes_pooled {}\n\
             # HELP skiff_wasm_execs_running Commands of kubectl exec running in Wasm containers.\n\
             # TYPE skiff_wasm_execs_running gauge\nskiff_wasm_execs_running {}\n",
            self.runtime.compiles(),
            self.images.pulls(),
            self.images.blob_downloads(),
            self.sandboxes.pooled(),
            crate::streaming::wasm_exec::running(),
        )
    }
}

/// Makes the node's data directory 0700: it holds pods' secret volumes, projected tokens, logs and the
/// compile cache; files inside keep Kubernetes' modes (a secret's defaultMode 0644) for the containers
/// that mount them, and no other user of the host reaches them through this directory.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
