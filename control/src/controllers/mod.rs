//! In-process controllers. Each is a client of the [`Registry`](crate::api::registry::Registry)
//! (the API machinery with its admission rules), never of the store, and runs under the
//! [`runtime::Supervisor`] (restarted with back-off, visible in `/readyz?verbose` and `/metrics`).

pub mod apiservice;
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
pub mod hpa;
pub mod ingress_status;
pub mod job;
pub mod leader_election;
pub mod legacy_tokens;
pub mod local_path;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod podutil;
pub mod replicaset;
pub mod resource_quota;
pub mod revision;
pub mod runtime;
pub mod service_accounts;
pub mod service_lb;
pub mod statefulset;

use std::sync::Arc;

use crate::api::registry::Registry;
use crate::auth::node_graph::NodeGraph;
use crate::auth::service_account::TokenIssuer;
use crate::server::kubelet_certs::CertAuthority;
use runtime::{Informers, Supervisor};

/// Which of the in-process components run besides the API server's own tasks. As k3s's
/// `--disable-scheduler` and `--disable-controller-manager`: for a server whose scheduler or
/// controllers run elsewhere, and for measuring the API server alone.
#[derive(Clone, Debug)]
pub struct Components {
    pub scheduler: bool,
    /// Every controller kube-controller-manager would run (workloads, garbage collection,
    /// namespaces, service accounts and tokens, node lifecycle, endpoints, load balancers).
    pub controller_manager: bool,
    /// Run each of the two only while this server holds its Lease (`--leader-elect`), so that
    /// several servers on one etcd do not both act; `None` runs them unconditionally.
    pub election: Option<leader_election::Election>,
    /// The HorizontalPodAutoscaler controller's flags and metrics source.
    pub autoscaler: hpa::Config,
    /// Allocate nodes' pod CIDRs from this cluster CIDR (`--cluster-cidr`); `None`: nodes bring
    /// their own.
    pub node_ipam: Option<node_ipam::Config>,
    /// The least time between two rounds of writes of one Service's endpoints
    /// (`--endpoint-updates-batch-period`; the first change after a quiet spell goes at once).
    pub endpoint_updates_batch_period: std::time::Duration,
}

impl Default for Components {
    fn default() -> Self {
        Self {
            scheduler: true,
            controller_manager: true,
            election: None,
            autoscaler: hpa::Config::default(),
            node_ipam: None,
            endpoint_updates_batch_period: endpoints::DEFAULT_BATCH_PERIOD,
        }
    }
}

/// Starts every controller under one supervisor, which it returns.
pub fn start(registry: Arc<Registry>) -> Arc<Supervisor> {
    start_with(registry, node_lifecycle::Config::default(), None, Arc::default(), None, None, Components::default())
}

/// [`start`] with the node lifecycle settings of the server's flags and the cluster CA (PEM) that
/// every namespace's `kube-root-ca.crt` publishes, keeping the Node authorizer's `node_graph`
/// current from the shared Pod informer, filling legacy token Secrets with tokens `issuer` signs,
/// and signing nodes' certificate requests with `signer`.
pub fn start_with(
    registry: Arc<Registry>,
    lifecycle: node_lifecycle::Config,
    root_ca: Option<Arc<str>>,
    node_graph: Arc<NodeGraph>,
    issuer: Option<Arc<TokenIssuer>>,
    signer: Option<Arc<CertAuthority>>,
    components: Components,
) -> Arc<Supervisor> {
    let supervisor = Supervisor::new();
    let informers = Informers::new(Arc::clone(&registry), Arc::clone(&supervisor));
    // The API server's own: the Node authorizer's graph, CRD establishment, compaction.
    let r = Arc::clone(&registry);
    supervisor.spawn("node-authorizer-graph", move || Arc::clone(&node_graph).follow(Arc::clone(&r)));
    crd::start(&informers);
    let r = Arc::clone(&registry);
    supervisor.spawn("apiservice", move || apiservice::run(Arc::clone(&r)));
    let r = Arc::clone(&registry);
    supervisor.spawn("compaction", move || {
        let r = Arc::clone(&r);
        async move {
            compaction::run(r).await;
            Ok::<(), runtime::Error>(())
        }
    });
    let (autoscaler, node_ipam) = (components.autoscaler.clone(), components.node_ipam);
    let batch_period = components.endpoint_updates_batch_period;
    let manager: leader_election::Lead = Arc::new(move |informers: &Arc<Informers>| {
        start_controller_manager(informers, lifecycle, root_ca.clone(), issuer.clone());
        endpoints::start(informers, batch_period);
        hpa::start(informers, autoscaler.clone());
        if let Some(config) = node_ipam {
            node_ipam::start(informers, config);
        }
        if let Some(ca) = &signer {
            csr_signer::start(informers, Arc::clone(ca));
        }
    });
    let scheduler: leader_election::Lead = Arc::new(|informers: &Arc<Informers>| crate::scheduler::start(informers));
    let elected = [
        (components.scheduler, "kube-scheduler", scheduler),
        (components.controller_manager, "kube-controller-manager", manager),
    ];
    for (_, name, lead) in elected.into_iter().filter(|(enabled, _, _)| *enabled) {
        match &components.election {
            Some(election) => leader_election::run(&informers, name, election.clone(), lead),
            None => lead(&informers),
        }
    }
    supervisor
}

/// The controllers kube-controller-manager runs.
fn start_controller_manager(
    informers: &Arc<Informers>,
    lifecycle: node_lifecycle::Config,
    root_ca: Option<Arc<str>>,
    issuer: Option<Arc<TokenIssuer>>,
) {
    let (registry, supervisor) = (informers.registry(), informers.supervisor());
    if let Some(issuer) = issuer {
        legacy_tokens::start(informers, issuer, root_ca.clone());
    }
    namespace::start(informers);
    let r = Arc::clone(registry);
    supervisor.spawn("controller-garbage-collector", move || {
        let r = Arc::clone(&r);
        async move {
            garbage_collector::run(r).await;
            Ok::<(), runtime::Error>(())
        }
    });
    replicaset::start(informers, replicaset::Flavor::ReplicaSet);
    replicaset::start(informers, replicaset::Flavor::ReplicationController);
    deployment::start(informers);
    let r = Arc::clone(registry);
    supervisor.spawn("controller-service-accounts", move || {
        let (r, root_ca) = (Arc::clone(&r), root_ca.clone());
        async move {
            service_accounts::run(r, root_ca).await;
            Ok::<(), runtime::Error>(())
        }
    });
    node_lifecycle::start(informers, lifecycle);
    service_lb::start(informers);
    ingress_status::start(informers);
    job::start(informers);
    cronjob::start(informers);
    daemonset::start(informers);
    statefulset::start(informers);
    resource_quota::start(informers);
    disruption::start(informers);
    local_path::start(informers);
}
