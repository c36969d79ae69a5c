//! ClusterIP and NodePort allocation for Services, at admission (as kube-apiserver's service
//! REST storage does): addresses and ports are taken in memory before the Service is stored and
//! handed back when the write fails, when an update stops using them, or when the Service is
//! deleted. The in-memory state is rebuilt from the stored Services at start (the "repair" step).

pub mod bitmap;
pub mod ip;
pub mod node_port;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::{json, Map, Value};

use super::admission::Cause;
use super::service_network::ServiceNetwork;
use ip::IpAllocator;
use node_port::PortAllocator;

struct Pools {
    ips: IpAllocator,
    ports: PortAllocator,
}

/// The ClusterIPs and NodePorts in use, shared by every write of a Service.
pub struct ServiceAllocator {
    network: ServiceNetwork,
    pools: Mutex<Pools>,
}

/// What one write took and what it gives back once stored. Dropped without
/// [`Reservation::commit`], it hands back what it took.
#[must_use]
pub struct Reservation<'a> {
    alloc: &'a ServiceAllocator,
    taken: Held,
    release_on_commit: Held,
}

#[derive(Default, Debug, PartialEq, Eq)]
struct Held {
    ips: Vec<Ipv4Addr>,
    ports: Vec<u16>,
}

impl Reservation<'_> {
    /// The write is stored: keep what was taken, free what the old object no longer uses.
    pub fn commit(mut self) {
        let release = std::mem::take(&mut self.release_on_commit);
        self.taken = Held::default();
        self.alloc.free(&release);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.alloc.free(&self.taken);
    }
}

fn spec_str<'a>(svc: &'a Value, field: &str) -> Option<&'a str> {
    svc.get("spec").and_then(|s| s.get(field)).and_then(Value::as_str)
}

fn svc_type(svc: &Value) -> &str {
    spec_str(svc, "type").unwrap_or("ClusterIP")
}

/// Whether the Service gets a ClusterIP (every type but ExternalName).
pub fn needs_cluster_ip(svc: &Value) -> bool {
    svc_type(svc) != "ExternalName"
}

/// Whether the Service's ports get NodePorts.
pub fn needs_node_ports(svc: &Value) -> bool {
    match svc_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc.pointer("/spec/allocateLoadBalancerNodePorts").and_then(Value::as_bool).unwrap_or(true),
        _ => false,
    }
}

fn needs_health_check_port(svc: &Value) -> bool {
    svc_type(svc) == "LoadBalancer" && spec_str(svc, "externalTrafficPolicy") == Some("Local")
}

/// The Service's ClusterIP as written: `spec.clusterIP`, else `spec.clusterIPs[0]`.
pub fn cluster_ip(svc: &Value) -> Option<&str> {
    spec_str(svc, "clusterIP")
        .filter(|s| !s.is_empty())
        .or_else(|| svc.pointer("/spec/clusterIPs/0").and_then(Value::as_str).filter(|s| !s.is_empty()))
}

fn ports_mut(svc: &mut Value) -> Vec<&mut Map<String, Value>> {
    svc.pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
        .map(|ports| ports.iter_mut().filter_map(Value::as_object_mut).collect())
        .unwrap_or_default()
}

fn node_port_of(port: &Value) -> Option<i64> {
    port.get("nodePort").and_then(Value::as_i64).filter(|p| *p != 0)
}

/// Every NodePort (and the health check port) the Service holds.
fn held_ports(svc: &Value) -> BTreeSet<u16> {
    let mut held: BTreeSet<u16> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(node_port_of)
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
    if let Some(p) =
        svc.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64).and_then(|p| u16::try_from(p).ok())
    {
        held.insert(p);
    }
    held.remove(&0);
    held
}

fn held_ip(svc: &Value) -> Option<Ipv4Addr> {
    needs_cluster_ip(svc).then(|| cluster_ip(svc).and_then(|s| s.parse().ok())).flatten()
}

/// Before admission of an update: what the client left out that was allocated stays (as
/// kube-apiserver's `patchAllocatedValues`), so `kubectl replace` of a manifest without
/// `clusterIP` or `nodePort` keeps them.
pub fn patch_allocated(old: &Value, new: &mut Value) {
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        let old_ip = spec_str(old, "clusterIP").map(String::from);
        let old_ips = old.pointer("/spec/clusterIPs").cloned();
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            if spec.get("clusterIP").and_then(Value::as_str).is_none_or(str::is_empty) {
                if let Some(ip) = old_ip {
                    spec.insert("clusterIP".into(), json!(ip));
                }
            }
            if spec.get("clusterIPs").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                if let Some(ips) = old_ips {
                    spec.insert("clusterIPs".into(), ips);
                }
            }
        }
    }
    if needs_node_ports(old) && needs_node_ports(new) {
        let old_ports: Vec<Value> = old.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
        let used_new: BTreeSet<i64> = new
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(node_port_of)
            .collect();
        for port in ports_mut(new) {
            if node_port_of(&Value::Object(port.clone())).is_some() {
                continue;
            }
            let name = port.get("name").and_then(Value::as_str).unwrap_or("");
            let old_port = old_ports.iter().find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == name);
            if let Some(np) = old_port.and_then(node_port_of).filter(|np| !used_new.contains(np)) {
                port.insert("nodePort".into(), json!(np));
            }
        }
    }
    if needs_health_check_port(old) && needs_health_check_port(new) {
        if let (Some(hc), Some(spec)) =
            (old.pointer("/spec/healthCheckNodePort").cloned(), new.get_mut("spec").and_then(Value::as_object_mut))
        {
            spec.entry("healthCheckNodePort").or_insert(hc);
        }
    }
}

/// Clears what the new type no longer uses, when it still has the old values (kube-apiserver's
/// `dropTypeDependentFields`): NodePorts when leaving NodePort/LoadBalancer, the ClusterIP when
/// turning into ExternalName.
fn drop_type_dependent(old: &Value, new: &mut Value) {
    if needs_cluster_ip(old) && !needs_cluster_ip(new) && cluster_ip(new) == cluster_ip(old) {
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                spec.remove(field);
            }
        }
    }
    let old_ports = held_ports(old);
    if !needs_node_ports(new) {
        for port in ports_mut(new) {
            let np = port.get("nodePort").and_then(Value::as_i64).and_then(|p| u16::try_from(p).ok());
            if np.is_some_and(|np| old_ports.contains(&np)) {
                port.remove("nodePort");
            }
        }
    }
    let external = |svc: &Value| matches!(svc_type(svc), "NodePort" | "LoadBalancer");
    if external(old) && !external(new) {
        let same = spec_str(new, "externalTrafficPolicy") == spec_str(old, "externalTrafficPolicy");
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            if same {
                spec.remove("externalTrafficPolicy");
            }
        }
    }
    if svc_type(old) == "LoadBalancer" && svc_type(new) != "LoadBalancer" {
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("allocateLoadBalancerNodePorts");
        }
    }
    if !needs_health_check_port(new) {
        let hc = new.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64);
        if hc == old.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64) {
            if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("healthCheckNodePort");
            }
        }
    }
}

impl ServiceAllocator {
    /// An allocator over `network` with nothing taken.
    pub fn new(network: ServiceNetwork) -> Self {
        let pools =
            Pools { ips: IpAllocator::new(network.cidr), ports: PortAllocator::new(network.node_ports.clone()) };
        ServiceAllocator { network, pools: Mutex::new(pools) }
    }

    /// The network addresses and ports come from.
    pub fn network(&self) -> &ServiceNetwork {
        &self.network
    }

    /// The `kubernetes` Service's address: the first usable one of the CIDR.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        self.lock().ips.first()
    }

    fn lock(&self) -> MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn free(&self, held: &Held) {
        if held.ips.is_empty() && held.ports.is_empty() {
            return;
        }
        let mut pools = self.lock();
        for ip in &held.ips {
            pools.ips.release(*ip);
        }
        for port in &held.ports {
            pools.ports.release(*port);
        }
    }

    /// Starts over from the stored Services: each one's address and ports taken. A stored value
    /// outside the configured range or held twice is logged and left out.
    pub fn rebuild<'v>(&self, services: impl IntoIterator<Item = &'v Value>) {
        let mut pools = self.lock();
        *pools = Pools {
            ips: IpAllocator::new(self.network.cidr),
            ports: PortAllocator::new(self.network.node_ports.clone()),
        };
        for svc in services {
            let (ns, name) = (super::object::namespace(svc).unwrap_or(""), super::object::name(svc));
            if let Some(ip) = held_ip(svc) {
                if let Err(e) = pools.ips.allocate(ip) {
                    tracing::warn!(namespace = ns, name, %ip, error = %e, "Service's ClusterIP not taken on repair");
                }
            }
            for port in held_ports(svc) {
                if let Err(e) = pools.ports.allocate(port) {
                    tracing::warn!(namespace = ns, name, port, error = %e, "Service's NodePort not taken on repair");
                }
            }
        }
    }

    /// Frees what a deleted Service held.
    pub fn release(&self, svc: &Value) {
        let held = Held { ips: held_ip(svc).into_iter().collect(), ports: held_ports(svc).into_iter().collect() };
        self.free(&held);
    }

    /// Allocates for a Service about to be created, filling `clusterIP(s)`, `ipFamilies`,
    /// `ipFamilyPolicy` and `nodePort`s. Errors are the causes of a 422.
    pub fn allocate_create(&self, svc: &mut Value) -> Result<Reservation<'_>, Vec<Cause>> {
        self.allocate(&json!({"spec": {"type": "ExternalName"}}), svc)
    }

    /// Allocates for an update of `old` into `new` (after [`patch_allocated`] and admission):
    /// the ClusterIP is immutable, ports new to the Service are taken, those it stops using are
    /// freed on commit.
    pub fn allocate_update(&self, old: &Value, new: &mut Value) -> Result<Reservation<'_>, Vec<Cause>> {
        drop_type_dependent(old, new);
        self.allocate(old, new)
    }

    fn allocate(&self, old: &Value, new: &mut Value) -> Result<Reservation<'_>, Vec<Cause>> {
        let mut r = Reservation { alloc: self, taken: Held::default(), release_on_commit: Held::default() };
        let mut causes = Vec::new();
        let mut pools = self.lock();
        check_families(new, &mut causes);
        // The address.
        let old_ip = held_ip(old);
        if needs_cluster_ip(new) {
            let family = json!(["IPv4"]);
            let requested = cluster_ip(new).map(String::from);
            let was = needs_cluster_ip(old).then(|| cluster_ip(old)).flatten();
            if requested.as_deref().is_some_and(|ip| Some(ip) != was) && was.is_some() {
                let ip = requested.clone().unwrap_or_default();
                causes.push(("spec.clusterIP".into(), format!("Invalid value: \"{ip}\": field is immutable")));
            }
            let ip = match requested.as_deref() {
                _ if !causes.is_empty() => None,
                Some("None") => Some("None".to_string()),
                Some(ip) if Some(ip) == was => Some(ip.to_string()),
                Some(text) => match text.parse::<Ipv4Addr>() {
                    Err(_) => {
                        let msg = if text.parse::<std::net::IpAddr>().is_ok() {
                            format!(
                                "provided IP is not in the valid range. The range of valid IPs is {}",
                                pools.ips.cidr()
                            )
                        } else {
                            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string()
                        };
                        causes.push(("spec.clusterIPs[0]".into(), format!("Invalid value: \"{text}\": {msg}")));
                        None
                    }
                    Ok(ip) => match pools.ips.allocate(ip) {
                        Ok(()) => {
                            r.taken.ips.push(ip);
                            Some(ip.to_string())
                        }
                        Err(e) => {
                            causes.push(("spec.clusterIPs[0]".into(), format!("Invalid value: \"{text}\": {e}")));
                            None
                        }
                    },
                },
                None => match pools.ips.allocate_next() {
                    Ok(ip) => {
                        r.taken.ips.push(ip);
                        Some(ip.to_string())
                    }
                    Err(e) => {
                        causes.push(("spec.clusterIPs".into(), format!("Internal error: {e}")));
                        None
                    }
                },
            };
            if let (Some(ip), Some(spec)) = (ip, new.get_mut("spec").and_then(Value::as_object_mut)) {
                spec.insert("clusterIP".into(), json!(ip));
                spec.insert("clusterIPs".into(), json!([ip]));
                spec.entry("ipFamilies").or_insert(family);
                spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
            }
        } else if let Some(ip) = cluster_ip(new) {
            causes.push((
                "spec.clusterIP".into(),
                format!("Invalid value: \"{ip}\": may not be set for ExternalName services"),
            ));
        }
        if let Some(ip) = old_ip.filter(|ip| held_ip(new) != Some(*ip)) {
            r.release_on_commit.ips.push(ip);
        }
        // The ports: first the ones asked for, then fresh ones for the rest.
        let old_ports = held_ports(old);
        let wants_node_ports = needs_node_ports(new);
        let ty = svc_type(new).to_string();
        let mut this_service = BTreeSet::new();
        let mut take = |port: i64, field: String, pools: &mut Pools, r: &mut Reservation, causes: &mut Vec<Cause>| {
            let Ok(p) = u16::try_from(port) else {
                let range = &self.network.node_ports;
                causes.push((
                    field,
                    format!(
                        "Invalid value: {port}: provided port is not in the valid range. The range of valid ports is {}-{}",
                        range.start(),
                        range.end()
                    ),
                ));
                return;
            };
            // One number may serve several ports of one Service (TCP and UDP of the same port).
            if old_ports.contains(&p) || !this_service.insert(p) {
                this_service.insert(p);
                return;
            }
            match pools.ports.allocate(p) {
                Ok(()) => r.taken.ports.push(p),
                Err(e) => causes.push((field, format!("Invalid value: {port}: {e}"))),
            }
        };
        let ports = new.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
        for (i, port) in ports.iter().enumerate() {
            if let Some(np) = node_port_of(port) {
                if wants_node_ports || ty == "LoadBalancer" {
                    take(np, format!("spec.ports[{i}].nodePort"), &mut pools, &mut r, &mut causes);
                } else {
                    causes.push((
                        format!("spec.ports[{i}].nodePort"),
                        format!("Forbidden: may not be used when `type` is '{ty}'"),
                    ));
                }
            }
        }
        if let Some(hc) = new.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64).filter(|p| *p != 0) {
            take(hc, "spec.healthCheckNodePort".into(), &mut pools, &mut r, &mut causes);
        }
        if causes.is_empty() && wants_node_ports {
            for (i, port) in ports_mut(new).into_iter().enumerate() {
                if node_port_of(&Value::Object(port.clone())).is_none() {
                    match pools.ports.allocate_next() {
                        Ok(p) => {
                            r.taken.ports.push(p);
                            port.insert("nodePort".into(), json!(p));
                        }
                        Err(e) => causes.push((format!("spec.ports[{i}].nodePort"), format!("Internal error: {e}"))),
                    }
                }
            }
        }
        if causes.is_empty() && needs_health_check_port(new) && new.pointer("/spec/healthCheckNodePort").is_none() {
            match pools.ports.allocate_next() {
                Ok(p) => {
                    r.taken.ports.push(p);
                    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert("healthCheckNodePort".into(), json!(p));
                    }
                }
                Err(e) => causes.push(("spec.healthCheckNodePort".into(), format!("Internal error: {e}"))),
            }
        }
        drop(pools);
        if !causes.is_empty() {
            return Err(causes);
        }
        let now = held_ports(new);
        r.release_on_commit.ports.extend(old_ports.iter().filter(|p| !now.contains(p)));
        Ok(r)
    }
}

/// Only IPv4 single-stack is configured: other families and required dual-stack are refused
/// with kube-apiserver's messages.
fn check_families(svc: &Value, causes: &mut Vec<Cause>) {
    if !needs_cluster_ip(svc) {
        return;
    }
    if spec_str(svc, "ipFamilyPolicy") == Some("RequireDualStack") {
        causes.push((
            "spec.ipFamilyPolicy".into(),
            "Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services".into(),
        ));
    }
    for (i, family) in svc.pointer("/spec/ipFamilies").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if family.as_str() != Some("IPv4") {
            let f = family.as_str().map(String::from).unwrap_or_else(|| family.to_string());
            causes.push((
                format!("spec.ipFamilies[{i}]"),
                format!("Invalid value: \"{f}\": not configured on this cluster"),
            ));
        }
    }
    let ips = svc.pointer("/spec/clusterIPs").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
    if ips > 1 {
        causes.push((
            "spec.clusterIPs".into(),
            "Invalid value: more than one IP: this cluster is not configured for dual-stack services".into(),
        ));
    }
    if let (Some(a), Some(b)) = (spec_str(svc, "clusterIP"), svc.pointer("/spec/clusterIPs/0").and_then(Value::as_str))
    {
        if !a.is_empty() && a != b {
            causes
                .push(("spec.clusterIPs[0]".into(), format!("Invalid value: \"{b}\": must match `clusterIP` \"{a}\"")));
        }
    }
}

#[cfg(test)]
mod tests;
