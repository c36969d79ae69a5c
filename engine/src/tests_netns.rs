//! The sockets of a served guest live in the network namespace of the thread that polls the engine.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use tokio_util::sync::CancellationToken;

use super::tests_components::{get, load, workloads};
use super::*;

/// A network namespace made for one test, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Self {
        let ns = Netns(name);
        if Path::new("/var/run/netns").join(&ns.0).exists() {
            // A crashed earlier run with this process id left it behind.
            run(&["ip", "netns", "del", &ns.0]);
        }
        run(&["ip", "netns", "add", &ns.0]);
        run(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(argv: &[&str]) {
    let status = Command::new(argv[0]).args(&argv[1..]).status().expect("run command");
    assert!(status.success(), "{argv:?}: {status}");
}

/// `GET /` from the host's namespace: the body when something answered there.
fn host_get(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

#[test]
fn a_served_guest_listens_in_the_netns_of_its_thread() {
    workloads();
    let ns = Netns::new(format!("skiff-engtest-{}", std::process::id()));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = format!("/var/run/netns/{}", ns.0);
    let (port_tx, port_rx) = mpsc::channel();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let cache = dir.path().to_path_buf();
    let pod = std::thread::spawn(move || -> (Exit, (u16, String)) {
        let file = std::fs::File::open(&path).expect("open netns");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let engine = WasmEngine::new(&cache).expect("engine");
            let program = load(&engine, "hello-http");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind in netns");
            let addr = listener.local_addr().expect("addr");
            let spec = RunSpec { cancel: Some(stop), ..Default::default() };
            let inside = async {
                let answer = get(addr, "/").await;
                port_tx.send(addr).expect("send port");
                answer
            };
            let (served, inside) = tokio::join!(engine.serve_http(&program, spec, listener), inside);
            (served.expect("serves"), inside)
        })
    });
    let addr = port_rx.recv_timeout(Duration::from_secs(60));
    // Whatever happens, let the pod thread end.
    let from_host = addr.as_ref().ok().map(|addr| host_get(*addr));
    cancel.cancel();
    let (exit, inside) = pod.join().expect("pod thread");
    let addr = addr.expect("the server in the netns reported its address");
    assert_eq!(inside, (200, "hello from skiff\n".into()), "a client in the pod's netns is served");
    let from_host = from_host.flatten().unwrap_or_default();
    assert!(!from_host.contains("hello from skiff"), "the host reached the guest at {addr}: {from_host}");
    assert_eq!(exit, Exit::Killed);
}
