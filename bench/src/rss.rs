//! `api-rss`: the server's resident memory with N small pods stored, then after a paginated
//! list (limit=500) and after one unpaginated list of everything, in JSON and in protobuf.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;

use crate::cluster::{rss, Backend, Server};
use crate::create::{create_pods, PODS};
use crate::stats::{count, mb};

/// A pod watch that reads (and drops) everything, as a controller or `kubectl get -w` would.
async fn drain_watch(client: reqwest::Client, url: String, seen: Arc<AtomicUsize>) -> Result<()> {
    let mut body = client.get(url).send().await?.error_for_status()?.bytes_stream();
    while let Some(chunk) = body.next().await {
        seen.fetch_add(chunk?.iter().filter(|&&b| b == b'\n').count(), Ordering::Relaxed);
    }
    Ok(())
}

pub async fn run(
    bin: &Path,
    backend: Backend,
    pods: usize,
    watchers: usize,
    limit: Duration,
    server_args: &[String],
) -> Result<()> {
    let mut server = Server::start_with(bin, backend, false, server_args).await?;
    let pid = server.pid();
    let client = server.client()?;
    let base = format!("{}{PODS}", server.url);

    let seen = Arc::new(AtomicUsize::new(0));
    let mut watches = Vec::new();
    if watchers > 0 {
        let list: serde_json::Value =
            client.get(&base).query(&[("limit", "1")]).send().await?.error_for_status()?.json().await?;
        let rv = list["metadata"]["resourceVersion"].as_str().context("list without resourceVersion")?;
        let url = format!("{base}?watch=1&resourceVersion={rv}&timeoutSeconds=3600");
        for _ in 0..watchers {
            watches.push(tokio::spawn(drain_watch(server.client()?, url.clone(), seen.clone())));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (idle, _) = rss(pid)?;
    let mut rows = vec![("idle, empty store".to_string(), 0usize, idle)];

    eprintln!(
        "api-rss: creating up to {pods} pods with 64 clients, {watchers} watch(es) open (stopping at {} s) …",
        limit.as_secs()
    );
    let progress = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = {
        let (progress, samples) = (progress.clone(), samples.clone());
        tokio::spawn(async move {
            let mut next_mark = 10_000;
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let n = progress.load(Ordering::Relaxed);
                if n >= next_mark {
                    if let Ok((r, _)) = rss(pid) {
                        eprintln!("api-rss: {n} pods after {:.0} s, RSS {} MB", started.elapsed().as_secs_f64(), mb(r));
                        samples.lock().expect("samples").push((n, r));
                    }
                    next_mark = (n / 10_000 + 1) * 10_000;
                }
            }
        })
    };
    let fill = create_pods(&server, "r", pods, 64, limit, Some(progress.clone())).await?;
    sampler.abort();
    server.check_alive()?;
    if fill.created == 0 {
        bail!("no pod created: {:?}", fill.first_error);
    }
    if fill.errors > 0 {
        eprintln!("api-rss: {} create errors; first: {:?}", fill.errors, fill.first_error);
    }
    let stored = fill.created;
    for (n, r) in samples.lock().expect("samples").iter() {
        rows.push(("while creating".into(), *n, *r));
    }
    eprintln!("api-rss: {stored} pods in {:.1} s ({:.0}/s)", fill.elapsed.as_secs_f64(), fill.rate());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after_create, peak_create) = rss(pid)?;
    rows.push(("after creating".into(), stored, after_create));

    // Every page of limit=500, as kubectl and client-go reflectors read.
    let started = Instant::now();
    let (mut listed, mut cont) = (0, None::<String>);
    loop {
        let mut query = vec![("limit", "500")];
        if let Some(c) = &cont {
            query.push(("continue", c));
        }
        let page: serde_json::Value = client.get(&base).query(&query).send().await?.error_for_status()?.json().await?;
        listed += page["items"].as_array().map_or(0, Vec::len);
        match page["metadata"]["continue"].as_str().filter(|s| !s.is_empty()) {
            Some(c) => cont = Some(c.to_string()),
            None => break,
        }
    }
    let paged_time = started.elapsed();
    let (after_paged, peak_paged) = rss(pid)?;
    rows.push((
        format!("after a paginated list of all {listed} (limit=500, {:.2} s)", paged_time.as_secs_f64()),
        stored,
        after_paged,
    ));

    let started = Instant::now();
    let body = client.get(&base).send().await?.error_for_status()?.bytes().await?;
    let list_time = started.elapsed();
    let (after_list, peak) = rss(pid)?;
    rows.push((
        format!("after one unpaginated list ({} MB body, {:.2} s)", mb(body.len() as u64), list_time.as_secs_f64()),
        stored,
        after_list,
    ));
    drop(body);

    // The same in protobuf, as Go clients (controllers, Helm) list.
    let started = Instant::now();
    let body = client
        .get(&base)
        .header("Accept", "application/vnd.kubernetes.protobuf")
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let pb_time = started.elapsed();
    if !body.starts_with(b"k8s\0") {
        bail!("the protobuf list is not protobuf ({} bytes)", body.len());
    }
    let (after_pb, peak_pb) = rss(pid)?;
    rows.push((
        format!(
            "after one unpaginated protobuf list ({} MB body, {:.2} s)",
            mb(body.len() as u64),
            pb_time.as_secs_f64()
        ),
        stored,
        after_pb,
    ));
    drop(body);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (settled, peak_end) = rss(pid)?;
    rows.push(("10 s later".into(), stored, settled));
    server.check_alive()?;
    for w in &watches {
        if w.is_finished() {
            eprintln!("api-rss: a watch ended early");
        }
    }
    watches.iter().for_each(|w| w.abort());
    server.report_log();

    println!("| backend | open watches | pods stored | when | server VmRSS MB | per pod above idle |");
    println!("|---|---:|---:|---|---:|---:|");
    for (when, n, r) in &rows {
        let per =
            if *n > 0 { format!("{:.2} KB", (*r as f64 - idle as f64) / *n as f64 / 1024.0) } else { "–".into() };
        println!("| {backend} | {watchers} | {} | {when} | **{}** | {per} |", count(*n), mb(*r));
    }
    println!();
    println!(
        "Peak RSS (VmHWM): {} MB through creation, {} MB through the paginated list, {} MB overall (after the unpaginated lists). \
         {} pods created in {:.1} s ({:.0}/s, {} errors){}.{}",
        mb(peak_create),
        mb(peak_paged),
        mb(peak.max(peak_pb).max(peak_end)),
        count(stored),
        fill.elapsed.as_secs_f64(),
        fill.rate(),
        fill.errors,
        if fill.hit_time_limit {
            format!("; stopped at the {} s cap before {}", limit.as_secs(), count(pods))
        } else {
            String::new()
        },
        if watchers > 0 { format!(" The watch(es) received {} events.", count(seen.load(Ordering::Relaxed))) } else { String::new() },
    );
    Ok(())
}
