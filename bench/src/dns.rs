//! `dns`: queries per second and latency of the node's cluster DNS server for service names.
//!
//! Starts the agent's own server (`skiff_node::dns::server`: hickory-server answering from the
//! zone the agent's watches fill) on 127.0.0.1 with `--services` ClusterIP Services in the zone,
//! then `--clients` closed-loop UDP clients (one socket each) ask `A <svc-i>.bench.svc.cluster.local`
//! for random `i` for `--seconds`. Every answer is checked (id, NOERROR, one answer). A second,
//! shorter phase asks names that do not exist (NXDOMAIN).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use parking_lot::RwLock;
use skiff_node::dns::records::{service_records, Zone};
use skiff_node::dns::server;

use crate::stats::{ms, Latencies};

const DOMAIN: &str = "cluster.local";

fn service(i: usize) -> Service {
    let n = u32::try_from(i).unwrap_or(u32::MAX);
    let ip = std::net::Ipv4Addr::from(0x0a2b_0000u32.wrapping_add(n).wrapping_add(16)).to_string();
    Service {
        metadata: ObjectMeta { name: Some(format!("svc-{i}")), namespace: Some("bench".into()), ..Default::default() },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The wire form of `A <name>` with id 0 (the id is patched per query).
fn query(name: &str) -> Result<Vec<u8>> {
    let mut m = Message::new();
    m.set_id(0).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    Ok(m.to_vec()?)
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    wrong: usize,
    timeouts: usize,
}

/// Asks the names of `queries` in random order until `stop`; `want_nx`: every answer must be NXDOMAIN.
async fn client(server: SocketAddr, queries: Arc<Vec<Vec<u8>>>, stop: Arc<AtomicBool>, want_nx: bool) -> Result<Tally> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(server).await?;
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 1500];
    let mut id: u16 = rand::random();
    while !stop.load(Ordering::Relaxed) {
        id = id.wrapping_add(1);
        let mut packet = queries[rand::random_range(0..queries.len())].clone();
        packet[..2].copy_from_slice(&id.to_be_bytes());
        let started = Instant::now();
        socket.send(&packet).await?;
        let n = loop {
            match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
                Ok(Ok(n)) if n >= 12 && buf[..2] == id.to_be_bytes() => break Some(n),
                Ok(Ok(_)) => continue, // a late answer to an earlier query
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => break None,
            }
        };
        let Some(n) = n else {
            tally.timeouts += 1;
            continue;
        };
        tally.latencies.push(started.elapsed());
        let rcode = buf[3] & 0x0f;
        let answers = u16::from_be_bytes([buf[6], buf[7]]);
        let ok = if want_nx { rcode == 3 && answers == 0 } else { rcode == 0 && answers == 1 && n > 12 };
        if !ok {
            tally.wrong += 1;
        }
    }
    Ok(tally)
}

async fn phase(
    label: &str,
    server: SocketAddr,
    queries: Vec<Vec<u8>>,
    clients: usize,
    seconds: u64,
    want_nx: bool,
) -> Result<()> {
    let queries = Arc::new(queries);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> =
        (0..clients).map(|_| tokio::spawn(client(server, Arc::clone(&queries), Arc::clone(&stop), want_nx))).collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for t in tasks {
        let tally = t.await.context("client task")??;
        all.latencies.extend(tally.latencies);
        all.wrong += tally.wrong;
        all.timeouts += tally.timeouts;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let lat = Latencies::from_durations(all.latencies);
    println!(
        "{label}: {} queries in {elapsed:.1} s = {:.0} qps; latency p50 {} p99 {} p99.9 {} max {}; wrong {}, timeouts {}",
        lat.len(),
        lat.len() as f64 / elapsed,
        ms(lat.p(50.0)),
        ms(lat.p(99.0)),
        ms(lat.p(99.9)),
        ms(lat.max()),
        all.wrong,
        all.timeouts
    );
    if all.wrong > 0 {
        bail!("{label}: {} wrong answers", all.wrong);
    }
    Ok(())
}

/// Runs the benchmark.
pub async fn run(services: usize, clients: usize, seconds: u64) -> Result<()> {
    let mut zone = Zone::new(DOMAIN);
    for i in 0..services {
        let svc = service(i);
        zone.set_service(&("bench".into(), format!("svc-{i}")), service_records(DOMAIN, &svc, &[]));
    }
    let zone = Arc::new(RwLock::new(zone));
    let (udp, tcp) = server::bind("127.0.0.1:0".parse()?)?;
    let addr = udp.local_addr()?;
    let mut dns = server::serve(server::Handler::new(zone, None), udp, tcp);
    println!(
        "cluster DNS on {addr}: {services} services, {clients} clients, {seconds} s, {} cpus",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let names: Vec<Vec<u8>> =
        (0..services).map(|i| query(&format!("svc-{i}.bench.svc.{DOMAIN}."))).collect::<Result<_>>()?;
    phase("service A", addr, names, clients, seconds, false).await?;
    let missing: Vec<Vec<u8>> =
        (0..services.min(1000)).map(|i| query(&format!("nope-{i}.bench.svc.{DOMAIN}."))).collect::<Result<_>>()?;
    phase("NXDOMAIN", addr, missing, clients, seconds.div_ceil(2), true).await?;
    dns.shutdown_gracefully().await?;
    Ok(())
}
