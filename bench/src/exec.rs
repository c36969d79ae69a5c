//! `exec`: `kubectl exec` into a Wasm container (hello-http) through the API server and the kubelet:
//! the wall time of `kubectl exec POD -- true`, and the time from starting `kubectl exec POD -- echo x`
//! to the first byte of its output. Both include starting the kubectl process and reading its
//! kubeconfig; `kubectl get --raw /healthz` is timed the same way as the floor to subtract. Then
//! the same two commands through a WebSocket client of the harness's own (`exec_ws`), from the
//! TCP connect to the first byte and to the exit status.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::node_cluster::{NodeOpts, Setup};
use crate::node_pods::{create, PodWatch};
use crate::stats::{ms, Latencies};

pub struct ExecArgs {
    pub kubectl: std::path::PathBuf,
    pub runs: usize,
}

fn pod(image: &str) -> Vec<u8> {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ex", "namespace": "default"},
        "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 8080}]}]},
    })
    .to_string()
    .into_bytes()
}

/// Runs kubectl with `args`; the time to its first stdout byte and to its exit.
async fn timed(kubectl: &std::path::Path, kubeconfig: &std::path::Path, args: &[&str]) -> Result<(Duration, Duration)> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", kubectl.display()))?;
    let mut stdout = child.stdout.take().context("kubectl stdout")?;
    let mut first = [0u8; 1];
    let n = stdout.read(&mut first).await?;
    let first_byte = started.elapsed();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).await?;
    let status = child.wait().await?;
    if !status.success() {
        bail!("kubectl {args:?} failed: {status}");
    }
    if n == 0 && !args.contains(&"true") {
        bail!("kubectl {args:?} printed nothing");
    }
    Ok((first_byte, started.elapsed()))
}

pub async fn run(bin: &std::path::Path, wasm: &std::path::Path, args: &ExecArgs, opts: &NodeOpts) -> Result<()> {
    let mut setup = Setup::start(bin, wasm, opts).await?;
    let (image, server) = (setup.image.clone(), &mut setup.server);
    let client = server.client()?;
    let mut watch = PodWatch::start(server.client()?, &server.url).await?;
    create(&client, &server.url, pod(&image)).await?;
    if !watch.wait_ready("ex", Duration::from_secs(120)).await? {
        bail!("the pod was not Ready within 120 s\nserver log tail:\n{}", server.log_tail(30));
    }
    let kubeconfig = server.dir.path().join("kubeconfig");
    eprintln!("exec: {} runs of each …", args.runs);
    // One warm-up of each (kubectl's discovery cache, the kubelet's TLS session).
    timed(&args.kubectl, &kubeconfig, &["get", "--raw", "/healthz"]).await?;
    timed(&args.kubectl, &kubeconfig, &["exec", "ex", "--", "echo", "x"]).await?;
    let (mut floor, mut wall, mut first) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        floor.push(timed(&args.kubectl, &kubeconfig, &["get", "--raw", "/healthz"]).await?.1);
        wall.push(timed(&args.kubectl, &kubeconfig, &["exec", "ex", "--", "true"]).await?.1);
        first.push(timed(&args.kubectl, &kubeconfig, &["exec", "ex", "--", "echo", "x"]).await?.0);
    }
    // The same through the API without kubectl: a WebSocket of our own (v5.channel.k8s.io).
    crate::exec_ws::exec_once(server, "ex", &["echo", "x"]).await?;
    let (mut ws_first, mut ws_wall) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let (first_byte, _) = crate::exec_ws::exec_once(server, "ex", &["echo", "x"]).await?;
        ws_first.push(first_byte.context("`echo x` printed nothing")?);
        ws_wall.push(crate::exec_ws::exec_once(server, "ex", &["true"]).await?.1);
    }
    server.check_alive()?;
    server.report_log();
    server.stop();
    println!("| Wasm container (toolbox command), {} runs | p50 ms | p99 ms | max ms |", args.runs);
    println!("|---|---:|---:|---:|");
    for (name, times) in [
        ("`kubectl get --raw /healthz` (kubectl start + one API call: the floor)", floor),
        ("`kubectl exec ex -- true`: wall time", wall),
        ("`kubectl exec ex -- echo x`: first byte of output", first),
        ("WebSocket client, `echo x`: connect to first byte of output", ws_first),
        ("WebSocket client, `true`: connect to exit status", ws_wall),
    ] {
        let l = Latencies::from_durations(times);
        println!("| {name} | **{}** | {} | {} |", ms(l.p(50.0)), ms(l.p(99.0)), ms(l.max()));
    }
    println!();
    println!(
        "kubectl: {}. OCI containers are not measured here (this harness's node has no containerd).",
        args.kubectl.display()
    );
    Ok(())
}
