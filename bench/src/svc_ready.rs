//! `svc-ready`: how long after a pod turns Ready the first request reaches it through its Service.
//!
//! One `NodePort` Service (so a ClusterIP and a NodePort) selects the pods labelled
//! `app: svc-ready`. Each round creates one `hello-http` pod with that label (its `WHO` variable
//! names it; `GET /env/WHO` answers with it), so the Service goes from no endpoint to that one pod:
//! two probers, one per path, open a new TCP connection every `--interval-ms` to the ClusterIP and
//! to `127.0.0.1:<nodePort>` (host-originated, the proxy's `nat` output hook) and record when an
//! attempt first gets the new pod's name back. The reference is the moment the harness's pod watch
//! delivers the pod with `Ready=True` (the kubelet's status write plus one watch delivery, about a
//! millisecond here: the server writes no sub-second time of its own); an EndpointSlice watch of
//! the Service gives the intermediate step. The pod is then deleted and the round ends once both
//! paths refuse again (the Service has no endpoint), so every round starts from the same state.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::node_cluster::{NodeOpts, Setup};
use crate::node_pods::{create, PodWatch};
use crate::stats::{ms, Latencies};

const SERVICE: &str = "svc-ready";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
/// How long one round may take at each step before the run fails.
const STEP_LIMIT: Duration = Duration::from_secs(60);

pub struct ReadyArgs {
    pub rounds: usize,
    /// Time between two connection attempts of a prober.
    pub interval: Duration,
}

/// A `hello-http` pod selected by the Service, answering `GET /env/WHO` with its own name.
fn pod(name: &str, image: &str) -> Vec<u8> {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": SERVICE}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web",
                "image": image,
                "env": [{"name": "WHO", "value": name}],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
            }],
        },
    })
    .to_string()
    .into_bytes()
}

/// What one connection attempt got.
#[derive(Debug, PartialEq)]
enum Probe {
    Refused,
    /// A response with this status and body.
    Answer(u16, String),
    Failed(String),
}

/// One new connection to `addr`, `GET /env/WHO`, read to the end.
async fn probe(addr: SocketAddr) -> Probe {
    let connect = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await;
    let mut stream = match connect {
        Err(_) => return Probe::Failed("connect timed out".into()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Probe::Refused,
        Ok(Err(e)) => return Probe::Failed(format!("connect: {e}")),
        Ok(Ok(s)) => s,
    };
    let exchange = async {
        stream.write_all(b"GET /env/WHO HTTP/1.1\r\nHost: svc-ready\r\nConnection: close\r\n\r\n").await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(Duration::from_secs(2), exchange).await {
        Err(_) => Probe::Failed("no response within 2 s".into()),
        Ok(Err(e)) => Probe::Failed(format!("exchange: {e}")),
        Ok(Ok(buf)) => parse_response(&buf),
    }
}

fn parse_response(buf: &[u8]) -> Probe {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Probe::Failed(format!("not an HTTP response: {text:?}"));
    };
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    match status {
        Some(status) => Probe::Answer(status, body.to_string()),
        None => Probe::Failed(format!("no status line: {head:?}")),
    }
}

/// Whether a response body names `who` (a line of its own, so chunked framing does not matter).
fn names(body: &str, who: &str) -> bool {
    body.lines().any(|l| l.trim() == who)
}

/// Attempts one connection every `interval` until one gets `who`'s answer: the start of that
/// attempt (its SYN went through the rules as they were then).
async fn first_answer(addr: SocketAddr, who: String, interval: Duration) -> Result<Instant> {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let at = Instant::now();
        let last = match probe(addr).await {
            Probe::Answer(200, body) if names(&body, &who) => return Ok(at),
            other => other,
        };
        if Instant::now() > deadline {
            bail!("{addr}: no answer from {who} within {} s (last attempt: {last:?})", STEP_LIMIT.as_secs());
        }
        tokio::time::sleep(interval).await;
    }
}

/// Waits until a connection to `addr` is refused (the Service has no endpoint and the node says so).
async fn wait_refused(addr: SocketAddr, interval: Duration) -> Result<()> {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let last = match probe(addr).await {
            Probe::Refused => return Ok(()),
            other => other,
        };
        if Instant::now() > deadline {
            bail!("{addr}: not refused within {} s (last attempt: {last:?})", STEP_LIMIT.as_secs());
        }
        tokio::time::sleep(interval).await;
    }
}

/// Waits until the node's table rejects both of the Service's addresses (`no-endpoint-*` maps), so
/// a round starts from "no endpoint" as the proxy sees it: a refused connection alone proves
/// nothing, since a stopped pod that a rule still points at refuses too.
async fn wait_no_endpoint(table: &str, vip: SocketAddr, np: SocketAddr) -> Result<()> {
    let want = [
        format!("{} . tcp . {} : goto reject-chain", vip.ip(), vip.port()),
        format!("tcp . {} : goto reject-chain", np.port()),
    ];
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let out = tokio::process::Command::new("nft")
            .args(["list", "table", "ip", table])
            .output()
            .await
            .context("running nft")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if want.iter().all(|w| text.contains(w.as_str())) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("table {table} did not reject {vip} and {np} within {} s:\n{text}", STEP_LIMIT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Watches the Service's EndpointSlices; sends (address, arrival) for every endpoint shown ready.
async fn watch_slices(client: reqwest::Client, base: &str) -> Result<mpsc::UnboundedReceiver<(String, Instant)>> {
    let selector = format!("labelSelector=kubernetes.io/service-name%3D{SERVICE}");
    let list: Value = client.get(format!("{base}{SLICES}?{selector}")).send().await?.error_for_status()?.json().await?;
    let rv = list["metadata"]["resourceVersion"].as_str().context("list without resourceVersion")?;
    let url = format!("{base}{SLICES}?{selector}&watch=1&resourceVersion={rv}&timeoutSeconds=3600");
    let resp = client.get(url).send().await?.error_for_status()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            let at = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<Value>(&line) else { continue };
                for ep in event["object"]["endpoints"].as_array().into_iter().flatten() {
                    if ep["conditions"]["ready"] != json!(true) {
                        continue;
                    }
                    for addr in ep["addresses"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                        if tx.send((addr.to_string(), at)).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok(rx)
}

/// `to - from` in milliseconds, negative if `to` came first.
fn between(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(d) => d.as_secs_f64() * 1000.0,
        None => -(from.duration_since(to).as_secs_f64() * 1000.0),
    }
}

/// `at` as UTC wall-clock time of day, to line the rounds up with the server log.
fn wall(at: Instant) -> String {
    let now = std::time::SystemTime::now();
    let then = match Instant::now().checked_duration_since(at) {
        Some(ago) => now.checked_sub(ago),
        None => now.checked_add(at.duration_since(Instant::now())),
    };
    let since = then.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    let (secs, micros) = (since.as_secs() % 86_400, since.subsec_micros());
    format!("{:02}:{:02}:{:02}.{micros:06}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// One figure of a round, for a row of the table.
type Figure = fn(&Round) -> f64;

/// The times of one round, in ms from the pod's Ready.
struct Round {
    create_to_ready: f64,
    slice: f64,
    cluster_ip: f64,
    node_port: f64,
}

pub async fn run(bin: &Path, wasm: &Path, args: &ReadyArgs, opts: &NodeOpts) -> Result<()> {
    let mut setup = Setup::start(bin, wasm, opts).await?;
    let (image, server) = (setup.image.clone(), &mut setup.server);
    let client = server.client()?;
    let mut watch = PodWatch::start(server.client()?, &server.url).await?;
    let mut slices = watch_slices(server.client()?, &server.url).await?;
    let resp = client
        .post(format!("{}/api/v1/namespaces/default/services", server.url))
        .json(&json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE},
            "spec": {"type": "NodePort", "selector": {"app": SERVICE},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("creating the Service: {} {}", resp.status(), resp.text().await?);
    }
    let service: Value = resp.json().await?;
    let cluster_ip: std::net::Ipv4Addr =
        service["spec"]["clusterIP"].as_str().context("the Service got no ClusterIP")?.parse()?;
    let node_port = service["spec"]["ports"][0]["nodePort"].as_u64().context("the Service got no NodePort")?;
    let vip = SocketAddr::from((cluster_ip, 80));
    let np = SocketAddr::from(([127, 0, 0, 1], u16::try_from(node_port)?));
    let table = skiff_node::proxy::nft::table_name(&server.net.node);
    wait_no_endpoint(&table, vip, np).await.with_context(|| format!("server log tail:\n{}", server.log_tail(30)))?;
    wait_refused(vip, args.interval).await?;
    eprintln!("svc-ready: Service {SERVICE} at {vip} and {np} refuses (no endpoint); {} rounds …", args.rounds);

    let mut rounds = Vec::with_capacity(args.rounds);
    for i in 0..args.rounds {
        let name = format!("sr-{i:04}");
        while slices.try_recv().is_ok() {}
        let via_vip = tokio::spawn(first_answer(vip, name.clone(), args.interval));
        let via_np = tokio::spawn(first_answer(np, name.clone(), args.interval));
        let created = Instant::now();
        create(&client, &server.url, pod(&name, &image)).await?;
        if !watch.wait_ready(&name, STEP_LIMIT).await? {
            bail!("{name} was not Ready within {} s\nserver log tail:\n{}", STEP_LIMIT.as_secs(), server.log_tail(30));
        }
        let times = watch.pods.get(&name).cloned().unwrap_or_default();
        let (ready, ip) = (times.ready.context("Ready without a time")?, times.ip.context("a Ready pod without IP")?);
        let cluster_at = via_vip.await??;
        let node_at = via_np.await??;
        let slice_at = loop {
            match tokio::time::timeout(STEP_LIMIT, slices.recv()).await {
                Ok(Some((addr, at))) if addr == ip => break at,
                Ok(Some(_)) => {}
                Ok(None) => bail!("the EndpointSlice watch ended"),
                Err(_) => bail!("no ready endpoint {ip} in an EndpointSlice within {} s", STEP_LIMIT.as_secs()),
            }
        };
        let round = Round {
            create_to_ready: between(created, ready),
            slice: between(ready, slice_at),
            cluster_ip: between(ready, cluster_at),
            node_port: between(ready, node_at),
        };
        eprintln!(
            "svc-ready: {name} ({ip}) Ready at {} ({} ms after create); EndpointSlice +{} ms, ClusterIP +{} ms, NodePort +{} ms",
            wall(ready),
            ms(round.create_to_ready),
            ms(round.slice),
            ms(round.cluster_ip),
            ms(round.node_port)
        );
        rounds.push(round);

        let resp = client.delete(format!("{}/api/v1/namespaces/default/pods/{name}", server.url)).send().await?;
        if !resp.status().is_success() {
            bail!("deleting {name}: {} {}", resp.status(), resp.text().await?);
        }
        wait_no_endpoint(&table, vip, np).await?;
        wait_refused(vip, args.interval).await?;
        wait_refused(np, args.interval).await?;
        server.check_alive()?;
    }
    drop(watch); // before the server goes, or it reports the broken watch
    server.report_log();
    server.stop();

    println!(
        "{} rounds; a new connection every {} ms per path; reference: the pod's Ready=True as the harness's pod watch delivers it.",
        rounds.len(),
        args.interval.as_millis()
    );
    println!();
    println!("| from the pod's Ready to | p50 ms | p90 ms | p99 ms | max ms | min ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    let rows: [(&str, Figure); 5] = [
        ("its endpoint ready in the EndpointSlice (harness watch)", |r| r.slice),
        ("**first answer through the ClusterIP**", |r| r.cluster_ip),
        ("**first answer through the NodePort (127.0.0.1)**", |r| r.node_port),
        ("(EndpointSlice to first answer through the ClusterIP)", |r| r.cluster_ip - r.slice),
        ("(create to Ready, for scale)", |r| r.create_to_ready),
    ];
    for (what, f) in rows {
        let l = Latencies::from_ms(rounds.iter().map(f).collect());
        println!(
            "| {what} | {} | {} | **{}** | {} | {} |",
            ms(l.p(50.0)),
            ms(l.p(90.0)),
            ms(l.p(99.0)),
            ms(l.max()),
            ms(l.0.first().copied().unwrap_or(f64::NAN))
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_and_names() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsr-0001";
        assert_eq!(parse_response(plain), Probe::Answer(200, "sr-0001".into()));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\nsr-0001\r\n0\r\n\r\n";
        let Probe::Answer(200, body) = parse_response(chunked) else { panic!("not parsed") };
        assert!(names(&body, "sr-0001"));
        assert!(!names(&body, "sr-0010"));
        assert!(matches!(parse_response(b"garbage"), Probe::Failed(_)));
        assert!(matches!(parse_response(b"HTTP/1.1 x\r\n\r\n"), Probe::Failed(_)));
    }

    #[test]
    fn signed_intervals() {
        let a = Instant::now();
        let b = a + Duration::from_millis(5);
        assert!((between(a, b) - 5.0).abs() < 1e-9);
        assert!((between(b, a) + 5.0).abs() < 1e-9);
    }
}
