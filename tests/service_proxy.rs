//! The service proxy end to end: real kubectl, real Wasm pods (`hello-http` from a loopback
//! registry) and the node agent's real nftables table. Services here have no selector and
//! hand-made EndpointSlices (legitimate Kubernetes usage), with explicit ClusterIPs from the
//! cluster's own `--service-cidr` and NodePorts derived from a free port, so parallel tests never
//! share an address or a port.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::node::Registry;
use common::{eventually, free_port, Cluster};
use serde_json::Value;

/// Deletes a node's table when the test ends, also when it fails (the agent removes it on a
/// clean stop; this covers a crashed one).
struct TableGuard(String);

impl Drop for TableGuard {
    fn drop(&mut self) {
        let _ = Command::new("nft").args(["delete", "table", "ip", &self.0]).output();
    }
}

/// The proxy's table of `cluster`'s node.
fn table_of(cluster: &Cluster) -> TableGuard {
    TableGuard(format!("skiff-{}", cluster.node_name()))
}

/// `nft list table ip <name>`, or `None` when there is no such table.
fn list_table(name: &str) -> Option<String> {
    let out = Command::new("nft").args(["list", "table", "ip", name]).output().expect("nft");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Address `host` of the cluster's service CIDR (a per-test /24).
fn service_ip(cluster: &Cluster, host: u8) -> String {
    let at = cluster.server_args.iter().position(|a| a == "--service-cidr").expect("a service CIDR");
    let cidr = &cluster.server_args[at + 1];
    let prefix = cidr.rsplit_once('.').expect("an IPv4 CIDR").0;
    format!("{prefix}.{host}")
}

/// A NodePort in Kubernetes' default range, different between parallel tests.
fn node_port() -> u16 {
    30000 + free_port() % 2768
}

/// `curl -s` with a short timeout: the body, or the curl exit code (7: connection refused).
fn curl(url: &str) -> Result<String, i32> {
    let out = Command::new("curl").args(["-s", "-m", "3", url]).output().expect("curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(out.status.code().unwrap_or(-1))
    }
}

fn pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: px}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: {image}\n    env:\n    - {{name: WHO, value: {name}}}\n    ports:\n    - containerPort: 8080\n    readinessProbe:\n      httpGet: {{path: /healthz, port: 8080}}\n      periodSeconds: 1\n"
    )
}

/// Starts `names` as pods and returns their IPs once they are Ready.
fn ready_pods(cluster: &Cluster, image: &str, names: &[&str]) -> Vec<String> {
    let manifests: Vec<String> = names.iter().map(|n| pod(n, image)).collect();
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifests.join("---\n")));
    let mut args = vec!["wait", "--for=condition=Ready", "--timeout=180s"];
    let pods: Vec<String> = names.iter().map(|n| format!("pod/{n}")).collect();
    args.extend(pods.iter().map(String::as_str));
    cluster.kubectl(&args);
    names
        .iter()
        .map(|n| cluster.get_json(&["pod", n])["status"]["podIP"].as_str().expect("a pod IP").to_string())
        .collect()
}

fn service(name: &str, ty: &str, cluster_ip: &str, port: u16, node_port: Option<u16>) -> String {
    let node_port = node_port.map(|p| format!(", nodePort: {p}")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: {ty}\n  clusterIP: {cluster_ip}\n  ports:\n  - {{port: {port}, targetPort: 8080, protocol: TCP{node_port}}}\n"
    )
}

/// A hand-made EndpointSlice of service `service`: (ip, ready) pairs on the cluster's node.
fn slice(cluster: &Cluster, service: &str, endpoints: &[(&str, bool)]) -> String {
    let node = cluster.node_name();
    let eps: String = endpoints
        .iter()
        .map(|(ip, ready)| format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: {ready}}}\n  nodeName: {node}\n"))
        .collect();
    let eps = if eps.is_empty() { "[]\n".to_string() } else { format!("\n{eps}") };
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-manual\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports:\n- {{port: 8080, protocol: TCP}}\nendpoints: {eps}"
    )
}

/// Waits until the table holds `what` (e.g. `10.200.1.10 . tcp . 80 . 0 : `, the first endpoint of
/// a service address in the `ip-endpoints-tcp` map), so no request to a
/// service address is sent before the node handles it.
fn wait_rule(table: &TableGuard, what: &str) {
    eventually(&format!("{what} in table {}", table.0), Duration::from_secs(30), || {
        list_table(&table.0).is_some_and(|t| t.contains(what))
    });
}

/// Which pods answer `requests` requests to `url` (`/env/WHO` names the pod).
fn answers(url: &str, requests: usize) -> Vec<String> {
    let mut seen: Vec<String> =
        (0..requests).map(|_| curl(url).unwrap_or_else(|code| format!("curl exit {code}"))).collect();
    seen.sort();
    seen.dedup();
    seen
}

#[test]
fn cluster_ip_and_node_port_spread_over_ready_endpoints_and_refuse_without_any() {
    let cluster = Cluster::with_node();
    let table = table_of(&cluster);
    let registry = Registry::start();
    let image = registry.push("hello-http", "1");
    let ips = ready_pods(&cluster, &image, &["px-0", "px-1", "px-2"]);
    let (vip, empty_vip, np) = (service_ip(&cluster, 30), service_ip(&cluster, 31), node_port());

    let manifests = [
        service("web", "NodePort", &vip, 80, Some(np)),
        slice(&cluster, "web", &[(&ips[0], true), (&ips[1], true), (&ips[2], true)]),
        service("nothing", "ClusterIP", &empty_vip, 80, None),
    ];
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifests.join("---\n")));
    wait_rule(&table, &format!("{vip} . tcp . 80 . 2 : "));

    // ClusterIP from the node: load spreads over the three endpoints.
    let url = format!("http://{vip}/env/WHO");
    assert_eq!(answers(&url, 45), vec!["px-0", "px-1", "px-2"], "{}", list_table(&table.0).unwrap_or_default());
    // NodePort on the node's address (127.0.0.1).
    let via_node_port = curl(&format!("http://127.0.0.1:{np}/env/WHO"));
    assert!(via_node_port.as_deref().is_ok_and(|w| w.starts_with("px-")), "{via_node_port:?}");

    // A service with no endpoint refuses at once instead of hanging.
    wait_rule(&table, &format!("{empty_vip} . tcp . 80 : goto reject-chain"));
    let started = Instant::now();
    assert_eq!(curl(&format!("http://{empty_vip}/")), Err(7), "connection refused expected");
    assert!(started.elapsed() < Duration::from_secs(2), "refusal took {:?}", started.elapsed());

    // An endpoint removed from the slice gets no more traffic.
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&slice(&cluster, "web", &[(&ips[1], true), (&ips[2], true)])));
    eventually("px-0 out of the rules", Duration::from_secs(30), || {
        list_table(&table.0).is_some_and(|t| !t.contains(&format!(": {} . 8080", ips[0])))
    });
    assert_eq!(answers(&url, 30), vec!["px-1", "px-2"]);

    // An endpoint turning unready is removed too.
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&slice(&cluster, "web", &[(&ips[1], false), (&ips[2], true)])));
    eventually("px-1 out of the rules", Duration::from_secs(30), || {
        list_table(&table.0).is_some_and(|t| !t.contains(&format!(": {} . 8080", ips[1])))
    });
    assert_eq!(answers(&url, 15), vec!["px-2"]);
    assert_eq!(answers(&format!("http://127.0.0.1:{np}/env/WHO"), 5), vec!["px-2"]);

    // The last endpoint unready: the service now refuses.
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&slice(&cluster, "web", &[(&ips[1], false), (&ips[2], false)])));
    wait_rule(&table, &format!("{vip} . tcp . 80 : goto reject-chain"));
    assert_eq!(curl(&url), Err(7));
    assert_eq!(curl(&format!("http://127.0.0.1:{np}/")), Err(7));

    // A deleted service leaves no rule behind.
    cluster.kubectl(&["delete", "svc", "web", "nothing"]);
    eventually("the services' rules gone", Duration::from_secs(30), || {
        list_table(&table.0).is_some_and(|t| {
            !t.contains(&vip)
                && !t.contains(&empty_vip)
                && !t.contains(&format!("tcp . {np}"))
                && !t.contains("svc-default/web/")
                && !t.contains("svc-default/nothing/")
        })
    });

    // The table goes with the agent.
    assert!(list_table(&table.0).is_some());
    drop(cluster);
    assert_eq!(list_table(&table.0), None, "the table outlived the agent");
}

fn load_balancer_ingress(cluster: &Cluster, name: &str) -> Vec<String> {
    let svc = cluster.get_json(&["svc", name]);
    svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .map(|i| i.iter().filter_map(|i| i["ip"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn events_of(cluster: &Cluster, name: &str) -> Vec<Value> {
    let events = cluster.get_json(&["events", "--field-selector", &format!("involvedObject.name={name}")]);
    events["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_load_balancer_is_served_on_the_node_address_and_waits_for_a_taken_port() {
    let cluster = Cluster::with_node();
    let table = table_of(&cluster);
    let registry = Registry::start();
    let image = registry.push("hello-http", "1");
    let ips = ready_pods(&cluster, &image, &["px-lb"]);
    let (vip, port) = (service_ip(&cluster, 20), free_port());
    let manifests = [service("edge", "LoadBalancer", &vip, port, None), slice(&cluster, "edge", &[(&ips[0], true)])];
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifests.join("---\n")));
    eventually("the node address as the load balancer's ingress", Duration::from_secs(30), || {
        load_balancer_ingress(&cluster, "edge") == vec!["127.0.0.1".to_string()]
    });
    let listing = cluster.kubectl(&["get", "svc", "edge"]);
    assert!(listing.contains("LoadBalancer") && listing.contains("127.0.0.1"), "EXTERNAL-IP: {listing}");
    wait_rule(&table, &format!("127.0.0.1 . tcp . {port} . 0 : "));
    assert_eq!(curl(&format!("http://127.0.0.1:{port}/env/WHO")), Ok("px-lb".to_string()));

    // A port something already listens on: Pending with a Warning event, served once it is free.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = holder.local_addr().expect("addr").port();
    let manifests = [
        service("taken", "LoadBalancer", &service_ip(&cluster, 21), taken, None),
        slice(&cluster, "taken", &[(&ips[0], true)]),
    ];
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&manifests.join("---\n")));
    eventually("a SyncLoadBalancerFailed event", Duration::from_secs(30), || {
        events_of(&cluster, "taken").iter().any(|e| {
            e["type"] == "Warning"
                && e["reason"] == "SyncLoadBalancerFailed"
                && e["message"].as_str().is_some_and(|m| m.contains(&format!("port {taken}/TCP is already in use")))
        })
    });
    assert!(load_balancer_ingress(&cluster, "taken").is_empty(), "a taken port got an ingress");
    let listing = list_table(&table.0).unwrap_or_default();
    assert!(!listing.contains(&format!("127.0.0.1 . tcp . {taken}")), "{listing}");
    drop(holder);
    eventually("the freed port served", Duration::from_secs(30), || {
        load_balancer_ingress(&cluster, "taken") == vec!["127.0.0.1".to_string()]
    });
    wait_rule(&table, &format!("127.0.0.1 . tcp . {taken} . 0 : "));
    assert_eq!(curl(&format!("http://127.0.0.1:{taken}/env/WHO")), Ok("px-lb".to_string()));

    // No longer a LoadBalancer: the ingress and its rule go.
    let patch = format!("{{\"spec\":{{\"type\":\"ClusterIP\",\"ports\":[{{\"port\":{port},\"targetPort\":8080}}]}}}}");
    cluster.kubectl(&["patch", "svc", "edge", "--type=merge", "-p", &patch]);
    eventually("the ingress cleared", Duration::from_secs(30), || load_balancer_ingress(&cluster, "edge").is_empty());
    eventually("the load balancer rule gone", Duration::from_secs(30), || {
        list_table(&table.0).is_some_and(|t| !t.contains(&format!("127.0.0.1 . tcp . {port}")))
    });
}
