//! `api-watch`: N concurrent pod watches, then pods created one at a time; each watcher records
//! when each pod's ADDED event reached it.
//!
//! Every pod carries the wall-clock time just before its create request was sent, in the
//! annotation `skiff-bench/sent-unix-ns`; a watcher subtracts it from the wall-clock time at which
//! the event's line was complete in its buffer. Harness and server share one clock (same machine).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

use crate::cluster::{Backend, Cpu, Server};
use crate::create::{pod, PODS};
use crate::stats::{count, ms, Latencies};

const SENT: &str = "skiff-bench/sent-unix-ns";
const SEQ: &str = "skiff-bench/seq";

fn unix_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// The string value of annotation `key` in an event line, without parsing the whole object.
fn annotation<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("\"{key}\":\"");
    let start = line.find(&needle)? + needle.len();
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// One received event: watcher, sequence number, latency in ns.
type Record = (u32, i64, i64);

/// What every watcher shares with the driver.
struct Shared {
    url: String,
    /// Bounds how many watches connect at once (TLS handshakes), not how many stay open.
    connect: Semaphore,
    /// Timed events each watcher waits for.
    events: usize,
    /// Watchers whose response headers arrived.
    opened: AtomicUsize,
    /// Watchers that saw the warm-up pod.
    warm: AtomicUsize,
    /// Watchers that saw every timed event.
    done: AtomicUsize,
}

async fn watcher(
    id: u32,
    client: reqwest::Client,
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Record>,
) -> Result<()> {
    let resp = {
        let _permit = shared.connect.acquire().await?;
        client.get(&shared.url).send().await?.error_for_status()?
    };
    shared.opened.fetch_add(1, Ordering::Relaxed);
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let (mut warmed, mut seen) = (false, 0usize);
    while let Some(chunk) = body.next().await {
        let received = unix_ns();
        buf.extend_from_slice(&chunk?);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let line = std::str::from_utf8(&line)?;
            if !line.starts_with("{\"type\":\"ADDED\"") {
                if line.starts_with("{\"type\":\"ERROR\"") {
                    bail!("watch {id} got an error event: {line}");
                }
                continue;
            }
            let (Some(seq), Some(sent)) = (annotation(line, SEQ), annotation(line, SENT)) else { continue };
            let seq: i64 = seq.parse()?;
            if seq < 0 {
                if !warmed {
                    warmed = true;
                    shared.warm.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let _ = out.send((id, seq, received - sent.parse::<i64>()?));
            seen += 1;
            if seen == shared.events {
                shared.done.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
    }
    Err(anyhow!("watch {id} ended after {seen} events"))
}

pub async fn run(bin: &Path, backend: Backend, watchers: usize, events: usize, spacing: Duration) -> Result<()> {
    let mut server = Server::start(bin, backend).await?;
    let creator = server.client()?;
    let list: serde_json::Value =
        creator.get(format!("{}{PODS}?limit=1", server.url)).send().await?.error_for_status()?.json().await?;
    let rv = list["metadata"]["resourceVersion"].as_str().context("list without resourceVersion")?.to_string();
    let url = format!("{}{PODS}?watch=1&resourceVersion={rv}&timeoutSeconds=3600", server.url);

    // A handful of client objects; HTTP/1.1 gives each concurrent watch its own connection.
    let clients: Vec<reqwest::Client> = (0..8).map(|_| server.client()).collect::<Result<_>>()?;
    let shared = Arc::new(Shared {
        url,
        connect: Semaphore::new(32),
        events,
        opened: AtomicUsize::new(0),
        warm: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
    });
    let (opened, warm, done) = (&shared.opened, &shared.warm, &shared.done);
    let (tx, mut rx) = mpsc::unbounded_channel();
    eprintln!("api-watch: opening {watchers} watches …");
    let opening = Instant::now();
    let mut tasks = Vec::with_capacity(watchers);
    for id in 0..watchers {
        let client = clients[id % clients.len()].clone();
        tasks.push(tokio::spawn(watcher(id as u32, client, shared.clone(), tx.clone())));
    }
    drop(tx);

    // A warm-up pod; every watcher seeing it proves every watch is established and streaming.
    let create = |name: String, seq: i64| {
        let creator = creator.clone();
        let url = format!("{}{PODS}", server.url);
        async move {
            let sent = unix_ns();
            let body = pod(&name, Some(json!({SENT: sent.to_string(), SEQ: seq.to_string()})));
            let started = Instant::now();
            let resp =
                creator.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body).send().await?;
            let status = resp.status();
            let text = resp.text().await?;
            if status != reqwest::StatusCode::CREATED {
                bail!("creating {name}: {status}: {text}");
            }
            Ok::<_, anyhow::Error>(started.elapsed())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if opened.load(Ordering::Relaxed) == watchers || tasks.iter().any(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    create("watch-warmup".into(), -1).await?;
    while warm.load(Ordering::Relaxed) < watchers && Instant::now() < deadline {
        if let Some(t) = tasks.iter_mut().find(|t| t.is_finished()) {
            t.await??;
            bail!("a watcher stopped before the warm-up pod");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_time = opening.elapsed();
    let established = warm.load(Ordering::Relaxed);
    if established < watchers {
        bail!("only {established} of {watchers} watches saw the warm-up pod within 120 s");
    }
    eprintln!(
        "api-watch: {watchers} watches streaming after {:.1} s; creating {events} pods {} ms apart …",
        open_time.as_secs_f64(),
        spacing.as_millis()
    );

    let cpu_before = Cpu::now(&server);
    let mut creates = Vec::with_capacity(events);
    let mut ticks = tokio::time::interval(spacing);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 0..events {
        ticks.tick().await;
        creates.push(create(format!("watch-{seq}"), seq as i64).await?);
    }
    let wait_until = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::Relaxed) < watchers && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = Cpu::now(&server).since(cpu_before);
    server.check_alive()?;
    let mut failures = Vec::new();
    for t in tasks {
        if t.is_finished() {
            if let Err(e) = t.await? {
                failures.push(format!("{e:#}"));
            }
        } else {
            t.abort();
        }
    }
    let mut delivery = Vec::with_capacity(watchers * events);
    let mut first = vec![i64::MAX; events];
    let mut last = vec![i64::MIN; events];
    while let Ok((_, seq, ns)) = rx.try_recv() {
        delivery.push(ns as f64 / 1e6);
        let s = seq as usize;
        if s < events {
            first[s] = first[s].min(ns);
            last[s] = last[s].max(ns);
        }
    }
    let received = delivery.len();
    let delivery = Latencies::from_ms(delivery);
    let spread = Latencies::from_ms(
        first.iter().zip(&last).filter(|(f, _)| **f != i64::MAX).map(|(f, l)| (l - f) as f64 / 1e6).collect(),
    );
    let first_lat = Latencies::from_ms(first.iter().filter(|f| **f != i64::MAX).map(|f| *f as f64 / 1e6).collect());
    let creates = Latencies::from_durations(creates);
    server.report_log();
    if !failures.is_empty() {
        eprintln!("api-watch: {} watchers failed; first: {}", failures.len(), failures[0]);
    }
    let expected = watchers * events;
    println!("| backend | watchers | events | deliveries received / expected | create sent → watcher received p50 ms | p99 ms | max ms | first watcher p50 ms | fan-out spread (last − first watcher) p50 ms | p99 ms | create latency p50 ms | p99 ms | server CPU s | harness CPU s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {backend} | {} | {events} | {} / {} | {} | **{}** | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
        count(watchers),
        count(received),
        count(expected),
        ms(delivery.p(50.0)),
        ms(delivery.p(99.0)),
        ms(delivery.max()),
        ms(first_lat.p(50.0)),
        ms(spread.p(50.0)),
        ms(spread.p(99.0)),
        ms(creates.p(50.0)),
        ms(creates.p(99.0)),
        cpu.server,
        cpu.bench,
    );
    println!();
    println!("Watches opened and streaming in {:.1} s; {} watcher(s) failed.", open_time.as_secs_f64(), failures.len());
    Ok(())
}
