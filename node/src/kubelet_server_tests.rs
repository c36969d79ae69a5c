//! Tests of the kubelet endpoint: a real server on loopback, a fake log source over temp files.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{oneshot, watch};

use super::*;
use crate::logs::{container_log_path, LogWriter, Rotation, Stream};

const TOKEN: &str = "kubelet-test-token";
/// Upper bound on any wait, so a bug fails instead of hanging.
const GUARD: Duration = Duration::from_secs(20);

/// Containers by `namespace/pod/container`: their log file and running flag.
struct FakeSource {
    containers: HashMap<String, (PathBuf, watch::Receiver<bool>)>,
}

impl LogSource for FakeSource {
    fn locate(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Result<LogFiles, LocateError> {
        if pod == "ghost" {
            return Err(LocateError::PodNotFound { pod: pod.into() });
        }
        let Some((path, running)) = self.containers.get(&format!("{namespace}/{pod}/{container}")) else {
            return Err(LocateError::ContainerNotFound { pod: pod.into(), container: container.into() });
        };
        if previous {
            return Err(LocateError::NoPrevious { pod: pod.into(), container: container.into() });
        }
        Ok(LogFiles::running(path.clone(), running.clone()))
    }
}

/// A served endpoint; dropping it shuts the server down.
struct Endpoint {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(task) = self.served.take() {
            task.abort();
        }
    }
}

async fn start(source: FakeSource) -> Endpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(serve(listener, TOKEN.into(), Arc::new(source), async {
        let _ = stopped.await;
    }));
    Endpoint { url, stop: Some(stop), served: Some(served) }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("client")
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = client().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    tokio::time::timeout(GUARD, req.send()).await.expect("answer in time").expect("request")
}

async fn text(resp: reqwest::Response) -> String {
    tokio::time::timeout(GUARD, resp.text()).await.expect("body in time").expect("body")
}

#[tokio::test]
async fn serves_logs_with_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = container_log_path(dir.path(), "app", 0);
    let writer = LogWriter::create(path.clone(), Rotation::default()).expect("writer");
    writer.write(Stream::Stdout, b"one\ntwo\n").expect("write");
    writer.write(Stream::Stderr, b"three\n").expect("write");
    let (_running_tx, running) = watch::channel(false);
    let containers = HashMap::from([("shop/web/app".to_string(), (path, running))]);
    let ep = start(FakeSource { containers }).await;
    let logs = format!("{}/containerLogs/shop/web/app", ep.url);

    let resp = get(&logs, Some(TOKEN)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()[http::header::CONTENT_TYPE].to_str().expect("ct").starts_with("text/plain"));
    assert_eq!(text(resp).await, "one\ntwo\nthree\n");

    let tail = text(get(&format!("{logs}?tailLines=1&timestamps=true"), Some(TOKEN)).await).await;
    let (ts, rest) = tail.split_once(' ').expect("timestamped");
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
    assert_eq!(rest, "three\n");
    assert_eq!(text(get(&format!("{logs}?limitBytes=5"), Some(TOKEN)).await).await, "one\nt");
    assert_eq!(text(get(&format!("{logs}?sinceSeconds=3600"), Some(TOKEN)).await).await, "one\ntwo\nthree\n");
    let future = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(1)).expect("ts");
    let since_future = format!("{logs}?sinceTime={}", format!("{future:.0}").replace(':', "%3A"));
    assert_eq!(text(get(&since_future, Some(TOKEN)).await).await, "");

    let health = get(&format!("{}/healthz", ep.url), None).await;
    assert_eq!((health.status().as_u16(), text(health).await.as_str()), (200, "ok"));
}

#[tokio::test]
async fn refuses_without_token_and_maps_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = container_log_path(dir.path(), "app", 0);
    let _writer = LogWriter::create(path.clone(), Rotation::default()).expect("writer");
    let (_running_tx, running) = watch::channel(false);
    let containers = HashMap::from([("shop/web/app".to_string(), (path, running))]);
    let ep = start(FakeSource { containers }).await;
    let url = |rest: &str| format!("{}/containerLogs/{rest}", ep.url);

    assert_eq!(get(&url("shop/web/app"), None).await.status(), 401);
    assert_eq!(get(&url("shop/web/app"), Some("wrong")).await.status(), 401);

    let missing = get(&url("shop/web/db"), Some(TOKEN)).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(text(missing).await, "container \"db\" not found in pod \"web\"");
    let ghost = get(&url("shop/ghost/app"), Some(TOKEN)).await;
    assert_eq!((ghost.status().as_u16(), text(ghost).await), (404, "pod \"ghost\" does not exist".to_string()));
    let previous = get(&url("shop/web/app?previous=true"), Some(TOKEN)).await;
    assert_eq!(previous.status(), 400);
    assert_eq!(text(previous).await, "previous terminated container \"app\" in pod \"web\" not found");
    assert_eq!(get(&url("shop/web/app?tailLines=-3"), Some(TOKEN)).await.status(), 422);
    assert_eq!(
        get(&url("shop/web/app?sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z"), Some(TOKEN)).await.status(),
        422
    );
    assert_eq!(get(&url("shop/web/app?follow=maybe"), Some(TOKEN)).await.status(), 400);
}

#[tokio::test]
async fn follow_streams_until_the_container_stops_or_the_server_shuts_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = container_log_path(dir.path(), "app", 0);
    let writer = LogWriter::create(path.clone(), Rotation::default()).expect("writer");
    writer.write(Stream::Stdout, b"first\n").expect("write");
    let (running_tx, running) = watch::channel(true);
    let containers = HashMap::from([("shop/web/app".to_string(), (path, running))]);
    let mut ep = start(FakeSource { containers }).await;
    let follow = format!("{}/containerLogs/shop/web/app?follow=true", ep.url);

    let resp = get(&follow, Some(TOKEN)).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    let mut read_until = async |seen: &mut String, want: &str| {
        while !seen.contains(want) {
            let chunk = tokio::time::timeout(GUARD, body.next()).await.expect("chunk in time");
            seen.push_str(std::str::from_utf8(&chunk.expect("open").expect("chunk")).expect("utf-8"));
        }
    };
    read_until(&mut seen, "first\n").await;
    writer.write(Stream::Stdout, b"second\n").expect("write");
    read_until(&mut seen, "second\n").await;
    writer.write(Stream::Stdout, b"last\n").expect("write");
    running_tx.send(false).expect("stop");
    let rest = tokio::time::timeout(GUARD, body.collect::<Vec<_>>()).await.expect("body ends");
    for chunk in rest {
        seen.push_str(std::str::from_utf8(&chunk.expect("chunk")).expect("utf-8"));
    }
    assert_eq!(seen, "first\nsecond\nlast\n");

    // A follower of a still-running container is ended by the server's shutdown.
    running_tx.send(true).expect("run");
    let resp = get(&follow, Some(TOKEN)).await;
    let mut body = resp.bytes_stream();
    let chunk = tokio::time::timeout(GUARD, body.next()).await.expect("chunk in time");
    assert!(chunk.is_some());
    ep.stop.take();
    let served = ep.served.take().expect("task");
    tokio::time::timeout(GUARD, served).await.expect("server stops").expect("join").expect("serve");
    let rest = tokio::time::timeout(GUARD, body.collect::<Vec<_>>()).await.expect("body ends");
    assert!(rest.iter().all(|c| c.is_ok()), "ended cleanly");
}
