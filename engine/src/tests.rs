//! Engine tests with WAT guests: preview 1 runs, limits, cancellation, compile cache, output sinks.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;

const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

const EXIT_3: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 3))))"#;

const BUSY_LOOP: &str = r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#;

const MEMORY_BOMB: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))"#;

const TRAP: &str = r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#;

const NO_START: &str = r#"(module (memory (export "memory") 1))"#;

fn engine() -> (tempfile::TempDir, WasmEngine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = WasmEngine::new(dir.path()).expect("engine");
    (dir, engine)
}

/// An output sink that keeps what it got.
#[derive(Default)]
pub(super) struct Collect(Mutex<Vec<u8>>);

impl OutputSink for Collect {
    fn write(&self, bytes: &[u8]) {
        self.0.lock().expect("lock").extend_from_slice(bytes);
    }
}

impl Collect {
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn hello_writes_stdout_file_and_exits_zero() {
    let (dir, engine) = engine();
    let program = engine.load("sha256:hello", HELLO.as_bytes()).expect("compiles");
    assert!(!program.is_component() && !program.is_http());
    let out_path = dir.path().join("stdout");
    let stdout = File::create(&out_path).expect("stdout file");
    let spec = RunSpec { args: vec!["hello.wasm".into()], stdout: Some(Output::File(stdout)), ..Default::default() };
    assert_eq!(engine.run(&program, spec).await.expect("runs"), Exit::Code(0));
    assert_eq!(std::fs::read_to_string(out_path).expect("read"), "hello from wasm\n");
}

#[tokio::test(flavor = "current_thread")]
async fn output_sink_receives_stdout() {
    let (_dir, engine) = engine();
    let program = engine.load("sha256:hello", HELLO.as_bytes()).expect("compiles");
    let sink = Arc::new(Collect::default());
    let spec = RunSpec { stdout: Some(Output::Sink(sink.clone())), ..Default::default() };
    assert_eq!(engine.run(&program, spec).await.expect("runs"), Exit::Code(0));
    assert_eq!(sink.text(), "hello from wasm\n");
}

#[tokio::test(flavor = "current_thread")]
async fn exit_code_is_the_guests() {
    let (_dir, engine) = engine();
    let program = engine.load("sha256:exit3", EXIT_3.as_bytes()).expect("compiles");
    assert_eq!(engine.run(&program, RunSpec::default()).await.expect("runs"), Exit::Code(3));
}

#[tokio::test(flavor = "current_thread")]
async fn a_trap_is_reported_with_code_1() {
    let (_dir, engine) = engine();
    let program = engine.load("sha256:trap", TRAP.as_bytes()).expect("compiles");
    let exit = engine.run(&program, RunSpec::default()).await.expect("runs");
    assert!(matches!(&exit, Exit::Trap(message) if message.contains("unreachable")), "{exit:?}");
    assert_eq!(exit.code(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_second_load_does_not_compile() {
    let (dir, engine) = engine();
    engine.load("sha256:hello", HELLO.as_bytes()).expect("compiles");
    engine.load("sha256:hello", HELLO.as_bytes()).expect("cached");
    assert_eq!(engine.compiles(), 1);
    let again = WasmEngine::new(dir.path()).expect("second engine, same cache");
    let program = again.load("sha256:hello", HELLO.as_bytes()).expect("from disk");
    assert_eq!(again.compiles(), 0, "a restart reuses the compiled code");
    assert_eq!(again.run(&program, RunSpec::default()).await.expect("runs"), Exit::Code(0));
}

/// The cache entries (`*.cwasm`) under a cache directory.
fn cache_entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(dir).expect("cache dir").flatten() {
        for e in std::fs::read_dir(sub.path()).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "cwasm") {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "current_thread")]
async fn a_tampered_or_truncated_cache_entry_is_recompiled_never_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, engine) = engine();
    engine.load("sha256:hello", HELLO.as_bytes()).expect("compiles");
    let entries = cache_entries(dir.path());
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(entry), 0o600, "entry mode");
    assert_eq!(mode(entry.parent().expect("dir")), 0o700, "cache dir mode");
    let good = std::fs::read(entry).expect("read");
    // Flip one byte of the compiled code (a planted payload would do this), then truncate.
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    for bad in [tampered, good[..good.len() / 2].to_vec(), good[40..].to_vec()] {
        std::fs::write(entry, &bad).expect("tamper");
        let again = WasmEngine::new(dir.path()).expect("engine");
        let program = again.load("sha256:hello", HELLO.as_bytes()).expect("recompiled");
        assert_eq!(again.compiles(), 1, "a bad entry is compiled again, not loaded");
        assert_eq!(again.run(&program, RunSpec::default()).await.expect("runs"), Exit::Code(0));
        let rewritten = std::fs::read(entry).expect("rewritten");
        assert!(super::program::verified(&rewritten).is_some(), "the entry is replaced by a good one");
    }
}

#[test]
fn cache_entries_are_verified_by_digest() {
    assert!(super::program::verified(b"").is_none());
    assert!(super::program::verified(&[0u8; 64]).is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn busy_loop_is_stopped_by_deadline_and_by_cancel() {
    let (_dir, engine) = engine();
    let program = engine.load("sha256:busy", BUSY_LOOP.as_bytes()).expect("compiles");
    let spec = RunSpec { deadline: Some(Duration::from_millis(100)), ..Default::default() };
    assert_eq!(engine.run(&program, spec).await.expect("runs"), Exit::Killed);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    // The canceller is a task on the same current-thread runtime: it only runs if the guest yields.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        trigger.cancel();
    });
    let exit = engine.run(&program, RunSpec { cancel: Some(cancel), ..Default::default() }).await;
    assert_eq!(exit.expect("runs"), Exit::Killed);
    assert_eq!(Exit::Killed.code(), 137);
}

#[tokio::test(flavor = "current_thread")]
async fn a_cpu_bounded_busy_loop_still_yields_and_is_killed() {
    let (_dir, engine) = engine();
    let program = engine.load("sha256:busy", BUSY_LOOP.as_bytes()).expect("compiles");
    let spec = RunSpec { cpu_millis: Some(100), deadline: Some(Duration::from_millis(200)), ..Default::default() };
    assert_eq!(engine.run(&program, spec).await.expect("runs"), Exit::Killed);
}

#[tokio::test(flavor = "current_thread")]
async fn a_busy_guest_and_another_task_share_one_thread() {
    let (_dir, engine) = engine();
    let program = engine.load("sha256:busy", BUSY_LOOP.as_bytes()).expect("compiles");
    let cancel = CancellationToken::new();
    let ticks = Arc::new(AtomicU64::new(0));
    let (counter, stop) = (Arc::clone(&ticks), cancel.clone());
    // A normal task: counts 20 turns of 5 ms, then stops the guest. It can only finish if the guest
    // yields the thread; the guest can only end when this task finishes.
    let other = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            counter.fetch_add(1, Ordering::Relaxed);
        }
        stop.cancel();
    });
    let exit = engine.run(&program, RunSpec { cancel: Some(cancel), ..Default::default() }).await;
    assert_eq!(exit.expect("runs"), Exit::Killed);
    other.await.expect("other task");
    assert_eq!(ticks.load(Ordering::Relaxed), 20);
}

#[tokio::test(flavor = "current_thread")]
async fn memory_bomb_is_out_of_memory() {
    let (_dir, engine) = engine();
    let program = engine.load("sha256:bomb", MEMORY_BOMB.as_bytes()).expect("compiles");
    let spec = RunSpec { memory_limit: Some(8 << 20), ..Default::default() };
    let exit = engine.run(&program, spec).await.expect("runs");
    assert_eq!(exit, Exit::OutOfMemory);
    assert_eq!(exit.code(), 137);
}

#[tokio::test(flavor = "current_thread")]
async fn bad_programs_get_clear_errors() {
    let (_dir, engine) = engine();
    assert!(matches!(engine.load("sha256:junk", b"\0asm\x01\0\0\0garbage"), Err(EngineError::Compile(_))));
    assert!(matches!(engine.load("sha256:junkc", b"\0asm\x0d\0\x01\0garbage"), Err(EngineError::Compile(_))));
    let program = engine.load("sha256:nostart", NO_START.as_bytes()).expect("compiles");
    assert!(matches!(engine.run(&program, RunSpec::default()).await, Err(EngineError::NoEntryPoint)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    assert!(matches!(engine.serve_http(&program, RunSpec::default(), listener).await, Err(EngineError::NotHttp)));
}

#[tokio::test(flavor = "current_thread")]
async fn preopens_are_the_only_host_files() {
    let (dir, engine) = engine();
    let program = engine.load("sha256:hello", HELLO.as_bytes()).expect("compiles");
    let spec = RunSpec {
        preopens: vec![Preopen { host: dir.path().join("missing"), guest: "/data".into(), read_only: true }],
        ..Default::default()
    };
    assert!(matches!(engine.run(&program, spec).await, Err(EngineError::Preopen { .. })));
}

#[tokio::test(flavor = "current_thread")]
async fn usage_counts_a_busy_guests_cpu_and_its_memory_until_it_ends() {
    let (_dir, engine) = engine();
    let program = engine.load("sha256:busy-usage", BUSY_LOOP.as_bytes()).expect("compiles");
    let usage = Arc::new(Usage::default());
    let cancel = CancellationToken::new();
    let spec = RunSpec { usage: Some(Arc::clone(&usage)), cancel: Some(cancel.clone()), ..Default::default() };
    let watcher = {
        let (usage, cancel) = (Arc::clone(&usage), cancel.clone());
        tokio::spawn(async move {
            // The guest yields every epoch tick: this task sees it run.
            let mut memory = 0;
            while usage.cpu_nanos() < 100_000_000 {
                memory = memory.max(usage.memory_bytes());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            cancel.cancel();
            memory.max(usage.memory_bytes())
        })
    };
    let started = std::time::Instant::now();
    assert_eq!(engine.run(&program, spec).await.expect("runs"), Exit::Killed);
    let memory = watcher.await.expect("watcher");
    // One 64 KiB page while it ran; CPU about the wall time it spun; nothing left once it ended.
    assert_eq!(memory, 65_536);
    assert!(usage.cpu_nanos() >= 100_000_000);
    assert!(u128::from(usage.cpu_nanos()) <= started.elapsed().as_nanos() + 20_000_000);
    assert_eq!(usage.memory_bytes(), 0);
}
