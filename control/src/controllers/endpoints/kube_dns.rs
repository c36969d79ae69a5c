//! The `kube-dns` Service in `kube-system`: the cluster DNS address pods are given (the 10th
//! address of the service CIDR, as kubeadm and k3s place it). It has no selector and no endpoints:
//! every node's proxy sends its port 53 to that node's own DNS server (node/src/dns/).

use serde_json::json;

use crate::api::error::{ApiError, ApiResult};
use crate::api::registry::{Registry, WriteOptions};

/// The Service's namespace and name.
pub const NS: &str = "kube-system";
/// The Service's name.
pub const NAME: &str = "kube-dns";

/// The 10th address of `cidr` (10.43.0.10 for 10.43.0.0/16), if the CIDR has one.
pub fn cluster_dns_ip(cidr: ipnet::Ipv4Net) -> Option<std::net::Ipv4Addr> {
    let ip = std::net::Ipv4Addr::from(u32::from(cidr.network()).checked_add(10)?);
    (cidr.contains(&ip) && ip != cidr.broadcast()).then_some(ip)
}

/// Creates the Service unless it exists (a user's edits are kept). A taken address is logged, not
/// fatal: pods then reach no cluster DNS until it is freed.
pub async fn ensure_kube_dns_service(registry: &Registry) -> ApiResult<()> {
    let Some(ip) = cluster_dns_ip(registry.services.network().cidr) else {
        tracing::warn!("the service CIDR has no 10th address: no kube-dns Service");
        return Ok(());
    };
    let ri = registry.resource("", "Service")?;
    match registry.get(ri, Some(NS), NAME).await {
        Ok(_) => return Ok(()),
        Err(ApiError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NS,
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "skiff-dns"}},
        "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}});
    let opts = WriteOptions { field_manager: Some("skiff".into()), ..Default::default() };
    match registry.create(ri, Some(NS), service, &opts).await {
        Ok(_) => tracing::info!(cluster_ip = %ip, "kube-dns Service created"),
        Err(ApiError::AlreadyExists { .. }) => {}
        Err(e) => tracing::warn!(cluster_ip = %ip, error = %e, "cannot create the kube-dns Service"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenth_address() {
        let net = |s: &str| s.parse::<ipnet::Ipv4Net>().expect("cidr");
        assert_eq!(cluster_dns_ip(net("10.43.0.0/16")), Some("10.43.0.10".parse().expect("ip")));
        assert_eq!(cluster_dns_ip(net("10.96.0.0/12")), Some("10.96.0.10".parse().expect("ip")));
        assert_eq!(cluster_dns_ip(net("10.43.0.0/29")), None);
    }
}
