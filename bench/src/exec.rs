//! `exec`: `kubectl exec` into a Wasm container (hello-http) and a Linux one (busybox, through the
//! node's own containerd) through the API server and the kubelet:
//! the wall time of `kubectl exec POD -- true`, and the time from starting `kubectl exec POD -- echo x`
//! to the first byte of its output. Both include starting the kubectl process and reading its
//! kubeconfig; `kubectl get --raw /healthz` is timed the same way as the floor to subtract. Then
//! the same two commands through a WebSocket client of the harness's own (`exec_ws`), from the
//! TCP connect to the first byte and to the exit status.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::node_cluster::{NodeOpts, NodeServer, Setup};
use crate::node_pods::{create, PodWatch};
use crate::stats::{ms, Latencies};

pub struct ExecArgs {
    pub kubectl: std::path::PathBuf,
    pub runs: usize,
}

fn pod(name: &str, image: &str, command: Option<&[&str]>) -> Vec<u8> {
    let mut container = json!({"name": "c", "image": image, "ports": [{"containerPort": 8080}]});
    if let Some(command) = command {
        container = json!({"name": "c", "image": image, "command": command});
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]},
    })
    .to_string()
    .into_bytes()
}

/// Runs kubectl with `args`; the time to its first stdout byte and to its exit.
async fn timed(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> Result<(Duration, Duration)> {
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

/// The timings of one container.
struct Timings {
    wall: Vec<Duration>,
    first: Vec<Duration>,
    ws_first: Vec<Duration>,
    ws_wall: Vec<Duration>,
}

/// `runs` of each way of exec into pod `name`'s container.
async fn measure(server: &NodeServer, kubectl: &Path, kubeconfig: &Path, name: &str, runs: usize) -> Result<Timings> {
    // One warm-up of each (kubectl's discovery cache, the kubelet's TLS session).
    timed(kubectl, kubeconfig, &["exec", name, "--", "echo", "x"]).await?;
    crate::exec_ws::exec_once(server, name, &["echo", "x"]).await?;
    let mut t = Timings { wall: Vec::new(), first: Vec::new(), ws_first: Vec::new(), ws_wall: Vec::new() };
    for _ in 0..runs {
        t.wall.push(timed(kubectl, kubeconfig, &["exec", name, "--", "true"]).await?.1);
        t.first.push(timed(kubectl, kubeconfig, &["exec", name, "--", "echo", "x"]).await?.0);
        let (first_byte, _) = crate::exec_ws::exec_once(server, name, &["echo", "x"]).await?;
        t.ws_first.push(first_byte.context("`echo x` printed nothing")?);
        t.ws_wall.push(crate::exec_ws::exec_once(server, name, &["true"]).await?.1);
    }
    Ok(t)
}

pub async fn run(bin: &Path, wasm: &Path, args: &ExecArgs, opts: &NodeOpts) -> Result<()> {
    let work = tempfile::tempdir()?;
    let mut setup = Setup::start(bin, wasm, opts).await?;
    // busybox, built offline, for the Linux container (the node starts its own containerd for it).
    let layout = skiff_testkit::image::build_busybox_layout(&work.path().join("busybox"))
        .map_err(|e| anyhow::anyhow!("building the busybox image: {e}"))?;
    let busybox = skiff_testkit::image::push_to_registry(&layout, &setup.registry.addr, "library/busybox:latest")
        .map_err(|e| anyhow::anyhow!("pushing busybox: {e}"))?;
    let (image, server) = (setup.image.clone(), &mut setup.server);
    let client = server.client()?;
    let mut watch = PodWatch::start(server.client()?, &server.url).await?;
    create(&client, &server.url, pod("ex", &image, None)).await?;
    create(&client, &server.url, pod("ox", &busybox, Some(&["sleep", "3600"]))).await?;
    for name in ["ex", "ox"] {
        if !watch.wait_ready(name, Duration::from_secs(120)).await? {
            bail!("pod {name} was not Ready within 120 s\nserver log tail:\n{}", server.log_tail(30));
        }
    }
    let kubeconfig = server.dir.path().join("kubeconfig");
    eprintln!("exec: {} runs of each …", args.runs);
    timed(&args.kubectl, &kubeconfig, &["get", "--raw", "/healthz"]).await?;
    let mut floor = Vec::new();
    for _ in 0..args.runs {
        floor.push(timed(&args.kubectl, &kubeconfig, &["get", "--raw", "/healthz"]).await?.1);
    }
    let wasm_times = measure(server, &args.kubectl, &kubeconfig, "ex", args.runs).await?;
    let linux_times = measure(server, &args.kubectl, &kubeconfig, "ox", args.runs).await?;
    server.check_alive()?;
    server.report_log();
    server.stop();
    println!("| {} runs each | p50 ms | p99 ms | max ms |", args.runs);
    println!("|---|---:|---:|---:|");
    let row = |name: &str, times: Vec<Duration>| {
        let l = Latencies::from_durations(times);
        println!("| {name} | **{}** | {} | {} |", ms(l.p(50.0)), ms(l.p(99.0)), ms(l.max()));
    };
    row("`kubectl get --raw /healthz` (kubectl start + one API call: the floor)", floor);
    for (what, t) in [("Wasm (toolbox)", wasm_times), ("Linux (busybox, runc)", linux_times)] {
        row(&format!("{what}: `kubectl exec -- true`, wall time"), t.wall);
        row(&format!("{what}: `kubectl exec -- echo x`, first byte of output"), t.first);
        row(&format!("{what}: WebSocket client, `echo x`: connect to first byte"), t.ws_first);
        row(&format!("{what}: WebSocket client, `true`: connect to exit status"), t.ws_wall);
    }
    println!();
    println!("kubectl: {}.", args.kubectl.display());
    Ok(())
}
