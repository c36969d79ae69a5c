//! The service environment variables the kubelet gives every container (Docker links style):
//! `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`, `<NAME>_PORT_<port>_<PROTO>...` for each Service with
//! a ClusterIP in the pod's namespace (when `enableServiceLinks`), and always for the `kubernetes`
//! Service of `default`, which in-cluster API clients read (`KUBERNETES_SERVICE_HOST`).

use k8s_openapi::api::core::v1::Service;

/// The variables of `services`, in name order; Services without a ClusterIP (headless,
/// ExternalName) give none.
pub fn variables(services: &[Service]) -> Vec<(String, String)> {
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    sorted.dedup_by(|a, b| a.metadata.name == b.metadata.name && a.metadata.namespace == b.metadata.namespace);
    let mut out = Vec::new();
    for service in sorted {
        let Some(spec) = &service.spec else { continue };
        let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") else { continue };
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let name = env_name(service.metadata.name.as_deref().unwrap_or_default());
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for port in ports {
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{name}_SERVICE_PORT_{}", env_name(port_name)), port.port.to_string()));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let url = |p: &k8s_openapi::api::core::v1::ServicePort| {
            format!("{}://{}:{}", proto(p).to_ascii_lowercase(), host(ip), p.port)
        };
        out.push((format!("{name}_PORT"), url(first)));
        for port in ports {
            let prefix = format!("{name}_PORT_{}_{}", port.port, proto(port).to_ascii_uppercase());
            out.push((prefix.clone(), url(port)));
            out.push((format!("{prefix}_PROTO"), proto(port).to_ascii_lowercase()));
            out.push((format!("{prefix}_PORT"), port.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    out
}

fn env_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

fn host(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": ports}}))
        .expect("service")
    }

    #[test]
    fn kubernetes_service_gives_the_in_cluster_client_variables() {
        let vars = variables(&[service("kubernetes", "10.43.0.1", json!([{"name": "https", "port": 443}]))]);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.43.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP"), Some("tcp://10.43.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_PROTO"), Some("tcp"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_ADDR"), Some("10.43.0.1"));
    }

    #[test]
    fn names_are_upper_case_headless_is_skipped_and_duplicates_count_once() {
        let vars = variables(&[
            service("my-web", "10.43.0.9", json!([{"port": 80, "protocol": "UDP"}])),
            service("headless", "None", json!([{"port": 80}])),
            service("my-web", "10.43.0.9", json!([{"port": 80, "protocol": "UDP"}])),
        ]);
        assert!(vars.iter().any(|(k, v)| k == "MY_WEB_PORT_80_UDP" && v == "udp://10.43.0.9:80"));
        assert!(!vars.iter().any(|(k, _)| k.starts_with("HEADLESS")));
        assert_eq!(vars.iter().filter(|(k, _)| k == "MY_WEB_SERVICE_HOST").count(), 1);
    }
}
