//! `node-burst`: N `hello-http` pods created at once by concurrent clients on a warm node: the time
//! from the first create until the pod watch shows all of them Ready, and the server's resident
//! memory per idle pod once they have all been running for a few seconds. Nothing is deleted;
//! the agent tears the pods down when the server gets SIGTERM at the end (timed too).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::cluster::{cpu_seconds, rss};
use crate::create::PODS;
use crate::node_cluster::{children_cpu_seconds, NodeOpts, Setup};
use crate::node_pods::{create, create_burst, hello_http, PodWatch};
use crate::stats::{count, mb, ms, percentile, Latencies};

const PREFIX: &str = "burst";

pub struct BurstArgs {
    pub pods: usize,
    pub clients: usize,
    /// How long after the first create the pods may take to be Ready.
    pub cap: Duration,
    /// Idle time before the second RSS reading.
    pub idle: Duration,
}

/// Seconds from `from` to each of `times`, sorted.
pub fn offsets(times: impl Iterator<Item = Instant>, from: Instant) -> Vec<f64> {
    let mut v: Vec<f64> = times.map(|t| t.saturating_duration_since(from).as_secs_f64()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// "p50 / p90 / p99 / last" of sorted seconds, or how many there were if not all.
pub fn spread(v: &[f64], total: usize) -> String {
    let last = if v.len() == total {
        format!("**{:.2}**", v.last().copied().unwrap_or(f64::NAN))
    } else {
        format!("only {} of {}", count(v.len()), count(total))
    };
    format!("{:.2} | {:.2} | {:.2} | {last}", percentile(v, 50.0), percentile(v, 90.0), percentile(v, 99.0))
}

/// The pods named `prefix…` by phase and readiness, from a list (independent of the watch), and
/// their containers' restarts.
pub async fn tally(client: &reqwest::Client, base: &str, prefix: &str) -> Result<String> {
    let list: serde_json::Value = client.get(format!("{base}{PODS}")).send().await?.error_for_status()?.json().await?;
    let mut by: std::collections::BTreeMap<String, usize> = Default::default();
    let mut restarts = 0;
    for pod in list["items"].as_array().into_iter().flatten() {
        if !pod["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix)) {
            continue;
        }
        let statuses = pod["status"]["containerStatuses"].as_array().into_iter().flatten();
        restarts += statuses.map(|c| c["restartCount"].as_u64().unwrap_or(0)).sum::<u64>();
        let ready = pod["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        let phase = pod["status"]["phase"].as_str().unwrap_or("no phase");
        *by.entry(format!("{phase}{}", if ready { " and Ready" } else { "" })).or_default() += 1;
    }
    let by: Vec<String> = by.iter().map(|(k, n)| format!("{k}: {}", count(*n))).collect();
    Ok(format!("{}; container restarts: {restarts}", by.join(", ")))
}

pub async fn run(bin: &Path, wasm: &Path, args: &BurstArgs, opts: &NodeOpts) -> Result<()> {
    let mut setup = Setup::start(bin, wasm, opts).await?;
    let (image, server) = (setup.image.clone(), &mut setup.server);
    let pid = server.pid();
    let client = server.client()?;
    let mut watch = PodWatch::start(server.client()?, &server.url).await?;
    let (rss_empty, _) = rss(pid)?;

    eprintln!("node-burst: warm-up pod (image pull and compile) …");
    create(&client, &server.url, hello_http("warm", &image)).await?;
    if !watch.wait_ready("warm", Duration::from_secs(120)).await? {
        bail!("the warm-up pod was not Ready within 120 s\nserver log tail:\n{}", server.log_tail(30));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_before, _) = rss(pid)?;
    let before = server.metrics().await?;

    eprintln!("node-burst: creating {} pods with {} clients …", args.pods, args.clients);
    let clients: Vec<reqwest::Client> = (0..args.clients).map(|_| server.client()).collect::<Result<_>>()?;
    let released = Arc::new(tokio::sync::Barrier::new(args.clients + 1));
    let creator = {
        let (base, image, released, total) = (server.url.clone(), image.clone(), released.clone(), args.pods);
        tokio::spawn(async move {
            let burst = create_burst(clients, &base, &image, PREFIX, total, released).await;
            (burst, Instant::now())
        })
    };
    released.wait().await;
    let t0 = Instant::now();
    let (cpu_before, children_before) = (cpu_seconds(Some(pid)), children_cpu_seconds(pid));
    let is_burst = |name: &str| name.starts_with(PREFIX);
    let mut last_report = Instant::now();
    let all_ready = watch
        .wait_until(t0 + args.cap, |pods| {
            let ready = pods.iter().filter(|(n, t)| is_burst(n) && t.ready.is_some()).count();
            if last_report.elapsed() >= Duration::from_secs(2) {
                last_report = Instant::now();
                eprintln!("node-burst: {ready} Ready after {:.0} s", t0.elapsed().as_secs_f64());
            }
            ready == args.pods
        })
        .await?;
    let ready_time = t0.elapsed();
    let cpu = cpu_seconds(Some(pid)) - cpu_before;
    let children = children_cpu_seconds(pid) - children_before;
    let tally = tally(&client, &server.url, PREFIX).await.unwrap_or_else(|e| format!("(listing failed: {e:#})"));
    let (burst, creates_done) = creator.await?;
    let burst = burst?;
    server.check_alive()?;
    if let Some(e) = &burst.first_error {
        eprintln!("node-burst: {} create errors; first: {e}", burst.errors);
    }
    let pods: Vec<_> = watch.pods.iter().filter(|(n, _)| is_burst(n)).map(|(_, t)| t.clone()).collect();
    let running = offsets(pods.iter().filter_map(|t| t.running), t0);
    let ready = offsets(pods.iter().filter_map(|t| t.ready), t0);
    let not_ready = args.pods - ready.len();

    eprintln!("node-burst: idle for {} s …", args.idle.as_secs());
    let idle_cpu_before = cpu_seconds(Some(pid));
    tokio::time::sleep(args.idle).await;
    let idle_cpu = cpu_seconds(Some(pid)) - idle_cpu_before;
    let (rss_after, peak) = rss(pid)?;
    let after = server.metrics().await?;
    server.check_alive()?;
    server.report_log();
    eprintln!("node-burst: stopping the server (SIGTERM: the agent removes {} pods) …", args.pods + 1);
    // The watch goes first: it would retry while the server stops.
    let broken = std::mem::take(&mut watch.broken);
    drop(watch);
    let stopped = server.stop();

    let creates = Latencies::from_durations(burst.latencies);
    println!("| pods | clients | seconds from the first create until … | p50 | p90 | p99 | all |");
    println!("|---:|---:|---|---:|---:|---:|---:|");
    let n = count(args.pods);
    println!(
        "| {n} | {} | … the pod was created (201) | – | – | – | {:.2} |",
        args.clients,
        (creates_done - t0).as_secs_f64()
    );
    println!("| {n} | {} | … the watch showed it Running | {} |", args.clients, spread(&running, args.pods));
    println!("| {n} | {} | … the watch showed it Ready | {} |", args.clients, spread(&ready, args.pods));
    println!();
    let per_pod = (rss_after as f64 - rss_before as f64) / args.pods as f64;
    println!("| server VmRSS | MB |");
    println!("|---|---:|");
    println!("| node Ready, no pod | {} |", mb(rss_empty));
    println!("| after the warm-up pod (image pulled, compiled) | {} |", mb(rss_before));
    println!(
        "| {} s after the burst ({} pods Ready) | **{}** |",
        args.idle.as_secs(),
        count(ready.len()),
        mb(rss_after)
    );
    println!("| peak (VmHWM) | {} |", mb(peak));
    println!(
        "| **per idle pod**: (after − after warm-up) / {n} | **{:.2} MiB** ({:.0} KiB) |",
        per_pod / 1048576.0,
        per_pod / 1024.0
    );
    println!();
    let metric =
        |m: &std::collections::HashMap<String, f64>, k: &str| m.get(k).map_or("–".into(), |v| format!("{v}"));
    println!(
        "{} of {n} pods Ready {} ({:.2} s after the first create; cap {} s){}. Create requests: p50 {} ms, p99 {} ms, \
         {} errors. Server CPU from the first create until all were Ready: {:.1} s ({:.1} ms per pod), plus {:.1} s in its \
         child processes (CNI plugins; {:.1} ms per pod). \
         While idle (readiness probes of every pod each second): server CPU {:.2} cores. Kubelet /metrics before → after: skiff_wasm_compiles_total {} → **{}**, skiff_image_pulls_total {} → {}, \
         skiff_node_pods {} → {}, skiff_sandboxes_pooled {} → {} (sandbox pool {}). \
         Server stopped on SIGTERM in {:.1} s{}, {} leftover netns/bridges.",
        count(ready.len()),
        if all_ready { "in time" } else { "at the cap" },
        ready_time.as_secs_f64(),
        args.cap.as_secs(),
        if not_ready > 0 { format!("; **{} not Ready**", count(not_ready)) } else { String::new() },
        ms(creates.p(50.0)),
        ms(creates.p(99.0)),
        burst.errors,
        cpu,
        cpu / args.pods as f64 * 1000.0,
        children,
        children / args.pods as f64 * 1000.0,
        idle_cpu / args.idle.as_secs_f64(),
        metric(&before, "skiff_wasm_compiles_total"),
        metric(&after, "skiff_wasm_compiles_total"),
        metric(&before, "skiff_image_pulls_total"),
        metric(&after, "skiff_image_pulls_total"),
        metric(&before, "skiff_node_pods"),
        metric(&after, "skiff_node_pods"),
        metric(&before, "skiff_sandboxes_pooled"),
        metric(&after, "skiff_sandboxes_pooled"),
        opts.sandbox_pool,
        stopped.seconds,
        if stopped.clean { "" } else { " (killed after the grace period)" },
        stopped.leftovers,
    );
    println!();
    let thresh = |n: u8| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/neigh/default/gc_thresh{n}"))
            .map_or("?".into(), |v| v.trim().to_string())
    };
    println!(
        "The burst pods by a list when the wait ended: {tally}. Host neighbour (ARP) table, shared by all network \
         namespaces, each pod taking two entries (host → pod, pod → gateway): gc_thresh1/2/3 = {}/{}/{}.",
        thresh(1),
        thresh(2),
        thresh(3)
    );
    if let Some(first) = broken.first() {
        println!();
        println!(
            "**The pod watch broke {} time(s)** (first: {first}) and was re-listed: a pod first seen Running or \
             Ready in a re-list is stamped with the re-list's time.",
            broken.len()
        );
    }
    Ok(())
}
