//! What a Service's EndpointSlices and Endpoints should hold, from the Service and the pods its
//! selector matches (pure, as kube-controller-manager's endpointslice and endpoints
//! controllers compute them).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::api::object;
use crate::controllers::podutil;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming a slice's controller.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// The annotation the endpoints controller marks the Endpoints it writes with.
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// At most this many endpoints per slice (the controller's default `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// One Service port resolved for one pod: (name, port, protocol, appProtocol).
type ResolvedPort = (String, i64, String, Option<String>);

/// A pod as the endpoint controllers read it, taken once per version of the pod (the controller
/// keeps these by resourceVersion, so a reconcile decodes only the pods that changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEndpoint {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// `status.podIP` when it is an IPv4 address.
    pub ip: Option<String>,
    /// `Succeeded` or `Failed`.
    pub terminal: bool,
    /// Has a `deletionTimestamp`.
    pub terminating: bool,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    pub node: Option<String>,
    pub hostname: Option<String>,
    /// The containers' named ports: (name, protocol, number).
    pub named_ports: Vec<(String, String, i64)>,
}

impl PodEndpoint {
    /// What the endpoints need of `pod`.
    pub fn of(pod: &Value) -> Self {
        let state = podutil::PodState::of(pod);
        let text = |path: &[&str]| object::str_at(pod, path).filter(|v| !v.is_empty()).map(String::from);
        let named_ports = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten())
            .filter_map(|p| {
                let name = p.get("name").and_then(Value::as_str).filter(|n| !n.is_empty())?;
                let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                Some((name.to_string(), protocol.to_string(), p.get("containerPort").and_then(Value::as_i64)?))
            })
            .collect();
        Self {
            name: object::name(pod).to_string(),
            namespace: object::namespace(pod).unwrap_or("").to_string(),
            uid: text(&["metadata", "uid"]).unwrap_or_default(),
            ip: text(&["status", "podIP"]).filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()),
            terminal: matches!(object::str_at(pod, &["status", "phase"]), Some("Succeeded" | "Failed")),
            terminating: state.deleting,
            ready: state.ready,
            node: text(&["spec", "nodeName"]),
            hostname: text(&["spec", "hostname"]),
            named_ports,
        }
    }

    fn target_ref(&self) -> Value {
        json!({"kind": "Pod", "namespace": self.namespace, "name": self.name, "uid": self.uid})
    }
}

/// The pod's number for a Service port: a numeric `targetPort` as is, a named one by the
/// container port of that name and protocol; `None` when the pod does not expose that name.
pub fn resolve_port(svc_port: &Value, pod: &PodEndpoint) -> Option<i64> {
    let protocol = svc_port.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
    match svc_port.get("targetPort").or_else(|| svc_port.get("port")) {
        Some(Value::Number(n)) => n.as_i64().filter(|p| (1..=65535).contains(p)),
        Some(Value::String(name)) => {
            if let Ok(n) = name.parse::<i64>() {
                return Some(n).filter(|p| (1..=65535).contains(p));
            }
            let named = pod.named_ports.iter().find(|(n, proto, _)| n == name && proto == protocol);
            named.map(|(_, _, number)| *number)
        }
        _ => None,
    }
}

fn resolved_ports(svc: &Value, pod: &PodEndpoint) -> Vec<ResolvedPort> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let number = resolve_port(p, pod)?;
            Some((
                p.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                number,
                p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string(),
                p.get("appProtocol").and_then(Value::as_str).map(String::from),
            ))
        })
        .collect()
}

fn port_json(ports: &[ResolvedPort]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|(name, port, protocol, app)| {
                let mut p = json!({"name": name, "port": port, "protocol": protocol});
                if let Some(app) = app {
                    p["appProtocol"] = json!(app);
                }
                p
            })
            .collect(),
    )
}

fn publish_not_ready(svc: &Value) -> bool {
    svc.pointer("/spec/publishNotReadyAddresses").and_then(Value::as_bool).unwrap_or(false)
}

/// Labels the Service's endpoint objects carry: the Service's own, plus the headless marker.
fn base_labels(svc: &Value) -> Map<String, Value> {
    let mut labels = object::labels(svc);
    labels.retain(|k, _| k != SERVICE_NAME_LABEL && k != MANAGED_BY_LABEL);
    if object::str_at(svc, &["spec", "clusterIP"]) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), json!(""));
    }
    labels
}

/// A short stable name part for a slice: a hash of its port set and its index.
fn slice_name(svc_name: &str, ports: &Value, index: usize) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ports.to_string().hash(&mut h);
    index.hash(&mut h);
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = h.finish();
    let suffix: String = (0..5)
        .map(|_| {
            let c = ALPHABET[usize::try_from(n % 27).unwrap_or(0)] as char;
            n /= 27;
            c
        })
        .collect();
    format!("{svc_name}-{suffix}")
}

/// The EndpointSlices a Service with a selector should have, given the pods it selects: pods
/// with an IP that are not terminated, grouped by their resolved ports, at most
/// [`MAX_ENDPOINTS_PER_SLICE`] per slice; one empty slice when there are none.
pub fn desired_slices(svc: &Value, pods: &[&PodEndpoint]) -> Vec<Value> {
    let svc_name = object::name(svc);
    let ns = object::namespace(svc).unwrap_or("");
    let publish = publish_not_ready(svc);
    let mut groups: BTreeMap<String, (Value, Vec<Value>)> = BTreeMap::new();
    let mut sorted: Vec<&PodEndpoint> = pods.iter().copied().filter(|p| p.ip.is_some() && !p.terminal).collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for pod in sorted {
        let ports = port_json(&resolved_ports(svc, pod));
        let (terminating, serving) = (pod.terminating, pod.ready);
        // Never ready while terminating, unless not-ready addresses are published anyway.
        let ready = publish || (serving && !terminating);
        let mut endpoint = json!({
            "addresses": [pod.ip.as_deref().unwrap_or_default()],
            "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
            "targetRef": pod.target_ref(),
        });
        if let Some(node) = &pod.node {
            endpoint["nodeName"] = json!(node);
        }
        if let Some(host) = &pod.hostname {
            endpoint["hostname"] = json!(host);
        }
        groups.entry(ports.to_string()).or_insert_with(|| (ports, Vec::new())).1.push(endpoint);
    }
    let mut labels = base_labels(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), json!(svc_name));
    labels.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY));
    let owner = json!([{"apiVersion": "v1", "kind": "Service", "name": svc_name,
        "uid": object::str_at(svc, &["metadata", "uid"]).unwrap_or(""), "controller": true, "blockOwnerDeletion": true}]);
    let slice = |name: String, ports: Value, endpoints: Vec<Value>| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": owner},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports})
    };
    if groups.is_empty() {
        return vec![slice(slice_name(svc_name, &Value::Null, 0), json!([]), Vec::new())];
    }
    let mut out = Vec::new();
    for (ports, endpoints) in groups.into_values() {
        for (i, chunk) in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE).enumerate() {
            out.push(slice(slice_name(svc_name, &ports, i), ports.clone(), chunk.to_vec()));
        }
    }
    out
}

/// The legacy Endpoints of a Service with a selector: one subset per distinct port set, ready
/// pods in `addresses`, the others in `notReadyAddresses` (all ready with
/// `publishNotReadyAddresses`); terminating pods left out unless published anyway.
pub fn desired_endpoints(svc: &Value, pods: &[&PodEndpoint]) -> Value {
    let publish = publish_not_ready(svc);
    let has_ports = svc.pointer("/spec/ports").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
    let mut subsets: BTreeMap<String, (Value, Vec<Value>, Vec<Value>)> = BTreeMap::new();
    let mut sorted: Vec<&PodEndpoint> =
        pods.iter().copied().filter(|p| p.ip.is_some() && !p.terminal && (publish || !p.terminating)).collect();
    sorted.sort_by(|a, b| a.ip.cmp(&b.ip));
    for pod in sorted {
        let resolved = resolved_ports(svc, pod);
        if has_ports && resolved.is_empty() {
            continue;
        }
        let ports = Value::Array(
            port_json(&resolved)
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let mut p = p.clone();
                    if p["name"] == "" {
                        p.as_object_mut().map(|m| m.remove("name"));
                    }
                    p
                })
                .collect(),
        );
        let mut address = json!({"ip": pod.ip.as_deref().unwrap_or_default(), "targetRef": pod.target_ref()});
        if let Some(node) = &pod.node {
            address["nodeName"] = json!(node);
        }
        let entry = subsets.entry(ports.to_string()).or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if publish || pod.ready {
            entry.1.push(address);
        } else {
            entry.2.push(address);
        }
    }
    let subsets: Vec<Value> = subsets
        .into_values()
        .map(|(ports, ready, not_ready)| {
            let mut s = Map::new();
            if !ready.is_empty() {
                s.insert("addresses".into(), Value::Array(ready));
            }
            if !not_ready.is_empty() {
                s.insert("notReadyAddresses".into(), Value::Array(not_ready));
            }
            if ports.as_array().is_some_and(|p| !p.is_empty()) {
                s.insert("ports".into(), ports);
            }
            Value::Object(s)
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": object::name(svc), "namespace": object::namespace(svc).unwrap_or(""),
            "labels": base_labels(svc)},
        "subsets": subsets})
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
