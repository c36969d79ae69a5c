//! `node-http`: HTTP throughput of one `hello-http` pod, driven by `wrk` from the host, in one run:
//! straight to the pod's IP on the bridge, then through its Service's ClusterIP and NodePort (the
//! node proxy's nftables DNAT, host-originated traffic through the `nat` output hook; the NodePort
//! on 127.0.0.1 with `route_localnet`) and through the node's Ingress (an Ingress rule for that
//! Service); requests/s and latency percentiles parsed from wrk's output, side by side.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cluster::cpu_seconds;
use crate::node_cluster::{NodeOpts, Setup};
use crate::node_pods::{create, hello_http, PodWatch};
use crate::stats::ms;
use serde_json::json;

pub struct HttpArgs {
    pub seconds: u64,
    pub connections: usize,
    pub threads: usize,
}

/// What wrk reported.
#[derive(Debug, Default, PartialEq)]
struct Wrk {
    requests_per_sec: f64,
    requests: u64,
    /// (percentile, ms) from `--latency`.
    percentiles: Vec<(String, f64)>,
    avg_ms: f64,
    max_ms: f64,
    socket_errors: String,
    non_2xx: u64,
}

/// wrk's durations: `318.00us`, `1.23ms`, `2.00s`, `1.00m`.
fn duration_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (v, unit) = s.split_at(split);
    let v: f64 = v.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        "h" => v * 3_600_000.0,
        _ => return None,
    })
}

fn parse(out: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    let mut in_distribution = false;
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Latency", "Distribution", ..] => in_distribution = true,
            [p, v] if in_distribution && p.ends_with('%') => {
                w.percentiles.push((p.to_string(), duration_ms(v).context("latency percentile")?));
            }
            ["Latency", avg, _stdev, max, ..] => {
                w.avg_ms = duration_ms(avg).context("average latency")?;
                w.max_ms = duration_ms(max).context("max latency")?;
            }
            [n, "requests", "in", ..] => w.requests = n.parse()?,
            ["Requests/sec:", v] => w.requests_per_sec = v.parse()?,
            ["Socket", "errors:", rest @ ..] => w.socket_errors = rest.join(" "),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.non_2xx = n.parse()?,
            _ => {}
        }
    }
    if w.requests_per_sec == 0.0 {
        bail!("no Requests/sec in wrk's output:\n{out}");
    }
    Ok(w)
}

pub async fn run(bin: &Path, wasm: &Path, args: &HttpArgs, opts: &NodeOpts) -> Result<()> {
    let mut setup = Setup::start(bin, wasm, opts).await?;
    let (image, server) = (setup.image.clone(), &mut setup.server);
    let client = server.client()?;
    let mut watch = PodWatch::start(server.client()?, &server.url).await?;
    create(&client, &server.url, hello_http("web", &image)).await?;
    if !watch.wait_ready("web", Duration::from_secs(120)).await? {
        bail!("the pod was not Ready within 120 s\nserver log tail:\n{}", server.log_tail(30));
    }
    let ip = watch.pods.get("web").and_then(|t| t.ip.clone()).context("the Ready pod has no IP")?;

    // The same pod behind a NodePort Service (which has a ClusterIP too) and an Ingress rule for
    // any host pointing at that Service.
    let service = post(
        &client,
        &server.url,
        "/api/v1/namespaces/default/services",
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "skiff-bench"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }),
    )
    .await?;
    post(
        &client,
        &server.url,
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
            "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
        }),
    )
    .await?;
    let cluster_ip = service["spec"]["clusterIP"].as_str().context("the Service got no ClusterIP")?;
    let node_port = service["spec"]["ports"][0]["nodePort"].as_u64().context("the Service got no NodePort")?;

    let paths = [
        ("pod IP directly", format!("http://{ip}:8080/")),
        ("through the ClusterIP", format!("http://{cluster_ip}/")),
        ("through a NodePort on 127.0.0.1", format!("http://127.0.0.1:{node_port}/")),
        ("through the Ingress", format!("http://127.0.0.1:{}/", server.ingress_port)),
    ];
    let mut results = Vec::new();
    for (what, url) in &paths {
        if let Err(e) = wait_answers(url, Duration::from_secs(60)).await {
            bail!("{what} ({url}): {e:#}\nserver log tail:\n{}", server.log_tail(30));
        }
        eprintln!("node-http: {what} ({url}) answers; running wrk for {} s …", args.seconds);
        results.push((*what, url.as_str(), measure(url, args, server.pid()).await?));
        server.check_alive()?;
    }
    drop(watch); // before the server goes, or it reports the broken watch
    server.report_log();
    server.stop();

    println!(
        "{} connections, {} wrk threads, {} s per path, one after the other; pod {ip}, ClusterIP {cluster_ip}, NodePort {node_port}.",
        args.connections, args.threads, args.seconds
    );
    println!();
    println!("| path | requests | requests/s | % of direct | avg ms | p50 ms | p90 ms | p99 ms | max ms | socket errors | non-2xx | server CPU s per 10k requests |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    let direct_rps = results.first().map_or(1.0, |(_, _, (w, _, _))| w.requests_per_sec.max(1.0));
    for (what, _, (w, cpu, _)) in &results {
        let pct = |p: &str| w.percentiles.iter().find(|(q, _)| q == p).map_or("–".into(), |(_, v)| ms(*v));
        println!(
            "| {what} | {} | **{:.0}** | {:.0}% | {} | {} | {} | **{}** | {} | {} | {} | {:.2} |",
            w.requests,
            w.requests_per_sec,
            w.requests_per_sec / direct_rps * 100.0,
            ms(w.avg_ms),
            pct("50%"),
            pct("90%"),
            pct("99%"),
            ms(w.max_ms),
            if w.socket_errors.is_empty() { "none".into() } else { w.socket_errors.clone() },
            w.non_2xx,
            cpu / w.requests.max(1) as f64 * 10_000.0,
        );
    }
    println!();
    println!("Server CPU is the whole skiff process (the pod, the ingress); the ClusterIP and NodePort paths are nftables DNAT in the kernel, whose CPU counts against whoever sends or receives. wrk runs on the same cores. wrk's output:");
    for (what, url, (_, _, text)) in &results {
        println!();
        println!("{what} ({url}):");
        println!("```");
        print!("{text}");
        println!("```");
    }
    Ok(())
}

/// POSTs `object` to `path`; the created object.
async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    object: serde_json::Value,
) -> Result<serde_json::Value> {
    let resp = client.post(format!("{base}{path}")).json(&object).send().await?;
    if !resp.status().is_success() {
        bail!("creating {path}: {} {}", resp.status(), resp.text().await?);
    }
    Ok(resp.json().await?)
}

/// Polls `url` until it answers 2xx (a ClusterIP nobody has programmed yet hangs: one second per
/// try), for at most `limit`.
async fn wait_answers(url: &str, limit: Duration) -> Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build()?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        let last = match http.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => format!("{e}"),
        };
        if std::time::Instant::now() > deadline {
            bail!("no 2xx answer within {} s (last: {last})", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One wrk run against `url`: what it reported, the server's CPU seconds meanwhile, its output.
async fn measure(url: &str, args: &HttpArgs, pid: u32) -> Result<(Wrk, f64, String)> {
    let cpu_before = cpu_seconds(Some(pid));
    let out = tokio::process::Command::new("wrk")
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .arg("--latency")
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk (apt-get install wrk)")?;
    let cpu = cpu_seconds(Some(pid)) - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((parse(&text)?, cpu, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 10s test @ http://10.200.0.5:8080/\n  2 threads and 64 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     3.21ms    1.02ms  45.00ms   90.00%\n    Req/Sec    10.00k     1.00k   12.00k    70.00%\n  Latency Distribution\n     50%    3.00ms\n     75%  800.00us\n     90%    4.10ms\n     99%    1.20s\n  200000 requests in 10.00s, 20.00MB read\n  Socket errors: connect 0, read 0, write 0, timeout 3\nRequests/sec:  19999.50\nTransfer/sec:      2.00MB\n";
        let w = parse(out).expect("parse");
        assert_eq!(w.requests, 200_000);
        assert_eq!(w.requests_per_sec, 19999.5);
        assert_eq!(w.avg_ms, 3.21);
        assert_eq!(w.max_ms, 45.0);
        let p: Vec<f64> = w.percentiles.iter().map(|(_, v)| *v).collect();
        assert_eq!(p, vec![3.0, 0.8, 4.1, 1200.0]);
        assert_eq!(w.socket_errors, "connect 0, read 0, write 0, timeout 3");
        assert_eq!(w.non_2xx, 0);
    }
}
