//! `node-death`: the server with its in-process node plus a second real node (a `skiff agent` process on
//! its own bridge and pod CIDR), both with the default lifecycle settings (node monitor grace period
//! 20 s, default unreachable toleration 30 s). Per run: a Deployment of `hello-http` replicas lands
//! entirely on the second node (the first cordoned meanwhile, then uncordoned), the agent gets SIGKILL,
//! and a poll every 100 ms times kill → the node's Ready condition `Unknown`, → every old replica
//! evicted (deleted or terminating), → all replacements Running and Ready on the first node. The agent
//! is then started again as the same node for the next run.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::agent_node::{ready_condition, AgentNode};
use crate::node_cluster::{NodeOpts, NodeServer, Setup};
use crate::node_pods::{delete, deployment, hello_http_container, post, DEPLOYMENTS};
use crate::sched::cordon;

/// How often the node and the pods are looked at.
const POLL: Duration = Duration::from_millis(100);

pub struct DeathArgs {
    pub runs: usize,
    pub replicas: usize,
    /// How long after the kill the replacements may take.
    pub cap: Duration,
}

/// Seconds from the kill to each milestone (`None`: not reached within the cap).
#[derive(Default)]
struct Run {
    unknown: Option<f64>,
    evicted: Option<f64>,
    running: Option<f64>,
    ready: Option<f64>,
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The pods with `app=<app>`.
async fn pods_of(client: &reqwest::Client, base: &str, app: &str) -> Result<Vec<Value>> {
    let list: Value = client
        .get(format!("{base}/api/v1/namespaces/default/pods"))
        .query(&[("labelSelector", format!("app={app}"))])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

pub async fn run(bin: &Path, wasm: &Path, args: &DeathArgs, opts: &NodeOpts) -> Result<()> {
    let mut setup = Setup::start(bin, wasm, opts).await?;
    let image = setup.image.clone();
    let server = &mut setup.server;
    let mut agent = AgentNode::start(bin, server, opts.cidr_prefix).await?;
    eprintln!(
        "node-death: second node {} Ready (bridge {}, pod CIDR {})",
        agent.net.node, agent.net.bridge, agent.net.cidr
    );
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        if i > 1 {
            eprintln!("node-death: starting the agent of {} again …", agent.net.node);
            agent.respawn(server).await?;
        }
        let run = one(server, &mut agent, &image, &format!("d{i}"), args).await?;
        let show = |v: Option<f64>| v.map_or("not reached".into(), |s| format!("{s:.1} s"));
        eprintln!(
            "node-death: run {i}: Unknown {}, evicted {}, replacements Ready {}",
            show(run.unknown),
            show(run.evicted),
            show(run.ready)
        );
        runs.push(run);
    }
    server.check_alive()?;
    server.report_log();
    drop(agent);
    let stopped = server.stop();

    let cell = |v: Option<f64>| v.map_or("not reached".into(), |s| format!("{s:.1}"));
    println!(
        "| run | replicas | kill → node `Unknown` (s) | kill → all old replicas evicted (s) | kill → all replacements Running (s) | **kill → all replacements Ready (s)** |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (i, r) in runs.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} | **{}** |",
            i + 1,
            args.replicas,
            cell(r.unknown),
            cell(r.evicted),
            cell(r.running),
            cell(r.ready)
        );
    }
    let mean = |f: fn(&Run) -> Option<f64>| {
        let v: Vec<f64> = runs.iter().filter_map(f).collect();
        if v.len() == runs.len() && !v.is_empty() {
            format!("{:.1}", v.iter().sum::<f64>() / v.len() as f64)
        } else {
            "–".into()
        }
    };
    println!(
        "| mean | | {} | {} | {} | **{}** |",
        mean(|r| r.unknown),
        mean(|r| r.evicted),
        mean(|r| r.running),
        mean(|r| r.ready)
    );
    println!();
    println!(
        "Polled every {} ms (list of the Deployment's pods and GET of the node). Server stopped on SIGTERM in {:.1} s{}, \
         {} leftovers.",
        POLL.as_millis(),
        stopped.seconds,
        if stopped.clean { "" } else { " (killed after the grace period)" },
        stopped.leftovers
    );
    Ok(())
}

/// One run: Deployment `app` on the second node, the agent killed, the milestones timed.
async fn one(server: &mut NodeServer, agent: &mut AgentNode, image: &str, app: &str, args: &DeathArgs) -> Result<Run> {
    let client = server.client()?;
    let base = server.url.clone();
    let (first, second) = (server.net.node.clone(), agent.net.node.clone());
    cordon(&client, &base, &first, true).await?;
    post(&client, &base, DEPLOYMENTS, &deployment(app, args.replicas, hello_http_container(image), 2)).await?;
    let placed = Instant::now();
    let old: HashSet<String> = loop {
        server.check_alive()?;
        let pods = pods_of(&client, &base, app).await?;
        let on_second = pods.iter().filter(|p| p["spec"]["nodeName"] == second.as_str() && is_ready(p)).count();
        if on_second >= args.replicas {
            break pods.iter().filter_map(|p| p["metadata"]["name"].as_str().map(String::from)).collect();
        }
        if placed.elapsed() > Duration::from_secs(120) {
            bail!(
                "{app}: {on_second} of {} replicas Ready on {second} after 120 s\nagent log tail:\n{}",
                args.replicas,
                agent.log_tail(20)
            );
        }
        tokio::time::sleep(POLL).await;
    };
    cordon(&client, &base, &first, false).await?;
    eprintln!("node-death: {app}: {} replicas Ready on {second}; killing its agent (SIGKILL) …", old.len());

    let t0 = Instant::now();
    agent.kill9();
    let mut run = Run::default();
    let since = || Some(t0.elapsed().as_secs_f64());
    while t0.elapsed() < args.cap && run.ready.is_none() {
        server.check_alive()?;
        let node: Value =
            client.get(format!("{base}/api/v1/nodes/{second}")).send().await?.error_for_status()?.json().await?;
        if run.unknown.is_none() && ready_condition(&node) == "Unknown" {
            run.unknown = since();
        }
        let pods = pods_of(&client, &base, app).await?;
        let live_old = pods.iter().filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["metadata"]["name"].as_str().is_some_and(|n| old.contains(n))
        });
        if run.evicted.is_none() && live_old.count() == 0 {
            run.evicted = since();
        }
        let new_on_first: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && p["spec"]["nodeName"] == first.as_str())
            .collect();
        let running = new_on_first.iter().filter(|p| p["status"]["phase"] == "Running").count();
        if run.running.is_none() && running >= args.replicas {
            run.running = since();
        }
        if new_on_first.iter().filter(|p| is_ready(p)).count() >= args.replicas {
            run.ready = since();
        }
        tokio::time::sleep(POLL).await;
    }
    // What the dead agent could not remove; its pods' objects stay Terminating until it comes back.
    agent.net.remove_leftovers();
    delete(&client, &base, &format!("{DEPLOYMENTS}/{app}")).await?;
    Ok(run)
}
