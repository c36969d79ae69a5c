//! `shim-run`: skiff's containerd shim (`io.containerd.skiff.v1`) against runc's (`io.containerd.runc.v2`)
//! on one private containerd, in one run: `ctr run --rm` wall time one at a time, tasks/s with several
//! `ctr run --rm` in parallel, and the memory of long-running containers (shim RSS/PSS, container PSS), one
//! shim each and all in one pod's shim.
//! Prints Markdown on stdout, progress on stderr; everything started is removed at the end or on failure.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::containerd::{Containerd, BUSYBOX_IMAGE, GUEST_IMAGE, RUNC_RUNTIME, SKIFF_RUNTIME};
use crate::shim_mem::{descendants, mem, Mem};
use crate::stats::{ms, Latencies};

/// What `shim-run` measures.
pub struct ShimRunArgs {
    /// Sequential `ctr run --rm` per runtime.
    pub runs: usize,
    /// `ctr run --rm` per runtime in the throughput phase.
    pub tasks: usize,
    /// How many of those run at once.
    pub parallel: usize,
    /// Long-running containers per runtime in the memory phase.
    pub containers: usize,
    /// Where `hello.wasm` and `tool.wasm` are (scripts/build-workloads.sh).
    pub workloads: PathBuf,
}

/// One side of the comparison.
struct Variant {
    name: &'static str,
    runtime: &'static str,
    image: &'static str,
    /// Process args of the short run (empty: the image's entrypoint).
    short: &'static [&'static str],
    /// What the short run prints.
    expect: &'static str,
    /// Process args of a long-running container.
    long: &'static [&'static str],
    /// A short run of the long-running container's program (fills skiff's compile cache for it).
    warm: &'static [&'static str],
    /// Prefix of container ids.
    prefix: &'static str,
}

const SKIFF: Variant = Variant {
    name: "skiff shim",
    runtime: SKIFF_RUNTIME,
    image: GUEST_IMAGE,
    short: &[],
    expect: "hello from skiff",
    long: &["/tool.wasm", "forever"],
    warm: &["/tool.wasm", "exit", "0"],
    prefix: "sk",
};

const RUNC: Variant = Variant {
    name: "runc shim",
    runtime: RUNC_RUNTIME,
    image: BUSYBOX_IMAGE,
    short: &["echo", "hi"],
    expect: "hi",
    long: &["sleep", "600"],
    warm: &["sleep", "0"],
    prefix: "rc",
};

/// Time cap for one `ctr run --rm`.
const RUN_CAP: Duration = Duration::from_secs(60);

pub async fn run(shim_bin: &Path, args: &ShimRunArgs) -> Result<()> {
    if args.runs == 0 || args.tasks == 0 || args.parallel == 0 || args.containers == 0 {
        bail!("--runs, --tasks, --parallel and --containers must be positive");
    }
    eprintln!("shim-run: starting a private containerd and importing the images …");
    let ctd = Containerd::start(shim_bin).await?;
    ctd.import_images(&args.workloads).await?;

    println!(
        "containerd: private instance (`containerd --config` with the CRI plugin disabled, own root/state/socket),"
    );
    println!("overlayfs snapshotter; skiff's shim `{}`; each `ctr run` is a new `ctr` process.", shim_bin.display());
    println!();
    sequential(&ctd, args.runs).await?;
    throughput(&ctd, args.tasks, args.parallel).await?;
    memory(&ctd, args.containers).await?;
    pod_memory(&ctd, args.containers).await?;
    Ok(())
}

/// Phase 1: one cold run each, then `runs` alternating warm runs (skiff, runc, skiff, ...).
async fn sequential(ctd: &Containerd, runs: usize) -> Result<()> {
    eprintln!("shim-run: {runs} sequential runs per runtime, alternating …");
    let mut cold = Vec::new();
    for v in [&SKIFF, &RUNC] {
        let t = run_once(ctd, v, &format!("{}-cold", v.prefix)).await.map_err(anyhow::Error::msg)?;
        cold.push(t);
    }
    let mut times = [Vec::new(), Vec::new()];
    let mut errors = [Errors::default(), Errors::default()];
    for i in 0..runs {
        for (k, v) in [&SKIFF, &RUNC].into_iter().enumerate() {
            match run_once(ctd, v, &format!("{}-seq-{i}", v.prefix)).await {
                Ok(t) => times[k].push(t),
                Err(e) => errors[k].add(e),
            }
        }
    }
    println!("#### `ctr run --rm`, one at a time ({runs} runs per runtime, alternating skiff/runc)");
    println!();
    println!("Wall time of the `ctr run --rm` process, spawn to exit. The first run of each runtime is shown apart");
    println!("(cold: skiff's shim compiles the module into its empty cache); the {runs} after it are warm.");
    println!();
    println!("| runtime | workload | cold ms | runs ok | p50 ms | p99 ms | max ms | mean ms |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (k, v) in [&SKIFF, &RUNC].into_iter().enumerate() {
        let lat = Latencies::from_durations(times[k].iter().copied());
        println!(
            "| {} | {} | {} | {}/{runs} | **{}** | {} | {} | {} |",
            v.name,
            workload(v),
            ms(cold[k].as_secs_f64() * 1000.0),
            lat.len(),
            ms(lat.p(50.0)),
            ms(lat.p(99.0)),
            ms(lat.max()),
            ms(mean(&lat.0)),
        );
    }
    println!();
    for (k, v) in [&SKIFF, &RUNC].into_iter().enumerate() {
        errors[k].report(v.name);
    }
    Ok(())
}

/// Phase 2: `tasks` runs per runtime with `parallel` in flight; skiff first, then runc.
async fn throughput(ctd: &Containerd, tasks: usize, parallel: usize) -> Result<()> {
    println!("#### Throughput: {tasks} `ctr run --rm` at {parallel} in parallel");
    println!();
    println!(
        "{parallel} workers each start the next `ctr run --rm` when theirs exits; tasks/s = successful runs / wall"
    );
    println!("time of the phase. skiff's phase runs first, then runc's.");
    println!();
    println!("| runtime | workload | tasks ok | seconds | tasks/s | p50 ms | p99 ms | max ms |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut all_errors = Vec::new();
    for v in [&SKIFF, &RUNC] {
        eprintln!("shim-run: {tasks} runs through the {} at {parallel} in parallel …", v.name);
        let next = AtomicUsize::new(0);
        let times = Mutex::new(Vec::new());
        let errors = Mutex::new(Errors::default());
        let started = Instant::now();
        let worker = || async {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= tasks {
                    break;
                }
                let result = run_once(ctd, v, &format!("{}-tp-{i}", v.prefix)).await;
                match result {
                    Ok(t) => times.lock().map(|mut l| l.push(t)).unwrap_or_default(),
                    Err(e) => errors.lock().map(|mut l| l.add(e)).unwrap_or_default(),
                }
            }
        };
        futures::future::join_all((0..parallel).map(|_| worker())).await;
        let wall = started.elapsed().as_secs_f64();
        let times = times.into_inner().unwrap_or_default();
        let lat = Latencies::from_durations(times);
        println!(
            "| {} | {} | {}/{tasks} | {:.2} | **{:.1}** | {} | {} | {} |",
            v.name,
            workload(v),
            lat.len(),
            wall,
            lat.len() as f64 / wall,
            ms(lat.p(50.0)),
            ms(lat.p(99.0)),
            ms(lat.max()),
        );
        all_errors.push((v.name, errors.into_inner().unwrap_or_default()));
    }
    println!();
    for (name, errors) in all_errors {
        errors.report(name);
    }
    Ok(())
}

/// Phase 3: `n` long-running containers per runtime, each with its own shim; their memory; then removal.
async fn memory(ctd: &Containerd, n: usize) -> Result<()> {
    println!("#### Memory: {n} long-running containers per runtime");
    println!();
    println!("`ctr run -d --null-io`, each container with its own shim process, started one after the other after one");
    println!(
        "`ctr run --rm` of the same program (so skiff's shims load it from the compile cache, as every start after"
    );
    println!("an image's first does); read 2 s after all are RUNNING from");
    println!("/proc/PID/smaps_rollup (RSS, PSS) and /proc/PID/status (VmHWM, the shim's peak RSS). \"container");
    println!("processes\" are the shim's descendants (runc: the busybox `sleep`; skiff: none, the guest runs in the");
    println!("shim). PSS shares pages common to several processes (the shim binary, libc) among them.");
    println!();
    println!("| runtime | workload | shims | shim RSS MB mean / max | shim PSS MB mean / max | shim peak RSS MB max | container processes PSS MB mean | **shim + container PSS MB mean / max** |");
    println!("|---|---|---:|---|---|---:|---:|---|");
    memory_rows(ctd, n, false).await
}

/// Starts the containers `ids`, waits until they run, and formats the table row of their memory.
async fn measure_memory(ctd: &Containerd, v: &Variant, ids: &[String]) -> Result<String> {
    let warm_id = format!("{}-warm", v.prefix);
    let mut args = vec!["run", "--rm", "--runtime", v.runtime, v.image, &warm_id];
    args.extend_from_slice(v.warm);
    ctd.ctr_ok(&args).await?;
    for id in ids {
        let mut args = vec!["run", "-d", "--null-io", "--runtime", v.runtime, v.image, id];
        args.extend_from_slice(v.long);
        ctd.ctr_ok(&args).await?;
    }
    wait_running(ctd, v, ids).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shims = ctd.shims();
    let (mut shim, mut container, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for id in ids {
        let pid = *shims.get(id).with_context(|| format!("no shim process for {id}"))?;
        let own = mem(pid).with_context(|| format!("shim {pid} of {id} is gone"))?;
        let children = descendants(pid).into_iter().filter_map(mem).fold(Mem::default(), |a, b| a + b);
        shim.push(own);
        container.push(children);
        total.push(own + children);
    }
    let mut pids: Vec<u32> = ids.iter().filter_map(|id| shims.get(id).copied()).collect();
    pids.sort_unstable();
    pids.dedup();
    let kb = |m: &[Mem], f: fn(&Mem) -> u64| m.iter().map(f).map(|k| k as f64 / 1024.0).collect::<Vec<f64>>();
    let mean_max = |v: Vec<f64>| format!("{:.1} / {:.1}", mean(&v), v.iter().copied().fold(0.0, f64::max));
    let hwm_max = kb(&shim, |m| m.hwm_kb).into_iter().fold(0.0, f64::max);
    Ok(format!(
        "| {} | {} | {} | {} | {} | {:.1} | {:.1} | **{}** |",
        v.name,
        v.long.join(" "),
        pids.len(),
        mean_max(kb(&shim, |m| m.rss_kb)),
        mean_max(kb(&shim, |m| m.pss_kb)),
        hwm_max,
        mean(&kb(&container, |m| m.pss_kb)),
        mean_max(kb(&total, |m| m.pss_kb)),
    ))
}

/// Phase 4: `n` long-running containers per runtime in one pod: grouped into one shim by the CRI sandbox-id
/// annotation, as CRI groups a pod's containers (both shims honour it); memory per container.
async fn pod_memory(ctd: &Containerd, n: usize) -> Result<()> {
    println!("#### Memory: {n} long-running containers of one pod per runtime");
    println!();
    println!("The same containers, each `ctr run -d --null-io --annotation {SANDBOX_ID}=<pod>`: one shim per");
    println!("pod, as CRI runs a pod's containers (runc's shim groups by the same annotation). Per container: the");
    println!("shim's RSS (and peak RSS) divided by the pod's containers, plus the container processes (runc: each");
    println!("`sleep`; skiff: none).");
    println!();
    println!("| runtime | workload | containers | shims | shim RSS MB | shim peak RSS MB | container processes RSS MB | **RSS MB per container** | **peak RSS MB per container** |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    memory_rows(ctd, n, true).await
}

/// One table row per runtime: `n` long-running containers started (each in its own shim, or all in one pod's
/// with `one_pod`), measured, then removed; no shim may be left after.
async fn memory_rows(ctd: &Containerd, n: usize, one_pod: bool) -> Result<()> {
    for v in [&SKIFF, &RUNC] {
        let (what, tag) = if one_pod { ("of one pod ", "pod") } else { ("", "mem") };
        eprintln!("shim-run: {n} long-running containers {what}through the {} …", v.name);
        let ids: Vec<String> = (0..n).map(|i| format!("{}-{tag}-{i}", v.prefix)).collect();
        let result = if one_pod { measure_pod(ctd, v, &ids).await } else { measure_memory(ctd, v, &ids).await };
        let removed = remove(ctd, &ids).await;
        let row = result?;
        removed?;
        println!("{row}");
    }
    println!();
    if !ctd.shims_gone(Duration::from_secs(10)).await {
        bail!("shim processes left after removing the containers: {:?}", ctd.shims());
    }
    Ok(())
}

/// The CRI annotation naming a container's pod sandbox: containers that share it share one shim.
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Starts the containers `ids` in one pod, waits until they run, and formats the table row of their memory.
async fn measure_pod(ctd: &Containerd, v: &Variant, ids: &[String]) -> Result<String> {
    let annotation = format!("{SANDBOX_ID}={}-pod", v.prefix);
    for id in ids {
        let mut args = vec!["run", "-d", "--null-io", "--annotation", &annotation, "--runtime", v.runtime, v.image, id];
        args.extend_from_slice(v.long);
        ctd.ctr_ok(&args).await?;
    }
    wait_running(ctd, v, ids).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shims = ctd.shims();
    let first = ids.first().context("no containers")?;
    let pid = *shims.get(first).with_context(|| format!("no shim process for the pod of {first}"))?;
    let shim = mem(pid).with_context(|| format!("shim {pid} is gone"))?;
    let children = descendants(pid).into_iter().filter_map(mem).fold(Mem::default(), |a, b| a + b);
    let mb = |kb: u64| kb as f64 / 1024.0;
    let per = |kb: u64| mb(kb) / ids.len() as f64;
    Ok(format!(
        "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | **{:.2}** | **{:.2}** |",
        v.name,
        v.long.join(" "),
        ids.len(),
        shims.len(),
        mb(shim.rss_kb),
        mb(shim.hwm_kb),
        mb(children.rss_kb),
        per(shim.rss_kb + children.rss_kb),
        per(shim.hwm_kb + children.rss_kb),
    ))
}

/// Waits (30 s at most) until every container of `ids` is RUNNING.
async fn wait_running(ctd: &Containerd, v: &Variant, ids: &[String]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ctd.ctr_ok(&["tasks", "ls"]).await?;
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        let running =
            |id: &String| listing.lines().any(|l| l.split_whitespace().next() == Some(id) && l.contains("RUNNING"));
        if ids.iter().all(running) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not all {} containers were RUNNING after 30 s:\n{listing}", v.name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGKILLs, deletes and removes the containers `ids` (those that exist).
async fn remove(ctd: &Containerd, ids: &[String]) -> Result<()> {
    for id in ids {
        let _ = ctd.ctr(&["tasks", "kill", "-s", "SIGKILL", id]).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = ctd.ctr_ok(&["tasks", "ls"]).await?;
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        let live = |id: &String| {
            listing.lines().any(|l| l.split_whitespace().next() == Some(id.as_str()) && !l.contains("STOPPED"))
        };
        if !ids.iter().any(live) {
            break;
        }
        if Instant::now() > deadline {
            bail!("containers still running 20 s after SIGKILL:\n{listing}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in ids {
        let _ = ctd.ctr(&["tasks", "delete", id]).await?;
        let _ = ctd.ctr(&["containers", "delete", id]).await?;
    }
    Ok(())
}

/// One `ctr run --rm` of `v`'s short workload as container `id`: its wall time, or what went wrong.
async fn run_once(ctd: &Containerd, v: &Variant, id: &str) -> std::result::Result<Duration, String> {
    let mut args = vec!["run", "--rm", "--runtime", v.runtime, v.image, id];
    args.extend_from_slice(v.short);
    let started = Instant::now();
    let out = tokio::time::timeout(RUN_CAP, ctd.ctr(&args)).await;
    let elapsed = started.elapsed();
    let out = match out {
        Err(_) => return Err(format!("{id}: no exit within {} s", RUN_CAP.as_secs())),
        Ok(Err(e)) => return Err(format!("{id}: {e:#}")),
        Ok(Ok(out)) => out,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains(v.expect) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{id}: {} stdout {:?} stderr {:?}", out.status, stdout.trim(), stderr.trim()));
    }
    Ok(elapsed)
}

/// Failed runs: how many, and the first few messages.
#[derive(Default)]
struct Errors {
    count: usize,
    first: Vec<String>,
}

impl Errors {
    fn add(&mut self, message: String) {
        self.count += 1;
        if self.first.len() < 3 {
            self.first.push(message);
        }
    }

    fn report(&self, name: &str) {
        if self.count > 0 {
            println!("{name}: **{} failed runs**; first: {}", self.count, self.first.join("; "));
            println!();
        }
    }
}

fn workload(v: &Variant) -> String {
    if v.short.is_empty() {
        "`hello.wasm` (entrypoint)".into()
    } else {
        format!("busybox `{}`", v.short.join(" "))
    }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}
