//! `ctrl-rss`: the server's resident memory under the controllers at scale: a server without a node
//! of its own (`--no-agent`), N hollow nodes (`skiff agent --hollow N`, one process beside it) and
//! P pods created through D Deployments (the ReplicaSet controller creates them, the scheduler binds
//! them, the hollow nodes report them Running). Reports the time from the first Deployment create
//! until a pod watch shows all P Running, and VmRSS: idle with the nodes, when all are Running, and
//! after settling (sampled every 250 ms in between, and VmHWM).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::cluster::{rss, Backend, Cpu, PeakRss, Server};
use crate::node_pods::{deployment, post, PodWatch, DEPLOYMENTS};
use crate::sched::start_hollow;
use crate::stats::{count, mb};

pub struct CtrlArgs {
    pub nodes: usize,
    pub pods: usize,
    pub deployments: usize,
    /// How long after the first create the pods may take to be Running.
    pub cap: Duration,
    /// Idle time after convergence before the last reading.
    pub settle: Duration,
}

/// Sums of the Deployments' status fields.
async fn deployment_status(client: &reqwest::Client, base: &str) -> Result<(u64, u64, u64)> {
    let list: Value = client.get(format!("{base}{DEPLOYMENTS}")).send().await?.error_for_status()?.json().await?;
    let sum = |field: &str| {
        list["items"].as_array().into_iter().flatten().map(|d| d["status"][field].as_u64().unwrap_or(0)).sum()
    };
    Ok((sum("replicas"), sum("readyReplicas"), sum("availableReplicas")))
}

pub async fn run(bin: &Path, args: &CtrlArgs) -> Result<()> {
    if args.deployments == 0 || !args.pods.is_multiple_of(args.deployments) {
        bail!("--pods must be a multiple of --deployments");
    }
    let mut server = Server::start(bin, Backend::Sqlite).await?;
    let pid = server.pid();
    let (rss_empty, _) = rss(pid)?;
    let (hollow, register_secs) = start_hollow(bin, &mut server, args.nodes).await?;
    let client = server.client()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_nodes, _) = rss(pid)?;
    let mut watch = PodWatch::start(server.client()?, &server.url).await?;

    let sampler = PeakRss::start(pid, rss_nodes, Duration::from_millis(250));
    let per = args.pods / args.deployments;
    eprintln!("ctrl-rss: {} Deployments of {per} replicas on {} hollow nodes …", args.deployments, args.nodes);
    // Hollow nodes run nothing: the image is never pulled.
    let container = json!({"name": "app", "image": "registry.invalid/app:1"});
    let cpu_before = Cpu::now(&server);
    let t0 = Instant::now();
    for i in 0..args.deployments {
        post(&client, &server.url, DEPLOYMENTS, &deployment(&format!("app{i}"), per, container.clone(), 30)).await?;
    }
    let created = t0.elapsed();
    let mut last_report = Instant::now();
    let converged = watch
        .wait_until(t0 + args.cap, |pods| {
            let running = pods.values().filter(|t| t.running.is_some()).count();
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!("ctrl-rss: {running} Running after {:.0} s", t0.elapsed().as_secs_f64());
            }
            running >= args.pods
        })
        .await?;
    let converge = t0.elapsed();
    let cpu = Cpu::now(&server).since(cpu_before);
    let (rss_converged, _) = rss(pid)?;
    let running = watch.pods.values().filter(|t| t.running.is_some()).count();
    let broken = std::mem::take(&mut watch.broken);
    drop(watch);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_convergence = deployment_status(&client, &server.url).await?;
    eprintln!("ctrl-rss: settling for {} s …", args.settle.as_secs());
    let settle_cpu = Cpu::now(&server);
    tokio::time::sleep(args.settle).await;
    let idle_cpu = Cpu::now(&server).since(settle_cpu);
    let peak = sampler.peak();
    drop(sampler);
    let (rss_settled, hwm) = rss(pid)?;
    let settled = deployment_status(&client, &server.url).await?;
    let (hollow_rss, _) = rss(hollow.pid()).unwrap_or((0, 0));
    server.check_alive()?;
    server.report_log();

    println!("| server VmRSS | MB |");
    println!("|---|---:|");
    println!("| started, no node | {} |", mb(rss_empty));
    println!("| {} hollow nodes Ready ({register_secs:.0} s) | {} |", count(args.nodes), mb(rss_nodes));
    println!(
        "| {} of {} pods Running ({:.1} s after the first create) | **{}** |",
        count(running),
        count(args.pods),
        converge.as_secs_f64(),
        mb(rss_converged)
    );
    println!("| {} s later | **{}** |", args.settle.as_secs(), mb(rss_settled));
    println!("| peak sampled every 250 ms / VmHWM | {} / **{}** |", mb(peak), mb(hwm));
    println!();
    println!(
        "{} Deployments of {} replicas created in {:.2} s; {} pods Running {} {:.1} s after the first create \
         (cap {} s). Deployments' status (replicas / ready / available), at convergence: {} / {} / {}, \
         {} s later: {} / {} / {}. Server CPU from the first create to convergence: {:.1} s; while settling: \
         {:.2} cores. The hollow agent's own RSS: {} MB.{}",
        args.deployments,
        count(per),
        created.as_secs_f64(),
        count(running),
        if converged { "(all)" } else { "(at the cap)" },
        converge.as_secs_f64(),
        args.cap.as_secs(),
        at_convergence.0,
        at_convergence.1,
        at_convergence.2,
        args.settle.as_secs(),
        settled.0,
        settled.1,
        settled.2,
        cpu.server,
        idle_cpu.server / args.settle.as_secs_f64().max(1e-9),
        mb(hollow_rss),
        if broken.is_empty() {
            String::new()
        } else {
            format!(" **The pod watch broke {} time(s)** (first: {}) and was re-listed.", broken.len(), broken[0])
        },
    );
    drop(hollow);
    Ok(())
}
