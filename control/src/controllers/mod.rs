//! In-process controllers. Each is a client of the [`Registry`](crate::api::registry::Registry)
//! (the API machinery with its admission rules), never of the store, and runs under the
//! [`runtime::Supervisor`] (restarted with back-off, visible in `/readyz?verbose` and `/metrics`).

pub mod compaction;
pub mod crd;
pub mod cron_schedule;
pub mod cronjob;
pub mod csr_signer;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod garbage_collector;
pub mod job;
pub mod legacy_tokens;
pub mod namespace;
pub mod node_lifecycle;
pub mod podutil;
pub mod replicaset;
pub mod revision;
pub mod runtime;
pub mod service_accounts;
pub mod service_lb;
pub mod statefulset;

use std::sync::Arc;

use crate::api::registry::Registry;
use crate::auth::node_graph::NodeGraph;
use crate::auth::service_account::TokenIssuer;
use runtime::{Informers, Supervisor};

/// Starts every controller under one supervisor, which it returns.
pub fn start(registry: Arc<Registry>) -> Arc<Supervisor> {
    start_with(registry, node_lifecycle::Config::default(), None, Arc::default(), None)
}

/// [`start`] with the node lifecycle settings of the server's flags and the cluster CA (PEM) that
/// every namespace's `kube-root-ca.crt` publishes, keeping the Node authorizer's `node_graph`
/// current from the shared Pod informer, and filling legacy token Secrets with tokens `issuer` signs.
pub fn start_with(
    registry: Arc<Registry>,
    lifecycle: node_lifecycle::Config,
    root_ca: Option<Arc<str>>,
    node_graph: Arc<NodeGraph>,
    issuer: Option<Arc<TokenIssuer>>,
) -> Arc<Supervisor> {
    let supervisor = Supervisor::new();
    let informers = Informers::new(Arc::clone(&registry), Arc::clone(&supervisor));
    let pods = informers.get("", "Pod");
    supervisor.spawn("node-authorizer-graph", move || Arc::clone(&node_graph).follow(Arc::clone(&pods)));
    if let Some(issuer) = issuer {
        legacy_tokens::start(&informers, issuer, root_ca.clone());
    }
    namespace::start(&informers);
    crd::start(&informers);
    let r = Arc::clone(&registry);
    supervisor.spawn("controller-garbage-collector", move || {
        let r = Arc::clone(&r);
        async move {
            garbage_collector::run(r).await;
            Ok::<(), runtime::Error>(())
        }
    });
    crate::scheduler::start(&informers);
    let r = Arc::clone(&registry);
    supervisor.spawn("compaction", move || {
        let r = Arc::clone(&r);
        async move {
            compaction::run(r).await;
            Ok::<(), runtime::Error>(())
        }
    });
    replicaset::start(&informers, replicaset::Flavor::ReplicaSet);
    replicaset::start(&informers, replicaset::Flavor::ReplicationController);
    deployment::start(&informers);
    let r = Arc::clone(&registry);
    supervisor.spawn("controller-service-accounts", move || {
        let (r, root_ca) = (Arc::clone(&r), root_ca.clone());
        async move {
            service_accounts::run(r, root_ca).await;
            Ok::<(), runtime::Error>(())
        }
    });
    node_lifecycle::start(&informers, lifecycle);
    endpoints::start(&informers);
    service_lb::start(&informers);
    job::start(&informers);
    cronjob::start(&informers);
    daemonset::start(&informers);
    statefulset::start(&informers);
    disruption::start(&informers);
    supervisor
}
