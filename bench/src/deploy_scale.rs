//! `deploy-scale`: a Deployment of N Wasm replicas on one real node (the server's in-process agent),
//! for an HTTP component (`hello-http`, Ready on `GET /healthz`) and for a long-running WASI preview 2
//! command (`tcp-echo`, a TCP server, Ready on a TCP connect): the time from creating the Deployment
//! to the pod watch showing all N Ready, and the server's resident memory meanwhile (sampled every
//! 100 ms, and its VmHWM). Each guest gets a fresh server, warmed by one bare pod of the same image
//! (pulled and compiled before the clock starts); the server's SIGTERM tears everything down.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::cluster::{cpu_seconds, rss, PeakRss};
use crate::node_burst::{offsets, spread, tally};
use crate::node_cluster::{children_cpu_seconds, NodeOpts, Setup};
use crate::node_pods::{
    create, deployment, hello_http_container, pod, post, tcp_echo_container, PodWatch, DEPLOYMENTS,
};

const SERVICES: &str = "/api/v1/namespaces/default/services";

/// A ClusterIP Service selecting the Deployment `name`'s pods.
fn service(name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    })
}

/// When the Service's Endpoints first held `replicas` ready addresses (read every 50 ms until
/// `deadline`; this is the harness, not the product, so it may poll).
async fn endpoints_caught_up(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    replicas: usize,
    deadline: Instant,
) -> Result<Option<Instant>> {
    let url = format!("{base}/api/v1/namespaces/default/endpoints/{name}");
    while Instant::now() < deadline {
        let resp = client.get(&url).send().await?;
        if resp.status().is_success() {
            let ep: Value = resp.json().await?;
            let subsets = ep["subsets"].as_array().map(Vec::as_slice).unwrap_or_default();
            let ready: usize = subsets.iter().map(|s| s["addresses"].as_array().map_or(0, Vec::len)).sum();
            if ready >= replicas {
                return Ok(Some(Instant::now()));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(None)
}
use crate::stats::{count, mb};

pub struct ScaleArgs {
    pub replicas: usize,
    /// How long after the create the replicas may take to be Ready.
    pub cap: Duration,
    /// A ClusterIP Service selects the replicas, so the endpoints controllers work through the burst.
    pub service: bool,
    /// Only this guest (`hello-http` or `tcp-echo`); both when `None`.
    pub only: Option<String>,
}

/// The guests compared.
#[derive(Clone, Copy)]
enum Guest {
    Http,
    TcpEcho,
}

impl Guest {
    fn file(self) -> &'static str {
        match self {
            Guest::Http => "hello-http.wasm",
            Guest::TcpEcho => "tcp-echo.wasm",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Guest::Http => "`hello-http` (HTTP component, httpGet probe)",
            Guest::TcpEcho => "`tcp-echo` (p2 command, TCP server, tcpSocket probe)",
        }
    }

    fn container(self, image: &str) -> Value {
        match self {
            Guest::Http => hello_http_container(image),
            Guest::TcpEcho => tcp_echo_container(image),
        }
    }
}

pub async fn run(bin: &Path, workloads: &Path, args: &ScaleArgs, opts: &NodeOpts) -> Result<()> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for guest in [Guest::Http, Guest::TcpEcho] {
        if args.only.as_deref().is_some_and(|only| !guest.file().starts_with(only)) {
            continue;
        }
        let (row, note) = one(bin, workloads, guest, args, opts).await?;
        rows.push(row);
        notes.push(note);
    }
    println!(
        "| guest | replicas | node's pod capacity | create → all Running (s) | create → Ready p50 | p90 | p99 | **all Ready (s)** | Service's Endpoints all ready (s) | server RSS before (MB) | peak sampled | VmHWM | after (MB) | server CPU (s) | CNI CPU (s) | stop (s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
    println!();
    for note in notes {
        println!("{note}");
        println!();
    }
    Ok(())
}

async fn one(
    bin: &Path,
    workloads: &Path,
    guest: Guest,
    args: &ScaleArgs,
    opts: &NodeOpts,
) -> Result<(String, String)> {
    let name = match guest {
        Guest::Http => "web",
        Guest::TcpEcho => "echo",
    };
    let mut setup = Setup::start(bin, &workloads.join(guest.file()), opts).await?;
    let (image, server) = (setup.image.clone(), &mut setup.server);
    let pid = server.pid();
    let client = server.client()?;
    let node: Value = client
        .get(format!("{}/api/v1/nodes/{}", server.url, server.net.node))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let capacity = node["status"]["allocatable"]["pods"].as_str().unwrap_or("?").to_string();
    let mut watch = PodWatch::start(server.client()?, &server.url).await?;

    eprintln!("deploy-scale: {name}: warm-up pod (image pull and compile) …");
    create(&client, &server.url, pod("warm", guest.container(&image))).await?;
    if !watch.wait_ready("warm", Duration::from_secs(120)).await? {
        bail!("the warm-up pod was not Ready within 120 s\nserver log tail:\n{}", server.log_tail(30));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_before, _) = rss(pid)?;

    let sampler = PeakRss::start(pid, rss_before, Duration::from_millis(100));
    eprintln!("deploy-scale: {name}: creating a Deployment of {} replicas …", args.replicas);
    if args.service {
        post(&client, &server.url, SERVICES, &service(name)).await?;
    }
    let (cpu_before, children_before) = (cpu_seconds(Some(pid)), children_cpu_seconds(pid));
    let body = deployment(name, args.replicas, guest.container(&image), 5);
    let t0 = Instant::now();
    post(&client, &server.url, DEPLOYMENTS, &body).await?;
    let prefix = format!("{name}-");
    let mine = |n: &str| n.starts_with(&prefix);
    let mut last_report = Instant::now();
    let all_ready = watch
        .wait_until(t0 + args.cap, |pods| {
            let ready = pods.iter().filter(|(n, t)| mine(n) && t.ready.is_some()).count();
            if last_report.elapsed() >= Duration::from_secs(2) {
                last_report = Instant::now();
                eprintln!("deploy-scale: {name}: {ready} Ready after {:.0} s", t0.elapsed().as_secs_f64());
            }
            ready >= args.replicas
        })
        .await?;
    let waited = t0.elapsed();
    let endpoints_ready = if args.service {
        match endpoints_caught_up(&client, &server.url, name, args.replicas, t0 + args.cap).await? {
            Some(at) => format!("{:.2}", at.duration_since(t0).as_secs_f64()),
            None => "not in time".into(),
        }
    } else {
        "(no Service)".into()
    };
    let cpu = cpu_seconds(Some(pid)) - cpu_before;
    let children = children_cpu_seconds(pid) - children_before;
    let peak = sampler.peak();
    drop(sampler);
    let tally = tally(&client, &server.url, &prefix).await.unwrap_or_else(|e| format!("(listing failed: {e:#})"));
    let status: Value =
        client.get(format!("{}{DEPLOYMENTS}/{name}", server.url)).send().await?.error_for_status()?.json().await?;
    server.check_alive()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_after, hwm) = rss(pid)?;
    server.check_alive()?;
    server.report_log();
    let times: Vec<_> = watch.pods.iter().filter(|(n, _)| mine(n)).map(|(_, t)| t.clone()).collect();
    let running = offsets(times.iter().filter_map(|t| t.running), t0);
    let ready = offsets(times.iter().filter_map(|t| t.ready), t0);
    let broken = std::mem::take(&mut watch.broken);
    drop(watch);
    eprintln!("deploy-scale: {name}: stopping the server (SIGTERM: the agent removes {} pods) …", args.replicas + 1);
    let stopped = server.stop();

    let all_running = if running.len() >= args.replicas {
        format!("{:.2}", running.last().copied().unwrap_or(f64::NAN))
    } else {
        format!("only {}", count(running.len()))
    };
    let row = format!(
        "| {} | {} | {capacity} | {all_running} | {} | {endpoints_ready} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
        guest.describe(),
        count(args.replicas),
        spread(&ready, args.replicas),
        mb(rss_before),
        mb(peak),
        mb(hwm),
        mb(rss_after),
        cpu,
        children,
        stopped.seconds,
    );
    let note = format!(
        "{}: {} of {} replicas Ready {} ({:.2} s after the create, cap {} s); Deployment status: readyReplicas {}, \
         availableReplicas {}; pods by a list: {tally}. Server stopped on SIGTERM in {:.1} s{}, {} leftovers.{}",
        guest.describe(),
        count(ready.len()),
        count(args.replicas),
        if all_ready { "in time" } else { "at the cap" },
        waited.as_secs_f64(),
        args.cap.as_secs(),
        status["status"]["readyReplicas"],
        status["status"]["availableReplicas"],
        stopped.seconds,
        if stopped.clean { "" } else { " (killed after the grace period)" },
        stopped.leftovers,
        if broken.is_empty() {
            String::new()
        } else {
            format!(" **The pod watch broke {} time(s)** (first: {}) and was re-listed.", broken.len(), broken[0])
        },
    );
    Ok((row, note))
}
