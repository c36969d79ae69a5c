//! `pod-start`: pod start latency and memory per idle pod for Linux (OCI) containers, Wasm and a
//! mixed pod, in one run on one node whose agent runs Linux containers through its own containerd
//! (runc). The registry holds the `hello-http` guest and an offline-built busybox, mirrored for
//! `docker.io` through the node's `--registry-config`, so the pods say `image: busybox`.
//!
//! Images are warm: one pod of each kind is started first (pull, compile, containerd's start). Then,
//! for each kind, N pods one after the other (each once the previous is Ready), then a burst of M pods
//! created at once; each is timed from just before its create request to the moment the pod watch
//! shows it Running, and Ready. Each kind's pods are deleted before the next kind starts. Last, the
//! memory of skiff + containerd + shims + container processes with M idle pods of one kind, against
//! the same with none, for busybox and for Wasm.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::create::PODS;
use crate::node_cluster::{NodeOpts, NodeServer, Registry};
use crate::node_pods::{create, PodWatch};
use crate::pod_mem::{per_pod, NodeMem};
use crate::stats::{count, ms, Latencies};

/// How long one pod may take to be Ready before it is counted as not Ready.
const POD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a warm-up pod (image pull, containerd's start, compile) may take.
const WARM_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a kind's pods may take to be gone after their deletion.
const DELETE_TIMEOUT: Duration = Duration::from_secs(180);

/// What the command line asks for.
pub struct PodStartArgs {
    /// Pods of each kind created one after the other.
    pub pods: usize,
    /// Pods of each kind created at once.
    pub burst: usize,
    /// Idle pods of each kind for the memory figures.
    pub idle_pods: usize,
    /// How long the idle pods idle before their memory is read.
    pub idle: Duration,
}

/// The three pods measured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// busybox `sleep`: one Linux container.
    Oci,
    /// `hello-http`: one Wasm container, Ready once `/healthz` answers.
    Wasm,
    /// `hello-http` and a busybox sidecar in one pod.
    Mixed,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Oci, Kind::Wasm, Kind::Mixed];

    fn label(self) -> &'static str {
        match self {
            Kind::Oci => "oci",
            Kind::Wasm => "wasm",
            Kind::Mixed => "mixed",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Oci => "busybox (OCI, runc)",
            Kind::Wasm => "hello-http (Wasm)",
            Kind::Mixed => "mixed (Wasm hello-http + busybox sidecar)",
        }
    }

    /// The pod `name` of this kind; `wasm` is the guest's image reference.
    fn pod(self, name: &str, wasm: &str) -> Vec<u8> {
        let busybox = |n: &str| json!({"name": n, "image": "busybox", "command": ["sleep", "3600"]});
        let web = json!({
            "name": "web",
            "image": wasm,
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
        });
        let containers = match self {
            Kind::Oci => json!([busybox("sleep")]),
            Kind::Wasm => json!([web]),
            Kind::Mixed => json!([web, busybox("sidecar")]),
        };
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "skiff-bench", "kind": self.label()}},
            // busybox `sleep` as PID 1 ignores SIGTERM: a short grace keeps the deletions quick.
            "spec": {"terminationGracePeriodSeconds": 1, "containers": containers},
        })
        .to_string()
        .into_bytes()
    }
}

/// Latencies of one phase, in ms from each pod's create request.
struct Phase {
    running: Latencies,
    ready: Latencies,
    not_ready: usize,
    /// From the first create to the last pod Ready (bursts).
    all_ready: Option<Duration>,
}

/// What every phase uses.
struct Bench<'a> {
    server: &'a mut NodeServer,
    client: reqwest::Client,
    watch: PodWatch,
    wasm: String,
}

impl Bench<'_> {
    /// Pods `{prefix}-{i}` of `kind`, each created once the previous is Ready.
    async fn one_at_a_time(&mut self, kind: Kind, prefix: &str, n: usize) -> Result<Phase> {
        let (mut running, mut ready, mut not_ready) = (Vec::new(), Vec::new(), 0);
        for i in 0..n {
            let name = format!("{prefix}-{i}");
            let sent = Instant::now();
            create(&self.client, &self.server.url, kind.pod(&name, &self.wasm)).await?;
            if !self.watch.wait_ready(&name, POD_TIMEOUT).await? {
                not_ready += 1;
                eprintln!("pod-start: {name} not Ready after {} s", POD_TIMEOUT.as_secs());
                self.server.check_alive()?;
            }
            let t = self.watch.pods.get(&name).cloned().unwrap_or_default();
            running.extend(t.running.map(|t| since(t, sent)));
            ready.extend(t.ready.map(|t| since(t, sent)));
        }
        Ok(Phase { running: Latencies::from_ms(running), ready: Latencies::from_ms(ready), not_ready, all_ready: None })
    }

    /// Pods `{prefix}-{i}` of `kind`, all created at once (one connection each); waits until they are
    /// all Ready or `POD_TIMEOUT` has passed.
    async fn burst(&mut self, kind: Kind, prefix: &str, n: usize) -> Result<Phase> {
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
        let clients: Vec<reqwest::Client> = (0..n).map(|_| self.server.client()).collect::<Result<_>>()?;
        let version = format!("{}/version", self.server.url);
        for c in &clients {
            c.get(&version).send().await?.error_for_status()?;
        }
        let base = self.server.url.clone();
        let started = Instant::now();
        let creates = names.iter().zip(&clients).map(|(name, c)| {
            let body = kind.pod(name, &self.wasm);
            let base = base.clone();
            async move {
                let sent = Instant::now();
                create(c, &base, body).await.map(|_| sent)
            }
        });
        let sent: Vec<Instant> = futures::future::join_all(creates).await.into_iter().collect::<Result<_>>()?;
        let done = self
            .watch
            .wait_until(started + POD_TIMEOUT, |pods| {
                names.iter().all(|n| pods.get(n).is_some_and(|t| t.ready.is_some()))
            })
            .await?;
        let (mut running, mut ready, mut last) = (Vec::new(), Vec::new(), None::<Instant>);
        for (name, sent) in names.iter().zip(sent) {
            let t = self.watch.pods.get(name).cloned().unwrap_or_default();
            running.extend(t.running.map(|t| since(t, sent)));
            ready.extend(t.ready.map(|t| since(t, sent)));
            last = last.max(t.ready);
        }
        let not_ready = n - ready.len();
        Ok(Phase {
            running: Latencies::from_ms(running),
            ready: Latencies::from_ms(ready),
            not_ready,
            all_ready: last.filter(|_| done).map(|t| t.saturating_duration_since(started)),
        })
    }

    /// Deletes every pod of `kind` and waits until the API has none left.
    async fn delete(&mut self, kind: Kind) -> Result<()> {
        let selector = format!("labelSelector=kind%3D{}", kind.label());
        let url = format!("{}{PODS}?{selector}", self.server.url);
        self.client.delete(&url).send().await?.error_for_status()?;
        let deadline = Instant::now() + DELETE_TIMEOUT;
        loop {
            let list: Value = self.client.get(&url).send().await?.error_for_status()?.json().await?;
            if list["items"].as_array().is_none_or(|items| items.is_empty()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} pods still there {} s after their deletion", kind.label(), DELETE_TIMEOUT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The node's memory with `n` idle pods of `kind` against none; deletes them afterwards.
    async fn idle_memory(&mut self, kind: Kind, n: usize, idle: Duration) -> Result<(NodeMem, NodeMem)> {
        tokio::time::sleep(idle).await;
        let before = NodeMem::read(self.server.pid(), self.server.dir.path());
        let phase = self.burst(kind, &format!("idle-{}", kind.label()), n).await?;
        if phase.not_ready > 0 {
            bail!("{} of {n} idle {} pods were not Ready", phase.not_ready, kind.label());
        }
        tokio::time::sleep(idle).await;
        let after = NodeMem::read(self.server.pid(), self.server.dir.path());
        self.delete(kind).await?;
        Ok((before, after))
    }
}

fn since(t: Instant, from: Instant) -> f64 {
    t.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// Starts the registry (guest and busybox) and a node whose agent mirrors `docker.io` to it.
async fn start(bin: &Path, wasm: &Path, opts: NodeOpts) -> Result<(NodeServer, Registry, String, tempfile::TempDir)> {
    let registry = Registry::start().await?;
    let image = registry.push(bin, wasm, "hello-http")?;
    let work = tempfile::tempdir()?;
    let layout = skiff_testkit::image::build_busybox_layout(&work.path().join("busybox")).map_err(|e| anyhow!(e))?;
    skiff_testkit::image::push_to_registry(&layout, &registry.addr, "library/busybox:latest")
        .map_err(|e| anyhow!(e))?;
    let mirrors = work.path().join("registries.yaml");
    std::fs::write(&mirrors, format!("mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n", registry.addr))?;
    let mut opts = opts;
    opts.extra_args.extend(["--registry-config".to_string(), mirrors.display().to_string()]);
    let server = NodeServer::start(bin, &opts).await?;
    eprintln!(
        "node {} Ready (bridge {}, pod CIDR {}); images {image} and busybox (docker.io mirrored to {})",
        server.net.node, server.net.bridge, server.net.cidr, registry.addr
    );
    Ok((server, registry, image, work))
}

pub async fn run(bin: &Path, wasm: &Path, args: &PodStartArgs, opts: NodeOpts) -> Result<()> {
    // The server (its pods, its containerd) is stopped explicitly before the registry goes.
    let (mut server, _registry, image, _work) = start(bin, wasm, opts).await?;
    let client = server.client()?;
    let watch = PodWatch::start(server.client()?, &server.url).await?;
    let mut b = Bench { server: &mut server, client, watch, wasm: image };

    let mut warm = Vec::new();
    for kind in Kind::ALL {
        eprintln!("pod-start: warm-up {} pod …", kind.label());
        let name = format!("warm-{}", kind.label());
        let sent = Instant::now();
        create(&b.client, &b.server.url, kind.pod(&name, &b.wasm)).await?;
        if !b.watch.wait_ready(&name, WARM_TIMEOUT).await? {
            bail!(
                "{name} was not Ready within {} s\nserver log tail:\n{}",
                WARM_TIMEOUT.as_secs(),
                b.server.log_tail(30)
            );
        }
        let t = b.watch.pods.get(&name).cloned().unwrap_or_default();
        warm.push((kind, t.ready.map_or(f64::NAN, |t| since(t, sent))));
    }
    for kind in Kind::ALL {
        b.delete(kind).await?;
    }

    let mut phases = Vec::new();
    for kind in Kind::ALL {
        eprintln!("pod-start: {} {} pods one at a time …", args.pods, kind.label());
        let one = b.one_at_a_time(kind, &format!("seq-{}", kind.label()), args.pods).await?;
        b.delete(kind).await?;
        eprintln!("pod-start: {} {} pods at once …", args.burst, kind.label());
        let burst = b.burst(kind, &format!("burst-{}", kind.label()), args.burst).await?;
        b.delete(kind).await?;
        phases.push((kind, one, burst));
    }

    eprintln!("pod-start: memory of {} idle pods of each kind …", args.idle_pods);
    let (oci_before, oci_after) = b.idle_memory(Kind::Oci, args.idle_pods, args.idle).await?;
    let (wasm_before, wasm_after) = b.idle_memory(Kind::Wasm, args.idle_pods, args.idle).await?;
    b.server.check_alive()?;
    b.server.report_log();
    let broken = std::mem::take(&mut b.watch.broken);
    drop(b);
    let stopped = server.stop();

    print_latency(args, &phases);
    println!(
        "Warm-up pods (cold: image pull, the agent's containerd started, Wasm compile), create → Ready: {}.",
        warm.iter().map(|(k, t)| format!("{} {} ms", k.label(), ms(*t))).collect::<Vec<_>>().join(", ")
    );
    println!();
    println!("| memory (RSS, MiB) | skiff | containerd | shims (n) | container processes (n) | total | total PSS |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let n = count(args.idle_pods);
    println!("{}", oci_before.row("no pod (before the busybox pods)"));
    println!("{}", oci_after.row(&format!("{n} idle busybox pods")));
    println!("{}", wasm_before.row("no pod (before the Wasm pods)"));
    println!("{}", wasm_after.row(&format!("{n} idle Wasm pods")));
    println!();
    let (oci_rss, oci_pss) = per_pod(&oci_before, &oci_after, args.idle_pods);
    let (wasm_rss, wasm_pss) = per_pod(&wasm_before, &wasm_after, args.idle_pods);
    println!(
        "Memory per idle pod (growth of the total over {n} pods): busybox (OCI) **{oci_rss:.2} MiB** RSS ({oci_pss:.2} MiB PSS), \
         Wasm **{wasm_rss:.2} MiB** RSS ({wasm_pss:.2} MiB PSS); OCI/Wasm {:.1}x by RSS.",
        oci_rss / wasm_rss
    );
    println!();
    print_verdicts(&phases);
    println!();
    println!(
        "Server stopped on SIGTERM in {:.1} s{}, {} leftover netns/bridges/containerd processes.",
        stopped.seconds,
        if stopped.clean { "" } else { " (killed after the grace period)" },
        stopped.leftovers
    );
    if let Some(first) = broken.first() {
        println!();
        println!("**The pod watch broke {} time(s)** (first: {first}) and was re-listed.", broken.len());
    }
    Ok(())
}

fn print_latency(args: &PodStartArgs, phases: &[(Kind, Phase, Phase)]) {
    println!("| pod | created | pods | Running p50 ms | Running p99 ms | Ready p50 ms | Ready p99 ms | Ready max ms | not Ready | all Ready after |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (kind, one, burst) in phases {
        for (how, n, p) in [("one at a time", args.pods, one), ("at once", args.burst, burst)] {
            println!(
                "| {} | {how} | {} | **{}** | {} | {} | **{}** | {} | {} | {} |",
                kind.title(),
                count(n),
                ms(p.running.p(50.0)),
                ms(p.running.p(99.0)),
                ms(p.ready.p(50.0)),
                ms(p.ready.p(99.0)),
                ms(p.ready.max()),
                p.not_ready,
                p.all_ready.map_or("–".into(), |d| format!("{} ms", ms(d.as_secs_f64() * 1000.0))),
            );
        }
    }
    println!();
}

fn print_verdicts(phases: &[(Kind, Phase, Phase)]) {
    let one = |k: Kind| phases.iter().find(|(kind, ..)| *kind == k).map(|(_, one, _)| one);
    let (Some(oci), Some(wasm), Some(mixed)) = (one(Kind::Oci), one(Kind::Wasm), one(Kind::Mixed)) else { return };
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let oci_p50 = oci.running.p(50.0);
    let ratio = oci_p50 / wasm.running.p(50.0);
    let mixed_p99 = mixed.ready.p(99.0);
    println!("Targets (pods created one at a time):");
    println!();
    println!("- OCI create → Running p50 under 300 ms: {} ms, {}", ms(oci_p50), verdict(oci_p50 < 300.0));
    println!(
        "- Wasm at least 10x faster than OCI (create → Running p50): {ratio:.1}x ({} ms against {} ms), {}",
        ms(wasm.running.p(50.0)),
        ms(oci_p50),
        verdict(ratio >= 10.0)
    );
    println!("- mixed pod create → Ready p99 under 1 s: {} ms, {}", ms(mixed_p99), verdict(mixed_p99 < 1000.0));
}
