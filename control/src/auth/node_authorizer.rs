//! The Node authorizer and NodeRestriction, as kube-apiserver runs them for kubelets: a node
//! (`system:node:<name>` in `system:nodes`) reads only the Secrets, ConfigMaps and
//! PersistentVolumeClaims its own pods use (and the PersistentVolumes those claims are bound to), asks tokens only for its pods' service accounts, and
//! writes only its own Node, its own Lease and its own pods' status. Anything else it asks is left
//! to RBAC (the `system:node` role), which no longer grants those reads.

use super::node_graph::{NodeGraph, RefKind};
use super::request_info::Attributes;
use crate::api::registry::Registry;

/// The group every node identity is in.
pub const NODES_GROUP: &str = "system:nodes";
/// The namespace of the node heartbeat Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The one selector with which a node may list and watch Secrets of every namespace: its ingress
/// proxy serves the certificates of `kubernetes.io/tls` Secrets, as a cluster-wide ingress
/// controller does (kube-apiserver's AuthorizeWithSelectors lets the Node authorizer rule on
/// selectors the same way for pods).
const TLS_SECRETS_SELECTOR: &str = "type=kubernetes.io/tls";

/// What the Node authorizer says about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused, with the reason appended to the Forbidden message.
    Deny(String),
    /// Not a node or not a request it rules on: RBAC decides.
    NoOpinion,
}

/// The node a user is, if it is a node identity.
pub fn node_name(a: &Attributes) -> Option<&str> {
    super::node_restriction::node_user(&a.user)
}

fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}

/// Whether the decision for `a` needs the name of the object a create sends in its body.
pub fn needs_created_name(a: &Attributes) -> bool {
    node_name(a).is_some()
        && a.verb == "create"
        && a.subresource.is_empty()
        && ((a.api_group.is_empty() && a.resource == "nodes")
            || (a.api_group == "coordination.k8s.io" && a.resource == "leases" && a.namespace == NODE_LEASE_NAMESPACE))
}

/// Decides `a`. `created` is the name in a create's body, for the creates
/// [`needs_created_name`] names.
pub async fn decide(graph: &NodeGraph, a: &Attributes, created: Option<&str>) -> Decision {
    let Some(node) = node_name(a) else { return Decision::NoOpinion };
    if !a.resource_request {
        return Decision::NoOpinion;
    }
    let target = if a.verb == "create" && a.subresource.is_empty() { created.unwrap_or("") } else { &a.name };
    match (a.api_group.as_str(), a.resource.as_str(), a.subresource.as_str()) {
        ("", "secrets" | "configmaps" | "persistentvolumeclaims", "") => {
            let kind = match a.resource.as_str() {
                "secrets" => RefKind::Secret,
                "configmaps" => RefKind::ConfigMap,
                _ => RefKind::PersistentVolumeClaim,
            };
            if kind == RefKind::Secret
                && matches!(a.verb.as_str(), "list" | "watch")
                && a.name.is_empty()
                && a.field_selector == TLS_SECRETS_SELECTOR
            {
                return Decision::Allow;
            }
            if a.verb != "get" || a.name.is_empty() {
                return Decision::Deny("can only get individual resources of this type".into());
            }
            related(graph, node, kind, &a.namespace, &a.name).await
        }
        ("", "serviceaccounts", "token") if a.verb == "create" => {
            related(graph, node, RefKind::ServiceAccount, &a.namespace, &a.name).await
        }
        ("", "pods", "") if a.verb == "create" => Decision::Deny(format!(
            "pod does not have \"kubernetes.io/config.mirror\" annotation, node \"{node}\" can only create mirror pods"
        )),
        ("", "pods", sub @ ("" | "status" | "eviction")) if is_write(&a.verb) => {
            let what = match sub {
                "" => "delete pods",
                "status" => "update pod status for pods",
                _ => "evict pods",
            };
            if a.name.is_empty() {
                return Decision::Deny(format!("node \"{node}\" can only {what} with spec.nodeName set to itself"));
            }
            let own = graph.eventually(|g| g.node_of_pod(&a.namespace, &a.name).as_deref() == Some(node)).await;
            if own {
                Decision::NoOpinion
            } else {
                Decision::Deny(format!("node \"{node}\" can only {what} with spec.nodeName set to itself"))
            }
        }
        ("", "nodes", "" | "status") if is_write(&a.verb) => {
            if target == node {
                Decision::NoOpinion
            } else {
                Decision::Deny(format!("node \"{node}\" is not allowed to modify node \"{target}\""))
            }
        }
        ("coordination.k8s.io", "leases", "") if is_write(&a.verb) => {
            if a.namespace == NODE_LEASE_NAMESPACE && target == node {
                Decision::NoOpinion
            } else {
                Decision::Deny("can only access node lease with the same name as the requesting node".into())
            }
        }
        _ => Decision::NoOpinion,
    }
}

/// A node's `get` of a PersistentVolume: allowed when a claim one of its pods uses is bound to
/// it (`spec.volumeName`), read from the store at decision time. `None` when `a` is not a
/// node's request about PersistentVolumes.
pub async fn decide_persistent_volume(graph: &NodeGraph, registry: &Registry, a: &Attributes) -> Option<Decision> {
    let node = node_name(a)?;
    if !(a.resource_request && a.api_group.is_empty() && a.resource == "persistentvolumes" && a.subresource.is_empty())
    {
        return None;
    }
    if a.verb != "get" || a.name.is_empty() {
        return Some(Decision::Deny("can only get individual resources of this type".into()));
    }
    let ri = registry.resource("", "PersistentVolumeClaim").ok()?;
    for (ns, claim) in graph.claims_of(node) {
        let Ok(pvc) = registry.get(ri, Some(&ns), &claim).await else { continue };
        if pvc.pointer("/spec/volumeName").and_then(serde_json::Value::as_str) == Some(a.name.as_str()) {
            return Some(Decision::Allow);
        }
    }
    Some(Decision::Deny(format!("no relationship found between node '{node}' and this object")))
}

async fn related(graph: &NodeGraph, node: &str, kind: RefKind, namespace: &str, name: &str) -> Decision {
    if graph.eventually(|g| g.related(node, kind, namespace, name)).await {
        Decision::Allow
    } else {
        Decision::Deny(format!("no relationship found between node '{node}' and this object"))
    }
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use super::*;
    use crate::auth::UserInfo;

    fn node_user(name: &str) -> UserInfo {
        UserInfo { name: format!("system:node:{name}"), groups: vec![NODES_GROUP.into()], ..UserInfo::default() }
    }

    fn req(user: UserInfo, verb: &str, group: &str, ns: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            user,
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            namespace: ns.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    fn graph_with_pod_on(node: &str) -> NodeGraph {
        let g = NodeGraph::with_catch_up(std::time::Duration::from_millis(20));
        let pod = json!({
            "metadata": {"name": "web", "namespace": "app"},
            "spec": {"nodeName": node, "serviceAccountName": "web",
                     "volumes": [{"name": "s", "secret": {"secretName": "db-password"}}]}
        });
        g.apply(&pod, false);
        g
    }

    #[tokio::test]
    async fn a_node_reads_only_its_own_pods_secrets() {
        let g = graph_with_pod_on("n1");
        let get = |n: &str, name: &str| req(node_user(n), "get", "", "app", "secrets", "", name);
        assert_eq!(decide(&g, &get("n1", "db-password"), None).await, Decision::Allow);
        let other = decide(&g, &get("n2", "db-password"), None).await;
        assert_eq!(other, Decision::Deny("no relationship found between node 'n2' and this object".into()));
        assert!(matches!(decide(&g, &get("n1", "unrelated"), None).await, Decision::Deny(_)));
        let list = req(node_user("n1"), "list", "", "app", "secrets", "", "");
        assert!(matches!(decide(&g, &list, None).await, Decision::Deny(_)), "no listing of secrets");
        let token = req(node_user("n1"), "create", "", "app", "serviceaccounts", "token", "web");
        assert_eq!(decide(&g, &token, None).await, Decision::Allow);
        let token = req(node_user("n2"), "create", "", "app", "serviceaccounts", "token", "web");
        assert!(matches!(decide(&g, &token, None).await, Decision::Deny(_)));
    }

    #[tokio::test]
    async fn a_node_lists_and_watches_tls_secrets_only_with_the_type_selector() {
        let g = graph_with_pod_on("n1");
        let with = |verb: &str, selector: &str| Attributes {
            field_selector: selector.into(),
            ..req(node_user("n2"), verb, "", "", "secrets", "", "")
        };
        for verb in ["list", "watch"] {
            assert_eq!(decide(&g, &with(verb, "type=kubernetes.io/tls"), None).await, Decision::Allow, "{verb}");
        }
        for selector in ["", "type=Opaque", "type=kubernetes.io/tls,metadata.namespace=x", "type!=kubernetes.io/tls"] {
            assert!(matches!(decide(&g, &with("list", selector), None).await, Decision::Deny(_)), "{selector}");
        }
        // Not a way to write them, nor to reach ConfigMaps.
        assert!(matches!(decide(&g, &with("delete", "type=kubernetes.io/tls"), None).await, Decision::Deny(_)));
        let maps = Attributes { resource: "configmaps".into(), ..with("list", "type=kubernetes.io/tls") };
        assert!(matches!(decide(&g, &maps, None).await, Decision::Deny(_)));
        // The selector reaches the attributes decoded, as kube-rs sends it.
        let a = crate::auth::request_info::attributes(
            node_user("n2"),
            "GET",
            "/api/v1/secrets",
            Some("watch=true&fieldSelector=type%3Dkubernetes.io%2Ftls"),
        );
        assert_eq!((a.verb.as_str(), a.field_selector.as_str()), ("watch", "type=kubernetes.io/tls"));
        assert_eq!(decide(&g, &a, None).await, Decision::Allow);
    }

    #[tokio::test]
    async fn a_node_writes_only_its_own_node_lease_and_pods() {
        let g = graph_with_pod_on("n1");
        let n1 = node_user("n1");
        let status = |name: &str| req(n1.clone(), "patch", "", "", "nodes", "status", name);
        assert_eq!(decide(&g, &status("n1"), None).await, Decision::NoOpinion);
        assert_eq!(
            decide(&g, &status("n2"), None).await,
            Decision::Deny("node \"n1\" is not allowed to modify node \"n2\"".into())
        );
        let create = req(n1.clone(), "create", "", "", "nodes", "", "");
        assert!(needs_created_name(&create));
        assert_eq!(decide(&g, &create, Some("n1")).await, Decision::NoOpinion);
        assert!(matches!(decide(&g, &create, Some("n2")).await, Decision::Deny(_)));
        assert!(matches!(decide(&g, &create, None).await, Decision::Deny(_)));
        let lease = |name: &str| req(n1.clone(), "patch", "coordination.k8s.io", "kube-node-lease", "leases", "", name);
        assert_eq!(decide(&g, &lease("n1"), None).await, Decision::NoOpinion);
        assert!(matches!(decide(&g, &lease("n2"), None).await, Decision::Deny(_)));
        let pod_status = req(n1.clone(), "patch", "", "app", "pods", "status", "web");
        assert_eq!(decide(&g, &pod_status, None).await, Decision::NoOpinion);
        let n2_status = req(node_user("n2"), "patch", "", "app", "pods", "status", "web");
        assert!(matches!(decide(&g, &n2_status, None).await, Decision::Deny(_)));
        let create_pod = req(n1.clone(), "create", "", "app", "pods", "", "");
        assert!(matches!(decide(&g, &create_pod, None).await, Decision::Deny(_)));
        let read_pods = req(n1, "list", "", "", "pods", "", "");
        assert_eq!(decide(&g, &read_pods, None).await, Decision::NoOpinion, "RBAC decides");
    }

    #[tokio::test]
    async fn other_users_are_left_to_rbac() {
        let g = NodeGraph::default();
        let user = UserInfo { name: "system:node:n1".into(), groups: vec!["devs".into()], ..UserInfo::default() };
        let a = req(user, "get", "", "app", "secrets", "", "x");
        assert_eq!(decide(&g, &a, None).await, Decision::NoOpinion, "a node's name without the group is no node");
    }
}
