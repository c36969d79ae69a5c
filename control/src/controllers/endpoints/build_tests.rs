#![allow(clippy::unwrap_used)]

use super::*;

fn pod(name: &str, ip: &str, ready: bool, ports: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "d", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "ports": ports}]},
        "status": {"podIP": ip, "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

/// The builders over pods given as JSON.
fn slices_of(svc: &Value, pods: &[&Value]) -> Vec<Value> {
    let views: Vec<PodEndpoint> = pods.iter().map(|p| PodEndpoint::of(p)).collect();
    desired_slices(svc, &views.iter().collect::<Vec<_>>())
}

fn endpoints_of(svc: &Value, pods: &[&Value]) -> Value {
    let views: Vec<PodEndpoint> = pods.iter().map(|p| PodEndpoint::of(p)).collect();
    desired_endpoints(svc, &views.iter().collect::<Vec<_>>())
}

#[test]
fn a_pod_is_read_once_into_what_the_endpoints_need() {
    let mut p = pod("a", "10.1.0.2", true, json!([{"name": "web", "containerPort": 8080}, {"containerPort": 9}]));
    p["spec"]["hostname"] = json!("a-host");
    let view = PodEndpoint::of(&p);
    assert_eq!(
        (view.name.as_str(), view.namespace.as_str(), view.uid.as_str(), view.ip.as_deref()),
        ("a", "d", "uid-a", Some("10.1.0.2"))
    );
    assert!(view.ready && !view.terminating && !view.terminal);
    assert_eq!((view.node.as_deref(), view.hostname.as_deref()), (Some("n1"), Some("a-host")));
    assert_eq!(view.named_ports, vec![("web".to_string(), "TCP".to_string(), 8080)], "unnamed ports are not kept");
    // An address that is not IPv4 is none.
    assert_eq!(PodEndpoint::of(&pod("b", "fd00::1", true, json!([]))).ip, None);
}

fn svc(ports: Value) -> Value {
    json!({"metadata": {"name": "web", "namespace": "d", "uid": "svc-uid", "labels": {"team": "a"}},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.43.0.9", "ports": ports}})
}

#[test]
fn slices_carry_conditions_ports_and_owner() {
    let s = svc(json!([{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]));
    let named = json!([{"name": "web", "containerPort": 8080, "protocol": "TCP"}]);
    let a = pod("a", "10.1.0.2", true, named.clone());
    let b = pod("b", "10.1.0.3", false, named.clone());
    let mut c = pod("c", "10.1.0.4", true, named.clone());
    c["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let no_ip = pod("d", "", true, named.clone());
    let mut done = pod("e", "10.1.0.6", false, named);
    done["status"]["phase"] = json!("Succeeded");
    let slices = slices_of(&s, &[&a, &b, &c, &no_ip, &done]);
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
    assert_eq!(slice["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
    assert_eq!(slice["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
    assert_eq!(slice["metadata"]["labels"]["team"], "a");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "svc-uid");
    let conds: Vec<(&str, &Value)> = slice["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["addresses"][0].as_str().unwrap(), &e["conditions"]))
        .collect();
    assert_eq!(
        conds,
        [
            ("10.1.0.2", &json!({"ready": true, "serving": true, "terminating": false})),
            ("10.1.0.3", &json!({"ready": false, "serving": false, "terminating": false})),
            ("10.1.0.4", &json!({"ready": false, "serving": true, "terminating": true})),
        ]
    );
    assert_eq!(slice["endpoints"][0]["targetRef"]["name"], "a");
    assert_eq!(slice["endpoints"][0]["nodeName"], "n1");
    // Same inputs, same names (writes happen only on change).
    assert_eq!(slices_of(&s, &[&a, &b, &c])[0]["metadata"]["name"], slice["metadata"]["name"]);

    let ep = endpoints_of(&s, &[&a, &b, &c, &no_ip, &done]);
    assert_eq!(ep["metadata"]["name"], "web");
    let subset = &ep["subsets"][0];
    assert_eq!(subset["addresses"].as_array().unwrap().len(), 1);
    assert_eq!(subset["addresses"][0]["ip"], "10.1.0.2");
    assert_eq!(subset["notReadyAddresses"][0]["ip"], "10.1.0.3");
    assert_eq!(subset["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
}

#[test]
fn named_ports_a_pod_lacks_split_or_skip_it() {
    let s = svc(json!([{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]));
    let with = pod("a", "10.1.0.2", true, json!([{"name": "web", "containerPort": 8080}]));
    let other = pod("b", "10.1.0.3", true, json!([{"name": "web", "containerPort": 9090}]));
    let without = pod("c", "10.1.0.4", true, json!([]));
    let slices = slices_of(&s, &[&with, &other, &without]);
    assert_eq!(slices.len(), 3, "one slice per port set: {slices:#?}");
    let names: std::collections::BTreeSet<&str> =
        slices.iter().map(|s| s["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3);
    let ep = endpoints_of(&s, &[&with, &other, &without]);
    let subsets = ep["subsets"].as_array().unwrap();
    assert_eq!(subsets.len(), 2, "the pod without the port is left out: {ep:#}");
}

#[test]
fn publish_not_ready_empty_and_chunked() {
    let mut s = svc(json!([{"port": 80, "targetPort": 8080}]));
    s["spec"]["publishNotReadyAddresses"] = json!(true);
    let b = pod("b", "10.1.0.3", false, json!([]));
    let slice = &slices_of(&s, &[&b])[0];
    assert_eq!(slice["endpoints"][0]["conditions"], json!({"ready": true, "serving": false, "terminating": false}));
    assert_eq!(endpoints_of(&s, &[&b])["subsets"][0]["addresses"][0]["ip"], "10.1.0.3");

    let empty = slices_of(&s, &[]);
    assert_eq!(empty.len(), 1);
    assert_eq!(empty[0]["endpoints"], json!([]));
    assert_eq!(endpoints_of(&s, &[])["subsets"], json!([]));

    let pods: Vec<Value> = (0..250)
        .map(|i| pod(&format!("p{i:03}"), &format!("10.1.{}.{}", i / 200, i % 200 + 1), true, json!([])))
        .collect();
    let refs: Vec<&Value> = pods.iter().collect();
    let slices = slices_of(&s, &refs);
    let sizes: Vec<usize> = slices.iter().map(|s| s["endpoints"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
}
