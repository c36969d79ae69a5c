//! `api-rss`: the server's resident memory with N small pods stored.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::cluster::{rss, Backend, Server};
use crate::create::{create_pods, PODS};
use crate::stats::{count, mb};

pub async fn run(bin: &Path, backend: Backend, pods: usize, limit: Duration) -> Result<()> {
    let mut server = Server::start(bin, backend).await?;
    let pid = server.pid();
    let (idle, _) = rss(pid)?;
    let mut rows = vec![("idle, empty store".to_string(), 0usize, idle)];

    eprintln!("api-rss: creating up to {pods} pods with 64 clients (stopping at {} s) …", limit.as_secs());
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
    let (after_create, _) = rss(pid)?;
    rows.push(("after creating".into(), stored, after_create));

    let client = server.client()?;
    let started = Instant::now();
    let body = client.get(format!("{}{PODS}", server.url)).send().await?.error_for_status()?.bytes().await?;
    let list_time = started.elapsed();
    let (after_list, peak) = rss(pid)?;
    rows.push((
        format!("after one full list ({} MB body, {:.2} s)", mb(body.len() as u64), list_time.as_secs_f64()),
        stored,
        after_list,
    ));
    drop(body);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (settled, peak2) = rss(pid)?;
    rows.push(("10 s later".into(), stored, settled));
    server.check_alive()?;
    server.report_log();

    println!("| backend | pods stored | when | server VmRSS MB | per pod above idle |");
    println!("|---|---:|---|---:|---:|");
    for (when, n, r) in &rows {
        let per =
            if *n > 0 { format!("{:.2} KB", (*r as f64 - idle as f64) / *n as f64 / 1024.0) } else { "–".into() };
        println!("| {backend} | {} | {when} | **{}** | {per} |", count(*n), mb(*r));
    }
    println!();
    println!(
        "Peak RSS (VmHWM) {} MB. {} pods created in {:.1} s ({:.0}/s, {} errors){}.",
        mb(peak.max(peak2)),
        count(stored),
        fill.elapsed.as_secs_f64(),
        fill.rate(),
        fill.errors,
        if fill.hit_time_limit {
            format!("; stopped at the {} s cap before {}", limit.as_secs(), count(pods))
        } else {
            String::new()
        },
    );
    Ok(())
}
