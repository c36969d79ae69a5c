//! A `clientConfig.service` reference turned into an address: the Service's port (default 443)
//! found in its EndpointSlices, a ready endpoint's address and the matching target port. The
//! API server resolves this itself rather than going through a ClusterIP, since it may run on a
//! host without a node's service proxy; TLS still verifies the name `<service>.<namespace>.svc`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde_json::Value;

use super::call::{CallError, Target};
use crate::store::{ListOptions, Store};

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The port and address to reach from a Service and its slices; pure, for tests.
pub fn pick(service: &Value, slices: &[Value], port: u16) -> Result<SocketAddr, String> {
    let ports = service.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    let svc_port = ports
        .iter()
        .find(|p| p.get("port").and_then(Value::as_u64) == Some(u64::from(port)))
        .ok_or_else(|| format!("service port {port} not found"))?;
    let port_name = svc_port.get("name").and_then(Value::as_str).unwrap_or("");
    let numeric_target = match svc_port.get("targetPort") {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        None => Some(port),
        _ => None,
    };
    for slice in slices {
        let slice_port = slice
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
            .and_then(|p| p.get("port").and_then(Value::as_u64))
            .and_then(|p| u16::try_from(p).ok())
            .or(numeric_target);
        let Some(target_port) = slice_port else { continue };
        let ready = slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|e| e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false));
        let address = ready
            .and_then(|e| e.get("addresses"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .and_then(|a| a.parse::<IpAddr>().ok());
        if let Some(ip) = address {
            return Ok(SocketAddr::new(ip, target_port));
        }
    }
    Err("no ready endpoint".into())
}

/// The call target of a service reference.
pub async fn service(
    store: &Arc<dyn Store>,
    namespace: &str,
    name: &str,
    path: &str,
    port: u16,
) -> Result<Target, CallError> {
    let not_found = || CallError::Call(format!("service \"{name}\" not found"));
    let kv = store
        .get(&format!("/registry/core/services/{namespace}/{name}"))
        .await
        .map_err(|e| CallError::Call(e.to_string()))?
        .ok_or_else(not_found)?;
    let svc: Value = serde_json::from_slice(&kv.value).map_err(|_| not_found())?;
    let listed = store
        .list(&format!("/registry/discovery.k8s.io/endpointslices/{namespace}/"), ListOptions::default())
        .await
        .map_err(|e| CallError::Call(e.to_string()))?;
    let slices: Vec<Value> = listed
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|s| {
            s.pointer("/metadata/labels").and_then(|l| l.get(SERVICE_NAME_LABEL)).and_then(Value::as_str) == Some(name)
        })
        .collect();
    let addr = pick(&svc, &slices, port)
        .map_err(|e| CallError::Call(format!("unable to resolve service {namespace}/{name}: {e}")))?;
    let host = format!("{name}.{namespace}.svc");
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    Ok(Target { url: format!("https://{host}:{}{path}", addr.port()), resolved: Some((host, addr)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_ports_resolve_through_slices() {
        let svc = json!({"spec": {"ports": [{"name": "https", "port": 443, "targetPort": "web"}]}});
        let slices = [json!({
            "ports": [{"name": "https", "port": 8443}],
            "endpoints": [
                {"addresses": ["10.1.0.9"], "conditions": {"ready": false}},
                {"addresses": ["10.1.0.7"], "conditions": {"ready": true}}
            ]
        })];
        assert_eq!(pick(&svc, &slices, 443), Ok("10.1.0.7:8443".parse().expect("addr")));
        assert!(pick(&svc, &slices, 444).is_err(), "no such service port");
        assert!(pick(&svc, &[], 443).is_err(), "no endpoints");
        let unnamed = json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}]}});
        let slice = json!({"ports": [], "endpoints": [{"addresses": ["10.1.0.8"]}]});
        assert_eq!(pick(&unnamed, &[slice], 443), Ok("10.1.0.8:9443".parse().expect("addr")));
    }
}
