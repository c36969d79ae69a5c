//! `pods/log` end to end inside the process: the API server proxies to a real kubelet endpoint
//! (skiff-node's) that serves a container's CRI log file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use skiff_control::server::kubelet_certs::{CertAuthority, KUBELET_CLIENT_CN};
use skiff_control::server::{self, Datastore, Server, ServerConfig};
use skiff_node::kubelet_server::{self, LocateError, LogSource};
use skiff_node::kubelet_tls;
use skiff_node::logs::{container_log_path, LogFiles, LogWriter, Rotation, Stream};
use tokio::sync::{oneshot, watch};

/// Upper bound on any wait, so a bug fails instead of hanging.
const GUARD: Duration = Duration::from_secs(30);

/// The kubelet side: container logs by `namespace/pod/container`.
struct Source {
    containers: HashMap<String, (PathBuf, watch::Receiver<bool>)>,
}

impl LogSource for Source {
    fn locate(&self, namespace: &str, pod: &str, container: &str, _previous: bool) -> Result<LogFiles, LocateError> {
        match self.containers.get(&format!("{namespace}/{pod}/{container}")) {
            Some((path, running)) => Ok(LogFiles::running(path.clone(), running.clone())),
            None => Err(LocateError::ContainerNotFound { pod: pod.into(), container: container.into() }),
        }
    }
}

/// Which certificates the test's kubelet endpoint holds.
#[derive(Clone, Copy, PartialEq)]
enum Kubelet {
    /// A serving certificate from the cluster CA; trusts the cluster CA for clients (a real node).
    Genuine,
    /// A serving certificate from another CA (an impostor at a Node's advertised address).
    ServedByOtherCa,
    /// Trusts another CA for clients: the API server's certificate is refused.
    TrustsOtherCa,
}

/// The API server and a kubelet endpoint; both stop when dropped.
struct Cluster {
    server: Server,
    kubelet_port: u16,
    stop_kubelet: Option<oneshot::Sender<()>>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.server.shutdown();
        self.stop_kubelet.take();
    }
}

impl Cluster {
    async fn start(source: Source, kubelet: Kubelet) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let server = server::start(ServerConfig {
            data_dir: dir.path().join("server"),
            listen: "127.0.0.1:0".parse().expect("addr"),
            tls_sans: Vec::new(),
            datastore: Datastore::Sqlite,
            node_lifecycle: Default::default(),
            service_network: Default::default(),
            audit: Default::default(),
            components: Default::default(),
            leader_elect: Some(Default::default()),
        })
        .await
        .expect("API server");
        let cluster_ca = CertAuthority::load(&dir.path().join("server")).expect("cluster CA");
        skiff_control::server::tls::ensure(&dir.path().join("other"), &[]).expect("another CA");
        let other_ca = CertAuthority::load(&dir.path().join("other")).expect("other CA");
        let ip = ["127.0.0.1".parse().expect("ip")];
        let names = ["node-a.invalid".to_string()];
        let issuer = if kubelet == Kubelet::ServedByOtherCa { &other_ca } else { &cluster_ca };
        let serving = issuer.kubelet_serving("node-a", &ip, &names).expect("serving cert");
        let trusted = if kubelet == Kubelet::TrustsOtherCa { &other_ca.ca_pem } else { &cluster_ca.ca_pem };
        let tls = kubelet_tls::server_config(
            trusted,
            &kubelet_tls::ServingCert { cert_pem: serving.cert_pem, key_pem: serving.key_pem },
        )
        .expect("kubelet TLS");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let kubelet_port = listener.local_addr().expect("addr").port();
        let (stop_kubelet, stopped) = oneshot::channel::<()>();
        // The endpoint admits the API server's certificate without asking anyone; nobody else.
        let gate = Arc::new(skiff_node::kubelet_auth::Gate::new(Arc::new(skiff_node::kubelet_auth::NoReviews)));
        tokio::spawn(kubelet_server::serve(listener, tls, Arc::new(source), gate, async {
            let _ = stopped.await;
        }));
        let ca = reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).expect("CA");
        let client = reqwest::Client::builder().add_root_certificate(ca).build().expect("client");
        Self { server, kubelet_port, stop_kubelet: Some(stop_kubelet), client, _dir: dir }
    }

    async fn send(&self, method: reqwest::Method, path: &str, content_type: &str, body: Value) -> reqwest::Response {
        let req = self
            .client
            .request(method, format!("{}{path}", self.server.url()))
            .bearer_auth(&self.server.admin_token)
            .header("content-type", content_type)
            .body(body.to_string());
        tokio::time::timeout(GUARD, req.send()).await.expect("answer in time").expect("request")
    }

    async fn create(&self, path: &str, body: Value) {
        let resp = self.send(reqwest::Method::POST, path, "application/json", body).await;
        assert!(resp.status().is_success(), "create {path}: {}", resp.text().await.unwrap_or_default());
    }

    /// A Node whose kubelet endpoint is this cluster's, and pods bound to it (and one not).
    async fn objects(&self) {
        self.create("/api/v1/nodes", json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}})).await;
        let status = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "node-a.invalid"}, {"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
        }});
        let resp = self
            .send(reqwest::Method::PATCH, "/api/v1/nodes/node-a/status", "application/merge-patch+json", status)
            .await;
        assert!(resp.status().is_success(), "node status: {}", resp.text().await.unwrap_or_default());
        let pod = |name: &str, node: Option<&str>, containers: &[&str], init: &[&str]| {
            let c = |n: &&str| json!({"name": n, "image": "registry.invalid/app:1"});
            let mut spec = json!({"containers": containers.iter().map(c).collect::<Vec<_>>()});
            if !init.is_empty() {
                spec["initContainers"] = json!(init.iter().map(c).collect::<Vec<_>>());
            }
            if let Some(node) = node {
                spec["nodeName"] = json!(node);
            }
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
        };
        self.create("/api/v1/namespaces/default/pods", pod("web", Some("node-a"), &["app"], &[])).await;
        self.create("/api/v1/namespaces/default/pods", pod("duo", Some("node-a"), &["app", "side"], &["setup"])).await;
        self.create("/api/v1/namespaces/default/pods", pod("pending", None, &["app"], &[])).await;
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let req = self.client.get(format!("{}{path}", self.server.url())).bearer_auth(&self.server.admin_token);
        tokio::time::timeout(GUARD, req.send()).await.expect("answer in time").expect("request")
    }
}

async fn text(resp: reqwest::Response) -> String {
    tokio::time::timeout(GUARD, resp.text()).await.expect("body in time").expect("body")
}

async fn status(resp: reqwest::Response) -> (u16, String) {
    let code = resp.status().as_u16();
    let body: Value = serde_json::from_str(&text(resp).await).expect("a Status");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["code"], code);
    (code, body["message"].as_str().unwrap_or_default().to_string())
}

fn log_file(dir: &std::path::Path, pod: &str, container: &str) -> (PathBuf, LogWriter) {
    let path = container_log_path(&dir.join(format!("default_{pod}_uid")), container, 0);
    let writer = LogWriter::create(path.clone(), Rotation::default()).expect("writer");
    (path, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_logs_through_the_api_server() {
    let logs = tempfile::tempdir().expect("tempdir");
    let (web, web_writer) = log_file(logs.path(), "web", "app");
    web_writer.write(Stream::Stdout, b"hello\nfrom web\n").expect("write");
    let (side, side_writer) = log_file(logs.path(), "duo", "side");
    side_writer.write(Stream::Stderr, b"side car\n").expect("write");
    let (_running_tx, running) = watch::channel(false);
    let containers = HashMap::from([
        ("default/web/app".to_string(), (web, running.clone())),
        ("default/duo/side".to_string(), (side, running)),
    ]);
    let cluster = Cluster::start(Source { containers }, Kubelet::Genuine).await;
    cluster.objects().await;
    let log = |rest: &str| format!("/api/v1/namespaces/default/pods/{rest}");

    let resp = cluster.get(&log("web/log")).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().expect("ct").starts_with("text/plain"));
    assert_eq!(text(resp).await, "hello\nfrom web\n");
    assert_eq!(text(cluster.get(&log("web/log?tailLines=1")).await).await, "from web\n");
    assert_eq!(text(cluster.get(&log("web/log?container=app&limitBytes=3")).await).await, "hel");
    assert_eq!(text(cluster.get(&log("duo/log?container=side")).await).await, "side car\n");
    let stamped = text(cluster.get(&log("duo/log?container=side&timestamps=true")).await).await;
    assert!(stamped.ends_with("Z side car\n"), "{stamped}");

    assert_eq!(
        status(cluster.get(&log("duo/log")).await).await,
        (400, "a container name must be specified for pod duo, choose one of: [setup app side]".to_string())
    );
    assert_eq!(
        status(cluster.get(&log("web/log?container=nope")).await).await,
        (400, "container nope is not valid for pod web".to_string())
    );
    assert_eq!(
        status(cluster.get(&log("pending/log")).await).await,
        (400, "pod pending does not have a host assigned".to_string())
    );
    assert_eq!(status(cluster.get(&log("ghost/log")).await).await, (404, "pods \"ghost\" not found".to_string()));
    // Valid in the spec but unknown to the kubelet: the kubelet's own answer.
    assert_eq!(
        status(cluster.get(&log("duo/log?container=setup")).await).await,
        (404, "container \"setup\" not found in pod \"duo\"".to_string())
    );
    let (code, message) = status(cluster.get(&log("web/log?tailLines=-2")).await).await;
    assert_eq!(code, 422);
    assert!(message.contains("tailLines: Invalid value: -2"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_through_the_api_server() {
    let logs = tempfile::tempdir().expect("tempdir");
    let (web, writer) = log_file(logs.path(), "web", "app");
    writer.write(Stream::Stdout, b"first\n").expect("write");
    let (running_tx, running) = watch::channel(true);
    let containers = HashMap::from([("default/web/app".to_string(), (web, running))]);
    let cluster = Cluster::start(Source { containers }, Kubelet::Genuine).await;
    cluster.objects().await;

    let resp = cluster.get("/api/v1/namespaces/default/pods/web/log?follow=true").await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    for (write, want) in [(None, "first\n"), (Some("second\n"), "first\nsecond\n")] {
        if let Some(line) = write {
            writer.write(Stream::Stdout, line.as_bytes()).expect("write");
        }
        while seen != want {
            let chunk = tokio::time::timeout(GUARD, body.next()).await.expect("chunk in time");
            seen.push_str(std::str::from_utf8(&chunk.expect("open").expect("chunk")).expect("utf-8"));
        }
    }
    writer.write(Stream::Stdout, b"last").expect("write");
    writer.flush().expect("flush");
    running_tx.send(false).expect("stop");
    let rest = tokio::time::timeout(GUARD, body.collect::<Vec<_>>()).await.expect("body ends");
    for chunk in rest {
        seen.push_str(std::str::from_utf8(&chunk.expect("chunk")).expect("utf-8"));
    }
    assert_eq!(seen, "first\nsecond\nlast\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_mutual_tls_with_the_cluster_ca_reaches_a_kubelet() {
    assert_eq!(KUBELET_CLIENT_CN, kubelet_tls::API_SERVER_CLIENT_CN, "both sides name the API server alike");
    for (kubelet, what) in [
        (Kubelet::ServedByOtherCa, "a kubelet whose serving certificate another CA signed"),
        (Kubelet::TrustsOtherCa, "a kubelet that does not trust the API server's client certificate"),
    ] {
        let logs = tempfile::tempdir().expect("tempdir");
        let (web, writer) = log_file(logs.path(), "web", "app");
        writer.write(Stream::Stdout, b"secret log line\n").expect("write");
        let (_running_tx, running) = watch::channel(false);
        let containers = HashMap::from([("default/web/app".to_string(), (web, running))]);
        let cluster = Cluster::start(Source { containers }, kubelet).await;
        cluster.objects().await;
        let (code, message) = status(cluster.get("/api/v1/namespaces/default/pods/web/log").await).await;
        assert_eq!(code, 500, "{what}: {message}");
        assert!(!message.contains("secret log line"), "{what}: {message}");
        assert!(message.contains("https://127.0.0.1:"), "{what}: {message}");
    }
}
