use serde_json::json;

use super::*;
use crate::api::registry::WriteOptions;
use crate::controllers::runtime::{testing, Supervisor};

fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

async fn create(registry: &Registry, group: &str, kind: &str, obj: Value) -> Value {
    let ri = must(registry.resource(group, kind));
    must(registry.create(ri, Some("default"), obj, &WriteOptions::default()).await).object
}

async fn set_ready(registry: &Registry, name: &str, ready: bool) {
    let ri = must(registry.resource("", "Pod"));
    let status = if ready { "True" } else { "False" };
    must(
        registry
            .update_with(ri, Some("default"), name, Some("status"), &WriteOptions::default(), |cur| {
                let mut next = cur.clone();
                next["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": status}]});
                Ok(next)
            })
            .await,
    );
}

/// A registry with the disruption controller running on it.
async fn started() -> (tempfile::TempDir, Arc<Registry>, Arc<Supervisor>, Arc<Informers>) {
    let (dir, registry) = testing::registry().await;
    let supervisor = Supervisor::new();
    let informers = Informers::new(Arc::clone(&registry), Arc::clone(&supervisor));
    start(&informers);
    (dir, registry, supervisor, informers)
}

/// A Ready pod labelled `app` whose controller is `owner` (of `api_version`/`kind`).
async fn ready_pod(registry: &Registry, name: &str, app: &str, (api_version, kind): (&str, &str), owner: &Value) {
    create(
        registry,
        "",
        "Pod",
        json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app},
                     "ownerReferences": [{"apiVersion": api_version, "kind": kind, "name": owner["metadata"]["name"],
                                          "uid": owner["metadata"]["uid"], "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .await;
    set_ready(registry, name, true).await;
}

/// Creates budget `name` selecting `app` with `spec` (minAvailable or maxUnavailable); returns a
/// reader of its status fields from the informer's cache.
async fn budget(
    registry: &Registry,
    informers: &Informers,
    name: &str,
    app: &str,
    spec: Value,
) -> impl Fn(&str) -> Option<Value> {
    let mut full = spec;
    full["selector"] = json!({"matchLabels": {"app": app}});
    create(
        registry,
        "policy",
        "PodDisruptionBudget",
        json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name}, "spec": full}),
    )
    .await;
    let pdbs = informers.get("policy", "PodDisruptionBudget");
    let key = ObjectKey::namespaced("default", name);
    move |pointer: &str| pdbs.get(&key).and_then(|p| p.pointer(&format!("/status/{pointer}")).cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_follows_its_pods_and_the_deployment_scale() {
    let (_dir, registry, supervisor, informers) = started().await;
    let dep = create(&registry, "apps", "Deployment", json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
    .await;
    let rs = create(&registry, "apps", "ReplicaSet", json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                      "uid": dep["metadata"]["uid"], "controller": true}]},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
    .await;
    for name in ["a", "b", "c"] {
        ready_pod(&registry, name, "web", ("apps/v1", "ReplicaSet"), &rs).await;
    }
    let status = budget(&registry, &informers, "web", "web", json!({"maxUnavailable": "34%"})).await;
    testing::eventually("a computed status", || status("disruptionsAllowed") == Some(json!(2))).await;
    assert_eq!(status("expectedPods"), Some(json!(3)));
    assert_eq!(status("desiredHealthy"), Some(json!(1)), "3 - ceil(34% of 3)");
    assert_eq!(status("currentHealthy"), Some(json!(3)));
    assert_eq!(status("observedGeneration"), Some(json!(1)));

    // A pod turning unready is seen through the pod watch.
    set_ready(&registry, "a", false).await;
    testing::eventually("one less healthy", || status("currentHealthy") == Some(json!(2))).await;
    assert_eq!(status("disruptionsAllowed"), Some(json!(1)));

    // The Deployment's scale (not the ReplicaSet's) is the expected count.
    let ri = must(registry.resource("apps", "Deployment"));
    must(
        registry
            .update_with(ri, Some("default"), "web", None, &WriteOptions::default(), |cur| {
                let mut next = cur.clone();
                next["spec"]["replicas"] = json!(6);
                Ok(next)
            })
            .await,
    );
    testing::eventually("the new scale", || status("expectedPods") == Some(json!(6))).await;
    assert_eq!(status("desiredHealthy"), Some(json!(3)), "6 - ceil(34% of 6)");
    assert_eq!(status("disruptionsAllowed"), Some(json!(0)));
    assert_eq!(status("conditions/0").unwrap_or_default()["reason"], "InsufficientPods");
    assert!(supervisor.readyz().1.contains("[+]controller-disruption ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_a_known_controller_fails_safe() {
    let (_dir, registry, _supervisor, informers) = started().await;
    let widget = json!({"metadata": {"name": "w", "uid": "u"}});
    ready_pod(&registry, "orphan", "x", ("example.com/v1", "Widget"), &widget).await;
    let status = budget(&registry, &informers, "x", "x", json!({"maxUnavailable": 1})).await;
    let cond = || status("conditions/0").unwrap_or_default();
    testing::eventually("the SyncFailed condition", || cond()["reason"] == "SyncFailed").await;
    assert_eq!(cond()["message"], "found no controllers for pod \"orphan\"");
    assert_eq!(status("disruptionsAllowed"), Some(json!(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_controllers_and_stateful_sets_count_by_their_scale() {
    let (_dir, registry, _supervisor, informers) = started().await;
    let template =
        json!({"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let rc = create(
        &registry,
        "",
        "ReplicationController",
        json!({
        "apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"},
        "spec": {"replicas": 4, "selector": {"app": "db"}, "template": template}}),
    )
    .await;
    let sts = create(&registry, "apps", "StatefulSet", json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "sts"},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": template}}))
    .await;
    for (name, kind, owner) in
        [("r0", "ReplicationController", &rc), ("r1", "ReplicationController", &rc), ("s0", "StatefulSet", &sts)]
    {
        let api_version = if kind == "StatefulSet" { "apps/v1" } else { "v1" };
        ready_pod(&registry, name, "db", (api_version, kind), owner).await;
    }
    let status = budget(&registry, &informers, "db", "db", json!({"minAvailable": "50%"})).await;
    testing::eventually("4 + 2 expected", || status("expectedPods") == Some(json!(6))).await;
    assert_eq!(status("desiredHealthy"), Some(json!(3)));
    assert_eq!(status("currentHealthy"), Some(json!(3)));
    assert_eq!(status("disruptionsAllowed"), Some(json!(0)));
}
