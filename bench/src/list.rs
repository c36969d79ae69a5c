//! `api-list`: fills the store with N pods, then times full and paginated lists.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cluster::{Backend, Server};
use crate::create::{create_pods, PODS};
use crate::stats::{count, mb, ms, Latencies};

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// One list request read to the end: (time, body).
async fn get(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
    accept: &str,
) -> Result<(Duration, impl AsRef<[u8]>)> {
    let started = Instant::now();
    let resp = client.get(url).query(query).header(reqwest::header::ACCEPT, accept).send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    let elapsed = started.elapsed();
    if !status.is_success() {
        bail!("list {query:?} answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok((elapsed, body))
}

/// One request (or, for pagination, one walk through every page) of kind `k`: (time, size).
async fn measure(k: usize, client: &reqwest::Client, base: &str, pods: usize) -> Result<(Duration, String)> {
    match k {
        0 => {
            let (t, body) = get(client, base, &[], "application/json").await?;
            let (n, _) = items(body.as_ref(), "items")?;
            if n != pods {
                bail!("full list returned {n} pods, expected {pods}");
            }
            Ok((t, format!("{} MB", mb(body.as_ref().len() as u64))))
        }
        1 => {
            // limit=500 and the continue token until done; the time includes reading each page's
            // token (a JSON parse of the page), as any client must.
            let started = Instant::now();
            let (mut seen, mut cont, mut pages) = (0, None::<String>, 0);
            loop {
                let mut query = vec![("limit", "500")];
                if let Some(c) = &cont {
                    query.push(("continue", c));
                }
                let (_, body) = get(client, base, &query, "application/json").await?;
                let (n, next) = items(body.as_ref(), "items")?;
                seen += n;
                pages += 1;
                match next {
                    Some(c) => cont = Some(c),
                    None => break,
                }
            }
            if seen != pods {
                bail!("paginated list returned {seen} pods, expected {pods}");
            }
            Ok((started.elapsed(), format!("{pages} pages")))
        }
        2 => {
            // One page alone: what a client waits for before it sees anything.
            let (t, body) = get(client, base, &[("limit", "500")], "application/json").await?;
            let (n, _) = items(body.as_ref(), "items")?;
            Ok((t, format!("{n} pods")))
        }
        _ => {
            // What `kubectl get pods` asks for (without --chunk-size): a server-side Table.
            let (t, body) = get(client, base, &[], TABLE).await?;
            let (n, _) = items(body.as_ref(), "rows")?;
            if n != pods {
                bail!("table list returned {n} rows, expected {pods}");
            }
            Ok((t, format!("{} MB", mb(body.as_ref().len() as u64))))
        }
    }
}

fn items(body: &[u8], field: &str) -> Result<(usize, Option<String>)> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    let n = v[field].as_array().context("no items/rows array")?.len();
    let cont = v["metadata"]["continue"].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    Ok((n, cont))
}

pub async fn run(bin: &Path, backend: Backend, pods: usize, runs: usize) -> Result<()> {
    let mut server = Server::start(bin, backend).await?;
    eprintln!("api-list: creating {pods} pods with 64 clients …");
    let fill = create_pods(&server, "l", pods, 64, Duration::from_secs(600), None).await?;
    server.check_alive()?;
    if fill.created != pods {
        bail!("created only {} of {pods} pods ({} errors; first: {:?})", fill.created, fill.errors, fill.first_error);
    }
    eprintln!("api-list: {pods} pods created in {:.1} s ({:.0}/s)", fill.elapsed.as_secs_f64(), fill.rate());
    let client = server.client()?;
    let base = format!("{}{PODS}", server.url);
    // Warm the connection.
    client.get(format!("{}/version", server.url)).send().await?.error_for_status()?;

    // Each kind of request is measured on its own; one that fails is reported in its row.
    let kinds = [
        "full list, JSON (no limit)",
        "paginated, limit=500, all pages",
        "first page only, limit=500",
        "full list as Table (`kubectl get pods`)",
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    let mut sizes = vec![String::new(); kinds.len()];
    let mut failed: Vec<Option<String>> = vec![None; kinds.len()];
    for run in 0..runs {
        eprintln!("api-list: run {}/{runs} …", run + 1);
        for (k, _) in kinds.iter().enumerate() {
            if failed[k].is_some() {
                continue;
            }
            match measure(k, &client, &base, pods).await {
                Ok((t, size)) => {
                    times[k].push(t);
                    sizes[k] = size;
                }
                Err(e) => failed[k] = Some(format!("{e:#}")),
            }
        }
    }
    server.check_alive()?;
    server.report_log();
    println!("| backend | pods | request | runs | p50 ms | min ms | max ms | response |");
    println!("|---|---:|---|---:|---:|---:|---:|---|");
    for (k, what) in kinds.iter().enumerate() {
        if let Some(err) = &failed[k] {
            let err: String = err.chars().take(300).collect();
            println!("| {backend} | {} | {what} | – | **failed** | | | {} |", count(pods), err.replace('|', "\\|"));
            continue;
        }
        let l = Latencies::from_durations(times[k].clone());
        println!(
            "| {backend} | {} | {what} | {} | **{}** | {} | {} | {} |",
            count(pods),
            l.len(),
            ms(l.p(50.0)),
            ms(l.0.first().copied().unwrap_or(f64::NAN)),
            ms(l.max()),
            sizes[k],
        );
    }
    Ok(())
}
