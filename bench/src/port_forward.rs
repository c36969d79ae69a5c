//! `port-forward`: `kubectl port-forward` to one `hello-http` pod through the API server and the
//! kubelet (SPDY tunnelled in WebSocket with kubectl 1.32, or a SPDY upgrade with an older
//! kubectl), against the pod's IP directly: download throughput of a file the pod serves from a
//! hostPath volume, and the time of a fresh connection plus a small GET (connection setup).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::node_cluster::{NodeOpts, Setup};
use crate::node_pods::{create, PodWatch};
use crate::stats::{ms, Latencies};

pub struct ForwardArgs {
    pub kubectl: std::path::PathBuf,
    pub mib: usize,
    pub downloads: usize,
    pub connections: usize,
}

fn pod(image: &str, dir: &Path) -> Vec<u8> {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pf", "namespace": "default"},
        "spec": {
            "containers": [{
                "name": "web",
                "image": image,
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "hostPath": {"path": dir.display().to_string()}}],
        },
    })
    .to_string()
    .into_bytes()
}

/// Downloads `url` `runs` times; MB/s (10^6 bytes) per run.
async fn throughput(url: &str, size: usize, runs: usize) -> Result<Vec<f64>> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(300)).build()?;
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let body = client.get(url).send().await?.error_for_status()?.bytes().await?;
        let secs = started.elapsed().as_secs_f64();
        if body.len() != size {
            bail!("{url}: {} bytes instead of {size}", body.len());
        }
        out.push(size as f64 / 1e6 / secs);
    }
    Ok(out)
}

/// `n` GETs of `/`, each on a new connection: connect + request + response.
async fn setup_latency(url: &str, n: usize) -> Result<Latencies> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build()?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let body = client.get(url).send().await?.error_for_status()?.text().await?;
        times.push(started.elapsed());
        if body != "hello from skiff\n" {
            bail!("{url} answered {body:?}");
        }
    }
    Ok(Latencies::from_durations(times))
}

pub async fn run(bin: &Path, wasm: &Path, args: &ForwardArgs, opts: &NodeOpts) -> Result<()> {
    let size = args.mib.checked_mul(1 << 20).context("--mib is too large")?;
    let data = tempfile::tempdir()?;
    let content: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(data.path().join("big.bin"), &content)?;
    drop(content);

    let mut setup = Setup::start(bin, wasm, opts).await?;
    let (image, server) = (setup.image.clone(), &mut setup.server);
    let client = server.client()?;
    let mut watch = PodWatch::start(server.client()?, &server.url).await?;
    create(&client, &server.url, pod(&image, data.path())).await?;
    if !watch.wait_ready("pf", Duration::from_secs(120)).await? {
        bail!("the pod was not Ready within 120 s\nserver log tail:\n{}", server.log_tail(30));
    }
    let ip = watch.pods.get("pf").and_then(|t| t.ip.clone()).context("the Ready pod has no IP")?;

    let local = crate::cluster::free_port()?;
    let mut kubectl = tokio::process::Command::new(&args.kubectl)
        .arg("--kubeconfig")
        .arg(server.dir.path().join("kubeconfig"))
        .args(["port-forward", "--address", "127.0.0.1", "pod/pf", &format!("{local}:8080")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", args.kubectl.display()))?;
    let stdout = kubectl.stdout.take().context("kubectl stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("Forwarding from") {
                return true;
            }
        }
        false
    })
    .await;
    if !matches!(ready, Ok(true)) {
        bail!("kubectl port-forward did not say \"Forwarding from\" within 60 s");
    }
    // Keep reading kubectl's "Handling connection" lines so its pipe never fills.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let direct = format!("http://{ip}:8080");
    let forwarded = format!("http://127.0.0.1:{local}");
    eprintln!(
        "port-forward: {} MiB x {} downloads, {} connections, each way …",
        args.mib, args.downloads, args.connections
    );
    let file = "/file/data/big.bin";
    let direct_mbs = throughput(&format!("{direct}{file}"), size, args.downloads).await?;
    let forward_mbs = throughput(&format!("{forwarded}{file}"), size, args.downloads).await?;
    let direct_setup = setup_latency(&format!("{direct}/"), args.connections).await?;
    let forward_setup = setup_latency(&format!("{forwarded}/"), args.connections).await?;
    let _ = kubectl.kill().await;
    server.check_alive()?;
    server.report_log();
    server.stop();

    let median = |v: &[f64]| {
        let l = Latencies::from_ms(v.to_vec());
        l.p(50.0)
    };
    println!("| path | download MB/s (median of {}, {} MiB each) | best MB/s | new connection + GET `/`: p50 ms | p99 ms | max ms |", args.downloads, args.mib);
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, mbs, setup) in
        [("pod IP directly", &direct_mbs, &direct_setup), ("kubectl port-forward", &forward_mbs, &forward_setup)]
    {
        let best = mbs.iter().copied().fold(0.0, f64::max);
        println!(
            "| {name} | **{:.0}** | {best:.0} | **{}** | {} | {} |",
            median(mbs),
            ms(setup.p(50.0)),
            ms(setup.p(99.0)),
            ms(setup.max())
        );
    }
    println!();
    println!("kubectl: {}; {} connections measured per path.", args.kubectl.display(), forward_setup.len());
    Ok(())
}
