//! Tests of the kubelet endpoint: a real server on loopback, a fake log source over temp files.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{oneshot, watch};

use super::*;
use crate::kubelet_auth::tests::FakeReviews;
use crate::kubelet_tls::test_pki::{self, Ca};
use crate::kubelet_tls::API_SERVER_CLIENT_CN;
use crate::logs::{container_log_path, LogWriter, Rotation, Stream};

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
    ca: Ca,
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
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let ca = Ca::new("test-cluster-ca");
    let tls = crate::kubelet_tls::server_config(&ca.pem, &ca.serving()).expect("tls");
    let (stop, stopped) = oneshot::channel::<()>();
    let gate = Arc::new(crate::kubelet_auth::Gate::new(Arc::new(FakeReviews::default())));
    let served = tokio::spawn(serve(listener, tls, Arc::new(source), gate, async {
        let _ = stopped.await;
    }));
    Endpoint { url, ca, stop: Some(stop), served: Some(served) }
}

/// Who calls the endpoint.
enum Caller {
    ApiServer,
    NoCertificate,
    OtherName,
    OtherCa,
}

fn client(ep: &Endpoint, caller: Caller) -> reqwest::Client {
    let other = Ca::new("someone-else");
    let identity = match caller {
        Caller::ApiServer => Some(ep.ca.client(API_SERVER_CLIENT_CN)),
        Caller::NoCertificate => None,
        Caller::OtherName => Some(ep.ca.client("system:node:other")),
        Caller::OtherCa => Some(other.client(API_SERVER_CLIENT_CN)),
    };
    test_pki::client(&ep.ca.pem, identity.as_ref())
}

async fn try_get(ep: &Endpoint, url: &str, caller: Caller) -> reqwest::Result<reqwest::Response> {
    let req = client(ep, caller).get(url);
    tokio::time::timeout(GUARD, req.send()).await.expect("answer in time")
}

async fn get(ep: &Endpoint, url: &str) -> reqwest::Response {
    try_get(ep, url, Caller::ApiServer).await.expect("request")
}

async fn text(resp: reqwest::Response) -> String {
    tokio::time::timeout(GUARD, resp.text()).await.expect("body in time").expect("body")
}

#[tokio::test]
async fn serves_logs_to_the_api_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = container_log_path(dir.path(), "app", 0);
    let writer = LogWriter::create(path.clone(), Rotation::default()).expect("writer");
    writer.write(Stream::Stdout, b"one\ntwo\n").expect("write");
    writer.write(Stream::Stderr, b"three\n").expect("write");
    let (_running_tx, running) = watch::channel(false);
    let containers = HashMap::from([("shop/web/app".to_string(), (path, running))]);
    let ep = start(FakeSource { containers }).await;
    let logs = format!("{}/containerLogs/shop/web/app", ep.url);

    let resp = get(&ep, &logs).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()[http::header::CONTENT_TYPE].to_str().expect("ct").starts_with("text/plain"));
    assert_eq!(text(resp).await, "one\ntwo\nthree\n");

    let tail = text(get(&ep, &format!("{logs}?tailLines=1&timestamps=true")).await).await;
    let (ts, rest) = tail.split_once(' ').expect("timestamped");
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
    assert_eq!(rest, "three\n");
    assert_eq!(text(get(&ep, &format!("{logs}?limitBytes=5")).await).await, "one\nt");
    assert_eq!(text(get(&ep, &format!("{logs}?sinceSeconds=3600")).await).await, "one\ntwo\nthree\n");
    let future = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(1)).expect("ts");
    let since_future = format!("{logs}?sinceTime={}", format!("{future:.0}").replace(':', "%3A"));
    assert_eq!(text(get(&ep, &since_future).await).await, "");

    let health = get(&ep, &format!("{}/healthz", ep.url)).await;
    assert_eq!((health.status().as_u16(), text(health).await.as_str()), (200, "ok"));
}

#[tokio::test]
async fn refuses_other_clients_and_maps_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = container_log_path(dir.path(), "app", 0);
    let _writer = LogWriter::create(path.clone(), Rotation::default()).expect("writer");
    let (_running_tx, running) = watch::channel(false);
    let containers = HashMap::from([("shop/web/app".to_string(), (path, running))]);
    let ep = start(FakeSource { containers }).await;
    let url = |rest: &str| format!("{}/containerLogs/{rest}", ep.url);

    // A certificate from another CA gets no connection at all.
    let refused = try_get(&ep, &url("shop/web/app"), Caller::OtherCa).await;
    assert!(refused.is_err(), "a certificate from another CA: {:?}", refused.map(|r| r.status()));
    // No credential: 401. Another name of this CA, and a token, are users the API server reviews:
    // the fake knows `alice-token` (who may use `nodes/proxy`) and nobody else.
    let answer = |caller, token: Option<&str>| {
        let mut request = client(&ep, caller).get(url("shop/web/app"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let resp = tokio::time::timeout(GUARD, request.send()).await.expect("in time").expect("answer");
            (resp.status().as_u16(), text(resp).await)
        }
    };
    assert_eq!(answer(Caller::NoCertificate, None).await, (401, "Unauthorized".into()));
    assert_eq!(answer(Caller::NoCertificate, Some("admin-token")).await, (401, "Unauthorized".into()));
    let forbidden = "Forbidden (user=system:node:other, verb=get, resource=nodes, subresource=proxy)";
    assert_eq!(answer(Caller::OtherName, None).await, (403, forbidden.into()));
    assert_eq!(answer(Caller::NoCertificate, Some("alice-token")).await.0, 200);
    // Refused before the route: a missing page is not told apart from a refused one.
    let nowhere = client(&ep, Caller::NoCertificate).get(format!("{}/nowhere", ep.url)).send().await.expect("answer");
    assert_eq!(nowhere.status(), 401);

    let missing = get(&ep, &url("shop/web/db")).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(text(missing).await, "container \"db\" not found in pod \"web\"");
    let ghost = get(&ep, &url("shop/ghost/app")).await;
    assert_eq!((ghost.status().as_u16(), text(ghost).await), (404, "pod \"ghost\" does not exist".to_string()));
    let previous = get(&ep, &url("shop/web/app?previous=true")).await;
    assert_eq!(previous.status(), 400);
    assert_eq!(text(previous).await, "previous terminated container \"app\" in pod \"web\" not found");
    assert_eq!(get(&ep, &url("shop/web/app?tailLines=-3")).await.status(), 422);
    assert_eq!(get(&ep, &url("shop/web/app?sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z")).await.status(), 422);
    assert_eq!(get(&ep, &url("shop/web/app?follow=maybe")).await.status(), 400);
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

    let resp = get(&ep, &follow).await;
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
    let resp = get(&ep, &follow).await;
    let mut body = resp.bytes_stream();
    let chunk = tokio::time::timeout(GUARD, body.next()).await.expect("chunk in time");
    assert!(chunk.is_some());
    ep.stop.take();
    let served = ep.served.take().expect("task");
    tokio::time::timeout(GUARD, served).await.expect("server stops").expect("join").expect("serve");
    let rest = tokio::time::timeout(GUARD, body.collect::<Vec<_>>()).await.expect("body ends");
    assert!(rest.iter().all(|c| c.is_ok()), "ended cleanly");
}
