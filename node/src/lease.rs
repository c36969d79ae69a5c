//! The node's heartbeat: a Lease in `kube-node-lease`, renewed on an interval.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use crate::config::AgentConfig;

/// Renews the Lease forever (until the task is aborted); failures are logged and retried.
pub async fn keep_fresh(client: kube::Client, config: AgentConfig) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut tick = tokio::time::interval(config.lease_interval);
    loop {
        tick.tick().await;
        if let Err(e) = renew(&leases, &config).await {
            tracing::warn!(node = %config.node_name, error = %e, "renewing the node lease");
        }
    }
}

async fn renew(leases: &Api<Lease>, config: &AgentConfig) -> Result<(), kube::Error> {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let spec = json!({"holderIdentity": config.node_name,
                      "leaseDurationSeconds": (config.lease_interval.as_secs() * 4).max(40), "renewTime": now});
    let patch = Patch::Merge(json!({"spec": spec}));
    match leases.patch(&config.node_name, &PatchParams::default(), &patch).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": config.node_name, "namespace": "kube-node-lease"}, "spec": spec,
            }))
            .map_err(kube::Error::SerdeError)?;
            leases.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}
