//! Tests of pod sandboxes against the real CNI plugins (root): namespaces, addresses, traffic,
//! host ports, records, adoption, sweep and the pool. Each test has its own bridge, subnet,
//! namespace prefix and state dir, and tears everything down in a Drop guard.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{parse_proc_routes, Ipv4Cidr};
use super::netns::{create_netns, is_live_netns, list_netns, netns_path};
use super::*;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A pod network of one test, torn down on drop (also when the test fails).
struct TestNet {
    mgr: Arc<SandboxManager>,
    cfg: NetworkConfig,
    _dir: tempfile::TempDir,
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let mgr = self.mgr.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(mgr.teardown_all());
            }
        })
        .join();
        for name in list_netns(&self.cfg.netns_prefix) {
            let _ = netns::remove_netns(&netns_path(&name));
        }
    }
}

fn test_config(dir: &Path, n: u32, cidr: String, pool_size: usize) -> NetworkConfig {
    let pid = std::process::id();
    NetworkConfig {
        bridge: format!("skt{}{}", pid % 1000, n),
        pod_cidr: cidr,
        cni_bin_dir: PathBuf::from("/usr/lib/cni"),
        state_dir: dir.to_path_buf(),
        netns_prefix: format!("skt{pid}-{n}-"),
        pool_size,
        service_cidr: None,
        default_route: false,
    }
}

/// A manager with a bridge, prefix and /24 of its own (the subnet is checked against host routes).
async fn test_net(pool_size: usize) -> TestNet {
    let dir = tempfile::tempdir().unwrap();
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let base = std::process::id() % 200;
    let mut last = None;
    for attempt in 0..50 {
        let x = (base + n * 7 + attempt * 61) % 250 + 1;
        let cfg = test_config(dir.path(), n, format!("10.213.{x}.0/24"), pool_size);
        match SandboxManager::new(cfg.clone()).await {
            Ok(mgr) => return TestNet { mgr, cfg, _dir: dir },
            Err(e @ SandboxError::CidrOverlap { .. }) => last = Some(e),
            Err(e) => panic!("manager: {e}"),
        }
    }
    panic!("no free test subnet: {last:?}");
}

/// A listener bound inside `netns` (the socket stays in that namespace), answering one line per connection.
fn serve_in(netns: &Path, addr: SocketAddr, reply: &'static str) -> SocketAddr {
    let path = netns.to_path_buf();
    let listener = std::thread::spawn(move || {
        enter_netns(&path).unwrap();
        TcpListener::bind(addr).unwrap()
    })
    .join()
    .unwrap();
    let local = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    local
}

fn read_from(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn ip_addr_in(netns_name: &str) -> String {
    let out = std::process::Command::new("ip").args(["-n", netns_name, "-4", "addr"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn netns_name(s: &Sandbox) -> String {
    s.netns_path.file_name().unwrap().to_string_lossy().into_owned()
}

fn lease_path(net: &TestNet, ip: IpAddr) -> PathBuf {
    net.cfg.state_dir.join("ipam").join("skiff").join(ip.to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..600 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_reach_and_destroy() {
    let net = test_net(0).await;
    let sb = net.mgr.create("pod-a", &[]).await.unwrap();
    assert!(is_live_netns(&sb.netns_path), "netns {} is not mounted", sb.netns_path.display());
    assert!(sb.netns_path.starts_with(NETNS_RUN_DIR));
    assert!(netns_name(&sb).starts_with(&net.cfg.netns_prefix));
    assert!(ip_addr_in(&netns_name(&sb)).contains(&format!("inet {}/24", sb.ip)));
    assert_eq!(sb.gateway, net.mgr.gateway());
    assert!(net.cfg.state_dir.join("sandboxes/pod-a.json").exists());
    assert!(lease_path(&net, sb.ip).exists());

    let addr = serve_in(&sb.netns_path, SocketAddr::new(sb.ip, 8080), "hello from pod-a");
    assert_eq!(read_from(addr).unwrap(), "hello from pod-a");

    net.mgr.destroy("pod-a").await.unwrap();
    assert!(!sb.netns_path.exists());
    assert!(!net.cfg.state_dir.join("sandboxes/pod-a.json").exists());
    assert!(!lease_path(&net, sb.ip).exists(), "address still leased");
    assert!(read_from(addr).is_err());
    net.mgr.destroy("pod-a").await.unwrap(); // idempotent
    assert!(net.mgr.adoptable().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sandboxes_reach_each_other() {
    let net = test_net(0).await;
    let (a, b) = tokio::join!(net.mgr.create("pod-a", &[]), net.mgr.create("pod-b", &[]));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.ip, b.ip);
    assert_ne!(a.netns_path, b.netns_path);
    let addr = serve_in(&a.netns_path, SocketAddr::new(a.ip, 9000), "a");
    let b_ns = b.netns_path.clone();
    let got = std::thread::spawn(move || {
        enter_netns(&b_ns).unwrap();
        read_from(addr)
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(got, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent() {
    let net = test_net(0).await;
    let (x, y) = tokio::join!(net.mgr.create("pod-a", &[]), net.mgr.create("pod-a", &[]));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x, y);
    assert_eq!(net.mgr.create("pod-a", &[]).await.unwrap(), x);
    assert_eq!(list_netns(&net.cfg.netns_prefix).len(), 1);
    assert_eq!(net.mgr.adoptable().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_adopts_and_sweep_removes_the_rest() {
    let mut net = test_net(0).await;
    let a = net.mgr.create("pod-a", &[]).await.unwrap();
    let b = net.mgr.create("pod-b", &[]).await.unwrap();

    // A restarted agent over the same state dir.
    net.mgr = SandboxManager::new(net.cfg.clone()).await.unwrap();
    let mut adopted = net.mgr.adoptable();
    adopted.sort_by(|x, y| x.pod_uid.cmp(&y.pod_uid));
    assert_eq!(adopted, vec![a.clone(), b.clone()]);
    assert_eq!(net.mgr.create("pod-a", &[]).await.unwrap(), a);

    // A namespace with our prefix that nothing records (as after a crash before the record).
    let orphan = create_netns(&format!("{}{}", net.cfg.netns_prefix, "00112233aabbccdd")).await.unwrap();
    assert!(is_live_netns(&orphan));
    // Another cluster's namespace whose prefix extends ours is not ours.
    let foreign = create_netns(&format!("{}x-00112233aabbccdd", net.cfg.netns_prefix)).await.unwrap();

    let keep: HashSet<String> = ["pod-a".to_string()].into();
    let removed = net.mgr.sweep(&keep).await;
    let foreign_survived = is_live_netns(&foreign);
    netns::remove_netns(&foreign).unwrap();
    assert_eq!(removed, 2);
    assert!(foreign_survived);
    assert!(!orphan.exists());
    assert!(!b.netns_path.exists());
    assert!(!lease_path(&net, b.ip).exists());
    assert!(is_live_netns(&a.netns_path));
    assert_eq!(net.mgr.adoptable(), vec![a.clone()]);
    assert_eq!(net.mgr.sweep(&keep).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_hands_out_prepared_sandboxes() {
    let net = test_net(2).await;
    wait_for("the pool to fill", || net.mgr.pooled() == 2).await;
    let pool_ids: HashSet<String> = std::fs::read_dir(net.cfg.state_dir.join("pool"))
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(pool_ids.len(), 2);

    let sb = net.mgr.create("pod-a", &[]).await.unwrap();
    assert!(pool_ids.contains(&sb.container_id), "not from the pool: {}", sb.container_id);
    assert!(!net.cfg.state_dir.join(format!("pool/{}.json", sb.container_id)).exists());
    let addr = serve_in(&sb.netns_path, SocketAddr::new(sb.ip, 8080), "pooled");
    assert_eq!(read_from(addr).unwrap(), "pooled");
    wait_for("the pool to refill", || net.mgr.pooled() == 2).await;

    // A restart keeps the prepared ones.
    let mut net = net;
    net.mgr = SandboxManager::new(net.cfg.clone()).await.unwrap();
    assert_eq!(net.mgr.pooled(), 2);
    assert_eq!(net.mgr.sweep(&["pod-a".to_string()].into()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_port_reaches_the_pod() {
    let net = test_net(1).await;
    let host_port = free_port();
    let ports = [PortMapping { host_port, container_port: 8080, protocol: Protocol::Tcp, host_ip: None }];
    // Twice: cold (pool empty or filling) would be the same code path after the namespace is wired.
    let sb = net.mgr.create("pod-a", &ports).await.unwrap();
    assert_eq!(sb.ports, ports);
    serve_in(&sb.netns_path, SocketAddr::new(sb.ip, 8080), "via hostPort");
    let via_gateway = SocketAddr::new(sb.gateway, host_port);
    assert_eq!(read_from(via_gateway).unwrap(), "via hostPort");

    net.mgr.destroy("pod-a").await.unwrap();
    assert!(read_from(via_gateway).is_err(), "port mapping survived destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_overlapping_cidrs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["nonsense", "10.213.0.1/24", "10.213.0.0/33", "10.213.0.0", "fd00::/64"] {
        let cfg = test_config(dir.path(), 999, bad.to_string(), 0);
        match SandboxManager::new(cfg).await {
            Err(SandboxError::InvalidConfig(msg)) => assert!(msg.contains(bad), "{msg}"),
            Err(e) => panic!("{bad}: wrong error {e}"),
            Ok(_) => panic!("{bad}: accepted"),
        }
    }
    let mut cfg = test_config(dir.path(), 999, "10.213.0.0/24".into(), 0);
    cfg.bridge = "a-very-long-bridge-name".into();
    assert!(matches!(SandboxManager::new(cfg).await, Err(SandboxError::InvalidConfig(_))));

    // A subnet already routed on another test's bridge.
    let net = test_net(0).await;
    net.mgr.create("pod-a", &[]).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let taken = Ipv4Cidr::parse(&net.cfg.pod_cidr).unwrap();
    for cidr in [net.cfg.pod_cidr.clone(), "10.213.0.0/16".to_string(), format!("{}/25", taken.addr)] {
        let cfg = test_config(other.path(), n, cidr.clone(), 0);
        match SandboxManager::new(cfg).await {
            // The /16 may hit a parallel test's bridge first; the others only overlap ours.
            Err(e @ SandboxError::CidrOverlap { .. }) => {
                assert!(cidr.ends_with("/16") || e.to_string().contains(&net.cfg.bridge), "{e}");
            }
            Err(e) => panic!("{cidr}: wrong error {e}"),
            Ok(_) => panic!("{cidr}: overlap accepted"),
        }
    }
    // The same subnet on our own bridge is fine (a restart).
    assert!(SandboxManager::new(net.cfg.clone()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_carry_the_plugin_message() {
    let net = test_net(0).await;
    let cidr = Ipv4Cidr::parse(&net.cfg.pod_cidr).unwrap();
    let cni = cni::Cni::new(&net.cfg, cidr, &net.cfg.state_dir.join("ipam"));
    let err = cni.bridge(cni::Command::Add, "0000000000000000", Path::new("/nonexistent/netns"), None).await;
    match err {
        Err(SandboxError::Plugin { plugin, command, msg, .. }) => {
            assert_eq!((plugin.as_str(), command), ("bridge", "ADD"));
            assert!(msg.contains("/nonexistent/netns"), "{msg}");
        }
        other => panic!("expected a plugin error, got {other:?}"),
    }
}

#[test]
fn proc_routes_parse() {
    let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
    let routes = parse_proc_routes(text);
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[1].dest.to_string(), "192.0.2.0/24");
    assert_eq!(routes[0].dest.prefix, 0);
    let a = Ipv4Cidr::parse("10.1.0.0/16").unwrap();
    assert!(a.overlaps(&Ipv4Cidr::parse("10.1.5.0/24").unwrap()));
    assert!(!a.overlaps(&Ipv4Cidr::parse("10.2.0.0/24").unwrap()));
}

/// Prints the cost of create(): cold vs from the pool, and namespace creation vs `ip netns add`.
/// `cargo test -p skiff-node sandbox::tests::measure -- --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_create_cold_vs_pool() {
    const N: usize = 5;
    let prefix = format!("sktm{}-", std::process::id());
    let mut fast = Vec::new();
    let mut forked = Vec::new();
    for i in 0..N {
        let t = Instant::now();
        let p = create_netns(&format!("{prefix}f{i}")).await.unwrap();
        fast.push(t.elapsed());
        netns::remove_netns(&p).unwrap();
        let name = format!("{prefix}i{i}");
        let t = Instant::now();
        let ok = tokio::process::Command::new("ip").args(["netns", "add", &name]).status().await.unwrap().success();
        forked.push(t.elapsed());
        netns::remove_netns(&netns_path(&name)).unwrap();
        assert!(ok);
    }

    let net = test_net(0).await;
    let mut cold = Vec::new();
    for i in 0..N {
        let t = Instant::now();
        net.mgr.create(&format!("cold-{i}"), &[]).await.unwrap();
        cold.push(t.elapsed());
    }
    let pooled_net = test_net(N).await;
    wait_for("the pool to fill", || pooled_net.mgr.pooled() == N).await;
    let mut pooled = Vec::new();
    for i in 0..N {
        // Let the refill of the previous round finish so it does not compete for the CPU.
        wait_for("the pool to refill", || pooled_net.mgr.pooled() == N).await;
        let t = Instant::now();
        let sb = pooled_net.mgr.create(&format!("pooled-{i}"), &[]).await.unwrap();
        pooled.push(t.elapsed());
        assert!(is_live_netns(&sb.netns_path));
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "netns create: unshare+bind-mount {:?}, `ip netns add` {:?} (median of {N})",
        med(&mut fast),
        med(&mut forked)
    );
    println!("SandboxManager::create: cold {:?}, from the pool {:?} (median of {N})", med(&mut cold), med(&mut pooled));
}
