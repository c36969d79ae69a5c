//! NodeRestriction's checks on a node's own Node object, as kube-apiserver's admission plugin
//! makes them: a kubelet may not set or change labels under `node-restriction.kubernetes.io/`
//! (they are how administrators steer workloads to trusted nodes), nor labels in the
//! `kubernetes.io` and `k8s.io` namespaces other than the ones kubelets set themselves; and
//! once its Node exists it may not change the taints on it.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::node_authorizer::NODES_GROUP;
use super::UserInfo;
use crate::api::error::ApiError;
use crate::api::object;

const NODE_PREFIX: &str = "system:node:";

/// The labels in the `kubernetes.io`/`k8s.io` namespaces a kubelet sets itself.
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
];
/// Label namespaces left to kubelets.
const KUBELET_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// The node a user is, when it is a node identity.
pub fn node_user(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_PREFIX).filter(|n| !n.is_empty())?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

/// True when the label key's prefix is `domain` or a subdomain of it.
fn in_namespace(key: &str, domain: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else { return false };
    prefix == domain || prefix.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
}

fn forbidden_to_kubelets(key: &str) -> bool {
    if in_namespace(key, "node-restriction.kubernetes.io") {
        return true;
    }
    let kubernetes = in_namespace(key, "kubernetes.io") || in_namespace(key, "k8s.io");
    kubernetes && !KUBELET_LABELS.contains(&key) && !KUBELET_NAMESPACES.iter().any(|ns| in_namespace(key, ns))
}

fn labels(obj: &Value) -> Map<String, Value> {
    object::labels(obj)
}

/// The labels a node may not have set or changed, from `old` (none on create) to `new`.
fn forbidden_labels(old: Option<&Value>, new: &Value) -> Vec<String> {
    let (before, after) = (old.map(labels).unwrap_or_default(), labels(new));
    let changed: BTreeSet<&String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .chain(before.keys().filter(|k| !after.contains_key(*k)))
        .collect();
    changed.into_iter().filter(|k| forbidden_to_kubelets(k)).cloned().collect()
}

/// [`check_node_write`] as the API's Forbidden answer.
pub fn admit_node_write(user: Option<&UserInfo>, old: Option<&Value>, new: &Value) -> Result<(), ApiError> {
    check_node_write(user, old, new)
        .map_err(|reason| ApiError::Forbidden(format!("nodes \"{}\" is forbidden: {reason}", object::name(new))))
}

/// Checks a write of a Node by `user`: `Err` with the reason kube-apiserver gives when a node
/// oversteps. Other users are not restricted here.
pub fn check_node_write(user: Option<&UserInfo>, old: Option<&Value>, new: &Value) -> Result<(), String> {
    if user.and_then(node_user).is_none() {
        return Ok(());
    }
    let forbidden = forbidden_labels(old, new);
    if !forbidden.is_empty() {
        let verb = if old.is_none() { "set the following labels" } else { "modify labels" };
        return Err(format!("is not allowed to {verb}: {}", forbidden.join(", ")));
    }
    if let Some(old) = old {
        if old.pointer("/spec/taints") != new.pointer("/spec/taints") {
            return Err("is not allowed to modify taints".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node_identity(name: &str) -> UserInfo {
        UserInfo { name: format!("system:node:{name}"), groups: vec![NODES_GROUP.into()], ..Default::default() }
    }

    fn node(labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}})
    }

    #[test]
    fn kubelet_labels_pass_restricted_ones_do_not() {
        let me = node_identity("n1");
        let own = node(
            json!({"kubernetes.io/hostname": "n1", "node.kubernetes.io/exclude-from-external-load-balancers": "",
                              "kubelet.kubernetes.io/x": "1", "example.com/team": "a"}),
            json!([]),
        );
        assert_eq!(check_node_write(Some(&me), None, &own), Ok(()));
        let bad = node(
            json!({"node-restriction.kubernetes.io/trusted": "yes", "node-role.kubernetes.io/master": "",
                              "sub.k8s.io/x": "1"}),
            json!([]),
        );
        assert_eq!(
            check_node_write(Some(&me), None, &bad),
            Err("is not allowed to set the following labels: node-restriction.kubernetes.io/trusted, \
                 node-role.kubernetes.io/master, sub.k8s.io/x"
                .into())
        );
    }

    #[test]
    fn updates_are_judged_on_what_changes() {
        let me = node_identity("n1");
        let admin_set = node(json!({"node-restriction.kubernetes.io/trusted": "yes"}), json!([]));
        // Keeping a label an administrator set is fine; changing or removing it is not.
        let kept = node(json!({"node-restriction.kubernetes.io/trusted": "yes", "a": "b"}), json!([]));
        assert_eq!(check_node_write(Some(&me), Some(&admin_set), &kept), Ok(()));
        let removed = node(json!({}), json!([]));
        assert_eq!(
            check_node_write(Some(&me), Some(&admin_set), &removed),
            Err("is not allowed to modify labels: node-restriction.kubernetes.io/trusted".into())
        );
        let tainted = node(
            json!({"node-restriction.kubernetes.io/trusted": "yes"}),
            json!([{"key": "k", "effect": "NoSchedule"}]),
        );
        assert_eq!(
            check_node_write(Some(&me), Some(&admin_set), &tainted),
            Err("is not allowed to modify taints".into())
        );
        // Not a node: not restricted here.
        let admin = UserInfo { name: "admin".into(), groups: vec!["system:masters".into()], ..Default::default() };
        assert_eq!(check_node_write(Some(&admin), Some(&admin_set), &tainted), Ok(()));
        assert_eq!(check_node_write(None, Some(&admin_set), &tainted), Ok(()));
    }

    #[test]
    fn namespaces_match_whole_domains() {
        assert!(in_namespace("a.kubernetes.io/x", "kubernetes.io"));
        assert!(!in_namespace("notkubernetes.io/x", "kubernetes.io"));
        assert!(!in_namespace("kubernetes.io", "kubernetes.io"));
    }
}
