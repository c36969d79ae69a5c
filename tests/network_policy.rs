//! NetworkPolicy end to end: real kubectl, busybox pods on containerd/runc and a Wasm
//! `hello-http` pod on the node's bridge (CNI), and the node agent's `skiff-np-<node>` nftables
//! table. Clients probe with `kubectl exec ... -- busybox nc -w 2`, so a blocked connection fails within
//! seconds; every wait is bounded.
//!
//! Needs root, nft, containerd, runc, the CNI plugins, docker-registry, umoci, skopeo and busybox-static.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::linux::LinuxCluster;
use common::{eventually, KUBECTL};

const WAIT: Duration = Duration::from_secs(120);
/// How long a policy change may take to reach the node's table.
const APPLY: Duration = Duration::from_secs(30);

/// The cluster, the namespace the test makes, and the node's policy table (deleted when the test
/// ends, also when it fails; the agent removes it on a clean stop).
struct Setup {
    /// `None` once the test stopped the cluster.
    linux: Option<LinuxCluster>,
    table: String,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop();
        let _ = Command::new("nft").args(["delete", "table", "ip", &self.table]).output();
    }
}

/// `nft list table ip <name>`, or `None` when there is no such table.
fn list_table(name: &str) -> Option<String> {
    let out = Command::new("nft").args(["list", "table", "ip", name]).output().expect("nft");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Setup {
    fn linux(&self) -> &LinuxCluster {
        self.linux.as_ref().expect("a running cluster")
    }

    /// Removes the pods (their containers) and stops the cluster.
    fn stop(&mut self) {
        if let Some(linux) = self.linux.take() {
            let _ = linux
                .cluster
                .kubectl_output(&["delete", "pods", "--all", "--all-namespaces", "--wait=true", "--timeout=60s"], None);
        }
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        let linux = self.linux();
        let mut cmd = Command::new("timeout");
        cmd.arg("30").arg(KUBECTL).arg("--kubeconfig").arg(linux.cluster.kubeconfig()).args(args);
        cmd.env("HOME", linux.work.path()).stdin(Stdio::null());
        cmd.output().expect("run kubectl")
    }

    fn apply(&self, manifest: &str) {
        self.linux().cluster.kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
    }

    /// What `GET /` from `pod` (namespace `ns`) to `addr` (`ip:port`) answers within 2 seconds:
    /// the response, or what went wrong. (busybox's `nc`: the static busybox's `wget` crashes.)
    fn fetch(&self, ns: &str, pod: &str, addr: &str) -> Result<String, String> {
        let (ip, port) = addr.rsplit_once(':').expect("ip:port");
        let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 {ip} {port}");
        let out = self.kubectl(&["exec", "-n", ns, pod, "--", "sh", "-c", &get]);
        let response = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && response.starts_with("HTTP/1.") && response.contains(" 200 ") {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("{:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Whether `pod` (namespace `ns`) gets an answer from `url` within 2 seconds.
    fn reaches(&self, ns: &str, pod: &str, addr: &str) -> bool {
        self.fetch(ns, pod, addr).is_ok()
    }

    /// Waits until `pod` reaches `url` (`open`) or no longer does.
    fn until(&self, ns: &str, pod: &str, url: &str, open: bool) {
        let deadline = std::time::Instant::now() + APPLY;
        loop {
            let got = self.fetch(ns, pod, url);
            if got.is_ok() == open {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{ns}/{pod} {} {url}: {got:?}\ntable: {}",
                if open { "never reached" } else { "still reaches" },
                list_table(&self.table).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn ip(&self, ns: &str, pod: &str) -> String {
        let pod = self.linux().cluster.get_json(&["pod", "-n", ns, pod]);
        pod["status"]["podIP"].as_str().expect("a pod IP").to_string()
    }
}

fn busybox(ns: &str, name: &str, labels: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {labels}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, \"{script}\"]\n    ports:\n    - {{name: http, containerPort: 8080}}\n    - {{name: alt, containerPort: 9090}}\n"
    )
}

fn policy(name: &str, spec: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n{spec}")
}

#[test]
fn network_policies_police_pod_ingress_and_egress_on_the_node() {
    let linux = LinuxCluster::start_linux("skiff-np");
    let table = format!("skiff-np-{}", linux.cluster.node_name());
    let mut s = Setup { linux: Some(linux), table };
    let image = s.linux().registry.push("hello-http", "1");
    let cluster = &s.linux().cluster;

    cluster.kubectl(&["create", "namespace", "np-friends"]);
    cluster.kubectl(&["label", "namespace", "np-friends", "team=friends"]);
    let serve = "busybox mkdir -p /w && echo up > /w/index.html && busybox httpd -p 9090 -h /w && exec busybox httpd -f -p 8080 -h /w";
    let pods = [
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, labels: {{app: web}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: {image}\n    ports:\n    - {{name: http, containerPort: 8080}}\n    readinessProbe:\n      httpGet: {{path: /healthz, port: 8080}}\n      periodSeconds: 1\n"
        ),
        busybox("default", "srv", "{app: srv}", serve),
        busybox("default", "client", "{role: client}", "sleep 3600"),
        busybox("default", "stranger", "{role: other}", "sleep 3600"),
        busybox("np-friends", "far", "{role: other}", "sleep 3600"),
    ];
    s.apply(&pods.join("---\n"));
    for (ns, pod) in
        [("default", "web"), ("default", "srv"), ("default", "client"), ("default", "stranger"), ("np-friends", "far")]
    {
        cluster.kubectl(&[
            "wait",
            "-n",
            ns,
            "--for=condition=Ready",
            &format!("--timeout={}s", WAIT.as_secs()),
            &format!("pod/{pod}"),
        ]);
    }
    let (web, srv) = (s.ip("default", "web"), s.ip("default", "srv"));
    let web_url = format!("{web}:8080");
    let (srv_http, srv_alt) = (format!("{srv}:8080"), format!("{srv}:9090"));

    // ClusterIP Services in front of the Wasm pod and of srv.
    let service = |name: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  ports:\n  - {{port: 80, targetPort: 8080}}\n")
    };
    s.apply(&[service("web"), service("srv")].join("---\n"));
    let vip_of = |name: &str| {
        let ip = cluster.get_json(&["svc", name])["spec"]["clusterIP"].as_str().expect("a ClusterIP").to_string();
        format!("{ip}:80")
    };
    let (vip_url, srv_vip) = (vip_of("web"), vip_of("srv"));

    // No policy: everyone reaches everything.
    s.until("default", "client", &web_url, true);
    s.until("default", "stranger", &vip_url, true);
    s.until("np-friends", "far", &srv_alt, true);
    s.until("default", "srv", &srv_vip, true);

    // Default deny for the namespace's pods: nobody gets in, Wasm or Linux pod, directly or
    // through the Service.
    s.apply(&policy("default-deny", "  podSelector: {}\n  policyTypes: [Ingress]\n"));
    s.until("default", "client", &web_url, false);
    assert!(!s.reaches("default", "client", &vip_url), "the ClusterIP reaches a denied pod");
    assert!(!s.reaches("np-friends", "far", &srv_http));
    // A pod cannot block itself: srv reaches itself through its Service (hairpin).
    assert!(s.reaches("default", "srv", &srv_vip), "a pod blocked from itself");
    // The node itself (kubelet probes, the host) is never blocked: web stays Ready and answers.
    let from_host =
        Command::new("curl").args(["-sf", "-m", "3", &format!("http://{web_url}/")]).output().expect("curl");
    assert!(from_host.status.success(), "the host is blocked from a policed pod");
    let table = list_table(&s.table).expect("the policy table");
    assert!(table.contains(&format!("{web} : jump pod-in-{web}")), "{table}");

    // Allow from pods with a label: the client gets in (also through the Service), others not.
    s.apply(&policy(
        "web-from-clients",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {role: client}}\n",
    ));
    s.until("default", "client", &web_url, true);
    assert!(s.reaches("default", "client", &vip_url), "the ClusterIP to an allowed pod");
    assert!(!s.reaches("default", "stranger", &web_url));
    assert!(!s.reaches("default", "stranger", &vip_url), "the ClusterIP lets a denied client in");
    assert!(!s.reaches("np-friends", "far", &web_url));

    // A namespaceSelector: pods of the labelled namespace get in.
    s.apply(&policy(
        "web-from-friends",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: friends}}\n",
    ));
    s.until("np-friends", "far", &web_url, true);
    assert!(!s.reaches("default", "stranger", &web_url));

    // A port rule by name: the client reaches srv's `http` port and not its `alt` port; then a
    // port range covering only `alt`.
    s.apply(&policy(
        "srv-http",
        "  podSelector: {matchLabels: {app: srv}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {role: client}}\n    ports:\n    - {port: http}\n",
    ));
    s.until("default", "client", &srv_http, true);
    assert!(!s.reaches("default", "client", &srv_alt), "a port no rule allows is open");
    s.apply(&policy(
        "srv-http",
        "  podSelector: {matchLabels: {app: srv}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {role: client}}\n    ports:\n    - {port: 9000, endPort: 9100, protocol: TCP}\n",
    ));
    s.until("default", "client", &srv_alt, true);
    s.until("default", "client", &srv_http, false);

    // Deleting the policies opens the pods again.
    cluster.kubectl(&["delete", "networkpolicy", "--all"]);
    s.until("default", "stranger", &web_url, true);
    assert!(s.reaches("default", "stranger", &srv_http));
    eventually("no policed pod left in the table", APPLY, || {
        list_table(&s.table).is_some_and(|t| !t.contains("jump pod-in-"))
    });

    // Egress: the client may only talk to web's `http` port (the name resolved on the
    // destination), directly or through the Service (DNATed before the policy sees it); srv
    // becomes unreachable for it but not for others.
    s.apply(&policy(
        "client-out",
        "  podSelector: {matchLabels: {role: client}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector: {matchLabels: {app: web}}\n    ports:\n    - {port: http}\n",
    ));
    s.until("default", "client", &srv_http, false);
    assert!(s.reaches("default", "client", &web_url), "egress to an allowed pod and port");
    assert!(s.reaches("default", "client", &vip_url), "egress through the ClusterIP to an allowed pod");
    assert!(s.reaches("default", "stranger", &srv_http), "an unpoliced pod lost its egress");
    cluster.kubectl(&["delete", "networkpolicy", "client-out"]);
    s.until("default", "client", &srv_http, true);

    // The node's identity may read what enforcement watches.
    let node = format!("--as=system:node:{}", cluster.node_name());
    for resource in ["networkpolicies", "pods", "namespaces"] {
        let out =
            s.kubectl(&["auth", "can-i", "watch", resource, "--all-namespaces", &node, "--as-group=system:nodes"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes", "watch {resource}");
    }

    // The table goes with the agent.
    s.stop();
    assert_eq!(list_table(&s.table), None, "the policy table outlived the agent");
}

/// The pid in a policy table's comment (`... (pid N)`).
fn table_pid(table: &str) -> Option<String> {
    let at = table.find("(pid ")? + 5;
    Some(table[at..].chars().take_while(char::is_ascii_digit).collect())
}

#[test]
fn a_restarted_node_replaces_its_stale_table_and_the_flag_turns_enforcement_off() {
    let mut cluster = common::Cluster::with_node();
    let table = format!("skiff-np-{}", cluster.node_name());
    // Removes the table at the end, also when the test fails.
    let _guard = Setup { linux: None, table: table.clone() };
    let registry = common::node::Registry::start();
    let image = registry.push("hello-http", "1");
    cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, labels: {{app: web}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: {image}\n---\n{}",
            policy("deny", "  podSelector: {}\n  policyTypes: [Ingress]\n")
        )),
    );
    cluster.wait_pod_ready("web", WAIT);
    let web = cluster.get_json(&["pod", "web"])["status"]["podIP"].as_str().expect("a pod IP").to_string();
    let element = format!("{web} : jump pod-in-{web}");
    eventually("web policed", APPLY, || list_table(&table).is_some_and(|t| t.contains(&element)));
    let first = table_pid(&list_table(&table).unwrap_or_default());

    // A crashed agent leaves its table; someone adds a stray element to it meanwhile.
    cluster.kill9();
    let stray = web.rsplit_once('.').map(|(net, _)| format!("{net}.250")).expect("an IPv4 pod IP");
    let added = Command::new("nft")
        .args(["add", "element", "ip", &table, "ingress-pods", &format!("{{ {stray} : jump pod-in-{web} }}")])
        .status()
        .expect("nft");
    assert!(added.success(), "the stale table is there");

    // The restarted agent replaces it whole: its own pid, web still policed, the stray gone.
    cluster.spawn();
    eventually("the table rewritten by the new agent", APPLY, || {
        list_table(&table).is_some_and(|t| table_pid(&t) != first && t.contains(&element) && !t.contains(&stray))
    });
    drop(cluster);
    assert_eq!(list_table(&table), None, "the policy table outlived the agent");

    // `--network-policy=false`: the agent says so and writes no table.
    let off = common::Cluster::with_node_args(vec!["--network-policy=false".into()]);
    let off_table = format!("skiff-np-{}", off.node_name());
    eventually("the agent's word on network policy", APPLY, || off.server_log().contains("network policy off"));
    assert_eq!(list_table(&off_table), None);
}
