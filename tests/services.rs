//! Services end to end with the real kubectl: ClusterIPs and NodePorts allocated at admission
//! with kube-apiserver's errors, the `kubernetes` Service, and endpoints of ready pods.

mod common;

use std::net::Ipv4Addr;

use common::{eventually, Cluster};
use serde_json::Value;

fn service(name: &str, extra_spec: &str, ports: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n{extra_spec}  ports:\n{ports}")
}

const PORT_80: &str = "  - {name: http, port: 80, targetPort: 8080}\n";

fn spec(c: &Cluster, name: &str) -> Value {
    c.get_json(&["svc", name])["spec"].clone()
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().expect("an IPv4 ClusterIP");
    let (net, len) = cidr.split_once('/').expect("cidr");
    let (net, len): (Ipv4Addr, u32) = (net.parse().expect("net"), len.parse().expect("len"));
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

#[test]
fn cluster_ips_and_node_ports_are_allocated_checked_kept_and_released() {
    let c = Cluster::start();
    let cidr = "10.43.0.0/16";

    // A ClusterIP from the CIDR, with the families filled in, stable across re-applies.
    let web = service("web", "", PORT_80);
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&web));
    let s = spec(&c, "web");
    let ip = s["clusterIP"].as_str().expect("clusterIP").to_string();
    assert!(in_cidr(&ip, cidr) && ip != "10.43.0.1", "{s}");
    assert_eq!(s["clusterIPs"], serde_json::json!([ip]));
    assert_eq!((s["ipFamilies"][0].as_str(), s["ipFamilyPolicy"].as_str()), (Some("IPv4"), Some("SingleStack")));
    assert_eq!((s["internalTrafficPolicy"].as_str(), s["sessionAffinity"].as_str()), (Some("Cluster"), Some("None")));
    let changed = service("web", "", "  - {name: http, port: 80, targetPort: 9090}\n");
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&changed));
    c.kubectl_stdin(&["replace", "-f", "-"], Some(&web));
    assert_eq!(spec(&c, "web")["clusterIP"].as_str(), Some(ip.as_str()), "kept across apply and replace");
    let table = c.kubectl(&["get", "svc", "web"]);
    assert!(table.contains(&ip) && table.contains("80/TCP"), "{table}");

    // Explicit addresses: out of range, taken, and immutable.
    let out = service("out", "  clusterIP: 10.0.0.5\n", PORT_80);
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&out));
    assert!(
        err.contains("spec.clusterIPs[0]: Invalid value: \"10.0.0.5\": provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16"),
        "{err}"
    );
    let dup = service("dup", &format!("  clusterIP: {ip}\n"), PORT_80);
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&dup));
    assert!(err.contains(&format!("Invalid value: \"{ip}\": provided IP is already allocated")), "{err}");
    let moved = service("web", "  clusterIP: 10.43.7.7\n", PORT_80);
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&moved));
    assert!(err.contains("field is immutable"), "{err}");
    let fixed = service("fixed", "  clusterIP: 10.43.7.7\n", PORT_80);
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&fixed));
    assert_eq!(spec(&c, "fixed")["clusterIP"].as_str(), Some("10.43.7.7"));

    // Headless and ExternalName.
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&service("headless", "  clusterIP: None\n", PORT_80)));
    assert_eq!(spec(&c, "headless")["clusterIPs"], serde_json::json!(["None"]));
    let ext = "apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\nspec:\n  type: ExternalName\n  externalName: example.com\n";
    c.kubectl_stdin(&["apply", "-f", "-"], Some(ext));
    let s = spec(&c, "ext");
    assert!(s.get("clusterIP").is_none() && s.get("ipFamilies").is_none(), "{s}");

    // NodePorts: allocated, an explicit one checked for range and conflicts, kept on apply.
    let np = service(
        "np",
        "  type: NodePort\n",
        "  - {name: http, port: 80, targetPort: 8080}\n  - {name: admin, port: 81, nodePort: 30081}\n",
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&np));
    let s = spec(&c, "np");
    let first = s["ports"][0]["nodePort"].as_i64().expect("a nodePort");
    assert!((30000..=32767).contains(&first) && first != 30081, "{s}");
    assert_eq!(s["ports"][1]["nodePort"].as_i64(), Some(30081));
    assert_eq!(s["externalTrafficPolicy"].as_str(), Some("Cluster"));
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&np));
    assert_eq!(spec(&c, "np")["ports"][0]["nodePort"].as_i64(), Some(first), "kept across apply");
    let table = c.kubectl(&["get", "svc", "np"]);
    assert!(table.contains(&format!("80:{first}/TCP,81:30081/TCP")), "{table}");
    let taken = service("taken", "  type: NodePort\n", "  - {port: 80, nodePort: 30081}\n");
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&taken));
    assert!(err.contains("spec.ports[0].nodePort: Invalid value: 30081: provided port is already allocated"), "{err}");
    let range = service("range", "  type: NodePort\n", "  - {port: 80, nodePort: 8080}\n");
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&range));
    assert!(
        err.contains("spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767"),
        "{err}"
    );
    let lb = service("lb", "  type: LoadBalancer\n", PORT_80);
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&lb));
    let s = spec(&c, "lb");
    assert!(s["ports"][0]["nodePort"].is_i64() && s["allocateLoadBalancerNodePorts"] == true, "{s}");

    // Back to ClusterIP frees the ports; deleting frees the address.
    c.kubectl(&["patch", "svc", "np", "-p", r#"{"spec":{"type":"ClusterIP"}}"#]);
    assert!(spec(&c, "np")["ports"][1].get("nodePort").is_none());
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&taken));
    c.kubectl(&["delete", "svc", "web"]);
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&dup));

    // A restart rebuilds the allocations from the store.
    let mut c = c;
    c.kill9();
    c.spawn();
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&service("again", &format!("  clusterIP: {ip}\n"), PORT_80)));
    assert!(err.contains("provided IP is already allocated"), "{err}");
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&range.replace("8080", "30081")));
    assert!(err.contains("provided port is already allocated"), "{err}");
}

#[test]
fn the_kubernetes_service_points_at_the_api_server() {
    let c = Cluster::start();
    eventually("the kubernetes Service", std::time::Duration::from_secs(10), || {
        c.kubectl_output(&["get", "svc", "kubernetes"], None).status.success()
    });
    let s = spec(&c, "kubernetes");
    assert_eq!(s["clusterIP"].as_str(), Some("10.43.0.1"), "{s}");
    assert_eq!((s["ports"][0]["name"].as_str(), s["ports"][0]["port"].as_i64()), (Some("https"), Some(443)));
    assert_eq!(s["ports"][0]["targetPort"].as_i64(), Some(i64::from(c.port)));
    let ep = c.get_json(&["endpoints", "kubernetes"]);
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"].as_str(), Some("127.0.0.1"), "{ep}");
    assert_eq!(ep["subsets"][0]["ports"][0]["port"].as_i64(), Some(i64::from(c.port)));
    let slice = c.get_json(&["endpointslices", "kubernetes"]);
    assert_eq!(slice["endpoints"][0]["addresses"][0].as_str(), Some("127.0.0.1"), "{slice}");
    // Deleted, it comes back at the next start.
    c.kubectl(&["delete", "svc", "kubernetes"]);
    let mut c = c;
    c.kill9();
    c.spawn();
    assert_eq!(spec(&c, "kubernetes")["clusterIP"].as_str(), Some("10.43.0.1"));
}

fn web_deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: web\n        image: {image}\n        ports:\n        - {{name: http, containerPort: 8080}}\n        readinessProbe:\n          httpGet: {{path: /healthz, port: 8080}}\n          periodSeconds: 1\n"
    )
}

/// The endpoints of the slices the controller keeps for `svc`: (ip, ready, pod name).
fn slice_endpoints(c: &Cluster, svc: &str) -> Vec<(String, bool, String)> {
    let list = c.get_json(&["endpointslices", "-l", &format!("kubernetes.io/service-name={svc}")]);
    let mut out: Vec<(String, bool, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["addresses"][0].as_str().unwrap_or_default().to_string(),
                e["conditions"]["ready"] == true,
                e["targetRef"]["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pod_ips(c: &Cluster, app: &str) -> Vec<(String, String)> {
    let list = c.get_json(&["pods", "-l", &format!("app={app}")]);
    let mut out: Vec<(String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| Some((p["status"]["podIP"].as_str()?.to_string(), p["metadata"]["name"].as_str()?.to_string())))
        .collect();
    out.sort();
    out
}

#[test]
fn endpoints_follow_ready_pods_by_selector_and_named_ports() {
    let c = Cluster::with_node();
    let registry = common::node::Registry::start();
    let image = registry.push("hello-http", "1");
    let timeout = std::time::Duration::from_secs(120);

    c.kubectl_stdin(&["apply", "-f", "-"], Some(&web_deployment(&image)));
    let svc = service(
        "web",
        "",
        "  - {name: named, port: 80, targetPort: http}\n  - {name: missing, port: 81, targetPort: nope}\n",
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&svc));
    let out = c.kubectl(&["rollout", "status", "deploy/web", "--timeout=180s"]);
    assert!(out.contains("successfully rolled out"), "{out}");

    // The three ready pods, on the port the name resolves to; the name no pod has is left out.
    eventually("3 ready endpoints in the slices", timeout, || {
        let pods = pod_ips(&c, "web");
        let eps = slice_endpoints(&c, "web");
        pods.len() == 3 && eps == pods.iter().map(|(ip, n)| (ip.clone(), true, n.clone())).collect::<Vec<_>>()
    });
    let slices = c.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
    let slice = &slices["items"][0];
    assert_eq!(slice["ports"], serde_json::json!([{"name": "named", "port": 8080, "protocol": "TCP"}]), "{slice}");
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["name"], "web");
    assert_eq!(slice["endpoints"][0]["nodeName"].as_str(), Some(c.node_name().as_str()));
    let ep = c.get_json(&["endpoints", "web"]);
    let ips: Vec<&str> =
        ep["subsets"][0]["addresses"].as_array().into_iter().flatten().filter_map(|a| a["ip"].as_str()).collect();
    assert_eq!(ips.len(), 3, "{ep}");
    assert_eq!(ep["subsets"][0]["ports"], serde_json::json!([{"name": "named", "port": 8080, "protocol": "TCP"}]));
    let wide = c.kubectl(&["get", "endpointslices", "-o", "wide"]);
    assert!(wide.contains("IPv4") && wide.contains("8080"), "{wide}");

    // A deleted pod leaves the endpoints; its replacement joins.
    let victim = pod_ips(&c, "web")[0].clone();
    c.kubectl(&["delete", "pod", &victim.1, "--wait=false"]);
    eventually("the deleted pod out of the Endpoints", timeout, || {
        let ep = c.get_json(&["endpoints", "web"]);
        !ep.to_string().contains(&format!("\"{}\"", victim.0))
    });
    eventually("3 ready endpoints again, without the deleted pod", timeout, || {
        let eps = slice_endpoints(&c, "web");
        eps.len() == 3 && eps.iter().all(|(_, ready, name)| *ready && *name != victim.1)
    });
    // From here nothing about "web" changes but its Service's annotations (and whatever the pods'
    // status rewrites): its endpoint objects must not be written again.
    let rv_of = |kind: &str, name: &str| c.get_json(&[kind, name])["metadata"]["resourceVersion"].clone();
    let slices = c.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
    let slice_name = slices["items"][0]["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let (ep_rv, slice_rv) = (rv_of("endpoints", "web"), rv_of("endpointslices", &slice_name));
    c.kubectl(&["annotate", "svc", "web", "touched=yes"]);

    // A pod whose readiness probe fails is listed not ready.
    let slow = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\n  labels: {{app: slow}}\nspec:\n  containers:\n  - name: web\n    image: {image}\n    ports:\n    - {{name: http, containerPort: 8080}}\n    readinessProbe:\n      httpGet: {{path: /status/500, port: 8080}}\n      periodSeconds: 1\n"
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&slow));
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&service("slow", "", "  - {port: 80, targetPort: http}\n")));
    eventually("the unready pod listed not ready", timeout, || {
        let eps = slice_endpoints(&c, "slow");
        let ep = c.get_json(&["endpoints", "slow"]);
        eps.len() == 1
            && !eps[0].1
            && ep["subsets"][0]["notReadyAddresses"][0]["ip"].as_str() == Some(eps[0].0.as_str())
    });

    // A Service without a selector keeps its hand-made endpoints.
    let manual = "apiVersion: v1\nkind: Service\nmetadata:\n  name: manual\nspec:\n  ports:\n  - {port: 80}\n---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: manual\nsubsets:\n- addresses: [{ip: 10.1.2.3}]\n  ports: [{port: 80}]\n";
    c.kubectl_stdin(&["apply", "-f", "-"], Some(manual));
    c.kubectl(&["annotate", "svc", "manual", "touched=yes"]);

    // Deleting the Service takes its endpoints with it.
    c.kubectl(&["delete", "svc", "slow"]);
    eventually("the slow Service's endpoints gone", timeout, || {
        slice_endpoints(&c, "slow").is_empty()
            && !c.kubectl_output(&["get", "endpoints", "slow"], None).status.success()
    });
    // The changes made before that deletion have been handled by now.
    let ep = c.get_json(&["endpoints", "manual"]);
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.1.2.3", "{ep}");
    assert!(slice_endpoints(&c, "manual").is_empty());
    assert_eq!((rv_of("endpoints", "web"), rv_of("endpointslices", &slice_name)), (ep_rv, slice_rv), "rewritten");
    let table = c.kubectl(&["get", "endpoints", "web"]);
    assert!(table.contains(":8080"), "{table}");
}
