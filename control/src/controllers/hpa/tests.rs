//! The controller on a real registry with a scripted metrics source: it scales a Deployment up
//! under load, back down when idle, and reports a source that cannot answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::decide::{ContainerUsage, PodUsage};
use super::*;
use crate::api::registry::WriteOptions;
use crate::controllers::runtime::{testing, Supervisor};

fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Every pod of the namespace uses `millicores` (negative: the source fails).
struct Scripted(AtomicI64);

#[async_trait::async_trait]
impl MetricsSource for Scripted {
    async fn pod_usage(&self, _namespace: &str) -> Result<BTreeMap<String, PodUsage>, String> {
        let cpu = self.0.load(Ordering::SeqCst);
        if cpu < 0 {
            return Err("kubelets unreachable".into());
        }
        let now = Timestamp::now();
        let pods = ["web-1", "web-2"].map(|name| {
            let u = PodUsage {
                containers: vec![ContainerUsage { name: "c".into(), cpu: i128::from(cpu), memory: 1 << 20 }],
                timestamp: now,
                window: SignedDuration::from_secs(1),
            };
            (name.to_string(), u)
        });
        Ok(pods.into_iter().collect())
    }
}

async fn create(registry: &Registry, group: &str, kind: &str, obj: Value) {
    let ri = must(registry.resource(group, kind));
    must(registry.create(ri, Some("default"), obj, &WriteOptions::default()).await);
}

async fn running_pod(registry: &Registry, name: &str) {
    create(
        registry,
        "",
        "Pod",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
               "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "50m"}}}]}}),
    )
    .await;
    let ri = must(registry.resource("", "Pod"));
    let long_ago = (Timestamp::now() - SignedDuration::from_secs(900)).to_string();
    let status = json!({"phase": "Running", "startTime": long_ago,
                        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": long_ago}]});
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

async fn replicas(registry: &Registry) -> i64 {
    let ri = must(registry.resource("apps", "Deployment"));
    let d = must(registry.get(ri, Some("default"), "web").await);
    d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(-1)
}

async fn hpa_status(registry: &Registry) -> Value {
    let ri = must(registry.resource("autoscaling", "HorizontalPodAutoscaler"));
    must(registry.get(ri, Some("default"), "web").await)["status"].clone()
}

async fn event_reasons(registry: &Registry) -> Vec<String> {
    let ri = must(registry.resource("", "Event"));
    let listed = must(registry.list(ri, &Default::default()).await);
    listed.items.iter().filter_map(|e| e["reason"].as_str().map(String::from)).collect()
}

async fn until(what: &str, mut check: impl FnMut() -> futures::future::BoxFuture<'static, bool>) {
    for _ in 0..250 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn scales_a_deployment_up_under_load_and_down_when_idle() {
    let (_dir, registry) = testing::registry().await;
    let supervisor = Supervisor::new();
    let informers = Informers::new(Arc::clone(&registry), Arc::clone(&supervisor));
    let source = Arc::new(Scripted(AtomicI64::new(-1)));
    let settings = Settings { sync_period: Duration::from_millis(100), ..Settings::default() };
    start(&informers, Config { settings, metrics: Some(source.clone()) });
    let labels = json!({"app": "web"});
    create(
        &registry,
        "apps",
        "Deployment",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                        "template": {"metadata": {"labels": labels},
                                     "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
    )
    .await;
    running_pod(&registry, "web-1").await;
    running_pod(&registry, "web-2").await;
    create(
        &registry,
        "autoscaling",
        "HorizontalPodAutoscaler",
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                        "minReplicas": 1, "maxReplicas": 4,
                        "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                     "target": {"type": "Utilization", "averageUtilization": 50}}}],
                        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}),
    )
    .await;

    // No metrics: the condition and the event say so; nothing is scaled.
    let r = Arc::clone(&registry);
    until("FailedGetResourceMetric", || {
        let r = Arc::clone(&r);
        Box::pin(async move {
            let s = hpa_status(&r).await;
            s["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| c["type"] == "ScalingActive" && c["reason"] == "FailedGetResourceMetric")
            })
        })
    })
    .await;
    assert_eq!(replicas(&registry).await, 2);
    let r = Arc::clone(&registry);
    until("the FailedGetResourceMetric event", || {
        let r = Arc::clone(&r);
        Box::pin(async move { event_reasons(&r).await.contains(&"FailedGetResourceMetric".to_string()) })
    })
    .await;

    // 80m of 50m requested: 160% against 50% -> 7 wanted, 4 allowed.
    source.0.store(80, Ordering::SeqCst);
    let r = Arc::clone(&registry);
    until("scaled up to the maximum", || {
        let r = Arc::clone(&r);
        Box::pin(async move { replicas(&r).await == 4 })
    })
    .await;
    let r = Arc::clone(&registry);
    until("status of the scale-up", || {
        let r = Arc::clone(&r);
        Box::pin(async move {
            let s = hpa_status(&r).await;
            s["desiredReplicas"] == 4 && s["currentMetrics"][0]["resource"]["current"]["averageUtilization"] == 160
        })
    })
    .await;
    assert!(hpa_status(&registry).await["lastScaleTime"].is_string());
    let r = Arc::clone(&registry);
    until("the SuccessfulRescale event", || {
        let r = Arc::clone(&r);
        Box::pin(async move { event_reasons(&r).await.contains(&"SuccessfulRescale".to_string()) })
    })
    .await;

    // Idle: the same two pods at 1m -> 2% -> 1 pod (no stabilization window).
    source.0.store(1, Ordering::SeqCst);
    let r = Arc::clone(&registry);
    until("scaled down to the minimum", || {
        let r = Arc::clone(&r);
        Box::pin(async move { replicas(&r).await == 1 })
    })
    .await;
    assert!(supervisor.readyz().1.contains("[+]controller-horizontal-pod-autoscaler ok"));
}
