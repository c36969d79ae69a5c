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

const NO_START: &str = r#"(module (memory (export "memory") 1))"#;

fn engine() -> (tempfile::TempDir, WasmEngine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = WasmEngine::new(dir.path()).expect("engine");
    (dir, engine)
}

#[test]
fn hello_writes_stdout_and_exits_zero() {
    let (dir, engine) = engine();
    let module = engine.load("sha256:hello", HELLO.as_bytes()).expect("compiles");
    let out_path = dir.path().join("stdout");
    let stdout = File::create(&out_path).expect("stdout file");
    let exit =
        engine.run(&module, RunSpec { args: vec!["hello.wasm".into()], stdout: Some(stdout), ..Default::default() });
    assert_eq!(exit.expect("runs"), Exit::Code(0));
    assert_eq!(std::fs::read_to_string(out_path).expect("read"), "hello from wasm\n");
}

#[test]
fn exit_code_is_the_guests() {
    let (_dir, engine) = engine();
    let module = engine.load("sha256:exit3", EXIT_3.as_bytes()).expect("compiles");
    assert_eq!(engine.run(&module, RunSpec::default()).expect("runs"), Exit::Code(3));
}

#[test]
fn a_second_load_does_not_compile() {
    let (dir, engine) = engine();
    engine.load("sha256:hello", HELLO.as_bytes()).expect("compiles");
    engine.load("sha256:hello", HELLO.as_bytes()).expect("cached");
    assert_eq!(engine.compiles(), 1);
    let again = WasmEngine::new(dir.path()).expect("second engine, same cache");
    again.load("sha256:hello", HELLO.as_bytes()).expect("from disk");
    assert_eq!(again.compiles(), 0, "a restart reuses the compiled code");
}

#[test]
fn busy_loop_is_stopped_by_deadline_and_by_cancel() {
    let (_dir, engine) = engine();
    let module = engine.load("sha256:busy", BUSY_LOOP.as_bytes()).expect("compiles");
    let exit = engine.run(&module, RunSpec { deadline: Some(Duration::from_millis(100)), ..Default::default() });
    assert_eq!(exit.expect("runs"), Exit::Killed);
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        flag.store(true, Ordering::Relaxed);
    });
    let exit = engine.run(&module, RunSpec { cancel: Some(cancel), ..Default::default() });
    assert_eq!(exit.expect("runs"), Exit::Killed);
}

#[test]
fn memory_bomb_is_out_of_memory() {
    let (_dir, engine) = engine();
    let module = engine.load("sha256:bomb", MEMORY_BOMB.as_bytes()).expect("compiles");
    let exit = engine.run(&module, RunSpec { memory_limit: Some(8 << 20), ..Default::default() }).expect("runs");
    assert_eq!(exit, Exit::OutOfMemory);
    assert_eq!(exit.code(), 137);
}

#[test]
fn bad_modules_get_clear_errors() {
    let (_dir, engine) = engine();
    assert!(matches!(engine.load("sha256:junk", b"\0asm\x01\0\0\0garbage"), Err(EngineError::Compile(_))));
    let module = engine.load("sha256:nostart", NO_START.as_bytes()).expect("compiles");
    assert!(matches!(engine.run(&module, RunSpec::default()), Err(EngineError::NoEntryPoint)));
}

#[test]
fn preopens_are_the_only_host_files() {
    let (dir, engine) = engine();
    let module = engine.load("sha256:hello", HELLO.as_bytes()).expect("compiles");
    let spec = RunSpec {
        preopens: vec![Preopen { host: dir.path().join("missing"), guest: "/data".into(), read_only: true }],
        ..Default::default()
    };
    assert!(matches!(engine.run(&module, spec), Err(EngineError::Preopen { .. })));
}
