//! Cluster DNS end to end: real kubectl 1.32, a Linux busybox pod (runc through a private
//! containerd) and a Wasm `hello-http` Deployment, the node agent's DNS server reached through the
//! `kube-dns` Service (the 10th address of the test's own service CIDR). The node gets
//! `--resolv-conf none`: no upstream resolvers, so nothing is ever forwarded off the machine.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::eventually;
use common::linux::LinuxCluster;
use common::Cluster;

const WAIT: Duration = Duration::from_secs(180);

/// Address `host` of the cluster's service CIDR (a per-test /24).
fn service_ip(cluster: &Cluster, host: u8) -> String {
    let at = cluster.server_args.iter().position(|a| a == "--service-cidr").expect("a service CIDR");
    let cidr = &cluster.server_args[at + 1];
    let prefix = cidr.rsplit_once('.').expect("an IPv4 CIDR").0;
    format!("{prefix}.{host}")
}

/// `kubectl exec <pod> -- <args>`: (success, stdout + stderr).
fn exec(cluster: &Cluster, pod: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["exec", pod, "--"];
    all.extend_from_slice(args);
    let out = cluster.kubectl_output(&all, None);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn manifests(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: web\n        image: {image}\n        ports:\n        - {{containerPort: 8080, name: http}}\n        readinessProbe:\n          httpGet: {{path: /healthz, port: 8080}}\n          periodSeconds: 1\n\
---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web-headless\nspec:\n  clusterIP: None\n  selector: {{app: web}}\n  ports:\n  - {{name: http, port: 8080, targetPort: 8080}}\n\
---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: sh\n    image: busybox\n    command: [sleep, \"3600\"]\n\
---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: custom\nspec:\n  terminationGracePeriodSeconds: 1\n  dnsPolicy: None\n  dnsConfig:\n    nameservers: [192.0.2.53]\n    searches: [my.example]\n    options:\n    - {{name: ndots, value: \"2\"}}\n  containers:\n  - name: sh\n    image: busybox\n    command: [sleep, \"3600\"]\n"
    )
}

/// `busybox nslookup` on the node itself against `server`: (success, output, elapsed).
fn nslookup_from_node(name: &str, server: &str) -> (bool, String, Duration) {
    let started = Instant::now();
    let out = Command::new("busybox").args(["nslookup", name, server]).output().expect("busybox nslookup");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text, started.elapsed())
}

/// `curl -s` from the node: the body (empty on failure).
fn curl(url: &str) -> String {
    let out = Command::new("curl").args(["-s", "-m", "15", url]).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pods_resolve_services_by_name_through_the_node_dns() {
    let setup = LinuxCluster::start_linux_with("skiff-dns", vec!["--resolv-conf".into(), "none".into()]);
    let c = &setup.cluster;
    let image = setup.registry.push("hello-http", "1");
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&manifests(&image)));
    c.kubectl(&["expose", "deploy/web", "--port=80", "--target-port=8080"]);
    c.kubectl(&["wait", "--for=condition=Ready", "--timeout=180s", "pod", "-l", "app=web"]);
    c.kubectl(&["wait", "--for=condition=Ready", "--timeout=180s", "pod/client", "pod/custom"]);
    let vip = c.get_json(&["svc", "web"])["spec"]["clusterIP"].as_str().expect("a ClusterIP").to_string();
    let pods = c.get_json(&["pods", "-l", "app=web"]);
    let pod_ip = pods["items"][0]["status"]["podIP"].as_str().expect("a pod IP").to_string();

    // The kube-dns Service sits at the conventional address of the service CIDR.
    let dns = service_ip(c, 10);
    let kube_dns = c.get_json(&["svc", "-n", "kube-system", "kube-dns"]);
    assert_eq!(kube_dns["spec"]["clusterIP"], dns.as_str(), "{kube_dns}");

    // ClusterFirst: the pod's resolv.conf names the cluster DNS with the search paths.
    let (ok, resolv) = exec(c, "client", &["cat", "/etc/resolv.conf"]);
    assert!(ok, "{resolv}");
    assert_eq!(
        resolv,
        format!(
            "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver {dns}\noptions ndots:5\n"
        )
    );
    // dnsPolicy None: only the pod's dnsConfig.
    let (ok, custom) = exec(c, "custom", &["cat", "/etc/resolv.conf"]);
    assert!(ok, "{custom}");
    assert_eq!(custom, "search my.example\nnameserver 192.0.2.53\noptions ndots:2\n");

    // The full name and the short one resolve to the ClusterIP.
    eventually("web.default.svc.cluster.local resolves", Duration::from_secs(30), || {
        let (ok, out) = exec(c, "client", &["busybox", "nslookup", "web.default.svc.cluster.local"]);
        ok && out.contains(&format!("Address: {vip}"))
    });
    // busybox's nslookup asks every search expansion at once and exits 1 when any is NXDOMAIN (as
    // with CoreDNS): the answer for the first expansion is what counts.
    let (_, out) = exec(c, "client", &["busybox", "nslookup", "web"]);
    assert!(out.contains(&format!("Name:\tweb.default.svc.cluster.local\nAddress: {vip}")), "{out}");
    // A Wasm guest's outgoing request to the short name `web` resolves through its pod's DNS
    // settings (the Wasm pod calls its own Service; asked from the node with curl, since
    // busybox-static's wget crashes in this image).
    let body = curl(&format!("http://{vip}/fetch/web/"));
    assert!(body.contains("200 hello from skiff"), "{body}");
    let body = curl(&format!("http://{vip}/fetch/nope/"));
    assert!(body.contains("fetch nope"), "{body}");

    // SRV for the named port.
    let (ok, out) =
        exec(c, "client", &["busybox", "nslookup", "-type=srv", "_http._tcp.web-headless.default.svc.cluster.local."]);
    assert!(ok && out.contains("8080"), "{out}");

    // A headless Service answers with the pod's IP, not a ClusterIP.
    let (ok, out) = exec(c, "client", &["busybox", "nslookup", "web-headless.default.svc.cluster.local."]);
    assert!(ok && out.contains(&format!("Address: {pod_ip}")), "{out}");
    assert!(!out.contains(&vip), "{out}");

    // An unknown name in the cluster domain: NXDOMAIN, from the pod and from the node, fast.
    let (ok, out) = exec(c, "client", &["busybox", "nslookup", "nope.default.svc.cluster.local."]);
    assert!(!ok && out.contains("NXDOMAIN"), "{out}");
    let (ok, out, took) = nslookup_from_node("nope.default.svc.cluster.local.", &dns);
    assert!(!ok && out.contains("NXDOMAIN"), "{out}");
    assert!(took < Duration::from_secs(1), "NXDOMAIN took {took:?}");
    let (ok, out, _) = nslookup_from_node("web.default.svc.cluster.local.", &dns);
    assert!(ok && out.contains(&vip), "{out}");

    // A deleted Service's name is gone.
    c.kubectl(&["delete", "svc", "web"]);
    eventually("web's name gone after the Service", Duration::from_secs(30), || {
        let (ok, out, _) = nslookup_from_node("web.default.svc.cluster.local.", &dns);
        !ok && out.contains("NXDOMAIN")
    });
    c.kubectl(&["delete", "pods", "client", "custom", "--wait=true", "--timeout=60s"]);
    eventually("no containerd containers left", WAIT, || setup.containerd.ids("containers").is_empty());
}
