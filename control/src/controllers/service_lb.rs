//! LoadBalancer Services without extra pods (k3s's servicelb, in-process): a `type: LoadBalancer`
//! Service gets the InternalIPs of the nodes as `status.loadBalancer.ingress`; each node's proxy
//! then serves the service port on those addresses (see `skiff-node`'s `proxy`). A port already
//! taken on a node (something listens there) leaves the Service Pending (empty status) with a
//! Warning event, looked at again every [`RECHECK`] until the port is free.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::events;
use super::runtime::{Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::object;
use crate::api::registry::{Registry, WriteOptions};

/// The controller's name (task, events).
const NAME: &str = "controller-service-lb";
/// The component events are reported from (Kubernetes' service controller).
const COMPONENT: &str = "service-controller";
/// How often a Service whose port is taken is looked at again.
pub const RECHECK: Duration = Duration::from_secs(5);

/// What a reconcile works with.
pub struct Ctx {
    registry: Arc<Registry>,
    services: Arc<Informer>,
    nodes: Arc<Informer>,
    /// Service uid -> the conflict last reported, so a repeat is not a new event.
    warned: parking_lot::Mutex<HashMap<String, String>>,
}

/// Starts the controller under the informers' supervisor.
pub fn start(informers: &Arc<Informers>) {
    let services = informers.get("", "Service");
    let nodes = informers.get("", "Node");
    let ctx = Arc::new(Ctx {
        registry: Arc::clone(informers.registry()),
        services: Arc::clone(&services),
        nodes: Arc::clone(&nodes),
        warned: parking_lot::Mutex::default(),
    });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(NAME);
    supervisor.spawn(NAME, move || {
        let lookup = Arc::clone(&services);
        Controller::new(NAME, Arc::clone(&services))
            .watches(Arc::clone(&nodes), move |_node| load_balancers(&lookup))
            .run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

fn is_load_balancer(svc: &Value) -> bool {
    object::str_at(svc, &["spec", "type"]) == Some("LoadBalancer")
}

/// Every LoadBalancer Service (a node change concerns them all).
fn load_balancers(services: &Informer) -> Vec<ObjectKey> {
    services.list_all().iter().filter(|s| is_load_balancer(s)).map(|s| ObjectKey::of(s)).collect()
}

/// The nodes' InternalIPs, sorted, without duplicates.
pub fn node_addresses(nodes: &[Arc<Value>]) -> Vec<IpAddr> {
    let ips: BTreeSet<IpAddr> = nodes
        .iter()
        .flat_map(|n| n.pointer("/status/addresses").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .filter_map(|a| a.get("address").and_then(Value::as_str)?.parse().ok())
        .collect();
    ips.into_iter().collect()
}

/// The (port, protocol) pairs of a Service.
fn service_ports(svc: &Value) -> Vec<(u16, String)> {
    let ports = svc.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    ports
        .iter()
        .filter_map(|p| {
            let port = u16::try_from(p.get("port")?.as_i64()?).ok()?;
            Some((port, p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string()))
        })
        .collect()
}

/// Whether something on this host holds `ip:port` (a bind fails with "address in use"). An
/// address that is not this host's cannot be checked from here and counts as free.
pub fn port_taken(ip: IpAddr, port: u16, protocol: &str) -> bool {
    let result = match protocol {
        "TCP" => std::net::TcpListener::bind((ip, port)).map(drop),
        "UDP" => std::net::UdpSocket::bind((ip, port)).map(drop),
        _ => Ok(()),
    };
    matches!(result, Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

/// The first port of `svc` taken on one of `ips`, as an event message.
pub fn conflict(svc: &Value, ips: &[IpAddr], taken: impl Fn(IpAddr, u16, &str) -> bool) -> Option<String> {
    for (port, protocol) in service_ports(svc) {
        for ip in ips {
            if taken(*ip, port, &protocol) {
                return Some(format!(
                    "Error syncing load balancer: failed to ensure load balancer: port {port}/{protocol} is already in use on node address {ip}"
                ));
            }
        }
    }
    None
}

/// The `status.loadBalancer` a Service should have.
pub fn desired_status(svc: &Value, ips: &[IpAddr], conflict: bool) -> Value {
    if !is_load_balancer(svc) || conflict || ips.is_empty() {
        return json!({});
    }
    let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"})).collect();
    json!({ "ingress": ingress })
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(svc) = ctx.services.get(&key) else { return Ok(Action::Done) };
    let uid = object::str_at(&svc, &["metadata", "uid"]).unwrap_or_default().to_string();
    let current = svc.pointer("/status/loadBalancer").cloned().unwrap_or_else(|| json!({}));
    let ips = node_addresses(&ctx.nodes.list_all());
    let problem = if is_load_balancer(&svc) { conflict(&svc, &ips, port_taken) } else { None };
    let desired = desired_status(&svc, &ips, problem.is_some());
    // A Service that never was a LoadBalancer keeps whatever another implementation wrote.
    let ours = is_load_balancer(&svc) || current.get("ingress").is_some();
    if ours && current != desired {
        let ri = ctx.registry.resource("", "Service")?;
        let opts = WriteOptions { field_manager: Some(COMPONENT.into()), ..Default::default() };
        let ns = key.namespace.as_deref();
        ctx.registry
            .update_with(ri, ns, &key.name, Some("status"), &opts, |cur| {
                let mut next = cur.clone();
                next["status"]["loadBalancer"] = desired.clone();
                Ok(next)
            })
            .await?;
    }
    match problem {
        Some(message) => {
            let repeated = ctx.warned.lock().insert(uid, message.clone()).as_ref() == Some(&message);
            if !repeated {
                tracing::warn!(%message, "load balancer port taken");
                let what = ("Warning", "SyncLoadBalancerFailed", message.as_str());
                events::record(&ctx.registry, &svc, ("v1", "Service"), what, COMPONENT).await;
            }
            Ok(Action::RequeueAfter(RECHECK))
        }
        None => {
            ctx.warned.lock().remove(&uid);
            Ok(Action::Done)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb(ports: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "d"}, "spec": {"type": "LoadBalancer", "ports": ports}})
    }

    #[test]
    fn ingress_is_the_nodes_internal_ips() {
        let nodes = vec![
            Arc::new(
                json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "b"}]}}),
            ),
            Arc::new(json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}})),
            Arc::new(json!({"status": {}})),
        ];
        let ips = node_addresses(&nodes);
        assert_eq!(ips, vec!["10.0.0.1".parse::<IpAddr>().unwrap(), "10.0.0.2".parse().unwrap()]);
        let svc = lb(json!([{"port": 80}]));
        assert_eq!(
            desired_status(&svc, &ips, false),
            json!({"ingress": [{"ip": "10.0.0.1", "ipMode": "VIP"}, {"ip": "10.0.0.2", "ipMode": "VIP"}]})
        );
        assert_eq!(desired_status(&svc, &ips, true), json!({}), "a port conflict leaves it pending");
        assert_eq!(desired_status(&svc, &[], false), json!({}), "no node, no address");
        let cluster_ip = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
        assert_eq!(desired_status(&cluster_ip, &ips, false), json!({}));
    }

    #[test]
    fn a_taken_port_is_a_conflict_naming_port_and_address() {
        let svc = lb(json!([{"port": 80}, {"port": 53, "protocol": "UDP"}]));
        let ips = vec!["127.0.0.1".parse::<IpAddr>().unwrap()];
        assert_eq!(conflict(&svc, &ips, |_, _, _| false), None);
        let msg = conflict(&svc, &ips, |_, port, proto| port == 53 && proto == "UDP").unwrap();
        assert!(msg.contains("port 53/UDP is already in use on node address 127.0.0.1"), "{msg}");
    }

    #[test]
    fn port_taken_sees_a_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(port_taken(lo, port, "TCP"));
        drop(listener);
        assert!(!port_taken(lo, port, "TCP"));
        // Not an address of this host: cannot be checked here, so not a conflict.
        assert!(!port_taken("192.0.2.123".parse().unwrap(), port, "TCP"));
    }
}
