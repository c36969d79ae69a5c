//! The ingress controller of every node agent: networking.k8s.io/v1 Ingresses of skiff's
//! IngressClasses (`spec.controller: skiff.io/ingress`) served on the node's address, by default
//! on ports 80 and 443 (`--ingress-http-port`, `--ingress-https-port`; 0 disables).
//!
//! `route` is the routing core (hosts -> paths -> backends, independent of Ingress), `source`
//! turns Ingresses into it, `backends` resolves Service ports to ready endpoints, `tls` picks
//! certificates by SNI, `server` is the HTTP side. This module holds the watches: IngressClasses,
//! Ingresses and `kubernetes.io/tls` Secrets rebuild a [`Snapshot`] published whole through a
//! `watch` channel (requests in flight keep the one they started with, so a reload drops no
//! connection); the node's shared Service and EndpointSlice cache (`service_cache`) updates the
//! backends in place. Nothing is polled.

pub mod backends;
pub mod route;
pub mod server;
pub mod source;
pub mod tls;
pub mod upgrade;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Secret};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Api;
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::AgentConfig;
use crate::service_cache::{Key, ServiceCache, Subscription};
use backends::Backends;
use source::{Classes, Routes, SecretKey};

/// What the proxy serves at one moment: routes, TLS hosts and their certificates.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub routes: Routes,
    pub certs: HashMap<SecretKey, Arc<CertifiedKey>>,
}

/// A running ingress; [`IngressProxy::stop`] closes its listeners.
pub struct IngressProxy {
    tasks: Vec<JoinHandle<()>>,
    /// Where plain HTTP is served, if it is.
    pub http_addr: Option<SocketAddr>,
    /// Where HTTPS is served, if it is.
    pub https_addr: Option<SocketAddr>,
}

/// Binds `node_ip:port` unless `port` is 0; a failure is logged and leaves that side off.
async fn bind(config: &AgentConfig, port: u16, what: &str) -> Option<TcpListener> {
    if port == 0 {
        return None;
    }
    match TcpListener::bind((config.node_ip, port)).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(address = %config.node_ip, port, error = %e, "ingress {what} port unavailable; not serving {what}");
            None
        }
    }
}

impl IngressProxy {
    /// Starts the watches and listeners; `None` when both ports are off or unavailable.
    pub async fn start(client: kube::Client, cache: &ServiceCache, config: &AgentConfig) -> Option<Self> {
        let http = bind(config, config.ingress_http_port, "HTTP").await;
        let https = bind(config, config.ingress_https_port, "HTTPS").await;
        if http.is_none() && https.is_none() {
            tracing::info!("ingress off on this node (no port to serve)");
            return None;
        }
        let (publish, snapshot) = watch::channel(Arc::new(Snapshot::default()));
        let backends = Arc::new(parking_lot::RwLock::new(Backends::over(&config.node_name, cache.store())));
        let shared = Arc::new(server::Shared::new(snapshot.clone(), Arc::clone(&backends)));
        let mut tasks = vec![tokio::spawn(run(client, cache.subscribe(), publish, backends))];
        let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
        let https_addr = https.as_ref().and_then(|l| l.local_addr().ok());
        if let Some(listener) = http {
            tasks.push(tokio::spawn(server::serve_http(listener, Arc::clone(&shared))));
        }
        if let Some(listener) = https {
            let tls = tls::default_cert()
                .map_err(|e| e.to_string())
                .and_then(|default| tls::server_config(tls::Resolver { snapshot, default }).map_err(|e| e.to_string()));
            match tls {
                Ok(tls) => tasks.push(tokio::spawn(server::serve_https(listener, tls, shared))),
                Err(e) => tracing::warn!(error = %e, "ingress TLS setup failed; not serving HTTPS"),
            }
        }
        tracing::info!(http = ?http_addr, https = ?https_addr, "ingress serving");
        Some(Self { tasks, http_addr, https_addr })
    }

    /// Stops watching and serving (connections in flight finish on their own).
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// One watch event: a change of what routes are built from, or of these Services (their objects
/// or EndpointSlices).
enum Input {
    Routing,
    Services(BTreeSet<Key>),
}

/// A reflector of every `K`, whose events only say "rebuild".
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &'static str,
) -> (Store<K>, futures::stream::BoxStream<'static, Input>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .map(move |e| {
            if let Err(e) = e {
                tracing::warn!(error = %e, "ingress: watching {what}");
            }
            Input::Routing
        })
        .boxed();
    (reader, stream)
}

async fn run(
    client: kube::Client,
    services: Subscription,
    publish: watch::Sender<Arc<Snapshot>>,
    backends: Arc<parking_lot::RwLock<Backends>>,
) {
    let (classes, class_events) =
        reflect(Api::<IngressClass>::all(client.clone()), watcher::Config::default(), "IngressClasses");
    let (ingresses, ingress_events) =
        reflect(Api::<Ingress>::all(client.clone()), watcher::Config::default(), "Ingresses");
    let tls_only = watcher::Config::default().fields("type=kubernetes.io/tls");
    let (secrets, secret_events) = reflect(Api::<Secret>::all(client.clone()), tls_only, "TLS Secrets");
    let services = services.into_stream().map(Input::Services).boxed();
    let mut inputs = futures::stream::select_all([class_events, ingress_events, secret_events, services]);
    let mut reported: HashSet<String> = HashSet::new();
    let recorder = client;
    while let Some(first) = inputs.next().await {
        // Take everything already waiting, so a burst of changes is one rebuild.
        let mut batch = vec![first];
        crate::batch::take_ready(&mut batch, &mut inputs);
        let mut rebuild = false;
        for input in batch {
            match input {
                Input::Routing => rebuild = true,
                Input::Services(keys) => backends.write().refresh(keys),
            }
        }
        if rebuild {
            let span = tracing::debug_span!("ingress_rebuild");
            let _enter = span.enter();
            let all_classes = classes.state();
            let all_ingresses = ingresses.state();
            let classes = Classes::from(all_classes.iter().map(|c| c.as_ref()));
            let ours: Vec<&Ingress> = all_ingresses.iter().map(|i| i.as_ref()).filter(|i| classes.takes(i)).collect();
            let routes = source::routes(ours.iter().copied(), &classes);
            let secret_map: HashMap<SecretKey, Secret> = secrets
                .state()
                .iter()
                .map(|s| {
                    let key =
                        (s.metadata.namespace.clone().unwrap_or_default(), s.metadata.name.clone().unwrap_or_default());
                    (key, s.as_ref().clone())
                })
                .collect();
            let (certs, problems) = tls::load(&routes.tls, &secret_map);
            for problem in problems {
                let message = format!("{problem}; serving the default certificate for its hosts");
                if reported.insert(message.clone()) {
                    tracing::warn!(%message, "ingress TLS");
                    report(&recorder, &ours, &problem, &message);
                }
            }
            tracing::debug!(ingresses = ours.len(), certificates = certs.len(), "ingress routes rebuilt");
            publish.send_replace(Arc::new(Snapshot { routes, certs }));
        }
    }
}

/// A Warning event on every Ingress whose TLS names the Secret of `problem`.
fn report(recorder: &kube::Client, ingresses: &[&Ingress], problem: &tls::CertError, message: &str) {
    let (ns, secret) = match problem {
        tls::CertError::Missing(ns, s) | tls::CertError::NoField(ns, s, _) | tls::CertError::Invalid(ns, s, _) => {
            (ns, s)
        }
        tls::CertError::Generate(_) => return,
    };
    for ing in ingresses.iter().filter(|i| i.metadata.namespace.as_ref() == Some(ns)) {
        let names =
            ing.spec.iter().flat_map(|s| s.tls.iter().flatten()).any(|t| t.secret_name.as_ref() == Some(secret));
        if !names {
            continue;
        }
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
        let name = ing.metadata.name.clone().unwrap_or_default();
        let event = CoreEvent {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{name}.")),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("networking.k8s.io/v1".into()),
                kind: Some("Ingress".into()),
                name: Some(name),
                namespace: Some(ns.clone()),
                uid: ing.metadata.uid.clone(),
                ..Default::default()
            },
            reason: Some("InvalidTLSSecret".into()),
            message: Some(message.to_string()),
            type_: Some("Warning".into()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("skiff-ingress".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let api = Api::<CoreEvent>::namespaced(recorder.clone(), ns);
        tokio::spawn(async move {
            if let Err(e) = api.create(&Default::default(), &event).await {
                tracing::debug!(error = %e, "recording an ingress event");
            }
        });
    }
}
