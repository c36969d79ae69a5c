//! The node's pod CIDR when the agent was started without `--pod-cidr`: the Node is created
//! without one, and the agent waits until the server's node IPAM writes `spec.podCIDR` (with the
//! cluster CIDR it came from, which pods then route to their node). A restarted agent finds the
//! block its Node already has.

use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::wait::await_condition;
use kube::Api;

use crate::config::AgentConfig;
use crate::error::AgentError;

/// The annotation the server's node IPAM writes beside `spec.podCIDR`
/// (`skiff_control::controllers::node_ipam::CLUSTER_CIDR_ANNOTATION`).
pub const CLUSTER_CIDR_ANNOTATION: &str = "skiff.io/cluster-cidr";
/// How often the wait says what it waits for.
const REMIND_EVERY: Duration = Duration::from_secs(30);

/// Fills `config.pod_cidr` (and `config.cluster_cidr`) from the Node when it is empty, creating the
/// Node first; waits as long as it takes, saying so every half minute.
#[tracing::instrument(skip_all, fields(node = %config.node_name))]
pub async fn obtain(client: &kube::Client, config: &mut AgentConfig) -> Result<(), AgentError> {
    if !config.pod_cidr.is_empty() {
        return Ok(());
    }
    crate::node_status::create(client, config).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let name = config.node_name.clone();
    let allocated = |node: Option<&Node>| node.and_then(allocation).is_some();
    loop {
        match tokio::time::timeout(REMIND_EVERY, await_condition(nodes.clone(), &name, allocated)).await {
            Ok(Ok(node)) => {
                let Some((pod_cidr, cluster_cidr)) = node.as_ref().and_then(allocation) else {
                    return Err(AgentError::Client(format!("node {name} was deleted while waiting for its pod CIDR")));
                };
                tracing::info!(%pod_cidr, cluster_cidr = ?cluster_cidr, "the server allocated this node's pod CIDR");
                config.pod_cidr = pod_cidr.to_string();
                config.cluster_cidr = cluster_cidr.map(|c| c.to_string());
                return Ok(());
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "watching the node for its pod CIDR; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => tracing::warn!(
                "still waiting for the server to allocate this node's pod CIDR (is `skiff server --allocate-node-cidrs` on, \
                 and its --cluster-cidr not full?); or start the agent with --pod-cidr"
            ),
        }
    }
}

/// A node's pod CIDR (`spec.podCIDR`, else the first of `spec.podCIDRs`), if it has a valid IPv4 one.
pub fn of(node: &Node) -> Option<Ipv4Net> {
    let spec = node.spec.as_ref()?;
    let text = spec.pod_cidr.as_deref().or_else(|| spec.pod_cidrs.as_ref()?.first().map(String::as_str))?;
    text.parse::<Ipv4Net>().ok().map(|c| c.trunc())
}

/// The node's pod CIDR and, when it lies strictly inside it, the cluster CIDR it was allocated from.
fn allocation(node: &Node) -> Option<(Ipv4Net, Option<Ipv4Net>)> {
    let pod = of(node)?;
    let cluster = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLUSTER_CIDR_ANNOTATION))
        .and_then(|c| c.parse::<Ipv4Net>().ok())
        .map(|c| c.trunc())
        // The node's own block is on its bridge already: a route for it would collide.
        .filter(|c| c.contains(&pod) && c.prefix_len() < pod.prefix_len());
    Some((pod, cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(value: serde_json::Value) -> Node {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_allocation_and_its_cluster_cidr() {
        let n = node(
            serde_json::json!({"metadata": {"name": "n", "annotations": {CLUSTER_CIDR_ANNOTATION: "10.42.0.0/16"}},
                                        "spec": {"podCIDR": "10.42.3.0/24"}}),
        );
        assert_eq!(allocation(&n), Some(("10.42.3.0/24".parse().unwrap(), Some("10.42.0.0/16".parse().unwrap()))));
    }

    #[test]
    fn no_cluster_route_that_would_collide_with_the_bridge() {
        for cluster in ["10.42.3.0/24", "10.43.0.0/16", "garbage"] {
            let n =
                node(serde_json::json!({"metadata": {"name": "n", "annotations": {CLUSTER_CIDR_ANNOTATION: cluster}},
                                            "spec": {"podCIDRs": ["10.42.3.0/24"]}}));
            assert_eq!(allocation(&n), Some(("10.42.3.0/24".parse().unwrap(), None)), "{cluster}");
        }
    }

    #[test]
    fn nothing_until_allocated() {
        assert_eq!(allocation(&node(serde_json::json!({"metadata": {"name": "n"}, "spec": {}}))), None);
        assert_eq!(allocation(&node(serde_json::json!({"metadata": {"name": "n"}}))), None);
    }
}
