//! `node-http`: HTTP throughput of one `hello-http` pod, driven by `wrk` from the host straight to
//! the pod's IP on the bridge, then through the node's Ingress (a Service and an Ingress rule for
//! it); requests/s and latency percentiles parsed from wrk's output, side by side.

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
    let url = format!("http://{ip}:8080/");
    let body = reqwest::Client::new().get(&url).send().await?.error_for_status()?.text().await?;
    eprintln!("node-http: {url} answers {:?}; running wrk for {} s …", body.trim(), args.seconds);

    let direct = measure(&url, args, server.pid()).await?;

    // The same pod through the node's ingress: a Service selecting it and an Ingress rule for any host.
    let objects = [
        (
            "/api/v1/namespaces/default/services",
            json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "skiff-bench"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
            }),
        ),
        (
            "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
                "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
            }),
        ),
    ];
    for (path, object) in objects {
        let resp = client.post(format!("{}{path}", server.url)).json(&object).send().await?;
        if !resp.status().is_success() {
            bail!("creating {path}: {} {}", resp.status(), resp.text().await?);
        }
    }
    let ingress_url = format!("http://127.0.0.1:{}/", server.ingress_port);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ok = reqwest::Client::new().get(&ingress_url).send().await.is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("the ingress did not route to the pod within 60 s\nserver log tail:\n{}", server.log_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("node-http: {ingress_url} routes to the pod; running wrk for {} s …", args.seconds);
    let ingress = measure(&ingress_url, args, server.pid()).await?;
    server.check_alive()?;
    server.report_log();
    server.stop();

    println!("| path | connections | wrk threads | seconds | requests | requests/s | avg ms | p50 ms | p75 ms | p90 ms | p99 ms | max ms | socket errors | non-2xx | server CPU s per 10k requests |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    for (what, (w, cpu, _)) in [("pod IP directly", &direct), ("through the Ingress (node port)", &ingress)] {
        let pct = |p: &str| w.percentiles.iter().find(|(q, _)| q == p).map_or("–".into(), |(_, v)| ms(*v));
        println!(
            "| {what} | {} | {} | {} | {} | **{:.0}** | {} | {} | {} | {} | **{}** | {} | {} | {} | {:.2} |",
            args.connections,
            args.threads,
            args.seconds,
            w.requests,
            w.requests_per_sec,
            ms(w.avg_ms),
            pct("50%"),
            pct("75%"),
            pct("90%"),
            pct("99%"),
            ms(w.max_ms),
            if w.socket_errors.is_empty() { "none".into() } else { w.socket_errors.clone() },
            w.non_2xx,
            cpu / w.requests.max(1) as f64 * 10_000.0,
        );
    }
    println!();
    println!(
        "Through the Ingress: {:.0}% of direct throughput. Server CPU is the whole skiff process (wrk runs on the same cores). wrk's output:",
        ingress.0.requests_per_sec / direct.0.requests_per_sec.max(1.0) * 100.0
    );
    for (what, (_, _, text)) in [("direct", &direct), ("ingress", &ingress)] {
        println!();
        println!("{what}:");
        println!("```");
        print!("{text}");
        println!("```");
    }
    Ok(())
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
