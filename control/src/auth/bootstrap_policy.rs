//! Kubernetes' default ClusterRoles and ClusterRoleBindings (the subset skiff serves), created
//! at start when absent: `cluster-admin`, `admin`/`edit`/`view` (aggregated from the
//! `system:aggregate-to-*` roles), `system:basic-user`, `system:discovery`,
//! `system:public-info-viewer`, and their bindings.

use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::registry::{Registry, WriteOptions};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const AGGREGATE: &str = "rbac.authorization.k8s.io/aggregate-to-";

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn url_rule(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn meta(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for (k, v) in labels {
        l.insert((*k).into(), json!(v));
    }
    json!({"name": name, "labels": l, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
}

fn cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: &[(&str, &str)], to: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(name, labels),
           "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {format!("{AGGREGATE}{to}"): "true"}}]}, "rules": []})
}

fn binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> =
        groups.iter().map(|g| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g})).collect();
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(name, &[]),
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}, "subjects": subjects})
}

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let t = "true";
    vec![
        cluster_role("cluster-admin", &[], vec![rule(&["*"], &["*"], &["*"]), url_rule(&["*"], &["*"])]),
        cluster_role(
            "system:discovery",
            &[],
            vec![url_rule(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![url_rule(&["get"], &["/cacerts", "/healthz", "/livez", "/readyz", "/version", "/version/"])],
        ),
        // What a joining node's bootstrap token may do: ask for its client certificate.
        cluster_role(
            "system:node-bootstrapper",
            &[],
            vec![rule(&["create", "get", "list", "watch"], &["certificates.k8s.io"], &["certificatesigningrequests"])],
        ),
        // What a node agent (`system:node:<name>` in `system:nodes`) does beyond what the Node
        // authorizer grants: its own pods' Secrets, ConfigMaps, PersistentVolumeClaims (and their
        // PersistentVolumes) and service account tokens come from the Node authorizer only, and NodeRestriction narrows
        // the writes below to its own Node, Lease and pods.
        cluster_role(
            "system:node",
            &[],
            vec![
                rule(&["create", "get", "list", "watch", "patch", "update", "delete"], &[""], &["nodes"]),
                rule(&["patch", "update"], &[""], &["nodes/status"]),
                rule(&["get", "list", "watch", "delete"], &[""], &["pods"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(&["create"], &[""], &["pods/eviction"]),
                rule(READ, &[""], &["services", "endpoints", "namespaces"]),
                rule(&["create", "patch", "update"], &["", "events.k8s.io"], &["events"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
                // The node's ingress proxy (its TLS Secrets stay behind the Node authorizer).
                rule(READ, &["networking.k8s.io"], &["ingresses", "ingressclasses"]),
                // The node's NetworkPolicy enforcement (it also watches pods and namespaces).
                rule(READ, &["networking.k8s.io"], &["networkpolicies"]),
                rule(
                    &["create", "get", "list", "watch", "update", "patch", "delete"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                rule(
                    &["create", "get", "list", "watch", "delete"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
                // The kubelet endpoint's webhook authentication and authorization of its callers.
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews", "localsubjectaccessreviews"]),
            ],
        ),
        // Everything on a kubelet's endpoint (Kubernetes' role; bind it to give a user the kubelet API).
        cluster_role(
            "system:kubelet-api-admin",
            &[],
            vec![
                rule(&["get", "list", "watch", "proxy"], &[""], &["nodes"]),
                rule(&["*"], &[""], &["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"]),
            ],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(&["create"], &["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
            ],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            &[],
            vec![url_rule(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
            )],
        ),
        aggregated("admin", &[], "admin"),
        aggregated("edit", &[("rbac.authorization.k8s.io/aggregate-to-admin", t)], "edit"),
        aggregated("view", &[("rbac.authorization.k8s.io/aggregate-to-edit", t)], "view"),
        cluster_role(
            "system:aggregate-to-admin",
            &[("rbac.authorization.k8s.io/aggregate-to-admin", t)],
            vec![
                rule(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews"]),
                rule(
                    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings", "roles"],
                ),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[("rbac.authorization.k8s.io/aggregate-to-edit", t)],
            vec![
                rule(WRITE, &[""], &["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
                rule(&["create"], &[""], &["pods/eviction"]),
                rule(&["patch", "update"], &[""], &["pods/ephemeralcontainers"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(WRITE, &["networking.k8s.io"], &["ingresses", "networkpolicies"]),
                rule(
                    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                rule(READ, &[""], &["secrets"]),
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[("rbac.authorization.k8s.io/aggregate-to-view", t)],
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                rule(
                    READ,
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                rule(READ, &[""], &["namespaces"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                rule(READ, &["autoscaling"], &["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
                rule(READ, &["batch"], &["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
                rule(READ, &["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
                rule(READ, &["networking.k8s.io"], &["ingresses", "ingresses/status", "networkpolicies"]),
            ],
        ),
    ]
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding("cluster-admin", "cluster-admin", &["system:masters"]),
        binding("system:discovery", "system:discovery", &["system:authenticated"]),
        binding("system:basic-user", "system:basic-user", &["system:authenticated"]),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &["system:serviceaccounts"],
        ),
        binding("system:node-bootstrapper", "system:node-bootstrapper", &["system:bootstrappers"]),
        binding("system:node", "system:node", &["system:nodes"]),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
    ]
}

/// The fields of a default policy object that [`ensure`] keeps as this version defines them.
/// An aggregated role's `rules` belong to the aggregation, so only its `aggregationRule` counts.
fn managed_fields(obj: &Value) -> &'static [&'static str] {
    if obj.get("aggregationRule").is_some() {
        &["aggregationRule"]
    } else if obj.get("roleRef").is_some() {
        &["roleRef", "subjects"]
    } else {
        &["rules"]
    }
}

/// Creates the default policy objects that do not exist yet and brings back to this version's
/// definition those that still carry `rbac.authorization.kubernetes.io/autoupdate: "true"` (an
/// upgrade may narrow a default role; set the annotation to `false` to keep a changed one).
pub async fn ensure(registry: &Registry) -> Result<(), ApiError> {
    let roles = registry.resource("rbac.authorization.k8s.io", "ClusterRole")?;
    let bindings = registry.resource("rbac.authorization.k8s.io", "ClusterRoleBinding")?;
    let items = cluster_roles()
        .into_iter()
        .map(|r| (roles, r))
        .chain(cluster_role_bindings().into_iter().map(|b| (bindings, b)));
    for (ri, obj) in items {
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        match registry.create(ri, None, obj.clone(), &WriteOptions::default()).await {
            Ok(_) => {}
            Err(ApiError::AlreadyExists { .. }) => {
                let opts = WriteOptions::default();
                let update = registry.update_with(ri, None, &name, None, &opts, |current| {
                    let autoupdate = current
                        .pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate")
                        .and_then(Value::as_str);
                    let mut next = current.clone();
                    if autoupdate == Some("true") {
                        for &field in managed_fields(&obj) {
                            match obj.get(field) {
                                Some(v) => next[field] = v.clone(),
                                None => {
                                    if let Some(m) = next.as_object_mut() {
                                        m.remove(field);
                                    }
                                }
                            }
                        }
                    }
                    Ok(next)
                });
                update.await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Keeps the `rules` of aggregated ClusterRoles equal to the union of the ClusterRoles their
/// selectors pick, as kube-controller-manager's clusterrole-aggregation controller does.
/// Driven by the watch cache: a pass runs at start and after every ClusterRole change (its own
/// writes cause one more pass, which finds nothing to change); nothing polls.
pub async fn aggregate(registry: std::sync::Arc<Registry>) {
    let prefix = match registry.resource("rbac.authorization.k8s.io", "ClusterRole") {
        Ok(ri) => ri.prefix(),
        Err(e) => return tracing::error!(error = %e, "clusterrole aggregation has no ClusterRole resource"),
    };
    loop {
        // Subscribed before the pass, so a change made during it is not missed.
        let (_, mut changes) = registry.cache.subscribe_now();
        if let Err(e) = aggregate_once(&registry).await {
            tracing::warn!(error = %e, "clusterrole aggregation");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match changes.recv().await {
                Ok(event) if event.key.starts_with(&prefix) => break,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

async fn aggregate_once(registry: &Registry) -> Result<(), ApiError> {
    let ri = registry.resource("rbac.authorization.k8s.io", "ClusterRole")?;
    let listed = registry.list(ri, &crate::api::registry::ListQuery::default()).await?;
    let by_name: std::collections::HashMap<String, Value> =
        listed.items.iter().map(|o| (crate::api::object::name(o).to_string(), o.clone())).collect();
    let resolved = super::rbac::resolve_cluster_roles(&by_name);
    for (name, obj) in &by_name {
        if obj.get("aggregationRule").is_none_or(Value::is_null) {
            continue;
        }
        let Some(rules) = resolved.get(name) else { continue };
        let wanted: Vec<Value> = rules.iter().map(super::rbac::Rule::to_json).collect();
        let current: Vec<super::rbac::Rule> = obj
            .get("rules")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(super::rbac::Rule::from_json).collect())
            .unwrap_or_default();
        if current == *rules {
            continue;
        }
        let result = registry
            .update_with(ri, None, name, None, &WriteOptions::default(), |cur| {
                let mut next = cur.clone();
                next["rules"] = json!(wanted);
                Ok(next)
            })
            .await;
        match result {
            Ok(_) | Err(ApiError::Conflict { .. }) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
