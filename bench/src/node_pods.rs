//! Pods for the node benchmarks: the `hello-http` pod, creating pods (one, or many with concurrent
//! clients), and a pod watch that records when each pod was first seen Running and Ready.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::create::PODS;

/// Deployments of the namespace `default`.
pub const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

/// The `hello-http` container serving on 8080, Ready once `GET /healthz` answers (probed every second).
pub fn hello_http_container(image: &str) -> Value {
    json!({
        "name": "web",
        "image": image,
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
    })
}

/// The `tcp-echo` container (a WASI preview 2 command) listening on 7000, Ready once a TCP connection
/// to it opens (probed every second).
pub fn tcp_echo_container(image: &str) -> Value {
    json!({
        "name": "echo",
        "image": image,
        "env": [{"name": "PORT", "value": "7000"}],
        "ports": [{"containerPort": 7000}],
        "readinessProbe": {"tcpSocket": {"port": 7000}, "periodSeconds": 1},
    })
}

/// A pod `name` of `default` running `container`.
pub fn pod(name: &str, container: Value) -> Vec<u8> {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "skiff-bench"}},
        "spec": {"containers": [container]},
    })
    .to_string()
    .into_bytes()
}

/// A `hello-http` pod.
pub fn hello_http(name: &str, image: &str) -> Vec<u8> {
    pod(name, hello_http_container(image))
}

/// A Deployment `name` of `default` with `replicas` pods labelled `app: <name>` running `container`;
/// its pods get `grace` seconds to stop.
pub fn deployment(name: &str, replicas: usize, container: Value, grace: u32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": grace, "containers": [container]},
            },
        },
    })
}

/// Creates an object by POST to `{base}{path}` (what `kubectl apply` does for a new object).
pub async fn post(client: &reqwest::Client, base: &str, path: &str, body: &Value) -> Result<()> {
    let resp = client.post(format!("{base}{path}")).json(body).send().await?;
    let status = resp.status();
    if !status.is_success() {
        bail!("POST {path}: {status}: {}", resp.text().await.unwrap_or_default());
    }
    Ok(())
}

/// Deletes an object at `{base}{path}` (background cascade); a missing object is no error.
pub async fn delete(client: &reqwest::Client, base: &str, path: &str) -> Result<()> {
    let resp = client.delete(format!("{base}{path}")).send().await?;
    let status = resp.status();
    if !status.is_success() && status != reqwest::StatusCode::NOT_FOUND {
        bail!("DELETE {path}: {status}: {}", resp.text().await.unwrap_or_default());
    }
    Ok(())
}

/// Creates one pod; the time of the request, send to full response.
pub async fn create(client: &reqwest::Client, base: &str, body: Vec<u8>) -> Result<Duration> {
    let started = Instant::now();
    let resp = client
        .post(format!("{base}{PODS}"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await?;
    if status != reqwest::StatusCode::CREATED {
        bail!("create answered {status}: {text}");
    }
    Ok(started.elapsed())
}

/// What a burst of creates did.
pub struct Burst {
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub first_error: Option<String>,
}

/// Creates the pods `{prefix}-{i}`, i < `total`, with one task per client (each client its own
/// connection), all released together once every connection is warm. Returns when all requests
/// are answered.
pub async fn create_burst(
    clients: Vec<reqwest::Client>,
    base: &str,
    image: &str,
    prefix: &str,
    total: usize,
    released: Arc<tokio::sync::Barrier>,
) -> Result<Burst> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for client in clients {
        let (next, released) = (next.clone(), released.clone());
        let (base, image, prefix) = (base.to_string(), image.to_string(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let warm = client.get(format!("{base}/version")).send().await.and_then(|r| r.error_for_status());
            released.wait().await;
            warm?;
            let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                match create(&client, &base, hello_http(&format!("{prefix}-{i}"), &image)).await {
                    Ok(t) => latencies.push(t),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            Ok::<_, anyhow::Error>(Burst { latencies, errors, first_error })
        }));
    }
    let mut all = Burst { latencies: Vec::new(), errors: 0, first_error: None };
    for t in tasks {
        let b = t.await??;
        all.latencies.extend(b.latencies);
        all.errors += b.errors;
        if all.first_error.is_none() {
            all.first_error = b.first_error;
        }
    }
    Ok(all)
}

/// When the watch first showed a pod Running and Ready, and its IP.
#[derive(Clone, Debug, Default)]
pub struct PodTimes {
    pub running: Option<Instant>,
    pub ready: Option<Instant>,
    pub ip: Option<String>,
}

enum Seen {
    Pod {
        name: String,
        at: Instant,
        running: bool,
        ready: bool,
        ip: Option<String>,
    },
    /// The watch broke (why); a re-list follows.
    Broken(String),
    Ended(String),
}

/// A pod watch (opened before the pods it times are created) and what it has shown so far.
pub struct PodWatch {
    rx: mpsc::UnboundedReceiver<Seen>,
    pub pods: HashMap<String, PodTimes>,
    /// Why the watch broke, each time it did (it was re-listed and resumed).
    pub broken: Vec<String>,
    task: tokio::task::JoinHandle<()>,
}

impl PodWatch {
    /// Lists to learn the current resourceVersion, then watches every pod of `default` from it. If
    /// the watch breaks, the task lists again (every pod in the list counts as seen at that moment)
    /// and watches on from there, giving up after a minute of failures.
    pub async fn start(client: reqwest::Client, base: &str) -> Result<Self> {
        let list: Value = client.get(format!("{base}{PODS}?limit=1")).send().await?.error_for_status()?.json().await?;
        let rv = list["metadata"]["resourceVersion"].as_str().context("list without resourceVersion")?;
        let first = open_watch(&client, base, rv).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let base = base.to_string();
        let task = tokio::spawn(async move {
            let mut resp = first;
            loop {
                let why = read_events(resp, &tx).await.err().map_or("the watch ended".into(), |e| format!("{e:#}"));
                if tx.send(Seen::Broken(why.clone())).is_err() {
                    return;
                }
                let deadline = Instant::now() + Duration::from_secs(60);
                resp = loop {
                    match relist(&client, &base, &tx).await {
                        Ok(r) => break r,
                        Err(e) if Instant::now() < deadline => {
                            eprintln!("pod watch: re-listing failed ({e:#}); retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => {
                            let _ = tx.send(Seen::Ended(format!("{why}; re-listing failed for 60 s: {e:#}")));
                            return;
                        }
                    }
                };
            }
        });
        Ok(PodWatch { rx, pods: HashMap::new(), broken: Vec::new(), task })
    }

    /// Takes in events until `done(&pods)` holds (true) or `deadline` passes (false).
    pub async fn wait_until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&HashMap<String, PodTimes>) -> bool,
    ) -> Result<bool> {
        loop {
            if done(&self.pods) {
                return Ok(true);
            }
            let seen = match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
                Err(_) => return Ok(false),
                Ok(None) => bail!("the pod watch stopped"),
                Ok(Some(s)) => s,
            };
            self.take(seen)?;
            // Take in everything already queued before checking, so one check covers a batch.
            while let Ok(s) = self.rx.try_recv() {
                self.take(s)?;
            }
        }
    }

    fn take(&mut self, seen: Seen) -> Result<()> {
        match seen {
            Seen::Ended(why) => Err(anyhow!("pod watch: {why}")),
            Seen::Broken(why) => {
                eprintln!("pod watch broke ({why}); re-listing");
                self.broken.push(why);
                Ok(())
            }
            Seen::Pod { name, at, running, ready, ip } => {
                let t = self.pods.entry(name).or_default();
                if running && t.running.is_none() {
                    t.running = Some(at);
                }
                if ready && t.ready.is_none() {
                    t.ready = Some(at);
                }
                if ip.is_some() {
                    t.ip = ip;
                }
                Ok(())
            }
        }
    }

    /// Waits for pod `name` to be Ready.
    pub async fn wait_ready(&mut self, name: &str, timeout: Duration) -> Result<bool> {
        self.wait_until(Instant::now() + timeout, |p| p.get(name).is_some_and(|t| t.ready.is_some())).await
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a watch of the pods of `default` from resourceVersion `rv`.
async fn open_watch(client: &reqwest::Client, base: &str, rv: &str) -> Result<reqwest::Response> {
    let url = format!("{base}{PODS}?watch=1&resourceVersion={rv}&timeoutSeconds=3600");
    Ok(client.get(url).send().await?.error_for_status()?)
}

/// Lists every pod (each counts as seen now) and opens a watch from the list's resourceVersion.
async fn relist(client: &reqwest::Client, base: &str, tx: &mpsc::UnboundedSender<Seen>) -> Result<reqwest::Response> {
    let list: Value = client.get(format!("{base}{PODS}")).send().await?.error_for_status()?.json().await?;
    let at = Instant::now();
    for pod in list["items"].as_array().into_iter().flatten() {
        if let Some(seen) = seen(pod, at) {
            let _ = tx.send(seen);
        }
    }
    let rv = list["metadata"]["resourceVersion"].as_str().context("list without resourceVersion")?;
    open_watch(client, base, rv).await
}

/// What a pod object shows.
fn seen(pod: &Value, at: Instant) -> Option<Seen> {
    let name = pod["metadata"]["name"].as_str()?;
    let status = &pod["status"];
    let ready = status["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    Some(Seen::Pod {
        name: name.to_string(),
        at,
        running: status["phase"] == "Running",
        ready,
        ip: status["podIP"].as_str().filter(|s| !s.is_empty()).map(str::to_string),
    })
}

/// Reads watch events line by line; stamps each with the time its last chunk arrived.
async fn read_events(resp: reqwest::Response, tx: &mpsc::UnboundedSender<Seen>) -> Result<()> {
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    while let Some(chunk) = body.next().await {
        let at = Instant::now();
        buf.extend_from_slice(&chunk?);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let event: Value = serde_json::from_slice(&line)?;
            if event["type"] == "ERROR" {
                bail!("error event: {}", event["object"]);
            }
            if let Some(seen) = seen(&event["object"], at) {
                if tx.send(seen).is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
