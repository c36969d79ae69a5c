//! The `kubernetes` Service in `default` and its Endpoints and EndpointSlice, pointing at this
//! API server: created at start and put back right when they drifted (what kube-apiserver's
//! bootstrap controller and endpoint reconciler do).

use serde_json::{json, Value};

use crate::api::error::{ApiError, ApiResult};
use crate::api::registry::{Registry, WriteOptions};
use crate::api::resources::ResourceInfo;

const NAME: &str = "kubernetes";
const NS: &str = "default";

fn opts() -> WriteOptions {
    WriteOptions { field_manager: Some("kube-apiserver".into()), ..Default::default() }
}

/// Creates `desired`, or when it exists, sets the `fields` (dotted paths) to the desired values.
async fn ensure(registry: &Registry, ri: &ResourceInfo, desired: Value, fields: &[&str]) -> ApiResult<()> {
    // Looked up first: creating a Service that exists would fail on its taken ClusterIP.
    match registry.get(ri, Some(NS), NAME).await {
        Err(ApiError::NotFound { .. }) => match registry.create(ri, Some(NS), desired.clone(), &opts()).await {
            Err(ApiError::AlreadyExists { .. }) => {}
            other => return other.map(|_| ()),
        },
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    registry
        .update_with(ri, Some(NS), NAME, None, &opts(), |current| {
            let mut next = current.clone();
            for field in fields {
                let pointer = format!("/{}", field.replace('.', "/"));
                if let (Some(want), Some(slot)) = (desired.pointer(&pointer), next.pointer_mut(&pointer)) {
                    *slot = want.clone();
                } else if let (Some(want), Some(map)) = (desired.pointer(&pointer), next.as_object_mut()) {
                    // A top-level field the stored object lacks.
                    map.insert((*field).to_string(), want.clone());
                }
            }
            Ok(next)
        })
        .await?;
    Ok(())
}

/// Makes the `kubernetes` Service (first usable ClusterIP, port 443 named `https` to `port`)
/// and its endpoints at `ip:port`.
pub async fn ensure_kubernetes_service(registry: &Registry, ip: std::net::IpAddr, port: u16) -> ApiResult<()> {
    let cluster_ip = registry.services.kubernetes_ip().to_string();
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NS, "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}});
    ensure(registry, registry.resource("", "Service")?, service, &["spec.ports"]).await?;

    let endpoints = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NS, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]});
    ensure(registry, registry.resource("", "Endpoints")?, endpoints, &["subsets"]).await?;

    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NS, "labels": {"kubernetes.io/service-name": NAME}},
        "addressType": family,
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
    ensure(
        registry,
        registry.resource("discovery.k8s.io", "EndpointSlice")?,
        slice,
        &["endpoints", "ports", "addressType"],
    )
    .await?;
    tracing::info!(%cluster_ip, endpoint = %format!("{ip}:{port}"), "kubernetes Service ensured");
    Ok(())
}
