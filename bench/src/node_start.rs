//! `node-start`: pod start latency on a warm node. One warm-up pod pulls and compiles the image;
//! then N `hello-http` pods are created one after the other, each once the previous is Ready, and
//! each is timed from just before its create request to the moment a pod watch (opened before any
//! create) shows it Running, and Ready.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::cluster::cpu_seconds;
use crate::node_cluster::{children_cpu_seconds, NodeOpts, Setup};
use crate::node_pods::{create, hello_http, PodWatch};
use crate::stats::{count, ms, Latencies};

/// How long one pod may take to become Ready before it is counted as not Ready.
const POD_TIMEOUT: Duration = Duration::from_secs(60);

fn metric(m: &HashMap<String, f64>, name: &str) -> String {
    m.get(name).map_or("–".into(), |v| format!("{v}"))
}

pub async fn run(bin: &Path, wasm: &Path, pods: usize, opts: &NodeOpts) -> Result<()> {
    let mut setup = Setup::start(bin, wasm, opts).await?;
    let (image, server) = (setup.image.clone(), &mut setup.server);
    let client = server.client()?;
    let mut watch = PodWatch::start(server.client()?, &server.url).await?;
    let at_start = server.metrics().await?;

    eprintln!("node-start: warm-up pod (image pull and compile) …");
    let started = Instant::now();
    create(&client, &server.url, hello_http("warm", &image)).await?;
    if !watch.wait_ready("warm", Duration::from_secs(120)).await? {
        bail!("the warm-up pod was not Ready within 120 s\nserver log tail:\n{}", server.log_tail(30));
    }
    let warm = watch.pods.get("warm").cloned().unwrap_or_default();
    let since = |t: Option<Instant>, from: Instant| t.map_or(f64::NAN, |t| (t - from).as_secs_f64() * 1000.0);
    let after_warm = server.metrics().await?;

    eprintln!("node-start: {pods} pods, one after the other …");
    let (cpu_before, children_before) = (cpu_seconds(Some(server.pid())), children_cpu_seconds(server.pid()));
    let (mut to_running, mut to_ready, mut creates, mut not_ready) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let run_started = Instant::now();
    for i in 0..pods {
        let name = format!("start-{i}");
        let sent = Instant::now();
        creates.push(create(&client, &server.url, hello_http(&name, &image)).await?);
        if !watch.wait_ready(&name, POD_TIMEOUT).await? {
            not_ready += 1;
            eprintln!("node-start: {name} not Ready after {} s", POD_TIMEOUT.as_secs());
            server.check_alive()?;
        }
        let t = watch.pods.get(&name).cloned().unwrap_or_default();
        if t.running.is_some() {
            to_running.push(since(t.running, sent));
        }
        if t.ready.is_some() {
            to_ready.push(since(t.ready, sent));
        }
        if (i + 1) % 50 == 0 {
            eprintln!(
                "node-start: {} pods Ready after {:.1} s",
                i + 1 - not_ready,
                run_started.elapsed().as_secs_f64()
            );
        }
    }
    let run_time = run_started.elapsed();
    let cpu = cpu_seconds(Some(server.pid())) - cpu_before;
    let children = children_cpu_seconds(server.pid()) - children_before;
    let at_end = server.metrics().await?;
    server.check_alive()?;
    server.report_log();
    // The watch goes first: it would retry while the server stops.
    let broken = std::mem::take(&mut watch.broken);
    drop(watch);
    let stopped = server.stop();

    let (running, ready, creates) =
        (Latencies::from_ms(to_running), Latencies::from_ms(to_ready), Latencies::from_durations(creates));
    println!("| pods | from just before the create request to the watch showing … | samples | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for (what, l) in [
        ("phase Running", &running),
        ("condition Ready True", &ready),
        ("(the create request itself, send → 201)", &creates),
    ] {
        println!(
            "| {} | {what} | {} | **{}** | {} | **{}** | {} |",
            count(pods),
            count(l.len()),
            ms(l.p(50.0)),
            ms(l.p(90.0)),
            ms(l.p(99.0)),
            ms(l.max())
        );
    }
    println!();
    println!("| kubelet /metrics | skiff_wasm_compiles_total | skiff_image_pulls_total | skiff_node_pods | skiff_sandboxes_pooled |");
    println!("|---|---:|---:|---:|---:|");
    for (when, m) in
        [("at start", &at_start), ("after the warm-up pod", &after_warm), (&*format!("after all {pods}"), &at_end)]
    {
        println!(
            "| {when} | **{}** | {} | {} | {} |",
            metric(m, "skiff_wasm_compiles_total"),
            metric(m, "skiff_image_pulls_total"),
            metric(m, "skiff_node_pods"),
            metric(m, "skiff_sandboxes_pooled"),
        );
    }
    println!();
    println!(
        "Warm-up pod (cold: image pull and compile): Running after {} ms, Ready after {} ms. \
         {} pods in {:.1} s, {} not Ready within {} s each; server CPU {:.1} ms per pod plus {:.1} ms in its child processes (CNI plugins; sandbox pool {}). \
         Server stopped on SIGTERM in {:.1} s{}, {} leftover netns/bridges.",
        ms(since(warm.running, started)),
        ms(since(warm.ready, started)),
        count(pods),
        run_time.as_secs_f64(),
        not_ready,
        POD_TIMEOUT.as_secs(),
        cpu / pods as f64 * 1000.0,
        children / pods as f64 * 1000.0,
        opts.sandbox_pool,
        stopped.seconds,
        if stopped.clean { "" } else { " (killed after the grace period)" },
        stopped.leftovers,
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
