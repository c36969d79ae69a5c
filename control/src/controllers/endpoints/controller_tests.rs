//! The endpoints controller on a real registry: how often it writes a Service's Endpoints.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::controllers::runtime::{testing, Change, Supervisor};

fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Creates pod `name` labelled `app: web`, then gives it `ip` and a Ready condition.
async fn ready_pod(registry: &Registry, name: &str, ip: &str) {
    let ri = must(registry.resource("", "Pod"));
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
    must(registry.create(ri, Some("default"), pod, &WriteOptions::default()).await);
    must(
        registry
            .update_with(ri, Some("default"), name, Some("status"), &WriteOptions::default(), |cur| {
                let mut next = cur.clone();
                next["status"] = json!({"phase": "Running", "podIP": ip,
                    "conditions": [{"type": "Ready", "status": "True"}]});
                Ok(next)
            })
            .await,
    );
}

/// The ready addresses of an Endpoints object.
fn addresses(ep: &Value) -> usize {
    ep.get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("addresses").and_then(Value::as_array))
        .map(Vec::len)
        .sum()
}

/// The number of ready addresses of the next write of `key` among `writes`.
async fn next_write(writes: &mut tokio::sync::broadcast::Receiver<Change>, key: &ObjectKey) -> usize {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), writes.recv()).await {
            Ok(Ok(Change::Applied { new, .. })) if ObjectKey::of(&new) == *key => return addresses(&new),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("endpoints changes: {e}"),
            Err(_) => panic!("no write of the Endpoints in 30 s"),
        }
    }
}

/// The pods that turn Ready within one period after the Service's first write are written
/// together in one more round, not once each; and the first write is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_within_a_period_are_written_together_after_the_first_at_once() {
    // Long enough that the three pods below (six writes) are made well within it even on a
    // loaded machine, short enough for a unit test.
    const PERIOD: Duration = Duration::from_secs(3);
    let (_dir, registry) = testing::registry().await;
    let supervisor = Supervisor::new();
    let informers = Informers::new(Arc::clone(&registry), Arc::clone(&supervisor));
    let endpoints = informers.get("", "Endpoints");
    let mut writes = endpoints.subscribe();
    start(&informers, PERIOD);

    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}});
    must(registry.create(must(registry.resource("", "Service")), Some("default"), svc, &WriteOptions::default()).await);
    let key = ObjectKey::namespaced("default", "web");
    let mut seen = Vec::new();
    // The Service's first round: its (empty) Endpoints, at once.
    seen.push(next_write(&mut writes, &key).await);
    for (i, ip) in ["10.42.0.5", "10.42.0.6", "10.42.0.7"].iter().enumerate() {
        ready_pod(&registry, &format!("p{i}"), ip).await;
    }
    // The rest of the period's changes come as one more write.
    seen.push(next_write(&mut writes, &key).await);
    assert_eq!(seen, vec![0, 3], "the pods were written one by one, not together");
    let ep = must(registry.get(must(registry.resource("", "Endpoints")), Some("default"), "web").await);
    assert_eq!(addresses(&ep), 3, "{ep}");
}
