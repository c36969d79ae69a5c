//! `top`: how fresh `kubectl top`'s figures are. One `hello-http` pod runs on a node; the
//! `metrics.k8s.io` API is asked for the pod's and the node's usage at a steady pace, and each
//! answer's age is the time it arrived minus the end of its measuring window (`timestamp`), which
//! is what metrics-server's 15 s scrape interval bounds in Kubernetes. Also reports how long each
//! request took (a request may read the kubelets anew).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use jiff::Timestamp;
use serde_json::Value;

use crate::node_cluster::{NodeOpts, Setup};
use crate::node_pods::{create, hello_http, PodWatch};
use crate::stats::{ms, Latencies};

pub struct TopArgs {
    pub requests: usize,
    pub interval: Duration,
}

/// Age (ms) of one metrics object's window end when `arrived`, and the window length (ms).
fn age_of(object: &Value, arrived: Timestamp) -> Result<(f64, f64)> {
    let stamp: Timestamp =
        object["timestamp"].as_str().context("no timestamp")?.parse().context("timestamp is not RFC 3339")?;
    let window = object["window"].as_str().unwrap_or("0s");
    let window: jiff::SignedDuration = window.parse().unwrap_or_default();
    let age = arrived.duration_since(stamp);
    Ok((age.as_secs_f64() * 1000.0, window.as_secs_f64() * 1000.0))
}

struct Series {
    ages: Vec<f64>,
    windows: Vec<f64>,
    took: Vec<Duration>,
}

impl Series {
    fn new(n: usize) -> Self {
        Series { ages: Vec::with_capacity(n), windows: Vec::with_capacity(n), took: Vec::with_capacity(n) }
    }

    fn row(self, what: &str) -> String {
        let ages = Latencies::from_ms(self.ages);
        let windows = Latencies::from_ms(self.windows);
        let took = Latencies::from_durations(self.took);
        format!(
            "| {what} | {} | {} | {} | **{}** | {} | {} | {} |",
            ages.len(),
            ms(ages.p(50.0)),
            ms(ages.p(99.0)),
            ms(ages.max()),
            ms(took.p(50.0)),
            ms(took.p(99.0)),
            ms(windows.p(50.0)),
        )
    }
}

/// GETs `url` and returns the answer with the time it arrived.
async fn ask(client: &reqwest::Client, url: &str) -> Result<(Value, Timestamp, Duration)> {
    let started = Instant::now();
    let answer = client.get(url).send().await?;
    let status = answer.status();
    let body: Value = answer.json().await?;
    let arrived = Timestamp::now();
    if !status.is_success() {
        bail!("{url}: {status}: {body}");
    }
    Ok((body, arrived, started.elapsed()))
}

pub async fn run(bin: &Path, wasm: &Path, args: &TopArgs, opts: &NodeOpts) -> Result<()> {
    let mut setup = Setup::start(bin, wasm, opts).await?;
    let (image, server) = (setup.image.clone(), &mut setup.server);
    let client = server.client()?;
    let mut watch = PodWatch::start(server.client()?, &server.url).await?;
    create(&client, &server.url, hello_http("top", &image)).await?;
    if !watch.wait_ready("top", Duration::from_secs(120)).await? {
        bail!("the pod was not Ready within 120 s\nserver log tail:\n{}", server.log_tail(30));
    }
    let base = format!("{}/apis/metrics.k8s.io/v1beta1", server.url);
    let pod_url = format!("{base}/namespaces/default/pods/top");
    let node_url = format!("{base}/nodes/{}", server.net.node);

    // The first answer may wait for the second reading of a node seen for the first time.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ask(&client, &pod_url).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => bail!("no pod metrics within 30 s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    eprintln!("top: {} requests each for the pod and the node, one every {:?} …", args.requests, args.interval);
    let (mut pods, mut nodes) = (Series::new(args.requests), Series::new(args.requests));
    let mut tick = tokio::time::interval(args.interval);
    for _ in 0..args.requests {
        tick.tick().await;
        for (url, series) in [(&pod_url, &mut pods), (&node_url, &mut nodes)] {
            let (body, arrived, took) = ask(&client, url).await?;
            let (age, window) = age_of(&body, arrived)?;
            series.ages.push(age);
            series.windows.push(window);
            series.took.push(took);
        }
    }
    server.check_alive()?;
    server.report_log();
    server.stop();

    println!(
        "| object | answers | age p50 ms | age p99 ms | age max ms | request p50 ms | request p99 ms | window p50 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    println!("{}", pods.row("pod (`kubectl top pod`)"));
    println!("{}", nodes.row("node (`kubectl top node`)"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_is_arrival_minus_window_end() {
        let object = serde_json::json!({"timestamp": "2026-12-06T10:00:00Z", "window": "1.5s"});
        let arrived: Timestamp = "2026-12-06T10:00:00.250Z".parse().unwrap();
        let (age, window) = age_of(&object, arrived).unwrap();
        assert!((age - 250.0).abs() < 1e-6);
        assert!((window - 1500.0).abs() < 1e-6);
        assert!(age_of(&serde_json::json!({}), arrived).is_err());
    }
}
