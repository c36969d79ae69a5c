//! `proxy-sync`: how long the node proxy takes to apply one changed endpoint with many Services.
//!
//! Runs the proxy's own rule generator (`skiff_node::proxy::nft`) and apply path (a netlink batch
//! when only set elements change, `nft -f -` otherwise, as `proxy::runner::apply_update`) on a
//! thread that first moves into a network namespace of its own (`unshare(CLONE_NEWNET)`): the
//! table lives and dies there, the host's rules are never touched, and the namespace goes with the
//! thread. Each Service has one TCP port, a ClusterIP, a NodePort and three endpoints; a round
//! replaces one endpoint of one Service (as an EndpointSlice update does) and measures generation
//! plus the transaction.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_node::proxy::model::{Endpoint, PortRules, Proto};
use skiff_node::proxy::nft::{self, Plan, Table};
use skiff_node::proxy::{netlink, runner};

use crate::stats::{ms, Latencies};

const NFT: &str = "/usr/sbin/nft";

fn apply(script: &str) -> Result<()> {
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {NFT}"))?;
    child.stdin.take().context("nft stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft refused the rules: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(n)
}

/// Service `i` with endpoints `eps` (pod IPs in 10.64.0.0/10).
fn service(i: usize, eps: [u32; 3]) -> PortRules {
    let n = u32::try_from(i).unwrap_or(u32::MAX);
    PortRules {
        id: format!("bench/svc-{i}/tcp/80"),
        protocol: Proto::Tcp,
        cluster_ip: ip(0x0a2b_0000 + n),
        port: 80,
        node_port: u16::try_from(30000 + i % 2768).ok(),
        load_balancer_ips: Vec::new(),
        internal_local: false,
        external_local: false,
        cluster_endpoints: eps.iter().map(|e| Endpoint { ip: ip(*e), port: 8080 }).collect(),
        local_endpoints: Vec::new(),
        affinity_seconds: None,
    }
}

fn endpoints(i: usize) -> [u32; 3] {
    let base = 0x0a40_0000 + u32::try_from(i * 3).unwrap_or(0);
    [base, base + 1, base + 2]
}

/// One size: (full sync, per-round generation, per-round total, lines of the last update).
struct Figures {
    services: usize,
    full: Duration,
    generate: Latencies,
    total: Latencies,
    lines: usize,
}

fn measure(services: usize, rounds: usize) -> Result<Figures> {
    let table = Table {
        name: "skiff-bench".into(),
        comment: "skiff-bench proxy-sync".into(),
        pod_cidr: "10.64.0.0/10".into(),
        egress: None,
    };
    // NodePorts repeat past 2,768 services; the benchmark gives each service its own anyway.
    let mut plans: Vec<Plan> = (0..services)
        .map(|i| {
            let mut s = service(i, endpoints(i));
            s.node_port = if i < 2768 { s.node_port } else { None };
            nft::plan(&table, &[s])
        })
        .collect();
    let started = Instant::now();
    apply(&nft::full(&table, plans.iter()))?;
    let full = started.elapsed();
    let (mut generate, mut total, mut lines) = (Vec::new(), Vec::new(), 0);
    for round in 0..rounds {
        let i = (round * 7919) % services;
        let mut eps = endpoints(i);
        // The third endpoint replaced by a new pod.
        eps[2] = 0x0b00_0000 + u32::try_from(round).unwrap_or(0);
        let started = Instant::now();
        let mut s = service(i, eps);
        s.node_port = if i < 2768 { s.node_port } else { None };
        let next = nft::plan(&table, &[s]);
        if nft::elements_only(&plans[i], &next) {
            let changes = runner::element_changes(&[(&plans[i], &next)]);
            let batch = netlink::encode(&table.name, &changes);
            let generated = started.elapsed();
            netlink::send(&batch)?;
            total.push(started.elapsed());
            generate.push(generated);
            lines = changes.len();
        } else {
            let script = nft::update(&table, &plans[i], &next);
            let generated = started.elapsed();
            apply(&script)?;
            total.push(started.elapsed());
            generate.push(generated);
            lines = script.lines().count();
        }
        plans[i] = next;
    }
    apply(&nft::delete(&table))?;
    Ok(Figures {
        services,
        full,
        generate: Latencies::from_durations(generate),
        total: Latencies::from_durations(total),
        lines,
    })
}

/// Runs the benchmark for each size in a private network namespace; prints a Markdown table.
pub fn run(sizes: &[usize], rounds: usize) -> Result<()> {
    let sizes = sizes.to_vec();
    let figures = std::thread::spawn(move || -> Result<Vec<Figures>> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET): run as root")?;
        sizes
            .iter()
            .map(|&n| {
                eprintln!("proxy-sync: {n} services, {rounds} rounds");
                measure(n.max(1), rounds.max(1))
            })
            .collect()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))??;
    println!("| services | full sync (one `nft -f`) | one changed endpoint: generate p50 | total p50 | total p99 | total max | element changes |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for f in figures {
        println!(
            "| {} | {} ms | {} ms | {} ms | {} ms | {} ms | {} |",
            f.services,
            ms(f.full.as_secs_f64() * 1000.0),
            ms(f.generate.p(50.0)),
            ms(f.total.p(50.0)),
            ms(f.total.p(99.0)),
            ms(f.total.max()),
            f.lines
        );
    }
    Ok(())
}
