//! What the proxy must do for one Service, computed from the Service and its EndpointSlices
//! (pure, no IO): one [`PortRules`] per service port, with the endpoints traffic may go to.
//!
//! The endpoint choice follows kube-proxy: ready endpoints; when none is ready, the ones still
//! serving while terminating (so connections drain during a rollout instead of failing).
//! `internalTrafficPolicy: Local` / `externalTrafficPolicy: Local` keep only this node's
//! endpoints for that kind of traffic.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours, as Kubernetes).
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;
/// The largest affinity timeout Kubernetes accepts (one day).
const MAX_AFFINITY_SECONDS: u32 = 86_400;

/// A transport protocol of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// Parses a Kubernetes protocol name (`TCP`, `UDP`, `SCTP`; absent is TCP).
    pub fn parse(p: Option<&str>) -> Option<Self> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// The nftables name (`tcp`, `udp`, `sctp`).
    pub fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One backend address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The pod (or manual endpoint) IP.
    pub ip: Ipv4Addr,
    /// The target port.
    pub port: u16,
}

/// What one service port needs from the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRules {
    /// `<namespace>/<service>/<protocol>/<port name, or the port number when unnamed>`: unique on
    /// the node and part of every chain name of this port.
    pub id: String,
    /// The protocol.
    pub protocol: Proto,
    /// The ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// The NodePort (NodePort and LoadBalancer services).
    pub node_port: Option<u16>,
    /// `status.loadBalancer.ingress` IPs (LoadBalancer services), served on `port`.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// Endpoints for cluster-wide traffic (sorted, no duplicates).
    pub cluster_endpoints: Vec<Endpoint>,
    /// The endpoints on this node among them (by the same ready / serving rule).
    pub local_endpoints: Vec<Endpoint>,
    /// `sessionAffinity: ClientIP` with its timeout in seconds.
    pub affinity_seconds: Option<u32>,
}

impl PortRules {
    /// Whether traffic reaches this port from outside the cluster network (NodePort, LoadBalancer).
    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.load_balancer_ips.is_empty()
    }
}

/// The service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
pub fn slice_service(slice: &EndpointSlice) -> Option<&str> {
    slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL).map(String::as_str)
}

/// A slice with one endpoint, `addr` on this node, for every port of `service` (the cluster DNS
/// Service, whose endpoint on each node is that node's own server).
pub fn node_local_slice(service: &Service, addr: std::net::SocketAddr, node_name: &str) -> EndpointSlice {
    use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointConditions, EndpointPort};
    let ports = service.spec.iter().flat_map(|s| s.ports.iter().flatten());
    EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: vec![SliceEndpoint {
            addresses: vec![addr.ip().to_string()],
            conditions: Some(EndpointConditions { ready: Some(true), ..Default::default() }),
            node_name: Some(node_name.to_string()),
            ..Default::default()
        }],
        ports: Some(
            ports
                .map(|p| EndpointPort {
                    name: p.name.clone(),
                    port: Some(i32::from(addr.port())),
                    protocol: p.protocol.clone(),
                    ..Default::default()
                })
                .collect(),
        ),
        metadata: Default::default(),
    }
}

/// The rules of every port of `service` given its slices, for the node `node_name`. Headless and
/// ExternalName services, services without an IPv4 ClusterIP and ports with an unknown protocol
/// get none.
pub fn desired(service: &Service, slices: &[&EndpointSlice], node_name: &str) -> Vec<PortRules> {
    let Some(spec) = &service.spec else { return Vec::new() };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let Some(cluster_ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok()) else {
        return Vec::new();
    };
    let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    let load_balancer_ips: Vec<Ipv4Addr> = if ty == "LoadBalancer" {
        let ingress = service.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
        let ips: BTreeSet<Ipv4Addr> =
            ingress.into_iter().flatten().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect();
        ips.into_iter().collect()
    } else {
        Vec::new()
    };
    let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        let t =
            spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds);
        t.and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .map_or(DEFAULT_AFFINITY_SECONDS, |t| t.min(MAX_AFFINITY_SECONDS))
    });
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let mut out = Vec::new();
    for sp in spec.ports.iter().flatten() {
        let Some(protocol) = Proto::parse(sp.protocol.as_deref()) else { continue };
        let Some(port) = to_port(sp.port) else { continue };
        let node_port = match ty {
            "NodePort" | "LoadBalancer" => sp.node_port.and_then(to_port),
            _ => None,
        };
        let (cluster_endpoints, local_endpoints) = endpoints(sp, protocol, slices, node_name);
        let port_label = sp.name.as_deref().filter(|n| !n.is_empty()).map_or_else(|| port.to_string(), String::from);
        out.push(PortRules {
            id: format!("{namespace}/{name}/{}/{port_label}", protocol.nft()),
            protocol,
            cluster_ip,
            port,
            node_port,
            load_balancer_ips: load_balancer_ips.clone(),
            internal_local,
            external_local,
            cluster_endpoints,
            local_endpoints,
            affinity_seconds,
        });
    }
    out
}

fn to_port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p > 0)
}

/// How one endpoint address can be used.
#[derive(Clone, Copy)]
struct Candidate {
    endpoint: Endpoint,
    ready: bool,
    serving_terminating: bool,
    local: bool,
}

/// The (cluster, local) endpoints of service port `sp`: the slice port with the same name and
/// protocol gives the target port.
fn endpoints(
    sp: &ServicePort,
    protocol: Proto,
    slices: &[&EndpointSlice],
    node_name: &str,
) -> (Vec<Endpoint>, Vec<Endpoint>) {
    let want_name = sp.name.as_deref().unwrap_or("");
    let mut candidates = Vec::new();
    for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
        let target = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == want_name && Proto::parse(p.protocol.as_deref()) == Some(protocol)
        });
        let Some(port) = target.and_then(|p| p.port).and_then(to_port) else { continue };
        for ep in &slice.endpoints {
            let c = ep.conditions.as_ref();
            // An unknown condition is read as Kubernetes says consumers should: ready, serving
            // like ready, not terminating.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let local = ep.node_name.as_deref() == Some(node_name);
            for ip in ep.addresses.iter().filter_map(|a| a.parse::<Ipv4Addr>().ok()) {
                let endpoint = Endpoint { ip, port };
                candidates.push(Candidate { endpoint, ready, serving_terminating: serving && terminating, local });
            }
        }
    }
    let pick = |only_local: bool| -> Vec<Endpoint> {
        let pool = || candidates.iter().filter(move |c| !only_local || c.local);
        let ready: BTreeSet<Endpoint> = pool().filter(|c| c.ready).map(|c| c.endpoint).collect();
        let chosen = if ready.is_empty() {
            pool().filter(|c| c.serving_terminating).map(|c| c.endpoint).collect()
        } else {
            ready
        };
        chosen.into_iter().collect()
    };
    (pick(false), pick(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": spec})).unwrap()
    }

    fn slice(name: &str, ports: serde_json::Value, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn ep(ip: &str, port: u16) -> Endpoint {
        Endpoint { ip: ip.parse().unwrap(), port }
    }

    #[test]
    fn ports_match_slices_by_name_and_protocol() {
        let svc = service(json!({"type": "NodePort", "clusterIP": "10.43.0.10", "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
            {"name": "dns", "port": 53, "protocol": "UDP"}]}));
        let s = slice(
            "web-1",
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
            json!([{"addresses": ["10.88.0.2"], "conditions": {"ready": true}, "nodeName": "n1"},
                   {"addresses": ["10.88.0.3"], "nodeName": "n2"}]),
        );
        let rules = desired(&svc, &[&s], "n1");
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].id, "shop/web/tcp/http");
        assert_eq!(rules[0].node_port, Some(30080));
        assert_eq!(rules[0].cluster_endpoints, vec![ep("10.88.0.2", 8080), ep("10.88.0.3", 8080)]);
        assert_eq!(rules[0].local_endpoints, vec![ep("10.88.0.2", 8080)]);
        assert_eq!(rules[1].id, "shop/web/udp/dns");
        assert_eq!(rules[1].protocol, Proto::Udp);
        assert_eq!(rules[1].node_port, None, "NodePort lists the port, but it has none");
        assert_eq!(rules[1].cluster_endpoints[0].port, 5353);
    }

    #[test]
    fn unready_endpoints_are_left_out_and_terminating_ones_used_only_when_none_is_ready() {
        let svc = service(json!({"clusterIP": "10.43.0.10", "ports": [{"port": 80}]}));
        let s = slice(
            "web-1",
            json!([{"port": 8080}]),
            json!([{"addresses": ["10.88.0.2"], "conditions": {"ready": false}},
                   {"addresses": ["10.88.0.3"], "conditions": {"ready": true}},
                   {"addresses": ["10.88.0.4"], "conditions": {"ready": false, "serving": true, "terminating": true}}]),
        );
        let rules = desired(&svc, &[&s], "n1");
        assert_eq!(rules[0].id, "shop/web/tcp/80");
        assert_eq!(rules[0].cluster_endpoints, vec![ep("10.88.0.3", 8080)]);
        let s = slice(
            "web-1",
            json!([{"port": 8080}]),
            json!([{"addresses": ["10.88.0.2"], "conditions": {"ready": false}},
                   {"addresses": ["10.88.0.4"], "conditions": {"ready": false, "serving": true, "terminating": true}}]),
        );
        assert_eq!(desired(&svc, &[&s], "n1")[0].cluster_endpoints, vec![ep("10.88.0.4", 8080)]);
        let s = slice(
            "web-1",
            json!([{"port": 8080}]),
            json!([{"addresses": ["10.88.0.2"], "conditions": {"ready": false}}]),
        );
        assert!(desired(&svc, &[&s], "n1")[0].cluster_endpoints.is_empty());
    }

    #[test]
    fn endpoints_of_several_slices_are_merged_without_duplicates() {
        let svc = service(json!({"clusterIP": "10.43.0.10", "ports": [{"port": 80}]}));
        let a =
            slice("a", json!([{"port": 8080}]), json!([{"addresses": ["10.88.0.3"]}, {"addresses": ["10.88.0.2"]}]));
        let b = slice("b", json!([{"port": 8080}]), json!([{"addresses": ["10.88.0.2"]}]));
        let mut v6 = slice("c", json!([{"port": 8080}]), json!([{"addresses": ["fd00::1"]}]));
        v6.address_type = "IPv6".into();
        let rules = desired(&svc, &[&a, &b, &v6], "n");
        assert_eq!(rules[0].cluster_endpoints, vec![ep("10.88.0.2", 8080), ep("10.88.0.3", 8080)]);
    }

    #[test]
    fn headless_external_name_and_unallocated_services_get_nothing() {
        for spec in [
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            json!({"type": "ExternalName", "externalName": "example.org"}),
            json!({"ports": [{"port": 80}]}),
            json!({"clusterIP": "fd00::10", "ports": [{"port": 80}]}),
        ] {
            assert!(desired(&service(spec.clone()), &[], "n").is_empty(), "{spec}");
        }
    }

    #[test]
    fn load_balancer_affinity_and_policies() {
        let mut svc = service(json!({"type": "LoadBalancer", "clusterIP": "10.43.0.10",
            "sessionAffinity": "ClientIP", "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
            "ports": [{"port": 80, "nodePort": 31000}]}));
        svc.status = serde_json::from_value(
            json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}, {"hostname": "lb.example"}, {"ip": "192.0.2.7"}]}}),
        )
        .unwrap();
        let r = &desired(&svc, &[], "n")[0];
        assert_eq!(r.load_balancer_ips, vec!["192.0.2.7".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(r.affinity_seconds, Some(DEFAULT_AFFINITY_SECONDS));
        assert!(r.internal_local && r.external_local && r.has_external());
        let svc = service(json!({"clusterIP": "10.43.0.10", "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}, "ports": [{"port": 80, "nodePort": 31000}]}));
        let r = &desired(&svc, &[], "n")[0];
        assert_eq!(r.affinity_seconds, Some(60));
        assert_eq!(r.node_port, None, "a ClusterIP service has no NodePort even if one is written");
        assert!(!r.has_external());
    }
}
