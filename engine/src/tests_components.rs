//! Engine tests with real component guests from `workloads/` (built once by `scripts/build-workloads.sh`):
//! a preview 2 command, and `hello-http` served over loopback sockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::tests::Collect;
use super::*;

/// The directory with the built workloads (`<name>.wasm`); builds them on first use. Panics (fails the
/// test) when the build fails.
pub(super) fn workloads() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = skiff_testkit::repo_root();
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let out = target.join("skiff-engine-workloads");
        let status = std::process::Command::new("bash")
            .arg(root.join("scripts/build-workloads.sh"))
            .arg(&out)
            .status()
            .expect("run scripts/build-workloads.sh");
        assert!(status.success(), "scripts/build-workloads.sh failed: {status}");
        out
    })
}

/// Loads workload `name` into `engine`.
pub(super) fn load(engine: &WasmEngine, name: &str) -> Program {
    let bytes = std::fs::read(workloads().join(format!("{name}.wasm"))).expect("read workload");
    engine.load(&format!("test:{name}"), &bytes).expect("compiles")
}

/// `GET path` on a new connection (closed after the answer): status and body.
pub(super) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    parse(&answer)
}

fn parse(answer: &str) -> (u16, String) {
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn engine() -> (tempfile::TempDir, WasmEngine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = WasmEngine::new(dir.path()).expect("engine");
    (dir, engine)
}

#[tokio::test(flavor = "current_thread")]
async fn a_p2_command_prints_and_exits_zero() {
    let (dir, engine) = engine();
    let program = load(&engine, "hello-p2");
    assert!(program.is_component() && !program.is_http());
    let sink = Arc::new(Collect::default());
    let spec = RunSpec {
        args: vec!["hello-p2.wasm".into(), "one".into(), "two".into()],
        env: vec![("HELLO_NAME".into(), "skiff".into())],
        stdout: Some(Output::Sink(sink.clone())),
        ..Default::default()
    };
    assert_eq!(engine.run(&program, spec).await.expect("runs"), Exit::Code(0));
    let out = sink.text();
    assert!(out.contains("hello from a component\n"), "{out}");
    assert!(out.contains("args: one two\n"), "{out}");
    assert!(out.contains("HELLO_NAME=skiff\n"), "{out}");
    // A second engine on the same cache directory deserializes the component instead of compiling it.
    let again = WasmEngine::new(dir.path()).expect("second engine");
    let program = load(&again, "hello-p2");
    assert_eq!(again.compiles(), 0);
    assert_eq!(again.run(&program, RunSpec::default()).await.expect("runs"), Exit::Code(0));
}

/// A WASI 0.3 command (an async `run` export) runs: arguments and environment, a stream to stdout, an
/// async clock wait, `run`'s error as exit code 1, and cancellation while it waits.
/// `hello-p3`'s run with `args` (and `HELLO_NAME=skiff`), its stdout into `sink`.
fn hello_p3(args: &[&str], sink: &Arc<Collect>) -> RunSpec {
    RunSpec {
        args: std::iter::once("hello-p3.wasm").chain(args.iter().copied()).map(String::from).collect(),
        env: vec![("HELLO_NAME".into(), "skiff".into())],
        stdout: Some(Output::Sink(sink.clone())),
        ..Default::default()
    }
}

/// A token a task of the current runtime cancels `after` from now (on a current-thread runtime it
/// only runs if the guest yields the thread).
fn cancel_after(after: Duration) -> CancellationToken {
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        trigger.cancel();
    });
    cancel
}

#[tokio::test(flavor = "current_thread")]
async fn a_p3_command_runs_its_async_export_to_the_end() {
    let (_dir, engine) = engine();
    let program = load(&engine, "hello-p3");
    assert!(program.is_component() && program.is_p3() && !program.is_http(), "{program:?}");
    let run = hello_p3;

    let sink = Arc::new(Collect::default());
    assert_eq!(engine.run(&program, run(&["one", "two"], &sink)).await.expect("runs"), Exit::Code(0));
    assert_eq!(sink.text(), "hello from p3, skiff; args: one two\n");

    let sink = Arc::new(Collect::default());
    let started = std::time::Instant::now();
    assert_eq!(engine.run(&program, run(&["sleep", "50"], &sink)).await.expect("runs"), Exit::Code(0));
    assert!(started.elapsed() >= Duration::from_millis(50), "{:?}", started.elapsed());
    assert!(sink.text().starts_with("slept "), "{}", sink.text());

    let sink = Arc::new(Collect::default());
    assert_eq!(engine.run(&program, run(&["fail"], &sink)).await.expect("runs"), Exit::Code(1));
    assert_eq!(sink.text(), "failing\n");

    // Cancelled while its task waits on the host.
    let sink = Arc::new(Collect::default());
    let spec = RunSpec { cancel: Some(cancel_after(Duration::from_millis(50))), ..run(&["sleep", "60000"], &sink) };
    assert_eq!(engine.run(&program, spec).await.expect("runs"), Exit::Killed);
    assert_eq!(sink.text(), "");
}

#[tokio::test(flavor = "current_thread")]
async fn serve_http_answers_until_cancelled() {
    let (dir, engine) = engine();
    let program = load(&engine, "hello-http");
    assert!(program.is_http());
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("greeting.txt"), "hi from a volume").expect("write");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    let spec = RunSpec {
        args: vec!["hello-http.wasm".into()],
        env: vec![("GREETING".into(), "hola".into())],
        preopens: vec![Preopen { host: data, guest: "/data".into(), read_only: true }],
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let client = async {
        assert_eq!(get(addr, "/").await, (200, "hello from skiff\n".into()));
        assert_eq!(get(addr, "/status/503").await, (503, "status 503".into()));
        assert_eq!(get(addr, "/env/GREETING").await, (200, "hola".into()));
        assert_eq!(get(addr, "/file/data/greeting.txt").await, (200, "hi from a volume".into()));
        assert_ne!(get(addr, "/file/etc/passwd").await.0, 200, "nothing of the host but preopens");
        // Keep-alive: two requests on one connection.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let two = "GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        stream.write_all(two.as_bytes()).await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
        assert!(answer.contains("hello from skiff\n") && answer.ends_with("ok"), "{answer}");
        cancel.cancel();
    };
    let (served, ()) = tokio::join!(engine.serve_http(&program, spec, listener), client);
    assert_eq!(served.expect("serves"), Exit::Killed);
    // The listener is gone with the server.
    assert!(TcpStream::connect(addr).await.is_err());
}

/// The body of a chunked answer, or `body` itself when it is not chunked.
fn dechunk(body: &str) -> String {
    let mut rest = body;
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { return body.to_string() };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// `GET path` on a new connection: status and the (dechunked) body.
async fn get_body(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, body) = get(addr, path).await;
    (status, dechunk(&body))
}

/// A WASI 0.3 HTTP service (`wasi:http/handler@0.3`) is served like a 0.2 one: its body is written by
/// the guest's own task after `handle` returned (the store runs until that task ends), request bodies
/// reach it, keep-alive works, and the server stops on cancel.
#[tokio::test(flavor = "current_thread")]
async fn a_p3_http_service_streams_its_body_after_handle_returns() {
    let (_dir, engine) = engine();
    let program = load(&engine, "hello-http-p3");
    assert!(program.is_http() && program.is_p3(), "{program:?}");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    let spec = RunSpec {
        args: vec!["hello-http-p3.wasm".into()],
        env: vec![("GREETING".into(), "hola".into())],
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let client = async {
        assert_eq!(get_body(addr, "/").await, (200, "hello from p3\n".into()));
        assert_eq!(get_body(addr, "/env/GREETING").await, (200, "hola".into()));
        assert_eq!(get_body(addr, "/nope").await.0, 404);
        let (status, body) = get_body(addr, "/chunks/2000").await;
        let expected: String = (0..2000).map(|i| format!("chunk {i}\n")).collect();
        assert_eq!(status, 200);
        assert!(body == expected, "{} of {} bytes: {}", body.len(), expected.len(), &body[..body.len().min(200)]);
        // A request body reaches the guest; keep-alive carries a second request.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let two = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nping body\
                   GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        stream.write_all(two.as_bytes()).await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
        assert!(answer.contains("ping body") && answer.contains("ok"), "{answer}");
        cancel.cancel();
    };
    let (served, ()) = tokio::join!(engine.serve_http(&program, spec, listener), client);
    assert_eq!(served.expect("serves"), Exit::Killed);
}

/// A WASI 0.3 command that never yields, or grows past its memory limit, is stopped as a 0.2
/// one is: by its deadline, by a cancel from another task of the same thread, by its CPU limit,
/// and out of memory.
#[tokio::test(flavor = "current_thread")]
async fn a_busy_or_greedy_p3_command_is_stopped() {
    let (_dir, engine) = engine();
    let program = load(&engine, "hello-p3");
    let run = hello_p3;

    let sink = Arc::new(Collect::default());
    let spec = RunSpec { deadline: Some(Duration::from_millis(100)), ..run(&["spin"], &sink) };
    assert_eq!(engine.run(&program, spec).await.expect("runs"), Exit::Killed);
    assert_eq!(sink.text(), "spinning\n");

    // The cancel runs only if the spinning guest yields the thread (epoch interruption).
    let sink = Arc::new(Collect::default());
    let spec = RunSpec { cancel: Some(cancel_after(Duration::from_millis(50))), ..run(&["spin"], &sink) };
    assert_eq!(engine.run(&program, spec).await.expect("runs"), Exit::Killed);

    let sink = Arc::new(Collect::default());
    let spec = RunSpec { cpu_millis: Some(100), deadline: Some(Duration::from_millis(300)), ..run(&["spin"], &sink) };
    assert_eq!(engine.run(&program, spec).await.expect("runs"), Exit::Killed);

    let sink = Arc::new(Collect::default());
    let spec = RunSpec { memory_limit: Some(16 << 20), ..run(&["grow", "64"], &sink) };
    let exit = engine.run(&program, spec).await.expect("runs");
    assert_eq!(exit, Exit::OutOfMemory);
    assert_eq!(sink.text(), "");
    let sink = Arc::new(Collect::default());
    let spec = RunSpec { memory_limit: Some(16 << 20), ..run(&["grow", "1"], &sink) };
    assert_eq!(engine.run(&program, spec).await.expect("runs"), Exit::Code(0));
    assert_eq!(sink.text(), "grew 1 MiB\n");
}

/// A WASI 0.3 request that spins is cut by its deadline and one that grows past the limit fails
/// out of memory; each gets 500 and a stderr line, and the service answers the next request.
#[tokio::test(flavor = "current_thread")]
async fn a_busy_or_greedy_p3_request_gets_500_and_the_service_goes_on() {
    let (_dir, engine) = engine();
    let program = load(&engine, "hello-http-p3");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (cancel, stderr) = (CancellationToken::new(), Arc::new(Collect::default()));
    let spec = RunSpec {
        args: vec!["hello-http-p3.wasm".into()],
        deadline: Some(Duration::from_millis(200)),
        memory_limit: Some(16 << 20),
        stderr: Some(Output::Sink(stderr.clone())),
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let client = async {
        assert_eq!(get(addr, "/spin").await.0, 500);
        assert_eq!(get(addr, "/grow/64").await.0, 500);
        assert_eq!(get_body(addr, "/grow/1").await, (200, "grew 1 MiB\n".into()));
        assert_eq!(get_body(addr, "/").await, (200, "hello from p3\n".into()));
        cancel.cancel();
    };
    let (served, ()) = tokio::join!(engine.serve_http(&program, spec, listener), client);
    assert_eq!(served.expect("serves"), Exit::Killed);
    let log = stderr.text();
    assert!(log.contains("GET /spin failed") && log.contains("GET /grow/64 failed: out of memory"), "{log}");
}

/// A client that ends its side after the request (`printf 'GET / ...' | nc`: HTTP/1.0, then a
/// half-close) still gets the answer: the end of the request is no reason to drop the response.
/// (Two workers and a small CPU share: the client's FIN is seen while the guest still runs, which
/// made hyper's default close the connection unanswered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_still_gets_its_answer() {
    let (_dir, engine) = engine();
    let program = load(&engine, "hello-http");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    // A small CPU share makes each request take a while, so the client's end arrives first.
    let spec = RunSpec {
        args: vec!["hello-http.wasm".into()],
        cpu_millis: Some(10),
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let client = async {
        for _ in 0..20 {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("send");
            stream.shutdown().await.expect("half-close");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.expect("read");
            assert_eq!(parse(&answer), (200, "hello from skiff\n".into()), "{answer:?}");
        }
        cancel.cancel();
    };
    let (served, ()) = tokio::join!(engine.serve_http(&program, spec, listener), client);
    assert_eq!(served.expect("serves"), Exit::Killed);
}

/// A handler component that traps (`unreachable`) on every request.
const TRAPPING_HANDLER: &str = r#"(component
  (import "wasi:http/types@0.2.0" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $request))
  (alias export $types "response-outparam" (type $outparam))
  (core module $m (func (export "handle") (param i32 i32) unreachable))
  (core instance $i (instantiate $m))
  (func $handle (param "request" (own $request)) (param "response-out" (own $outparam))
    (canon lift (core func $i "handle")))
  (instance $handler (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))"#;

#[tokio::test(flavor = "current_thread")]
async fn a_failing_request_gets_500_and_a_stderr_line_and_the_server_goes_on() {
    let (_dir, engine) = engine();
    let program = engine.load("test:trapping-handler", TRAPPING_HANDLER.as_bytes()).expect("compiles");
    assert!(program.is_http());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (cancel, stderr) = (CancellationToken::new(), Arc::new(Collect::default()));
    let spec =
        RunSpec { stderr: Some(Output::Sink(stderr.clone())), cancel: Some(cancel.clone()), ..Default::default() };
    let client = async {
        assert_eq!(get(addr, "/boom").await.0, 500);
        assert_eq!(get(addr, "/again").await.0, 500, "the server survives a trap");
        cancel.cancel();
    };
    let (served, ()) = tokio::join!(engine.serve_http(&program, spec, listener), client);
    assert_eq!(served.expect("serves"), Exit::Killed);
    let log = stderr.text();
    assert!(log.contains("GET /boom failed: trap") && log.contains("GET /again failed"), "{log}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_over_the_memory_limit_is_500_out_of_memory() {
    let (_dir, engine) = engine();
    let program = load(&engine, "hello-http");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (cancel, stderr) = (CancellationToken::new(), Arc::new(Collect::default()));
    let spec = RunSpec {
        memory_limit: Some(64 << 10),
        stderr: Some(Output::Sink(stderr.clone())),
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let client = async {
        assert_eq!(get(addr, "/").await.0, 500);
        cancel.cancel();
    };
    let (served, ()) = tokio::join!(engine.serve_http(&program, spec, listener), client);
    assert_eq!(served.expect("serves"), Exit::Killed);
    assert!(stderr.text().contains("GET / failed: out of memory"), "{}", stderr.text());
}

#[tokio::test(flavor = "current_thread")]
async fn a_busy_request_is_cut_by_its_deadline() {
    const SPINNING_HANDLER: &str = "(core module $m (func (export \"handle\") (param i32 i32) (loop (br 0))))";
    let (_dir, engine) = engine();
    let wat = TRAPPING_HANDLER
        .replace("(core module $m (func (export \"handle\") (param i32 i32) unreachable))", SPINNING_HANDLER);
    let program = engine.load("test:spinning-handler", wat.as_bytes()).expect("compiles");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    let spec =
        RunSpec { deadline: Some(Duration::from_millis(100)), cancel: Some(cancel.clone()), ..Default::default() };
    let client = async {
        assert_eq!(get(addr, "/spin").await.0, 500);
        cancel.cancel();
    };
    let (served, ()) = tokio::join!(engine.serve_http(&program, spec, listener), client);
    assert_eq!(served.expect("serves"), Exit::Killed);
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiting_guest_is_cancelled_and_a_p1_binary_sees_its_preopen() {
    let (dir, engine) = engine();
    let program = load(&engine, "tool");
    assert!(!program.is_component());
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let spec = RunSpec { args: vec!["tool.wasm".into(), "forever".into()], cancel: Some(cancel), ..Default::default() };
    assert_eq!(engine.run(&program, spec).await.expect("runs"), Exit::Killed);
    let spec = RunSpec {
        args: vec!["tool.wasm".into(), "write".into(), "/data/out.txt".into(), "written".into()],
        preopens: vec![Preopen { host: dir.path().to_path_buf(), guest: "/data".into(), read_only: false }],
        ..Default::default()
    };
    assert_eq!(engine.run(&program, spec).await.expect("runs"), Exit::Code(0));
    assert_eq!(std::fs::read_to_string(dir.path().join("out.txt")).expect("written"), "written");
}

#[tokio::test(flavor = "current_thread")]
async fn a_guest_reads_stdin_as_it_arrives_and_its_end() {
    let (_dir, engine) = engine();
    let program = load(&engine, "tool");
    let (mut writer, reader) = tokio::io::duplex(64);
    let out = Arc::new(Collect::default());
    let spec = RunSpec {
        args: vec!["tool.wasm".into(), "echo-stdin".into()],
        stdin: Some(Input(Box::new(reader))),
        stdout: Some(Output::Sink(out.clone())),
        ..Default::default()
    };
    let feed = async {
        writer.write_all(b"one\ntwo\n").await.expect("write");
        drop(writer);
    };
    let (exit, ()) = tokio::join!(engine.run(&program, spec), feed);
    assert_eq!(exit.expect("runs"), Exit::Code(0));
    assert_eq!(out.text(), "got: one\ngot: two\n");
}

/// The pool's per-guest budget (`LARGEST_GUEST`) is enough for a real long-running preview 2 command: an
/// engine sized for exactly N guests runs N `tcp-echo` servers at once, each answering on its port.
#[tokio::test(flavor = "current_thread")]
async fn tcp_echo_guests_fill_a_pool_for_that_many() {
    const GUESTS: u32 = 3;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = WasmEngine::with_pool(dir.path(), Pool::for_guests(GUESTS)).expect("engine");
    let program = load(&engine, "tcp-echo");
    assert!(program.is_component() && !program.is_http());
    let cancel = CancellationToken::new();
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..GUESTS {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let (out, err) = (Arc::new(Collect::default()), Arc::new(Collect::default()));
        let spec = RunSpec {
            args: vec!["tcp-echo.wasm".into()],
            env: vec![("PORT".into(), port.to_string())],
            stdout: Some(Output::Sink(out.clone())),
            stderr: Some(Output::Sink(err.clone())),
            cancel: Some(cancel.clone()),
            ..Default::default()
        };
        servers.push(engine.run(&program, spec));
        ports.push((port, out, err));
    }
    let client = async {
        for (port, out, err) in &ports {
            let mut stream = None;
            for _ in 0..200 {
                if let Ok(s) = TcpStream::connect(("127.0.0.1", *port)).await {
                    stream = Some(s);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let mut stream = stream.unwrap_or_else(|| panic!("no tcp-echo on {port}: {} / {}", out.text(), err.text()));
            stream.write_all(b"ping\nquit\n").await.expect("send");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.expect("read");
            assert_eq!(answer, "ping\n", "stderr: {}", err.text());
            assert!(out.text().contains(&format!("listening on 0.0.0.0:{port}")), "{}", out.text());
        }
        cancel.cancel();
    };
    let mut servers = servers.into_iter();
    let mut next = || servers.next().expect("a server per guest");
    let (a, b, c) = (next(), next(), next());
    let (a, b, c, ()) = tokio::join!(a, b, c, client);
    for exit in [a, b, c] {
        assert_eq!(exit.expect("runs"), Exit::Killed);
    }
}
