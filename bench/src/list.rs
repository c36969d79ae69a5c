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
    let resp = client.get(url).query(query).header(reqwest::header::ACCEPT, accept).send().await?.error_for_status()?;
    let body = resp.bytes().await?;
    Ok((started.elapsed(), body))
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
    get(&client, &base, &[("limit", "1")], "application/json").await?;

    let (mut full, mut paged, mut table) = (Vec::new(), Vec::new(), Vec::new());
    let (mut full_bytes, mut table_bytes, mut pages) = (0, 0, 0);
    for run in 0..runs {
        eprintln!("api-list: run {}/{runs} …", run + 1);
        let (t, body) = get(&client, &base, &[], "application/json").await?;
        let (n, _) = items(body.as_ref(), "items")?;
        if n != pods {
            bail!("full list returned {n} pods, expected {pods}");
        }
        full.push(t);
        full_bytes = body.as_ref().len();

        // Paginated: limit=500 and the continue token until done; the time includes reading each
        // page's token (a JSON parse of the page), as any client must.
        let started = Instant::now();
        let (mut seen, mut cont, mut n_pages) = (0, None::<String>, 0);
        loop {
            let mut query = vec![("limit", "500")];
            if let Some(c) = &cont {
                query.push(("continue", c));
            }
            let (_, body) = get(&client, &base, &query, "application/json").await?;
            let (n, next) = items(body.as_ref(), "items")?;
            seen += n;
            n_pages += 1;
            match next {
                Some(c) => cont = Some(c),
                None => break,
            }
        }
        paged.push(started.elapsed());
        if seen != pods {
            bail!("paginated list returned {seen} pods, expected {pods}");
        }
        pages = n_pages;

        // What `kubectl get pods` asks for: a server-side Table.
        let (t, body) = get(&client, &base, &[], TABLE).await?;
        let (n, _) = items(body.as_ref(), "rows")?;
        if n != pods {
            bail!("table list returned {n} rows, expected {pods}");
        }
        table.push(t);
        table_bytes = body.as_ref().len();
    }
    server.check_alive()?;
    server.report_log();
    let row = |what: &str, times: Vec<Duration>, size: String| {
        let l = Latencies::from_durations(times);
        println!(
            "| {backend} | {} | {what} | {} | **{}** | {} | {} | {size} |",
            count(pods),
            l.len(),
            ms(l.p(50.0)),
            ms(l.0[0]),
            ms(l.max())
        );
    };
    println!("| backend | pods | request | runs | p50 ms | min ms | max ms | response |");
    println!("|---|---:|---|---:|---:|---:|---:|---|");
    row("full list, JSON (no limit)", full, format!("{} MB", mb(full_bytes as u64)));
    row("paginated, limit=500, all pages", paged, format!("{pages} pages"));
    row("full list as Table (`kubectl get pods`)", table, format!("{} MB", mb(table_bytes as u64)));
    Ok(())
}
