use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::controllers::runtime::testing;

fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

async fn pod(registry: &Registry, name: &str, phase: &str, ready: bool) {
    let ri = must(registry.resource("", "Pod"));
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
                     "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
    must(registry.create(ri, Some("default"), pod, &WriteOptions::default()).await);
    let status =
        json!({"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]});
    must(
        registry
            .update_with(ri, Some("default"), name, Some("status"), &WriteOptions::default(), |cur| {
                let mut next = cur.clone();
                next["status"] = status.clone();
                Ok(next)
            })
            .await,
    );
}

async fn pdb(registry: &Registry, name: &str, extra_spec: Value, status: Value) {
    let ri = must(registry.resource("policy", "PodDisruptionBudget"));
    let mut spec = json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    let obj =
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name}, "spec": spec});
    must(registry.create(ri, Some("default"), obj, &WriteOptions::default()).await);
    must(
        registry
            .update_with(ri, Some("default"), name, Some("status"), &WriteOptions::default(), |cur| {
                let mut next = cur.clone();
                next["status"] = status.clone();
                next["status"]["observedGeneration"] = json!(1);
                Ok(next)
            })
            .await,
    );
}

async fn get(registry: &Registry, group: &str, kind: &str, name: &str) -> Option<Value> {
    let ri = must(registry.resource(group, kind));
    registry.get(ri, Some("default"), name).await.ok()
}

/// Gone, or being deleted.
async fn evicted(registry: &Registry, name: &str) -> bool {
    get(registry, "", "Pod", name).await.is_none_or(|p| object::deletion_timestamp(&p).is_some())
}

async fn run(registry: &Arc<Registry>, name: &str, opts: DeleteOptions) -> ApiResult<Evicted> {
    let ri = must(registry.resource("", "Pod"));
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}});
    evict(registry, ri, Some("default"), name, &eviction, opts).await
}

#[tokio::test]
async fn a_budget_is_spent_once_then_refuses_with_kubes_429() {
    let (_dir, registry) = testing::registry().await;
    pod(&registry, "a", "Running", true).await;
    pod(&registry, "b", "Running", true).await;
    pdb(&registry, "web", json!({}), json!({"disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1})).await;

    let done = must(run(&registry, "a", DeleteOptions::default()).await);
    assert_eq!((done.code, done.status["status"].as_str()), (201, Some("Success")));
    let gone = get(&registry, "", "Pod", "a").await.unwrap_or_default();
    assert!(gone["metadata"]["deletionTimestamp"].is_string(), "deleted gracefully: {gone}");
    let mark = gone["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "DisruptionTarget");
    let mark = mark.cloned().unwrap_or_default();
    assert_eq!(
        (mark["status"].as_str(), mark["reason"].as_str()),
        (Some("True"), Some("EvictionByEvictionAPI")),
        "{gone}"
    );
    let budget = get(&registry, "policy", "PodDisruptionBudget", "web").await.unwrap_or_default();
    assert_eq!(budget["status"]["disruptionsAllowed"], 0);
    assert!(budget["status"]["disruptedPods"]["a"].is_string(), "{budget}");
    assert_eq!(budget["status"]["conditions"][0]["reason"], "InsufficientPods");

    let refused = run(&registry, "b", DeleteOptions::default()).await.err();
    let status = refused.map(|e| e.status()).unwrap_or_default();
    assert_eq!(status["code"], 429);
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["message"], VIOLATES_BUDGET);
    assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "The disruption budget web needs 1 healthy pods and has 2 currently"
    );
    assert!(!evicted(&registry, "b").await, "the pod stays");
}

#[tokio::test]
async fn pods_without_a_budget_pending_or_unhealthy_go_without_spending_it() {
    let (_dir, registry) = testing::registry().await;
    pod(&registry, "free", "Running", true).await;
    must(run(&registry, "free", DeleteOptions::default()).await);
    assert!(evicted(&registry, "free").await, "no PDB: deleted");

    pdb(&registry, "web", json!({"unhealthyPodEvictionPolicy": "AlwaysAllow"}), json!({"disruptionsAllowed": 0})).await;
    pod(&registry, "pending", "Pending", false).await;
    must(run(&registry, "pending", DeleteOptions::default()).await);
    assert!(evicted(&registry, "pending").await);
    pod(&registry, "sick", "Running", false).await;
    must(run(&registry, "sick", DeleteOptions::default()).await);
    assert!(evicted(&registry, "sick").await, "unready with AlwaysAllow");
    let budget = get(&registry, "policy", "PodDisruptionBudget", "web").await.unwrap_or_default();
    assert!(budget["status"].get("disruptedPods").is_none(), "budget untouched: {budget}");

    pod(&registry, "well", "Running", true).await;
    let status = run(&registry, "well", DeleteOptions::default()).await.err().map(|e| e.status()).unwrap_or_default();
    assert_eq!(status["code"], 429);
}

#[tokio::test]
async fn two_budgets_a_stale_budget_and_dry_run() {
    let (_dir, registry) = testing::registry().await;
    pod(&registry, "a", "Running", true).await;
    pdb(&registry, "one", json!({}), json!({"disruptionsAllowed": 1})).await;

    // Dry run: checked, nothing written, nothing deleted.
    let dry = DeleteOptions { dry_run: true, ..Default::default() };
    must(run(&registry, "a", dry).await);
    assert!(!evicted(&registry, "a").await);
    let budget = get(&registry, "policy", "PodDisruptionBudget", "one").await.unwrap_or_default();
    assert_eq!(budget["status"]["disruptionsAllowed"], 1);
    let untouched = get(&registry, "", "Pod", "a").await.unwrap_or_default();
    assert!(!untouched["status"]["conditions"].to_string().contains("DisruptionTarget"), "{untouched}");

    // A spec change the controller has not seen yet.
    let ri = must(registry.resource("policy", "PodDisruptionBudget"));
    must(
        registry
            .update_with(ri, Some("default"), "one", None, &WriteOptions::default(), |cur| {
                let mut next = cur.clone();
                next["spec"]["minAvailable"] = json!(0);
                Ok(next)
            })
            .await,
    );
    let status = run(&registry, "a", DeleteOptions::default()).await.err().map(|e| e.status()).unwrap_or_default();
    assert_eq!(status["code"], 429);
    assert!(status["message"].as_str().is_some_and(|m| m.contains("is still being processed")), "{status}");

    pdb(&registry, "two", json!({}), json!({"disruptionsAllowed": 1})).await;
    let answer = must(run(&registry, "a", DeleteOptions::default()).await);
    assert_eq!(answer.code, 500);
    assert_eq!(answer.status["message"], MULTIPLE_BUDGETS);
    assert!(!evicted(&registry, "a").await);

    let wrong = json!({"metadata": {"name": "other"}});
    let pods = must(registry.resource("", "Pod"));
    let err = evict(&registry, pods, Some("default"), "a", &wrong, DeleteOptions::default()).await.err();
    assert_eq!(err.map(|e| e.code().as_u16()), Some(400));
}
