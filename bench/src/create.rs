//! Pod creation: the shared loader (also used to fill the store for the list and RSS runs) and
//! the `api-create` benchmark.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use crate::cluster::{Backend, Cpu, Server};
use crate::stats::{count, ms, Latencies};

pub const PODS: &str = "/api/v1/namespaces/default/pods";

/// A small pod: one container, a label, no status.
pub fn pod(name: &str, annotations: Option<serde_json::Value>) -> Vec<u8> {
    let mut meta = json!({"name": name, "namespace": "default", "labels": {"app": "skiff-bench"}});
    if let Some(a) = annotations {
        meta["annotations"] = a;
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
    })
    .to_string()
    .into_bytes()
}

/// What one creation run did.
pub struct CreateRun {
    pub created: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latencies: Latencies,
    pub cpu: Cpu,
    pub hit_time_limit: bool,
}

impl CreateRun {
    pub fn rate(&self) -> f64 {
        self.created as f64 / self.elapsed.as_secs_f64()
    }
}

/// Creates `total` pods named `{prefix}-{i}` with `clients` concurrent clients, each its own
/// `reqwest::Client` (own connections), stopping early at `limit`. `progress` counts successes.
pub async fn create_pods(
    server: &Server,
    prefix: &str,
    total: usize,
    clients: usize,
    limit: Duration,
    progress: Option<Arc<AtomicUsize>>,
) -> Result<CreateRun> {
    let prefix = prefix.to_string();
    let body = Arc::new(move |i: usize| pod(&format!("{prefix}-{i}"), None));
    create_objects(server, PODS, body, total, clients, limit, progress).await
}

/// The body of the `i`-th object a creation run posts.
pub type MakeBody = Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>;

/// Posts `total` objects made by `body` to `path` (a collection URL path) with `clients`
/// concurrent clients, each its own `reqwest::Client` (own connections), stopping early at
/// `limit`. `progress` counts successes.
pub async fn create_objects(
    server: &Server,
    path: &str,
    body: MakeBody,
    total: usize,
    clients: usize,
    limit: Duration,
    progress: Option<Arc<AtomicUsize>>,
) -> Result<CreateRun> {
    let url = format!("{}{path}", server.url);
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let client = server.client()?;
        let (url, next, barrier, progress) = (url.clone(), next.clone(), barrier.clone(), progress.clone());
        let version = format!("{}/version", server.url);
        let make_body = body.clone();
        tasks.push(tokio::spawn(async move {
            // Warm the connection (TCP + TLS) outside the timed part, with a request that costs the
            // server nothing (a list, even with limit=1, counts every pod).
            let warm = client.get(version).send().await.and_then(|r| r.error_for_status());
            barrier.wait().await;
            warm?;
            let deadline = Instant::now() + limit;
            let mut latencies = Vec::new();
            let (mut errors, mut first_error) = (0usize, None::<String>);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() >= deadline {
                    break;
                }
                let body = make_body(i);
                let started = Instant::now();
                let outcome =
                    client.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body).send().await;
                let result = match outcome {
                    Ok(resp) if resp.status() == reqwest::StatusCode::CREATED => {
                        // Read the body: the request is done when the response is.
                        resp.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                    }
                    Ok(resp) => {
                        let status = resp.status();
                        Err(format!("{status}: {}", resp.text().await.unwrap_or_default()))
                    }
                    Err(e) => Err(format!("{e:#}")),
                };
                match result {
                    Ok(()) => {
                        latencies.push(started.elapsed());
                        if let Some(p) = &progress {
                            p.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            Ok::<_, reqwest::Error>((latencies, errors, first_error))
        }));
    }
    // The clock starts when every client is connected and released.
    barrier.wait().await;
    let cpu_before = Cpu::now(server);
    let started = Instant::now();
    let mut all = Vec::with_capacity(total);
    let (mut errors, mut first_error) = (0, None);
    for task in tasks {
        let (latencies, e, fe) = task.await??;
        all.extend(latencies);
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    let elapsed = started.elapsed();
    let cpu = Cpu::now(server).since(cpu_before);
    let created = all.len();
    Ok(CreateRun {
        created,
        errors,
        first_error,
        elapsed,
        latencies: Latencies::from_durations(all),
        cpu,
        hit_time_limit: created + errors < total,
    })
}

/// `api-create`: creates/s and latency per client count.
/// With `as_service_account`, the clients are a service account bound to the `edit` role
/// (authorized by RBAC) instead of the admin (`system:masters`, which skips authorization);
/// with `audit`, the server writes an audit log (default policy), for a side-by-side figure.
#[allow(clippy::too_many_arguments)] // one per command-line option of the subcommand
pub async fn run(
    bin: &Path,
    backend: Backend,
    clients: &[usize],
    total: usize,
    limit: Duration,
    as_service_account: bool,
    audit: bool,
    server_args: &[String],
) -> Result<()> {
    let mut server = Server::start_with(bin, backend, audit, server_args).await?;
    let mut label = if audit { format!("{backend} + audit log") } else { backend.to_string() };
    if !server_args.is_empty() {
        label = format!("{label} ({})", server_args.join(" "));
    }
    let identity = if as_service_account {
        server.act_as_service_account("bench", "edit").await?;
        "service account (RBAC)"
    } else {
        "admin"
    };
    let mut rows = Vec::new();
    for (level, &n) in clients.iter().enumerate() {
        eprintln!("api-create: {backend}, {n} clients, {total} pods as {identity} …");
        let run = create_pods(&server, &format!("l{level}-c{n}"), total, n, limit, None).await?;
        server.check_alive()?;
        if let Some(e) = &run.first_error {
            eprintln!("api-create: {} errors; first: {e}", run.errors);
        }
        if run.created == 0 {
            bail!("no pod was created at {n} clients: {}", run.first_error.unwrap_or_default());
        }
        let per_k = |s: f64| format!("{:.2}", s / run.created as f64 * 1000.0);
        rows.push(format!(
            "| {label} | {identity} | {n} | {}{} | {} | {:.2} | **{:.0}** | {} | **{}** | {} | {} | {} | {} |",
            count(run.created),
            if run.hit_time_limit { " (60 s cap)" } else { "" },
            run.errors,
            run.elapsed.as_secs_f64(),
            run.rate(),
            ms(run.latencies.p(50.0)),
            ms(run.latencies.p(99.0)),
            ms(run.latencies.max()),
            per_k(run.cpu.server),
            if backend == Backend::Etcd { per_k(run.cpu.etcd) } else { "–".into() },
            per_k(run.cpu.bench),
        ));
    }
    server.report_log();
    if audit {
        let log = server.audit_log();
        let bytes = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let lines = std::fs::read_to_string(&log).map(|t| t.lines().count()).unwrap_or(0);
        eprintln!("api-create: audit log {}: {lines} events, {bytes} bytes", log.display());
    }
    println!("| backend | client identity | clients | pods created | errors | seconds | creates/s | p50 ms | p99 ms | max ms | server CPU s / 1k creates | etcd CPU s / 1k | harness CPU s / 1k |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
