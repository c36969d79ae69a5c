//! `sched-throughput`: scheduler throughput, pods bound per second, with N hollow nodes
//! (`skiff agent --hollow N`, one process beside the server) and a burst of pods created by
//! concurrent clients. Binds are counted from a watch on pods (a pod counts once it has a
//! `spec.nodeName`), so the harness sees what any client sees. With `--prefill` the pods are
//! created while every node is cordoned and the clock starts when the nodes are uncordoned, so
//! the rate is the scheduler's alone.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use stamp::Stamp;

use crate::cluster::{die_with_parent, Backend, Cpu, Process, Server};
use crate::create::{create_pods, PODS};
use crate::stats::count;

mod stamp {
    use std::sync::Mutex;
    use std::time::Instant;

    /// The time of the last bind seen.
    #[derive(Default)]
    pub struct Stamp(Mutex<Option<Instant>>);

    impl Stamp {
        pub fn set(&self, t: Instant) {
            if let Ok(mut g) = self.0.lock() {
                *g = Some(t);
            }
        }
        pub fn get(&self) -> Option<Instant> {
            self.0.lock().ok().and_then(|g| *g)
        }
    }
}

/// Sets `spec.unschedulable` on node `name` (`kubectl cordon`/`uncordon`).
pub async fn cordon(client: &reqwest::Client, base: &str, name: &str, cordoned: bool) -> reqwest::Result<()> {
    let body = serde_json::json!({"spec": {"unschedulable": cordoned}}).to_string();
    client
        .patch(format!("{base}/api/v1/nodes/{name}"))
        .header("Content-Type", "application/merge-patch+json")
        .body(body)
        .send()
        .await?
        .error_for_status()
        .map(|_| ())
}

/// Sets `spec.unschedulable` on every node, 64 requests at a time.
async fn cordon_all(server: &Server, client: &reqwest::Client, cordoned: bool) -> Result<()> {
    let list: serde_json::Value =
        client.get(format!("{}/api/v1/nodes", server.url)).send().await?.error_for_status()?.json().await?;
    let names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["metadata"]["name"].as_str().map(String::from))
        .collect();
    let patches =
        futures::stream::iter(names).map(|name| async move { cordon(client, &server.url, &name, cordoned).await });
    let results: Vec<reqwest::Result<()>> = patches.buffer_unordered(64).collect().await;
    results.into_iter().collect::<reqwest::Result<Vec<()>>>()?;
    Ok(())
}

async fn ready_nodes(server: &Server, client: &reqwest::Client) -> Result<usize> {
    let list: serde_json::Value =
        client.get(format!("{}/api/v1/nodes", server.url)).send().await?.error_for_status()?.json().await?;
    Ok(skiff_testkit::ready_nodes(&list))
}

/// Follows pods from `rv`, counting distinct pods seen with a node.
async fn count_binds(
    client: reqwest::Client,
    url: String,
    bound: Arc<AtomicUsize>,
    last: Arc<Stamp>,
    total: usize,
) -> Result<()> {
    let resp = client.get(&url).send().await?.error_for_status()?;
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let ev: serde_json::Value = serde_json::from_slice(&line)?;
            if ev["type"] == "ERROR" {
                bail!("watch error: {ev}");
            }
            let obj = &ev["object"];
            if obj["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) {
                if let Some(name) = obj["metadata"]["name"].as_str() {
                    if seen.insert(name.to_string()) {
                        last.set(Instant::now());
                        bound.store(seen.len(), Ordering::Relaxed);
                        if seen.len() >= total {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
    Err(anyhow!("the pod watch ended after {} binds", seen.len()))
}

/// Starts `skiff agent --hollow N` against `server` (SIGKILLed on drop) and waits until the N nodes
/// are Ready; returns it and the seconds that took.
pub async fn start_hollow(bin: &Path, server: &mut Server, nodes: usize) -> Result<(Process, f64)> {
    let log = std::fs::File::create(server.dir.path().join("hollow.log"))?;
    let child = die_with_parent(&mut Command::new(bin))
        .args(["agent", "--server", &server.url, "--token-file"])
        .arg(server.dir.path().join("admin.token"))
        .args(["--hollow", &nodes.to_string()])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("spawning the hollow agent")?;
    let mut hollow = Process::new(child, "skiff agent --hollow");
    let client = server.client()?;
    eprintln!("registering {nodes} hollow nodes …");
    let registering = Instant::now();
    loop {
        hollow.check_alive()?;
        server.check_alive()?;
        if ready_nodes(server, &client).await.unwrap_or(0) >= nodes {
            return Ok((hollow, registering.elapsed().as_secs_f64()));
        }
        if registering.elapsed() > Duration::from_secs(600) {
            bail!("{nodes} hollow nodes did not become Ready within 600 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One row per node count.
pub async fn run(
    bin: &Path,
    node_counts: &[usize],
    pods: usize,
    clients: usize,
    cap: Duration,
    prefill: bool,
) -> Result<()> {
    let mut rows = Vec::new();
    for &nodes in node_counts {
        let mut server = Server::start(bin, Backend::Sqlite).await?;
        let client = server.client()?;
        let (hollow, register_secs) = start_hollow(bin, &mut server, nodes).await?;
        if prefill {
            cordon_all(&server, &client, true).await?;
        }
        let list: serde_json::Value =
            client.get(format!("{}{PODS}?limit=1", server.url)).send().await?.error_for_status()?.json().await?;
        let rv = list["metadata"]["resourceVersion"].as_str().context("list without resourceVersion")?.to_string();
        let url = format!("{}{PODS}?watch=1&resourceVersion={rv}&timeoutSeconds=3600", server.url);
        let (bound, last) = (Arc::new(AtomicUsize::new(0)), Arc::new(Stamp::default()));
        let watch = tokio::spawn(count_binds(server.client()?, url, Arc::clone(&bound), Arc::clone(&last), pods));
        eprintln!("sched-throughput: {nodes} nodes, creating {pods} pods with {clients} clients …");
        let mut cpu_before = Cpu::now(&server);
        let mut started = Instant::now();
        let created = create_pods(&server, &format!("s{nodes}"), pods, clients, cap, None).await?;
        let mut created_secs = started.elapsed().as_secs_f64();
        if prefill {
            eprintln!("sched-throughput: {} pods pending; uncordoning {nodes} nodes …", created.created);
            cpu_before = Cpu::now(&server);
            started = Instant::now();
            cordon_all(&server, &client, false).await?;
            created_secs = 0.0;
        }
        let bound_at_created = bound.load(Ordering::Relaxed);
        while bound.load(Ordering::Relaxed) < created.created && started.elapsed() < cap {
            server.check_alive()?;
            if watch.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cpu = Cpu::now(&server).since(cpu_before);
        let n = bound.load(Ordering::Relaxed);
        let all_secs = last.get().map_or(f64::NAN, |t| t.duration_since(started).as_secs_f64());
        let drain = if all_secs > created_secs {
            format!("{:.0}", (n.saturating_sub(bound_at_created)) as f64 / (all_secs - created_secs))
        } else {
            "-".into()
        };
        watch.abort();
        eprintln!("sched-throughput: {n} of {} bound in {all_secs:.1} s", created.created);
        rows.push(format!(
            "| {}{} | {} | {:.0} | {:.0} | {} | {all_secs:.1} | **{:.0}** | {drain} | {:.1} | {register_secs:.0} |",
            count(nodes),
            if prefill { " (pods created first, nodes cordoned)" } else { "" },
            count(created.created),
            created.rate(),
            created_secs,
            count(n),
            n as f64 / all_secs,
            cpu.server,
        ));
        drop(hollow);
    }
    println!("| hollow nodes | pods created | creates/s | create time (s) | bound | all bound after (s) | pods bound/s | bound/s after the last create | server CPU (s) | nodes Ready after (s) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}
