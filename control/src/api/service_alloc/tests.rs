#![allow(clippy::unwrap_used)]

use super::*;

fn alloc() -> ServiceAllocator {
    ServiceAllocator::new(ServiceNetwork { cidr: "10.9.0.0/29".parse().unwrap(), node_ports: 30000..=30003 })
}

fn svc(spec: Value) -> Value {
    json!({"metadata": {"name": "s", "namespace": "d"}, "spec": spec})
}

fn messages(causes: &[Cause]) -> Vec<String> {
    causes.iter().map(|(f, m)| format!("{f}: {m}")).collect()
}

#[test]
fn create_fills_cluster_ip_and_families() {
    let a = alloc();
    let mut s = svc(json!({"ports": [{"port": 80}]}));
    a.allocate_create(&mut s).unwrap().commit();
    let ip: Ipv4Addr = s["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
    assert!(a.network().cidr.contains(&ip) && ip != a.kubernetes_ip(), "{ip}");
    assert_eq!(s["spec"]["clusterIPs"], json!([ip.to_string()]));
    assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(s["spec"]["ipFamilyPolicy"], "SingleStack");
    assert!(s["spec"]["ports"][0].get("nodePort").is_none());

    // Headless and ExternalName take nothing.
    let mut headless = svc(json!({"clusterIP": "None", "ports": [{"port": 80}]}));
    a.allocate_create(&mut headless).unwrap().commit();
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    let mut ext = svc(json!({"type": "ExternalName", "externalName": "example.com"}));
    a.allocate_create(&mut ext).unwrap().commit();
    assert!(ext["spec"].get("clusterIP").is_none() && ext["spec"].get("ipFamilies").is_none());
}

#[test]
fn explicit_ips_checked_and_failed_writes_release() {
    let a = alloc();
    let mut out = svc(json!({"clusterIP": "10.0.0.5", "ports": [{"port": 80}]}));
    let causes = a.allocate_create(&mut out).err().unwrap();
    assert_eq!(
        messages(&causes),
        ["spec.clusterIPs[0]: Invalid value: \"10.0.0.5\": provided IP is not in the valid range. The range of valid IPs is 10.9.0.0/29"]
    );
    let mut first = svc(json!({"clusterIP": "10.9.0.4", "ports": [{"port": 80}]}));
    let r = a.allocate_create(&mut first).unwrap();
    let mut dup = svc(json!({"clusterIP": "10.9.0.4", "ports": [{"port": 80}]}));
    let causes = a.allocate_create(&mut dup).err().unwrap();
    assert_eq!(
        messages(&causes),
        ["spec.clusterIPs[0]: Invalid value: \"10.9.0.4\": provided IP is already allocated"]
    );
    // The first create's store write failed: the address is free again.
    drop(r);
    a.allocate_create(&mut dup).unwrap().commit();
    let mut bad = svc(json!({"clusterIP": "abc", "ports": [{"port": 80}]}));
    assert!(messages(&a.allocate_create(&mut bad).err().unwrap())[0].contains("must be a valid IP address"));
}

#[test]
fn exhaustion_is_a_cause_not_a_panic() {
    let a = alloc();
    for _ in 0..5 {
        a.allocate_create(&mut svc(json!({"ports": [{"port": 80}]}))).unwrap().commit();
    }
    let causes = a.allocate_create(&mut svc(json!({"ports": [{"port": 80}]}))).err().unwrap();
    assert!(messages(&causes)[0].contains("range is full"), "{causes:?}");
    // The first usable address is still there for the `kubernetes` Service.
    a.allocate_create(&mut svc(json!({"clusterIP": "10.9.0.1", "ports": [{"port": 443}]}))).unwrap().commit();
}

#[test]
fn node_ports_allocated_checked_kept_and_released() {
    let a = alloc();
    let mut np = svc(
        json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": 30001}]}),
    );
    a.allocate_create(&mut np).unwrap().commit();
    let first = np["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=30003).contains(&first) && first != 30001);

    let mut dup = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}));
    assert_eq!(
        messages(&a.allocate_create(&mut dup).err().unwrap()),
        ["spec.ports[0].nodePort: Invalid value: 30001: provided port is already allocated"]
    );
    let mut out = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}));
    assert_eq!(
        messages(&a.allocate_create(&mut out).err().unwrap()),
        ["spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-30003"]
    );
    let mut forbidden = svc(json!({"ports": [{"port": 80, "nodePort": 30002}]}));
    assert!(messages(&a.allocate_create(&mut forbidden).err().unwrap())[0].contains("Forbidden"));

    // An update that leaves out the ClusterIP and NodePorts keeps them.
    let mut replaced =
        svc(json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}));
    patch_allocated(&np, &mut replaced);
    a.allocate_update(&np, &mut replaced).unwrap().commit();
    assert_eq!(replaced["spec"]["clusterIP"], np["spec"]["clusterIP"]);
    assert_eq!(replaced["spec"]["ports"], np["spec"]["ports"]);
    // The ClusterIP is immutable.
    let mut moved = replaced.clone();
    // Any other free address (the allocated one is random).
    let other = if replaced["spec"]["clusterIP"] == "10.9.0.6" { "10.9.0.5" } else { "10.9.0.6" };
    moved["spec"]["clusterIP"] = json!(other);
    moved["spec"]["clusterIPs"] = json!([other]);
    let causes = a.allocate_update(&replaced, &mut moved).err().unwrap();
    assert!(messages(&causes).iter().any(|m| m.ends_with("field is immutable")), "{causes:?}");

    // Back to ClusterIP: the ports go and are free again.
    let mut plain = replaced.clone();
    plain["spec"]["type"] = json!("ClusterIP");
    a.allocate_update(&replaced, &mut plain).unwrap().commit();
    assert!(plain["spec"]["ports"][0].get("nodePort").is_none());
    let mut again = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}));
    a.allocate_create(&mut again).unwrap().commit();

    // Deleting frees everything.
    a.release(&again);
    a.allocate_create(&mut svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]})))
        .unwrap()
        .commit();
}

#[test]
fn load_balancers_get_node_ports_unless_told_not_to() {
    let a = alloc();
    let mut lb = svc(json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}));
    a.allocate_create(&mut lb).unwrap().commit();
    assert!(lb["spec"]["ports"][0]["nodePort"].is_i64());
    assert!(lb["spec"]["healthCheckNodePort"].is_i64());
    let mut none =
        svc(json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}));
    a.allocate_create(&mut none).unwrap().commit();
    assert!(none["spec"]["ports"][0].get("nodePort").is_none());
}

#[test]
fn rebuild_from_stored_services() {
    let a = alloc();
    let stored = [
        svc(json!({"clusterIP": "10.9.0.2", "clusterIPs": ["10.9.0.2"], "ports": [{"port": 80}]})),
        svc(json!({"type": "NodePort", "clusterIP": "10.9.0.3", "ports": [{"port": 80, "nodePort": 30000}]})),
        // Outside the range (the CIDR changed): left out, no panic.
        svc(json!({"clusterIP": "10.0.0.9", "ports": [{"port": 80}]})),
    ];
    a.rebuild(stored.iter());
    let mut dup = svc(json!({"clusterIP": "10.9.0.3", "ports": [{"port": 80}]}));
    assert!(a.allocate_create(&mut dup).is_err());
    let mut dup = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30000}]}));
    assert!(a.allocate_create(&mut dup).is_err());
    a.rebuild(std::iter::empty());
    a.allocate_create(&mut svc(json!({"clusterIP": "10.9.0.3", "ports": [{"port": 80}]}))).unwrap().commit();
}

#[test]
fn concurrent_creates_never_share_an_address() {
    let a = std::sync::Arc::new(ServiceAllocator::new(ServiceNetwork {
        cidr: "10.9.0.0/24".parse().unwrap(),
        node_ports: 30000..=30300,
    }));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let a = std::sync::Arc::clone(&a);
            std::thread::spawn(move || {
                (0..30)
                    .map(|_| {
                        let mut s = svc(json!({"type": "NodePort", "ports": [{"port": 80}]}));
                        a.allocate_create(&mut s).unwrap().commit();
                        (
                            s["spec"]["clusterIP"].as_str().unwrap().to_string(),
                            s["spec"]["ports"][0]["nodePort"].as_i64().unwrap(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let all: Vec<(String, i64)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let ips: BTreeSet<&String> = all.iter().map(|(ip, _)| ip).collect();
    let ports: BTreeSet<i64> = all.iter().map(|(_, p)| *p).collect();
    assert_eq!((ips.len(), ports.len()), (240, 240));
}
